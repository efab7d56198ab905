/* relay-https client: statistics. Counters per tunnel and per route (bytes,
 * tunnels, resumes, transports); a report on SIGUSR1 (every tunnel, every
 * route, the total) and every --stats SECONDS (routes and total) on stderr,
 * and --stats-json FILE rewritten atomically (schema: docs/man/relay-https.1). */
#ifndef RHC_STATS_H
#define RHC_STATS_H

#include <stdint.h>

#include "rhc_tunnel.h"

#define RHC_STATS_JSON_EVERY_MS 10000   /* --stats-json without --stats */

/* When the reports were made; lives in the context. */
struct rhc_stats_clock {
    int started;                /* the first tick set the rest */
    int64_t start_ms;           /* monotonic */
    int64_t start_wall_ms;
    int64_t last_ms;            /* the last report: rates are since then */
    int64_t next_ms;            /* the next periodic report, 0: none */
    int json_errno;             /* the last --stats-json failure told (0: none) */
};

/* Called by the event loop once per round: reports when usr1 (SIGUSR1 came)
 * or when the --stats / --stats-json interval is over. Returns wait (ms, -1:
 * no limit) shortened to the next report. */
long rhc_stats_tick(rhc_ctx *c, int64_t now, int usr1, long wait);

#endif
