/* relay-https client: the usage lines, the --help text and the --version line.
 * The text is what users and scripts read: change it only with the options. */
#include <stdio.h>

#include <curl/curl.h>

#include "rhc_help.h"
#include "rhc_opts.h"

static const char usage_text[] =
"usage: relay-https forward -L [ADDR:]PORT[:TARGET]... [options] [URL [TARGET]]\n"
"       relay-https stdio [options] [URL] TARGET\n"
"       relay-https serve --to HOST:PORT [options] [URL] SERVICE\n"
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
"  serve        offer HOST:PORT as the server's RelayService SERVICE: clients\n"
"               reach it with forward or stdio, both sides outbound only\n"
"\n"
"Options:\n"
"  -L, --listen [ADDR:]PORT[:TARGET]  forward: where to listen (ADDR default\n"
"                             127.0.0.1; IPv6 as [ADDR]:PORT; PORT 0 picks a\n"
"                             free port), or a UNIX socket: /PATH[:TARGET] or\n"
"                             unix:PATH[:TARGET] (mode 0600). Repeatable: each\n"
"                             -L is a tunnel of its own, to its TARGET or to\n"
"                             the TARGET after URL\n"
"  -K, --config FILE          read options and tunnels from FILE (see CONFIG\n"
"                             FILE in relay-https(1)); repeatable\n"
"      --url URL              the relay base, as the URL argument\n"
"      --target TARGET        the target, as the TARGET argument\n"
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
"  -u, --user USER[:PASS]     credentials for the server; without :PASS the\n"
"                             password comes from --netrc, RELAY_HTTPS_PASSWORD\n"
"                             or a prompt on the terminal\n"
"      --netrc                credentials for the server from ~/.netrc\n"
"      --netrc-file FILE      ... from FILE (curl's format; mode 600)\n"
"      --to HOST:PORT         serve: the local service each client reaches\n"
"      --accepts N            serve: listens kept waiting for clients (default 4)\n"
"      --auth METHOD          basic (default: sent at once), digest or any\n"
"                             (digest and any use HTTP/1.1)\n"
"  -H, --header 'Name: value' extra request header (repeatable)\n"
"      --cacert FILE          CA certificates to verify the server\n"
"  -k, --insecure             do not verify the server's certificate\n"
"      --cert FILE            client certificate (PEM)\n"
"      --key FILE             client certificate key (PEM)\n"
"  -x, --proxy URL            HTTP(S) proxy (default: https_proxy, HTTPS_PROXY,\n"
"                             all_proxy from the environment; no_proxy applies)\n"
"  -U, --proxy-user USER[:PASS]  proxy credentials (the password as for -u,\n"
"                             from RELAY_HTTPS_PROXY_PASSWORD); '-U :' with --proxy-auth\n"
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
"  11  integrity check failed (a byte would have arrived wrong; it never does)\n"
"forward exits non-zero only when it cannot start; failed tunnels are logged.\n"
"\n"
"Environment:\n"
"  RELAY_HTTPS_USER, RELAY_HTTPS_PASSWORD              as -u USER:PASS\n"
"  RELAY_HTTPS_PROXY_USER, RELAY_HTTPS_PROXY_PASSWORD  as -U USER:PASS\n"
"  https_proxy, HTTPS_PROXY, http_proxy, all_proxy, no_proxy: as in curl\n"
"Passwords given on the command line are masked in it (ps shows '***');\n"
"prefer a prompt, the environment, --netrc or a config file of mode 600.\n";

void rhc_help_usage(FILE *f)
{
    fputs(usage_text, f);
}

void rhc_help_full(FILE *f)
{
    fputs(usage_text, f);
    fputs(help_text, f);
}

void rhc_help_version(void)
{
    curl_version_info_data *ci = curl_version_info(CURLVERSION_NOW);

    printf("relay-https %s (libcurl %s%s%s)\n", RHC_VERSION, ci->version,
           ci->ssl_version ? ", " : "", ci->ssl_version ? ci->ssl_version : "");
}
