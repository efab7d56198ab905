/* The threads of this httpd child that relay requests hold. The event MPM
 * serves a kept-alive connection only in the child that accepted it, and
 * accepts a new one into any child with a free thread: a child whose threads
 * all wait on tunnels (HTTP/2 streams and blocking waits cannot park) leaves
 * the site's pooled connections, and the relay's own short requests on them,
 * waiting for ever. So relay requests that may wait long (pull, push, duplex,
 * listen) leave RelayThreadReserve threads of each threaded child free: past
 * that they get 503 (Retry-After) and the client tries again on a new
 * connection, which may land in another child. httpd glue. */
#ifndef MOD_RH_CHILD_H
#define MOD_RH_CHILD_H

#include <httpd.h>

#include "mod_rh_config.h"

/* Threads of a child kept free of relay requests unless RelayThreadReserve
 * says otherwise (never more than ThreadsPerChild - 1). */
#define RH_DEFAULT_THREAD_RESERVE 2

/* The relay requests of this child that hold its threads may take at most
 * this many at once (0: no limit: an unthreaded MPM, or a reserve of 0). */
int rh_child_limit(const rh_srv_conf *sc);

/* A request that may wait long takes its place: 1 when it may go on (it must
 * call rh_child_leave() when the handler returns), 0 when it was answered 503. */
int rh_child_enter(request_rec *r, const rh_srv_conf *sc);
void rh_child_leave(void);

/* Warns when MinSpareThreads would let httpd stop starting children while all
 * of them are full of tunnels (their reserves count as spare threads). */
void rh_child_check_spares(server_rec *s, const rh_srv_conf *sc);

#endif
