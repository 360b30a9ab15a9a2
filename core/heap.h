/* heap.h - the binary min-heap on int64 keys behind the loop's timed parks
 * (every deadline kept in user space). Intrusive: an element embeds a struct
 * rn__heap_node and the heap holds pointers to those, so each user keeps its
 * own type (rn__heap_entry gets it back) and nothing is allocated per push. */
#ifndef RN_HEAP_H
#define RN_HEAP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* A node's idx while it is in no heap. */
#define RN__HEAP_NONE SIZE_MAX

struct rn__heap_node {
    int64_t key; /* the heap orders on it; fixed while in the heap */
    size_t idx;  /* its slot, kept current so that any node can leave in O(log n) */
};

struct rn__heap {
    struct rn__heap_node **v;
    size_t len, cap;
};

/* The element of type `type` whose member `member` is node. */
#define rn__heap_entry(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

static inline bool rn__heap_queued(const struct rn__heap_node *n)
{
    return n->idx != RN__HEAP_NONE;
}

/* The node with the smallest key, NULL when empty. */
static inline struct rn__heap_node *rn__heap_min(const struct rn__heap *h)
{
    return h->len ? h->v[0] : NULL;
}

static inline void rn__heap_put(struct rn__heap *h, size_t i, struct rn__heap_node *n)
{
    h->v[i] = n;
    n->idx = i;
}

/* Ties stay below: a node goes up past strictly larger keys only. */
static inline void rn__heap_up(struct rn__heap *h, size_t i)
{
    struct rn__heap_node *n = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p]->key <= n->key)
            break;
        rn__heap_put(h, i, h->v[p]);
        i = p;
    }
    rn__heap_put(h, i, n);
}

static inline void rn__heap_down(struct rn__heap *h, size_t i)
{
    struct rn__heap_node *n = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->v[c + 1]->key < h->v[c]->key)
            c++;
        if (n->key <= h->v[c]->key)
            break;
        rn__heap_put(h, i, h->v[c]);
        i = c;
    }
    rn__heap_put(h, i, n);
}

/* Add n under key. The array doubles when full, from first_cap slots;
 * -ENOMEM leaves the heap and n as they were. */
static inline int rn__heap_push(struct rn__heap *h, struct rn__heap_node *n, int64_t key,
                                size_t first_cap)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : first_cap;
        struct rn__heap_node **v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    n->key = key;
    rn__heap_put(h, h->len++, n);
    rn__heap_up(h, h->len - 1);
    return 0;
}

/* Take n (which is in h) out; its idx becomes RN__HEAP_NONE. */
static inline void rn__heap_remove(struct rn__heap *h, struct rn__heap_node *n)
{
    size_t i = n->idx;
    struct rn__heap_node *last = h->v[--h->len];
    n->idx = RN__HEAP_NONE;
    if (i == h->len)
        return;
    /* The last node fills the hole; it may belong above or below it. */
    rn__heap_put(h, i, last);
    rn__heap_up(h, i);
    rn__heap_down(h, last->idx);
}

static inline void rn__heap_free(struct rn__heap *h)
{
    free(h->v);
}

#endif /* RN_HEAP_H */
