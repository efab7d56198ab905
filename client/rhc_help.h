/* relay-https client: the usage lines, the --help text and the --version line. */
#ifndef RHC_HELP_H
#define RHC_HELP_H

#include <stdio.h>

/* The three "usage:" lines (after a usage error: to stderr). */
void rhc_help_usage(FILE *f);

/* What --help prints: the usage lines, then options, transports, exit codes. */
void rhc_help_full(FILE *f);

/* What --version prints: the client's and libcurl's versions (to stdout). */
void rhc_help_version(void);

#endif
