/* A fixed pool of worker threads for the blocking parts of RPC handlers (store round trips,
 * signing, backups), so the gRPC loop thread never blocks.
 *
 * jobs_submit queues @fn(@arg); one worker runs it later, exactly once, also during jobs_stop
 * (queued jobs are drained, not dropped, so every call a job holds gets its answer). @fn owns
 * @arg. Thread-safe. */
#ifndef GANTRY_LIB_JOBS_H
#define GANTRY_LIB_JOBS_H

#include <pthread.h>
#include <stdbool.h>

#include "lib/queue.h"

typedef void (*jobs_fn)(void *arg);

struct jobs {
    pthread_t *threads;
    unsigned n;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct queue q;
    bool stopping;
};

/* Start @n workers. Returns 0 or GERR_NOMEM. */
int jobs_start(struct jobs *j, unsigned n);
void jobs_submit(struct jobs *j, jobs_fn fn, void *arg);
/* Run what is queued, then join the workers. */
void jobs_stop(struct jobs *j);

#endif
