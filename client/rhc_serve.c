/* relay-https client: serve mode, the server terminator of a rendezvous
 * (docs/PROTOCOL.md, Rendezvous). It keeps --accepts listen long-polls waiting
 * on BASE/SERVICE/listen; each is answered 204 when no client came in the
 * server's poll time (it polls again), or 201 with a serve leg's session when
 * a client opened SERVICE. Then it connects to --to and carries the
 * connection with an ordinary tunnel on that session: every transport,
 * resume and check of forward mode, on the same event loop. Listens that fail
 * back off (50 ms doubling to 1 s) one at a time until one passes again; a
 * 401, 403 or 404 ends the process, since polling again cannot change it.
 *
 * Connecting to the local service blocks the loop, at most LOCAL_CONNECT_MS:
 * --to is meant to be near (localhost or the LAN). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_opts_int.h"
#include "rhc_serve.h"
#include "rhc_signals.h"
#include "rhc_tunnel_int.h"

#define LISTEN_TIMEOUT_MS ((RH_LISTEN_POLL_S + 20) * 1000L)  /* the server answers by its poll */
#define LOCAL_CONNECT_MS  5000

struct serve {
    rhc_ctx *c;
    struct rhc_route route;
    int want;                           /* listens to keep waiting */
    struct rhc_req *lst[RHC_ACCEPTS_MAX];
    int n;
    unsigned fails;                     /* listens failed in a row */
    int64_t retry_at;
    int code;                           /* -1: go on; else the exit code */
    unsigned long serial;               /* connections accepted */
    char host[256], port[8];
};

/* HOST:PORT or [V6]:PORT into its parts: 0, or -1 when malformed. */
static int split_to(const char *arg, char *host, size_t hs, char *port, size_t ps)
{
    const char *colon = strrchr(arg, ':');
    const char *h = arg;
    size_t hl;
    uint64_t p;

    if (!colon || rh_parse_u64(colon + 1, strlen(colon + 1), &p) != 0 || !p || p > 65535)
        return -1;
    hl = (size_t)(colon - arg);
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            return -1;
        ++h;
        hl -= 2;
    } else if (memchr(h, ':', hl)) {
        return -1;   /* an IPv6 address goes in brackets */
    }
    if (!hl || hl >= hs)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, ps, "%u", (unsigned)p);
    return 0;
}

int rhc_serve_set_to(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    char h[256], p[8];

    if (split_to(arg, h, sizeof(h), p, sizeof(p)) < 0)
        return rhc_usage_error("--to %s: expected HOST:PORT (e.g. 127.0.0.1:22 or [::1]:22)",
                               arg);
    o->serve_to = arg;
    return -1;
}

int rhc_serve_set_accepts(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    uint64_t v;

    if (rh_parse_u64(arg, strlen(arg), &v) != 0 || v < 1 || v > RHC_ACCEPTS_MAX)
        return rhc_usage_error("--accepts %s: expected 1 to %d", arg, RHC_ACCEPTS_MAX);
    o->accepts = (int)v;
    return -1;
}

/* Waits for a non-blocking connect: 0 when it is up, else an errno value. */
static int connect_wait(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int err = 0, rv;
    socklen_t el = sizeof(err);

    do
        rv = poll(&p, 1, LOCAL_CONNECT_MS);
    while (rv < 0 && errno == EINTR);
    if (rv == 0)
        return ETIMEDOUT;
    if (rv < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        return errno;
    return err;
}

/* A connected non-blocking socket to --to, or -1 (logged). */
static int connect_local(const struct serve *sv)
{
    struct addrinfo hints, *res = NULL;
    int fd = -1, err = 0, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(sv->host, sv->port, &hints, &res);
    if (gai != 0) {
        rhc_err("--to %s:%s: %s", sv->host, sv->port, gai_strerror(gai));
        return -1;
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0
            : errno == EINPROGRESS ? connect_wait(fd) : errno;
        if (err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        rhc_err("connecting to %s:%s: %s", sv->host, sv->port, strerror(err));
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void listen_start(struct serve *sv)
{
    const struct rhc_opts *o = sv->route.o;
    struct rhc_req *r = req_new(sv->c, &sv->route, NULL, REQ_LISTEN, NULL);

    if (!r)
        goto fail;
    if (add_header(r, "Content-Type:") < 0 ||
        add_header(r, RH_HDR_INTEGRITY ": " RH_INTEGRITY_CRC32C) < 0 ||
        (!o->no_resume && add_header(r, RH_HDR_RESUME ": " RH_RESUME_YES) < 0))
        goto fail;
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, LISTEN_TIMEOUT_MS);
    if (sv->fails)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    sv->lst[sv->n++] = r;
    return;
fail:
    req_free(r);
    ++sv->fails;
    sv->retry_at = rh_now_ms() + backoff_ms(sv->fails);
}

/* A client came: its connection to --to, on the serve leg's session. */
static void accept_one(struct serve *sv, struct rhc_req *r)
{
    char label[112], sid[RH_SID_LEN + 1];

    snprintf(label, sizeof(label), "%.60s#%lu", sv->route.o->target, ++sv->serial);
    snprintf(sid, sizeof(sid), "%.*s", RH_SID_LEN, r->token);
    if (!r->check_ok) {
        rhc_err("%s: session %s: the server does not check the bytes end to end (no "
                RH_HDR_INTEGRITY " in its answer)", label, sid);
        start_close(sv->c, &sv->route, r->token, label, sid);
        return;
    }
    int fd = connect_local(sv);
    if (fd < 0) {
        /* the client leg hears a reset, not silence */
        start_close(sv->c, &sv->route, r->token, label, sid);
        return;
    }
    rhc_info("%s: session %s accepted for %s:%s", label, sid, sv->host, sv->port);
    if (!rhc_tunnel_accept(sv->c, &sv->route, fd, label, r))
        rhc_err("%s: out of memory", label);   /* the socket is closed */
}

static void listen_done(void *arg, struct rhc_req *r, CURLcode rc)
{
    struct serve *sv = arg;
    char line[BODY_MAX + 1];

    for (int i = 0; i < sv->n; ++i)
        if (sv->lst[i] == r) {
            sv->lst[i] = sv->lst[--sv->n];
            break;
        }
    if (rc == CURLE_OK && r->status == 201 && r->have_token) {
        sv->fails = 0;
        accept_one(sv, r);
    } else if (rc == CURLE_OK && r->status == 204) {
        sv->fails = 0;   /* no client in the poll time: polled again at once */
    } else if (rc == CURLE_OK && (r->status == 401 || r->status == 403 || r->status == 404)) {
        body_line(r, line, sizeof(line));
        rhc_err("listen %s/%s: HTTP %ld%s%s", sv->route.o->base_url, sv->route.o->target,
                r->status, line[0] ? ": " : "", line);
        sv->code = rhc_http_exit(r->status, 0, r->proxy_said, 1, 1);
    } else {
        ++sv->fails;
        sv->retry_at = rh_now_ms() + backoff_ms(sv->fails);
        if (rc == CURLE_OK)
            body_line(r, line, sizeof(line));
        rhc_log(sv->fails > 3 ? 0 : 1, "listen: %s%s%s; again in %lld ms",
                rc == CURLE_OK ? "HTTP" : req_error(r, rc),
                rc == CURLE_OK ? " refused: " : "", rc == CURLE_OK ? line : "",
                (long long)backoff_ms(sv->fails));
    }
    req_free(r);
}

/* Keeps want listens waiting; after failures one at a time, after the backoff. */
static void top_up(struct serve *sv)
{
    int64_t now = rh_now_ms();
    int want = sv->fails ? 1 : sv->want;

    while (sv->code < 0 && sv->n < want && now >= sv->retry_at && sv->fails < 1000000) {
        unsigned before = sv->fails;
        listen_start(sv);
        if (sv->fails != before)
            break;
    }
}

int rhc_serve_run(rhc_ctx *c, const struct rhc_opts *o)
{
    struct serve sv;

    memset(&sv, 0, sizeof(sv));
    sv.c = c;
    sv.code = -1;
    sv.want = o->accepts > 0 ? o->accepts : RHC_ACCEPTS_DEFAULT;
    rhc_route_init(&sv.route, o, "");
    if (split_to(o->serve_to, sv.host, sizeof(sv.host), sv.port, sizeof(sv.port)) < 0)
        return RHC_EXIT_USAGE;   /* checked when parsed */
    c->listen_done = listen_done;
    c->listen_arg = &sv;
    rhc_err("serving %s/%s for %s:%s (%d listens)", o->base_url, o->target, sv.host, sv.port,
            sv.want);
    for (;;) {
        top_up(&sv);
        int64_t now = rh_now_ms();
        long wait = sv.n < sv.want && sv.retry_at > now ? (long)(sv.retry_at - now) : -1;
        struct pollfd ex = { .fd = rhc_signals_fd(), .events = POLLIN };
        if (rhc_ctx_step(c, &ex, 1, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            sv.code = RHC_EXIT_ERROR;
            break;
        }
        if ((ex.revents && rhc_signals_drain()) || sv.code >= 0)
            break;
    }
    while (sv.n > 0)
        req_free(sv.lst[--sv.n]);
    c->listen_done = NULL;
    rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
    rhc_wind_down(c, sv.code >= 0 ? "the server refused to let us serve"
                                  : "stopped by a signal");
    return sv.code >= 0 ? sv.code : RHC_EXIT_OK;
}
