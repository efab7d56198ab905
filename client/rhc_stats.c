/* relay-https client: statistics (see rhc_stats.h). The counters are bumped
 * where bytes are confirmed (up_ack) and written locally (rhc_local.c), and
 * where sessions start, choose a transport, resume and end; the reports only
 * read them, between two rounds of the loop, so they never hold up data. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_proxy.h"
#include "rhc_statfmt.h"
#include "rhc_tunnel_int.h"

/* ---------------------------------------------------------------- counting */

void stat_start(rhc_tunnel *t)
{
    t->stat.started = rh_now_ms();
    ++t->route->n.opened;
    ++t->route->n.open_now;
}

void stat_transport(rhc_tunnel *t)
{
    if (t->xp.down <= RHC_XP_BATCH)
        ++t->route->n.sessions[t->xp.down];
}

void stat_resume(rhc_tunnel *t)
{
    ++t->stat.resumes;
    ++t->route->n.resumes;
}

void stat_up(rhc_tunnel *t, uint64_t n)
{
    t->stat.bytes.up += n;
    t->route->n.bytes.up += n;
    meter_moved(t);
}

void stat_down(rhc_tunnel *t, size_t n)
{
    t->stat.bytes.down += n;
    t->route->n.bytes.down += n;
    meter_moved(t);
}

void stat_end(rhc_tunnel *t, int code)
{
    struct rhc_counters *n = &t->route->n;

    if (n->open_now)
        --n->open_now;
    if (code)
        ++n->failed;
    if (code == RHC_EXIT_LOST)
        ++n->lost;
}

/* ---------------------------------------------------------------- reports */

enum text { TEXT_NONE, TEXT_ROUTES, TEXT_ALL };

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static const char *route_name(const struct rhc_route *r)
{
    return r->name[0] ? r->name : "-";
}

/* The rates of a tunnel run over the last interval, or its age when younger. */
static int64_t tunnel_ms(const rhc_tunnel *t, int64_t now, int64_t ms)
{
    return now - t->stat.started < ms ? now - t->stat.started : ms;
}

static void text_tunnel(const rhc_tunnel *t, int64_t now, int64_t ms)
{
    char bytes[256], xp[64];

    rhc_fmt_bytes(&t->stat.bytes, tunnel_ms(t, now, ms), bytes, sizeof(bytes));
    if (t->xp.down == RHC_XP_AUTO)
        snprintf(xp, sizeof(xp), "opening");
    else
        xp_pair(t->xp.up, t->xp.down, xp, sizeof(xp));
    rhc_err("stats: tunnel %s: route %s, session %s, %s, age %.1f s, %s, resumes %u",
            or_dash(t->label), route_name(t->route), or_dash(t->sid), xp,
            (double)(now - t->stat.started) / 1000.0, bytes, t->stat.resumes);
}

static void text_report(rhc_ctx *c, int64_t now, int64_t ms, enum text what)
{
    struct rhc_counters total;
    char line[768], url[512];

    memset(&total, 0, sizeof(total));
    if (what == TEXT_ALL)
        for (const rhc_tunnel *t = c->tunnels; t; t = t->next)
            text_tunnel(t, now, ms);
    for (const struct rhc_route *r = c->routes; r; r = r->next) {
        char rates[240];
        rhc_fmt_counters(&r->n, ms, line, sizeof(line));
        rhc_url_mask(r->o->base_url, url, sizeof(url));
        rhc_rates_fmt(&r->pol.rates, rates, sizeof(rates));
        rhc_err("stats: route %s (%s %s): %s%s%s", route_name(r), url, r->o->target, line,
                rates[0] ? "; " : "", rates);
        rhc_counters_add(&total, &r->n);
    }
    rhc_fmt_counters(&total, ms, line, sizeof(line));
    rhc_err("stats: total: %s; uptime %.0f s, rates over %.1f s", line,
            (double)(now - c->stats.start_ms) / 1000.0, (double)ms / 1000.0);
}

static void json_tunnel(FILE *f, const rhc_tunnel *t, int64_t now, int64_t ms)
{
    char label[256], route[160], sid[64];
    int64_t tms = tunnel_ms(t, now, ms);
    const struct rhc_bytes *b = &t->stat.bytes;

    rhc_json_str(t->label, label, sizeof(label));
    rhc_json_str(t->route->name, route, sizeof(route));
    rhc_json_str(t->sid, sid, sizeof(sid));
    fprintf(f, "    {\"route\": %s, \"label\": %s, \"session\": %s, ", route, label,
            t->sid[0] ? sid : "null");
    if (t->xp.down == RHC_XP_AUTO)
        fprintf(f, "\"transport_up\": null, \"transport_down\": null, ");
    else
        fprintf(f, "\"transport_up\": \"%s\", \"transport_down\": \"%s\", ",
                xp_name[t->xp.up], xp_name[t->xp.down]);
    fprintf(f, "\"age_s\": %.3f, \"bytes_up\": %" PRIu64 ", \"bytes_down\": %" PRIu64
            ", \"rate_up\": %.0f, \"rate_down\": %.0f, \"resumes\": %u}",
            (double)(now - t->stat.started) / 1000.0, b->up, b->down,
            rhc_rate(b->up, b->up_last, tms), rhc_rate(b->down, b->down_last, tms),
            t->stat.resumes);
}

static void json_route(FILE *f, const struct rhc_route *r, int64_t ms)
{
    char name[160], url[600], target[160], proxy[700], buf[640];
    const char *from;
    const char *p = rhc_proxy_in_use(r->o, &from);

    rhc_json_str(r->name, name, sizeof(name));
    rhc_url_mask(r->o->base_url, buf, sizeof(buf));
    rhc_json_str(buf, url, sizeof(url));
    rhc_json_str(r->o->target, target, sizeof(target));
    if (p) {
        rhc_url_mask(p, buf, sizeof(buf));
        rhc_json_str(buf, proxy, sizeof(proxy));
    }
    fprintf(f, "    {\"name\": %s, \"url\": %s, \"target\": %s, \"proxy\": %s, ", name, url,
            target, p ? proxy : "null");
    rhc_json_counters(f, &r->n, ms);
    /* auto's figures on this path (bytes/s, null: not measured) and its pick */
    const struct rhc_rates *m = &r->pol.rates;
    fputs(", \"measured\": {", f);
    for (int d = 0; d < 2; ++d)
        for (int x = RHC_XP_DUPLEX; x <= RHC_XP_STREAM; ++x) {
            fprintf(f, "%s\"%s_%s\": ", d || x != RHC_XP_DUPLEX ? ", " : "", xp_name[x],
                    d ? "down" : "up");
            if (m->bps[d][x] > 0)
                fprintf(f, "%.0f", m->bps[d][x]);
            else
                fputs("null", f);
        }
    fprintf(f, "}, \"auto_pick\": %s%s%s}", m->pick ? "\"" : "",
            m->pick ? xp_name[m->pick] : "null", m->pick ? "\"" : "");
}

static void json_body(FILE *f, rhc_ctx *c, int64_t now, int64_t ms)
{
    struct rhc_counters total;
    char at[48], started[48];
    int64_t wall = rhc_wall_ms();
    const char *sep = "\n";

    memset(&total, 0, sizeof(total));
    rhc_fmt_iso(wall, at, sizeof(at));
    rhc_fmt_iso(c->stats.start_wall_ms, started, sizeof(started));
    fprintf(f, "{\n  \"version\": %d,\n  \"pid\": %ld,\n  \"time\": \"%s\",\n"
            "  \"time_ms\": %" PRId64 ",\n  \"started\": \"%s\",\n  \"uptime_s\": %.3f,\n"
            "  \"interval_s\": %.3f,\n  \"routes\": [", RHC_STATS_JSON_VERSION, (long)getpid(),
            at, wall, started, (double)(now - c->stats.start_ms) / 1000.0, (double)ms / 1000.0);
    for (const struct rhc_route *r = c->routes; r; r = r->next, sep = ",\n") {
        fputs(sep, f);
        json_route(f, r, ms);
        rhc_counters_add(&total, &r->n);
    }
    fputs("\n  ],\n  \"tunnels\": [", f);
    sep = "\n";
    for (const rhc_tunnel *t = c->tunnels; t; t = t->next, sep = ",\n") {
        fputs(sep, f);
        json_tunnel(f, t, now, ms);
    }
    fputs("\n  ],\n  \"total\": {", f);
    rhc_json_counters(f, &total, ms);
    fputs("}\n}\n", f);
}

/* The file is written beside its name and renamed over it: a reader sees the
 * old report or the new one, never a part. */
static int json_write(rhc_ctx *c, const char *path, int64_t now, int64_t ms)
{
    char tmp[4096];
    FILE *f = NULL;
    int err = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return ENAMETOOLONG;
    if (!(f = fopen(tmp, "w")))
        return errno;
    json_body(f, c, now, ms);
    if (ferror(f))
        err = EIO;
    if (fclose(f) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err)
        unlink(tmp);
    return err;
}

/* A failure is told once, not at every interval, until it changes. */
static void json_report(rhc_ctx *c, int64_t now, int64_t ms)
{
    const char *path = c->o->stats_json;
    int err = json_write(c, path, now, ms);

    if (err && err != c->stats.json_errno)
        rhc_err("--stats-json %s: %s", path, strerror(err));
    else if (!err && c->stats.json_errno)
        rhc_err("--stats-json %s: written again", path);
    c->stats.json_errno = err;
}

/* The rates of the next report start from here. */
static void mark(rhc_ctx *c, int64_t now)
{
    for (rhc_tunnel *t = c->tunnels; t; t = t->next) {
        t->stat.bytes.up_last = t->stat.bytes.up;
        t->stat.bytes.down_last = t->stat.bytes.down;
    }
    for (struct rhc_route *r = c->routes; r; r = r->next) {
        r->n.bytes.up_last = r->n.bytes.up;
        r->n.bytes.down_last = r->n.bytes.down;
    }
    c->stats.last_ms = now;
}

static void report(rhc_ctx *c, int64_t now, enum text what)
{
    int64_t ms = now - c->stats.last_ms;

    if (what != TEXT_NONE)
        text_report(c, now, ms, what);
    if (c->o->stats_json)
        json_report(c, now, ms);
    mark(c, now);
}

static int64_t every_ms(const struct rhc_opts *o)
{
    if (o->stats_ms > 0)
        return o->stats_ms;
    return o->stats_json ? RHC_STATS_JSON_EVERY_MS : 0;
}

long rhc_stats_tick(rhc_ctx *c, int64_t now, int usr1, long wait)
{
    struct rhc_stats_clock *k = &c->stats;
    int64_t every = every_ms(c->o);

    if (!k->started) {
        k->started = 1;
        k->start_ms = k->last_ms = now;
        k->start_wall_ms = rhc_wall_ms();
        k->next_ms = every ? now + every : 0;
        if (c->o->stats_json)
            json_report(c, now, 0);     /* the file is there from the start */
    }
    int due = every && now >= k->next_ms;
    if (usr1 || due)
        report(c, now, usr1 ? TEXT_ALL : c->o->stats_ms > 0 ? TEXT_ROUTES : TEXT_NONE);
    if (due)
        k->next_ms = now + every;
    if (!every)
        return wait;
    int64_t left = k->next_ms > now ? k->next_ms - now : 0;
    return wait < 0 || left < wait ? (long)left : wait;
}
