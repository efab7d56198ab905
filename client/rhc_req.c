/* relay-https client: one HTTP request (struct rhc_req): building it from the
 * options, its headers, and the curl callbacks that record its answer. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <strings.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
#include "rhc_req.h"
#include "rhc_tunnel_int.h"

const char *const kind_name[] = { RH_EP_OPEN, RH_EP_PULL, RH_EP_PUSH, RH_EP_DUPLEX,
                                   RH_EP_CLOSE, RH_EP_ACK, RH_EP_CHECK, RH_EP_LISTEN,
                                   RH_EP_WATCH };

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

/* A new response (after a 1xx or an auth round): forget the last one. */
static void hdr_reset(struct rhc_req *r)
{
    r->status = 0;
    r->hdr_done = 0;
    r->have_offset = 0;
    r->have_token = 0;
    r->resume_ok = 0;
    r->check_ok = 0;
    r->proxy_said = 0;
    r->body_len = 0;
}

/* The empty line after the headers: the final status, unless it was a 1xx.
 * Returns 0 to stop the transfer (a down response at the wrong offset). */
static int hdr_end(struct rhc_req *r, int down)
{
    long code = 0;

    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 100 && code < 200)
        return 1;
    r->status = code;
    r->hdr_done = 1;
    r->hdr_at = rh_now_ms();
    if (r->t && code >= 200 && code < 300) {
        r->t->sess.last_contact = rh_now_ms();   /* the server heard from the session */
        r->t->sess.h2_resets = 0;
    }
    return !down || down_headers_done(r);
}

/* Relay-Session of an open answer: kept only when it looks like a token. */
static void hdr_token(struct rhc_req *r, const char *v, size_t vl)
{
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

/* The headers only an open answer has. Returns 1 when buf was one of them. */
static int hdr_open(struct rhc_req *r, const char *buf, size_t len)
{
    const char *v;
    size_t vl;

    if (header_is(buf, len, RH_HDR_RESUME, &v, &vl))
        r->resume_ok = vl == strlen(RH_RESUME_YES) && !strncmp(v, RH_RESUME_YES, vl);
    else if (header_is(buf, len, RH_HDR_INTEGRITY, &v, &vl))
        r->check_ok = vl == strlen(RH_INTEGRITY_CRC32C) &&
                      !strncmp(v, RH_INTEGRITY_CRC32C, vl);
    else if (header_is(buf, len, RH_HDR_BUFFER, &v, &vl))
        rh_parse_u64(v, vl, &r->buffer);
    else if (header_is(buf, len, RH_HDR_WINDOW, &v, &vl))
        rh_parse_u64(v, vl, &r->window);
    else if (header_is(buf, len, RH_HDR_IDLE, &v, &vl))
        rh_parse_u64(v, vl, &r->idle_s);
    else if (header_is(buf, len, RH_HDR_POLL, &v, &vl))
        rh_parse_u64(v, vl, &r->poll_s);
    else
        return 0;
    return 1;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nitems;
    const char *v;
    size_t vl;
    int down = r->t && (r->kind == REQ_PULL || r->kind == REQ_DUPLEX);

    rhc_gate_connected(r);      /* an answer: its connection is up */
    if (r->t)
        t_touch(r->t);
    if (down) {
        /* an answer's first lines show a prompt server as its body does: a
         * silence after them is the path's (pull_answered) */
        int64_t now = rh_now_ms();
        r->t->down.last_rx = now;
        pull_answered(r->t, r, now);
    }
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        hdr_reset(r);
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n'))
        return hdr_end(r, down) ? len : 0;
    if (header_is(buf, len, RH_HDR_OFFSET, &v, &vl)) {
        r->have_offset = rh_parse_u64(v, vl, &r->offset) == 0;
    } else if ((r->kind == REQ_OPEN || r->kind == REQ_LISTEN) && hdr_open(r, buf, len)) {
        /* taken */
    } else if (header_is(buf, len, RH_HDR_REASON, &v, &vl)) {
        size_t n = vl < sizeof(r->reason) - 1 ? vl : sizeof(r->reason) - 1;
        memcpy(r->reason, v, n);
        r->reason[n] = '\0';
    } else if (header_is(buf, len, "X-Squid-Error", &v, &vl) ||
               header_is(buf, len, "Proxy-Status", &v, &vl)) {
        r->proxy_said = 1;
    } else if ((r->kind == REQ_OPEN || r->kind == REQ_LISTEN) &&
               header_is(buf, len, RH_HDR_SESSION, &v, &vl)) {
        hdr_token(r, v, vl);
    }
    return len;
}

/* Keeps the start of a body (error text); the rest is dropped. */
size_t body_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nmemb;
    size_t room = BODY_MAX - r->body_len;
    size_t n = len < room ? len : room;

    if (r->t)
        t_touch(r->t);
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return len;
}

/* A curl text line that shows an HTTP/2 request header, "h2h3 [name: value]"
 * (libcurl 7.88), of a secret header: the length of its "h2h3 [name: "
 * part, else 0. */
static size_t h2h3_secret(const char *p, size_t n)
{
    static const char pre[] = "h2h3 [";
    static const char *const names[] = { RH_HDR_SESSION, "authorization",
                                         "proxy-authorization" };
    const size_t pl = sizeof(pre) - 1;
    if (n <= pl || memcmp(p, pre, pl) != 0)
        return 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
        size_t l = strlen(names[i]);
        if (n > pl + l + 1 && strncasecmp(p + pl, names[i], l) == 0 && p[pl + l] == ':')
            return pl + l + 1;
    }
    return 0;
}

/* Masks secrets in -vv traces: the token after its public 16 characters, and
 * credentials, in the headers and in curl's own lines about them. */
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
        else if (mark == '*' && (vl = h2h3_secret(p, n)) > 0)
            rhc_log(2, "%s%s%c %.*s <masked>]", who, *who ? ": " : "", mark, (int)vl, p);
        else if (n)
            rhc_log(2, "%s%s%c %.*s", who, *who ? ": " : "", mark, len, p);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

void req_free(struct rhc_req *r)
{
    if (!r)
        return;
    if (r->h) {
        rhc_gate_forget(r);
        curl_multi_remove_handle(r->ctx->multi, r->h);
        curl_easy_cleanup(r->h);
    }
    curl_slist_free_all(r->hdrs);
    free(r->p_body);
    free(r->pend);
    free(r->w_ans);
    free(r);
}

int add_header(struct rhc_req *r, const char *fmt, ...)
{
    char line[512];
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

void req_stream_http1(struct rhc_req *r, const struct rhc_opts *o)
{
    if (o->transport == RHC_XP_AUTO && !o->http_version)
        curl_easy_setopt(r->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
}

/* Builds a request with everything the options ask for; the caller adds its own
 * headers and options, then req_go. */
struct rhc_req *req_new(rhc_ctx *c, const struct rhc_route *route, rhc_tunnel *t,
                        enum req_kind kind,
                        const char *token)
{
    const struct rhc_opts *o = route->o;
    struct rhc_req *r = calloc(1, sizeof(*r));
    char *url = NULL;
    int ok = 0;

    if (!r)
        return NULL;
    r->kind = kind;
    r->sock = CURL_SOCKET_BAD;
    r->ctx = c;
    r->route = route;
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
    /* -L udp: the server must know the bytes are datagrams (and refuse a TCP target) */
    if (o->udp && (kind == REQ_OPEN || kind == REQ_CHECK)
        && add_header(r, RH_HDR_DATAGRAM ": " RH_DATAGRAM_LEN16) < 0)
        goto leave;
    if (token && add_header(r, RH_HDR_SESSION ": %s", token) < 0)
        goto leave;

    CURL *h = r->h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    rhc_gate_set(r);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, RHC_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, http_version(o));
    /* Several requests of a session wait for one HTTP/2 connection rather than
     * each opening its own (only where streams share connections at all). */
    curl_easy_setopt(h, CURLOPT_PIPEWAIT, rhc_curl_multiplex_ok() ? 1L : 0L);
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
void req_empty_body(struct rhc_req *r)
{
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, "");
}

/* A body made as we go: chunked over HTTP/1.1, plain DATA frames over HTTP/2 (a
 * hand-made Transfer-Encoding header would be wrong there). */
int req_streamed_body(struct rhc_req *r)
{
    const struct rhc_opts *o = r->route->o;

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

int req_go(struct rhc_req *r)
{
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->hdrs);
    return rhc_gate_go(r);
}

/* Pausing one direction of a request keeps the other as it is. */
static void req_pause_apply(struct rhc_req *r)
{
    curl_easy_pause(r->h, (r->send_paused ? CURLPAUSE_SEND : 0) |
                          (r->recv_paused ? CURLPAUSE_RECV : 0));
}

void unpause_send(struct rhc_req *r)
{
    if (r && r->send_paused) {
        r->send_paused = 0;
        req_pause_apply(r);
    }
}

void unpause_recv(struct rhc_req *r)
{
    if (r && r->recv_paused) {
        r->recv_paused = 0;
        /* May call resp_write at once with the data curl held back. */
        req_pause_apply(r);
    }
}
