/* client/rhc_check.c: how a start check's answer is taken, the waits of
 * --retry-start, and the rate-limited lines of failed opens. */
#include <stdint.h>
#include <string.h>

#include "rh_proto.h"
#include "rhc_check.h"
#include "client_tests.h"

static const struct {
    long status;
    int from_module;
    const char *reason;
    enum rhc_check_verdict v;
} judge_rows[] = {
    { 200, 1, "", RHC_CHECK_PASS },
    { 404, 1, RH_REASON_TOKEN_NO_TARGET, RHC_CHECK_FAIL },  /* unknown target: 7 */
    { 404, 1, "", RHC_CHECK_NO_ENDPOINT },      /* a server from before the check */
    { 404, 0, "", RHC_CHECK_FAIL },             /* no relay at this URL */
    { 401, 0, "", RHC_CHECK_FAIL },
    { 407, 0, "", RHC_CHECK_FAIL },
    { 503, 1, "", RHC_CHECK_FAIL },             /* relay core unavailable */
    { 502, 0, "", RHC_CHECK_FAIL },
};

START_TEST(test_judge)
{
    for (size_t i = 0; i < sizeof(judge_rows) / sizeof(judge_rows[0]); ++i)
        ck_assert_msg(rhc_check_judge(judge_rows[i].status, judge_rows[i].from_module,
                                      judge_rows[i].reason) == judge_rows[i].v, "row %zu", i);
}
END_TEST

START_TEST(test_retry_start_waits)
{
    ck_assert_int_eq(rhc_retry_start_ms(1), RHC_RETRY_START_MIN_MS);
    ck_assert_int_eq(rhc_retry_start_ms(2), 2 * RHC_RETRY_START_MIN_MS);
    ck_assert_int_eq(rhc_retry_start_ms(3), 4 * RHC_RETRY_START_MIN_MS);
    ck_assert_int_eq(rhc_retry_start_ms(6), RHC_RETRY_START_MAX_MS);
    ck_assert_int_eq(rhc_retry_start_ms(1000), RHC_RETRY_START_MAX_MS);
}
END_TEST

START_TEST(test_ratelog)
{
    struct rhc_ratelog rl;
    unsigned held = 99;

    memset(&rl, 0, sizeof(rl));
    ck_assert_uint_eq(rhc_ratelog_ok(&rl), 0);          /* nothing failed: nothing to say */
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 3, 1000, &held), 1);
    ck_assert_uint_eq(held, 0);
    /* the same failure again: counted, no line, for RHC_RATELOG_MS */
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 3, 1001, &held), 0);
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 3, 1000 + RHC_RATELOG_MS - 1, &held), 0);
    /* another kind of failure is news at once */
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 5, 2000, &held), 1);
    ck_assert_uint_eq(held, 2);
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 5, 2001, &held), 0);
    /* after the period a line again, saying how many it left out */
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 5, 2000 + RHC_RATELOG_MS, &held), 1);
    ck_assert_uint_eq(held, 1);
}
END_TEST

START_TEST(test_ratelog_recovery)
{
    struct rhc_ratelog rl;
    unsigned held = 0;

    memset(&rl, 0, sizeof(rl));
    for (int i = 0; i < 6; ++i)
        rhc_ratelog_fail(&rl, 3, 1000 + i, &held);
    /* an open that passes says how many failed, then all is forgotten */
    ck_assert_uint_eq(rhc_ratelog_ok(&rl), 6);
    ck_assert_uint_eq(rhc_ratelog_ok(&rl), 0);
    ck_assert_int_eq(rhc_ratelog_fail(&rl, 5, 2002 + RHC_RATELOG_MS, &held), 1);
}
END_TEST

Suite *check_suite(void)
{
    Suite *s = suite_create("client start check");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_judge);
    tcase_add_test(tc, test_retry_start_waits);
    tcase_add_test(tc, test_ratelog);
    tcase_add_test(tc, test_ratelog_recovery);
    suite_add_tcase(s, tc);
    return s;
}
