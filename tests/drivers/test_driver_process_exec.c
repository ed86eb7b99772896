/* drivers/process_exec.h without bubblewrap: the target is a child of this test, which shares
 * every namespace with it (as root; without root its own user namespace, which exec joins), so
 * what is checked is the rest of the path.
 *
 * - Pinning: a start time or a PID namespace that is not the process's (what a reused pid looks
 *   like) is refused with GERR_UNAVAILABLE (FAILED_PRECONDITION at the API) and nothing runs; a
 *   target that is gone likewise.
 * - The command's credentials: no capability in any set, no_new_privs (as root, and as the
 *   sandbox's uid when we are root).
 * - A caller that dies without closing the exec (gantryd killed): the command's group ends.
 * - Port-forward's connect: a closed port answers GERR_REFUSED at once; a listener whose backlog
 *   is full answers GERR_TIMEOUT after the target's timeout, not the kernel's two minutes; the
 *   same through the forked helper that joins a user namespace first (gantryd without root). */
#include <errno.h>
#include <sched.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>

#include <cmocka.h>

#include "drivers/process.h"
#include "drivers/process_exec.h"
#include "lib/clock.h"
#include "lib/err.h"

static pid_t target;

static uint64_t start_of(pid_t pid)
{
    char path[64], buf[1024], err[GERR_MSG_SIZE];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    struct process_stat st;
    assert_int_equal(process_stat_decode(buf, n, &st, err), 0);
    return st.starttime;
}

static uint64_t pidns_of(pid_t pid)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%ld/ns/pid", (long)pid);
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_ino;
}

static int setup(void **state)
{
    (void)state;
    target = fork();
    if (target == 0) {
        /* Without root, a user namespace of its own (as a sandbox has) for exec to join: there
         * the command may drop its bounding set, which it cannot in ours. */
        if (geteuid() != 0 && unshare(CLONE_NEWUSER) != 0) {
            _exit(1);
        }
        for (;;) {
            pause();
        }
    }
    return target > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kill(target, SIGKILL);
    waitpid(target, NULL, 0);
    return 0;
}

static struct pexec_target target_of(pid_t pid)
{
    struct pexec_target t = {.main_pid = pid,
                             .main_start = start_of(pid),
                             .pidns = pidns_of(pid),
                             .drop = geteuid() == 0,
                             .uid = 65534,
                             .gid = 65534,
                             .workdir = "/",
                             .path = "/usr/bin:/bin"};
    return t;
}

/* Run @cmd to its end: stdout into @out, the exit code returned. */
static int run(const struct pexec_target *t, const char *cmd, char *out, size_t cap)
{
    char errmsg[GERR_MSG_SIZE];
    const char *const argv[] = {"sh", "-c", cmd};
    struct driver_exec_spec spec = {.command = argv, .n_command = 3};
    struct driver_exec *x = NULL;
    if (pexec_start(t, &spec, &x, errmsg) != 0) {
        fail_msg("pexec_start: %s", errmsg);
    }
    int in, o, e, code = -1, sig = 0;
    driver_exec_fds(x, &in, &o, &e);
    driver_exec_close_stdin(x);
    size_t n = 0;
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    for (;;) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        struct pollfd p = {o, POLLIN, 0};
        poll(&p, 1, 100);
        ssize_t r = read(o, out + n, cap - n - 1);
        if (r == 0) {
            break;
        }
        if (r > 0) {
            n += (size_t)r;
        }
    }
    out[n] = '\0';
    while (driver_exec_status(x, &code, &sig) == GERR_BUSY) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        usleep(5000);
    }
    driver_exec_close(x);
    return code;
}

/* A reused pid: the recorded start time or PID namespace is not the process's. Refused, and the
 * command never runs (it would create a file). */
static void test_pid_reuse_refused(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE], marker[] = "/tmp/gantry-pexec-XXXXXX", cmd[128];
    int mfd = mkstemp(marker);
    assert_true(mfd >= 0);
    close(mfd);
    unlink(marker);
    snprintf(cmd, sizeof cmd, "touch %s", marker);
    const char *const argv[] = {"sh", "-c", cmd};
    struct driver_exec_spec spec = {.command = argv, .n_command = 3};
    struct driver_exec *x = NULL;

    struct pexec_target t = target_of(target);
    t.main_start += 1;
    assert_int_equal(pexec_start(&t, &spec, &x, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "changed"));
    assert_int_equal(pexec_port_connect(&t, 1, &x, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "changed"));

    t = target_of(target);
    t.pidns += 1;
    assert_int_equal(pexec_start(&t, &spec, &x, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "PID namespace"));

    /* Gone: a child that has exited (reaped). */
    pid_t dead = fork();
    if (dead == 0) {
        pause();
        _exit(0);
    }
    t = target_of(dead);
    kill(dead, SIGKILL);
    waitpid(dead, NULL, 0);
    assert_int_equal(pexec_start(&t, &spec, &x, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "gone"));

    struct stat st;
    assert_int_equal(stat(marker, &st), -1); /* nothing ran */

    /* The right process: it runs. */
    t = target_of(target);
    char out[64];
    assert_int_equal(run(&t, cmd, out, sizeof out), 0);
    assert_int_equal(stat(marker, &st), 0);
    unlink(marker);
}

/* No capability in any set and no_new_privs, whoever we are. */
static void test_credentials(void **state)
{
    (void)state;
    struct pexec_target t = target_of(target);
    char out[1024];
    assert_int_equal(
        run(&t, "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; id -u", out,
            sizeof out),
        0);
    char want[512];
    snprintf(want, sizeof want,
             "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
             "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n%d\n",
             geteuid() == 0 ? 65534 : (int)geteuid());
    assert_string_equal(out, want);
}

/* A closed port: REFUSED at once. A listener whose accept queue is full drops our SYN: TIMEOUT
 * after the target's bound. */
static void test_connect_bounded(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct driver_exec *x = NULL;
    struct pexec_target t = target_of(target);
    t.connect_timeout_ms = 300;

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    uint16_t port = ntohs(a.sin_port);
    /* Bound, not listening: refused. */
    uint64_t t0 = clock_mono_ms(clock_system());
    assert_int_equal(pexec_port_connect(&t, port, &x, errmsg), GERR_REFUSED);
    assert_non_null(strstr(errmsg, "nothing listens"));
    assert_true(clock_mono_ms(clock_system()) - t0 < 1000);

    /* Listening with a backlog of 0, never accepting, its queue filled by one connection. */
    assert_int_equal(listen(l, 0), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int rc = connect(fill[i], (struct sockaddr *)&a, sizeof a);
        assert_true(rc == 0 || errno == EINPROGRESS);
    }
    usleep(100000);
    t0 = clock_mono_ms(clock_system());
    int rv = pexec_port_connect(&t, port, &x, errmsg);
    uint64_t took = clock_mono_ms(clock_system()) - t0;
    if (rv == 0) {
        driver_exec_close(x);
        fail_msg("a connection to a full backlog was accepted");
    }
    assert_int_equal(rv, GERR_TIMEOUT);
    assert_non_null(strstr(errmsg, "did not accept the connection within 300 ms"));
    assert_true(took >= 250 && took < 2000);
    for (int i = 0; i < 4; i++) {
        close(fill[i]);
    }
    close(l);
}

/* True once @pid is gone or a zombie (an orphan waits for a reaper that may be slow). */
static bool ended(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return true;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && (rp[2] == 'Z' || rp[2] == 'X');
}

/* The caller dies without closing the exec (gantryd killed): the middle sees its control socket
 * end and ends the command's group, the background child included. */
static void test_caller_death_ends_group(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t caller = fork();
    if (caller == 0) {
        close(p[0]);
        char errmsg[GERR_MSG_SIZE], line[64] = "";
        struct pexec_target t = target_of(target);
        const char *const argv[] = {"sh", "-c", "sleep 300 & echo $! $$; exec sleep 300"};
        struct driver_exec_spec spec = {.command = argv, .n_command = 3};
        struct driver_exec *x = NULL;
        if (pexec_start(&t, &spec, &x, errmsg) != 0) {
            _exit(1);
        }
        int in, o, e;
        driver_exec_fds(x, &in, &o, &e);
        size_t n = 0;
        while (strchr(line, '\n') == NULL && n < sizeof line - 1) {
            struct pollfd pf = {o, POLLIN, 0};
            poll(&pf, 1, 100);
            ssize_t r = read(o, line + n, sizeof line - 1 - n);
            if (r == 0) {
                _exit(2);
            }
            if (r > 0) {
                n += (size_t)r;
                line[n] = '\0';
            }
        }
        if (write(p[1], line, n) != (ssize_t)n) {
            _exit(3);
        }
        _exit(0); /* no driver_exec_close */
    }
    close(p[1]);
    char line[64] = "";
    ssize_t r = read(p[0], line, sizeof line - 1);
    close(p[0]);
    int st = 0;
    waitpid(caller, &st, 0);
    assert_true(r > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    line[r] = '\0';
    long bg = 0, cmd = 0;
    assert_int_equal(sscanf(line, "%ld %ld", &bg, &cmd), 2);
    uint64_t deadline = clock_mono_ms(clock_system()) + 3000;
    while (!(ended(bg) && ended(cmd))) {
        if (clock_mono_ms(clock_system()) > deadline) {
            kill(bg, SIGKILL);
            kill(cmd, SIGKILL);
            fail_msg("the exec's group outlived its dead caller (background %ld, command %ld)", bg, cmd);
        }
        usleep(20000);
    }
}

/* A target in a network namespace of its own, owned by a user namespace of its own, with its
 * loopback up: a listener that accepts (its port in @ports[0]), one whose backlog is full
 * (@ports[1]), a closed port (@ports[2]). */
static pid_t netns_target(uint16_t ports[3])
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
            _exit(1);
        }
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
        if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
            _exit(2);
        }
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
            _exit(3);
        }
        uint16_t got[3];
        int l[3];
        for (int i = 0; i < 3; i++) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
            socklen_t al = sizeof a;
            l[i] = socket(AF_INET, SOCK_STREAM, 0);
            if (bind(l[i], (struct sockaddr *)&a, sizeof a) != 0 ||
                getsockname(l[i], (struct sockaddr *)&a, &al) != 0 ||
                (i < 2 && listen(l[i], i == 0 ? 8 : 0) != 0)) {
                _exit(4);
            }
            got[i] = ntohs(a.sin_port);
            if (i == 1) {
                for (int k = 0; k < 3; k++) {
                    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                    (void)connect(c, (struct sockaddr *)&a, sizeof a);
                }
            }
        }
        usleep(100000);
        if (write(p[1], got, sizeof got) != (ssize_t)sizeof got) {
            _exit(5);
        }
        for (;;) {
            pause();
        }
    }
    close(p[1]);
    ssize_t r = read(p[0], ports, 3 * sizeof ports[0]);
    close(p[0]);
    if (r != (ssize_t)(3 * sizeof ports[0])) {
        int st = 0;
        waitpid(pid, &st, 0);
        fail_msg("the network namespace target failed (exit %d)", WEXITSTATUS(st));
    }
    return pid;
}

/* The connect when the sandbox's network namespace belongs to a user namespace that is not ours
 * and the caller must join that first (gantryd without root): a forked helper joins both and
 * hands the socket back. Accepted, refused and timed out as the thread's connect. */
static void test_connect_through_helper(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    uint16_t ports[3];
    pid_t pid = netns_target(ports);
    struct pexec_target t = target_of(pid);
    t.user_first = true;
    t.connect_timeout_ms = 300;
    struct driver_exec *x = NULL;
    if (pexec_port_connect(&t, ports[0], &x, errmsg) != 0) {
        fail_msg("connect through the helper: %s", errmsg);
    }
    driver_exec_close(x);
    assert_int_equal(pexec_port_connect(&t, ports[2], &x, errmsg), GERR_REFUSED);
    assert_non_null(strstr(errmsg, "nothing listens"));
    uint64_t t0 = clock_mono_ms(clock_system());
    assert_int_equal(pexec_port_connect(&t, ports[1], &x, errmsg), GERR_TIMEOUT);
    uint64_t took = clock_mono_ms(clock_system()) - t0;
    assert_true(took >= 250 && took < 2000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pid_reuse_refused),       cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_caller_death_ends_group), cmocka_unit_test(test_connect_bounded),
        cmocka_unit_test(test_connect_through_helper),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
