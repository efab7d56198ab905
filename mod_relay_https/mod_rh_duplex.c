/* The duplex endpoint: one request carries both directions, its body the push
 * and its response the pull (HTTP/2, or an HTTP/1.1 path that allows it). Both
 * core connections are served from this one thread: input is read
 * non-blocking and the thread sleeps in poll() on the client input, the core's
 * pull socket and, while the core is not taking push bytes, the push socket. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_buckets.h"
#include "mod_rh_conn.h"
#include "mod_rh_corelink.h"
#include "mod_rh_keepfree.h"
#include "mod_rh_upload.h"
#include "mod_rh_req.h"

/* One duplex tunnel: a side each way, and what the wait needs. */
typedef struct {
    rh_req *q;
    int cfd;                    /* the client's input, to poll */
    int idle_ms;                /* nothing moved this long: the tunnel ends */
    /* up: the request body to the core's push socket */
    rh_upload u;
    int fd_up, up_shut;
    /* down: the core's pull socket to the response */
    int fd_down, down_done;
    /* 0 after the pull socket was found empty: while the body keeps moving it
     * is read only when poll said so (down_ready) or after DOWN_EVERY rounds
     * without a wait,
     * not once per body chunk (an EAGAIN recv for every 16 KiB of an upload),
     * nor before each wait (the wait's poll watches it: an ioctl and a recv
     * per wake of an upload) */
    int down_hot, down_skipped, down_ready;
    rh_blocks *bk;
    apr_bucket_brigade *out;
} rh_duplex;

/* The checks, the push and then the pull asked of the core: DECLINED with
 * d's descriptors and *rep (the pull's yes) set, else the request is answered. */
static int duplex_start(rh_duplex *d, rh_ipc_reply *rep)
{
    rh_req *q = d->q;
    request_rec *r = q->r;
    const char *token;
    apr_uint64_t offset, ack;
    rh_ipc_req rq;
    int rv;

    if (r->method_number != M_POST)
        return rh_method_not_allowed(r, "POST");
    if ((rv = rh_check_session(q, &token)) != DECLINED)
        return rv;
    if (rh_hdr_u64(r, RH_HDR_OFFSET, &offset) != 0
        || rh_hdr_u64(r, RH_HDR_ACK, &ack) != 0)
        return rh_fail(r, HTTP_BAD_REQUEST,
                       "missing or malformed Relay-Offset or Relay-Ack header");
    d->cfd = rh_client_input_fd(r->connection);
    if (d->cfd < 0)
        return rh_fail(r, HTTP_NOT_IMPLEMENTED, "duplex is not available on this connection "
                       "(use HTTP/2, or the stream transport)");
    if ((rv = rh_start_push(q, token, offset, (rh_dir_idle(q->dc) + 10) * 1000)) != DECLINED)
        return rv;
    d->fd_up = q->fd;
    memset(&rq, 0, sizeof(rq));
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.op = RH_IPC_PULL;
    rq.offset = ack;
    apr_cpystrn(rq.mode, RH_MODE_STREAM, sizeof(rq.mode));
    if (rh_core_ask(q, &rq, rep, CORE_REPLY_MS) != 0)
        return rh_core_unavailable(r);
    if (!rep->ok)
        return rh_fail_reply(r, rep);
    d->fd_down = q->fd;
    return DECLINED;
}

/* 1 once the up side is over: the core answered the push (as it does at once
 * when the session ends), or the whole body is in. */
static int up_over(const rh_duplex *d)
{
    return d->u.core_done || (d->u.eos && !rh_upload_pending(&d->u));
}

/* Up: client body -> core, as far as the core takes it; the core hears the
 * body's end as the push socket's. 1 when something moved, 0 when not, -1 when
 * the body broke. */
static int duplex_up(rh_duplex *d)
{
    int m = rh_upload_move(&d->u);
    if (m < 0)
        return -1;
    if (d->u.eos && !rh_upload_pending(&d->u) && !d->up_shut) {
        shutdown(d->fd_up, SHUT_WR);
        d->up_shut = 1;
    }
    return m > 0;
}

/* Down: core -> response, flushed chunk by chunk, until the core has nothing
 * ready or its stream ended. 1 when something moved, 0 when not, -1 when the
 * client is gone. */
static int duplex_down(rh_duplex *d)
{
    request_rec *r = d->q->r;
    conn_rec *c = r->connection;
    int moved = 0;

    while (!d->down_done) {
        ssize_t n = rh_read_blocks(d->bk, d->fd_down, d->out, PULL_BUF, 0);
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            break;
        if (n <= 0) {
            d->down_done = 1;
            break;
        }
        moved = 1;
        APR_BRIGADE_INSERT_TAIL(d->out, apr_bucket_flush_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, d->out) != APR_SUCCESS || c->aborted)
            return -1;
        apr_brigade_cleanup(d->out);
    }
    return moved;
}

/* A wake by the client's input inside a frame: the rest of the frame is on
 * its way in pieces (HTTP/2 DATA frames of 16 KiB, each in two TLS records
 * from libcurl), and the core can use none of it before the frame is whole.
 * Sleeping this long before the read lets several pieces come in for it:
 * mod_http2 then wakes this thread, and hears of the bytes it consumed, once
 * for them instead of once per piece (docs/BENCHMARKS.md, item 13). Not when
 * what the connection keeps freed limits the hold (rh_upload_hold_max): the
 * pieces would then pile up in memory APR gives back at once. */
#define UP_NAP_NS (200 * 1000L)

/* Nothing moved: sleeps until the client, the core's pull or the core's
 * answer to the push has something, holding no buffers meanwhile. 0 to go on,
 * -1 when the tunnel ends (client gone, core stuck, too slow, idle). */
static int duplex_wait(rh_duplex *d)
{
    request_rec *r = d->q->r;
    struct pollfd pf[3];
    int np = rh_upload_pollfd(&d->u, d->cfd, pf);
    int on_client = np && pf[0].fd == d->cfd;
    if (!d->down_done)
        pf[np++] = (struct pollfd){ .fd = d->fd_down, .events = POLLIN };
    int answer = np;
    if (!d->u.core_done)
        pf[np++] = (struct pollfd){ .fd = d->fd_up, .events = POLLIN };
    rh_blocks_free(d->bk);   /* a tunnel that waits holds no buffers */
    long t0 = rh_now_ms(), wait = on_client ? rh_upload_allowance(&d->u) : d->idle_ms;
    int rv = rh_watch_poll(&d->q->watch, pf, np, wait < d->idle_ms ? (int)wait : d->idle_ms);
    if (rv == RH_WAIT_GONE || rv == RH_WAIT_STUCK)
        return -1;
    if (on_client && rh_upload_waited(&d->u, rh_now_ms() - t0) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2042)
                      "duplex: request body too slow (RelayFrameTimeout)");
        return -1;
    }
    if (rv == RH_WAIT_TIMEOUT && !on_client) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2041)
                      "duplex: nothing moved for %d s, ending", d->idle_ms / 1000);
        return -1;
    }
    if (answer < np && (pf[answer].revents & (POLLIN | POLLHUP | POLLERR)))
        d->u.core_done = 1;   /* the core answered the push: the up side is over */
    if (on_client && (pf[0].revents & POLLIN) && rh_upload_mid_data(&d->u) &&
        rh_upload_hold_max(&d->u) == RH_UPLOAD_GATHER) {
        struct timespec nap = { 0, UP_NAP_NS };
        nanosleep(&nap, NULL);
    }
    /* the poll looked at the pull socket: the count of rounds without a look starts again */
    d->down_ready = !d->down_done && (pf[answer - 1].revents & (POLLIN | POLLHUP | POLLERR));
    d->down_skipped = 0;
    return 0;
}

#define DOWN_EVERY 4

/* Both ways until both have ended (the pull with F or R, the push answered),
 * then EOS; a tunnel cut short ends without it. */
static void duplex_run(rh_duplex *d)
{
    request_rec *r = d->q->r;

    for (;;) {
        int up = duplex_up(d);
        if (up < 0)
            return;
        int down = 0;
        if (d->down_hot || d->down_ready || ++d->down_skipped >= DOWN_EVERY) {
            d->down_skipped = d->down_ready = 0;
            down = duplex_down(d);
            if (down < 0)
                return;
            d->down_hot = down > 0;
        }
        if (d->down_done && up_over(d))
            break;
        if (up > 0 || down > 0)
            continue;
        if (duplex_wait(d) != 0)
            return;
    }
    APR_BRIGADE_INSERT_TAIL(d->out, apr_bucket_eos_create(r->connection->bucket_alloc));
    ap_pass_brigade(r->output_filters, d->out);
}

int rh_do_duplex(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    rh_ipc_reply rep;
    rh_duplex d;
    int rv;

    memset(&d, 0, sizeof(d));
    d.q = q;
    d.down_hot = 1;
    d.idle_ms = RH_HEARTBEAT_S * 3 * 1000;
    if ((rv = duplex_start(&d, &rep)) != DECLINED) {
        c->keepalive = AP_CONN_CLOSE;
        return rv;
    }
    rh_drop_reqtimeout(r);

    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    d.out = apr_brigade_create(r->pool, c->bucket_alloc);
    d.bk = rh_blocks_make(r);
    rh_upload_init(&d.u, r, d.fd_up, 1000L * rh_srv_frame_s(q->sc), 3000L * RH_HEARTBEAT_S);
    d.u.mem_free = rh_keepfree_begin(r);
    rh_limit_writes(r, rh_srv_write_s(q->sc));
    APR_BRIGADE_INSERT_TAIL(d.out, apr_bucket_flush_create(c->bucket_alloc));
    if (ap_pass_brigade(r->output_filters, d.out) != APR_SUCCESS || c->aborted)
        return OK;
    apr_brigade_cleanup(d.out);

    duplex_run(&d);
    /* On HTTP/2 the access-log line waits for the stream's cleanup on the main
     * connection; this line says when the worker itself was free. */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2043) "duplex of session %s over",
                  apr_table_get(r->notes, "relay-session"));
    c->keepalive = AP_CONN_CLOSE;
    return OK;
}
