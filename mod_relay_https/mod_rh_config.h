/* Directives and per-location configuration. */
#ifndef MOD_RH_CONFIG_H
#define MOD_RH_CONFIG_H

#include <httpd.h>
#include <http_config.h>
#include <apr_tables.h>

#include "rh_proto.h"
#include "rh_registry.h"

/* protocol defaults (idle, buffer, heartbeat, poll) are in rh_proto.h */
#define RH_DEFAULT_CONNECT_S    10
#define RH_DEFAULT_MAX_SESSIONS 4096
#define RH_DEFAULT_WORKERS_PCT  40      /* of MaxRequestWorkers: most stay the site's */
#define RH_DEFAULT_SESS_PER_CLIENT 256
#define RH_DEFAULT_RESUME_MEMORY (1024LL * 1024 * 1024)   /* RelayResumeMemory: 1 GiB */
#define RH_DEFAULT_OPEN_RATE    20      /* per second and client, burst twice that */
#define RH_DEFAULT_LISTENS_PER_CLIENT 32   /* a serve keeps 4 by default (--accepts) */
#define RH_DEFAULT_PUSH_WAIT_S  10
#define RH_DEFAULT_FRAME_S      10
#define RH_DEFAULT_WRITE_S      30
#define RH_DEFAULT_ASYNC        1       /* RelayAsync: parked waits where the MPM allows */

typedef struct rh_target {
    const char *name;
    const char *host;
    apr_port_t port;
    int service;                 /* RelayService: reached through a serve, no address */
    int udp;                     /* udp:HOST:PORT: datagrams (rh_dgram.h) */
} rh_target;

typedef struct rh_dir_conf {
    const char *location;        /* the <Location> path, to find the endpoint */
    apr_array_header_t *targets; /* of rh_target */
    apr_array_header_t *allows;  /* of rh_allow_rule: RelayAllow, destinations per connection */
    int bufsize;                 /* -1: unset */
    int window;                  /* -1: unset */
    int idle_s;
    int connect_s;
    int poll_s;
    int udp_idle_s;              /* RelayUDPIdleTimeout; -1: unset */
    int udp_queue;               /* RelayUDPQueue; -1: unset */
} rh_dir_conf;

typedef struct rh_srv_conf {
    int max_sessions;            /* 0: unset */
    int core_procs;              /* RelayCoreProcesses: N; 0: auto (unset) */
    const char *socket_path;
    /* the relay's budget (global; -1: unset, see rh_srv_limits) */
    int max_workers;             /* a number, or a percentage of MaxRequestWorkers ... */
    int max_workers_pct;         /* ... when this is set */
    int sessions_per_client;
    int requests_per_client;
    int open_rate;
    int listens_per_client;      /* rendezvous: listens waiting at once */
    int push_wait_s;
    int frame_s;                 /* a started body frame completes within this */
    int write_s;                 /* a response the client does not read is cut after */
    long long rate_session;      /* bytes/s per session (RelayRateLimit); -1: unset */
    long long rate_global;       /* bytes/s for all (RelayGlobalRateLimit) */
    long long resume_memory;     /* RelayResumeMemory: bytes; -1: unset */
    int async;                   /* RelayAsync: 1 on, 0 off, -1 unset */
    int thread_reserve;          /* RelayThreadReserve: threads per child; -1 unset */
    int nice;                    /* RelayNice: added to the relay's nice value; -1 unset */
} rh_srv_conf;

extern const command_rec rh_cmds[];

#define RH_DEFAULT_NICE 5        /* RelayNice */
int rh_srv_nice(const rh_srv_conf *sc);

void *rh_create_dir_conf(apr_pool_t *p, char *dir);
void *rh_merge_dir_conf(apr_pool_t *p, void *base, void *add);
void *rh_create_srv_conf(apr_pool_t *p, server_rec *s);
void *rh_merge_srv_conf(apr_pool_t *p, void *base, void *add);

const rh_target *rh_find_target(const rh_dir_conf *dc, const char *name);
/* The location lets clients name destinations (it has a RelayAllow). */
int rh_dir_allows(const rh_dir_conf *dc);
int rh_dir_bufsize(const rh_dir_conf *dc);
int rh_dir_window(const rh_dir_conf *dc);
int rh_dir_idle(const rh_dir_conf *dc);
int rh_dir_connect(const rh_dir_conf *dc);
int rh_dir_poll(const rh_dir_conf *dc);
/* The limits in force (defaults filled in); the MPM must be configured. */
void rh_srv_limits(const rh_srv_conf *sc, rh_limits *out);
int rh_srv_frame_s(const rh_srv_conf *sc);
/* RelayResumeMemory in force: bytes resume windows may hold in all (0: no bound);
 * one client may hold half of it. */
uint64_t rh_srv_resume_memory(const rh_srv_conf *sc);
int rh_srv_write_s(const rh_srv_conf *sc);
/* RelayAsync in force: waits parked in the reactor where the MPM allows it. */
int rh_srv_async(const rh_srv_conf *sc);

#endif
