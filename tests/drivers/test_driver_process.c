/* The process driver with real bubblewrap sandboxes: the shared conformance checks, then what
 * process.h promises: the whole tree (background children, new sessions) dies on delete; the
 * sandbox is isolated (own network, hostname, uid, hidden state dir) with a writable workspace and
 * the spec's environment, which never shows on bwrap's command line; exits show as STOPPED/ERROR;
 * a sandbox outlives the process that created it and is adopted by another; a recorded pid whose
 * start time does not match is never signalled; interrupted and corrupt records are reported and
 * deletable.
 *
 * If bubblewrap cannot create namespaces here, the tests that need it are skipped: the program
 * prints why and exits 77 (ctest SKIP_RETURN_CODE), after running the tests that need no bwrap.
 * GANTRY_TEST_BWRAP=/bin/false shows that path on a machine where bwrap works. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sched.h>
#include <poll.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conformance.h"
#include "drivers/process.h"
#include "drivers/process_creds.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/mem.h"

static char dir[256];
static const char *const sleeper[] = {"sleep", "infinity"};

static struct driver *open_at(const char *state_dir, const char *bwrap)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_process_config cfg = {.state_dir = state_dir,
                                        .bwrap_path = bwrap,
                                        .sandbox_uid = -1,
                                        .sandbox_gid = -1,
                                        .stop_timeout_ms = 10000};
    if (driver_process_new(&cfg, &d, errmsg) != 0) {
        fail_msg("driver_process_new: %s", errmsg);
    }
    return d;
}

/* GANTRY_TEST_BWRAP overrides the bwrap binary (e.g. /bin/false, to see the skip path). */
static struct driver *open_shared(void *ctx)
{
    (void)ctx;
    return open_at(dir, getenv("GANTRY_TEST_BWRAP"));
}

static const struct conf_env env = {
    .open = open_shared,
    .command = sleeper,
    .n_command = 2,
    .image = "",
    .config_key = "network",
    .config_value = "none",
    .ns = "team-a",
    .ready_timeout_ms = 10000,
};

static void test_lifecycle(void **state)
{
    conf_lifecycle(&env);
}

static void test_stale_epoch(void **state)
{
    conf_stale_epoch(&env);
}

static void test_adoption(void **state)
{
    conf_adoption(&env);
}

static void test_namespaces(void **state)
{
    conf_namespaces(&env);
}

static void test_config_keys(void **state)
{
    conf_config_keys(&env);
}

static void test_bad_arguments(void **state)
{
    conf_bad_arguments(&env);
}

/* ---- Helpers */

static long handle_pid(const char *handle)
{
    long pid = 0;
    assert_int_equal(sscanf(handle, "bwrap:%ld@", &pid), 1);
    return pid;
}

static unsigned long long pidns_of(long pid)
{
    char path[64], link[64];
    unsigned long long ino = 0;
    snprintf(path, sizeof path, "/proc/%ld/ns/pid", pid);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0) {
        return 0;
    }
    link[n] = '\0';
    return sscanf(link, "pid:[%llu]", &ino) == 1 ? ino : 0;
}

/* True if process @pid runs @comm (NULL: anything). */
static bool runs(long pid, const char *comm)
{
    char path[64], buf[64] = "";
    if (comm == NULL) {
        return true;
    }
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    bool ok = fgets(buf, sizeof buf, f) != NULL && strncmp(buf, comm, strlen(comm)) == 0 &&
              buf[strlen(comm)] == '\n';
    fclose(f);
    return ok;
}

/* Processes in PID namespace @ns (zombies included: they would still be a leak of the test's
 * count, and the driver's delete must not leave them behind either), running @comm if not NULL. */
static size_t count_in_ns_comm(unsigned long long ns, const char *comm)
{
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        n += *end == '\0' && pid > 0 && pidns_of(pid) == ns && runs(pid, comm);
    }
    closedir(d);
    return n;
}

static size_t count_in_ns(unsigned long long ns)
{
    return count_in_ns_comm(ns, NULL);
}

static void workspace_file(const char *id, const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/namespaces/%s/%s/%s", dir, env.ns, id, name);
}

/* Wait until the sandbox has written @name into its workspace; return its content (mem_free). */
static char *await_file(const char *id, const char *name)
{
    char path[512], errmsg[GERR_MSG_SIZE];
    struct clock *c = clock_system();
    uint64_t deadline = clock_mono_ms(c) + 10000;
    workspace_file(id, name, path, sizeof path);
    for (;;) {
        char *text;
        if (file_read_all(path, 4096, &text, NULL, errmsg) == 0 && strchr(text, '\n') != NULL) {
            *strchr(text, '\n') = '\0';
            return text;
        }
        if (clock_mono_ms(c) > deadline) {
            fail_msg("the sandbox never wrote %s", path);
        }
        c->sleep_ns(c, 5000000);
    }
}

static void create_ready(struct driver *d, uint64_t e, struct conf_spec *cs, struct driver_sandbox *s)
{
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    if (driver_create(d, e, &cs->spec, s, errmsg) != 0) {
        fail_msg("create: %s", errmsg);
    }
}

/* ---- Tests */

static void test_tree_killed(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    /* Background children, a child in its own session and a double fork: none may survive. */
    const char *const cmd[] = {"sh", "-c",
                               "sleep 1000 & sleep 1000 & setsid sleep 1000 & (sh -c 'sleep 1000 &' &); "
                               "echo started > started; exec sleep 1000"};
    conf_spec(&env, &cs, "tree");
    cs.spec.command = cmd;
    cs.spec.n_command = 3;
    create_ready(d, e, &cs, &s);
    mem_free(await_file(cs.id, "started"));
    long init = handle_pid(s.handle);
    unsigned long long ns = pidns_of(init);
    assert_true(ns != 0);
    assert_true(pidns_of(getpid()) != ns);
    struct clock *c = clock_system();
    uint64_t deadline = clock_mono_ms(c) + 5000;
    while (count_in_ns_comm(ns, "sleep") < 5 && clock_mono_ms(c) < deadline) { /* the 5 sleeps */
        c->sleep_ns(c, 5000000);
    }
    assert_int_equal(count_in_ns_comm(ns, "sleep"), 5);

    int drv = driver_delete(d, e, env.ns, cs.id, errmsg);
    if (drv != 0) {
        fail_msg("delete: %s (%s)", errmsg, gerr_name(drv));
    }
    assert_int_equal(count_in_ns(ns), 0); /* delete returns only when the tree is gone */
    char path[512];
    workspace_file(cs.id, "", path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    driver_sandbox_close(&s);
    driver_free(d);
}

static void test_isolation_and_workspace(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    const char *const cmd[] = {
        "sh", "-c",
        "hostname > host; id -u > uid; pwd > cwd; echo \"$SECRET_TOKEN\" > env; "
        "grep -c : /proc/net/dev > netdevs; ls -A \"$STATE_DIR\" | wc -l > statedir; "
        "echo $GANTRY_SANDBOX_ID > id; touch /usr/forbidden 2>/dev/null; echo $? > rofs; "
        "echo done > done; exec sleep 1000"};
    struct driver_kv envs[] = {{"SECRET_TOKEN", "hunter2-value"}, {"STATE_DIR", dir}};
    conf_spec(&env, &cs, "iso");
    cs.spec.command = cmd;
    cs.spec.n_command = 3;
    cs.spec.env = envs;
    cs.spec.n_env = 2;
    create_ready(d, e, &cs, &s);
    mem_free(await_file(cs.id, "done"));

    const char *want[][2] = {{"host", "iso"},  {"cwd", "/home/sandbox"}, {"env", "hunter2-value"},
                             {"netdevs", "1"}, {"statedir", "0"},        {"id", cs.id},
                             {"rofs", "1"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *got = await_file(cs.id, want[i][0]);
        if (strcmp(got, want[i][1]) != 0) {
            fail_msg("%s: got \"%s\", want \"%s\"", want[i][0], got, want[i][1]);
        }
        mem_free(got);
    }
    char *uid = await_file(cs.id, "uid");
    assert_string_equal(uid, geteuid() == 0 ? "65534" : "");
    mem_free(uid);

    /* The environment's values travel on a memfd, never on a command line. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", handle_pid(s.handle));
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++) {
        buf[i] = buf[i] == '\0' ? ' ' : buf[i];
    }
    assert_null(strstr(buf, "hunter2"));

    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_sandbox_close(&s);
    driver_free(d);
}

static enum driver_phase await_end(struct driver *d, uint64_t e, const char *id, char *message, size_t len)
{
    char errmsg[GERR_MSG_SIZE];
    struct clock *c = clock_system();
    uint64_t deadline = clock_mono_ms(c) + 10000;
    for (;;) {
        struct driver_sandbox s;
        assert_int_equal(driver_get(d, e, env.ns, id, &s, errmsg), 0);
        enum driver_phase p = s.phase;
        snprintf(message, len, "%s", s.message);
        driver_sandbox_close(&s);
        if (p != DRIVER_PHASE_READY && p != DRIVER_PHASE_PROVISIONING) {
            return p;
        }
        assert_true(clock_mono_ms(c) < deadline);
        c->sleep_ns(c, 5000000);
    }
}

static void test_exit_status(void **state)
{
    char errmsg[GERR_MSG_SIZE], msg[256];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec ok, bad;
    struct driver_sandbox s;
    const char *const t[] = {"true"};
    const char *const f[] = {"sh", "-c", "exit 3"};
    conf_spec(&env, &ok, "exits-zero");
    ok.spec.command = t;
    ok.spec.n_command = 1;
    conf_spec(&env, &bad, "exits-three");
    bad.spec.command = f;
    bad.spec.n_command = 3;
    create_ready(d, e, &ok, &s);
    driver_sandbox_close(&s);
    create_ready(d, e, &bad, &s);
    driver_sandbox_close(&s);
    enum driver_phase end = await_end(d, e, ok.id, msg, sizeof msg);
    if (end != DRIVER_PHASE_STOPPED || strstr(msg, "status 0") == NULL) {
        fail_msg("\"true\" ended %s: %s", driver_phase_name(end), msg);
    }
    assert_int_equal(await_end(d, e, bad.id, msg, sizeof msg), DRIVER_PHASE_ERROR);
    assert_non_null(strstr(msg, "status 3"));
    assert_int_equal(driver_delete(d, e, env.ns, ok.id, errmsg), 0);
    assert_int_equal(driver_delete(d, e, env.ns, bad.id, errmsg), 0);
    driver_free(d);
}

static void test_bad_command(void **state)
{
    char errmsg[GERR_MSG_SIZE], msg[256];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    const char *const cmd[] = {"/no/such/program"};
    conf_spec(&env, &cs, "missing");
    cs.spec.command = cmd;
    cs.spec.n_command = 1;
    create_ready(d, e, &cs, &s);
    driver_sandbox_close(&s);
    assert_int_equal(await_end(d, e, cs.id, msg, sizeof msg), DRIVER_PHASE_ERROR);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* Read every chunk @l has now into @out (NUL-terminated, at most @cap - 1 bytes); the code that
 * ended the reading (GERR_BUSY: nothing more yet). */
static int drain_log(struct driver_log *l, char *out, size_t cap)
{
    static uint8_t chunk[DRIVER_LOG_CHUNK];
    char errmsg[GERR_MSG_SIZE];
    size_t have = strlen(out), n;
    uint64_t ts;
    int rv;
    while ((rv = driver_log_next(l, chunk, sizeof chunk, &n, &ts, errmsg)) == 0) {
        assert_true(have + n < cap);
        assert_true(ts > 1600000000000ull); /* a Unix ms time */
        memcpy(out + have, chunk, n);
        have += n;
        out[have] = '\0';
    }
    return rv;
}

/* The main process's output reaches the log with tail and since, a follower sees new output, the
 * end of the output and the deletion of the sandbox. */
static void test_logs(void **state)
{
    char errmsg[GERR_MSG_SIZE], text[4096];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs, done;
    struct driver_sandbox s;
    const char *const cmd[] = {"sh", "-c",
                               "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2; sleep infinity"};
    const char *const once[] = {"sh", "-c", "echo bye"};
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_true(caps.logs);
    conf_spec(&env, &cs, "logs");
    cs.spec.command = cmd;
    cs.spec.n_command = 3;
    create_ready(d, e, &cs, &s);
    driver_sandbox_close(&s);
    struct driver_log *l = NULL;
    struct driver_log_query all = {.tail_lines = -1};
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    text[0] = '\0';
    assert_int_equal(driver_logs_open(d, env.ns, cs.id, &all, &l, errmsg), 0);
    while (strstr(text, "err\n") == NULL && clock_mono_ms(clock_system()) < deadline) {
        assert_int_equal(drain_log(l, text, sizeof text), GERR_BUSY); /* following: more may come */
        usleep(20000);
    }
    assert_string_equal(text, "line1\nline2\nline3\nline4\nline5\nerr\n");
    /* The last two lines only; since a time in the future: nothing. */
    struct driver_log *t = NULL;
    struct driver_log_query tail2 = {.tail_lines = 2};
    assert_int_equal(driver_logs_open(d, env.ns, cs.id, &tail2, &t, errmsg), 0);
    text[0] = '\0';
    assert_int_equal(drain_log(t, text, sizeof text), GERR_BUSY);
    assert_string_equal(text, "line5\nerr\n");
    driver_log_close(t);
    struct driver_log_query later = {.tail_lines = -1,
                                     .since_ms = clock_system()->wall_ms(clock_system()) + 60000};
    assert_int_equal(driver_logs_open(d, env.ns, cs.id, &later, &t, errmsg), 0);
    text[0] = '\0';
    assert_int_equal(drain_log(t, text, sizeof text), GERR_BUSY);
    assert_string_equal(text, "");
    driver_log_close(t);
    /* Deleting the sandbox ends the follower with GERR_NOTFOUND. */
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    text[0] = '\0';
    assert_int_equal(drain_log(l, text, sizeof text), GERR_NOTFOUND);
    driver_log_close(l);
    assert_int_equal(driver_logs_open(d, env.ns, cs.id, &all, &l, errmsg), GERR_NOTFOUND);
    assert_int_equal(driver_logs_open(d, "other", cs.id, &all, &l, errmsg), GERR_NOTFOUND);
    /* A main process that ends: the reader gets everything, then GERR_CLOSED. */
    conf_spec(&env, &done, "logs-done");
    done.spec.command = once;
    done.spec.n_command = 3;
    create_ready(d, e, &done, &s);
    driver_sandbox_close(&s);
    char msg[256];
    await_end(d, e, done.id, msg, sizeof msg);
    assert_int_equal(driver_logs_open(d, env.ns, done.id, &all, &l, errmsg), 0);
    text[0] = '\0';
    int rv;
    deadline = clock_mono_ms(clock_system()) + 10000;
    while ((rv = drain_log(l, text, sizeof text)) == GERR_BUSY && clock_mono_ms(clock_system()) < deadline) {
        usleep(20000);
    }
    assert_int_equal(rv, GERR_CLOSED);
    assert_string_equal(text, "bye\n");
    driver_log_close(l);
    assert_int_equal(driver_delete(d, e, env.ns, done.id, errmsg), 0);
    driver_free(d);
}

/* Run @x to its end: write @input (then close stdin unless @keep_stdin), collect stdout and stderr
 * into @out and @err (NUL-terminated), return the exit code. Fails the test after 10 s. */
static int exec_collect(struct driver_exec *x, const char *input, bool keep_stdin, char *out, size_t out_cap,
                        char *err, size_t err_cap)
{
    int in, o, e, code = -1, sig = 0;
    driver_exec_fds(x, &in, &o, &e);
    size_t no = 0, ne = 0;
    if (input != NULL) {
        assert_int_equal(write(in, input, strlen(input)), (ssize_t)strlen(input));
    }
    if (!keep_stdin) {
        driver_exec_close_stdin(x);
    }
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    bool o_open = true, e_open = e >= 0;
    while (o_open || e_open) {
        struct pollfd p[2] = {{o_open ? o : -1, POLLIN, 0}, {e_open ? e : -1, POLLIN, 0}};
        assert_true(clock_mono_ms(clock_system()) < deadline);
        poll(p, 2, 100);
        char buf[4096];
        ssize_t r;
        if (o_open && (r = read(o, buf, sizeof buf)) >= 0) {
            o_open = r > 0;
            assert_true(no + (size_t)r < out_cap);
            memcpy(out + no, buf, (size_t)r);
            no += (size_t)r;
        } else if (o_open && errno == EIO) {
            o_open = false; /* a pty whose other side is closed */
        }
        if (e_open && (r = read(e, buf, sizeof buf)) >= 0) {
            e_open = r > 0;
            assert_true(ne + (size_t)r < err_cap);
            memcpy(err + ne, buf, (size_t)r);
            ne += (size_t)r;
        }
    }
    out[no] = '\0';
    err[ne] = '\0';
    while (driver_exec_status(x, &code, &sig) == GERR_BUSY) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        usleep(5000);
    }
    return code;
}

/* Exec joins the sandbox (PID and network namespaces, uid, workspace, environment), moves stdin,
 * stdout and stderr, returns the exit code; a TTY with a resize; signals; a missing command. */
static void test_exec(void **state)
{
    char errmsg[GERR_MSG_SIZE], out[8192], err[4096];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    const struct driver_kv envs[] = {{"FOO", "bar baz"}};
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_true(caps.exec);
    conf_spec(&env, &cs, "exec");
    cs.spec.env = envs;
    cs.spec.n_env = 1;
    create_ready(d, e, &cs, &s);
    driver_sandbox_close(&s);

    const char *const script[] = {"sh", "-c",
                                  "cat; echo oops >&2; echo \"$FOO\"; pwd; id -u; echo $$; "
                                  "grep -c : /proc/net/dev; exit 3"};
    struct driver_exec_spec xs = {.command = script, .n_command = 3};
    struct driver_exec *x = NULL;
    int xrv = driver_exec_start(d, env.ns, cs.id, &xs, &x, errmsg);
    if (xrv != 0) {
        fail_msg("exec: %s", errmsg);
    }
    assert_int_equal(exec_collect(x, "hello\n", false, out, sizeof out, err, sizeof err), 3);
    driver_exec_close(x);
    char want[256];
    snprintf(want, sizeof want, "hello\nbar baz\n/home/sandbox\n%d\n",
             geteuid() == 0 ? 65534 : (int)geteuid());
    assert_memory_equal(out, want, strlen(want));
    long pid = strtol(out + strlen(want), NULL, 10);
    assert_true(pid > 1 && pid < 100);                    /* the sandbox's PID namespace */
    assert_non_null(strstr(out + strlen(want), "\n1\n")); /* its network: loopback only */
    assert_string_equal(err, "oops\n");

    /* A TTY: stty sees the size, then the new size after a resize. */
    const char *const sz[] = {"sh", "-c", "stty size; read x; stty size"};
    struct driver_exec_spec ts = {.command = sz, .n_command = 3, .tty = true, .rows = 24, .cols = 80};
    if (driver_exec_start(d, env.ns, cs.id, &ts, &x, errmsg) != 0) {
        fail_msg("exec with a tty: %s", errmsg);
    }
    int in, o, er;
    driver_exec_fds(x, &in, &o, &er);
    assert_int_equal(er, -1);
    char tty_out[4096] = "";
    size_t n = 0;
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    while (strstr(tty_out, "24 80") == NULL) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        struct pollfd p = {o, POLLIN, 0};
        poll(&p, 1, 100);
        ssize_t r = read(o, tty_out + n, sizeof tty_out - n - 1);
        if (r > 0) {
            n += (size_t)r;
            tty_out[n] = '\0';
        }
    }
    assert_int_equal(driver_exec_resize(x, 40, 100), 0);
    assert_int_equal(exec_collect(x, "\n", true, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "40 100"));
    driver_exec_close(x);

    /* A signal ends the command: 128 + the signal. */
    const char *const sleeper2[] = {"sleep", "100"};
    struct driver_exec_spec ss = {.command = sleeper2, .n_command = 2};
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &ss, &x, errmsg), 0);
    assert_int_equal(driver_exec_signal(x, SIGTERM), 0);
    assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 128 + SIGTERM);
    int code, sig;
    assert_int_equal(driver_exec_status(x, &code, &sig), 0);
    assert_int_equal(sig, SIGTERM);
    driver_exec_close(x);
    /* SIGKILL reaches the command through the middle's control socket: 137, the middle alive to
     * end the group. */
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &ss, &x, errmsg), 0);
    assert_int_equal(driver_exec_signal(x, SIGKILL), 0);
    assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 128 + SIGKILL);
    assert_int_equal(driver_exec_status(x, &code, &sig), 0);
    assert_int_equal(sig, SIGKILL);
    driver_exec_close(x);
    /* Closing a running exec kills it. */
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &ss, &x, errmsg), 0);
    driver_exec_close(x);

    /* The command has the credentials of the sandbox's main process (the first child of bwrap's
     * init, pid 1 inside): no capability in any set, the bounding set included, no_new_privs, no
     * seccomp filter; so it cannot undo bwrap's mounts. */
    const char *const creds[] = {
        "sh", "-c",
        "f='^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):'; grep -E \"$f\" /proc/self/status; "
        "echo main; m=$(cut -d' ' -f1 /proc/1/task/1/children); grep -E \"$f\" /proc/$m/status; "
        "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); "
        "print(\"umount\", l.umount2(b\"/tmp\", 2), ctypes.get_errno()); "
        "print(\"mount\", l.mount(b\"none\", b\"/home/sandbox\", b\"tmpfs\", 0, None), ctypes.get_errno())'"};
    struct driver_exec_spec cx = {.command = creds, .n_command = 3};
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &cx, &x, errmsg), 0);
    assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 0);
    driver_exec_close(x);
    const char *want_creds =
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
        "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";
    char want_all[1024];
    snprintf(want_all, sizeof want_all, "%smain\n%sumount -1 1\nmount -1 1\n", want_creds, want_creds);
    assert_string_equal(out, want_all);

    /* Ending the session ends the command's process group: a child in the background is gone once
     * the exec is closed, and once a command that exits has ended. */
    const char *const bg[] = {"sh", "-c", "sleep 300 & echo $!; exec sleep 300"};
    const char *const bg_exit[] = {"sh", "-c", "sleep 300 & echo $!"};
    for (int round = 0; round < 2; round++) {
        struct driver_exec_spec bs = {.command = round == 0 ? bg : bg_exit, .n_command = 3};
        assert_int_equal(driver_exec_start(d, env.ns, cs.id, &bs, &x, errmsg), 0);
        char line[64] = "";
        size_t got = 0;
        driver_exec_fds(x, &in, &o, &er);
        deadline = clock_mono_ms(clock_system()) + 10000;
        while (strchr(line, '\n') == NULL) {
            assert_true(clock_mono_ms(clock_system()) < deadline);
            struct pollfd p = {o, POLLIN, 0};
            poll(&p, 1, 100);
            ssize_t r = read(o, line + got, sizeof line - got - 1);
            if (r > 0) {
                got += (size_t)r;
                line[got] = '\0';
            }
        }
        long bg_pid = strtol(line, NULL, 10);
        assert_true(bg_pid > 1);
        if (round == 1) { /* the command exits at once; its end ends the group */
            assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 0);
        }
        uint64_t t0 = clock_mono_ms(clock_system());
        driver_exec_close(x);
        char probe[96];
        snprintf(probe, sizeof probe, "test -d /proc/%ld && echo alive || echo gone", bg_pid);
        const char *const pr[] = {"sh", "-c", probe};
        struct driver_exec_spec ps = {.command = pr, .n_command = 3};
        for (;;) {
            assert_int_equal(driver_exec_start(d, env.ns, cs.id, &ps, &x, errmsg), 0);
            assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 0);
            driver_exec_close(x);
            if (strcmp(out, "gone\n") == 0) {
                break;
            }
            if (clock_mono_ms(clock_system()) - t0 > 3000) {
                fail_msg("round %d: the background child %ld outlived its session", round, bg_pid);
            }
            usleep(50000);
        }
    }

    /* A command that does not exist: 127 and why. */
    const char *const missing[] = {"no-such-command"};
    struct driver_exec_spec ms = {.command = missing, .n_command = 1};
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &ms, &x, errmsg), 0);
    assert_int_equal(exec_collect(x, NULL, false, out, sizeof out, err, sizeof err), 127);
    assert_non_null(strstr(err, "cannot execute no-such-command"));
    driver_exec_close(x);
    struct driver_exec_spec none = {.command = missing, .n_command = 0};
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &none, &x, errmsg), GERR_INVAL);

    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(driver_exec_start(d, env.ns, cs.id, &xs, &x, errmsg), GERR_NOTFOUND);
    driver_free(d);
}

/* Port-forward: a connection to a server on the sandbox's loopback; a port nobody listens on. */
static void test_port_forward(void **state)
{
    char errmsg[GERR_MSG_SIZE], out[65536], err[64];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    const char *const web[] = {"python3", "-m",        "http.server", "8000",
                               "--bind",  "127.0.0.1", "--directory", "/tmp"};
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_true(caps.port_forward);
    conf_spec(&env, &cs, "web");
    cs.spec.command = web;
    cs.spec.n_command = 8;
    create_ready(d, e, &cs, &s);
    driver_sandbox_close(&s);
    struct driver_exec *x = NULL;
    int rv = GERR_REFUSED;
    uint64_t deadline = clock_mono_ms(clock_system()) + 15000;
    while ((rv = driver_port_connect(d, env.ns, cs.id, 8000, &x, errmsg)) == GERR_REFUSED &&
           clock_mono_ms(clock_system()) < deadline) {
        usleep(50000); /* the server is starting */
    }
    if (rv != 0) {
        fail_msg("port-forward: %s", errmsg);
    }
    assert_int_equal(exec_collect(x, "GET / HTTP/1.0\r\n\r\n", false, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "HTTP/1.0 200"));
    driver_exec_close(x);
    assert_int_equal(driver_port_connect(d, env.ns, cs.id, 1, &x, errmsg), GERR_REFUSED);
    assert_non_null(strstr(errmsg, "nothing listens on port 1"));
    assert_int_equal(driver_port_connect(d, env.ns, cs.id, 0, &x, errmsg), GERR_INVAL);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(driver_port_connect(d, env.ns, cs.id, 8000, &x, errmsg), GERR_NOTFOUND);
    driver_free(d);
}

/* A sandbox made by a process that then exits keeps running and is adopted by this one. */
static void test_outlives_creator(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct conf_spec cs;
    struct driver_sandbox s;
    uint64_t e1 = conf_epoch(), e2 = conf_epoch();
    conf_spec(&env, &cs, "orphan");
    pid_t pid = fork();
    if (pid == 0) {
        struct driver *d = open_shared(NULL);
        int rv = driver_ensure_namespace(d, e1, env.ns, errmsg);
        rv = rv != 0 ? rv : driver_create(d, e1, &cs.spec, &s, errmsg);
        if (rv != 0) {
            fprintf(stderr, "the creating child failed: %s (%s)\n", errmsg, gerr_name(rv));
        }
        _exit(rv == 0 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail_msg("the creating child ended with %s %d", WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }

    struct driver *d = open_shared(NULL);
    conf_wait_ready(&env, d, e2, env.ns, cs.id);
    assert_int_equal(driver_get(d, e2, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.epoch, e1);
    unsigned long long ns = pidns_of(handle_pid(s.handle));
    assert_true(ns != 0 && count_in_ns(ns) >= 1);
    assert_int_equal(driver_delete(d, e2, env.ns, cs.id, errmsg), 0);
    assert_int_equal(count_in_ns(ns), 0);
    driver_sandbox_close(&s);
    driver_free(d);
}

/* Does any file under @path hold @needle? */
static bool tree_holds(const char *path, const char *needle)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -rqsF -- '%s' '%s'", needle, path);
    return system(cmd) == 0;
}

/* Credentials (process_creds.h): the files and variables inside, nothing in the state directory,
 * hidden from other sandboxes, replaced while the sandbox runs, gone with it. */
static void test_credentials(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs, other;
    struct driver_sandbox s, so;
    const char *const cmd[] = {"sh", "-c",
                               "echo \"$OPENAI_API_KEY\" > env; ls -ln " DRIVER_CREDENTIALS_DIR
                               "/openai/api_key | cut -c1-10 > mode; "
                               "echo done > done; while true; do cat " DRIVER_CREDENTIALS_DIR
                               "/openai/api_key > file.new; echo >> file.new; "
                               "mv file.new file; ls " DRIVER_CREDENTIALS_DIR
                               "/openai | tr '\\n' ' ' > keys.new; echo >> keys.new; "
                               "mv keys.new keys; sleep 0.05; done"};
    struct driver_credential creds[] = {
        {.provider = "openai", .key = "api_key", .value = "sk-first-4711", .env = "OPENAI_API_KEY"},
        {.provider = "openai", .key = "org", .value = "org-xyz"},
        {.provider = "github", .key = "token", .value = "ghp-first-0815"},
    };
    conf_spec(&env, &cs, "creds");
    cs.spec.command = cmd;
    cs.spec.n_command = 3;
    cs.spec.credentials = creds;
    cs.spec.n_credentials = 3;
    create_ready(d, e, &cs, &s);
    mem_free(await_file(cs.id, "done"));
    char *got = await_file(cs.id, "env");
    assert_string_equal(got, "sk-first-4711");
    mem_free(got);
    got = await_file(cs.id, "mode");
    assert_string_equal(got, "-r--------");
    mem_free(got);
    got = await_file(cs.id, "file");
    assert_string_equal(got, "sk-first-4711");
    mem_free(got);
    got = await_file(cs.id, "keys");
    assert_string_equal(got, "api_key org ");
    mem_free(got);
    /* Nothing of a value in the state directory but what the sandbox wrote to its own workspace. */
    char sbdir[512];
    snprintf(sbdir, sizeof sbdir, "%s/sandboxes", dir);
    assert_false(tree_holds(sbdir, "sk-first"));
    assert_false(tree_holds(sbdir, "ghp-first"));

    /* Another sandbox sees neither the files nor the directory that holds them. */
    char root[256], probe_cmd[1024];
    pcreds_default_root(dir, root, sizeof root);
    snprintf(probe_cmd, sizeof probe_cmd,
             "ls -A '%s' | wc -l > rootfiles; ls " DRIVER_CREDENTIALS_DIR " 2>/dev/null | wc -l > mine; "
             "grep -c ' %s ' /proc/self/mountinfo > hidden; echo done > done; exec sleep 1000",
             root, root);
    const char *const ocmd[] = {"sh", "-c", probe_cmd};
    conf_spec(&env, &other, "nocreds");
    other.spec.command = ocmd;
    other.spec.n_command = 3;
    create_ready(d, e, &other, &so);
    mem_free(await_file(other.id, "done"));
    got = await_file(other.id, "rootfiles");
    assert_string_equal(got, "0");
    mem_free(got);
    got = await_file(other.id, "mine");
    assert_string_equal(got, "0");
    mem_free(got);
    /* Hidden by a tmpfs of its own, not only because it lies under /dev (which bwrap replaces):
     * every sandbox runs as the same uid, so a visible root would let one read another's files. */
    got = await_file(other.id, "hidden");
    assert_string_equal(got, "1");
    mem_free(got);
    assert_int_equal(driver_update_credentials(d, e, env.ns, other.id, creds, 1, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "started without credentials"));

    /* Rotation: the file changes under the running sandbox; a key left out is removed; the
     * environment keeps the first value. */
    struct driver_credential next[] = {
        {.provider = "openai", .key = "api_key", .value = "sk-second-4712", .env = "OPENAI_API_KEY"},
    };
    assert_int_equal(driver_update_credentials(d, e, env.ns, cs.id, next, 1, errmsg), 0);
    struct clock *c = clock_system();
    uint64_t deadline = clock_mono_ms(c) + 10000;
    for (;;) {
        char *f = await_file(cs.id, "file"), *k = await_file(cs.id, "keys");
        bool done = strcmp(f, "sk-second-4712") == 0 && strcmp(k, "api_key ") == 0;
        mem_free(f);
        mem_free(k);
        if (done) {
            break;
        }
        assert_true(clock_mono_ms(c) < deadline);
        c->sleep_ns(c, 20000000);
    }
    /* Bad entries are refused without a value in the message. */
    struct driver_credential bad[] = {{.provider = "openai", .key = "..", .value = "sk-bad-1"}};
    assert_int_equal(driver_update_credentials(d, e, env.ns, cs.id, bad, 1, errmsg), GERR_INVAL);
    assert_null(strstr(errmsg, "sk-bad"));

    char cdir[512];
    snprintf(cdir, sizeof cdir, "%s/%s", root, cs.id);
    assert_int_equal(access(cdir, F_OK), 0);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(access(cdir, F_OK), -1);
    assert_int_equal(driver_delete(d, e, env.ns, other.id, errmsg), 0);
    driver_sandbox_close(&s);
    driver_sandbox_close(&so);
    driver_free(d);
}

/* Credentials are kept on a tmpfs only: a credentials directory elsewhere refuses the create. */
static void test_credentials_need_tmpfs(void **state)
{
    char errmsg[GERR_MSG_SIZE], cdir[300];
    snprintf(cdir, sizeof cdir, "%s/not-tmpfs", dir);
    struct driver *d;
    struct driver_process_config cfg = {.state_dir = dir,
                                        .bwrap_path = getenv("GANTRY_TEST_BWRAP"),
                                        .sandbox_uid = -1,
                                        .sandbox_gid = -1,
                                        .credentials_dir = cdir};
    assert_int_equal(driver_process_new(&cfg, &d, errmsg), 0);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_credential creds[] = {{.provider = "p", .key = "k", .value = "v-secret-99"}};
    conf_spec(&env, &cs, "notmpfs");
    cs.spec.credentials = creds;
    cs.spec.n_credentials = 1;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    int rv = driver_create(d, e, &cs.spec, &s, errmsg);
    /* /tmp may itself be a tmpfs; then the create works and is deleted again. */
    struct statfs fs;
    assert_int_equal(statfs(dir, &fs), 0);
    if (fs.f_type == 0x01021994) {
        assert_int_equal(rv, 0);
        driver_sandbox_close(&s);
        assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    } else {
        assert_int_equal(rv, GERR_PERM);
        assert_non_null(strstr(errmsg, "not on a tmpfs"));
        assert_null(strstr(errmsg, "v-secret"));
        assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), GERR_NOTFOUND);
    }
    driver_free(d);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A PID namespace's inode number is reused once the namespace is freed. A sandbox whose namespace
 * is gone must not count the members of a newer namespace that got its number (a deleted sandbox
 * waited on another sandbox's processes: "processes still alive after SIGKILL" until that one
 * went too). A child in a new PID namespace (a user namespace first without root): its members are
 * counted for the record naming its init, and none for a record naming another init. */
static void test_ns_number_reused(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        close(p[0]);
        int flags = CLONE_NEWPID | (geteuid() != 0 ? CLONE_NEWUSER : 0);
        if (unshare(flags) != 0) {
            _exit(1);
        }
        pid_t init = fork(); /* pid 1 of the new namespace */
        if (init == 0) {
            for (;;) {
                pause();
            }
        }
        long host = (long)init;
        if (init < 0 || write(p[1], &host, sizeof host) != (ssize_t)sizeof host) {
            _exit(1);
        }
        waitpid(init, NULL, 0);
        _exit(0);
    }
    close(p[1]);
    long init = 0;
    ssize_t r = read(p[0], &init, sizeof init);
    close(p[0]);
    if (r != (ssize_t)sizeof init) {
        waitpid(mid, NULL, 0);
        skip(); /* no new PID namespace here */
    }
    char path[64], stat[2048], err[GERR_MSG_SIZE];
    unsigned long long ns = pidns_of(init);
    size_t len = 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", init);
    FILE *f = ns != 0 ? fopen(path, "r") : NULL;
    if (f != NULL) {
        len = fread(stat, 1, sizeof stat, f);
        fclose(f);
    }
    struct process_stat st;
    int decoded = ns != 0 && len > 0 ? process_stat_decode(stat, len, &st, err) : -1;
    size_t ours = 0, ours_no_start = 0, other_start = 0, other_pid = 0;
    if (decoded == 0) {
        ours = process_ns_members(ns, false, init, st.starttime);
        ours_no_start = process_ns_members(ns, false, init, 0);
        other_start = process_ns_members(ns, false, init, st.starttime + 1);
        other_pid = process_ns_members(ns, false, (long)getpid(), 0);
    }
    kill((pid_t)init, SIGKILL); /* before any assertion: a failed one must not leave it behind */
    waitpid(mid, NULL, 0);
    assert_int_equal(decoded, 0);
    /* The record of this namespace's init: its member counted. */
    assert_int_equal(ours, 1);
    assert_int_equal(ours_no_start, 1);
    /* A record of another init (its namespace gone, the number reused by this one): none. */
    assert_int_equal(other_start, 0);
    assert_int_equal(other_pid, 0);
}

/* A record whose pid now belongs to another process (start time differs) is "gone" and that
 * process is never signalled. */
static void test_pid_reuse_not_killed(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[512], id[DRIVER_ID_LEN + 1], text[1024];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct driver_sandbox s;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    pid_t victim = fork();
    if (victim == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(1);
        close(2);
        pause();
        _exit(0);
    }
    conf_uuid(id);
    snprintf(
        text, sizeof text,
        "{\"version\":1,\"id\":\"%s\",\"namespace\":\"%s\",\"name\":\"reused\",\"epoch\":1,\"created_at_ms\":"
        "1,"
        "\"lifetime_s\":0,\"bwrap_pid\":%d,\"bwrap_start\":1,\"init_pid\":%d,\"init_start\":2,\"pidns\":0}",
        id, env.ns, (int)victim, (int)victim);
    snprintf(path, sizeof path, "%s/sandboxes/%s.json", dir, id);
    write_file(path, text);
    assert_int_equal(driver_get(d, e, env.ns, id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_ERROR); /* gone, as far as the driver can tell */
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, env.ns, id, errmsg), 0);
    assert_int_equal(waitpid(victim, NULL, WNOHANG), 0); /* still alive */
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    assert_int_equal(access(path, F_OK), -1);
    driver_free(d);
}

/* A record written before bwrap started, by a replica that died: reported, and deletable. */
static void test_interrupted_and_corrupt_records(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[512], id[DRIVER_ID_LEN + 1], id2[DRIVER_ID_LEN + 1], text[1024];
    struct driver *d = open_shared(NULL);
    uint64_t e = conf_epoch();
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    conf_uuid(id);
    snprintf(text, sizeof text,
             "{\"version\":1,\"id\":\"%s\",\"namespace\":\"%s\",\"name\":\"interrupted\",\"epoch\":1,"
             "\"created_at_ms\":1000,\"lifetime_s\":0,\"bwrap_pid\":0,\"bwrap_start\":0,\"init_pid\":0,"
             "\"init_start\":0,\"pidns\":0}",
             id, env.ns);
    snprintf(path, sizeof path, "%s/sandboxes/%s.json", dir, id);
    write_file(path, text);
    assert_int_equal(driver_get(d, e, env.ns, id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_ERROR);
    assert_non_null(strstr(s.message, "interrupted"));
    driver_sandbox_close(&s);

    conf_uuid(id2);
    snprintf(path, sizeof path, "%s/sandboxes/%s.json", dir, id2);
    write_file(path, "{\"version\":1,\"id\":");
    assert_int_equal(driver_list(d, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, id2), 1);
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.items[i].id, id2) == 0) {
            assert_int_equal(l.items[i].phase, DRIVER_PHASE_UNKNOWN);
        }
    }
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_get(d, e, env.ns, id2, &s, errmsg), GERR_PROTO);
    assert_int_equal(driver_delete(d, e, env.ns, id2, errmsg), 0);
    assert_int_equal(driver_delete(d, e, env.ns, id, errmsg), 0);
    assert_int_equal(access(path, F_OK), -1);
    driver_free(d);
}

static void test_no_gpus(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_shared(NULL);
    struct conf_spec cs;
    struct driver_kv net[] = {{"network", "bridge"}};
    conf_spec(&env, &cs, "gpu");
    cs.spec.gpu_count = 1;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "GPU"));
    cs.spec.gpu_count = 0;
    cs.spec.driver_config = net;
    cs.spec.n_driver_config = 1;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "network"));
    driver_free(d);
}

/* Needs no working bwrap: a driver whose bwrap is missing says so and refuses work. */
static void test_unavailable(void **state)
{
    char errmsg[GERR_MSG_SIZE], sub[300];
    struct driver_caps caps;
    struct conf_spec cs;
    struct driver_sandbox s;
    snprintf(sub, sizeof sub, "%s/unavailable", dir);
    struct driver *d = open_at(sub, "/nonexistent/bwrap");
    driver_capabilities(d, &caps);
    assert_false(caps.available);
    assert_non_null(strstr(caps.detail, "/nonexistent/bwrap"));
    conf_spec(&env, &cs, "nope");
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "/nonexistent/bwrap"));
    assert_int_equal(driver_ensure_namespace(d, conf_epoch(), env.ns, errmsg), 0);
    assert_int_equal(driver_create(d, conf_epoch(), &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    driver_free(d);
}

static void test_bad_config(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = NULL;
    struct driver_process_config rel = {.state_dir = "relative/dir", .sandbox_uid = -1, .sandbox_gid = -1};
    assert_int_equal(driver_process_new(&rel, &d, errmsg), GERR_INVAL);
    struct driver_process_config missing = {
        .state_dir = "/nonexistent/a/b", .sandbox_uid = -1, .sandbox_gid = -1};
    assert_int_equal(driver_process_new(&missing, &d, errmsg), GERR_NOTFOUND);
    assert_null(d);
}

/* Whatever a failed test left running is deleted, so no sandbox outlives the test program. */
static void cleanup(void)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_at(dir, NULL);
    struct driver_sandbox_list l;
    uint64_t e = conf_epoch();
    if (driver_list(d, e, NULL, &l, errmsg) == 0) {
        for (size_t i = 0; i < l.n; i++) {
            const char *ns = l.items[i].namespace[0] != '\0' ? l.items[i].namespace : env.ns;
            if (driver_delete(d, e, ns, l.items[i].id, errmsg) != 0) {
                fprintf(stderr, "cleanup: delete %s: %s\n", l.items[i].id, errmsg);
            }
        }
        driver_sandbox_list_close(&l);
    }
    driver_free(d);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/gantry-driver-process-XXXXXX");
    if (mkdtemp(dir) == NULL || chmod(dir, 0711) != 0) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest always[] = {
        cmocka_unit_test(test_unavailable),          cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_bad_arguments),        cmocka_unit_test(test_no_gpus),
        cmocka_unit_test(test_pid_reuse_not_killed), cmocka_unit_test(test_interrupted_and_corrupt_records),
        cmocka_unit_test(test_ns_number_reused),
    };
    const struct CMUnitTest with_bwrap[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_stale_epoch),
        cmocka_unit_test(test_adoption),
        cmocka_unit_test(test_namespaces),
        cmocka_unit_test(test_config_keys), /* validate answers GERR_UNAVAILABLE without bwrap */
        cmocka_unit_test(test_tree_killed),
        cmocka_unit_test(test_isolation_and_workspace),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_bad_command),
        cmocka_unit_test(test_outlives_creator),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_credentials_need_tmpfs),
        cmocka_unit_test(test_logs),
        cmocka_unit_test(test_exec),
        cmocka_unit_test(test_port_forward),
    };
    struct driver *probe = open_shared(NULL);
    struct driver_caps caps;
    driver_capabilities(probe, &caps);
    driver_free(probe);

    int failed = cmocka_run_group_tests_name("driver_process (no bwrap needed)", always, NULL, NULL);
    int skipped = !caps.available;
    if (skipped) {
        fprintf(stderr, "SKIP: driver_process sandbox tests: %s\n", caps.detail);
    } else {
        failed += cmocka_run_group_tests_name("driver_process (bubblewrap)", with_bwrap, NULL, NULL);
    }
    cleanup();
    if (failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return failed != 0 ? 1 : skipped ? 77 : 0;
}
