/* relay-https client: forward mode, a local listener whose every accepted
 * connection becomes one tunnel. */
#ifndef RHC_FORWARD_H
#define RHC_FORWARD_H

#include "rhc_opts.h"
#include "rhc_tunnel.h"

/* Binds o->listen_host:listen_port, checks the server (rhc_check_start), then
 * listens and forwards until a signal. Returns RHC_EXIT_OK after a signal,
 * RHC_EXIT_LOCAL when it cannot listen, the check's exit code when it failed. */
int rhc_forward_run(rhc_ctx *c, const struct rhc_opts *o);

#endif
