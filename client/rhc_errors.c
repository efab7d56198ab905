/* relay-https client: messages. How a request ended, in the user's terms:
 * the exit code (rhc_opts.h lists them), the message with a hint at what to do,
 * and which endings are worth another try (transient, died unanswered, busy). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <strings.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rhc_errors.h"
#include "rhc_proxy.h"
#include "rhc_tunnel_int.h"

/* Keeps the first line of a server body, printable ASCII only (an HTML error
 * page, of a proxy say, says nothing in its first line: dropped). */
void body_line(const struct rhc_req *r, char *out, size_t outsz)
{
    size_t n = 0;

    if (r->body_len && r->body[0] == '<') {
        out[0] = '\0';
        return;
    }

    for (size_t i = 0; i < r->body_len && n + 1 < outsz; ++i) {
        unsigned char ch = (unsigned char)r->body[i];
        if (ch == '\r' || ch == '\n')
            break;
        out[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    out[n] = '\0';
}

void t_log(rhc_tunnel *t, int level, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    if (level > rhc_verbose)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (t->label[0])
        rhc_log(level, "%s: %s", t->label, msg);
    else
        rhc_log(level, "%s", msg);
}

/* Records why the tunnel fails; the first reason wins, later ones are effects. */
void t_fail(rhc_tunnel *t, int code, const char *fmt, ...)
{
    va_list ap;

    if (t->end.code)
        return;
    t_touch(t);     /* its end comes in the next round */
    t->end.code = code;
    va_start(ap, fmt);
    vsnprintf(t->end.msg, sizeof(t->end.msg), fmt, ap);
    va_end(ap);
}

/* The proxy's answer to CONNECT, when there was one and it said no. */
static long connect_refusal(const struct rhc_req *r)
{
    long cc = 0;

    if (curl_easy_getinfo(r->h, CURLINFO_HTTP_CONNECTCODE, &cc) != CURLE_OK)
        return 0;
    return (cc && (cc < 200 || cc > 299)) ? cc : 0;
}

/* Exit code for an HTTP answer other than the expected one. */
int rhc_http_exit(long s, long cc, int proxy_said, int is_open, int from_module)
{
    if (s == 407 || cc || (proxy_said && !from_module))
        return RHC_EXIT_PROXY;
    if (s == 401 || s == 403)
        return RHC_EXIT_AUTH;
    if (s == RH_STATUS_INTEGRITY && from_module)
        return RHC_EXIT_INTEGRITY;
    if (!is_open)
        return RHC_EXIT_LOST;
    if (s == 404)
        return RHC_EXIT_NO_TARGET;
    /* The module always explains itself; a bare 502/503/504 comes from a gateway
     * or proxy in front that could not reach the server. */
    if (s == 502 || s == 504)
        return from_module ? RHC_EXIT_TARGET : RHC_EXIT_UNREACHABLE;
    if (s == 503 && !from_module)
        return RHC_EXIT_UNREACHABLE;
    return RHC_EXIT_ERROR;
}

/* What the user can do about the usual refusals. */
const char *rhc_hint(const struct rhc_opts *o, int code, long status, int proxy_tls)
{
    if (code == RHC_EXIT_AUTH && status == 401)
        return !o->user ? " (the server wants credentials: -u USER:PASS)"
               : o->auth && o->auth != CURLAUTH_BASIC ? " (check the credentials given with -u)"
               : " (check the credentials given with -u; --auth digest or any if the server "
                 "does not take Basic)";
    if (code == RHC_EXIT_PROXY && status == 407)
        return o->proxy_user ? " (the proxy did not take the credentials given with -U; "
                               "try --proxy-auth ntlm, negotiate or digest)"
                             : " (the proxy wants credentials: -U USER:PASS, or -U : "
                               "--proxy-auth negotiate for Kerberos)";
    if (code == RHC_EXIT_TLS && proxy_tls)
        return o->proxy_cacert || o->proxy_insecure ? ""
               : " (give the proxy's CA with --proxy-cacert FILE)";
    if (code == RHC_EXIT_TLS && status == 0 && !o->cacert && !o->insecure)
        return " (give its CA with --cacert FILE; behind a TLS-inspecting proxy, the proxy's CA)";
    return "";
}

/* open and check are asked before any session: their refusals say whether
 * the server, the target and the credentials are usable at all */
static int before_session(const struct rhc_req *r)
{
    return r->kind == REQ_OPEN || r->kind == REQ_CHECK;
}

int rhc_http_failure(const struct rhc_opts *o, const struct rhc_req *r, const char *what,
                     char *msg, size_t msgsz)
{
    char line[BODY_MAX + 1];
    long cc = connect_refusal(r);

    body_line(r, line, sizeof(line));
    int from_module = !strncmp(line, RH_ERROR_PREFIX, strlen(RH_ERROR_PREFIX));
    int code = rhc_http_exit(r->status, cc, r->proxy_said, before_session(r), from_module);
    long st = cc ? cc : r->status;
    const char *kind = "";

    if (cc == 407 || r->status == 407)
        kind = "proxy authentication required: ";
    else if (cc)
        kind = "the proxy refused to connect to the server: ";
    else if (code == RHC_EXIT_PROXY)
        kind = "the proxy refused the request: ";
    else if (r->status == 403 && !strcmp(r->reason, RH_REASON_TOKEN_DEST))
        kind = "destination not allowed by the server: ";   /* RelayAllow */
    else if (code == RHC_EXIT_AUTH)
        kind = "access refused by the server: ";
    else if (code == RHC_EXIT_NO_TARGET)
        kind = from_module ? "unknown target: " : "no relay at this URL: ";
    else if (code == RHC_EXIT_TARGET)
        kind = "the server cannot reach the target: ";
    else if (r->status == RH_STATUS_GONE && from_module)
        kind = !strcmp(r->reason, RH_REASON_TOKEN_RESET) ? "the session was reset: "
               : "the server no longer knows this session (it restarted?): ";
    snprintf(msg, msgsz, "%s: %sHTTP %ld%s%s%s", what, kind, st,
             line[0] ? ": " : "", line, rhc_hint(o, code, st, 0));
    return code;
}

void fail_http(rhc_tunnel *t, const struct rhc_req *r, const char *what)
{
    char msg[sizeof(t->end.msg)];
    int code = rhc_http_failure(t->route->o, r, what, msg, sizeof(msg));

    t_fail(t, code, "%s", msg);
    if (r->status == 410 || r->status == 416)
        t->end.server_gone = 1;     /* the server has already forgotten the session */
}

int rhc_curl_exit(CURLcode rc, long cc, int in_session, const char *errbuf)
{
    if (cc == 502 || cc == 503 || cc == 504)
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_UNREACHABLE;  /* the proxy could not */
    if (cc)
        return RHC_EXIT_PROXY;
    /* TLS 1.3: a refused client certificate shows as an alert on the first read */
    if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && strstr(errbuf, "alert") &&
        (strstr(errbuf, "SSL") || strstr(errbuf, "TLS")))
        return RHC_EXIT_TLS;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_UNREACHABLE;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return RHC_EXIT_TLS;
    case CURLE_PROXY:
        return RHC_EXIT_PROXY;
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
        return RHC_EXIT_AUTH;
    default:
        return in_session ? RHC_EXIT_LOST : RHC_EXIT_ERROR;
    }
}

int rhc_curl_failure(const struct rhc_opts *o, const struct rhc_req *r, CURLcode rc,
                     const char *what, char *msg, size_t msgsz)
{
    long cc = connect_refusal(r);
    int code = rhc_curl_exit(rc, cc, !before_session(r), r->errbuf);
    long pv = 0;
    const char *err = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    const char *kind = "";
    int proxy_tls = 0;

    if (code == RHC_EXIT_TLS) {
        /* whose certificate: an HTTPS proxy's or the server's */
        if (curl_easy_getinfo(r->h, CURLINFO_PROXY_SSL_VERIFYRESULT, &pv) == CURLE_OK && pv)
            proxy_tls = 1;
        kind = proxy_tls ? "TLS with the proxy failed: "
               : rc == CURLE_PEER_FAILED_VERIFICATION ? "the server's certificate was not verified: "
               : "TLS failed: ";
        if (!proxy_tls && strstr(err, "certificate required") && !o->cert) {
            snprintf(msg, msgsz, "%s: %s%s (the server wants a client certificate: --cert FILE)",
                     what, kind, err);
            return code;
        }
    } else if (cc == 407) {
        kind = "proxy authentication required: ";
    } else if (cc == 502 || cc == 503 || cc == 504) {
        kind = "the proxy cannot reach the server: ";
    } else if (cc) {
        kind = "the proxy refused to connect to the server: ";
    } else if (code == RHC_EXIT_UNREACHABLE) {
        if (rc == CURLE_COULDNT_RESOLVE_PROXY)
            kind = "cannot resolve the proxy: ";
        else if (rc == CURLE_COULDNT_CONNECT && rhc_proxy_in_use(o, NULL))
            kind = "cannot reach the proxy: ";
        else
            kind = "server unreachable: ";
    }
    snprintf(msg, msgsz, "%s: %s%s%s", what, kind, err,
             rhc_hint(o, code, code == RHC_EXIT_TLS ? (rc == CURLE_PEER_FAILED_VERIFICATION ? 0
                                                                                       : -1) : cc,
                      proxy_tls));
    return code;
}

void fail_curl(rhc_tunnel *t, const struct rhc_req *r, CURLcode rc, const char *what)
{
    char msg[sizeof(t->end.msg)];
    int code = rhc_curl_failure(t->route->o, r, rc, what, msg, sizeof(msg));

    t_fail(t, code, "%s", msg);
}

/* A request that got no whole answer: a transient error, or none at all (a
 * connection that ended inside the answer's header block). */
int cut_before_answer(CURLcode rc)
{
    return rc == CURLE_OK || transient(rc);
}

/* The module answers 502 and 504 only to an open, and always with its
 * RH_ERROR_PREFIX line; on a push, pull or duplex they are a gateway's (nginx,
 * say) that lost its connection to the server, or never got one through (a
 * graceful restart, a child that died, a reset or a timeout behind it). The
 * request may have reached the module in part, exactly as when a connection is
 * cut: the session goes on from the confirmed offsets. */
int gateway_cut(const struct rhc_req *r)
{
    char line[BODY_MAX + 1];

    if (!r->hdr_done || (r->status != 502 && r->status != 504))
        return 0;
    body_line(r, line, sizeof(line));
    return strncmp(line, RH_ERROR_PREFIX, strlen(RH_ERROR_PREFIX)) != 0;
}

/* The relay is busy (503) or this client is at its share (429): the same
 * request later may pass (Retry-After). */
int busy_status(long st)
{
    return st == 503 || st == 429;
}

/* Why a busy answer came: its status and the server's line (it names the limit). */
const char *busy_why(const struct rhc_req *r, char *buf, size_t len)
{
    char line[BODY_MAX + 1];
    body_line(r, line, sizeof(line));
    snprintf(buf, len, "HTTP %ld%s%s", r->status, line[0] ? ": " : "", line);
    return buf;
}

int64_t backoff_ms(unsigned n)
{
    return n >= 5 ? 1000 : 50L << n;   /* 50, 100, 200, 400, 800, 1000, ... */
}

int64_t busy_backoff_ms(unsigned n)
{
    int64_t b = backoff_ms(n);
    return b > BUSY_RETRY_MS ? b : BUSY_RETRY_MS;
}

/* The request's connection died before any answer came (typically a pooled
 * keep-alive connection the server was closing; curl's own retries may all land
 * on such connections when a busy server drops its idle ones). */
int died_unanswered(const struct rhc_req *r, CURLcode rc)
{
    /* CURLE_HTTP2: an h2 connection the server is closing (GOAWAY after
     * MaxKeepAliveRequests, say) refused a new stream on it */
    /* CURLE_OK without a whole header block: the connection ended inside it */
    return !r->hdr_done && (rc == CURLE_OK || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
                            rc == CURLE_GOT_NOTHING || rc == CURLE_HTTP2);
}

int open_cut(const struct rhc_req *r, CURLcode rc)
{
    /* CURLE_PARTIAL_FILE: curl 7.88's "HTTP/2 stream N was not closed cleanly
     * before end of the underlying stream", an h2 connection that died (a
     * kept-alive one a proxy had cut) under a stream without its headers */
    return died_unanswered(r, rc) ||
           (!r->hdr_done && (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_HTTP2_STREAM ||
                             rc == CURLE_PARTIAL_FILE));
}

/* A 201 whose whole header block came (the session's token with it) and whose
 * connection was cut before the empty body's end: over HTTP/2 the END_STREAM
 * may follow the HEADERS in a frame of its own. The session exists and the
 * client holds its token, so the open (or a serve's listen) succeeded. */
int created_then_cut(const struct rhc_req *r, CURLcode rc)
{
    return rc != CURLE_OK && r->hdr_done && r->status == 201 && r->have_token &&
           (transient(rc) || rc == CURLE_HTTP2_STREAM);
}

/* A push that may be tried again: cut or refused before an answer. */
int transient(CURLcode rc)
{
    switch (rc) {
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:  /* a connect that timed out: the path is down */
    case CURLE_SSL_CONNECT_ERROR:   /* cut during the handshake */
        return 1;
    default:
        return 0;
    }
}

const char *req_error(const struct rhc_req *r, CURLcode rc)
{
    /* curl took a gateway's 502/504 for a fine answer: say what it was */
    if (gateway_cut(r))
        return r->status == 502
            ? "HTTP 502 from a gateway in front of the server, not from the relay"
            : "HTTP 504 from a gateway in front of the server, not from the relay";
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
}
