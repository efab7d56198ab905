/* Session registry: allocation, tokens, generations, views and re-init. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include "tests.h"
#include "rh_registry.h"

static void make_secret(unsigned char s[RH_SECRET_LEN], unsigned seed)
{
    for (int i = 0; i < RH_SECRET_LEN; ++i)
        s[i] = (unsigned char)(seed * 131u + (unsigned)i * 17u + 1u);
}

static rh_registry *new_reg(uint32_t nslots)
{
    void *mem = calloc(1, rh_registry_size(nslots));
    ck_assert_ptr_nonnull(mem);
    rh_registry *reg = rh_registry_init(mem, nslots);
    ck_assert_ptr_eq(reg, mem);
    return reg;
}

START_TEST(test_size)
{
    ck_assert_uint_eq(rh_registry_size(0), sizeof(rh_registry));
    ck_assert_uint_eq(rh_registry_size(1), sizeof(rh_registry) + sizeof(rh_slot));
    ck_assert_uint_eq(rh_registry_size(1000), sizeof(rh_registry) + 1000 * sizeof(rh_slot));
    /* no overflow in 32 bits for a big table */
    ck_assert_uint_eq(rh_registry_size(100000), sizeof(rh_registry) + (size_t)100000 * sizeof(rh_slot));
}
END_TEST

START_TEST(test_init_empty)
{
    rh_registry *reg = new_reg(4);
    ck_assert_uint_eq(reg->nslots, 4);
    ck_assert_uint_eq(reg->active, 0);
    ck_assert(reg->total_opened == 0 && reg->total_closed == 0);
    rh_slot_view v;
    for (uint32_t i = 0; i < 5; ++i)
        ck_assert_int_eq(rh_registry_view(reg, i, &v), RH_REG_UNKNOWN);
    free(reg);
}
END_TEST

START_TEST(test_view_needs_initialized_memory)
{
    void *mem = calloc(1, rh_registry_size(2));
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_view(mem, 0, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_check(mem, "000000000000000100000000000000000000000000000000", &v),
                     RH_REG_UNKNOWN);
    free(mem);
}
END_TEST

START_TEST(test_alloc_until_full)
{
    const uint32_t N = 8;
    rh_registry *reg = new_reg(N);
    unsigned char sec[RH_SECRET_LEN];
    uint32_t slot, gen, seen = 0;
    for (uint32_t i = 0; i < N; ++i) {
        make_secret(sec, i);
        ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_OK);
        ck_assert_uint_lt(slot, N);
        ck_assert_msg(!(seen & (1u << slot)), "slot %u handed out twice", slot);
        seen |= 1u << slot;
        ck_assert_uint_eq(gen, 1);
        ck_assert_uint_eq(reg->active, i + 1);
    }
    make_secret(sec, 99);
    uint32_t s2 = 777, g2 = 777;
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &s2, &g2), RH_REG_FULL);
    ck_assert_uint_eq(s2, 777);       /* outputs untouched on failure */
    ck_assert_uint_eq(reg->active, N);
    ck_assert(reg->total_opened == N);
    free(reg);
}
END_TEST

START_TEST(test_zero_slots)
{
    rh_registry *reg = new_reg(0);
    unsigned char sec[RH_SECRET_LEN] = { 0 };
    uint32_t slot, gen;
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_FULL);
    free(reg);
}
END_TEST

START_TEST(test_release_reuse_and_gen)
{
    rh_registry *reg = new_reg(2);
    unsigned char sec[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1];
    uint32_t a, ga, b, gb;
    rh_slot_view v;

    make_secret(sec, 1);
    ck_assert_int_eq(rh_registry_alloc(reg, "one", sec, &a, &ga), RH_REG_OK);
    rh_token_format(tok, a, ga, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    ck_assert_int_eq(v.state, RH_SLOT_CONNECTING);
    ck_assert_str_eq(v.target, "one");

    rh_registry_release(reg, a);
    ck_assert_uint_eq(reg->active, 0);
    ck_assert(reg->total_closed == 1);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_view(reg, a, &v), RH_REG_UNKNOWN);
    /* releasing a free slot changes nothing */
    rh_registry_release(reg, a);
    ck_assert_uint_eq(reg->active, 0);
    ck_assert(reg->total_closed == 1);

    /* the released slot is reused (LIFO free list) with a new generation; even
     * with the same secret the old token does not match */
    ck_assert_int_eq(rh_registry_alloc(reg, "two", sec, &b, &gb), RH_REG_OK);
    ck_assert_uint_eq(b, a);
    ck_assert_uint_eq(gb, ga + 1);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    char tok2[RH_TOKEN_LEN + 1];
    rh_token_format(tok2, b, gb, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok2, &v), RH_REG_OK);
    ck_assert_str_eq(v.target, "two");
    ck_assert_uint_eq(v.gen, gb);
    ck_assert_uint_eq(v.slot, b);
    free(reg);
}
END_TEST

START_TEST(test_full_then_release_allows_alloc)
{
    rh_registry *reg = new_reg(3);
    unsigned char sec[RH_SECRET_LEN] = { 1 };
    uint32_t s[3], g[3], x, gx;
    for (int i = 0; i < 3; ++i)
        ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &s[i], &g[i]), RH_REG_OK);
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &x, &gx), RH_REG_FULL);
    rh_registry_release(reg, s[1]);
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &x, &gx), RH_REG_OK);
    ck_assert_uint_eq(x, s[1]);
    ck_assert_uint_eq(gx, 2);
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &x, &gx), RH_REG_FULL);
    free(reg);
}
END_TEST

START_TEST(test_token_format_parse)
{
    unsigned char sec[RH_SECRET_LEN], back[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1], sid[RH_SID_LEN + 1];
    uint32_t slot, gen;
    for (int i = 0; i < RH_SECRET_LEN; ++i)
        sec[i] = (unsigned char)(0xf0 + i);
    memset(tok, 'Z', sizeof(tok));
    rh_token_format(tok, 3, 1, sec);
    ck_assert_uint_eq(strlen(tok), RH_TOKEN_LEN);
    ck_assert_str_eq(tok, "0000000300000001f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    for (int i = 0; i < RH_TOKEN_LEN; ++i)
        ck_assert_msg(isxdigit((unsigned char)tok[i]) && !isupper((unsigned char)tok[i]),
                      "char %d of the token is '%c'", i, tok[i]);
    ck_assert_int_eq(rh_token_parse(tok, &slot, &gen, back), 0);
    ck_assert_uint_eq(slot, 3);
    ck_assert_uint_eq(gen, 1);
    ck_assert_mem_eq(back, sec, RH_SECRET_LEN);

    rh_token_format(tok, 0xdeadbeef, 0xffffffff, sec);
    ck_assert_int_eq(rh_token_parse(tok, &slot, &gen, back), 0);
    ck_assert_uint_eq(slot, 0xdeadbeef);
    ck_assert_uint_eq(gen, 0xffffffff);

    rh_sid_format(sid, 0x12, 0xabc);
    ck_assert_str_eq(sid, "0000001200000abc");
    /* the sid is the token's first 16 characters */
    rh_token_format(tok, 0x12, 0xabc, sec);
    ck_assert(strncmp(tok, sid, RH_SID_LEN) == 0);
}
END_TEST

START_TEST(test_token_malformed)
{
    rh_registry *reg = new_reg(4);
    unsigned char sec[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1], bad[RH_TOKEN_LEN + 8];
    uint32_t slot, gen;
    rh_slot_view v;
    make_secret(sec, 5);
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_OK);
    rh_token_format(tok, slot, gen, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);

    ck_assert_int_eq(rh_registry_check(reg, NULL, &v), RH_REG_MALFORMED);
    ck_assert_int_eq(rh_registry_check(reg, "", &v), RH_REG_MALFORMED);
    /* one character short / long */
    memcpy(bad, tok, RH_TOKEN_LEN - 1);
    bad[RH_TOKEN_LEN - 1] = '\0';
    ck_assert_int_eq(rh_registry_check(reg, bad, &v), RH_REG_MALFORMED);
    snprintf(bad, sizeof(bad), "%s0", tok);
    ck_assert_int_eq(rh_registry_check(reg, bad, &v), RH_REG_MALFORMED);
    /* a non-hex character anywhere */
    const char nonhex[] = { 'g', 'x', ' ', '-', '\n', (char)0xc3 };
    for (int pos = 0; pos < RH_TOKEN_LEN; ++pos) {
        for (size_t k = 0; k < sizeof(nonhex); ++k) {
            strcpy(bad, tok);
            bad[pos] = nonhex[k];
            ck_assert_msg(rh_registry_check(reg, bad, &v) == RH_REG_MALFORMED,
                          "'%c' at %d accepted", nonhex[k], pos);
            unsigned char s2[RH_SECRET_LEN];
            uint32_t a, b;
            ck_assert_int_ne(rh_token_parse(bad, &a, &b, s2), 0);
        }
    }
    free(reg);
}
END_TEST

START_TEST(test_token_wrong_secret_gen_slot)
{
    rh_registry *reg = new_reg(4);
    unsigned char sec[RH_SECRET_LEN], other[RH_SECRET_LEN];
    char tok[RH_TOKEN_LEN + 1];
    uint32_t slot, gen;
    rh_slot_view v;
    make_secret(sec, 7);
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_OK);

    /* every single-bit change of the secret is refused */
    for (int i = 0; i < RH_SECRET_LEN * 8; ++i) {
        memcpy(other, sec, sizeof(other));
        other[i / 8] ^= (unsigned char)(1u << (i % 8));
        rh_token_format(tok, slot, gen, other);
        ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    }
    rh_token_format(tok, slot, gen + 1, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    rh_token_format(tok, slot, gen - 1, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    rh_token_format(tok, (slot + 1) % 4, gen, sec);       /* a free slot */
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    rh_token_format(tok, 4, gen, sec);                    /* out of range */
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    rh_token_format(tok, 0xffffffff, gen, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    /* the right one; uppercase hex is the same token */
    rh_token_format(tok, slot, gen, sec);
    ck_assert_int_eq(rh_registry_check(reg, tok, NULL), RH_REG_OK);
    for (char *p = tok; *p; ++p)
        *p = (char)toupper((unsigned char)*p);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    free(reg);
}
END_TEST

START_TEST(test_view_target_and_counters)
{
    rh_registry *reg = new_reg(2);
    unsigned char sec[RH_SECRET_LEN] = { 9 };
    uint32_t slot, gen;
    rh_slot_view v;
    /* a target name longer than the field is cut, still NUL-terminated */
    char longname[200];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert_int_eq(rh_registry_alloc(reg, longname, sec, &slot, &gen), RH_REG_OK);
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_OK);
    ck_assert_uint_eq(strlen(v.target), RH_TARGET_MAX - 1);
    rh_registry_release(reg, slot);

    ck_assert_int_eq(rh_registry_alloc(reg, "db.example", sec, &slot, &gen), RH_REG_OK);
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_OK);
    ck_assert_str_eq(v.target, "db.example");
    ck_assert_uint_eq(v.slot, slot);
    ck_assert_uint_eq(v.gen, gen);
    ck_assert_int_eq(v.state, RH_SLOT_CONNECTING);
    ck_assert(v.up_bytes == 0 && v.down_bytes == 0);
    ck_assert(v.opened_at > 0);

    rh_registry_set_state(reg, slot, RH_SLOT_OPEN);
    rh_registry_count(reg, slot, 1234, 0x100000000ULL);
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_OK);
    ck_assert_int_eq(v.state, RH_SLOT_OPEN);
    ck_assert(v.up_bytes == 1234);
    ck_assert(v.down_bytes == 0x100000000ULL);
    /* writes leave the seqlock even (not busy) */
    ck_assert_uint_eq(reg->slots[slot].seq % 2, 0);

    /* release adds the slot's bytes to the totals */
    rh_registry_release(reg, slot);
    ck_assert(reg->total_up == 1234);
    ck_assert(reg->total_down == 0x100000000ULL);
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_UNKNOWN);
    free(reg);
}
END_TEST

/* A slot whose seqlock is odd (writer busy) is never reported. */
START_TEST(test_seqlock_busy_slot_not_read)
{
    rh_registry *reg = new_reg(1);
    unsigned char sec[RH_SECRET_LEN] = { 3 };
    char tok[RH_TOKEN_LEN + 1];
    uint32_t slot, gen;
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_OK);
    rh_token_format(tok, slot, gen, sec);
    reg->slots[slot].seq++;      /* pretend the core is in the middle of a write */
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_UNKNOWN);
    reg->slots[slot].seq++;
    ck_assert_int_eq(rh_registry_view(reg, slot, &v), RH_REG_OK);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    free(reg);
}
END_TEST

/* A writer descheduled inside its write (a loaded machine) for 20 ms: a reader
 * waits for it instead of calling a live session unknown (that was a 410 in the
 * middle of a transfer). */
static void *finish_write_later(void *arg)
{
    rh_slot *s = arg;
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
    return NULL;
}

START_TEST(test_seqlock_reader_waits_for_slow_writer)
{
    rh_registry *reg = new_reg(1);
    unsigned char sec[RH_SECRET_LEN] = { 4 };
    char tok[RH_TOKEN_LEN + 1];
    uint32_t slot, gen;
    rh_slot_view v;
    pthread_t th;
    ck_assert_int_eq(rh_registry_alloc(reg, "t", sec, &slot, &gen), RH_REG_OK);
    rh_token_format(tok, slot, gen, sec);
    __atomic_add_fetch(&reg->slots[slot].seq, 1, __ATOMIC_ACQ_REL);
    ck_assert_int_eq(pthread_create(&th, NULL, finish_write_later, &reg->slots[slot]), 0);
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    pthread_join(th, NULL);
    free(reg);
}
END_TEST

START_TEST(test_reinit_keeps_generations)
{
    rh_registry *reg = new_reg(3);
    unsigned char sec[RH_SECRET_LEN] = { 4, 4, 4 };
    char tok_open[RH_TOKEN_LEN + 1], tok_closed[RH_TOKEN_LEN + 1];
    uint32_t a, ga, b, gb;
    ck_assert_int_eq(rh_registry_alloc(reg, "x", sec, &a, &ga), RH_REG_OK);
    ck_assert_int_eq(rh_registry_alloc(reg, "y", sec, &b, &gb), RH_REG_OK);
    rh_registry_set_state(reg, a, RH_SLOT_OPEN);
    rh_token_format(tok_open, a, ga, sec);
    rh_token_format(tok_closed, b, gb, sec);
    rh_registry_release(reg, b);

    /* a new core formats the same memory */
    ck_assert_ptr_eq(rh_registry_init(reg, 3), reg);
    ck_assert_uint_eq(reg->active, 0);
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(reg, tok_open, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_check(reg, tok_closed, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_view(reg, a, &v), RH_REG_UNKNOWN);

    /* every slot can be allocated again and none repeats an old generation */
    uint32_t s, g;
    for (int i = 0; i < 3; ++i) {
        ck_assert_int_eq(rh_registry_alloc(reg, "z", sec, &s, &g), RH_REG_OK);
        if (s == a)
            ck_assert_uint_gt(g, ga);
        if (s == b)
            ck_assert_uint_gt(g, gb);
    }
    ck_assert_int_eq(rh_registry_alloc(reg, "z", sec, &s, &g), RH_REG_FULL);
    /* even with the same secret, the old tokens stay dead */
    ck_assert_int_eq(rh_registry_check(reg, tok_open, &v), RH_REG_UNKNOWN);
    ck_assert_int_eq(rh_registry_check(reg, tok_closed, &v), RH_REG_UNKNOWN);

    /* a different size is a different table: formatted from scratch */
    void *mem = calloc(1, rh_registry_size(3));
    memcpy(mem, reg, rh_registry_size(3));
    rh_registry *r2 = rh_registry_init(mem, 2);
    ck_assert_uint_eq(r2->nslots, 2);
    ck_assert_int_eq(rh_registry_alloc(r2, "z", sec, &s, &g), RH_REG_OK);
    ck_assert_uint_eq(g, 1);
    free(mem);
    free(reg);
}
END_TEST

/* The part an upgrade's old core and the new module both read never moves:
 * the header, rh_stats and the slots stay where this build's predecessors
 * put them (new figures go to rh_registry_ext, behind the slots). The
 * numbers are those of x86-64 and other LP64 targets. */
START_TEST(test_layout_frozen)
{
#if defined(__LP64__)
    ck_assert_uint_eq(offsetof(rh_registry, stats), 128);
    ck_assert_uint_eq(offsetof(rh_registry, slots), 32216);
    ck_assert_uint_eq(sizeof(rh_slot), 128);
#endif
    /* the extension starts behind the last slot, 8-aligned */
    ck_assert_uint_ge(rh_registry_ext_size(5), rh_registry_size(5) + sizeof(rh_registry_ext));
    ck_assert_uint_lt(rh_registry_ext_size(5),
                      rh_registry_size(5) + sizeof(rh_registry_ext) + 8);
}
END_TEST

/* The extension exists only where the memory holds it and it says so: a
 * table an older module made (no room behind its slots), one not formatted,
 * one whose extension is of another kind or claims more than the memory,
 * has none. An upgrade's copy keeps the sessions' tokens and the answered
 * totals; the figures of now start at 0. */
START_TEST(test_extension_found_only_when_there)
{
    const uint32_t n = 4;
    size_t old_size = rh_registry_size(n), new_size = rh_registry_ext_size(n);
    rh_registry *old = new_reg(n);
    ck_assert_ptr_null(rh_registry_ext_of(old, old_size));
    ck_assert_ptr_null(rh_registry_ext_init(old, old_size, NULL));
    unsigned char sec[RH_SECRET_LEN] = { 9, 8, 7 };
    uint32_t slot, gen;
    char tok[RH_TOKEN_LEN + 1];
    ck_assert_int_eq(rh_registry_alloc(old, "x", sec, &slot, &gen), RH_REG_OK);
    rh_registry_set_state(old, slot, RH_SLOT_OPEN);
    rh_token_format(tok, slot, gen, sec);

    /* a new module's table, beside the old one: the old one's sessions read the same */
    void *mem = calloc(1, new_size);
    ck_assert_ptr_nonnull(mem);
    ck_assert_ptr_null(rh_registry_ext_of(mem, new_size));       /* not formatted */
    memcpy(mem, old, old_size);
    rh_registry *reg = mem;
    ck_assert_ptr_null(rh_registry_ext_of(reg, new_size));       /* no extension yet */
    rh_registry_ext *x = rh_registry_ext_init(reg, new_size, NULL);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_eq(rh_registry_ext_of(reg, new_size), x);
    ck_assert_ptr_null(rh_registry_ext_of(reg, new_size - 1));
    ck_assert_ptr_null(rh_registry_ext_of(reg, old_size));
    rh_slot_view v;
    ck_assert_int_eq(rh_registry_check(reg, tok, &v), RH_REG_OK);
    ck_assert_int_eq(rh_registry_check(old, tok, &v), RH_REG_OK);
    ck_assert_uint_eq(x->watch.sessions, 0);

    /* counting in the extension touches nothing an older module reads */
    unsigned char before[sizeof(rh_registry) + 4 * sizeof(rh_slot)];
    memcpy(before, reg, old_size);
    rh_stats_watch_now(&x->watch, 3, 1);
    rh_stats_watch_answered(&x->watch, RH_WATCH_ANS_DATA);
    ck_assert_mem_eq(before, reg, old_size);

    /* an upgrade's copy: totals go on, the figures of now do not */
    void *mem2 = calloc(1, new_size);
    memcpy(mem2, reg, old_size);
    rh_registry *r2 = rh_registry_init(mem2, n);
    rh_registry_ext *x2 = rh_registry_ext_init(r2, new_size, x);
    ck_assert_ptr_nonnull(x2);
    ck_assert_uint_eq(x2->watch.answered[RH_WATCH_ANS_DATA], 1);
    ck_assert_uint_eq(x2->watch.sessions, 0);
    ck_assert_uint_eq(x2->watch.waiting, 0);

    /* another kind, or a size beyond the memory: none */
    x->magic ^= 1;
    ck_assert_ptr_null(rh_registry_ext_of(reg, new_size));
    x->magic ^= 1;
    x->size = (uint32_t)sizeof(*x) + 8;
    ck_assert_ptr_null(rh_registry_ext_of(reg, new_size));
    ck_assert_ptr_eq(rh_registry_ext_of(reg, new_size + 8), x);   /* a newer, longer one */
    x->size = 4;
    ck_assert_ptr_null(rh_registry_ext_of(reg, new_size));
    /* an older module's, before RelayResumeMemory: found, without those fields,
     * and setting them writes nothing beyond it */
    x->size = (uint32_t)offsetof(rh_registry_ext, resume_bound);
    ck_assert_ptr_eq(rh_registry_ext_of(reg, new_size), x);
    ck_assert(!rh_registry_ext_has_resume(x));
    rh_registry_set_resume(x, 5, 6);
    rh_registry_resume_now(x, 7, 8);
    ck_assert_uint_eq(x->resume_bound + x->resume_client_bound + x->resume_held
                      + x->resume_waits, 0);
    x->size = (uint32_t)sizeof(*x);
    ck_assert(rh_registry_ext_has_resume(x));
    rh_registry_set_resume(x, 5, 6);
    ck_assert_uint_eq(x->resume_bound, 5);
    ck_assert_uint_eq(x->resume_client_bound, 6);
    free(mem2);
    free(mem);
    free(old);
}
END_TEST

START_TEST(test_ct_equal)
{
    unsigned char a[32], b[32];
    for (int i = 0; i < 32; ++i)
        a[i] = b[i] = (unsigned char)i;
    ck_assert_int_eq(rh_ct_equal(a, b, 32), 1);
    ck_assert_int_eq(rh_ct_equal(a, b, 0), 1);
    for (int i = 0; i < 32; ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            b[i] ^= (unsigned char)(1u << bit);
            ck_assert_int_eq(rh_ct_equal(a, b, 32), 0);
            ck_assert_int_eq(rh_ct_equal(a, b, (size_t)i), 1);   /* prefix before it */
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    ck_assert_int_eq(rh_ct_equal(a, b, 32), 1);
}
END_TEST

Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_test(tc, test_size);
    tcase_add_test(tc, test_init_empty);
    tcase_add_test(tc, test_view_needs_initialized_memory);
    tcase_add_test(tc, test_alloc_until_full);
    tcase_add_test(tc, test_zero_slots);
    tcase_add_test(tc, test_release_reuse_and_gen);
    tcase_add_test(tc, test_full_then_release_allows_alloc);
    tcase_add_test(tc, test_token_format_parse);
    tcase_add_test(tc, test_seqlock_reader_waits_for_slow_writer);
    tcase_add_test(tc, test_token_malformed);
    tcase_add_test(tc, test_token_wrong_secret_gen_slot);
    tcase_add_test(tc, test_view_target_and_counters);
    tcase_add_test(tc, test_seqlock_busy_slot_not_read);
    tcase_add_test(tc, test_reinit_keeps_generations);
    tcase_add_test(tc, test_ct_equal);
    tcase_add_test(tc, test_layout_frozen);
    tcase_add_test(tc, test_extension_found_only_when_there);
    suite_add_tcase(s, tc);
    return s;
}
