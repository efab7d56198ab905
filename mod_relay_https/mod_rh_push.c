/* The push endpoint: the request body, as the client sent it, to the core's
 * push socket, and the core's offset back in Relay-Offset. Also the start of a
 * push, which the duplex shares. */
#include <poll.h>
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
#include "mod_rh_async.h"

#define CUT_REPLY_MS    2000        /* a cut push waits this long for the core's offset */
/* A push body up to this size that is here whole goes with the PUSH line */
#define EARLY_MAX       (16 * 1024)

/* The core's answer to the start of a push: DECLINED when it takes the push,
 * else the request is answered (with the accepted offset on a 409). */
static int push_start_answer(rh_req *q, int rv, rh_ipc_reply *rep)
{
    request_rec *r = q->r;
    if (rv != 0) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return rh_core_unavailable(r);
    }
    if (!rep->ok) {
        r->connection->keepalive = AP_CONN_CLOSE;
        if (rep->status == HTTP_CONFLICT && !rep->has_num)   /* else the core's own */
            apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, q->view.up_bytes));
        return rh_fail_reply(r, rep);
    }
    return DECLINED;
}

/* The PUSH line: where the push starts and, with the body's length, how the
 * core tells the next push from a retry of this one while it still waits for
 * this one's end. */
static void push_request(rh_req *q, const char *token, apr_uint64_t offset, rh_ipc_req *rq)
{
    request_rec *r = q->r;
    memset(rq, 0, sizeof(*rq));
    rq->op = RH_IPC_PUSH;
    apr_cpystrn(rq->token, token, sizeof(rq->token));
    rq->offset = offset;
    if (!apr_table_get(r->headers_in, "Transfer-Encoding")
        && rh_hdr_u64(r, "Content-Length", &rq->body_len) == 0)
        rq->has_len = 1;
}

/* Asks the core to start a push at offset; on refusal answers the request
 * and returns that status, else DECLINED. A push ahead of others in flight
 * waits for them: up to the idle timeout. */
int rh_start_push(rh_req *q, const char *token, apr_uint64_t offset, int timeout_ms)
{
    rh_ipc_req rq;
    rh_ipc_reply rep;
    push_request(q, token, offset, &rq);
    return push_start_answer(q, rh_core_ask(q, &rq, &rep, timeout_ms), &rep);
}

/* Result of pumping a request body to the core. */
enum { UP_DONE, UP_CLIENT_GONE, UP_SLOW, UP_CORE_STUCK };

static void log_slow(rh_upload *u)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, u->r, RHLOG(2021)
                  "request body too slow: %s", rh_upload_in_frame(u)
                  ? "a frame did not arrive whole within RelayFrameTimeout"
                  : "no whole frame for three heartbeat intervals");
}

/* Moves what can move: UP_DONE, UP_CLIENT_GONE, or -1 to wait. */
static int pump_move(rh_upload *u)
{
    for (;;) {
        int m = rh_upload_move(u);
        if (m < 0)
            return UP_CLIENT_GONE;
        if (u->core_done || (u->eos && !rh_upload_pending(u)))
            return UP_DONE;
        if (m == 0 || u->drained)
            return -1;   /* another move now would only read nothing again */
    }
}

/* Passes the request body to the core until it ends or the core stops taking
 * it, waiting on the client or the core as each needs, never blocking. */
static int pump_body(rh_req *q, rh_upload *u)
{
    int cfd = rh_client_input_fd(q->r->connection);
    for (;;) {
        int m = pump_move(u);
        if (m >= 0)
            return m;
        struct pollfd pf;
        int np = rh_upload_pollfd(u, cfd, &pf);
        int on_client = !rh_upload_pending(u);
        long t0 = rh_now_ms();
        /* no pollable input (should not happen): look again soon */
        int rv = rh_watch_poll(&q->watch, &pf, np, on_client ? (np ? rh_upload_allowance(u)
                                                                   : 50) : -1);
        if (rv == RH_WAIT_GONE)
            return UP_CLIENT_GONE;
        if (rv == RH_WAIT_STUCK)
            return UP_CORE_STUCK;
        if (on_client && rh_upload_waited(u, rh_now_ms() - t0) != 0) {
            log_slow(u);
            return UP_SLOW;
        }
    }
}

/* After the body: DECLINED to wait for the core's answer, else the request
 * is answered (the core stuck, or the body cut or too slow). */
static int push_after_body(rh_req *q, int up)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    char line[RH_IPC_LINE_MAX];
    rh_ipc_reply rep;

    shutdown(q->fd, SHUT_WR);
    if (up == UP_DONE)
        return DECLINED;
    c->keepalive = AP_CONN_CLOSE;
    if (up == UP_CORE_STUCK)
        return rh_core_unavailable(r);
    /* should an answer still reach the client (only the request side was
     * cut), it says how far the session got, so the client goes on */
    if (rh_ipc_read_line(q->fd, line, sizeof(line), CUT_REPLY_MS) >= 0
        && rh_ipc_parse_reply(line, &rep) == 0 && rep.done)
        apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    if (up == UP_SLOW)
        return rh_fail(r, HTTP_REQUEST_TIME_OUT, "request body too slow (RelayFrameTimeout)");
    return rh_fail(r, HTTP_BAD_REQUEST, "push body ended before its end (connection cut?)");
}

/* The core's answer once the body is through (n: the line's length, or an
 * RH_WAIT_* value): 200 with the offset the session reached. */
static int push_answer(rh_req *q, int n, const char *line)
{
    request_rec *r = q->r;
    rh_ipc_reply rep;
    if (n <= 0 || rh_ipc_parse_reply(line, &rep) != 0) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return rh_core_unavailable(r);
    }
    if (!rep.ok) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return rh_fail_reply(r, &rep);
    }
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    r->status = HTTP_OK;
    ap_set_content_length(r, 0);
    return OK;
}

static int answer_ms(const rh_req *q)
{
    return (rh_dir_idle(q->dc) + 10) * 1000;
}

/* A push parked (RelayAsync): its body, then the core's answer. */
typedef struct push_ctx {
    rh_req *q;
    rh_upload u;
    int on_client;              /* the wait was on the client (it counts) */
    int answer;                 /* the body is through: waiting for the answer */
    long t0;
} push_ctx;

/* The core's answer after a wait on it that ended with why. */
static int push_answer_after(rh_req *q, int why)
{
    char line[RH_IPC_LINE_MAX];
    int n = why != RH_WAIT_READY ? why
          : rh_watch_line(&q->watch, q->fd, line, sizeof(line), 1000);
    return push_answer(q, n, line);
}

/* The body is through (or broken): the answer, parked if the core is not
 * ready with it within RH_ASYNC_HOT_MS. */
static int push_ended(rh_park *p, push_ctx *pc, int up)
{
    int rv = push_after_body(pc->q, up);
    if (rv != DECLINED)
        return rv;
    rv = rh_async_hot(&pc->q->watch, pc->q->fd, POLLIN);
    if (rv != RH_WAIT_TIMEOUT)
        return push_answer_after(pc->q, rv);
    pc->answer = 1;
    rh_park_watch(p, pc->q->fd, POLLIN, 0, answer_ms(pc->q));
    return SUSPENDED;
}

/* The body's next wait: RH_ASYNC_HOT_MS on the thread, then parked. An
 * UP_* result when the body ended meanwhile, else -1 to move again, -2 to park. */
static int push_hot(push_ctx *pc, struct pollfd *pf, int np)
{
    rh_upload *u = &pc->u;
    int on_client = !rh_upload_pending(u);
    long t0 = rh_now_ms();
    int hw = np ? rh_async_hot(&pc->q->watch, pf->fd, pf->events) : RH_WAIT_TIMEOUT;
    if (on_client && rh_upload_waited(u, rh_now_ms() - t0) != 0) {
        log_slow(u);
        return UP_SLOW;
    }
    if (hw == RH_WAIT_GONE || hw == RH_WAIT_STUCK)
        return hw == RH_WAIT_GONE ? UP_CLIENT_GONE : UP_CORE_STUCK;
    return hw == RH_WAIT_READY ? -1 : -2;
}

static int push_step(rh_park *p, void *baton, int why)
{
    push_ctx *pc = baton;
    rh_upload *u = &pc->u;
    struct pollfd pf;
    int np;

    if (pc->answer)
        return push_answer_after(pc->q, why);
    if (why == RH_WAIT_GONE || why == RH_WAIT_STUCK)
        return push_ended(p, pc, why == RH_WAIT_GONE ? UP_CLIENT_GONE : UP_CORE_STUCK);
    if (pc->on_client && rh_upload_waited(u, rh_now_ms() - pc->t0) != 0) {
        log_slow(u);
        return push_ended(p, pc, UP_SLOW);
    }
    for (;;) {
        int m = pump_move(u);
        if (m >= 0)
            return push_ended(p, pc, m);
        np = rh_upload_pollfd(u, p->csock, &pf);
        m = push_hot(pc, &pf, np);
        if (m >= 0)
            return push_ended(p, pc, m);
        if (m == -2)
            break;
    }
    pc->on_client = !rh_upload_pending(u);
    pc->t0 = rh_now_ms();
    if (pc->on_client) {
        rh_upload_rest(u);
        rh_park_watch(p, -1, 0, 1, np ? rh_upload_allowance(u) : 50);
    } else {
        rh_park_watch(p, pf.fd, POLLOUT, 0, -1);
    }
    return SUSPENDED;
}

/* The core took the push: its body to the core, then the core's answer. */
static int push_started(rh_req *q, int rv, rh_ipc_reply *rep)
{
    request_rec *r = q->r;
    if ((rv = push_start_answer(q, rv, rep)) != DECLINED)
        return rv;
    /* a push body may idle between frames; the pump holds it to its own floor */
    rh_drop_reqtimeout(r);
    push_ctx *pc = apr_pcalloc(r->pool, sizeof(*pc));
    pc->q = q->then ? q : apr_pmemdup(r->pool, q, sizeof(*q));
    rh_upload_init(&pc->u, r, q->fd, 1000L * rh_srv_frame_s(q->sc), 3000L * RH_HEARTBEAT_S);
    /* the body went with the PUSH line, or part of it was read before */
    int early = q->trail_len ? UP_DONE : -1;
    if (early < 0 && q->ctx && rh_upload_preload(&pc->u, q->ctx) != 0)
        early = UP_CLIENT_GONE;
    rh_park *p = rh_async_park(r);
    if (p) {
        rv = early >= 0 ? push_ended(p, pc, early) : push_step(p, pc, RH_WAIT_READY);
        return rv == SUSPENDED ? rh_async_suspend(p, r, pc->q->watch.core, push_step, pc) : rv;
    }
    if ((rv = push_after_body(q, early >= 0 ? early : pump_body(q, &pc->u))) != DECLINED)
        return rv;
    char line[RH_IPC_LINE_MAX];
    return push_answer(q, rh_watch_line(&q->watch, q->fd, line, sizeof(line), answer_ms(q)),
                       line);
}

/* A small push's body as far as it is here already (never waiting for it):
 * when whole it goes to the core with the PUSH line, which saves an echo in
 * batch a round trip to the core; else the upload sends it once the core
 * took the push. */
static void read_early(rh_req *q, apr_uint64_t body_len)
{
    request_rec *r = q->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_bucket_brigade *tmp = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    int eos = 0;

    while (!eos && ap_get_brigade(r->input_filters, tmp, AP_MODE_READBYTES, APR_NONBLOCK_READ,
                                  RH_UPLOAD_BUF) == APR_SUCCESS && !APR_BRIGADE_EMPTY(tmp)) {
        for (apr_bucket *b = APR_BRIGADE_FIRST(tmp); b != APR_BRIGADE_SENTINEL(tmp);
             b = APR_BUCKET_NEXT(b)) {
            eos |= APR_BUCKET_IS_EOS(b);
            apr_bucket_setaside(b, r->pool);   /* mod_ssl's are transient */
        }
        APR_BRIGADE_CONCAT(bb, tmp);
    }
    apr_brigade_cleanup(tmp);   /* what an error or EAGAIN left */
    q->ctx = bb;
    apr_off_t got = 0;
    if (!eos || apr_brigade_length(bb, 1, &got) != APR_SUCCESS || (apr_uint64_t)got != body_len
        || got == 0)
        return;
    apr_size_t n = (apr_size_t)got;
    char *buf = apr_palloc(r->pool, n);
    if (apr_brigade_flatten(bb, buf, &n) != APR_SUCCESS || n != (apr_size_t)got)
        return;
    q->trail = buf;
    q->trail_len = n;
    q->ctx = NULL;
    apr_brigade_cleanup(bb);
}

int rh_do_push(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *token;
    apr_uint64_t offset;
    rh_ipc_req rq;
    int rv;

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
    push_request(q, token, offset, &rq);
    if (rq.has_len && rq.body_len <= EARLY_MAX)
        read_early(q, rq.body_len);
    /* a push ahead of others in flight waits for its turn (parked, with RelayAsync) */
    return rh_core_ask_then(q, &rq, answer_ms(q), push_started);
}
