/* relay-https client: a route, what the tunnels of one -L (or of stdio) share:
 * their options (server, target, credentials, transport), what auto learned
 * about the path to that server (struct rhc_policy), and their counters. */
#ifndef RHC_ROUTE_H
#define RHC_ROUTE_H

#include <stdint.h>

#include "rhc_check.h"
#include "rhc_choose.h"
#include "rhc_opts.h"

struct rhc_route {
    const struct rhc_opts *o;
    char name[64];              /* for logs and statistics */
    struct rhc_policy pol;      /* auto: what later sessions of this route start with */
    struct rhc_ratelog fails;   /* failed opens, for one line a while (rhc_check.h) */
};

void rhc_route_init(struct rhc_route *r, const struct rhc_opts *o, const char *name);

#endif
