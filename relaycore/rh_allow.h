/* RelayAllow: the destinations a relay location lets its clients name per
 * connection (docs/PROTOCOL.md, Destinations). A rule is a host pattern and
 * ports:
 *   host   an exact name (db.example.com), a domain glob (*.example.com: any
 *          name below the domain, not the domain itself), an address
 *          (192.0.2.7, ::1) or a CIDR block (10.0.0.0/8, 2001:db8::/32)
 *   ports  N, N-M, or a comma list of those (22,80,8000-8099); TCP, unless
 *          written udp/N or udp/N-M (udp/53): UDP (datagrams, issue 16) only
 *          where a rule says so; tcp/N is N
 * A name matches name rules only, an address address rules only. Nothing
 * matches an empty list: never an open proxy.
 *
 * The address a name resolved to is checked again (no DNS rebinding around
 * the list): it passes when an address rule lists it, or when it is public.
 * An internal address (loopback, link-local, private, unspecified, multicast,
 * reserved: rh_addr_class) passes only through an address rule inside its
 * class's block: 127.0.0.2 or 127.0.0.0/8 list loopback, 0.0.0.0/0 does not.
 * The same holds for an address the client names itself.
 *
 * httpd-independent: the module parses the rules at configtest and checks
 * them at every open; the unit tests check them against a simple model. */
#ifndef RH_ALLOW_H
#define RH_ALLOW_H

#include <stddef.h>
#include <stdint.h>

#include "rh_proto.h"

#define RH_ALLOW_PORTS_MAX 16
/* Added to a port to ask for UDP: rh_allow_name(..., 53 | RH_ALLOW_UDP) */
#define RH_ALLOW_UDP       0x10000u

enum { RH_ALLOW_EXACT = 1, RH_ALLOW_DOMAIN, RH_ALLOW_NET };

/* An address; IPv4 (family 4) in a[0..3], IPv6 (family 6) in a[0..15]. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is kept as the IPv4 one. */
typedef struct rh_addr {
    int family;
    unsigned char a[16];
} rh_addr;

typedef struct rh_allow_rule {
    int kind;                       /* RH_ALLOW_* */
    char name[RH_HOST_MAX + 2];     /* EXACT: the name; DOMAIN: ".example.com"; lower case */
    rh_addr net;                    /* NET: the block's first address */
    unsigned prefix;                /* NET: its prefix length */
    unsigned nports;
    struct { uint32_t lo, hi; } ports[RH_ALLOW_PORTS_MAX];   /* UDP: | RH_ALLOW_UDP */
} rh_allow_rule;

/* Parses one RelayAllow. Returns 0, or -1 with a message for the operator in
 * err (what is wrong and how it should look). */
int rh_allow_parse(rh_allow_rule *r, const char *host, const char *ports, char *err,
                   size_t errlen);

/* A host name a client may name: 1 to RH_HOST_MAX characters (one trailing dot
 * allowed), labels of 1 to 63 of [A-Za-z0-9_-] not beginning or ending with
 * '-', the last not all digits (so "127.1" and "0x7f.1" are no names). */
int rh_allow_valid_name(const char *name);

/* Relay-Destination's HOST:PORT or [IPV6]:PORT into host (brackets taken
 * off) and port (1-65535): 0, or -1 when malformed or host does not fit. */
int rh_allow_split_dest(const char *dest, char *host, size_t hostlen, unsigned *port);

/* An address in text (IPv4 dotted quad, IPv6, [IPv6]): 0, or -1. */
int rh_addr_parse(const char *text, rh_addr *out);
/* The text of an address (IPv6 without brackets), at most 46 bytes with NUL. */
void rh_addr_format(const rh_addr *a, char *out, size_t outlen);

/* NULL for a public address; else its class ("loopback", "link-local",
 * "private", "unspecified", "multicast", "reserved") and in *prefix the
 * length of the block that makes it so. */
const char *rh_addr_class(const rh_addr *a, unsigned *prefix);

/* 1 when a name rule of the list lets name:port through. */
int rh_allow_name(const rh_allow_rule *rules, size_t n, const char *name, unsigned port);

/* Whether a connection to a:port may be made. by_name: the client named a
 * name that a name rule let through, and a is what it resolved to (a public
 * address then needs no rule of its own). Returns 0, or -1 with in *why a
 * short reason for people ("not listed", "loopback: list it by address"). */
int rh_allow_addr(const rh_allow_rule *rules, size_t n, const rh_addr *a, unsigned port,
                  int by_name, const char **why);

#endif
