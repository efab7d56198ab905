/* Relay core tests: rendezvous (rh_pair.c). A LISTEN waits for an OPEN of its
 * service; the two become two sessions, each the other's target. */
#include "test_core_fx.h"

/* Reads a pull's frames until want bytes of data came; fails on anything else
 * than D, H, A. */
static void pull_expect(frd *r, const char *want)
{
    size_t got = 0, n = strlen(want);
    char buf[256];
    rh_frame_event ev;
    while (got < n) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull ended after %zu of %zu bytes", got, n);
        if (ev.type != RH_FEV_DATA)
            continue;
        ck_assert_uint_le(got + ev.len, sizeof(buf));
        memcpy(buf + got, ev.data, ev.len);
        got += ev.len;
    }
    ck_assert_uint_eq(got, n);
    ck_assert(memcmp(buf, want, n) == 0);
}

/* The next frame that is not a heartbeat or an ack. */
static rh_frame_event_type pull_next_kind(frd *r)
{
    rh_frame_event ev;
    for (;;) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull ended without a frame");
        if (ev.type != RH_FEV_HEARTBEAT && ev.type != RH_FEV_ACK)
            return ev.type;
    }
}

/* Pairs a listen and an open of svc: the client leg's and the serve leg's token. */
static void pair_up(const char *svc, char a[RH_TOKEN_LEN + 1], char b[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX];
    int lfd = cx();
    send_str(lfd, "LISTEN ");
    send_str(lfd, svc);
    send_str(lfd, " 4096 30 5 resume=65536\n");
    sleep_ms(100);   /* waiting in the core before the open comes */
    req(reply, sizeof(reply), "OPEN %s - 0 4096 30 5 resume=65536 service\n", svc);
    ck_assert_msg(strncmp(reply, "OK ", 3) == 0, "open: %s", reply);
    snprintf(a, RH_TOKEN_LEN + 1, "%.48s", reply + 3);
    read_reply(lfd, reply, sizeof(reply), IO_MS);
    ck_assert_msg(strncmp(reply, "OK ", 3) == 0, "listen: %s", reply);
    snprintf(b, RH_TOKEN_LEN + 1, "%.48s", reply + 3);
    xclose(lfd);
    assert_token(a);
    assert_token(b);
    ck_assert(strcmp(a, b) != 0);
}

/* No serve: an open waits (connect_s, here 1 s) and hears 503 no-server; a
 * listen with no client answers OK alone after its poll time. */
START_TEST(test_unserved_and_empty_listen)
{
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    long t0 = now_ms();
    req(reply, sizeof(reply), "OPEN svc - 0 4096 30 1 service\n");
    ck_assert_msg(!strncmp(reply, "ERR 503 reason=" RH_REASON_TOKEN_NO_SERVER " ", 23)
                  && strstr(reply, "none has since"), "reply: %s", reply);
    ck_assert_int_ge(now_ms() - t0, 900);
    req(reply, sizeof(reply), "LISTEN svc 4096 30 1\n");
    ck_assert_str_eq(reply, "OK");
    req(reply, sizeof(reply), "OPEN svc - 0 4096 30 1 service\n");
    ck_assert_msg(strstr(reply, "no server serves 'svc' now") != NULL, "reply: %s", reply);
    /* a plain target still needs its address */
    req(reply, sizeof(reply), "OPEN t1 - 0 4096 30 1\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    ck_assert_uint_eq(reg_active(), 0);
    core_stop();
}
END_TEST

/* Paired legs carry bytes both ways, each leg's up is the other's down. */
START_TEST(test_pair_carries_both_ways)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1];
    core_start(8, 20);
    pair_up("svc", a, b);
    ck_assert_uint_eq(reg_active(), 2);
    int pa = push_open(a, 0), pb = push_open(b, 0);
    frd *ra = frd_new(pull_open(a, 0)), *rb = frd_new(pull_open(b, 0));
    send_frame(pa, RH_FRAME_DATA, "from the client", 15);
    pull_expect(rb, "from the client");
    send_frame(pb, RH_FRAME_DATA, "from the serve", 14);
    pull_expect(ra, "from the serve");
    /* a FIN on one leg is a FIN on the other */
    send_frame(pa, RH_FRAME_FIN, NULL, 0);
    ck_assert_int_eq(pull_next_kind(rb), RH_FEV_FIN);
    frd_free(ra);
    frd_free(rb);
    xclose(pa);
    xclose(pb);
    core_stop();
}
END_TEST

/* A reset of one leg reaches the other as a reset, not a clean end. */
START_TEST(test_pair_reset_reaches_peer)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    pair_up("svc", a, b);
    frd *ra = frd_new(pull_open(a, 0));
    req(reply, sizeof(reply), "CLOSE %s\n", b);
    ck_assert_str_eq(reply, "OK");
    ck_assert_int_eq(pull_next_kind(ra), RH_FEV_RESET);
    ck_assert(log_has("reset (closed by client)"));
    frd_free(ra);
    core_stop();
}
END_TEST

void core_pair_tests(const core_tcases *t)
{
    tcase_add_test(t->requests, test_unserved_and_empty_listen);
    tcase_add_test(t->data, test_pair_carries_both_ways);
    tcase_add_test(t->data, test_pair_reset_reaches_peer);
}
