/* Token buckets (see rh_rate.h). */
#include "rh_rate.h"

static void refill(rh_bucket *b, uint64_t rate, int64_t now_ms)
{
    int64_t cap = (int64_t)rate * RH_RATE_BURST_S;
    if (b->last_ms == 0) {
        b->tokens = cap;        /* a new bucket starts full */
    } else if (now_ms > b->last_ms) {
        int64_t add = (now_ms - b->last_ms) * (int64_t)rate / 1000;
        if (add == 0)
            return;             /* keep last_ms: the fraction accrues */
        b->tokens = b->tokens + add > cap ? cap : b->tokens + add;
    }
    b->last_ms = now_ms;
}

uint64_t rh_bucket_allow(rh_bucket *b, uint64_t rate, int64_t now_ms, uint64_t want)
{
    if (!rate)
        return want;
    refill(b, rate, now_ms);
    if (b->tokens <= 0)
        return 0;
    return (uint64_t)b->tokens < want ? (uint64_t)b->tokens : want;
}

void rh_bucket_take(rh_bucket *b, uint64_t rate, uint64_t n)
{
    if (rate)
        b->tokens -= (int64_t)n;
}

int64_t rh_bucket_wait_ms(const rh_bucket *b, uint64_t rate, uint64_t min)
{
    if (!rate || b->tokens >= (int64_t)min)
        return 0;
    int64_t need = (int64_t)min - b->tokens;
    int64_t ms = (need * 1000 + (int64_t)rate - 1) / (int64_t)rate;
    return ms < 1 ? 1 : ms > 1000 ? 1000 : ms;
}
