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

#include "mod_relay_https.h"
#include "rh_config.h"
#include "rh_daemon.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_registry.h"

#define PULL_BUF        (64 * 1024)
#define CUT_REPLY_MS    2000        /* a cut push waits this long for the core's offset */
#define PULL_COALESCE   4           /* PULL_BUF reads passed on under one flush, at most */
#define DOWN_BLOCK      8000        /* httpd's own bucket size (APR_BUCKET_BUFF_SIZE) */
#define DOWN_NBLOCKS    8           /* blocks filled by one read: about PULL_BUF */
#define CORE_REPLY_MS   10000

typedef struct rh_req {
    request_rec *r;
    const rh_dir_conf *dc;
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
    if (status == HTTP_SERVICE_UNAVAILABLE)
        apr_table_setn(r->headers_out, "Retry-After", "1");
    ap_set_content_type(r, "text/plain; charset=utf-8");
    const char *body = apr_pstrcat(r->pool, "mod_relay_https: ", msg, "\n", NULL);
    ap_set_content_length(r, (apr_off_t)strlen(body));
    ap_rputs(body, r);
    return OK;
}

static int method_not_allowed(request_rec *r, const char *allow)
{
    apr_table_setn(r->headers_out, "Allow", allow);
    return fail(r, HTTP_METHOD_NOT_ALLOWED, "method %s not allowed here (use %s)",
                r->method, allow);
}

static int parse_u64(const char *s, apr_uint64_t *v)
{
    char *end;
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    apr_uint64_t x = (apr_uint64_t)apr_strtoi64(s, &end, 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
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
    if (rv == 0)
        rv = rh_ipc_read_line(fd, line, sizeof(line), timeout_ms);
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

/* The token in Relay-Session, checked against the shared registry. */
static int check_session(rh_req *q, const char **token)
{
    request_rec *r = q->r;
    *token = apr_table_get(r->headers_in, "Relay-Session");
    if (!*token)
        return fail(r, HTTP_BAD_REQUEST, "missing Relay-Session header");
    const rh_registry *reg = rh_daemon_registry();
    int rv = reg ? rh_registry_check(reg, *token, &q->view) : RH_REG_UNKNOWN;
    if (rv == RH_REG_MALFORMED)
        return fail(r, HTTP_BAD_REQUEST, "malformed Relay-Session token");
    if (rv != RH_REG_OK || strcmp(q->view.target, q->target_name) != 0)
        return fail(r, HTTP_GONE, "unknown or expired session");
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
    const char *res = apr_table_get(r->headers_in, "Relay-Resume");
    rq.window = (unsigned)rh_dir_window(q->dc);
    rq.resume = res && !strcmp(res, "1") && rq.window > 0;
    /* end-to-end checks: C frames after every D frame, both ways */
    const char *chk = apr_table_get(r->headers_in, RH_HDR_INTEGRITY);
    rq.check = chk && !strcmp(chk, RH_INTEGRITY_CRC32C);
    if (core_ask(q, &rq, &rep, (rh_dir_connect(q->dc) + 5) * 1000) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail(r, rep.status, "%s", rep.text);
    if (strlen(rep.text) != RH_TOKEN_LEN)
        return core_unavailable(r);
    apr_table_setn(r->notes, "relay-session", apr_pstrndup(r->pool, rep.text, RH_SID_LEN));
    apr_table_setn(r->headers_out, "Relay-Session", apr_pstrdup(r->pool, rep.text));
    apr_table_setn(r->headers_out, "Relay-Buffer", apr_itoa(r->pool, rh_dir_bufsize(q->dc)));
    apr_table_setn(r->headers_out, "Relay-Idle-Timeout", apr_itoa(r->pool, rh_dir_idle(q->dc)));
    apr_table_setn(r->headers_out, "Relay-Heartbeat", apr_itoa(r->pool, RH_HEARTBEAT_S));
    if (rq.resume) {
        apr_table_setn(r->headers_out, "Relay-Resume", "1");
        apr_table_setn(r->headers_out, "Relay-Window", apr_itoa(r->pool, (int)rq.window));
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
        && parse_u64(apr_table_get(r->headers_in, "Content-Length"), &rq.body_len) == 0)
        rq.has_len = 1;
    if (core_ask(q, &rq, &rep, timeout_ms) != 0) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        r->connection->keepalive = AP_CONN_CLOSE;
        if (rep.status == HTTP_CONFLICT)
            apr_table_setn(r->headers_out, "Relay-Offset",
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, q->view.up_bytes));
        return fail(r, rep.status, "%s", rep.text);
    }
    return DECLINED;
}

static int do_push(rh_req *q)
{
    request_rec *r = q->r;
    conn_rec *c = r->connection;
    const char *token;
    apr_uint64_t offset;
    rh_ipc_reply rep;
    apr_bucket_brigade *bb;
    int rv, eos = 0, core_gone = 0, client_gone = 0;
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
    if (parse_u64(apr_table_get(r->headers_in, "Relay-Offset"), &offset) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Offset header");
    }
    if ((rv = start_push(q, token, offset, write_ms)) != DECLINED)
        return rv;
    /* a push body may idle for long; heartbeats and RelayIdleTimeout cover it */
    drop_reqtimeout(r);

    bb = apr_brigade_create(r->pool, c->bucket_alloc);
    while (!eos && !core_gone) {
        apr_status_t st = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, 65536);
        if (st != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, st, r, RHLOG(2020)
                          "push body ended early (client gone or cut)");
            client_gone = 1;
            break;
        }
        for (apr_bucket *b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t len;
            if (APR_BUCKET_IS_EOS(b)) {
                eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS) {
                client_gone = 1;
                break;
            }
            if (len && rh_ipc_write_all(q->fd, data, len, write_ms) != 0) {
                core_gone = 1;   /* the core refused more: its answer says why */
                break;
            }
        }
        apr_brigade_cleanup(bb);
        if (client_gone)
            break;
    }
    shutdown(q->fd, SHUT_WR);
    char line[RH_IPC_LINE_MAX];
    if (client_gone) {
        /* should an answer still reach the client (only the request side was
         * cut), it says how far the session got, so the client goes on */
        c->keepalive = AP_CONN_CLOSE;
        if (rh_ipc_read_line(q->fd, line, sizeof(line), CUT_REPLY_MS) >= 0
            && rh_ipc_parse_reply(line, &rep) == 0 && rep.done)
            apr_table_setn(r->headers_out, "Relay-Offset",
                           apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
        return fail(r, HTTP_BAD_REQUEST, "push body ended before its end (connection cut?)");
    }
    if (rh_ipc_read_line(q->fd, line, sizeof(line), write_ms) < 0
        || rh_ipc_parse_reply(line, &rep) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, rep.status, "%s", rep.text);
    }
    apr_table_setn(r->headers_out, "Relay-Offset",
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

    if (r->method_number != M_POST && r->method_number != M_GET)
        return method_not_allowed(r, "GET, POST");
    if (ap_discard_request_body(r) != OK)
        return fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    if ((rv = check_session(q, &token)) != DECLINED)
        return rv;
    if (parse_u64(apr_table_get(r->headers_in, "Relay-Ack"), &ack) != 0)
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *mode = apr_table_get(r->headers_in, "Relay-Mode");
    int batch = mode && !strcasecmp(mode, "batch");
    if (mode && !batch && strcasecmp(mode, "stream") != 0)
        return fail(r, HTTP_BAD_REQUEST, "unknown Relay-Mode '%s' (stream or batch)", mode);
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PULL;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    rq.offset = ack;
    apr_cpystrn(rq.mode, batch ? "batch" : "stream", sizeof(rq.mode));
    rq.poll_s = batch ? (unsigned)rh_dir_poll(q->dc) : 0;
    if (core_ask(q, &rq, &rep, batch ? (rh_dir_poll(q->dc) + 10) * 1000 : CORE_REPLY_MS) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail(r, rep.status, "%s", rep.text);

    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, "Relay-Offset",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    apr_off_t remain = -1;
    if (batch) {
        /* "OK <offset> <length>": the answer is complete, say how long it is */
        const char *sp = strchr(rep.text, ' ');
        apr_uint64_t len;
        if (!sp || parse_u64(sp + 1, &len) != 0)
            return core_unavailable(r);
        remain = (apr_off_t)len;
        ap_set_content_length(r, remain);
    }

    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    rh_blocks *bk = blocks_make(r);
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
            int pr = poll(&pf, 1, RH_HEARTBEAT_S * 3 * 1000);
            if (pr > 0 || (pr < 0 && errno == EINTR))
                continue;
            n = pr == 0 ? -ETIMEDOUT : -errno;
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
    int up_eos = 0, down_done = 0, idle_ms = RH_HEARTBEAT_S * 3 * 1000;
    char *pend = NULL;
    apr_size_t pend_len = 0, pend_off = 0, pend_cap = 0;

    if (r->method_number != M_POST) {
        c->keepalive = AP_CONN_CLOSE;
        return method_not_allowed(r, "POST");
    }
    if ((rv = check_session(q, &token)) != DECLINED) {
        c->keepalive = AP_CONN_CLOSE;
        return rv;
    }
    if (parse_u64(apr_table_get(r->headers_in, "Relay-Offset"), &offset) != 0
        || parse_u64(apr_table_get(r->headers_in, "Relay-Ack"), &ack) != 0) {
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
    apr_cpystrn(rq.mode, "stream", sizeof(rq.mode));
    if (core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0) {
        c->keepalive = AP_CONN_CLOSE;
        return core_unavailable(r);
    }
    if (!rep.ok) {
        c->keepalive = AP_CONN_CLOSE;
        return fail(r, rep.status, "%s", rep.text);
    }
    fd_down = q->fd;
    drop_reqtimeout(r);

    r->status = HTTP_OK;
    ap_set_content_type(r, "application/octet-stream");
    apr_table_setn(r->headers_out, "Relay-Offset",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep.num));
    apr_bucket_brigade *out = apr_brigade_create(r->pool, c->bucket_alloc);
    apr_bucket_brigade *in = apr_brigade_create(r->pool, c->bucket_alloc);
    rh_blocks *bk = blocks_make(r);
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_flush_create(c->bucket_alloc));
    if (ap_pass_brigade(r->output_filters, out) != APR_SUCCESS || c->aborted)
        return OK;
    apr_brigade_cleanup(out);

    while (!down_done || !up_eos) {
        int progress = 0;
        /* up: client body -> core, as long as the core takes it */
        while (!up_eos && pend_off == pend_len) {
            apr_status_t st = ap_get_brigade(r->input_filters, in, AP_MODE_READBYTES,
                                             APR_NONBLOCK_READ, PULL_BUF);
            if (APR_STATUS_IS_EAGAIN(st))
                break;
            if (st != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, st, r, RHLOG(2040)
                              "duplex: request body ended early");
                goto leave;
            }
            if (!APR_BRIGADE_EMPTY(in) && APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(in)))
                up_eos = 1;
            /* take all of it: a filter may hand more than was asked for */
            apr_off_t blen = 0;
            if (apr_brigade_length(in, 1, &blen) != APR_SUCCESS)
                goto leave;
            if (!pend || (apr_size_t)blen > pend_cap) {
                pend_cap = (apr_size_t)blen > PULL_BUF ? (apr_size_t)blen : PULL_BUF;
                pend = apr_palloc(r->pool, pend_cap);
            }
            apr_size_t len = pend_cap;
            if (apr_brigade_flatten(in, pend, &len) != APR_SUCCESS)
                goto leave;
            apr_brigade_cleanup(in);
            pend_off = 0;
            pend_len = len;
            progress = 1;
            if (up_eos && pend_len == 0)
                shutdown(fd_up, SHUT_WR);
        }
        while (pend_off < pend_len) {
            ssize_t n = send(fd_up, pend + pend_off, pend_len - pend_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                pend_off += (apr_size_t)n;
                progress = 1;
                if (pend_off == pend_len && up_eos)
                    shutdown(fd_up, SHUT_WR);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                break;
            up_eos = 1;   /* the core ended the push: the session is over */
            pend_off = pend_len;
            break;
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
        if (down_done && up_eos)
            break;
        if (progress)
            continue;
        struct pollfd pf[3];
        int np = 0;
        if (!up_eos && pend_off == pend_len)
            pf[np++] = (struct pollfd){ .fd = cfd, .events = POLLIN };
        if (pend_off < pend_len)
            pf[np++] = (struct pollfd){ .fd = fd_up, .events = POLLOUT };
        if (!down_done)
            pf[np++] = (struct pollfd){ .fd = fd_down, .events = POLLIN };
        if (np == 0)
            break;
        blocks_free(bk);   /* a tunnel that waits holds no buffers */
        rv = poll(pf, (nfds_t)np, idle_ms);
        if (rv == 0) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2041)
                          "duplex: nothing moved for %d s, ending", idle_ms / 1000);
            goto leave;
        }
        if (rv < 0 && errno != EINTR)
            goto leave;
    }
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, out);
leave:
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
        && parse_u64(apr_table_get(r->headers_in, "Relay-Ack"), &rq.offset) != 0)
        return fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *why = apr_table_get(r->headers_in, RH_HDR_REASON);
    rq.integrity = op == RH_IPC_CLOSE && why && !strcmp(why, RH_REASON_TOKEN_INTEGRITY);
    if (core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0)
        return core_unavailable(r);
    if (!rep.ok)
        return fail(r, rep.status, "%s", rep.text);
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
    common_headers(r);

    int where = split_uri(r, q.dc, &target, &op);
    if (where == 0) {
        if (r->method_number != M_GET)
            return method_not_allowed(r, "GET");
        ap_set_content_type(r, "text/plain; charset=utf-8");
        ap_rputs("mod_relay_https: relay endpoint\n", r);
        return OK;
    }
    if (where < 0 || !rh_valid_target_name(target))
        return fail(r, HTTP_NOT_FOUND, "no such relay endpoint");
    const char *ver = apr_table_get(r->headers_in, "Relay-Version");
    if (ver && strcmp(ver, "1") != 0)
        return fail(r, HTTP_BAD_REQUEST, "unsupported Relay-Version %s (this server speaks 1)",
                    ver);
    q.target_name = target;
    q.op = op;
    if (!strcmp(op, "open")) {
        /* Only an open consults the RelayTarget list: a session opened before a
         * reload that removed its target goes on to the address it was given. */
        q.target = rh_find_target(q.dc, target);
        if (!q.target)
            return fail(r, HTTP_NOT_FOUND, "unknown target '%s'", target);
        return do_open(&q);
    }
    if (!strcmp(op, "push"))
        return do_push(&q);
    if (!strcmp(op, "pull"))
        return do_pull(&q);
    if (!strcmp(op, "close"))
        return do_control(&q, RH_IPC_CLOSE);
    if (!strcmp(op, "duplex"))
        return do_duplex(&q);
    if (!strcmp(op, "ack"))
        return do_control(&q, RH_IPC_ACK);
    return fail(r, HTTP_NOT_FOUND, "no such relay endpoint '%s'", op);
}
