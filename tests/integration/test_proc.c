/* lib/proc: spawning, waiting for a line, signals, reaping with deadlines. Children are /bin/sh
 * scripts; every wait has a deadline well above what the script needs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/proc.h"
#include "tools/localcluster.h"

static char dir[256];
static char out_path[300], err_path[300];
static char errmsg[GERR_MSG_SIZE];

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/gantry-proc-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(out_path, sizeof out_path, "%s/out", dir);
    snprintf(err_path, sizeof err_path, "%s/err", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return cluster_rm_rf(dir) == 0 ? 0 : -1;
}

static void spawn_sh(struct proc *p, const char *script, const char *const *env)
{
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    struct proc_spec spec = {.argv = argv, .env = env, .stdout_path = out_path, .stderr_path = err_path};
    assert_int_equal(proc_spawn(p, &spec, errmsg), 0);
}

static void test_wait_line_and_env(void **state)
{
    struct proc p;
    char line[128];
    const char *env[] = {"GANTRY_PROC_TEST=hello there", "HOME", NULL};
    (void)state;
    spawn_sh(&p, "echo noise; echo \"READY $GANTRY_PROC_TEST ${HOME:-unset}\"; echo err >&2; exec sleep 30",
             env);
    assert_int_equal(proc_wait_line(&p, "READY ", 20000, line, sizeof line, errmsg), 0);
    assert_string_equal(line, "READY hello there unset");
    assert_true(proc_running(&p));
    /* A second wait only sees lines after the first match. */
    assert_int_equal(proc_wait_line(&p, "READY ", 50, line, sizeof line, errmsg), GERR_TIMEOUT);
    assert_int_equal(proc_stop(&p, 20000), 0);
    assert_true(WIFSIGNALED(p.status));
    assert_int_equal(WTERMSIG(p.status), SIGTERM);
    assert_false(proc_running(&p));
    assert_int_equal(proc_signal(&p, SIGTERM), GERR_CLOSED);
    char tail[64];
    assert_string_equal(proc_file_tail(err_path, 4, tail, sizeof tail), "err\n");
}

static void test_exit_before_line(void **state)
{
    struct proc p;
    char line[64];
    (void)state;
    spawn_sh(&p, "echo almost; exit 3", NULL);
    uint64_t t0 = clock_mono_ms(clock_system());
    assert_int_equal(proc_wait_line(&p, "READY", 60000, line, sizeof line, errmsg), GERR_CLOSED);
    /* Noticed through the exit, not the deadline. */
    assert_true(clock_mono_ms(clock_system()) - t0 < 30000);
    assert_true(WIFEXITED(p.status));
    assert_int_equal(WEXITSTATUS(p.status), 3);
    assert_non_null(strstr(errmsg, "exited with status 3"));
}

static void test_line_printed_just_before_exit(void **state)
{
    struct proc p;
    char line[64];
    (void)state;
    spawn_sh(&p, "printf 'REA'; printf 'DY 1\\n'", NULL);
    assert_int_equal(proc_reap(&p, 20000, NULL), 0);
    assert_int_equal(proc_wait_line(&p, "READY", 1000, line, sizeof line, errmsg), 0);
    assert_string_equal(line, "READY 1");
}

static void test_stop_needs_sigkill(void **state)
{
    struct proc p;
    char line[16];
    (void)state;
    spawn_sh(&p, "trap '' TERM; echo UP; while :; do sleep 1; done", NULL);
    assert_int_equal(proc_wait_line(&p, "UP", 20000, line, sizeof line, errmsg), 0);
    assert_int_equal(proc_reap(&p, 100, NULL), GERR_TIMEOUT);
    assert_int_equal(proc_stop(&p, 300), GERR_TIMEOUT);
    assert_true(WIFSIGNALED(p.status));
    assert_int_equal(WTERMSIG(p.status), SIGKILL);
}

static void test_kill_and_missing_program(void **state)
{
    struct proc p;
    (void)state;
    spawn_sh(&p, "exec sleep 30", NULL);
    proc_kill(&p);
    assert_true(WIFSIGNALED(p.status));
    assert_int_equal(WTERMSIG(p.status), SIGKILL);

    const char *argv[] = {"/nonexistent/gantry-no-such-binary", NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out_path, .stderr_path = err_path};
    assert_int_equal(proc_spawn(&p, &spec, errmsg), 0);
    assert_int_equal(proc_reap(&p, 20000, NULL), 0);
    assert_true(WIFEXITED(p.status));
    assert_int_equal(WEXITSTATUS(p.status), 127);
    char tail[256];
    assert_non_null(strstr(proc_file_tail(err_path, 200, tail, sizeof tail), "cannot execute"));

    const char *none[] = {NULL};
    spec.argv = none;
    assert_int_equal(proc_spawn(&p, &spec, errmsg), GERR_INVAL);
}

static void test_no_inherited_fds(void **state)
{
    struct proc p;
    char line[64];
    (void)state;
    /* An fd of ours without CLOEXEC must not reach the child. */
    int fd = dup(2);
    assert_true(fd > 2);
    char script[128];
    snprintf(script, sizeof script, "if [ -e /proc/self/fd/%d ]; then echo FD open; else echo FD closed; fi",
             fd);
    spawn_sh(&p, script, NULL);
    assert_int_equal(proc_wait_line(&p, "FD", 20000, line, sizeof line, errmsg), 0);
    assert_string_equal(line, "FD closed");
    proc_reap(&p, 20000, NULL);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_line_and_env),
        cmocka_unit_test(test_exit_before_line),
        cmocka_unit_test(test_line_printed_just_before_exit),
        cmocka_unit_test(test_stop_needs_sigkill),
        cmocka_unit_test(test_kill_and_missing_program),
        cmocka_unit_test(test_no_inherited_fds),
    };
    return cmocka_run_group_tests_name("proc", tests, setup, teardown);
}
