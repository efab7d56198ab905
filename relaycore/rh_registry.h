/* The session registry: a table in shared memory that every httpd child reads and
 * only the relay core writes. httpd-independent; the glue hands it the memory. */
#ifndef RH_REGISTRY_H
#define RH_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "rh_proto.h"
#include "rh_stats.h"

#define RH_SECRET_LEN   16                 /* 128 bits */
#define RH_TARGET_MAX   (RH_TARGET_NAME_MAX + 1)   /* name length incl. NUL */

/* RH_SLOT_SERVE: open, the serve leg of a rendezvous (its bytes are counted
 * on its client leg); a client leg connects until its serve leg is taken */
enum { RH_SLOT_FREE = 0, RH_SLOT_CONNECTING = 1, RH_SLOT_OPEN = 2, RH_SLOT_SERVE = 3 };

typedef struct rh_slot {
    uint32_t seq;        /* seqlock: odd while the core writes the slot */
    uint32_t gen;        /* bumped on every allocation: part of the token */
    uint32_t state;
    uint32_t next_free;  /* free list link, core only */
    unsigned char secret[RH_SECRET_LEN];
    char target[RH_TARGET_MAX];
    int64_t opened_at;   /* unix seconds */
    uint64_t up_bytes;   /* client -> target, bytes accepted */
    uint64_t down_bytes; /* target -> client, bytes sent */
    uint64_t owner;      /* hash of the user who opened it; 0: no authentication */
} rh_slot;

/* What the operator allows (RelayMax*, RelayOpenRate, RelayPushWait): written by
 * the httpd parent at every (re)start, read by the core at every request, so a
 * graceful restart changes them under a running core. 0: no limit. */
typedef struct rh_limits {
    uint32_t max_workers;          /* relay requests held at once, all clients */
    uint32_t sessions_per_client;
    uint32_t requests_per_client;  /* relay requests held at once, per client */
    uint32_t open_rate;            /* opens per second per client (burst: twice) */
    uint32_t push_wait_s;          /* a push ahead of the accepted offset waits this long */
    uint32_t rate_session;         /* bytes/s a session moves, both ways together */
    uint32_t rate_global;          /* bytes/s all sessions move together */
    uint32_t listens_per_client;   /* rendezvous: listens one client may keep waiting */
} rh_limits;

typedef struct rh_registry {
    uint32_t magic;
    uint32_t nslots;
    uint32_t free_head;  /* core only */
    uint32_t active;     /* sessions in use */
    uint32_t shard;      /* which core of several (rh_shard.h): the parent's, kept by init */
    int64_t core_pid;
    int64_t core_started;
    int64_t core_beat_ms;   /* CLOCK_MONOTONIC ms, renewed by the core every second */
    uint64_t total_opened;
    uint64_t total_closed;
    uint64_t total_up;   /* bytes of closed sessions */
    uint64_t total_down;
    rh_limits limits;    /* the parent's: rh_registry_init leaves them */
    int64_t claimed_until_ms;  /* CLOCK_MONOTONIC: the module is loaded (see rh_registry_claim) */
    int64_t draining_until_ms; /* CLOCK_MONOTONIC: a newer core took over; 0: none did */
    rh_stats stats;      /* for the status page: kept while the registry is */
    rh_slot slots[];
} rh_registry;

/* What a newer module adds to a core's table, behind its slots. The header,
 * rh_stats and the slots above are read by both sides of an upgrade (the old
 * core drains in its table while the new module's children look its
 * sessions up there, and the new parent copies it), so they never change
 * place; new figures go here instead. Only the parent that sizes the shared
 * memory knows whether this part exists: a reader passes the memory's real
 * size, and a table made by an older module (or an extension of another
 * kind) yields none, so its figures are not shown rather than misread.
 * Later additions go at the end of the struct: a field is there when size
 * covers it. */
typedef struct rh_registry_ext {
    uint32_t magic;
    uint32_t size;          /* sizeof(rh_registry_ext) of the module that made it */
    rh_watch_stats watch;
    /* RelayResumeMemory (0: no bound): written by the parent, read by the core
     * at every loop turn; bytes of resume windows the core holds now, and how
     * often a session had to wait for room, written by the core */
    uint64_t resume_bound;         /* this core's share of the relay's bound */
    uint64_t resume_client_bound;  /* what one client may hold in it */
    uint64_t resume_held;
    uint64_t resume_waits;
} rh_registry_ext;

/* A consistent copy of one slot, as a reader sees it. */
typedef struct rh_slot_view {
    uint32_t slot, gen, state;
    char target[RH_TARGET_MAX];
    int64_t opened_at;
    uint64_t up_bytes, down_bytes;
    uint64_t owner;
} rh_slot_view;

enum { RH_REG_OK = 0, RH_REG_MALFORMED = -1, RH_REG_UNKNOWN = -2, RH_REG_FULL = -3 };

size_t rh_registry_size(uint32_t nslots);
/* The size of a table with its extension: what the parent allocates. */
size_t rh_registry_ext_size(uint32_t nslots);
/* Formats mem as an empty registry. Keeps slot generations if mem already held a
 * registry of the same size, so tokens of an earlier core never match again. */
rh_registry *rh_registry_init(void *mem, uint32_t nslots);

/* The extension of a formatted registry in mem_size bytes of memory, or NULL
 * (none: mem_size does not hold it, or it is of another kind or older).
 * Formatting one (the parent, after rh_registry_init) keeps the totals of
 * from (the table it replaces; NULL: none) and zeroes the rest. */
rh_registry_ext *rh_registry_ext_of(const rh_registry *reg, size_t mem_size);
rh_registry_ext *rh_registry_ext_init(rh_registry *reg, size_t mem_size,
                                      const rh_registry_ext *from);
/* The extension holds the resume memory fields (a table of an older module,
 * still draining, may not: its core bounds nothing and shows nothing). */
int rh_registry_ext_has_resume(const rh_registry_ext *x);
/* Parent: the bounds (atomic per field). Core: its figures. */
void rh_registry_set_resume(rh_registry_ext *x, uint64_t bound, uint64_t client_bound);
void rh_registry_resume_now(rh_registry_ext *x, uint64_t held, uint64_t waits);

/* Core side. */
int rh_registry_alloc(rh_registry *reg, const char *target,
                      const unsigned char secret[RH_SECRET_LEN],
                      uint32_t *slot, uint32_t *gen);
void rh_registry_set_state(rh_registry *reg, uint32_t slot, uint32_t state);
void rh_registry_count(rh_registry *reg, uint32_t slot, uint64_t up, uint64_t down);
void rh_registry_release(rh_registry *reg, uint32_t slot);
void rh_registry_set_owner(rh_registry *reg, uint32_t slot, uint64_t owner);

/* The limits: set by the httpd parent, read by the core (atomic per field). */
void rh_registry_set_limits(rh_registry *reg, const rh_limits *l);
void rh_registry_get_limits(const rh_registry *reg, rh_limits *l);

/* Reader side (any process): checks a token, constant time on the secret. */
int rh_registry_check(const rh_registry *reg, const char *token, rh_slot_view *view);
int rh_registry_view(const rh_registry *reg, uint32_t slot, rh_slot_view *view);

/* The core's heartbeat: it renews it at least every RH_CORE_BEAT_MS, so a core
 * that is stopped or stuck shows within a few seconds (the handler's waits).
 * Each beat also brings the status figures up to date (rh_stats_tick). */
#define RH_CORE_BEAT_MS 1000
void rh_registry_beat(rh_registry *reg, int64_t now_ms);
/* The core's own counters, published with the next beat. */
void rh_registry_publish(rh_registry *reg, uint32_t held, uint64_t integrity);
/* Any process: bytes up and down of every session, closed and live. */
void rh_registry_totals(const rh_registry *reg, uint64_t *up, uint64_t *down);
/* Milliseconds since the core's last beat (a large value when it never beat). */
int64_t rh_registry_beat_age(const rh_registry *reg, int64_t now_ms);

/* The httpd parent claims the core at every (re)start with the module loaded
 * (INT64_MAX), and gives it until_ms when a generation ends: a restart without
 * the module (a2dismod) leaves the claim to run out, and the core then ends. */
#define RH_CLAIM_GRACE_MS 10000
void rh_registry_claim(rh_registry *reg, int64_t until_ms);
int rh_registry_claimed(const rh_registry *reg, int64_t now_ms);

/* A newer core (a new module file) serves new sessions: this one keeps its
 * sessions until they end or until_ms, takes no new ones, then stops. */
void rh_registry_drain(rh_registry *reg, int64_t until_ms);
int64_t rh_registry_draining(const rh_registry *reg);

/* A token's slot field names the shard too (shard << RH_SHARD_SHIFT | slot):
 * the public slot of a slot of this table, and back (-1: another shard's, or
 * out of range). Views and session ids carry the public slot. */
uint32_t rh_registry_pub_slot(const rh_registry *reg, uint32_t slot);
int rh_registry_local_slot(const rh_registry *reg, uint32_t pub, uint32_t *slot);

/* Token text helpers. out must hold RH_TOKEN_LEN + 1 bytes. */
void rh_token_format(char *out, uint32_t slot, uint32_t gen,
                     const unsigned char secret[RH_SECRET_LEN]);
int rh_token_parse(const char *tok, uint32_t *slot, uint32_t *gen,
                   unsigned char secret[RH_SECRET_LEN]);
/* The public id: first RH_SID_LEN characters of a token. out: RH_SID_LEN + 1. */
void rh_sid_format(char *out, uint32_t slot, uint32_t gen);
/* Constant-time comparison. */
int rh_ct_equal(const unsigned char *a, const unsigned char *b, size_t n);

#endif
