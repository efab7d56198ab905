/* client/rhc_choose.c: the transports a session starts with (from the options,
 * the connection's HTTP version and what the process learned), what is learned,
 * and the fallbacks duplex -> stream -> batch. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "rhc_choose.h"
#include "rhc_tunnel_int.h"
#include "client_tests.h"

static const struct {
    enum rhc_transport opt_up, opt_down;
    long hv;
    enum rhc_transport best_up, best_down;   /* learned by earlier sessions */
    enum rhc_transport up, down;
    int autox;
    const char *why;                         /* a part of the reason given */
} pick_rows[] = {
    { RHC_XP_AUTO, RHC_XP_AUTO, CURL_HTTP_VERSION_2_0, RHC_XP_DUPLEX, RHC_XP_DUPLEX,
      RHC_XP_STREAM, RHC_XP_STREAM, 1, "auto: HTTP/2, not measured on this path yet: stream" },
    { RHC_XP_AUTO, RHC_XP_AUTO, CURL_HTTP_VERSION_1_1, RHC_XP_DUPLEX, RHC_XP_DUPLEX,
      RHC_XP_STREAM, RHC_XP_STREAM, 1, "not HTTP/2" },
    { RHC_XP_AUTO, RHC_XP_AUTO, CURL_HTTP_VERSION_2_0, RHC_XP_STREAM, RHC_XP_STREAM,
      RHC_XP_STREAM, RHC_XP_STREAM, 1, "duplex did not get through earlier" },
    { RHC_XP_AUTO, RHC_XP_AUTO, CURL_HTTP_VERSION_1_1, RHC_XP_BATCH, RHC_XP_STREAM,
      RHC_XP_BATCH, RHC_XP_STREAM, 1, "earlier: up why" },
    /* batch pulls: pushes cannot be watched, so they go batch too */
    { RHC_XP_AUTO, RHC_XP_AUTO, CURL_HTTP_VERSION_2_0, RHC_XP_STREAM, RHC_XP_BATCH,
      RHC_XP_BATCH, RHC_XP_BATCH, 1, "earlier: down why" },
    { RHC_XP_STREAM, RHC_XP_STREAM, CURL_HTTP_VERSION_2_0, RHC_XP_BATCH, RHC_XP_BATCH,
      RHC_XP_STREAM, RHC_XP_STREAM, 0, "--transport stream; the connection speaks HTTP/2" },
    { RHC_XP_BATCH, RHC_XP_STREAM, CURL_HTTP_VERSION_1_0, RHC_XP_DUPLEX, RHC_XP_DUPLEX,
      RHC_XP_BATCH, RHC_XP_STREAM, 0, "--transport batch/stream; the connection speaks HTTP/1.0" },
    { RHC_XP_DUPLEX, RHC_XP_DUPLEX, CURL_HTTP_VERSION_1_1, RHC_XP_DUPLEX, RHC_XP_DUPLEX,
      RHC_XP_DUPLEX, RHC_XP_DUPLEX, 0, "--transport duplex; the connection speaks HTTP/1.1" },
};

START_TEST(test_pick)
{
    for (size_t i = 0; i < sizeof(pick_rows) / sizeof(pick_rows[0]); ++i) {
        struct rhc_opts o;
        struct rhc_policy p;
        enum rhc_transport up, down;
        int autox = -1;
        char why[800];

        memset(&o, 0, sizeof(o));
        o.transport = pick_rows[i].opt_up;
        o.transport_down = pick_rows[i].opt_down;
        rhc_policy_init(&p);
        rhc_policy_note(&p, 1, pick_rows[i].best_up, "up why");
        rhc_policy_note(&p, 0, pick_rows[i].best_down, "down why");
        rhc_choose_pick(&o, &p, pick_rows[i].hv, &up, &down, &autox, why, sizeof(why));
        ck_assert_msg(up == pick_rows[i].up && down == pick_rows[i].down,
                      "row %zu: %s/%s", i, xp_name[up], xp_name[down]);
        ck_assert_int_eq(autox, pick_rows[i].autox);
        ck_assert_msg(strstr(why, pick_rows[i].why), "row %zu: '%s'", i, why);
    }
}
END_TEST

/* What is learned only ever moves towards batch. */
START_TEST(test_policy)
{
    struct rhc_policy p;

    rhc_policy_init(&p);
    ck_assert_int_eq(p.best_up, RHC_XP_DUPLEX);
    ck_assert_int_eq(p.best_down, RHC_XP_DUPLEX);
    ck_assert_uint_eq(p.batch_max, BATCH_DATA_MAX);
    ck_assert_uint_eq(p.spush_max, SPUSH_BODY_MAX);
    rhc_policy_note(&p, 0, RHC_XP_BATCH, "held back");
    ck_assert_int_eq(p.best_down, RHC_XP_BATCH);
    ck_assert_int_eq(p.best_up, RHC_XP_DUPLEX);
    ck_assert_str_eq(p.why_down, "held back");
    rhc_policy_note(&p, 0, RHC_XP_STREAM, "later");
    ck_assert_int_eq(p.best_down, RHC_XP_BATCH);
    ck_assert_str_eq(p.why_down, "held back");
    rhc_policy_note(&p, 1, RHC_XP_STREAM, "413");
    ck_assert_int_eq(p.best_up, RHC_XP_STREAM);
    ck_assert_str_eq(p.why_up, "413");
}
END_TEST

/* A fallback expires: the best transport is probed again, unproven. */
START_TEST(test_policy_expire)
{
    struct rhc_policy p;
    char was[800];

    rhc_policy_init(&p);
    ck_assert_int_eq(rhc_policy_expire(&p, 1LL << 50, was, sizeof(was)), 0);  /* nothing learned */
    p.proven[RHC_XP_DUPLEX] = p.proven[RHC_XP_STREAM] = 1;
    p.batch_max = 1000;
    rhc_policy_note(&p, 0, RHC_XP_STREAM, "held back");
    rhc_policy_note(&p, 1, RHC_XP_STREAM, "held back");
    int64_t at = p.moved_at;
    ck_assert(at > 0);
    ck_assert_int_eq(rhc_policy_expire(&p, at + RHC_POLICY_RETRY_MS - 1, was, sizeof(was)), 0);
    ck_assert_int_eq(p.best_down, RHC_XP_STREAM);
    ck_assert_int_eq(rhc_policy_expire(&p, at + RHC_POLICY_RETRY_MS, was, sizeof(was)), 1);
    ck_assert_str_eq(was, "stream: held back");
    ck_assert_int_eq(p.best_up, RHC_XP_DUPLEX);
    ck_assert_int_eq(p.best_down, RHC_XP_DUPLEX);
    ck_assert_int_eq(p.proven[RHC_XP_DUPLEX], 0);   /* probed again, up bytes held */
    ck_assert_int_eq(p.proven[RHC_XP_STREAM], 1);   /* what worked still did */
    ck_assert_uint_eq(p.batch_max, 1000);           /* a 413 is no transport choice */
    /* both directions: what they were is said, and the up reason when only up moved */
    rhc_policy_note(&p, 1, RHC_XP_BATCH, "413");
    ck_assert_int_eq(rhc_policy_expire(&p, p.moved_at + RHC_POLICY_RETRY_MS, was, sizeof(was)), 1);
    ck_assert_str_eq(was, "push batch, pull duplex: 413");
}
END_TEST

/* A tunnel with a real context (requests are made, never performed). */
struct bench {
    struct rhc_opts o;
    struct rhc_route route;
    rhc_ctx *c;
    rhc_tunnel *t;
};

static void bench_init(struct bench *b, enum rhc_transport up, enum rhc_transport down)
{
    memset(b, 0, sizeof(*b));
    b->o.base_url = "http://127.0.0.1:9";
    b->o.target = "echo";
    b->o.connect_timeout_ms = 1000;
    b->o.transport = RHC_XP_AUTO;
    ck_assert_ptr_nonnull(b->c = rhc_ctx_new(&b->o));
    ck_assert_ptr_nonnull(b->t = calloc(1, sizeof(*b->t)));
    b->t->ctx = b->c;
    rhc_route_init(&b->route, &b->o, "test");
    b->t->route = &b->route;
    rhc_upbuf_init(&b->t->up, UPBUF_MAX);
    b->t->xp.up = up;
    b->t->xp.down = down;
    b->t->xp.autox = 1;
    b->t->sess.rtt_ms = 30;
}

static void bench_free(struct bench *b)
{
    reqs_free(b->t);
    rhc_upbuf_free(&b->t->up);
    free(b->t);
    rhc_ctx_free(b->c);
}

START_TEST(test_fallback_up)
{
    struct bench b;
    struct rhc_req sc;

    bench_init(&b, RHC_XP_STREAM, RHC_XP_STREAM);
    memset(&sc, 0, sizeof(sc));
    b.t->rq.spush = &sc;            /* a streamed body going on */
    b.t->push.ack_wait_since = 5;
    fallback_up(b.t, "held");
    ck_assert_int_eq(b.t->xp.up, RHC_XP_BATCH);
    ck_assert_int_eq(sc.end_wanted, 1);     /* ended by its read callback */
    ck_assert_int_eq(b.t->xp.switching, 1);
    ck_assert_int_eq(b.t->push.ack_wait_since, 0);
    ck_assert_int_eq(b.route.pol.best_up, RHC_XP_BATCH);
    ck_assert_int_eq(b.route.pol.best_down, RHC_XP_DUPLEX);
    /* once batch, nothing more happens */
    sc.end_wanted = 0;
    fallback_up(b.t, "again");
    ck_assert_int_eq(sc.end_wanted, 0);
    b.t->rq.spush = NULL;
    bench_free(&b);
}
END_TEST

START_TEST(test_fallback_down)
{
    struct bench b;

    /* duplex -> stream: a stream pull now, the stream push a little later */
    bench_init(&b, RHC_XP_DUPLEX, RHC_XP_DUPLEX);
    fallback_down(b.t, "no first frame");
    ck_assert_int_eq(b.t->xp.down, RHC_XP_STREAM);
    ck_assert_int_eq(b.t->xp.up, RHC_XP_STREAM);
    ck_assert_int_eq(b.t->xp.switched_pull, 1);
    ck_assert_ptr_nonnull(b.t->rq.pull);
    ck_assert_int_eq(b.t->rq.pull->batch, 0);
    ck_assert(b.t->push.spush_at > 0);
    ck_assert_int_eq(b.route.pol.best_up, RHC_XP_STREAM);
    ck_assert_int_eq(b.route.pol.best_down, RHC_XP_STREAM);

    /* stream -> batch: a batch pull, and pushes follow after a grace */
    fallback_down(b.t, "held back");
    ck_assert_int_eq(b.t->xp.down, RHC_XP_BATCH);
    ck_assert_ptr_nonnull(b.t->rq.pull);
    ck_assert_int_eq(b.t->rq.pull->batch, 1);
    ck_assert(b.t->xp.up_fallback_at > 0);
    ck_assert_int_eq(b.t->xp.hold_until, 0);
    ck_assert_int_eq(b.route.pol.best_down, RHC_XP_BATCH);
    ck_assert_str_eq(b.route.pol.why_down, "held back");

    /* batch is the last: nothing moves */
    struct rhc_req *pull = b.t->rq.pull;
    fallback_down(b.t, "again");
    ck_assert_ptr_eq(b.t->rq.pull, pull);
    bench_free(&b);
}
END_TEST

/* auto's pick from two figures: duplex only when clearly faster. */
START_TEST(test_rates_pick)
{
    struct rhc_rates m;
    char out[240];

    ck_assert_int_eq(rhc_rates_pick(100e6, 300e6), RHC_XP_STREAM);
    ck_assert_int_eq(rhc_rates_pick(300e6, 100e6), RHC_XP_DUPLEX);
    ck_assert_int_eq(rhc_rates_pick(105e6, 100e6), RHC_XP_STREAM);   /* within the edge */
    /* 4 MiB beat 300 MB/s by 10 % only within 12.7 ms */
    ck_assert_int_eq(rhc_meter_lost(300e6, 12000), 0);
    ck_assert_int_eq(rhc_meter_lost(300e6, 13000), 1);
    ck_assert_int_eq(rhc_meter_lost(0, 1000000000), 0);             /* nothing to beat */
    /* a session that stream beat leaves its duplex once staying lost what the move
     * costs: 150 ms here; at 200 MB/s against stream's 250 it loses 0.2 s a second */
    ck_assert_int_eq(rhc_meter_move_due(250e6, 150000, 700000, 140000000), 0);
    ck_assert_int_eq(rhc_meter_move_due(250e6, 150000, 760000, 152000000), 1);
    ck_assert_int_eq(rhc_meter_move_due(250e6, 150000, 149000, 0), 0);  /* idle: its cost */
    ck_assert_int_eq(rhc_meter_move_due(250e6, 150000, 150000, 0), 1);
    ck_assert_int_eq(rhc_meter_move_due(250e6, 0, 0, 0), 1);           /* a free move: now */
    ck_assert_int_eq(rhc_meter_move_due(0, 150000, 0, 0), 1);          /* no figure: now */
    memset(&m, 0, sizeof(m));
    rhc_rates_fmt(&m, out, sizeof(out));
    ck_assert_str_eq(out, "");
    m.bps[1][RHC_XP_DUPLEX] = 198e6;
    m.bps[1][RHC_XP_STREAM] = 412e6;
    m.pick = RHC_XP_STREAM;
    rhc_rates_fmt(&m, out, sizeof(out));
    ck_assert_str_eq(out, "measured duplex down 198 MB/s, stream down 412 MB/s; auto picks stream");
    /* a pick is forgotten after a while, figures and all */
    m.at = 1000;
    rhc_rates_expire(&m, 1000 + RHC_POLICY_RETRY_MS - 1);
    ck_assert_int_eq(m.pick, RHC_XP_STREAM);
    rhc_rates_expire(&m, 1000 + RHC_POLICY_RETRY_MS);
    ck_assert_int_eq(m.pick, RHC_XP_AUTO);
    ck_assert(m.bps[1][RHC_XP_DUPLEX] == 0);
}
END_TEST

/* On HTTP/2, what was measured decides; the reason says so. */
START_TEST(test_pick_measured)
{
    struct rhc_opts o;
    struct rhc_policy p;
    enum rhc_transport up, down;
    int autox;
    char why[800];

    memset(&o, 0, sizeof(o));
    rhc_policy_init(&p);
    /* stream timed, duplex not: duplex for a trial */
    p.rates.bps[1][RHC_XP_STREAM] = 300e6;
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_2_0, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(down, RHC_XP_DUPLEX);
    ck_assert_ptr_nonnull(strstr(why, "timing duplex against it"));
    p.rates.pick = RHC_XP_STREAM;
    snprintf(p.rates.why, sizeof(p.rates.why), "auto: measured on this path, down: stream");
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_2_0, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(up, RHC_XP_STREAM);
    ck_assert_int_eq(down, RHC_XP_STREAM);
    ck_assert_str_eq(why, p.rates.why);
    p.rates.pick = RHC_XP_DUPLEX;
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_2_0, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(down, RHC_XP_DUPLEX);
    ck_assert_str_eq(why, p.rates.why);
    /* an open that went out on one of auto's HTTP/1.1 stream connections: the
     * route was seen to speak HTTP/2, so the measured pick still holds */
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_1_1, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(down, RHC_XP_STREAM);
    ck_assert_ptr_nonnull(strstr(why, "not HTTP/2"));
    p.h2_seen = 1;
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_1_1, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(down, RHC_XP_DUPLEX);
    ck_assert_str_eq(why, p.rates.why);
    /* a fallback learned since still wins over a figure */
    p.rates.pick = RHC_XP_STREAM;
    rhc_policy_note(&p, 0, RHC_XP_BATCH, "held back");
    rhc_choose_pick(&o, &p, CURL_HTTP_VERSION_2_0, &up, &down, &autox, why, sizeof(why));
    ck_assert_int_eq(down, RHC_XP_BATCH);
}
END_TEST

static void feed_down(rhc_tunnel *t, uint64_t bytes)
{
    for (uint64_t n = 0; n < bytes; n += 256 * 1024)
        stat_down(t, 256 * 1024);
}

/* The first bulk session (stream) times stream; a later one starts on duplex,
 * times it and moves to stream unless duplex won; one without resume never
 * measures. */
START_TEST(test_meter_switch)
{
    struct bench b;

    bench_init(&b, RHC_XP_STREAM, RHC_XP_STREAM);
    b.t->sess.resume = 1;
    /* a window spans two round trips (30 ms each here) at least: bytes that
     * came in less time time the path's buffers, not its rate */
    feed_down(b.t, 2 * (METER_WARM + METER_BYTES));
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_STREAM] == 0);
    struct timespec rtts = { 0, 61000000 };
    nanosleep(&rtts, NULL);
    stat_down(b.t, 256 * 1024);
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_STREAM] > 0);
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_STREAM] < (double)(2 * (METER_WARM + METER_BYTES))
              / 0.061);
    ck_assert_int_eq(b.route.pol.rates.pick, RHC_XP_AUTO);
    ck_assert_int_eq(b.t->xp.down, RHC_XP_STREAM);
    ck_assert_int_eq(b.t->meter.done, 1);
    struct rhc_rates kept = b.route.pol.rates;
    bench_free(&b);

    bench_init(&b, RHC_XP_DUPLEX, RHC_XP_DUPLEX);     /* the trial */
    b.route.pol.rates = kept;
    /* stream's in-memory figure is beyond any duplex window's: a slow one
     * here, so that the window runs its METER_BYTES (the early end below) */
    b.route.pol.rates.bps[1][RHC_XP_STREAM] = 1e3;
    b.t->sess.resume = 1;
    b.t->sess.rtt_ms = 0;                                   /* an instant path */
    feed_down(b.t, METER_WARM + METER_BYTES);
    ck_assert_int_eq(b.route.pol.rates.pick, RHC_XP_AUTO);  /* the window opened late */
    feed_down(b.t, METER_WARM + METER_BYTES);
    enum rhc_transport pick = b.route.pol.rates.pick;
    ck_assert(pick == RHC_XP_STREAM || pick == RHC_XP_DUPLEX);
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_DUPLEX] > 0);
    ck_assert_ptr_nonnull(strstr(b.route.pol.rates.why, "measured on this path, down"));
    ck_assert_int_eq(b.t->xp.down, RHC_XP_DUPLEX);          /* not in a callback: */
    ck_assert_int_eq(b.t->meter.switch_due, pick == RHC_XP_STREAM);
    if (pick == RHC_XP_STREAM)      /* looked at when the move is due, not later */
        ck_assert_int_le(t_deadline(b.t), meter_switch_at(b.t));
    meter_switch(b.t);                                      /* the loop moves it */
    ck_assert_int_eq(b.t->xp.down, pick);
    ck_assert_int_eq(b.t->xp.up, pick);
    if (pick == RHC_XP_STREAM)
        ck_assert_ptr_nonnull(b.t->rq.pull);
    ck_assert_int_eq(b.route.pol.best_down, RHC_XP_DUPLEX);  /* no fallback learned */
    bench_free(&b);

    /* a trial that can no longer beat stream's figure ends before its
     * METER_BYTES, with the rate it had */
    bench_init(&b, RHC_XP_DUPLEX, RHC_XP_DUPLEX);
    b.route.pol.rates = kept;
    b.route.pol.rates.bps[1][RHC_XP_STREAM] = 1e13;        /* lost after 0.4 us */
    b.t->sess.resume = 1;
    b.t->sess.rtt_ms = 0;
    /* opened (first piece), warmed (third): no piece timed yet, which on a
     * loaded machine would already be a microsecond too slow */
    feed_down(b.t, METER_WARM + 256 * 1024);
    ck_assert_int_eq(b.route.pol.rates.pick, RHC_XP_AUTO);
    struct timespec ms = { 0, 1000000 };
    nanosleep(&ms, NULL);
    stat_down(b.t, 256 * 1024);
    ck_assert_int_eq(b.route.pol.rates.pick, RHC_XP_STREAM);
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_DUPLEX] > 0);
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_DUPLEX] < 1e13);
    ck_assert_int_eq(b.t->meter.switch_due, 1);
    bench_free(&b);

    /* a deferred move: due once staying cost the move's time, more for the
     * bytes that came meanwhile at stream's rate (the loop's deadline) */
    bench_init(&b, RHC_XP_DUPLEX, RHC_XP_DUPLEX);
    ck_assert_int_eq(meter_switch_at(b.t), -1);
    b.t->meter.switch_due = 1;
    ck_assert_int_eq(meter_switch_at(b.t), 0);              /* no figure: at once */
    b.route.pol.rates.bps[1][RHC_XP_STREAM] = 1e6;
    b.t->meter.fig_us = 5000000000;
    b.t->meter.move_us = 150000;
    b.t->meter.fig_down = b.t->stat.bytes.down;
    b.t->stat.bytes.down += 100000;                         /* 0.1 s at 1 MB/s */
    ck_assert_int_eq(meter_switch_at(b.t), 5000000 + 150 + 100 + 1);
    b.t->meter.switch_due = 0;
    bench_free(&b);

    bench_init(&b, RHC_XP_STREAM, RHC_XP_STREAM);
    feed_down(b.t, 4 * (METER_WARM + METER_BYTES));
    ck_assert(b.route.pol.rates.bps[1][RHC_XP_STREAM] == 0);
    bench_free(&b);
}
END_TEST

Suite *choose_suite(void)
{
    Suite *s = suite_create("client transport choice");
    TCase *tc = tcase_create("choice and fallback");

    tcase_add_test(tc, test_pick);
    tcase_add_test(tc, test_policy);
    tcase_add_test(tc, test_policy_expire);
    tcase_add_test(tc, test_fallback_up);
    tcase_add_test(tc, test_fallback_down);
    tcase_add_test(tc, test_rates_pick);
    tcase_add_test(tc, test_pick_measured);
    tcase_add_test(tc, test_meter_switch);
    suite_add_tcase(s, tc);
    return s;
}
