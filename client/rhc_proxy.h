/* relay-https client: which proxy libcurl uses for the server URL and where that
 * came from (-x, the environment, or none because no_proxy matches), told
 * without the proxy's password. */
#ifndef RHC_PROXY_H
#define RHC_PROXY_H

#include <stddef.h>

#include "rhc_opts.h"

/* The proxy for o->base_url as libcurl picks it: -x, else https_proxy,
 * HTTPS_PROXY, all_proxy, ALL_PROXY (http_proxy, all_proxy, ALL_PROXY for an
 * http:// URL); no_proxy (or NO_PROXY) matching the host overrides both. NULL
 * when there is none; *from (when from is not NULL) names the source: "-x",
 * the variable, "no_proxy", "NO_PROXY", or "" when nothing is set. */
const char *rhc_proxy_in_use(const struct rhc_opts *o, const char **from);

/* libcurl's no_proxy rule: "*", or a list (commas, spaces) of host names that
 * match the host or a domain it is in (a leading dot is the same), and IP
 * addresses, with /BITS for a network. 1 when host matches. */
int rhc_no_proxy_match(const char *list, const char *host);

/* The host of a URL ("[::1]" -> "::1"); "" when there is none. */
void rhc_url_host(const char *url, char *out, size_t outsz);

/* The URL with the password of a user:password@ masked as ***. */
void rhc_url_mask(const char *url, char *out, size_t outsz);

/* One line for -v and the statistics: "http://u:***@proxy:3128 (from -x)",
 * "none (no_proxy matches example.com)", ... */
void rhc_proxy_describe(const struct rhc_opts *o, char *out, size_t outsz);

#endif
