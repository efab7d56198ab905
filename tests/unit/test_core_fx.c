/* The fixture of the relay core tests (test_core_fx.h): the core under test,
 * targets, the handler's side of the core protocol, batch pulls, and the
 * helpers more than one group of tests uses. */
#include "test_core_fx.h"

/* ---- time ------------------------------------------------------------------ */

long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the core under test ----------------------------------------------------- */

core_fx CF;
static char base_dir[64];      /* see base_setup() */

/* test fds, closed by the teardown if a test fails half way */
static int tracked[128];
static int ntracked;

int track(int fd)
{
    if (fd >= 0 && ntracked < (int)(sizeof(tracked) / sizeof(tracked[0])))
        tracked[ntracked++] = fd;
    return fd;
}

void xclose(int fd)
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

int log_has(const char *needle)
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

uint32_t reg_active(void)
{
    return __atomic_load_n(&CF.reg->active, __ATOMIC_ACQUIRE);
}

void core_start(uint32_t nslots, int heartbeat_s)
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

    /* as the module makes it: with the extension behind the slots */
    void *mem = calloc(1, rh_registry_ext_size(nslots));
    ck_assert_ptr_nonnull(mem);
    CF.reg = rh_registry_init(mem, nslots);
    CF.ext = rh_registry_ext_init(CF.reg, rh_registry_ext_size(nslots), NULL);
    ck_assert_ptr_nonnull(CF.ext);

    memset(&CF.cfg, 0, sizeof(CF.cfg));
    CF.cfg.listen_fd = CF.lfd;
    CF.cfg.reg = CF.reg;
    CF.cfg.ext = CF.ext;
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

void core_stop(void)
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

void base_setup(void)
{
    strcpy(base_dir, "/tmp/rh_core_test.XXXXXX");
    if (!mkdtemp(base_dir))
        base_dir[0] = '\0';
}

void base_teardown(void)
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

void fx_setup(void)
{
    memset(&CF, 0, sizeof(CF));
    CF.lfd = -1;
    pthread_mutex_init(&CF.mu, NULL);
    ntracked = 0;
}

void fx_teardown(void)
{
    core_stop_quiet();
    target_send_full(0);
    signal(SIGPIPE, SIG_IGN);   /* test_no_sigpipe counts them while it runs */
    while (ntracked)
        xclose(tracked[0]);
    frd_free_all();
    free(CF.reg);
    CF.reg = NULL;
    CF.ext = NULL;
    pthread_mutex_destroy(&CF.mu);
}

/* CPU time the core thread has used, in ms (a busy loop shows up here). */
long core_cpu_ms(void)
{
    clockid_t cid;
    struct timespec ts;
    ck_assert_int_eq(pthread_getcpuclockid(CF.th, &cid), 0);
    ck_assert_int_eq(clock_gettime(cid, &ts), 0);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- targets: loopback TCP sockets driven by the test ------------------------ */

/* send() is wrapped (-Wl,--wrap=send, Makefile.am): while target_send_full()
 * names a target's port, the core's send() to it finds the socket full
 * (EAGAIN) and only its writev of the ring gets through, as when the target's
 * ACKs free room between the two calls. */
static int send_full_port;

void target_send_full(int port)
{
    __atomic_store_n(&send_full_port, port, __ATOMIC_SEQ_CST);
}

ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
    int port = __atomic_load_n(&send_full_port, __ATOMIC_SEQ_CST);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    if (port && getpeername(fd, (struct sockaddr *)&sa, &sl) == 0
        && sa.sin_family == AF_INET && ntohs(sa.sin_port) == port) {
        errno = EAGAIN;
        return -1;
    }
    return __real_send(fd, buf, len, flags);
}


int tcp_listen(int *port, int rcvbuf, int backlog)
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

int tcp_accept(int lfd, int ms)
{
    struct pollfd p = { lfd, POLLIN, 0 };
    if (poll(&p, 1, ms) != 1)
        return -1;
    return track(accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/* A loopback port with nobody listening. */
int closed_port(void)
{
    int port;
    int fd = tcp_listen(&port, 0, 1);
    xclose(fd);
    return port;
}

/* Reads from a target until EOF, reset or timeout, appending at most cap bytes to
 * got. Returns 0 on EOF, -ECONNRESET (or another -errno), or -ETIMEDOUT. */
int target_read_end(int fd, int ms, unsigned char *got, size_t cap, size_t *len)
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

/* Reads exactly want bytes from a target. */
void target_expect(int fd, const char *want)
{
    target_expect_mem(fd, (const unsigned char *)want, strlen(want));
}

void target_send(int fd, const void *data, size_t len)
{
    ck_assert_int_eq(rh_ipc_write_all(fd, data, len, IO_MS), 0);
}

void target_reset(int fd)
{
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    xclose(fd);
}

/* ---- the handler's side of the core protocol ----------------------------------- */

int cx(void)
{
    int fd = rh_ipc_connect(CF.path, IO_MS);
    ck_assert_msg(fd >= 0, "connect to the core: %s", strerror(-fd));
    return track(fd);
}

void send_all(int fd, const void *data, size_t len)
{
    int rv = rh_ipc_write_all(fd, data, len, IO_MS);
    ck_assert_msg(rv == 0, "write to the core: %s", strerror(-rv));
}

void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

void read_reply_at(int line, int fd, char *buf, size_t max, int ms)
{
    int rv = rh_ipc_read_line(fd, buf, max, ms);
    ck_assert_msg(rv >= 0, "line %d: no reply from the core: %s", line, strerror(-rv));
}

/* One request line, one reply line. */
void req(char *reply, size_t max, const char *fmt, ...)
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

void assert_token(const char *tok)
{
    ck_assert_msg(strlen(tok) == RH_TOKEN_LEN, "token \"%s\" has the wrong length", tok);
    for (int i = 0; i < RH_TOKEN_LEN; ++i)
        ck_assert_msg(isdigit((unsigned char)tok[i]) || (tok[i] >= 'a' && tok[i] <= 'f'),
                      "token \"%s\": not lowercase hex at %d", tok, i);
}

/* window: a resumable session keeping that many sent bytes; 0: not resumable */
void open_session_window(int port, unsigned bufsize, unsigned idle_s, unsigned window,
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

void open_session(int port, unsigned bufsize, unsigned idle_s, char tok[RH_TOKEN_LEN + 1])
{
    open_session_window(port, bufsize, idle_s, 0, tok);
}

int core_with_session(char tok[RH_TOKEN_LEN + 1], int *listener)
{
    int port;
    core_start(8, 20);
    *listener = tcp_listen(&port, 0, 8);
    open_session(port, 65536, 30, tok);
    return tcp_accept(*listener, IO_MS);
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

int push_open(const char *tok, uint64_t off)
{
    return attach("PUSH", tok, off, "");
}

/* A PUSH request line (with " len=<body_len>" unless body_len is NO_LEN) and, in
 * the same write, len bytes of frames; no reply is read (a push that must wait
 * for its turn gets none yet). */
int push_send_len(const char *tok, uint64_t off, const void *frames, size_t len,
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

int push_send(const char *tok, uint64_t off, const void *frames, size_t len)
{
    return push_send_len(tok, off, frames, len, NO_LEN);
}

int pull_open(const char *tok, uint64_t ack)
{
    return attach("PULL", tok, ack, " stream");
}

/* A request that must be refused: returns the reply line. */
void attach_refused(char *reply, size_t max, const char *verb, const char *tok,
                    uint64_t off, const char *extra)
{
    req(reply, max, "%s %s %llu%s\n", verb, tok, (unsigned long long)off, extra);
    ck_assert_msg(strncmp(reply, "ERR ", 4) == 0, "%s was accepted: \"%s\"", verb, reply);
}

void send_frame(int fd, int type, const void *payload, size_t len)
{
    unsigned char h[RH_FRAME_HDR];
    rh_frame_hdr(h, type, len);
    send_all(fd, h, sizeof(h));
    if (len)
        send_all(fd, payload, len);
}

/* Appends a frame to out; returns its size. */
size_t frame_put(unsigned char *out, int type, const void *payload, size_t len)
{
    rh_frame_hdr(out, type, len);
    if (len)
        memcpy(out + RH_FRAME_HDR, payload, len);
    return RH_FRAME_HDR + len;
}

/* readers still allocated, freed by the teardown if a test fails half way */
static frd *readers[16];

frd *frd_new(int fd)
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

void frd_free(frd *r)
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
int frd_next(frd *r, int ms, rh_frame_event *ev)
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

const char *fev_name(rh_frame_event_type t)
{
    static const char *names[] = { "none", "D", "H", "F", "R", "A", "E", "C", "error" };
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* Skips heartbeats and acks (unless one of them is asked for); returns the next
 * other event (asserting one came). */
void frd_expect(frd *r, rh_frame_event_type type, rh_frame_event *ev)
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
void frd_expect_ack(frd *r, uint64_t want)
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
void frd_expect_data(frd *r, const char *want)
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

void frd_expect_eof(frd *r)
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
void frd_expect_quiet(frd *r, int ms)
{
    rh_frame_event ev;
    int rv = frd_next(r, ms, &ev);
    ck_assert_msg(rv == -ETIMEDOUT, "pull: expected silence, got %s",
                  rv == 1 ? fev_name(ev.type) : rv == 0 ? "EOF" : strerror(-rv));
}

/* A stream pull: "OK <ack>", then at once an H frame and an A frame with the up
 * offset accepted so far (up). */
frd *pull_start(const char *tok, uint64_t ack, uint64_t up)
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
void assert_no_reply(int fd, int ms, const char *what)
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

static unsigned char batch_body[(1 << 20) + 4096];
unsigned char batch_data[1 << 20];

/* Sends a batch pull; the answer is read by batch_finish(). */
int batch_send(const char *tok, uint64_t ack, unsigned poll_s)
{
    return batch_send_on(cx(), tok, ack, poll_s, 0);
}

int batch_send_on(int fd, const char *tok, uint64_t ack, unsigned poll_s, int keep)
{
    char line[RH_IPC_LINE_MAX];
    snprintf(line, sizeof(line), "PULL %s %llu batch %u%s\n", tok, (unsigned long long)ack,
             poll_s, keep ? " keep" : "");
    send_str(fd, line);
    return fd;
}

static void batch_parse(batch_ans *a, size_t len);

void batch_finish(int fd, long t0, int ms, batch_ans *a)
{
    size_t len = batch_read(fd, t0, ms, a);
    /* nothing follows: the core closes the connection after the answer */
    unsigned char extra[16];
    ssize_t n = rh_ipc_read(fd, extra, sizeof(extra), IO_MS);
    ck_assert_msg(n == 0, "batch pull: %s after the %zu announced bytes",
                  n > 0 ? "more bytes" : "no EOF", len);
    xclose(fd);
    batch_parse(a, len);
}

void batch_finish_kept(int fd, long t0, int ms, batch_ans *a)
{
    size_t len = batch_read(fd, t0, ms, a);
    /* nothing follows, and the core keeps the connection for the next line */
    unsigned char extra[16];
    ssize_t n = rh_ipc_read(fd, extra, sizeof(extra), 200);
    ck_assert_msg(n == -ETIMEDOUT, "kept batch pull: %s after the %zu announced bytes",
                  n > 0 ? "more bytes" : n == 0 ? "EOF" : "an error", len);
    batch_parse(a, len);
}

size_t batch_read(int fd, long t0, int ms, batch_ans *a)
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
    return len;
}

/* The frames of an answer read whole: A, D*, then F, R or E ending exactly
 * at len. */
static void batch_parse(batch_ans *a, size_t len)
{
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

void batch_pull(const char *tok, uint64_t ack, unsigned poll_s, int ms, batch_ans *a)
{
    long t0 = now_ms();
    batch_finish(batch_send(tok, ack, poll_s), t0, ms, a);
}

int session_alive(const char *tok)
{
    rh_slot_view v;
    return rh_registry_check(CF.reg, tok, &v) == RH_REG_OK;
}

/* deterministic stream contents by offset */
unsigned char gen_byte(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13 ^ (i >> 7) ^ i);
}

/* ---- shared by several test files ------------------------------------------ */

/* Sends as much as the socket takes; returns bytes written (0: would block). */
size_t psend_pump(psend *ps)
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

int psend_done(const psend *ps)
{
    return ps->queued >= ps->limit && ps->foff == ps->flen;
}

/* Writes to fd until it stays unwritable for quiet_ms (or max bytes / 8 s pass).
 * Returns the bytes written. */
uint64_t fill_until_blocked(psend *ps, int quiet_ms, uint64_t max)
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

/* Reads exactly len bytes from a target and compares them with want. */
void target_expect_mem(int fd, const unsigned char *want, size_t len)
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
