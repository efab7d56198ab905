/* relay-https client: how the statistics read (see rhc_statfmt.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rhc_choose.h"
#include "rhc_statfmt.h"

double rhc_rate(uint64_t now, uint64_t then, int64_t ms)
{
    if (ms <= 0 || now < then)
        return 0.0;
    return (double)(now - then) * 1000.0 / (double)ms;
}

void rhc_fmt_size(double n, char *out, size_t outsz)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    size_t u = 0;

    if (n < 0)
        n = 0;
    while (n >= 1024.0 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        n /= 1024.0;
        ++u;
    }
    if (u == 0)
        snprintf(out, outsz, "%.0f B", n);
    else
        snprintf(out, outsz, "%.1f %s", n, unit[u]);
}

void rhc_fmt_bytes(const struct rhc_bytes *b, int64_t ms, char *out, size_t outsz)
{
    char us[32], ur[32], ds[32], dr[32];

    rhc_fmt_size((double)b->up, us, sizeof(us));
    rhc_fmt_size(rhc_rate(b->up, b->up_last, ms), ur, sizeof(ur));
    rhc_fmt_size((double)b->down, ds, sizeof(ds));
    rhc_fmt_size(rhc_rate(b->down, b->down_last, ms), dr, sizeof(dr));
    snprintf(out, outsz, "up %" PRIu64 " B (%s) at %s/s, down %" PRIu64 " B (%s) at %s/s",
             b->up, us, ur, b->down, ds, dr);
}

void rhc_fmt_counters(const struct rhc_counters *n, int64_t ms, char *out, size_t outsz)
{
    char bytes[256];

    rhc_fmt_bytes(&n->bytes, ms, bytes, sizeof(bytes));
    int at = snprintf(out, outsz, "tunnels %" PRIu64 " open, %" PRIu64 " total, %" PRIu64 " failed, %"
             PRIu64 " lost; %s; resumes %" PRIu64 "; sessions %s %" PRIu64 ", %s %" PRIu64
             ", %s %" PRIu64, n->open_now, n->opened, n->failed, n->lost, bytes, n->resumes,
             xp_name[RHC_XP_DUPLEX], n->sessions[RHC_XP_DUPLEX],
             xp_name[RHC_XP_STREAM], n->sessions[RHC_XP_STREAM],
             xp_name[RHC_XP_BATCH], n->sessions[RHC_XP_BATCH]);
    if ((n->dgrams[0] || n->dgrams[1] || n->dgrams[2] || n->dgrams[3])
        && at > 0 && (size_t)at < outsz)
        at += snprintf(out + at, outsz - (size_t)at, "; datagrams up %" PRIu64 ", down %"
                       PRIu64 ", dropped up %" PRIu64 ", dropped down %" PRIu64, n->dgrams[0],
                       n->dgrams[1], n->dgrams[2], n->dgrams[3]);
    if (n->watches && at > 0 && (size_t)at < outsz)
        snprintf(out + at, outsz - (size_t)at, "; watched %" PRIu64 " (watches sent %" PRIu64
                 ")", n->watched, n->watches);
}

void rhc_counters_add(struct rhc_counters *a, const struct rhc_counters *b)
{
    a->bytes.up += b->bytes.up;
    a->bytes.down += b->bytes.down;
    a->bytes.up_last += b->bytes.up_last;
    a->bytes.down_last += b->bytes.down_last;
    a->open_now += b->open_now;
    a->opened += b->opened;
    a->failed += b->failed;
    a->lost += b->lost;
    a->resumes += b->resumes;
    a->watched += b->watched;
    a->watches += b->watches;
    for (int i = 0; i <= RHC_XP_BATCH; ++i)
        a->sessions[i] += b->sessions[i];
    for (int i = 0; i < 4; ++i)
        a->dgrams[i] += b->dgrams[i];
}

void rhc_json_str(const char *s, char *out, size_t outsz)
{
    size_t n = 0;

    if (outsz < 3) {
        if (outsz)
            out[0] = '\0';
        return;
    }
    out[n++] = '"';
    for (; *s; ++s) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        if (ch == '"' || ch == '\\')
            snprintf(esc, sizeof(esc), "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
        else if (ch >= 0x80)    /* maybe not UTF-8: a strict reader would refuse it */
            snprintf(esc, sizeof(esc), "?");
        else
            snprintf(esc, sizeof(esc), "%c", ch);
        size_t el = strlen(esc);
        if (n + el + 2 > outsz)     /* room for the closing quote and the NUL */
            break;
        memcpy(out + n, esc, el);
        n += el;
    }
    out[n++] = '"';
    out[n] = '\0';
}

void rhc_json_counters(FILE *f, const struct rhc_counters *n, int64_t ms)
{
    fprintf(f, "\"tunnels_open\": %" PRIu64 ", \"tunnels_total\": %" PRIu64
            ", \"tunnels_failed\": %" PRIu64 ", \"tunnels_lost\": %" PRIu64
            ", \"resumes\": %" PRIu64 ", \"bytes_up\": %" PRIu64 ", \"bytes_down\": %" PRIu64
            ", \"rate_up\": %.0f, \"rate_down\": %.0f, \"sessions\": {\"%s\": %" PRIu64
            ", \"%s\": %" PRIu64 ", \"%s\": %" PRIu64 "}, \"datagrams\": {\"up\": %" PRIu64
            ", \"down\": %" PRIu64 ", \"dropped_up\": %" PRIu64 ", \"dropped_down\": %" PRIu64
            "}, \"watched\": %" PRIu64 ", \"watches\": %" PRIu64,
            n->open_now, n->opened, n->failed, n->lost, n->resumes, n->bytes.up, n->bytes.down,
            rhc_rate(n->bytes.up, n->bytes.up_last, ms),
            rhc_rate(n->bytes.down, n->bytes.down_last, ms),
            xp_name[RHC_XP_DUPLEX], n->sessions[RHC_XP_DUPLEX],
            xp_name[RHC_XP_STREAM], n->sessions[RHC_XP_STREAM],
            xp_name[RHC_XP_BATCH], n->sessions[RHC_XP_BATCH], n->dgrams[0], n->dgrams[1],
            n->dgrams[2], n->dgrams[3], n->watched, n->watches);
}

void rhc_fmt_iso(int64_t wall_ms, char *out, size_t outsz)
{
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    char day[32], zone[8];

    if (!localtime_r(&s, &tm) || !strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm) ||
        !strftime(zone, sizeof(zone), "%z", &tm) || strlen(zone) != 5) {
        snprintf(out, outsz, "1970-01-01T00:00:00.000Z");
        return;
    }
    /* %z gives +0100; ISO 8601 with a time wants +01:00 */
    snprintf(out, outsz, "%s.%03d%.3s:%s", day, (int)(wall_ms % 1000), zone, zone + 3);
}
