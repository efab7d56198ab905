/* Every wait of the handler on the relay core also watches the client and the
 * core: a client that went away frees its worker at once, and a core that
 * stopped or hangs (its heartbeat in the registry ages) gets the request a 503
 * within seconds, whatever the wait was for (a push's turn, a long-poll, room
 * in the core, bytes to pull). httpd glue. */
#ifndef MOD_RH_WAIT_H
#define MOD_RH_WAIT_H

#include <poll.h>
#include <httpd.h>

#include "rh_util.h"

#define RH_WAIT_SLICE_MS   500      /* client and core are looked at this often */
#define RH_CORE_STUCK_MS   3000     /* a core beat older than this: stopped or stuck */

enum {
    RH_WAIT_TIMEOUT = 0,
    RH_WAIT_READY = 1,
    RH_WAIT_GONE = -1,              /* the client went away (or the stream was reset) */
    RH_WAIT_STUCK = -2              /* the core is stopped or stuck */
};

struct rh_registry;

typedef struct rh_watch {
    conn_rec *c;
    int sock;                       /* the client's socket (HTTP/1.1), or -1 */
    const struct rh_registry *core; /* the table of the core waited on; NULL: the first */
} rh_watch;

void rh_watch_init(rh_watch *w, conn_rec *c);

/* 1 when the core of table reg (NULL: the first core) has not renewed its
 * heartbeat for RH_CORE_STUCK_MS: stopped, stuck or dead. */
int rh_core_stuck(const struct rh_registry *reg);
/* 1 when any core is (a cheap test before looking at each waiting request). */
int rh_any_core_stuck(void);


/* 1 when the client went away (checked without waiting). */
int rh_watch_gone(rh_watch *w);

/* Waits for events on fd (and on extra, may be NULL) for at most timeout_ms
 * (-1: no limit of its own). Returns RH_WAIT_READY (revents set), RH_WAIT_TIMEOUT,
 * RH_WAIT_GONE or RH_WAIT_STUCK. */
int rh_watch_poll(rh_watch *w, struct pollfd *pf, int npf, int timeout_ms);

/* Reads one line from the core (nothing past it) within timeout_ms, watching.
 * Returns its length, or an RH_WAIT_* value (0 never: a timeout is TIMEOUT). */
int rh_watch_line(rh_watch *w, int fd, char *buf, size_t max, int timeout_ms);

#endif
