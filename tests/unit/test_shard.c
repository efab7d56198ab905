/* Shards (rh_shard.c): how many cores auto asks for, which shard a key and a
 * token name, the least loaded shard, and a registry that takes only its own
 * shard's tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rh_registry.h"
#include "rh_shard.h"
#include "tests.h"

START_TEST(auto_fits_the_descriptor_limit)
{
    ck_assert_uint_eq(rh_shard_auto(4096, 20000), 1);       /* the default: one core */
    ck_assert_uint_eq(rh_shard_auto(4096, 0), 1);           /* no limit */
    ck_assert_uint_eq(rh_shard_auto(4096, 100), 1);         /* nonsense limit: one */
    ck_assert_uint_eq(rh_shard_auto(21000, 20000), 4);
    ck_assert_uint_eq(rh_shard_auto(4096, 1024), 16);
    ck_assert_uint_eq(rh_shard_auto(100000000, 1024), RH_SHARDS_MAX);
    for (uint32_t m = 1; m < 200000; m += 997) {
        unsigned n = rh_shard_auto(m, 20000);
        uint64_t sum = 0;
        for (unsigned k = 0; k < n; ++k) {
            uint32_t per = rh_shard_slots(m, n, k);
            sum += per;
            ck_assert_uint_le((uint64_t)per * RH_SHARD_FDS + RH_SHARD_FD_SPARE, 20000);
        }
        ck_assert_uint_eq(sum, m);
    }
    ck_assert_uint_eq(rh_shard_slots(1024, 3, 0), 342);
    ck_assert_uint_eq(rh_shard_slots(1024, 3, 2), 341);
}
END_TEST

/* a global bound's parts add up to it, none is 0 (no limit), and 64 bits hold */
START_TEST(parts_add_up)
{
    const uint64_t vs[] = { 0, 1, 7, 1000, 1ull << 40, (1ull << 50) + 3 };
    for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); ++i)
        for (unsigned n = 1; n <= 5; ++n) {
            uint64_t sum = 0;
            for (unsigned k = 0; k < n; ++k) {
                uint64_t p = rh_shard_part(vs[i], n, k);
                ck_assert(vs[i] == 0 ? p == 0 : p >= 1);
                sum += p;
            }
            ck_assert(vs[i] < n ? sum == (vs[i] ? n : 0) : sum == vs[i]);
        }
}
END_TEST

START_TEST(keys_spread_and_stay)
{
    unsigned count[3] = { 0 };
    char key[32];
    for (int i = 0; i < 3000; ++i) {
        snprintf(key, sizeof(key), "%016x", (unsigned)i * 2654435761u);
        unsigned s = rh_shard_of_key(key, 3);
        ck_assert_uint_lt(s, 3);
        ck_assert_uint_eq(s, rh_shard_of_key(key, 3));
        count[s]++;
    }
    for (int i = 0; i < 3; ++i)
        ck_assert_msg(count[i] > 800 && count[i] < 1200, "shard %d got %u of 3000", i, count[i]);
    ck_assert_uint_eq(rh_shard_of_key("anything", 1), 0);
}
END_TEST

START_TEST(least_loaded_for_its_slots)
{
    uint32_t active[3] = { 5, 3, 3 }, slots[3] = { 10, 10, 10 };
    ck_assert_uint_eq(rh_shard_least(active, slots, 3, 0), 1);
    ck_assert_uint_eq(rh_shard_least(active, slots, 3, 2), 2);  /* a tie: from start */
    active[2] = 9;
    slots[2] = 100;
    ck_assert_uint_eq(rh_shard_least(active, slots, 3, 0), 2);
    ck_assert_uint_eq(rh_shard_least(active, slots, 1, 7), 0);
}
END_TEST

START_TEST(token_names_its_shard)
{
    unsigned char secret[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1];
    size_t size = rh_registry_size(8);
    rh_registry *reg = calloc(1, size), *other = calloc(1, size);
    rh_registry_init(reg, 8);
    rh_registry_init(other, 8);
    reg->shard = 5;
    other->shard = 2;
    memset(secret, 0x5a, sizeof(secret));
    uint32_t slot, gen;
    ck_assert_int_eq(rh_registry_alloc(reg, "t", secret, &slot, &gen), RH_REG_OK);
    ck_assert_int_eq(rh_registry_alloc(other, "t", secret, &slot, &gen), RH_REG_OK);
    rh_token_format(tok, rh_registry_pub_slot(reg, slot), gen, secret);
    ck_assert_int_eq(rh_token_shard(tok), 5);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(v.slot >> RH_SHARD_SHIFT, 5);
    /* the same slot, generation and secret in another shard's table: unknown */
    ck_assert_int_eq(rh_registry_check(other, tok, &v), RH_REG_UNKNOWN);
    /* shard 0 tokens are the tokens of a single core, unchanged */
    rh_token_format(tok, rh_registry_pub_slot(other, slot) & (RH_SHARD_SLOTS_MAX - 1), gen,
                    secret);
    ck_assert_int_eq(rh_token_shard(tok), 0);
    ck_assert_int_eq(rh_registry_check(other, tok, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_token_shard("nonsense"), -1);
    ck_assert_int_eq(rh_token_shard(NULL), -1);
    memset(tok, 'f', RH_TOKEN_LEN);                       /* shard 255: past the most */
    ck_assert_int_eq(rh_token_shard(tok), -1);
    uint32_t local;
    ck_assert_int_eq(rh_registry_local_slot(reg, 5u << RH_SHARD_SHIFT | 8, &local), -1);
    ck_assert_int_eq(rh_registry_local_slot(reg, 5u << RH_SHARD_SHIFT | 7, &local), 0);
    ck_assert_uint_eq(local, 7);
    free(reg);
    free(other);
}
END_TEST

START_TEST(status_adds_up_the_cores)
{
    static rh_stats a, b, sum;
    rh_stats_init(&a, 100);
    rh_stats_init(&b, 90);
    rh_stats_target_opened(&a, "echo");
    rh_stats_target_opened(&b, "web");
    rh_stats_target_closed(&b, "echo", 10, 20);
    rh_stats_refused(&a, RH_REFUSE_BUSY);
    rh_stats_refused(&b, RH_REFUSE_BUSY);
    for (int64_t t = 5000; t <= 5010; ++t) {
        rh_stats_tick(&a, t, (uint64_t)(t - 5000) * 100, 0);
        if (t < 5010)
            rh_stats_tick(&b, t, (uint64_t)(t - 5000) * 50, 0);   /* a second behind */
    }
    memcpy(&sum, &a, sizeof(sum));
    rh_stats_add(&sum, &b);
    ck_assert_int_eq(sum.started, 90);
    ck_assert_uint_eq(sum.refused[RH_REFUSE_BUSY], 2);
    ck_assert_uint_eq(sum.ntargets, 2);
    ck_assert_str_eq(sum.targets[0].name, "echo");
    ck_assert_uint_eq(sum.targets[0].opened, 1);
    ck_assert_uint_eq(sum.targets[0].closed, 1);
    ck_assert_uint_eq(sum.targets[0].down, 20);
    ck_assert_str_eq(sum.targets[1].name, "web");
    ck_assert_int_eq(sum.hist_sec, 5009);           /* as far as both have written */
    double r = rh_stats_rate(&sum, 5);
    ck_assert_msg(r > 149.9 && r < 150.1, "rate %f", r);
}
END_TEST

Suite *shard_suite(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("shard");
    tcase_add_test(tc, auto_fits_the_descriptor_limit);
    tcase_add_test(tc, parts_add_up);
    tcase_add_test(tc, keys_spread_and_stay);
    tcase_add_test(tc, least_loaded_for_its_slots);
    tcase_add_test(tc, token_names_its_shard);
    tcase_add_test(tc, status_adds_up_the_cores);
    suite_add_tcase(s, tc);
    return s;
}
