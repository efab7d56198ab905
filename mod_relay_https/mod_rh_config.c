/* The directives (RelayTarget, timeouts, the budget) and their per-location and
 * per-server configuration, merged the httpd way; defaults from rh_proto.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_network_io.h>
#include <http_core.h>
#include <ap_mpm.h>

#include "mod_rh_private.h"
#include "mod_rh_check.h"
#include "mod_rh_config.h"
#include "mod_rh_daemon.h"
#include "rh_allow.h"
#include "rh_registry.h"
#include "rh_shard.h"
#include "rh_util.h"

void *rh_create_dir_conf(apr_pool_t *p, char *dir)
{
    rh_dir_conf *dc = apr_pcalloc(p, sizeof(*dc));
    dc->location = dir ? apr_pstrdup(p, dir) : NULL;
    dc->targets = apr_array_make(p, 4, sizeof(rh_target));
    dc->allows = apr_array_make(p, 2, sizeof(rh_allow_rule));
    dc->bufsize = dc->window = dc->idle_s = dc->connect_s = dc->poll_s = -1;
    dc->udp_idle_s = dc->udp_queue = -1;
    return dc;
}

void *rh_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    rh_dir_conf *base = basev, *add = addv;
    rh_dir_conf *dc = apr_pcalloc(p, sizeof(*dc));
    /* an inner <Location> without targets (a Require on BASE/NAME/listen, say)
     * keeps the relay location's path, where the endpoints are counted from */
    dc->location = add->location && (add->targets->nelts || add->allows->nelts
                                     || !base->location)
                 ? add->location : base->location;
    /* inner sections add targets and may redefine a name of an outer one */
    dc->targets = apr_array_copy(p, add->targets);
    for (int i = 0; i < base->targets->nelts; ++i) {
        const rh_target *t = &APR_ARRAY_IDX(base->targets, i, rh_target);
        if (!rh_find_target(add, t->name))
            APR_ARRAY_PUSH(dc->targets, rh_target) = *t;
    }
    /* RelayAllow adds up: an inner section allows more, never less */
    dc->allows = apr_array_append(p, base->allows, add->allows);
    dc->bufsize = add->bufsize >= 0 ? add->bufsize : base->bufsize;
    dc->window = add->window >= 0 ? add->window : base->window;
    dc->idle_s = add->idle_s >= 0 ? add->idle_s : base->idle_s;
    dc->connect_s = add->connect_s >= 0 ? add->connect_s : base->connect_s;
    dc->poll_s = add->poll_s >= 0 ? add->poll_s : base->poll_s;
    dc->udp_idle_s = add->udp_idle_s >= 0 ? add->udp_idle_s : base->udp_idle_s;
    dc->udp_queue = add->udp_queue >= 0 ? add->udp_queue : base->udp_queue;
    return dc;
}

void *rh_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    rh_srv_conf *sc = apr_pcalloc(p, sizeof(rh_srv_conf));
    sc->max_workers = sc->max_workers_pct = -1;
    sc->sessions_per_client = sc->requests_per_client = sc->open_rate = -1;
    sc->listens_per_client = -1;
    sc->push_wait_s = sc->frame_s = sc->write_s = -1;
    sc->rate_session = sc->rate_global = sc->resume_memory = -1;
    sc->async = -1;
    sc->thread_reserve = -1;
    sc->nice = -1;
    return sc;
}

#define MERGE_INT(f) sc->f = add->f >= 0 ? add->f : base->f

void *rh_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    rh_srv_conf *base = basev, *add = addv;
    rh_srv_conf *sc = apr_pcalloc(p, sizeof(*sc));
    sc->max_sessions = add->max_sessions ? add->max_sessions : base->max_sessions;
    sc->socket_path = add->socket_path ? add->socket_path : base->socket_path;
    sc->core_procs = add->core_procs ? add->core_procs : base->core_procs;
    if (add->max_workers >= 0 || add->max_workers_pct >= 0) {
        sc->max_workers = add->max_workers;
        sc->max_workers_pct = add->max_workers_pct;
    } else {
        sc->max_workers = base->max_workers;
        sc->max_workers_pct = base->max_workers_pct;
    }
    MERGE_INT(sessions_per_client);
    MERGE_INT(requests_per_client);
    MERGE_INT(open_rate);
    MERGE_INT(listens_per_client);
    MERGE_INT(push_wait_s);
    MERGE_INT(frame_s);
    MERGE_INT(write_s);
    MERGE_INT(rate_session);
    MERGE_INT(rate_global);
    MERGE_INT(resume_memory);
    MERGE_INT(async);
    MERGE_INT(thread_reserve);
    MERGE_INT(nice);
    return sc;
}

static int mpm_workers(void)
{
    int daemons = 0, threads = 0;
    ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    if (daemons < 1)
        daemons = 1;
    return daemons * (threads > 1 ? threads : 1);
}

void rh_srv_limits(const rh_srv_conf *sc, rh_limits *out)
{
    int pct = sc->max_workers >= 0 ? -1
            : sc->max_workers_pct >= 0 ? sc->max_workers_pct : RH_DEFAULT_WORKERS_PCT;
    long workers = pct >= 0 ? (long)mpm_workers() * pct / 100 : sc->max_workers;
    if (pct > 0 && workers < 1)
        workers = 1;
    out->max_workers = (uint32_t)workers;
    out->requests_per_client = sc->requests_per_client >= 0 ? (uint32_t)sc->requests_per_client
                             : (uint32_t)(workers / 2 > 0 ? workers / 2 : workers);
    out->sessions_per_client = sc->sessions_per_client >= 0
                             ? (uint32_t)sc->sessions_per_client : RH_DEFAULT_SESS_PER_CLIENT;
    out->open_rate = sc->open_rate >= 0 ? (uint32_t)sc->open_rate : RH_DEFAULT_OPEN_RATE;
    out->listens_per_client = sc->listens_per_client >= 0 ? (uint32_t)sc->listens_per_client
                                                          : RH_DEFAULT_LISTENS_PER_CLIENT;
    out->push_wait_s = sc->push_wait_s >= 0 ? (uint32_t)sc->push_wait_s
                                            : RH_DEFAULT_PUSH_WAIT_S;
    out->rate_session = sc->rate_session > 0 ? (uint32_t)sc->rate_session : 0;
    out->rate_global = sc->rate_global > 0 ? (uint32_t)sc->rate_global : 0;
}

uint64_t rh_srv_resume_memory(const rh_srv_conf *sc)
{
    return (uint64_t)(sc->resume_memory >= 0 ? sc->resume_memory : RH_DEFAULT_RESUME_MEMORY);
}

int rh_srv_frame_s(const rh_srv_conf *sc)
{
    return sc->frame_s > 0 ? sc->frame_s : RH_DEFAULT_FRAME_S;
}

int rh_srv_write_s(const rh_srv_conf *sc)
{
    return sc->write_s > 0 ? sc->write_s : RH_DEFAULT_WRITE_S;
}

int rh_srv_async(const rh_srv_conf *sc)
{
    return sc->async >= 0 ? sc->async : RH_DEFAULT_ASYNC;
}

const rh_target *rh_find_target(const rh_dir_conf *dc, const char *name)
{
    for (int i = 0; i < dc->targets->nelts; ++i) {
        const rh_target *t = &APR_ARRAY_IDX(dc->targets, i, rh_target);
        if (!strcmp(t->name, name))
            return t;
    }
    return NULL;
}

int rh_dir_allows(const rh_dir_conf *dc)
{
    return dc->allows && dc->allows->nelts > 0;
}

int rh_dir_bufsize(const rh_dir_conf *dc)
{
    return dc->bufsize > 0 ? dc->bufsize : RH_DEFAULT_BUFSIZE;
}

int rh_dir_window(const rh_dir_conf *dc)
{
    return dc->window >= 0 ? dc->window : RH_DEFAULT_WINDOW;
}

int rh_dir_idle(const rh_dir_conf *dc)
{
    return dc->idle_s > 0 ? dc->idle_s : RH_DEFAULT_IDLE_S;
}

int rh_dir_connect(const rh_dir_conf *dc)
{
    return dc->connect_s > 0 ? dc->connect_s : RH_DEFAULT_CONNECT_S;
}

/* A long-poll answers well before the session would be idle: with
 * RelayIdleTimeout set low and RelayPollTimeout left alone, the poll follows
 * (both set the other way round is refused at configtest, mod_rh_check.c). */
int rh_dir_poll(const rh_dir_conf *dc)
{
    int poll = dc->poll_s > 0 ? dc->poll_s : RH_DEFAULT_POLL_S;
    int half_idle = rh_dir_idle(dc) / 2;
    return poll > half_idle && dc->poll_s <= 0 ? (half_idle > 0 ? half_idle : 1) : poll;
}

static const char *set_target(cmd_parms *cmd, void *dcv, const char *name, const char *addr)
{
    rh_dir_conf *dc = dcv;
    char *host = NULL, *scope = NULL;
    apr_port_t port = 0;
    int udp = !strncasecmp(addr, "udp:", 4);

    if (udp || !strncasecmp(addr, "tcp:", 4))
        addr += 4;

    if (!rh_valid_target_name(name))
        return apr_psprintf(cmd->pool, "RelayTarget: invalid name '%s' (use 1-%d of "
                            "A-Z a-z 0-9 . _ -)", name, RH_TARGET_MAX - 1);
    if (rh_find_target(dc, name))
        return apr_psprintf(cmd->pool, "RelayTarget: duplicate name '%s' in this section",
                            name);
    if (apr_parse_addr_port(&host, &scope, &port, addr, cmd->pool) != APR_SUCCESS
        || !host || port == 0 || scope)
        return apr_psprintf(cmd->pool, "RelayTarget %s: '%s' is not [udp:]HOST:PORT "
                            "(e.g. 127.0.0.1:22, [::1]:22 or udp:127.0.0.1:53)", name, addr);
    rh_target *t = apr_array_push(dc->targets);
    t->name = apr_pstrdup(cmd->pool, name);
    t->host = host;
    t->port = port;
    t->service = 0;
    t->udp = udp;
    rh_check_note_target(cmd);
    return NULL;
}

/* RelayService NAME: a rendezvous point that clients open like a target and
 * serves reach through BASE/NAME/listen. */
static const char *set_service(cmd_parms *cmd, void *dcv, const char *name)
{
    rh_dir_conf *dc = dcv;
    if (!rh_valid_target_name(name))
        return apr_psprintf(cmd->pool, "RelayService: invalid name '%s' (use 1-%d of "
                            "A-Z a-z 0-9 . _ -)", name, RH_TARGET_MAX - 1);
    if (rh_find_target(dc, name))
        return apr_psprintf(cmd->pool, "RelayService: '%s' already names a target or "
                            "service in this section", name);
    rh_target *t = apr_array_push(dc->targets);
    t->name = apr_pstrdup(cmd->pool, name);
    t->host = NULL;
    t->port = 0;
    t->service = 1;
    return NULL;
}

/* RelayAllow HOST-PATTERN PORTS: destinations clients may name per
 * connection (rh_allow.h); a malformed one fails the configtest with why. */
static const char *set_allow(cmd_parms *cmd, void *dcv, const char *host, const char *ports)
{
    rh_dir_conf *dc = dcv;
    char err[256];
    rh_allow_rule *r = apr_array_push(dc->allows);
    if (rh_allow_parse(r, host, ports, err, sizeof(err)) != 0) {
        --dc->allows->nelts;
        return apr_psprintf(cmd->pool, "RelayAllow %s %s: %s", host, ports, err);
    }
    rh_check_note_target(cmd);
    return NULL;
}

static const char *set_int(cmd_parms *cmd, const char *arg, long min, long max, int *out)
{
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);
    if (!*arg || *end || v < min || v > max)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number from %ld to %ld",
                            cmd->cmd->name, arg, min, max);
    *out = (int)v;
    return NULL;
}

/* A per-directory number from min to max. */
#define DIR_INT(fn, field, min, max)                                         \
    static const char *fn(cmd_parms *cmd, void *dcv, const char *arg)        \
    {                                                                        \
        return set_int(cmd, arg, min, max, &((rh_dir_conf *)dcv)->field);    \
    }
DIR_INT(set_bufsize, bufsize, 4096, 64L * 1024 * 1024)
DIR_INT(set_window, window, 0, 256L * 1024 * 1024)
DIR_INT(set_udp_idle, udp_idle_s, 1, 86400)
DIR_INT(set_udp_queue, udp_queue, 1, 65536)
DIR_INT(set_connect, connect_s, 1, 3600)

static const char *set_idle(cmd_parms *cmd, void *dcv, const char *arg)
{
    const char *err = set_int(cmd, arg, 1, 7L * 86400, &((rh_dir_conf *)dcv)->idle_s);
    if (!err)
        rh_check_note_timeout(cmd, 1, ((rh_dir_conf *)dcv)->idle_s);
    return err;
}

static const char *set_poll(cmd_parms *cmd, void *dcv, const char *arg)
{
    const char *err = set_int(cmd, arg, 1, 3600, &((rh_dir_conf *)dcv)->poll_s);
    if (!err)
        rh_check_note_timeout(cmd, 0, ((rh_dir_conf *)dcv)->poll_s);
    return err;
}

static rh_srv_conf *global_conf(cmd_parms *cmd, const char **err);

static const char *set_socket(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    if (err)
        return err;
    sc->socket_path = ap_runtime_dir_relative(cmd->pool, arg);
    if (!sc->socket_path || strlen(sc->socket_path) > rh_daemon_socket_path_max())
        return apr_psprintf(cmd->pool, "RelaySocket: the path %s is too long for a unix "
                            "socket (at most %" APR_SIZE_T_FMT " characters, so that upgrades and several "
                            "cores can add a suffix)", sc->socket_path ? sc->socket_path : arg,
                            rh_daemon_socket_path_max());
    return NULL;
}

/* RelayCoreProcesses N|auto (auto: as many as RelayMaxSessions needs under
 * the descriptor limit, see rh_shard_auto) */
static const char *set_core_procs(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    if (err)
        return err;
    if (!ap_cstr_casecmp(arg, "auto")) {
        sc->core_procs = 0;
        return NULL;
    }
    return set_int(cmd, arg, 1, RH_SHARDS_MAX, &sc->core_procs);
}

static rh_srv_conf *global_conf(cmd_parms *cmd, const char **err)
{
    *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    return ap_get_module_config(cmd->server->module_config, &relay_https_module);
}

static const char *set_max_workers(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    size_t n = strlen(arg);
    if (err)
        return err;
    if (n > 1 && arg[n - 1] == '%') {
        sc->max_workers = -1;
        return set_int(cmd, apr_pstrndup(cmd->pool, arg, n - 1), 1, 100,
                       &sc->max_workers_pct);
    }
    sc->max_workers_pct = -1;
    return set_int(cmd, arg, 0, 1000000, &sc->max_workers);
}

/* A server-wide integer directive: the field at off of the global config. */
static const char *set_global_int(cmd_parms *cmd, const char *arg, int lo, int hi, size_t off)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    if (err)
        return err;
    return set_int(cmd, arg, lo, hi, (int *)(void *)((char *)sc + off));
}

static const char *set_thread_reserve(cmd_parms *cmd, void *dummy, const char *arg)
{
    (void)dummy;
    return set_global_int(cmd, arg, 0, 100000, APR_OFFSETOF(rh_srv_conf, thread_reserve));
}

static const char *set_nice(cmd_parms *cmd, void *dummy, const char *arg)
{
    (void)dummy;
    return set_global_int(cmd, arg, 0, 19, APR_OFFSETOF(rh_srv_conf, nice));
}

int rh_srv_nice(const rh_srv_conf *sc)
{
    return sc->nice >= 0 ? sc->nice : RH_DEFAULT_NICE;
}

static const char *set_async(cmd_parms *cmd, void *dummy, int on)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    (void)dummy;
    if (err)
        return err;
    sc->async = on;
    rh_check_note_async(cmd, on);
    return NULL;
}

/* A count of bytes with an optional K, M, G or T (binary multiples), at most
 * max; what says what it is in the error. */
static const char *parse_bytes(cmd_parms *cmd, const char *arg, long long max,
                               const char *what, long long *out)
{
    static const char units[] = "KMGT";
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    long long mult = 1;
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u) {
        mult = 1LL << (10 * (int)(u - units + 1));
        ++end;
    }
    if (errno || end == arg || *end || v < 0 || v > max / mult)
        return apr_psprintf(cmd->pool, "%s: '%s' is not %s", cmd->directive->directive, arg,
                            what);
    *out = v * mult;
    return NULL;
}

/* A rate in bytes per second, as strelaysrv's -per-session-rate and
 * -global-rate; 0: no limit. */
static const char *set_rate(cmd_parms *cmd, const char *arg, long long *out)
{
    return parse_bytes(cmd, arg, 4294967295LL, "a rate in bytes per second (e.g. 1048576 or "
                       "1M; 0: no limit; at most 4G-1)", out);
}

static const char *set_resume_memory(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    rh_srv_conf *sc = global_conf(cmd, &err);
    return err ? err : parse_bytes(cmd, arg, 1LL << 50, "a size in bytes (e.g. 512M or "
                                   "2G; 0: no bound; at most 1024T)", &sc->resume_memory);
}

#define GLOBAL_RATE(fn, field)                                               \
    static const char *fn(cmd_parms *cmd, void *dummy, const char *arg)      \
    {                                                                        \
        const char *err;                                                     \
        rh_srv_conf *sc = global_conf(cmd, &err);                            \
        return err ? err : set_rate(cmd, arg, &sc->field);                   \
    }
GLOBAL_RATE(set_rate_session, rate_session)
GLOBAL_RATE(set_rate_global, rate_global)

#define GLOBAL_INT(fn, field, min, max)                                      \
    static const char *fn(cmd_parms *cmd, void *dummy, const char *arg)      \
    {                                                                        \
        const char *err;                                                     \
        rh_srv_conf *sc = global_conf(cmd, &err);                            \
        return err ? err : set_int(cmd, arg, min, max, &sc->field);          \
    }
GLOBAL_INT(set_max_sessions, max_sessions, 1, 1000000)
GLOBAL_INT(set_sess_per_client, sessions_per_client, 0, 1000000)
GLOBAL_INT(set_req_per_client, requests_per_client, 0, 1000000)
GLOBAL_INT(set_open_rate, open_rate, 0, 1000000)
GLOBAL_INT(set_listens_per_client, listens_per_client, 0, 1000000)
GLOBAL_INT(set_push_wait, push_wait_s, 1, 3600)
GLOBAL_INT(set_frame_timeout, frame_s, 1, 3600)
GLOBAL_INT(set_write_timeout, write_s, 1, 3600)

const command_rec rh_cmds[] = {
    AP_INIT_TAKE2("RelayTarget", set_target, NULL, RSRC_CONF | ACCESS_CONF,
                  "RelayTarget NAME [udp:]HOST:PORT - a TCP (or UDP) service clients may "
                  "reach by NAME"),
    AP_INIT_TAKE2("RelayAllow", set_allow, NULL, RSRC_CONF | ACCESS_CONF,
                  "RelayAllow HOST-PATTERN PORTS - destinations clients may name per "
                  "connection: a name, *.domain, an address or CIDR block; a port, N-M or "
                  "a comma list"),
    AP_INIT_TAKE1("RelayService", set_service, NULL, RSRC_CONF | ACCESS_CONF,
                  "RelayService NAME - a rendezvous: clients reach by NAME what a "
                  "'relay-https serve' offers (who may serve: Require on BASE/NAME/listen)"),
    AP_INIT_TAKE1("RelayResumeWindow", set_window, NULL, RSRC_CONF | ACCESS_CONF,
                  "bytes sent but not yet acknowledged a resumable session may keep, "
                  "per session (default 16777216; 0: no resume)"),
    AP_INIT_TAKE1("RelayBufferSize", set_bufsize, NULL, RSRC_CONF | ACCESS_CONF,
                  "bytes buffered per session and direction (default 262144)"),
    AP_INIT_TAKE1("RelayIdleTimeout", set_idle, NULL, RSRC_CONF | ACCESS_CONF,
                  "seconds a session may go unheard from before it is closed (default 300)"),
    AP_INIT_TAKE1("RelayUDPIdleTimeout", set_udp_idle, NULL, RSRC_CONF | ACCESS_CONF,
                  "seconds a session to a udp: target lasts without a datagram either way "
                  "(default 60)"),
    AP_INIT_TAKE1("RelayUDPQueue", set_udp_queue, NULL, RSRC_CONF | ACCESS_CONF,
                  "datagrams of a udp: session waiting per direction; beyond, the oldest "
                  "is dropped and counted (default 256)"),
    AP_INIT_TAKE1("RelayConnectTimeout", set_connect, NULL, RSRC_CONF | ACCESS_CONF,
                  "seconds to wait for a target to accept a connection (default 10)"),
    AP_INIT_TAKE1("RelayPollTimeout", set_poll, NULL, RSRC_CONF | ACCESS_CONF,
                  "seconds a batch pull waits for data before it answers empty (default 25)"),
    AP_INIT_TAKE1("RelayMaxSessions", set_max_sessions, NULL, RSRC_CONF,
                  "size of the shared session table (default 4096)"),
    AP_INIT_TAKE1("RelayCoreProcesses", set_core_procs, NULL, RSRC_CONF,
                  "relay core processes sharing the sessions, or auto: enough for "
                  "RelayMaxSessions at 3 descriptors each under the hard RLIMIT_NOFILE "
                  "(default auto, at most 64)"),
    AP_INIT_TAKE1("RelaySocket", set_socket, NULL, RSRC_CONF,
                  "path of the relay core's unix socket (default in DefaultRuntimeDir)"),
    AP_INIT_TAKE1("RelayMaxWorkers", set_max_workers, NULL, RSRC_CONF,
                  "relay requests in flight at once, a number or N% of MaxRequestWorkers "
                  "(default 40%; 0: no limit)"),
    AP_INIT_TAKE1("RelayMaxSessionsPerClient", set_sess_per_client, NULL, RSRC_CONF,
                  "sessions one client (user, else address) may hold (default 256; 0: no "
                  "limit)"),
    AP_INIT_TAKE1("RelayMaxRequestsPerClient", set_req_per_client, NULL, RSRC_CONF,
                  "relay requests one client may have in flight (default: half of "
                  "RelayMaxWorkers; 0: no limit)"),
    AP_INIT_TAKE1("RelayOpenRate", set_open_rate, NULL, RSRC_CONF,
                  "sessions one client may open per second, twice that in a burst (default "
                  "20; 0: no limit)"),
    AP_INIT_TAKE1("RelayMaxListensPerClient", set_listens_per_client, NULL, RSRC_CONF,
                  "listens (relay-https serve's waiting accepts) one client may keep "
                  "waiting at once, all services together (default 32; 0: no limit)"),
    AP_INIT_TAKE1("RelayPushWait", set_push_wait, NULL, RSRC_CONF,
                  "seconds a push ahead of the accepted offset waits for its turn "
                  "(default 10)"),
    AP_INIT_TAKE1("RelayFrameTimeout", set_frame_timeout, NULL, RSRC_CONF,
                  "seconds a started frame of a request body may take to arrive whole "
                  "(default 10)"),
    AP_INIT_TAKE1("RelayWriteTimeout", set_write_timeout, NULL, RSRC_CONF,
                  "seconds a response may wait for its client to read (default 30)"),
    AP_INIT_TAKE1("RelayRateLimit", set_rate_session, NULL, RSRC_CONF,
                  "bytes per second one session may move, both ways together, with a "
                  "burst of twice that (K, M, G suffixes; default 0: no limit)"),
    AP_INIT_TAKE1("RelayGlobalRateLimit", set_rate_global, NULL, RSRC_CONF,
                  "bytes per second all sessions together may move, with a burst of "
                  "twice that (K, M, G suffixes; default 0: no limit)"),
    AP_INIT_TAKE1("RelayResumeMemory", set_resume_memory, NULL, RSRC_CONF,
                  "bytes the resume windows of all sessions may hold together, half of "
                  "that for one client; a session waits for room beyond (K, M, G, T "
                  "suffixes; default 1G; 0: no bound)"),
    AP_INIT_FLAG("RelayAsync", set_async, NULL, RSRC_CONF,
                 "On: on the event MPM, HTTP/1.1 relay requests wait parked in one reactor "
                 "thread per child, not on a thread each (default On; prefork, worker and "
                 "HTTP/2 always wait on a thread)"),
    AP_INIT_TAKE1("RelayThreadReserve", set_thread_reserve, NULL, RSRC_CONF,
                  "threads of each httpd child that relay requests which may wait long "
                  "(pull, push, duplex, listen) leave free for the site and short requests; "
                  "503 beyond (default 2; 0: none; threaded MPMs only)"),
    AP_INIT_TAKE1("RelayNice", set_nice, NULL, RSRC_CONF,
                  "added to the nice value of relay requests' threads and of the "
                  "relay cores, so that the site beside them comes first (0-19; default 5; 0: off)"),
    { NULL }
};
