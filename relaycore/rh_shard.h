/* Several relay cores (shards, RelayCoreProcesses): how many, which one takes
 * a new session, and which one a token names. One core process holds two or
 * three descriptors per tunnel, and a process may not have more than its hard
 * RLIMIT_NOFILE; shards spread the tunnels over processes. httpd-independent. */
#ifndef RH_SHARD_H
#define RH_SHARD_H

#include <stdint.h>

#define RH_SHARDS_MAX      64          /* cores at most: the retained data holds them */
#define RH_SHARD_SHIFT     24          /* a token's slot field: shard << 24 | slot */
#define RH_SHARD_SLOTS_MAX (1u << RH_SHARD_SHIFT)
#define RH_SHARD_FDS       3           /* per session: target, parked pull, parked push */
#define RH_SHARD_FD_SPARE  256         /* the core's own: socket, epoll, logs, requests */

/* RelayCoreProcesses auto: enough cores for max_sessions at RH_SHARD_FDS
 * descriptors each under the hard limit hard_nofile (0: none), at least 1. */
unsigned rh_shard_auto(uint32_t max_sessions, uint64_t hard_nofile);

/* The slots of shard k of n for max_sessions in all: they add up to
 * max_sessions exactly (the first ones take the remainder), at least 1 each. */
uint32_t rh_shard_slots(uint32_t max_sessions, unsigned n, unsigned k);

/* Core k's part of a global bound v shared by n cores: the parts add up to v
 * (the first cores take the remainder), but none is 0, which means no limit. */
uint64_t rh_shard_part(uint64_t v, unsigned n, unsigned k);

/* A key's shard (a client's key, a service's name): the same key, the same
 * shard, so whatever is counted per key is counted in one core. */
unsigned rh_shard_of_key(const char *key, unsigned n);

/* The shard with the fewest sessions for its slots (active[i] of slots[i]);
 * ties go to the first one from start (so that children do not all pick
 * shard 0). */
unsigned rh_shard_least(const uint32_t *active, const uint32_t *slots, unsigned n,
                        unsigned start);

/* The shard a token names, without a look-up: -1 when malformed. */
int rh_token_shard(const char *token);

#endif
