/* The relay's status: `SetHandler relay-https-status` answers JSON (?json, or
 * Accept: application/json) in strelaysrv's vocabulary, or a readable HTML page
 * with a table and small rate graphs (inline SVG, no external assets); and a
 * section in mod_status (server-status, server-status?auto). Everything comes
 * from the registry's shared memory, so it shows even while the core is busy
 * or gone (the core's heartbeat age says which). */
#include <string.h>
#include <httpd.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>
#include <http_config.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_status.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "mod_rh_daemon.h"
#include "mod_rh_status.h"
#include "rh_registry.h"
#include "rh_shard.h"
#include "rh_util.h"

#define KBPS_N 6
static const int kbps_windows[KBPS_N] = { 10, 60, 300, 900, 1800, 3600 };

/* One snapshot of everything shown, taken once per answer: the sum of every
 * core's table (RelayCoreProcesses), and each core's own state. */
typedef struct status {
    unsigned ncores, alive;
    const rh_registry *regs[RH_SHARDS_MAX];
    int64_t beat_ms[RH_SHARDS_MAX];
    uint32_t core_active[RH_SHARDS_MAX];
    const rh_stats *st;            /* the sum of the cores' figures */
    rh_stats sum;
    int watch_known;               /* every core's table has the watch's figures */
    rh_watch_stats watch;          /* ... their sum */
    int resume_known;              /* every core's table has RelayResumeMemory's */
    uint64_t resume_held, resume_bound, resume_waits;   /* ... their sums */
    rh_limits lim;                 /* the global ones: the cores' shares added */
    uint32_t nslots;
    uint64_t opened;
    uint32_t active, connecting, held;
    uint32_t serving;              /* serve legs of rendezvous (in active too) */
    uint64_t up, down;
    int64_t beat_age_ms;
    double kbps[KBPS_N];
    /* per target: live sessions, scanned from the slots */
    uint32_t live[RH_STATS_TARGETS];   /* a service's client legs ... */
    uint32_t legs[RH_STATS_TARGETS];   /* ... and its serve legs */
    uint64_t live_up[RH_STATS_TARGETS], live_down[RH_STATS_TARGETS];
} status;

static int target_index(const rh_stats *st, const char *name)
{
    uint32_t n = __atomic_load_n(&st->ntargets, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; ++i)
        if (!strcmp(st->targets[i].name, name))
            return (int)i;
    return n == RH_STATS_TARGETS ? RH_STATS_TARGETS - 1 : -1;   /* pooled as (other) */
}

static int reg_alive(const rh_registry *reg, int64_t beat_age_ms)
{
    return reg->core_pid > 0 && beat_age_ms < 3 * RH_CORE_BEAT_MS;
}

/* One core's table: its sessions, closed sessions' bytes and counts. */
static void take_core(status *s, unsigned k)
{
    const rh_registry *reg = s->regs[k];
    rh_limits lim;
    rh_registry_get_limits(reg, &lim);
    if (k == 0)
        s->lim = lim;
    else {
        s->lim.max_workers += lim.max_workers;
        s->lim.rate_global += lim.rate_global;
        rh_stats_add(&s->sum, &reg->stats);
    }
    s->beat_ms[k] = rh_registry_beat_age(reg, rh_now_ms());
    if (s->beat_ms[k] > s->beat_age_ms)
        s->beat_age_ms = s->beat_ms[k];
    s->alive += reg_alive(reg, s->beat_ms[k]);
    s->nslots += reg->nslots;
    s->opened += __atomic_load_n(&reg->total_opened, __ATOMIC_RELAXED);
    s->up += __atomic_load_n(&reg->total_up, __ATOMIC_RELAXED);
    s->down += __atomic_load_n(&reg->total_down, __ATOMIC_RELAXED);
    uint32_t before = s->active;
    for (uint32_t i = 0; i < reg->nslots; ++i) {
        rh_slot_view v;
        if (rh_registry_view(reg, i, &v) != RH_REG_OK)
            continue;
        if (v.state == RH_SLOT_CONNECTING)
            s->connecting++;
        s->serving += v.state == RH_SLOT_SERVE;
        s->active++;
        s->up += v.up_bytes;
        s->down += v.down_bytes;
        int t = target_index(s->st, v.target);
        if (t >= 0 && v.state == RH_SLOT_SERVE)
            s->legs[t]++;   /* its bytes are its client leg's: 0 here */
        else if (t >= 0) {
            s->live[t]++;
            s->live_up[t] += v.up_bytes;
            s->live_down[t] += v.down_bytes;
        }
    }
    s->core_active[k] = s->active - before;
}

/* 0 when the relay is not set up */
static int take(status *s)
{
    memset(s, 0, sizeof(*s));
    s->ncores = rh_daemon_cores();
    if (!s->ncores)
        return 0;
    for (unsigned k = 0; k < s->ncores; ++k)
        s->regs[k] = rh_daemon_registry(k);
    /* the figures first (targets by name), then the tables' sessions */
    memcpy(&s->sum, &s->regs[0]->stats, sizeof(s->sum));
    s->st = &s->sum;
    s->watch_known = s->resume_known = 1;
    for (unsigned k = 0; k < s->ncores; ++k) {
        take_core(s, k);
        /* a table an older module made has no watch figures: none are shown
         * rather than a part (docs/ARCHITECTURE.md, *The shared-memory registry*) */
        const rh_registry_ext *x = rh_daemon_ext(k);
        if (x)
            rh_stats_watch_add(&s->watch, &x->watch);
        else
            s->watch_known = 0;
        if (rh_registry_ext_has_resume(x)) {
            s->resume_held += __atomic_load_n(&x->resume_held, __ATOMIC_RELAXED);
            s->resume_bound += __atomic_load_n(&x->resume_bound, __ATOMIC_RELAXED);
            s->resume_waits += __atomic_load_n(&x->resume_waits, __ATOMIC_RELAXED);
        } else
            s->resume_known = 0;
    }
    s->held = s->sum.held;
    for (int i = 0; i < KBPS_N; ++i)
        s->kbps[i] = rh_stats_rate(s->st, kbps_windows[i]) * 8 / 1000;
    return 1;
}

/* every core runs */
static int core_alive(const status *s)
{
    return s->alive == s->ncores;
}

/* ---- JSON ---- */

static void json_u64_array(request_rec *r, const char *name, const uint64_t *v,
                           const char *const *names, int n)
{
    ap_rprintf(r, "  \"%s\": {", name);
    for (int i = 0; i < n; ++i)
        ap_rprintf(r, "%s\"%s\": %" APR_UINT64_T_FMT, i ? ", " : "", names[i],
                   __atomic_load_n(&v[i], __ATOMIC_RELAXED));
    ap_rputs("},\n", r);
}

static void json_targets(request_rec *r, const status *s)
{
    uint32_t n = __atomic_load_n(&s->st->ntargets, __ATOMIC_ACQUIRE);
    ap_rputs("  \"targets\": [", r);
    for (uint32_t i = 0; i < n; ++i) {
        const rh_target_stats *t = &s->st->targets[i];
        /* names are [A-Za-z0-9._-] (and "(other)"): nothing to escape */
        ap_rprintf(r, "%s\n    {\"name\": \"%s\", \"numActiveSessions\": %u, "
                   "\"numServeLegs\": %u, \"sessionsOpened\": %" APR_UINT64_T_FMT
                   ", \"bytesUp\": %" APR_UINT64_T_FMT ", \"bytesDown\": %"
                   APR_UINT64_T_FMT "}", i ? "," : "", t->name, s->live[i], s->legs[i],
                   t->opened, t->up + s->live_up[i], t->down + s->live_down[i]);
    }
    ap_rputs(n ? "\n  ],\n" : "],\n", r);
}

static void json_options(request_rec *r, const rh_dir_conf *dc, const status *s)
{
    ap_rprintf(r, "  \"options\": {\"idleTimeout\": %d, \"pollTimeout\": %d, "
               "\"connectTimeout\": %d, \"heartbeat\": %d, \"bufferSize\": %d, "
               "\"resumeWindow\": %d, \"maxSessions\": %u, \"maxWorkers\": %u, "
               "\"maxRequestsPerClient\": %u, \"maxSessionsPerClient\": %u, "
               "\"openRate\": %u, \"pushWait\": %u, \"perSessionRate\": %u, "
               "\"globalRate\": %u},\n",
               rh_dir_idle(dc), rh_dir_poll(dc), rh_dir_connect(dc), RH_HEARTBEAT_S,
               rh_dir_bufsize(dc), rh_dir_window(dc), s->nslots, s->lim.max_workers,
               s->lim.requests_per_client, s->lim.sessions_per_client, s->lim.open_rate,
               s->lim.push_wait_s, s->lim.rate_session, s->lim.rate_global);
}

/* every core (RelayCoreProcesses): "core" above is their sum, the oldest beat */
static void json_cores(request_rec *r, const status *s)
{
    ap_rputs("  \"cores\": [", r);
    for (unsigned k = 0; k < s->ncores; ++k) {
        int64_t age = s->beat_ms[k];
        ap_rprintf(r, "%s\n    {\"index\": %u, \"running\": %s, \"pid\": %" APR_INT64_T_FMT
                   ", \"heartbeatAgeMs\": %" APR_INT64_T_FMT ", \"numActiveSessions\": %u, "
                   "\"maxSessions\": %u}", k ? "," : "", k,
                   reg_alive(s->regs[k], age) ? "true" : "false",
                   (apr_int64_t)s->regs[k]->core_pid,
                   (apr_int64_t)(age > 999999999 ? -1 : age), s->core_active[k],
                   s->regs[k]->nslots);
    }
    ap_rputs("\n  ]\n", r);
}

static void send_json(request_rec *r, const rh_dir_conf *dc, const status *s)
{
    apr_time_t now = apr_time_now();
    int64_t started = s->st->started;
    char when[APR_RFC822_DATE_LEN];
    apr_rfc822_date(when, apr_time_from_sec(started));
    ap_set_content_type(r, "application/json");
    ap_rputs("{\n", r);
    ap_rprintf(r, "  \"version\": \"%s\",\n", MOD_RELAY_HTTPS_VERSION);
    ap_rprintf(r, "  \"startTime\": \"%s\",\n", when);
    ap_rprintf(r, "  \"uptimeSeconds\": %" APR_INT64_T_FMT ",\n",
               (apr_int64_t)(apr_time_sec(now) - started));
    ap_rprintf(r, "  \"numActiveSessions\": %u,\n  \"numServeLegs\": %u,\n", s->active,
               s->serving);
    ap_rprintf(r, "  \"numConnectingSessions\": %u,\n", s->connecting);
    ap_rprintf(r, "  \"numConnections\": %u,\n", s->held);
    ap_rprintf(r, "  \"sessionsOpened\": %" APR_UINT64_T_FMT ",\n", s->opened);
    ap_rprintf(r, "  \"bytesProxied\": %" APR_UINT64_T_FMT ",\n", s->up + s->down);
    ap_rprintf(r, "  \"bytesUp\": %" APR_UINT64_T_FMT ",\n", s->up);
    ap_rprintf(r, "  \"bytesDown\": %" APR_UINT64_T_FMT ",\n", s->down);
    ap_rputs("  \"kbps10s1m5m15m30m60m\": [", r);
    for (int i = 0; i < KBPS_N; ++i)
        ap_rprintf(r, "%s%.1f", i ? ", " : "", s->kbps[i]);
    ap_rputs("],\n", r);
    json_u64_array(r, "requests", s->st->requests, rh_stats_xp_names, RH_XP_N);
    json_u64_array(r, "refused", s->st->refused, rh_stats_refuse_names, RH_REFUSE_N);
    ap_rprintf(r, "  \"resumes\": %" APR_UINT64_T_FMT ",\n",
               __atomic_load_n(&s->st->resumed, __ATOMIC_RELAXED));
    ap_rprintf(r, "  \"integrityFailures\": %" APR_UINT64_T_FMT ",\n",
               __atomic_load_n(&s->st->integrity, __ATOMIC_RELAXED));
    ap_rprintf(r, "  \"throttled\": %" APR_UINT64_T_FMT ",\n",
               __atomic_load_n(&s->st->throttled, __ATOMIC_RELAXED));
    ap_rprintf(r, "  \"udp\": {\"sessions\": %" APR_UINT64_T_FMT ", \"datagramsUp\": %"
               APR_UINT64_T_FMT ", \"datagramsDown\": %" APR_UINT64_T_FMT ", \"droppedUp\": %"
               APR_UINT64_T_FMT ", \"droppedDown\": %" APR_UINT64_T_FMT "},\n",
               s->st->udp_sessions, s->st->udp[0], s->st->udp[1], s->st->udp[2], s->st->udp[3]);
    if (s->watch_known)
        ap_rprintf(r, "  \"watch\": {\"sessions\": %" APR_UINT64_T_FMT ", \"waiting\": %"
                   APR_UINT64_T_FMT ", \"answeredData\": %" APR_UINT64_T_FMT
                   ", \"answeredGone\": %" APR_UINT64_T_FMT ", \"answeredEmpty\": %"
                   APR_UINT64_T_FMT "},\n", s->watch.sessions, s->watch.waiting,
                   s->watch.answered[RH_WATCH_ANS_DATA], s->watch.answered[RH_WATCH_ANS_GONE],
                   s->watch.answered[RH_WATCH_ANS_EMPTY]);
    if (s->resume_known)
        ap_rprintf(r, "  \"resumeMemory\": {\"held\": %" APR_UINT64_T_FMT ", \"bound\": %"
                   APR_UINT64_T_FMT ", \"waits\": %" APR_UINT64_T_FMT "},\n",
                   s->resume_held, s->resume_bound, s->resume_waits);
    json_targets(r, s);
    json_options(r, dc, s);
    ap_rprintf(r, "  \"core\": {\"running\": %s, \"pid\": %" APR_INT64_T_FMT
               ", \"heartbeatAgeMs\": %" APR_INT64_T_FMT "},\n",
               core_alive(s) ? "true" : "false", (apr_int64_t)s->regs[0]->core_pid,
               (apr_int64_t)(s->beat_age_ms > 999999999 ? -1 : s->beat_age_ms));
    json_cores(r, s);
    ap_rputs("}\n", r);
}

/* ---- HTML ---- */

static const char *human_bytes(apr_pool_t *p, uint64_t b)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    return u ? apr_psprintf(p, "%.1f %s", v, unit[u]) : apr_psprintf(p, "%.0f B", v);
}

/* A small line graph of rates (kbit/s), oldest first, as inline SVG. */
static void svg_graph(request_rec *r, const char *title, const double *v, int n)
{
    const int w = 360, h = 80;
    double max = 1;
    for (int i = 0; i < n; ++i)
        if (v[i] * 8 / 1000 > max)
            max = v[i] * 8 / 1000;
    ap_rprintf(r, "<figure><figcaption>%s (peak %.1f kbit/s)</figcaption>\n"
               "<svg class=\"graph\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\" aria-label=\"%s\"><rect width=\"%d\" height=\"%d\" "
               "fill=\"#f6f8fa\"/><polyline fill=\"none\" stroke=\"#0969da\" "
               "stroke-width=\"1.5\" points=\"", title, max, w, h, w, h, title, w, h);
    for (int i = 0; i < n; ++i)
        ap_rprintf(r, "%.1f,%.1f ", n > 1 ? (double)i * w / (n - 1) : 0.0,
                   h - 2 - (v[i] * 8 / 1000) / max * (h - 4));
    ap_rputs("\"/></svg></figure>\n", r);
}

static void html_row(request_rec *r, const char *k, const char *v)
{
    ap_rprintf(r, "<tr><th>%s</th><td>%s</td></tr>\n", k, v);
}

static void html_targets(request_rec *r, const status *s)
{
    uint32_t n = __atomic_load_n(&s->st->ntargets, __ATOMIC_ACQUIRE);
    ap_rputs("<h2>Targets</h2>\n<table class=\"targets\"><tr><th>target</th>"
             "<th>active</th><th>serve legs</th><th>opened</th><th>up</th><th>down</th>"
             "</tr>\n", r);
    for (uint32_t i = 0; i < n; ++i) {
        const rh_target_stats *t = &s->st->targets[i];
        ap_rprintf(r, "<tr><td>%s</td><td>%u</td><td>%u</td><td>%" APR_UINT64_T_FMT "</td>"
                   "<td>%s</td><td>%s</td></tr>\n", ap_escape_html(r->pool, t->name),
                   s->live[i], s->legs[i], t->opened, human_bytes(r->pool, t->up + s->live_up[i]),
                   human_bytes(r->pool, t->down + s->live_down[i]));
    }
    ap_rputs("</table>\n", r);
}

static void html_counts(request_rec *r, const char *title, const uint64_t *v,
                        const char *const *names, int n)
{
    ap_rprintf(r, "<h2>%s</h2>\n<table>", title);
    for (int i = 0; i < n; ++i)
        ap_rprintf(r, "<tr><th>%s</th><td>%" APR_UINT64_T_FMT "</td></tr>", names[i],
                   __atomic_load_n(&v[i], __ATOMIC_RELAXED));
    ap_rputs("</table>\n", r);
}

/* "running (pid N)"; with several cores each one's pid and sessions */
static const char *html_cores(apr_pool_t *p, const status *s)
{
    if (s->ncores == 1)
        return core_alive(s) ? apr_psprintf(p, "running (pid %" APR_INT64_T_FMT ")",
                                            (apr_int64_t)s->regs[0]->core_pid)
                             : "<span class=\"down\">not running</span>";
    const char *out = apr_psprintf(p, "%u of %u processes running:", s->alive, s->ncores);
    for (unsigned k = 0; k < s->ncores; ++k)
        out = apr_psprintf(p, "%s%s %s%u: pid %" APR_INT64_T_FMT ", %u sessions", out,
                           k ? "," : "", reg_alive(s->regs[k], s->beat_ms[k])
                           ? "" : "<span class=\"down\">not running</span> ", k,
                           (apr_int64_t)s->regs[k]->core_pid, s->core_active[k]);
    return out;
}

static void send_html(request_rec *r, const rh_dir_conf *dc, const status *s)
{
    apr_pool_t *p = r->pool;
    double sec[60], min[60];
    int nsec = rh_stats_series(s->st, 1, 60, sec), nmin = rh_stats_series(s->st, 60, 60, min);

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             "<meta name=\"viewport\" content=\"width=device-width\">"
             "<title>mod_relay_https status</title>\n<style>"
             "body{font:14px system-ui,sans-serif;margin:1.5em;color:#1f2328}"
             "table{border-collapse:collapse;margin-bottom:1em}"
             "th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}"
             "th{background:#f6f8fa;font-weight:600}figure{display:inline-block;margin:0 1em 1em 0}"
             "figcaption{font-size:12px;color:#57606a}.down{color:#cf222e}</style></head><body>\n"
             "<h1>mod_relay_https status</h1>\n<table class=\"summary\">\n", r);
    html_row(r, "version", MOD_RELAY_HTTPS_VERSION);
    html_row(r, "relay core", html_cores(p, s));
    html_row(r, "uptime", apr_psprintf(p, "%" APR_INT64_T_FMT " s",
                                      (apr_int64_t)(apr_time_sec(apr_time_now()) - s->st->started)));
    html_row(r, "active sessions", apr_psprintf(p, "%u of %u (%u of them serve legs)", s->active,
                                                s->nslots, s->serving));
    html_row(r, "requests in flight", apr_psprintf(p, "%u (budget %u)", s->held,
                                                   s->lim.max_workers));
    html_row(r, "sessions opened", apr_psprintf(p, "%" APR_UINT64_T_FMT, s->opened));
    html_row(r, "bytes proxied", apr_psprintf(p, "%s (up %s, down %s)",
                                              human_bytes(p, s->up + s->down),
                                              human_bytes(p, s->up), human_bytes(p, s->down)));
    html_row(r, "kbit/s 10s 1m 5m 15m 30m 60m",
             apr_psprintf(p, "%.1f %.1f %.1f %.1f %.1f %.1f", s->kbps[0], s->kbps[1],
                          s->kbps[2], s->kbps[3], s->kbps[4], s->kbps[5]));
    html_row(r, "resumes", apr_psprintf(p, "%" APR_UINT64_T_FMT, s->st->resumed));
    html_row(r, "integrity failures", apr_psprintf(p, "%" APR_UINT64_T_FMT, s->st->integrity));
    html_row(r, "UDP sessions, datagrams (up, down), dropped (up, down)",
             apr_psprintf(p, "%" APR_UINT64_T_FMT ", %" APR_UINT64_T_FMT " %" APR_UINT64_T_FMT
                          ", %" APR_UINT64_T_FMT " %" APR_UINT64_T_FMT, s->st->udp_sessions,
                          s->st->udp[0], s->st->udp[1], s->st->udp[2], s->st->udp[3]));
    if (s->watch_known)
        html_row(r, "watches (sessions watched, waiting; answered: data, gone, empty)",
                 apr_psprintf(p, "%" APR_UINT64_T_FMT ", %" APR_UINT64_T_FMT "; %"
                              APR_UINT64_T_FMT ", %" APR_UINT64_T_FMT ", %" APR_UINT64_T_FMT,
                              s->watch.sessions, s->watch.waiting,
                              s->watch.answered[RH_WATCH_ANS_DATA],
                              s->watch.answered[RH_WATCH_ANS_GONE],
                              s->watch.answered[RH_WATCH_ANS_EMPTY]));
    if (s->resume_known)
        html_row(r, "resume windows (bytes held, bound; sessions waited for room)",
                 apr_psprintf(p, "%" APR_UINT64_T_FMT ", %" APR_UINT64_T_FMT " (0: none); %"
                              APR_UINT64_T_FMT, s->resume_held, s->resume_bound,
                              s->resume_waits));
    html_row(r, "rate limits (per session, all)",
             s->lim.rate_session || s->lim.rate_global
             ? apr_psprintf(p, "%u B/s, %u B/s (0: none); held back %" APR_UINT64_T_FMT
                            " times", s->lim.rate_session, s->lim.rate_global,
                            s->st->throttled)
             : "none");
    html_row(r, "timeouts (idle, poll, connect)",
             apr_psprintf(p, "%d s, %d s, %d s", rh_dir_idle(dc), rh_dir_poll(dc),
                          rh_dir_connect(dc)));
    ap_rputs("</table>\n", r);
    if (nsec)
        svg_graph(r, "last minute, per second", sec, nsec);
    if (nmin)
        svg_graph(r, "last hour, per minute", min, nmin);
    html_targets(r, s);
    html_counts(r, "Requests by transport", s->st->requests, rh_stats_xp_names, RH_XP_N);
    html_counts(r, "Refused", s->st->refused, rh_stats_refuse_names, RH_REFUSE_N);
    ap_rputs("<p>JSON: <a href=\"?json\">?json</a></p>\n</body></html>\n", r);
}

/* ---- the handler ---- */

static int wants_json(request_rec *r)
{
    if (r->args && !strcmp(r->args, "json"))
        return 1;
    const char *accept = apr_table_get(r->headers_in, "Accept");
    return !r->args && accept && ap_strstr_c(accept, "application/json")
           && !ap_strstr_c(accept, "text/html");
}

static int refuse(request_rec *r, int status, const char *msg)
{
    r->status = status;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rprintf(r, RH_ERROR_PREFIX "%s\n", msg);
    return OK;
}

int rh_status_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, RH_STATUS_HANDLER_NAME) != 0)
        return DECLINED;
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        return refuse(r, HTTP_METHOD_NOT_ALLOWED, "the status answers GET and HEAD");
    }
    if (r->args && *r->args && strcmp(r->args, "json") != 0)
        return refuse(r, HTTP_BAD_REQUEST, "unknown query (use ?json, or none for HTML)");
    status *s = apr_palloc(r->pool, sizeof(*s));
    if (!take(s))
        return refuse(r, HTTP_SERVICE_UNAVAILABLE, "the relay is not set up");
    const rh_dir_conf *dc = ap_get_module_config(r->per_dir_config, &relay_https_module);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_mergen(r->headers_out, "Vary", "Accept");
    if (wants_json(r))
        send_json(r, dc, s);
    else
        send_html(r, dc, s);
    return OK;
}

/* ---- mod_status ---- */

static int status_hook(request_rec *r, int flags)
{
    status *s = apr_palloc(r->pool, sizeof(*s));
    if (!take(s))
        return OK;
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "RelayCoreProcesses: %u\nRelayCoreProcessesRunning: %u\n", s->ncores,
                   s->alive);
        ap_rprintf(r, "RelayCoreRunning: %d\nRelayActiveSessions: %u\nRelayServeLegs: %u\n"
                   "RelayConnections: %u\n"
                   "RelaySessionsOpened: %" APR_UINT64_T_FMT "\nRelayBytesProxied: %"
                   APR_UINT64_T_FMT "\nRelayKbps1m: %.1f\nRelayRefused: %" APR_UINT64_T_FMT
                   "\nRelayIntegrityFailures: %" APR_UINT64_T_FMT "\n", core_alive(s),
                   s->active, s->serving, s->held, s->opened, s->up + s->down, s->kbps[1],
                   s->st->refused[RH_REFUSE_BUSY] + s->st->refused[RH_REFUSE_CLIENT],
                   s->st->integrity);
        if (s->watch_known)
            ap_rprintf(r, "RelayWatchSessions: %" APR_UINT64_T_FMT "\nRelayWatchesWaiting: %"
                       APR_UINT64_T_FMT "\nRelayWatchesAnsweredData: %" APR_UINT64_T_FMT
                       "\nRelayWatchesAnsweredGone: %" APR_UINT64_T_FMT
                       "\nRelayWatchesAnsweredEmpty: %" APR_UINT64_T_FMT "\n",
                       s->watch.sessions, s->watch.waiting,
                       s->watch.answered[RH_WATCH_ANS_DATA],
                       s->watch.answered[RH_WATCH_ANS_GONE],
                       s->watch.answered[RH_WATCH_ANS_EMPTY]);
        if (s->resume_known)
            ap_rprintf(r, "RelayResumeHeld: %" APR_UINT64_T_FMT "\nRelayResumeBound: %"
                       APR_UINT64_T_FMT "\nRelayResumeWaits: %" APR_UINT64_T_FMT "\n",
                       s->resume_held, s->resume_bound, s->resume_waits);
        return OK;
    }
    ap_rprintf(r, "<hr /><h2>mod_relay_https</h2>\n<dl><dt>relay core: %s</dt>"
               "<dt>%u active sessions of %u (%u of them serve legs), %u requests in "
               "flight</dt>"
               "<dt>%s proxied, %.1f kbit/s over the last minute</dt>"
               "<dt>%" APR_UINT64_T_FMT " refused (budget or client share), %"
               APR_UINT64_T_FMT " integrity failures</dt>\n",
               core_alive(s) ? "running" : "not running", s->active, s->nslots, s->serving,
               s->held, human_bytes(r->pool, s->up + s->down), s->kbps[1],
               s->st->refused[RH_REFUSE_BUSY] + s->st->refused[RH_REFUSE_CLIENT],
               s->st->integrity);
    if (s->watch_known)
        ap_rprintf(r, "<dt>%" APR_UINT64_T_FMT " sessions in %" APR_UINT64_T_FMT " waiting "
                   "watches; watches answered: %" APR_UINT64_T_FMT " with data, %"
                   APR_UINT64_T_FMT " gone, %" APR_UINT64_T_FMT " empty</dt>\n",
                   s->watch.sessions, s->watch.waiting, s->watch.answered[RH_WATCH_ANS_DATA],
                   s->watch.answered[RH_WATCH_ANS_GONE], s->watch.answered[RH_WATCH_ANS_EMPTY]);
    ap_rputs("</dl>\n", r);
    return OK;
}

void rh_status_register_hooks(void)
{
    ap_hook_handler(rh_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
