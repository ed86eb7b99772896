/* Online backup under write load and restore into a new cluster: the backup is a consistent
 * point in time (a transactional invariant holds in it), and the restored cluster holds exactly
 * the backup, with every value's storage class, its indexes and views. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "it_common.h"
#include "store/backup.h"

static struct cluster a, b;
static char errmsg[GERR_MSG_SIZE];
static char backup_dir[PROC_PATH_MAX];

static int setup(void **state)
{
    (void)state;
    struct cluster_opts o = {.node_bin = it_node_bin()};
    if (cluster_start(&a, 3, &o, errmsg) != 0 || cluster_start(&b, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    snprintf(backup_dir, sizeof backup_dir, "%s/backup", a.root);
    return mkdir(backup_dir, 0700);
}

static int teardown(void **state)
{
    (void)state;
    cluster_stop(&a);
    cluster_stop(&b);
    return 0;
}

static void client(struct cluster *c, struct store_client *cl)
{
    struct store_client_config cfg = {0};
    cluster_client_config(c, &cfg);
    assert_int_equal(store_client_init(cl, &cfg), 0);
}

/* One transaction: an item with values of every storage class, and the counter that must always
 * equal the number of items. */
static int add_item_tx(struct store_tx *tx, void *arg)
{
    int64_t id = *(int64_t *)arg;
    char text[48];
    uint8_t blob[5] = {0, 1, 2, (uint8_t)id, 0xff};
    snprintf(text, sizeof text, "item %" PRId64, id);
    struct proto_value p[4] = {proto_int(id), proto_text(text), proto_blob(blob, sizeof blob),
                               id % 3 == 0 ? proto_null() : proto_float((double)id / 8)};
    int rv = store_tx_exec(tx, "INSERT INTO items (id, name, data, score) VALUES (?, ?, ?, ?)", p, 4, NULL);
    return rv != 0 ? rv : store_tx_exec(tx, "UPDATE counter SET n = n + 1 WHERE id = 1", NULL, 0, NULL);
}

struct load {
    pthread_t thread;
    atomic_int stop;
    _Atomic int64_t written; /* acknowledged transactions */
    int failed;
};

static void *write_load(void *arg)
{
    struct load *l = arg;
    struct store_client cl;
    client(&a, &cl);
    while (!atomic_load(&l->stop)) {
        int64_t id = atomic_load(&l->written) + 1;
        if (store_client_tx(&cl, add_item_tx, &id) != 0) {
            l->failed++;
            break;
        }
        atomic_fetch_add(&l->written, 1);
    }
    store_client_close(&cl);
    return NULL;
}

static int64_t sqlite_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static void backup_under_load_restores_consistently(void **state)
{
    (void)state;
    struct store_client ca, cb;
    client(&a, &ca);
    IT_CHECK(&a,
             store_client_exec(
                 &ca,
                 "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB, score REAL)"
                 " STRICT;"
                 "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT;"
                 "INSERT INTO counter VALUES (1, 0);"
                 "CREATE INDEX items_by_name ON items (name);"
                 "CREATE VIEW item_count AS SELECT count(*) AS n FROM items;"
                 /* More rows than one restore batch (STORE_RESTORE_BATCH). */
                 "CREATE TABLE bulk (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT;"
                 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1234)"
                 " INSERT INTO bulk SELECT x, 'row ' || x FROM c;"
                 /* A child table created before its parent (foreign keys are on in dqlite), and a
                  * name that needs quoting. */
                 "CREATE TABLE child (id INTEGER PRIMARY KEY,"
                 " parent_id INTEGER NOT NULL REFERENCES parent (id)) STRICT;"
                 "CREATE TABLE parent (id INTEGER PRIMARY KEY) STRICT;"
                 "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (10, 1), (11, 2);"
                 "CREATE TABLE \"odd\"\"name\" (v TEXT) STRICT; INSERT INTO \"odd\"\"name\" VALUES ('q')",
                 NULL, 0, NULL),
             ca.errmsg);

    struct load l = {0};
    pthread_create(&l.thread, NULL, write_load, &l);
    while (atomic_load(&l.written) < 200) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    int64_t before_dump = atomic_load(&l.written);
    IT_CHECK(&a, store_client_dump(&ca, backup_dir), ca.errmsg); /* mid-load */
    int64_t after_dump = atomic_load(&l.written);
    while (atomic_load(&l.written) < after_dump + 100) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&l.stop, 1);
    pthread_join(l.thread, NULL);
    assert_int_equal(l.failed, 0);

    /* The backup is a point in time: the invariant holds in it, and it is intact. */
    char path[PROC_PATH_MAX + 16];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/gantry", backup_dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    int64_t items = sqlite_int(db, "SELECT count(*) FROM items");
    assert_int_equal(sqlite_int(db, "SELECT n FROM counter WHERE id = 1"), items);
    /* Everything acknowledged before the dump began; nothing after it ended (one transaction may
     * have committed but not yet been counted). */
    assert_true(items >= before_dump && items <= after_dump + 1);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
    fprintf(stderr,
            "backup holds %" PRId64 " items (%" PRId64 " acknowledged before the dump, %" PRId64 " after)\n",
            items, before_dump, after_dump);

    /* Restore into the new cluster. */
    client(&b, &cb);
    struct store_restore_stats stats;
    uint64_t t0 = it_now_ms();
    IT_CHECK(&b, store_restore(&cb, backup_dir, &stats, errmsg), errmsg);
    fprintf(stderr, "restored %u tables, %" PRIu64 " rows, %u other objects in %" PRIu64 " ms\n",
            stats.tables, stats.rows, stats.other_objects, it_now_ms() - t0);
    assert_int_equal(stats.tables, 6);
    assert_int_equal(stats.other_objects, 2);
    assert_int_equal(stats.rows, (uint64_t)items + 1 + 1234 + 2 + 2 + 1);
    int64_t n;
    IT_CHECK(&b, store_client_query_int(&cb, "SELECT sum(id) FROM bulk WHERE v = 'row ' || id", NULL, 0, &n),
             cb.errmsg);
    assert_int_equal(n, 1234 * 1235 / 2);
    IT_CHECK(&b, store_client_query_int(&cb, "SELECT count(*) FROM items", NULL, 0, &n), cb.errmsg);
    assert_int_equal(n, items);
    IT_CHECK(&b, store_client_query_int(&cb, "SELECT n FROM counter WHERE id = 1", NULL, 0, &n), cb.errmsg);
    assert_int_equal(n, items);
    IT_CHECK(&b, store_client_query_int(&cb, "SELECT n FROM item_count", NULL, 0, &n), cb.errmsg);
    assert_int_equal(n, items);
    /* Storage classes survive: text, blob, real and null exactly as written. */
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    IT_CHECK(&b,
             store_client_query(
                 &cb, "SELECT name, data, score, typeof(score) FROM items WHERE id IN (3, 4) ORDER BY id",
                 NULL, 0, &rows),
             cb.errmsg);
    assert_int_equal(rows.n_rows, 2);
    assert_string_equal(proto_rows_at(&rows, 0, 0)->u.b.s, "item 3");
    assert_int_equal(proto_rows_at(&rows, 0, 1)->type, PROTO_BLOB);
    assert_int_equal(proto_rows_at(&rows, 0, 1)->u.b.n, 5);
    assert_int_equal(proto_rows_at(&rows, 0, 2)->type, PROTO_NULL);
    assert_string_equal(proto_rows_at(&rows, 1, 3)->u.b.s, "real");
    assert_true(proto_rows_at(&rows, 1, 2)->u.f == 0.5);
    proto_rows_close(&rows);
    IT_CHECK(&b,
             store_client_query_int(&cb, "SELECT count(*) FROM sqlite_master WHERE name = 'items_by_name'",
                                    NULL, 0, &n),
             cb.errmsg);
    assert_int_equal(n, 1);

    IT_CHECK(&b,
             store_client_query_int(
                 &cb, "SELECT count(*) FROM child JOIN parent ON parent.id = child.parent_id", NULL, 0, &n),
             cb.errmsg);
    assert_int_equal(n, 2);
    IT_CHECK(&b,
             store_client_query_int(&cb, "SELECT count(*) FROM \"odd\"\"name\" WHERE v = 'q'", NULL, 0, &n),
             cb.errmsg);
    assert_int_equal(n, 1);
    /* A restore never merges into a cluster that has data, and needs a backup. */
    assert_int_equal(store_restore(&cb, backup_dir, &stats, errmsg), GERR_EXISTS);
    assert_int_equal(store_restore(&cb, "/nonexistent/backup", &stats, errmsg), GERR_NOTFOUND);
    store_client_close(&ca);
    store_client_close(&cb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backup_under_load_restores_consistently),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
