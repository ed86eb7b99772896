/* kill -9 of the leader under a stream of writes, on a fresh 3-process cluster per iteration.
 *
 * A writer thread inserts rows with unique ids and records each outcome: acknowledged (0) or
 * GERR_UNKNOWN_OUTCOME (the write may or may not have committed). Once 100 writes are
 * acknowledged, the main thread SIGKILLs the leader at a random moment (usually mid-request); the
 * writer keeps going until 50 more writes are acknowledged. Then:
 *   - every acknowledged id is present exactly once (no acknowledged write missing);
 *   - every row present was acknowledged or unknown, so count(*) <= acks + unknowns;
 *   - the killed node, restarted, catches up to the same row count;
 *   - no other node died.
 * The measured failover time (kill -> first acknowledged write) is printed per iteration.
 *
 * GANTRY_FAILOVER_ITERATIONS sets the number of iterations (default 10). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "it_common.h"
#include "lib/mem.h"
#include "lib/rand.h"

#define ACKS_BEFORE_KILL      100
#define ACKS_AFTER_KILL       50
#define MAX_WRITES            100000
#define ITERATION_DEADLINE_MS 180000u /* the writer gives up (and the test fails) after this */

enum outcome { OUT_NONE = 0, OUT_ACK, OUT_UNKNOWN };

struct writer {
    struct store_client cl;
    unsigned char *outcome; /* indexed by id */
    _Atomic unsigned acks;
    _Atomic unsigned unknowns;
    _Atomic unsigned writes;  /* ids used */
    _Atomic uint64_t kill_ms; /* when SIGKILL was sent */
    _Atomic bool killed;      /* set once the old leader is dead and reaped */
    _Atomic uint64_t first_ack_after_kill_ms;
    _Atomic unsigned acks_after_kill;
    int error; /* a result other than 0 / unknown outcome: fails the test */
    char errmsg[GERR_MSG_SIZE];
    uint64_t deadline;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char value[32];
    for (int64_t id = 1; id < MAX_WRITES; id++) {
        if (atomic_load(&w->acks_after_kill) >= ACKS_AFTER_KILL) {
            break;
        }
        if (it_now_ms() > w->deadline) {
            w->error = GERR_TIMEOUT;
            gerr_set(w->errmsg, "writer: iteration deadline passed with %u acks after the kill",
                     atomic_load(&w->acks_after_kill));
            break;
        }
        snprintf(value, sizeof value, "v%" PRId64, id);
        struct proto_value p[2] = {proto_int(id), proto_text(value)};
        bool killed_before = atomic_load(&w->killed);
        int rv = store_client_exec(&w->cl, "INSERT INTO t(id, v) VALUES(?, ?)", p, 2, NULL);
        atomic_store(&w->writes, (unsigned)id);
        if (rv == 0) {
            w->outcome[id] = OUT_ACK;
            atomic_fetch_add(&w->acks, 1);
            /* Count only writes sent after the kill: they went through the new leader. */
            if (killed_before) {
                uint64_t zero = 0;
                atomic_compare_exchange_strong(&w->first_ack_after_kill_ms, &zero, it_now_ms());
                atomic_fetch_add(&w->acks_after_kill, 1);
            }
        } else if (rv == GERR_UNKNOWN_OUTCOME) {
            w->outcome[id] = OUT_UNKNOWN;
            atomic_fetch_add(&w->unknowns, 1);
        } else {
            w->error = rv;
            gerr_set(w->errmsg, "writer: id %" PRId64 ": %s (%s)", id, w->cl.errmsg, gerr_name(rv));
            break;
        }
    }
    return NULL;
}

static unsigned iterations(void)
{
    const char *s = getenv("GANTRY_FAILOVER_ITERATIONS");
    if (s == NULL || s[0] == '\0') {
        return 10;
    }
    long v = strtol(s, NULL, 10);
    return v > 0 && v < 1000 ? (unsigned)v : 10;
}

/* File scope, not on the stack: the harness's exit handler still stops it after a failed
 * assertion has jumped out of run_iteration. */
static struct cluster c;

static void run_iteration(unsigned iter, uint64_t *failover_ms)
{
    struct writer *w = mem_zalloc(sizeof *w);
    char errmsg[GERR_MSG_SIZE];
    struct cluster_opts o = {.node_bin = it_node_bin()};
    pthread_t th;

    IT_CHECK(NULL, cluster_start(&c, 3, &o, errmsg), errmsg);
    struct store_client_config cfg = {.leader_timeout_ms = 30000};
    cluster_client_config(&c, &cfg);
    IT_CHECK(&c, store_client_init(&w->cl, &cfg), w->cl.errmsg);
    IT_CHECK(&c,
             store_client_exec(&w->cl, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT",
                               NULL, 0, NULL),
             w->cl.errmsg);
    /* Node 1 leads a fresh cluster; hand leadership to node 2 or 3 in two iterations out of
     * three, so the node killed (and restarted with --join) varies. */
    uint64_t first_leader = (iter - 1) % 3 + 1;
    if (first_leader != 1) {
        IT_CHECK(&c, store_client_transfer(&w->cl, first_leader), w->cl.errmsg);
    }
    w->outcome = mem_zalloc(MAX_WRITES);
    w->deadline = it_now_ms() + ITERATION_DEADLINE_MS;
    assert_int_equal(pthread_create(&th, NULL, writer_main, w), 0);

    /* Wait for the writer to get going, then kill whoever leads at a random moment. */
    uint64_t deadline = it_now_ms() + 60000;
    while (atomic_load(&w->acks) < ACKS_BEFORE_KILL && w->error == 0 && it_now_ms() < deadline) {
        clock_system()->sleep_ns(clock_system(), 1000000);
    }
    uint64_t leader = 0;
    int rv = cluster_leader(&c, 30000, &leader, errmsg);
    int idx = rv == 0 ? cluster_index_of(&c, leader) : -1;
    if (atomic_load(&w->acks) >= ACKS_BEFORE_KILL && idx >= 0) {
        clock_system()->sleep_ns(clock_system(), rand_range(0, 2000) * 1000u); /* 0-2 ms: land mid-request */
        atomic_store(&w->kill_ms, it_now_ms());
        cluster_node_kill(&c, (unsigned)idx);
        atomic_store(&w->killed, true);
    } else {
        w->deadline = 0; /* stop the writer */
    }
    pthread_join(th, NULL);
    if (idx < 0) {
        IT_CHECK(&c, GERR_NOLEADER, errmsg);
    }
    IT_CHECK(&c, w->error, w->errmsg);
    IT_CHECK(&c, atomic_load(&w->acks) >= ACKS_BEFORE_KILL ? 0 : GERR_TIMEOUT,
             "writer never reached 100 acks");
    *failover_ms = atomic_load(&w->first_ack_after_kill_ms) - atomic_load(&w->kill_ms);

    /* Check what the new leader holds against what the writer was told. */
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    IT_CHECK(&c, store_client_query(&w->cl, "SELECT id FROM t ORDER BY id", NULL, 0, &rows), w->cl.errmsg);
    unsigned char *seen = mem_zalloc(MAX_WRITES);
    unsigned unknown_committed = 0;
    for (size_t r = 0; r < rows.n_rows; r++) {
        int64_t id = proto_rows_at(&rows, r, 0)->u.i;
        assert_true(id > 0 && id < MAX_WRITES);
        assert_int_equal(seen[id], 0); /* exactly once (also guaranteed by the primary key) */
        seen[id] = 1;
        if (w->outcome[id] == OUT_NONE) {
            fail_msg("row %" PRId64 " exists but was never written", id);
        }
        unknown_committed += w->outcome[id] == OUT_UNKNOWN;
    }
    unsigned acks = atomic_load(&w->acks), unknowns = atomic_load(&w->unknowns);
    for (int64_t id = 1; id < MAX_WRITES; id++) {
        if (w->outcome[id] == OUT_ACK && !seen[id]) {
            fail_msg("acknowledged write %" PRId64 " is missing after failover", id);
        }
    }
    assert_true(rows.n_rows <= (size_t)acks + unknowns);
    int64_t total = (int64_t)rows.n_rows;
    proto_rows_close(&rows);
    mem_free(seen);

    /* The killed node comes back and catches up. */
    IT_CHECK(&c, cluster_node_start(&c, (unsigned)idx, errmsg), errmsg);
    IT_CHECK(&c,
             cluster_wait_node_value(&c, (unsigned)idx, w->cl.database, "SELECT count(*) FROM t", total,
                                     60000, errmsg),
             errmsg);
    IT_CHECK(&c, cluster_check_alive(&c, errmsg), errmsg);
    printf("iteration %u: killed leader node %" PRIu64 ", failover %" PRIu64
           " ms (kill -> first acknowledged write), "
           "%u acknowledged, %u unknown outcome (%u of them committed), %" PRId64
           " rows; restarted node caught up\n",
           iter, leader, *failover_ms, acks, unknowns, unknown_committed, total);
    fflush(stdout);

    store_client_close(&w->cl);
    mem_free(w->outcome);
    mem_free(w);
    IT_CHECK(NULL, cluster_stop_checked(&c, errmsg), errmsg);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_failover(void **state)
{
    unsigned n = iterations();
    uint64_t *ms = mem_zalloc(n * sizeof *ms);
    (void)state;
    for (unsigned i = 0; i < n; i++) {
        run_iteration(i + 1, &ms[i]);
    }
    qsort(ms, n, sizeof *ms, cmp_u64);
    printf("failover over %u iterations: min %" PRIu64 " ms, median %" PRIu64 " ms, max %" PRIu64 " ms\n", n,
           ms[0], ms[n / 2], ms[n - 1]);
    mem_free(ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover),
    };
    return cmocka_run_group_tests_name("store_failover", tests, NULL, NULL);
}
