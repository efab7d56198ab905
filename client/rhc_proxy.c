/* relay-https client: the proxy in use (see rhc_proxy.h). libcurl decides on its
 * own from the environment; this only says what it will decide, for the log,
 * the statistics and the error hints. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rhc_proxy.h"

/* Where the authority of a URL starts and ends (a proxy may be given without
 * a scheme: "host:3128"). */
static const char *authority(const char *url, const char **end)
{
    const char *s = strstr(url, "://");

    s = s ? s + 3 : url;
    *end = s + strcspn(s, "/?#");
    return s;
}

void rhc_url_host(const char *url, char *out, size_t outsz)
{
    const char *end, *s = authority(url, &end);
    const char *at = NULL;
    size_t n;

    for (const char *p = s; p < end; ++p)
        if (*p == '@')
            at = p;
    if (at)
        s = at + 1;
    if (*s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        ++s;
        n = rb ? (size_t)(rb - s) : (size_t)(end - s);
    } else {
        const char *colon = memchr(s, ':', (size_t)(end - s));
        n = colon ? (size_t)(colon - s) : (size_t)(end - s);
    }
    snprintf(out, outsz, "%.*s", (int)n, s);
}

void rhc_url_mask(const char *url, char *out, size_t outsz)
{
    const char *end, *s = authority(url, &end);
    const char *at = NULL, *colon;

    for (const char *p = s; p < end; ++p)
        if (*p == '@')
            at = p;
    colon = at ? memchr(s, ':', (size_t)(at - s)) : NULL;
    if (!colon) {
        snprintf(out, outsz, "%s", url);
        return;
    }
    snprintf(out, outsz, "%.*s:***%s", (int)(colon - url), url, at);
}

/* addr (text) inside net/bits; both the same family. */
static int ip_in(const char *addr, const char *net, int bits)
{
    unsigned char a[16], b[16];
    int len = strchr(addr, ':') ? 16 : 4;
    int fam = len == 16 ? AF_INET6 : AF_INET;

    if (inet_pton(fam, addr, a) != 1 || inet_pton(fam, net, b) != 1)
        return 0;
    if (bits < 0 || bits > 8 * len)
        bits = 8 * len;
    for (int i = 0; i < len && bits > 0; ++i, bits -= 8) {
        unsigned char m = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((a[i] & m) != (b[i] & m))
            return 0;
    }
    return 1;
}

/* One no_proxy entry (len bytes at e) against host. */
static int entry_match(const char *e, size_t len, const char *host)
{
    char tok[256];
    size_t hl = strlen(host);

    if (len && *e == '.')
        ++e, --len;
    if (len >= 2 && e[0] == '[' && e[len - 1] == ']')
        ++e, len -= 2;
    if (!len || len >= sizeof(tok))
        return 0;
    memcpy(tok, e, len);
    tok[len] = '\0';
    char *slash = strchr(tok, '/');
    if (slash) {
        *slash = '\0';
        return ip_in(host, tok, atoi(slash + 1));
    }
    if (len == hl)
        return !strcasecmp(tok, host);
    return len < hl && host[hl - len - 1] == '.' && !strcasecmp(tok, host + hl - len);
}

int rhc_no_proxy_match(const char *list, const char *host)
{
    const char *sep = ", \t";

    if (!list || !*host)
        return 0;
    if (!strcmp(list, "*"))
        return 1;
    for (const char *p = list; *p;) {
        p += strspn(p, sep);
        size_t n = strcspn(p, sep);
        if (n && entry_match(p, n, host))
            return 1;
        p += n;
    }
    return 0;
}

/* no_proxy or NO_PROXY, whichever libcurl reads (the lower case first). */
static const char *no_proxy_var(const char **name)
{
    const char *v = getenv("no_proxy");

    *name = "no_proxy";
    if (!v) {
        v = getenv("NO_PROXY");
        *name = "NO_PROXY";
    }
    return v;
}

const char *rhc_proxy_in_use(const struct rhc_opts *o, const char **from)
{
    static const char *const https_vars[] = { "https_proxy", "HTTPS_PROXY", "all_proxy",
                                              "ALL_PROXY", NULL };
    static const char *const http_vars[] = { "http_proxy", "all_proxy", "ALL_PROXY", NULL };
    const char *const *vars = strncasecmp(o->base_url, "https:", 6) ? http_vars : https_vars;
    const char *src = "", *np_name, *proxy = NULL;
    char host[256];

    if (o->proxy) {
        src = "-x";
        proxy = *o->proxy ? o->proxy : NULL;    /* -x "": none, whatever is set */
    } else {
        for (; *vars && !proxy; ++vars) {
            const char *v = getenv(*vars);
            if (v && *v) {
                proxy = v;
                src = *vars;
            }
        }
    }
    rhc_url_host(o->base_url, host, sizeof(host));
    /* libcurl lets no_proxy win over -x as well */
    if (proxy && rhc_no_proxy_match(no_proxy_var(&np_name), host)) {
        proxy = NULL;
        src = np_name;
    }
    if (from)
        *from = src;
    return proxy;
}

void rhc_proxy_describe(const struct rhc_opts *o, char *out, size_t outsz)
{
    const char *from;
    const char *p = rhc_proxy_in_use(o, &from);
    char masked[512], host[256];

    if (p) {
        rhc_url_mask(p, masked, sizeof(masked));
        snprintf(out, outsz, "%s (from %s%s)", masked, from,
                 o->proxy_user ? "; credentials from -U" : "");
    } else if (!strcasecmp(from, "no_proxy")) {
        rhc_url_host(o->base_url, host, sizeof(host));
        snprintf(out, outsz, "none (%s matches %s)", from, host);
    } else if (*from) {
        snprintf(out, outsz, "none (-x \"\")");
    } else {
        snprintf(out, outsz, "none (no -x; no %s, all_proxy or ALL_PROXY set)",
                 strncasecmp(o->base_url, "https:", 6) ? "http_proxy" : "https_proxy, HTTPS_PROXY");
    }
}
