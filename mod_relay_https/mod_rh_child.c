/* The threads of this httpd child that relay requests hold (see
 * mod_rh_child.h). One counter per child process: the handler counts a
 * request from its start until it returns (a parked request has returned
 * SUSPENDED and holds no thread). */
#include <apr_atomic.h>
#include <ap_mpm.h>
#include <http_log.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_child.h"

static volatile apr_uint32_t held;

int rh_child_limit(const rh_srv_conf *sc)
{
    int threaded = 0, threads = 0;
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS ||
        threaded == AP_MPMQ_NOT_SUPPORTED)
        return 0;   /* prefork: a child is one request, its connection waits in it */
    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS || threads < 2)
        return 0;
    int reserve = sc->thread_reserve >= 0 ? sc->thread_reserve : RH_DEFAULT_THREAD_RESERVE;
    if (reserve <= 0)
        return 0;
    if (reserve > threads - 1)
        reserve = threads - 1;
    return threads - reserve;
}

int rh_child_enter(request_rec *r, const rh_srv_conf *sc)
{
    int limit = rh_child_limit(sc);
    apr_uint32_t now = apr_atomic_inc32(&held) + 1;
    if (!limit || now <= (apr_uint32_t)limit)
        return 1;
    apr_atomic_dec32(&held);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2100) "child full: %u relay "
                  "requests hold threads (limit %d)", (unsigned)now - 1, limit);
    rh_fail(r, HTTP_SERVICE_UNAVAILABLE, "this server process has %d relay requests "
            "waiting on its threads, all it may give the relay (RelayThreadReserve keeps "
            "the rest for the site): try again on a new connection", limit);
    return 0;
}

void rh_child_leave(void)
{
    apr_atomic_dec32(&held);
}

/* The threaded MPMs start a child while fewer than MinSpareThreads threads are
 * idle across all children, and a child full of tunnels still shows its
 * reserve as idle: once MinSpareThreads / reserve children are full, httpd
 * starts no more, and every new long-waiting relay request gets 503 until a
 * tunnel ends (the duplex ramp stopped at 299 tunnels that way: 10 children of
 * 32 threads, MinSpareThreads 16). */
void rh_child_check_spares(server_rec *s, const rh_srv_conf *sc)
{
    int limit = rh_child_limit(sc), threads = 0, spare = 0, daemons = 0;

    if (!limit || ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS ||
        ap_mpm_query(AP_MPMQ_MIN_SPARE_THREADS, &spare) != APR_SUCCESS ||
        ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) != APR_SUCCESS)
        return;
    int reserve = threads - limit;
    if (spare <= 0 || daemons < 2 || reserve * (daemons - 1) < spare)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(2101) "MinSpareThreads %d: when "
                 "%d or more children all hold %d relay requests each, httpd starts no more "
                 "(it counts their %d reserved threads, RelayThreadReserve, as spare) and "
                 "new tunnels get 503 until one ends; MinSpareThreads %d or more "
                 "(RelayThreadReserve x the %d children MaxRequestWorkers allows) lets "
                 "them all fill", spare, (spare + reserve - 1) / reserve, limit, reserve,
                 reserve * daemons, daemons);
}
