/* Child processes for harnesses. See proc.h.
 *
 * Happy path: everything that can fail or allocate (the environment, the output files) is
 * prepared in the parent; fork; the child only makes async-signal-safe calls (setpgid, prctl,
 * sigaction, dup2, close_range, chdir, execve) because the parent may have other threads.
 * Waiting uses a pidfd when the kernel has one, so an exit wakes the waiter at once.
 *
 * Failure modes: the output files cannot be created or fork fails (error, nothing runs); exec
 * fails (the child writes why to its stderr file and exits 127); the parent dies first (the
 * child gets SIGKILL from PR_SET_PDEATHSIG). */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "mem.h"

extern char **environ;

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static int open_out(const char *path, bool append, char *errmsg)
{
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
    int fd = open(path != NULL ? path : "/dev/null", flags, 0600);
    if (fd < 0) {
        gerr_set(errmsg, "open %s: %s", path != NULL ? path : "/dev/null", strerror(errno));
    }
    return fd;
}

/* This process's environment with @extra applied ("NAME=value" sets, "NAME" unsets). */
static char **build_env(const char *const *extra)
{
    size_t n_env = 0, n_extra = 0, k = 0;
    while (environ != NULL && environ[n_env] != NULL) {
        n_env++;
    }
    while (extra != NULL && extra[n_extra] != NULL) {
        n_extra++;
    }
    char **out = mem_alloc((n_env + n_extra + 1) * sizeof *out);
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t name_len = eq != NULL ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < n_extra; j++) {
            const char *xeq = strchr(extra[j], '=');
            size_t xlen = xeq != NULL ? (size_t)(xeq - extra[j]) : strlen(extra[j]);
            if (xlen == name_len && strncmp(extra[j], environ[i], name_len) == 0) {
                overridden = true;
                break;
            }
        }
        if (!overridden) {
            out[k++] = environ[i];
        }
    }
    for (size_t j = 0; j < n_extra; j++) {
        if (strchr(extra[j], '=') != NULL) {
            out[k++] = (char *)extra[j];
        }
    }
    out[k] = NULL;
    return out;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void child_exec(const struct proc_spec *spec, char **envp, int out_fd, int err_fd, pid_t parent)
{
    struct sigaction dfl;
    sigset_t none;

    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        _exit(126); /* the parent is already gone */
    }
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) {
            sigaction(sig, &dfl, NULL);
        }
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    int in_fd = open("/dev/null", O_RDONLY);
    if (in_fd < 0 || dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) {
        _exit(126);
    }
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
    {
        for (int fd = 3; fd < 4096; fd++) {
            close(fd);
        }
    }
    if (spec->cwd != NULL && chdir(spec->cwd) != 0) {
        static const char msg[] = "proc: chdir failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    execve(spec->argv[0], (char *const *)spec->argv, envp);
    {
        static const char msg1[] = "proc: cannot execute ";
        static const char msg2[] = "\n";
        ssize_t w = write(2, msg1, sizeof msg1 - 1);
        w = write(2, spec->argv[0], strlen(spec->argv[0]));
        w = write(2, msg2, sizeof msg2 - 1);
        (void)w;
    }
    _exit(127);
}

int proc_spawn(struct proc *p, const struct proc_spec *spec, char *errmsg)
{
    int out_fd, err_fd;

    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->pidfd = -1;
    if (spec->argv == NULL || spec->argv[0] == NULL) {
        gerr_set(errmsg, "proc: no program given");
        return GERR_INVAL;
    }
    if ((spec->stdout_path != NULL && strlen(spec->stdout_path) >= sizeof p->stdout_path) ||
        (spec->stderr_path != NULL && strlen(spec->stderr_path) >= sizeof p->stderr_path)) {
        gerr_set(errmsg, "proc: output path too long");
        return GERR_INVAL;
    }
    snprintf(p->stdout_path, sizeof p->stdout_path, "%s", spec->stdout_path != NULL ? spec->stdout_path : "");
    snprintf(p->stderr_path, sizeof p->stderr_path, "%s", spec->stderr_path != NULL ? spec->stderr_path : "");
    if (spec->append && spec->stdout_path != NULL) {
        struct stat st;
        if (stat(spec->stdout_path, &st) == 0) {
            p->scan_off = (size_t)st.st_size; /* only lines of this run count */
        }
    }

    out_fd = open_out(spec->stdout_path, spec->append, errmsg);
    if (out_fd < 0) {
        return GERR_IO;
    }
    err_fd = open_out(spec->stderr_path, spec->append, errmsg);
    if (err_fd < 0) {
        goto err_after_out;
    }
    char **envp = build_env(spec->env);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        gerr_set(errmsg, "proc: fork %s: %s", spec->argv[0], strerror(errno));
        goto err_after_env;
    }
    if (pid == 0) {
        child_exec(spec, envp, out_fd, err_fd, parent);
    }
    /* Both sides call setpgid so the group exists whichever runs first. */
    setpgid(pid, pid);
    p->pid = pid;
#ifdef SYS_pidfd_open
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    mem_free(envp);
    close(err_fd);
    close(out_fd);
    return 0;

err_after_env:
    mem_free(envp);
    close(err_fd);
err_after_out:
    close(out_fd);
    return GERR_IO;
}

void proc_close(struct proc *p)
{
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
}

/* Reap without blocking. True if the child has exited (now or before). */
static bool try_reap(struct proc *p)
{
    if (p->exited) {
        return true;
    }
    if (p->pid <= 0) {
        return true;
    }
    int status;
    pid_t r;
    do {
        r = waitpid(p->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->exited = true;
        p->status = r == p->pid ? status : 0;
        proc_close(p);
        return true;
    }
    return false;
}

/* Block until the child may have changed state or @ms passed. */
static void wait_event(struct proc *p, int ms)
{
    if (ms <= 0) {
        return;
    }
    if (p->pidfd >= 0) {
        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
        if (poll(&pfd, 1, ms) >= 0 || errno == EINTR) {
            return;
        }
    }
    /* No pidfd: a short poll interval bounded by the caller's deadline. */
    struct timespec ts = {0, (long)(ms < 2 ? ms : 2) * 1000000L};
    nanosleep(&ts, NULL);
}

bool proc_running(struct proc *p)
{
    return !try_reap(p);
}

int proc_signal(struct proc *p, int sig)
{
    if (p->pid <= 0 || p->exited) {
        return GERR_CLOSED;
    }
    if (kill(p->pid, sig) != 0) {
        return gerr_from_errno(errno);
    }
    return 0;
}

int proc_reap(struct proc *p, unsigned timeout_ms, int *status)
{
    uint64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (try_reap(p)) {
            if (status != NULL) {
                *status = p->status;
            }
            return 0;
        }
        uint64_t now = now_ms();
        if (now >= deadline) {
            return GERR_TIMEOUT;
        }
        wait_event(p, (int)(deadline - now > 1000 ? 1000 : deadline - now));
    }
}

int proc_stop(struct proc *p, unsigned term_timeout_ms)
{
    if (try_reap(p)) {
        return 0;
    }
    proc_signal(p, SIGTERM);
    if (proc_reap(p, term_timeout_ms, NULL) == 0) {
        return 0;
    }
    proc_kill(p);
    return GERR_TIMEOUT;
}

void proc_kill(struct proc *p)
{
    if (try_reap(p)) {
        return;
    }
    proc_signal(p, SIGKILL);
    /* SIGKILL cannot be ignored: the wait ends as soon as the kernel tears the process down. */
    while (proc_reap(p, 60000, NULL) != 0) {
    }
}

int proc_wait_line(struct proc *p, const char *prefix, unsigned timeout_ms, char *line, size_t line_len,
                   char *errmsg)
{
    uint64_t deadline = now_ms() + timeout_ms;
    size_t plen = strlen(prefix);
    char chunk[4096];

    if (p->stdout_path[0] == '\0') {
        gerr_set(errmsg, "proc: stdout of pid %d is not captured", (int)p->pid);
        return GERR_INVAL;
    }
    for (;;) {
        /* Check the exit first, then read: a line printed just before exiting is still seen. */
        bool exited = try_reap(p);
        int fd = open(p->stdout_path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char acc[8192];
            size_t acc_len = 0;
            off_t off = (off_t)p->scan_off;
            for (;;) {
                ssize_t r = pread(fd, chunk, sizeof chunk, off);
                if (r <= 0) {
                    break;
                }
                off += r;
                for (ssize_t i = 0; i < r; i++) {
                    if (chunk[i] != '\n') {
                        if (acc_len < sizeof acc - 1) {
                            acc[acc_len++] = chunk[i];
                        }
                        continue;
                    }
                    acc[acc_len] = '\0';
                    p->scan_off = (size_t)(off - r + i + 1);
                    if (strncmp(acc, prefix, plen) == 0) {
                        snprintf(line, line_len, "%s", acc);
                        close(fd);
                        return 0;
                    }
                    acc_len = 0;
                }
            }
            close(fd);
        }
        if (exited) {
            char st[64];
            gerr_set(errmsg, "pid %d exited (%s) before printing \"%s\"", (int)p->pid,
                     proc_status_str(p->status, st, sizeof st), prefix);
            return GERR_CLOSED;
        }
        uint64_t now = now_ms();
        if (now >= deadline) {
            gerr_set(errmsg, "pid %d did not print \"%s\" within %u ms", (int)p->pid, prefix, timeout_ms);
            return GERR_TIMEOUT;
        }
        /* The file has no wake-up; a child exit does (pidfd). Re-read every 5 ms at most. */
        wait_event(p, (int)(deadline - now < 5 ? deadline - now : 5));
    }
}

const char *proc_status_str(int status, char *buf, size_t len)
{
    if (WIFEXITED(status)) {
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else {
        snprintf(buf, len, "wait status 0x%x", (unsigned)status);
    }
    return buf;
}

const char *proc_file_tail(const char *path, size_t max_bytes, char *buf, size_t len)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return buf;
    }
    struct stat st;
    if (fstat(fd, &st) == 0) {
        size_t want = max_bytes < len - 1 ? max_bytes : len - 1;
        off_t off = st.st_size > (off_t)want ? st.st_size - (off_t)want : 0;
        ssize_t r = pread(fd, buf, want, off);
        buf[r > 0 ? (size_t)r : 0] = '\0';
    }
    close(fd);
    return buf;
}
