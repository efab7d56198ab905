/* Unit tests for the httpd-independent relay core (Debian's check library). */
#ifndef RH_UNIT_TESTS_H
#define RH_UNIT_TESTS_H

#include <check.h>

Suite *util_suite(void);
Suite *frame_suite(void);
Suite *ring_suite(void);
Suite *ring_model_suite(void);
Suite *crc32c_suite(void);
Suite *registry_suite(void);
Suite *stats_suite(void);
Suite *rate_suite(void);
Suite *clients_suite(void);
Suite *ipc_suite(void);
Suite *core_suite(void);
Suite *dgram_suite(void);
Suite *allow_suite(void);
Suite *shard_suite(void);
Suite *resolve_suite(void);

#endif
