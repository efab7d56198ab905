/* relay-https client: HTTP CONNECT on the proxy port, pure: where a request
 * head ends, what it asks (CONNECT HOST:PORT, and Proxy-Authorization: Basic
 * when the port wants credentials), and the answers. */
#ifndef RHC_HTTPC_H
#define RHC_HTTPC_H

#include <stddef.h>

#define RHC_HTTPC_HEAD_MAX 8192     /* a request head beyond this is refused (431) */

/* The length of the head (through its empty line) in buf, or 0 while it has
 * not ended. */
size_t rhc_httpc_head_len(const char *buf, size_t n);

/* A whole head: 0 with the destination (HOST:PORT, [V6]:PORT) in dest, or
 * the status to answer: 400 malformed, 405 not CONNECT, 407 credentials
 * missing or wrong (userpass "USER:PASS", NULL: none wanted). */
int rhc_httpc_parse(const char *head, size_t len, const char *userpass, char *dest,
                    size_t destlen);

/* An answer: 200 "Connection established", or a refusal with a one-line
 * text body (msg), a Proxy-Status (RFC 9209) with the error type when given,
 * Proxy-Authenticate with a 407, and Connection: close. Returns its length
 * (truncated to outlen). */
size_t rhc_httpc_reply(char *out, size_t outlen, int status, const char *error_type,
                       const char *msg);

#endif
