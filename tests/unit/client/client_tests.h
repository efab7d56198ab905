/* Unit tests for the relay-https client (Debian's check library). */
#ifndef RHC_CLIENT_TESTS_H
#define RHC_CLIENT_TESTS_H

#include <check.h>

Suite *opts_suite(void);

#endif
