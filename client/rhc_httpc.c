/* relay-https client: HTTP CONNECT on the proxy port (see rhc_httpc.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rhc_httpc.h"

size_t rhc_httpc_head_len(const char *buf, size_t n)
{
    for (size_t i = 0; i + 3 < n; ++i)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return i + 4;
    return 0;
}

/* base64 of s (RFC 4648, padded) into out; its length, or 0 when it does
 * not fit */
static size_t b64(const char *s, char *out, size_t outlen)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), o = 0;
    if ((n + 2) / 3 * 4 + 1 > outlen)
        return 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* "Basic <token>" against userpass, without a timing that tells how much
 * was right. */
static int basic_ok(const char *v, size_t vl, const char *userpass)
{
    char want[512];
    size_t wl = b64(userpass, want, sizeof(want));
    if (!wl || vl < 6 || strncasecmp(v, "Basic ", 6))
        return 0;
    v += 6;
    vl -= 6;
    while (vl && *v == ' ') {
        ++v;
        --vl;
    }
    unsigned diff = vl != wl;
    for (size_t i = 0; i < wl; ++i)
        diff |= (unsigned)(want[i] ^ (i < vl ? v[i] : 0));
    return diff == 0;
}

/* The request line: CONNECT HOST:PORT HTTP/1.x. 0, or a status. */
static int request_line(const char *p, size_t n, char *dest, size_t destlen)
{
    const char *sp1 = memchr(p, ' ', n);
    if (!sp1)
        return 400;
    if ((size_t)(sp1 - p) != 7 || strncmp(p, "CONNECT", 7))
        return 405;
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', n - (size_t)(t - p));
    if (!sp2 || sp2 == t || (size_t)(sp2 - t) >= destlen)
        return 400;
    size_t vl = n - (size_t)(sp2 + 1 - p);
    if (vl != 8 || strncmp(sp2 + 1, "HTTP/1.", 7))
        return 400;
    memcpy(dest, t, (size_t)(sp2 - t));
    dest[sp2 - t] = '\0';
    return 0;
}

int rhc_httpc_parse(const char *head, size_t len, const char *userpass, char *dest,
                    size_t destlen)
{
    const char *end = head + len;
    const char *nl = memchr(head, '\n', len);
    if (!nl || nl == head || nl[-1] != '\r')
        return 400;
    int st = request_line(head, (size_t)(nl - 1 - head), dest, destlen);
    if (st)
        return st;
    int authed = !userpass;
    for (const char *line = nl + 1; line < end;) {
        const char *e = memchr(line, '\n', (size_t)(end - line));
        if (!e || e == line || e[-1] != '\r')
            return 400;
        size_t ll = (size_t)(e - 1 - line);
        static const char pa[] = "Proxy-Authorization:";
        if (userpass && ll > sizeof(pa) - 1 && !strncasecmp(line, pa, sizeof(pa) - 1)) {
            const char *v = line + sizeof(pa) - 1;
            while (*v == ' ')
                ++v;
            authed = basic_ok(v, (size_t)(e - 1 - v), userpass);
        }
        line = e + 1;
    }
    return authed ? 0 : 407;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "Connection established";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return "Bad Gateway";
    }
}

size_t rhc_httpc_reply(char *out, size_t outlen, int status, const char *error_type,
                       const char *msg)
{
    int n;
    if (status == 200)
        n = snprintf(out, outlen, "HTTP/1.1 200 %s\r\n\r\n", status_text(200));
    else
        n = snprintf(out, outlen, "HTTP/1.1 %d %s\r\n%s%s%s%s"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s\n", status, status_text(status),
                     error_type ? "Proxy-Status: relay-https; error=" : "",
                     error_type ? error_type : "", error_type ? "\r\n" : "",
                     status == 407 ? "Proxy-Authenticate: Basic realm=\"relay-https\"\r\n" : "",
                     strlen(msg) + 1, msg);
    if (n < 0)
        return 0;
    return (size_t)n < outlen ? (size_t)n : outlen - 1;
}
