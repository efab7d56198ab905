#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "rh_ipc.h"
#include "rh_util.h"

static int copy_word(char *dst, size_t max, const char *src)
{
    size_t n = strlen(src);
    if (n == 0 || n >= max)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static int parse_uint(const char *s, unsigned *v, unsigned max)
{
    uint64_t x;
    if (rh_parse_u64(s, (size_t)-1, &x) || x > max)
        return -1;
    *v = (unsigned)x;
    return 0;
}

int rh_ipc_parse_req(const char *line, rh_ipc_req *req)
{
    char buf[RH_IPC_LINE_MAX];
    char *w[11];
    int n = 0;
    char *save = NULL;

    memset(req, 0, sizeof(*req));
    if (strlen(line) >= sizeof(buf))
        return -1;
    strcpy(buf, line);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (n == 11)
            return -1;
        w[n++] = t;
    }
    if (n == 0)
        return -1;
    if (!strcmp(w[0], "OPEN") && n >= 7) {
        /* options after the fixed words, each at most once */
        for (int i = 7; i < n; ++i) {
            if (!strncmp(w[i], "resume=", 7) && !req->resume) {
                req->resume = 1;
                if (parse_uint(w[i] + 7, &req->window, 1u << 30) || !req->window)
                    return -1;
            } else if (!strcmp(w[i], "check=crc32c") && !req->check) {
                req->check = 1;
            } else if (!strncmp(w[i], "client=", 7) && !req->client[0] && w[i][7]) {
                if (copy_word(req->client, sizeof(req->client), w[i] + 7))
                    return -1;
            } else if (!strncmp(w[i], "owner=", 6) && !req->owner) {
                char *end;
                errno = 0;
                req->owner = strtoull(w[i] + 6, &end, 16);
                if (errno || *end || !req->owner || w[i][6] == '-' || w[i][6] == '+')
                    return -1;
            } else {
                return -1;
            }
        }
        req->op = RH_IPC_OPEN;
        if (copy_word(req->target, sizeof(req->target), w[1])
            || copy_word(req->host, sizeof(req->host), w[2])
            || parse_uint(w[3], &req->port, 65535) || req->port == 0
            || parse_uint(w[4], &req->bufsize, 1u << 30) || req->bufsize < 1024
            || parse_uint(w[5], &req->idle_s, 86400 * 7) || req->idle_s == 0
            || parse_uint(w[6], &req->connect_s, 3600) || req->connect_s == 0)
            return -1;
        return 0;
    }
    if ((!strcmp(w[0], "PUSH") && (n == 3 || (n == 4 && !strncmp(w[3], "len=", 4))))
        || (!strcmp(w[0], "PULL") && (n == 4 || n == 5))) {
        req->op = w[0][1] == 'U' && w[0][2] == 'S' ? RH_IPC_PUSH : RH_IPC_PULL;
        if (copy_word(req->token, sizeof(req->token), w[1]) || rh_parse_u64(w[2], (size_t)-1, &req->offset))
            return -1;
        if (req->op == RH_IPC_PUSH && n == 4) {
            if (rh_parse_u64(w[3] + 4, (size_t)-1, &req->body_len))
                return -1;
            req->has_len = 1;
        }
        if (req->op == RH_IPC_PULL && copy_word(req->mode, sizeof(req->mode), w[3]))
            return -1;
        if (req->op == RH_IPC_PULL && n == 5
            && (parse_uint(w[4], &req->poll_s, 3600) || req->poll_s == 0))
            return -1;
        return 0;
    }
    if (!strcmp(w[0], "ACK") && n == 3) {
        req->op = RH_IPC_ACK;
        if (copy_word(req->token, sizeof(req->token), w[1]) || rh_parse_u64(w[2], (size_t)-1, &req->offset))
            return -1;
        return 0;
    }
    if (!strcmp(w[0], "CLOSE") && (n == 2 || (n == 3 && !strcmp(w[2], "integrity")))) {
        req->op = RH_IPC_CLOSE;
        req->integrity = n == 3;
        return copy_word(req->token, sizeof(req->token), w[1]);
    }
    if (!strcmp(w[0], "STAT") && n == 1) {
        req->op = RH_IPC_STAT;
        return 0;
    }
    return -1;
}

static int format_open(char *buf, size_t len, const rh_ipc_req *req)
{
    char resume[32] = "", client[48] = "", owner[32] = "";
    if (req->resume)
        snprintf(resume, sizeof(resume), " resume=%u", req->window);
    if (req->client[0])
        snprintf(client, sizeof(client), " client=%s", req->client);
    if (req->owner)
        snprintf(owner, sizeof(owner), " owner=%016" PRIx64, req->owner);
    return snprintf(buf, len, "OPEN %s %s %u %u %u %u%s%s%s%s\n", req->target, req->host,
                    req->port, req->bufsize, req->idle_s, req->connect_s, resume,
                    req->check ? " check=crc32c" : "", client, owner);
}

int rh_ipc_format_req(char *buf, size_t len, const rh_ipc_req *req)
{
    int n;
    switch (req->op) {
    case RH_IPC_OPEN:
        n = format_open(buf, len, req);
        break;
    case RH_IPC_PUSH:
        if (req->has_len)
            n = snprintf(buf, len, "PUSH %s %" PRIu64 " len=%" PRIu64 "\n", req->token,
                         req->offset, req->body_len);
        else
            n = snprintf(buf, len, "PUSH %s %" PRIu64 "\n", req->token, req->offset);
        break;
    case RH_IPC_PULL:
        if (req->poll_s)
            n = snprintf(buf, len, "PULL %s %" PRIu64 " %s %u\n", req->token, req->offset,
                         req->mode[0] ? req->mode : RH_MODE_STREAM, req->poll_s);
        else
            n = snprintf(buf, len, "PULL %s %" PRIu64 " %s\n", req->token, req->offset,
                         req->mode[0] ? req->mode : RH_MODE_STREAM);
        break;
    case RH_IPC_ACK:
        n = snprintf(buf, len, "ACK %s %" PRIu64 "\n", req->token, req->offset);
        break;
    case RH_IPC_CLOSE:
        n = snprintf(buf, len, "CLOSE %s%s\n", req->token, req->integrity ? " integrity" : "");
        break;
    case RH_IPC_STAT:
        n = snprintf(buf, len, "STAT\n");
        break;
    default:
        return -1;
    }
    return n > 0 && (size_t)n < len ? n : -1;
}

int rh_ipc_parse_reply(const char *line, rh_ipc_reply *rep)
{
    memset(rep, 0, sizeof(*rep));
    if (strlen(line) >= sizeof(rep->text))
        return -1;
    if (!strncmp(line, "OK", 2) && (line[2] == ' ' || line[2] == '\0')) {
        rep->ok = 1;
    } else if (!strncmp(line, "DONE ", 5)) {
        rep->ok = rep->done = 1;
    } else if (!strncmp(line, "ERR ", 4)) {
        char *end;
        long st = strtol(line + 4, &end, 10);
        if (st < 400 || st > 599 || (*end != ' ' && *end != '\0'))
            return -1;
        rep->status = (int)st;
        const char *msg = *end ? end + 1 : "";
        if (!strncmp(msg, "reason=", 7)) {
            /* a machine-readable why, for the client's Relay-Reason header */
            size_t n = strcspn(msg + 7, " ");
            if (n == 0 || n >= sizeof(rep->reason))
                return -1;
            memcpy(rep->reason, msg + 7, n);
            msg += 7 + n + (msg[7 + n] == ' ');
        }
        snprintf(rep->text, sizeof(rep->text), "%s", msg);
        return 0;
    } else {
        return -1;
    }
    const char *rest = strchr(line, ' ');
    if (rest) {
        snprintf(rep->text, sizeof(rep->text), "%s", rest + 1);
        char *end;
        errno = 0;
        unsigned long long v = strtoull(rest + 1, &end, 10);
        if (!errno && end != rest + 1)
            rep->num = v;
    }
    return 0;
}

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

ssize_t rh_ipc_read(int fd, void *buf, size_t len, int timeout_ms)
{
    long deadline = rh_now_ms() + timeout_ms;
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
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

int rh_ipc_read_line(int fd, char *buf, size_t max, int timeout_ms)
{
    long deadline = rh_now_ms() + timeout_ms;
    size_t have = 0;
    for (;;) {
        if (have + 1 >= max)
            return -EMSGSIZE;
        /* peek, then take exactly up to the newline: frames may follow the line */
        ssize_t n = recv(fd, buf + have, max - 1 - have, MSG_PEEK);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            int rv = wait_fd(fd, POLLIN, deadline);
            if (rv)
                return rv;
            continue;
        }
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
