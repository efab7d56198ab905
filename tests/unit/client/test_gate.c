/* The gate of new connections (client/rhc_gate.c): at most CONNECTING_MAX
 * requests connecting at once, the others waiting in order; a request that
 * connects, ends or is freed makes room for the next, and none overtakes. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "client_tests.h"
#include "rh_util.h"
#include "rhc_gate.h"
#include "rhc_req.h"
#include "rhc_tunnel_int.h"

#define NREQ (CONNECTING_MAX + 40)

static rhc_ctx ctx;
static struct rhc_req req[NREQ];

static void setup(void)
{
    memset(&ctx, 0, sizeof(ctx));
    memset(req, 0, sizeof(req));
    ctx.multi = curl_multi_init();
    ck_assert_ptr_nonnull(ctx.multi);
    for (int i = 0; i < NREQ; ++i) {
        req[i].ctx = &ctx;
        req[i].h = curl_easy_init();
        ck_assert_ptr_nonnull(req[i].h);
        /* never performed: adding a handle connects nothing by itself */
        curl_easy_setopt(req[i].h, CURLOPT_URL, "http://127.0.0.1:9/");
    }
}

static void teardown(void)
{
    for (int i = 0; i < NREQ; ++i) {
        rhc_gate_forget(&req[i]);
        curl_multi_remove_handle(ctx.multi, req[i].h);
        curl_easy_cleanup(req[i].h);
    }
    curl_multi_cleanup(ctx.multi);
}

/* The waiting line from its head, as request indexes; checks the back links. */
static int line_of(int *idx)
{
    int n = 0;
    const struct rhc_req *prev = NULL;

    for (struct rhc_req *r = ctx.gate_head; r; r = r->gate_next) {
        if (r->gate_prev != prev || r->gate != GATE_WAITING)
            return -1;
        idx[n++] = (int)(r - req);
        prev = r;
    }
    return prev == ctx.gate_tail ? n : -1;
}

static int count_state(int gate)
{
    int n = 0;

    for (int i = 0; i < NREQ; ++i)
        n += req[i].gate == gate;
    return n;
}

START_TEST(gate_caps_connecting_and_keeps_order)
{
    int idx[NREQ];

    for (int i = 0; i < NREQ; ++i)
        ck_assert_int_eq(rhc_gate_go(&req[i]), 0);
    ck_assert_uint_eq(ctx.nconnecting, CONNECTING_MAX);
    ck_assert_uint_eq(ctx.ngated, NREQ - CONNECTING_MAX);
    ck_assert_int_eq(count_state(GATE_CONNECTING), CONNECTING_MAX);
    ck_assert_int_eq(line_of(idx), NREQ - CONNECTING_MAX);
    for (int k = 0; k < NREQ - CONNECTING_MAX; ++k)
        ck_assert_int_eq(idx[k], CONNECTING_MAX + k);

    /* ten connect (twice said: counted once), two end, one waiting is freed */
    for (int i = 0; i < 10; ++i) {
        rhc_gate_connected(&req[i]);
        rhc_gate_connected(&req[i]);
    }
    rhc_gate_forget(&req[10]);
    rhc_gate_forget(&req[11]);
    rhc_gate_forget(&req[CONNECTING_MAX + 1]);
    ck_assert_uint_eq(ctx.nconnecting, CONNECTING_MAX - 12);
    ck_assert_uint_eq(ctx.ngated, NREQ - CONNECTING_MAX - 1);

    rhc_gate_release(&ctx);
    ck_assert_uint_eq(ctx.nconnecting, CONNECTING_MAX);
    /* the first twelve of the line went, in order, the freed one skipped */
    int n = line_of(idx);
    ck_assert_int_eq(n, NREQ - CONNECTING_MAX - 13);
    ck_assert_int_eq(idx[0], CONNECTING_MAX + 13);
    ck_assert_int_eq(req[CONNECTING_MAX].gate, GATE_CONNECTING);
    ck_assert_int_eq(req[CONNECTING_MAX + 1].gate, GATE_NONE);
    ck_assert_int_eq(req[CONNECTING_MAX + 12].gate, GATE_CONNECTING);
}
END_TEST

START_TEST(gate_lets_none_overtake_the_line)
{
    int idx[NREQ];

    for (int i = 0; i < CONNECTING_MAX + 2; ++i)
        rhc_gate_go(&req[i]);
    rhc_gate_connected(&req[0]);        /* room for one, two waiting */
    rhc_gate_go(&req[CONNECTING_MAX + 2]);
    ck_assert_int_eq(req[CONNECTING_MAX + 2].gate, GATE_WAITING);
    ck_assert_int_eq(line_of(idx), 3);
    ck_assert_int_eq(idx[2], CONNECTING_MAX + 2);
    rhc_gate_release(&ctx);
    ck_assert_int_eq(req[CONNECTING_MAX].gate, GATE_CONNECTING);
    ck_assert_int_eq(req[CONNECTING_MAX + 1].gate, GATE_WAITING);
    ck_assert(req_waiting(&req[CONNECTING_MAX + 2]));

    /* everything waiting freed: an empty line, the next goes at once */
    rhc_gate_forget(&req[CONNECTING_MAX + 1]);
    rhc_gate_forget(&req[CONNECTING_MAX + 2]);
    ck_assert_ptr_null(ctx.gate_head);
    ck_assert_ptr_null(ctx.gate_tail);
    ck_assert_uint_eq(ctx.ngated, 0);
    rhc_gate_connected(&req[1]);
    rhc_gate_go(&req[CONNECTING_MAX + 3]);
    ck_assert_int_eq(req[CONNECTING_MAX + 3].gate, GATE_CONNECTING);
}
END_TEST

/* Connects that time out halve the bound, once per round (requests started
 * before the last cut do not cut again), down to CONNECTING_MIN; refusals do
 * not cut; CONNECTING_MAX connections up raise it by one. */
START_TEST(gate_adapts_to_connect_timeouts)
{
    int64_t later = rh_now_ms() + 60000;

    for (int i = 0; i < NREQ; ++i)
        rhc_gate_go(&req[i]);
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MAX);
    rhc_gate_ended(&req[0], CURLE_COULDNT_CONNECT);         /* refused: no sign */
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MAX);
    rhc_gate_ended(&req[CONNECTING_MAX], CURLE_OPERATION_TIMEDOUT); /* waiting: none */
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MAX);
    rhc_gate_ended(&req[0], CURLE_OPERATION_TIMEDOUT);
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MAX / 2);
    rhc_gate_ended(&req[1], CURLE_OPERATION_TIMEDOUT);      /* the same round */
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MAX / 2);
    for (int i = 0; i < CONNECTING_MAX; ++i)
        rhc_gate_forget(&req[i]);
    rhc_gate_release(&ctx);
    ck_assert_uint_eq(ctx.nconnecting, CONNECTING_MAX / 2);
    ck_assert_int_eq(req[CONNECTING_MAX + CONNECTING_MAX / 2].gate, GATE_WAITING);
    /* later rounds: halved each time, never under the floor */
    size_t want = CONNECTING_MAX / 2;
    for (int k = 0; k < 6; ++k) {
        struct rhc_req *r = &req[CONNECTING_MAX + k];
        r->started = later + k;
        rhc_gate_ended(r, CURLE_OPERATION_TIMEDOUT);
        want = want / 2 < CONNECTING_MIN ? CONNECTING_MIN : want / 2;
        ck_assert_uint_eq(rhc_gate_cap(&ctx), want);
        rhc_gate_forget(r);
    }
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MIN);
    /* connections up raise it again, by one per CONNECTING_MAX */
    rhc_gate_release(&ctx);
    size_t ups = 0;
    for (int i = 0; ups < CONNECTING_MAX + 1; i = (i + 1) % NREQ) {
        if (req[i].gate != GATE_CONNECTING)
            continue;
        rhc_gate_connected(&req[i]);
        ++ups;
        curl_multi_remove_handle(ctx.multi, req[i].h);
        ck_assert_int_eq(rhc_gate_go(&req[i]), 0);  /* in line again, for the next round */
        rhc_gate_release(&ctx);
    }
    ck_assert_uint_eq(rhc_gate_cap(&ctx), CONNECTING_MIN + 1);
    /* those in flight when it was cut are not stopped; what starts keeps to it */
    for (int i = 0; i < NREQ; ++i)
        if (req[i].gate == GATE_CONNECTING)
            rhc_gate_forget(&req[i]);
    rhc_gate_release(&ctx);
    ck_assert_uint_eq(ctx.nconnecting, CONNECTING_MIN + 1);
}
END_TEST

Suite *gate_suite(void)
{
    Suite *s = suite_create("gate");
    TCase *tc = tcase_create("gate");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, gate_caps_connecting_and_keeps_order);
    tcase_add_test(tc, gate_lets_none_overtake_the_line);
    tcase_add_test(tc, gate_adapts_to_connect_timeouts);
    suite_add_tcase(s, tc);
    return s;
}
