/* The relay core's event loop (rh_core.h): start-up, the epoll wait and the
 * dispatch of its events, the timers that are due, the accept of new requests,
 * the freeing of what died, and the stop. Everything a session or a request
 * does is in the other rh_core_*.c files (see rh_core_int.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_core_int.h"
#include "rh_core_watch.h"
#include "rh_util.h"

#define MAX_EVENTS   256
#define CLIENTS_MAX_PER_SLOT 4      /* client entries at most, per session slot */
#define CORE_MMAP_MIN  (1 << 20)    /* smaller blocks come from the heap ... */
#define CORE_TRIM_MIN  (16 << 20)   /* ... which keeps this much freed at its top */
#define TRIM_MS        10000        /* malloc_trim at most this often, after an end */

static int stop_fd = -1;
uint64_t rh_core_flip_up = UINT64_MAX, rh_core_flip_down = UINT64_MAX;
rh_core_push_count rh_core_push_counts;
long rh_core_hb_ms = 20000;

void rh_core_request_stop(void)
{
    uint64_t one = 1;
    if (stop_fd >= 0) {
        ssize_t rv = write(stop_fd, &one, sizeof(one));
        (void)rv;
    }
}

void rh_core_log(core *c, int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    if (!c->cfg->log || level > c->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    c->cfg->log(c->cfg->log_ctx, level, buf);
}

/* ---- epoll -------------------------------------------------------------- */

/* fds are added once and then only modified; ARMED marks "added" so that an
 * empty event mask is still told apart from "not registered" (EPOLLET, the bit
 * it borrows, is never used). */
#define ARMED 0x80000000u

void rh_core_arm(core *c, int fd, void *ptr, uint32_t *cur, uint32_t want)
{
    if (!want) {
        /* epoll reports HUP/ERR whatever the mask: an fd nobody waits on must go */
        if (*cur)
            epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, NULL);
        *cur = 0;
        return;
    }
    want |= ARMED;
    if (*cur == want)
        return;
    struct epoll_event e = { .events = want & ~ARMED, .data.ptr = ptr };
    int op = *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(c->ep, op, fd, &e) == 0)
        *cur = want;
    else
        rh_core_log(c, RH_LOG_ERR, "epoll_ctl(%d): %s", fd, strerror(errno));
}

static void target_event(core *c, session *s, uint32_t events)
{
    if (s->connecting) {
        rh_core_open_finish(c, s);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        s->t_rd = 1;
    rh_core_session_pump(c, s);
}

static void accept_all(core *c)
{
    for (;;) {
        int fd = accept4(c->cfg->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                rh_core_log(c, RH_LOG_ERR, "accept: %s; pausing new requests for 100 ms",
                            strerror(errno));
                epoll_ctl(c->ep, EPOLL_CTL_DEL, c->cfg->listen_fd, NULL);
                c->listen_paused_until = rh_now_ms() + 100;
            }
            return;
        }
        conn *k = calloc(1, sizeof(*k));
        if (!k) {
            close(fd);
            return;
        }
        k->src = SRC_CONN;
        k->fd = fd;
        k->passed_fd = -1;
        k->kind = CK_NEW;
        rh_core_arm(c, fd, k, &k->ev, EPOLLIN);
    }
}

/* The sessions and connections that ended are freed; 1 if there were any. */
static int reap(core *c)
{
    int any = c->dead_sessions || c->dead_conns;
    while (c->dead_sessions) {
        session *s = c->dead_sessions;
        c->dead_sessions = s->next_dead;
        rh_core_session_free(c, s);
    }
    while (c->dead_conns) {
        conn *k = c->dead_conns;
        c->dead_conns = k->next_dead;
        free(k->in);
        free(k->rq);
        free(k->big);
        free(k);
    }
    return any;
}

/* Memory freed by ended sessions and requests (a push's 64 KiB input
 * buffer, drained rings) sits in the middle of glibc's heap, where it stays
 * resident under the idle sessions that came after it: malloc_trim gives its
 * pages back (the top's CORE_TRIM_MIN stays, for the next transfer's rings),
 * at most every TRIM_MS and only after something ended, so an idle core never
 * wakes for it. */
static void trim(core *c, long now, int ended)
{
    c->trim_due |= ended;
    if (!c->trim_due || now - c->trimmed < TRIM_MS)
        return;
    c->trim_due = 0;
    c->trimmed = now;
#ifdef __GLIBC__
    malloc_trim(CORE_TRIM_MIN);
#endif
}

/* The test hooks (rh_core_int.h): RELAY_HTTPS_TEST_FLIP read, the push
 * input counts from 0 */
static void read_flip(void)
{
    const char *flip = getenv("RELAY_HTTPS_TEST_FLIP");
    /* a run without the variable flips nothing */
    rh_core_flip_up = rh_core_flip_down = UINT64_MAX;
    memset(&rh_core_push_counts, 0, sizeof(rh_core_push_counts));
    if (flip && !strncmp(flip, "up:", 3))
        rh_core_flip_up = strtoull(flip + 3, NULL, 10);
    else if (flip && !strncmp(flip, "down:", 5))
        rh_core_flip_down = strtoull(flip + 5, NULL, 10);
}

/* Sets c up for the loop: 0, or -1 when it cannot run. core_free() undoes
 * it either way. */
#define ORPHAN_DRAIN_MS 60000

/* After a restart without the module (a2dismod), no request can reach the core
 * again but those already in flight in the old children: it lets them end (at
 * most ORPHAN_DRAIN_MS), then stops. Returns 1 when it is time. */
static int orphaned(core *c, long now)
{
    if (rh_registry_claimed(c->cfg->reg, now)) {
        c->orphan_since = 0;
        return 0;
    }
    if (!c->orphan_since) {
        c->orphan_since = now;
        rh_core_log(c, RH_LOG_INFO, "the module is no longer loaded: the relay core stops "
                    "once the %u requests in flight end (at most %d s)", c->held,
                    ORPHAN_DRAIN_MS / 1000);
    }
    return c->held == 0 || now - c->orphan_since >= ORPHAN_DRAIN_MS;
}

/* After an upgrade a newer core serves new sessions; this one ends with its
 * last session, or at the deadline the parent set. Returns 1 when it is time. */
static int drained(core *c, long now)
{
    int64_t until = rh_registry_draining(c->cfg->reg);
    if (!until)
        return 0;
    if (!c->drain_seen) {
        c->drain_seen = 1;
        rh_core_log(c, RH_LOG_INFO, "a new relay core serves new sessions (the module was "
                    "replaced): this one stops after its %u sessions (at most %ld s)",
                    c->cfg->reg->active, (long)((until - now) / 1000));
    }
    return c->cfg->reg->active == 0 || now >= until;
}

static int core_start(core *c, const rh_core_config *cfg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->log_level = cfg->log_level;
    c->ep = -1;
    c->listen_src = SRC_LISTEN;
    c->stop_src = SRC_STOP;
    c->resolver_src = SRC_RESOLVER;
    rh_core_hb_ms = cfg->heartbeat_s > 0 ? 1000L * cfg->heartbeat_s : 20000;
    read_flip();
    c->by_slot = calloc(cfg->reg->nslots, sizeof(*c->by_slot));
    c->tombs = calloc(TOMB_MAX, sizeof(*c->tombs));
    if (!c->by_slot || !c->tombs || rh_timers_init(&c->timers, cfg->reg->nslots) != 0
        || rh_clients_init(&c->clients, cfg->reg->nslots,
                           (size_t)CLIENTS_MAX_PER_SLOT * cfg->reg->nslots) != 0)
        return -1;

    /* many sessions need many descriptors: take what the hard limit allows */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

#ifdef __GLIBC__
    /* a session's rings are allocated when bytes come and freed when they
     * drain, many times a second in a transfer: rings up to 512 KiB (those
     * of RelayBufferSize, 256 KiB by default) come from the heap, not an mmap
     * and an munmap (with its TLB shootdown) each time, and some freed heap is
     * kept for the next. A ring of 1 MiB or more (a resume window's down ring,
     * up to 16 MiB) has its own mapping and grows in place there (rh_ring.c).
     * A fixed threshold also stops glibc from raising it after the first large
     * free (docs/BENCHMARKS.md, the rings' warm-up) */
    mallopt(M_MMAP_THRESHOLD, CORE_MMAP_MIN);
    mallopt(M_TRIM_THRESHOLD, CORE_TRIM_MIN);
#endif
    c->ep = epoll_create1(EPOLL_CLOEXEC);
    stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->ep < 0 || stop_fd < 0) {
        rh_core_log(c, RH_LOG_ERR, "core start: %s", strerror(errno));
        return -1;
    }
    int fl = fcntl(cfg->listen_fd, F_GETFL);
    fcntl(cfg->listen_fd, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &c->listen_src };
    struct epoll_event e2 = { .events = EPOLLIN, .data.ptr = &c->stop_src };
    if (epoll_ctl(c->ep, EPOLL_CTL_ADD, cfg->listen_fd, &e) != 0
        || epoll_ctl(c->ep, EPOLL_CTL_ADD, stop_fd, &e2) != 0) {
        rh_core_log(c, RH_LOG_ERR, "core start: epoll: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void core_free(core *c)
{
    rh_core_resolve_stop(c);
    if (c->ep >= 0)
        close(c->ep);
    if (stop_fd >= 0) {
        close(stop_fd);
        stop_fd = -1;
    }
    free(c->by_slot);
    free(c->tombs);
    free(c->push_scratch);
    rh_timers_free(&c->timers);
    rh_clients_free(&c->clients);
}

/* How long epoll may wait: until the earliest deadline, a beat at most. */
static int wait_ms(const core *c, long now)
{
    if (c->again)
        return 0;   /* sessions to pump again: look at events, do not wait */
    rh_timer *t = rh_timers_min(&c->timers);
    long d = t ? t->deadline - now : RH_CORE_BEAT_MS;
    if (c->pair_due && c->pair_due - now < d)
        d = c->pair_due - now;   /* a rendezvous wait ends */
    if (c->resolve_due && c->resolve_due - now < d)
        d = c->resolve_due - now;   /* a name lookup times out */
    if (c->watch_due && c->watch_due - now < d)
        d = c->watch_due - now;     /* a watch answers empty */
    return d < 0 ? 0 : (d > RH_CORE_BEAT_MS ? RH_CORE_BEAT_MS : (int)d);
}

/* The listen socket accept_all() paused: 1 when it is back in epoll now; else
 * 0, and *timeout is cut to when it comes back. */
static int listen_resume(core *c, long now, int *timeout)
{
    if (!c->listen_paused_until)
        return 0;
    long d = c->listen_paused_until - now;
    if (d <= 0) {
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = &c->listen_src };
        c->listen_paused_until = 0;
        epoll_ctl(c->ep, EPOLL_CTL_ADD, c->cfg->listen_fd, &e);
        return 1;
    }
    if (*timeout < 0 || d < *timeout)
        *timeout = (int)d;
    return 0;
}

/* Each event to its owner, found by the source tag first in its data.ptr. */
static void dispatch(core *c, const struct epoll_event *evs, int n)
{
    for (int i = 0; i < n; ++i) {
        int src = *(int *)evs[i].data.ptr;
        if (src == SRC_LISTEN)
            accept_all(c);
        else if (src == SRC_STOP)
            c->stop_seen = 1;
        else if (src == SRC_RESOLVER)
            rh_core_resolve_event(c);
        else if (src == SRC_CONN) {
            conn *k = evs[i].data.ptr;
            if (!k->closed)
                rh_core_conn_event(c, k, evs[i].events);
        } else if (src == SRC_TARGET) {
            session *s = evs[i].data.ptr;
            if (!s->dead)
                target_event(c, s, evs[i].events);
        } else if (src == SRC_UDP) {
            rh_udp_event(c, evs[i].data.ptr, evs[i].events);
        }
    }
}

/* The sessions whose deadline has come; a dead one still in the heap failed
 * a check, and its linger has ended. */
static void run_timers(core *c, long now)
{
    rh_timer *t;
    while ((t = rh_timers_min(&c->timers)) && t->deadline <= now) {
        session *s = session_of_timer(t);
        if (s->dead) {
            rh_timers_remove(&c->timers, &s->timer);
            if (s->failed_check) {   /* its linger ended */
                s->next_dead = c->dead_sessions;
                c->dead_sessions = s;
            }
            continue;
        }
        rh_core_session_timer(c, s, now);
    }
}

/* Stopping: every session ends, targets see a clean close. */
static void stop_sessions(core *c)
{
    for (uint32_t i = 0; i < c->cfg->reg->nslots; ++i) {
        session *s = c->by_slot[i];
        if (s && !s->dead) {
            rh_core_session_end(c, s, 1, "relay server stopping");
            s->reset = 0;   /* the client hears R; the target gets a plain FIN */
        } else if (s && s->failed_check) {
            rh_timers_remove(&c->timers, &s->timer);   /* still lingering: freed now */
            s->next_dead = c->dead_sessions;
            c->dead_sessions = s;
        }
    }
    rh_core_watch_stop(c);
    reap(c);
}

int rh_core_run(const rh_core_config *cfg)
{
    core C, *c = &C;
    struct epoll_event evs[MAX_EVENTS];
    int rv = RH_CORE_EXIT_FATAL;

    if (core_start(c, cfg) != 0)
        goto leave;
    rv = 0;
    rh_core_log(c, RH_LOG_INFO, "relay core running (pid %d, %u session slots)", (int)getpid(),
                cfg->reg->nslots);

    while (!c->stop_seen) {
        long now = rh_now_ms();
        /* the beat tells httpd's children that the core is alive: one wake-up
         * a second, whatever else it waits for */
        rh_registry_get_limits(cfg->reg, &c->lim);
        rh_core_mem_turn(c);
        rh_registry_publish(cfg->reg, c->held, c->integrity_failures);
        if (cfg->ext)
            rh_stats_watch_now(&cfg->ext->watch, c->watch_sessions, c->watch_waiting);
        rh_registry_beat(cfg->reg, now);
        if (orphaned(c, now) || drained(c, now))
            break;
        int timeout = wait_ms(c, now);
        if (listen_resume(c, now, &timeout))
            continue;
        int n = epoll_wait(c->ep, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            rh_core_log(c, RH_LOG_ERR, "epoll_wait: %s", strerror(errno));
            break;
        }
        dispatch(c, evs, n);
        rh_core_session_again(c);
        /* dead objects are freed only after the whole batch: later events of the
         * batch may still point at them */
        run_timers(c, rh_now_ms());
        rh_pair_timers(c, rh_now_ms());
        rh_udp_tick(c, rh_now_ms());
        rh_core_resolve_timers(c, rh_now_ms());
        rh_core_watch_timers(c, rh_now_ms());
        trim(c, now, reap(c));
    }

    stop_sessions(c);
    rh_core_log(c, RH_LOG_INFO, "relay core stopped");

leave:
    core_free(c);
    return rv;
}
