/* The watch (client/rhc_watch.c, rhc_xp_watch.c): the answer's strict parser
 * (tables, round trips of random answers, every one-byte change of a valid
 * answer either another valid answer or refused), a watch group against a
 * plain model (random joins, leaves, sends, answers and failures: the
 * covered count, the join rate, and that every member is covered or has a
 * watch due), and which ended long-polls let a tunnel join. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rhc_tunnel_int.h"
#include "rhc_watch.h"
#include "client_tests.h"

static struct rhc_watch_hit hits[RH_WATCH_MAX + 1];

static int parse(const char *s, size_t *n)
{
    return rhc_watch_parse(s, strlen(s), hits, RH_WATCH_MAX, n);
}

START_TEST(test_parse_table)
{
    static const struct { const char *body; int ok; size_t n; } cases[] = {
        { "", 1, 0 },                                           /* empty: nothing ready */
        { "0000000300000001 data\n", 1, 1 },
        { "0000000300000001 gone\n", 1, 1 },
        { "0000000300000002 data\n0000000300000001 gone\n", 1, 2 },
        { "0000000300000001 data", 0, 0 },                      /* no LF */
        { "0000000300000001 data\r\n", 0, 0 },                  /* CRLF */
        { "0000000300000001  data\n", 0, 0 },
        { "000000030000001 data\n", 0, 0 },                     /* 15 hex */
        { "00000003000000011 data\n", 0, 0 },                   /* 17 hex */
        { "000000030000000A data\n", 0, 0 },                    /* uppercase */
        { "000000030000000g data\n", 0, 0 },
        { "0000000300000001 Data\n", 0, 0 },
        { "0000000300000001 dat\n", 0, 0 },
        { "0000000300000001 ready\n", 0, 0 },
        { "0000000300000001 data\n\n", 0, 0 },                   /* an empty line */
        { "0000000300000001 data\n0000000300000001 gone\n", 0, 0 }, /* twice */
        { "0000000300000001 data\n0000000300000001 data\n", 0, 0 },
        { "\n", 0, 0 },
        { "<html>Not Found</html>\n", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        size_t n = 99;
        int rc = parse(cases[i].body, &n);
        ck_assert_msg((rc == 0) == cases[i].ok, "case %zu '%s': %d", i, cases[i].body, rc);
        if (cases[i].ok)
            ck_assert_uint_eq(n, cases[i].n);
    }
    size_t n;
    ck_assert_int_eq(parse("0000000300000002 data\n0000000300000001 gone\n", &n), 0);
    ck_assert_int_eq(rhc_watch_find(hits, n, "0000000300000001"), 1);
    ck_assert_int_eq(rhc_watch_find(hits, n, "0000000300000002"), 0);
    ck_assert_int_eq(rhc_watch_find(hits, n, "0000000300000003"), -1);   /* unknown: none */
    ck_assert_int_eq(rhc_watch_find(hits, 0, "0000000300000001"), -1);
}
END_TEST

/* More lines than the cap (RH_WATCH_MAX): refused, not read past. */
START_TEST(test_parse_bounds)
{
    size_t lines = RH_WATCH_MAX + 1, n;
    char *b = malloc(lines * RHC_WATCH_ANSWER_LINE + 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < lines; ++i)
        snprintf(b + i * RHC_WATCH_ANSWER_LINE, RHC_WATCH_ANSWER_LINE + 1, "%016zx data\n", i);
    ck_assert_int_eq(rhc_watch_parse(b, lines * RHC_WATCH_ANSWER_LINE, hits, RH_WATCH_MAX, &n),
                     -1);
    ck_assert_int_eq(rhc_watch_parse(b, RH_WATCH_MAX * RHC_WATCH_ANSWER_LINE, hits,
                                     RH_WATCH_MAX, &n), 0);
    ck_assert_uint_eq(n, RH_WATCH_MAX);
    ck_assert_int_eq(rhc_watch_find(hits, n, "0000000000000fff"), 0);
    ck_assert_int_eq(rhc_watch_parse(b, 3 * RHC_WATCH_ANSWER_LINE, hits, 2, &n), -1);
    free(b);
}
END_TEST

/* A random answer of distinct ids: it parses back to what was written; and
 * each one-byte change of it is refused unless it made another valid answer
 * (an id's hex digit, data <-> gone cannot come from one byte), which then
 * says the same of every id it has. */
START_TEST(test_parse_model)
{
    srand(17);
    for (int round = 0; round < 200; ++round) {
        size_t k = (size_t)(rand() % 40), n;
        char body[40 * RHC_WATCH_ANSWER_LINE + 1];
        uint64_t ids[40];
        int gone[40];
        for (size_t i = 0; i < k; ++i) {
            int dup;
            do {
                ids[i] = ((uint64_t)rand() << 32) ^ (uint64_t)rand();
                dup = 0;
                for (size_t j = 0; j < i; ++j)
                    dup |= ids[j] == ids[i];
            } while (dup);
            gone[i] = rand() & 1;
            snprintf(body + i * RHC_WATCH_ANSWER_LINE, RHC_WATCH_ANSWER_LINE + 1,
                     "%016llx %s\n", (unsigned long long)ids[i],
                     gone[i] ? RH_WATCH_GONE : RH_WATCH_DATA);
        }
        size_t len = k * RHC_WATCH_ANSWER_LINE;
        ck_assert_int_eq(rhc_watch_parse(body, len, hits, RH_WATCH_MAX, &n), 0);
        ck_assert_uint_eq(n, k);
        for (size_t i = 0; i < k; ++i) {
            char sid[RH_SID_LEN + 1];
            snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)ids[i]);
            ck_assert_int_eq(rhc_watch_find(hits, n, sid), gone[i]);
        }
        if (!k)
            continue;
        size_t at = (size_t)rand() % len;
        char was = body[at];
        body[at] = (char)(rand() % 256);
        int rc = rhc_watch_parse(body, len, hits, RH_WATCH_MAX, &n);
        size_t col = at % RHC_WATCH_ANSWER_LINE;
        int hexok = (body[at] >= '0' && body[at] <= '9') || (body[at] >= 'a' && body[at] <= 'f');
        if (body[at] == was)
            ck_assert_int_eq(rc, 0);
        else if (col < RH_SID_LEN && hexok)
            ck_assert(rc == 0 || rc == -1);     /* another id (or one twice: refused) */
        else
            ck_assert_int_eq(rc, -1);
        /* cut short anywhere but at a line's end: refused */
        if (len % RHC_WATCH_ANSWER_LINE == 0 && at % RHC_WATCH_ANSWER_LINE)
            ck_assert_int_eq(rhc_watch_parse(body, at, hits, RH_WATCH_MAX, &n), -1);
    }
}
END_TEST

/* ---- the group against a model ---- */

#define WHO 300                 /* possible members: pointers into this array */

struct gmodel {
    struct rhc_wgroup g;
    char who[WHO];
    int in[WHO];                /* a member */
    size_t idx[WHO];            /* its place, as the group said */
    int covered[WHO];           /* listed in the watch in flight */
    int inflight;
    int64_t last_send, retry_at;
};

static int who_of(struct gmodel *m, void *p)
{
    return (int)((char *)p - m->who);
}

static void model_check(struct gmodel *m, int64_t now)
{
    size_t n = 0, cov = 0;
    for (int i = 0; i < WHO; ++i) {
        if (!m->in[i])
            continue;
        ++n;
        cov += m->covered[i];
        ck_assert_uint_lt(m->idx[i], m->g.n);
        ck_assert_ptr_eq(m->g.m[m->idx[i]].who, &m->who[i]);
        ck_assert_int_eq(m->g.m[m->idx[i]].covered, m->covered[i]);
    }
    ck_assert_uint_eq(m->g.n, n);
    ck_assert_uint_eq(m->g.ncovered, cov);
    /* due exactly when the model says a watch must go */
    int need = n && (!m->inflight || cov < n);
    int64_t at = m->last_send ? m->last_send + RH_WATCH_JOIN_MS : 0;
    if (m->retry_at > at)
        at = m->retry_at;
    ck_assert_int_eq(rhc_wgroup_due(&m->g, now), need && now >= at);
    /* no wake lost: a member not covered has a watch coming, at a known time */
    ck_assert_int_eq(rhc_wgroup_next(&m->g), need ? at : -1);
}

START_TEST(test_group_model)
{
    struct gmodel *m = calloc(1, sizeof(*m));
    int64_t now = 1000000, sends = 0, last = 0;
    int renewed = 0;
    ck_assert_ptr_nonnull(m);
    srand(29);
    for (int step = 0; step < 20000; ++step) {
        int op = rand() % 10, w = rand() % WHO;
        now += rand() % 400;
        if (op < 4 && !m->in[w]) {                      /* a long-poll came back empty */
            size_t idx;
            ck_assert_int_eq(rhc_wgroup_join(&m->g, &m->who[w], &idx), 0);
            m->in[w] = 1;
            m->idx[w] = idx;
            m->covered[w] = 0;
        } else if (op < 6 && m->in[w]) {                /* named, or its local side sent */
            void *moved = rhc_wgroup_leave(&m->g, m->idx[w]);
            if (moved)
                m->idx[who_of(m, moved)] = m->idx[w];
            m->in[w] = 0;
        } else if (op < 8 && rhc_wgroup_due(&m->g, now)) { /* the loop sends it */
            /* a grown set at most once per RH_WATCH_JOIN_MS, but for a renewal
             * after an answer that woke members */
            ck_assert(!sends || renewed || now - last >= RH_WATCH_JOIN_MS);
            last = now;
            renewed = 0;
            rhc_wgroup_sent(&m->g, now);
            for (int i = 0; i < WHO; ++i)
                m->covered[i] = m->in[i];
            m->inflight = 1;
            m->last_send = now;
            m->retry_at = 0;
            ++sends;
        } else if (op == 8 && m->inflight) {            /* answered, failed or given up */
            int at_once = rand() % 4 == 0;              /* it named members */
            int64_t retry = at_once || rand() % 3 ? 0 : now + rand() % 5000;
            rhc_wgroup_ended(&m->g, retry, at_once);
            memset(m->covered, 0, sizeof(m->covered));
            m->inflight = 0;
            m->retry_at = retry;
            if (at_once)
                m->last_send = 0;                       /* the renewal goes at once */
            renewed = at_once;
        }
        model_check(m, now);
    }
    ck_assert_int_gt(sends, 100);
    rhc_wgroup_free(&m->g);
    free(m);
}
END_TEST

START_TEST(test_group_bound)
{
    struct rhc_wgroup g;
    static char who[RH_WATCH_MAX + 1];
    size_t idx;
    memset(&g, 0, sizeof(g));
    for (int i = 0; i < RH_WATCH_MAX; ++i)
        ck_assert_int_eq(rhc_wgroup_join(&g, &who[i], &idx), 0);
    ck_assert_int_eq(rhc_wgroup_join(&g, &who[RH_WATCH_MAX], &idx), -1);   /* full */
    ck_assert_ptr_null(rhc_wgroup_leave(&g, RH_WATCH_MAX - 1));             /* the last */
    ck_assert_ptr_eq(rhc_wgroup_leave(&g, 0), &who[RH_WATCH_MAX - 2]);
    ck_assert_ptr_null(rhc_wgroup_leave(&g, RH_WATCH_MAX));                 /* none there */
    ck_assert_int_eq(rhc_wgroup_join(&g, &who[RH_WATCH_MAX], &idx), 0);
    rhc_wgroup_free(&g);
}
END_TEST

/* ---- which ended long-polls join ---- */

struct jfix {
    struct rhc_opts o;
    struct rhc_route route;
    rhc_tunnel t;
    struct rhc_req r;
    int64_t now;
};

static void jfix_init(struct jfix *f)
{
    memset(f, 0, sizeof(*f));
    rhc_route_init(&f->route, &f->o, "test");
    ck_assert_int_eq(rhc_watch_init(&f->route), 0);
    f->t.route = &f->route;
    rhc_upbuf_init(&f->t.up, 65536);
    f->t.xp.down = f->t.xp.up = RHC_XP_BATCH;
    f->t.sess.poll_ms = 25000;
    f->now = 10000000;
    f->r.batch = 1;
    f->r.saw_end = 1;
    f->r.started = f->now - 25000;
}

static void jfix_free(struct jfix *f)
{
    rhc_upbuf_free(&f->t.up);
    rhc_watch_free(&f->route);
}

START_TEST(test_join_when)
{
    struct jfix *f = calloc(1, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    jfix_init(f);
    ck_assert(watch_may_join(&f->t, &f->r, f->now));            /* an idle poll's E */
    f->r.started = f->now - 1000;                               /* a busy poll (1 s) */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->r.started = f->now - 23000;                              /* the server a bit early */
    ck_assert(watch_may_join(&f->t, &f->r, f->now));
    f->t.sess.poll_ms = 2000;                                   /* a short poll time */
    f->r.started = f->now - 1000;
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->r.started = f->now - 1900;
    ck_assert(watch_may_join(&f->t, &f->r, f->now));
    f->t.sess.poll_ms = 0;                                      /* not announced */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.sess.poll_ms = 2000;

    f->r.rx_data = 1;                                           /* it brought bytes */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->r.rx_data = 0;
    f->r.saw_end = 0;                                           /* F, or cut */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->r.saw_end = 1;
    f->r.batch = 0;                                             /* a stream pull */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->r.batch = 1;
    f->t.sess.serve_leg = 1;                                    /* keeps its own acks */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.sess.serve_leg = 0;

    /* bytes read from the local side since the poll started: they go up first */
    ck_assert_uint_eq(rh_ring_put(&f->t.up.ring, "abc", 3), 3);
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.watch.up_mark = 3;                                     /* read before: unsent */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.up.sent = 3;                                           /* sent, not confirmed */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.up.acked = 3;
    ck_assert(watch_may_join(&f->t, &f->r, f->now));
    f->t.up.eof = 1;
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.up.eof = 0;
    f->t.rq.nbpush = 1;
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.rq.nbpush = 0;
    f->t.local.olen = 5;                                        /* down bytes to deliver */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    f->t.local.olen = 0;

    f->route.watch->off = 1;                                    /* the server has none */
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    jfix_free(f);

    jfix_init(f);
    f->o.no_watch = 1;                                          /* --no-watch */
    rhc_watch_free(&f->route);
    ck_assert_int_eq(rhc_watch_init(&f->route), 0);
    ck_assert_ptr_null(f->route.watch);
    ck_assert(!watch_may_join(&f->t, &f->r, f->now));
    jfix_free(f);
    free(f);
}
END_TEST

/* ---- which idle stream and duplex tunnels give their down request up ---- */

struct ifix {
    struct rhc_opts o;
    struct rhc_route route;
    rhc_tunnel t;
    struct rhc_req r;           /* its stream pull, or its duplex */
    int64_t now;
};

static void ifix_init(struct ifix *f, enum rhc_transport x)
{
    memset(f, 0, sizeof(*f));
    f->o.park_ms = 60000;
    rhc_route_init(&f->route, &f->o, "test");
    ck_assert_int_eq(rhc_watch_init(&f->route), 0);
    f->t.route = &f->route;
    rhc_upbuf_init(&f->t.up, 65536);
    f->now = 10000000;
    f->t.xp.down = f->t.xp.up = f->t.xp.down_seen = x;
    f->t.sess.resume = 1;
    f->t.sess.poll_ms = 25000;
    f->t.sess.last_busy = f->now - 90000;
    f->t.down.off = f->t.ack.sent = f->t.ack.conf = 7;
    f->r.hdr_done = 1;
    f->r.status = 200;
    f->r.got_frame = 1;
    f->r.started = f->now - 80000;
    if (x == RHC_XP_DUPLEX) {
        f->r.kind = REQ_DUPLEX;
        f->r.send_paused = 1;
        f->t.rq.duplex = &f->r;
    } else {
        f->r.kind = REQ_PULL;
        f->t.rq.pull = &f->r;
        f->t.push.parked = 1;
    }
}

/* One thing that keeps an idle tunnel out of the watch, by number; 0: none left. */
static int ifix_spoil(struct ifix *f, int k)
{
    static struct rhc_req other;
    switch (k) {
    case 1: f->t.sess.resume = 0; return 1;         /* nothing is sent again after a cut */
    case 2: f->t.sess.poll_ms = 0; return 1;
    case 3: f->t.sess.serve_leg = 1; return 1;
    case 4: f->t.end.code = 1; return 1;
    case 5: f->t.down.fin = 1; return 1;
    case 6: f->t.up.eof = 1; return 1;
    case 7: f->t.push.r_pending = 1; return 1;
    case 8: f->t.local.olen = 1; return 1;          /* down bytes to deliver */
    case 9: f->t.xp.switching = 1; return 1;
    case 10: f->t.xp.up_hold = 1; return 1;
    case 11: f->t.xp.down_seen = RHC_XP_BATCH; return 1;   /* not proven on this path */
    case 12: f->t.meter.switch_due = 1; return 1;
    case 13: f->r.got_frame = 0; return 1;
    case 14: f->r.recv_paused = 1; return 1;
    case 15: f->r.status = 503; return 1;
    case 16:                                        /* a duplex body ending */
        if (f->t.xp.down == RHC_XP_DUPLEX)
            f->r.end_wanted = 1;
        else
            f->r.saw_end = 1;                       /* a pull that ended (E) */
        return 1;
    case 17: f->t.ack.n = 1; return 1;              /* an ack in flight */
    case 18: f->t.ack.verify = 1; return 1;
    case 19: f->t.ack.conf = 6; return 1;           /* the server may keep bytes */
    case 20: f->t.up.sent = 3; return 1;            /* sent, not confirmed */
    case 21: rh_ring_put(&f->t.up.ring, "abc", 3); return 1;    /* read, not sent */
    case 22: f->t.rq.nbpush = 1; return 1;
    case 23: f->t.rq.spush = &other; return 1;
    case 24: f->t.push.spush_at = f->now; return 1;
    case 25: f->route.watch->off = 1; return 1;     /* the server has no watch */
    case 26: f->o.park_ms = 0; return 1;            /* --idle-push 0 */
    case 27: f->r.batch = 1; return 1;              /* a long-poll joins when it ends */
    case 28:                                        /* stream up, push not parked */
        if (f->t.xp.down != RHC_XP_STREAM)
            f->r.split_at = 5;                      /* duplex: its upload moves */
        else
            f->t.push.parked = 0;
        return 1;
    case 29: f->r.hdr_done = 0; return 1;
    default: return 0;
    }
}

START_TEST(test_idle_when)
{
    struct ifix *f = calloc(1, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    enum rhc_transport xs[] = { RHC_XP_STREAM, RHC_XP_DUPLEX };
    for (int x = 0; x < 2; ++x) {
        ifix_init(f, xs[x]);
        /* quiet since the response started: --idle-push after it */
        ck_assert_int_eq(watch_idle_at(&f->t), f->r.started + 60000);
        f->t.push.last_data = f->now - 5000;        /* then bytes went up */
        ck_assert_int_eq(watch_idle_at(&f->t), f->now - 5000 + 60000);
        f->t.down.last_data = f->now - 1000;        /* and down */
        ck_assert_int_eq(watch_idle_at(&f->t), f->now - 1000 + 60000);
        f->t.watch.idle_retry = f->now;             /* a join that failed */
        ck_assert_int_eq(watch_idle_at(&f->t), f->now + 60000);
        rhc_upbuf_free(&f->t.up);
        rhc_watch_free(&f->route);
        for (int k = 1;; ++k) {
            ifix_init(f, xs[x]);
            ck_assert_int_ge(watch_idle_at(&f->t), 0);
            int more = ifix_spoil(f, k);
            if (more)
                ck_assert_msg(watch_idle_at(&f->t) == -1, "transport %d, case %d joins",
                              (int)xs[x], k);
            rhc_upbuf_free(&f->t.up);
            rhc_watch_free(&f->route);
            if (!more)
                break;
        }
    }
    /* a duplex whose upload went to a stream push (duplex_split) or to batch
     * pushes: it carries down alone, its body ended */
    ifix_init(f, RHC_XP_DUPLEX);
    f->t.xp.up = RHC_XP_STREAM;
    f->r.body_ended = f->r.end_wanted = 1;
    f->r.send_paused = 0;
    ck_assert_int_eq(watch_idle_at(&f->t), -1);     /* its push not parked */
    f->t.push.parked = 1;
    ck_assert_int_ge(watch_idle_at(&f->t), 0);
    f->t.xp.up = RHC_XP_BATCH;
    ck_assert_int_ge(watch_idle_at(&f->t), 0);
    f->r.body_ended = 0;                            /* still ending: not yet */
    ck_assert_int_eq(watch_idle_at(&f->t), -1);
    rhc_upbuf_free(&f->t.up);
    rhc_watch_free(&f->route);
    /* a stream down with batch pushes: no push to park */
    ifix_init(f, RHC_XP_STREAM);
    f->t.xp.up = RHC_XP_BATCH;
    f->t.push.parked = 0;
    ck_assert_int_ge(watch_idle_at(&f->t), 0);
    f->t.xp.up = RHC_XP_DUPLEX;                     /* an up side on a duplex */
    ck_assert_int_eq(watch_idle_at(&f->t), -1);
    rhc_upbuf_free(&f->t.up);
    rhc_watch_free(&f->route);
    free(f);
}
END_TEST

Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("watch");
    tcase_add_test(tc, test_parse_table);
    tcase_add_test(tc, test_parse_bounds);
    tcase_add_test(tc, test_parse_model);
    tcase_add_test(tc, test_group_model);
    tcase_add_test(tc, test_group_bound);
    tcase_add_test(tc, test_join_when);
    tcase_add_test(tc, test_idle_when);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}
