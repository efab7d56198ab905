/* The relay core's down direction: target -> down ring -> pull frames (stream
 * or batch), the CRCs of checked sessions, and the acks that free resumable
 * sessions' kept bytes. Separate from up: it is the hot path of a download. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "rh_core_int.h"
#include "rh_crc32c.h"
#include "rh_util.h"

#define CHECK_FRAME   (RH_FRAME_HDR + RH_FRAME_CHECK_LEN)

/* CRC32C of the down ring's bytes [from, from + n) (from >= down_acked), on crc. */
static uint32_t down_crc_range(const session *s, uint32_t crc, uint64_t from, size_t n)
{
    struct iovec iov[2];
    int k = rh_ring_peek_iov(&s->down, iov, (size_t)(from - s->down_acked), n);
    for (int i = 0; i < k; ++i)
        crc = rh_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
    return crc;
}

/* The CRC of down bytes [0, off), down_acked <= off <= down_sent: remembered
 * when off is a recent frame end (acks land there), else computed. */
static uint32_t down_crc_at(const session *s, uint64_t off)
{
    if (off == s->down_acked)
        return s->down_crc_acked;
    if (off == s->down_crc_off)
        return s->down_crc_sent;
    for (unsigned i = 0; i < CRC_MARKS; ++i)
        if (s->marks[i].off == off)
            return s->marks[i].crc;
    return down_crc_range(s, s->down_crc_acked, s->down_acked, (size_t)(off - s->down_acked));
}

void rh_core_down_ack(core *c, session *s, uint64_t ack)
{
    if (!s->resumable || ack <= s->down_acked || ack > s->down_sent)
        return;
    if (s->check)
        s->down_crc_acked = down_crc_at(s, ack);
    rh_ring_consume(&s->down, (size_t)(ack - s->down_acked));
    s->down_acked = ack;
    rh_core_mem_sync(c, s);
}


void rh_core_target_read(core *c, session *s)
{
    if (s->peer && s->peer->up_acc > s->peer->up_wr)
        rh_pair_move(c, s->peer);   /* rendezvous: the socketpair carries only the end */
    if (!s->t_rd)
        return;   /* drained at the last read: epoll tells when bytes come */
    if (!s->down.buf && !s->down_eof) {
        /* allocate the ring only when bytes are there: idle sessions hold none */
        char b;
        ssize_t r = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->t_rd = 0;
            return;
        }
        if (r < 0 && errno == EINTR)
            return;
        if (r == 0) {
            s->down_eof = 1;   /* FIN and nothing before it: no ring needed */
            s->down_reset = s->peer_reset;   /* rendezvous: the other leg was reset */
            return;
        }
        if (r < 0) {
            /* the peek took the socket error: record it here */
            s->down_eof = 1;
            s->down_reset = 1;
            snprintf(s->reason, sizeof(s->reason), "target reset the connection: %s",
                     strerror(errno));
            return;
        }
    }
    while (down_wants_read(s)) {
        struct iovec iov[2];
        int n = rh_ring_write_iov(&s->down, iov);
        if (!n)
            return;
        size_t lim = s->readahead - down_unsent(s);
        if (rh_core_rate_limited(c) && !(lim = rh_core_rate_allow(c, s, lim)))
            return;
        if (!(lim = rh_core_mem_allow(c, s, lim)))
            return;
        if (iov[0].iov_len >= lim) {
            iov[0].iov_len = lim;
            n = 1;
        } else if (n == 2 && iov[0].iov_len + iov[1].iov_len > lim) {
            iov[1].iov_len = lim - iov[0].iov_len;
        }
        size_t asked = iov[0].iov_len + (n == 2 ? iov[1].iov_len : 0);
        ssize_t r = readv(s->fd, iov, n);
        if (r > 0) {
            rh_ring_commit(&s->down, (size_t)r);
            s->down_rd += (uint64_t)r;
            rh_core_mem_sync(c, s);
            if (rh_core_rate_limited(c))
                rh_core_rate_took(c, s, (size_t)r);
            if ((size_t)r < asked) {
                /* a stream socket answers short only when it had no more: the
                 * next read would be EAGAIN, so leave it to epoll */
                s->t_rd = 0;
                return;
            }
            continue;
        }
        if (r == 0) {
            s->down_eof = 1;
            s->down_reset = s->peer_reset;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->t_rd = 0;
            return;
        }
        /* the target reset: deliver what it sent, then tell the client */
        s->down_eof = 1;
        s->down_reset = 1;
        snprintf(s->reason, sizeof(s->reason), "target reset the connection: %s",
                 strerror(errno));
        return;
    }
}


/* A D frame of len bytes starts at down_sent: its C frame will carry the CRC
 * of everything up to its end. */
static void down_frame_begin(session *s, conn *k, size_t len)
{
    uint32_t crc = s->down_sent == s->down_crc_off ? s->down_crc_sent
                                                   : down_crc_at(s, s->down_sent);
    k->frame_crc = down_crc_range(s, crc, s->down_sent, len);
    k->check_due = 1;
    if (rh_core_flip_down >= s->down_sent && rh_core_flip_down < s->down_sent + len) {
        struct iovec iov[2];
        if (rh_ring_peek_iov(&s->down, iov, (size_t)(rh_core_flip_down - s->down_acked), 1) > 0)
            *(unsigned char *)iov[0].iov_base ^= 0x01;
    }
}

/* The D frame is out: its C frame follows at once. */
static void down_frame_end(session *s, conn *k)
{
    unsigned char cf[CHECK_FRAME];
    rh_core_out_put(k, cf, rh_frame_check(cf, s->down_sent, k->frame_crc));
    k->check_due = 0;
    s->down_crc_sent = k->frame_crc;
    s->down_crc_off = s->down_sent;
    s->marks[s->nmark].off = s->down_sent;
    s->marks[s->nmark].crc = k->frame_crc;
    s->nmark = (s->nmark + 1) % CRC_MARKS;
    if (!s->resumable)
        s->down_crc_acked = k->frame_crc;
}

/* A batch answer is sized when it starts: the line says how many bytes follow,
 * so the handler can send a Content-Length and buffering proxies pass it on. */
static void batch_start(session *s, conn *k)
{
    size_t data = down_unsent(s);
    size_t nframes = (data + RH_FRAME_MAX - 1) / RH_FRAME_MAX;
    size_t term_len = 0;

    if (s->down_eof)
        k->batch_term = s->down_reset ? RH_FRAME_RESET : RH_FRAME_FIN;
    else
        k->batch_term = RH_FRAME_END;
    if (k->batch_term == RH_FRAME_RESET)
        term_len = strlen(s->reason);
    size_t total = RH_FRAME_HDR + 8 + data + nframes * RH_FRAME_HDR + RH_FRAME_HDR + term_len
                   + (s->check ? nframes * CHECK_FRAME : 0);
    rh_core_out_printf(k, "OK %" PRIu64 " %zu", s->down_sent, total);
    rh_core_out_ack(k, s->up_acc);
    k->a_sent = s->up_acc;
    k->batch_data = data;
    k->batch_started = 1;
}

/* What the pull's next step did: more may go out now, or it is done for now. */
enum { PULL_STOP = 0, PULL_MORE = 1 };

/* The next D frame, len bytes from down_sent: its header goes through out, its
 * payload straight from the ring (no copy). */
static void pull_frame_start(session *s, conn *k, size_t len)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, RH_FRAME_DATA, len);
    rh_core_out_put(k, h, sizeof(h));
    k->frame_left = len;
    if (s->check)
        down_frame_begin(s, k, len);
}

/* The pull's answer is complete: it detaches and its handler gets what is left
 * in out; when the answer carried the target's reset, the session ends. */
static void pull_finish(core *c, session *s, conn *k, int reset)
{
    s->pull = NULL;
    k->s = NULL;
    rh_core_conn_reply_done(c, k);
    if (reset)
        rh_core_session_end_reset(c, s);
}

/* A batch answer between frames: its next D frame, or its last frame. */
static int batch_next(core *c, session *s, conn *k)
{
    if (k->batch_data) {
        size_t len = k->batch_data < RH_FRAME_MAX ? k->batch_data : RH_FRAME_MAX;
        pull_frame_start(s, k, len);
        k->batch_data -= len;
        return PULL_MORE;
    }
    /* every byte of the answer is out but its last frame */
    int term = k->batch_term;
    if (term == RH_FRAME_RESET)
        rh_core_out_frame(k, term, s->reason, strlen(s->reason));
    else
        rh_core_out_frame(k, term, NULL, 0);
    if (term != RH_FRAME_END)
        s->down_fin_sent = 1;
    pull_finish(c, s, k, term == RH_FRAME_RESET);
    return PULL_STOP;
}

/* Whether a stream pull tells the up offset now: in front of a D frame (the
 * same write) or of the F/R that ends the response, per ACK_UP_BYTES, or once
 * the owed A frame is due. Never after the F/R: nothing may follow it. */
static int ack_now(const session *s, conn *k, size_t have)
{
    if (s->up_acc == k->a_sent || s->down_fin_sent)
        return 0;
    if (have || s->down_eof
        || s->up_acc - k->a_sent >= (s->udp ? ACK_UP_BYTES_UDP : ACK_UP_BYTES))
        return 1;
    long now = rh_now_ms();
    if (!k->a_due) {
        k->a_due = now + ACK_UP_DELAY_MS;   /* the session timer sends it */
        return 0;
    }
    return now >= k->a_due;
}

/* A stream pull between frames: tell how far the up direction got, then data,
 * then the target's end. */
static int stream_next(core *c, session *s, conn *k)
{
    size_t have = down_unsent(s);
    int acked = ack_now(s, k, have);
    if (acked) {
        rh_core_out_ack(k, s->up_acc);
        k->a_sent = s->up_acc;
        k->a_due = 0;
    }
    if (have) {
        pull_frame_start(s, k, have < RH_FRAME_MAX ? have : RH_FRAME_MAX);
        return PULL_MORE;
    }
    if (acked)
        return PULL_MORE;
    if (s->down_eof && !s->down_fin_sent) {
        if (s->down_reset)
            rh_core_out_frame(k, RH_FRAME_RESET, s->reason, strlen(s->reason));
        else
            rh_core_out_frame(k, RH_FRAME_FIN, NULL, 0);
        s->down_fin_sent = 1;
        return PULL_MORE;
    }
    if (s->down_fin_sent)
        pull_finish(c, s, k, s->down_reset);   /* all sent: this pull response ends */
    return PULL_STOP;
}

/* What is pending for the pull as iovecs: out (a line, frame headers), then
 * the current D frame's payload in the ring, then, when all of it goes, its
 * C frame (built in cf): the handler gets a frame and its check in one read,
 * and the client, which holds a frame until its check, gets them in one TLS
 * record. *head is out's part. */
static inline int pull_iov(const session *s, conn *k, struct iovec iov[4], size_t *head,
                           unsigned char cf[CHECK_FRAME])
{
    int n = 0;
    *head = k->out_len - k->out_off;
    if (*head) {
        iov[n].iov_base = k->out + k->out_off;
        iov[n].iov_len = *head;
        n++;
    }
    if (k->frame_left) {
        int m = rh_ring_peek_iov(&s->down, iov + n, (size_t)(s->down_sent - s->down_acked),
                                 k->frame_left);
        size_t got = 0;
        for (int i = n; i < n + m; ++i)
            got += iov[i].iov_len;
        n += m;
        if (k->check_due && got == k->frame_left) {
            iov[n].iov_base = cf;
            iov[n].iov_len = rh_frame_check(cf, s->down_sent + k->frame_left, k->frame_crc);
            n++;
        }
    }
    return n;
}

/* w bytes went to the handler: first out's head bytes, then D payload, then
 * (of a frame sent whole) its C frame, which down_frame_end puts in out: the
 * part of it already written is taken off there. */
static inline void pull_sent(session *s, conn *k, size_t w, size_t head)
{
    k->last_write = rh_now_ms();
    size_t from_out = w < head ? w : head;
    k->out_off += from_out;
    if (k->out_off == k->out_len)
        k->out_off = k->out_len = 0;
    w -= from_out;
    if (w) {
        size_t data = w < k->frame_left ? w : k->frame_left;
        k->frame_left -= data;
        s->down_sent += data;
        if (s->down_sent > s->down_sent_max)
            s->down_sent_max = s->down_sent;
        if (!s->resumable) {
            rh_ring_consume(&s->down, data);
            s->down_acked = s->down_sent;
        }
        if (k->check_due && !k->frame_left)
            down_frame_end(s, k);
        s->last_data = k->last_write;
        w -= data;
        if (w) {
            /* out held nothing before down_frame_end: it is that C frame */
            k->out_off += w;
            if (k->out_off == k->out_len)
                k->out_off = k->out_len = 0;
        }
    }
}

void rh_core_pull_write(core *c, session *s)
{
    conn *k = s->pull;
    if (k && k->batch && !k->batch_started) {
        /* a long-poll answers as soon as there is anything, or when it runs out */
        if (!down_unsent(s) && !s->down_eof && rh_now_ms() < batch_due(s, k))
            return;
        batch_start(s, k);
    }
    while (k && !s->dead) {
        struct iovec iov[4];
        unsigned char cf[CHECK_FRAME];
        size_t head;
        int n = pull_iov(s, k, iov, &head, cf);
        if (n == 0) {
            if ((k->batch ? batch_next(c, s, k) : stream_next(c, s, k)) == PULL_STOP)
                return;
            continue;
        }
        ssize_t w = writev_nosig(k->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* the handler went away (client gone): the pull detaches */
            s->pull = NULL;
            k->s = NULL;
            rh_core_conn_kill(c, k);
            return;
        }
        pull_sent(s, k, (size_t)w, head);
    }
}

/* An event on the pull's connection: the handler sends nothing after its
 * request, so a read that ends (EOF, error) means it went away and the pull
 * detaches; else the session moves. */
void rh_core_pull_event(core *c, conn *k, uint32_t events)
{
    session *s = k->s;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char junk[256];
        ssize_t n = recv(k->fd, junk, sizeof(junk), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            s->pull = NULL;
            k->s = NULL;
            rh_core_conn_kill(c, k);
            rh_core_log(c, RH_LOG_DEBUG, "session %s: pull detached", s->sid);
            if (s->close_asked)
                rh_core_session_pump(c, s);     /* the clean end waited for it */
            else
                rh_core_session_update(c, s);
            return;
        }
    }
    rh_core_session_pump(c, s);
}
