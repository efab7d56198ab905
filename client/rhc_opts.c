/* relay-https client: the command line (mode, options, URL, target) into struct
 * rhc_opts, and logging to stderr. The usage and help text are in rhc_help.c. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_help.h"
#include "rhc_opts.h"

int rhc_verbose;

void rhc_vlog(int level, const char *fmt, va_list ap)
{
    char line[1024];

    if (level > rhc_verbose)
        return;
    /* One write per line so that lines of a busy forward do not interleave. */
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    fprintf(stderr, "relay-https: %.*s", n, line);
    fflush(stderr);
}

void rhc_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(level, fmt, ap);
    va_end(ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(0, fmt, ap);
    va_end(ap);
    rhc_help_usage(stderr);
    fputs("Try 'relay-https --help' for more.\n", stderr);
    return RHC_EXIT_USAGE;
}

/* Files are checked here so that a typo is a usage error, not a TLS error later. */
static int check_file(const char *opt, const char *path)
{
    if (access(path, R_OK) != 0)
        return usage_error("%s %s: %s", opt, path, strerror(errno));
    return -1;
}

/* Copies a USER:PASS argument and masks the password in argv so that ps does not
 * show it for the life of the process (curl does the same). */
static char *take_secret(char *arg)
{
    char *copy = strdup(arg);
    char *colon = strchr(arg, ':');

    if (colon)
        for (char *p = colon + 1; *p; ++p)
            *p = '*';
    return copy;
}

struct word { const char *name; unsigned long value; };

/* Looks arg up in a NULL-terminated table; -1 when it is not there. */
static int lookup(const struct word *w, const char *arg, unsigned long *out)
{
    for (; w->name; ++w)
        if (!strcasecmp(w->name, arg)) {
            *out = w->value;
            return 0;
        }
    return -1;
}

static const struct word transports[] = {
    { "auto", RHC_XP_AUTO }, { "duplex", RHC_XP_DUPLEX }, { "stream", RHC_XP_STREAM },
    { "batch", RHC_XP_BATCH }, { NULL, 0 }
};
static const struct word server_auths[] = {
    { "basic", CURLAUTH_BASIC }, { "digest", CURLAUTH_DIGEST }, { "any", CURLAUTH_ANY },
    { NULL, 0 }
};
static const struct word proxy_auths[] = {
    { "basic", CURLAUTH_BASIC }, { "digest", CURLAUTH_DIGEST }, { "ntlm", CURLAUTH_NTLM },
    { "negotiate", CURLAUTH_NEGOTIATE }, { "any", CURLAUTH_ANY }, { NULL, 0 }
};

static int parse_listen(const char *arg, struct rhc_opts *o)
{
    const char *port;
    char *host = NULL;

    if (arg[0] == '[') {
        const char *end = strchr(arg, ']');
        if (!end || end[1] != ':')
            return usage_error("-L %s: expected [ADDR]:PORT", arg);
        host = strndup(arg + 1, (size_t)(end - arg - 1));
        port = end + 2;
    } else {
        const char *colon = strrchr(arg, ':');
        if (colon && strchr(arg, ':') != colon)
            return usage_error("-L %s: write IPv6 addresses as [ADDR]:PORT", arg);
        if (colon) {
            host = strndup(arg, (size_t)(colon - arg));
            port = colon + 1;
        } else {
            port = arg;
        }
    }
    size_t plen = strlen(port);
    char *end = NULL;
    long pv = strtol(port, &end, 10);
    if (plen == 0 || plen > 5 || *end || pv < 0 || pv > 65535 || !isdigit((unsigned char)port[0])) {
        free(host);
        return usage_error("-L %s: bad port", arg);
    }
    free(o->listen_host);
    free(o->listen_port);
    o->listen_host = (host && *host) ? host : (free(host), strdup("127.0.0.1"));
    o->listen_port = strdup(port);
    return -1;
}

static int set_url(const char *arg, struct rhc_opts *o)
{
    if (strncasecmp(arg, "https://", 8) != 0 && strncasecmp(arg, "http://", 7) != 0)
        return usage_error("%s: URL must start with https:// or http://", arg);
    if (strpbrk(arg, "?# \t\r\n"))
        return usage_error("%s: URL must not carry a query, fragment or spaces", arg);
    size_t n = strlen(arg);
    while (n > 0 && arg[n - 1] == '/')
        --n;
    o->base_url = strndup(arg, n);
    return -1;
}

/* ---------------------------------------------------------------- options */

/* Every option is one row of opt_defs: its getopt_long entry and a setter. The
 * setters shared by several options find their field through 'field' (offsetof
 * in struct rhc_opts) and take 'value' as what a flag sets. A setter returns -1
 * to go on, or the exit code to leave with (0 after --help and --version). */
struct opt_def;
typedef int (*opt_set_fn)(struct rhc_opts *o, const struct opt_def *d, char *arg);

struct opt_def {
    const char *name;   /* the long name */
    int has_arg;
    int val;            /* the short option, or an OPT_* for a long-only one */
    opt_set_fn set;
    size_t field;
    long value;
};

#define OPT_FIELD(o, d, type) ((type *)(void *)((char *)(o) + (d)->field))

enum {
    OPT_CACERT = 256, OPT_CERT, OPT_KEY, OPT_PROXY_CACERT, OPT_PROXY_INSECURE,
    OPT_CONNECT_TIMEOUT, OPT_HTTP11, OPT_HTTP2, OPT_HTTP2_PK, OPT_TRANSPORT, OPT_AUTH,
    OPT_PROXY_AUTH, OPT_NO_RESUME, OPT_IDLE_PUSH, OPT_RETRY_START
};

static int set_listen(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (o->mode != RHC_MODE_FORWARD)
        return usage_error("-L is for forward mode only");
    return parse_listen(arg, o);
}

/* -u, -U: USER:PASS, kept as a copy (argv is masked). */
static int set_secret(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    const char **field = OPT_FIELD(o, d, const char *);

    free((char *)*field);
    *field = take_secret(arg);
    return -1;
}

static int set_header(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    const char *colon = strchr(arg, ':');

    if (!colon || colon == arg || strpbrk(arg, "\r\n"))
        return usage_error("-H %s: expected 'Name: value'", arg);
    struct curl_slist *l = curl_slist_append(o->headers, arg);
    if (!l)
        return usage_error("out of memory");
    o->headers = l;
    return -1;
}

/* An argument used as it is (it lives in argv). */
static int set_string(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    *OPT_FIELD(o, d, const char *) = arg;
    return -1;
}

/* --cacert, --cert, --key, --proxy-cacert: a file that must be readable now. */
static int set_file(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    char opt[32];
    int rc;

    snprintf(opt, sizeof(opt), "--%s", d->name);
    if ((rc = check_file(opt, arg)) >= 0)
        return rc;
    return set_string(o, d, arg);
}

static int set_int_flag(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    *OPT_FIELD(o, d, int) = (int)d->value;
    return -1;
}

static int set_long_flag(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    *OPT_FIELD(o, d, long) = d->value;
    return -1;
}

/* Seconds as strtod reads them (fractions too); -1 when arg is not a number.
 * The caller checks the range. */
static int parse_seconds(const char *arg, double *s)
{
    char *end = NULL;

    errno = 0;
    *s = strtod(arg, &end);
    return errno || end == arg || *end ? -1 : 0;
}

static int set_idle_push(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    double s;

    /* !(s >= 0) also refuses NaN */
    if (parse_seconds(arg, &s) < 0 || !(s >= 0) || s > 86400)
        return usage_error("--idle-push %s: expected seconds (0 to 86400)", arg);
    o->park_ms = (long)(s * 1000.0 + 0.5);
    return -1;
}

static int set_connect_timeout(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    double s;

    if (parse_seconds(arg, &s) < 0 || !(s > 0) || s > 3600)
        return usage_error("--connect-timeout %s: expected seconds (0 < s <= 3600)", arg);
    o->connect_timeout_ms = (long)(s * 1000.0 + 0.5);
    if (o->connect_timeout_ms < 1)
        o->connect_timeout_ms = 1;
    return -1;
}

/* --transport MODE or PUSH/PULL (only stream and batch mix). */
static int set_transport(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    unsigned long v, down;
    char up[16];
    const char *slash = strchr(arg, '/');
    size_t n = slash ? (size_t)(slash - arg) : strlen(arg);

    snprintf(up, sizeof(up), "%.*s", (int)(n < sizeof(up) ? n : sizeof(up) - 1), arg);
    if (lookup(transports, up, &v) < 0 || (slash && lookup(transports, slash + 1, &down) < 0))
        return usage_error("--transport %s: expected auto, duplex, stream or batch "
                           "(or PUSH/PULL: stream/batch, batch/stream)", arg);
    if (!slash)
        down = v;
    if (v != down && (v < RHC_XP_STREAM || down < RHC_XP_STREAM))
        return usage_error("--transport %s: only stream and batch mix", arg);
    o->transport = (enum rhc_transport)v;
    o->transport_down = (enum rhc_transport)down;
    return -1;
}

static int set_auth(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (lookup(server_auths, arg, &o->auth) < 0)
        return usage_error("--auth %s: expected basic, digest or any", arg);
    return -1;
}

static int set_proxy_auth(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (lookup(proxy_auths, arg, &o->proxy_auth) < 0)
        return usage_error("--proxy-auth %s: expected basic, digest, ntlm, negotiate or any",
                           arg);
    return -1;
}

static int set_verbose(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    ++o->verbose;
    return -1;
}

static int show_help(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    rhc_help_full(stdout);
    return RHC_EXIT_OK;
}

static int show_version(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    rhc_help_version();
    return RHC_EXIT_OK;
}

#define F(name) offsetof(struct rhc_opts, name)

/* The order is the one the options always had: getopt_long scans this list to
 * resolve an abbreviation (--no-res), and the short options follow from it. */
static const struct opt_def opt_defs[] = {
    { "listen",          required_argument, 'L', set_listen, 0, 0 },
    { "user",            required_argument, 'u', set_secret, F(user), 0 },
    { "header",          required_argument, 'H', set_header, 0, 0 },
    { "cacert",          required_argument, OPT_CACERT, set_file, F(cacert), 0 },
    { "insecure",        no_argument,       'k', set_int_flag, F(insecure), 1 },
    { "cert",            required_argument, OPT_CERT, set_file, F(cert), 0 },
    { "key",             required_argument, OPT_KEY, set_file, F(key), 0 },
    { "proxy",           required_argument, 'x', set_string, F(proxy), 0 },
    { "proxy-user",      required_argument, 'U', set_secret, F(proxy_user), 0 },
    { "proxy-cacert",    required_argument, OPT_PROXY_CACERT, set_file, F(proxy_cacert), 0 },
    { "proxy-insecure",  no_argument,       OPT_PROXY_INSECURE, set_int_flag,
      F(proxy_insecure), 1 },
    { "connect-timeout", required_argument, OPT_CONNECT_TIMEOUT, set_connect_timeout, 0, 0 },
    { "http1.1",         no_argument,       OPT_HTTP11, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_1_1 },
    { "http2",           no_argument,       OPT_HTTP2, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_2TLS },
    { "http2-prior-knowledge", no_argument, OPT_HTTP2_PK, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE },
    { "transport",       required_argument, OPT_TRANSPORT, set_transport, 0, 0 },
    { "no-resume",       no_argument,       OPT_NO_RESUME, set_int_flag, F(no_resume), 1 },
    { "idle-push",       required_argument, OPT_IDLE_PUSH, set_idle_push, 0, 0 },
    { "auth",            required_argument, OPT_AUTH, set_auth, 0, 0 },
    { "proxy-auth",      required_argument, OPT_PROXY_AUTH, set_proxy_auth, 0, 0 },
    { "retry-start",     no_argument,       OPT_RETRY_START, set_int_flag, F(retry_start), 1 },
    { "verbose",         no_argument,       'v', set_verbose, 0, 0 },
    { "help",            no_argument,       'h', show_help, 0, 0 },
    { "version",         no_argument,       'V', show_version, 0, 0 },
};
#define N_OPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))

#undef F

/* getopt_long's view of opt_defs: the long options and the short ones
 * (":L:u:H:kx:U:vhV"; the leading ':' reports a missing argument as ':'). */
static void getopt_tables(struct option *longs, char *shorts)
{
    *shorts++ = ':';
    for (size_t i = 0; i < N_OPTS; ++i) {
        const struct opt_def *d = &opt_defs[i];
        longs[i] = (struct option){ d->name, d->has_arg, NULL, d->val };
        if (d->val < 256) {
            *shorts++ = (char)d->val;
            if (d->has_arg == required_argument)
                *shorts++ = ':';
        }
    }
    longs[N_OPTS] = (struct option){ NULL, 0, NULL, 0 };
    *shorts = '\0';
}

static const struct opt_def *find_opt(int val)
{
    for (size_t i = 0; i < N_OPTS; ++i)
        if (opt_defs[i].val == val)
            return &opt_defs[i];
    return NULL;
}

/* What getopt_long refused: c is ':' (no argument) or '?' (unknown). */
static int getopt_error(int c, char **argv)
{
    if (c == ':')
        return usage_error("option %s needs an argument", argv[optind - 1]);
    if (optopt)
        return usage_error("unknown option -%c", optopt);
    return usage_error("unknown option %s", argv[optind - 1]);
}

/* The options after the mode; argv[0] is the mode. Leaves optind at the first
 * operand (GNU getopt moves the operands behind the options). */
static int parse_options(int argc, char **argv, struct rhc_opts *o)
{
    struct option longs[N_OPTS + 1];
    char shorts[2 * N_OPTS + 2];
    int c;

    getopt_tables(longs, shorts);
    optind = 0;     /* 0, not 1: glibc then forgets any earlier parse */
    opterr = 0;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        const struct opt_def *d = find_opt(c);
        int rc = d ? d->set(o, d, optarg) : getopt_error(c, argv);
        if (rc >= 0)
            return rc;
    }
    return -1;
}

/* ---------------------------------------------------------------- the rest */

/* argv[1]: the mode, or --help / --version alone. */
static int parse_mode(int argc, char **argv, struct rhc_opts *o)
{
    if (argc < 2)
        return usage_error("missing mode");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return show_help(o, NULL, NULL);
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))
        return show_version(o, NULL, NULL);
    if (!strcmp(argv[1], "forward"))
        o->mode = RHC_MODE_FORWARD;
    else if (!strcmp(argv[1], "stdio"))
        o->mode = RHC_MODE_STDIO;
    else
        return usage_error("unknown mode '%s'", argv[1]);
    return -1;
}

/* URL and TARGET, the n operands left after the options. */
static int parse_operands(int n, char **operands, struct rhc_opts *o)
{
    int rc;

    if (n != 2)
        return usage_error("expected URL and TARGET (%d argument%s given)", n,
                           n == 1 ? "" : "s");
    if ((rc = set_url(operands[0], o)) >= 0)
        return rc;
    if (!rh_valid_target_name(operands[1]))
        return usage_error("%s: TARGET must be 1 to 63 of [A-Za-z0-9._-]", operands[1]);
    o->target = strdup(operands[1]);
    return -1;
}

/* What only the whole command line can tell. */
static int check_together(const struct rhc_opts *o)
{
    if (o->mode == RHC_MODE_FORWARD && !o->listen_port)
        return usage_error("forward needs -L [ADDR:]PORT");
    if (o->key && !o->cert)
        return usage_error("--key needs --cert");
    if (o->auth && !o->user)
        return usage_error("--auth needs --user USER:PASS");
    if (!o->base_url || !o->target)
        return usage_error("out of memory");
    return -1;
}

int rhc_opts_parse(int argc, char **argv, struct rhc_opts *o)
{
    int rc;

    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 15000;
    o->park_ms = 60000;

    if ((rc = parse_mode(argc, argv, o)) >= 0)
        return rc;
    /* The mode takes argv[0]'s place for getopt; GNU getopt lets options follow
     * the positional arguments too. */
    if ((rc = parse_options(argc - 1, argv + 1, o)) >= 0)
        return rc;
    if ((rc = parse_operands(argc - 1 - optind, argv + 1 + optind, o)) >= 0)
        return rc;
    if ((rc = check_together(o)) >= 0)
        return rc;
    rhc_verbose = o->verbose;
    return -1;
}

void rhc_opts_free(struct rhc_opts *o)
{
    free(o->listen_host);
    free(o->listen_port);
    free(o->base_url);
    free(o->target);
    free((char *)o->user);
    free((char *)o->proxy_user);
    curl_slist_free_all(o->headers);
    memset(o, 0, sizeof(*o));
}
