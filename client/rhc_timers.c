/* relay-https client: time in a tunnel: the next moment it needs a look
 * (t_deadline) and what is due then (t_timers): heartbeats, retries, dead
 * paths, probes and fallbacks. */
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

static void min_deadline(int64_t *d, int64_t v)
{
    if (v >= 0 && (*d < 0 || v < *d))
        *d = v;
}

/* Streamed bodies say they are alive often enough for the server's idle
 * timeout, which counts from the last thing it heard. */
static int64_t hb_every(const rhc_tunnel *t)
{
    return t->sess.idle_ms > 0 && alive_every(t) < HEARTBEAT_MS ? alive_every(t) : HEARTBEAT_MS;
}

/* When the down response dr is dead unless a frame comes. The loop looks
 * only when a deadline comes (rhc_wake.c), and pull_dead_ms shortens once the
 * last silent resume is forgotten: a look then too. */
static int64_t silent_at(const rhc_tunnel *t, const struct rhc_req *dr, int64_t now)
{
    int64_t at = t->down.last_rx + pull_dead_ms(t, dr, now);

    if (req_connecting(dr) && at < dr->started + CONNECT_DEAD_MS)
        at = dr->started + CONNECT_DEAD_MS;
    return at;
}

static int64_t down_deadline(const rhc_tunnel *t, const struct rhc_req *dr, int64_t now)
{
    int64_t d = dr->recv_paused || req_waiting(dr) ? -1 : silent_at(t, dr, now);

    if (t->down.silent_n && now < t->down.silent_at + SILENT_FORGET_MS)
        min_deadline(&d, t->down.silent_at + SILENT_FORGET_MS);
    return d;
}

/* Next time this tunnel needs a look without any fd event, or -1. */
int64_t t_deadline(const rhc_tunnel *t)
{
    int64_t d = -1;
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (t->end.code)       /* due now, unless an R frame is on its way */
        return t->end.linger_until && (t->rq.spush || t->rq.duplex) ? t->end.linger_until : 0;
    if (t->local.olen > 0 && !t->local.out_blocked && !t->local.out_err)
        return 0;           /* output to flush (normally done in the same round) */
    if (t->meter.switch_due && meter_switch_at(t) <= rh_now_ms())
        return 0;           /* auto moves to stream (rhc_measure.c) */
    if (sc && sc->send_paused && !sc->body_ended)
        min_deadline(&d, t->push.last_emit + hb_every(t));
    int64_t now = rh_now_ms();
    if (dr)
        min_deadline(&d, down_deadline(t, dr, now));
    min_deadline(&d, up_dead_at(t, now));
    if (t->down.repull_at)
        min_deadline(&d, t->down.repull_at);
    if (t->push.spush_at)
        min_deadline(&d, t->push.spush_at);
    min_deadline(&d, park_at(t));
    min_deadline(&d, watch_idle_at(t));
    for (int i = 0; i < t->rq.nbpush; ++i) {
        if (t->rq.bpush[i]->retry_at)
            min_deadline(&d, t->rq.bpush[i]->retry_at);
        if (t->rq.bpush[i]->conf_at)    /* bpush_drop_held */
            min_deadline(&d, t->rq.bpush[i]->conf_at + UP_DEAD_MS);
    }
    min_deadline(&d, stall_deadline(t));
    min_deadline(&d, flush_deadline(t));
    min_deadline(&d, probe_deadline(t));
    if (t->sess.resume)
        min_deadline(&d, ack_deadline(t));
    if (t->xp.switching && t->rq.duplex)
        min_deadline(&d, t->xp.switch_since + SWITCH_WAIT_MS);
    if (t->xp.up_fallback_at)
        min_deadline(&d, t->xp.up_fallback_at);
    if (t->xp.hold_until)
        min_deadline(&d, t->xp.hold_until);
    min_deadline(&d, meter_switch_at(t));   /* a deferred move */
    return d;
}

/* A streamed body answered with an error (503 from a full httpd child, say):
 * libcurl 7.88 stops sending ("HTTP error before end of send") but ends the
 * transfer only once its send is unpaused, which on a quiet tunnel was the
 * next heartbeat, 20 s on: the refused duplex waited that long before it could
 * go again (the duplex ramp's stall, docs/BENCHMARKS.md item 10). */
static void refused_body_unpause(struct rhc_req *r)
{
    if (r && r->send_paused && r->hdr_done && r->status >= 300 && !r->refused_unpaused) {
        r->refused_unpaused = 1;
        unpause_send(r);
    }
}

/* Requests that are due: a heartbeat on a quiet body, the next down request,
 * the stream push (again). */
static void timers_requests(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    refused_body_unpause(t->rq.duplex);
    refused_body_unpause(t->rq.spush);

    if (sc && sc->send_paused && !sc->body_ended &&
        now >= t->push.last_emit + hb_every(t)) {
        t->push.hb_pending = 1;
        unpause_send(sc);
    }
    if (!dr && t->down.repull_at && now >= t->down.repull_at) {
        t->down.repull_at = 0;
        start_down(t);
    }
    if (t->xp.up == RHC_XP_STREAM && !t->rq.spush && t->push.spush_at && now >= t->push.spush_at &&
        !t->up.done) {
        t->push.spush_at = 0;
        start_spush(t);
    }
}

/* The down response went silent for longer than the server's heartbeats allow. */
static void timers_silence(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *dr = down_req(t);

    if (dr && !dr->recv_paused && !req_waiting(dr) && now >= silent_at(t, dr, now)) {
        int64_t ms = now - t->down.last_rx;
        if (t->sess.resume && retry_ok(t, t->down.retries)) {
            /* a path that went silent (no RST): a new request, the server resends */
            t_log(t, 1, "%s: nothing from the server for %" PRId64 " ms; resuming at offset %"
                  PRIu64 " on a new connection", kind_name[dr->kind], ms, t->down.off);
            snprintf(dr->errbuf, sizeof(dr->errbuf), "nothing from the server for %" PRId64
                     " ms", ms);
            t->down.fresh = 1;
            pull_silence_noted(t, now);
            if (dr->kind == REQ_DUPLEX)
                duplex_done(t, dr, CURLE_OPERATION_TIMEDOUT);   /* as if cut (counts) */
            else {
                stat_resume(t);
                down_again(t, dr, "silent");
            }
        } else {
            t_fail(t, RHC_EXIT_LOST, "%s: nothing from the server for %" PRId64 " ms (not even "
                   "a heartbeat)", kind_name[dr->kind], ms);
        }
    }
}

/* What is due in the up direction and in the transport choice: dead pushes,
 * probes, holds, fallbacks, padded heartbeats. */
static void timers_up(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *sc = up_streamer(t);
    int64_t d;

    if ((d = up_dead_at(t, now)) >= 0 && now >= d)
        up_dead(t, now);
    if (t->end.code)
        return;
    if ((d = probe_deadline(t)) >= 0 && now >= d) {
        fallback_down(t, "no first frame on the response in time (2 s after its "
                         "headers, 12 s without): an intermediary holds the request or "
                         "its response back");
        return;
    }
    if (t->xp.hold_until && now >= t->xp.hold_until) {
        t->xp.hold_until = 0;
        t->xp.up_hold = 0;
    }
    if (t->xp.up_fallback_at && now >= t->xp.up_fallback_at) {
        fallback_up(t, t->xp.up_fallback_why ? t->xp.up_fallback_why
                       : "pulls go batch, so streamed pushes cannot be watched");
        return;
    }
    if ((d = flush_deadline(t)) >= 0 && now >= d) {
        /* Bytes of a body that got through before are stuck: an intermediary
         * may hold a partly filled buffer (haproxy's http-buffer-request over
         * HTTP/2 does): a padded heartbeat fills it. A target that is just slow
         * costs FLUSH_MAX x FLUSH_PAD bytes. */
        t->push.hb_pending = 1;
        t->push.hb_pad = FLUSH_PAD;
        if (!t->push.pads++)
            t->push.pad_from = t->push.ack_wait_since;
        t->push.ack_wait_since = now;
        t_log(t, 2, "up bytes from %" PRIu64 " not confirmed for %d s: padded heartbeat",
              t->up.acked, ACK_STALL_MS / 1000);
        unpause_send(sc);
    }
    if ((d = stall_deadline(t)) >= 0 && now >= d) {
        fallback_up(t, "pushed bytes not acknowledged within 3 s: an intermediary holds "
                       "request bodies back");
        return;
    }
    if (t->xp.switching && t->rq.duplex && now >= t->xp.switch_since + SWITCH_WAIT_MS) {
        /* the ended duplex body was never confirmed: batch goes on from what was */
        t->xp.switching = 0;
        up_rewind(t, t->up.acked, "ended duplex body not confirmed");
    }
}

void t_timers(rhc_tunnel *t, int64_t now)
{
    if (t->end.code)
        return;
    meter_switch(t);
    timers_requests(t, now);
    bpush_resend_due(t, now);
    timers_silence(t, now);
    if (t->end.code)
        return;
    timers_up(t, now);
}
