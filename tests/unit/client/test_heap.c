/* The deadline heap (client/rhc_heap.c) against a naive model: random sets,
 * moves, removals and pops, and after each the heap's earliest deadline and
 * every node's membership agree with a plain array scan. */
#include <stdint.h>
#include <stdlib.h>

#include "client_tests.h"
#include "rhc_heap.h"

#define NODES 200

struct model {
    struct rhc_heap_node node[NODES];
    int64_t at[NODES];          /* -1: not in the heap */
};

static int64_t model_min(const struct model *m)
{
    int64_t best = -1;

    for (int i = 0; i < NODES; ++i)
        if (m->at[i] >= 0 && (best < 0 || m->at[i] < best))
            best = m->at[i];
    return best;
}

static size_t model_count(const struct model *m)
{
    size_t n = 0;

    for (int i = 0; i < NODES; ++i)
        n += m->at[i] >= 0;
    return n;
}

/* the heap property, and every node's index pointing back at it (plain
 * comparisons: each ck_assert writes a checkpoint, too slow per node) */
static int shape_ok(const struct rhc_heap *h)
{
    for (size_t i = 0; i < h->n; ++i) {
        if (h->v[i]->pos != i + 1)
            return 0;
        if (i > 0 && h->v[(i - 1) / 2]->at > h->v[i]->at)
            return 0;
    }
    return 1;
}

static int agree(const struct rhc_heap *h, const struct model *m)
{
    if (h->n != model_count(m) || rhc_heap_next(h) != model_min(m))
        return 0;
    for (int i = 0; i < NODES; ++i) {
        if ((m->node[i].pos != 0) != (m->at[i] >= 0))
            return 0;
        if (m->at[i] >= 0 && m->node[i].at != m->at[i])
            return 0;
    }
    return shape_ok(h);
}

static void check_agree(const struct rhc_heap *h, const struct model *m, int k)
{
    if (!agree(h, m))
        ck_abort_msg("heap and model differ after operation %d", k);
}

/* pops every node due by now, as the loop does, from heap and model */
static void pop_due(struct rhc_heap *h, struct model *m, int64_t now)
{
    struct rhc_heap_node *x;

    while ((x = rhc_heap_top(h)) && x->at <= now) {
        int i = (int)(x - m->node);
        if (x->at != model_min(m))
            ck_abort_msg("popped %lld, the model's earliest is %lld", (long long)x->at,
                         (long long)model_min(m));
        rhc_heap_remove(h, x);
        m->at[i] = -1;
    }
}

static void one_op(struct rhc_heap *h, struct model *m, unsigned r)
{
    int i = (int)(r % NODES);
    int64_t at = (int64_t)((r >> 8) % 1000);   /* ties are frequent */

    switch ((r >> 20) % 5) {
    case 0:
    case 1:                             /* set or move */
        if (rhc_heap_set(h, &m->node[i], at) != 0)
            ck_abort_msg("rhc_heap_set failed");
        m->at[i] = at;
        break;
    case 2:                             /* set to "none" */
        if (rhc_heap_set(h, &m->node[i], -1) != 0)
            ck_abort_msg("rhc_heap_set(-1) failed");
        m->at[i] = -1;
        break;
    case 3:
        rhc_heap_remove(h, &m->node[i]);   /* also when not in it */
        m->at[i] = -1;
        break;
    default:
        pop_due(h, m, at / 4);
        break;
    }
}

START_TEST(heap_matches_model)
{
    for (unsigned seed = 1; seed <= 20; ++seed) {
        struct rhc_heap h = { 0 };
        struct model m;
        for (int i = 0; i < NODES; ++i) {
            m.node[i] = (struct rhc_heap_node){ 0, 0 };
            m.at[i] = -1;
        }
        srand(seed);
        for (int k = 0; k < 5000; ++k) {
            one_op(&h, &m, ((unsigned)rand() << 16) ^ (unsigned)rand());
            check_agree(&h, &m, k);
        }
        pop_due(&h, &m, INT64_MAX);
        check_agree(&h, &m, -1);
        ck_assert_ptr_null(rhc_heap_top(&h));
        rhc_heap_free(&h);
    }
}
END_TEST

/* popping yields the deadlines in order */
START_TEST(heap_pops_in_order)
{
    struct rhc_heap h = { 0 };
    static struct rhc_heap_node node[1000];

    srand(7);
    for (int i = 0; i < 1000; ++i)
        ck_assert_int_eq(rhc_heap_set(&h, &node[i], rand() % 100000), 0);
    int64_t last = -1;
    struct rhc_heap_node *x;
    int ordered = 1, n = 0;
    while ((x = rhc_heap_top(&h))) {
        ordered &= x->at >= last;
        last = x->at;
        rhc_heap_remove(&h, x);
        ordered &= x->pos == 0;
        ++n;
    }
    ck_assert(ordered);
    ck_assert_int_eq(n, 1000);
    rhc_heap_free(&h);
}
END_TEST

/* freeing the array leaves the nodes marked as out of it */
START_TEST(heap_free_clears_nodes)
{
    struct rhc_heap h = { 0 };
    struct rhc_heap_node a = { 0, 0 }, b = { 0, 0 };

    rhc_heap_set(&h, &a, 5);
    rhc_heap_set(&h, &b, 3);
    ck_assert_ptr_eq(rhc_heap_top(&h), &b);
    rhc_heap_free(&h);
    ck_assert_uint_eq(a.pos, 0);
    ck_assert_uint_eq(b.pos, 0);
    ck_assert_int_eq(rhc_heap_next(&h), -1);
}
END_TEST

Suite *heap_suite(void)
{
    Suite *s = suite_create("heap");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, heap_matches_model);
    tcase_add_test(tc, heap_pops_in_order);
    tcase_add_test(tc, heap_free_clears_nodes);
    suite_add_tcase(s, tc);
    return s;
}
