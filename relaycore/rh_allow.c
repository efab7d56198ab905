/* RelayAllow rules: parsing, and the checks of a destination's name and of
 * the address it resolved to (see rh_allow.h). Pure functions. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rh_allow.h"
#include "rh_util.h"

/* The blocks an address is internal by; the first that holds it names its
 * class. IPv4-mapped IPv6 addresses arrive as IPv4 (rh_addr_parse). */
static const struct {
    int family;
    unsigned char net[16];
    unsigned prefix;
    const char *class_;
} internal[] = {
    { 4, { 0 }, 8, "unspecified" },
    { 4, { 10 }, 8, "private" },
    { 4, { 100, 64 }, 10, "private" },          /* shared address space (CGNAT) */
    { 4, { 127 }, 8, "loopback" },
    { 4, { 169, 254 }, 16, "link-local" },
    { 4, { 172, 16 }, 12, "private" },
    { 4, { 192, 168 }, 16, "private" },
    { 4, { 224 }, 4, "multicast" },
    { 4, { 240 }, 4, "reserved" },               /* and the broadcast address */
    { 6, { 0 }, 128, "unspecified" },
    { 6, { [15] = 1 }, 128, "loopback" },
    { 6, { 0 }, 96, "reserved" },                /* IPv4-compatible (deprecated) */
    { 6, { 0xfe, 0x80 }, 10, "link-local" },
    { 6, { 0xfc }, 7, "private" },               /* unique local */
    { 6, { 0xff }, 8, "multicast" },
};

static unsigned addr_bits(const rh_addr *a)
{
    return a->family == 4 ? 32 : 128;
}

/* Do the first prefix bits of a and net agree? */
static int in_block(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, whole) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (net[whole] & mask);
}

int rh_addr_parse(const char *text, rh_addr *out)
{
    char buf[64];
    size_t n = strlen(text);
    static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

    memset(out, 0, sizeof(*out));
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return -1;
        memcpy(buf, text + 1, n - 2);
        buf[n - 2] = '\0';
        text = buf;
    }
    if (text != buf && inet_pton(AF_INET, text, out->a) == 1) {   /* [v4] is no form */
        out->family = 4;
        return 0;
    }
    if (text != buf && strchr(text, '['))
        return -1;
    if (inet_pton(AF_INET6, text, out->a) != 1)
        return -1;
    out->family = 6;
    if (!memcmp(out->a, mapped, sizeof(mapped))) {
        memmove(out->a, out->a + 12, 4);
        memset(out->a + 4, 0, 12);
        out->family = 4;
    }
    return 0;
}

void rh_addr_format(const rh_addr *a, char *out, size_t outlen)
{
    char buf[INET6_ADDRSTRLEN];
    if (!inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->a, buf, sizeof(buf)))
        snprintf(buf, sizeof(buf), "?");
    snprintf(out, outlen, "%s", buf);
}

const char *rh_addr_class(const rh_addr *a, unsigned *prefix)
{
    for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); ++i)
        if (internal[i].family == a->family && in_block(a->a, internal[i].net, internal[i].prefix)) {
            if (prefix)
                *prefix = internal[i].prefix;
            return internal[i].class_;
        }
    return NULL;
}

static int is_label_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
           || ch == '-' || ch == '_';
}

int rh_allow_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.')
        --n;
    if (n == 0 || n > RH_HOST_MAX)
        return 0;
    size_t start = 0;
    int digits_only = 1;
    for (size_t i = 0; i <= n; ++i) {
        if (i == n || name[i] == '.') {
            size_t len = i - start;
            if (len == 0 || len > 63 || name[start] == '-' || name[i - 1] == '-')
                return 0;
            if (i == n)
                return !digits_only;
            start = i + 1;
            digits_only = 1;
            continue;
        }
        if (!is_label_char(name[i]))
            return 0;
        if (name[i] < '0' || name[i] > '9')
            digits_only = 0;
    }
    return 0;
}

int rh_allow_split_dest(const char *dest, char *host, size_t hostlen, unsigned *port)
{
    const char *colon = strrchr(dest, ':');
    uint64_t p;
    size_t hl;

    if (!colon || rh_parse_u64(colon + 1, (size_t)-1, &p) || p < 1 || p > 65535)
        return -1;
    hl = (size_t)(colon - dest);
    if (hl >= 2 && dest[0] == '[' && dest[hl - 1] == ']') {
        ++dest;
        hl -= 2;
        if (!memchr(dest, ':', hl))
            return -1;   /* brackets are for IPv6 */
    } else if (memchr(dest, ':', hl) || memchr(dest, '[', hl)) {
        return -1;   /* an IPv6 address goes in brackets */
    }
    if (hl == 0 || hl >= hostlen || memchr(dest, ' ', hl))
        return -1;
    memcpy(host, dest, hl);
    host[hl] = '\0';
    *port = (unsigned)p;
    return 0;
}

/* name in lower case, without a trailing dot, into out (RH_HOST_MAX + 2) */
static void lower_name(const char *name, char *out)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.')
        --n;
    for (size_t i = 0; i < n && i <= RH_HOST_MAX; ++i)
        out[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    out[n <= RH_HOST_MAX ? n : RH_HOST_MAX] = '\0';
}

/* One port or range "N" / "N-M" of a list, "udp/" or "tcp/" in front; 0 or -1. */
static int parse_range(const char *s, size_t len, uint32_t *lo, uint32_t *hi)
{
    uint32_t proto = 0;
    if (len > 4 && (!strncmp(s, "udp/", 4) || !strncmp(s, "tcp/", 4))) {
        proto = s[0] == 'u' ? RH_ALLOW_UDP : 0;
        s += 4;
        len -= 4;
    }
    const char *dash = memchr(s, '-', len);
    uint64_t a, b;
    if (dash) {
        if (rh_parse_u64(s, (size_t)(dash - s), &a) || rh_parse_u64(dash + 1,
                                                                    len - (size_t)(dash - s) - 1, &b))
            return -1;
    } else if (rh_parse_u64(s, len, &a)) {
        return -1;
    } else {
        b = a;
    }
    if (a < 1 || b > 65535 || a > b)
        return -1;
    *lo = (uint32_t)a | proto;
    *hi = (uint32_t)b | proto;
    return 0;
}

static int parse_ports(rh_allow_rule *r, const char *ports, char *err, size_t errlen)
{
    const char *p = ports;
    for (;;) {
        size_t len = strcspn(p, ",");
        if (r->nports == RH_ALLOW_PORTS_MAX) {
            snprintf(err, errlen, "more than %d port ranges in '%s': use another RelayAllow",
                     RH_ALLOW_PORTS_MAX, ports);
            return -1;
        }
        if (parse_range(p, len, &r->ports[r->nports].lo, &r->ports[r->nports].hi)) {
            snprintf(err, errlen, "'%s' is not a port list (a port 1-65535, a range N-M, "
                     "udp/ in front for UDP, or a comma list: 22,80,8000-8099,udp/53)", ports);
            return -1;
        }
        ++r->nports;
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

/* "ADDR/PREFIX" or "ADDR" into a NET rule. */
static int parse_net(rh_allow_rule *r, const char *host, char *err, size_t errlen)
{
    char buf[80];
    const char *slash = strchr(host, '/');
    size_t alen = slash ? (size_t)(slash - host) : strlen(host);
    uint64_t prefix;

    if (alen >= sizeof(buf))
        goto bad;
    memcpy(buf, host, alen);
    buf[alen] = '\0';
    if (rh_addr_parse(buf, &r->net) != 0)
        goto bad;
    int mapped = r->net.family == 4 && strchr(buf, ':');
    unsigned bits = addr_bits(&r->net);
    if (!slash) {
        prefix = bits;
    } else if (rh_parse_u64(slash + 1, (size_t)-1, &prefix) || prefix > (mapped ? 128 : bits)
               || (mapped && prefix < 96)) {
        goto bad;
    } else if (mapped) {
        prefix -= 96;
    }
    r->kind = RH_ALLOW_NET;
    r->prefix = (unsigned)prefix;
    for (unsigned i = r->prefix; i < bits; ++i)
        if (r->net.a[i / 8] & (0x80 >> (i % 8))) {
            snprintf(err, errlen, "'%s' has address bits set past /%u", host, r->prefix);
            return -1;
        }
    return 0;
bad:
    snprintf(err, errlen, "'%s' is not an address or CIDR block (e.g. 192.0.2.7, "
             "10.0.0.0/8, 2001:db8::/32)", host);
    return -1;
}

int rh_allow_parse(rh_allow_rule *r, const char *host, const char *ports, char *err,
                   size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (parse_ports(r, ports, err, errlen))
        return -1;
    if (!strcmp(host, "*")) {
        snprintf(err, errlen, "'*' would let clients reach any name: list names, domains "
                 "(*.example.com) or address blocks");
        return -1;
    }
    if (!strncmp(host, "*.", 2)) {
        if (!rh_allow_valid_name(host + 2)) {
            snprintf(err, errlen, "'%s' is not a domain glob (*.example.com)", host);
            return -1;
        }
        r->kind = RH_ALLOW_DOMAIN;
        r->name[0] = '.';
        lower_name(host + 2, r->name + 1);
        return 0;
    }
    if (strchr(host, '/') || strchr(host, ':') || rh_addr_parse(host, &r->net) == 0)
        return parse_net(r, host, err, errlen);
    if (!rh_allow_valid_name(host)) {
        snprintf(err, errlen, "'%s' is neither a host name, a domain glob (*.example.com), "
                 "an address nor a CIDR block", host);
        return -1;
    }
    r->kind = RH_ALLOW_EXACT;
    lower_name(host, r->name);
    return 0;
}

/* Why an internal address was refused, for people (the handler adds the
 * address): fixed strings, the handler's threads share them. */
static const char *internal_why(const char *cls)
{
    static const char *const whys[][2] = {
        { "loopback", "a loopback address: only a RelayAllow of the address (or of a block "
                      "inside 127.0.0.0/8) lets it through" },
        { "link-local", "a link-local address: only a RelayAllow of the address (or of a "
                        "block inside 169.254.0.0/16 or fe80::/10) lets it through" },
        { "private", "a private address: only a RelayAllow of the address (or of a block "
                     "inside its private range) lets it through" },
    };
    for (size_t i = 0; i < sizeof(whys) / sizeof(whys[0]); ++i)
        if (!strcmp(cls, whys[i][0]))
            return whys[i][1];
    return "an unspecified, multicast or reserved address: only a RelayAllow of the "
           "address lets it through";
}

static int port_ok(const rh_allow_rule *r, unsigned port)
{
    for (unsigned i = 0; i < r->nports; ++i)
        if (port >= r->ports[i].lo && port <= r->ports[i].hi)
            return 1;
    return 0;
}

int rh_allow_name(const rh_allow_rule *rules, size_t n, const char *name, unsigned port)
{
    char low[RH_HOST_MAX + 2];

    if (!rh_allow_valid_name(name))
        return 0;
    lower_name(name, low);
    size_t len = strlen(low);
    for (size_t i = 0; i < n; ++i) {
        const rh_allow_rule *r = &rules[i];
        if (!port_ok(r, port))
            continue;
        if (r->kind == RH_ALLOW_EXACT && !strcmp(r->name, low))
            return 1;
        if (r->kind == RH_ALLOW_DOMAIN) {
            size_t sl = strlen(r->name);
            if (len > sl && !strcmp(low + len - sl, r->name))
                return 1;
        }
    }
    return 0;
}

int rh_allow_addr(const rh_allow_rule *rules, size_t n, const rh_addr *a, unsigned port,
                  int by_name, const char **why)
{
    unsigned block = 0;
    const char *cls = rh_addr_class(a, &block);
    int listed_wide = 0;

    for (size_t i = 0; i < n; ++i) {
        const rh_allow_rule *r = &rules[i];
        if (r->kind != RH_ALLOW_NET || r->net.family != a->family || !port_ok(r, port)
            || !in_block(a->a, r->net.a, r->prefix))
            continue;
        if (!cls || r->prefix >= block)
            return 0;
        listed_wide = 1;   /* a wider block holds it: not explicit enough */
    }
    if (!cls && by_name)
        return 0;
    if (cls && (by_name || listed_wide)) {
        *why = internal_why(cls);
        return -1;
    }
    *why = "no RelayAllow lists it";
    return -1;
}
