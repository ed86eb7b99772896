/* The replica's single writer thread: batches, savepoints, idempotency. See writer.h.
 *
 * Happy path: the thread takes up to max_batch queued requests (dropping expired ones, leaving a
 * request whose idempotency key is already in the batch for the next one), runs batch_tx in one
 * store_client_tx: the keys' stored records in one query, then each request's function in its own
 * savepoint, then the deferred rows and the idempotency records of the requests that succeeded,
 * then COMMIT; then it answers every request.
 *
 * Failure modes: a request's own error rolls back its savepoint only (a batch of one is simply
 * rolled back); an error of the transaction (BUSY, a lost leader, a broken connection) makes
 * store_client_tx run batch_tx again from the start, with everything deferred forgotten; an unknown
 * COMMIT outcome answers the whole batch with GERR_UNKNOWN_OUTCOME. */
#include "store/writer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/batch.h"

const uint64_t store_writer_commit_bounds_us[STORE_WRITER_COMMIT_BUCKETS - 1] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

#define IDEM_KEYS_PER_QUERY 120u /* 2 parameters each, under dqlite 1.11's 255 */

static const struct store_table idempotency_table = {
#ifdef GANTRY_PLANT_BUG_SKIP_IDEMPOTENCY
    "INSERT OR REPLACE INTO idempotency (principal_id, request_id, method, response, revision, "
    "created_at_ms) "
    "VALUES",
#else
    "INSERT INTO idempotency (principal_id, request_id, method, response, revision, created_at_ms) VALUES",
#endif
    6};

struct batch_run {
    struct store_write **reqs;
    unsigned n;
    int *status; /* per request, this attempt */
    struct store_batch b;
};

/* Errors after which the whole transaction runs again (as store_client_tx decides). */
static bool tx_level(int rv)
{
    switch (rv) {
    case GERR_BUSY:
    case GERR_NOTLEADER:
    case GERR_CLOSED:
    case GERR_TIMEOUT:
    case GERR_IO:
    case GERR_PROTO:
    case GERR_UNKNOWN_OUTCOME:
        return true;
    default:
        return false;
    }
}

static bool keyed(const struct store_write *r)
{
    return r->idem_key != NULL && r->idem_key[0] != '\0';
}

static const char *text_at(const struct proto_rows *rows, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(rows, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

/* The stored records of the batch's keys: replayed requests get their stored response. */
static int lookup_keys(struct store_tx *tx, struct batch_run *br)
{
#ifdef GANTRY_PLANT_BUG_SKIP_IDEMPOTENCY
    /* Planted bug (tests/jepsen, docs/reliability.md): the idempotency records are never looked up. */
    (void)tx;
    (void)br;
    return 0;
#else
    struct proto_value p[2 * IDEM_KEYS_PER_QUERY];
    unsigned idx[IDEM_KEYS_PER_QUERY];
    struct buf sql;
    buf_init(&sql);
    int rv = 0;
    for (unsigned i = 0; rv == 0 && i < br->n;) {
        unsigned k = 0;
        buf_reset(&sql);
        buf_printf(&sql, "SELECT principal_id, request_id, method, response, revision FROM idempotency WHERE "
                         "(principal_id, request_id) IN (VALUES ");
        for (; i < br->n && k < IDEM_KEYS_PER_QUERY; i++) {
            if (!keyed(br->reqs[i]) || br->reqs[i]->idem_fresh) {
                continue;
            }
            buf_printf(&sql, k == 0 ? "(?, ?)" : ", (?, ?)");
            p[2 * k] = proto_text(br->reqs[i]->idem_principal != NULL ? br->reqs[i]->idem_principal : "");
            p[2 * k + 1] = proto_text(br->reqs[i]->idem_key);
            idx[k++] = i;
        }
        if (k == 0) {
            break;
        }
        buf_printf(&sql, ")");
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        rv = store_tx_query(tx, (const char *)sql.data, p, 2 * k, &rows);
        for (size_t r = 0; rv == 0 && r < rows.n_rows; r++) {
            for (unsigned j = 0; j < k; j++) {
                struct store_write *req = br->reqs[idx[j]];
                const char *principal = req->idem_principal != NULL ? req->idem_principal : "";
                if (strcmp(text_at(&rows, r, 0), principal) != 0 ||
                    strcmp(text_at(&rows, r, 1), req->idem_key) != 0) {
                    continue;
                }
                const char *method = text_at(&rows, r, 2);
                if (req->idem_method != NULL && strcmp(method, req->idem_method) != 0) {
                    br->status[idx[j]] = GERR_INVAL;
                    gerr_set(req->errmsg, "request_id \"%.64s\" was already used for %.100s", req->idem_key,
                             method);
                } else {
                    const struct proto_value *resp = proto_rows_at(&rows, r, 3);
                    req->replayed = true;
                    buf_reset(&req->response);
                    if (resp->type == PROTO_BLOB && resp->u.b.n > 0) {
                        buf_append(&req->response, resp->u.b.s, resp->u.b.n);
                    }
                    req->revision = proto_rows_at(&rows, r, 4)->u.i;
                }
            }
        }
        proto_rows_close(&rows);
    }
    buf_close(&sql);
    return rv;
#endif
}

static int batch_tx(struct store_tx *tx, void *arg)
{
    struct batch_run *br = arg;
    tx->batch = &br->b;
    store_batch__reset(&br->b);
    for (unsigned i = 0; i < br->n; i++) {
        br->status[i] = 0;
        br->reqs[i]->replayed = false;
        br->reqs[i]->errmsg[0] = '\0';
    }
    int rv = lookup_keys(tx, br);
    if (rv != 0) {
        return rv;
    }
    bool several = br->n > 1;
    br->b.savepoints = several;
    for (unsigned i = 0; i < br->n; i++) {
        struct store_write *req = br->reqs[i];
        if (req->replayed || br->status[i] != 0) {
            continue;
        }
        /* The call's savepoint is opened by its first write, in the same request (store/batch.h). */
        struct store_batch_mark mark;
        store_batch__mark(&br->b, &mark);
        br->b.call = i;
        if (req->memo_class == NULL || br->b.memo_class == NULL ||
            strcmp(req->memo_class, br->b.memo_class) != 0) {
            store_batch__drop_memos(&br->b); /* what they describe may be what this call changes */
            br->b.memo_class = req->memo_class;
        }
        br->b.savepoint_open = false;
        tx->cl->errmsg[0] = '\0';
        rv = req->fn(tx, req->arg);
        if (rv == 0) {
            continue;
        }
        if (tx_level(rv) || !several) {
            return rv; /* the transaction (and with one request, the request) is rolled back whole */
        }
        br->status[i] = rv;
        memcpy(req->errmsg, tx->cl->errmsg, sizeof req->errmsg);
        store_batch__rollback(&br->b, &mark);
        store_batch__drop_memos(&br->b); /* the call may have changed one before it failed */
        if (br->b.savepoint_open) {
            char sql[32], name[16];
            store_batch__savepoint_name(&br->b, name);
            snprintf(sql, sizeof sql, "ROLLBACK TO %s", name);
            br->b.savepoints = false; /* this statement must not open another savepoint */
            int rrv = store_tx_exec(tx, sql, NULL, 0, NULL);
            br->b.savepoints = true;
            if (rrv != 0) {
                return rrv;
            }
        }
    }
    br->b.savepoints = false; /* the end-of-batch writes belong to no call */
    /* The idempotency records of the requests that ran and succeeded. */
    struct clock *clk = clock_system();
    int64_t now = (int64_t)clk->wall_ms(clk);
    for (unsigned i = 0; i < br->n; i++) {
        struct store_write *req = br->reqs[i];
        if (!keyed(req) || req->replayed || br->status[i] != 0) {
            continue;
        }
        const struct store_batch_result *res = &br->b.results[i];
        struct proto_value p[] = {proto_text(req->idem_principal != NULL ? req->idem_principal : ""),
                                  proto_text(req->idem_key),
                                  proto_text(req->idem_method != NULL ? req->idem_method : ""),
                                  proto_blob(res->response.data, res->response.len),
                                  proto_int(res->revision),
                                  proto_int(now)};
        br->b.call = i;
        if ((rv = store_tx_insert(tx, &idempotency_table, p)) != 0) {
            return rv;
        }
    }
    return store_batch__flush(tx);
}

/* Run @n requests as one transaction; each request's status, errmsg, response and revision are
 * set, nobody is answered. Returns the transaction's status. Writer thread, without the lock. */
static int commit_batch(struct store_writer *w, struct store_write **reqs, unsigned n)
{
    struct batch_run br = {.reqs = reqs, .n = n};
    br.status = mem_zalloc(sizeof *br.status * n);
    store_batch__init(&br.b, n);
    int rv = store_client_tx(&w->client, batch_tx, &br);
    for (unsigned i = 0; i < n; i++) {
        struct store_write *req = reqs[i];
        if (rv != 0) {
            /* The transaction did not commit (or its outcome is unknown): no request applied. */
            req->status = rv;
            memcpy(req->errmsg, w->client.errmsg, sizeof req->errmsg);
            req->replayed = false;
            buf_reset(&req->response);
        } else {
            req->status = br.status[i];
            if (req->status == 0) {
                req->errmsg[0] = '\0';
                if (!req->replayed && keyed(req)) {
                    buf_reset(&req->response);
                    buf_append(&req->response, br.b.results[i].response.data, br.b.results[i].response.len);
                    req->revision = br.b.results[i].revision;
                } else if (!req->replayed) {
                    req->revision = br.b.results[i].revision;
                }
            }
        }
    }
    store_batch__close(&br.b);
    mem_free(br.status);
    pthread_mutex_lock(&w->mu);
    if (rv == 0) {
        w->batches++;
        w->requests += n;
        unsigned b = 0; /* bucket i counts batches of at most 2^i requests */
        while (b + 1 < STORE_WRITER_SIZE_BUCKETS && (1u << b) < n) {
            b++;
        }
        w->size_buckets[b]++;
        uint64_t us = w->client.stats.last_commit_ns / 1000;
        unsigned c = 0;
        while (c + 1 < STORE_WRITER_COMMIT_BUCKETS && us > store_writer_commit_bounds_us[c]) {
            c++;
        }
        w->commit_buckets[c]++;
        w->commit_ns_sum += w->client.stats.last_commit_ns;
    }
    w->last_batch = n;
    pthread_mutex_unlock(&w->mu);
    return rv;
}

/* Run @n requests as one batch and answer them. Writer thread, without the lock.
 *
 * A constraint violation of the transaction itself (not of one request, which its savepoint
 * contains) comes from the rows written at the end of the batch: an idempotency key that
 * another writer stored first, for a request that was marked fresh (a forwarder that fell back
 * to running the call itself while the forwarded copy still ran, or a bug). Nothing committed;
 * the requests run again, each alone and with its key looked up, so the one that collided is
 * replayed and the others are not failed for it. */
static void run_batch(struct store_writer *w, struct store_write **reqs, unsigned n)
{
    int rv = commit_batch(w, reqs, n);
    if (rv == GERR_CONSTRAINT) {
        bool fresh = false;
        for (unsigned i = 0; i < n; i++) {
            fresh = fresh || reqs[i]->idem_fresh;
            reqs[i]->idem_fresh = false;
        }
        if (n > 1 || fresh) {
            LOG_WARN("store writer: a batch of %u failed as a whole (%s); running its requests one by one", n,
                     w->client.errmsg);
            for (unsigned i = 0; i < n; i++) {
                commit_batch(w, &reqs[i], 1);
            }
        }
    }
    for (unsigned i = 0; i < n; i++) {
        reqs[i]->cb(reqs[i], reqs[i]->status); /* may free the request: do not touch it afterwards */
    }
}

static bool same_key(const struct store_write *a, const struct store_write *b)
{
    return keyed(a) && keyed(b) && strcmp(a->idem_key, b->idem_key) == 0 &&
           strcmp(a->idem_principal != NULL ? a->idem_principal : "",
                  b->idem_principal != NULL ? b->idem_principal : "") == 0;
}

static void *writer_main(void *arg)
{
    struct store_writer *w = arg;
    struct store_write **batch = NULL, **done = NULL;
    unsigned cap = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while ((queue_empty(&w->pending) || w->paused > 0) && !w->stopping) {
            pthread_cond_wait(&w->cond, &w->mu);
        }
        if (queue_empty(&w->pending)) {
            break; /* stopping and drained */
        }
        unsigned max = w->max_batch > 0 ? w->max_batch : 1;
        if (w->linger_ms > 0 && !w->stopping && w->n_pending < max) {
            /* Linger: let the batch fill for up to linger_ms after its first request. */
            struct timespec until;
            clock_mono_deadline(&until, w->linger_ms);
            while (!w->stopping && w->n_pending < max &&
                   clock_cond_wait_mono(&w->cond, &w->mu, &until) != ETIMEDOUT) {
            }
        }
        if (cap < max) {
            cap = max;
            batch = mem_realloc(batch, sizeof *batch * cap);
            done = mem_realloc(done, sizeof *done * cap);
        }
        unsigned n = 0, n_done = 0;
        bool cancel = w->stopping;
        uint64_t now = clock_mono_ms(clock_system());
        struct queue *q = queue_head(&w->pending);
        while (q != NULL && n < max && n_done < cap) {
            struct queue *next = q->next != &w->pending ? q->next : NULL;
            struct store_write *req = QUEUE_DATA(q, struct store_write, link);
            bool dup = false;
            for (unsigned i = 0; i < n && !dup; i++) {
                dup = same_key(batch[i], req);
            }
            if (!dup) {
                queue_remove(q);
                w->n_pending--;
                if (cancel) {
                    req->status = GERR_CANCELED;
                    gerr_set(req->errmsg, "store writer stopped before this write ran");
                    done[n_done++] = req;
                } else if (req->deadline_ms != 0 && now >= req->deadline_ms) {
                    w->expired++;
                    req->status = GERR_TIMEOUT;
                    gerr_set(req->errmsg,
                             "the deadline passed while the write waited in the replica's queue; "
                             "nothing was applied");
                    done[n_done++] = req;
                } else {
                    batch[n++] = req;
                }
            }
            q = next;
        }
        w->busy = n > 0;
        pthread_mutex_unlock(&w->mu);
        for (unsigned i = 0; i < n_done; i++) {
            done[i]->cb(done[i], done[i]->status);
        }
        if (n > 0) {
            run_batch(w, batch, n);
        }
        pthread_mutex_lock(&w->mu);
        if (w->busy) {
            w->busy = false;
            pthread_cond_broadcast(&w->idle);
        }
    }
    pthread_mutex_unlock(&w->mu);
    mem_free(batch);
    mem_free(done);
    return NULL;
}

int store_writer_start(struct store_writer *w, const struct store_client_config *cfg)
{
    memset(w, 0, sizeof *w);
    int rv = store_client_init(&w->client, cfg);
    if (rv != 0) {
        return rv;
    }
    w->max_batch = STORE_WRITER_DEFAULT_BATCH;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_cond_init(&w->idle, NULL);
    queue_init(&w->pending);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_cond_destroy(&w->idle);
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
    req->replayed = false;
    req->revision = 0;
    buf_init(&req->response);
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

void store_writer_set_max_batch(struct store_writer *w, unsigned max_batch)
{
    pthread_mutex_lock(&w->mu);
    w->max_batch = max_batch > 0 ? max_batch : 1;
    pthread_mutex_unlock(&w->mu);
}

int store_writer_pause(struct store_writer *w, unsigned timeout_ms)
{
    struct timespec deadline;
    clock_mono_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&w->mu);
    w->paused++;
    int rc = 0;
    while (w->busy && rc != ETIMEDOUT) {
        rc = clock_cond_wait_mono(&w->idle, &w->mu, &deadline);
    }
    bool idle = !w->busy;
    pthread_mutex_unlock(&w->mu);
    return idle ? 0 : GERR_TIMEOUT;
}

void store_writer_resume(struct store_writer *w)
{
    pthread_mutex_lock(&w->mu);
    if (w->paused > 0) {
        w->paused--;
    }
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void store_writer_set_linger(struct store_writer *w, unsigned linger_ms)
{
    pthread_mutex_lock(&w->mu);
    w->linger_ms = linger_ms;
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

void store_writer_stats_full(struct store_writer *w, struct store_writer_stats_full *out)
{
    pthread_mutex_lock(&w->mu);
    *out = (struct store_writer_stats_full){.pending = w->n_pending,
                                            .refused = w->refused,
                                            .expired = w->expired,
                                            .batches = w->batches,
                                            .requests = w->requests,
                                            .last_batch = w->last_batch};
    memcpy(out->size_buckets, w->size_buckets, sizeof out->size_buckets);
    memcpy(out->commit_buckets, w->commit_buckets, sizeof out->commit_buckets);
    out->commit_ns_sum = w->commit_ns_sum;
    pthread_mutex_unlock(&w->mu);
}

int store_writer_run_req(struct store_writer *w, struct store_write *req)
{
    struct writer_wait ww = {.done = false};
    pthread_mutex_init(&ww.mu, NULL);
    pthread_cond_init(&ww.cond, NULL);
    req->data = &ww;
    int rv = store_writer_submit(w, req, req->fn, req->arg, wait_cb);
    if (rv == 0) {
        pthread_mutex_lock(&ww.mu);
        while (!ww.done) {
            pthread_cond_wait(&ww.cond, &ww.mu);
        }
        pthread_mutex_unlock(&ww.mu);
        rv = req->status;
    } else if (rv == GERR_UNAVAILABLE) {
        req->status = rv;
        gerr_set(req->errmsg, "the replica's write queue is full (%u writes waiting); retry with backoff",
                 w->max_pending);
    } else {
        req->status = rv;
        gerr_set(req->errmsg, "store writer is stopping");
    }
    pthread_cond_destroy(&ww.cond);
    pthread_mutex_destroy(&ww.mu);
    return rv;
}

int store_writer_run_by(struct store_writer *w, store_tx_fn fn, void *arg, uint64_t deadline_ms, char *errmsg)
{
    struct store_write req;
    memset(&req, 0, sizeof req);
    req.fn = fn;
    req.arg = arg;
    req.deadline_ms = deadline_ms;
    int rv = store_writer_run_req(w, &req);
    if (errmsg != NULL) {
        memcpy(errmsg, req.errmsg, GERR_MSG_SIZE);
    }
    buf_close(&req.response);
    return rv;
}

int store_writer_run(struct store_writer *w, store_tx_fn fn, void *arg, char *errmsg)
{
    return store_writer_run_by(w, fn, arg, 0, errmsg);
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
    pthread_cond_destroy(&w->idle);
    pthread_mutex_destroy(&w->mu);
    store_client_close(&w->client);
    w->started = false;
}
