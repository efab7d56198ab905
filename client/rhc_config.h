/* relay-https client: reading a config file (-K/--config). The syntax is
 * curl's config syntax with INI sections:
 *
 *   # a comment
 *   proxy = http://proxy.corp:3128     (also "proxy: ...", "proxy ...", "--proxy ...")
 *   insecure                           (a flag: the option alone)
 *   header = "X-Team: blue"            (double quotes keep spaces; \" \\ \t \n \r)
 *   [ssh]                              (a tunnel: the lines below are its own)
 *   listen = 2222
 *
 * An unquoted value is the rest of the line with its outer spaces trimmed. What
 * an option means is rhc_opts.c's business: this file only splits lines. */
#ifndef RHC_CONFIG_H
#define RHC_CONFIG_H

#include <stddef.h>

#define RHC_CONFIG_MAX (1024u * 1024)  /* a config file larger than this is refused */

/* One line's content: section is NULL before the first [section]; value is
 * NULL for an option given alone. Returns 0 to go on, or non-zero to stop (the
 * callback has reported why). */
typedef int (*rhc_config_fn)(void *arg, const char *section, const char *name,
                             const char *value, int line);

/* Splits text (NUL-terminated) into calls of fn. Returns 0, fn's non-zero
 * value, or -1 after writing a syntax error ("line N: ...") into err. */
int rhc_config_parse(char *text, rhc_config_fn fn, void *arg, char *err, size_t errsz);

#endif
