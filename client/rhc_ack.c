/* relay-https client: acknowledging down bytes (resume): the server keeps
 * what it sent until told, on ack requests of their own. */
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

/* Resume: down bytes received but not yet acknowledged to the server. */
static uint64_t ack_gap(const rhc_tunnel *t)
{
    return t->sess.resume ? t->down.off - t->ack.sent : 0;
}

/* Resume with a streamed down direction: the server keeps what it sent until
 * told, in its buffer; an ack request tells it, on a request of its own (see
 * body_read for why not in a body). One at a time: once a quarter of the
 * server's buffer came, or once down is quiet, so that an idle session holds no
 * memory there. */
/* The server forgets a session not heard from for its idle timeout (a serve
 * leg: for RH_SERVE_GONE_S): whatever keeps an idle session alive comes at
 * least three times as often. */
int64_t alive_every(const rhc_tunnel *t)
{
    int64_t e = t->sess.idle_ms / 3;
    /* a serve leg has less: RH_SERVE_GONE_S without a word means a dead serve */
    if (t->sess.serve_leg && e > RH_SERVE_GONE_S * 1000 / 3)
        e = RH_SERVE_GONE_S * 1000 / 3;
    return e;
}

/* After a cut the down side goes on with a new request, and a server that
 * restarted answers it 410. But libcurl 7.88 loses that answer when it
 * comes while the request's body is open (a duplex): it reports a reset
 * stream, or nothing at all until the body moves, and the tunnel hung for
 * seconds, then blamed an intermediary. An ack has no body: its answer always
 * arrives, within a round trip of the server being back. */
static int verify_due(const rhc_tunnel *t)
{
    return t->ack.verify && !t->ack.n;
}

/* A serve leg waiting on a batch long-poll. The server takes its serve for
 * gone RH_SERVE_GONE_S after the leg's last request, and the poll's answer may
 * go into a path that holds it (a stalled or black-holed connection) while
 * the serve waits up to the poll time and 15 s more to notice: the leg was
 * reset 10 s in. So while the poll is out an ack goes every alive_every. */
static int serve_poll(const rhc_tunnel *t, const struct rhc_req *dr)
{
    return t->sess.serve_leg && dr && dr->batch && !t->down.fin;
}

/* The quiet ack (down went quiet with less than a full gap unacknowledged)
 * rides in the open stream push as an A frame instead of a request of its own,
 * when nothing can hold it there: every up byte sent is confirmed and none
 * waits, so the server reads the frame at once (an A behind up bytes that
 * wait for the target could stall an echo). An idle interactive tunnel thus
 * costs the server no request per burst, and a tunnel woken from the watch
 * two new connections instead of three. A bulk download's acks (a full gap)
 * stay requests: a path that holds small body chunks would hold them and the
 * server's window would fill. The push's answer confirms it (ack_push_done). */
int ack_by_push(const rhc_tunnel *t, uint64_t gap)
{
    const struct rhc_req *sc = t->rq.spush;

    return sc && t->xp.up == RHC_XP_STREAM && gap && gap < t->ack.every && !t->ack.n &&
           sc->gate == GATE_NONE && sc->streamed && !sc->end_wanted && !sc->body_ended &&
           !sc->p_fin && !sc->p_r && !t->rq.spush_next && !t->push.r_pending &&
           !t->push.pads && !t->xp.switching && !t->xp.up_hold &&
           t->up.acked == t->up.sent && up_read_off(t) == t->up.sent;
}

static void ack_in_push(rhc_tunnel *t)
{
    t->push.a_pending = 1;
    t->push.a_off = t->down.off;
    t->ack.sent = t->down.off;
    unpause_send(t->rq.spush);
    t_log(t, 3, "ack %" PRIu64 " in the push", t->down.off);
}

static void ack_push_orphan(rhc_tunnel *t)
{
    t->push.a_pending = 0;
    t->ack.sent = t->ack.conf;
}

/* The gap, after an A frame left pending with no push to carry it any more
 * went back to the request path. */
static uint64_t ack_gap_now(rhc_tunnel *t)
{
    if (t->push.a_pending && (!t->rq.spush || t->xp.up != RHC_XP_STREAM))
        ack_push_orphan(t);
    return ack_gap(t);
}

void maybe_ack(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *dr = down_req(t);
    uint64_t gap = ack_gap_now(t);
    int poll_keep = serve_poll(t, dr) && now >= t->down.keep_at;
    /* parked, no push heartbeats reach the server: an ack now and then does */
    int keep = (t->push.parked && now >= t->push.park_keep_at) || poll_keep;
    int verify = verify_due(t);

    if (t->ack.n == ACK_INFLIGHT || t->end.code || now < t->ack.retry_at)
        return;
    if (!verify && ((!gap && !keep) || !dr || (dr->batch && !poll_keep)))
        return;
    /* on a long path one ack in flight lets the server's window fill in two
     * round trips, not one: more go out, but only for a full gap each (a
     * keep-alive goes anyway: the one in flight may be held by the path) */
    if (t->ack.n && gap < t->ack.every && !keep)
        return;
    if (!keep && !verify && gap < t->ack.every && now < t->down.last_data + ACK_IDLE_MS)
        return;
    if (!verify && !keep && ack_by_push(t, gap)) {
        ack_in_push(t);
        return;
    }
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_ACK, t->token);
    if (!r || add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        add_header(r, "Content-Type:") < 0)
        goto fail;
    req_empty_body(r);
    r->offset = t->down.off;
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)ACK_TIMEOUT_MS);
    if (req_go(r) < 0)
        goto fail;
    t->ack.req[t->ack.n++] = r;
    t->ack.sent = t->down.off;
    t->push.park_keep_at = t->down.keep_at = now + alive_every(t);
    t_log(t, 3, "ack %" PRIu64, t->down.off);
    return;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "ack: cannot start a request (out of memory)");
}

/* When maybe_ack wants a look without an fd event, or -1. */
int64_t ack_deadline(const rhc_tunnel *t)
{
    struct rhc_req *dr = down_req(t);

    int64_t d;

    if (verify_due(t))
        return t->ack.retry_at;
    if (serve_poll(t, dr) && t->ack.n < ACK_INFLIGHT)
        d = t->down.keep_at;
    else if (t->ack.n || !dr || dr->batch)
        return -1;
    else if (ack_gap(t))
        d = t->down.last_data + ACK_IDLE_MS;
    else if (t->push.parked)
        d = t->push.park_keep_at;        /* the keep-alive ack */
    else
        return -1;
    return d > t->ack.retry_at ? d : t->ack.retry_at;
}

void ack_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    for (int i = 0; i < t->ack.n; ++i)
        if (t->ack.req[i] == r) {
            t->ack.req[i] = t->ack.req[--t->ack.n];
            break;
        }
    if (rc == CURLE_OK && r->hdr_done && (r->status == 204 || r->status == 200)) {
        if (r->offset > t->ack.conf)
            t->ack.conf = r->offset;
        t->ack.fails = 0;
        t->ack.verify = 0;
    } else if (rc == CURLE_OK && r->hdr_done && r->status == RH_STATUS_INTEGRITY) {
        fail_http(t, r, "ack");     /* the session failed a check: nothing to wait for */
    } else if (rc == CURLE_OK && r->hdr_done && r->status == RH_STATUS_GONE &&
               !(t->down.fin && t->up.done)) {
        char what[64];
        /* the server restarted (or forgot the session): this connection ends
         * now; new ones open new sessions */
        snprintf(what, sizeof(what), "session %s", t->sid);
        fail_http(t, r, what);
    } else if (rc == CURLE_OK && r->hdr_done && r->status == 416) {
        /* beyond what the server sent: it cannot be (a server that went back
         * without telling); the pull will find out */
        t_log(t, 1, "ack: HTTP 416 for offset %" PRIu64, r->offset);
        t->ack.sent = t->ack.conf;
        t->ack.retry_at = rh_now_ms() + 1000;
    } else {
        /* a cut, or the session is gone (the pull says so): try again later */
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        if (rc != CURLE_OK)
            t_log(t, 2, "ack: %s; trying again", req_error(r, rc));
        else
            t_log(t, 2, "ack: HTTP %ld %s; trying again", r->status, line);
        t->ack.sent = t->ack.conf;
        t->ack.retry_at = rh_now_ms() + backoff_ms(t->ack.fails++);
    }
    req_free(r);
}

/* A stream push ended: its answer confirms the A frames it carried (the
 * server reads a body's frames in order); without one they may be lost, and
 * what they said goes again (an ack request, or the next pull's Relay-Ack). */
void ack_push_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    int answered = rc == CURLE_OK && r->hdr_done && r->status == 200;

    if (r->kind != REQ_PUSH)
        return;
    if (answered && r->a_sent > t->ack.conf)
        t->ack.conf = r->a_sent;
    if (r == t->rq.spush && t->push.a_pending)      /* never left: no room, or cut */
        ack_push_orphan(t);
    if (!answered && r->a_sent > t->ack.conf)
        t->ack.sent = t->ack.conf;
}
