/* Disaster recovery on a real cluster: lose 2 of 3 nodes for good, recover the survivor with
 * dqlite's node recovery (gantry-store-node --recover), find every acknowledged write, take new
 * writes, and grow back to 3 voters with fresh nodes. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "it_common.h"

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
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cluster_stop(&cl3);
    return 0;
}

static void client(struct store_client *c, unsigned leader_timeout_ms)
{
    struct store_client_config cfg = {.leader_timeout_ms = leader_timeout_ms};
    cluster_client_config(&cl3, &cfg);
    assert_int_equal(store_client_init(c, &cfg), 0);
}

static int run_recover(unsigned survivor)
{
    char id[24], members[96], out[PROC_PATH_MAX + 16], err[PROC_PATH_MAX + 16];
    struct cluster_node *nd = &cl3.nodes[survivor];
    snprintf(id, sizeof id, "%" PRIu64, nd->id);
    snprintf(members, sizeof members, "%" PRIu64 "=%s/voter", nd->id, nd->address);
    snprintf(out, sizeof out, "%s/recover.out", cl3.root);
    snprintf(err, sizeof err, "%s/recover.log", cl3.root);
    const char *argv[] = {it_node_bin(), "--id",  id,          "--address", nd->address,
                          "--dir",       nd->dir, "--recover", members,     NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    struct proc p;
    int status;
    if (proc_spawn(&p, &spec, errmsg) != 0 || proc_reap(&p, 30000, &status) != 0) {
        proc_kill(&p);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void lose_two_of_three_and_recover_the_survivor(void **state)
{
    (void)state;
    struct store_client c;
    client(&c, 15000);
    IT_CHECK(&cl3, store_client_exec(&c, "CREATE TABLE acked (id INTEGER PRIMARY KEY) STRICT", NULL, 0, NULL),
             c.errmsg);
    int64_t acked = 0;
    for (int64_t i = 0; i < 200; i++) {
        struct proto_value v = proto_int(i);
        IT_CHECK(&cl3, store_client_exec(&c, "INSERT INTO acked (id) VALUES (?)", &v, 1, NULL), c.errmsg);
        acked++;
    }
    /* The survivor is the leader: an acknowledged write is on a majority, and with 2 of 3 gone
     * only the node with the most up-to-date log is sure to hold them all (the runbook's step).
     * Make it node 1, because growing back must never restart id 1 with an empty data dir (it
     * would bootstrap a separate cluster). */
    uint64_t leader = 0;
    IT_CHECK(&cl3, cluster_leader(&cl3, 10000, &leader, errmsg), errmsg);
    if (leader != 1) {
        IT_CHECK(&cl3, store_client_transfer(&c, 1), c.errmsg);
        leader = 0;
    }
    store_client_close(&c);
    uint64_t deadline = it_now_ms() + 10000;
    while (leader != 1 && it_now_ms() < deadline) {
        IT_CHECK(&cl3, cluster_leader(&cl3, 10000, &leader, errmsg), errmsg);
    }
    assert_int_equal(leader, 1);
    unsigned survivor = 0;
    for (unsigned i = 0; i < 3; i++) {
        if (i != survivor) {
            cluster_node_kill(&cl3, i);
        }
    }
    /* Without a quorum nothing is acknowledged. The survivor may still have appended the write
     * to its log: then the client says its outcome is unknown, and recovery may commit it. */
    client(&c, 1500);
    struct proto_value v = proto_int(1000);
    int rv = store_client_exec(&c, "INSERT INTO acked (id) VALUES (?)", &v, 1, NULL);
    assert_int_not_equal(rv, 0);
    bool in_doubt = rv == GERR_UNKNOWN_OUTCOME;
    fprintf(stderr, "write without quorum: %s (%s)\n", gerr_name(rv), c.errmsg);
    store_client_close(&c);

    /* Recovery: stop the survivor, rewrite its configuration to itself alone, start it. */
    cluster_node_kill(&cl3, survivor);
    uint64_t t0 = it_now_ms();
    assert_int_equal(run_recover(survivor), 0);
    IT_CHECK(&cl3, cluster_node_start(&cl3, survivor, errmsg), errmsg);
    client(&c, 15000);
    int64_t n;
    IT_CHECK(&cl3, store_client_query_int(&c, "SELECT count(*) FROM acked", NULL, 0, &n), c.errmsg);
    fprintf(stderr, "recovered node %" PRIu64 " serving again %" PRIu64 " ms after the recovery started\n",
            leader, it_now_ms() - t0);
    /* Every acknowledged write, plus at most the one whose outcome was unknown. */
    int64_t extra;
    IT_CHECK(&cl3, store_client_query_int(&c, "SELECT count(*) FROM acked WHERE id = 1000", NULL, 0, &extra),
             c.errmsg);
    assert_true(extra == 0 || in_doubt);
    assert_int_equal(n, acked + extra);
    fprintf(stderr, "after recovery: %" PRId64 " rows (%" PRId64 " acknowledged, in-doubt write %s)\n", n,
            acked, extra ? "committed" : "absent");
    v = proto_int(1001);
    IT_CHECK(&cl3, store_client_exec(&c, "INSERT INTO acked (id) VALUES (?)", &v, 1, NULL), c.errmsg);
    acked += extra;
    store_client_close(&c);

    /* Grow back with fresh nodes: the dead ones' data dirs are gone for good. */
    for (unsigned i = 0; i < 3; i++) {
        if (i == survivor) {
            continue;
        }
        assert_int_equal(cluster_rm_rf(cl3.nodes[i].dir), 0);
    }
    cl3.join_on_restart = true;
    for (unsigned i = 0; i < 3; i++) {
        if (i != survivor) {
            IT_CHECK(&cl3, cluster_node_start(&cl3, i, errmsg), errmsg);
        }
    }
    IT_CHECK(&cl3, cluster_wait_voters(&cl3, 3, 60000, errmsg), errmsg);
    for (unsigned i = 0; i < 3; i++) {
        IT_CHECK(&cl3,
                 cluster_wait_node_value(&cl3, i, "gantry", "SELECT count(*) FROM acked", acked + 1, 30000,
                                         errmsg),
                 errmsg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lose_two_of_three_and_recover_the_survivor),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
