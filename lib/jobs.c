/* Worker threads for blocking handler work (lib/jobs.h). */
#include "lib/jobs.h"

#include "lib/err.h"
#include "lib/mem.h"

struct job {
    struct queue link;
    jobs_fn fn;
    void *arg;
};

/* Under the lock: the next job by class order, or NULL. */
static struct job *next_job(struct jobs *j)
{
    for (unsigned c = 0; c < JOBS_CLASSES; c++) {
        struct queue *head = queue_head(&j->q[c]);
        if (head != NULL) {
            queue_remove(head);
            j->depth[c]--;
            return QUEUE_DATA(head, struct job, link);
        }
    }
    return NULL;
}

static void *worker(void *arg)
{
    struct jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        struct job *job = next_job(j);
        if (job == NULL) {
            if (j->stopping) {
                break;
            }
            pthread_cond_wait(&j->cond, &j->mu);
            continue;
        }
        pthread_mutex_unlock(&j->mu);
        job->fn(job->arg);
        mem_free(job);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int jobs_start(struct jobs *j, unsigned n, const unsigned *max_depth)
{
    for (unsigned c = 0; c < JOBS_CLASSES; c++) {
        queue_init(&j->q[c]);
        j->depth[c] = 0;
        j->shed[c] = 0;
        j->max_depth[c] = max_depth != NULL ? max_depth[c] : 0;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    j->stopping = false;
    j->threads = mem_zalloc(sizeof *j->threads * n);
    j->n = 0;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&j->threads[i], NULL, worker, j) != 0) {
            jobs_stop(j);
            return GERR_NOMEM;
        }
        j->n++;
    }
    return 0;
}

int jobs_submit(struct jobs *j, unsigned cls, jobs_fn fn, void *arg)
{
    if (cls >= JOBS_CLASSES) {
        cls = JOBS_CLASSES - 1;
    }
    pthread_mutex_lock(&j->mu);
    if (j->stopping) {
        pthread_mutex_unlock(&j->mu);
        return GERR_CLOSED;
    }
    if (j->max_depth[cls] != 0 && j->depth[cls] >= j->max_depth[cls]) {
        j->shed[cls]++;
        pthread_mutex_unlock(&j->mu);
        return GERR_TOOBIG;
    }
    struct job *job = mem_zalloc(sizeof *job);
    job->fn = fn;
    job->arg = arg;
    queue_insert_tail(&j->q[cls], &job->link);
    j->depth[cls]++;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void jobs_depth(struct jobs *j, unsigned cls, unsigned *depth, uint64_t *shed)
{
    pthread_mutex_lock(&j->mu);
    *depth = cls < JOBS_CLASSES ? j->depth[cls] : 0;
    *shed = cls < JOBS_CLASSES ? j->shed[cls] : 0;
    pthread_mutex_unlock(&j->mu);
}

void jobs_stop(struct jobs *j)
{
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    for (unsigned i = 0; i < j->n; i++) {
        pthread_join(j->threads[i], NULL);
    }
    mem_free(j->threads);
    j->threads = NULL;
    j->n = 0;
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->mu);
}
