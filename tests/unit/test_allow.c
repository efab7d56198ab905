/* RelayAllow (rh_allow.c): the parser's refusals, and the matcher against a
 * simple model on random rules, names and addresses: names compared label by
 * label, addresses bit by bit as integers, the internal classes from a table
 * of their own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rh_allow.h"
#include "tests.h"

static int parse(rh_allow_rule *r, const char *host, const char *ports)
{
    char err[256];
    return rh_allow_parse(r, host, ports, err, sizeof(err));
}

START_TEST(parse_refuses_what_is_malformed)
{
    rh_allow_rule r;
    char err[256];
    const char *bad[][2] = {
        { "*", "80" }, { "*.", "80" }, { "example.com", "0" }, { "example.com", "65536" },
        { "example.com", "90-80" }, { "example.com", "" }, { "example.com", "80," },
        { "example.com", "a" }, { "10.0.0.1/8", "22" }, { "10.0.0.0/33", "22" },
        { "::1/129", "22" }, { "10.0.0.0/", "22" }, { "1.2.3", "22" }, { "127.1", "22" },
        { "-bad.example", "22" }, { "a..b", "22" }, { "a b", "22" }, { "[1.2.3.4]", "22" },
        { "example.com", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        err[0] = '\0';
        ck_assert_msg(rh_allow_parse(&r, bad[i][0], bad[i][1], err, sizeof(err)) == -1,
                      "accepted RelayAllow %s %s", bad[i][0], bad[i][1]);
        ck_assert_msg(err[0] != '\0', "no message for %s %s", bad[i][0], bad[i][1]);
    }
    ck_assert_int_eq(parse(&r, "Web.Example.COM.", "80,443,8000-8099"), 0);
    ck_assert_int_eq(r.kind, RH_ALLOW_EXACT);
    ck_assert_str_eq(r.name, "web.example.com");
    ck_assert_uint_eq(r.nports, 3);
    ck_assert_int_eq(parse(&r, "*.Example.com", "22"), 0);
    ck_assert_int_eq(r.kind, RH_ALLOW_DOMAIN);
    ck_assert_str_eq(r.name, ".example.com");
    ck_assert_int_eq(parse(&r, "::ffff:10.0.0.0/104", "22"), 0);
    ck_assert_int_eq(r.net.family, 4);
    ck_assert_uint_eq(r.prefix, 8);
    ck_assert_int_eq(parse(&r, "[2001:db8::]/32", "1-65535"), 0);
    ck_assert_int_eq(r.net.family, 6);
}
END_TEST

START_TEST(split_dest_forms)
{
    char host[300];
    unsigned port = 0;
    ck_assert_int_eq(rh_allow_split_dest("example.com:443", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "example.com");
    ck_assert_uint_eq(port, 443);
    ck_assert_int_eq(rh_allow_split_dest("[::1]:22", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "::1");
    const char *bad[] = { "example.com", "example.com:", "example.com:0", ":80", "::1:22",
                          "[1.2.3.4]:80", "a:65536", "a:+1", "[::1:22", "a b:1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        ck_assert_msg(rh_allow_split_dest(bad[i], host, sizeof(host), &port) == -1,
                      "accepted %s", bad[i]);
    ck_assert_int_eq(rh_allow_split_dest("abcdef:1", host, 4, &port), -1);
}
END_TEST

START_TEST(names_that_are_numbers_are_no_names)
{
    ck_assert(!rh_allow_valid_name("127.1"));
    ck_assert(!rh_allow_valid_name("0x7f.1"));
    ck_assert(!rh_allow_valid_name("2130706433"));
    ck_assert(!rh_allow_valid_name(""));
    ck_assert(!rh_allow_valid_name("."));
    ck_assert(rh_allow_valid_name("localhost"));
    ck_assert(rh_allow_valid_name("1.example.com."));
    ck_assert(rh_allow_valid_name("_srv.example.com"));
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    for (int i = 63; i < 299; i += 64)
        longname[i] = '.';
    longname[254] = '\0';
    ck_assert(!rh_allow_valid_name(longname));    /* 254 characters */
    longname[253] = '\0';
    ck_assert(rh_allow_valid_name(longname));
}
END_TEST

START_TEST(mapped_addresses_are_ipv4)
{
    rh_addr a;
    unsigned p;
    ck_assert_int_eq(rh_addr_parse("::ffff:127.0.0.1", &a), 0);
    ck_assert_int_eq(a.family, 4);
    ck_assert_str_eq(rh_addr_class(&a, &p), "loopback");
    ck_assert_int_eq(rh_addr_parse("[fe80::1]", &a), 0);
    ck_assert_str_eq(rh_addr_class(&a, &p), "link-local");
    ck_assert_int_eq(rh_addr_parse("8.8.8.8", &a), 0);
    ck_assert_ptr_null(rh_addr_class(&a, &p));
    ck_assert_int_eq(rh_addr_parse("2001:db8::1", &a), 0);
    ck_assert_ptr_null(rh_addr_class(&a, &p));
    ck_assert_int_eq(rh_addr_parse("1.2.3", &a), -1);
}
END_TEST

/* ---------------------------------------------------------------- the model */

static unsigned rnd(unsigned n)
{
    return (unsigned)(rand() % (int)n);
}

static const char *const labels[] = { "a", "b", "Ab", "xy", "x-y", "c1" };
#define NLABELS (sizeof(labels) / sizeof(labels[0]))

static void random_name(char *out, int labels_n)
{
    out[0] = '\0';
    for (int i = 0; i < labels_n; ++i) {
        if (i)
            strcat(out, ".");
        strcat(out, labels[rnd(NLABELS)]);
    }
}

/* a model rule: text as given, and what it means */
struct mrule {
    int kind;            /* RH_ALLOW_* */
    char name[64];
    int fam;             /* 4 or 6 */
    unsigned char addr[16];
    unsigned prefix;
    unsigned lo, hi;
};

static int model_port(const struct mrule *m, unsigned port)
{
    return port >= m->lo && port <= m->hi;
}

/* label by label from the right, case-insensitive */
static int model_name(const struct mrule *m, const char *name)
{
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s", name);
    snprintf(b, sizeof(b), "%s", m->name);
    char *la[16], *lb[16];
    int na = 0, nb = 0;
    for (char *s = strtok(a, "."); s; s = strtok(NULL, "."))
        la[na++] = s;
    for (char *s = strtok(b, "."); s; s = strtok(NULL, "."))
        lb[nb++] = s;
    if (m->kind == RH_ALLOW_EXACT ? na != nb : na <= nb)
        return 0;
    for (int i = 1; i <= nb; ++i)
        if (strcasecmp(la[na - i], lb[nb - i]))
            return 0;
    return 1;
}

static int model_names(const struct mrule *m, int nm, const char *name, unsigned port)
{
    for (int i = 0; i < nm; ++i)
        if (m[i].kind != RH_ALLOW_NET && model_port(&m[i], port) && model_name(&m[i], name))
            return 1;
    return 0;
}

static int bit(const unsigned char *a, unsigned i)
{
    return (a[i / 8] >> (7 - i % 8)) & 1;
}

static int model_contains(const unsigned char *net, unsigned prefix, const unsigned char *a)
{
    for (unsigned i = 0; i < prefix; ++i)
        if (bit(net, i) != bit(a, i))
            return 0;
    return 1;
}

/* the internal blocks, written out again as the model sees them */
static unsigned model_class(int fam, const unsigned char *a)
{
    if (fam == 4) {
        unsigned long v = (unsigned long)a[0] << 24 | (unsigned long)a[1] << 16
                        | (unsigned long)a[2] << 8 | a[3];
        static const struct { unsigned long net; unsigned p; } b4[] = {
            { 0x00000000, 8 }, { 0x0a000000, 8 }, { 0x64400000, 10 }, { 0x7f000000, 8 },
            { 0xa9fe0000, 16 }, { 0xac100000, 12 }, { 0xc0a80000, 16 }, { 0xe0000000, 4 },
            { 0xf0000000, 4 } };
        for (size_t i = 0; i < sizeof(b4) / sizeof(b4[0]); ++i)
            if ((v >> (32 - b4[i].p)) == (b4[i].net >> (32 - b4[i].p)))
                return b4[i].p;
        return 0;
    }
    int zero15 = 1;
    for (int i = 0; i < 15; ++i)
        zero15 &= a[i] == 0;
    if (zero15 && a[15] <= 1)
        return 128;
    int zero12 = 1;
    for (int i = 0; i < 12; ++i)
        zero12 &= a[i] == 0;
    if (zero12)
        return 96;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return 10;
    if ((a[0] & 0xfe) == 0xfc)
        return 7;
    if (a[0] == 0xff)
        return 8;
    return 0;
}

static int model_addr(const struct mrule *m, int nm, int fam, const unsigned char *a,
                      unsigned port, int by_name)
{
    unsigned cls = model_class(fam, a);
    for (int i = 0; i < nm; ++i)
        if (m[i].kind == RH_ALLOW_NET && m[i].fam == fam && model_port(&m[i], port)
            && model_contains(m[i].addr, m[i].prefix, a) && (!cls || m[i].prefix >= cls))
            return 1;
    return !cls && by_name;
}

/* an address near the interesting blocks */
static void random_addr(int fam, unsigned char *a)
{
    static const unsigned char firsts4[] = { 0, 10, 100, 127, 169, 172, 192, 224, 240, 8, 93 };
    static const unsigned char firsts6[] = { 0, 0xfe, 0xfc, 0xfd, 0xff, 0x20 };
    memset(a, 0, 16);
    if (fam == 4) {
        a[0] = firsts4[rnd(sizeof(firsts4))];
        a[1] = (unsigned char)(rnd(3) ? rnd(256) : (a[0] == 169 ? 254 : a[0] == 192 ? 168 : 64));
        a[2] = (unsigned char)rnd(4);
        a[3] = (unsigned char)rnd(4);
        return;
    }
    a[0] = firsts6[rnd(sizeof(firsts6))];
    a[1] = (unsigned char)(rnd(2) ? 0x80 : rnd(256));
    if (rnd(3) == 0) {
        a[0] = a[1] = 0;
        a[15] = (unsigned char)rnd(3);
    } else {
        a[15] = (unsigned char)rnd(4);
    }
}

static void mask(unsigned char *a, unsigned prefix, unsigned bits)
{
    for (unsigned i = prefix; i < bits; ++i)
        a[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
}

/* a rule, as text for the parser and as the model's */
static void random_rule(struct mrule *m, char *host, char *ports)
{
    memset(m, 0, sizeof(*m));
    m->lo = 1 + rnd(4);
    m->hi = m->lo + rnd(3);
    sprintf(ports, m->lo == m->hi ? "%u" : "%u-%u", m->lo, m->hi);
    unsigned k = rnd(4);
    if (k == 0 || k == 1) {
        m->kind = k == 0 ? RH_ALLOW_EXACT : RH_ALLOW_DOMAIN;
        random_name(m->name, 1 + (int)rnd(2));
        sprintf(host, "%s%s", k == 1 ? "*." : "", m->name);
        return;
    }
    m->kind = RH_ALLOW_NET;
    m->fam = rnd(2) ? 4 : 6;
    unsigned bits = m->fam == 4 ? 32 : 128;
    random_addr(m->fam, m->addr);
    static const unsigned p4[] = { 0, 4, 8, 10, 12, 16, 24, 30, 32 };
    static const unsigned p6[] = { 0, 7, 8, 10, 16, 96, 120, 128 };
    m->prefix = m->fam == 4 ? p4[rnd(9)] : p6[rnd(8)];
    mask(m->addr, m->prefix, bits);
    rh_addr a = { m->fam, { 0 } };
    memcpy(a.a, m->addr, 16);
    char text[64];
    rh_addr_format(&a, text, sizeof(text));
    sprintf(host, "%s/%u", text, m->prefix);
}

START_TEST(matcher_agrees_with_the_model)
{
    srand(1600 + (unsigned)_i);
    for (int round = 0; round < 200; ++round) {
        struct mrule m[6];
        rh_allow_rule rules[6];
        char host[128], ports[32];
        int n = 1 + (int)rnd(6);
        for (int i = 0; i < n; ++i) {
            random_rule(&m[i], host, ports);
            ck_assert_msg(parse(&rules[i], host, ports) == 0, "refused %s %s", host, ports);
        }
        for (int q = 0; q < 100; ++q) {
            unsigned port = 1 + rnd(7);
            char name[64];
            random_name(name, 1 + (int)rnd(3));
            ck_assert_msg(rh_allow_name(rules, (size_t)n, name, port)
                          == (model_names(m, n, name, port)),
                          "round %d: name %s port %u", round, name, port);
            int fam = rnd(2) ? 4 : 6;
            rh_addr a = { fam, { 0 } };
            random_addr(fam, a.a);
            int by_name = (int)rnd(2);
            const char *why = NULL;
            int got = rh_allow_addr(rules, (size_t)n, &a, port, by_name, &why) == 0;
            char text[64];
            rh_addr_format(&a, text, sizeof(text));
            ck_assert_msg(got == model_addr(m, n, fam, a.a, port, by_name),
                          "round %d: %s port %u by_name %d: got %d", round, text, port,
                          by_name, got);
            ck_assert_msg(got || (why && *why), "no reason for %s", text);
        }
    }
}
END_TEST

Suite *allow_suite(void)
{
    Suite *s = suite_create("allow");
    TCase *tc = tcase_create("allow");
    tcase_add_test(tc, parse_refuses_what_is_malformed);
    tcase_add_test(tc, split_dest_forms);
    tcase_add_test(tc, names_that_are_numbers_are_no_names);
    tcase_add_test(tc, mapped_addresses_are_ipv4);
    tcase_add_loop_test(tc, matcher_agrees_with_the_model, 0, 5);
    suite_add_tcase(s, tc);
    return s;
}
