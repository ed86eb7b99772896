/* The process driver's exec (drivers/driver.h, driver_exec_start): a command inside a running
 * bubblewrap sandbox.
 *
 * Happy path: pin the sandbox's main command (the first child of bwrap's init): open a pidfd for
 * its pid and check that the pid still names the process the caller found (its start time and
 * its PID namespace); read its environment and open its namespaces that differ from ours, then
 * check that the pinned process still lives (so everything read through its pid was its); make
 * the pipes or the pty, then fork a middle process that drops supplementary groups, joins the
 * namespaces (user last as root, first otherwise) and forks the command, which (now in the
 * sandbox's PID namespace) becomes a session and process-group leader, takes the pty as its
 * controlling terminal, moves to the workspace, and takes the credentials of the sandbox's main
 * process: an empty capability bounding set, no ambient, inheritable, permitted or effective
 * capabilities, the sandbox's uid and gid (as root), no_new_privs; then a parent-death SIGKILL,
 * and it execs the command found in the sandbox's PATH. No seccomp filter is installed: bwrap
 * installs none on the main process either (the driver passes no --seccomp). The middle
 * forwards signals to the command; when the command exits, or the caller closes the exec, it
 * ends the command's process group (end_group: SIGTERM, then SIGKILL after PEXEC_GRACE_MS) and
 * exits as the command did (the same code, or the same signal), so the caller reaps its own
 * child only.
 *
 * Failure modes: the pid names another process (reused): GERR_UNAVAILABLE "changed", nothing
 * runs; a step before exec fails: its errno and step come back on a report pipe and pexec_start
 * answers GERR_IO naming the step (nothing is left running); the command cannot be executed: it
 * prints why on its stderr and exits 127; the caller closes the exec while the command runs: the
 * middle ends the group within PEXEC_GRACE_MS (if the middle itself is stuck past that and a
 * second, it is SIGKILLed and the command dies with it by its parent-death signal). A process
 * that left the group (setsid, setpgid) is not ended with the session: it lives as long as the
 * sandbox does (bwrap's PID namespace dies with the sandbox). */
#ifndef GANTRY_DRIVERS_PROCESS_EXEC_H
#define GANTRY_DRIVERS_PROCESS_EXEC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "drivers/driver.h"

/* SIGTERM to the command's group, then SIGKILL after this long if anyone is left. */
#define PEXEC_GRACE_MS 1000u
/* A port-forward's connect to the sandbox's loopback gives up after this long (GERR_TIMEOUT). */
#define PEXEC_CONNECT_TIMEOUT_MS 5000u

struct pexec_target {
    long main_pid;               /* the sandbox's main command, as the host sees it */
    uint64_t main_start;         /* its start time (/proc/PID/stat field 22) as found; 0: not checked */
    uint64_t pidns;              /* the inode of the sandbox's PID namespace; 0: not checked */
    bool drop;                   /* switch to uid/gid (we are root, the sandbox is not) */
    bool user_first;             /* join the user namespace first (we are not root on the host) */
    unsigned connect_timeout_ms; /* port-forward; 0: PEXEC_CONNECT_TIMEOUT_MS */
    uid_t uid;
    gid_t gid;
    const char *workdir; /* inside the sandbox */
    const char *path;    /* the PATH to use when the environment has none */
};

/* Start @spec as described above. 0 with *@out; GERR_UNAVAILABLE when the main process is gone
 * (the sandbox stopped meanwhile) or its pid names another process than @t says (start time or
 * PID namespace differ); GERR_IO with the failed step in @errmsg. Closing the result
 * (driver_exec_close) may take up to PEXEC_GRACE_MS + 1 s while the command's group ends. */
int pexec_start(const struct pexec_target *t, const struct driver_exec_spec *spec, struct driver_exec **out,
                char *errmsg);

/* Connect to 127.0.0.1:@port in the network namespace of @t->main_pid (pinned and checked as
 * for pexec_start): a thread of ours joins that namespace (setns affects the calling thread
 * only), makes and connects the socket without blocking for longer than the timeout, and ends;
 * the socket keeps its namespace. The result is a driver_exec over the socket (driver.h,
 * driver_port_connect). GERR_REFUSED when nothing listens; GERR_TIMEOUT when the connection is
 * not accepted in time (a full backlog, a listener that never accepts); GERR_UNAVAILABLE when
 * the main process is gone or changed; GERR_IO (also when we are not root on the host: the
 * thread cannot join the network namespace without first joining the user namespace, which a
 * thread of a multithreaded process cannot). */
int pexec_port_connect(const struct pexec_target *t, uint16_t port, struct driver_exec **out, char *errmsg);

#endif
