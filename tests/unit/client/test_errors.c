/* client/rhc_errors.c: exit codes, messages and hints for refusals and curl
 * errors (the exit codes are an interface: scripts rely on them), and which
 * endings are worth another try. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rhc_errors.h"
#include "rhc_tunnel_int.h"
#include "client_tests.h"

static const struct {
    long status, cc;
    int proxy_said, is_open, from_module;
    int code;
} http_rows[] = {
    { 407, 0, 0, 1, 0, RHC_EXIT_PROXY },
    { 200, 403, 0, 1, 0, RHC_EXIT_PROXY },          /* CONNECT refused */
    { 403, 0, 1, 1, 0, RHC_EXIT_PROXY },            /* a proxy's own 403 */
    { 403, 0, 1, 1, 1, RHC_EXIT_AUTH },             /* ... unless the module said it */
    { 401, 0, 0, 1, 0, RHC_EXIT_AUTH },
    { 403, 0, 0, 0, 1, RHC_EXIT_AUTH },
    { RH_STATUS_INTEGRITY, 0, 0, 0, 1, RHC_EXIT_INTEGRITY },
    { RH_STATUS_INTEGRITY, 0, 0, 0, 0, RHC_EXIT_LOST },
    { 410, 0, 0, 0, 1, RHC_EXIT_LOST },             /* in a session: lost */
    { 404, 0, 0, 0, 1, RHC_EXIT_LOST },
    { 404, 0, 0, 1, 1, RHC_EXIT_NO_TARGET },
    { 404, 0, 0, 1, 0, RHC_EXIT_NO_TARGET },
    { 502, 0, 0, 1, 1, RHC_EXIT_TARGET },
    { 504, 0, 0, 1, 1, RHC_EXIT_TARGET },
    { 502, 0, 0, 1, 0, RHC_EXIT_UNREACHABLE },      /* a gateway in front */
    { 503, 0, 0, 1, 0, RHC_EXIT_UNREACHABLE },
    { 503, 0, 0, 1, 1, RHC_EXIT_ERROR },
    { 500, 0, 0, 1, 1, RHC_EXIT_ERROR },
};

START_TEST(test_http_exit)
{
    for (size_t i = 0; i < sizeof(http_rows) / sizeof(http_rows[0]); ++i)
        ck_assert_msg(rhc_http_exit(http_rows[i].status, http_rows[i].cc, http_rows[i].proxy_said,
                                    http_rows[i].is_open, http_rows[i].from_module)
                      == http_rows[i].code, "row %zu (HTTP %ld)", i, http_rows[i].status);
}
END_TEST

static const struct {
    CURLcode rc;
    long cc;
    int in_session;
    const char *errbuf;
    int code;
} curl_rows[] = {
    { CURLE_COULDNT_CONNECT, 0, 0, "", RHC_EXIT_UNREACHABLE },
    { CURLE_COULDNT_CONNECT, 0, 1, "", RHC_EXIT_LOST },
    { CURLE_COULDNT_RESOLVE_HOST, 0, 0, "", RHC_EXIT_UNREACHABLE },
    { CURLE_COULDNT_RESOLVE_PROXY, 0, 0, "", RHC_EXIT_UNREACHABLE },
    { CURLE_OPERATION_TIMEDOUT, 0, 0, "", RHC_EXIT_UNREACHABLE },
    { CURLE_RECV_ERROR, 0, 1, "", RHC_EXIT_LOST },
    { CURLE_HTTP2_STREAM, 0, 1, "", RHC_EXIT_LOST },
    { CURLE_RECV_ERROR, 0, 0, "OpenSSL SSL_read: tlsv13 alert certificate required",
      RHC_EXIT_TLS },
    { CURLE_SEND_ERROR, 0, 1, "TLS alert", RHC_EXIT_TLS },
    { CURLE_RECV_ERROR, 0, 0, "alert without the protocol's name", RHC_EXIT_UNREACHABLE },
    { CURLE_PEER_FAILED_VERIFICATION, 0, 1, "", RHC_EXIT_TLS },
    { CURLE_SSL_CONNECT_ERROR, 0, 0, "", RHC_EXIT_TLS },
    { CURLE_SSL_CACERT_BADFILE, 0, 0, "", RHC_EXIT_TLS },
    { CURLE_PROXY, 0, 0, "", RHC_EXIT_PROXY },
    { CURLE_LOGIN_DENIED, 0, 0, "", RHC_EXIT_AUTH },
    { CURLE_REMOTE_ACCESS_DENIED, 0, 1, "", RHC_EXIT_AUTH },
    { CURLE_COULDNT_CONNECT, 407, 0, "", RHC_EXIT_PROXY },     /* the proxy said no */
    { CURLE_COULDNT_CONNECT, 403, 1, "", RHC_EXIT_PROXY },
    { CURLE_COULDNT_CONNECT, 502, 0, "", RHC_EXIT_UNREACHABLE }, /* the proxy could not */
    { CURLE_COULDNT_CONNECT, 504, 1, "", RHC_EXIT_LOST },
    { CURLE_OUT_OF_MEMORY, 0, 0, "", RHC_EXIT_ERROR },
    { CURLE_OUT_OF_MEMORY, 0, 1, "", RHC_EXIT_LOST },
};

START_TEST(test_curl_exit)
{
    for (size_t i = 0; i < sizeof(curl_rows) / sizeof(curl_rows[0]); ++i)
        ck_assert_msg(rhc_curl_exit(curl_rows[i].rc, curl_rows[i].cc, curl_rows[i].in_session,
                                    curl_rows[i].errbuf) == curl_rows[i].code,
                      "row %zu (curl %d)", i, (int)curl_rows[i].rc);
}
END_TEST

START_TEST(test_hints)
{
    struct rhc_opts o;

    memset(&o, 0, sizeof(o));
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_AUTH, 401, 0), "-u USER:PASS"));
    o.user = "u:p";
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_AUTH, 401, 0), "--auth digest"));
    o.auth = CURLAUTH_DIGEST;
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_AUTH, 401, 0), "check the credentials"));
    ck_assert_str_eq(rhc_hint(&o, RHC_EXIT_AUTH, 403, 0), "");
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_PROXY, 407, 0), "-U USER:PASS"));
    o.proxy_user = "pu:pp";
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_PROXY, 407, 0), "--proxy-auth ntlm"));
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_TLS, 0, 1), "--proxy-cacert"));
    o.proxy_insecure = 1;
    ck_assert_str_eq(rhc_hint(&o, RHC_EXIT_TLS, 0, 1), "");
    ck_assert(strstr(rhc_hint(&o, RHC_EXIT_TLS, 0, 0), "--cacert FILE"));
    ck_assert_str_eq(rhc_hint(&o, RHC_EXIT_TLS, -1, 0), "");   /* not a verification */
    o.cacert = "ca.pem";
    ck_assert_str_eq(rhc_hint(&o, RHC_EXIT_TLS, 0, 0), "");
    ck_assert_str_eq(rhc_hint(&o, RHC_EXIT_LOST, 0, 0), "");
}
END_TEST

START_TEST(test_retryable)
{
    struct rhc_req r;

    memset(&r, 0, sizeof(r));
    ck_assert(transient(CURLE_RECV_ERROR) && transient(CURLE_HTTP2_STREAM) &&
              transient(CURLE_SSL_CONNECT_ERROR) && transient(CURLE_OPERATION_TIMEDOUT));
    ck_assert(!transient(CURLE_OK) && !transient(CURLE_PEER_FAILED_VERIFICATION) &&
              !transient(CURLE_COULDNT_RESOLVE_HOST));
    ck_assert(cut_before_answer(CURLE_OK) && cut_before_answer(CURLE_GOT_NOTHING));
    ck_assert(!cut_before_answer(CURLE_LOGIN_DENIED));
    ck_assert(died_unanswered(&r, CURLE_OK) && died_unanswered(&r, CURLE_HTTP2));
    ck_assert(!died_unanswered(&r, CURLE_HTTP2_STREAM) && !died_unanswered(&r, CURLE_PARTIAL_FILE));
    /* an open on a kept-alive h2 connection a proxy had cut: curl 7.88 says
     * "stream N was not closed cleanly" with CURLE_PARTIAL_FILE */
    ck_assert(open_cut(&r, CURLE_PARTIAL_FILE) && open_cut(&r, CURLE_HTTP2_STREAM) &&
              open_cut(&r, CURLE_SSL_CONNECT_ERROR) && open_cut(&r, CURLE_RECV_ERROR));
    ck_assert(!open_cut(&r, CURLE_PEER_FAILED_VERIFICATION));
    r.hdr_done = 1;
    ck_assert(!died_unanswered(&r, CURLE_RECV_ERROR));
    ck_assert(!open_cut(&r, CURLE_PARTIAL_FILE));
    ck_assert(busy_status(503) && busy_status(429) && !busy_status(502) && !busy_status(409));
    ck_assert_int_eq(backoff_ms(0), 50);
    ck_assert_int_eq(backoff_ms(4), 800);
    ck_assert_int_eq(backoff_ms(5), 1000);
    ck_assert_int_eq(backoff_ms(100), 1000);
}
END_TEST

/* A 502 or 504 without the module's line is a gateway's that lost the server:
 * a cut; the module's own (open: the target refused) and other statuses are not. */
START_TEST(test_gateway_cut)
{
    struct rhc_req r;
    static const char page[] = "<html>\r\n<head><title>502 Bad Gateway</title>";
    static const char mine[] = RH_ERROR_PREFIX "cannot connect to target 'echo'";

    memset(&r, 0, sizeof(r));
    r.status = 502;
    ck_assert(!gateway_cut(&r));                      /* no answer yet */
    r.hdr_done = 1;
    ck_assert(gateway_cut(&r));                       /* no body at all */
    memcpy(r.body, page, sizeof(page));
    r.body_len = sizeof(page) - 1;
    ck_assert(gateway_cut(&r));
    r.status = 504;
    ck_assert(gateway_cut(&r));
    r.status = 503;
    ck_assert(!gateway_cut(&r));                      /* busy: its own rule */
    r.status = 502;
    memcpy(r.body, mine, sizeof(mine));
    r.body_len = sizeof(mine) - 1;
    ck_assert(!gateway_cut(&r));
}
END_TEST

/* An open (or a listen) whose 201 came whole and whose empty body's end was cut
 * holds a live session: it must not fail nor be tried again. */
START_TEST(test_created_then_cut)
{
    struct rhc_req r;

    memset(&r, 0, sizeof(r));
    ck_assert(!created_then_cut(&r, CURLE_HTTP2_STREAM));       /* nothing came */
    r.hdr_done = 1;
    r.status = 201;
    ck_assert(!created_then_cut(&r, CURLE_HTTP2_STREAM));       /* no token */
    r.have_token = 1;
    ck_assert(created_then_cut(&r, CURLE_HTTP2_STREAM) && created_then_cut(&r, CURLE_RECV_ERROR) &&
              created_then_cut(&r, CURLE_PARTIAL_FILE) && created_then_cut(&r, CURLE_HTTP2));
    ck_assert(!created_then_cut(&r, CURLE_OK));                 /* not a cut */
    ck_assert(!created_then_cut(&r, CURLE_PEER_FAILED_VERIFICATION));
    r.status = 503;
    ck_assert(!created_then_cut(&r, CURLE_HTTP2_STREAM));
}
END_TEST

/* A tunnel that is only a place for a failure: no requests, no fds. */
struct failing {
    struct rhc_opts o;
    struct rhc_route route;
    rhc_ctx c;
    rhc_tunnel *t;
    struct rhc_req r;
};

static void failing_init(struct failing *f, enum req_kind kind, long status, const char *body)
{
    memset(f, 0, sizeof(*f));
    f->o.base_url = "https://relay.example";
    f->o.target = "echo";
    f->c.o = &f->o;
    f->t = calloc(1, sizeof(*f->t));
    ck_assert_ptr_nonnull(f->t);
    f->t->ctx = &f->c;
    rhc_route_init(&f->route, &f->o, "test");
    f->t->route = &f->route;
    f->r.kind = kind;
    f->r.h = curl_easy_init();     /* never performed: no CONNECT answer */
    f->r.hdr_done = status != 0;
    f->r.status = status;
    snprintf(f->r.body, sizeof(f->r.body), "%s", body);
    f->r.body_len = strlen(f->r.body);
}

static void failing_free(struct failing *f)
{
    curl_easy_cleanup(f->r.h);
    free(f->t);
    free(f->c.due);     /* t_fail touches the tunnel: the ctx's wake list grew */
}

START_TEST(test_fail_messages)
{
    struct failing f;

    failing_init(&f, REQ_OPEN, 404, RH_ERROR_PREFIX "no target 'echo'\r\nmore");
    fail_http(f.t, &f.r, "open");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_NO_TARGET);
    ck_assert_str_eq(f.t->end.msg, "open: unknown target: HTTP 404: " RH_ERROR_PREFIX
                     "no target 'echo'");
    /* the first reason wins */
    t_fail(f.t, RHC_EXIT_LOST, "later");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_NO_TARGET);
    failing_free(&f);

    failing_init(&f, REQ_OPEN, 404, "<html>not found</html>");
    fail_http(f.t, &f.r, "open");
    ck_assert_str_eq(f.t->end.msg, "open: no relay at this URL: HTTP 404");
    failing_free(&f);

    failing_init(&f, REQ_PULL, 410, RH_ERROR_PREFIX "gone");
    fail_http(f.t, &f.r, "pull");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_LOST);
    ck_assert_int_eq(f.t->end.server_gone, 1);
    ck_assert_str_eq(f.t->end.msg, "pull: the server no longer knows this session (it "
                     "restarted?): HTTP 410: " RH_ERROR_PREFIX "gone");
    failing_free(&f);
    /* reset within the last minute: the server says so, and why */
    failing_init(&f, REQ_PULL, 410, RH_ERROR_PREFIX "session reset: malformed datagram");
    snprintf(f.r.reason, sizeof(f.r.reason), "%s", RH_REASON_TOKEN_RESET);
    fail_http(f.t, &f.r, "pull");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_LOST);
    ck_assert_int_eq(f.t->end.server_gone, 1);
    ck_assert_str_eq(f.t->end.msg, "pull: the session was reset: HTTP 410: " RH_ERROR_PREFIX
                     "session reset: malformed datagram");
    failing_free(&f);

    /* the start check fails as an open would */
    failing_init(&f, REQ_CHECK, 404, RH_ERROR_PREFIX "unknown target 'echo'");
    fail_http(f.t, &f.r, "check");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_NO_TARGET);
    ck_assert_str_eq(f.t->end.msg, "check: unknown target: HTTP 404: " RH_ERROR_PREFIX
                     "unknown target 'echo'");
    failing_free(&f);
    failing_init(&f, REQ_CHECK, 0, "");
    fail_curl(f.t, &f.r, CURLE_COULDNT_CONNECT, "check");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_UNREACHABLE);
    failing_free(&f);

    failing_init(&f, REQ_OPEN, 401, "");
    fail_http(f.t, &f.r, "open");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_AUTH);
    ck_assert_str_eq(f.t->end.msg, "open: access refused by the server: HTTP 401 (the server "
                     "wants credentials: -u USER:PASS)");
    failing_free(&f);

    failing_init(&f, REQ_OPEN, 0, "");
    snprintf(f.r.errbuf, sizeof(f.r.errbuf), "Could not resolve host: relay.example");
    fail_curl(f.t, &f.r, CURLE_COULDNT_RESOLVE_HOST, "open");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_UNREACHABLE);
    ck_assert_str_eq(f.t->end.msg, "open: server unreachable: Could not resolve host: "
                     "relay.example");
    failing_free(&f);

    failing_init(&f, REQ_PUSH, 0, "");
    fail_curl(f.t, &f.r, CURLE_PEER_FAILED_VERIFICATION, "push");
    ck_assert_int_eq(f.t->end.code, RHC_EXIT_TLS);
    ck_assert(strstr(f.t->end.msg, "the server's certificate was not verified: "));
    ck_assert(strstr(f.t->end.msg, "--cacert FILE"));
    failing_free(&f);
}
END_TEST

START_TEST(test_body_line)
{
    struct rhc_req r;
    char line[BODY_MAX + 1];

    memset(&r, 0, sizeof(r));
    strcpy(r.body, "busy: \x01too many\r\nsecond");
    r.body_len = strlen(r.body);
    body_line(&r, line, sizeof(line));
    ck_assert_str_eq(line, "busy: ?too many");
    body_line(&r, line, 5);
    ck_assert_str_eq(line, "busy");
    strcpy(r.body, "<html>");
    r.body_len = 6;
    body_line(&r, line, sizeof(line));
    ck_assert_str_eq(line, "");
}
END_TEST

Suite *errors_suite(void)
{
    Suite *s = suite_create("client errors");
    TCase *tc = tcase_create("exit codes and messages");

    tcase_add_test(tc, test_http_exit);
    tcase_add_test(tc, test_curl_exit);
    tcase_add_test(tc, test_hints);
    tcase_add_test(tc, test_retryable);
    tcase_add_test(tc, test_created_then_cut);
    tcase_add_test(tc, test_gateway_cut);
    tcase_add_test(tc, test_fail_messages);
    tcase_add_test(tc, test_body_line);
    suite_add_tcase(s, tc);
    return s;
}
