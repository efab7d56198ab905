/* relay-https client: stdio mode. One tunnel carries fd 0 and fd 1; its end (or a
 * signal) ends the process, with the tunnel's exit code. The descriptors' flags
 * are set and put back by rhc_stdio_prepare/restore (rhc_local.c).
 *
 * A signal is not always an interruption. ssh ends a session by closing its
 * pipes to the ProxyCommand and sending it SIGHUP at once, without waiting for
 * it. So a signal that finds stdin at its end (or its writer gone) lets the
 * session end the clean way: the F goes up, the server's end comes down, the
 * session is closed, all within END_GRACE_MS; quietly, with exit code 0, unless
 * someone still reads stdout and the server's end did not come in time (then
 * bytes may be missing: a message and 1). A signal while stdin is open stops the
 * tunnel with a message and 1, as does a second signal while the first one is
 * still being honoured with a wait. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "rh_util.h"

#include "rhc_opts.h"
#include "rhc_route.h"
#include "rhc_signals.h"
#include "rhc_stats.h"
#include "rhc_stdio.h"

#define END_GRACE_MS     1500   /* after the signal: the session's own end */
#define CLOSE_GRACE_MS   500    /* ... then the close request (ssh does not wait) */

struct stdio_run {
    rhc_tunnel *t;              /* NULL once it ended */
    int code;                   /* the tunnel's exit code, -1 until it ended */
    int64_t until;              /* a signal came: leave by then, else -1 */
    int out_read;               /* ... and someone still reads stdout */
};

static void stdio_done(void *arg, int code)
{
    struct stdio_run *s = arg;

    s->code = code;
    s->t = NULL;
}

static void interrupted(rhc_ctx *c, struct stdio_run *s)
{
    rhc_wind_down(c, "stopped by a signal");
    if (s->code < 0)
        s->code = RHC_EXIT_ERROR;
}

/* A first signal. Returns 0 when it is an interruption (wound down), else 1:
 * the loop goes on until the session's end or until s->until. */
static int on_signal(rhc_ctx *c, struct stdio_run *s)
{
    if (s->t && !rhc_stdio_input_closed(s->t)) {
        interrupted(c, s);
        return 0;
    }
    s->until = rh_now_ms() + END_GRACE_MS;
    s->out_read = s->t && rhc_stdio_output_read(s->t);
    return 1;
}

/* The wait after a signal is over (or a second signal came): a session still
 * carrying down bytes to a reader is cut, one nobody reads any more ends. */
static void give_up(rhc_ctx *c, struct stdio_run *s)
{
    if (!s->t)
        return;
    if (s->out_read && rhc_stdio_output_read(s->t)) {
        interrupted(c, s);
        return;
    }
    rhc_tunnel_end_quietly(s->t);
}

/* Runs the loop until the tunnel and its close request are done, or until the
 * bounded end after a signal. */
static void stdio_loop(rhc_ctx *c, struct stdio_run *s)
{
    while (s->code < 0 || rhc_ctx_pending(c) > 0) {
        struct pollfd ex = { .fd = rhc_signals_fd(), .events = POLLIN };
        long wait = -1;
        if (s->until >= 0) {
            int64_t left = s->until - rh_now_ms();
            if (left <= 0) {
                if (s->code >= 0)
                    return;             /* close requests late: not our business */
                give_up(c, s);
                s->until = rh_now_ms() + CLOSE_GRACE_MS;
                continue;
            }
            wait = (long)left;
        }
        wait = rhc_stats_tick(c, rh_now_ms(), rhc_signals_took(SIGUSR1), wait);
        if (rhc_ctx_step(c, &ex, 1, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            if (s->code < 0)
                s->code = RHC_EXIT_ERROR;
            return;
        }
        if (!ex.revents || !rhc_signals_drain())
            continue;
        if (s->until >= 0)
            s->until = 0;               /* a second signal: no more waiting */
        else if (!on_signal(c, s))
            return;
    }
}

int rhc_stdio_run(rhc_ctx *c, const struct rhc_opts *o)
{
    struct rhc_route *route = rhc_ctx_add_route(c, o, "stdio");
    struct stdio_run s = { .t = NULL, .code = -1, .until = -1, .out_read = 0 };
    int err = rhc_stdio_prepare();

    if (err) {
        rhc_err("stdin/stdout: %s", strerror(err));
        s.code = RHC_EXIT_LOCAL;
        goto leave;
    }
    s.t = route ? rhc_tunnel_start(c, route, 0, 1, RHC_LOCAL_STDIO, "", stdio_done, &s) : NULL;
    if (!s.t) {
        rhc_err("out of memory");
        s.code = RHC_EXIT_ERROR;
        goto leave;
    }
    /* After the tunnel ends, a best-effort close request may still run (it has
     * its own short timeout). */
    stdio_loop(c, &s);
leave:
    rhc_stdio_restore();
    return s.code;
}
