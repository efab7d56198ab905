/* Parked requests and the connections that carry them (see mod_rh_async.h).
 * The event MPM of httpd 2.4 lets a handler return SUSPENDED but has no way
 * to take the connection back (ap_mpm_resume_suspended is trunk's), so from
 * the first parked request on the connection is ours: its requests end here
 * (ap_finalize_request_protocol, ap_process_request_after_handler, as
 * mod_dialup does), its next requests are read and run here on a worker as
 * event would (ap_run_process_connection), and it is closed here. */
#include <poll.h>
#include <string.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <apr_allocator.h>
#include <apr_optional.h>
#include <apr_portable.h>
#include <ap_mpm.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_ssl.h>
#include <mpm_common.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "mod_rh_wait.h"
#include "mod_rh_async.h"
#include "mod_rh_keepfree.h"

#define LINGER_MS 2000          /* as event's short lingering close */
/* event's thread still writes to the connection's state right after the
 * suspend_connection hook, where the park is armed: its pool may not go
 * before this much later */
#define SUSPEND_GRACE_MS 1000

/* blocks given back at most per park (MaxMemFree unset keeps any number) */
#define GIVE_BACK_MAX 64

static int g_async_mpm;         /* the MPM runs requests asynchronously (event) */
static long g_page = 4096;      /* the system's page size */
static module *g_ssl_module;    /* mod_ssl, when loaded */
static APR_OPTIONAL_FN_TYPE(ssl_is_https) *g_is_https;

/* OpenSSL's read and write buffers (16.7 KiB and more each) are freed while
 * the connection is parked, when they hold nothing: mod_ssl asks OpenSSL to
 * do that after every read and write (SSL_MODE_RELEASE_BUFFERS) only when
 * MaxMemFree is set. The connection's SSL is the first member of mod_ssl's
 * connection record (SSLConnRec, since httpd 2.0; mod_ssl exports no getter,
 * and its pre_handshake hook would cost every connection a record of ours),
 * asked for only where mod_ssl says the connection is TLS. 1 if freed. */
static int tls_release(conn_rec *c)
{
    if (!g_ssl_module || !g_is_https || !g_is_https(c))
        return 0;
    SSL **ssl = ap_get_module_config(c->conn_config, g_ssl_module);
    return ssl && *ssl && SSL_free_buffers(*ssl) == 1;
}

/* The pages of a free block but its first (the node's header): given back to
 * the system, the block kept (MADV_DONTNEED: they come back zeroed when
 * touched). */
static void scrub_block(apr_memnode_t *n)
{
    uintptr_t pg = (uintptr_t)g_page;
    uintptr_t from = ((uintptr_t)n + APR_MEMNODE_T_SIZE + pg - 1) & ~(pg - 1);
    uintptr_t to = (uintptr_t)n->endp & ~(pg - 1);
    if (to > from)
        madvise((void *)from, to - from, MADV_DONTNEED);
}

/* Before the connection's next request: its free blocks stay for it (no
 * munmap now and mmap in the request, three of each per batch long-poll),
 * but the pages its last request touched in them go back, so that a
 * long-poll that follows another parks on untouched memory. Only an
 * allocator the connection owns. */
static void scrub(conn_rec *c)
{
    apr_allocator_t *a = apr_pool_allocator_get(c->pool);
    apr_memnode_t *got[GIVE_BACK_MAX];
    int i, n = 0;
    if (!a || apr_allocator_owner_get(a) != c->pool)
        return;
    while (n < GIVE_BACK_MAX && rh_keepfree_has_free(a) && (got[n] = apr_allocator_alloc(a, 1)))
        scrub_block(got[n++]);
    for (i = n; i-- > 0; )
        apr_allocator_free(a, got[i]);
}

/* A parked connection keeps no free memory (nor TLS buffers, above). event
 * gives each connection an allocator of its own, which keeps the blocks
 * earlier requests freed (up to MaxMemFree, without limit when it is unset)
 * for the next request; a connection parked for minutes would hold them for
 * nothing (6 KiB on average per parked pull, a whole request pool after a
 * long-poll's answer). With the limit at one page each block taken from the
 * free lists and freed again goes back to the system; then the limit is
 * event's again. Only on the thread that runs the connection, and only for
 * an allocator the connection owns. */
static void give_back(conn_rec *c)
{
    apr_allocator_t *a = apr_pool_allocator_get(c->pool);
    int i = 0, tls = tls_release(c);
    if (a && apr_allocator_owner_get(a) == c->pool && rh_keepfree_has_free(a))
        i = rh_keepfree_drain(a, GIVE_BACK_MAX);
    if (i || tls)
        ap_log_cerror(APLOG_MARK, APLOG_TRACE2, 0, c, RHLOG(2082)
                      "park: %d free blocks of the connection given back%s", i,
                      tls ? ", TLS buffers freed" : "");
}

int rh_async_may_park(request_rec *r, const rh_srv_conf *sc)
{
    conn_rec *c = r->connection;
    /* what http_core asks before it runs a request the async way; an HTTP/2
     * stream (c->master) ends broken if its handler suspends */
    return g_async_mpm && rh_srv_async(sc) && rh_reactor_running() && c->cs && !c->master
        && !c->clogging_input_filters && !r->main && !r->prev && !rh_reactor_draining();
}

rh_park *rh_async_park(request_rec *r)
{
    conn_rec *c = r->connection;
    rh_park *p = ap_get_module_config(c->conn_config, &relay_https_module);
    const rh_srv_conf *sc = ap_get_module_config(r->server->module_config,
                                                 &relay_https_module);
    apr_socket_t *sock;
    apr_os_sock_t fd;

    if (p)
        return p;
    if (!rh_async_may_park(r, sc))
        return NULL;
    if (!(sock = ap_get_conn_socket(c)) || apr_os_sock_get(&fd, sock) != APR_SUCCESS)
        return NULL;
    p = apr_pcalloc(c->pool, sizeof(*p));
    p->c = c;
    p->csock = (int)fd;
    p->fd = -1;
    p->timer.idx = (size_t)-1;
    p->bb = apr_brigade_create(c->pool, c->bucket_alloc);
    ap_set_module_config(c->conn_config, &relay_https_module, p);
    return p;
}

void rh_park_watch(rh_park *p, int fd, short events, int client_in, long timeout_ms)
{
    p->fd = fd;
    p->fd_events = (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0);
    p->client_in = client_in;
    p->timeout_ms = timeout_ms;
    p->quick = NULL;
}

void rh_park_quick(rh_park *p, rh_quick_fn *quick)
{
    p->quick = quick;
}

int rh_async_hot(struct rh_watch *w, int fd, short events)
{
    struct pollfd pf = { .fd = fd, .events = events, .revents = 0 };
    return rh_watch_poll(w, &pf, 1, RH_ASYNC_HOT_MS);
}

int rh_async_suspend(rh_park *p, request_rec *r, const struct rh_registry *core,
                     rh_step_fn *fn, void *baton)
{
    p->core = core;
    if (!p->held)
        rh_reactor_hold();      /* the first time: the connection is ours now */
    p->held = 1;
    p->r = r;
    p->fn = fn;
    p->baton = baton;
    p->state = RH_PARK_REQUEST;
    p->pending = 1;
    give_back(r->connection);
    return SUSPENDED;
}

/* The MPM let go of the connection (event's process_socket, suspended):
 * only now may another thread run it. */
static void on_suspend(conn_rec *c, request_rec *r)
{
    rh_park *p = ap_get_module_config(c->conn_config, &relay_https_module);
    (void)r;
    if (!p || !p->pending || !c->cs || c->cs->state != CONN_STATE_SUSPENDED)
        return;
    p->pending = 0;
    p->t_safe = rh_now_ms() + SUSPEND_GRACE_MS;
    c->sbh = NULL;              /* event clears it too: no scoreboard slot of ours */
    rh_reactor_arm(p);
}

/* The park and its connection go to their next states together, with no
 * request of theirs any more; returns the connection. */
static conn_rec *park_move(rh_park *p, int park_state, conn_state_e conn_state)
{
    p->state = park_state;
    p->r = NULL;
    p->c->cs->state = conn_state;
    return p->c;
}

/* Closing: the response's end goes out, our FIN, then the reactor reads what
 * the client still sends for a moment before the pool goes. */
static void linger(rh_park *p)
{
    conn_rec *c = park_move(p, RH_PARK_LINGER, CONN_STATE_LINGER);
    rh_park_watch(p, -1, 0, 1, LINGER_MS);
    p->timer.deadline = rh_now_ms() + LINGER_MS;
    /* closed already (the client is gone): the pool goes at the deadline, in
     * the reactor, never before p->t_safe */
    if (ap_start_lingering_close(c)) {
        p->no_fd = 1;
        p->timer.deadline = p->t_safe > rh_now_ms() ? p->t_safe : rh_now_ms();
    }
    rh_reactor_arm(p);
}

/* The connection's next request, run as event would run it. 1: it ended and
 * the connection may go on, 0: it is parked, -1: the connection closes. */
static int next_request(rh_park *p)
{
    conn_rec *c = park_move(p, RH_PARK_IDLE, CONN_STATE_PROCESSING);
    ap_run_process_connection(c);
    if (c->cs->state == CONN_STATE_SUSPENDED && p->pending) {
        p->pending = 0;
        rh_reactor_arm(p);
        return 0;
    }
    return c->cs->state == CONN_STATE_WRITE_COMPLETION ? 1 : -1;
}

static apr_status_t flush(rh_park *p)
{
    APR_BRIGADE_INSERT_TAIL(p->bb, apr_bucket_flush_create(p->c->bucket_alloc));
    apr_status_t rv = ap_pass_brigade(p->c->output_filters, p->bb);
    apr_brigade_cleanup(p->bb);
    return rv;
}

/* A busy connection's next request comes at once: it is run without parking. */
static int next_soon(rh_park *p)
{
    rh_watch w;
    rh_watch_init(&w, p->c);
    return rh_async_hot(&w, p->csock, POLLIN) == RH_WAIT_READY;
}

/* After a request: keep-alive (the next request when it comes, within
 * KeepAliveTimeout), or close. */
static void serve(rh_park *p)
{
    conn_rec *c = p->c;
    for (;;) {
        if (c->aborted || c->keepalive != AP_CONN_KEEPALIVE || rh_reactor_draining()
            || c->cs->state != CONN_STATE_WRITE_COMPLETION || flush(p) != APR_SUCCESS
            || c->aborted)
            break;
        /* the ended request's pool went to the free lists: scrubbed, the
         * next request (a long-poll that parks) starts on untouched pages
         * instead of the ones its predecessor's answer and log line touched
         * (the blocks are mmaped: a reused one keeps every page it had) */
        scrub(c);
        if (!c->data_in_input_filters && !next_soon(p)) {
            give_back(c);       /* no request soon: nothing kept for it */
            c->cs->state = CONN_STATE_KEEPALIVE;
            p->state = RH_PARK_KEEPALIVE;
            rh_park_watch(p, -1, 0, 1, (long)apr_time_as_msec(c->base_server->keep_alive_timeout));
            rh_reactor_arm(p);
            return;
        }
        int rv = next_request(p);
        if (rv == 0)
            return;
        if (rv < 0)
            break;
    }
    linger(p);
}

/* The request's step; its end as ap_process_async_request would end it. */
static void run_step(rh_park *p)
{
    request_rec *r = p->r;
    apr_thread_mutex_t *mtx = r->invoke_mtx;

    if (mtx)
        apr_thread_mutex_lock(mtx);
    int rv = p->fn(p, p->baton, p->why);
    if (mtx)
        apr_thread_mutex_unlock(mtx);
    if (rv == SUSPENDED) {
        p->pending = 0;
        give_back(p->c);
        rh_reactor_arm(p);
        return;
    }
    if (rv == DONE)
        rv = OK;
    if (rv == OK)
        ap_finalize_request_protocol(r);
    else {
        r->status = HTTP_OK;
        ap_die(rv, r);
    }
    p->r = NULL;
    p->state = RH_PARK_IDLE;
    ap_process_request_after_handler(r);    /* logs it and frees r->pool */
    serve(p);
}

int rh_async_quick(rh_park *p)
{
    if (p->state != RH_PARK_REQUEST || p->why != RH_WAIT_READY)
        return 0;
    apr_thread_mutex_t *mtx = p->r->invoke_mtx;
    if (mtx)
        apr_thread_mutex_lock(mtx);
    int done = p->quick(p, p->baton);
    if (mtx)
        apr_thread_mutex_unlock(mtx);
    if (!done)
        return 0;
    give_back(p->c);
    rh_reactor_arm(p);
    return 1;
}

void rh_async_run(void *baton)
{
    rh_park *p = baton;
    if (p->state == RH_PARK_REQUEST) {
        run_step(p);
        return;
    }
    /* keep-alive: a request came, or the time is up */
    if (p->why != RH_WAIT_READY) {
        linger(p);
        return;
    }
    int rv = next_request(p);
    if (rv > 0)
        serve(p);
    else if (rv < 0)
        linger(p);
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    const rh_srv_conf *sc = ap_get_module_config(s->module_config, &relay_https_module);
    int async = 0;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS)
        async = 0;
    g_async_mpm = async;
    if (sysconf(_SC_PAGESIZE) > 0)
        g_page = sysconf(_SC_PAGESIZE);
    g_ssl_module = ap_find_linked_module("mod_ssl.c");
    g_is_https = APR_RETRIEVE_OPTIONAL_FN(ssl_is_https);
    /* any server (virtual host) may ask for it */
    for (server_rec *v = s; v && !rh_srv_async(sc); v = v->next)
        sc = ap_get_module_config(v->module_config, &relay_https_module);
    if (g_async_mpm && rh_srv_async(sc))
        rh_reactor_child_init(pchild, s);
}

#if AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
static void child_stopping(apr_pool_t *pchild, int graceful)
{
    (void)pchild;
    (void)graceful;
    rh_reactor_stopping();
}
#endif

void rh_async_register_hooks(void)
{
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_suspend_connection(on_suspend, NULL, NULL, APR_HOOK_MIDDLE);
#if AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
    ap_hook_child_stopping(child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
#endif
}
