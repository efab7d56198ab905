/* relay-https client: which tunnels a loop round looks at. A tunnel is looked
 * at (t_timers, then t_advance) only when something happened to it: an event
 * on its local socket, a callback or the end of one of its requests, its
 * deadline (t_deadline, kept in a heap), a failure or a call from outside
 * (t_touch). After the look its deadline and the events its local socket
 * waits for in the epoll set are set anew, and only where they changed: a
 * round costs O(events + due tunnels), an idle tunnel nothing.
 *
 * The local fds of a stdio tunnel (a file or tty epoll cannot watch, a stdout
 * replaced by /dev/null) go through the loop's poll() instead ("polled"). */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rh_util.h"
#include "rhc_epoll.h"
#include "rhc_errors.h"
#include "rhc_tunnel_int.h"

#define TUNNEL_OF(x) ((rhc_tunnel *)((char *)(x) - offsetof(rhc_tunnel, wake.timer)))

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*v, n * size);
    if (!p)
        return -1;
    *v = p;
    *cap = n;
    return 0;
}

void t_touch(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;

    if (t->wake.due || t->wake.gone)
        return;
    /* rhc_wake_add keeps room for every tunnel twice (once looked at, once
     * touched again after its look): this grows nothing */
    if (grow((void **)&c->due, &c->capdue, c->ndue + 1, sizeof(*c->due)) < 0)
        return;     /* out of memory: its deadline still comes */
    c->due[c->ndue++] = t;
    t->wake.due = c->ndue;
}

static int polled_add(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;

    if (grow((void **)&c->polled, &c->cappolled, c->npolled + 1, sizeof(*c->polled)) < 0)
        return -1;
    c->polled[c->npolled++] = t;
    t->wake.polled = c->npolled;
    return 0;
}

static void polled_remove(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;
    size_t i = t->wake.polled - 1;

    c->polled[i] = c->polled[--c->npolled];
    c->polled[i]->wake.polled = i + 1;
    t->wake.polled = 0;
}

int rhc_wake_add(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;

    /* t is not counted in c->ntunnels yet */
    if (grow((void **)&c->due, &c->capdue, 2 * c->ntunnels + 2, sizeof(*c->due)) < 0 ||
        rhc_heap_reserve(&c->timers, c->ntunnels + 1) < 0)
        return -1;
    t->wake.want = RHC_EP_NONE;
    if ((t->local.kind != RHC_LOCAL_SOCKET || t->local.in_fd != t->local.out_fd) &&
        polled_add(t) < 0)
        return -1;
    t_touch(t);
    return 0;
}

void rhc_wake_forget(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;

    t->wake.gone = 1;
    if (t->wake.due)
        c->due[t->wake.due - 1] = NULL;
    t->wake.due = 0;
    rhc_heap_remove(&c->timers, &t->wake.timer);
    if (t->wake.polled)
        polled_remove(t);
    rhc_ep_set(c->epfd, t->local.in_fd, t->wake.want, RHC_EP_NONE, 0);
    t->wake.want = RHC_EP_NONE;
}

/* What its local socket waits for, into the epoll set when that changed (a
 * socket that waits for nothing is out of it: a hangup would wake every
 * round). A descriptor epoll refuses goes through poll() from now on. */
static void watch_local(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;
    int want = t_events_in(t) | t_events_out(t);

    if (!want)
        want = RHC_EP_NONE;
    if (t->wake.polled || want == t->wake.want)
        return;
    if (rhc_ep_set(c->epfd, t->local.in_fd, t->wake.want, want, (uint64_t)(uintptr_t)t) == 0) {
        t->wake.want = want;
        return;
    }
    int err = errno;
    rhc_ep_set(c->epfd, t->local.in_fd, t->wake.want, RHC_EP_NONE, 0);
    t->wake.want = RHC_EP_NONE;
    if (polled_add(t) < 0)
        t_fail(t, RHC_EXIT_ERROR, "internal: cannot watch the local connection: %s",
               strerror(err));
}

/* After a look: the next deadline and the local socket's events. */
static void settle(rhc_tunnel *t)
{
    /* the heap holds a slot for every tunnel (rhc_wake_add): this cannot fail */
    rhc_heap_set(&t->ctx->timers, &t->wake.timer, t_deadline(t));
    watch_local(t);
}

void rhc_wake_timers(rhc_ctx *c, int64_t now)
{
    struct rhc_heap_node *x;

    while ((x = rhc_heap_top(&c->timers)) && x->at <= now) {
        rhc_heap_remove(&c->timers, x);
        t_touch(TUNNEL_OF(x));
    }
    for (size_t i = 0; i < c->ndue; ++i)
        if (c->due[i])
            t_timers(c->due[i], now);
}

void rhc_wake_advance(rhc_ctx *c, int64_t now)
{
    size_t end = c->ndue, i, n = 0;

    for (i = 0; i < end; ++i) {
        rhc_tunnel *t = c->due[i];
        if (!t)
            continue;
        c->due[i] = NULL;
        t->wake.due = 0;
        if (t_advance(t, now))
            settle(t);
    }
    /* touched again after their look: the next round looks at once */
    for (i = end; i < c->ndue; ++i)
        if (c->due[i]) {
            c->due[n] = c->due[i];
            c->due[n]->wake.due = n + 1;
            ++n;
        }
    c->ndue = n;
}

/* The next deadline of any tunnel (-1: none; 0 with tunnels waiting for a look). */
int64_t rhc_wake_next(const rhc_ctx *c)
{
    return c->ndue ? 0 : rhc_heap_next(&c->timers);
}
