/* relay-https client: datagrams over tunnels (see rhc_udp.h). A flow lives as
 * long as its tunnel: it closes its end of the socketpair when it goes idle
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
#include <unistd.h>

#include "rh_util.h"
#include "rhc_opts_int.h"
#include "rhc_route.h"
#include "rhc_udp.h"

#define RECV_PER_ROUND  256      /* datagrams read per loop round: the loop goes on */

/* ------------------------------------------------------------ flow sets */

int rhc_dgflows_init(struct rhc_dgflows *fs, rhc_ctx *c, struct rhc_route *route, int nfd)
{
    const struct rhc_opts *o = route->o;
    memset(fs, 0, sizeof(*fs));
    fs->max = o->udp_flows ? o->udp_flows : RHC_UDP_FLOWS;
    if (!(fs->v = calloc(fs->max, sizeof(*fs->v))))
        return -1;
    fs->c = c;
    fs->route = route;
    fs->nfd = nfd;
    fs->idle_s = o->udp_idle_s ? o->udp_idle_s : RH_UDP_IDLE_S;
    fs->queue = o->udp_queue ? o->udp_queue : RH_UDP_QUEUE;
    return 0;
}

/* The link's counters since the last look, into the route's statistics. */
static void sync_counts(struct rhc_dgflow *f)
{
    const rh_dglink *l = &f->link;
    uint64_t now[4] = { l->from_net, l->from_stream, l->to_stream.dropped,
                        l->to_net.dropped + l->net_errors };
    for (int i = 0; i < 4; ++i) {
        f->set->route->n.dgrams[i] += now[i] - f->seen[i];
        f->seen[i] = now[i];
    }
}

static void flow_close(struct rhc_dgflow *f)
{
    if (f->sfd < 0)
        return;
    close(f->sfd);   /* the tunnel reads EOF: it ends the session cleanly */
    f->sfd = -1;
    /* what still waited for the tunnel will never go: dropped */
    f->link.to_stream.dropped += f->link.to_stream.n;
    rh_dgq_clear(&f->link.to_stream);
}

static void flow_done(void *arg, int code)
{
    struct rhc_dgflow *f = arg;
    f->t = NULL;
    flow_close(f);
}

void rhc_dgflows_close_all(struct rhc_dgflows *fs)
{
    for (size_t i = 0; i < fs->n; ++i)
        flow_close(fs->v[i]);
}

/* Frees the flows that are over (closed, tunnel done); keeps the order. */
static void sweep(struct rhc_dgflows *fs)
{
    size_t k = 0;
    for (size_t i = 0; i < fs->n; ++i) {
        struct rhc_dgflow *f = fs->v[i];
        sync_counts(f);
        if (f->t || f->sfd >= 0) {
            fs->v[k++] = f;
            continue;
        }
        rh_dglink_free(&f->link);
        free(f);
    }
    fs->n = k;
}

void rhc_dgflows_free(struct rhc_dgflows *fs)
{
    rhc_dgflows_close_all(fs);
    sweep(fs);
    free(fs->v);   /* a flow still under a tunnel cannot be left after wind-down */
    fs->v = NULL;
    fs->n = 0;
}

size_t rhc_dgflows_live(const struct rhc_dgflows *fs)
{
    return fs->n;
}

struct rhc_dgflow *rhc_dgflows_find(struct rhc_dgflows *fs, const struct sockaddr_storage *peer,
                                    socklen_t plen, const char *key)
{
    for (size_t i = 0; i < fs->n; ++i) {
        struct rhc_dgflow *f = fs->v[i];
        if (!f->t || f->sfd < 0)
            continue;
        if (key ? !strcmp(f->key, key) : f->plen == plen && !memcmp(&f->peer, peer, plen))
            return f;
    }
    return NULL;
}

/* The flow heard from least recently, to make room for a new one. */
static struct rhc_dgflow *least_recent(struct rhc_dgflows *fs)
{
    struct rhc_dgflow *old = NULL;
    for (size_t i = 0; i < fs->n; ++i)
        if (fs->v[i]->t && (!old || fs->v[i]->last < old->last))
            old = fs->v[i];
    return old;
}

struct rhc_dgflow *rhc_dgflows_add(struct rhc_dgflows *fs, const struct sockaddr_storage *peer,
                                   socklen_t plen, const char *key, const char *label)
{
    int sp[2];

    if (fs->n == fs->max) {
        struct rhc_dgflow *old = least_recent(fs);
        if (!old)
            return NULL;   /* every slot is still winding down */
        rhc_info("udp: %zu flows: ending the least recent one's session", fs->max);
        rhc_tunnel_end_quietly(old->t);   /* flow_done runs: the sweep frees its slot */
        sweep(fs);
        if (fs->n == fs->max)
            return NULL;
    }
    struct rhc_dgflow *f = calloc(1, sizeof(*f));
    if (!f || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
        free(f);
        return NULL;
    }
    f->set = fs;
    memcpy(&f->peer, peer, plen);
    f->plen = plen;
    f->sfd = sp[1];
    f->last = rh_now_ms();
    rh_dglink_init(&f->link, fs->queue, RHC_UDP_QUEUE_BYTES);
    fs->v[fs->n++] = f;
    if (key) {
        snprintf(f->key, sizeof(f->key), "%s", key);
        f->t = rhc_tunnel_start_dgram_to(fs->c, fs->route, sp[0], label, key, flow_done, f);
    } else {
        f->t = rhc_tunnel_start(fs->c, fs->route, sp[0], sp[0], RHC_LOCAL_SOCKET, label,
                                flow_done, f);
    }
    if (!f->t)
        flow_close(f);   /* sp[0] was closed; the sweep frees the slot */
    return f;
}

void rhc_dgflows_take(struct rhc_dgflows *fs, struct rhc_dgflow *f, const void *d, size_t len)
{
    if (!f || !f->t || f->sfd < 0 || len > RH_DGRAM_MAX) {
        fs->route->n.dgrams[0]++;   /* taken, and dropped: no session for it */
        fs->route->n.dgrams[2]++;
        return;
    }
    f->last = rh_now_ms();
    rh_dglink_from_net(&f->link, d, len);
    if (rh_dglink_to_stream(&f->link, f->sfd) != RH_DGL_OK)
        flow_close(f);
    sync_counts(f);
}

size_t rhc_dgflows_pollfds(struct rhc_dgflows *fs, struct pollfd *p, size_t room, int *net_out)
{
    size_t k = 0;
    for (size_t i = 0; i < fs->n; ++i) {
        struct rhc_dgflow *f = fs->v[i];
        f->polled = 0;
        if (f->link.to_net.head)
            *net_out = 1;
        if (f->sfd < 0 || k >= room)
            continue;
        p[k++] = (struct pollfd){ .fd = f->sfd,
                                  .events = (short)(POLLIN | (f->link.to_stream.head
                                                              ? POLLOUT : 0)) };
        f->polled = 1;
    }
    return k;
}

/* The flow's stream: what the server sent, to the peer. */
static void flow_event(struct rhc_dgflow *f, short revents)
{
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        uint64_t before = f->link.from_stream;
        int rc = rh_dglink_from_stream(&f->link, f->sfd, f->set->nfd,
                                       (struct sockaddr *)&f->peer, f->plen);
        if (f->link.from_stream != before)
            f->last = rh_now_ms();
        if (rc == RH_DGL_BAD)
            rhc_err("udp: the server sent a datagram length of %u (at most %u): "
                    "ending that flow's session", f->link.bad_len, (unsigned)RH_DGRAM_MAX);
        if (rc != RH_DGL_OK)
            flow_close(f);   /* the server ended it (idle), or a broken stream */
    }
    if (f->sfd >= 0 && (revents & POLLOUT) && rh_dglink_to_stream(&f->link, f->sfd) != RH_DGL_OK)
        flow_close(f);
    sync_counts(f);
}

void rhc_dgflows_events(struct rhc_dgflows *fs, const struct pollfd *p, size_t n, short net)
{
    size_t k = 0, count = fs->n;   /* flows added meanwhile were not polled */
    for (size_t i = 0; i < count && k < n; ++i) {
        struct rhc_dgflow *f = fs->v[i];
        if (!f->polled)
            continue;
        if (p[k].revents && f->sfd == p[k].fd)
            flow_event(f, p[k].revents);
        ++k;
    }
    if (net & POLLOUT)
        for (size_t i = 0; i < fs->n; ++i)
            rh_dglink_to_net(&fs->v[i]->link, fs->nfd, (struct sockaddr *)&fs->v[i]->peer,
                             fs->v[i]->plen);
    sweep(fs);
}

long rhc_dgflows_tick(struct rhc_dgflows *fs, int64_t now)
{
    int64_t next = 1000L * fs->idle_s;
    for (size_t i = 0; i < fs->n; ++i) {
        struct rhc_dgflow *f = fs->v[i];
        if (f->sfd < 0)
            continue;
        int64_t left = f->last + 1000L * fs->idle_s - now;
        if (left <= 0)
            flow_close(f);
        else if (left < next)
            next = left;
    }
    sweep(fs);
    return (long)next;
}

void rhc_udp_sockopts(int fd)
{
    int one = 1, rcvbuf = RH_UDP_RCVBUF;
    setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
    /* room for what senders send while the loop is busy elsewhere */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
}

ssize_t rhc_udp_recvfrom(int fd, void *buf, size_t len, struct sockaddr_storage *ss,
                         socklen_t *sl, struct rhc_route *route, uint32_t *drops)
{
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(uint32_t))]; } ctl;
    struct iovec iov = { buf, len };
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_name = ss;
    m.msg_namelen = *sl;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof(ctl.b);
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_TRUNC);
    *sl = m.msg_namelen;
    for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; c; c = CMSG_NXTHDR(&m, c)) {
        uint32_t total;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL)
            continue;
        memcpy(&total, CMSG_DATA(c), sizeof(total));
        route->n.dgrams[2] += (uint32_t)(total - *drops);   /* the kernel's drops: up */
        *drops = total;
    }
    return n;
}

/* ------------------------------------------------------- -L udp: forward */

struct rhc_udp {
    struct rhc_dgflows fs;
    int fd;
    uint32_t drops;             /* the kernel's count so far */
};

static unsigned char rbuf[RH_DGRAM_MAX + 1];

size_t rhc_udp_max_fds(const struct rhc_opts *o)
{
    return 1 + (o->udp_flows ? o->udp_flows : RHC_UDP_FLOWS);
}

struct rhc_udp *rhc_udp_new(rhc_ctx *c, struct rhc_route *route, int fd)
{
    struct rhc_udp *u = calloc(1, sizeof(*u));
    if (!u || rhc_dgflows_init(&u->fs, c, route, fd) != 0) {
        free(u);
        close(fd);
        return NULL;
    }
    u->fd = fd;
    rhc_udp_sockopts(fd);
    return u;
}

/* A source's new flow, labelled by its address. */
static struct rhc_dgflow *flow_for(struct rhc_udp *u, const struct sockaddr_storage *ss,
                                   socklen_t sl)
{
    char host[INET6_ADDRSTRLEN], port[8], label[128];
    struct rhc_dgflow *f = rhc_dgflows_find(&u->fs, ss, sl, NULL);
    if (f)
        return f;
    if (getnameinfo((const struct sockaddr *)ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, sizeof(host), "?");
    int v6 = ss->ss_family == AF_INET6;
    snprintf(label, sizeof(label), "udp#%lu %s%s%s:%s", ++u->fs.serial, v6 ? "[" : "", host,
             v6 ? "]" : "", port);
    return rhc_dgflows_add(&u->fs, ss, sl, NULL, label);
}

/* Datagrams from local sources, each to its flow's stream. */
static void read_sources(struct rhc_udp *u)
{
    for (int i = 0; i < RECV_PER_ROUND; ++i) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = rhc_udp_recvfrom(u->fd, rbuf, sizeof(rbuf), &ss, &sl, u->fs.route,
                                     &u->drops);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;   /* EAGAIN, or an error of an earlier send: nothing to read */
        }
        if (sl <= sizeof(ss))
            rhc_dgflows_take(&u->fs, flow_for(u, &ss, sl), rbuf, (size_t)n);
    }
}

size_t rhc_udp_pollfds(struct rhc_udp *u, struct pollfd *p, size_t room)
{
    int out = 0;
    if (!room)
        return 0;
    size_t k = rhc_dgflows_pollfds(&u->fs, p + 1, room - 1, &out);
    p[0] = (struct pollfd){ .fd = u->fd, .events = (short)(POLLIN | (out ? POLLOUT : 0)) };
    return 1 + k;
}

void rhc_udp_events(struct rhc_udp *u, const struct pollfd *p, size_t n)
{
    if (!n)
        return;
    rhc_dgflows_events(&u->fs, p + 1, n - 1, p[0].revents);
    if (p[0].revents & POLLIN)
        read_sources(u);
}

long rhc_udp_tick(struct rhc_udp *u, int64_t now)
{
    return rhc_dgflows_tick(&u->fs, now);
}

void rhc_udp_free(struct rhc_udp *u)
{
    if (!u)
        return;
    rhc_dgflows_free(&u->fs);
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
