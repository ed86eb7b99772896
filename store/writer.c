/* The replica's single writer thread. See writer.h. */
#include "store/writer.h"

#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"

static void *writer_main(void *arg)
{
    struct store_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (queue_empty(&w->pending) && !w->stopping) {
            pthread_cond_wait(&w->cond, &w->mu);
        }
        struct queue *q = queue_head(&w->pending);
        if (q == NULL) {
            break; /* stopping and drained */
        }
        queue_remove(q);
        w->n_pending--;
        struct store_write *req = QUEUE_DATA(q, struct store_write, link);
        bool cancel = w->stopping;
        bool expired = !cancel && req->deadline_ms != 0 && clock_mono_ms(clock_system()) >= req->deadline_ms;
        w->expired += expired;
        pthread_mutex_unlock(&w->mu);

        if (cancel) {
            req->status = GERR_CANCELED;
            gerr_set(req->errmsg, "store writer stopped before this write ran");
        } else if (expired) {
            req->status = GERR_TIMEOUT;
            gerr_set(req->errmsg,
                     "the deadline passed while the write waited in the replica's queue; nothing "
                     "was applied");
        } else {
            req->status = store_client_tx(&w->client, req->fn, req->arg);
            if (req->status != 0) {
                memcpy(req->errmsg, w->client.errmsg, sizeof req->errmsg);
            } else {
                req->errmsg[0] = '\0';
            }
        }
        req->cb(req, req->status); /* may free req: do not touch it afterwards */

        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int store_writer_start(struct store_writer *w, const struct store_client_config *cfg)
{
    memset(w, 0, sizeof *w);
    int rv = store_client_init(&w->client, cfg);
    if (rv != 0) {
        return rv;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    queue_init(&w->pending);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mu);
        store_client_close(&w->client);
        return GERR_NOMEM;
    }
    w->started = true;
    return 0;
}

int store_writer_submit(struct store_writer *w, struct store_write *req, store_tx_fn fn, void *arg,
                        store_write_cb cb)
{
    req->fn = fn;
    req->arg = arg;
    req->cb = cb;
    req->status = 0;
    req->errmsg[0] = '\0';
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        return GERR_CLOSED;
    }
    if (w->max_pending != 0 && w->n_pending >= w->max_pending) {
        w->refused++;
        pthread_mutex_unlock(&w->mu);
        return GERR_UNAVAILABLE;
    }
    w->n_pending++;
    queue_insert_tail(&w->pending, &req->link);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

struct writer_wait {
    struct store_write req;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static void wait_cb(struct store_write *req, int status)
{
    struct writer_wait *ww = req->data;
    (void)status;
    pthread_mutex_lock(&ww->mu);
    ww->done = true;
    pthread_cond_signal(&ww->cond);
    pthread_mutex_unlock(&ww->mu);
}

void store_writer_set_max_pending(struct store_writer *w, unsigned max_pending)
{
    pthread_mutex_lock(&w->mu);
    w->max_pending = max_pending;
    pthread_mutex_unlock(&w->mu);
}

void store_writer_stats(struct store_writer *w, unsigned *pending, uint64_t *refused, uint64_t *expired)
{
    pthread_mutex_lock(&w->mu);
    *pending = w->n_pending;
    *refused = w->refused;
    *expired = w->expired;
    pthread_mutex_unlock(&w->mu);
}

int store_writer_run(struct store_writer *w, store_tx_fn fn, void *arg, char *errmsg)
{
    return store_writer_run_by(w, fn, arg, 0, errmsg);
}

int store_writer_run_by(struct store_writer *w, store_tx_fn fn, void *arg, uint64_t deadline_ms, char *errmsg)
{
    struct writer_wait ww;
    memset(&ww, 0, sizeof ww);
    ww.req.data = &ww;
    ww.req.deadline_ms = deadline_ms;
    pthread_mutex_init(&ww.mu, NULL);
    pthread_cond_init(&ww.cond, NULL);
    int rv = store_writer_submit(w, &ww.req, fn, arg, wait_cb);
    if (rv == 0) {
        pthread_mutex_lock(&ww.mu);
        while (!ww.done) {
            pthread_cond_wait(&ww.cond, &ww.mu);
        }
        pthread_mutex_unlock(&ww.mu);
        rv = ww.req.status;
        if (errmsg != NULL) {
            memcpy(errmsg, ww.req.errmsg, GERR_MSG_SIZE);
        }
    } else if (errmsg != NULL && rv == GERR_UNAVAILABLE) {
        gerr_set(errmsg, "the replica's write queue is full (%u writes waiting); retry with backoff",
                 w->max_pending);
    } else if (errmsg != NULL) {
        gerr_set(errmsg, "store writer is stopping");
    }
    pthread_cond_destroy(&ww.cond);
    pthread_mutex_destroy(&ww.mu);
    return rv;
}

void store_writer_stop(struct store_writer *w)
{
    if (!w->started) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    store_client_close(&w->client);
    w->started = false;
}
