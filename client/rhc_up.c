/* relay-https client: the up direction of a tunnel, whatever the transport:
 * confirmations and rewinds, waking the body or starting batch pushes, parking
 * an idle stream push, and the deadlines that judge unconfirmed up bytes. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"

/* The server confirmed the up bytes below x. */
void up_ack(rhc_tunnel *t, uint64_t x)
{
    struct rhc_req *sc = up_streamer(t);

    if (x <= t->up.acked)
        return;
    stat_up(t, x - t->up.acked);
    t->push.retries = 0;
    t->push.dead_ms = UP_DEAD_MS;
    t->sess.last_busy = rh_now_ms();
    if (t->push.pads && t->xp.autox && t->xp.up != RHC_XP_BATCH && !t->xp.up_fallback_at) {
        /* the padding got them through: small writes would wait each time */
        t->xp.up_fallback_at = rh_now_ms();
        t->xp.up_fallback_why = "up bytes got through only behind a padded heartbeat: an "
                             "intermediary holds small request body chunks";
    }
    t->push.pads = 0;
    t->push.pad_from = 0;
    if (sc && x > sc->p_off)
        sc->acked_any = 1;      /* this body streams: bytes of it got through */
    /* the buffer keeps a body that still streams contiguous (rhc_upbuf_confirm) */
    int streaming = sc && !sc->body_ended && !sc->p_fin && !sc->p_r;
    rhc_upbuf_confirm(&t->up, x, streaming);
    t->push.ack_wait_since = t->up.sent > x ? rh_now_ms() : 0;
}

/* Sends the up bytes from x again (the server has everything below x, and
 * nothing that was sent from x on can count). */
int up_rewind(rhc_tunnel *t, uint64_t x, const char *why)
{
    if (x < t->up.base || x > up_read_off(t)) {    /* what rhc_upbuf_rewind refuses */
        t_fail(t, RHC_EXIT_LOST, "%s: the server has %" PRIu64 " up bytes, but bytes from "
               "%" PRIu64 " were %s", why, x, t->up.base,
               x < t->up.base ? "no longer kept (nothing was confirmed for too long)"
                              : "never sent");
        return -1;
    }
    if (x != t->up.sent)
        t_log(t, 2, "%s: up bytes from %" PRIu64 " go again (%" PRIu64 " were sent)",
              why, x, t->up.sent);
    rhc_upbuf_rewind(&t->up, x);
    t->push.ack_wait_since = 0;
    return 0;
}

/* The up bytes of an ended or failed streamed body: go on from where the
 * server surely is, on the current up transport. */
void up_restart(rhc_tunnel *t, int64_t delay)
{
    if (t->end.code || t->up.done)
        return;
    if (t->xp.up == RHC_XP_STREAM)
        t->push.spush_at = rh_now_ms() + delay;
    /* duplex: the next duplex carries them; batch: t_advance */
}

/* Lets the up side move: wakes a streamed body that has something to say, or
 * starts batch pushes for what waits in the ring. */
/* Up bytes (or the F) wait to be handed to a push. */
static int up_waiting(const rhc_tunnel *t)
{
    return up_read_off(t) > t->up.sent || (t->up.eof && !t->up.fin_sent);
}

/* A paused streamed body has something to say. */
static int body_has_news(const rhc_tunnel *t, const struct rhc_req *sc)
{
    return t->push.r_pending || t->push.hb_pending || sc->p_fin ||
           (!t->xp.up_hold && up_waiting(t));
}

void up_kick(rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t);

    /* bodies being ended must get to say so */
    if (t->rq.spush && t->rq.spush->end_wanted)
        unpause_send(t->rq.spush);
    if (t->rq.duplex && t->rq.duplex->end_wanted)
        unpause_send(t->rq.duplex);
    if (sc) {
        if (sc->send_paused && body_has_news(t, sc))
            unpause_send(sc);
        return;
    }
    if (t->push.parked && t->xp.up == RHC_XP_STREAM && !t->end.code &&
        (t->push.r_pending || up_waiting(t))) {
        t->push.parked = 0;
        start_spush(t);
        return;
    }
    if (t->rq.nbpush)
        bpush_drop_held(t, rh_now_ms());
    if (t->end.code || t->xp.up != RHC_XP_BATCH || t->xp.switching || t->xp.up_hold)
        return;
    while (!t->up.done && t->rq.nbpush < BATCH_INFLIGHT && up_waiting(t))
        if (start_bpush(t) < 0)
            return;
}

/* A streamed body whose ring is full of sent bytes, after the down direction
 * ended: no A frames will come to confirm them. Without help the ring would
 * never free up, and the local EOF (or more bytes) would never be read. So the
 * body is ended: a stream push's answer says how far the server got and a new
 * push goes on; after a duplex, a stream push goes on from what was confirmed
 * (the server drops what it already has). */
void spush_refresh(rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t);

    if (!sc || sc->end_wanted || sc->body_ended || sc->p_fin || sc->p_r || !t->down.fin ||
        (sc == t->rq.spush && down_req(t)) || t->up.eof || t->end.code || t->xp.switching)
        return;
    if (rh_ring_space(&t->up.ring) >= UPBUF_ROOM_MIN || t->up.sent < up_read_off(t))
        return;
    t_log(t, 2, "up ring full of unconfirmed bytes after the down direction ended: "
          "ending the push to learn the server's offset");
    sc->end_wanted = 1;
    sc->refresh = 1;
    unpause_send(sc);
}

/* A stream push that has had nothing to send for --idle-push, every byte of
 * it confirmed, is ended, and the next one starts with the next bytes: an idle
 * stream tunnel then holds one request on the server (the pull) instead of two,
 * which halves what it costs there (a worker thread and a TLS connection each).
 * The first bytes after the pause wait for a new request: one round trip. */
int64_t park_at(const rhc_tunnel *t)
{
    const struct rhc_req *sc = t->rq.spush;
    if (!sc || t->xp.up != RHC_XP_STREAM || !sc->send_paused || sc->end_wanted || req_waiting(sc) ||
        !t->sess.resume || sc->body_ended || sc->p_fin || sc->p_r || t->xp.switching || t->xp.up_hold ||
        t->up.eof || t->push.r_pending || t->end.code || t->up.acked != t->up.sent ||
        up_read_off(t) != t->up.sent || probe_deadline(t) >= 0 || t->route->o->park_ms <= 0)
        return -1;
    int64_t since = t->push.last_data > sc->started ? t->push.last_data : sc->started;
    return since + t->route->o->park_ms;
}

void push_park(rhc_tunnel *t, int64_t now)
{
    int64_t at = park_at(t);
    if (at < 0 || now < at)
        return;
    t->rq.spush->end_wanted = 1;
    t->rq.spush->parking = 1;
    unpause_send(t->rq.spush);
}

/* A push ended to park whose answer does not come (a path that took its last
 * chunk and went silent): every byte of it was confirmed, so its answer would
 * tell nothing, and once local bytes wait it is not waited for: the push
 * counts as parked and up_kick starts the next one (which replaces, on the
 * server, a push it may still think active: docs/PROTOCOL.md, Resume). In a
 * fault test such a push held the up direction a minute. */
void park_unstick(rhc_tunnel *t)
{
    struct rhc_req *r = t->rq.spush;

    if (!r || !r->parking || !r->body_ended || r->p_fin || r->p_r || t->up.acked != t->up.sent ||
        up_read_off(t) == t->up.sent || t->end.code || t->rq.spush_next || t->rq.spush_prev)
        return;
    t_log(t, 2, "stream push ended to park: its answer is not waited for (bytes to send)");
    t->rq.spush = NULL;
    req_free(r);
    t->push.parked = 1;
    t->push.park_keep_at = rh_now_ms() + alive_every(t);
}

/* auto: when pushed bytes count as stuck in an intermediary, or -1. Judged only
 * while the body has had no byte confirmed at all (an intermediary that buffers
 * whole bodies; a slow target shows progress first), while the down response
 * flows (A frames come on it) and has been quiet of data for a moment (A frames
 * wait behind down data). */
int64_t stall_deadline(const rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (!t->xp.autox || !sc || sc->end_wanted || sc->body_ended || sc->acked_any ||
        t->xp.switching || !t->push.ack_wait_since)
        return -1;
    if (!dr || dr->batch || !dr->got_frame || dr->recv_paused)
        return -1;
    int64_t a = t->push.ack_wait_since + ACK_STALL_MS, b = t->down.last_data + DOWN_QUIET_MS;
    return a > b ? a : b;
}

/* When the up bytes of a body that got through before count as stuck in a
 * partly filled buffer, or -1 (any transport mode: see t_timers). */
int64_t flush_deadline(const rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (!sc || !sc->acked_any || sc->end_wanted || sc->body_ended || sc->p_fin ||
        t->xp.switching || !t->push.ack_wait_since || t->push.pads >= FLUSH_MAX || t->push.hb_pending)
        return -1;
    if (!dr || dr->batch || !dr->got_frame || dr->recv_paused)
        return -1;
    int64_t a = t->push.ack_wait_since + ACK_STALL_MS, b = t->down.last_data + DOWN_QUIET_MS;
    return a > b ? a : b;
}

/* When the requests carrying unconfirmed up bytes count as dead, or -1: nothing
 * was confirmed for up_dead_ms while the down response shows the server alive.
 * A target that takes nothing looks the same; the interval doubles while
 * nothing moves, so that costs a request now and then. */
int64_t up_dead_at(const rhc_tunnel *t, int64_t now)
{
    struct rhc_req *dr = down_req(t);

    if (!t->sess.resume || !t->push.ack_wait_since || t->up.sent <= t->up.acked || t->xp.switching ||
        t->end.code || !dr || t->xp.down_seen != t->xp.down || dr->recv_paused ||
        req_waiting(dr) || req_waiting(up_streamer(t)) ||
        now - t->down.last_rx >= pull_dead_ms(t, dr, now))
        return -1;
    int64_t dead = t->push.dead_ms ? t->push.dead_ms : UP_DEAD_MS;
    if (req_connecting(up_streamer(t)) && dead < CONNECT_DEAD_MS)
        dead = CONNECT_DEAD_MS;
    int64_t at = t->push.ack_wait_since + dead;
    /* each padded heartbeat restarts the wait (a buffering intermediary gets
     * its chance), but together they put it off by ACK_STALL_MS at most: on a
     * dead connection three of them had stalled a tunnel for 15 to 21 s */
    if (t->push.pad_from && at > t->push.pad_from + dead + ACK_STALL_MS)
        at = t->push.pad_from + dead + ACK_STALL_MS;
    return at;
}

/* The stream push's connection was closed before its answer (peer_eof_seen):
 * with bytes to send or unconfirmed it goes again now, from what the server
 * confirmed; an idle one waits for bytes (nothing is lost meanwhile). */
int up_closed(rhc_tunnel *t)
{
    struct rhc_req *sc = t->rq.spush;

    if (!sc || !sc->peer_eof || sc->hdr_done || t->end.code || !t->sess.resume ||
        (t->up.sent == t->up.acked && up_read_off(t) == t->up.sent))
        return 0;
    /* spush_done says the resume (one line per resume: test_stats counts them) */
    t_log(t, 2, "push: the peer closed its connection before the answer (FIN)");
    snprintf(sc->errbuf, sizeof(sc->errbuf), "connection closed before the answer");
    t->push.ack_wait_since = rh_now_ms();
    spush_done(t, sc, CURLE_RECV_ERROR);    /* as if cut */
    return 1;
}

/* The requests carrying unconfirmed up bytes went silent: they go again from
 * what the server confirmed, on new connections. */
void up_dead(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *sc = up_streamer(t);
    int64_t ms = now - t->push.ack_wait_since;

    t_log(t, 1, "up bytes from %" PRIu64 " not confirmed for %" PRId64 " ms while the server "
          "answers: giving up the request that carries them", t->up.acked, ms);
    t->push.ack_wait_since = now;
    t->push.pad_from = 0;       /* a new request: its own stall */
    int64_t was = t->push.dead_ms;
    t->push.dead_ms = 2 * (t->push.dead_ms ? t->push.dead_ms : UP_DEAD_MS);
    if (t->push.dead_ms > UP_DEAD_MAX_MS)
        t->push.dead_ms = UP_DEAD_MAX_MS;
    /* said without -v once it lasts: a stalled tunnel must not look fine (item 18) */
    if (was < UP_DEAD_MAX_MS && t->push.dead_ms == UP_DEAD_MAX_MS)
        t_log(t, 0, "up bytes from %" PRIu64 " still not confirmed after %" PRId64 " s more "
              "while the server answers (the target takes nothing, or the server, the path or "
              "this client is overloaded); still trying", t->up.acked, ms / 1000);
    if (sc) {   /* a body still going, or one that ended and waits for its answer */
        snprintf(sc->errbuf, sizeof(sc->errbuf), "up bytes not confirmed for %" PRId64 " ms",
                 ms);
        if (sc == t->rq.duplex) {
            t->down.fresh = 1;
            duplex_done(t, sc, CURLE_OPERATION_TIMEDOUT);   /* as if cut */
        } else {
            spush_done(t, sc, CURLE_OPERATION_TIMEDOUT);
        }
        return;
    }
    for (int i = 0; i < t->rq.nbpush; ++i) {
        struct rhc_req *r = t->rq.bpush[i];
        if (r->retry_at)
            continue;
        /* it waits out of the multi; t_timers sends it again (a new connection) */
        rhc_gate_forget(r);
        curl_multi_remove_handle(t->ctx->multi, r->h);
        if (r->p_off < t->up.acked)
            r->p_off = t->up.acked < r->p_end ? t->up.acked : r->p_end;
        ++r->tries;
        r->retry_at = now ? now : 1;
    }
}
