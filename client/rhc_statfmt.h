/* relay-https client: how the statistics read (pure, unit-tested): rates,
 * sizes, the counters of a route as one text line or one JSON object, JSON
 * strings and times. rhc_stats.c gathers the figures and writes them out. */
#ifndef RHC_STATFMT_H
#define RHC_STATFMT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rhc_route.h"

#define RHC_STATS_JSON_VERSION 1   /* docs/man/relay-https.1, STATISTICS */

/* Bytes per second from then to now over ms milliseconds; 0 when ms <= 0 or
 * the count went back. */
double rhc_rate(uint64_t now, uint64_t then, int64_t ms);

/* "512 B", "1.5 KiB", "12.3 MiB", "4.0 GiB", "1.2 TiB" (binary units). */
void rhc_fmt_size(double n, char *out, size_t outsz);

/* "up 3145728 B (3.0 MiB) at 85.3 KiB/s, down ..." for bytes over ms. */
void rhc_fmt_bytes(const struct rhc_bytes *b, int64_t ms, char *out, size_t outsz);

/* A route's (or the total's) counters as text: "tunnels 1 open, 3 total, 0
 * failed, 0 lost; up ...; resumes 1; sessions duplex 2, stream 1, batch 0". */
void rhc_fmt_counters(const struct rhc_counters *n, int64_t ms, char *out, size_t outsz);

/* Adds the counters of b to a (the total over routes). */
void rhc_counters_add(struct rhc_counters *a, const struct rhc_counters *b);

/* s as a JSON string, quotes included; control bytes escaped, bytes >= 0x80
 * as '?' (labels and names are ASCII; a URL should be percent-encoded). Cut
 * short, it is still a valid string. */
void rhc_json_str(const char *s, char *out, size_t outsz);

/* The counters as the members of a JSON object (without the braces). */
void rhc_json_counters(FILE *f, const struct rhc_counters *n, int64_t ms);

/* "2026-12-03T20:31:05.123+01:00": ISO 8601, local time with its offset. */
void rhc_fmt_iso(int64_t wall_ms, char *out, size_t outsz);

#endif
