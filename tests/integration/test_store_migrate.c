/* Cluster-wide migrations from several replicas starting at the same moment.
 *
 * Three separate processes (forked from this one, released together through a pipe) call
 * store_migrate with the same migrations against one 3-node cluster. All must succeed, each
 * migration must run exactly once (each one appends its version to applied_log, which has no
 * unique constraint, so a second run would show), and store_schema_version must return the
 * highest version. Then a migration list with a DATETIME column is refused with GERR_REFUSED and
 * changes nothing. Repeated on two databases so the race is run twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "it_common.h"
#include "store/migrate.h"

#define N_PROCS 3

static struct cluster cluster;
static char errmsg[GERR_MSG_SIZE];

static const struct store_migration migrations[] = {
    {1, "log and a",
     "CREATE TABLE applied_log (version INTEGER NOT NULL) STRICT;"
     "INSERT INTO applied_log (version) VALUES (1);"
     "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT;"},
    {2, "b",
     "CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER NOT NULL REFERENCES a (id)) STRICT;"
     "INSERT INTO applied_log (version) VALUES (2);"},
    {3, "a.note", "ALTER TABLE a ADD COLUMN note TEXT; INSERT INTO applied_log (version) VALUES (3);"},
};

static const struct store_migration with_datetime[] = {
    migrations[0],
    migrations[1],
    migrations[2],
    {4, "bad",
     "CREATE TABLE bad (id INTEGER PRIMARY KEY, at DATETIME); INSERT INTO applied_log (version) VALUES (4);"},
};

static int group_setup(void **state)
{
    struct cluster_opts o = {.node_bin = it_node_bin()};
    (void)state;
    if (cluster_start(&cluster, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (cluster_stop_checked(&cluster, errmsg) != 0) {
        fprintf(stderr, "cluster_stop: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static void client_for(struct store_client *cl, const char *db)
{
    struct store_client_config cfg = {.database = db, .leader_timeout_ms = 30000, .busy_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    assert_int_equal(store_client_init(cl, &cfg), 0);
}

/* In the child: wait for the start signal (EOF on the pipe), migrate, exit with the result. */
static void child_main(int start_fd, const char *db, pid_t parent)
{
    struct store_client cl;
    char b;
    signal(SIGINT, SIG_DFL); /* the parent's handler would stop the cluster's nodes */
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        _exit(100);
    }
    while (read(start_fd, &b, 1) < 0 && errno == EINTR) {
    }
    struct store_client_config cfg = {.database = db, .leader_timeout_ms = 30000, .busy_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    int rv = store_client_init(&cl, &cfg);
    if (rv == 0) {
        rv = store_migrate(&cl, migrations, 3);
    }
    if (rv != 0) {
        fprintf(stderr, "migrate child %d: %s (%s)\n", (int)getpid(), cl.errmsg, gerr_name(rv));
    } else {
        fprintf(stderr, "migrate child %d: ok, %llu BUSY retries\n", (int)getpid(),
                (unsigned long long)cl.stats.busy_retries);
    }
    store_client_close(&cl);
    fflush(stderr);
    _exit(rv);
}

static void migrate_concurrently(const char *db)
{
    int fds[2];
    pid_t pids[N_PROCS];

    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < N_PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(fds[1]);
            child_main(fds[0], db, getppid());
        }
    }
    close(fds[0]);
    close(fds[1]); /* all three start now */

    uint64_t deadline = it_now_ms() + 120000;
    int status[N_PROCS];
    for (int i = 0; i < N_PROCS; i++) {
        for (;;) {
            pid_t r = waitpid(pids[i], &status[i], WNOHANG);
            if (r == pids[i]) {
                break;
            }
            if (it_now_ms() > deadline) {
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &status[i], 0);
                fprintf(stderr, "migrate child %d did not finish within 120 s\n", (int)pids[i]);
                break;
            }
            clock_system()->sleep_ns(clock_system(), 5000000);
        }
    }
    for (int i = 0; i < N_PROCS; i++) {
        assert_true(WIFEXITED(status[i]));
        assert_int_equal(WEXITSTATUS(status[i]), 0);
    }
}

static void check_applied_once(const char *db)
{
    struct store_client cl;
    int64_t v;
    client_for(&cl, db);
    IT_CHECK(&cluster, store_schema_version(&cl, &v), cl.errmsg);
    assert_int_equal(v, 3);
    IT_CHECK(&cluster, store_client_query_int(&cl, "SELECT count(*) FROM schema_migrations", NULL, 0, &v),
             cl.errmsg);
    assert_int_equal(v, 3);
    IT_CHECK(&cluster, store_client_query_int(&cl, "SELECT count(*) FROM applied_log", NULL, 0, &v),
             cl.errmsg);
    assert_int_equal(v, 3);
    IT_CHECK(&cluster,
             store_client_query_int(
                 &cl, "SELECT count(DISTINCT version) FROM applied_log WHERE version BETWEEN 1 AND 3", NULL,
                 0, &v),
             cl.errmsg);
    assert_int_equal(v, 3);
    /* The schema is usable: migration 3's column exists. */
    IT_CHECK(&cluster,
             store_client_exec(&cl, "INSERT INTO a (id, name, note) VALUES (1, 'x', 'y')", NULL, 0, NULL),
             cl.errmsg);

    /* Running again is a no-op. */
    IT_CHECK(&cluster, store_migrate(&cl, migrations, 3), cl.errmsg);
    IT_CHECK(&cluster, store_client_query_int(&cl, "SELECT count(*) FROM applied_log", NULL, 0, &v),
             cl.errmsg);
    assert_int_equal(v, 3);

    /* A DATETIME column is refused before anything runs. */
    assert_int_equal(store_migrate(&cl, with_datetime, 4), GERR_REFUSED);
    assert_non_null(strstr(cl.errmsg, "DATETIME"));
    IT_CHECK(&cluster, store_schema_version(&cl, &v), cl.errmsg);
    assert_int_equal(v, 3);
    IT_CHECK(
        &cluster,
        store_client_query_int(&cl, "SELECT count(*) FROM sqlite_master WHERE name = 'bad'", NULL, 0, &v),
        cl.errmsg);
    assert_int_equal(v, 0);
    IT_CHECK(&cluster, store_client_query_int(&cl, "SELECT count(*) FROM applied_log", NULL, 0, &v),
             cl.errmsg);
    assert_int_equal(v, 3);
    store_client_close(&cl);
    IT_CHECK(&cluster, cluster_check_alive(&cluster, errmsg), errmsg);
}

static void test_concurrent_migrations(void **state)
{
    /* Database names that are not prefixes of each other (dqlite 1.11 aliases those). */
    static const char *const dbs[] = {"migone", "migtwo"};
    (void)state;
    for (unsigned i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        migrate_concurrently(dbs[i]);
        check_applied_once(dbs[i]);
    }
}

static void test_empty_database_version(void **state)
{
    struct store_client cl;
    int64_t v = -1;
    (void)state;
    client_for(&cl, "migempty");
    IT_CHECK(&cluster, store_schema_version(&cl, &v), cl.errmsg);
    assert_int_equal(v, 0);
    /* Versions must be 1, 2, 3...: a gap is refused before anything runs. */
    static const struct store_migration gap[] = {{1, "a", "CREATE TABLE x (id INTEGER PRIMARY KEY) STRICT"},
                                                 {3, "c", "CREATE TABLE y (id INTEGER PRIMARY KEY) STRICT"}};
    assert_int_equal(store_migrate(&cl, gap, 2), GERR_INVAL);
    IT_CHECK(&cluster, store_schema_version(&cl, &v), cl.errmsg);
    assert_int_equal(v, 0);
    store_client_close(&cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_migrations),
        cmocka_unit_test(test_empty_database_version),
    };
    return cmocka_run_group_tests_name("store_migrate", tests, group_setup, group_teardown);
}
