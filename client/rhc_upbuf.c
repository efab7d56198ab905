/* relay-https client: the up bytes kept until the server confirms them (see
 * rhc_upbuf.h). Only offsets and CRCs here; what a confirmation means for the
 * pushes is the tunnel's business (rhc_up.c). */
#include <sys/uio.h>

#include "rh_crc32c.h"
#include "rhc_upbuf.h"

void rhc_upbuf_init(struct rhc_upbuf *u, size_t max)
{
    rh_ring_init(&u->ring, max);
}

void rhc_upbuf_free(struct rhc_upbuf *u)
{
    rh_ring_release(&u->ring);
}

uint64_t rhc_upbuf_read_off(const struct rhc_upbuf *u)
{
    return u->base + rh_ring_len(&u->ring);
}

void rhc_upbuf_release(struct rhc_upbuf *u, uint64_t upto)
{
    size_t len = rh_ring_len(&u->ring);
    if (upto <= u->base || !len)
        return;
    uint64_t n = upto - u->base;
    if (n > len)
        n = len;
    u->crc_base = rhc_upbuf_crc_at(u, u->base + n);
    rh_ring_consume(&u->ring, (size_t)n);
    u->base += n;
}

void rhc_upbuf_copy(const struct rhc_upbuf *u, uint64_t off, unsigned char *dst, size_t n)
{
    rh_ring_copy_out(&u->ring, (size_t)(off - u->base), dst, n);
}

/* CRC32C of kept up bytes [off, off + n), continuing crc. */
static uint32_t upbuf_hash(const struct rhc_upbuf *u, uint32_t crc, uint64_t off, size_t n)
{
    struct iovec iov[2];
    int k = n ? rh_ring_peek_iov(&u->ring, iov, (size_t)(off - u->base), n) : 0;

    for (int i = 0; i < k; ++i)
        crc = rh_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
    return crc;
}

void rhc_upbuf_mark(struct rhc_upbuf *u, uint64_t off, uint32_t crc)
{
    u->marks[u->nmark].off = off;
    u->marks[u->nmark].crc = crc;
    u->nmark = (u->nmark + 1) % UP_MARKS;
}

/* From the nearest remembered point below (frames are sent in order, acks land
 * on frame ends), so that a CRC is rarely computed twice. */
uint32_t rhc_upbuf_crc_at(struct rhc_upbuf *u, uint64_t off)
{
    uint64_t from = u->base;
    uint32_t crc = u->crc_base;

    for (unsigned i = 0; i < UP_MARKS; ++i)
        if (u->marks[i].off <= off && u->marks[i].off > from) {
            from = u->marks[i].off;
            crc = u->marks[i].crc;
        }
    if (off > from) {
        crc = upbuf_hash(u, crc, from, (size_t)(off - from));
        rhc_upbuf_mark(u, off, crc);
    }
    return crc;
}

/* After a rewind the server may have had more than we thought. A body still
 * streaming must stay contiguous: the server counts its data bytes from the
 * body's Relay-Offset and drops the ones it has, so jumping ahead inside it
 * would make it drop new bytes (a skip) and then count the rest at the wrong
 * offsets. It goes on from where it is; the next push starts at x. */
void rhc_upbuf_confirm(struct rhc_upbuf *u, uint64_t x, int streaming)
{
    if (x <= u->acked)
        return;
    u->acked = x;
    if (u->sent < x && !streaming)
        u->sent = x;
    rhc_upbuf_release(u, x < u->sent ? x : u->sent);
}

int rhc_upbuf_rewind(struct rhc_upbuf *u, uint64_t x)
{
    if (x < u->base || x > rhc_upbuf_read_off(u))
        return -1;
    u->sent = x;
    if (!u->done)
        u->fin_sent = 0;    /* the F goes again after the bytes */
    return 0;
}
