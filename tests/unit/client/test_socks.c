/* The proxy mode's wires, pure: SOCKS5 (rhc_socks.c: message lengths,
 * methods, RFC 1929 login, requests of each address type, replies, what a
 * refused open becomes) and HTTP CONNECT (rhc_httpc.c: head end, request,
 * Basic login, answers). */
#include <string.h>

#include "rhc_httpc.h"
#include "rhc_socks.h"
#include "client_tests.h"

START_TEST(socks_lengths_grow_as_bytes_come)
{
    const unsigned char greet[] = { 5, 2, 0, 2 };
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_GREET, greet, 1), 2);
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_GREET, greet, 2), 4);
    const unsigned char bad[] = { 4, 1 };
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_GREET, bad, 2), 0);
    const unsigned char auth[] = { 1, 3, 'b', 'o', 'b', 2, 'p', 'w' };
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_AUTH, auth, 2), 6);
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_AUTH, auth, 6), 8);
    const unsigned char name[] = { 5, 1, 0, 3, 9 };
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_REQUEST, name, 4), 5);
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_REQUEST, name, 5), 16);
    const unsigned char v6[] = { 5, 1, 0, 4, 0 };
    ck_assert_uint_eq(rhc_socks_need(RHC_SOCKS_REQUEST, v6, 5), 22);
}
END_TEST

START_TEST(socks_methods_and_login)
{
    const unsigned char none[] = { 5, 1, 0 }, both[] = { 5, 2, 0, 2 };
    ck_assert_uint_eq(rhc_socks_method(none, 3, NULL), RHC_SOCKS_NOAUTH);
    ck_assert_uint_eq(rhc_socks_method(none, 3, "u:p"), RHC_SOCKS_NO_METHOD);
    ck_assert_uint_eq(rhc_socks_method(both, 4, "u:p"), RHC_SOCKS_USERPASS);
    const unsigned char ok[] = { 1, 3, 'b', 'o', 'b', 2, 'p', 'w' };
    const unsigned char wrong[] = { 1, 3, 'b', 'o', 'b', 2, 'p', 'x' };
    const unsigned char shorter[] = { 1, 3, 'b', 'o', 'b', 1, 'p' };
    ck_assert(rhc_socks_auth_ok(ok, sizeof(ok), "bob:pw"));
    ck_assert(!rhc_socks_auth_ok(wrong, sizeof(wrong), "bob:pw"));
    ck_assert(!rhc_socks_auth_ok(shorter, sizeof(shorter), "bob:pw"));
    ck_assert(!rhc_socks_auth_ok(ok, sizeof(ok), "bobby:pw"));
}
END_TEST

START_TEST(socks_requests_of_each_type)
{
    struct rhc_socks_req rq;
    const unsigned char v4[] = { 5, 1, 0, 1, 127, 0, 0, 2, 0x1f, 0x90 };
    ck_assert_int_eq(rhc_socks_request(v4, sizeof(v4), &rq), RHC_SOCKS_OK);
    ck_assert_str_eq(rq.dest, "127.0.0.2:8080");
    ck_assert_uint_eq(rq.cmd, RHC_SOCKS_CONNECT);
    const unsigned char v6[] = { 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                 0, 22 };
    ck_assert_int_eq(rhc_socks_request(v6, sizeof(v6), &rq), RHC_SOCKS_OK);
    ck_assert_str_eq(rq.dest, "[::1]:22");
    const unsigned char nm[] = { 5, 3, 0, 3, 4, 'w', 'e', 'b', '1', 0, 80 };
    ck_assert_int_eq(rhc_socks_request(nm, sizeof(nm), &rq), RHC_SOCKS_OK);
    ck_assert_str_eq(rq.dest, "web1:80");
    ck_assert_uint_eq(rq.cmd, RHC_SOCKS_UDP);
    const unsigned char colon[] = { 5, 1, 0, 3, 3, 'a', ':', 'b', 0, 80 };
    ck_assert_int_eq(rhc_socks_request(colon, sizeof(colon), &rq), RHC_SOCKS_HOST_UNREACH);
    const unsigned char atyp[] = { 5, 1, 0, 9, 0 };
    ck_assert_int_eq(rhc_socks_request(atyp, sizeof(atyp), &rq), RHC_SOCKS_BAD_ATYP);
    unsigned char rep[10];
    ck_assert_uint_eq(rhc_socks_reply(rep, RHC_SOCKS_REFUSED), 10);
    ck_assert_uint_eq(rep[0], 5);
    ck_assert_uint_eq(rep[1], RHC_SOCKS_REFUSED);
    ck_assert_uint_eq(rep[3], RHC_SOCKS_ATYP_V4);
}
END_TEST

START_TEST(refusals_map_to_socks_and_http)
{
    struct rhc_refusal f;
    rhc_socks_refusal(403, RH_REASON_TOKEN_DEST, &f);
    ck_assert_uint_eq(f.socks, RHC_SOCKS_NOT_ALLOWED);
    ck_assert_int_eq(f.http, 403);
    rhc_socks_refusal(502, RH_REASON_TOKEN_REFUSED, &f);
    ck_assert_uint_eq(f.socks, RHC_SOCKS_REFUSED);
    rhc_socks_refusal(502, RH_REASON_TOKEN_UNREACHABLE, &f);
    ck_assert_uint_eq(f.socks, RHC_SOCKS_HOST_UNREACH);
    rhc_socks_refusal(502, RH_REASON_TOKEN_RESOLVE, &f);
    ck_assert_uint_eq(f.socks, RHC_SOCKS_HOST_UNREACH);
    ck_assert_str_eq(f.proxy_status, "dns_error");
    rhc_socks_refusal(504, "", &f);
    ck_assert_int_eq(f.http, 504);
    rhc_socks_refusal(403, "", &f);          /* Apache's own Require: not the ruleset */
    ck_assert_uint_eq(f.socks, RHC_SOCKS_FAILURE);
    rhc_socks_refusal(0, "", &f);
    ck_assert_uint_eq(f.socks, RHC_SOCKS_FAILURE);
}
END_TEST

START_TEST(http_connect_heads)
{
    char dest[300];
    const char *ok = "CONNECT web1:80 HTTP/1.1\r\nHost: web1:80\r\n\r\nEXTRA";
    size_t n = rhc_httpc_head_len(ok, strlen(ok));
    ck_assert_uint_eq(n, strlen(ok) - 5);
    ck_assert_uint_eq(rhc_httpc_head_len(ok, 20), 0);
    ck_assert_int_eq(rhc_httpc_parse(ok, n, NULL, dest, sizeof(dest)), 0);
    ck_assert_str_eq(dest, "web1:80");
    const char *get = "GET http://a/ HTTP/1.1\r\n\r\n";
    ck_assert_int_eq(rhc_httpc_parse(get, strlen(get), NULL, dest, sizeof(dest)), 405);
    const char *bare = "CONNECT a:1 HTTP/1.1\n\n";
    ck_assert_int_eq(rhc_httpc_parse(bare, strlen(bare), NULL, dest, sizeof(dest)), 400);
    const char *noauth = "CONNECT a:1 HTTP/1.1\r\n\r\n";
    ck_assert_int_eq(rhc_httpc_parse(noauth, strlen(noauth), "bob:pw", dest, sizeof(dest)), 407);
    /* Ym9iOnB3 = bob:pw */
    const char *auth = "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic Ym9iOnB3\r\n\r\n";
    ck_assert_int_eq(rhc_httpc_parse(auth, strlen(auth), "bob:pw", dest, sizeof(dest)), 0);
    ck_assert_int_eq(rhc_httpc_parse(auth, strlen(auth), "bob:px", dest, sizeof(dest)), 407);
    char rep[512];
    size_t rl = rhc_httpc_reply(rep, sizeof(rep), 403, "destination_ip_prohibited", "no");
    ck_assert_uint_eq(rl, strlen(rep));
    ck_assert_ptr_nonnull(strstr(rep, "HTTP/1.1 403 Forbidden\r\n"));
    ck_assert_ptr_nonnull(strstr(rep, "Proxy-Status: relay-https; error=destination_ip_prohibited"));
    ck_assert_ptr_nonnull(strstr(rep, "\r\n\r\nno\n"));
    rhc_httpc_reply(rep, sizeof(rep), 200, NULL, "");
    ck_assert_str_eq(rep, "HTTP/1.1 200 Connection established\r\n\r\n");
}
END_TEST

Suite *socks_suite(void)
{
    Suite *s = suite_create("socks");
    TCase *tc = tcase_create("socks");
    tcase_add_test(tc, socks_lengths_grow_as_bytes_come);
    tcase_add_test(tc, socks_methods_and_login);
    tcase_add_test(tc, socks_requests_of_each_type);
    tcase_add_test(tc, refusals_map_to_socks_and_http);
    tcase_add_test(tc, http_connect_heads);
    suite_add_tcase(s, tc);
    return s;
}
