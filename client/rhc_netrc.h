/* relay-https client: credentials from a .netrc file (--netrc, --netrc-file),
 * read the way curl reads it: "machine HOST login USER password PASS" entries,
 * a "default" entry for any other host, "account" ignored, "macdef" bodies
 * skipped up to the next empty line, tokens separated by white space, double
 * quotes around a token that has spaces (\" and \\ inside), '#' comments. */
#ifndef RHC_NETRC_H
#define RHC_NETRC_H

#include <stddef.h>

/* Finds the entry for host in text; when login is not NULL only an entry with
 * that login counts. Returns 1 and malloc'd *user and *pass (the password may be
 * NULL when the entry has none), 0 when nothing matches, -1 when out of memory.
 * The first matching machine wins; default only when no machine matched. */
int rhc_netrc_lookup(const char *text, const char *host, const char *login,
                     char **user, char **pass);

#endif
