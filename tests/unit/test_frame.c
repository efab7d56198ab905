/* Frame codec: header encoding, the incremental parser under every slicing of
 * its input, and the protocol errors it must report. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests.h"
#include "rh_frame.h"

/* ck_assert_* records a checkpoint per call (a pipe write in fork mode); the
 * hot loops below check with this instead and only report failures. */
#define REQUIRE(c, ...) do { if (!(c)) ck_abort_msg(__VA_ARGS__); } while (0)

/* ---- helpers -------------------------------------------------------------- */

/* One event as the tests compare them: consecutive DATA pieces of one frame are
 * merged (a D payload may arrive in any number of pieces). */
typedef struct ev_rec {
    rh_frame_event_type type;
    unsigned char data[4096];
    size_t len;
    uint64_t offset;
} ev_rec;

typedef struct ev_log {
    ev_rec ev[32];
    int n;
    int data_open;        /* the last record is a DATA frame still being filled */
    int errors;
    int pieces;           /* number of DATA events seen */
} ev_log;

static void log_reset(ev_log *lg)
{
    lg->n = 0;
    lg->data_open = 0;
    lg->errors = 0;
    lg->pieces = 0;
}

static size_t append(unsigned char *dst, size_t at, const void *src, size_t len)
{
    memcpy(dst + at, src, len);
    return at + len;
}

static size_t put_frame(unsigned char *dst, size_t at, int type, const void *payload,
                        size_t len)
{
    rh_frame_hdr(dst + at, type, len);
    at += RH_FRAME_HDR;
    if (len)
        at = append(dst, at, payload, len);
    return at;
}

/* Feeds one chunk the way the API asks: call again with the rest until the
 * parser returns 0 with RH_FEV_NONE. Merges DATA pieces of the same frame. */
static void feed(rh_frame_parser *p, ev_log *lg, const unsigned char *buf, size_t len,
                 const char *allowed)
{
    size_t off = 0;
    if (p->error) {
        /* sticky: after an error the parser takes nothing and says so again */
        rh_frame_event ev;
        REQUIRE(rh_frame_parse(p, buf, len, allowed, &ev) == 0, "parsed after an error");
        REQUIRE(ev.type == RH_FEV_ERROR, "error not repeated");
        return;
    }
    for (int guard = 0; guard < 1000000; ++guard) {
        rh_frame_event ev;
        size_t used = rh_frame_parse(p, buf + off, len - off, allowed, &ev);
        REQUIRE(used <= len - off, "used <= len - off");
        off += used;
        if (ev.type == RH_FEV_NONE) {
            /* NONE means "need more input": everything must have been taken */
            REQUIRE(off == len, "NONE before the input was used up");
            if (used == 0)
                return;
            continue;
        }
        if (ev.type == RH_FEV_DATA) {
            lg->pieces++;
            REQUIRE(ev.len > 0, "ev.len > 0");
            /* zero copy: the piece points into the caller's buffer */
            REQUIRE(ev.data >= buf && ev.data + ev.len <= buf + len, "ev.data >= buf && ev.data + ev.len <= buf + len");
            ev_rec *r;
            if (lg->data_open) {
                r = &lg->ev[lg->n - 1];   /* the next piece of the same frame */
            } else {
                REQUIRE(lg->n < 32, "lg->n < 32");
                r = &lg->ev[lg->n++];
                r->type = RH_FEV_DATA;
                r->len = 0;
            }
            REQUIRE(r->len + ev.len <= sizeof(r->data), "r->len + ev.len <= sizeof(r->data)");
            r->len = append(r->data, r->len, ev.data, ev.len);
            lg->data_open = p->type != 0;   /* more of this frame to come */
            continue;
        }
        REQUIRE(!lg->data_open, "a data frame was interrupted by event %d", ev.type);
        REQUIRE(lg->n < 32, "lg->n < 32");
        ev_rec *r = &lg->ev[lg->n++];
        r->type = ev.type;
        r->len = 0;
        r->offset = ev.offset;
        if (ev.type == RH_FEV_RESET && ev.len)
            r->len = append(r->data, 0, ev.data, ev.len);
        if (ev.type == RH_FEV_ERROR) {
            lg->errors++;
            return;
        }
    }
    ck_abort_msg("parser did not make progress");
}

/* ---- the reference stream ------------------------------------------------- */

#define BIG_D 1500
static unsigned char stream[4096];
static size_t stream_len;
static unsigned char d1[] = "hello, relay";
static unsigned char big[BIG_D];
static unsigned char pad[300];
static const char reason[] = "client went away";
static const uint64_t ack_off = 0x0123456789abcdefULL;

static void build_stream(void)
{
    unsigned char a[8];
    for (size_t i = 0; i < sizeof(big); ++i)
        big[i] = (unsigned char)(i * 7 + 3);
    memset(pad, 0xee, sizeof(pad));
    rh_put_u64(a, ack_off);
    size_t at = 0;
    at = put_frame(stream, at, RH_FRAME_DATA, d1, sizeof(d1) - 1);
    at = put_frame(stream, at, RH_FRAME_HEARTBEAT, pad, sizeof(pad));
    at = put_frame(stream, at, RH_FRAME_ACK, a, 8);
    at = put_frame(stream, at, RH_FRAME_DATA, big, sizeof(big));
    at = put_frame(stream, at, RH_FRAME_HEARTBEAT, NULL, 0);
    at = put_frame(stream, at, RH_FRAME_DATA, "x", 1);
    at = put_frame(stream, at, RH_FRAME_RESET, reason, strlen(reason));
    at = put_frame(stream, at, RH_FRAME_RESET, NULL, 0);
    at = put_frame(stream, at, RH_FRAME_FIN, NULL, 0);
    at = put_frame(stream, at, RH_FRAME_END, NULL, 0);
    stream_len = at;
}

static void check_stream_events(const ev_log *lg, const char *how)
{
    REQUIRE(lg->errors == 0, "%s: unexpected error", how);
    REQUIRE(lg->n == 10, "%s: %d events instead of 10", how, lg->n);
    REQUIRE(lg->ev[0].type == RH_FEV_DATA, "%s: lg->ev[0].type != RH_FEV_DATA", how);
    REQUIRE(lg->ev[0].len == sizeof(d1) - 1, "%s: lg->ev[0].len != sizeof(d1) - 1", how);
    REQUIRE(memcmp(lg->ev[0].data, d1, sizeof(d1) - 1) == 0, "%s: lg->ev[0].data differs", how);
    REQUIRE(lg->ev[1].type == RH_FEV_HEARTBEAT, "%s: lg->ev[1].type != RH_FEV_HEARTBEAT", how);
    REQUIRE(lg->ev[2].type == RH_FEV_ACK, "%s: lg->ev[2].type != RH_FEV_ACK", how);
    REQUIRE(lg->ev[2].offset == ack_off, "%s: ack offset %llx", how,
                  (unsigned long long)lg->ev[2].offset);
    REQUIRE(lg->ev[3].type == RH_FEV_DATA, "%s: lg->ev[3].type != RH_FEV_DATA", how);
    REQUIRE(lg->ev[3].len == sizeof(big), "%s: lg->ev[3].len != sizeof(big)", how);
    REQUIRE(memcmp(lg->ev[3].data, big, sizeof(big)) == 0, "%s: big D differs", how);
    REQUIRE(lg->ev[4].type == RH_FEV_HEARTBEAT, "%s: lg->ev[4].type != RH_FEV_HEARTBEAT", how);
    REQUIRE(lg->ev[5].type == RH_FEV_DATA, "%s: lg->ev[5].type != RH_FEV_DATA", how);
    REQUIRE(lg->ev[5].len == 1, "%s: lg->ev[5].len != 1", how);
    REQUIRE(lg->ev[5].data[0] == 'x', "%s: lg->ev[5].data[0] != 'x'", how);
    REQUIRE(lg->ev[6].type == RH_FEV_RESET, "%s: lg->ev[6].type != RH_FEV_RESET", how);
    REQUIRE(lg->ev[6].len == strlen(reason), "%s: lg->ev[6].len != strlen(reason)", how);
    REQUIRE(memcmp(lg->ev[6].data, reason, strlen(reason)) == 0, "%s: lg->ev[6].data differs", how);
    REQUIRE(lg->ev[7].type == RH_FEV_RESET, "%s: lg->ev[7].type != RH_FEV_RESET", how);
    REQUIRE(lg->ev[7].len == 0, "%s: lg->ev[7].len != 0", how);
    REQUIRE(lg->ev[8].type == RH_FEV_FIN, "%s: lg->ev[8].type != RH_FEV_FIN", how);
    REQUIRE(lg->ev[9].type == RH_FEV_END, "%s: lg->ev[9].type != RH_FEV_END", how);
}

static ev_log *new_log(void)
{
    ev_log *lg = calloc(1, sizeof(*lg));
    ck_assert_ptr_nonnull(lg);
    return lg;
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(test_header_encoding)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, RH_FRAME_DATA, 0x123456);
    ck_assert_int_eq(h[0], 'D');
    ck_assert_int_eq(h[1], 0x12);
    ck_assert_int_eq(h[2], 0x34);
    ck_assert_int_eq(h[3], 0x56);
    rh_frame_hdr(h, RH_FRAME_HEARTBEAT, RH_FRAME_MAX);
    ck_assert_int_eq(h[0], 'H');
    ck_assert_int_eq(h[1], 0x01);
    ck_assert_int_eq(h[2], 0x00);
    ck_assert_int_eq(h[3], 0x00);
    rh_frame_hdr(h, RH_FRAME_FIN, 0);
    ck_assert_int_eq(h[0], 'F');
    ck_assert_int_eq(h[1] | h[2] | h[3], 0);
    rh_frame_hdr(h, RH_FRAME_ACK, 8);
    ck_assert_int_eq(h[0], 'A');
    ck_assert_int_eq(h[3], 8);
    /* the protocol's type bytes */
    ck_assert_int_eq(RH_FRAME_DATA, 0x44);
    ck_assert_int_eq(RH_FRAME_HEARTBEAT, 0x48);
    ck_assert_int_eq(RH_FRAME_FIN, 0x46);
    ck_assert_int_eq(RH_FRAME_RESET, 0x52);
    ck_assert_int_eq(RH_FRAME_ACK, 0x41);
    ck_assert_int_eq(RH_FRAME_END, 0x45);
}
END_TEST

START_TEST(test_u64_roundtrip)
{
    unsigned char b[8];
    rh_put_u64(b, 0x0102030405060708ULL);
    for (int i = 0; i < 8; ++i)
        ck_assert_int_eq(b[i], i + 1);
    ck_assert(rh_get_u64(b) == 0x0102030405060708ULL);
    const uint64_t vals[] = { 0, 1, 255, 256, 0xffffffffULL, 0x100000000ULL, UINT64_MAX };
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); ++i) {
        rh_put_u64(b, vals[i]);
        ck_assert(rh_get_u64(b) == vals[i]);
    }
}
END_TEST

START_TEST(test_parse_whole_stream)
{
    build_stream();
    rh_frame_parser p;
    ev_log *lg = new_log();
    rh_frame_parser_init(&p);
    feed(&p, lg, stream, stream_len, "DHFRAE");
    check_stream_events(lg, "whole");
    ck_assert_ptr_null(p.error);
    free(lg);
}
END_TEST

/* Every single split point of the stream. */
START_TEST(test_parse_every_split)
{
    build_stream();
    ev_log *lg = new_log();
    for (size_t i = 0; i <= stream_len; ++i) {
        rh_frame_parser p;
        char how[64];
        log_reset(lg);
        rh_frame_parser_init(&p);
        feed(&p, lg, stream, i, "DHFRAE");
        feed(&p, lg, stream + i, stream_len - i, "DHFRAE");
        snprintf(how, sizeof(how), "split at %zu", i);
        check_stream_events(lg, how);
    }
    free(lg);
}
END_TEST

/* Every pair of split points within the frames around the small ones (the whole
 * stream would be ~1.8 M runs; the big D frame is covered by single splits). */
START_TEST(test_parse_every_double_split)
{
    build_stream();
    ev_log *lg = new_log();
    /* prefix: D(12) H(300) A(8) -> header bytes up to the big D's header */
    size_t lim = (RH_FRAME_HDR + 12) + (RH_FRAME_HDR + 300) + (RH_FRAME_HDR + 8)
                 + RH_FRAME_HDR + 20;
    for (size_t i = 0; i <= lim; ++i) {
        for (size_t j = i; j <= lim; j += (j < 40 || j + 40 > lim ? 1 : 7)) {
            rh_frame_parser p;
            log_reset(lg);
            rh_frame_parser_init(&p);
            feed(&p, lg, stream, i, "DHFRAE");
            feed(&p, lg, stream + i, j - i, "DHFRAE");
            feed(&p, lg, stream + j, stream_len - j, "DHFRAE");
            char how[64];
            snprintf(how, sizeof(how), "splits at %zu,%zu", i, j);
            check_stream_events(lg, how);
        }
    }
    /* and every pair around the tail: D(1) R(reason) R() F E */
    size_t tail = stream_len - ((RH_FRAME_HDR + 1) + (RH_FRAME_HDR + strlen(reason))
                                + 4 * RH_FRAME_HDR) - 10;
    for (size_t i = tail; i <= stream_len; ++i) {
        for (size_t j = i; j <= stream_len; ++j) {
            rh_frame_parser p;
            log_reset(lg);
            rh_frame_parser_init(&p);
            feed(&p, lg, stream, i, "DHFRAE");
            feed(&p, lg, stream + i, j - i, "DHFRAE");
            feed(&p, lg, stream + j, stream_len - j, "DHFRAE");
            char how[64];
            snprintf(how, sizeof(how), "splits at %zu,%zu", i, j);
            check_stream_events(lg, how);
        }
    }
    free(lg);
}
END_TEST

START_TEST(test_parse_byte_by_byte)
{
    build_stream();
    ev_log *lg = new_log();
    rh_frame_parser p;
    rh_frame_parser_init(&p);
    for (size_t i = 0; i < stream_len; ++i)
        feed(&p, lg, stream + i, 1, "DHFRAE");
    check_stream_events(lg, "byte by byte");
    /* each data byte came as its own piece */
    ck_assert_int_eq(lg->pieces, (int)(sizeof(d1) - 1 + sizeof(big) + 1));
    free(lg);
}
END_TEST

/* A D frame's payload is handed out as it arrives, in pieces no larger than the
 * input, contiguous and pointing into the input. */
START_TEST(test_data_in_pieces)
{
    unsigned char buf[RH_FRAME_HDR + 1000];
    unsigned char payload[1000];
    for (int i = 0; i < 1000; ++i)
        payload[i] = (unsigned char)(i ^ 0x5a);
    put_frame(buf, 0, RH_FRAME_DATA, payload, sizeof(payload));

    rh_frame_parser p;
    rh_frame_parser_init(&p);
    rh_frame_event ev;
    /* header alone: no event yet */
    ck_assert_uint_eq(rh_frame_parse(&p, buf, RH_FRAME_HDR, "D", &ev), RH_FRAME_HDR);
    ck_assert_int_eq(ev.type, RH_FEV_NONE);
    size_t got = 0;
    unsigned char out[1000];
    size_t off = RH_FRAME_HDR;
    int pieces = 0;
    while (off < sizeof(buf)) {
        size_t chunk = sizeof(buf) - off < 7 ? sizeof(buf) - off : 7;
        size_t used = rh_frame_parse(&p, buf + off, chunk, "D", &ev);
        ck_assert_int_eq(ev.type, RH_FEV_DATA);
        ck_assert_uint_eq(used, chunk);
        ck_assert_uint_eq(ev.len, chunk);
        ck_assert_ptr_eq(ev.data, buf + off);
        memcpy(out + got, ev.data, ev.len);
        got += ev.len;
        off += used;
        pieces++;
    }
    ck_assert_uint_eq(got, 1000);
    ck_assert_int_eq(pieces, (1000 + 6) / 7);
    ck_assert_mem_eq(out, payload, 1000);
    /* the frame is over: the parser waits for a new header */
    ck_assert_int_eq(p.type, 0);
    ck_assert_uint_eq(rh_frame_parse(&p, buf, 0, "D", &ev), 0);
    ck_assert_int_eq(ev.type, RH_FEV_NONE);
}
END_TEST

/* A D payload is never merged with the next frame: one call stops at the frame end. */
START_TEST(test_data_stops_at_frame_end)
{
    unsigned char buf[64];
    size_t at = put_frame(buf, 0, RH_FRAME_DATA, "abc", 3);
    at = put_frame(buf, at, RH_FRAME_DATA, "defg", 4);
    rh_frame_parser p;
    rh_frame_event ev;
    rh_frame_parser_init(&p);
    size_t used = rh_frame_parse(&p, buf, at, "D", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_DATA);
    ck_assert_uint_eq(ev.len, 3);
    ck_assert_uint_eq(used, 7);
    used += rh_frame_parse(&p, buf + used, at - used, "D", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_DATA);
    ck_assert_uint_eq(ev.len, 4);
    ck_assert_mem_eq(ev.data, "defg", 4);
    ck_assert_uint_eq(used, at);
}
END_TEST

START_TEST(test_largest_frames_accepted)
{
    size_t n = RH_FRAME_HDR + RH_FRAME_MAX;
    unsigned char *buf = malloc(2 * n);
    unsigned char *payload = malloc(RH_FRAME_MAX);
    ck_assert_ptr_nonnull(buf);
    ck_assert_ptr_nonnull(payload);
    for (size_t i = 0; i < RH_FRAME_MAX; ++i)
        payload[i] = (unsigned char)(i * 31);
    size_t at = put_frame(buf, 0, RH_FRAME_DATA, payload, RH_FRAME_MAX);
    at = put_frame(buf, at, RH_FRAME_HEARTBEAT, payload, RH_FRAME_MAX);
    rh_frame_parser p;
    rh_frame_event ev;
    rh_frame_parser_init(&p);
    size_t used = rh_frame_parse(&p, buf, at, "DH", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_DATA);
    ck_assert_uint_eq(ev.len, RH_FRAME_MAX);
    ck_assert(memcmp(ev.data, payload, RH_FRAME_MAX) == 0);
    used += rh_frame_parse(&p, buf + used, at - used, "DH", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_HEARTBEAT);
    ck_assert_uint_eq(used, at);
    ck_assert_ptr_null(p.error);
    free(buf);
    free(payload);
}
END_TEST

/* A long R reason is truncated to what the parser keeps, never overflowing it. */
START_TEST(test_reset_reason_truncated)
{
    unsigned char buf[RH_FRAME_HDR + 1000 + RH_FRAME_HDR];
    unsigned char why[1000];
    for (int i = 0; i < 1000; ++i)
        why[i] = (unsigned char)('a' + i % 26);
    size_t at = put_frame(buf, 0, RH_FRAME_RESET, why, sizeof(why));
    at = put_frame(buf, at, RH_FRAME_FIN, NULL, 0);
    for (size_t split = 0; split <= at; split += 37) {
        rh_frame_parser p;
        ev_log *lg = new_log();
        rh_frame_parser_init(&p);
        feed(&p, lg, buf, split, "RF");
        feed(&p, lg, buf + split, at - split, "RF");
        ck_assert_int_eq(lg->n, 2);
        ck_assert_int_eq(lg->ev[0].type, RH_FEV_RESET);
        ck_assert_uint_gt(lg->ev[0].len, 0);
        ck_assert_uint_le(lg->ev[0].len, sizeof(p.small));
        ck_assert_mem_eq(lg->ev[0].data, why, lg->ev[0].len);
        ck_assert_int_eq(lg->ev[1].type, RH_FEV_FIN);
        free(lg);
    }
}
END_TEST

/* Feeds hdr (plus optional bytes) and expects exactly one error event. */
static void expect_error(const unsigned char *buf, size_t len, const char *allowed,
                         const char *what)
{
    for (size_t split = 0; split <= len; ++split) {
        rh_frame_parser p;
        ev_log *lg = new_log();
        rh_frame_parser_init(&p);
        feed(&p, lg, buf, split, allowed);
        feed(&p, lg, buf + split, len - split, allowed);
        ck_assert_msg(lg->errors == 1, "%s (split %zu): no error reported", what, split);
        ck_assert_msg(lg->ev[lg->n - 1].type == RH_FEV_ERROR, "%s: last event", what);
        ck_assert_msg(p.error != NULL && p.error[0], "%s: no reason", what);
        free(lg);
    }
}

START_TEST(test_error_unknown_type)
{
    unsigned char b[8];
    rh_frame_hdr(b, 'Z', 1);
    b[4] = 0;
    expect_error(b, 5, "DHFRAE", "unknown type Z");
    rh_frame_hdr(b, 0, 0);
    expect_error(b, 4, "DHFRAE", "type 0");
    rh_frame_hdr(b, 'd', 1);   /* types are case sensitive */
    expect_error(b, 5, "DHFRAE", "lowercase d");
}
END_TEST

START_TEST(test_error_type_not_allowed)
{
    unsigned char b[16];
    rh_frame_hdr(b, RH_FRAME_END, 0);
    expect_error(b, 4, "DHFRA", "E on a push");
    unsigned char a[8] = { 0 };
    put_frame(b, 0, RH_FRAME_ACK, a, 8);
    expect_error(b, 12, "DHFRE", "A on a pull");
    /* and the same frames are fine where allowed */
    rh_frame_parser p;
    rh_frame_event ev;
    rh_frame_parser_init(&p);
    ck_assert_uint_eq(rh_frame_parse(&p, b, 12, "DHFRA", &ev), 12);
    ck_assert_int_eq(ev.type, RH_FEV_ACK);
    ck_assert(ev.offset == 0);
}
END_TEST

START_TEST(test_error_too_long)
{
    unsigned char b[8];
    rh_frame_hdr(b, RH_FRAME_DATA, RH_FRAME_MAX + 1);
    expect_error(b, 4, "DHFRAE", "D 65537");
    rh_frame_hdr(b, RH_FRAME_HEARTBEAT, RH_FRAME_MAX + 1);
    expect_error(b, 4, "DHFRAE", "H 65537");
    rh_frame_hdr(b, RH_FRAME_RESET, 0xffffff);
    expect_error(b, 4, "DHFRAE", "R 16M");
    /* the error comes as soon as the header is complete, before any payload */
    rh_frame_parser p;
    rh_frame_event ev;
    rh_frame_parser_init(&p);
    rh_frame_hdr(b, RH_FRAME_DATA, RH_FRAME_MAX + 1);
    ck_assert_uint_eq(rh_frame_parse(&p, b, 3, "D", &ev), 3);
    ck_assert_int_eq(ev.type, RH_FEV_NONE);
    rh_frame_parse(&p, b + 3, 1, "D", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_ERROR);
}
END_TEST

START_TEST(test_error_ack_length)
{
    unsigned char b[32] = { 0 };
    rh_frame_hdr(b, RH_FRAME_ACK, 7);
    expect_error(b, 11, "DHFRA", "A with 7 bytes");
    rh_frame_hdr(b, RH_FRAME_ACK, 9);
    expect_error(b, 13, "DHFRA", "A with 9 bytes");
    rh_frame_hdr(b, RH_FRAME_ACK, 0);
    expect_error(b, 4, "DHFRA", "empty A");
}
END_TEST

START_TEST(test_error_fin_end_with_payload)
{
    unsigned char b[8] = { 0 };
    rh_frame_hdr(b, RH_FRAME_FIN, 1);
    expect_error(b, 5, "DHFRAE", "F with payload");
    rh_frame_hdr(b, RH_FRAME_END, 2);
    expect_error(b, 6, "DHFRAE", "E with payload");
}
END_TEST

START_TEST(test_error_empty_data)
{
    unsigned char b[4];
    rh_frame_hdr(b, RH_FRAME_DATA, 0);
    expect_error(b, 4, "DHFRAE", "empty D");
}
END_TEST

START_TEST(test_error_sticky)
{
    unsigned char bad[4], good[16];
    rh_frame_hdr(bad, 'Q', 0);
    size_t gl = put_frame(good, 0, RH_FRAME_DATA, "ok", 2);
    rh_frame_parser p;
    rh_frame_event ev;
    rh_frame_parser_init(&p);
    rh_frame_parse(&p, bad, 4, "DHFRA", &ev);
    ck_assert_int_eq(ev.type, RH_FEV_ERROR);
    const char *why = p.error;
    ck_assert_ptr_nonnull(why);
    /* whatever comes next, the parser keeps failing and consumes nothing */
    for (int i = 0; i < 3; ++i) {
        ck_assert_uint_eq(rh_frame_parse(&p, good, gl, "DHFRA", &ev), 0);
        ck_assert_int_eq(ev.type, RH_FEV_ERROR);
        ck_assert_ptr_eq(p.error, why);
    }
    ck_assert_uint_eq(rh_frame_parse(&p, good, 0, "DHFRA", &ev), 0);
    ck_assert_int_eq(ev.type, RH_FEV_ERROR);
    /* init clears it */
    rh_frame_parser_init(&p);
    ck_assert_uint_eq(rh_frame_parse(&p, good, gl, "DHFRA", &ev), gl);
    ck_assert_int_eq(ev.type, RH_FEV_DATA);
}
END_TEST

/* Error after good frames in the same buffer: the good ones are delivered first. */
START_TEST(test_error_after_good_frames)
{
    unsigned char b[64];
    size_t at = put_frame(b, 0, RH_FRAME_DATA, "abc", 3);
    at = put_frame(b, at, RH_FRAME_HEARTBEAT, NULL, 0);
    rh_frame_hdr(b + at, RH_FRAME_DATA, 0);
    at += 4;
    at = put_frame(b, at, RH_FRAME_DATA, "zzz", 3);
    rh_frame_parser p;
    ev_log *lg = new_log();
    rh_frame_parser_init(&p);
    feed(&p, lg, b, at, "DHFRA");
    ck_assert_int_eq(lg->n, 3);
    ck_assert_int_eq(lg->ev[0].type, RH_FEV_DATA);
    ck_assert_mem_eq(lg->ev[0].data, "abc", 3);
    ck_assert_int_eq(lg->ev[1].type, RH_FEV_HEARTBEAT);
    ck_assert_int_eq(lg->ev[2].type, RH_FEV_ERROR);
    free(lg);
}
END_TEST

Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_header_encoding);
    tcase_add_test(tc, test_u64_roundtrip);
    tcase_add_test(tc, test_parse_whole_stream);
    tcase_add_test(tc, test_parse_every_split);
    tcase_add_test(tc, test_parse_every_double_split);
    tcase_add_test(tc, test_parse_byte_by_byte);
    tcase_add_test(tc, test_data_in_pieces);
    tcase_add_test(tc, test_data_stops_at_frame_end);
    tcase_add_test(tc, test_largest_frames_accepted);
    tcase_add_test(tc, test_reset_reason_truncated);
    suite_add_tcase(s, tc);

    TCase *te = tcase_create("errors");
    tcase_add_test(te, test_error_unknown_type);
    tcase_add_test(te, test_error_type_not_allowed);
    tcase_add_test(te, test_error_too_long);
    tcase_add_test(te, test_error_ack_length);
    tcase_add_test(te, test_error_fin_end_with_payload);
    tcase_add_test(te, test_error_empty_data);
    tcase_add_test(te, test_error_sticky);
    tcase_add_test(te, test_error_after_good_frames);
    suite_add_tcase(s, te);
    return s;
}
