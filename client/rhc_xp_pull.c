/* relay-https client: pulls (stream or batch long-poll), the down request
 * when down is not duplex, and how the down side tries again. */
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

int start_pull(rhc_tunnel *t)
{
    int batch = t->xp.down == RHC_XP_BATCH;
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_PULL, t->token);
    int64_t now = rh_now_ms();

    watch_leave(t);             /* a pull takes over from the watch */
    if (!r || add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        add_header(r, "Content-Type:") < 0 ||
        (batch && add_header(r, RH_HDR_MODE ": " RH_MODE_BATCH) < 0))
        goto fail;
    r->batch = batch;
    if (!batch)
        req_stream_http1(r, t->route->o);
    watch_woke_conn(t, r);      /* out of a watch: only a connection used just now */
    req_empty_body(r);
    if (down_req_go(t, r, now) < 0)
        goto fail;
    t->rq.pull = r;
    t->watch.up_mark = up_read_off(t);
    if (batch)
        t->down.keep_at = now + alive_every(t);     /* a serve leg's keep-alive acks */
    t->xp.probe_until = t->xp.autox && !batch ? now + PROBE_FIRST_MS : 0;
    ++t->down.pulls;
    t_log(t, 2, "%s pull from offset %" PRIu64, batch ? "batch" : "stream", t->down.off);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "pull: cannot start a request (out of memory)");
    return -1;
}

/* Starts the request that carries down bytes next. */
void start_down(rhc_tunnel *t)
{
    if (t->down.fin || t->end.code)
        return;
    if (t->xp.down == RHC_XP_DUPLEX && t->xp.up == RHC_XP_DUPLEX && !t->up.done) {
        start_duplex(t);
        return;
    }
    if (t->xp.down == RHC_XP_DUPLEX)
        t->xp.down = RHC_XP_STREAM;  /* up went elsewhere: down goes on alone */
    start_pull(t);
}

/* Another try after a cut? A resumable session goes on trying,
 * with backoff, as long as the server keeps it (RelayIdleTimeout since it last
 * heard from us, less a margin): a cut shorter than that goes unnoticed
 * locally. Otherwise a few tries in a row. (Refusals, 409 and 503, always
 * get RETRY_MAX tries in a row.) */
int retry_ok(const rhc_tunnel *t, unsigned n)
{
    if (t->sess.resume)
        return rh_now_ms() - t->sess.last_contact < t->sess.idle_ms - IDLE_MARGIN_MS;
    return n < RETRY_MAX;
}

/* A down request died before any answer: another try? (Without resume, only a
 * few: no byte came, so none can be lost, but the path may be gone.) */
int unanswered_retry_ok(const rhc_tunnel *t)
{
    return t->sess.resume ? retry_ok(t, t->down.retries) : t->down.retries < 3;
}

/* What the classifiers of rhc_outcome.c need to know of the tunnel; retries:
 * the counter retry_ok() judges. */
void rhc_facts_of(const rhc_tunnel *t, unsigned retries, struct rhc_facts *f)
{
    memset(f, 0, sizeof(*f));
    f->read = up_read_off(t);
    f->sent = t->up.sent;
    f->acked = t->up.acked;
    f->down_off = t->down.off;
    f->eof = t->up.eof;
    f->autox = t->xp.autox;
    f->resume = t->sess.resume;
    f->retries = retries;
    f->can_retry = retry_ok(t, retries);
    f->unanswered_ok = unanswered_retry_ok(t);
    f->switched_pull = t->xp.switched_pull;
    f->up_hold = t->xp.up_hold;
    f->restarts = t->xp.restarts;
    f->up_on_it = t->xp.up == RHC_XP_DUPLEX;
    f->h2_resets = t->sess.h2_resets;
    f->slots_full = t->rq.nbpush >= BATCH_SLOTS;
}

/* The down request is given up without an answer: start another one later. */
void down_again(rhc_tunnel *t, struct rhc_req *r, const char *why)
{
    t_log(t, 2, "%s: %s; trying again", kind_name[r->kind], why);
    if (r == t->rq.pull)
        t->rq.pull = NULL;
    if (r == t->rq.duplex)
        t->rq.duplex = NULL;
    req_free(r);
    t->down.repull_at = rh_now_ms() + backoff_ms(t->down.retries++);
}

/* ... refused as busy (503, 429): not before the server's Retry-After. */
void down_busy_again(rhc_tunnel *t, struct rhc_req *r, const char *why)
{
    unsigned n = t->down.retries;
    down_again(t, r, why);
    t->down.repull_at = rh_now_ms() + busy_backoff_ms(n);
}

/* The pull ended as it should (E or F): the next one goes on after E, or an
 * idle batch tunnel waits in its route's watch. */
static void pull_ended(rhc_tunnel *t, struct rhc_req *r)
{
    int again = r->saw_end;

    t->down.retries = 0;
    t->rq.pull = NULL;
    if (again && watch_join(t, r, rh_now_ms()))
        again = 0;
    req_free(r);
    if (again) {
        t_log(t, 3, "pull ended (E) at offset %" PRIu64 ", pulling again", t->down.off);
        start_down(t);
    }
}

/* Another pull later: refused, busy, cut before the answer or in the middle. */
static void pull_again(rhc_tunnel *t, struct rhc_req *r, CURLcode rc, enum rhc_cause why)
{
    char buf[BODY_MAX + 32];

    if (why == RHC_WHY_REFUSED) {
        down_again(t, r, "HTTP 409 (the previous pull is still active)");
    } else if (why == RHC_WHY_BUSY) {
        down_busy_again(t, r, busy_why(r, buf, sizeof(buf)));
    } else if (why == RHC_WHY_CUT) {
        /* no byte came, so none can be lost: pull again with the same ack (a
         * server that did send some answers 416, never misplaced bytes) */
        t_log(t, 1, "pull: %s; trying again on a new connection", req_error(r, rc));
        t->down.fresh = 1;
        stat_resume(t);
        down_again(t, r, req_error(r, rc));
    } else {
        /* cut (by a gateway too): the server kept what it sent; a new pull
         * from what arrived */
        t_log(t, 1, "pull: %s; resuming at offset %" PRIu64 " on a new connection",
              why == RHC_WHY_GATEWAY || rc != CURLE_OK ? req_error(r, rc)
              : "response ended early", t->down.off);
        t->down.fresh = 1;
        stat_resume(t);
        down_again(t, r, "cut");
    }
}

static void pull_lost(rhc_tunnel *t, enum rhc_cause why)
{
    if (why == RHC_WHY_HELD)
        t_fail(t, RHC_EXIT_LOST, "pull: HTTP 409: the stream pull that was given up is still "
               "held open by an intermediary, and the server does not let a new pull take "
               "over; later sessions of this process start with batch pulls");
    else if (why == RHC_WHY_LOST_416)
        t_fail(t, RHC_EXIT_LOST, "pull: HTTP 416: down bytes were lost with the stream pull "
               "that was given up (an intermediary held them back); later sessions of this "
               "process start with batch pulls");
    else
        t_fail(t, RHC_EXIT_LOST, "pull: response ended without F or E (connection cut?)");
}

void pull_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    struct rhc_facts f;
    struct rhc_outcome o;

    if (t->end.code)
        return;
    rhc_facts_of(t, t->down.retries, &f);
    rhc_classify_pull(r, rc, &f, &o);
    switch (o.v) {
    case RHC_OUT_RESTART:
        t->rq.pull = NULL;
        req_free(r);
        restart_session(t, "the server keeps the stream pull that was given up");
        return;
    case RHC_OUT_RETRY:
        pull_again(t, r, rc, o.why);
        return;
    case RHC_OUT_LOST:
        pull_lost(t, o.why);
        return;
    case RHC_OUT_FAIL_HTTP:
        fail_http(t, r, "pull");
        return;
    case RHC_OUT_FAIL_CURL:
        fail_curl(t, r, rc, "pull");
        return;
    default:
        pull_ended(t, r);
    }
}

/* Liveness (docs/PROTOCOL.md): while data moves, the server heartbeats a silent
 * stream every RH_BUSY_HEARTBEAT_MS and answers a long-poll within
 * RH_BUSY_POLL_MS, so a response that stays silent longer went into a black
 * hole (a proxy or NAT that holds the connection and passes nothing): it is
 * given up in seconds instead of PULL_DEAD_MS. Our busy window is shorter than
 * the server's: it saw the same data earlier. */
int64_t pull_dead_ms(const rhc_tunnel *t, const struct rhc_req *dr, int64_t now)
{
    /* idle: a stream misses three heartbeats; a long-poll is late past the
     * server's poll time (announced; shorter or longer than the 60 s) */
    int64_t idle = dr->batch && t->sess.poll_ms ? t->sess.poll_ms + POLL_LATE_MS : PULL_DEAD_MS;

    /* a path that never showed a response of this transport is the probe's
     * business (an intermediary that holds responses, say), not a dead one */
    /* a long-poll is answered within RH_BUSY_POLL_MS of its start if the
     * server was busy then: judged by its start, not by now (our busy window
     * may end while it waits, and a black hole then cost the idle 40 s) */
    int64_t at = dr->batch && dr->started ? dr->started : now;
    if (t->xp.down_seen != t->xp.down || !t->sess.last_busy ||
        at - t->sess.last_busy >= RH_BUSY_WINDOW_MS - BUSY_MARGIN_MS)
        return idle;
    int64_t ms = dr->batch ? BUSY_POLL_DEAD_MS : BUSY_HB_DEAD_MS;
    /* A server late because its machine is overloaded looks like a black hole;
     * each resume costs it a new connection, which made thousands of tunnels
     * resume in a storm. So every resume in a row doubles the wait. */
    if (t->down.silent_n && now - t->down.silent_at < SILENT_FORGET_MS)
        ms <<= t->down.silent_n < SILENT_SHIFT_MAX ? t->down.silent_n : SILENT_SHIFT_MAX;
    return ms < idle ? ms : idle;
}

/* The down response r brought bytes (a header line or body): one that answered within
 * RH_BUSY_HEARTBEAT_MS of its start shows a prompt server, so the silence that
 * came before was the path's (a proxy that held one connection), not a late
 * server's: the resumes in a row are forgotten and the next silence is given
 * up in seconds again. (A fault proxy that held every connection after a
 * second or two had doubled the wait to 48 s and more.) */
void pull_answered(rhc_tunnel *t, const struct rhc_req *r, int64_t now)
{
    if (t->down.silent_n && now - r->started < RH_BUSY_HEARTBEAT_MS)
        t->down.silent_n = 0;
}

/* A response was given up as silent: the next one waits longer (pull_dead_ms). */
void pull_silence_noted(rhc_tunnel *t, int64_t now)
{
    if (now - t->down.silent_at >= SILENT_FORGET_MS)
        t->down.silent_n = 0;
    /* said without -v: a tunnel stalled this long must not look fine (item 18) */
    if (t->down.silent_n < SILENT_SHIFT_MAX && ++t->down.silent_n == SILENT_SHIFT_MAX)
        t_log(t, 0, "down: the server's responses went silent %d times in a row (the "
              "server, the path or this client overloaded?); still trying", SILENT_SHIFT_MAX);
    t->down.silent_at = now;
}
