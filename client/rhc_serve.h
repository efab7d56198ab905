/* relay-https client: serve mode (rendezvous, docs/PROTOCOL.md): keeps
 * listen long-polls waiting on BASE/SERVICE/listen, connects to the local
 * service (--to) for every client the server hands over, and carries it with
 * an ordinary tunnel on the serve leg's session. */
#ifndef RHC_SERVE_H
#define RHC_SERVE_H

#include "rhc_opts.h"
#include "rhc_tunnel.h"

#define RHC_ACCEPTS_DEFAULT 4     /* listens kept waiting */
#define RHC_ACCEPTS_MAX     RH_LISTEN_MAX   /* the server's own cap per service */

/* Serves until a signal (RHC_EXIT_OK), or until the server refuses the
 * listen for good (401/403: RHC_EXIT_AUTH, 404: RHC_EXIT_NO_TARGET). */
int rhc_serve_run(rhc_ctx *c, const struct rhc_opts *o);

/* The option table's setters of --to HOST:PORT and --accepts N. */
struct opt_def;
int rhc_serve_set_to(struct rhc_opts *o, const struct opt_def *d, char *arg);
int rhc_serve_set_accepts(struct rhc_opts *o, const struct opt_def *d, char *arg);

#endif
