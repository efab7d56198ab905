/* relay-https client: the credentials of a route. -u USER:PASS and -U USER:PASS
 * are used as given; -u USER gets its password from .netrc (--netrc,
 * --netrc-file), RELAY_HTTPS_PASSWORD or a prompt on the terminal; without -u,
 * RELAY_HTTPS_USER, then .netrc. -U USER: RELAY_HTTPS_PROXY_PASSWORD or a
 * prompt; without -U, RELAY_HTTPS_PROXY_USER. */
#ifndef RHC_CREDS_H
#define RHC_CREDS_H

#include "rhc_opts.h"

/* Passwords asked on the terminal, so that routes of the same user ask once. */
struct rhc_asked {
    const char *server, *proxy;
};

/* Completes o->user and o->proxy_user (strings kept by cmd). Returns -1 to go
 * on, or an exit code after a message (RHC_EXIT_USAGE). */
int rhc_creds_resolve(struct rhc_cmd *cmd, struct rhc_opts *o, struct rhc_asked *asked);

#endif
