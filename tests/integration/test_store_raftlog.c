/* raft/raftlog.h against the logs of real dqlite nodes: a quiet cluster's followers hold the
 * leader's last entries; a stopped follower is behind by exactly the transactions written while
 * it was stopped, and catches up once resumed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <time.h>

#include "it_common.h"
#include "raft/raftlog.h"

#define LEADER_MAX 65536u

static struct cluster cl3;
static char errmsg[GERR_MSG_SIZE];
static struct raftlog_entry_id leader_ids[LEADER_MAX];
/* A reader per node, kept across calls as gantryd keeps its own: each call reads on from where the
 * last one stopped, and must agree with a fresh raftlog_tail. */
static struct raftlog_reader *readers[3];

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
    for (unsigned i = 0; i < 3; i++) {
        raftlog_reader_free(readers[i]);
        readers[i] = NULL;
    }
    cluster_stop(&cl3);
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void write_n(struct store_client *c, int base, int n)
{
    for (int i = 0; i < n; i++) {
        struct proto_value p[] = {proto_int(base + i)};
        int rv = store_client_exec(c, "INSERT INTO t (id) VALUES (?)", p, 1, NULL);
        if (rv != 0) {
            fprintf(stderr, "insert %d: %s\n", base + i, c->errmsg);
        }
        assert_int_equal(rv, 0);
    }
}

/* What a reader of the same node answers: see tail_both_ways. */
static struct raftlog_entry_id reader_ids[LEADER_MAX];

static void tail_both_ways(unsigned node, struct raftlog_entry_id *out, unsigned max, unsigned *n)
{
    if (readers[node] == NULL) {
        readers[node] = raftlog_reader_new(cl3.nodes[node].dir);
    }
    unsigned n_reader = 0;
    assert_int_equal(raftlog_tail(cl3.nodes[node].dir, out, max, n, errmsg), 0);
    /* The reader is asked for its widest window, not @max: the node may append between the two
     * reads, and a window of @max (the probe's 8) then no longer holds the first read's last
     * entries (under ASan it did not, once). Its answer ends at or after the first's and holds it. */
    assert_int_equal(raftlog_reader_tail(readers[node], reader_ids, LEADER_MAX, &n_reader, errmsg), 0);
    assert_true(n_reader >= *n || n_reader == LEADER_MAX);
    unsigned k = *n < RAFTLOG_PROBE_TAIL ? *n : RAFTLOG_PROBE_TAIL;
    if (k > 0 && raftlog_lag(reader_ids, n_reader, out + *n - k, k) == RAFTLOG_LAG_UNKNOWN) {
        fail_msg("node %u: the reader's %u entries do not hold the last %u of raftlog_tail's %u", node,
                 n_reader, k, *n);
    }
}

/* The lag of node @i behind node @leader, read from their directories now. */
static uint64_t lag_of(unsigned leader, unsigned i)
{
    unsigned n_leader = 0, n_target = 0;
    struct raftlog_entry_id tail[RAFTLOG_PROBE_TAIL];
    tail_both_ways(leader, leader_ids, LEADER_MAX, &n_leader);
    tail_both_ways(i, tail, RAFTLOG_PROBE_TAIL, &n_target);
    assert_true(n_leader > 0);
    assert_int_equal(n_target, RAFTLOG_PROBE_TAIL);
    return raftlog_lag(leader_ids, n_leader, tail, n_target);
}

static uint64_t wait_lag(unsigned leader, unsigned i, uint64_t want, unsigned timeout_ms)
{
    uint64_t deadline = it_now_ms() + timeout_ms, lag;
    while ((lag = lag_of(leader, i)) != want && it_now_ms() < deadline) {
        sleep_ms(20);
    }
    return lag;
}

/* SIGSTOP lands when the process is next scheduled: wait until every thread is stopped ('T' in
 * /proc/PID/task/TID/stat), so no append reaches it after the test thinks it stopped. */
static void stop_and_wait(pid_t pid)
{
    assert_int_equal(kill(pid, SIGSTOP), 0);
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    for (int tries = 0; tries < 500; tries++) {
        DIR *d = opendir(dir);
        assert_non_null(d);
        bool all = true;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') {
                continue;
            }
            char path[384], buf[512] = "";
            snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
            FILE *f = fopen(path, "r");
            if (f == NULL) {
                continue;
            }
            size_t got = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[got] = '\0';
            const char *paren = strrchr(buf, ')');
            all = all && paren != NULL && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
        }
        closedir(d);
        if (all) {
            return;
        }
        sleep_ms(2);
    }
    fail_msg("process %d did not stop within a second of SIGSTOP", (int)pid);
}

static void followers_hold_the_leaders_tail_and_a_stopped_one_lags(void **state)
{
    (void)state;
    struct store_client_config cfg = {0};
    struct store_client c;
    cluster_client_config(&cl3, &cfg);
    store_client_init(&c, &cfg);
    assert_int_equal(store_client_exec(&c, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL, 0, NULL), 0);
    write_n(&c, 0, 40);
    uint64_t leader_id = 0;
    assert_int_equal(cluster_leader(&cl3, 10000, &leader_id, errmsg), 0);
    unsigned leader = (unsigned)cluster_index_of(&cl3, leader_id);
    unsigned f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;
    /* Quiet: both followers end where the leader ends. */
    assert_int_equal(wait_lag(leader, f1, 0, 10000), 0);
    assert_int_equal(wait_lag(leader, f2, 0, 10000), 0);
    /* A follower that cannot run falls behind by one entry per transaction. */
    stop_and_wait(cl3.nodes[f1].proc.pid);
    write_n(&c, 1000, 25);
    sleep_ms(200);
    uint64_t lag = lag_of(leader, f1);
    /* One entry per transaction, plus one per election if the machine was slow enough for one. */
    if (lag < 25 || lag > 28) {
        fail_msg("a follower stopped during 25 writes is %" PRIu64 " entries behind", lag);
    }
    assert_int_equal(wait_lag(leader, f2, 0, 10000), 0);
    /* Resumed, it catches up. */
    assert_int_equal(kill(cl3.nodes[f1].proc.pid, SIGCONT), 0);
    assert_int_equal(wait_lag(leader, f1, 0, 10000), 0);
    /* Far behind (more than a segment's worth of big entries) is still measured or unknown,
     * never 0. */
    stop_and_wait(cl3.nodes[f1].proc.pid);
    write_n(&c, 5000, 300);
    sleep_ms(200);
    lag = lag_of(leader, f1);
    if ((lag < 300 || lag > 303) && lag != RAFTLOG_LAG_UNKNOWN) {
        fail_msg("a follower stopped during 300 writes is %" PRIu64 " entries behind", lag);
    }
    assert_int_equal(kill(cl3.nodes[f1].proc.pid, SIGCONT), 0);
    assert_int_equal(wait_lag(leader, f1, 0, 30000), 0);
    print_message("raftlog: followers at lag 0 when quiet; 25 behind after 25 writes while stopped (measured "
                  "%" PRIu64 " after 300); caught up after SIGCONT\n",
                  lag);
    store_client_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(followers_hold_the_leaders_tail_and_a_stopped_one_lags),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
