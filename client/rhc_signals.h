/* relay-https client: SIGINT, SIGTERM and SIGHUP reach the event loop through a
 * pipe; wind_down gives open tunnels a grace time to close after one. */
#ifndef RHC_SIGNALS_H
#define RHC_SIGNALS_H

#include "rhc_tunnel.h"

/* Installs the handlers (and ignores SIGPIPE). Returns -1 with errno when the
 * pipe cannot be made. */
int rhc_signals_setup(void);

/* The pipe's read end, for the loop's poll(). */
int rhc_signals_fd(void);

/* Empties the pipe; returns the last signal number read, 0 when none was. */
int rhc_signals_drain(void);

/* Fails every tunnel with why, then runs the loop until their close requests are
 * done, the grace time is over or a second signal comes. */
void rhc_wind_down(rhc_ctx *c, const char *why);

#endif
