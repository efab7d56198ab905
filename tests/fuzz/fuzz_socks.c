/* Fuzz target for the client's SOCKS5 wire (client/rhc_socks.c), which reads
 * what any local application sends to `relay-https proxy`. The input is read
 * as rhc_pxy.c reads it (greeting, RFC 1929 authentication, request, each as
 * long as rhc_socks_need says, byte by byte), and checked: a message's
 * length never shrinks as its bytes come, only right credentials pass, and a
 * request's destination is one header-safe HOST:PORT. Built as fuzz_frame.c is (libFuzzer, or a plain driver for
 * `make check`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "rhc_socks.h"

#define READER_BUF 1024          /* rhc_pxy.c reads into a larger buffer than any message */

static void die(const char *what)
{
    fprintf(stderr, "fuzz_socks: %s\n", what);
    abort();
}

/* One message of phase ph from in: its length, 0 when refused or cut short. */
static size_t take(enum rhc_socks_phase ph, const uint8_t **in, size_t *left,
                   unsigned char *buf)
{
    size_t have = 0, known = 0;
    for (;;) {
        size_t need = rhc_socks_need(ph, buf, have);
        if (need == 0 || need > READER_BUF)
            return 0;
        if (need <= have)
            die("asked for no more bytes than it has");
        if (have >= 2 && known && need != known && need < known)
            die("a message got shorter once its length was known");
        known = need;
        if (!*left)
            return 0;
        buf[have++] = **in;
        ++*in;
        --*left;
        if (rhc_socks_need(ph, buf, have) == have)
            return have;
    }
}

static void check_dest(const struct rhc_socks_req *rq)
{
    size_t n = strnlen(rq->dest, sizeof(rq->dest));
    if (n == sizeof(rq->dest))
        die("destination not terminated");
    const char *colon = strrchr(rq->dest, ':');
    if (!colon || colon == rq->dest || !colon[1])
        die("destination is not HOST:PORT");
    for (const char *p = colon + 1; *p; ++p)
        if (*p < '0' || *p > '9')
            die("port is not a number");
    for (const char *p = rq->dest; *p; ++p)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '/')
            die("destination has bytes a header must not carry");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char buf[READER_BUF];
    const char *userpass = size && data[0] & 1 ? "user:secret" : NULL;
    const uint8_t *in = data + (size ? 1 : 0);
    size_t left = size ? size - 1 : 0, n;

    memset(buf, 0, sizeof(buf));
    if (!(n = take(RHC_SOCKS_GREET, &in, &left, buf)))
        return 0;
    unsigned char m = rhc_socks_method(buf, n, userpass);
    if (m != RHC_SOCKS_NO_METHOD && m != (userpass ? RHC_SOCKS_USERPASS : RHC_SOCKS_NOAUTH))
        die("a method that was not asked for");
    if (m == RHC_SOCKS_NO_METHOD)
        return 0;
    if (userpass) {
        memset(buf, 0, sizeof(buf));
        if (!(n = take(RHC_SOCKS_AUTH, &in, &left, buf)))
            return 0;
        int ok = rhc_socks_auth_ok(buf, n, userpass);
        int want = n == 3 + 4 + 6 && buf[1] == 4 && !memcmp(buf + 2, "user", 4) &&
                   buf[6] == 6 && !memcmp(buf + 7, "secret", 6);
        if (ok != want)
            die(ok ? "wrong credentials accepted" : "right credentials refused");
        if (!ok)
            return 0;
    }
    memset(buf, 0, sizeof(buf));
    if (!(n = take(RHC_SOCKS_REQUEST, &in, &left, buf)))
        return 0;
    struct rhc_socks_req rq;
    memset(&rq, 0x55, sizeof(rq));
    if (rhc_socks_request(buf, n, &rq) == RHC_SOCKS_OK)
        check_dest(&rq);
    unsigned char reply[16];
    if (rhc_socks_reply(reply, RHC_SOCKS_REFUSED) != 10 || reply[0] != RHC_SOCKS_VERSION)
        die("a reply that is not 10 bytes of SOCKS5");
    return 0;
}

#ifndef RH_LIBFUZZER
const char *const fuzz_name = "fuzz_socks";
const char *const fuzz_checked = "lengths, credentials and destinations hold";

/* Mostly well-formed exchanges, with a byte changed or the end cut now and then. */
size_t fuzz_make_input(unsigned char *b, size_t cap)
{
    size_t n = 0;
    (void)cap;                  /* at most 300 bytes: a name is 255 at most */
    b[n++] = (unsigned char)fuzz_rand();
    b[n++] = 5;
    unsigned nm = 1 + fuzz_rand() % 4;
    b[n++] = (unsigned char)nm;
    for (unsigned i = 0; i < nm; ++i)
        b[n++] = (unsigned char)(fuzz_rand() % 3);
    if (b[0] & 1) {
        int right = fuzz_rand() % 2;
        b[n++] = 1;
        b[n++] = 4;
        memcpy(b + n, right ? "user" : "usex", 4);
        n += 4;
        b[n++] = 6;
        memcpy(b + n, "secret", 6);
        n += 6;
    }
    b[n++] = 5;
    b[n++] = (unsigned char)(1 + fuzz_rand() % 3);
    b[n++] = 0;
    unsigned atyp = (unsigned[]){ 1, 3, 4, 2 }[fuzz_rand() % 4];
    b[n++] = (unsigned char)atyp;
    if (atyp == 3) {
        unsigned ln = fuzz_rand() % 260;
        b[n++] = (unsigned char)ln;
        for (unsigned i = 0; i < (ln & 0xff); ++i)
            b[n++] = (unsigned char)(fuzz_rand() % 8 ? 'a' + fuzz_rand() % 26 : fuzz_rand());
    } else {
        unsigned ln = atyp == 1 ? 4 : 16;
        for (unsigned i = 0; i < ln; ++i)
            b[n++] = (unsigned char)fuzz_rand();
    }
    b[n++] = (unsigned char)fuzz_rand();
    b[n++] = (unsigned char)fuzz_rand();
    if (fuzz_rand() % 8 == 0)
        b[1 + fuzz_rand() % (n - 1)] = (unsigned char)fuzz_rand();
    if (fuzz_rand() % 8 == 0)
        n = 1 + fuzz_rand() % n;
    return n;
}

#endif
