/* Relay core tests: idle timeouts and heartbeats. */
#include "test_core_fx.h"

/* ---- tests: timers -------------------------------------------------------------------- */

START_TEST(test_idle_timeout)
{
    char tok[RH_TOKEN_LEN + 1], tok2[RH_TOKEN_LEN + 1], keep[3][RH_TOKEN_LEN + 1];
    char reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    /* long-lived sessions around the short ones share the timer heap */
    open_session(port, 65536, 30, keep[0]);
    open_session(port, 65536, 1, tok);
    int tk0 = tcp_accept(l, IO_MS);
    int t = tcp_accept(l, IO_MS);
    open_session(port, 65536, 30, keep[1]);
    open_session(port, 65536, 1, tok2);               /* nothing attached at all */
    int tk1 = tcp_accept(l, IO_MS);
    int t2 = tcp_accept(l, IO_MS);
    open_session(port, 65536, 30, keep[2]);
    ck_assert(tk0 >= 0 && tk1 >= 0);
    long t0 = now_ms();
    frd *pr = pull_start(tok, 0, 0);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    long dt = now_ms() - t0;
    ck_assert_msg(dt >= 800 && dt < 2500, "idle reset after %ld ms (1 s asked)", dt);
    ck_assert_msg(memmem(ev.data, ev.len, "idle", 4) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_msg(WAIT_FOR(reg_active() == 3, 2000), "%u sessions left", reg_active());
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert_int_eq(target_read_end(t2, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(log_has("idle timeout"));
    ck_assert(!session_alive(tok) && !session_alive(tok2));
    for (int i = 0; i < 3; ++i)
        ck_assert_msg(session_alive(keep[i]), "session %d with idle 30 s ended", i);
    /* taking one out of the middle of the heap leaves the others in order */
    req(reply, sizeof(reply), "CLOSE %s\n", keep[1]);
    ck_assert_str_eq(reply, "OK");
    ck_assert(WAIT_FOR(reg_active() == 2, IO_MS));
    ck_assert(session_alive(keep[0]) && session_alive(keep[2]));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Frames on the push keep a session alive past its idle timeout (PROTOCOL.md
 * Timeouts: the client is heard from). */
START_TEST(test_idle_refreshed_by_push)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    long t0 = now_ms(), end = t0 + 2500;
    while (now_ms() < end) {
        send_frame(push, RH_FRAME_HEARTBEAT, NULL, 0);
        sleep_ms(200);
        ck_assert_msg(session_alive(tok), "session reset after %ld ms of H every 200 ms "
                      "on the push (idle 1 s)", now_ms() - t0);
    }
    send_frame(push, RH_FRAME_DATA, "still", 5);
    target_expect(t, "still");
    ck_assert(!log_has("idle timeout"));
    xclose(l);
    core_stop();
}
END_TEST

/* PROTOCOL.md Timeouts: the idle timer counts only what comes from the client.
 * A target that keeps talking to a silent client does not keep the session. */
START_TEST(test_idle_not_refreshed_by_target_bytes)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    long t0 = now_ms();
    frd *pr = pull_start(tok, 0, 0);
    uint64_t got = 0, sent = 0;
    rh_frame_event ev;
    for (;;) {
        ck_assert_msg(now_ms() - t0 < 3000, "session alive after %ld ms (idle 1 s)",
                      now_ms() - t0);
        /* no assertion on the send: the reset shows on the pull with its reason */
        if (send(t, "d", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
            sent++;
        int rv = frd_next(pr, 100, &ev);
        if (rv == -ETIMEDOUT)
            continue;
        ck_assert_msg(rv == 1, "pull: %s", rv == 0 ? "EOF" : strerror(-rv));
        if (ev.type == RH_FEV_DATA)
            got += ev.len;
        else if (ev.type == RH_FEV_RESET)
            break;
        else
            ck_assert_msg(ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK,
                          "pull: event %s", fev_name(ev.type));
    }
    long dt = now_ms() - t0;
    ck_assert_msg(memmem(ev.data, ev.len, "idle", 4) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    ck_assert_msg(dt >= 800 && dt < 2500, "idle reset after %ld ms (1 s asked)", dt);
    ck_assert_msg(got >= 3, "only %llu of %llu target bytes came through before the reset",
                  (unsigned long long)got, (unsigned long long)sent);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_heartbeat)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 1);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    /* the H at the start of the pull does not count: the next one comes after 1 s */
    frd *pr = pull_start(tok, 0, 0);
    long t0 = now_ms();
    rh_frame_event ev;
    ck_assert_int_eq(frd_next(pr, 2500, &ev), 1);
    long dt = now_ms() - t0;
    ck_assert_msg(ev.type == RH_FEV_HEARTBEAT, "event %s", fev_name(ev.type));
    ck_assert_msg(dt >= 700 && dt <= 2200, "first heartbeat after %ld ms (1 s asked)", dt);
    /* data resets the heartbeat clock and goes first */
    target_send(t, "x", 1);
    ck_assert_int_eq(frd_next(pr, IO_MS, &ev), 1);
    ck_assert_msg(ev.type == RH_FEV_DATA && ev.len == 1 && ev.data[0] == 'x',
                  "event %s", fev_name(ev.type));
    t0 = now_ms();
    ck_assert_int_eq(frd_next(pr, 2500, &ev), 1);
    ck_assert_msg(ev.type == RH_FEV_HEARTBEAT, "event %s", fev_name(ev.type));
    dt = now_ms() - t0;
    ck_assert_msg(dt >= 700 && dt <= 2200, "heartbeat %ld ms after data", dt);
    frd_free(pr);
    xclose(l);
    core_stop();
    free(CF.reg);
    CF.reg = NULL;

    /* the interval belongs to the run: a core started without one (0: the
     * default, 20 s) does not keep the 1 s of the run before */
    core_start(8, 0);
    l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    ck_assert_int_ge(tcp_accept(l, IO_MS), 0);
    pr = pull_start(tok, 0, 0);
    frd_expect_quiet(pr, 1200);
    ck_assert_int_eq(pr->nbeats, 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Idle heartbeats of an interval of 2 s or more are due at the last whole
 * second of the monotonic clock before the interval runs out, so that those
 * of many tunnels go out together: never later than the interval, at most a
 * second earlier, then on the second. */
START_TEST(test_idle_heartbeats_on_the_second)
{
    core_start(8, 2);
    int port, l = tcp_listen(&port, 0, 8);
    char tok[RH_TOKEN_LEN + 1];
    open_session(port, 65536, 30, tok);
    ck_assert_int_ge(tcp_accept(l, IO_MS), 0);
    while (now_ms() % 1000 < 500 || now_ms() % 1000 >= 600)
        sleep_ms(10);           /* the pull starts half-way into a second */
    frd *pr = pull_start(tok, 0, 0);
    long prev = now_ms();
    for (int i = 0; i < 3; ++i) {
        rh_frame_event ev;
        ck_assert_int_eq(frd_next(pr, 3500, &ev), 1);
        long t = now_ms();
        ck_assert_msg(ev.type == RH_FEV_HEARTBEAT, "event %s", fev_name(ev.type));
        ck_assert_msg(t - prev >= 900 && t - prev <= 2400, "heartbeat %d after %ld ms (2 s "
                      "asked, at most a second early)", i, t - prev);
        ck_assert_msg(t % 1000 < 400, "heartbeat %d at %ld ms past a whole second", i,
                      t % 1000);
        prev = t;
    }
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

void core_timers_tests(const core_tcases *t)
{
    tcase_add_test(t->timers, test_idle_timeout);
    tcase_add_test(t->timers, test_idle_refreshed_by_push);
    tcase_add_test(t->timers, test_idle_not_refreshed_by_target_bytes);
    tcase_add_test(t->timers, test_heartbeat);
    tcase_add_test(t->timers, test_idle_heartbeats_on_the_second);
}
