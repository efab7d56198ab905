/* The push endpoint: the request body, as the client sent it, to the core's
 * push socket, and the core's offset back in Relay-Offset. Also the start of a
 * push, which the duplex shares. */
#include <string.h>
#include <sys/socket.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_conn.h"
#include "mod_rh_corelink.h"
#include "mod_rh_upload.h"
#include "mod_rh_req.h"

#define CUT_REPLY_MS    2000        /* a cut push waits this long for the core's offset */

/* Asks the core to start a push at offset; on refusal answers the request
 * (with the accepted offset on a 409) and returns that status, else DECLINED.
 * A push ahead of others in flight waits for them: up to the idle timeout. */
int rh_start_push(rh_req *q, const char *token, apr_uint64_t offset, int timeout_ms)
{
    request_rec *r = q->r;
    rh_ipc_req rq;
    rh_ipc_reply rep;

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PUSH;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.offset = offset;
    /* with the body's length the core can tell the next push from a retry of
     * this one while it still waits for this one's end */
    if (!apr_table_get(r->headers_in, "Transfer-Encoding")
        && rh_hdr_u64(r, "Content-Length", &rq.body_len) == 0)
        rq.has_len = 1;
    if (rh_core_ask(q, &rq, &rep, timeout_ms) != 0) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return rh_core_unavailable(r);
    }
    if (!rep.ok) {
        r->connection->keepalive = AP_CONN_CLOSE;
        if (rep.status == HTTP_CONFLICT)
            apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, q->view.up_bytes));
        return rh_fail_reply(r, &rep);
    }
    return DECLINED;
}

/* Result of pumping a request body to the core. */
enum { UP_DONE, UP_CLIENT_GONE, UP_SLOW, UP_CORE_STUCK };

/* Passes the request body to the core until it ends or the core stops taking
 * it, waiting on the client or the core as each needs, never blocking. */
static int pump_body(rh_req *q, int core_fd)
{
    request_rec *r = q->r;
    rh_upload u;
    int cfd = rh_client_input_fd(r->connection);

    rh_upload_init(&u, r, core_fd, 1000L * rh_srv_frame_s(q->sc), 3000L * RH_HEARTBEAT_S);
    for (;;) {
        int m = rh_upload_move(&u);
        if (m < 0)
            return UP_CLIENT_GONE;
        if (u.core_done || (u.eos && !rh_upload_pending(&u)))
            return UP_DONE;
        if (m > 0)
            continue;
        struct pollfd pf;
        int np = rh_upload_pollfd(&u, cfd, &pf);
        int on_client = !rh_upload_pending(&u);
        long t0 = rh_now_ms();
        /* no pollable input (should not happen): look again soon */
        int rv = rh_watch_poll(&q->watch, &pf, np, on_client ? (np ? rh_upload_allowance(&u)
                                                                   : 50) : -1);
        if (rv == RH_WAIT_GONE)
            return UP_CLIENT_GONE;
        if (rv == RH_WAIT_STUCK)
            return UP_CORE_STUCK;
        if (on_client && rh_upload_waited(&u, rh_now_ms() - t0) != 0) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2021)
                          "request body too slow: %s", rh_upload_in_frame(&u)
                          ? "a frame did not arrive whole within RelayFrameTimeout"
                          : "no whole frame for three heartbeat intervals");
            return UP_SLOW;
        }
    }
}

int rh_do_push(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *token;
    apr_uint64_t offset;
    rh_ipc_reply rep;
    int rv;
    int write_ms = (rh_dir_idle(q->dc) + 10) * 1000;

    /* an error answer must not wait for a body that may never end */
    if (r->method_number != M_POST) {
        c->keepalive = AP_CONN_CLOSE;
        return rh_method_not_allowed(r, "POST");
    }
    if ((rv = rh_check_session(q, &token)) != DECLINED) {
        c->keepalive = AP_CONN_CLOSE;
        return rv;
    }
    if (rh_hdr_u64(r, RH_HDR_OFFSET, &offset) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return rh_fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Offset header");
    }
    if ((rv = rh_start_push(q, token, offset, write_ms)) != DECLINED)
        return rv;
    /* a push body may idle between frames; pump_body holds it to its own floor */
    rh_drop_reqtimeout(r);

    int up = pump_body(q, q->fd);
    shutdown(q->fd, SHUT_WR);
    char line[RH_IPC_LINE_MAX];
    if (up == UP_CORE_STUCK) {
        c->keepalive = AP_CONN_CLOSE;
        return rh_core_unavailable(r);
    }
    if (up != UP_DONE) {
        /* should an answer still reach the client (only the request side was
         * cut), it says how far the session got, so the client goes on */
        c->keepalive = AP_CONN_CLOSE;
        if (rh_ipc_read_line(q->fd, line, sizeof(line), CUT_REPLY_MS) >= 0
            && rh_ipc_parse_reply(line, &rep) == 0 && rep.done)
            apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
        if (up == UP_SLOW)
            return rh_fail(r, HTTP_REQUEST_TIME_OUT, "request body too slow (RelayFrameTimeout)");
        return rh_fail(r, HTTP_BAD_REQUEST, "push body ended before its end (connection cut?)");
    }
    rv = rh_watch_line(&q->watch, q->fd, line, sizeof(line), write_ms);
    if (rv <= 0 || rh_ipc_parse_reply(line, &rep) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return rh_core_unavailable(r);
    }
    if (!rep.ok) {
        c->keepalive = AP_CONN_CLOSE;
        return rh_fail_reply(r, &rep);
    }
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    r->status = HTTP_OK;
    ap_set_content_length(r, 0);
    return OK;
}
