/* Relay core tests: batch pulls (long-polls answered in one piece). */
#include <inttypes.h>
#include "test_core_fx.h"

/* ---- tests: batch pulls ------------------------------------------------------------- */

/* Nothing to send: the long-poll answers when poll_s runs out, with an A frame
 * and E (16 bytes), and the session goes on. */
START_TEST(test_batch_empty)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "up!", 3);
    target_expect(t, "up!");
    batch_pull(tok, 0, 1, IO_MS, &a);
    ck_assert_msg(a.ms >= 900 && a.ms < 2000, "empty answer after %ld ms (1 s asked)", a.ms);
    ck_assert_uint_eq(a.off, 0);
    ck_assert_uint_eq(a.len, 16);
    ck_assert_uint_eq(a.ack, 3);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    ck_assert(session_alive(tok));
    /* the next one: a stream pull may follow a batch one */
    frd *pr = pull_start(tok, 0, 3);
    target_send(t, "down", 4);
    frd_expect_data(pr, "down");
    frd_free(pr);
    send_frame(push, RH_FRAME_DATA, "x", 1);
    target_expect(t, "x");
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    xclose(l);
    core_stop();
}
END_TEST

/* A batch pull that asks to keep its connection (PULL ... keep): after the
 * whole answer the core waits on the same connection for the next request
 * line, whatever it is; a request without keep ends it as before, and a
 * kept connection the handler closes is freed (the next ones work). */
START_TEST(test_batch_kept_connection)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    batch_ans a;
    int l, t = core_with_session(tok, &l), fd = cx();
    long t0 = now_ms();
    batch_finish_kept(batch_send_on(fd, tok, 0, 1, 1), t0, IO_MS, &a);
    ck_assert_msg(a.ms >= 900 && a.ms < 2000, "empty answer after %ld ms (1 s asked)", a.ms);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    ck_assert_int_eq(a.ndata, 0);
    /* the same connection: the next poll, answered by the target's bytes */
    batch_send_on(fd, tok, 0, 5, 1);
    assert_no_reply(fd, 200, "a kept batch pull with nothing to send");
    t0 = now_ms();
    target_send(t, "kept", 4);
    batch_finish_kept(fd, t0, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came %ld ms after the target's bytes", a.ms);
    ck_assert_uint_eq(a.off, 0);
    ck_assert_uint_eq(a.dlen, 4);
    ck_assert_mem_eq(batch_data, "kept", 4);
    /* and once more, answered at once with what the core holds */
    target_send(t, "again", 5);
    sleep_ms(100);
    t0 = now_ms();
    batch_finish_kept(batch_send_on(fd, tok, 4, 5, 1), t0, IO_MS, &a);
    ck_assert_uint_eq(a.off, 4);
    ck_assert_mem_eq(batch_data, "again", 5);
    /* a request without keep on it is answered, and ends it */
    send_str(fd, "STAT\n");
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ck_assert_msg(!strncmp(reply, "OK active=1 ", 12), "STAT on a kept connection: %s", reply);
    unsigned char extra[4];
    ck_assert_int_eq(rh_ipc_read(fd, extra, sizeof(extra), IO_MS), 0);
    xclose(fd);
    /* a kept connection its handler drops is freed: many, then the session works */
    for (int i = 0; i < 50; ++i) {
        int k = cx();
        target_send(t, "z", 1);
        batch_finish_kept(batch_send_on(k, tok, 9 + (uint64_t)i, 5, 1), now_ms(), IO_MS, &a);
        ck_assert_uint_eq(a.dlen, 1);
        xclose(k);
    }
    batch_pull(tok, 59, 1, IO_MS, &a);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    ck_assert(session_alive(tok));
    xclose(t);
    xclose(l);
    core_stop();
}
END_TEST

/* The long-poll answers as soon as the target sends, without waiting for more;
 * the next one starts where it ended. */
START_TEST(test_batch_prompt)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int fd = batch_send(tok, 0, 5);
    assert_no_reply(fd, 300, "a batch pull with nothing to send");
    long t0 = now_ms();
    target_send(t, "hello", 5);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came %ld ms after the target's bytes", a.ms);
    ck_assert_uint_eq(a.off, 0);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 5 + 4);
    ck_assert_uint_eq(a.ack, 0);
    ck_assert_int_eq(a.ndata, 1);
    ck_assert_uint_eq(a.dlen, 5);
    ck_assert_mem_eq(batch_data, "hello", 5);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    /* bytes already held: answered at once */
    target_send(t, "again", 5);
    target_send(t, "!", 1);
    sleep_ms(100);
    batch_pull(tok, 5, 5, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came after %ld ms with bytes held", a.ms);
    ck_assert_uint_eq(a.off, 5);
    ck_assert_uint_eq(a.dlen, 6);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 6 + 4);
    ck_assert_mem_eq(batch_data, "again!", 6);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == 11, IO_MS));
    /* the ack must be what was sent */
    attach_refused(reply, sizeof(reply), "PULL", tok, 5, " batch 5");
    ASSERT_PREFIX(reply, "ERR 416 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    xclose(l);
    core_stop();
}
END_TEST

/* An answer holds every byte the core has, in D frames of at most 64 KiB, and
 * its length is exact; then the target's FIN ends the down direction with F. */
START_TEST(test_batch_large_then_fin)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    const size_t total = 200000;
    static unsigned char src[200000];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 262144, 30, tok);
    int t = tcp_accept(l, IO_MS);
    for (size_t i = 0; i < total; ++i)
        src[i] = gen_byte(i);
    target_send(t, src, total);
    sleep_ms(300);
    uint64_t got = 0;
    int answers = 0;
    while (got < total) {
        ck_assert_msg(answers < 50, "%llu of %zu bytes after %d answers",
                      (unsigned long long)got, total, answers);
        batch_pull(tok, got, 5, IO_MS, &a);
        ck_assert_uint_eq(a.off, got);
        ck_assert_int_eq(a.term, RH_FRAME_END);
        ck_assert_uint_ge(a.dlen, 1);
        ck_assert_uint_le(got + a.dlen, total);
        ck_assert_uint_eq(a.len, 4 + 8 + a.dlen + 4 * (size_t)a.ndata + 4);
        ck_assert_int_eq(a.ndata, (int)((a.dlen + RH_FRAME_MAX - 1) / RH_FRAME_MAX));
        if (answers == 0)   /* the core held all of it (its buffer is 256 KiB) */
            ck_assert_msg(a.dlen == total && a.dmax == RH_FRAME_MAX,
                          "first answer: %zu bytes, largest frame %zu", a.dlen, a.dmax);
        ck_assert_mem_eq(batch_data, src + got, a.dlen);
        got += a.dlen;
        answers++;
    }
    /* a long-poll waiting when the target ends: F at once, after no data */
    int fd = batch_send(tok, got, 5);
    assert_no_reply(fd, 200, "a batch pull with nothing to send");
    long t0 = now_ms();
    shutdown(t, SHUT_WR);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came %ld ms after the target's FIN", a.ms);
    ck_assert_uint_eq(a.len, 16);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    /* the down direction is over; the up one still works, and its F ends the session */
    attach_refused(reply, sizeof(reply), "PULL", tok, got, " batch 5");
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(session_alive(tok));
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "end", 3);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    unsigned char rx[8];
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
    ck_assert(rl == 3 && memcmp(rx, "end", 3) == 0);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("closed by both ends"));
    ck_assert(CF.reg->total_down == total && CF.reg->total_up == 3);
    xclose(l);
    core_stop();
}
END_TEST

/* Data and FIN both held: one answer carries the data and F. */
START_TEST(test_batch_data_and_fin)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    target_send(t, "bye", 3);
    shutdown(t, SHUT_WR);
    sleep_ms(100);
    batch_pull(tok, 0, 5, IO_MS, &a);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 3 + 4);
    ck_assert(a.dlen == 3 && memcmp(batch_data, "bye", 3) == 0);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    ck_assert(session_alive(tok));
    xclose(l);
    core_stop();
}
END_TEST

/* A target reset ends the answer with R and its reason, after the bytes it sent
 * first; the session is over. _i: 0 reset before the pull, 1 while it waits. */
START_TEST(test_batch_target_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    if (_i == 0) {
        target_send(t, "zz", 2);
        target_reset(t);
        sleep_ms(100);
        batch_pull(tok, 0, 5, IO_MS, &a);
        ck_assert(a.dlen == 2 && memcmp(batch_data, "zz", 2) == 0);
    } else {
        int fd = batch_send(tok, 0, 5);
        assert_no_reply(fd, 200, "a batch pull with nothing to send");
        long t0 = now_ms();
        target_reset(t);
        batch_finish(fd, t0, IO_MS, &a);
        ck_assert_msg(a.ms < 100, "the answer came %ld ms after the reset", a.ms);
        ck_assert_int_eq(a.ndata, 0);
    }
    ck_assert_int_eq(a.term, RH_FRAME_RESET);
    ck_assert_msg(strncmp(a.reason, "target reset the connection", 27) == 0,
                  "R reason: %s", a.reason);
    ck_assert_uint_eq(a.len, 4 + 8 + (a.dlen ? 4 + a.dlen : 0) + 4 + strlen(a.reason));
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    attach_refused(reply, sizeof(reply), "PULL", tok, a.dlen, " batch 5");
    ASSERT_PREFIX(reply, "ERR 410 ");
    xclose(l);
    core_stop();
}
END_TEST

/* One pull at a time; a waiting long-poll whose handler goes away frees its
 * place; one that waits when the session is closed gets A and R. */
START_TEST(test_batch_conflicts_and_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int fd = batch_send(tok, 0, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " batch 5");
    ASSERT_PREFIX(reply, "ERR 409 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    long t0 = now_ms();
    target_send(t, "one", 3);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert(a.dlen == 3 && memcmp(batch_data, "one", 3) == 0);

    /* the handler gives up on a waiting long-poll: the next pull is accepted */
    fd = batch_send(tok, 3, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");
    xclose(fd);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));
    fd = batch_send(tok, 3, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");

    /* the session is closed under it: a complete answer with R */
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "12345", 5);
    target_expect(t, "12345");
    t0 = now_ms();
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_uint_eq(a.off, 3);
    ck_assert_uint_eq(a.ack, 5);
    ck_assert_int_eq(a.term, RH_FRAME_RESET);
    ck_assert_msg(strstr(a.reason, "closed by client") != NULL, "R reason: %s", a.reason);
    ck_assert_uint_eq(a.len, 16 + strlen(a.reason));
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    xclose(l);
    core_stop();
}
END_TEST

/* A pull that a proxy held comes late with an old ack: it takes the session
 * over and rewinds what was sent (the core writes what its socket takes, to a
 * request its client gave up). The client's next pull acks everything it got
 * before and must go on from there: it was answered 416 "outside the bytes
 * kept", which ended the tunnel (bench/soak.py batch/delay). */
START_TEST(test_batch_late_pull_does_not_strand_the_client)
{
    static unsigned char big[800 * 1024];
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session_window(port, 65536, 30, 4u << 20, tok);
    int t = tcp_accept(l, IO_MS);
    for (size_t i = 0; i < sizeof(big); ++i)
        big[i] = gen_byte(i);
    target_send(t, big, 1);
    batch_pull(tok, 0, 5, IO_MS, &a);        /* a batch pull: the core reads ahead */
    ck_assert_uint_eq(a.dlen, 1);
    target_send(t, big + 1, sizeof(big) - 1);
    sleep_ms(300);
    batch_pull(tok, 1, 5, IO_MS, &a);        /* the rest in one answer */
    ck_assert_uint_eq(a.dlen, sizeof(big) - 1);
    ck_assert_mem_eq(batch_data, big + 1, a.dlen);
    uint64_t got = sizeof(big);
    /* the same request again, late (its ack is still what the core has): read by
     * nobody, so the core sends what the socket takes of 800 KiB */
    int late = batch_send(tok, 1, 5);
    sleep_ms(200);
    target_send(t, "tail", 4);
    sleep_ms(100);
    batch_pull(tok, got, 5, IO_MS, &a);
    ck_assert_uint_eq(a.off, got);
    ck_assert_uint_eq(a.dlen, 4);
    ck_assert_mem_eq(batch_data, "tail", 4);
    /* and an ack request beyond a rewound offset is no error either */
    int late2 = batch_send(tok, got, 5);
    sleep_ms(100);
    req(reply, sizeof(reply), "ACK %s %" PRIu64 "\n", tok, got + 4);
    ASSERT_PREFIX(reply, "OK ");
    batch_pull(tok, got + 4, 1, IO_MS, &a);
    ck_assert_uint_eq(a.off, got + 4);
    ck_assert_uint_eq(a.dlen, 0);
    ck_assert(session_alive(tok));
    xclose(late);
    xclose(late2);
    xclose(t);
    xclose(l);
    core_stop();
}
END_TEST

void core_batch_tests(const core_tcases *t)
{
    tcase_add_test(t->batch, test_batch_empty);
    tcase_add_test(t->batch, test_batch_prompt);
    tcase_add_test(t->batch, test_batch_late_pull_does_not_strand_the_client);
    tcase_add_test(t->batch, test_batch_kept_connection);
    tcase_add_test(t->batch, test_batch_large_then_fin);
    tcase_add_test(t->batch, test_batch_data_and_fin);
    tcase_add_loop_test(t->batch, test_batch_target_reset, 0, 2);
    tcase_add_test(t->batch, test_batch_conflicts_and_close);
}
