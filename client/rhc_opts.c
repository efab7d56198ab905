/* relay-https client: the options (opt_defs, one row each: what it sets in
 * struct rhc_opts and what --help says of it); logging is rhc_log.c. How the
 * command line, config files and credentials make routes of them is rhc_cmd.c;
 * rhc_help.c lays out the usage and help text. */
#define _GNU_SOURCE
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
#include "rhc_opts_int.h"
#include "rhc_pxy.h"
#include "rhc_serve.h"
#include "rhc_udp.h"

int rhc_usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(0, fmt, ap);
    va_end(ap);
    rhc_help_usage(stderr);
    fputs("Try 'relay-https --help' for more.\n", stderr);
    return RHC_EXIT_USAGE;
}


int rhc_config_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(0, fmt, ap);
    va_end(ap);
    return RHC_EXIT_USAGE;
}

/* Files are checked here so that a typo is a usage error, not a TLS error later. */
static int check_file(const char *opt, const char *path)
{
    if (access(path, R_OK) != 0)
        return rhc_usage_error("%s %s: %s", opt, path, strerror(errno));
    return -1;
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

/* PORT as -L takes it: 1 to 5 digits, at most 65535. */
static int valid_port(const char *port)
{
    size_t plen = strlen(port);
    char *end = NULL;
    long pv = strtol(port, &end, 10);

    return plen > 0 && plen <= 5 && !*end && pv >= 0 && pv <= 65535 &&
           isdigit((unsigned char)port[0]);
}

/* "...:TARGET" at the end of a -L: cut off (spec shortened) and returned, or NULL
 * when the part after the last ':' is a port (all digits; so a target named
 * only by digits cannot be given this way) or no target name. */
static char *cut_target(char *spec)
{
    char *colon = strrchr(spec, ':');

    if (!colon || strspn(colon + 1, "0123456789") == strlen(colon + 1) ||
        !rh_valid_target_name(colon + 1))
        return NULL;
    *colon = '\0';
    return colon + 1;
}

/* -L for a UNIX socket: /PATH, ./PATH or unix:PATH, then maybe :TARGET. */
static int parse_listen_unix(char *spec, struct rhc_opts *o, const char *arg)
{
    char *path = !strncmp(spec, "unix:", 5) ? spec + 5 : spec;

    if (!*path)
        return rhc_usage_error("-L %s: expected a socket path", arg);
    if (strlen(path) >= 108)   /* sun_path */
        return rhc_usage_error("-L %s: socket path too long", arg);
    o->listen_path = strdup(path);
    return -1;
}

/* -L [ADDR:]PORT[:TARGET], [IPV6]:PORT[:TARGET], or a UNIX socket path. */
static int parse_listen(const char *arg, struct rhc_opts *o)
{
    char spec[512];
    const char *port;
    char *host = NULL, *target;
    int rc = -1;

    if (snprintf(spec, sizeof(spec), "%s", arg) >= (int)sizeof(spec))
        return rhc_usage_error("-L %s: too long", arg);
    free(o->listen_host);
    free(o->listen_port);
    free(o->listen_path);
    o->listen_host = o->listen_port = o->listen_path = NULL;
    o->udp = !strncmp(spec, "udp:", 4);
    if (o->udp)
        memmove(spec, spec + 4, strlen(spec + 4) + 1);
    int is_unix = spec[0] == '/' || !strncmp(spec, "./", 2) || !strncmp(spec, "unix:", 5);
    if (is_unix && o->udp)
        return rhc_usage_error("-L %s: udp: takes [ADDR:]PORT, not a UNIX socket", arg);
    if ((target = cut_target(spec)))
        o->target = (char *)arg + (target - spec) + (o->udp ? 4 : 0);   /* arg's tail */
    if (is_unix)
        return parse_listen_unix(spec, o, arg);
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':')
            return rhc_usage_error("-L %s: expected [ADDR]:PORT", arg);
        host = strndup(spec + 1, (size_t)(end - spec - 1));
        port = end + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon && strchr(spec, ':') != colon)
            return rhc_usage_error("-L %s: write IPv6 addresses as [ADDR]:PORT", arg);
        host = colon ? strndup(spec, (size_t)(colon - spec)) : NULL;
        port = colon ? colon + 1 : spec;
    }
    if (!valid_port(port)) {
        rc = rhc_usage_error("-L %s: bad port", arg);
        goto leave;
    }
    o->listen_host = (host && *host) ? host : strdup("127.0.0.1");
    o->listen_port = strdup(port);
    if (o->listen_host == host)
        host = NULL;
leave:
    free(host);
    return rc;
}

static int set_url(const char *arg, struct rhc_opts *o)
{
    if (strncasecmp(arg, "https://", 8) != 0 && strncasecmp(arg, "http://", 7) != 0)
        return rhc_usage_error("%s: URL must start with https:// or http://", arg);
    if (strpbrk(arg, "?# \t\r\n"))
        return rhc_usage_error("%s: URL must not carry a query, fragment or spaces", arg);
    const char *host = strstr(arg, "://") + 3;
    if (memchr(host, '@', strcspn(host, "/")))
        /* it would show in ps and in logs */
        return rhc_usage_error("URL must not carry credentials: use -u, --netrc, "
                               "RELAY_HTTPS_USER or a config file");
    size_t n = strlen(arg);
    while (n > 0 && arg[n - 1] == '/')
        --n;
    free(o->base_url);
    o->base_url = strndup(arg, n);
    return -1;
}

/* ---------------------------------------------------------------- options */

#define OPT_FIELD(o, d, type) ((type *)(void *)((char *)(o) + (d)->field))

static int set_listen(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (o->mode != RHC_MODE_FORWARD && o->mode != RHC_MODE_PROXY)
        return rhc_usage_error("-L is for forward and proxy modes only");
    int rc = parse_listen(arg, o);
    if (rc < 0 && o->mode == RHC_MODE_PROXY && (o->listen_path || o->target))
        return rhc_usage_error("-L %s: proxy listens on [ADDR:]PORT (clients name their "
                               "destinations)", arg);
    return rc;
}

static int set_header(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    const char *colon = strchr(arg, ':');

    if (!colon || colon == arg || strpbrk(arg, "\r\n"))
        return rhc_usage_error("-H %s: expected 'Name: value'", arg);
    struct curl_slist *l = curl_slist_append(o->headers, arg);
    if (!l)
        return rhc_usage_error("out of memory");
    o->headers = l;
    return -1;
}

/* An argument used as it is. */
static int set_string(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    *OPT_FIELD(o, d, const char *) = arg;
    return -1;
}

/* --cacert, --cert, --key, --proxy-cacert, --netrc-file: a file that must be
 * readable now. */
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
        return rhc_usage_error("--idle-push %s: expected seconds (0 to 86400)", arg);
    o->park_ms = (long)(s * 1000.0 + 0.5);
    return -1;
}

/* arg as milliseconds when it is seconds from min to max (NaN fails), else -1. */
static long seconds_in(const char *arg, double min, double max)
{
    double s;

    return parse_seconds(arg, &s) == 0 && s >= min && s <= max ? (long)(s * 1000.0 + 0.5) : -1;
}

static int set_stats(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    /* below a tenth of a second the reports would be most of the work */
    if ((o->stats_ms = seconds_in(arg, 0.1, 86400)) < 0)
        return rhc_usage_error("--stats %s: expected seconds (0.1 to 86400)", arg);
    return -1;
}

static int set_connect_timeout(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    double s;

    if (parse_seconds(arg, &s) < 0 || !(s > 0) || s > 3600)
        return rhc_usage_error("--connect-timeout %s: expected seconds (0 < s <= 3600)", arg);
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
        return rhc_usage_error("--transport %s: expected auto, duplex, stream or batch "
                           "(or PUSH/PULL: stream/batch, batch/stream)", arg);
    if (!slash)
        down = v;
    if (v != down && (v < RHC_XP_STREAM || down < RHC_XP_STREAM))
        return rhc_usage_error("--transport %s: only stream and batch mix", arg);
    o->transport = (enum rhc_transport)v;
    o->transport_down = (enum rhc_transport)down;
    return -1;
}

static int set_auth(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (lookup(server_auths, arg, &o->auth) < 0)
        return rhc_usage_error("--auth %s: expected basic, digest or any", arg);
    return -1;
}

static int set_proxy_auth(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (lookup(proxy_auths, arg, &o->proxy_auth) < 0)
        return rhc_usage_error("--proxy-auth %s: expected basic, digest, ntlm, negotiate or any",
                           arg);
    return -1;
}

static int set_url_opt(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    return set_url(arg, o);
}

static int set_target(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    if (!rh_valid_target_name(arg))
        return rhc_usage_error("%s: TARGET must be 1 to 63 of [A-Za-z0-9._-]", arg);
    o->target = arg;
    return -1;
}

/* --netrc: ~/.netrc (a missing one is no error, as in curl). */
static int set_netrc(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    o->netrc = "~";
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

/* -K is read while the command line is (see collect); here it does nothing. */
static int set_nothing(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    return -1;
}

#define F(name) offsetof(struct rhc_opts, name)

/* The order is the one the options always had: getopt_long scans this list to
 * resolve an abbreviation (--no-res), and the short options follow from it.
 * --help shows the rows in help_order instead. */
static const struct opt_def opt_defs[] = {
    { "listen",          required_argument, 'L', set_listen, 0, 0, OF_LISTEN,
      "[ADDR:]PORT[:TARGET]",
      "forward, proxy: where to listen (proxy: [ADDR:]PORT only; ADDR default 127.0.0.1; "
      "IPv6 as [ADDR]:PORT; PORT 0 picks a "
      "free port); forward also: a UNIX socket: /PATH[:TARGET] or unix:PATH[:TARGET] (mode "
      "0600), or a "
      "UDP port: udp:[ADDR:]PORT[:TARGET] (a session per source address, to a udp: target). "
      "Repeatable: each -L is a tunnel of its own, to its TARGET or to the TARGET after URL" },
    { "user",            required_argument, 'u', set_string, F(user), 0, OF_USERPASS,
      "USER[:PASS]",
      "credentials for the server; without :PASS the password comes from --netrc, "
      "RELAY_HTTPS_PASSWORD or a prompt on the terminal" },
    { "header",          required_argument, 'H', set_header, 0, 0, 0,
      "'Name: value'", "extra request header (repeatable)" },
    { "cacert",          required_argument, OPT_CACERT, set_file, F(cacert), 0, 0,
      "FILE", "CA certificates to verify the server" },
    { "insecure",        no_argument,       'k', set_int_flag, F(insecure), 1, 0,
      NULL, "do not verify the server's certificate" },
    { "cert",            required_argument, OPT_CERT, set_file, F(cert), 0, 0,
      "FILE", "client certificate (PEM)" },
    { "key",             required_argument, OPT_KEY, set_file, F(key), 0, 0,
      "FILE", "client certificate key (PEM)" },
    { "proxy",           required_argument, 'x', set_string, F(proxy), 0, OF_URLPASS,
      "URL",
      "HTTP(S) proxy (default: https_proxy, HTTPS_PROXY, all_proxy from the environment; "
      "no_proxy applies)" },
    { "proxy-user",      required_argument, 'U', set_string, F(proxy_user), 0, OF_USERPASS,
      "USER[:PASS]",
      "proxy credentials (the password as for -u, from RELAY_HTTPS_PROXY_PASSWORD); '-U :' "
      "with --proxy-auth negotiate uses the Kerberos/GSS-API credentials of the environment" },
    { "proxy-cacert",    required_argument, OPT_PROXY_CACERT, set_file, F(proxy_cacert), 0, 0,
      "FILE", "CA certificates to verify an HTTPS proxy" },
    { "proxy-insecure",  no_argument,       OPT_PROXY_INSECURE, set_int_flag,
      F(proxy_insecure), 1, 0,
      NULL, "do not verify the proxy's certificate" },
    { "connect-timeout", required_argument, OPT_CONNECT_TIMEOUT, set_connect_timeout, 0, 0, 0,
      "SECONDS", "connection timeout (default 15)" },
    { "http1.1",         no_argument,       OPT_HTTP11, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_1_1, 0,
      NULL, "use HTTP/1.1 only" },
    { "http2",           no_argument,       OPT_HTTP2, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_2TLS, 0,
      NULL,
      "use HTTP/2 over TLS when the server offers it (ALPN; the default for --transport auto "
      "and duplex)" },
    { "http2-prior-knowledge", no_argument, OPT_HTTP2_PK, set_long_flag, F(http_version),
      CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE, 0,
      NULL, "speak HTTP/2 at once (also on http:// URLs)" },
    { "transport",       required_argument, OPT_TRANSPORT, set_transport, 0, 0, 0,
      "MODE",
      "how bytes travel: auto (default), duplex, stream, batch, or PUSH/PULL to mix stream and "
      "batch (e.g. batch/stream; see below)" },
    { "no-resume",       no_argument,       OPT_NO_RESUME, set_int_flag, F(no_resume), 1, 0,
      NULL,
      "do not ask the server to keep sent bytes until acknowledged: a cut connection then ends "
      "the tunnel (default: every cut is resumed)" },
    { "no-watch",        no_argument,       OPT_NO_WATCH, set_int_flag, F(no_watch), 1, 0,
      NULL,
      "idle tunnels wait on their own: a batch tunnel long-polls, a stream or duplex tunnel "
      "keeps its down request (default: the idle tunnels of a -L wait in one watch request; "
      "a server without it is noticed, they wait on their own then)" },
    { "idle-push",       required_argument, OPT_IDLE_PUSH, set_idle_push, 0, 0, 0,
      "SECONDS",
      "end a stream push after this long with nothing to send (the next bytes start a new "
      "one), so an idle tunnel holds one request on the server, not two; a stream or duplex "
      "tunnel quiet this long both ways then waits in the watch (no request of its own); "
      "0 keeps its requests open (default 60)" },
    { "auth",            required_argument, OPT_AUTH, set_auth, 0, 0, 0,
      "METHOD", "basic (default: sent at once), digest or any (digest and any use HTTP/1.1)" },
    { "proxy-auth",      required_argument, OPT_PROXY_AUTH, set_proxy_auth, 0, 0, 0,
      "METHOD", "basic, digest, ntlm, negotiate or any (default any)" },
    { "stats",           required_argument, OPT_STATS, set_stats, 0, 0, OF_GLOBAL,
      "SECONDS",
      "print the routes' and total statistics this often (kill -USR1 prints them with every "
      "tunnel at once)" },
    { "stats-json",      required_argument, OPT_STATS_JSON, set_string, F(stats_json), 0,
      OF_GLOBAL,
      "FILE",
      "rewrite FILE atomically with the statistics as JSON at every report (every --stats "
      "SECONDS, default 10, and on SIGUSR1)" },
    { "retry-start",     no_argument,       OPT_RETRY_START, set_int_flag, F(retry_start), 1,
      OF_GLOBAL,
      NULL,
      "forward: when the check of the server at start fails, try again (1 s doubling to 30 s) "
      "instead of exiting; it listens once a check passed" },
    { "verbose",         no_argument,       'v', set_verbose, 0, 0, OF_GLOBAL,
      NULL,
      "say what happens (transport choices, fallbacks, the proxy in use), each line with a "
      "timestamp; -vv adds libcurl's trace (session secrets and credentials are masked)" },
    { "help",            no_argument,       'h', show_help, 0, 0, OF_CLI,
      NULL, "this text" },
    { "version",         no_argument,       'V', show_version, 0, 0, OF_CLI,
      NULL, "version" },
    { "config",          required_argument, 'K', set_nothing, 0, 0, OF_CLI,
      "FILE",
      "read options and tunnels from FILE (see CONFIG FILE in relay-https(1)); repeatable" },
    { "url",             required_argument, OPT_URL, set_url_opt, 0, 0, 0,
      "URL", "the relay base, as the URL argument" },
    { "target",          required_argument, OPT_TARGET, set_target, 0, 0, 0,
      "TARGET", "the target, as the TARGET argument" },
    { "netrc",           no_argument,       OPT_NETRC, set_netrc, 0, 0, 0,
      NULL, "credentials for the server from ~/.netrc" },
    { "netrc-file",      required_argument, OPT_NETRC_FILE, set_file, F(netrc), 0, 0,
      "FILE", "... from FILE (curl's format; mode 600)" },
    { "to",              required_argument, OPT_TO, rhc_serve_set_to, 0, 0, 0,
      "HOST:PORT", "serve: the local service each client reaches" },
    { "accepts",         required_argument, OPT_ACCEPTS, rhc_serve_set_accepts, 0, 0, 0,
      "N", "serve: listens kept waiting for clients (default 4)" },
    { "udp-idle",        required_argument, OPT_UDP_IDLE, rhc_udp_set_opt, 0, 0, 0,
      "SECONDS", "-L udp: (and proxy's UDP ASSOCIATE): a source's (a destination's) session "
      "ends after this long without a datagram (default 60)" },
    { "udp-queue",       required_argument, OPT_UDP_QUEUE, rhc_udp_set_opt, 0, 0, 0,
      "N", "-L udp: datagrams waiting per source and direction; beyond, the oldest is dropped "
      "and counted in the statistics (default 256)" },
    { "udp-flows",       required_argument, OPT_UDP_FLOWS, rhc_udp_set_opt, 0, 0, 0,
      "N", "-L udp: sources with a session at once; a new one ends the session of the one "
      "heard from least recently (default 64)" },
    { "local-user",      required_argument, OPT_LOCAL_USER, rhc_pxy_set_local_user, 0, 0,
      OF_USERPASS,
      "USER:PASS",
      "proxy: clients of the local port must log in: SOCKS5 username/password (RFC 1929), "
      "HTTP CONNECT Proxy-Authorization: Basic (default: no login)" },
    { "max-connections", required_argument, OPT_MAX_CONNS, rhc_pxy_set_max_conns, 0, 0,
      OF_GLOBAL,
      "N", "proxy: local connections at once, handshakes and tunnels (default 512)" },
    { "handshake-timeout", required_argument, OPT_HANDSHAKE, rhc_pxy_set_handshake, 0, 0,
      OF_GLOBAL,
      "SECONDS", "proxy: time a client has to name its destination (default 10)" },
};
#define N_OPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))
/* rhc_cmd.c sizes getopt's tables by RHC_OPTS_MAX */
typedef char opt_defs_fit[N_OPTS <= RHC_OPTS_MAX ? 1 : -1] __attribute__((unused));

#undef F

/* --help's order (and relay-https(1)'s), by topic: each row's val, once. */
static const int help_order[] = {
    'L', 'K', OPT_URL, OPT_TARGET, OPT_TRANSPORT, OPT_NO_RESUME, OPT_NO_WATCH,
    OPT_IDLE_PUSH,
    OPT_RETRY_START, OPT_UDP_IDLE, OPT_UDP_QUEUE, OPT_UDP_FLOWS,
    'u', OPT_NETRC, OPT_NETRC_FILE, OPT_TO, OPT_ACCEPTS,
    OPT_LOCAL_USER, OPT_MAX_CONNS, OPT_HANDSHAKE, OPT_AUTH,
    'H', OPT_CACERT, 'k', OPT_CERT, OPT_KEY,
    'x', 'U', OPT_PROXY_AUTH, OPT_PROXY_CACERT, OPT_PROXY_INSECURE,
    OPT_CONNECT_TIMEOUT, OPT_HTTP11, OPT_HTTP2, OPT_HTTP2_PK,
    'v', OPT_STATS, OPT_STATS_JSON,
    'h', 'V'
};
/* a row left out would be missing from --help (test_help.c checks each is once) */
typedef char help_order_fits[sizeof(help_order) / sizeof(help_order[0]) == N_OPTS ? 1 : -1]
    __attribute__((unused));

const struct opt_def *rhc_opt_by_val(int val)
{
    for (size_t i = 0; i < N_OPTS; ++i)
        if (opt_defs[i].val == val)
            return &opt_defs[i];
    return NULL;
}

/* By long name, or a one-letter short name (config files). */
const struct opt_def *rhc_opt_by_name(const char *name)
{
    for (size_t i = 0; i < N_OPTS; ++i)
        if (!strcmp(opt_defs[i].name, name) ||
            (opt_defs[i].val < 256 && name[0] == opt_defs[i].val && !name[1]))
            return &opt_defs[i];
    return NULL;
}

int rhc_opt_doc(size_t i, struct rhc_opt_doc *doc)
{
    const struct opt_def *d = i < N_OPTS ? rhc_opt_by_val(help_order[i]) : NULL;

    if (!d)
        return -1;
    *doc = (struct rhc_opt_doc){ d->name, d->val < 256 ? d->val : 0, d->arg, d->help };
    return 0;
}

/* getopt_long's view of opt_defs: the long options and the short ones
 * (":L:u:H:kx:U:vhVK:"; the leading ':' reports a missing argument as ':'). */
void rhc_opt_getopt_tables(struct option *longs, char *shorts)
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

int rhc_opt_getopt_error(int c, char **argv)
{
    if (c == ':')
        return rhc_usage_error("option %s needs an argument", argv[optind - 1]);
    if (optopt)
        return rhc_usage_error("unknown option -%c", optopt);
    return rhc_usage_error("unknown option %s", argv[optind - 1]);
}

void rhc_opts_defaults(struct rhc_opts *o, enum rhc_mode mode)
{
    memset(o, 0, sizeof(*o));
    o->mode = mode;
    o->connect_timeout_ms = 15000;
    o->park_ms = 60000;
}

void rhc_opts_free(struct rhc_opts *o)
{
    free(o->listen_host);
    free(o->listen_port);
    free(o->listen_path);
    free(o->base_url);
    curl_slist_free_all(o->headers);
    memset(o, 0, sizeof(*o));
}

