/* The core's table of clients: a chained hash of small entries, forgotten
 * lazily once unused for a while (so an open-rate bucket outlives the session
 * that emptied it, and a client that comes and goes cannot reset its bucket). */
#include <stdlib.h>
#include <string.h>
#include "rh_clients.h"

int rh_clients_init(rh_clients *t, size_t nbuckets, size_t max)
{
    memset(t, 0, sizeof(*t));
    t->buckets = calloc(nbuckets ? nbuckets : 1, sizeof(*t->buckets));
    if (!t->buckets)
        return -1;
    t->nbuckets = nbuckets ? nbuckets : 1;
    t->max = max;
    return 0;
}

void rh_clients_free(rh_clients *t)
{
    for (size_t i = 0; t->buckets && i < t->nbuckets; ++i)
        for (rh_client *cl = t->buckets[i], *next; cl; cl = next) {
            next = cl->next;
            free(cl);
        }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

static size_t key_hash(const char *key)
{
    size_t h = 2166136261u;          /* FNV-1a: keys are already hashes, spread is enough */
    for (; *key; ++key)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}

static int forgettable(const rh_client *cl, long now)
{
    return cl->idle_since && now - cl->idle_since >= RH_CLIENT_IDLE_MS;
}

rh_client *rh_clients_get(rh_clients *t, const char *key, long now)
{
    rh_client **pp = &t->buckets[key_hash(key) % t->nbuckets];
    rh_client *found = NULL;

    while (*pp) {
        rh_client *cl = *pp;
        if (!found && !strcmp(cl->key, key)) {
            found = cl;
            pp = &cl->next;
            continue;
        }
        if (forgettable(cl, now)) {
            *pp = cl->next;
            free(cl);
            --t->count;
            continue;
        }
        pp = &cl->next;
    }
    if (found)
        return found;
    if (t->max && t->count >= t->max)
        return NULL;
    rh_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    size_t kl = strlen(key);
    if (kl >= sizeof(cl->key))
        kl = sizeof(cl->key) - 1;
    memcpy(cl->key, key, kl);
    cl->tokens = -1;                 /* a full bucket, at whatever the rate is */
    cl->stamp_ms = now;
    cl->idle_since = now;
    *pp = cl;
    ++t->count;
    return cl;
}

int rh_client_take_open(rh_client *cl, unsigned rate, long now)
{
    double burst = 2.0 * rate;

    if (!rate)
        return 0;
    if (cl->tokens < 0 || cl->tokens > burst)
        cl->tokens = burst;
    else
        cl->tokens += (double)(now - cl->stamp_ms) * rate / 1000.0;
    if (cl->tokens > burst)
        cl->tokens = burst;
    cl->stamp_ms = now;
    if (cl->tokens < 1.0)
        return -1;
    cl->tokens -= 1.0;
    return 0;
}

void rh_client_touch(rh_client *cl, long now)
{
    cl->idle_since = cl->sessions || cl->held ? 0 : now;
}
