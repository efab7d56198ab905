/* The relay core runs in its own process, forked from the httpd parent in
 * post_config the way mod_cgid forks cgid: children come and go (MaxRequests,
 * graceful restarts, crashes) but the sessions' sockets live in the core. */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_shm.h>
#include <apr_signal.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <ap_listen.h>
#include <ap_mpm.h>
#include <http_core.h>
#include <http_main.h>
#include <mpm_common.h>
#include <unixd.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "rh_core.h"
#include "rh_ipc_client.h"
#include "rh_shard.h"
#include "rh_util.h"
#include "mod_rh_child.h"
#include "mod_rh_daemon.h"
#include "mod_rh_nice.h"
#include "mod_rh_corelog.h"

/* One core process (a shard, RelayCoreProcesses): its table and socket. */
typedef struct rh_core_rec {
    apr_proc_t proc;        /* pid 0 when there is none */
    apr_shm_t *shm;
    rh_registry *reg;
    int listen_fd;
    char socket[256];
} rh_core_rec;

/* What outlives a restart of httpd's configuration: the core processes, their
 * sockets and session tables stay; only stop ends them. The module is
 * unloaded and loaded again on every restart, so this lives in httpd's
 * retained data, and pointers in it never point into the module. */
typedef struct rh_retained {
    int ready;
    unsigned n;             /* the cores serving new sessions */
    uint32_t max_sessions;  /* their slots in all (rh_shard_slots: each one's) */
    uint64_t module_id;     /* the module file the cores were forked from */
    unsigned handovers;     /* cores started by upgrades: names their sockets */
    rh_core_rec cur[RH_SHARDS_MAX];
    unsigned old_n;         /* the cores before the last upgrade, draining */
    rh_core_rec old[RH_SHARDS_MAX];   /* pid 0: ended */
} rh_retained;

/* the retained data's name: a new layout gets a new name, so a module never
 * reads another version's */
#define RETAINED_KEY "mod_relay_https/3"
/* after an upgrade the old core keeps its sessions at most this long */
#define DRAIN_MAX_MS (600 * 1000)
/* upgrade sockets are named path.1 .. path.HANDOVER_NAMES in turn */
#define HANDOVER_NAMES 99
/* the longest suffix a core's socket adds to the path: ".99-255" */
#define SOCKET_SUFFIX_MAX 7

static rh_retained *g_ret;
static server_rec *g_server;
static apr_pool_t *g_pconf;
/* APR segfaults on unregistering twice */
static int g_registered[RH_SHARDS_MAX];
static int g_old_registered[RH_SHARDS_MAX];

unsigned rh_daemon_cores(void) { return g_ret && g_ret->ready ? g_ret->n : 0; }
const char *rh_daemon_socket(unsigned k)
{
    return k < rh_daemon_cores() ? g_ret->cur[k].socket : NULL;
}
const rh_registry *rh_daemon_registry(unsigned k)
{
    return k < rh_daemon_cores() ? g_ret->cur[k].reg : NULL;
}
static const rh_core_rec *old_core(unsigned k)
{
    return g_ret && g_ret->ready && k < g_ret->old_n && g_ret->old[k].proc.pid > 0
           ? &g_ret->old[k] : NULL;
}
const rh_registry *rh_daemon_old_registry(unsigned k)
{
    return old_core(k) ? old_core(k)->reg : NULL;
}
const char *rh_daemon_old_socket(unsigned k)
{
    return old_core(k) ? old_core(k)->socket : NULL;
}
/* A table's extension, judged by its memory's real size: none if an older module made it */
static rh_registry_ext *core_ext(const rh_core_rec *cr)
{
    return cr->shm ? rh_registry_ext_of(cr->reg, apr_shm_size_get(cr->shm)) : NULL;
}
const rh_registry_ext *rh_daemon_ext(unsigned k)
{
    return k < rh_daemon_cores() ? core_ext(&g_ret->cur[k]) : NULL;
}
/* the handlers' counters go to the first table (the status page sums the rest) */
rh_stats *rh_daemon_stats(void) { return rh_daemon_cores() ? &g_ret->cur[0].reg->stats : NULL; }

static void core_signal(int sig)
{
    rh_core_request_stop();
}

/* In a forked core: the other cores' sockets are not its own. */
static void close_other_sockets(const rh_core_rec *me)
{
    for (unsigned i = 0; i < RH_SHARDS_MAX; ++i) {
        if (&g_ret->cur[i] != me && g_ret->cur[i].listen_fd >= 0 && i < g_ret->n)
            close(g_ret->cur[i].listen_fd);
        if (i < g_ret->old_n && g_ret->old[i].listen_fd >= 0)
            close(g_ret->old[i].listen_fd);
    }
}

/* In the forked process: become core k. Never returns. */
static void core_main(unsigned k)
{
    rh_core_config cfg;
    rh_core_rec *me = &g_ret->cur[k];
    int rv;

    apr_signal(SIGTERM, core_signal);
    apr_signal(SIGINT, core_signal);
    /* restarts of httpd (SIGHUP, graceful SIGUSR1, graceful-stop SIGWINCH) are
     * sent to the whole process group; the core stays through them */
    apr_signal(SIGHUP, SIG_IGN);
    apr_signal(SIGUSR1, SIG_IGN);
    apr_signal(SIGWINCH, SIG_IGN);
    apr_signal(SIGPIPE, SIG_IGN);
    apr_signal(SIGCHLD, SIG_DFL);
    ap_close_listeners();           /* the core never accepts HTTP */
    close_other_sockets(me);

    if (ap_run_drop_privileges(g_pconf, g_server)) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g_server,
                     RHLOG(1002) "relay core could not drop privileges");
        _exit(RH_CORE_EXIT_FATAL);
    }
    rh_nice_core(g_server, rh_srv_nice(ap_get_module_config(g_server->module_config,
                                                            &relay_https_module)));
    /* never outlive the httpd parent, whatever way it goes (set after the
     * uid change, which clears it) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(0);
    rh_registry_init(me->reg, me->reg->nslots);
    me->reg->core_pid = getpid();
    me->reg->core_started = (int64_t)apr_time_sec(apr_time_now());

    memset(&cfg, 0, sizeof(cfg));
    cfg.listen_fd = me->listen_fd;
    cfg.reg = me->reg;
    cfg.ext = core_ext(me);
    cfg.heartbeat_s = RH_HEARTBEAT_S;
    cfg.log = rh_corelog_log;
    cfg.relog = rh_corelog_relog;
    cfg.log_ctx = g_server;
    cfg.log_level = APLOG_MODULE_IS_LEVEL(g_server, APLOG_MODULE_INDEX, APLOG_DEBUG)
                    ? RH_LOG_DEBUG : RH_LOG_INFO;
    rv = rh_core_run(&cfg);
    me->reg->core_pid = 0;
    _exit(rv);
}

static void core_maint(int reason, void *data, apr_wait_t status);

static void watch_core(unsigned k)
{
    /* registered per generation (pconf): the callback lives in this module */
    apr_proc_other_child_register(&g_ret->cur[k].proc, core_maint, &g_ret->cur[k], NULL,
                                  g_pconf);
    g_registered[k] = 1;
}

static apr_status_t core_fork(unsigned k)
{
    apr_proc_t proc;
    apr_status_t rv = apr_proc_fork(&proc, g_pconf);
    if (rv == APR_INCHILD)
        core_main(k);
    if (rv != APR_INPARENT) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, g_server,
                     RHLOG(1003) "cannot fork relay core %u", k);
        return rv;
    }
    g_ret->cur[k].proc = proc;
    watch_core(k);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g_server,
                 RHLOG(1004) "relay core started, pid %d (core %u of %u)", (int)proc.pid, k,
                 g_ret->n);
    return APR_SUCCESS;
}

static int server_stopping(void)
{
    int state = AP_MPMQ_RUNNING;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING)
        return 1;
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS && state == AP_MPMQ_STOPPING)
        return 1;
    return 0;
}

/* httpd tells us when a core dies: respawn it unless it failed to start. The
 * other cores and their sessions go on. */
static void core_maint(int reason, void *data, apr_wait_t status)
{
    rh_core_rec *cr = data;
    unsigned k = (unsigned)(cr - g_ret->cur);
    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(data);
        g_registered[k] = 0;
        cr->proc.pid = 0;
        if (server_stopping())
            break;
        if (reason == APR_OC_REASON_DEATH && WIFEXITED(status)
            && WEXITSTATUS(status) == RH_CORE_EXIT_FATAL) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, g_server, RHLOG(1005)
                         "relay core could not start; not restarting it "
                         "(see the messages above)");
            break;
        }
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g_server, RHLOG(1006)
                     "relay core died (%s %d); its sessions are lost, starting a new one "
                     "(core %u of %u; the others go on)", WIFSIGNALED(status) ? "signal" : "exit",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), k, g_ret->n);
        core_fork(k);
        break;
    case APR_OC_REASON_UNREGISTER:
        g_registered[k] = 0;   /* APR's own pool cleanup did it */
        break;
    case APR_OC_REASON_RESTART:
    default:
        break;
    }
}

/* A drained (or stopped) old core's socket and table go; with stop set it
 * is asked to end first. Children forked later no longer see it. */
static void old_core_forget(rh_core_rec *cr, int stop)
{
    if (!cr->reg)
        return;
    if (stop && cr->proc.pid > 0) {
        kill(cr->proc.pid, SIGTERM);
        waitpid(cr->proc.pid, NULL, 0);
    }
    cr->proc.pid = 0;
    if (cr->listen_fd >= 0)
        close(cr->listen_fd);
    cr->listen_fd = -1;
    unlink(cr->socket);
    apr_shm_destroy(cr->shm);
    cr->reg = NULL;
    cr->shm = NULL;
}

static void old_cores_forget(int stop)
{
    for (unsigned k = 0; g_ret && k < g_ret->old_n; ++k)
        old_core_forget(&g_ret->old[k], stop);
}

/* httpd tells us when an old core ended (its last session, or its deadline). */
static void old_core_maint(int reason, void *data, apr_wait_t status)
{
    rh_core_rec *cr = data;
    unsigned k = (unsigned)(cr - g_ret->old);
    if (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST) {
        if (reason == APR_OC_REASON_UNREGISTER)
            g_old_registered[k] = 0;
        return;
    }
    apr_proc_other_child_unregister(data);
    g_old_registered[k] = 0;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, g_server, RHLOG(1017)
                 "the relay core %u replaced by an upgrade (pid %d) has ended", k,
                 (int)cr->proc.pid);
    old_core_forget(cr, 0);
}

static void watch_old_core(unsigned k)
{
    apr_proc_other_child_register(&g_ret->old[k].proc, old_core_maint, &g_ret->old[k], NULL,
                                  g_pconf);
    g_old_registered[k] = 1;
}

/* Asks every core to stop, gives them 3 s together to say goodbye to their
 * sessions, then insists. */
static void cores_stop(void)
{
    int waited = 0, left;
    for (unsigned k = 0; k < g_ret->n; ++k)
        if (g_ret->cur[k].proc.pid > 0) {
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g_server, RHLOG(1007)
                         "stopping relay core %u (pid %d)", k, (int)g_ret->cur[k].proc.pid);
            kill(g_ret->cur[k].proc.pid, SIGTERM);
        }
    do {
        left = 0;
        for (unsigned k = 0; k < g_ret->n; ++k) {
            pid_t pid = g_ret->cur[k].proc.pid;
            if (pid <= 0 || waitpid(pid, NULL, WNOHANG) != 0) {
                g_ret->cur[k].proc.pid = 0;
                continue;
            }
            if (waited >= 3000) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                g_ret->cur[k].proc.pid = 0;
                continue;
            }
            ++left;
        }
        if (left) {
            apr_sleep(apr_time_from_msec(10));
            waited += 10;
        }
    } while (left);
}

/* pconf cleanup: on a restart the core stays (it is found again by the next
 * generation); when httpd exits, the core goes, and its socket with it. */
static apr_status_t generation_end(void *data)
{
    for (unsigned k = 0; k < RH_SHARDS_MAX; ++k) {
        if (g_registered[k])
            apr_proc_other_child_unregister(&g_ret->cur[k]);
        if (g_old_registered[k])
            apr_proc_other_child_unregister(&g_ret->old[k]);
        g_registered[k] = g_old_registered[k] = 0;
    }
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_EXITING) {
        /* a restart: the next generation claims the cores again at once, unless
         * it comes without the module (a2dismod); then the cores end */
        for (unsigned k = 0; g_ret->ready && k < g_ret->n; ++k)
            rh_registry_claim(g_ret->cur[k].reg, rh_now_ms() + RH_CLAIM_GRACE_MS);
        for (unsigned k = 0; g_ret->ready && k < g_ret->old_n; ++k)
            if (g_ret->old[k].proc.pid > 0)
                rh_registry_claim(g_ret->old[k].reg, rh_now_ms() + RH_CLAIM_GRACE_MS);
        return APR_SUCCESS;
    }
    old_cores_forget(1);
    cores_stop();
    for (unsigned k = 0; k < g_ret->n; ++k) {
        if (g_ret->cur[k].listen_fd >= 0)
            close(g_ret->cur[k].listen_fd);
        g_ret->cur[k].listen_fd = -1;
        unlink(g_ret->cur[k].socket);
    }
    g_ret->ready = 0;
    return APR_SUCCESS;
}

static int make_socket(server_rec *s, const char *path)
{
    struct sockaddr_un sa;
    mode_t old;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(1010)
                     "relay socket path too long: %s (set RelaySocket)", path);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    old = umask(0077);   /* only httpd's own user may talk to the core */
    int bound = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (bound != 0 || listen(fd, SOMAXCONN) != 0)
        goto fail;
    if (geteuid() == 0 && chown(path, ap_unixd_config.user_id, -1) != 0)
        goto fail;
    return fd;
fail:
    ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, RHLOG(1011)
                 "cannot create the relay socket %s", path);
    if (fd >= 0)
        close(fd);
    return -1;
}

/* The operator's budget goes where the cores read it at every request. The
 * per-client limits hold whole in each core, since a client's sessions live
 * in one (rh_shard_for); the global ones are divided. */
static void publish_limits(const rh_srv_conf *sc, server_rec *s)
{
    rh_limits lim;
    rh_srv_limits(sc, &lim);
    uint64_t resume = rh_srv_resume_memory(sc);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RHLOG(1014)
                 "relay limits: %u requests in flight (%u per client), %u sessions per "
                 "client, %u opens/s per client, %u listens per client, pushes wait %u s, "
                 "%u B/s per session, %u B/s in all, resume windows hold %" APR_UINT64_T_FMT
                 " bytes (0: no limit), over %u cores",
                 lim.max_workers, lim.requests_per_client, lim.sessions_per_client,
                 lim.open_rate, lim.listens_per_client, lim.push_wait_s, lim.rate_session,
                 lim.rate_global, resume, g_ret->n);
    for (unsigned k = 0; k < g_ret->n; ++k) {
        rh_limits part = lim;
        part.max_workers = (uint32_t)rh_shard_part(lim.max_workers, g_ret->n, k);
        part.rate_global = (uint32_t)rh_shard_part(lim.rate_global, g_ret->n, k);
        rh_registry_set_limits(g_ret->cur[k].reg, &part);
        /* a client's windows are in one core: its half is whole in each */
        rh_registry_set_resume(core_ext(&g_ret->cur[k]), rh_shard_part(resume, g_ret->n, k),
                               resume / 2 ? resume / 2 : resume);
    }
}

/* The module file this process runs, as (device, inode, size, mtime): a new
 * file (make install, a package upgrade) gives another value. 0: unknown. */
static uint64_t module_id(void)
{
    Dl_info di;
    struct stat st;
    if (!dladdr((void *)&relay_https_module, &di) || !di.dli_fname || stat(di.dli_fname, &st))
        return 0;
    uint64_t h = 1469598103934665603ull;
    uint64_t v[5] = { (uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
                      (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec };
    for (int i = 0; i < 5; ++i)
        h = (h ^ v[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* Core k's socket: the configured path for the first, path-k for the others. */
static const char *shard_path(apr_pool_t *p, const char *path, unsigned k)
{
    return k ? apr_psprintf(p, "%s-%u", path, k) : path;
}

/* Core k's new table and socket (old: the core it replaces after an upgrade,
 * whose slot generations and figures go on: no new token repeats an old id). */
static int table_setup(server_rec *s, unsigned k, const char *path, const rh_core_rec *old)
{
    rh_core_rec *cr = &g_ret->cur[k];
    uint32_t nslots = rh_shard_slots(g_ret->max_sessions, g_ret->n, k);
    /* the table lives in the process pool: restarts keep it */
    apr_status_t rv = apr_shm_create(&cr->shm, rh_registry_ext_size(nslots), NULL,
                                     s->process->pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RHLOG(1012)
                     "cannot create the shared session table (%u slots)", nslots);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cr->reg = apr_shm_baseaddr_get(cr->shm);
    if (old && old->reg->nslots == nslots)   /* not the extension, which it may lack */
        memcpy(cr->reg, old->reg, rh_registry_size(nslots));
    else
        memset(cr->reg, 0, rh_registry_size(nslots));
    rh_registry_init(cr->reg, nslots);
    rh_registry_ext_init(cr->reg, apr_shm_size_get(cr->shm), old ? core_ext(old) : NULL);
    cr->reg->shard = k;
    rh_registry_claim(cr->reg, INT64_MAX);
    rh_registry_drain(cr->reg, 0);
    if (strlen(path) >= sizeof(cr->socket)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(1010)
                     "relay socket path too long: %s (set RelaySocket)", path);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    strcpy(cr->socket, path);
    cr->listen_fd = make_socket(s, path);
    return cr->listen_fd < 0 ? HTTP_INTERNAL_SERVER_ERROR : OK;
}

/* New tables, sockets and cores: at the first start, and after an upgrade
 * (from: the old cores, one for one). */
static int core_setup(server_rec *s, const rh_srv_conf *sc, const char *path,
                      const rh_core_rec *from, unsigned from_n)
{
    for (unsigned k = 0; k < g_ret->n; ++k)
        g_ret->cur[k].listen_fd = -1;
    for (unsigned k = 0; k < g_ret->n; ++k) {
        int rv = table_setup(s, k, shard_path(s->process->pool, path, k),
                             k < from_n ? &from[k] : NULL);
        if (rv != OK)
            return rv;
    }
    publish_limits(sc, s);
    g_ret->ready = 1;
    g_ret->module_id = module_id();
    for (unsigned k = 0; k < g_ret->n; ++k)
        if (core_fork(k) != APR_SUCCESS)
            return HTTP_INTERNAL_SERVER_ERROR;
    return OK;
}

/* The module file changed under running cores (an upgrade and a graceful
 * restart): new cores from the new file serve new sessions, the old ones
 * keep their sessions until they end (at most DRAIN_MAX_MS) and take no new
 * ones; the handlers find a session in either table of its shard. */
static int core_handover(server_rec *s, const rh_srv_conf *sc, const char *path)
{
    unsigned active = 0;
    old_cores_forget(1);   /* cores two upgrades old go now */
    memcpy(g_ret->old, g_ret->cur, sizeof(g_ret->old));
    g_ret->old_n = g_ret->n;
    for (unsigned k = 0; k < g_ret->old_n; ++k) {
        rh_registry_drain(g_ret->old[k].reg, rh_now_ms() + DRAIN_MAX_MS);
        active += g_ret->old[k].reg->active;
        if (g_ret->old[k].proc.pid > 0)
            watch_old_core(k);
    }
    /* the suffix stays within SOCKET_SUFFIX_MAX (checked at the first start):
     * a restart must never fail on a name; two generations live at most */
    g_ret->handovers = g_ret->handovers % HANDOVER_NAMES + 1;
    const char *npath = apr_psprintf(s->process->pool, "%s.%u", path, g_ret->handovers);
    int rv = core_setup(s, sc, npath, g_ret->old, g_ret->old_n);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, RHLOG(1016)
                 "the module file changed: %u new relay cores (the first pid %d) serve new "
                 "sessions; the old ones (the first pid %d) keep their %u sessions until "
                 "they end (at most %d s)", g_ret->n, (int)g_ret->cur[0].proc.pid,
                 (int)g_ret->old[0].proc.pid, active, DRAIN_MAX_MS / 1000);
    return rv;
}

/* A restart: the cores and their sessions go on, under the new limits, with
 * the new error log; unless the module file changed (core_handover). A core
 * found dead is started again. */
static int core_keep(server_rec *s, const rh_srv_conf *sc, unsigned n, uint32_t max,
                     const char *path)
{
    for (unsigned k = 0; k < g_ret->n; ++k)
        rh_registry_claim(g_ret->cur[k].reg, INT64_MAX);
    for (unsigned k = 0; k < g_ret->old_n; ++k)
        if (g_ret->old[k].proc.pid > 0 && kill(g_ret->old[k].proc.pid, 0) == 0) {
            rh_registry_claim(g_ret->old[k].reg, INT64_MAX);
            watch_old_core(k);
        }
    publish_limits(sc, s);
    if (n != g_ret->n || max != g_ret->max_sessions
        || strncmp(path, g_ret->cur[0].socket, strlen(path)) != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(1013)
                     "RelayMaxSessions, RelayCoreProcesses and RelaySocket changes take "
                     "effect at the next full stop and start, not on a restart");
    uint64_t id = module_id();
    if (id && g_ret->module_id && id != g_ret->module_id)
        return core_handover(s, sc, path);
    for (unsigned k = 0; k < g_ret->n; ++k) {
        rh_core_rec *cr = &g_ret->cur[k];
        if (cr->proc.pid <= 0 || kill(cr->proc.pid, 0) != 0) {
            if (core_fork(k) != APR_SUCCESS)
                return HTTP_INTERNAL_SERVER_ERROR;
            continue;
        }
        watch_core(k);
        rh_corelog_send(s, cr->socket);
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RHLOG(1008)
                 "%u relay cores (the first pid %d) kept across the restart", g_ret->n,
                 (int)g_ret->cur[0].proc.pid);
    return OK;
}

/* RelayCoreProcesses, or auto: enough cores for the sessions under the hard
 * descriptor limit the cores will have (they raise their soft limit to it). */
static unsigned cores_wanted(const rh_srv_conf *sc, uint32_t max_sessions)
{
    struct rlimit rl;
    if (sc->core_procs > 0)
        return (unsigned)sc->core_procs;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max == RLIM_INFINITY)
        return 1;
    return rh_shard_auto(max_sessions, (uint64_t)rl.rlim_max);
}

/* The socket names a restart may derive from path (an upgrade's ".N", core
 * k's "-k") must fit sockaddr_un: said at the start, since a graceful
 * restart that fails on it would stop the whole server. */
size_t rh_daemon_socket_path_max(void)
{
    struct sockaddr_un sa;
    return sizeof(sa.sun_path) - 1 - SOCKET_SUFFIX_MAX;
}

static int socket_path_fits(server_rec *s, const char *path)
{
    if (strlen(path) <= rh_daemon_socket_path_max())
        return 1;
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(1010)
                 "relay socket path too long: %s (%" APR_SIZE_T_FMT " characters; at most %" APR_SIZE_T_FMT ", so that "
                 "upgrades and several cores can add a suffix; set RelaySocket)", path,
                 strlen(path), rh_daemon_socket_path_max());
    return 0;
}

int rh_daemon_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    rh_srv_conf *sc = ap_get_module_config(s->module_config, &relay_https_module);

    /* the first pass only checks the configuration */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;

    g_server = s;
    g_pconf = pconf;
    rh_corelog_init(pconf);
    rh_child_check_spares(s, sc);
    rh_nice_parent(s, rh_srv_nice(sc));
    g_ret = ap_retained_data_get(RETAINED_KEY);
    if (!g_ret) {
        g_ret = ap_retained_data_create(RETAINED_KEY, sizeof(*g_ret));
        memset(g_ret, 0, sizeof(*g_ret));
    }
    uint32_t max = sc->max_sessions > 0 ? (uint32_t)sc->max_sessions : RH_DEFAULT_MAX_SESSIONS;
    unsigned n = cores_wanted(sc, max);
    const char *path = sc->socket_path ? sc->socket_path
         : ap_runtime_dir_relative(ptemp, apr_psprintf(ptemp, "relay_https.%ld.sock",
                                                       (long)getpid()));
    apr_pool_cleanup_register(pconf, NULL, generation_end, apr_pool_cleanup_null);
    if (g_ret->ready)
        return core_keep(s, sc, n, max, path);
    if (!socket_path_fits(s, path))
        return HTTP_INTERNAL_SERVER_ERROR;
    g_ret->n = n;
    g_ret->max_sessions = max;
    if (n > 1)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, RHLOG(1018)
                     "%u relay core processes, about %u sessions each", n, max / n);
    return core_setup(s, sc, path, NULL, 0);
}
