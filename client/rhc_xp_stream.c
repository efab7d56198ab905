/* relay-https client: the stream push: one streamed body that stays open;
 * when it ends (by us or the server) its answer says where the next one starts. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_outcome.h"
#include "rhc_tunnel_int.h"

/* A stream push from off, its body ending at a data offset fixed now, so that
 * the next one can be asked for before it ends (spush_ahead). Over HTTP/1.1
 * for auto and for duplex (whose bulk uploads leave HTTP/2 for it:
 * duplex_split) unless an HTTP version was asked for. */
struct rhc_req *spush_new(rhc_tunnel *t, uint64_t off)
{
    const struct rhc_opts *o = t->route->o;
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_PUSH, t->token);

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, off) < 0 || req_streamed_body(r) < 0) {
        req_free(r);
        return NULL;
    }
    r->p_off = off;
    r->p_end = off + SPUSH_DATA(t->route->pol.spush_max);
    /* A pooled keep-alive connection may be closing just as we reuse it (a
     * busy Apache drops idle ones); curl then resends the request, and a
     * streamed body that has gone out in part would go again. A new
     * connection has no such race. */
    curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (o->transport == RHC_XP_DUPLEX && !o->http_version)
        curl_easy_setopt(r->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    else
        req_stream_http1(r, o);
    if (req_go(r) < 0) {
        req_free(r);
        return NULL;
    }
    return r;
}

int start_spush(rhc_tunnel *t)
{
    struct rhc_req *r = spush_new(t, t->up.sent);

    if (!r) {
        t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
        return -1;
    }
    t->rq.spush = r;
    t->push.spush_at = 0;
    t->push.last_emit = rh_now_ms();
    t->push.ack_wait_since = 0;
    t_log(t, 2, "stream push from offset %" PRIu64, t->up.sent);
    return 0;
}

/* How far before its end a body gets its successor asked for: what the body
 * confirms in SPUSH_LEAD_RTTS round trips (a new connection's TCP and TLS
 * handshakes, the request's way to the core), at least a MiB, at most what
 * may be in flight. A slow tunnel so holds the extra request only briefly. */
static uint64_t spush_lead(const rhc_tunnel *t, const struct rhc_req *r, int64_t now)
{
    int64_t ms = now - r->started, rtt = t->sess.rtt_ms > 0 ? t->sess.rtt_ms : 1;
    uint64_t done = t->up.acked > r->p_off ? t->up.acked - r->p_off : 0;
    uint64_t lead = ms > 0 ? done / (uint64_t)ms * (uint64_t)(SPUSH_LEAD_RTTS * rtt + 10) : 0;

    return lead < (1u << 20) ? (1u << 20) : lead > UPBUF_MAX ? UPBUF_MAX : lead;
}

/* A busy body near its end: the next push is asked for now, from the body's
 * end. The server keeps it waiting, unread, until this body is complete (as
 * pipelined batch pushes), so the first bytes after the end need no new
 * connection and no answer first: with a round trip of 40 ms, ending a body
 * and then starting the next stopped the up direction for 85 ms each
 * 256 MiB (docs/BENCHMARKS.md, item 17). */
void spush_ahead(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *r = t->rq.spush;

    if (!r || t->rq.spush_next || t->rq.spush_prev || t->xp.up != RHC_XP_STREAM ||
        r->end_wanted || r->body_ended || r->p_fin || r->p_r || !r->acked_any ||
        t->xp.switching || t->xp.up_hold || t->up.eof || t->end.code || t->push.r_pending ||
        t->push.ahead_skip == r->p_end)
        return;
    if (r->p_end - t->up.sent > spush_lead(t, r, now) || r->p_end - t->up.acked > SPUSH_AHEAD_MAX)
        return;
    t->rq.spush_next = spush_new(t, r->p_end);
    if (!t->rq.spush_next)
        t->push.ahead_skip = r->p_end;     /* the usual way then: after the answer */
    else
        t_log(t, 2, "stream push from offset %" PRIu64 " asked for ahead", r->p_end);
}

/* r's body ended (in its read callback). If it ended at its data end, the
 * push asked for ahead carries on from there and r waits for its answer; its
 * read callback is unpaused by up_kick. Otherwise the next one is dropped
 * when r's answer comes. */
void spush_rotate(rhc_tunnel *t, struct rhc_req *r)
{
    struct rhc_req *n = t->rq.spush_next;

    if (!n || r != t->rq.spush || r->p_fin || r->p_r || r->parking || t->xp.switching ||
        t->up.sent != r->p_end || n->p_off != r->p_end)
        return;
    t->rq.spush_prev = r;
    t->rq.spush = n;
    t->rq.spush_next = NULL;
}

/* The push asked for ahead ended before its turn (refused, too far ahead for
 * an older server, busy, cut): it sent no byte. Its successor goes the usual
 * way, after the current body's answer. */
static void spush_next_gone(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_req *d = t->rq.duplex;

    t->rq.spush_next = NULL;
    if (d && d->split_at == r->p_off && !d->body_ended) {
        /* it was to take a duplex's upload over: the duplex goes on with it */
        d->split_at = 0;
        t->xp.split_again_at = rh_now_ms() + SPLIT_AGAIN_MS;
        unpause_send(d);
    }
    t->xp.split_early = 0;
    t->push.ahead_skip = r->p_off;
    if (r->hdr_done)
        t_log(t, 2, "stream push asked for ahead at %" PRIu64 ": HTTP %ld", r->p_off, r->status);
    else
        t_log(t, 2, "stream push asked for ahead at %" PRIu64 ": %s", r->p_off, req_error(r, rc));
    req_free(r);
}

/* The answer of a body that ended at its data end while the next push went
 * on. When the server has all of it, or a push other than the next one took
 * over already, that is all (1). Else the next push can never start on the server (it waits for
 * bytes that will not come): it is dropped, and r is answered as the
 * tunnel's push (0): the bytes go again from what the server has. */
static int spush_prev_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_req *cur = t->rq.spush;
    /* 200 at its end; or 409: the next push came while this one's end was still
     * on its way and took it over, which the core allows only once it has
     * every byte of this one (a retry of ours would not be in flight now) */
    int whole = (r->hdr_done && r->status == 200 && r->have_offset && r->offset >= r->p_end) ||
                (r->hdr_done && r->status == 409) || t->up.acked >= r->p_end;

    t->rq.spush_prev = NULL;
    if (whole)
        up_ack(t, r->p_end);
    if (whole || !cur || cur->p_off != r->p_end || t->end.code || t->push.r_sent) {
        req_free(r);
        return 1;
    }
    t_log(t, 1, "push: the body that ended at %" PRIu64 " did not get through whole; its "
          "successor goes again from what the server has", r->p_end);
    req_free(cur);
    t->rq.spush = r;
    return 0;
}

/* 200: the body ended; the server has the bytes below o->from. */
static void spush_ended(rhc_tunnel *t, const struct rhc_outcome *o)
{
    up_ack(t, o->from);
    if (o->v == RHC_OUT_DONE) {
        t->up.done = 1;
        t->push.retries = 0;
        return;
    }
    if (up_rewind(t, o->from, "push ended") < 0)
        return;
    if (o->why == RHC_WHY_PARK) {
        t->push.parked = 1;    /* up_kick starts the next one */
        t->push.park_keep_at = rh_now_ms() + alive_every(t);
        t_log(t, 2, "stream push ended: idle for %ld ms", t->route->o->park_ms);
    } else if (o->why == RHC_WHY_ENDED) {
        t_log(t, 2, "stream push ended at %" PRIu64 ": pushes go on as batch", o->from);
    }
}

/* Shorter bodies from now on: below half of what this one carried through.
 * The limit lies between what the server confirmed of this push and what we
 * sent; the 413 may come late (a loaded server), long after the limit, so the
 * confirmed part is the measure when there is one. */
static void spush_shrink(rhc_tunnel *t, const struct rhc_req *r, uint64_t ack)
{
    uint64_t passed = ack > r->p_off && ack - r->p_off < r->emitted ? ack - r->p_off
                                                                     : r->emitted;
    uint64_t cap = passed / 2;

    if (cap < SPUSH_BODY_MIN)
        cap = SPUSH_BODY_MIN;
    if (cap < t->route->pol.spush_max)
        t->route->pol.spush_max = cap;
    t_log(t, 1, "push: HTTP 413 after %" PRIu64 " body bytes: stream pushes now end "
          "after %" PRIu64 "; going on from offset %" PRIu64, r->emitted,
          t->route->pol.spush_max, t->up.acked);
}

/* Refused or cut: the up bytes go again from what the server has. Returns
 * the delay before the next push, or -1. */
static int64_t spush_again(rhc_tunnel *t, const struct rhc_req *r, CURLcode rc,
                           const struct rhc_outcome *o)
{
    char line[BODY_MAX + 1], why[BODY_MAX + 32];
    const char *what = "push cut";
    int64_t delay = -1;

    body_line(r, line, sizeof(line));
    up_ack(t, o->ack);
    if (o->why == RHC_WHY_TOO_LONG) {
        spush_shrink(t, r, t->up.acked);   /* what A frames confirmed counts too */
        what = "push too long";
    } else if (o->why == RHC_WHY_BUSY) {
        /* busy (503) or at this client's share (429): nothing of this push
         * counted beyond what the server confirmed */
        what = busy_why(r, why, sizeof(why));
    } else if (o->why == RHC_WHY_REFUSED) {
        what = "push refused";
    } else if (o->why == RHC_WHY_CUT_ON_WAY) {
        /* the body was cut on the way; the server says how far it got */
        t_log(t, 1, "push: cut on the way (%s); going on from offset %" PRIu64
              " on a new connection", line, t->up.acked);
        what = "push cut on the way";
        stat_resume(t);
    } else {
        /* cut (by a gateway too): nothing is sure beyond what the server confirmed */
        t_log(t, 1, "push: %s; going on from offset %" PRIu64 " on a new connection",
              req_error(r, rc), t->up.acked);
        stat_resume(t);
    }
    if (up_rewind(t, o->from, what) == 0)
        delay = o->delay;
    ++t->push.retries;
    if (o->why == RHC_WHY_REFUSED)
        t_log(t, 2, "push: HTTP 409 (%s): going on from %" PRIu64, line, t->up.sent);
    return delay;
}

/* auto: an intermediary that refuses long bodies passed nothing on, so the kept
 * bytes go again, in batch pushes. */
static void spush_to_batch(rhc_tunnel *t, const struct rhc_req *r, CURLcode rc)
{
    char why[320];

    if (r->hdr_done)
        snprintf(why, sizeof(why), "HTTP %ld on a streamed push: an intermediary refuses "
                 "long request bodies", r->status);
    else
        snprintf(why, sizeof(why), "streamed pushes cut before a byte was confirmed: %s",
                 req_error(r, rc));
    fallback_up(t, why);
    up_rewind(t, t->up.acked, "streamed push refused");
}

/* Acts on what rhc_classify_spush made of the answer. */
static int64_t spush_act(rhc_tunnel *t, struct rhc_req *r, CURLcode rc,
                         const struct rhc_outcome *o)
{
    switch (o->v) {
    case RHC_OUT_OK:
    case RHC_OUT_DONE:
        if (o->why == RHC_WHY_FIN_HAD) {
            up_ack(t, o->ack);
            t->up.done = 1;     /* an earlier push had it all, F included */
            return -1;
        }
        spush_ended(t, o);
        return t->up.done ? -1 : o->delay;
    case RHC_OUT_REWIND:
        return spush_again(t, r, rc, o);
    case RHC_OUT_FALLBACK:
        spush_to_batch(t, r, rc);
        return -1;
    case RHC_OUT_LOST:
        t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
               " up bytes of %" PRIu64, o->from, up_read_off(t));
        return -1;
    case RHC_OUT_FAIL_HTTP:
        fail_http(t, r, "push");
        return -1;
    default:
        fail_curl(t, r, rc, "push");
        return -1;
    }
}

void spush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_facts f;
    struct rhc_outcome o;

    ack_push_done(t, r, rc);

    if (r == t->rq.spush_next) {
        spush_next_gone(t, r, rc);
        return;
    }
    if (r == t->rq.spush_prev && spush_prev_done(t, r, rc))
        return;
    t->end.linger_until = 0;        /* nothing more can go out on this push */
    if (t->push.r_sent) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;     /* the server got our R */
        return;
    }
    if (t->end.code)
        return;
    t->rq.spush = NULL;
    if (t->rq.spush_next) {     /* it was to follow this body: the usual way now */
        req_free(t->rq.spush_next);
        t->rq.spush_next = NULL;
    }
    if (r->end_wanted)
        t->xp.switching = 0;
    rhc_facts_of(t, t->push.retries, &f);
    rhc_classify_spush(r, rc, &f, &o);
    int64_t delay = spush_act(t, r, rc, &o);
    req_free(r);
    if (delay >= 0)
        up_restart(t, delay);
}
