/* Single writer (the core), many readers (httpd children): each slot is guarded by
 * a sequence counter so a reader never acts on a half-written slot. */
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include "rh_registry.h"
#include "rh_shard.h"

#define RH_REG_MAGIC 0x52485231u  /* "RHR1" */
#define RH_REG_EXT_MAGIC 0x52485831u  /* "RHX1": rh_registry_ext */
#define NIL 0xffffffffu

size_t rh_registry_size(uint32_t nslots)
{
    return sizeof(rh_registry) + (size_t)nslots * sizeof(rh_slot);
}

/* the extension starts at the first 8-byte boundary behind the slots */
static size_t ext_offset(uint32_t nslots)
{
    return (rh_registry_size(nslots) + 7) & ~(size_t)7;
}

size_t rh_registry_ext_size(uint32_t nslots)
{
    return ext_offset(nslots) + sizeof(rh_registry_ext);
}

rh_registry_ext *rh_registry_ext_of(const rh_registry *reg, size_t mem_size)
{
    if (!reg || mem_size < sizeof(rh_registry)
        || __atomic_load_n(&reg->magic, __ATOMIC_ACQUIRE) != RH_REG_MAGIC
        || reg->nslots > RH_SHARD_SLOTS_MAX || mem_size < rh_registry_ext_size(reg->nslots))
        return NULL;
    rh_registry_ext *x = (rh_registry_ext *)((char *)(uintptr_t)reg + ext_offset(reg->nslots));
    /* an older module's extension is shorter: its fields are all there */
    if (x->magic != RH_REG_EXT_MAGIC || x->size < offsetof(rh_registry_ext, resume_bound)
        || x->size > mem_size - ext_offset(reg->nslots))
        return NULL;
    return x;
}

rh_registry_ext *rh_registry_ext_init(rh_registry *reg, size_t mem_size,
                                      const rh_registry_ext *from)
{
    if (mem_size < rh_registry_ext_size(reg->nslots))
        return NULL;
    rh_registry_ext *x = (rh_registry_ext *)((char *)reg + ext_offset(reg->nslots));
    memset(x, 0, sizeof(*x));
    if (from)
        for (int i = 0; i < RH_WATCH_ANS_N; ++i)
            x->watch.answered[i] = from->watch.answered[i];
    x->size = sizeof(*x);
    x->magic = RH_REG_EXT_MAGIC;
    return rh_registry_ext_of(reg, mem_size);
}

int rh_registry_ext_has_resume(const rh_registry_ext *x)
{
    return x && x->size >= offsetof(rh_registry_ext, resume_waits) + sizeof(x->resume_waits);
}

void rh_registry_set_resume(rh_registry_ext *x, uint64_t bound, uint64_t client_bound)
{
    if (!rh_registry_ext_has_resume(x))
        return;
    __atomic_store_n(&x->resume_bound, bound, __ATOMIC_RELAXED);
    __atomic_store_n(&x->resume_client_bound, client_bound, __ATOMIC_RELAXED);
}

void rh_registry_resume_now(rh_registry_ext *x, uint64_t held, uint64_t waits)
{
    if (!rh_registry_ext_has_resume(x))
        return;
    __atomic_store_n(&x->resume_held, held, __ATOMIC_RELAXED);
    __atomic_store_n(&x->resume_waits, waits, __ATOMIC_RELAXED);
}

rh_registry *rh_registry_init(void *mem, uint32_t nslots)
{
    rh_registry *reg = mem;
    int keep_gen = reg->magic == RH_REG_MAGIC && reg->nslots == nslots;

    reg->nslots = nslots;
    reg->active = 0;
    reg->core_pid = 0;
    reg->core_started = 0;
    if (!keep_gen) {
        reg->total_opened = reg->total_closed = 0;
        reg->total_up = reg->total_down = 0;
        rh_stats_init(&reg->stats, (int64_t)time(NULL));
    }
    for (uint32_t i = 0; i < nslots; ++i) {
        rh_slot *s = &reg->slots[i];
        uint32_t gen = keep_gen ? s->gen : 0;
        memset(s, 0, sizeof(*s));
        s->gen = gen;
        s->next_free = i + 1 < nslots ? i + 1 : NIL;
    }
    reg->free_head = nslots ? 0 : NIL;
    __atomic_store_n(&reg->magic, RH_REG_MAGIC, __ATOMIC_RELEASE);
    return reg;
}

static void write_begin(rh_slot *s)
{
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL);
}

static void write_end(rh_slot *s)
{
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
}

int rh_registry_alloc(rh_registry *reg, const char *target,
                      const unsigned char secret[RH_SECRET_LEN],
                      uint32_t *slot, uint32_t *gen)
{
    uint32_t i = reg->free_head;
    if (i == NIL)
        return RH_REG_FULL;
    rh_slot *s = &reg->slots[i];
    reg->free_head = s->next_free;
    write_begin(s);
    s->gen++;
    s->state = RH_SLOT_CONNECTING;
    s->next_free = NIL;
    memcpy(s->secret, secret, RH_SECRET_LEN);
    snprintf(s->target, sizeof(s->target), "%s", target);
    s->opened_at = (int64_t)time(NULL);
    s->up_bytes = s->down_bytes = 0;
    s->owner = 0;
    write_end(s);
    reg->active++;
    reg->total_opened++;
    rh_stats_target_opened(&reg->stats, s->target);
    *slot = i;
    *gen = s->gen;
    return RH_REG_OK;
}

void rh_registry_set_state(rh_registry *reg, uint32_t slot, uint32_t state)
{
    rh_slot *s = &reg->slots[slot];
    if (state == RH_SLOT_SERVE && s->state != RH_SLOT_SERVE)
        rh_stats_target_unopened(&reg->stats, s->target);
    write_begin(s);
    s->state = state;
    write_end(s);
}

void rh_registry_set_owner(rh_registry *reg, uint32_t slot, uint64_t owner)
{
    rh_slot *s = &reg->slots[slot];
    write_begin(s);
    s->owner = owner;
    write_end(s);
}

void rh_registry_beat(rh_registry *reg, int64_t now_ms)
{
    /* the figures once a second: the sum runs over every slot */
    if (now_ms / 1000 != __atomic_load_n(&reg->stats.hist_sec, __ATOMIC_RELAXED)) {
        uint64_t up, down;
        rh_registry_totals(reg, &up, &down);
        rh_stats_tick(&reg->stats, now_ms / 1000, up, down);
    }
    __atomic_store_n(&reg->core_beat_ms, now_ms, __ATOMIC_RELAXED);
}

void rh_registry_claim(rh_registry *reg, int64_t until_ms)
{
    __atomic_store_n(&reg->claimed_until_ms, until_ms, __ATOMIC_RELAXED);
}

int rh_registry_claimed(const rh_registry *reg, int64_t now_ms)
{
    int64_t until = __atomic_load_n(&reg->claimed_until_ms, __ATOMIC_RELAXED);
    return until == 0 || now_ms < until;   /* 0: never claimed (a core on its own) */
}

void rh_registry_drain(rh_registry *reg, int64_t until_ms)
{
    __atomic_store_n(&reg->draining_until_ms, until_ms, __ATOMIC_RELAXED);
}

int64_t rh_registry_draining(const rh_registry *reg)
{
    return __atomic_load_n(&reg->draining_until_ms, __ATOMIC_RELAXED);
}

void rh_registry_publish(rh_registry *reg, uint32_t held, uint64_t integrity)
{
    __atomic_store_n(&reg->stats.held, held, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->stats.integrity, integrity, __ATOMIC_RELAXED);
}

/* Racy by a few bytes against the core's writes, which a status page allows. */
void rh_registry_totals(const rh_registry *reg, uint64_t *up, uint64_t *down)
{
    uint64_t u = __atomic_load_n(&reg->total_up, __ATOMIC_RELAXED);
    uint64_t d = __atomic_load_n(&reg->total_down, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < reg->nslots; ++i) {
        const rh_slot *s = &reg->slots[i];
        if (__atomic_load_n(&s->state, __ATOMIC_RELAXED) == RH_SLOT_FREE)
            continue;
        u += __atomic_load_n(&s->up_bytes, __ATOMIC_RELAXED);
        d += __atomic_load_n(&s->down_bytes, __ATOMIC_RELAXED);
    }
    *up = u;
    *down = d;
}

int64_t rh_registry_beat_age(const rh_registry *reg, int64_t now_ms)
{
    int64_t b = __atomic_load_n(&reg->core_beat_ms, __ATOMIC_RELAXED);
    return b ? now_ms - b : INT64_MAX;
}

void rh_registry_set_limits(rh_registry *reg, const rh_limits *l)
{
    __atomic_store_n(&reg->limits.max_workers, l->max_workers, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.sessions_per_client, l->sessions_per_client, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.requests_per_client, l->requests_per_client, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.open_rate, l->open_rate, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.push_wait_s, l->push_wait_s, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.rate_session, l->rate_session, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.rate_global, l->rate_global, __ATOMIC_RELAXED);
    __atomic_store_n(&reg->limits.listens_per_client, l->listens_per_client, __ATOMIC_RELAXED);
}

void rh_registry_get_limits(const rh_registry *reg, rh_limits *l)
{
    l->max_workers = __atomic_load_n(&reg->limits.max_workers, __ATOMIC_RELAXED);
    l->sessions_per_client = __atomic_load_n(&reg->limits.sessions_per_client, __ATOMIC_RELAXED);
    l->requests_per_client = __atomic_load_n(&reg->limits.requests_per_client, __ATOMIC_RELAXED);
    l->open_rate = __atomic_load_n(&reg->limits.open_rate, __ATOMIC_RELAXED);
    l->push_wait_s = __atomic_load_n(&reg->limits.push_wait_s, __ATOMIC_RELAXED);
    l->rate_session = __atomic_load_n(&reg->limits.rate_session, __ATOMIC_RELAXED);
    l->rate_global = __atomic_load_n(&reg->limits.rate_global, __ATOMIC_RELAXED);
    l->listens_per_client = __atomic_load_n(&reg->limits.listens_per_client, __ATOMIC_RELAXED);
}

void rh_registry_count(rh_registry *reg, uint32_t slot, uint64_t up, uint64_t down)
{
    rh_slot *s = &reg->slots[slot];
    write_begin(s);
    s->up_bytes = up;
    s->down_bytes = down;
    write_end(s);
}

void rh_registry_release(rh_registry *reg, uint32_t slot)
{
    rh_slot *s = &reg->slots[slot];
    if (s->state == RH_SLOT_FREE)
        return;
    reg->total_up += s->up_bytes;
    reg->total_down += s->down_bytes;
    if (s->state != RH_SLOT_SERVE)   /* a serve leg's connection is its client leg's */
        rh_stats_target_closed(&reg->stats, s->target, s->up_bytes, s->down_bytes);
    write_begin(s);
    s->state = RH_SLOT_FREE;
    memset(s->secret, 0, sizeof(s->secret));
    s->target[0] = '\0';
    write_end(s);
    s->next_free = reg->free_head;
    reg->free_head = slot;
    reg->active--;
    reg->total_closed++;
}

/* Copies a slot under its seqlock; gives up after a few tries (writer busy). */
static int snapshot(const rh_registry *reg, uint32_t slot, rh_slot *copy)
{
    const rh_slot *s = &reg->slots[slot];
    /* The writer may be descheduled inside its write (a loaded machine): spin
     * a little, then yield the CPU to it, for up to about 100 ms. Giving up
     * would turn a live session into a 410. */
    for (int tries = 0; tries < 2000; ++tries) {
        uint32_t a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        if (a & 1) {
            if (tries >= 100) {
                struct timespec ts = { 0, 50000 };
                nanosleep(&ts, NULL);
            }
            continue;
        }
        memcpy(copy, (const void *)s, sizeof(*copy));
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint32_t b = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
        if (a == b)
            return 0;
    }
    return -1;
}

uint32_t rh_registry_pub_slot(const rh_registry *reg, uint32_t slot)
{
    return reg->shard << RH_SHARD_SHIFT | slot;
}

int rh_registry_local_slot(const rh_registry *reg, uint32_t pub, uint32_t *slot)
{
    uint32_t local = pub & (RH_SHARD_SLOTS_MAX - 1);
    if (pub >> RH_SHARD_SHIFT != reg->shard || local >= reg->nslots)
        return -1;
    *slot = local;
    return 0;
}

static void fill_view(const rh_registry *reg, rh_slot_view *v, uint32_t slot, const rh_slot *c)
{
    v->slot = rh_registry_pub_slot(reg, slot);
    v->gen = c->gen;
    v->state = c->state;
    memcpy(v->target, c->target, sizeof(v->target));
    v->target[RH_TARGET_MAX - 1] = '\0';
    v->opened_at = c->opened_at;
    v->up_bytes = c->up_bytes;
    v->down_bytes = c->down_bytes;
    v->owner = c->owner;
}

int rh_registry_view(const rh_registry *reg, uint32_t slot, rh_slot_view *view)
{
    rh_slot copy;
    if (__atomic_load_n(&reg->magic, __ATOMIC_ACQUIRE) != RH_REG_MAGIC || slot >= reg->nslots)
        return RH_REG_UNKNOWN;
    if (snapshot(reg, slot, &copy) != 0 || copy.state == RH_SLOT_FREE)
        return RH_REG_UNKNOWN;
    fill_view(reg, view, slot, &copy);
    return RH_REG_OK;
}

int rh_registry_check(const rh_registry *reg, const char *token, rh_slot_view *view)
{
    uint32_t slot, gen;
    unsigned char secret[RH_SECRET_LEN];
    rh_slot copy;

    if (!token || rh_token_parse(token, &slot, &gen, secret) != 0)
        return RH_REG_MALFORMED;
    if (__atomic_load_n(&reg->magic, __ATOMIC_ACQUIRE) != RH_REG_MAGIC
        || rh_registry_local_slot(reg, slot, &slot) != 0)
        return RH_REG_UNKNOWN;
    if (snapshot(reg, slot, &copy) != 0)
        return RH_REG_UNKNOWN;
    /* evaluate every part so the time taken does not depend on which one failed */
    int ok = rh_ct_equal(copy.secret, secret, RH_SECRET_LEN);
    ok &= copy.gen == gen;
    ok &= copy.state != RH_SLOT_FREE;
    if (!ok)
        return RH_REG_UNKNOWN;
    if (view)
        fill_view(reg, view, slot, &copy);
    return RH_REG_OK;
}

int rh_ct_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    volatile unsigned char d = 0;
    for (size_t i = 0; i < n; ++i)
        d |= a[i] ^ b[i];
    return d == 0;
}

static const char hexd[] = "0123456789abcdef";

static void put_hex32(char *out, uint32_t v)
{
    for (int i = 7; i >= 0; --i) {
        out[i] = hexd[v & 0xf];
        v >>= 4;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int get_hex32(const char *in, uint32_t *v)
{
    uint32_t x = 0;
    for (int i = 0; i < 8; ++i) {
        int h = hexval(in[i]);
        if (h < 0)
            return -1;
        x = (x << 4) | (uint32_t)h;
    }
    *v = x;
    return 0;
}

void rh_sid_format(char *out, uint32_t slot, uint32_t gen)
{
    put_hex32(out, slot);
    put_hex32(out + 8, gen);
    out[RH_SID_LEN] = '\0';
}

void rh_token_format(char *out, uint32_t slot, uint32_t gen,
                     const unsigned char secret[RH_SECRET_LEN])
{
    rh_sid_format(out, slot, gen);
    for (int i = 0; i < RH_SECRET_LEN; ++i) {
        out[RH_SID_LEN + 2 * i] = hexd[secret[i] >> 4];
        out[RH_SID_LEN + 2 * i + 1] = hexd[secret[i] & 0xf];
    }
    out[RH_TOKEN_LEN] = '\0';
}

int rh_token_parse(const char *tok, uint32_t *slot, uint32_t *gen,
                   unsigned char secret[RH_SECRET_LEN])
{
    if (strlen(tok) != RH_TOKEN_LEN)
        return -1;
    if (get_hex32(tok, slot) || get_hex32(tok + 8, gen))
        return -1;
    for (int i = 0; i < RH_SECRET_LEN; ++i) {
        int hi = hexval(tok[RH_SID_LEN + 2 * i]);
        int lo = hexval(tok[RH_SID_LEN + 2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        secret[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}
