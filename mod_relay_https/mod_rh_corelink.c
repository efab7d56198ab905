/* The handler's side of the core link (see mod_rh_corelink.h), logged to
 * httpd's error log. */
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/socket.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_daemon.h"
#include "mod_rh_corelink.h"
#include "mod_rh_async.h"
#include "rh_shard.h"

/* Kept connections to the cores: a batch pull's (PULL ... keep) once the
 * handler has read the whole answer, for the child's next batch pull to the
 * same core: no connect, accept and close per long-poll. A connection the
 * core closed since (a restart) fails its first write and a new one is
 * made; a request that did not read a whole answer closes its connection. */
#define KEPT_MAX 4      /* per core, per child: answers that end at once are few */

typedef struct rh_kept {
    int fd;
    unsigned shard;
    const char *path;       /* the core's socket: a kept connection is its */
    int reuse;              /* the answer was read whole: the connection is clean */
} rh_kept;

static struct {
    pthread_mutex_t mu;
    int n[RH_SHARDS_MAX];
    int fd[RH_SHARDS_MAX][KEPT_MAX];
    const char *path[RH_SHARDS_MAX];
} g_kept = { PTHREAD_MUTEX_INITIALIZER, { 0 }, { { 0 } }, { NULL } };

/* A kept connection to core k at path, or -1. */
static int kept_take(unsigned k, const char *path)
{
    int fd = -1;
    pthread_mutex_lock(&g_kept.mu);
    if (g_kept.n[k] > 0 && g_kept.path[k] == path)
        fd = g_kept.fd[k][--g_kept.n[k]];
    pthread_mutex_unlock(&g_kept.mu);
    return fd;
}

/* The request's pool goes: its connection to the core is kept or closed. */
static apr_status_t link_done(void *data)
{
    rh_kept *kp = data;
    int fd = kp->fd;
    if (kp->reuse && kp->shard < RH_SHARDS_MAX) {
        pthread_mutex_lock(&g_kept.mu);
        if (g_kept.path[kp->shard] != kp->path) {
            while (g_kept.n[kp->shard] > 0)
                close(g_kept.fd[kp->shard][--g_kept.n[kp->shard]]);
            g_kept.path[kp->shard] = kp->path;
        }
        if (g_kept.n[kp->shard] < KEPT_MAX) {
            g_kept.fd[kp->shard][g_kept.n[kp->shard]++] = fd;
            fd = -1;
        }
        pthread_mutex_unlock(&g_kept.mu);
    }
    if (fd >= 0)
        close(fd);
    return APR_SUCCESS;
}

void rh_core_keep(rh_req *q)
{
    if (q->kept && q->kept->path)   /* asked with keep */
        q->kept->reuse = 1;
}

/* The line on a kept connection: its descriptor, or -1 when there is none
 * (or the core closed it: then the next, or none). */
static int kept_send(unsigned k, const char *path, const char *line, size_t len)
{
    for (;;) {
        int fd = kept_take(k, path);
        if (fd < 0)
            return -1;
        if (send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len)
            return fd;
        close(fd);
    }
}

/* Per-client limits are counted in one core only: while any is set, a
 * client's sessions all live in the core its key names. */
static int per_client_limits(void)
{
    rh_limits lim;
    const rh_registry *reg = rh_daemon_registry(0);
    if (!reg)
        return 0;
    rh_registry_get_limits(reg, &lim);
    return lim.sessions_per_client || lim.requests_per_client || lim.open_rate;
}

/* The core that takes a request naming no session (open, listen, check,
 * resolve): a rendezvous's two sides meet in the core of its service's
 * name; a client's sessions go to the core of its key while per-client
 * limits are set, else to the core with the most room. */
static void choose_core(rh_req *q, const rh_ipc_req *rq)
{
    static unsigned turn;
    unsigned n = rh_daemon_cores(), k = 0;
    if (n > 1 && (rq->service || rq->op == RH_IPC_LISTEN)) {
        k = rh_shard_of_key(rq->target, n);
    } else if (n > 1 && per_client_limits()) {
        k = rh_shard_of_key(rq->client[0] ? rq->client : rh_client_key(q->r), n);
    } else if (n > 1) {
        uint32_t active[RH_SHARDS_MAX], slots[RH_SHARDS_MAX];
        for (unsigned i = 0; i < n; ++i) {
            const rh_registry *reg = rh_daemon_registry(i);
            active[i] = __atomic_load_n(&reg->active, __ATOMIC_RELAXED);
            slots[i] = reg->nslots;
        }
        /* ties from a turn of this child's own: children do not herd */
        k = rh_shard_least(active, slots, n, (unsigned)getpid() + turn++);
    }
    q->shard = (int)k;
    q->watch.core = rh_daemon_registry(k);
}

/* Connects to the core and sends the request line: 0, or -errno. */
static int core_send(rh_req *q, const rh_ipc_req *rq)
{
    char line[RH_IPC_LINE_MAX];
    int n = rh_ipc_format_req(line, sizeof(line), rq);
    if (n < 0)
        return -EINVAL;
    q->fd = -1;
    if (q->shard < 0)
        choose_core(q, rq);
    unsigned k = (unsigned)q->shard;
    const char *path = q->old_core ? rh_daemon_old_socket(k) : rh_daemon_socket(k);
    int kept = rq->keep && path ? kept_send(k, path, line, (size_t)n) : -1;
    int fd = kept >= 0 ? kept : path ? rh_ipc_connect(path, 5000) : -ENOENT;
    if (fd < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, -fd, q->r, RHLOG(2002)
                      "cannot reach the relay core at %s", path ? path : "(none)");
        return fd;
    }
    q->fd = fd;
    q->kept = apr_pcalloc(q->r->pool, sizeof(*q->kept));
    q->kept->fd = fd;
    q->kept->shard = k;
    q->kept->path = rq->keep ? path : NULL;
    apr_pool_cleanup_register(q->r->pool, q->kept, link_done, apr_pool_cleanup_null);
    if (kept >= 0)
        return 0;
    const char *out = line;
    apr_size_t len = (size_t)n;
    if (q->trail_len) {
        /* one write: the core reads the line and what follows it at once */
        char *both = apr_palloc(q->r->pool, len + q->trail_len);
        memcpy(both, line, len);
        memcpy(both + len, q->trail, q->trail_len);
        out = both;
        len += q->trail_len;
    }
    int rv = rh_ipc_write_all(fd, out, len, 5000);
    if (rv >= 0 && q->trail_len)
        shutdown(fd, SHUT_WR);
    if (rv < 0)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, -rv, q->r, RHLOG(2003)
                      "no answer from the relay core");
    return rv < 0 ? rv : 0;
}

/* A wait for the answer that ended without one (RH_WAIT_*): -errno, logged. */
static int no_answer(rh_req *q, int rv)
{
    if (rv == RH_WAIT_GONE) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, q->r, RHLOG(2005)
                      "client went away while waiting for the relay core");
        return -ECONNABORTED;
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, RHLOG(2003)
                  "no answer from the relay core (%s)",
                  rv == RH_WAIT_STUCK ? "stopped or stuck" : "timeout");
    return -ETIMEDOUT;
}

/* Reads and parses the core's answer, waiting timeout_ms at most. */
static int core_reply(rh_req *q, rh_ipc_reply *rep, int timeout_ms)
{
    char line[RH_IPC_LINE_MAX];
    /* the answer may take long (a push's turn, a long-poll): the wait
     * watches the client and the core's heartbeat meanwhile */
    int rv = rh_watch_line(&q->watch, q->fd, line, sizeof(line), timeout_ms);
    if (rv <= 0)
        return no_answer(q, rv);
    if (rh_ipc_parse_reply(line, rep) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, RHLOG(2004)
                      "bad answer from the relay core: %s", line);
        return -EPROTO;
    }
    return 0;
}

int rh_core_ask(rh_req *q, const rh_ipc_req *rq, rh_ipc_reply *rep, int timeout_ms)
{
    int rv = core_send(q, rq);
    return rv != 0 ? rv : core_reply(q, rep, timeout_ms);
}

/* The parked ask's answer came, or its wait ended without one. */
static int answer_step(rh_park *p, void *baton, int why)
{
    rh_req *q = baton;
    rh_ipc_reply rep;
    int rv = why == RH_WAIT_READY ? core_reply(q, &rep, 1000) : no_answer(q, why);
    (void)p;
    return q->then(q, rv, &rep);
}

int rh_core_ask_then(rh_req *q, const rh_ipc_req *rq, int timeout_ms, rh_answer_fn *then)
{
    rh_ipc_reply rep;
    rh_park *p = rh_async_park(q->r);
    if (!p) {
        int rv = rh_core_ask(q, rq, &rep, timeout_ms);
        return then(q, rv, &rep);
    }
    int rv = core_send(q, rq);
    if (rv != 0)
        return then(q, rv, &rep);
    /* most answers come at once: those are taken without parking */
    rv = q->cold ? RH_WAIT_TIMEOUT : rh_async_hot(&q->watch, q->fd, POLLIN);
    if (rv != RH_WAIT_TIMEOUT)
        return then(q, rv == RH_WAIT_READY ? core_reply(q, &rep, 1000) : no_answer(q, rv), &rep);
    /* q lives on the handler's stack: the parked request keeps a copy */
    rh_req *qq = apr_pmemdup(q->r->pool, q, sizeof(*q));
    qq->then = then;
    rh_park_watch(p, qq->fd, POLLIN, 0, timeout_ms);
    return rh_async_suspend(p, q->r, qq->watch.core, answer_step, qq);
}

int rh_core_unavailable(request_rec *r)
{
    return rh_fail(r, HTTP_SERVICE_UNAVAILABLE, "relay core unavailable, try again");
}

/* A refusal of the core: its status and message, its reason token (if any)
 * in Relay-Reason and the session's accepted offset (if it said one) in
 * Relay-Offset, which is what the client goes by. */
int rh_fail_reply(request_rec *r, const rh_ipc_reply *rep)
{
    if (rep->reason[0])
        apr_table_setn(r->headers_out, RH_HDR_REASON, apr_pstrdup(r->pool, rep->reason));
    if (rep->has_num)
        apr_table_setn(r->headers_out, RH_HDR_OFFSET,
                       apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)rep->num));
    return rh_fail(r, rep->status, "%s", rep->text);
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

apr_uint64_t rh_user_hash(const request_rec *r)
{
    return r->user ? hash64("user:", r->user) : 0;
}

const char *rh_client_key(request_rec *r)
{
    apr_uint64_t h = r->user ? rh_user_hash(r)
                             : hash64("addr:", r->useragent_ip ? r->useragent_ip : "-");
    return apr_psprintf(r->pool, "%016" APR_UINT64_T_HEX_FMT, h);
}

/* The token in Relay-Session, checked against the shared registry. */
/* A token the registry does not know: 410, with the reason (Relay-Reason:
 * reset) when the core says its session was reset in the last minute. */
static int session_gone(rh_req *q, const char *token)
{
    rh_ipc_req rq;
    rh_ipc_reply rep;
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_GONE;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    if (rh_core_ask(q, &rq, &rep, GONE_REPLY_MS) == 0 && !rep.ok && rep.status == HTTP_GONE)
        return rh_fail_reply(q->r, &rep);
    return rh_fail(q->r, HTTP_GONE, "unknown or expired session");
}

int rh_check_session(rh_req *q, const char **token)
{
    request_rec *r = q->r;
    *token = apr_table_get(r->headers_in, RH_HDR_SESSION);
    if (!*token)
        return rh_fail(r, HTTP_BAD_REQUEST, "missing Relay-Session header");
    /* the token names its core (shard); a malformed one is refused by the
     * first core's check */
    int k = rh_token_shard(*token);
    const rh_registry *reg = rh_daemon_registry(k < 0 ? 0 : (unsigned)k);
    const rh_registry *old = k < 0 ? NULL : rh_daemon_old_registry((unsigned)k);
    int rv = reg ? rh_registry_check(reg, *token, &q->view) : RH_REG_UNKNOWN;
    q->shard = k < 0 ? 0 : k;
    q->watch.core = reg;
    if (rv == RH_REG_UNKNOWN && old && rh_registry_check(old, *token, &q->view) == RH_REG_OK) {
        rv = RH_REG_OK;
        q->old_core = 1;   /* opened before an upgrade: its core still has it */
        q->watch.core = old;
    }
    if (rv == RH_REG_MALFORMED)
        return rh_fail(r, HTTP_BAD_REQUEST, "malformed Relay-Session token");
    if (rv != RH_REG_OK)
        return session_gone(q, *token);
    if (strcmp(q->view.target, q->target_name) != 0)
        return rh_fail(r, HTTP_GONE, "unknown or expired session");
    /* where the location authenticates, a session is its opener's: a token
     * alone, or with another user's credentials, is not enough */
    if (q->view.owner && q->view.owner != rh_user_hash(r))
        return rh_fail(r, HTTP_FORBIDDEN, "this session belongs to another user");
    char sid[RH_SID_LEN + 1];
    rh_sid_format(sid, q->view.slot, q->view.gen);
    apr_table_setn(r->notes, "relay-session", apr_pstrdup(r->pool, sid));
    return DECLINED;   /* = go on */
}
