/* relay-https client: duplex: one request whose body is the up frame stream
 * and whose response is the down frame stream (HTTP/2 end to end). */
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

/* One request for both directions. It starts where the server surely is: up
 * bytes from the last confirmed offset (the server refuses, with its offset,
 * what it already has). */
int start_duplex(rhc_tunnel *t)
{
    if (up_rewind(t, t->up.acked, "duplex") < 0)
        return -1;

    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_DUPLEX, t->token);
    int64_t now = rh_now_ms();

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    if (down_req_go(t, r, now) < 0)
        goto fail;
    t->rq.duplex = r;
    t->push.last_emit = now;
    t->push.ack_wait_since = 0;
    t->xp.probe_until = t->xp.autox ? now + PROBE_FIRST_MS : 0;
    ++t->down.pulls;
    t_log(t, 2, "duplex from up offset %" PRIu64 ", down offset %" PRIu64, t->up.sent,
          t->down.off);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "duplex: cannot start a request (out of memory)");
    return -1;
}

/* A server or path without duplex: nothing of this request counted. */
static void duplex_refused(rhc_tunnel *t, struct rhc_req *r, int up_on_it)
{
    char line[BODY_MAX + 1], why[300];

    body_line(r, line, sizeof(line));
    snprintf(why, sizeof(why), "the server answered duplex with HTTP %ld%s%s", r->status,
             line[0] ? ": " : "", line);
    t_log(t, 1, "transport: duplex -> stream (%s)", why);
    if (t->xp.autox) {
        rhc_policy_note(&t->route->pol, 0, RHC_XP_STREAM, why);
        rhc_policy_note(&t->route->pol, 1, RHC_XP_STREAM, why);
    }
    t->rq.duplex = NULL;
    req_free(r);
    t->xp.down = RHC_XP_STREAM;
    if (up_on_it) {
        t->xp.up = RHC_XP_STREAM;
        if (up_rewind(t, t->up.acked, "duplex refused") < 0)
            return;
    }
    if (start_pull(t) == 0 && up_on_it)
        start_spush(t);
}

/* Another duplex later: busy, refused, cut before the answer or in the middle;
 * up bytes it carried go again from what the server confirmed. */
static void duplex_again(rhc_tunnel *t, struct rhc_req *r, CURLcode rc,
                         const struct rhc_outcome *o, int up_on_it)
{
    char line[BODY_MAX + 1], why[BODY_MAX + 32];

    switch (o->why) {
    case RHC_WHY_BUSY:
        busy_why(r, why, sizeof(why));
        if (up_on_it && up_rewind(t, t->up.acked, why) < 0)
            return;
        down_busy_again(t, r, why);
        return;
    case RHC_WHY_REFUSED:
        body_line(r, line, sizeof(line));
        up_ack(t, o->ack);
        down_again(t, r, line[0] ? line : "HTTP 409");
        return;
    case RHC_WHY_CUT:
        t_log(t, 1, "duplex: %s; trying again on a new connection", req_error(r, rc));
        t->down.fresh = 1;
        stat_resume(t);
        down_again(t, r, req_error(r, rc));
        return;
    default:
        /* cut (by a gateway too): both directions go on from what the server
         * confirmed / we got */
        t_log(t, 1, "duplex: %s; resuming on a new connection",
              o->why == RHC_WHY_GATEWAY || rc != CURLE_OK ? req_error(r, rc)
              : "response ended early");
        if (up_on_it && up_rewind(t, t->up.acked, "duplex cut") < 0)
            return;
        t->down.fresh = 1;
        stat_resume(t);
        down_again(t, r, "cut");
    }
}

/* Complete: the server has read the whole body (it answers to the end only
 * then), so a body with F means the up direction is done. */
static void duplex_ended(rhc_tunnel *t, struct rhc_req *r, int up_on_it)
{
    t->down.retries = 0;
    t->rq.duplex = NULL;
    if (r->end_wanted && t->xp.switching)
        t->xp.switching = 0;
    if (up_on_it && r->p_fin)
        t->up.done = 1;
    req_free(r);
    if (up_on_it && !t->up.done && t->down.fin) {
        /* down is over, up is not: a stream push carries the rest */
        t->xp.up = RHC_XP_STREAM;
        if (up_rewind(t, t->up.acked, "duplex ended") == 0)
            start_spush(t);
        return;
    }
    if (up_on_it && !t->up.done)
        up_rewind(t, t->up.acked, "duplex ended");
    start_down(t);
}

void duplex_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_facts f;
    struct rhc_outcome o;

    t->end.linger_until = 0;
    if (t->push.r_sent && r->p_r) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;
        return;
    }
    if (t->end.code)
        return;
    rhc_facts_of(t, t->down.retries, &f);
    rhc_classify_duplex(r, rc, &f, &o);
    /* A stream reset with no answer while the connection lives: the server
     * refused the request. mod_http2 resets a duplex its handler refused before
     * reading the body (410 for a session a restarted relay core no longer
     * has) without sending the answer; a few in a row mean just that. */
    if (o.h2_reset)
        ++t->sess.h2_resets;
    switch (o.v) {
    case RHC_OUT_FALLBACK:
        duplex_refused(t, r, f.up_on_it);
        return;
    case RHC_OUT_RETRY:
        duplex_again(t, r, rc, &o, f.up_on_it);
        return;
    case RHC_OUT_LOST:
        if (o.why == RHC_WHY_H2_RESETS)
            t_fail(t, RHC_EXIT_LOST, "duplex: the server no longer knows this session (it "
                   "restarted?): it reset the stream %u times in a row without an answer",
                   t->sess.h2_resets);
        else
            t_fail(t, RHC_EXIT_LOST, "duplex: response ended without F or E (connection cut?)");
        return;
    case RHC_OUT_FAIL_HTTP:
        fail_http(t, r, "duplex");
        return;
    case RHC_OUT_FAIL_CURL:
        fail_curl(t, r, rc, "duplex");
        return;
    default:
        duplex_ended(t, r, f.up_on_it);
    }
}
