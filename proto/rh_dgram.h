/* Datagrams in a byte stream (PROTOCOL.md, Datagrams): each one a 2-byte
 * big-endian length, then its bytes. A bounded queue that drops its oldest
 * datagram when full (a late datagram is worth less than a new one, and a
 * queue must never hold back the loop), and the link that moves datagrams
 * between a UDP socket and a stream socket: the relay core's udp: targets and
 * the client's udp: listeners both use it. libc only. */
#ifndef RH_DGRAM_H
#define RH_DGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "rh_proto.h"

#define RH_DGRAM_PFX_MAX 264   /* a SOCKS5 UDP header with a 255-byte name */

/* The length header of a datagram of len bytes (len <= RH_DGRAM_MAX). */
static inline void rh_dgram_hdr(unsigned char hdr[RH_DGRAM_HDR], size_t len)
{
    hdr[0] = (unsigned char)(len >> 8);
    hdr[1] = (unsigned char)len;
}

typedef struct rh_dgq_item {
    struct rh_dgq_item *next;
    size_t len;
    unsigned char data[];
} rh_dgq_item;

/* Datagrams waiting, oldest first, at most max_n of them and max_bytes in all.
 * The head may be half written to a stream (head_off): it is never dropped. */
typedef struct rh_dgq {
    rh_dgq_item *head, *tail;
    size_t n, bytes;
    size_t max_n, max_bytes;
    size_t head_off;
    uint64_t dropped;           /* datagrams dropped to make room (or out of memory) */
} rh_dgq;

void rh_dgq_init(rh_dgq *q, size_t max_n, size_t max_bytes);
void rh_dgq_clear(rh_dgq *q);
/* Queues len bytes (with their length header in front when framed), dropping
 * the oldest datagrams that must go to make room. Returns how many it dropped
 * (the new one counts when it cannot be stored at all). */
unsigned rh_dgq_push(rh_dgq *q, const void *data, size_t len, int framed);
void rh_dgq_pop(rh_dgq *q);

enum { RH_DGL_OK = 0, RH_DGL_EOF = 1, RH_DGL_ERR = -1, RH_DGL_BAD = -2 };

/* One UDP flow carried on one stream: datagrams from the net wait framed for
 * the stream, datagrams parsed from the stream wait for the net socket. */
typedef struct rh_dglink {
    rh_dgq to_stream;
    rh_dgq to_net;
    unsigned char *in;          /* stream bytes short of a whole datagram (allocated
                                   while some are held) */
    size_t in_len;
    uint64_t from_net, from_stream;   /* datagrams taken from each side */
    uint64_t net_errors;        /* datagrams the net socket refused (dropped) */
    unsigned char pfx[RH_DGRAM_PFX_MAX];   /* sent in front of each datagram to the net
                                              (SOCKS5's UDP header), pfx_len bytes */
    size_t pfx_len;
    unsigned bad_len;           /* RH_DGL_BAD: the length that was out of range */
} rh_dglink;

void rh_dglink_init(rh_dglink *l, size_t max_n, size_t max_bytes);
void rh_dglink_free(rh_dglink *l);
/* A datagram read from the net, queued for the stream. */
void rh_dglink_from_net(rh_dglink *l, const void *data, size_t len);
/* Writes what waits to the stream until it would block: RH_DGL_OK or RH_DGL_ERR. */
int rh_dglink_to_stream(rh_dglink *l, int sfd);
/* Reads the stream (a bounded amount per call) and sends every whole datagram
 * to nfd (to NULL: nfd is connected); what nfd cannot take now waits in
 * to_net. RH_DGL_OK, RH_DGL_EOF, RH_DGL_ERR (errno), or RH_DGL_BAD with
 * bad_len set: a length above RH_DGRAM_MAX. */
int rh_dglink_from_stream(rh_dglink *l, int sfd, int nfd, const struct sockaddr *to,
                          socklen_t tolen);
/* Sends what waits for the net socket until it would block. */
void rh_dglink_to_net(rh_dglink *l, int nfd, const struct sockaddr *to, socklen_t tolen);
/* Datagrams dropped either way (queues full, or refused by the net socket). */
static inline uint64_t rh_dglink_dropped(const rh_dglink *l)
{
    return l->to_stream.dropped + l->to_net.dropped + l->net_errors;
}

#endif
