/* relay-https client: SOCKS5 UDP ASSOCIATE (RFC 1928, 7) in proxy mode. The
 * client's control connection asks; we answer with the address of a UDP
 * socket of our own, and each destination the client's datagrams name (in
 * their SOCKS5 UDP header) gets a session of its own, a datagram session to
 * BASE/RH_DEST_TARGET (Relay-Datagram), which the server lets through only to
 * a port its RelayAllow lists as udp/PORT. Replies come back with the
 * destination's header in front. The association ends with its control
 * connection. */
#ifndef RHC_SOCKS_UDP_H
#define RHC_SOCKS_UDP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "rhc_tunnel.h"

struct rhc_route;
struct rhc_sudp;

/* The associations of one proxy; NULL when out of memory. */
struct rhc_sudp *rhc_sudp_new(rhc_ctx *c);
/* Frees what is left; call after the tunnels are gone (rhc_wind_down). */
void rhc_sudp_free(struct rhc_sudp *s);

/* A UDP ASSOCIATE whose request was read from ctrl: answers it (our UDP
 * address, or a failure) and keeps ctrl for the association's life; ctrl is
 * closed on failure. peer names the client in logs. 0, or -1. */
int rhc_sudp_associate(struct rhc_sudp *s, struct rhc_route *route, int ctrl, const char *peer);

/* Associations alive (they count against --max-connections). */
size_t rhc_sudp_count(const struct rhc_sudp *s);
/* Descriptors rhc_sudp_pollfds may fill at most. */
size_t rhc_sudp_nfds(const struct rhc_sudp *s);
/* Fills at most room pollfds; returns how many. */
size_t rhc_sudp_pollfds(struct rhc_sudp *s, struct pollfd *p, size_t room);
/* After the poll: p and n as rhc_sudp_pollfds filled them. */
void rhc_sudp_events(struct rhc_sudp *s, const struct pollfd *p, size_t n);
/* Idle destinations end; ended associations are freed. The wait until the
 * next look (ms), or -1. Call before rhc_sudp_pollfds. */
long rhc_sudp_tick(struct rhc_sudp *s, int64_t now);

#endif
