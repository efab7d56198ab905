/* rhbench: the fast helpers of the benchmark harness (bench/bench.py).
 *
 *   rhbench server PORT [PROCS]    target: sink, source and echo on 127.0.0.1:PORT;
 *                                  PROCS processes accept on it (a process holds
 *                                  at most its RLIMIT_NOFILE connections)
 *   rhbench thr HOST:PORT up|down BYTES STREAMS TIMEOUT_S
 *                                  throughput through a path (one or many streams)
 *   rhbench echo HOST:PORT COUNT WARMUP TIMEOUT_S
 *                                  one-byte round trips: setup, median, p99
 *   rhbench idle HOST:PORT[,PORT...] N BATCH TIMEOUT_S [connect-tls PROXY:PORT TARGET:PORT]
 *                                  open and hold N idle tunnels (stdin drives it)
 *   rhbench delay LISTEN_PORT HOST:PORT DELAY_MS WINDOW_BYTES
 *                                  TCP proxy adding DELAY_MS in each direction
 *   rhbench wsbridge LISTEN_PORT HOST:PORT PATH
 *                                  local TCP to WebSocket over TLS (client side)
 *
 * The target protocol: a connection starts with a 16-byte header, op (1 byte),
 * 7 bytes of padding, count (8 bytes, big endian).
 *   'U' sink: the server answers 'R', reads count bytes, answers the count (8 bytes)
 *   'D' source: the server answers 'R', waits for one byte (go), sends count bytes
 *   'E' echo: every byte read is sent back, until EOF
 * With RHBENCH_SOCKS5=HOST:PORT in the environment, thr and echo speak SOCKS5
 * (no authentication, CONNECT to that IPv4 destination) on every connection
 * before the target protocol: HOST:PORT on their command line is then the
 * SOCKS5 proxy (relay-https proxy, ssh -D). echo's setup time includes it.
 * Port 0 for a listener picks a free one; the port is printed on stdout
 * ("PORT n"). Output lines are key=value, for the harness to parse. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#define HDR_LEN   16
#define IO_CHUNK  (256 * 1024)
#define PAT_LEN   (1024 * 1024)

static unsigned char pattern[PAT_LEN];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rhbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill_pattern(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < PAT_LEN; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(pattern + i, &x, 8);
    }
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static void parse_hostport(const char *s, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) die("bad HOST:PORT '%s'", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) die("bad address '%s'", host);
}

static void set_timeouts(int fd, double secs)
{
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int write_all(int fd, const void *buf, size_t len);
static int read_full(int fd, void *buf, size_t len);

/* SOCKS5 CONNECT to dest (HOST:PORT, IPv4) on a connected fd: 0, or -1
 * (errno EPROTO when the proxy refused). */
static int socks5_connect(int fd, const char *dest)
{
    struct sockaddr_in d;
    unsigned char rep[10], req[10] = { 5, 1, 0, 1 };
    const unsigned char greet[3] = { 5, 1, 0 };
    parse_hostport(dest, &d);
    memcpy(req + 4, &d.sin_addr, 4);
    memcpy(req + 8, &d.sin_port, 2);
    if (write_all(fd, greet, 3) < 0 || read_full(fd, rep, 2) < 0)
        return -1;
    if (rep[0] != 5 || rep[1] != 0 || write_all(fd, req, sizeof req) < 0
        || read_full(fd, rep, 4) < 0)
        goto refused;
    if (rep[1] != 0)
        goto refused;
    size_t rest = rep[3] == 1 ? 6 : rep[3] == 4 ? 18 : 0;
    if (!rest || read_full(fd, rep, rest) < 0)
        goto refused;
    return 0;
refused:
    errno = EPROTO;
    return -1;
}

static int connect_to(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    const char *socks = getenv("RHBENCH_SOCKS5");
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0
        || (socks && *socks && socks5_connect(fd, socks) < 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    nodelay(fd);
    return fd;
}

static int listen_on(int port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind %d: %s", port, strerror(errno));
    if (listen(fd, 4096) < 0) die("listen: %s", strerror(errno));
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("PORT %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 0 on success, -1 on error or EOF before len */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) { errno = ECONNRESET; return -1; }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static pthread_attr_t small_stack;

static void init_threads(void)
{
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 128 * 1024);
    pthread_attr_setdetachstate(&small_stack, PTHREAD_CREATE_DETACHED);
}

/* ------------------------------------------------------------------ server */

/* A source's client sends nothing after its go byte: an EOF means it is gone.
 * Apache's CONNECT then half-closes the target and lingers, reading whatever
 * comes for up to 30 s in 512-byte reads: a source that went on sending kept
 * Apache's threads busy long after the measurement, under the next path's
 * figures (docs/BENCHMARKS.md, the website beside a bulk transfer). */
static int peer_gone(int fd)
{
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 0;
}

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char hdr[HDR_LEN], reply[8];
    char *buf = NULL;
    if (read_full(fd, hdr, HDR_LEN) < 0) goto out;
    uint64_t count = get_be64(hdr + 8);
    if (hdr[0] == 'U') {
        uint64_t got = 0;
        if (write_all(fd, "R", 1) < 0) goto out;
        if (!(buf = malloc(IO_CHUNK))) goto out;
        while (got < count) {
            uint64_t want = count - got;
            ssize_t n = read(fd, buf, want < IO_CHUNK ? (size_t)want : IO_CHUNK);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (uint64_t)n;
        }
        put_be64(reply, got);
        if (write_all(fd, reply, 8) < 0) goto out;
    } else if (hdr[0] == 'D') {
        uint64_t sent = 0;
        char go;
        /* ready; the client says go once every stream is ready */
        if (write_all(fd, "R", 1) < 0 || read_full(fd, &go, 1) < 0) goto out;
        while (sent < count && !peer_gone(fd)) {
            size_t off = (size_t)(sent % PAT_LEN), n = PAT_LEN - off;
            if (n > IO_CHUNK) n = IO_CHUNK;
            if (n > count - sent) n = (size_t)(count - sent);
            ssize_t w = write(fd, pattern + off, n);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) goto out;
            sent += (uint64_t)w;
        }
    } else if (hdr[0] == 'E') {
        char small[65536];
        for (;;) {
            ssize_t n = read(fd, small, sizeof small);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) goto out;
            if (write_all(fd, small, (size_t)n) < 0) goto out;
        }
    } else {
        goto out;
    }
    /* wait for the client to close (bounded), so no byte is cut by a reset */
    {
        char sink[4096];
        set_timeouts(fd, 30);
        while (read(fd, sink, sizeof sink) > 0) { }
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static int cmd_server(int argc, char **argv)
{
    if (argc < 1) die("usage: server PORT [PROCS]");
    int lfd = listen_on(atoi(argv[0]));
    raise_nofile();
    /* idle ramps of 20,000 tunnels: more connections than one process may
     * hold; the others accept on the same socket and die with this one */
    for (int i = 1; argc >= 2 && i < atoi(argv[1]); ++i)
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1) _exit(0);
            break;
        }
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) { usleep(10000); continue; }
            die("accept: %s", strerror(errno));
        }
        nodelay(fd);
        pthread_t t;
        if (pthread_create(&t, &small_stack, serve_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}

/* ------------------------------------------------------------- throughput */

struct thr_shared {
    struct sockaddr_in sa;
    int up;
    uint64_t per_stream;
    double timeout;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready, go;
    double start;
};

struct thr_stream {
    struct thr_shared *sh;
    pthread_t tid;
    uint64_t moved;
    double end;
    char err[160];
};

static void *thr_run(void *arg)
{
    struct thr_stream *st = arg;
    struct thr_shared *sh = st->sh;
    unsigned char hdr[HDR_LEN] = {0};
    char r;
    char *buf = NULL;
    int fd = connect_to(&sh->sa);
    int ok = 0;
    if (fd < 0) {
        snprintf(st->err, sizeof st->err, "connect: %s", strerror(errno));
    } else {
        set_timeouts(fd, sh->timeout);
        hdr[0] = sh->up ? 'U' : 'D';
        put_be64(hdr + 8, sh->per_stream);
        if (write_all(fd, hdr, HDR_LEN) < 0 || read_full(fd, &r, 1) < 0 || r != 'R')
            snprintf(st->err, sizeof st->err, "no ready answer: %s", strerror(errno));
        else
            ok = 1;
    }
    pthread_mutex_lock(&sh->mu);
    sh->ready++;
    pthread_cond_broadcast(&sh->cv);
    while (!sh->go) pthread_cond_wait(&sh->cv, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
    if (!ok) goto out;
    if (!sh->up && write_all(fd, "G", 1) < 0) {
        snprintf(st->err, sizeof st->err, "go: %s", strerror(errno));
        goto out;
    }
    if (sh->up) {
        uint64_t sent = 0;
        unsigned char reply[8];
        while (sent < sh->per_stream) {
            size_t off = (size_t)(sent % PAT_LEN), n = PAT_LEN - off;
            if (n > IO_CHUNK) n = IO_CHUNK;
            if (n > sh->per_stream - sent) n = (size_t)(sh->per_stream - sent);
            ssize_t w = write(fd, pattern + off, n);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                snprintf(st->err, sizeof st->err, "send after %llu bytes: %s",
                         (unsigned long long)sent, strerror(errno));
                goto out;
            }
            sent += (uint64_t)w;
        }
        if (read_full(fd, reply, 8) < 0) {
            snprintf(st->err, sizeof st->err, "no count answer: %s", strerror(errno));
            goto out;
        }
        st->moved = get_be64(reply);
        if (st->moved != sh->per_stream)
            snprintf(st->err, sizeof st->err, "server got %llu of %llu bytes",
                     (unsigned long long)st->moved, (unsigned long long)sh->per_stream);
    } else {
        if (!(buf = malloc(IO_CHUNK))) goto out;
        while (st->moved < sh->per_stream) {
            ssize_t n = read(fd, buf, IO_CHUNK);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                snprintf(st->err, sizeof st->err, "receive after %llu bytes: %s",
                         (unsigned long long)st->moved, n == 0 ? "EOF" : strerror(errno));
                goto out;
            }
            st->moved += (uint64_t)n;
        }
    }
    st->end = now_s();
out:
    free(buf);
    if (fd >= 0) close(fd);
    return NULL;
}

static int cmd_thr(int argc, char **argv)
{
    if (argc < 5) die("usage: thr HOST:PORT up|down BYTES STREAMS TIMEOUT_S");
    struct thr_shared sh;
    memset(&sh, 0, sizeof sh);
    parse_hostport(argv[0], &sh.sa);
    sh.up = strcmp(argv[1], "up") == 0;
    uint64_t total = strtoull(argv[2], NULL, 10);
    int n = atoi(argv[3]);
    if (n < 1) n = 1;
    sh.timeout = atof(argv[4]);
    sh.per_stream = total / (uint64_t)n;
    if (sh.per_stream < 1) sh.per_stream = 1;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    struct thr_stream *st = calloc((size_t)n, sizeof *st);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        st[i].sh = &sh;
        if (pthread_create(&st[i].tid, &attr, thr_run, &st[i]) != 0) die("pthread_create");
    }
    pthread_mutex_lock(&sh.mu);
    while (sh.ready < n) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&sh.cv, &sh.mu, &ts);
    }
    double setup = now_s() - t0;
    sh.start = now_s();
    sh.go = 1;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);
    uint64_t moved = 0;
    int ok = 0;
    double end = sh.start;
    const char *err = NULL;
    for (int i = 0; i < n; i++) {
        pthread_join(st[i].tid, NULL);
        moved += st[i].moved;
        if (!st[i].err[0]) ok++;
        else if (!err) err = st[i].err;
        if (st[i].end > end) end = st[i].end;
    }
    double secs = end - sh.start;
    printf("bytes=%llu seconds=%.6f mbps=%.3f streams=%d ok=%d setup_s=%.4f",
           (unsigned long long)moved, secs, secs > 0 ? moved / secs / 1e6 : 0.0, n, ok, setup);
    if (err) printf(" error=\"%s\"", err);
    printf("\n");
    return ok == n ? 0 : 1;
}

/* ------------------------------------------------------------------- echo */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_echo(int argc, char **argv)
{
    if (argc < 4) die("usage: echo HOST:PORT COUNT WARMUP TIMEOUT_S");
    struct sockaddr_in sa;
    parse_hostport(argv[0], &sa);
    int count = atoi(argv[1]), warm = atoi(argv[2]);
    double timeout = atof(argv[3]);
    unsigned char hdr[HDR_LEN + 1] = {'E'};
    char c = 'x';
    double t0 = now_s();
    int fd = connect_to(&sa);
    if (fd < 0) die("connect: %s", strerror(errno));
    set_timeouts(fd, timeout);
    hdr[HDR_LEN] = 'x';
    if (write_all(fd, hdr, sizeof hdr) < 0 || read_full(fd, &c, 1) < 0) {
        printf("error=\"first echo: %s\"\n", strerror(errno));
        return 1;
    }
    double setup = now_s() - t0;
    double *s = calloc((size_t)count + 1, sizeof *s);
    for (int i = 0; i < warm + count; i++) {
        double a = now_s();
        if (write_all(fd, &c, 1) < 0 || read_full(fd, &c, 1) < 0) {
            printf("error=\"echo %d: %s\"\n", i, strerror(errno));
            return 1;
        }
        if (i >= warm) s[i - warm] = now_s() - a;
    }
    close(fd);
    qsort(s, (size_t)count, sizeof *s, cmp_double);
    double sum = 0;
    for (int i = 0; i < count; i++) sum += s[i];
    int p99 = (int)(0.99 * count + 0.5) - 1;
    if (p99 < 0) p99 = 0;
    if (p99 >= count) p99 = count - 1;
    printf("n=%d setup_us=%.1f median_us=%.1f p99_us=%.1f min_us=%.1f mean_us=%.1f max_us=%.1f\n",
           count, setup * 1e6, (count % 2 ? s[count / 2] : (s[count / 2 - 1] + s[count / 2]) / 2) * 1e6,
           s[p99] * 1e6, s[0] * 1e6, sum / count * 1e6, s[count - 1] * 1e6);
    return 0;
}

/* ------------------------------------------------------------------- idle */

/* A TLS connection to an HTTP proxy (Apache with mod_proxy_connect), CONNECT to
 * target; returns the SSL (blocking) or NULL. */
static SSL *connect_tls_tunnel(SSL_CTX *ctx, const struct sockaddr_in *proxy, const char *target,
                               char *err, size_t errlen)
{
    int fd = connect_to(proxy);
    if (fd < 0) { snprintf(err, errlen, "connect: %s", strerror(errno)); return NULL; }
    set_timeouts(fd, 30);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        snprintf(err, errlen, "TLS handshake failed");
        goto fail;
    }
    char req[512], resp[2048];
    int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
    if (SSL_write(ssl, req, n) != n) { snprintf(err, errlen, "CONNECT write"); goto fail; }
    size_t got = 0;
    while (got < sizeof resp - 1) {
        int r = SSL_read(ssl, resp + got, 1);
        if (r <= 0) { snprintf(err, errlen, "CONNECT answer cut"); goto fail; }
        got++;
        resp[got] = 0;
        if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0) break;
    }
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0 && strncmp(resp, "HTTP/1.0 200", 12) != 0) {
        char *nl = strchr(resp, '\r');
        if (nl) *nl = 0;
        snprintf(err, errlen, "CONNECT refused: %.120s", resp);
        goto fail;
    }
    return ssl;
fail:
    SSL_free(ssl);
    close(fd);
    return NULL;
}

struct idle_conn { int fd; SSL *ssl; };

/* Wait up to timeout for one byte on each of c[0..n); state[i] becomes 1 (got it)
 * or 2 (closed). Returns how many got their byte. */
static int wait_echoes(struct idle_conn *c, int n, char *state, double timeout)
{
    struct pollfd *q = calloc((size_t)n + 1, sizeof *q);
    int *qi = calloc((size_t)n + 1, sizeof *qi);
    double deadline = now_s() + timeout;
    int pending = n, ok = 0;
    while (pending > 0) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!state[i]) { q[m].fd = c[i].fd; q[m].events = POLLIN; q[m].revents = 0; qi[m++] = i; }
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0) break;
        int r = poll(q, (nfds_t)m, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (int k = 0; k < m; k++) {
            if (!q[k].revents) continue;
            int i = qi[k];
            char ch;
            int got = c[i].ssl ? SSL_read(c[i].ssl, &ch, 1) : (int)read(c[i].fd, &ch, 1);
            if (got == 1) { state[i] = 1; ok++; pending--; }
            else if (!c[i].ssl || SSL_get_error(c[i].ssl, got) != SSL_ERROR_WANT_READ) {
                state[i] = 2; pending--;
            }
        }
    }
    free(q);
    free(qi);
    return ok;
}

#define IDLE_LATE_S 90.0

static int cmd_idle(int argc, char **argv)
{
    if (argc < 4) die("usage: idle HOST:PORT N BATCH TIMEOUT_S [connect-tls PROXY:PORT TARGET:PORT]");
    /* HOST:PORT[,PORT...]: tunnels go round-robin to the ports (several forwarders) */
    struct sockaddr_in sa, eps[64];
    int neps = 0;
    {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", argv[0]);
        char *colon = strrchr(buf, ':');
        if (!colon) die("bad HOST:PORT '%s'", argv[0]);
        *colon = 0;
        for (char *p = strtok(colon + 1, ","); p && neps < 64; p = strtok(NULL, ",")) {
            char one[1100];
            snprintf(one, sizeof one, "%s:%s", buf, p);
            parse_hostport(one, &eps[neps++]);
        }
        if (!neps) die("no port in '%s'", argv[0]);
        sa = eps[0];
    }
    int n = atoi(argv[1]), batch = atoi(argv[2]);
    double timeout = atof(argv[3]);
    SSL_CTX *ctx = NULL;
    const char *target = NULL;
    if (argc >= 7 && strcmp(argv[4], "connect-tls") == 0) {
        parse_hostport(argv[5], &sa);
        target = argv[6];
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (batch < 1) batch = 1;
    raise_nofile();
    struct idle_conn *c = calloc((size_t)n, sizeof *c);
    unsigned char hdr[HDR_LEN + 1] = {'E'};
    hdr[HDR_LEN] = 'x';
    int held = 0;
    char err[256] = "";
    double t0 = now_s();
    while (held < n && !err[0]) {
        int lo = held, hi = held + batch > n ? n : held + batch;
        int opened = lo;
        for (int i = lo; i < hi; i++) {
            c[i].fd = -1;
            if (ctx) {
                c[i].ssl = connect_tls_tunnel(ctx, &sa, target, err, sizeof err);
                if (!c[i].ssl) break;
                c[i].fd = SSL_get_fd(c[i].ssl);
                if (SSL_write(c[i].ssl, hdr, sizeof hdr) != (int)sizeof hdr) {
                    snprintf(err, sizeof err, "write on tunnel %d", i);
                    break;
                }
            } else {
                c[i].fd = connect_to(&eps[i % neps]);
                if (c[i].fd < 0) {
                    snprintf(err, sizeof err, "connect %d: %s", i, strerror(errno));
                    break;
                }
                if (write_all(c[i].fd, hdr, sizeof hdr) < 0) {
                    snprintf(err, sizeof err, "write on tunnel %d: %s", i, strerror(errno));
                    close(c[i].fd);
                    c[i].fd = -1;
                    break;
                }
            }
            opened = i + 1;
        }
        /* wait for every echo of this batch */
        char *done = calloc((size_t)(hi - lo) + 1, 1);
        wait_echoes(c + lo, opened - lo, done, timeout);
        for (int i = lo; i < opened; i++)
            if (done[i - lo] == 2 && !err[0])
                snprintf(err, sizeof err, "tunnel %d closed before its first echo", i);
        int nheld = lo;
        for (int i = lo; i < opened; i++) {
            if (done[i - lo] == 1) {
                c[nheld++] = c[i];
            } else {
                if (!err[0]) snprintf(err, sizeof err, "tunnel %d: no echo within %.0f s", i, timeout);
                if (c[i].ssl) SSL_free(c[i].ssl);
                if (c[i].fd >= 0) close(c[i].fd);
            }
        }
        free(done);
        held = nheld;
        if (opened < hi && !err[0]) snprintf(err, sizeof err, "could not open tunnel %d", opened);
    }
    printf("HELD %d seconds=%.3f", held, now_s() - t0);
    if (err[0]) printf(" error=\"%s\"", err);
    printf("\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "check", 5) != 0) continue;
        /* one byte through every held tunnel; count the echoes */
        int alive = 0;
        double t1 = now_s();
        for (int i = 0; i < held; i++) {
            if (c[i].ssl) SSL_write(c[i].ssl, "y", 1);
            else if (write(c[i].fd, "y", 1) != 1) { }
        }
        char *ok = calloc((size_t)held + 1, 1);
        alive = wait_echoes(c, held, ok, timeout);
        double in_time = now_s() - t1;
        /* the rest get IDLE_LATE_S more: a tunnel that wakes slowly (thousands
         * of TLS handshakes at once) is told apart from a lost one */
        int late = alive < held ? wait_echoes(c, held, ok, IDLE_LATE_S) : 0;
        /* the ones that never answered: closed by the forwarder, or silent; and on
         * which entry port (each port is one forwarder), so that its log can be read */
        int closed = 0, silent = 0;
        char where[512] = "";
        size_t wl = 0;
        for (int i = 0; i < held; i++) {
            if (ok[i] == 1) continue;
            if (ok[i] == 2) closed++;
            else silent++;
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            if (wl < sizeof where - 40 && getpeername(c[i].fd, (struct sockaddr *)&peer, &pl) == 0)
                wl += (size_t)snprintf(where + wl, sizeof where - wl, "%s%d:%c", wl ? "," : "",
                                       ntohs(peer.sin_port), ok[i] == 2 ? 'c' : 's');
        }
        free(ok);
        printf("ALIVE %d of %d seconds=%.3f later=%d all_seconds=%.3f closed=%d silent=%d"
               " lost=\"%s\"\n", alive, held, in_time, late, now_s() - t1, closed, silent, where);
        fflush(stdout);
    }
    for (int i = 0; i < held; i++) {
        if (c[i].ssl) SSL_free(c[i].ssl);
        close(c[i].fd);
    }
    return 0;
}

/* ------------------------------------------------------------ delay proxy */

struct chunk {
    struct chunk *next;
    uint64_t due;
    uint32_t len, off;
    int eof;
    unsigned char data[];
};

#define CHUNK_DATA (64 * 1024)

struct pair;
struct dir {
    int from, to;
    struct chunk *head, *tail;
    size_t queued;
    int eof_read, shut;
};

struct pair {
    int fd[2];
    struct dir d[2];         /* d[0]: fd[0] -> fd[1]; d[1]: fd[1] -> fd[0] */
    uint32_t mask[2];        /* epoll events registered per fd */
    int dead;
    struct pair *next, *prev;
};

struct ep_tag { struct pair *p; int side; };  /* side 0/1: fd index; -1: listener */

static struct pair *pairs;
static struct chunk *free_chunks;
static uint64_t delay_ns;
static size_t window;
static int epfd;

static struct chunk *chunk_get(void)
{
    struct chunk *c = free_chunks;
    if (c) free_chunks = c->next;
    else if (!(c = malloc(sizeof *c + CHUNK_DATA))) die("out of memory");
    c->next = NULL;
    c->len = c->off = 0;
    c->eof = 0;
    c->due = 0;
    return c;
}

static void chunk_put(struct chunk *c)
{
    c->next = free_chunks;
    free_chunks = c;
}

static void pair_kill(struct pair *p)
{
    if (p->dead) return;
    p->dead = 1;
    for (int s = 0; s < 2; s++) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd[s], NULL);
        close(p->fd[s]);
        struct chunk *c = p->d[s].head;
        while (c) { struct chunk *n = c->next; chunk_put(c); c = n; }
        p->d[s].head = p->d[s].tail = NULL;
    }
}

static void pair_update(struct pair *p, struct ep_tag *tags)
{
    for (int s = 0; s < 2; s++) {
        uint32_t ev = 0;
        struct dir *out = &p->d[s], *in = &p->d[1 - s];   /* fd[s] reads for d[s], writes for d[1-s] */
        if (!out->eof_read && out->queued < window) ev |= EPOLLIN;
        if (in->head && in->head->due <= now_ns() && !in->shut) ev |= EPOLLOUT;
        if (ev != p->mask[s]) {
            struct epoll_event e;
            e.events = ev;
            e.data.ptr = &tags[s];
            epoll_ctl(epfd, EPOLL_CTL_MOD, p->fd[s], &e);
            p->mask[s] = ev;
        }
    }
}

/* read what fd offers into the direction's queue; -1: the pair must go */
static int dir_read(struct dir *d)
{
    while (!d->eof_read && d->queued < window) {
        struct chunk *c = d->tail;
        if (!c || c->eof || c->len == CHUNK_DATA || c->due != 0) {
            c = chunk_get();
            if (d->tail) d->tail->next = c; else d->head = c;
            d->tail = c;
        }
        ssize_t n = read(d->from, c->data + c->len, CHUNK_DATA - c->len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        if (n == 0) {
            d->eof_read = 1;
            c->eof = 1;
            break;
        }
        c->len += (uint32_t)n;
        d->queued += (size_t)n;
        if (c->len < CHUNK_DATA) break;   /* the socket is drained for now */
        c->due = now_ns() + delay_ns;       /* full chunk: stamp it, start another */
    }
    /* stamp the partly filled tail: its bytes left now */
    if (d->tail && d->tail->due == 0) d->tail->due = now_ns() + delay_ns;
    return 0;
}

/* write due chunks; -1: the pair must go */
static int dir_write(struct dir *d)
{
    uint64_t t = now_ns();
    while (d->head && d->head->due <= t) {
        struct chunk *c = d->head;
        while (c->off < c->len) {
            ssize_t n = write(d->to, c->data + c->off, c->len - c->off);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return 0;
                return -1;
            }
            c->off += (uint32_t)n;
            d->queued -= (size_t)n;
        }
        if (c->eof) {
            shutdown(d->to, SHUT_WR);
            d->shut = 1;
        }
        d->head = c->next;
        if (!d->head) d->tail = NULL;
        chunk_put(c);
    }
    return 0;
}

static int cmd_delay(int argc, char **argv)
{
    if (argc < 4) die("usage: delay LISTEN_PORT HOST:PORT DELAY_MS WINDOW_BYTES");
    struct sockaddr_in up;
    parse_hostport(argv[1], &up);
    delay_ns = (uint64_t)(atof(argv[2]) * 1e6);
    window = (size_t)strtoull(argv[3], NULL, 10);
    if (window < CHUNK_DATA) window = CHUNK_DATA;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on(atoi(argv[0]));
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct ep_tag ltag = {NULL, -1};
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &ltag};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);
    struct epoll_event evs[256];
    for (;;) {
        /* the earliest due chunk that is not being written yet decides the timeout */
        uint64_t t = now_ns(), next = UINT64_MAX;
        for (struct pair *p = pairs; p; p = p->next)
            for (int s = 0; s < 2; s++) {
                struct dir *d = &p->d[s];
                if (!d->head || d->shut) continue;
                /* a due head waits for EPOLLOUT only if that is registered */
                uint64_t due = d->head->due;
                if (due <= t && !(p->mask[1 - s] & EPOLLOUT)) due = t;
                else if (due <= t) continue;
                if (due < next) next = due;
            }
        struct timespec ts, *tsp = NULL;
        if (next != UINT64_MAX) {
            uint64_t w = next - t;
            ts.tv_sec = (time_t)(w / 1000000000u);
            ts.tv_nsec = (long)(w % 1000000000u);
            tsp = &ts;
        }
        int n = epoll_pwait2(epfd, evs, 256, tsp, NULL);
        if (n < 0 && errno != EINTR) die("epoll_pwait2: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct ep_tag *tag = evs[i].data.ptr;
            if (tag->side < 0) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                    if (cfd < 0) break;
                    int sfd = connect_to(&up);
                    if (sfd < 0) { close(cfd); continue; }
                    fcntl(sfd, F_SETFL, O_NONBLOCK);
                    nodelay(cfd);
                    struct pair *p = calloc(1, sizeof *p + 2 * sizeof(struct ep_tag));
                    struct ep_tag *tags = (struct ep_tag *)(p + 1);
                    p->fd[0] = cfd; p->fd[1] = sfd;
                    p->d[0].from = cfd; p->d[0].to = sfd;
                    p->d[1].from = sfd; p->d[1].to = cfd;
                    for (int s = 0; s < 2; s++) {
                        tags[s].p = p; tags[s].side = s;
                        struct epoll_event pe = {.events = EPOLLIN, .data.ptr = &tags[s]};
                        epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd[s], &pe);
                        p->mask[s] = EPOLLIN;
                    }
                    p->next = pairs;
                    if (pairs) pairs->prev = p;
                    pairs = p;
                }
                continue;
            }
            struct pair *p = tag->p;
            if (p->dead) continue;
            int s = tag->side;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                if (dir_read(&p->d[s]) < 0) { pair_kill(p); continue; }
            if (evs[i].events & EPOLLOUT)
                if (dir_write(&p->d[1 - s]) < 0) { pair_kill(p); continue; }
        }
        /* due chunks everywhere, then interest masks; free finished pairs */
        for (struct pair *p = pairs, *nx; p; p = nx) {
            nx = p->next;
            if (!p->dead) {
                for (int s = 0; s < 2 && !p->dead; s++)
                    if (p->d[s].head && p->d[s].head->due <= now_ns() && dir_write(&p->d[s]) < 0)
                        pair_kill(p);
                if (!p->dead && p->d[0].shut && p->d[1].shut) pair_kill(p);
            }
            if (p->dead) {
                if (p->prev) p->prev->next = p->next; else pairs = p->next;
                if (p->next) p->next->prev = p->prev;
                free(p);
                continue;
            }
            pair_update(p, (struct ep_tag *)(p + 1));
        }
    }
}

/* ---------------------------------------------------- WebSocket bridge */

struct wsb_conf {
    struct sockaddr_in to;
    char hostport[128];
    char path[256];
    SSL_CTX *ctx;
};

static struct wsb_conf wsb;

#define WS_BUF (512 * 1024)
#define WS_PAYLOAD_MAX 65535   /* so a data frame head is 8 bytes with its mask */

struct wsb_buf { unsigned char *b; size_t rd, wr; };

static size_t wb_len(struct wsb_buf *w) { return w->wr - w->rd; }
static size_t wb_room(struct wsb_buf *w)
{
    if (w->rd == w->wr) w->rd = w->wr = 0;
    if (w->rd > WS_BUF / 2) {
        memmove(w->b, w->b + w->rd, w->wr - w->rd);
        w->wr -= w->rd;
        w->rd = 0;
    }
    return WS_BUF - w->wr;
}

static void ws_mask(unsigned char *p, size_t n, const unsigned char key[4])
{
    uint32_t k32;
    uint64_t k64;
    memcpy(&k32, key, 4);
    k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= k64;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++) p[i] ^= key[i & 3];
}

/* a client frame (FIN, opcode) with a masked payload, appended to out */
static void ws_frame(struct wsb_buf *out, int opcode, const unsigned char *data, size_t n)
{
    unsigned char *h = out->b + out->wr;
    size_t hl;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) { h[1] = (unsigned char)(0x80 | n); hl = 2; }
    else if (n < 65536) { h[1] = 0x80 | 126; h[2] = (unsigned char)(n >> 8); h[3] = (unsigned char)n; hl = 4; }
    else { h[1] = 0x80 | 127; put_be64(h + 2, n); hl = 10; }
    unsigned char key[4];
    RAND_bytes(key, 4);
    memcpy(h + hl, key, 4);
    hl += 4;
    if (n && data != h + hl) memmove(h + hl, data, n);
    ws_mask(h + hl, n, key);
    out->wr += hl + n;
}

static void *wsb_conn(void *arg)
{
    int cfd = (int)(intptr_t)arg, sfd = -1;
    SSL *ssl = NULL;
    struct wsb_buf up = {0}, down = {0}, in = {0};
    up.b = malloc(WS_BUF); down.b = malloc(WS_BUF); in.b = malloc(WS_BUF);
    if (!up.b || !down.b || !in.b) goto out;
    if ((sfd = connect_to(&wsb.to)) < 0) goto out;
    set_timeouts(sfd, 30);
    ssl = SSL_new(wsb.ctx);
    SSL_set_fd(ssl, sfd);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_connect(ssl) != 1) { fprintf(stderr, "wsbridge: TLS handshake failed\n"); goto out; }
    {
        unsigned char nonce[16];
        char key[32], req[1024];
        RAND_bytes(nonce, sizeof nonce);
        EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: binary\r\n\r\n", wsb.path, wsb.hostport, key);
        if (SSL_write(ssl, req, n) != n) goto out;
        /* the answer's head, byte by byte (it is short); nothing follows it yet */
        size_t got = 0;
        char resp[4096];
        while (got < sizeof resp - 1) {
            if (SSL_read(ssl, resp + got, 1) != 1) { fprintf(stderr, "wsbridge: upgrade cut\n"); goto out; }
            got++;
            if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0) break;
        }
        resp[got] = 0;
        if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
            char *nl = strchr(resp, '\r');
            if (nl) *nl = 0;
            fprintf(stderr, "wsbridge: upgrade refused: %s\n", resp);
            goto out;
        }
    }
    set_timeouts(sfd, 0);
    fcntl(sfd, F_SETFL, O_NONBLOCK);
    fcntl(cfd, F_SETFL, O_NONBLOCK);
    int c_eof = 0, s_eof = 0, close_sent = 0;
    size_t pending_write = 0;   /* length of an SSL_write to retry */
    int want_write = 0;
    for (;;) {
        int progress = 0;
        /* local -> frames */
        if (!c_eof && wb_room(&up) >= WS_PAYLOAD_MAX + 16 && !pending_write) {
            unsigned char *dst = up.b + up.wr + 8;
            ssize_t n = read(cfd, dst, WS_PAYLOAD_MAX);
            if (n > 0) { ws_frame(&up, 2, dst, (size_t)n); progress = 1; }
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) { c_eof = 1; progress = 1; }
        }
        if (c_eof && !close_sent && !wb_len(&up) && !pending_write) {
            wb_room(&up);
            ws_frame(&up, 8, NULL, 0);
            close_sent = 1;
        }
        /* frames -> TLS */
        if (wb_len(&up)) {
            size_t len = pending_write ? pending_write : wb_len(&up);
            int r = SSL_write(ssl, up.b + up.rd, (int)len);
            if (r > 0) { up.rd += (size_t)r; pending_write = 0; want_write = 0; progress = 1; }
            else {
                int e = SSL_get_error(ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) { pending_write = len; want_write = 1; }
                else if (e == SSL_ERROR_WANT_READ) { pending_write = len; want_write = 0; }
                else break;
            }
        }
        /* TLS -> frames -> local: parse what is buffered first, then read more */
        for (;;) {
            /* complete frames (server frames are not masked) */
            while (wb_room(&down) >= WS_BUF / 2) {
                size_t avail = wb_len(&in);
                unsigned char *h = in.b + in.rd;
                if (avail < 2) break;
                size_t hl = 2, n = h[1] & 0x7f;
                if (n == 126) { if (avail < 4) break; n = ((size_t)h[2] << 8) | h[3]; hl = 4; }
                else if (n == 127) { if (avail < 10) break; n = (size_t)get_be64(h + 2); hl = 10; }
                if (h[1] & 0x80) hl += 4;
                if (n > WS_BUF / 2) { s_eof = 1; break; }
                if (avail < hl + n) break;
                int op = h[0] & 0x0f;
                if (op == 0 || op == 1 || op == 2) {
                    if (h[1] & 0x80) ws_mask(h + hl, n, h + hl - 4);
                    memcpy(down.b + down.wr, h + hl, n);
                    down.wr += n;
                } else if (op == 8) {
                    s_eof = 1;
                } else if (op == 9 && !pending_write && wb_room(&up) > n + 16) {
                    ws_frame(&up, 10, h + hl, n);
                }
                in.rd += hl + n;
                progress = 1;
            }
            if (s_eof || wb_room(&in) == 0 || wb_room(&down) < WS_BUF / 2) break;
            int r = SSL_read(ssl, in.b + in.wr, (int)(WS_BUF - in.wr));
            if (r > 0) { in.wr += (size_t)r; progress = 1; continue; }
            int e = SSL_get_error(ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) s_eof = 1;
            break;
        }
        if (wb_len(&down)) {
            ssize_t n = write(cfd, down.b + down.rd, wb_len(&down));
            if (n > 0) { down.rd += (size_t)n; progress = 1; }
            else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
        }
        if (s_eof && !wb_len(&down)) break;
        if (c_eof && close_sent && !wb_len(&up) && s_eof) break;
        if (progress) continue;
        struct pollfd pf[2];
        pf[0].fd = cfd;
        pf[0].events = (short)((!c_eof && !pending_write ? POLLIN : 0) | (wb_len(&down) ? POLLOUT : 0));
        pf[1].fd = sfd;
        pf[1].events = (short)(POLLIN | (want_write ? POLLOUT : 0));
        if (SSL_pending(ssl)) continue;
        if (poll(pf, 2, 1000) < 0 && errno != EINTR) break;
    }
out:
    if (ssl) { SSL_shutdown(ssl); SSL_free(ssl); }
    if (sfd >= 0) close(sfd);
    close(cfd);
    free(up.b); free(down.b); free(in.b);
    return NULL;
}

static int cmd_wsbridge(int argc, char **argv)
{
    if (argc < 3) die("usage: wsbridge LISTEN_PORT HOST:PORT PATH");
    parse_hostport(argv[1], &wsb.to);
    snprintf(wsb.hostport, sizeof wsb.hostport, "%s", argv[1]);
    snprintf(wsb.path, sizeof wsb.path, "%s", argv[2]);
    wsb.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(wsb.ctx, SSL_VERIFY_NONE, NULL);
    /* HTTP/1.1 only: the upgrade is an HTTP/1.1 request */
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(wsb.ctx, alpn, sizeof alpn - 1);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on(atoi(argv[0]));
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) { usleep(10000); continue; }
            die("accept: %s", strerror(errno));
        }
        nodelay(fd);
        pthread_t t;
        if (pthread_create(&t, &small_stack, wsb_conn, (void *)(intptr_t)fd) != 0) close(fd);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) die("usage: rhbench server|thr|echo|idle|delay|wsbridge ...");
    signal(SIGPIPE, SIG_IGN);
    fill_pattern();
    init_threads();
    raise_nofile();
    const char *cmd = argv[1];
    argc -= 2;
    argv += 2;
    if (!strcmp(cmd, "server")) return cmd_server(argc, argv);
    if (!strcmp(cmd, "thr")) return cmd_thr(argc, argv);
    if (!strcmp(cmd, "echo")) return cmd_echo(argc, argv);
    if (!strcmp(cmd, "idle")) return cmd_idle(argc, argv);
    if (!strcmp(cmd, "delay")) return cmd_delay(argc, argv);
    if (!strcmp(cmd, "wsbridge")) return cmd_wsbridge(argc, argv);
    die("unknown command %s", cmd);
}
