/* relay-https client: stdio mode. One tunnel carries fd 0 and fd 1; its end (or a
 * signal) ends the process, with the tunnel's exit code. The descriptors' flags
 * are set and put back by rhc_stdio_prepare/restore (rhc_local.c). */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "rh_util.h"

#include "rhc_opts.h"
#include "rhc_route.h"
#include "rhc_signals.h"
#include "rhc_stats.h"
#include "rhc_stdio.h"

static void stdio_done(void *arg, int code)
{
    *(int *)arg = code;
}

int rhc_stdio_run(rhc_ctx *c, const struct rhc_opts *o)
{
    struct rhc_route *route = rhc_ctx_add_route(c, o, "stdio");
    int code = -1;
    int err = rhc_stdio_prepare();

    if (err) {
        rhc_err("stdin/stdout: %s", strerror(err));
        code = RHC_EXIT_LOCAL;
        goto leave;
    }
    if (!route || !rhc_tunnel_start(c, route, 0, 1, RHC_LOCAL_STDIO, "", stdio_done, &code)) {
        rhc_err("out of memory");
        code = RHC_EXIT_ERROR;
        goto leave;
    }
    /* After the tunnel ends, a best-effort close request may still run (it has
     * its own short timeout). */
    while (code < 0 || rhc_ctx_pending(c) > 0) {
        struct pollfd ex = { .fd = rhc_signals_fd(), .events = POLLIN };
        long wait = rhc_stats_tick(c, rh_now_ms(), rhc_signals_took(SIGUSR1), -1);
        if (rhc_ctx_step(c, &ex, 1, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            if (code < 0)
                code = RHC_EXIT_ERROR;
            break;
        }
        if (ex.revents && rhc_signals_drain()) {
            rhc_wind_down(c, "stopped by a signal");
            if (code < 0)
                code = RHC_EXIT_ERROR;
            break;
        }
    }
leave:
    rhc_stdio_restore();
    return code;
}
