/* relay-https client: datagrams over tunnels. A flow is one UDP peer's (or
 * destination's) session: a socketpair whose one end is an ordinary tunnel's
 * local socket, the other end ours, framing datagrams into it and sending
 * what comes back to the peer (rh_dgram.h). A flow set is the flows that share
 * one UDP socket, bounded in number (the least recent is ended for a new one)
 * and each ended when idle. Two users: -L udp:[ADDR:]PORT (forward mode, a
 * flow per source address, this file) and SOCKS5 UDP ASSOCIATE (proxy mode,
 * a flow per destination of an association, rhc_socks_udp.c). */
#ifndef RHC_UDP_H
#define RHC_UDP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "rh_dgram.h"
#include "rhc_opts.h"
#include "rhc_tunnel.h"

#define RHC_UDP_FLOWS    64     /* --udp-flows default */
#define RHC_UDP_QUEUE_BYTES (256u * 1024)   /* bytes waiting per flow and direction */

struct rhc_route;
struct rhc_dgflows;

struct rhc_dgflow {
    struct rhc_dgflows *set;
    struct sockaddr_storage peer;   /* where what comes back goes */
    socklen_t plen;
    char key[RH_HOST_MAX + 16];     /* proxy mode: the destination */
    int sfd;                    /* our end of the socketpair; -1 once closed */
    rhc_tunnel *t;              /* NULL once the tunnel is done */
    rh_dglink link;
    uint64_t seen[4];           /* link counters already added to the route */
    int64_t last;               /* a datagram went either way */
    int polled;                 /* in this round's pollfds */
};

struct rhc_dgflows {
    rhc_ctx *c;
    struct rhc_route *route;
    int nfd;                    /* the UDP socket the flows share */
    struct rhc_dgflow **v;
    size_t n, max;
    unsigned idle_s, queue;
    unsigned long serial;
};

/* max and the timeouts from the route's options; 0, or -1 out of memory. */
int rhc_dgflows_init(struct rhc_dgflows *fs, rhc_ctx *c, struct rhc_route *route, int nfd);
/* Closes every flow's end (their tunnels end cleanly). */
void rhc_dgflows_close_all(struct rhc_dgflows *fs);
/* Frees the set; flows whose tunnel still runs are left alone (never freed
 * under a tunnel): call after the tunnels are gone. */
void rhc_dgflows_free(struct rhc_dgflows *fs);
/* The live flow of peer (key NULL) or of key; NULL: none. */
struct rhc_dgflow *rhc_dgflows_find(struct rhc_dgflows *fs, const struct sockaddr_storage *peer,
                                    socklen_t plen, const char *key);
/* A new flow and its tunnel (to key as a destination when set, else to the
 * route's target), ending the least recent one when the set is full; NULL
 * when none can start now. */
struct rhc_dgflow *rhc_dgflows_add(struct rhc_dgflows *fs, const struct sockaddr_storage *peer,
                                   socklen_t plen, const char *key, const char *label);
/* A datagram from the net for f (f NULL: none could take it: dropped). */
void rhc_dgflows_take(struct rhc_dgflows *fs, struct rhc_dgflow *f, const void *d, size_t len);
/* Live flows (a tunnel running or an end open). */
size_t rhc_dgflows_live(const struct rhc_dgflows *fs);
/* The flows' descriptors, at most room; *net_out: the UDP socket has
 * datagrams waiting to be sent (poll it for POLLOUT). Returns how many. */
size_t rhc_dgflows_pollfds(struct rhc_dgflows *fs, struct pollfd *p, size_t room, int *net_out);
/* After the poll: the flows' part (p, n), and the UDP socket's revents
 * (POLLOUT sends what waits; POLLIN is the caller's). Frees what is over. */
void rhc_dgflows_events(struct rhc_dgflows *fs, const struct pollfd *p, size_t n, short net);
/* Idle flows end; frees what is over. How long until the next look (ms).
 * Call before rhc_dgflows_pollfds. */
long rhc_dgflows_tick(struct rhc_dgflows *fs, int64_t now);

/* recvfrom on a UDP socket that counts the kernel's drops (SO_RXQ_OVFL, set by
 * rhc_udp_sockopts, with a receive buffer of RH_UDP_RCVBUF): what the kernel
 * dropped since the last call is added to the route's dropped-up count. */
void rhc_udp_sockopts(int fd);
ssize_t rhc_udp_recvfrom(int fd, void *buf, size_t len, struct sockaddr_storage *ss,
                         socklen_t *sl, struct rhc_route *route, uint32_t *drops);

/* -L udp: forward mode. The route's UDP port (fd bound to it, owned from now
 * on); NULL: out of memory. */
struct rhc_udp;
struct rhc_udp *rhc_udp_new(rhc_ctx *c, struct rhc_route *route, int fd);
/* Frees the flows and the socket; call after the tunnels are gone (rhc_wind_down). */
void rhc_udp_free(struct rhc_udp *u);
/* Descriptors to poll, at most room: the UDP socket first, then each source's
 * socketpair. Returns how many it filled. */
size_t rhc_udp_pollfds(struct rhc_udp *u, struct pollfd *p, size_t room);
/* After the poll: p and n as rhc_udp_pollfds filled them. */
void rhc_udp_events(struct rhc_udp *u, const struct pollfd *p, size_t n);
/* Ends idle sources; how long until the next look (ms). */
long rhc_udp_tick(struct rhc_udp *u, int64_t now);
/* Descriptors it may ask to poll at most. */
size_t rhc_udp_max_fds(const struct rhc_opts *o);

/* --udp-idle, --udp-queue, --udp-flows */
struct opt_def;
int rhc_udp_set_opt(struct rhc_opts *o, const struct opt_def *d, char *arg);

#endif
