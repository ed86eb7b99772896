/* The process driver's exec (see process_exec.h). */
#include "drivers/process_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "drivers/driver_internal.h"
#include "drivers/process.h"
#include "lib/mem.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define ENV_MAX    (256u * 1024u) /* bytes of /proc/<pid>/environ read */
#define ENV_N_MAX  1024u
#define N_NS       7
#define FD_REPORT  3
#define FD_NS_BASE 4                   /* the namespace descriptors in the middle process: 4..10 */
#define FD_CTL     (FD_NS_BASE + N_NS) /* the middle's end of the control socket: 11 */
#define FD_OWNER   (FD_CTL + 1)        /* the user namespace that owns the sandbox's others: 12 */
#ifndef NS_GET_USERNS
#define NS_GET_USERNS 0xb701 /* linux/nsfs.h */
#endif

/* Joined in this order, with the host's privileges for all but the last: the user namespace
 * (whose owner, the sandbox's uid, is not us) last, as a deprivileging nsenter does; joined first it
 * leaves us without the right to enter the mount namespace bwrap made beneath it. */
static const char *const ns_names[N_NS] = {"cgroup", "ipc", "uts", "net", "pid", "mnt", "user"};
static const char *const steps[] = {"set up descriptors",
                                    "drop supplementary groups",
                                    "join a namespace",
                                    "fork",
                                    "become a session leader",
                                    "take the terminal",
                                    "switch to the sandbox's uid and gid",
                                    "drop capabilities",
                                    "set no_new_privs"};

struct pexec {
    struct driver_exec base;
    pid_t middle;
    int ctl;          /* our end of the control socket (-1 once closed): see run_middle */
    int in, out, err; /* ours: -1 when closed or absent */
    bool tty;
    bool ended;
    int exit_code, signal;
};

struct report_msg {
    int step;
    int err;
};

static void report(int step)
{
    struct report_msg m = {step, errno};
    ssize_t w = write(FD_REPORT, &m, sizeof m);
    (void)w;
}

/* ---- In the forked processes: async-signal-safe calls only. */

static volatile pid_t forward_to;

static void forward_signal(int sig)
{
    if (forward_to > 0) {
        kill(forward_to, sig);
    }
}

static void close_above(int last)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)last + 1, ~0u, 0u) == 0) {
        return;
    }
#endif
    for (int fd = last + 1; fd < 65536; fd++) {
        close(fd);
    }
}

static void __attribute__((noreturn)) run_command(const struct pexec_target *t, bool tty, char *const argv[],
                                                  char *const envp[], char *const paths[])
{
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) {
        signal(sig, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0) {
        report(4);
        _exit(126);
    }
    if (tty && ioctl(0, TIOCSCTTY, 0) != 0) {
        report(5);
        _exit(126);
    }
    if (chdir(t->workdir) != 0 && chdir("/") != 0) {
        report(0);
        _exit(126);
    }
    /* The credentials of the sandbox's main process, which bwrap (unprivileged) starts with an
     * empty bounding set, no capabilities at all, no_new_privs and no seccomp filter: having
     * joined the sandbox's user namespace we hold every capability in it, enough to undo
     * bwrap's mounts. The bounding set first (it needs CAP_SETPCAP, which the uid change may
     * take away), then the ambient set, the uid and gid, and last the permitted, effective and
     * inheritable sets (the uid change need not clear them: as root we join a namespace that
     * maps no uid 0, so to the kernel the switch is not one away from root). */
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) {
                break; /* past the kernel's last capability */
            }
            report(7);
            _exit(126);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        report(7);
        _exit(126);
    }
    if (t->drop && (setgid(t->gid) != 0 || setuid(t->uid) != 0)) {
        report(6);
        _exit(126);
    }
    struct __user_cap_header_struct caph = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct capd[_LINUX_CAPABILITY_U32S_3];
    memset(capd, 0, sizeof capd);
    if (syscall(SYS_capset, &caph, capd) != 0) {
        report(7);
        _exit(126);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        report(8);
        _exit(126);
    }
    /* After the uid change, which clears it. A middle process killed before this line leaves us
     * to the check below. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    fcntl(FD_REPORT, F_SETFD, FD_CLOEXEC);
    close_above(FD_REPORT);
    for (size_t i = 0; paths[i] != NULL; i++) {
        execve(paths[i], argv, envp);
    }
    static const char msg1[] = "gantry: cannot execute ";
    static const char msg2[] = ": not found or not executable\n";
    ssize_t w = write(2, msg1, sizeof msg1 - 1);
    w = write(2, argv[0], strlen(argv[0]));
    w = write(2, msg2, sizeof msg2 - 1);
    (void)w;
    _exit(127);
}

static void ignore_signal(int sig)
{
    (void)sig; /* SIGCHLD: only to interrupt ppoll */
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* End the command's process group: SIGTERM (and SIGCONT, for stopped members) to the group, then
 * SIGKILL once PEXEC_GRACE_MS have passed while anyone is left. @cmd, our child, leads it; it is
 * reaped here, so the group's number cannot be reused while the command lives; once it is reaped
 * the number stays taken while a member lives, and the kernel hands out pids in turn, so the next
 * kill reaching another group would need the whole pid space to go round in 10 ms. Returns the
 * command's wait status. */
static int end_group(pid_t cmd)
{
    int st = 0;
    bool reaped = false;
    kill(-cmd, SIGTERM);
    kill(-cmd, SIGCONT);
    uint64_t deadline = now_ms() + PEXEC_GRACE_MS;
    for (;;) {
        if (!reaped && waitpid(cmd, &st, WNOHANG) == cmd) {
            reaped = true;
        }
        if (reaped && kill(-cmd, 0) != 0 && errno == ESRCH) {
            return st; /* nobody is left in the group */
        }
        if (now_ms() >= deadline) {
            kill(-cmd, SIGKILL);
            while (!reaped && waitpid(cmd, &st, 0) < 0 && errno == EINTR) {
            }
            return st;
        }
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

static void __attribute__((noreturn))
run_middle(const struct pexec_target *t, bool tty, const int stdio[3], int report_fd, int ctl_fd,
           int owner_fd, const int ns_fds[N_NS], char *const argv[], char *const envp[], char *const paths[])
{
    /* Descriptors: the command's stdio at 0..2, the report pipe at 3, namespaces at 4..10, the
     * control socket at 11 (the owner user namespace at 12); the sources were all moved to 20 and above by
     * the parent, so no dup2 overwrites one still needed. */
    if (dup2(stdio[0], 0) < 0 || dup2(stdio[1], 1) < 0 || dup2(stdio[2], 2) < 0 ||
        dup2(report_fd, FD_REPORT) < 0) {
        _exit(126);
    }
    for (int i = 0; i < N_NS; i++) {
        if (ns_fds[i] >= 0 && dup2(ns_fds[i], FD_NS_BASE + i) < 0) {
            report(0);
            _exit(126);
        }
    }
    if (dup2(ctl_fd, FD_CTL) < 0 || (owner_fd >= 0 && dup2(owner_fd, FD_OWNER) < 0)) {
        report(0);
        _exit(126);
    }
    close_above(FD_OWNER);
    if (t->drop && setgroups(0, NULL) != 0) {
        report(1);
        _exit(126);
    }
    /* Without root on the host: first the user namespace that owns the sandbox's others (bwrap,
     * unprivileged, makes them in an outer user namespace of our uid and runs the command in a
     * nested one), which gives us the right to join them; the nested one last, as root does. */
    if (owner_fd >= 0 && setns(FD_OWNER, CLONE_NEWUSER) != 0) {
        report(2);
        _exit(126);
    }
    for (int i = 0; i < N_NS; i++) {
        if (ns_fds[i] >= 0 && setns(FD_NS_BASE + i, 0) != 0) {
            report(2);
            _exit(126);
        }
    }
    for (int i = FD_NS_BASE; i <= FD_OWNER; i++) {
        if (i != FD_CTL) {
            close(i);
        }
    }
    sigset_t chld, none;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &chld, NULL); /* until ppoll: a SIGCHLD between waitid and ppoll waits */
    pid_t cmd = fork();
    if (cmd < 0) {
        report(3);
        _exit(126);
    }
    if (cmd == 0) {
        run_command(t, tty, argv, envp, paths);
    }
    forward_to = cmd;
    close(0);
    close(1);
    close(2);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < 32; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD) {
            sigaction(sig, &sa, NULL);
        }
    }
    sa.sa_handler = ignore_signal;
    sigaction(SIGCHLD, &sa, NULL);
    /* Only now may the caller learn that the exec started (the report pipe's end, once the
     * command's exec has closed its copy too) and signal this process: a SIGTERM before the
     * handlers took the default action, and this process died with the command running on. */
    close(FD_REPORT);
    sigprocmask(SIG_SETMASK, &chld, NULL);
    /* Until the command exits (it stays a zombie: its pid, the group's number, stays ours) or the
     * control socket ends (the caller closed the exec, or died). */
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)cmd, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == cmd) {
            break;
        }
        struct pollfd p = {FD_CTL, POLLIN, 0};
        if (ppoll(&p, 1, NULL, &none) <= 0) {
            continue; /* a signal: SIGCHLD, or one forwarded */
        }
        char c;
        ssize_t n = read(FD_CTL, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
            break;
        }
        if (n == 1 && (c == 'K' || c == 'S')) {
            kill(cmd, c == 'K' ? SIGKILL : SIGSTOP);
        }
    }
    int st = end_group(cmd);
    forward_to = 0;
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        signal(sig, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 126);
}

/* ---- Pinning the sandbox's main process (its pid could name another process by the time we
 * join its namespaces) */

/* 0 if @t->main_pid is alive and is the process @t names: started at @t->main_start and a member
 * of PID namespace @t->pidns (a check is skipped when its value is 0); GERR_UNAVAILABLE if it is
 * gone or the pid now names another process, with why in @errmsg. */
static int target_check(const struct pexec_target *t, char *errmsg)
{
    char path[64], buf[1024], link[64], err[GERR_MSG_SIZE];
    snprintf(path, sizeof path, "/proc/%ld/stat", t->main_pid);
    int fd = t->main_pid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0) {
        close(fd);
    }
    struct process_stat ps;
    if (n <= 0 || process_stat_decode(buf, (size_t)n, &ps, err) != 0 || ps.state == 'Z' || ps.state == 'X') {
        gerr_set(errmsg, "the sandbox's main process is gone");
        return GERR_UNAVAILABLE;
    }
    if (t->main_start != 0 && ps.starttime != t->main_start) {
        gerr_set(errmsg,
                 "the sandbox's main process changed while the session started (pid %ld is now another "
                 "process): nothing was run; try again",
                 t->main_pid);
        return GERR_UNAVAILABLE;
    }
    if (t->pidns != 0) {
        unsigned long long ino = 0;
        snprintf(path, sizeof path, "/proc/%ld/ns/pid", t->main_pid);
        ssize_t l = readlink(path, link, sizeof link - 1);
        if (l > 0) {
            link[l] = '\0';
        }
        if (l <= 0 || sscanf(link, "pid:[%llu]", &ino) != 1 || ino != t->pidns) {
            gerr_set(errmsg,
                     "the sandbox's main process changed while the session started (pid %ld is not in the "
                     "sandbox's PID namespace): nothing was run; try again",
                     t->main_pid);
            return GERR_UNAVAILABLE;
        }
    }
    return 0;
}

/* Pin @t->main_pid with a pidfd (Linux >= 5.3; *@pidfd is -1 on older kernels) and check it is
 * the process @t names. 0, or GERR_UNAVAILABLE as target_check. */
static int target_pin(const struct pexec_target *t, int *pidfd, char *errmsg)
{
    *pidfd = t->main_pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)t->main_pid, 0u) : -1;
    if (*pidfd < 0 && errno == ESRCH) {
        gerr_set(errmsg, "the sandbox's main process is gone");
        return GERR_UNAVAILABLE;
    }
    int rv = target_check(t, errmsg);
    if (rv != 0 && *pidfd >= 0) {
        close(*pidfd);
        *pidfd = -1;
    }
    return rv;
}

/* After opening what we need through /proc/<pid>: the pinned process still lives (so the pid
 * named it all along, and what we opened is its) and is still the one @t names. */
static int target_still(const struct pexec_target *t, int pidfd, char *errmsg)
{
    if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0u) != 0) {
        gerr_set(errmsg, "the sandbox's main process is gone");
        return GERR_UNAVAILABLE;
    }
    return target_check(t, errmsg);
}

/* ---- The parent */

static int high(int fd)
{
    if (fd < 0) {
        return -1;
    }
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 20);
    close(fd);
    return h;
}

/* The NUL-separated environment of @pid as an argv-style array (heap strings, NULL-terminated). */
static char **read_environ(long pid, char *errmsg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gerr_set(errmsg, "the sandbox's main process is gone");
        return NULL;
    }
    char *text = mem_alloc(ENV_MAX + 1);
    size_t len = 0;
    ssize_t r;
    while (len < ENV_MAX && (r = read(fd, text + len, ENV_MAX - len)) > 0) {
        len += (size_t)r;
    }
    close(fd);
    text[len] = '\0';
    char **env = mem_zalloc(sizeof *env * (ENV_N_MAX + 1));
    size_t n = 0;
    for (size_t i = 0; i < len && n < ENV_N_MAX;) {
        size_t l = strnlen(text + i, len - i);
        if (l > 0 && memchr(text + i, '=', l) != NULL) {
            env[n] = mem_alloc(l + 1);
            memcpy(env[n], text + i, l);
            env[n][l] = '\0';
            n++;
        }
        i += l + 1;
    }
    mem_free(text);
    return env;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
        mem_free(v[i]);
    }
    mem_free(v);
}

/* Where to look for @cmd: itself when it has a slash, else every directory of @path. */
static char **candidates(const char *cmd, const char *path)
{
    size_t n = 1;
    for (const char *c = path; *c != '\0'; c++) {
        n += *c == ':';
    }
    char **out = mem_zalloc(sizeof *out * (n + 2));
    if (strchr(cmd, '/') != NULL) {
        out[0] = mem_strdup(cmd);
        return out;
    }
    size_t k = 0;
    for (const char *p = path;;) {
        const char *e = strchr(p, ':');
        size_t l = e != NULL ? (size_t)(e - p) : strlen(p);
        if (l > 0) {
            out[k] = mem_alloc(l + strlen(cmd) + 2);
            memcpy(out[k], p, l);
            out[k][l] = '/';
            strcpy(out[k] + l + 1, cmd);
            k++;
        }
        if (e == NULL) {
            break;
        }
        p = e + 1;
    }
    return out;
}

static void pexec_fds(struct driver_exec *x, int *in, int *out, int *err)
{
    struct pexec *e = (struct pexec *)x;
    *in = e->in;
    *out = e->out;
    *err = e->err;
}

static void pexec_close_stdin(struct driver_exec *x)
{
    struct pexec *e = (struct pexec *)x;
    if (e->tty) {
        /* The master is also the output: send the terminal's end-of-file character instead. */
        struct termios tio;
        char eof = tcgetattr(e->in, &tio) == 0 ? (char)tio.c_cc[VEOF] : 4;
        ssize_t w = write(e->in, &eof, 1);
        (void)w;
        return;
    }
    if (e->in >= 0) {
        close(e->in);
        e->in = -1;
    }
}

static int pexec_resize(struct driver_exec *x, uint16_t rows, uint16_t cols)
{
    struct pexec *e = (struct pexec *)x;
    if (!e->tty || rows == 0 || cols == 0) {
        return GERR_INVAL;
    }
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    return ioctl(e->out, TIOCSWINSZ, &ws) == 0 ? 0 : GERR_IO;
}

static void reap(struct pexec *e, bool block)
{
    int st = 0;
    pid_t w;
    while ((w = waitpid(e->middle, &st, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
    }
    if (w == e->middle) {
        e->ended = true;
        e->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        e->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + e->signal;
    }
}

static int pexec_signal(struct driver_exec *x, int sig)
{
    struct pexec *e = (struct pexec *)x;
    if (!e->ended) {
        reap(e, false);
    }
    if (!e->ended) {
        /* The middle forwards catchable signals; SIGKILL and SIGSTOP would stop it, not the
         * command: those go by the control socket, and the middle sends them. */
        if (sig == SIGKILL || sig == SIGSTOP) {
            char c = sig == SIGKILL ? 'K' : 'S';
            ssize_t w = e->ctl >= 0 ? send(e->ctl, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;
            (void)w;
        } else {
            kill(e->middle, sig);
        }
    }
    return 0;
}

static int pexec_status(struct driver_exec *x, int *exit_code, int *signal)
{
    struct pexec *e = (struct pexec *)x;
    if (!e->ended) {
        reap(e, false);
    }
    if (!e->ended) {
        return GERR_BUSY;
    }
    *exit_code = e->exit_code;
    *signal = e->signal;
    return 0;
}

static void pexec_close(struct driver_exec *x)
{
    struct pexec *e = (struct pexec *)x;
    if (!e->ended) {
        reap(e, false);
    }
    if (e->ctl >= 0) {
        close(e->ctl); /* the middle ends the command's group (end_group) and exits */
        e->ctl = -1;
    }
    /* The middle needs at most the grace period; then, or if it is stuck, SIGKILL (the command
     * dies by its parent-death signal; its background children are left to the sandbox). */
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (uint64_t deadline = now_ms() + PEXEC_GRACE_MS + 1000; !e->ended && now_ms() < deadline;) {
        nanosleep(&pause, NULL);
        reap(e, false);
    }
    if (!e->ended) {
        kill(e->middle, SIGKILL);
        reap(e, true);
    }
    for (int *fd = &e->in; fd <= &e->err; fd++) {
        if (*fd >= 0 && !(e->tty && fd == &e->in)) { /* with a tty in and out are one descriptor */
            close(*fd);
        }
    }
    mem_free(e);
}

static const struct driver_exec_ops pexec_ops = {.fds = pexec_fds,
                                                 .close_stdin = pexec_close_stdin,
                                                 .resize = pexec_resize,
                                                 .signal = pexec_signal,
                                                 .status = pexec_status,
                                                 .close = pexec_close};

int pexec_start(const struct pexec_target *t, const struct driver_exec_spec *spec, struct driver_exec **out,
                char *errmsg)
{
    int rv = GERR_IO;
    int ns_fds[N_NS], ours[3] = {-1, -1, -1}, theirs[3] = {-1, -1, -1}, rep[2] = {-1, -1}, ctl[2] = {-1, -1},
                      owner = -1;
    for (int i = 0; i < N_NS; i++) {
        ns_fds[i] = -1;
    }
    int pidfd;
    if ((rv = target_pin(t, &pidfd, errmsg)) != 0) {
        return rv;
    }
    rv = GERR_IO;
    char **env = read_environ(t->main_pid, errmsg), **argv = NULL, **paths = NULL;
    if (env == NULL) {
        if (pidfd >= 0) {
            close(pidfd);
        }
        return GERR_UNAVAILABLE;
    }
    const char *path = t->path;
    for (size_t i = 0; env[i] != NULL; i++) {
        if (strncmp(env[i], "PATH=", 5) == 0) {
            path = env[i] + 5;
        }
    }
    argv = mem_zalloc(sizeof *argv * (spec->n_command + 1));
    for (size_t i = 0; i < spec->n_command; i++) {
        argv[i] = mem_strdup(spec->command[i]);
    }
    paths = candidates(spec->command[0], path);
    for (int i = 0; i < N_NS; i++) {
        char theirs_path[64], ours_path[64];
        struct stat a, b;
        snprintf(theirs_path, sizeof theirs_path, "/proc/%ld/ns/%s", t->main_pid, ns_names[i]);
        snprintf(ours_path, sizeof ours_path, "/proc/self/ns/%s", ns_names[i]);
        if (stat(theirs_path, &a) != 0) {
            if (errno == ENOENT && strcmp(ns_names[i], "cgroup") == 0) {
                continue; /* a kernel without cgroup namespaces */
            }
            gerr_set(errmsg, "the sandbox's main process is gone");
            rv = GERR_UNAVAILABLE;
            goto out;
        }
        if (stat(ours_path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            continue; /* shared with us (network "host"): nothing to join */
        }
        if ((ns_fds[i] = high(open(theirs_path, O_RDONLY | O_CLOEXEC))) < 0) {
            gerr_set(errmsg, "open %s: %s", theirs_path, strerror(errno));
            goto out;
        }
    }
    if (t->user_first && ns_fds[5] >= 0) { /* the owner of the mount namespace (ns_names[5]) */
        struct stat a, b;
        int o = ioctl(ns_fds[5], NS_GET_USERNS);
        if (o >= 0 && fstat(o, &a) == 0 && stat("/proc/self/ns/user", &b) == 0 &&
            (a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
            owner = high(o);
        } else if (o >= 0) {
            close(o); /* ours already */
        } else {
            gerr_set(errmsg, "the owner of the sandbox's namespaces: %s", strerror(errno));
            goto out;
        }
    }
    /* The environment and the namespaces were read through the pid: it must still name the
     * process pinned and checked above. */
    if ((rv = target_still(t, pidfd, errmsg)) != 0) {
        goto out;
    }
    rv = GERR_IO;
    if (spec->tty) {
        struct winsize ws = {.ws_row = spec->rows ? spec->rows : 24, .ws_col = spec->cols ? spec->cols : 80};
        int m, s;
        if (openpty(&m, &s, NULL, NULL, &ws) != 0) {
            gerr_set(errmsg, "openpty: %s", strerror(errno));
            goto out;
        }
        ours[0] = high(m);
        ours[1] = ours[0];
        theirs[0] = high(s);
        theirs[1] = fcntl(theirs[0], F_DUPFD_CLOEXEC, 20);
        theirs[2] = fcntl(theirs[0], F_DUPFD_CLOEXEC, 20);
    } else {
        for (int i = 0; i < 3; i++) {
            int p[2];
            if (pipe2(p, O_CLOEXEC) != 0) {
                gerr_set(errmsg, "pipe: %s", strerror(errno));
                goto out;
            }
            ours[i] = high(i == 0 ? p[1] : p[0]);
            theirs[i] = high(i == 0 ? p[0] : p[1]);
        }
    }
    if (pipe2(rep, O_CLOEXEC) != 0) {
        gerr_set(errmsg, "pipe: %s", strerror(errno));
        goto out;
    }
    rep[1] = high(rep[1]);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) {
        gerr_set(errmsg, "socketpair: %s", strerror(errno));
        goto out;
    }
    ctl[0] = high(ctl[0]);
    for (int i = 0; i < 3; i++) {
        if ((ours[i] < 0 && !(spec->tty && i == 2)) || theirs[i] < 0 || ctl[0] < 0) {
            gerr_set(errmsg, "descriptors: %s", strerror(errno));
            goto out;
        }
    }
    pid_t middle = fork();
    if (middle < 0) {
        gerr_set(errmsg, "fork: %s", strerror(errno));
        goto out;
    }
    if (middle == 0) {
        run_middle(t, spec->tty, theirs, rep[1], ctl[0], owner, ns_fds, argv, env, paths);
    }
    close(rep[1]);
    rep[1] = -1;
    close(ctl[0]);
    ctl[0] = -1;
    /* EOF once the command has exec'd (the report pipe is close-on-exec there) and the middle
     * forwards signals to it, or every process holding it has died. */
    struct report_msg m;
    ssize_t r;
    while ((r = read(rep[0], &m, sizeof m)) < 0 && errno == EINTR) {
    }
    if (r == (ssize_t)sizeof m) {
        int st;
        while (waitpid(middle, &st, 0) < 0 && errno == EINTR) {
        }
        gerr_set(errmsg, "exec in the sandbox: %s: %s",
                 m.step >= 0 && m.step < (int)(sizeof steps / sizeof steps[0]) ? steps[m.step] : "?",
                 strerror(m.err));
        goto out;
    }
    struct pexec *e = mem_zalloc(sizeof *e);
    e->base.ops = &pexec_ops;
    e->middle = middle;
    e->ctl = ctl[1];
    ctl[1] = -1;
    e->tty = spec->tty;
    e->in = ours[0];
    e->out = ours[1];
    e->err = spec->tty ? -1 : ours[2];
    for (int i = 0; i < 3; i++) {
        if (ours[i] >= 0) {
            fcntl(ours[i], F_SETFL, fcntl(ours[i], F_GETFL) | O_NONBLOCK);
        }
    }
    ours[0] = ours[1] = ours[2] = -1;
    *out = &e->base;
    rv = 0;
out:
    for (int i = 0; i < 3; i++) {
        if (ours[i] >= 0 && !(spec->tty && i == 1)) {
            close(ours[i]);
        }
        if (theirs[i] >= 0) {
            close(theirs[i]);
        }
    }
    for (int i = 0; i < N_NS; i++) {
        if (ns_fds[i] >= 0) {
            close(ns_fds[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (rep[i] >= 0) {
            close(rep[i]);
        }
        if (ctl[i] >= 0) {
            close(ctl[i]);
        }
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    if (owner >= 0) {
        close(owner);
    }
    free_strv(env);
    free_strv(argv);
    free_strv(paths);
    return rv;
}

/* ---- Port-forward: a socket connected inside the sandbox's network namespace. */

struct pconn {
    struct driver_exec base;
    int fd;
};

static void pconn_fds(struct driver_exec *x, int *in, int *out, int *err)
{
    struct pconn *c = (struct pconn *)x;
    *in = c->fd;
    *out = c->fd;
    *err = -1;
}

static void pconn_close_stdin(struct driver_exec *x)
{
    shutdown(((struct pconn *)x)->fd, SHUT_WR);
}

static int pconn_resize(struct driver_exec *x, uint16_t rows, uint16_t cols)
{
    (void)x;
    (void)rows;
    (void)cols;
    return GERR_INVAL;
}

static int pconn_signal(struct driver_exec *x, int sig)
{
    (void)x;
    (void)sig;
    return GERR_INVAL;
}

static int pconn_status(struct driver_exec *x, int *exit_code, int *signal)
{
    (void)x;
    *exit_code = 0;
    *signal = 0;
    return 0;
}

static void pconn_close(struct driver_exec *x)
{
    close(((struct pconn *)x)->fd);
    mem_free(x);
}

static const struct driver_exec_ops pconn_ops = {.fds = pconn_fds,
                                                 .close_stdin = pconn_close_stdin,
                                                 .resize = pconn_resize,
                                                 .signal = pconn_signal,
                                                 .status = pconn_status,
                                                 .close = pconn_close};

struct connect_job {
    int ns_fd;
    uint16_t port;
    unsigned timeout_ms;
    int fd, err, step; /* the socket, or errno and the failed step */
};

static void *connect_in_ns(void *arg)
{
    struct connect_job *j = arg;
    j->fd = -1;
    if (j->ns_fd >= 0 && setns(j->ns_fd, CLONE_NEWNET) != 0) {
        j->err = errno;
        j->step = 0;
        return NULL;
    }
    /* Non-blocking, with a bound: a listener whose backlog is full (or a filtered port) drops
     * our SYN and the kernel would retry for about two minutes. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(j->port), .sin_addr.s_addr = htonl(0x7f000001)};
    int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && fd >= 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int pr;
        uint64_t deadline = now_ms() + j->timeout_ms;
        do {
            uint64_t now = now_ms();
            pr = poll(&p, 1, now < deadline ? (int)(deadline - now) : 0);
        } while (pr < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (pr == 0) {
            errno = ETIMEDOUT;
        } else if (pr > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
            rc = soerr == 0 ? 0 : -1;
            errno = soerr;
        }
        j->step = pr == 0 ? 2 : 1;
    } else {
        j->step = 1;
    }
    if (rc != 0) {
        j->err = errno;
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    j->fd = fd;
    return NULL; /* the thread ends here: its namespace goes with it, the socket keeps its own */
}

/* Without root on the host: a thread cannot join a user namespace (a multithreaded process may
 * not), so a forked helper joins the one that owns the sandbox's network namespace (@owner_fd),
 * then that namespace, connects as connect_in_ns does, and sends back the socket or errno and
 * step over @sp. In the child of a multithreaded process: async-signal-safe calls only. */
static void __attribute__((noreturn)) connect_helper(struct connect_job *j, int owner_fd, int sp)
{
    struct {
        int err, step;
    } m = {0, 0};
    if (owner_fd >= 0 && setns(owner_fd, CLONE_NEWUSER) != 0) {
        j->fd = -1;
        j->err = errno;
        j->step = 0;
    } else {
        connect_in_ns(j);
    }
    m.err = j->err;
    m.step = j->step;
    struct iovec iov = {&m, sizeof m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (j->fd >= 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &j->fd, sizeof(int));
    }
    ssize_t w = sendmsg(sp, &mh, MSG_NOSIGNAL);
    (void)w;
    _exit(0);
}

/* Run connect_helper and wait for its answer (bounded: the connect's own bound and 2 s); fills
 * @j as connect_in_ns would. 0, or an errno when the helper could not run or answer. */
static int connect_forked(struct connect_job *j, int owner_fd)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        return errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(sp[0]);
        close(sp[1]);
        return err;
    }
    if (pid == 0) {
        close(sp[0]);
        connect_helper(j, owner_fd, sp[1]);
    }
    close(sp[1]);
    int err = 0;
    struct {
        int err, step;
    } m = {0, 0};
    struct iovec iov = {&m, sizeof m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct pollfd p = {sp[0], POLLIN, 0};
    int pr;
    uint64_t deadline = now_ms() + j->timeout_ms + 2000;
    do {
        uint64_t now = now_ms();
        pr = poll(&p, 1, now < deadline ? (int)(deadline - now) : 0);
    } while (pr < 0 && errno == EINTR);
    ssize_t r = pr > 0 ? recvmsg(sp[0], &mh, MSG_CMSG_CLOEXEC) : -1;
    if (r != (ssize_t)sizeof m) {
        err = pr == 0 ? ETIMEDOUT : EPROTO;
        kill(pid, SIGKILL);
    } else {
        j->err = m.err;
        j->step = m.step;
        j->fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            memcpy(&j->fd, CMSG_DATA(c), sizeof(int));
        }
    }
    close(sp[0]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return err;
}

int pexec_port_connect(const struct pexec_target *t, uint16_t port, struct driver_exec **out, char *errmsg)
{
    int pidfd, rv;
    if ((rv = target_pin(t, &pidfd, errmsg)) != 0) {
        return rv;
    }
    char path[64];
    struct stat a, b;
    snprintf(path, sizeof path, "/proc/%ld/ns/net", t->main_pid);
    struct connect_job j = {.ns_fd = open(path, O_RDONLY | O_CLOEXEC),
                            .port = port,
                            .timeout_ms =
                                t->connect_timeout_ms != 0 ? t->connect_timeout_ms : PEXEC_CONNECT_TIMEOUT_MS,
                            .fd = -1};
    if (j.ns_fd < 0) {
        gerr_set(errmsg, "the sandbox's main process is gone");
        rv = GERR_UNAVAILABLE;
    } else {
        rv = target_still(t, pidfd, errmsg);
        if (rv == 0 && fstat(j.ns_fd, &a) == 0 && stat("/proc/self/ns/net", &b) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            close(j.ns_fd); /* shared with us (network "host"): nothing to join */
            j.ns_fd = -1;
        }
    }
    int owner = -1;
    if (rv == 0 && t->user_first && j.ns_fd >= 0) { /* without root: the network namespace's owner */
        owner = ioctl(j.ns_fd, NS_GET_USERNS);
        if (owner < 0) {
            gerr_set(errmsg, "the owner of the sandbox's network namespace: %s", strerror(errno));
            rv = GERR_IO;
        } else if (fstat(owner, &a) == 0 && stat("/proc/self/ns/user", &b) == 0 && a.st_ino == b.st_ino &&
                   a.st_dev == b.st_dev) {
            close(owner); /* ours already */
            owner = -1;
        }
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    if (rv != 0) {
        if (j.ns_fd >= 0) {
            close(j.ns_fd);
        }
        return rv;
    }
    bool own_ns = j.ns_fd < 0;
    if (owner >= 0) {
        rv = connect_forked(&j, owner);
        close(owner);
        if (!own_ns) {
            close(j.ns_fd);
        }
        if (rv != 0) {
            gerr_set(errmsg, "connect from a helper process: %s", strerror(rv));
            return GERR_IO;
        }
    } else {
        pthread_t th;
        rv = pthread_create(&th, NULL, connect_in_ns, &j);
        if (rv == 0) {
            pthread_join(th, NULL);
        }
        if (!own_ns) {
            close(j.ns_fd);
        }
        if (rv != 0) {
            gerr_set(errmsg, "cannot start a thread: %s", strerror(rv));
            return GERR_IO;
        }
    }
    if (j.fd < 0) {
        if (j.step == 1 && j.err == ECONNREFUSED) {
            gerr_set(errmsg, "nothing listens on port %u of the sandbox's loopback", port);
            return GERR_REFUSED;
        }
        if (j.step == 2) {
            gerr_set(errmsg,
                     "port %u of the sandbox's loopback did not accept the connection within %u ms (its "
                     "listener's backlog is full, or it never accepts)",
                     port, j.timeout_ms);
            return GERR_TIMEOUT;
        }
        gerr_set(errmsg, "%s: %s", j.step == 0 ? "join the sandbox's network namespace" : "connect",
                 strerror(j.err));
        return GERR_IO;
    }
    struct pconn *c = mem_zalloc(sizeof *c);
    c->base.ops = &pconn_ops;
    c->fd = j.fd;
    *out = &c->base;
    return 0;
}
