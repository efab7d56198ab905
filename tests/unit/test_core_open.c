/* Relay core tests: requests without a session, and opening and closing sessions. */
#include "test_core_fx.h"

/* ---- tests: requests without sessions ------------------------------------------ */

START_TEST(test_stat_and_bad_requests)
{
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=0 closed=0 integrity=0 held=0 refused=0");
    req(reply, sizeof(reply), "HELLO\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 0 4096 10 5\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "OPEN t1 localhost 80 4096 10 5\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "PUSH abc\n");
    ASSERT_PREFIX(reply, "ERR 400 ");

    /* a request line that never ends */
    int fd = cx();
    char big[RH_IPC_LINE_MAX + 100];
    memset(big, 'A', sizeof(big));
    send_all(fd, big, RH_IPC_LINE_MAX);
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 400 ");
    xclose(fd);

    /* clients that go away without a word do not disturb the core */
    for (int i = 0; i < 5; ++i)
        xclose(cx());
    fd = cx();
    send_str(fd, "STA");
    xclose(fd);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=0 closed=0 integrity=0 held=0 refused=0");
    ck_assert_uint_eq(reg_active(), 0);
    core_stop();
}
END_TEST

/* ---- tests: open / close ----------------------------------------------------------- */

START_TEST(test_open_refused)
{
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    int port = closed_port();
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 10 5\n", port);
    ASSERT_PREFIX(reply, "ERR 502 ");
    ck_assert_msg(strstr(reply, "refused") != NULL, "reply: %s", reply);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    core_stop();
}
END_TEST

START_TEST(test_open_then_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 4096, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);

    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_int_eq(v.state, RH_SLOT_OPEN);
    ck_assert_str_eq(v.target, "t1");
    ck_assert(v.up_bytes == 0 && v.down_bytes == 0);
    ck_assert_uint_eq(reg_active(), 1);
    /* the token names the slot and generation the registry shows */
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    ck_assert_int_eq(rh_token_parse(tok, &slot, &gen, secret), 0);
    ck_assert_uint_eq(v.slot, slot);
    ck_assert_uint_eq(v.gen, gen);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=0 refused=0");

    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    /* close is an abort: the target sees a reset, not a clean end */
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_UNKNOWN);
    ck_assert(log_has("closed by client"));

    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    core_stop();
}
END_TEST

/* The session table is bounded; a freed slot comes back with a new generation. */
START_TEST(test_table_full)
{
    char tok[RH_TOKEN_LEN + 1], tok2[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(1, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 4096, 30, tok);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 30 5\n", port);
    ASSERT_PREFIX(reply, "ERR 503 ");
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    open_session(port, 4096, 30, tok2);
    ck_assert(strncmp(tok, tok2, 8) == 0);            /* same slot */
    ck_assert(strncmp(tok + 8, tok2 + 8, 8) != 0);    /* new generation */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(session_alive(tok2));
    xclose(l);
    core_stop();
}
END_TEST

/* A target that accepts no connection: its backlog is full, SYNs are dropped. */
static int blackhole_listen(int *port, int fillers[2])
{
    int l = tcp_listen(port, 0, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)*port);
    for (int i = 0; i < 2; ++i) {
        fillers[i] = track(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
        connect(fillers[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    sleep_ms(50);
    return l;
}

START_TEST(test_connect_timeout)
{
    char reply[RH_IPC_LINE_MAX];
    int port, fill[2];
    core_start(8, 20);
    int l = blackhole_listen(&port, fill);
    long t0 = now_ms();
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 30 1\n", port);
    long dt = now_ms() - t0;
    ASSERT_PREFIX(reply, "ERR 504 ");
    ck_assert_msg(dt >= 900 && dt < 2500, "connect timeout after %ld ms (1 s asked)", dt);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("connect timeout"));

    /* the handler giving up while the core connects frees the session too */
    int fd = cx();
    char line[128];
    snprintf(line, sizeof(line), "OPEN t1 127.0.0.1 %d 4096 30 10\n", port);
    send_str(fd, line);
    ck_assert(WAIT_FOR(reg_active() == 1, IO_MS));
    xclose(fd);
    ck_assert_msg(WAIT_FOR(reg_active() == 0, 1000), "session of a vanished opener kept");
    ck_assert(log_has("opener went away"));
    xclose(l);
    core_stop();
}
END_TEST

void core_open_tests(const core_tcases *t)
{
    tcase_add_test(t->requests, test_stat_and_bad_requests);
    tcase_add_test(t->requests, test_open_refused);
    tcase_add_test(t->requests, test_open_then_close);
    tcase_add_test(t->requests, test_table_full);
    tcase_add_test(t->requests, test_connect_timeout);
}
