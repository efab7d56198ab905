/* Relay core tests: WATCH, one long-poll for many idle sessions
 * (rh_core_watch.c): ready at once, ready later, a newer watch taking
 * sessions from an older one, ends, timeouts, the handler's hang-up, and the
 * idle timeout that does not run while a session is watched. */
#include "test_core_fx.h"

#define WATCH_BODY_MAX (RH_WATCH_MAX * (RH_SID_LEN + 6))

/* Sends WATCH for n sessions (toks[i], acks[i]) with poll_s, on a new
 * connection (owner 0: none) */
static int watch_send_as(const char *target, char (*toks)[RH_TOKEN_LEN + 1],
                         const uint64_t *acks, int n, unsigned poll_s, uint64_t owner)
{
    static char buf[RH_WATCH_BODY_MAX + RH_IPC_LINE_MAX];
    size_t len = 0;
    if (owner)
        len = (size_t)sprintf(buf, "WATCH %s %d %u owner=%016llx\n", target, n, poll_s,
                              (unsigned long long)owner);
    else
        len = (size_t)sprintf(buf, "WATCH %s %d %u\n", target, n, poll_s);
    for (int i = 0; i < n; ++i)
        len += (size_t)sprintf(buf + len, "%s %llu\n", toks[i],
                               (unsigned long long)(acks ? acks[i] : 0));
    int fd = cx();
    send_all(fd, buf, len);
    return fd;
}

static int watch_send(char (*toks)[RH_TOKEN_LEN + 1], const uint64_t *acks, int n,
                      unsigned poll_s)
{
    return watch_send_as("t1", toks, acks, n, poll_s, 0);
}

/* The answer of a watch: "OK <len>", len bytes into body (NUL-terminated),
 * then the core closes. Returns ms from t0 to the answer line. */
static long watch_read(int fd, long t0, int ms, char *body)
{
    char line[RH_IPC_LINE_MAX];
    read_reply(fd, line, sizeof(line), ms);
    long dt = now_ms() - t0;
    ck_assert_msg(!strncmp(line, "OK ", 3), "watch answer: %s", line);
    size_t len = strtoul(line + 3, NULL, 10);
    ck_assert_uint_le(len, WATCH_BODY_MAX);
    if (len)
        ck_assert_int_eq(rh_ipc_read(fd, body, len, IO_MS), (ssize_t)len);
    body[len] = '\0';
    char extra;
    ck_assert_int_eq(rh_ipc_read(fd, &extra, 1, IO_MS), 0);
    xclose(fd);
    return dt;
}

/* "<sid> <state>\n" for the token's session */
static const char *line_of(const char *tok, const char *state)
{
    static char l[4][64];
    static int i;
    char *o = l[i++ % 4];
    snprintf(o, 64, "%.*s %s\n", RH_SID_LEN, tok, state);
    return o;
}

/* The target sends byte b: the watch on fd answers at once, naming tok */
static void wake_named(int target, const char *b, int fd, const char *tok)
{
    char body[WATCH_BODY_MAX + 1];
    long t0 = now_ms();
    target_send(target, b, 1);
    long dt = watch_read(fd, t0, IO_MS, body);
    ck_assert_msg(dt < 500, "the watch answered %ld ms after the target's byte", dt);
    ck_assert_str_eq(body, line_of(tok, "data"));
}

/* A core and n sessions to one listener (idle idle_s), their targets in t[] */
static int sessions(int n, unsigned idle_s, char (*toks)[RH_TOKEN_LEN + 1], int *t)
{
    int port;
    core_start(16, 20);
    int l = tcp_listen(&port, 0, 16);
    for (int i = 0; i < n; ++i) {
        open_session(port, 65536, idle_s, toks[i]);
        t[i] = tcp_accept(l, IO_MS);
    }
    return l;
}

/* Ready at registration: a session whose target sent bytes beyond the ack,
 * a token the core does not know, a session of another target or another
 * user, a bad secret: the answer comes at once and names only those. */
START_TEST(test_watch_ready_at_once)
{
    char toks[4][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1], reply[RH_IPC_LINE_MAX];
    int t[4], port;
    int l = sessions(2, 30, toks, t);
    int l2 = tcp_listen(&port, 0, 4);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 65536 30 5 owner=00000000000000aa\n",
        port);
    ASSERT_PREFIX(reply, "OK ");
    strcpy(toks[2], reply + 3);
    strcpy(toks[3], toks[1]);
    toks[3][RH_TOKEN_LEN - 1] = toks[3][RH_TOKEN_LEN - 1] == '0' ? '1' : '0';
    target_send(t[0], "down", 4);
    sleep_ms(100);
    /* session 0 has 4 bytes beyond ack 0, session 1 none: only 0 is ready */
    long t0 = now_ms();
    int fd = watch_send(toks, (uint64_t[]){ 0, 0 }, 2, 5);
    ck_assert_msg(watch_read(fd, t0, IO_MS, body) < 200, "late answer");
    ck_assert_str_eq(body, line_of(toks[0], "data"));
    /* acked: nothing ready; another user's session and a bad secret are gone */
    t0 = now_ms();
    fd = watch_send_as("t1", toks, (uint64_t[]){ 4, 0, 0, 0 }, 4, 5, 0xbb);
    watch_read(fd, t0, IO_MS, body);
    char want[256];
    snprintf(want, sizeof(want), "%s%s", line_of(toks[2], "gone"), line_of(toks[3], "gone"));
    ck_assert_str_eq(body, want);
    /* its owner sees it (nothing ready: the answer waits); another target's is gone */
    fd = watch_send_as("t1", toks + 2, NULL, 1, 5, 0xaa);
    assert_no_reply(fd, 300, "a watch of an idle session of its owner");
    xclose(fd);
    fd = watch_send_as("t2", toks, (uint64_t[]){ 4 }, 1, 5, 0);
    watch_read(fd, now_ms(), IO_MS, body);
    ck_assert_str_eq(body, line_of(toks[0], "gone"));
    ck_assert(session_alive(toks[0]) && session_alive(toks[1]));
    xclose(l2);
    xclose(l);
    core_stop();
}
END_TEST

/* Ready later: nothing at first; the target of one session sends and the
 * watch answers at once, naming that session only. */
START_TEST(test_watch_ready_later)
{
    char toks[3][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    int t[3];
    int l = sessions(3, 30, toks, t);
    int fd = watch_send(toks, NULL, 3, 10);
    assert_no_reply(fd, 300, "a watch of idle sessions");
    long t0 = now_ms();
    target_send(t[1], "x", 1);
    long dt = watch_read(fd, t0, IO_MS, body);
    ck_assert_msg(dt < 200, "the watch answered %ld ms after the target's byte", dt);
    ck_assert_str_eq(body, line_of(toks[1], "data"));
    /* nothing was consumed: a pull gets the byte */
    batch_ans a;
    batch_pull(toks[1], 0, 1, IO_MS, &a);
    ck_assert_uint_eq(a.dlen, 1);
    ck_assert_mem_eq(batch_data, "x", 1);
    xclose(l);
    core_stop();
}
END_TEST

/* An idle stream tunnel of relay-https gives its stream pull up and joins a
 * watch (client/rhc_xp_watch.c, watch_idle); the handler of that pull may not
 * have noticed yet, so the core still pumps into it. The target's bytes go
 * there, nobody reads them, and the watch must still name the session (it
 * compares the listed ack with what the core read, not with what it sent);
 * the next pull, from that ack, gets them again (resume). */
START_TEST(test_watch_beside_a_given_up_stream_pull)
{
    char tok[1][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    int port;
    core_start(16, 20);
    int l = tcp_listen(&port, 0, 16);
    open_session_window(port, 65536, 30, 1 << 20, tok[0]);
    int t = tcp_accept(l, IO_MS);
    frd *old = pull_start(tok[0], 0, 0);        /* the given-up pull: never read again */
    int fd = watch_send(tok, (uint64_t[]){ 0 }, 1, 10);
    assert_no_reply(fd, 200, "a watch of an idle session");
    long t0 = now_ms();
    target_send(t, "late", 4);
    long dt = watch_read(fd, t0, IO_MS, body);
    ck_assert_msg(dt < 500, "the watch answered %ld ms after the target's bytes", dt);
    ck_assert_str_eq(body, line_of(tok[0], "data"));
    frd *r = pull_start(tok[0], 0, 0);          /* takes over from the old one */
    frd_expect_data(r, "late");
    frd_free(r);
    frd_free(old);
    xclose(t);
    xclose(l);
    core_stop();
}
END_TEST

/* A newer watch takes the sessions it lists from an older one; the older
 * answers (empty) once it has none left, not before. */
START_TEST(test_watch_supersede)
{
    char toks[2][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    int t[2];
    int l = sessions(2, 30, toks, t);
    int w1 = watch_send(toks, NULL, 2, 10);        /* A, B */
    assert_no_reply(w1, 200, "watch 1");
    int w2 = watch_send(toks, NULL, 1, 10);        /* A */
    assert_no_reply(w1, 200, "watch 1 that still has B");
    assert_no_reply(w2, 1, "watch 2");
    long t0 = now_ms();
    int w3 = watch_send(toks + 1, NULL, 1, 10);    /* B */
    ck_assert_msg(watch_read(w1, t0, IO_MS, body) < 200, "watch 1 answered late");
    ck_assert_str_eq(body, "");
    /* A's bytes wake the watch that has A now, not the other */
    wake_named(t[0], "a", w2, toks[0]);
    assert_no_reply(w3, 200, "watch 3");
    wake_named(t[1], "b", w3, toks[1]);
    xclose(l);
    core_stop();
}
END_TEST

/* The target ends (FIN, _i 0) or resets (_i 1) a watched session, or the
 * client closes it (_i 2): the watch names it at once (the pull then hears
 * F or why). */
START_TEST(test_watch_session_end)
{
    char toks[2][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    int t[2];
    int l = sessions(2, 30, toks, t);
    int fd = watch_send(toks, NULL, 2, 10);
    assert_no_reply(fd, 200, "a watch of idle sessions");
    long t0 = now_ms();
    char reply[RH_IPC_LINE_MAX];
    if (_i == 2)
        req(reply, sizeof(reply), "CLOSE %s\n", toks[0]);
    else if (_i)
        target_reset(t[0]);
    else
        shutdown(t[0], SHUT_WR);
    ck_assert_msg(watch_read(fd, t0, IO_MS, body) < 300, "late answer");
    ck_assert_str_eq(body, line_of(toks[0], "data"));
    if (_i) {
        ck_assert(WAIT_FOR(!session_alive(toks[0]), IO_MS));   /* its pull hears why */
    } else {
        batch_ans a;
        batch_pull(toks[0], 0, 1, IO_MS, &a);
        ck_assert_int_eq(a.term, RH_FRAME_FIN);
    }
    xclose(l);
    core_stop();
}
END_TEST

/* Nothing happens: the answer is empty after poll_s, and the sessions live
 * on; a session whose data moved within RH_BUSY_WINDOW_MS makes it 1 s. */
START_TEST(test_watch_timeout_and_busy)
{
    char toks[2][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1], reply[RH_IPC_LINE_MAX];
    int t[2];
    int l = sessions(2, 30, toks, t);
    long t0 = now_ms();
    long dt = watch_read(watch_send(toks, NULL, 2, 2), t0, 4000, body);
    ck_assert_msg(dt >= 1900 && dt < 2800, "empty answer after %ld ms (2 s asked)", dt);
    ck_assert_str_eq(body, "");
    ck_assert(session_alive(toks[0]) && session_alive(toks[1]));
    /* up bytes moved on session 1 just now: busy */
    int push = push_open(toks[1], 0);
    send_frame(push, RH_FRAME_DATA, "up", 2);
    target_expect(t[1], "up");
    t0 = now_ms();
    dt = watch_read(watch_send(toks, NULL, 2, 5), t0, 4000, body);
    ck_assert_msg(dt >= 900 && dt < 1800, "busy: empty answer after %ld ms (1 s)", dt);
    ck_assert_str_eq(body, "");
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    xclose(l);
    core_stop();
}
END_TEST

/* The handler hangs up: the watch is gone from its sessions (a new watch
 * that lists them waits as if there had been none, and the worker it held
 * is free). */
START_TEST(test_watch_handler_gone)
{
    char toks[2][RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int t[2];
    int l = sessions(2, 30, toks, t);
    int w1 = watch_send(toks, NULL, 2, 10);
    assert_no_reply(w1, 200, "watch 1");
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_msg(strstr(reply, " held=1 "), "a waiting watch holds a worker: %s", reply);
    xclose(w1);
    ck_assert(WAIT_FOR((req(reply, sizeof(reply), "STAT\n"), strstr(reply, " held=0 ")),
                       IO_MS));
    int w2 = watch_send(toks, NULL, 1, 10);
    assert_no_reply(w2, 200, "watch 2");
    wake_named(t[0], "a", w2, toks[0]);
    xclose(l);
    core_stop();
}
END_TEST

/* RelayIdleTimeout does not run while a session is in a waiting watch (as
 * under a waiting pull), and starts again when the watch ends, from then;
 * also when the handler hangs up. */
START_TEST(test_watch_idle)
{
    char toks[1][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    int t[1];
    int l = sessions(1, 1, toks, t);
    long t0 = now_ms();
    int fd = watch_send(toks, NULL, 1, 3);
    sleep_ms(2000);
    ck_assert_msg(session_alive(toks[0]), "a watched session idled out (idle 1 s)");
    long dt = watch_read(fd, t0, 4000, body);
    ck_assert_str_eq(body, "");
    ck_assert_msg(dt >= 2900, "empty answer after %ld ms", dt);
    long t1 = now_ms();
    ck_assert(WAIT_FOR(!session_alive(toks[0]), 3000));
    dt = now_ms() - t1;
    ck_assert_msg(dt >= 700 && dt < 2500, "idle end %ld ms after the watch (1 s)", dt);
    /* again, ended by the handler's hang-up */
    int port;
    char tok2[1][RH_TOKEN_LEN + 1];
    int l2 = tcp_listen(&port, 0, 4);
    open_session(port, 65536, 1, tok2[0]);
    fd = watch_send(tok2, NULL, 1, 10);
    sleep_ms(1800);
    ck_assert_msg(session_alive(tok2[0]), "a watched session idled out (idle 1 s)");
    xclose(fd);
    t1 = now_ms();
    ck_assert(WAIT_FOR(!session_alive(tok2[0]), 3000));
    dt = now_ms() - t1;
    ck_assert_msg(dt >= 700 && dt < 2500, "idle end %ld ms after the hang-up (1 s)", dt);
    xclose(l2);
    xclose(l);
    core_stop();
}
END_TEST

/* Malformed lines, a repeated session, more lines than announced: 400 for
 * the whole watch, which takes nothing from an older watch. */
START_TEST(test_watch_refused)
{
    char toks[2][RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], buf[512];
    int t[2];
    int l = sessions(2, 30, toks, t);
    int w1 = watch_send(toks, NULL, 1, 10);
    const char *bad[] = { "%s x\n", "%s\n", "%s 1 2\n", "zz%s 0\n", "%s -1\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        int fd = cx();
        int n = snprintf(buf, sizeof(buf), "WATCH t1 1 5\n");
        snprintf(buf + n, sizeof(buf) - (size_t)n, bad[i], toks[0]);
        send_str(fd, buf);
        read_reply(fd, reply, sizeof(reply), IO_MS);
        ck_assert_msg(!strncmp(reply, "ERR 400 ", 8), "line '%s': %s", bad[i], reply);
        xclose(fd);
    }
    snprintf(toks[1], sizeof(toks[1]), "%s", toks[0]);
    int fd = watch_send(toks, NULL, 2, 5);
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ck_assert_msg(!strncmp(reply, "ERR 400 ", 8), "repeated session: %s", reply);
    xclose(fd);
    fd = cx();
    snprintf(buf, sizeof(buf), "WATCH t1 1 5\n%s 0\n%s 0\n", toks[0], toks[0]);
    send_str(fd, buf);
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ck_assert_msg(!strncmp(reply, "ERR 400 ", 8), "more lines: %s", reply);
    xclose(fd);
    req(reply, sizeof(reply), "WATCH t1 0 5\n");
    ck_assert_msg(!strncmp(reply, "ERR 400 ", 8), "no lines: %s", reply);
    req(reply, sizeof(reply), "WATCH t1 %d 5\n", RH_WATCH_MAX + 1);
    ck_assert_msg(!strncmp(reply, "ERR 400 ", 8), "too many: %s", reply);
    /* watch 1 still has its session */
    assert_no_reply(w1, 100, "watch 1");
    target_send(t[0], "a", 1);
    char body[WATCH_BODY_MAX + 1];
    watch_read(w1, now_ms(), IO_MS, body);
    ck_assert_str_eq(body, line_of(toks[0], "data"));
    xclose(l);
    core_stop();
}
END_TEST

/* The status figures in the table's extension: sessions in a waiting watch
 * and watches waiting, published at the core's next turn, and the answers
 * by class (data, gone, empty); a hang-up is no answer. */
static uint64_t wfig(int i)
{
    const rh_watch_stats *w = &CF.ext->watch;
    return __atomic_load_n(i < 0 ? &w->sessions : i == RH_WATCH_ANS_N ? &w->waiting
                           : &w->answered[i], __ATOMIC_RELAXED);
}
#define W_SESS (-1)
#define W_WAITING RH_WATCH_ANS_N
#define FIGS(s, wt, d, g, e) (wfig(W_SESS) == (s) && wfig(W_WAITING) == (wt)                \
                              && wfig(RH_WATCH_ANS_DATA) == (d)                            \
                              && wfig(RH_WATCH_ANS_GONE) == (g)                            \
                              && wfig(RH_WATCH_ANS_EMPTY) == (e))
#define ASSERT_FIGS(s, wt, d, g, e)                                                          \
    ck_assert_msg(WAIT_FOR(FIGS(s, wt, d, g, e), IO_MS),                                     \
                  "watch figures: %llu sessions, %llu waiting, answered %llu %llu %llu; "    \
                  "want %d %d, %d %d %d", (unsigned long long)wfig(W_SESS),                  \
                  (unsigned long long)wfig(W_WAITING),                                       \
                  (unsigned long long)wfig(RH_WATCH_ANS_DATA),                               \
                  (unsigned long long)wfig(RH_WATCH_ANS_GONE),                               \
                  (unsigned long long)wfig(RH_WATCH_ANS_EMPTY), s, wt, d, g, e)

START_TEST(test_watch_figures)
{
    char toks[3][RH_TOKEN_LEN + 1], body[WATCH_BODY_MAX + 1];
    char two[2][RH_TOKEN_LEN + 1];
    int t[3];
    int l = sessions(3, 30, toks, t);
    ASSERT_FIGS(0, 0, 0, 0, 0);
    int w1 = watch_send(toks, NULL, 3, 10);
    ASSERT_FIGS(3, 1, 0, 0, 0);
    wake_named(t[1], "x", w1, toks[1]);
    ASSERT_FIGS(0, 0, 1, 0, 0);
    /* an unknown token beside an idle session: answered at once, gone */
    snprintf(two[0], sizeof(two[0]), "%s", toks[0]);
    memcpy(two[1], "0000000f00000063", RH_SID_LEN);   /* a slot nobody has */
    memcpy(two[1] + RH_SID_LEN, toks[0] + RH_SID_LEN, RH_TOKEN_LEN - RH_SID_LEN + 1);
    watch_read(watch_send(two, NULL, 2, 10), now_ms(), IO_MS, body);
    ck_assert_str_eq(body, line_of(two[1], "gone"));
    ASSERT_FIGS(0, 0, 1, 1, 0);
    /* a newer watch takes all the sessions of a waiting one: that one is empty */
    uint64_t acks[3] = { 0, 1, 0 };
    int w2 = watch_send(toks, acks, 3, 10);
    ASSERT_FIGS(3, 1, 1, 1, 0);
    int w3 = watch_send(toks, acks, 3, 10);
    watch_read(w2, now_ms(), IO_MS, body);
    ck_assert_str_eq(body, "");
    ASSERT_FIGS(3, 1, 1, 1, 1);
    /* the handler hangs up: nothing waits, nothing was answered */
    xclose(w3);
    ASSERT_FIGS(0, 0, 1, 1, 1);
    xclose(l);
    core_stop();
}
END_TEST

/* Model-based: random watches over 5 sessions, random target bytes and
 * target resets; a model says which watch holds each session and which
 * sessions are gone. After every step, exactly the watches the model says
 * answered have answered, naming what it says, and the others wait. */
#define MB_SESS 5
#define MB_WATCH 40
typedef struct mb_model {
    char toks[MB_SESS][RH_TOKEN_LEN + 1];
    int t[MB_SESS], fds[MB_WATCH];
    int holder[MB_SESS];          /* the watch that has the session; -1: none */
    int live[MB_WATCH];           /* sessions each watch still has */
    int dead[MB_SESS];            /* reset by its target (freed unless it holds bytes) */
    uint64_t sent[MB_SESS];
    int nw, step;
} mb_model;

/* Watch w answers: its body is want; it lets all its sessions go */
static void mb_answered(mb_model *m, int w, const char *want)
{
    char body[WATCH_BODY_MAX + 1];
    watch_read(m->fds[w], now_ms(), IO_MS, body);
    ck_assert_msg(!strcmp(body, want), "step %d: watch %d named \"%s\", the model \"%s\"",
                  m->step, w, body, want);
    m->fds[w] = -1;
    for (int j = 0; j < MB_SESS; ++j)
        if (m->holder[j] == w)
            m->holder[j] = -1;
}

/* A new watch of the sessions in mask, each at its current ack */
static void mb_watch(mb_model *m, unsigned mask)
{
    char sub[MB_SESS][RH_TOKEN_LEN + 1], now[256] = "";
    uint64_t acks[MB_SESS];
    int n = 0, w = m->nw++, emptied[MB_WATCH], ne = 0;
    m->live[w] = 0;
    for (int i = 0; i < MB_SESS; ++i) {
        if (!(mask & (1u << i)))
            continue;
        strcpy(sub[n], m->toks[i]);
        acks[n++] = m->sent[i];
        /* reset: gone once the core freed it, ready while it still holds
         * bytes for a pull (the R comes after them) */
        if (m->dead[i])
            strcat(now, line_of(m->toks[i], m->sent[i] ? "data" : "gone"));
        if (m->dead[i] && !m->sent[i])
            continue;
        int old = m->holder[i];
        if (old >= 0 && --m->live[old] == 0)
            emptied[ne++] = old;
        m->holder[i] = w;
        ++m->live[w];
    }
    m->fds[w] = watch_send(sub, acks, n, 30);
    for (int j = 0; j < ne; ++j)
        mb_answered(m, emptied[j], "");
    if (now[0])
        mb_answered(m, w, now);    /* at once, and it took its sessions all the same */
}

/* The target of session i sends a byte, or resets: its watch names it */
static void mb_target(mb_model *m, int i, int reset)
{
    if (m->dead[i])
        return;
    if (reset) {
        target_reset(m->t[i]);
        m->dead[i] = 1;
    } else {
        target_send(m->t[i], "z", 1);
        ++m->sent[i];
    }
    if (m->holder[i] >= 0)
        mb_answered(m, m->holder[i], line_of(m->toks[i], "data"));
}

START_TEST(test_watch_model)
{
    static mb_model m;
    unsigned seed = 17 + (unsigned)_i;
    memset(&m, 0, sizeof(m));
    int l = sessions(MB_SESS, 60, m.toks, m.t);
    for (int i = 0; i < MB_SESS; ++i)
        m.holder[i] = -1;
    for (m.step = 0; m.step < 80; ++m.step) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = (seed >> 16) % 20;
        if (r < 12 && m.nw < MB_WATCH)
            mb_watch(&m, ((seed >> 8) % ((1u << MB_SESS) - 1)) + 1);
        else
            mb_target(&m, (int)((seed >> 8) % MB_SESS), r == 19);
        if (r == 19)   /* a reset ends the session: its end reaches the core */
            sleep_ms(50);
        for (int w = 0; w < m.nw; ++w)
            if (m.fds[w] >= 0)
                assert_no_reply(m.fds[w], 2, "a watch the model says waits");
    }
    for (int w = 0; w < m.nw; ++w)
        if (m.fds[w] >= 0)
            xclose(m.fds[w]);
    xclose(l);
    core_stop();
}
END_TEST

void core_watch_tests(const core_tcases *t)
{
    tcase_add_test(t->batch, test_watch_ready_at_once);
    tcase_add_test(t->batch, test_watch_ready_later);
    tcase_add_test(t->batch, test_watch_supersede);
    tcase_add_test(t->batch, test_watch_beside_a_given_up_stream_pull);
    tcase_add_loop_test(t->batch, test_watch_session_end, 0, 3);
    tcase_add_test(t->batch, test_watch_timeout_and_busy);
    tcase_add_test(t->batch, test_watch_handler_gone);
    tcase_add_test(t->timers, test_watch_idle);
    tcase_add_test(t->batch, test_watch_refused);
    tcase_add_test(t->batch, test_watch_figures);
    tcase_add_loop_test(t->batch, test_watch_model, 0, 3);
}
