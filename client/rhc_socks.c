/* relay-https client: the SOCKS5 wire (see rhc_socks.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "rhc_socks.h"

size_t rhc_socks_need(enum rhc_socks_phase ph, const unsigned char *b, size_t have)
{
    if (have < 2)
        return 2;
    switch (ph) {
    case RHC_SOCKS_GREET:       /* VER NMETHODS METHODS... */
        return b[0] == RHC_SOCKS_VERSION && b[1] > 0 ? 2 + (size_t)b[1] : 0;
    case RHC_SOCKS_AUTH:        /* VER ULEN UNAME PLEN PASSWD */
        if (b[0] != RHC_SOCKS_AUTH_VERSION)
            return 0;
        if (have < 3 + (size_t)b[1])
            return 3 + (size_t)b[1];
        return 3 + (size_t)b[1] + b[2 + b[1]];
    case RHC_SOCKS_REQUEST:     /* VER CMD RSV ATYP DST.ADDR DST.PORT */
        if (b[0] != RHC_SOCKS_VERSION)
            return 0;
        if (have < 5)
            return 5;
        if (b[3] == RHC_SOCKS_ATYP_V4)
            return 4 + 4 + 2;
        if (b[3] == RHC_SOCKS_ATYP_V6)
            return 4 + 16 + 2;
        if (b[3] == RHC_SOCKS_ATYP_NAME)
            return 5 + (size_t)b[4] + 2;
        return 5;    /* unknown type: the request is answered as it is */
    }
    return 0;
}

unsigned char rhc_socks_method(const unsigned char *b, size_t n, const char *userpass)
{
    unsigned char want = userpass ? RHC_SOCKS_USERPASS : RHC_SOCKS_NOAUTH;
    for (size_t i = 2; i < n && i < 2 + (size_t)b[1]; ++i)
        if (b[i] == want)
            return want;
    return RHC_SOCKS_NO_METHOD;
}

/* Equal without a timing that tells how much of it was right. */
static int same(const unsigned char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = an != bn;
    for (size_t i = 0; i < an; ++i)
        diff |= (unsigned)(a[i] ^ (unsigned char)b[i < bn ? i : 0]);
    return diff == 0 && bn > 0;
}

int rhc_socks_auth_ok(const unsigned char *b, size_t n, const char *userpass)
{
    const char *colon = strchr(userpass, ':');
    if (!colon || n < 3)
        return 0;
    size_t ul = b[1];
    if (n < 3 + ul || n < 3 + ul + b[2 + ul])
        return 0;
    size_t pl = b[2 + ul];
    int user = same(b + 2, ul, userpass, (size_t)(colon - userpass));
    int pass = same(b + 3 + ul, pl, colon + 1, strlen(colon + 1));
    return user & pass;
}

/* A name from the request: printable, no ':', '[', ']', '/' or space (it
 * goes into a header as HOST:PORT), not empty. */
static int name_ok(const unsigned char *p, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; ++i)
        if (p[i] <= ' ' || p[i] >= 0x7f || strchr(":[]/", p[i]))
            return 0;
    return 1;
}

int rhc_socks_request(const unsigned char *b, size_t n, struct rhc_socks_req *rq)
{
    char host[RH_HOST_MAX + 8];
    const unsigned char *port;

    memset(rq, 0, sizeof(*rq));
    if (n < 5 || b[0] != RHC_SOCKS_VERSION)
        return RHC_SOCKS_FAILURE;
    rq->cmd = b[1];
    if (b[3] == RHC_SOCKS_ATYP_V4 && n >= 10) {
        inet_ntop(AF_INET, b + 4, host, sizeof(host));
        port = b + 8;
    } else if (b[3] == RHC_SOCKS_ATYP_V6 && n >= 22) {
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, b + 4, a, sizeof(a));
        snprintf(host, sizeof(host), "[%s]", a);
        port = b + 20;
    } else if (b[3] == RHC_SOCKS_ATYP_NAME && n >= 7 + (size_t)b[4]) {
        if (!name_ok(b + 5, b[4]) || b[4] > RH_HOST_MAX + 1)
            return RHC_SOCKS_HOST_UNREACH;
        memcpy(host, b + 5, b[4]);
        host[b[4]] = '\0';
        port = b + 5 + b[4];
    } else {
        return RHC_SOCKS_BAD_ATYP;
    }
    unsigned p = (unsigned)port[0] << 8 | port[1];
    if (!p)
        return RHC_SOCKS_HOST_UNREACH;
    snprintf(rq->dest, sizeof(rq->dest), "%s:%u", host, p);
    return RHC_SOCKS_OK;
}

size_t rhc_socks_reply(unsigned char *out, unsigned char code)
{
    static const unsigned char tail[8] = { 0, RHC_SOCKS_ATYP_V4, 0, 0, 0, 0, 0, 0 };
    out[0] = RHC_SOCKS_VERSION;
    out[1] = code;
    memcpy(out + 2, tail, sizeof(tail));
    return 10;
}

void rhc_socks_refusal(long status, const char *reason, struct rhc_refusal *out)
{
    int is = reason && *reason;
    *out = (struct rhc_refusal){ RHC_SOCKS_FAILURE, 502, "proxy_internal_error" };
    if (status == 403 && is && !strcmp(reason, RH_REASON_TOKEN_DEST))
        *out = (struct rhc_refusal){ RHC_SOCKS_NOT_ALLOWED, 403, "destination_ip_prohibited" };
    else if (status == 404 && is && !strcmp(reason, RH_REASON_TOKEN_NO_TARGET))
        *out = (struct rhc_refusal){ RHC_SOCKS_NOT_ALLOWED, 403, "destination_ip_prohibited" };
    else if (is && !strcmp(reason, RH_REASON_TOKEN_RESOLVE))
        *out = status == 504
             ? (struct rhc_refusal){ RHC_SOCKS_HOST_UNREACH, 504, "dns_timeout" }
             : (struct rhc_refusal){ RHC_SOCKS_HOST_UNREACH, 502, "dns_error" };
    else if (status == 502 && is && !strcmp(reason, RH_REASON_TOKEN_REFUSED))
        *out = (struct rhc_refusal){ RHC_SOCKS_REFUSED, 502, "connection_refused" };
    else if (status == 502 && is && !strcmp(reason, RH_REASON_TOKEN_UNREACHABLE))
        *out = (struct rhc_refusal){ RHC_SOCKS_HOST_UNREACH, 502, "destination_unavailable" };
    else if (status == 504)
        *out = (struct rhc_refusal){ RHC_SOCKS_HOST_UNREACH, 504, "connection_timeout" };
    else if (status == 400)
        *out = (struct rhc_refusal){ RHC_SOCKS_HOST_UNREACH, 400, "destination_not_found" };
}
