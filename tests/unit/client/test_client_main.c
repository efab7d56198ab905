/* Runs the client's unit-test suites; the exit status is non-zero when a test
 * failed. */
#include <stdlib.h>

#include "client_tests.h"

int main(void)
{
    SRunner *sr = srunner_create(opts_suite());

    srunner_run_all(sr, CK_NORMAL);   /* prints the summary and every failure */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
