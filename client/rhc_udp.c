/* relay-https client: -L udp: (see rhc_udp.h). A source's flow lives as long
 * as its tunnel: the flow closes its end of the socketpair when it goes idle
 * (the tunnel ends cleanly with its FIN) or when the server ended the down
 * side, and is freed once the tunnel told it it is done. The drop-oldest
 * queues of rh_dglink bound what waits either way; their drops are counted in
 * the route's statistics. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_dgram.h"
#include "rh_util.h"
#include "rhc_opts_int.h"
#include "rhc_route.h"
#include "rhc_udp.h"

#define RECV_PER_ROUND  256      /* datagrams read per loop round: the loop goes on */

struct flow {
    struct rhc_udp *u;
    struct sockaddr_storage peer;
    socklen_t plen;
    int sfd;                    /* our end of the socketpair; -1 once closed */
    rhc_tunnel *t;              /* NULL once the tunnel is done */
    rh_dglink link;
    uint64_t seen[4];           /* link counters already added to the route */
    int64_t last;               /* a datagram went either way */
    int polled;                 /* in this round's pollfds */
};

struct rhc_udp {
    rhc_ctx *c;
    struct rhc_route *route;
    int fd;
    struct flow **flows;
    size_t n, max;
    unsigned idle_s, queue;
    unsigned long serial;
    uint64_t refused;           /* datagrams of new sources when no tunnel could start */
};

static unsigned char rbuf[RH_DGRAM_MAX + 1];

size_t rhc_udp_max_fds(const struct rhc_opts *o)
{
    return 1 + (o->udp_flows ? o->udp_flows : RHC_UDP_FLOWS);
}

struct rhc_udp *rhc_udp_new(rhc_ctx *c, struct rhc_route *route, int fd)
{
    const struct rhc_opts *o = route->o;
    struct rhc_udp *u = calloc(1, sizeof(*u));
    if (u)
        u->max = o->udp_flows ? o->udp_flows : RHC_UDP_FLOWS;
    if (!u || !(u->flows = calloc(u->max, sizeof(*u->flows)))) {
        free(u);
        close(fd);
        return NULL;
    }
    u->c = c;
    u->route = route;
    u->fd = fd;
    u->idle_s = o->udp_idle_s ? o->udp_idle_s : RHC_UDP_IDLE_S;
    u->queue = o->udp_queue ? o->udp_queue : RH_UDP_QUEUE;
    return u;
}

/* The link's counters since the last look, into the route's statistics. */
static void sync_counts(struct flow *f)
{
    const rh_dglink *l = &f->link;
    uint64_t now[4] = { l->from_net, l->from_stream, l->to_stream.dropped,
                        l->to_net.dropped + l->net_errors };
    for (int i = 0; i < 4; ++i) {
        f->u->route->n.dgrams[i] += now[i] - f->seen[i];
        f->seen[i] = now[i];
    }
}

static void flow_close(struct flow *f)
{
    if (f->sfd < 0)
        return;
    close(f->sfd);   /* the tunnel reads EOF: it ends the session cleanly */
    f->sfd = -1;
}

static void flow_done(void *arg, int code)
{
    struct flow *f = arg;
    f->t = NULL;
    flow_close(f);
}

/* The source heard from least recently, to make room for a new one. */
static struct flow *least_recent(struct rhc_udp *u)
{
    struct flow *old = NULL;
    for (size_t i = 0; i < u->n; ++i)
        if (u->flows[i]->t && (!old || u->flows[i]->last < old->last))
            old = u->flows[i];
    return old;
}

static void sweep(struct rhc_udp *u);

static struct flow *flow_new(struct rhc_udp *u, const struct sockaddr_storage *ss,
                             socklen_t sl)
{
    int sp[2];
    char host[INET6_ADDRSTRLEN], port[8], label[128];

    if (u->n == u->max) {
        struct flow *old = least_recent(u);
        if (!old)
            return NULL;   /* every slot is still winding down */
        rhc_info("udp: %zu sources: ending the least recent one's session", u->max);
        rhc_tunnel_end_quietly(old->t);   /* flow_done runs: the sweep frees its slot */
        sweep(u);
        if (u->n == u->max)
            return NULL;
    }
    struct flow *f = calloc(1, sizeof(*f));
    if (!f || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
        free(f);
        return NULL;
    }
    f->u = u;
    memcpy(&f->peer, ss, sl);
    f->plen = sl;
    f->sfd = sp[1];
    f->last = rh_now_ms();
    rh_dglink_init(&f->link, u->queue, RHC_UDP_QUEUE_BYTES);
    if (getnameinfo((const struct sockaddr *)ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, sizeof(host), "?");
    snprintf(label, sizeof(label), "udp#%lu %s%s%s:%s", ++u->serial,
             ss->ss_family == AF_INET6 ? "[" : "", host, ss->ss_family == AF_INET6 ? "]" : "",
             port);
    u->flows[u->n++] = f;
    f->t = rhc_tunnel_start(u->c, u->route, sp[0], sp[0], RHC_LOCAL_SOCKET, label, flow_done, f);
    if (!f->t)
        flow_close(f);   /* rhc_tunnel_start closed sp[0]; the slot frees below */
    return f;
}

static struct flow *flow_of(struct rhc_udp *u, const struct sockaddr_storage *ss, socklen_t sl)
{
    for (size_t i = 0; i < u->n; ++i) {
        struct flow *f = u->flows[i];
        if (f->t && f->sfd >= 0 && f->plen == sl && !memcmp(&f->peer, ss, sl))
            return f;
    }
    return flow_new(u, ss, sl);
}

/* Datagrams from local sources, each to its flow's stream. */
static void read_sources(struct rhc_udp *u)
{
    for (int i = 0; i < RECV_PER_ROUND; ++i) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = recvfrom(u->fd, rbuf, sizeof(rbuf), MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&ss, &sl);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;   /* EAGAIN, or an error of an earlier send: nothing to read */
        }
        if (sl > sizeof(ss))
            continue;
        struct flow *f = flow_of(u, &ss, sl);
        if (!f || !f->t || f->sfd < 0 || (size_t)n > RH_DGRAM_MAX) {
            u->route->n.dgrams[0]++;   /* taken, and dropped: no session for it */
            u->route->n.dgrams[2]++;
            continue;
        }
        f->last = rh_now_ms();
        rh_dglink_from_net(&f->link, rbuf, (size_t)n);
        if (rh_dglink_to_stream(&f->link, f->sfd) != RH_DGL_OK)
            flow_close(f);
        sync_counts(f);
    }
}

size_t rhc_udp_pollfds(struct rhc_udp *u, struct pollfd *p, size_t room)
{
    size_t k = 0;
    short net = POLLIN;
    for (size_t i = 0; i < u->n; ++i) {
        struct flow *f = u->flows[i];
        f->polled = 0;
        if (f->link.to_net.head)
            net |= POLLOUT;
        if (f->sfd < 0 || 1 + k >= room)
            continue;
        p[1 + k++] = (struct pollfd){ .fd = f->sfd,
                                      .events = (short)(POLLIN | (f->link.to_stream.head
                                                                  ? POLLOUT : 0)) };
        f->polled = 1;
    }
    if (!room)
        return 0;
    p[0] = (struct pollfd){ .fd = u->fd, .events = net };
    return 1 + k;
}

/* The flow's stream: what the server sent, to the source. */
static void flow_event(struct flow *f, short revents)
{
    struct rhc_udp *u = f->u;
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        uint64_t before = f->link.from_stream;
        int rc = rh_dglink_from_stream(&f->link, f->sfd, u->fd, (struct sockaddr *)&f->peer,
                                       f->plen);
        if (f->link.from_stream != before)
            f->last = rh_now_ms();
        if (rc == RH_DGL_BAD)
            rhc_err("udp: the server sent a datagram length of %u (at most %u): "
                    "ending that source's session", f->link.bad_len, (unsigned)RH_DGRAM_MAX);
        if (rc != RH_DGL_OK)
            flow_close(f);   /* the server ended it (idle), or a broken stream */
    }
    if (f->sfd >= 0 && (revents & POLLOUT) && rh_dglink_to_stream(&f->link, f->sfd) != RH_DGL_OK)
        flow_close(f);
    sync_counts(f);
}

/* Frees the flows that are over (closed, tunnel done); keeps the order. */
static void sweep(struct rhc_udp *u)
{
    size_t k = 0;
    for (size_t i = 0; i < u->n; ++i) {
        struct flow *f = u->flows[i];
        if (f->t || f->sfd >= 0) {
            u->flows[k++] = f;
            continue;
        }
        sync_counts(f);
        rh_dglink_free(&f->link);
        free(f);
    }
    u->n = k;
}

void rhc_udp_events(struct rhc_udp *u, const struct pollfd *p, size_t n)
{
    if (!n)
        return;
    size_t k = 1, count = u->n;   /* flows added meanwhile were not polled */
    for (size_t i = 0; i < count && k < n; ++i) {
        struct flow *f = u->flows[i];
        if (!f->polled)
            continue;
        if (p[k].revents && f->sfd == p[k].fd)
            flow_event(f, p[k].revents);
        ++k;
    }
    if (p[0].revents & POLLOUT)
        for (size_t i = 0; i < u->n; ++i) {
            rh_dglink_to_net(&u->flows[i]->link, u->fd, (struct sockaddr *)&u->flows[i]->peer,
                             u->flows[i]->plen);
            sync_counts(u->flows[i]);
        }
    if (p[0].revents & POLLIN)
        read_sources(u);
    sweep(u);
}

long rhc_udp_tick(struct rhc_udp *u, int64_t now)
{
    int64_t next = 1000L * u->idle_s;
    for (size_t i = 0; i < u->n; ++i) {
        struct flow *f = u->flows[i];
        if (f->sfd < 0)
            continue;
        int64_t left = f->last + 1000L * u->idle_s - now;
        if (left <= 0)
            flow_close(f);
        else if (left < next)
            next = left;
    }
    sweep(u);
    return (long)next;
}

void rhc_udp_free(struct rhc_udp *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; ++i) {
        struct flow *f = u->flows[i];
        flow_close(f);
        if (f->t)
            continue;   /* cannot happen after wind-down; never free under a tunnel */
        rh_dglink_free(&f->link);
        free(f);
    }
    free(u->flows);
    close(u->fd);
    free(u);
}

int rhc_udp_set_opt(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    uint64_t v;
    uint64_t max = d->val == OPT_UDP_IDLE ? 86400 : d->val == OPT_UDP_QUEUE ? 65536 : 4096;

    if (rh_parse_u64(arg, strlen(arg), &v) != 0 || v < 1 || v > max)
        return rhc_usage_error("--%s %s: expected 1 to %u", d->name, arg, (unsigned)max);
    if (d->val == OPT_UDP_IDLE)
        o->udp_idle_s = (unsigned)v;
    else if (d->val == OPT_UDP_QUEUE)
        o->udp_queue = (unsigned)v;
    else
        o->udp_flows = (unsigned)v;
    return -1;
}
