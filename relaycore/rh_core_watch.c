/* WATCH (rh_core_watch.h): a long-poll that stands for many idle sessions. A
 * watch reads its entry lines, looks each session up (a token the core does
 * not have, of another target or another user, is "gone"), and answers at
 * once when one is ready; else it is registered on its sessions, and a
 * session's pump or end wakes it. Its memory is bounded by the count the
 * request line announced (at most RH_WATCH_MAX). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "rh_core_watch.h"
#include "rh_util.h"

#define WATCH_READ_MS 5000   /* the lines follow the request line at once */
#define ANSWER_LINE   (RH_SID_LEN + 1 + 4 + 1)   /* "<sid> data\n" */

enum { W_WAIT = 0, W_DATA, W_GONE };

typedef struct watch_entry {
    session *s;              /* registered here; NULL: gone, or taken by a newer watch */
    uint64_t ack;            /* down bytes the client has */
    int state;               /* W_* */
    char sid[RH_SID_LEN + 1];
} watch_entry;

struct rh_core_watch {
    conn *k;
    rh_core_watch *prev, *next;   /* in c->watches */
    char target[RH_TARGET_MAX];
    uint64_t owner;          /* the user's hash; 0: no authentication */
    unsigned poll_s;
    unsigned want;           /* entry lines announced */
    unsigned live;           /* sessions registered here */
    int waiting;             /* registered: the answer is to come */
    long due;                /* reading: dropped then; waiting: answered empty then */
    uint32_t serial;
    unsigned char *in;       /* the entry lines, want * RH_WATCH_LINE_MAX at most */
    size_t in_len, in_cap;
    watch_entry *e;          /* want of them */
};

static void due_note(core *c, long due)
{
    if (!c->watch_due || due < c->watch_due)
        c->watch_due = due;
}

/* The session is no longer watched: its idle clock starts again now. */
static void session_release(core *c, session *s, long now)
{
    s->watch = NULL;
    --c->watch_sessions;
    if (s->dead)
        return;
    s->last_heard = now;
    long d = rh_core_session_next_deadline(s);
    if (d < s->timer.deadline) {
        s->timer.deadline = d;
        rh_timers_fix(&c->timers, &s->timer);
    }
}

/* Unregisters the watch from its sessions and the core and frees it; its
 * connection stays (k->watch cleared). */
static void watch_free(core *c, rh_core_watch *w)
{
    long now = rh_now_ms();
    for (unsigned i = 0; i < w->want; ++i)
        if (w->e[i].s && w->e[i].s->watch == w)
            session_release(c, w->e[i].s, now);
    if (w->waiting)
        --c->watch_waiting;
    if (w->prev)
        w->prev->next = w->next;
    else
        c->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (w->k)
        w->k->watch = NULL;
    free(w->in);
    free(w->e);
    free(w);
}

/* The status page's class of an answer (RH_WATCH_ANS_*): a ready session
 * outweighs a gone one, and no line is empty. */
static int answer_class(const rh_core_watch *w)
{
    int cls = RH_WATCH_ANS_EMPTY;
    for (unsigned i = 0; i < w->want; ++i)
        if (w->e[i].state == W_DATA)
            return RH_WATCH_ANS_DATA;
        else if (w->e[i].state == W_GONE)
            cls = RH_WATCH_ANS_GONE;
    return cls;
}

/* The answer: the ready and gone sessions by id, then the connection ends. */
static void watch_answer(core *c, rh_core_watch *w)
{
    conn *k = w->k;
    unsigned n = 0;
    for (unsigned i = 0; i < w->want; ++i)
        n += w->e[i].state != W_WAIT;
    char *body = malloc(n ? (size_t)n * ANSWER_LINE + 1 : 1);
    size_t len = 0;
    for (unsigned i = 0; body && i < w->want; ++i)
        if (w->e[i].state != W_WAIT)
            len += (size_t)sprintf(body + len, "%s %s\n", w->e[i].sid,
                                   w->e[i].state == W_DATA ? RH_WATCH_DATA : RH_WATCH_GONE);
    rh_core_log(c, RH_LOG_DEBUG, "watch of %u sessions answered: %u ready", w->want, n);
    if (c->cfg->ext)
        rh_stats_watch_answered(&c->cfg->ext->watch, answer_class(w));
    watch_free(c, w);
    if (!body) {
        rh_core_conn_error(c, k, 503, "out of memory for a watch's answer");
        return;
    }
    rh_core_out_printf(k, "OK %zu", len);
    k->big = (unsigned char *)body;
    k->big_len = len;
    k->big_off = 0;
    rh_core_conn_reply_done(c, k);
}

/* A refusal of the whole watch: nothing of it was registered. */
static void watch_refuse(core *c, rh_core_watch *w, int status, const char *why, unsigned line)
{
    conn *k = w->k;
    for (unsigned i = 0; i < w->want; ++i)
        w->e[i].s = NULL;
    watch_free(c, w);
    rh_core_conn_error(c, k, status, "%s (watch line %u)", why, line + 1);
}

/* Down bytes beyond what the client has, or the target's end or reset. */
static int session_ready(const session *s, uint64_t ack)
{
    return ack != s->down_rd || s->down_eof || s->down_reset || s->dead;
}

/* The session of a token, alive, of the watch's target and user; or NULL
 * (the client hears "gone"). The secret is compared in constant time. */
static session *watch_find(core *c, const rh_core_watch *w, uint32_t slot, uint32_t gen,
                           const unsigned char *secret)
{
    uint32_t local;
    if (rh_registry_local_slot(c->cfg->reg, slot, &local) != 0)
        return NULL;   /* another core's */
    session *s = c->by_slot[local];
    if (!s || s->gen != gen || !rh_ct_equal(s->secret, secret, RH_SECRET_LEN) || s->dead
        || strcmp(s->target, w->target) != 0)
        return NULL;
    rh_slot_view v;
    if (rh_registry_view(c->cfg->reg, local, &v) == 0 && v.owner && v.owner != w->owner)
        return NULL;   /* another user's: as unknown as a bad secret */
    return s;
}

/* One entry line "<token> <ack>" (without its LF): 0, or -1 when malformed. */
static int entry_parse(core *c, rh_core_watch *w, watch_entry *e, const char *line,
                       size_t len)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1];
    if (len < RH_TOKEN_LEN + 2 || line[RH_TOKEN_LEN] != ' '
        || rh_parse_u64(line + RH_TOKEN_LEN + 1, len - RH_TOKEN_LEN - 1, &e->ack) != 0)
        return -1;
    memcpy(tok, line, RH_TOKEN_LEN);
    tok[RH_TOKEN_LEN] = '\0';
    if (rh_token_parse(tok, &slot, &gen, secret) != 0)
        return -1;
    memcpy(e->sid, tok, RH_SID_LEN);
    e->sid[RH_SID_LEN] = '\0';
    e->s = watch_find(c, w, slot, gen, secret);
    memset(secret, 0, sizeof(secret));
    e->state = !e->s ? W_GONE : session_ready(e->s, e->ack) ? W_DATA : W_WAIT;
    return 0;
}

/* A session joins this watch; an older watch that held it lets it go and,
 * left with none, answers at once (empty). */
static void watch_take(core *c, rh_core_watch *w, unsigned i)
{
    session *s = w->e[i].s;
    rh_core_watch *old = s->watch;
    if (old) {
        old->e[s->watch_i].s = NULL;
        --old->live;
        s->watch = NULL;
        --c->watch_sessions;
        if (!old->live)
            watch_answer(c, old);
    }
    s->watch = w;
    s->watch_i = i;
    ++w->live;
    ++c->watch_sessions;
}

/* When an unanswered watch answers empty: poll_s, or a second while a listed
 * session is busy (as batch_due: data moved in the last RH_BUSY_WINDOW_MS). */
static long watch_due(const rh_core_watch *w, long now)
{
    long poll = 1000L * w->poll_s;
    for (unsigned i = 0; i < w->want && poll > RH_BUSY_POLL_MS; ++i) {
        const session *s = w->e[i].s;
        if (s && s->last_data && now - s->last_data < RH_BUSY_WINDOW_MS)
            poll = RH_BUSY_POLL_MS;
    }
    return now + poll;
}

/* All lines are in: each is checked; then the watch answers at once or waits. */
static void watch_start(core *c, rh_core_watch *w)
{
    const char *p = (const char *)w->in, *end = p + w->in_len;
    int ready = 0;
    rh_client *cl = NULL;
    for (unsigned i = 0; i < w->want; ++i) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        watch_entry *e = &w->e[i];
        if (entry_parse(c, w, e, p, (size_t)(nl - p)) != 0) {
            watch_refuse(c, w, 400, "malformed watch line", i);
            return;
        }
        p = nl + 1;
        if (e->s && e->s->watch_mark == w->serial) {
            watch_refuse(c, w, 400, "a session listed twice", i);
            return;
        }
        if (e->s) {
            e->s->watch_mark = w->serial;
            cl = cl ? cl : e->s->cl;
        }
        ready |= e->state != W_WAIT;
    }
    free(w->in);   /* parsed: a waiting watch keeps its entries only */
    w->in = NULL;
    /* a watch that waits holds an httpd worker, as a long-poll does */
    if (!ready && rh_core_conn_hold(c, w->k, cl) != 0) {
        for (unsigned i = 0; i < w->want; ++i)
            w->e[i].s = NULL;
        watch_free(c, w);   /* answered 503 / 429 */
        return;
    }
    for (unsigned i = 0; i < w->want; ++i)
        if (w->e[i].s)
            watch_take(c, w, i);
    if (ready) {
        watch_answer(c, w);
        return;
    }
    w->waiting = 1;
    ++c->watch_waiting;
    w->due = watch_due(w, rh_now_ms());
    due_note(c, w->due);
    /* nothing more comes from the handler: an event is its hang-up */
    rh_core_arm(c, w->k->fd, w->k, &w->k->ev, EPOLLIN);
}

/* The lines that came so far: all in (then the watch starts), more to come
 * (0), or too long (refused). */
static void watch_lines(core *c, rh_core_watch *w)
{
    unsigned n = 0;
    size_t last = 0;
    for (size_t i = 0; i < w->in_len && n < w->want; ++i)
        if (w->in[i] == '\n') {
            ++n;
            last = i + 1;
        }
    if (n == w->want && last == w->in_len) {
        watch_start(c, w);
        return;
    }
    if (n == w->want || w->in_len == w->in_cap) {
        watch_refuse(c, w, 400, n == w->want ? "more than the lines announced"
                     : "watch line too long", n);
        return;
    }
    rh_core_arm(c, w->k->fd, w->k, &w->k->ev, EPOLLIN);
}

void rh_core_watch_req(core *c, conn *k, const rh_ipc_req *rq, const unsigned char *rest,
                       size_t rest_len)
{
    rh_core_watch *w = calloc(1, sizeof(*w));
    size_t cap = (size_t)rq->count * RH_WATCH_LINE_MAX;
    if (w) {
        w->e = calloc(rq->count, sizeof(*w->e));
        w->in = malloc(cap);
    }
    if (!w || !w->e || !w->in) {
        if (w) {
            free(w->e);
            free(w->in);
        }
        free(w);
        rh_core_conn_error(c, k, 503, "out of memory for a watch");
        return;
    }
    w->k = k;
    k->kind = CK_WATCH;
    k->watch = w;
    snprintf(w->target, sizeof(w->target), "%s", rq->target);
    w->owner = rq->owner;
    w->poll_s = rq->poll_s;
    w->want = rq->count;
    w->in_cap = cap;
    w->serial = ++c->watch_serial ? c->watch_serial : ++c->watch_serial;
    w->next = c->watches;
    if (w->next)
        w->next->prev = w;
    c->watches = w;
    w->due = rh_now_ms() + WATCH_READ_MS;
    due_note(c, w->due);
    if (rest_len > cap) {
        watch_refuse(c, w, 400, "more than the lines announced", 0);
        return;
    }
    memcpy(w->in, rest, rest_len);
    w->in_len = rest_len;
    watch_lines(c, w);
}

void rh_core_watch_event(core *c, conn *k, uint32_t events)
{
    rh_core_watch *w = k->watch;
    (void)events;
    if (w && !w->waiting) {
        ssize_t n = recv(k->fd, w->in + w->in_len, w->in_cap - w->in_len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n > 0) {
            w->in_len += (size_t)n;
            watch_lines(c, w);
            return;
        }
    }
    /* the handler hung up (or sent what it must not): the watch ends unanswered */
    if (w)
        watch_free(c, w);
    rh_core_conn_kill(c, k);
}

void rh_core_watch_check(core *c, session *s)
{
    rh_core_watch *w = s->watch;
    if (!w)
        return;
    watch_entry *e = &w->e[s->watch_i];
    if (!session_ready(s, e->ack))
        return;
    e->state = W_DATA;
    watch_answer(c, w);
}

void rh_core_watch_timers(core *c, long now)
{
    if (!c->watch_due || now < c->watch_due)
        return;
    c->watch_due = 0;
    rh_core_watch *next;
    for (rh_core_watch *w = c->watches; w; w = next) {
        next = w->next;
        if (now < w->due) {
            due_note(c, w->due);
        } else if (w->waiting) {
            watch_answer(c, w);   /* nothing came: empty */
        } else {
            conn *k = w->k;
            watch_free(c, w);     /* its lines never came whole */
            rh_core_conn_error(c, k, 408, "the watch's lines did not come in time");
        }
    }
}

void rh_core_watch_stop(core *c)
{
    while (c->watches) {
        conn *k = c->watches->k;
        watch_free(c, c->watches);
        rh_core_conn_kill(c, k);
    }
}
