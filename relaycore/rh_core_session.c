/* A relay core session's life: its deadlines, its end (every attached request
 * gets a last word), lookup by token, the pump that moves bytes both ways and
 * arms epoll, and its timer. Separate from the directions (rh_core_up.c,
 * rh_core_down.c), which it drives. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_core_int.h"
#include "rh_core_watch.h"
#include "rh_util.h"

#define PUMP_ROUNDS 4            /* a pump's turns at most, before other sessions' */
#define FAILED_LINGER_MS 30000  /* a session that failed a check answers 422 this long */
#define HB_GRID_MS 1000          /* idle heartbeats due in the same second go together */

/* When a silent stream pull gets its heartbeat. A session whose data moved
 * lately is watched closely by its client: every second. An idle one every
 * hb_ms, at the last whole HB_GRID_MS of the monotonic clock before that:
 * idle heartbeats come 19 to 20 s apart (then 20 s) and those of the same
 * second go out together, so thousands of idle tunnels wake the core and the
 * children's reactors once a second, not once per heartbeat. */
static long pull_hb_at(const session *s, const conn *k, long now)
{
    if (now - s->last_data < RH_BUSY_WINDOW_MS)
        return k->last_write + RH_BUSY_HEARTBEAT_MS;
    long at = k->last_write + rh_core_hb_ms;
    return rh_core_hb_ms >= 2 * HB_GRID_MS ? at - at % HB_GRID_MS : at;
}

/* The smallest wait worth a wake-up at this rate: a tenth of a second's worth,
 * at most 16 KiB (so a slow limit does not move bytes one at a time). */
static uint64_t rate_chunk(uint64_t rate)
{
    uint64_t c = rate / 10;
    return c < 1 ? 1 : c > 16384 ? 16384 : c;
}

size_t rh_core_rate_allow(core *c, session *s, size_t want)
{
    long now = rh_now_ms();
    uint64_t a = rh_bucket_allow(&s->rate, c->lim.rate_session, now, want);
    a = rh_bucket_allow(&c->rate, c->lim.rate_global, now, a);
    if (a || !want)
        return (size_t)a;
    int64_t w1 = rh_bucket_wait_ms(&s->rate, c->lim.rate_session,
                                   rate_chunk(c->lim.rate_session));
    int64_t w2 = rh_bucket_wait_ms(&c->rate, c->lim.rate_global,
                                   rate_chunk(c->lim.rate_global));
    if (!s->throttle_until)
        rh_stats_throttled(&c->cfg->reg->stats);
    s->throttle_until = now + (w1 > w2 ? w1 : w2 > 0 ? w2 : 1);
    return 0;
}

void rh_core_rate_took(core *c, session *s, size_t n)
{
    rh_bucket_take(&s->rate, c->lim.rate_session, n);
    rh_bucket_take(&c->rate, c->lim.rate_global, n);
}

/* A session's bytes in the registry; a serve leg's are its client leg's, so
 * they are counted there only (the status page's totals count each byte once). */
static void session_count(core *c, const session *s)
{
    rh_registry_count(c->cfg->reg, s->slot, s->serve_leg ? 0 : s->up_acc,
                      s->serve_leg ? 0 : s->down_sent);
}

/* A serve leg alone (rh_pair_watch): when its serve counts as gone, unheard
 * since it was left alone or since its last request, whichever came later. */
static long serve_gone_at(const session *s)
{
    long from = s->last_heard > s->alone_since ? s->last_heard : s->alone_since;
    return from + 1000L * RH_SERVE_GONE_S;
}

long rh_core_session_next_deadline(const session *s)
{
    /* a watched session is in use: no idle timeout (rh_core_watch.c) */
    long d = s->watch ? LONG_MAX : s->last_heard + (long)s->idle_s * 1000L;
    if (s->throttle_until && s->throttle_until < d)
        d = s->throttle_until;
    if (s->connecting && s->connect_deadline < d)
        d = s->connect_deadline;
    if (s->finished && s->linger_until < d)
        d = s->linger_until;
    if (s->unclaimed && s->claim_deadline < d)
        d = s->claim_deadline;
    if (s->alone_since && serve_gone_at(s) < d)
        d = serve_gone_at(s);
    /* a heartbeat goes only between frames: a pull blocked inside one (its
     * client reads nothing) moves on EPOLLOUT, and a deadline in the past here
     * would spin the loop (rh_core_session_timer could not send the H) */
    const conn *pk = s->pull;
    if (pk && !pk->batch && pk->frame_left == 0 && pk->out_len == pk->out_off) {
        long hb = pull_hb_at(s, pk, rh_now_ms());
        if (hb < d)
            d = hb;
        if (pk->a_due && pk->a_due < d)
            d = pk->a_due;
    }
    if (s->pull && s->pull->batch && !s->pull->batch_started && batch_due(s, s->pull) < d)
        d = batch_due(s, s->pull);
    for (int i = 0; i < s->nwait; ++i)
        if (s->push_wait[i]->wait_until < d)
            d = s->push_wait[i]->wait_until;
    return d;
}

/* Closes the target connection (with RST when the session was reset: the
 * target must not take it as a clean end) and frees the session's rings. */
static void target_close(core *c, session *s)
{
    if (s->fd >= 0) {
        if (s->reset) {
            struct linger lg = { 1, 0 };
            setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        epoll_ctl(c->ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
    rh_ring_release(&s->up);
    rh_ring_release(&s->down);
    rh_core_mem_forget(c, s);
}

void rh_core_session_free(core *c, session *s)
{
    for (session **p = &c->again; s->again && *p; p = &(*p)->next_again)
        if (*p == s) {
            *p = s->next_again;
            break;
        }
    rh_core_watch_check(c, s);   /* dead: a watch still holding it answers */
    target_close(c, s);
    rh_udp_free(c, s);
    if (s->cl) {
        --s->cl->sessions;
        rh_client_touch(s->cl, rh_now_ms());
    }
    c->by_slot[s->slot] = NULL;
    session_count(c, s);
    rh_registry_release(c->cfg->reg, s->slot);
    rh_timers_remove(&c->timers, &s->timer);
    free(s);
}

/* Keeps a reset session's reason for requests that come after it is gone
 * (the oldest entry makes room); control bytes (a client's R frame may carry
 * any) would break the reply line. */
static void tomb_put(core *c, const session *s, const char *reason)
{
    rh_tomb *t = &c->tombs[c->tomb_next++ % TOMB_MAX];
    t->slot = s->slot;
    t->gen = s->gen;
    t->until = rh_now_ms() + TOMB_MS;
    memcpy(t->secret, s->secret, RH_SECRET_LEN);
    snprintf(t->reason, sizeof(t->reason), "%s", reason);
    for (char *p = t->reason; *p; ++p)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

/* The reason a session reset in the last TOMB_MS, or NULL. */
static const char *tomb_find(const core *c, uint32_t slot, uint32_t gen,
                             const unsigned char *secret)
{
    long now = rh_now_ms();
    for (unsigned i = 0; i < TOMB_MAX; ++i) {
        const rh_tomb *t = &c->tombs[i];
        if (t->until > now && t->slot == slot && t->gen == gen
            && rh_ct_equal(t->secret, secret, RH_SECRET_LEN))
            return t->reason;
    }
    return NULL;
}

/* A push of a session that ends now, reset: 422 after a failed check, else
 * 410 naming the reset, so that a client hearing it on a push before its
 * pull's R frame says why the session ended, not that it is unknown. */
static void reset_answer(core *c, conn *k, const session *s, const char *reason)
{
    if (s->failed_check)
        rh_core_conn_error(c, k, RH_STATUS_INTEGRITY, "session closed: %s", reason);
    else
        rh_core_conn_error(c, k, RH_STATUS_GONE, "reason=" RH_REASON_TOKEN_RESET
                           " session reset: %s", reason);
}

/* Ends a session. Attached connections get a last word: the push a DONE or an
 * error, the pull an F (clean) or R frame when it is between frames. */
void rh_core_session_end(core *c, session *s, int reset, const char *reason)
{
    if (s->dead)
        return;
    s->dead = 1;
    s->reset = reset;
    if (reason != s->reason)
        snprintf(s->reason, sizeof(s->reason), "%s", reason);
    if (reset)
        tomb_put(c, s, reason);
    rh_core_log(c, reset ? RH_LOG_INFO : RH_LOG_DEBUG,
                "session %s closed (%s) target=%s up=%" PRIu64 " down=%" PRIu64,
                s->sid, reason, s->target, s->up_acc, s->down_sent);
    rh_pair_session_end(c, s, reset, reason);
    rh_core_watch_check(c, s);   /* a watch that has it answers now */
    if (s->opener) {
        conn *k = s->opener;
        s->opener = NULL;
        k->s = NULL;
        if (s->open_why)
            rh_core_conn_error(c, k, 502, "reason=%s %s", s->open_why, reason);
        else
            rh_core_conn_error(c, k, 502, "%s", reason);
    }
    if (s->push) {
        conn *k = s->push;
        s->push = NULL;
        k->s = NULL;
        if (reset)
            reset_answer(c, k, s, reason);
        else {
            rh_core_out_printf(k, "DONE %" PRIu64, s->up_acc);
            rh_core_conn_reply_done(c, k);
        }
    }
    for (int i = 0; i < s->nwait; ++i) {
        conn *k = s->push_wait[i];
        k->s = NULL;
        reset_answer(c, k, s, reason);
    }
    s->nwait = 0;
    if (s->pull) {
        conn *k = s->pull;
        s->pull = NULL;
        k->s = NULL;
        if (k->batch && !k->batch_started) {
            /* a waiting long-poll gets a complete answer: A, then R or E */
            int term = reset ? RH_FRAME_RESET : RH_FRAME_END;
            size_t rl = reset ? strlen(reason) : 0;
            rh_core_out_printf(k, "OK %" PRIu64 " %zu", s->down_sent,
                               (size_t)(RH_FRAME_HDR + 8 + RH_FRAME_HDR) + rl);
            rh_core_out_ack(k, s->up_acc);
            rh_core_out_frame(k, term, reason, rl);
            rh_core_conn_reply_done(c, k);
        } else if (k->batch || k->frame_left) {
            rh_core_conn_kill(c, k);   /* mid-answer: the client sees it cut */
        } else {
            if (reset)
                rh_core_out_frame(k, RH_FRAME_RESET, reason, strlen(reason));
            rh_core_conn_reply_done(c, k);
        }
    }
    if (s->failed_check) {
        /* kept a while without its target, so that every request of the session
         * hears why it ended (422), not just that it did (410); reset is set */
        target_close(c, s);
        s->timer.deadline = rh_now_ms() + FAILED_LINGER_MS;
        rh_timers_fix(&c->timers, &s->timer);
        return;
    }
    s->next_dead = c->dead_sessions;
    c->dead_sessions = s;
}

/* Ends a reset session with the reason it recorded (a copy: session_end
 * writes s->reason). */
void rh_core_session_end_reset(core *c, session *s)
{
    char why[sizeof(s->reason)];
    memcpy(why, s->reason, sizeof(why));
    rh_core_session_end(c, s, 1, why);
}

/* The session a token names, dead or alive; or NULL, and the request has
 * its answer (400 malformed; 410, with the reason when it was reset lately). */
static session *session_of_token(core *c, conn *k, const char *token)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    if (rh_token_parse(token, &slot, &gen, secret) != 0) {
        rh_core_conn_error(c, k, 400, "malformed session token");
        return NULL;
    }
    /* the slot field names the shard too: another core's token is unknown here */
    int here = rh_registry_local_slot(c->cfg->reg, slot, &slot) == 0;
    session *s = here ? c->by_slot[slot] : NULL;
    if (s && s->gen == gen && rh_ct_equal(s->secret, secret, RH_SECRET_LEN))
        return s;
    const char *why = here ? tomb_find(c, slot, gen, secret) : NULL;
    if (why)
        rh_core_conn_error(c, k, RH_STATUS_GONE, "reason=" RH_REASON_TOKEN_RESET
                           " session reset: %s", why);
    else
        rh_core_conn_error(c, k, RH_STATUS_GONE, "unknown or expired session");
    return NULL;
}

/* Answers a request for a session that ended: 422 while a failed check
 * lingers, else 410, with the reason when it was reset. */
static void session_dead_answer(core *c, conn *k, const session *s)
{
    if (s->failed_check || s->reset)
        reset_answer(c, k, s, s->reason);
    else
        rh_core_conn_error(c, k, RH_STATUS_GONE, "unknown or expired session");
}

/* The session a request's token names, heard from now; or NULL, and the
 * request has its answer (see session_of_token). A serve leg not yet taken
 * is not taken by this (see rh_core_session_find). */
session *rh_core_session_lookup(core *c, conn *k, const char *token)
{
    session *s = session_of_token(c, k, token);
    if (s && s->dead) {
        session_dead_answer(c, k, s);
        return NULL;
    }
    if (s)
        s->last_heard = rh_now_ms();
    return s;
}

/* GONE: the handler found no session for the token in the registry; the
 * answer is 410 either way, with the reason while the core has it. */
void rh_core_session_gone(core *c, conn *k, const char *token)
{
    session *s = session_of_token(c, k, token);
    if (s && s->dead)
        session_dead_answer(c, k, s);
    else if (s)   /* alive here, not in the registry the handler read */
        rh_core_conn_error(c, k, RH_STATUS_GONE, "unknown or expired session");
}

/* As rh_core_session_lookup; the first request of a serve leg means its
 * serve took the connection (tentative pairing, rh_pair.c). */
session *rh_core_session_find(core *c, conn *k, const char *token)
{
    session *s = rh_core_session_lookup(c, k, token);
    if (s && s->unclaimed)
        rh_pair_claimed(c, s);
    return s;
}

/* One turn of a pump: 1 when bytes moved (or a waiting push may start). */
static int pump_round(core *c, session *s)
{
    uint64_t before = s->up_wr + s->down_rd + s->down_sent + s->up_acc + s->up_rcv;
    conn *push_before = s->push;
    if (!s->push && s->nwait)
        rh_core_push_next(c, s);
    rh_core_push_process(c, s);
    if (s->dead)
        return 0;
    rh_core_target_write(c, s);
    if (s->dead)
        return 0;
    rh_core_push_read_on(c, s);   /* more input, without an epoll round */
    if (s->dead)
        return 0;
    rh_core_target_read(c, s);
    rh_core_pull_write(c, s);
    return before != s->up_wr + s->down_rd + s->down_sent + s->up_acc + s->up_rcv
           || (push_before && !s->push && s->nwait);
}

/* Moves whatever can move, then arms epoll for what is waited on. A pump
 * takes PUMP_ROUNDS turns at most, so one busy session does not hold the
 * loop; one stopped there with bytes still moving goes on the again list.
 * epoll cannot bring it back: a push's input buffer may hold bytes the ring
 * now has room for, with the push's EPOLLIN off (its buffer is full, or its
 * handler sent all) and the target's EPOLLOUT off (the ring drained). */
void rh_core_session_again_add(core *c, session *s)
{
    if (!s->again) {
        s->again = 1;
        s->next_again = c->again;
        c->again = s;
    }
}

/* Rendezvous: the peer's bytes moved in this pump (its pull has them, or its
 * push has room): its pump runs now, or next turn when it is the pump that
 * called this one's (no recursion). */
static void pump_peer(core *c, session *s)
{
    session *p = s->peer;
    if (!p || !p->kick || p->dead)
        return;
    if (p->in_pump)
        rh_core_session_again_add(c, p);
    else
        rh_core_session_pump(c, p);
}

void rh_core_session_pump(core *c, session *s)
{
    int moved = 0;
    s->in_pump = 1;
    s->kick = 0;
    for (int round = 0; round < PUMP_ROUNDS && !s->dead && !s->connecting; ++round)
        if (!(moved = pump_round(c, s)))
            break;
    if (moved && !s->dead)
        rh_core_session_again_add(c, s);
    if (!s->dead && s->up_shut && s->down_fin_sent && !s->pull && !s->down_reset) {
        if (!s->resumable || s->close_asked)
            rh_core_session_end(c, s, 0, "closed by both ends");
        else if (!s->finished) {
            /* the client may still come back for the last bytes: linger until it
             * says close, or a little while */
            long now = rh_now_ms();
            long linger = s->idle_s < 30 ? 1000L * s->idle_s : 30000L;
            s->finished = 1;
            s->linger_until = now + linger;
        }
    }
    if (!s->dead && s->down_reset && !down_unsent(s) && !s->pull
        && (!s->resumable || s->down_acked == s->down_sent)) {
        /* the target reset and nothing is left to deliver: free it now */
        rh_core_session_end_reset(c, s);
    }
    if (!s->dead)
        rh_core_session_update(c, s);
    if (s->watch)
        rh_core_watch_check(c, s);   /* down bytes came, or the end */
    pump_peer(c, s);
    s->in_pump = 0;
}

/* The sessions whose pump stopped at its bound in the last turn: on they go
 * (each a bound's worth a turn, so busy sessions share the loop). */
void rh_core_session_again(core *c)
{
    session *list = c->again;
    c->again = NULL;
    while (list) {
        session *s = list;
        list = s->next_again;
        s->again = 0;
        if (!s->dead)
            rh_core_session_pump(c, s);
    }
}

void rh_core_session_update(core *c, session *s)
{
    uint32_t want = 0;
    int held = s->throttle_until && rh_core_throttled(s, rh_now_ms());
    if (s->connecting)
        want = EPOLLOUT;
    else {
        /* held back by a rate limit: the timer, not the target, wakes it */
        if (down_wants_read(s) && !held)
            want |= EPOLLIN;
        /* only checked bytes may go: a ring holding just a frame's unchecked
         * bytes waits for its C frame, not for a writable target (which
         * would wake the loop for nothing, once per frame) */
        if (((s->up_acc > s->up_wr && !s->peer)
             || (s->up_fin && !s->up_shut && !rh_ring_len(&s->up))) && !held)
            want |= EPOLLOUT;
        /* rendezvous: the peer is no socket; a pump moves what can move */
        if (!s->in_pump && s->peer && rh_pair_ready(s, rh_now_ms()))
            rh_core_session_again_add(c, s);
    }
    rh_core_arm(c, s->fd, s, &s->ev, want);
    session_count(c, s);
    rh_pair_watch(s, rh_now_ms());

    conn *k = s->push;
    if (k) {
        uint32_t w = 0;
        /* a reply line goes out now, not after one more epoll round: the
         * handler waits for it before it sends the body (an echo's latency) */
        if (k->out_len > k->out_off)
            (void)rh_core_out_flush(k);   /* an error shows again on EPOLLOUT */
        if (!k->eof && k->in_len < PUSH_IN_MAX && rh_ring_space(&s->up))
            w |= EPOLLIN;
        if (k->out_len > k->out_off)
            w |= EPOLLOUT;
        rh_core_arm(c, k->fd, k, &k->ev, w);
    }
    k = s->pull;
    if (k) {
        uint32_t w = EPOLLIN;   /* tells us when the handler goes away */
        if (k->batch)
            w |= k->batch_started ? EPOLLOUT : 0;
        else if (k->out_len > k->out_off || down_unsent(s)
                 || (s->down_eof && !s->down_fin_sent))
            w |= EPOLLOUT;   /* an owed A frame waits for its timer (ack_now) */
        rh_core_arm(c, k->fd, k, &k->ev, w);
    }
    long d = rh_core_session_next_deadline(s);
    if (d < s->timer.deadline) {
        s->timer.deadline = d;
        rh_timers_fix(&c->timers, &s->timer);
    }
}

/* The pull's deadlines: a long-poll that ran out (an empty answer), an owed
 * A frame, a heartbeat. The session may end on the way (s->dead). */
static void pull_timer(core *c, session *s, conn *k, long now)
{
    if (k->batch) {
        if (!k->batch_started && now >= batch_due(s, k))
            rh_core_pull_write(c, s);
        return;
    }
    if (k->a_due && now >= k->a_due) {
        rh_core_pull_write(c, s);
        if (s->dead || s->pull != k)
            return;
    }
    if (now >= pull_hb_at(s, k, now) && k->frame_left == 0
        && k->out_len == k->out_off) {
        rh_core_out_frame(k, RH_FRAME_HEARTBEAT, NULL, 0);
        rh_core_pull_write(c, s);
    }
}

void rh_core_session_timer(core *c, session *s, long now)
{
    if (s->connecting && now >= s->connect_deadline) {
        if (s->opener) {
            conn *k = s->opener;
            s->opener = NULL;
            k->s = NULL;
            rh_core_conn_error(c, k, 504, "connecting to target '%s' timed out", s->target);
        }
        rh_core_session_end(c, s, 1, "connect timeout");
        return;
    }
    if (s->finished && now >= s->linger_until) {
        rh_core_session_end(c, s, 0, "closed by both ends");
        return;
    }
    if (s->unclaimed && now >= s->claim_deadline) {
        rh_pair_claim_late(c, s, now);
        if (s->dead)
            return;
    }
    if (s->alone_since && now >= serve_gone_at(s)) {
        char why[96];
        snprintf(why, sizeof(why), "its serve went away (no request of the serve leg for %d s)",
                 RH_SERVE_GONE_S);
        rh_core_session_end(c, s, 1, why);
        return;
    }
    if (s->throttle_until && now >= s->throttle_until) {
        s->throttle_until = 0;   /* the rate limit has bytes again */
        rh_core_session_pump(c, s);
        if (s->dead)
            return;
    }
    if (!s->watch && now >= s->last_heard + (long)s->idle_s * 1000L) {
        rh_core_session_end(c, s, 1, "idle timeout");
        return;
    }
    for (int i = 0; i < s->nwait; ) {
        conn *k = s->push_wait[i];
        if (now < k->wait_until) {
            ++i;
            continue;
        }
        s->push_wait[i] = s->push_wait[--s->nwait];
        k->s = NULL;
        rh_core_conn_error(c, k, 409, "push offset %" PRIu64 " not reached in time "
                           "(RelayPushWait) (accepted %" PRIu64 ")", k->want_off, s->up_acc);
    }
    if (s->pull)
        pull_timer(c, s, s->pull, now);
    if (s->dead)
        return;
    s->timer.deadline = rh_core_session_next_deadline(s);
    if (s->timer.deadline <= now)
        s->timer.deadline = now + 1000;
    rh_timers_fix(&c->timers, &s->timer);
    rh_core_session_update(c, s);
}
