/* --help's options come from the option table (opt_defs in rhc_opts.c): every
 * row has its text, and --help shows every long option exactly once, in the
 * column layout users and scripts know. test_manpages.py holds relay-https(1)
 * to the same list. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_tests.h"
#include "rhc_help.h"
#include "rhc_opts.h"
#include "rhc_opts_int.h"

/* What --help prints (rhc_help_full), as one string to free. */
static char *help_text(void)
{
    FILE *f = tmpfile();
    long n;
    char *text;

    ck_assert_ptr_nonnull(f);
    rhc_help_full(f);
    n = ftell(f);
    ck_assert_int_gt(n, 0);
    text = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    rewind(f);
    ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* The long names of every opt_defs row, in table order; returns how many. */
static size_t table_names(struct option *longs)
{
    char shorts[2 * RHC_OPTS_MAX + 2];
    size_t n = 0;

    rhc_opt_getopt_tables(longs, shorts);
    while (longs[n].name)
        ++n;
    return n;
}

/* How many option heads of text name --name: lines "  -X, --name..." or
 * "      --name...", the name ending at a space or the line's end. */
static int heads_naming(const char *text, const char *name)
{
    size_t len = strlen(name);
    int count = 0;

    for (const char *l = text; *l; l += strcspn(l, "\n"), l += *l == '\n') {
        const char *p = NULL;
        if (!strncmp(l, "  -", 3) && l[3] && l[4] == ',' && !strncmp(l + 5, " --", 3))
            p = l + 8;
        else if (!strncmp(l, "      --", 8))
            p = l + 8;
        if (p && !strncmp(p, name, len) && (p[len] == ' ' || p[len] == '\n'))
            ++count;
    }
    return count;
}

START_TEST(test_every_row_has_help)
{
    struct option longs[RHC_OPTS_MAX + 1];
    size_t n = table_names(longs);

    ck_assert_uint_gt(n, 20);
    for (size_t i = 0; i < n; ++i) {
        const struct opt_def *d = rhc_opt_by_name(longs[i].name);
        ck_assert_ptr_nonnull(d);
        ck_assert_msg(d->help && d->help[0] && !strchr(d->help, '\n'),
                      "--%s: no help text, or not one paragraph", d->name);
        /* the head shows an argument exactly when the option takes one */
        ck_assert_msg((d->has_arg == required_argument) == (d->arg != NULL),
                      "--%s: argument name %s for has_arg %d", d->name,
                      d->arg ? d->arg : "(none)", d->has_arg);
    }
}
END_TEST

START_TEST(test_help_shows_each_option_once)
{
    struct option longs[RHC_OPTS_MAX + 1];
    size_t n = table_names(longs);
    char *text = help_text();
    struct rhc_opt_doc d;
    size_t docs = 0;

    for (size_t i = 0; i < n; ++i)
        ck_assert_msg(heads_naming(text, longs[i].name) == 1,
                      "--help shows --%s %d times", longs[i].name,
                      heads_naming(text, longs[i].name));
    while (rhc_opt_doc(docs, &d) == 0)
        ++docs;
    ck_assert_uint_eq(docs, n);
    free(text);
}
END_TEST

/* The layout: text at column 29, or two spaces after a longer head; wrapped
 * lines at column 29; nothing past column 79. */
START_TEST(test_help_layout)
{
    char *text = help_text();

    ck_assert_ptr_nonnull(strstr(text,
        "\n  -k, --insecure             do not verify the server's certificate\n"));
    ck_assert_ptr_nonnull(strstr(text,
        "\n  -H, --header 'Name: value' extra request header (repeatable)\n"));
    ck_assert_ptr_nonnull(strstr(text,
        "\n      --http2-prior-knowledge  speak HTTP/2 at once (also on http:// URLs)\n"));
    ck_assert_ptr_nonnull(strstr(text,
        "\n  -K, --config FILE          read options and tunnels from FILE (see CONFIG\n"
        "                             FILE in relay-https(1)); repeatable\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nOptions:\n  -L, --listen [ADDR:]PORT[:TARGET]  "));
    ck_assert_ptr_nonnull(strstr(text, "\n  -V, --version              version\n\nTransports:\n"));
    for (const char *l = text; *l; ) {
        size_t len = strcspn(l, "\n");
        ck_assert_msg(len <= 79, "--help line longer than 79: %.*s", (int)len, l);
        l += len + (l[len] == '\n');
    }
    free(text);
}
END_TEST

Suite *help_suite(void)
{
    Suite *s = suite_create("help");
    TCase *tc = tcase_create("options");

    tcase_add_test(tc, test_every_row_has_help);
    tcase_add_test(tc, test_help_shows_each_option_once);
    tcase_add_test(tc, test_help_layout);
    suite_add_tcase(s, tc);
    return s;
}
