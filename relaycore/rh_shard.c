/* Shard arithmetic (see rh_shard.h). */
#include <string.h>

#include "rh_registry.h"
#include "rh_shard.h"

unsigned rh_shard_auto(uint32_t max_sessions, uint64_t hard_nofile)
{
    if (hard_nofile == 0 || hard_nofile <= RH_SHARD_FD_SPARE + RH_SHARD_FDS)
        return 1;
    uint64_t per = (hard_nofile - RH_SHARD_FD_SPARE) / RH_SHARD_FDS;
    uint64_t n = ((uint64_t)max_sessions + per - 1) / per;
    return n < 1 ? 1 : n > RH_SHARDS_MAX ? RH_SHARDS_MAX : (unsigned)n;
}

uint32_t rh_shard_slots(uint32_t max_sessions, unsigned n, unsigned k)
{
    uint32_t per = n > 1 ? max_sessions / n + (k < max_sessions % n) : max_sessions;
    return per < 1 ? 1 : per >= RH_SHARD_SLOTS_MAX ? RH_SHARD_SLOTS_MAX - 1 : per;
}

uint64_t rh_shard_part(uint64_t v, unsigned n, unsigned k)
{
    if (!v || n < 2)
        return v;
    uint64_t part = v / n + (k < v % n);
    return part ? part : 1;
}

unsigned rh_shard_of_key(const char *key, unsigned n)
{
    /* FNV-1a, then a final mix: client keys are themselves hashes */
    uint64_t h = 1469598103934665603ull;
    for (const char *p = key; *p; ++p)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return n > 1 ? (unsigned)(h % n) : 0;
}

unsigned rh_shard_least(const uint32_t *active, const uint32_t *slots, unsigned n,
                        unsigned start)
{
    unsigned best = start % (n ? n : 1);
    for (unsigned j = 1; j < n; ++j) {
        unsigned i = (start + j) % n;
        /* active[i] / slots[i] < active[best] / slots[best], without division */
        if ((uint64_t)active[i] * slots[best] < (uint64_t)active[best] * slots[i])
            best = i;
    }
    return best;
}

int rh_token_shard(const char *token)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    if (!token || rh_token_parse(token, &slot, &gen, secret) != 0)
        return -1;
    memset(secret, 0, sizeof(secret));
    unsigned shard = slot >> RH_SHARD_SHIFT;
    return shard < RH_SHARDS_MAX ? (int)shard : -1;
}
