/* relay-https client, private to rhc_opts.c, rhc_cmd.c and rhc_creds.c: the
 * option table's rows, and what the command line reader shares. */
#ifndef RHC_OPTS_INT_H
#define RHC_OPTS_INT_H

#include <getopt.h>
#include <stddef.h>

#include "rhc_opts.h"

/* Every option is one row of opt_defs: its getopt_long entry, a setter, and what
 * --help says of it (relay-https(1) names it alike: test_manpages.py). The
 * setters shared by several options find their field through 'field' (offsetof
 * in struct rhc_opts) and take 'value' as what a flag sets. A setter returns -1
 * to go on, or the exit code to leave with (0 after --help and --version). The
 * strings a setter gets live as long as the struct rhc_cmd. */
struct opt_def;
typedef int (*opt_set_fn)(struct rhc_opts *o, const struct opt_def *d, char *arg);

enum {
    OF_CLI = 1,         /* on the command line only (not in a config file) */
    OF_GLOBAL = 2,      /* for the whole process: not in a config file's [section] */
    OF_USERPASS = 4,    /* USER:PASS: the password is masked in argv */
    OF_URLPASS = 8,     /* a URL: a password in it is masked in argv */
    OF_LISTEN = 16      /* -L: makes a route of its own */
};

struct opt_def {
    const char *name;   /* the long name */
    int has_arg;
    int val;            /* the short option, or an OPT_* for a long-only one */
    opt_set_fn set;
    size_t field;
    long value;
    unsigned flags;     /* OF_* */
    const char *arg;    /* the argument's name in --help and the man page; NULL: none */
    const char *help;   /* --help's text: one paragraph, wrapped when printed */
};

enum {
    OPT_CACERT = 256, OPT_CERT, OPT_KEY, OPT_PROXY_CACERT, OPT_PROXY_INSECURE,
    OPT_CONNECT_TIMEOUT, OPT_HTTP11, OPT_HTTP2, OPT_HTTP2_PK, OPT_TRANSPORT, OPT_AUTH,
    OPT_PROXY_AUTH, OPT_NO_RESUME, OPT_NO_WATCH, OPT_IDLE_PUSH, OPT_URL, OPT_TARGET, OPT_NETRC,
    OPT_NETRC_FILE, OPT_STATS, OPT_STATS_JSON, OPT_RETRY_START, OPT_TO, OPT_ACCEPTS,
    OPT_LOCAL_USER, OPT_MAX_CONNS, OPT_HANDSHAKE,
    OPT_UDP_IDLE, OPT_UDP_QUEUE, OPT_UDP_FLOWS
};

#define RHC_OPTS_MAX 64     /* rows in opt_defs, at most */

const struct opt_def *rhc_opt_by_val(int val);
/* By long name, or a one-letter short name (config files). */
const struct opt_def *rhc_opt_by_name(const char *name);
/* getopt_long's view of the table: longs has room for RHC_OPTS_MAX + 1, shorts
 * for 2 * RHC_OPTS_MAX + 2. */
void rhc_opt_getopt_tables(struct option *longs, char *shorts);
/* What getopt_long refused: c is ':' (no argument) or '?' (unknown). */
int rhc_opt_getopt_error(int c, char **argv);

/* A usage error: the message, then the usage lines; returns RHC_EXIT_USAGE. */
int rhc_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A config file's or the environment's: the message only; RHC_EXIT_USAGE. */
int rhc_config_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void rhc_opts_defaults(struct rhc_opts *o, enum rhc_mode mode);
void rhc_opts_free(struct rhc_opts *o);

/* A copy of s that lives as long as cmd; NULL when out of memory. */
char *rhc_cmd_keep(struct rhc_cmd *cmd, const char *s);

#endif
