/* Worker threads for blocking handler work (lib/jobs.h). */
#include "lib/jobs.h"

#include "lib/err.h"
#include "lib/mem.h"

struct job {
    struct queue link;
    jobs_fn fn;
    void *arg;
};

static void *worker(void *arg)
{
    struct jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        struct queue *head = queue_head(&j->q);
        if (head == NULL) {
            if (j->stopping) {
                break;
            }
            pthread_cond_wait(&j->cond, &j->mu);
            continue;
        }
        queue_remove(head);
        pthread_mutex_unlock(&j->mu);
        struct job *job = QUEUE_DATA(head, struct job, link);
        job->fn(job->arg);
        mem_free(job);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int jobs_start(struct jobs *j, unsigned n)
{
    queue_init(&j->q);
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

void jobs_submit(struct jobs *j, jobs_fn fn, void *arg)
{
    struct job *job = mem_zalloc(sizeof *job);
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&j->mu);
    queue_insert_tail(&j->q, &job->link);
    pthread_cond_signal(&j->cond);
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
