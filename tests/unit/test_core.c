/* The relay core event loop, driven exactly as the httpd handler drives it: the
 * core runs in a thread on a unix socket in a private directory, the registry
 * lives in malloc'd memory, targets are loopback TCP sockets that the test
 * controls, and every wait has a timeout. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
/* from libasan (sanitizer/allocator_interface.h, not always installed) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif
#include "tests.h"
#include "rh_core.h"
#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_ipc_client.h"
#include "rh_registry.h"

#define IO_MS 3000            /* every single blocking step in these tests */

/* ---- time ------------------------------------------------------------------ */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Polls cond every 5 ms until it holds or ms ran out; yields whether it held. */
#define WAIT_FOR(cond, ms) __extension__ ({                              \
        long wf_end_ = now_ms() + (ms);                                  \
        int wf_ok_;                                                      \
        while (!(wf_ok_ = !!(cond)) && now_ms() < wf_end_)               \
            sleep_ms(5);                                                 \
        wf_ok_; })

/* ---- the core under test ----------------------------------------------------- */

typedef struct core_fx {
    char path[128];
    int lfd;
    rh_registry *reg;
    rh_core_config cfg;
    pthread_t th;
    int thread_created;
    int rv;
    pthread_mutex_t mu;
    char log[1 << 16];
    size_t log_len;
} core_fx;

static core_fx CF;
static char base_dir[64];      /* see base_setup() */

/* test fds, closed by the teardown if a test fails half way */
static int tracked[128];
static int ntracked;

static int track(int fd)
{
    if (fd >= 0 && ntracked < (int)(sizeof(tracked) / sizeof(tracked[0])))
        tracked[ntracked++] = fd;
    return fd;
}

static void xclose(int fd)
{
    if (fd < 0)
        return;
    for (int i = 0; i < ntracked; ++i)
        if (tracked[i] == fd) {
            tracked[i] = tracked[--ntracked];
            break;
        }
    close(fd);
}

static void core_log(void *ctx, int level, const char *msg)
{
    core_fx *f = ctx;
    pthread_mutex_lock(&f->mu);
    int n = snprintf(f->log + f->log_len, sizeof(f->log) - f->log_len, "<%d> %s\n", level, msg);
    if (n > 0 && f->log_len + (size_t)n < sizeof(f->log))
        f->log_len += (size_t)n;
    pthread_mutex_unlock(&f->mu);
}

static int log_has(const char *needle)
{
    pthread_mutex_lock(&CF.mu);
    int r = strstr(CF.log, needle) != NULL;
    pthread_mutex_unlock(&CF.mu);
    return r;
}

static void *core_thread(void *arg)
{
    CF.rv = rh_core_run(&CF.cfg);
    return NULL;
}

static uint32_t reg_active(void)
{
    return __atomic_load_n(&CF.reg->active, __ATOMIC_ACQUIRE);
}

static void core_start(uint32_t nslots, int heartbeat_s)
{
    struct sockaddr_un sa;

    ck_assert_int_eq(CF.thread_created, 0);
    memset(CF.log, 0, sizeof(CF.log));
    CF.log_len = 0;
    static unsigned seq;
    ck_assert_msg(base_dir[0], "no directory for the core socket");
    snprintf(CF.path, sizeof(CF.path), "%s/core.%d.%u.sock", base_dir, (int)getpid(), seq++);
    CF.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(CF.lfd, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, CF.path);
    ck_assert_int_eq(bind(CF.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(CF.lfd, 128), 0);

    void *mem = calloc(1, rh_registry_size(nslots));
    ck_assert_ptr_nonnull(mem);
    CF.reg = rh_registry_init(mem, nslots);

    memset(&CF.cfg, 0, sizeof(CF.cfg));
    CF.cfg.listen_fd = CF.lfd;
    CF.cfg.reg = CF.reg;
    CF.cfg.heartbeat_s = heartbeat_s;
    CF.cfg.log = core_log;
    CF.cfg.log_ctx = &CF;
    CF.cfg.log_level = RH_LOG_DEBUG;
    CF.rv = -1;
    ck_assert_int_eq(pthread_create(&CF.th, NULL, core_thread, NULL), 0);
    CF.thread_created = 1;
    /* rh_core_request_stop() only works once the core has set itself up */
    ck_assert_msg(WAIT_FOR(log_has("relay core running"), IO_MS),
                  "the core did not start; log:\n%s", CF.log);
}

/* Stops the core; returns 0 when it ended in time. */
static int core_stop_quiet(void)
{
    int rc = 0;
    if (CF.thread_created) {
        rh_core_request_stop();
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        rc = pthread_timedjoin_np(CF.th, NULL, &ts);
        if (rc != 0) {
            /* cannot recover a wedged core thread: fail loudly */
            fprintf(stderr, "relay core did not stop within 5 s; log:\n%s\n", CF.log);
            abort();
        }
        CF.thread_created = 0;
    }
    if (CF.lfd >= 0) {
        close(CF.lfd);
        CF.lfd = -1;
        unlink(CF.path);
    }
    return rc;
}

static void core_stop(void)
{
    ck_assert_int_eq(core_stop_quiet(), 0);
    ck_assert_int_eq(CF.rv, 0);
    ck_assert_uint_eq(reg_active(), 0);
    ck_assert(log_has("relay core stopped"));
}

static void frd_free_all(void);

/* The core sockets live in one directory per test case, made and removed by an
 * unchecked fixture: in fork mode that runs in the runner process, so the
 * directory goes even when a failing test's process ends without its teardown. */

static void base_setup(void)
{
    strcpy(base_dir, "/tmp/rh_core_test.XXXXXX");
    if (!mkdtemp(base_dir))
        base_dir[0] = '\0';
}

static void base_teardown(void)
{
    if (!base_dir[0])
        return;
    DIR *d = opendir(base_dir);
    if (d) {
        struct dirent *e;
        char p[sizeof(base_dir) + 300];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", base_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(base_dir);
    base_dir[0] = '\0';
}

static void fx_setup(void)
{
    memset(&CF, 0, sizeof(CF));
    CF.lfd = -1;
    pthread_mutex_init(&CF.mu, NULL);
    ntracked = 0;
}

static void fx_teardown(void)
{
    core_stop_quiet();
    signal(SIGPIPE, SIG_IGN);   /* test_no_sigpipe counts them while it runs */
    while (ntracked)
        xclose(tracked[0]);
    frd_free_all();
    free(CF.reg);
    CF.reg = NULL;
    pthread_mutex_destroy(&CF.mu);
}

/* CPU time the core thread has used, in ms (a busy loop shows up here). */
static long core_cpu_ms(void)
{
    clockid_t cid;
    struct timespec ts;
    ck_assert_int_eq(pthread_getcpuclockid(CF.th, &cid), 0);
    ck_assert_int_eq(clock_gettime(cid, &ts), 0);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- targets: loopback TCP sockets driven by the test ------------------------ */

static int tcp_listen(int *port, int rcvbuf, int backlog)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = track(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0)   /* inherited by accepted sockets; must be set before listen */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int tcp_accept(int lfd, int ms)
{
    struct pollfd p = { lfd, POLLIN, 0 };
    if (poll(&p, 1, ms) != 1)
        return -1;
    return track(accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/* A loopback port with nobody listening. */
static int closed_port(void)
{
    int port;
    int fd = tcp_listen(&port, 0, 1);
    xclose(fd);
    return port;
}

/* Reads from a target until EOF, reset or timeout, appending at most cap bytes to
 * got. Returns 0 on EOF, -ECONNRESET (or another -errno), or -ETIMEDOUT. */
static int target_read_end(int fd, int ms, unsigned char *got, size_t cap, size_t *len)
{
    long end = now_ms() + ms;
    for (;;) {
        long left = end - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, (int)left) != 1)
            continue;
        unsigned char buf[65536];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        if (got && len) {
            size_t k = (size_t)n < cap - *len ? (size_t)n : cap - *len;
            memcpy(got + *len, buf, k);
            *len += k;
        }
    }
}

static void target_expect_mem(int fd, const unsigned char *want, size_t len);

/* Reads exactly want bytes from a target. */
static void target_expect(int fd, const char *want)
{
    target_expect_mem(fd, (const unsigned char *)want, strlen(want));
}

static void target_send(int fd, const void *data, size_t len)
{
    ck_assert_int_eq(rh_ipc_write_all(fd, data, len, IO_MS), 0);
}

static void target_reset(int fd)
{
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    xclose(fd);
}

/* ---- the handler's side of the core protocol ----------------------------------- */

static int cx(void)
{
    int fd = rh_ipc_connect(CF.path, IO_MS);
    ck_assert_msg(fd >= 0, "connect to the core: %s", strerror(-fd));
    return track(fd);
}

static void send_all(int fd, const void *data, size_t len)
{
    int rv = rh_ipc_write_all(fd, data, len, IO_MS);
    ck_assert_msg(rv == 0, "write to the core: %s", strerror(-rv));
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

static void read_reply_at(int line, int fd, char *buf, size_t max, int ms)
{
    int rv = rh_ipc_read_line(fd, buf, max, ms);
    ck_assert_msg(rv >= 0, "line %d: no reply from the core: %s", line, strerror(-rv));
}
#define read_reply(fd, buf, max, ms) read_reply_at(__LINE__, (fd), (buf), (max), (ms))

/* One request line, one reply line. */
static void req(char *reply, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void req(char *reply, size_t max, const char *fmt, ...)
{
    char line[RH_IPC_LINE_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    int fd = cx();
    send_str(fd, line);
    read_reply(fd, reply, max, IO_MS + 2000);
    xclose(fd);
}

#define ASSERT_PREFIX(s, p) \
    ck_assert_msg(strncmp((s), (p), strlen(p)) == 0, "expected \"%s...\", got \"%s\"", (p), (s))

static void assert_token(const char *tok)
{
    ck_assert_msg(strlen(tok) == RH_TOKEN_LEN, "token \"%s\" has the wrong length", tok);
    for (int i = 0; i < RH_TOKEN_LEN; ++i)
        ck_assert_msg(isdigit((unsigned char)tok[i]) || (tok[i] >= 'a' && tok[i] <= 'f'),
                      "token \"%s\": not lowercase hex at %d", tok, i);
}

/* window: a resumable session keeping that many sent bytes; 0: not resumable */
static void open_session_window(int port, unsigned bufsize, unsigned idle_s, unsigned window,
                                char tok[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX], resume[32] = "";
    if (window)
        snprintf(resume, sizeof(resume), " resume=%u", window);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d %u %u 5%s\n", port, bufsize, idle_s,
        resume);
    ASSERT_PREFIX(reply, "OK ");
    assert_token(reply + 3);
    strcpy(tok, reply + 3);
}

static void open_session(int port, unsigned bufsize, unsigned idle_s, char tok[RH_TOKEN_LEN + 1])
{
    open_session_window(port, bufsize, idle_s, 0, tok);
}

/* PUSH/PULL: the request line, the OK line; the connection then carries frames. */
static int attach(const char *verb, const char *tok, uint64_t off, const char *extra)
{
    char line[RH_IPC_LINE_MAX], want[64];
    int fd = cx();
    snprintf(line, sizeof(line), "%s %s %llu%s\n", verb, tok, (unsigned long long)off, extra);
    send_str(fd, line);
    read_reply(fd, line, sizeof(line), IO_MS);
    snprintf(want, sizeof(want), "OK %llu", (unsigned long long)off);
    ck_assert_msg(strcmp(line, want) == 0, "%s: expected \"%s\", got \"%s\"", verb, want, line);
    return fd;
}

static int push_open(const char *tok, uint64_t off)
{
    return attach("PUSH", tok, off, "");
}

/* A PUSH request line (with " len=<body_len>" unless body_len is NO_LEN) and, in
 * the same write, len bytes of frames; no reply is read (a push that must wait
 * for its turn gets none yet). */
#define NO_LEN SIZE_MAX
static int push_send_len(const char *tok, uint64_t off, const void *frames, size_t len,
                         size_t body_len)
{
    char line[RH_IPC_LINE_MAX + 4096], extra[32] = "";
    int fd = cx();
    if (body_len != NO_LEN)
        snprintf(extra, sizeof(extra), " len=%zu", body_len);
    int n = snprintf(line, sizeof(line), "PUSH %s %llu%s\n", tok, (unsigned long long)off,
                     extra);
    ck_assert(n > 0 && (size_t)n + len <= sizeof(line));
    if (len)
        memcpy(line + n, frames, len);
    send_all(fd, line, (size_t)n + len);
    return fd;
}

static int push_send(const char *tok, uint64_t off, const void *frames, size_t len)
{
    return push_send_len(tok, off, frames, len, NO_LEN);
}

static int pull_open(const char *tok, uint64_t ack)
{
    return attach("PULL", tok, ack, " stream");
}

/* A request that must be refused: returns the reply line. */
static void attach_refused(char *reply, size_t max, const char *verb, const char *tok,
                           uint64_t off, const char *extra)
{
    req(reply, max, "%s %s %llu%s\n", verb, tok, (unsigned long long)off, extra);
    ck_assert_msg(strncmp(reply, "ERR ", 4) == 0, "%s was accepted: \"%s\"", verb, reply);
}

static void send_frame(int fd, int type, const void *payload, size_t len)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, type, len);
    send_all(fd, h, sizeof(h));
    if (len)
        send_all(fd, payload, len);
}

/* Appends a frame to out; returns its size. */
static size_t frame_put(unsigned char *out, int type, const void *payload, size_t len)
{
    rh_frame_hdr(out, type, len);
    if (len)
        memcpy(out + RH_FRAME_HDR, payload, len);
    return RH_FRAME_HDR + len;
}

/* Frame reader for a stream pull connection. It checks what every stream pull
 * must satisfy: the A frames it sees never go backwards. */
typedef struct frd {
    int fd;
    rh_frame_parser p;
    unsigned char buf[1 << 17];
    size_t off, len;
    int nacks;                /* A frames seen */
    uint64_t ack;             /* the offset in the last one */
    int nbeats;               /* H frames seen */
    const char *allowed;      /* frame types accepted; NULL: "DHFREA" (no C frames) */
} frd;

/* readers still allocated, freed by the teardown if a test fails half way */
static frd *readers[16];

static frd *frd_new(int fd)
{
    frd *r = calloc(1, sizeof(*r));
    ck_assert_ptr_nonnull(r);
    r->fd = fd;
    rh_frame_parser_init(&r->p);
    for (int i = 0; i < 16; ++i)
        if (!readers[i]) {
            readers[i] = r;
            return r;
        }
    ck_abort_msg("too many frame readers");
    return NULL;
}

static void frd_free(frd *r)
{
    for (int i = 0; i < 16; ++i)
        if (readers[i] == r)
            readers[i] = NULL;
    free(r);
}

static void frd_free_all(void)
{
    for (int i = 0; i < 16; ++i)
        frd_free(readers[i]);
}

/* Next event (DATA pieces as they come; ev->data valid until the next call):
 * 1 = event, 0 = clean EOF, negative errno (-ETIMEDOUT) otherwise. */
static int frd_next(frd *r, int ms, rh_frame_event *ev)
{
    long end = now_ms() + ms;
    for (;;) {
        while (r->off < r->len) {
            size_t used = rh_frame_parse(&r->p, r->buf + r->off, r->len - r->off,
                                         r->allowed ? r->allowed : "DHFREA", ev);
            r->off += used;
            ck_assert_msg(ev->type != RH_FEV_ERROR, "pull: bad frame: %s", r->p.error);
            if (ev->type == RH_FEV_ACK) {
                ck_assert_msg(r->nacks == 0 || ev->offset >= r->ack,
                              "pull: A frame went back from %llu to %llu",
                              (unsigned long long)r->ack, (unsigned long long)ev->offset);
                r->nacks++;
                r->ack = ev->offset;
            } else if (ev->type == RH_FEV_HEARTBEAT) {
                r->nbeats++;
            }
            if (ev->type != RH_FEV_NONE)
                return 1;
        }
        r->off = r->len = 0;
        long left = end - now_ms();
        ssize_t n = rh_ipc_read(r->fd, r->buf, sizeof(r->buf), left > 0 ? (int)left : 0);
        if (n == 0)
            return r->p.type || r->p.hdr_have ? -EPROTO : 0;
        if (n < 0)
            return (int)n;
        r->len = (size_t)n;
    }
}

static const char *fev_name(rh_frame_event_type t)
{
    static const char *names[] = { "none", "D", "H", "F", "R", "A", "E", "C", "error" };
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* Skips heartbeats and acks (unless one of them is asked for); returns the next
 * other event (asserting one came). */
static void frd_expect(frd *r, rh_frame_event_type type, rh_frame_event *ev)
{
    int rv;
    do
        rv = frd_next(r, IO_MS, ev);
    while (rv == 1 && ev->type != type
           && (ev->type == RH_FEV_HEARTBEAT || ev->type == RH_FEV_ACK));
    ck_assert_msg(rv == 1, "pull: no event (%s), expected %s", rv == 0 ? "EOF" : strerror(-rv),
                  fev_name(type));
    ck_assert_msg(ev->type == type, "pull: event %s, expected %s", fev_name(ev->type),
                  fev_name(type));
}

/* Waits for an A frame carrying want (or returns at once when the last A seen
 * carried it); H frames and A frames with lower offsets (the bytes arrived in
 * pieces) may come first, nothing else. */
static void frd_expect_ack(frd *r, uint64_t want)
{
    rh_frame_event ev;
    if (r->nacks && r->ack == want)
        return;   /* it came already, skipped while waiting for something else */
    for (;;) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull: no A frame with %llu (%s; last A %llu)",
                      (unsigned long long)want, rv == 0 ? "EOF" : strerror(-rv),
                      (unsigned long long)r->ack);
        if (ev.type == RH_FEV_HEARTBEAT)
            continue;
        ck_assert_msg(ev.type == RH_FEV_ACK, "pull: event %s, expected A %llu",
                      fev_name(ev.type), (unsigned long long)want);
        ck_assert_msg(ev.offset <= want, "pull: A %llu, expected %llu",
                      (unsigned long long)ev.offset, (unsigned long long)want);
        if (ev.offset == want)
            return;
    }
}

/* Reads exactly the string want as D payload (in any number of frames). */
static void frd_expect_data(frd *r, const char *want)
{
    size_t n = strlen(want), have = 0;
    char got[4096];
    ck_assert_uint_lt(n, sizeof(got));
    while (have < n) {
        rh_frame_event ev;
        frd_expect(r, RH_FEV_DATA, &ev);
        ck_assert_uint_le(have + ev.len, n);
        memcpy(got + have, ev.data, ev.len);
        have += ev.len;
    }
    ck_assert_mem_eq(got, want, n);
}

static void frd_expect_eof(frd *r)
{
    rh_frame_event ev;
    int rv;
    do
        rv = frd_next(r, IO_MS, &ev);
    while (rv == 1 && (ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK));
    ck_assert_msg(rv == 0, "pull: expected the end of the stream, got %s",
                  rv == 1 ? fev_name(ev.type) : strerror(-rv));
}

/* Asserts that nothing at all comes on a pull for ms. */
static void frd_expect_quiet(frd *r, int ms)
{
    rh_frame_event ev;
    int rv = frd_next(r, ms, &ev);
    ck_assert_msg(rv == -ETIMEDOUT, "pull: expected silence, got %s",
                  rv == 1 ? fev_name(ev.type) : rv == 0 ? "EOF" : strerror(-rv));
}

/* A stream pull: "OK <ack>", then at once an H frame and an A frame with the up
 * offset accepted so far (up). */
static frd *pull_start(const char *tok, uint64_t ack, uint64_t up)
{
    frd *r = frd_new(pull_open(tok, ack));
    rh_frame_event ev;
    int rv = frd_next(r, IO_MS, &ev);
    ck_assert_msg(rv == 1 && ev.type == RH_FEV_HEARTBEAT,
                  "stream pull: first frame %s, expected H",
                  rv == 1 ? fev_name(ev.type) : rv == 0 ? "EOF" : strerror(-rv));
    rv = frd_next(r, IO_MS, &ev);
    ck_assert_msg(rv == 1 && ev.type == RH_FEV_ACK,
                  "stream pull: second frame %s, expected A",
                  rv == 1 ? fev_name(ev.type) : rv == 0 ? "EOF" : strerror(-rv));
    ck_assert_msg(ev.offset == up, "stream pull: first A %llu, expected %llu",
                  (unsigned long long)ev.offset, (unsigned long long)up);
    return r;
}

/* Asserts that nothing comes on fd (a request the core holds back) for ms. */
static void assert_no_reply(int fd, int ms, const char *what)
{
    struct pollfd p = { fd, POLLIN, 0 };
    int rv = poll(&p, 1, ms);
    if (rv == 1) {
        char line[RH_IPC_LINE_MAX];
        int n = rh_ipc_read_line(fd, line, sizeof(line), 100);
        ck_abort_msg("%s: expected no answer yet, got \"%s\"", what,
                     n >= 0 ? line : "(EOF or error)");
    }
    ck_assert_int_eq(rv, 0);
}

/* ---- batch pulls ------------------------------------------------------------------- */

/* One batch answer, parsed and checked for form: "OK <offset> <len>", exactly len
 * bytes, then the core closes; the body is A, D frames (1..65536 each), and one
 * of F, R, E as the last frame. */
typedef struct batch_ans {
    uint64_t off;             /* from the OK line */
    size_t len;               /* from the OK line */
    uint64_t ack;             /* the A frame */
    size_t dlen;              /* D payload, in batch_data */
    int ndata;                /* D frames */
    size_t dmax;              /* largest D frame */
    int term;                 /* 'F', 'R' or 'E' */
    char reason[256];         /* R payload */
    long ms;                  /* from the request to the OK line */
    int nck;                  /* C frames, each right after a D frame */
    uint64_t ck_off[64];      /* ... the offset and CRC each carried */
    uint32_t ck_crc[64];
    size_t ck_dlen[64];       /* ... and dlen when it came */
    int d_alone;              /* D frames not followed at once by a C frame */
} batch_ans;

static unsigned char batch_body[(1 << 20) + 4096];
static unsigned char batch_data[1 << 20];

/* Sends a batch pull; the answer is read by batch_finish(). */
static int batch_send(const char *tok, uint64_t ack, unsigned poll_s)
{
    char line[RH_IPC_LINE_MAX];
    int fd = cx();
    snprintf(line, sizeof(line), "PULL %s %llu batch %u\n", tok, (unsigned long long)ack,
             poll_s);
    send_str(fd, line);
    return fd;
}

static void batch_finish(int fd, long t0, int ms, batch_ans *a)
{
    char line[RH_IPC_LINE_MAX];
    unsigned long long off;
    size_t len;
    int end;

    memset(a, 0, sizeof(*a));
    int rv = rh_ipc_read_line(fd, line, sizeof(line), ms);
    ck_assert_msg(rv >= 0, "batch pull: no answer: %s", strerror(-rv));
    a->ms = now_ms() - t0;
    ck_assert_msg(sscanf(line, "OK %llu %zu%n", &off, &len, &end) == 2 && line[end] == '\0',
                  "batch pull: answer \"%s\"", line);
    a->off = off;
    a->len = len;
    ck_assert_msg(len >= 2 * RH_FRAME_HDR + 8 && len <= sizeof(batch_body),
                  "batch pull: length %zu", len);
    size_t have = 0;
    while (have < len) {
        ssize_t n = rh_ipc_read(fd, batch_body + have, len - have, IO_MS);
        ck_assert_msg(n > 0, "batch pull: body cut after %zu of %zu bytes (%s)", have, len,
                      n == 0 ? "EOF" : strerror((int)-n));
        have += (size_t)n;
    }
    /* nothing follows: the core closes the connection after the answer */
    unsigned char extra[16];
    ssize_t n = rh_ipc_read(fd, extra, sizeof(extra), IO_MS);
    ck_assert_msg(n == 0, "batch pull: %s after the %zu announced bytes",
                  n > 0 ? "more bytes" : "no EOF", len);
    xclose(fd);

    /* the frames: A, D*, then F, R or E ending exactly at len */
    size_t at = 0;
    int nth = 0, prev = 0;
    while (at < len) {
        ck_assert_msg(len - at >= RH_FRAME_HDR, "batch pull: partial header at %zu", at);
        int type = batch_body[at];
        size_t fl = (size_t)batch_body[at + 1] << 16 | (size_t)batch_body[at + 2] << 8
                    | batch_body[at + 3];
        at += RH_FRAME_HDR;
        ck_assert_msg(fl <= len - at, "batch pull: frame %d (%c) runs past the length", nth,
                      type);
        int before = prev;
        if (before == RH_FRAME_DATA && type != RH_FRAME_CHECK)
            a->d_alone++;
        prev = type;
        if (nth == 0) {
            ck_assert_msg(type == RH_FRAME_ACK && fl == 8,
                          "batch pull: first frame %c/%zu, expected A/8", type, fl);
            a->ack = rh_get_u64(batch_body + at);
        } else if (type == RH_FRAME_DATA) {
            ck_assert_msg(!a->term, "batch pull: D after %c", a->term);
            ck_assert_msg(fl >= 1 && fl <= RH_FRAME_MAX, "batch pull: D frame of %zu", fl);
            ck_assert_uint_le(a->dlen + fl, sizeof(batch_data));
            memcpy(batch_data + a->dlen, batch_body + at, fl);
            a->dlen += fl;
            a->ndata++;
            if (fl > a->dmax)
                a->dmax = fl;
        } else if (type == RH_FRAME_CHECK) {
            ck_assert_msg(fl == RH_FRAME_CHECK_LEN, "batch pull: C frame of %zu", fl);
            ck_assert_msg(before == RH_FRAME_DATA, "batch pull: C frame after %c, not D",
                          before);
            ck_assert_int_lt(a->nck, 64);
            a->ck_off[a->nck] = rh_get_u64(batch_body + at);
            a->ck_crc[a->nck] = (uint32_t)batch_body[at + 8] << 24
                                | (uint32_t)batch_body[at + 9] << 16
                                | (uint32_t)batch_body[at + 10] << 8 | batch_body[at + 11];
            a->ck_dlen[a->nck] = a->dlen;
            a->nck++;
        } else {
            ck_assert_msg(type == RH_FRAME_FIN || type == RH_FRAME_RESET
                          || type == RH_FRAME_END, "batch pull: frame type %c", type);
            ck_assert_msg(!a->term, "batch pull: %c after %c", type, a->term);
            ck_assert_msg(type == RH_FRAME_RESET || fl == 0, "batch pull: %c with %zu bytes",
                          type, fl);
            a->term = type;
            snprintf(a->reason, sizeof(a->reason), "%.*s", (int)fl,
                     (const char *)batch_body + at);
        }
        at += fl;
        nth++;
    }
    ck_assert_msg(a->term, "batch pull: the answer has no F, R or E at its end");
}

static void batch_pull(const char *tok, uint64_t ack, unsigned poll_s, int ms, batch_ans *a)
{
    long t0 = now_ms();
    batch_finish(batch_send(tok, ack, poll_s), t0, ms, a);
}

static int session_alive(const char *tok)
{
    rh_slot_view v;
    return rh_registry_check(CF.reg, tok, &v) == RH_REG_OK;
}

/* deterministic stream contents by offset */
static unsigned char gen_byte(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13 ^ (i >> 7) ^ i);
}

/* ---- tests: requests without sessions ------------------------------------------ */

START_TEST(test_stat_and_bad_requests)
{
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=0 closed=0 integrity=0 held=0 refused=0");
    req(reply, sizeof(reply), "HELLO\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 0 4096 10 5\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "OPEN t1 localhost 80 4096 10 5\n");
    ASSERT_PREFIX(reply, "ERR 400 ");
    req(reply, sizeof(reply), "PUSH abc\n");
    ASSERT_PREFIX(reply, "ERR 400 ");

    /* a request line that never ends */
    int fd = cx();
    char big[RH_IPC_LINE_MAX + 100];
    memset(big, 'A', sizeof(big));
    send_all(fd, big, RH_IPC_LINE_MAX);
    read_reply(fd, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 400 ");
    xclose(fd);

    /* clients that go away without a word do not disturb the core */
    for (int i = 0; i < 5; ++i)
        xclose(cx());
    fd = cx();
    send_str(fd, "STA");
    xclose(fd);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=0 closed=0 integrity=0 held=0 refused=0");
    ck_assert_uint_eq(reg_active(), 0);
    core_stop();
}
END_TEST

/* ---- tests: open / close ----------------------------------------------------------- */

START_TEST(test_open_refused)
{
    char reply[RH_IPC_LINE_MAX];
    core_start(8, 20);
    int port = closed_port();
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 10 5\n", port);
    ASSERT_PREFIX(reply, "ERR 502 ");
    ck_assert_msg(strstr(reply, "refused") != NULL, "reply: %s", reply);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    core_stop();
}
END_TEST

START_TEST(test_open_then_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 4096, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);

    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_int_eq(v.state, RH_SLOT_OPEN);
    ck_assert_str_eq(v.target, "t1");
    ck_assert(v.up_bytes == 0 && v.down_bytes == 0);
    ck_assert_uint_eq(reg_active(), 1);
    /* the token names the slot and generation the registry shows */
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    ck_assert_int_eq(rh_token_parse(tok, &slot, &gen, secret), 0);
    ck_assert_uint_eq(v.slot, slot);
    ck_assert_uint_eq(v.gen, gen);
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=0 refused=0");

    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    /* close is an abort: the target sees a reset, not a clean end */
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_UNKNOWN);
    ck_assert(log_has("closed by client"));

    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    core_stop();
}
END_TEST

/* The session table is bounded; a freed slot comes back with a new generation. */
START_TEST(test_table_full)
{
    char tok[RH_TOKEN_LEN + 1], tok2[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(1, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 4096, 30, tok);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 30 5\n", port);
    ASSERT_PREFIX(reply, "ERR 503 ");
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    open_session(port, 4096, 30, tok2);
    ck_assert(strncmp(tok, tok2, 8) == 0);            /* same slot */
    ck_assert(strncmp(tok + 8, tok2 + 8, 8) != 0);    /* new generation */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(session_alive(tok2));
    xclose(l);
    core_stop();
}
END_TEST

/* A target that accepts no connection: its backlog is full, SYNs are dropped. */
static int blackhole_listen(int *port, int fillers[2])
{
    int l = tcp_listen(port, 0, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)*port);
    for (int i = 0; i < 2; ++i) {
        fillers[i] = track(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
        connect(fillers[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    sleep_ms(50);
    return l;
}

START_TEST(test_connect_timeout)
{
    char reply[RH_IPC_LINE_MAX];
    int port, fill[2];
    core_start(8, 20);
    int l = blackhole_listen(&port, fill);
    long t0 = now_ms();
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d 4096 30 1\n", port);
    long dt = now_ms() - t0;
    ASSERT_PREFIX(reply, "ERR 504 ");
    ck_assert_msg(dt >= 900 && dt < 2500, "connect timeout after %ld ms (1 s asked)", dt);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("connect timeout"));

    /* the handler giving up while the core connects frees the session too */
    int fd = cx();
    char line[128];
    snprintf(line, sizeof(line), "OPEN t1 127.0.0.1 %d 4096 30 10\n", port);
    send_str(fd, line);
    ck_assert(WAIT_FOR(reg_active() == 1, IO_MS));
    xclose(fd);
    ck_assert_msg(WAIT_FOR(reg_active() == 0, 1000), "session of a vanished opener kept");
    ck_assert(log_has("opener went away"));
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: data ------------------------------------------------------------------- */

/* A push stream that writes generated D frames (with H and A frames between them)
 * through a non-blocking socket. */
typedef struct psend {
    int fd;
    unsigned seed;
    uint64_t queued;          /* payload bytes put into frames so far */
    uint64_t limit;           /* payload bytes to send in total */
    unsigned char frame[RH_FRAME_HDR + RH_FRAME_MAX];
    size_t flen, foff;
    int fixed;                /* 1: always full 65536 D frames, no H/A */
} psend;

/* Sends as much as the socket takes; returns bytes written (0: would block). */
static size_t psend_pump(psend *ps)
{
    size_t wrote = 0;
    for (;;) {
        if (ps->foff == ps->flen) {
            if (ps->queued >= ps->limit)
                return wrote;
            unsigned r = (unsigned)rand_r(&ps->seed);
            if (!ps->fixed && r % 11 == 0) {            /* heartbeat with padding */
                size_t pad = r % 300;
                rh_frame_hdr(ps->frame, RH_FRAME_HEARTBEAT, pad);
                memset(ps->frame + RH_FRAME_HDR, 'h', pad);
                ps->flen = RH_FRAME_HDR + pad;
            } else if (!ps->fixed && r % 13 == 0) {     /* ack (ignored by v1) */
                rh_frame_hdr(ps->frame, RH_FRAME_ACK, 8);
                rh_put_u64(ps->frame + RH_FRAME_HDR, ps->queued);
                ps->flen = RH_FRAME_HDR + 8;
            } else {
                uint64_t left = ps->limit - ps->queued;
                size_t len = ps->fixed ? RH_FRAME_MAX : 1 + (size_t)(r % RH_FRAME_MAX);
                if (r % 5 == 0 && !ps->fixed)
                    len = 1 + r % 64;                   /* many small ones too */
                if (len > left)
                    len = (size_t)left;
                rh_frame_hdr(ps->frame, RH_FRAME_DATA, len);
                for (size_t i = 0; i < len; ++i)
                    ps->frame[RH_FRAME_HDR + i] = gen_byte(ps->queued + i);
                ps->queued += len;
                ps->flen = RH_FRAME_HDR + len;
            }
            ps->foff = 0;
        }
        ssize_t n = send(ps->fd, ps->frame + ps->foff, ps->flen - ps->foff,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            ps->foff += (size_t)n;
            wrote += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                      "push write: %s", strerror(errno));
        return wrote;
    }
}

static int psend_done(const psend *ps)
{
    return ps->queued >= ps->limit && ps->foff == ps->flen;
}

/* Sends data through push, echoes it at the target, receives it on pull and
 * compares every byte; then half-closes and checks the session ends cleanly. */
static void roundtrip(unsigned bufsize, uint64_t total)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, bufsize, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    frd *pr = pull_start(tok, 0, 0);

    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.seed = bufsize;
    ps.limit = total;
    static unsigned char echo[1 << 18];
    size_t eoff = 0, elen = 0;
    uint64_t got = 0, target_rx = 0;
    long end = now_ms() + 15000;

    while (got < total) {
        ck_assert_msg(now_ms() < end, "round trip stalled: sent %llu, target %llu, got %llu",
                      (unsigned long long)ps.queued, (unsigned long long)target_rx,
                      (unsigned long long)got);
        struct pollfd pf[3] = {
            { push, psend_done(&ps) ? 0 : POLLOUT, 0 },
            { pr->fd, POLLIN, 0 },
            { t, (short)((elen < sizeof(echo) ? POLLIN : 0) | (elen > eoff ? POLLOUT : 0)), 0 },
        };
        poll(pf, 3, 100);
        if (!psend_done(&ps))
            psend_pump(&ps);
        /* the echo target */
        if (elen < sizeof(echo)) {
            ssize_t n = recv(t, echo + elen, sizeof(echo) - elen, MSG_DONTWAIT);
            ck_assert_msg(n != 0, "target saw EOF early");
            if (n > 0) {
                elen += (size_t)n;
                target_rx += (uint64_t)n;
            }
        }
        if (elen > eoff) {
            ssize_t n = send(t, echo + eoff, elen - eoff, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                eoff += (size_t)n;
            if (eoff == elen)
                eoff = elen = 0;
        }
        /* the pull */
        rh_frame_event ev;
        int rv;
        while ((rv = frd_next(pr, 0, &ev)) == 1) {
            ck_assert_msg(ev.type == RH_FEV_DATA || ev.type == RH_FEV_HEARTBEAT
                          || ev.type == RH_FEV_ACK, "unexpected pull event %s",
                          fev_name(ev.type));
            if (ev.type == RH_FEV_ACK)   /* never more than was pushed */
                ck_assert_msg(ev.offset <= ps.queued, "A %llu, but only %llu pushed",
                              (unsigned long long)ev.offset, (unsigned long long)ps.queued);
            if (ev.type != RH_FEV_DATA)
                continue;
            ck_assert_uint_le(got + ev.len, total);
            for (size_t i = 0; i < ev.len; ++i)
                if (ev.data[i] != gen_byte(got + i))
                    ck_abort_msg("byte %llu differs", (unsigned long long)(got + i));
            got += ev.len;
        }
        ck_assert_msg(rv == -ETIMEDOUT, "pull stream broke: %s", rv ? strerror(-rv) : "EOF");
    }
    ck_assert(got == total);
    /* the down direction is idle now: the pull tells that every up byte arrived */
    frd_expect_ack(pr, total);
    ck_assert_msg(pr->nacks >= 2, "%d A frames", pr->nacks);

    /* the registry counts what was accepted and what was sent */
    rh_slot_view v;
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == total, IO_MS));
    ck_assert(v.up_bytes == total);

    /* the client finishes: F, end of the push body */
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    char want[64];
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)total);
    ck_assert_str_eq(reply, want);
    /* the target sees the half-close and closes in turn */
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    xclose(t);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("closed by both ends"));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    ck_assert(CF.reg->total_up == total && CF.reg->total_down == total);
    frd_free(pr);
    xclose(l);
    core_stop();
}

START_TEST(test_roundtrip_1mb)
{
    roundtrip(262144, 1u << 20);
}
END_TEST

/* The smallest buffer: rings wrap all the time and flow control is constant. */
START_TEST(test_roundtrip_small_buffers)
{
    roundtrip(_i == 0 ? 4096 : 1024, 1u << 20);
}
END_TEST

/* F is a half-close: the target sees EOF, and may still answer. */
START_TEST(test_half_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "ping", 4);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    unsigned char got[16];
    size_t gl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, got, sizeof(got), &gl), 0);   /* EOF */
    ck_assert_uint_eq(gl, 4);
    ck_assert_mem_eq(got, "ping", 4);
    /* the session is half-closed, not over */
    ck_assert(session_alive(tok));
    /* a new push after F is refused */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 4, "");
    ASSERT_PREFIX(reply, "ERR 409 ");

    target_send(t, "pong", 4);
    frd_expect_data(pr, "pong");
    ck_assert(session_alive(tok));
    xclose(t);                                          /* the target ends too */
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(CF.reg->total_up == 4 && CF.reg->total_down == 4);
    attach_refused(reply, sizeof(reply), "PULL", tok, 4, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* The target finishes first; the session lives on until the client's F. */
START_TEST(test_target_closes_first)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "bye", 3);
    shutdown(t, SHUT_WR);
    frd_expect_data(pr, "bye");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(session_alive(tok));
    /* everything was delivered: another pull has nothing to wait for */
    attach_refused(reply, sizeof(reply), "PULL", tok, 3, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    /* the up direction still works */
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "last", 4);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    unsigned char got[16];
    size_t gl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, got, sizeof(got), &gl), 0);
    ck_assert_uint_eq(gl, 4);
    ck_assert_mem_eq(got, "last", 4);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Frames that arrive in the same write as the PUSH line are not lost. */
START_TEST(test_frames_behind_request_line)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    unsigned char msg[256];
    int n = snprintf((char *)msg, sizeof(msg), "PUSH %s 0\n", tok);
    size_t at = (size_t)n;
    rh_frame_hdr(msg + at, RH_FRAME_DATA, 5);
    memcpy(msg + at + 4, "fast!", 5);
    at += 9;
    rh_frame_hdr(msg + at, RH_FRAME_HEARTBEAT, 0);
    at += 4;
    rh_frame_hdr(msg + at, RH_FRAME_DATA, 3);
    memcpy(msg + at + 4, "xyz", 3);
    at += 7;
    int push = cx();
    send_all(push, msg, at);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 0");
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 8");
    target_expect(t, "fast!xyz");
    ck_assert(session_alive(tok));
    xclose(l);
    core_stop();
}
END_TEST

/* Several sessions at once, each with its own target, interleaved. */
START_TEST(test_many_sessions)
{
    enum { N = 6 };
    char tok[N][RH_TOKEN_LEN + 1], msg[64], reply[RH_IPC_LINE_MAX];
    int port, t[N], push[N], ended[N] = { 0 };
    frd *pr[N];
    core_start(N, 20);
    int l = tcp_listen(&port, 0, N);
    for (int i = 0; i < N; ++i) {
        open_session(port, 4096, 30, tok[i]);
        t[i] = tcp_accept(l, IO_MS);            /* connections queue in open order */
        ck_assert_int_ge(t[i], 0);
    }
    ck_assert_uint_eq(reg_active(), N);
    for (int i = 0; i < N; ++i) {
        push[i] = push_open(tok[i], 0);
        pr[i] = frd_new(pull_open(tok[i], 0));
    }
    for (int i = N - 1; i >= 0; --i) {
        snprintf(msg, sizeof(msg), "to target %d", i);
        send_frame(push[i], RH_FRAME_DATA, msg, strlen(msg));
    }
    for (int i = 0; i < N; ++i) {
        snprintf(msg, sizeof(msg), "to target %d", i);
        target_expect(t[i], msg);
        snprintf(msg, sizeof(msg), "from target %d", i);
        target_send(t[i], msg, strlen(msg));
    }
    for (int i = N - 1; i >= 0; --i) {
        snprintf(msg, sizeof(msg), "from target %d", i);
        frd_expect_data(pr[i], msg);
    }
    /* end them in a scrambled order: close, reset, fin */
    for (int k = 0; k < N; ++k) {
        int i = (k * 5 + 1) % N;
        rh_frame_event ev;
        if (k % 3 == 0) {
            req(reply, sizeof(reply), "CLOSE %s\n", tok[i]);
            ck_assert_str_eq(reply, "OK");
            frd_expect(pr[i], RH_FEV_RESET, &ev);
        } else if (k % 3 == 1) {
            send_frame(push[i], RH_FRAME_RESET, NULL, 0);
            frd_expect(pr[i], RH_FEV_RESET, &ev);
        } else {
            send_frame(push[i], RH_FRAME_FIN, NULL, 0);
            ck_assert_int_eq(target_read_end(t[i], IO_MS, NULL, 0, NULL), 0);
            xclose(t[i]);
            frd_expect(pr[i], RH_FEV_FIN, &ev);
        }
        frd_expect_eof(pr[i]);
        ended[i] = 1;
        ck_assert(WAIT_FOR(!session_alive(tok[i]) && reg_active() == (uint32_t)(N - 1 - k),
                           IO_MS));
        for (int j = 0; j < N; ++j)
            ck_assert_msg(ended[j] || session_alive(tok[j]), "session %d ended with %d", j, i);
        frd_free(pr[i]);
    }
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=6 closed=6 integrity=0 held=0 refused=0");
    xclose(l);
    core_stop();
}
END_TEST

/* A numeric IPv6 target (skipped where the host has no ::1). */
START_TEST(test_ipv6_target)
{
    char reply[RH_IPC_LINE_MAX], tok[RH_TOKEN_LEN + 1];
    int l = track(socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    struct sockaddr_in6 sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 4) != 0) {
        fprintf(stderr, "test_ipv6_target: no IPv6 loopback here, skipped\n");
        return;
    }
    getsockname(l, (struct sockaddr *)&sa, &sl);
    core_start(4, 20);
    req(reply, sizeof(reply), "OPEN v6 ::1 %d 4096 30 5\n", ntohs(sa.sin6_port));
    ASSERT_PREFIX(reply, "OK ");
    strcpy(tok, reply + 3);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "six", 3);
    target_expect(t, "six");
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_str_eq(v.target, "v6");
    core_stop();
}
END_TEST

/* A stream pull tells the client how far the up direction got: an A frame with
 * the accepted offset at its start, then one whenever that offset advances. */
START_TEST(test_pull_acks)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    /* bytes accepted before the pull began: its first A says so */
    frd *pr = pull_start(tok, 0, 3);
    send_frame(push, RH_FRAME_DATA, "defgh", 5);
    target_expect(t, "defgh");
    frd_expect_ack(pr, 8);
    /* H and A frames on the push carry no up bytes: no A for them */
    unsigned char a8[8];
    rh_put_u64(a8, 0);
    send_frame(push, RH_FRAME_HEARTBEAT, "pad", 3);
    send_frame(push, RH_FRAME_ACK, a8, 8);
    frd_expect_quiet(pr, 200);
    /* data both ways: the pull carries the down bytes and the new up offset */
    send_frame(push, RH_FRAME_DATA, "ij", 2);
    target_expect(t, "ij");
    target_send(t, "xyz", 3);
    frd_expect_data(pr, "xyz");
    frd_expect_ack(pr, 10);
    /* 300 KB up with the pull idle: the A frames follow the offset up to the end */
    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.seed = 7;
    ps.queued = 10;
    ps.limit = 10 + 300000;
    uint64_t rx = 10;
    unsigned char buf[65536];
    long end = now_ms() + 10000;
    while (rx < ps.limit) {
        ck_assert_msg(now_ms() < end, "stalled: target has %llu", (unsigned long long)rx);
        if (!psend_done(&ps))
            psend_pump(&ps);
        struct pollfd p = { t, POLLIN, 0 };
        poll(&p, 1, 50);
        ssize_t n = recv(t, buf, sizeof(buf), MSG_DONTWAIT);
        ck_assert_msg(n != 0, "target saw EOF");
        if (n > 0)
            rx += (uint64_t)n;
    }
    frd_expect_ack(pr, ps.limit);
    ck_assert_msg(pr->nacks >= 4, "%d A frames", pr->nacks);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    snprintf((char *)buf, sizeof(buf), "DONE %llu", (unsigned long long)ps.limit);
    ck_assert_str_eq(reply, (char *)buf);
    frd_expect_quiet(pr, 100);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Several pushes in flight: each waits, unread, until the bytes before it have
 * been accepted, so the target gets them in offset order whatever order the
 * requests came in. */
START_TEST(test_push_queue)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    /* the last one first, its whole body sent with the request line */
    int p3 = push_send(tok, 10, f, frame_put(f, RH_FRAME_DATA, "!!!", 3));
    shutdown(p3, SHUT_WR);
    int p2 = push_send(tok, 5, f, frame_put(f, RH_FRAME_DATA, "world", 5));
    shutdown(p2, SHUT_WR);
    assert_no_reply(p3, 200, "push at 10 before 0 and 5");
    assert_no_reply(p2, 1, "push at 5 before 0");
    struct pollfd tp = { t, POLLIN, 0 };
    ck_assert_msg(poll(&tp, 1, 0) == 0, "the target got bytes of a waiting push");
    ck_assert(session_alive(tok));

    int p1 = push_open(tok, 0);
    send_frame(p1, RH_FRAME_DATA, "hello", 5);
    target_expect(t, "hello");
    frd_expect_ack(pr, 5);
    /* offset 5 is reached, but the push before it has not ended */
    assert_no_reply(p2, 200, "push at 5 while the push at 0 is active");
    shutdown(p1, SHUT_WR);
    read_reply(p1, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 10");
    read_reply(p3, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 10");
    read_reply(p3, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 13");
    target_expect(t, "world!!!");
    frd_expect_ack(pr, 13);

    /* a push that waits behind an active one takes over when it ends */
    int a = push_open(tok, 13);
    int b = push_send(tok, 15, f, frame_put(f, RH_FRAME_DATA, "cd", 2));
    send_frame(a, RH_FRAME_DATA, "ab", 2);
    target_expect(t, "ab");
    assert_no_reply(b, 150, "push at 15 while the push at 13 is active");
    shutdown(a, SHUT_WR);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 15");
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 15");
    target_expect(t, "cd");
    send_frame(b, RH_FRAME_FIN, NULL, 0);
    shutdown(b, SHUT_WR);
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 17");
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    frd_expect_ack(pr, 17);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Resumable: a push at the accepted offset is the next one when the active push
 * has its whole body (the handler said its length), and waits; otherwise it is a
 * retry after a cut and takes over. */
START_TEST(test_resumable_next_push_or_retry)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session_window(port, 65536, 30, 65536, tok);
    int t = tcp_accept(l, IO_MS);

    /* A holds its whole body but has not ended; B starts where A stops */
    size_t fl = frame_put(f, RH_FRAME_DATA, "hello", 5);
    int a = push_send_len(tok, 0, f, fl, fl);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 0");
    target_expect(t, "hello");
    fl = frame_put(f, RH_FRAME_DATA, "world", 5);
    int b = push_send_len(tok, 5, f, fl, fl);
    assert_no_reply(b, 200, "the next push while the complete one has not ended");
    assert_no_reply(a, 1, "a complete push while the next one waits");
    shutdown(a, SHUT_WR);
    read_reply(a, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    target_expect(t, "world");

    /* C, the next one again, announces more body than it will send */
    fl = frame_put(f, RH_FRAME_DATA, "abc", 3);
    int c = push_send_len(tok, 10, f, fl, fl + 8);
    assert_no_reply(c, 200, "the next push while the complete one has not ended");
    shutdown(b, SHUT_WR);
    read_reply(b, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 10");
    xclose(b);
    read_reply(c, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 10");
    target_expect(t, "abc");
    /* C has not sent all it announced: a push at the accepted offset is a retry
     * after a cut and replaces it */
    int d = push_send_len(tok, 13, NULL, 0, 100);
    read_reply(d, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 13");
    read_reply(c, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    xclose(c);
    send_frame(d, RH_FRAME_DATA, "xyz", 3);
    target_expect(t, "xyz");
    send_frame(d, RH_FRAME_FIN, NULL, 0);
    shutdown(d, SHUT_WR);
    read_reply(d, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 16");
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);
    xclose(d);
    xclose(t);
    xclose(l);
    core_stop();
}
END_TEST

/* At most 8 pushes wait per session; a reset refuses the waiting ones with 410.
 * _i: 0 the client closes the session, 1 an active push sends R. */
START_TEST(test_push_queue_limit_and_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port, w[8];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    for (int i = 0; i < 8; ++i)
        w[i] = push_send(tok, (uint64_t)(i + 1) * 10, NULL, 0);
    for (int i = 0; i < 8; ++i)
        assert_no_reply(w[i], i ? 1 : 200, "a push ahead of the accepted offset");
    attach_refused(reply, sizeof(reply), "PUSH", tok, 90, "");
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert(session_alive(tok));
    for (int i = 0; i < 8; ++i)
        assert_no_reply(w[i], 1, "a waiting push after a refused one");
    if (_i == 0) {
        req(reply, sizeof(reply), "CLOSE %s\n", tok);
        ck_assert_str_eq(reply, "OK");
    } else {
        /* the push at the accepted offset does not wait behind the others */
        int p = push_open(tok, 0);
        send_frame(p, RH_FRAME_DATA, "0123456789", 10);
        target_expect(t, "0123456789");
        send_frame(p, RH_FRAME_RESET, "enough", 6);
        read_reply(p, reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 410 ");
    }
    for (int i = 0; i < 8; ++i) {
        read_reply(w[i], reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 410 ");
        ck_assert_msg(strstr(reply, _i ? "enough" : "closed by client") != NULL,
                      "reply: %s", reply);
    }
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A waiting push is not read, but a handler that hangs up while it waits (its
 * own timeout ran out) must give its place back: 8 such would refuse every later
 * push of the session with 409. */
START_TEST(test_push_wait_hangup)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port, w[8];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    for (int i = 0; i < 8; ++i)
        w[i] = push_send(tok, (uint64_t)(i + 1) * 10, NULL, 0);
    assert_no_reply(w[0], 200, "a push ahead of the accepted offset");
    for (int i = 0; i < 8; ++i)
        xclose(w[i]);
    sleep_ms(200);
    int late = push_send(tok, 3, NULL, 0);
    assert_no_reply(late, 200, "a push after 8 waiting ones hung up");
    int p = push_open(tok, 0);
    send_frame(p, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    shutdown(p, SHUT_WR);
    read_reply(p, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    read_reply(late, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 3");
    xclose(l);
    core_stop();
}
END_TEST

/* PROTOCOL.md push: "A push that waits longer than RelayIdleTimeout is refused
 * with 409" (here the session is kept alive by the active push's heartbeats). */
START_TEST(test_push_wait_timeout)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    int w = push_send(tok, 100, NULL, 0);
    long t0 = now_ms();
    struct pollfd p = { w, POLLIN, 0 };
    while (now_ms() - t0 < 2500 && poll(&p, 1, 200) == 0)
        send_frame(push, RH_FRAME_HEARTBEAT, NULL, 0);
    long dt = now_ms() - t0;
    read_reply(w, reply, sizeof(reply), 1);
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(dt >= 800 && dt < 2500, "the waiting push was refused after %ld ms "
                  "(idle 1 s)", dt);
    /* the session and its active push go on */
    ck_assert(session_alive(tok));
    send_frame(push, RH_FRAME_DATA, "on", 2);
    target_expect(t, "on");
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: batch pulls ------------------------------------------------------------- */

/* Nothing to send: the long-poll answers when poll_s runs out, with an A frame
 * and E (16 bytes), and the session goes on. */
START_TEST(test_batch_empty)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "up!", 3);
    target_expect(t, "up!");
    batch_pull(tok, 0, 1, IO_MS, &a);
    ck_assert_msg(a.ms >= 900 && a.ms < 2000, "empty answer after %ld ms (1 s asked)", a.ms);
    ck_assert_uint_eq(a.off, 0);
    ck_assert_uint_eq(a.len, 16);
    ck_assert_uint_eq(a.ack, 3);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    ck_assert(session_alive(tok));
    /* the next one: a stream pull may follow a batch one */
    frd *pr = pull_start(tok, 0, 3);
    target_send(t, "down", 4);
    frd_expect_data(pr, "down");
    frd_free(pr);
    send_frame(push, RH_FRAME_DATA, "x", 1);
    target_expect(t, "x");
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 4");
    xclose(l);
    core_stop();
}
END_TEST

/* The long-poll answers as soon as the target sends, without waiting for more;
 * the next one starts where it ended. */
START_TEST(test_batch_prompt)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int fd = batch_send(tok, 0, 5);
    assert_no_reply(fd, 300, "a batch pull with nothing to send");
    long t0 = now_ms();
    target_send(t, "hello", 5);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came %ld ms after the target's bytes", a.ms);
    ck_assert_uint_eq(a.off, 0);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 5 + 4);
    ck_assert_uint_eq(a.ack, 0);
    ck_assert_int_eq(a.ndata, 1);
    ck_assert_uint_eq(a.dlen, 5);
    ck_assert_mem_eq(batch_data, "hello", 5);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    /* bytes already held: answered at once */
    target_send(t, "again", 5);
    target_send(t, "!", 1);
    sleep_ms(100);
    batch_pull(tok, 5, 5, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came after %ld ms with bytes held", a.ms);
    ck_assert_uint_eq(a.off, 5);
    ck_assert_uint_eq(a.dlen, 6);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 6 + 4);
    ck_assert_mem_eq(batch_data, "again!", 6);
    ck_assert_int_eq(a.term, RH_FRAME_END);
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == 11, IO_MS));
    /* the ack must be what was sent */
    attach_refused(reply, sizeof(reply), "PULL", tok, 5, " batch 5");
    ASSERT_PREFIX(reply, "ERR 416 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    xclose(l);
    core_stop();
}
END_TEST

/* An answer holds every byte the core has, in D frames of at most 64 KiB, and
 * its length is exact; then the target's FIN ends the down direction with F. */
START_TEST(test_batch_large_then_fin)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    const size_t total = 200000;
    static unsigned char src[200000];
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 262144, 30, tok);
    int t = tcp_accept(l, IO_MS);
    for (size_t i = 0; i < total; ++i)
        src[i] = gen_byte(i);
    target_send(t, src, total);
    sleep_ms(300);
    uint64_t got = 0;
    int answers = 0;
    while (got < total) {
        ck_assert_msg(answers < 50, "%llu of %zu bytes after %d answers",
                      (unsigned long long)got, total, answers);
        batch_pull(tok, got, 5, IO_MS, &a);
        ck_assert_uint_eq(a.off, got);
        ck_assert_int_eq(a.term, RH_FRAME_END);
        ck_assert_uint_ge(a.dlen, 1);
        ck_assert_uint_le(got + a.dlen, total);
        ck_assert_uint_eq(a.len, 4 + 8 + a.dlen + 4 * (size_t)a.ndata + 4);
        ck_assert_int_eq(a.ndata, (int)((a.dlen + RH_FRAME_MAX - 1) / RH_FRAME_MAX));
        if (answers == 0)   /* the core held all of it (its buffer is 256 KiB) */
            ck_assert_msg(a.dlen == total && a.dmax == RH_FRAME_MAX,
                          "first answer: %zu bytes, largest frame %zu", a.dlen, a.dmax);
        ck_assert_mem_eq(batch_data, src + got, a.dlen);
        got += a.dlen;
        answers++;
    }
    /* a long-poll waiting when the target ends: F at once, after no data */
    int fd = batch_send(tok, got, 5);
    assert_no_reply(fd, 200, "a batch pull with nothing to send");
    long t0 = now_ms();
    shutdown(t, SHUT_WR);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_msg(a.ms < 100, "the answer came %ld ms after the target's FIN", a.ms);
    ck_assert_uint_eq(a.len, 16);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    /* the down direction is over; the up one still works, and its F ends the session */
    attach_refused(reply, sizeof(reply), "PULL", tok, got, " batch 5");
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(session_alive(tok));
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "end", 3);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    unsigned char rx[8];
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
    ck_assert(rl == 3 && memcmp(rx, "end", 3) == 0);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(log_has("closed by both ends"));
    ck_assert(CF.reg->total_down == total && CF.reg->total_up == 3);
    xclose(l);
    core_stop();
}
END_TEST

/* Data and FIN both held: one answer carries the data and F. */
START_TEST(test_batch_data_and_fin)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    target_send(t, "bye", 3);
    shutdown(t, SHUT_WR);
    sleep_ms(100);
    batch_pull(tok, 0, 5, IO_MS, &a);
    ck_assert_uint_eq(a.len, 4 + 8 + 4 + 3 + 4);
    ck_assert(a.dlen == 3 && memcmp(batch_data, "bye", 3) == 0);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    ck_assert(session_alive(tok));
    xclose(l);
    core_stop();
}
END_TEST

/* A target reset ends the answer with R and its reason, after the bytes it sent
 * first; the session is over. _i: 0 reset before the pull, 1 while it waits. */
START_TEST(test_batch_target_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    if (_i == 0) {
        target_send(t, "zz", 2);
        target_reset(t);
        sleep_ms(100);
        batch_pull(tok, 0, 5, IO_MS, &a);
        ck_assert(a.dlen == 2 && memcmp(batch_data, "zz", 2) == 0);
    } else {
        int fd = batch_send(tok, 0, 5);
        assert_no_reply(fd, 200, "a batch pull with nothing to send");
        long t0 = now_ms();
        target_reset(t);
        batch_finish(fd, t0, IO_MS, &a);
        ck_assert_msg(a.ms < 100, "the answer came %ld ms after the reset", a.ms);
        ck_assert_int_eq(a.ndata, 0);
    }
    ck_assert_int_eq(a.term, RH_FRAME_RESET);
    ck_assert_msg(strncmp(a.reason, "target reset the connection", 27) == 0,
                  "R reason: %s", a.reason);
    ck_assert_uint_eq(a.len, 4 + 8 + (a.dlen ? 4 + a.dlen : 0) + 4 + strlen(a.reason));
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    attach_refused(reply, sizeof(reply), "PULL", tok, a.dlen, " batch 5");
    ASSERT_PREFIX(reply, "ERR 410 ");
    xclose(l);
    core_stop();
}
END_TEST

/* One pull at a time; a waiting long-poll whose handler goes away frees its
 * place; one that waits when the session is closed gets A and R. */
START_TEST(test_batch_conflicts_and_close)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    batch_ans a;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int fd = batch_send(tok, 0, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " batch 5");
    ASSERT_PREFIX(reply, "ERR 409 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    long t0 = now_ms();
    target_send(t, "one", 3);
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert(a.dlen == 3 && memcmp(batch_data, "one", 3) == 0);

    /* the handler gives up on a waiting long-poll: the next pull is accepted */
    fd = batch_send(tok, 3, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");
    xclose(fd);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));
    fd = batch_send(tok, 3, 5);
    assert_no_reply(fd, 100, "a batch pull with nothing to send");

    /* the session is closed under it: a complete answer with R */
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "12345", 5);
    target_expect(t, "12345");
    t0 = now_ms();
    req(reply, sizeof(reply), "CLOSE %s\n", tok);
    ck_assert_str_eq(reply, "OK");
    batch_finish(fd, t0, IO_MS, &a);
    ck_assert_uint_eq(a.off, 3);
    ck_assert_uint_eq(a.ack, 5);
    ck_assert_int_eq(a.term, RH_FRAME_RESET);
    ck_assert_msg(strstr(a.reason, "closed by client") != NULL, "R reason: %s", a.reason);
    ck_assert_uint_eq(a.len, 16 + strlen(a.reason));
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    xclose(l);
    core_stop();
}
END_TEST

/* The core writes to a pull whose reader stopped reading for good (shutdown
 * SHUT_RD): the write fails with EPIPE, which must not raise SIGPIPE (the core
 * may run where SIGPIPE is not ignored). The pull detaches, no byte is lost. */
static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

START_TEST(test_no_sigpipe)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigpipes = 0;
    ck_assert_int_eq(sigaction(SIGPIPE, &sa, NULL), 0);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    ck_assert_int_eq(shutdown(pr->fd, SHUT_RD), 0);
    target_send(t, "lost?", 5);
    sleep_ms(200);
    ck_assert_msg(sigpipes == 0, "%d SIGPIPE raised", (int)sigpipes);
    ck_assert(session_alive(tok));
    frd_free(pr);
    pr = pull_start(tok, 0, 0);
    frd_expect_data(pr, "lost?");
    frd_free(pr);
    xclose(l);
    core_stop();
    ck_assert_msg(sigpipes == 0, "%d SIGPIPE raised", (int)sigpipes);
    signal(SIGPIPE, SIG_IGN);
}
END_TEST

/* ---- tests: resets and errors -------------------------------------------------------- */

START_TEST(test_push_reset)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "abc", 3);
    target_expect(t, "abc");
    send_frame(push, RH_FRAME_RESET, "client abort", 12);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert_msg(strstr(reply, "client abort") != NULL, "reply: %s", reply);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= 12 && memmem(ev.data, ev.len, "client abort", 12) != NULL,
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(!session_alive(tok));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_push_bad_frames)
{
    /* 0: unknown type, 1: E on a push, 2: too long, 3: data after F */
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    unsigned char h[RH_FRAME_HDR];
    switch (_i) {
    case 0:
        rh_frame_hdr(h, 'Z', 0);
        send_all(push, h, 4);
        break;
    case 1:
        rh_frame_hdr(h, RH_FRAME_END, 0);
        send_all(push, h, 4);
        break;
    case 2:
        rh_frame_hdr(h, RH_FRAME_DATA, RH_FRAME_MAX + 1);
        send_all(push, h, 4);
        break;
    default:
        send_frame(push, RH_FRAME_FIN, NULL, 0);
        send_frame(push, RH_FRAME_DATA, "late", 4);
        break;
    }
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 400 ");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    frd_expect_eof(pr);
    /* the target is reset; after F it has seen the half-close first, and a
     * socket that saw FIN reports EOF, not the later RST */
    int rv = target_read_end(t, IO_MS, NULL, 0, NULL);
    if (_i == 3)
        ck_assert_msg(rv == 0 || rv == -ECONNRESET, "target: %s", strerror(-rv));
    else
        ck_assert_msg(rv == -ECONNRESET, "target: %s", rv ? strerror(-rv) : "clean EOF");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A target reset: the bytes it sent first still arrive, then R. */
START_TEST(test_target_reset)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "abc", 3);
    frd_expect_data(pr, "abc");
    target_reset(t);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    /* the reason is whole (it was once copied onto itself with snprintf) */
    ck_assert_msg(ev.len > 27 && memcmp(ev.data, "target reset the connection", 27) == 0,
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert(CF.reg->total_down == 3);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* One pull per session; pushes apply in offset order, one at a time: a push that
 * comes while another is active, or whose offset is ahead, waits for its turn. */
START_TEST(test_conflicts)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);

    int push = push_open(tok, 0);
    int early = push_send(tok, 0, NULL, 0);
    assert_no_reply(early, 200, "a push while another is active");
    frd *pr = pull_start(tok, 0, 0);
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " batch 5");
    ASSERT_PREFIX(reply, "ERR 409 ");
    /* the refused requests did not disturb the attached ones */
    send_frame(push, RH_FRAME_DATA, "hey", 3);
    target_expect(t, "hey");
    frd_expect_ack(pr, 3);
    target_send(t, "yo", 2);
    frd_expect_data(pr, "yo");

    /* the push body ends: DONE with the accepted offset */
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 3");
    xclose(push);
    /* the push that waited wanted offset 0, which is behind now */
    read_reply(early, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(strstr(reply, "3") != NULL, "reply: %s", reply);
    xclose(early);
    /* a push below the accepted offset is refused at once */
    attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
    ASSERT_PREFIX(reply, "ERR 409 ");
    ck_assert_msg(strstr(reply, "3") != NULL, "reply: %s", reply);
    /* a push ahead waits until the bytes before it have come */
    int ahead = push_send(tok, 5, NULL, 0);
    assert_no_reply(ahead, 200, "a push ahead of the accepted offset");
    push = push_open(tok, 3);
    send_frame(push, RH_FRAME_DATA, "!!", 2);
    target_expect(t, "!!");
    frd_expect_ack(pr, 5);
    assert_no_reply(ahead, 100, "a push while the one before it is active");
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 5");
    read_reply(ahead, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 5");
    send_frame(ahead, RH_FRAME_DATA, "?", 1);
    target_expect(t, "?");
    shutdown(ahead, SHUT_WR);
    read_reply(ahead, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 6");
    ck_assert(session_alive(tok));
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.up_bytes == 6 && v.down_bytes == 2, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* _i: 0 stream pull, 1 batch pull */
START_TEST(test_pull_ack_mismatch)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    attach_refused(reply, sizeof(reply), "PULL", tok, 0, " bogus");
    ASSERT_PREFIX(reply, "ERR 400 ");
    ck_assert(session_alive(tok));
    /* asking for bytes the core does not have: 416 and the session is over */
    attach_refused(reply, sizeof(reply), "PULL", tok, 7, _i ? " batch 5" : " stream");
    ASSERT_PREFIX(reply, "ERR 416 ");
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_bad_tokens)
{
    char tok[RH_TOKEN_LEN + 1], bad[128], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);

    /* malformed: non-hex, too short, too long for the protocol */
    strcpy(bad, tok);
    bad[20] = 'z';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%.47s", tok);
    attach_refused(reply, sizeof(reply), "PULL", bad, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%s%s", tok, "00");
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");
    snprintf(bad, sizeof(bad), "%s%s", tok, tok);    /* does not fit the line field */
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 400 ");

    /* well-formed but unknown: wrong secret, generation, slot */
    strcpy(bad, tok);
    bad[RH_TOKEN_LEN - 1] = bad[RH_TOKEN_LEN - 1] == '0' ? '1' : '0';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    attach_refused(reply, sizeof(reply), "PULL", bad, 0, " stream");
    ASSERT_PREFIX(reply, "ERR 410 ");
    req(reply, sizeof(reply), "CLOSE %s\n", bad);
    ASSERT_PREFIX(reply, "ERR 410 ");
    strcpy(bad, tok);
    bad[15] = bad[15] == '0' ? '1' : '0';
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    strcpy(bad, tok);
    memcpy(bad, "ffffffff", 8);
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");
    memcpy(bad, "00000007", 8);                       /* a free slot in range */
    attach_refused(reply, sizeof(reply), "PUSH", bad, 0, "");
    ASSERT_PREFIX(reply, "ERR 410 ");

    /* none of that touched the real session */
    ck_assert(session_alive(tok));
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "ok", 2);
    target_expect(t, "ok");
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: timers -------------------------------------------------------------------- */

START_TEST(test_idle_timeout)
{
    char tok[RH_TOKEN_LEN + 1], tok2[RH_TOKEN_LEN + 1], keep[3][RH_TOKEN_LEN + 1];
    char reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    /* long-lived sessions around the short ones share the timer heap */
    open_session(port, 65536, 30, keep[0]);
    open_session(port, 65536, 1, tok);
    int tk0 = tcp_accept(l, IO_MS);
    int t = tcp_accept(l, IO_MS);
    open_session(port, 65536, 30, keep[1]);
    open_session(port, 65536, 1, tok2);               /* nothing attached at all */
    int tk1 = tcp_accept(l, IO_MS);
    int t2 = tcp_accept(l, IO_MS);
    open_session(port, 65536, 30, keep[2]);
    ck_assert(tk0 >= 0 && tk1 >= 0);
    long t0 = now_ms();
    frd *pr = pull_start(tok, 0, 0);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    long dt = now_ms() - t0;
    ck_assert_msg(dt >= 800 && dt < 2500, "idle reset after %ld ms (1 s asked)", dt);
    ck_assert_msg(memmem(ev.data, ev.len, "idle", 4) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_msg(WAIT_FOR(reg_active() == 3, 2000), "%u sessions left", reg_active());
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert_int_eq(target_read_end(t2, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert(log_has("idle timeout"));
    ck_assert(!session_alive(tok) && !session_alive(tok2));
    for (int i = 0; i < 3; ++i)
        ck_assert_msg(session_alive(keep[i]), "session %d with idle 30 s ended", i);
    /* taking one out of the middle of the heap leaves the others in order */
    req(reply, sizeof(reply), "CLOSE %s\n", keep[1]);
    ck_assert_str_eq(reply, "OK");
    ck_assert(WAIT_FOR(reg_active() == 2, IO_MS));
    ck_assert(session_alive(keep[0]) && session_alive(keep[2]));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Frames on the push keep a session alive past its idle timeout (PROTOCOL.md
 * Timeouts: the client is heard from). */
START_TEST(test_idle_refreshed_by_push)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    long t0 = now_ms(), end = t0 + 2500;
    while (now_ms() < end) {
        send_frame(push, RH_FRAME_HEARTBEAT, NULL, 0);
        sleep_ms(200);
        ck_assert_msg(session_alive(tok), "session reset after %ld ms of H every 200 ms "
                      "on the push (idle 1 s)", now_ms() - t0);
    }
    send_frame(push, RH_FRAME_DATA, "still", 5);
    target_expect(t, "still");
    ck_assert(!log_has("idle timeout"));
    xclose(l);
    core_stop();
}
END_TEST

/* PROTOCOL.md Timeouts: the idle timer counts only what comes from the client.
 * A target that keeps talking to a silent client does not keep the session. */
START_TEST(test_idle_not_refreshed_by_target_bytes)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 1, tok);
    int t = tcp_accept(l, IO_MS);
    long t0 = now_ms();
    frd *pr = pull_start(tok, 0, 0);
    uint64_t got = 0, sent = 0;
    rh_frame_event ev;
    for (;;) {
        ck_assert_msg(now_ms() - t0 < 3000, "session alive after %ld ms (idle 1 s)",
                      now_ms() - t0);
        /* no assertion on the send: the reset shows on the pull with its reason */
        if (send(t, "d", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
            sent++;
        int rv = frd_next(pr, 100, &ev);
        if (rv == -ETIMEDOUT)
            continue;
        ck_assert_msg(rv == 1, "pull: %s", rv == 0 ? "EOF" : strerror(-rv));
        if (ev.type == RH_FEV_DATA)
            got += ev.len;
        else if (ev.type == RH_FEV_RESET)
            break;
        else
            ck_assert_msg(ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK,
                          "pull: event %s", fev_name(ev.type));
    }
    long dt = now_ms() - t0;
    ck_assert_msg(memmem(ev.data, ev.len, "idle", 4) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    ck_assert_msg(dt >= 800 && dt < 2500, "idle reset after %ld ms (1 s asked)", dt);
    ck_assert_msg(got >= 3, "only %llu of %llu target bytes came through before the reset",
                  (unsigned long long)got, (unsigned long long)sent);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_heartbeat)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 1);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    /* the H at the start of the pull does not count: the next one comes after 1 s */
    frd *pr = pull_start(tok, 0, 0);
    long t0 = now_ms();
    rh_frame_event ev;
    ck_assert_int_eq(frd_next(pr, 2500, &ev), 1);
    long dt = now_ms() - t0;
    ck_assert_msg(ev.type == RH_FEV_HEARTBEAT, "event %s", fev_name(ev.type));
    ck_assert_msg(dt >= 700 && dt <= 2200, "first heartbeat after %ld ms (1 s asked)", dt);
    /* data resets the heartbeat clock and goes first */
    target_send(t, "x", 1);
    ck_assert_int_eq(frd_next(pr, IO_MS, &ev), 1);
    ck_assert_msg(ev.type == RH_FEV_DATA && ev.len == 1 && ev.data[0] == 'x',
                  "event %s", fev_name(ev.type));
    t0 = now_ms();
    ck_assert_int_eq(frd_next(pr, 2500, &ev), 1);
    ck_assert_msg(ev.type == RH_FEV_HEARTBEAT, "event %s", fev_name(ev.type));
    dt = now_ms() - t0;
    ck_assert_msg(dt >= 700 && dt <= 2200, "heartbeat %ld ms after data", dt);
    frd_free(pr);
    xclose(l);
    core_stop();
    free(CF.reg);
    CF.reg = NULL;

    /* the interval belongs to the run: a core started without one (0: the
     * default, 20 s) does not keep the 1 s of the run before */
    core_start(8, 0);
    l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    ck_assert_int_ge(tcp_accept(l, IO_MS), 0);
    pr = pull_start(tok, 0, 0);
    frd_expect_quiet(pr, 1200);
    ck_assert_int_eq(pr->nbeats, 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: flow control and memory -------------------------------------------------- */

/* Writes to fd until it stays unwritable for quiet_ms (or max bytes / 8 s pass).
 * Returns the bytes written. */
static uint64_t fill_until_blocked(psend *ps, int quiet_ms, uint64_t max)
{
    long end = now_ms() + 8000;
    uint64_t wrote = 0;
    for (;;) {
        ck_assert_msg(now_ms() < end && wrote < max,
                      "the relay kept taking data: %llu bytes", (unsigned long long)wrote);
        wrote += psend_pump(ps);
        struct pollfd p = { ps->fd, POLLOUT, 0 };
        if (poll(&p, 1, quiet_ms) == 0)
            return wrote;
    }
}

START_TEST(test_flow_control_up)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 4096, 8);              /* a small window at the target */
    open_session(port, 4096, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.fixed = 1;
    ps.limit = UINT64_MAX;
    /* the target reads nothing: the core must stop reading the push */
    uint64_t wrote = fill_until_blocked(&ps, 300, 64u << 20);
    ck_assert_msg(wrote < (48u << 20), "%llu bytes before the push blocked",
                  (unsigned long long)wrote);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    uint64_t acc = v.up_bytes;
    ck_assert(acc <= ps.queued);
    long cpu0 = core_cpu_ms();
    sleep_ms(300);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_msg(v.up_bytes == acc, "the core kept accepting (%llu -> %llu)",
                  (unsigned long long)acc, (unsigned long long)v.up_bytes);
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 300 ms while blocked", cpu);
    struct pollfd p = { push, POLLOUT, 0 };
    ck_assert_int_eq(poll(&p, 1, 0), 0);

    /* the target starts reading: everything arrives, in order, and the push
     * goes on to a fixed total, then ends */
    ps.limit = ps.queued + (1u << 20);
    uint64_t rx = 0;
    long end = now_ms() + 10000;
    int fin_sent = 0;
    unsigned char buf[65536];
    for (;;) {
        ck_assert_msg(now_ms() < end, "stalled: target has %llu of %llu (push queued %llu)",
                      (unsigned long long)rx, (unsigned long long)ps.limit,
                      (unsigned long long)ps.queued);
        struct pollfd wq = { push, POLLOUT, 0 };
        if (!psend_done(&ps))
            psend_pump(&ps);
        else if (!fin_sent && poll(&wq, 1, 0) == 1) {
            /* only when it cannot block: this loop is what drains the target */
            send_frame(push, RH_FRAME_FIN, NULL, 0);
            shutdown(push, SHUT_WR);
            fin_sent = 1;
        }
        struct pollfd pf[2] = { { t, POLLIN, 0 }, { push, psend_done(&ps) ? 0 : POLLOUT, 0 } };
        poll(pf, 2, 100);
        ssize_t n = recv(t, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN, "target: %s", strerror(errno));
            continue;
        }
        for (ssize_t i = 0; i < n; ++i)
            if (buf[i] != gen_byte(rx + (uint64_t)i))
                ck_abort_msg("target byte %llu differs", (unsigned long long)(rx + (uint64_t)i));
        rx += (uint64_t)n;
    }
    ck_assert(rx == ps.limit);
    read_reply(push, reply, sizeof(reply), IO_MS);
    char want[64];
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)ps.limit);
    ck_assert_str_eq(reply, want);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_flow_control_down)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 4096, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int pull = pull_open(tok, 0);
    int small = 4096;
    setsockopt(pull, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    /* the client reads nothing: the core must stop reading the target */
    uint64_t wrote = 0;
    {
        unsigned char buf[65536];
        long end = now_ms() + 8000;
        for (;;) {
            ck_assert_msg(now_ms() < end && wrote < (64u << 20), "the relay kept reading");
            for (size_t i = 0; i < sizeof(buf); ++i)
                buf[i] = gen_byte(wrote + i);
            ssize_t n = send(t, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                wrote += (uint64_t)n;
                continue;
            }
            ck_assert_int_eq(errno, EAGAIN);
            struct pollfd p = { t, POLLOUT, 0 };
            if (poll(&p, 1, 300) == 0)
                break;
        }
    }
    ck_assert_msg(wrote < (48u << 20), "%llu bytes before the target blocked",
                  (unsigned long long)wrote);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    uint64_t sent = v.down_bytes;
    long cpu0 = core_cpu_ms();
    sleep_ms(300);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert(v.down_bytes == sent);
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 300 ms while blocked", cpu);

    /* the client reads: everything arrives in order */
    shutdown(t, SHUT_WR);
    frd *pr = frd_new(pull);
    uint64_t got = 0;
    long end = now_ms() + 10000;
    for (;;) {
        rh_frame_event ev;
        ck_assert_msg(now_ms() < end, "stalled at %llu of %llu", (unsigned long long)got,
                      (unsigned long long)wrote);
        int rv = frd_next(pr, IO_MS, &ev);
        ck_assert_msg(rv == 1, "pull: %s", rv ? strerror(-rv) : "EOF");
        if (ev.type == RH_FEV_FIN)
            break;
        if (ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK)
            continue;
        ck_assert_msg(ev.type == RH_FEV_DATA, "pull: event %s", fev_name(ev.type));
        ck_assert_uint_le(ev.len, RH_FRAME_MAX);
        for (size_t i = 0; i < ev.len; ++i)
            if (ev.data[i] != gen_byte(got + i))
                ck_abort_msg("byte %llu differs", (unsigned long long)(got + i));
        got += ev.len;
    }
    ck_assert(got == wrote);
    frd_expect_eof(pr);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Bytes the allocator hands out right now (all threads). */
static size_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#else
    return 0;   /* unknown allocator: the test cannot measure and passes */
#endif
}

/* rh_ring.h: "The memory is allocated on first use and released when the ring
 * drains, so an idle session holds none." */
START_TEST(test_idle_sessions_hold_no_buffers)
{
    char tok[8][RH_TOKEN_LEN + 1];
    int port;
    const unsigned bufsize = 4u << 20;
    core_start(16, 20);
    int l = tcp_listen(&port, 0, 16);
    size_t before = heap_in_use();
    for (int i = 0; i < 8; ++i) {
        open_session(port, bufsize, 30, tok[i]);
        ck_assert_int_ge(tcp_accept(l, IO_MS), 0);
    }
    /* one of them has a push and a pull attached and has carried a byte */
    int pull = pull_open(tok[0], 0);
    ck_assert_int_ge(pull, 0);
    int push = push_open(tok[0], 0);
    send_frame(push, RH_FRAME_DATA, "x", 1);
    sleep_ms(200);
    size_t after = heap_in_use();
    long grown = (long)after - (long)before;
    ck_assert_msg(grown < (long)(4u << 20),
                  "8 idle sessions hold %ld KB (bufsize %u KB each direction)",
                  grown / 1024, bufsize / 1024);
    xclose(l);
    core_stop();
}
END_TEST

/* A target that ends without sending anything leaves nothing to buffer: the core
 * must not allocate the down ring just to read the FIN. */
START_TEST(test_fin_only_target_holds_no_buffer)
{
    char tok[8][RH_TOKEN_LEN + 1];
    int port;
    const unsigned bufsize = 4u << 20;
    core_start(16, 20);
    int l = tcp_listen(&port, 0, 16);
    size_t before = heap_in_use();
    for (int i = 0; i < 8; ++i) {
        open_session(port, bufsize, 30, tok[i]);
        int t = tcp_accept(l, IO_MS);
        ck_assert_int_ge(t, 0);
        shutdown(t, SHUT_WR);
    }
    sleep_ms(200);
    long grown = (long)heap_in_use() - (long)before;
    ck_assert_msg(grown < (long)(4u << 20),
                  "8 sessions whose targets sent only a FIN hold %ld KB (bufsize %u KB)",
                  grown / 1024, bufsize / 1024);
    /* and the FIN still reaches the client */
    frd *pr = pull_start(tok[0], 0, 0);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: busy loops --------------------------------------------------------------- */

/* The client sent F, the target answered and closed, but no pull is attached
 * yet: nothing can move, so the core must sleep. */
START_TEST(test_no_busy_loop_when_both_closed_without_pull)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "q", 1);
    send_frame(push, RH_FRAME_FIN, NULL, 0);
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 1");
    unsigned char got[8];
    size_t gl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, got, sizeof(got), &gl), 0);
    target_send(t, "a", 1);
    xclose(t);
    sleep_ms(100);
    long cpu0 = core_cpu_ms();
    sleep_ms(400);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 400 ms with nothing to do", cpu);
    /* the pull collects the end */
    frd *pr = pull_start(tok, 0, 1);
    frd_expect_data(pr, "a");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

START_TEST(test_no_busy_loop_after_target_reset_without_pull)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    target_send(t, "zz", 2);
    target_reset(t);
    sleep_ms(100);
    long cpu0 = core_cpu_ms();
    sleep_ms(400);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 400 ms with nothing to do", cpu);
    frd *pr = pull_start(tok, 0, 0);
    frd_expect_data(pr, "zz");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* The handler drops a push connection whose data the core cannot take yet. */
START_TEST(test_no_busy_loop_push_gone_while_blocked)
{
    char tok[RH_TOKEN_LEN + 1];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 4096, 8);
    open_session(port, 4096, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int push = push_open(tok, 0);
    psend ps;
    memset(&ps, 0, sizeof(ps));
    ps.fd = push;
    ps.fixed = 1;
    ps.limit = UINT64_MAX;
    fill_until_blocked(&ps, 300, 64u << 20);
    xclose(push);
    sleep_ms(100);
    long cpu0 = core_cpu_ms();
    sleep_ms(400);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_msg(cpu < 100, "the core burnt %ld ms of CPU in 400 ms waiting for the target",
                  cpu);
    ck_assert(session_alive(tok));
    xclose(l);
    core_stop();
}
END_TEST

/* A busy session (data just moved) whose stream pull is blocked inside a frame
 * (its handler reads nothing): the busy heartbeat cannot go, and its deadline
 * must not spin the loop (it did: 100% CPU, requests unanswered for 10-17 s). */
START_TEST(test_no_busy_loop_pull_blocked_mid_frame)
{
    char tok[RH_TOKEN_LEN + 1];
    static char big[256 * 1024];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 262144, 30, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    int pull = pull_open(tok, 0);
    int small = 4096;
    setsockopt(pull, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    memset(big, 'x', sizeof(big));
    target_send(t, big, sizeof(big));   /* fills the pull socket, mid-frame */
    sleep_ms(1500);                      /* the busy heartbeat is due */
    long cpu0 = core_cpu_ms();
    sleep_ms(1000);
    long cpu = core_cpu_ms() - cpu0;
    ck_assert_msg(cpu < 200, "the core burnt %ld ms of CPU in 1 s with a blocked pull", cpu);
    char reply[RH_IPC_LINE_MAX];
    req(reply, sizeof(reply), "STAT\n");   /* and it still answers at once */
    ck_assert(strncmp(reply, "OK ", 3) == 0);
    xclose(pull);
    xclose(l);
    core_stop();
}
END_TEST

/* ---- tests: reattach and shutdown ---------------------------------------------------- */

START_TEST(test_pull_reattach)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = pull_start(tok, 0, 0);
    target_send(t, "first", 5);
    frd_expect_data(pr, "first");
    xclose(pr->fd);
    frd_free(pr);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));
    ck_assert(session_alive(tok));
    target_send(t, "second", 6);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "up", 2);
    target_expect(t, "up");
    sleep_ms(50);
    /* the ack must be what was sent; the new pull's first A tells the up bytes */
    pr = pull_start(tok, 5, 2);
    frd_expect_data(pr, "second");
    attach_refused(reply, sizeof(reply), "PULL", tok, 11, " stream");
    ASSERT_PREFIX(reply, "ERR 409 ");
    rh_slot_view v;
    /* the core counts after it wrote: the count may lag the bytes a moment */
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.down_bytes == 11, IO_MS));
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Stopping the core: clients hear R, targets get a clean FIN. */
START_TEST(test_stop_with_sessions)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    int t = tcp_accept(l, IO_MS);
    int pull = pull_open(tok, 0);
    int push = push_open(tok, 0);
    send_frame(push, RH_FRAME_DATA, "a", 1);
    target_expect(t, "a");
    core_stop();
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 410 ");
    ck_assert_msg(strstr(reply, "stopping") != NULL, "reply: %s", reply);
    frd *pr = frd_new(pull);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(memmem(ev.data, ev.len, "stopping", 8) != NULL, "R reason: %.*s",
                  (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), 0);   /* FIN, not RST */
    frd_free(pr);
    xclose(l);
}
END_TEST

/* ---- tests: end-to-end checks (check=crc32c) ------------------------------------- */

/* A session whose D frames carry C frames both ways; window: resumable, keeping
 * that many sent bytes (0: not resumable). */
static void open_checked(int port, unsigned bufsize, unsigned idle_s, unsigned window,
                         char tok[RH_TOKEN_LEN + 1])
{
    char reply[RH_IPC_LINE_MAX], resume[32] = "";
    if (window)
        snprintf(resume, sizeof(resume), " resume=%u", window);
    req(reply, sizeof(reply), "OPEN t1 127.0.0.1 %d %u %u 5%s check=crc32c\n", port, bufsize,
        idle_s, resume);
    ASSERT_PREFIX(reply, "OK ");
    assert_token(reply + 3);
    strcpy(tok, reply + 3);
}

/* The client's side of the up direction: the offset, and the CRC32C of [0, off). */
typedef struct ckup {
    uint64_t off;
    uint32_t crc;
} ckup;

/* Appends a D frame to out, and counts its bytes; returns its size. */
static size_t ck_put_data(unsigned char *out, ckup *u, const void *data, size_t len)
{
    u->crc = rh_crc32c(u->crc, data, len);
    u->off += len;
    return frame_put(out, RH_FRAME_DATA, data, len);
}

/* Appends a D frame and the C frame that vouches for it; returns their size. */
static size_t ck_put(unsigned char *out, ckup *u, const void *data, size_t len)
{
    size_t n = ck_put_data(out, u, data, len);
    return n + rh_frame_check(out + n, u->off, u->crc);
}

/* Reads exactly len bytes from a target and compares them with want. */
static void target_expect_mem(int fd, const unsigned char *want, size_t len)
{
    static unsigned char got[1 << 18];
    size_t have = 0;
    long end = now_ms() + IO_MS;
    ck_assert_uint_le(len, sizeof(got));
    while (have < len) {
        long left = end - now_ms();
        ck_assert_msg(left > 0, "target got only %zu of %zu bytes", have, len);
        struct pollfd p = { fd, POLLIN, 0 };
        poll(&p, 1, (int)left);
        ssize_t r = recv(fd, got + have, len - have, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        ck_assert_msg(r > 0, "target after %zu of %zu bytes: %s", have, len,
                      r == 0 ? "EOF" : strerror(errno));
        have += (size_t)r;
    }
    for (size_t i = 0; i < len; ++i)
        ck_assert_msg(got[i] == want[i], "target byte %zu of %zu: %02x, expected %02x", i, len,
                      got[i], want[i]);
}

/* Asserts that a target gets nothing (no byte, no EOF) for ms. */
static void target_quiet(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    ck_assert_msg(poll(&p, 1, ms) == 0, "the target got something it should not have");
}

/* The failures STAT counts. */
static unsigned long long stat_integrity(void)
{
    char reply[RH_IPC_LINE_MAX];
    unsigned long long n;
    req(reply, sizeof(reply), "STAT\n");
    const char *p = strstr(reply, " integrity=");
    ck_assert_msg(p && sscanf(p, " integrity=%llu", &n) == 1, "STAT: %s", reply);
    return n;
}

/* A request of a session that failed a check (within its 30 s linger) is
 * answered 422 with the reason, not 410. */
static void assert_refused_422(const char *fmt, const char *tok)
{
    char reply[RH_IPC_LINE_MAX];
    req(reply, sizeof(reply), fmt, tok);
    ASSERT_PREFIX(reply, "ERR 422 ");
    ck_assert_msg(strstr(reply, RH_REASON_INTEGRITY) != NULL, "reply: %s", reply);
}

/* The session failed a check: its end reads as "ERR 422 ...integrity check failed..."
 * on the push, a reset with no byte more at the target, the count in STAT, and
 * 422 for the session's next request. */
static void assert_integrity_failed(int push, int t, const char *tok, unsigned failures)
{
    char reply[RH_IPC_LINE_MAX];
    read_reply(push, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 422 ");
    ck_assert_msg(strstr(reply, RH_REASON_INTEGRITY) != NULL, "reply: %s", reply);
    unsigned char rx[64];
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), -ECONNRESET);
    ck_assert_msg(rl == 0, "the target got %zu bytes after the failed check", rl);
    ck_assert_uint_eq(stat_integrity(), failures);
    char line[128];   /* logged at level error, with the session id */
    snprintf(line, sizeof(line), "<%d> session %.16s: " RH_REASON_INTEGRITY, RH_LOG_ERR, tok);
    ck_assert_msg(log_has(line), "no \"%s\" in the log:\n%s", line, CF.log);
    assert_refused_422("PUSH %s 0\n", tok);
}

/* A stream pull of a checked session: H and A frames first, as any. */
static frd *ck_pull_start(const char *tok, uint64_t ack, uint64_t up)
{
    frd *r = pull_start(tok, ack, up);
    r->allowed = "DHFREAC";
    return r;
}

/* The client's side of the down direction: every byte by offset, and what the
 * C frames said next to the CRC of what it got. */
typedef struct ckdown {
    unsigned char got[1 << 19];
    uint64_t off;             /* bytes received and placed */
    uint32_t crc;             /* CRC32C of got[0, off), computed here */
    int due;                  /* a D frame ended: its C frame must come next */
    int ndata, nchecks;       /* whole D frames, C frames */
    int strict;               /* 1: a C frame that does not match fails the test */
    int nbad;                 /* C frames that did not match (not strict) */
    uint64_t last_ok;         /* the last matching C frame before the first bad one */
    uint64_t bad_off;         /* the first bad one */
    uint32_t bad_crc;
    uint64_t ends[1024];      /* offsets of the C frames, in order */
    int nends;
} ckdown;

static ckdown DN;

static void ckd_init(ckdown *d, int strict)
{
    memset(d, 0, sizeof(*d));
    d->strict = strict;
}

static void ckd_data(ckdown *d, const unsigned char *data, size_t len)
{
    ck_assert_msg(d->off + len <= sizeof(d->got), "more down bytes than the test expects");
    memcpy(d->got + d->off, data, len);
    d->crc = rh_crc32c(d->crc, data, len);
    d->off += len;
}

static void ckd_check(ckdown *d, uint64_t off, uint32_t crc)
{
    ck_assert_msg(off == d->off, "C frame at %llu, its D frame ends at %llu",
                  (unsigned long long)off, (unsigned long long)d->off);
    d->nchecks++;
    if (d->nends < (int)(sizeof(d->ends) / sizeof(d->ends[0])))
        d->ends[d->nends++] = off;
    if (crc == d->crc) {
        if (!d->nbad)
            d->last_ok = off;
        return;
    }
    ck_assert_msg(!d->strict, "C frame at %llu: CRC %08x, the bytes received have %08x",
                  (unsigned long long)off, crc, d->crc);
    if (!d->nbad++) {
        d->bad_off = off;
        d->bad_crc = crc;
    }
}

/* A pull taken over at ack: what comes next starts there. */
static void ckd_rewind(ckdown *d, uint64_t ack)
{
    ck_assert_uint_le(ack, d->off);
    d->off = ack;
    d->crc = rh_crc32c(0, d->got, (size_t)ack);
    d->due = 0;
}

/* Reads a checked stream pull until want bytes came and the C frame after them;
 * every D frame must be followed at once by its C frame. */
static void ckd_read(frd *r, ckdown *d, uint64_t want)
{
    rh_frame_event ev;
    while (d->off < want || d->due) {
        int rv = frd_next(r, IO_MS, &ev);
        ck_assert_msg(rv == 1, "checked pull: %s after %llu of %llu bytes",
                      rv == 0 ? "EOF" : strerror(-rv), (unsigned long long)d->off,
                      (unsigned long long)want);
        ck_assert_msg(!d->due || ev.type == RH_FEV_CHECK,
                      "checked pull: %s after the D frame ending at %llu, expected C",
                      fev_name(ev.type), (unsigned long long)d->off);
        switch (ev.type) {
        case RH_FEV_DATA:
            ckd_data(d, ev.data, ev.len);
            if (!r->p.type) {   /* the frame is whole */
                d->ndata++;
                d->due = 1;
            }
            break;
        case RH_FEV_CHECK:
            ck_assert_msg(d->due, "checked pull: C frame at %llu without its D frame",
                          (unsigned long long)ev.offset);
            d->due = 0;
            ckd_check(d, ev.offset, ev.crc);
            break;
        case RH_FEV_HEARTBEAT:
        case RH_FEV_ACK:
            break;
        default:
            ck_abort_msg("checked pull: %s at %llu", fev_name(ev.type),
                         (unsigned long long)d->off);
        }
    }
}

/* A batch answer of a checked session: a C frame right after every D frame, the
 * announced length counts them, and each matches the bytes from offset 0. */
static void ckd_batch(ckdown *d, const batch_ans *a)
{
    ck_assert_msg(a->off == d->off, "batch answer at %llu, expected %llu",
                  (unsigned long long)a->off, (unsigned long long)d->off);
    ck_assert_int_eq(a->d_alone, 0);
    ck_assert_int_eq(a->nck, a->ndata);
    size_t term_len = a->term == RH_FRAME_RESET ? strlen(a->reason) : 0;
    ck_assert_uint_eq(a->len, RH_FRAME_HDR + 8 + a->dlen + (size_t)a->ndata * RH_FRAME_HDR
                      + (size_t)a->nck * (RH_FRAME_HDR + RH_FRAME_CHECK_LEN) + RH_FRAME_HDR
                      + term_len);
    size_t from = 0;
    for (int i = 0; i < a->nck; ++i) {
        ck_assert_uint_gt(a->ck_dlen[i], from);
        ckd_data(d, batch_data + from, a->ck_dlen[i] - from);
        from = a->ck_dlen[i];
        d->ndata++;
        ckd_check(d, a->ck_off[i], a->ck_crc[i]);
    }
    ck_assert_uint_eq(from, a->dlen);
}

/* Batch pulls until the client has want bytes. */
static void ckd_batch_until(const char *tok, ckdown *d, uint64_t want)
{
    for (int answers = 0; d->off < want; ++answers) {
        batch_ans a;
        ck_assert_msg(answers < 50, "%llu of %llu bytes after %d batch answers",
                      (unsigned long long)d->off, (unsigned long long)want, answers);
        batch_pull(tok, d->off, 5, IO_MS, &a);
        ck_assert_int_eq(a.term, RH_FRAME_END);
        ckd_batch(d, &a);
    }
    ck_assert_uint_eq(d->off, want);
}

/* Reads a pull for ms: only H frames and A frames up to max_ack may come. */
static void frd_expect_acks_below(frd *r, int ms, uint64_t max_ack)
{
    rh_frame_event ev;
    int rv;
    long end = now_ms() + ms;
    while ((rv = frd_next(r, (int)(end - now_ms() > 0 ? end - now_ms() : 0), &ev)) == 1) {
        ck_assert_msg(ev.type == RH_FEV_HEARTBEAT || ev.type == RH_FEV_ACK,
                      "pull: %s, expected nothing", fev_name(ev.type));
        ck_assert_msg(ev.type != RH_FEV_ACK || ev.offset <= max_ack,
                      "pull: A %llu counts bytes no C frame vouched for (accepted %llu)",
                      (unsigned long long)ev.offset, (unsigned long long)max_ack);
    }
    ck_assert_msg(rv == -ETIMEDOUT, "pull: %s", rv == 0 ? "EOF" : strerror(-rv));
}

/* Checked frames of many sizes, heartbeats and acks between them, written in
 * pieces cut at odd places: the target gets exactly the bytes, never one before
 * the C frame that vouches for it. */
START_TEST(test_integrity_push_roundtrip)
{
    static const size_t sizes[] = { 1, 7, 65536, 1000, 3, 40000, 65535, 2, 4096, 17 };
    static const size_t cuts[] = { 1, 2, 3, 5, 8, 13, 4093, 65537, 11, 30011, 7, 65539, 6 };
    enum { NF = sizeof(sizes) / sizeof(sizes[0]), NCUT = sizeof(cuts) / sizeof(cuts[0]) };
    static unsigned char body[300000], rx[300000], tmp[RH_FRAME_MAX];
    size_t ends[NF];          /* body bytes up to the end of each C frame */
    uint64_t offs[NF];        /* the offset each C frame vouches for */
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], want[64];
    int port;
    ckup u = { 0, 0 };
    size_t blen = 0;

    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    ck_assert_int_ge(t, 0);
    frd *pr = ck_pull_start(tok, 0, 0);
    for (int i = 0; i < NF; ++i) {
        for (size_t j = 0; j < sizes[i]; ++j)
            tmp[j] = gen_byte(u.off + j);
        blen += ck_put(body + blen, &u, tmp, sizes[i]);
        ends[i] = blen;
        offs[i] = u.off;
        if (i % 3 == 1)
            blen += frame_put(body + blen, RH_FRAME_HEARTBEAT, "pad", 3);
        if (i == 4) {
            unsigned char a8[8];
            rh_put_u64(a8, 0);
            blen += frame_put(body + blen, RH_FRAME_ACK, a8, 8);
        }
    }
    const uint64_t total = u.off;
    blen += frame_put(body + blen, RH_FRAME_FIN, NULL, 0);
    ck_assert_uint_le(blen, sizeof(body));

    int push = push_open(tok, 0);
    size_t sent = 0, rxl = 0;
    int ci = 0;
    long end = now_ms() + 10000;
    while (sent < blen || rxl < total) {
        ck_assert_msg(now_ms() < end, "stalled: %zu of %zu body bytes sent, target has %zu",
                      sent, blen, rxl);
        struct pollfd pf[2] = { { push, sent < blen ? POLLOUT : 0, 0 }, { t, POLLIN, 0 } };
        poll(pf, 2, 50);
        if (sent < blen) {
            size_t n = cuts[ci % NCUT];
            if (n > blen - sent)
                n = blen - sent;
            ssize_t w = send(push, body + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent += (size_t)w;
                ci++;
            } else {
                ck_assert_msg(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                              "push write: %s", strerror(errno));
            }
        }
        ssize_t r = recv(t, rx + rxl, sizeof(rx) - rxl, MSG_DONTWAIT);
        ck_assert_msg(r != 0, "target saw EOF after %zu bytes", rxl);
        if (r > 0)
            rxl += (size_t)r;
        /* only bytes whose C frame the core can have seen */
        uint64_t vouched = 0;
        for (int k = 0; k < NF && ends[k] <= sent; ++k)
            vouched = offs[k];
        ck_assert_msg(rxl <= vouched, "target has %zu bytes; C frames in the %zu body bytes "
                      "sent vouch for %llu", rxl, sent, (unsigned long long)vouched);
    }
    shutdown(push, SHUT_WR);
    read_reply(push, reply, sizeof(reply), IO_MS);
    snprintf(want, sizeof(want), "DONE %llu", (unsigned long long)total);
    ck_assert_str_eq(reply, want);
    /* the F went through: the target sees its end after exactly the bytes */
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rxl), 0);
    ck_assert_uint_eq(rxl, total);
    for (size_t i = 0; i < rxl; ++i)
        ck_assert_msg(rx[i] == gen_byte(i), "target byte %zu is wrong", i);
    frd_expect_ack(pr, total);
    rh_slot_view v;
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK
                       && v.up_bytes == total, IO_MS));
    shutdown(t, SHUT_WR);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_FIN, &ev);
    frd_expect_eof(pr);
    ck_assert(WAIT_FOR(reg_active() == 0, IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    ck_assert_str_eq(reply, "OK active=0 opened=1 closed=1 integrity=0 held=0 refused=0");
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* A C frame that does not vouch for the bytes before it fails the session: 422,
 * none of those bytes reach the target, the pull hears R, STAT counts it.
 * _i: 0 wrong CRC, 1 offset beyond the bytes, 2 the check of the frame before
 * (stale), 3 F after a D frame without its C frame. */
START_TEST(test_integrity_push_bad_check)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[256];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    int push = push_open(tok, 0);
    ckup u = { 0, 0 };
    send_all(push, f, ck_put(f, &u, "hello", 5));
    target_expect(t, "hello");
    frd_expect_ack(pr, 5);

    int waiting = push_send(tok, 100, NULL, 0);
    assert_no_reply(waiting, 50, "a push ahead of the accepted bytes");
    ckup before = u;
    size_t n = ck_put_data(f, &u, "world!", 6);
    switch (_i) {
    case 0:
        n += rh_frame_check(f + n, u.off, u.crc ^ 0x00010000u);
        break;
    case 1:
        n += rh_frame_check(f + n, u.off + 1, u.crc);
        break;
    case 2:
        n += rh_frame_check(f + n, before.off, before.crc);
        break;
    default:
        n += frame_put(f + n, RH_FRAME_FIN, NULL, 0);
        break;
    }
    send_all(push, f, n);
    assert_integrity_failed(push, t, tok, 1);
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= strlen(RH_REASON_INTEGRITY)
                  && !memcmp(ev.data, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY)),
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    /* a push waiting for its turn hears why too */
    read_reply(waiting, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 422 ");
    /* the session is over, and every request of it hears why */
    assert_refused_422("PUSH %s 11\n", tok);
    assert_refused_422("PULL %s 0 stream\n", tok);
    assert_refused_422("PULL %s 0 batch 5\n", tok);
    assert_refused_422("ACK %s 0\n", tok);
    assert_refused_422("CLOSE %s\n", tok);
    ck_assert_uint_eq(stat_integrity(), 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* Bytes of a D frame whose C frame never came are not accepted: the target never
 * gets them, A frames and offsets leave them out, and the client sends them again.
 * _i: 0 the push ends (not resumable), 1 it is cut (resumable), 2 a retry
 * replaces it while it is still open (resumable). */
START_TEST(test_integrity_push_cut)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[256], rx[64];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, _i ? 65536 : 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckup u = { 0, 0 };
    int p1 = push_open(tok, 0);
    send_all(p1, f, ck_put(f, &u, "abc", 3));
    target_expect(t, "abc");
    frd_expect_ack(pr, 3);
    ckup at3 = u;
    send_all(p1, f, ck_put_data(f, &u, "defgh", 5));
    /* held for its C frame */
    target_quiet(t, 150);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(v.up_bytes, 3);

    int p2;
    if (_i == 0) {
        shutdown(p1, SHUT_WR);
        read_reply(p1, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 3");
        /* what the session has is 3 bytes: a push below is refused, saying so */
        attach_refused(reply, sizeof(reply), "PUSH", tok, 0, "");
        ASSERT_PREFIX(reply, "ERR 409 ");
        ck_assert_msg(strstr(reply, "accepted 3") != NULL, "reply: %s", reply);
        p2 = push_open(tok, 3);
    } else if (_i == 1) {
        xclose(p1);
        p2 = push_open(tok, 3);
    } else {
        p2 = push_open(tok, 3);
        read_reply(p1, reply, sizeof(reply), IO_MS);
        ASSERT_PREFIX(reply, "ERR 409 ");
    }
    target_quiet(t, 50);
    frd_expect_acks_below(pr, 100, 3);
    ck_assert_int_eq(rh_registry_check(CF.reg, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(v.up_bytes, 3);

    /* again, with its C frame: once, in order */
    send_all(p2, f, ck_put(f, &at3, "defgh", 5));
    target_expect(t, "defgh");
    frd_expect_ack(pr, 8);
    send_frame(p2, RH_FRAME_FIN, NULL, 0);
    shutdown(p2, SHUT_WR);
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "DONE 8");
    size_t rl = 0;
    ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
    ck_assert_msg(rl == 0, "the target got %zu bytes more: %.*s", rl, (int)rl, (char *)rx);
    ck_assert(WAIT_FOR(rh_registry_check(CF.reg, tok, &v) == RH_REG_OK && v.up_bytes == 8,
                       IO_MS));
    req(reply, sizeof(reply), "STAT\n");
    /* the pull is held: one worker */
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=1 refused=0");
    frd_free(pr);
    if (_i != 1)
        xclose(p1);
    xclose(l);
    core_stop();
}
END_TEST

/* A retried push repeats bytes the session has: C frames among them are not
 * checked (a wrong one is ignored), the first one after them is, from offset 0.
 * _i: 0 that one is right, 1 it is wrong. */
START_TEST(test_integrity_resumed_push)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char src[64], f[512], rx[64];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 65536, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckup u = { 0, 0 };
    int p1 = push_open(tok, 0);
    size_t n = ck_put(f, &u, src, 10);
    n += ck_put(f + n, &u, src + 10, 20);
    send_all(p1, f, n);
    target_expect_mem(t, src, 30);
    frd_expect_ack(pr, 30);

    /* the retry from 5, framed otherwise: [5,18) with a wrong C frame, [18,25)
     * with a right one, both within what the session has; [25,40) across it */
    int p2 = push_send(tok, 5, NULL, 0);
    read_reply(p2, reply, sizeof(reply), IO_MS);
    ck_assert_str_eq(reply, "OK 30");
    read_reply(p1, reply, sizeof(reply), IO_MS);
    ASSERT_PREFIX(reply, "ERR 409 ");
    xclose(p1);
    ckup r = { 5, rh_crc32c(0, src, 5) };
    n = ck_put_data(f, &r, src + 5, 13);
    n += rh_frame_check(f + n, r.off, r.crc ^ 0xffffffffu);
    n += ck_put(f + n, &r, src + 18, 7);
    send_all(p2, f, n);
    target_quiet(t, 100);
    ck_assert(session_alive(tok));
    n = ck_put_data(f, &r, src + 25, 15);
    ck_assert_uint_eq(r.off, 40);
    ck_assert_uint_eq(r.crc, rh_crc32c(0, src, 40));
    n += rh_frame_check(f + n, r.off, _i ? r.crc ^ 1u : r.crc);
    send_all(p2, f, n);
    if (_i) {
        assert_integrity_failed(p2, t, tok, 1);
        rh_frame_event ev;
        frd_expect(pr, RH_FEV_RESET, &ev);
        frd_expect_eof(pr);
    } else {
        target_expect_mem(t, src + 30, 10);
        frd_expect_ack(pr, 40);
        send_frame(p2, RH_FRAME_FIN, NULL, 0);
        shutdown(p2, SHUT_WR);
        read_reply(p2, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 40");
        size_t rl = 0;
        ck_assert_int_eq(target_read_end(t, IO_MS, rx, sizeof(rx), &rl), 0);
        ck_assert_uint_eq(rl, 0);
        req(reply, sizeof(reply), "STAT\n");
        /* the pull is held: one worker */
    ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=1 refused=0");
    }
    frd_free(pr);
    xclose(l);
    if (_i)
        core_stop();
    else
        core_stop();
}
END_TEST

/* At most one frame's worth (65536 bytes) may wait for its C frame.
 * _i: 0 exactly 65536 in two D frames, then C: fine; 1 65536 + 1; 2 40000 + 30000. */
START_TEST(test_integrity_unchecked_limit)
{
    static const size_t parts[3][2] = { { 40000, 25536 }, { 65536, 1 }, { 40000, 30000 } };
    static unsigned char src[70000], f[2 * RH_FRAME_MAX + 64];
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    int push = push_open(tok, 0);
    ckup u = { 0, 0 };
    size_t a = parts[_i][0], b = parts[_i][1];
    size_t n = ck_put_data(f, &u, src, a);
    n += ck_put_data(f + n, &u, src + a, b);
    if (_i == 0)
        n += rh_frame_check(f + n, u.off, u.crc);
    send_all(push, f, n);
    if (_i == 0) {
        target_expect_mem(t, src, a + b);
        shutdown(push, SHUT_WR);
        read_reply(push, reply, sizeof(reply), IO_MS);
        ck_assert_str_eq(reply, "DONE 65536");
    } else {
        assert_integrity_failed(push, t, tok, 1);
        ck_assert(log_has("without a check frame"));
    }
    xclose(l);
    if (_i)
        core_stop();
    else
        core_stop();
}
END_TEST

/* Pulls of a checked session: a C frame right after every D frame, with the
 * offset at its end and the CRC32C from offset 0; stream, then batch. */
START_TEST(test_integrity_pull_stream_and_batch)
{
    static unsigned char src[400000];
    char tok[RH_TOKEN_LEN + 1];
    int port;
    batch_ans a;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    ckd_init(&DN, 1);
    target_send(t, src, 1);
    ckd_read(pr, &DN, 1);
    ck_assert_int_eq(DN.nchecks, 1);
    target_send(t, src + 1, 150000);
    ckd_read(pr, &DN, 150001);
    target_send(t, src + 150001, 3);
    ckd_read(pr, &DN, 150004);
    ck_assert_int_eq(DN.nchecks, DN.ndata);
    ck_assert_int_ge(DN.ndata, 5);   /* 1, at least 3 for 150000, 3 */
    ck_assert_mem_eq(DN.got, src, 150004);
    xclose(pr->fd);
    frd_free(pr);
    ck_assert(WAIT_FOR(log_has("pull detached"), IO_MS));

    /* batch answers go on from there: the C frames still run from offset 0 */
    target_send(t, src + 150004, 200000);
    int before = DN.ndata;
    ckd_batch_until(tok, &DN, 350004);
    ck_assert_int_ge(DN.ndata - before, 4);
    ck_assert_int_eq(DN.nchecks, DN.ndata);
    ck_assert_mem_eq(DN.got, src, 350004);
    shutdown(t, SHUT_WR);
    batch_pull(tok, DN.off, 5, IO_MS, &a);
    ck_assert_int_eq(a.term, RH_FRAME_FIN);
    ck_assert_int_eq(a.ndata, 0);
    ck_assert_int_eq(a.nck, 0);
    ck_assert_uint_eq(a.len, 16);
    xclose(l);
    core_stop();
}
END_TEST

/* A resumable pull that goes back (a new pull with an older ack takes over, an
 * ACK away from any frame end, batch after stream): the C frames after it still
 * carry the CRC from offset 0. */
START_TEST(test_integrity_pull_rewind)
{
    static unsigned char src[250000];
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 1 << 20, tok);
    int t = tcp_accept(l, IO_MS);
    ckd_init(&DN, 1);
    target_send(t, src, 200000);
    frd *p1 = ck_pull_start(tok, 0, 0);
    ckd_read(p1, &DN, 150000);
    ck_assert_mem_eq(DN.got, src, DN.off);

    /* p1 is still attached: p2 with an ack inside a frame takes over */
    frd *p2 = ck_pull_start(tok, 70001, 0);
    xclose(p1->fd);
    frd_free(p1);
    ckd_rewind(&DN, 70001);
    int checks = DN.nchecks;
    ckd_read(p2, &DN, 200000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 200000);

    /* acknowledged inside a frame, then a batch pull from there */
    req(reply, sizeof(reply), "ACK %s 100003\n", tok);
    ck_assert_str_eq(reply, "OK 100003");
    target_send(t, src + 200000, 50000);
    ckd_rewind(&DN, 100003);
    checks = DN.nchecks;
    ckd_batch_until(tok, &DN, 250000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 250000);
    xclose(p2->fd);
    frd_free(p2);
    /* below the acknowledged offset nothing is kept */
    attach_refused(reply, sizeof(reply), "PULL", tok, 100002, " stream");
    ASSERT_PREFIX(reply, "ERR 416 ");

    /* once more by stream, from the end of a frame the batch answers sent */
    uint64_t back = 0;
    for (int i = 0; i < DN.nends; ++i)
        if (DN.ends[i] > 100003 && DN.ends[i] < 250000)
            back = DN.ends[i];
    ck_assert_uint_gt(back, 100003);
    frd *p3 = ck_pull_start(tok, back, 0);
    ckd_rewind(&DN, back);
    checks = DN.nchecks;
    ckd_read(p3, &DN, 250000);
    ck_assert_int_gt(DN.nchecks, checks);
    ck_assert_mem_eq(DN.got, src, 250000);
    shutdown(t, SHUT_WR);
    rh_frame_event ev;
    frd_expect(p3, RH_FEV_FIN, &ev);
    frd_expect_eof(p3);
    frd_free(p3);
    xclose(l);
    core_stop();
}
END_TEST

/* A client whose own check of down bytes failed closes the session saying so:
 * the core resets it, logs the failure at error level and counts it. */
START_TEST(test_integrity_close_by_client)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX], line[160];
    int port;
    core_start(8, 20);
    int l = tcp_listen(&port, 0, 8);
    open_checked(port, 65536, 30, 0, tok);
    int t = tcp_accept(l, IO_MS);
    frd *pr = ck_pull_start(tok, 0, 0);
    req(reply, sizeof(reply), "CLOSE %s integrity\n", tok);
    ck_assert_str_eq(reply, "OK");
    rh_frame_event ev;
    frd_expect(pr, RH_FEV_RESET, &ev);
    ck_assert_msg(ev.len >= strlen(RH_REASON_INTEGRITY)
                  && !memcmp(ev.data, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY)),
                  "R reason: %.*s", (int)ev.len, (const char *)ev.data);
    frd_expect_eof(pr);
    ck_assert_int_eq(target_read_end(t, IO_MS, NULL, 0, NULL), -ECONNRESET);
    ck_assert_uint_eq(stat_integrity(), 1);
    snprintf(line, sizeof(line), "<%d> session %.16s: " RH_REASON_INTEGRITY, RH_LOG_ERR, tok);
    ck_assert_msg(log_has(line), "no \"%s\" in the log:\n%s", line, CF.log);
    /* a plain close counts nothing */
    char tok2[RH_TOKEN_LEN + 1];
    open_checked(port, 65536, 30, 0, tok2);
    req(reply, sizeof(reply), "CLOSE %s\n", tok2);
    ck_assert_str_eq(reply, "OK");
    ck_assert_uint_eq(stat_integrity(), 1);
    frd_free(pr);
    xclose(l);
    core_stop();
}
END_TEST

/* RELAY_HTTPS_TEST_FLIP=down:N flips a down byte after its CRC was taken: the
 * C frame covering it does not match what arrives. A core started without the
 * variable flips nothing. */
START_TEST(test_integrity_flip_down)
{
    static unsigned char src[200000];
    const uint64_t at = 100000;
    char tok[RH_TOKEN_LEN + 1];
    int port;
    for (size_t i = 0; i < sizeof(src); ++i)
        src[i] = gen_byte(i);
    for (int run = 0; run < 2; ++run) {
        if (run == 0)
            setenv("RELAY_HTTPS_TEST_FLIP", "down:100000", 1);
        core_start(8, 20);
        unsetenv("RELAY_HTTPS_TEST_FLIP");
        int l = tcp_listen(&port, 0, 8);
        open_checked(port, 65536, 30, 0, tok);
        int t = tcp_accept(l, IO_MS);
        frd *pr = ck_pull_start(tok, 0, 0);
        ckd_init(&DN, run);
        target_send(t, src, sizeof(src));
        ckd_read(pr, &DN, sizeof(src));
        ck_assert_int_eq(DN.nchecks, DN.ndata);
        if (run == 0) {
            ck_assert_msg(DN.got[at] == (src[at] ^ 1), "byte %llu was not flipped",
                          (unsigned long long)at);
            DN.got[at] ^= 1;
            ck_assert_mem_eq(DN.got, src, sizeof(src));   /* that byte alone */
            ck_assert_int_ge(DN.nbad, 1);
            ck_assert_msg(DN.last_ok <= at && DN.bad_off > at,
                          "the first C frame that does not match is at %llu, the last "
                          "good one at %llu (flipped %llu)", (unsigned long long)DN.bad_off,
                          (unsigned long long)DN.last_ok, (unsigned long long)at);
            /* the C frame carried the CRC of the bytes as they were */
            ck_assert_uint_eq(DN.bad_crc, rh_crc32c(0, src, (size_t)DN.bad_off));
        } else {
            ck_assert_int_eq(DN.nbad, 0);
            ck_assert_mem_eq(DN.got, src, sizeof(src));
        }
        frd_free(pr);
        xclose(t);
        xclose(l);
        core_stop();
        free(CF.reg);
        CF.reg = NULL;
    }
}
END_TEST

/* RELAY_HTTPS_TEST_FLIP=up:N flips an up byte before its check: the push gets
 * 422, the frame before it was delivered, none after. A core started without
 * the variable flips nothing. */
START_TEST(test_integrity_flip_up)
{
    char tok[RH_TOKEN_LEN + 1], reply[RH_IPC_LINE_MAX];
    unsigned char f[128];
    int port;
    for (int run = 0; run < 2; ++run) {
        if (run == 0)
            setenv("RELAY_HTTPS_TEST_FLIP", "up:12", 1);
        core_start(8, 20);
        unsetenv("RELAY_HTTPS_TEST_FLIP");
        int l = tcp_listen(&port, 0, 8);
        open_checked(port, 65536, 30, 0, tok);
        int t = tcp_accept(l, IO_MS);
        int push = push_open(tok, 0);
        ckup u = { 0, 0 };
        send_all(push, f, ck_put(f, &u, "0123456789", 10));
        target_expect(t, "0123456789");
        send_all(push, f, ck_put(f, &u, "abcdef", 6));
        if (run == 0) {
            assert_integrity_failed(push, t, tok, 1);
        } else {
            target_expect(t, "abcdef");
            shutdown(push, SHUT_WR);
            read_reply(push, reply, sizeof(reply), IO_MS);
            ck_assert_str_eq(reply, "DONE 16");
            req(reply, sizeof(reply), "STAT\n");
            ck_assert_str_eq(reply, "OK active=1 opened=1 closed=0 integrity=0 held=0 refused=0");
        }
        xclose(push);
        xclose(t);
        xclose(l);
        if (run == 0)
            core_stop();
        else
            core_stop();
        free(CF.reg);
        CF.reg = NULL;
    }
}
END_TEST

Suite *core_suite(void)
{
    Suite *s = suite_create("core");

    TCase *tc = tcase_create("requests");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stat_and_bad_requests);
    tcase_add_test(tc, test_open_refused);
    tcase_add_test(tc, test_open_then_close);
    tcase_add_test(tc, test_table_full);
    tcase_add_test(tc, test_connect_timeout);
    tcase_add_test(tc, test_bad_tokens);
    tcase_add_test(tc, test_conflicts);
    tcase_add_loop_test(tc, test_pull_ack_mismatch, 0, 2);
    suite_add_tcase(s, tc);

    TCase *td = tcase_create("data");
    tcase_add_unchecked_fixture(td, base_setup, base_teardown);
    tcase_add_checked_fixture(td, fx_setup, fx_teardown);
    tcase_set_timeout(td, 30);
    tcase_add_test(td, test_roundtrip_1mb);
    tcase_add_loop_test(td, test_roundtrip_small_buffers, 0, 2);
    tcase_add_test(td, test_half_close);
    tcase_add_test(td, test_target_closes_first);
    tcase_add_test(td, test_frames_behind_request_line);
    tcase_add_test(td, test_many_sessions);
    tcase_add_test(td, test_ipv6_target);
    tcase_add_test(td, test_push_reset);
    tcase_add_loop_test(td, test_push_bad_frames, 0, 4);
    tcase_add_test(td, test_target_reset);
    tcase_add_test(td, test_pull_reattach);
    tcase_add_test(td, test_stop_with_sessions);
    tcase_add_test(td, test_pull_acks);
    tcase_add_test(td, test_push_queue);
    tcase_add_test(td, test_resumable_next_push_or_retry);
    tcase_add_loop_test(td, test_push_queue_limit_and_reset, 0, 2);
    tcase_add_test(td, test_push_wait_hangup);
    tcase_add_test(td, test_push_wait_timeout);
    suite_add_tcase(s, td);

    TCase *tb = tcase_create("batch");
    tcase_add_unchecked_fixture(tb, base_setup, base_teardown);
    tcase_add_checked_fixture(tb, fx_setup, fx_teardown);
    tcase_set_timeout(tb, 30);
    tcase_add_test(tb, test_batch_empty);
    tcase_add_test(tb, test_batch_prompt);
    tcase_add_test(tb, test_batch_large_then_fin);
    tcase_add_test(tb, test_batch_data_and_fin);
    tcase_add_loop_test(tb, test_batch_target_reset, 0, 2);
    tcase_add_test(tb, test_batch_conflicts_and_close);
    suite_add_tcase(s, tb);

    TCase *tt = tcase_create("timers");
    tcase_add_unchecked_fixture(tt, base_setup, base_teardown);
    tcase_add_checked_fixture(tt, fx_setup, fx_teardown);
    tcase_set_timeout(tt, 30);
    tcase_add_test(tt, test_idle_timeout);
    tcase_add_test(tt, test_idle_refreshed_by_push);
    tcase_add_test(tt, test_idle_not_refreshed_by_target_bytes);
    tcase_add_test(tt, test_heartbeat);
    suite_add_tcase(s, tt);

    TCase *tf = tcase_create("flow");
    tcase_add_unchecked_fixture(tf, base_setup, base_teardown);
    tcase_add_checked_fixture(tf, fx_setup, fx_teardown);
    tcase_set_timeout(tf, 30);
    tcase_add_test(tf, test_flow_control_up);
    tcase_add_test(tf, test_flow_control_down);
    tcase_add_test(tf, test_idle_sessions_hold_no_buffers);
    tcase_add_test(tf, test_fin_only_target_holds_no_buffer);
    tcase_add_test(tf, test_no_busy_loop_when_both_closed_without_pull);
    tcase_add_test(tf, test_no_busy_loop_after_target_reset_without_pull);
    tcase_add_test(tf, test_no_busy_loop_push_gone_while_blocked);
    tcase_add_test(tf, test_no_busy_loop_pull_blocked_mid_frame);
    tcase_add_test(tf, test_no_sigpipe);
    suite_add_tcase(s, tf);

    TCase *ti = tcase_create("integrity");
    tcase_add_unchecked_fixture(ti, base_setup, base_teardown);
    tcase_add_checked_fixture(ti, fx_setup, fx_teardown);
    tcase_set_timeout(ti, 30);
    tcase_add_test(ti, test_integrity_push_roundtrip);
    tcase_add_loop_test(ti, test_integrity_push_bad_check, 0, 4);
    tcase_add_loop_test(ti, test_integrity_push_cut, 0, 3);
    tcase_add_loop_test(ti, test_integrity_resumed_push, 0, 2);
    tcase_add_loop_test(ti, test_integrity_unchecked_limit, 0, 3);
    tcase_add_test(ti, test_integrity_pull_stream_and_batch);
    tcase_add_test(ti, test_integrity_pull_rewind);
    tcase_add_test(ti, test_integrity_close_by_client);
    tcase_add_test(ti, test_integrity_flip_down);
    tcase_add_test(ti, test_integrity_flip_up);
    suite_add_tcase(s, ti);
    return s;
}
