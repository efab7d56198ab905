/* The relay core runs in its own process, forked from the httpd parent in
 * post_config the way mod_cgid forks cgid: children come and go (MaxRequests,
 * graceful restarts, crashes) but the sessions' sockets live in the core. */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
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
#include "rh_util.h"
#include "mod_rh_daemon.h"

/* What outlives a restart of httpd's configuration: the core process, its
 * socket and the session table stay; only stop ends them. The module is
 * unloaded and loaded again on every restart, so this lives in httpd's
 * retained data, and pointers in it never point into the module. */
typedef struct rh_retained {
    int ready;
    apr_proc_t proc;        /* the core; pid 0 when there is none */
    apr_shm_t *shm;
    rh_registry *reg;
    uint32_t nslots;
    int listen_fd;
    char socket[256];
    uint64_t module_id;     /* the module file the core was forked from */
    unsigned handovers;     /* cores started by upgrades: names their sockets */
    struct {                /* the core before the last upgrade, draining; pid 0: none */
        apr_proc_t proc;
        apr_shm_t *shm;
        rh_registry *reg;
        int listen_fd;
        char socket[256];
    } old;
} rh_retained;

/* the retained data's name: a new layout gets a new name, so a module never
 * reads another version's */
#define RETAINED_KEY "mod_relay_https/2"
/* after an upgrade the old core keeps its sessions at most this long */
#define DRAIN_MAX_MS (600 * 1000)

static rh_retained *g_ret;
static server_rec *g_server;
static apr_pool_t *g_pconf;
static int g_registered;   /* APR segfaults on unregistering twice */
static int g_old_registered;

const char *rh_daemon_socket(void) { return g_ret && g_ret->ready ? g_ret->socket : NULL; }
const rh_registry *rh_daemon_old_registry(void)
{
    return g_ret && g_ret->ready && g_ret->old.proc.pid > 0 ? g_ret->old.reg : NULL;
}
const char *rh_daemon_old_socket(void)
{
    return g_ret && g_ret->ready && g_ret->old.proc.pid > 0 ? g_ret->old.socket : NULL;
}
const rh_registry *rh_daemon_registry(void) { return g_ret && g_ret->ready ? g_ret->reg : NULL; }
rh_stats *rh_daemon_stats(void) { return g_ret && g_ret->ready ? &g_ret->reg->stats : NULL; }

static void core_log(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, (server_rec *)ctx, RHLOG(1001) "core: %s", msg);
}

/* In the core, after a restart of httpd: write to the new error log (a rotated
 * log's new file) and log at the new LogLevel. */
static int core_relog(void *ctx, int fd, int level)
{
    server_rec *s = ctx;
    apr_os_file_t old;
    if (fd >= 0) {
        if (s->error_log && apr_os_file_get(&old, s->error_log) == APR_SUCCESS && old >= 0)
            dup2(fd, old);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    if (level >= APLOG_EMERG && level <= APLOG_TRACE8)
        ap_set_module_loglevel(g_pconf, &s->log, APLOG_MODULE_INDEX, level);
    return level >= APLOG_DEBUG ? RH_LOG_DEBUG : RH_LOG_INFO;
}

/* The module's own level in the main server (LogLevel relay_https:LEVEL, or
 * the server's). */
static int module_log_level(server_rec *s)
{
    if (s->log.module_levels && s->log.module_levels[APLOG_MODULE_INDEX] != APLOG_NO_MODULE)
        return s->log.module_levels[APLOG_MODULE_INDEX];
    return s->log.level;
}

/* In the parent, after a restart that kept the core: hand it the new error
 * log and level (logrotate renames the log and restarts httpd gracefully). */
static void core_send_logs(server_rec *s)
{
    char line[32];
    int fd = rh_ipc_connect(g_ret->socket, 2000), logfd = -1, rv = -1;
    apr_os_file_t f;
    if (fd < 0)
        goto leave;
    if (s->error_log && apr_os_file_get(&f, s->error_log) == APR_SUCCESS)
        logfd = f;
    int n = snprintf(line, sizeof(line), "LOGS %d\n", module_log_level(s));
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { line, (size_t)n };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (logfd >= 0) {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &logfd, sizeof(int));
    }
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != n)
        goto leave;
    rv = rh_ipc_read_line(fd, line, sizeof(line), 2000) < 0 || strncmp(line, "OK", 2) ? -1 : 0;
leave:
    if (rv != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(1015)
                     "could not hand the relay core the reopened error log; it writes to "
                     "the old one until it is restarted");
    if (fd >= 0)
        close(fd);
}

static void core_signal(int sig)
{
    rh_core_request_stop();
}

/* In the forked process: become the core. Never returns. */
static void core_main(void)
{
    rh_core_config cfg;
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

    if (ap_run_drop_privileges(g_pconf, g_server)) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, g_server,
                     RHLOG(1002) "relay core could not drop privileges");
        _exit(RH_CORE_EXIT_FATAL);
    }
    /* never outlive the httpd parent, whatever way it goes (set after the
     * uid change, which clears it) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(0);
    rh_registry_init(g_ret->reg, g_ret->nslots);
    g_ret->reg->core_pid = getpid();
    g_ret->reg->core_started = (int64_t)apr_time_sec(apr_time_now());

    memset(&cfg, 0, sizeof(cfg));
    cfg.listen_fd = g_ret->listen_fd;
    cfg.reg = g_ret->reg;
    cfg.heartbeat_s = RH_HEARTBEAT_S;
    cfg.log = core_log;
    cfg.relog = core_relog;
    cfg.log_ctx = g_server;
    cfg.log_level = APLOG_MODULE_IS_LEVEL(g_server, APLOG_MODULE_INDEX, APLOG_DEBUG)
                    ? RH_LOG_DEBUG : RH_LOG_INFO;
    rv = rh_core_run(&cfg);
    g_ret->reg->core_pid = 0;
    _exit(rv);
}

static void core_maint(int reason, void *data, apr_wait_t status);

static void watch_core(void)
{
    /* registered per generation (pconf): the callback lives in this module */
    apr_proc_other_child_register(&g_ret->proc, core_maint, &g_ret->proc, NULL, g_pconf);
    g_registered = 1;
}

static apr_status_t core_fork(void)
{
    apr_proc_t proc;
    apr_status_t rv = apr_proc_fork(&proc, g_pconf);
    if (rv == APR_INCHILD)
        core_main();
    if (rv != APR_INPARENT) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, g_server,
                     RHLOG(1003) "cannot fork the relay core");
        return rv;
    }
    g_ret->proc = proc;
    watch_core();
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g_server,
                 RHLOG(1004) "relay core started, pid %d", (int)proc.pid);
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

/* httpd tells us when the core dies: respawn it unless it failed to start. */
static void core_maint(int reason, void *data, apr_wait_t status)
{
    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(data);
        g_registered = 0;
        g_ret->proc.pid = 0;
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
                     "relay core died (%s %d); its sessions are lost, starting a new one",
                     WIFSIGNALED(status) ? "signal" : "exit",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        core_fork();
        break;
    case APR_OC_REASON_UNREGISTER:
        g_registered = 0;   /* APR's own pool cleanup did it */
        break;
    case APR_OC_REASON_RESTART:
    default:
        break;
    }
}

/* The drained (or stopped) old core's socket and table go; with stop set it
 * is asked to end first. Children forked later no longer see it. */
static void old_core_forget(int stop)
{
    if (!g_ret || !g_ret->old.reg)
        return;
    if (stop && g_ret->old.proc.pid > 0) {
        kill(g_ret->old.proc.pid, SIGTERM);
        waitpid(g_ret->old.proc.pid, NULL, 0);
    }
    g_ret->old.proc.pid = 0;
    if (g_ret->old.listen_fd >= 0)
        close(g_ret->old.listen_fd);
    g_ret->old.listen_fd = -1;
    unlink(g_ret->old.socket);
    apr_shm_destroy(g_ret->old.shm);
    g_ret->old.reg = NULL;
    g_ret->old.shm = NULL;
}

/* httpd tells us when the old core ended (its last session, or its deadline). */
static void old_core_maint(int reason, void *data, apr_wait_t status)
{
    if (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST) {
        if (reason == APR_OC_REASON_UNREGISTER)
            g_old_registered = 0;
        return;
    }
    apr_proc_other_child_unregister(data);
    g_old_registered = 0;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, g_server, RHLOG(1017)
                 "the relay core replaced by an upgrade (pid %d) has ended",
                 (int)g_ret->old.proc.pid);
    old_core_forget(0);
}

static void watch_old_core(void)
{
    apr_proc_other_child_register(&g_ret->old.proc, old_core_maint, &g_ret->old.proc, NULL,
                                  g_pconf);
    g_old_registered = 1;
}

/* pconf cleanup: on a restart the core stays (it is found again by the next
 * generation); when httpd exits, the core goes, and its socket with it. */
static apr_status_t generation_end(void *data)
{
    if (g_registered) {
        apr_proc_other_child_unregister(&g_ret->proc);
        g_registered = 0;
    }
    if (g_old_registered) {
        apr_proc_other_child_unregister(&g_ret->old.proc);
        g_old_registered = 0;
    }
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_EXITING) {
        /* a restart: the next generation claims the core again at once, unless
         * it comes without the module (a2dismod); then the core ends */
        if (g_ret->ready)
            rh_registry_claim(g_ret->reg, rh_now_ms() + RH_CLAIM_GRACE_MS);
        if (g_ret->ready && g_ret->old.proc.pid > 0)
            rh_registry_claim(g_ret->old.reg, rh_now_ms() + RH_CLAIM_GRACE_MS);
        return APR_SUCCESS;
    }
    old_core_forget(1);
    if (g_ret->proc.pid > 0) {
        pid_t pid = g_ret->proc.pid;
        int waited = 0;
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g_server, RHLOG(1007)
                     "stopping the relay core (pid %d)", (int)pid);
        kill(pid, SIGTERM);
        /* give it a moment to say goodbye to its sessions, then insist */
        while (waitpid(pid, NULL, WNOHANG) == 0) {
            if (waited >= 3000) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                break;
            }
            apr_sleep(apr_time_from_msec(10));
            waited += 10;
        }
        g_ret->proc.pid = 0;
    }
    if (g_ret->listen_fd >= 0) {
        close(g_ret->listen_fd);
        g_ret->listen_fd = -1;
    }
    unlink(g_ret->socket);
    g_ret->ready = 0;
    return APR_SUCCESS;
}

static int make_socket(server_rec *s)
{
    struct sockaddr_un sa;
    mode_t old;
    int fd;
    const char *path = g_ret->socket;

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
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        umask(old);
        goto fail;
    }
    umask(old);
    if (listen(fd, SOMAXCONN) != 0)
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

/* The operator's budget goes where the core reads it at every request. */
static void publish_limits(const rh_srv_conf *sc, server_rec *s)
{
    rh_limits lim;
    rh_srv_limits(sc, &lim);
    rh_registry_set_limits(g_ret->reg, &lim);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RHLOG(1014)
                 "relay limits: %u requests in flight (%u per client), %u sessions per "
                 "client, %u opens/s per client, %u listens per client, pushes wait %u s, "
                 "%u B/s per session, %u B/s in all (0: no limit)", lim.max_workers,
                 lim.requests_per_client, lim.sessions_per_client, lim.open_rate,
                 lim.listens_per_client, lim.push_wait_s, lim.rate_session, lim.rate_global);
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

/* A new table, socket and core: at the first start, and after an upgrade
 * (from: the old table, whose slot generations and figures go on, so that no
 * new token repeats an old session's id). */
static int core_setup(server_rec *s, const rh_srv_conf *sc, uint32_t nslots, const char *path,
                      const rh_registry *from)
{
    /* the table lives in the process pool: restarts keep it */
    apr_status_t rv = apr_shm_create(&g_ret->shm, rh_registry_size(nslots), NULL,
                                     s->process->pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RHLOG(1012)
                     "cannot create the shared session table (%u slots)", nslots);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g_ret->reg = apr_shm_baseaddr_get(g_ret->shm);
    g_ret->nslots = nslots;
    if (from && from->nslots == nslots)
        memcpy(g_ret->reg, from, rh_registry_size(nslots));
    else
        memset(g_ret->reg, 0, rh_registry_size(nslots));
    rh_registry_init(g_ret->reg, nslots);
    rh_registry_claim(g_ret->reg, INT64_MAX);
    rh_registry_drain(g_ret->reg, 0);
    publish_limits(sc, s);
    if (strlen(path) >= sizeof(g_ret->socket)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(1010)
                     "relay socket path too long: %s (set RelaySocket)", path);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    strcpy(g_ret->socket, path);
    g_ret->listen_fd = make_socket(s);
    if (g_ret->listen_fd < 0)
        return HTTP_INTERNAL_SERVER_ERROR;
    g_ret->ready = 1;
    g_ret->module_id = module_id();
    return core_fork() == APR_SUCCESS ? OK : HTTP_INTERNAL_SERVER_ERROR;
}

/* The module file changed under a running core (an upgrade and a graceful
 * restart): a new core from the new file serves new sessions, the old one
 * keeps its sessions until they end (at most DRAIN_MAX_MS) and takes no new
 * ones; the handlers find a session in either table. */
static int core_handover(server_rec *s, const rh_srv_conf *sc, const char *path)
{
    old_core_forget(1);   /* a core two upgrades old goes now */
    g_ret->old.proc = g_ret->proc;
    g_ret->old.shm = g_ret->shm;
    g_ret->old.reg = g_ret->reg;
    g_ret->old.listen_fd = g_ret->listen_fd;
    memcpy(g_ret->old.socket, g_ret->socket, sizeof(g_ret->old.socket));
    rh_registry_drain(g_ret->old.reg, rh_now_ms() + DRAIN_MAX_MS);
    watch_old_core();
    ++g_ret->handovers;
    const char *npath = apr_psprintf(s->process->pool, "%s.%u", path, g_ret->handovers);
    int rv = core_setup(s, sc, g_ret->nslots, npath, g_ret->old.reg);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, RHLOG(1016)
                 "the module file changed: a new relay core (pid %d) serves new sessions; "
                 "the old one (pid %d) keeps its %u sessions until they end (at most %d s)",
                 (int)g_ret->proc.pid, (int)g_ret->old.proc.pid, g_ret->old.reg->active,
                 DRAIN_MAX_MS / 1000);
    return rv;
}

/* A restart: the core and its sessions go on, under the new limits, with the
 * new error log; unless the module file changed (core_handover). */
static int core_keep(server_rec *s, const rh_srv_conf *sc, uint32_t nslots, const char *path)
{
    rh_registry_claim(g_ret->reg, INT64_MAX);
    if (g_ret->old.proc.pid > 0 && kill(g_ret->old.proc.pid, 0) == 0) {
        rh_registry_claim(g_ret->old.reg, INT64_MAX);
        watch_old_core();
    }
    publish_limits(sc, s);
    if (nslots != g_ret->nslots || strncmp(path, g_ret->socket, strlen(path)) != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(1013)
                     "RelayMaxSessions and RelaySocket changes take effect at the "
                     "next full stop and start, not on a restart");
    if (g_ret->proc.pid <= 0 || kill(g_ret->proc.pid, 0) != 0)
        return core_fork() == APR_SUCCESS ? OK : HTTP_INTERNAL_SERVER_ERROR;
    uint64_t id = module_id();
    if (id && g_ret->module_id && id != g_ret->module_id)
        return core_handover(s, sc, path);
    watch_core();
    core_send_logs(s);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RHLOG(1008)
                 "relay core (pid %d) kept across the restart", (int)g_ret->proc.pid);
    return OK;
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
    g_ret = ap_retained_data_get(RETAINED_KEY);
    if (!g_ret) {
        g_ret = ap_retained_data_create(RETAINED_KEY, sizeof(*g_ret));
        memset(g_ret, 0, sizeof(*g_ret));
        g_ret->listen_fd = g_ret->old.listen_fd = -1;
    }
    uint32_t nslots = sc->max_sessions > 0 ? (uint32_t)sc->max_sessions
                                           : RH_DEFAULT_MAX_SESSIONS;
    const char *path = sc->socket_path ? sc->socket_path
         : ap_runtime_dir_relative(ptemp, apr_psprintf(ptemp, "relay_https.%ld.sock",
                                                       (long)getpid()));
    apr_pool_cleanup_register(pconf, NULL, generation_end, apr_pool_cleanup_null);
    if (g_ret->ready)
        return core_keep(s, sc, nslots, path);
    return core_setup(s, sc, nslots, path, NULL);
}
