/* relay-https: the client of mod_relay_https.
 *
 *   relay-https forward -L [ADDR:]PORT [options] URL TARGET
 *   relay-https stdio [options] URL TARGET
 *
 * One process, one event loop (rhc_ctx_step): forward runs any number of tunnels
 * at once, stdio one. Exit codes: see rhc_opts.h and --help. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rhc_opts.h"
#include "rhc_tunnel.h"

#define FDS_PER_TUNNEL    4        /* local socket + push, pull, ack connections (HTTP/1.1) */
#define FDS_SPARE         64

static size_t max_tunnels = 256;   /* forward: stop accepting beyond this (raise_fd_limit) */
#define ACCEPT_BACKOFF_MS 1000     /* after EMFILE and friends */
#define STOP_GRACE_MS     5000     /* time for close requests after a signal */

/* ---------------------------------------------------------------- signals */

static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;

    if (write(sig_pipe[1], &b, 1) < 0) {
        /* pipe full: a signal is already pending, that is enough */
    }
    errno = saved;
}

/* Signals reach the loop through a pipe, so poll() cannot miss one. */
static int setup_signals(void)
{
    struct sigaction sa;

    if (pipe(sig_pipe) < 0)
        return -1;
    for (int i = 0; i < 2; ++i) {
        fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);   /* ssh sends it to its ProxyCommand */
    return 0;
}

static int drain_signals(void)
{
    unsigned char b[16];
    ssize_t n;
    int got = 0;

    while ((n = read(sig_pipe[0], b, sizeof(b))) > 0)
        got = b[n - 1];
    return got;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until nothing is pending or the grace time is over. */
static void wind_down(rhc_ctx *c, const char *why)
{
    int64_t until = mono_ms() + STOP_GRACE_MS;

    rhc_ctx_abort_all(c, why);
    while (rhc_ctx_pending(c) > 0) {
        struct pollfd ex = { .fd = sig_pipe[0], .events = POLLIN };
        int64_t left = until - mono_ms();
        if (left <= 0)
            break;
        if (rhc_ctx_step(c, &ex, 1, (long)left) < 0)
            break;
        if (ex.revents && drain_signals())
            break;                  /* second signal: leave now */
    }
}

/* ---------------------------------------------------------------- forward */

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

static int listen_socket(const struct rhc_opts *o, char *bound, size_t boundsz)
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
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
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
static int accept_some(rhc_ctx *c, int lfd, unsigned long *serial)
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
        if (!rhc_tunnel_start(c, fd, fd, RHC_LOCAL_SOCKET, label, NULL, NULL))
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

static int run_forward(rhc_ctx *c, const struct rhc_opts *o)
{
    char bound[128];
    unsigned long serial = 0;
    int64_t accept_again = 0;

    raise_fd_limit();
    int lfd = listen_socket(o, bound, sizeof(bound));
    if (lfd < 0)
        return RHC_EXIT_LOCAL;
    rhc_err("listening on %s", bound);
    rhc_info("forwarding to %s/%s", o->base_url, o->target);

    for (;;) {
        int64_t now = mono_ms();
        int can_accept = now >= accept_again && rhc_ctx_tunnels(c) < max_tunnels;
        struct pollfd ex[2] = {
            { .fd = sig_pipe[0], .events = POLLIN },
            { .fd = can_accept ? lfd : -1, .events = POLLIN },
        };
        long wait = now < accept_again ? (long)(accept_again - now) : -1;
        if (rhc_ctx_step(c, ex, 2, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            break;
        }
        if (ex[0].revents && drain_signals())
            break;
        if ((ex[1].revents & POLLIN) && accept_some(c, lfd, &serial) < 0)
            accept_again = mono_ms() + ACCEPT_BACKOFF_MS;
    }
    close(lfd);
    rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
    wind_down(c, "stopped by a signal");
    return RHC_EXIT_OK;
}

/* ---------------------------------------------------------------- stdio */

static void stdio_done(void *arg, int code)
{
    *(int *)arg = code;
}

static int run_stdio(rhc_ctx *c)
{
    int code = -1;
    int err = rhc_stdio_prepare();

    if (err) {
        rhc_err("stdin/stdout: %s", strerror(err));
        rhc_stdio_restore();
        return RHC_EXIT_LOCAL;
    }
    if (!rhc_tunnel_start(c, 0, 1, RHC_LOCAL_STDIO, "", stdio_done, &code)) {
        rhc_err("out of memory");
        rhc_stdio_restore();
        return RHC_EXIT_ERROR;
    }
    /* After the tunnel ends, a best-effort close request may still run (it has
     * its own short timeout). */
    while (code < 0 || rhc_ctx_pending(c) > 0) {
        struct pollfd ex = { .fd = sig_pipe[0], .events = POLLIN };
        if (rhc_ctx_step(c, &ex, 1, -1) < 0) {
            rhc_err("poll: %s", strerror(errno));
            if (code < 0)
                code = RHC_EXIT_ERROR;
            break;
        }
        if (ex.revents && drain_signals()) {
            wind_down(c, "stopped by a signal");
            if (code < 0)
                code = RHC_EXIT_ERROR;
            break;
        }
    }
    rhc_stdio_restore();
    return code;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct rhc_opts o;
    rhc_ctx *c = NULL;
    int rc = rhc_opts_parse(argc, argv, &o);
    int curl_up = 0;

    if (rc >= 0)
        goto leave;
    rc = RHC_EXIT_ERROR;
    if (setup_signals() < 0) {
        rhc_err("pipe: %s", strerror(errno));
        goto leave;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rhc_err("libcurl: initialisation failed");
        goto leave;
    }
    curl_up = 1;
    if (!(c = rhc_ctx_new(&o))) {
        rhc_err("libcurl: cannot create a multi handle");
        goto leave;
    }
    rc = o.mode == RHC_MODE_FORWARD ? run_forward(c, &o) : run_stdio(c);
leave:
    rhc_ctx_free(c);
    if (curl_up)
        curl_global_cleanup();
    rhc_opts_free(&o);
    return rc;
}
