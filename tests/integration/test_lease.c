/* The fenced lease (leases/lease.h) against a real 3-node store cluster, with fake monotonic
 * clocks per contender so the waits are exact and the test takes no wall time for them:
 *   - the first contender takes an empty lease (epoch 1);
 *   - a second one takes it only after seeing the same row for the full duration, and every
 *     renewal restarts its wait;
 *   - the old holder stops acting at its renew deadline, before the new one can take over, and its
 *     writes are fenced by lease_check_tx;
 *   - a released lease is taken at once with the next epoch;
 *   - a contender waiting out a held lease never takes the database's write lock, so a contender
 *     stopped mid-step cannot stall the cluster's writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "it_common.h"
#include "leases/lease.h"
#include "store/conn.h"
#include "store/migrate.h"

static struct cluster cl3;
static char errmsg[GERR_MSG_SIZE];
static struct store_client ca, cb;

static int setup(void **state)
{
    (void)state;
    struct cluster_opts o = {.node_bin = it_node_bin()};
    if (cluster_start(&cl3, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    struct store_client_config cfg = {0};
    cluster_client_config(&cl3, &cfg);
    store_client_init(&ca, &cfg);
    store_client_init(&cb, &cfg);
    unsigned n;
    const struct store_migration *m = store_schema(&n);
    return store_migrate(&ca, m, n) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_client_close(&ca);
    store_client_close(&cb);
    cluster_stop(&cl3);
    return 0;
}

struct fenced {
    const char *holder;
    uint64_t epoch;
};

static int fenced_write(struct store_tx *tx, void *arg)
{
    struct fenced *f = arg;
    int rv = lease_check_tx(tx, "reconciler", f->holder, f->epoch);
    if (rv == 0) {
        rv = store_tx_exec(tx, "UPDATE cluster_revision SET revision = revision + 1 WHERE id = 1", NULL, 0,
                           NULL);
    }
    return rv;
}

static void test_fencing(void **state)
{
    (void)state;
    struct clock_fake fa, fb;
    clock_fake_init(&fa, 1000000000ull, 1795000000000ull);
    clock_fake_init(&fb, 5000000000ull, 1795000000000ull);
    struct lease a, b;
    struct lease_config cfg = {
        .name = "reconciler", .duration_ms = 1000, .renew_deadline_ms = 600, .retry_ms = 100};
    cfg.holder = "replica-a";
    cfg.clock = &fa.base;
    assert_int_equal(lease_init(&a, &cfg), 0);
    cfg.holder = "replica-b";
    cfg.clock = &fb.base;
    assert_int_equal(lease_init(&b, &cfg), 0);
    bool held;
    uint64_t epoch;

    IT_CHECK(&cl3, lease_tick(&a, &ca, &held, &epoch), "a takes the empty lease");
    assert_true(held);
    assert_int_equal(epoch, 1);
    IT_CHECK(&cl3, lease_tick(&b, &cb, &held, &epoch), "b observes");
    assert_false(held);
    clock_fake_advance(&fb, 999000000ull);
    IT_CHECK(&cl3, lease_tick(&b, &cb, &held, &epoch), "b waits");
    assert_false(held);
    /* A renewal is a new row version: b starts over. */
    clock_fake_advance(&fa, 100000000ull);
    IT_CHECK(&cl3, lease_tick(&a, &ca, &held, &epoch), "a renews");
    assert_true(held);
    clock_fake_advance(&fb, 2000000ull);
    IT_CHECK(&cl3, lease_tick(&b, &cb, &held, &epoch), "b sees a renewal");
    assert_false(held);
    clock_fake_advance(&fb, 999000000ull);
    IT_CHECK(&cl3, lease_tick(&b, &cb, &held, &epoch), "b still waits");
    assert_false(held);

    /* a stops renewing (paused); its own deadline passes before b may take over. */
    struct fenced fa_write = {.holder = "replica-a", .epoch = 1};
    assert_int_equal(store_client_tx(&ca, fenced_write, &fa_write), 0);
    clock_fake_advance(&fa, 600000000ull);
    assert_false(lease_valid(&a));
    clock_fake_advance(&fb, 2000000ull);
    IT_CHECK(&cl3, lease_tick(&b, &cb, &held, &epoch), "b takes the expired lease");
    assert_true(held);
    assert_int_equal(epoch, 2);
    /* a's write with its old epoch is refused in the transaction itself. */
    assert_int_equal(store_client_tx(&ca, fenced_write, &fa_write), GERR_STALE);
    assert_non_null(strstr(ca.errmsg, "lost"));
    IT_CHECK(&cl3, lease_tick(&a, &ca, &held, &epoch), "a sees b");
    assert_false(held);
    struct fenced fb_write = {.holder = "replica-b", .epoch = 2};
    assert_int_equal(store_client_tx(&cb, fenced_write, &fb_write), 0);

    /* A clean release hands over at once, with the next epoch. */
    IT_CHECK(&cl3, lease_release(&b, &cb), "b releases");
    IT_CHECK(&cl3, lease_tick(&a, &ca, &held, &epoch), "a takes the released lease");
    assert_true(held);
    assert_int_equal(epoch, 3);
    char holder[128];
    uint64_t e, dur;
    int64_t at;
    IT_CHECK(&cl3, lease_read(&ca, "reconciler", holder, sizeof holder, &e, &at, &dur), "read");
    assert_string_equal(holder, "replica-a");
    assert_int_equal(e, 3);
    assert_int_equal(dur, 1000);
}

/* While another connection holds the write lock (as a replica stopped between BEGIN and COMMIT
 * would), a contender's step still answers at once: it only reads. Before, every step of every
 * replica was a write transaction and waited for the lock until busy_timeout_ms, then failed. */
static void test_contender_only_reads(void **state)
{
    (void)state;
    struct clock_fake fc, fd;
    clock_fake_init(&fc, 1000000000ull, 1795000000000ull);
    clock_fake_init(&fd, 5000000000ull, 1795000000000ull);
    struct lease c, d;
    struct lease_config cfg = {
        .name = "contended", .duration_ms = 1000, .renew_deadline_ms = 600, .retry_ms = 100};
    cfg.holder = "replica-c";
    cfg.clock = &fc.base;
    assert_int_equal(lease_init(&c, &cfg), 0);
    cfg.holder = "replica-d";
    cfg.clock = &fd.base;
    assert_int_equal(lease_init(&d, &cfg), 0);
    bool held;
    uint64_t epoch;
    IT_CHECK(&cl3, lease_tick(&c, &ca, &held, &epoch), "c takes the empty lease");
    assert_true(held);

    struct store_client_config ccfg = {0};
    cluster_client_config(&cl3, &ccfg);
    ccfg.busy_timeout_ms = 2000;
    struct store_client locker, contender;
    store_client_init(&locker, &ccfg);
    store_client_init(&contender, &ccfg);
    IT_CHECK(&cl3, store_client_connect(&locker), "locker connects");
    assert_int_equal(store_conn_exec_sql(&locker.conn, "BEGIN IMMEDIATE", NULL, 0, NULL), 0);
    for (int i = 0; i < 3; i++) {
        int rv = lease_tick(&d, &contender, &held, &epoch);
        assert_int_equal(rv, 0);
        assert_false(held);
        clock_fake_advance(&fd, 300000000ull);
    }
    assert_int_equal(contender.stats.busy_retries, 0);
    assert_int_equal(store_conn_exec_sql(&locker.conn, "ROLLBACK", NULL, 0, NULL), 0);
    /* The wait still ends: c stops renewing, d takes it once the same row was seen for a duration
     * (here the write transaction is needed, and the lock is free again). */
    clock_fake_advance(&fd, 800000000ull);
    IT_CHECK(&cl3, lease_tick(&d, &contender, &held, &epoch), "d takes the expired lease");
    assert_true(held);
    assert_int_equal(epoch, 2);
    store_client_close(&locker);
    store_client_close(&contender);
}

static void test_config_rules(void **state)
{
    (void)state;
    struct lease l;
    struct lease_config bad = {.name = "x", .holder = "h", .duration_ms = 1000, .renew_deadline_ms = 1000};
    assert_int_equal(lease_init(&l, &bad), GERR_INVAL);
    struct lease_config bad2 = {.name = "", .holder = "h"};
    assert_int_equal(lease_init(&l, &bad2), GERR_INVAL);
    struct lease_config ok = {.name = "x", .holder = "h"};
    assert_int_equal(lease_init(&l, &ok), 0);
    assert_int_equal(l.duration_ms, LEASE_DEFAULT_DURATION_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fencing),
        cmocka_unit_test(test_contender_only_reads),
        cmocka_unit_test(test_config_rules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
