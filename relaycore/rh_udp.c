/* A udp: target (RelayTarget NAME udp:HOST:PORT): the session's target is one
 * end of a stream socketpair, and this shim holds the other end and a
 * connected UDP socket. It frames each datagram from the target into the
 * stream (2-byte length, rh_dgram.h) and sends each datagram it parses from
 * the stream to the target. So the session itself is an ordinary one, and
 * every transport, resume and check applies to datagrams unchanged; what UDP
 * adds lives here: the idle timeout, and a bounded queue per direction that
 * drops its oldest datagram (counted in status) rather than hold the loop. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sock_diag.h>

#include "rh_core_int.h"
#include "rh_dgram.h"
#include "rh_util.h"

#define RECV_PER_EVENT 64   /* datagrams read from the target per event: others get turns */

/* epoll's data.ptr for each of the shim's two descriptors */
struct udp_end {
    int src;                /* SRC_UDP: first member */
    rh_udp *u;
    int is_net;
};

struct rh_udp {
    struct udp_end net_end, stream_end;
    int nfd, sfd;           /* connected UDP socket; the shim's end of the socketpair */
    uint32_t nev, sev;
    session *s;
    rh_dglink link;
    long last;              /* a datagram went either way */
    uint32_t kernel_drops;  /* the kernel's count of datagrams its full buffer dropped
                               before we read them (SO_MEMINFO) */
    unsigned idle_s;
    int stream_eof;         /* the session ended its up side: nothing more to send */
    int closed;             /* our side of the stream is shut: nothing more to read */
    rh_udp *prev, *next;    /* the core's list */
};

static unsigned char rbuf[RH_DGRAM_MAX + 1];   /* the core is one thread */

static void arm(core *c, rh_udp *u)
{
    uint32_t n = u->closed ? 0 : EPOLLIN;
    if (u->link.to_net.head)
        n |= EPOLLOUT;
    uint32_t st = u->stream_eof ? 0 : EPOLLIN;
    if (u->link.to_stream.head && !u->closed)
        st |= EPOLLOUT;
    rh_core_arm(c, u->nfd, &u->net_end, &u->nev, n);
    rh_core_arm(c, u->sfd, &u->stream_end, &u->sev, st);
}

/* Nothing more goes to the session: what is queued is dropped, the stream
 * sees our FIN (the client's tunnel ends cleanly). */
static void shut(core *c, rh_udp *u, const char *why)
{
    if (u->closed)
        return;
    rh_core_log(c, RH_LOG_DEBUG, "session %s udp: nothing more to the client (%s; %u "
                "datagrams queued for it dropped)", u->s->sid, why, (unsigned)u->link.to_stream.n);
    u->closed = 1;
    u->link.to_stream.dropped += u->link.to_stream.n;   /* they will never go */
    rh_dgq_clear(&u->link.to_stream);
    shutdown(u->sfd, SHUT_WR);
}

/* The kernel's count of datagrams it dropped at our full buffer, as it is now
 * (SO_RXQ_OVFL tells it only with a datagram queued after the drops: a
 * burst's lost tail, with nothing behind it, went uncounted). */
static void sync_kernel_drops(rh_udp *u)
{
    uint32_t mi[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mi);
    if (getsockopt(u->nfd, SOL_SOCKET, SO_MEMINFO, mi, &len) == 0
        && len > SK_MEMINFO_DROPS * sizeof(mi[0]))
        u->kernel_drops = mi[SK_MEMINFO_DROPS];
}

static void read_target(rh_udp *u)
{
    for (int i = 0; i < RECV_PER_EVENT && !u->closed; ++i) {
        ssize_t n = recv(u->nfd, rbuf, sizeof(rbuf), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED)
                continue;   /* refused: an ICMP error of an earlier datagram */
            break;
        }
        if ((size_t)n > RH_DGRAM_MAX) {
            u->link.net_errors++;   /* cannot be framed (a jumbo IPv6 datagram) */
            continue;
        }
        u->last = rh_now_ms();
        rh_dglink_from_net(&u->link, rbuf, (size_t)n);
    }
}

static void read_stream(core *c, rh_udp *u)
{
    int rc = rh_dglink_from_stream(&u->link, u->sfd, u->nfd, NULL, 0);
    if (u->link.from_stream)
        u->last = rh_now_ms();
    if (rc == RH_DGL_BAD) {
        char why[96];
        snprintf(why, sizeof(why), "malformed datagram length %u (at most %u)",
                 u->link.bad_len, (unsigned)RH_DGRAM_MAX);
        rh_core_session_end(c, u->s, 1, why);
    } else if (rc != RH_DGL_OK) {
        u->stream_eof = 1;   /* the client is done sending: so are we */
        shut(c, u, rc == RH_DGL_EOF ? "the client ended its side" : strerror(errno));
    }
}

void rh_udp_event(core *c, void *end_ptr, uint32_t events)
{
    struct udp_end *e = end_ptr;
    rh_udp *u = e->u;
    if (u->s->dead)
        return;
    uint64_t before = u->link.from_net + u->link.from_stream;
    if (e->is_net) {
        if (events & (EPOLLIN | EPOLLERR))
            read_target(u);
        if (events & EPOLLOUT)
            rh_dglink_to_net(&u->link, u->nfd, NULL, 0);
    } else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        read_stream(c, u);
    }
    if (u->s->dead)
        return;
    if (!u->closed && rh_dglink_to_stream(&u->link, u->sfd) != RH_DGL_OK)
        shut(c, u, strerror(errno));
    if (u->link.from_net + u->link.from_stream != before)
        u->last = rh_now_ms();
    arm(c, u);
}

/* The core's share of a udp: open: the socketpair (one end becomes s->fd) and
 * the UDP socket connected to the target. 0, or -1 with errno. */
int rh_udp_open(core *c, session *s, const struct sockaddr *sa, socklen_t salen,
                unsigned idle_s, unsigned queue)
{
    int sp[2] = { -1, -1 };
    rh_udp *u = calloc(1, sizeof(*u));
    if (!u)
        return -1;
    u->nfd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rcvbuf = RH_UDP_RCVBUF;
    if (u->nfd >= 0)   /* room for a burst the target answers at once */
        setsockopt(u->nfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (u->nfd < 0 || connect(u->nfd, sa, salen) != 0
        || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
        int err = errno;
        if (u->nfd >= 0)
            close(u->nfd);
        free(u);
        errno = err;
        return -1;
    }
    s->fd = sp[0];
    u->sfd = sp[1];
    u->s = s;
    u->net_end = (struct udp_end){ SRC_UDP, u, 1 };
    u->stream_end = (struct udp_end){ SRC_UDP, u, 0 };
    u->idle_s = idle_s ? idle_s : RH_UDP_IDLE_S;
    u->last = rh_now_ms();
    /* bytes bound: a full queue of the largest datagrams would be 16 MB */
    rh_dglink_init(&u->link, queue ? queue : RH_UDP_QUEUE, s->up.cap);
    s->udp = u;
    u->next = c->udps;
    if (c->udps)
        c->udps->prev = u;
    c->udps = u;
    ++c->udp_opened;
    arm(c, u);
    return 0;
}

/* Drops of each direction, as the status page counts them. */
static void count(rh_udp *u, uint64_t out[4])
{
    sync_kernel_drops(u);
    out[0] += u->link.from_stream;
    out[1] += u->link.from_net;
    out[2] += u->link.to_net.dropped + u->link.net_errors;
    out[3] += u->link.to_stream.dropped + u->kernel_drops;
}

void rh_udp_free(core *c, session *s)
{
    rh_udp *u = s->udp;
    if (!u)
        return;
    uint64_t n[4] = { 0, 0, 0, 0 };
    count(u, n);
    for (int i = 0; i < 4; ++i)
        c->udp_closed[i] += n[i];
    rh_core_log(c, RH_LOG_DEBUG, "session %s udp datagrams up=%" PRIu64 " down=%" PRIu64
                " dropped up=%" PRIu64 " down=%" PRIu64, s->sid, n[0], n[1], n[2], n[3]);
    rh_core_arm(c, u->nfd, &u->net_end, &u->nev, 0);
    rh_core_arm(c, u->sfd, &u->stream_end, &u->sev, 0);
    close(u->nfd);
    close(u->sfd);
    rh_dglink_free(&u->link);
    if (u->prev)
        u->prev->next = u->next;
    else
        c->udps = u->next;
    if (u->next)
        u->next->prev = u->prev;
    s->udp = NULL;
    free(u);
}

/* Once a second: idle flows end (a FIN down the stream), and the figures go
 * to the status page. */
void rh_udp_tick(core *c, long now)
{
    if (now - c->udp_tick < RH_CORE_BEAT_MS)
        return;
    c->udp_tick = now;
    uint64_t n[4];
    memcpy(n, c->udp_closed, sizeof(n));
    for (rh_udp *u = c->udps; u; u = u->next) {
        count(u, n);
        if (!u->closed && !u->s->dead && now - u->last >= 1000L * u->idle_s) {
            rh_core_log(c, RH_LOG_DEBUG, "session %s udp idle for %us: ending", u->s->sid,
                        u->idle_s);
            shut(c, u, "idle");
            arm(c, u);
        }
    }
    rh_stats_udp(&c->cfg->reg->stats, c->udp_opened, n);
}
