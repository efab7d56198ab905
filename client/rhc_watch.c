/* relay-https client: the watch's answer parser and group set (see rhc_watch.h). */
#include <stdlib.h>
#include <string.h>

#include "rhc_watch.h"

static int lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int hit_cmp(const void *a, const void *b)
{
    return memcmp(((const struct rhc_watch_hit *)a)->sid,
                  ((const struct rhc_watch_hit *)b)->sid, RH_SID_LEN);
}

/* One line at p (len bytes left, at least one): 0 and the hit, else -1. */
static int parse_line(const char *p, size_t len, struct rhc_watch_hit *h)
{
    if (len < RHC_WATCH_ANSWER_LINE || p[RH_SID_LEN] != ' ' ||
        p[RHC_WATCH_ANSWER_LINE - 1] != '\n')
        return -1;
    for (size_t i = 0; i < RH_SID_LEN; ++i)
        if (!lower_hex(p[i]))
            return -1;
    const char *st = p + RH_SID_LEN + 1;
    if (!memcmp(st, RH_WATCH_DATA, 4))
        h->gone = 0;
    else if (!memcmp(st, RH_WATCH_GONE, 4))
        h->gone = 1;
    else
        return -1;
    memcpy(h->sid, p, RH_SID_LEN);
    h->sid[RH_SID_LEN] = '\0';
    return 0;
}

int rhc_watch_parse(const char *body, size_t len, struct rhc_watch_hit *hits, size_t cap,
                    size_t *n)
{
    size_t k = 0;

    *n = 0;
    if (len % RHC_WATCH_ANSWER_LINE || len / RHC_WATCH_ANSWER_LINE > cap)
        return -1;
    for (size_t pos = 0; pos < len; pos += RHC_WATCH_ANSWER_LINE)
        if (parse_line(body + pos, len - pos, &hits[k++]) < 0)
            return -1;
    if (k > 1)
        qsort(hits, k, sizeof(*hits), hit_cmp);
    for (size_t i = 1; i < k; ++i)
        if (!memcmp(hits[i - 1].sid, hits[i].sid, RH_SID_LEN))
            return -1;      /* a session twice: not an answer we understand */
    *n = k;
    return 0;
}

int rhc_watch_find(const struct rhc_watch_hit *hits, size_t n, const char *sid)
{
    struct rhc_watch_hit key;

    if (!n)
        return -1;
    memcpy(key.sid, sid, RH_SID_LEN);
    const struct rhc_watch_hit *h = bsearch(&key, hits, n, sizeof(*hits), hit_cmp);
    return h ? h->gone : -1;
}

int rhc_wgroup_join(struct rhc_wgroup *g, void *who, size_t *idx)
{
    if (g->n >= RH_WATCH_MAX)
        return -1;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        if (cap > RH_WATCH_MAX)
            cap = RH_WATCH_MAX;
        struct rhc_wmember *m = realloc(g->m, cap * sizeof(*m));
        if (!m)
            return -1;
        g->m = m;
        g->cap = cap;
    }
    g->m[g->n] = (struct rhc_wmember){ who, 0 };
    *idx = g->n++;
    return 0;
}

void *rhc_wgroup_leave(struct rhc_wgroup *g, size_t idx)
{
    if (idx >= g->n)
        return NULL;
    if (g->m[idx].covered)
        --g->ncovered;
    if (idx == --g->n)
        return NULL;
    g->m[idx] = g->m[g->n];
    return g->m[idx].who;
}

int64_t rhc_wgroup_next(const struct rhc_wgroup *g)
{
    if (!g->n || (g->inflight && g->ncovered == g->n))
        return -1;
    int64_t at = g->last_send ? g->last_send + RH_WATCH_JOIN_MS : 0;
    return g->retry_at > at ? g->retry_at : at;
}

int rhc_wgroup_due(const struct rhc_wgroup *g, int64_t now)
{
    int64_t at = rhc_wgroup_next(g);
    return at >= 0 && now >= at;
}

void rhc_wgroup_sent(struct rhc_wgroup *g, int64_t now)
{
    for (size_t i = 0; i < g->n; ++i)
        g->m[i].covered = 1;
    g->ncovered = g->n;
    g->inflight = 1;
    g->last_send = now ? now : 1;
    g->retry_at = 0;
}

void rhc_wgroup_ended(struct rhc_wgroup *g, int64_t retry_at, int at_once)
{
    for (size_t i = 0; i < g->n; ++i)
        g->m[i].covered = 0;
    g->ncovered = 0;
    g->inflight = 0;
    g->retry_at = retry_at;
    if (at_once)
        g->last_send = 0;
}

void rhc_wgroup_free(struct rhc_wgroup *g)
{
    free(g->m);
    memset(g, 0, sizeof(*g));
}
