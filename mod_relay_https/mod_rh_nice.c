/* RelayNice (mod_rh_nice.h). Raising a nice value needs no privilege;
 * lowering it back needs RLIMIT_NICE to allow the old value, so the parent
 * (root) raises that limit to exactly its own nice, and a child that still
 * finds it too low (httpd started unprivileged) leaves its threads alone:
 * a site thread niced for good would be worse than none. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "mod_rh_nice.h"

static int g_ok;        /* this child nices its relay threads */
static int g_base;      /* the child's own nice value */
static int g_relay;     /* the relay threads' nice value */
static int g_warned;

/* The rlimit a process needs to set its nice value back to base. */
static rlim_t limit_for(int base)
{
    return (rlim_t)(20 - base);
}

/* The process's nice value into *base: 0, or -1 (getpriority may return -1). */
static int own_nice(int *base)
{
    errno = 0;
    *base = getpriority(PRIO_PROCESS, 0);
    return errno ? -1 : 0;
}

static int relay_nice(int base, int nice)
{
    int v = base + nice;
    return v > 19 ? 19 : v;
}

void rh_nice_parent(server_rec *s, int nice)
{
    struct rlimit rl;
    int base;

    if (nice <= 0 || geteuid() != 0 || getrlimit(RLIMIT_NICE, &rl) != 0 || own_nice(&base))
        return;
    rlim_t need = limit_for(base);
    if (rl.rlim_cur >= need)
        return;
    rl.rlim_cur = need;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        rl.rlim_max = need;
    if (setrlimit(RLIMIT_NICE, &rl) != 0)
        ap_log_error(APLOG_MARK, APLOG_INFO, errno, s, RHLOG(2111)
                     "RelayNice: cannot raise RLIMIT_NICE to %d: relay requests will "
                     "run at the site's priority", (int)need);
}

void rh_nice_child_init(server_rec *s, int nice)
{
    struct rlimit rl;

    g_ok = 0;
    if (nice <= 0 || getrlimit(RLIMIT_NICE, &rl) != 0 || own_nice(&g_base))
        return;
    g_relay = relay_nice(g_base, nice);
    g_ok = g_relay > g_base && (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= limit_for(g_base));
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RHLOG(2112)
                 "RelayNice: relay requests %s (site %d, relay %d, RLIMIT_NICE %ld)",
                 g_ok ? "run niced" : "run at the site's priority: cannot nice and come back",
                 g_base, g_relay, (long)rl.rlim_cur);
}

void rh_nice_core(server_rec *s, int nice)
{
    int base;
    if (nice <= 0 || own_nice(&base))
        return;
    if (setpriority(PRIO_PROCESS, 0, relay_nice(base, nice)) != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, RHLOG(1019)
                     "RelayNice: the relay core cannot lower its priority");
}

static pid_t tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

int rh_nice_enter(void)
{
    if (!g_ok)
        return 0;
    return setpriority(PRIO_PROCESS, (id_t)tid(), g_relay) == 0;
}

void rh_nice_leave(int entered, request_rec *r)
{
    if (!entered || setpriority(PRIO_PROCESS, (id_t)tid(), g_base) == 0)
        return;
    /* the thread stays niced: say so once, and nice no more threads */
    g_ok = 0;
    if (!g_warned++)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, errno, r, RHLOG(2113)
                      "RelayNice: a thread could not come back to the site's priority; "
                      "relay requests of this child now run at the site's priority");
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    rh_srv_conf *sc = ap_get_module_config(s->module_config, &relay_https_module);
    (void)pchild;
    rh_nice_child_init(s, rh_srv_nice(sc));
}

void rh_nice_register_hooks(void)
{
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
}
