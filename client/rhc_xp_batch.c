/* relay-https client: batch pushes: complete pushes with Content-Length, up
 * to BATCH_INFLIGHT in flight, each tried again (from what the server has)
 * until it is confirmed. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_outcome.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"

/* A complete push of the up bytes [off, end), with F when fin: the frames are
 * copied from the ring, so the ring may move on while curl sends them. */
struct rhc_req *bpush_new(rhc_tunnel *t, uint64_t off, uint64_t end, int fin,
                          unsigned tries)
{
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_PUSH, t->token);
    size_t data = (size_t)(end - off);
    size_t nframes = (data + RH_FRAME_MAX - 1) / RH_FRAME_MAX;
    size_t len = data + nframes * (RH_FRAME_HDR + CHECK_FRAME) + (fin ? RH_FRAME_HDR : 0);

    if (!r)
        return NULL;
    r->p_off = off;
    r->p_end = end;
    r->p_fin = fin;
    r->tries = tries;
    if (!(r->p_body = malloc(len ? len : 1)))
        goto fail;
    size_t pos = 0;
    uint32_t crc = rhc_upbuf_crc_at(&t->up, off);
    for (uint64_t o = off; o < end; ) {
        size_t n = end - o > RH_FRAME_MAX ? RH_FRAME_MAX : (size_t)(end - o);
        rh_frame_hdr(r->p_body + pos, RH_FRAME_DATA, n);
        rhc_upbuf_copy(&t->up, o, r->p_body + pos + RH_FRAME_HDR, n);
        crc = rh_crc32c(crc, r->p_body + pos + RH_FRAME_HDR, n);
        pos += RH_FRAME_HDR + n;
        o += n;
        pos += rh_frame_check(r->p_body + pos, o, crc);
    }
    rhc_upbuf_mark(&t->up, end, crc);
    if (fin)
        rh_frame_hdr(r->p_body + pos, RH_FRAME_FIN, 0);
    r->p_len = len;
    if (add_header(r, RH_HDR_OFFSET ": %" PRIu64, off) < 0 ||
        add_header(r, "Content-Type: application/octet-stream") < 0 ||
        add_header(r, "Expect:") < 0)
        goto fail;
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, (char *)r->p_body);
    if (tries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t_log(t, 3, "push %" PRIu64 "..%" PRIu64 "%s", off, end, fin ? " + F" : "");
    return r;
fail:
    req_free(r);
    return NULL;
}

/* Sends what waits in the ring as one more batch push. */
int start_bpush(rhc_tunnel *t)
{
    uint64_t have = up_read_off(t);
    uint64_t n = have - t->up.sent;

    if (n > t->route->pol.batch_max)
        n = t->route->pol.batch_max;
    int fin = t->up.eof && !t->up.fin_sent && !t->up.done && t->up.sent + n == have;
    struct rhc_req *r = bpush_new(t, t->up.sent, t->up.sent + n, fin, 0);
    if (!r) {
        t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
        return -1;
    }
    t->rq.bpush[t->rq.nbpush++] = r;
    t->up.sent += n;
    if (!t->push.ack_wait_since)
        t->push.ack_wait_since = rh_now_ms();
    if (fin) {
        t->up.fin_sent = 1;
        t_log(t, 1, "local EOF after %" PRIu64 " bytes: sent F", have);
    }
    return 0;
}

void bpush_forget(rhc_tunnel *t, struct rhc_req *r)
{
    for (int i = 0; i < t->rq.nbpush; ++i)
        if (t->rq.bpush[i] == r) {
            t->rq.bpush[i] = t->rq.bpush[--t->rq.nbpush];
            t->rq.bpush[t->rq.nbpush] = NULL;
            break;
        }
    req_free(r);
}

/* 413 from an intermediary with a small body limit: pushes get bodies of the
 * size rhc_split_size found (this one too); the rest goes in a push of its own. */
static int bpush_split(rhc_tunnel *t, struct rhc_req *r, size_t half)
{

    if (t->route->pol.batch_max > half) {
        t->route->pol.batch_max = half;
        t_log(t, 1, "push: HTTP 413 (an intermediary limits request bodies): pushes now "
              "carry at most %zu bytes", half);
    }
    struct rhc_req *rest = bpush_new(t, r->p_off + half, r->p_end, r->p_fin, 0);
    if (!rest) {
        t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
        return -1;
    }
    t->rq.bpush[t->rq.nbpush++] = rest;
    r->p_end = r->p_off + half;
    r->p_fin = 0;
    return 0;
}

/* The push goes again from o->from after o->delay: it waits out of the multi,
 * t_timers sends it. */
static void bpush_again(rhc_tunnel *t, struct rhc_req *r, const struct rhc_outcome *o,
                        const char *line)
{
    if (r->hdr_done && r->status == 409)
        t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": HTTP 409 (%s), again from %" PRIu64
              " in %" PRId64 " ms", r->p_off, r->p_end, line, o->from, o->delay);
    rhc_gate_forget(r);
    curl_multi_remove_handle(t->ctx->multi, r->h);
    r->p_off = o->from;
    ++r->tries;
    r->retry_at = rh_now_ms() + o->delay;
    if (r->retry_at == 0)
        r->retry_at = 1;
}

/* Confirmed (or the server had it already): forgotten. */
static void bpush_confirmed(rhc_tunnel *t, struct rhc_req *r, const struct rhc_outcome *o)
{
    if (o->why == RHC_WHY_HAD_IT)
        t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": the server had it already", r->p_off,
              r->p_end);
    if (r->p_fin) {
        t->up.done = 1;
        t_log(t, 2, "push with F confirmed at %" PRIu64, r->p_end);
    }
    bpush_forget(t, r);
}

static void bpush_lost(rhc_tunnel *t, struct rhc_req *r, CURLcode rc,
                       const struct rhc_outcome *o, const char *line)
{
    if (o->why == RHC_WHY_PROTO)
        t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
               " up bytes of %" PRIu64, o->from, up_read_off(t));
    else if (o->why == RHC_WHY_SHORT)
        t_fail(t, RHC_EXIT_LOST, "push: the server took %" PRIu64 " of the up bytes %"
               PRIu64 "..%" PRIu64, o->from, r->p_off, r->p_end);
    else
        t_fail(t, RHC_EXIT_LOST, "push %" PRIu64 "..%" PRIu64 ": refused or cut %u times "
               "(last: %s)", r->p_off, r->p_end, r->tries + 1,
               r->hdr_done ? line : req_error(r, rc));
}

/* What comes before a retry: the log line of a cut, a split. */
static int bpush_before_retry(rhc_tunnel *t, struct rhc_req *r, CURLcode rc,
                              const struct rhc_outcome *o, const char *line)
{
    if (o->why == RHC_WHY_CUT_ON_WAY || o->why == RHC_WHY_CUT || o->why == RHC_WHY_GATEWAY)
        stat_resume(t);
    if (o->why == RHC_WHY_CUT_ON_WAY)
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": cut on the way (%s); sending it again",
              r->p_off, r->p_end, line);
    else if (o->why == RHC_WHY_CUT || o->why == RHC_WHY_GATEWAY)
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": %s; sending it again", r->p_off, r->p_end,
              req_error(r, rc));
    return o->split ? bpush_split(t, r, o->split) : 0;
}

void bpush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_facts f;
    struct rhc_outcome o;
    char line[BODY_MAX + 1];

    if (t->end.code)
        return;
    body_line(r, line, sizeof(line));
    rhc_facts_of(t, r->tries + 1, &f);
    rhc_classify_bpush(r, rc, &f, &o);
    if (o.v != RHC_OUT_LOST || o.why == RHC_WHY_TOO_MANY)
        up_ack(t, o.ack);   /* what the answer confirms counts, whatever comes next */
    if ((o.v == RHC_OUT_RETRY || o.why == RHC_WHY_TOO_MANY) &&
        bpush_before_retry(t, r, rc, &o, line) < 0)
        return;
    switch (o.v) {
    case RHC_OUT_OK:
        bpush_confirmed(t, r, &o);
        return;
    case RHC_OUT_RETRY:
        bpush_again(t, r, &o, line);
        return;
    case RHC_OUT_LOST:
        bpush_lost(t, r, rc, &o, line);
        return;
    case RHC_OUT_FAIL_HTTP:
        fail_http(t, r, "push");
        return;
    default:
        fail_curl(t, r, rc, "push");
    }
}

/* Batch pushes whose retry time came go again, as new requests. */
void bpush_resend_due(rhc_tunnel *t, int64_t now)
{
    for (int i = 0; i < t->rq.nbpush && !t->end.code; ++i) {
        struct rhc_req *r = t->rq.bpush[i];
        if (!r->retry_at || now < r->retry_at)
            continue;
        /* bytes the server confirmed meanwhile (by later pushes) need not go again */
        uint64_t from = r->p_off > t->up.acked ? r->p_off : t->up.acked;
        if (from >= r->p_end && !r->p_fin) {
            bpush_forget(t, r);
            --i;
            continue;
        }
        if (from > r->p_end)
            from = r->p_end;
        struct rhc_req *n = bpush_new(t, from, r->p_end, r->p_fin, r->tries);
        if (!n) {
            t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
            break;
        }
        t->rq.bpush[i] = n;
        req_free(r);
    }
}

/* A push whose data bytes the server confirmed (an A frame of a pull, the
 * answer of a later push) while its own answer has not come: that answer
 * normally follows within a round trip. One still away UP_DEAD_MS later is held
 * by the path (a proxy that stalls the connection, a black hole): the push is
 * given up, which frees its slot. Before, BATCH_INFLIGHT such pushes stopped
 * the up direction until their connections died (never, behind a proxy that
 * holds them), and up_dead never gave them up: every byte sent was confirmed.
 * A push with F waits for its answer: only that confirms the F. */
void bpush_drop_held(rhc_tunnel *t, int64_t now)
{
    for (int i = 0; i < t->rq.nbpush; ++i) {
        struct rhc_req *r = t->rq.bpush[i];
        if (r->retry_at || r->p_fin || r->p_end > t->up.acked)
            continue;
        if (!r->conf_at)
            r->conf_at = now;
        if (now - r->conf_at < UP_DEAD_MS)
            continue;
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": confirmed %" PRId64 " ms ago, its answer "
              "never came: given up (its slot goes to the next push)", r->p_off, r->p_end,
              now - r->conf_at);
        bpush_forget(t, r);
        --i;
    }
}
