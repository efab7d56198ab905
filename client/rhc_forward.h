/* relay-https client: forward mode, local listeners (one per route: -L or a
 * config file tunnel) whose every accepted connection becomes one tunnel. */
#ifndef RHC_FORWARD_H
#define RHC_FORWARD_H

#include <sys/socket.h>

#include "rhc_opts.h"
#include "rhc_tunnel.h"

/* Listens on every route's address (TCP or a UNIX socket: bound at once),
 * checks the server of each (rhc_check_start), then accepts and forwards until
 * a signal. Returns RHC_EXIT_OK after a signal, RHC_EXIT_LOCAL when one of them
 * cannot listen (then none does), a check's exit code when it failed. */
int rhc_forward_run(rhc_ctx *c, const struct rhc_cmd *cmd);

/* What forward and proxy share. A TCP socket bound to the route's -L address,
 * not listening yet (bound: its address as text), or -1 (logged). */
int rhc_bound_socket(const struct rhc_opts *o, char *bound, size_t boundsz);
/* A socket address as text: ADDR:PORT, [V6]:PORT (numeric). */
void rhc_addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t outsz);
/* Raises the descriptor limit; the tunnels that fit at once. */
size_t rhc_raise_fd_limit(void);

#endif
