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

/* Sends a LISTEN of svc and waits until it waits in the core. */
static int listen_wait(const char *svc)
{
    int lfd = cx();
    send_str(lfd, "LISTEN ");
    send_str(lfd, svc);
    send_str(lfd, " 4096 30 5 resume=65536\n");
    sleep_ms(100);   /* waiting in the core before the open comes */
    return lfd;
}

/* Sends an OPEN of svc; its answer comes once a serve leg is taken. */
static int open_send(const char *svc)
{
    int ofd = cx();
    send_str(ofd, "OPEN ");
    send_str(ofd, svc);
    send_str(ofd, " - 0 4096 30 5 resume=65536 service\n");
    return ofd;
}

/* The token of an OK answer on fd. */
static void token_of(int fd, const char *what, char tok[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX];
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ck_assert_msg(strncmp(reply, "OK ", 3) == 0, "%s: %s", what, reply);
    snprintf(tok, RH_TOKEN_LEN + 1, "%.48s", reply + 3);
    assert_token(tok);
}

/* Pairs a listen and an open of svc: the client leg's and the serve leg's
 * token. The open is answered only when the serve leg is taken (here by an
 * ACK, its first request). */
static void pair_up(const char *svc, char a[RH_TOKEN_LEN + 1], char b[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX];
    int lfd = listen_wait(svc), ofd = open_send(svc);
    token_of(lfd, "listen", b);
    assert_no_reply(ofd, 300, "open before its serve leg was taken");
    req(reply, sizeof(reply), "ACK %s 0\n", b);
    ASSERT_PREFIX(reply, "OK ");
    token_of(ofd, "open", a);
    xclose(lfd);
    xclose(ofd);
    ck_assert(strcmp(a, b) != 0);
}

/* A core with svc paired, and a push attached to each leg. */
static void pair_pushes(char a[RH_TOKEN_LEN + 1], char b[RH_TOKEN_LEN + 1], int *pa, int *pb)
{
    core_start(8, 20);
    pair_up("svc", a, b);
    ck_assert_uint_eq(reg_active(), 2);
    *pa = push_open(a, 0);
    *pb = push_open(b, 0);
}

/* ... and its end: the pushes go, then the core. */
static void pair_pushes_end(int pa, int pb)
{
    xclose(pa);
    xclose(pb);
    core_stop();
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
    int pa, pb;
    pair_pushes(a, b, &pa, &pb);
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
    pair_pushes_end(pa, pb);
}
END_TEST

/* A serve that has everything closes right after its last bytes and FIN:
 * they still reach the client leg, which ends cleanly, not reset. (Here the
 * stream pull has detached after its F by the time of the close, so this
 * guards the clean path; the held duplex pull of the chaos soak, which the
 * close used to reset both legs under, is not reproduced by the fixture.) */
START_TEST(test_pair_close_with_pull_attached)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int pa, pb;
    pair_pushes(a, b, &pa, &pb);
    frd *rb = frd_new(pull_open(b, 0));
    send_frame(pa, RH_FRAME_FIN, NULL, 0);             /* the client has sent all */
    ck_assert_int_eq(pull_next_kind(rb), RH_FEV_FIN);  /* ... and the serve has it */
    send_frame(pb, RH_FRAME_DATA, "the last bytes", 14);
    send_frame(pb, RH_FRAME_FIN, NULL, 0);
    req(reply, sizeof(reply), "CLOSE %s\n", b);
    ck_assert_str_eq(reply, "OK");
    frd_free(rb);                                       /* the duplex ends after */
    frd *ra = frd_new(pull_open(a, 0));
    pull_expect(ra, "the last bytes");
    ck_assert_int_eq(pull_next_kind(ra), RH_FEV_FIN);
    ck_assert(!log_has("reset (closed by client)"));
    frd_free(ra);
    pair_pushes_end(pa, pb);
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

/* Tentative pairing: a serve leg nobody takes within RH_ACCEPT_CLAIM_MS, or
 * whose serve closes it at once, is dropped, and the client goes on to the
 * next listen; the client only ever sees the leg that was taken. */
START_TEST(test_pair_tentative)
{
    char a[RH_TOKEN_LEN + 1], b1[RH_TOKEN_LEN + 1], b2[RH_TOKEN_LEN + 1], b3[RH_TOKEN_LEN + 1];
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    int l1 = listen_wait("svc"), l2 = listen_wait("svc"), l3 = listen_wait("svc");
    long t0 = now_ms();
    int ofd = open_send("svc");
    token_of(l1, "listen 1", b1);   /* a dead serve: never takes it */
    token_of(l2, "listen 2", b2);   /* the next, after the claim time */
    ck_assert_int_ge(now_ms() - t0, RH_ACCEPT_CLAIM_MS - 100);
    ck_assert(log_has("dropped (its serve did not take the connection in time)"));
    req(reply, sizeof(reply), "CLOSE %s\n", b2);   /* declined: the next at once */
    ck_assert_str_eq(reply, "OK");
    token_of(l3, "listen 3", b3);
    ck_assert(log_has("dropped (its serve declined the connection)"));
    req(reply, sizeof(reply), "ACK %s 0\n", b3);
    token_of(ofd, "open", a);
    ck_assert_uint_eq(reg_active(), 2);
    /* the dropped legs are gone */
    req(reply, sizeof(reply), "ACK %s 0\n", b1);
    ASSERT_PREFIX(reply, "ERR 410 ");
    int pa = push_open(a, 0);
    frd *rb = frd_new(pull_open(b3, 0));
    send_frame(pa, RH_FRAME_DATA, "to the third", 12);
    pull_expect(rb, "to the third");
    frd_free(rb);
    xclose(pa);
    xclose(l1);
    xclose(l2);
    xclose(l3);
    xclose(ofd);
    core_stop();
}
END_TEST

/* The only listen of a service taken late (a loaded serve): with no other
 * listen to try, the client waits for it a little longer than the claim time. */
START_TEST(test_pair_claim_late)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    int l1 = listen_wait("svc"), ofd = open_send("svc");
    token_of(l1, "listen", b);
    sleep_ms(RH_ACCEPT_CLAIM_MS + 500);
    req(reply, sizeof(reply), "ACK %s 0\n", b);
    ASSERT_PREFIX(reply, "OK ");
    token_of(ofd, "open", a);
    ck_assert_uint_eq(reg_active(), 2);
    xclose(l1);
    xclose(ofd);
    core_stop();
}
END_TEST

/* A serve leg with no request of it for RH_SERVE_GONE_S (its serve died with
 * its connections) is reset, and its client leg hears the reset. */
START_TEST(test_pair_serve_gone)
{
    core_start(8, 20);
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1];
    pair_up("svc", a, b);
    frd *ra = frd_new(pull_open(a, 0));
    int pb = pull_open(b, 0);
    long t0 = now_ms();
    xclose(pb);   /* the serve's pull goes with its process */
    rh_frame_event ev;
    for (;;) {
        int rv = frd_next(ra, 1000L * RH_SERVE_GONE_S + IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull ended without a frame (%d) after %ld ms: %s", rv,
                      now_ms() - t0, CF.log);
        if (ev.type != RH_FEV_HEARTBEAT && ev.type != RH_FEV_ACK)
            break;
    }
    ck_assert_int_eq(ev.type, RH_FEV_RESET);
    ck_assert_int_ge(now_ms() - t0, 1000L * RH_SERVE_GONE_S - 200);
    ck_assert(log_has("its serve went away"));
    frd_free(ra);
    core_stop();
}
END_TEST

/* RelayMaxListensPerClient: beyond it a listen hears 429 reason=listens. */
START_TEST(test_listen_limit)
{
    char reply[RH_IPC_LINE_MAX];
    rh_limits lim;
    core_start(8, 20);
    rh_registry_get_limits(CF.reg, &lim);
    lim.listens_per_client = 2;
    rh_registry_set_limits(CF.reg, &lim);
    int l1 = listen_wait("svc"), l2 = listen_wait("other");
    req(reply, sizeof(reply), "LISTEN svc 4096 30 5\n");
    ck_assert_msg(!strncmp(reply, "ERR 429 reason=" RH_REASON_TOKEN_LISTENS " ",
                           strlen("ERR 429 reason=" RH_REASON_TOKEN_LISTENS " "))
                  && strstr(reply, "RelayMaxListensPerClient 2"), "reply: %s", reply);
    xclose(l1);
    sleep_ms(100);   /* its place is free again */
    int l3 = listen_wait("svc");
    assert_no_reply(l3, 200, "a listen within the limit");
    xclose(l2);
    xclose(l3);
    core_stop();
}
END_TEST

/* Rendezvous bytes go ring to ring (rh_pair_move), never through the
 * socketpair between the legs: the core counts them. */
extern uint64_t rh_core_handoff_bytes;

/* Reads D frames of a stream pull as generated bytes from *rx on, until *rx
 * reaches until; acks on the leg's push every 32 KiB past *acked (a
 * resumable pull keeps sent bytes until acked). */
static void pull_gen(frd *r, int ack_fd, uint64_t *rx, uint64_t *acked, uint64_t until)
{
    rh_frame_event ev;
    while (*rx < until) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull ended (%d) at %llu of %llu", rv,
                      (unsigned long long)*rx, (unsigned long long)until);
        if (ev.type != RH_FEV_DATA)
            continue;
        for (size_t i = 0; i < ev.len; ++i)
            if (ev.data[i] != gen_byte(*rx + i))
                ck_abort_msg("byte %llu differs", (unsigned long long)(*rx + i));
        *rx += ev.len;
        if (*rx - *acked >= 32768) {
            unsigned char off[8];
            rh_put_u64(off, *rx);
            send_frame(ack_fd, RH_FRAME_ACK, off, sizeof(off));
            *acked = *rx;
        }
    }
}

/* Generated data frames through the client leg's push ps until the serve
 * leg's pull rb has *rx == until bytes (acked on its push pb). */
static void relay_gen(psend *ps, frd *rb, int pb, uint64_t *rx, uint64_t *acked,
                      uint64_t until)
{
    long end = now_ms() + 15000;
    while (*rx < until) {
        ck_assert_msg(now_ms() < end, "stalled at %llu of %llu", (unsigned long long)*rx,
                      (unsigned long long)until);
        psend_pump(ps);
        pull_gen(rb, pb, rx, acked, *rx + 1);
    }
}

/* Flow control end to end through the handoff: a serve leg that takes
 * nothing stops the client leg's push after a bounded amount, with the core
 * idle (no pump spinning on bytes that cannot move); once its pull reads,
 * everything arrives in order, every byte handed ring to ring. */
START_TEST(test_pair_handoff_flow)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1];
    int pa, pb;
    pair_pushes(a, b, &pa, &pb);
    uint64_t h0 = rh_core_handoff_bytes;
    psend ps = { .fd = pa, .seed = 7, .limit = UINT64_MAX };
    uint64_t wrote = fill_until_blocked(&ps, 300, 64u << 20);
    ck_assert_msg(wrote < (4u << 20), "%llu bytes before the push blocked",
                  (unsigned long long)wrote);
    long cpu0 = core_cpu_ms();
    sleep_ms(300);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 300 ms while blocked", cpu);
    struct pollfd p = { pa, POLLOUT, 0 };
    ck_assert_int_eq(poll(&p, 1, 0), 0);

    /* the serve leg reads: all of it comes, and the push goes on to 3 MB more */
    frd *rb = frd_new(pull_open(b, 0));
    ps.limit = ps.queued + (3u << 20);
    uint64_t rx = 0, acked = 0;
    relay_gen(&ps, rb, pb, &rx, &acked, ps.limit);
    ck_assert_msg(rh_core_handoff_bytes - h0 == rx, "handed %llu of %llu bytes",
                  (unsigned long long)(rh_core_handoff_bytes - h0), (unsigned long long)rx);
    /* and the other way, and the end */
    frd *ra = frd_new(pull_open(a, 0));
    send_frame(pb, RH_FRAME_DATA, "from the serve", 14);
    pull_expect(ra, "from the serve");
    send_frame(pa, RH_FRAME_FIN, NULL, 0);
    ck_assert_int_eq(pull_next_kind(rb), RH_FEV_FIN);
    ck_assert_msg(rh_core_handoff_bytes - h0 == rx + 14, "handed %llu bytes",
                  (unsigned long long)(rh_core_handoff_bytes - h0));
    frd_free(ra);
    frd_free(rb);
    pair_pushes_end(pa, pb);
}
END_TEST

/* The serve leg's pull cut mid-transfer resumes from its last ack: the bytes
 * handed into its down ring are kept until acked, as a target's would be. */
START_TEST(test_pair_handoff_resume)
{
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1];
    int pa, pb;
    pair_pushes(a, b, &pa, &pb);
    psend ps = { .fd = pa, .seed = 11, .limit = 1u << 20 };
    frd *rb = frd_new(pull_open(b, 0));
    uint64_t rx = 0, acked = 0;
    while (rx < 300000 || acked == rx) {   /* cut with bytes unacked */
        psend_pump(&ps);
        pull_gen(rb, pb, &rx, &acked, rx + 1);
    }
    frd_free(rb);   /* cut: what came after the last ack comes again */
    ck_assert_uint_lt(acked, rx);
    rx = acked;
    rb = pull_start(b, acked, 0);
    relay_gen(&ps, rb, pb, &rx, &acked, ps.limit);
    frd_free(rb);
    pair_pushes_end(pa, pb);
}
END_TEST

/* RelayResumeMemory through the handoff: a serve leg whose pull reads and never
 * acknowledges holds no more than the bound beyond its read-ahead (4096), not
 * its window (65536); the client leg's push waits meanwhile. An ack frees room
 * and the rest comes in order. */
START_TEST(test_pair_handoff_resume_memory)
{
    const uint64_t bound = 48u << 10;
    char a[RH_TOKEN_LEN + 1], b[RH_TOKEN_LEN + 1];
    int pa, pb;
    pair_pushes(a, b, &pa, &pb);
    rh_registry_set_resume(CF.ext, bound, 0);
    sleep_ms(1100);   /* read at the core's next turn: 1 s at most */
    psend ps = { .fd = pa, .seed = 5, .limit = UINT64_MAX };
    frd *rb = frd_new(pull_open(b, 0));
    uint64_t rx = 0, acked = 0;
    long last = now_ms(), end = last + 10000;
    while (now_ms() - last < 800) {   /* quiet this long: stopped, not slow */
        ck_assert(now_ms() < end);
        psend_pump(&ps);
        rh_frame_event ev;
        while (frd_next(rb, 20, &ev) == 1)
            if (ev.type == RH_FEV_DATA) {
                for (size_t i = 0; i < ev.len; ++i)
                    if (ev.data[i] != gen_byte(rx + i))
                        ck_abort_msg("byte %llu differs", (unsigned long long)(rx + i));
                rx += ev.len;
                last = now_ms();
            }
    }
    ck_assert_msg(rx <= bound + 4096 && rx >= bound, "%llu bytes unacknowledged (bound "
                  "%llu, read-ahead 4096)", (unsigned long long)rx, (unsigned long long)bound);
    ck_assert(WAIT_FOR(CF.ext->resume_waits > 0 && CF.ext->resume_held <= bound, 2000));

    unsigned char off[8];
    rh_put_u64(off, rx);
    send_frame(pb, RH_FRAME_ACK, off, sizeof(off));
    acked = rx;
    ps.limit = ps.queued + (1u << 20);
    relay_gen(&ps, rb, pb, &rx, &acked, ps.limit);
    ck_assert_uint_le(CF.ext->resume_held, bound);
    frd_free(rb);
    pair_pushes_end(pa, pb);
}
END_TEST

void core_pair_tests(const core_tcases *t)
{
    tcase_add_test(t->requests, test_unserved_and_empty_listen);
    tcase_add_test(t->data, test_pair_carries_both_ways);
    tcase_add_test(t->data, test_pair_reset_reaches_peer);
    tcase_add_test(t->data, test_pair_close_with_pull_attached);
    tcase_add_test(t->data, test_pair_tentative);
    tcase_add_test(t->data, test_pair_claim_late);
    tcase_add_test(t->flow, test_pair_handoff_flow);
    tcase_add_test(t->data, test_pair_handoff_resume);
    tcase_add_test(t->flow, test_pair_handoff_resume_memory);
    tcase_add_test(t->timers, test_pair_serve_gone);
    tcase_add_test(t->requests, test_listen_limit);
}
