/* A writer batch: several calls in one transaction (internal to store/; the contract for callers is
 * store/writer.h and the store_tx_* functions of store/client.h).
 *
 * The writer runs each call's function inside the batch's transaction, in its own savepoint when
 * the batch holds more than one call. What the calls defer lives here until the end of the batch:
 *   - append-only rows (store_tx_insert), grouped by table, with the call that produced each;
 *   - change-event revisions: the first event of the batch reads the cluster revision once, the
 *     next ones count on from it in memory, and the end writes the last one back;
 *   - each call's result (response and revision) for its idempotency record.
 * A call that fails is rolled back to its savepoint and its deferred rows, revisions and result are
 * dropped with it (store_batch__rollback), so revisions stay gap-free. */
#ifndef GANTRY_STORE_BATCH_H
#define GANTRY_STORE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "store/sqltext.h"
#include "store/client.h"

#define STORE_BATCH_TABLES 8u

struct store_batch_row {
    unsigned call;
    struct proto_value *v; /* ncols values; text and blobs point into the row's own copies */
};

struct store_batch_table {
    const struct store_table *t;
    struct store_batch_row *rows;
    size_t n, cap;
};

struct store_batch_result {
    bool set;
    struct buf response;
    int64_t revision;
};

struct store_batch_memo {
    char *key;
    void *v;
    void (*free_fn)(void *);
};

struct store_batch {
    unsigned n_calls;
    unsigned call;       /* the call running now */
    bool savepoints;     /* calls run in savepoints (more than one call in the batch) */
    bool savepoint_open; /* the running call's savepoint exists (opened with its first write) */
    bool have_revision;
    int64_t base_revision, revision; /* revision: the last one assigned (== base: none) */
    struct store_batch_table tables[STORE_BATCH_TABLES];
    unsigned n_tables;
    struct store_batch_result *results; /* n_calls */
    /* store_tx_memo: the memos, and the memo class of the calls that ran since they were dropped. */
    struct store_batch_memo *memos;
    size_t n_memos, cap_memos;
    const char *memo_class;
};

struct store_batch_mark {
    int64_t revision;
    size_t rows[STORE_BATCH_TABLES];
};

void store_batch__init(struct store_batch *b, unsigned n_calls);
void store_batch__close(struct store_batch *b);

/* Forget everything deferred, memos included: the start of a new attempt of the whole transaction. */
void store_batch__reset(struct store_batch *b);

/* Free every memo (store_tx_memo) and forget the memo class. */
void store_batch__drop_memos(struct store_batch *b);

/* Before a call runs, and to drop what it deferred when it fails. */
void store_batch__mark(const struct store_batch *b, struct store_batch_mark *m);
void store_batch__rollback(struct store_batch *b, const struct store_batch_mark *m);

/* The next revision for a change event of the running call (reads the cluster revision on first
 * use in an attempt). The store's errors. */
int store_batch__next_revision(struct store_tx *tx, int64_t *rev);

/* Set column @col of the last deferred row of @t whose integer column @key_col is @key (the value
 * is copied). GERR_NOTFOUND if there is none. */
int store_batch__set_value(struct store_batch *b, const struct store_table *t, unsigned key_col, int64_t key,
                           unsigned col, const struct proto_value *value);

/* At the end: the cluster revision and every deferred row, several rows per statement, all in as few
 * requests as the text allows (store/sqltext.h). */
int store_batch__flush(struct store_tx *tx);

/* store_tx_exec and store_tx_exec_many inside a batch: the running call's first write opens its
 * savepoint in the same request ("SAVEPOINT c<call>; <statements with literals>"). */
int store_batch__exec(struct store_tx *tx, const struct store_stmt *stmts, unsigned n,
                      struct store_result *res);

/* The savepoint of the running call, for its ROLLBACK TO when it fails ("c<call>"). */
void store_batch__savepoint_name(const struct store_batch *b, char out[16]);

#endif
