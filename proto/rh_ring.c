#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "rh_ring.h"

#define RING_FIRST (64u * 1024)   /* first allocation, by default */
#define RING_PREFAULT_MIN (1u << 20)  /* growth to this size and more is prefaulted */
#define RING_MAP_MIN (1u << 20)       /* and grows in place in a mapping of the bound */

void rh_ring_init(rh_ring *r, size_t cap)
{
    rh_ring_init_first(r, cap, 0);
}

void rh_ring_init_first(rh_ring *r, size_t cap, size_t first)
{
    r->buf = NULL;
    r->cap = cap;
    r->first = first ? first : RING_FIRST;
    r->size = 0;
    r->head = 0;
    r->len = 0;
    r->mapped = 0;
}

void rh_ring_release(rh_ring *r)
{
    if (r->mapped)
        munmap(r->buf, r->mapped);
    else
        free(r->buf);
    r->buf = NULL;
    r->mapped = 0;
    r->size = 0;
    r->head = 0;
    r->len = 0;
}

/* The pages of a large ring's new part, faulted in by one madvise instead of
 * a page fault per 4 KiB as the bytes first come (in a virtual machine each
 * fault is an exit: the relay core's largest cost in a download's first
 * seconds, docs/BENCHMARKS.md). A grown ring is more than half full and the
 * bytes that made it grow keep coming, so the new part is about to be written
 * anyway. Advice only: a kernel without MADV_POPULATE_WRITE (< 5.14) faults
 * the pages in as before. */
static void ring_prefault(unsigned char *buf, size_t from, size_t to)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    /* every page that holds a byte of the buffer is mapped and writable, and
     * the advice changes no byte: the partial pages at both ends are in */
    uintptr_t lo = ((uintptr_t)buf + from) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)buf + to + page - 1) & ~(page - 1);
    if (to >= RING_PREFAULT_MIN && hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
#else
    (void)buf; (void)from; (void)to;
#endif
}

/* The buffer of a ring about to hold 1 MiB or more: a mapping the size of the
 * bound, reserved but not committed (MAP_NORESERVE; a page costs memory once
 * touched), with the bytes so far copied in at the same offsets. Later growth
 * only widens the part in use: no realloc moves the bytes or remaps pages that
 * were already touched to new addresses, which in a virtual machine costs an
 * exit per page at its first access after the move (a bulk transfer's first
 * tens of MB, docs/BENCHMARKS.md). NULL when the kernel refuses the mapping:
 * the caller grows the heap block as before. */
static unsigned char *ring_map(rh_ring *r, size_t osize)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (r->cap + page - 1) / page * page;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (r->buf) {
        memcpy(m, r->buf, osize);
        free(r->buf);
    }
    r->mapped = len;
    return m;
}

/* Grows the buffer to nsize: in place in its mapping, or by realloc below 1
 * MiB (or when no mapping could be had). When the bytes wrap, the older
 * segment (head to the old end) moves to the new end, so they stay in order
 * with the free space between the two segments. */
static int ring_resize(rh_ring *r, size_t nsize)
{
    size_t osize = r->size;
    unsigned char *nb = r->mapped ? r->buf : NULL;
    if (!nb && nsize >= RING_MAP_MIN)
        nb = ring_map(r, osize);
    if (!nb && !(nb = realloc(r->buf, nsize)))
        return -1;
    r->buf = nb;
    r->size = nsize;
    ring_prefault(nb, osize, nsize);
    if (r->len && r->head + r->len > osize) {
        size_t seg = osize - r->head;
        memmove(nb + nsize - seg, nb + r->head, seg);
        r->head = nsize - seg;
    }
    return 0;
}

int rh_ring_write_iov(rh_ring *r, struct iovec iov[2])
{
    if (r->len >= r->cap)
        return 0;
    /* grow once more than half is used, so reads stay large (rounding up,
     * or a 1-byte buffer, half of which is 0, would never grow) */
    if (r->size < r->cap && (!r->buf || r->size - r->len < (r->size + 1) / 2)) {
        size_t n = r->size ? r->size * 2 : r->first;
        if (n > r->cap)
            n = r->cap;
        if (ring_resize(r, n) < 0 && !r->buf)
            return 0;
    }
    size_t tail = (r->head + r->len) % r->size;
    size_t space = r->size - r->len;
    size_t first = r->size - tail;
    if (!space)
        return 0;
    if (first >= space) {
        iov[0].iov_base = r->buf + tail;
        iov[0].iov_len = space;
        return 1;
    }
    iov[0].iov_base = r->buf + tail;
    iov[0].iov_len = first;
    iov[1].iov_base = r->buf;
    iov[1].iov_len = space - first;
    return 2;
}

void rh_ring_commit(rh_ring *r, size_t n)
{
    r->len += n;
}

size_t rh_ring_put(rh_ring *r, const void *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        struct iovec iov[2];
        int n = rh_ring_write_iov(r, iov);
        size_t before = done;
        for (int i = 0; i < n && done < len; ++i) {
            size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
            memcpy(iov[i].iov_base, (const unsigned char *)data + done, k);
            done += k;
        }
        rh_ring_commit(r, done - before);
        if (done == before)
            break;
    }
    return done;
}

int rh_ring_read_iov(const rh_ring *r, struct iovec iov[2], size_t max)
{
    return rh_ring_peek_iov(r, iov, 0, max);
}

int rh_ring_peek_iov(const rh_ring *r, struct iovec iov[2], size_t skip, size_t max)
{
    if (skip >= r->len)
        return 0;
    size_t len = r->len - skip < max ? r->len - skip : max;
    if (!len)
        return 0;
    size_t start = (r->head + skip) % r->size;
    size_t first = r->size - start;
    if (first >= len) {
        iov[0].iov_base = r->buf + start;
        iov[0].iov_len = len;
        return 1;
    }
    iov[0].iov_base = r->buf + start;
    iov[0].iov_len = first;
    iov[1].iov_base = r->buf;
    iov[1].iov_len = len - first;
    return 2;
}

size_t rh_ring_copy_out(const rh_ring *r, size_t skip, void *dst, size_t n)
{
    struct iovec iov[2];
    int k = rh_ring_peek_iov(r, iov, skip, n);
    size_t done = 0;

    for (int i = 0; i < k; ++i) {
        memcpy((unsigned char *)dst + done, iov[i].iov_base, iov[i].iov_len);
        done += iov[i].iov_len;
    }
    return done;
}

void rh_ring_consume(rh_ring *r, size_t n)
{
    if (n >= r->len) {
        rh_ring_release(r);
        return;
    }
    r->head = (r->head + n) % r->size;
    r->len -= n;
}

void rh_ring_drop_tail(rh_ring *r, size_t n)
{
    if (n >= r->len) {
        rh_ring_consume(r, r->len);   /* empty: the buffer goes too */
        return;
    }
    r->len -= n;
}
