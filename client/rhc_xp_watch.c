/* relay-https client: the watch of a route's idle tunnels (docs/PROTOCOL.md,
 * watch). A batch tunnel whose long-poll came back empty after the whole poll
 * time, with nothing sent up meanwhile, stops polling and joins a watch group
 * of its route (rhc_watch.c: the set and its clock); each group has at most
 * one watch in flight, which lists every member with its ack. A group whose
 * set grew sends a new watch (the server then answers the old one empty) at
 * most once per RH_WATCH_JOIN_MS. A tunnel leaves when the watch names it
 * (data or gone: it pulls, as before) or when its local side has bytes (it
 * pushes and polls again). A watch that fails goes again, or its tunnels go
 * back to long-polls; a server without the endpoint (404, 405) ends the
 * route's watching. No wake is lost: the server looks at each session's ack
 * when a watch registers it, so a session that became ready while no watch
 * covered it answers the next one at once. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_log.h"
#include "rhc_tunnel_int.h"
#include "rhc_watch.h"

static void wlog(const struct rhc_route *route, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void wlog(const struct rhc_route *route, int level, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (level > rhc_verbose)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    rhc_log(level, "%s%swatch: %s", route->name, route->name[0] ? ": " : "", line);
}

int rhc_watch_init(struct rhc_route *route)
{
    if (route->o->no_watch)
        return 0;
    route->watch = calloc(1, sizeof(*route->watch));
    return route->watch ? 0 : -1;
}

/* The tunnel's ended long-poll r came back empty after the whole poll time
 * with nothing sent up meanwhile, and nothing else is going on: it may wait
 * in the watch instead of polling again. */
int watch_may_join(const rhc_tunnel *t, const struct rhc_req *r, int64_t now)
{
    const struct rhc_watch *w = t->route->watch;
    int64_t poll = t->sess.poll_ms, waited = now - r->started;
    int64_t whole = poll - 2000 > poll * 3 / 4 ? poll - 2000 : poll * 3 / 4;

    return w && !w->off && r->batch && r->saw_end && !r->saw_fin && !r->rx_data &&
           poll > 0 && waited >= whole && t->xp.down == RHC_XP_BATCH &&
           !t->sess.serve_leg && !t->end.code && !t->down.fin && !t->up.eof &&
           !t->rq.nbpush && !t->rq.spush && !t->rq.duplex && !t->ack.n && !t->ack.verify &&
           up_read_off(t) == t->watch.up_mark && t->up.acked == t->up.sent &&
           t->up.sent == up_read_off(t) && !t->local.olen;
}

static struct rhc_wslot *slot_with_room(struct rhc_watch *w, struct rhc_route *route)
{
    for (int i = 0; i < w->nslot; ++i)
        if (w->slot[i]->g.n < RH_WATCH_MAX)
            return w->slot[i];
    if (w->nslot == WATCH_GROUPS_MAX)
        return NULL;
    struct rhc_wslot *s = calloc(1, sizeof(*s));
    if (s) {
        s->route = route;
        w->slot[w->nslot++] = s;
    }
    return s;
}

/* The tunnel enters a group of its route's watch with the down bytes it has;
 * 0, or -1 (every group full, or no memory: it goes on as it was). */
static int watch_enter(rhc_tunnel *t, const char *what)
{
    struct rhc_wslot *s = slot_with_room(t->route->watch, t->route);
    size_t idx;

    if (!s || rhc_wgroup_join(&s->g, t, &idx) < 0)
        return -1;
    t->watch.slot = s;
    t->watch.idx = idx;
    t->watch.up_mark = up_read_off(t);
    ++t->route->n.watched;
    if (t->sess.poll_ms > s->poll_ms)
        s->poll_ms = t->sess.poll_ms;
    t_log(t, 2, "idle: waits in the watch (no %s) from offset %" PRIu64, what, t->down.off);
    return 0;
}

int watch_join(rhc_tunnel *t, const struct rhc_req *r, int64_t now)
{
    if (!watch_may_join(t, r, now))
        return 0;
    return watch_enter(t, "long-poll") == 0;
}

/* An idle stream or duplex tunnel (issue 17): its down response is open, with
 * a server heartbeat every 20 s on a TLS connection, and its push parked
 * (--idle-push); at 20,000 tunnels the heartbeats alone cost the server more
 * than the watch of all of them. So once both directions have been quiet for
 * --idle-push, every byte confirmed both ways, it gives its down request up
 * and waits in the watch as an idle batch tunnel does; the watch wakes it
 * with a new down request of its own transport. Only resumable sessions: the
 * server keeps what it sent until acknowledged, so a byte it wrote into the
 * given-up response is sent again on the next one (and the watch, which
 * compares the ack it lists with what the server read, names the session at
 * once). The shape, without the clock: */
static int idle_session(const rhc_tunnel *t)
{
    return t->sess.resume && t->sess.poll_ms > 0 && !t->sess.serve_leg && !t->end.code &&
           !t->down.fin && !t->up.eof && !t->push.r_pending && !t->local.olen &&
           !t->xp.switching && !t->xp.up_hold && t->xp.down_seen == t->xp.down &&
           !t->meter.switch_due;   /* (auto's timing may run: a slow window starts again) */
}

/* every byte confirmed both ways, no request of the up side or of acks */
static int idle_settled(const rhc_tunnel *t)
{
    return !t->ack.n && !t->ack.verify && t->ack.conf == t->down.off &&
           t->ack.sent == t->down.off && t->up.acked == t->up.sent &&
           t->up.sent == up_read_off(t) && !t->rq.nbpush && !t->rq.spush &&
           !t->rq.spush_next && !t->rq.spush_prev && !t->push.spush_at;
}

static int idle_shape(const rhc_tunnel *t, const struct rhc_req *dr)
{
    if (!idle_session(t) || !idle_settled(t) || !dr->hdr_done || dr->status != 200 ||
        !dr->got_frame || dr->recv_paused || dr->saw_end || dr->saw_fin)
        return 0;
    if (t->xp.up == RHC_XP_DUPLEX)      /* its body carries up: open, quiet, staying */
        return t->xp.down == RHC_XP_DUPLEX && dr == t->rq.duplex && dr->send_paused &&
               !dr->end_wanted && !dr->body_ended && !dr->split_at && !dr->p_fin && !dr->p_r;
    /* down alone (a stream pull; or a duplex whose upload went to pushes, or to
     * batch, its body ended): a parked push starts again on local bytes */
    if (dr->kind == REQ_DUPLEX && !dr->body_ended)
        return 0;
    return t->xp.up == RHC_XP_STREAM ? t->push.parked : t->xp.up == RHC_XP_BATCH;
}

static int64_t max3(int64_t a, int64_t b, int64_t c)
{
    int64_t m = a > b ? a : b;
    return m > c ? m : c;
}

int64_t watch_idle_at(const rhc_tunnel *t)
{
    const struct rhc_watch *w = t->route->watch;
    const struct rhc_req *dr = down_req(t);
    int64_t quiet = t->route->o->park_ms;

    if (!w || w->off || t->watch.slot || !dr || dr->batch || quiet <= 0 || !idle_shape(t, dr))
        return -1;
    /* quiet since the last byte either way, the response's start, a refused try */
    int64_t since = max3(t->sess.last_busy, t->push.last_data, dr->started);
    return max3(since, t->watch.idle_retry, t->down.last_data) + quiet;
}

void watch_idle(rhc_tunnel *t, int64_t now)
{
    int64_t at = watch_idle_at(t);
    struct rhc_req *dr = down_req(t);

    if (at < 0 || now < at)
        return;
    if (watch_enter(t, dr->kind == REQ_DUPLEX ? "duplex" : "stream pull") < 0) {
        t->watch.idle_retry = now;      /* stays as it is; a try again later */
        return;
    }
    if (dr == t->rq.duplex)
        t->rq.duplex = NULL;
    else
        t->rq.pull = NULL;
    req_free(dr);               /* the server sees the connection (or h2 stream) go */
}

void watch_leave(rhc_tunnel *t)
{
    struct rhc_wslot *s = t->watch.slot;

    if (!s)
        return;
    rhc_tunnel *moved = rhc_wgroup_leave(&s->g, t->watch.idx);
    if (moved)
        moved->watch.idx = t->watch.idx;
    t->watch.slot = NULL;
    --t->route->n.watched;
}

/* The tunnel polls again: named by a watch, its local side sent, or its
 * watch failed. */
static void watch_wake(rhc_tunnel *t, const char *why)
{
    watch_leave(t);
    t_log(t, 2, "leaves the watch (%s): pulls again", why);
    t_touch(t);
    t->down.repull_at = 0;
    t->watch.woke = 1;          /* its pooled connections idled: watch_woke_conn */
    /* the server's idle clock starts again as it lets the watch go: no
     * keep-alive ack of a parked push is due yet (one per woken tunnel) */
    t->push.park_keep_at = rh_now_ms() + alive_every(t);
    start_down(t);
}

/* The first down request after the watch let the tunnel go: the tunnel's
 * pooled connections idled past the server's keep-alive, so it takes only a
 * connection used in the last WATCH_CONN_MAXAGE_S. */
void watch_woke_conn(rhc_tunnel *t, struct rhc_req *r)
{
    if (t->watch.woke)
        curl_easy_setopt(r->h, CURLOPT_MAXAGE_CONN, (long)WATCH_CONN_MAXAGE_S);
    t->watch.woke = 0;
}

void watch_local_sent(rhc_tunnel *t)
{
    if (t->watch.slot && (up_read_off(t) != t->watch.up_mark || t->up.eof || t->end.code))
        watch_wake(t, "local bytes to send");
}

/* Every member of s polls again (its watch failed, or the route stopped watching). */
static void slot_release(struct rhc_wslot *s, const char *why)
{
    while (s->g.n)
        watch_wake(s->g.m[s->g.n - 1].who, why);
}

static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    size_t len = size * nmemb;

    if (r->status != 200)
        return body_cb(ptr, size, nmemb, ud);   /* an error's text */
    if (len > RHC_WATCH_ANSWER_MAX - r->w_len) {
        r->w_over = 1;                          /* no answer is that long */
        return 0;
    }
    if (r->w_len + len > r->w_cap) {
        size_t cap = r->w_cap ? r->w_cap : 1024;
        while (cap < r->w_len + len)
            cap *= 2;
        char *b = realloc(r->w_ans, cap);
        if (!b) {
            r->w_over = 1;
            return 0;
        }
        r->w_ans = b;
        r->w_cap = cap;
    }
    memcpy(r->w_ans + r->w_len, ptr, len);
    r->w_len += len;
    return len;
}

/* The group's watch: every member's token and ack. NULL: out of memory. */
static struct rhc_req *watch_new(rhc_ctx *c, struct rhc_wslot *s)
{
    struct rhc_req *r = req_new(c, s->route, NULL, REQ_WATCH, NULL);
    size_t pos = 0;

    if (!r || !(r->p_body = malloc(s->g.n * RH_WATCH_LINE_MAX + 1)))
        goto fail;
    for (size_t i = 0; i < s->g.n; ++i) {
        const rhc_tunnel *t = s->g.m[i].who;
        int n = snprintf((char *)r->p_body + pos, RH_WATCH_LINE_MAX + 1, "%s %" PRIu64 "\n",
                         t->token, t->down.off);
        if (n < 0 || n > RH_WATCH_LINE_MAX)
            goto fail;
        pos += (size_t)n;
    }
    if (add_header(r, "Content-Type: text/plain") < 0 || add_header(r, "Expect:") < 0)
        goto fail;
    r->w_slot = s;
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)pos);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, (char *)r->p_body);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, watch_write);
    if (s->cuts)                /* the last one was cut: not on a pooled connection */
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(r->h, CURLOPT_MAXAGE_CONN, (long)WATCH_CONN_MAXAGE_S);
    /* unanswered POLL_LATE_MS past the poll time: given up, as a long-poll */
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)(s->poll_ms + POLL_LATE_MS));
    if (req_go(r) < 0)
        goto fail;
    return r;
fail:
    req_free(r);
    return NULL;
}

static void old_forget(struct rhc_wslot *s, struct rhc_req *r)
{
    for (int i = 0; i < s->nold; ++i)
        if (s->old[i] == r) {
            s->old[i] = s->old[--s->nold];
            break;
        }
}

/* The group's watch goes (again): the one in flight becomes old, and the
 * server answers it empty once this one takes its sessions. */
static void slot_send(rhc_ctx *c, struct rhc_wslot *s, int64_t now)
{
    struct rhc_req *r = watch_new(c, s);

    if (!r) {
        slot_release(s, "cannot start a watch (out of memory)");
        return;
    }
    if (req_waiting(s->cur)) {       /* never went out: nothing to supersede */
        req_free(s->cur);
    } else if (s->cur) {
        if (s->nold == WATCH_OLD_MAX) {     /* unanswered for long: cut the oldest */
            req_free(s->old[0]);
            s->old[0] = s->old[--s->nold];
        }
        s->old[s->nold++] = s->cur;
    }
    s->cur = r;
    rhc_wgroup_sent(&s->g, now);
    ++s->route->n.watches;
    wlog(s->route, 2, "%zu idle tunnels in one watch", s->g.n);
}

/* The server answered that it has no watch endpoint: the route's tunnels poll. */
static void route_off(struct rhc_route *route, const char *why)
{
    struct rhc_watch *w = route->watch;

    w->off = 1;
    wlog(route, 1, "%s: idle tunnels wait on their own", why);
    for (int i = 0; i < w->nslot; ++i)
        slot_release(w->slot[i], why);
}

/* The members the answer names leave and pull; how many. */
static size_t slot_hits(struct rhc_wslot *s, const struct rhc_watch_hit *hits, size_t nh)
{
    size_t woke = 0;

    for (size_t i = s->g.n; nh && i-- > 0; ) {
        rhc_tunnel *t = s->g.m[i].who;
        int h = rhc_watch_find(hits, nh, t->sid);
        if (h >= 0) {
            watch_wake(t, h ? "the server no longer knows the session" : "down bytes are there");
            ++woke;
        }
    }
    return woke;
}

/* A 200: the named tunnels pull; how many, or -1 for an answer we cannot read. */
static int answer_take(struct rhc_wslot *s, struct rhc_req *r, int cur)
{
    static struct rhc_watch_hit hits[RH_WATCH_MAX];
    size_t nh;

    if (r->w_over || rhc_watch_parse(r->w_ans, r->w_len, hits, RH_WATCH_MAX, &nh) < 0)
        return -1;
    if (cur) {
        /* the server heard of every member it watched (resume's retry_ok) */
        int64_t now = rh_now_ms();
        for (size_t i = 0; i < s->g.n; ++i)
            if (s->g.m[i].covered)
                ((rhc_tunnel *)s->g.m[i].who)->sess.last_contact = now;
    }
    return (int)slot_hits(s, hits, nh);
}

/* What a failed current watch does: 404 / 405 end the route's watching; a
 * busy server gets the watch again later; a cut goes again a few times; the
 * rest (a wrong answer, a refusal) put the group's tunnels back to polls. */
static void cur_failed(struct rhc_wslot *s, struct rhc_req *r, CURLcode rc, int64_t now)
{
    struct rhc_watch *w = s->route->watch;
    char line[BODY_MAX + 1], why[BODY_MAX + 64];

    body_line(r, line, sizeof(line));
    if (r->hdr_done && (r->status == 404 || r->status == 405) && !r->reason[0]) {
        snprintf(why, sizeof(why), "HTTP %ld: the server has no watch endpoint", r->status);
        route_off(s->route, why);
        return;
    }
    if (r->hdr_done && (r->status == 503 || r->status == 429)) {
        wlog(s->route, 2, "HTTP %ld: again later", r->status);
        rhc_wgroup_ended(&s->g, now + busy_backoff_ms(s->cuts++), 0);
        return;
    }
    if (!r->hdr_done && ++s->cuts <= WATCH_CUTS_MAX) {
        wlog(s->route, 1, "%s; sending it again", req_error(r, rc));
        rhc_wgroup_ended(&s->g, now + backoff_ms(s->cuts), 1);   /* not a growth */
        return;
    }
    if (r->hdr_done && r->status == 200)
        snprintf(why, sizeof(why), "malformed answer");
    else if (r->hdr_done)
        snprintf(why, sizeof(why), "HTTP %ld %s", r->status, line);
    else
        snprintf(why, sizeof(why), "%s", req_error(r, rc));
    rhc_wgroup_ended(&s->g, 0, 0);
    s->cuts = 0;
    if (++w->fails >= WATCH_FAILS_MAX) {
        route_off(s->route, "watches failed too often");
        return;
    }
    wlog(s->route, 1, "%s: its tunnels long-poll", why);
    slot_release(s, why);
}

void watch_done(rhc_ctx *c, struct rhc_req *r, CURLcode rc)
{
    struct rhc_wslot *s = r->w_slot;
    int64_t now = rh_now_ms();
    int ok = rc == CURLE_OK && r->hdr_done && r->status == 200;

    (void)c;
    if (r != s->cur) {          /* superseded: what it names still counts */
        old_forget(s, r);
        if (ok)
            answer_take(s, r, 0);
        req_free(r);
        return;
    }
    s->cur = NULL;
    int woke = ok ? answer_take(s, r, 1) : -1;
    if (woke >= 0) {
        s->cuts = 0;
        s->route->watch->fails = 0;
        rhc_wgroup_ended(&s->g, 0, woke > 0);
    } else if (!s->route->watch->off) {
        cur_failed(s, r, rc, now);
    }
    req_free(r);
}

static int64_t min_at(int64_t a, int64_t b)
{
    return a < 0 || (b >= 0 && b < a) ? b : a;
}

int64_t rhc_watch_next(const rhc_ctx *c)
{
    int64_t d = -1;

    for (const struct rhc_route *route = c->routes; route; route = route->next) {
        const struct rhc_watch *w = route->watch;
        for (int i = 0; w && !w->off && i < w->nslot; ++i)
            d = min_at(d, rhc_wgroup_next(&w->slot[i]->g));
    }
    return d;
}

void rhc_watch_timers(rhc_ctx *c, int64_t now)
{
    for (struct rhc_route *route = c->routes; route; route = route->next) {
        struct rhc_watch *w = route->watch;
        for (int i = 0; w && !w->off && i < w->nslot; ++i)
            if (rhc_wgroup_due(&w->slot[i]->g, now))
                slot_send(c, w->slot[i], now);
    }
}

/* After the route's tunnels are gone: its watches and groups. */
void rhc_watch_free(struct rhc_route *route)
{
    struct rhc_watch *w = route->watch;

    for (int i = 0; w && i < w->nslot; ++i) {
        struct rhc_wslot *s = w->slot[i];
        req_free(s->cur);
        for (int k = 0; k < s->nold; ++k)
            req_free(s->old[k]);
        rhc_wgroup_free(&s->g);
        free(s);
    }
    free(w);
    route->watch = NULL;
}
