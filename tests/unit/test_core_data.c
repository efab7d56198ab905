/* Relay core tests: bytes both ways: round trips, half-closes, acks, queued and resumed pushes. */
#include "test_core_fx.h"

/* ---- tests: data ------------------------------------------------------------------- */

/* Sends data through push, echoes it at the target, receives it on pull and
 * compares every byte; then half-closes and checks the session ends cleanly. */
static void roundtrip(unsigned bufsize, uint64_t total)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, bufsize, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    frd *pr = pull_start(tok, 0, 0);

    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.seed = bufsize;
    ps.limit = total;
    static unsigned char echo[1 << 18];
    size_t eoff = 0, elen = 0;
    uint64_t got = 0, target_rx = 0;
    long end = now_ms() + 15000;

    while (got < total) {
        ck_assert_msg(now_ms() < end, "round trip stalled: sent %llu, target %llu, got %llu",
                      (unsigned long long)ps.queued, (unsigned long long)target_rx,
                      (unsigned long long)got);
        struct pollfd pf[3] = {
            { push, psend_done(&ps) ? 0 : POLLOUT, 0 },
            { pr->fd, POLLIN, 0 },
            { t, (short)((elen < sizeof(echo) ? POLLIN : 0) | (elen > eoff ? POLLOUT : 0)), 0 },
        };
        poll(pf, 3, 100);
        if (!psend_done(&ps))
            psend_pump(&ps);
        /* the echo target */
        if (elen < sizeof(echo)) {
            ssize_t n = recv(t, echo + elen, sizeof(echo) - elen, MSG_DONTWAIT);
            ck_assert_msg(n != 0, "target saw EOF early");
            if (n > 0) {
                elen += (size_t)n;
                target_rx += (uint64_t)n;
            }
        }
        if (elen > eoff) {
            ssize_t n = send(t, echo + eoff, elen - eoff, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                eoff += (size_t)n;
            if (eoff == elen)
                eoff = elen = 0;
        }
        /* the pull */
        rh_frame_event ev;
        int rv;
        while ((rv = frd_next(pr, 0, &ev)) == 1) {
            ck_assert_msg(ev.type == RH_FEV_DATA || ev.type == RH_FEV_HEARTBEAT
                          || ev.type == RH_FEV_ACK, "unexpected pull event %s",
                          fev_name(ev.type));
            if (ev.type == RH_FEV_ACK)   /* never more than was pushed */
                ck_assert_msg(ev.offset <= ps.queued, "A %llu, but only %llu pushed",
                              (unsigned long long)ev.offset, (unsigned long long)ps.queued);
            if (ev.type != RH_FEV_DATA)
                continue;
            ck_assert_uint_le(got + ev.len, total);
            for (size_t i = 0; i < ev.len; ++i)
                if (ev.data[i] != gen_byte(got + i))
                    ck_abort_msg("byte %llu differs", (unsigned long long)(got + i));
            got += ev.len;
        }
        ck_assert_msg(rv == -ETIMEDOUT, "pull stream broke: %s", rv ? strerror(-rv) : "EOF");
    }
    ck_assert(got == total);
    /* the down direction is idle now: the pull tells that every up byte arrived */
    frd_expect_ack(pr, total);
    ck_assert_msg(pr->nacks >= 2, "%d A frames", pr->nacks);

    /* the registry counts what was accepted and what was sent */
    rh_slot_view v;
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == total, IO_MS));
    ck_assert(v.up_bytes == total);

    /* the client finishes: F, end of the push body */
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    char want[64];
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)total);
    ck_assert_str_eq(reply, want);
    /* the target sees the half-close and closes in turn */
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    xclose(t);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("closed by both ends"));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    ck_assert(CF.reg->total_up == total && CF.reg->total_down == total);
    frd_free(pr);
    xclose(l);
    core_stop();
}

START_TEST(test_roundtrip_1mb)
{
    roundtrip(262144, 1u << 20);
}
END_TEST

/* The smallest buffer: rings wrap all the time and flow control is constant. */
START_TEST(test_roundtrip_small_buffers)
{
    roundtrip(_i == 0 ? 4096 : 1024, 1u << 20);
}
END_TEST

/* F is a half-close: the target sees EOF, and may still answer. */
START_TEST(test_half_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "ping", 4);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    unsigned char got[16];
    size_t gl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, got, sizeof(got), &gl), 0);   /* EOF */
    ck_assert_uint_eq(gl, 4);
    ck_assert_mem_eq(got, "ping", 4);
    /* the session is half-closed, not over */
    ck_assert(session_alive(tok));
    /* a new push after F is refused */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 4, "");
    ASSERT_PREFIX(reply, "ERR 409 ");

    target_send(t, "pong", 4);
    frd_expect_data(pr, "pong");
    ck_assert(session_alive(tok));
    xclose(t);                                          /* the target ends too */
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(CF.reg->total_up == 4 && CF.reg->total_down == 4);
    attach_refused(reply, sizeof(reply), "PULL", tok, 4, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* The target finishes first; the session lives on until the client's F. */
START_TEST(test_target_closes_first)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "bye", 3);
    shutdown(t, SHUT_WR);
    frd_expect_data(pr, "bye");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(session_alive(tok));
    /* everything was delivered: another pull has nothing to wait for */
    attach_refused(reply, sizeof(reply), "PULL", tok, 3, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    /* the up direction still works */
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "last", 4);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    unsigned char got[16];
    size_t gl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, got, sizeof(got), &gl), 0);
    ck_assert_uint_eq(gl, 4);
    ck_assert_mem_eq(got, "last", 4);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Frames that arrive in the same write as the PUSH line are not lost. */
START_TEST(test_frames_behind_request_line)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    unsigned char msg[256];
    int n = snprintf((char *)msg, sizeof(msg), "PUSH %s 0\n", tok);
    size_t at = (size_t)n;
    rh_frame_hdr(msg + at, RH_FRAME_DATA, 5);
    memcpy(msg + at + 4, "fast!", 5);
    at += 9;
    rh_frame_hdr(msg + at, RH_FRAME_HEARTBEAT, 0);
    at += 4;
    rh_frame_hdr(msg + at, RH_FRAME_DATA, 3);
    memcpy(msg + at + 4, "xyz", 3);
    at += 7;
    int push = cx();
    send_all(push, msg, at);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 0");
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 8");
    target_expect(t, "fast!xyz");
    ck_assert(session_alive(tok));
    xclose(l);
    core_stop();
}
END_TEST

/* Several sessions at once, each with its own target, interleaved. */
START_TEST(test_many_sessions)
{
    enum { N = 6 };
    char tok[N][RH_TOKEN_LEN + 1], msg[64], reply[RH_IPC_LINE_MAX];
    int port, t[N], push[N], ended[N] = { 0 };
    frd *pr[N];
    core_start(N, 20);
    int l = tcp_listen(&port, 0, N);
    for (int i = 0; i < N; ++i) {
        open_session(port, 4096, 30, tok[i]);
        t[i] = tcp_accept(l, IO_MS);            /* connections queue in open order */
        ck_assert_int_ge(t[i], 0);
    }
    ck_assert_uint_eq(reg_active(), N);
    for (int i = 0; i < N; ++i) {
        push[i] = push_open(tok[i], 0);
        pr[i] = frd_new(pull_open(tok[i], 0));
    }
    for (int i = N - 1; i >= 0; --i) {
        snprintf(msg, sizeof(msg), "to target %d", i);
        send_frame(push[i], RH_FRAME_DATA, msg, strlen(msg));
    }
    for (int i = 0; i < N; ++i) {
        snprintf(msg, sizeof(msg), "to target %d", i);
        target_expect(t[i], msg);
        snprintf(msg, sizeof(msg), "from target %d", i);
        target_send(t[i], msg, strlen(msg));
    }
    for (int i = N - 1; i >= 0; --i) {
        snprintf(msg, sizeof(msg), "from target %d", i);
        frd_expect_data(pr[i], msg);
    }
    /* end them in a scrambled order: close, reset, fin */
    for (int k = 0; k < N; ++k) {
        int i = (k * 5 + 1) % N;
        rh_frame_event ev;
        if (k % 3 == 0) {
            req(reply, sizeof(reply), "CLOSE %s\n", tok[i]);
            ck_assert_str_eq(reply, "OK");
            frd_expect(pr[i], RH_FEV_RESET, &ev);
        } else if (k % 3 == 1) {
            send_frame(push[i], RH_FRAME_RESET, NULL, 0);
            frd_expect(pr[i], RH_FEV_RESET, &ev);
        } else {
            send_frame(push[i], RH_FRAME_FIN, NULL, 0);
            ck_assert_int_eq(target_read_end(t[i], IO_MS, NULL, 0, NULL), 0);
            xclose(t[i]);
            frd_expect(pr[i], RH_FEV_FIN, &ev);
        }
        frd_expect_eof(pr[i]);
        ended[i] = 1;
        ck_assert(WAIT_FOR(!session_alive(tok[i]) && reg_active() == (uint32_t)(N - 1 - k),
                           IO_MS));
        for (int j = 0; j < N; ++j)
            ck_assert_msg(ended[j] || session_alive(tok[j]), "session %d ended with %d", j, i);
        frd_free(pr[i]);
    }
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=6 closed=6 integrity=0 held=0 refused=0");
    xclose(l);
    core_stop();
}
END_TEST

/* A numeric IPv6 target (skipped where the host has no ::1). */
START_TEST(test_ipv6_target)
{
    char reply[RH_IPC_LINE_MAX], tok[RH_TOKEN_LEN + 1];
    int l = track(socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    struct sockaddr_in6 sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 4) != 0) {
        fprintf(stderr, "test_ipv6_target: no IPv6 loopback here, skipped\n");
        return;
    }
    getsockname(l, (struct sockaddr *)&sa, &sl);
    core_start(4, 20);
    req(reply, sizeof(reply), "OPEN v6 ::1 %d 4096 30 5\n", ntohs(sa.sin6_port));
    ASSERT_PREFIX(reply, "OK ");
    strcpy(tok, reply + 3);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "six", 3);
    target_expect(t, "six");
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_str_eq(v.target, "v6");
    core_stop();
}
END_TEST

/* A stream pull tells the client how far the up direction got: an A frame with
 * the accepted offset at its start, then one whenever that offset advances. */
START_TEST(test_pull_acks)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    /* bytes accepted before the pull began: its first A says so */
    frd *pr = pull_start(tok, 0, 3);
    send_frame(push, RH_FRAME_DATA, "defgh", 5);
    target_expect(t, "defgh");
    frd_expect_ack(pr, 8);
    /* H and A frames on the push carry no up bytes: no A for them */
    unsigned char a8[8];
    rh_put_u64(a8, 0);
    send_frame(push, RH_FRAME_HEARTBEAT, "pad", 3);
    send_frame(push, RH_FRAME_ACK, a8, 8);
    frd_expect_quiet(pr, 200);
    /* data both ways: the pull carries the down bytes and the new up offset */
    send_frame(push, RH_FRAME_DATA, "ij", 2);
    target_expect(t, "ij");
    target_send(t, "xyz", 3);
    frd_expect_data(pr, "xyz");
    frd_expect_ack(pr, 10);
    /* 300 KB up with the pull idle: the A frames follow the offset up to the end */
    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.seed = 7;
    ps.queued = 10;
    ps.limit = 10 + 300000;
    uint64_t rx = 10;
    unsigned char buf[65536];
    long end = now_ms() + 10000;
    while (rx < ps.limit) {
        ck_assert_msg(now_ms() < end, "stalled: target has %llu", (unsigned long long)rx);
        if (!psend_done(&ps))
            psend_pump(&ps);
        struct pollfd p = { t, POLLIN, 0 };
        poll(&p, 1, 50);
        ssize_t n = recv(t, buf, sizeof(buf), MSG_DONTWAIT);
        ck_assert_msg(n != 0, "target saw EOF");
        if (n > 0)
            rx += (uint64_t)n;
    }
    frd_expect_ack(pr, ps.limit);
    ck_assert_msg(pr->nacks >= 4, "%d A frames", pr->nacks);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    snprintf((char *)buf, sizeof(buf), "DONE %llu", (unsigned long long)ps.limit);
    ck_assert_str_eq(reply, (char *)buf);
    frd_expect_quiet(pr, 100);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Several pushes in flight: each waits, unread, until the bytes before it have
 * been accepted, so the target gets them in offset order whatever order the
 * requests came in. */
START_TEST(test_push_queue)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    /* the last one first, its whole body sent with the request line */
    int p3 = push_send(tok, 10, f, frame_put(f, RH_FRAME_DATA, "!!!", 3));
    shutdown(p3, SHUT_WR);
    int p2 = push_send(tok, 5, f, frame_put(f, RH_FRAME_DATA, "world", 5));
    shutdown(p2, SHUT_WR);
    assert_no_reply(p3, 200, "push at 10 before 0 and 5");
    assert_no_reply(p2, 1, "push at 5 before 0");
    struct pollfd tp = { t, POLLIN, 0 };
    ck_assert_msg(poll(&tp, 1, 0) == 0, "the target got bytes of a waiting push");
    ck_assert(session_alive(tok));

    int p1 = push_open(tok, 0);
    send_frame(p1, RH_FRAME_DATA, "hello", 5);
    target_expect(t, "hello");
    frd_expect_ack(pr, 5);
    /* offset 5 is reached, but the push before it has not ended */
    assert_no_reply(p2, 200, "push at 5 while the push at 0 is active");
    shutdown(p1, SHUT_WR);
    read_reply(p1, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 10");
    read_reply(p3, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 10");
    read_reply(p3, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 13");
    target_expect(t, "world!!!");
    frd_expect_ack(pr, 13);

    /* a push that waits behind an active one takes over when it ends */
    int a = push_open(tok, 13);
    int b = push_send(tok, 15, f, frame_put(f, RH_FRAME_DATA, "cd", 2));
    send_frame(a, RH_FRAME_DATA, "ab", 2);
    target_expect(t, "ab");
    assert_no_reply(b, 150, "push at 15 while the push at 13 is active");
    shutdown(a, SHUT_WR);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 15");
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 15");
    target_expect(t, "cd");
    send_frame(b, RH_FRAME_FIN, NULL, 0);
    shutdown(b, SHUT_WR);
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 17");
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    frd_expect_ack(pr, 17);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Resumable: a push at the accepted offset is the next one when the active push
 * has its whole body (the handler said its length), and waits; otherwise it is a
 * retry after a cut and takes over. */
START_TEST(test_resumable_next_push_or_retry)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session_window(port, 65536, 30, 65536, tok);
    int t = tcp_accept(l, IO_MS);

    /* A holds its whole body but has not ended; B starts where A stops */
    size_t fl = frame_put(f, RH_FRAME_DATA, "hello", 5);
    int a = push_send_len(tok, 0, f, fl, fl);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 0");
    target_expect(t, "hello");
    fl = frame_put(f, RH_FRAME_DATA, "world", 5);
    int b = push_send_len(tok, 5, f, fl, fl);
    assert_no_reply(b, 200, "the next push while the complete one has not ended");
    assert_no_reply(a, 1, "a complete push while the next one waits");
    shutdown(a, SHUT_WR);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    target_expect(t, "world");

    /* C, the next one again, announces more body than it will send */
    fl = frame_put(f, RH_FRAME_DATA, "abc", 3);
    int c = push_send_len(tok, 10, f, fl, fl + 8);
    assert_no_reply(c, 200, "the next push while the complete one has not ended");
    shutdown(b, SHUT_WR);
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 10");
    xclose(b);
    read_reply(c, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 10");
    target_expect(t, "abc");
    /* C has not sent all it announced: a push at the accepted offset is a retry
     * after a cut and replaces it */
    int d = push_send_len(tok, 13, NULL, 0, 100);
    read_reply(d, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 13");
    read_reply(c, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    xclose(c);
    send_frame(d, RH_FRAME_DATA, "xyz", 3);
    target_expect(t, "xyz");
    send_frame(d, RH_FRAME_FIN, NULL, 0);
    shutdown(d, SHUT_WR);
    read_reply(d, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 16");
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    xclose(d);
    xclose(t);
    xclose(l);
    core_stop();
}
END_TEST

/* At most 8 pushes wait per session; a reset refuses the waiting ones with 410.
 * _i: 0 the client closes the session, 1 an active push sends R. */
START_TEST(test_push_queue_limit_and_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port, w[8];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    for (int i = 0; i < 8; ++i)
        w[i] = push_send(tok, (uint64_t)(i + 1) * 10, NULL, 0);
    for (int i = 0; i < 8; ++i)
        assert_no_reply(w[i], i ? 1 : 200, "a push ahead of the accepted offset");
    attach_refused(reply, sizeof(reply), "PUSH", tok, 90, "");
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert(session_alive(tok));
    for (int i = 0; i < 8; ++i)
        assert_no_reply(w[i], 1, "a waiting push after a refused one");
    if (_i == 0) {
        req(reply, sizeof(reply), "CLOSE %s\n", tok);
        ck_assert_str_eq(reply, "OK");
    } else {
        /* the push at the accepted offset does not wait behind the others */
        int p = push_open(tok, 0);
        send_frame(p, RH_FRAME_DATA, "0123456789", 10);
        target_expect(t, "0123456789");
        send_frame(p, RH_FRAME_RESET, "enough", 6);
        read_reply(p, reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 410 ");
    }
    for (int i = 0; i < 8; ++i) {
        read_reply(w[i], reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 410 ");
        ck_assert_msg(strstr(reply, _i ? "enough" : "closed by client") != NULL,
                      "reply: %s", reply);
    }
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A waiting push is not read, but a handler that hangs up while it waits (its
 * own timeout ran out) must give its place back: 8 such would refuse every later
 * push of the session with 409. */
START_TEST(test_push_wait_hangup)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port, w[8];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    for (int i = 0; i < 8; ++i)
        w[i] = push_send(tok, (uint64_t)(i + 1) * 10, NULL, 0);
    assert_no_reply(w[0], 200, "a push ahead of the accepted offset");
    for (int i = 0; i < 8; ++i)
        xclose(w[i]);
    sleep_ms(200);
    int late = push_send(tok, 3, NULL, 0);
    assert_no_reply(late, 200, "a push after 8 waiting ones hung up");
    int p = push_open(tok, 0);
    send_frame(p, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    shutdown(p, SHUT_WR);
    read_reply(p, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    read_reply(late, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 3");
    xclose(l);
    core_stop();
}
END_TEST

/* A push whose turn passed while it waited (the active one brought more) is
 * refused with the session's accepted offset (offset=, the handler's
 * Relay-Offset): the client learns that the server has it whole. Without it
 * the handler said the offset of its view at the request's start, older, and a
 * client that went by that sent the push again until it gave up (soak 2026-12-06,
 * nginx-front/refuse). */
START_TEST(test_push_behind_says_accepted)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    rh_ipc_reply rep;
    int l, t = core_with_session(tok, &l);
    int a = push_open(tok, 0), w = push_send(tok, 3, NULL, 0);
    assert_no_reply(w, 100, "a push ahead of the accepted offset");
    send_frame(a, RH_FRAME_DATA, "0123456789", 10);
    shutdown(a, SHUT_WR);
    read_reply(w, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "ERR 409 offset=10 push offset 3 is below accepted 10");
    ck_assert_int_eq(rh_ipc_parse_reply(reply, &rep), 0);
    ck_assert(rep.status == 409 && rep.has_num && rep.num == 10);
    target_expect(t, "0123456789");
    xclose(l);
    core_stop();
}
END_TEST

/* PROTOCOL.md push: "A push that waits longer than RelayIdleTimeout is refused
 * with 409" (here the session is kept alive by the active push's heartbeats). */
START_TEST(test_push_wait_timeout)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    int w = push_send(tok, 100, NULL, 0);
    long t0 = now_ms();
    struct pollfd p = { w, POLLIN, 0 };
    while (now_ms() - t0 < 2500 && poll(&p, 1, 200) == 0)
        send_frame(push, RH_FRAME_HEARTBEAT, NULL, 0);
    long dt = now_ms() - t0;
    read_reply(w, reply, sizeof(reply), 1);
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(dt >= 800 && dt < 2500, "the waiting push was refused after %ld ms "
                  "(idle 1 s)", dt);
    /* the session and its active push go on */
    ck_assert(session_alive(tok));
    send_frame(push, RH_FRAME_DATA, "on", 2);
    target_expect(t, "on");
    xclose(l);
    core_stop();
}
END_TEST

void core_data_tests(const core_tcases *t)
{
    tcase_add_test(t->data, test_roundtrip_1mb);
    tcase_add_loop_test(t->data, test_roundtrip_small_buffers, 0, 2);
    tcase_add_test(t->data, test_half_close);
    tcase_add_test(t->data, test_target_closes_first);
    tcase_add_test(t->data, test_frames_behind_request_line);
    tcase_add_test(t->data, test_many_sessions);
    tcase_add_test(t->data, test_ipv6_target);
    tcase_add_test(t->data, test_pull_acks);
    tcase_add_test(t->data, test_push_queue);
    tcase_add_test(t->data, test_resumable_next_push_or_retry);
    tcase_add_loop_test(t->data, test_push_queue_limit_and_reset, 0, 2);
    tcase_add_test(t->data, test_push_wait_hangup);
    tcase_add_test(t->data, test_push_wait_timeout);
    tcase_add_test(t->data, test_push_behind_says_accepted);
}
