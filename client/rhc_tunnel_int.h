/* relay-https client, private: struct rhc_tunnel and struct rhc_ctx, the limits
 * and timings they work with, and the functions the rhc_*.c files of a tunnel
 * call of each other (grouped by file). Not for relay-https.c: rhc_tunnel.h is
 * the API. */
#ifndef RHC_TUNNEL_INT_H
#define RHC_TUNNEL_INT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>

#include "rh_frame.h"
#include "rh_proto.h"
#include "rh_ring.h"
#include "rhc_heap.h"
#include "rhc_choose.h"
#include "rhc_local.h"
#include "rhc_opts.h"
#include "rhc_req.h"
#include "rhc_route.h"
#include "rhc_stats.h"
#include "rhc_tunnel.h"
#include "rhc_upbuf.h"
#include "rhc_watch.h"

#define OBUF_SOFT         (256u * 1024)   /* responses pause while this much waits locally */
#define OBUF_MAX          (4u * 1024 * 1024) /* hard cap: soft cap + one curl callback */
#define UPBUF_MAX         (32u * 1024 * 1024) /* up ring bound: bytes in flight, unconfirmed */
#define UPBUF_UDP_MAX     (256u * 1024)   /* ... of a -L udp: session */
#define UPBUF_ROOM_MIN    16384u          /* up ring: counts as full below this room */
#define UP_AHEAD_MAX      (512u * 1024)   /* local bytes read ahead of the pushes */
#define BATCH_BODY_MAX    (2048u * 1024)  /* frames in one batch push */
#define SPUSH_BODY_MAX    (256ull << 20)  /* a stream push body ends after this; a new one goes on */
#define SPUSH_BODY_MIN    (64ull << 10)   /* ... and after a 413 never below this */
#define SPUSH_SLACK       (4u << 10)      /* a push body ends this close to its limit */
#define SPUSH_DATA(B)     ((B) - (B) / 64) /* its data bytes: frame heads and checks fit the rest */
#define SPUSH_AHEAD_MAX   (60ull << 20)   /* the next push is asked for at most this far ahead of
                                             what the server confirmed (it allows 64 MiB) */
#define SPUSH_LEAD_RTTS   4               /* ... when its body is this many round trips from its end */
#define CHECK_FRAME       (RH_FRAME_HDR + RH_FRAME_CHECK_LEN)  /* follows every D frame */
/* data bytes that fit a push body of B bytes: D frames of RH_FRAME_MAX, each with
 * its C frame, and an F */
#define DATA_IN_BODY(B)   ((B) - (((B) + RH_FRAME_MAX - 1) / RH_FRAME_MAX) \
                                 * (RH_FRAME_HDR + CHECK_FRAME) - RH_FRAME_HDR)
#define BATCH_DATA_MAX    DATA_IN_BODY(BATCH_BODY_MAX)
#define BATCH_INFLIGHT    8               /* batch pushes in flight (a WAN round trip each) ... */
#define PROBE_NO_HEADERS_MS 10000     /* extra wait for a first frame when no headers came */
#define BATCH_SLOTS       (2 * BATCH_INFLIGHT) /* ... (more only when one is split: 413) */
#define BATCH_DATA_MIN    (16u * 1024)    /* smallest push a 413 can make us send */
#define HEARTBEAT_MS      (RH_HEARTBEAT_S * 1000) /* H frame after this much silence on a body */
#define PULL_DEAD_MS      (3 * HEARTBEAT_MS) /* three server heartbeats missed = dead */
#define POLL_LATE_MS      15000           /* an idle long-poll unanswered this long past the
                                             server's Relay-Poll-Timeout = dead */
#define BUSY_MARGIN_MS    5000            /* our busy window ends this much before the server's */
#define BUSY_POLL_DEAD_MS (RH_BUSY_POLL_MS + 2000)  /* busy: a long-poll answers by then */
#define BUSY_HB_DEAD_MS   (3 * RH_BUSY_HEARTBEAT_MS) /* busy: a stream shows a frame by then */
#define SILENT_SHIFT_MAX  4               /* each busy-silence resume doubles those, up to x16 ... */
#define SILENT_FORGET_MS  60000           /* ... until this long passes without one */
#define UP_DEAD_MS        3000            /* up bytes unconfirmed this long, server alive:
                                             the request carrying them is dead ... */
/* A request whose connection is not up yet is called dead this long after its
 * start at the earliest: on a server busy with thousands of handshakes a
 * connection took seconds (given up at 3 s, each try was a handshake for
 * nothing), while a path that black-holes a new connection must still be
 * left in seconds, not at curl's connect timeout (15 s). */
#define CONNECT_DEAD_MS   8000
#define UP_DEAD_MAX_MS    60000           /* ... (doubling while nothing moves, up to this) */
#define PROBE_FIRST_MS    2000            /* auto: a stream response shows its first frame by then */
#define ACK_STALL_MS      3000            /* auto: pushed bytes acknowledged by then */
#define DOWN_QUIET_MS     1000            /* ... judged only when no down data came for this long */
#define FLUSH_PAD         (32u * 1024)    /* padded H that pushes a partly filled buffer on */
#define FLUSH_MAX         3               /* padded H frames per stall */
#define SWITCH_GRACE_MIN  100             /* after a pull switch, up bytes wait this long ... */
#define SWITCH_GRACE_MAX  1000            /* ... (2 round trips, within these bounds) */
#define SWITCH_WAIT_MS    10000           /* an ended duplex body gets this long to be confirmed */
#define SPLIT_BULK        (2u << 20)      /* a duplex body that carries this much up ... */
#define SPLIT_MS          1000            /* ... within this long hands the up side to a stream push */
#define SPLIT_LEAD_MIN    (1u << 20)      /* ... after at least this much more on the duplex (the
                                             push connects meanwhile) ... */
#define SPLIT_LEAD_MAX    (8u << 20)      /* ... and at most this much: what it carries in ... */
#define SPLIT_LEAD_RTTS   2               /* ... this many round trips (TCP and TLS) + 10 ms */
#define SPLIT_AGAIN_MS    10000           /* a push for a split that failed: the next try waits */
#define SPLIT_EARLY       (32u << 10)     /* auto's trial: its duplex body carries this much up
                                             (with its frames, within an HTTP/2 stream's first
                                             window of 64 KiB), then a stream push asked for
                                             at its start (duplex_split_early) */
#define SPLIT_EARLY_MS    5000            /* ... dropped unused after this (RelayPushWait: 10 s) */
#define CURL_OUT_HOLD_MS  20              /* see curl_events (rhc_loop.c) */
#define H2_STREAMS_PER_CONN 6             /* see rhc_ctx_new */
#define CONN_CACHE_MIN    64              /* curl's connection cache: at least this ... */
#define CONN_CACHE_PER_TUNNEL 2           /* ... and this many per tunnel (rhc_ctx_size_cache) */
#define CONN_CACHE_MAX    65536           /* ... (bounded by descriptors anyway) */
#define CONN_CACHE_SLACK  64              /* shrunk only when this far too large */
#define H2_MUX_SAFE_CURL  0x080500        /* first libcurl that may multiplex safely (8.5.0) */
#define H2_RESETS_MAX     4               /* see duplex_done */
#define OPEN_TIMEOUT_MS   30000
#define OPEN_RETRIES      8               /* an open cut before its answer goes again */
#define CLOSE_TIMEOUT_MS  5000
#define LINGER_MS         5000            /* time for an R frame to leave before teardown */
#define ACK_IDLE_MS       200             /* resume: acknowledge what came once down is quiet this long */
#define ACK_TIMEOUT_MS    15000
#define ACK_MAX_GAP       (1024u * 1024)  /* resume: acknowledge at least this often */
#define ACK_INFLIGHT      6               /* resume: ack requests in flight at once */
#define IDLE_MARGIN_MS    5000            /* resume: stop trying this long before the server forgets */
#define RETRY_MAX         12              /* tries of a refused or cut push / pull in a row */

#define WATCH_GROUPS_MAX  16    /* groups of a route (RH_WATCH_MAX tunnels each); more
                                   tunnels long-poll */
#define WATCH_OLD_MAX     8     /* superseded watches waiting for their empty answer */
#define WATCH_CUTS_MAX    3     /* a watch cut this often in a row: its tunnels poll */
#define WATCH_FAILS_MAX   4     /* failed watches in a row: the route stops watching */
/* A watch, and the pull of a tunnel that leaves one, take a pooled connection
 * only when it was in use this recently: the others idled past a server's
 * keep-alive (Apache's KeepAliveTimeout is 5 s), and libcurl 7.88 tried the
 * closed ones in turn ("Send failure: Broken pipe") before a new one. */
#define WATCH_CONN_MAXAGE_S 2

/* a watch group of a route and its requests (rhc_xp_watch.c) */
struct rhc_wslot {
    struct rhc_wgroup g;
    struct rhc_route *route;
    struct rhc_req *cur;        /* the group's watch in flight */
    struct rhc_req *old[WATCH_OLD_MAX]; /* superseded ones, their answer to come */
    int nold;
    unsigned cuts;              /* watches cut before an answer, in a row */
    int64_t poll_ms;            /* the longest poll time of its members' sessions */
};

/* a route's watch (rhc_xp_watch.c) */
struct rhc_watch {
    int off;                    /* the route does not watch (any more) */
    unsigned fails;             /* watches answered wrongly, in a row */
    struct rhc_wslot *slot[WATCH_GROUPS_MAX];
    int nslot;
};

struct rhc_tunnel {
    rhc_ctx *ctx;
    struct rhc_route *route;    /* options, policy, counters (rhc_route.h) */
    rhc_tunnel *prev, *next;
    char label[112];
    rhc_done_fn done;
    void *done_arg;
    char token[RH_TOKEN_LEN + 1];
    char sid[RH_SID_LEN + 1];      /* public part of the token, the only part we print */

    struct rhc_local local;

    struct {                    /* the session as the server sees it */
        int resume;             /* the server keeps bytes until acknowledged (Resume) */
        int64_t idle_ms;        /* resume: the server keeps the session this long unheard */
        int64_t poll_ms;        /* an idle long-poll is answered by then (0: not said) */
        int64_t last_contact;   /* a request of the session last got an answer then */
        int64_t last_busy;      /* down bytes came or up bytes were confirmed then */
        unsigned h2_resets;     /* duplex streams reset unanswered, in a row */
        unsigned open_retries;
        int64_t rtt_ms;         /* open: from request sent to answer */
        int serve_leg;          /* serve mode: the server resets it when unheard for
                                   RH_SERVE_GONE_S (it takes its serve for gone) */
    } sess;

    struct {                    /* the requests in flight */
        struct rhc_req *open;
        struct rhc_req *duplex; /* carries down (xp.down duplex), and up until ended */
        struct rhc_req *pull;   /* stream or batch pull */
        struct rhc_req *spush;  /* stream push */
        struct rhc_req *spush_next; /* the next one, asked for before spush's body ends */
        struct rhc_req *spush_prev; /* a body that ended for its length, answer to come */
        struct rhc_req *bpush[BATCH_SLOTS];
        int nbpush;
    } rq;

    struct {                    /* transports */
        enum rhc_transport up, down;
        int autox;              /* --transport auto: probe and fall back */
        int switching;          /* an ended streamed body is being confirmed */
        int64_t switch_since;
        int64_t probe_until;    /* auto: the down response must show a frame by then */
        int64_t up_fallback_at; /* auto: pushes go batch then (after a pull switch) */
        const char *up_fallback_why;
        int up_hold;            /* auto, path not proven: no up byte goes out yet */
        int64_t hold_until;     /* ... until the down response shows a frame, or then */
        unsigned restarts;      /* sessions started over (nothing exchanged yet) */
        int switched_pull;      /* a stream pull was given up: a 416 then means why */
        enum rhc_transport down_seen; /* a response of this down transport showed a
                                   frame: on it, silence now means a dead connection */
        int64_t split_since;    /* duplex: up bytes counted from then ... */
        uint64_t split_from;    /* ... and this offset, to tell a bulk upload (duplex_split) */
        uint64_t split_acked;   /* ... and what the server had confirmed then */
        int64_t split_again_at; /* no split before then (one failed) */
        int split_early;        /* the split push is auto's trial's (duplex_split_early) */
        int64_t split_early_at; /* ... asked for then */
    } xp;

    /* up: local -> ring -> pushes */
    struct rhc_upbuf up;
    struct {                    /* how the pushes go */
        int r_pending, r_sent;  /* local side failed: R frame on the streamed body */
        int hb_pending;
        size_t hb_pad;          /* the pending H carries this much padding */
        unsigned pads;          /* padded H frames sent since the last confirmation */
        int64_t pad_from;       /* ack_wait_since when the first of them went (up_dead_at) */
        int64_t last_emit;      /* a streamed body last gave curl bytes then */
        int64_t last_data;      /* when up data last went into a streamed body */
        int parked;             /* no stream push until there is something to send */
        int64_t park_keep_at;   /* parked: an ack then tells the server we are here */
        int64_t ack_wait_since; /* up.sent > up.acked since then, no ack came */
        int64_t dead_ms;        /* unconfirmed this long: the push is dead (see up_dead_at) */
        unsigned retries;       /* streamed body refused or cut, in a row */
        int64_t spush_at;       /* start the stream push (again) then */
        uint64_t ahead_skip;    /* no next push asked for ahead at this offset (one failed) */
        int a_pending;          /* an A frame (ack of a_off) is to go in the push body */
        uint64_t a_off;
    } push;

    struct {                    /* down: responses -> local */
        uint64_t off;           /* data bytes received (and checked) so far */
        uint32_t crc;           /* CRC32C of down bytes [0, off) */
        int fin;                /* F frame seen */
        unsigned pulls;         /* pulls / duplexes started */
        unsigned retries;       /* refused (409) or lost-before-answer, in a row */
        int fresh;              /* next pull on a new connection */
        int64_t repull_at;      /* 0, or when to start the next down request */
        int64_t last_rx;
        int64_t last_data;
        unsigned silent_n;      /* resumes after a silent response, in a row (pull_dead_ms) */
        int64_t silent_at;      /* the last of them */
        int64_t keep_at;        /* a serve leg's batch long-poll: its next ack (maybe_ack) */
    } down;

    struct {                    /* resume: acknowledging down bytes */
        uint64_t every;         /* acknowledge down bytes this often */
        uint64_t sent;          /* down offset told to the server (maybe in flight) */
        uint64_t conf;          /* ... and confirmed by it */
        struct rhc_req *req[ACK_INFLIGHT]; /* streamed down: acks in flight */
        int n;                  /* how many */
        unsigned fails;         /* ack requests failed in a row */
        int verify;             /* after a cut: an ack is to confirm that the server
                                   still knows the session (see maybe_ack) */
        int64_t retry_at;
    } ack;

    struct {                    /* the end */
        int code;               /* first failure wins; 0 = none */
        int server_gone;        /* the server already dropped the session */
        int quiet;              /* ended by rhc_tunnel_end_quietly */
        int64_t linger_until;   /* failing, but let an R frame go out first */
        char msg[768];
    } end;

    struct rhc_meter meter;     /* auto: timing this session's transport (rhc_measure.c) */

    struct {                    /* proxy mode: the destination and its answer */
        char dest[RH_HOST_MAX + 16];   /* Relay-Destination of the open */
        int dgram;              /* SOCKS5 UDP: datagrams (Relay-Datagram) */
        rhc_greet_fn fn;        /* tells the local side how the open ended */
        void *arg;
        int done;               /* fn was called */
        long status;            /* the failed open's HTTP status (0: none) */
        char reason[16];        /* ... and Relay-Reason */
    } greet;

    struct {                    /* what the statistics show (rhc_stats.c) */
        struct rhc_bytes bytes;
        unsigned resumes;       /* requests taken up again after a cut */
        int64_t started;
    } stat;

    struct {                    /* when the loop looks at it (rhc_wake.c) */
        struct rhc_heap_node timer; /* t_deadline, in the context's heap */
        size_t due;             /* 1 + its index in ctx->due: looked at this round */
        int want;               /* events its local socket has in the epoll set
                                   (RHC_EP_NONE: not in it) */
        size_t polled;          /* 1 + its index in ctx->polled: its fds go
                                   through poll() (stdio) */
        int gone;               /* being freed: nothing wakes it any more */
    } wake;

    struct {                    /* idle: waiting in its route's watch (rhc_xp_watch.c) */
        struct rhc_wslot *slot; /* its group; NULL: not watched */
        size_t idx;             /* its place there */
        uint64_t up_mark;       /* up bytes read when its last long-poll started */
        int woke;               /* it left the watch: its next pull takes no old connection */
        int64_t idle_retry;     /* an idle stream or duplex tunnel could not join then */
    } watch;
};

struct cfd {                    /* a socket of curl's (rhc_csock.c) */
    curl_socket_t fd;
    int events;                 /* what curl asked for (POLLIN, POLLOUT) */
    int reg;                    /* what the epoll set has (RHC_EP_NONE: not in it) */
    struct rhc_heap_node hold;  /* in ctx->holds: POLLOUT left out until hold.at,
                                   see curl_out_check */
    uint64_t wrote;             /* the socket's bytes written, when last looked at */
    int dirty;                  /* events changed since the set was last told */
};

#define RHC_KICKS_MAX 16        /* bodies told at once that they have no more */

#define RHC_EVENTS_MAX 256      /* epoll events taken per batch ... */
#define RHC_EVENT_BATCHES 64    /* ... and batches per round, before the timers */
#define RHC_EVENTS_LATE_MS 250  /* reading them took this long: read again ... */
#define RHC_EVENT_REREADS 4     /* ... up to this many times (rhc_loop.c) */

struct epoll_event;

struct rhc_ctx {
    const struct rhc_opts *o;
    CURLM *multi;
    CURLSH *share;              /* TLS sessions and DNS shared by all requests */
    int64_t curl_deadline;      /* -1: curl has no timer */
    int epfd;                   /* curl's sockets and the tunnels' local sockets */
    struct cfd **cfd_of;        /* curl's sockets by descriptor (rhc_csock.c) */
    size_t ncfd_of;
    struct rhc_heap holds;      /* ... those with POLLOUT held back */
    curl_socket_t *dirty;       /* ... those whose events changed this round */
    size_t ndirty, capdirty;
    curl_socket_t kicks[RHC_KICKS_MAX]; /* sockets of bodies that handed curl all they
                                   had (csock_kicks) */
    size_t nkicks;
    struct rhc_heap timers;     /* the tunnels' deadlines (rhc_wake.c) */
    rhc_tunnel **due;           /* tunnels to look at this round, NULL: gone */
    size_t ndue, capdue;
    rhc_tunnel **polled;        /* tunnels whose local fds go through poll() */
    size_t npolled, cappolled;
    rhc_tunnel *tunnels;
    size_t ntunnels;
    size_t cache_size;          /* CURLMOPT_MAXCONNECTS now (rhc_ctx_size_cache) */
    struct rhc_req *closers;
    size_t nclosers;
    struct rhc_req *gate_head, *gate_tail;  /* requests waiting to connect (rhc_gate.c) */
    size_t ngated, nconnecting;
    size_t gate_cut;            /* the gate's bound is CONNECTING_MAX less this */
    size_t gate_ups;            /* connections up since the bound last rose */
    int64_t gate_cut_at;        /* the bound was last cut then */
    struct pollfd *pfds;        /* scratch for poll(): the caller's fds, the polled
                                   tunnels' and the epoll set */
    rhc_tunnel **powner;        /* tunnel of each local pollfd */
    size_t cappfds;
    struct epoll_event *evs;    /* RHC_EVENTS_MAX, scratch for epoll_wait() */
    struct rhc_route *routes;   /* owned, in the order added (rhc_route.c) */
    struct rhc_stats_clock stats;  /* when the statistics were reported (rhc_stats.c) */
    /* serve mode: its listen requests end here (rhc_serve.c owns them) */
    void (*listen_done)(void *arg, struct rhc_req *r, CURLcode rc);
    void *listen_arg;
};

static inline uint64_t up_read_off(const rhc_tunnel *t)
{
    return rhc_upbuf_read_off(&t->up);
}

/* The request that carries down bytes now, and the one whose body streams up. */
static inline struct rhc_req *down_req(const rhc_tunnel *t)
{
    return t->xp.down == RHC_XP_DUPLEX ? t->rq.duplex : t->rq.pull;
}

static inline struct rhc_req *up_streamer(const rhc_tunnel *t)
{
    if (t->xp.up == RHC_XP_DUPLEX)
        return t->rq.duplex;
    if (t->xp.up == RHC_XP_STREAM)
        return t->rq.spush;
    return NULL;
}

/* rhc_loop.c: whether this libcurl may put several streams on one connection */
int rhc_curl_multiplex_ok(void);
void rhc_ctx_size_cache(rhc_ctx *c);                /* curl's connection cache for the tunnels */

/* rhc_up.c: the up direction, whatever carries it */
void up_ack(rhc_tunnel *t, uint64_t x);             /* the server has the bytes below x */
int up_rewind(rhc_tunnel *t, uint64_t x, const char *why);  /* they go again from x */
void up_restart(rhc_tunnel *t, int64_t delay);      /* after an ended streamed body */
void up_kick(rhc_tunnel *t);                        /* wake a body, start batch pushes */
void spush_refresh(rhc_tunnel *t);
int64_t park_at(const rhc_tunnel *t);
void push_park(rhc_tunnel *t, int64_t now);
void park_unstick(rhc_tunnel *t);                   /* a parking push's answer is not waited for */
int64_t stall_deadline(const rhc_tunnel *t);
int64_t flush_deadline(const rhc_tunnel *t);
int64_t up_dead_at(const rhc_tunnel *t, int64_t now);
void up_dead(rhc_tunnel *t, int64_t now);

/* rhc_body.c: the curl callbacks of frame streams */
size_t body_read(char *buf, size_t size, size_t nitems, void *ud);
int body_seek(void *ud, curl_off_t offset, int origin);
int down_headers_done(struct rhc_req *r);          /* 0: stop, wrong offset */
size_t resp_write(char *ptr, size_t size, size_t nmemb, void *ud);
int down_req_go(rhc_tunnel *t, struct rhc_req *r, int64_t now);

/* rhc_measure.c: bytes moved (confirmed up, written down): time them? (May
 * run in a curl callback: it only records; meter_switch acts, from the loop.) */
void meter_moved(rhc_tunnel *t);
void meter_switch(rhc_tunnel *t);
int64_t meter_switch_at(const rhc_tunnel *t);        /* when it acts; -1: nothing due */
int meter_claim(rhc_tunnel *t);     /* 1: this new duplex session is the route's trial */

/* rhc_ack.c */
int64_t alive_every(const rhc_tunnel *t);          /* against the server's idle timeout */
void maybe_ack(rhc_tunnel *t, int64_t now);
int64_t ack_deadline(const rhc_tunnel *t);
void ack_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
int ack_by_push(const rhc_tunnel *t, uint64_t gap);
size_t ack_frame(rhc_tunnel *t, struct rhc_req *r, char *buf, size_t room);
void ack_push_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);

/* rhc_xp_batch.c */
struct rhc_req *bpush_new(rhc_tunnel *t, uint64_t off, uint64_t end, int fin,
                          unsigned tries);
int start_bpush(rhc_tunnel *t);
void bpush_forget(rhc_tunnel *t, struct rhc_req *r);
void bpush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
void bpush_resend_due(rhc_tunnel *t, int64_t now);
void bpush_drop_held(rhc_tunnel *t, int64_t now);

/* rhc_xp_pull.c: pulls, and how the down side tries again */
int start_pull(rhc_tunnel *t);
void start_down(rhc_tunnel *t);                     /* the next down request */
int retry_ok(const rhc_tunnel *t, unsigned n);
int unanswered_retry_ok(const rhc_tunnel *t);
struct rhc_facts;
void rhc_facts_of(const rhc_tunnel *t, unsigned retries, struct rhc_facts *f);
void down_again(rhc_tunnel *t, struct rhc_req *r, const char *why);
void down_busy_again(rhc_tunnel *t, struct rhc_req *r, const char *why);
void pull_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
int64_t pull_dead_ms(const rhc_tunnel *t, const struct rhc_req *dr, int64_t now);
void pull_silence_noted(rhc_tunnel *t, int64_t now);
void pull_answered(rhc_tunnel *t, const struct rhc_req *r, int64_t now);

/* rhc_xp_stream.c */
int start_spush(rhc_tunnel *t);
void spush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
void spush_ahead(rhc_tunnel *t, int64_t now);       /* the next push, before the body's end */
void spush_rotate(rhc_tunnel *t, struct rhc_req *r); /* r's body ended: the next one goes on */
struct rhc_req *spush_new(rhc_tunnel *t, uint64_t off); /* started, not the tunnel's yet */

/* rhc_xp_watch.c: the watch of a route's idle tunnels */
int rhc_watch_init(struct rhc_route *route);       /* rhc_ctx_add_route; -1: no memory */
void rhc_watch_free(struct rhc_route *route);
int watch_may_join(const rhc_tunnel *t, const struct rhc_req *r, int64_t now);
int watch_join(rhc_tunnel *t, const struct rhc_req *r, int64_t now); /* 1: joined */
void watch_leave(rhc_tunnel *t);
int64_t watch_idle_at(const rhc_tunnel *t);         /* an idle stream or duplex tunnel joins then */
void watch_idle(rhc_tunnel *t, int64_t now);        /* ... if it is now */
void watch_woke_conn(rhc_tunnel *t, struct rhc_req *r); /* its next down request's connection */
void watch_local_sent(rhc_tunnel *t);               /* local bytes: leaves and polls */
void watch_done(rhc_ctx *c, struct rhc_req *r, CURLcode rc);
int64_t rhc_watch_next(const rhc_ctx *c);           /* when a watch is due, or -1 */
void rhc_watch_timers(rhc_ctx *c, int64_t now);

/* rhc_xp_duplex.c */
int start_duplex(rhc_tunnel *t);
void duplex_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
void duplex_split(rhc_tunnel *t, int64_t now);      /* a bulk upload moves to a stream push */
int duplex_split_may(const rhc_tunnel *t);          /* this tunnel's duplex may split */
int duplex_split_turn(rhc_tunnel *t, struct rhc_req *r); /* r's body reached split_at */
void duplex_split_early(rhc_tunnel *t);             /* auto's trial: up on a push at once */
void duplex_split_drop(rhc_tunnel *t, struct rhc_req *r); /* r is given up: its split too */

/* rhc_tunnel.c: a tunnel's life */
void reqs_free(rhc_tunnel *t);                      /* every request but the open */
void start_close_try(rhc_ctx *c, const struct rhc_route *route, const char *token,
                     const char *label,
                     const char *sid, unsigned tries, int integrity);
void start_close(rhc_ctx *c, const struct rhc_route *route, const char *token,
                 const char *label, const char *sid);
struct rhc_req *start_open(rhc_tunnel *t);
void open_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc);
void t_finish(rhc_tunnel *t);                       /* reports and frees it */
int t_advance(rhc_tunnel *t, int64_t now);          /* after events; 0: finished it */

/* rhc_stats.c: the counters of the tunnel and its route */
void stat_start(rhc_tunnel *t);
void stat_transport(rhc_tunnel *t);                 /* a session's transport chosen */
void stat_resume(rhc_tunnel *t);                    /* a request goes again after a cut */
void stat_up(rhc_tunnel *t, uint64_t n);            /* n more up bytes confirmed */
void stat_down(rhc_tunnel *t, size_t n);            /* n more down bytes written locally */
void stat_end(rhc_tunnel *t, int code);

/* rhc_csock.c: curl's sockets in the epoll set */
int csock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp);
void csock_event(rhc_ctx *c, curl_socket_t fd, short revents);
void csock_holds_due(rhc_ctx *c, int64_t now);      /* POLLOUT watched again */
void csock_flush(rhc_ctx *c);                       /* the set told what changed */
void csock_kick_later(rhc_ctx *c, const struct rhc_req *r); /* a body handed curl all */
void csock_kicks(rhc_ctx *c);                       /* ... so curl pauses it now */
void csock_free_all(rhc_ctx *c);

/* rhc_wake.c: the tunnels a round looks at */
void t_touch(rhc_tunnel *t);                        /* something happened to it */
int rhc_wake_add(rhc_tunnel *t);                    /* a new tunnel (looked at first) */
void rhc_wake_forget(rhc_tunnel *t);                /* before its local socket closes */
void rhc_wake_timers(rhc_ctx *c, int64_t now);      /* due deadlines; t_timers */
void rhc_wake_advance(rhc_ctx *c, int64_t now);     /* t_advance, new deadlines */
int64_t rhc_wake_next(const rhc_ctx *c);

/* rhc_timers.c */
int64_t t_deadline(const rhc_tunnel *t);            /* next look without an event, -1 */
void t_timers(rhc_tunnel *t, int64_t now);

#endif
