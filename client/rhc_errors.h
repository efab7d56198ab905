/* relay-https client: how a request ended, in the user's terms: exit codes,
 * messages and hints for refusals and curl errors, and which endings are worth
 * another try. */
#ifndef RHC_ERRORS_H
#define RHC_ERRORS_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>

#include "rhc_opts.h"
#include "rhc_req.h"
#include "rhc_tunnel.h"

/* Logs with the tunnel's label in front. */
void t_log(rhc_tunnel *t, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records why the tunnel fails; the first reason wins, later ones are effects. */
void t_fail(rhc_tunnel *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The tunnel fails with the exit code, message and hint for an unexpected HTTP
 * answer, or for a curl error. */
void fail_http(rhc_tunnel *t, const struct rhc_req *r, const char *what);
void fail_curl(rhc_tunnel *t, const struct rhc_req *r, CURLcode rc, const char *what);

/* The same without a tunnel: the exit code, and the message in msg (the
 * start check gives exactly what an open would). */
int rhc_http_failure(const struct rhc_opts *o, const struct rhc_req *r, const char *what,
                     char *msg, size_t msgsz);
int rhc_curl_failure(const struct rhc_opts *o, const struct rhc_req *r, CURLcode rc,
                     const char *what, char *msg, size_t msgsz);

/* The pure decisions behind them (no curl handle needed): cc is the proxy's
 * answer to CONNECT when it refused (0: none), from_module: the body starts
 * with the module's error prefix. */
int rhc_http_exit(long status, long cc, int proxy_said, int is_open, int from_module);
int rhc_curl_exit(CURLcode rc, long cc, int in_session, const char *errbuf);
const char *rhc_hint(const struct rhc_opts *o, int code, long status, int proxy_tls);

/* The first line of an error body, printable ASCII only ("" for HTML). */
void body_line(const struct rhc_req *r, char *out, size_t outsz);
const char *req_error(const struct rhc_req *r, CURLcode rc);

int transient(CURLcode rc);                 /* a push may be tried again */
int died_unanswered(const struct rhc_req *r, CURLcode rc);
int created_then_cut(const struct rhc_req *r, CURLcode rc);   /* 201 whole, body cut */
/* An open (or listen) whose connection was cut before its answer's headers,
 * in the TLS handshake or under its HTTP/2 stream too: tried again. */
int open_cut(const struct rhc_req *r, CURLcode rc);
int cut_before_answer(CURLcode rc);
/* A 502 or 504 on a session request without the module's words: a gateway in
 * front lost the server (a reset, a child that died, a timeout): a cut. */
int gateway_cut(const struct rhc_req *r);
int busy_status(long st);                   /* 503 or 429: later may pass */
const char *busy_why(const struct rhc_req *r, char *buf, size_t len);
int64_t backoff_ms(unsigned n);
/* A busy answer's next try: backoff_ms(n), but not before the server's
 * Retry-After (the module always says 1 s): a refused tunnel that came back
 * after 50 ms paid a new TLS connection for another refusal. */
#define BUSY_RETRY_MS 1000
int64_t busy_backoff_ms(unsigned n);

#endif
