/* relaycore/rh_stats: the status figures, from the core's beats. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rh_stats.h"
#include "tests.h"

static rh_stats *fresh(void)
{
    rh_stats *st = malloc(sizeof(*st));
    ck_assert_ptr_nonnull(st);
    rh_stats_init(st, 1700000000);
    return st;
}

START_TEST(test_rates_from_beats)
{
    rh_stats *st = fresh();
    ck_assert(rh_stats_rate(st, 10) == 0);           /* no beat yet */
    /* 1000 bytes a second for 120 s, then 10 s of nothing */
    for (int s = 0; s <= 120; ++s)
        rh_stats_tick(st, 50000 + s, (uint64_t)s * 600, (uint64_t)s * 400);
    ck_assert_uint_eq(st->bytes_up, 72000);
    ck_assert_uint_eq(st->bytes_down, 48000);
    ck_assert_double_eq_tol(rh_stats_rate(st, 10), 1000.0, 0.001);
    ck_assert_double_eq_tol(rh_stats_rate(st, 60), 1000.0, 0.001);
    for (int s = 121; s <= 130; ++s)
        rh_stats_tick(st, 50000 + s, 72000, 48000);
    ck_assert_double_eq_tol(rh_stats_rate(st, 10), 0.0, 0.001);
    ck_assert_double_eq_tol(rh_stats_rate(st, 60), 50000.0 / 60, 0.001);
    /* a window longer than the life so far: the bytes since the start over it */
    ck_assert_double_eq_tol(rh_stats_rate(st, 300), 120000.0 / 300, 0.001);
    free(st);
}
END_TEST

START_TEST(test_gap_between_beats)
{
    rh_stats *st = fresh();
    rh_stats_tick(st, 100, 0, 0);
    rh_stats_tick(st, 110, 5000, 5000);   /* a core busy for 10 s: one beat */
    ck_assert_double_eq_tol(rh_stats_rate(st, 10), 1000.0, 0.001);
    ck_assert_double_eq_tol(rh_stats_rate(st, 5), 2000.0, 0.001); /* placed at its second */
    rh_stats_tick(st, 105, 9000, 9000);   /* the clock never goes back: ignored */
    ck_assert_uint_eq(st->bytes_up, 5000);
    /* a gap longer than the history starts it over without a spike */
    rh_stats_tick(st, 110 + 2 * RH_STATS_HIST, 6000, 6000);
    ck_assert_double_eq_tol(rh_stats_rate(st, 10), 200.0, 0.001);
    free(st);
}
END_TEST

START_TEST(test_history_wraps)
{
    rh_stats *st = fresh();
    uint64_t total = 0;
    for (int s = 0; s < 3 * RH_STATS_HIST; ++s) {
        total += (s % 2) ? 300 : 100;         /* 200 B/s on average */
        rh_stats_tick(st, 7 + s, total, 0);
    }
    ck_assert_double_eq_tol(rh_stats_rate(st, 3600), 200.0, 0.1);
    ck_assert_double_eq_tol(rh_stats_rate(st, 60), 200.0, 0.1);
    ck_assert_double_eq_tol(rh_stats_rate(st, 99999), 200.0, 0.1);  /* clamped to the history */
    free(st);
}
END_TEST

START_TEST(test_targets_and_counters)
{
    rh_stats *st = fresh();
    rh_stats_target_opened(st, "ssh");
    rh_stats_target_opened(st, "ssh");
    rh_stats_target_opened(st, "web");
    rh_stats_target_closed(st, "ssh", 10, 20);
    ck_assert_uint_eq(st->ntargets, 2);
    ck_assert_str_eq(st->targets[0].name, "ssh");
    ck_assert_uint_eq(st->targets[0].opened, 2);
    ck_assert_uint_eq(st->targets[0].closed, 1);
    ck_assert_uint_eq(st->targets[0].up, 10);
    ck_assert_uint_eq(st->targets[0].down, 20);
    /* more names than the table: the rest pooled, nothing written out of bounds */
    char name[16];
    for (int i = 0; i < 3 * RH_STATS_TARGETS; ++i) {
        snprintf(name, sizeof(name), "t%d", i);
        rh_stats_target_opened(st, name);
    }
    ck_assert_uint_eq(st->ntargets, RH_STATS_TARGETS);
    ck_assert_str_eq(st->targets[RH_STATS_TARGETS - 1].name, "(other)");
    uint64_t sum = 0;
    for (int i = 0; i < RH_STATS_TARGETS; ++i)
        sum += st->targets[i].opened;
    ck_assert_uint_eq(sum, 3 + 3 * RH_STATS_TARGETS);

    rh_stats_request(st, RH_XP_DUPLEX);
    rh_stats_request(st, RH_XP_N);             /* out of range: ignored */
    rh_stats_request(st, -1);
    ck_assert_uint_eq(st->requests[RH_XP_DUPLEX], 1);
    ck_assert_int_eq(rh_stats_refusal_of(503), RH_REFUSE_BUSY);
    ck_assert_int_eq(rh_stats_refusal_of(429), RH_REFUSE_CLIENT);
    ck_assert_int_eq(rh_stats_refusal_of(410), RH_REFUSE_GONE);
    ck_assert_int_eq(rh_stats_refusal_of(200), -1);
    ck_assert_int_eq(rh_stats_refusal_of(409), -1);   /* a turn, not a refusal */
    rh_stats_refused(st, rh_stats_refusal_of(503));
    rh_stats_refused(st, rh_stats_refusal_of(201));
    ck_assert_uint_eq(st->refused[RH_REFUSE_BUSY], 1);
    for (int i = 0; i < RH_XP_N; ++i)
        ck_assert_ptr_nonnull(rh_stats_xp_names[i]);
    for (int i = 0; i < RH_REFUSE_N; ++i)
        ck_assert_ptr_nonnull(rh_stats_refuse_names[i]);
    free(st);
}
END_TEST

/* The watch's figures of several cores add up (the status page's sum), read
 * as the cores write them; the answered classes stay apart and an unknown
 * class counts nowhere. */
START_TEST(test_watch_figures_add)
{
    rh_watch_stats a, b, sum;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    rh_stats_watch_now(&a, 20000, 1);
    rh_stats_watch_answered(&a, RH_WATCH_ANS_DATA);
    rh_stats_watch_answered(&a, RH_WATCH_ANS_DATA);
    rh_stats_watch_answered(&a, RH_WATCH_ANS_EMPTY);
    rh_stats_watch_answered(&a, RH_WATCH_ANS_N);    /* ignored */
    rh_stats_watch_answered(&a, -1);
    rh_stats_watch_now(&b, 7, 2);
    rh_stats_watch_answered(&b, RH_WATCH_ANS_GONE);
    rh_stats_watch_answered(&b, RH_WATCH_ANS_EMPTY);
    rh_stats_watch_now(&b, 5, 3);                    /* now: replaces, not adds */
    memcpy(&sum, &a, sizeof(sum));
    rh_stats_watch_add(&sum, &b);
    ck_assert_uint_eq(sum.sessions, 20005);
    ck_assert_uint_eq(sum.waiting, 4);
    ck_assert_uint_eq(sum.answered[RH_WATCH_ANS_DATA], 2);
    ck_assert_uint_eq(sum.answered[RH_WATCH_ANS_GONE], 1);
    ck_assert_uint_eq(sum.answered[RH_WATCH_ANS_EMPTY], 2);
    /* the sources are untouched */
    ck_assert_uint_eq(a.sessions, 20000);
    ck_assert_uint_eq(b.answered[RH_WATCH_ANS_EMPTY], 1);
}
END_TEST

Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("stats");
    tcase_add_test(tc, test_rates_from_beats);
    tcase_add_test(tc, test_gap_between_beats);
    tcase_add_test(tc, test_history_wraps);
    tcase_add_test(tc, test_targets_and_counters);
    tcase_add_test(tc, test_watch_figures_add);
    suite_add_tcase(s, tc);
    return s;
}
