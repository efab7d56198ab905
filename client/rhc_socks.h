/* relay-https client: the SOCKS5 wire (RFC 1928, and RFC 1929's
 * username/password), pure: how long each message is, what it says, and the
 * replies. rhc_pxy.c reads exactly the bytes a message needs, so no byte of
 * the application's own ever lands in a handshake buffer.
 *
 * Commands: CONNECT is a tunnel (rhc_pxy.c); UDP ASSOCIATE and BIND are
 * answered "command not supported" until a file of their own takes them
 * (rhc_pxy.c dispatches by command: see its socks_request). */
#ifndef RHC_SOCKS_H
#define RHC_SOCKS_H

#include <stddef.h>

#include "rh_proto.h"

#define RHC_SOCKS_VERSION      5
#define RHC_SOCKS_AUTH_VERSION 1     /* RFC 1929's subnegotiation */
#define RHC_SOCKS_MSG_MAX      (6 + 1 + 255 + 2)   /* the longest request: a domain name */

enum { RHC_SOCKS_NOAUTH = 0x00, RHC_SOCKS_USERPASS = 0x02, RHC_SOCKS_NO_METHOD = 0xff };
enum { RHC_SOCKS_CONNECT = 1, RHC_SOCKS_BIND = 2, RHC_SOCKS_UDP = 3 };
enum { RHC_SOCKS_ATYP_V4 = 1, RHC_SOCKS_ATYP_NAME = 3, RHC_SOCKS_ATYP_V6 = 4 };

/* reply codes (RFC 1928, 6) */
enum {
    RHC_SOCKS_OK = 0x00,
    RHC_SOCKS_FAILURE = 0x01,         /* general SOCKS server failure */
    RHC_SOCKS_NOT_ALLOWED = 0x02,     /* connection not allowed by ruleset */
    RHC_SOCKS_NET_UNREACH = 0x03,
    RHC_SOCKS_HOST_UNREACH = 0x04,
    RHC_SOCKS_REFUSED = 0x05,
    RHC_SOCKS_TTL = 0x06,
    RHC_SOCKS_BAD_COMMAND = 0x07,
    RHC_SOCKS_BAD_ATYP = 0x08
};

enum rhc_socks_phase { RHC_SOCKS_GREET, RHC_SOCKS_AUTH, RHC_SOCKS_REQUEST };

/* The length of the phase's message given its first have bytes: more than
 * have means read on; 0 means malformed (a wrong version byte). */
size_t rhc_socks_need(enum rhc_socks_phase ph, const unsigned char *b, size_t have);

/* A whole greeting: the method we take (RHC_SOCKS_USERPASS when userpass is
 * set, else RHC_SOCKS_NOAUTH), or RHC_SOCKS_NO_METHOD when the client does
 * not offer it. */
unsigned char rhc_socks_method(const unsigned char *b, size_t n, const char *userpass);

/* A whole RFC 1929 request against "USER:PASS": 1 when they match. */
int rhc_socks_auth_ok(const unsigned char *b, size_t n, const char *userpass);

struct rhc_socks_req {
    unsigned char cmd;
    char dest[RH_HOST_MAX + 16];   /* HOST:PORT, [V6]:PORT: a Relay-Destination */
};

/* A whole request: RHC_SOCKS_OK with *rq filled, or the reply code that
 * refuses it (a bad address type, a name with bytes no name has). */
int rhc_socks_request(const unsigned char *b, size_t n, struct rhc_socks_req *rq);

/* The 10-byte reply with code and BND 0.0.0.0:0 (the relay's own end is
 * on the server); returns its length. */
size_t rhc_socks_reply(unsigned char *out, unsigned char code);

/* What an open that failed tells the local client: the SOCKS reply code,
 * the HTTP CONNECT status and RFC 9209 Proxy-Status error type, from the
 * server's status and Relay-Reason (status 0: no answer from the server). */
struct rhc_refusal {
    unsigned char socks;
    int http;
    const char *proxy_status;
};
void rhc_socks_refusal(long status, const char *reason, struct rhc_refusal *out);

#endif
