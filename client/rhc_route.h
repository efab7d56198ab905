/* relay-https client: a route, what the tunnels of one -L (or of stdio) share:
 * their options (server, target, credentials, transport), what auto learned
 * about the path to that server (struct rhc_policy), and their counters. The
 * context owns its routes (rhc_ctx_add_route) and can list them. */
#ifndef RHC_ROUTE_H
#define RHC_ROUTE_H

#include <stdint.h>

#include "rhc_check.h"
#include "rhc_choose.h"
#include "rhc_opts.h"
#include "rhc_tunnel.h"

/* Bytes through, and what they were at the last report (rates between reports). */
struct rhc_bytes {
    uint64_t up;                /* confirmed by the server */
    uint64_t down;              /* written to the local side */
    uint64_t up_last, down_last;
};

/* What the statistics show of a route (rhc_stats.c counts). */
struct rhc_counters {
    struct rhc_bytes bytes;
    uint64_t open_now;          /* tunnels alive */
    uint64_t opened;            /* tunnels started */
    uint64_t failed;            /* ... that ended with an error */
    uint64_t lost;              /* ... of which the session was lost (exit code 9) */
    uint64_t resumes;           /* requests taken up again after a cut */
    uint64_t sessions[RHC_XP_BATCH + 1];  /* by the transport first chosen (down side) */
    uint64_t dgrams[4];         /* -L udp: datagrams up, down, dropped up, dropped down */
    uint64_t watched;           /* idle tunnels waiting in a watch now ... */
    uint64_t watches;           /* ... and watch requests sent (rhc_xp_watch.c) */
};

struct rhc_route {
    const struct rhc_opts *o;
    char name[64];              /* for logs and statistics */
    struct rhc_policy pol;      /* auto: what later sessions of this route start with */
    struct rhc_counters n;
    struct rhc_route *next;     /* the context's list */
    struct rhc_ratelog fails;   /* failed opens, for one line a while (rhc_check.h) */
    struct rhc_watch *watch;    /* its idle tunnels' watch (rhc_xp_watch.c); NULL:
                                   none (--no-watch, serve) */
};

void rhc_route_init(struct rhc_route *r, const struct rhc_opts *o, const char *name);

/* A new route owned by the context (freed by rhc_ctx_free, after its tunnels),
 * kept in the order added; NULL when out of memory. With -v it says which
 * proxy its requests go through. */
struct rhc_route *rhc_ctx_add_route(rhc_ctx *c, const struct rhc_opts *o, const char *name);

/* The routes of the context, in the order added (NULL: none). */
struct rhc_route *rhc_ctx_routes(const rhc_ctx *c);

void rhc_ctx_free_routes(rhc_ctx *c);

#endif
