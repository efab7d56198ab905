/* The relay core: one single-threaded event loop that owns every session's
 * target socket and buffers. httpd children talk to it over a unix socket
 * (rh_ipc.h); it publishes sessions in the shared registry (rh_registry.h).
 * httpd-independent: C99, POSIX and Linux epoll. */
#ifndef RH_CORE_H
#define RH_CORE_H

#include "rh_registry.h"

/* Exit status for a start-up failure: the supervisor must not respawn. */
#define RH_CORE_EXIT_FATAL 17

enum { RH_LOG_ERR = 3, RH_LOG_WARN = 4, RH_LOG_INFO = 6, RH_LOG_DEBUG = 7 };

typedef void rh_core_log_fn(void *ctx, int level, const char *msg);
/* After a restart of httpd: the new error log (a descriptor the callback now
 * owns; -1: none) and httpd's log level for the module. Returns the RH_LOG_*
 * level the core logs at from now on. */
typedef int rh_core_relog_fn(void *ctx, int fd, int httpd_level);

typedef struct rh_core_config {
    int listen_fd;          /* bound and listening AF_UNIX stream socket */
    rh_registry *reg;       /* formatted registry in shared memory */
    rh_registry_ext *ext;   /* its extension (the watch's figures); NULL: none */
    int heartbeat_s;        /* H frame on a pull idle this long */
    rh_core_log_fn *log;
    void *log_ctx;
    int log_level;          /* highest level passed to log (at start) */
    rh_core_relog_fn *relog;   /* LOGS from the httpd parent; NULL: refused */
} rh_core_config;

/* Runs until rh_core_request_stop(); returns 0, or RH_CORE_EXIT_FATAL when it
 * could not start. Resets all its sessions before returning. */
int rh_core_run(const rh_core_config *cfg);

/* Async-signal-safe: asks a running rh_core_run() to end. */
void rh_core_request_stop(void);

#endif
