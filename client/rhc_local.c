/* relay-https client: the local side of a tunnel. Up bytes are read into the
 * up buffer, at most UP_AHEAD_MAX ahead of the pushes; down bytes go out through
 * obuf (non-blocking fds) or at once (a tty or file on stdio). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_log.h"
#include "rhc_local.h"
#include "rhc_tunnel_int.h"

/* stdio flags saved by rhc_stdio_prepare, restored on exit. */
static int stdio_saved[2] = { -1, -1 };
static int stdio_shared;   /* fd 0 and 1 are the same file: restore via fd 0 only */

static int fd_ready(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev, .revents = 0 };

    return poll(&p, 1, 0) > 0;
}

/* The local side failed: tell the server with an R frame on the push when it is
 * still open (the teardown waits a little for it), else the teardown POSTs close. */
static void local_abort(rhc_tunnel *t, const char *what, int err)
{
    struct rhc_req *sc = up_streamer(t);

    t_fail(t, RHC_EXIT_LOCAL, "%s: %s", what, strerror(err));
    if (sc && !sc->body_ended && !sc->end_wanted && !sc->p_fin && !t->push.r_sent &&
        !t->push.r_pending) {
        t->push.r_pending = 1;
        t->end.linger_until = rh_now_ms() + LINGER_MS;
        /* t_advance unpauses the body: this may run inside another handle's
         * callback, where pausing a different handle is better avoided. (A batch
         * session is told by the close request of the teardown.) */
    }
}

static int obuf_append(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->local.ohead && t->local.olen == 0)
        t->local.ohead = 0;
    if (t->local.ohead + t->local.olen + n > t->local.ocap) {
        if (t->local.ohead) {
            memmove(t->local.obuf, t->local.obuf + t->local.ohead, t->local.olen);
            t->local.ohead = 0;
        }
        if (t->local.olen + n > t->local.ocap) {
            size_t cap = (t->local.olen + n + 16383) & ~(size_t)16383;
            if (cap > OBUF_MAX)
                return -1;
            if (cap < 2 * t->local.ocap)      /* grow geometrically, within the cap */
                cap = 2 * t->local.ocap < OBUF_MAX ? 2 * t->local.ocap : OBUF_MAX;
            unsigned char *nb = realloc(t->local.obuf, cap);
            if (!nb)
                return -1;
            t->local.obuf = nb;
            t->local.ocap = cap;
        }
    }
    memcpy(t->local.obuf + t->local.ohead + t->local.olen, p, n);
    t->local.olen += n;
    return 0;
}

/* Hands down bytes to the local side. A non-blocking fd gets them through obuf,
 * written once per loop round (after curl handed over all it had, typically a
 * whole receive buffer in 16 KiB callbacks): fewer, larger writes. The response
 * pauses while OBUF_SOFT bytes wait, so obuf stays bounded. A blocking fd (tty,
 * file on stdio) is written at once. */
void deliver(rhc_tunnel *t, const unsigned char *p, size_t n)
{
    if (t->local.out_err || t->local.out_shut || t->local.out_drop)
        return;
    if (t->local.out_nb) {
        if (obuf_append(t, p, n) < 0) {
            t->local.out_err = ENOBUFS;
            t_fail(t, RHC_EXIT_ERROR, "internal: local output buffer full");
        }
        return;
    }
    while (n > 0) {
        ssize_t w = write(t->local.out_fd, p, n);
        if (w > 0) {
            stat_down(t, (size_t)w);
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        t->local.out_err = w < 0 ? errno : EIO;
        local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->local.out_err);
        return;
    }
}

/* Local fd writable: flush obuf, then let the response continue. */
void drain_out(rhc_tunnel *t)
{
    while (t->local.olen > 0 && !t->local.out_err) {
        ssize_t w = write(t->local.out_fd, t->local.obuf + t->local.ohead, t->local.olen);
        if (w > 0) {
            stat_down(t, (size_t)w);
            t->local.ohead += (size_t)w;
            t->local.olen -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->local.out_blocked = 1;
            break;
        }
        t->local.out_err = w < 0 ? errno : EIO;
        local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "write to stdout" : "write to local connection",
                    t->local.out_err);
        return;
    }
    if (t->local.olen == 0)
        t->local.ohead = 0;
    /* Resume below half the cap, so that pause/unpause does not ping-pong. */
    struct rhc_req *d = down_req(t);
    if (t->local.olen < OBUF_SOFT / 2 && d && d->recv_paused && !t->end.code) {
        t->down.last_rx = rh_now_ms();
        if (t->push.ack_wait_since)      /* acks could not come while it was paused */
            t->push.ack_wait_since = t->down.last_rx;
        unpause_recv(d);
    }
}

void shut_output(rhc_tunnel *t)
{
    struct stat st;

    t->local.out_shut = 1;
    if (t->local.kind == RHC_LOCAL_SOCKET) {
        shutdown(t->local.out_fd, SHUT_WR);
        return;
    }
    /* stdout: half-close a socket, and in any case let go of fd 1 (whoever reads
     * it sees EOF) while keeping the number taken, so that no later socket ends
     * up as fd 1. */
    if (fstat(t->local.out_fd, &st) == 0 && S_ISSOCK(st.st_mode))
        shutdown(t->local.out_fd, SHUT_WR);
    if (stdio_saved[1] >= 0 && !stdio_shared)
        fcntl(t->local.out_fd, F_SETFL, stdio_saved[1]);
    stdio_saved[1] = -1;
    int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, t->local.out_fd);
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

/* ssh closes its ends of the pipes, then sends its ProxyCommand SIGHUP: by then
 * stdin's writer is gone (POLLHUP; POLLRDHUP on a socket). Bytes still in the
 * pipe are read and go up before the F. */
int rhc_stdio_input_closed(const rhc_tunnel *t)
{
    struct pollfd p = { .fd = t->local.in_fd, .events = POLLIN | POLLRDHUP };

    if (t->up.eof)
        return 1;
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP));
}

/* A pipe whose reader is gone shows POLLERR, a closed socket or tty POLLHUP. */
int rhc_stdio_output_read(rhc_tunnel *t)
{
    struct pollfd p = { .fd = t->local.out_fd, .events = POLLOUT };

    if (t->local.out_shut || t->local.out_drop)
        return 0;
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLERR | POLLHUP)))
        return 1;
    /* the bytes would only fail the tunnel with EPIPE; the response they held
     * paused goes on, so that the server's end can still come */
    t->local.out_drop = 1;
    t->local.olen = 0;
    t_touch(t);
    drain_out(t);
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

/* Reads what the local side has into the ring, at most UP_AHEAD_MAX bytes ahead
 * of what the pushes took. */
void up_fill(rhc_tunnel *t)
{
    while (!t->up.eof && !t->end.code && up_read_off(t) - t->up.sent < UP_AHEAD_MAX) {
        /* A full ring waits for confirmations (backpressure): unconfirmed
         * bytes are never dropped, a cut may need them again. */
        if (!rh_ring_space(&t->up.ring))
            break;
        if (t->local.in_nb ? t->local.in_dry : !fd_ready(t->local.in_fd, POLLIN))
            break;
        struct iovec iov[2];
        int niov = rh_ring_write_iov(&t->up.ring, iov);   /* grows the ring as used */
        if (niov == 0) {
            local_abort(t, "keep local bytes (out of memory)", ENOMEM);
            break;
        }
        size_t room = iov[0].iov_len + (niov > 1 ? iov[1].iov_len : 0);
        ssize_t n = readv(t->local.in_fd, iov, niov);
        if (n <= 0)
            rh_ring_consume(&t->up.ring, 0);   /* frees a buffer that took nothing */
        if (n > 0) {
            rh_ring_commit(&t->up.ring, (size_t)n);
            if (!t->local.in_nb)
                break;
            if ((size_t)n < room) {     /* short read: nothing more for now */
                t->local.in_dry = 1;
                break;
            }
            continue;
        }
        if (n == 0) {
            t->up.eof = 1;
            t_log(t, 2, "local EOF after %" PRIu64 " bytes", up_read_off(t));
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            t->local.in_dry = 1;
        else
            local_abort(t, t->local.kind == RHC_LOCAL_STDIO ? "read from stdin"
                                                      : "read from local connection", errno);
        break;
    }
}

/* The ring can take local bytes now. */
static int up_can_read(const rhc_tunnel *t)
{
    if (!t->xp.up || t->up.eof || t->end.code || t->push.r_pending || t->up.done)
        return 0;
    if (up_read_off(t) - t->up.sent >= UP_AHEAD_MAX)
        return 0;
    return rh_ring_space(&t->up.ring) > 0;
}

short t_events_in(const rhc_tunnel *t)
{
    return up_can_read(t) ? POLLIN : 0;
}

short t_events_out(const rhc_tunnel *t)
{
    return (t->local.olen > 0 && t->local.out_blocked && !t->local.out_err) ? POLLOUT : 0;
}

void t_local_event(rhc_tunnel *t, int fd, short revents)
{
    if (fd == t->local.in_fd && (revents & (POLLIN | POLLHUP | POLLERR)))
        t->local.in_dry = 0;
    if (fd == t->local.in_fd && (revents & (POLLIN | POLLHUP | POLLERR)) && t_events_in(t))
        up_fill(t);     /* t_advance hands the bytes on */
    if (fd == t->local.out_fd && (revents & (POLLOUT | POLLHUP | POLLERR)) && t_events_out(t)) {
        t->local.out_blocked = 0;
        drain_out(t);
    }
}

int rhc_accept_local(int lfd, struct sockaddr_storage *ss, socklen_t *sl)
{
    for (;;) {
        *sl = sizeof(*ss);
        int fd = accept4(lfd, (struct sockaddr *)ss, sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return RHC_ACCEPT_NONE;
        rhc_err("accept: %s", strerror(errno));
        return -1;
    }
}
