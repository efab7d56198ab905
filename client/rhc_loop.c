/* relay-https client: the event loop: the multi handle with its timer
 * callback, one poll() over the caller's fds, the polled tunnels' and the
 * epoll set (curl's sockets, rhc_csock.c; the tunnels' local sockets,
 * rhc_wake.c), and the completions that go to their tunnels. A round costs
 * what happened in it: the events, the tunnels touched or due. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_epoll.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"

static void on_done(rhc_ctx *c, struct rhc_req *r, CURLcode rc)
{
    rhc_tunnel *t = r->t;

    rhc_gate_ended(r, rc);      /* a connect that timed out: fewer at once */
    rhc_gate_forget(r);         /* ended: no longer connecting */
    if (t)
        t_touch(t);
    if (r->kind == REQ_LISTEN) {
        c->listen_done(c->listen_arg, r, rc);
        return;
    }
    if (r->kind == REQ_WATCH) {
        watch_done(c, r, rc);
        return;
    }
    if (r->kind == REQ_CHECK) {     /* the start check waits for it */
        rhc_check_done(r, rc);
        return;
    }
    if (!t) {   /* detached close */
        /* a pooled connection the server was closing: once more on a new one,
         * else the session lingers on the server until it times out */
        const char *sep = r->label[0] ? ": " : "";
        if (rc != CURLE_OK && !r->hdr_done && transient(rc) && r->tries < 2)
            start_close_try(c, r->route, r->token, r->label, r->sid, r->tries + 1, r->integrity);
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
    case REQ_CHECK:
    case REQ_LISTEN:
    case REQ_WATCH:
        break;
    }
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
 * pointer into its connection buffer that later input overwrites (curl issue
 * 10525, the rewrite in 8.1.0). Before 8.5.0 it also keeps the "may
 * multiplex" mark per host rather than per connection: once one h2
 * connection to the server exists, a transfer of an HTTP/1.1 route is put on
 * an HTTP/1.1 connection another transfer still uses, and answers arrive as
 * "HTTP/0.9" or in the wrong transfer (fixed by curl commit 1c37d472a0).
 * Debian 12's 7.88.1 has both: there nothing is multiplexed and each stream
 * gets a connection of its own: more TLS connections, never a wrong byte. */
int rhc_curl_multiplex_ok(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && v->version_num >= H2_MUX_SAFE_CURL;
}

/* curl's connection cache counts the connections in use too (libcurl 7.88:
 * Curl_conncache_size), and past CURLMOPT_MAXCONNECTS it closes the oldest
 * idle one each time a request ends. A fixed 64 made every answered long-poll
 * of a process holding more than about 64 batch tunnels lose its connection,
 * so the next poll paid a TLS handshake (17 to 25 % of a server core for 2000
 * idle batch tunnels, docs/BENCHMARKS.md). So the cache grows with the
 * tunnels: each holds one connection while idle (its pull, or its long-poll,
 * kept for the next one) and a few while busy (batch pushes in flight). Held
 * requests still take fresh connections (down_req_fresh, start_spush). */
void rhc_ctx_size_cache(rhc_ctx *c)
{
    size_t want = CONN_CACHE_MIN + CONN_CACHE_PER_TUNNEL * c->ntunnels;
    if (want > CONN_CACHE_MAX)
        want = CONN_CACHE_MAX;
    if (want == c->cache_size)
        return;
    /* shrinking it closes idle connections at once: only well below it */
    if (want < c->cache_size && want + CONN_CACHE_SLACK > c->cache_size)
        return;
    c->cache_size = want;
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)want);
}

rhc_ctx *rhc_ctx_new(const struct rhc_opts *o)
{
    rhc_ctx *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->o = o;
    c->curl_deadline = -1;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evs = malloc(RHC_EVENTS_MAX * sizeof(*c->evs));
    if (c->epfd < 0 || !c->evs || !(c->multi = curl_multi_init())) {
        if (c->epfd >= 0)
            close(c->epfd);
        free(c->evs);
        free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, csock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    rhc_ctx_size_cache(c);
    /* mod_http2 works on at most 6 streams of a connection at first and raises
     * that only as streams complete; a duplex stream lasts as long as its
     * tunnel, so a 7th would wait for ever: more go on a new connection. */
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING,
                      rhc_curl_multiplex_ok() ? CURLPIPE_MULTIPLEX : CURLPIPE_NOTHING);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
                      rhc_curl_multiplex_ok() ? (long)H2_STREAMS_PER_CONN : 1L);
    if ((c->share = curl_share_init())) {
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
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
    rhc_ctx_free_routes(c);
    curl_multi_cleanup(c->multi);       /* its sockets leave the set (csock_cb) */
    if (c->share)
        curl_share_cleanup(c->share);
    csock_free_all(c);
    rhc_heap_free(&c->timers);
    close(c->epfd);
    free(c->due);
    free(c->polled);
    free(c->evs);
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

/* wait becomes the time until deadline d (ms, -1: none) if that is sooner. */
static void wait_until(long *wait, int64_t d, int64_t now)
{
    if (d < 0)
        return;
    long w = d > now ? (long)(d - now) : 0;
    if (*wait < 0 || w < *wait)
        *wait = w;
}

static void add_pfd(rhc_ctx *c, size_t *n, int fd, short events, rhc_tunnel *owner)
{
    c->pfds[*n] = (struct pollfd){ .fd = fd, .events = events };
    c->powner[(*n)++] = owner;
}

/* The local fds of the polled tunnels (stdio: one entry when in and out are
 * one file). */
static void poll_tunnels(rhc_ctx *c, size_t *n)
{
    for (size_t i = 0; i < c->npolled; ++i) {
        rhc_tunnel *t = c->polled[i];
        short ein = t_events_in(t), eout = t_events_out(t);
        if (t->local.in_fd == t->local.out_fd && (ein | eout)) {
            add_pfd(c, n, t->local.in_fd, (short)(ein | eout), t);
            continue;
        }
        if (ein)
            add_pfd(c, n, t->local.in_fd, ein, t);
        if (eout)
            add_pfd(c, n, t->local.out_fd, eout, t);
    }
}

/* One batch of what the epoll set has: curl's sockets first, then the local
 * sockets (as the poll() loop had it). Tunnels are only freed in run_due, so
 * the pointers in the tags are valid here. */
static int epoll_batch(rhc_ctx *c)
{
    int n = epoll_wait(c->epfd, c->evs, RHC_EVENTS_MAX, 0);

    if (n <= 0)
        return 0;
    for (int i = 0; i < n; ++i)
        if (rhc_ep_is_sock(c->evs[i].data.u64))
            csock_event(c, rhc_ep_sock_of(c->evs[i].data.u64), rhc_ep_revents(c->evs[i].events));
    for (int i = 0; i < n; ++i)
        if (!rhc_ep_is_sock(c->evs[i].data.u64)) {
            rhc_tunnel *t = (rhc_tunnel *)(uintptr_t)c->evs[i].data.u64;
            t_touch(t);
            t_local_event(t, t->local.in_fd, rhc_ep_revents(c->evs[i].events));
        }
    return n;
}

/* Everything ready, batch after batch, before any timer runs: a tunnel's
 * silence is judged only after what already waits in its socket was read.
 * With one batch a round, a client running late (thousands of busy tunnels,
 * a loaded machine: heartbeats waiting in 1000 sockets) judged the tunnels
 * beyond the first RHC_EVENTS_MAX silent, resumed them on new connections,
 * which made it later still: the resume storm of docs/BENCHMARKS.md item 18.
 * (epoll hands out ready descriptors in turn, so each batch is new ones.) */
static int epoll_events(rhc_ctx *c)
{
    int total = 0;

    for (int b = 0; b < RHC_EVENT_BATCHES; ++b) {
        int n = epoll_batch(c);
        total += n;
        if (n < RHC_EVENTS_MAX)
            break;
    }
    return total;
}

/* The events, read again while reading them took long: a stop (SIGSTOP, a
 * suspended VM) or a starved process in the middle of a drain left the
 * sockets read before it with bytes that came meanwhile, and the timers
 * would judge those tunnels by what they had before the stop. */
static int read_events(rhc_ctx *c)
{
    int total = 0;

    for (int k = 0; k < RHC_EVENT_REREADS; ++k) {
        int64_t t0 = rh_now_ms();
        total += epoll_events(c);
        if (rh_now_ms() - t0 < RHC_EVENTS_LATE_MS)
            break;
    }
    return total;
}

/* After the events: the tunnels touched or due (their timers), curl's own
 * timer, completions, and those tunnels moved on (freed when over). */
static int curl_due(rhc_ctx *c)
{
    int running;

    if (c->curl_deadline < 0 || rh_now_ms() < c->curl_deadline)
        return 0;
    c->curl_deadline = -1;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    csock_kicks(c);
    return 1;
}

static void run_due(rhc_ctx *c)
{
    rhc_wake_timers(c, rh_now_ms());
    rhc_watch_timers(c, rh_now_ms());     /* watches due (joins, after a failure) */
    /* Unpausing sets curl's timer to 0, so this also runs what was unpaused. */
    curl_due(c);
    reap(c);
    rhc_gate_release(c);        /* connections done or given up: the next go */
    rhc_wake_advance(c, rh_now_ms());
    /* ... and what the advance unpaused (a body with local bytes to send) goes
     * now: else it waited for another round, a poll() and an epoll_wait for
     * curl's POLLOUT (docs/BENCHMARKS.md, "Echo: the client's rounds") */
    if (curl_due(c)) {
        reap(c);
        rhc_gate_release(c);
        rhc_wake_advance(c, rh_now_ms());
    }
}

int rhc_ctx_step(rhc_ctx *c, struct pollfd *extra, size_t nextra, long max_wait_ms)
{
    size_t n = 0, i;
    int64_t now = rh_now_ms();
    long wait = max_wait_ms;

    if (grow_pfds(c, nextra + 2 * c->npolled + 1) < 0)
        return -1;
    for (i = 0; i < nextra; ++i) {
        c->pfds[n] = extra[i];
        c->pfds[n++].revents = 0;
    }
    poll_tunnels(c, &n);
    size_t ep = n;
    add_pfd(c, &n, c->epfd, POLLIN, NULL);
    csock_holds_due(c, now);
    wait_until(&wait, rhc_heap_next(&c->holds), now);
    wait_until(&wait, rhc_wake_next(c), now);
    wait_until(&wait, rhc_watch_next(c), now);
    wait_until(&wait, c->curl_deadline, now);
    csock_flush(c);

    int rc = poll(c->pfds, (nfds_t)n, (int)(wait > 0x7fffffffL ? 0x7fffffffL : wait));
    if (rc < 0) {
        if (errno != EINTR)
            return -1;
        for (i = 0; i < n; ++i)
            c->pfds[i].revents = 0;
    }
    for (i = 0; i < nextra; ++i)
        extra[i].revents = c->pfds[i].revents;

    /* The set is read whatever poll() said of it: a poll() that a stop
     * (SIGSTOP, a suspended VM) outlasted returns 0 without looking, and the
     * timers below would then judge every tunnel whose bytes wait silent. */
    int nev = read_events(c);
    /* Tunnels are only freed below, so the owners are still valid here. */
    for (i = nextra; i < ep; ++i)
        if (c->pfds[i].revents) {
            t_touch(c->powner[i]);
            t_local_event(c->powner[i], c->pfds[i].fd, c->pfds[i].revents);
        }
    run_due(c);
    /* Requests started above (a new pull, a close) show up through curl's timer. */
    return rc < 0 ? 0 : rc - (c->pfds[ep].revents ? 1 : 0) + nev;
}
