/* relay-https client: logging to stderr. Every line is "relay-https: ..."; with
 * -v (rhc_verbose > 0) a local timestamp with milliseconds goes in front, so
 * that a verbose log tells when things happened. */
#ifndef RHC_LOG_H
#define RHC_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

extern int rhc_verbose;

void rhc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rhc_vlog(int level, const char *fmt, va_list ap);
#define rhc_err(...)  rhc_log(0, __VA_ARGS__)
#define rhc_info(...) rhc_log(1, __VA_ARGS__)
#define rhc_debug(...) rhc_log(2, __VA_ARGS__)

/* Wall-clock time in milliseconds since the epoch. */
int64_t rhc_wall_ms(void);

/* "2026-12-03 20:31:05.123" (local time) for ms since the epoch. */
void rhc_log_stamp(int64_t ms, char *out, size_t outsz);

#endif
