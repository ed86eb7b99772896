/* Leader-following dqlite client. See client.h for the retry rules.
 *
 * Happy path: the first call finds the leader (LEADER on each known node, follow the redirect,
 * keep the connection whose answer names the address we dialled), OPENs the database, runs a
 * no-op statement so Raft's barrier brings the leader's state machine up to date, refreshes the
 * address list from CLUSTER, and then runs the request. Later calls reuse the connection.
 *
 * Failure modes: no node answers or none knows a leader (backoff and retry until
 * leader_timeout_ms, then GERR_NOLEADER); the leader moves (NOT_LEADER: reconnect and retry, the
 * request was not executed); write contention (BUSY: jittered backoff until busy_timeout_ms);
 * the connection breaks after a write was sent, or LEADERSHIP_LOST (GERR_UNKNOWN_OUTCOME). */
#include "store/client.h"

#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "store/batch.h"
#include "store/sqltext.h"
#include "lib/mem.h"
#include "lib/rand.h"

#define BARRIER_SQL "PRAGMA dqlite_noop_barrier"

int store_client_init(struct store_client *cl, const struct store_client_config *cfg)
{
    memset(cl, 0, sizeof *cl);
    cl->conn.fd = -1;
    if (cfg->n_addresses == 0 || cfg->n_addresses > STORE_MAX_ADDRESSES || cfg->addresses == NULL) {
        gerr_set(cl->errmsg, "store client: need 1 to %u node addresses", STORE_MAX_ADDRESSES);
        return GERR_INVAL;
    }
    for (unsigned i = 0; i < cfg->n_addresses; i++) {
        if (cfg->addresses[i] == NULL || strlen(cfg->addresses[i]) >= sizeof cl->addresses[i]) {
            gerr_set(cl->errmsg, "store client: bad node address #%u", i);
            return GERR_INVAL;
        }
        snprintf(cl->addresses[i], sizeof cl->addresses[i], "%s", cfg->addresses[i]);
    }
    cl->n_addresses = cfg->n_addresses;
    const char *db = cfg->database != NULL ? cfg->database : "gantry";
    if (db[0] == '\0' || strlen(db) >= sizeof cl->database) {
        gerr_set(cl->errmsg, "store client: bad database name");
        return GERR_INVAL;
    }
    snprintf(cl->database, sizeof cl->database, "%s", db);
    cl->connect_timeout_ms = cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : 1000;
    cl->request_timeout_ms = cfg->request_timeout_ms != 0 ? cfg->request_timeout_ms : 10000;
    cl->leader_timeout_ms = cfg->leader_timeout_ms != 0 ? cfg->leader_timeout_ms : 15000;
    cl->busy_timeout_ms = cfg->busy_timeout_ms != 0 ? cfg->busy_timeout_ms : 10000;
    cl->clock = cfg->clock != NULL ? cfg->clock : clock_system();
    cl->dial = cfg->dial;
    cl->dial_arg = cfg->dial_arg;
    cl->stream_dial = cfg->stream_dial;
    return 0;
}

void store_client_disconnect(struct store_client *cl)
{
    if (cl->conn.fd >= 0 || cl->connected) {
        store_conn_close(&cl->conn);
        cl->connected = false;
        cl->leader_id = 0;
    }
}

void store_client_close(struct store_client *cl)
{
    store_client_disconnect(cl);
}

static uint64_t now_ms(struct store_client *cl)
{
    return clock_mono_ms(cl->clock);
}

/* Learn addresses we were not seeded with, so the client survives losing its seeds. */
static void refresh_addresses(struct store_client *cl)
{
    struct proto_node_info *nodes;
    unsigned n;
    cl->refreshed_ms = now_ms(cl);
    if (store_conn_cluster(&cl->conn, &nodes, &n) != 0) {
        return; /* not fatal: the seed list still works */
    }
    for (unsigned i = 0; i < n; i++) {
        bool known = false;
        for (unsigned j = 0; j < cl->n_addresses; j++) {
            if (strcmp(cl->addresses[j], nodes[i].address) == 0) {
                known = true;
                break;
            }
        }
        if (!known && cl->n_addresses < STORE_MAX_ADDRESSES) {
            snprintf(cl->addresses[cl->n_addresses++], sizeof cl->addresses[0], "%s", nodes[i].address);
        }
    }
    mem_free(nodes);
}

/* Dial @address and ask who leads. Returns 0 with the connection kept in cl->conn when @address
 * is the leader; GERR_NOTLEADER with @redirect filled when it names another node; another error
 * otherwise (connection closed). */
static int try_node(struct store_client *cl, const char *address, char *redirect, size_t redirect_len)
{
    struct proto_server leader;
    redirect[0] = '\0';
    int rv = cl->stream_dial != NULL
                 ? store_conn_open_stream(&cl->conn, address, cl->connect_timeout_ms, cl->stream_dial,
                                          cl->dial_arg)
                 : store_conn_open(&cl->conn, address, cl->connect_timeout_ms, cl->dial, cl->dial_arg);
    if (rv != 0) {
        memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
        store_conn_close(&cl->conn);
        return rv;
    }
    cl->conn.timeout_ms = cl->request_timeout_ms < cl->connect_timeout_ms * 2 ? cl->request_timeout_ms
                                                                              : cl->connect_timeout_ms * 2;
    rv = store_conn_leader(&cl->conn, &leader);
    if (rv != 0) {
        memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
        store_conn_close(&cl->conn);
        return rv;
    }
    if (leader.address[0] != '\0' && strcmp(leader.address, address) == 0) {
        cl->leader_id = leader.id;
        cl->conn.timeout_ms = cl->request_timeout_ms;
        return 0;
    }
    store_conn_close(&cl->conn);
    snprintf(redirect, redirect_len, "%s", leader.address);
    if (leader.address[0] == '\0') {
        gerr_set(cl->errmsg, "node %s: knows no leader", address);
        return GERR_NOLEADER;
    }
    return GERR_NOTLEADER;
}

/* Find the leader, once over every known address (following one redirect each). */
static int find_leader_once(struct store_client *cl)
{
    char redirect[256];
    int last = GERR_NOLEADER;
    for (unsigned i = 0; i < cl->n_addresses; i++) {
        int rv = try_node(cl, cl->addresses[i], redirect, sizeof redirect);
        if (rv == 0) {
            return 0;
        }
        if (rv == GERR_NOTLEADER && redirect[0] != '\0') {
            char followed[256];
            snprintf(followed, sizeof followed, "%s", redirect);
            rv = try_node(cl, followed, redirect, sizeof redirect);
            if (rv == 0) {
                return 0;
            }
        }
        last = rv;
    }
    return last;
}

static void backoff_sleep(struct store_client *cl, unsigned *delay_ms, unsigned cap_ms)
{
    unsigned d = *delay_ms;
    uint64_t ms = rand_range(d / 2 + 1, d);
    cl->clock->sleep_ns(cl->clock, ms * 1000000u);
    *delay_ms = d * 2 > cap_ms ? cap_ms : d * 2;
}

static int connect_until(struct store_client *cl, uint64_t deadline)
{
    unsigned delay = 10;
    int rv;

    if (cl->connected) {
        return 0;
    }
    store_client_disconnect(cl);
    for (;;) {
        rv = find_leader_once(cl);
        if (rv == 0) {
            rv = store_conn_open_db(&cl->conn, cl->database);
            if (rv == 0) {
                rv = store_conn_exec_sql(&cl->conn, BARRIER_SQL, NULL, 0, NULL);
            }
            if (rv == 0) {
                cl->connected = true;
                cl->stats.reconnects++;
                refresh_addresses(cl);
                LOG_DEBUG("store: connected to leader %s (id %llu)", cl->conn.address,
                          (unsigned long long)cl->leader_id);
                return 0;
            }
            memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
            store_conn_close(&cl->conn);
        }
        if (now_ms(cl) >= deadline) {
            gerr_wrap(cl->errmsg, "no leader found within %u ms", cl->leader_timeout_ms);
            return GERR_NOLEADER;
        }
        /* Capped low: an election takes a few hundred ms on a LAN, and a long cap makes a
         * client notice the new leader up to a whole period late (failover was bimodal,
         * ~0.55 s or ~1.1 s, with a 1 s cap). A pass is one LEADER request per node. */
        backoff_sleep(cl, &delay, STORE_CLIENT_LEADER_BACKOFF_CAP_MS);
    }
}

int store_client_connect(struct store_client *cl)
{
    return connect_until(cl, now_ms(cl) + cl->leader_timeout_ms);
}

/* ------------------------------------------------------------------------------------------------
 * One request with the retry rules. @op runs on the leader connection. */

typedef int (*leader_op)(struct store_conn *c, void *ctx);

enum op_kind { OP_READ, OP_WRITE };

static int with_leader(struct store_client *cl, enum op_kind kind, leader_op op, void *ctx)
{
    uint64_t start = now_ms(cl);
    uint64_t leader_deadline = start + cl->leader_timeout_ms;
    uint64_t busy_deadline = start + cl->busy_timeout_ms;
    unsigned busy_delay = 8;
    unsigned retry_delay = 10;

    for (;;) {
        int rv = connect_until(cl, leader_deadline);
        if (rv != 0) {
            return rv;
        }
        if (now_ms(cl) - cl->refreshed_ms >= STORE_CLIENT_REFRESH_MS) {
            refresh_addresses(cl);
            if (cl->conn.broken) {
                store_client_disconnect(cl); /* the leader went away under the refresh */
                continue;
            }
        }
        rv = op(&cl->conn, ctx);
        if (rv == 0) {
            return 0;
        }
        memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
        switch (rv) {
        case GERR_BUSY:
            cl->stats.busy_retries++;
            if (now_ms(cl) >= busy_deadline) {
                gerr_wrap(cl->errmsg, "still busy after %u ms", cl->busy_timeout_ms);
                return GERR_BUSY;
            }
            backoff_sleep(cl, &busy_delay, 50);
            continue;
        case GERR_NOTLEADER:
            store_client_disconnect(cl);
            break; /* not executed: retry on the new leader */
        case GERR_UNKNOWN_OUTCOME:
            store_client_disconnect(cl);
            if (kind == OP_WRITE) {
                cl->stats.unknown_outcomes++;
                return GERR_UNKNOWN_OUTCOME;
            }
            break;
        case GERR_CLOSED:
        case GERR_TIMEOUT:
        case GERR_IO:
        case GERR_PROTO: {
            /* conn.c marks the connection broken for all of these. */
            bool sent = cl->conn.sent;
            store_client_disconnect(cl);
            if (kind == OP_WRITE && sent) {
                cl->stats.unknown_outcomes++;
                gerr_wrap(cl->errmsg, "write outcome unknown");
                return GERR_UNKNOWN_OUTCOME;
            }
            break;
        }
        default:
            if (cl->conn.broken) {
                bool sent = cl->conn.sent;
                store_client_disconnect(cl); /* e.g. a result over the size cap */
                if (kind == OP_WRITE && sent) {
                    cl->stats.unknown_outcomes++;
                    gerr_wrap(cl->errmsg, "write outcome unknown");
                    return GERR_UNKNOWN_OUTCOME;
                }
            }
            return rv; /* SQL errors, constraints, refusals, oversized results: final */
        }
        if (now_ms(cl) >= leader_deadline) {
            gerr_wrap(cl->errmsg, "gave up after %u ms", cl->leader_timeout_ms);
            return rv == GERR_NOTLEADER ? GERR_NOLEADER : rv;
        }
        backoff_sleep(cl, &retry_delay, STORE_CLIENT_LEADER_BACKOFF_CAP_MS);
    }
}

struct sql_ctx {
    const char *sql;
    const struct proto_value *params;
    unsigned n;
    struct store_result *res;
    struct proto_rows *rows;
};

static int op_exec(struct store_conn *c, void *arg)
{
    struct sql_ctx *x = arg;
    return store_conn_exec_sql(c, x->sql, x->params, x->n, x->res);
}

static int op_query(struct store_conn *c, void *arg)
{
    struct sql_ctx *x = arg;
    proto_rows_close(x->rows); /* a retry starts from an empty result */
    return store_conn_query_sql(c, x->sql, x->params, x->n, x->rows);
}

static int exec_in_tx(struct store_tx *tx, void *arg)
{
    struct sql_ctx *x = arg;
    return store_tx_exec(tx, x->sql, x->params, x->n, x->res);
}

int store_client_exec(struct store_client *cl, const char *sql, const struct proto_value *params, unsigned n,
                      struct store_result *res)
{
    struct sql_ctx x = {sql, params, n, res, NULL};
    if (sql != NULL && !proto_sql_is_single_statement(sql)) {
        /* In autocommit every statement commits on its own, so a BUSY or NOT_LEADER on the k-th
         * means the first k-1 are in: retrying the text would repeat them. One transaction makes
         * the text atomic, and then retrying it whole is safe. */
        return store_client_tx(cl, exec_in_tx, &x);
    }
    return with_leader(cl, OP_WRITE, op_exec, &x);
}

int store_client_query(struct store_client *cl, const char *sql, const struct proto_value *params, unsigned n,
                       struct proto_rows *rows)
{
    struct sql_ctx x = {sql, params, n, NULL, rows};
    return with_leader(cl, OP_READ, op_query, &x);
}

static int first_int(const struct proto_rows *rows, int64_t *out, char *errmsg)
{
    if (rows->n_rows == 0 || rows->n_cols == 0) {
        gerr_set(errmsg, "query returned no row");
        return GERR_NOTFOUND;
    }
    const struct proto_value *v = proto_rows_at(rows, 0, 0);
    if (v->type == PROTO_NULL) {
        *out = 0;
        return 0;
    }
    if (v->type != PROTO_INTEGER && v->type != PROTO_BOOLEAN && v->type != PROTO_UNIXTIME) {
        gerr_set(errmsg, "query returned a non-integer value (type %d)", v->type);
        return GERR_SQL;
    }
    *out = v->u.i;
    return 0;
}

int store_client_query_int(struct store_client *cl, const char *sql, const struct proto_value *params,
                           unsigned n, int64_t *out)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(cl, sql, params, n, &rows);
    if (rv == 0) {
        rv = first_int(&rows, out, cl->errmsg);
    }
    proto_rows_close(&rows);
    return rv;
}

/* ------------------------------------------------------------------------------------------------
 * Transactions */

int store_tx_exec(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                  struct store_result *res)
{
    if (tx->batch != NULL && tx->batch->savepoints && !tx->batch->savepoint_open) {
        struct store_stmt st = {sql, params, n};
        return store_batch__exec(tx, &st, 1, res);
    }
    int rv = store_conn_exec_sql(&tx->cl->conn, sql, params, n, res);
    if (rv != 0) {
        memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
    }
    return rv;
}

int store_tx_exec_many(struct store_tx *tx, const struct store_stmt *stmts, unsigned n,
                       struct store_result *res)
{
    if (tx->batch != NULL) {
        return store_batch__exec(tx, stmts, n, res);
    }
    struct buf sql;
    buf_init(&sql);
    int rv = 0;
    for (unsigned i = 0; rv == 0 && i < n; i++) {
        rv = store__sql_append(&sql, stmts[i].sql, stmts[i].params, stmts[i].n);
    }
    if (rv != 0) {
        gerr_set(tx->cl->errmsg, "a statement's values cannot be written as SQL literals");
    } else {
        buf_put_u8(&sql, 0);
        rv = store_conn_exec_sql(&tx->cl->conn, (const char *)sql.data, NULL, 0, res);
        if (rv != 0) {
            memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
        }
    }
    buf_close(&sql);
    return rv;
}

int store_tx_query(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                   struct proto_rows *rows)
{
    int rv = store_conn_query_sql(&tx->cl->conn, sql, params, n, rows);
    if (rv != 0) {
        memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
    }
    return rv;
}

int store_tx_query_prepared(struct store_tx *tx, const char *sql, const struct proto_value *params,
                            unsigned n, struct proto_rows *rows)
{
    int rv = store_conn_query_prepared(&tx->cl->conn, sql, params, n, rows);
    if (rv != 0) {
        memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
    }
    return rv;
}

/* The _int forms: the first column of the first row of a query that returned @rv, @rows closed. */
static int tx_int_of(struct store_tx *tx, int rv, struct proto_rows *rows, int64_t *out)
{
    if (rv == 0) {
        rv = first_int(rows, out, tx->cl->errmsg);
    }
    proto_rows_close(rows);
    return rv;
}

int store_tx_query_prepared_int(struct store_tx *tx, const char *sql, const struct proto_value *params,
                                unsigned n, int64_t *out)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    return tx_int_of(tx, store_tx_query_prepared(tx, sql, params, n, &rows), &rows, out);
}

int store_tx_query_int(struct store_tx *tx, const char *sql, const struct proto_value *params, unsigned n,
                       int64_t *out)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    return tx_int_of(tx, store_tx_query(tx, sql, params, n, &rows), &rows, out);
}

char *store_tx_errmsg(struct store_tx *tx)
{
    return tx->cl->errmsg;
}

/* Errors after which the whole transaction can run again: nothing of it committed. */
static bool tx_retryable(int rv)
{
    switch (rv) {
    case GERR_BUSY:
    case GERR_NOTLEADER:
    case GERR_CLOSED:
    case GERR_TIMEOUT:
    case GERR_IO:
    case GERR_PROTO:
    case GERR_UNKNOWN_OUTCOME: /* from a statement before COMMIT: rolled back with the leader */
        return true;
    default:
        return false;
    }
}

static void tx_rollback(struct store_client *cl)
{
    char saved[GERR_MSG_SIZE];
    if (!cl->connected || cl->conn.broken) {
        store_client_disconnect(cl); /* closing the connection rolls the transaction back */
        return;
    }
    memcpy(saved, cl->errmsg, sizeof saved);
    if (store_conn_exec_sql(&cl->conn, "ROLLBACK", NULL, 0, NULL) != 0 && cl->conn.broken) {
        store_client_disconnect(cl);
    }
    memcpy(cl->errmsg, saved, sizeof saved);
}

int store_client_tx(struct store_client *cl, store_tx_fn fn, void *arg)
{
    uint64_t start = now_ms(cl);
    uint64_t deadline =
        start + (cl->busy_timeout_ms > cl->leader_timeout_ms ? cl->busy_timeout_ms : cl->leader_timeout_ms);
    struct store_tx tx = {.cl = cl, .batch = NULL};
    unsigned busy_delay = 8;
    unsigned retry_delay = 10;
    int rv;

    for (;;) {
        rv = connect_until(cl, deadline);
        if (rv != 0) {
            return rv;
        }
        rv = store_conn_exec_sql(&cl->conn, "BEGIN IMMEDIATE", NULL, 0, NULL);
        if (rv != 0) {
            memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
            gerr_wrap(cl->errmsg, "BEGIN");
        } else {
            cl->errmsg[0] = '\0';
            rv = fn(&tx, arg);
            if (rv == 0) {
                uint64_t commit_start = cl->clock->mono_ns(cl->clock);
                rv = store_conn_exec_sql(&cl->conn, "COMMIT", NULL, 0, NULL);
                if (rv == 0) {
                    cl->stats.last_commit_ns = cl->clock->mono_ns(cl->clock) - commit_start;
                    return 0;
                }
                memcpy(cl->errmsg, cl->conn.errmsg, sizeof cl->errmsg);
                bool sent = cl->conn.sent;
                if (rv == GERR_UNKNOWN_OUTCOME || (cl->conn.broken && sent)) {
                    store_client_disconnect(cl);
                    cl->stats.unknown_outcomes++;
                    gerr_wrap(cl->errmsg, "COMMIT outcome unknown");
                    return GERR_UNKNOWN_OUTCOME;
                }
                gerr_wrap(cl->errmsg, "COMMIT");
            }
            tx_rollback(cl);
        }
        if (!tx_retryable(rv)) {
            return rv;
        }
        if (rv == GERR_BUSY) {
            cl->stats.busy_retries++;
        } else {
            store_client_disconnect(cl);
        }
        if (now_ms(cl) >= deadline) {
            gerr_wrap(cl->errmsg, "transaction gave up after %llu ms",
                      (unsigned long long)(now_ms(cl) - start));
            return rv == GERR_NOTLEADER ? GERR_NOLEADER : rv;
        }
        if (rv == GERR_BUSY) {
            backoff_sleep(cl, &busy_delay, 50);
        } else {
            backoff_sleep(cl, &retry_delay, STORE_CLIENT_LEADER_BACKOFF_CAP_MS);
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Cluster operations */

struct admin_ctx {
    int what;
    uint64_t id;
    const char *address;
    int role;
    struct proto_node_info **nodes;
    unsigned *n;
    const char *dir;
    const char *db;
};

enum { ADMIN_CLUSTER, ADMIN_ADD, ADMIN_ASSIGN, ADMIN_REMOVE, ADMIN_TRANSFER, ADMIN_DUMP };

static int op_admin(struct store_conn *c, void *arg)
{
    struct admin_ctx *x = arg;
    int rv;
    switch (x->what) {
    case ADMIN_CLUSTER:
        return store_conn_cluster(c, x->nodes, x->n);
    case ADMIN_ADD:
        return store_conn_add(c, x->id, x->address);
    case ADMIN_ASSIGN:
        return store_conn_assign(c, x->id, x->role);
    case ADMIN_REMOVE:
        return store_conn_remove(c, x->id);
    case ADMIN_TRANSFER:
        return store_conn_transfer(c, x->id);
    case ADMIN_DUMP:
        /* A barrier right before the dump makes it include everything committed so far. */
        rv = store_conn_exec_sql(c, BARRIER_SQL, NULL, 0, NULL);
        return rv != 0 ? rv : store_conn_dump(c, x->db, x->dir);
    default:
        return GERR_INVAL;
    }
}

int store_client_cluster(struct store_client *cl, struct proto_node_info **nodes, unsigned *n)
{
    struct admin_ctx x = {.what = ADMIN_CLUSTER, .nodes = nodes, .n = n};
    return with_leader(cl, OP_READ, op_admin, &x);
}

/* A membership change through this client: learn the new list at once. */
static int membership_change(struct store_client *cl, struct admin_ctx *x)
{
    int rv = with_leader(cl, OP_WRITE, op_admin, x);
    if (rv == 0 && cl->connected) {
        refresh_addresses(cl);
    }
    return rv;
}

int store_client_add(struct store_client *cl, uint64_t id, const char *address)
{
    struct admin_ctx x = {.what = ADMIN_ADD, .id = id, .address = address};
    return membership_change(cl, &x);
}

int store_client_assign(struct store_client *cl, uint64_t id, int role)
{
    struct admin_ctx x = {.what = ADMIN_ASSIGN, .id = id, .role = role};
    return membership_change(cl, &x);
}

int store_client_remove(struct store_client *cl, uint64_t id)
{
    struct admin_ctx x = {.what = ADMIN_REMOVE, .id = id};
    return membership_change(cl, &x);
}

int store_client_transfer(struct store_client *cl, uint64_t target_id)
{
    struct admin_ctx x = {.what = ADMIN_TRANSFER, .id = target_id};
    int rv = with_leader(cl, OP_WRITE, op_admin, &x);
    if (rv == 0) {
        store_client_disconnect(cl); /* we were talking to the old leader */
    }
    return rv;
}

int store_client_dump(struct store_client *cl, const char *dir)
{
    struct admin_ctx x = {.what = ADMIN_DUMP, .dir = dir, .db = cl->database};
    return with_leader(cl, OP_READ, op_admin, &x);
}
