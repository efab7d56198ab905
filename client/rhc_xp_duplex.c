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
    watch_woke_conn(t, r);      /* out of a watch: only a connection used just now */
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

/* A bulk upload leaves the duplex for a stream push (HTTP/1.1): mod_http2
 * sets a request body's window itself (at most 2 MiB, 52 MB/s over a 40 ms
 * round trip) and copies its bytes between threads, so a duplex uploads at
 * 0.5-0.6 x CONNECT on loopback and under 0.1 x on a long path, where a
 * stream push does 1.0 x (docs/BENCHMARKS.md, "Duplex up on a stream push").
 * The duplex keeps carrying down. The push is asked for now at an offset the
 * duplex body ends at a little later (split_at: what it carries in a few round
 * trips, while the push's connection is made); the server keeps the push
 * waiting, unread, until the duplex's push part has ended there, as it does
 * for pipelined stream pushes. Only resumable sessions split (the server
 * keeps up bytes until confirmed), not while auto times the duplex, and only
 * when the push may ask for HTTP/1.1 (no HTTP version given). */
int duplex_split_may(const rhc_tunnel *t)
{
    return t->sess.resume && !t->route->o->http_version;
}

static int split_ok(rhc_tunnel *t, const struct rhc_req *r, int64_t now)
{
    return r && t->xp.up == RHC_XP_DUPLEX && t->xp.down == RHC_XP_DUPLEX &&
           duplex_split_may(t) && r->hdr_done && r->status == 200 && r->got_frame &&
           !r->split_at && !r->end_wanted && !r->body_ended && !r->p_fin && !r->p_r &&
           !t->rq.spush && !t->rq.spush_next && !t->xp.switching && !t->xp.up_hold &&
           (!t->up.eof || up_read_off(t) >= t->up.sent + SPLIT_LEAD_MIN) &&
           !t->end.code && !t->push.r_pending && !t->meter.switch_due &&
           now >= t->xp.split_again_at;
}

/* The split is given up before the body reached split_at: the duplex goes on
 * carrying up. */
static void split_cancel(rhc_tunnel *t, struct rhc_req *r, const char *why, int64_t again_ms)
{
    t_log(t, 2, "duplex: up stays on the duplex (%s)", why);
    req_free(t->rq.spush_next);
    t->rq.spush_next = NULL;
    t->xp.split_early = 0;
    r->split_at = 0;
    t->xp.split_again_at = rh_now_ms() + again_ms;
    if (r->send_paused)
        unpause_send(r);
}

/* How much more the duplex body carries: what the server confirmed of it in
 * SPLIT_LEAD_RTTS round trips + 10 ms (the push's TCP and TLS handshakes) at
 * the rate of the window (ms long). Confirmed, not sent: sent bytes may wait
 * in buffers along the path (16 MiB in the delay proxy), and every byte the
 * body carries reaches the server at the duplex's pace before the push may go
 * on. */
static uint64_t split_lead(const rhc_tunnel *t, const struct rhc_req *r, int64_t ms)
{
    /* the round trip: the open's, or the duplex's answer (at least one) */
    int64_t rtt = r->hdr_at - r->started;
    if (rtt < t->sess.rtt_ms)
        rtt = t->sess.rtt_ms;
    if (rtt < 1)
        rtt = 1;
    uint64_t done = t->up.acked - t->xp.split_acked;
    uint64_t lead = done / (uint64_t)(ms > 0 ? ms : 1) * (uint64_t)(SPLIT_LEAD_RTTS * rtt + 10);
    lead = lead < SPLIT_LEAD_MIN ? SPLIT_LEAD_MIN : lead > SPLIT_LEAD_MAX ? SPLIT_LEAD_MAX : lead;
    if (t->up.eof && lead > up_read_off(t) - t->up.sent)
        lead = up_read_off(t) - t->up.sent;     /* the body must reach it: the rest is known */
    return lead;
}

void duplex_split(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *r = t->rq.duplex;

    if (r && r->split_at && !r->body_ended && t->rq.spush_next) {
        if ((t->up.eof && up_read_off(t) < r->split_at) || t->push.r_pending || t->end.code) {
            split_cancel(t, r, "the local side ended", SPLIT_AGAIN_MS);    /* with F or R */
            return;
        }
        /* the trial's push, unused: dropped before the server refuses it
         * (RelayPushWait), whose 409 a paused body would show only at its turn */
        if (t->xp.split_early && now - t->xp.split_early_at >= SPLIT_EARLY_MS) {
            split_cancel(t, r, "the push asked for beside it went unused", 0);
            return;
        }
    }
    if (!split_ok(t, r, now))
        return;
    if (now - t->xp.split_since > SPLIT_MS || t->up.sent < t->xp.split_from ||
        t->xp.split_from < r->p_off || t->up.acked < t->xp.split_acked) {
        t->xp.split_since = now;        /* a new window */
        t->xp.split_from = t->up.sent;
        t->xp.split_acked = t->up.acked;
        return;
    }
    uint64_t moved = t->up.sent - t->xp.split_from;
    if (moved < SPLIT_BULK)
        return;
    int64_t ms = now - t->xp.split_since;
    struct rhc_req *n = spush_new(t, t->up.sent + split_lead(t, r, ms));
    if (!n) {
        t->xp.split_again_at = now + SPLIT_AGAIN_MS;
        return;
    }
    t->rq.spush_next = n;
    r->split_at = n->p_off;
    t_log(t, 1, "duplex: bulk upload (%" PRIu64 " bytes in %" PRId64 " ms): up moves to a "
          "stream push at offset %" PRIu64 ", down stays on the duplex", moved, ms, r->split_at);
}

/* auto's trial of duplex (meter_claim) times its download only, so its upload
 * goes on a stream push from the start: the push is asked for now, beside the
 * duplex, at an offset within the duplex body's first HTTP/2 window
 * (SPLIT_EARLY), and both connections are made at once. Through a CONNECT
 * proxy and 40 ms round trips the trial's upload otherwise went at the
 * duplex's pace (mod_http2's stream window: 15-25 MB/s) until a split push
 * had its new connection, 200-500 ms of a 100 MB upload (docs/BENCHMARKS.md,
 * auto through squid). A session that does not send that much within
 * SPLIT_EARLY_MS drops the push (duplex_split): the duplex goes on with its
 * upload, and a later bulk upload splits as usual. */
void duplex_split_early(rhc_tunnel *t)
{
    struct rhc_req *r = t->rq.duplex, *n;

    if (!r || r->split_at || t->rq.spush || t->rq.spush_next || !duplex_split_may(t) ||
        t->xp.up != RHC_XP_DUPLEX || t->up.eof)
        return;
    if (!(n = spush_new(t, t->up.sent + SPLIT_EARLY)))
        return;                     /* the usual split then */
    t->rq.spush_next = n;
    r->split_at = n->p_off;
    t->xp.split_early = 1;
    t->xp.split_early_at = rh_now_ms();
    t_log(t, 1, "auto: duplex is timed on its download; up goes on a stream push from "
          "offset %" PRIu64, r->split_at);
}

/* From the duplex's read callback: its body has reached split_at. 1: the push
 * asked for takes the up side over and the body ends; 0: no push (it failed
 * meanwhile), the body goes on. */
int duplex_split_turn(rhc_tunnel *t, struct rhc_req *r)
{
    struct rhc_req *n = t->rq.spush_next;

    if (!n || n->p_off != r->split_at || t->up.sent != r->split_at) {
        r->split_at = 0;
        return 0;
    }
    t->rq.spush = n;
    t->rq.spush_next = NULL;
    t->xp.split_early = 0;
    t->xp.up = RHC_XP_STREAM;
    t->push.last_emit = rh_now_ms();
    t_log(t, 2, "duplex body ended at %" PRIu64 ": the stream push goes on", r->split_at);
    return 1;
}

/* The duplex whose body hands up to a push ended, or is given up (a move to
 * stream): a push asked for but not turned to is dropped; a push that took over waits on the server for the
 * duplex's unconfirmed bytes, which may never have arrived: it goes again from
 * what the server confirmed (the server drops what it has twice). */
void duplex_split_drop(rhc_tunnel *t, struct rhc_req *r)
{
    struct rhc_req *n = t->rq.spush_next, *p = t->rq.spush;

    if (n && n->p_off == r->split_at && !r->body_ended) {
        req_free(n);
        t->rq.spush_next = NULL;
        t->xp.split_early = 0;
        r->split_at = 0;
        return;
    }
    if (!r->body_ended || !p || p->p_off != r->split_at || t->up.acked >= r->split_at ||
        t->xp.up != RHC_XP_STREAM)
        return;
    t_log(t, 1, "duplex: ended before its last up bytes were confirmed; the stream push goes "
          "again from offset %" PRIu64, t->up.acked);
    req_free(p);
    t->rq.spush = NULL;
    if (t->rq.spush_next) {
        req_free(t->rq.spush_next);
        t->rq.spush_next = NULL;
    }
    if (up_rewind(t, t->up.acked, "duplex ended") == 0)
        start_spush(t);
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
    if (r->split_at)
        duplex_split_drop(t, r);
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
