/* RelayResumeMemory: the bytes resume windows hold, bounded for the core and
 * for each client. A resumable session keeps the down bytes it sent until the
 * client acknowledges them; a client that reads and never acknowledges would
 * make every session hold a whole window. Only what a down ring holds beyond
 * its read-ahead (cap - window: what an unresumable session may hold too)
 * counts. A session that may not grow its ring waits, without an event armed,
 * on the core's list; memory freed (an ack, a session's end, a raised bound)
 * wakes the waiters that have room then. */
#include <inttypes.h>

#include "rh_core_int.h"

/* What a woken session is reckoned to take of the core's room: a read-ahead's
 * worth (RH_DEFAULT_BUFSIZE), what one pump round reads from a target. */
#define MEM_WAKE_QUANTUM RH_DEFAULT_BUFSIZE

static size_t ring_base(const session *s)
{
    return s->down.cap - s->window;
}

static uint64_t room_below(uint64_t held, uint64_t bound)
{
    return !bound ? UINT64_MAX : held < bound ? bound - held : 0;
}

/* The waiters in the order they came (a wake goes to the longest waiting first). */
static void wait_add(core *c, session *s)
{
    if (!c->mem_waiters)   /* the first to wait says why; the status counts the rest */
        rh_core_log(c, RH_LOG_DEBUG, "session %s waits for room: resume windows hold %"
                    PRIu64 " of %" PRIu64 ", its client's %" PRIu64 " of %" PRIu64
                    " (RelayResumeMemory; 0: no bound)", s->sid, c->mem_held, c->mem_bound,
                    s->cl ? s->cl->resume_held : 0, c->mem_client_bound);
    s->mem_wait = 1;
    s->mem_next = NULL;
    s->mem_prev = c->mem_waiters_tail;
    if (s->mem_prev)
        s->mem_prev->mem_next = s;
    else
        c->mem_waiters = s;
    c->mem_waiters_tail = s;
    ++c->mem_waits;
}

static void wait_del(core *c, session *s)
{
    if (s->mem_prev)
        s->mem_prev->mem_next = s->mem_next;
    else
        c->mem_waiters = s->mem_next;
    if (s->mem_next)
        s->mem_next->mem_prev = s->mem_prev;
    else
        c->mem_waiters_tail = s->mem_prev;
    s->mem_next = s->mem_prev = NULL;
    s->mem_wait = 0;
}

/* What s may still count: the core's room, within its client's. */
static uint64_t room_for(const core *c, const session *s)
{
    uint64_t room = room_below(c->mem_held, c->mem_bound);
    uint64_t cr = s->cl ? room_below(s->cl->resume_held, c->mem_client_bound) : UINT64_MAX;
    return cr < room ? cr : room;
}

size_t rh_core_mem_allow(core *c, session *s, size_t want)
{
    size_t len = rh_ring_len(&s->down), base = ring_base(s);
    size_t free_below = base > len ? base - len : 0;
    if (want <= free_below || !s->window)
        return want;
    uint64_t room = room_for(c, s);
    size_t extra = want - free_below;
    if (extra > room)
        extra = (size_t)room;
    if (!free_below && !extra && !s->mem_wait)
        wait_add(c, s);   /* none at all: down_wants_read says no meanwhile */
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
    if (s->mem_wait)
        wait_del(c, s);
}

/* Once per loop turn: the bounds in force, the figures out, and, when memory
 * was freed, the waiters that have room now woken, oldest first (each pumps
 * next). One whose client is at its half stays on the list: a client holding
 * many sessions at its bound costs the others' acks a pass over the list, not
 * a pump each. Each wake is reckoned to take MEM_WAKE_QUANTUM of the core's
 * room; when that is used up the rest wait for the next turn, so a full core
 * with thousands waiting pumps about as many as can move, not all of them. */
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
    uint64_t budget = room_below(c->mem_held, c->mem_bound);
    session *s = c->mem_waiters;
    int woke = 0;
    while (s && budget) {
        session *next = s->mem_next;
        if (s->dead || room_for(c, s)) {
            wait_del(c, s);
            if (!s->dead) {   /* ended, not yet freed: nothing to pump */
                s->t_rd = 1;  /* no EPOLLIN was armed while it waited */
                rh_core_session_again_add(c, s);
                if (s->peer && !s->peer->dead)
                    rh_core_session_again_add(c, s->peer);   /* its pump fills this ring */
                budget -= budget < MEM_WAKE_QUANTUM ? budget : MEM_WAKE_QUANTUM;
                woke = 1;
            }
        }
        s = next;
    }
    if (s && woke)
        c->mem_freed = 1;   /* the budget ran out: the rest next turn, if room is left */
}
