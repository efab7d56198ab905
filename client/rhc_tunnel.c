/* relay-https client: one tunnel session = open, then one streamed push (up) and
 * one long pull (down) at once, all on one curl multi handle driven by our own
 * poll() loop through curl_multi_socket_action. See docs/PROTOCOL.md.
 *
 * Nothing blocks: local fds are non-blocking (or, for a tty/file on stdio, only
 * touched when poll says so), curl callbacks never wait, and flow control in
 * both directions uses curl's pause: the push read callback pauses when the local
 * side has nothing, the pull write callback pauses while 256 KiB of undelivered
 * bytes wait for the local side. Callbacks only record what happened; tunnels
 * are started, restarted and freed from the loop, outside of any curl callback. */
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

#include "rh_frame.h"
#include "rhc_tunnel.h"

#define PULL_BUFFERSIZE   (256L * 1024)   /* curl receive buffer of a pull */
#define PUSH_BUFFERSIZE   (256L * 1024)   /* curl upload buffer of a push */
#define OBUF_SOFT         (256u * 1024)   /* pull pauses while this much waits locally */
#define OBUF_MAX          (4u * 1024 * 1024) /* hard cap: soft cap + one curl callback */
#define HEARTBEAT_MS      20000           /* H frame after this much push silence */
#define PULL_DEAD_MS      60000           /* server heartbeats every 20 s: 60 s silence = dead */
#define OPEN_TIMEOUT_MS   30000
#define CLOSE_TIMEOUT_MS  5000
#define LINGER_MS         5000            /* time for an R frame to leave before teardown */
#define TOKEN_LEN         48
#define SID_LEN           16
#define BODY_MAX          200             /* bytes of an error body kept for messages */

enum req_kind { REQ_OPEN, REQ_PULL, REQ_PUSH, REQ_CLOSE };
static const char *const kind_name[] = { "open", "pull", "push", "close" };

struct rhc_req {
    enum req_kind kind;
    CURL *h;
    struct curl_slist *hdrs;
    rhc_ctx *ctx;
    rhc_tunnel *t;              /* NULL for a detached close */
    struct rhc_req *next;       /* list of detached closes */
    char label[144];            /* detached close: whose session */
    long status;                /* final HTTP status once its headers ended */
    int hdr_done;
    int have_offset;
    uint64_t offset;            /* Relay-Offset */
    int have_token;
    char token[TOKEN_LEN + 1];  /* Relay-Session of an open answer */
    size_t body_len;
    char body[BODY_MAX + 1];    /* start of an error body */
    char errbuf[CURL_ERROR_SIZE];
};

struct rhc_tunnel {
    rhc_ctx *ctx;
    rhc_tunnel *prev, *next;
    char label[112];
    enum rhc_local_kind kind;
    int in_fd, out_fd;
    int in_nb, out_nb;          /* fd is non-blocking: read/write until EAGAIN */
    rhc_done_fn done;
    void *done_arg;

    char token[TOKEN_LEN + 1];
    char sid[SID_LEN + 1];      /* public part of the token, the only part we print */
    struct rhc_req *open, *pull, *push;

    /* up: local -> push */
    uint64_t up_off;            /* bytes framed into the push so far */
    int up_eof;                 /* local read side gave EOF */
    int up_fin_sent, up_r_sent; /* F / R frame handed to curl */
    int up_r_pending;           /* local side failed: send R */
    int up_done;                /* push answered 200 after F */
    int push_paused;            /* read callback paused: waiting for local data */
    uint64_t push_emitted;      /* body bytes handed to curl by this push */
    int hb_pending;
    int64_t push_last_emit;

    /* down: pull -> local */
    rh_frame_parser parser;
    uint64_t down_off;          /* data bytes received from pulls so far */
    int down_fin, down_end;     /* F / E frame seen */
    int pull_paused;            /* write callback paused: obuf waits for the local side */
    unsigned pulls;             /* pulls started (all but the first follow an E) */
    unsigned repull_409;        /* 409 answers to a re-pull in a row */
    unsigned pull_retries;      /* pulls lost before any answer, in a row */
    int pull_fresh;             /* next pull on a new connection */
    int64_t repull_at;          /* 0, or when to retry a re-pull */
    unsigned open_retries;
    int64_t pull_last_rx;
    int out_shut;               /* local output closed after F */
    int out_err;
    int out_blocked;            /* last write hit EAGAIN: wait for POLLOUT */
    unsigned char *obuf;        /* bytes the local side could not take yet */
    size_t ocap, ohead, olen;

    /* end */
    int fail_code;              /* first failure wins; 0 = none */
    int server_gone;            /* the server already dropped the session */
    int64_t linger_until;       /* failing, but let an R frame go out first */
    char fail_msg[768];
};

struct cfd {
    curl_socket_t fd;
    short events;
};

struct rhc_ctx {
    const struct rhc_opts *o;
    CURLM *multi;
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
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- messages */

/* Keeps the first line of a server body, printable ASCII only. */
static void body_line(const struct rhc_req *r, char *out, size_t outsz)
{
    size_t n = 0;

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

    if (t->fail_code)
        return;
    t->fail_code = code;
    va_start(ap, fmt);
    vsnprintf(t->fail_msg, sizeof(t->fail_msg), fmt, ap);
    va_end(ap);
}

/* Exit code for an HTTP answer other than the expected one. */
static int http_exit_code(const struct rhc_req *r, int from_module)
{
    long s = r->status;

    if (s == 401 || s == 403)
        return RHC_EXIT_AUTH;
    if (s == 407)
        return RHC_EXIT_PROXY;
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
static const char *hint(const rhc_tunnel *t, int code, long status)
{
    const struct rhc_opts *o = t->ctx->o;

    if (code == RHC_EXIT_AUTH && status == 401 && !o->user)
        return " (the server wants credentials: -u USER:PASS)";
    if (code == RHC_EXIT_PROXY && status == 407 && !o->proxy_user)
        return " (the proxy wants credentials: -U USER:PASS)";
    if (code == RHC_EXIT_TLS && status == 0 && !o->cacert && !o->insecure)
        return " (give its CA with --cacert FILE; behind a TLS-inspecting proxy, the proxy's CA)";
    return "";
}

static void fail_http(rhc_tunnel *t, const struct rhc_req *r, const char *what)
{
    char line[BODY_MAX + 1];

    body_line(r, line, sizeof(line));
    int from_module = !strncmp(line, "mod_relay_https:", 16);
    int code = http_exit_code(r, from_module);
    t_fail(t, code, "%s: HTTP %ld%s%s%s", what, r->status,
           line[0] ? ": " : "", line, hint(t, code, r->status));
    if (r->status == 410 || r->status == 416)
        t->server_gone = 1;     /* the server has already forgotten the session */
}

static int curl_exit_code(const struct rhc_req *r, CURLcode rc)
{
    long cc = 0;
    int in_session = r->kind != REQ_OPEN;

    if (curl_easy_getinfo(r->h, CURLINFO_HTTP_CONNECTCODE, &cc) == CURLE_OK && cc &&
        (cc < 200 || cc > 299))
        return RHC_EXIT_PROXY;
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
    long cc = 0;

    curl_easy_getinfo(r->h, CURLINFO_HTTP_CONNECTCODE, &cc);
    t_fail(t, code, "%s: %s%s", what, r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc),
           hint(t, code, code == RHC_EXIT_PROXY ? cc :
                         rc == CURLE_PEER_FAILED_VERIFICATION ? 0 : -1));
}

/* ---------------------------------------------------------------- curl callbacks */

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

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

static int pull_headers_done(struct rhc_req *r);

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nitems;
    const char *v;
    size_t vl;

    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* A new response (after a 1xx or an auth round): forget the last one. */
        r->status = 0;
        r->hdr_done = 0;
        r->have_offset = 0;
        r->have_token = 0;
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
        if (r->kind == REQ_PULL && r->t && !pull_headers_done(r))
            return 0;
        return len;
    }
    if (r->kind == REQ_PULL && r->t)
        r->t->pull_last_rx = now_ms();
    if (header_is(buf, len, "Relay-Offset", &v, &vl)) {
        r->have_offset = parse_u64(v, vl, &r->offset);
    } else if (r->kind == REQ_OPEN && header_is(buf, len, "Relay-Session", &v, &vl)) {
        int ok = vl == TOKEN_LEN;
        for (size_t i = 0; ok && i < vl; ++i)
            ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f') ||
                 (v[i] >= 'A' && v[i] <= 'F');
        if (ok) {
            memcpy(r->token, v, TOKEN_LEN);
            r->token[TOKEN_LEN] = '\0';
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
        if (mark != '*' && header_is(p, n, "Relay-Session", &v, &vl))
            rhc_log(2, "%s%s%c Relay-Session: %.*s<secret>", who, *who ? ": " : "", mark,
                    (int)(vl < SID_LEN ? vl : SID_LEN), v);
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

static size_t pull_write(char *ptr, size_t size, size_t nmemb, void *ud);
static size_t push_read(char *buf, size_t size, size_t nitems, void *ud);
static int push_seek(void *ud, curl_off_t offset, int origin);

/* Builds a request with everything the options ask for, not yet added to multi. */
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
    if (add_header(r, "Relay-Version: 1") < 0)
        goto leave;
    if (token && add_header(r, "Relay-Session: %s", token) < 0)
        goto leave;
    if (kind == REQ_PULL && add_header(r, "Relay-Ack: %" PRIu64, t->down_off) < 0)
        goto leave;
    /* push: POST of unknown size, so libcurl sends it chunked over HTTP/1.1 and
     * as plain DATA frames over HTTP/2 (a hand-made Transfer-Encoding header
     * would be wrong there). */
    if (kind == REQ_PUSH &&
        (add_header(r, "Relay-Offset: %" PRIu64, t->up_off) < 0 ||
         add_header(r, "Content-Type: application/octet-stream") < 0 ||
         add_header(r, "Expect:") < 0))   /* no 100-continue round trip */
        goto leave;
    /* Empty POST bodies: no form content type for inspecting proxies to parse. */
    if (kind != REQ_PUSH && add_header(r, "Content-Type:") < 0)
        goto leave;

    CURL *h = r->h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, RHC_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, o->http_version);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* Pushes and pulls idle for long; keepalive finds a dead path. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 15L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
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
        /* Basic is sent at once: a streamed push body cannot be rewound for a
         * challenge round. */
        curl_easy_setopt(h, CURLOPT_USERPWD, o->user);
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    }
    if (o->proxy)   /* else libcurl reads https_proxy, all_proxy, no_proxy itself */
        curl_easy_setopt(h, CURLOPT_PROXY, o->proxy);
    if (o->proxy_user) {
        curl_easy_setopt(h, CURLOPT_PROXYUSERPWD, o->proxy_user);
        curl_easy_setopt(h, CURLOPT_PROXYAUTH, (long)CURLAUTH_ANY);
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

    if (t && ((kind == REQ_PULL && t->pull_fresh) || (kind == REQ_OPEN && t->open_retries)))
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
    switch (kind) {
    case REQ_PUSH:
        curl_easy_setopt(h, CURLOPT_READFUNCTION, push_read);
        curl_easy_setopt(h, CURLOPT_READDATA, r);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, push_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
        /* A pooled keep-alive connection may be closing just as we reuse it (a
         * busy Apache drops idle ones); curl then resends the request, which a
         * streamed body cannot do. A new connection has no such race. */
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, PUSH_BUFFERSIZE);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        break;
    case REQ_PULL:
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, PULL_BUFFERSIZE);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, pull_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        break;
    case REQ_OPEN:
    case REQ_CLOSE: {
        long total = kind == REQ_OPEN ? OPEN_TIMEOUT_MS : CLOSE_TIMEOUT_MS;
        if (kind == REQ_OPEN && total < o->connect_timeout_ms + 15000)
            total = o->connect_timeout_ms + 15000;
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        break;
    }
    }
    if (curl_multi_add_handle(c->multi, h) != CURLM_OK)
        goto leave;
    ok = 1;
leave:
    free(url);
    if (!ok) {
        if (r->h) {
            curl_easy_cleanup(r->h);
            r->h = NULL;
        }
        req_free(r);
        return NULL;
    }
    return r;
}

/* ---------------------------------------------------------------- local side */

static int fd_ready(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev, .revents = 0 };

    return poll(&p, 1, 0) > 0;
}

static void unpause_push(rhc_tunnel *t)
{
    if (t->push && t->push_paused) {
        t->push_paused = 0;
        curl_easy_pause(t->push->h, CURLPAUSE_CONT);
    }
}

/* The local side failed: tell the server with an R frame on the push when it is
 * still open (the teardown waits a little for it), else the teardown POSTs close. */
static void local_abort(rhc_tunnel *t, const char *what, int err)
{
    t_fail(t, RHC_EXIT_LOCAL, "%s: %s", what, strerror(err));
    if (t->push && !t->up_fin_sent && !t->up_r_sent && !t->up_r_pending) {
        t->up_r_pending = 1;
        t->linger_until = now_ms() + LINGER_MS;
        /* t_advance unpauses the push: this may run inside another handle's
         * callback, where pausing a different handle is better avoided. */
    }
}

static int obuf_append(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->ohead && t->olen == 0)
        t->ohead = 0;
    if (t->ohead + t->olen + n > t->ocap) {
        if (t->ohead) {
            memmove(t->obuf, t->obuf + t->ohead, t->olen);
            t->ohead = 0;
        }
        if (t->olen + n > t->ocap) {
            size_t cap = (t->olen + n + 16383) & ~(size_t)16383;
            if (cap > OBUF_MAX)
                return -1;
            if (cap < 2 * t->ocap)      /* grow geometrically, within the cap */
                cap = 2 * t->ocap < OBUF_MAX ? 2 * t->ocap : OBUF_MAX;
            unsigned char *nb = realloc(t->obuf, cap);
            if (!nb)
                return -1;
            t->obuf = nb;
            t->ocap = cap;
        }
    }
    memcpy(t->obuf + t->ohead + t->olen, p, n);
    t->olen += n;
    return 0;
}

/* Hands down bytes to the local side. A non-blocking fd gets them through obuf,
 * written once per loop round (after curl handed over all it had, typically a
 * whole receive buffer in 16 KiB callbacks): fewer, larger writes. The pull
 * pauses while OBUF_SOFT bytes wait, so obuf stays bounded. A blocking fd (tty,
 * file on stdio) is written at once. */
static void deliver(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->out_err || t->out_shut)
        return;
    if (t->out_nb) {
        if (obuf_append(t, p, n) < 0) {
            t->out_err = ENOBUFS;
            t_fail(t, RHC_EXIT_ERROR, "internal: local output buffer full");
        }
        return;
    }
    while (n > 0) {
        ssize_t w = write(t->out_fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        t->out_err = w < 0 ? errno : EIO;
        local_abort(t, t->kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->out_err);
        return;
    }
}

/* Local fd writable: flush obuf, then let the pull continue. */
static void drain_out(rhc_tunnel *t)
{
    while (t->olen > 0 && !t->out_err) {
        ssize_t w = write(t->out_fd, t->obuf + t->ohead, t->olen);
        if (w > 0) {
            t->ohead += (size_t)w;
            t->olen -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->out_blocked = 1;
            break;
        }
        t->out_err = w < 0 ? errno : EIO;
        local_abort(t, t->kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->out_err);
        return;
    }
    if (t->olen == 0)
        t->ohead = 0;
    /* Resume below half the cap, so that pause/unpause does not ping-pong. */
    if (t->olen < OBUF_SOFT / 2 && t->pull && t->pull_paused && !t->fail_code) {
        t->pull_paused = 0;
        t->pull_last_rx = now_ms();
        /* May call pull_write at once with the data curl held back. */
        curl_easy_pause(t->pull->h, CURLPAUSE_CONT);
    }
}

/* stdio flags saved by rhc_stdio_prepare, restored on exit. */
static int stdio_saved[2] = { -1, -1 };
static int stdio_shared;   /* fd 0 and 1 are the same file: restore via fd 0 only */

static void shut_output(rhc_tunnel *t)
{
    struct stat st;

    t->out_shut = 1;
    if (t->kind == RHC_LOCAL_SOCKET) {
        shutdown(t->out_fd, SHUT_WR);
        return;
    }
    /* stdout: half-close a socket, and in any case let go of fd 1 (whoever reads
     * it sees EOF) while keeping the number taken, so that no later socket ends
     * up as fd 1. */
    if (fstat(t->out_fd, &st) == 0 && S_ISSOCK(st.st_mode))
        shutdown(t->out_fd, SHUT_WR);
    if (stdio_saved[1] >= 0 && !stdio_shared)
        fcntl(t->out_fd, F_SETFL, stdio_saved[1]);
    stdio_saved[1] = -1;
    int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, t->out_fd);
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

/* ---------------------------------------------------------------- push (up) */

static size_t emit(char *buf, int type, const void *payload, size_t n)
{
    rh_frame_hdr((unsigned char *)buf, type, n);
    if (n)
        memcpy(buf + RH_FRAME_HDR, payload, n);
    return RH_FRAME_HDR + n;
}

/* curl wants push body bytes: read the local side straight into curl's buffer
 * behind a 4-byte frame header (no extra copy), up to the room curl gives. */
static size_t push_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t room = size * nitems;
    size_t used = 0;

    if (t->up_fin_sent || t->up_r_sent)
        return 0;                               /* the body ends after F or R */
    if (t->fail_code && !t->up_r_pending) {
        t->push_paused = 1;                     /* tearing down: stay quiet */
        return CURL_READFUNC_PAUSE;
    }
    if (t->hb_pending && room >= RH_FRAME_HDR) {
        used += emit(buf, RH_FRAME_HEARTBEAT, NULL, 0);
        t->hb_pending = 0;
    }
    /* One readv straight into curl's buffer: 64 KiB payload slots with a 4-byte
     * gap before each for its frame header. Only the last slot used can be
     * short, so the frames come out contiguous. */
    while (!t->up_eof && !t->up_r_pending && room - used > RH_FRAME_HDR) {
        struct iovec iov[8];
        int niov = 0;
        size_t pos = used;
        while (niov < 8 && room - pos > RH_FRAME_HDR) {
            size_t slot = room - pos - RH_FRAME_HDR;
            if (slot > RH_FRAME_MAX)
                slot = RH_FRAME_MAX;
            iov[niov].iov_base = buf + pos + RH_FRAME_HDR;
            iov[niov++].iov_len = slot;
            pos += RH_FRAME_HDR + slot;
        }
        if (!t->in_nb && !fd_ready(t->in_fd, POLLIN))
            break;
        ssize_t n = readv(t->in_fd, iov, niov);
        if (n > 0) {
            size_t left = (size_t)n;
            t->up_off += (uint64_t)n;
            for (int i = 0; i < niov && left > 0; ++i) {
                size_t take = left < iov[i].iov_len ? left : iov[i].iov_len;
                rh_frame_hdr((unsigned char *)buf + used, RH_FRAME_DATA, take);
                used += RH_FRAME_HDR + take;
                left -= take;
            }
            break;      /* short or full: either way curl has work now */
        }
        if (n == 0) {
            t->up_eof = 1;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        local_abort(t, t->kind == RHC_LOCAL_STDIO ? "read from stdin" : "read from local connection",
                    errno);
        break;
    }
    if (t->up_r_pending) {
        static const char why[] = "client: local connection failed";
        if (room - used >= RH_FRAME_HDR + sizeof(why) - 1) {
            used += emit(buf + used, RH_FRAME_RESET, why, sizeof(why) - 1);
            t->up_r_pending = 0;
            t->up_r_sent = 1;
        }
    } else if (t->up_eof && !t->up_fin_sent && room - used >= RH_FRAME_HDR) {
        used += emit(buf + used, RH_FRAME_FIN, NULL, 0);
        t->up_fin_sent = 1;
        t_log(t, 1, "local EOF after %" PRIu64 " bytes: sent F", t->up_off);
    }
    if (used == 0) {
        t->push_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    t->push_last_emit = now_ms();
    t->push_emitted += used;
    return used;
}

/* curl wants to send the body again (a retried request): fine as long as no
 * byte of it was produced, since the bytes read from the local side are gone. */
static int push_seek(void *ud, curl_off_t offset, int origin)
{
    struct rhc_req *r = ud;

    if (offset == 0 && origin == SEEK_SET && r->t->push_emitted == 0)
        return CURL_SEEKFUNC_OK;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* ---------------------------------------------------------------- pull (down) */

static int pull_headers_done(struct rhc_req *r)
{
    rhc_tunnel *t = r->t;

    if (r->status != 200)
        return 1;                   /* the body is an error text; judged when done */
    t->repull_409 = 0;
    t->pull_retries = 0;
    t->pull_fresh = 0;
    if (!r->have_offset || r->offset != t->down_off) {
        t_fail(t, RHC_EXIT_LOST, "pull: server resumes at offset %s%" PRIu64 ", expected %" PRIu64,
               r->have_offset ? "" : "(missing) ", r->have_offset ? r->offset : 0, t->down_off);
        return 0;
    }
    return 1;
}

static size_t pull_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t len = size * nmemb;
    size_t off = 0;

    if (r->status != 200)
        return body_cb(ptr, size, nmemb, ud);
    if (t->fail_code)
        return 0;                   /* tearing down: stop this transfer */
    if (t->olen >= OBUF_SOFT) {
        /* Nothing of this call is consumed; curl hands the same bytes again on
         * unpause, so the parser sees every byte exactly once. */
        t->pull_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    t->pull_last_rx = now_ms();
    while (off < len) {
        rh_frame_event ev;
        size_t n = rh_frame_parse(&t->parser, (const unsigned char *)ptr + off, len - off,
                                  "DHFRE", &ev);
        off += n;
        if (ev.type != RH_FEV_NONE && ev.type != RH_FEV_ERROR && (t->down_fin || t->down_end)) {
            t_fail(t, RHC_EXIT_LOST, "pull: protocol error: frame after %s",
                   t->down_fin ? "F" : "E");
            return 0;
        }
        switch (ev.type) {
        case RH_FEV_NONE:
            if (n == 0)
                off = len;          /* cannot happen: the parser takes all it gets */
            break;
        case RH_FEV_DATA:
            t->down_off += ev.len;
            deliver(t, ev.data, ev.len);
            break;
        case RH_FEV_HEARTBEAT:
            break;
        case RH_FEV_FIN:
            t->down_fin = 1;
            t_log(t, 1, "server finished after %" PRIu64 " bytes (F)", t->down_off);
            break;
        case RH_FEV_END:
            t->down_end = 1;
            break;
        case RH_FEV_RESET: {
            char why[256];
            size_t k = 0;
            for (size_t i = 0; i < ev.len && k + 1 < sizeof(why); ++i)
                why[k++] = (ev.data[i] >= 0x20 && ev.data[i] < 0x7f) ? (char)ev.data[i] : '?';
            why[k] = '\0';
            t_fail(t, RHC_EXIT_LOST, "session reset by the server%s%s", k ? ": " : "", why);
            t->server_gone = 1;
            return 0;
        }
        case RH_FEV_ACK:            /* not allowed down; the parser rejects it */
        case RH_FEV_ERROR:
            t_fail(t, RHC_EXIT_LOST, "pull: protocol error: %s",
                   t->parser.error ? t->parser.error : "bad frame");
            return 0;
        }
        if (t->fail_code)
            return 0;
    }
    return len;
}

/* ---------------------------------------------------------------- session */

static int start_pull(rhc_tunnel *t)
{
    rh_frame_parser_init(&t->parser);
    t->down_end = 0;
    t->pull_paused = 0;
    t->pull_last_rx = now_ms();
    t->repull_at = 0;
    ++t->pulls;
    t->pull = req_new(t->ctx, t, REQ_PULL, t->token);
    if (!t->pull) {
        t_fail(t, RHC_EXIT_ERROR, "pull: cannot start a request (out of memory)");
        return -1;
    }
    t_log(t, 2, "pull from offset %" PRIu64, t->down_off);
    return 0;
}

static int start_push(rhc_tunnel *t)
{
    t->push_paused = 0;
    t->push_emitted = 0;
    t->push_last_emit = now_ms();
    t->push = req_new(t->ctx, t, REQ_PUSH, t->token);
    if (!t->push) {
        t_fail(t, RHC_EXIT_ERROR, "push: cannot start a request (out of memory)");
        return -1;
    }
    return 0;
}

static void start_close(rhc_ctx *c, const char *token, const char *label, const char *sid)
{
    struct rhc_req *r = req_new(c, NULL, REQ_CLOSE, token);

    if (!r)
        return;
    snprintf(r->label, sizeof(r->label), "%s%ssession %s", label, *label ? ": " : "", sid);
    r->next = c->closers;
    c->closers = r;
    ++c->nclosers;
}

/* The request's connection died before any answer came (typically a pooled
 * keep-alive connection the server was closing; curl's own retries may all land
 * on such connections when a busy server drops its idle ones). */
static int died_unanswered(const struct rhc_req *r, CURLcode rc)
{
    return !r->hdr_done && (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
                            rc == CURLE_GOT_NOTHING);
}

static void on_done(rhc_ctx *c, struct rhc_req *r, CURLcode rc)
{
    rhc_tunnel *t = r->t;
    char what[384];

    if (!t) {   /* detached close */
        if (rc != CURLE_OK)
            rhc_info("%s: close: %s", r->label, r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        else
            rhc_info("%s: close: HTTP %ld", r->label, r->status);
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
        snprintf(what, sizeof(what), "open %.300s/%s", c->o->base_url, c->o->target);
        if (died_unanswered(r, rc) && t->open_retries < 2 && !t->fail_code) {
            /* At worst the server made a session we never hear of; it idles out. */
            t_log(t, 1, "open: %s; trying again on a new connection",
                  r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
            req_free(r);
            ++t->open_retries;
            if (!(t->open = req_new(c, t, REQ_OPEN, NULL)))
                t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
            break;
        }
        if (r->hdr_done && r->status != 201)
            fail_http(t, r, what);
        else if (rc != CURLE_OK)
            fail_curl(t, r, rc, what);
        else if (!r->have_token)
            t_fail(t, RHC_EXIT_ERROR, "%s: HTTP 201 without a valid Relay-Session", what);
        if (t->fail_code)
            break;
        memcpy(t->token, r->token, sizeof(t->token));
        memcpy(t->sid, r->token, SID_LEN);
        t->sid[SID_LEN] = '\0';
        req_free(r);
        t->open = NULL;
        t_log(t, 1, "session %s opened", t->sid);
        if (start_pull(t) == 0)
            start_push(t);
        break;
    case REQ_PULL:
        if (t->fail_code)
            break;
        /* A re-pull right after E may reach the server before it has finished
         * with the pull that sent the E: "second pull". No byte was handed out,
         * so trying again shortly is safe. */
        if (r->hdr_done && r->status == 409 && t->pulls > 1 && t->repull_409 < 3) {
            req_free(r);
            t->pull = NULL;
            t->repull_at = now_ms() + (50 << t->repull_409++);
            t_log(t, 2, "pull: HTTP 409 after E, trying again");
            break;
        }
        /* No byte came, so none can be lost: pull again with the same ack (a
         * server that did send some answers 416, never misplaced bytes). */
        if (died_unanswered(r, rc) && t->pull_retries < 2) {
            t_log(t, 1, "pull: %s; trying again on a new connection",
                  r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
            req_free(r);
            t->pull = NULL;
            t->pull_fresh = 1;
            t->repull_at = now_ms() + (50 << t->pull_retries++);
            break;
        }
        /* After F or E the frames have said all; how the response ended (a
         * missing last chunk, say) does not matter any more. */
        if (r->hdr_done && r->status != 200)
            fail_http(t, r, "pull");
        else if (!t->down_end && !t->down_fin && rc != CURLE_OK)
            fail_curl(t, r, rc, "pull");
        else if (!t->down_end && !t->down_fin)
            t_fail(t, RHC_EXIT_LOST, "pull: response ended without F or E (connection cut?)");
        if (t->fail_code)
            break;
        req_free(r);
        t->pull = NULL;
        if (t->down_end) {
            t_log(t, 2, "pull ended (E) at offset %" PRIu64 ", pulling again", t->down_off);
            start_pull(t);
        }
        break;
    case REQ_PUSH:
        t->linger_until = 0;    /* nothing more can go out on this push */
        if (t->up_r_sent) {
            if (rc == CURLE_OK)
                t->server_gone = 1;     /* the server got our R */
            break;
        }
        if (t->fail_code)
            break;
        if (r->hdr_done && r->status != 200)
            fail_http(t, r, "push");
        else if (rc != CURLE_OK)
            fail_curl(t, r, rc, "push");
        else if (!t->up_fin_sent)
            t_fail(t, RHC_EXIT_LOST, "push: answered before the body ended");
        else if (r->have_offset && r->offset != t->up_off)
            t_fail(t, RHC_EXIT_LOST, "push: server accepted %" PRIu64 " of %" PRIu64 " bytes",
                   r->offset, t->up_off);
        if (t->fail_code)
            break;
        t->up_done = 1;
        req_free(r);
        t->push = NULL;
        break;
    case REQ_CLOSE:
        break;
    }
}

static void t_finish(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;
    int code = t->fail_code;

    req_free(t->open);
    req_free(t->pull);
    req_free(t->push);
    t->open = t->pull = t->push = NULL;
    if (code && t->token[0] && !t->server_gone)
        start_close(c, t->token, t->label, t->sid);
    if (t->kind == RHC_LOCAL_SOCKET) {
        if (code) {
            /* A broken tunnel must not look like a clean end to the application. */
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(t->in_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(t->in_fd);
    }
    if (code)
        t_log(t, 0, "%s", t->fail_msg);
    else
        t_log(t, 1, "session %s closed cleanly (up %" PRIu64 " bytes, down %" PRIu64 " bytes)",
              t->sid, t->up_off, t->down_off);

    if (t->prev)
        t->prev->next = t->next;
    else
        c->tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    --c->ntunnels;
    if (t->done)
        t->done(t->done_arg, code);
    free(t->obuf);
    free(t);
}

/* Moves a tunnel on after events; frees it when it is over. */
static void t_advance(rhc_tunnel *t, int64_t now)
{
    if (t->olen > 0 && !t->out_blocked && !t->out_err && !t->fail_code)
        drain_out(t);
    /* Something to send while the push waits for local data: wake it. */
    if (t->push && t->push_paused &&
        (t->up_r_pending || t->hb_pending || (t->up_eof && !t->up_fin_sent)))
        unpause_push(t);
    if (t->fail_code) {
        if (t->linger_until && t->push && now < t->linger_until)
            return;     /* give the R frame its chance */
        t_finish(t);
        return;
    }
    if (t->down_fin && t->olen == 0 && !t->out_shut)
        shut_output(t);
    if (t->out_shut && t->up_done && !t->pull)
        t_finish(t);
}

/* Next time this tunnel needs a look without any fd event, or -1. */
static int64_t t_deadline(const rhc_tunnel *t)
{
    int64_t d = -1;

    if (t->fail_code)       /* due now, unless an R frame is on its way */
        return t->linger_until && t->push ? t->linger_until : 0;
    if (t->olen > 0 && !t->out_blocked && !t->out_err)
        return 0;           /* output to flush (normally done in the same round) */
    if (t->push && t->push_paused && !t->up_fin_sent)
        d = t->push_last_emit + HEARTBEAT_MS;
    if (t->pull && !t->pull_paused) {
        int64_t p = t->pull_last_rx + PULL_DEAD_MS;
        if (d < 0 || p < d)
            d = p;
    }
    if (t->repull_at && (d < 0 || t->repull_at < d))
        d = t->repull_at;
    return d;
}

static void t_timers(rhc_tunnel *t, int64_t now)
{
    if (t->fail_code)
        return;
    if (t->push && t->push_paused && !t->up_fin_sent && now >= t->push_last_emit + HEARTBEAT_MS) {
        t->hb_pending = 1;
        unpause_push(t);
    }
    if (!t->pull && t->repull_at && now >= t->repull_at)
        start_pull(t);
    if (t->pull && !t->pull_paused && now >= t->pull_last_rx + PULL_DEAD_MS)
        t_fail(t, RHC_EXIT_LOST, "pull: nothing from the server for %d s (not even a heartbeat)",
               PULL_DEAD_MS / 1000);
}

static short t_events_in(const rhc_tunnel *t)
{
    return (t->push && t->push_paused && !t->up_eof && !t->fail_code) ? POLLIN : 0;
}

static short t_events_out(const rhc_tunnel *t)
{
    return (t->olen > 0 && t->out_blocked && !t->out_err) ? POLLOUT : 0;
}

static void t_local_event(rhc_tunnel *t, int fd, short revents)
{
    if (fd == t->in_fd && (revents & (POLLIN | POLLHUP | POLLERR)) && t_events_in(t))
        unpause_push(t);
    if (fd == t->out_fd && (revents & (POLLOUT | POLLHUP | POLLERR)) && t_events_out(t)) {
        t->out_blocked = 0;
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
    t->kind = kind;
    t->in_fd = in_fd;
    t->out_fd = out_fd;
    int fl = fcntl(in_fd, F_GETFL);
    t->in_nb = fl >= 0 && (fl & O_NONBLOCK);
    fl = fcntl(out_fd, F_GETFL);
    t->out_nb = fl >= 0 && (fl & O_NONBLOCK);
    t->done = done;
    t->done_arg = arg;
    snprintf(t->label, sizeof(t->label), "%s", label ? label : "");
    rh_frame_parser_init(&t->parser);

    t->next = c->tunnels;
    if (c->tunnels)
        c->tunnels->prev = t;
    c->tunnels = t;
    ++c->ntunnels;

    t_log(t, 1, "open %s/%s", c->o->base_url, c->o->target);
    t->open = req_new(c, t, REQ_OPEN, NULL);
    if (!t->open)
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
    c->curl_deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    return 0;
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
    return c;
}

void rhc_ctx_free(rhc_ctx *c)
{
    if (!c)
        return;
    while (c->tunnels) {
        if (!c->tunnels->fail_code)
            t_fail(c->tunnels, RHC_EXIT_ERROR, "stopped");
        c->tunnels->server_gone = 1;    /* no new requests now */
        c->tunnels->linger_until = 0;
        t_finish(c->tunnels);
    }
    while (c->closers) {
        struct rhc_req *r = c->closers;
        c->closers = r->next;
        req_free(r);
    }
    curl_multi_cleanup(c->multi);
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
    int64_t now = now_ms();
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
        if (t->in_fd == t->out_fd && (ein | eout)) {
            c->pfds[n] = (struct pollfd){ .fd = t->in_fd, .events = (short)(ein | eout) };
            c->powner[n++] = t;
            continue;
        }
        if (ein) {
            c->pfds[n] = (struct pollfd){ .fd = t->in_fd, .events = ein };
            c->powner[n++] = t;
        }
        if (eout) {
            c->pfds[n] = (struct pollfd){ .fd = t->out_fd, .events = eout };
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

    now = now_ms();
    for (rhc_tunnel *t = c->tunnels; t; t = t->next)
        t_timers(t, now);
    /* Unpausing sets curl's timer to 0, so this also runs what was unpaused. */
    if (c->curl_deadline >= 0 && now_ms() >= c->curl_deadline) {
        c->curl_deadline = -1;
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    reap(c);

    now = now_ms();
    for (rhc_tunnel *t = c->tunnels, *next; t; t = next) {
        next = t->next;
        t_advance(t, now);
    }
    /* Requests started above (a new pull, a close) show up through curl's timer. */
    return rc < 0 ? 0 : rc;
}
