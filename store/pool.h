/* A bounded pool of leader-following clients for concurrent reads.
 *
 * Clients connect lazily on first use and are reused; at most @size exist. store_pool_acquire
 * blocks until one is free or @timeout_ms passes (GERR_TIMEOUT). Thread-safe. The free clients
 * are a stack: acquire takes the one released last (the likeliest to be connected, and warm in
 * the cache) in constant time under the mutex, since every gateway call takes one. */
#ifndef GANTRY_STORE_POOL_H
#define GANTRY_STORE_POOL_H

#include <pthread.h>
#include <stdbool.h>

#include "store/client.h"

struct store_pool {
    struct store_client *clients; /* size entries */
    unsigned *free_idx;           /* the free clients' indices, the next one to hand out last */
    unsigned n_free;
    unsigned waiters; /* acquirers waiting on cond */
    unsigned size;
    pthread_mutex_t mu;
    pthread_cond_t cond;
};

int store_pool_init(struct store_pool *p, const struct store_client_config *cfg, unsigned size);
/* Every client must have been released. */
void store_pool_close(struct store_pool *p);
int store_pool_acquire(struct store_pool *p, unsigned timeout_ms, struct store_client **out);
void store_pool_release(struct store_pool *p, struct store_client *cl);

#endif
