/* Who is using the relay: the core's table of clients (an authenticated user,
 * else an IP address, as a hashed key from the handler), with what each holds
 * (sessions, requests) and its open rate, so that one client cannot take what
 * the operator meant for all (RelayMaxSessionsPerClient, RelayMaxRequestsPerClient,
 * RelayOpenRate). httpd-independent: C99. */
#ifndef RH_CLIENTS_H
#define RH_CLIENTS_H

#include <stddef.h>
#include <stdint.h>

#define RH_CLIENT_KEY_MAX 32        /* key text, NUL included */
#define RH_CLIENT_IDLE_MS 2000      /* an unused entry is forgotten after this */

typedef struct rh_client {
    char key[RH_CLIENT_KEY_MAX];
    unsigned sessions;              /* sessions it opened that are alive */
    unsigned held;                  /* its requests the core holds now */
    uint64_t resume_held;           /* bytes its resume windows hold (RelayResumeMemory) */
    double tokens;                  /* open rate: token bucket ... */
    long stamp_ms;                  /* ... last refilled then */
    long idle_since;                /* unused (no session, no request) since, or 0 */
    struct rh_client *next;
} rh_client;

typedef struct rh_clients {
    rh_client **buckets;
    size_t nbuckets;
    size_t count, max;
} rh_clients;

/* max: entries at most (a table full of live clients refuses new ones). */
int rh_clients_init(rh_clients *t, size_t nbuckets, size_t max);
void rh_clients_free(rh_clients *t);

/* The entry for key, created if new; NULL when the table is full. Entries
 * unused for RH_CLIENT_IDLE_MS on the way are forgotten. */
rh_client *rh_clients_get(rh_clients *t, const char *key, long now_ms);

/* Takes one open from the client's bucket (rate per second, burst twice the
 * rate; 0: no limit): 0 when allowed, -1 when it opens too fast. */
int rh_client_take_open(rh_client *cl, unsigned rate, long now_ms);

/* Call when a session or request of the client ends: an entry nothing uses any
 * more starts its idle time (it keeps its bucket until forgotten). */
void rh_client_touch(rh_client *cl, long now_ms);

#endif
