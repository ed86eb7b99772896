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
    p->busy = mem_zalloc(sizeof *p->busy * size);
    for (unsigned i = 0; i < size; i++) {
        int rv = store_client_init(&p->clients[i], cfg);
        if (rv != 0) {
            mem_free(p->clients);
            mem_free(p->busy);
            return rv;
        }
    }
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
    mem_free(p->busy);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

int store_pool_acquire(struct store_pool *p, unsigned timeout_ms, struct store_client **out)
{
    struct timespec deadline;
    clock_mono_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Prefer a client that is already connected. */
        int pick = -1;
        for (unsigned i = 0; i < p->size; i++) {
            if (!p->busy[i] && (pick < 0 || p->clients[i].connected)) {
                pick = (int)i;
                if (p->clients[i].connected) {
                    break;
                }
            }
        }
        if (pick >= 0) {
            p->busy[pick] = true;
            pthread_mutex_unlock(&p->mu);
            *out = &p->clients[pick];
            return 0;
        }
        if (clock_cond_wait_mono(&p->cond, &p->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            return GERR_TIMEOUT;
        }
    }
}

void store_pool_release(struct store_pool *p, struct store_client *cl)
{
    pthread_mutex_lock(&p->mu);
    size_t i = (size_t)(cl - p->clients);
    p->busy[i] = false;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}
