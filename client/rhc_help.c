/* relay-https client: the usage lines, the --help text and the --version line.
 * The text is what users and scripts read: change it only with the options. The
 * options' part is laid out from the option table (rhc_opt_doc), so that --help
 * cannot miss an option; relay-https(1) follows it (test_manpages.py). */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "rhc_help.h"
#include "rhc_opts.h"

static const char usage_text[] =
"usage: relay-https forward -L [ADDR:]PORT[:TARGET]... [options] [URL [TARGET]]\n"
"       relay-https stdio [options] [URL] TARGET\n"
"       relay-https serve --to HOST:PORT [options] [URL] SERVICE\n"
"       relay-https proxy -L [ADDR:]PORT... [options] [URL]\n"
"       relay-https --help | --version\n";

static const char help_head[] =
"\n"
"Carries TCP connections over HTTPS to a mod_relay_https endpoint.\n"
"URL is the relay base (e.g. https://example.com/relay), TARGET a target name\n"
"the server declares (RelayTarget).\n"
"\n"
"Modes:\n"
"  forward      listen locally; every accepted connection becomes one tunnel\n"
"  stdio        carry stdin/stdout over one tunnel (ssh ProxyCommand)\n"
"  serve        offer HOST:PORT as the server's RelayService SERVICE: clients\n"
"               reach it with forward or stdio, both sides outbound only\n"
"  proxy        a local SOCKS5 and HTTP CONNECT proxy: each connection becomes\n"
"               one tunnel to the destination it names, within the server's\n"
"               RelayAllow list (e.g. curl -x socks5h://127.0.0.1:1080 URL)\n"
"\n"
"Options:\n";

/* After the options, which come from the option table (rhc_opts.c). */
static const char help_tail[] =
"\n"
"Transports:\n"
"  duplex   one request carries both directions (needs HTTP/2 end to end)\n"
"  stream   one long upload and one long download (direct paths, CONNECT\n"
"           proxies, intermediaries that stream)\n"
"  batch    complete requests with Content-Length, several in flight, and\n"
"           long-poll downloads: passes proxies that buffer whole bodies\n"
"  auto     stream; on HTTP/2 a later bulk session times duplex against it\n"
"           and keeps duplex only when it is faster (timed again after 10\n"
"           minutes); falls back (duplex, stream, batch) when an intermediary\n"
"           holds bytes back, and later sessions of the same process start with\n"
"           what worked (for 10 minutes; then the better transport is probed\n"
"           again)\n"
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
"   7  unknown target (404 on open or check)\n"
"   8  target refused or unreachable (502/504 on open)\n"
"   9  session lost (reset, protocol error, connection cut)\n"
"  10  local error (bind/listen failed, stdin/stdout error)\n"
"  11  integrity check failed (a byte would have arrived wrong; it never does)\n"
"forward checks the server at start (one request, no session) and exits with\n"
"these codes when it fails, unless --retry-start; once running, failed tunnels\n"
"are logged (failed opens once every 30 s per kind).\n"
"stdio: SIGHUP, SIGINT or SIGTERM after stdin's end (ssh sends SIGHUP when it\n"
"is done) waits up to 1.5 s for the session's clean end and exits 0, quietly;\n"
"a signal while stdin is open, or a missing end while stdout is read: 1.\n"
"\n"
"Environment:\n"
"  RELAY_HTTPS_USER, RELAY_HTTPS_PASSWORD              as -u USER:PASS\n"
"  RELAY_HTTPS_PROXY_USER, RELAY_HTTPS_PROXY_PASSWORD  as -U USER:PASS\n"
"  https_proxy, HTTPS_PROXY, http_proxy, all_proxy, no_proxy: as in curl\n"
"Passwords given on the command line are masked in it (ps shows '***');\n"
"prefer a prompt, the environment, --netrc or a config file of mode 600.\n";

#define OPT_COLUMN 29    /* where an option's text starts */
#define HELP_WIDTH 79    /* no line longer, but for a word that is */

/* Prints text word by word from column col on, breaking lines before they pass
 * HELP_WIDTH; the next lines start at OPT_COLUMN. */
static void print_wrapped(FILE *f, const char *text, size_t col)
{
    size_t start = col;

    for (const char *p = text + strspn(text, " "); *p; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");
        if (col > start && col + 1 + n > HELP_WIDTH) {
            fprintf(f, "\n%*s", OPT_COLUMN, "");
            col = start = OPT_COLUMN;
        }
        if (col > start) {
            fputc(' ', f);
            ++col;
        }
        fwrite(p, 1, n, f);
        col += n;
        p += n;
    }
    fputc('\n', f);
}

/* "  -u, --user USER[:PASS]     credentials ..." or "      --netrc ...": the
 * text at OPT_COLUMN, or two spaces after a longer head. */
static void print_option(FILE *f, const struct rhc_opt_doc *d)
{
    char head[128], letter[8] = "      ";
    int n;

    if (d->short_name)
        snprintf(letter, sizeof(letter), "  -%c, ", d->short_name);
    n = snprintf(head, sizeof(head), "%s--%s%s%s", letter, d->name, d->arg ? " " : "",
                 d->arg ? d->arg : "");
    if (n < 0 || (size_t)n >= sizeof(head))   /* only with a new, too long name */
        n = (int)strlen(head);
    n = fprintf(f, "%-*s", n < OPT_COLUMN ? OPT_COLUMN : n + 2, head);
    print_wrapped(f, d->help, n < 0 ? OPT_COLUMN : (size_t)n);
}

void rhc_help_usage(FILE *f)
{
    fputs(usage_text, f);
}

void rhc_help_full(FILE *f)
{
    struct rhc_opt_doc d;

    fputs(usage_text, f);
    fputs(help_head, f);
    for (size_t i = 0; rhc_opt_doc(i, &d) == 0; ++i)
        print_option(f, &d);
    fputs(help_tail, f);
}

void rhc_help_version(void)
{
    curl_version_info_data *ci = curl_version_info(CURLVERSION_NOW);

    printf("relay-https %s (libcurl %s%s%s)\n", RHC_VERSION, ci->version,
           ci->ssl_version ? ", " : "", ci->ssl_version ? ci->ssl_version : "");
}
