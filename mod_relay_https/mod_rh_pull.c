/* The pull endpoint: the core's pull socket to the response. A stream pull
 * lasts as long as the session (heartbeats included); a batch pull is one
 * complete answer of the length the core announced. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_buckets.h"
#include "mod_rh_conn.h"
#include "mod_rh_corelink.h"
#include "mod_rh_req.h"
#include "mod_rh_async.h"
#include "rh_frame.h"

static int pull_answered(rh_req *q, int rv, rh_ipc_reply *rep);

/* A batch answer with nothing in it: its A frame and E */
#define BATCH_EMPTY (RH_FRAME_HDR + 8 + RH_FRAME_HDR)

/* The checks of a pull and its question to the core; pull_answered goes on
 * with the core's answer (a batch pull's wait for it may be parked). */
static int pull_ask(rh_req *q)
{
    request_rec *r = q->r;
    const char *token;
    apr_uint64_t ack;
    rh_ipc_req rq;
    int rv;

    /* HEAD would hold the session's pull and send nothing of it */
    if ((r->method_number != M_POST && r->method_number != M_GET) || r->header_only)
        return rh_method_not_allowed(r, "GET, POST");
    if (ap_discard_request_body(r) != OK)
        return rh_fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    if ((rv = rh_check_session(q, &token)) != DECLINED)
        return rv;
    if (rh_hdr_u64(r, RH_HDR_ACK, &ack) != 0)
        return rh_fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *mode = apr_table_get(r->headers_in, RH_HDR_MODE);
    int batch = mode && !strcasecmp(mode, RH_MODE_BATCH);
    if (mode && !batch && strcasecmp(mode, RH_MODE_STREAM) != 0)
        return rh_fail(r, HTTP_BAD_REQUEST, "unknown Relay-Mode '%s' (stream or batch)", mode);
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PULL;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.offset = ack;
    apr_cpystrn(rq.mode, batch ? RH_MODE_BATCH : RH_MODE_STREAM, sizeof(rq.mode));
    rq.poll_s = batch ? (unsigned)rh_dir_poll(q->dc) : 0;
    /* a batch answer has a length: its connection can carry the next poll
     * (an old core, from before an upgrade, would not know the word) */
    rq.keep = batch && !q->old_core;
    /* after an empty answer (nothing came for a poll's time) the next answer
     * will not come within RH_ASYNC_HOT_MS either: no thread waits for it */
    rh_park *p = batch ? rh_async_park(r) : NULL;
    q->cold = p && p->poll_idle;
    return rh_core_ask_then(q, &rq, batch ? (rh_dir_poll(q->dc) + 10) * 1000 : CORE_REPLY_MS,
                            pull_answered);
}

/* The response's status and headers. *remain: the bytes a batch answer has
 * ("OK <offset> <length>"), -1 for a stream. DECLINED to go on, else the
 * request is answered. */
static int pull_headers(request_rec *r, int batch, const rh_ipc_reply *rep, apr_off_t *remain)
{
    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep->num));
    *remain = -1;
    if (batch) {
        /* the answer is complete: say how long it is */
        const char *sp = strchr(rep->text, ' ');
        apr_uint64_t len;
        if (!sp || rh_parse_u64(sp + 1, (size_t)-1, &len) != 0)
            return rh_core_unavailable(r);
        *remain = (apr_off_t)len;
        ap_set_content_length(r, *remain);
    }
    return DECLINED;
}

/* One read's worth of what remains (remain -1: a stream, no end in sight). */
static apr_size_t pull_want(apr_off_t remain)
{
    return remain > 0 && remain < PULL_BUF ? (apr_size_t)remain : PULL_BUF;
}

/* Waits for the core's pull socket: 1 when it is readable, else -errno, why
 * the stream ends. */
static ssize_t pull_wait(rh_req *q, rh_blocks *bk)
{
    struct pollfd pf = { q->fd, POLLIN, 0 };
    rh_blocks_free(bk);   /* a tunnel that waits holds no buffers */
    /* a client that went away (an HTTP/2 stream reset, say) lets the
     * session's pull go at once, not at the next heartbeat */
    int pr = rh_watch_poll(&q->watch, &pf, 1, RH_HEARTBEAT_S * 3 * 1000);
    if (pr == RH_WAIT_READY)
        return 1;
    return pr == RH_WAIT_TIMEOUT ? -ETIMEDOUT : pr == RH_WAIT_GONE ? -ECONNABORTED : -EIO;
}

/* What the core has ready after a read goes out with it, under one flush:
 * fewer, fuller TLS writes when the tunnel is busy, no wait when it is not.
 * A read shorter than asked emptied the socket: no read after it, which
 * would only find nothing (an idle tunnel's heartbeat is one short read).
 * 1 when the socket was left empty. */
static int pull_coalesce(rh_req *q, rh_blocks *bk, apr_bucket_brigade *bb, apr_off_t *remain,
                         ssize_t n, apr_size_t want)
{
    for (int i = 1; i < PULL_COALESCE && *remain != 0; ++i) {
        if ((apr_size_t)n < want)
            return 1;
        want = pull_want(*remain);
        n = rh_read_blocks(bk, q->fd, bb, want, i);
        if (n <= 0)
            return 0;   /* nothing ready (or the end: the next read sees it) */
        if (*remain > 0)
            *remain -= n;
    }
    return (apr_size_t)n < want;
}

typedef struct pull_ctx {
    rh_req *q;
    rh_blocks *bk;
    apr_bucket_brigade *bb;
    apr_off_t remain;           /* -1: a stream, no end in sight */
    apr_off_t moved;            /* bytes passed on by the last pull_move */
    int gone;                   /* pull_quick found the client gone */
} pull_ctx;

enum { PULL_WAIT, PULL_END, PULL_GONE };

/* The response's end after the last byte (EOS). */
static int pull_end(pull_ctx *pc)
{
    conn_rec *c = pc->q->r->connection;
    APR_BRIGADE_INSERT_TAIL(pc->bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(pc->q->r->output_filters, pc->bb);
    return PULL_END;
}

/* Core -> response while the core has bytes ready: PULL_WAIT when it has
 * none yet, PULL_END once the core's stream ended or remain bytes are through
 * (EOS passed), PULL_GONE when the client went away. */
static int pull_move(pull_ctx *pc)
{
    rh_req *q = pc->q;
    request_rec *r = q->r;
    conn_rec *c = r->connection;

    pc->moved = 0;
    while (pc->remain != 0) {
        /* the core sends at least a heartbeat every RH_HEARTBEAT_S */
        apr_size_t want = pull_want(pc->remain);
        ssize_t n = rh_read_blocks(pc->bk, q->fd, pc->bb, want, 0);
        if (n == -EAGAIN)
            return PULL_WAIT;
        if (n <= 0) {
            if (n < 0)
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, (apr_status_t)-n, r, RHLOG(2030)
                              "pull: relay core stream ended");
            break;
        }
        if (pc->remain > 0)
            pc->remain -= n;
        int empty = pull_coalesce(q, pc->bk, pc->bb, &pc->remain, n, want);
        apr_off_t len = 0;
        apr_brigade_length(pc->bb, 0, &len);
        pc->moved += len;
        APR_BRIGADE_INSERT_TAIL(pc->bb, apr_bucket_flush_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, pc->bb) != APR_SUCCESS || c->aborted) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2031)
                          "pull: client went away");
            return PULL_GONE;
        }
        apr_brigade_cleanup(pc->bb);
        if (empty && pc->remain != 0)
            return PULL_WAIT;   /* the wait finds what comes next */
    }
    if (pc->remain == 0)
        rh_core_keep(q);        /* all of a batch answer read: the connection is clean */
    return pull_end(pc);
}

/* A wait on the core that ended without bytes: the stream ends (with EOS
 * unless the client went away). */
static void pull_waited(pull_ctx *pc, int why)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, pc->q->r, RHLOG(2030)
                  "pull: relay core stream ended (%s)", why == RH_WAIT_TIMEOUT ? "silent"
                  : why == RH_WAIT_GONE ? "client gone" : "core stopped or stuck");
    if (why != RH_WAIT_GONE)
        pull_end(pc);
}

/* An idle stream tunnel's heartbeat, on the reactor's thread (rh_quick_fn):
 * when the core's socket holds an H frame's header and nothing behind it, and
 * the client's socket has room (the write cannot block the reactor), the
 * frame goes to the client here: no listener and worker woken, one thread run
 * instead of four per heartbeat. Anything else goes to a worker (0). */
static int pull_quick(rh_park *p, void *baton)
{
    static const unsigned char hb[RH_FRAME_HDR] = { RH_FRAME_HEARTBEAT, 0, 0, 0 };
    pull_ctx *pc = baton;
    unsigned char got[RH_FRAME_HDR + 1];
    struct pollfd pf = { p->csock, POLLOUT, 0 };

    if (recv(pc->q->fd, got, sizeof(got), MSG_PEEK | MSG_DONTWAIT) != RH_FRAME_HDR
        || memcmp(got, hb, RH_FRAME_HDR) != 0 || poll(&pf, 1, 0) != 1
        || pf.revents != POLLOUT || recv(pc->q->fd, got, RH_FRAME_HDR, MSG_DONTWAIT) != RH_FRAME_HDR)
        return 0;
    conn_rec *c = pc->q->r->connection;
    APR_BRIGADE_INSERT_TAIL(pc->bb, apr_bucket_immortal_create((const char *)hb, RH_FRAME_HDR,
                                                               c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(pc->bb, apr_bucket_flush_create(c->bucket_alloc));
    int ok = ap_pass_brigade(pc->q->r->output_filters, pc->bb) == APR_SUCCESS && !c->aborted;
    apr_brigade_cleanup(pc->bb);
    pc->gone = !ok;             /* the worker ends the request */
    ap_log_rerror(APLOG_MARK, APLOG_TRACE2, 0, pc->q->r, RHLOG(2090)
                  "pull: heartbeat passed on by the reactor%s", ok ? "" : ": client gone");
    return ok;
}

/* A parked pull's step: what the core has now, then wait again (parked once
 * the core has been quiet for RH_ASYNC_HOT_MS). */
static int pull_step(rh_park *p, void *baton, int why)
{
    pull_ctx *pc = baton;
    if (pc->gone) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, pc->q->r, RHLOG(2031)
                      "pull: client went away");
        return OK;
    }
    for (;;) {
        if (why != RH_WAIT_READY) {
            pull_waited(pc, why);
            return OK;
        }
        if (pull_move(pc) != PULL_WAIT)
            return OK;
        /* a heartbeat alone (a frame header's worth) woke an idle tunnel:
         * no thread held 20 ms more for what will not come */
        if (pc->moved > 0 && pc->moved <= RH_FRAME_HDR)
            break;
        why = rh_async_hot(&pc->q->watch, pc->q->fd, POLLIN);
        if (why == RH_WAIT_TIMEOUT)
            break;
    }
    rh_blocks_release(pc->bk);      /* a parked tunnel holds no buffers */
    rh_park_watch(p, pc->q->fd, POLLIN, 0, RH_HEARTBEAT_S * 3 * 1000);
    if (pc->remain < 0)
        rh_park_quick(p, pull_quick);
    return SUSPENDED;
}

/* Core -> response until the core's stream ends, remain bytes are through
 * (remain -1: no limit) or the client goes away; ends with EOS unless the
 * client went away. Parked between reads where the request may park. */
static int pull_copy(pull_ctx *pc)
{
    rh_park *p = rh_async_park(pc->q->r);
    if (p) {
        int rv = pull_step(p, pc, RH_WAIT_READY);
        return rv == SUSPENDED ? rh_async_suspend(p, pc->q->r, pc->q->watch.core, pull_step, pc)
                               : rv;
    }
    while (pull_move(pc) == PULL_WAIT) {
        ssize_t n = pull_wait(pc->q, pc->bk);
        if (n <= 0) {
            pull_waited(pc, n == -ETIMEDOUT ? RH_WAIT_TIMEOUT : n == -ECONNABORTED
                                ? RH_WAIT_GONE : RH_WAIT_STUCK);
            break;
        }
    }
    return OK;
}

/* The core's answer to the pull: the response, then its bytes. */
static int pull_answered(rh_req *q, int rv, rh_ipc_reply *rep)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *mode = apr_table_get(r->headers_in, RH_HDR_MODE);
    int batch = mode && !strcasecmp(mode, RH_MODE_BATCH);
    pull_ctx *pc;

    if (rv != 0)
        return rh_core_unavailable(r);
    if (!rep->ok)
        return rh_fail_reply(r, rep);
    pc = apr_pcalloc(r->pool, sizeof(*pc));
    /* q may live on the handler's stack */
    pc->q = q->then ? q : apr_pmemdup(r->pool, q, sizeof(*q));
    if ((rv = pull_headers(r, batch, rep, &pc->remain)) != DECLINED)
        return rv;
    rh_park *p = batch ? rh_async_park(r) : NULL;
    if (p)
        p->poll_idle = pc->remain == BATCH_EMPTY;
    pc->bb = apr_brigade_create(r->pool, c->bucket_alloc);
    pc->bk = rh_blocks_make(r);
    rh_blocks_size(pc->bk, pc->remain);
    rh_limit_writes(r, rh_srv_write_s(q->sc));
    if (!batch) {
        /* headers now: the client waits for them before it trusts the stream */
        APR_BRIGADE_INSERT_TAIL(pc->bb, apr_bucket_flush_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, pc->bb) != APR_SUCCESS || c->aborted)
            return OK;
        apr_brigade_cleanup(pc->bb);
    }
    return pull_copy(pc);
}

int rh_do_pull(rh_req *q)
{
    return pull_ask(q);
}
