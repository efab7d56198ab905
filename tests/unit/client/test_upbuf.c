/* client/rhc_upbuf.c: the up bytes kept until the server confirms them: the
 * offsets sent / acked / base, rewinds, forgetting what both passed, and the
 * CRCs of the C frames. */
#include <stdint.h>
#include <string.h>

#include "rh_crc32c.h"
#include "rhc_upbuf.h"
#include "client_tests.h"

static unsigned char data[4096];

/* A buffer holding the first n bytes of data (as the local side gave them). */
static void filled(struct rhc_upbuf *u, size_t n)
{
    memset(u, 0, sizeof(*u));
    rhc_upbuf_init(u, 1 << 20);
    for (size_t i = 0; i < sizeof(data); ++i)
        data[i] = (unsigned char)(i * 7 + 3);
    ck_assert_uint_eq(rh_ring_put(&u->ring, data, n), n);
}

START_TEST(test_offsets)
{
    struct rhc_upbuf u;

    filled(&u, 1000);
    ck_assert_uint_eq(rhc_upbuf_read_off(&u), 1000);
    u.sent = 600;
    /* confirmed below what was sent: forgotten up to there, sent stays */
    rhc_upbuf_confirm(&u, 400, 0);
    ck_assert_uint_eq(u.acked, 400);
    ck_assert_uint_eq(u.sent, 600);
    ck_assert_uint_eq(u.base, 400);
    ck_assert_uint_eq(rhc_upbuf_read_off(&u), 1000);
    /* an older confirmation changes nothing */
    rhc_upbuf_confirm(&u, 300, 0);
    ck_assert_uint_eq(u.acked, 400);
    /* the server had more than we sent (after a rewind): sent moves up ... */
    rhc_upbuf_confirm(&u, 700, 0);
    ck_assert_uint_eq(u.sent, 700);
    ck_assert_uint_eq(u.base, 700);
    /* ... but not inside a body that still streams: forgotten only up to sent */
    u.sent = 750;
    rhc_upbuf_confirm(&u, 800, 1);
    ck_assert_uint_eq(u.acked, 800);
    ck_assert_uint_eq(u.sent, 750);
    ck_assert_uint_eq(u.base, 750);
    /* the kept bytes are still the right ones */
    unsigned char out[50];
    rhc_upbuf_copy(&u, 750, out, sizeof(out));
    ck_assert(!memcmp(out, data + 750, sizeof(out)));
    rhc_upbuf_free(&u);
}
END_TEST

START_TEST(test_rewind)
{
    struct rhc_upbuf u;

    filled(&u, 1000);
    u.sent = 900;
    u.fin_sent = 1;
    rhc_upbuf_confirm(&u, 300, 0);
    ck_assert_int_eq(rhc_upbuf_rewind(&u, 300), 0);
    ck_assert_uint_eq(u.sent, 300);
    ck_assert_int_eq(u.fin_sent, 0);          /* the F goes again after the bytes */
    ck_assert_int_eq(rhc_upbuf_rewind(&u, 299), -1);   /* no longer kept */
    ck_assert_int_eq(rhc_upbuf_rewind(&u, 1001), -1);  /* never read */
    ck_assert_uint_eq(u.sent, 300);
    ck_assert_int_eq(rhc_upbuf_rewind(&u, 1000), 0);
    u.fin_sent = 1;
    u.done = 1;                               /* a push with F was accepted */
    ck_assert_int_eq(rhc_upbuf_rewind(&u, 1000), 0);
    ck_assert_int_eq(u.fin_sent, 1);
    rhc_upbuf_free(&u);
}
END_TEST

START_TEST(test_forget)
{
    struct rhc_upbuf u;

    filled(&u, 1000);
    rhc_upbuf_release(&u, 0);                 /* nothing below base */
    ck_assert_uint_eq(u.base, 0);
    rhc_upbuf_release(&u, 250);
    ck_assert_uint_eq(u.base, 250);
    ck_assert_uint_eq(rh_ring_len(&u.ring), 750);
    rhc_upbuf_release(&u, 5000);              /* at most what is kept */
    ck_assert_uint_eq(u.base, 1000);
    ck_assert_uint_eq(rh_ring_len(&u.ring), 0);
    ck_assert_uint_eq(rhc_upbuf_read_off(&u), 1000);
    rhc_upbuf_free(&u);
}
END_TEST

/* The CRC at any offset is that of all bytes before it, also once the bytes
 * below the offset were forgotten (the marks and crc_base carry it). */
START_TEST(test_crc)
{
    struct rhc_upbuf u;

    filled(&u, 3000);
    uint32_t c1000 = rhc_upbuf_crc_at(&u, 1000);
    ck_assert_uint_eq(c1000, rh_crc32c(0, data, 1000));
    rhc_upbuf_mark(&u, 1000, c1000);
    ck_assert_uint_eq(rhc_upbuf_crc_at(&u, 2500), rh_crc32c(0, data, 2500));
    u.sent = 3000;
    rhc_upbuf_confirm(&u, 2000, 0);
    ck_assert_uint_eq(u.crc_base, rh_crc32c(0, data, 2000));
    ck_assert_uint_eq(rhc_upbuf_crc_at(&u, 2000), rh_crc32c(0, data, 2000));
    ck_assert_uint_eq(rhc_upbuf_crc_at(&u, 3000), rh_crc32c(0, data, 3000));
    /* more marks than slots: the oldest are overwritten, results stay right */
    for (uint64_t off = 2001; off < 2001 + 2 * UP_MARKS; ++off)
        ck_assert_uint_eq(rhc_upbuf_crc_at(&u, off), rh_crc32c(0, data, (size_t)off));
    rhc_upbuf_free(&u);
}
END_TEST

Suite *upbuf_suite(void)
{
    Suite *s = suite_create("client up buffer");
    TCase *tc = tcase_create("offsets");

    tcase_add_test(tc, test_offsets);
    tcase_add_test(tc, test_rewind);
    tcase_add_test(tc, test_forget);
    tcase_add_test(tc, test_crc);
    suite_add_tcase(s, tc);
    return s;
}
