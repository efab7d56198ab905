/* Fuzz target for the frame parser (proto/rh_frame.c), which reads what the
 * network sends: the client parses pull bodies with it, the relay core push
 * bodies. Property checked on every input: the events (data bytes, control
 * frames with their offsets, CRCs and reasons, the error and where it came)
 * are the same whether the bytes arrive whole or cut into arbitrary pieces,
 * and every event stays inside its input and its bounds.
 *
 * Built two ways (Makefile.am): with clang -fsanitize=fuzzer for
 * coverage-guided search (`make fuzz`), and as a plain program whose main()
 * feeds it inputs from a fixed-seed generator biased towards valid frames
 * (run by `make check`). The first input byte picks the allowed frame types
 * and the slicing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#include "rh_frame.h"

#define FUZZ_MAX_INPUT (1u << 20)

/* What a parse produced, independent of how the input was sliced. */
struct trace {
    unsigned char *data;          /* every data byte, in order */
    size_t data_len;
    unsigned char *log;           /* one record per control event */
    size_t log_len, log_cap;
    const char *error;
    size_t consumed;              /* bytes the parser took in all */
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_frame: %s\n", what);
    abort();
}

static void log_put(struct trace *t, const void *p, size_t n)
{
    if (t->log_len + n > t->log_cap) {
        t->log_cap = (t->log_len + n) * 2 + 64;
        t->log = realloc(t->log, t->log_cap);
        if (!t->log)
            die("out of memory");
    }
    memcpy(t->log + t->log_len, p, n);
    t->log_len += n;
}

static void record(struct trace *t, const rh_frame_event *ev, const unsigned char *buf,
                   size_t len)
{
    if (ev->type == RH_FEV_DATA) {
        if (!ev->len || ev->len > RH_FRAME_MAX || ev->data < buf || ev->data + ev->len > buf + len)
            die("data event outside its input or bounds");
        memcpy(t->data + t->data_len, ev->data, ev->len);
        t->data_len += ev->len;
        return;
    }
    /* a control event: where in the data it came, and what it says */
    unsigned char rec[1 + 8 + 8 + 4 + 2];
    rec[0] = (unsigned char)ev->type;
    rh_put_u64(rec + 1, t->data_len);
    rh_put_u64(rec + 9, ev->offset);
    memcpy(rec + 17, &ev->crc, 4);
    if (ev->len > sizeof(((rh_frame_parser *)0)->small))
        die("reset reason longer than the parser keeps");
    rec[21] = (unsigned char)(ev->len >> 8);
    rec[22] = (unsigned char)ev->len;
    log_put(t, rec, sizeof(rec));
    if (ev->len)
        log_put(t, ev->data, ev->len);
}

/* Parses buf in pieces of the sizes step() gives (0: whole). */
static void run(struct trace *t, const unsigned char *buf, size_t len, const char *allowed,
                uint32_t seed)
{
    rh_frame_parser p;
    size_t at = 0;

    rh_frame_parser_init(&p);
    memset(t, 0, sizeof(*t));
    t->data = malloc(len ? len : 1);
    if (!t->data)
        die("out of memory");
    while (at < len && !t->error) {
        size_t piece = len - at;
        if (seed) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            size_t cut = 1 + seed % (seed & 0x100 ? 7 : 300);
            piece = cut < piece ? cut : piece;
        }
        size_t off = 0;
        for (;;) {
            rh_frame_event ev;
            size_t n = rh_frame_parse(&p, buf + at + off, piece - off, allowed, &ev);
            if (n > piece - off)
                die("parser took more than it was given");
            off += n;
            if (ev.type == RH_FEV_ERROR) {
                if (!p.error)
                    die("error event without a reason");
                t->error = p.error;
                break;
            }
            if (ev.type == RH_FEV_NONE) {
                if (off != piece)
                    die("parser asked for more input with input left");
                break;
            }
            record(t, &ev, buf + at, piece);
        }
        at += off;
    }
    t->consumed = at;
}

static void trace_free(struct trace *t)
{
    free(t->data);
    free(t->log);
}

static const char *const allowed_sets[] = { "DHFREAC", "DHFRA", "DHFREC", "DC", "AHR" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace whole, cut;

    if (size < 1 || size > FUZZ_MAX_INPUT)
        return 0;
    const char *allowed = allowed_sets[data[0] % 5];
    uint32_t seed = 0x9e3779b9u ^ data[0];
    run(&whole, data + 1, size - 1, allowed, 0);
    run(&cut, data + 1, size - 1, allowed, seed);
    if (whole.data_len != cut.data_len ||
        (whole.data_len && memcmp(whole.data, cut.data, whole.data_len)))
        die("data differ between whole and sliced input");
    if (whole.log_len != cut.log_len ||
        (whole.log_len && memcmp(whole.log, cut.log, whole.log_len)))
        die("control events differ between whole and sliced input");
    if ((whole.error == NULL) != (cut.error == NULL) ||
        (whole.error && strcmp(whole.error, cut.error)))
        die("errors differ between whole and sliced input");
    if (whole.error && whole.consumed != cut.consumed)
        die("the error came at different offsets");
    trace_free(&whole);
    trace_free(&cut);
    return 0;
}

#ifndef RH_LIBFUZZER
const char *const fuzz_name = "fuzz_frame";
const char *const fuzz_checked = "whole and sliced parses agree";

/* ---- the plain driver: inputs made of mostly valid frames ---- */

size_t fuzz_make_input(unsigned char *buf, size_t cap)
{
    static const char types[] = "DHFREACDDDX";
    size_t n = 0;
    buf[n++] = (unsigned char)fuzz_rand();
    unsigned frames = fuzz_rand() % 40;
    for (unsigned i = 0; i < frames && n + RH_FRAME_HDR + 600 < cap; ++i) {
        int type = types[fuzz_rand() % (sizeof(types) - 1)];
        size_t plen = type == 'A' ? 8 : type == 'C' ? RH_FRAME_CHECK_LEN :
                      type == 'F' || type == 'E' ? 0 : fuzz_rand() % 600;
        if (fuzz_rand() % 50 == 0)
            plen = fuzz_rand() % 600;            /* a wrong length now and then */
        rh_frame_hdr(buf + n, type, plen);
        if (fuzz_rand() % 200 == 0)
            buf[n + 1] = (unsigned char)fuzz_rand();   /* a length out of bounds */
        n += RH_FRAME_HDR;
        for (size_t k = 0; k < plen; ++k)
            buf[n++] = (unsigned char)fuzz_rand();
    }
    if (fuzz_rand() % 10 == 0)
        n -= n > 1 ? fuzz_rand() % (n - 1) : 0;  /* cut anywhere */
    return n;
}

#endif
