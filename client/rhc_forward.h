/* relay-https client: forward mode, local listeners (one per route: -L or a
 * config file tunnel) whose every accepted connection becomes one tunnel. */
#ifndef RHC_FORWARD_H
#define RHC_FORWARD_H

#include "rhc_opts.h"
#include "rhc_tunnel.h"

/* Listens on every route's address (TCP or a UNIX socket: bound at once),
 * checks the server of each (rhc_check_start), then accepts and forwards until
 * a signal. Returns RHC_EXIT_OK after a signal, RHC_EXIT_LOCAL when one of them
 * cannot listen (then none does), a check's exit code when it failed. */
int rhc_forward_run(rhc_ctx *c, const struct rhc_cmd *cmd);

#endif
