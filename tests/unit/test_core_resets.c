/* Relay core tests: resets, bad requests and frames, a pull reattached, the core
 * stopped with sessions. */
#include "test_core_fx.h"

/* ---- tests: resets and errors -------------------------------------------------------- */

START_TEST(test_push_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    send_frame(push, RH_FRAME_RESET, "client abort", 12);
    read_reply(push, reply, sizeof(reply), IO_MS);
    /* named a reset: a client that hears this before its pull's R says why */
    ASSERT_PREFIX(reply, "ERR 410 reason=" RH_REASON_TOKEN_RESET " session reset: ");
    ck_assert_msg(strstr(reply, "client abort") != NULL, "reply: %s", reply);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= 12 && memmem(ev.data, ev.len, "client abort", 12) != NULL,
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(!session_alive(tok));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A reset session's reason, for the push, reset by the client with it. */
static void reset_by_client(const char *tok, const char *why)
{
    char reply[RH_IPC_LINE_MAX];
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_RESET, why, strlen(why));
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 reason=" RH_REASON_TOKEN_RESET " ");
    xclose(push);
}

/* A request that comes after its session was reset hears why (reason=reset),
 * and so does GONE, the handler's question for a token its registry no longer
 * has; a token with another secret, or a reset older than the last 256, hears
 * only that the session is gone. */
START_TEST(test_reset_reason_outlives_session)
{
    char first[RH_TOKEN_LEN + 1], tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    const char *said = "ERR 410 reason=" RH_REASON_TOKEN_RESET
                       " session reset: reset by client: bad datagram";
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, first);
    xclose(tcp_accept(l, IO_MS));
    reset_by_client(first, "bad datagram");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    attach_refused(reply, sizeof(reply), "PULL", first, 0, " stream");
    ck_assert_str_eq(reply, said);
    req(reply, sizeof(reply), "GONE %s\n", first);
    ck_assert_str_eq(reply, said);
    strcpy(tok, first);
    tok[RH_TOKEN_LEN - 1] = tok[RH_TOKEN_LEN - 1] == '0' ? '1' : '0';   /* the secret */
    req(reply, sizeof(reply), "GONE %s\n", tok);
    ck_assert_str_eq(reply, "ERR 410 unknown or expired session");
    for (int i = 0; i < 256; ++i) {   /* the tombstones are bounded */
        open_session(port, 65536, 30, tok);
        xclose(tcp_accept(l, IO_MS));
        reset_by_client(tok, "again");
    }
    req(reply, sizeof(reply), "GONE %s\n", first);
    ck_assert_str_eq(reply, "ERR 410 unknown or expired session");
    req(reply, sizeof(reply), "GONE %s\n", tok);
    ck_assert_str_eq(reply, "ERR 410 reason=reset session reset: reset by client: again");
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_push_bad_frames)
{
    /* 0: unknown type, 1: E on a push, 2: too long, 3: data after F */
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    unsigned char h[RH_FRAME_HDR];
    switch (_i) {
    case 0:
        rh_frame_hdr(h, 'Z', 0);
        send_all(push, h, 4);
        break;
    case 1:
        rh_frame_hdr(h, RH_FRAME_END, 0);
        send_all(push, h, 4);
        break;
    case 2:
        rh_frame_hdr(h, RH_FRAME_DATA, RH_FRAME_MAX + 1);
        send_all(push, h, 4);
        break;
    default:
        send_frame(push, RH_FRAME_FIN, NULL, 0);
        send_frame(push, RH_FRAME_DATA, "late", 4);
        break;
    }
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 400 ");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    frd_expect_eof(pr);
    /* the target is reset; after F it has seen the half-close first, and a
     * socket that saw FIN reports EOF, not the later RST */
    int rv = target_read_end(t, IO_MS, NULL, 0, NULL);
    if (_i == 3)
        ck_assert_msg(rv == 0 || rv == -ECONNRESET, "target: %s", strerror(-rv));
    else
        ck_assert_msg(rv == -ECONNRESET, "target: %s", rv ? strerror(-rv) : "clean EOF");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A target reset: the bytes it sent first still arrive, then R. */
START_TEST(test_target_reset)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "abc", 3);
    frd_expect_data(pr, "abc");
    target_reset(t);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    /* the reason is whole (it was once copied onto itself with snprintf) */
    ck_assert_msg(ev.len > 27 && memcmp(ev.data, "target reset the connection", 27) == 0,
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(CF.reg->total_down == 3);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* One pull per session; pushes apply in offset order, one at a time: a push that
 * comes while another is active, or whose offset is ahead, waits for its turn. */
START_TEST(test_conflicts)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);

    int push = push_open(tok, 0);
    int early = push_send(tok, 0, NULL, 0);
    assert_no_reply(early, 200, "a push while another is active");
    frd *pr = pull_start(tok, 0, 0);
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " batch 5");
    ASSERT_PREFIX(reply, "ERR 409 ");
    /* the refused requests did not disturb the attached ones */
    send_frame(push, RH_FRAME_DATA, "hey", 3);
    target_expect(t, "hey");
    frd_expect_ack(pr, 3);
    target_send(t, "yo", 2);
    frd_expect_data(pr, "yo");

    /* the push body ends: DONE with the accepted offset */
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    xclose(push);
    /* the push that waited wanted offset 0, which is behind now */
    read_reply(early, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(strstr(reply, "3") != NULL, "reply: %s", reply);
    xclose(early);
    /* a push below the accepted offset is refused at once */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(strstr(reply, "3") != NULL, "reply: %s", reply);
    /* a push ahead waits until the bytes before it have come */
    int ahead = push_send(tok, 5, NULL, 0);
    assert_no_reply(ahead, 200, "a push ahead of the accepted offset");
    push = push_open(tok, 3);
    send_frame(push, RH_FRAME_DATA, "!!", 2);
    target_expect(t, "!!");
    frd_expect_ack(pr, 5);
    assert_no_reply(ahead, 100, "a push while the one before it is active");
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(ahead, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    send_frame(ahead, RH_FRAME_DATA, "?", 1);
    target_expect(t, "?");
    shutdown(ahead, SHUT_WR);
    read_reply(ahead, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 6");
    ck_assert(session_alive(tok));
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.up_bytes == 6 && v.down_bytes == 2, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* _i: 0 stream pull, 1 batch pull */
START_TEST(test_pull_ack_mismatch)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " bogus");
    ASSERT_PREFIX(reply, "ERR 400 ");
    ck_assert(session_alive(tok));
    /* asking for bytes the core does not have: 416 and the session is over */
    attach_refused(reply, sizeof(reply), "PULL", tok, 7, _i ? " batch 5" : " stream");
    ASSERT_PREFIX(reply, "ERR 416 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_bad_tokens)
{
    char tok[RH_TOKEN_LEN + 1], bad[128], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);

    /* malformed: non-hex, too short, too long for the protocol */
    strcpy(bad, tok);
    bad[20] = 'z';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%.47s", tok);
    attach_refused(reply, sizeof(reply), "PULL", bad, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%s%s", tok, "00");
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%s%s", tok, tok);    /* does not fit the line field */
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");

    /* well-formed but unknown: wrong secret, generation, slot */
    strcpy(bad, tok);
    bad[RH_TOKEN_LEN - 1] = bad[RH_TOKEN_LEN - 1] == '0' ? '1' : '0';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    attach_refused(reply, sizeof(reply), "PULL", bad, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "CLOSE %s\n", bad);
    ASSERT_PREFIX(reply, "ERR 410 ");
    strcpy(bad, tok);
    bad[15] = bad[15] == '0' ? '1' : '0';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    strcpy(bad, tok);
    memcpy(bad, "ffffffff", 8);
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    memcpy(bad, "00000007", 8);                       /* a free slot in range */
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");

    /* none of that touched the real session */
    ck_assert(session_alive(tok));
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "ok", 2);
    target_expect(t, "ok");
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: reattach and shutdown ---------------------------------------------------- */

START_TEST(test_pull_reattach)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "first", 5);
    frd_expect_data(pr, "first");
    xclose(pr->fd);
    frd_free(pr);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));
    ck_assert(session_alive(tok));
    target_send(t, "second", 6);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "up", 2);
    target_expect(t, "up");
    sleep_ms(50);
    /* the ack must be what was sent; the new pull's first A tells the up bytes */
    pr = pull_start(tok, 5, 2);
    frd_expect_data(pr, "second");
    attach_refused(reply, sizeof(reply), "PULL", tok, 11, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == 11, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Stopping the core: clients hear R, targets get a clean FIN. */
START_TEST(test_stop_with_sessions)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int pull = pull_open(tok, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "a", 1);
    target_expect(t, "a");
    core_stop();
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert_msg(strstr(reply, "stopping") != NULL, "reply: %s", reply);
    frd *pr = frd_new(pull);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(memmem(ev.data, ev.len, "stopping", 8) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);   /* FIN, not RST */
    frd_free(pr);
    xclose(l);
}
END_TEST

void core_resets_tests(const core_tcases *t)
{
    tcase_add_test(t->requests, test_bad_tokens);
    tcase_add_test(t->requests, test_conflicts);
    tcase_add_loop_test(t->requests, test_pull_ack_mismatch, 0, 2);
    tcase_add_test(t->data, test_push_reset);
    tcase_add_test(t->data, test_reset_reason_outlives_session);
    tcase_add_loop_test(t->data, test_push_bad_frames, 0, 4);
    tcase_add_test(t->data, test_target_reset);
    tcase_add_test(t->data, test_pull_reattach);
    tcase_add_test(t->data, test_stop_with_sessions);
}
