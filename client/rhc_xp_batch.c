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
#include "rhc_tunnel_int.h"

/* A complete push of the up bytes [off, end), with F when fin: the frames are
 * copied from the ring, so the ring may move on while curl sends them. */
struct rhc_req *bpush_new(rhc_tunnel *t, uint64_t off, uint64_t end, int fin,
                          unsigned tries)
{
    struct rhc_req *r = req_new(t->ctx, t, REQ_PUSH, t->token);
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

    if (n > t->ctx->pol.batch_max)
        n = t->ctx->pol.batch_max;
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

void bpush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    int64_t delay = -1;
    uint64_t from = r->p_off;
    char line[BODY_MAX + 1];

    if (t->end.code)
        return;
    body_line(r, line, sizeof(line));
    if (r->hdr_done && r->have_offset && r->offset > up_read_off(t)) {
        t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
               " up bytes of %" PRIu64, r->offset, up_read_off(t));
        return;
    }
    if (r->hdr_done && r->status == 200) {
        uint64_t x = r->have_offset ? r->offset : r->p_end;
        if (x < r->p_end) {
            t_fail(t, RHC_EXIT_LOST, "push: the server took %" PRIu64 " of the up bytes %"
                   PRIu64 "..%" PRIu64, x, r->p_off, r->p_end);
            return;
        }
        up_ack(t, x);
    } else if (r->hdr_done && r->status == 409 && r->have_offset) {
        /* The server has up bytes up to x. A push that reached it before
         * (curl's own retry of a request it thinks was lost, say) is done; a
         * push it only had in part goes again from there; a push whose turn
         * had not come (or came too early) goes again after a while. */
        uint64_t x = r->offset;
        up_ack(t, x);
        if (x >= r->p_end && (!r->p_fin || !strcmp(r->reason, RH_REASON_TOKEN_FIN))) {
            t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": the server had it already", r->p_off,
                  r->p_end);
        } else if (x > r->p_off) {
            from = x < r->p_end ? x : r->p_end;
            delay = 0;
        } else {
            delay = backoff_ms(r->tries);
        }
    } else if (r->hdr_done && (r->status == 409 || busy_status(r->status))) {
        delay = backoff_ms(r->tries);   /* 503/429: busy, or at this client's share */
    } else if (r->hdr_done && r->status == 400 && r->have_offset) {
        /* the body was cut on the way (the server says how far it got) */
        up_ack(t, r->offset);
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": cut on the way (%s); sending it again",
              r->p_off, r->p_end, line);
        delay = backoff_ms(r->tries);
    } else if (r->hdr_done && r->status == 413 && r->p_end - r->p_off > BATCH_DATA_MIN &&
               t->rq.nbpush >= BATCH_SLOTS) {
        delay = backoff_ms(r->tries);   /* split when a slot is free: pushes are smaller now */
    } else if (r->hdr_done && r->status == 413 && r->p_end - r->p_off > BATCH_DATA_MIN) {
        /* an intermediary with a small body limit: pushes get bodies of the
         * largest power of two below this one's (limits are 1m, 2m...: nginx's
         * default takes 1 MiB bodies, not half of whatever failed), this one too
         * (the rest goes in a push of its own) */
        rhc_ctx *c = t->ctx;
        size_t body = 1, data = (size_t)(r->p_end - r->p_off);
        while (body * 2 < r->p_len)
            body *= 2;
        size_t half = DATA_IN_BODY(body);
        if (half >= data)
            half = (data + 1) / 2;
        if (half < BATCH_DATA_MIN)
            half = BATCH_DATA_MIN;
        if (c->pol.batch_max > half) {
            c->pol.batch_max = half;
            t_log(t, 1, "push: HTTP 413 (an intermediary limits request bodies): pushes now "
                  "carry at most %zu bytes", half);
        }
        struct rhc_req *rest = bpush_new(t, r->p_off + half, r->p_end, r->p_fin, 0);
        if (!rest) {
            t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
            return;
        }
        t->rq.bpush[t->rq.nbpush++] = rest;
        r->p_end = r->p_off + half;
        r->p_fin = 0;
        delay = 0;
    } else if (!r->hdr_done && cut_before_answer(rc)) {
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": %s; sending it again", r->p_off, r->p_end,
              req_error(r, rc));
        delay = backoff_ms(r->tries);
    } else if (r->hdr_done) {
        fail_http(t, r, "push");
        return;
    } else {
        fail_curl(t, r, rc, "push");
        return;
    }
    if (delay < 0) {
        if (r->p_fin) {
            t->up.done = 1;
            t_log(t, 2, "push with F confirmed at %" PRIu64, r->p_end);
        }
        bpush_forget(t, r);
        return;
    }
    if (from < t->up.acked)
        from = t->up.acked < r->p_end ? t->up.acked : r->p_end;
    if (r->hdr_done ? r->tries + 1 >= RETRY_MAX : !retry_ok(t, r->tries + 1)) {
        t_fail(t, RHC_EXIT_LOST, "push %" PRIu64 "..%" PRIu64 ": refused or cut %u times "
               "(last: %s)", r->p_off, r->p_end, r->tries + 1,
               r->hdr_done ? line : req_error(r, rc));
        return;
    }
    if (r->hdr_done && r->status == 409)
        t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": HTTP 409 (%s), again from %" PRIu64
              " in %" PRId64 " ms", r->p_off, r->p_end, line, from, delay);
    /* It waits out of the multi; t_timers sends it again. */
    curl_multi_remove_handle(t->ctx->multi, r->h);
    r->p_off = from;
    ++r->tries;
    r->retry_at = rh_now_ms() + delay;
    if (r->retry_at == 0)
        r->retry_at = 1;
}
