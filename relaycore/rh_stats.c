/* The relay's counters in shared memory (see rh_stats.h). */
#include <string.h>

#include "rh_stats.h"

const char *const rh_stats_xp_names[RH_XP_N] = {
    "pushStream", "pushBatch", "pullStream", "pullBatch", "duplex"
};
const char *const rh_stats_refuse_names[RH_REFUSE_N] = {
    "busy", "clientShare", "unknownTarget", "unknownSession", "otherUser", "badRequest",
    "targetDown", "destination"
};

#define OTHER_TARGET "(other)"

void rh_stats_init(rh_stats *st, int64_t now_unix)
{
    memset(st, 0, sizeof(*st));
    st->started = now_unix;
    st->hist_sec = -1;
}

void rh_stats_tick(rh_stats *st, int64_t now_sec, uint64_t up, uint64_t down)
{
    uint64_t total = up + down;
    if (st->hist_sec >= 0 && now_sec < st->hist_sec)
        return;   /* the clock does not go back; a second beat in one second is fine */
    /* seconds without a beat moved nothing we can place: the total carries
     * over them (a gap longer than the history fills all of it) */
    int64_t from = st->hist_sec < 0 ? now_sec : st->hist_sec + 1;
    if (now_sec - from > RH_STATS_HIST)
        from = now_sec - RH_STATS_HIST;
    uint64_t last = st->hist_sec >= 0 ? st->hist[st->hist_sec % RH_STATS_HIST] : total;
    for (int64_t s = from; s < now_sec; ++s)
        st->hist[s % RH_STATS_HIST] = last;
    st->hist[now_sec % RH_STATS_HIST] = total;
    __atomic_store_n(&st->bytes_up, up, __ATOMIC_RELAXED);
    __atomic_store_n(&st->bytes_down, down, __ATOMIC_RELAXED);
    __atomic_store_n(&st->hist_sec, now_sec, __ATOMIC_RELEASE);
}

static rh_target_stats *target_of(rh_stats *st, const char *name)
{
    for (uint32_t i = 0; i < st->ntargets; ++i)
        if (!strcmp(st->targets[i].name, name))
            return &st->targets[i];
    /* a full table pools the rest in its last entry */
    uint32_t i = st->ntargets < RH_STATS_TARGETS ? st->ntargets : RH_STATS_TARGETS - 1;
    rh_target_stats *t = &st->targets[i];
    if (st->ntargets < RH_STATS_TARGETS) {
        memset(t, 0, sizeof(*t));
        strncpy(t->name, st->ntargets == RH_STATS_TARGETS - 1 ? OTHER_TARGET : name,
                sizeof(t->name) - 1);
        __atomic_store_n(&st->ntargets, st->ntargets + 1, __ATOMIC_RELEASE);
    }
    return t;
}

void rh_stats_target_opened(rh_stats *st, const char *name)
{
    __atomic_add_fetch(&target_of(st, name)->opened, 1, __ATOMIC_RELAXED);
}

void rh_stats_target_unopened(rh_stats *st, const char *name)
{
    __atomic_sub_fetch(&target_of(st, name)->opened, 1, __ATOMIC_RELAXED);
}

void rh_stats_target_closed(rh_stats *st, const char *name, uint64_t up, uint64_t down)
{
    rh_target_stats *t = target_of(st, name);
    __atomic_add_fetch(&t->closed, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&t->up, up, __ATOMIC_RELAXED);
    __atomic_add_fetch(&t->down, down, __ATOMIC_RELAXED);
}

static uint64_t ld(const uint64_t *v)
{
    return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static void add_targets(rh_stats *sum, const rh_stats *st)
{
    uint32_t n = __atomic_load_n(&st->ntargets, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; ++i) {
        rh_target_stats *t = target_of(sum, st->targets[i].name);
        t->opened += ld(&st->targets[i].opened);
        t->closed += ld(&st->targets[i].closed);
        t->up += ld(&st->targets[i].up);
        t->down += ld(&st->targets[i].down);
    }
}

void rh_stats_add(rh_stats *sum, const rh_stats *st)
{
    int64_t sec = __atomic_load_n(&st->hist_sec, __ATOMIC_ACQUIRE);
    if (st->started < sum->started)
        sum->started = st->started;
    sum->bytes_up += ld(&st->bytes_up);
    sum->bytes_down += ld(&st->bytes_down);
    sum->held += __atomic_load_n(&st->held, __ATOMIC_RELAXED);
    sum->integrity += ld(&st->integrity);
    sum->resumed += ld(&st->resumed);
    sum->throttled += ld(&st->throttled);
    sum->udp_sessions += ld(&st->udp_sessions);
    for (int i = 0; i < 4; ++i)
        sum->udp[i] += ld(&st->udp[i]);
    for (int i = 0; i < RH_XP_N; ++i)
        sum->requests[i] += ld(&st->requests[i]);
    for (int i = 0; i < RH_REFUSE_N; ++i)
        sum->refused[i] += ld(&st->refused[i]);
    add_targets(sum, st);
    if (sec < 0)
        return;     /* never beat: no history to add */
    /* the cores beat at their own moments: the sum goes as far as the later
     * of them has written (a second ahead shows in the oldest entry only) */
    if (sum->hist_sec < 0 || sec < sum->hist_sec)
        sum->hist_sec = sec;
    for (int i = 0; i < RH_STATS_HIST; ++i)
        sum->hist[i] += ld(&st->hist[i]);
}

void rh_stats_watch_add(rh_watch_stats *sum, const rh_watch_stats *w)
{
    sum->sessions += ld(&w->sessions);
    sum->waiting += ld(&w->waiting);
    for (int i = 0; i < RH_WATCH_ANS_N; ++i)
        sum->answered[i] += ld(&w->answered[i]);
}

void rh_stats_watch_now(rh_watch_stats *w, uint64_t sessions, uint64_t waiting)
{
    __atomic_store_n(&w->sessions, sessions, __ATOMIC_RELAXED);
    __atomic_store_n(&w->waiting, waiting, __ATOMIC_RELAXED);
}

void rh_stats_watch_answered(rh_watch_stats *w, int cls)
{
    if (cls >= 0 && cls < RH_WATCH_ANS_N)
        __atomic_add_fetch(&w->answered[cls], 1, __ATOMIC_RELAXED);
}

void rh_stats_request(rh_stats *st, int xp)
{
    if (xp >= 0 && xp < RH_XP_N)
        __atomic_add_fetch(&st->requests[xp], 1, __ATOMIC_RELAXED);
}

void rh_stats_udp(rh_stats *st, uint64_t opened, const uint64_t n[4])
{
    __atomic_store_n(&st->udp_sessions, opened, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; ++i)
        __atomic_store_n(&st->udp[i], n[i], __ATOMIC_RELAXED);
}

void rh_stats_resumed(rh_stats *st)
{
    __atomic_add_fetch(&st->resumed, 1, __ATOMIC_RELAXED);
}

void rh_stats_throttled(rh_stats *st)
{
    __atomic_add_fetch(&st->throttled, 1, __ATOMIC_RELAXED);
}

void rh_stats_refused(rh_stats *st, int why)
{
    if (why >= 0 && why < RH_REFUSE_N)
        __atomic_add_fetch(&st->refused[why], 1, __ATOMIC_RELAXED);
}

int rh_stats_refusal_of(int status)
{
    switch (status) {
    case RH_STATUS_BUSY:        return RH_REFUSE_BUSY;
    case RH_STATUS_CLIENT_BUSY: return RH_REFUSE_CLIENT;
    case 404:                   return RH_REFUSE_TARGET;
    case RH_STATUS_GONE:        return RH_REFUSE_GONE;
    case 403:                   return RH_REFUSE_OTHER_USER;
    case 400: case 405: case 408: case 413: return RH_REFUSE_BAD;
    case 502: case 504:         return RH_REFUSE_TARGET_DOWN;
    default:                    return -1;
    }
}

/* Bytes per second between two seconds of the history (end the later). */
static double rate_between(const rh_stats *st, int64_t start, int64_t end)
{
    /* seconds before the clock's start (a machine up for less than the
     * window) have no entry: reading one would read outside the history */
    if (end <= 0)
        return 0;
    uint64_t a = __atomic_load_n(&st->hist[(start < 0 ? 0 : start) % RH_STATS_HIST],
                                 __ATOMIC_RELAXED);
    uint64_t b = __atomic_load_n(&st->hist[end % RH_STATS_HIST], __ATOMIC_RELAXED);
    return b >= a ? (double)(b - a) / (double)(end - start) : 0;
}

double rh_stats_rate(const rh_stats *st, int window)
{
    int64_t now = __atomic_load_n(&st->hist_sec, __ATOMIC_ACQUIRE);
    if (now < 0 || window <= 0)
        return 0;
    if (window > RH_STATS_HIST - 1)
        window = RH_STATS_HIST - 1;   /* as far back as the history goes */
    return rate_between(st, now - window, now);
}

int rh_stats_series(const rh_stats *st, int step, int n, double *out)
{
    int64_t now = __atomic_load_n(&st->hist_sec, __ATOMIC_ACQUIRE);
    if (now < 0 || step <= 0 || n <= 0 || (int64_t)step * n > RH_STATS_HIST - 1)
        return 0;
    for (int i = 0; i < n; ++i) {
        int64_t end = now - (int64_t)step * (n - 1 - i);
        out[i] = rate_between(st, end - step, end);
    }
    return n;
}
