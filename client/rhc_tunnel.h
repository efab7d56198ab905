/* relay-https client: tunnel sessions over one libcurl multi handle, driven by
 * one poll() loop (curl_multi_socket_action) that also watches the local fds. */
#ifndef RHC_TUNNEL_H
#define RHC_TUNNEL_H

#include <poll.h>
#include <stddef.h>

#include "rhc_opts.h"

typedef struct rhc_ctx rhc_ctx;
typedef struct rhc_tunnel rhc_tunnel;

enum rhc_local_kind {
    RHC_LOCAL_SOCKET,   /* forward: one owned non-blocking socket, closed at the end
                           (with RST when the session failed) */
    RHC_LOCAL_STDIO     /* stdio: fd 0 in, fd 1 out; fd 1 is replaced by /dev/null
                           when the server finishes (see rhc_stdio_prepare) */
};

/* Called once when a tunnel ends, code is an rhc_exit value (0: clean end).
 * The tunnel is freed right after. */
typedef void (*rhc_done_fn)(void *arg, int code);

rhc_ctx *rhc_ctx_new(const struct rhc_opts *o);
void rhc_ctx_free(rhc_ctx *c);

/* Starts a session (POST open). Never returns NULL for RHC_LOCAL_SOCKET without
 * having closed fd; on NULL nothing was started (out of memory). */
struct rhc_route;
rhc_tunnel *rhc_tunnel_start(rhc_ctx *c, struct rhc_route *route, int in_fd, int out_fd, enum rhc_local_kind kind,
                             const char *label, rhc_done_fn done, void *arg);

/* proxy mode: how the open of a destination ended, told to the local side's
 * protocol (SOCKS5, HTTP CONNECT) before any byte flows. status: the
 * server's HTTP status (0: none came), reason its Relay-Reason, msg what went
 * wrong for people. */
struct rhc_open_result {
    int ok;
    long status;
    const char *reason;
    const char *msg;
};
/* Answers the local side on fd; on success -1 fails the tunnel (the answer
 * could not be written). Called exactly once per tunnel. */
typedef int (*rhc_greet_fn)(void *arg, int fd, const struct rhc_open_result *res);

/* proxy mode: a tunnel to dest (HOST:PORT, sent as Relay-Destination) on the
 * local socket fd (closed on failure too); greet answers the local client when
 * the open ended, before any down byte. */
rhc_tunnel *rhc_tunnel_start_to(rhc_ctx *c, struct rhc_route *route, int fd, const char *label,
                                const char *dest, rhc_greet_fn greet, void *arg);

/* proxy mode, SOCKS5 UDP ASSOCIATE: a datagram tunnel (Relay-Datagram) to
 * dest on fd (a socketpair end, closed on failure too); done as for
 * rhc_tunnel_start. */
rhc_tunnel *rhc_tunnel_start_dgram_to(rhc_ctx *c, struct rhc_route *route, int fd,
                                      const char *label, const char *dest, rhc_done_fn done,
                                      void *arg);

/* serve mode: a tunnel on a session the server already made (the serve leg a
 * listen's answer named), local socket fd (closed on failure too). */
struct rhc_req;
rhc_tunnel *rhc_tunnel_accept(rhc_ctx *c, struct rhc_route *route, int fd, const char *label,
                              struct rhc_req *answer);

size_t rhc_ctx_tunnels(const rhc_ctx *c);   /* live tunnels */
size_t rhc_ctx_pending(const rhc_ctx *c);   /* live tunnels + best-effort close requests */

/* Fails every live tunnel with the given reason (they send close requests). */
void rhc_ctx_abort_all(rhc_ctx *c, const char *why);

/* One round of the event loop: polls the caller's extra fds (their revents are
 * set on return) together with the tunnels' local fds and curl's sockets, waits at
 * most max_wait_ms (-1: until something happens or a timer is due), then runs
 * everything that is ready. Returns -1 only when poll() itself fails. */
int rhc_ctx_step(rhc_ctx *c, struct pollfd *extra, size_t nextra, long max_wait_ms);

/* stdio mode: makes fd 0 and 1 non-blocking when they are pipes or sockets
 * (ttys and files stay blocking and are only read when poll says so). Returns 0,
 * or an errno value when a descriptor is unusable. rhc_stdio_restore puts the
 * original flags back (call it before exiting). */
int rhc_stdio_prepare(void);
void rhc_stdio_restore(void);

/* stdio, after a signal: 1 when the local side has let go of the tunnel, its
 * stdin at its end or its writer gone (ssh closes its pipes, then sends SIGHUP). */
int rhc_stdio_input_closed(const rhc_tunnel *t);
/* 1 while someone reads stdout; else 0, and from now on down bytes are dropped
 * (the tunnel still waits for the server's end). */
int rhc_stdio_output_read(rhc_tunnel *t);

/* Ends a tunnel now, with code 0 and no message: the local side is done and the
 * server's end is not worth waiting for any longer. A session the server has not
 * finished gets a close request (the server resets it). */
void rhc_tunnel_end_quietly(rhc_tunnel *t);

#endif
