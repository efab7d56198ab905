/* relay-https client: SIGINT, SIGTERM, SIGHUP and SIGUSR1 reach the event loop
 * through a pipe; wind_down gives open tunnels a grace time to close after a
 * stop. */
#ifndef RHC_SIGNALS_H
#define RHC_SIGNALS_H

#include "rhc_tunnel.h"

/* Installs the handlers (and ignores SIGPIPE). Returns -1 with errno when the
 * pipe cannot be made. */
int rhc_signals_setup(void);

/* The pipe's read end, for the loop's poll(). */
int rhc_signals_fd(void);

/* Empties the pipe; returns the last signal number read that asks to stop,
 * 0 when none did (SIGUSR1 only asks for statistics). */
int rhc_signals_drain(void);

/* 1 when sig was read from the pipe since the last call for it (then 0 until
 * it comes again). */
int rhc_signals_took(int sig);

/* Fails every tunnel with why, then runs the loop until their close requests are
 * done, the grace time is over or a second signal comes. */
void rhc_wind_down(rhc_ctx *c, const char *why);

#endif
