/* The relay core's connections from httpd children: the output buffer (reply
 * lines and frames), replies and errors that end a request, and the hold a
 * request keeps on the worker budget. Separate: every request and both
 * directions write through it, and none of it knows about sessions. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "rh_core_int.h"
#include "rh_util.h"

/* A request the core holds is an httpd worker held: the operator's budget
 * (RelayMaxWorkers) and the client's share of it (RelayMaxRequestsPerClient)
 * bound them. Answers 503 / 429 and returns -1 when a limit is reached. */
int rh_core_conn_hold(core *c, conn *k, rh_client *cl)
{
    rh_limits lim;
    rh_registry_get_limits(c->cfg->reg, &lim);
    if (k->held)
        return 0;
    if (lim.max_workers && c->held >= lim.max_workers) {
        ++c->refused;
        rh_core_conn_error(c, k, 503, "relay busy: %u requests in flight (RelayMaxWorkers %u)",
                           c->held, lim.max_workers);
        return -1;
    }
    if (cl && lim.requests_per_client && cl->held >= lim.requests_per_client) {
        ++c->refused;
        rh_core_conn_error(c, k, 429, "too many requests in flight for this client "
                           "(RelayMaxRequestsPerClient %u)", lim.requests_per_client);
        return -1;
    }
    k->held = 1;
    k->cl = cl;
    ++c->held;
    if (cl) {
        ++cl->held;
        rh_client_touch(cl, rh_now_ms());
    }
    return 0;
}

static void conn_unhold(core *c, conn *k)
{
    if (!k->held)
        return;
    k->held = 0;
    --c->held;
    if (k->cl) {
        --k->cl->held;
        rh_client_touch(k->cl, rh_now_ms());
        k->cl = NULL;
    }
}

void rh_core_conn_kill(core *c, conn *k)
{
    if (k->closed)
        return;
    conn_unhold(c, k);
    k->closed = 1;
    epoll_ctl(c->ep, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    k->fd = -1;
    if (k->passed_fd >= 0)
        close(k->passed_fd);
    k->passed_fd = -1;
    k->next_dead = c->dead_conns;
    c->dead_conns = k;
}

int rh_core_out_put(conn *k, const void *data, size_t len)
{
    if (k->out_off == k->out_len)
        k->out_off = k->out_len = 0;
    if (len > OUT_MAX - k->out_len)
        return -1;
    memcpy(k->out + k->out_len, data, len);
    k->out_len += len;
    return 0;
}

void rh_core_out_printf(conn *k, const char *fmt, ...)
{
    char buf[RH_IPC_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    rh_core_out_put(k, buf, (size_t)n);
}

void rh_core_out_frame(conn *k, int type, const void *payload, size_t len)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, type, len);
    rh_core_out_put(k, h, sizeof(h));
    if (len)
        rh_core_out_put(k, payload, len);
}

/* An A frame: up bytes to off are accepted. */
void rh_core_out_ack(conn *k, uint64_t off)
{
    unsigned char a[8];
    rh_put_u64(a, off);
    rh_core_out_frame(k, RH_FRAME_ACK, a, 8);
}

/* Sends buf[*off, len) without blocking: 0 when all is sent, 1 when the
 * socket is full, -1 on error. */
static int send_pending(int fd, const unsigned char *buf, size_t *off, size_t len)
{
    while (*off < len) {
        ssize_t n = send(fd, buf + *off, len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            *off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
    }
    return 0;
}

/* Writes what is pending in out, then in big (a long answer); returns 0 when
 * all is written, 1 when the socket is full, -1 on error. */
int rh_core_out_flush(conn *k)
{
    int rv = send_pending(k->fd, k->out, &k->out_off, k->out_len);
    if (rv != 0)
        return rv;
    k->out_off = k->out_len = 0;
    return send_pending(k->fd, k->big, &k->big_off, k->big_len);
}

/* A kept connection after its answer: a new one as accept made it (the
 * same descriptor, nothing of the last request), waiting for a line. */
static void conn_renew(core *c, conn *k)
{
    int fd = k->fd;
    uint32_t ev = k->ev;
    free(k->in);
    free(k->rq);
    free(k->big);
    memset(k, 0, sizeof(*k));
    k->src = SRC_CONN;
    k->fd = fd;
    k->ev = ev;
    k->passed_fd = -1;
    k->kind = CK_NEW;
    rh_core_arm(c, fd, k, &k->ev, EPOLLIN);
}

void rh_core_conn_replied(core *c, conn *k)
{
    if (k->keep && k->passed_fd < 0)
        conn_renew(c, k);
    else
        rh_core_conn_kill(c, k);
}

/* A reply-only connection: send what is pending, then close (or, kept,
 * wait for the next request). */
void rh_core_conn_reply_done(core *c, conn *k)
{
    conn_unhold(c, k);
    k->kind = CK_REPLY;
    k->s = NULL;
    int rv = rh_core_out_flush(k);
    if (rv == 0) {
        rh_core_conn_replied(c, k);
        return;
    }
    if (rv != 1) {
        rh_core_conn_kill(c, k);
        return;
    }
    rh_core_arm(c, k->fd, k, &k->ev, EPOLLOUT);
}

/* A push that starts below what the session has accepted: 409 with the
 * accepted offset, which the handler passes on as Relay-Offset. The view the
 * handler had at the request's start may be older: a client that went by it
 * sent a push the server had whole again and again until it gave up. */
void rh_core_push_behind(core *c, conn *k, uint64_t offset, uint64_t accepted)
{
    rh_core_conn_error(c, k, 409, "offset=%" PRIu64 " push offset %" PRIu64
                       " is below accepted %" PRIu64, accepted, offset, accepted);
}

void rh_core_conn_error(core *c, conn *k, int status, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    k->out_off = k->out_len = 0;
    rh_core_out_printf(k, "ERR %d %s", status, msg);
    rh_core_conn_reply_done(c, k);
}
