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
 * The connect to the local service runs on the loop, non-blocking, at most
 * LOCAL_CONNECT_MS: the server hands the client over only when the serve
 * leg's first request comes within RH_ACCEPT_CLAIM_MS (tentative pairing), so
 * a serve that cannot reach --to in time closes the leg, and the server
 * gives the client to another serve's listen. */
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
#define LOCAL_CONNECT_MS  (RH_ACCEPT_CLAIM_MS - 500)   /* leaves the pull time to go out */
#define PENDING_MAX       64

/* A client handed over whose local connection is being made. */
struct pending {
    int fd;
    struct rhc_req *answer;             /* the listen's 201: the serve leg's terms */
    struct addrinfo *res, *ai;          /* the addresses of --to, the one tried */
    int64_t deadline;
    int err;                            /* the last address's failure */
    char label[112], sid[RH_SID_LEN + 1];
};

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
    struct pending pend[PENDING_MAX];   /* local connects under way */
    int npend;
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

/* Starts the connect of p to its next address: 0 when one is under way or
 * done (p->fd), -1 when none is left (p->err). */
static int pend_next(struct pending *p)
{
    for (; p->ai; p->ai = p->ai->ai_next) {
        p->fd = socket(p->ai->ai_family, p->ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       p->ai->ai_protocol);
        if (p->fd < 0) {
            p->err = errno;
            continue;
        }
        if (connect(p->fd, p->ai->ai_addr, p->ai->ai_addrlen) == 0 || errno == EINPROGRESS)
            return 0;
        p->err = errno;
        close(p->fd);
        p->fd = -1;
    }
    return -1;
}

/* Ends the connect of p: carried on its serve leg when fd is up (-1: the
 * leg is closed, so the server gives its client to another serve). */
static void pend_end(struct serve *sv, struct pending *p, int ok)
{
    int one = 1;

    if (ok) {
        setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rhc_info("%s: session %s accepted for %s:%s", p->label, p->sid, sv->host, sv->port);
        if (!rhc_tunnel_accept(sv->c, &sv->route, p->fd, p->label, p->answer))
            rhc_err("%s: out of memory", p->label);   /* the socket is closed */
    } else {
        rhc_err("%s: connecting to %s:%s: %s", p->label, sv->host, sv->port,
                strerror(p->err ? p->err : ETIMEDOUT));
        if (p->fd >= 0)
            close(p->fd);
        start_close(sv->c, &sv->route, p->answer->token, p->label, p->sid);
    }
    freeaddrinfo(p->res);
    req_free(p->answer);
    *p = sv->pend[--sv->npend];
}

/* A connect's socket is ready: up, or on to the next address. */
static void pend_event(struct serve *sv, struct pending *p)
{
    int err = 0;
    socklen_t el = sizeof(err);

    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (!err) {
        pend_end(sv, p, 1);
        return;
    }
    p->err = err;
    close(p->fd);
    p->fd = -1;
    p->ai = p->ai->ai_next;
    if (pend_next(p) < 0)
        pend_end(sv, p, 0);
}

/* The connects whose time is up (LOCAL_CONNECT_MS), and the earliest of the
 * others' deadlines into *wait. */
static void pend_timers(struct serve *sv, long *wait)
{
    int64_t now = rh_now_ms();

    for (int i = sv->npend - 1; i >= 0; --i) {
        struct pending *p = &sv->pend[i];
        if (now >= p->deadline) {
            p->err = ETIMEDOUT;
            pend_end(sv, p, 0);
        } else if (*wait < 0 || p->deadline - now < *wait)
            *wait = (long)(p->deadline - now);
    }
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

/* A client came: its connection to --to is started, then carried on the
 * serve leg's session. 1 when the answer r is kept for that. */
static int accept_one(struct serve *sv, struct rhc_req *r)
{
    struct addrinfo hints;
    struct pending *p;

    if (sv->npend == PENDING_MAX) {
        rhc_err("%s: %d local connects under way already: session closed", sv->route.o->target,
                PENDING_MAX);
        start_close(sv->c, &sv->route, r->token, sv->route.o->target, "-");
        return 0;
    }
    p = &sv->pend[sv->npend];
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    snprintf(p->label, sizeof(p->label), "%.60s#%lu", sv->route.o->target, ++sv->serial);
    snprintf(p->sid, sizeof(p->sid), "%.*s", RH_SID_LEN, r->token);
    if (!r->check_ok) {
        rhc_err("%s: session %s: the server does not check the bytes end to end (no "
                RH_HDR_INTEGRITY " in its answer)", p->label, p->sid);
        start_close(sv->c, &sv->route, r->token, p->label, p->sid);
        return 0;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* --to is an address or a name in /etc/hosts: a lookup that could block
     * long is the operator's choice */
    int gai = getaddrinfo(sv->host, sv->port, &hints, &p->res);
    if (gai != 0) {
        rhc_err("%s: --to %s:%s: %s", p->label, sv->host, sv->port, gai_strerror(gai));
        start_close(sv->c, &sv->route, r->token, p->label, p->sid);
        return 0;
    }
    p->ai = p->res;
    p->answer = r;
    p->deadline = rh_now_ms() + LOCAL_CONNECT_MS;
    ++sv->npend;
    if (pend_next(p) < 0)
        pend_end(sv, p, 0);
    return 1;
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
    if (created_then_cut(r, rc)) {
        rhc_log(1, "listen: %s after the whole 201; the session stands", req_error(r, rc));
        rc = CURLE_OK;
    }
    if (rc == CURLE_OK && r->status == 201 && r->have_token) {
        sv->fails = 0;
        if (accept_one(sv, r))
            return;   /* r is freed when its connect ends */
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
        struct pollfd ex[1 + PENDING_MAX];
        int np;
        top_up(&sv);
        int64_t now = rh_now_ms();
        long wait = sv.n < sv.want && sv.retry_at > now ? (long)(sv.retry_at - now) : -1;
        pend_timers(&sv, &wait);
        np = sv.npend;
        ex[0] = (struct pollfd){ .fd = rhc_signals_fd(), .events = POLLIN };
        for (int i = 0; i < np; ++i)
            ex[1 + i] = (struct pollfd){ .fd = sv.pend[i].fd, .events = POLLOUT };
        if (rhc_ctx_step(c, ex, 1 + (size_t)np, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            sv.code = RHC_EXIT_ERROR;
            break;
        }
        if ((ex[0].revents && rhc_signals_drain()) || sv.code >= 0)
            break;
        /* from the last, so that an ended one's place (taken by the last) is done */
        for (int i = np - 1; i >= 0; --i)
            if (ex[1 + i].revents && i < sv.npend && sv.pend[i].fd == ex[1 + i].fd)
                pend_event(&sv, &sv.pend[i]);
    }
    while (sv.n > 0)
        req_free(sv.lst[--sv.n]);
    while (sv.npend > 0) {
        /* not carried: the server gives these clients to another serve */
        struct pending *p = &sv.pend[sv.npend - 1];
        if (p->fd >= 0)
            close(p->fd);
        freeaddrinfo(p->res);
        req_free(p->answer);
        --sv.npend;
    }
    c->listen_done = NULL;
    rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
    rhc_wind_down(c, sv.code >= 0 ? "the server refused to let us serve"
                                  : "stopped by a signal");
    return sv.code >= 0 ? sv.code : RHC_EXIT_OK;
}
