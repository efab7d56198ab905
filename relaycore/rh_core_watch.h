/* WATCH (docs/PROTOCOL.md, watch): one long-poll for many idle sessions of a
 * client. The handler sends
 *     WATCH <target> <count> <poll_s> [owner=<hash>]
 * then count lines "<token> <ack>"; the core answers
 *     OK <length>
 * then length bytes of lines "<sid> data|gone", once a listed session is
 * ready (down bytes beyond its ack, or its end) or unknown here, or empty
 * after poll_s (1 s while a listed session is busy, as a batch pull). A
 * session is in one waiting watch at most: a newer watch takes it, and a
 * watch left with none answers at once, empty. A watched session's idle
 * timeout does not run; it starts again when the watch ends. */
#ifndef RH_CORE_WATCH_H
#define RH_CORE_WATCH_H

#include "rh_core_int.h"

#pragma GCC visibility push(hidden)

/* WATCH: the request line came; rest is what came behind it. */
void rh_core_watch_req(core *c, conn *k, const rh_ipc_req *rq, const unsigned char *rest,
                       size_t rest_len);
/* An event on a WATCH connection: more lines, or the handler hung up. */
void rh_core_watch_event(core *c, conn *k, uint32_t events);
/* A watched session may be ready: its pump ran, or it ends (then it is). */
void rh_core_watch_check(core *c, session *s);
/* The deadlines of watches that came: empty answers, bodies never completed. */
void rh_core_watch_timers(core *c, long now);
/* Stopping: every watch goes. */
void rh_core_watch_stop(core *c);

#pragma GCC visibility pop

#endif
