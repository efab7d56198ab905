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

int csock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    rhc_ctx *c = userp;
    struct cfd *cf = cfd_get(c, s);

    (void)e;
    (void)socketp;
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
    cfd_sync(c, cf);
    return 0;
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
    rhc_heap_free(&c->holds);
}
