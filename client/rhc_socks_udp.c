/* relay-https client: SOCKS5 UDP ASSOCIATE (see rhc_socks_udp.h). Each
 * association has its control connection, a UDP socket on the address the
 * client reached us at, and a flow set (rhc_udp.h) with a flow per
 * destination: a datagram session to it, whose replies get the destination's
 * SOCKS5 UDP header in front (the link's prefix). Datagrams are taken only
 * from the control connection's address (RFC 1928, 7); fragments (FRAG != 0)
 * are dropped and counted, as the RFC allows. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_route.h"
#include "rhc_socks.h"
#include "rhc_socks_udp.h"
#include "rhc_udp.h"

#define RECV_PER_ROUND 256

struct assoc {
    struct assoc *next;
    int ctrl;                   /* the control connection; -1 once it ended */
    int ufd;                    /* our UDP socket */
    struct sockaddr_storage ctrl_peer;   /* datagrams come from its address only */
    struct sockaddr_storage client;      /* where replies go: the latest source */
    socklen_t clen;
    uint32_t drops;             /* the kernel's count so far */
    struct rhc_dgflows fs;
    char peer[64];
    size_t at, nfds;            /* this round's pollfds: ctrl, ufd, flows */
};

struct rhc_sudp {
    rhc_ctx *c;
    struct assoc *list;
    size_t n;
};

static unsigned char rbuf[RH_DGRAM_MAX + 1];

struct rhc_sudp *rhc_sudp_new(rhc_ctx *c)
{
    struct rhc_sudp *s = calloc(1, sizeof(*s));
    if (s)
        s->c = c;
    return s;
}

static void assoc_free(struct assoc *a)
{
    if (a->ctrl >= 0)
        close(a->ctrl);
    rhc_dgflows_free(&a->fs);
    if (a->ufd >= 0)
        close(a->ufd);
    free(a);
}

void rhc_sudp_free(struct rhc_sudp *s)
{
    if (!s)
        return;
    while (s->list) {
        struct assoc *a = s->list;
        s->list = a->next;
        assoc_free(a);
    }
    free(s);
}

size_t rhc_sudp_count(const struct rhc_sudp *s)
{
    return s ? s->n : 0;
}

size_t rhc_sudp_nfds(const struct rhc_sudp *s)
{
    size_t n = 0;
    for (const struct assoc *a = s ? s->list : NULL; a; a = a->next)
        n += 2 + rhc_dgflows_live(&a->fs);
    return n;
}

/* The reply to the ASSOCIATE: success and our UDP socket's address, or a
 * failure with 0.0.0.0:0. 0, or -1 when it could not be written whole. */
static int reply(int ctrl, unsigned char code, const struct sockaddr_storage *bnd)
{
    unsigned char r[22] = { RHC_SOCKS_VERSION, code, 0, RHC_SOCKS_ATYP_V4 };
    size_t n = 10;
    if (bnd && bnd->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)bnd;
        memcpy(r + 4, &v4->sin_addr, 4);
        memcpy(r + 8, &v4->sin_port, 2);
    } else if (bnd && bnd->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)bnd;
        r[3] = RHC_SOCKS_ATYP_V6;
        memcpy(r + 4, &v6->sin6_addr, 16);
        memcpy(r + 20, &v6->sin6_port, 2);
        n = 22;
    }
    return send(ctrl, r, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -1;
}

/* A UDP socket on the address the client reached us at, any port. */
static int udp_socket(int ctrl, struct sockaddr_storage *bnd)
{
    socklen_t bl = sizeof(*bnd);
    if (getsockname(ctrl, (struct sockaddr *)bnd, &bl) != 0)
        return -1;
    if (bnd->ss_family == AF_INET)
        ((struct sockaddr_in *)bnd)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)bnd)->sin6_port = 0;
    int fd = socket(bnd->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bl = bnd->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)bnd, bl) != 0
                    || getsockname(fd, (struct sockaddr *)bnd, &bl) != 0)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int rhc_sudp_associate(struct rhc_sudp *s, struct rhc_route *route, int ctrl, const char *peer)
{
    struct sockaddr_storage bnd;
    socklen_t pl = sizeof(struct sockaddr_storage);
    struct assoc *a = calloc(1, sizeof(*a));
    if (!a || (a->ufd = udp_socket(ctrl, &bnd)) < 0
        || getpeername(ctrl, (struct sockaddr *)&a->ctrl_peer, &pl) != 0
        || rhc_dgflows_init(&a->fs, s->c, route, a->ufd) != 0
        || reply(ctrl, RHC_SOCKS_OK, &bnd) != 0) {
        rhc_err("%s: UDP ASSOCIATE failed: %s", peer, strerror(errno));
        reply(ctrl, RHC_SOCKS_FAILURE, NULL);
        if (a && a->ufd > 0)
            close(a->ufd);
        if (a)
            free(a->fs.v);
        free(a);
        close(ctrl);
        return -1;
    }
    a->ctrl = ctrl;
    rhc_udp_sockopts(a->ufd);
    snprintf(a->peer, sizeof(a->peer), "%s", peer);
    a->next = s->list;
    s->list = a;
    ++s->n;
    rhc_info("%s: UDP ASSOCIATE", peer);
    return 0;
}

/* The same host (the port may differ: the client's UDP socket is its own). */
static int same_host(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    if (x->ss_family != y->ss_family)
        return 0;
    if (x->ss_family == AF_INET)
        return !memcmp(&((const struct sockaddr_in *)x)->sin_addr,
                       &((const struct sockaddr_in *)y)->sin_addr, 4);
    return !memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr,
                   &((const struct sockaddr_in6 *)y)->sin6_addr, 16);
}

/* One datagram of the client: its header names the destination. */
static void client_datagram(struct assoc *a, const unsigned char *b, size_t n)
{
    unsigned char req[RHC_SOCKS_MSG_MAX];
    struct rhc_socks_req rq;
    char label[160];

    /* RSV RSV FRAG ATYP ...: read as a request (VER CMD RSV ATYP ...) */
    size_t hl = n >= 4 ? n : 0;
    if (hl) {
        size_t cp = n < sizeof(req) ? n : sizeof(req);
        memcpy(req, b, cp);
        req[0] = RHC_SOCKS_VERSION;
        req[1] = RHC_SOCKS_UDP;
        req[2] = 0;
        hl = rhc_socks_need(RHC_SOCKS_REQUEST, req, cp);
    }
    if (!hl || hl > n || hl > RH_DGRAM_PFX_MAX || b[0] || b[1] || b[2]
        || rhc_socks_request(req, hl, &rq) != RHC_SOCKS_OK) {
        rhc_dgflows_take(&a->fs, NULL, b, n);   /* malformed or a fragment: dropped */
        return;
    }
    struct rhc_dgflow *f = rhc_dgflows_find(&a->fs, NULL, 0, rq.dest);
    if (!f) {
        snprintf(label, sizeof(label), "udp#%lu %.40s %.80s", ++a->fs.serial, a->peer, rq.dest);
        f = rhc_dgflows_add(&a->fs, &a->client, a->clen, rq.dest, label);
        if (f) {
            memcpy(f->link.pfx, b, hl);   /* replies say where they come from */
            f->link.pfx_len = hl;
        }
    } else if (f->plen != a->clen || memcmp(&f->peer, &a->client, a->clen)) {
        memcpy(&f->peer, &a->client, a->clen);   /* the client moved its socket */
        f->plen = a->clen;
    }
    rhc_dgflows_take(&a->fs, f, b + hl, n - hl);
}

static void read_client(struct assoc *a)
{
    for (int i = 0; i < RECV_PER_ROUND; ++i) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = rhc_udp_recvfrom(a->ufd, rbuf, sizeof(rbuf), &ss, &sl, a->fs.route,
                                     &a->drops);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (sl > sizeof(ss) || !same_host(&ss, &a->ctrl_peer))
            continue;   /* not the associated client's: not ours to carry */
        memcpy(&a->client, &ss, sl);
        a->clen = sl;
        client_datagram(a, rbuf, (size_t)n);
    }
}

size_t rhc_sudp_pollfds(struct rhc_sudp *s, struct pollfd *p, size_t room)
{
    size_t k = 0;
    for (struct assoc *a = s ? s->list : NULL; a; a = a->next) {
        a->at = k;
        a->nfds = 0;
        if (k + 2 > room)
            continue;
        int out = 0;
        size_t nf = rhc_dgflows_pollfds(&a->fs, p + k + 2, room - k - 2, &out);
        p[k] = (struct pollfd){ .fd = a->ctrl, .events = POLLIN };
        p[k + 1] = (struct pollfd){ .fd = a->ctrl >= 0 ? a->ufd : -1,
                                    .events = (short)(POLLIN | (out ? POLLOUT : 0)) };
        a->nfds = 2 + nf;
        k += a->nfds;
    }
    return k;
}

/* The control connection: anything but EOF is not for us (RFC 1928 has no
 * more requests on it); EOF or an error ends the association. */
static void ctrl_event(struct assoc *a, short revents)
{
    char junk[64];
    ssize_t n = recv(a->ctrl, junk, sizeof(junk), MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR) && !(revents & (POLLERR | POLLHUP))))
        return;
    rhc_info("%s: UDP association ended (%zu destination%s)", a->peer,
             (size_t)a->fs.serial, a->fs.serial == 1 ? "" : "s");
    close(a->ctrl);
    a->ctrl = -1;
    rhc_dgflows_close_all(&a->fs);
}

void rhc_sudp_events(struct rhc_sudp *s, const struct pollfd *p, size_t n)
{
    for (struct assoc *a = s ? s->list : NULL; a; a = a->next) {
        if (!a->nfds || a->at + a->nfds > n)
            continue;
        const struct pollfd *q = p + a->at;
        rhc_dgflows_events(&a->fs, q + 2, a->nfds - 2, q[1].revents);
        if (a->ctrl >= 0 && (q[1].revents & POLLIN))
            read_client(a);
        if (a->ctrl >= 0 && q[0].fd == a->ctrl && q[0].revents)
            ctrl_event(a, q[0].revents);
    }
}

long rhc_sudp_tick(struct rhc_sudp *s, int64_t now)
{
    long wait = -1;
    for (struct assoc **pa = s ? &s->list : NULL; pa && *pa;) {
        struct assoc *a = *pa;
        long t = rhc_dgflows_tick(&a->fs, now);
        if (a->ctrl < 0 && !rhc_dgflows_live(&a->fs)) {
            *pa = a->next;   /* over: its control connection and every flow */
            --s->n;
            assoc_free(a);
            continue;
        }
        if (wait < 0 || t < wait)
            wait = t;
        pa = &a->next;
    }
    return wait;
}
