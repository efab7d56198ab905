/* The client's statistics and what -v says: rates, sizes, the text and JSON
 * forms of the counters (rhc_statfmt.c), timestamps (rhc_log.c), the proxy in
 * use and its masked password (rhc_proxy.c), SIGUSR1 through the signal pipe,
 * --stats parsing, and one --stats-json file written by rhc_stats_tick. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_tests.h"
#include "rhc_log.h"
#include "rhc_opts.h"
#include "rhc_proxy.h"
#include "rhc_route.h"
#include "rhc_signals.h"
#include "rhc_statfmt.h"
#include "rhc_stats.h"

START_TEST(test_rate)
{
    ck_assert(rhc_rate(3000, 1000, 2000) == 1000.0);
    ck_assert(rhc_rate(1000, 1000, 500) == 0.0);
    ck_assert(rhc_rate(5, 10, 1000) == 0.0);        /* went back: no rate */
    ck_assert(rhc_rate(5000, 0, 0) == 0.0);         /* no interval yet */
    ck_assert(rhc_rate(5000, 0, -3) == 0.0);
}
END_TEST

static const struct { double n; const char *text; } sizes[] = {
    { 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" }, { 1536, "1.5 KiB" },
    { 1048576.0 * 12.34, "12.3 MiB" }, { 1073741824.0 * 4, "4.0 GiB" },
    { 1099511627776.0 * 1.25, "1.2 TiB" }, { -5, "0 B" },
};
#define N_SIZES (int)(sizeof(sizes) / sizeof(sizes[0]))

START_TEST(test_size)
{
    char out[32];

    rhc_fmt_size(sizes[_i].n, out, sizeof(out));
    ck_assert_str_eq(out, sizes[_i].text);
}
END_TEST

static void sample(struct rhc_counters *n)
{
    memset(n, 0, sizeof(*n));
    n->bytes.up = 3145728;
    n->bytes.up_last = 2097152;
    n->bytes.down = 4096;
    n->bytes.down_last = 0;
    n->open_now = 1;
    n->opened = 3;
    n->failed = 1;
    n->lost = 1;
    n->resumes = 2;
    n->sessions[RHC_XP_DUPLEX] = 2;
    n->sessions[RHC_XP_BATCH] = 1;
}

START_TEST(test_counters_text)
{
    struct rhc_counters n;
    char out[512];

    sample(&n);
    rhc_fmt_counters(&n, 2000, out, sizeof(out));
    ck_assert_str_eq(out, "tunnels 1 open, 3 total, 1 failed, 1 lost; "
                     "up 3145728 B (3.0 MiB) at 512.0 KiB/s, down 4096 B (4.0 KiB) at 2.0 KiB/s; "
                     "resumes 2; sessions duplex 2, stream 0, batch 1");
    /* cut short, still a string */
    rhc_fmt_counters(&n, 2000, out, 20);
    ck_assert_uint_eq(strlen(out), 19);
    /* a route that watched: how many tunnels wait in its watches */
    n.watched = 150;
    n.watches = 7;
    rhc_fmt_counters(&n, 2000, out, sizeof(out));
    ck_assert_ptr_nonnull(strstr(out, "batch 1; watched 150 (watches sent 7)"));
}
END_TEST

START_TEST(test_counters_add)
{
    struct rhc_counters a, b;

    sample(&a);
    sample(&b);
    rhc_counters_add(&a, &b);
    ck_assert_uint_eq(a.bytes.up, 2 * 3145728);
    ck_assert_uint_eq(a.bytes.up_last, 2 * 2097152);
    ck_assert_uint_eq(a.bytes.down, 8192);
    ck_assert_uint_eq(a.opened, 6);
    ck_assert_uint_eq(a.open_now, 2);
    ck_assert_uint_eq(a.lost, 2);
    ck_assert_uint_eq(a.resumes, 4);
    a.watched = b.watched = 3;
    b.watches = 2;
    rhc_counters_add(&a, &b);
    ck_assert_uint_eq(a.watched, 6);
    ck_assert_uint_eq(a.watches, 2);
    ck_assert_uint_eq(a.sessions[RHC_XP_DUPLEX], 6);
    ck_assert_uint_eq(a.sessions[RHC_XP_BATCH], 3);
}
END_TEST

START_TEST(test_json_counters)
{
    struct rhc_counters n;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    sample(&n);
    rhc_json_counters(f, &n, 1000);
    fclose(f);
    ck_assert_str_eq(buf, "\"tunnels_open\": 1, \"tunnels_total\": 3, \"tunnels_failed\": 1, "
                     "\"tunnels_lost\": 1, \"resumes\": 2, \"bytes_up\": 3145728, "
                     "\"bytes_down\": 4096, \"rate_up\": 1048576, \"rate_down\": 4096, "
                     "\"sessions\": {\"duplex\": 2, \"stream\": 0, \"batch\": 1}, "
                     "\"datagrams\": {\"up\": 0, \"down\": 0, \"dropped_up\": 0, "
                     "\"dropped_down\": 0}, \"watched\": 0, \"watches\": 0");
    free(buf);
}
END_TEST

static const struct { const char *in; size_t outsz; const char *out; } jstrs[] = {
    { "#3 127.0.0.1:4711", 64, "\"#3 127.0.0.1:4711\"" },
    { "a\"b\\c", 64, "\"a\\\"b\\\\c\"" },
    { "tab\there\n", 64, "\"tab\\u0009here\\u000a\"" },
    { "", 8, "\"\"" },
    { "abcdefgh", 6, "\"abc\"" },             /* cut: still closed */
    { "ab\"cd", 6, "\"ab\"" },                /* never half an escape */
    { "x", 2, "" },                           /* no room for a string at all */
    { "caf\xc3\xa9", 64, "\"caf??\"" },        /* never invalid UTF-8 */
};
#define N_JSTRS (int)(sizeof(jstrs) / sizeof(jstrs[0]))

START_TEST(test_json_str)
{
    char out[64];

    rhc_json_str(jstrs[_i].in, out, jstrs[_i].outsz);
    ck_assert_str_eq(out, jstrs[_i].out);
}
END_TEST

/* 2026-12-03 20:31:05.123 UTC */
#define WALL_MS 1796329865123LL

START_TEST(test_times)
{
    char out[64];

    setenv("TZ", "UTC", 1);
    tzset();
    rhc_log_stamp(WALL_MS, out, sizeof(out));
    ck_assert_str_eq(out, "2026-12-03 20:31:05.123");
    rhc_fmt_iso(WALL_MS, out, sizeof(out));
    ck_assert_str_eq(out, "2026-12-03T20:31:05.123+00:00");
    setenv("TZ", "CET-1", 1);
    tzset();
    rhc_fmt_iso(WALL_MS + 2, out, sizeof(out));
    ck_assert_str_eq(out, "2026-12-03T21:31:05.125+01:00");
    setenv("TZ", "IST-5:30", 1);
    tzset();
    rhc_log_stamp(WALL_MS, out, sizeof(out));
    ck_assert_str_eq(out, "2026-12-04 02:01:05.123");
}
END_TEST

static const struct { const char *url, *masked, *host; } urls[] = {
    { "http://bob:s3cret@proxy.example:3128", "http://bob:***@proxy.example:3128",
      "proxy.example" },
    { "http://bob@proxy.example:3128/", "http://bob@proxy.example:3128/", "proxy.example" },
    { "bob:pw@10.0.0.1:8080", "bob:***@10.0.0.1:8080", "10.0.0.1" },
    { "https://u:p:q@[::1]:8443/relay", "https://u:***@[::1]:8443/relay", "::1" },
    { "https://relay.example/a@b", "https://relay.example/a@b", "relay.example" },
    { "https://relay.example", "https://relay.example", "relay.example" },
    { "socks5h://a:b@h", "socks5h://a:***@h", "h" },
};
#define N_URLS (int)(sizeof(urls) / sizeof(urls[0]))

START_TEST(test_url)
{
    char out[256];

    rhc_url_mask(urls[_i].url, out, sizeof(out));
    ck_assert_str_eq(out, urls[_i].masked);
    rhc_url_host(urls[_i].url, out, sizeof(out));
    ck_assert_str_eq(out, urls[_i].host);
}
END_TEST

static const struct { const char *list, *host; int match; } noproxies[] = {
    { "*", "anything.example", 1 },
    { "example.com", "example.com", 1 },
    { "example.com", "relay.example.com", 1 },
    { ".example.com", "relay.example.com", 1 },
    { ".example.com", "example.com", 1 },
    { "example.com", "badexample.com", 0 },
    { "EXAMPLE.com", "Relay.Example.COM", 1 },
    { "a.test, b.test", "b.test", 1 },
    { "a.test b.test", "x.b.test", 1 },
    { "a.test,b.test", "c.test", 0 },
    { "127.0.0.1", "127.0.0.1", 1 },
    { "127.0.0.0/8", "127.1.2.3", 1 },
    { "10.0.0.0/8", "127.0.0.1", 0 },
    { "::1", "::1", 1 },
    { "[::1]", "::1", 1 },
    { "fd00::/8", "fd12::5", 1 },
    { "", "example.com", 0 },
    { "*.example.com", "relay.example.com", 0 },   /* no wildcards but a lone * */
};
#define N_NOPROXIES (int)(sizeof(noproxies) / sizeof(noproxies[0]))

START_TEST(test_no_proxy)
{
    ck_assert_msg(rhc_no_proxy_match(noproxies[_i].list, noproxies[_i].host) ==
                  noproxies[_i].match, "no_proxy '%s', host %s", noproxies[_i].list,
                  noproxies[_i].host);
}
END_TEST

static const char *const proxy_vars[] = { "https_proxy", "HTTPS_PROXY", "http_proxy",
                                          "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
                                          NULL };

/* Each row: an environment (NAME=VALUE, ...), -x, the URL, and what -v says. */
static const struct {
    const char *env[3];
    const char *x, *url, *says;
} proxy_rows[] = {
    { { NULL }, NULL, "https://relay.example/r",
      "none (no -x; no https_proxy, HTTPS_PROXY, all_proxy or ALL_PROXY set)" },
    { { NULL }, "http://u:pw@p:3128", "https://relay.example/r",
      "http://u:***@p:3128 (from -x)" },
    { { "https_proxy=http://a:b@p1:1", "all_proxy=http://p2:2" }, NULL,
      "https://relay.example/r", "http://a:***@p1:1 (from https_proxy)" },
    { { "HTTPS_PROXY=http://p1:1" }, NULL, "https://relay.example/r",
      "http://p1:1 (from HTTPS_PROXY)" },
    { { "https_proxy=http://p1:1" }, NULL, "http://relay.example/r",
      "none (no -x; no http_proxy, all_proxy or ALL_PROXY set)" },
    { { "ALL_PROXY=http://p2:2" }, NULL, "http://relay.example/r",
      "http://p2:2 (from ALL_PROXY)" },
    { { "https_proxy=http://p1:1" }, "", "https://relay.example/r", "none (-x \"\")" },
    { { "https_proxy=http://p1:1", "no_proxy=.example" }, NULL, "https://relay.example/r",
      "none (no_proxy matches relay.example)" },
    { { "NO_PROXY=relay.example" }, "http://p:1", "https://relay.example/r",
      "none (NO_PROXY matches relay.example)" },     /* no_proxy wins over -x too */
    { { "no_proxy=other.example" }, "http://p:1", "https://relay.example/r",
      "http://p:1 (from -x)" },
    { { "all_proxy=http://p:1" }, NULL, "https://relay.example/r",
      "http://p:1 (from all_proxy; credentials from -U)" },
};
#define N_PROXY_ROWS (int)(sizeof(proxy_rows) / sizeof(proxy_rows[0]))

START_TEST(test_proxy_in_use)
{
    struct rhc_opts o;
    char out[256];

    for (int i = 0; proxy_vars[i]; ++i)
        unsetenv(proxy_vars[i]);
    for (int i = 0; i < 3 && proxy_rows[_i].env[i]; ++i)
        putenv((char *)proxy_rows[_i].env[i]);  /* check forks: gone with the test */
    memset(&o, 0, sizeof(o));
    o.proxy = proxy_rows[_i].x;
    o.base_url = (char *)proxy_rows[_i].url;
    o.proxy_user = strstr(proxy_rows[_i].says, "-U") ? "u:p" : NULL;
    rhc_proxy_describe(&o, out, sizeof(out));
    ck_assert_str_eq(out, proxy_rows[_i].says);
}
END_TEST

START_TEST(test_sigusr1)
{
    ck_assert_int_eq(rhc_signals_setup(), 0);
    raise(SIGUSR1);
    ck_assert_int_eq(rhc_signals_drain(), 0);       /* statistics do not stop */
    ck_assert_int_eq(rhc_signals_took(SIGUSR1), 1);
    ck_assert_int_eq(rhc_signals_took(SIGUSR1), 0); /* told once */
    raise(SIGUSR1);
    raise(SIGTERM);
    ck_assert_int_eq(rhc_signals_drain(), SIGTERM);
    ck_assert_int_eq(rhc_signals_took(SIGUSR1), 1);
    ck_assert_int_eq(rhc_signals_took(SIGTERM), 1);
}
END_TEST

static int parse(const char *a, const char *b, struct rhc_cmd *cmd)
{
    char s[8][64] = { "relay-https", "forward", "-L", "0", "", "", "https://r.example/r", "t" };
    char *argv[9];

    snprintf(s[4], sizeof(s[4]), "%s", a);
    snprintf(s[5], sizeof(s[5]), "%s", b);
    for (int i = 0; i < 8; ++i)
        argv[i] = s[i];
    argv[8] = NULL;
    freopen("/dev/null", "w", stderr);
    int rc = rhc_opts_parse(8, argv, cmd);
    return rc;
}

START_TEST(test_stats_option)
{
    struct rhc_cmd o;

    ck_assert_int_eq(parse("--stats", "2.5", &o), -1);
    ck_assert_int_eq(o.routes[0].stats_ms, 2500);
    rhc_cmd_free(&o);
    ck_assert_int_eq(parse("--stats-json", "/tmp/s.json", &o), -1);
    ck_assert_int_eq(o.routes[0].stats_ms, 0);
    rhc_cmd_free(&o);
    const char *bad[] = { "0", "0.05", "nan", "1e6" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        ck_assert_int_eq(parse("--stats", bad[i], &o), RHC_EXIT_USAGE);
        rhc_cmd_free(&o);
    }
}
END_TEST

static char *slurp_file(const char *path)
{
    static char buf[8192];
    FILE *f = fopen(path, "r");
    size_t n;

    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The file is there at the first tick, and again after SIGUSR1; the next
 * report is due after the default interval. */
START_TEST(test_stats_json_file)
{
    struct rhc_opts o;
    char dir[] = "/tmp/rhc-stats-XXXXXX", path[64];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s.json", dir);
    memset(&o, 0, sizeof(o));
    o.base_url = "https://u:pw@relay.example/r";
    o.target = "echo";
    o.stats_json = path;
    rhc_ctx *c = rhc_ctx_new(&o);
    ck_assert_ptr_nonnull(c);
    struct rhc_route *r = rhc_ctx_add_route(c, &o, "127.0.0.1:1");
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_eq(rhc_ctx_routes(c), r);
    r->n.bytes.up = 12345;
    ck_assert_int_eq(rhc_stats_tick(c, 1000, 0, -1), RHC_STATS_JSON_EVERY_MS);
    ck_assert_int_eq(rhc_stats_tick(c, 1500, 0, 200), 200);
    const char *j = slurp_file(path);
    ck_assert_ptr_nonnull(strstr(j, "\"version\": 1,"));
    ck_assert_ptr_nonnull(strstr(j, "\"url\": \"https://u:***@relay.example/r\""));
    ck_assert_ptr_nonnull(strstr(j, "\"bytes_up\": 12345"));
    ck_assert_ptr_null(strstr(j, "pw"));
    r->n.bytes.up = 99999;
    freopen("/dev/null", "w", stderr);
    ck_assert_int_eq(rhc_stats_tick(c, 2000, 1, -1), RHC_STATS_JSON_EVERY_MS - 1000);
    j = slurp_file(path);
    ck_assert_ptr_nonnull(strstr(j, "\"bytes_up\": 99999"));
    ck_assert_ptr_nonnull(strstr(j, "\"interval_s\": 1.000"));
    rhc_ctx_free(c);
    unlink(path);
    rmdir(dir);
}
END_TEST

Suite *stats_suite(void)
{
    /* one row per test: its case, and how many table rows it loops over */
    const struct { const char *tcase; const TTest *test; int rows; } plan[] = {
        { "format", test_rate, 1 }, { "format", test_size, N_SIZES },
        { "format", test_counters_text, 1 }, { "format", test_counters_add, 1 },
        { "format", test_json_counters, 1 }, { "format", test_json_str, N_JSTRS },
        { "format", test_times, 1 },
        { "proxy", test_url, N_URLS }, { "proxy", test_no_proxy, N_NOPROXIES },
        { "proxy", test_proxy_in_use, N_PROXY_ROWS },
        { "report", test_sigusr1, 1 }, { "report", test_stats_option, 1 },
        { "report", test_stats_json_file, 1 },
    };
    Suite *s = suite_create("stats");
    TCase *tc = NULL;
    const char *cur = "";

    for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); ++i) {
        if (strcmp(cur, plan[i].tcase)) {
            cur = plan[i].tcase;
            tc = tcase_create(cur);
            suite_add_tcase(s, tc);
        }
        tcase_add_loop_test(tc, plan[i].test, 0, plan[i].rows);
    }
    return s;
}
