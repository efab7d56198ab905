/* The relay core event loop.
 *
 * Every session has a target socket and two bounded rings: up (client -> target)
 * and down (target -> client). httpd children attach to a session over the
 * unix socket: a PUSH connection feeds frames into the up ring, a PULL
 * connection drains the down ring as frames. Flow control is the rings' bound:
 * a full ring stops reading its source, so TCP slows the sender. Nothing is
 * polled: an idle session has no event armed but its target's readability and
 * one entry in the timer heap. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <openssl/rand.h>

#include "rh_clients.h"
#include "rh_core.h"
#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_ring.h"
#include "rh_util.h"

#define PUSH_IN_MAX  (RH_FRAME_MAX + RH_FRAME_HDR)
#define OUT_MAX      (RH_IPC_LINE_MAX + 2 * RH_FRAME_HDR + 256)
#define MAX_EVENTS   256

enum { SRC_LISTEN = 1, SRC_STOP, SRC_CONN, SRC_TARGET };
enum { CK_NEW = 0, CK_OPEN, CK_PUSH, CK_PUSHWAIT, CK_PULL, CK_REPLY };

#define PUSH_WAIT_MAX 8     /* pushes queued behind the active one, per session */
#define CRC_MARKS     32    /* down: CRCs of the last frame ends, for acks at them */
#define FAILED_LINGER_MS 30000  /* a session that failed a check answers 422 this long */
#define PUSH_AHEAD_MAX (32ull << 20) /* a push may start this far beyond the accepted offset */
#define CLIENTS_MAX_PER_SLOT 4      /* client entries at most, per session slot */
#define CHECK_FRAME   (RH_FRAME_HDR + RH_FRAME_CHECK_LEN)

typedef struct session session;
typedef struct conn conn;

struct conn {
    int src;                 /* SRC_CONN: first member, epoll's data.ptr */
    int fd;
    uint32_t ev;             /* armed epoll mask */
    int kind;
    int closed;
    session *s;
    unsigned char line[RH_IPC_LINE_MAX];
    size_t line_len;
    unsigned char *in;       /* push input, PUSH_IN_MAX */
    size_t in_off, in_len;
    int eof;                 /* push: the handler ended the body */
    rh_frame_parser fp;
    unsigned char out[OUT_MAX];
    size_t out_off, out_len;
    size_t frame_left;       /* pull: payload of the current D frame still to send */
    long last_write;         /* pull: for heartbeats */
    uint64_t a_sent;         /* pull: up offset last told in an A frame */
    int check_due;           /* pull, checked: a C frame follows the current D frame */
    uint32_t frame_crc;      /* ... carrying this CRC of the bytes up to its end */
    int batch;               /* pull: a long-poll answered in one piece */
    int batch_started;
    size_t batch_data;       /* pull, batch: D payload still to send in this answer */
    int batch_term;          /* pull, batch: the frame that ends the answer */
    long poll_deadline;      /* pull, batch: answer empty at this time */
    uint64_t want_off;       /* waiting push: where its bytes start */
    uint64_t skip;           /* push: leading data bytes the session already has */
    uint64_t start_off;      /* push: the offset it started at */
    int has_len;             /* push: the handler knows the body's length */
    uint64_t body_len;       /* push: that length (frame bytes) */
    uint64_t body_in;        /* push: body bytes received so far */
    long wait_until;         /* waiting push: refused with 409 at this time */
    rh_client *cl;           /* held: whose request this is (see conn_hold) */
    int held;
    conn *next_dead;
};

struct session {
    int src;                 /* SRC_TARGET */
    int fd;
    uint32_t ev;
    uint32_t slot, gen;
    char sid[RH_SID_LEN + 1];
    char target[RH_TARGET_MAX];
    unsigned char secret[RH_SECRET_LEN];
    rh_ring up, down;
    uint64_t up_acc, up_wr, down_rd, down_sent;
    uint64_t down_acked;     /* resumable: the down ring starts at this offset */
    size_t readahead;        /* down bytes read from the target and not yet sent, at most */
    size_t window;           /* sent bytes kept until acknowledged, at most (0: not resumable) */
    unsigned resumable:1, finished:1;
    /* end-to-end checks (check=crc32c): up bytes count as accepted only once a
     * C frame vouched for them; the ring holds [up_wr, up_rcv), and only
     * [up_wr, up_acc) may go to the target */
    unsigned check:1, failed_check:1;
    uint64_t up_rcv;
    uint32_t up_crc_acc, up_crc_rcv;   /* CRC32C of up bytes [0, up_acc), [0, up_rcv) */
    uint32_t down_crc_acked;           /* ... of down bytes [0, down_acked) */
    uint32_t down_crc_sent;            /* ... [0, down_crc_off): a frame end */
    uint64_t down_crc_off;
    struct { uint64_t off; uint32_t crc; } marks[CRC_MARKS];  /* recent frame ends */
    unsigned nmark;
    long linger_until;       /* resumable, finished: freed at this time */
    unsigned connecting:1, up_fin:1, up_shut:1, down_eof:1, down_reset:1,
             down_fin_sent:1, dead:1, reset:1;
    char reason[128];
    conn *push, *pull, *opener;
    rh_client *cl;           /* who opened it */
    conn *push_wait[PUSH_WAIT_MAX];
    int nwait;
    long last_heard, connect_deadline;
    long last_data;          /* down bytes went to a pull or up bytes were accepted */
    unsigned idle_s;
    long deadline;           /* key in the timer heap */
    size_t heap_idx;
    session *next_dead;
};

typedef struct core {
    const rh_core_config *cfg;
    int ep;
    int stop_seen;
    session **by_slot;
    session **heap;
    size_t heap_len;
    session *dead_sessions;
    conn *dead_conns;
    long listen_paused_until;
    int listen_src;
    int stop_src;
    uint64_t integrity_failures;   /* sessions ended by a failed check */
    rh_clients clients;
    unsigned held;                 /* requests held (open, push, pull): httpd workers */
    uint64_t refused;              /* requests refused by a limit */
} core;

/* Test only (RELAY_HTTPS_TEST_FLIP=up:N or down:N): flips the byte at that offset
 * of every checked session after its CRC was taken, to prove the check catches it. */
static uint64_t flip_up = UINT64_MAX, flip_down = UINT64_MAX;

/* Down bytes held but not yet handed to a pull. A resumable session keeps
 * bytes it sent until the client acknowledges them, so it can send them again
 * after a cut; the ring then holds [down_acked, down_rd). */
static size_t down_unsent(const session *s)
{
    return rh_ring_len(&s->down) - (size_t)(s->down_sent - s->down_acked);
}

/* The target may be read: room in the ring, and not too far ahead of the pull. */
static int down_wants_read(const session *s)
{
    return !s->down_eof && rh_ring_space(&s->down) && down_unsent(s) < s->readahead;
}

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

static void down_ack(session *s, uint64_t ack)
{
    if (!s->resumable || ack <= s->down_acked || ack > s->down_sent)
        return;
    if (s->check)
        s->down_crc_acked = down_crc_at(s, ack);
    rh_ring_consume(&s->down, (size_t)(ack - s->down_acked));
    s->down_acked = ack;
}

static int stop_fd = -1;
static long hb_ms = 20000;   /* heartbeat interval, from the config */

void rh_core_request_stop(void)
{
    uint64_t one = 1;
    if (stop_fd >= 0) {
        ssize_t rv = write(stop_fd, &one, sizeof(one));
        (void)rv;
    }
}

static void logf_(core *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(core *c, int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    if (!c->cfg->log || level > c->cfg->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    c->cfg->log(c->cfg->log_ctx, level, buf);
}

/* ---- epoll -------------------------------------------------------------- */

/* fds are added once and then only modified; ARMED marks "added" so that an
 * empty event mask is still told apart from "not registered" (EPOLLET, the bit
 * it borrows, is never used). */
#define ARMED 0x80000000u

static void arm_mask(core *c, int fd, void *ptr, uint32_t *cur, uint32_t want)
{
    if (!want) {
        /* epoll reports HUP/ERR whatever the mask: an fd nobody waits on must go */
        if (*cur)
            epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, NULL);
        *cur = 0;
        return;
    }
    want |= ARMED;
    if (*cur == want)
        return;
    struct epoll_event e = { .events = want & ~ARMED, .data.ptr = ptr };
    int op = *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(c->ep, op, fd, &e) == 0)
        *cur = want;
    else
        logf_(c, RH_LOG_ERR, "epoll_ctl(%d): %s", fd, strerror(errno));
}

/* ---- timer heap (sessions keyed by deadline) ----------------------------- */

static void heap_swap(core *c, size_t a, size_t b)
{
    session *t = c->heap[a];
    c->heap[a] = c->heap[b];
    c->heap[b] = t;
    c->heap[a]->heap_idx = a;
    c->heap[b]->heap_idx = b;
}

static void heap_fix(core *c, size_t i)
{
    while (i > 0 && c->heap[(i - 1) / 2]->deadline > c->heap[i]->deadline) {
        heap_swap(c, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_len && c->heap[l]->deadline < c->heap[m]->deadline)
            m = l;
        if (r < c->heap_len && c->heap[r]->deadline < c->heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_push(core *c, session *s)
{
    s->heap_idx = c->heap_len;
    c->heap[c->heap_len++] = s;
    heap_fix(c, s->heap_idx);
}

static void heap_remove(core *c, session *s)
{
    size_t i = s->heap_idx;
    if (i >= c->heap_len || c->heap[i] != s)
        return;
    c->heap_len--;
    if (i != c->heap_len) {
        c->heap[i] = c->heap[c->heap_len];
        c->heap[i]->heap_idx = i;
        heap_fix(c, i);
    }
    s->heap_idx = (size_t)-1;
}

/* A session whose data moved lately is watched closely by its client: its
 * silent stream pull gets a heartbeat every second instead of every hb_ms. */
static long pull_hb_ms(const session *s, long now)
{
    return now - s->last_data < RH_BUSY_WINDOW_MS ? RH_BUSY_HEARTBEAT_MS : hb_ms;
}

/* When a waiting long-poll answers empty: its poll time, or soon while the
 * session is busy (data that moves during the poll brings the answer closer,
 * so its A frame confirms new up bytes in time). */
static long batch_due(const session *s, const conn *k)
{
    long from = k->last_write > s->last_data ? k->last_write : s->last_data;
    if (s->last_data && from + RH_BUSY_POLL_MS < k->poll_deadline
        && from - s->last_data < RH_BUSY_WINDOW_MS)
        return from + RH_BUSY_POLL_MS;
    return k->poll_deadline;
}

static long session_next_deadline(const session *s)
{
    long d = s->last_heard + (long)s->idle_s * 1000L;
    if (s->connecting && s->connect_deadline < d)
        d = s->connect_deadline;
    if (s->finished && s->linger_until < d)
        d = s->linger_until;
    /* a heartbeat goes only between frames: a pull blocked inside one (its
     * client reads nothing) moves on EPOLLOUT, and a deadline in the past here
     * would spin the loop (session_timer could not send the H) */
    const conn *pk = s->pull;
    if (pk && !pk->batch && pk->frame_left == 0 && pk->out_len == pk->out_off) {
        long hb = pk->last_write + pull_hb_ms(s, rh_now_ms());
        if (hb < d)
            d = hb;
    }
    if (s->pull && s->pull->batch && !s->pull->batch_started && batch_due(s, s->pull) < d)
        d = batch_due(s, s->pull);
    for (int i = 0; i < s->nwait; ++i)
        if (s->push_wait[i]->wait_until < d)
            d = s->push_wait[i]->wait_until;
    return d;
}

/* ---- connections ---------------------------------------------------------- */

static void conn_error(core *c, conn *k, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A request the core holds is an httpd worker held: the operator's budget
 * (RelayMaxWorkers) and the client's share of it (RelayMaxRequestsPerClient)
 * bound them. Answers 503 / 429 and returns -1 when a limit is reached. */
static int conn_hold(core *c, conn *k, rh_client *cl)
{
    rh_limits lim;
    rh_registry_get_limits(c->cfg->reg, &lim);
    if (k->held)
        return 0;
    if (lim.max_workers && c->held >= lim.max_workers) {
        ++c->refused;
        conn_error(c, k, 503, "relay busy: %u requests in flight (RelayMaxWorkers %u)",
                   c->held, lim.max_workers);
        return -1;
    }
    if (cl && lim.requests_per_client && cl->held >= lim.requests_per_client) {
        ++c->refused;
        conn_error(c, k, 429, "too many requests in flight for this client "
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

static void conn_kill(core *c, conn *k)
{
    if (k->closed)
        return;
    conn_unhold(c, k);
    k->closed = 1;
    epoll_ctl(c->ep, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    k->fd = -1;
    k->next_dead = c->dead_conns;
    c->dead_conns = k;
}

static int out_put(conn *k, const void *data, size_t len)
{
    if (k->out_off == k->out_len)
        k->out_off = k->out_len = 0;
    if (len > OUT_MAX - k->out_len)
        return -1;
    memcpy(k->out + k->out_len, data, len);
    k->out_len += len;
    return 0;
}

static void out_printf(conn *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(conn *k, const char *fmt, ...)
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
    out_put(k, buf, (size_t)n);
}

static void out_frame(conn *k, int type, const void *payload, size_t len)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, type, len);
    out_put(k, h, sizeof(h));
    if (len)
        out_put(k, payload, len);
}

/* Writes what is pending in out; returns 0 when all is written, 1 when the socket
 * is full, -1 on error. */
static int out_flush(conn *k)
{
    while (k->out_off < k->out_len) {
        ssize_t n = send(k->fd, k->out + k->out_off, k->out_len - k->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            k->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        return -1;
    }
    k->out_off = k->out_len = 0;
    return 0;
}

/* A reply-only connection: send what is pending, then close. */
static void conn_reply_done(core *c, conn *k)
{
    conn_unhold(c, k);
    k->kind = CK_REPLY;
    k->s = NULL;
    int rv = out_flush(k);
    if (rv != 1) {
        conn_kill(c, k);
        return;
    }
    arm_mask(c, k->fd, k, &k->ev, EPOLLOUT);
}

static void conn_error(core *c, conn *k, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_error(core *c, conn *k, int status, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    k->out_off = k->out_len = 0;
    out_printf(k, "ERR %d %s", status, msg);
    conn_reply_done(c, k);
}

/* ---- sessions ------------------------------------------------------------- */

static void session_update(core *c, session *s);
static void session_pump(core *c, session *s);
static void push_next(core *c, session *s);

/* Closes the target connection (with RST when the session was reset: the
 * target must not take it as a clean end) and frees the session's rings. */
static void target_close(core *c, session *s)
{
    if (s->fd >= 0) {
        if (s->reset) {
            struct linger lg = { 1, 0 };
            setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        epoll_ctl(c->ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
    rh_ring_release(&s->up);
    rh_ring_release(&s->down);
}

static void session_free_now(core *c, session *s)
{
    target_close(c, s);
    if (s->cl) {
        --s->cl->sessions;
        rh_client_touch(s->cl, rh_now_ms());
    }
    c->by_slot[s->slot] = NULL;
    rh_registry_count(c->cfg->reg, s->slot, s->up_acc, s->down_sent);
    rh_registry_release(c->cfg->reg, s->slot);
    heap_remove(c, s);
    free(s);
}

/* Ends a session. Attached connections get a last word: the push a DONE or an
 * error, the pull an F (clean) or R frame when it is between frames. */
static void session_end(core *c, session *s, int reset, const char *reason)
{
    if (s->dead)
        return;
    s->dead = 1;
    s->reset = reset;
    if (reason != s->reason)
        snprintf(s->reason, sizeof(s->reason), "%s", reason);
    logf_(c, reset ? RH_LOG_INFO : RH_LOG_DEBUG,
          "session %s closed (%s) target=%s up=%" PRIu64 " down=%" PRIu64,
          s->sid, reason, s->target, s->up_acc, s->down_sent);
    if (s->opener) {
        conn *k = s->opener;
        s->opener = NULL;
        k->s = NULL;
        conn_error(c, k, 502, "%s", reason);
    }
    if (s->push) {
        conn *k = s->push;
        s->push = NULL;
        k->s = NULL;
        if (reset)
            conn_error(c, k, s->failed_check ? RH_STATUS_INTEGRITY : 410,
                       "session closed: %s", reason);
        else {
            out_printf(k, "DONE %" PRIu64, s->up_acc);
            conn_reply_done(c, k);
        }
    }
    for (int i = 0; i < s->nwait; ++i) {
        conn *k = s->push_wait[i];
        k->s = NULL;
        conn_error(c, k, s->failed_check ? RH_STATUS_INTEGRITY : 410, "session closed: %s",
                   reason);
    }
    s->nwait = 0;
    if (s->pull) {
        conn *k = s->pull;
        s->pull = NULL;
        k->s = NULL;
        if (k->batch && !k->batch_started) {
            /* a waiting long-poll gets a complete answer: A, then R or E */
            int term = reset ? RH_FRAME_RESET : RH_FRAME_END;
            size_t rl = reset ? strlen(reason) : 0;
            unsigned char a[8];
            rh_put_u64(a, s->up_acc);
            out_printf(k, "OK %" PRIu64 " %zu", s->down_sent,
                       (size_t)(RH_FRAME_HDR + 8 + RH_FRAME_HDR) + rl);
            out_frame(k, RH_FRAME_ACK, a, 8);
            out_frame(k, term, reason, rl);
            conn_reply_done(c, k);
        } else if (k->batch || k->frame_left) {
            conn_kill(c, k);   /* mid-answer: the client sees it cut */
        } else {
            if (reset)
                out_frame(k, RH_FRAME_RESET, reason, strlen(reason));
            conn_reply_done(c, k);
        }
    }
    if (s->failed_check) {
        /* kept a while without its target, so that every request of the session
         * hears why it ended (422), not just that it did (410); reset is set */
        target_close(c, s);
        s->deadline = rh_now_ms() + FAILED_LINGER_MS;
        heap_fix(c, s->heap_idx);
        return;
    }
    s->next_dead = c->dead_sessions;
    c->dead_sessions = s;
}

/* The session a request's token names, heard from now; or NULL, and the
 * request has its answer (400 malformed, 410 unknown or expired). */
static session *session_find(core *c, conn *k, const char *token)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    if (rh_token_parse(token, &slot, &gen, secret) != 0) {
        conn_error(c, k, 400, "malformed session token");
        return NULL;
    }
    session *s = slot < c->cfg->reg->nslots ? c->by_slot[slot] : NULL;
    int ok = s && s->gen == gen;
    if (ok)
        ok = rh_ct_equal(s->secret, secret, RH_SECRET_LEN);
    if (ok && s->dead && s->failed_check) {
        conn_error(c, k, RH_STATUS_INTEGRITY, "session closed: %s", s->reason);
        return NULL;
    }
    if (!ok || s->dead) {
        conn_error(c, k, 410, "unknown or expired session");
        return NULL;
    }
    s->last_heard = rh_now_ms();
    return s;
}

/* ---- the up direction: push frames -> ring -> target --------------------- */

static int target_write_direct(core *c, session *s, const unsigned char *data, size_t len)
{
    /* ring empty: hand the bytes straight to the target, ring only the rest */
    size_t done = 0;
    if (rh_ring_len(&s->up) == 0 && !s->connecting) {
        while (done < len) {
            ssize_t n = send(s->fd, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                done += (size_t)n;
                s->up_wr += (uint64_t)n;
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
static void push_detach(session *s)
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
    logf_(c, RH_LOG_ERR, "session %s: %s", s->sid, why);
    conn *k = s->push;
    push_detach(s);
    if (k)
        conn_error(c, k, RH_STATUS_INTEGRITY, "%s", why);
    s->failed_check = 1;
    session_end(c, s, 1, why);
}

/* Push data of a checked session waits in the ring for its C frame. */
static int up_take_checked(core *c, session *s, rh_frame_event *ev)
{
    if (s->up_rcv - s->up_acc + ev->len > RH_FRAME_MAX) {
        integrity_fail(c, s, "up data beyond %" PRIu64 " without a check frame", s->up_acc);
        return -1;
    }
    if (flip_up >= s->up_rcv && flip_up < s->up_rcv + ev->len)
        ((unsigned char *)ev->data)[flip_up - s->up_rcv] ^= 0x01;
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

static void push_process(core *c, session *s)
{
    conn *k = s->push;
    if (!k)
        return;
    while (k->in_off < k->in_len && !s->dead) {
        size_t avail = k->in_len - k->in_off;
        size_t feed = push_feed(k, s, avail);
        rh_frame_event ev;
        if (feed == 0)
            break;
        size_t used = rh_frame_parse(&k->fp, k->in + k->in_off, feed,
                                     s->check ? "DHFRAC" : "DHFRA", &ev);
        k->in_off += used;
        switch (ev.type) {
        case RH_FEV_DATA:
            if (k->skip) {
                /* a retried push: drop what the session already has */
                size_t drop = ev.len < k->skip ? ev.len : (size_t)k->skip;
                k->skip -= drop;
                ev.data += drop;
                ev.len -= drop;
                if (!ev.len)
                    break;
            }
            if (s->up_fin) {
                push_detach(s);
                conn_error(c, k, 400, "data frame after fin");
                session_end(c, s, 1, "protocol error: data after fin");
                return;
            }
            if (s->check) {
                if (up_take_checked(c, s, &ev) != 0)
                    return;
                break;
            }
            s->up_acc += ev.len;
            s->up_rcv = s->up_acc;
            s->last_data = s->last_heard;
            if (target_write_direct(c, s, ev.data, ev.len) != 0) {
                session_end(c, s, 1, "target reset the connection");
                return;
            }
            break;
        case RH_FEV_CHECK:
            if (up_check(c, s, k, &ev) != 0)
                return;
            break;
        case RH_FEV_FIN:
            if (s->up_rcv != s->up_acc) {
                integrity_fail(c, s, "fin after unchecked up bytes at %" PRIu64, s->up_acc);
                return;
            }
            s->up_fin = 1;   /* again after a retry: no harm */
            break;
        case RH_FEV_ACK:
            down_ack(s, ev.offset);
            break;
        case RH_FEV_RESET: {
            char why[160];
            snprintf(why, sizeof(why), "reset by client%s%.*s", ev.len ? ": " : "",
                     (int)(ev.len > 100 ? 100 : ev.len), (const char *)ev.data);
            session_end(c, s, 1, why);
            return;
        }
        case RH_FEV_ERROR: {
            char why[160];
            snprintf(why, sizeof(why), "bad frame: %s", k->fp.error);
            push_detach(s);
            conn_error(c, k, 400, "%s", why);
            session_end(c, s, 1, why);
            return;
        }
        default:   /* H, NONE */
            break;
        }
        if (used == 0 && ev.type == RH_FEV_NONE)
            break;
    }
    if (k->in_off == k->in_len)
        k->in_off = k->in_len = 0;
    if (k->eof && k->in_len == 0 && s->push == k) {
        /* the body ended: the push is done, the session goes on */
        push_detach(s);
        out_printf(k, "DONE %" PRIu64, s->up_acc);
        conn_reply_done(c, k);
    }
}

static ssize_t writev_nosig(int fd, struct iovec *iov, int n);

static void target_write(core *c, session *s)
{
    while (s->up_acc > s->up_wr) {
        struct iovec iov[2];
        int n = rh_ring_read_iov(&s->up, iov, (size_t)(s->up_acc - s->up_wr));
        ssize_t w = writev_nosig(s->fd, iov, n);
        if (w > 0) {
            rh_ring_consume(&s->up, (size_t)w);
            s->up_wr += (uint64_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        session_end(c, s, 1, "target reset the connection");
        return;
    }
    if (s->up_fin && !s->up_shut && !rh_ring_len(&s->up)) {
        shutdown(s->fd, SHUT_WR);   /* carry the client's half-close */
        s->up_shut = 1;
    }
}

/* ---- the down direction: target -> ring -> pull frames ------------------- */

static void target_read(core *c, session *s)
{
    if (!s->down.buf && !s->down_eof) {
        /* allocate the ring only when bytes are there: idle sessions hold none */
        char b;
        ssize_t r = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r == 0) {
            s->down_eof = 1;   /* FIN and nothing before it: no ring needed */
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
        if (iov[0].iov_len >= lim) {
            iov[0].iov_len = lim;
            n = 1;
        } else if (n == 2 && iov[0].iov_len + iov[1].iov_len > lim) {
            iov[1].iov_len = lim - iov[0].iov_len;
        }
        ssize_t r = readv(s->fd, iov, n);
        if (r > 0) {
            rh_ring_commit(&s->down, (size_t)r);
            s->down_rd += (uint64_t)r;
            continue;
        }
        if (r == 0) {
            s->down_eof = 1;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        /* the target reset: deliver what it sent, then tell the client */
        s->down_eof = 1;
        s->down_reset = 1;
        snprintf(s->reason, sizeof(s->reason), "target reset the connection: %s",
                 strerror(errno));
        return;
    }
}

/* writev that never raises SIGPIPE, whatever the process does with it */
static ssize_t writev_nosig(int fd, struct iovec *iov, int n)
{
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A D frame of len bytes starts at down_sent: its C frame will carry the CRC
 * of everything up to its end. */
static void down_frame_begin(session *s, conn *k, size_t len)
{
    uint32_t crc = s->down_sent == s->down_crc_off ? s->down_crc_sent
                                                   : down_crc_at(s, s->down_sent);
    k->frame_crc = down_crc_range(s, crc, s->down_sent, len);
    k->check_due = 1;
    if (flip_down >= s->down_sent && flip_down < s->down_sent + len) {
        struct iovec iov[2];
        if (rh_ring_peek_iov(&s->down, iov, (size_t)(flip_down - s->down_acked), 1) > 0)
            *(unsigned char *)iov[0].iov_base ^= 0x01;
    }
}

/* The D frame is out: its C frame follows at once. */
static void down_frame_end(session *s, conn *k)
{
    unsigned char cf[CHECK_FRAME];
    out_put(k, cf, rh_frame_check(cf, s->down_sent, k->frame_crc));
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
    unsigned char a[8];

    if (s->down_eof)
        k->batch_term = s->down_reset ? RH_FRAME_RESET : RH_FRAME_FIN;
    else
        k->batch_term = RH_FRAME_END;
    if (k->batch_term == RH_FRAME_RESET)
        term_len = strlen(s->reason);
    size_t total = RH_FRAME_HDR + 8 + data + nframes * RH_FRAME_HDR + RH_FRAME_HDR + term_len
                   + (s->check ? nframes * CHECK_FRAME : 0);
    out_printf(k, "OK %" PRIu64 " %zu", s->down_sent, total);
    rh_put_u64(a, s->up_acc);
    out_frame(k, RH_FRAME_ACK, a, 8);
    k->a_sent = s->up_acc;
    k->batch_data = data;
    k->batch_started = 1;
}

static void pull_write(core *c, session *s)
{
    conn *k = s->pull;
    if (k && k->batch && !k->batch_started) {
        /* a long-poll answers as soon as there is anything, or when it runs out */
        if (!down_unsent(s) && !s->down_eof && rh_now_ms() < batch_due(s, k))
            return;
        batch_start(s, k);
    }
    while (k && !s->dead) {
        struct iovec iov[3];
        int n = 0;
        size_t head = k->out_len - k->out_off;
        if (head) {
            iov[n].iov_base = k->out + k->out_off;
            iov[n].iov_len = head;
            n++;
        }
        if (k->frame_left)
            n += rh_ring_peek_iov(&s->down, iov + n, (size_t)(s->down_sent - s->down_acked),
                                  k->frame_left);
        if (n == 0 && k->batch) {
            if (k->batch_data) {
                size_t len = k->batch_data < RH_FRAME_MAX ? k->batch_data : RH_FRAME_MAX;
                unsigned char h[RH_FRAME_HDR];
                rh_frame_hdr(h, RH_FRAME_DATA, len);
                out_put(k, h, sizeof(h));
                k->frame_left = len;
                k->batch_data -= len;
                if (s->check)
                    down_frame_begin(s, k, len);
                continue;
            }
            /* every byte of the answer is out but its last frame */
            int term = k->batch_term;
            if (term == RH_FRAME_RESET)
                out_frame(k, term, s->reason, strlen(s->reason));
            else
                out_frame(k, term, NULL, 0);
            if (term != RH_FRAME_END)
                s->down_fin_sent = 1;
            s->pull = NULL;
            k->s = NULL;
            conn_reply_done(c, k);
            if (term == RH_FRAME_RESET) {
                char why[sizeof(s->reason)];
                memcpy(why, s->reason, sizeof(why));
                session_end(c, s, 1, why);
            }
            return;
        }
        if (n == 0) {
            /* between frames: tell how far the up direction got, then data */
            size_t have = down_unsent(s);
            if (s->up_acc != k->a_sent && (!have || s->up_acc - k->a_sent >= 65536)) {
                unsigned char a[8];
                rh_put_u64(a, s->up_acc);
                out_frame(k, RH_FRAME_ACK, a, 8);
                k->a_sent = s->up_acc;
                continue;
            }
            if (have) {
                size_t len = have < RH_FRAME_MAX ? have : RH_FRAME_MAX;
                unsigned char h[RH_FRAME_HDR];
                rh_frame_hdr(h, RH_FRAME_DATA, len);
                out_put(k, h, sizeof(h));
                k->frame_left = len;
                if (s->check)
                    down_frame_begin(s, k, len);
                continue;
            }
            if (s->down_eof && !s->down_fin_sent) {
                if (s->down_reset)
                    out_frame(k, RH_FRAME_RESET, s->reason, strlen(s->reason));
                else
                    out_frame(k, RH_FRAME_FIN, NULL, 0);
                s->down_fin_sent = 1;
                continue;
            }
            if (s->down_fin_sent) {
                /* all sent: this pull response ends */
                s->pull = NULL;
                k->s = NULL;
                conn_reply_done(c, k);
                if (s->down_reset) {
                    char why[sizeof(s->reason)];
                    memcpy(why, s->reason, sizeof(why));
                    session_end(c, s, 1, why);
                }
            }
            return;
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
            conn_kill(c, k);
            return;
        }
        k->last_write = rh_now_ms();
        size_t w1 = (size_t)w;
        size_t from_out = w1 < head ? w1 : head;
        k->out_off += from_out;
        if (k->out_off == k->out_len)
            k->out_off = k->out_len = 0;
        w1 -= from_out;
        if (w1) {
            k->frame_left -= w1;
            s->down_sent += w1;
            if (!s->resumable) {
                rh_ring_consume(&s->down, w1);
                s->down_acked = s->down_sent;
            }
            if (k->check_due && !k->frame_left)
                down_frame_end(s, k);
            s->last_data = k->last_write;
        }
    }
}

/* Moves whatever can move, then arms epoll for what is waited on. */
static void session_pump(core *c, session *s)
{
    for (int round = 0; round < 4 && !s->dead && !s->connecting; ++round) {
        uint64_t before = s->up_wr + s->down_rd + s->down_sent + s->up_acc + s->up_rcv;
        conn *push_before = s->push;
        if (!s->push && s->nwait)
            push_next(c, s);
        push_process(c, s);
        if (s->dead)
            break;
        target_write(c, s);
        if (s->dead)
            break;
        target_read(c, s);
        pull_write(c, s);
        if (before == s->up_wr + s->down_rd + s->down_sent + s->up_acc + s->up_rcv
            && !(push_before && !s->push && s->nwait))
            break;
    }
    if (!s->dead && s->up_shut && s->down_fin_sent && !s->pull && !s->down_reset) {
        if (!s->resumable)
            session_end(c, s, 0, "closed by both ends");
        else if (!s->finished) {
            /* the client may still come back for the last bytes: linger until it
             * says close, or a little while */
            long now = rh_now_ms();
            long linger = s->idle_s < 30 ? 1000L * s->idle_s : 30000L;
            s->finished = 1;
            s->linger_until = now + linger;
        }
    }
    if (!s->dead && s->down_reset && !down_unsent(s) && !s->pull
        && (!s->resumable || s->down_acked == s->down_sent)) {
        /* the target reset and nothing is left to deliver: free it now */
        char why[sizeof(s->reason)];
        memcpy(why, s->reason, sizeof(why));
        session_end(c, s, 1, why);
    }
    if (!s->dead)
        session_update(c, s);
}

static void session_update(core *c, session *s)
{
    uint32_t want = 0;
    if (s->connecting)
        want = EPOLLOUT;
    else {
        if (down_wants_read(s))
            want |= EPOLLIN;
        if (rh_ring_len(&s->up) || (s->up_fin && !s->up_shut))
            want |= EPOLLOUT;
    }
    arm_mask(c, s->fd, s, &s->ev, want);
    rh_registry_count(c->cfg->reg, s->slot, s->up_acc, s->down_sent);

    conn *k = s->push;
    if (k) {
        uint32_t w = 0;
        /* a reply line goes out now, not after one more epoll round: the
         * handler waits for it before it sends the body (an echo's latency) */
        if (k->out_len > k->out_off)
            (void)out_flush(k);   /* an error shows again on EPOLLOUT */
        if (!k->eof && k->in_len < PUSH_IN_MAX && rh_ring_space(&s->up))
            w |= EPOLLIN;
        if (k->out_len > k->out_off)
            w |= EPOLLOUT;
        arm_mask(c, k->fd, k, &k->ev, w);
    }
    k = s->pull;
    if (k) {
        uint32_t w = EPOLLIN;   /* tells us when the handler goes away */
        if (k->batch)
            w |= k->batch_started ? EPOLLOUT : 0;
        else if (k->out_len > k->out_off || down_unsent(s)
                 || (s->down_eof && !s->down_fin_sent) || s->up_acc != k->a_sent)
            w |= EPOLLOUT;
        arm_mask(c, k->fd, k, &k->ev, w);
    }
    long d = session_next_deadline(s);
    if (d < s->deadline) {
        s->deadline = d;
        heap_fix(c, s->heap_idx);
    }
}

/* ---- requests ------------------------------------------------------------- */

static void open_finish(core *c, session *s)
{
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err) {
        char why[160];
        snprintf(why, sizeof(why), "connecting to target '%s' failed: %s", s->target,
                 strerror(err));
        session_end(c, s, 1, why);
        return;
    }
    s->connecting = 0;
    rh_registry_set_state(c->cfg->reg, s->slot, RH_SLOT_OPEN);
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    logf_(c, RH_LOG_DEBUG, "session %s open target=%s", s->sid, s->target);
    conn *k = s->opener;
    s->opener = NULL;
    if (k) {
        char tok[RH_TOKEN_LEN + 1];
        rh_token_format(tok, s->slot, s->gen, s->secret);
        k->s = NULL;
        out_printf(k, "OK %s", tok);
        conn_reply_done(c, k);
    }
    s->last_heard = rh_now_ms();
    session_pump(c, s);
}

static void req_open(core *c, conn *k, const rh_ipc_req *rq)
{
    union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
    socklen_t salen;
    unsigned char secret[RH_SECRET_LEN];
    uint32_t slot, gen;
    session *s = NULL;

    memset(&sa, 0, sizeof(sa));
    if (inet_pton(AF_INET, rq->host, &sa.v4.sin_addr) == 1) {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons((uint16_t)rq->port);
        salen = sizeof(sa.v4);
    } else if (inet_pton(AF_INET6, rq->host, &sa.v6.sin6_addr) == 1) {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons((uint16_t)rq->port);
        salen = sizeof(sa.v6);
    } else {
        conn_error(c, k, 400, "target address is not numeric");
        return;
    }
    /* the client's share: sessions, open rate, requests in flight */
    rh_limits lim;
    long now = rh_now_ms();
    rh_registry_get_limits(c->cfg->reg, &lim);
    rh_client *cl = rh_clients_get(&c->clients, rq->client[0] ? rq->client : "-", now);
    if (!cl) {
        ++c->refused;
        conn_error(c, k, 503, "too many clients at once");
        return;
    }
    if (lim.sessions_per_client && cl->sessions >= lim.sessions_per_client) {
        ++c->refused;
        conn_error(c, k, 429, "too many sessions for this client (RelayMaxSessionsPerClient "
                   "%u)", lim.sessions_per_client);
        return;
    }
    if (rh_client_take_open(cl, lim.open_rate, now) != 0) {
        ++c->refused;
        conn_error(c, k, 429, "sessions opened too fast (RelayOpenRate %u per second)",
                   lim.open_rate);
        return;
    }
    if (conn_hold(c, k, cl) != 0)
        return;
    if (RAND_bytes(secret, sizeof(secret)) != 1) {
        conn_error(c, k, 503, "no randomness for a session token");
        return;
    }
    if (rh_registry_alloc(c->cfg->reg, rq->target, secret, &slot, &gen) != RH_REG_OK) {
        conn_error(c, k, 503, "session table full (RelayMaxSessions)");
        return;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        rh_registry_release(c->cfg->reg, slot);
        conn_error(c, k, 503, "out of memory");
        return;
    }
    s->src = SRC_TARGET;
    s->slot = slot;
    s->gen = gen;
    s->cl = cl;
    ++cl->sessions;
    rh_client_touch(cl, now);
    if (rq->owner)
        rh_registry_set_owner(c->cfg->reg, slot, rq->owner);
    memcpy(s->secret, secret, sizeof(secret));
    rh_sid_format(s->sid, slot, gen);
    snprintf(s->target, sizeof(s->target), "%s", rq->target);
    /* down: read ahead up to bufsize, plus (resumable) up to window bytes sent
     * and kept until acknowledged: the ring grows only as far as used */
    rh_ring_init(&s->up, rq->bufsize);
    rh_ring_init(&s->down, (size_t)rq->bufsize + (rq->resume ? rq->window : 0));
    s->readahead = rq->bufsize;
    s->window = rq->resume ? rq->window : 0;
    s->idle_s = rq->idle_s;
    s->resumable = rq->resume ? 1 : 0;
    s->check = rq->check ? 1 : 0;
    if (s->check && s->up.cap < 2 * RH_FRAME_MAX)
        rh_ring_init(&s->up, 2 * RH_FRAME_MAX);   /* a D frame waits whole for its C */
    s->last_heard = rh_now_ms();
    s->connect_deadline = s->last_heard + 1000L * rq->connect_s;
    s->connecting = 1;
    s->opener = k;
    k->kind = CK_OPEN;
    k->s = s;
    c->by_slot[slot] = s;
    s->deadline = session_next_deadline(s);
    heap_push(c, s);

    s->fd = socket(((struct sockaddr *)&sa)->sa_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        session_end(c, s, 1, "cannot create a socket");
        return;
    }
    if (connect(s->fd, (struct sockaddr *)&sa, salen) == 0) {
        open_finish(c, s);
        return;
    }
    if (errno != EINPROGRESS) {
        char why[160];
        snprintf(why, sizeof(why), "connecting to target '%s' failed: %s", s->target,
                 strerror(errno));
        session_end(c, s, 1, why);
        return;
    }
    arm_mask(c, s->fd, s, &s->ev, EPOLLOUT);
    arm_mask(c, k->fd, k, &k->ev, EPOLLIN);  /* the handler giving up shows as EOF */
}

static void push_attach(core *c, session *s, conn *k);

static void req_push(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = session_find(c, k, rq->token);
    if (!s || conn_hold(c, k, s->cl) != 0)
        return;
    k->has_len = rq->has_len;
    k->body_len = rq->body_len;
    /* the active push holds its whole body and only its end is still to come:
     * a push that starts where it stops is the next one, not a retry */
    int next_one = s->push && s->push->has_len && s->push->body_in >= s->push->body_len
        && rq->offset == s->up_acc;
    if (s->resumable && rq->offset <= s->up_acc && !next_one) {
        /* a retry after a cut: it replaces a push the server may still think is
         * alive, and what the session already has is dropped from it; a late
         * push that began before the active one must not cut it off */
        if (s->push && rq->offset < s->push->start_off) {
            conn_error(c, k, 409, "push offset %" PRIu64 " is below accepted %" PRIu64,
                       rq->offset, s->up_acc);
            return;
        }
        if (s->push) {
            conn *old = s->push;
            push_detach(s);
            conn_error(c, old, 409, "replaced by a newer push of this session");
            logf_(c, RH_LOG_DEBUG, "session %s: push taken over at %" PRIu64, s->sid,
                  rq->offset);
        }
        k->skip = s->up_acc - rq->offset;
        k->start_off = rq->offset;
        push_attach(c, s, k);
        session_pump(c, s);
        return;
    }
    if (s->up_fin) {
        conn_error(c, k, RH_STATUS_CONFLICT, "reason=" RH_REASON_TOKEN_FIN
                   " the client already finished sending (fin)");
        return;
    }
    if (rq->offset < s->up_acc) {
        conn_error(c, k, 409, "push offset %" PRIu64 " is below accepted %" PRIu64,
                   rq->offset, s->up_acc);
        return;
    }
    if (s->push || rq->offset > s->up_acc) {
        /* a later push of several in flight: it waits for its turn, unread, a
         * short while (it holds an httpd worker) and only if it is near */
        rh_limits lim;
        rh_registry_get_limits(c->cfg->reg, &lim);
        if (s->nwait >= PUSH_WAIT_MAX) {
            conn_error(c, k, 409, "too many pushes in flight for this session");
            return;
        }
        if (rq->offset - s->up_acc > PUSH_AHEAD_MAX) {
            conn_error(c, k, 409, "push offset %" PRIu64 " is too far ahead of accepted %"
                       PRIu64, rq->offset, s->up_acc);
            return;
        }
        k->kind = CK_PUSHWAIT;
        k->s = s;
        k->want_off = rq->offset;
        k->wait_until = rh_now_ms() + 1000L * (lim.push_wait_s ? lim.push_wait_s : s->idle_s);
        s->push_wait[s->nwait++] = k;
        /* nothing is read while it waits, but a handler that hangs up must be seen:
         * epoll reports HUP/ERR whatever the mask */
        arm_mask(c, k->fd, k, &k->ev, EPOLLHUP);
        if (k->wait_until < s->deadline) {
            s->deadline = k->wait_until;
            heap_fix(c, s->heap_idx);
        }
        return;
    }
    k->start_off = rq->offset;
    push_attach(c, s, k);
    session_pump(c, s);
}

/* Makes k the session's active push and tells the handler to send its body. */
static void push_attach(core *c, session *s, conn *k)
{
    k->in = malloc(PUSH_IN_MAX);
    if (!k->in) {
        conn_error(c, k, 503, "out of memory");
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
    out_printf(k, "OK %" PRIu64, s->up_acc);
}

/* The active push ended: start the waiting one that continues where it stopped. */
static void push_next(core *c, session *s)
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
            conn_error(c, k, 409, "push offset %" PRIu64 " is below accepted %" PRIu64,
                       k->want_off, s->up_acc);
            continue;
        }
        k->start_off = k->want_off;
        push_attach(c, s, k);
    }
}

static void req_pull(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = session_find(c, k, rq->token);
    if (!s || conn_hold(c, k, s->cl) != 0)
        return;
    int batch = !strcmp(rq->mode, RH_MODE_BATCH);
    if (!batch && strcmp(rq->mode, RH_MODE_STREAM) != 0) {
        conn_error(c, k, 400, "unsupported pull mode '%s'", rq->mode);
        return;
    }
    if (s->resumable) {
        if (rq->offset < s->down_acked || rq->offset > s->down_sent) {
            conn_error(c, k, 416, "ack %" PRIu64 " is outside the bytes kept (%" PRIu64
                       " to %" PRIu64 ")", rq->offset, s->down_acked, s->down_sent);
            return;
        }
        /* resume: a new pull replaces one the server may still think is alive,
         * and everything after the client's ack is sent again */
        if (s->pull) {
            conn *old = s->pull;
            s->pull = NULL;
            old->s = NULL;
            conn_kill(c, old);
            logf_(c, RH_LOG_DEBUG, "session %s: pull taken over at %" PRIu64, s->sid,
                  rq->offset);
        }
        down_ack(s, rq->offset);
        s->down_sent = rq->offset;   /* == down_acked now */
        s->down_crc_sent = s->down_crc_acked;
        s->down_crc_off = s->down_sent;
        s->down_fin_sent = 0;   /* it asks again: it did not get the F */
    }
    if (s->pull) {
        conn_error(c, k, 409, "a pull is already active for this session");
        return;
    }
    /* checked: a pull starts where a C frame vouched for the bytes before */
    if (rq->offset != s->down_sent || (s->check && rq->offset != s->down_crc_off)) {
        conn_error(c, k, 416, "ack %" PRIu64 " does not match sent %" PRIu64
                   ": bytes were lost and the session cannot resume", rq->offset, s->down_sent);
        session_end(c, s, 1, "down bytes lost with a cut pull");
        return;
    }
    if (s->down_fin_sent) {
        conn_error(c, k, 410, "session already finished");
        return;
    }
    k->kind = CK_PULL;
    k->s = s;
    k->last_write = rh_now_ms();
    s->pull = k;
    /* a stream pull drains the ring as the target fills it: reading ahead by
     * bufsize is enough. A batch pull takes a round trip per answer, so each
     * answer carries all the ring may hold (the window included) */
    s->readahead = batch ? s->down.cap : s->down.cap - s->window;
    if (batch) {
        k->batch = 1;
        k->poll_deadline = k->last_write + 1000L * (rq->poll_s ? rq->poll_s : RH_DEFAULT_POLL_S);
    } else {
        /* an H at once lets the client see whether the path buffers responses */
        unsigned char a[8];
        out_printf(k, "OK %" PRIu64, s->down_sent);
        out_frame(k, RH_FRAME_HEARTBEAT, NULL, 0);
        rh_put_u64(a, s->up_acc);
        out_frame(k, RH_FRAME_ACK, a, 8);
        k->a_sent = s->up_acc;
    }
    if (s->deadline > session_next_deadline(s)) {
        s->deadline = session_next_deadline(s);
        heap_fix(c, s->heap_idx);
    }
    session_pump(c, s);
}

static void req_close(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = session_find(c, k, rq->token);
    if (!s)
        return;
    if (rq->integrity) {
        /* the client's check of down bytes failed: as serious as ours */
        ++c->integrity_failures;
        logf_(c, RH_LOG_ERR, "session %s: " RH_REASON_INTEGRITY " (down bytes, found by the "
              "client)", s->sid);
        session_end(c, s, 1, RH_REASON_INTEGRITY " (down bytes, found by the client)");
    } else if (s->finished)
        session_end(c, s, 0, "closed by both ends");
    else
        session_end(c, s, 1, "closed by client");
    out_printf(k, "OK");
    conn_reply_done(c, k);
}

/* An acknowledgement on its own request, so it never waits behind up data. */
static void req_ack(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = session_find(c, k, rq->token);
    if (!s)
        return;
    if (rq->offset > s->down_sent) {
        conn_error(c, k, 416, "ack %" PRIu64 " is beyond the bytes sent (%" PRIu64 ")",
                   rq->offset, s->down_sent);
        return;
    }
    down_ack(s, rq->offset);
    out_printf(k, "OK %" PRIu64, s->down_acked);
    conn_reply_done(c, k);
    session_pump(c, s);   /* freed room may let the target be read again */
}

static void req_stat(core *c, conn *k)
{
    const rh_registry *r = c->cfg->reg;
    out_printf(k, "OK active=%u opened=%" PRIu64 " closed=%" PRIu64 " integrity=%" PRIu64
               " held=%u refused=%" PRIu64, r->active, r->total_opened, r->total_closed,
               c->integrity_failures, c->held, c->refused);
    conn_reply_done(c, k);
}

static void conn_new_readable(core *c, conn *k)
{
    ssize_t n = recv(k->fd, k->line + k->line_len, sizeof(k->line) - k->line_len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_kill(c, k);
        return;
    }
    k->line_len += (size_t)n;
    unsigned char *nl = memchr(k->line, '\n', k->line_len);
    if (!nl) {
        if (k->line_len == sizeof(k->line))
            conn_error(c, k, 400, "request line too long");
        return;
    }
    char line[RH_IPC_LINE_MAX];
    size_t ll = (size_t)(nl - k->line);
    memcpy(line, k->line, ll);
    line[ll] = '\0';
    rh_ipc_req rq;
    if (rh_ipc_parse_req(line, &rq) != 0) {
        conn_error(c, k, 400, "malformed core request");
        return;
    }
    switch (rq.op) {
    case RH_IPC_OPEN:  req_open(c, k, &rq); break;
    case RH_IPC_PUSH:  req_push(c, k, &rq); break;
    case RH_IPC_PULL:  req_pull(c, k, &rq); break;
    case RH_IPC_CLOSE: req_close(c, k, &rq); break;
    case RH_IPC_ACK:   req_ack(c, k, &rq); break;
    case RH_IPC_STAT:  req_stat(c, k); break;
    default:           conn_error(c, k, 400, "unknown core request"); break;
    }
}

static void conn_event(core *c, conn *k, uint32_t events)
{
    session *s = k->s;
    switch (k->kind) {
    case CK_NEW:
        conn_new_readable(c, k);
        return;
    case CK_OPEN:
        /* the handler gave up waiting for the connect */
        if (s)
            session_end(c, s, 1, "opener went away");
        conn_kill(c, k);
        return;
    case CK_REPLY:
        if (out_flush(k) != 1)
            conn_kill(c, k);
        return;
    case CK_PUSHWAIT:
        /* the handler hung up while waiting: its place is free again */
        if (s)
            for (int i = 0; i < s->nwait; ++i)
                if (s->push_wait[i] == k) {
                    s->push_wait[i] = s->push_wait[--s->nwait];
                    break;
                }
        k->s = NULL;
        conn_kill(c, k);
        return;
    case CK_PUSH:
        if (events & EPOLLOUT) {
            if (out_flush(k) < 0) {
                push_detach(s);
                conn_kill(c, k);
                return;
            }
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            if (k->in_off && k->in_len == PUSH_IN_MAX) {
                memmove(k->in, k->in + k->in_off, k->in_len - k->in_off);
                k->in_len -= k->in_off;
                k->in_off = 0;
            }
            if (k->in_len < PUSH_IN_MAX) {
                ssize_t n = recv(k->fd, k->in + k->in_len, PUSH_IN_MAX - k->in_len, 0);
                if (n > 0) {
                    k->in_len += (size_t)n;
                    k->body_in += (uint64_t)n;
                    s->last_heard = rh_now_ms();
                } else if (n == 0) {
                    k->eof = 1;
                } else if (errno != EAGAIN && errno != EINTR) {
                    k->eof = 1;
                }
            }
        }
        session_pump(c, s);
        return;
    case CK_PULL:
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            char junk[256];
            ssize_t n = recv(k->fd, junk, sizeof(junk), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                s->pull = NULL;
                k->s = NULL;
                conn_kill(c, k);
                logf_(c, RH_LOG_DEBUG, "session %s: pull detached", s->sid);
                session_update(c, s);
                return;
            }
        }
        session_pump(c, s);
        return;
    }
}

static void target_event(core *c, session *s, uint32_t events)
{
    if (s->connecting) {
        open_finish(c, s);
        return;
    }
    session_pump(c, s);
}

static void session_timer(core *c, session *s, long now)
{
    if (s->connecting && now >= s->connect_deadline) {
        if (s->opener) {
            conn *k = s->opener;
            s->opener = NULL;
            k->s = NULL;
            conn_error(c, k, 504, "connecting to target '%s' timed out", s->target);
        }
        session_end(c, s, 1, "connect timeout");
        return;
    }
    if (s->finished && now >= s->linger_until) {
        session_end(c, s, 0, "closed by both ends");
        return;
    }
    if (now >= s->last_heard + (long)s->idle_s * 1000L) {
        session_end(c, s, 1, "idle timeout");
        return;
    }
    for (int i = 0; i < s->nwait; ) {
        conn *k = s->push_wait[i];
        if (now < k->wait_until) {
            ++i;
            continue;
        }
        s->push_wait[i] = s->push_wait[--s->nwait];
        k->s = NULL;
        conn_error(c, k, 409, "push offset %" PRIu64 " not reached in time (RelayPushWait) "
                   "(accepted %" PRIu64 ")", k->want_off, s->up_acc);
    }
    if (s->pull && s->pull->batch && !s->pull->batch_started
        && now >= batch_due(s, s->pull)) {
        pull_write(c, s);   /* the long-poll ran out: an empty answer */
        if (s->dead)
            return;
    }
    if (s->pull && !s->pull->batch && now >= s->pull->last_write + pull_hb_ms(s, now)
        && s->pull->frame_left == 0 && s->pull->out_len == s->pull->out_off) {
        out_frame(s->pull, RH_FRAME_HEARTBEAT, NULL, 0);
        pull_write(c, s);
        if (s->dead)
            return;
    }
    s->deadline = session_next_deadline(s);
    if (s->deadline <= now)
        s->deadline = now + 1000;
    heap_fix(c, s->heap_idx);
    session_update(c, s);
}

static void accept_all(core *c)
{
    for (;;) {
        int fd = accept4(c->cfg->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                logf_(c, RH_LOG_ERR, "accept: %s; pausing new requests for 100 ms",
                      strerror(errno));
                epoll_ctl(c->ep, EPOLL_CTL_DEL, c->cfg->listen_fd, NULL);
                c->listen_paused_until = rh_now_ms() + 100;
            }
            return;
        }
        conn *k = calloc(1, sizeof(*k));
        if (!k) {
            close(fd);
            return;
        }
        k->src = SRC_CONN;
        k->fd = fd;
        k->kind = CK_NEW;
        arm_mask(c, fd, k, &k->ev, EPOLLIN);
    }
}

static void reap(core *c)
{
    while (c->dead_sessions) {
        session *s = c->dead_sessions;
        c->dead_sessions = s->next_dead;
        session_free_now(c, s);
    }
    while (c->dead_conns) {
        conn *k = c->dead_conns;
        c->dead_conns = k->next_dead;
        free(k->in);
        free(k);
    }
}

int rh_core_run(const rh_core_config *cfg)
{
    core C, *c = &C;
    struct epoll_event evs[MAX_EVENTS];
    int rv = RH_CORE_EXIT_FATAL;

    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->ep = -1;
    c->listen_src = SRC_LISTEN;
    c->stop_src = SRC_STOP;
    hb_ms = cfg->heartbeat_s > 0 ? 1000L * cfg->heartbeat_s : 20000;
    const char *flip = getenv("RELAY_HTTPS_TEST_FLIP");
    flip_up = flip_down = UINT64_MAX;   /* a run without the variable flips nothing */
    if (flip && !strncmp(flip, "up:", 3))
        flip_up = strtoull(flip + 3, NULL, 10);
    else if (flip && !strncmp(flip, "down:", 5))
        flip_down = strtoull(flip + 5, NULL, 10);
    c->by_slot = calloc(cfg->reg->nslots, sizeof(*c->by_slot));
    c->heap = calloc(cfg->reg->nslots, sizeof(*c->heap));
    if (!c->by_slot || !c->heap
        || rh_clients_init(&c->clients, cfg->reg->nslots,
                           (size_t)CLIENTS_MAX_PER_SLOT * cfg->reg->nslots) != 0)
        goto leave;

    /* many sessions need many descriptors: take what the hard limit allows */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    c->ep = epoll_create1(EPOLL_CLOEXEC);
    stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->ep < 0 || stop_fd < 0) {
        logf_(c, RH_LOG_ERR, "core start: %s", strerror(errno));
        goto leave;
    }
    int fl = fcntl(cfg->listen_fd, F_GETFL);
    fcntl(cfg->listen_fd, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &c->listen_src };
    struct epoll_event e2 = { .events = EPOLLIN, .data.ptr = &c->stop_src };
    if (epoll_ctl(c->ep, EPOLL_CTL_ADD, cfg->listen_fd, &e) != 0
        || epoll_ctl(c->ep, EPOLL_CTL_ADD, stop_fd, &e2) != 0) {
        logf_(c, RH_LOG_ERR, "core start: epoll: %s", strerror(errno));
        goto leave;
    }
    rv = 0;
    logf_(c, RH_LOG_INFO, "relay core running (pid %d, %u session slots)", (int)getpid(),
          cfg->reg->nslots);

    while (!c->stop_seen) {
        long now = rh_now_ms();
        /* the beat tells httpd's children that the core is alive: one wake-up
         * a second, whatever else it waits for */
        int timeout = RH_CORE_BEAT_MS;
        rh_registry_beat(cfg->reg, now);
        if (c->heap_len) {
            long d = c->heap[0]->deadline - now;
            timeout = d < 0 ? 0 : (d > RH_CORE_BEAT_MS ? RH_CORE_BEAT_MS : (int)d);
        }
        if (c->listen_paused_until) {
            long d = c->listen_paused_until - now;
            if (d <= 0) {
                c->listen_paused_until = 0;
                epoll_ctl(c->ep, EPOLL_CTL_ADD, cfg->listen_fd, &e);
                continue;
            }
            if (timeout < 0 || d < timeout)
                timeout = (int)d;
        }
        int n = epoll_wait(c->ep, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            logf_(c, RH_LOG_ERR, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; ++i) {
            int src = *(int *)evs[i].data.ptr;
            if (src == SRC_LISTEN)
                accept_all(c);
            else if (src == SRC_STOP)
                c->stop_seen = 1;
            else if (src == SRC_CONN) {
                conn *k = evs[i].data.ptr;
                if (!k->closed)
                    conn_event(c, k, evs[i].events);
            } else if (src == SRC_TARGET) {
                session *s = evs[i].data.ptr;
                if (!s->dead)
                    target_event(c, s, evs[i].events);
            }
        }
        /* dead objects are freed only after the whole batch: later events of the
         * batch may still point at them */
        now = rh_now_ms();
        while (c->heap_len && c->heap[0]->deadline <= now) {
            session *s = c->heap[0];
            if (s->dead) {
                heap_remove(c, s);
                if (s->failed_check) {   /* its linger ended */
                    s->next_dead = c->dead_sessions;
                    c->dead_sessions = s;
                }
                continue;
            }
            session_timer(c, s, now);
        }
        reap(c);
    }

    /* stopping: every session ends, targets see a clean close */
    for (uint32_t i = 0; i < cfg->reg->nslots; ++i) {
        session *s = c->by_slot[i];
        if (s && !s->dead) {
            session_end(c, s, 1, "relay server stopping");
            s->reset = 0;   /* the client hears R; the target gets a plain FIN */
        } else if (s && s->failed_check) {
            heap_remove(c, s);   /* still lingering: freed now */
            s->next_dead = c->dead_sessions;
            c->dead_sessions = s;
        }
    }
    reap(c);
    logf_(c, RH_LOG_INFO, "relay core stopped");

leave:
    if (c->ep >= 0)
        close(c->ep);
    if (stop_fd >= 0) {
        close(stop_fd);
        stop_fd = -1;
    }
    free(c->by_slot);
    free(c->heap);
    rh_clients_free(&c->clients);
    return rv;
}
