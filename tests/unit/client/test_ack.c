/* Acknowledging down bytes in a stream push (client/rhc_ack.c): the quiet ack
 * rides in the open push as an A frame only when nothing can hold it there,
 * the push's answer confirms it, and a push that ends without one gives the
 * ack back to the request path. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "client_tests.h"
#include "rh_frame.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"

static rhc_tunnel tun;
static struct rhc_req push;

/* An open stream push, every up byte confirmed, 1 down byte unacknowledged. */
static void setup(void)
{
    memset(&tun, 0, sizeof(tun));
    memset(&push, 0, sizeof(push));
    push.kind = REQ_PUSH;
    push.t = &tun;
    push.streamed = 1;
    tun.rq.spush = &push;
    tun.xp.up = tun.xp.down = RHC_XP_STREAM;
    tun.sess.resume = 1;
    tun.ack.every = 4u << 20;
    tun.down.off = 18;
    tun.ack.sent = tun.ack.conf = 17;
}

START_TEST(test_quiet_ack_rides_only_where_nothing_holds_it)
{
    ck_assert(ack_by_push(&tun, 1));
    /* each of these keeps it a request of its own */
    ck_assert(!ack_by_push(&tun, 0));
    ck_assert(!ack_by_push(&tun, tun.ack.every));       /* a bulk download's ack */
#define NOT_WITH(field, value) do { \
        __typeof__(field) was_ = (field); (field) = (value); \
        ck_assert_msg(!ack_by_push(&tun, 1), "rides with " #field " = " #value); \
        (field) = was_; ck_assert(ack_by_push(&tun, 1)); } while (0)
    NOT_WITH(tun.rq.spush, NULL);
    NOT_WITH(tun.xp.up, RHC_XP_BATCH);
    NOT_WITH(push.gate, GATE_CONNECTING);       /* not up yet */
    NOT_WITH(push.gate, GATE_WAITING);
    NOT_WITH(push.end_wanted, 1);
    NOT_WITH(push.body_ended, 1);
    NOT_WITH(push.p_fin, 1);
    NOT_WITH(push.p_r, 1);
    NOT_WITH(push.streamed, 0);
    NOT_WITH(tun.rq.spush_next, &push);
    NOT_WITH(tun.push.r_pending, 1);
    NOT_WITH(tun.push.pads, 1);                 /* a path that holds small chunks */
    NOT_WITH(tun.xp.switching, 1);
    NOT_WITH(tun.xp.up_hold, 1);
    NOT_WITH(tun.ack.n, 1);                     /* an ack request in flight */
    NOT_WITH(tun.up.sent, 5);                   /* up bytes not confirmed: ahead of it */
#undef NOT_WITH
}
END_TEST

START_TEST(test_ack_frame_then_the_answer_confirms_it)
{
    char buf[64];
    rh_frame_parser p;
    rh_frame_event ev;

    ck_assert_uint_eq(ack_frame(&tun, &push, buf, sizeof(buf)), 0);   /* none pending */
    tun.push.a_pending = 1;
    tun.push.a_off = 18;
    tun.ack.sent = 18;
    ck_assert_uint_eq(ack_frame(&tun, &push, buf, RH_FRAME_HDR + 7), 0);  /* no room */
    ck_assert_int_eq(tun.push.a_pending, 1);
    size_t n = ack_frame(&tun, &push, buf, sizeof(buf));
    ck_assert_uint_eq(n, RH_FRAME_HDR + 8);
    ck_assert_int_eq(tun.push.a_pending, 0);
    rh_frame_parser_init(&p);
    ck_assert_uint_eq(rh_frame_parse(&p, (unsigned char *)buf, n, "DCHFRA", &ev), n);
    ck_assert_int_eq(ev.type, RH_FEV_ACK);
    ck_assert_uint_eq(ev.offset, 18);
    /* cut before its answer: the ack goes again */
    ack_push_done(&tun, &push, CURLE_RECV_ERROR);
    ck_assert_uint_eq(tun.ack.conf, 17);
    ck_assert_uint_eq(tun.ack.sent, 17);
    /* answered: confirmed */
    tun.ack.sent = 18;
    push.hdr_done = 1;
    push.status = 200;
    ack_push_done(&tun, &push, CURLE_OK);
    ck_assert_uint_eq(tun.ack.conf, 18);
    ck_assert_uint_eq(tun.ack.sent, 18);
}
END_TEST

START_TEST(test_a_pending_ack_that_never_left_goes_again)
{
    tun.push.a_pending = 1;
    tun.push.a_off = 18;
    tun.ack.sent = 18;
    push.hdr_done = 1;
    push.status = 200;
    ack_push_done(&tun, &push, CURLE_OK);       /* ended (parked) before it went */
    ck_assert_int_eq(tun.push.a_pending, 0);
    ck_assert_uint_eq(tun.ack.conf, 17);
    ck_assert_uint_eq(tun.ack.sent, 17);
}
END_TEST

Suite *ack_suite(void)
{
    Suite *s = suite_create("ack");
    TCase *tc = tcase_create("ack");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_quiet_ack_rides_only_where_nothing_holds_it);
    tcase_add_test(tc, test_ack_frame_then_the_answer_confirms_it);
    tcase_add_test(tc, test_a_pending_ack_that_never_left_goes_again);
    suite_add_tcase(s, tc);
    return s;
}
