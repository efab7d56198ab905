/* relay-https client: the local side of a tunnel (a socket, or stdin/stdout):
 * reading up bytes into the up buffer, handing down bytes out, and what the
 * poll loop should wait for on its fds. */
#ifndef RHC_LOCAL_H
#define RHC_LOCAL_H

#include <stddef.h>
#include <sys/socket.h>

#include "rhc_tunnel.h"

struct rhc_local {
    enum rhc_local_kind kind;
    int in_fd, out_fd;
    int in_nb, out_nb;          /* fd is non-blocking: read/write until EAGAIN */
    int in_dry;                 /* in_nb: the last read drained the socket; not read
                                   again before the loop says it is readable */
    int out_shut;               /* local output closed after F */
    int out_drop;               /* stdio: nobody reads stdout any more: down bytes
                                   are dropped (rhc_stdio_output_read) */
    int out_err;
    int out_blocked;            /* last write hit EAGAIN: wait for POLLOUT */
    unsigned char *obuf;        /* bytes the local side could not take yet */
    size_t ocap, ohead, olen;
};

/* Reads what the local side has into the up buffer. */
/* One connection from a local listener, non-blocking and close-on-exec (EINTR and
 * ECONNABORTED are retried): its descriptor, RHC_ACCEPT_NONE when none is waiting,
 * or -1 after logging (EMFILE, ENFILE, ENOBUFS: retry later, not in a loop). */
#define RHC_ACCEPT_NONE (-2)
/* A local listener's queue of connections not yet accepted. A burst (a browser
 * opening its pages through the SOCKS proxy, thousands of tunnels at once)
 * waits there while the loop does a round of TLS handshakes; what overflows is
 * dropped by the kernel and costs the application a SYN sent again a second or
 * more later. The kernel caps it at net.core.somaxconn. */
#define RHC_LISTEN_BACKLOG 4096
int rhc_accept_local(int lfd, struct sockaddr_storage *ss, socklen_t *sl);

void up_fill(rhc_tunnel *t);
/* Hands checked down bytes to the local side (through obuf when non-blocking). */
void deliver(rhc_tunnel *t, const unsigned char *p, size_t n);
/* Local fd writable: flush obuf, then let the response continue. */
void drain_out(rhc_tunnel *t);
/* After F: the local output is closed (stdout: replaced by /dev/null). */
void shut_output(rhc_tunnel *t);

/* poll events wanted on the local fds, and what to do when they come. */
short t_events_in(const rhc_tunnel *t);
short t_events_out(const rhc_tunnel *t);
void t_local_event(rhc_tunnel *t, int fd, short revents);

#endif
