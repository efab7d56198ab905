/* A relay request's waits without a thread (RelayAsync, see mod_rh_reactor.h):
 * whether a request may park, parking it, and the life of its connection once
 * httpd has let go of it: the request's steps and end, the connection's next
 * requests (keep-alive) and its close. httpd glue. */
#ifndef MOD_RH_ASYNC_H
#define MOD_RH_ASYNC_H

#include <httpd.h>

#include "mod_rh_config.h"
#include "mod_rh_reactor.h"

/* The connection's park when r may wait parked (RelayAsync on, the event MPM,
 * HTTP/1.1, the main request), else NULL: the caller waits on its thread. */
rh_park *rh_async_park(request_rec *r);
/* 1 when r may park (the conditions above), without taking the park. */
int rh_async_may_park(request_rec *r, const rh_srv_conf *sc);

/* What the parked request waits for next: fd (-1: none) for events (POLLIN,
 * POLLOUT), the client's close (or its input, with client_in), at most
 * timeout_ms (-1: no limit of its own). */
void rh_park_watch(rh_park *p, int fd, short events, int client_in, long timeout_ms);

/* The wait rh_park_watch set may be ended on the reactor's thread by quick
 * (see rh_quick_fn) when the descriptor alone woke it; set after
 * rh_park_watch, which forgets it. */
void rh_park_quick(rh_park *p, rh_quick_fn *quick);

/* On the reactor's thread: a wake by the descriptor alone, offered to the
 * park's quick function; when that handled it the park waits again as after
 * a step that returned SUSPENDED. 1 if handled, 0: a worker runs the step. */
int rh_async_quick(rh_park *p);

/* The handler parks r: fn runs on a worker whenever the wait ends; core is
 * the table of the core it waits on (its beat is watched; NULL: the first).
 * Returns SUSPENDED, what the handler returns. */
struct rh_registry;
int rh_async_suspend(rh_park *p, request_rec *r, const struct rh_registry *core,
                     rh_step_fn *fn, void *baton);

/* A wait parks only after this much quiet: a busy tunnel keeps its thread
 * (as without RelayAsync) and skips the hop through the reactor and the
 * MPM's timer queue, whose latency an echo would pay at every step. */
#define RH_ASYNC_HOT_MS 20

/* Waits on fd for events (the client's input when fd is the client's) for
 * RH_ASYNC_HOT_MS at most, watching the client and the core: an RH_WAIT_*. */
struct rh_watch;
int rh_async_hot(struct rh_watch *w, int fd, short events);

/* The MPM worker's callback: the park's wait ended. */
void rh_async_run(void *baton);

/* Hooks: child_init (the reactor), child_stopping, suspend_connection. */
void rh_async_register_hooks(void);

#endif
