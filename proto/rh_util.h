/* Small helpers that the core, the glue and the client share: one copy each. */
#ifndef RH_UTIL_H
#define RH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds on the monotonic clock. */
int64_t rh_now_ms(void);

/* Parses n bytes of s (n = (size_t)-1: up to the NUL) as a decimal u64: digits
 * only, at least one, no sign, no space, no overflow. Returns 0 and sets *v, or
 * -1 (and leaves *v alone). */
int rh_parse_u64(const char *s, size_t n, uint64_t *v);

/* A target name: 1..RH_TARGET_NAME_MAX of [A-Za-z0-9._-], not starting with
 * '.' (it is a URL path segment). Returns 1 when valid. */
int rh_valid_target_name(const char *name);

#endif
