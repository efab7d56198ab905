/* relay-https client: a min-heap of deadlines with the nodes in their owners
 * (rhc_heap.h). Each node knows its index, so a deadline moves or goes in
 * O(log n). */
#include <stdlib.h>

#include "rhc_heap.h"

static void put(struct rhc_heap *h, size_t i, struct rhc_heap_node *x)
{
    h->v[i] = x;
    x->pos = i + 1;
}

static void sift_up(struct rhc_heap *h, size_t i)
{
    struct rhc_heap_node *x = h->v[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p]->at <= x->at)
            break;
        put(h, i, h->v[p]);
        i = p;
    }
    put(h, i, x);
}

static void sift_down(struct rhc_heap *h, size_t i)
{
    struct rhc_heap_node *x = h->v[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->at < h->v[c]->at)
            ++c;
        if (x->at <= h->v[c]->at)
            break;
        put(h, i, h->v[c]);
        i = c;
    }
    put(h, i, x);
}

void rhc_heap_remove(struct rhc_heap *h, struct rhc_heap_node *x)
{
    if (!x->pos)
        return;
    size_t i = x->pos - 1;
    struct rhc_heap_node *last = h->v[--h->n];
    x->pos = 0;
    if (i == h->n)
        return;
    put(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
        sift_up(h, i);
    else
        sift_down(h, i);
}

int rhc_heap_reserve(struct rhc_heap *h, size_t n)
{
    if (n <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    struct rhc_heap_node **v = realloc(h->v, cap * sizeof(*v));
    if (!v)
        return -1;
    h->v = v;
    h->cap = cap;
    return 0;
}

int rhc_heap_set(struct rhc_heap *h, struct rhc_heap_node *x, int64_t at)
{
    if (at < 0) {
        rhc_heap_remove(h, x);
        return 0;
    }
    if (x->pos) {
        int64_t was = x->at;
        x->at = at;
        if (at < was)
            sift_up(h, x->pos - 1);
        else if (at > was)
            sift_down(h, x->pos - 1);
        return 0;
    }
    if (rhc_heap_reserve(h, h->n + 1) < 0)
        return -1;
    x->at = at;
    put(h, h->n++, x);
    sift_up(h, h->n - 1);
    return 0;
}

void rhc_heap_free(struct rhc_heap *h)
{
    for (size_t i = 0; i < h->n; ++i)
        h->v[i]->pos = 0;
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
