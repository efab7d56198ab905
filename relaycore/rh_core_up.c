/* The relay core's up direction: push frames -> up ring -> target. Parses the
 * push's frames, checks C frames of checked sessions, writes to the target, and
 * queues pushes that arrive before their turn. Separate from down: the two
 * share only the session and the A frames. */
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
#include <sys/socket.h>

#include "rh_core_int.h"
#include "rh_crc32c.h"
#include "rh_util.h"

static int target_write_direct(core *c, session *s, const unsigned char *data, size_t len)
{
    /* ring empty: hand the bytes straight to the target, ring only the rest */
    size_t done = 0, room = len;
    if (s->peer) {
        /* rendezvous: into the other leg's down ring, no syscall */
        if (rh_ring_len(&s->up) == 0)
            done = rh_pair_put(c, s, data, len);
        room = 0;
    }
    if (room && rh_core_rate_limited(c) && rh_ring_len(&s->up) == 0 && !s->connecting)
        room = rh_core_rate_allow(c, s, len);
    if (room && rh_ring_len(&s->up) == 0 && !s->connecting) {
        while (done < room) {
            ssize_t n = send(s->fd, data + done, room - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                done += (size_t)n;
                s->up_wr += (uint64_t)n;
                if (rh_core_rate_limited(c))
                    rh_core_rate_took(c, s, (size_t)n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            return -1;
        }
    }
    if (done < len)
        rh_ring_put(&s->up, data + done, len - done);
    return 0;
}

/* Up bytes received but not vouched for by a C frame are forgotten when their
 * push goes away: a retry sends them again. */
static void up_drop_unchecked(session *s)
{
    if (s->up_rcv > s->up_acc) {
        rh_ring_drop_tail(&s->up, (size_t)(s->up_rcv - s->up_acc));
        s->up_rcv = s->up_acc;
        s->up_crc_rcv = s->up_crc_acc;
    }
}

/* Detaches the session's active push (its connection is answered elsewhere). */
void rh_core_push_detach(session *s)
{
    if (s->push) {
        s->push->s = NULL;
        s->push = NULL;
    }
    up_drop_unchecked(s);
}

/* A failed check: the bytes never reach the target or the client. */
static void integrity_fail(core *c, session *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void integrity_fail(core *c, session *s, const char *fmt, ...)
{
    char why[sizeof(s->reason)], detail[96];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    snprintf(why, sizeof(why), RH_REASON_INTEGRITY ": %s", detail);
    ++c->integrity_failures;
    rh_core_log(c, RH_LOG_ERR, "session %s: %s", s->sid, why);
    conn *k = s->push;
    rh_core_push_detach(s);
    if (k)
        rh_core_conn_error(c, k, RH_STATUS_INTEGRITY, "%s", why);
    s->failed_check = 1;
    rh_core_session_end(c, s, 1, why);
}

/* Push data of a checked session waits in the ring for its C frame. */
static int up_take_checked(core *c, session *s, rh_frame_event *ev)
{
    if (s->up_rcv - s->up_acc + ev->len > RH_FRAME_MAX) {
        integrity_fail(c, s, "up data beyond %" PRIu64 " without a check frame", s->up_acc);
        return -1;
    }
    if (rh_core_flip_up >= s->up_rcv && rh_core_flip_up < s->up_rcv + ev->len)
        ((unsigned char *)ev->data)[rh_core_flip_up - s->up_rcv] ^= 0x01;
    rh_ring_put(&s->up, ev->data, ev->len);
    s->up_crc_rcv = rh_crc32c(s->up_crc_rcv, ev->data, ev->len);
    s->up_rcv += ev->len;
    return 0;
}

/* A C frame: the client's CRC of its up bytes [0, offset). Frames wholly within
 * what a retried push skips cannot be checked (those bytes are not kept) and
 * need not be: the session already checked them once. */
static int up_check(core *c, session *s, conn *k, const rh_frame_event *ev)
{
    if (k->skip)
        return 0;
    if (ev->offset != s->up_rcv || ev->crc != s->up_crc_rcv) {
        integrity_fail(c, s, "up bytes to %" PRIu64 " (client's check at %" PRIu64
                       ", crc %08x, server's %08x)", s->up_rcv, ev->offset, ev->crc,
                       s->up_crc_rcv);
        return -1;
    }
    s->up_acc = s->up_rcv;
    s->up_crc_acc = s->up_crc_rcv;
    s->last_data = rh_now_ms();
    return 0;
}

/* How many input bytes the frame parser may see now: data only as far as the
 * up ring has room, a header alone (so a D header never drags its payload in). */
static size_t push_feed(const conn *k, const session *s, size_t avail)
{
    size_t lim;
    if (k->fp.type == RH_FRAME_DATA)
        lim = rh_ring_space(&s->up);
    else if (!k->fp.type)
        lim = RH_FRAME_HDR - k->fp.hdr_have;
    else
        lim = avail;
    return avail < lim ? avail : lim;
}

/* One frame event of the active push k: 0 to go on, -1 when the push or the
 * session ended on it (k is answered). */
static int push_frame(core *c, session *s, conn *k, rh_frame_event *ev)
{
    switch (ev->type) {
    case RH_FEV_DATA:
        if (k->skip) {
            /* a retried push: drop what the session already has */
            size_t drop = ev->len < k->skip ? ev->len : (size_t)k->skip;
            k->skip -= drop;
            ev->data += drop;
            ev->len -= drop;
            if (!ev->len)
                return 0;
        }
        if (s->up_fin) {
            rh_core_push_detach(s);
            rh_core_conn_error(c, k, 400, "data frame after fin");
            rh_core_session_end(c, s, 1, "protocol error: data after fin");
            return -1;
        }
        if (s->check)
            return up_take_checked(c, s, ev);
        s->up_acc += ev->len;
        s->up_rcv = s->up_acc;
        s->last_data = s->last_heard;
        if (target_write_direct(c, s, ev->data, ev->len) != 0) {
            rh_core_session_end(c, s, 1, "target reset the connection");
            return -1;
        }
        return 0;
    case RH_FEV_CHECK:
        return up_check(c, s, k, ev);
    case RH_FEV_FIN:
        if (s->up_rcv != s->up_acc) {
            integrity_fail(c, s, "fin after unchecked up bytes at %" PRIu64, s->up_acc);
            return -1;
        }
        s->up_fin = 1;   /* again after a retry: no harm */
        return 0;
    case RH_FEV_ACK:
        rh_core_down_ack(c, s, ev->offset);
        return 0;
    case RH_FEV_RESET: {
        char why[160];
        snprintf(why, sizeof(why), "reset by client%s%.*s", ev->len ? ": " : "",
                 (int)(ev->len > 100 ? 100 : ev->len), (const char *)ev->data);
        rh_core_session_end(c, s, 1, why);
        return -1;
    }
    case RH_FEV_ERROR: {
        char why[160];
        snprintf(why, sizeof(why), "bad frame: %s", k->fp.error);
        rh_core_push_detach(s);
        rh_core_conn_error(c, k, 400, "%s", why);
        rh_core_session_end(c, s, 1, why);
        return -1;
    }
    default:   /* H, NONE */
        return 0;
    }
}

/* Frames of the active push k in p[0, len): D bytes to the target or the up
 * ring, the others acted upon. Stops where a D payload meets a full ring, or
 * when the push or the session ended. Returns the bytes used. */
static size_t push_parse(core *c, session *s, conn *k, unsigned char *p, size_t len)
{
    size_t off = 0;
    while (off < len && !s->dead) {
        size_t feed = push_feed(k, s, len - off);
        rh_frame_event ev;
        if (feed == 0)
            break;
        size_t used = rh_frame_parse(&k->fp, p + off, feed, s->check ? "DHFRAC" : "DHFRA", &ev);
        off += used;
        if (push_frame(c, s, k, &ev) != 0)
            break;
        if (used == 0 && ev.type == RH_FEV_NONE)
            break;
    }
    return off;
}

void rh_core_push_process(core *c, session *s)
{
    conn *k = s->push;
    if (!k)
        return;
    k->in_off += push_parse(c, s, k, k->in + k->in_off, k->in_len - k->in_off);
    if (s->push != k)
        return;   /* it ended on a frame (answered) */
    if (k->in_off == k->in_len)
        k->in_off = k->in_len = 0;
    if (k->eof && k->in_len == 0) {
        /* the body ended: the push is done, the session goes on */
        rh_core_push_detach(s);
        rh_core_out_printf(k, "DONE %" PRIu64, s->up_acc);
        rh_core_conn_reply_done(c, k);
    }
}

void rh_core_target_write(core *c, session *s)
{
    if (s->peer)
        rh_pair_move(c, s);   /* rendezvous: ring to ring; the loop finds nothing */
    while (s->up_acc > s->up_wr && !s->peer) {
        struct iovec iov[2];
        size_t want = (size_t)(s->up_acc - s->up_wr);
        if (rh_core_rate_limited(c) && !(want = rh_core_rate_allow(c, s, want)))
            return;
        int n = rh_ring_read_iov(&s->up, iov, want);
        ssize_t w = writev_nosig(s->fd, iov, n);
        if (w > 0) {
            rh_ring_consume(&s->up, (size_t)w);
            s->up_wr += (uint64_t)w;
            if (rh_core_rate_limited(c))
                rh_core_rate_took(c, s, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        rh_core_session_end(c, s, 1, "target reset the connection");
        return;
    }
    if (s->up_fin && !s->up_shut && !rh_ring_len(&s->up)) {
        shutdown(s->fd, SHUT_WR);   /* carry the client's half-close */
        s->up_shut = 1;
    }
}

/* Makes k the session's active push and tells the handler to send its body. */
void rh_core_push_attach(core *c, session *s, conn *k)
{
    k->in = malloc(PUSH_IN_MAX);
    if (!k->in) {
        rh_core_conn_error(c, k, 503, "out of memory");
        return;
    }
    /* bytes that came behind the request line are the first frames */
    size_t nl = (size_t)((unsigned char *)memchr(k->line, '\n', k->line_len) - k->line) + 1;
    memcpy(k->in, k->line + nl, k->line_len - nl);
    k->in_len = k->line_len - nl;
    k->body_in = k->in_len;
    k->kind = CK_PUSH;
    k->s = s;
    s->push = k;
    rh_frame_parser_init(&k->fp);
    rh_core_out_printf(k, "OK %" PRIu64, s->up_acc);
}

/* The active push ended: start the waiting one that continues where it stopped. */
/* A push at the offset a waiting push starts at is the client's retry of it
 * (it gave that one up: a path held its body; only one of them can ever be
 * used): the
 * waiting one is refused and its place goes. Pushes given up behind a stalled
 * path otherwise filled the queue until RelayPushWait, and the client's
 * retries, refused as too many, ended the tunnel (soak: nginx-back/stall_up). */
void rh_core_push_wait_replace(core *c, session *s, uint64_t off)
{
    for (int i = 0; i < s->nwait; ++i) {
        conn *k = s->push_wait[i];
        if (k->want_off != off)
            continue;
        s->push_wait[i] = s->push_wait[--s->nwait];
        k->s = NULL;
        rh_core_conn_error(c, k, 409, "replaced by a newer push of this session");
        return;
    }
}

void rh_core_push_next(core *c, session *s)
{
    for (int i = 0; i < s->nwait && !s->push; ) {
        conn *k = s->push_wait[i];
        if (k->want_off > s->up_acc) {
            ++i;
            continue;
        }
        s->push_wait[i] = s->push_wait[--s->nwait];
        if (k->want_off < s->up_acc) {
            k->s = NULL;
            rh_core_push_behind(c, k, k->want_off, s->up_acc);
            continue;
        }
        k->start_off = k->want_off;
        rh_core_push_attach(c, s, k);
    }
}

/* The core's scratch buffer for push input (allocated on first use, kept):
 * NULL when out of memory. */
static unsigned char *push_scratch(core *c)
{
    if (!c->push_scratch)
        c->push_scratch = malloc(PUSH_SCRATCH);
    return c->push_scratch;
}

/* Where the next recv of k's body goes and how much it asks for: the push's
 * own buffer while it holds bytes (behind them), else the core's scratch
 * buffer, as much as the up ring has room for, or a frame and a header when
 * that is less (the frames are parsed from there at once, see push_recv).
 * 1: the scratch. */
static int push_recv_room(core *c, session *s, conn *k, unsigned char **buf, size_t *ask)
{
    if (!k->in_len && push_scratch(c)) {
        size_t want = rh_ring_space(&s->up);
        want = want > PUSH_IN_MAX ? want : PUSH_IN_MAX;
        *buf = c->push_scratch;
        *ask = want < PUSH_SCRATCH ? want : PUSH_SCRATCH;
        return 1;
    }
    if (k->in_off && k->in_len == PUSH_IN_MAX) {
        memmove(k->in, k->in + k->in_off, k->in_len - k->in_off);
        k->in_len -= k->in_off;
        k->in_off = 0;
    }
    *buf = k->in + k->in_len;
    *ask = PUSH_IN_MAX - k->in_len;
    return 0;
}

/* One recv of the active push's body. Into the scratch buffer, the frames
 * are parsed at once and what the up ring cannot take yet stays in the
 * push's buffer: parsing stops only where a D payload meets a full ring, so
 * nothing stays when the read asked for no more than the ring's room, and
 * less than PUSH_IN_MAX when it asked for PUSH_IN_MAX. So a bulk upload
 * costs one recv per ring's worth (256 KiB by default), not per 64 KiB
 * frame, and a push holds no more than its one-frame buffer, bulk or idle. */
static void push_recv(core *c, session *s, conn *k)
{
    unsigned char *buf;
    size_t ask;
    int scratch = push_recv_room(c, s, k, &buf, &ask);
    if (!ask)
        return;   /* full: the ring takes nothing now */
    ssize_t n = recv(k->fd, buf, ask, 0);
    k->in_full = n > 0 && (size_t)n == ask;
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            k->eof = 1;
        return;
    }
    k->body_in += (uint64_t)n;
    s->last_heard = rh_now_ms();
    if (!scratch) {
        k->in_len += (size_t)n;
        return;
    }
    if ((size_t)n > PUSH_IN_MAX)
        ++rh_core_push_counts.big_reads;
    size_t used = push_parse(c, s, k, buf, (size_t)n);
    if (s->push != k)
        return;   /* it ended on a frame (answered) */
    size_t left = (size_t)n - used;
    memcpy(k->in, buf + used, left);
    k->in_off = 0;
    k->in_len = left;
    if (left > rh_core_push_counts.left_max)
        rh_core_push_counts.left_max = left;
}

/* The last recv of the active push filled what it asked for, and what it got
 * has gone on: more is likely waiting, so the pump reads again now rather
 * than after an epoll round (one epoll_wait less per read of a bulk upload). */
void rh_core_push_read_on(core *c, session *s)
{
    conn *k = s->push;
    if (!k || !k->in_full || k->eof || k->in_len || !rh_ring_space(&s->up))
        return;
    uint64_t before = k->body_in;
    push_recv(c, s, k);
    if (k->body_in > before)
        ++rh_core_push_counts.read_on;
}

/* An event on the active push's connection: its reply line goes out, its body
 * comes in (as far as the input buffer has room), then the session moves. */
void rh_core_push_event(core *c, conn *k, uint32_t events)
{
    session *s = k->s;
    if (events & EPOLLOUT) {
        if (rh_core_out_flush(k) < 0) {
            rh_core_push_detach(s);
            rh_core_conn_kill(c, k);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        push_recv(c, s, k);
    rh_core_session_pump(c, s);
}
