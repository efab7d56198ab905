/* Relay core tests: end-to-end checks (check=crc32c): C frames both ways. */
#include "test_core_fx.h"

/* ---- tests: end-to-end checks (check=crc32c) ------------------------------------- */

/* A session whose D frames carry C frames both ways; window: resumable, keeping
 * that many sent bytes (0: not resumable). */
static void open_checked(int port, unsigned bufsize, unsigned idle_s, unsigned window,
                         char tok[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX], resume[32] = "";
    if (window)
        snprintf(resume, sizeof(resume), " resume=%u", window);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d %u %u 5%s check=crc32c\n", port, bufsize,
        idle_s, resume);
    ASSERT_PREFIX(reply, "OK ");
    assert_token(reply + 3);
    strcpy(tok, reply + 3);
}

/* The client's side of the up direction: the offset, and the CRC32C of [0, off). */
typedef struct ckup {
    uint64_t off;
    uint32_t crc;
} ckup;

/* Appends a D frame to out, and counts its bytes; returns its size. */
static size_t ck_put_data(unsigned char *out, ckup *u, const void *data, size_t len)
{
    u->crc = rh_crc32c(u->crc, data, len);
    u->off += len;
    return frame_put(out, RH_FRAME_DATA, data, len);
}

/* Appends a D frame and the C frame that vouches for it; returns their size. */
static size_t ck_put(unsigned char *out, ckup *u, const void *data, size_t len)
{
    size_t n = ck_put_data(out, u, data, len);
    return n + rh_frame_check(out + n, u->off, u->crc);
}

/* Asserts that a target gets nothing (no byte, no EOF) for ms. */
static void target_quiet(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    ck_assert_msg(poll(&p, 1, ms) == 0, "the target got something it should not have");
}

/* The failures STAT counts. */
static unsigned long long stat_integrity(void)
{
    char reply[RH_IPC_LINE_MAX];
    unsigned long long n;
    req(reply, sizeof(reply), "STAT\n");
    const char *p = strstr(reply, " integrity=");
    ck_assert_msg(p && sscanf(p, " integrity=%llu", &n) == 1, "STAT: %s", reply);
    return n;
}

/* A request of a session that failed a check (within its 30 s linger) is
 * answered 422 with the reason, not 410. */
static void assert_refused_422(const char *fmt, const char *tok)
{
    char reply[RH_IPC_LINE_MAX];
    req(reply, sizeof(reply), fmt, tok);
    ASSERT_PREFIX(reply, "ERR 422 ");
    ck_assert_msg(strstr(reply, RH_REASON_INTEGRITY) != NULL, "reply: %s", reply);
}

/* The session failed a check: its end reads as "ERR 422 ...integrity check failed..."
 * on the push, a reset with no byte more at the target, the count in STAT, and
 * 422 for the session's next request. */
static void assert_integrity_failed(int push, int t, const char *tok, unsigned failures)
{
    char reply[RH_IPC_LINE_MAX];
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 422 ");
    ck_assert_msg(strstr(reply, RH_REASON_INTEGRITY) != NULL, "reply: %s", reply);
    unsigned char rx[64];
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), -ECONNRESET);
    ck_assert_msg(rl == 0, "the target got %zu bytes after the failed check", rl);
    ck_assert_uint_eq(stat_integrity(), failures);
    char line[128];   /* logged at level error, with the session id */
    snprintf(line, sizeof(line), "<%d> session %.16s: " RH_REASON_INTEGRITY, RH_LOG_ERR, tok);
    ck_assert_msg(log_has(line), "no \"%s\" in the log:\n%s", line, CF.log);
    assert_refused_422("PUSH %s 0\n", tok);
}

/* A stream pull of a checked session: H and A frames first, as any. */
static frd *ck_pull_start(const char *tok, uint64_t ack, uint64_t up)
{
    frd *r = pull_start(tok, ack, up);
    r->allowed = "DHFREAC";
    return r;
}

/* The client's side of the down direction: every byte by offset, and what the
 * C frames said next to the CRC of what it got. */
typedef struct ckdown {
    unsigned char got[1 << 19];
    uint64_t off;             /* bytes received and placed */
    uint32_t crc;             /* CRC32C of got[0, off), computed here */
    int due;                  /* a D frame ended: its C frame must come next */
    int ndata, nchecks;       /* whole D frames, C frames */
    int strict;               /* 1: a C frame that does not match fails the test */
    int nbad;                 /* C frames that did not match (not strict) */
    uint64_t last_ok;         /* the last matching C frame before the first bad one */
    uint64_t bad_off;         /* the first bad one */
    uint32_t bad_crc;
    uint64_t ends[1024];      /* offsets of the C frames, in order */
    int nends;
} ckdown;

static ckdown DN;

static void ckd_init(ckdown *d, int strict)
{
    memset(d, 0, sizeof(*d));
    d->strict = strict;
}

static void ckd_data(ckdown *d, const unsigned char *data, size_t len)
{
    ck_assert_msg(d->off + len <= sizeof(d->got), "more down bytes than the test expects");
    memcpy(d->got + d->off, data, len);
    d->crc = rh_crc32c(d->crc, data, len);
    d->off += len;
}

static void ckd_check(ckdown *d, uint64_t off, uint32_t crc)
{
    ck_assert_msg(off == d->off, "C frame at %llu, its D frame ends at %llu",
                  (unsigned long long)off, (unsigned long long)d->off);
    d->nchecks++;
    if (d->nends < (int)(sizeof(d->ends) / sizeof(d->ends[0])))
        d->ends[d->nends++] = off;
    if (crc == d->crc) {
        if (!d->nbad)
            d->last_ok = off;
        return;
    }
    ck_assert_msg(!d->strict, "C frame at %llu: CRC %08x, the bytes received have %08x",
                  (unsigned long long)off, crc, d->crc);
    if (!d->nbad++) {
        d->bad_off = off;
        d->bad_crc = crc;
    }
}

/* A pull taken over at ack: what comes next starts there. */
static void ckd_rewind(ckdown *d, uint64_t ack)
{
    ck_assert_uint_le(ack, d->off);
    d->off = ack;
    d->crc = rh_crc32c(0, d->got, (size_t)ack);
    d->due = 0;
}

/* Reads a checked stream pull until want bytes came and the C frame after them;
 * every D frame must be followed at once by its C frame. */
static void ckd_read(frd *r, ckdown *d, uint64_t want)
{
    rh_frame_event ev;
    while (d->off < want || d->due) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "checked pull: %s after %llu of %llu bytes",
                      rv == 0 ? "EOF" : strerror(-rv), (unsigned long long)d->off,
                      (unsigned long long)want);
        ck_assert_msg(!d->due || ev.type == RH_FEV_CHECK,
                      "checked pull: %s after the D frame ending at %llu, expected C",
                      fev_name(ev.type), (unsigned long long)d->off);
        switch (ev.type) {
        case RH_FEV_DATA:
            ckd_data(d, ev.data, ev.len);
            if (!r->p.type) {   /* the frame is whole */
                d->ndata++;
                d->due = 1;
            }
            break;
        case RH_FEV_CHECK:
            ck_assert_msg(d->due, "checked pull: C frame at %llu without its D frame",
                          (unsigned long long)ev.offset);
            d->due = 0;
            ckd_check(d, ev.offset, ev.crc);
            break;
        case RH_FEV_HEARTBEAT:
        case RH_FEV_ACK:
            break;
        default:
            ck_abort_msg("checked pull: %s at %llu", fev_name(ev.type),
                         (unsigned long long)d->off);
        }
    }
}

/* A batch answer of a checked session: a C frame right after every D frame, the
 * announced length counts them, and each matches the bytes from offset 0. */
static void ckd_batch(ckdown *d, const batch_ans *a)
{
    ck_assert_msg(a->off == d->off, "batch answer at %llu, expected %llu",
                  (unsigned long long)a->off, (unsigned long long)d->off);
    ck_assert_int_eq(a->d_alone, 0);
    ck_assert_int_eq(a->nck, a->ndata);
    size_t term_len = a->term == RH_FRAME_RESET ? strlen(a->reason) : 0;
    ck_assert_uint_eq(a->len, RH_FRAME_HDR + 8 + a->dlen + (size_t)a->ndata * RH_FRAME_HDR
                      + (size_t)a->nck * (RH_FRAME_HDR + RH_FRAME_CHECK_LEN) + RH_FRAME_HDR
                      + term_len);
    size_t from = 0;
    for (int i = 0; i < a->nck; ++i) {
        ck_assert_uint_gt(a->ck_dlen[i], from);
        ckd_data(d, batch_data + from, a->ck_dlen[i] - from);
        from = a->ck_dlen[i];
        d->ndata++;
        ckd_check(d, a->ck_off[i], a->ck_crc[i]);
    }
    ck_assert_uint_eq(from, a->dlen);
}

/* Batch pulls until the client has want bytes. */
static void ckd_batch_until(const char *tok, ckdown *d, uint64_t want)
{
    for (int answers = 0; d->off < want; ++answers) {
        batch_ans a;
        ck_assert_msg(answers < 50, "%llu of %llu bytes after %d batch answers",
                      (unsigned long long)d->off, (unsigned long long)want, answers);
        batch_pull(tok, d->off, 5, IO_MS, &a);
        ck_assert_int_eq(a.term, RH_FRAME_END);
        ckd_batch(d, &a);
    }
    ck_assert_uint_eq(d->off, want);
}

/* Reads a pull for ms: only H frames and A frames up to max_ack may come. */
static void frd_expect_acks_below(frd *r, int ms, uint64_t max_ack)
{
    rh_frame_event ev;
    int rv;
    long end = now_ms() + ms;
    while ((rv = frd_next(r, (int)(end - now_ms() > 0 ? end - now_ms() : 0), &ev)) == 1) {
        ck_assert_msg(ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK,
                      "pull: %s, expected nothing", fev_name(ev.type));
        ck_assert_msg(ev.type != RH_FEV_ACK || ev.offset <= max_ack,
                      "pull: A %llu counts bytes no C frame vouched for (accepted %llu)",
                      (unsigned long long)ev.offset, (unsigned long long)max_ack);
    }
    ck_assert_msg(rv == -ETIMEDOUT, "pull: %s", rv == 0 ? "EOF" : strerror(-rv));
}

/* Checked frames of many sizes, heartbeats and acks between them, written in
 * pieces cut at odd places: the target gets exactly the bytes, never one before
 * the C frame that vouches for it. */
START_TEST(test_integrity_push_roundtrip)
{
    static const size_t sizes[] = { 1, 7, 65536, 1000, 3, 40000, 65535, 2, 4096, 17 };
    static const size_t cuts[] = { 1, 2, 3, 5, 8, 13, 4093, 65537, 11, 30011, 7, 65539, 6 };
    enum { NF = sizeof(sizes) / sizeof(sizes[0]), NCUT = sizeof(cuts) / sizeof(cuts[0]) };
    static unsigned char body[300000], rx[300000], tmp[RH_FRAME_MAX];
    size_t ends[NF];          /* body bytes up to the end of each C frame */
    uint64_t offs[NF];        /* the offset each C frame vouches for */
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], want[64];
    int port;
    ckup u = { 0, 0 };
    size_t blen = 0;

    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    frd *pr = ck_pull_start(tok, 0, 0);
    for (int i = 0; i < NF; ++i) {
        for (size_t j = 0; j < sizes[i]; ++j)
            tmp[j] = gen_byte(u.off + j);
        blen += ck_put(body + blen, &u, tmp, sizes[i]);
        ends[i] = blen;
        offs[i] = u.off;
        if (i % 3 == 1)
            blen += frame_put(body + blen, RH_FRAME_HEARTBEAT, "pad", 3);
        if (i == 4) {
            unsigned char a8[8];
            rh_put_u64(a8, 0);
            blen += frame_put(body + blen, RH_FRAME_ACK, a8, 8);
        }
    }
    const uint64_t total = u.off;
    blen += frame_put(body + blen, RH_FRAME_FIN, NULL, 0);
    ck_assert_uint_le(blen, sizeof(body));

    int push = push_open(tok, 0);
    size_t sent = 0, rxl = 0;
    int ci = 0;
    long end = now_ms() + 10000;
    while (sent < blen || rxl < total) {
        ck_assert_msg(now_ms() < end, "stalled: %zu of %zu body bytes sent, target has %zu",
                      sent, blen, rxl);
        struct pollfd pf[2] = { { push, sent < blen ? POLLOUT : 0, 0 }, { t, POLLIN, 0 } };
        poll(pf, 2, 50);
        if (sent < blen) {
            size_t n = cuts[ci % NCUT];
            if (n > blen - sent)
                n = blen - sent;
            ssize_t w = send(push, body + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent += (size_t)w;
                ci++;
            } else {
                ck_assert_msg(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                              "push write: %s", strerror(errno));
            }
        }
        ssize_t r = recv(t, rx + rxl, sizeof(rx) - rxl, MSG_DONTWAIT);
        ck_assert_msg(r != 0, "target saw EOF after %zu bytes", rxl);
        if (r > 0)
            rxl += (size_t)r;
        /* only bytes whose C frame the core can have seen */
        uint64_t vouched = 0;
        for (int k = 0; k < NF && ends[k] <= sent; ++k)
            vouched = offs[k];
        ck_assert_msg(rxl <= vouched, "target has %zu bytes; C frames in the %zu body bytes "
                      "sent vouch for %llu", rxl, sent, (unsigned long long)vouched);
    }
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)total);
    ck_assert_str_eq(reply, want);
    /* the F went through: the target sees its end after exactly the bytes */
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rxl), 0);
    ck_assert_uint_eq(rxl, total);
    for (size_t i = 0; i < rxl; ++i)
        ck_assert_msg(rx[i] == gen_byte(i), "target byte %zu is wrong", i);
    frd_expect_ack(pr, total);
    rh_slot_view v;
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.up_bytes == total, IO_MS));
    shutdown(t, SHUT_WR);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A C frame that does not vouch for the bytes before it fails the session: 422,
 * none of those bytes reach the target, the pull hears R, STAT counts it.
 * _i: 0 wrong CRC, 1 offset beyond the bytes, 2 the check of the frame before
 * (stale), 3 F after a D frame without its C frame. */
START_TEST(test_integrity_push_bad_check)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[256];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    ckup u = { 0, 0 };
    send_all(push, f, ck_put(f, &u, "hello", 5));
    target_expect(t, "hello");
    frd_expect_ack(pr, 5);

    int waiting = push_send(tok, 100, NULL, 0);
    assert_no_reply(waiting, 50, "a push ahead of the accepted bytes");
    ckup before = u;
    size_t n = ck_put_data(f, &u, "world!", 6);
    switch (_i) {
    case 0:
        n += rh_frame_check(f + n, u.off, u.crc ^ 0x00010000u);
        break;
    case 1:
        n += rh_frame_check(f + n, u.off + 1, u.crc);
        break;
    case 2:
        n += rh_frame_check(f + n, before.off, before.crc);
        break;
    default:
        n += frame_put(f + n, RH_FRAME_FIN, NULL, 0);
        break;
    }
    send_all(push, f, n);
    assert_integrity_failed(push, t, tok, 1);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= strlen(RH_REASON_INTEGRITY)
                  && !memcmp(ev.data, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY)),
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    /* a push waiting for its turn hears why too */
    read_reply(waiting, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 422 ");
    /* the session is over, and every request of it hears why */
    assert_refused_422("PUSH %s 11\n", tok);
    assert_refused_422("PULL %s 0 stream\n", tok);
    assert_refused_422("PULL %s 0 batch 5\n", tok);
    assert_refused_422("ACK %s 0\n", tok);
    assert_refused_422("CLOSE %s\n", tok);
    ck_assert_uint_eq(stat_integrity(), 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Bytes of a D frame whose C frame never came are not accepted: the target never
 * gets them, A frames and offsets leave them out, and the client sends them again.
 * _i: 0 the push ends (not resumable), 1 it is cut (resumable), 2 a retry
 * replaces it while it is still open (resumable). */
START_TEST(test_integrity_push_cut)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[256], rx[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, _i ? 65536 : 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckup u = { 0, 0 };
    int p1 = push_open(tok, 0);
    send_all(p1, f, ck_put(f, &u, "abc", 3));
    target_expect(t, "abc");
    frd_expect_ack(pr, 3);
    ckup at3 = u;
    send_all(p1, f, ck_put_data(f, &u, "defgh", 5));
    /* held for its C frame */
    target_quiet(t, 150);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(v.up_bytes, 3);

    int p2;
    if (_i == 0) {
        shutdown(p1, SHUT_WR);
        read_reply(p1, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 3");
        /* what the session has is 3 bytes: a push below is refused, saying so */
        attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
        ASSERT_PREFIX(reply, "ERR 409 ");
        ck_assert_msg(strstr(reply, "accepted 3") != NULL, "reply: %s", reply);
        p2 = push_open(tok, 3);
    } else if (_i == 1) {
        xclose(p1);
        p2 = push_open(tok, 3);
    } else {
        p2 = push_open(tok, 3);
        read_reply(p1, reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 409 ");
    }
    target_quiet(t, 50);
    frd_expect_acks_below(pr, 100, 3);
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(v.up_bytes, 3);

    /* again, with its C frame: once, in order */
    send_all(p2, f, ck_put(f, &at3, "defgh", 5));
    target_expect(t, "defgh");
    frd_expect_ack(pr, 8);
    send_frame(p2, RH_FRAME_FIN, NULL, 0);
    shutdown(p2, SHUT_WR);
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 8");
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
    ck_assert_msg(rl == 0, "the target got %zu bytes more: %.*s", rl, (int)rl, (char *)rx);
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK && v.up_bytes == 8,
                       IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    /* the pull is held: one worker */
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=1 refused=0");
    frd_free(pr);
    if (_i != 1)
        xclose(p1);
    xclose(l);
    core_stop();
}
END_TEST

/* A retried push repeats bytes the session has: C frames among them are not
 * checked (a wrong one is ignored), the first one after them is, from offset 0.
 * _i: 0 that one is right, 1 it is wrong. */
START_TEST(test_integrity_resumed_push)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char src[64], f[512], rx[64];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 65536, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckup u = { 0, 0 };
    int p1 = push_open(tok, 0);
    size_t n = ck_put(f, &u, src, 10);
    n += ck_put(f + n, &u, src + 10, 20);
    send_all(p1, f, n);
    target_expect_mem(t, src, 30);
    frd_expect_ack(pr, 30);

    /* the retry from 5, framed otherwise: [5,18) with a wrong C frame, [18,25)
     * with a right one, both within what the session has; [25,40) across it */
    int p2 = push_send(tok, 5, NULL, 0);
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 30");
    read_reply(p1, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    xclose(p1);
    ckup r = { 5, rh_crc32c(0, src, 5) };
    n = ck_put_data(f, &r, src + 5, 13);
    n += rh_frame_check(f + n, r.off, r.crc ^ 0xffffffffu);
    n += ck_put(f + n, &r, src + 18, 7);
    send_all(p2, f, n);
    target_quiet(t, 100);
    ck_assert(session_alive(tok));
    n = ck_put_data(f, &r, src + 25, 15);
    ck_assert_uint_eq(r.off, 40);
    ck_assert_uint_eq(r.crc, rh_crc32c(0, src, 40));
    n += rh_frame_check(f + n, r.off, _i ? r.crc ^ 1u : r.crc);
    send_all(p2, f, n);
    if (_i) {
        assert_integrity_failed(p2, t, tok, 1);
        rh_frame_event ev;
        frd_expect(pr, RH_FEV_RESET, &ev);
        frd_expect_eof(pr);
    } else {
        target_expect_mem(t, src + 30, 10);
        frd_expect_ack(pr, 40);
        send_frame(p2, RH_FRAME_FIN, NULL, 0);
        shutdown(p2, SHUT_WR);
        read_reply(p2, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 40");
        size_t rl = 0;
        ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
        ck_assert_uint_eq(rl, 0);
        req(reply, sizeof(reply), "STAT\n");
        /* the pull is held: one worker */
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=1 refused=0");
    }
    frd_free(pr);
    xclose(l);
    if (_i)
        core_stop();
    else
        core_stop();
}
END_TEST

/* At most one frame's worth (65536 bytes) may wait for its C frame.
 * _i: 0 exactly 65536 in two D frames, then C: fine; 1 65536 + 1; 2 40000 + 30000. */
START_TEST(test_integrity_unchecked_limit)
{
    static const size_t parts[3][2] = { { 40000, 25536 }, { 65536, 1 }, { 40000, 30000 } };
    static unsigned char src[70000], f[2 * RH_FRAME_MAX + 64];
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    ckup u = { 0, 0 };
    size_t a = parts[_i][0], b = parts[_i][1];
    size_t n = ck_put_data(f, &u, src, a);
    n += ck_put_data(f + n, &u, src + a, b);
    if (_i == 0)
        n += rh_frame_check(f + n, u.off, u.crc);
    send_all(push, f, n);
    if (_i == 0) {
        target_expect_mem(t, src, a + b);
        shutdown(push, SHUT_WR);
        read_reply(push, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 65536");
    } else {
        assert_integrity_failed(push, t, tok, 1);
        ck_assert(log_has("without a check frame"));
    }
    xclose(l);
    if (_i)
        core_stop();
    else
        core_stop();
}
END_TEST

/* Pulls of a checked session: a C frame right after every D frame, with the
 * offset at its end and the CRC32C from offset 0; stream, then batch. */
START_TEST(test_integrity_pull_stream_and_batch)
{
    static unsigned char src[400000];
    char tok[RH_TOKEN_LEN + 1];
    int port;
    batch_ans a;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckd_init(&DN, 1);
    target_send(t, src, 1);
    ckd_read(pr, &DN, 1);
    ck_assert_int_eq(DN.nchecks, 1);
    target_send(t, src + 1, 150000);
    ckd_read(pr, &DN, 150001);
    target_send(t, src + 150001, 3);
    ckd_read(pr, &DN, 150004);
    ck_assert_int_eq(DN.nchecks, DN.ndata);
    ck_assert_int_ge(DN.ndata, 5);   /* 1, at least 3 for 150000, 3 */
    ck_assert_mem_eq(DN.got, src, 150004);
    xclose(pr->fd);
    frd_free(pr);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));

    /* batch answers go on from there: the C frames still run from offset 0 */
    target_send(t, src + 150004, 200000);
    int before = DN.ndata;
    ckd_batch_until(tok, &DN, 350004);
    ck_assert_int_ge(DN.ndata - before, 4);
    ck_assert_int_eq(DN.nchecks, DN.ndata);
    ck_assert_mem_eq(DN.got, src, 350004);
    shutdown(t, SHUT_WR);
    batch_pull(tok, DN.off, 5, IO_MS, &a);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.nck, 0);
    ck_assert_uint_eq(a.len, 16);
    xclose(l);
    core_stop();
}
END_TEST

/* A resumable pull that goes back (a new pull with an older ack takes over, an
 * ACK away from any frame end, batch after stream): the C frames after it still
 * carry the CRC from offset 0. */
START_TEST(test_integrity_pull_rewind)
{
    static unsigned char src[250000];
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 1 << 20, tok);
    int t = tcp_accept(l, IO_MS);
    ckd_init(&DN, 1);
    target_send(t, src, 200000);
    frd *p1 = ck_pull_start(tok, 0, 0);
    ckd_read(p1, &DN, 150000);
    ck_assert_mem_eq(DN.got, src, DN.off);

    /* p1 is still attached: p2 with an ack inside a frame takes over */
    frd *p2 = ck_pull_start(tok, 70001, 0);
    xclose(p1->fd);
    frd_free(p1);
    ckd_rewind(&DN, 70001);
    int checks = DN.nchecks;
    ckd_read(p2, &DN, 200000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 200000);

    /* acknowledged inside a frame, then a batch pull from there */
    req(reply, sizeof(reply), "ACK %s 100003\n", tok);
    ck_assert_str_eq(reply, "OK 100003");
    target_send(t, src + 200000, 50000);
    ckd_rewind(&DN, 100003);
    checks = DN.nchecks;
    ckd_batch_until(tok, &DN, 250000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 250000);
    xclose(p2->fd);
    frd_free(p2);
    /* below the acknowledged offset nothing is kept */
    attach_refused(reply, sizeof(reply), "PULL", tok, 100002, " stream");
    ASSERT_PREFIX(reply, "ERR 416 ");

    /* once more by stream, from the end of a frame the batch answers sent */
    uint64_t back = 0;
    for (int i = 0; i < DN.nends; ++i)
        if (DN.ends[i] > 100003 && DN.ends[i] < 250000)
            back = DN.ends[i];
    ck_assert_uint_gt(back, 100003);
    frd *p3 = ck_pull_start(tok, back, 0);
    ckd_rewind(&DN, back);
    checks = DN.nchecks;
    ckd_read(p3, &DN, 250000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 250000);
    shutdown(t, SHUT_WR);
    rh_frame_event ev;
    frd_expect(p3, RH_FEV_FIN, &ev);
    frd_expect_eof(p3);
    frd_free(p3);
    xclose(l);
    core_stop();
}
END_TEST

/* A client whose own check of down bytes failed closes the session saying so:
 * the core resets it, logs the failure at error level and counts it. */
START_TEST(test_integrity_close_by_client)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], line[160];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    req(reply, sizeof(reply), "CLOSE %s integrity\n", tok);
    ck_assert_str_eq(reply, "OK");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= strlen(RH_REASON_INTEGRITY)
                  && !memcmp(ev.data, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY)),
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert_uint_eq(stat_integrity(), 1);
    snprintf(line, sizeof(line), "<%d> session %.16s: " RH_REASON_INTEGRITY, RH_LOG_ERR, tok);
    ck_assert_msg(log_has(line), "no \"%s\" in the log:\n%s", line, CF.log);
    /* a plain close counts nothing */
    char tok2[RH_TOKEN_LEN + 1];
    open_checked(port, 65536, 30, 0, tok2);
    req(reply, sizeof(reply), "CLOSE %s\n", tok2);
    ck_assert_str_eq(reply, "OK");
    ck_assert_uint_eq(stat_integrity(), 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* RELAY_HTTPS_TEST_FLIP=down:N flips a down byte after its CRC was taken: the
 * C frame covering it does not match what arrives. A core started without the
 * variable flips nothing. */
START_TEST(test_integrity_flip_down)
{
    static unsigned char src[200000];
    const uint64_t at = 100000;
    char tok[RH_TOKEN_LEN + 1];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    for (int run = 0; run < 2; ++run) {
        if (run == 0)
            setenv("RELAY_HTTPS_TEST_FLIP", "down:100000", 1);
        core_start(8, 20);
        unsetenv("RELAY_HTTPS_TEST_FLIP");
        int l = tcp_listen(&port, 0, 8);
        open_checked(port, 65536, 30, 0, tok);
        int t = tcp_accept(l, IO_MS);
        frd *pr = ck_pull_start(tok, 0, 0);
        ckd_init(&DN, run);
        target_send(t, src, sizeof(src));
        ckd_read(pr, &DN, sizeof(src));
        ck_assert_int_eq(DN.nchecks, DN.ndata);
        if (run == 0) {
            ck_assert_msg(DN.got[at] == (src[at] ^ 1), "byte %llu was not flipped",
                          (unsigned long long)at);
            DN.got[at] ^= 1;
            ck_assert_mem_eq(DN.got, src, sizeof(src));   /* that byte alone */
            ck_assert_int_ge(DN.nbad, 1);
            ck_assert_msg(DN.last_ok <= at && DN.bad_off > at,
                          "the first C frame that does not match is at %llu, the last "
                          "good one at %llu (flipped %llu)", (unsigned long long)DN.bad_off,
                          (unsigned long long)DN.last_ok, (unsigned long long)at);
            /* the C frame carried the CRC of the bytes as they were */
            ck_assert_uint_eq(DN.bad_crc, rh_crc32c(0, src, (size_t)DN.bad_off));
        } else {
            ck_assert_int_eq(DN.nbad, 0);
            ck_assert_mem_eq(DN.got, src, sizeof(src));
        }
        frd_free(pr);
        xclose(t);
        xclose(l);
        core_stop();
        free(CF.reg);
        CF.reg = NULL;
    }
}
END_TEST

/* RELAY_HTTPS_TEST_FLIP=up:N flips an up byte before its check: the push gets
 * 422, the frame before it was delivered, none after. A core started without
 * the variable flips nothing. */
START_TEST(test_integrity_flip_up)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[128];
    int port;
    for (int run = 0; run < 2; ++run) {
        if (run == 0)
            setenv("RELAY_HTTPS_TEST_FLIP", "up:12", 1);
        core_start(8, 20);
        unsetenv("RELAY_HTTPS_TEST_FLIP");
        int l = tcp_listen(&port, 0, 8);
        open_checked(port, 65536, 30, 0, tok);
        int t = tcp_accept(l, IO_MS);
        int push = push_open(tok, 0);
        ckup u = { 0, 0 };
        send_all(push, f, ck_put(f, &u, "0123456789", 10));
        target_expect(t, "0123456789");
        send_all(push, f, ck_put(f, &u, "abcdef", 6));
        if (run == 0) {
            assert_integrity_failed(push, t, tok, 1);
        } else {
            target_expect(t, "abcdef");
            shutdown(push, SHUT_WR);
            read_reply(push, reply, sizeof(reply), IO_MS);
            ck_assert_str_eq(reply, "DONE 16");
            req(reply, sizeof(reply), "STAT\n");
            ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=0 refused=0");
        }
        xclose(push);
        xclose(t);
        xclose(l);
        if (run == 0)
            core_stop();
        else
            core_stop();
        free(CF.reg);
        CF.reg = NULL;
    }
}
END_TEST

/* ---- the push input path: a model ------------------------------------------------ */

/* rh_core_int.h: what the core counts of its push input path */
typedef struct rh_core_push_count {
    uint64_t big_reads, read_on;
    size_t left_max;
} rh_core_push_count;
extern rh_core_push_count rh_core_push_counts;

#define MODEL_PUSH_IN (RH_FRAME_MAX + RH_FRAME_HDR)   /* a push's own buffer (PUSH_IN_MAX) */
#define MODEL_ENDS 16

static uint32_t model_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* The client's side of the model: frames made as they are needed (D frames of
 * 1 to 65536 bytes, each with its C frame when checked, now and then an H
 * frame, an F at the end), how much of them was written, and the up offset
 * that the C frames written whole vouch for. */
typedef struct model_up {
    int checked;
    uint32_t rnd;
    ckup u;
    unsigned char buf[MODEL_ENDS * (RH_FRAME_HDR + RH_FRAME_MAX + 32)];
    size_t off, len;          /* buf[off, len): made, not yet written */
    uint64_t made_at;         /* body bytes made (written and in buf) */
    uint64_t sent;            /* body bytes written */
    uint64_t ends[MODEL_ENDS], offs[MODEL_ENDS];   /* C frames not yet written whole */
    int nends;
    uint64_t vouched;         /* the up offset the C frames written whole vouch for */
    uint64_t made, total;     /* up bytes put into D frames, and in all */
    int fin;                  /* the F frame is made */
} model_up;

/* More frames into m->buf, behind the bytes not yet written. */
static void model_make(model_up *m)
{
    static unsigned char d[RH_FRAME_MAX];
    memmove(m->buf, m->buf + m->off, m->len - m->off);
    m->len -= m->off;
    m->off = 0;
    while (!m->fin && m->nends < MODEL_ENDS
           && m->len + RH_FRAME_HDR + RH_FRAME_MAX + 32 <= sizeof(m->buf)) {
        uint32_t r = model_rand(&m->rnd);
        size_t n = r % 4 ? RH_FRAME_MAX - r % 3 : 1 + r % 5000, before = m->len;
        if (m->made == m->total) {
            m->len += frame_put(m->buf + m->len, RH_FRAME_FIN, NULL, 0);
            m->fin = 1;
        } else {
            if (n > m->total - m->made)
                n = (size_t)(m->total - m->made);
            for (size_t j = 0; j < n; ++j)
                d[j] = gen_byte(m->made + j);
            m->made += n;
            m->len += m->checked ? ck_put(m->buf + m->len, &m->u, d, n)
                                 : frame_put(m->buf + m->len, RH_FRAME_DATA, d, n);
        }
        m->made_at += m->len - before;
        if (m->checked && !m->fin) {
            m->ends[m->nends] = m->made_at;
            m->offs[m->nends++] = m->made;
        }
        if (r % 7 == 0 && !m->fin) {
            m->len += frame_put(m->buf + m->len, RH_FRAME_HEARTBEAT, NULL, 0);
            m->made_at += RH_FRAME_HDR;
        }
    }
}

/* One write of 1 byte to about 400 KiB, as far as the socket takes it;
 * returns the bytes written. */
static size_t model_write(model_up *m, int fd)
{
    uint32_t r = model_rand(&m->rnd);
    size_t want = r % 3 == 0 ? 1 + r % 300 : r % 3 == 1 ? 1 + r % 70000 : 1 + r % 400000;
    size_t done = 0;
    while (done < want) {
        if (m->off == m->len)
            model_make(m);
        if (m->off == m->len)
            break;
        size_t n = m->len - m->off < want - done ? m->len - m->off : want - done;
        ssize_t w = send(fd, m->buf + m->off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "push write: %s",
                          strerror(errno));
            break;
        }
        m->off += (size_t)w;
        m->sent += (uint64_t)w;
        done += (size_t)w;
    }
    while (m->nends && m->ends[0] <= m->sent) {
        m->vouched = m->offs[0];
        --m->nends;
        memmove(m->ends, m->ends + 1, (size_t)m->nends * sizeof(m->ends[0]));
        memmove(m->offs, m->offs + 1, (size_t)m->nends * sizeof(m->offs[0]));
    }
    return done;
}

/* The target's side: a read of random size; every byte must be the next one,
 * and (checked) vouched for by a C frame already written. */
static void model_read(model_up *m, int t, uint64_t *rxl, int all)
{
    static unsigned char rx[1 << 18];
    uint32_t r = model_rand(&m->rnd);
    size_t want = all ? sizeof(rx) : 1 + r % sizeof(rx);
    ssize_t n = recv(t, rx, want, MSG_DONTWAIT);
    ck_assert_msg(n != 0 || (*rxl == m->total && m->fin && m->off == m->len),
                  "the target saw its end after %llu bytes", (unsigned long long)*rxl);
    if (n <= 0)
        return;
    ssize_t i = 0;
    while (i < n && rx[i] == gen_byte(*rxl + (uint64_t)i))
        ++i;
    ck_assert_msg(i == n, "target byte %llu is wrong", (unsigned long long)(*rxl + (uint64_t)i));
    *rxl += (uint64_t)n;
    ck_assert_msg(*rxl <= (m->checked ? m->vouched : m->made), "the target has %llu bytes, "
                  "only %llu were vouched for", (unsigned long long)*rxl,
                  (unsigned long long)(m->checked ? m->vouched : m->made));
}

/* The push input path (rh_core_up.c, push_recv) against a model: frames of
 * random sizes written in writes of random sizes (1 byte to 400 KiB), with
 * pauses, while the target reads in random sizes and, four times, not at all
 * until the push backs up (the ring fills, reads stop at it and leave a tail
 * in the push's own buffer). The target must get every byte once, in order,
 * and (checked) none before its C frame; the core must have read more than a
 * frame at once where the ring has the room, read on without an epoll round,
 * and never left more in a push's buffer than it holds. _i: ring size and
 * mode (even: checked). */
START_TEST(test_push_input_model)
{
    static const unsigned bufsizes[] = { 65536, 4096, 262144, 1048576, 1048576, 262144 };
    static model_up m;
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], want[64];
    int port, stalls = 0, sb = 1 << 20;
    uint64_t rxl = 0;

    memset(&m, 0, sizeof(m));
    m.checked = _i % 2 == 0;
    m.rnd = 0x9e3779b9u * (uint32_t)(_i + 1);
    m.total = 16u << 20;
    core_start(8, 20);
    int l = tcp_listen(&port, 65536, 8);
    if (m.checked)
        open_checked(port, bufsizes[_i], 30, 0, tok);
    else
        open_session(port, bufsizes[_i], 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    setsockopt(push, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
    long end = now_ms() + 30000, pause_until = 0;
    int stalled = 0;
    while (rxl < m.total || m.off < m.len || !m.fin) {
        ck_assert_msg(now_ms() < end, "stalled: %llu body bytes written, the target has %llu",
                      (unsigned long long)m.sent, (unsigned long long)rxl);
        int writing = now_ms() >= pause_until && (m.off < m.len || !m.fin);
        struct pollfd pf[2] = { { push, writing ? POLLOUT : 0, 0 },
                                { t, stalled ? 0 : POLLIN, 0 } };
        poll(pf, 2, 5);
        size_t w = writing ? model_write(&m, push) : 0;
        if (stalled && ((writing && !w) || (m.fin && m.off == m.len)))
            stalled = 0;   /* backed up to the push: the target reads again, all it can */
        if (!stalled)
            model_read(&m, t, &rxl, !w);
        uint32_t r = model_rand(&m.rnd);
        if (!stalled && stalls < 4 && m.made >= (uint64_t)(stalls + 1) << 21) {
            stalled = 1;   /* at every 2 MiB made, the first four */
            ++stalls;
        } else if (r % 64 == 1) {
            pause_until = now_ms() + 1 + (long)(r >> 8) % 10;   /* the client idles */
        }
    }
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)m.total);
    ck_assert_str_eq(reply, want);
    size_t more = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, (unsigned char *)want, sizeof(want), &more), 0);
    ck_assert_uint_eq(more, 0);
    ck_assert_int_eq(stalls, 4);
    xclose(push);
    xclose(t);
    xclose(l);
    core_stop();
    rh_core_push_count pc = rh_core_push_counts;
    ck_assert_msg(pc.left_max > 0 && pc.left_max <= MODEL_PUSH_IN, "left in a push's buffer: "
                  "%zu bytes at most", pc.left_max);
    if (bufsizes[_i] >= 2 * MODEL_PUSH_IN || m.checked)
        ck_assert_msg(pc.big_reads > 0, "no read of more than a frame (ring %u)", bufsizes[_i]);
    ck_assert_msg(pc.read_on > 0, "no read on without an epoll round");
}
END_TEST

void core_check_tests(const core_tcases *t)
{
    tcase_add_test(t->integrity, test_integrity_push_roundtrip);
    tcase_add_loop_test(t->integrity, test_integrity_push_bad_check, 0, 4);
    tcase_add_loop_test(t->integrity, test_integrity_push_cut, 0, 3);
    tcase_add_loop_test(t->integrity, test_integrity_resumed_push, 0, 2);
    tcase_add_loop_test(t->integrity, test_integrity_unchecked_limit, 0, 3);
    tcase_add_test(t->integrity, test_integrity_pull_stream_and_batch);
    tcase_add_test(t->integrity, test_integrity_pull_rewind);
    tcase_add_test(t->integrity, test_integrity_close_by_client);
    tcase_add_test(t->integrity, test_integrity_flip_down);
    tcase_add_test(t->integrity, test_integrity_flip_up);
    tcase_add_loop_test(t->integrity, test_push_input_model, 0, 6);
}
