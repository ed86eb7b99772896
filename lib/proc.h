/* Child processes for test harnesses and benchmarks: spawn with argv and environment, stdout and
 * stderr redirected to files, wait for a line on stdout within a deadline, signal, reap with a
 * timeout.
 *
 *   struct proc p;
 *   const char *argv[] = {"/path/bin", "--flag", NULL};
 *   struct proc_spec spec = {.argv = argv, .stdout_path = "out.log", .stderr_path = "err.log"};
 *   if (proc_spawn(&p, &spec, errmsg) == 0) {
 *       proc_wait_line(&p, "READY", 30000, line, sizeof line, errmsg);
 *       ...
 *       proc_stop(&p, 10000);   (SIGTERM, wait, then SIGKILL if needed; always reaps)
 *   }
 *
 * A child never outlives its parent: it is started with PR_SET_PDEATHSIG = SIGKILL, so even a
 * harness killed by SIGKILL (a ctest timeout) leaves nothing behind. Linux delivers that signal
 * when the *thread* that spawned the child exits, so spawn from a thread that lives as long as the
 * child should (the main thread). The child gets its own process group, a default signal mask
 * and dispositions, stdin from /dev/null, and no file descriptors other than 0, 1 and 2.
 *
 * Waiting never sleeps for a fixed time: it polls (the stdout file, or a pidfd) until the
 * condition holds or the deadline passes. Not thread-safe per struct proc; different procs may be
 * used from different threads. */
#ifndef GANTRY_LIB_PROC_H
#define GANTRY_LIB_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PROC_PATH_MAX 1024

struct proc {
    pid_t pid;   /* > 0 while spawned and not yet reaped */
    int pidfd;   /* -1 if the kernel has no pidfd_open */
    bool exited; /* reaped; status is valid */
    int status;  /* wait(2) status */
    char stdout_path[PROC_PATH_MAX];
    char stderr_path[PROC_PATH_MAX];
    size_t scan_off; /* stdout bytes already scanned by proc_wait_line */
};

struct proc_spec {
    const char *const *argv; /* argv[0] is the executable's path (no PATH search); NULL-terminated */
    const char *const *env;  /* "NAME=value" entries set on top of this process's environment
                              * (NULL-terminated; NULL for none); "NAME" alone unsets NAME */
    const char *stdout_path; /* created or truncated, 0600; NULL = /dev/null */
    const char *stderr_path; /* created or truncated, 0600; NULL = /dev/null */
    bool append;             /* append to the files instead of truncating them */
    const char *cwd;         /* NULL = inherit */
};

/* Start the child. Returns 0 with @p describing it, or GERR_INVAL / GERR_IO with the reason in
 * @errmsg (GERR_MSG_SIZE bytes; then nothing runs). A program that cannot be executed shows up
 * as a child that exits with status 127 and a message in its stderr file. */
int proc_spawn(struct proc *p, const struct proc_spec *spec, char *errmsg);

/* Wait until the child's stdout holds a complete line starting with @prefix (scanning only what
 * earlier calls did not consume), copy it without the newline into @line (@line_len bytes,
 * truncated) and return 0. GERR_TIMEOUT after @timeout_ms; GERR_CLOSED if the child exited
 * without printing it (reaped; see p->status). Messages in @errmsg name the program. */
int proc_wait_line(struct proc *p, const char *prefix, unsigned timeout_ms, char *line, size_t line_len,
                   char *errmsg);

/* Send @sig to the child. 0, or GERR_CLOSED if it was already reaped. */
int proc_signal(struct proc *p, int sig);

/* True while the child runs (reaps it, without blocking, if it exited). */
bool proc_running(struct proc *p);

/* Wait up to @timeout_ms for the child to exit and reap it. 0 (status in p->status, also in
 * *@status if not NULL), or GERR_TIMEOUT. Already reaped: 0 at once. */
int proc_reap(struct proc *p, unsigned timeout_ms, int *status);

/* SIGTERM, wait up to @term_timeout_ms, then SIGKILL and reap. Returns 0 if the child exited on
 * SIGTERM (or had exited), GERR_TIMEOUT if it needed SIGKILL. Always leaves it reaped. */
int proc_stop(struct proc *p, unsigned term_timeout_ms);

/* SIGKILL and reap. */
void proc_kill(struct proc *p);

/* Release the pidfd of a reaped child (proc_reap and the functions above do it too). */
void proc_close(struct proc *p);

/* Describe a wait status ("exited with status 3", "killed by signal 9 (Killed)") into @buf. */
const char *proc_status_str(int status, char *buf, size_t len);

/* The last @max_bytes of the file at @path, for error messages ("" if unreadable), into @buf. */
const char *proc_file_tail(const char *path, size_t max_bytes, char *buf, size_t len);

#endif
