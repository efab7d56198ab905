/* The relay core's timers: a binary min-heap of deadlines, one entry embedded
 * in each session (intrusive: no allocation once the heap exists). Separate
 * from the sessions so the heap knows nothing but deadlines and positions. */
#ifndef RH_CORE_TIMER_H
#define RH_CORE_TIMER_H

#include <stddef.h>

typedef struct rh_timer {
    long deadline;      /* the key, in rh_now_ms() milliseconds */
    size_t idx;         /* position in the heap; (size_t)-1 once removed */
} rh_timer;

typedef struct rh_timers {
    rh_timer **heap;
    size_t len;
} rh_timers;

/* Room for cap timers at most; returns 0, or -1 when out of memory. */
int rh_timers_init(rh_timers *t, size_t cap);
void rh_timers_free(rh_timers *t);
void rh_timers_push(rh_timers *t, rh_timer *e);
/* Takes e out of the heap; a timer not in it is left alone. */
void rh_timers_remove(rh_timers *t, rh_timer *e);
/* Restores the order after e->deadline changed (either way). */
void rh_timers_fix(rh_timers *t, rh_timer *e);

/* The earliest timer, or NULL when there is none. */
static inline rh_timer *rh_timers_min(const rh_timers *t)
{
    return t->len ? t->heap[0] : NULL;
}

#endif
