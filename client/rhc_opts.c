/* relay-https client: command line parsing, help text, logging. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "rh_util.h"
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

static const char usage_text[] =
"usage: relay-https forward -L [ADDR:]PORT [options] URL TARGET\n"
"       relay-https stdio [options] URL TARGET\n"
"       relay-https --help | --version\n";

static const char help_text[] =
"\n"
"Carries TCP connections over HTTPS to a mod_relay_https endpoint.\n"
"URL is the relay base (e.g. https://example.com/relay), TARGET a target name\n"
"the server declares (RelayTarget).\n"
"\n"
"Modes:\n"
"  forward      listen locally; every accepted connection becomes one tunnel\n"
"  stdio        carry stdin/stdout over one tunnel (ssh ProxyCommand)\n"
"\n"
"Options:\n"
"  -L, --listen [ADDR:]PORT   forward: where to listen (ADDR default 127.0.0.1;\n"
"                             IPv6 as [ADDR]:PORT; PORT 0 picks a free port)\n"
"      --transport MODE       how bytes travel: auto (default), duplex, stream,\n"
"                             batch, or PUSH/PULL to mix stream and batch\n"
"                             (e.g. batch/stream; see below)\n"
"      --no-resume            do not ask the server to keep sent bytes until\n"
"                             acknowledged: a cut connection then ends the\n"
"                             tunnel (default: every cut is resumed)\n"
"      --idle-push SECONDS    end a stream push after this long with nothing\n"
"                             to send (the next bytes start a new one), so\n"
"                             an idle tunnel holds one request on the server,\n"
"                             not two; 0 keeps it open (default 60)\n"
"  -u, --user USER:PASS       credentials for the server\n"
"      --auth METHOD          basic (default: sent at once), digest or any\n"
"                             (digest and any use HTTP/1.1)\n"
"  -H, --header 'Name: value' extra request header (repeatable)\n"
"      --cacert FILE          CA certificates to verify the server\n"
"  -k, --insecure             do not verify the server's certificate\n"
"      --cert FILE            client certificate (PEM)\n"
"      --key FILE             client certificate key (PEM)\n"
"  -x, --proxy URL            HTTP(S) proxy (default: https_proxy, HTTPS_PROXY,\n"
"                             all_proxy from the environment; no_proxy applies)\n"
"  -U, --proxy-user USER:PASS proxy credentials; '-U :' with --proxy-auth\n"
"                             negotiate uses the Kerberos/GSS-API credentials\n"
"                             of the environment\n"
"      --proxy-auth METHOD    basic, digest, ntlm, negotiate or any (default any)\n"
"      --proxy-cacert FILE    CA certificates to verify an HTTPS proxy\n"
"      --proxy-insecure       do not verify the proxy's certificate\n"
"      --connect-timeout SECONDS  connection timeout (default 15)\n"
"      --http1.1              use HTTP/1.1 only\n"
"      --http2                use HTTP/2 over TLS when the server offers it (ALPN;\n"
"                             the default for --transport auto and duplex)\n"
"      --http2-prior-knowledge  speak HTTP/2 at once (also on http:// URLs)\n"
"  -v, --verbose              say what happens (transport choices, fallbacks);\n"
"                             -vv adds libcurl's trace (session secrets and\n"
"                             credentials are masked)\n"
"  -h, --help                 this text\n"
"  -V, --version              version\n"
"\n"
"Transports:\n"
"  duplex   one request carries both directions (needs HTTP/2 end to end)\n"
"  stream   one long upload and one long download (direct paths, CONNECT\n"
"           proxies, intermediaries that stream)\n"
"  batch    complete requests with Content-Length, several in flight, and\n"
"           long-poll downloads: passes proxies that buffer whole bodies\n"
"  auto     duplex when the connection is HTTP/2, else stream; falls back\n"
"           (duplex, stream, batch) when an intermediary holds bytes back, and\n"
"           later sessions of the same process start with what worked\n"
"\n"
"Exit codes:\n"
"   0  ok\n"
"   1  other error\n"
"   2  usage error\n"
"   3  server or proxy unreachable (DNS, connect, timeout)\n"
"   4  TLS verification or handshake failed (a client certificate refused\n"
"      under TLS 1.3 may show as 3 when the server drops the connection first)\n"
"   5  authentication or authorization refused by the server (401/403)\n"
"   6  proxy refused or wants authentication (407, 403, CONNECT refused)\n"
"   7  unknown target (404 on open)\n"
"   8  target refused or unreachable (502/504 on open)\n"
"   9  session lost (reset, protocol error, connection cut)\n"
"  10  local error (bind/listen failed, stdin/stdout error)\n"
"forward exits non-zero only when it cannot start; failed tunnels are logged.\n";

enum {
    OPT_CACERT = 256, OPT_CERT, OPT_KEY, OPT_PROXY_CACERT, OPT_PROXY_INSECURE,
    OPT_CONNECT_TIMEOUT, OPT_HTTP11, OPT_HTTP2, OPT_HTTP2_PK, OPT_TRANSPORT, OPT_AUTH,
    OPT_PROXY_AUTH, OPT_NO_RESUME, OPT_IDLE_PUSH
};

static const struct option long_opts[] = {
    { "listen",          required_argument, NULL, 'L' },
    { "user",            required_argument, NULL, 'u' },
    { "header",          required_argument, NULL, 'H' },
    { "cacert",          required_argument, NULL, OPT_CACERT },
    { "insecure",        no_argument,       NULL, 'k' },
    { "cert",            required_argument, NULL, OPT_CERT },
    { "key",             required_argument, NULL, OPT_KEY },
    { "proxy",           required_argument, NULL, 'x' },
    { "proxy-user",      required_argument, NULL, 'U' },
    { "proxy-cacert",    required_argument, NULL, OPT_PROXY_CACERT },
    { "proxy-insecure",  no_argument,       NULL, OPT_PROXY_INSECURE },
    { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
    { "http1.1",         no_argument,       NULL, OPT_HTTP11 },
    { "http2",           no_argument,       NULL, OPT_HTTP2 },
    { "http2-prior-knowledge", no_argument, NULL, OPT_HTTP2_PK },
    { "transport",       required_argument, NULL, OPT_TRANSPORT },
    { "no-resume",       no_argument,       NULL, OPT_NO_RESUME },
    { "idle-push",       required_argument, NULL, OPT_IDLE_PUSH },
    { "auth",            required_argument, NULL, OPT_AUTH },
    { "proxy-auth",      required_argument, NULL, OPT_PROXY_AUTH },
    { "verbose",         no_argument,       NULL, 'v' },
    { "help",            no_argument,       NULL, 'h' },
    { "version",         no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rhc_vlog(0, fmt, ap);
    va_end(ap);
    fputs(usage_text, stderr);
    fputs("Try 'relay-https --help' for more.\n", stderr);
    return RHC_EXIT_USAGE;
}

static void print_version(void)
{
    curl_version_info_data *ci = curl_version_info(CURLVERSION_NOW);

    printf("relay-https %s (libcurl %s%s%s)\n", RHC_VERSION, ci->version,
           ci->ssl_version ? ", " : "", ci->ssl_version ? ci->ssl_version : "");
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

int rhc_opts_parse(int argc, char **argv, struct rhc_opts *o)
{
    int rc = -1;
    int c;

    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 15000;
    o->park_ms = 60000;

    if (argc < 2)
        return usage_error("missing mode");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(usage_text, stdout);
        fputs(help_text, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        print_version();
        return 0;
    }
    if (!strcmp(argv[1], "forward"))
        o->mode = RHC_MODE_FORWARD;
    else if (!strcmp(argv[1], "stdio"))
        o->mode = RHC_MODE_STDIO;
    else
        return usage_error("unknown mode '%s'", argv[1]);

    /* The mode takes argv[0]'s place for getopt; GNU getopt lets options follow
     * the positional arguments too. */
    argc -= 1;
    argv += 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":L:u:H:kx:U:vhV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (o->mode != RHC_MODE_FORWARD)
                return usage_error("-L is for forward mode only");
            if ((rc = parse_listen(optarg, o)) >= 0)
                return rc;
            break;
        case 'u':
            free((char *)o->user);
            o->user = take_secret(optarg);
            break;
        case 'U':
            free((char *)o->proxy_user);
            o->proxy_user = take_secret(optarg);
            break;
        case 'H': {
            const char *colon = strchr(optarg, ':');
            if (!colon || colon == optarg || strpbrk(optarg, "\r\n"))
                return usage_error("-H %s: expected 'Name: value'", optarg);
            struct curl_slist *l = curl_slist_append(o->headers, optarg);
            if (!l)
                return usage_error("out of memory");
            o->headers = l;
            break;
        }
        case OPT_CACERT:
            if ((rc = check_file("--cacert", optarg)) >= 0)
                return rc;
            o->cacert = optarg;
            break;
        case OPT_CERT:
            if ((rc = check_file("--cert", optarg)) >= 0)
                return rc;
            o->cert = optarg;
            break;
        case OPT_KEY:
            if ((rc = check_file("--key", optarg)) >= 0)
                return rc;
            o->key = optarg;
            break;
        case OPT_PROXY_CACERT:
            if ((rc = check_file("--proxy-cacert", optarg)) >= 0)
                return rc;
            o->proxy_cacert = optarg;
            break;
        case 'k':
            o->insecure = 1;
            break;
        case OPT_PROXY_INSECURE:
            o->proxy_insecure = 1;
            break;
        case OPT_NO_RESUME:
            o->no_resume = 1;
            break;
        case OPT_IDLE_PUSH: {
            char *end = NULL;
            errno = 0;
            double s = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(s >= 0) || s > 86400)
                return usage_error("--idle-push %s: expected seconds (0 to 86400)", optarg);
            o->park_ms = (long)(s * 1000.0 + 0.5);
            break;
        }
        case 'x':
            o->proxy = optarg;
            break;
        case OPT_CONNECT_TIMEOUT: {
            char *end = NULL;
            errno = 0;
            double s = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(s > 0) || s > 3600)
                return usage_error("--connect-timeout %s: expected seconds (0 < s <= 3600)", optarg);
            o->connect_timeout_ms = (long)(s * 1000.0 + 0.5);
            if (o->connect_timeout_ms < 1)
                o->connect_timeout_ms = 1;
            break;
        }
        case OPT_HTTP11:
            o->http_version = CURL_HTTP_VERSION_1_1;
            break;
        case OPT_HTTP2:
            o->http_version = CURL_HTTP_VERSION_2TLS;
            break;
        case OPT_HTTP2_PK:
            o->http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
            break;
        case OPT_TRANSPORT: {
            unsigned long v, d;
            char up[16];
            const char *slash = strchr(optarg, '/');
            size_t n = slash ? (size_t)(slash - optarg) : strlen(optarg);
            snprintf(up, sizeof(up), "%.*s", (int)(n < sizeof(up) ? n : sizeof(up) - 1), optarg);
            if (lookup(transports, up, &v) < 0 || (slash && lookup(transports, slash + 1, &d) < 0))
                return usage_error("--transport %s: expected auto, duplex, stream or batch "
                                   "(or PUSH/PULL: stream/batch, batch/stream)", optarg);
            if (!slash)
                d = v;
            if (v != d && (v < RHC_XP_STREAM || d < RHC_XP_STREAM))
                return usage_error("--transport %s: only stream and batch mix", optarg);
            o->transport = (enum rhc_transport)v;
            o->transport_down = (enum rhc_transport)d;
            break;
        }
        case OPT_AUTH:
            if (lookup(server_auths, optarg, &o->auth) < 0)
                return usage_error("--auth %s: expected basic, digest or any", optarg);
            break;
        case OPT_PROXY_AUTH:
            if (lookup(proxy_auths, optarg, &o->proxy_auth) < 0)
                return usage_error("--proxy-auth %s: expected basic, digest, ntlm, negotiate or any",
                                   optarg);
            break;
        case 'v':
            ++o->verbose;
            break;
        case 'h':
            fputs(usage_text, stdout);
            fputs(help_text, stdout);
            return 0;
        case 'V':
            print_version();
            return 0;
        case ':':
            return usage_error("option %s needs an argument", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return usage_error("expected URL and TARGET (%d argument%s given)",
                           argc - optind, argc - optind == 1 ? "" : "s");
    if ((rc = set_url(argv[optind], o)) >= 0)
        return rc;
    if (!rh_valid_target_name(argv[optind + 1]))
        return usage_error("%s: TARGET must be 1 to 63 of [A-Za-z0-9._-]", argv[optind + 1]);
    o->target = strdup(argv[optind + 1]);
    if (o->mode == RHC_MODE_FORWARD && !o->listen_port)
        return usage_error("forward needs -L [ADDR:]PORT");
    if (o->key && !o->cert)
        return usage_error("--key needs --cert");
    if (o->auth && !o->user)
        return usage_error("--auth needs --user USER:PASS");

    if (!o->base_url || !o->target)
        return usage_error("out of memory");
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
