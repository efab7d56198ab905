/* Waits that watch the client and the core (see rh_wait.h). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <apr_portable.h>
#include <httpd.h>
#include <http_core.h>

#include "mod_rh_daemon.h"
#include "rh_ipc_client.h"
#include "mod_rh_wait.h"

void rh_watch_init(rh_watch *w, conn_rec *c)
{
    apr_pollfd_t pfd;
    apr_os_sock_t sock;

    w->c = c;
    w->sock = -1;
    w->core = NULL;
    /* HTTP/1.1: the connection's own socket shows the peer's close (POLLRDHUP)
     * while a pipelined request only makes it readable. An HTTP/2 stream has
     * no socket of its own: mod_http2 marks it aborted when it is reset. */
    if (c->master)
        return;
    memset(&pfd, 0, sizeof(pfd));
    if (ap_get_pollfd_from_conn(c, &pfd, NULL) == APR_SUCCESS
        && pfd.desc_type == APR_POLL_SOCKET && apr_os_sock_get(&sock, pfd.desc.s) == APR_SUCCESS)
        w->sock = (int)sock;
}

int rh_core_stuck(const rh_registry *reg)
{
    if (!reg)
        reg = rh_daemon_registry(0);
    return reg && rh_registry_beat_age(reg, rh_now_ms()) > RH_CORE_STUCK_MS;
}

int rh_any_core_stuck(void)
{
    for (unsigned k = 0; k < rh_daemon_cores(); ++k) {
        const rh_registry *old = rh_daemon_old_registry(k);
        if (rh_core_stuck(rh_daemon_registry(k)) || (old && rh_core_stuck(old)))
            return 1;
    }
    return 0;
}

int rh_watch_gone(rh_watch *w)
{
    if (w->c->aborted)
        return 1;
    if (w->sock < 0)
        return 0;
    struct pollfd p = { .fd = w->sock, .events = POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

int rh_watch_poll(rh_watch *w, struct pollfd *pf, int npf, int timeout_ms)
{
    long deadline = timeout_ms >= 0 ? rh_now_ms() + timeout_ms : -1;
    struct pollfd all[8];

    if (npf > 7)
        npf = 7;
    for (;;) {
        int n = 0;
        for (int i = 0; i < npf; ++i) {
            all[n] = pf[i];
            all[n++].revents = 0;
        }
        if (w->sock >= 0)
            all[n++] = (struct pollfd){ .fd = w->sock, .events = POLLRDHUP };
        long left = deadline < 0 ? RH_WAIT_SLICE_MS : deadline - rh_now_ms();
        if (left < 0)
            left = 0;
        int rv = poll(all, (nfds_t)n, left < RH_WAIT_SLICE_MS ? (int)left : RH_WAIT_SLICE_MS);
        if (rv < 0 && errno != EINTR)
            return RH_WAIT_GONE;
        if (w->c->aborted)
            return RH_WAIT_GONE;
        if (w->sock >= 0 && (all[n - 1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            return RH_WAIT_GONE;
        int ready = 0;
        for (int i = 0; i < npf; ++i) {
            pf[i].revents = all[i].revents;
            ready |= all[i].revents != 0;
        }
        if (ready)
            return RH_WAIT_READY;
        if (rh_core_stuck(w->core))
            return RH_WAIT_STUCK;
        if (deadline >= 0 && rh_now_ms() >= deadline)
            return RH_WAIT_TIMEOUT;
    }
}

int rh_watch_line(rh_watch *w, int fd, char *buf, size_t max, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int rv = rh_watch_poll(w, &p, 1, timeout_ms);
    if (rv != RH_WAIT_READY)
        return rv;
    /* the core writes a line at once: what is there is (nearly) all of it */
    int n = rh_ipc_read_line(fd, buf, max, 1000);
    return n < 0 ? RH_WAIT_STUCK : n;
}
