/* relay-https client: forward mode. A listening socket (-L), accept with a pause
 * when descriptors run out, and the descriptor limit raised so that thousands of
 * tunnels fit; every accepted connection becomes one tunnel. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_forward.h"
#include "rhc_route.h"
#include "rhc_signals.h"

#define FDS_PER_TUNNEL    4        /* local socket + push, pull, ack connections (HTTP/1.1) */
#define FDS_SPARE         64
#define ACCEPT_BACKOFF_MS 1000     /* after EMFILE and friends */

static size_t max_tunnels = 256;   /* stop accepting beyond this (raise_fd_limit) */

static void addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t outsz)
{
    char host[INET6_ADDRSTRLEN], port[8];   /* numeric only */

    if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, outsz, "?");
        return;
    }
    if (sa->sa_family == AF_INET6)
        snprintf(out, outsz, "[%s]:%s", host, port);
    else
        snprintf(out, outsz, "%s:%s", host, port);
}

/* Bound, not listening yet: the port is ours at once (a clash is a local
 * error before any network), but a connection is refused until the start
 * check passed. */
static int bound_socket(const struct rhc_opts *o, char *bound, size_t boundsz)
{
    struct addrinfo hints, *res = NULL;
    int fd = -1, err = 0, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(o->listen_host, o->listen_port, &hints, &res);
    if (gai != 0) {
        rhc_err("listen %s:%s: %s", o->listen_host, o->listen_port, gai_strerror(gai));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        rhc_err("listen %s:%s: %s", o->listen_host, o->listen_port, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_text((struct sockaddr *)&ss, sl, bound, boundsz);
    else
        snprintf(bound, boundsz, "%s:%s", o->listen_host, o->listen_port);
    return fd;
}

/* Accepts what is waiting; returns -1 when accepting must pause (fd limit). */
static int accept_some(rhc_ctx *c, struct rhc_route *route, int lfd, unsigned long *serial)
{
    while (rhc_ctx_tunnels(c) < max_tunnels) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            rhc_err("accept: %s", strerror(errno));
            return -1;  /* EMFILE, ENFILE, ENOBUFS: retry later, not in a loop */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        char peer[64], label[96];
        addr_text((struct sockaddr *)&ss, sl, peer, sizeof(peer));
        snprintf(label, sizeof(label), "#%lu %s", ++*serial, peer);
        if (!rhc_tunnel_start(c, route, fd, fd, RHC_LOCAL_SOCKET, label, NULL, NULL))
            rhc_err("%s: out of memory", label);   /* the socket is closed */
    }
    return 0;
}

/* A forwarder may hold thousands of tunnels, each a few descriptors: the soft
 * descriptor limit (often 1024) goes up to the hard one, and the number of
 * tunnels accepted at once follows from what is allowed. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20)
                                                                              : rl.rlim_max;
        struct rlimit n = { want, rl.rlim_max };
        if (want > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &n) == 0)
            rl.rlim_cur = want;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > FDS_SPARE + FDS_PER_TUNNEL)
        max_tunnels = (size_t)(rl.rlim_cur - FDS_SPARE) / FDS_PER_TUNNEL;
    rhc_info("up to %zu tunnels at once (descriptor limit %llu)", max_tunnels,
             (unsigned long long)rl.rlim_cur);
}

int rhc_forward_run(rhc_ctx *c, const struct rhc_opts *o)
{
    char bound[128];
    unsigned long serial = 0;
    int64_t accept_again = 0;
    struct rhc_route route;

    rhc_route_init(&route, o, "");
    raise_fd_limit();
    int lfd = bound_socket(o, bound, sizeof(bound));
    if (lfd < 0)
        return RHC_EXIT_LOCAL;
    /* a server that cannot serve us is an error now, not one per connection
     * later (systemd sees the exit code and restarts us) */
    int rc = rhc_check_start(c, &route, o->retry_start);
    if (rc != 0) {
        close(lfd);
        return rc < 0 ? RHC_EXIT_OK : rc;
    }
    if (listen(lfd, 128) != 0) {
        rhc_err("listen %s: %s", bound, strerror(errno));
        close(lfd);
        return RHC_EXIT_LOCAL;
    }
    rhc_err("listening on %s", bound);
    rhc_info("forwarding to %s/%s", o->base_url, o->target);

    for (;;) {
        int64_t now = rh_now_ms();
        int can_accept = now >= accept_again && rhc_ctx_tunnels(c) < max_tunnels;
        struct pollfd ex[2] = {
            { .fd = rhc_signals_fd(), .events = POLLIN },
            { .fd = can_accept ? lfd : -1, .events = POLLIN },
        };
        long wait = now < accept_again ? (long)(accept_again - now) : -1;
        if (rhc_ctx_step(c, ex, 2, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            break;
        }
        if (ex[0].revents && rhc_signals_drain())
            break;
        if ((ex[1].revents & POLLIN) && accept_some(c, &route, lfd, &serial) < 0)
            accept_again = rh_now_ms() + ACCEPT_BACKOFF_MS;
    }
    close(lfd);
    rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
    rhc_wind_down(c, "stopped by a signal");
    return RHC_EXIT_OK;
}
