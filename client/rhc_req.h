/* relay-https client: one HTTP request of a session (open, pull, push, duplex,
 * ack, close) as a curl easy handle with its answer as far as we care: status,
 * Relay-* headers, the start of an error body, and for frame responses and
 * streamed bodies their progress. */
#ifndef RHC_REQ_H
#define RHC_REQ_H

#include <stdint.h>
#include <curl/curl.h>

#include "rh_frame.h"
#include "rh_proto.h"
#include "rhc_tunnel.h"

#define PULL_BUFFERSIZE   (256L * 1024)   /* curl receive buffer of a pull */
#define PUSH_BUFFERSIZE   (256L * 1024)   /* curl upload buffer of a streamed body */
#define BODY_MAX          200             /* bytes of an error body kept for messages */

/* REQ_LISTEN: serve mode's long-poll for a client (rhc_serve.c); its answer
 * has an open's headers. REQ_WATCH: a route's watch (rhc_xp_watch.c). */
enum req_kind { REQ_OPEN, REQ_PULL, REQ_PUSH, REQ_DUPLEX, REQ_CLOSE, REQ_ACK, REQ_CHECK,
                REQ_LISTEN, REQ_WATCH };
extern const char *const kind_name[];   /* endpoint of each kind */

enum { GATE_NONE, GATE_WAITING, GATE_CONNECTING };  /* rhc_req.gate (rhc_gate.c) */

struct rhc_req {
    enum req_kind kind;
    CURL *h;
    curl_socket_t sock;         /* the socket curl last said it waits on, or
                                   CURL_SOCKET_BAD (rhc_csock.c) */
    struct curl_slist *hdrs;
    rhc_ctx *ctx;
    rhc_tunnel *t;              /* NULL for a detached close */
    const struct rhc_route *route; /* whose options it was made with */
    struct rhc_req *next;       /* list of detached closes */
    char label[112];            /* detached close: whose session (tunnel label) ... */
    char sid[RH_SID_LEN + 1];      /* ... and its public id */
    long status;                /* final HTTP status once its headers ended */
    int hdr_done;
    int64_t hdr_at;             /* ... then (a round trip after the start, or more) */
    int have_offset;
    char reason[16];            /* Relay-Reason of the answer (RH_REASON_TOKEN_*) */
    uint64_t offset;            /* Relay-Offset of the answer */
    int have_token;
    int resume_ok;              /* open: the server keeps bytes until acknowledged */
    int check_ok;               /* open: the server sends and checks C frames */
    uint64_t buffer;            /* open: Relay-Buffer */
    uint64_t window;            /* open: Relay-Window (bytes kept until acknowledged) */
    uint64_t idle_s;            /* open: Relay-Idle-Timeout */
    uint64_t poll_s;            /* open: Relay-Poll-Timeout (0: an older server) */
    int proxy_said;             /* the answer has a proxy's marks (X-Squid-Error, Proxy-Status) */
    char token[RH_TOKEN_LEN + 1];  /* Relay-Session of an open answer */
    size_t body_len;
    char body[BODY_MAX + 1];    /* start of an error body */
    char errbuf[CURL_ERROR_SIZE];
    int64_t started;
    int gate;                   /* GATE_*: waiting its turn, or connecting (rhc_gate.c) */
    struct rhc_req *gate_prev, *gate_next;  /* ... in line */

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
    uint64_t split_at;          /* duplex: its body ends here, a stream push goes on
                                   from here (duplex_split); 0: not split */
    int p_fin;                  /* batch: ends with F; streamed: F emitted */
    int p_r;                    /* streamed: R emitted */
    unsigned char *p_body;      /* batch: the frames */
    size_t p_len;
    int send_paused;
    int end_wanted;             /* streamed: end the body at the next chance */
    int refresh;                /* stream push ended only to learn the server's offset */
    int parking;                /* stream push ended because the tunnel is idle */
    int body_ended;             /* streamed: the read callback said end */
    int refused_unpaused;       /* streamed: unpaused once after an error answer */
    uint64_t emitted;           /* streamed: body bytes handed to curl */
    int acked_any;              /* streamed: the server confirmed bytes of this body */
    uint64_t a_sent;            /* stream push: the last A frame its body carried (0: none) */
    unsigned tries;             /* batch push, close: attempts so far */
    int integrity;              /* close: tells the server a check failed here */
    int64_t retry_at;           /* batch push: waits (out of the multi) until then */
    int64_t conf_at;            /* batch push: its data confirmed, its answer not come */

    /* watch: its group (p_body holds the request body) and its answer */
    struct rhc_wslot *w_slot;
    char *w_ans;
    size_t w_len, w_cap;
    int w_over;                 /* the answer was longer than any can be */
};

/* auto, no HTTP version asked for: a stream pull or push goes HTTP/1.1. Over
 * HTTP/2 mod_http2 costs the server about four times the CPU per byte of a
 * stream (docs/BENCHMARKS.md, item 11); HTTP/2 is for duplex and the short
 * requests. */
void req_stream_http1(struct rhc_req *r, const struct rhc_opts *o);

/* Builds a request with everything the options ask for; the caller adds its own
 * headers and options, then req_go. NULL: out of memory. */
struct rhc_route;
struct rhc_req *req_new(rhc_ctx *c, const struct rhc_route *route, rhc_tunnel *t,
                        enum req_kind kind, const char *token);
void req_free(struct rhc_req *r);      /* also takes it out of the multi */
int add_header(struct rhc_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void req_empty_body(struct rhc_req *r);
int req_streamed_body(struct rhc_req *r);
int req_go(struct rhc_req *r);          /* into the multi handle */
void unpause_send(struct rhc_req *r);
void unpause_recv(struct rhc_req *r);

/* r waits its turn for a connection, out of the multi (rhc_gate.c): nothing
 * can be judged of the server by it yet. */
static inline int req_waiting(const struct rhc_req *r)
{
    return r && r->gate == GATE_WAITING;
}

/* r's connection is not up yet: the tunnel gives it CONNECT_DEAD_MS at least
 * before it calls it dead (its clocks start again once it is up). */
static inline int req_connecting(const struct rhc_req *r)
{
    return r && r->gate == GATE_CONNECTING;
}

/* The write callback of requests whose body is only read for error text. */
size_t body_cb(char *ptr, size_t size, size_t nmemb, void *ud);

#endif
