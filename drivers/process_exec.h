/* The process driver's exec (drivers/driver.h, driver_exec_start): a command inside a running
 * bubblewrap sandbox.
 *
 * Happy path: read the environment of the sandbox's main command (the first child of bwrap's
 * init), open the namespaces of that process that differ from ours, make the pipes or the pty,
 * then fork a middle process that drops supplementary groups, joins the namespaces (user last)
 * and forks the command, which (now in the sandbox's PID namespace) becomes a session leader,
 * takes the pty as its controlling terminal, moves to the workspace, switches to the sandbox's
 * uid and gid, sets no_new_privs and a parent-death SIGKILL, and execs the command found in the
 * sandbox's PATH. The middle process forwards signals to the command and exits as it did (the
 * same code, or the same signal), so the caller reaps its own child only.
 *
 * Failure modes: a step before exec fails: its errno and step come back on a report pipe and
 * pexec_start answers GERR_IO naming the step (nothing is left running); the command cannot be
 * executed: it prints why on its stderr and exits 127; the caller closes the exec while the
 * command runs: the middle is SIGKILLed and the command dies with it (parent-death signal). */
#ifndef GANTRY_DRIVERS_PROCESS_EXEC_H
#define GANTRY_DRIVERS_PROCESS_EXEC_H

#include <stdbool.h>
#include <sys/types.h>

#include "drivers/driver.h"

struct pexec_target {
    long main_pid; /* the sandbox's main command, as the host sees it */
    bool drop;     /* switch to uid/gid (we are root, the sandbox is not) */
    uid_t uid;
    gid_t gid;
    const char *workdir; /* inside the sandbox */
    const char *path;    /* the PATH to use when the environment has none */
};

/* Start @spec as described above. 0 with *@out; GERR_UNAVAILABLE when the main process is gone
 * (the sandbox stopped meanwhile); GERR_IO with the failed step in @errmsg. */
int pexec_start(const struct pexec_target *t, const struct driver_exec_spec *spec, struct driver_exec **out,
                char *errmsg);

/* Connect to 127.0.0.1:@port in the network namespace of @t->main_pid: a thread of ours joins
 * that namespace (setns affects the calling thread only), makes and connects the socket, and
 * ends; the socket keeps its namespace. The result is a driver_exec over the socket
 * (driver.h, driver_port_connect). GERR_REFUSED when nothing listens; GERR_UNAVAILABLE when the
 * main process is gone; GERR_IO. */
int pexec_port_connect(const struct pexec_target *t, uint16_t port, struct driver_exec **out, char *errmsg);

#endif
