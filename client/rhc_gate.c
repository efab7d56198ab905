/* relay-https client: the gate of new connections (rhc_gate.h). */
#include <stdint.h>
#include <stddef.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
#include "rhc_log.h"
#include "rhc_tunnel_int.h"

static void unlink_waiting(rhc_ctx *c, struct rhc_req *r)
{
    if (r->gate_prev)
        r->gate_prev->gate_next = r->gate_next;
    else
        c->gate_head = r->gate_next;
    if (r->gate_next)
        r->gate_next->gate_prev = r->gate_prev;
    else
        c->gate_tail = r->gate_prev;
    r->gate_prev = r->gate_next = NULL;
    --c->ngated;
}

static int start(struct rhc_req *r)
{
    if (curl_multi_add_handle(r->ctx->multi, r->h) != CURLM_OK)
        return -1;
    r->gate = GATE_CONNECTING;
    ++r->ctx->nconnecting;
    return 0;
}

size_t rhc_gate_cap(const rhc_ctx *c)
{
    return CONNECTING_MAX - c->gate_cut;
}

int rhc_gate_go(struct rhc_req *r)
{
    rhc_ctx *c = r->ctx;

    if (c->nconnecting < rhc_gate_cap(c) && !c->gate_head)
        return start(r);
    r->gate = GATE_WAITING;
    r->gate_prev = c->gate_tail;
    if (c->gate_tail)
        c->gate_tail->gate_next = r;
    else
        c->gate_head = r;
    c->gate_tail = r;
    ++c->ngated;
    return 0;
}

/* The tunnel's clocks that judge the server by r (silence, unconfirmed
 * bytes, the probe) start now, waited ms late: the server could not answer
 * what was not asked yet, nor read from a connection not up yet. */
static void clocks_start(struct rhc_req *r, int64_t now, int64_t waited)
{
    rhc_tunnel *t = r->t;

    if (!t)
        return;
    if (waited <= 0) {
        t_touch(t);
        return;
    }
    if (r == down_req(t)) {
        if (t->down.last_rx < now)
            t->down.last_rx = now;
        if (t->xp.probe_until)
            t->xp.probe_until += waited;
    }
    if (r == up_streamer(t) && t->push.ack_wait_since && t->push.ack_wait_since < now)
        t->push.ack_wait_since = now;
    t_touch(t);
}

static void uncount(struct rhc_req *r)
{
    if (r->gate == GATE_CONNECTING) {
        r->gate = GATE_NONE;
        --r->ctx->nconnecting;
    }
}

void rhc_gate_connected(struct rhc_req *r)
{
    rhc_ctx *c = r->ctx;

    if (r->gate != GATE_CONNECTING)
        return;
    uncount(r);
    /* additive increase: one more per CONNECTING_MAX connections up */
    if (c->gate_cut && ++c->gate_ups >= CONNECTING_MAX) {
        --c->gate_cut;
        c->gate_ups = 0;
    }
    int64_t now = rh_now_ms();
    if (now > r->started)       /* a pooled connection: nothing was late */
        clocks_start(r, now, now - r->started);
}

/* A request that timed out before its connection was up: the server does not
 * keep up with the connects in flight, so fewer go at once (halved, once for
 * the requests started before the last cut: they were in flight under the old
 * bound). Refusals and resets are no such sign: a server down refuses at once. */
void rhc_gate_ended(struct rhc_req *r, CURLcode rc)
{
    rhc_ctx *c = r->ctx;

    if (r->gate != GATE_CONNECTING || rc != CURLE_OPERATION_TIMEDOUT ||
        r->started < c->gate_cut_at)
        return;
    size_t cap = rhc_gate_cap(c) / 2;
    if (cap < CONNECTING_MIN)
        cap = CONNECTING_MIN;
    if (cap < rhc_gate_cap(c))
        rhc_info("connections: one timed out before it was up (%s): at most %zu "
                 "connecting at once, from %zu", r->errbuf[0] ? r->errbuf : "timeout", cap,
                 rhc_gate_cap(c));
    c->gate_cut = CONNECTING_MAX - cap;
    c->gate_ups = 0;
    c->gate_cut_at = rh_now_ms();
}

void rhc_gate_forget(struct rhc_req *r)
{
    if (r->gate == GATE_WAITING)
        unlink_waiting(r->ctx, r);
    uncount(r);
    r->gate = GATE_NONE;
}

/* A request that waited starts now. */
static void started_late(struct rhc_req *r, int64_t now)
{
    int64_t waited = now - r->started;

    r->started = now;
    clocks_start(r, now, waited);
}

void rhc_gate_release(rhc_ctx *c)
{
    int64_t now = rh_now_ms();

    while (c->gate_head && c->nconnecting < rhc_gate_cap(c)) {
        struct rhc_req *r = c->gate_head;
        unlink_waiting(c, r);
        r->gate = GATE_NONE;
        if (start(r) < 0) {     /* out of memory: as req_go's callers do */
            if (r->t)
                t_fail(r->t, RHC_EXIT_ERROR, "%s: cannot start a request",
                       kind_name[r->kind]);
            continue;
        }
        started_late(r, now);
    }
}

#if LIBCURL_VERSION_NUM >= 0x075000
static int prereq_cb(void *ud, char *ip, char *local_ip, int port, int local_port)
{
    (void)ip;
    (void)local_ip;
    (void)port;
    (void)local_port;
    rhc_gate_connected(ud);
    return CURL_PREREQFUNC_OK;
}
#endif

/* libcurl before 7.80 has no callback for it: the first answer line or the
 * first body byte asked for say it instead (rhc_req.c, rhc_body.c). */
void rhc_gate_set(struct rhc_req *r)
{
#if LIBCURL_VERSION_NUM >= 0x075000
    curl_easy_setopt(r->h, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(r->h, CURLOPT_PREREQDATA, r);
#else
    (void)r;
#endif
}
