/* The relay core event loop, driven exactly as the httpd handler drives it
 * (the fixture: test_core_fx.h). This file puts the suite together; the tests
 * are in test_core_*.c, one group a file. */
#include "test_core_fx.h"

static TCase *core_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_set_timeout(tc, 30);
    return tc;
}

Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    core_tcases t = {
        .requests = core_tcase("requests"),
        .data = core_tcase("data"),
        .batch = core_tcase("batch"),
        .timers = core_tcase("timers"),
        .flow = core_tcase("flow"),
        .integrity = core_tcase("integrity"),
    };

    core_open_tests(&t);
    core_data_tests(&t);
    core_batch_tests(&t);
    core_resets_tests(&t);
    core_timers_tests(&t);
    core_flow_tests(&t);
    core_check_tests(&t);
    core_pair_tests(&t);
    core_watch_tests(&t);

    suite_add_tcase(s, t.requests);
    suite_add_tcase(s, t.data);
    suite_add_tcase(s, t.batch);
    suite_add_tcase(s, t.timers);
    suite_add_tcase(s, t.flow);
    suite_add_tcase(s, t.integrity);
    return s;
}
