/* relay-https client: auto measures the transports on the path. On HTTP/2 a
 * route's first bulk session uses stream and times it; a later session starts
 * on duplex and times its download (its upload goes on a stream push from its
 * first 32 KiB: duplex_split_early): if duplex was not clearly faster, it
 * moves to stream (a deliberate resume: the server resends what was in
 * flight) and so do the sessions after it. What was measured and why shows
 * at -v and in the statistics. */
#ifndef RHC_MEASURE_H
#define RHC_MEASURE_H

#include <stddef.h>
#include <stdint.h>

#include "rhc_opts.h"

#define METER_WARM      (512u << 10)   /* bytes a window lets pass before it times */
#define METER_BYTES     (4u << 20)     /* ... and then times, in its busier direction */
#define METER_MAX_MS    3000           /* slower than this is not bulk: not a figure */
#define METER_RTTS      2              /* a window spans this many round trips at least */
#define METER_EDGE      1.10           /* duplex kept only when this much faster */
#define METER_MOVE_MAX_MS 2000         /* a move to stream is taken to cost at most this */

/* What a route measured (in struct rhc_policy). */
struct rhc_rates {
    double bps[2][RHC_XP_BATCH + 1];   /* [0 up, 1 down][transport]: bytes/s, 0: none */
    enum rhc_transport pick;           /* auto on HTTP/2 starts with it (AUTO: no figure) */
    char why[200];                     /* the pick, explained */
    int64_t at;                        /* picked then (re-measured after a while) */
};

/* One session's window (in struct rhc_tunnel). */
struct rhc_meter {
    enum rhc_transport xp;             /* timed now (AUTO: nothing) */
    int warm;                          /* warm-up passed: t0 and the counts start */
    int done;                          /* this session measured what it could */
    int switch_due;                    /* to stream, from the loop (meter_switch) ... */
    int64_t fig_us;                    /* ... once staying, since the figure then, */
    uint64_t fig_down;                 /* ... with this many bytes down then, */
    int64_t move_us;                   /* ... cost what a move costs (rhc_meter_move_due) */
    int64_t t0_us;                     /* the window's start (CLOCK_MONOTONIC) */
    uint64_t up0, down0;
};

/* A pick older than RHC_POLICY_RETRY_MS is forgotten: the path may have changed. */
void rhc_rates_expire(struct rhc_rates *r, int64_t now);
/* The figures and the pick of a route, for the statistics ("" when none). */
void rhc_rates_fmt(const struct rhc_rates *m, char *out, size_t outsz);
/* The pick from two figures of one direction (pure, for tests): stream unless
 * duplex was METER_EDGE faster. */
enum rhc_transport rhc_rates_pick(double duplex_bps, double stream_bps);
/* Whether a duplex window open us microseconds without its METER_BYTES can no
 * longer be METER_EDGE faster than stream_bps (pure, for tests): then it ends
 * at once, with the rate it had, and stream is picked. */
int rhc_meter_lost(double stream_bps, int64_t us);
/* Whether a session whose download stream beat leaves its duplex now: it has
 * stayed us microseconds, in which bytes came down, and so lost against
 * stream's rate as much time as the move costs, move_us (a new request's
 * connection and first byte, which the download waits for). Not knowing how
 * long the download goes on, staying and then moving costs at most twice the
 * better choice (pure, for tests). */
int rhc_meter_move_due(double stream_bps, int64_t move_us, int64_t us, uint64_t bytes);

#endif
