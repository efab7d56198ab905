/* The core's table of clients (rh_clients): counts, the open-rate bucket, and
 * forgetting entries nothing uses. */
#include <stdio.h>
#include <string.h>
#include "rh_clients.h"
#include "tests.h"

START_TEST(test_same_key_same_entry)
{
    rh_clients t;
    ck_assert_int_eq(rh_clients_init(&t, 8, 0), 0);
    rh_client *a = rh_clients_get(&t, "aaaa", 1000);
    rh_client *b = rh_clients_get(&t, "bbbb", 1000);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    ck_assert_ptr_eq(rh_clients_get(&t, "aaaa", 1001), a);
    ck_assert_uint_eq(t.count, 2);
    rh_clients_free(&t);
}
END_TEST

START_TEST(test_open_rate_bucket)
{
    rh_clients t;
    ck_assert_int_eq(rh_clients_init(&t, 8, 0), 0);
    rh_client *a = rh_clients_get(&t, "k", 0);
    /* rate 5/s: a burst of 10, then one every 200 ms */
    for (int i = 0; i < 10; ++i)
        ck_assert_msg(rh_client_take_open(a, 5, 0) == 0, "open %d of the burst refused", i);
    ck_assert_int_eq(rh_client_take_open(a, 5, 0), -1);
    ck_assert_int_eq(rh_client_take_open(a, 5, 100), -1);
    ck_assert_int_eq(rh_client_take_open(a, 5, 210), 0);
    ck_assert_int_eq(rh_client_take_open(a, 5, 220), -1);
    /* a long pause refills only up to the burst */
    for (int i = 0; i < 10; ++i)
        ck_assert_int_eq(rh_client_take_open(a, 5, 100000), 0);
    ck_assert_int_eq(rh_client_take_open(a, 5, 100000), -1);
    /* rate 0: no limit */
    for (int i = 0; i < 1000; ++i)
        ck_assert_int_eq(rh_client_take_open(a, 0, 100000), 0);
    rh_clients_free(&t);
}
END_TEST

START_TEST(test_unused_entries_forgotten_used_kept)
{
    rh_clients t;
    const long T0 = 5000;       /* the core's clock never reads 0 */
    ck_assert_int_eq(rh_clients_init(&t, 1, 0), 0);   /* one chain: every lookup sweeps */
    rh_client *busy = rh_clients_get(&t, "busy", T0);
    busy->sessions = 1;
    rh_client_touch(busy, T0);
    rh_client *idle = rh_clients_get(&t, "idle", T0);
    ck_assert_ptr_nonnull(idle);
    ck_assert_uint_eq(t.count, 2);
    /* not yet forgotten: its bucket must outlive a quick close-and-open */
    rh_clients_get(&t, "other", T0 + RH_CLIENT_IDLE_MS - 1);
    ck_assert_uint_eq(t.count, 3);
    rh_clients_get(&t, "busy", T0 + 10 * RH_CLIENT_IDLE_MS);
    ck_assert_uint_eq(t.count, 1);      /* idle and other went, busy stays */
    ck_assert_ptr_eq(rh_clients_get(&t, "busy", T0 + 10 * RH_CLIENT_IDLE_MS), busy);
    busy->sessions = 0;
    rh_client_touch(busy, T0 + 10 * RH_CLIENT_IDLE_MS);
    rh_clients_get(&t, "x", T0 + 12 * RH_CLIENT_IDLE_MS);
    ck_assert_uint_eq(t.count, 1);      /* busy went once unused long enough; x is new */
    rh_clients_free(&t);
}
END_TEST

START_TEST(test_table_bound)
{
    rh_clients t;
    char key[16];
    ck_assert_int_eq(rh_clients_init(&t, 4, 3), 0);
    for (int i = 0; i < 3; ++i) {
        snprintf(key, sizeof(key), "c%d", i);
        rh_client *cl = rh_clients_get(&t, key, 0);
        ck_assert_ptr_nonnull(cl);
        cl->held = 1;
        rh_client_touch(cl, 0);
    }
    ck_assert_ptr_null(rh_clients_get(&t, "c3", 0));
    ck_assert_ptr_nonnull(rh_clients_get(&t, "c1", 0));   /* known ones still found */
    rh_clients_free(&t);
}
END_TEST

Suite *clients_suite(void)
{
    Suite *s = suite_create("clients");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_same_key_same_entry);
    tcase_add_test(tc, test_open_rate_bucket);
    tcase_add_test(tc, test_unused_entries_forgotten_used_kept);
    tcase_add_test(tc, test_table_bound);
    suite_add_tcase(s, tc);
    return s;
}
