/* The relay core's OPEN request: the client's limits, the new session, and
 * the non-blocking connect to the target that ends in rh_core_open_finish.
 * Separate: it is the one request that makes a session rather than finds one. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <openssl/rand.h>

#include "rh_core_int.h"
#include "rh_util.h"

/* The reason token a failed connect gives the client (a SOCKS client hears
 * "refused" or "unreachable" from it). */
static const char *connect_why(int err)
{
    return err == ECONNREFUSED ? RH_REASON_TOKEN_REFUSED : RH_REASON_TOKEN_UNREACHABLE;
}

void rh_core_open_finish(core *c, session *s)
{
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err) {
        char why[160];
        snprintf(why, sizeof(why), "connecting to target '%s' failed: %s", s->target,
                 strerror(err));
        s->open_why = connect_why(err);
        rh_core_session_end(c, s, 1, why);
        return;
    }
    s->connecting = 0;
    rh_registry_set_state(c->cfg->reg, s->slot, RH_SLOT_OPEN);
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rh_core_log(c, RH_LOG_DEBUG, "session %s open target=%s", s->sid, s->target);
    conn *k = s->opener;
    s->opener = NULL;
    if (k) {
        char tok[RH_TOKEN_LEN + 1];
        rh_token_format(tok, rh_registry_pub_slot(c->cfg->reg, s->slot), s->gen, s->secret);
        k->s = NULL;
        rh_core_out_printf(k, "OK %s", tok);
        rh_core_conn_reply_done(c, k);
    }
    s->last_heard = rh_now_ms();
    rh_core_session_pump(c, s);
}

/* The client's share, checked before a session is made for it: sessions,
 * open rate (when rate is set), requests in flight. The client, with k held;
 * or NULL, and k has its answer. */
rh_client *rh_core_open_client(core *c, conn *k, const rh_ipc_req *rq, int rate)
{
    rh_limits lim;
    long now = rh_now_ms();
    rh_registry_get_limits(c->cfg->reg, &lim);
    rh_client *cl = rh_clients_get(&c->clients, rq->client[0] ? rq->client : "-", now);
    if (!cl) {
        ++c->refused;
        rh_core_conn_error(c, k, 503, "too many clients at once");
        return NULL;
    }
    if (lim.sessions_per_client && cl->sessions >= lim.sessions_per_client) {
        ++c->refused;
        rh_core_conn_error(c, k, 429, "too many sessions for this client "
                           "(RelayMaxSessionsPerClient %u)", lim.sessions_per_client);
        return NULL;
    }
    if (rate && rh_client_take_open(cl, lim.open_rate, now) != 0) {
        ++c->refused;
        rh_core_conn_error(c, k, 429, "sessions opened too fast (RelayOpenRate %u per second)",
                           lim.open_rate);
        return NULL;
    }
    if (rh_core_conn_hold(c, k, cl) != 0)
        return NULL;
    return cl;
}

/* A new session in the registry and the core's table, with its rings sized by
 * rq, owned by cl; not connected to anything yet. NULL: k has its answer. */
session *rh_core_session_new(core *c, conn *k, const rh_ipc_req *rq, rh_client *cl)
{
    unsigned char secret[RH_SECRET_LEN];
    uint32_t slot, gen;

    if (RAND_bytes(secret, sizeof(secret)) != 1) {
        rh_core_conn_error(c, k, 503, "no randomness for a session token");
        return NULL;
    }
    if (rh_registry_alloc(c->cfg->reg, rq->target, secret, &slot, &gen) != RH_REG_OK) {
        rh_core_conn_error(c, k, 503, "session table full (RelayMaxSessions)");
        return NULL;
    }
    session *s = calloc(1, sizeof(*s));
    if (!s) {
        rh_registry_release(c->cfg->reg, slot);
        rh_core_conn_error(c, k, 503, "out of memory");
        return NULL;
    }
    s->fd = -1;
    s->src = SRC_TARGET;
    s->t_rd = 1;
    s->slot = slot;
    s->gen = gen;
    s->cl = cl;
    ++cl->sessions;
    rh_client_touch(cl, rh_now_ms());
    if (rq->owner)
        rh_registry_set_owner(c->cfg->reg, slot, rq->owner);
    memcpy(s->secret, secret, sizeof(secret));
    rh_sid_format(s->sid, rh_registry_pub_slot(c->cfg->reg, slot), gen);
    snprintf(s->target, sizeof(s->target), "%s", rq->target);
    /* down: read ahead up to bufsize, plus (resumable) up to window bytes sent
     * and kept until acknowledged: the ring grows only as far as used */
    rh_ring_init(&s->up, rq->bufsize);
    rh_ring_init(&s->down, (size_t)rq->bufsize + (rq->resume ? rq->window : 0));
    s->readahead = rq->bufsize;
    s->window = rq->resume ? rq->window : 0;
    s->idle_s = rq->idle_s;
    s->resumable = rq->resume ? 1 : 0;
    s->check = rq->check ? 1 : 0;
    if (s->check && s->up.cap < 2 * RH_FRAME_MAX)
        rh_ring_init(&s->up, 2 * RH_FRAME_MAX);   /* a D frame waits whole for its C */
    s->last_heard = rh_now_ms();
    c->by_slot[slot] = s;
    return s;
}

void rh_core_req_open(core *c, conn *k, const rh_ipc_req *rq)
{
    union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
    socklen_t salen = 0;
    session *s = NULL;

    if (rh_registry_draining(c->cfg->reg)) {
        rh_core_conn_error(c, k, 503, "this relay core is being replaced, try again");
        return;
    }
    memset(&sa, 0, sizeof(sa));
    if (rq->service) {
        /* a rendezvous: no address */
    } else if (inet_pton(AF_INET, rq->host, &sa.v4.sin_addr) == 1) {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons((uint16_t)rq->port);
        salen = sizeof(sa.v4);
    } else if (inet_pton(AF_INET6, rq->host, &sa.v6.sin6_addr) == 1) {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons((uint16_t)rq->port);
        salen = sizeof(sa.v6);
    } else {
        rh_core_conn_error(c, k, 400, "target address is not numeric");
        return;
    }
    rh_client *cl = rh_core_open_client(c, k, rq, 1);
    if (!cl)
        return;
    if (rq->service) {
        rh_pair_open(c, k, rq);   /* a rendezvous: no target to connect */
        return;
    }
    s = rh_core_session_new(c, k, rq, cl);
    if (!s)
        return;
    s->last_heard = rh_now_ms();
    s->connect_deadline = s->last_heard + 1000L * rq->connect_s;
    s->connecting = 1;
    s->opener = k;
    k->kind = CK_OPEN;
    k->s = s;
    s->timer.deadline = rh_core_session_next_deadline(s);
    rh_timers_push(&c->timers, &s->timer);

    if (rq->udp) {
        /* connected at once: the session's target is the shim's socketpair */
        if (rh_udp_open(c, s, (struct sockaddr *)&sa, salen, rq->udp_idle_s,
                        rq->udp_queue) == 0) {
            rh_core_open_finish(c, s);
            return;
        }
        char why[160];
        snprintf(why, sizeof(why), "udp target '%s': %s", s->target, strerror(errno));
        rh_core_session_end(c, s, 1, why);
        return;
    }
    s->fd = socket(((struct sockaddr *)&sa)->sa_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        rh_core_session_end(c, s, 1, "cannot create a socket");
        return;
    }
    if (connect(s->fd, (struct sockaddr *)&sa, salen) == 0) {
        rh_core_open_finish(c, s);
        return;
    }
    if (errno != EINPROGRESS) {
        char why[160];
        s->open_why = connect_why(errno);
        snprintf(why, sizeof(why), "connecting to target '%s' failed: %s", s->target,
                 strerror(errno));
        rh_core_session_end(c, s, 1, why);
        return;
    }
    rh_core_arm(c, s->fd, s, &s->ev, EPOLLOUT);
    rh_core_arm(c, k->fd, k, &k->ev, EPOLLIN);  /* the handler giving up shows as EOF */
}
