/* relay-https client: logging to stderr (see rhc_log.h). */
#include <stdio.h>
#include <time.h>

#include "rhc_log.h"

int rhc_verbose;

int64_t rhc_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rhc_log_stamp(int64_t ms, char *out, size_t outsz)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char day[32];

    if (!localtime_r(&s, &tm) || !strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S", &tm))
        day[0] = '\0';
    snprintf(out, outsz, "%s.%03d", day, (int)(ms % 1000));
}

void rhc_vlog(int level, const char *fmt, va_list ap)
{
    char line[1024], stamp[40];

    if (level > rhc_verbose)
        return;
    /* One write per line so that lines of a busy forward do not interleave. */
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (rhc_verbose > 0) {
        rhc_log_stamp(rhc_wall_ms(), stamp, sizeof(stamp));
        fprintf(stderr, "%s relay-https: %.*s", stamp, n, line);
    } else {
        fprintf(stderr, "relay-https: %.*s", n, line);
    }
    fflush(stderr);
}

void rhc_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(level, fmt, ap);
    va_end(ap);
}
