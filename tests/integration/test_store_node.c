/* gantry-store-node as a process: flag errors, join failures and stops, all bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "it_common.h"

static char dir[256];
static char out_path[300], err_path[300];
static char errmsg[GERR_MSG_SIZE];
static struct cluster cluster; /* one bootstrapped node, for the join cases */

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/gantry-node-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(out_path, sizeof out_path, "%s/out", dir);
    snprintf(err_path, sizeof err_path, "%s/err", dir);
    struct cluster_opts o = {.node_bin = it_node_bin()};
    if (cluster_start(&cluster, 1, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rv = cluster_stop_checked(&cluster, errmsg);
    if (rv != 0) {
        fprintf(stderr, "%s\n", errmsg);
    }
    cluster_rm_rf(dir);
    return rv == 0 ? 0 : -1;
}

/* Run the node with @args (NULL-terminated, after the program), wait up to 60 s for it to exit. */
static int run_node(const char *const *args, char *err_tail, size_t len)
{
    const char *argv[24];
    int k = 0;
    struct proc p;
    argv[k++] = it_node_bin();
    while (*args != NULL && k < 23) {
        argv[k++] = *args++;
    }
    argv[k] = NULL;
    struct proc_spec spec = {.argv = argv, .stdout_path = out_path, .stderr_path = err_path};
    assert_int_equal(proc_spawn(&p, &spec, errmsg), 0);
    if (proc_reap(&p, 60000, NULL) != 0) {
        proc_kill(&p);
        fail_msg("gantry-store-node did not exit within 60 s");
    }
    proc_file_tail(err_path, len - 1, err_tail, len);
    return WIFEXITED(p.status) ? WEXITSTATUS(p.status) : 128 + WTERMSIG(p.status);
}

static void test_bad_flags(void **state)
{
    char tail[8192];
    char ndir[300];
    (void)state;
    snprintf(ndir, sizeof ndir, "%s/n", dir);

    const char *missing[] = {"--id", "2", NULL};
    assert_int_equal(run_node(missing, tail, sizeof tail), 2);
    assert_non_null(strstr(tail, "--id, --address and --dir are required"));

    const char *zero[] = {"--id", "0", "--address", "127.0.0.1:1", "--dir", ndir, NULL};
    assert_int_equal(run_node(zero, tail, sizeof tail), 2);
    assert_non_null(strstr(tail, "--id must be a non-zero integer"));

    const char *unknown[] = {"--id", "2", "--address", "127.0.0.1:1", "--dir", ndir, "--bogus", NULL};
    assert_int_equal(run_node(unknown, tail, sizeof tail), 2);
    assert_non_null(strstr(tail, "--bogus"));

    const char *latency[] = {"--id",         "2", "--address", "127.0.0.1:1", "--dir", ndir,
                             "--latency-ms", "x", NULL};
    assert_int_equal(run_node(latency, tail, sizeof tail), 2);
    assert_non_null(strstr(tail, "--latency-ms"));

    const char *both[] = {"--id",   "2",           "--address", "127.0.0.1:1", "--dir", ndir,
                          "--join", "127.0.0.1:1", "--voter",   "--standby",   NULL};
    assert_int_equal(run_node(both, tail, sizeof tail), 2);

    const char *join1[] = {"--id", "1",      "--address",   "127.0.0.1:1", "--dir",
                           ndir,   "--join", "127.0.0.1:2", NULL};
    assert_int_equal(run_node(join1, tail, sizeof tail), 2);
    assert_non_null(strstr(tail, "node 1 bootstraps"));

    /* Not an IPv4 literal: refused before anything is created. */
    const char *dns[] = {"--id", "2", "--address", "localhost:7001", "--dir", ndir, NULL};
    assert_int_equal(run_node(dns, tail, sizeof tail), 1);
    assert_non_null(strstr(tail, "not a.b.c.d:port"));
    struct stat st;
    assert_int_not_equal(stat(ndir, &st), 0);
}

static void test_join_times_out(void **state)
{
    char tail[8192], ndir[300], addr[32];
    (void)state;
    snprintf(ndir, sizeof ndir, "%s/lonely", dir);
    /* The cluster's port + 3 is free or not ours; either way nobody there is a leader. */
    const char *port = strrchr(cluster.nodes[0].address, ':') + 1;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", atoi(port) + 3);
    const char *args[] = {"--id",   "5",           "--address",         addr,   "--dir", ndir,
                          "--join", "127.0.0.1:9", "--join-timeout-ms", "1500", NULL};
    uint64_t t0 = it_now_ms();
    assert_int_equal(run_node(args, tail, sizeof tail), 1);
    assert_true(it_now_ms() - t0 < 45000);
    assert_non_null(strstr(tail, "could not join"));
    /* The data dir was created private. */
    struct stat st;
    assert_int_equal(stat(ndir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void test_id_taken_by_another_address(void **state)
{
    char tail[8192], ndir[300], addr[32];
    (void)state;
    snprintf(ndir, sizeof ndir, "%s/dup", dir);
    const char *port = strrchr(cluster.nodes[0].address, ':') + 1;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", atoi(port) + 4);
    /* The configuration already holds id 7 at another address (an offline spare): a node
     * starting as id 7 must refuse to join rather than take over that identity. */
    struct store_client cl;
    struct store_client_config cfg = {0};
    cluster_client_config(&cluster, &cfg);
    assert_int_equal(store_client_init(&cl, &cfg), 0);
    IT_CHECK(&cluster, store_client_add(&cl, 7, "127.0.0.1:9"), cl.errmsg);
    const char *args[] = {"--id",
                          "7",
                          "--address",
                          addr,
                          "--dir",
                          ndir,
                          "--join",
                          cluster.nodes[0].address,
                          "--join-timeout-ms",
                          "20000",
                          NULL};
    assert_int_equal(run_node(args, tail, sizeof tail), 1);
    assert_non_null(strstr(tail, "pick another id"));
    IT_CHECK(&cluster, store_client_remove(&cl, 7), cl.errmsg);
    store_client_close(&cl);
}

static void test_sigterm_while_joining(void **state)
{
    char ndir[300], addr[32];
    struct proc p;
    (void)state;
    snprintf(ndir, sizeof ndir, "%s/term", dir);
    const char *port = strrchr(cluster.nodes[0].address, ':') + 1;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", atoi(port) + 5);
    const char *argv[] = {it_node_bin(), "--id",   "6",           "--address",         addr,     "--dir",
                          ndir,          "--join", "127.0.0.1:9", "--join-timeout-ms", "600000", NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out_path, .stderr_path = err_path};
    assert_int_equal(proc_spawn(&p, &spec, errmsg), 0);
    /* Wait until it is in its join loop (it logs each failed attempt), then stop it. */
    uint64_t deadline = it_now_ms() + 30000;
    char tail[4096];
    while (strstr(proc_file_tail(err_path, sizeof tail - 1, tail, sizeof tail), "retrying") == NULL &&
           it_now_ms() < deadline) {
        clock_system()->sleep_ns(clock_system(), 10000000);
    }
    assert_non_null(strstr(tail, "retrying"));
    assert_int_equal(proc_signal(&p, SIGTERM), 0);
    /* The join loop checks for SIGTERM between attempts (each bounded by the client's timeouts). */
    assert_int_equal(proc_reap(&p, 60000, NULL), 0);
    assert_true(WIFEXITED(p.status));
    assert_int_equal(WEXITSTATUS(p.status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_join_times_out),
        cmocka_unit_test(test_id_taken_by_another_address),
        cmocka_unit_test(test_sigterm_while_joining),
    };
    return cmocka_run_group_tests_name("store_node", tests, setup, teardown);
}
