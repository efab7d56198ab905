/* The relay core's private header: the objects the core's files share (the
 * core, a session, a connection from an httpd child), the inline helpers of the
 * hot paths, and the functions one file of the core calls in another. Not for
 * use outside relaycore/ (the public face is rh_core.h).
 *
 * The files, one concept each:
 *   rh_core.c          the event loop: start, epoll wait and dispatch, timers, stop
 *   rh_core_timer.c    the min-heap of deadlines
 *   rh_core_conn.c     a connection's output buffer, replies, errors, holds
 *   rh_core_session.c  a session's life: find, pump, arm, deadlines, end, free
 *   rh_core_up.c       up: push frames -> ring -> target
 *   rh_core_down.c     down: target -> ring -> pull frames
 *   rh_core_open.c     OPEN: limits, the new session, the connect to the target
 *   rh_core_req.c      the other requests, and the request line itself
 *   rh_core_watch.c    WATCH: one long-poll for many idle sessions
 *   rh_core_mem.c      RelayResumeMemory: resume windows' bytes, bounded
 *   rh_udp.c           udp: targets: datagrams <-> the session's stream
 *
 * Every session has a target socket and two bounded rings: up (client -> target)
 * and down (target -> client). httpd children attach to a session over the
 * unix socket: a PUSH connection feeds frames into the up ring, a PULL
 * connection drains the down ring as frames. Flow control is the rings' bound:
 * a full ring stops reading its source, so TCP slows the sender. Nothing is
 * polled: an idle session has no event armed but its target's readability and
 * one entry in the timer heap. */
#ifndef RH_CORE_INT_H
#define RH_CORE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "rh_clients.h"
#include "rh_core.h"
#include "rh_core_timer.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_proto.h"
#include "rh_rate.h"
#include "rh_registry.h"
#include "rh_ring.h"

/* The core's internal functions stay inside the module's shared object. */
#pragma GCC visibility push(hidden)

/* A push's own input buffer: one frame and a header. A push reads into the
 * core's scratch buffer of PUSH_SCRATCH bytes whenever its own is empty, and
 * only what the up ring cannot take yet stays in its own (rh_core_up.c,
 * push_recv): a bulk upload then costs one wake, one recv and one send to the
 * target per ring's worth, not per frame, and no push holds more. */
#define PUSH_IN_MAX  (RH_FRAME_MAX + RH_FRAME_HDR)
#define PUSH_SCRATCH (4 * PUSH_IN_MAX)
#define OUT_MAX      (RH_IPC_LINE_MAX + 2 * RH_FRAME_HDR + 256)

enum { SRC_LISTEN = 1, SRC_STOP, SRC_CONN, SRC_TARGET, SRC_RESOLVER, SRC_UDP };
enum { CK_NEW = 0, CK_OPEN, CK_PUSH, CK_PUSHWAIT, CK_PULL, CK_REPLY, CK_LISTEN, CK_SVCWAIT,
       CK_RESOLVE, CK_WATCH };

#define PUSH_WAIT_MAX 8     /* pushes queued behind the active one, per session */
#define CRC_MARKS     32    /* down: CRCs of the last frame ends, for acks at them */
/* A stream pull with no down bytes to carry tells the up offset (A frame) per
 * ACK_UP_BYTES accepted, or ACK_UP_DELAY_MS after the first byte it would
 * confirm: one small TLS record per frame was a fifth of an upload's cost in
 * the handler and the client. A udp: session's client keeps only 256 KiB. */
#define ACK_UP_BYTES     (256u * 1024)
#define ACK_UP_BYTES_UDP (64u * 1024)
#define ACK_UP_DELAY_MS  2
#define RH_SERVED_MAX 64    /* services remembered as served once (for the 503's reason) */
/* Reset sessions whose reason a late request still hears (410 with it): the
 * last TOMB_MAX, for TOMB_MS each */
#define TOMB_MAX 256
#define TOMB_MS  60000

typedef struct session session;
typedef struct conn conn;
typedef struct rh_udp rh_udp;
typedef struct rh_core_watch rh_core_watch;

/* A reset session's reason, kept after the session is gone */
typedef struct rh_tomb {
    uint32_t slot, gen;
    long until;              /* forgotten then; 0: an empty entry */
    unsigned char secret[RH_SECRET_LEN];
    char reason[128];
} rh_tomb;

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
    int in_full;             /* push: the last recv got all it asked for (more may
                                wait: the pump reads on without an epoll round) */
    rh_frame_parser fp;
    unsigned char out[OUT_MAX];
    size_t out_off, out_len;
    size_t frame_left;       /* pull: payload of the current D frame still to send */
    long last_write;         /* pull: for heartbeats */
    uint64_t a_sent;         /* pull: up offset last told in an A frame */
    long a_due;              /* stream pull: an A frame is owed by then; 0: none */
    int check_due;           /* pull, checked: a C frame follows the current D frame */
    uint32_t frame_crc;      /* ... carrying this CRC of the bytes up to its end */
    int batch;               /* pull: a long-poll answered in one piece */
    int keep;                /* the handler keeps the connection for its next
                                request line once the answer is out (a batch
                                pull that asked: `keep`) */
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
    int passed_fd;           /* a descriptor that came with the request line, or -1 */
    rh_ipc_req *rq;          /* rendezvous: a waiting LISTEN or OPEN of a service */
    long pair_deadline;      /* ... answered empty (listen) or 503 (open) at this time */
    long pair_since;         /* ... open: when it came (bounds its tries, see rh_pair.c) */
    conn *pair_prev, *pair_next;   /* ... in the core's list of its kind */
    uint64_t resolve_id;     /* RESOLVE: its lookup (rh_core_resolve.c) ... */
    long resolve_deadline;   /* ... answered 504 at this time */
    char resolve_name[RH_HOST_MAX + 2];
    conn *res_next;          /* ... in the core's list of waiting lookups */
    rh_core_watch *watch;    /* WATCH: its state (rh_core_watch.c) */
    unsigned char *big;      /* a reply longer than out (a watch's answer), sent after out */
    size_t big_len, big_off;
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
    uint64_t down_sent_max;  /* the most ever sent (>= down_sent: it grows where down_sent
                                does); a pull's ack may be up to it (a late pull with an
                                old ack rewinds down_sent) */
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
             down_fin_sent:1, dead:1, reset:1,
             close_asked:1,  /* the client closed with both directions done: the
                                target takes what is left, then a clean end */
             t_rd:1;         /* the target may have bytes: a read is worth a
                                syscall (epoll said so, or the last read filled
                                what it asked for); cleared by EAGAIN or a short read */
    char reason[128];
    const char *open_why;    /* a failed connect: RH_REASON_TOKEN_* for the opener */
    conn *push, *pull, *opener;
    rh_client *cl;           /* who opened it */
    conn *push_wait[PUSH_WAIT_MAX];
    int nwait;
    long last_heard, connect_deadline;
    long last_data;          /* down bytes went to a pull or up bytes were accepted */
    unsigned idle_s;
    rh_timer timer;          /* in the core's timers, keyed by the next deadline */
    rh_bucket rate;          /* RelayRateLimit */
    long throttle_until;     /* held back by a rate limit until then; 0: not */
    /* rendezvous (rh_pair.c): the client leg and the serve leg of a service are
     * each other's target, through a socketpair */
    session *peer;           /* ... bytes move ring to ring (rh_pair_move) */
    unsigned serve_leg:1,    /* its bytes are the client leg's: counted there */
             peer_reset:1,   /* the peer was reset: our target's EOF is a reset */
             unclaimed:1;    /* serve leg: no request of it came yet (the client
                                leg's open waits for one: tentative pairing) */
    long claim_deadline;     /* ... the listen is dropped when none came by then */
    long alone_since;        /* serve leg: no request of it attached since; 0: one is */
    rh_udp *udp;             /* a udp: target: its shim holds the other end of fd */
    session *next_dead;
    session *next_again;     /* in the core's again list (rh_core_session_pump) */
    unsigned again:1,
             in_pump:1,      /* rh_core_session_pump runs for it (a peer's pump
                                that would wake it puts it on the again list) */
             kick:1;         /* rendezvous: its peer moved bytes to or from it:
                                it has work no event will announce */
    size_t mem;              /* down ring bytes counted in RelayResumeMemory (rh_core_mem.c) */
    unsigned mem_wait:1;     /* ... waits for room, in the core's mem_waiters */
    session *mem_next, *mem_prev;
    rh_core_watch *watch;    /* the waiting watch it is in (at most one), or NULL:
                                its idle timeout does not run meanwhile */
    unsigned watch_i;        /* ... its entry there */
    uint32_t watch_mark;     /* the last watch that listed it (repeats) */
};

typedef struct core {
    const rh_core_config *cfg;
    int ep;
    int stop_seen;
    session **by_slot;
    rh_timers timers;              /* every live or lingering session's */
    session *dead_sessions;
    rh_tomb *tombs;                /* TOMB_MAX, a ring: reset sessions' reasons */
    unsigned tomb_next;
    session *again;                /* pumps stopped at their bound with bytes moving:
                                      pumped again next turn, epoll does not wait */
    conn *dead_conns;
    long listen_paused_until;
    int listen_src;
    int stop_src;
    uint64_t integrity_failures;   /* sessions ended by a failed check */
    rh_clients clients;
    unsigned held;                 /* requests held (open, push, pull): httpd workers */
    uint64_t refused;              /* requests refused by a limit */
    int log_level;                 /* RH_LOG_*: cfg's at start, then LOGS' */
    long orphan_since;             /* the module is no longer loaded since then; 0: it is */
    int drain_seen;                /* a newer core took over (rh_registry_drain) */
    rh_limits lim;                 /* the operator's, read at every loop turn */
    rh_bucket rate;                /* RelayGlobalRateLimit */
    conn *listens;                 /* rendezvous: serves waiting for a client, oldest first */
    conn *svc_waits;               /* ... clients waiting for a serve, oldest first */
    long pair_due;                 /* ... the earliest of their deadlines; 0: none */
    char served[RH_SERVED_MAX][RH_TARGET_MAX];   /* services a serve listened for */
    unsigned nserved;
    rh_udp *udps;                  /* udp: targets' shims (rh_udp.c) */
    uint64_t udp_opened;
    uint64_t udp_closed[4];        /* closed shims' datagrams: up, down, dropped up, down */
    long udp_tick;
    struct rh_resolver *resolver;  /* name lookups (RESOLVE), started on first use */
    int resolver_src;
    conn *resolving;               /* ... the requests waiting for one */
    long resolve_due;              /* ... the earliest of their deadlines; 0: none */
    uint64_t resolve_seq;
    int trim_due;                  /* sessions or requests ended since the last malloc_trim */
    long trimmed;                  /* ... which ran then */
    unsigned char *push_scratch;   /* PUSH_SCRATCH: push input read and parsed at once */
    rh_core_watch *watches;        /* WATCH requests reading or waiting (rh_core_watch.c) */
    long watch_due;                /* ... the earliest of their deadlines; 0: none */
    uint32_t watch_serial;         /* ... the last one's number */
    unsigned watch_waiting;        /* ... waiting now, and the sessions they hold */
    unsigned watch_sessions;
    uint64_t mem_bound, mem_client_bound;   /* RelayResumeMemory (0: none; rh_core_mem.c) */
    uint64_t mem_held;             /* ... resume windows' bytes held now */
    uint64_t mem_waits;            /* ... times a session waited for room */
    session *mem_waiters, *mem_waiters_tail;   /* ... the sessions waiting now, oldest first */
    int mem_freed;                 /* ... bytes were freed since the last turn */
} core;

/* Test only (RELAY_HTTPS_TEST_FLIP=up:N or down:N): flips the byte at that offset
 * of every checked session after its CRC was taken, to prove the check catches it. */
extern uint64_t rh_core_flip_up, rh_core_flip_down;
extern long rh_core_hb_ms;   /* heartbeat interval, from the config */
/* Bytes handed from one paired leg to the other without the socketpair (the
 * tests read it: a rendezvous byte must never cross the socketpair). */
extern uint64_t rh_core_handoff_bytes;
/* The push input path, counted for the tests (reset at every core start):
 * reads into the scratch buffer that got more than a push's own buffer holds,
 * reads on without an epoll round that got bytes, and the most bytes one
 * read left in a push's own buffer (never more than PUSH_IN_MAX). */
typedef struct rh_core_push_count {
    uint64_t big_reads, read_on;
    size_t left_max;
} rh_core_push_count;
extern rh_core_push_count rh_core_push_counts;

/* The session a timer of the core's heap is embedded in. */
static inline session *session_of_timer(rh_timer *t)
{
    return (session *)((char *)t - offsetof(session, timer));
}

/* Down bytes held but not yet handed to a pull. A resumable session keeps
 * bytes it sent until the client acknowledges them, so it can send them again
 * after a cut; the ring then holds [down_acked, down_rd). */
static inline size_t down_unsent(const session *s)
{
    return rh_ring_len(&s->down) - (size_t)(s->down_sent - s->down_acked);
}

/* The target may be read: room in the ring, and not too far ahead of the pull. */
static inline int down_wants_read(const session *s)
{
    return !s->down_eof && !s->mem_wait && rh_ring_space(&s->down)
           && down_unsent(s) < s->readahead;
}

/* When a waiting long-poll answers empty: its poll time, or soon while the
 * session is busy (data that moves during the poll brings the answer closer,
 * so its A frame confirms new up bytes in time). */
static inline long batch_due(const session *s, const conn *k)
{
    long from = k->last_write > s->last_data ? k->last_write : s->last_data;
    if (s->last_data && from + RH_BUSY_POLL_MS < k->poll_deadline
        && from - s->last_data < RH_BUSY_WINDOW_MS)
        return from + RH_BUSY_POLL_MS;
    return k->poll_deadline;
}

/* writev that never raises SIGPIPE, whatever the process does with it */
static inline ssize_t writev_nosig(int fd, struct iovec *iov, int n)
{
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- rh_core.c: the loop ---- */
void rh_core_log(core *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rh_core_arm(core *c, int fd, void *ptr, uint32_t *cur, uint32_t want);

/* ---- rh_core_conn.c: connections ---- */
int rh_core_conn_hold(core *c, conn *k, rh_client *cl);
void rh_core_conn_kill(core *c, conn *k);
int rh_core_out_put(conn *k, const void *data, size_t len);
void rh_core_out_printf(conn *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rh_core_out_frame(conn *k, int type, const void *payload, size_t len);
void rh_core_out_ack(conn *k, uint64_t off);
int rh_core_out_flush(conn *k);
void rh_core_conn_reply_done(core *c, conn *k);
/* A reply's last bytes went out (rh_core_out_flush returned 0): a kept
 * connection waits for its next request, any other is closed. */
void rh_core_conn_replied(core *c, conn *k);
void rh_core_push_behind(core *c, conn *k, uint64_t offset, uint64_t accepted);
void rh_core_conn_error(core *c, conn *k, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- rh_core_session.c: sessions ---- */
void rh_core_session_free(core *c, session *s);
void rh_core_session_end(core *c, session *s, int reset, const char *reason);
void rh_core_session_end_reset(core *c, session *s);
session *rh_core_session_find(core *c, conn *k, const char *token);
session *rh_core_session_lookup(core *c, conn *k, const char *token);
void rh_core_session_gone(core *c, conn *k, const char *token);
long rh_core_session_next_deadline(const session *s);
void rh_core_session_pump(core *c, session *s);
void rh_core_session_again(core *c);
/* s is pumped next turn (epoll does not wait meanwhile). */
void rh_core_session_again_add(core *c, session *s);
void rh_core_session_update(core *c, session *s);
void rh_core_session_timer(core *c, session *s, long now);

/* ---- rh_core_up.c: push frames -> ring -> target ---- */
void rh_core_push_attach(core *c, session *s, conn *k);
void rh_core_push_detach(session *s);
void rh_core_push_next(core *c, session *s);
void rh_core_push_wait_replace(core *c, session *s, uint64_t off);
void rh_core_push_process(core *c, session *s);
void rh_core_push_event(core *c, conn *k, uint32_t events);
void rh_core_push_read_on(core *c, session *s);
void rh_core_target_write(core *c, session *s);

/* ---- rh_core_down.c: target -> ring -> pull frames ---- */
void rh_core_down_ack(core *c, session *s, uint64_t ack);
void rh_core_target_read(core *c, session *s);
void rh_core_pull_write(core *c, session *s);
void rh_core_pull_event(core *c, conn *k, uint32_t events);

/* ---- rh_core_mem.c: RelayResumeMemory ---- */
/* How many of want bytes s's down ring may take now (the room below its
 * read-ahead, then what the bounds leave); 0: s waits for room. */
size_t rh_core_mem_allow(core *c, session *s, size_t want);
/* After s's down ring grew or shrank: the counts follow. */
void rh_core_mem_sync(core *c, session *s);
/* s's ring is released: its bytes no longer count, and it waits no more. */
void rh_core_mem_forget(core *c, session *s);
void rh_core_mem_turn(core *c);

/* ---- rh_pair.c: rendezvous ---- */
void rh_pair_open(core *c, conn *k, const rh_ipc_req *rq);
void rh_pair_listen(core *c, conn *k, const rh_ipc_req *rq);
void rh_pair_conn_gone(core *c, conn *k);
void rh_pair_timers(core *c, long now);
void rh_pair_session_end(core *c, session *s, int reset, const char *reason);
void rh_pair_claimed(core *c, session *s);
void rh_pair_decline(core *c, session *s, const char *why);
void rh_pair_claim_late(core *c, session *s, long now);
void rh_pair_watch(session *s, long now);
size_t rh_pair_move(core *c, session *from);
size_t rh_pair_put(core *c, session *from, const unsigned char *data, size_t len);
int rh_pair_ready(const session *s, long now);

/* ---- rh_udp.c: udp: targets ---- */
int rh_udp_open(core *c, session *s, const struct sockaddr *sa, socklen_t salen,
                unsigned idle_s, unsigned queue);
void rh_udp_event(core *c, void *end_ptr, uint32_t events);
void rh_udp_free(core *c, session *s);
void rh_udp_tick(core *c, long now);
/* ---- rh_core_resolve.c: RESOLVE ---- */
void rh_core_req_resolve(core *c, conn *k, const rh_ipc_req *rq);
void rh_core_resolve_event(core *c);
void rh_core_resolve_timers(core *c, long now);
void rh_core_resolve_gone(core *c, conn *k);
void rh_core_resolve_stop(core *c);

/* ---- rh_core_open.c, rh_core_req.c: requests ---- */
rh_client *rh_core_open_client(core *c, conn *k, const rh_ipc_req *rq, int rate);
session *rh_core_session_new(core *c, conn *k, const rh_ipc_req *rq, rh_client *cl);
void rh_core_req_open(core *c, conn *k, const rh_ipc_req *rq);
void rh_core_open_finish(core *c, session *s);
void rh_core_conn_event(core *c, conn *k, uint32_t events);

#pragma GCC visibility pop

/* Rate limits (rh_core_session.c): are any set; how many of want bytes the
 * session may move now (0: it waits, throttle_until says till when); n moved. */
static inline int rh_core_rate_limited(const core *c)
{
    return c->lim.rate_session || c->lim.rate_global;
}
size_t rh_core_rate_allow(core *c, session *s, size_t want);
void rh_core_rate_took(core *c, session *s, size_t n);
/* Held back by a rate limit now (EPOLLIN/EPOLLOUT on the target stay off). */
static inline int rh_core_throttled(const session *s, long now)
{
    return s->throttle_until && now < s->throttle_until;
}

#endif
