/* relay-https client: the gate of new connections (rhc_gate.h). */
#include <stdint.h>
#include <stddef.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
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

int rhc_gate_go(struct rhc_req *r)
{
    rhc_ctx *c = r->ctx;

    if (c->nconnecting < CONNECTING_MAX && !c->gate_head)
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

void rhc_gate_connected(struct rhc_req *r)
{
    if (r->gate == GATE_CONNECTING) {
        r->gate = GATE_NONE;
        --r->ctx->nconnecting;
    }
}

void rhc_gate_forget(struct rhc_req *r)
{
    if (r->gate == GATE_WAITING)
        unlink_waiting(r->ctx, r);
    rhc_gate_connected(r);
    r->gate = GATE_NONE;
}

/* A request that waited starts now: the tunnel's clocks that judge the
 * server (silence, unconfirmed bytes, the probe) start with it, since the
 * server could not answer what was not asked yet. */
static void started_late(struct rhc_req *r, int64_t now)
{
    rhc_tunnel *t = r->t;
    int64_t waited = now - r->started;

    r->started = now;
    if (!t)
        return;
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

void rhc_gate_release(rhc_ctx *c)
{
    int64_t now = rh_now_ms();

    while (c->gate_head && c->nconnecting < CONNECTING_MAX) {
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
