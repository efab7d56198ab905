/* relay-https client: transport choice: what a session starts with, what the
 * process learned for later ones, and the fallbacks duplex -> stream -> batch. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_choose.h"
#include "rhc_errors.h"
#include "rhc_tunnel_int.h"

const char *const xp_name[] = { "auto", "duplex", "stream", "batch" };

const char *xp_pair(enum rhc_transport up, enum rhc_transport down, char *buf, size_t bufsz)
{
    if (up == down)
        snprintf(buf, bufsz, "%s", xp_name[up]);
    else
        snprintf(buf, bufsz, "push %s, pull %s", xp_name[up], xp_name[down]);
    return buf;
}

void rhc_policy_init(struct rhc_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->best_up = p->best_down = RHC_XP_DUPLEX;
    p->batch_max = BATCH_DATA_MAX;
    p->spush_max = SPUSH_BODY_MAX;
}

void rhc_policy_note(struct rhc_policy *p, int up, enum rhc_transport x, const char *why)
{
    if (up && x > p->best_up) {
        p->best_up = x;
        snprintf(p->why_up, sizeof(p->why_up), "%s", why);
        p->moved_at = rh_now_ms();
    }
    if (!up && x > p->best_down) {
        p->best_down = x;
        snprintf(p->why_down, sizeof(p->why_down), "%s", why);
        p->moved_at = rh_now_ms();
    }
}

int rhc_policy_expire(struct rhc_policy *p, int64_t now, char *was, size_t wassz)
{
    char pair[64];

    if ((p->best_up == RHC_XP_DUPLEX && p->best_down == RHC_XP_DUPLEX) ||
        now - p->moved_at < RHC_POLICY_RETRY_MS)
        return 0;
    snprintf(was, wassz, "%s: %s", xp_pair(p->best_up, p->best_down, pair, sizeof(pair)),
             p->best_down != RHC_XP_DUPLEX ? p->why_down : p->why_up);
    /* the better transports are unproven again: a session's up bytes wait for
     * their first frame, so that it can still start over should they fail */
    enum rhc_transport worst = p->best_up > p->best_down ? p->best_up : p->best_down;
    for (int x = RHC_XP_DUPLEX; x < (int)worst; ++x)
        p->proven[x] = 0;
    p->best_up = p->best_down = RHC_XP_DUPLEX;
    p->why_up[0] = p->why_down[0] = '\0';
    p->moved_at = 0;
    return 1;
}

/* auto: the best the connection allows that has not failed this process yet. */
static void pick_auto(const struct rhc_policy *p, long hv, enum rhc_transport *up,
                      enum rhc_transport *down, char *why, size_t whysz)
{
    if (hv == CURL_HTTP_VERSION_2_0 && p->best_up <= RHC_XP_DUPLEX &&
        p->best_down <= RHC_XP_DUPLEX) {
        /* HTTP/2 allows both: what was measured on this path decides. Until
         * then stream (timed by the first bulk session), then duplex for a
         * trial against stream's figure (rhc_measure.c). */
        const struct rhc_rates *m = &p->rates;
        int stream_timed = m->bps[0][RHC_XP_STREAM] > 0 || m->bps[1][RHC_XP_STREAM] > 0;
        if (m->pick != RHC_XP_AUTO) {
            *up = *down = m->pick;
            snprintf(why, whysz, "%s", m->why);
        } else if (!stream_timed) {
            *up = *down = RHC_XP_STREAM;
            snprintf(why, whysz, "auto: HTTP/2, not measured on this path yet: stream "
                     "first, then duplex is timed against it");
        } else {
            *up = *down = RHC_XP_DUPLEX;
            snprintf(why, whysz, "auto: HTTP/2, stream timed on this path: timing duplex "
                     "against it");
        }
        return;
    }
    *up = p->best_up > RHC_XP_STREAM ? p->best_up : RHC_XP_STREAM;
    *down = p->best_down > RHC_XP_STREAM ? p->best_down : RHC_XP_STREAM;
    /* without streamed responses there are no timely A frames to watch a
     * streamed push with */
    if (*down == RHC_XP_BATCH)
        *up = RHC_XP_BATCH;
    int n = snprintf(why, whysz, "auto: %s",
                     hv == CURL_HTTP_VERSION_2_0
                     ? "HTTP/2, but duplex did not get through earlier"
                     : "the connection speaks HTTP/1.1, not HTTP/2");
    if (*down == RHC_XP_BATCH && n > 0 && (size_t)n < whysz)
        snprintf(why + n, whysz - (size_t)n, "; earlier: %s", p->why_down);
    else if (*up == RHC_XP_BATCH && n > 0 && (size_t)n < whysz)
        snprintf(why + n, whysz - (size_t)n, "; earlier: %s", p->why_up);
}

void rhc_choose_pick(const struct rhc_opts *o, const struct rhc_policy *p, long hv,
                     enum rhc_transport *up, enum rhc_transport *down, int *autox,
                     char *why, size_t whysz)
{
    const char *hs = hv == CURL_HTTP_VERSION_2_0 ? "HTTP/2" :
                     hv == CURL_HTTP_VERSION_1_0 ? "HTTP/1.0" : "HTTP/1.1";

    *autox = o->transport == RHC_XP_AUTO;
    if (*autox) {
        /* auto's own stream requests ride HTTP/1.1 connections, and a later open
         * may be sent on one of them: the path still speaks HTTP/2 (duplex asks
         * for it again through ALPN on a connection of its own) */
        pick_auto(p, p->h2_seen ? CURL_HTTP_VERSION_2_0 : hv, up, down, why, whysz);
        return;
    }
    *up = o->transport;
    *down = o->transport_down;
    if (*up == *down)
        snprintf(why, whysz, "--transport %s; the connection speaks %s", xp_name[*up], hs);
    else
        snprintf(why, whysz, "--transport %s/%s; the connection speaks %s",
                 xp_name[*up], xp_name[*down], hs);
}

/* Picks the transports of a session once its open was answered. */
void choose_transport(rhc_tunnel *t, struct rhc_req *open)
{
    long hv = 0;
    char why[800], pair[64];

    curl_easy_getinfo(open->h, CURLINFO_HTTP_VERSION, &hv);
    if (hv == CURL_HTTP_VERSION_2_0)
        t->route->pol.h2_seen = 1;
    if (t->route->o->transport == RHC_XP_AUTO &&
        rhc_policy_expire(&t->route->pol, rh_now_ms(), why, sizeof(why)))
        t_log(t, 1, "transport: probing the best again (a fallback holds for %d min; "
                    "it was %s)", RHC_POLICY_RETRY_MS / 60000, why);
    rhc_rates_expire(&t->route->pol.rates, rh_now_ms());
    rhc_choose_pick(t->route->o, &t->route->pol, hv, &t->xp.up, &t->xp.down, &t->xp.autox, why, sizeof(why));
    t_log(t, 1, "transport: %s (%s)", xp_pair(t->xp.up, t->xp.down, pair, sizeof(pair)), why);
    stat_transport(t);
    /* A path not seen to pass this transport's responses yet: up bytes wait for
     * the first frame (about one round trip), so that, should it never come, the
     * session can start over on batch without the target having seen a byte. */
    t->xp.up_hold = t->xp.autox && t->xp.down != RHC_XP_BATCH && !t->route->pol.proven[t->xp.down] &&
                 !t->xp.restarts && !t->sess.resume;
    if (t->xp.down == RHC_XP_DUPLEX) {
        if (start_duplex(t) == 0 && meter_claim(t))
            duplex_split_early(t);
        return;
    }
    if (start_pull(t) == 0 && t->xp.up == RHC_XP_STREAM)
        start_spush(t);
    /* batch pushes start from t_advance as soon as there are bytes */
}

/* After the down side moved to a new request, the server must have taken that
 * request before up bytes that make the target answer reach it (else the answer
 * would go to the request given up): up bytes wait about two round trips. */
static int64_t switch_grace(const rhc_tunnel *t)
{
    int64_t g = 2 * t->sess.rtt_ms;

    return g < SWITCH_GRACE_MIN ? SWITCH_GRACE_MIN : g > SWITCH_GRACE_MAX ? SWITCH_GRACE_MAX : g;
}

/* Pushes move to batch: a streamed body is ended (the server then confirms how
 * far it got, and batch pushes go on from there). */
void fallback_up(rhc_tunnel *t, const char *why)
{
    struct rhc_req *sc = up_streamer(t);

    if (t->xp.up == RHC_XP_BATCH)
        return;
    t_log(t, 1, "transport: push %s -> batch (%s)", xp_name[t->xp.up], why);
    rhc_policy_note(&t->route->pol, 1, RHC_XP_BATCH, why);
    t->xp.up = RHC_XP_BATCH;
    t->push.ack_wait_since = 0;
    t->push.spush_at = 0;
    t->xp.up_fallback_at = 0;
    if (sc && !sc->body_ended && !sc->p_fin && !sc->p_r) {
        sc->end_wanted = 1;         /* up_kick lets the read callback end it */
        t->xp.switching = 1;
        t->xp.switch_since = rh_now_ms();
    }
}

/* The down side stalled before it gave a byte: switch to the next transport.
 * Only called while the response gave nothing but heartbeats, so no down byte
 * can be lost by giving it up (unless an intermediary holds some back). */
/* The duplex is given up for a stream pull (and stream pushes, if it carried
 * up): up bytes go again from what the server confirmed, down bytes from what
 * came (down_req_go's Relay-Ack). */
static void duplex_to_stream(rhc_tunnel *t, const char *why)
{
    int up_on_it = t->xp.up == RHC_XP_DUPLEX;

    if (t->rq.duplex && t->rq.duplex->split_at) {
        duplex_split_drop(t, t->rq.duplex);     /* a push to follow its body goes too */
        up_on_it = t->xp.up == RHC_XP_DUPLEX;
    }
    if (t->xp.switching) {
        /* its ended body goes with it: batch pushes go on from what was confirmed */
        t->xp.switching = 0;
        if (up_rewind(t, t->up.acked, why) < 0)
            return;
    }
    req_free(t->rq.duplex);
    t->rq.duplex = NULL;
    t->xp.down = RHC_XP_STREAM;
    t->xp.switched_pull = 1;
    if (up_on_it) {
        t->xp.up = RHC_XP_STREAM;
        if (up_rewind(t, t->up.acked, why) < 0)
            return;
    }
    if (start_pull(t) == 0 && up_on_it)
        t->push.spush_at = rh_now_ms() + switch_grace(t);
}

void switch_to_stream(rhc_tunnel *t, const char *why)
{
    if (t->xp.down != RHC_XP_DUPLEX)
        return;
    t_log(t, 1, "transport: duplex -> stream (%s)", why);
    duplex_to_stream(t, "duplex left for stream");
}

void fallback_down(rhc_tunnel *t, const char *why)
{
    if (t->xp.down == RHC_XP_DUPLEX) {
        t_log(t, 1, "transport: duplex -> stream (%s)", why);
        rhc_policy_note(&t->route->pol, 0, RHC_XP_STREAM, why);
        rhc_policy_note(&t->route->pol, 1, RHC_XP_STREAM, why);
        duplex_to_stream(t, "duplex given up");
        return;
    }
    if (t->xp.down == RHC_XP_STREAM) {
        t_log(t, 1, "transport: pull stream -> batch (%s)", why);
        rhc_policy_note(&t->route->pol, 0, RHC_XP_BATCH, why);
        rhc_policy_note(&t->route->pol, 1, RHC_XP_BATCH, why);
        req_free(t->rq.pull);
        t->rq.pull = NULL;
        t->xp.down = RHC_XP_BATCH;
        t->xp.switched_pull = 1;
        start_pull(t);
        /* Batch answers carry A frames only when they come (down bytes, or the
         * poll timeout): a streamed push could not be watched any more. It is
         * ended a little later (an intermediary may release its bytes then), and
         * held up bytes wait as long: a server that does not let the new pull
         * take over says so (409) in that time, and the session starts over. */
        if (t->xp.up != RHC_XP_BATCH) {
            t->xp.up_fallback_at = rh_now_ms() + switch_grace(t);
            t->xp.up_fallback_why = "pulls go batch, so streamed pushes cannot be watched";
        }
        if (t->xp.up_hold)
            t->xp.hold_until = rh_now_ms() + switch_grace(t);
    }
}

/* Nothing went up yet (held) and nothing came down: the session is given up
 * (close) and a new one opened, which starts with what this one learned. The
 * target sees one connection that opened and closed; the local side sees
 * nothing. */
void restart_session(rhc_tunnel *t, const char *why)
{
    rhc_ctx *c = t->ctx;

    t_log(t, 1, "transport: starting over with a new session (%s; nothing was exchanged yet)",
          why);
    reqs_free(t);
    start_close(c, t->route, t->token, t->label, t->sid);
    memset(t->token, 0, sizeof(t->token));
    t->xp.up = t->xp.down = RHC_XP_AUTO;
    t->xp.autox = 0;
    t->xp.switching = 0;
    t->xp.probe_until = t->xp.up_fallback_at = t->xp.hold_until = 0;
    t->xp.up_fallback_why = NULL;
    t->push.pads = 0;
    t->push.pad_from = 0;
    t->down.repull_at = t->push.spush_at = 0;
    t->xp.up_hold = 0;
    t->xp.switched_pull = 0;
    t->down.retries = t->push.retries = 0;
    t->push.ack_wait_since = 0;
    t->up.sent = t->up.acked = 0;
    t->up.fin_sent = 0;
    ++t->xp.restarts;
    if (!(t->rq.open = start_open(t)))
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
}

/* auto: when the down response counts as held back, or -1. */
int64_t probe_deadline(const rhc_tunnel *t)
{
    struct rhc_req *dr = down_req(t);

    /* a resumed session the server has not confirmed yet (see maybe_ack): a
     * silent response may be a restarted server, no intermediary's doing */
    if (!t->xp.autox || !t->xp.probe_until || !dr || dr->got_frame || dr->batch || req_waiting(dr) ||
        (dr->hdr_done && dr->status != 200) || t->ack.verify)
        return -1;
    /* no response headers yet: the request may just wait for a free server
     * worker (a prefork burst); give that longer before calling it held back */
    return dr->hdr_done ? t->xp.probe_until : t->xp.probe_until + PROBE_NO_HEADERS_MS;
}
