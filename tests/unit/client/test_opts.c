/* The client's command line (rhc_opts_parse): valid command lines and the struct
 * rhc_opts they give, invalid ones and the exit code and message they give, and
 * the exit codes as --help and the README document them. Each table row runs as
 * its own test (check forks one process per test), so stdout and stderr can be
 * redirected to files to read what the user would see. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "client_tests.h"
#include "rhc_opts.h"

#define URL "https://relay.example/relay"
#define MAX_ARGS 16
#define ZERO_MS (-1L)   /* in struct want: expect 0 (a 0 there means the default) */

/* One rhc_opts_parse call and what it printed. argv is a writable copy (the
 * parser masks passwords in it, and some fields point into it). */
struct run {
    char store[MAX_ARGS + 1][256];
    char *argv[MAX_ARGS + 2];
    struct rhc_cmd cmd;
    struct rhc_opts o;          /* the first route (a shallow copy) */
    int rc;
    char out[16384];
    char err[16384];
};

static void slurp(FILE *f, char *buf, size_t size)
{
    size_t n;

    rewind(f);
    n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Parses "relay-https" followed by args (up to MAX_ARGS, or to a NULL). */
static void run_parse(struct run *r, const char *const *args)
{
    FILE *out = tmpfile(), *err = tmpfile();
    int argc = 0;

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(err);
    r->argv[argc] = strcpy(r->store[argc], "relay-https");
    for (int i = 0; i < MAX_ARGS && args[i]; ++i) {
        ck_assert_uint_lt(strlen(args[i]), sizeof(r->store[0]));
        ++argc;
        r->argv[argc] = strcpy(r->store[argc], args[i]);
    }
    r->argv[++argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_out, 0);
    ck_assert_int_ge(saved_err, 0);
    dup2(fileno(out), STDOUT_FILENO);
    dup2(fileno(err), STDERR_FILENO);
    r->rc = rhc_opts_parse(argc, r->argv, &r->cmd);
    memset(&r->o, 0, sizeof(r->o));
    if (r->cmd.nroutes)
        r->o = r->cmd.routes[0];
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    slurp(out, r->out, sizeof(r->out));
    slurp(err, r->err, sizeof(r->err));
}

/* ------------------------------------------------------------ valid lines */

/* The fields a valid command line must give. 0/NULL mean 0/NULL, except for
 * park_ms and connect_timeout_ms where 0 means the default (ZERO_MS: 0). */
struct want {
    enum rhc_mode mode;
    const char *listen_host, *listen_port, *base_url, *target;
    const char *cacert, *cert, *key;
    const char *user, *proxy, *proxy_user, *proxy_cacert;
    int insecure, proxy_insecure, no_resume, verbose;
    long park_ms, connect_timeout_ms, http_version;
    enum rhc_transport transport, transport_down;
    unsigned long auth, proxy_auth;
    const char *headers[4];
};

struct valid_case {
    const char *args[MAX_ARGS];
    struct want want;
};

/* the fields most rows share */
#define STDIO .mode = RHC_MODE_STDIO, .base_url = URL, .target = "t"
#define FWDT(host, port, t) .mode = RHC_MODE_FORWARD, .listen_host = host, \
    .listen_port = port, .base_url = URL, .target = t
#define FWD(host, port) FWDT(host, port, "t")

static const struct valid_case valid_cases[] = {
    /* the modes, URL and TARGET */
    { { "stdio", URL, "t" }, { STDIO } },
    { { "stdio", URL "//", "t" }, { STDIO } },
    { { "stdio", "HTTP://h:8080/a/b", "t" },
      { .mode = RHC_MODE_STDIO, .base_url = "HTTP://h:8080/a/b", .target = "t" } },
    { { "stdio", "https://h", "My-target_1.x" },
      { .mode = RHC_MODE_STDIO, .base_url = "https://h", .target = "My-target_1.x" } },
    { { "stdio", URL, "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0" },
      { .mode = RHC_MODE_STDIO, .base_url = URL,
        .target = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0" } },
    { { "stdio", "--", URL, "t" }, { STDIO } },
    /* forward and -L */
    { { "forward", "-L", "8080", URL, "t" }, { FWD("127.0.0.1", "8080") } },
    { { "forward", "--listen", "0.0.0.0:0", URL, "t" }, { FWD("0.0.0.0", "0") } },
    { { "forward", "--listen=[::1]:65535", URL, "t" }, { FWD("::1", "65535") } },
    { { "forward", "-L", ":22", URL, "t" }, { FWD("127.0.0.1", "22") } },
    { { "forward", "-L", "[]:22", URL, "t" }, { FWD("127.0.0.1", "22") } },
    { { "forward", "-L", "localhost:2", URL, "t" }, { FWD("localhost", "2") } },
    { { "forward", "-L", "localhost:2:ssh", URL }, { FWDT("localhost", "2", "ssh") } },
    { { "forward", "-L", "2:ssh", URL, "t" }, { FWDT("127.0.0.1", "2", "ssh") } },
    { { "forward", "-L", "[::1]:2:ssh", URL }, { FWDT("::1", "2", "ssh") } },
    { { "forward", "-L", "2", "--url", URL, "--target", "t" }, { FWD("127.0.0.1", "2") } },
    { { "forward", URL, "t", "-L", "9" }, { FWD("127.0.0.1", "9") } },
    /* flags */
    { { "stdio", "-k", "--proxy-insecure", "--no-resume", URL, "t" },
      { STDIO, .insecure = 1, .proxy_insecure = 1, .no_resume = 1 } },
    { { "stdio", "--insecure", URL, "t" }, { STDIO, .insecure = 1 } },
    { { "stdio", "-v", URL, "t", "--verbose" }, { STDIO, .verbose = 2 } },
    { { "stdio", "-kvv", URL, "t" }, { STDIO, .insecure = 1, .verbose = 2 } },
    { { "stdio", "--no-res", URL, "t" }, { STDIO, .no_resume = 1 } },   /* abbreviation */
    /* numbers */
    { { "stdio", "--idle-push", "0", URL, "t" }, { STDIO, .park_ms = ZERO_MS } },
    { { "stdio", "--idle-push", "1.5", URL, "t" }, { STDIO, .park_ms = 1500 } },
    { { "stdio", "--idle-push=86400", URL, "t" }, { STDIO, .park_ms = 86400000 } },
    { { "stdio", "--connect-timeout", "2.5", URL, "t" }, { STDIO, .connect_timeout_ms = 2500 } },
    { { "stdio", "--connect-timeout", "3600", URL, "t" },
      { STDIO, .connect_timeout_ms = 3600000 } },
    { { "stdio", "--connect-timeout", "0.0001", URL, "t" },   /* at least 1 ms */
      { STDIO, .connect_timeout_ms = 1 } },
    /* HTTP versions: the last one wins */
    { { "stdio", "--http1.1", URL, "t" }, { STDIO, .http_version = CURL_HTTP_VERSION_1_1 } },
    { { "stdio", "--http2", URL, "t" }, { STDIO, .http_version = CURL_HTTP_VERSION_2TLS } },
    { { "stdio", "--http2-prior-knowledge", URL, "t" },
      { STDIO, .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE } },
    { { "stdio", "--http2", "--http1.1", URL, "t" },
      { STDIO, .http_version = CURL_HTTP_VERSION_1_1 } },
    /* transports */
    { { "stdio", "--transport", "auto", URL, "t" }, { STDIO, .transport = RHC_XP_AUTO } },
    { { "stdio", "--transport", "duplex", URL, "t" },
      { STDIO, .transport = RHC_XP_DUPLEX, .transport_down = RHC_XP_DUPLEX } },
    { { "stdio", "--transport", "STREAM", URL, "t" },
      { STDIO, .transport = RHC_XP_STREAM, .transport_down = RHC_XP_STREAM } },
    { { "stdio", "--transport=batch", URL, "t" },
      { STDIO, .transport = RHC_XP_BATCH, .transport_down = RHC_XP_BATCH } },
    { { "stdio", "--transport", "stream/batch", URL, "t" },
      { STDIO, .transport = RHC_XP_STREAM, .transport_down = RHC_XP_BATCH } },
    { { "stdio", "--transport", "batch/stream", URL, "t" },
      { STDIO, .transport = RHC_XP_BATCH, .transport_down = RHC_XP_STREAM } },
    { { "stdio", "--transport", "duplex/duplex", URL, "t" },
      { STDIO, .transport = RHC_XP_DUPLEX, .transport_down = RHC_XP_DUPLEX } },
    /* the server: credentials, auth, TLS files, headers */
    { { "stdio", "-u", "alice:secret", URL, "t" }, { STDIO, .user = "alice:secret" } },
    { { "stdio", "--user", "a:b", "--auth", "digest", URL, "t" },
      { STDIO, .user = "a:b", .auth = CURLAUTH_DIGEST } },
    { { "stdio", "-u", "a:b", "--auth", "Basic", URL, "t" },
      { STDIO, .user = "a:b", .auth = CURLAUTH_BASIC } },
    { { "stdio", "-u", "a:b", "--auth", "any", URL, "t" },
      { STDIO, .user = "a:b", .auth = CURLAUTH_ANY } },
    { { "stdio", "--cacert", "/dev/null", "--cert", "/dev/null", "--key", "/dev/null", URL, "t" },
      { STDIO, .cacert = "/dev/null", .cert = "/dev/null", .key = "/dev/null" } },
    { { "stdio", "-H", "X-A: 1", "--header", "X-B:", URL, "t" },
      { STDIO, .headers = { "X-A: 1", "X-B:" } } },
    /* the proxy */
    { { "stdio", "-x", "http://proxy:3128", "-U", "p:q", "--proxy-auth", "ntlm", URL, "t" },
      { STDIO, .proxy = "http://proxy:3128", .proxy_user = "p:q", .proxy_auth = CURLAUTH_NTLM } },
    { { "stdio", "--proxy", "https://p", "--proxy-user", ":", "--proxy-auth", "negotiate",
        "--proxy-cacert", "/dev/null", URL, "t" },
      { STDIO, .proxy = "https://p", .proxy_user = ":", .proxy_auth = CURLAUTH_NEGOTIATE,
        .proxy_cacert = "/dev/null" } },
    { { "stdio", "--proxy-auth", "basic", URL, "t" }, { STDIO, .proxy_auth = CURLAUTH_BASIC } },
    { { "stdio", "--proxy-auth", "digest", URL, "t" }, { STDIO, .proxy_auth = CURLAUTH_DIGEST } },
    { { "stdio", "--proxy-auth", "any", URL, "t" }, { STDIO, .proxy_auth = CURLAUTH_ANY } },
};
#define N_VALID (int)(sizeof(valid_cases) / sizeof(valid_cases[0]))

static void check_str(const char *what, const char *got, const char *want, int row)
{
    if (!want)
        ck_assert_msg(got == NULL, "row %d: %s is \"%s\", want NULL", row, what, got);
    else
        ck_assert_msg(got && !strcmp(got, want), "row %d: %s is \"%s\", want \"%s\"", row,
                      what, got ? got : "(null)", want);
}

static void check_long(const char *what, long got, long want, int row)
{
    ck_assert_msg(got == want, "row %d: %s is %ld, want %ld", row, what, got, want);
}

/* 0 in want means the default there; ZERO_MS means 0. */
static long ms_or(long want, long dflt)
{
    return want == ZERO_MS ? 0 : want ? want : dflt;
}

START_TEST(test_valid)
{
    const struct valid_case *vc = &valid_cases[_i];
    const struct want *w = &vc->want;
    struct run r;
    const struct curl_slist *h;
    int n = 0;

    run_parse(&r, vc->args);
    ck_assert_msg(r.rc == -1, "row %d: rc %d, stderr: %s", _i, r.rc, r.err);
    ck_assert_msg(!r.out[0] && !r.err[0], "row %d printed: %s%s", _i, r.out, r.err);
    check_long("mode", r.o.mode, w->mode, _i);
    check_str("listen_host", r.o.listen_host, w->listen_host, _i);
    check_str("listen_port", r.o.listen_port, w->listen_port, _i);
    check_str("base_url", r.o.base_url, w->base_url, _i);
    check_str("target", r.o.target, w->target, _i);
    check_str("cacert", r.o.cacert, w->cacert, _i);
    check_str("cert", r.o.cert, w->cert, _i);
    check_str("key", r.o.key, w->key, _i);
    check_str("user", r.o.user, w->user, _i);
    check_str("proxy", r.o.proxy, w->proxy, _i);
    check_str("proxy_user", r.o.proxy_user, w->proxy_user, _i);
    check_str("proxy_cacert", r.o.proxy_cacert, w->proxy_cacert, _i);
    check_long("insecure", r.o.insecure, w->insecure, _i);
    check_long("proxy_insecure", r.o.proxy_insecure, w->proxy_insecure, _i);
    check_long("no_resume", r.o.no_resume, w->no_resume, _i);
    check_long("verbose", r.o.verbose, w->verbose, _i);
    check_long("rhc_verbose", rhc_verbose, w->verbose, _i);
    check_long("park_ms", r.o.park_ms, ms_or(w->park_ms, 60000), _i);
    check_long("connect_timeout_ms", r.o.connect_timeout_ms,
               ms_or(w->connect_timeout_ms, 15000), _i);
    check_long("http_version", r.o.http_version, w->http_version, _i);
    check_long("transport", r.o.transport, w->transport, _i);
    check_long("transport_down", r.o.transport_down, w->transport_down, _i);
    check_long("auth", (long)r.o.auth, (long)w->auth, _i);
    check_long("proxy_auth", (long)r.o.proxy_auth, (long)w->proxy_auth, _i);
    for (h = r.o.headers; h; h = h->next, ++n) {
        ck_assert_msg(n < 4 && w->headers[n], "row %d: extra header %s", _i, h->data);
        check_str("header", h->data, w->headers[n], _i);
    }
    ck_assert_msg(n == 4 || !w->headers[n], "row %d: header %s missing", _i, w->headers[n]);
    rhc_cmd_free(&r.cmd);
}
END_TEST

/* The password is masked in argv (ps shows argv) but kept in the options. */
START_TEST(test_secrets_masked)
{
    static const char *const args[] = { "stdio", "-u", "alice:s3cret", "-U", "bob:pw",
                                        URL, "t", NULL };
    struct run r;

    run_parse(&r, args);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(r.o.user, "alice:s3cret");
    ck_assert_str_eq(r.o.proxy_user, "bob:pw");
    ck_assert_str_eq(r.argv[3], "alice:******");
    ck_assert_str_eq(r.argv[5], "bob:**");
    rhc_cmd_free(&r.cmd);
}
END_TEST

/* ------------------------------------------------------------ invalid lines */

struct invalid_case {
    const char *args[MAX_ARGS];
    const char *msg;        /* the first line on stderr, after "relay-https: " */
};

static const struct invalid_case invalid_cases[] = {
    /* the mode */
    { { NULL }, "missing mode" },
    { { "bogus", URL, "t" }, "unknown mode 'bogus'" },
    { { "Stdio", URL, "t" }, "unknown mode 'Stdio'" },
    { { "-k", "stdio", URL, "t" }, "unknown mode '-k'" },
    /* operands */
    { { "stdio", "https://a:b@h/r", "t" }, "URL must not carry credentials: use -u, --netrc, "
      "RELAY_HTTPS_USER or a config file" },
    { { "stdio" }, "missing URL (give it after the options, or url in -K FILE)" },
    { { "stdio", URL }, "missing TARGET (give it after URL, as -L PORT:TARGET, or target "
      "in -K FILE)" },
    { { "stdio", "t" }, "missing URL (give it after the options, or url in -K FILE)" },
    { { "stdio", URL, "t", "u" }, "expected URL and TARGET (3 arguments given)" },
    { { "forward", "-L", "1" }, "-L 1: missing URL (give it after the options, or url in -K "
      "FILE)" },
    { { "forward", "-L", "1", URL }, "-L 1: missing TARGET (give it after URL, as -L "
      "PORT:TARGET, or target in -K FILE)" },
    /* the URL */
    { { "stdio", "ftp://h/r", "t" }, "ftp://h/r: URL must start with https:// or http://" },
    { { "stdio", "h/r", "t" }, "h/r: URL must start with https:// or http://" },
    { { "stdio", "--", "-x", URL }, "-x: URL must start with https:// or http://" },
    { { "stdio", "https://h/r?a=1", "t" },
      "https://h/r?a=1: URL must not carry a query, fragment or spaces" },
    { { "stdio", "https://h/r#f", "t" },
      "https://h/r#f: URL must not carry a query, fragment or spaces" },
    { { "stdio", "https://h/r x", "t" },
      "https://h/r x: URL must not carry a query, fragment or spaces" },
    /* the target name */
    { { "stdio", URL, ".t" }, ".t: TARGET must be 1 to 63 of [A-Za-z0-9._-]" },
    { { "stdio", URL, "a/b" }, "a/b: TARGET must be 1 to 63 of [A-Za-z0-9._-]" },
    { { "stdio", URL, "" }, ": TARGET must be 1 to 63 of [A-Za-z0-9._-]" },
    { { "stdio", URL, "t t" }, "t t: TARGET must be 1 to 63 of [A-Za-z0-9._-]" },
    { { "stdio", URL, "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01" },
      "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01: "
      "TARGET must be 1 to 63 of [A-Za-z0-9._-]" },
    /* -L */
    { { "forward", URL, "t" }, "forward needs -L [ADDR:]PORT[:TARGET] (or tunnels in -K FILE)" },
    { { "stdio", "-L", "1", URL, "t" }, "-L is for forward mode only" },
    { { "forward", "-L", "[::1", URL, "t" }, "-L [::1: expected [ADDR]:PORT" },
    { { "forward", "-L", "[::1]80", URL, "t" }, "-L [::1]80: expected [ADDR]:PORT" },
    { { "forward", "-L", "::1:80", URL, "t" }, "-L ::1:80: write IPv6 addresses as [ADDR]:PORT" },
    { { "forward", "-L", "h:65536", URL, "t" }, "-L h:65536: bad port" },
    { { "forward", "-L", "h:", URL, "t" }, "-L h:: bad port" },
    { { "forward", "-L", "h:+80", URL, "t" }, "-L h:+80: bad port" },
    { { "forward", "-L", "h:-1", URL, "t" }, "-L h:-1: bad port" },
    { { "forward", "-L", "h:0080x", URL, "t" }, "-L h:0080x: bad port" },
    { { "forward", "-L", "000080", URL, "t" }, "-L 000080: bad port" },
    /* what getopt refuses */
    { { "forward", "-L" }, "option -L needs an argument" },
    { { "stdio", URL, "t", "--transport" }, "option --transport needs an argument" },
    { { "stdio", "-Z", URL, "t" }, "unknown option -Z" },
    { { "stdio", "--bogus", URL, "t" }, "unknown option --bogus" },
    /* files */
    { { "stdio", "--cacert", "/nonexistent/ca", URL, "t" },
      "--cacert /nonexistent/ca: No such file or directory" },
    { { "stdio", "--cert", "/nonexistent/c", URL, "t" },
      "--cert /nonexistent/c: No such file or directory" },
    { { "stdio", "--key", "/nonexistent/k", URL, "t" },
      "--key /nonexistent/k: No such file or directory" },
    { { "stdio", "--proxy-cacert", "/nonexistent/p", URL, "t" },
      "--proxy-cacert /nonexistent/p: No such file or directory" },
    { { "stdio", "--key", "/dev/null", URL, "t" }, "--key needs --cert" },
    /* words */
    { { "stdio", "--auth", "digest", URL, "t" }, "--auth needs --user USER:PASS" },
    { { "stdio", "-u", "a:b", "--auth", "ntlm", URL, "t" },
      "--auth ntlm: expected basic, digest or any" },
    { { "stdio", "--proxy-auth", "kerberos", URL, "t" },
      "--proxy-auth kerberos: expected basic, digest, ntlm, negotiate or any" },
    { { "stdio", "--transport", "fast", URL, "t" },
      "--transport fast: expected auto, duplex, stream or batch "
      "(or PUSH/PULL: stream/batch, batch/stream)" },
    { { "stdio", "--transport", "stream/", URL, "t" },
      "--transport stream/: expected auto, duplex, stream or batch "
      "(or PUSH/PULL: stream/batch, batch/stream)" },
    { { "stdio", "--transport", "duplex/batch", URL, "t" },
      "--transport duplex/batch: only stream and batch mix" },
    { { "stdio", "--transport", "stream/auto", URL, "t" },
      "--transport stream/auto: only stream and batch mix" },
    { { "stdio", "-H", "novalue", URL, "t" }, "-H novalue: expected 'Name: value'" },
    { { "stdio", "-H", ": v", URL, "t" }, "-H : v: expected 'Name: value'" },
    { { "stdio", "-H", "A: b\r\nC: d", URL, "t" }, "-H A: b\r\nC: d: expected 'Name: value'" },
    /* numbers */
    { { "stdio", "--idle-push", "-1", URL, "t" }, "--idle-push -1: expected seconds (0 to 86400)" },
    { { "stdio", "--idle-push", "86400.1", URL, "t" },
      "--idle-push 86400.1: expected seconds (0 to 86400)" },
    { { "stdio", "--idle-push", "nan", URL, "t" },
      "--idle-push nan: expected seconds (0 to 86400)" },
    { { "stdio", "--idle-push", "5s", URL, "t" }, "--idle-push 5s: expected seconds (0 to 86400)" },
    { { "stdio", "--idle-push", "", URL, "t" }, "--idle-push : expected seconds (0 to 86400)" },
    { { "stdio", "--connect-timeout", "0", URL, "t" },
      "--connect-timeout 0: expected seconds (0 < s <= 3600)" },
    { { "stdio", "--connect-timeout", "3600.5", URL, "t" },
      "--connect-timeout 3600.5: expected seconds (0 < s <= 3600)" },
    { { "stdio", "--connect-timeout", "1e999", URL, "t" },
      "--connect-timeout 1e999: expected seconds (0 < s <= 3600)" },
    { { "stdio", "--connect-timeout", "ten", URL, "t" },
      "--connect-timeout ten: expected seconds (0 < s <= 3600)" },
    /* the first error wins */
    { { "forward", "--key", "/dev/null", "--auth", "any", URL, "t" },
      "forward needs -L [ADDR:]PORT[:TARGET] (or tunnels in -K FILE)" },
    { { "stdio", "--idle-push", "x", "--connect-timeout", "y", URL, "t" },
      "--idle-push x: expected seconds (0 to 86400)" },
};
#define N_INVALID (int)(sizeof(invalid_cases) / sizeof(invalid_cases[0]))

static const char usage_lines[] =
    "usage: relay-https forward -L [ADDR:]PORT[:TARGET]... [options] [URL [TARGET]]\n"
    "       relay-https stdio [options] [URL] TARGET\n"
    "       relay-https serve --to HOST:PORT [options] [URL] SERVICE\n"
    "       relay-https proxy -L [ADDR:]PORT... [options] [URL]\n"
    "       relay-https --help | --version\n"
    "Try 'relay-https --help' for more.\n";

/* A usage error: exit code 2, nothing on stdout, on stderr the message and then
 * the usage lines. */
START_TEST(test_invalid)
{
    const struct invalid_case *ic = &invalid_cases[_i];
    char want[1024];
    struct run r;

    run_parse(&r, ic->args);
    snprintf(want, sizeof(want), "relay-https: %s\n%s", ic->msg, usage_lines);
    ck_assert_msg(r.rc == RHC_EXIT_USAGE, "row %d: rc %d, want %d", _i, r.rc, RHC_EXIT_USAGE);
    ck_assert_msg(!r.out[0], "row %d printed on stdout: %s", _i, r.out);
    ck_assert_msg(!strcmp(r.err, want), "row %d: stderr\n%s\nwant\n%s", _i, r.err, want);
    rhc_cmd_free(&r.cmd);
}
END_TEST

/* ------------------------------------------------------------ --help, --version */

struct info_case {
    const char *args[MAX_ARGS];
    const char *out_starts;
};

#define HELP_START "usage: relay-https forward -L [ADDR:]PORT[:TARGET]... [options] [URL [TARGET]]\n"
#define VERSION_START "relay-https " RHC_VERSION " (libcurl "

/* Anywhere on the command line, they print, exit 0 and ignore the rest. */
static const struct info_case info_cases[] = {
    { { "--help" }, HELP_START },
    { { "-h", "bogus" }, HELP_START },
    { { "forward", "-h" }, HELP_START },
    { { "stdio", URL, "--help" }, HELP_START },
    { { "stdio", "-kh", "-Z" }, HELP_START },
    { { "--version" }, VERSION_START },
    { { "-V" }, VERSION_START },
    { { "stdio", "--version", "https://h?x" }, VERSION_START },
};
#define N_INFO (int)(sizeof(info_cases) / sizeof(info_cases[0]))

START_TEST(test_info)
{
    const struct info_case *ic = &info_cases[_i];
    struct run r;

    run_parse(&r, ic->args);
    ck_assert_msg(r.rc == RHC_EXIT_OK, "row %d: rc %d", _i, r.rc);
    ck_assert_msg(!r.err[0], "row %d printed on stderr: %s", _i, r.err);
    ck_assert_msg(!strncmp(r.out, ic->out_starts, strlen(ic->out_starts)),
                  "row %d: stdout starts \"%.80s\"", _i, r.out);
    rhc_cmd_free(&r.cmd);
}
END_TEST

/* ------------------------------------------------------------ exit codes */

/* Scripts rely on the numbers: each constant as --help and the README give it.
 * help: how its line in --help starts (NULL: not listed there); readme: how the
 * README's "Exit codes:" paragraph names it. */
static const struct {
    int code, value;
    const char *help, *readme;
} exit_codes[] = {
    { RHC_EXIT_OK, 0, "ok", "ok" },
    { RHC_EXIT_ERROR, 1, "other error", "other error" },
    { RHC_EXIT_USAGE, 2, "usage error", "usage" },
    { RHC_EXIT_UNREACHABLE, 3, "server or proxy unreachable", "server unreachable" },
    { RHC_EXIT_TLS, 4, "TLS verification or handshake failed", "TLS verification or handshake failed" },
    { RHC_EXIT_AUTH, 5, "authentication or authorization refused by the server",
      "refused by the server's authentication" },
    { RHC_EXIT_PROXY, 6, "proxy refused or wants authentication",
      "proxy refused or wants authentication" },
    { RHC_EXIT_NO_TARGET, 7, "unknown target", "unknown target" },
    { RHC_EXIT_TARGET, 8, "target refused or unreachable", "the target refused" },
    { RHC_EXIT_LOST, 9, "session lost", "session lost" },
    { RHC_EXIT_LOCAL, 10, "local error", "local error" },
    { RHC_EXIT_INTEGRITY, 11, "integrity check failed", "integrity check failed" },
};
#define N_EXIT (int)(sizeof(exit_codes) / sizeof(exit_codes[0]))

START_TEST(test_exit_code_values)
{
    ck_assert_int_eq(exit_codes[_i].code, exit_codes[_i].value);
}
END_TEST

START_TEST(test_exit_codes_in_help)
{
    static const char *const args[] = { "--help", NULL };
    char line[160];
    struct run r;

    if (!exit_codes[_i].help)
        return;
    run_parse(&r, args);
    ck_assert_int_eq(r.rc, 0);
    /* "  10  local error (...)": the number right-aligned in 4 columns */
    snprintf(line, sizeof(line), "\n%4d  %s", exit_codes[_i].value, exit_codes[_i].help);
    ck_assert_msg(strstr(r.out, line), "--help has no line \"%s\"", line + 1);
}
END_TEST

/* The README's "Exit codes:" paragraph with every run of white space made one
 * space; NULL when there is no README. */
static char *readme_exit_codes(void)
{
    const char *srcdir = getenv("srcdir");   /* set by make check */
    char path[4096];
    static char text[65536];
    char *start, *end, *w = NULL;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/README", srcdir ? srcdir : ".");
    if (!(f = fopen(path, "r")))
        return NULL;
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    if (!(start = strstr(text, "\nExit codes:")))
        return NULL;
    end = strstr(start + 1, "\n\n");       /* the paragraph ends at a blank line */
    if (end)
        *end = '\0';
    for (char *p = w = start + 1; *p; ++p) {
        int space = *p == ' ' || *p == '\n' || *p == '\t';
        if (!space || w[-1] != ' ')
            *w++ = space ? ' ' : *p;
    }
    *w = '\0';
    return start + 1;
}

START_TEST(test_exit_codes_in_readme)
{
    char *para = readme_exit_codes();
    char item[160];

    ck_assert_msg(para, "README not found or without \"Exit codes:\" (srcdir=%s)",
                  getenv("srcdir") ? getenv("srcdir") : "(unset)");
    /* "Exit codes: 0 ok; 1 other error; 2 usage; ..." */
    snprintf(item, sizeof(item), "%s %d %s", exit_codes[_i].value ? ";" : ":",
             exit_codes[_i].value, exit_codes[_i].readme);
    ck_assert_msg(strstr(para, item), "README has no \"%s\" in: %s", item, para);
}
END_TEST

Suite *opts_suite(void)
{
    Suite *s = suite_create("opts");
    TCase *tc = tcase_create("valid");

    tcase_add_loop_test(tc, test_valid, 0, N_VALID);
    tcase_add_test(tc, test_secrets_masked);
    suite_add_tcase(s, tc);
    tc = tcase_create("invalid");
    tcase_add_loop_test(tc, test_invalid, 0, N_INVALID);
    suite_add_tcase(s, tc);
    tc = tcase_create("help");
    tcase_add_loop_test(tc, test_info, 0, N_INFO);
    suite_add_tcase(s, tc);
    tc = tcase_create("exit codes");
    tcase_add_loop_test(tc, test_exit_code_values, 0, N_EXIT);
    tcase_add_loop_test(tc, test_exit_codes_in_help, 0, N_EXIT);
    tcase_add_loop_test(tc, test_exit_codes_in_readme, 0, N_EXIT);
    suite_add_tcase(s, tc);
    return s;
}
