/* A bounded pool of leader-following clients. See pool.h. */
#include "store/pool.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/mem.h"

int store_pool_init(struct store_pool *p, const struct store_client_config *cfg, unsigned size)
{
    memset(p, 0, sizeof *p);
    if (size == 0) {
        return GERR_INVAL;
    }
    p->clients = mem_zalloc(sizeof *p->clients * size);
    p->free_idx = mem_zalloc(sizeof *p->free_idx * size);
    for (unsigned i = 0; i < size; i++) {
        int rv = store_client_init(&p->clients[i], cfg);
        if (rv != 0) {
            while (i-- > 0) {
                store_client_close(&p->clients[i]);
            }
            mem_free(p->clients);
            mem_free(p->free_idx);
            return rv;
        }
        p->free_idx[i] = size - 1 - i; /* client 0 first */
    }
    p->n_free = size;
    p->size = size;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &attr);
    pthread_condattr_destroy(&attr);
    return 0;
}

void store_pool_close(struct store_pool *p)
{
    for (unsigned i = 0; i < p->size; i++) {
        store_client_close(&p->clients[i]);
    }
    mem_free(p->clients);
    mem_free(p->free_idx);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

int store_pool_acquire(struct store_pool *p, unsigned timeout_ms, struct store_client **out)
{
    struct timespec deadline;
    clock_mono_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&p->mu);
    while (p->n_free == 0) {
        p->waiters++;
        int rv = clock_cond_wait_mono(&p->cond, &p->mu, &deadline);
        p->waiters--;
        if (rv == ETIMEDOUT && p->n_free == 0) {
            pthread_mutex_unlock(&p->mu);
            return GERR_TIMEOUT;
        }
    }
    *out = &p->clients[p->free_idx[--p->n_free]];
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void store_pool_release(struct store_pool *p, struct store_client *cl)
{
    pthread_mutex_lock(&p->mu);
    p->free_idx[p->n_free++] = (unsigned)(cl - p->clients);
    if (p->waiters > 0) {
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->mu);
}
