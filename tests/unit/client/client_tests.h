/* Unit tests of the relay-https client (Debian's check library): the pure
 * decisions of the tunnel (outcome classifiers, exit codes and messages, the up
 * buffer, transport choice) and the command line. */
#ifndef RHC_CLIENT_TESTS_H
#define RHC_CLIENT_TESTS_H

#include <check.h>

Suite *outcome_suite(void);
Suite *errors_suite(void);
Suite *upbuf_suite(void);
Suite *choose_suite(void);
Suite *check_suite(void);      /* tests/unit/client/test_check.c */
Suite *opts_suite(void);        /* tests/unit/client/test_opts.c */
Suite *config_suite(void);      /* tests/unit/client/test_config.c */
Suite *stats_suite(void);       /* tests/unit/client/test_stats.c */
Suite *help_suite(void);
Suite *liveness_suite(void);   /* tests/unit/client/test_liveness.c */
Suite *heap_suite(void);        /* tests/unit/client/test_heap.c */
Suite *gate_suite(void);        /* tests/unit/client/test_gate.c */
Suite *watch_suite(void);       /* tests/unit/client/test_watch.c */
Suite *ack_suite(void);         /* tests/unit/client/test_ack.c */
Suite *socks_suite(void);       /* tests/unit/client/test_socks.c */        /* tests/unit/client/test_help.c */

#endif
