/* The process driver, Gantry's embedded default: each sandbox is a local process tree under
 * bubblewrap (bwrap), with its own PID, mount, network, IPC, UTS and user namespaces, the host's
 * files read-only, an empty /tmp, /run and /home, and a writable workspace at /home/sandbox.
 *
 * State directory (the backend; every replica on the host pointing at it adopts what is there):
 *   lock                       flock(2) held for the whole of every call, by every instance
 *   epoch                      the newest epoch seen, decimal, replaced atomically (rename)
 *   namespaces/<ns>/           made by ensure_namespace (mode 0711)
 *   namespaces/<ns>/<id>/      the sandbox's workspace (0700, owned by the sandbox uid)
 *   sandboxes/<id>.json        the state file: spec summary, epoch, bwrap's pid and the pid of the
 *                              sandbox's init (the first process of its PID namespace) with their
 *                              start times from /proc/<pid>/stat, and the PID namespace's inode
 *   sandboxes/<id>.status      bwrap's --json-status-fd output: the init's pid and namespace inodes
 *                              at start, the exit code at the end
 *   sandboxes/<id>.log[.1]     the sandbox's stdout and stderr (and bwrap's own errors), as
 *                              timestamped records in two rotating files of at most
 *                              log_file_bytes each, written by a pump process started with bwrap
 *                              (drivers/process_log.h); read by driver_logs_open
 * A process is taken to be the recorded one only if its start time (and PID namespace, where
 * known) match the record, so a reused pid is never signalled. The state file is written before
 * bwrap starts and completed after, so a replica that dies in between leaves a record that the
 * next one completes from the status file, never an invisible process.
 *
 * Process tree and stop: sandboxes are started detached (double fork, new session; bwrap gets no
 * --die-with-parent), so they outlive the replica that made them. delete() SIGKILLs the sandbox's
 * init: the kernel then kills every process of that PID namespace, whatever it did with sessions,
 * process groups or double forks; then bwrap itself, and delete() returns only when no live
 * process is left in the namespace (or GERR_TIMEOUT after stop_timeout_ms). No cgroup is needed.
 * The workspace, status, log and state files are removed after.
 *
 * Privileges: when the replica runs as root, sandboxes run as sandbox_uid/sandbox_gid (default
 * 65534, nobody), and bwrap runs unprivileged inside a user namespace; the state directory and its
 * parents must then be searchable (x) by that uid, because bwrap resolves the workspace's path as
 * that uid. The state directory itself is hidden inside every sandbox (an empty tmpfs over it).
 *
 * Availability: driver_process_new() runs a probe sandbox (bwrap with every namespace, binding a
 * directory of the state dir). If it fails, the driver is still made, but capabilities report
 * available = false with bwrap's own message, and validate/create answer GERR_UNAVAILABLE.
 *
 * Credentials (caps.credentials): the files live on a tmpfs outside the state directory
 * (drivers/process_creds.h), bound read-only at DRIVER_CREDENTIALS_DIR/<provider>/<key> (0400, the
 * sandbox's uid) and hidden from every other sandbox; environment variables travel on the options
 * memfd with the rest of the environment. update_credentials replaces the files of a sandbox that
 * was started with credentials (its environment keeps the first values).
 *
 * driver_config keys: "network" = "none" (default: own empty network namespace, loopback only),
 * "host" (shares the host's network) or "egress" (own network namespace whose only way out is the
 * egress relay: drivers/process_net.h; needs root and egress_relay_port). gpu_count must be 0. The image is
 * ignored (caps.images is false): sandboxes see the host's files. lifetime_s is recorded, and enforced by the
 * reconciler.
 *
 * Thread-safe (the instance mutex; the flock between instances and processes). */
#ifndef GANTRY_DRIVERS_PROCESS_H
#define GANTRY_DRIVERS_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"

#define DRIVER_PROCESS_MAX_STATE (256u * 1024u) /* bytes of a state file */
#define DRIVER_PROCESS_PID_MAX   4194304        /* Linux PID_MAX_LIMIT */

struct driver_process_config {
    const char *state_dir;     /* required, absolute; made (0711) if missing, its parent must exist */
    const char *bwrap_path;    /* NULL = "/usr/bin/bwrap" */
    long sandbox_uid;          /* -1 = 65534 when running as root, else our own uid */
    long sandbox_gid;          /* -1 = 65534 when running as root, else our own gid */
    unsigned start_timeout_ms; /* 0 = 10000: bwrap must report the sandbox's init within this */
    unsigned stop_timeout_ms;  /* 0 = 10000: the tree must be gone within this after SIGKILL */
    /* The main process's output log (drivers/process_log.h): bytes per file, two files per
     * sandbox. 0 = 4 MiB; values below 64 KiB count as 64 KiB. */
    uint64_t log_file_bytes;
    /* Where credential files are kept (drivers/process_creds.h): NULL = a directory of /dev/shm
     * named after the state directory. Must be on a tmpfs; checked at the first create that
     * delivers credentials. */
    const char *credentials_dir;
    /* network = "egress" (drivers/process_net.h): the port the replicas' egress relays listen on
     * at each sandbox's door address; 0 = the mode is refused (no relay configured). */
    unsigned egress_relay_port;
};

/* Make a process driver over @cfg->state_dir (strings copied). GERR_INVAL for a bad configuration
 * (relative path, uid given without root), or the error of making the state directory. Bubblewrap
 * not working is not an error here: see "Availability" above. *@out is set on 0. */
int driver_process_new(const struct driver_process_config *cfg, struct driver **out, char *errmsg);

/* ---- The state directory's formats, exposed for the fuzzer and the tests. Every decoder takes
 * @len bytes (no NUL needed), caps what it reads, and answers GERR_PROTO with the reason. */

struct process_state {
    char *id;
    char *ns;
    char *name;
    uint64_t epoch;
    uint64_t created_at_ms;
    uint64_t lifetime_s;
    long bwrap_pid;       /* 0 until bwrap has been started */
    uint64_t bwrap_start; /* start time in clock ticks since boot (/proc/<pid>/stat field 22) */
    long init_pid;        /* 0 until bwrap has reported its child */
    uint64_t init_start;
    uint64_t pidns; /* inode of the sandbox's PID namespace, 0 until known */
};

void process_state_close(struct process_state *st);

/* Encode @st plus a summary of @spec (owner, image, command, environment names without values,
 * labels, network; @spec may be NULL) as a JSON document (heap, mem_free; *@len bytes). */
char *process_state_encode(const struct process_state *st, const struct driver_sandbox_spec *spec,
                           size_t *len);
int process_state_decode(const char *text, size_t len, struct process_state *st, char *errmsg);

/* bwrap's status stream: JSON objects one after another; a partial last object (still being
 * written) is ignored. */
struct process_status {
    long child_pid; /* 0 if not reported */
    uint64_t pidns; /* 0 if not reported */
    bool exited;
    int exit_code;
};
int process_status_decode(const char *text, size_t len, struct process_status *out, char *errmsg);

/* /proc/<pid>/stat: the state letter (field 3) and the start time (field 22). */
struct process_stat {
    char state;
    uint64_t starttime;
};
int process_stat_decode(const char *text, size_t len, struct process_stat *out, char *errmsg);

/* How many processes are members of the PID namespace whose inode number is @pidns, for a sandbox
 * whose namespace init was @init_pid, started at @init_start (0: unknown): live ones, and zombies
 * too when @zombies. The kernel reuses a namespace's inode number once the namespace is freed, so
 * when another process is the init of a namespace with that number (the last of its NSpid is 1),
 * the sandbox's namespace is gone: 0. Reads /proc. */
size_t process_ns_members(uint64_t pidns, bool zombies, long init_pid, uint64_t init_start);

/* The epoch file: one decimal number (no sign, no leading zeros), an optional newline. */
int process_epoch_decode(const char *text, size_t len, uint64_t *epoch, char *errmsg);

#endif
