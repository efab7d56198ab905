/* relay-https client: signals. The handler only writes the signal number into a
 * pipe that the event loop polls, so a signal can neither be missed by poll()
 * nor run code in the middle of libcurl. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_signals.h"

#define STOP_GRACE_MS     5000     /* time for close requests after a signal */

static int sig_pipe[2] = { -1, -1 };
static unsigned long took;  /* signals read from the pipe and not yet asked for */

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;

    if (write(sig_pipe[1], &b, 1) < 0) {
        /* pipe full: a signal is already pending, that is enough */
    }
    errno = saved;
}

int rhc_signals_setup(void)
{
    struct sigaction sa;

    if (pipe(sig_pipe) < 0)
        return -1;
    for (int i = 0; i < 2; ++i) {
        fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);   /* ssh sends it to its ProxyCommand */
    sigaction(SIGUSR1, &sa, NULL);  /* statistics (rhc_signals_took) */
    return 0;
}

int rhc_signals_fd(void)
{
    return sig_pipe[0];
}

int rhc_signals_drain(void)
{
    unsigned char b[16];
    ssize_t n;
    int got = 0;

    while ((n = read(sig_pipe[0], b, sizeof(b))) > 0)
        for (ssize_t i = 0; i < n; ++i) {
            if (b[i] < 8 * sizeof(took))
                took |= 1ul << b[i];
            if (b[i] != SIGUSR1)    /* asks for statistics, does not stop */
                got = b[i];
        }
    return got;
}

int rhc_signals_took(int sig)
{
    unsigned long bit = sig >= 0 && (size_t)sig < 8 * sizeof(took) ? 1ul << sig : 0;
    int yes = (took & bit) != 0;

    took &= ~bit;
    return yes;
}

void rhc_wind_down(rhc_ctx *c, const char *why)
{
    int64_t until = rh_now_ms() + STOP_GRACE_MS;

    rhc_ctx_abort_all(c, why);
    while (rhc_ctx_pending(c) > 0) {
        struct pollfd ex = { .fd = sig_pipe[0], .events = POLLIN };
        int64_t left = until - rh_now_ms();
        if (left <= 0)
            break;
        if (rhc_ctx_step(c, &ex, 1, (long)left) < 0)
            break;
        if (ex.revents && rhc_signals_drain())
            break;                  /* second signal: leave now */
    }
}
