/* relay-https client: routes (see rhc_route.h). */
#include <stdio.h>
#include <string.h>

#include "rhc_route.h"

void rhc_route_init(struct rhc_route *r, const struct rhc_opts *o, const char *name)
{
    memset(r, 0, sizeof(*r));
    r->o = o;
    snprintf(r->name, sizeof(r->name), "%s", name ? name : "");
    rhc_policy_init(&r->pol);
}
