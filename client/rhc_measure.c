/* relay-https client: auto measures the transports on the path (see
 * rhc_measure.h). A window skips METER_WARM bytes (slow start, the first
 * requests) and then times METER_BYTES, and METER_RTTS round trips at least,
 * in its busier direction (a duplex: down), counting what the server confirmed
 * up and what reached the local side down. One session of a route measures at
 * a time. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_measure.h"
#include "rhc_tunnel_int.h"

static const char *const dir_name[2] = { "up", "down" };

enum rhc_transport rhc_rates_pick(double duplex_bps, double stream_bps)
{
    return duplex_bps > stream_bps * METER_EDGE ? RHC_XP_DUPLEX : RHC_XP_STREAM;
}

void rhc_rates_fmt(const struct rhc_rates *m, char *out, size_t outsz)
{
    size_t n = 0;

    out[0] = '\0';
    for (int d = 0; d < 2; ++d)
        for (int x = RHC_XP_DUPLEX; x <= RHC_XP_STREAM; ++x) {
            if (m->bps[d][x] <= 0 || n >= outsz)
                continue;
            int k = snprintf(out + n, outsz - n, "%s%s %s %.0f MB/s", n ? ", " : "measured ",
                             xp_name[x], dir_name[d], m->bps[d][x] / 1e6);
            if (k > 0)
                n += (size_t)k;
        }
    if (m->pick != RHC_XP_AUTO && n < outsz)
        snprintf(out + n, outsz - n, "; auto picks %s", xp_name[m->pick]);
}

/* Windows are timed in microseconds: 4 MiB take 20 ms at 200 MB/s and 4 ms
 * at 1 GB/s, where whole milliseconds would err by 5 to 25 %, more than the
 * METER_EDGE that decides. */
static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void meter_start(struct rhc_meter *m, enum rhc_transport x, const rhc_tunnel *t)
{
    m->xp = x;
    m->warm = 0;
    m->up0 = t->stat.bytes.up;
    m->down0 = t->stat.bytes.down;
    m->t0_us = now_us();
}

static int has_figure(const struct rhc_rates *r, enum rhc_transport x)
{
    return r->bps[0][x] > 0 || r->bps[1][x] > 0;
}

/* Both ways on one transport, or a duplex whose upload went on a stream push
 * (duplex_split): a duplex window times down only. */
static int meter_xp_ok(const rhc_tunnel *t)
{
    return t->xp.up == t->xp.down ||
           (t->xp.down == RHC_XP_DUPLEX && t->xp.up == RHC_XP_STREAM);
}

/* The session's transports are the route's to measure now: auto, one transport
 * (see meter_xp_ok), the server keeps bytes until acknowledged (a move to
 * stream resends what was in flight), no pick yet, no other session
 * measuring; on stream while it has no figure, on duplex (the trial) once
 * stream has one. */
static int meter_wanted(rhc_tunnel *t, int64_t now)
{
    struct rhc_rates *r = &t->route->pol.rates;

    if (t->meter.done || !t->xp.autox || !t->sess.resume || !meter_xp_ok(t) ||
        t->xp.switching || t->up.done || t->down.fin || t->end.code)
        return 0;
    if (t->meter.xp != RHC_XP_AUTO && t->meter.xp != t->xp.down) {
        t->meter.xp = RHC_XP_AUTO;          /* a fallback moved it: no fair figure */
        t->meter.done = 1;
        return 0;
    }
    if (t->meter.xp != RHC_XP_AUTO)
        return 1;
    if (r->pick != RHC_XP_AUTO || now < t->route->pol.measuring_until)
        return 0;
    if (t->xp.down == RHC_XP_STREAM)
        return !has_figure(r, RHC_XP_STREAM);
    return t->xp.down == RHC_XP_DUPLEX && has_figure(r, RHC_XP_STREAM) &&
           !has_figure(r, RHC_XP_DUPLEX);
}

int meter_claim(rhc_tunnel *t)
{
    int64_t now = rh_now_ms();

    if (t->xp.down != RHC_XP_DUPLEX || t->meter.xp != RHC_XP_AUTO || !meter_wanted(t, now))
        return 0;
    meter_start(&t->meter, RHC_XP_DUPLEX, t);
    t->route->pol.measuring_until = now + 2 * METER_MAX_MS;
    return 1;
}

/* Stream's figure to beat in direction dir (or the other one's, if that is
 * all stream measured); 0: none. */
static double stream_figure(const struct rhc_rates *r, int dir)
{
    double stream = r->bps[dir][RHC_XP_STREAM];
    return stream > 0 ? stream : r->bps[!dir][RHC_XP_STREAM];
}

int rhc_meter_lost(double stream_bps, int64_t us)
{
    return stream_bps > 0 && (double)us * stream_bps * METER_EDGE > (double)METER_BYTES * 1e6;
}

int rhc_meter_move_due(double stream_bps, int64_t move_us, int64_t us, uint64_t bytes)
{
    return stream_bps <= 0 || (double)us - (double)bytes * 1e6 / stream_bps >= (double)move_us;
}

/* This session leaves its duplex for stream once staying has cost what the
 * move costs (rhc_meter_move_due), from the loop (this may be a curl
 * callback). The move's cost is what the duplex took from its start to its
 * answer: a new request on a new connection, through the same path. Through
 * squid and 40 ms round trips that is 120-160 ms in which nothing comes down,
 * more than a 100 MB download at 250 MB/s loses on the duplex. */
static void meter_move_later(rhc_tunnel *t)
{
    struct rhc_meter *m = &t->meter;
    const struct rhc_req *d = t->rq.duplex;

    m->switch_due = 1;
    m->fig_us = now_us();
    m->fig_down = t->stat.bytes.down;
    m->move_us = d && d->hdr_done && d->hdr_at > d->started ? (d->hdr_at - d->started) * 1000 : 0;
    if (m->move_us > METER_MOVE_MAX_MS * 1000L)
        m->move_us = METER_MOVE_MAX_MS * 1000L;
    t_log(t, 1, "auto: this session moves to stream once the duplex has cost it %" PRId64
          " ms (what a new request takes here)", m->move_us / 1000);
}

/* A window timed its METER_BYTES in direction dir: the figures (the other
 * direction's too when it carried enough to say), and what follows: after
 * stream's, nothing yet (a later bulk session times duplex); after duplex's,
 * the pick, and this session moves to stream unless duplex won. */
static void meter_figure(rhc_tunnel *t, int dir, uint64_t du, uint64_t dd, int64_t us)
{
    struct rhc_rates *r = &t->route->pol.rates;
    enum rhc_transport x = t->meter.xp;
    uint64_t bytes = dir ? dd : du, other_way = dir ? du : dd;
    double per_s = 1e6 / (double)(us > 0 ? us : 1);
    double bps = (double)bytes * per_s;

    r->bps[dir][x] = bps;
    if (other_way >= METER_WARM && x == RHC_XP_STREAM)
        r->bps[!dir][x] = (double)other_way * per_s;
    t->meter.done = 1;
    t->meter.xp = RHC_XP_AUTO;
    t->route->pol.measuring_until = 0;
    if (x == RHC_XP_STREAM) {
        t_log(t, 1, "auto: stream moved %" PRIu64 " bytes %s at %.0f MB/s; a later bulk "
              "session times duplex against it", bytes, dir_name[dir], bps / 1e6);
        return;
    }
    double stream = stream_figure(r, dir);
    r->pick = rhc_rates_pick(bps, stream);
    r->at = rh_now_ms();
    snprintf(r->why, sizeof(r->why), "auto: measured on this path, %s: duplex %.0f MB/s, "
             "stream %.0f MB/s", dir_name[dir], bps / 1e6, stream / 1e6);
    t_log(t, 1, "%s: %s from now on", r->why, xp_name[r->pick]);
    if (r->pick == RHC_XP_STREAM)
        meter_move_later(t);
}

static int64_t meter_min_us(const rhc_tunnel *t)
{
    int64_t ms = METER_RTTS * t->sess.rtt_ms;

    return (ms < METER_MAX_MS / 2 ? ms : METER_MAX_MS / 2) * 1000;
}

void meter_moved(rhc_tunnel *t)
{
    struct rhc_meter *m = &t->meter;
    int64_t now = rh_now_ms();

    if (!meter_wanted(t, now))
        return;
    if (m->xp == RHC_XP_AUTO) {
        meter_start(m, t->xp.down, t);
        t->route->pol.measuring_until = now + 2 * METER_MAX_MS;
        return;
    }
    /* a duplex is timed down only: its bulk uploads go on stream pushes
     * whatever auto picks (duplex_split), so its up rate is never used */
    int down_only = m->xp == RHC_XP_DUPLEX;
    uint64_t du = t->stat.bytes.up - m->up0, dd = t->stat.bytes.down - m->down0;
    uint64_t most = down_only || dd > du ? dd : du;
    if (!m->warm) {
        if (most >= METER_WARM) {
            meter_start(m, m->xp, t);
            m->warm = 1;
        } else if (now_us() - m->t0_us > METER_MAX_MS * 1000L) {
            meter_start(m, m->xp, t);       /* not bulk (yet): a new window */
        }
        return;
    }
    int64_t us = now_us() - m->t0_us;
    if (us > METER_MAX_MS * 1000L) {
        meter_start(m, m->xp, t);           /* too slow to tell transports apart */
        t->route->pol.measuring_until = now + 2 * METER_MAX_MS;
        return;
    }
    /* A window spans METER_RTTS round trips at least: a shorter one times the
     * path's buffers, not its rate (through a 20 ms delay proxy stream took
     * 4 MiB in 10 ms, "402 MB/s", where it goes on at half that). A duplex
     * trial that can no longer win ends then. */
    if (us < meter_min_us(t))
        return;
    if (most >= METER_BYTES ||
        (down_only && rhc_meter_lost(stream_figure(&t->route->pol.rates, 1), us)))
        meter_figure(t, down_only || dd > du, du, dd, us);
}

/* Stream won (down: a duplex is timed down only): the session moves to it, as
 * after a cut, once staying has cost what the move costs; an upload already on
 * a stream push stays there. */
void meter_switch(rhc_tunnel *t)
{
    struct rhc_meter *m = &t->meter;

    if (!m->switch_due)
        return;
    if (t->xp.down == RHC_XP_DUPLEX &&
        !rhc_meter_move_due(stream_figure(&t->route->pol.rates, 1), m->move_us,
                            now_us() - m->fig_us, t->stat.bytes.down - m->fig_down))
        return;
    m->switch_due = 0;
    switch_to_stream(t, "auto: stream measured faster on this path");
}

/* When meter_switch moves the session (rh_now_ms's clock): at once, or when
 * staying has cost what the move costs if no byte comes meanwhile (bytes
 * that come put it later, and wake the loop anyway); -1: no move due. The
 * loop looked at a deferred tunnel every round until then. */
int64_t meter_switch_at(const rhc_tunnel *t)
{
    const struct rhc_meter *m = &t->meter;

    if (!m->switch_due)
        return -1;
    double bps = stream_figure(&t->route->pol.rates, 1);
    if (t->xp.down != RHC_XP_DUPLEX || bps <= 0)
        return 0;
    double us = (double)m->fig_us + (double)m->move_us +
                (double)(t->stat.bytes.down - m->fig_down) * 1e6 / bps;
    return (int64_t)(us / 1000.0) + 1;
}

void rhc_rates_expire(struct rhc_rates *r, int64_t now)
{
    if (r->pick != RHC_XP_AUTO && now - r->at >= RHC_POLICY_RETRY_MS)
        memset(r, 0, sizeof(*r));
}
