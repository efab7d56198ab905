/* Datagrams in a byte stream: the drop-oldest queue and the link between a
 * UDP socket and a stream socket (rh_dgram.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rh_dgram.h"

#define IN_CAP        (RH_DGRAM_HDR + 65535)   /* any header, and the largest datagram */
#define READS_PER_CALL 16                      /* stream reads per call: others get turns */

void rh_dgq_init(rh_dgq *q, size_t max_n, size_t max_bytes)
{
    memset(q, 0, sizeof(*q));
    q->max_n = max_n ? max_n : 1;
    q->max_bytes = max_bytes;
}

static void free_item(rh_dgq *q, rh_dgq_item *it)
{
    q->n--;
    q->bytes -= it->len;
    free(it);
}

void rh_dgq_pop(rh_dgq *q)
{
    rh_dgq_item *it = q->head;
    if (!it)
        return;
    q->head = it->next;
    if (!q->head)
        q->tail = NULL;
    q->head_off = 0;
    free_item(q, it);
}

void rh_dgq_clear(rh_dgq *q)
{
    while (q->head)
        rh_dgq_pop(q);
}

/* Drops the oldest datagram that may go (not a half-written head): 0, or -1
 * when none may. */
static int drop_oldest(rh_dgq *q)
{
    if (!q->head)
        return -1;
    if (!q->head_off) {
        rh_dgq_pop(q);
    } else {
        rh_dgq_item *it = q->head->next;
        if (!it)
            return -1;
        q->head->next = it->next;
        if (q->tail == it)
            q->tail = q->head;
        free_item(q, it);
    }
    q->dropped++;
    return 0;
}

unsigned rh_dgq_push(rh_dgq *q, const void *data, size_t len, int framed)
{
    size_t need = len + (framed ? RH_DGRAM_HDR : 0);
    unsigned dropped = 0;

    while (q->n >= q->max_n || (q->max_bytes && q->bytes + need > q->max_bytes)) {
        if (drop_oldest(q) != 0)
            break;
        ++dropped;
    }
    rh_dgq_item *it = NULL;
    if (q->n < q->max_n && (!q->max_bytes || q->bytes + need <= q->max_bytes))
        it = malloc(sizeof(*it) + need);
    if (!it) {
        q->dropped++;   /* no room even empty, or no memory: the new one goes */
        return dropped + 1;
    }
    if (framed)
        rh_dgram_hdr(it->data, len);
    memcpy(it->data + (framed ? RH_DGRAM_HDR : 0), data, len);
    it->len = need;
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->n++;
    q->bytes += need;
    return dropped;
}

void rh_dglink_init(rh_dglink *l, size_t max_n, size_t max_bytes)
{
    memset(l, 0, sizeof(*l));
    rh_dgq_init(&l->to_stream, max_n, max_bytes);
    rh_dgq_init(&l->to_net, max_n, max_bytes);
}

void rh_dglink_free(rh_dglink *l)
{
    rh_dgq_clear(&l->to_stream);
    rh_dgq_clear(&l->to_net);
    free(l->in);
    l->in = NULL;
    l->in_len = 0;
}

void rh_dglink_from_net(rh_dglink *l, const void *data, size_t len)
{
    l->from_net++;
    rh_dgq_push(&l->to_stream, data, len, 1);
}

int rh_dglink_to_stream(rh_dglink *l, int sfd)
{
    rh_dgq *q = &l->to_stream;
    while (q->head) {
        ssize_t n = send(sfd, q->head->data + q->head_off, q->head->len - q->head_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? RH_DGL_OK : RH_DGL_ERR;
        }
        q->head_off += (size_t)n;
        if (q->head_off == q->head->len)
            rh_dgq_pop(q);
    }
    return RH_DGL_OK;
}

/* One datagram to the net: 1 sent (or refused for good, counted), 0 would block. */
static int send_one(rh_dglink *l, int nfd, const void *d, size_t len,
                    const struct sockaddr *to, socklen_t tolen)
{
    struct iovec iov[2] = { { l->pfx, l->pfx_len }, { (void *)d, len } };
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_name = (void *)to;
    m.msg_namelen = to ? tolen : 0;
    m.msg_iov = l->pfx_len ? iov : iov + 1;
    m.msg_iovlen = l->pfx_len ? 2 : 1;
    for (int tries = 0; tries < 3; ++tries) {
        if (sendmsg(nfd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return 0;
        /* EINTR, or an ICMP error of an earlier datagram (ECONNREFUSED on a
         * connected socket) reported now: this one was not sent, try again */
        if (errno != EINTR && errno != ECONNREFUSED)
            break;
    }
    l->net_errors++;
    return 1;
}

void rh_dglink_to_net(rh_dglink *l, int nfd, const struct sockaddr *to, socklen_t tolen)
{
    while (l->to_net.head
           && send_one(l, nfd, l->to_net.head->data, l->to_net.head->len, to, tolen))
        rh_dgq_pop(&l->to_net);
}

/* Every whole datagram of the input to the net (or its queue); the rest kept. */
static int parse_input(rh_dglink *l, int nfd, const struct sockaddr *to, socklen_t tolen)
{
    size_t pos = 0;
    while (l->in_len - pos >= RH_DGRAM_HDR) {
        const unsigned char *p = l->in + pos;
        size_t len = ((size_t)p[0] << 8) | p[1];
        if (len > RH_DGRAM_MAX) {
            l->bad_len = (unsigned)len;
            return RH_DGL_BAD;
        }
        if (l->in_len - pos < RH_DGRAM_HDR + len)
            break;
        l->from_stream++;
        rh_dglink_to_net(l, nfd, to, tolen);   /* keep their order */
        if (l->to_net.head || !send_one(l, nfd, p + RH_DGRAM_HDR, len, to, tolen))
            rh_dgq_push(&l->to_net, p + RH_DGRAM_HDR, len, 0);
        pos += RH_DGRAM_HDR + len;
    }
    if (pos) {
        memmove(l->in, l->in + pos, l->in_len - pos);
        l->in_len -= pos;
    }
    return RH_DGL_OK;
}

int rh_dglink_from_stream(rh_dglink *l, int sfd, int nfd, const struct sockaddr *to,
                          socklen_t tolen)
{
    int rc = RH_DGL_OK;
    for (int i = 0; i < READS_PER_CALL && rc == RH_DGL_OK; ++i) {
        if (!l->in && !(l->in = malloc(IN_CAP)))
            return RH_DGL_OK;   /* no memory now: the stream waits (level-triggered) */
        ssize_t n = recv(sfd, l->in + l->in_len, IN_CAP - l->in_len, MSG_DONTWAIT);
        if (n == 0) {
            rc = RH_DGL_EOF;
        } else if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                rc = RH_DGL_ERR;
            break;
        } else {
            l->in_len += (size_t)n;
            rc = parse_input(l, nfd, to, tolen);
        }
    }
    if (l->in && !l->in_len) {
        free(l->in);   /* an idle flow holds no input buffer */
        l->in = NULL;
    }
    return rc;
}
