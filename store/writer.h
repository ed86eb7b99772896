/* The replica's single writer: one thread, one leader connection, one FIFO of transactions.
 *
 * dqlite 1.11 answers a second concurrent writer with SQLITE_BUSY at once, so every write of a
 * replica funnels through here; collisions are then only with other replicas and are retried by
 * store_client_tx with jittered backoff.
 *
 * Contract (libuv's): store_writer_submit returns 0 and the request's callback then fires exactly
 * once, on the writer thread, never inside submit; or it returns an error and the callback never
 * fires. The request struct is caller-owned and must stay valid until its callback; the callback
 * may free it. Callbacks must not block for long: they delay every later write.
 *
 * Bounds: the queue holds at most max_pending requests (store_writer_set_max_pending; 0, the
 * default, is unbounded): submit refuses more with GERR_UNAVAILABLE, so a caller sheds load instead
 * of queueing work nobody will wait for. A request with a deadline (deadline_ms, clock_system()
 * monotonic milliseconds, 0 for none) that is still queued when it passes is not run: its callback
 * gets GERR_TIMEOUT, and nothing of it was applied. A transaction that has started always runs to
 * its end. */
#ifndef GANTRY_STORE_WRITER_H
#define GANTRY_STORE_WRITER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/queue.h"
#include "store/client.h"

struct store_write;
typedef void (*store_write_cb)(struct store_write *req, int status);

struct store_write {
    void *data;           /* user data */
    store_tx_fn fn;       /* runs inside one transaction */
    void *arg;            /* passed to fn */
    uint64_t deadline_ms; /* set before submit; 0: none */
    store_write_cb cb;
    /* read-only after the callback fired: */
    int status;
    char errmsg[GERR_MSG_SIZE];
    /* private */
    struct queue link;
};

struct store_writer {
    struct store_client client; /* used only on the writer thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct queue pending;
    unsigned n_pending, max_pending;
    uint64_t refused, expired; /* requests refused because the queue was full / dropped past deadline */
    bool stopping;
    bool started;
};

/* Start the writer thread with its own client (configuration copied). 0, or GERR_INVAL. */
int store_writer_start(struct store_writer *w, const struct store_client_config *cfg);

/* Bound the queue (0: unbounded). Any time. */
void store_writer_set_max_pending(struct store_writer *w, unsigned max_pending);

/* Queue a transaction. GERR_CLOSED if the writer is stopping, GERR_UNAVAILABLE if the queue is
 * full (the callback will not fire). */
int store_writer_submit(struct store_writer *w, struct store_write *req, store_tx_fn fn, void *arg,
                        store_write_cb cb);

/* Submit and wait for the result on the calling thread (not for use on the writer thread).
 * Returns the transaction's status; the failure text goes to @errmsg if not NULL. */
int store_writer_run(struct store_writer *w, store_tx_fn fn, void *arg, char *errmsg);

/* store_writer_run with a deadline (monotonic ms, 0: none) for the time the request may wait. */
int store_writer_run_by(struct store_writer *w, store_tx_fn fn, void *arg, uint64_t deadline_ms,
                        char *errmsg);

/* Queued requests now, and the counters above. */
void store_writer_stats(struct store_writer *w, unsigned *pending, uint64_t *refused, uint64_t *expired);

/* Stop: the transaction in progress finishes, requests still queued get GERR_CANCELED, then the
 * thread exits and the client closes. Blocks until done. */
void store_writer_stop(struct store_writer *w);

#endif
