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
#include "rhc_tunnel_int.h"

int start_spush(rhc_tunnel *t)
{
    struct rhc_req *r = req_new(t->ctx, t, REQ_PUSH, t->token);

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    /* A pooled keep-alive connection may be closing just as we reuse it (a
     * busy Apache drops idle ones); curl then resends the request, and a
     * streamed body that has gone out in part would go again. A new
     * connection has no such race. */
    curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
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

void spush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    int64_t delay = -1;

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
    if (r->hdr_done && r->status == 200) {
        uint64_t x = r->have_offset ? r->offset : t->up.sent;
        if (x > up_read_off(t)) {
            t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
                   " up bytes of %" PRIu64, x, up_read_off(t));
        } else {
            up_ack(t, x);
            if (r->p_fin && x == up_read_off(t)) {
                t->up.done = 1;
                t->push.retries = 0;
            } else if (up_rewind(t, x, "push ended") == 0) {
                if (r->parking && x == t->up.sent) {
                    t->push.parked = 1;    /* up_kick starts the next one */
                    t->push.park_keep_at = rh_now_ms() + alive_every(t);
                    t_log(t, 2, "stream push ended: idle for %ld ms", t->ctx->o->park_ms);
                } else if (r->refresh || r->parking)
                    delay = 0;  /* the ring is free again: a new push goes on */
                else if (r->end_wanted)
                    t_log(t, 2, "stream push ended at %" PRIu64 ": pushes go on as batch", x);
                else
                    delay = 0;  /* the server ended it early: a new one goes on */
            }
        }
    } else if (t->xp.autox && !r->acked_any &&
               ((r->hdr_done && r->status == 413) ||
                (!r->hdr_done && rc != CURLE_OK && transient(rc) && t->push.retries >= 1))) {
        /* An intermediary that refuses long bodies (nginx: client_max_body_size)
         * answers 413, or cuts the connection while the body goes. It passed
         * nothing on, so the kept bytes go again, in batch pushes. */
        char why[320];
        if (r->hdr_done)
            snprintf(why, sizeof(why), "HTTP %ld on a streamed push: an intermediary refuses "
                     "long request bodies", r->status);
        else
            snprintf(why, sizeof(why), "streamed pushes cut before a byte was confirmed: %s",
                     req_error(r, rc));
        fallback_up(t, why);
        up_rewind(t, t->up.acked, "streamed push refused");
    } else if (r->hdr_done && r->status == 413 && r->acked_any && t->sess.resume &&
               retry_ok(t, t->push.retries)) {
        /* Bytes went through, then the body grew beyond a limit on the way (an
         * intermediary's, or LimitRequestBody): later pushes stay below half of
         * what this one carried, and this one goes on from what was confirmed. */
        uint64_t cap = r->emitted / 2;
        if (cap < SPUSH_BODY_MIN)
            cap = SPUSH_BODY_MIN;
        if (cap < t->ctx->pol.spush_max)
            t->ctx->pol.spush_max = cap;
        t_log(t, 1, "push: HTTP 413 after %" PRIu64 " body bytes: stream pushes now end "
              "after %" PRIu64 "; going on from offset %" PRIu64, r->emitted,
              t->ctx->pol.spush_max, t->up.acked);
        if (up_rewind(t, t->up.acked, "push too long") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && busy_status(r->status) && t->push.retries < RETRY_MAX) {
        /* busy (503) or at this client's share (429): nothing of this push
         * counted beyond what the server confirmed */
        char why[BODY_MAX + 32];
        if (up_rewind(t, t->up.acked, busy_why(r, why, sizeof(why))) == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && r->status == 409 && t->push.retries < RETRY_MAX) {
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        uint64_t x = r->have_offset ? r->offset : t->up.acked;
        if (x > up_read_off(t)) {
            t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
                   " up bytes of %" PRIu64, x, up_read_off(t));
        } else if (!strcmp(r->reason, RH_REASON_TOKEN_FIN) && t->up.eof && x == up_read_off(t)) {
            up_ack(t, x);
            t->up.done = 1;     /* an earlier push had it all, F included */
        } else {
            up_ack(t, x);
            if (up_rewind(t, x > t->up.acked ? x : t->up.acked, "push refused") == 0)
                delay = x > r->p_off ? 0 : backoff_ms(t->push.retries);
            ++t->push.retries;
            t_log(t, 2, "push: HTTP 409 (%s): going on from %" PRIu64, line, t->up.sent);
        }
    } else if (r->hdr_done && r->status == 400 && r->have_offset &&
               retry_ok(t, t->push.retries)) {
        /* the body was cut on the way; the server says how far it got */
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        if (r->offset <= up_read_off(t))
            up_ack(t, r->offset);
        t_log(t, 1, "push: cut on the way (%s); going on from offset %" PRIu64
              " on a new connection", line, t->up.acked);
        if (up_rewind(t, t->up.acked, "push cut on the way") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (!r->hdr_done && cut_before_answer(rc) && retry_ok(t, t->push.retries)) {
        /* Cut: nothing is sure beyond what the server confirmed. */
        t_log(t, 1, "push: %s; going on from offset %" PRIu64 " on a new connection",
              req_error(r, rc), t->up.acked);
        if (up_rewind(t, t->up.acked, "push cut") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && r->status != 200) {
        fail_http(t, r, "push");
    } else {
        fail_curl(t, r, rc, "push");
    }
    req_free(r);
    if (delay >= 0)
        up_restart(t, delay);
}
