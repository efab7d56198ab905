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

int start_spush(rhc_tunnel *t)
{
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_PUSH, t->token);

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    /* A pooled keep-alive connection may be closing just as we reuse it (a
     * busy Apache drops idle ones); curl then resends the request, and a
     * streamed body that has gone out in part would go again. A new
     * connection has no such race. */
    curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    req_stream_http1(r, t->route->o);
    if (req_go(r) < 0)
        goto fail;
    t->rq.spush = r;
    t->push.spush_at = 0;
    t->push.last_emit = rh_now_ms();
    t->push.ack_wait_since = 0;
    t_log(t, 2, "stream push from offset %" PRIu64, t->up.sent);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
    return -1;
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
        spush_shrink(t, r, o->ack);
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
        /* cut: nothing is sure beyond what the server confirmed */
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

    t->end.linger_until = 0;        /* nothing more can go out on this push */
    if (t->push.r_sent) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;     /* the server got our R */
        return;
    }
    if (t->end.code)
        return;
    t->rq.spush = NULL;
    if (r->end_wanted)
        t->xp.switching = 0;
    rhc_facts_of(t, t->push.retries, &f);
    rhc_classify_spush(r, rc, &f, &o);
    int64_t delay = spush_act(t, r, rc, &o);
    req_free(r);
    if (delay >= 0)
        up_restart(t, delay);
}
