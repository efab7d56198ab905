/* relay-https client: curl's sockets in the loop's epoll set. curl's socket
 * callback says what each waits for; the set changes only then, and when
 * POLLOUT is held back from a socket where curl wrote nothing (an HTTP/2
 * window used up, see curl_out_check). A socket is found by its number. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/tcp.h>        /* struct tcp_info with tcpi_bytes_sent (glibc's has not) */
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_epoll.h"
#include "rhc_log.h"
#include "rhc_tunnel_int.h"

#define CFD_OF(x) ((struct cfd *)((char *)(x) - offsetof(struct cfd, hold)))

static struct cfd *cfd_get(const rhc_ctx *c, curl_socket_t s)
{
    return s >= 0 && (size_t)s < c->ncfd_of ? c->cfd_of[s] : NULL;
}

/* The set gets what curl asked for, POLLOUT left out while held; a socket
 * curl waits nothing on is out of it. */
static void cfd_sync(rhc_ctx *c, struct cfd *cf)
{
    int want = cf->events ? (cf->hold.pos ? cf->events & ~POLLOUT : cf->events) : RHC_EP_NONE;

    if (want == cf->reg)
        return;
    if (rhc_ep_set(c->epfd, cf->fd, cf->reg, want, rhc_ep_sock_tag(cf->fd)) < 0) {
        rhc_err("epoll: curl socket %d: %s", (int)cf->fd, strerror(errno));
        want = RHC_EP_NONE;
    }
    cf->reg = want;
}

static void cfd_later(rhc_ctx *c, struct cfd *cf);

static struct cfd *cfd_add(rhc_ctx *c, curl_socket_t s)
{
    if (s < 0)
        return NULL;
    if ((size_t)s >= c->ncfd_of) {
        size_t n = c->ncfd_of ? c->ncfd_of : 64;
        while (n <= (size_t)s)
            n *= 2;
        struct cfd **v = realloc(c->cfd_of, n * sizeof(*v));
        if (!v)
            return NULL;
        memset(v + c->ncfd_of, 0, (n - c->ncfd_of) * sizeof(*v));
        c->cfd_of = v;
        c->ncfd_of = n;
    }
    struct cfd *cf = calloc(1, sizeof(*cf));
    if (!cf)
        return NULL;
    cf->fd = s;
    cf->reg = RHC_EP_NONE;
    c->cfd_of[s] = cf;
    return cf;
}

static void cfd_drop(rhc_ctx *c, struct cfd *cf)
{
    rhc_heap_remove(&c->holds, &cf->hold);
    cf->events = 0;
    cfd_sync(c, cf);
    c->cfd_of[cf->fd] = NULL;
    free(cf);
}

/* A stream push whose body is paused (nothing to send) while its answer is to
 * come: libcurl 7.88 watches its socket for the answer, and when it reads the
 * end there (a FIN from the server or a proxy) it stops watching but keeps the
 * transfer, which would fail only at its next write, and a keystroke after
 * such a cut waited for the watchdog of unconfirmed bytes (3 s). curl letting
 * go of the socket of such a push says it: the push goes again (up_closed). */
static void peer_eof_seen(struct rhc_req *r, curl_socket_t s)
{
    char b;

    if (r->kind != REQ_PUSH || !r->streamed || r->hdr_done || r->body_ended ||
        !r->send_paused || !r->t || s == CURL_SOCKET_BAD)
        return;
    ssize_t n = recv(s, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        r->peer_eof = 1;
        t_touch(r->t);
    }
}

/* The socket a request's transfer last said it waits on (libcurl 7.88 tells
 * CURLINFO_ACTIVESOCKET only after a transfer), for csock_kick_later. */
static void req_sock_seen(CURL *e, curl_socket_t s, int what)
{
    char *priv = NULL;

    if (!e || curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv)
        return;
    struct rhc_req *r = (struct rhc_req *)priv;
    if (what != CURL_POLL_REMOVE) {
        r->sock = s;
        return;
    }
    if (r->sock == s)
        r->sock = CURL_SOCKET_BAD;
    peer_eof_seen(r, s);
}

int csock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    rhc_ctx *c = userp;
    struct cfd *cf = cfd_get(c, s);

    (void)socketp;
    req_sock_seen(e, s, what);
    if (what == CURL_POLL_REMOVE) {
        if (cf)
            cfd_drop(c, cf);
        return 0;
    }
    if (!cf && !(cf = cfd_add(c, s)))
        return -1;
    rhc_heap_remove(&c->holds, &cf->hold);      /* curl says anew what it waits for */
    cf->events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                         ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    cfd_later(c, cf);
    return 0;
}

/* The set is told before the loop waits (csock_flush), not at every change:
 * an unpaused body asks for POLLOUT and, once it has sent what it had, for
 * POLLIN again, in the same round (two epoll_ctl per stream echo). A removed
 * socket leaves at once: curl closes it next. */
static void cfd_later(rhc_ctx *c, struct cfd *cf)
{
    if (cf->dirty)
        return;
    if (c->ndirty == c->capdirty) {
        size_t n = c->capdirty ? 2 * c->capdirty : 64;
        curl_socket_t *v = realloc(c->dirty, n * sizeof(*v));
        if (!v) {
            cfd_sync(c, cf);
            return;
        }
        c->dirty = v;
        c->capdirty = n;
    }
    cf->dirty = 1;
    c->dirty[c->ndirty++] = cf->fd;
}

void csock_flush(rhc_ctx *c)
{
    for (size_t i = 0; i < c->ndirty; ++i) {
        struct cfd *cf = cfd_get(c, c->dirty[i]);
        if (cf && cf->dirty) {
            cf->dirty = 0;
            cfd_sync(c, cf);
        }
    }
    c->ndirty = 0;
}

/* A body's read callback handed curl the last bytes it has (the local socket
 * read dry): once curl has sent them, it is asked to write again at once, so
 * that the callback pauses the body now, instead of after another round whose
 * poll() returns for POLLOUT alone. Whatever curl could not send yet stays
 * its own: it then keeps POLLOUT, as it would have. */
void csock_kick_later(rhc_ctx *c, const struct rhc_req *r)
{
    if (c->nkicks < RHC_KICKS_MAX && r->sock != CURL_SOCKET_BAD)
        c->kicks[c->nkicks++] = r->sock;
}

void csock_kicks(rhc_ctx *c)
{
    int running;

    while (c->nkicks) {
        curl_socket_t s = c->kicks[--c->nkicks];
        if (cfd_get(c, s))
            curl_multi_socket_action(c->multi, s, CURL_CSELECT_OUT, &running);
    }
}

/* The bytes the kernel has taken from us on TCP socket fd (sent, or queued
 * to be): 0 with *n set, -1 when it cannot tell (not TCP, an old kernel). */
static int sock_wrote(curl_socket_t fd, uint64_t *n)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof(ti.tcpi_bytes_sent))
        return -1;
    *n = ti.tcpi_bytes_sent + ti.tcpi_notsent_bytes;
    return 0;
}

/* curl had socket fd writable and wrote nothing: an HTTP/2 upload whose
 * flow-control window is used up. libcurl 7.88 still asks for POLLOUT then, so
 * every poll() returned at once, round after round, until a WINDOW_UPDATE came
 * (10 polls per 16 KiB DATA frame, 1.5-2 CPU s/GB of a duplex upload,
 * docs/BENCHMARKS.md item 13). Such a socket is watched for input only (what
 * brings the window) until input comes, curl asks anew, or CURL_OUT_HOLD_MS. */
static void curl_out_check(rhc_ctx *c, curl_socket_t fd, short re)
{
    struct cfd *cf = cfd_get(c, fd);
    uint64_t n;

    if (!cf)
        return;
    if (re != POLLOUT || sock_wrote(fd, &n) != 0) {
        if (cf->hold.pos) {
            rhc_heap_remove(&c->holds, &cf->hold);
            cfd_sync(c, cf);
        }
        return;
    }
    if (n == cf->wrote && (cf->events & POLLOUT) &&
        rhc_heap_set(&c->holds, &cf->hold, rh_now_ms() + CURL_OUT_HOLD_MS) == 0)
        cfd_sync(c, cf);
    cf->wrote = n;
}

void csock_event(rhc_ctx *c, curl_socket_t fd, short re)
{
    int running;

    if (!re || (re & POLLNVAL))
        return;
    int flags = ((re & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
                ((re & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                ((re & POLLERR) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(c->multi, fd, flags, &running);
    curl_out_check(c, fd, re);
    csock_kicks(c);
}

/* Holds over by now: POLLOUT is watched again. */
void csock_holds_due(rhc_ctx *c, int64_t now)
{
    struct rhc_heap_node *x;

    while ((x = rhc_heap_top(&c->holds)) && x->at <= now) {
        rhc_heap_remove(&c->holds, x);
        cfd_sync(c, CFD_OF(x));
    }
}

void csock_free_all(rhc_ctx *c)
{
    for (size_t i = 0; i < c->ncfd_of; ++i)
        free(c->cfd_of[i]);
    free(c->cfd_of);
    c->cfd_of = NULL;
    c->ncfd_of = 0;
    free(c->dirty);
    c->dirty = NULL;
    c->ndirty = c->capdirty = 0;
    c->nkicks = 0;
    rhc_heap_free(&c->holds);
}
