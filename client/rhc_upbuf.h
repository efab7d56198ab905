/* relay-https client: the up bytes of a session, read from the local side and
 * kept (on an rh_ring) until the server confirms them, with the offsets that
 * say how far they went: [base, read) kept, sent handed to pushes, acked
 * confirmed; and CRC32C marks at frame ends for the C frames. */
#ifndef RHC_UPBUF_H
#define RHC_UPBUF_H

#include <stddef.h>
#include <stdint.h>

#include "rh_ring.h"

#define UP_MARKS          32              /* CRCs at recent up frame ends (acks land there) */

struct rhc_upbuf {
    rh_ring ring;               /* up bytes [base, read offset) */
    uint64_t base;              /* offset of the oldest byte kept */
    uint64_t sent;              /* bytes handed to pushes (may go back: rewind) */
    uint64_t acked;             /* bytes the server confirmed */
    uint32_t crc_base;          /* CRC32C of up bytes [0, base) */
    struct { uint64_t off; uint32_t crc; } marks[UP_MARKS];  /* ... [0, off) */
    unsigned nmark;
    int eof;                    /* local read side gave EOF */
    int fin_sent;               /* F handed to a push */
    int done;                   /* a push with F was accepted */
};

void rhc_upbuf_init(struct rhc_upbuf *u, size_t max);
void rhc_upbuf_free(struct rhc_upbuf *u);
/* Offset after the last byte read from the local side. */
uint64_t rhc_upbuf_read_off(const struct rhc_upbuf *u);
/* Forgets the bytes below upto. */
void rhc_upbuf_release(struct rhc_upbuf *u, uint64_t upto);
/* Copies n kept bytes from offset off (base <= off, off + n <= read offset). */
void rhc_upbuf_copy(const struct rhc_upbuf *u, uint64_t off, unsigned char *dst, size_t n);
/* CRC32C of up bytes [0, off), base <= off <= read offset. */
uint32_t rhc_upbuf_crc_at(struct rhc_upbuf *u, uint64_t off);
void rhc_upbuf_mark(struct rhc_upbuf *u, uint64_t off, uint32_t crc);
/* The server confirmed the bytes below x (x > acked): sent moves up to x unless
 * a body still streams (it must stay contiguous), and what both passed is
 * forgotten. */
void rhc_upbuf_confirm(struct rhc_upbuf *u, uint64_t x, int streaming);
/* The bytes from x go again: 0, or -1 when x is not kept (below base) or was
 * never read. */
int rhc_upbuf_rewind(struct rhc_upbuf *u, uint64_t x);

#endif
