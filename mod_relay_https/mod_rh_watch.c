/* The watch endpoint (docs/PROTOCOL.md, watch): one long-poll for many idle
 * sessions of a client. The body (at most RH_WATCH_MAX lines "<token> <ack>")
 * is read whole and checked line by line here; its entries go to the cores
 * their tokens name (WATCH, rh_core_watch.h), and the first core that answers
 * answers the request: the ids of the sessions that are ready or gone. The
 * wait parks where the request may (RelayAsync); else it holds the request's
 * thread (one watch per forwarder: a few threads). */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <apr_hash.h>
#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_async.h"
#include "mod_rh_child.h"
#include "mod_rh_conn.h"
#include "mod_rh_corelink.h"
#include "mod_rh_daemon.h"
#include "mod_rh_req.h"
#include "rh_ipc_client.h"
#include "rh_shard.h"

#define ANSWER_LINE  (RH_SID_LEN + 1 + 4 + 1)      /* "<sid> data\n" */

/* The entries of one core: its lines, as the client sent them */
typedef struct watch_part {
    unsigned n;
    char *lines;
    apr_size_t len;
    int fd;
} watch_part;

typedef struct watch_req {
    rh_req *q;
    watch_part part[RH_SHARDS_MAX];
    struct pollfd pf[RH_SHARDS_MAX];   /* the sockets of the cores asked */
    unsigned npf;
    unsigned n;                   /* entries */
    const char *local;            /* sessions of a core an upgrade replaced: "data" */
    apr_size_t local_len;
    apr_size_t answer_cap;        /* the cores' answers, at most */
} watch_req;

static apr_status_t close_fd(void *data)
{
    int *fd = data;
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return APR_SUCCESS;
}

/* 413: the body is too long. On HTTP/2 the rest of it is read and dropped
 * after the answer (rh_h2_linger): a handler that returns with the body open
 * has its stream reset, and the client would see that, not the 413. */
static int too_large(request_rec *r)
{
    r->connection->keepalive = AP_CONN_CLOSE;
    rh_fail(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "a watch body has at most %d bytes (%d lines)",
            RH_WATCH_BODY_MAX, RH_WATCH_MAX);
    rh_h2_linger(r);
    return OK;
}

/* The whole body, at most RH_WATCH_BODY_MAX bytes: DECLINED with *body and
 * *len, else the request is answered (400, 413). Its buffer is as long as
 * Content-Length says, or grows by doubling (a chunked body): a watch of a
 * few sessions takes a few KiB of the request's pool, not the bound. */
static int read_body(request_rec *r, char **body, apr_size_t *len)
{
    int rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
    if (rv != OK)
        return rv;
    if (r->remaining > RH_WATCH_BODY_MAX)
        return too_large(r);
    apr_size_t cap = r->remaining > 0 ? (apr_size_t)r->remaining + 1 : 16384, got = 0;
    char *buf = apr_palloc(r->pool, cap + 1);
    if (ap_should_client_block(r))
        for (;;) {
            if (got == cap) {
                if (cap > RH_WATCH_BODY_MAX)
                    return too_large(r);
                apr_size_t more = cap * 2 > RH_WATCH_BODY_MAX ? RH_WATCH_BODY_MAX + 1 : cap * 2;
                char *nb = apr_palloc(r->pool, more + 1);
                memcpy(nb, buf, got);
                buf = nb;
                cap = more;
            }
            long n = ap_get_client_block(r, buf + got, cap - got);
            if (n < 0) {
                r->connection->keepalive = AP_CONN_CLOSE;
                return rh_fail(r, HTTP_BAD_REQUEST, "unreadable request body");
            }
            if (n == 0)
                break;
            got += (apr_size_t)n;
        }
    if (got > RH_WATCH_BODY_MAX)
        return too_large(r);
    buf[got] = '\0';
    *body = buf;
    *len = got;
    return DECLINED;
}

/* One line "<token> <ack>" (without its LF): the core its session lives in
 * (>= 0), or -1 when malformed. */
static int line_core(const char *line, apr_size_t len)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1];
    apr_uint64_t ack;
    if (len < RH_TOKEN_LEN + 2 || len > RH_WATCH_LINE_MAX - 1 || line[RH_TOKEN_LEN] != ' '
        || rh_parse_u64(line + RH_TOKEN_LEN + 1, len - RH_TOKEN_LEN - 1, &ack) != 0)
        return -1;
    memcpy(tok, line, RH_TOKEN_LEN);
    tok[RH_TOKEN_LEN] = '\0';
    if (rh_token_parse(tok, &slot, &gen, secret) != 0)
        return -1;
    memset(secret, 0, sizeof(secret));
    int k = rh_token_shard(tok);
    return k < 0 ? 0 : k;   /* naming no core: the first finds it unknown */
}

/* A session of a core an upgrade replaced (that core may not know WATCH):
 * named "data" at once, and the client's pull, an ordinary long-poll,
 * reaches it there. */
static int in_old_core(const char *line, unsigned k)
{
    const rh_registry *old = rh_daemon_old_registry(k), *cur = rh_daemon_registry(k);
    char tok[RH_TOKEN_LEN + 1];
    if (!old)
        return 0;
    memcpy(tok, line, RH_TOKEN_LEN);
    tok[RH_TOKEN_LEN] = '\0';
    return rh_registry_check(old, tok, NULL) == RH_REG_OK
        && (!cur || rh_registry_check(cur, tok, NULL) != RH_REG_OK);
}

/* Checks every line and sorts them by core: DECLINED, else answered (400). */
static int split_lines(watch_req *wr, const char *body, apr_size_t len)
{
    request_rec *r = wr->q->r;
    unsigned ncores = rh_daemon_cores(), k;
    apr_hash_t *seen = apr_hash_make(r->pool);
    const char *p = body, *end = body + len;
    /* sized by the lines there are (at most one past the bound: refused) */
    unsigned most = 1;
    for (const char *q = body; most <= RH_WATCH_MAX && (q = memchr(q, '\n', (apr_size_t)(end - q)));
         ++q)
        ++most;
    const char **lines = apr_pcalloc(r->pool, most * sizeof(*lines));
    unsigned char *core_of = apr_palloc(r->pool, most);
    char *local = apr_palloc(r->pool, (apr_size_t)most * ANSWER_LINE + 1);

    if (len == 0)
        return rh_fail(r, HTTP_BAD_REQUEST, "an empty watch: one line \"<token> <ack>\" "
                       "per session");
    while (p < end) {
        const char *nl = memchr(p, '\n', (apr_size_t)(end - p));
        if (wr->n == RH_WATCH_MAX)
            return rh_fail(r, HTTP_BAD_REQUEST, "more than %d sessions in one watch",
                           RH_WATCH_MAX);
        int c = nl ? line_core(p, (apr_size_t)(nl - p)) : -1;
        if (c < 0)
            return rh_fail(r, HTTP_BAD_REQUEST, "malformed watch line %u (\"<token> <ack>\" "
                           "and a line feed)", wr->n + 1);
        if (apr_hash_get(seen, p, RH_SID_LEN))
            return rh_fail(r, HTTP_BAD_REQUEST, "watch line %u: session %.*s listed twice",
                           wr->n + 1, RH_SID_LEN, p);
        apr_hash_set(seen, p, RH_SID_LEN, p);
        /* a token naming no core here: the first core finds it unknown */
        k = (unsigned)c < ncores ? (unsigned)c : 0;
        if (in_old_core(p, k)) {
            wr->local_len += (apr_size_t)apr_snprintf(local + wr->local_len, ANSWER_LINE + 1,
                                                      "%.*s " RH_WATCH_DATA "\n", RH_SID_LEN, p);
        } else {
            lines[wr->n] = p;
            core_of[wr->n] = (unsigned char)k;
            ++wr->part[k].n;
        }
        ++wr->n;
        p = nl + 1;
    }
    wr->local = local;
    for (k = 0; k < ncores; ++k) {
        watch_part *pt = &wr->part[k];
        pt->fd = -1;
        if (pt->n)
            pt->lines = apr_palloc(r->pool, (apr_size_t)pt->n * RH_WATCH_LINE_MAX);
    }
    for (unsigned i = 0; i < wr->n; ++i) {
        if (!lines[i])
            continue;
        watch_part *pt = &wr->part[core_of[i]];
        apr_size_t ll = (apr_size_t)((const char *)memchr(lines[i], '\n', RH_WATCH_LINE_MAX)
                                     - lines[i]) + 1;
        memcpy(pt->lines + pt->len, lines[i], ll);
        pt->len += ll;
    }
    return DECLINED;
}

/* Asks core k: WATCH and its lines. 0, or -errno. */
static int ask_core(watch_req *wr, unsigned k)
{
    rh_req *q = wr->q;
    watch_part *pt = &wr->part[k];
    rh_ipc_req rq;
    char line[RH_IPC_LINE_MAX];
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_WATCH;
    apr_cpystrn(rq.target, q->target_name, sizeof(rq.target));
    rq.count = pt->n;
    rq.poll_s = (unsigned)rh_dir_poll(q->dc);
    rq.owner = rh_user_hash(q->r);
    int n = rh_ipc_format_req(line, sizeof(line), &rq);
    const char *path = rh_daemon_socket(k);
    if (n < 0 || !path)
        return -EINVAL;
    int fd = rh_ipc_connect(path, 5000);
    if (fd < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, -fd, q->r, RHLOG(2300)
                      "watch: cannot reach the relay core at %s", path);
        return fd;
    }
    pt->fd = fd;
    apr_pool_cleanup_register(q->r->pool, &pt->fd, close_fd, apr_pool_cleanup_null);
    int rv = rh_ipc_write_all(fd, line, (size_t)n, 5000);
    if (rv == 0)
        rv = rh_ipc_write_all(fd, pt->lines, pt->len, 5000);
    return rv;
}

/* The 200 answer: the body the core sent (and the sessions named here). */
static int answer(request_rec *r, const char *body, apr_size_t len)
{
    r->status = HTTP_OK;
    ap_set_content_type(r, "text/plain");
    ap_set_content_length(r, (apr_off_t)len);
    if (len && !r->header_only)
        ap_rwrite(body, (int)len, r);
    return OK;
}

/* The answer of a core whose socket became readable, appended to the body
 * (*len, at most answer_cap): 0; 1 when the request is answered (the core's
 * refusal, or the client went away); -1 for a core that failed (503). */
static int core_answer(watch_req *wr, int fd, char *body, apr_size_t *len)
{
    rh_req *q = wr->q;
    char line[RH_IPC_LINE_MAX];
    rh_ipc_reply rep;
    int rv = rh_watch_line(&q->watch, fd, line, sizeof(line), 1000);
    if (rv <= 0 || rh_ipc_parse_reply(line, &rep) != 0)
        return rv == RH_WAIT_GONE ? 1 : -1;
    if (!rep.ok) {
        rh_fail_reply(q->r, &rep);
        return 1;
    }
    if (rep.num > wr->answer_cap - *len)
        return -1;
    apr_size_t got = 0;
    while (got < rep.num) {
        ssize_t n = rh_ipc_read(fd, body + *len + got, (size_t)rep.num - got, 5000);
        if (n <= 0)
            return -1;
        got += (apr_size_t)n;
    }
    *len += got;
    return 0;
}

#define ANSWER_GRACE_MS 20   /* other cores' answers joined to the first's */

/* rh_watch_poll for up to RH_SHARDS_MAX sockets (it takes 7): the cores'
 * sockets (fd -1: skipped) and the client's, in slices that look at the
 * client and the first core's beat. An RH_WAIT_* value. */
static int poll_cores(rh_watch *w, struct pollfd *pf, unsigned n, int timeout_ms)
{
    struct pollfd all[RH_SHARDS_MAX + 1];
    long deadline = rh_now_ms() + timeout_ms;
    for (;;) {
        memcpy(all, pf, n * sizeof(*pf));
        all[n] = (struct pollfd){ .fd = w->sock, .events = POLLRDHUP };
        long left = deadline - rh_now_ms();
        left = left < 0 ? 0 : left > RH_WAIT_SLICE_MS ? RH_WAIT_SLICE_MS : left;
        int rv = poll(all, n + 1, (int)left);
        if ((rv < 0 && errno != EINTR) || w->c->aborted
            || (all[n].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            return RH_WAIT_GONE;
        int ready = 0;
        for (unsigned i = 0; i < n; ++i)
            ready |= (pf[i].revents = all[i].revents) != 0;
        if (ready)
            return RH_WAIT_READY;
        if (rh_core_stuck(w->core))
            return RH_WAIT_STUCK;
        if (rh_now_ms() >= deadline)
            return RH_WAIT_TIMEOUT;
    }
}

/* Asks every core that has entries: 0, or an answered request (503). */
static int ask_cores(watch_req *wr)
{
    rh_req *q = wr->q;
    for (unsigned k = 0; k < rh_daemon_cores(); ++k) {
        if (!wr->part[k].n)
            continue;
        if (ask_core(wr, k) != 0)
            return rh_core_unavailable(q->r);
        if (!wr->npf)
            q->watch.core = rh_daemon_registry(k);
        wr->pf[wr->npf++] = (struct pollfd){ .fd = wr->part[k].fd, .events = POLLIN };
    }
    return 0;
}

/* The wait for the cores ended (rv, an RH_WAIT_*; READY with pf's revents):
 * the first core's answer, with what the others answer within
 * ANSWER_GRACE_MS (sessions ready or gone at once in several cores come in
 * one answer), answers the request; the other connections close with it,
 * which ends their cores' watches. */
static int collect(watch_req *wr, int rv)
{
    rh_req *q = wr->q;
    request_rec *r = q->r;
    /* the cores name each session once at most */
    wr->answer_cap = (apr_size_t)wr->n * ANSWER_LINE;
    char *body = apr_palloc(r->pool, wr->answer_cap + 1);
    apr_size_t len = 0;
    unsigned answered = 0;
    while (rv == RH_WAIT_READY) {
        for (unsigned i = 0; i < wr->npf; ++i) {
            if (!wr->pf[i].revents || wr->pf[i].fd < 0)
                continue;
            int st = core_answer(wr, wr->pf[i].fd, body, &len);
            if (st != 0)
                return st < 0 ? rh_core_unavailable(r) : OK;
            wr->pf[i].fd = -1;   /* poll skips it */
            ++answered;
        }
        if (answered == wr->npf)
            break;
        rv = poll_cores(&q->watch, wr->pf, wr->npf, ANSWER_GRACE_MS);
    }
    if (rv == RH_WAIT_GONE)
        return OK;   /* the client went away */
    if (!answered)
        return rh_core_unavailable(r);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2301)
                  "watch of %u sessions answered by %u of %u cores (%" APR_SIZE_T_FMT
                  " bytes)", wr->n, answered, wr->npf, len);
    return answer(r, body, len);
}

/* A parked watch's wait ended (RelayAsync): a core answered (which: a look
 * at their sockets without waiting), or not. */
static int watch_step(rh_park *p, void *baton, int why)
{
    watch_req *wr = baton;
    (void)p;
    if (why == RH_WAIT_READY)
        why = poll_cores(&wr->q->watch, wr->pf, wr->npf, 100);
    return collect(wr, why);
}

/* What a parked watch waits on: its one core's socket, or an epoll set of
 * the cores' sockets (readable when one of them is: the reactor watches one
 * descriptor per request), closed with the request. -1: none could be made. */
static int wait_fd(watch_req *wr)
{
    if (wr->npf == 1)
        return wr->pf[0].fd;
    int *efd = apr_palloc(wr->q->r->pool, sizeof(*efd));
    *efd = epoll_create1(EPOLL_CLOEXEC);
    if (*efd < 0)
        return -1;
    apr_pool_cleanup_register(wr->q->r->pool, efd, close_fd, apr_pool_cleanup_null);
    for (unsigned i = 0; i < wr->npf; ++i) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        if (epoll_ctl(*efd, EPOLL_CTL_ADD, wr->pf[i].fd, &ev) != 0)
            return -1;
    }
    return *efd;
}

/* The wait on the cores' answers: parked where the request may (RelayAsync,
 * the event MPM, HTTP/1.1: no thread held while it waits), else on its
 * thread while the child has threads to spare (rh_child_enter). */
static int wait_cores(watch_req *wr)
{
    rh_req *q = wr->q;
    request_rec *r = q->r;
    int timeout_ms = (rh_dir_poll(q->dc) + 10) * 1000, rv;
    rh_park *p = rh_async_park(r);
    int fd = p ? wait_fd(wr) : -1;
    if (fd >= 0) {
        /* an answer at once (a session was ready) is taken without parking */
        rv = rh_async_hot(&q->watch, fd, POLLIN);
        if (rv != RH_WAIT_TIMEOUT)
            return watch_step(p, wr, rv);
        rh_park_watch(p, fd, POLLIN, 0, timeout_ms);
        return rh_async_suspend(p, r, q->watch.core, watch_step, wr);
    }
    if (!rh_child_enter(r, q->sc))
        return OK;   /* answered 503 */
    rv = collect(wr, poll_cores(&q->watch, wr->pf, wr->npf, timeout_ms));
    rh_child_leave();
    return rv;
}

int rh_do_watch(rh_req *q)
{
    request_rec *r = q->r;
    char *body = NULL;
    apr_size_t len = 0;
    int rv;

    if (r->method_number != M_POST)
        return rh_method_not_allowed(r, "POST");
    if ((rv = read_body(r, &body, &len)) != DECLINED)
        return rv;
    /* it may outlive the handler's stack (parked): in the request's pool */
    watch_req *wr = apr_pcalloc(r->pool, sizeof(*wr));
    wr->q = apr_pmemdup(r->pool, q, sizeof(*q));
    if ((rv = split_lines(wr, body, len)) != DECLINED)
        return rv;
    if (wr->local_len)
        return answer(r, wr->local, wr->local_len);
    if ((rv = ask_cores(wr)) != 0)
        return rv;
    return wait_cores(wr);
}
