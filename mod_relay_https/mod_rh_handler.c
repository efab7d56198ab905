/* Thin glue: check the request, then pipe bytes between Apache's filter chains
 * and the relay core's unix socket. All session logic lives in the core. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_buckets.h>
#include <apr_poll.h>
#include <apr_portable.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "mod_rh_daemon.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_ipc_client.h"
#include "rh_registry.h"
#include "rh_util.h"
#include "mod_rh_upload.h"
#include "mod_rh_wait.h"

#define PULL_BUF        (64 * 1024)
#define CUT_REPLY_MS    2000        /* a cut push waits this long for the core's offset */
#define PULL_COALESCE   4           /* PULL_BUF reads passed on under one flush, at most */
#define DOWN_BLOCK      8000        /* httpd's own bucket size (APR_BUCKET_BUFF_SIZE) */
#define DOWN_NBLOCKS    8           /* blocks filled by one read: about PULL_BUF */
#define CORE_REPLY_MS   10000

typedef struct rh_req {
    request_rec *r;
    const rh_dir_conf *dc;
    const rh_srv_conf *sc;
    rh_watch watch;             /* the client and the core, during every wait */
    const char *target_name;    /* as named in the URL */
    const rh_target *target;    /* its configuration; looked up for open only */
    const char *op;
    rh_slot_view view;
    int fd;                 /* to the core */
} rh_req;

/* One-line plain-text error, the same shape for every status we produce. */
static int fail(request_rec *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(request_rec *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = apr_pvsprintf(r->pool, fmt, ap);
    va_end(ap);
    ap_log_rerror(APLOG_MARK, status >= 500 ? APLOG_WARNING : APLOG_DEBUG, 0, r,
                  RHLOG(2001) "%d %s", status, msg);
    r->status = status;
    if (status == HTTP_SERVICE_UNAVAILABLE || status == HTTP_TOO_MANY_REQUESTS) {
        apr_table_setn(r->headers_out, "Retry-After", "1");
        /* a refused client must not keep a worker in keep-alive either */
        r->connection->keepalive = AP_CONN_CLOSE;
    }
    ap_set_content_type(r, "text/plain; charset=utf-8");
    const char *body = apr_pstrcat(r->pool, RH_ERROR_PREFIX, msg, "\n", NULL);
    ap_set_content_length(r, (apr_off_t)strlen(body));
    ap_rputs(body, r);
    return OK;
}

/* A Relay-* header holding a decimal u64: 0, or -1 when missing or malformed. */
static int hdr_u64(request_rec *r, const char *name, apr_uint64_t *v)
{
    return rh_parse_u64(apr_table_get(r->headers_in, name), (size_t)-1, v);
}

/* A refusal of the core: its status and message, and its reason token (if
 * any) in Relay-Reason, which is what the client goes by. */
static int fail_reply(request_rec *r, const rh_ipc_reply *rep)
{
    if (rep->reason[0])
        apr_table_setn(r->headers_out, RH_HDR_REASON, apr_pstrdup(r->pool, rep->reason));
    return fail(r, rep->status, "%s", rep->text);
}

static int method_not_allowed(request_rec *r, const char *allow)
{
    apr_table_setn(r->headers_out, "Allow", allow);
    return fail(r, HTTP_METHOD_NOT_ALLOWED, "method %s not allowed here (use %s)",
                r->method, allow);
}

/* Down bytes on HTTP/2 become heap buckets of httpd's own size, filled by one
 * readv. mod_http2 sets every bucket aside and copies it into the connection's
 * own: a 64 KiB block per read on both sides is what MaxMemFree makes APR unmap
 * when freed and fault in again on the next read, and that halved duplex
 * throughput. Blocks of this size stay on the allocators' free lists. Blocks not
 * filled wait for the next read. HTTP/1.1 writes what it is given at once (each
 * read ends in a flush): there one reused buffer, in transient buckets, makes
 * fewer and fuller TLS records. */
typedef struct {
    apr_bucket_alloc_t *ba;
    int h2;                     /* blocks (HTTP/2), else the transient buffer */
    char *buf;                  /* HTTP/1.1: PULL_COALESCE reads of PULL_BUF */
    char *blk[DOWN_NBLOCKS];
} rh_blocks;

static apr_status_t blocks_free(void *data)
{
    rh_blocks *bk = data;
    for (int i = 0; i < DOWN_NBLOCKS; ++i)
        if (bk->blk[i]) {
            apr_bucket_free(bk->blk[i]);
            bk->blk[i] = NULL;
        }
    return APR_SUCCESS;
}

static rh_blocks *blocks_make(request_rec *r)
{
    rh_blocks *bk = apr_pcalloc(r->pool, sizeof(*bk));
    bk->ba = r->connection->bucket_alloc;
    bk->h2 = r->connection->master != NULL;
    if (!bk->h2)
        bk->buf = apr_palloc(r->pool, PULL_BUF * PULL_COALESCE);
    apr_pool_cleanup_register(r->pool, bk, blocks_free, apr_pool_cleanup_null);
    return bk;
}

/* Reads up to max bytes without blocking and appends them to bb; slot: the
 * how-manieth read under the same flush (0 to PULL_COALESCE - 1). Returns the
 * bytes read, 0 at the end of the stream, or -errno (-EAGAIN: nothing yet). */
static ssize_t read_blocks(rh_blocks *bk, int fd, apr_bucket_brigade *bb, apr_size_t max,
                           int slot)
{
    struct iovec iov[DOWN_NBLOCKS];
    struct msghdr mh;
    int n = 0, used = 0;
    apr_size_t want = 0;
    ssize_t got;

    if (!bk->h2) {
        char *at = bk->buf + (apr_size_t)slot * PULL_BUF;
        do
            got = recv(fd, at, max < PULL_BUF ? max : PULL_BUF, MSG_DONTWAIT);
        while (got < 0 && errno == EINTR);
        if (got <= 0)
            return got < 0 ? -errno : 0;
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(at, (apr_size_t)got, bk->ba));
        return got;
    }

    /* blocks only for what is there: a read that finds nothing must not
     * allocate (and the wait after it free) a block set every time round */
    int avail = 0;
    if (ioctl(fd, FIONREAD, &avail) == 0 && avail == 0) {
        char c;
        do
            got = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        while (got < 0 && errno == EINTR);
        if (got <= 0)
            return got < 0 ? -errno : 0;
        avail = 1;
    }
    if (avail > 0 && (apr_size_t)avail < max)
        max = (apr_size_t)avail;
    while (n < DOWN_NBLOCKS && want < max) {
        if (!bk->blk[n])
            bk->blk[n] = apr_bucket_alloc(DOWN_BLOCK, bk->ba);
        iov[n].iov_base = bk->blk[n];
        iov[n].iov_len = max - want < DOWN_BLOCK ? max - want : DOWN_BLOCK;
        want += iov[n++].iov_len;
    }
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    do
        got = recvmsg(fd, &mh, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got < 0 ? -errno : 0;
    for (apr_size_t left = (apr_size_t)got; left; ++used) {
        apr_size_t l = left < iov[used].iov_len ? left : iov[used].iov_len;
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_heap_create(bk->blk[used], l, apr_bucket_free,
                                                           bk->ba));
        left -= l;
    }
    for (int i = 0; i < DOWN_NBLOCKS; ++i)
        bk->blk[i] = i + used < DOWN_NBLOCKS ? bk->blk[i + used] : NULL;
    return got;
}

/* Takes mod_reqtimeout out of this request's input: a push or duplex body idles
 * between keystrokes; heartbeats and RelayIdleTimeout cover it. Removing it from
 * c->input_filters alone is not enough: ap_remove_input_filter fixes only the
 * connection's list head, and a request filter in front of it (mod_http2's on
 * a stream, which got mod_reqtimeout from the stream's process_connection)
 * still points at it, so an idle duplex stream died after the body timeout. */
static void drop_reqtimeout(request_rec *r)
{
    ap_filter_rec_t *rec = ap_get_input_filter_handle("reqtimeout");
    ap_filter_t **heads[3] = { &r->input_filters, &r->proto_input_filters,
                               &r->connection->input_filters };
    if (!rec)
        return;
    for (int i = 0; i < 3; ++i)
        for (ap_filter_t **pp = heads[i]; *pp; )
            if ((*pp)->frec == rec)
                *pp = (*pp)->next;
            else
                pp = &(*pp)->next;
}

static apr_status_t close_fd(void *data)
{
    close((int)(long)data);
    return APR_SUCCESS;
}

/* Sends one request line and reads the core's answer. */
static int core_ask(rh_req *q, const rh_ipc_req *rq, rh_ipc_reply *rep, int timeout_ms)
{
    char line[RH_IPC_LINE_MAX];
    int n = rh_ipc_format_req(line, sizeof(line), rq);
    if (n < 0)
        return -EINVAL;
    q->fd = -1;
    const char *path = rh_daemon_socket();
    int fd = path ? rh_ipc_connect(path, 5000) : -ENOENT;
    if (fd < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, -fd, q->r, RHLOG(2002)
                      "cannot reach the relay core at %s", path ? path : "(none)");
        return fd;
    }
    q->fd = fd;
    apr_pool_cleanup_register(q->r->pool, (void *)(long)fd, close_fd, apr_pool_cleanup_null);
    int rv = rh_ipc_write_all(fd, line, (size_t)n, 5000);
    if (rv == 0) {
        /* the answer may take long (a push's turn, a long-poll): the wait
         * watches the client and the core's heartbeat meanwhile */
        rv = rh_watch_line(&q->watch, fd, line, sizeof(line), timeout_ms);
        if (rv == RH_WAIT_GONE) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, q->r, RHLOG(2005)
                          "client went away while waiting for the relay core");
            return -ECONNABORTED;
        }
        if (rv <= 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, RHLOG(2003)
                          "no answer from the relay core (%s)",
                          rv == RH_WAIT_STUCK ? "stopped or stuck" : "timeout");
            return -ETIMEDOUT;
        }
    }
    if (rv < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, -rv, q->r, RHLOG(2003)
                      "no answer from the relay core");
        return rv;
    }
    if (rh_ipc_parse_reply(line, rep) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, RHLOG(2004)
                      "bad answer from the relay core: %s", line);
        return -EPROTO;
    }
    return 0;
}

static int core_unavailable(request_rec *r)
{
    return fail(r, HTTP_SERVICE_UNAVAILABLE, "relay core unavailable, try again");
}

static void common_headers(request_rec *r)
{
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    apr_table_setn(r->subprocess_env, "no-gzip", "1");   /* compressing would buffer */
}

/* A 64-bit FNV-1a of a tagged string: the core keys clients by it and the
 * registry keeps a session's owner as it (names never leave the handler). */
static apr_uint64_t hash64(const char *tag, const char *s)
{
    apr_uint64_t h = 14695981039346656037ULL;
    for (const char *p = tag; *p; ++p)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (const char *p = s; *p; ++p)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h ? h : 1;
}

/* The authenticated user's hash, 0 without authentication. */
static apr_uint64_t user_hash(const request_rec *r)
{
    return r->user ? hash64("user:", r->user) : 0;
}

/* The client as the limits see it: its user, else its address. */
static const char *client_key(request_rec *r)
{
    apr_uint64_t h = r->user ? user_hash(r) : hash64("addr:", r->useragent_ip ? r->useragent_ip
                                                                     : "-");
    return apr_psprintf(r->pool, "%016" APR_UINT64_T_HEX_FMT, h);
}

/* The token in Relay-Session, checked against the shared registry. */
static int check_session(rh_req *q, const char **token)
{
    request_rec *r = q->r;
    *token = apr_table_get(r->headers_in, RH_HDR_SESSION);
    if (!*token)
        return fail(r, HTTP_BAD_REQUEST, "missing Relay-Session header");
    const rh_registry *reg = rh_daemon_registry();
    int rv = reg ? rh_registry_check(reg, *token, &q->view) : RH_REG_UNKNOWN;
    if (rv == RH_REG_MALFORMED)
        return fail(r, HTTP_BAD_REQUEST, "malformed Relay-Session token");
    if (rv != RH_REG_OK || strcmp(q->view.target, q->target_name) != 0)
        return fail(r, HTTP_GONE, "unknown or expired session");
    /* where the location authenticates, a session is its opener's: a token
     * alone, or with another user's credentials, is not enough */
    if (q->view.owner && q->view.owner != user_hash(r))
        return fail(r, HTTP_FORBIDDEN, "this session belongs to another user");
    char sid[RH_SID_LEN + 1];
    rh_sid_format(sid, q->view.slot, q->view.gen);
    apr_table_setn(r->notes, "relay-session", apr_pstrdup(r->pool, sid));
    return DECLINED;   /* = go on */
}

static int do_open(rh_req *q)
{
    request_rec *r = q->r;
    apr_sockaddr_t *sa;
    char *ip;
    rh_ipc_req rq;
    rh_ipc_reply rep;

    if (r->method_number != M_POST)
        return method_not_allowed(r, "POST");
    if (ap_discard_request_body(r) != OK)
        return fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    if (apr_sockaddr_info_get(&sa, q->target->host, APR_UNSPEC, q->target->port, 0,
                              r->pool) != APR_SUCCESS
        || apr_sockaddr_ip_get(&ip, sa) != APR_SUCCESS)
        return fail(r, HTTP_BAD_GATEWAY, "cannot resolve the address of target '%s'",
                    q->target->name);
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_OPEN;
    apr_cpystrn(rq.target, q->target->name, sizeof(rq.target));
    apr_cpystrn(rq.host, ip, sizeof(rq.host));
    rq.port = q->target->port;
    rq.bufsize = (unsigned)rh_dir_bufsize(q->dc);
    rq.idle_s = (unsigned)rh_dir_idle(q->dc);
    rq.connect_s = (unsigned)rh_dir_connect(q->dc);
    /* a client that can resume asks the server to keep bytes until acknowledged */
    const char *res = apr_table_get(r->headers_in, RH_HDR_RESUME);
    rq.window = (unsigned)rh_dir_window(q->dc);
    rq.resume = res && !strcmp(res, RH_RESUME_YES) && rq.window > 0;
    /* end-to-end checks: C frames after every D frame, both ways */
    const char *chk = apr_table_get(r->headers_in, RH_HDR_INTEGRITY);
    rq.check = chk && !strcmp(chk, RH_INTEGRITY_CRC32C);
    apr_cpystrn(rq.client, client_key(r), sizeof(rq.client));
    rq.owner = user_hash(r);
    if (core_ask(q, &rq, &rep, (rh_dir_connect(q->dc) + 5) * 1000) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail_reply(r, &rep);
    if (strlen(rep.text) != RH_TOKEN_LEN)
        return core_unavailable(r);
    apr_table_setn(r->notes, "relay-session", apr_pstrndup(r->pool, rep.text, RH_SID_LEN));
    apr_table_setn(r->headers_out, RH_HDR_SESSION, apr_pstrdup(r->pool, rep.text));
    apr_table_setn(r->headers_out, RH_HDR_BUFFER, apr_itoa(r->pool, rh_dir_bufsize(q->dc)));
    apr_table_setn(r->headers_out, RH_HDR_IDLE, apr_itoa(r->pool, rh_dir_idle(q->dc)));
    apr_table_setn(r->headers_out, RH_HDR_HEARTBEAT, apr_itoa(r->pool, RH_HEARTBEAT_S));
    if (rq.resume) {
        apr_table_setn(r->headers_out, RH_HDR_RESUME, RH_RESUME_YES);
        apr_table_setn(r->headers_out, RH_HDR_WINDOW, apr_itoa(r->pool, (int)rq.window));
    }
    if (rq.check)
        apr_table_setn(r->headers_out, RH_HDR_INTEGRITY, RH_INTEGRITY_CRC32C);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2010) "session %.*s opened to %s",
                  RH_SID_LEN, rep.text, q->target->name);
    r->status = HTTP_CREATED;
    ap_set_content_length(r, 0);
    return OK;
}

/* Asks the core to start a push at offset; on refusal answers the request
 * (with the accepted offset on a 409) and returns that status, else DECLINED.
 * A push ahead of others in flight waits for them: up to the idle timeout. */
static int start_push(rh_req *q, const char *token, apr_uint64_t offset, int timeout_ms)
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
        && hdr_u64(r, "Content-Length", &rq.body_len) == 0)
        rq.has_len = 1;
    if (core_ask(q, &rq, &rep, timeout_ms) != 0) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        r->connection->keepalive = AP_CONN_CLOSE;
        if (rep.status == HTTP_CONFLICT)
            apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, q->view.up_bytes));
        return fail_reply(r, &rep);
    }
    return DECLINED;
}

static int client_input_fd(conn_rec *c);
static void limit_writes(rh_req *q);

/* Result of pumping a request body to the core. */
enum { UP_DONE, UP_CLIENT_GONE, UP_SLOW, UP_CORE_STUCK };

/* Passes the request body to the core until it ends or the core stops taking
 * it, waiting on the client or the core as each needs, never blocking. */
static int pump_body(rh_req *q, int core_fd)
{
    request_rec *r = q->r;
    rh_upload u;
    int cfd = client_input_fd(r->connection);

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

static int do_push(rh_req *q)
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
        return method_not_allowed(r, "POST");
    }
    if ((rv = check_session(q, &token)) != DECLINED) {
        c->keepalive = AP_CONN_CLOSE;
        return rv;
    }
    if (hdr_u64(r, RH_HDR_OFFSET, &offset) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Offset header");
    }
    if ((rv = start_push(q, token, offset, write_ms)) != DECLINED)
        return rv;
    /* a push body may idle between frames; pump_body holds it to its own floor */
    drop_reqtimeout(r);

    int up = pump_body(q, q->fd);
    shutdown(q->fd, SHUT_WR);
    char line[RH_IPC_LINE_MAX];
    if (up == UP_CORE_STUCK) {
        c->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
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
            return fail(r, HTTP_REQUEST_TIME_OUT, "request body too slow (RelayFrameTimeout)");
        return fail(r, HTTP_BAD_REQUEST, "push body ended before its end (connection cut?)");
    }
    rv = rh_watch_line(&q->watch, q->fd, line, sizeof(line), write_ms);
    if (rv <= 0 || rh_ipc_parse_reply(line, &rep) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        c->keepalive = AP_CONN_CLOSE;
        return fail_reply(r, &rep);
    }
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    r->status = HTTP_OK;
    ap_set_content_length(r, 0);
    return OK;
}

static int do_pull(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *token;
    apr_uint64_t ack;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv;

    /* HEAD would hold the session's pull and send nothing of it */
    if ((r->method_number != M_POST && r->method_number != M_GET) || r->header_only)
        return method_not_allowed(r, "GET, POST");
    if (ap_discard_request_body(r) != OK)
        return fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    if ((rv = check_session(q, &token)) != DECLINED)
        return rv;
    if (hdr_u64(r, RH_HDR_ACK, &ack) != 0)
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *mode = apr_table_get(r->headers_in, RH_HDR_MODE);
    int batch = mode && !strcasecmp(mode, RH_MODE_BATCH);
    if (mode && !batch && strcasecmp(mode, RH_MODE_STREAM) != 0)
        return fail(r, HTTP_BAD_REQUEST, "unknown Relay-Mode '%s' (stream or batch)", mode);
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PULL;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.offset = ack;
    apr_cpystrn(rq.mode, batch ? RH_MODE_BATCH : RH_MODE_STREAM, sizeof(rq.mode));
    rq.poll_s = batch ? (unsigned)rh_dir_poll(q->dc) : 0;
    if (core_ask(q, &rq, &rep, batch ? (rh_dir_poll(q->dc) + 10) * 1000 : CORE_REPLY_MS) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail_reply(r, &rep);

    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    apr_off_t remain = -1;
    if (batch) {
        /* "OK <offset> <length>": the answer is complete, say how long it is */
        const char *sp = strchr(rep.text, ' ');
        apr_uint64_t len;
        if (!sp || rh_parse_u64(sp + 1, (size_t)-1, &len) != 0)
            return core_unavailable(r);
        remain = (apr_off_t)len;
        ap_set_content_length(r, remain);
    }

    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    rh_blocks *bk = blocks_make(r);
    limit_writes(q);
    if (!batch) {
        /* headers now: the client waits for them before it trusts the stream */
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || c->aborted)
            return OK;
        apr_brigade_cleanup(bb);
    }
    while (remain != 0) {
        /* the core sends at least a heartbeat every RH_HEARTBEAT_S */
        apr_size_t want = remain > 0 && remain < PULL_BUF ? (apr_size_t)remain : PULL_BUF;
        ssize_t n = read_blocks(bk, q->fd, bb, want, 0);
        if (n == -EAGAIN) {
            struct pollfd pf = { q->fd, POLLIN, 0 };
            blocks_free(bk);   /* a tunnel that waits holds no buffers */
            /* a client that went away (an HTTP/2 stream reset, say) lets the
             * session's pull go at once, not at the next heartbeat */
            int pr = rh_watch_poll(&q->watch, &pf, 1, RH_HEARTBEAT_S * 3 * 1000);
            if (pr == RH_WAIT_READY)
                continue;
            n = pr == RH_WAIT_TIMEOUT ? -ETIMEDOUT : pr == RH_WAIT_GONE ? -ECONNABORTED
                                                                          : -EIO;
        }
        if (n <= 0) {
            if (n < 0)
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, (apr_status_t)-n, r, RHLOG(2030)
                              "pull: relay core stream ended");
            break;
        }
        if (remain > 0)
            remain -= n;
        /* what the core has ready goes out with it, under one flush: fewer,
         * fuller TLS writes when the tunnel is busy, no wait when it is not */
        for (int i = 1; i < PULL_COALESCE && remain != 0; ++i) {
            want = remain > 0 && remain < PULL_BUF ? (apr_size_t)remain : PULL_BUF;
            ssize_t m = read_blocks(bk, q->fd, bb, want, i);
            if (m <= 0)
                break;      /* nothing ready (or the end: the next read sees it) */
            if (remain > 0)
                remain -= m;
        }
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || c->aborted) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2031)
                          "pull: client went away");
            return OK;
        }
        apr_brigade_cleanup(bb);
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
    return OK;
}

static apr_status_t restore_timeout(void *data)
{
    request_rec *r = data;
    apr_socket_t *sock = ap_get_conn_socket(r->connection);
    if (sock)
        apr_socket_timeout_set(sock, r->server->timeout);
    return APR_SUCCESS;
}

/* A response whose client stops reading must not hold its worker for the
 * server's Timeout: its writes may block RelayWriteTimeout at most (HTTP/1.1;
 * an HTTP/2 stream is bounded by mod_http2's H2StreamTimeout). */
static void limit_writes(rh_req *q)
{
    request_rec *r = q->r;
    apr_socket_t *sock;
    if (r->connection->master || !(sock = ap_get_conn_socket(r->connection)))
        return;
    apr_socket_timeout_set(sock, apr_time_from_sec(rh_srv_write_s(q->sc)));
    apr_pool_cleanup_register(r->pool, r, restore_timeout, apr_pool_cleanup_null);
}

/* Raw descriptor behind the pollfd httpd gives for a connection's input: the
 * socket (HTTP/1.1) or mod_http2's notification pipe (HTTP/2 stream). */
static int client_input_fd(conn_rec *c)
{
    apr_pollfd_t pfd;
    apr_os_sock_t sock;
    apr_os_file_t file;
    memset(&pfd, 0, sizeof(pfd));
    if (ap_get_pollfd_from_conn(c, &pfd, NULL) != APR_SUCCESS)
        return -1;
    if (pfd.desc_type == APR_POLL_SOCKET && apr_os_sock_get(&sock, pfd.desc.s) == APR_SUCCESS)
        return (int)sock;
    if (pfd.desc_type == APR_POLL_FILE && apr_os_file_get(&file, pfd.desc.f) == APR_SUCCESS)
        return (int)file;
    return -1;
}

/* One request carries both directions: its body is the push, its response the
 * pull (HTTP/2, or an HTTP/1.1 path that allows it). Both core connections are
 * served from this one thread: input is read non-blocking and the thread sleeps
 * in poll() on the client input, the core's pull socket and, while the core is
 * not taking push bytes, the push socket. */
static int do_duplex(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *token;
    apr_uint64_t offset, ack;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv, fd_up, fd_down, cfd;
    int up_shut = 0, down_done = 0, idle_ms = RH_HEARTBEAT_S * 3 * 1000;
    rh_upload u;

    if (r->method_number != M_POST) {
        c->keepalive = AP_CONN_CLOSE;
        return method_not_allowed(r, "POST");
    }
    if ((rv = check_session(q, &token)) != DECLINED) {
        c->keepalive = AP_CONN_CLOSE;
        return rv;
    }
    if (hdr_u64(r, RH_HDR_OFFSET, &offset) != 0
        || hdr_u64(r, RH_HDR_ACK, &ack) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Offset or Relay-Ack header");
    }
    cfd = client_input_fd(c);
    if (cfd < 0) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, HTTP_NOT_IMPLEMENTED, "duplex is not available on this connection "
                    "(use HTTP/2, or the stream transport)");
    }
    if ((rv = start_push(q, token, offset, (rh_dir_idle(q->dc) + 10) * 1000)) != DECLINED)
        return rv;
    fd_up = q->fd;
    memset(&rq, 0, sizeof(rq));
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.op = RH_IPC_PULL;
    rq.offset = ack;
    apr_cpystrn(rq.mode, RH_MODE_STREAM, sizeof(rq.mode));
    if (core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        c->keepalive = AP_CONN_CLOSE;
        return fail_reply(r, &rep);
    }
    fd_down = q->fd;
    drop_reqtimeout(r);

    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    apr_bucket_brigade *out = apr_brigade_create(r->pool, c->bucket_alloc);
    rh_blocks *bk = blocks_make(r);
    rh_upload_init(&u, r, fd_up, 1000L * rh_srv_frame_s(q->sc), 3000L * RH_HEARTBEAT_S);
    limit_writes(q);
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_flush_create(c->bucket_alloc));
    if (ap_pass_brigade(r->output_filters, out) != APR_SUCCESS || c->aborted)
        return OK;
    apr_brigade_cleanup(out);

    for (;;) {
        /* up: client body -> core, as long as the core takes it */
        int progress = 0, m = rh_upload_move(&u);
        if (m < 0)
            goto leave;
        progress = m > 0;
        int up_over = u.core_done || (u.eos && !rh_upload_pending(&u));
        if (u.eos && !rh_upload_pending(&u) && !up_shut) {
            shutdown(fd_up, SHUT_WR);
            up_shut = 1;
        }
        /* down: core -> response, flushed chunk by chunk */
        while (!down_done) {
            ssize_t n = read_blocks(bk, fd_down, out, PULL_BUF, 0);
            if (n == -EAGAIN || n == -EWOULDBLOCK)
                break;
            if (n <= 0) {
                down_done = 1;
                break;
            }
            progress = 1;
            APR_BRIGADE_INSERT_TAIL(out, apr_bucket_flush_create(c->bucket_alloc));
            if (ap_pass_brigade(r->output_filters, out) != APR_SUCCESS || c->aborted)
                goto leave;
            apr_brigade_cleanup(out);
        }
        /* both ended: the pull (F or R) and the push (the core answered it, as
         * it does at once when the session ends, or the body is all in) */
        if (down_done && up_over)
            break;
        if (progress)
            continue;
        struct pollfd pf[3];
        int np = rh_upload_pollfd(&u, cfd, pf);
        int on_client = np && pf[0].fd == cfd;
        if (!down_done)
            pf[np++] = (struct pollfd){ .fd = fd_down, .events = POLLIN };
        int answer = np;
        if (!u.core_done)
            pf[np++] = (struct pollfd){ .fd = fd_up, .events = POLLIN };
        blocks_free(bk);   /* a tunnel that waits holds no buffers */
        long t0 = rh_now_ms(), wait = on_client ? rh_upload_allowance(&u) : idle_ms;
        rv = rh_watch_poll(&q->watch, pf, np, wait < idle_ms ? (int)wait : idle_ms);
        if (rv == RH_WAIT_GONE || rv == RH_WAIT_STUCK)
            goto leave;
        if (on_client && rh_upload_waited(&u, rh_now_ms() - t0) != 0) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2042)
                          "duplex: request body too slow (RelayFrameTimeout)");
            goto leave;
        }
        if (rv == RH_WAIT_TIMEOUT && !on_client) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2041)
                          "duplex: nothing moved for %d s, ending", idle_ms / 1000);
            goto leave;
        }
        if (answer < np && (pf[answer].revents & (POLLIN | POLLHUP | POLLERR)))
            u.core_done = 1;   /* the core answered the push: the up side is over */
    }
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, out);
leave:
    /* On HTTP/2 the access-log line waits for the stream's cleanup on the main
     * connection; this line says when the worker itself was free. */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2043) "duplex of session %s over",
                  apr_table_get(r->notes, "relay-session"));
    c->keepalive = AP_CONN_CLOSE;
    return OK;
}

/* close and ack: a session request with no body that the core answers at once;
 * the client hears 204. */
static int do_control(rh_req *q, rh_ipc_op op)
{
    request_rec *r = q->r;
    const char *token;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv;

    if (r->method_number != M_POST)
        return method_not_allowed(r, "POST");
    if (ap_discard_request_body(r) != OK)
        return fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    if ((rv = check_session(q, &token)) != DECLINED)
        return rv;
    memset(&rq, 0, sizeof(rq));
    rq.op = op;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    if (op == RH_IPC_ACK
        && hdr_u64(r, RH_HDR_ACK, &rq.offset) != 0)
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *why = apr_table_get(r->headers_in, RH_HDR_REASON);
    rq.integrity = op == RH_IPC_CLOSE && why && !strcmp(why, RH_REASON_TOKEN_INTEGRITY);
    if (core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail_reply(r, &rep);
    r->status = HTTP_NO_CONTENT;
    return OK;
}

/* Splits the URI below the location into TARGET and OP. */
static int split_uri(request_rec *r, const rh_dir_conf *dc, const char **target,
                     const char **op)
{
    const char *rel = r->uri;
    size_t ll = dc->location ? strlen(dc->location) : 0;
    if (ll && !strncmp(rel, dc->location, ll) && (rel[ll] == '/' || rel[ll] == '\0'))
        rel += ll;
    else {
        /* not under a plain <Location> prefix: take the last two segments */
        const char *last = strrchr(rel, '/');
        const char *p = last;
        while (p > rel && *(p - 1) != '/')
            --p;
        rel = p > rel ? p - 1 : rel;
    }
    while (*rel == '/')
        ++rel;
    if (!*rel)
        return 0;   /* the base itself */
    const char *slash = strchr(rel, '/');
    if (!slash || strchr(slash + 1, '/'))
        return -1;
    *target = apr_pstrndup(r->pool, rel, (apr_size_t)(slash - rel));
    *op = slash + 1;
    return 1;
}

/* TRACE would echo the request, Relay-Session included: httpd answers it
 * before any handler (map_to_storage), so a relay location refuses it here,
 * where the <Location> configuration is already known. */
int rh_refuse_trace(request_rec *r)
{
    const rh_dir_conf *dc;
    if (r->method_number != M_TRACE)
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &relay_https_module);
    if (!dc || !dc->targets || dc->targets->nelts == 0)
        return DECLINED;
    r->allowed = AP_METHOD_BIT << M_GET | AP_METHOD_BIT << M_POST;
    return HTTP_METHOD_NOT_ALLOWED;
}

int rh_handler(request_rec *r)
{
    rh_req q;
    const char *target = NULL, *op = NULL;

    if (!r->handler || strcmp(r->handler, "relay-https") != 0)
        return DECLINED;
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.fd = -1;
    q.dc = ap_get_module_config(r->per_dir_config, &relay_https_module);
    q.sc = ap_get_module_config(r->server->module_config, &relay_https_module);
    rh_watch_init(&q.watch, r->connection);
    common_headers(r);

    int where = split_uri(r, q.dc, &target, &op);
    if (where == 0) {
        if (r->method_number != M_GET)
            return method_not_allowed(r, "GET");
        ap_set_content_type(r, "text/plain; charset=utf-8");
        ap_rputs(RH_ERROR_PREFIX "relay endpoint\n", r);
        return OK;
    }
    if (where < 0 || !rh_valid_target_name(target))
        return fail(r, HTTP_NOT_FOUND, "no such relay endpoint");
    const char *ver = apr_table_get(r->headers_in, RH_HDR_VERSION);
    if (ver && strcmp(ver, RH_PROTO_VERSION) != 0)
        return fail(r, HTTP_BAD_REQUEST, "unsupported " RH_HDR_VERSION " %s (this server speaks "
                    RH_PROTO_VERSION ")", ver);
    q.target_name = target;
    q.op = op;
    if (!strcmp(op, RH_EP_OPEN)) {
        /* Only an open consults the RelayTarget list: a session opened before a
         * reload that removed its target goes on to the address it was given. */
        q.target = rh_find_target(q.dc, target);
        if (!q.target)
            return fail(r, HTTP_NOT_FOUND, "unknown target '%s'", target);
        return do_open(&q);
    }
    if (!strcmp(op, RH_EP_PUSH))
        return do_push(&q);
    if (!strcmp(op, RH_EP_PULL))
        return do_pull(&q);
    if (!strcmp(op, RH_EP_CLOSE))
        return do_control(&q, RH_IPC_CLOSE);
    if (!strcmp(op, RH_EP_DUPLEX))
        return do_duplex(&q);
    if (!strcmp(op, RH_EP_ACK))
        return do_control(&q, RH_IPC_ACK);
    return fail(r, HTTP_NOT_FOUND, "no such relay endpoint '%s'", op);
}
