/* relay-https client: -L udp:[ADDR:]PORT. One bound UDP socket per route; each
 * source address gets a tunnel of its own (a session to the server's udp:
 * target), whose local side is a socketpair: this file frames the source's
 * datagrams into it and sends what comes back to that source (rh_dgram.h). */
#ifndef RHC_UDP_H
#define RHC_UDP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "rhc_opts.h"
#include "rhc_tunnel.h"

#define RHC_UDP_IDLE_S   60     /* --udp-idle default */
#define RHC_UDP_FLOWS    64     /* --udp-flows default */
#define RHC_UDP_QUEUE_BYTES (256u * 1024)   /* bytes waiting per source and direction */

struct rhc_route;
struct rhc_udp;

/* The route's UDP port (fd bound to it, owned from now on); NULL: out of memory. */
struct rhc_udp *rhc_udp_new(rhc_ctx *c, struct rhc_route *route, int fd);
/* Frees the flows whose tunnels ended and the socket; call after the tunnels
 * are gone (rhc_wind_down). */
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
