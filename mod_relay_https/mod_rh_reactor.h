/* Thread-free waiting on the event MPM (RelayAsync): a relay request that has
 * to wait (a stream pull between heartbeats, a long-poll, a push body that
 * idles) returns SUSPENDED and is *parked*: one reactor thread per child
 * watches its descriptors (the core's socket, the client's socket) and its
 * deadline in an epoll set, and when one fires hands the request to an MPM
 * worker (ap_mpm_register_timed_callback with no delay), which runs the
 * request's next step. httpd 2.4 cannot take a suspended connection back, so
 * the module also serves the connection's keep-alive requests itself and
 * closes it (lingering, in the reactor) at the end. Its shape is trunk's
 * ap_mpm_register_poll_callback_timeout(). httpd glue. */
#ifndef MOD_RH_REACTOR_H
#define MOD_RH_REACTOR_H

#include <stdint.h>
#include <httpd.h>
#include <apr_buckets.h>

#include "rh_core_timer.h"

typedef struct rh_park rh_park;

/* One step of a parked request, run on an MPM worker that has the connection
 * to itself. why: RH_WAIT_READY (a descriptor is ready), RH_WAIT_TIMEOUT,
 * RH_WAIT_GONE (the client closed) or RH_WAIT_STUCK (the core's beat aged).
 * Returns SUSPENDED to wait again (for what rh_park_watch set), else the
 * handler's answer (OK, DONE or an HTTP status), which ends the request. */
typedef int rh_step_fn(rh_park *p, void *baton, int why);

/* A wake by the watched descriptor alone that may be handled on the
 * reactor's own thread, without the hop to a worker: something short that
 * cannot block (a stream pull's heartbeat). Runs with the connection to
 * itself; returns 1 when done (the park waits again as it did), 0 to hand the
 * wake to a worker as usual. */
typedef int rh_quick_fn(rh_park *p, void *baton);

enum rh_park_state { RH_PARK_IDLE, RH_PARK_REQUEST, RH_PARK_KEEPALIVE, RH_PARK_LINGER };

struct rh_park_tag {
    rh_park *p;
    int client;             /* the client's socket, else the core's */
};

/* One per connection that went async, in its pool (c->conn_config). */
struct rh_park {
    conn_rec *c;
    request_rec *r;         /* the parked request (REQUEST state) */
    int csock;              /* the client's socket */
    int fd;                 /* the core's socket to wait on, or -1 */
    uint32_t fd_events;
    int client_in;          /* wake on the client's input too (else on its close) */
    long timeout_ms;        /* -1: none */
    rh_step_fn *fn;
    rh_quick_fn *quick;     /* NULL: every wake goes to a worker */
    void *baton;
    int state;
    int by_fd;              /* this wake: the watched descriptor alone */
    int kept;               /* out of the heap, its descriptors still in the set (quick) */
    int pending;            /* the handler returned SUSPENDED: arm once suspended */
    int armed;              /* in the reactor (only the reactor's lock changes it) */
    int failed;             /* the reactor could not watch it */
    int held;               /* counted as the module's */
    int no_fd;              /* closing: only its deadline is watched */
    long t_safe;            /* its pool may not go before (see on_suspend) */
    int why;
    int poll_idle;          /* its last batch long-poll was answered empty: the
                               next one parks at once (no RH_ASYNC_HOT_MS wait) */
    const struct rh_registry *core;  /* the table of the core it waits on; NULL: the first */
    rh_timer timer;
    struct rh_park_tag tag[2];
    rh_park *next;          /* the reactor's lists */
    apr_bucket_brigade *bb; /* the connection's flushes */
};

/* child_init (event MPM, RelayAsync on): the reactor thread, stopped with pchild. */
void rh_reactor_child_init(apr_pool_t *pchild, server_rec *s);

/* child_stopping: a graceful stop ends idle keep-alive connections. */
void rh_reactor_stopping(void);

/* Whether the reactor runs in this child. */
int rh_reactor_running(void);

/* A connection is the module's from now on (counted until destroyed). */
void rh_reactor_hold(void);

/* 1 once the child stops gracefully: no more keep-alive. */
int rh_reactor_draining(void);

/* Watches p (from any thread; p must not be armed). */
void rh_reactor_arm(rh_park *p);

/* Gives the connection up: closes it and frees its pool (any thread, p not armed). */
void rh_reactor_destroy(rh_park *p);

#endif
