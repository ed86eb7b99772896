/* A typed intrusive doubly-linked list (circular, with a sentinel head).
 *
 * Embed a `struct queue` in the element, initialise the head with queue_init(), and get back to the
 * element with QUEUE_DATA(node, struct elem, field). No allocation ever happens here. */
#ifndef GANTRY_LIB_QUEUE_H
#define GANTRY_LIB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct queue {
    struct queue *next;
    struct queue *prev;
};

#define QUEUE_DATA(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

/* Iterate with @q over every node of @h; do not remove @q inside the loop (use queue_head in a
 * while loop to drain). */
#define QUEUE_FOREACH(q, h) for ((q) = (h)->next; (q) != (h); (q) = (q)->next)

static inline void queue_init(struct queue *q)
{
    q->next = q;
    q->prev = q;
}

static inline bool queue_empty(const struct queue *h)
{
    return h->next == h;
}

/* First node, or NULL if empty. */
static inline struct queue *queue_head(const struct queue *h)
{
    return h->next == h ? NULL : h->next;
}

static inline void queue_insert_tail(struct queue *h, struct queue *q)
{
    q->next = h;
    q->prev = h->prev;
    q->prev->next = q;
    h->prev = q;
}

static inline void queue_insert_head(struct queue *h, struct queue *q)
{
    q->next = h->next;
    q->prev = h;
    q->next->prev = q;
    h->next = q;
}

/* Unlink @q and leave it self-linked, so removing twice is harmless. */
static inline void queue_remove(struct queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q;
    q->prev = q;
}

/* Move every node of @from to the tail of @to; @from ends empty. */
static inline void queue_move(struct queue *from, struct queue *to)
{
    if (queue_empty(from)) {
        return;
    }
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    queue_init(from);
}

#endif
