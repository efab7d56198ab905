/* relay-https client: tunnel sessions over one libcurl multi handle, driven by
 * one poll() loop (curl_multi_socket_action) that also watches the local fds.
 * See docs/PROTOCOL.md.
 *
 * A session carries its bytes with one transport per direction:
 *   duplex  one POST .../duplex: its body is the up frame stream, its response
 *           the down frame stream (HTTP/2 end to end);
 *   stream  one streamed push (a chunked body that stays open) and one long pull;
 *   batch   complete pushes with Content-Length, up to BATCH_INFLIGHT in flight
 *           (the server applies them in offset order), and long-poll pulls that
 *           come back with a Content-Length as soon as there is anything.
 * --transport auto starts with the best the connection allows (duplex on HTTP/2,
 * else stream), watches for intermediaries that hold bytes back (no first frame
 * on a response within PROBE_FIRST_MS; pushed bytes not acknowledged by A frames
 * for ACK_STALL_MS; a 413 on a streamed body) and falls back duplex -> stream ->
 * batch, per direction; the process remembers what worked for its later
 * sessions. On a path not proven yet, up bytes wait for the first frame of the
 * down response (up_hold, about one round trip): if it never comes, nothing has
 * reached the target and the session can start over on batch (restart_session)
 * even where the server keeps the given-up pull attached.
 *
 * Up bytes read from the local side go into a ring (t->up.ring, rh_ring) and stay there
 * until the server confirms them (A frames, push answers). A push can therefore
 * be ended, cut, retried or replaced by another transport without losing or
 * doubling a byte: every push says where its bytes start (Relay-Offset) and the
 * server refuses (409 with its own offset) what it already has. Down bytes are
 * only ever taken from the response they arrive on at the offset we expect
 * (version 1 servers keep no copy of what they handed out), so pulls are only
 * switched when the old one has ended or gave nothing but a heartbeat.
 *
 * Nothing blocks: local fds are non-blocking (or, for a tty/file on stdio, only
 * touched when poll says so), curl callbacks never wait, and flow control in
 * both directions uses curl's pause: a streamed body pauses when the local side
 * has nothing, a response pauses while OBUF_SOFT undelivered bytes wait for the
 * local side. Callbacks only record what happened; requests are started,
 * restarted and freed from the loop, outside of any curl callback. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_ring.h"
#include "rh_util.h"
#include "rhc_tunnel.h"

#define PULL_BUFFERSIZE   (256L * 1024)   /* curl receive buffer of a pull */
#define PUSH_BUFFERSIZE   (256L * 1024)   /* curl upload buffer of a streamed body */
#define OBUF_SOFT         (256u * 1024)   /* responses pause while this much waits locally */
#define OBUF_MAX          (4u * 1024 * 1024) /* hard cap: soft cap + one curl callback */
#define UPBUF_MAX         (16u * 1024 * 1024) /* up ring bound: bytes in flight, unconfirmed */
#define UPBUF_ROOM_MIN    16384u          /* up ring: counts as full below this room */
#define UP_AHEAD_MAX      (512u * 1024)   /* local bytes read ahead of the pushes */
#define BATCH_BODY_MAX    (2048u * 1024)  /* frames in one batch push */
#define SPUSH_BODY_MAX    (256ull << 20)  /* a stream push body ends after this; a new one goes on */
#define SPUSH_BODY_MIN    (1ull << 20)    /* ... and after a 413 never below this */
#define CHECK_FRAME       (RH_FRAME_HDR + RH_FRAME_CHECK_LEN)  /* follows every D frame */
#define UP_MARKS          32              /* CRCs at recent up frame ends (acks land there) */
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
#define BUSY_MARGIN_MS    5000            /* our busy window ends this much before the server's */
#define BUSY_POLL_DEAD_MS (RH_BUSY_POLL_MS + 2000)  /* busy: a long-poll answers by then */
#define BUSY_HB_DEAD_MS   (3 * RH_BUSY_HEARTBEAT_MS) /* busy: a stream shows a frame by then */
#define UP_DEAD_MS        3000            /* up bytes unconfirmed this long, server alive:
                                             the request carrying them is dead ... */
#define UP_DEAD_MAX_MS    60000           /* ... (doubling while nothing moves, up to this) */
#define PROBE_FIRST_MS    2000            /* auto: a stream response shows its first frame by then */
#define ACK_STALL_MS      3000            /* auto: pushed bytes acknowledged by then */
#define DOWN_QUIET_MS     1000            /* ... judged only when no down data came for this long */
#define FLUSH_PAD         (32u * 1024)    /* padded H that pushes a partly filled buffer on */
#define FLUSH_MAX         3               /* padded H frames per stall */
#define SWITCH_GRACE_MIN  100             /* after a pull switch, up bytes wait this long ... */
#define SWITCH_GRACE_MAX  1000            /* ... (2 round trips, within these bounds) */
#define SWITCH_WAIT_MS    10000           /* an ended duplex body gets this long to be confirmed */
#define H2_STREAMS_PER_CONN 6             /* see rhc_ctx_new */
#define H2_MUX_SAFE_CURL  0x080100        /* first libcurl that may carry several (8.1.0) */
#define H2_RESETS_MAX     4               /* see duplex_done */
#define OPEN_TIMEOUT_MS   30000
#define OPEN_RETRIES      4               /* an open cut before its answer goes again */
#define CLOSE_TIMEOUT_MS  5000
#define LINGER_MS         5000            /* time for an R frame to leave before teardown */
#define ACK_IDLE_MS       200             /* resume: acknowledge what came once down is quiet this long */
#define ACK_TIMEOUT_MS    15000
#define ACK_MAX_GAP       (1024u * 1024)  /* resume: acknowledge at least this often */
#define ACK_INFLIGHT      6               /* resume: ack requests in flight at once */
#define IDLE_MARGIN_MS    5000            /* resume: stop trying this long before the server forgets */
#define RETRY_MAX         12              /* tries of a refused or cut push / pull in a row */
#define BODY_MAX          200             /* bytes of an error body kept for messages */

enum req_kind { REQ_OPEN, REQ_PULL, REQ_PUSH, REQ_DUPLEX, REQ_CLOSE, REQ_ACK };
static const char *const kind_name[] = { RH_EP_OPEN, RH_EP_PULL, RH_EP_PUSH, RH_EP_DUPLEX,
                                          RH_EP_CLOSE, RH_EP_ACK };
static const char *const xp_name[] = { "auto", "duplex", "stream", "batch" };

struct rhc_req {
    enum req_kind kind;
    CURL *h;
    struct curl_slist *hdrs;
    rhc_ctx *ctx;
    rhc_tunnel *t;              /* NULL for a detached close */
    struct rhc_req *next;       /* list of detached closes */
    char label[112];            /* detached close: whose session (tunnel label) ... */
    char sid[RH_SID_LEN + 1];      /* ... and its public id */
    long status;                /* final HTTP status once its headers ended */
    int hdr_done;
    int have_offset;
    char reason[16];            /* Relay-Reason of the answer (RH_REASON_TOKEN_*) */
    uint64_t offset;            /* Relay-Offset of the answer */
    int have_token;
    int resume_ok;              /* open: the server keeps bytes until acknowledged */
    int check_ok;               /* open: the server sends and checks C frames */
    uint64_t buffer;            /* open: Relay-Buffer */
    uint64_t window;            /* open: Relay-Window (bytes kept until acknowledged) */
    uint64_t idle_s;            /* open: Relay-Idle-Timeout */
    int proxy_said;             /* the answer has a proxy's marks (X-Squid-Error, Proxy-Status) */
    char token[RH_TOKEN_LEN + 1];  /* Relay-Session of an open answer */
    size_t body_len;
    char body[BODY_MAX + 1];    /* start of an error body */
    char errbuf[CURL_ERROR_SIZE];
    int64_t started;

    /* pull, duplex: the response is a frame stream */
    int batch;                  /* pull with Relay-Mode: batch */
    rh_frame_parser parser;
    int got_frame;              /* a complete frame (the initial H, say) arrived */
    uint64_t rx_data;           /* D bytes taken from this response (checked) */
    unsigned char *pend;        /* D bytes waiting for their C frame, RH_FRAME_MAX */
    size_t pend_len;
    int saw_end, saw_fin;       /* E / F frame */
    int recv_paused;

    /* push, duplex: the request body */
    int streamed;               /* body made by the read callback as we go */
    uint64_t p_off;             /* Relay-Offset sent */
    uint64_t p_end;             /* batch: end of its data */
    int p_fin;                  /* batch: ends with F; streamed: F emitted */
    int p_r;                    /* streamed: R emitted */
    unsigned char *p_body;      /* batch: the frames */
    size_t p_len;
    int send_paused;
    int end_wanted;             /* streamed: end the body at the next chance */
    int refresh;                /* stream push ended only to learn the server's offset */
    int parking;                /* stream push ended because the tunnel is idle */
    int body_ended;             /* streamed: the read callback said end */
    uint64_t emitted;           /* streamed: body bytes handed to curl */
    int acked_any;              /* streamed: the server confirmed bytes of this body */
    unsigned tries;             /* batch push, close: attempts so far */
    int integrity;              /* close: tells the server a check failed here */
    int64_t retry_at;           /* batch push: waits (out of the multi) until then */
};

/* What this process learned about the path (auto): later sessions start with
 * it. Only ever moves towards batch and smaller bodies. */
struct rhc_policy {
    enum rhc_transport best_up, best_down;
    char why_up[320], why_down[320];
    int proven[RHC_XP_BATCH + 1];   /* a response of this transport showed a frame in time */
    size_t batch_max;           /* data bytes per batch push (smaller after a 413) */
    uint64_t spush_max;         /* body bytes per stream push (smaller after a 413) */
};

/* Up bytes read from the local side, kept until the server confirms them. */
struct rhc_upbuf {
    rh_ring ring;               /* up bytes [base, read offset) */
    uint64_t base;              /* offset of the oldest byte kept */
    uint64_t sent;              /* bytes handed to pushes (may go back: rewind) */
    uint64_t acked;             /* bytes the server confirmed */
    uint32_t crc_base;          /* CRC32C of up bytes [0, base) */
    struct { uint64_t off; uint32_t crc; } marks[UP_MARKS];  /* ... [0, off) */
    unsigned nmark;
    int eof;                    /* local read side gave EOF */
    int fin_sent;               /* F handed to a push */
    int done;                   /* a push with F was accepted */
};

/* The local side: the fds and what waits to be written to them. */
struct rhc_local {
    enum rhc_local_kind kind;
    int in_fd, out_fd;
    int in_nb, out_nb;          /* fd is non-blocking: read/write until EAGAIN */
    int out_shut;               /* local output closed after F */
    int out_err;
    int out_blocked;            /* last write hit EAGAIN: wait for POLLOUT */
    unsigned char *obuf;        /* bytes the local side could not take yet */
    size_t ocap, ohead, olen;
};

struct rhc_tunnel {
    rhc_ctx *ctx;
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
        int64_t last_contact;   /* a request of the session last got an answer then */
        int64_t last_busy;      /* down bytes came or up bytes were confirmed then */
        unsigned h2_resets;     /* duplex streams reset unanswered, in a row */
        unsigned open_retries;
        int64_t rtt_ms;         /* open: from request sent to answer */
    } sess;

    struct {                    /* the requests in flight */
        struct rhc_req *open;
        struct rhc_req *duplex; /* carries down (xp.down duplex), and up until ended */
        struct rhc_req *pull;   /* stream or batch pull */
        struct rhc_req *spush;  /* stream push */
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
    } xp;

    /* up: local -> ring -> pushes */
    struct rhc_upbuf up;
    struct {                    /* how the pushes go */
        int r_pending, r_sent;  /* local side failed: R frame on the streamed body */
        int hb_pending;
        size_t hb_pad;          /* the pending H carries this much padding */
        unsigned pads;          /* padded H frames sent since the last confirmation */
        int64_t last_emit;      /* a streamed body last gave curl bytes then */
        int64_t last_data;      /* when up data last went into a streamed body */
        int parked;             /* no stream push until there is something to send */
        int64_t park_keep_at;   /* parked: an ack then tells the server we are here */
        int64_t ack_wait_since; /* up.sent > up.acked since then, no ack came */
        int64_t dead_ms;        /* unconfirmed this long: the push is dead (see up_dead_at) */
        unsigned retries;       /* streamed body refused or cut, in a row */
        int64_t spush_at;       /* start the stream push (again) then */
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
    } down;

    struct {                    /* resume: acknowledging down bytes */
        uint64_t every;         /* acknowledge down bytes this often */
        uint64_t sent;          /* down offset told to the server (maybe in flight) */
        uint64_t conf;          /* ... and confirmed by it */
        struct rhc_req *req[ACK_INFLIGHT]; /* streamed down: acks in flight */
        int n;                  /* how many */
        unsigned fails;         /* ack requests failed in a row */
        int64_t retry_at;
    } ack;

    struct {                    /* the end */
        int code;               /* first failure wins; 0 = none */
        int server_gone;        /* the server already dropped the session */
        int64_t linger_until;   /* failing, but let an R frame go out first */
        char msg[768];
    } end;
};

struct cfd {
    curl_socket_t fd;
    short events;
};

struct rhc_ctx {
    const struct rhc_opts *o;
    CURLM *multi;
    CURLSH *share;              /* TLS sessions and DNS shared by all requests */
    int64_t curl_deadline;      /* -1: curl has no timer */
    struct cfd *cfds;           /* sockets curl wants watched */
    size_t ncfds, capcfds;
    rhc_tunnel *tunnels;
    size_t ntunnels;
    struct rhc_req *closers;
    size_t nclosers;
    struct pollfd *pfds;        /* scratch for poll() */
    rhc_tunnel **powner;        /* tunnel of each local pollfd */
    size_t cappfds;
    struct rhc_policy pol;      /* auto: what later sessions start with */
};

static uint64_t up_read_off(const rhc_tunnel *t)
{
    return t->up.base + rh_ring_len(&t->up.ring);
}

/* ---------------------------------------------------------------- messages */

/* Keeps the first line of a server body, printable ASCII only (an HTML error
 * page, of a proxy say, says nothing in its first line: dropped). */
static void body_line(const struct rhc_req *r, char *out, size_t outsz)
{
    size_t n = 0;

    if (r->body_len && r->body[0] == '<') {
        out[0] = '\0';
        return;
    }

    for (size_t i = 0; i < r->body_len && n + 1 < outsz; ++i) {
        unsigned char ch = (unsigned char)r->body[i];
        if (ch == '\r' || ch == '\n')
            break;
        out[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    out[n] = '\0';
}

static void t_log(rhc_tunnel *t, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void t_log(rhc_tunnel *t, int level, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    if (level > rhc_verbose)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (t->label[0])
        rhc_log(level, "%s: %s", t->label, msg);
    else
        rhc_log(level, "%s", msg);
}

/* Records why the tunnel fails; the first reason wins, later ones are effects. */
static void t_fail(rhc_tunnel *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void t_fail(rhc_tunnel *t, int code, const char *fmt, ...)
{
    va_list ap;

    if (t->end.code)
        return;
    t->end.code = code;
    va_start(ap, fmt);
    vsnprintf(t->end.msg, sizeof(t->end.msg), fmt, ap);
    va_end(ap);
}

/* The proxy's answer to CONNECT, when there was one and it said no. */
static long connect_refusal(const struct rhc_req *r)
{
    long cc = 0;

    if (curl_easy_getinfo(r->h, CURLINFO_HTTP_CONNECTCODE, &cc) != CURLE_OK)
        return 0;
    return (cc && (cc < 200 || cc > 299)) ? cc : 0;
}

/* The proxy libcurl uses for our URL, as far as we can tell (-x, or the
 * environment when no_proxy does not muddle it), else NULL. */
static const char *proxy_in_use(const struct rhc_opts *o)
{
    static const char *const https_vars[] = { "https_proxy", "HTTPS_PROXY", "all_proxy",
                                              "ALL_PROXY", NULL };
    static const char *const http_vars[] = { "http_proxy", "all_proxy", "ALL_PROXY", NULL };
    const char *const *vars = strncasecmp(o->base_url, "https:", 6) ? http_vars : https_vars;

    if (o->proxy)
        return *o->proxy ? o->proxy : NULL;
    if (getenv("no_proxy") || getenv("NO_PROXY"))
        return NULL;
    for (; *vars; ++vars) {
        const char *v = getenv(*vars);
        if (v && *v)
            return v;
    }
    return NULL;
}

/* Exit code for an HTTP answer other than the expected one. */
static int http_exit_code(const struct rhc_req *r, int from_module)
{
    long s = r->status;

    if (s == 407 || connect_refusal(r) || (r->proxy_said && !from_module))
        return RHC_EXIT_PROXY;
    if (s == 401 || s == 403)
        return RHC_EXIT_AUTH;
    if (s == RH_STATUS_INTEGRITY && from_module)
        return RHC_EXIT_INTEGRITY;
    if (r->kind != REQ_OPEN)
        return RHC_EXIT_LOST;
    if (s == 404)
        return RHC_EXIT_NO_TARGET;
    /* The module always explains itself; a bare 502/503/504 comes from a gateway
     * or proxy in front that could not reach the server. */
    if (s == 502 || s == 504)
        return from_module ? RHC_EXIT_TARGET : RHC_EXIT_UNREACHABLE;
    if (s == 503 && !from_module)
        return RHC_EXIT_UNREACHABLE;
    return RHC_EXIT_ERROR;
}

/* What the user can do about the usual refusals. */
static const char *hint(const rhc_tunnel *t, int code, long status, int proxy_tls)
{
    const struct rhc_opts *o = t->ctx->o;

    if (code == RHC_EXIT_AUTH && status == 401)
        return !o->user ? " (the server wants credentials: -u USER:PASS)"
               : o->auth && o->auth != CURLAUTH_BASIC ? " (check the credentials given with -u)"
               : " (check the credentials given with -u; --auth digest or any if the server "
                 "does not take Basic)";
    if (code == RHC_EXIT_PROXY && status == 407)
        return o->proxy_user ? " (the proxy did not take the credentials given with -U; "
                               "try --proxy-auth ntlm, negotiate or digest)"
                             : " (the proxy wants credentials: -U USER:PASS, or -U : "
                               "--proxy-auth negotiate for Kerberos)";
    if (code == RHC_EXIT_TLS && proxy_tls)
        return o->proxy_cacert || o->proxy_insecure ? ""
               : " (give the proxy's CA with --proxy-cacert FILE)";
    if (code == RHC_EXIT_TLS && status == 0 && !o->cacert && !o->insecure)
        return " (give its CA with --cacert FILE; behind a TLS-inspecting proxy, the proxy's CA)";
    return "";
}

static void fail_http(rhc_tunnel *t, const struct rhc_req *r, const char *what)
{
    char line[BODY_MAX + 1];
    long cc = connect_refusal(r);

    body_line(r, line, sizeof(line));
    int from_module = !strncmp(line, RH_ERROR_PREFIX, strlen(RH_ERROR_PREFIX));
    int code = http_exit_code(r, from_module);
    long st = cc ? cc : r->status;
    const char *kind = "";

    if (cc == 407 || r->status == 407)
        kind = "proxy authentication required: ";
    else if (cc)
        kind = "the proxy refused to connect to the server: ";
    else if (code == RHC_EXIT_PROXY)
        kind = "the proxy refused the request: ";
    else if (code == RHC_EXIT_AUTH)
        kind = "access refused by the server: ";
    else if (code == RHC_EXIT_NO_TARGET)
        kind = from_module ? "unknown target: " : "no relay at this URL: ";
    else if (code == RHC_EXIT_TARGET)
        kind = "the server cannot reach the target: ";
    t_fail(t, code, "%s: %sHTTP %ld%s%s%s", what, kind, st,
           line[0] ? ": " : "", line, hint(t, code, st, 0));
    if (r->status == 410 || r->status == 416)
        t->end.server_gone = 1;     /* the server has already forgotten the session */
}

static int curl_exit_code(const struct rhc_req *r, CURLcode rc)
{
    int in_session = r->kind != REQ_OPEN;
    long cc = connect_refusal(r);

    if (cc == 502 || cc == 503 || cc == 504)
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_UNREACHABLE;  /* the proxy could not */
    if (cc)
        return RHC_EXIT_PROXY;
    /* TLS 1.3: a refused client certificate shows as an alert on the first read */
    if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && strstr(r->errbuf, "alert") &&
        (strstr(r->errbuf, "SSL") || strstr(r->errbuf, "TLS")))
        return RHC_EXIT_TLS;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_UNREACHABLE;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return RHC_EXIT_TLS;
    case CURLE_PROXY:
        return RHC_EXIT_PROXY;
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
        return RHC_EXIT_AUTH;
    default:
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_ERROR;
    }
}

static void fail_curl(rhc_tunnel *t, const struct rhc_req *r, CURLcode rc, const char *what)
{
    int code = curl_exit_code(r, rc);
    long cc = connect_refusal(r);
    long pv = 0;
    const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    const char *kind = "";
    int proxy_tls = 0;

    if (code == RHC_EXIT_TLS) {
        /* whose certificate: an HTTPS proxy's or the server's */
        if (curl_easy_getinfo(r->h, CURLINFO_PROXY_SSL_VERIFYRESULT, &pv) == CURLE_OK && pv)
            proxy_tls = 1;
        kind = proxy_tls ? "TLS with the proxy failed: "
               : rc == CURLE_PEER_FAILED_VERIFICATION ? "the server's certificate was not verified: "
               : "TLS failed: ";
        if (!proxy_tls && strstr(msg, "certificate required") && !t->ctx->o->cert) {
            t_fail(t, code, "%s: %s%s (the server wants a client certificate: --cert FILE)",
                   what, kind, msg);
            return;
        }
    } else if (cc == 407) {
        kind = "proxy authentication required: ";
    } else if (cc == 502 || cc == 503 || cc == 504) {
        kind = "the proxy cannot reach the server: ";
    } else if (cc) {
        kind = "the proxy refused to connect to the server: ";
    } else if (code == RHC_EXIT_UNREACHABLE) {
        if (rc == CURLE_COULDNT_RESOLVE_PROXY)
            kind = "cannot resolve the proxy: ";
        else if (rc == CURLE_COULDNT_CONNECT && proxy_in_use(t->ctx->o))
            kind = "cannot reach the proxy: ";
        else
            kind = "server unreachable: ";
    }
    t_fail(t, code, "%s: %s%s%s", what, kind, msg,
           hint(t, code, code == RHC_EXIT_TLS ? (rc == CURLE_PEER_FAILED_VERIFICATION ? 0 : -1)
                                              : cc, proxy_tls));
}

/* ---------------------------------------------------------------- curl callbacks */

static int header_is(const char *line, size_t len, const char *name, const char **val,
                     size_t *vlen)
{
    size_t nl = strlen(name);

    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return 0;
    const char *v = line + nl + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        ++v;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        --end;
    *val = v;
    *vlen = (size_t)(end - v);
    return 1;
}

static int down_headers_done(struct rhc_req *r);

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nitems;
    const char *v;
    size_t vl;
    int down = r->t && (r->kind == REQ_PULL || r->kind == REQ_DUPLEX);

    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* A new response (after a 1xx or an auth round): forget the last one. */
        r->status = 0;
        r->hdr_done = 0;
        r->have_offset = 0;
        r->have_token = 0;
        r->resume_ok = 0;
        r->check_ok = 0;
        r->proxy_said = 0;
        r->body_len = 0;
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 100 && code < 200)
            return len;
        r->status = code;
        r->hdr_done = 1;
        if (r->t && code >= 200 && code < 300) {
            r->t->sess.last_contact = rh_now_ms();   /* the server heard from the session */
            r->t->sess.h2_resets = 0;
        }
        if (down && !down_headers_done(r))
            return 0;
        return len;
    }
    if (down)
        r->t->down.last_rx = rh_now_ms();
    if (header_is(buf, len, RH_HDR_OFFSET, &v, &vl)) {
        r->have_offset = rh_parse_u64(v, vl, &r->offset) == 0;
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_RESUME, &v, &vl)) {
        r->resume_ok = vl == strlen(RH_RESUME_YES) && !strncmp(v, RH_RESUME_YES, vl);
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_INTEGRITY, &v, &vl)) {
        r->check_ok = vl == strlen(RH_INTEGRITY_CRC32C) &&
                      !strncmp(v, RH_INTEGRITY_CRC32C, vl);
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_BUFFER, &v, &vl)) {
        rh_parse_u64(v, vl, &r->buffer);
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_WINDOW, &v, &vl)) {
        rh_parse_u64(v, vl, &r->window);
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_IDLE, &v, &vl)) {
        rh_parse_u64(v, vl, &r->idle_s);
    } else if (header_is(buf, len, RH_HDR_REASON, &v, &vl)) {
        size_t n = vl < sizeof(r->reason) - 1 ? vl : sizeof(r->reason) - 1;
        memcpy(r->reason, v, n);
        r->reason[n] = '\0';
    } else if (header_is(buf, len, "X-Squid-Error", &v, &vl) ||
               header_is(buf, len, "Proxy-Status", &v, &vl)) {
        r->proxy_said = 1;
    } else if (r->kind == REQ_OPEN && header_is(buf, len, RH_HDR_SESSION, &v, &vl)) {
        int ok = vl == RH_TOKEN_LEN;
        for (size_t i = 0; ok && i < vl; ++i)
            ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f') ||
                 (v[i] >= 'A' && v[i] <= 'F');
        if (ok) {
            memcpy(r->token, v, RH_TOKEN_LEN);
            r->token[RH_TOKEN_LEN] = '\0';
            r->have_token = 1;
        }
    }
    return len;
}

/* Keeps the start of a body (error text); the rest is dropped. */
static size_t body_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nmemb;
    size_t room = BODY_MAX - r->body_len;
    size_t n = len < room ? len : room;

    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return len;
}

/* Masks secrets in -vv traces: the token after its public 16 characters, and
 * credentials. */
static int debug_cb(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
    struct rhc_req *r = ud;
    char mark;

    (void)h;
    switch (type) {
    case CURLINFO_TEXT:       mark = '*'; break;
    case CURLINFO_HEADER_IN:  mark = '<'; break;
    case CURLINFO_HEADER_OUT: mark = '>'; break;
    default: return 0;
    }
    const char *who = r->t ? r->t->label : r->label;
    const char *p = data, *end = data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            --n;
        const char *v;
        size_t vl;
        int len = (int)(n > 700 ? 700 : n);
        if (mark != '*' && header_is(p, n, RH_HDR_SESSION, &v, &vl))
            rhc_log(2, "%s%s%c " RH_HDR_SESSION ": %.*s<secret>", who, *who ? ": " : "", mark,
                    (int)(vl < RH_SID_LEN ? vl : RH_SID_LEN), v);
        else if (mark != '*' && (header_is(p, n, "Authorization", &v, &vl) ||
                                 header_is(p, n, "Proxy-Authorization", &v, &vl)))
            rhc_log(2, "%s%s%c %.*s: <masked>", who, *who ? ": " : "", mark,
                    (int)(strchr(p, ':') - p), p);
        else if (n)
            rhc_log(2, "%s%s%c %.*s", who, *who ? ": " : "", mark, len, p);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void req_free(struct rhc_req *r)
{
    if (!r)
        return;
    if (r->h) {
        curl_multi_remove_handle(r->ctx->multi, r->h);
        curl_easy_cleanup(r->h);
    }
    curl_slist_free_all(r->hdrs);
    free(r->p_body);
    free(r->pend);
    free(r);
}

static int add_header(struct rhc_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_header(struct rhc_req *r, const char *fmt, ...)
{
    char line[256];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -1;
    struct curl_slist *l = curl_slist_append(r->hdrs, line);
    if (!l)
        return -1;
    r->hdrs = l;
    return 0;
}

/* The HTTP version to ask for: HTTP/2 through ALPN where duplex may be wanted. */
static long http_version(const struct rhc_opts *o)
{
    /* A challenge (Digest) must come before a streamed body goes out: HTTP/1.1
     * with Expect: 100-continue does that; over HTTP/2 libcurl sends the body,
     * gets the 401 and cannot take the body back. */
    if (o->user && o->auth && o->auth != CURLAUTH_BASIC)
        return CURL_HTTP_VERSION_1_1;
    if (o->http_version)
        return o->http_version;
    if (o->transport == RHC_XP_AUTO || o->transport == RHC_XP_DUPLEX)
        return CURL_HTTP_VERSION_2TLS;
    return CURL_HTTP_VERSION_1_1;
}

static size_t resp_write(char *ptr, size_t size, size_t nmemb, void *ud);
static const char *req_error(const struct rhc_req *r, CURLcode rc);
static size_t body_read(char *buf, size_t size, size_t nitems, void *ud);
static int body_seek(void *ud, curl_off_t offset, int origin);

/* Builds a request with everything the options ask for; the caller adds its own
 * headers and options, then req_go. */
static struct rhc_req *req_new(rhc_ctx *c, rhc_tunnel *t, enum req_kind kind,
                               const char *token)
{
    const struct rhc_opts *o = c->o;
    struct rhc_req *r = calloc(1, sizeof(*r));
    char *url = NULL;
    int ok = 0;

    if (!r)
        return NULL;
    r->kind = kind;
    r->ctx = c;
    r->t = t;
    r->started = rh_now_ms();
    if (!(r->h = curl_easy_init()))
        goto leave;

    size_t ulen = strlen(o->base_url) + strlen(o->target) + 16;
    if (!(url = malloc(ulen)))
        goto leave;
    snprintf(url, ulen, "%s/%s/%s", o->base_url, o->target, kind_name[kind]);

    for (struct curl_slist *h = o->headers; h; h = h->next) {
        struct curl_slist *l = curl_slist_append(r->hdrs, h->data);
        if (!l)
            goto leave;
        r->hdrs = l;
    }
    if (add_header(r, RH_HDR_VERSION ": " RH_PROTO_VERSION) < 0)
        goto leave;
    if (token && add_header(r, RH_HDR_SESSION ": %s", token) < 0)
        goto leave;

    CURL *h = r->h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, RHC_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, http_version(o));
    /* Several requests of a session wait for one HTTP/2 connection rather than
     * each opening its own. */
    curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* Pushes and pulls idle for long; keepalive finds a dead path. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (o->cacert)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->cacert);
    if (o->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (o->cert)
        curl_easy_setopt(h, CURLOPT_SSLCERT, o->cert);
    if (o->key)
        curl_easy_setopt(h, CURLOPT_SSLKEY, o->key);
    if (o->user) {
        /* Basic (the default) is sent at once: a streamed body cannot be rewound
         * for a challenge round. Digest/any: see the Expect header below. */
        curl_easy_setopt(h, CURLOPT_USERPWD, o->user);
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)(o->auth ? o->auth : CURLAUTH_BASIC));
    }
    if (o->proxy)   /* else libcurl reads https_proxy, all_proxy, no_proxy itself */
        curl_easy_setopt(h, CURLOPT_PROXY, o->proxy);
    if (o->proxy_user || o->proxy_auth) {
        unsigned long pa = o->proxy_auth ? o->proxy_auth : CURLAUTH_ANY;
        if (o->proxy_user)
            curl_easy_setopt(h, CURLOPT_PROXYUSERPWD, o->proxy_user);
        else if (pa & CURLAUTH_NEGOTIATE)
            curl_easy_setopt(h, CURLOPT_PROXYUSERPWD, ":");   /* GSS-API credentials */
        curl_easy_setopt(h, CURLOPT_PROXYAUTH, (long)pa);
    }
    if (o->proxy_cacert)
        curl_easy_setopt(h, CURLOPT_PROXY_CAINFO, o->proxy_cacert);
    if (o->proxy_insecure) {
        curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYHOST, 0L);
    }
    if (o->verbose >= 2) {
        curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
        curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, debug_cb);
        curl_easy_setopt(h, CURLOPT_DEBUGDATA, r);
    }
    ok = 1;
leave:
    free(url);
    if (!ok) {
        req_free(r);
        return NULL;
    }
    return r;
}

/* An empty POST body (open, close, pull). */
static void req_empty_body(struct rhc_req *r)
{
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, "");
}

/* A body made as we go: chunked over HTTP/1.1, plain DATA frames over HTTP/2 (a
 * hand-made Transfer-Encoding header would be wrong there). */
static int req_streamed_body(struct rhc_req *r)
{
    const struct rhc_opts *o = r->ctx->o;

    r->streamed = 1;
    curl_easy_setopt(r->h, CURLOPT_READFUNCTION, body_read);
    curl_easy_setopt(r->h, CURLOPT_READDATA, r);
    curl_easy_setopt(r->h, CURLOPT_SEEKFUNCTION, body_seek);
    curl_easy_setopt(r->h, CURLOPT_SEEKDATA, r);
    curl_easy_setopt(r->h, CURLOPT_UPLOAD_BUFFERSIZE, PUSH_BUFFERSIZE);
    /* No 100-continue round trip, unless an authentication challenge may come
     * (Digest): then the server's 401 comes before any body byte is made. */
    if (!(o->user && o->auth && o->auth != CURLAUTH_BASIC) && add_header(r, "Expect:") < 0)
        return -1;
    return add_header(r, "Content-Type: application/octet-stream");
}

static int req_go(struct rhc_req *r)
{
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->hdrs);
    if (curl_multi_add_handle(r->ctx->multi, r->h) != CURLM_OK)
        return -1;
    return 0;
}

/* Pausing one direction of a request keeps the other as it is. */
static void req_pause_apply(struct rhc_req *r)
{
    curl_easy_pause(r->h, (r->send_paused ? CURLPAUSE_SEND : 0) |
                          (r->recv_paused ? CURLPAUSE_RECV : 0));
}

static void unpause_send(struct rhc_req *r)
{
    if (r && r->send_paused) {
        r->send_paused = 0;
        req_pause_apply(r);
    }
}

static void unpause_recv(struct rhc_req *r)
{
    if (r && r->recv_paused) {
        r->recv_paused = 0;
        /* May call resp_write at once with the data curl held back. */
        req_pause_apply(r);
    }
}

/* The request that carries down bytes now, and the one whose body streams up. */
static struct rhc_req *down_req(const rhc_tunnel *t)
{
    return t->xp.down == RHC_XP_DUPLEX ? t->rq.duplex : t->rq.pull;
}

static struct rhc_req *up_streamer(const rhc_tunnel *t)
{
    if (t->xp.up == RHC_XP_DUPLEX)
        return t->rq.duplex;
    if (t->xp.up == RHC_XP_STREAM)
        return t->rq.spush;
    return NULL;
}
/* ---------------------------------------------------------------- local side */

static int fd_ready(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev, .revents = 0 };

    return poll(&p, 1, 0) > 0;
}

/* The local side failed: tell the server with an R frame on the push when it is
 * still open (the teardown waits a little for it), else the teardown POSTs close. */
static void local_abort(rhc_tunnel *t, const char *what, int err)
{
    struct rhc_req *sc = up_streamer(t);

    t_fail(t, RHC_EXIT_LOCAL, "%s: %s", what, strerror(err));
    if (sc && !sc->body_ended && !sc->end_wanted && !sc->p_fin && !t->push.r_sent &&
        !t->push.r_pending) {
        t->push.r_pending = 1;
        t->end.linger_until = rh_now_ms() + LINGER_MS;
        /* t_advance unpauses the body: this may run inside another handle's
         * callback, where pausing a different handle is better avoided. (A batch
         * session is told by the close request of the teardown.) */
    }
}

static int obuf_append(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->local.ohead && t->local.olen == 0)
        t->local.ohead = 0;
    if (t->local.ohead + t->local.olen + n > t->local.ocap) {
        if (t->local.ohead) {
            memmove(t->local.obuf, t->local.obuf + t->local.ohead, t->local.olen);
            t->local.ohead = 0;
        }
        if (t->local.olen + n > t->local.ocap) {
            size_t cap = (t->local.olen + n + 16383) & ~(size_t)16383;
            if (cap > OBUF_MAX)
                return -1;
            if (cap < 2 * t->local.ocap)      /* grow geometrically, within the cap */
                cap = 2 * t->local.ocap < OBUF_MAX ? 2 * t->local.ocap : OBUF_MAX;
            unsigned char *nb = realloc(t->local.obuf, cap);
            if (!nb)
                return -1;
            t->local.obuf = nb;
            t->local.ocap = cap;
        }
    }
    memcpy(t->local.obuf + t->local.ohead + t->local.olen, p, n);
    t->local.olen += n;
    return 0;
}

/* Hands down bytes to the local side. A non-blocking fd gets them through obuf,
 * written once per loop round (after curl handed over all it had, typically a
 * whole receive buffer in 16 KiB callbacks): fewer, larger writes. The response
 * pauses while OBUF_SOFT bytes wait, so obuf stays bounded. A blocking fd (tty,
 * file on stdio) is written at once. */
static void deliver(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->local.out_err || t->local.out_shut)
        return;
    if (t->local.out_nb) {
        if (obuf_append(t, p, n) < 0) {
            t->local.out_err = ENOBUFS;
            t_fail(t, RHC_EXIT_ERROR, "internal: local output buffer full");
        }
        return;
    }
    while (n > 0) {
        ssize_t w = write(t->local.out_fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        t->local.out_err = w < 0 ? errno : EIO;
        local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->local.out_err);
        return;
    }
}

/* Local fd writable: flush obuf, then let the response continue. */
static void drain_out(rhc_tunnel *t)
{
    while (t->local.olen > 0 && !t->local.out_err) {
        ssize_t w = write(t->local.out_fd, t->local.obuf + t->local.ohead, t->local.olen);
        if (w > 0) {
            t->local.ohead += (size_t)w;
            t->local.olen -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->local.out_blocked = 1;
            break;
        }
        t->local.out_err = w < 0 ? errno : EIO;
        local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->local.out_err);
        return;
    }
    if (t->local.olen == 0)
        t->local.ohead = 0;
    /* Resume below half the cap, so that pause/unpause does not ping-pong. */
    struct rhc_req *d = down_req(t);
    if (t->local.olen < OBUF_SOFT / 2 && d && d->recv_paused && !t->end.code) {
        t->down.last_rx = rh_now_ms();
        if (t->push.ack_wait_since)      /* acks could not come while it was paused */
            t->push.ack_wait_since = t->down.last_rx;
        unpause_recv(d);
    }
}

/* stdio flags saved by rhc_stdio_prepare, restored on exit. */
static int stdio_saved[2] = { -1, -1 };
static int stdio_shared;   /* fd 0 and 1 are the same file: restore via fd 0 only */

static void shut_output(rhc_tunnel *t)
{
    struct stat st;

    t->local.out_shut = 1;
    if (t->local.kind == RHC_LOCAL_SOCKET) {
        shutdown(t->local.out_fd, SHUT_WR);
        return;
    }
    /* stdout: half-close a socket, and in any case let go of fd 1 (whoever reads
     * it sees EOF) while keeping the number taken, so that no later socket ends
     * up as fd 1. */
    if (fstat(t->local.out_fd, &st) == 0 && S_ISSOCK(st.st_mode))
        shutdown(t->local.out_fd, SHUT_WR);
    if (stdio_saved[1] >= 0 && !stdio_shared)
        fcntl(t->local.out_fd, F_SETFL, stdio_saved[1]);
    stdio_saved[1] = -1;
    int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, t->local.out_fd);
        close(nul);
    }
}

int rhc_stdio_prepare(void)
{
    struct stat st[2];

    for (int fd = 0; fd < 2; ++fd) {
        if (fstat(fd, &st[fd]) != 0)
            return errno;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
            return errno;
        /* ttys and files stay blocking: making them non-blocking would leak to
         * whoever shares them (the shell) if we were killed. */
        if ((S_ISSOCK(st[fd].st_mode) || S_ISFIFO(st[fd].st_mode)) && !(fl & O_NONBLOCK)) {
            stdio_saved[fd] = fl;
            if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return errno;
        }
    }
    stdio_shared = st[0].st_dev == st[1].st_dev && st[0].st_ino == st[1].st_ino;
    return 0;
}

void rhc_stdio_restore(void)
{
    for (int fd = 0; fd < 2; ++fd)
        if (stdio_saved[fd] >= 0) {
            fcntl(fd, F_SETFL, stdio_saved[fd]);
            stdio_saved[fd] = -1;
        }
}


/* ---------------------------------------------------------------- up ring */

static uint32_t up_crc_at(rhc_tunnel *t, uint64_t off);

/* Forgets the bytes below upto. */
static void up_release(rhc_tunnel *t, uint64_t upto)
{
    size_t len = rh_ring_len(&t->up.ring);
    if (upto <= t->up.base || !len)
        return;
    uint64_t n = upto - t->up.base;
    if (n > len)
        n = len;
    t->up.crc_base = up_crc_at(t, t->up.base + n);
    rh_ring_consume(&t->up.ring, (size_t)n);
    t->up.base += n;
}

/* Copies n kept bytes from up offset off (up_base <= off, off + n <= read). */
static void up_copy(const rhc_tunnel *t, uint64_t off, unsigned char *dst, size_t n)
{
    rh_ring_copy_out(&t->up.ring, (size_t)(off - t->up.base), dst, n);
}

/* CRC32C of kept up bytes [off, off + n), continuing crc. */
static uint32_t up_hash(const rhc_tunnel *t, uint32_t crc, uint64_t off, size_t n)
{
    struct iovec iov[2];
    int k = n ? rh_ring_peek_iov(&t->up.ring, iov, (size_t)(off - t->up.base), n) : 0;

    for (int i = 0; i < k; ++i)
        crc = rh_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
    return crc;
}

static void up_mark(rhc_tunnel *t, uint64_t off, uint32_t crc)
{
    t->up.marks[t->up.nmark].off = off;
    t->up.marks[t->up.nmark].crc = crc;
    t->up.nmark = (t->up.nmark + 1) % UP_MARKS;
}

/* CRC32C of up bytes [0, off), up_base <= off <= up_read_off: from the nearest
 * remembered point below (frames are sent in order, acks land on frame ends). */
static uint32_t up_crc_at(rhc_tunnel *t, uint64_t off)
{
    uint64_t from = t->up.base;
    uint32_t crc = t->up.crc_base;

    for (unsigned i = 0; i < UP_MARKS; ++i)
        if (t->up.marks[i].off <= off && t->up.marks[i].off > from) {
            from = t->up.marks[i].off;
            crc = t->up.marks[i].crc;
        }
    if (off > from) {
        crc = up_hash(t, crc, from, (size_t)(off - from));
        up_mark(t, off, crc);
    }
    return crc;
}

/* The server confirmed the up bytes below x. */
static void up_ack(rhc_tunnel *t, uint64_t x)
{
    struct rhc_req *sc = up_streamer(t);

    if (x <= t->up.acked)
        return;
    t->up.acked = x;
    t->push.retries = 0;
    t->push.dead_ms = UP_DEAD_MS;
    t->sess.last_busy = rh_now_ms();
    if (t->push.pads && t->xp.autox && t->xp.up != RHC_XP_BATCH && !t->xp.up_fallback_at) {
        /* the padding got them through: small writes would wait each time */
        t->xp.up_fallback_at = rh_now_ms();
        t->xp.up_fallback_why = "up bytes got through only behind a padded heartbeat: an "
                             "intermediary holds small request body chunks";
    }
    t->push.pads = 0;
    if (sc && x > sc->p_off)
        sc->acked_any = 1;      /* this body streams: bytes of it got through */
    /* After a rewind the server may have had more than we thought. A body still
     * streaming must stay contiguous: the server counts its data bytes from the
     * body's Relay-Offset and drops the ones it has, so jumping ahead inside it
     * would make it drop new bytes (a skip) and then count the rest at the wrong
     * offsets. It goes on from where it is; the next push starts at x. */
    int streaming = sc && !sc->body_ended && !sc->p_fin && !sc->p_r;
    if (t->up.sent < x && !streaming)
        t->up.sent = x;
    t->push.ack_wait_since = t->up.sent > x ? rh_now_ms() : 0;
    up_release(t, x < t->up.sent ? x : t->up.sent);
}

/* Sends the up bytes from x again (the server has everything below x, and
 * nothing that was sent from x on can count). */
static int up_rewind(rhc_tunnel *t, uint64_t x, const char *why)
{
    if (x < t->up.base || x > up_read_off(t)) {
        t_fail(t, RHC_EXIT_LOST, "%s: the server has %" PRIu64 " up bytes, but bytes from "
               "%" PRIu64 " were %s", why, x, t->up.base,
               x < t->up.base ? "no longer kept (nothing was confirmed for too long)"
                              : "never sent");
        return -1;
    }
    if (x != t->up.sent)
        t_log(t, 2, "%s: up bytes from %" PRIu64 " go again (%" PRIu64 " were sent)",
              why, x, t->up.sent);
    t->up.sent = x;
    if (!t->up.done)
        t->up.fin_sent = 0;
    t->push.ack_wait_since = 0;
    return 0;
}

/* Reads what the local side has into the ring, at most UP_AHEAD_MAX bytes ahead
 * of what the pushes took. */
static void up_fill(rhc_tunnel *t)
{
    while (!t->up.eof && !t->end.code && up_read_off(t) - t->up.sent < UP_AHEAD_MAX) {
        /* A full ring waits for confirmations (backpressure): unconfirmed
         * bytes are never dropped, a cut may need them again. */
        if (!rh_ring_space(&t->up.ring))
            break;
        if (!t->local.in_nb && !fd_ready(t->local.in_fd, POLLIN))
            break;
        struct iovec iov[2];
        int niov = rh_ring_write_iov(&t->up.ring, iov);   /* grows the ring as used */
        if (niov == 0) {
            local_abort(t, "keep local bytes (out of memory)", ENOMEM);
            break;
        }
        size_t room = iov[0].iov_len + (niov > 1 ? iov[1].iov_len : 0);
        ssize_t n = readv(t->local.in_fd, iov, niov);
        if (n <= 0)
            rh_ring_consume(&t->up.ring, 0);   /* frees a buffer that took nothing */
        if (n > 0) {
            rh_ring_commit(&t->up.ring, (size_t)n);
            if (!t->local.in_nb || (size_t)n < room)
                break;      /* short read: nothing more for now */
            continue;
        }
        if (n == 0) {
            t->up.eof = 1;
            t_log(t, 2, "local EOF after %" PRIu64 " bytes", up_read_off(t));
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "read from stdin"
                                                      : "read from local connection", errno);
        break;
    }
}

/* ---------------------------------------------------------------- streamed bodies */


static size_t emit(char *buf, int type, const void *payload, size_t n)
{
    rh_frame_hdr((unsigned char *)buf, type, n);
    if (n)
        memcpy(buf + RH_FRAME_HDR, payload, n);
    return RH_FRAME_HDR + n;
}

/* Resume: down bytes received but not yet acknowledged to the server. */
static uint64_t ack_gap(const rhc_tunnel *t)
{
    return t->sess.resume ? t->down.off - t->ack.sent : 0;
}


/* curl wants body bytes of a stream push or a duplex: frames straight from the
 * ring into curl's buffer, as many as it has room for. */
static size_t body_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t room = size * nitems;
    size_t used = 0;
    uint64_t sent_before = t->up.sent;

    if (r->body_ended)
        return 0;
    /* Bodies have limits: httpd's LimitRequestBody is 1 GiB by default, and
     * proxies often set less. A stream push ends well before, and the answer's
     * offset starts the next one (spush_done). */
    if (r->kind == REQ_PUSH && !r->end_wanted && !r->p_fin && !r->p_r && !t->push.r_pending &&
        r->emitted >= t->ctx->pol.spush_max) {
        r->end_wanted = 1;
        r->refresh = 1;
        t_log(t, 2, "stream push: %" PRIu64 " bytes sent, ending it for a new one", r->emitted);
    }
    /* The body ends after R, when given up, or after F. (Acknowledgements of
     * down bytes never ride in a streamed body: behind up bytes that wait for
     * the target, which waits for down bytes to leave, they would stall an
     * echo. They go on pulls and ack requests of their own.) */
    if (r->end_wanted || r->p_r || r->p_fin) {
        r->body_ended = 1;
        return 0;
    }
    if (t->end.code && !t->push.r_pending) {
        r->send_paused = 1;         /* tearing down: stay quiet */
        return CURL_READFUNC_PAUSE;
    }
    if (!t->push.r_pending)
        up_fill(t);
    if (t->push.hb_pending && room - used >= RH_FRAME_HDR) {
        size_t pad = t->push.hb_pad < room - used - RH_FRAME_HDR ? t->push.hb_pad
                                                            : room - used - RH_FRAME_HDR;
        rh_frame_hdr((unsigned char *)buf + used, RH_FRAME_HEARTBEAT, pad);
        memset(buf + used + RH_FRAME_HDR, 0, pad);
        used += RH_FRAME_HDR + pad;
        t->push.hb_pending = 0;
        t->push.hb_pad = 0;
    }
    /* held: while the first response of an unproven path is awaited, nothing
     * goes up, so that the session can still start over if that response never
     * comes */
    uint64_t have = t->xp.up_hold && !t->push.r_pending ? t->up.sent : up_read_off(t);
    /* every D frame is followed by its C frame (docs/PROTOCOL.md, Integrity) */
    while (!t->push.r_pending && t->up.sent < have &&
           room - used > RH_FRAME_HDR + CHECK_FRAME) {
        size_t n = room - used - RH_FRAME_HDR - CHECK_FRAME;
        if (n > RH_FRAME_MAX)
            n = RH_FRAME_MAX;
        if (n > have - t->up.sent)
            n = (size_t)(have - t->up.sent);
        uint32_t crc = up_crc_at(t, t->up.sent);
        unsigned char *d = (unsigned char *)buf + used + RH_FRAME_HDR;
        rh_frame_hdr((unsigned char *)buf + used, RH_FRAME_DATA, n);
        up_copy(t, t->up.sent, d, n);
        crc = rh_crc32c(crc, d, n);
        used += RH_FRAME_HDR + n;
        t->up.sent += n;
        used += rh_frame_check((unsigned char *)buf + used, t->up.sent, crc);
        up_mark(t, t->up.sent, crc);
    }
    if (t->push.r_pending) {
        static const char why[] = "client: local connection failed";
        if (room - used >= RH_FRAME_HDR + sizeof(why) - 1) {
            used += emit(buf + used, RH_FRAME_RESET, why, sizeof(why) - 1);
            t->push.r_pending = 0;
            t->push.r_sent = 1;
            r->p_r = 1;
        }
    } else if (t->up.eof && t->up.sent == up_read_off(t) && !t->up.fin_sent &&
               room - used >= RH_FRAME_HDR && !t->xp.up_hold) {
        used += emit(buf + used, RH_FRAME_FIN, NULL, 0);
        t->up.fin_sent = 1;
        r->p_fin = 1;
        t_log(t, 1, "local EOF after %" PRIu64 " bytes: sent F", have);
    }
    if (used == 0) {
        r->send_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    int64_t now = rh_now_ms();
    t->push.last_emit = now;
    if (t->up.sent > sent_before)
        t->push.last_data = now;
    if (t->up.sent > t->up.acked && !t->push.ack_wait_since)
        t->push.ack_wait_since = now;
    r->emitted += used;
    return used;
}

/* curl wants to send the body again (an authentication round, or a retry on a
 * new connection): the ring still has the bytes, so the body starts over at its
 * Relay-Offset; the server refuses (409) what it already had. */
static int body_seek(void *ud, curl_off_t offset, int origin)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;

    if (offset != 0 || origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    if (r->emitted == 0)
        return CURL_SEEKFUNC_OK;
    if (r->p_r || r->body_ended || r->p_off < t->up.base || r->p_off < t->up.acked)
        return CURL_SEEKFUNC_CANTSEEK;
    t->up.sent = r->p_off;
    if (r->p_fin && !t->up.done)
        t->up.fin_sent = 0;
    r->p_fin = 0;
    r->emitted = 0;
    return CURL_SEEKFUNC_OK;
}

/* ---------------------------------------------------------------- batch pushes */

/* A complete push of the up bytes [off, end), with F when fin: the frames are
 * copied from the ring, so the ring may move on while curl sends them. */
static struct rhc_req *bpush_new(rhc_tunnel *t, uint64_t off, uint64_t end, int fin,
                                 unsigned tries)
{
    struct rhc_req *r = req_new(t->ctx, t, REQ_PUSH, t->token);
    size_t data = (size_t)(end - off);
    size_t nframes = (data + RH_FRAME_MAX - 1) / RH_FRAME_MAX;
    size_t len = data + nframes * (RH_FRAME_HDR + CHECK_FRAME) + (fin ? RH_FRAME_HDR : 0);

    if (!r)
        return NULL;
    r->p_off = off;
    r->p_end = end;
    r->p_fin = fin;
    r->tries = tries;
    if (!(r->p_body = malloc(len ? len : 1)))
        goto fail;
    size_t pos = 0;
    uint32_t crc = up_crc_at(t, off);
    for (uint64_t o = off; o < end; ) {
        size_t n = end - o > RH_FRAME_MAX ? RH_FRAME_MAX : (size_t)(end - o);
        rh_frame_hdr(r->p_body + pos, RH_FRAME_DATA, n);
        up_copy(t, o, r->p_body + pos + RH_FRAME_HDR, n);
        crc = rh_crc32c(crc, r->p_body + pos + RH_FRAME_HDR, n);
        pos += RH_FRAME_HDR + n;
        o += n;
        pos += rh_frame_check(r->p_body + pos, o, crc);
    }
    up_mark(t, end, crc);
    if (fin)
        rh_frame_hdr(r->p_body + pos, RH_FRAME_FIN, 0);
    r->p_len = len;
    if (add_header(r, RH_HDR_OFFSET ": %" PRIu64, off) < 0 ||
        add_header(r, "Content-Type: application/octet-stream") < 0 ||
        add_header(r, "Expect:") < 0)
        goto fail;
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, (char *)r->p_body);
    if (tries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t_log(t, 3, "push %" PRIu64 "..%" PRIu64 "%s", off, end, fin ? " + F" : "");
    return r;
fail:
    req_free(r);
    return NULL;
}

/* Sends what waits in the ring as one more batch push. */
static int start_bpush(rhc_tunnel *t)
{
    uint64_t have = up_read_off(t);
    uint64_t n = have - t->up.sent;

    if (n > t->ctx->pol.batch_max)
        n = t->ctx->pol.batch_max;
    int fin = t->up.eof && !t->up.fin_sent && !t->up.done && t->up.sent + n == have;
    struct rhc_req *r = bpush_new(t, t->up.sent, t->up.sent + n, fin, 0);
    if (!r) {
        t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
        return -1;
    }
    t->rq.bpush[t->rq.nbpush++] = r;
    t->up.sent += n;
    if (!t->push.ack_wait_since)
        t->push.ack_wait_since = rh_now_ms();
    if (fin) {
        t->up.fin_sent = 1;
        t_log(t, 1, "local EOF after %" PRIu64 " bytes: sent F", have);
    }
    return 0;
}

/* ---------------------------------------------------------------- responses (down) */

static int down_headers_done(struct rhc_req *r)
{
    rhc_tunnel *t = r->t;

    if (r->status != 200)
        return 1;                   /* the body is an error text; judged when done */
    t->down.fresh = 0;
    t->down.retries = 0;
    if (!r->have_offset || r->offset != t->down.off) {
        t_fail(t, RHC_EXIT_LOST, "%s: server resumes at offset %s%" PRIu64 ", expected %" PRIu64,
               kind_name[r->kind], r->have_offset ? "" : "(missing) ",
               r->have_offset ? r->offset : 0, t->down.off);
        return 0;
    }
    return 1;
}

/* D bytes wait in the response's pend buffer until their C frame vouches for
 * them: a cut response loses only unchecked bytes, which the next pull sends
 * again, and a wrong byte never reaches the local side. */
static int down_take(rhc_tunnel *t, struct rhc_req *r, const unsigned char *p, size_t n)
{
    if (!r->pend && !(r->pend = malloc(RH_FRAME_MAX))) {
        t_fail(t, RHC_EXIT_ERROR, "internal: out of memory");
        return -1;
    }
    if (n > RH_FRAME_MAX - r->pend_len) {
        t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": down data after %" PRIu64
               " without a check frame", kind_name[r->kind], t->down.off);
        return -1;
    }
    memcpy(r->pend + r->pend_len, p, n);
    r->pend_len += n;
    return 0;
}

static int down_check(rhc_tunnel *t, struct rhc_req *r, const rh_frame_event *ev,
                      int64_t now)
{
    uint32_t crc = rh_crc32c(t->down.crc, r->pend, r->pend_len);
    uint64_t end = t->down.off + r->pend_len;

    if (ev->offset != end || ev->crc != crc) {
        t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": down bytes %" PRIu64
               "..%" PRIu64 " (server's check at %" PRIu64 ", crc %08" PRIx32 ", ours %08"
               PRIx32 "); none of them was delivered", kind_name[r->kind], t->down.off, end,
               ev->offset, ev->crc, crc);
        return -1;
    }
    t->down.crc = crc;
    t->down.off = end;
    r->rx_data += r->pend_len;
    if (r->pend_len)
        t->down.last_data = t->sess.last_busy = now;
    deliver(t, r->pend, r->pend_len);
    r->pend_len = 0;
    return 0;
}

/* Frames of a pull or duplex response: data goes to the local side once
 * checked, A frames confirm up bytes. */
static size_t resp_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t len = size * nmemb;
    size_t off = 0;

    if (r->status != 200)
        return body_cb(ptr, size, nmemb, ud);
    if (t->end.code)
        return 0;                   /* tearing down: stop this transfer */
    if (t->local.olen >= OBUF_SOFT) {
        /* Nothing of this call is consumed; curl hands the same bytes again on
         * unpause, so the parser sees every byte exactly once. */
        r->recv_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    int64_t now = rh_now_ms();
    t->down.last_rx = now;
    while (off < len) {
        rh_frame_event ev;
        size_t n = rh_frame_parse(&r->parser, (const unsigned char *)ptr + off, len - off,
                                  "DHFREAC", &ev);
        off += n;
        if (ev.type == RH_FEV_NONE) {
            if (n == 0)
                off = len;          /* cannot happen: the parser takes all it gets */
            continue;
        }
        if (ev.type != RH_FEV_ERROR && (r->saw_fin || r->saw_end)) {
            t_fail(t, RHC_EXIT_LOST, "%s: protocol error: frame after %s", kind_name[r->kind],
                   r->saw_fin ? "F" : "E");
            return 0;
        }
        if (!r->got_frame) {
            r->got_frame = 1;
            t->xp.down_seen = t->xp.down;
            if (!r->batch) {
                /* the path passes this transport's responses: up bytes may go */
                t->ctx->pol.proven[r->kind == REQ_DUPLEX ? RHC_XP_DUPLEX : RHC_XP_STREAM] = 1;
                t->xp.up_hold = 0;
            }
        }
        switch (ev.type) {
        case RH_FEV_NONE:
            break;
        case RH_FEV_DATA:
            if (down_take(t, r, ev.data, ev.len) != 0)
                return 0;
            break;
        case RH_FEV_CHECK:
            if (down_check(t, r, &ev, now) != 0)
                return 0;
            break;
        case RH_FEV_HEARTBEAT:
            break;
        case RH_FEV_ACK:
            if (ev.offset > up_read_off(t)) {
                t_fail(t, RHC_EXIT_LOST, "%s: protocol error: server confirms %" PRIu64
                       " up bytes of %" PRIu64, kind_name[r->kind], ev.offset, up_read_off(t));
                return 0;
            }
            up_ack(t, ev.offset);
            break;
        case RH_FEV_FIN:
            if (r->pend_len) {
                t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": F after unchecked "
                       "down bytes at %" PRIu64, kind_name[r->kind], t->down.off);
                return 0;
            }
            r->saw_fin = 1;
            t->down.fin = 1;
            t_log(t, 1, "server finished after %" PRIu64 " bytes (F)", t->down.off);
            break;
        case RH_FEV_END:
            r->saw_end = 1;
            /* a duplex whose response ended: its body ends too, then a new one */
            if (r->kind == REQ_DUPLEX && r->streamed)
                r->end_wanted = 1;
            break;
        case RH_FEV_RESET: {
            char why[256];
            size_t k = 0;
            for (size_t i = 0; i < ev.len && k + 1 < sizeof(why); ++i)
                why[k++] = (ev.data[i] >= 0x20 && ev.data[i] < 0x7f) ? (char)ev.data[i] : '?';
            why[k] = '\0';
            t_fail(t, strncmp(why, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY))
                      ? RHC_EXIT_LOST : RHC_EXIT_INTEGRITY,
                   "session reset by the server%s%s", k ? ": " : "", why);
            t->end.server_gone = 1;
            return 0;
        }
        case RH_FEV_ERROR:
            t_fail(t, RHC_EXIT_LOST, "%s: protocol error: %s", kind_name[r->kind],
                   r->parser.error ? r->parser.error : "bad frame");
            return 0;
        }
        if (t->end.code)
            return 0;
    }
    return len;
}

/* ---------------------------------------------------------------- session */

static int transient(CURLcode rc);

/* A request that got no whole answer: a transient error, or none at all (a
 * connection that ended inside the answer's header block). */
static int cut_before_answer(CURLcode rc)
{
    return rc == CURLE_OK || transient(rc);
}

/* The relay is busy (503) or this client is at its share (429): the same
 * request later may pass (Retry-After). */
static int busy_status(long st)
{
    return st == 503 || st == 429;
}

static void body_line(const struct rhc_req *r, char *out, size_t outsz);

/* Why a busy answer came: its status and the server's line (it names the limit). */
static const char *busy_why(const struct rhc_req *r, char *buf, size_t len)
{
    char line[BODY_MAX + 1];
    body_line(r, line, sizeof(line));
    snprintf(buf, len, "HTTP %ld%s%s", r->status, line[0] ? ": " : "", line);
    return buf;
}

static int64_t backoff_ms(unsigned n)
{
    return n >= 5 ? 1000 : 50L << n;   /* 50, 100, 200, 400, 800, 1000, ... */
}

static int start_pull(rhc_tunnel *t)
{
    int batch = t->xp.down == RHC_XP_BATCH;
    struct rhc_req *r = req_new(t->ctx, t, REQ_PULL, t->token);
    int64_t now = rh_now_ms();

    if (!r || add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        add_header(r, "Content-Type:") < 0 ||
        (batch && add_header(r, RH_HDR_MODE ": " RH_MODE_BATCH) < 0))
        goto fail;
    r->batch = batch;
    rh_frame_parser_init(&r->parser);
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_BUFFERSIZE, PULL_BUFFERSIZE);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_write);
    if (t->down.fresh)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t->rq.pull = r;
    t->down.repull_at = 0;
    t->down.last_rx = now;
    t->ack.sent = t->ack.conf = t->down.off;   /* Relay-Ack */
    t->xp.probe_until = t->xp.autox && !batch ? now + PROBE_FIRST_MS : 0;
    ++t->down.pulls;
    t_log(t, 2, "%s pull from offset %" PRIu64, batch ? "batch" : "stream", t->down.off);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "pull: cannot start a request (out of memory)");
    return -1;
}

static int start_spush(rhc_tunnel *t)
{
    struct rhc_req *r = req_new(t->ctx, t, REQ_PUSH, t->token);

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    /* A pooled keep-alive connection may be closing just as we reuse it (a
     * busy Apache drops idle ones); curl then resends the request, and a
     * streamed body that has gone out in part would go again. A new
     * connection has no such race. */
    curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t->rq.spush = r;
    t->push.spush_at = 0;
    t->push.last_emit = rh_now_ms();
    t->push.ack_wait_since = 0;
    t_log(t, 2, "stream push from offset %" PRIu64, t->up.sent);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
    return -1;
}

/* One request for both directions. It starts where the server surely is: up
 * bytes from the last confirmed offset (the server refuses, with its offset,
 * what it already has). */
static int start_duplex(rhc_tunnel *t)
{
    if (up_rewind(t, t->up.acked, "duplex") < 0)
        return -1;

    struct rhc_req *r = req_new(t->ctx, t, REQ_DUPLEX, t->token);
    int64_t now = rh_now_ms();

    if (!r || add_header(r, RH_HDR_OFFSET ": %" PRIu64, t->up.sent) < 0 ||
        add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        req_streamed_body(r) < 0)
        goto fail;
    r->p_off = t->up.sent;
    rh_frame_parser_init(&r->parser);
    curl_easy_setopt(r->h, CURLOPT_BUFFERSIZE, PULL_BUFFERSIZE);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_write);
    if (t->down.fresh)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    t->rq.duplex = r;
    t->down.repull_at = 0;
    t->down.last_rx = now;
    t->ack.sent = t->ack.conf = t->down.off;   /* Relay-Ack */
    t->push.last_emit = now;
    t->push.ack_wait_since = 0;
    t->xp.probe_until = t->xp.autox ? now + PROBE_FIRST_MS : 0;
    ++t->down.pulls;
    t_log(t, 2, "duplex from up offset %" PRIu64 ", down offset %" PRIu64, t->up.sent,
          t->down.off);
    return 0;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "duplex: cannot start a request (out of memory)");
    return -1;
}

/* Resume with a streamed down direction: the server keeps what it sent until
 * told, in its buffer; an ack request tells it, on a request of its own (see
 * body_read for why not in a body). One at a time: once a quarter of the
 * server's buffer came, or once down is quiet, so that an idle session holds no
 * memory there. */
/* The server forgets a session not heard from for its idle timeout: whatever
 * keeps an idle session alive comes at least three times as often. */
static int64_t alive_every(const rhc_tunnel *t)
{
    return t->sess.idle_ms / 3;
}

static void maybe_ack(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *dr = down_req(t);
    uint64_t gap = ack_gap(t);

    /* parked, no push heartbeats reach the server: an ack now and then does */
    int keep = t->push.parked && now >= t->push.park_keep_at;

    if ((!gap && !keep) || t->ack.n == ACK_INFLIGHT || t->end.code || !dr || dr->batch ||
        now < t->ack.retry_at)
        return;
    /* on a long path one ack in flight lets the server's window fill in two
     * round trips, not one: more go out, but only for a full gap each */
    if (t->ack.n && gap < t->ack.every)
        return;
    if (!keep && gap < t->ack.every && now < t->down.last_data + ACK_IDLE_MS)
        return;
    struct rhc_req *r = req_new(t->ctx, t, REQ_ACK, t->token);
    if (!r || add_header(r, RH_HDR_ACK ": %" PRIu64, t->down.off) < 0 ||
        add_header(r, "Content-Type:") < 0)
        goto fail;
    req_empty_body(r);
    r->offset = t->down.off;
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)ACK_TIMEOUT_MS);
    if (req_go(r) < 0)
        goto fail;
    t->ack.req[t->ack.n++] = r;
    t->ack.sent = t->down.off;
    t->push.park_keep_at = now + alive_every(t);
    t_log(t, 3, "ack %" PRIu64, t->down.off);
    return;
fail:
    req_free(r);
    t_fail(t, RHC_EXIT_ERROR, "ack: cannot start a request (out of memory)");
}

/* When maybe_ack wants a look without an fd event, or -1. */
static int64_t ack_deadline(const rhc_tunnel *t)
{
    struct rhc_req *dr = down_req(t);

    int64_t d;

    if (t->ack.n || !dr || dr->batch)
        return -1;
    if (ack_gap(t))
        d = t->down.last_data + ACK_IDLE_MS;
    else if (t->push.parked)
        d = t->push.park_keep_at;        /* the keep-alive ack */
    else
        return -1;
    return d > t->ack.retry_at ? d : t->ack.retry_at;
}

/* Every request of the session in flight (the open aside). */
static void reqs_free(rhc_tunnel *t)
{
    req_free(t->rq.pull);
    req_free(t->rq.spush);
    req_free(t->rq.duplex);
    t->rq.pull = t->rq.spush = t->rq.duplex = NULL;
    for (int i = 0; i < t->ack.n; ++i)
        req_free(t->ack.req[i]);
    t->ack.n = 0;
    for (int i = 0; i < t->rq.nbpush; ++i)
        req_free(t->rq.bpush[i]);
    t->rq.nbpush = 0;
}

static void ack_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    for (int i = 0; i < t->ack.n; ++i)
        if (t->ack.req[i] == r) {
            t->ack.req[i] = t->ack.req[--t->ack.n];
            break;
        }
    if (rc == CURLE_OK && r->hdr_done && (r->status == 204 || r->status == 200)) {
        if (r->offset > t->ack.conf)
            t->ack.conf = r->offset;
        t->ack.fails = 0;
    } else if (rc == CURLE_OK && r->hdr_done && r->status == RH_STATUS_INTEGRITY) {
        fail_http(t, r, "ack");     /* the session failed a check: nothing to wait for */
    } else if (rc == CURLE_OK && r->hdr_done && r->status == 416) {
        /* beyond what the server sent: it cannot be (a server that went back
         * without telling); the pull will find out */
        t_log(t, 1, "ack: HTTP 416 for offset %" PRIu64, r->offset);
        t->ack.sent = t->ack.conf;
        t->ack.retry_at = rh_now_ms() + 1000;
    } else {
        /* a cut, or the session is gone (the pull says so): try again later */
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        if (rc != CURLE_OK)
            t_log(t, 2, "ack: %s; trying again", req_error(r, rc));
        else
            t_log(t, 2, "ack: HTTP %ld %s; trying again", r->status, line);
        t->ack.sent = t->ack.conf;
        t->ack.retry_at = rh_now_ms() + backoff_ms(t->ack.fails++);
    }
    req_free(r);
}

/* Starts the request that carries down bytes next. */
static void start_down(rhc_tunnel *t)
{
    if (t->down.fin || t->end.code)
        return;
    if (t->xp.down == RHC_XP_DUPLEX && t->xp.up == RHC_XP_DUPLEX && !t->up.done) {
        start_duplex(t);
        return;
    }
    if (t->xp.down == RHC_XP_DUPLEX)
        t->xp.down = RHC_XP_STREAM;  /* up went elsewhere: down goes on alone */
    start_pull(t);
}

static void start_close_try(rhc_ctx *c, const char *token, const char *label,
                            const char *sid, unsigned tries, int integrity)
{
    struct rhc_req *r = req_new(c, NULL, REQ_CLOSE, token);

    if (!r)
        return;
    /* the server logs and counts a failed check we found, as its own */
    if (add_header(r, "Content-Type:") < 0 ||
        (integrity && add_header(r, RH_HDR_REASON ": " RH_REASON_TOKEN_INTEGRITY) < 0)) {
        req_free(r);
        return;
    }
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)CLOSE_TIMEOUT_MS);
    if (tries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    r->tries = tries;
    r->integrity = integrity;
    if (req_go(r) < 0) {
        req_free(r);
        return;
    }
    snprintf(r->token, sizeof(r->token), "%s", token);
    snprintf(r->label, sizeof(r->label), "%s", label);
    snprintf(r->sid, sizeof(r->sid), "%s", sid);
    r->next = c->closers;
    c->closers = r;
    ++c->nclosers;
}

static void start_close(rhc_ctx *c, const char *token, const char *label, const char *sid)
{
    start_close_try(c, token, label, sid, 0, 0);
}

/* Resume (the server keeps down bytes until acknowledged) is asked for only
 * where the pulls will be batch long-polls: each one acknowledges with its
 * Relay-Ack. On a streamed pull the acknowledgements would have to travel as A
 * frames in the push body, behind up bytes that may wait for the target, which
 * waits for down bytes to leave, which wait for the acknowledgements: an echo
 * with both directions busy stalls. */
static int want_resume(const rhc_tunnel *t)
{
    return !t->ctx->o->no_resume;
}

static struct rhc_req *start_open(rhc_tunnel *t)
{
    const struct rhc_opts *o = t->ctx->o;
    struct rhc_req *r = req_new(t->ctx, t, REQ_OPEN, NULL);
    long total = OPEN_TIMEOUT_MS;

    if (!r)
        return NULL;
    if (add_header(r, "Content-Type:") < 0 ||
        add_header(r, RH_HDR_INTEGRITY ": " RH_INTEGRITY_CRC32C) < 0 ||
        (want_resume(t) && add_header(r, RH_HDR_RESUME ": " RH_RESUME_YES) < 0))
        goto fail;
    if (total < o->connect_timeout_ms + 15000)
        total = o->connect_timeout_ms + 15000;
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, total);
    if (t->sess.open_retries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    return r;
fail:
    req_free(r);
    return NULL;
}

/* ---------------------------------------------------------------- transport choice */

static const char *xp_pair(enum rhc_transport up, enum rhc_transport down, char *buf,
                           size_t bufsz)
{
    if (up == down)
        snprintf(buf, bufsz, "%s", xp_name[up]);
    else
        snprintf(buf, bufsz, "push %s, pull %s", xp_name[up], xp_name[down]);
    return buf;
}

/* Remembers for the later sessions of this process. */
static void note_best(rhc_ctx *c, int up, enum rhc_transport x, const char *why)
{
    if (up && x > c->pol.best_up) {
        c->pol.best_up = x;
        snprintf(c->pol.why_up, sizeof(c->pol.why_up), "%s", why);
    }
    if (!up && x > c->pol.best_down) {
        c->pol.best_down = x;
        snprintf(c->pol.why_down, sizeof(c->pol.why_down), "%s", why);
    }
}

/* Picks the transports of a session once its open was answered. */
static void choose_transport(rhc_tunnel *t, struct rhc_req *open)
{
    rhc_ctx *c = t->ctx;
    const struct rhc_opts *o = c->o;
    long hv = 0;
    char why[800], pair[64];

    curl_easy_getinfo(open->h, CURLINFO_HTTP_VERSION, &hv);
    const char *hs = hv == CURL_HTTP_VERSION_2_0 ? "HTTP/2" :
                     hv == CURL_HTTP_VERSION_1_0 ? "HTTP/1.0" : "HTTP/1.1";
    if (o->transport != RHC_XP_AUTO) {
        t->xp.up = o->transport;
        t->xp.down = o->transport_down;
        if (t->xp.up == t->xp.down)
            snprintf(why, sizeof(why), "--transport %s; the connection speaks %s",
                     xp_name[t->xp.up], hs);
        else
            snprintf(why, sizeof(why), "--transport %s/%s; the connection speaks %s",
                     xp_name[t->xp.up], xp_name[t->xp.down], hs);
    } else {
        t->xp.autox = 1;
        if (hv == CURL_HTTP_VERSION_2_0 && c->pol.best_up <= RHC_XP_DUPLEX &&
            c->pol.best_down <= RHC_XP_DUPLEX) {
            t->xp.up = t->xp.down = RHC_XP_DUPLEX;
            snprintf(why, sizeof(why), "auto: the connection to the server speaks HTTP/2");
        } else {
            t->xp.up = c->pol.best_up > RHC_XP_STREAM ? c->pol.best_up : RHC_XP_STREAM;
            t->xp.down = c->pol.best_down > RHC_XP_STREAM ? c->pol.best_down : RHC_XP_STREAM;
            /* without streamed responses there are no timely A frames to watch a
             * streamed push with */
            if (t->xp.down == RHC_XP_BATCH)
                t->xp.up = RHC_XP_BATCH;
            int n = snprintf(why, sizeof(why), "auto: %s",
                             hv == CURL_HTTP_VERSION_2_0
                             ? "HTTP/2, but duplex did not get through earlier"
                             : "the connection speaks HTTP/1.1, not HTTP/2");
            if (t->xp.down == RHC_XP_BATCH && n > 0 && (size_t)n < sizeof(why))
                n += snprintf(why + n, sizeof(why) - (size_t)n, "; earlier: %s", c->pol.why_down);
            else if (t->xp.up == RHC_XP_BATCH && n > 0 && (size_t)n < sizeof(why))
                n += snprintf(why + n, sizeof(why) - (size_t)n, "; earlier: %s", c->pol.why_up);
        }
    }
    t_log(t, 1, "transport: %s (%s)", xp_pair(t->xp.up, t->xp.down, pair, sizeof(pair)), why);
    /* A path not seen to pass this transport's responses yet: up bytes wait for
     * the first frame (about one round trip), so that, should it never come, the
     * session can start over on batch without the target having seen a byte. */
    t->xp.up_hold = t->xp.autox && t->xp.down != RHC_XP_BATCH && !c->pol.proven[t->xp.down] &&
                 !t->xp.restarts && !t->sess.resume;
    if (t->xp.down == RHC_XP_DUPLEX) {
        start_duplex(t);
        return;
    }
    if (start_pull(t) == 0 && t->xp.up == RHC_XP_STREAM)
        start_spush(t);
    /* batch pushes start from t_advance as soon as there are bytes */
}

/* After the down side moved to a new request, the server must have taken that
 * request before up bytes that make the target answer reach it (else the answer
 * would go to the request given up): up bytes wait about two round trips. */
static int64_t switch_grace(const rhc_tunnel *t)
{
    int64_t g = 2 * t->sess.rtt_ms;

    return g < SWITCH_GRACE_MIN ? SWITCH_GRACE_MIN : g > SWITCH_GRACE_MAX ? SWITCH_GRACE_MAX : g;
}

/* Pushes move to batch: a streamed body is ended (the server then confirms how
 * far it got, and batch pushes go on from there). */
static void fallback_up(rhc_tunnel *t, const char *why)
{
    struct rhc_req *sc = up_streamer(t);

    if (t->xp.up == RHC_XP_BATCH)
        return;
    t_log(t, 1, "transport: push %s -> batch (%s)", xp_name[t->xp.up], why);
    note_best(t->ctx, 1, RHC_XP_BATCH, why);
    t->xp.up = RHC_XP_BATCH;
    t->push.ack_wait_since = 0;
    t->push.spush_at = 0;
    t->xp.up_fallback_at = 0;
    if (sc && !sc->body_ended && !sc->p_fin && !sc->p_r) {
        sc->end_wanted = 1;         /* up_kick lets the read callback end it */
        t->xp.switching = 1;
        t->xp.switch_since = rh_now_ms();
    }
}

/* The down side stalled before it gave a byte: switch to the next transport.
 * Only called while the response gave nothing but heartbeats, so no down byte
 * can be lost by giving it up (unless an intermediary holds some back). */
static void fallback_down(rhc_tunnel *t, const char *why)
{
    rhc_ctx *c = t->ctx;

    if (t->xp.down == RHC_XP_DUPLEX) {
        int up_on_it = t->xp.up == RHC_XP_DUPLEX;
        t_log(t, 1, "transport: duplex -> stream (%s)", why);
        if (t->xp.switching) {
            /* its ended body goes with it: batch pushes go on from what was confirmed */
            t->xp.switching = 0;
            if (up_rewind(t, t->up.acked, "duplex given up") < 0)
                return;
        }
        note_best(c, 0, RHC_XP_STREAM, why);
        note_best(c, 1, RHC_XP_STREAM, why);
        req_free(t->rq.duplex);
        t->rq.duplex = NULL;
        t->xp.down = RHC_XP_STREAM;
        t->xp.switched_pull = 1;
        if (up_on_it) {
            t->xp.up = RHC_XP_STREAM;
            if (up_rewind(t, t->up.acked, "duplex given up") < 0)
                return;
        }
        if (start_pull(t) == 0 && up_on_it)
            t->push.spush_at = rh_now_ms() + switch_grace(t);
        return;
    }
    if (t->xp.down == RHC_XP_STREAM) {
        t_log(t, 1, "transport: pull stream -> batch (%s)", why);
        note_best(c, 0, RHC_XP_BATCH, why);
        note_best(c, 1, RHC_XP_BATCH, why);
        req_free(t->rq.pull);
        t->rq.pull = NULL;
        t->xp.down = RHC_XP_BATCH;
        t->xp.switched_pull = 1;
        start_pull(t);
        /* Batch answers carry A frames only when they come (down bytes, or the
         * poll timeout): a streamed push could not be watched any more. It is
         * ended a little later (an intermediary may release its bytes then), and
         * held up bytes wait as long: a server that does not let the new pull
         * take over says so (409) in that time, and the session starts over. */
        if (t->xp.up != RHC_XP_BATCH) {
            t->xp.up_fallback_at = rh_now_ms() + switch_grace(t);
            t->xp.up_fallback_why = "pulls go batch, so streamed pushes cannot be watched";
        }
        if (t->xp.up_hold)
            t->xp.hold_until = rh_now_ms() + switch_grace(t);
    }
}

/* ---------------------------------------------------------------- completions */

/* The request's connection died before any answer came (typically a pooled
 * keep-alive connection the server was closing; curl's own retries may all land
 * on such connections when a busy server drops its idle ones). */
static int died_unanswered(const struct rhc_req *r, CURLcode rc)
{
    /* CURLE_HTTP2: an h2 connection the server is closing (GOAWAY after
     * MaxKeepAliveRequests, say) refused a new stream on it */
    /* CURLE_OK without a whole header block: the connection ended inside it */
    return !r->hdr_done && (rc == CURLE_OK || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
                            rc == CURLE_GOT_NOTHING || rc == CURLE_HTTP2);
}

/* A push that may be tried again: cut or refused before an answer. */
static int transient(CURLcode rc)
{
    switch (rc) {
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:  /* a connect that timed out: the path is down */
    case CURLE_SSL_CONNECT_ERROR:   /* cut during the handshake */
        return 1;
    default:
        return 0;
    }
}

static const char *req_error(const struct rhc_req *r, CURLcode rc)
{
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
}

static void open_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    rhc_ctx *c = t->ctx;
    char what[384];

    snprintf(what, sizeof(what), "open %.300s/%s", c->o->base_url, c->o->target);
    /* a connection cut before the answer, in the TLS handshake too (a proxy
     * that resets it): tried again; a refused certificate is another code */
    if ((died_unanswered(r, rc) || (!r->hdr_done && rc == CURLE_SSL_CONNECT_ERROR)) &&
        t->sess.open_retries < OPEN_RETRIES && !t->end.code) {
        /* At worst the server made a session we never hear of; it idles out. */
        t_log(t, 1, "open: %s; trying again on a new connection", req_error(r, rc));
        req_free(r);
        ++t->sess.open_retries;
        if (!(t->rq.open = start_open(t)))
            t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
        return;
    }
    if (r->hdr_done && r->status != 201)
        fail_http(t, r, what);
    else if (rc != CURLE_OK)
        fail_curl(t, r, rc, what);
    else if (!r->have_token)
        t_fail(t, RHC_EXIT_ERROR, "%s: HTTP 201 without a valid Relay-Session", what);
    else if (!r->check_ok)
        t_fail(t, RHC_EXIT_ERROR, "%s: the server does not check the bytes end to end (no "
               RH_HDR_INTEGRITY " in its answer): it runs an older mod_relay_https", what);
    if (t->end.code)
        return;
    memcpy(t->token, r->token, sizeof(t->token));
    memcpy(t->sid, r->token, RH_SID_LEN);
    t->sid[RH_SID_LEN] = '\0';
    t->sess.resume = r->resume_ok;
    t->sess.idle_ms = 1000 * (int64_t)(r->idle_s ? r->idle_s : 300);
    t->sess.last_contact = rh_now_ms();
    /* the server keeps what it sent until acknowledged, up to its window (older
     * servers: within Relay-Buffer): acknowledge every quarter of that, or it
     * stops reading the target */
    uint64_t keep = r->window >= 16384 ? r->window : r->buffer >= 16384 ? r->buffer : 262144;
    t->ack.every = keep / 4;
    /* but no less often than every ACK_MAX_GAP: on a fast short path that keeps
     * the server's memory down; on a long one the acks (ACK_INFLIGHT in
     * flight) cover more each as the gap grows during their round trip */
    if (t->ack.every > ACK_MAX_GAP)
        t->ack.every = ACK_MAX_GAP;
    t->ack.sent = t->ack.conf = t->down.off;
    curl_off_t pre = 0, first = 0;
    curl_easy_getinfo(r->h, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(r->h, CURLINFO_STARTTRANSFER_TIME_T, &first);
    t->sess.rtt_ms = first > pre ? (int64_t)((first - pre) / 1000) : 0;
    t_log(t, 1, "session %s opened", t->sid);
    choose_transport(t, r);
    req_free(r);
    t->rq.open = NULL;
}

/* Another try after a cut? A resumable session goes on trying,
 * with backoff, as long as the server keeps it (RelayIdleTimeout since it last
 * heard from us, less a margin): a cut shorter than that goes unnoticed
 * locally. Otherwise a few tries in a row. (Refusals, 409 and 503, always
 * get RETRY_MAX tries in a row.) */
static int retry_ok(const rhc_tunnel *t, unsigned n)
{
    if (t->sess.resume)
        return rh_now_ms() - t->sess.last_contact < t->sess.idle_ms - IDLE_MARGIN_MS;
    return n < RETRY_MAX;
}

/* A down request died before any answer: another try? (Without resume, only a
 * few: no byte came, so none can be lost, but the path may be gone.) */
static int unanswered_retry_ok(const rhc_tunnel *t)
{
    return t->sess.resume ? retry_ok(t, t->down.retries) : t->down.retries < 3;
}

/* The down request is given up without an answer: start another one later. */
static void down_again(rhc_tunnel *t, struct rhc_req *r, const char *why)
{
    t_log(t, 2, "%s: %s; trying again", kind_name[r->kind], why);
    if (r == t->rq.pull)
        t->rq.pull = NULL;
    if (r == t->rq.duplex)
        t->rq.duplex = NULL;
    req_free(r);
    t->down.repull_at = rh_now_ms() + backoff_ms(t->down.retries++);
}

/* Nothing went up yet (held) and nothing came down: the session is given up
 * (close) and a new one opened, which starts with what this one learned. The
 * target sees one connection that opened and closed; the local side sees
 * nothing. */
static void restart_session(rhc_tunnel *t, const char *why)
{
    rhc_ctx *c = t->ctx;

    t_log(t, 1, "transport: starting over with a new session (%s; nothing was exchanged yet)",
          why);
    reqs_free(t);
    start_close(c, t->token, t->label, t->sid);
    memset(t->token, 0, sizeof(t->token));
    t->xp.up = t->xp.down = RHC_XP_AUTO;
    t->xp.autox = 0;
    t->xp.switching = 0;
    t->xp.probe_until = t->xp.up_fallback_at = t->xp.hold_until = 0;
    t->xp.up_fallback_why = NULL;
    t->push.pads = 0;
    t->down.repull_at = t->push.spush_at = 0;
    t->xp.up_hold = 0;
    t->xp.switched_pull = 0;
    t->down.retries = t->push.retries = 0;
    t->push.ack_wait_since = 0;
    t->up.sent = t->up.acked = 0;
    t->up.fin_sent = 0;
    ++t->xp.restarts;
    if (!(t->rq.open = start_open(t)))
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
}

static void pull_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    if (t->end.code)
        return;
    /* A pull right after another one (after E, or a given-up stream pull) may
     * reach the server before it has finished with the one before: "second
     * pull". No byte was handed out, so trying again shortly is safe. */
    if (r->hdr_done && r->status == 409 && t->xp.switched_pull && t->xp.up_hold &&
        t->up.sent == 0 && t->down.off == 0 && !t->xp.restarts) {
        t->rq.pull = NULL;
        req_free(r);
        restart_session(t, "the server keeps the stream pull that was given up");
        return;
    }
    if (r->hdr_done && r->status == 409 && t->down.retries < RETRY_MAX) {
        down_again(t, r, "HTTP 409 (the previous pull is still active)");
        return;
    }
    if (r->hdr_done && busy_status(r->status) && t->down.retries < RETRY_MAX) {
        char why[BODY_MAX + 32];
        down_again(t, r, busy_why(r, why, sizeof(why)));
        return;
    }
    if (r->hdr_done && r->status == 409 && t->xp.switched_pull) {
        t_fail(t, RHC_EXIT_LOST, "pull: HTTP 409: the stream pull that was given up is still "
               "held open by an intermediary, and the server does not let a new pull take "
               "over; later sessions of this process start with batch pulls");
        return;
    }
    /* No byte came, so none can be lost: pull again with the same ack (a server
     * that did send some answers 416, never misplaced bytes). */
    if (died_unanswered(r, rc) && unanswered_retry_ok(t)) {
        t_log(t, 1, "pull: %s; trying again on a new connection", req_error(r, rc));
        t->down.fresh = 1;
        down_again(t, r, req_error(r, rc));
        return;
    }
    /* After F or E the frames have said all; how the response ended (a missing
     * last chunk, say) does not matter any more. */
    if (r->hdr_done && r->status == 416 && t->xp.switched_pull)
        t_fail(t, RHC_EXIT_LOST, "pull: HTTP 416: down bytes were lost with the stream pull that "
               "was given up (an intermediary held them back); later sessions of this "
               "process start with batch pulls");
    else if (r->hdr_done && r->status != 200)
        fail_http(t, r, "pull");
    else if (!r->saw_end && !r->saw_fin && t->sess.resume && retry_ok(t, t->down.retries) &&
             (rc == CURLE_OK || transient(rc))) {
        /* cut: the server kept what it sent; a new pull from what arrived */
        t_log(t, 1, "pull: %s; resuming at offset %" PRIu64 " on a new connection",
              rc != CURLE_OK ? req_error(r, rc) : "response ended early", t->down.off);
        t->down.fresh = 1;
        down_again(t, r, "cut");
        return;
    } else if (!r->saw_end && !r->saw_fin && rc != CURLE_OK)
        fail_curl(t, r, rc, "pull");
    else if (!r->saw_end && !r->saw_fin)
        t_fail(t, RHC_EXIT_LOST, "pull: response ended without F or E (connection cut?)");
    if (t->end.code)
        return;
    int again = r->saw_end;
    t->down.retries = 0;
    t->rq.pull = NULL;
    req_free(r);
    if (again) {
        t_log(t, 3, "pull ended (E) at offset %" PRIu64 ", pulling again", t->down.off);
        start_down(t);
    }
}

/* The up bytes of an ended or failed streamed body: go on from where the
 * server surely is, on the current up transport. */
static void up_restart(rhc_tunnel *t, int64_t delay)
{
    if (t->end.code || t->up.done)
        return;
    if (t->xp.up == RHC_XP_STREAM)
        t->push.spush_at = rh_now_ms() + delay;
    /* duplex: the next duplex carries them; batch: t_advance */
}

static void spush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    int64_t delay = -1;

    t->end.linger_until = 0;        /* nothing more can go out on this push */
    if (t->push.r_sent) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;     /* the server got our R */
        return;
    }
    if (t->end.code)
        return;
    t->rq.spush = NULL;
    if (r->end_wanted)
        t->xp.switching = 0;
    if (r->hdr_done && r->status == 200) {
        uint64_t x = r->have_offset ? r->offset : t->up.sent;
        if (x > up_read_off(t)) {
            t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
                   " up bytes of %" PRIu64, x, up_read_off(t));
        } else {
            up_ack(t, x);
            if (r->p_fin && x == up_read_off(t)) {
                t->up.done = 1;
                t->push.retries = 0;
            } else if (up_rewind(t, x, "push ended") == 0) {
                if (r->parking && x == t->up.sent) {
                    t->push.parked = 1;    /* up_kick starts the next one */
                    t->push.park_keep_at = rh_now_ms() + alive_every(t);
                    t_log(t, 2, "stream push ended: idle for %ld ms", t->ctx->o->park_ms);
                } else if (r->refresh || r->parking)
                    delay = 0;  /* the ring is free again: a new push goes on */
                else if (r->end_wanted)
                    t_log(t, 2, "stream push ended at %" PRIu64 ": pushes go on as batch", x);
                else
                    delay = 0;  /* the server ended it early: a new one goes on */
            }
        }
    } else if (t->xp.autox && !r->acked_any &&
               ((r->hdr_done && r->status == 413) ||
                (!r->hdr_done && rc != CURLE_OK && transient(rc) && t->push.retries >= 1))) {
        /* An intermediary that refuses long bodies (nginx: client_max_body_size)
         * answers 413, or cuts the connection while the body goes. It passed
         * nothing on, so the kept bytes go again, in batch pushes. */
        char why[320];
        if (r->hdr_done)
            snprintf(why, sizeof(why), "HTTP %ld on a streamed push: an intermediary refuses "
                     "long request bodies", r->status);
        else
            snprintf(why, sizeof(why), "streamed pushes cut before a byte was confirmed: %s",
                     req_error(r, rc));
        fallback_up(t, why);
        up_rewind(t, t->up.acked, "streamed push refused");
    } else if (r->hdr_done && r->status == 413 && r->acked_any && t->sess.resume &&
               retry_ok(t, t->push.retries)) {
        /* Bytes went through, then the body grew beyond a limit on the way (an
         * intermediary's, or LimitRequestBody): later pushes stay below half of
         * what this one carried, and this one goes on from what was confirmed. */
        uint64_t cap = r->emitted / 2;
        if (cap < SPUSH_BODY_MIN)
            cap = SPUSH_BODY_MIN;
        if (cap < t->ctx->pol.spush_max)
            t->ctx->pol.spush_max = cap;
        t_log(t, 1, "push: HTTP 413 after %" PRIu64 " body bytes: stream pushes now end "
              "after %" PRIu64 "; going on from offset %" PRIu64, r->emitted,
              t->ctx->pol.spush_max, t->up.acked);
        if (up_rewind(t, t->up.acked, "push too long") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && busy_status(r->status) && t->push.retries < RETRY_MAX) {
        /* busy (503) or at this client's share (429): nothing of this push
         * counted beyond what the server confirmed */
        char why[BODY_MAX + 32];
        if (up_rewind(t, t->up.acked, busy_why(r, why, sizeof(why))) == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && r->status == 409 && t->push.retries < RETRY_MAX) {
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        uint64_t x = r->have_offset ? r->offset : t->up.acked;
        if (x > up_read_off(t)) {
            t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
                   " up bytes of %" PRIu64, x, up_read_off(t));
        } else if (!strcmp(r->reason, RH_REASON_TOKEN_FIN) && t->up.eof && x == up_read_off(t)) {
            up_ack(t, x);
            t->up.done = 1;     /* an earlier push had it all, F included */
        } else {
            up_ack(t, x);
            if (up_rewind(t, x > t->up.acked ? x : t->up.acked, "push refused") == 0)
                delay = x > r->p_off ? 0 : backoff_ms(t->push.retries);
            ++t->push.retries;
            t_log(t, 2, "push: HTTP 409 (%s): going on from %" PRIu64, line, t->up.sent);
        }
    } else if (r->hdr_done && r->status == 400 && r->have_offset &&
               retry_ok(t, t->push.retries)) {
        /* the body was cut on the way; the server says how far it got */
        char line[BODY_MAX + 1];
        body_line(r, line, sizeof(line));
        if (r->offset <= up_read_off(t))
            up_ack(t, r->offset);
        t_log(t, 1, "push: cut on the way (%s); going on from offset %" PRIu64
              " on a new connection", line, t->up.acked);
        if (up_rewind(t, t->up.acked, "push cut on the way") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (!r->hdr_done && cut_before_answer(rc) && retry_ok(t, t->push.retries)) {
        /* Cut: nothing is sure beyond what the server confirmed. */
        t_log(t, 1, "push: %s; going on from offset %" PRIu64 " on a new connection",
              req_error(r, rc), t->up.acked);
        if (up_rewind(t, t->up.acked, "push cut") == 0)
            delay = backoff_ms(t->push.retries);
        ++t->push.retries;
    } else if (r->hdr_done && r->status != 200) {
        fail_http(t, r, "push");
    } else {
        fail_curl(t, r, rc, "push");
    }
    req_free(r);
    if (delay >= 0)
        up_restart(t, delay);
}

static void bpush_forget(rhc_tunnel *t, struct rhc_req *r)
{
    for (int i = 0; i < t->rq.nbpush; ++i)
        if (t->rq.bpush[i] == r) {
            t->rq.bpush[i] = t->rq.bpush[--t->rq.nbpush];
            t->rq.bpush[t->rq.nbpush] = NULL;
            break;
        }
    req_free(r);
}

static void bpush_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    int64_t delay = -1;
    uint64_t from = r->p_off;
    char line[BODY_MAX + 1];

    if (t->end.code)
        return;
    body_line(r, line, sizeof(line));
    if (r->hdr_done && r->have_offset && r->offset > up_read_off(t)) {
        t_fail(t, RHC_EXIT_LOST, "push: protocol error: server confirms %" PRIu64
               " up bytes of %" PRIu64, r->offset, up_read_off(t));
        return;
    }
    if (r->hdr_done && r->status == 200) {
        uint64_t x = r->have_offset ? r->offset : r->p_end;
        if (x < r->p_end) {
            t_fail(t, RHC_EXIT_LOST, "push: the server took %" PRIu64 " of the up bytes %"
                   PRIu64 "..%" PRIu64, x, r->p_off, r->p_end);
            return;
        }
        up_ack(t, x);
    } else if (r->hdr_done && r->status == 409 && r->have_offset) {
        /* The server has up bytes up to x. A push that reached it before
         * (curl's own retry of a request it thinks was lost, say) is done; a
         * push it only had in part goes again from there; a push whose turn
         * had not come (or came too early) goes again after a while. */
        uint64_t x = r->offset;
        up_ack(t, x);
        if (x >= r->p_end && (!r->p_fin || !strcmp(r->reason, RH_REASON_TOKEN_FIN))) {
            t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": the server had it already", r->p_off,
                  r->p_end);
        } else if (x > r->p_off) {
            from = x < r->p_end ? x : r->p_end;
            delay = 0;
        } else {
            delay = backoff_ms(r->tries);
        }
    } else if (r->hdr_done && (r->status == 409 || busy_status(r->status))) {
        delay = backoff_ms(r->tries);   /* 503/429: busy, or at this client's share */
    } else if (r->hdr_done && r->status == 400 && r->have_offset) {
        /* the body was cut on the way (the server says how far it got) */
        up_ack(t, r->offset);
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": cut on the way (%s); sending it again",
              r->p_off, r->p_end, line);
        delay = backoff_ms(r->tries);
    } else if (r->hdr_done && r->status == 413 && r->p_end - r->p_off > BATCH_DATA_MIN &&
               t->rq.nbpush >= BATCH_SLOTS) {
        delay = backoff_ms(r->tries);   /* split when a slot is free: pushes are smaller now */
    } else if (r->hdr_done && r->status == 413 && r->p_end - r->p_off > BATCH_DATA_MIN) {
        /* an intermediary with a small body limit: pushes get bodies of the
         * largest power of two below this one's (limits are 1m, 2m...: nginx's
         * default takes 1 MiB bodies, not half of whatever failed), this one too
         * (the rest goes in a push of its own) */
        rhc_ctx *c = t->ctx;
        size_t body = 1, data = (size_t)(r->p_end - r->p_off);
        while (body * 2 < r->p_len)
            body *= 2;
        size_t half = DATA_IN_BODY(body);
        if (half >= data)
            half = (data + 1) / 2;
        if (half < BATCH_DATA_MIN)
            half = BATCH_DATA_MIN;
        if (c->pol.batch_max > half) {
            c->pol.batch_max = half;
            t_log(t, 1, "push: HTTP 413 (an intermediary limits request bodies): pushes now "
                  "carry at most %zu bytes", half);
        }
        struct rhc_req *rest = bpush_new(t, r->p_off + half, r->p_end, r->p_fin, 0);
        if (!rest) {
            t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
            return;
        }
        t->rq.bpush[t->rq.nbpush++] = rest;
        r->p_end = r->p_off + half;
        r->p_fin = 0;
        delay = 0;
    } else if (!r->hdr_done && cut_before_answer(rc)) {
        t_log(t, 1, "push %" PRIu64 "..%" PRIu64 ": %s; sending it again", r->p_off, r->p_end,
              req_error(r, rc));
        delay = backoff_ms(r->tries);
    } else if (r->hdr_done) {
        fail_http(t, r, "push");
        return;
    } else {
        fail_curl(t, r, rc, "push");
        return;
    }
    if (delay < 0) {
        if (r->p_fin) {
            t->up.done = 1;
            t_log(t, 2, "push with F confirmed at %" PRIu64, r->p_end);
        }
        bpush_forget(t, r);
        return;
    }
    if (from < t->up.acked)
        from = t->up.acked < r->p_end ? t->up.acked : r->p_end;
    if (r->hdr_done ? r->tries + 1 >= RETRY_MAX : !retry_ok(t, r->tries + 1)) {
        t_fail(t, RHC_EXIT_LOST, "push %" PRIu64 "..%" PRIu64 ": refused or cut %u times "
               "(last: %s)", r->p_off, r->p_end, r->tries + 1,
               r->hdr_done ? line : req_error(r, rc));
        return;
    }
    if (r->hdr_done && r->status == 409)
        t_log(t, 3, "push %" PRIu64 "..%" PRIu64 ": HTTP 409 (%s), again from %" PRIu64
              " in %" PRId64 " ms", r->p_off, r->p_end, line, from, delay);
    /* It waits out of the multi; t_timers sends it again. */
    curl_multi_remove_handle(t->ctx->multi, r->h);
    r->p_off = from;
    ++r->tries;
    r->retry_at = rh_now_ms() + delay;
    if (r->retry_at == 0)
        r->retry_at = 1;
}

static void duplex_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    rhc_ctx *c = t->ctx;
    int up_on_it = t->xp.up == RHC_XP_DUPLEX;
    char line[BODY_MAX + 1];

    t->end.linger_until = 0;
    if (t->push.r_sent && r->p_r) {
        if (rc == CURLE_OK)
            t->end.server_gone = 1;
        return;
    }
    if (t->end.code)
        return;
    body_line(r, line, sizeof(line));
    if (r->hdr_done && (r->status == 501 || r->status == 404 || r->status == 405) &&
        !r->got_frame) {
        /* A server or path without duplex: nothing of this request counted. */
        char why[300];
        snprintf(why, sizeof(why), "the server answered duplex with HTTP %ld%s%s", r->status,
                 line[0] ? ": " : "", line);
        t_log(t, 1, "transport: duplex -> stream (%s)", why);
        if (t->xp.autox) {
            note_best(c, 0, RHC_XP_STREAM, why);
            note_best(c, 1, RHC_XP_STREAM, why);
        }
        t->rq.duplex = NULL;
        req_free(r);
        t->xp.down = RHC_XP_STREAM;
        if (up_on_it) {
            t->xp.up = RHC_XP_STREAM;
            if (up_rewind(t, t->up.acked, "duplex refused") < 0)
                return;
        }
        if (start_pull(t) == 0 && up_on_it)
            start_spush(t);
        return;
    }
    if (r->hdr_done && busy_status(r->status) && t->down.retries < RETRY_MAX) {
        char why[BODY_MAX + 32];
        busy_why(r, why, sizeof(why));
        if (up_on_it && up_rewind(t, t->up.acked, why) < 0)
            return;
        down_again(t, r, why);
        return;
    }
    if (r->hdr_done && r->status == 409 && t->down.retries < RETRY_MAX) {
        /* the previous push or pull of the session is still active on the server,
         * or it has more up bytes than we thought (then it says how many) */
        if (r->have_offset && r->offset <= up_read_off(t))
            up_ack(t, r->offset);
        down_again(t, r, line[0] ? line : "HTTP 409");
        return;
    }
    if (died_unanswered(r, rc) && unanswered_retry_ok(t)) {
        t_log(t, 1, "duplex: %s; trying again on a new connection", req_error(r, rc));
        t->down.fresh = 1;
        down_again(t, r, req_error(r, rc));
        return;
    }
    /* A stream reset with no answer while the connection lives: the server
     * refused the request. mod_http2 resets a duplex its handler refused before
     * reading the body (410 for a session a restarted relay core no longer
     * has) without sending the answer; a few in a row mean just that. */
    if (rc == CURLE_HTTP2_STREAM && !r->hdr_done && ++t->sess.h2_resets >= H2_RESETS_MAX) {
        t_fail(t, RHC_EXIT_LOST, "duplex: the server reset the stream %u times in a row "
               "without an answer: the session is gone (relay core restarted?)",
               t->sess.h2_resets);
        return;
    }
    if (r->hdr_done && r->status != 200) {
        fail_http(t, r, "duplex");
    } else if (!r->saw_end && !r->saw_fin && t->sess.resume && retry_ok(t, t->down.retries) &&
               (rc == CURLE_OK || transient(rc))) {
        /* cut: both directions go on from what the server confirmed / we got */
        t_log(t, 1, "duplex: %s; resuming on a new connection",
              rc != CURLE_OK ? req_error(r, rc) : "response ended early");
        if (up_on_it && up_rewind(t, t->up.acked, "duplex cut") < 0)
            return;
        t->down.fresh = 1;
        down_again(t, r, "cut");
        return;
    } else if (!r->saw_end && !r->saw_fin && rc != CURLE_OK) {
        fail_curl(t, r, rc, "duplex");
    } else if (!r->saw_end && !r->saw_fin) {
        t_fail(t, RHC_EXIT_LOST, "duplex: response ended without F or E (connection cut?)");
    }
    if (t->end.code)
        return;
    /* Complete: the server has read the whole body (it answers to the end only
     * then), so a body with F means the up direction is done. */
    t->down.retries = 0;
    t->rq.duplex = NULL;
    if (r->end_wanted && t->xp.switching)
        t->xp.switching = 0;
    if (up_on_it && r->p_fin)
        t->up.done = 1;
    req_free(r);
    if (up_on_it && !t->up.done && t->down.fin) {
        /* down is over, up is not: a stream push carries the rest */
        t->xp.up = RHC_XP_STREAM;
        if (up_rewind(t, t->up.acked, "duplex ended") == 0)
            start_spush(t);
        return;
    }
    if (up_on_it && !t->up.done)
        up_rewind(t, t->up.acked, "duplex ended");
    start_down(t);
}

static void on_done(rhc_ctx *c, struct rhc_req *r, CURLcode rc)
{
    rhc_tunnel *t = r->t;

    if (!t) {   /* detached close */
        /* a pooled connection the server was closing: once more on a new one,
         * else the session lingers on the server until it times out */
        const char *sep = r->label[0] ? ": " : "";
        if (rc != CURLE_OK && !r->hdr_done && transient(rc) && r->tries < 2)
            start_close_try(c, r->token, r->label, r->sid, r->tries + 1, r->integrity);
        else if (rc != CURLE_OK)
            rhc_info("%s%ssession %s: close: %s", r->label, sep, r->sid, req_error(r, rc));
        else
            rhc_info("%s%ssession %s: close: HTTP %ld", r->label, sep, r->sid, r->status);
        for (struct rhc_req **pp = &c->closers; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                --c->nclosers;
                break;
            }
        req_free(r);
        return;
    }
    switch (r->kind) {
    case REQ_OPEN:
        open_done(t, r, rc);
        break;
    case REQ_PULL:
        pull_done(t, r, rc);
        break;
    case REQ_PUSH:
        if (r->streamed)
            spush_done(t, r, rc);
        else
            bpush_done(t, r, rc);
        break;
    case REQ_DUPLEX:
        duplex_done(t, r, rc);
        break;
    case REQ_ACK:
        ack_done(t, r, rc);
        break;
    case REQ_CLOSE:
        break;
    }
}

/* ---------------------------------------------------------------- tunnel life */

static void t_finish(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;
    int code = t->end.code;

    req_free(t->rq.open);
    t->rq.open = NULL;
    reqs_free(t);
    /* a resumable session lingers on the server after a clean end, for a client
     * that missed the last bytes: this one has them all */
    if ((code || t->sess.resume) && t->token[0] && !t->end.server_gone)
        start_close_try(c, t->token, t->label, t->sid, 0, code == RHC_EXIT_INTEGRITY);
    if (t->local.kind == RHC_LOCAL_SOCKET) {
        if (code) {
            /* A broken tunnel must not look like a clean end to the application. */
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(t->local.in_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(t->local.in_fd);
    }
    if (code)
        t_log(t, 0, "%s", t->end.msg);
    else
        t_log(t, 1, "session %s closed cleanly (up %" PRIu64 " bytes, down %" PRIu64 " bytes)",
              t->sid, up_read_off(t), t->down.off);

    if (t->prev)
        t->prev->next = t->next;
    else
        c->tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    --c->ntunnels;
    if (t->done)
        t->done(t->done_arg, code);
    free(t->local.obuf);
    rh_ring_release(&t->up.ring);
    free(t);
}

/* Lets the up side move: wakes a streamed body that has something to say, or
 * starts batch pushes for what waits in the ring. */
static void up_kick(rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t);

    /* bodies being ended must get to say so */
    if (t->rq.spush && t->rq.spush->end_wanted)
        unpause_send(t->rq.spush);
    if (t->rq.duplex && t->rq.duplex->end_wanted)
        unpause_send(t->rq.duplex);
    if (sc) {
        if (sc->send_paused &&
            (t->push.r_pending || t->push.hb_pending || sc->p_fin ||
             (!t->xp.up_hold && (up_read_off(t) > t->up.sent || (t->up.eof && !t->up.fin_sent)))))
            unpause_send(sc);
        return;
    }
    if (t->push.parked && t->xp.up == RHC_XP_STREAM && !t->end.code &&
        (t->push.r_pending || up_read_off(t) > t->up.sent || (t->up.eof && !t->up.fin_sent))) {
        t->push.parked = 0;
        start_spush(t);
        return;
    }
    if (t->end.code || t->xp.up != RHC_XP_BATCH || t->xp.switching || t->xp.up_hold)
        return;
    while (!t->up.done && t->rq.nbpush < BATCH_INFLIGHT &&
           (up_read_off(t) > t->up.sent || (t->up.eof && !t->up.fin_sent)))
        if (start_bpush(t) < 0)
            return;
}

/* A streamed body whose ring is full of sent bytes, after the down direction
 * ended: no A frames will come to confirm them. Without help the ring would
 * never free up, and the local EOF (or more bytes) would never be read. So the
 * body is ended: a stream push's answer says how far the server got and a new
 * push goes on; after a duplex, a stream push goes on from what was confirmed
 * (the server drops what it already has). */
static void spush_refresh(rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t);

    if (!sc || sc->end_wanted || sc->body_ended || sc->p_fin || sc->p_r || !t->down.fin ||
        (sc == t->rq.spush && down_req(t)) || t->up.eof || t->end.code || t->xp.switching)
        return;
    if (rh_ring_space(&t->up.ring) >= UPBUF_ROOM_MIN || t->up.sent < up_read_off(t))
        return;
    t_log(t, 2, "up ring full of unconfirmed bytes after the down direction ended: "
          "ending the push to learn the server's offset");
    sc->end_wanted = 1;
    sc->refresh = 1;
    unpause_send(sc);
}

/* A stream push that has had nothing to send for --idle-push, every byte of
 * it confirmed, is ended, and the next one starts with the next bytes: an idle
 * stream tunnel then holds one request on the server (the pull) instead of two,
 * which halves what it costs there (a worker thread and a TLS connection each).
 * The first bytes after the pause wait for a new request: one round trip. */
static int64_t park_at(const rhc_tunnel *t)
{
    const struct rhc_req *sc = t->rq.spush;
    if (!sc || t->xp.up != RHC_XP_STREAM || !sc->send_paused || sc->end_wanted ||
        !t->sess.resume || sc->body_ended || sc->p_fin || sc->p_r || t->xp.switching || t->xp.up_hold ||
        t->up.eof || t->push.r_pending || t->end.code || t->up.acked != t->up.sent ||
        up_read_off(t) != t->up.sent || t->xp.probe_until || t->ctx->o->park_ms <= 0)
        return -1;
    int64_t since = t->push.last_data > sc->started ? t->push.last_data : sc->started;
    return since + t->ctx->o->park_ms;
}

static void push_park(rhc_tunnel *t, int64_t now)
{
    int64_t at = park_at(t);
    if (at < 0 || now < at)
        return;
    t->rq.spush->end_wanted = 1;
    t->rq.spush->parking = 1;
    unpause_send(t->rq.spush);
}

/* Moves a tunnel on after events; frees it when it is over. */
static void t_advance(rhc_tunnel *t, int64_t now)
{
    if (t->local.olen > 0 && !t->local.out_blocked && !t->local.out_err && !t->end.code)
        drain_out(t);
    /* an ended duplex body: its bytes are confirmed once A frames say so */
    if (t->xp.switching && t->rq.duplex && t->rq.duplex->body_ended && t->up.acked >= t->up.sent)
        t->xp.switching = 0;
    spush_refresh(t);
    push_park(t, now);
    up_kick(t);
    if (t->sess.resume)
        maybe_ack(t, now);
    if (t->end.code) {
        if (t->end.linger_until && (t->rq.spush || t->rq.duplex) && now < t->end.linger_until)
            return;     /* give the R frame its chance */
        t_finish(t);
        return;
    }
    if (t->down.fin && t->local.olen == 0 && !t->local.out_shut)
        shut_output(t);
    if (t->local.out_shut && t->up.done && !t->rq.pull && !t->rq.duplex && !t->rq.spush && !t->rq.nbpush &&
        !t->rq.open && !t->ack.n)
        t_finish(t);
}

/* auto: when pushed bytes count as stuck in an intermediary, or -1. Judged only
 * while the body has had no byte confirmed at all (an intermediary that buffers
 * whole bodies; a slow target shows progress first), while the down response
 * flows (A frames come on it) and has been quiet of data for a moment (A frames
 * wait behind down data). */
static int64_t stall_deadline(const rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (!t->xp.autox || !sc || sc->end_wanted || sc->body_ended || sc->acked_any ||
        t->xp.switching || !t->push.ack_wait_since)
        return -1;
    if (!dr || dr->batch || !dr->got_frame || dr->recv_paused)
        return -1;
    int64_t a = t->push.ack_wait_since + ACK_STALL_MS, b = t->down.last_data + DOWN_QUIET_MS;
    return a > b ? a : b;
}

/* When the up bytes of a body that got through before count as stuck in a
 * partly filled buffer, or -1 (any transport mode: see t_timers). */
static int64_t flush_deadline(const rhc_tunnel *t)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (!sc || !sc->acked_any || sc->end_wanted || sc->body_ended || sc->p_fin ||
        t->xp.switching || !t->push.ack_wait_since || t->push.pads >= FLUSH_MAX || t->push.hb_pending)
        return -1;
    if (!dr || dr->batch || !dr->got_frame || dr->recv_paused)
        return -1;
    int64_t a = t->push.ack_wait_since + ACK_STALL_MS, b = t->down.last_data + DOWN_QUIET_MS;
    return a > b ? a : b;
}

/* Liveness (docs/PROTOCOL.md): while data moves, the server heartbeats a silent
 * stream every RH_BUSY_HEARTBEAT_MS and answers a long-poll within
 * RH_BUSY_POLL_MS, so a response that stays silent longer went into a black
 * hole (a proxy or NAT that holds the connection and passes nothing): it is
 * given up in seconds instead of PULL_DEAD_MS. Our busy window is shorter than
 * the server's: it saw the same data earlier. */
static int64_t pull_dead_ms(const rhc_tunnel *t, const struct rhc_req *dr, int64_t now)
{
    /* a path that never showed a response of this transport is the probe's
     * business (an intermediary that holds responses, say), not a dead one */
    if (t->xp.down_seen != t->xp.down || !t->sess.last_busy ||
        now - t->sess.last_busy >= RH_BUSY_WINDOW_MS - BUSY_MARGIN_MS)
        return PULL_DEAD_MS;
    return dr->batch ? BUSY_POLL_DEAD_MS : BUSY_HB_DEAD_MS;
}

/* When the requests carrying unconfirmed up bytes count as dead, or -1: nothing
 * was confirmed for up_dead_ms while the down response shows the server alive.
 * A target that takes nothing looks the same; the interval doubles while
 * nothing moves, so that costs a request now and then. */
static int64_t up_dead_at(const rhc_tunnel *t, int64_t now)
{
    struct rhc_req *dr = down_req(t);

    if (!t->sess.resume || !t->push.ack_wait_since || t->up.sent <= t->up.acked || t->xp.switching ||
        t->end.code || !dr || t->xp.down_seen != t->xp.down || dr->recv_paused ||
        now - t->down.last_rx >= pull_dead_ms(t, dr, now))
        return -1;
    return t->push.ack_wait_since + (t->push.dead_ms ? t->push.dead_ms : UP_DEAD_MS);
}

/* auto: when the down response counts as held back, or -1. */
static int64_t probe_deadline(const rhc_tunnel *t)
{
    struct rhc_req *dr = down_req(t);

    if (!t->xp.autox || !t->xp.probe_until || !dr || dr->got_frame || dr->batch ||
        (dr->hdr_done && dr->status != 200))
        return -1;
    /* no response headers yet: the request may just wait for a free server
     * worker (a prefork burst); give that longer before calling it held back */
    return dr->hdr_done ? t->xp.probe_until : t->xp.probe_until + PROBE_NO_HEADERS_MS;
}

static void min_deadline(int64_t *d, int64_t v)
{
    if (v >= 0 && (*d < 0 || v < *d))
        *d = v;
}

/* Streamed bodies say they are alive often enough for the server's idle
 * timeout, which counts from the last thing it heard. */
static int64_t hb_every(const rhc_tunnel *t)
{
    return t->sess.idle_ms > 0 && alive_every(t) < HEARTBEAT_MS ? alive_every(t) : HEARTBEAT_MS;
}

/* Next time this tunnel needs a look without any fd event, or -1. */
static int64_t t_deadline(const rhc_tunnel *t)
{
    int64_t d = -1;
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);

    if (t->end.code)       /* due now, unless an R frame is on its way */
        return t->end.linger_until && (t->rq.spush || t->rq.duplex) ? t->end.linger_until : 0;
    if (t->local.olen > 0 && !t->local.out_blocked && !t->local.out_err)
        return 0;           /* output to flush (normally done in the same round) */
    if (sc && sc->send_paused && !sc->body_ended)
        min_deadline(&d, t->push.last_emit + hb_every(t));
    int64_t now = rh_now_ms();
    if (dr && !dr->recv_paused)
        min_deadline(&d, t->down.last_rx + pull_dead_ms(t, dr, now));
    min_deadline(&d, up_dead_at(t, now));
    if (t->down.repull_at)
        min_deadline(&d, t->down.repull_at);
    if (t->push.spush_at)
        min_deadline(&d, t->push.spush_at);
    min_deadline(&d, park_at(t));
    for (int i = 0; i < t->rq.nbpush; ++i)
        if (t->rq.bpush[i]->retry_at)
            min_deadline(&d, t->rq.bpush[i]->retry_at);
    min_deadline(&d, stall_deadline(t));
    min_deadline(&d, flush_deadline(t));
    min_deadline(&d, probe_deadline(t));
    if (t->sess.resume)
        min_deadline(&d, ack_deadline(t));
    if (t->xp.switching && t->rq.duplex)
        min_deadline(&d, t->xp.switch_since + SWITCH_WAIT_MS);
    if (t->xp.up_fallback_at)
        min_deadline(&d, t->xp.up_fallback_at);
    if (t->xp.hold_until)
        min_deadline(&d, t->xp.hold_until);
    return d;
}

/* The requests carrying unconfirmed up bytes went silent: they go again from
 * what the server confirmed, on new connections. */
static void up_dead(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *sc = up_streamer(t);
    int64_t ms = now - t->push.ack_wait_since;

    t_log(t, 1, "up bytes from %" PRIu64 " not confirmed for %" PRId64 " ms while the server "
          "answers: giving up the request that carries them", t->up.acked, ms);
    t->push.ack_wait_since = now;
    t->push.dead_ms = 2 * (t->push.dead_ms ? t->push.dead_ms : UP_DEAD_MS);
    if (t->push.dead_ms > UP_DEAD_MAX_MS)
        t->push.dead_ms = UP_DEAD_MAX_MS;
    if (sc) {   /* a body still going, or one that ended and waits for its answer */
        snprintf(sc->errbuf, sizeof(sc->errbuf), "up bytes not confirmed for %" PRId64 " ms",
                 ms);
        if (sc == t->rq.duplex) {
            t->down.fresh = 1;
            duplex_done(t, sc, CURLE_OPERATION_TIMEDOUT);   /* as if cut */
        } else {
            spush_done(t, sc, CURLE_OPERATION_TIMEDOUT);
        }
        return;
    }
    for (int i = 0; i < t->rq.nbpush; ++i) {
        struct rhc_req *r = t->rq.bpush[i];
        if (r->retry_at)
            continue;
        /* it waits out of the multi; t_timers sends it again (a new connection) */
        curl_multi_remove_handle(t->ctx->multi, r->h);
        if (r->p_off < t->up.acked)
            r->p_off = t->up.acked < r->p_end ? t->up.acked : r->p_end;
        ++r->tries;
        r->retry_at = now ? now : 1;
    }
}

static void t_timers(rhc_tunnel *t, int64_t now)
{
    struct rhc_req *sc = up_streamer(t), *dr = down_req(t);
    int64_t d;

    if (t->end.code)
        return;
    if (sc && sc->send_paused && !sc->body_ended &&
        now >= t->push.last_emit + hb_every(t)) {
        t->push.hb_pending = 1;
        unpause_send(sc);
    }
    if (!dr && t->down.repull_at && now >= t->down.repull_at) {
        t->down.repull_at = 0;
        start_down(t);
    }
    if (t->xp.up == RHC_XP_STREAM && !t->rq.spush && t->push.spush_at && now >= t->push.spush_at &&
        !t->up.done) {
        t->push.spush_at = 0;
        start_spush(t);
    }
    for (int i = 0; i < t->rq.nbpush && !t->end.code; ++i) {
        struct rhc_req *r = t->rq.bpush[i];
        if (!r->retry_at || now < r->retry_at)
            continue;
        /* bytes the server confirmed meanwhile (by later pushes) need not go again */
        uint64_t from = r->p_off > t->up.acked ? r->p_off : t->up.acked;
        if (from >= r->p_end && !r->p_fin) {
            bpush_forget(t, r);
            --i;
            continue;
        }
        if (from > r->p_end)
            from = r->p_end;
        struct rhc_req *n = bpush_new(t, from, r->p_end, r->p_fin, r->tries);
        if (!n) {
            t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
            break;
        }
        t->rq.bpush[i] = n;
        req_free(r);
    }
    dr = down_req(t);
    if (dr && !dr->recv_paused && now >= t->down.last_rx + pull_dead_ms(t, dr, now)) {
        int64_t ms = now - t->down.last_rx;
        if (t->sess.resume && retry_ok(t, t->down.retries)) {
            /* a path that went silent (no RST): a new request, the server resends */
            t_log(t, 1, "%s: nothing from the server for %" PRId64 " ms; resuming at offset %"
                  PRIu64 " on a new connection", kind_name[dr->kind], ms, t->down.off);
            snprintf(dr->errbuf, sizeof(dr->errbuf), "nothing from the server for %" PRId64
                     " ms", ms);
            t->down.fresh = 1;
            if (dr->kind == REQ_DUPLEX)
                duplex_done(t, dr, CURLE_OPERATION_TIMEDOUT);   /* as if cut */
            else
                down_again(t, dr, "silent");
        } else {
            t_fail(t, RHC_EXIT_LOST, "%s: nothing from the server for %" PRId64 " ms (not even "
                   "a heartbeat)", kind_name[dr->kind], ms);
        }
    }
    if (t->end.code)
        return;
    if ((d = up_dead_at(t, now)) >= 0 && now >= d)
        up_dead(t, now);
    if (t->end.code)
        return;
    if ((d = probe_deadline(t)) >= 0 && now >= d) {
        fallback_down(t, "no first frame on the response in time (2 s after its "
                         "headers, 12 s without): an intermediary holds the request or "
                         "its response back");
        return;
    }
    if (t->xp.hold_until && now >= t->xp.hold_until) {
        t->xp.hold_until = 0;
        t->xp.up_hold = 0;
    }
    if (t->xp.up_fallback_at && now >= t->xp.up_fallback_at) {
        fallback_up(t, t->xp.up_fallback_why ? t->xp.up_fallback_why
                       : "pulls go batch, so streamed pushes cannot be watched");
        return;
    }
    if ((d = flush_deadline(t)) >= 0 && now >= d) {
        /* Bytes of a body that got through before are stuck: an intermediary
         * may hold a partly filled buffer (haproxy's http-buffer-request over
         * HTTP/2 does): a padded heartbeat fills it. A target that is just slow
         * costs FLUSH_MAX x FLUSH_PAD bytes. */
        t->push.hb_pending = 1;
        t->push.hb_pad = FLUSH_PAD;
        ++t->push.pads;
        t->push.ack_wait_since = now;
        t_log(t, 2, "up bytes from %" PRIu64 " not confirmed for %d s: padded heartbeat",
              t->up.acked, ACK_STALL_MS / 1000);
        unpause_send(sc);
    }
    if ((d = stall_deadline(t)) >= 0 && now >= d) {
        fallback_up(t, "pushed bytes not acknowledged within 3 s: an intermediary holds "
                       "request bodies back");
        return;
    }
    if (t->xp.switching && t->rq.duplex && now >= t->xp.switch_since + SWITCH_WAIT_MS) {
        /* the ended duplex body was never confirmed: batch goes on from what was */
        t->xp.switching = 0;
        up_rewind(t, t->up.acked, "ended duplex body not confirmed");
    }
}

/* The ring can take local bytes now. */
static int up_can_read(const rhc_tunnel *t)
{
    if (!t->xp.up || t->up.eof || t->end.code || t->push.r_pending || t->up.done)
        return 0;
    if (up_read_off(t) - t->up.sent >= UP_AHEAD_MAX)
        return 0;
    return rh_ring_space(&t->up.ring) > 0;
}

static short t_events_in(const rhc_tunnel *t)
{
    return up_can_read(t) ? POLLIN : 0;
}

static short t_events_out(const rhc_tunnel *t)
{
    return (t->local.olen > 0 && t->local.out_blocked && !t->local.out_err) ? POLLOUT : 0;
}

static void t_local_event(rhc_tunnel *t, int fd, short revents)
{
    if (fd == t->local.in_fd && (revents & (POLLIN | POLLHUP | POLLERR)) && t_events_in(t))
        up_fill(t);     /* t_advance hands the bytes on */
    if (fd == t->local.out_fd && (revents & (POLLOUT | POLLHUP | POLLERR)) && t_events_out(t)) {
        t->local.out_blocked = 0;
        drain_out(t);
    }
}

rhc_tunnel *rhc_tunnel_start(rhc_ctx *c, int in_fd, int out_fd, enum rhc_local_kind kind,
                             const char *label, rhc_done_fn done, void *arg)
{
    rhc_tunnel *t = calloc(1, sizeof(*t));

    if (!t) {
        if (kind == RHC_LOCAL_SOCKET)
            close(in_fd);
        return NULL;
    }
    t->ctx = c;
    rh_ring_init(&t->up.ring, UPBUF_MAX);
    t->local.kind = kind;
    t->local.in_fd = in_fd;
    t->local.out_fd = out_fd;
    int fl = fcntl(in_fd, F_GETFL);
    t->local.in_nb = fl >= 0 && (fl & O_NONBLOCK);
    fl = fcntl(out_fd, F_GETFL);
    t->local.out_nb = fl >= 0 && (fl & O_NONBLOCK);
    t->done = done;
    t->done_arg = arg;
    snprintf(t->label, sizeof(t->label), "%s", label ? label : "");

    t->next = c->tunnels;
    if (c->tunnels)
        c->tunnels->prev = t;
    c->tunnels = t;
    ++c->ntunnels;

    t_log(t, 1, "open %s/%s", c->o->base_url, c->o->target);
    t->rq.open = start_open(t);
    if (!t->rq.open)
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
    /* A failure is reported by the next rhc_ctx_step, like any other. */
    return t;
}
/* ---------------------------------------------------------------- loop */

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    rhc_ctx *c = userp;
    size_t i;

    (void)e;
    (void)socketp;
    for (i = 0; i < c->ncfds; ++i)
        if (c->cfds[i].fd == s)
            break;
    if (what == CURL_POLL_REMOVE) {
        if (i < c->ncfds)
            c->cfds[i] = c->cfds[--c->ncfds];
        return 0;
    }
    if (i == c->ncfds) {
        if (c->ncfds == c->capcfds) {
            size_t cap = c->capcfds ? c->capcfds * 2 : 16;
            struct cfd *n = realloc(c->cfds, cap * sizeof(*n));
            if (!n)
                return -1;
            c->cfds = n;
            c->capcfds = cap;
        }
        c->cfds[c->ncfds++].fd = s;
    }
    c->cfds[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                                ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    rhc_ctx *c = userp;

    (void)m;
    c->curl_deadline = timeout_ms < 0 ? -1 : rh_now_ms() + timeout_ms;
    return 0;
}

/* libcurl before 8.1.0 copies the DATA of one h2 stream into the buffer of
 * another transfer while it works for that one, and after a pause hands out a
 * pointer into its connection buffer that later input overwrites: with several
 * long streams on one connection (tunnels, their acks) response bytes arrive
 * altered, 48 bytes in a MiB now and then (Debian 12's 7.88.1 does it here;
 * curl issue 10525 and the rewrite in 8.1.0). There each stream gets a
 * connection of its own: more TLS connections, never a wrong byte. */
static int h2_streams_per_conn(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && v->version_num >= H2_MUX_SAFE_CURL ? H2_STREAMS_PER_CONN : 1;
}

rhc_ctx *rhc_ctx_new(const struct rhc_opts *o)
{
    rhc_ctx *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->o = o;
    c->curl_deadline = -1;
    if (!(c->multi = curl_multi_init())) {
        free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Batch sessions keep several connections busy: keep them for reuse. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 64L);
    /* mod_http2 works on at most 6 streams of a connection at first and raises
     * that only as streams complete; a duplex stream lasts as long as its
     * tunnel, so a 7th would wait for ever: more go on a new connection. */
    curl_multi_setopt(c->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)h2_streams_per_conn());
    if ((c->share = curl_share_init())) {
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    c->pol.best_up = c->pol.best_down = RHC_XP_DUPLEX;
    c->pol.batch_max = BATCH_DATA_MAX;
    c->pol.spush_max = SPUSH_BODY_MAX;
    return c;
}

void rhc_ctx_free(rhc_ctx *c)
{
    if (!c)
        return;
    while (c->tunnels) {
        if (!c->tunnels->end.code)
            t_fail(c->tunnels, RHC_EXIT_ERROR, "stopped");
        c->tunnels->end.server_gone = 1;    /* no new requests now */
        c->tunnels->end.linger_until = 0;
        t_finish(c->tunnels);
    }
    while (c->closers) {
        struct rhc_req *r = c->closers;
        c->closers = r->next;
        req_free(r);
    }
    curl_multi_cleanup(c->multi);
    if (c->share)
        curl_share_cleanup(c->share);
    free(c->cfds);
    free(c->pfds);
    free(c->powner);
    free(c);
}

size_t rhc_ctx_tunnels(const rhc_ctx *c)
{
    return c->ntunnels;
}

size_t rhc_ctx_pending(const rhc_ctx *c)
{
    return c->ntunnels + c->nclosers;
}

void rhc_ctx_abort_all(rhc_ctx *c, const char *why)
{
    for (rhc_tunnel *t = c->tunnels; t; t = t->next)
        t_fail(t, RHC_EXIT_ERROR, "%s", why);
}

static int grow_pfds(rhc_ctx *c, size_t need)
{
    if (need <= c->cappfds)
        return 0;
    size_t cap = c->cappfds ? c->cappfds : 64;
    while (cap < need)
        cap *= 2;
    struct pollfd *p = realloc(c->pfds, cap * sizeof(*p));
    if (!p)
        return -1;
    c->pfds = p;
    rhc_tunnel **o = realloc(c->powner, cap * sizeof(*o));
    if (!o)
        return -1;
    c->powner = o;
    c->cappfds = cap;
    return 0;
}

static void reap(rhc_ctx *c)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *h = m->easy_handle;       /* m dies with the handle: copy first */
        CURLcode rc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
        if (priv)
            on_done(c, (struct rhc_req *)priv, rc);
    }
}

int rhc_ctx_step(rhc_ctx *c, struct pollfd *extra, size_t nextra, long max_wait_ms)
{
    size_t n = 0, tun_end, i;
    int64_t now = rh_now_ms();
    long wait = max_wait_ms;

    if (grow_pfds(c, nextra + 2 * c->ntunnels + c->ncfds + 1) < 0)
        return -1;
    for (i = 0; i < nextra; ++i) {
        c->pfds[n] = extra[i];
        c->pfds[n++].revents = 0;
    }
    for (rhc_tunnel *t = c->tunnels; t; t = t->next) {
        short ein = t_events_in(t), eout = t_events_out(t);
        int64_t d = t_deadline(t);
        if (d >= 0) {
            long w = d > now ? (long)(d - now) : 0;
            if (wait < 0 || w < wait)
                wait = w;
        }
        if (t->local.in_fd == t->local.out_fd && (ein | eout)) {
            c->pfds[n] = (struct pollfd){ .fd = t->local.in_fd, .events = (short)(ein | eout) };
            c->powner[n++] = t;
            continue;
        }
        if (ein) {
            c->pfds[n] = (struct pollfd){ .fd = t->local.in_fd, .events = ein };
            c->powner[n++] = t;
        }
        if (eout) {
            c->pfds[n] = (struct pollfd){ .fd = t->local.out_fd, .events = eout };
            c->powner[n++] = t;
        }
    }
    tun_end = n;
    for (i = 0; i < c->ncfds; ++i)
        if (c->cfds[i].events) {
            c->pfds[n] = (struct pollfd){ .fd = c->cfds[i].fd, .events = c->cfds[i].events };
            c->powner[n++] = NULL;
        }
    if (c->curl_deadline >= 0) {
        long w = c->curl_deadline > now ? (long)(c->curl_deadline - now) : 0;
        if (wait < 0 || w < wait)
            wait = w;
    }

    int rc = poll(c->pfds, (nfds_t)n, (int)(wait > 0x7fffffffL ? 0x7fffffffL : wait));
    if (rc < 0) {
        if (errno != EINTR)
            return -1;
        for (i = 0; i < n; ++i)
            c->pfds[i].revents = 0;
    }
    for (i = 0; i < nextra; ++i)
        extra[i].revents = c->pfds[i].revents;

    int running;
    for (i = tun_end; i < n; ++i) {
        short re = c->pfds[i].revents;
        if (!re || (re & POLLNVAL))
            continue;
        int flags = ((re & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
                    ((re & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                    ((re & POLLERR) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(c->multi, c->pfds[i].fd, flags, &running);
    }
    /* Tunnels are only freed below, so the owners are still valid here. */
    for (i = nextra; i < tun_end; ++i)
        if (c->pfds[i].revents)
            t_local_event(c->powner[i], c->pfds[i].fd, c->pfds[i].revents);

    now = rh_now_ms();
    for (rhc_tunnel *t = c->tunnels; t; t = t->next)
        t_timers(t, now);
    /* Unpausing sets curl's timer to 0, so this also runs what was unpaused. */
    if (c->curl_deadline >= 0 && rh_now_ms() >= c->curl_deadline) {
        c->curl_deadline = -1;
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    reap(c);

    now = rh_now_ms();
    for (rhc_tunnel *t = c->tunnels, *next; t; t = next) {
        next = t->next;
        t_advance(t, now);
    }
    /* Requests started above (a new pull, a close) show up through curl's timer. */
    return rc < 0 ? 0 : rc;
}
