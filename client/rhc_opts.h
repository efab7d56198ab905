/* relay-https client: the command line (struct rhc_opts), exit codes (logging: rhc_log.h). */
#ifndef RHC_OPTS_H
#define RHC_OPTS_H

#include <stddef.h>

#include <curl/curl.h>

#include "rhc_log.h"

#define RHC_VERSION "0.1.0"
#define RHC_USER_AGENT "relay-https/" RHC_VERSION

/* Exit codes: scripts rely on these, keep them stable (also listed in --help).
 *  0  ok
 *  1  other error
 *  2  usage error
 *  3  server unreachable (DNS, connect, timeout; also a gateway or proxy in front
 *     of it, and the proxy itself)
 *  4  TLS verification or handshake failed
 *  5  HTTP authentication/authorization refused by the server (401/403)
 *  6  proxy refused or wants authentication (407, a proxy's 403, CONNECT refused)
 *  7  unknown target (404 on open)
 *  8  target refused or unreachable (502/504 from the module on open)
 *  9  session lost (410/416/409, R frame, protocol error, connection cut)
 * 10  local error (bind/listen failed, stdin/stdout error)
 * 11  integrity check failed: a byte would have been delivered wrong (never is)
 */
enum rhc_exit {
    RHC_EXIT_OK = 0,
    RHC_EXIT_ERROR = 1,
    RHC_EXIT_USAGE = 2,
    RHC_EXIT_UNREACHABLE = 3,
    RHC_EXIT_TLS = 4,
    RHC_EXIT_AUTH = 5,
    RHC_EXIT_PROXY = 6,
    RHC_EXIT_NO_TARGET = 7,
    RHC_EXIT_TARGET = 8,
    RHC_EXIT_LOST = 9,
    RHC_EXIT_LOCAL = 10,
    RHC_EXIT_INTEGRITY = 11
};

enum rhc_mode { RHC_MODE_FORWARD = 1, RHC_MODE_STDIO, RHC_MODE_SERVE, RHC_MODE_PROXY };

/* How a session's bytes travel (docs/PROTOCOL.md, "Transports"). The order is the
 * fallback order: auto starts at the best the path allows and only moves down. */
enum rhc_transport {
    RHC_XP_AUTO = 0,
    RHC_XP_DUPLEX,      /* one duplex request: body = up, response = down (HTTP/2) */
    RHC_XP_STREAM,      /* one streamed push + one long pull */
    RHC_XP_BATCH        /* Content-Length pushes (several in flight) + long-poll pulls */
};

/* The options of one route: what the tunnels of one -L (or one config file
 * [section], or stdio) use. The strings belong to struct rhc_cmd. */
struct rhc_opts {
    enum rhc_mode mode;
    const char *name;           /* for logs and statistics: the -L or the [section] */
    char *listen_host;          /* forward: address to bind (default 127.0.0.1) */
    char *listen_port;          /* forward: port (string for getaddrinfo) */
    char *listen_path;          /* forward: a UNIX socket instead (mode 0600) */
    char *base_url;             /* URL without trailing '/' */
    const char *target;
    const char *cacert, *cert, *key;
    const char *user, *proxy, *proxy_user, *proxy_cacert;
    int insecure, proxy_insecure;
    int no_resume;              /* --no-resume: sessions are not opened resumable */
    int no_watch;               /* --no-watch: idle tunnels wait on their own */
    long park_ms;               /* --idle-push: end an idle stream push after this (0: never) */
    int verbose;
    long connect_timeout_ms;
    long http_version;          /* CURL_HTTP_VERSION_*; 0: chosen by the transport */
    enum rhc_transport transport;      /* for pushes (and pulls, unless ... */
    enum rhc_transport transport_down; /* ... this differs: --transport PUSH/PULL) */
    unsigned long auth;         /* CURLAUTH_* for the server (--auth); 0: Basic */
    unsigned long proxy_auth;   /* CURLAUTH_* for the proxy (--proxy-auth); 0: any */
    struct curl_slist *headers; /* user -H headers */
    const char *netrc;          /* --netrc-file, or ~/.netrc after --netrc */
    long stats_ms;              /* --stats: report on stderr this often (0: never) */
    const char *stats_json;     /* --stats-json: rewrite this file at every report */
    int retry_start;            /* forward: keep trying the start check (--retry-start) */
    const char *serve_to;       /* serve: --to HOST:PORT, the local service */
    int accepts;                /* serve: --accepts, listens kept waiting (0: default) */
    const char *local_user;     /* proxy: --local-user USER:PASS the local port wants */
    long max_conns;             /* proxy: --max-connections (0: default) */
    long handshake_ms;          /* proxy: --handshake-timeout (0: default) */
    int udp;                    /* forward: -L udp:...: a UDP port, a session per source */
    unsigned udp_idle_s;        /* --udp-idle: a source's session ends after this (0: default) */
    unsigned udp_queue;         /* --udp-queue: datagrams waiting per direction (0: default) */
    unsigned udp_flows;         /* --udp-flows: sources with a session at once (0: default) */
};

/* The whole command line: the mode and one rhc_opts per route (forward: one per
 * -L and per config file [section]; stdio: exactly one). */
struct rhc_cmd {
    enum rhc_mode mode;
    struct rhc_opts *routes;
    size_t nroutes;
    char **keep;                /* every string the routes point into */
    size_t nkeep, capkeep;
};

/* Parses argv, the config files it names (-K), the environment and .netrc, and
 * asks on the terminal for a password -u USER left out. Returns -1 to go on, or
 * an exit code to exit with at once (0 after --help/--version, RHC_EXIT_USAGE
 * after a message on stderr). Passwords in argv are masked. */
int rhc_opts_parse(int argc, char **argv, struct rhc_cmd *cmd);
void rhc_cmd_free(struct rhc_cmd *cmd);

/* One option as --help shows it (rhc_help.c lays the column out). */
struct rhc_opt_doc {
    const char *name;   /* the long name, without "--" */
    int short_name;     /* the short option's letter, or 0 */
    const char *arg;    /* the argument's display name ("USER[:PASS]"), NULL for a flag */
    const char *help;   /* one paragraph */
};

/* The i-th option in --help's order (0 on): 0 with *doc filled, or -1 past the
 * last. Every option is there exactly once. */
int rhc_opt_doc(size_t i, struct rhc_opt_doc *doc);

#endif
