/* Model-based test of rh_ring: random sequences of operations (write_iov and
 * commit, put, peek_iov, read_iov, copy_out, consume, drop_tail), each checked
 * against a flat array that keeps every byte ever written, with the index of
 * the oldest byte still stored. Rings start small (rh_ring_init_first) so that
 * growth, including growth while the bytes wrap, happens within a few hundred
 * bytes and thousands of seeds run in well under a second.
 *
 * A failure names the seed and the operation; RH_RING_MODEL_SEED=<seed> runs
 * that seed alone (CK_FORK=no CK_RUN_SUITE=ring_model to debug it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests.h"
#include "rh_ring.h"

/* the model */
typedef struct {
    unsigned char *hist;   /* every byte written, in order */
    size_t hcap;
    size_t base, end;      /* stored bytes are hist[base, end) */
} model;

/* what one run saw, to prove the interesting cases happened */
typedef struct {
    unsigned long grew_wrapped;   /* the buffer grew while the bytes wrapped */
    unsigned long grew;
    unsigned long drained;        /* consume emptied the ring */
    unsigned long full;           /* a write found the ring at its bound */
    unsigned long peeks_wrapped;  /* a peek came back in two pieces */
} stats;

typedef struct {
    unsigned seed;
    int op;
    const char *what;
    char msg[256];
} failure;

#define FAIL_IF(cond, f, ...)                                                   \
    do {                                                                        \
        if (cond) {                                                             \
            snprintf((f)->msg, sizeof((f)->msg), __VA_ARGS__);                  \
            goto leave;                                                         \
        }                                                                       \
    } while (0)

static uint64_t rnd_next(uint64_t *s)   /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n)   /* uniform enough in [0, n) */
{
    return n ? (size_t)(rnd_next(s) % n) : 0;
}

static int model_reserve(model *m, size_t more)
{
    if (m->hist && m->end + more <= m->hcap)
        return 0;   /* (allocated even for 0 bytes: no arithmetic on NULL) */
    size_t ncap = m->hcap ? m->hcap : 4096;
    while (ncap < m->end + more)
        ncap *= 2;
    unsigned char *nh = realloc(m->hist, ncap);
    if (!nh)
        return -1;
    m->hist = nh;
    m->hcap = ncap;
    return 0;
}

/* The iovecs a read or peek gave must be the model's bytes from skip on,
 * max at most, each piece inside the buffer and non-empty. */
static int check_read(const rh_ring *r, const model *m, const struct iovec iov[2], int n,
                      size_t skip, size_t max, stats *st, failure *f)
{
    size_t mlen = m->end - m->base;
    size_t want = skip < mlen ? (mlen - skip < max ? mlen - skip : max) : 0;
    size_t got = 0;

    FAIL_IF(n < 0 || n > 2, f, "%d iovec entries", n);
    FAIL_IF(want == 0 && n != 0, f, "%d entries for nothing", n);
    for (int i = 0; i < n; ++i) {
        const unsigned char *p = iov[i].iov_base;
        FAIL_IF(iov[i].iov_len == 0, f, "entry %d empty", i);
        FAIL_IF(p < r->buf || p + iov[i].iov_len > r->buf + r->size, f,
                "entry %d outside the buffer", i);
        FAIL_IF(got + iov[i].iov_len > want, f, "more than %zu bytes", want);
        FAIL_IF(memcmp(p, m->hist + m->base + skip + got, iov[i].iov_len) != 0, f,
                "bytes differ from the model in entry %d (skip %zu max %zu)", i, skip, max);
        got += iov[i].iov_len;
    }
    FAIL_IF(got != want, f, "%zu bytes, the model has %zu (skip %zu max %zu)", got, want,
            skip, max);
    if (n == 2) {
        FAIL_IF(iov[1].iov_base != r->buf, f, "second entry not at the buffer start");
        st->peeks_wrapped++;
    }
    return 0;
leave:
    return -1;
}

/* After every operation: the ring's counts, its buffer and all its bytes. */
static int check_invariants(const rh_ring *r, const model *m, size_t cap, int may_hold_empty,
                            failure *f)
{
    size_t mlen = m->end - m->base;
    unsigned char tmp[1024];

    FAIL_IF(rh_ring_len(r) != mlen, f, "len %zu, model %zu", rh_ring_len(r), mlen);
    FAIL_IF(rh_ring_space(r) != cap - mlen, f, "space %zu, model %zu", rh_ring_space(r),
            cap - mlen);
    FAIL_IF(r->size > cap, f, "size %zu beyond the bound %zu", r->size, cap);
    FAIL_IF((r->buf == NULL) != (r->size == 0), f, "buf %p with size %zu", (void *)r->buf,
            r->size);
    FAIL_IF(mlen > r->size, f, "len %zu in a buffer of %zu", mlen, r->size);
    FAIL_IF(r->size && r->head >= r->size, f, "head %zu in a buffer of %zu", r->head, r->size);
    FAIL_IF(!mlen && r->buf && !may_hold_empty, f, "an empty ring kept its buffer (%zu)",
            r->size);
    /* every byte, through copy_out in pieces of tmp */
    for (size_t at = 0; at < mlen; at += sizeof(tmp)) {
        size_t k = mlen - at < sizeof(tmp) ? mlen - at : sizeof(tmp);
        size_t got = rh_ring_copy_out(r, at, tmp, sizeof(tmp));
        FAIL_IF(got != k, f, "copy_out at %zu gave %zu of %zu", at, got, k);
        FAIL_IF(memcmp(tmp, m->hist + m->base + at, k) != 0, f,
                "stored bytes differ from the model at %zu", at);
    }
    return 0;
leave:
    return -1;
}

/* Writes through write_iov, committing a random part of what was offered. */
static int op_write_iov(rh_ring *r, model *m, size_t cap, uint64_t *rs, stats *st,
                        int *committed_zero, failure *f)
{
    struct iovec iov[2];
    size_t mlen = m->end - m->base, osize = r->size;
    int wrapped = r->size && r->head + r->len > r->size;
    int n = rh_ring_write_iov(r, iov);
    size_t offered = 0;

    if (r->size > osize) {
        st->grew++;
        st->grew_wrapped += wrapped;
    }
    FAIL_IF(n < 0 || n > 2, f, "%d iovec entries", n);
    if (mlen == cap) {
        FAIL_IF(n != 0, f, "%d entries from a full ring", n);
        st->full++;
        return 0;
    }
    FAIL_IF(n == 0, f, "no room offered with %zu free", cap - mlen);
    for (int i = 0; i < n; ++i) {
        const unsigned char *p = iov[i].iov_base;
        FAIL_IF(iov[i].iov_len == 0, f, "entry %d empty", i);
        FAIL_IF(p < r->buf || p + iov[i].iov_len > r->buf + r->size, f,
                "entry %d outside the buffer", i);
        offered += iov[i].iov_len;
    }
    FAIL_IF(n == 2 && iov[1].iov_base != r->buf, f, "second entry not at the buffer start");
    FAIL_IF(offered > cap - mlen, f, "offered %zu with %zu free", offered, cap - mlen);
    FAIL_IF(offered != r->size - mlen, f, "offered %zu of the %zu free in the buffer",
            offered, r->size - mlen);
    /* commit all of it, nothing (a read that found nothing), or some */
    size_t k;
    switch (rnd_below(rs, 4)) {
    case 0: k = offered; break;
    case 1: k = rnd_below(rs, 3) ? rnd_below(rs, offered + 1) : 0; break;
    default: k = rnd_below(rs, offered + 1); break;
    }
    FAIL_IF(model_reserve(m, k) < 0, f, "out of memory");
    size_t done = 0;
    for (int i = 0; i < n && done < k; ++i) {
        size_t c = iov[i].iov_len < k - done ? iov[i].iov_len : k - done;
        for (size_t j = 0; j < c; ++j)
            m->hist[m->end + done + j] = (unsigned char)rnd_next(rs);
        memcpy(iov[i].iov_base, m->hist + m->end + done, c);
        done += c;
    }
    rh_ring_commit(r, k);
    m->end += k;
    *committed_zero = (k == 0);
    return 0;
leave:
    return -1;
}

static int op_put(rh_ring *r, model *m, size_t cap, uint64_t *rs, stats *st, failure *f)
{
    size_t mlen = m->end - m->base, osize = r->size;
    int wrapped = r->size && r->head + r->len > r->size;
    size_t len = rnd_below(rs, 8) ? rnd_below(rs, cap / 2 + 2) : rnd_below(rs, cap + 10);
    size_t want = len < cap - mlen ? len : cap - mlen;

    FAIL_IF(model_reserve(m, len) < 0, f, "out of memory");
    for (size_t j = 0; j < len; ++j)
        m->hist[m->end + j] = (unsigned char)rnd_next(rs);
    size_t got = rh_ring_put(r, m->hist + m->end, len);
    FAIL_IF(got != want, f, "put %zu of %zu, expected %zu (%zu free)", got, len, want,
            cap - mlen);
    m->end += got;
    if (r->size > osize) {
        st->grew++;
        st->grew_wrapped += wrapped;
    }
    st->full += (len && got < len);
    return 0;
leave:
    return -1;
}

/* skip and max around the interesting values: 0, the length, past it */
static size_t pick_len(uint64_t *rs, size_t mlen)
{
    switch (rnd_below(rs, 6)) {
    case 0: return 0;
    case 1: return mlen;
    case 2: return mlen + 1 + rnd_below(rs, 3);
    case 3: return (size_t)-1;
    default: return rnd_below(rs, mlen + 1);
    }
}

/* One seed: a ring with a random bound and first allocation, ops operations. */
static int run_seed(unsigned seed, int ops, size_t max_cap, stats *st, failure *f)
{
    uint64_t rs = seed * 0x2545F4914F6CDD1Dull + 1;
    model m = { NULL, 0, 0, 0 };
    rh_ring r;
    int rc = -1, may_hold_empty = 0;

    f->seed = seed;
    f->op = -1;
    f->what = "init";
    /* bounds from 1 byte up; the first allocation from 1 byte to past the bound */
    size_t cap = rnd_below(&rs, 4) ? 1 + rnd_below(&rs, max_cap) : 1 + rnd_below(&rs, 8);
    size_t first = rnd_below(&rs, 5) ? 1 + rnd_below(&rs, cap / 4 + 1) : 1 + rnd_below(&rs, 2 * cap);
    rh_ring_init_first(&r, cap, first);
    if (check_invariants(&r, &m, cap, 0, f) < 0)
        goto leave;

    for (int op = 0; op < ops; ++op) {
        struct iovec iov[2];
        size_t mlen = m.end - m.base, skip, max, got, want;
        unsigned char tmp[1024];
        int committed_zero = 0;

        f->op = op;
        switch (rnd_below(&rs, 13)) {
        case 0: case 1: case 2:
            f->what = "write_iov+commit";
            if (op_write_iov(&r, &m, cap, &rs, st, &committed_zero, f) < 0)
                goto leave;
            may_hold_empty |= committed_zero;
            break;
        case 3: case 4:
            f->what = "put";
            if (op_put(&r, &m, cap, &rs, st, f) < 0)
                goto leave;
            break;
        case 5: case 6:
            f->what = "peek_iov";
            skip = pick_len(&rs, mlen);
            max = pick_len(&rs, mlen);
            if (check_read(&r, &m, iov, rh_ring_peek_iov(&r, iov, skip, max), skip, max,
                           st, f) < 0)
                goto leave;
            break;
        case 7:
            f->what = "read_iov";
            max = pick_len(&rs, mlen);
            if (check_read(&r, &m, iov, rh_ring_read_iov(&r, iov, max), 0, max, st, f) < 0)
                goto leave;
            break;
        case 8:
            f->what = "copy_out";
            skip = pick_len(&rs, mlen);
            max = pick_len(&rs, mlen);
            if (max > sizeof(tmp))
                max = sizeof(tmp);
            got = rh_ring_copy_out(&r, skip, tmp, max);
            want = skip < mlen ? (mlen - skip < max ? mlen - skip : max) : 0;
            FAIL_IF(got != want, f, "copy_out(%zu, %zu) gave %zu, model %zu", skip, max, got,
                    want);
            FAIL_IF(got && memcmp(tmp, m.hist + m.base + skip, got) != 0, f,
                    "copy_out(%zu, %zu) bytes differ from the model", skip, max);
            break;
        case 9:
            f->what = "drop_tail";
            skip = rnd_below(&rs, 3) ? rnd_below(&rs, mlen + 1) : mlen + rnd_below(&rs, 3);
            rh_ring_drop_tail(&r, skip);
            m.end -= skip < mlen ? skip : mlen;
            if (mlen && skip >= mlen)
                st->drained++;
            may_hold_empty = 0;   /* emptying frees, as consume does */
            break;
        default:
            f->what = "consume";
            /* drain now and then, so rings empty and come back */
            skip = rnd_below(&rs, 3) ? rnd_below(&rs, mlen + 1) : mlen + rnd_below(&rs, 3);
            rh_ring_consume(&r, skip);
            m.base += skip < mlen ? skip : mlen;
            if (mlen && skip >= mlen)
                st->drained++;
            may_hold_empty = 0;   /* consume, even of 0, frees an empty ring */
            break;
        }
        /* An empty ring may keep the buffer a write allocated without a commit
         * (a read that found nothing) until the next consume; once it holds
         * bytes, only a consume can empty it again. */
        if (m.end > m.base)
            may_hold_empty = 0;
        if (check_invariants(&r, &m, cap, may_hold_empty, f) < 0)
            goto leave;
    }
    rc = 0;
leave:
    rh_ring_release(&r);
    free(m.hist);
    return rc;
}

static void report(const failure *f)
{
    ck_abort_msg("ring model: seed %u, op %d (%s): %s; replay with RH_RING_MODEL_SEED=%u",
                 f->seed, f->op, f->what, f->msg, f->seed);
}

/* Small rings, many seeds. Four loop runs share the seeds out. */
START_TEST(test_ring_model_small)
{
    const unsigned seeds = 1000;
    const char *one = getenv("RH_RING_MODEL_SEED");
    stats st = { 0 };
    failure f;
    unsigned lo = (unsigned)_i * seeds, hi = lo + seeds;

    if (one) {
        if (_i)
            return;
        lo = (unsigned)strtoul(one, NULL, 10);
        hi = lo + 1;
    }
    for (unsigned seed = lo; seed < hi; ++seed)
        if (run_seed(seed, 400, 600, &st, &f) < 0)
            report(&f);
    if (one)
        return;
    /* the runs must have reached the cases this test is for */
    ck_assert_msg(st.grew_wrapped > 100, "only %lu growths of a wrapped ring", st.grew_wrapped);
    ck_assert_msg(st.drained > 1000, "only %lu drains", st.drained);
    ck_assert_msg(st.full > 1000, "only %lu writes to a full ring", st.full);
    ck_assert_msg(st.peeks_wrapped > 1000, "only %lu wrapped peeks", st.peeks_wrapped);
}
END_TEST

/* A few seeds with bounds of several first allocations: longer runs of growth. */
START_TEST(test_ring_model_large)
{
    const char *one = getenv("RH_RING_MODEL_SEED");
    stats st = { 0 };
    failure f;

    if (one)
        return;   /* seeds of the small test; these are 1000000 and up */
    for (unsigned seed = 1000000; seed < 1000040; ++seed)
        if (run_seed(seed, 300, 20000, &st, &f) < 0)
            report(&f);
    ck_assert_msg(st.grew_wrapped > 10, "only %lu growths of a wrapped ring", st.grew_wrapped);
}
END_TEST

Suite *ring_model_suite(void)
{
    Suite *s = suite_create("ring_model");
    TCase *tc = tcase_create("ring_model");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_ring_model_small, 0, 4);
    tcase_add_test(tc, test_ring_model_large);
    suite_add_tcase(s, tc);
    return s;
}
