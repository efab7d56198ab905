/* relaycore/rh_rate: the token buckets behind RelayRateLimit and
 * RelayGlobalRateLimit, on a clock the test drives. */
#include <stdint.h>

#include "rh_rate.h"
#include "tests.h"

START_TEST(test_no_limit)
{
    rh_bucket b = { 0, 0 };
    ck_assert_uint_eq(rh_bucket_allow(&b, 0, 1000, 123456789), 123456789);
    rh_bucket_take(&b, 0, 5000);
    ck_assert_int_eq(rh_bucket_wait_ms(&b, 0, 1), 0);
}
END_TEST

START_TEST(test_burst_then_rate)
{
    rh_bucket b = { 0, 0 };
    const uint64_t rate = 1000;   /* bytes per second */
    int64_t now = 50000;
    /* a new bucket holds the burst: two seconds' worth */
    ck_assert_uint_eq(rh_bucket_allow(&b, rate, now, 1u << 20), 2 * rate);
    rh_bucket_take(&b, rate, 2 * rate);
    ck_assert_uint_eq(rh_bucket_allow(&b, rate, now, 100), 0);
    ck_assert_int_eq(rh_bucket_wait_ms(&b, rate, 100), 100);
    /* 100 ms later: 100 bytes */
    ck_assert_uint_eq(rh_bucket_allow(&b, rate, now + 100, 1u << 20), 100);
    /* over 10 s, whatever the slicing, at most burst + 10 s of rate moves */
    uint64_t moved = 100;
    rh_bucket_take(&b, rate, 100);
    for (int64_t t = now + 101; t <= now + 10100; t += 7) {
        uint64_t a = rh_bucket_allow(&b, rate, t, 333);
        rh_bucket_take(&b, rate, a);
        moved += a;
    }
    ck_assert_uint_le(moved, 2 * rate + 10 * rate + 100);
    ck_assert_uint_ge(moved, 10 * rate - 50);
}
END_TEST

START_TEST(test_overdraft_and_cap)
{
    rh_bucket b = { 0, 0 };
    const uint64_t rate = 10000;
    rh_bucket_allow(&b, rate, 1, 1);
    rh_bucket_take(&b, rate, 3 * rate);          /* a read brought more than allowed */
    ck_assert_uint_eq(rh_bucket_allow(&b, rate, 1, 1), 0);
    ck_assert_int_eq(rh_bucket_wait_ms(&b, rate, 1), 1000);   /* capped at 1 s a wait */
    /* a long idle time fills it only to the burst */
    ck_assert_uint_eq(rh_bucket_allow(&b, rate, 1 + 3600 * 1000, 1u << 30), 2 * rate);
    /* tiny steps at a slow rate still accrue */
    rh_bucket c = { 0, 0 };
    rh_bucket_allow(&c, 10, 1000, 1);
    rh_bucket_take(&c, 10, 20);
    uint64_t got = 0;
    for (int64_t t = 1001; t <= 2000; ++t)
        got += rh_bucket_allow(&c, 10, t, 1) ? 1 : 0;
    ck_assert_uint_ge(got, 1);
    ck_assert_uint_eq(rh_bucket_allow(&c, 10, 2000, 100), 10);
}
END_TEST

Suite *rate_suite(void)
{
    Suite *s = suite_create("rate");
    TCase *tc = tcase_create("rate");
    tcase_add_test(tc, test_no_limit);
    tcase_add_test(tc, test_burst_then_rate);
    tcase_add_test(tc, test_overdraft_and_cap);
    suite_add_tcase(s, tc);
    return s;
}
