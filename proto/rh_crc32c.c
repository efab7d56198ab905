/* CRC32C: slicing-by-8 in software, the SSE4.2 crc32 instruction on x86_64.
 *
 * Everything below works on the raw register (no inversion); the public
 * functions invert on the way in and out, which is what makes them chain.
 * The raw update is linear over GF(2) in (register, data), which gives the
 * combine step the hardware path relies on:
 *     raw(r, A||B) = shift(raw(r, A), |B|) ^ raw(0, B)
 * where shift(x, n) = raw(x, n zero bytes), itself linear in x and so a
 * 4 x 256 table lookup for a fixed n. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "rh_crc32c.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RH_CRC_X86 1
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u

/* sw_tab[k][b]: raw CRC of byte b followed by k zero bytes (register 0). */
static uint32_t sw_tab[8][256];

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;   /* set once by crc_init, read-only after pthread_once */

static inline uint64_t ld64le(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));   /* unaligned-safe; one mov on x86 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);   /* the first byte must land in the low bits */
#endif
    return v;
}

static uint32_t sw_raw(uint32_t c, const unsigned char *p, size_t n)
{
    /* bytewise up to an 8-byte boundary, so the word loads stay aligned */
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ sw_tab[0][(c ^ *p++) & 0xff];
        --n;
    }
    while (n >= 8) {
        uint64_t w = ld64le(p) ^ c;
        /* the lowest byte is the first: 7 more bytes follow it */
        c = sw_tab[7][w & 0xff] ^ sw_tab[6][(w >> 8) & 0xff] ^
            sw_tab[5][(w >> 16) & 0xff] ^ sw_tab[4][(w >> 24) & 0xff] ^
            sw_tab[3][(w >> 32) & 0xff] ^ sw_tab[2][(w >> 40) & 0xff] ^
            sw_tab[1][(w >> 48) & 0xff] ^ sw_tab[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ sw_tab[0][(c ^ *p++) & 0xff];
    return c;
}

#ifdef RH_CRC_X86
/* Three streams of HW_LONG (or HW_SHORT) bytes are computed side by side: the
 * instruction has a latency of 3 cycles but can start one per cycle, so one
 * stream alone would use a third of it. Long blocks make the combine rare;
 * short ones keep mid-sized buffers (a frame) on the fast path. */
#define HW_LONG  4096u
#define HW_SHORT 256u

/* shift tables: shift(x, HW_LONG) and shift(x, HW_SHORT), bytewise in x */
static uint32_t hw_long_tab[4][256];
static uint32_t hw_short_tab[4][256];

static void shift_table(uint32_t tab[4][256], size_t n)
{
    static const unsigned char zeros[256];
    uint32_t basis[32];

    /* the shift of each single bit, then every byte value as XORs of those */
    for (int i = 0; i < 32; ++i) {
        uint32_t c = 1u << i;
        for (size_t done = 0; done < n; done += sizeof(zeros))
            c = sw_raw(c, zeros, n - done < sizeof(zeros) ? n - done : sizeof(zeros));
        basis[i] = c;
    }
    for (int k = 0; k < 4; ++k) {
        tab[k][0] = 0;
        for (unsigned b = 1; b < 256; ++b)
            tab[k][b] = tab[k][b & (b - 1)] ^ basis[8 * k + __builtin_ctz(b)];
    }
}

static inline uint32_t shift(uint32_t tab[4][256], uint32_t c)
{
    return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^
           tab[2][(c >> 16) & 0xff] ^ tab[3][c >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t hw_raw(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;

    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        --n;
    }
    while (n >= 3 * HW_LONG) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + HW_LONG;
        do {
            c = _mm_crc32_u64(c, ld64le(p));
            c1 = _mm_crc32_u64(c1, ld64le(p + HW_LONG));
            c2 = _mm_crc32_u64(c2, ld64le(p + 2 * HW_LONG));
            p += 8;
        } while (p < end);
        c = shift(hw_long_tab, (uint32_t)c) ^ (uint32_t)c1;
        c = shift(hw_long_tab, (uint32_t)c) ^ (uint32_t)c2;
        p += 2 * HW_LONG;
        n -= 3 * HW_LONG;
    }
    while (n >= 3 * HW_SHORT) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + HW_SHORT;
        do {
            c = _mm_crc32_u64(c, ld64le(p));
            c1 = _mm_crc32_u64(c1, ld64le(p + HW_SHORT));
            c2 = _mm_crc32_u64(c2, ld64le(p + 2 * HW_SHORT));
            p += 8;
        } while (p < end);
        c = shift(hw_short_tab, (uint32_t)c) ^ (uint32_t)c1;
        c = shift(hw_short_tab, (uint32_t)c) ^ (uint32_t)c2;
        p += 2 * HW_SHORT;
        n -= 3 * HW_SHORT;
    }
    while (n >= 8) {
        c = _mm_crc32_u64(c, ld64le(p));
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

static void crc_init(void)
{
    for (unsigned b = 0; b < 256; ++b) {
        uint32_t c = b;
        for (int i = 0; i < 8; ++i)
            c = (c >> 1) ^ (POLY & (0u - (c & 1)));
        sw_tab[0][b] = c;
    }
    for (unsigned b = 0; b < 256; ++b)
        for (int k = 1; k < 8; ++k)
            sw_tab[k][b] = (sw_tab[k - 1][b] >> 8) ^ sw_tab[0][sw_tab[k - 1][b] & 0xff];
#ifdef RH_CRC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        shift_table(hw_long_tab, HW_LONG);
        shift_table(hw_short_tab, HW_SHORT);
        crc_hw = 1;
    }
#endif
}

uint32_t rh_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~sw_raw(~crc, buf, len);
}

uint32_t rh_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
#ifdef RH_CRC_X86
    if (crc_hw)
        return ~hw_raw(~crc, buf, len);
#endif
    return ~sw_raw(~crc, buf, len);
}

int rh_crc32c_uses_hw(void)
{
    pthread_once(&crc_once, crc_init);
    return crc_hw;
}
