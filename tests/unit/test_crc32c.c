/* CRC32C: published check values, chaining, hardware against software (and
 * both against a bit-at-a-time reference), and a throughput print. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests.h"
#include "rh_crc32c.h"

/* see test_ring.c: no checkpoint per call in the loops */
#define REQUIRE(c, ...) do { if (!(c)) ck_abort_msg(__VA_ARGS__); } while (0)

/* The definition itself, one bit at a time: shares nothing with the code under
 * test, so an error in its tables cannot hide. */
static uint32_t crc_bitwise(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t c = ~crc;
    while (n--) {
        c ^= *p++;
        for (int i = 0; i < 8; ++i)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint64_t rnd_next(uint64_t *s)   /* splitmix64: reproducible per seed */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rnd_fill(uint64_t *s, unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        p[i] = (unsigned char)rnd_next(s);
}

/* Several threads race to the first call, which sets up the tables (the first
 * test of the suite, so in check's fork mode it is the first use). */
static void *first_use(void *arg)
{
    uint32_t *out = arg;
    out[0] = rh_crc32c(0, "123456789", 9);
    out[1] = rh_crc32c_sw(0, "123456789", 9);
    return NULL;
}

START_TEST(test_concurrent_first_use)
{
    pthread_t th[4];
    uint32_t got[4][2];
    for (int i = 0; i < 4; ++i)
        ck_assert_int_eq(pthread_create(&th[i], NULL, first_use, got[i]), 0);
    for (int i = 0; i < 4; ++i) {
        pthread_join(th[i], NULL);
        ck_assert_uint_eq(got[i][0], 0xE3069283u);
        ck_assert_uint_eq(got[i][1], 0xE3069283u);
    }
}
END_TEST

/* RFC 3720 (iSCSI) B.4 and the usual check value */
START_TEST(test_check_values)
{
    unsigned char b[32];
    struct { uint32_t (*f)(uint32_t, const void *, size_t); const char *name; } impl[] = {
        { rh_crc32c, "rh_crc32c" }, { rh_crc32c_sw, "rh_crc32c_sw" },
    };

    for (size_t i = 0; i < sizeof(impl) / sizeof(impl[0]); ++i) {
        uint32_t (*f)(uint32_t, const void *, size_t) = impl[i].f;
        ck_assert_msg(f(0, "123456789", 9) == 0xE3069283u, "%s: check value", impl[i].name);
        memset(b, 0, sizeof(b));
        ck_assert_msg(f(0, b, 32) == 0x8A9136AAu, "%s: 32 zeros", impl[i].name);
        memset(b, 0xff, sizeof(b));
        ck_assert_msg(f(0, b, 32) == 0x62A8AB43u, "%s: 32 x 0xff", impl[i].name);
        for (int k = 0; k < 32; ++k)
            b[k] = (unsigned char)k;
        ck_assert_msg(f(0, b, 32) == 0x46DD794Eu, "%s: 0..31", impl[i].name);
        for (int k = 0; k < 32; ++k)
            b[k] = (unsigned char)(31 - k);
        ck_assert_msg(f(0, b, 32) == 0x113FDB5Cu, "%s: 31..0", impl[i].name);
        /* nothing leaves the running value alone, NULL included */
        ck_assert_uint_eq(f(0, NULL, 0), 0);
        ck_assert_uint_eq(f(0xDEADBEEFu, NULL, 0), 0xDEADBEEFu);
    }
    ck_assert_uint_eq(crc_bitwise(0, (const unsigned char *)"123456789", 9), 0xE3069283u);
    printf("crc32c: %s\n", rh_crc32c_uses_hw() ? "SSE4.2 crc32 instruction"
                                                : "software (slicing-by-8)");
    fflush(stdout);
}
END_TEST

/* crc(crc(0, a), b) == crc(0, a||b) at every split point, for a buffer long
 * enough to take every path of the hardware code (3-way long and short blocks,
 * words, bytes) on both sides; the software path on a shorter one. */
START_TEST(test_chaining_every_split)
{
    const size_t n_hw = 3 * 4096 * 2 + 3 * 256 + 37, n_sw = 3000;
    uint64_t s = 42;
    unsigned char *b = malloc(n_hw);
    ck_assert_ptr_nonnull(b);
    rnd_fill(&s, b, n_hw);

    uint32_t whole = rh_crc32c(0, b, n_hw);
    ck_assert_uint_eq(whole, rh_crc32c_sw(0, b, n_hw));
    for (size_t k = 0; k <= n_hw; ++k) {
        uint32_t c = rh_crc32c(rh_crc32c(0, b, k), b + k, n_hw - k);
        REQUIRE(c == whole, "rh_crc32c split at %zu of %zu: %08x != %08x", k, n_hw, c, whole);
    }
    whole = crc_bitwise(0, b, n_sw);
    ck_assert_uint_eq(rh_crc32c_sw(0, b, n_sw), whole);
    for (size_t k = 0; k <= n_sw; ++k) {
        uint32_t c = rh_crc32c_sw(rh_crc32c_sw(0, b, k), b + k, n_sw - k);
        REQUIRE(c == whole, "rh_crc32c_sw split at %zu of %zu: %08x != %08x", k, n_sw, c, whole);
    }
    /* and in many pieces, of every size from 1 to 64 */
    whole = rh_crc32c(0, b, n_hw);
    for (size_t step = 1; step <= 64; ++step) {
        uint32_t c = 0, c_sw = 0;
        for (size_t at = 0; at < n_hw; at += step) {
            size_t m = n_hw - at < step ? n_hw - at : step;
            c = rh_crc32c(c, b + at, m);
            c_sw = rh_crc32c_sw(c_sw, b + at, m);
        }
        REQUIRE(c == whole && c_sw == whole, "pieces of %zu: %08x / %08x != %08x", step, c,
                c_sw, whole);
    }
    free(b);
}
END_TEST

/* Random buffers of random lengths at random alignments, from random running
 * values: the dispatched function (hardware where present) against software,
 * and software against the bitwise reference on the shorter ones. */
START_TEST(test_hw_vs_sw_random)
{
    const size_t max = 64 * 1024;
    uint64_t s = 0x5EEDull + (uint64_t)_i;
    unsigned char *b = malloc(max + 16);
    ck_assert_ptr_nonnull(b);
    rnd_fill(&s, b, max + 16);

    for (int round = 0; round < 4000; ++round) {
        uint64_t r = rnd_next(&s);
        size_t len;
        switch (r % 10) {             /* mostly short, some frames, some long */
        case 0: case 1: case 2: case 3: case 4: len = (size_t)(r >> 8) % 65; break;
        case 5: case 6: case 7: len = (size_t)(r >> 8) % 4097; break;
        default: len = (size_t)(r >> 8) % (max + 1); break;
        }
        size_t align = (size_t)(r >> 40) % 16;
        uint32_t init = (r >> 60) & 1 ? 0 : (uint32_t)rnd_next(&s);
        if (round % 7 == 0)
            rnd_fill(&s, b + align, len < 256 ? len : 256);   /* vary the data too */
        uint32_t hw = rh_crc32c(init, b + align, len);
        uint32_t sw = rh_crc32c_sw(init, b + align, len);
        REQUIRE(hw == sw, "round %d: len %zu align %zu init %08x: hw %08x sw %08x", round, len,
                align, init, hw, sw);
        if (len <= 4096) {
            uint32_t ref = crc_bitwise(init, b + align, len);
            REQUIRE(sw == ref, "round %d: len %zu align %zu init %08x: sw %08x ref %08x",
                    round, len, align, init, sw, ref);
        }
    }
    free(b);
}
END_TEST

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint32_t crc_sink;   /* keeps the timed results live */

/* MB/s of f over buffers of len bytes, for about 60 ms. */
static double throughput(uint32_t (*f)(uint32_t, const void *, size_t),
                         const unsigned char *b, size_t len)
{
    size_t done = 0;
    uint32_t c = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < 64; ++i) {
            c = f(c, b, len);   /* chained: every call depends on the one before */
            done += len;
        }
        t = now_s() - t0;
    } while (t < 0.06);
    crc_sink ^= c;
    return (double)done / t / 1e6;
}

/* Informational: no timing assertion (machines and sanitizers differ). */
START_TEST(test_throughput_print)
{
    const size_t sizes[] = { 64, 1024, 16 * 1024, 1024 * 1024 };
    unsigned char *b = malloc(sizes[3]);
    uint64_t s = 7;
    ck_assert_ptr_nonnull(b);
    rnd_fill(&s, b, sizes[3]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); ++i) {
        double hw = throughput(rh_crc32c, b, sizes[i]);
        double sw = throughput(rh_crc32c_sw, b, sizes[i]);
        printf("crc32c throughput, %7zu-byte buffers: rh_crc32c (%s) %8.0f MB/s, "
               "software %6.0f MB/s\n", sizes[i], rh_crc32c_uses_hw() ? "hw" : "sw", hw, sw);
    }
    fflush(stdout);
    free(b);
}
END_TEST

Suite *crc32c_suite(void)
{
    Suite *s = suite_create("crc32c");
    TCase *tc = tcase_create("crc32c");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_concurrent_first_use);
    tcase_add_test(tc, test_check_values);
    tcase_add_test(tc, test_chaining_every_split);
    tcase_add_loop_test(tc, test_hw_vs_sw_random, 0, 2);
    tcase_add_test(tc, test_throughput_print);
    suite_add_tcase(s, tc);
    return s;
}
