/* A fixed pool of worker threads for the blocking parts of RPC handlers (store round trips,
 * signing, backups), so the gRPC loop thread never blocks.
 *
 * Work comes in classes, each a bounded FIFO: a worker always takes from the lowest-numbered class
 * that has work (class 0 first), so a flood in a later class cannot delay an earlier one (the gate
 * puts calls with a recently verified credential in class 0 and every other call in class 1).
 *
 * jobs_submit queues @fn(@arg) in @cls and returns 0: one worker then runs it, exactly once, also
 * during jobs_stop (queued jobs are drained, not dropped, so every call a job holds gets its
 * answer). It returns GERR_TOOBIG, and @fn never runs, when the class already holds its maximum of
 * queued jobs (the caller sheds the work); GERR_CLOSED after jobs_stop began. @fn owns @arg.
 * Thread-safe. */
#ifndef GANTRY_LIB_JOBS_H
#define GANTRY_LIB_JOBS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/queue.h"

#define JOBS_CLASSES 2u

typedef void (*jobs_fn)(void *arg);

struct jobs {
    pthread_t *threads;
    unsigned n;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct queue q[JOBS_CLASSES];
    unsigned depth[JOBS_CLASSES];
    unsigned max_depth[JOBS_CLASSES]; /* 0: unbounded */
    uint64_t shed[JOBS_CLASSES];      /* jobs refused because the class was full */
    bool stopping;
};

/* Start @n workers; @max_depth[c] bounds class c's queue (0: unbounded; NULL: all unbounded).
 * Returns 0 or GERR_NOMEM. */
int jobs_start(struct jobs *j, unsigned n, const unsigned *max_depth);

int jobs_submit(struct jobs *j, unsigned cls, jobs_fn fn, void *arg);

/* Queued (not yet running) jobs of class @cls, and jobs refused so far because it was full. */
void jobs_depth(struct jobs *j, unsigned cls, unsigned *depth, uint64_t *shed);

/* Run what is queued, then join the workers. */
void jobs_stop(struct jobs *j);

#endif
