/* Bounded ring: lazy allocation, wrap-around, bounds, and a randomized model test. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "tests.h"
#include "rh_ring.h"

/* ck_assert_* records a checkpoint per call (a pipe write in fork mode); the
 * randomized loop checks with this instead and only reports failures. */
#define REQUIRE(c, ...) do { if (!(c)) ck_abort_msg(__VA_ARGS__); } while (0)

/* Copies up to max stored bytes out through rh_ring_read_iov. */
static size_t ring_peek(const rh_ring *r, unsigned char *out, size_t max)
{
    struct iovec iov[2];
    int n = rh_ring_read_iov(r, iov, max);
    REQUIRE(n >= 0 && n <= 2, "read_iov gave %d entries", n);
    size_t got = 0;
    for (int i = 0; i < n; ++i) {
        REQUIRE(iov[i].iov_len > 0, "empty iov entry %d", i);
        memcpy(out + got, iov[i].iov_base, iov[i].iov_len);
        got += iov[i].iov_len;
    }
    return got;
}

START_TEST(test_lazy_allocation)
{
    rh_ring r;
    rh_ring_init(&r, 100);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 0);
    ck_assert_uint_eq(rh_ring_space(&r), 100);
    /* reading an empty ring neither allocates nor returns entries */
    struct iovec iov[2];
    ck_assert_int_eq(rh_ring_read_iov(&r, iov, 100), 0);
    ck_assert_ptr_null(r.buf);
    rh_ring_consume(&r, 0);
    ck_assert_ptr_null(r.buf);

    ck_assert_uint_eq(rh_ring_put(&r, "hello", 5), 5);
    ck_assert_ptr_nonnull(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 5);
    ck_assert_uint_eq(rh_ring_space(&r), 95);

    rh_ring_consume(&r, 2);
    ck_assert_ptr_nonnull(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 3);
    unsigned char out[8];
    ck_assert_uint_eq(ring_peek(&r, out, 8), 3);
    ck_assert_mem_eq(out, "llo", 3);

    /* drained: the memory goes back */
    rh_ring_consume(&r, 3);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 0);
    ck_assert_uint_eq(rh_ring_space(&r), 100);

    /* and comes back on the next write, at the start */
    ck_assert_uint_eq(rh_ring_put(&r, "x", 1), 1);
    ck_assert_ptr_nonnull(r.buf);
    ck_assert_uint_eq(r.head, 0);
    rh_ring_release(&r);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 0);
    ck_assert_uint_eq(r.cap, 100);
}
END_TEST

START_TEST(test_consume_more_than_len_releases)
{
    rh_ring r;
    rh_ring_init(&r, 16);
    rh_ring_put(&r, "abcdef", 6);
    rh_ring_consume(&r, 1000);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 0);
}
END_TEST

START_TEST(test_write_iov_commit)
{
    rh_ring r;
    struct iovec iov[2];
    rh_ring_init(&r, 10);
    int n = rh_ring_write_iov(&r, iov);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(r.buf);
    ck_assert_ptr_eq(iov[0].iov_base, r.buf);
    ck_assert_uint_eq(iov[0].iov_len, 10);
    memcpy(iov[0].iov_base, "0123", 4);
    rh_ring_commit(&r, 4);
    ck_assert_uint_eq(rh_ring_len(&r), 4);
    n = rh_ring_write_iov(&r, iov);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_eq(iov[0].iov_base, r.buf + 4);
    ck_assert_uint_eq(iov[0].iov_len, 6);
    rh_ring_release(&r);
}
END_TEST

START_TEST(test_wrap_around)
{
    rh_ring r;
    struct iovec iov[2];
    unsigned char out[16];
    rh_ring_init(&r, 10);
    ck_assert_uint_eq(rh_ring_put(&r, "ABCDEFGH", 8), 8);
    rh_ring_consume(&r, 6);                    /* head 6, "GH" stored */
    ck_assert_uint_eq(r.head, 6);
    ck_assert_uint_eq(rh_ring_len(&r), 2);

    /* free space wraps: [8,10) and [0,6) */
    int n = rh_ring_write_iov(&r, iov);
    ck_assert_int_eq(n, 2);
    ck_assert_ptr_eq(iov[0].iov_base, r.buf + 8);
    ck_assert_uint_eq(iov[0].iov_len, 2);
    ck_assert_ptr_eq(iov[1].iov_base, r.buf);
    ck_assert_uint_eq(iov[1].iov_len, 6);

    ck_assert_uint_eq(rh_ring_put(&r, "ijklmnop", 8), 8);
    ck_assert_uint_eq(rh_ring_len(&r), 10);
    ck_assert_uint_eq(rh_ring_space(&r), 0);
    ck_assert_int_eq(rh_ring_write_iov(&r, iov), 0);

    /* stored bytes wrap too: [6,10) and [0,6) */
    n = rh_ring_read_iov(&r, iov, (size_t)-1);
    ck_assert_int_eq(n, 2);
    ck_assert_ptr_eq(iov[0].iov_base, r.buf + 6);
    ck_assert_uint_eq(iov[0].iov_len, 4);
    ck_assert_ptr_eq(iov[1].iov_base, r.buf);
    ck_assert_uint_eq(iov[1].iov_len, 6);
    ck_assert_uint_eq(ring_peek(&r, out, sizeof(out)), 10);
    ck_assert_mem_eq(out, "GHijklmnop", 10);

    /* max limits what read_iov hands out, with or without the wrap */
    n = rh_ring_read_iov(&r, iov, 3);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(iov[0].iov_len, 3);
    n = rh_ring_read_iov(&r, iov, 5);
    ck_assert_int_eq(n, 2);
    ck_assert_uint_eq(iov[0].iov_len + iov[1].iov_len, 5);
    ck_assert_uint_eq(ring_peek(&r, out, 5), 5);
    ck_assert_mem_eq(out, "GHijk", 5);

    rh_ring_consume(&r, 4);                    /* head wraps to 0 */
    ck_assert_uint_eq(r.head, 0);
    ck_assert_uint_eq(ring_peek(&r, out, sizeof(out)), 6);
    ck_assert_mem_eq(out, "klmnop", 6);
    rh_ring_release(&r);
}
END_TEST

START_TEST(test_put_beyond_capacity)
{
    rh_ring r;
    unsigned char out[32];
    rh_ring_init(&r, 8);
    ck_assert_uint_eq(rh_ring_put(&r, "0123456789abc", 13), 8);
    ck_assert_uint_eq(rh_ring_len(&r), 8);
    ck_assert_uint_eq(rh_ring_space(&r), 0);
    ck_assert_uint_eq(rh_ring_put(&r, "zz", 2), 0);
    ck_assert_uint_eq(rh_ring_len(&r), 8);
    ck_assert_uint_eq(ring_peek(&r, out, sizeof(out)), 8);
    ck_assert_mem_eq(out, "01234567", 8);
    /* partial across the wrap */
    rh_ring_consume(&r, 5);
    ck_assert_uint_eq(rh_ring_put(&r, "ABCDEFGHIJ", 10), 5);
    ck_assert_uint_eq(rh_ring_len(&r), 8);
    ck_assert_uint_eq(ring_peek(&r, out, sizeof(out)), 8);
    ck_assert_mem_eq(out, "567ABCDE", 8);
    rh_ring_release(&r);
}
END_TEST

START_TEST(test_copy_out)
{
    rh_ring r;
    unsigned char out[16];
    rh_ring_init(&r, 10);
    /* an empty ring copies nothing, and allocates nothing */
    ck_assert_uint_eq(rh_ring_copy_out(&r, 0, out, sizeof(out)), 0);
    ck_assert_ptr_null(r.buf);
    rh_ring_put(&r, "ABCDEFGH", 8);
    rh_ring_consume(&r, 6);
    rh_ring_put(&r, "ijklmnop", 8);         /* "GHijklmnop", wrapped at 'k' */
    memset(out, '.', sizeof(out));
    ck_assert_uint_eq(rh_ring_copy_out(&r, 0, out, sizeof(out)), 10);
    ck_assert_mem_eq(out, "GHijklmnop", 10);
    ck_assert_uint_eq(out[10], '.');        /* nothing written past what was copied */
    /* from an offset, across the wrap, limited by n */
    ck_assert_uint_eq(rh_ring_copy_out(&r, 3, out, 4), 4);
    ck_assert_mem_eq(out, "jklm", 4);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 4, out, sizeof(out)), 6);
    ck_assert_mem_eq(out, "klmnop", 6);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 9, out, sizeof(out)), 1);
    ck_assert_uint_eq(out[0], 'p');
    /* at or past the end, or nothing asked */
    ck_assert_uint_eq(rh_ring_copy_out(&r, 10, out, sizeof(out)), 0);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 1000, out, sizeof(out)), 0);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 2, out, 0), 0);
    /* copying takes nothing away */
    ck_assert_uint_eq(rh_ring_len(&r), 10);
    rh_ring_release(&r);
}
END_TEST

/* A write that found nothing to read (write_iov, then no commit) leaves an
 * allocated empty ring; consume(0) gives the memory back. */
START_TEST(test_consume_zero_releases_unused)
{
    rh_ring r;
    struct iovec iov[2];
    rh_ring_init(&r, 100);
    ck_assert_int_eq(rh_ring_write_iov(&r, iov), 1);
    ck_assert_ptr_nonnull(r.buf);
    rh_ring_commit(&r, 0);
    ck_assert_ptr_nonnull(r.buf);
    rh_ring_consume(&r, 0);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(r.size, 0);
    /* but not a ring that holds bytes */
    rh_ring_put(&r, "ab", 2);
    rh_ring_consume(&r, 0);
    ck_assert_ptr_nonnull(r.buf);
    ck_assert_uint_eq(rh_ring_len(&r), 2);
    rh_ring_release(&r);
}
END_TEST

/* rh_ring_init_first: the first allocation has the given size and doubles from
 * there, up to the bound; 0 is the default (64 KiB). */
START_TEST(test_init_first)
{
    rh_ring r;
    struct iovec iov[2];
    rh_ring_init_first(&r, 100, 8);
    ck_assert_ptr_null(r.buf);
    ck_assert_int_eq(rh_ring_write_iov(&r, iov), 1);
    ck_assert_uint_eq(r.size, 8);
    ck_assert_uint_eq(iov[0].iov_len, 8);
    rh_ring_commit(&r, 5);                  /* more than half used: grows next time */
    ck_assert_int_eq(rh_ring_write_iov(&r, iov), 1);
    ck_assert_uint_eq(r.size, 16);
    ck_assert_uint_eq(iov[0].iov_len, 11);
    ck_assert_uint_eq(rh_ring_put(&r, "0123456789abcdefghijklmnopqrstuvwxyz", 36), 36);
    ck_assert_uint_eq(rh_ring_len(&r), 41);
    ck_assert_uint_eq(r.size, 64);
    ck_assert_uint_eq(rh_ring_put(&r, "0123456789abcdefghijklmnopqrstuvwxyz"
                                      "0123456789abcdefghijklmnopqrstuvwxyz", 72), 59);
    ck_assert_uint_eq(r.size, 100);         /* clamped to the bound */
    rh_ring_release(&r);

    rh_ring_init_first(&r, 1u << 20, 0);
    ck_assert_uint_eq(rh_ring_put(&r, "x", 1), 1);
    ck_assert_uint_eq(r.size, 64u * 1024);
    rh_ring_release(&r);
    rh_ring_init_first(&r, 10, 4096);       /* larger than the bound: the bound */
    ck_assert_uint_eq(rh_ring_put(&r, "x", 1), 1);
    ck_assert_uint_eq(r.size, 10);
    rh_ring_release(&r);
}
END_TEST

/* The client's up buffer on a ring: bytes read from the local side are kept
 * from offset base until the server confirms them, sent from any offset in
 * between (again after a rewind), and dropped from the front on confirmation.
 * The offsets are 64-bit and live outside the ring: skip = offset - base. */
START_TEST(test_offset_window)
{
    rh_ring r;
    struct iovec iov[2];
    unsigned char out[64];
    uint64_t base = 1000000, sent = base, off;    /* as after a resumed session */

    rh_ring_init_first(&r, 32, 8);
    /* read from the local side through readv-style iovecs */
    for (int round = 0; round < 3; ++round) {
        int n = rh_ring_write_iov(&r, iov);
        ck_assert_int_ge(n, 1);
        size_t k = iov[0].iov_len < 6 ? iov[0].iov_len : 6;
        for (size_t j = 0; j < k; ++j)
            ((unsigned char *)iov[0].iov_base)[j] = (unsigned char)('a' + round * 6 + j);
        rh_ring_commit(&r, k);
    }
    ck_assert_uint_eq(rh_ring_len(&r), 18);   /* "abcdefghijklmnopqr" at [base, base+18) */
    /* a push sends 10 from sent */
    ck_assert_uint_eq(rh_ring_copy_out(&r, (size_t)(sent - base), out, 10), 10);
    ck_assert_mem_eq(out, "abcdefghij", 10);
    sent += 10;
    /* the server confirms 4: drop them */
    off = base + 4;
    rh_ring_consume(&r, (size_t)(off - base));
    base = off;
    /* the push is cut; the server says it has 6: rewind and send again */
    sent = base + 2;
    ck_assert_uint_eq(rh_ring_copy_out(&r, (size_t)(sent - base), out, sizeof(out)), 12);
    ck_assert_mem_eq(out, "ghijklmnopqr", 12);
    /* more local bytes, across the wrap (the buffer grew to 32 by now) */
    ck_assert_uint_eq(rh_ring_put(&r, "STUVWXYZ0123456789", 18), 18);
    ck_assert_uint_eq(rh_ring_len(&r), 32);
    ck_assert_uint_eq(rh_ring_space(&r), 0);
    ck_assert_uint_eq(rh_ring_copy_out(&r, (size_t)(sent - base), out, sizeof(out)), 30);
    ck_assert_mem_eq(out, "ghijklmnopqrSTUVWXYZ0123456789", 30);
    /* everything confirmed: nothing kept, no memory held */
    rh_ring_consume(&r, rh_ring_len(&r));
    ck_assert_ptr_null(r.buf);
    rh_ring_release(&r);
}
END_TEST

/* Randomized operations against a plain array model. */
START_TEST(test_random_model)
{
    unsigned seed = 12345u + (unsigned)_i;
    for (int round = 0; round < 200; ++round) {
        size_t cap = 1 + (size_t)(rand_r(&seed) % 97);
        rh_ring r;
        rh_ring_init(&r, cap);
        unsigned char model[256];
        size_t mlen = 0;
        unsigned char next = 0;
        for (int op = 0; op < 500; ++op) {
            int what = rand_r(&seed) % 4;
            if (what == 0) {                         /* put */
                unsigned char in[200];
                size_t len = (size_t)(rand_r(&seed) % 150);
                for (size_t i = 0; i < len; ++i)
                    in[i] = next++;
                size_t want = len < cap - mlen ? len : cap - mlen;
                size_t got = rh_ring_put(&r, in, len);
                REQUIRE(got == want, "got == want (cap %zu)", cap);
                memcpy(model + mlen, in, got);
                mlen += got;
                next = (unsigned char)(next - (len - got));   /* not stored: reuse */
            } else if (what == 1) {                  /* write_iov + partial commit */
                struct iovec iov[2];
                int n = rh_ring_write_iov(&r, iov);
                if (mlen == cap) {
                    REQUIRE(n == 0, "n == 0 (cap %zu)", cap);
                    continue;
                }
                REQUIRE(n >= 1, "n >= 1 (cap %zu)", cap);
                size_t space = 0;
                for (int i = 0; i < n; ++i) {
                    REQUIRE(iov[i].iov_base >= (void *)r.buf
                              && (unsigned char *)iov[i].iov_base + iov[i].iov_len
                                 <= r.buf + cap, "iov outside the buffer (cap %zu)", cap);
                    space += iov[i].iov_len;
                }
                REQUIRE(space == cap - mlen, "space == cap - mlen (cap %zu)", cap);
                size_t k = (size_t)(rand_r(&seed) % (space + 1));
                size_t done = 0;
                for (int i = 0; i < n && done < k; ++i) {
                    size_t m = iov[i].iov_len < k - done ? iov[i].iov_len : k - done;
                    for (size_t j = 0; j < m; ++j)
                        ((unsigned char *)iov[i].iov_base)[j] = next++;
                    memcpy(model + mlen + done, iov[i].iov_base, m);
                    done += m;
                }
                rh_ring_commit(&r, k);
                mlen += k;
            } else if (what == 2) {                  /* consume */
                size_t k = (size_t)(rand_r(&seed) % (mlen + 3));
                rh_ring_consume(&r, k);
                if (k >= mlen)
                    mlen = 0;
                else {
                    memmove(model, model + k, mlen - k);
                    mlen -= k;
                }
                if (mlen == 0)
                    REQUIRE(r.buf == NULL, "r.buf not NULL");
            } else {                                 /* read with a limit */
                unsigned char out[256];
                size_t max = (size_t)(rand_r(&seed) % (cap + 5));
                size_t got = ring_peek(&r, out, max);
                REQUIRE(got == (mlen < max ? mlen : max), "read %zu of %zu (cap %zu)", got, mlen, cap);
                REQUIRE(memcmp(out, model, got) == 0, "model mismatch (cap %zu)", cap);
            }
            REQUIRE(rh_ring_len(&r) == mlen, "rh_ring_len(&r) == mlen (cap %zu)", cap);
            REQUIRE(rh_ring_len(&r) <= cap, "rh_ring_len(&r) <= cap (cap %zu)", cap);
            REQUIRE(rh_ring_space(&r) == cap - mlen, "rh_ring_space(&r) == cap - mlen (cap %zu)", cap);
            REQUIRE(r.head < cap, "r.head < cap (cap %zu)", cap);
            if (mlen)
                REQUIRE(r.buf != NULL, "r.buf NULL");
        }
        unsigned char out[256];
        REQUIRE(ring_peek(&r, out, sizeof(out)) == mlen, "final length (cap %zu)", cap);
        REQUIRE(memcmp(out, model, mlen) == 0, "model mismatch (cap %zu)", cap);
        rh_ring_release(&r);
    }
}
END_TEST

/* A large bound: the buffer starts small and doubles as bytes need it, keeping
 * their order across a wrapped ring, never beyond the bound; an emptied ring
 * frees it. A stream of numbered bytes is put and consumed in random steps. */
START_TEST(test_growth)
{
    const size_t cap = 1000000;
    unsigned seed = 777u + (unsigned)_i;
    unsigned char *in = malloc(cap), *out = malloc(cap);
    uint32_t put_n = 0, got_n = 0;
    size_t grew_to = 0;
    rh_ring r;

    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    rh_ring_init(&r, cap);
    for (int step = 0; step < 400; ++step) {
        size_t len = (size_t)(rand_r(&seed) % 200000);
        for (size_t i = 0; i < len; ++i)
            in[i] = (unsigned char)((put_n + i) * 2654435761u >> 24);
        size_t want = len < cap - rh_ring_len(&r) ? len : cap - rh_ring_len(&r);
        size_t got = rh_ring_put(&r, in, len);
        REQUIRE(got == want, "put %zu of %zu", got, want);
        put_n += (uint32_t)got;
        REQUIRE(r.size <= cap && r.size >= rh_ring_len(&r), "size %zu len %zu", r.size,
                rh_ring_len(&r));
        if (r.size > grew_to)
            grew_to = r.size;
        size_t take = (size_t)(rand_r(&seed) % 200000);
        size_t n = ring_peek(&r, out, take);
        for (size_t i = 0; i < n; ++i)
            REQUIRE(out[i] == (unsigned char)((got_n + i) * 2654435761u >> 24),
                    "byte %u out of order", (unsigned)(got_n + i));
        rh_ring_consume(&r, n);
        got_n += (uint32_t)n;
        if (!rh_ring_len(&r))
            REQUIRE(r.buf == NULL && r.size == 0, "an empty ring keeps its buffer");
    }
    REQUIRE(grew_to == cap, "the buffer never reached the bound (%zu)", grew_to);
    rh_ring_release(&r);
    free(in);
    free(out);
}
END_TEST

/* 1 when the kernel prefaults by MADV_POPULATE_WRITE (Linux 5.14 and later). */
static int can_populate(void)
{
#ifdef MADV_POPULATE_WRITE
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ok = p != MAP_FAILED && madvise(p, pg, MADV_POPULATE_WRITE) == 0;
    if (p != MAP_FAILED)
        munmap(p, pg);
    return ok;
#else
    return 0;
#endif
}

/* Pages of [from, to) in buf not resident, or -1 if mincore fails. */
static long pages_out(const unsigned char *buf, size_t from, size_t to)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)buf + from + pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t hi = ((uintptr_t)buf + to) & ~(uintptr_t)(pg - 1);
    size_t n = (hi - lo) / pg;
    unsigned char *vec = malloc(n ? n : 1);
    long out = 0;
    if (!vec || mincore((void *)lo, hi - lo, vec) != 0)
        out = -1;
    for (size_t i = 0; out >= 0 && i < n; ++i)
        out += !(vec[i] & 1);
    free(vec);
    return out;
}

/* Growth to 1 MiB and more prefaults the new part (rh_ring.c, ring_prefault):
 * the bytes stored, wrapped or not, come through intact, and the new part is
 * resident before anything is written to it. */
START_TEST(test_large_growth_prefaults)
{
    rh_ring r;
    struct iovec iov[2];
    size_t half = 512u * 1024, pos = 0, kept = 0;
    unsigned char *chunk = malloc(half), *out = malloc(4u << 20);
    ck_assert_ptr_nonnull(chunk);
    ck_assert_ptr_nonnull(out);

    rh_ring_init_first(&r, 4u << 20, half);
    for (int round = 0; round < 6; ++round) {
        for (size_t i = 0; i < half; ++i)
            chunk[i] = (unsigned char)((pos + i) * 131 >> 3);
        size_t before = r.size;
        ck_assert_uint_eq(rh_ring_put(&r, chunk, half / 2 + 4096), half / 2 + 4096);
        pos += half / 2 + 4096;
        kept += half / 2 + 4096;
        if (round == 1)
            rh_ring_consume(&r, half / 4), kept -= half / 4;   /* the next growth wraps */
        if (r.size > before && r.size >= (1u << 20) && can_populate()) {
            /* what rh_ring_write_iov offers now was prefaulted, not written */
            ck_assert_int_ge(rh_ring_write_iov(&r, iov), 1);
            ck_assert_int_eq(pages_out(r.buf, 0, r.size), 0);
        }
    }
    ck_assert_uint_eq(r.size, 4u << 20);
    ck_assert_uint_eq(rh_ring_len(&r), kept);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 0, out, kept), kept);
    for (size_t i = 0; i < kept; ++i)
        REQUIRE(out[i] == (unsigned char)((pos - kept + i) * 131 >> 3), "byte %zu", i);
    rh_ring_release(&r);
    free(chunk);
    free(out);
}
END_TEST

/* From 1 MiB a ring lives in a mapping the size of its bound (rh_ring.c,
 * ring_map) and grows there in place: the buffer's address stays the same
 * from then on, bytes wrapped across each growth come out in order, and
 * release gives the mapping back. */
START_TEST(test_grows_in_place_from_1mib)
{
    const size_t cap = (8u << 20) + 100;   /* not a whole number of pages */
    rh_ring r;
    unsigned char *chunk = malloc(256u * 1024), *out = malloc(cap);
    size_t pos = 0, kept = 0;
    const unsigned char *at = NULL;

    ck_assert_ptr_nonnull(chunk);
    ck_assert_ptr_nonnull(out);
    rh_ring_init(&r, cap);
    for (int round = 0; round < 40 && rh_ring_space(&r); ++round) {
        for (size_t i = 0; i < 256u * 1024; ++i)
            chunk[i] = (unsigned char)((pos + i) * 2654435761u >> 24);
        size_t got = rh_ring_put(&r, chunk, 256u * 1024);
        pos += got;
        kept += got;
        if (round % 3 == 1) {   /* make the next growths wrap */
            rh_ring_consume(&r, 64u * 1024);
            kept -= 64u * 1024;
        }
        if (r.size < (1u << 20)) {
            ck_assert_uint_eq(r.mapped, 0);
        } else {
            ck_assert_uint_ge(r.mapped, cap);
            if (!at)
                at = r.buf;
            ck_assert_ptr_eq(r.buf, at);
        }
    }
    ck_assert_uint_eq(r.size, cap);
    ck_assert_ptr_eq(r.buf, at);
    ck_assert_uint_eq(rh_ring_copy_out(&r, 0, out, kept), kept);
    for (size_t i = 0; i < kept; ++i)
        REQUIRE(out[i] == (unsigned char)((pos - kept + i) * 2654435761u >> 24),
                "byte %zu of %zu", i, kept);
    rh_ring_consume(&r, kept);
    ck_assert_ptr_null(r.buf);
    ck_assert_uint_eq(r.mapped, 0);
    /* a drained ring starts again from the heap */
    ck_assert_uint_eq(rh_ring_put(&r, "abc", 3), 3);
    ck_assert_uint_eq(r.mapped, 0);
    rh_ring_release(&r);
    free(chunk);
    free(out);
}
END_TEST

Suite *ring_suite(void)
{
    Suite *s = suite_create("ring");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_lazy_allocation);
    tcase_add_test(tc, test_consume_more_than_len_releases);
    tcase_add_test(tc, test_write_iov_commit);
    tcase_add_test(tc, test_wrap_around);
    tcase_add_test(tc, test_put_beyond_capacity);
    tcase_add_test(tc, test_copy_out);
    tcase_add_test(tc, test_consume_zero_releases_unused);
    tcase_add_test(tc, test_init_first);
    tcase_add_test(tc, test_offset_window);
    tcase_add_test(tc, test_large_growth_prefaults);
    tcase_add_test(tc, test_grows_in_place_from_1mib);
    tcase_add_loop_test(tc, test_random_model, 0, 4);
    tcase_add_loop_test(tc, test_growth, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
