/* relay-https client: a min-heap of deadlines whose nodes live in their owners
 * (a tunnel's next look, a curl socket's POLLOUT hold): the earliest in O(1),
 * set, moved and removed in O(log n), no scan of the owners. */
#ifndef RHC_HEAP_H
#define RHC_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct rhc_heap_node {
    int64_t at;                 /* the deadline (ms, rh_now_ms) */
    size_t pos;                 /* 1 + index in the heap; 0: not in it */
};

struct rhc_heap {
    struct rhc_heap_node **v;
    size_t n, cap;
};

/* Sets x's deadline to at (inserting it), or takes it out when at < 0.
 * -1 (x unchanged) when out of memory. */
int rhc_heap_set(struct rhc_heap *h, struct rhc_heap_node *x, int64_t at);
void rhc_heap_remove(struct rhc_heap *h, struct rhc_heap_node *x);
/* Room for n nodes: until then rhc_heap_set cannot fail. 0, or -1. */
int rhc_heap_reserve(struct rhc_heap *h, size_t n);

/* The node with the earliest deadline, or NULL. */
static inline struct rhc_heap_node *rhc_heap_top(const struct rhc_heap *h)
{
    return h->n ? h->v[0] : NULL;
}

/* The earliest deadline, or -1 when empty. */
static inline int64_t rhc_heap_next(const struct rhc_heap *h)
{
    return h->n ? h->v[0]->at : -1;
}

void rhc_heap_free(struct rhc_heap *h);   /* the array; the nodes are the owners' */

#endif
