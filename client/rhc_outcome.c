/* relay-https client: the outcome classifiers (rhc_outcome.h): pure, so that
 * every way a push, pull or duplex can end is a row in a unit test. The order
 * of the tests in each is the order of precedence. */
#include <string.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rhc_errors.h"
#include "rhc_outcome.h"
#include "rhc_tunnel_int.h"

static void set(struct rhc_outcome *o, enum rhc_verdict v, enum rhc_cause why, uint64_t from,
                int64_t delay)
{
    o->v = v;
    o->why = why;
    o->from = from;
    o->delay = delay;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* A busy answer tried again? A 503 (a full httpd child, the relay's budget)
 * passes as tunnels end and httpd starts children, and which child a new
 * connection lands in is not ours to choose (a tunnel of the duplex ramp was
 * refused 12 times in a row by full children while another had room): a
 * resumable session goes on while it lives. A 429 (this client's share) and a
 * session without resume give up after RETRY_MAX. */
static int busy_again(long st, const struct rhc_facts *f)
{
    return busy_status(st) && (f->retries < RETRY_MAX || (st == 503 && f->resume && f->can_retry));
}

static int is_fin_reason(const struct rhc_req *r)
{
    return !strcmp(r->reason, RH_REASON_TOKEN_FIN);
}

/* ---------------------------------------------------------------- stream push */

/* 200: the body ended (by us or the server); its answer says how far it got. */
static void spush_answered(const struct rhc_req *r, const struct rhc_facts *f,
                           struct rhc_outcome *o)
{
    uint64_t x = r->have_offset ? r->offset : f->sent;

    o->ack = x;
    if (x > f->read)
        set(o, RHC_OUT_LOST, RHC_WHY_PROTO, x, -1);
    else if (r->p_fin && x == f->read)
        set(o, RHC_OUT_DONE, RHC_WHY_NONE, x, -1);
    else if (r->parking)
        set(o, RHC_OUT_OK, RHC_WHY_PARK, x, -1);
    else if (r->refresh)
        set(o, RHC_OUT_OK, RHC_WHY_REFRESH, x, 0);   /* the ring is free again */
    else if (r->end_wanted)
        set(o, RHC_OUT_OK, RHC_WHY_ENDED, x, -1);    /* pushes go on as batch */
    else
        set(o, RHC_OUT_OK, RHC_WHY_NONE, x, 0);      /* the server ended it early */
}

/* 409: the server has other up bytes than this body started at. */
static void spush_refused(const struct rhc_req *r, const struct rhc_facts *f,
                          struct rhc_outcome *o)
{
    uint64_t x = r->have_offset ? r->offset : f->acked;

    o->ack = x;
    if (x > f->read)
        set(o, RHC_OUT_LOST, RHC_WHY_PROTO, x, -1);
    else if (is_fin_reason(r) && f->eof && x == f->read)
        set(o, RHC_OUT_DONE, RHC_WHY_FIN_HAD, x, -1);
    else
        set(o, RHC_OUT_REWIND, RHC_WHY_REFUSED, max_u64(x, f->acked),
            x > r->p_off ? 0 : backoff_ms(f->retries));
}

/* auto: an intermediary that refuses long bodies (nginx: client_max_body_size)
 * answers 413, or cuts the connection while the body goes; it passed nothing on. */
static int spush_body_refused(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f)
{
    if (!f->autox || r->acked_any)
        return 0;
    if (r->hdr_done)
        return r->status == 413;
    return rc != CURLE_OK && transient(rc) && f->retries >= 1;
}

/* A 413 on a streamed body: shorter bodies can pass when bytes of this one
 * got through, or when it carried more than the shortest body we send (its
 * confirmations may have been lost with a cut pull: the 413 alone then says
 * the limit lies below what was sent). */
static int spush_shrinkable(const struct rhc_req *r)
{
    return r->acked_any || r->emitted > SPUSH_BODY_MIN;
}

/* An answer that is a cut after all: the server gave up a body the path
 * stalled (408, RelayFrameTimeout), or a gateway lost the server (gateway_cut).
 * RHC_WHY_NONE: neither, or no more tries. */
static enum rhc_cause spush_answer_cut(const struct rhc_req *r, const struct rhc_facts *f)
{
    if (!r->hdr_done || !f->resume || !f->can_retry)
        return RHC_WHY_NONE;
    if (r->status == 408)
        return RHC_WHY_CUT;
    return gateway_cut(r) ? RHC_WHY_GATEWAY : RHC_WHY_NONE;
}

void rhc_classify_spush(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                        struct rhc_outcome *o)
{
    int64_t again = backoff_ms(f->retries);
    int answered = r->hdr_done;
    enum rhc_cause cut;

    memset(o, 0, sizeof(*o));
    o->delay = -1;
    if (answered && r->status == 200)
        spush_answered(r, f, o);
    else if (spush_body_refused(r, rc, f))
        set(o, RHC_OUT_FALLBACK, answered ? RHC_WHY_BODY_LIMIT : RHC_WHY_BODY_CUT, f->acked, -1);
    else if (answered && r->status == 413 && spush_shrinkable(r) && f->resume && f->can_retry)
        set(o, RHC_OUT_REWIND, RHC_WHY_TOO_LONG, f->acked, again);
    else if (answered && busy_again(r->status, f))
        set(o, RHC_OUT_REWIND, RHC_WHY_BUSY, f->acked, busy_backoff_ms(f->retries));
    else if (answered && r->status == 409 && f->retries < RETRY_MAX)
        spush_refused(r, f, o);
    else if (answered && r->status == 400 && r->have_offset && f->can_retry) {
        o->ack = r->offset <= f->read ? r->offset : 0;
        set(o, RHC_OUT_REWIND, RHC_WHY_CUT_ON_WAY, max_u64(o->ack, f->acked), again);
    } else if ((cut = spush_answer_cut(r, f)) != RHC_WHY_NONE)
        set(o, RHC_OUT_REWIND, cut, f->acked, again);
    else if (!answered && cut_before_answer(rc) && f->can_retry)
        set(o, RHC_OUT_REWIND, RHC_WHY_CUT, f->acked, again);
    else
        set(o, answered ? RHC_OUT_FAIL_HTTP : RHC_OUT_FAIL_CURL, RHC_WHY_NONE, 0, -1);
}

/* ---------------------------------------------------------------- batch push */

size_t rhc_split_size(size_t p_len, size_t data)
{
    size_t body = 1;

    while (body * 2 < p_len)
        body *= 2;
    size_t half = DATA_IN_BODY(body);
    if (half >= data)
        half = (data + 1) / 2;
    if (half < BATCH_DATA_MIN)
        half = BATCH_DATA_MIN;
    return half;
}

/* 409 with the server's offset x. A push that reached it before (curl's own
 * retry of a request it thinks was lost, say) is done; a push it only had in
 * part goes again from there; a push whose turn had not come (or came too
 * early) goes again after a while. */
static void bpush_refused(const struct rhc_req *r, struct rhc_outcome *o)
{
    uint64_t x = r->offset;

    o->ack = x;
    if (x >= r->p_end && (!r->p_fin || is_fin_reason(r)))
        set(o, RHC_OUT_OK, RHC_WHY_HAD_IT, x, -1);
    else if (x > r->p_off)
        set(o, RHC_OUT_RETRY, RHC_WHY_REFUSED, x < r->p_end ? x : r->p_end, 0);
    else
        set(o, RHC_OUT_RETRY, RHC_WHY_REFUSED, r->p_off, backoff_ms(r->tries));
}

/* The first verdict of a batch push's answer, before the limits on tries. */
static void bpush_first(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                        struct rhc_outcome *o)
{
    int answered = r->hdr_done;
    int64_t again = backoff_ms(r->tries);
    uint64_t data = r->p_end - r->p_off;

    if (answered && r->have_offset && r->offset > f->read)
        set(o, RHC_OUT_LOST, RHC_WHY_PROTO, r->offset, -1);
    else if (answered && r->status == 200) {
        uint64_t x = r->have_offset ? r->offset : r->p_end;
        o->ack = x;
        set(o, x < r->p_end ? RHC_OUT_LOST : RHC_OUT_OK, x < r->p_end ? RHC_WHY_SHORT
            : RHC_WHY_NONE, x, -1);
    } else if (answered && r->status == 409 && r->have_offset)
        bpush_refused(r, o);
    else if (answered && r->status == 409)
        set(o, RHC_OUT_RETRY, RHC_WHY_REFUSED, r->p_off, again);
    else if (answered && busy_status(r->status))
        set(o, RHC_OUT_RETRY, RHC_WHY_BUSY, r->p_off, busy_backoff_ms(f->retries));
    else if (answered && r->status == 400 && r->have_offset) {
        o->ack = r->offset;
        set(o, RHC_OUT_RETRY, RHC_WHY_CUT_ON_WAY, r->p_off, again);
    } else if (answered && r->status == 413 && data > BATCH_DATA_MIN && f->slots_full)
        set(o, RHC_OUT_RETRY, RHC_WHY_SPLIT, r->p_off, again);  /* split when a slot is free */
    else if (answered && r->status == 413 && data > BATCH_DATA_MIN) {
        o->split = rhc_split_size(r->p_len, (size_t)data);
        set(o, RHC_OUT_RETRY, RHC_WHY_SPLIT, r->p_off, 0);
    } else if (!answered && cut_before_answer(rc))
        set(o, RHC_OUT_RETRY, RHC_WHY_CUT, r->p_off, again);
    else if (gateway_cut(r))
        set(o, RHC_OUT_RETRY, RHC_WHY_GATEWAY, r->p_off, again);
    else
        set(o, answered ? RHC_OUT_FAIL_HTTP : RHC_OUT_FAIL_CURL, RHC_WHY_NONE, 0, -1);
}

/* f->can_retry: retry_ok() for one more try (r->tries + 1). */
void rhc_classify_bpush(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                        struct rhc_outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->delay = -1;
    bpush_first(r, rc, f, o);
    if (o->v != RHC_OUT_RETRY)
        return;
    /* bytes the server confirmed meanwhile need not go again */
    uint64_t acked = max_u64(f->acked, o->ack);
    uint64_t end = o->split ? r->p_off + o->split : r->p_end;
    if (o->from < acked)
        o->from = acked < end ? acked : end;
    /* a gateway's 502 is a cut: tried while the session lives, as one */
    int refused = r->hdr_done && o->why != RHC_WHY_GATEWAY;
    if (refused ? r->tries + 1 >= RETRY_MAX : !f->can_retry) {
        o->v = RHC_OUT_LOST;
        o->why = RHC_WHY_TOO_MANY;
    }
}

/* ---------------------------------------------------------------- duplex */

/* A response that ended without F or E: resumed, or the end. */
static void down_cut(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                     struct rhc_outcome *o)
{
    if (r->saw_end || r->saw_fin)
        set(o, RHC_OUT_OK, RHC_WHY_NONE, f->down_off, -1);
    else if (f->resume && f->can_retry && (rc == CURLE_OK || transient(rc)))
        set(o, RHC_OUT_RETRY, RHC_WHY_RESUME, f->down_off, -1);
    else if (rc != CURLE_OK)
        set(o, RHC_OUT_FAIL_CURL, RHC_WHY_NONE, 0, -1);
    else
        set(o, RHC_OUT_LOST, RHC_WHY_NO_END, 0, -1);
}

void rhc_classify_duplex(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                         struct rhc_outcome *o)
{
    int answered = r->hdr_done;
    long st = r->status;

    memset(o, 0, sizeof(*o));
    o->delay = -1;
    if (answered && (st == 501 || st == 404 || st == 405) && !r->got_frame)
        set(o, RHC_OUT_FALLBACK, RHC_WHY_NO_DUPLEX, f->acked, -1);
    else if (answered && busy_again(st, f))
        set(o, RHC_OUT_RETRY, RHC_WHY_BUSY, f->acked, -1);
    else if (answered && st == 409 && f->retries < RETRY_MAX) {
        /* the previous request of the session is still active on the server, or
         * it has more up bytes than we thought (then it says how many) */
        o->ack = r->have_offset && r->offset <= f->read ? r->offset : 0;
        set(o, RHC_OUT_RETRY, RHC_WHY_REFUSED, f->acked, -1);
    } else if (died_unanswered(r, rc) && f->unanswered_ok)
        set(o, RHC_OUT_RETRY, RHC_WHY_CUT, f->acked, -1);
    else if (gateway_cut(r) && f->resume && f->unanswered_ok)
        set(o, RHC_OUT_RETRY, RHC_WHY_GATEWAY, f->acked, -1);
    else if (rc == CURLE_HTTP2_STREAM && !answered && f->h2_resets + 1 >= H2_RESETS_MAX) {
        o->h2_reset = 1;
        set(o, RHC_OUT_LOST, RHC_WHY_H2_RESETS, 0, -1);
    } else if (answered && st != 200)
        set(o, RHC_OUT_FAIL_HTTP, RHC_WHY_NONE, 0, -1);
    else {
        o->h2_reset = rc == CURLE_HTTP2_STREAM && !answered;
        down_cut(r, rc, f, o);
    }
}

/* ---------------------------------------------------------------- pull */

/* 409 or 416 right after a stream pull was given up. */
static int pull_after_switch(const struct rhc_req *r, const struct rhc_facts *f,
                             struct rhc_outcome *o)
{
    if (!r->hdr_done || !f->switched_pull)
        return 0;
    /* "second pull": the server still has the given-up pull, and nothing went
     * either way yet: the session can start over */
    if (r->status == 409 && f->up_hold && f->sent == 0 && f->down_off == 0 && !f->restarts)
        set(o, RHC_OUT_RESTART, RHC_WHY_SECOND_PULL, 0, -1);
    else if (r->status == 409 && f->retries >= RETRY_MAX)
        set(o, RHC_OUT_LOST, RHC_WHY_HELD, 0, -1);
    else
        return 0;
    return 1;
}

void rhc_classify_pull(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                       struct rhc_outcome *o)
{
    int answered = r->hdr_done;
    long st = r->status;

    memset(o, 0, sizeof(*o));
    o->delay = -1;
    if (pull_after_switch(r, f, o))
        return;
    if (answered && st == 409 && f->retries < RETRY_MAX)
        set(o, RHC_OUT_RETRY, RHC_WHY_REFUSED, f->down_off, -1);
    else if (answered && busy_again(st, f))
        set(o, RHC_OUT_RETRY, RHC_WHY_BUSY, f->down_off, -1);
    else if (died_unanswered(r, rc) && f->unanswered_ok)
        set(o, RHC_OUT_RETRY, RHC_WHY_CUT, f->down_off, -1);   /* no byte came */
    else if (gateway_cut(r) && f->resume && f->unanswered_ok)
        set(o, RHC_OUT_RETRY, RHC_WHY_GATEWAY, f->down_off, -1);
    else if (answered && st == 416 && f->switched_pull)
        set(o, RHC_OUT_LOST, RHC_WHY_LOST_416, 0, -1);
    else if (answered && st != 200)
        set(o, RHC_OUT_FAIL_HTTP, RHC_WHY_NONE, 0, -1);
    else
        down_cut(r, rc, f, o);
}
