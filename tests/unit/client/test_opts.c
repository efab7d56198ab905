/* client/rhc_opts.c: the command line. A placeholder with one valid command
 * line; the option-parsing tests replace this file. */
#include <string.h>

#include "rhc_opts.h"
#include "client_tests.h"

START_TEST(test_stdio_line)
{
    char *argv[] = { "relay-https", "stdio", "https://relay.example/r//", "echo", NULL };
    struct rhc_opts o;

    ck_assert_int_eq(rhc_opts_parse(4, argv, &o), -1);
    ck_assert_int_eq(o.mode, RHC_MODE_STDIO);
    ck_assert_str_eq(o.base_url, "https://relay.example/r");
    ck_assert_str_eq(o.target, "echo");
    ck_assert_int_eq(o.transport, RHC_XP_AUTO);
    rhc_opts_free(&o);
}
END_TEST

Suite *opts_suite(void)
{
    Suite *s = suite_create("client options");
    TCase *tc = tcase_create("command line");

    tcase_add_test(tc, test_stdio_line);
    suite_add_tcase(s, tc);
    return s;
}
