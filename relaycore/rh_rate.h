/* Token buckets for the relay's rate limits (RelayRateLimit per session,
 * RelayGlobalRateLimit for all): bytes per second, a burst of two seconds'
 * worth. Pure arithmetic on a clock the caller gives; httpd-independent. */
#ifndef RH_RATE_H
#define RH_RATE_H

#include <stdint.h>

#define RH_RATE_BURST_S 2   /* a bucket holds this many seconds of its rate */

typedef struct rh_bucket {
    int64_t tokens;          /* bytes that may move now */
    int64_t last_ms;         /* when it was last refilled; 0: never */
} rh_bucket;

/* How many of want bytes may move now at rate bytes/s (rate 0: no limit, all
 * of them). Refills first. */
uint64_t rh_bucket_allow(rh_bucket *b, uint64_t rate, int64_t now_ms, uint64_t want);

/* n bytes moved: taken from the bucket (which may go below zero: a read may
 * bring a little more than allowed, the next waits for it). */
void rh_bucket_take(rh_bucket *b, uint64_t rate, uint64_t n);

/* Milliseconds until at least min bytes may move (0: now), at most 1000. */
int64_t rh_bucket_wait_ms(const rh_bucket *b, uint64_t rate, uint64_t min);

#endif
