/* relay-https client: forward mode. A listening socket per route (-L, or a
 * config file tunnel; TCP or UNIX), accept with a pause when descriptors run
 * out, and the descriptor limit raised so that thousands of tunnels fit; every
 * accepted connection becomes one tunnel of its route. All routes share one
 * event loop and one connection pool (rhc_ctx). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_forward.h"
#include "rhc_local.h"
#include "rhc_route.h"
#include "rhc_signals.h"
#include "rhc_stats.h"
#include "rhc_udp.h"

#define FDS_PER_TUNNEL    4        /* local socket + push, pull, ack connections (HTTP/1.1) */
#define FDS_SPARE         64
#define ACCEPT_BACKOFF_MS 1000     /* after EMFILE and friends */

static size_t max_tunnels = 256;   /* stop accepting beyond this (raise_fd_limit) */

struct listener {
    int fd;
    struct rhc_route *route;    /* owned by the context */
    int named;                  /* several routes: labels say which */
    char bound[128];
    unsigned long serial;       /* connections accepted */
    struct rhc_udp *udp;        /* -L udp: its sources' sessions (fd is then its socket) */
    size_t ex_at, ex_n;         /* ... its descriptors in this round's poll */
};

void rhc_addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t outsz)
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
int rhc_bound_socket(const struct rhc_opts *o, char *bound, size_t boundsz)
{
    struct addrinfo hints, *res = NULL;
    int fd = -1, err = 0, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = o->udp ? SOCK_DGRAM : SOCK_STREAM;
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
        rhc_addr_text((struct sockaddr *)&ss, sl, bound, boundsz);
    else
        snprintf(bound, boundsz, "%s:%s", o->listen_host, o->listen_port);
    return fd;
}

/* A UNIX socket, bound (see bound_socket), mode 0600 like ssh's forwarded
 * sockets. A socket file left behind by a process that is gone is replaced; one
 * in use is not. */
static int listen_unix(const char *path, char *bound, size_t boundsz)
{
    struct sockaddr_un sa;
    int fd = -1, err;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
            errno == ECONNREFUSED)
            unlink(path);
        if (probe >= 0)
            close(probe);
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0)
        goto fail;
    snprintf(bound, boundsz, "%s", path);
    return fd;
fail:
    err = errno;
    if (fd >= 0)
        close(fd);
    rhc_err("listen %s: %s", path, strerror(err));
    return -1;
}

/* Accepts what is waiting; returns -1 when accepting must pause (fd limit). */
static int accept_some(rhc_ctx *c, struct listener *l)
{
    int lfd = l->fd;

    while (rhc_ctx_tunnels(c) < max_tunnels) {
        struct sockaddr_storage ss;
        socklen_t sl;
        int fd = rhc_accept_local(lfd, &ss, &sl);
        if (fd < 0)
            return fd == RHC_ACCEPT_NONE ? 0 : -1;
        int one = 1;
        char peer[64], label[112];
        if (ss.ss_family == AF_UNIX) {
            snprintf(peer, sizeof(peer), "unix");
        } else {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            rhc_addr_text((struct sockaddr *)&ss, sl, peer, sizeof(peer));
        }
        /* with several routes the label says which one */
        snprintf(label, sizeof(label), "%.40s%s#%lu %.60s", l->named ? l->route->name : "",
                 l->named ? " " : "", ++l->serial, peer);
        if (!rhc_tunnel_start(c, l->route, fd, fd, RHC_LOCAL_SOCKET, label, NULL, NULL))
            rhc_err("%s: out of memory", label);   /* the socket is closed */
    }
    return 0;
}

/* A forwarder may hold thousands of tunnels, each a few descriptors: the soft
 * descriptor limit (often 1024) goes up to the hard one, and the number of
 * tunnels accepted at once follows from what is allowed. */
size_t rhc_raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return max_tunnels;
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
    return max_tunnels;
}

/* Every route's listener, or none: one that cannot listen stops the start. */
static int open_listeners(rhc_ctx *c, const struct rhc_cmd *cmd, struct listener *ls)
{
    for (size_t i = 0; i < cmd->nroutes; ++i) {
        const struct rhc_opts *o = &cmd->routes[i];
        struct listener *l = &ls[i];
        l->fd = o->listen_path ? listen_unix(o->listen_path, l->bound, sizeof(l->bound))
                               : rhc_bound_socket(o, l->bound, sizeof(l->bound));
        if (l->fd < 0)
            return RHC_EXIT_LOCAL;
        /* one route: its labels stay as they were; several: named after their
         * -L or [section] */
        l->named = cmd->nroutes > 1;
        if (!(l->route = rhc_ctx_add_route(c, o, l->named && o->name ? o->name : l->bound))) {
            rhc_err("out of memory");
            return RHC_EXIT_ERROR;
        }
    }
    return -1;
}

static void close_listeners(const struct rhc_cmd *cmd, struct listener *ls)
{
    for (size_t i = 0; i < cmd->nroutes; ++i) {
        if (ls[i].fd < 0)
            continue;
        close(ls[i].fd);
        ls[i].fd = -1;
        if (cmd->routes[i].listen_path)
            unlink(cmd->routes[i].listen_path);
    }
}

/* A bound socket starts taking connections (TCP, UNIX) or datagrams (UDP). */
static int start_listener(rhc_ctx *c, struct listener *l, size_t n)
{
    const struct rhc_opts *o = l->route->o;
    if (o->udp) {
        int fd = l->fd;
        l->fd = -1;   /* the udp side owns it now */
        if (!(l->udp = rhc_udp_new(c, l->route, fd))) {
            rhc_err("out of memory");
            return -1;
        }
    } else if (listen(l->fd, RHC_LISTEN_BACKLOG) != 0) {
        rhc_err("listen %s: %s", l->bound, strerror(errno));
        return -1;
    }
    const char *proto = o->udp ? "udp " : "";
    if (n == 1)
        rhc_err("listening on %s%s", proto, l->bound);
    else
        rhc_err("listening on %s%s for %s/%s", proto, l->bound, o->base_url, o->target);
    rhc_info("forwarding to %s/%s", o->base_url, o->target);
    return 0;
}

/* The udp routes' descriptors after the first nex of ex; each one's idle
 * timer shortens *wait. Returns the new count. */
static size_t udp_pollfds(struct listener *ls, size_t n, struct pollfd *ex, size_t nex,
                          size_t max, int64_t now, long *wait)
{
    for (size_t i = 0; i < n; ++i) {
        if (!ls[i].udp)
            continue;
        long t = rhc_udp_tick(ls[i].udp, now);   /* first: it may free flows */
        if (*wait < 0 || t < *wait)
            *wait = t;
        ls[i].ex_at = nex;
        ls[i].ex_n = rhc_udp_pollfds(ls[i].udp, ex + nex, max - nex);
        nex += ls[i].ex_n;
    }
    return nex;
}

int rhc_forward_run(rhc_ctx *c, const struct rhc_cmd *cmd)
{
    size_t n = cmd->nroutes;
    struct listener *ls = calloc(n, sizeof(*ls));
    size_t nex_max = n + 1;
    for (size_t i = 0; i < n; ++i)
        nex_max += cmd->routes[i].udp ? rhc_udp_max_fds(&cmd->routes[i]) : 0;
    struct pollfd *ex = calloc(nex_max, sizeof(*ex));
    int64_t accept_again = 0;
    int rc = RHC_EXIT_LOCAL;

    if (!ls || !ex) {
        rhc_err("out of memory");
        rc = RHC_EXIT_ERROR;
        goto leave;
    }
    for (size_t i = 0; i < n; ++i)
        ls[i].fd = -1;
    rhc_raise_fd_limit();
    if ((rc = open_listeners(c, cmd, ls)) >= 0)
        goto leave;
    /* a server that cannot serve us is an error now, not one per connection
     * later (systemd sees the exit code and restarts us) */
    for (size_t i = 0; i < n; ++i) {
        int crc = rhc_check_start(c, ls[i].route, cmd->routes[0].retry_start);
        if (crc != 0) {
            rc = crc < 0 ? RHC_EXIT_OK : crc;
            goto leave;
        }
    }
    for (size_t i = 0; i < n; ++i)
        if (start_listener(c, &ls[i], n) != 0)
            goto leave;
    for (;;) {
        int64_t now = rh_now_ms();
        int can_accept = now >= accept_again && rhc_ctx_tunnels(c) < max_tunnels;
        ex[0] = (struct pollfd){ .fd = rhc_signals_fd(), .events = POLLIN };
        for (size_t i = 0; i < n; ++i)
            ex[i + 1] = (struct pollfd){ .fd = can_accept ? ls[i].fd : -1, .events = POLLIN };
        long wait = now < accept_again ? (long)(accept_again - now) : -1;
        size_t nex = udp_pollfds(ls, n, ex, n + 1, nex_max, now, &wait);
        wait = rhc_stats_tick(c, now, rhc_signals_took(SIGUSR1), wait);
        if (rhc_ctx_step(c, ex, nex, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            break;
        }
        if (ex[0].revents && rhc_signals_drain())
            break;
        for (size_t i = 0; i < n; ++i)
            if ((ex[i + 1].revents & POLLIN) && accept_some(c, &ls[i]) < 0)
                accept_again = rh_now_ms() + ACCEPT_BACKOFF_MS;
        for (size_t i = 0; i < n; ++i)
            if (ls[i].udp)
                rhc_udp_events(ls[i].udp, ex + ls[i].ex_at, ls[i].ex_n);
    }
    close_listeners(cmd, ls);
    rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
    rhc_wind_down(c, "stopped by a signal");
    rc = RHC_EXIT_OK;
leave:
    if (ls)
        close_listeners(cmd, ls);     /* after a failed start or check */
    for (size_t i = 0; ls && i < n; ++i)
        rhc_udp_free(ls[i].udp);      /* after the tunnels (wind-down) */
    free(ls);
    free(ex);
    return rc;
}
