/* The httpd side's blocking I/O on the core's unix socket: connect, write, read
 * and read one line, each with a timeout. Separate from rh_ipc.c, which only
 * parses and formats lines and does no I/O: the core itself never blocks. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "rh_ipc_client.h"
#include "rh_util.h"

static int wait_fd(int fd, short ev, long deadline)
{
    for (;;) {
        long left = deadline - rh_now_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = { .fd = fd, .events = ev };
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

int rh_ipc_connect(const char *path, int timeout_ms)
{
    struct sockaddr_un sa;
    int fd, rv;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        rv = -errno;
        goto fail;
    }
    /* a unix socket connect only blocks while the core's backlog is full */
    rv = wait_fd(fd, POLLOUT, rh_now_ms() + timeout_ms);
    if (rv)
        goto fail;
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        rv = -err;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rv;
}

int rh_ipc_write_all(int fd, const void *buf, size_t len, int timeout_ms)
{
    const char *p = buf;
    long deadline = rh_now_ms() + timeout_ms;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            deadline = rh_now_ms() + timeout_ms;   /* the timeout is per stall */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rv = wait_fd(fd, POLLOUT, deadline);
        if (rv)
            return rv;
    }
    return 0;
}

/* recv that waits for input until deadline: bytes, 0 at EOF, or a negative errno */
static ssize_t recv_until(int fd, void *buf, size_t len, int flags, long deadline)
{
    for (;;) {
        ssize_t n = recv(fd, buf, len, flags);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rv = wait_fd(fd, POLLIN, deadline);
        if (rv)
            return rv;
    }
}

ssize_t rh_ipc_read(int fd, void *buf, size_t len, int timeout_ms)
{
    return recv_until(fd, buf, len, 0, rh_now_ms() + timeout_ms);
}

int rh_ipc_read_line(int fd, char *buf, size_t max, int timeout_ms)
{
    long deadline = rh_now_ms() + timeout_ms;
    size_t have = 0;
    for (;;) {
        if (have + 1 >= max)
            return -EMSGSIZE;
        /* peek, then take exactly up to the newline: frames may follow the line */
        ssize_t n = recv_until(fd, buf + have, max - 1 - have, MSG_PEEK, deadline);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0)
            return (int)n;
        char *nl = memchr(buf + have, '\n', (size_t)n);
        size_t take = nl ? (size_t)(nl - (buf + have)) + 1 : (size_t)n;
        ssize_t got = recv(fd, buf + have, take, 0);
        if (got != (ssize_t)take)
            return got < 0 ? -errno : -EIO;
        have += take;
        if (nl) {
            buf[have - 1] = '\0';
            return (int)(have - 1);
        }
    }
}
