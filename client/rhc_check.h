/* relay-https client: is the server usable? The check at start (GET
 * BASE/TARGET/check: reachable, TLS, credentials, target declared, relay core
 * up; nothing connects to the target), and how failures of later opens are
 * reported while forward runs: one line per kind of failure and period, not
 * one per connection. */
#ifndef RHC_CHECK_H
#define RHC_CHECK_H

#include <stdint.h>
#include <curl/curl.h>

#define RHC_RETRY_START_MIN_MS  1000    /* --retry-start: first wait ... */
#define RHC_RETRY_START_MAX_MS  30000   /* ... doubling up to this */
#define RHC_RATELOG_MS          30000   /* the same failure again within this: counted */

struct rhc_ctx;
struct rhc_req;
struct rhc_route;
struct rhc_tunnel;

/* Failures of opens while forward runs, for rate-limited lines (pure). */
struct rhc_ratelog {
    int64_t until;      /* the same failure again before then is only counted */
    int code;           /* the exit code of the last failure logged */
    unsigned held;      /* failures counted without a line since that one */
    unsigned failed;    /* opens failed since the last one that passed */
};

/* A failure with this exit code: 1 to log it now (*held: how many were only
 * counted since the last line), 0 to count it. */
int rhc_ratelog_fail(struct rhc_ratelog *rl, int code, int64_t now, unsigned *held);
/* An open passed: how many failed before it (0: nothing to say); forgets them. */
unsigned rhc_ratelog_ok(struct rhc_ratelog *rl);

/* How a check's answer is taken (pure): status, whether the body is the
 * module's, its Relay-Reason. */
enum rhc_check_verdict {
    RHC_CHECK_PASS,         /* 200 */
    RHC_CHECK_NO_ENDPOINT,  /* the module's 404 without the unknown-target reason:
                               a server from before the check: taken as passed */
    RHC_CHECK_FAIL          /* the exit code and message an open would give */
};
enum rhc_check_verdict rhc_check_judge(long status, int from_module, const char *reason);

/* The delay before try n + 1 of --retry-start (n >= 1). */
int64_t rhc_retry_start_ms(unsigned n);

/* Checks the route's server at start. retry: --retry-start (try again with
 * backoff until it passes, each failure logged). Returns 0 when it passed,
 * -1 after a signal, else the exit code, after a line on stderr. */
int rhc_check_start(struct rhc_ctx *c, const struct rhc_route *route, int retry);

/* rhc_loop.c: a check request ended. */
void rhc_check_done(struct rhc_req *r, CURLcode rc);

/* rhc_tunnel.c: a tunnel failed (its line, rate-limited when its open failed),
 * and an open passed (says so once after failures). */
void rhc_report_failure(struct rhc_tunnel *t);
void rhc_report_open_ok(struct rhc_tunnel *t);

#endif
