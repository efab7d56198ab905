/* Config files (rhc_config_parse), .netrc (rhc_netrc_lookup) and what they give
 * rhc_opts_parse: routes from repeated -L and [sections], secrets from files,
 * the environment and the refusals of files others can read or write. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_tests.h"
#include "rhc_config.h"
#include "rhc_netrc.h"
#include "rhc_opts.h"

/* ------------------------------------------------------------ the syntax */

struct seen {
    char lines[16][160];
    int n;
};

static int record(void *arg, const char *section, const char *name, const char *value, int line)
{
    struct seen *s = arg;

    ck_assert_int_lt(s->n, 16);
    snprintf(s->lines[s->n++], sizeof(s->lines[0]), "%d [%s] %s=%s", line,
             section ? section : "", name, value ? value : "(none)");
    return 0;
}

START_TEST(test_config_syntax)
{
    char text[] =
        "# comment\n"
        "  proxy = http://p:3128  \n"
        "insecure\n"
        "--user: \"al ice:p\\\"w\"  # trailing comment\n"
        "header X-A: b c\n"
        "\n"
        "[ ssh ]\n"
        "listen=2222\n"
        "-u bob:x\n";
    struct seen s;
    char err[128];

    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(rhc_config_parse(text, record, &s, err, sizeof(err)), 0);
    ck_assert_int_eq(s.n, 6);
    ck_assert_str_eq(s.lines[0], "2 [] proxy=http://p:3128");
    ck_assert_str_eq(s.lines[1], "3 [] insecure=(none)");
    ck_assert_str_eq(s.lines[2], "4 [] user=al ice:p\"w");
    ck_assert_str_eq(s.lines[3], "5 [] header=X-A: b c");
    ck_assert_str_eq(s.lines[4], "8 [ssh] listen=2222");
    ck_assert_str_eq(s.lines[5], "9 [ssh] u=bob:x");
}
END_TEST

START_TEST(test_config_syntax_errors)
{
    static const char *const bad[][2] = {
        { "[ssh\n", "line 1: expected [NAME]" },
        { "ok\n[]\n", "line 2: expected [NAME]" },
        { "a = \"open\n", "line 1: a quoted value must end with a '\"' (a comment may follow it, nothing else)" },
        { "a = \"x\" y\n", "line 1: a quoted value must end with a '\"' (a comment may follow it, nothing else)" },
        { "= x\n", "line 1: expected an option name" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        char text[64], err[128] = "";
        struct seen s;
        memset(&s, 0, sizeof(s));
        snprintf(text, sizeof(text), "%s", bad[i][0]);
        ck_assert_int_eq(rhc_config_parse(text, record, &s, err, sizeof(err)), -1);
        ck_assert_str_eq(err, bad[i][1]);
    }
}
END_TEST

/* ------------------------------------------------------------ .netrc */

static void netrc_expect(const char *text, const char *host, const char *login,
                         const char *user, const char *pass)
{
    char *u = NULL, *p = NULL;
    int rc = rhc_netrc_lookup(text, host, login, &u, &p);

    if (!user) {
        ck_assert_int_eq(rc, 0);
        return;
    }
    ck_assert_int_eq(rc, 1);
    ck_assert_str_eq(u, user);
    if (pass)
        ck_assert_str_eq(p, pass);
    else
        ck_assert_ptr_null(p);
    free(u);
    free(p);
}

START_TEST(test_netrc)
{
    const char *t =
        "# work\n"
        "machine relay.example login alice password s3cret\n"
        "machine other.example\n  login bob\n  account x\n  password \"two words\"\n"
        "macdef init\ncd /\nls\n\n"
        "machine relay.example login carol password c\n"
        "default login anon password guest\n";

    netrc_expect(t, "relay.example", NULL, "alice", "s3cret");
    netrc_expect(t, "RELAY.example", NULL, "alice", "s3cret");
    netrc_expect(t, "relay.example", "carol", "carol", "c");
    netrc_expect(t, "other.example", NULL, "bob", "two words");
    netrc_expect(t, "elsewhere", NULL, "anon", "guest");
    netrc_expect(t, "relay.example", "dave", NULL, NULL);     /* no entry has that login */
    netrc_expect("machine h login a password b\n", "x", NULL, NULL, NULL);
    netrc_expect("machine h password only\n", "h", "zed", "zed", "only");
    netrc_expect("machine h password only\n", "h", NULL, NULL, NULL);
    netrc_expect("machine h login a\n", "h", NULL, "a", NULL);
    netrc_expect("", "h", NULL, NULL, NULL);
    netrc_expect("machine", "h", NULL, NULL, NULL);
}
END_TEST

/* ------------------------------------------------------------ whole command lines */

struct parsed {
    struct rhc_cmd cmd;
    int rc;
    char err[4096];
};

static char tmpdir[] = "/tmp/rhc-config-XXXXXX";

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[256];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void parse(struct parsed *p, const char *const *args)
{
    char *argv[24], store[24][256];
    int argc = 0;
    FILE *err = tmpfile();

    argv[argc++] = strcpy(store[0], "relay-https");
    for (; args[argc - 1]; ++argc)
        argv[argc] = strcpy(store[argc], args[argc - 1]);
    argv[argc] = NULL;
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(err), STDERR_FILENO);
    p->rc = rhc_opts_parse(argc, argv, &p->cmd);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(err);
    size_t n = fread(p->err, 1, sizeof(p->err) - 1, err);
    p->err[n] = '\0';
    fclose(err);
}

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    unsetenv("RELAY_HTTPS_USER");
    unsetenv("RELAY_HTTPS_PASSWORD");
    unsetenv("RELAY_HTTPS_PROXY_USER");
    unsetenv("RELAY_HTTPS_PROXY_PASSWORD");
}

START_TEST(test_routes)
{
    const char *cfg = write_file("c.conf",
        "url = https://relay.example/relay\n"
        "transport = batch\n"
        "[ssh]\nlisten = 2222\n"
        "[web]\nlisten = 127.0.0.2:8080\ntarget = www\ntransport = stream\n"
        "[sock]\nlisten = /tmp/x.sock\n"
        "[stdio-only]\n", 0644);
    const char *args[] = { "forward", "-K", cfg, "-L", "9000:db", "--no-resume", NULL };
    struct parsed p;

    parse(&p, args);
    ck_assert_msg(p.rc == -1, "rc %d: %s", p.rc, p.err);
    ck_assert_uint_eq(p.cmd.nroutes, 4);
    const struct rhc_opts *r = p.cmd.routes;
    ck_assert_str_eq(r[0].name, "9000:db");
    ck_assert_str_eq(r[0].target, "db");
    ck_assert_str_eq(r[0].listen_port, "9000");
    ck_assert_int_eq(r[0].transport, RHC_XP_BATCH);
    ck_assert_str_eq(r[1].name, "ssh");
    ck_assert_str_eq(r[1].target, "ssh");
    ck_assert_str_eq(r[1].base_url, "https://relay.example/relay");
    ck_assert_int_eq(r[1].no_resume, 1);              /* the command line applies */
    ck_assert_str_eq(r[2].target, "www");
    ck_assert_str_eq(r[2].listen_host, "127.0.0.2");
    ck_assert_int_eq(r[2].transport, RHC_XP_STREAM);  /* the section wins */
    ck_assert_str_eq(r[3].listen_path, "/tmp/x.sock");
    ck_assert_ptr_null(r[3].listen_port);
    rhc_cmd_free(&p.cmd);
}
END_TEST

START_TEST(test_stdio_section)
{
    const char *cfg = write_file("s.conf", "url = https://r.example/relay\n"
                                 "[ssh]\nlisten = 1\nproxy = http://p:1\n", 0600);
    const char *args[] = { "stdio", "-K", cfg, "ssh", NULL };
    struct parsed p;

    parse(&p, args);
    ck_assert_msg(p.rc == -1, "rc %d: %s", p.rc, p.err);
    ck_assert_uint_eq(p.cmd.nroutes, 1);
    ck_assert_str_eq(p.cmd.routes[0].proxy, "http://p:1");
    ck_assert_ptr_null(p.cmd.routes[0].listen_port);
    rhc_cmd_free(&p.cmd);
}
END_TEST

/* Secrets: from the config file only when others cannot read it, from .netrc
 * likewise, from the environment; -u USER without a terminal is an error. */
START_TEST(test_secret_sources)
{
    struct parsed p;
    const char *open_cfg = write_file("open.conf", "user = alice:pw\n", 0644);
    const char *a1[] = { "stdio", "-K", open_cfg, "https://h/r", "t", NULL };
    parse(&p, a1);
    ck_assert_int_eq(p.rc, RHC_EXIT_USAGE);
    ck_assert_msg(strstr(p.err, "holds secrets but others can read it (mode 644)"), "%s", p.err);
    rhc_cmd_free(&p.cmd);

    const char *shut = write_file("shut.conf", "user = alice:pw\n", 0600);
    const char *a2[] = { "stdio", "-K", shut, "https://h/r", "t", NULL };
    parse(&p, a2);
    ck_assert_int_eq(p.rc, -1);
    ck_assert_str_eq(p.cmd.routes[0].user, "alice:pw");
    rhc_cmd_free(&p.cmd);

    const char *nrc = write_file("netrc", "machine h login bob password b0b\n", 0600);
    const char *a3[] = { "stdio", "--netrc-file", nrc, "https://h:8443/r", "t", NULL };
    parse(&p, a3);
    ck_assert_int_eq(p.rc, -1);
    ck_assert_str_eq(p.cmd.routes[0].user, "bob:b0b");
    rhc_cmd_free(&p.cmd);

    chmod(nrc, 0640);
    parse(&p, a3);
    ck_assert_int_eq(p.rc, RHC_EXIT_USAGE);
    ck_assert_msg(strstr(p.err, "chmod 600"), "%s", p.err);
    rhc_cmd_free(&p.cmd);

    setenv("RELAY_HTTPS_USER", "eve", 1);
    setenv("RELAY_HTTPS_PASSWORD", "e", 1);
    setenv("RELAY_HTTPS_PROXY_USER", "px:y", 1);
    const char *a4[] = { "stdio", "https://h/r", "t", NULL };
    parse(&p, a4);
    ck_assert_int_eq(p.rc, -1);
    ck_assert_str_eq(p.cmd.routes[0].user, "eve:e");
    ck_assert_str_eq(p.cmd.routes[0].proxy_user, "px:y");
    rhc_cmd_free(&p.cmd);
    unsetenv("RELAY_HTTPS_PASSWORD");

    /* check runs tests without a controlling terminal (setsid) */
    if (open("/dev/tty", O_RDWR) < 0) {
        const char *a5[] = { "stdio", "-u", "carl", "https://h/r", "t", NULL };
        parse(&p, a5);
        ck_assert_int_eq(p.rc, RHC_EXIT_USAGE);
        ck_assert_msg(strstr(p.err, "-u carl: no password given and no terminal"), "%s", p.err);
        rhc_cmd_free(&p.cmd);
    }
}
END_TEST

START_TEST(test_config_refusals)
{
    static const char *const cases[][2] = {
        { "bogus = 1\n", ":1: unknown option 'bogus'" },
        { "help\n", ":1: not a config file option 'help'" },
        { "[a]\nverbose\n", ":2: 'verbose' is for the whole process" },
        { "insecure = yes\n", ":1: 'insecure' takes no value" },
        { "proxy\n", ":1: 'proxy' needs a value" },
        { "[a b]\nlisten = 1\n", ":2: [a b]: a section name is 1 to 63" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        struct parsed p;
        const char *cfg = write_file("r.conf", cases[i][0], 0600);
        const char *args[] = { "forward", "-K", cfg, "-L", "1", "https://h/r", "t", NULL };
        parse(&p, args);
        ck_assert_int_eq(p.rc, RHC_EXIT_USAGE);
        ck_assert_msg(strstr(p.err, cases[i][1]), "case %zu: %s", i, p.err);
        rhc_cmd_free(&p.cmd);
    }
    chmod(write_file("w.conf", "insecure\n", 0600), 0622);
    struct parsed p;
    const char *args[] = { "stdio", "-K", "/nonexistent/x", "https://h/r", "t", NULL };
    parse(&p, args);
    ck_assert_msg(strstr(p.err, "--config /nonexistent/x: No such file"), "%s", p.err);
    rhc_cmd_free(&p.cmd);
    char w[256];
    snprintf(w, sizeof(w), "%s/w.conf", tmpdir);
    const char *args2[] = { "stdio", "-K", w, "https://h/r", "t", NULL };
    parse(&p, args2);
    ck_assert_msg(strstr(p.err, "others can write it"), "%s", p.err);
    rhc_cmd_free(&p.cmd);
}
END_TEST

/* A proxy password in -x is masked in argv like -u's. */
START_TEST(test_proxy_url_masked)
{
    char store[6][64] = { "relay-https", "stdio", "-x", "http://u:secret@p:3128", "https://h/r",
                          "t" };
    char *argv[7] = { store[0], store[1], store[2], store[3], store[4], store[5], NULL };
    struct rhc_cmd cmd;

    ck_assert_int_eq(rhc_opts_parse(6, argv, &cmd), -1);
    ck_assert_str_eq(cmd.routes[0].proxy, "http://u:secret@p:3128");
    ck_assert_str_eq(store[3], "http://u:******@p:3128");
    rhc_cmd_free(&cmd);
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config files and secrets");
    TCase *tc = tcase_create("config");

    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_config_syntax);
    tcase_add_test(tc, test_config_syntax_errors);
    tcase_add_test(tc, test_netrc);
    tcase_add_test(tc, test_routes);
    tcase_add_test(tc, test_stdio_section);
    tcase_add_test(tc, test_secret_sources);
    tcase_add_test(tc, test_config_refusals);
    tcase_add_test(tc, test_proxy_url_masked);
    suite_add_tcase(s, tc);
    return s;
}
