/* proto/rh_util: the one decimal parser and the one target-name rule that the
 * module, the core and the client share; their edge cases pinned in tables. */
#include <stdint.h>
#include <string.h>

#include "rh_proto.h"
#include "rh_util.h"
#include "tests.h"

static const struct {
    const char *s;
    size_t n;          /* (size_t)-1: up to the NUL */
    int rv;
    uint64_t v;
} u64_cases[] = {
    { "0", (size_t)-1, 0, 0 },
    { "12345", (size_t)-1, 0, 12345 },
    { "18446744073709551615", (size_t)-1, 0, UINT64_MAX },
    { "18446744073709551616", (size_t)-1, -1, 0 },       /* overflow */
    { "99999999999999999999", (size_t)-1, -1, 0 },
    { "000000000000000000000042", (size_t)-1, 0, 42 },   /* leading zeros: no overflow */
    { "", (size_t)-1, -1, 0 },
    { "-1", (size_t)-1, -1, 0 },
    { "+1", (size_t)-1, -1, 0 },
    { " 1", (size_t)-1, -1, 0 },
    { "1 ", (size_t)-1, -1, 0 },
    { "1x", (size_t)-1, -1, 0 },
    { "0x10", (size_t)-1, -1, 0 },
    /* length-delimited, as a header value inside curl's buffer */
    { "123\r\n", 3, 0, 123 },
    { "123456", 2, 0, 12 },
    { "12", 0, -1, 0 },
    { "1\0002", 3, -1, 0 },                              /* a NUL inside the n bytes */
};

START_TEST(test_parse_u64_table)
{
    for (size_t i = 0; i < sizeof(u64_cases) / sizeof(u64_cases[0]); ++i) {
        uint64_t v = 777;
        int rv = rh_parse_u64(u64_cases[i].s, u64_cases[i].n, &v);
        ck_assert_msg(rv == u64_cases[i].rv, "case %zu '%s': rv %d, expected %d", i,
                      u64_cases[i].s, rv, u64_cases[i].rv);
        ck_assert_msg(v == (rv == 0 ? u64_cases[i].v : 777), "case %zu '%s': value %llu", i,
                      u64_cases[i].s, (unsigned long long)v);
    }
    uint64_t v = 5;
    ck_assert_int_eq(rh_parse_u64(NULL, (size_t)-1, &v), -1);
    ck_assert(v == 5);
}
END_TEST

START_TEST(test_target_names)
{
    char longest[RH_TARGET_NAME_MAX + 2];
    memset(longest, 'a', sizeof(longest));
    longest[RH_TARGET_NAME_MAX] = '\0';
    ck_assert_int_eq(rh_valid_target_name(longest), 1);
    longest[RH_TARGET_NAME_MAX] = 'a';
    longest[RH_TARGET_NAME_MAX + 1] = '\0';
    ck_assert_int_eq(rh_valid_target_name(longest), 0);

    static const char *good[] = { "echo", "a", "ssh-22", "db_1.internal", "X.Y", "a..b" };
    static const char *bad[] = { "", ".", "..", ".hidden", "a/b", "a b", "a%2f", "ä", "a?",
                                 "a#", "a:b" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); ++i)
        ck_assert_msg(rh_valid_target_name(good[i]) == 1, "'%s' refused", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        ck_assert_msg(rh_valid_target_name(bad[i]) == 0, "'%s' accepted", bad[i]);
    ck_assert_int_eq(rh_valid_target_name(NULL), 0);
}
END_TEST

START_TEST(test_clock_monotonic)
{
    int64_t a = rh_now_ms(), b = rh_now_ms();
    ck_assert(a > 0);
    ck_assert(b >= a);
}
END_TEST

Suite *util_suite(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("util");
    tcase_add_test(tc, test_parse_u64_table);
    tcase_add_test(tc, test_target_names);
    tcase_add_test(tc, test_clock_monotonic);
    suite_add_tcase(s, tc);
    return s;
}
