/* What the relay did, for the status page (strelaysrv's vocabulary) and
 * mod_status: kept in the registry's shared memory, so any httpd child can
 * show it without asking the core. The core writes the totals and the
 * per-second history at its heartbeat; the handlers count requests and
 * refusals by kind with atomic adds. httpd-independent. */
#ifndef RH_STATS_H
#define RH_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "rh_proto.h"

#define RH_STATS_HIST     3601   /* seconds of byte totals: rates up to 60 min */
#define RH_STATS_TARGETS  32     /* targets counted by name; the rest as "(other)" */

/* requests by transport, as the handler sees them */
enum {
    RH_XP_PUSH_STREAM = 0, RH_XP_PUSH_BATCH, RH_XP_PULL_STREAM, RH_XP_PULL_BATCH,
    RH_XP_DUPLEX, RH_XP_N
};
/* refusals by why (the status class a client gets) */
enum {
    RH_REFUSE_BUSY = 0,        /* 503: the relay's budget, the table, the core */
    RH_REFUSE_CLIENT,          /* 429: this client's share */
    RH_REFUSE_TARGET,          /* 404: unknown target or endpoint */
    RH_REFUSE_GONE,            /* 410: unknown or expired session */
    RH_REFUSE_OTHER_USER,      /* 403: a session of another user */
    RH_REFUSE_BAD,             /* 400, 405, 408, 413: bad or slow requests */
    RH_REFUSE_TARGET_DOWN,     /* 502, 504: the target refused or timed out */
    RH_REFUSE_DEST,            /* 403: a destination no RelayAllow lets through */
    RH_REFUSE_N
};

typedef struct rh_target_stats {
    char name[RH_TARGET_NAME_MAX + 1];
    uint64_t opened, closed;
    uint64_t up, down;          /* bytes of its closed sessions */
} rh_target_stats;

typedef struct rh_stats {
    int64_t started;            /* unix seconds: when the relay started counting */
    int64_t hist_sec;           /* the last second written (monotonic seconds) */
    uint64_t hist[RH_STATS_HIST];  /* bytes proxied in total at each second */
    uint64_t bytes_up, bytes_down; /* all sessions, live ones included (at the last beat) */
    uint32_t held;              /* requests the core holds (in flight) */
    uint32_t ntargets;
    uint64_t integrity;         /* failed end-to-end checks */
    uint64_t resumed;           /* pushes taken over and pulls re-attached after a cut */
    uint64_t throttled;         /* times a session waited on a rate limit */
    uint64_t udp_sessions;      /* udp: target sessions opened */
    uint64_t udp[4];            /* their datagrams: up, down, dropped up, dropped down */
    uint64_t requests[RH_XP_N];
    uint64_t refused[RH_REFUSE_N];
    rh_target_stats targets[RH_STATS_TARGETS];
} rh_stats;

/* The watch's figures (docs/PROTOCOL.md, watch), written by the core. Not
 * in rh_stats: that sits before the slots in the registry, whose layout an
 * upgrade's old core shares with the new module; these live in the table's
 * extension behind the slots (rh_registry_ext), which only a module that
 * knows them sizes. A watch's answer counts in one class: data when it
 * names a ready session, else gone when it names an unknown one, else empty
 * (its deadline came, or a newer watch took all its sessions). */
enum { RH_WATCH_ANS_DATA = 0, RH_WATCH_ANS_GONE, RH_WATCH_ANS_EMPTY, RH_WATCH_ANS_N };
typedef struct rh_watch_stats {
    uint64_t sessions;          /* sessions in a waiting watch now */
    uint64_t waiting;           /* watches waiting now (one per core a request asked) */
    uint64_t answered[RH_WATCH_ANS_N];   /* watches answered, by class */
} rh_watch_stats;

void rh_stats_init(rh_stats *st, int64_t now_unix);

/* Any process: adds the figures of another core's st to sum (a private copy,
 * made from the first core's): counts, targets by name, and the history up
 * to the second both have. */
void rh_stats_add(rh_stats *sum, const rh_stats *st);

/* Any process: adds another core's watch figures to sum (a private copy). */
void rh_stats_watch_add(rh_watch_stats *sum, const rh_watch_stats *w);
/* The core: its watches and the sessions they hold now (at every turn of its
 * loop), and one answered watch of class cls (RH_WATCH_ANS_*). */
void rh_stats_watch_now(rh_watch_stats *w, uint64_t sessions, uint64_t waiting);
void rh_stats_watch_answered(rh_watch_stats *w, int cls);

/* The core, at every heartbeat: the totals (closed + live bytes) and the
 * history up to now_sec (seconds without a beat get the same total). */
void rh_stats_tick(rh_stats *st, int64_t now_sec, uint64_t up, uint64_t down);

/* The core, at open and close (single writer). */
void rh_stats_target_opened(rh_stats *st, const char *name);
/* A slot counted as opened that is the serve leg of a rendezvous: its
 * connection is counted once, on its client leg. */
void rh_stats_target_unopened(rh_stats *st, const char *name);
void rh_stats_target_closed(rh_stats *st, const char *name, uint64_t up, uint64_t down);

/* The core, once a second: udp: sessions opened and their datagrams (the
 * order of rh_stats.udp), closed and live ones. */
void rh_stats_udp(rh_stats *st, uint64_t opened, const uint64_t n[4]);

/* Any process: atomic counters. */
void rh_stats_resumed(rh_stats *st);
void rh_stats_throttled(rh_stats *st);
void rh_stats_request(rh_stats *st, int xp);
void rh_stats_refused(rh_stats *st, int why);
/* The refusal class of an HTTP status; -1 when it is not a refusal. */
int rh_stats_refusal_of(int status);

/* Any process: bytes per second over the last window seconds (as far back as
 * the history goes); 0 with no history. */
double rh_stats_rate(const rh_stats *st, int window);

/* Any process: n rates (bytes per second), each over step seconds, the last
 * ending now: out[0] is the oldest. Returns how many it filled (0 with no
 * history). */
int rh_stats_series(const rh_stats *st, int step, int n, double *out);

extern const char *const rh_stats_xp_names[RH_XP_N];
extern const char *const rh_stats_refuse_names[RH_REFUSE_N];

#endif
