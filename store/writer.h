/* The replica's single writer: one thread, one leader connection, a FIFO of requests run in
 * batches, several requests per transaction (group commit).
 *
 * dqlite 1.11 answers a second concurrent writer with SQLITE_BUSY at once, so every write of a
 * replica funnels through here; collisions are then only with other replicas and are retried by
 * store_client_tx with jittered backoff.
 *
 * Batches. The writer takes up to max_batch queued requests (store_writer_set_max_batch; default
 * 64) and runs them in ONE transaction, each in its own SAVEPOINT when there are several: a request
 * whose function fails (a quota exceeded, a name taken, a stale resource_version, a validation
 * error found in the store) is rolled back to its savepoint and answered with its error; the others
 * commit together with one COMMIT, and every caller is answered only after it. Append-only rows
 * (store_tx_insert: change events, audit events, idempotency records) are written once per batch as
 * multi-row INSERTs, and the cluster revision is read once and written once per batch. A failure of
 * the transaction itself (the leader changed, the connection broke) runs the whole batch again, as
 * store_client_tx does for one transaction; an unknown COMMIT outcome answers every request of the
 * batch with GERR_UNKNOWN_OUTCOME, for its caller to settle by its idempotency key.
 *
 * Idempotency. A request with an idempotency key (idem_principal, idem_key) runs at most once per
 * key: the writer looks up the keys of a batch in one query; a key already stored is not run
 * (replayed = true, and response and revision hold what the first run stored); a key stored for
 * another method fails with GERR_INVAL; the response a request sets with store_tx_set_result is
 * stored under its key in the same transaction. Two requests with one key never share a batch: the
 * later waits for the next one, where it is replayed.
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

#include "lib/buf.h"
#include "lib/queue.h"
#include "store/client.h"

#define STORE_WRITER_DEFAULT_BATCH 64u
/* Committed batches by size: bucket i (below the last) counts those of more than 2^(i-1) and at
 * most 2^i requests (1, 2, 3-4, ... 65-128); the last bucket counts every larger one. */
#define STORE_WRITER_SIZE_BUCKETS 9u

struct store_write;
typedef void (*store_write_cb)(struct store_write *req, int status);

struct store_write {
    void *data;           /* user data */
    store_tx_fn fn;       /* runs inside the batch's transaction, in its own savepoint */
    void *arg;            /* passed to fn */
    uint64_t deadline_ms; /* set before submit; 0: none */
    /* Optional idempotency, set before submit (copied strings are not made: they must stay valid
     * until the callback). NULL idem_key: none. */
    const char *idem_principal, *idem_key, *idem_method;
    bool idem_fresh; /* the key was never submitted before (a new internal key): nothing to look up */
    /* Calls of one class may share memos (store_tx_memo, store/client.h), a static string; NULL:
     * the call uses none, and the batch's memos are dropped before it runs. */
    const char *memo_class;
    store_write_cb cb;
    /* read-only after the callback fired: */
    int status;
    char errmsg[GERR_MSG_SIZE];
    bool replayed;       /* the key was stored already: fn did not run */
    struct buf response; /* the stored response on a replay, else what fn set (store_tx_set_result) */
    int64_t revision;    /* likewise: the revision of the request's change */
    /* private */
    struct queue link;
};

/* Committed batches by the round trip of their COMMIT (store_client_stats.last_commit_ns): bucket i
 * counts those of at most store_writer_commit_bounds_us[i] microseconds and more than the bound
 * before; the last bucket counts every slower one. */
#define STORE_WRITER_COMMIT_BUCKETS 12u
extern const uint64_t store_writer_commit_bounds_us[STORE_WRITER_COMMIT_BUCKETS - 1];

struct store_writer_stats_full {
    unsigned pending;
    uint64_t refused, expired;
    uint64_t batches, requests; /* transactions committed, and the requests they answered */
    unsigned last_batch;        /* requests in the last batch */
    uint64_t size_buckets[STORE_WRITER_SIZE_BUCKETS];
    uint64_t commit_buckets[STORE_WRITER_COMMIT_BUCKETS];
    uint64_t commit_ns_sum; /* of the committed batches' COMMIT round trips */
};

struct store_writer {
    struct store_client client; /* used only on the writer thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct queue pending;
    pthread_cond_t idle; /* signalled when a batch ends */
    unsigned n_pending, max_pending, max_batch, linger_ms;
    unsigned paused;           /* store_writer_pause calls not yet resumed */
    bool busy;                 /* a batch is running */
    uint64_t refused, expired; /* requests refused because the queue was full / dropped past deadline */
    uint64_t batches, requests;
    uint64_t size_buckets[STORE_WRITER_SIZE_BUCKETS];
    uint64_t commit_buckets[STORE_WRITER_COMMIT_BUCKETS];
    uint64_t commit_ns_sum;
    unsigned last_batch;
    bool stopping;
    bool started;
};

/* Start the writer thread with its own client (configuration copied). 0, or GERR_INVAL. */
int store_writer_start(struct store_writer *w, const struct store_client_config *cfg);

/* Bound the queue (0: unbounded), and the requests per transaction (1: no batching). Any time. */
void store_writer_set_max_pending(struct store_writer *w, unsigned max_pending);
void store_writer_set_max_batch(struct store_writer *w, unsigned max_batch);
/* Linger: once a request is queued, wait up to @linger_ms (0, the default: not at all) for the
 * batch to fill to max_batch before running it. Trades latency for fewer, larger commits; a
 * stopping writer does not linger. Any time. */
void store_writer_set_linger(struct store_writer *w, unsigned linger_ms);

/* Pause: no new batch starts until store_writer_resume (pauses nest); requests keep queueing,
 * under the queue bound and their deadlines. Waits up to @timeout_ms for the batch in progress to
 * end: 0 once the writer is idle, GERR_TIMEOUT if it is still running one (the pause holds
 * anyway; resume it all the same). For a planned leadership transfer: no request of this replica
 * is in flight on the node while leadership moves (raft/catchup.h). Stop ends a pause. */
int store_writer_pause(struct store_writer *w, unsigned timeout_ms);
void store_writer_resume(struct store_writer *w);

/* Queue a transaction. GERR_CLOSED if the writer is stopping, GERR_UNAVAILABLE if the queue is
 * full (the callback will not fire). The request's idempotency fields and deadline must be set
 * before; its response buffer is initialised here (the caller closes it after the callback). */
int store_writer_submit(struct store_writer *w, struct store_write *req, store_tx_fn fn, void *arg,
                        store_write_cb cb);

/* Submit and wait for the result on the calling thread (not for use on the writer thread).
 * Returns the transaction's status; the failure text goes to @errmsg if not NULL. */
int store_writer_run(struct store_writer *w, store_tx_fn fn, void *arg, char *errmsg);

/* store_writer_run with a deadline (monotonic ms, 0: none) for the time the request may wait. */
int store_writer_run_by(struct store_writer *w, store_tx_fn fn, void *arg, uint64_t deadline_ms,
                        char *errmsg);

/* Submit @req (fn, arg, idempotency and deadline set by the caller) and wait for it. Returns its
 * status; @req holds the outcome (replayed, response, revision, errmsg). */
int store_writer_run_req(struct store_writer *w, struct store_write *req);

/* Queued requests now, and the counters above. */
void store_writer_stats(struct store_writer *w, unsigned *pending, uint64_t *refused, uint64_t *expired);
void store_writer_stats_full(struct store_writer *w, struct store_writer_stats_full *out);

/* Stop: the transaction in progress finishes, requests still queued get GERR_CANCELED, then the
 * thread exits and the client closes. Blocks until done. */
void store_writer_stop(struct store_writer *w);

#endif
