/* RelayResumeMemory: the bytes resume windows hold, bounded for the core and
 * for each client. A resumable session keeps the down bytes it sent until the
 * client acknowledges them; a client that reads and never acknowledges would
 * make every session hold a whole window. Only what a down ring holds beyond
 * its read-ahead (cap - window: what an unresumable session may hold too)
 * counts. A session that may not grow its ring waits, without an event armed,
 * on the core's list; memory freed (an ack, a session's end, a raised bound)
 * wakes the waiters that have room then. */
#include "rh_core_int.h"

static size_t ring_base(const session *s)
{
    return s->down.cap - s->window;
}

static uint64_t room_below(uint64_t held, uint64_t bound)
{
    return !bound ? UINT64_MAX : held < bound ? bound - held : 0;
}

size_t rh_core_mem_allow(core *c, session *s, size_t want)
{
    size_t len = rh_ring_len(&s->down), base = ring_base(s);
    size_t free_below = base > len ? base - len : 0;
    if (want <= free_below || !s->window)
        return want;
    uint64_t room = room_below(c->mem_held, c->mem_bound);
    if (s->cl) {
        uint64_t cr = room_below(s->cl->resume_held, c->mem_client_bound);
        room = cr < room ? cr : room;
    }
    size_t extra = want - free_below;
    if (extra > room)
        extra = (size_t)room;
    if (!free_below && !extra && !s->mem_wait) {
        /* none at all: wait on the list (down_wants_read says no meanwhile) */
        s->mem_wait = 1;
        s->mem_next = c->mem_waiters;
        c->mem_waiters = s;
        ++c->mem_waits;
    }
    return free_below + extra;
}

static void account(core *c, session *s, size_t now_held)
{
    if (now_held == s->mem)
        return;
    if (now_held < s->mem) {
        size_t d = s->mem - now_held;
        c->mem_held -= d;
        if (s->cl)
            s->cl->resume_held -= d;
        c->mem_freed = 1;
    } else {
        size_t d = now_held - s->mem;
        c->mem_held += d;
        if (s->cl)
            s->cl->resume_held += d;
    }
    s->mem = now_held;
}

void rh_core_mem_sync(core *c, session *s)
{
    size_t len = rh_ring_len(&s->down), base = ring_base(s);
    account(c, s, s->window && len > base ? len - base : 0);
}

void rh_core_mem_forget(core *c, session *s)
{
    account(c, s, 0);
    if (!s->mem_wait)
        return;
    for (session **p = &c->mem_waiters; *p; p = &(*p)->mem_next)
        if (*p == s) {
            *p = s->mem_next;
            break;
        }
    s->mem_wait = 0;
}

/* s may grow now: the core has room, and so has its client. */
static int has_room(const core *c, const session *s)
{
    return room_below(c->mem_held, c->mem_bound)
           && (!s->cl || room_below(s->cl->resume_held, c->mem_client_bound));
}

/* Once per loop turn: the bounds in force, the figures out, and, when memory
 * was freed, the waiters that have room now woken (each pumps next). One whose
 * client is at its half stays on the list: a client holding many sessions at
 * its bound costs the others' acks a pass over the list, not a pump each. */
void rh_core_mem_turn(core *c)
{
    rh_registry_ext *x = c->cfg->ext;
    if (rh_registry_ext_has_resume(x)) {
        uint64_t b = __atomic_load_n(&x->resume_bound, __ATOMIC_RELAXED);
        uint64_t cb = __atomic_load_n(&x->resume_client_bound, __ATOMIC_RELAXED);
        if (b != c->mem_bound || cb != c->mem_client_bound)
            c->mem_freed = 1;   /* a graceful restart changed them */
        c->mem_bound = b;
        c->mem_client_bound = cb;
        rh_registry_resume_now(x, c->mem_held, c->mem_waits);
    }
    if (!c->mem_freed)
        return;
    c->mem_freed = 0;
    session **p = &c->mem_waiters;
    while (*p && room_below(c->mem_held, c->mem_bound)) {
        session *s = *p;
        if (!s->dead && !has_room(c, s)) {
            p = &s->mem_next;
            continue;
        }
        *p = s->mem_next;
        s->mem_wait = 0;
        s->mem_next = NULL;
        if (s->dead)
            continue;   /* ended, not yet freed: nothing to pump */
        s->t_rd = 1;   /* no EPOLLIN was armed while it waited */
        rh_core_session_again_add(c, s);
        if (s->peer && !s->peer->dead)
            rh_core_session_again_add(c, s->peer);   /* its pump fills this ring */
    }
}
