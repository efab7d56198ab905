/* Bounded byte ring for one direction of a session. The memory is allocated on
 * first use, grows (doubling) as the bytes stored need it, up to the bound, and
 * is released when the ring drains: an idle session holds none, and a bound set
 * for long fat paths costs only the sessions that fill it. A growth to 1 MiB or
 * more moves the bytes once into a mapping the size of the bound, where the
 * ring then grows in place, and faults its new pages in at once (one madvise,
 * not a fault per page). */
#ifndef RH_RING_H
#define RH_RING_H

#include <stddef.h>
#include <sys/uio.h>

typedef struct rh_ring {
    unsigned char *buf;
    size_t cap;    /* bound, fixed at init */
    size_t first;  /* size of the first allocation (then doubling) */
    size_t size;   /* bytes allocated (<= cap) */
    size_t head;   /* index of the oldest byte */
    size_t len;    /* bytes stored */
    size_t mapped; /* length of buf's own mapping (0: buf is from malloc) */
} rh_ring;

void rh_ring_init(rh_ring *r, size_t cap);
/* The same with the first allocation sized first bytes instead of 64 KiB (0:
 * the default): small rings, and tests that make a ring grow with few bytes. */
void rh_ring_init_first(rh_ring *r, size_t cap, size_t first);
void rh_ring_release(rh_ring *r);

static inline size_t rh_ring_len(const rh_ring *r) { return r->len; }
static inline size_t rh_ring_space(const rh_ring *r) { return r->cap - r->len; }

/* Fills iov (up to 2 entries) with free space, allocating or growing the buffer
 * if needed (it may offer less than rh_ring_space; ask again after commit).
 * Returns the number of entries, 0 when full or out of memory. */
int rh_ring_write_iov(rh_ring *r, struct iovec iov[2]);
/* Marks n bytes written through rh_ring_write_iov as stored. */
void rh_ring_commit(rh_ring *r, size_t n);
/* Copies up to len bytes in; returns how many fit. */
size_t rh_ring_put(rh_ring *r, const void *data, size_t len);

/* Fills iov (up to 2 entries) with up to max stored bytes, oldest first. */
int rh_ring_read_iov(const rh_ring *r, struct iovec iov[2], size_t max);
/* The same, starting skip bytes after the oldest (bytes kept but already sent). */
int rh_ring_peek_iov(const rh_ring *r, struct iovec iov[2], size_t skip, size_t max);
/* Copies up to n stored bytes, starting skip bytes after the oldest, to dst
 * (for a reader that needs them contiguous, or sends them again from an older
 * offset). Returns how many were copied: less than n only where the ring ends. */
size_t rh_ring_copy_out(const rh_ring *r, size_t skip, void *dst, size_t n);
/* Drops n bytes from the front; frees the buffer when the ring becomes empty.
 * rh_ring_consume(r, 0) on an empty ring frees a buffer that write_iov
 * allocated but nothing was committed to (a read that found nothing). */
void rh_ring_consume(rh_ring *r, size_t n);
/* Drops the n newest bytes (bytes taken in but then refused). */
void rh_ring_drop_tail(rh_ring *r, size_t n);

#endif
