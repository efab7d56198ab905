/* client/rhc_xp_pull.c pull_dead_ms: how long a silent down response is given
 * before the tunnel resumes on a new connection; busy-silence resumes in a row
 * double it (a late, overloaded server must not get a resume storm). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"
#include "client_tests.h"

static rhc_tunnel *busy_tunnel(int64_t now)
{
    rhc_tunnel *t = calloc(1, sizeof(*t));
    ck_assert_ptr_nonnull(t);
    t->xp.down = t->xp.down_seen = RHC_XP_STREAM;
    t->sess.last_busy = now - 100;      /* data moved just now */
    return t;
}

START_TEST(test_idle_and_busy)
{
    struct rhc_req dr;
    int64_t now = 1000000;
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), BUSY_HB_DEAD_MS);
    dr.batch = 1;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), BUSY_POLL_DEAD_MS);
    /* out of the busy window: the old pace */
    t->sess.last_busy = now - RH_BUSY_WINDOW_MS;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);
    /* a long-poll started while busy is judged by its start: the server
     * answers it within a second of that, however late our window ends */
    dr.started = now - 2000;
    t->sess.last_busy = dr.started - 100;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now + RH_BUSY_WINDOW_MS), BUSY_POLL_DEAD_MS);
    dr.started = now + RH_BUSY_WINDOW_MS - 10;     /* ... one started after it: idle */
    ck_assert_int_eq(pull_dead_ms(t, &dr, now + RH_BUSY_WINDOW_MS), PULL_DEAD_MS);
    dr.started = 0;
    /* a transport not seen answering yet is the probe's business */
    t->sess.last_busy = now - 100;
    t->xp.down_seen = RHC_XP_BATCH;
    dr.batch = 0;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);
    free(t);
}
END_TEST

/* An idle long-poll is late once the server's announced poll time and a margin
 * passed: sooner than a stream's three heartbeats with the default 25 s, later
 * with a RelayPollTimeout above 45 s (the server answers only then). */
START_TEST(test_idle_long_poll_follows_the_announced_poll_time)
{
    struct rhc_req dr;
    int64_t now = 1000000;
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    t->xp.down = t->xp.down_seen = RHC_XP_BATCH;
    t->sess.last_busy = now - RH_BUSY_WINDOW_MS;
    dr.batch = 1;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);     /* an older server */
    t->sess.poll_ms = 1000 * RH_DEFAULT_POLL_S;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 1000 * RH_DEFAULT_POLL_S + POLL_LATE_MS);
    ck_assert_int_lt(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);
    t->sess.poll_ms = 600000;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 600000 + POLL_LATE_MS);
    /* busy: seconds, as before */
    t->sess.last_busy = now - 100;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), BUSY_POLL_DEAD_MS);
    /* a stream pull keeps its heartbeats' pace */
    dr.batch = 0;
    t->xp.down = t->xp.down_seen = RHC_XP_STREAM;
    t->sess.last_busy = now - RH_BUSY_WINDOW_MS;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);
    free(t);
}
END_TEST

START_TEST(test_resumes_in_a_row_double_the_wait)
{
    struct rhc_req dr;
    int64_t now = 1000000;
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    int64_t want = BUSY_HB_DEAD_MS;
    for (int i = 1; i <= SILENT_SHIFT_MAX + 2; ++i) {
        pull_silence_noted(t, now);
        if (i <= SILENT_SHIFT_MAX)
            want *= 2;
        int64_t w = want < PULL_DEAD_MS ? want : PULL_DEAD_MS;
        ck_assert_msg(pull_dead_ms(t, &dr, now) == w, "after %d resumes: %lld, want %lld", i,
                      (long long)pull_dead_ms(t, &dr, now), (long long)w);
        now += 1000;
        t->sess.last_busy = now - 100;
    }
    /* never above the idle pace */
    ck_assert_int_le(pull_dead_ms(t, &dr, now), PULL_DEAD_MS);
    /* a minute without one: back to seconds */
    now += SILENT_FORGET_MS;
    t->sess.last_busy = now - 100;
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), BUSY_HB_DEAD_MS);
    pull_silence_noted(t, now);
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 2 * BUSY_HB_DEAD_MS);
    free(t);
}
END_TEST

START_TEST(test_a_prompt_answer_forgets_the_resumes)
{
    struct rhc_req dr;
    int64_t now = 1000000;
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    dr.batch = 1;
    for (int i = 0; i < 3; ++i)
        pull_silence_noted(t, now);
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 8 * BUSY_POLL_DEAD_MS);
    /* a late answer (the server is slow): the doubling stays */
    dr.started = now - RH_BUSY_HEARTBEAT_MS - 500;
    pull_answered(t, &dr, now);
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 8 * BUSY_POLL_DEAD_MS);
    /* an answer right after the request: the path held the last one */
    dr.started = now - 20;
    pull_answered(t, &dr, now);
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), BUSY_POLL_DEAD_MS);
    pull_silence_noted(t, now);
    ck_assert_int_eq(pull_dead_ms(t, &dr, now), 2 * BUSY_POLL_DEAD_MS);
    free(t);
}
END_TEST

/* up_dead_at: unconfirmed up bytes on a push while the down response is alive.
 * Padded heartbeats (an intermediary holding a partly filled buffer) restart
 * the wait, but all of them together put it off by ACK_STALL_MS at most. */
START_TEST(test_pads_put_up_dead_off_once)
{
    struct rhc_req dr, sp;
    int64_t now = 1000000;
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    memset(&sp, 0, sizeof(sp));
    t->rq.pull = &dr;
    t->rq.spush = &sp;
    t->xp.up = RHC_XP_STREAM;
    t->sess.resume = 1;
    t->up.sent = 5000;
    t->up.acked = 1000;
    t->down.last_rx = now;
    t->push.ack_wait_since = now;
    t->push.dead_ms = 2 * UP_DEAD_MS;           /* doubled by an earlier stall */
    ck_assert_int_eq(up_dead_at(t, now), now + 2 * UP_DEAD_MS);
    /* three padded heartbeats, ACK_STALL_MS apart, each restarting the wait */
    for (int i = 1; i <= FLUSH_MAX; ++i) {
        int64_t at = now + i * ACK_STALL_MS;
        if (!t->push.pads++)
            t->push.pad_from = t->push.ack_wait_since;
        t->push.ack_wait_since = at;
        t->down.last_rx = at;
    }
    ck_assert_int_eq(up_dead_at(t, now + FLUSH_MAX * ACK_STALL_MS),
                     now + 2 * UP_DEAD_MS + ACK_STALL_MS);
    /* without pads the restarted wait counts whole */
    t->push.pad_from = 0;
    ck_assert_int_eq(up_dead_at(t, now + FLUSH_MAX * ACK_STALL_MS),
                     now + FLUSH_MAX * ACK_STALL_MS + 2 * UP_DEAD_MS);
    free(t);
}
END_TEST

/* A push whose connection is not up yet gets CONNECT_DEAD_MS from its start
 * before its unconfirmed bytes call it dead (on a server busy with thousands
 * of handshakes a push took seconds to connect, and was given up 3 s after it
 * started, handshake and all, again and again), but no more (a black-holed
 * connect is left in seconds); once up, its 3 s start then. */
START_TEST(test_a_push_still_connecting_is_not_dead)
{
    struct rhc_req dr, sp;
    rhc_ctx c;
    int64_t now = rh_now_ms();
    rhc_tunnel *t = busy_tunnel(now);
    memset(&dr, 0, sizeof(dr));
    memset(&sp, 0, sizeof(sp));
    memset(&c, 0, sizeof(c));
    t->ctx = &c;
    t->rq.pull = &dr;
    t->rq.spush = &sp;
    sp.t = t;
    sp.ctx = &c;
    t->xp.up = RHC_XP_STREAM;
    t->sess.resume = 1;
    t->up.sent = 18;
    t->up.acked = 17;
    t->down.last_rx = now;
    t->push.ack_wait_since = now - 5000;        /* sent with the push, 5 s ago */
    sp.started = now - 5000;
    sp.gate = GATE_CONNECTING;
    c.nconnecting = 1;
    ck_assert_int_eq(up_dead_at(t, now), now - 5000 + CONNECT_DEAD_MS);
    sp.gate = GATE_NONE;                        /* judged as before once up ... */
    ck_assert_int_eq(up_dead_at(t, now), now - 5000 + UP_DEAD_MS);
    sp.gate = GATE_CONNECTING;
    rhc_gate_connected(&sp);                    /* ... but its clock starts then */
    ck_assert_int_eq(sp.gate, GATE_NONE);
    ck_assert_uint_eq(c.nconnecting, 0);
    ck_assert_int_ge(t->push.ack_wait_since, now);
    ck_assert_int_ge(up_dead_at(t, now), now + UP_DEAD_MS);
    free(c.due);
    free(t);
}
END_TEST

Suite *liveness_suite(void)
{
    Suite *s = suite_create("client liveness");
    TCase *tc = tcase_create("pull_dead_ms");
    tcase_add_test(tc, test_idle_and_busy);
    tcase_add_test(tc, test_idle_long_poll_follows_the_announced_poll_time);
    tcase_add_test(tc, test_resumes_in_a_row_double_the_wait);
    tcase_add_test(tc, test_a_prompt_answer_forgets_the_resumes);
    tcase_add_test(tc, test_pads_put_up_dead_off_once);
    tcase_add_test(tc, test_a_push_still_connecting_is_not_dead);
    suite_add_tcase(s, tc);
    return s;
}
