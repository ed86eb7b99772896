/* The store client against a real 3-process cluster: SQL with every value type, transactions,
 * prepared statements, large results, membership, backup, leadership transfer. The tests run in
 * order on one cluster; the last one checks that no acknowledged write is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "it_common.h"
#include "lib/mem.h"

static struct cluster cluster;
static struct store_client client;
static char errmsg[GERR_MSG_SIZE];

/* Every acknowledged INSERT into kv, to check at the end. */
#define MAX_ACKED 8192
static int64_t acked[MAX_ACKED];
static unsigned n_acked;

static int group_setup(void **state)
{
    struct cluster_opts o = {.node_bin = it_node_bin()};
    (void)state;
    if (cluster_start(&cluster, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    struct store_client_config cfg = {.leader_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    if (store_client_init(&client, &cfg) != 0) {
        fprintf(stderr, "store_client_init: %s\n", client.errmsg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    store_client_close(&client);
    if (cluster_stop_checked(&cluster, errmsg) != 0) {
        fprintf(stderr, "cluster_stop: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static void check_alive(void)
{
    IT_CHECK(&cluster, cluster_check_alive(&cluster, errmsg), errmsg);
}

static void kv_insert(int64_t id, const char *v)
{
    struct proto_value p[2] = {proto_int(id), proto_text(v)};
    struct store_result res;
    IT_CHECK(&cluster, store_client_exec(&client, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2, &res),
             client.errmsg);
    assert_int_equal(res.rows_affected, 1);
    assert_int_equal(res.last_insert_id, id);
    assert_true(n_acked < MAX_ACKED);
    acked[n_acked++] = id;
}

static void test_exec(void **state)
{
    (void)state;
    IT_CHECK(&cluster, store_client_connect(&client), client.errmsg);
    IT_CHECK(&cluster,
             store_client_exec(&client, "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT",
                               NULL, 0, NULL),
             client.errmsg);
    for (int64_t id = 1; id <= 20; id++) {
        kv_insert(id, "first");
    }
    /* A constraint violation is final, changes nothing and leaves the client usable. */
    struct proto_value dup[2] = {proto_int(1), proto_text("dup")};
    assert_int_equal(store_client_exec(&client, "INSERT INTO kv (id, v) VALUES (?, ?)", dup, 2, NULL),
                     GERR_CONSTRAINT);
    int64_t count;
    IT_CHECK(&cluster, store_client_query_int(&client, "SELECT count(*) FROM kv", NULL, 0, &count),
             client.errmsg);
    assert_int_equal(count, 20);
    /* Writes through QUERY would crash a 1.11 leader: the client refuses them. */
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    assert_int_equal(
        store_client_query(&client, "INSERT INTO kv (id, v) VALUES (99, 'x') RETURNING id", NULL, 0, &rows),
        GERR_REFUSED);
    proto_rows_close(&rows);
    check_alive();
}

static void check_value(const struct proto_value *v, const struct proto_value *want)
{
    assert_int_equal(v->type, want->type);
    switch (want->type) {
    case PROTO_INTEGER:
        assert_int_equal(v->u.i, want->u.i);
        break;
    case PROTO_FLOAT:
        assert_true(v->u.f == want->u.f);
        break;
    case PROTO_TEXT:
    case PROTO_BLOB:
        assert_int_equal(v->u.b.n, want->u.b.n);
        assert_memory_equal(v->u.b.s, want->u.b.s, want->u.b.n);
        break;
    default:
        break;
    }
}

static void test_value_types(void **state)
{
    static const uint8_t blob[] = {0, 1, 2, 0xff, 0, 0x80, 7, 8, 9};
    struct proto_value params[5] = {proto_int(INT64_MIN + 1), proto_float(-3.5e300),
                                    proto_text("h\xc3\xa9llo, \"world\"'"), proto_blob(blob, sizeof blob),
                                    proto_null()};
    struct proto_rows rows;
    (void)state;

    IT_CHECK(
        &cluster,
        store_client_exec(
            &client,
            "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, f REAL, t TEXT, b BLOB, n TEXT) STRICT",
            NULL, 0, NULL),
        client.errmsg);
    struct proto_value ins[6] = {proto_int(1), params[0], params[1], params[2], params[3], params[4]};
    IT_CHECK(&cluster, store_client_exec(&client, "INSERT INTO vals VALUES (?, ?, ?, ?, ?, ?)", ins, 6, NULL),
             client.errmsg);

    /* Stored values come back with their types. */
    proto_rows_init(&rows, 0);
    struct proto_value key = proto_int(1);
    IT_CHECK(&cluster,
             store_client_query(&client, "SELECT i, f, t, b, n FROM vals WHERE id = ?", &key, 1, &rows),
             client.errmsg);
    assert_int_equal(rows.n_rows, 1);
    assert_int_equal(rows.n_cols, 5);
    assert_string_equal(rows.cols[0], "i");
    assert_string_equal(rows.cols[4], "n");
    for (unsigned c = 0; c < 5; c++) {
        check_value(proto_rows_at(&rows, 0, c), &params[c]);
    }
    proto_rows_close(&rows);

    /* Parameters echoed straight back, and an empty text and blob. */
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster, store_client_query(&client, "SELECT ?, ?, ?, ?, ?", params, 5, &rows), client.errmsg);
    assert_int_equal(rows.n_rows, 1);
    for (unsigned c = 0; c < 5; c++) {
        check_value(proto_rows_at(&rows, 0, c), &params[c]);
    }
    proto_rows_close(&rows);
    struct proto_value empty[2] = {proto_text(""), proto_blob(NULL, 0)};
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster, store_client_query(&client, "SELECT ?, ?", empty, 2, &rows), client.errmsg);
    check_value(proto_rows_at(&rows, 0, 0), &empty[0]);
    assert_int_equal(proto_rows_at(&rows, 0, 1)->type, PROTO_BLOB);
    assert_int_equal(proto_rows_at(&rows, 0, 1)->u.b.n, 0);
    proto_rows_close(&rows);
    /* 16 columns are fine; 17 are refused (a dqlite 1.11 node can overflow its buffer on them),
     * and the connection stays usable. */
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster,
             store_client_query(&client, "SELECT 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", NULL, 0, &rows),
             client.errmsg);
    assert_int_equal(rows.n_cols, STORE_MAX_RESULT_COLUMNS);
    proto_rows_close(&rows);
    proto_rows_init(&rows, 0);
    assert_int_equal(
        store_client_query(&client, "SELECT 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", NULL, 0, &rows),
        GERR_REFUSED);
    assert_non_null(strstr(client.errmsg, "17 columns"));
    proto_rows_close(&rows);
    int64_t one = 0;
    IT_CHECK(&cluster, store_client_query_int(&client, "SELECT 1", NULL, 0, &one), client.errmsg);
    assert_int_equal(one, 1);
    check_alive();
}

struct tx_arg {
    int64_t first;
    int fail_with;
};

static int tx_insert_two(struct store_tx *tx, void *arg)
{
    struct tx_arg *a = arg;
    for (int64_t id = a->first; id < a->first + 2; id++) {
        struct proto_value p[2] = {proto_int(id), proto_text("tx")};
        int rv = store_tx_exec(tx, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2, NULL);
        if (rv != 0) {
            return rv;
        }
    }
    if (a->fail_with != 0) {
        gerr_set(store_tx_errmsg(tx), "rolled back on purpose");
    }
    return a->fail_with;
}

static void test_transactions(void **state)
{
    int64_t count;
    (void)state;

    struct tx_arg commit = {.first = 100};
    IT_CHECK(&cluster, store_client_tx(&client, tx_insert_two, &commit), client.errmsg);
    acked[n_acked++] = 100;
    acked[n_acked++] = 101;
    IT_CHECK(
        &cluster,
        store_client_query_int(&client, "SELECT count(*) FROM kv WHERE id IN (100, 101)", NULL, 0, &count),
        client.errmsg);
    assert_int_equal(count, 2);

    struct tx_arg rollback = {.first = 200, .fail_with = GERR_ABORTED};
    assert_int_equal(store_client_tx(&client, tx_insert_two, &rollback), GERR_ABORTED);
    assert_non_null(strstr(client.errmsg, "on purpose"));
    IT_CHECK(
        &cluster,
        store_client_query_int(&client, "SELECT count(*) FROM kv WHERE id IN (200, 201)", NULL, 0, &count),
        client.errmsg);
    assert_int_equal(count, 0);

    /* A statement failing inside the transaction rolls all of it back (id 1 exists). */
    struct tx_arg dup = {.first = 0};
    assert_int_equal(store_client_tx(&client, tx_insert_two, &dup), GERR_CONSTRAINT);
    IT_CHECK(&cluster,
             store_client_query_int(&client, "SELECT count(*) FROM kv WHERE id = 0", NULL, 0, &count),
             client.errmsg);
    assert_int_equal(count, 0);
    /* And the write lock was released: a plain write goes through at once. */
    kv_insert(300, "after rollback");
    check_alive();
}

static int tx_bulk(struct store_tx *tx, void *arg)
{
    (void)arg;
    for (int64_t id = 1; id <= 3000; id++) {
        char text[64];
        snprintf(text, sizeof text, "row %" PRId64 " with some padding to fill the batches", id);
        struct proto_value p[2] = {proto_int(id), proto_text(text)};
        int rv = store_tx_exec(tx, "INSERT INTO bulk (id, v) VALUES (?, ?)", p, 2, NULL);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static void test_large_result(void **state)
{
    struct proto_rows rows;
    (void)state;
    IT_CHECK(&cluster,
             store_client_exec(&client, "CREATE TABLE bulk (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT",
                               NULL, 0, NULL),
             client.errmsg);
    IT_CHECK(&cluster, store_client_tx(&client, tx_bulk, NULL), client.errmsg);
    proto_rows_init(&rows, 0);
    /* ~3000 x 60 bytes: dozens of PART batches from the server. */
    IT_CHECK(&cluster, store_client_query(&client, "SELECT id, v FROM bulk ORDER BY id", NULL, 0, &rows),
             client.errmsg);
    assert_int_equal(rows.n_rows, 3000);
    for (size_t r = 0; r < rows.n_rows; r++) {
        assert_int_equal(proto_rows_at(&rows, r, 0)->u.i, (int64_t)r + 1);
    }
    proto_rows_close(&rows);
    /* The connection is still in step afterwards. */
    int64_t one;
    IT_CHECK(&cluster, store_client_query_int(&client, "SELECT 1", NULL, 0, &one), client.errmsg);
    assert_int_equal(one, 1);
    check_alive();
}

static void test_prepared(void **state)
{
    struct store_conn conn;
    uint32_t ins, sel, bad;
    uint64_t n_params;
    struct proto_rows rows;
    (void)state;

    IT_CHECK(&cluster, store_client_connect(&client), client.errmsg);
    IT_CHECK(&cluster, store_conn_open(&conn, client.conn.address, 10000, NULL, NULL), conn.errmsg);
    IT_CHECK(&cluster, store_conn_open_db(&conn, client.database), conn.errmsg);
    IT_CHECK(&cluster, store_conn_prepare(&conn, "INSERT INTO kv (id, v) VALUES (?, ?)", &ins, &n_params),
             conn.errmsg);
    assert_int_equal(n_params, 2);
    for (int64_t id = 400; id < 410; id++) {
        struct proto_value p[2] = {proto_int(id), proto_text("prepared")};
        struct store_result res;
        IT_CHECK(&cluster, store_conn_exec(&conn, ins, p, 2, &res), conn.errmsg);
        assert_int_equal(res.rows_affected, 1);
        acked[n_acked++] = id;
    }
    IT_CHECK(&cluster,
             store_conn_prepare_query(&conn, "SELECT count(*) FROM kv WHERE v = ?", &sel, &n_params),
             conn.errmsg);
    assert_int_equal(n_params, 1);
    struct proto_value v = proto_text("prepared");
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster, store_conn_query(&conn, sel, &v, 1, &rows), conn.errmsg);
    assert_int_equal(rows.n_rows, 1);
    assert_int_equal(proto_rows_at(&rows, 0, 0)->u.i, 10);
    proto_rows_close(&rows);
    /* Statements are reusable; a second run binds afresh. */
    proto_rows_init(&rows, 0);
    v = proto_text("nothing");
    IT_CHECK(&cluster, store_conn_query(&conn, sel, &v, 1, &rows), conn.errmsg);
    assert_int_equal(proto_rows_at(&rows, 0, 0)->u.i, 0);
    proto_rows_close(&rows);
    /* A write cannot be prepared for QUERY. */
    assert_int_equal(store_conn_prepare_query(&conn, "DELETE FROM kv", &bad, &n_params), GERR_REFUSED);
    IT_CHECK(&cluster, store_conn_finalize(&conn, ins), conn.errmsg);
    IT_CHECK(&cluster, store_conn_finalize(&conn, sel), conn.errmsg);
    /* A second finalize is a clean "no such statement"; the connection stays usable. */
    assert_int_equal(store_conn_finalize(&conn, sel), GERR_NOTFOUND);
    assert_false(conn.broken);
    IT_CHECK(&cluster, store_conn_interrupt(&conn), conn.errmsg);
    store_conn_close(&conn);
    check_alive();
}

static int64_t count_prepared(struct store_conn *conn, const char *sql, const char *v)
{
    struct proto_value p = proto_text(v);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster, store_conn_query_prepared(conn, sql, &p, 1, &rows), conn->errmsg);
    assert_int_equal(rows.n_rows, 1);
    int64_t n = proto_rows_at(&rows, 0, 0)->u.i;
    proto_rows_close(&rows);
    return n;
}

/* store_conn_query_prepared: PREPARE once, then QUERY only (counted in requests); a full cache
 * evicts the least recently used statement; the key is the text, not its address; a write is
 * refused; and through a transaction the statements follow the client across a reconnect. */
static void test_prepared_cache(void **state)
{
    static const char count_sql[] = "SELECT count(*) FROM kv WHERE v = ?";
    struct store_conn conn;
    (void)state;
    IT_CHECK(&cluster, store_client_connect(&client), client.errmsg);
    IT_CHECK(&cluster, store_conn_open(&conn, client.conn.address, 10000, NULL, NULL), conn.errmsg);
    IT_CHECK(&cluster, store_conn_open_db(&conn, client.database), conn.errmsg);

    uint64_t before = store_conn_requests_total();
    assert_int_equal(count_prepared(&conn, count_sql, "prepared"), 10);
    assert_int_equal(store_conn_requests_total() - before, 2); /* PREPARE, QUERY */
    before = store_conn_requests_total();
    assert_int_equal(count_prepared(&conn, count_sql, "nothing"), 0);
    assert_int_equal(store_conn_requests_total() - before, 1); /* QUERY only */
    /* A schema change by another connection: the node prepares the statement again by itself. */
    IT_CHECK(&cluster, store_client_exec(&client, "CREATE INDEX kv_by_v ON kv (v)", NULL, 0, NULL),
             client.errmsg);
    before = store_conn_requests_total();
    assert_int_equal(count_prepared(&conn, count_sql, "prepared"), 10);
    assert_int_equal(store_conn_requests_total() - before, 1);
    /* The same text at another address is the same statement. */
    char copy[sizeof count_sql];
    memcpy(copy, count_sql, sizeof copy);
    before = store_conn_requests_total();
    assert_int_equal(count_prepared(&conn, copy, "prepared"), 10);
    assert_int_equal(store_conn_requests_total() - before, 1);
    /* Other text at that address is another statement. */
    snprintf(copy, sizeof copy, "SELECT count(*) FROM kv WHERE v<>?");
    assert_true(count_prepared(&conn, copy, "prepared") > 0);
    assert_int_equal(conn.n_stmts, 2);

    /* More statements than the cache holds: the least recently used (count_sql) is finalized. */
    static char many[STORE_CONN_STMTS][80];
    for (unsigned i = 0; i < STORE_CONN_STMTS; i++) {
        snprintf(many[i], sizeof many[i], "SELECT count(*) + %u FROM kv WHERE v = ?", i);
        assert_int_equal(count_prepared(&conn, many[i], "prepared"), 10 + (int64_t)i);
    }
    assert_int_equal(conn.n_stmts, STORE_CONN_STMTS);
    before = store_conn_requests_total();
    assert_int_equal(count_prepared(&conn, count_sql, "prepared"), 10);
    assert_int_equal(store_conn_requests_total() - before, 3); /* FINALIZE, PREPARE, QUERY */
    assert_int_equal(conn.n_stmts, STORE_CONN_STMTS);

    /* Only read-only text is prepared for QUERY; the connection stays usable. */
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    assert_int_equal(store_conn_query_prepared(&conn, "DELETE FROM kv", NULL, 0, &rows), GERR_REFUSED);
    proto_rows_close(&rows);
    assert_false(conn.broken);
    assert_int_equal(count_prepared(&conn, count_sql, "prepared"), 10);
    store_conn_close(&conn);
    assert_int_equal(conn.n_stmts, 0);
    check_alive();
}

struct prepared_tx {
    int64_t n;
};

static int prepared_tx_fn(struct store_tx *tx, void *arg)
{
    struct prepared_tx *x = arg;
    struct proto_value p = proto_text("prepared");
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_tx_query_prepared(tx, "SELECT count(*) FROM kv WHERE v = ?", &p, 1, &rows);
    if (rv == 0) {
        x->n = proto_rows_at(&rows, 0, 0)->u.i;
    }
    proto_rows_close(&rows);
    return rv;
}

static void check_prepared_tx(void)
{
    struct prepared_tx x = {.n = -1};
    IT_CHECK(&cluster, store_client_tx(&client, prepared_tx_fn, &x), client.errmsg);
    assert_int_equal(x.n, 10);
}

static void test_membership(void **state)
{
    struct proto_node_info *nodes = NULL;
    unsigned n = 0;
    (void)state;
    IT_CHECK(&cluster, store_client_cluster(&client, &nodes, &n), client.errmsg);
    assert_int_equal(n, 3);
    for (unsigned i = 0; i < n; i++) {
        int idx = cluster_index_of(&cluster, nodes[i].id);
        assert_true(idx >= 0);
        assert_string_equal(nodes[i].address, cluster.nodes[idx].address);
        assert_int_equal(nodes[i].role, PROTO_ROLE_VOTER);
    }
    mem_free(nodes);
    check_alive();
}

static void test_dump(void **state)
{
    char dir[PROC_PATH_MAX + 16], path[PROC_PATH_MAX + 200];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    (void)state;

    snprintf(dir, sizeof dir, "%s/backup", cluster.root);
    assert_int_equal(mkdir(dir, 0700), 0);
    IT_CHECK(&cluster, store_client_dump(&client, dir), client.errmsg);
    snprintf(path, sizeof path, "%s/%s", dir, client.database);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM kv", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), n_acked);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM bulk", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), 3000);
    sqlite3_finalize(st);
    sqlite3_close(db);
    check_alive();
}

static void test_transfer(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        IT_CHECK(&cluster, store_client_connect(&client), client.errmsg);
        check_prepared_tx(); /* prepared on this leader's connection */
        uint64_t old = client.leader_id;
        uint64_t target = old % 3 + 1; /* the next node */
        IT_CHECK(&cluster, store_client_transfer(&client, target), client.errmsg);
        /* The client follows: the next write lands on the new leader. */
        kv_insert(500 + round, "after transfer");
        assert_int_equal(client.leader_id, target);
        uint64_t reported;
        IT_CHECK(&cluster, cluster_leader(&cluster, 30000, &reported, errmsg), errmsg);
        assert_int_equal(reported, target);
        /* The old leader dropped its statements with the connection; the client's new one
         * prepares them again. */
        check_prepared_tx();
    }
    check_alive();
}

/* A clean stop (SIGTERM) of a follower, writes while it is down, and a restart with --join
 * again (it already is a voter: the join is a no-op); it catches up. */
static void test_follower_restart(void **state)
{
    (void)state;
    IT_CHECK(&cluster, store_client_connect(&client), client.errmsg);
    /* A follower other than node 1 (node 1 never joins: it bootstrapped the cluster). */
    unsigned victim = client.leader_id == 2 ? 2 : 1;
    assert_int_equal(cluster_node_term(&cluster, victim, 20000), 0);
    assert_int_equal(WEXITSTATUS(cluster.nodes[victim].proc.status), 0);
    for (int64_t id = 600; id < 620; id++) {
        kv_insert(id, "while a follower was down");
    }
    cluster.join_on_restart = true;
    IT_CHECK(&cluster, cluster_node_start(&cluster, victim, errmsg), errmsg);
    cluster.join_on_restart = false;
    IT_CHECK(&cluster,
             cluster_wait_node_value(&cluster, victim, client.database, "SELECT count(*) FROM kv", n_acked,
                                     30000, errmsg),
             errmsg);
    IT_CHECK(&cluster, cluster_wait_voters(&cluster, 3, 30000, errmsg), errmsg);
    check_alive();
}

/* The invariant: every acknowledged write is present, exactly once, and nothing else is. */
static void test_no_acknowledged_write_missing(void **state)
{
    struct proto_rows rows;
    (void)state;
    proto_rows_init(&rows, 0);
    IT_CHECK(&cluster, store_client_query(&client, "SELECT id FROM kv ORDER BY id", NULL, 0, &rows),
             client.errmsg);
    assert_int_equal(rows.n_rows, n_acked);
    for (unsigned i = 0; i < n_acked; i++) {
        bool found = false;
        for (size_t r = 0; r < rows.n_rows && !found; r++) {
            found = proto_rows_at(&rows, r, 0)->u.i == acked[i];
        }
        if (!found) {
            fprintf(stderr, "acknowledged id %" PRId64 " is missing\n", acked[i]);
        }
        assert_true(found);
    }
    proto_rows_close(&rows);
    /* Every node holds the same rows once replication settles. */
    for (unsigned i = 0; i < cluster.n; i++) {
        IT_CHECK(&cluster,
                 cluster_wait_node_value(&cluster, i, client.database, "SELECT count(*) FROM kv", n_acked,
                                         30000, errmsg),
                 errmsg);
    }
    check_alive();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec),
        cmocka_unit_test(test_value_types),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_large_result),
        cmocka_unit_test(test_prepared),
        cmocka_unit_test(test_prepared_cache),
        cmocka_unit_test(test_membership),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_follower_restart),
        cmocka_unit_test(test_no_acknowledged_write_missing),
    };
    return cmocka_run_group_tests_name("store_cluster", tests, group_setup, group_teardown);
}
