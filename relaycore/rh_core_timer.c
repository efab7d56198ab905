/* The min-heap of deadlines behind the relay core's timers (rh_core_timer.h):
 * the loop sleeps until the earliest one, and a session's deadline moves as
 * its state does, so every operation is O(log n). */
#include <stdlib.h>
#include "rh_core_timer.h"

int rh_timers_init(rh_timers *t, size_t cap)
{
    t->len = 0;
    t->heap = calloc(cap, sizeof(*t->heap));
    return t->heap ? 0 : -1;
}

void rh_timers_free(rh_timers *t)
{
    free(t->heap);
    t->heap = NULL;
    t->len = 0;
}

static void heap_swap(rh_timers *t, size_t a, size_t b)
{
    rh_timer *x = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->idx = a;
    t->heap[b]->idx = b;
}

static void heap_fix(rh_timers *t, size_t i)
{
    while (i > 0 && t->heap[(i - 1) / 2]->deadline > t->heap[i]->deadline) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->len && t->heap[l]->deadline < t->heap[m]->deadline)
            m = l;
        if (r < t->len && t->heap[r]->deadline < t->heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(t, i, m);
        i = m;
    }
}

void rh_timers_fix(rh_timers *t, rh_timer *e)
{
    heap_fix(t, e->idx);
}

void rh_timers_push(rh_timers *t, rh_timer *e)
{
    e->idx = t->len;
    t->heap[t->len++] = e;
    heap_fix(t, e->idx);
}

void rh_timers_remove(rh_timers *t, rh_timer *e)
{
    size_t i = e->idx;
    if (i >= t->len || t->heap[i] != e)
        return;
    t->len--;
    if (i != t->len) {
        t->heap[i] = t->heap[t->len];
        t->heap[i]->idx = i;
        heap_fix(t, i);
    }
    e->idx = (size_t)-1;
}
