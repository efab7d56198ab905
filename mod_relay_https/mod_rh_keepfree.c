/* A duplex's connections keep what they free (see mod_rh_keepfree.h).
 *
 * With MaxMemFree set (64 KiB is what the docs recommend for thousands of idle
 * tunnels) APR gives every block freed past that limit back to the system at
 * once, and Debian's APR maps its blocks with mmap: a duplex moving bulk made
 * mod_http2 and mod_ssl map and unmap a 8-20 KiB block for every piece of its
 * body, 75,000 of each per GB on the main connection's thread, and the page
 * faults and TLB shootdowns cost more than the copying (docs/BENCHMARKS.md,
 * "Duplex and MaxMemFree"). So while a duplex runs its connections keep up to
 * RH_KEEPFREE_BYTES freed, and give it all back when it ends.
 *
 * An allocator is only ever changed by the thread that runs its connection:
 * the request's own (the handler's thread) directly; an HTTP/2 main
 * connection's by a connection input filter of ours, which that connection's
 * thread calls on every read (mod_http2 reads it all the time), told by the
 * handlers through a counter. */
#include <apr_allocator.h>
#include <apr_atomic.h>
#include <httpd.h>
#include <http_config.h>
#include <http_connection.h>
#include <http_log.h>
#include <mpm_common.h>
#include <util_filter.h>

#include "mod_rh_private.h"
#include "mod_rh_keepfree.h"

/* Blocks given back at most in one drain: a kept RH_KEEPFREE_BYTES is at most
 * 256 blocks of APR's smallest size. */
#define DRAIN_MAX 1024

static ap_filter_rec_t *g_keep_filter;

/* An HTTP/2 main connection's part: duplexes running on its streams, and
 * whether its allocator is lifted (its own thread's business only). */
typedef struct {
    volatile apr_uint32_t duplexes;
    int lifted;
} rh_keep;

/* APR has no getter; its apr_allocator_t (1.x and trunk alike) begins with
 * max_index, the largest of its free lists in use. Only read, and the loops
 * that use it are bounded. */
int rh_keepfree_has_free(apr_allocator_t *a)
{
#if APR_MAJOR_VERSION <= 2
    return *(const apr_size_t *)(const void *)a != 0;
#else
    (void)a;
    return 1;
#endif
}

int rh_keepfree_drain(apr_allocator_t *a, int max)
{
    int i = 0;
    apr_allocator_max_free_set(a, 1);
    for (; i < max && rh_keepfree_has_free(a); ++i) {
        apr_memnode_t *n = apr_allocator_alloc(a, 1);
        if (!n)
            break;
        apr_allocator_free(a, n);
    }
    apr_allocator_max_free_set(a, ap_max_mem_free);
    return i;
}

/* The connection's allocator when only the thread running the connection
 * uses it: event's (owned by the connection's pool), or mod_http2's for a
 * stream (httpd 2.4.71: owned by the pool above the stream connection's, no
 * mutex). NULL when it may be shared, or when there is no limit to lift
 * (MaxMemFree unset, or already as high). */
static apr_allocator_t *own_allocator(conn_rec *c)
{
    apr_allocator_t *a = apr_pool_allocator_get(c->pool);
    if (!ap_max_mem_free || ap_max_mem_free >= RH_KEEPFREE_BYTES || !a)
        return NULL;
    apr_pool_t *owner = apr_allocator_owner_get(a);
    if (owner == c->pool)
        return a;
    return c->master && owner == apr_pool_parent_get(c->pool)
           && !apr_allocator_mutex_get(a) ? a : NULL;
}

static void lift(conn_rec *c, const char *what)
{
    apr_allocator_t *a = own_allocator(c);
    if (!a)
        return;
    apr_allocator_max_free_set(a, RH_KEEPFREE_BYTES);
    ap_log_cerror(APLOG_MARK, APLOG_TRACE1, 0, c, RHLOG(2331)
                  "duplex: %s keeps up to %d KiB freed (MaxMemFree %d KiB)", what,
                  RH_KEEPFREE_BYTES / 1024, (int)(ap_max_mem_free / 1024));
}

static void drop(conn_rec *c, const char *what)
{
    apr_allocator_t *a = own_allocator(c);
    if (!a)
        return;
    int n = rh_keepfree_drain(a, DRAIN_MAX);
    ap_log_cerror(APLOG_MARK, APLOG_TRACE1, 0, c, RHLOG(2332)
                  "duplex over: %s gave back %d free blocks, MaxMemFree %d KiB again",
                  what, n, (int)(ap_max_mem_free / 1024));
}

/* The main connection's thread, on each of its reads: follows the counter. */
static apr_status_t keep_in(ap_filter_t *f, apr_bucket_brigade *bb, ap_input_mode_t mode,
                            apr_read_type_e block, apr_off_t readbytes)
{
    rh_keep *k = f->ctx;
    int want = apr_atomic_read32(&k->duplexes) != 0;
    if (want && !k->lifted)
        lift(f->c, "the HTTP/2 connection");
    else if (!want && k->lifted)
        drop(f->c, "the HTTP/2 connection");
    k->lifted = want;
    return ap_get_brigade(f->next, bb, mode, block, readbytes);
}

/* The connection's pool is cleared (event recycles it, allocator and all, for
 * the next connection): its limit is MaxMemFree again before its blocks go. */
static apr_status_t keep_end(void *data)
{
    ap_filter_t *f = data;
    rh_keep *k = f->ctx;
    if (k->lifted)
        apr_allocator_max_free_set(apr_pool_allocator_get(f->c->pool), ap_max_mem_free);
    k->lifted = 0;
    return APR_SUCCESS;
}

/* Main connections only (a stream's handler lifts its own), and only where
 * there is a limit to lift. */
static int keep_pre_connection(conn_rec *c, void *csd)
{
    (void)csd;
    if (c->master || !own_allocator(c))
        return DECLINED;
    rh_keep *k = apr_pcalloc(c->pool, sizeof(*k));
    ap_filter_t *f = ap_add_input_filter_handle(g_keep_filter, k, NULL, c);
    if (f)
        apr_pool_cleanup_register(c->pool, f, keep_end, apr_pool_cleanup_null);
    return DECLINED;
}

static rh_keep *main_keep(conn_rec *c1)
{
    for (ap_filter_t *f = c1->input_filters; f; f = f->next)
        if (f->frec == g_keep_filter)
            return f->ctx;
    return NULL;
}

typedef struct {
    conn_rec *c;
    rh_keep *k;
} rh_keep_req;

static apr_status_t keep_req_end(void *data)
{
    rh_keep_req *kr = data;
    drop(kr->c, "the request's connection");
    if (kr->k)
        apr_atomic_dec32(&kr->k->duplexes);
    return APR_SUCCESS;
}

apr_size_t rh_keepfree_begin(request_rec *r)
{
    conn_rec *c = r->connection;
    if (!ap_max_mem_free || ap_max_mem_free >= RH_KEEPFREE_BYTES)
        return ap_max_mem_free;
    rh_keep_req *kr = apr_pcalloc(r->pool, sizeof(*kr));
    kr->c = c;
    lift(c, "the request's connection");
    if (c->master && (kr->k = main_keep(c->master)))
        apr_atomic_inc32(&kr->k->duplexes);
    apr_pool_cleanup_register(r->pool, kr, keep_req_end, apr_pool_cleanup_null);
    return own_allocator(c) ? RH_KEEPFREE_BYTES : ap_max_mem_free;
}

void rh_keepfree_register_hooks(void)
{
    g_keep_filter = ap_register_input_filter("RELAY_HTTPS_KEEPFREE", keep_in, NULL,
                                             AP_FTYPE_CONNECTION);
    ap_hook_pre_connection(keep_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
}
