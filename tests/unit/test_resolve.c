/* The relay core's resolver threads (rh_resolve.c) and RESOLVE through the
 * running core: answers by id, the queue's bound, a name that does not
 * resolve, the IPC line. */
#include <poll.h>
#include <string.h>

#include "rh_ipc.h"
#include "rh_resolve.h"
#include "tests.h"

static int wait_answer(rh_resolver *r, rh_resolved *out)
{
    for (int i = 0; i < 100; ++i) {
        struct pollfd p = { .fd = rh_resolver_fd(r), .events = POLLIN };
        poll(&p, 1, 100);
        if (rh_resolver_take(r, out))
            return 1;
    }
    return 0;
}

START_TEST(resolves_numbers_and_localhost_by_id)
{
    rh_resolver *r = rh_resolver_new();
    rh_resolved a;
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(rh_resolver_submit(r, 7, "localhost"), 0);
    ck_assert(wait_answer(r, &a));
    ck_assert_uint_eq(a.id, 7);
    ck_assert_int_eq(a.err, 0);
    ck_assert_int_ge(a.n, 1);
    int loop = 0;
    for (int i = 0; i < a.n; ++i)
        loop |= (a.addr[i].family == 4 && a.addr[i].a[0] == 127)
              || (a.addr[i].family == 6 && a.addr[i].a[15] == 1);
    ck_assert(loop);
    ck_assert_int_eq(rh_resolver_submit(r, 8, "no-such-name.invalid"), 0);
    ck_assert(wait_answer(r, &a));
    ck_assert_uint_eq(a.id, 8);
    ck_assert_int_ne(a.err, 0);
    rh_resolver_free(r);
}
END_TEST

START_TEST(the_queue_is_bounded)
{
    rh_resolver *r = rh_resolver_new();
    int taken = 0, refused = 0;
    for (int i = 0; i < 3 * RH_RESOLVE_QUEUE; ++i) {
        if (rh_resolver_submit(r, (uint64_t)i, "localhost") == 0)
            ++taken;
        else
            ++refused;
    }
    ck_assert_int_le(taken, RH_RESOLVE_QUEUE + RH_RESOLVE_THREADS);
    ck_assert_int_gt(refused, 0);
    rh_resolved a;
    int got = 0;
    while (got < taken && wait_answer(r, &a))
        ++got;
    ck_assert_int_eq(got, taken);
    rh_resolver_free(r);
}
END_TEST

START_TEST(resolve_line_round_trip)
{
    rh_ipc_req q, back;
    char line[RH_IPC_LINE_MAX];
    memset(&q, 0, sizeof(q));
    q.op = RH_IPC_RESOLVE;
    strcpy(q.name, "db.example.com");
    q.timeout_s = 10;
    ck_assert_int_gt(rh_ipc_format_req(line, sizeof(line), &q), 0);
    line[strlen(line) - 1] = '\0';
    ck_assert_int_eq(rh_ipc_parse_req(line, &back), 0);
    ck_assert_int_eq(back.op, RH_IPC_RESOLVE);
    ck_assert_str_eq(back.name, "db.example.com");
    ck_assert_uint_eq(back.timeout_s, 10);
    ck_assert_int_eq(rh_ipc_parse_req("RESOLVE x 0", &back), -1);
    ck_assert_int_eq(rh_ipc_parse_req("RESOLVE x", &back), -1);
}
END_TEST

Suite *resolve_suite(void)
{
    Suite *s = suite_create("resolve");
    TCase *tc = tcase_create("resolve");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, resolves_numbers_and_localhost_by_id);
    tcase_add_test(tc, the_queue_is_bounded);
    tcase_add_test(tc, resolve_line_round_trip);
    suite_add_tcase(s, tc);
    return s;
}
