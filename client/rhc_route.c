/* relay-https client: routes (see rhc_route.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rhc_proxy.h"
#include "rhc_route.h"
#include "rhc_tunnel_int.h"

void rhc_route_init(struct rhc_route *r, const struct rhc_opts *o, const char *name)
{
    memset(r, 0, sizeof(*r));
    r->o = o;
    snprintf(r->name, sizeof(r->name), "%s", name ? name : "");
    rhc_policy_init(&r->pol);
}

struct rhc_route *rhc_ctx_add_route(rhc_ctx *c, const struct rhc_opts *o, const char *name)
{
    struct rhc_route *r = malloc(sizeof(*r)), **at = &c->routes;
    char proxy[640];

    if (!r)
        return NULL;
    rhc_route_init(r, o, name);
    if (rhc_watch_init(r) < 0) {
        free(r);
        return NULL;
    }
    while (*at)
        at = &(*at)->next;
    *at = r;
    if (rhc_verbose > 0) {
        rhc_proxy_describe(o, proxy, sizeof(proxy));
        rhc_info("%s%sproxy: %s", r->name, r->name[0] ? ": " : "", proxy);
    }
    return r;
}

struct rhc_route *rhc_ctx_routes(const rhc_ctx *c)
{
    return c->routes;
}

void rhc_ctx_free_routes(rhc_ctx *c)
{
    while (c->routes) {
        struct rhc_route *r = c->routes;
        c->routes = r->next;
        rhc_watch_free(r);
        free(r);
    }
}
