/* relay-https client: stdio mode, one tunnel between stdin/stdout and the target
 * (ssh ProxyCommand). */
#ifndef RHC_STDIO_H
#define RHC_STDIO_H

#include "rhc_tunnel.h"

/* Runs the one tunnel to its end; returns the exit code (an rhc_exit value). */
int rhc_stdio_run(rhc_ctx *c, const struct rhc_opts *o);

#endif
