/* The child's reactor (see mod_rh_reactor.h): one thread, one epoll set, a
 * min-heap of deadlines. It never runs a request itself: what is ready goes to
 * an MPM worker (mod_rh_async.c). It only closes connections: the lingering
 * read after the response and the freeing of the connection's pool. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>
#include <ap_mpm.h>
#include <http_connection.h>

#include "mod_rh_private.h"
#include "mod_rh_async.h"
#include "mod_rh_daemon.h"
#include "mod_rh_reactor.h"
#include "mod_rh_wait.h"

#define REACTOR_EVENTS  256
#define REACTOR_TICK_MS 1000    /* the core's beat is looked at this often */
#define TRIM_MS         10000   /* malloc_trim at most this often, after changes */

typedef struct rh_reactor {
    int ep;
    int wake;                   /* eventfd: stop */
    apr_thread_mutex_t *mu;
    rh_timers timers;
    size_t cap;
    unsigned parked;            /* armed parks */
    unsigned held;              /* connections not yet destroyed */
    int trim_due;               /* connections came or went since the last trim */
    long trimmed;               /* when malloc_trim last ran */
    volatile int stop;
    volatile int draining;      /* the child stops gracefully */
    apr_thread_t *thread;
    server_rec *s;
} rh_reactor;

static rh_reactor *g_reactor;
static struct rh_park_tag g_wake_tag;

int rh_reactor_running(void)
{
    return g_reactor != NULL;
}

/* Room in the heap for one more (it only grows: a park holds its slot). */
static int timers_room(rh_reactor *R)
{
    if (R->timers.len < R->cap)
        return 0;
    size_t cap = R->cap ? R->cap * 2 : 1024;
    rh_timer **h = realloc(R->timers.heap, cap * sizeof(*h));
    if (!h)
        return -1;
    R->timers.heap = h;
    R->cap = cap;
    return 0;
}

static void unwatch(rh_reactor *R, rh_park *p)
{
    if (p->fd >= 0)
        epoll_ctl(R->ep, EPOLL_CTL_DEL, p->fd, NULL);
    if (!p->no_fd)
        epoll_ctl(R->ep, EPOLL_CTL_DEL, p->csock, NULL);
    rh_timers_remove(&R->timers, &p->timer);
    p->armed = 0;
    R->parked--;
}

static int watch(rh_reactor *R, rh_park *p)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    p->tag[0] = (struct rh_park_tag){ p, 0 };
    p->tag[1] = (struct rh_park_tag){ p, 1 };
    if (p->fd >= 0) {
        ev.events = p->fd_events;
        ev.data.ptr = &p->tag[0];
        if (epoll_ctl(R->ep, EPOLL_CTL_ADD, p->fd, &ev) != 0)
            return -1;
    }
    ev.events = EPOLLRDHUP | (p->client_in ? EPOLLIN : 0);
    ev.data.ptr = &p->tag[1];
    if (!p->no_fd && epoll_ctl(R->ep, EPOLL_CTL_ADD, p->csock, &ev) != 0) {
        if (p->fd >= 0)
            epoll_ctl(R->ep, EPOLL_CTL_DEL, p->fd, NULL);
        return -1;
    }
    return 0;
}

void rh_reactor_arm(rh_park *p)
{
    rh_reactor *R = g_reactor;
    apr_thread_mutex_lock(R->mu);
    p->failed = 0;
    if (p->kept)
        p->kept = 0;            /* its descriptors stayed in the set (quick_first) */
    else if (watch(R, p) != 0)
        p->failed = 1;          /* the reactor's next round hands it back */
    if (p->state != RH_PARK_LINGER)   /* a lingering one keeps its deadline */
        p->timer.deadline = p->timeout_ms >= 0 ? rh_now_ms() + p->timeout_ms
                                               : rh_now_ms() + 3600L * 1000;
    if (p->failed)
        p->timer.deadline = 0;
    if (timers_room(R) != 0)
        p->failed = 1, p->timer.deadline = 0;   /* without a slot it cannot wait */
    else
        rh_timers_push(&R->timers, &p->timer);
    p->armed = 1;
    R->parked++;
    int failed = p->failed;     /* once unlocked, p may be gone */
    apr_thread_mutex_unlock(R->mu);
    if (failed) {
        uint64_t one = 1;   /* wake the reactor now */
        if (write(R->wake, &one, sizeof(one)) < 0) {
            /* the tick picks it up */
        }
    }
}

void rh_reactor_destroy(rh_park *p)
{
    conn_rec *c = p->c;
    rh_reactor *R = g_reactor;
    /* event counts a suspended connection until its pool goes: its cleanup
     * decrements the count of the state the connection is in */
    if (c->cs)
        c->cs->state = CONN_STATE_SUSPENDED;
    apr_pool_destroy(c->pool);
    apr_thread_mutex_lock(R->mu);
    R->held--;
    R->trim_due = 1;
    apr_thread_mutex_unlock(R->mu);
}

/* Lingering close: what the client still sends is read and dropped until it
 * closes or 2 s pass, so our close does not reset what it has yet to read.
 * 1 when the connection is done. */
static int linger_read(rh_park *p)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(p->csock, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            continue;
        return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
    }
}

/* Why a ready park woke, from its events. */
static int why_of(const rh_park *p, const struct rh_park_tag *tag, uint32_t events)
{
    if (!tag->client || p->client_in)
        return RH_WAIT_READY;
    return events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) ? RH_WAIT_GONE : RH_WAIT_READY;
}

/* A park whose wait ended: to a worker (ready), or closed (done). */
static void ended(rh_reactor *R, rh_park *p, int why, rh_park **ready, rh_park **done)
{
    unwatch(R, p);
    if (p->state == RH_PARK_LINGER) {
        int over = p->no_fd || why != RH_WAIT_READY || linger_read(p);
        if (over && rh_now_ms() < p->t_safe) {
            /* too soon after the suspension (event's thread may still be
             * leaving it): only the deadline is watched until then */
            p->no_fd = 1;
            p->timer.deadline = p->t_safe;
        }
        if (!over || rh_now_ms() < p->t_safe) {
            p->next = *ready;       /* re-armed, still lingering */
            *ready = p;
            return;
        }
        p->next = *done;
        *done = p;
        return;
    }
    p->why = why;
    p->next = *ready;
    *ready = p;
}

/* A wake the park's quick function may take (an idle stream pull's
 * heartbeat): the park leaves the heap but its descriptors stay in the set,
 * so that waiting again after it costs no epoll_ctl (four a heartbeat).
 * 1 when taken that way (see hand_one). */
static int quick_first(rh_reactor *R, rh_park *p, int why, rh_park **ready)
{
    if (!p->by_fd || !p->quick || p->state != RH_PARK_REQUEST || why != RH_WAIT_READY)
        return 0;
    rh_timers_remove(&R->timers, &p->timer);
    p->armed = 0;
    p->kept = 1;
    R->parked--;
    p->why = why;
    p->next = *ready;
    *ready = p;
    return 1;
}

/* A kept park goes to a worker after all: out of the set first, as any
 * park a worker runs. */
static void forget_kept(rh_reactor *R, rh_park *p)
{
    apr_thread_mutex_lock(R->mu);
    if (p->fd >= 0)
        epoll_ctl(R->ep, EPOLL_CTL_DEL, p->fd, NULL);
    if (!p->no_fd)
        epoll_ctl(R->ep, EPOLL_CTL_DEL, p->csock, NULL);
    p->kept = 0;
    apr_thread_mutex_unlock(R->mu);
}

static void on_event(rh_reactor *R, struct epoll_event *ev, rh_park **ready, rh_park **done)
{
    struct rh_park_tag *tag = ev->data.ptr;
    if (tag == &g_wake_tag) {
        uint64_t v;
        if (read(R->wake, &v, sizeof(v)) < 0) {
            /* nothing to drain */
        }
        return;
    }
    rh_park *p = tag->p;
    if (!p->armed)
        return;     /* another of its descriptors ended the wait in this round */
    p->by_fd = !tag->client;
    int why = why_of(p, tag, ev->events);
    if (!quick_first(R, p, why, ready))
        ended(R, p, why, ready, done);
}

/* Deadlines due; with a stopped or stuck core every request waiting on it
 * hears of it, as a blocking wait would within RH_CORE_STUCK_MS; the
 * requests of the other cores wait on. */
static void on_time(rh_reactor *R, long now, int tick, rh_park **ready, rh_park **done)
{
    int stuck = tick && rh_any_core_stuck();
    rh_timer *t;
    while ((t = rh_timers_min(&R->timers)) && t->deadline <= now) {
        rh_park *p = (rh_park *)((char *)t - offsetof(rh_park, timer));
        p->by_fd = 0;
        ended(R, p, p->failed ? RH_WAIT_GONE : RH_WAIT_TIMEOUT, ready, done);
    }
    if (!stuck && !(tick && R->draining))
        return;
    for (size_t i = 0; i < R->timers.len; ) {
        rh_park *p = (rh_park *)((char *)R->timers.heap[i] - offsetof(rh_park, timer));
        int dead = stuck && p->state == RH_PARK_REQUEST && rh_core_stuck(p->core);
        int end = dead || (R->draining && p->state == RH_PARK_KEEPALIVE);
        if (!end) {
            ++i;
            continue;
        }
        p->by_fd = 0;
        ended(R, p, dead ? RH_WAIT_STUCK : RH_WAIT_TIMEOUT, ready, done);
        i = 0;      /* the heap moved */
    }
}

static int wait_ms(rh_reactor *R)
{
    long ms = REACTOR_TICK_MS;
    apr_thread_mutex_lock(R->mu);
    rh_timer *t = rh_timers_min(&R->timers);
    if (t) {
        long left = t->deadline - rh_now_ms();
        ms = left < 0 ? 0 : left < ms ? left : ms;
    }
    apr_thread_mutex_unlock(R->mu);
    return (int)ms;
}

/* A ready park: lingering on, handled here (quick), or to a worker. */
static void hand_one(rh_reactor *R, rh_park *p)
{
    if (p->state == RH_PARK_LINGER) {
        rh_reactor_arm(p);          /* still lingering */
        return;
    }
    if (p->kept) {
        if (rh_async_quick(p))
            return;                 /* done here (a heartbeat), waiting again: no worker woken */
        forget_kept(R, p);
    }
    if (ap_mpm_register_timed_callback(0, rh_async_run, p) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, R->s, RHLOG(2080)
                     "reactor: the MPM took no callback; connection closed");
        rh_reactor_destroy(p);
    }
}

/* Hands the ready ones on (outside the lock: arming takes it). */
static void hand_on(rh_reactor *R, rh_park *ready, rh_park *done)
{
    while (done) {
        rh_park *next = done->next;
        rh_reactor_destroy(done);
        done = next;
    }
    while (ready) {
        rh_park *next = ready->next;
        hand_one(R, ready);
        ready = next;
    }
}

/* Parked connections stay for minutes among connections that came and went
 * (TLS handshakes, closed connections, a busy pull's copy buffer): glibc
 * keeps the pages their memory freed in the middle of its heaps, so the
 * child's memory stays at its high-water mark. malloc_trim gives them back
 * (8.7 KiB per parked connection measured after a ramp); at most every
 * TRIM_MS and only after connections came or went, so an idle child never
 * wakes for it. */
static void trim(rh_reactor *R, long now)
{
    apr_thread_mutex_lock(R->mu);
    int due = R->trim_due && now - R->trimmed >= TRIM_MS;
    if (due)
        R->trim_due = 0, R->trimmed = now;
    apr_thread_mutex_unlock(R->mu);
#ifdef __GLIBC__
    if (due)
        malloc_trim(0);
#endif
}

static void *APR_THREAD_FUNC reactor_main(apr_thread_t *thd, void *data)
{
    rh_reactor *R = data;
    struct epoll_event ev[REACTOR_EVENTS];
    long next_tick = 0;
    (void)thd;

    while (!R->stop) {
        int n = epoll_wait(R->ep, ev, REACTOR_EVENTS, wait_ms(R));
        rh_park *ready = NULL, *done = NULL;
        long now = rh_now_ms();
        int tick = now >= next_tick;
        if (tick)
            next_tick = now + REACTOR_TICK_MS;
        apr_thread_mutex_lock(R->mu);
        for (int i = 0; i < n; ++i)
            on_event(R, &ev[i], &ready, &done);
        on_time(R, now, tick, &ready, &done);
        apr_thread_mutex_unlock(R->mu);
        hand_on(R, ready, done);
        if (tick)
            trim(R, now);
    }
    return NULL;
}

static apr_status_t reactor_stop(void *data)
{
    rh_reactor *R = data;
    apr_status_t rv;
    uint64_t one = 1;
    R->stop = 1;
    if (write(R->wake, &one, sizeof(one)) < 0) {
        /* the tick sees stop */
    }
    apr_thread_join(&rv, R->thread);
    close(R->ep);
    close(R->wake);
    rh_timers_free(&R->timers);
    g_reactor = NULL;
    return APR_SUCCESS;
}

void rh_reactor_child_init(apr_pool_t *pchild, server_rec *s)
{
    rh_reactor *R = apr_pcalloc(pchild, sizeof(*R));
    struct epoll_event ev;

    R->s = s;
    R->ep = epoll_create1(EPOLL_CLOEXEC);
    R->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (R->ep < 0 || R->wake < 0 || rh_timers_init(&R->timers, 0) != 0
        || apr_thread_mutex_create(&R->mu, APR_THREAD_MUTEX_DEFAULT, pchild) != APR_SUCCESS)
        goto leave;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = &g_wake_tag;
    if (epoll_ctl(R->ep, EPOLL_CTL_ADD, R->wake, &ev) != 0
        || apr_thread_create(&R->thread, NULL, reactor_main, R, pchild) != APR_SUCCESS)
        goto leave;
    g_reactor = R;
    apr_pool_cleanup_register(pchild, R, reactor_stop, apr_pool_cleanup_null);
    return;
leave:
    ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, RHLOG(2081)
                 "reactor: cannot start; relay requests wait on threads in this child");
    if (R->ep >= 0)
        close(R->ep);
    if (R->wake >= 0)
        close(R->wake);
}

void rh_reactor_stopping(void)
{
    rh_reactor *R = g_reactor;
    uint64_t one = 1;
    if (!R)
        return;
    R->draining = 1;
    if (write(R->wake, &one, sizeof(one)) < 0) {
        /* the tick sees it */
    }
}

void rh_reactor_hold(void)
{
    apr_thread_mutex_lock(g_reactor->mu);
    g_reactor->held++;
    g_reactor->trim_due = 1;
    apr_thread_mutex_unlock(g_reactor->mu);
}

int rh_reactor_draining(void)
{
    return g_reactor && g_reactor->draining;
}
