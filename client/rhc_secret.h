/* relay-https client: keeping secrets out of sight. Passwords are masked in
 * argv (ps shows argv for the life of the process), asked for on the terminal,
 * and files that hold them must be the user's own and unreadable to others. */
#ifndef RHC_SECRET_H
#define RHC_SECRET_H

#include <stddef.h>

/* Overwrites the password of "USER:PASS" (after the first ':') with '*'. */
void rhc_secret_mask_userpass(char *arg);

/* Overwrites the password of a URL's "scheme://USER:PASS@host" with '*'. */
void rhc_secret_mask_url(char *url);

/* Asks on the controlling terminal (/dev/tty) with echo off. Returns a malloc'd
 * line without its newline, or NULL when there is no terminal or it failed. */
char *rhc_secret_prompt(const char *prompt);

/* Reads a whole file of at most max bytes, after checking that it belongs to
 * this user (or root) and that nobody else can write it; 'secret' adds that
 * nobody else can read it. Returns a malloc'd NUL-terminated text, or NULL
 * with a message in err ("PATH: ..."). */
char *rhc_secret_read_file(const char *path, size_t max, int secret, char *err, size_t errsz);

/* 1 when nobody but the owner can read path; else 0 with a message in err. */
int rhc_secret_private(const char *path, char *err, size_t errsz);

#endif
