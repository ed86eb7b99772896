/* A client of a dqlite cluster that finds and follows the leader.
 *
 * It holds at most one connection, always to the node it believes is the leader, with the
 * database open and a Raft barrier issued (a no-op statement) before anything else runs on it.
 * Leader discovery follows go-dqlite: ask each known node LEADER, keep the connection when the
 * answer is string-equal to the address dialled, follow a redirect otherwise; full passes repeat
 * with jittered exponential backoff (10 ms doubling to STORE_CLIENT_LEADER_BACKOFF_CAP_MS) until
 * leader_timeout_ms. The address
 * list is refreshed from CLUSTER after connecting, after every membership change made through
 * this client, and before a request when the last refresh is older than
 * STORE_CLIENT_REFRESH_MS, so a client seeded with one address survives that node's loss.
 *
 * Retry rules (dqlite-protocol.md 1.10 and 4.3):
 *  - connection failures before a request is sent, NOT_LEADER (not executed): reconnect, retry.
 *  - SQLITE_BUSY, "checkpoint in progress": jittered backoff (1..8 ms, doubling to 50 ms), retry
 *    until busy_timeout_ms, then GERR_BUSY.
 *  - LEADERSHIP_LOST, a disk-write failure, or any I/O error or timeout after a *write* was sent:
 *    GERR_UNKNOWN_OUTCOME. The connection is dropped (the next call reconnects); the caller decides
 *    with its idempotency key. Reads are retried instead, since they change nothing.
 *
 * Thread safety: one thread at a time per client. Use store_pool for several readers and
 * store_writer for the one writer per replica. */
#ifndef GANTRY_STORE_CLIENT_H
#define GANTRY_STORE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "store/conn.h"

#define STORE_MAX_ADDRESSES                16u
#define STORE_CLIENT_REFRESH_MS            10000u
#define STORE_CLIENT_LEADER_BACKOFF_CAP_MS 200u

struct store_client_config {
    const char *const *addresses; /* seed list ("a.b.c.d:port"), copied */
    unsigned n_addresses;
    const char *database;        /* copied; default "gantry" when NULL */
    unsigned connect_timeout_ms; /* default 1000 */
    unsigned request_timeout_ms; /* default 10000: above 2x the election timeout plus margin */
    unsigned leader_timeout_ms;  /* total time to find a leader, default 15000 */
    unsigned busy_timeout_ms;    /* total time to retry BUSY, default 10000 */
    struct clock *clock;         /* default clock_system() */
    store_dial_fn dial;          /* default plain TCP (store_conn_tcp_dial) */
    void *dial_arg;
    /* Instead of @dial when set (with @dial_arg): a dialer that may hand back a stream
     * (store/conn.h), e.g. mutual TLS on the caller's thread with no relay hop. */
    store_stream_dial_fn stream_dial;
};

struct store_client_stats {
    uint64_t busy_retries;
    uint64_t reconnects;
    uint64_t unknown_outcomes;
    uint64_t last_commit_ns; /* the round trip of the last successful COMMIT of store_client_tx
                              * (the leader replicating the transaction to a quorum) */
};

struct store_client {
    char addresses[STORE_MAX_ADDRESSES][256];
    unsigned n_addresses;
    char database[128];
    unsigned connect_timeout_ms, request_timeout_ms, leader_timeout_ms, busy_timeout_ms;
    struct clock *clock;
    store_dial_fn dial;
    void *dial_arg;
    store_stream_dial_fn stream_dial;
    struct store_conn conn;
    bool connected;        /* conn is open to the leader, db open, barrier done */
    uint64_t refreshed_ms; /* when the address list was last refreshed from CLUSTER */
    uint64_t leader_id;
    struct store_client_stats stats;
    char errmsg[GERR_MSG_SIZE];
};

/* Copies the configuration; does not connect. Returns 0 or GERR_INVAL (no address, an address
 * longer than 255 bytes, more than STORE_MAX_ADDRESSES). */
int store_client_init(struct store_client *cl, const struct store_client_config *cfg);
void store_client_close(struct store_client *cl);

/* Connect to the leader now (otherwise the first call does). GERR_NOLEADER after leader_timeout_ms. */
int store_client_connect(struct store_client *cl);
/* Drop the current connection (the next call rediscovers the leader). */
void store_client_disconnect(struct store_client *cl);

/* A statement on the leader, autocommit, with the retry rules above. Text with several statements
 * runs as one transaction (store_client_tx), so it commits whole or not at all and a retry never
 * repeats part of it; such text must not contain BEGIN/COMMIT itself. @params bind to the first
 * statement; @res describes the last. */
int store_client_exec(struct store_client *cl, const char *sql, const struct proto_value *params, unsigned n,
                      struct store_result *res);
/* One read-only statement on the leader, retried across reconnects. @rows initialised by the caller. */
int store_client_query(struct store_client *cl, const char *sql, const struct proto_value *params, unsigned n,
                       struct proto_rows *rows);
/* Convenience: the first column of the first row as an integer; GERR_NOTFOUND if no row. */
int store_client_query_int(struct store_client *cl, const char *sql, const struct proto_value *params,
                           unsigned n, int64_t *out);

/* ---- Transactions. @fn runs between BEGIN IMMEDIATE and COMMIT on the leader connection and
 * uses only store_tx_* calls. It returns 0 to commit or an error to roll back. If it (or BEGIN,
 * or COMMIT) fails with a retryable error (BUSY, NOT_LEADER, a dropped connection before COMMIT),
 * the whole transaction is rolled back and @fn runs again from the start, so @fn must derive
 * everything it writes from what it reads inside the transaction and from @arg. A COMMIT whose
 * outcome is unknown returns GERR_UNKNOWN_OUTCOME. Any other error from @fn is returned as is
 * after ROLLBACK; @fn's message is in cl->errmsg if it put one there via store_tx_errmsg. */
struct store_batch;
struct store_tx {
    struct store_client *cl;
    struct store_batch *batch; /* set when @fn runs as one call of a writer batch (store/writer.h) */
};
typedef int (*store_tx_fn)(struct store_tx *tx, void *arg);

int store_client_tx(struct store_client *cl, store_tx_fn fn, void *arg);
int store_tx_exec(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                  struct store_result *res);
int store_tx_query(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                   struct proto_rows *rows);
int store_tx_query_int(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                       int64_t *out);
/* store_tx_query of a statement prepared once per leader connection (store_conn_query_prepared):
 * for the hot reads of the write path, with a fixed text (the text is the cache's key). */
int store_tx_query_prepared(struct store_tx *tx, const char *sql, const struct proto_value *params,
                            unsigned n, struct proto_rows *rows);
/* store_tx_query_int's form of it. */
int store_tx_query_prepared_int(struct store_tx *tx, const char *sql, const struct proto_value *params,
                                unsigned n, int64_t *out);
/* Where @fn writes its own failure message (GERR_MSG_SIZE bytes). */
char *store_tx_errmsg(struct store_tx *tx);

/* Append-only rows (audit events, change events, idempotency records) that nothing in the same
 * transaction reads back: inside a writer batch they are kept in memory and written at the end of
 * the batch as multi-row INSERTs (dropped with the call's savepoint when the call fails); outside a
 * batch the row is inserted at once. @row holds @t->ncols values, copied. */
struct store_table {
    const char *insert; /* "INSERT INTO audit (a, b, c) VALUES": the values are appended */
    unsigned ncols;
};
int store_tx_insert(struct store_tx *tx, const struct store_table *t, const struct proto_value *row);

/* Several write statements, each with its own parameters, in one round trip (their values are
 * written into the SQL text as literals, store/sqltext.h). Inside a writer batch the first write of
 * a call also opens its savepoint in the same request. @res describes the last statement. */
struct store_stmt {
    const char *sql;
    const struct proto_value *params;
    unsigned n;
};
int store_tx_exec_many(struct store_tx *tx, const struct store_stmt *stmts, unsigned n,
                       struct store_result *res);

/* Inside a writer batch: the cluster revision as the caller just read it in this transaction, so the
 * batch's first change event need not read it again (ignored once the batch has it). */
void store_tx_seed_revision(struct store_tx *tx, int64_t revision);

/* What a call of a writer batch answers, for its idempotency record (store/writer.h): the packed
 * response (copied) and the revision of its change. Ignored outside a batch. */
void store_tx_set_result(struct store_tx *tx, const void *response, size_t len, int64_t revision);

/* Memos: what a call of a writer batch read, with its own writes applied, left for the batch's
 * later calls of its memo class (store_write.memo_class, store/writer.h) so that they need not read
 * it again: a value under a text key (at most STORE_MEMO_KEY_MAX bytes), owned by the batch and
 * freed with @free_fn. The writer drops every memo when an attempt of the transaction starts,
 * before a call of another class (or of none) runs, and after any call fails. So while a memo
 * lives, only successful calls of its class ran since it was set, and each of them must have kept
 * it true (updated it before returning success) for everything it describes.
 * store_tx_memo: the value under @key, or NULL (always NULL outside a writer batch).
 * store_tx_memo_set: true if the batch took @v (a value already under @key is freed); false
 * outside a writer batch or for a key too long, and the caller keeps @v. */
#define STORE_MEMO_KEY_MAX 128
void *store_tx_memo(struct store_tx *tx, const char *key);
bool store_tx_memo_set(struct store_tx *tx, const char *key, void *v, void (*free_fn)(void *));

/* ---- Cluster operations, sent to the leader (reconnecting as needed). */
int store_client_cluster(struct store_client *cl, struct proto_node_info **nodes, unsigned *n);
int store_client_add(struct store_client *cl, uint64_t id, const char *address);
int store_client_assign(struct store_client *cl, uint64_t id, int role);
int store_client_remove(struct store_client *cl, uint64_t id);
int store_client_transfer(struct store_client *cl, uint64_t target_id);
/* Consistent online backup taken from the leader right after a barrier: @dir/<db>, @dir/<db>-wal. */
int store_client_dump(struct store_client *cl, const char *dir);

#endif
