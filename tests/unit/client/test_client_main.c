/* Runs every client unit-test suite; the exit status is non-zero when a test
 * failed. */
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "client_tests.h"

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);

    SRunner *sr = srunner_create(outcome_suite());
    srunner_add_suite(sr, errors_suite());
    srunner_add_suite(sr, upbuf_suite());
    srunner_add_suite(sr, choose_suite());
    srunner_add_suite(sr, opts_suite());
    srunner_add_suite(sr, help_suite());
    srunner_add_suite(sr, config_suite());
    srunner_add_suite(sr, stats_suite());
    srunner_add_suite(sr, check_suite());
    srunner_add_suite(sr, socks_suite());
    srunner_add_suite(sr, liveness_suite());
    srunner_add_suite(sr, heap_suite());
    srunner_add_suite(sr, gate_suite());
    srunner_add_suite(sr, watch_suite());
    srunner_add_suite(sr, ack_suite());

    srunner_run_all(sr, CK_NORMAL);   /* prints the summary and every failure */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
