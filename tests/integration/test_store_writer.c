/* The replica's write path against a real 3-process cluster: the single writer queue, whole
 * transactions retried between competing writers, rollback on error, the read pool, and stop. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "it_common.h"
#include "lib/clock.h"
#include "lib/mem.h"
#include "store/events.h"
#include "store/pool.h"
#include "store/writer.h"

static struct cluster cl3;
static char errmsg[GERR_MSG_SIZE];

static int setup(void **state)
{
    (void)state;
    struct cluster_opts o = {.node_bin = it_node_bin()};
    if (cluster_start(&cl3, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    struct store_client_config cfg = {0};
    struct store_client c;
    cluster_client_config(&cl3, &cfg);
    store_client_init(&c, &cfg);
    int rv = store_client_exec(
        &c,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL) STRICT;"
        "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT;"
        "INSERT INTO counter VALUES (1, 0);"
        "CREATE TABLE item_log (item INTEGER NOT NULL, note TEXT NOT NULL) STRICT;"
        "CREATE TABLE cluster_revision (id INTEGER PRIMARY KEY, revision INTEGER NOT NULL) STRICT;"
        "INSERT INTO cluster_revision VALUES (1, 0);"
        "CREATE TABLE events (revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT "
        "NULL, object_id TEXT NOT NULL, type TEXT NOT NULL, at_ms INTEGER NOT NULL, payload BLOB NOT "
        "NULL DEFAULT x'') STRICT;"
        "CREATE TABLE idempotency (principal_id TEXT NOT NULL, request_id TEXT NOT NULL, method TEXT "
        "NOT NULL, response BLOB NOT NULL, revision INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, "
        "PRIMARY KEY (principal_id, request_id)) STRICT",
        NULL, 0, NULL);
    store_client_close(&c);
    return rv == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int alive = cluster_check_alive(&cl3, errmsg);
    if (alive != 0) {
        fprintf(stderr, "%s\n", errmsg);
    }
    cluster_stop(&cl3);
    return alive == 0 ? 0 : -1;
}

static void writer_config(struct store_client_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cluster_client_config(&cl3, cfg);
}

/* One API call's worth of work: an item and the counter, atomically. */
struct item {
    int64_t id;
    int64_t writer;
};

static int insert_item_tx(struct store_tx *tx, void *arg)
{
    struct item *it = arg;
    struct proto_value p[2] = {proto_int(it->id), proto_int(it->writer)};
    int rv = store_tx_exec(tx, "INSERT INTO items (id, writer) VALUES (?, ?)", p, 2, NULL);
    if (rv != 0) {
        return rv;
    }
    return store_tx_exec(tx, "UPDATE counter SET n = n + 1 WHERE id = 1", NULL, 0, NULL);
}

static int64_t query_int(const char *sql)
{
    struct store_client_config cfg;
    struct store_client c;
    int64_t v = -1;
    writer_config(&cfg);
    store_client_init(&c, &cfg);
    int rv = store_client_query_int(&c, sql, NULL, 0, &v);
    if (rv != 0) {
        fprintf(stderr, "query %s: %s\n", sql, c.errmsg);
    }
    store_client_close(&c);
    assert_int_equal(rv, 0);
    return v;
}

/* ---- 8 threads, one writer: every call commits, none collides inside the replica. */

#define THREADS    8
#define PER_THREAD 60

struct submitter {
    struct store_writer *w;
    int64_t base;
    int64_t writer;
    int failures;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct item it = {.id = s->base + i, .writer = s->writer};
        char em[GERR_MSG_SIZE];
        if (store_writer_run(s->w, insert_item_tx, &it, em) != 0) {
            fprintf(stderr, "write %lld: %s\n", (long long)it.id, em);
            s->failures++;
        }
    }
    return NULL;
}

static void one_writer_serves_many_threads(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    int64_t before = query_int("SELECT n FROM counter WHERE id = 1");

    pthread_t t[THREADS];
    struct submitter s[THREADS];
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct submitter){.w = &w, .base = 1000000 + i * 1000, .writer = 1};
        pthread_create(&t[i], NULL, submit_many, &s[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    /* One writer per replica: its own transactions never met SQLITE_BUSY. */
    assert_int_equal(w.client.stats.busy_retries, 0);
    store_writer_stop(&w);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 1"), THREADS * PER_THREAD);
    assert_int_equal(query_int("SELECT n FROM counter WHERE id = 1") - before, THREADS * PER_THREAD);
}

/* ---- Two writers (two replicas) competing: BUSY is retried, transactions stay whole. */

static void competing_writers_lose_nothing(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w1, w2;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w1, &cfg), 0);
    assert_int_equal(store_writer_start(&w2, &cfg), 0);
    int64_t before = query_int("SELECT n FROM counter WHERE id = 1");

    pthread_t t[4];
    struct submitter s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct submitter){.w = i % 2 == 0 ? &w1 : &w2, .base = 2000000 + i * 1000, .writer = 2};
        pthread_create(&t[i], NULL, submit_many, &s[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    fprintf(stderr, "BUSY retries between the two writers: %llu\n",
            (unsigned long long)(w1.client.stats.busy_retries + w2.client.stats.busy_retries));
    store_writer_stop(&w1);
    store_writer_stop(&w2);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 2"), 4 * PER_THREAD);
    assert_int_equal(query_int("SELECT n FROM counter WHERE id = 1") - before, 4 * PER_THREAD);
}

/* ---- A failing statement rolls the whole transaction back. */

static int insert_then_duplicate_tx(struct store_tx *tx, void *arg)
{
    (void)arg;
    struct item a = {.id = 3000001, .writer = 3};
    int rv = insert_item_tx(tx, &a);
    if (rv != 0) {
        return rv;
    }
    return insert_item_tx(tx, &a); /* same id: UNIQUE constraint */
}

static void failed_transaction_changes_nothing(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    char em[GERR_MSG_SIZE];
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    int64_t before = query_int("SELECT n FROM counter WHERE id = 1");
    assert_int_equal(store_writer_run(&w, insert_then_duplicate_tx, NULL, em), GERR_CONSTRAINT);
    assert_non_null(strstr(em, "UNIQUE"));
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 3"), 0);
    assert_int_equal(query_int("SELECT n FROM counter WHERE id = 1"), before);
    /* Several statements in one store_client_exec text commit together or not at all: the
     * second fails, so the first must not be there. */
    {
        struct store_client_config ccfg;
        struct store_client c;
        writer_config(&ccfg);
        store_client_init(&c, &ccfg);
        assert_int_equal(store_client_exec(&c,
                                           "INSERT INTO items (id, writer) VALUES (3000100, 3);"
                                           "INSERT INTO items (id, writer) VALUES (3000100, 3)",
                                           NULL, 0, NULL),
                         GERR_CONSTRAINT);
        store_client_close(&c);
        assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 3000100"), 0);
    }
    /* The writer's connection is still good afterwards. */
    struct item ok = {.id = 3000002, .writer = 3};
    assert_int_equal(store_writer_run(&w, insert_item_tx, &ok, em), 0);
    store_writer_stop(&w);
}

/* ---- Stop: the running transaction finishes, queued ones are canceled. */

static atomic_int slow_started;

static int slow_tx(struct store_tx *tx, void *arg)
{
    struct item *it = arg;
    atomic_store(&slow_started, 1);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    return insert_item_tx(tx, it);
}

struct done {
    struct store_write req;
    atomic_int status;
    atomic_int fired;
};

static void done_cb(struct store_write *req, int status)
{
    struct done *d = req->data;
    atomic_store(&d->status, status);
    atomic_fetch_add(&d->fired, 1);
}

/* Wait up to 30 s for @flag to be set (the caller asserts on it, or on what follows from it). */
static void wait_set(atomic_int *flag)
{
    uint64_t deadline = it_now_ms() + 30000;
    while (atomic_load(flag) == 0 && it_now_ms() < deadline) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void stop_cancels_queued_writes(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    struct item items[6];
    struct done d[6];
    memset(d, 0, sizeof d);
    atomic_store(&slow_started, 0);
    for (int i = 0; i < 6; i++) {
        items[i] = (struct item){.id = 4000000 + i, .writer = 4};
        d[i].req.data = &d[i];
    }
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &items[0], done_cb), 0);
    wait_set(&slow_started);
    assert_int_equal(atomic_load(&slow_started), 1);
    for (int i = 1; i < 6; i++) {
        assert_int_equal(store_writer_submit(&w, &d[i].req, insert_item_tx, &items[i], done_cb), 0);
    }
    store_writer_stop(&w);
    assert_int_equal(atomic_load(&d[0].fired), 1);
    assert_int_equal(atomic_load(&d[0].status), 0);
    for (int i = 1; i < 6; i++) {
        assert_int_equal(atomic_load(&d[i].fired), 1); /* exactly once */
        assert_int_equal(atomic_load(&d[i].status), GERR_CANCELED);
    }
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 4"), 1);
}

/* ---- Bounds: a full queue refuses at once; a write whose deadline passes while it waits is
 * dropped unrun (nothing applied), never run late. */

static void full_queue_and_expired_writes_are_not_run(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    store_writer_set_max_pending(&w, 3);
    struct item items[6];
    struct done d[6];
    memset(d, 0, sizeof d);
    atomic_store(&slow_started, 0);
    for (int i = 0; i < 6; i++) {
        items[i] = (struct item){.id = 5000000 + i, .writer = 5};
        d[i].req.data = &d[i];
    }
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &items[0], done_cb), 0);
    wait_set(&slow_started);
    /* While the slow one runs: one write that expires in 50 ms (before the slow one ends), two
     * without a deadline, then the queue is full. */
    d[1].req.deadline_ms = clock_mono_ms(clock_system()) + 50;
    assert_int_equal(store_writer_submit(&w, &d[1].req, insert_item_tx, &items[1], done_cb), 0);
    assert_int_equal(store_writer_submit(&w, &d[2].req, insert_item_tx, &items[2], done_cb), 0);
    assert_int_equal(store_writer_submit(&w, &d[3].req, insert_item_tx, &items[3], done_cb), 0);
    assert_int_equal(store_writer_submit(&w, &d[4].req, insert_item_tx, &items[4], done_cb),
                     GERR_UNAVAILABLE);
    wait_set(&d[3].fired);
    unsigned pending;
    uint64_t refused, expired;
    store_writer_stats(&w, &pending, &refused, &expired);
    store_writer_stop(&w);
    assert_int_equal(atomic_load(&d[0].status), 0);
    assert_int_equal(atomic_load(&d[1].fired), 1);
    assert_int_equal(atomic_load(&d[1].status), GERR_TIMEOUT);
    assert_int_equal(atomic_load(&d[2].status), 0);
    assert_int_equal(atomic_load(&d[3].status), 0);
    assert_int_equal(atomic_load(&d[4].fired), 0); /* refused: its callback never fires */
    assert_int_equal(refused, 1);
    assert_int_equal(expired, 1);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 5"), 3);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 5000001"), 0);
}

/* ---- Batches: several requests in one transaction, each in its own savepoint; a failing request
 * rolls back alone (its writes, its deferred rows and its revisions), the others commit together;
 * idempotency keys are looked up per batch and replayed. */

static const struct store_table item_log = {"INSERT INTO item_log (item, note) VALUES", 2};

struct batch_item {
    int64_t id;
    int fail_after_write; /* return this error after the writes (0: succeed) */
};

static int batch_item_tx(struct store_tx *tx, void *arg)
{
    struct batch_item *it = arg;
    struct proto_value p[] = {proto_int(it->id), proto_int(6)};
    int rv = store_tx_exec(tx, "INSERT INTO items (id, writer) VALUES (?, ?)", p, 2, NULL);
    int64_t rev = 0;
    if (rv == 0) {
        rv = store_event_tx(tx, "Item", "", "x", "ADDED", &rev);
    }
    if (rv == 0) {
        struct proto_value l[] = {proto_int(it->id), proto_text("logged")};
        rv = store_tx_insert(tx, &item_log, l);
    }
    if (rv == 0 && it->fail_after_write != 0) {
        gerr_set(store_tx_errmsg(tx), "item %lld refuses", (long long)it->id);
        return it->fail_after_write;
    }
    if (rv == 0) {
        char resp[32];
        int n = snprintf(resp, sizeof resp, "item-%lld", (long long)it->id);
        store_tx_set_result(tx, resp, (size_t)n, rev);
    }
    return rv;
}

static void batch_requests_fail_alone(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    /* A change first, so the revision the batch reads is not 0 (a forgotten read would show). */
    struct batch_item before = {.id = 6000010};
    char em[GERR_MSG_SIZE];
    assert_int_equal(store_writer_run(&w, batch_item_tx, &before, em), 0);
    int64_t rev0 = query_int("SELECT revision FROM cluster_revision WHERE id = 1");
    assert_true(rev0 > 0);
    struct item slow = {.id = 6000000, .writer = 6};
    struct batch_item items[5] = {
        /* the batch's first change, then it refuses: rolled back alone, its revision given back */
        {.id = 6000002, .fail_after_write = GERR_TOOBIG},
        {.id = 6000001}, /* commits */
        {.id = 6000001}, /* the same id: the INSERT fails (constraint) */
        {.id = 6000003}, /* commits */
        {.id = 6000003}, /* same key as the one before: waits, replayed */
    };
    struct store_write reqs[5];
    struct done d[6];
    memset(d, 0, sizeof d);
    memset(reqs, 0, sizeof reqs);
    atomic_store(&slow_started, 0);
    d[0].req.data = &d[0];
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &slow, done_cb), 0);
    wait_set(&slow_started);
    const char *keys[5] = {"k3", "k1", "k2", "k4", "k4"};
    for (int i = 0; i < 5; i++) {
        d[i + 1].req.data = &d[i + 1];
        d[i + 1].req.idem_principal = "p";
        d[i + 1].req.idem_key = keys[i];
        d[i + 1].req.idem_method = "/test/Batch";
        assert_int_equal(store_writer_submit(&w, &d[i + 1].req, batch_item_tx, &items[i], done_cb), 0);
    }
    (void)reqs;
    wait_set(&d[5].fired);
    struct store_writer_stats_full st;
    store_writer_stats_full(&w, &st);
    store_writer_stop(&w);
    assert_int_equal(atomic_load(&d[0].status), 0);
    assert_int_equal(atomic_load(&d[1].status), GERR_TOOBIG);
    assert_non_null(strstr(d[1].req.errmsg, "item 6000002 refuses"));
    assert_int_equal(atomic_load(&d[2].status), 0);
    assert_int_not_equal(atomic_load(&d[3].status), 0);
    assert_int_equal(atomic_load(&d[4].status), 0);
    assert_int_equal(atomic_load(&d[5].status), 0);
    assert_true(d[5].req.replayed); /* the second request of key k4 ran in the next batch: replayed */
    assert_false(d[4].req.replayed);
    assert_memory_equal(d[5].req.response.data, "item-6000003", 12);
    assert_int_equal(d[5].req.revision, d[4].req.revision);
    /* The four requests of the first batch were one transaction (the change before and the slow one
     * were batches of their own, the replay a fourth). */
    assert_int_equal(st.batches, 4);
    /* What committed: items 1 and 3, their log rows and events, gap-free revisions. */
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE writer = 6 AND id < 6000010"), 3);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 6000002"), 0);
    assert_int_equal(query_int("SELECT count(*) FROM item_log WHERE item >= 6000001 AND item < 6000010"), 2);
    assert_int_equal(query_int("SELECT count(*) FROM item_log WHERE item = 6000002"), 0);
    assert_int_equal(query_int("SELECT revision FROM cluster_revision WHERE id = 1"), rev0 + 2);
    assert_int_equal(query_int("SELECT count(*) FROM events WHERE kind = 'Item'"), 3);
    assert_int_equal(query_int("SELECT max(revision) FROM events"), rev0 + 2);
    assert_int_equal(query_int("SELECT count(*) FROM idempotency WHERE principal_id = 'p'"), 2);
    for (int i = 0; i < 6; i++) {
        buf_close(&d[i].req.response);
    }
}

/* ---- Memos (store_tx_memo): they live only across successful calls of one memo class. */

static atomic_int memos_freed;

static void memo_free(void *v)
{
    atomic_fetch_add(&memos_freed, 1);
    mem_free(v);
}

struct memo_call {
    int64_t id;
    bool set;    /* leave a memo holding @id */
    int fail;    /* then fail with this (0: succeed) */
    int64_t saw; /* the memo this call found: its id, 0 for none */
    bool kept;   /* store_tx_memo_set took it */
};

static int memo_tx(struct store_tx *tx, void *arg)
{
    struct memo_call *m = arg;
    const int64_t *v = store_tx_memo(tx, "k");
    m->saw = v != NULL ? *v : 0;
    struct proto_value p[] = {proto_int(m->id), proto_int(7)};
    int rv = store_tx_exec(tx, "INSERT INTO items (id, writer) VALUES (?, ?)", p, 2, NULL);
    if (rv == 0 && m->set) {
        int64_t *nv = mem_alloc(sizeof *nv);
        *nv = m->id;
        m->kept = store_tx_memo_set(tx, "k", nv, memo_free);
        if (!m->kept) {
            mem_free(nv);
        }
    }
    if (rv == 0 && m->fail != 0) {
        gerr_set(store_tx_errmsg(tx), "memo call %lld refuses", (long long)m->id);
        return m->fail;
    }
    return rv;
}

static void memos_live_between_calls_of_one_class(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    atomic_store(&memos_freed, 0);
    /* Outside a writer batch there are none, and a memo is not taken. */
    struct store_client c;
    store_client_init(&c, &cfg);
    struct memo_call alone = {.id = 7200000, .set = true};
    assert_int_equal(store_client_tx(&c, memo_tx, &alone), 0);
    store_client_close(&c);
    assert_false(alone.kept);
    assert_int_equal(alone.saw, 0);

    /* One batch, behind a slow request: */
    struct memo_call calls[] = {
        {.id = 7200001, .set = true},         /* x: sets its id */
        {.id = 7200002, .set = true},         /* x: sees the first one's, sets its own */
        {.id = 7200003, .set = true},         /* y: another class: sees none, sets its own */
        {.id = 7200004, .fail = GERR_TOOBIG}, /* y: sees the one before's, fails */
        {.id = 7200005, .set = true},         /* y: none (dropped after the failure), sets its own */
        {.id = 7200006},                      /* no class: none */
        {.id = 7200007},                      /* y: none (dropped before the call of no class) */
        {.id = 7200008, .set = true, .fail = GERR_INVAL}, /* y: sets its own and fails */
        {.id = 7200009},                                  /* y: none */
    };
    const char *classes[] = {"x", "x", "y", "y", "y", NULL, "y", "y", "y"};
    const int64_t want[] = {0, 7200001, 0, 7200003, 0, 0, 0, 0, 0}; /* the id of the memo each saw */
    enum { N = sizeof calls / sizeof calls[0] };
    struct done d[N + 1];
    memset(d, 0, sizeof d);
    struct item slow = {.id = 7200100, .writer = 7};
    atomic_store(&slow_started, 0);
    d[0].req.data = &d[0];
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &slow, done_cb), 0);
    wait_set(&slow_started);
    for (int i = 0; i < N; i++) {
        d[i + 1].req.data = &d[i + 1];
        d[i + 1].req.memo_class = classes[i];
        assert_int_equal(store_writer_submit(&w, &d[i + 1].req, memo_tx, &calls[i], done_cb), 0);
    }
    wait_set(&d[N].fired);
    struct store_writer_stats_full st;
    store_writer_stats_full(&w, &st);
    store_writer_stop(&w);
    assert_int_equal(st.batches, 2); /* the slow one, then all the others in one */
    for (int i = 0; i < N; i++) {
        assert_int_equal(calls[i].saw, want[i]);
        assert_int_equal(atomic_load(&d[i + 1].status), calls[i].fail);
        if (calls[i].set) {
            assert_true(calls[i].kept);
        }
    }
    /* Every memo taken was freed: the five set in the batch. */
    assert_int_equal(atomic_load(&memos_freed), 5);
    assert_int_equal(
        query_int("SELECT count(*) FROM items WHERE writer = 7 AND id > 7200000 AND id < 7200100"), 7);
    for (int i = 0; i <= N; i++) {
        buf_close(&d[i].req.response);
    }
}

/* ---- A key marked fresh that another writer stored first (a forwarder that fell back to running
 * the call itself while the forwarded copy also ran): the batch's idempotency insert collides.
 * The request is replayed, the others of its batch commit, nothing runs twice. */

static void fresh_key_stored_elsewhere_is_replayed(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer other, w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&other, &cfg), 0);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    /* The other writer runs the call first, under key "f1". */
    struct batch_item first = {.id = 7000001};
    struct store_write r0;
    memset(&r0, 0, sizeof r0);
    r0.idem_principal = "q";
    r0.idem_key = "f1";
    r0.idem_method = "/test/Batch";
    r0.fn = batch_item_tx;
    r0.arg = &first;
    assert_int_equal(store_writer_run_req(&other, &r0), 0);
    store_writer_stop(&other);
    /* This writer gets the same call, marked fresh, behind a slow request, with two others. Its own
     * writes do not collide (item 7000004: think of an update), only its idempotency record does. */
    struct item slow = {.id = 7000000, .writer = 6};
    struct batch_item items[3] = {{.id = 7000002}, {.id = 7000004}, {.id = 7000003}};
    const char *keys[3] = {"f2", "f1", "f3"};
    struct done d[4];
    memset(d, 0, sizeof d);
    atomic_store(&slow_started, 0);
    d[0].req.data = &d[0];
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &slow, done_cb), 0);
    wait_set(&slow_started);
    for (int i = 0; i < 3; i++) {
        d[i + 1].req.data = &d[i + 1];
        d[i + 1].req.idem_principal = "q";
        d[i + 1].req.idem_key = keys[i];
        d[i + 1].req.idem_method = "/test/Batch";
        d[i + 1].req.idem_fresh = true;
        assert_int_equal(store_writer_submit(&w, &d[i + 1].req, batch_item_tx, &items[i], done_cb), 0);
    }
    for (int i = 1; i <= 3; i++) {
        wait_set(&d[i].fired);
    }
    store_writer_stop(&w);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&d[i].status), 0);
    }
    assert_false(d[1].req.replayed);
    assert_true(d[2].req.replayed);
    assert_memory_equal(d[2].req.response.data, "item-7000001", 12);
    assert_int_equal(d[2].req.revision, r0.revision);
    assert_false(d[3].req.replayed);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id BETWEEN 7000001 AND 7000003"), 3);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 7000004"), 0); /* not run twice */
    assert_int_equal(query_int("SELECT count(*) FROM item_log WHERE item BETWEEN 7000001 AND 7000004"), 3);
    assert_int_equal(query_int("SELECT count(*) FROM idempotency WHERE principal_id = 'q'"), 3);
    buf_close(&r0.response);
    for (int i = 0; i < 4; i++) {
        buf_close(&d[i].req.response);
    }
}

/* ---- Pause: the batch in progress ends, no new one starts, queued requests run after resume. */

static void pause_holds_new_batches_until_resume(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_writer w;
    writer_config(&cfg);
    assert_int_equal(store_writer_start(&w, &cfg), 0);
    /* A slow batch in progress: pause waits for its end. */
    struct item slow = {.id = 8000000, .writer = 8};
    struct done d[2];
    memset(d, 0, sizeof d);
    atomic_store(&slow_started, 0);
    d[0].req.data = &d[0];
    assert_int_equal(store_writer_submit(&w, &d[0].req, slow_tx, &slow, done_cb), 0);
    wait_set(&slow_started);
    assert_int_equal(store_writer_pause(&w, 30000), 0);
    assert_int_equal(atomic_load(&d[0].fired), 1); /* the batch in progress ended first */
    /* Queued while paused: not run. */
    struct item it = {.id = 8000001, .writer = 8};
    d[1].req.data = &d[1];
    assert_int_equal(store_writer_submit(&w, &d[1].req, insert_item_tx, &it, done_cb), 0);
    struct timespec wait = {0, 300 * 1000000L};
    nanosleep(&wait, NULL);
    assert_int_equal(atomic_load(&d[1].fired), 0);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 8000001"), 0);
    /* Pauses nest: one resume of two keeps it paused. */
    assert_int_equal(store_writer_pause(&w, 1000), 0);
    store_writer_resume(&w);
    nanosleep(&wait, NULL);
    assert_int_equal(atomic_load(&d[1].fired), 0);
    store_writer_resume(&w);
    wait_set(&d[1].fired);
    assert_int_equal(atomic_load(&d[1].status), 0);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE id = 8000001"), 1);
    /* Stop ends a pause: what is queued is cancelled, not left hanging. */
    struct done e = {0};
    struct item it2 = {.id = 8000002, .writer = 8};
    assert_int_equal(store_writer_pause(&w, 1000), 0);
    e.req.data = &e;
    assert_int_equal(store_writer_submit(&w, &e.req, insert_item_tx, &it2, done_cb), 0);
    store_writer_stop(&w);
    assert_int_equal(atomic_load(&e.fired), 1);
    assert_int_equal(atomic_load(&e.status), GERR_CANCELED);
    for (int i = 0; i < 2; i++) {
        buf_close(&d[i].req.response);
    }
    buf_close(&e.req.response);
}

/* ---- The read pool: bounded, reused, and a clear timeout when exhausted. */

struct reader {
    struct store_pool *pool;
    int failures;
};

static void *read_many(void *arg)
{
    struct reader *r = arg;
    for (int i = 0; i < 50; i++) {
        struct store_client *c;
        int64_t v;
        if (store_pool_acquire(r->pool, 30000, &c) != 0) {
            r->failures++;
            continue;
        }
        if (store_client_query_int(c, "SELECT count(*) FROM items", NULL, 0, &v) != 0 || v < 0) {
            r->failures++;
        }
        store_pool_release(r->pool, c);
    }
    return NULL;
}

static void pool_is_bounded_and_shared(void **state)
{
    (void)state;
    struct store_client_config cfg;
    struct store_pool pool;
    writer_config(&cfg);
    assert_int_equal(store_pool_init(&pool, &cfg, 2), 0);
    pthread_t t[4];
    struct reader r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){.pool = &pool};
        pthread_create(&t[i], NULL, read_many, &r[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].failures, 0);
    }
    struct store_client *a, *b, *c;
    assert_int_equal(store_pool_acquire(&pool, 1000, &a), 0);
    assert_int_equal(store_pool_acquire(&pool, 1000, &b), 0);
    assert_ptr_not_equal(a, b);
    assert_int_equal(store_pool_acquire(&pool, 50, &c), GERR_TIMEOUT);
    store_pool_release(&pool, a);
    assert_int_equal(store_pool_acquire(&pool, 50, &c), 0);
    assert_ptr_equal(c, a);
    store_pool_release(&pool, b);
    store_pool_release(&pool, c);
    store_pool_close(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_writer_serves_many_threads),
        cmocka_unit_test(competing_writers_lose_nothing),
        cmocka_unit_test(failed_transaction_changes_nothing),
        cmocka_unit_test(stop_cancels_queued_writes),
        cmocka_unit_test(full_queue_and_expired_writes_are_not_run),
        cmocka_unit_test(batch_requests_fail_alone),
        cmocka_unit_test(fresh_key_stored_elsewhere_is_replayed),
        cmocka_unit_test(pause_holds_new_batches_until_resume),
        cmocka_unit_test(memos_live_between_calls_of_one_class),
        cmocka_unit_test(pool_is_bounded_and_shared),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
