/* Runs every unit-test suite; the exit status is non-zero when a test failed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include "tests.h"

int main(void)
{
    /* the relay core writes to sockets whose peer may be gone; the daemon that
     * normally hosts it ignores SIGPIPE, so the tests do the same */
    signal(SIGPIPE, SIG_IGN);

    SRunner *sr = srunner_create(frame_suite());
    srunner_add_suite(sr, util_suite());
    srunner_add_suite(sr, ring_suite());
    srunner_add_suite(sr, ring_model_suite());
    srunner_add_suite(sr, crc32c_suite());
    srunner_add_suite(sr, clients_suite());
    srunner_add_suite(sr, registry_suite());
    srunner_add_suite(sr, stats_suite());
    srunner_add_suite(sr, rate_suite());
    srunner_add_suite(sr, ipc_suite());
    srunner_add_suite(sr, core_suite());
    srunner_add_suite(sr, dgram_suite());
    srunner_add_suite(sr, allow_suite());
    srunner_add_suite(sr, shard_suite());
    srunner_add_suite(sr, resolve_suite());

    srunner_run_all(sr, CK_NORMAL);   /* prints the summary and every failure */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
