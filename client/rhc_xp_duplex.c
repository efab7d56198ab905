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
#include "rhc_tunnel_int.h"

/* One request for both directions. It starts where the server surely is: up
 * bytes from the last confirmed offset (the server refuses, with its offset,
 * what it already has). */
int start_duplex(rhc_tunnel *t)
{
    if (up_rewind(t, t->up.acked, "duplex") < 0)
        return -1;

    struct rhc_req *r = req_new(t->ctx, t, REQ_DUPLEX, t->token);
    int64_t now = rh_now_ms();

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    rh_frame_parser_init(&r->parser);
    curl_easy_setopt(r->h, CURLOPT_BUFFERSIZE, PULL_BUFFERSIZE);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_write);
    if (t->down.fresh)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t->rq.duplex = r;
    t->down.repull_at = 0;
    t->down.last_rx = now;
    t->ack.sent = t->ack.conf = t->down.off;   /* Relay-Ack */
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

void duplex_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    rhc_ctx *c = t->ctx;
    int up_on_it = t->xp.up == RHC_XP_DUPLEX;
    char line[BODY_MAX + 1];

    t->end.linger_until = 0;
    if (t->push.r_sent && r->p_r) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;
        return;
    }
    if (t->end.code)
        return;
    body_line(r, line, sizeof(line));
    if (r->hdr_done && (r->status == 501 || r->status == 404 || r->status == 405) &&
        !r->got_frame) {
        /* A server or path without duplex: nothing of this request counted. */
        char why[300];
        snprintf(why, sizeof(why), "the server answered duplex with HTTP %ld%s%s", r->status,
                 line[0] ? ": " : "", line);
        t_log(t, 1, "transport: duplex -> stream (%s)", why);
        if (t->xp.autox) {
            rhc_policy_note(&c->pol, 0, RHC_XP_STREAM, why);
            rhc_policy_note(&c->pol, 1, RHC_XP_STREAM, why);
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
        return;
    }
    if (r->hdr_done && busy_status(r->status) && t->down.retries < RETRY_MAX) {
        char why[BODY_MAX + 32];
        busy_why(r, why, sizeof(why));
        if (up_on_it && up_rewind(t, t->up.acked, why) < 0)
            return;
        down_again(t, r, why);
        return;
    }
    if (r->hdr_done && r->status == 409 && t->down.retries < RETRY_MAX) {
        /* the previous push or pull of the session is still active on the server,
         * or it has more up bytes than we thought (then it says how many) */
        if (r->have_offset && r->offset <= up_read_off(t))
            up_ack(t, r->offset);
        down_again(t, r, line[0] ? line : "HTTP 409");
        return;
    }
    if (died_unanswered(r, rc) && unanswered_retry_ok(t)) {
        t_log(t, 1, "duplex: %s; trying again on a new connection", req_error(r, rc));
        t->down.fresh = 1;
        down_again(t, r, req_error(r, rc));
        return;
    }
    /* A stream reset with no answer while the connection lives: the server
     * refused the request. mod_http2 resets a duplex its handler refused before
     * reading the body (410 for a session a restarted relay core no longer
     * has) without sending the answer; a few in a row mean just that. */
    if (rc == CURLE_HTTP2_STREAM && !r->hdr_done && ++t->sess.h2_resets >= H2_RESETS_MAX) {
        t_fail(t, RHC_EXIT_LOST, "duplex: the server reset the stream %u times in a row "
               "without an answer: the session is gone (relay core restarted?)",
               t->sess.h2_resets);
        return;
    }
    if (r->hdr_done && r->status != 200) {
        fail_http(t, r, "duplex");
    } else if (!r->saw_end && !r->saw_fin && t->sess.resume && retry_ok(t, t->down.retries) &&
               (rc == CURLE_OK || transient(rc))) {
        /* cut: both directions go on from what the server confirmed / we got */
        t_log(t, 1, "duplex: %s; resuming on a new connection",
              rc != CURLE_OK ? req_error(r, rc) : "response ended early");
        if (up_on_it && up_rewind(t, t->up.acked, "duplex cut") < 0)
            return;
        t->down.fresh = 1;
        down_again(t, r, "cut");
        return;
    } else if (!r->saw_end && !r->saw_fin && rc != CURLE_OK) {
        fail_curl(t, r, rc, "duplex");
    } else if (!r->saw_end && !r->saw_fin) {
        t_fail(t, RHC_EXIT_LOST, "duplex: response ended without F or E (connection cut?)");
    }
    if (t->end.code)
        return;
    /* Complete: the server has read the whole body (it answers to the end only
     * then), so a body with F means the up direction is done. */
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
