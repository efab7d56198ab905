/* client/rhc_outcome.c: every way a stream push, batch push, duplex or pull can
 * end, and what the client does next; one table row per branch. */
#include <stdint.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rhc_errors.h"
#include "rhc_outcome.h"
#include "rhc_tunnel_int.h"
#include "client_tests.h"

/* One ending: the answer, the request, what the tunnel knows (the defaults
 * below, changed by the flags), and what the classifier must say. */
struct row {
    const char *name;
    int hdr_done;
    long status;
    CURLcode rc;
    int have_offset;
    uint64_t offset;
    int reason_fin;
    uint64_t p_off, p_end, emitted;
    size_t p_len;
    int p_fin, parking, refresh, end_wanted, acked_any, got_frame, saw_end, saw_fin;
    unsigned tries;
    const char *body;       /* the answer's body (an error text) */
    /* facts */
    unsigned retries, h2_resets, restarts;
    int no_retry, no_resume, no_unanswered, autox, eof, switched, hold, nothing_sent, slots_full;
    /* expected */
    enum rhc_verdict v;
    enum rhc_cause why;
    uint64_t from;
    int64_t delay;
    uint64_t ack;
    int h2_reset;
};

#define READ  1000      /* up bytes read */
#define SENT  800       /* ... handed to pushes */
#define ACKED 500       /* ... confirmed */
#define NONE  (-1)
#define GATEWAY_PAGE "<html>\r\n<head><title>502 Bad Gateway</title></head>"
#define MODULE_LINE RH_ERROR_PREFIX "the target reset the connection"

static void make(const struct row *w, struct rhc_req *r, struct rhc_facts *f)
{
    memset(r, 0, sizeof(*r));
    r->hdr_done = w->hdr_done;
    r->status = w->status;
    r->have_offset = w->have_offset;
    r->offset = w->offset;
    if (w->reason_fin)
        strcpy(r->reason, RH_REASON_TOKEN_FIN);
    r->p_off = w->p_off;
    r->p_end = w->p_end;
    r->p_len = w->p_len;
    r->emitted = w->emitted;
    r->p_fin = w->p_fin;
    r->parking = w->parking;
    r->refresh = w->refresh;
    r->end_wanted = w->end_wanted;
    r->acked_any = w->acked_any;
    r->got_frame = w->got_frame;
    r->saw_end = w->saw_end;
    r->saw_fin = w->saw_fin;
    r->tries = w->tries;
    if (w->body) {
        r->body_len = strlen(w->body);
        memcpy(r->body, w->body, r->body_len + 1);
    }

    memset(f, 0, sizeof(*f));
    f->read = READ;
    f->sent = w->nothing_sent ? 0 : SENT;
    f->acked = ACKED;
    f->eof = w->eof;
    f->autox = w->autox;
    f->resume = !w->no_resume;
    f->can_retry = !w->no_retry;
    f->unanswered_ok = !w->no_unanswered;
    f->retries = w->retries;
    f->switched_pull = w->switched;
    f->up_hold = w->hold;
    f->restarts = w->restarts;
    f->h2_resets = w->h2_resets;
    f->slots_full = w->slots_full;
}

typedef void (*classify_fn)(const struct rhc_req *, CURLcode, const struct rhc_facts *,
                            struct rhc_outcome *);

static void run_table(const char *what, classify_fn fn, const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        const struct row *w = &rows[i];
        struct rhc_req r;
        struct rhc_facts f;
        struct rhc_outcome o;

        make(w, &r, &f);
        fn(&r, w->rc, &f, &o);
        ck_assert_msg(o.v == w->v, "%s '%s': verdict %d, expected %d", what, w->name, o.v, w->v);
        ck_assert_msg(o.why == w->why, "%s '%s': cause %d, expected %d", what, w->name, o.why,
                      w->why);
        if (w->v == RHC_OUT_FAIL_HTTP || w->v == RHC_OUT_FAIL_CURL)
            continue;
        ck_assert_msg(o.from == w->from, "%s '%s': from %llu, expected %llu", what, w->name,
                      (unsigned long long)o.from, (unsigned long long)w->from);
        ck_assert_msg(o.delay == w->delay, "%s '%s': delay %lld, expected %lld", what, w->name,
                      (long long)o.delay, (long long)w->delay);
        ck_assert_msg(o.ack == w->ack, "%s '%s': ack %llu, expected %llu", what, w->name,
                      (unsigned long long)o.ack, (unsigned long long)w->ack);
        ck_assert_msg(o.h2_reset == w->h2_reset, "%s '%s': h2_reset %d", what, w->name,
                      o.h2_reset);
    }
}

#define ROWS(a) (a), sizeof(a) / sizeof((a)[0])

static const struct row spush_rows[] = {
    { "200: ended by the server, goes on", .hdr_done = 1, .status = 200, .have_offset = 1,
      .offset = 700, .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .from = 700, .delay = 0, .ack = 700 },
    { "200 without offset: what was sent", .hdr_done = 1, .status = 200,
      .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .from = SENT, .delay = 0, .ack = SENT },
    { "200 confirming bytes never read", .hdr_done = 1, .status = 200, .have_offset = 1,
      .offset = READ + 1, .v = RHC_OUT_LOST, .why = RHC_WHY_PROTO, .from = READ + 1,
      .delay = NONE, .ack = READ + 1 },
    { "200 with F and everything", .hdr_done = 1, .status = 200, .have_offset = 1,
      .offset = READ, .p_fin = 1, .v = RHC_OUT_DONE, .why = RHC_WHY_NONE, .from = READ,
      .delay = NONE, .ack = READ },
    { "200 with F, not everything", .hdr_done = 1, .status = 200, .have_offset = 1,
      .offset = 900, .p_fin = 1, .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .from = 900,
      .delay = 0, .ack = 900 },
    { "200 parked", .hdr_done = 1, .status = 200, .have_offset = 1, .offset = SENT,
      .parking = 1, .refresh = 1, .v = RHC_OUT_OK, .why = RHC_WHY_PARK, .from = SENT,
      .delay = NONE, .ack = SENT },
    { "200 refreshed", .hdr_done = 1, .status = 200, .have_offset = 1, .offset = SENT,
      .refresh = 1, .end_wanted = 1, .v = RHC_OUT_OK, .why = RHC_WHY_REFRESH, .from = SENT,
      .delay = 0, .ack = SENT },
    { "200 ended for batch", .hdr_done = 1, .status = 200, .have_offset = 1, .offset = SENT,
      .end_wanted = 1, .v = RHC_OUT_OK, .why = RHC_WHY_ENDED, .from = SENT, .delay = NONE,
      .ack = SENT },
    { "auto: 413 before a byte", .hdr_done = 1, .status = 413, .autox = 1,
      .v = RHC_OUT_FALLBACK, .why = RHC_WHY_BODY_LIMIT, .from = ACKED, .delay = NONE },
    { "auto: cut twice before a byte", .rc = CURLE_RECV_ERROR, .autox = 1, .retries = 1,
      .v = RHC_OUT_FALLBACK, .why = RHC_WHY_BODY_CUT, .from = ACKED, .delay = NONE },
    { "auto: cut once: again", .rc = CURLE_RECV_ERROR, .autox = 1,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_CUT, .from = ACKED, .delay = 50 },
    { "auto: cut after bytes went through", .rc = CURLE_SEND_ERROR, .autox = 1, .retries = 1,
      .acked_any = 1, .v = RHC_OUT_REWIND, .why = RHC_WHY_CUT, .from = ACKED, .delay = 100 },
    { "413 after bytes went through", .hdr_done = 1, .status = 413, .acked_any = 1,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_TOO_LONG, .from = ACKED, .delay = 50 },
    { "413 before any confirmation, a long body: shorter", .hdr_done = 1, .status = 413,
      .emitted = 2 << 20, .v = RHC_OUT_REWIND, .why = RHC_WHY_TOO_LONG, .from = ACKED,
      .delay = 50 },
    { "413 before any confirmation, a shortest body", .hdr_done = 1, .status = 413,
      .emitted = 64 << 10, .v = RHC_OUT_FAIL_HTTP },
    { "413 after bytes, no more tries", .hdr_done = 1, .status = 413, .acked_any = 1,
      .no_retry = 1, .v = RHC_OUT_FAIL_HTTP },
    { "413 without resume", .hdr_done = 1, .status = 413, .acked_any = 1, .no_resume = 1,
      .v = RHC_OUT_FAIL_HTTP },
    { "503 busy", .hdr_done = 1, .status = 503, .retries = 2,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_BUSY, .from = ACKED, .delay = BUSY_RETRY_MS },
    { "429 too often", .hdr_done = 1, .status = 429, .retries = RETRY_MAX,
      .v = RHC_OUT_FAIL_HTTP },
    { "409 ahead of the body", .hdr_done = 1, .status = 409, .have_offset = 1, .offset = 600,
      .p_off = 550, .v = RHC_OUT_REWIND, .why = RHC_WHY_REFUSED, .from = 600, .delay = 0,
      .ack = 600 },
    { "409 behind what was confirmed", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = 400, .p_off = 550, .v = RHC_OUT_REWIND, .why = RHC_WHY_REFUSED,
      .from = ACKED, .delay = 50, .ack = 400 },
    { "409 without offset", .hdr_done = 1, .status = 409, .p_off = 550,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_REFUSED, .from = ACKED, .delay = 50, .ack = ACKED },
    { "409 beyond what was read", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = READ + 5, .v = RHC_OUT_LOST, .why = RHC_WHY_PROTO, .from = READ + 5,
      .delay = NONE, .ack = READ + 5 },
    { "409 fin: an earlier push had it all", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = READ, .reason_fin = 1, .eof = 1, .v = RHC_OUT_DONE, .why = RHC_WHY_FIN_HAD,
      .from = READ, .delay = NONE, .ack = READ },
    { "409 fin before local EOF", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = READ, .reason_fin = 1, .p_off = 0, .v = RHC_OUT_REWIND,
      .why = RHC_WHY_REFUSED, .from = READ, .delay = 0, .ack = READ },
    { "409 too often", .hdr_done = 1, .status = 409, .retries = RETRY_MAX,
      .v = RHC_OUT_FAIL_HTTP },
    { "400: cut on the way", .hdr_done = 1, .status = 400, .have_offset = 1, .offset = 700,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_CUT_ON_WAY, .from = 700, .delay = 50, .ack = 700 },
    { "400 with an offset never read", .hdr_done = 1, .status = 400, .have_offset = 1,
      .offset = READ + 1, .v = RHC_OUT_REWIND, .why = RHC_WHY_CUT_ON_WAY, .from = ACKED,
      .delay = 50, .ack = 0 },
    { "400 without offset", .hdr_done = 1, .status = 400, .v = RHC_OUT_FAIL_HTTP },
    { "400, no more tries", .hdr_done = 1, .status = 400, .have_offset = 1, .offset = 700,
      .no_retry = 1, .v = RHC_OUT_FAIL_HTTP },
    { "headers cut short", .rc = CURLE_OK, .v = RHC_OUT_REWIND, .why = RHC_WHY_CUT,
      .from = ACKED, .delay = 50 },
    { "cut, no more tries", .rc = CURLE_RECV_ERROR, .no_retry = 1, .v = RHC_OUT_FAIL_CURL },
    { "unresolvable", .rc = CURLE_COULDNT_RESOLVE_HOST, .v = RHC_OUT_FAIL_CURL },
    { "500", .hdr_done = 1, .status = 500, .v = RHC_OUT_FAIL_HTTP },
    { "502 of a gateway: a cut", .hdr_done = 1, .status = 502, .body = GATEWAY_PAGE,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_GATEWAY, .from = ACKED, .delay = 50 },
    { "504 of a gateway, no body", .hdr_done = 1, .status = 504, .retries = 2,
      .v = RHC_OUT_REWIND, .why = RHC_WHY_GATEWAY, .from = ACKED, .delay = 200 },
    { "502 of a gateway, no resume", .hdr_done = 1, .status = 502, .body = GATEWAY_PAGE,
      .no_resume = 1, .v = RHC_OUT_FAIL_HTTP },
    { "502 of the module", .hdr_done = 1, .status = 502, .body = MODULE_LINE,
      .v = RHC_OUT_FAIL_HTTP },
};

START_TEST(test_spush)
{
    run_table("spush", rhc_classify_spush, ROWS(spush_rows));
}
END_TEST

#define BIG (100u * 1024)   /* a batch push that a 413 can split */

static const struct row bpush_rows[] = {
    { "200", .hdr_done = 1, .status = 200, .have_offset = 1, .offset = 900, .p_off = 500,
      .p_end = 900, .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .from = 900, .delay = NONE,
      .ack = 900 },
    { "200 without offset", .hdr_done = 1, .status = 200, .p_off = 500, .p_end = 900,
      .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .from = 900, .delay = NONE, .ack = 900 },
    { "200 for less", .hdr_done = 1, .status = 200, .have_offset = 1, .offset = 800,
      .p_off = 500, .p_end = 900, .v = RHC_OUT_LOST, .why = RHC_WHY_SHORT, .from = 800,
      .delay = NONE, .ack = 800 },
    { "an offset never read", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = READ + 1, .p_off = 500, .p_end = 900, .v = RHC_OUT_LOST, .why = RHC_WHY_PROTO,
      .from = READ + 1, .delay = NONE },
    { "409: had it already", .hdr_done = 1, .status = 409, .have_offset = 1, .offset = 900,
      .p_off = 500, .p_end = 900, .v = RHC_OUT_OK, .why = RHC_WHY_HAD_IT, .from = 900,
      .delay = NONE, .ack = 900 },
    { "409 fin: had it with F", .hdr_done = 1, .status = 409, .have_offset = 1, .offset = 900,
      .reason_fin = 1, .p_fin = 1, .p_off = 500, .p_end = 900, .v = RHC_OUT_OK,
      .why = RHC_WHY_HAD_IT, .from = 900, .delay = NONE, .ack = 900 },
    { "409: had the bytes, not the F", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = 900, .p_fin = 1, .p_off = 500, .p_end = 900, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_REFUSED, .from = 900, .delay = 0, .ack = 900 },
    { "409: had part of it", .hdr_done = 1, .status = 409, .have_offset = 1, .offset = 700,
      .p_off = 500, .p_end = 900, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED, .from = 700,
      .delay = 0, .ack = 700 },
    { "409: not its turn", .hdr_done = 1, .status = 409, .have_offset = 1, .offset = 400,
      .p_off = 600, .p_end = 900, .tries = 1, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED,
      .from = 600, .delay = 100, .ack = 400 },
    { "409 without offset", .hdr_done = 1, .status = 409, .p_off = 600, .p_end = 900,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED, .from = 600, .delay = 50 },
    { "503", .hdr_done = 1, .status = 503, .p_off = 600, .p_end = 900, .tries = 3,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY, .from = 600, .delay = BUSY_RETRY_MS },
    { "429 after what was confirmed", .hdr_done = 1, .status = 429, .p_off = 400,
      .p_end = 900, .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY, .from = ACKED,
      .delay = BUSY_RETRY_MS },
    { "503, all of it confirmed meanwhile", .hdr_done = 1, .status = 503, .p_off = 100,
      .p_end = 300, .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY, .from = 300,
      .delay = BUSY_RETRY_MS },
    { "400: cut on the way", .hdr_done = 1, .status = 400, .have_offset = 1, .offset = 700,
      .p_off = 600, .p_end = 900, .v = RHC_OUT_RETRY, .why = RHC_WHY_CUT_ON_WAY, .from = 700,
      .delay = 50, .ack = 700 },
    { "413, no slot for a split", .hdr_done = 1, .status = 413, .p_off = ACKED,
      .p_end = ACKED + BIG, .p_len = BIG + 2048, .slots_full = 1, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_SPLIT, .from = ACKED, .delay = 50 },
    { "413: split", .hdr_done = 1, .status = 413, .p_off = ACKED, .p_end = ACKED + BIG,
      .p_len = BIG + 2048, .v = RHC_OUT_RETRY, .why = RHC_WHY_SPLIT, .from = ACKED,
      .delay = 0 },
    { "413 on a small push", .hdr_done = 1, .status = 413, .p_off = 500, .p_end = 900,
      .v = RHC_OUT_FAIL_HTTP },
    { "cut", .rc = CURLE_RECV_ERROR, .p_off = 600, .p_end = 900, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_CUT, .from = 600, .delay = 50 },
    { "cut, no more tries", .rc = CURLE_RECV_ERROR, .p_off = 600, .p_end = 900,
      .no_retry = 1, .v = RHC_OUT_LOST, .why = RHC_WHY_TOO_MANY, .from = 600, .delay = 50 },
    { "503, the last try", .hdr_done = 1, .status = 503, .p_off = 600, .p_end = 900,
      .tries = RETRY_MAX - 1, .v = RHC_OUT_LOST, .why = RHC_WHY_TOO_MANY, .from = 600,
      .delay = 1000 },
    { "unresolvable", .rc = CURLE_COULDNT_RESOLVE_HOST, .p_off = 600, .p_end = 900,
      .v = RHC_OUT_FAIL_CURL },
    { "404", .hdr_done = 1, .status = 404, .p_off = 600, .p_end = 900,
      .v = RHC_OUT_FAIL_HTTP },
    { "502 of a gateway: a cut", .hdr_done = 1, .status = 502, .body = GATEWAY_PAGE,
      .p_off = 600, .p_end = 900, .v = RHC_OUT_RETRY, .why = RHC_WHY_GATEWAY, .from = 600,
      .delay = 50 },
    { "504 of a gateway, past RETRY_MAX: a cut is tried while the session lives",
      .hdr_done = 1, .status = 504, .p_off = 600, .p_end = 900, .tries = RETRY_MAX + 3,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_GATEWAY, .from = 600, .delay = 1000 },
    { "502 of a gateway, no more tries", .hdr_done = 1, .status = 502, .p_off = 600,
      .p_end = 900, .no_retry = 1, .v = RHC_OUT_LOST, .why = RHC_WHY_TOO_MANY, .from = 600,
      .delay = 50 },
    { "502 of the module", .hdr_done = 1, .status = 502, .body = MODULE_LINE, .p_off = 600,
      .p_end = 900, .v = RHC_OUT_FAIL_HTTP },
};

START_TEST(test_bpush)
{
    run_table("bpush", rhc_classify_bpush, ROWS(bpush_rows));
}
END_TEST

/* The split keeps what fits the largest power of two below the body, half the
 * data when that is all of it, and never less than BATCH_DATA_MIN. */
START_TEST(test_split_size)
{
    size_t mib = 1024 * 1024;

    ck_assert_uint_eq(rhc_split_size(2 * mib + 100, 2 * mib), DATA_IN_BODY(2 * mib));
    ck_assert_uint_eq(rhc_split_size(mib + 100, 600000), 300000);
    ck_assert_uint_eq(rhc_split_size(mib + 100, 600001), 300001);
    ck_assert_uint_eq(rhc_split_size(40000, 20000), BATCH_DATA_MIN);
    size_t kept = rhc_split_size(BIG + 2048, BIG);
    ck_assert(kept >= BATCH_DATA_MIN && kept < BIG);
}
END_TEST

static const struct row duplex_rows[] = {
    { "501: no duplex", .hdr_done = 1, .status = 501, .v = RHC_OUT_FALLBACK,
      .why = RHC_WHY_NO_DUPLEX, .from = ACKED, .delay = NONE },
    { "404: no duplex", .hdr_done = 1, .status = 404, .v = RHC_OUT_FALLBACK,
      .why = RHC_WHY_NO_DUPLEX, .from = ACKED, .delay = NONE },
    { "405: no duplex", .hdr_done = 1, .status = 405, .v = RHC_OUT_FALLBACK,
      .why = RHC_WHY_NO_DUPLEX, .from = ACKED, .delay = NONE },
    { "404 after frames", .hdr_done = 1, .status = 404, .got_frame = 1,
      .v = RHC_OUT_FAIL_HTTP },
    { "503", .hdr_done = 1, .status = 503, .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY,
      .from = ACKED, .delay = NONE },
    { "503 too often, the session ends", .hdr_done = 1, .status = 503, .retries = RETRY_MAX,
      .no_retry = 1, .v = RHC_OUT_FAIL_HTTP },
    { "503 too often, no resume", .hdr_done = 1, .status = 503, .retries = RETRY_MAX,
      .no_resume = 1, .v = RHC_OUT_FAIL_HTTP },
    { "503 past RETRY_MAX while the session lives", .hdr_done = 1, .status = 503,
      .retries = RETRY_MAX + 5, .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY, .from = ACKED,
      .delay = NONE },
    { "409 with the server's offset", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = 700, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED, .from = ACKED,
      .delay = NONE, .ack = 700 },
    { "409 with an offset never read", .hdr_done = 1, .status = 409, .have_offset = 1,
      .offset = READ + 1, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED, .from = ACKED,
      .delay = NONE },
    { "409 too often", .hdr_done = 1, .status = 409, .retries = RETRY_MAX,
      .v = RHC_OUT_FAIL_HTTP },
    { "died unanswered", .rc = CURLE_GOT_NOTHING, .v = RHC_OUT_RETRY, .why = RHC_WHY_CUT,
      .from = ACKED, .delay = NONE },
    { "died unanswered, no more tries: resumed", .rc = CURLE_RECV_ERROR,
      .no_unanswered = 1, .v = RHC_OUT_RETRY, .why = RHC_WHY_RESUME, .delay = NONE },
    { "h2 reset, the last one", .rc = CURLE_HTTP2_STREAM, .h2_resets = H2_RESETS_MAX - 1,
      .v = RHC_OUT_LOST, .why = RHC_WHY_H2_RESETS, .delay = NONE, .h2_reset = 1 },
    { "h2 reset: resumed", .rc = CURLE_HTTP2_STREAM, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_RESUME, .delay = NONE, .h2_reset = 1 },
    { "500", .hdr_done = 1, .status = 500, .v = RHC_OUT_FAIL_HTTP },
    { "502 of a gateway: resumed", .hdr_done = 1, .status = 502, .body = GATEWAY_PAGE,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_GATEWAY, .from = ACKED, .delay = NONE },
    { "502 of a gateway, no more tries", .hdr_done = 1, .status = 502, .no_unanswered = 1,
      .v = RHC_OUT_FAIL_HTTP },
    { "502 of the module", .hdr_done = 1, .status = 502, .body = MODULE_LINE,
      .v = RHC_OUT_FAIL_HTTP },
    { "E", .hdr_done = 1, .status = 200, .saw_end = 1, .v = RHC_OUT_OK, .why = RHC_WHY_NONE,
      .delay = NONE },
    { "F, then cut", .hdr_done = 1, .status = 200, .saw_fin = 1, .rc = CURLE_RECV_ERROR,
      .v = RHC_OUT_OK, .why = RHC_WHY_NONE, .delay = NONE },
    { "ended early: resumed", .hdr_done = 1, .status = 200, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_RESUME, .delay = NONE },
    { "ended early, no resume", .hdr_done = 1, .status = 200, .no_resume = 1,
      .v = RHC_OUT_LOST, .why = RHC_WHY_NO_END, .delay = NONE },
    { "cut, no resume", .hdr_done = 1, .status = 200, .rc = CURLE_RECV_ERROR, .no_resume = 1,
      .v = RHC_OUT_FAIL_CURL },
    { "cut, no more tries", .hdr_done = 1, .status = 200, .rc = CURLE_RECV_ERROR,
      .no_retry = 1, .v = RHC_OUT_FAIL_CURL },
    { "an error not worth a retry", .hdr_done = 1, .status = 200,
      .rc = CURLE_WRITE_ERROR, .v = RHC_OUT_FAIL_CURL },
};

START_TEST(test_duplex)
{
    run_table("duplex", rhc_classify_duplex, ROWS(duplex_rows));
}
END_TEST

static const struct row pull_rows[] = {
    { "second pull: start over", .hdr_done = 1, .status = 409, .switched = 1, .hold = 1,
      .nothing_sent = 1, .v = RHC_OUT_RESTART, .why = RHC_WHY_SECOND_PULL, .delay = NONE },
    { "second pull after bytes went up", .hdr_done = 1, .status = 409, .switched = 1,
      .hold = 1, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED, .delay = NONE },
    { "second pull, restarted before", .hdr_done = 1, .status = 409, .switched = 1,
      .hold = 1, .nothing_sent = 1, .restarts = 1, .v = RHC_OUT_RETRY,
      .why = RHC_WHY_REFUSED, .delay = NONE },
    { "409: the given-up pull stays", .hdr_done = 1, .status = 409, .switched = 1,
      .retries = RETRY_MAX, .v = RHC_OUT_LOST, .why = RHC_WHY_HELD, .delay = NONE },
    { "409", .hdr_done = 1, .status = 409, .v = RHC_OUT_RETRY, .why = RHC_WHY_REFUSED,
      .delay = NONE },
    { "409 too often", .hdr_done = 1, .status = 409, .retries = RETRY_MAX,
      .v = RHC_OUT_FAIL_HTTP },
    { "429", .hdr_done = 1, .status = 429, .v = RHC_OUT_RETRY, .why = RHC_WHY_BUSY,
      .delay = NONE },
    { "503 too often, the session ends", .hdr_done = 1, .status = 503, .retries = RETRY_MAX,
      .no_retry = 1, .v = RHC_OUT_FAIL_HTTP },
    { "429 too often", .hdr_done = 1, .status = 429, .retries = RETRY_MAX,
      .v = RHC_OUT_FAIL_HTTP },
    { "died unanswered", .rc = CURLE_SEND_ERROR, .v = RHC_OUT_RETRY, .why = RHC_WHY_CUT,
      .delay = NONE },
    { "died unanswered, no more tries", .rc = CURLE_SEND_ERROR, .no_unanswered = 1,
      .no_retry = 1, .v = RHC_OUT_FAIL_CURL },
    { "416 after a switch", .hdr_done = 1, .status = 416, .switched = 1,
      .v = RHC_OUT_LOST, .why = RHC_WHY_LOST_416, .delay = NONE },
    { "416", .hdr_done = 1, .status = 416, .v = RHC_OUT_FAIL_HTTP },
    { "E: again", .hdr_done = 1, .status = 200, .saw_end = 1, .v = RHC_OUT_OK,
      .why = RHC_WHY_NONE, .delay = NONE },
    { "ended early: resumed", .hdr_done = 1, .status = 200, .rc = CURLE_PARTIAL_FILE,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_RESUME, .delay = NONE },
    { "ended early, no resume", .hdr_done = 1, .status = 200, .no_resume = 1,
      .v = RHC_OUT_LOST, .why = RHC_WHY_NO_END, .delay = NONE },
    { "cut, no resume", .hdr_done = 1, .status = 200, .rc = CURLE_RECV_ERROR,
      .no_resume = 1, .v = RHC_OUT_FAIL_CURL },
    { "504 of a gateway: resumed", .hdr_done = 1, .status = 504, .body = GATEWAY_PAGE,
      .v = RHC_OUT_RETRY, .why = RHC_WHY_GATEWAY, .delay = NONE },
    { "502 of a gateway, no resume", .hdr_done = 1, .status = 502, .no_resume = 1,
      .v = RHC_OUT_FAIL_HTTP },
    { "502 of the module", .hdr_done = 1, .status = 502, .body = MODULE_LINE,
      .v = RHC_OUT_FAIL_HTTP },
};

START_TEST(test_pull)
{
    run_table("pull", rhc_classify_pull, ROWS(pull_rows));
}
END_TEST

Suite *outcome_suite(void)
{
    Suite *s = suite_create("client outcome");
    TCase *tc = tcase_create("classifiers");

    tcase_add_test(tc, test_spush);
    tcase_add_test(tc, test_bpush);
    tcase_add_test(tc, test_split_size);
    tcase_add_test(tc, test_duplex);
    tcase_add_test(tc, test_pull);
    suite_add_tcase(s, tc);
    return s;
}
