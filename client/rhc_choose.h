/* relay-https client: which transport a session uses per direction, what the
 * process learned for later sessions (struct rhc_policy), and the fallbacks
 * duplex -> stream -> batch when an intermediary holds bytes back. */
#ifndef RHC_CHOOSE_H
#define RHC_CHOOSE_H

#include <stddef.h>
#include <stdint.h>

#include "rhc_measure.h"
#include "rhc_opts.h"
#include "rhc_tunnel.h"

struct rhc_req;

extern const char *const xp_name[];    /* "auto", "duplex", "stream", "batch" */
/* "duplex", or "push stream, pull batch" when the directions differ */
const char *xp_pair(enum rhc_transport up, enum rhc_transport down, char *buf, size_t bufsz);

/* A fallback is not for ever: an intermediary may have gone, or a failure
 * looked like one. After this long the better transport is probed again. */
#define RHC_POLICY_RETRY_MS   (10 * 60 * 1000)

/* What this process learned about the path (auto): later sessions start with
 * it. Moves towards batch and smaller bodies; the transports expire after
 * RHC_POLICY_RETRY_MS (rhc_policy_expire), the body sizes do not. */
struct rhc_policy {
    enum rhc_transport best_up, best_down;
    char why_up[320], why_down[320];
    int proven[RHC_XP_BATCH + 1];   /* a response of this transport showed a frame in time */
    size_t batch_max;           /* data bytes per batch push (smaller after a 413) */
    uint64_t spush_max;         /* body bytes per stream push (smaller after a 413) */
    int64_t moved_at;           /* a transport last moved down then (0: never) */
    struct rhc_rates rates;     /* HTTP/2: duplex and stream timed on this path */
    int64_t measuring_until;    /* a session is timing them (one at a time) */
    int h2_seen;                /* an open on this route was answered over HTTP/2 */
};

void rhc_policy_init(struct rhc_policy *p);
/* Remembers for the later sessions of this process (moves back only by
 * rhc_policy_expire). */
void rhc_policy_note(struct rhc_policy *p, int up, enum rhc_transport x, const char *why);
/* The transports learned RHC_POLICY_RETRY_MS or more before now are
 * forgotten, so the next session probes the best again (and holds its up
 * bytes until that is proven). Returns 1 when it forgot, with what it was
 * in was ("push X, pull Y: why"). */
int rhc_policy_expire(struct rhc_policy *p, int64_t now, char *was, size_t wassz);

/* The transports of a new session (pure): from --transport, or for auto from the
 * HTTP version its open spoke (hv: CURL_HTTP_VERSION_*; HTTP/2 once any open of
 * the route spoke it, p->h2_seen) and the policy. Sets
 * *autox and writes the reason into why. */
void rhc_choose_pick(const struct rhc_opts *o, const struct rhc_policy *p, long hv,
                     enum rhc_transport *up, enum rhc_transport *down, int *autox,
                     char *why, size_t whysz);

/* Picks and starts the transports of a session once its open was answered. */
void choose_transport(rhc_tunnel *t, struct rhc_req *open);
/* Both directions move from duplex to stream in the middle of a session
 * (resumable sessions only: what was in flight comes again). */
void switch_to_stream(rhc_tunnel *t, const char *why);
/* Pushes move to batch; the down side moves to the next transport. */
void fallback_up(rhc_tunnel *t, const char *why);
void fallback_down(rhc_tunnel *t, const char *why);
/* Nothing was exchanged yet: a new session, with what this one learned. */
void restart_session(rhc_tunnel *t, const char *why);
/* auto: when the down response counts as held back, or -1. */
int64_t probe_deadline(const rhc_tunnel *t);

#endif
