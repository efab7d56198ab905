/* Shared helpers (see rh_util.h). */
#include <time.h>

#include "rh_proto.h"
#include "rh_util.h"

int64_t rh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rh_parse_u64(const char *s, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    size_t i;

    if (!s)
        return -1;
    for (i = 0; i < n && s[i]; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (i == 0 || (i < n && n != (size_t)-1))
        return -1;   /* empty, or a NUL inside the n bytes */
    *v = x;
    return 0;
}

int rh_valid_target_name(const char *name)
{
    size_t n = 0;

    if (!name || name[0] == '.')
        return 0;   /* "." and ".." are path steps, not names */
    for (; name[n]; ++n) {
        char ch = name[n];
        if (n >= RH_TARGET_NAME_MAX)
            return 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return n > 0;
}
