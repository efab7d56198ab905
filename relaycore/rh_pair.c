/* Rendezvous in the relay core (docs/PROTOCOL.md, Rendezvous): a serve's
 * LISTEN waits for a client's OPEN of the same RelayService (or the open
 * waits a little for a listen), and the two become two sessions, the client
 * leg and the serve leg, each the other's target. So every transport,
 * resume, check and limit of an ordinary session applies to both legs
 * unchanged. The bytes go straight from one leg's up ring (or its push's
 * frame) into the other's down ring (rh_pair_move, rh_pair_put): no syscall,
 * one copy. A socketpair between the legs stays for the ends only (a FIN is
 * its shutdown, a leg gone is its close), so the ends keep the meaning an
 * ordinary target's have. Flow control runs end to end: a leg takes only what
 * its down ring would read from a target, so a full down ring leaves the
 * other leg's up ring full, which stops reading its push. Separate from
 * rh_core_open.c: nothing here connects anywhere. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_core_int.h"
#include "rh_util.h"

uint64_t rh_core_handoff_bytes;

/* ---- the waiting lists: oldest first, so serves share clients in turn ---- */

static void list_add(conn **head, conn *k)
{
    conn **pp = head, *prev = NULL;
    while (*pp) {
        prev = *pp;
        pp = &(*pp)->pair_next;
    }
    k->pair_prev = prev;
    k->pair_next = NULL;
    *pp = k;
}

static void list_del(conn **head, conn *k)
{
    if (k->pair_prev)
        k->pair_prev->pair_next = k->pair_next;
    else if (*head == k)
        *head = k->pair_next;
    if (k->pair_next)
        k->pair_next->pair_prev = k->pair_prev;
    k->pair_prev = k->pair_next = NULL;
}

static conn *list_find(conn *head, const char *svc, unsigned *count)
{
    conn *first = NULL;
    *count = 0;
    for (conn *k = head; k; k = k->pair_next)
        if (!strcmp(k->rq->target, svc)) {
            if (!first)
                first = k;
            ++*count;
        }
    return first;
}

/* A waiting request keeps its own copy of what it asked (the line is gone). */
static int keep_request(core *c, conn *k, const rh_ipc_req *rq)
{
    if (!k->rq && !(k->rq = malloc(sizeof(*k->rq)))) {
        rh_core_conn_error(c, k, 503, "out of memory");
        return -1;
    }
    if (k->rq != rq)
        memcpy(k->rq, rq, sizeof(*rq));
    return 0;
}

static void wait_on(core *c, conn **list, conn *k, int kind, long deadline)
{
    k->kind = kind;
    k->pair_deadline = deadline;
    list_add(list, k);
    if (!c->pair_due || deadline < c->pair_due)
        c->pair_due = deadline;
    /* nothing more comes on it: readable means the handler hung up */
    rh_core_arm(c, k->fd, k, &k->ev, EPOLLIN);
}

/* ---- services a serve listened for: only to tell "never" from "not now" ---- */

static int served(const core *c, const char *svc)
{
    for (unsigned i = 0; i < c->nserved && i < RH_SERVED_MAX; ++i)
        if (!strcmp(c->served[i], svc))
            return 1;
    return 0;
}

static void note_served(core *c, const char *svc)
{
    if (served(c, svc))
        return;
    snprintf(c->served[c->nserved % RH_SERVED_MAX], RH_TARGET_MAX, "%s", svc);
    ++c->nserved;
}

/* ---- the handoff between paired legs: the socketpair's write and read in
 * one copy ---- */

/* Rate limits apply as they would to a write to the target (from) and a read
 * from it (to). */
static size_t move_allow(core *c, session *from, session *to, size_t want)
{
    if (!rh_core_rate_limited(c) || !want)
        return want;
    want = rh_core_rate_allow(c, from, want);
    return want ? rh_core_rate_allow(c, to, want) : 0;
}

/* n bytes went from from's up direction into to's down ring: both pumps have
 * work (to's pull has bytes, from's up ring has room for its push). */
static void moved(core *c, session *from, session *to, size_t n)
{
    to->down_rd += n;
    rh_core_mem_sync(c, to);
    if (rh_core_rate_limited(c)) {
        rh_core_rate_took(c, from, n);
        rh_core_rate_took(c, to, n);
    }
    from->kick = 1;
    to->kick = 1;
    rh_core_handoff_bytes += n;
}

/* How many bytes to's down ring takes now: what it would read from a target. */
static size_t room_of(const session *to)
{
    if (!down_wants_read(to))
        return 0;
    size_t room = to->readahead - down_unsent(to);
    return room < rh_ring_space(&to->down) ? room : rh_ring_space(&to->down);
}

/* The same within RelayResumeMemory (none: to waits for room). */
static size_t take_room(core *c, session *to)
{
    size_t room = room_of(to);
    return room ? rh_core_mem_allow(c, to, room) : 0;
}

/* Checked up bytes [from->up_wr, from->up_acc) go from from's up ring into
 * its peer's down ring, as far as that takes them. Returns how many. */
size_t rh_pair_move(core *c, session *from)
{
    session *to = from->peer;
    size_t total = 0;
    while (to && from->up_acc > from->up_wr) {
        size_t want = (size_t)(from->up_acc - from->up_wr), room = take_room(c, to);
        if (want > room)
            want = room;
        if (!(want = move_allow(c, from, to, want)))
            break;
        struct iovec iov[2];
        int n = rh_ring_read_iov(&from->up, iov, want);
        size_t done = 0;
        for (int i = 0; i < n; ++i) {
            size_t k = rh_ring_put(&to->down, iov[i].iov_base, iov[i].iov_len);
            done += k;
            if (k < iov[i].iov_len)
                break;
        }
        if (!done)
            break;   /* out of memory: the next pump tries again */
        rh_ring_consume(&from->up, done);
        from->up_wr += done;
        moved(c, from, to, done);
        total += done;
    }
    return total;
}

/* A push's data bytes, checked and with from's up ring empty, go straight
 * into the peer's down ring (not even through from's ring). Returns how many
 * it took; the caller rings the rest. */
size_t rh_pair_put(core *c, session *from, const unsigned char *data, size_t len)
{
    session *to = from->peer;
    size_t room = to ? take_room(c, to) : 0;
    size_t want = move_allow(c, from, to, len < room ? len : room);
    size_t done = want ? rh_ring_put(&to->down, data, want) : 0;
    if (done) {
        from->up_wr += done;
        moved(c, from, to, done);
    }
    return done;
}

/* Bytes could move between s and its peer now (in either direction) and
 * nothing holds them back: s needs a pump even though no event will come. */
int rh_pair_ready(const session *s, long now)
{
    const session *p = s->peer;
    if (!p || p->dead || rh_core_throttled(s, now) || rh_core_throttled(p, now))
        return 0;
    return (p->up_acc > p->up_wr && room_of(s)) || (s->up_acc > s->up_wr && room_of(p));
}

/* ---- pairing ---- */

static void leg_start(core *c, session *s, int fd, long now, uint32_t state)
{
    s->fd = fd;
    rh_registry_set_state(c->cfg->reg, s->slot, state);
    s->last_heard = now;
    s->timer.deadline = rh_core_session_next_deadline(s);
    rh_timers_push(&c->timers, &s->timer);
}

static void answer_token(core *c, conn *k, const session *s)
{
    char tok[RH_TOKEN_LEN + 1];
    rh_token_format(tok, rh_registry_pub_slot(c->cfg->reg, s->slot), s->gen, s->secret);
    rh_core_out_printf(k, "OK %s", tok);
    rh_core_conn_reply_done(c, k);
}

static void no_server(core *c, conn *k)
{
    rh_core_conn_error(c, k, 503, "reason=" RH_REASON_TOKEN_NO_SERVER
                       " no server serves '%s' %s", k->rq->target,
                       served(c, k->rq->target) ? "now" : "(none has since the relay started)");
}

/* Pairs a client's open ko with a serve's listen kl (taken off its list by
 * the caller); both hold their request and its client. The listen hears its
 * serve leg's token now; the open waits, like an open whose target is
 * connecting, until the serve leg is taken (rh_pair_claimed) or dropped
 * (rh_pair_decline). On a failure each has its answer. */
static void pair(core *c, conn *ko, conn *kl)
{
    int sp[2];
    session *a = NULL, *b = NULL;
    long now = rh_now_ms();

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
        rh_core_log(c, RH_LOG_ERR, "service %s: socketpair: %s", ko->rq->target,
                    strerror(errno));
        rh_core_conn_error(c, ko, 503, "cannot pair with a server now (%s)", strerror(errno));
        rh_core_out_printf(kl, "OK");
        rh_core_conn_reply_done(c, kl);
        return;
    }
    /* the serve leg's requests go to BASE/NAME/push and the like, where the
     * Require that let its listen in may not apply: its token alone is its key */
    kl->rq->owner = 0;
    a = rh_core_session_new(c, ko, ko->rq, ko->cl);
    if (a)
        b = rh_core_session_new(c, kl, kl->rq, kl->cl);
    else {
        rh_core_out_printf(kl, "OK");   /* not its fault: it polls again */
        rh_core_conn_reply_done(c, kl);
    }
    if (!b) {
        close(sp[1]);
        if (a) {
            leg_start(c, a, sp[0], now, RH_SLOT_OPEN);
            rh_core_session_end(c, a, 1, "the serve leg could not be made");
            rh_core_conn_error(c, ko, 503, "no room for the serve leg of service '%s'",
                               ko->rq->target);
        } else
            close(sp[0]);
        return;
    }
    b->serve_leg = 1;
    b->unclaimed = 1;
    b->claim_deadline = now + RH_ACCEPT_CLAIM_MS;
    leg_start(c, a, sp[0], now, RH_SLOT_CONNECTING);
    leg_start(c, b, sp[1], now, RH_SLOT_SERVE);
    a->peer = b;
    b->peer = a;
    a->opener = ko;
    ko->kind = CK_OPEN;   /* its handler giving up ends the client leg */
    ko->s = a;
    rh_core_arm(c, ko->fd, ko, &ko->ev, EPOLLIN);
    rh_core_log(c, RH_LOG_DEBUG, "session %s: service=%s offered to serve leg session %s",
                a->sid, a->target, b->sid);
    answer_token(c, kl, b);
}

/* An open of a service, held: paired with the oldest waiting listen, else it
 * waits for one until its pair_deadline, then hears 503 no-server. */
static void offer(core *c, conn *k)
{
    unsigned n;
    conn *kl = list_find(c->listens, k->rq->target, &n);
    if (kl) {
        list_del(&c->listens, kl);
        pair(c, k, kl);
    } else if (rh_now_ms() >= k->pair_deadline)
        no_server(c, k);
    else
        wait_on(c, &c->svc_waits, k, CK_SVCWAIT, k->pair_deadline);
}

/* OPEN of a service: paired, or it waits (connect_s, bounded by the handler)
 * for a listen. k is held for cl. */
void rh_pair_open(core *c, conn *k, const rh_ipc_req *rq)
{
    if (keep_request(c, k, rq) != 0)
        return;
    unsigned wait_s = rq->connect_s < RH_SERVICE_WAIT_S ? rq->connect_s : RH_SERVICE_WAIT_S;
    k->pair_since = rh_now_ms();
    k->pair_deadline = k->pair_since + 1000L * wait_s;
    offer(c, k);
}

/* The first request of a serve leg came: its serve took the connection, so
 * the client's open hears its token now. */
void rh_pair_claimed(core *c, session *b)
{
    session *a = b->peer;
    b->unclaimed = 0;
    if (!a || !a->opener)
        return;
    conn *ko = a->opener;
    a->opener = NULL;
    ko->s = NULL;
    rh_registry_set_state(c->cfg->reg, a->slot, RH_SLOT_OPEN);
    a->last_heard = rh_now_ms();
    rh_core_log(c, RH_LOG_DEBUG, "session %s open service=%s, serve leg session %s",
                a->sid, a->target, b->sid);
    answer_token(c, ko, a);
}

/* A serve leg nobody took in time, or whose serve closed it at once (it
 * could not reach its local service): both legs go quietly (the client was
 * never told of them) and the client's open goes to the next listen. */
void rh_pair_decline(core *c, session *b, const char *why)
{
    session *a = b->peer;
    conn *ko = a ? a->opener : NULL;
    b->unclaimed = 0;
    b->peer = NULL;
    if (a) {
        a->peer = NULL;
        a->opener = NULL;
    }
    if (ko)
        ko->s = NULL;
    rh_core_log(c, RH_LOG_INFO, "session %s: serve leg of service '%s' dropped (%s)%s",
                b->sid, b->target, why, ko ? "; its client goes to the next listen" : "");
    rh_core_session_end(c, b, 1, why);
    if (a)
        rh_core_session_end(c, a, 1, why);
    if (!ko)
        return;
    /* the time a slow serve took is not the client's wait for a listen: one
     * more claim time at least, within what its handler waits for an answer */
    long now = rh_now_ms(), more = now + RH_ACCEPT_CLAIM_MS;
    long cap = ko->pair_since + 1000L * RH_SERVICE_WAIT_S + 3 * RH_ACCEPT_CLAIM_MS / 2;
    if (ko->pair_deadline < more)
        ko->pair_deadline = more < cap ? more : cap;
    offer(c, ko);
}

/* A serve leg not taken by its claim deadline: dropped when another listen of
 * the service waits (its client goes there), else given a little longer, up
 * to the client's own wait and one claim time more (a loaded serve is slow,
 * not dead, when it is the only one). */
void rh_pair_claim_late(core *c, session *b, long now)
{
    unsigned n;
    const session *a = b->peer;
    const conn *ko = a ? a->opener : NULL;
    if (ko && !list_find(c->listens, b->target, &n)
        && now < ko->pair_deadline + RH_ACCEPT_CLAIM_MS) {
        b->claim_deadline = now + RH_ACCEPT_CLAIM_MS / 4;
        return;
    }
    rh_pair_decline(c, b, "its serve did not take the connection in time");
}

/* A serve leg taken and not finished with no request of it at the server
 * since alone_since: its serve may have gone (rh_core_session_timer ends it
 * when neither a request was attached nor one was heard for RH_SERVE_GONE_S:
 * a live serve whose leg holds no request, its down half done and its push
 * parked, sends an ack more often than that). Called whenever the session's
 * requests change. */
void rh_pair_watch(session *s, long now)
{
    if (!s->serve_leg || s->unclaimed || s->finished || s->push || s->pull || s->nwait)
        s->alone_since = 0;
    else if (!s->alone_since)
        s->alone_since = now;
}

/* The per-service and per-client caps of waiting listens: 0, or -1 and k has
 * its 429. */
static int listen_room(core *c, conn *k, const char *svc)
{
    rh_limits lim;
    unsigned mine = 0, here = 0;
    rh_registry_get_limits(c->cfg->reg, &lim);
    for (conn *q = c->listens; q; q = q->pair_next) {
        mine += q->cl == k->cl;
        here += !strcmp(q->rq->target, svc);
    }
    if (here >= RH_LISTEN_MAX) {
        ++c->refused;
        rh_core_conn_error(c, k, 429, "reason=" RH_REASON_TOKEN_LISTENS
                           " too many listens waiting for service '%s' (%u)", svc,
                           (unsigned)RH_LISTEN_MAX);
        return -1;
    }
    if (lim.listens_per_client && mine >= lim.listens_per_client) {
        ++c->refused;
        rh_core_conn_error(c, k, 429, "reason=" RH_REASON_TOKEN_LISTENS
                           " too many listens waiting for this client "
                           "(RelayMaxListensPerClient %u)", lim.listens_per_client);
        return -1;
    }
    return 0;
}

/* LISTEN: a serve offers to take the next client of a service. */
void rh_pair_listen(core *c, conn *k, const rh_ipc_req *rq)
{
    unsigned n;
    if (rh_registry_draining(c->cfg->reg)) {
        rh_core_conn_error(c, k, 503, "this relay core is being replaced, try again");
        return;
    }
    if (!rh_core_open_client(c, k, rq, 0) || keep_request(c, k, rq) != 0)
        return;
    note_served(c, rq->target);
    conn *ko = list_find(c->svc_waits, rq->target, &n);
    if (ko) {
        list_del(&c->svc_waits, ko);
        pair(c, ko, k);
        return;
    }
    if (listen_room(c, k, rq->target) != 0)
        return;
    wait_on(c, &c->listens, k, CK_LISTEN, rh_now_ms() + 1000L * rq->poll_s);
}

/* A waiting listen or open whose handler hung up. */
void rh_pair_conn_gone(core *c, conn *k)
{
    list_del(k->kind == CK_LISTEN ? &c->listens : &c->svc_waits, k);
    rh_core_conn_kill(c, k);
}

static void expire(core *c, conn **list, long now, long *due)
{
    conn *k = *list;
    while (k) {
        conn *next = k->pair_next;
        if (now < k->pair_deadline) {
            if (!*due || k->pair_deadline < *due)
                *due = k->pair_deadline;
        } else if (k->kind == CK_LISTEN) {
            list_del(list, k);
            rh_core_out_printf(k, "OK");   /* no client came: the serve polls again */
            rh_core_conn_reply_done(c, k);
        } else {
            list_del(list, k);
            no_server(c, k);
        }
        k = next;
    }
}

/* Answers the waits whose time is up; called every turn of the loop, it
 * looks only when one is due. */
void rh_pair_timers(core *c, long now)
{
    long due = 0;
    if (!c->pair_due || now < c->pair_due)
        return;
    expire(c, &c->listens, now, &due);
    expire(c, &c->svc_waits, now, &due);
    c->pair_due = due;
}

/* A leg ends: the other one sees its target end, as a reset when this one
 * was reset (else its socket's EOF reads as a clean FIN). */
void rh_pair_session_end(core *c, session *s, int reset, const char *reason)
{
    session *p = s->peer;
    if (!p)
        return;
    s->peer = NULL;
    p->peer = NULL;
    if (!reset || p->dead)
        return;
    p->peer_reset = 1;
    if (!p->down_reset)
        snprintf(p->reason, sizeof(p->reason), "the other side of service '%s' reset: %s",
                 p->target, reason);
    rh_core_log(c, RH_LOG_DEBUG, "session %s: its peer %s reset (%s)", p->sid, s->sid, reason);
}
