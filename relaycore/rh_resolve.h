/* Name lookups for the relay core without blocking its loop: a few threads
 * call getaddrinfo for queued names and hand the answers back through an
 * eventfd the loop watches. Bounded: at most RH_RESOLVE_THREADS lookups run,
 * at most RH_RESOLVE_QUEUE wait; the caller times each out on its own (a
 * late answer is dropped by id). Threads start on first use, so a core that
 * never resolves has none. httpd-independent. */
#ifndef RH_RESOLVE_H
#define RH_RESOLVE_H

#include <stdint.h>

#include "rh_allow.h"
#include "rh_proto.h"

#define RH_RESOLVE_THREADS 4
#define RH_RESOLVE_QUEUE   64
#define RH_RESOLVE_ADDRS   8     /* addresses kept of an answer */

typedef struct rh_resolver rh_resolver;

typedef struct rh_resolved {
    uint64_t id;
    int err;                     /* 0, or getaddrinfo's EAI_* code */
    int n;
    rh_addr addr[RH_RESOLVE_ADDRS];
} rh_resolved;

/* NULL when out of memory or descriptors. */
rh_resolver *rh_resolver_new(void);
/* Readable when answers wait (level: until rh_resolver_take took them all). */
int rh_resolver_fd(const rh_resolver *r);
/* Queues a lookup of name; 0, or -1 when the queue is full (or no thread). */
int rh_resolver_submit(rh_resolver *r, uint64_t id, const char *name);
/* 1 with the next answer in *out, 0 when none waits. */
int rh_resolver_take(rh_resolver *r, rh_resolved *out);
/* Lets go: lookups still running finish in their threads, which free what
 * is left; nothing is answered any more. */
void rh_resolver_free(rh_resolver *r);

#endif
