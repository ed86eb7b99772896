/* The process driver (see process.h): sandboxes as detached bubblewrap process trees.
 *
 * Happy path of create(): take the state directory's lock, check and raise the epoch, write a
 * pending state file, start bwrap detached (double fork) with its options on a memfd (so
 * environment values never appear in /proc/<pid>/cmdline), wait until bwrap's status stream
 * names the sandbox's init, record its pid, start time and PID namespace, release the lock.
 *
 * Failure modes: bwrap cannot start or set up the namespaces (its message, from the sandbox's log,
 * is returned and everything made is removed); the replica dies between the pending record and
 * the complete one (the next call completes the picture from the status stream); a process dies
 * or its pid is reused (start time and namespace checks make it "gone", never a wrong target). */
#include "drivers/process.h"
#include "drivers/process_creds.h"
#include "drivers/process_exec.h"
#include "drivers/process_log.h"
#include "drivers/process_net.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drivers/driver_internal.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/proc.h"

#define DEFAULT_BWRAP      "/usr/bin/bwrap"
#define DEFAULT_TIMEOUT_MS 10000u
#define NOBODY             65534
#define WORKSPACE          "/home/sandbox"
#define SANDBOX_PATH       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define STATUS_MAX         (64u * 1024u)
#define POLL_NS            2000000u /* 2 ms between looks at a condition with a deadline */

static const char *const process_keys[] = {"network", NULL};

struct driver_process {
    struct driver base;
    char *state_dir;
    char *bwrap;
    char *lock_path;
    char *epoch_path;
    char *sb_dir; /* <state>/sandboxes */
    char *ns_dir; /* <state>/namespaces */
    uid_t uid;
    gid_t gid;
    bool drop; /* switch to uid/gid before exec (we are root, they are not) */
    unsigned start_timeout_ms;
    unsigned stop_timeout_ms;
    uint64_t log_file_bytes; /* per log file; two files per sandbox (process_log.h) */
    bool available;
    char detail[GERR_MSG_SIZE];
    char *cred_root;      /* credential files (drivers/process_creds.h) */
    unsigned egress_port; /* network = egress: the relays' port (drivers/process_net.h); 0: refused */
};

static struct driver_process *process_of(struct driver *d)
{
    return (struct driver_process *)d;
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return mem_strdup(tmp);
}

static void sleep_poll(void)
{
    struct clock *c = clock_system();
    c->sleep_ns(c, POLL_NS);
}

static uint64_t mono_ms(void)
{
    return clock_mono_ms(clock_system());
}

/* ---- /proc */

static int read_small(const char *path, char *buf, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = read(fd, buf, cap);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n < 0) {
        return -1;
    }
    *len = (size_t)n;
    return 0;
}

/* 0 with the stat of @pid, or -1 if there is no such process (or it cannot be read). */
static int proc_stat_of(long pid, struct process_stat *st)
{
    char path[64], buf[2048], err[GERR_MSG_SIZE];
    size_t len;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (pid <= 0 || read_small(path, buf, sizeof buf, &len) != 0) {
        return -1;
    }
    return process_stat_decode(buf, len, st, err) == 0 ? 0 : -1;
}

/* The inode of @pid's PID namespace, 0 if unreadable (gone, zombie). */
static uint64_t proc_pidns_of(long pid)
{
    char path[64], link[64];
    unsigned long long ino;
    snprintf(path, sizeof path, "/proc/%ld/ns/pid", pid);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0) {
        return 0;
    }
    link[n] = '\0';
    return sscanf(link, "pid:[%llu]", &ino) == 1 ? (uint64_t)ino : 0;
}

/* True if @pid is alive (not a zombie) and is the recorded process: the same start time when
 * @start is known, the same PID namespace when @pidns is known, at least one of them known. */
static bool proc_is(long pid, uint64_t start, uint64_t pidns)
{
    struct process_stat st;
    if (pid <= 0 || (start == 0 && pidns == 0) || proc_stat_of(pid, &st) != 0 || st.state == 'Z' ||
        st.state == 'X') {
        return false;
    }
    if (start != 0 && st.starttime != start) {
        return false;
    }
    return pidns == 0 || proc_pidns_of(pid) == pidns;
}

/* Whether @pid is the init of its PID namespace: the last (innermost) of its NSpid is 1. */
static bool proc_is_ns_init(long pid)
{
    char path[64], buf[4096];
    size_t len;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    if (read_small(path, buf, sizeof buf - 1, &len) != 0) {
        return false;
    }
    buf[len] = '\0';
    const char *line = strstr(buf, "\nNSpid:");
    if (line == NULL) {
        return false;
    }
    line += strlen("\nNSpid:");
    const char *eol = strchr(line, '\n');
    long last = 0;
    for (const char *q = line; *q != '\0' && (eol == NULL || q < eol);) {
        char *end;
        long v = strtol(q, &end, 10);
        if (end == q) {
            q++;
            continue;
        }
        last = v;
        q = end;
    }
    return last == 1;
}

size_t process_ns_members(uint64_t pidns, bool zombies, long init_pid, uint64_t init_start)
{
    size_t n = 0;
    DIR *dir = opendir("/proc");
    if (dir == NULL) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        struct process_stat st;
        if (*end != '\0' || pid <= 0 || proc_pidns_of(pid) != pidns || proc_stat_of(pid, &st) != 0) {
            continue;
        }
        if ((pid != init_pid || (init_start != 0 && st.starttime != init_start)) && proc_is_ns_init(pid)) {
            n = 0; /* the number is another namespace's now: ours, its init gone, is gone too */
            break;
        }
        n += zombies || (st.state != 'Z' && st.state != 'X');
    }
    closedir(dir);
    return n;
}

/* ---- State files */

static char *state_path(struct driver_process *p, const char *id)
{
    return pathf("%s/%s.json", p->sb_dir, id);
}

static char *status_path(struct driver_process *p, const char *id)
{
    return pathf("%s/%s.status", p->sb_dir, id);
}

static char *log_path(struct driver_process *p, const char *id)
{
    return pathf("%s/%s.log", p->sb_dir, id);
}

static char *workspace_path(struct driver_process *p, const char *ns, const char *id)
{
    return pathf("%s/%s/%s", p->ns_dir, ns, id);
}

/* 0 with the state of @id, GERR_NOTFOUND if there is none, GERR_PROTO if it is corrupt. */
static int state_read(struct driver_process *p, const char *id, struct process_state *st, char *errmsg)
{
    char *path = state_path(p, id), *text;
    size_t len;
    memset(st, 0, sizeof *st);
    int rv = file_read_all(path, DRIVER_PROCESS_MAX_STATE, &text, &len, errmsg);
    if (rv == 0) {
        rv = process_state_decode(text, len, st, errmsg);
        mem_free(text);
        if (rv != 0) {
            gerr_wrap(errmsg, "%s", path);
        }
    }
    mem_free(path);
    return rv;
}

static int state_write(struct driver_process *p, const struct process_state *st,
                       const struct driver_sandbox_spec *spec, char *errmsg)
{
    size_t len;
    char *text = process_state_encode(st, spec, &len);
    if (text == NULL) {
        gerr_set(errmsg, "cannot encode the state of %s", st->id);
        return GERR_INTERNAL;
    }
    char *path = state_path(p, st->id);
    int rv = driver__write_atomic(path, text, len, 0600, errmsg);
    mem_free(path);
    mem_free(text);
    return rv;
}

static void status_read(struct driver_process *p, const char *id, struct process_status *out)
{
    char *path = status_path(p, id), *text, err[GERR_MSG_SIZE];
    size_t len;
    memset(out, 0, sizeof *out);
    if (file_read_all(path, STATUS_MAX, &text, &len, err) == 0) {
        if (process_status_decode(text, len, out, err) != 0) {
            memset(out, 0, sizeof *out);
        }
        mem_free(text);
    }
    mem_free(path);
}

/* ---- The epoch and the lock around every call */

static int epoch_read(struct driver_process *p, uint64_t *epoch, char *errmsg)
{
    char *text;
    size_t len;
    *epoch = 0;
    int rv = file_read_all(p->epoch_path, 64, &text, &len, errmsg);
    if (rv == GERR_NOTFOUND) {
        return 0;
    }
    if (rv == 0) {
        rv = process_epoch_decode(text, len, epoch, errmsg);
        mem_free(text);
    }
    if (rv != 0) {
        gerr_wrap(errmsg, "%s", p->epoch_path);
    }
    return rv;
}

/* Take the state directory's lock and apply the epoch rule; on 0 the caller holds *@lock_fd. */
static int begin(struct driver_process *p, uint64_t epoch, int *lock_fd, char *errmsg)
{
    uint64_t newest;
    int rv = driver__lock_file(p->lock_path, lock_fd, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((rv = epoch_read(p, &newest, errmsg)) == 0) {
        uint64_t seen = newest;
        rv = driver__epoch_check(epoch, &newest, p->state_dir, errmsg);
        if (rv == 0 && newest != seen) {
            char text[32];
            int n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)newest);
            rv = driver__write_atomic(p->epoch_path, text, (size_t)n, 0600, errmsg);
        }
    }
    if (rv != 0) {
        close(*lock_fd);
        *lock_fd = -1;
    }
    return rv;
}

/* ---- Describing a sandbox */

struct located {
    long init_pid;
    uint64_t init_start;
    uint64_t pidns;
    bool alive;
    struct process_status status;
};

static void locate(struct driver_process *p, const struct process_state *st, struct located *loc)
{
    memset(loc, 0, sizeof *loc);
    status_read(p, st->id, &loc->status);
    loc->init_pid = st->init_pid != 0 ? st->init_pid : loc->status.child_pid;
    loc->init_start = st->init_pid != 0 ? st->init_start : 0;
    loc->pidns = st->pidns != 0 ? st->pidns : loc->status.pidns;
    loc->alive = proc_is(loc->init_pid, loc->init_start, loc->pidns);
}

static void describe(struct driver_process *p, const struct process_state *st, struct driver_sandbox *out)
{
    struct located loc;
    char handle[96], msg[256] = "";
    enum driver_phase phase;
    locate(p, st, &loc);
    snprintf(handle, sizeof handle, "bwrap:%ld@%llu", loc.init_pid, (unsigned long long)loc.init_start);
    /* The command has just ended but bwrap, still running, has not written its exit status yet:
     * give it a moment (at most 1 s) rather than report a tree gone without a status. */
    for (int i = 0; i < 100 && !loc.alive && loc.init_pid != 0 && !loc.status.exited &&
                    proc_is(st->bwrap_pid, st->bwrap_start, 0);
         i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        locate(p, st, &loc);
    }
    if (loc.alive) {
        phase = DRIVER_PHASE_READY;
    } else if (loc.init_pid == 0) {
        bool young = driver__now_ms() < st->created_at_ms + p->start_timeout_ms;
        phase = young ? DRIVER_PHASE_PROVISIONING : DRIVER_PHASE_ERROR;
        snprintf(msg, sizeof msg, "%s", young ? "starting" : "creation was interrupted before bwrap started");
        snprintf(handle, sizeof handle, "bwrap:pending");
    } else if (loc.status.exited) {
        phase = loc.status.exit_code == 0 ? DRIVER_PHASE_STOPPED : DRIVER_PHASE_ERROR;
        snprintf(msg, sizeof msg, "the command exited with status %d", loc.status.exit_code);
    } else {
        /* bwrap records no exit code when the command could not be executed, or when it was
         * killed from outside; its log says which. */
        char *lpath = log_path(p, st->id), tail[120];
        plog_tail_text(lpath, 0, tail, sizeof tail);
        phase = DRIVER_PHASE_ERROR;
        snprintf(msg, sizeof msg, "the process tree is gone without an exit status: %.120s",
                 tail[0] != '\0' ? tail : "(no output)");
        mem_free(lpath);
    }
    driver__sandbox_fill(out, st->id, st->ns, st->name, phase, handle, msg, st->epoch, st->created_at_ms);
}

/* ---- Killing a tree */

/* Wait until the init is gone and no live process is left in its namespace. */
static bool tree_gone(const struct process_state *st, const struct located *loc)
{
    if (st->bwrap_pid > 0) {
        waitpid((pid_t)st->bwrap_pid, NULL, WNOHANG); /* in case we are its reaper */
    }
    /* Gone means no member of the namespace is left, not even the init as a zombie: until bwrap
     * has reaped it, it still holds the namespace. If bwrap itself is gone (killed from outside),
     * nothing we started will reap a zombie, so only live members count then. */
    bool bwrap_lives = st->bwrap_pid > 0 && proc_is(st->bwrap_pid, st->bwrap_start, 0);
    return !proc_is(loc->init_pid, loc->init_start, loc->pidns) &&
           (loc->pidns == 0 ||
            process_ns_members(loc->pidns, bwrap_lives, loc->init_pid, loc->init_start) == 0);
}

static int kill_tree(struct driver_process *p, const struct process_state *st, char *errmsg)
{
    struct located loc;
    uint64_t deadline = mono_ms() + p->stop_timeout_ms;
    locate(p, st, &loc);
    if (loc.alive) {
        /* The init of a PID namespace: when it dies the kernel kills every other member. bwrap,
         * its parent, reaps it and exits by itself. */
        kill((pid_t)loc.init_pid, SIGKILL);
    }
    while (!tree_gone(st, &loc)) {
        if (mono_ms() >= deadline) {
            gerr_set(errmsg, "sandbox %s: processes still alive %u ms after SIGKILL", st->id,
                     p->stop_timeout_ms);
            return GERR_TIMEOUT;
        }
        sleep_poll();
    }
    /* bwrap outlives its child only if it never got to start one; it holds nothing then. */
    if (proc_is(st->bwrap_pid, st->bwrap_start, 0)) {
        kill((pid_t)st->bwrap_pid, SIGKILL);
    }
    return 0;
}

/* Remove everything of sandbox @id: workspace, status, log and (last) the state file. */
static int remove_files(struct driver_process *p, const char *ns, const char *id, char *errmsg)
{
    char *ws = workspace_path(p, ns, id);
    char *paths[3] = {status_path(p, id), log_path(p, id), state_path(p, id)};
    int rv = pcreds_remove(p->cred_root, id, errmsg);
    plog_remove(paths[1]); /* both files; the unlink below then finds the current one absent */
    if (rv == 0 && p->egress_port != 0) {
        rv = process_net_teardown(p->state_dir, id, p->egress_port, errmsg);
    }
    if (rv == 0) {
        rv = driver__rmtree(ws, errmsg);
    }
    for (size_t i = 0; i < 3; i++) {
        if (rv == 0 && unlink(paths[i]) != 0 && errno != ENOENT) {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "unlink %s: %s", paths[i], strerror(errno));
        }
        mem_free(paths[i]);
    }
    mem_free(ws);
    return rv;
}

/* ---- Starting bwrap */

struct strv {
    char **v;
    size_t n;
};

static void strv_push(struct strv *s, const char *x)
{
    s->v = mem_realloc(s->v, (s->n + 2) * sizeof *s->v);
    s->v[s->n++] = mem_strdup(x);
    s->v[s->n] = NULL;
}

static void strv_close(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++) {
        mem_free(s->v[i]);
    }
    mem_free(s->v);
    memset(s, 0, sizeof *s);
}

static void push_env(struct strv *o, const char *name, const char *value)
{
    strv_push(o, "--setenv");
    strv_push(o, name);
    strv_push(o, value);
}

static bool is_egress(const struct driver_sandbox_spec *s)
{
    const char *net = driver_kv_get(s->driver_config, s->n_driver_config, "network");
    return net != NULL && strcmp(net, "egress") == 0;
}

/* network = egress: the relay's door as the proxy of the usual variables, so clients that honour
 * them send CONNECT (or absolute-form HTTP) and the relay resolves the name itself. */
static void push_egress_env(struct driver_process *p, const struct driver_sandbox_spec *s, struct strv *o)
{
    struct process_net_door door;
    char err[GERR_MSG_SIZE], proxy[64];
    if (process_net_door_read(p->state_dir, s->id, &door, err) != 0) {
        LOG_WARN("process driver: sandbox %s starts without proxy variables: %s", s->id, err);
        return;
    }
    snprintf(proxy, sizeof proxy, "http://%s:%u", door.addr, p->egress_port);
    const char *const names[] = {"GANTRY_EGRESS_PROXY", "http_proxy", "https_proxy", "HTTP_PROXY",
                                 "HTTPS_PROXY"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        push_env(o, names[i], proxy);
    }
    push_env(o, "no_proxy", "localhost,127.0.0.1,::1");
    push_env(o, "NO_PROXY", "localhost,127.0.0.1,::1");
}

/* bwrap's options (not the command): they travel on a memfd, not on the command line. */
static void bwrap_options(struct driver_process *p, const struct driver_sandbox_spec *s, const char *ws,
                          struct strv *o)
{
    const char *net = driver_kv_get(s->driver_config, s->n_driver_config, "network");
    const char *const fixed[] = {"--unshare-all",
                                 "--new-session",
                                 "--ro-bind",
                                 "/",
                                 "/",
                                 "--dev",
                                 "/dev",
                                 "--proc",
                                 "/proc",
                                 "--tmpfs",
                                 "/tmp",
                                 "--tmpfs",
                                 "/run",
                                 "--tmpfs",
                                 "/home",
                                 "--tmpfs",
                                 p->state_dir,
                                 "--bind",
                                 ws,
                                 WORKSPACE,
                                 "--chdir",
                                 WORKSPACE,
                                 "--json-status-fd",
                                 "3",
                                 "--clearenv"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        strv_push(o, fixed[i]);
    }
    /* The credentials root is hidden from every sandbox like the state directory (every sandbox
     * runs as the same uid, so only hiding keeps one from reading another's files); a sandbox
     * with credentials sees its own directory (resolved in the host's tree) read-only at
     * DRIVER_CREDENTIALS_DIR. */
    strv_push(o, "--tmpfs");
    strv_push(o, p->cred_root);
    if (s->n_credentials > 0) {
        char *cdir = pcreds_dir(p->cred_root, s->id);
        strv_push(o, "--ro-bind");
        strv_push(o, cdir);
        strv_push(o, DRIVER_CREDENTIALS_DIR);
        mem_free(cdir);
    }
    if (net != NULL && (strcmp(net, "host") == 0 || strcmp(net, "egress") == 0)) {
        /* egress: the network namespace bwrap starts in is the sandbox's own (joined in
         * exec_bwrap), whose only way out is the relay (drivers/process_net.h). */
        strv_push(o, "--share-net");
    }
    if (net == NULL || strcmp(net, "host") != 0) {
        strv_push(o, "--hostname");
        strv_push(o, s->name);
    }
    push_env(o, "PATH", SANDBOX_PATH);
    push_env(o, "HOME", WORKSPACE);
    push_env(o, "GANTRY_SANDBOX_ID", s->id);
    push_env(o, "GANTRY_SANDBOX_NAME", s->name);
    push_env(o, "GANTRY_NAMESPACE", s->namespace);
    if (is_egress(s)) {
        push_egress_env(p, s, o); /* before the spec's env, which may override it */
    }
    for (size_t i = 0; i < s->n_env; i++) {
        push_env(o, s->env[i].key, s->env[i].value);
    }
    for (size_t i = 0; i < s->n_credentials; i++) { /* after the spec's: a credential's name wins */
        if (s->credentials[i].env != NULL) {
            push_env(o, s->credentials[i].env, s->credentials[i].value);
        }
    }
}

static int options_memfd(const struct strv *o, char *errmsg)
{
    int fd = memfd_create("gantry-bwrap-args", MFD_CLOEXEC);
    if (fd < 0) {
        gerr_set(errmsg, "memfd_create: %s", strerror(errno));
        return -1;
    }
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < o->n; i++) {
        buf_append(&b, o->v[i], strlen(o->v[i]) + 1);
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            gerr_set(errmsg, "write bwrap options: %s", strerror(errno));
            buf_close(&b);
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    buf_close(&b);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

struct spawn_fds {
    int status; /* becomes 3 */
    int args;   /* becomes 4 */
    int log;    /* the write end of the log pipe: becomes 1 and 2 */
    int pump;   /* the read end of the log pipe, CLOEXEC: the pump's input */
    int netns;  /* network = egress: the sandbox's network namespace, joined before bwrap; else -1 */
    int report; /* the write end of the report pipe, CLOEXEC */
};

/* A message from the intermediate child or the grandchild to the parent. */
struct spawn_msg {
    int kind; /* 1: the grandchild's pid; 2: errno of a failed step */
    int value;
    int step;
};

static void report(int fd, int kind, int value, int step)
{
    struct spawn_msg m = {kind, value, step};
    ssize_t w = write(fd, &m, sizeof m);
    (void)w;
}

/* Close every descriptor from @first up except @keep (which is close-on-exec): nothing of the
 * replica (sockets, the store) may leak into a sandbox. */
static void close_from(int first, int keep)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, (unsigned)keep - 1, 0u) == 0 &&
        syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0) {
        return;
    }
#endif
    for (int fd = first; fd < 65536; fd++) {
        if (fd != keep) {
            close(fd);
        }
    }
}

/* In the grandchild, between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn))
exec_bwrap(struct driver_process *p, const struct spawn_fds *f, char *const argv[], char *const envp[])
{
    sigset_t none;
    int step = 0;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) {
        signal(sig, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(f->log, 1) < 0 || dup2(f->log, 2) < 0 ||
        dup2(f->status, 3) < 0 || dup2(f->args, 4) < 0) {
        goto fail;
    }
    step = 1;
    if (f->netns >= 0 && setns(f->netns, CLONE_NEWNET) != 0) {
        goto fail;
    }
    step = 2;
    if (p->drop && (setgroups(0, NULL) != 0 || setgid(p->gid) != 0 || setuid(p->uid) != 0)) {
        goto fail;
    }
    step = 3;
    close_from(5, f->report);
    execve(p->bwrap, argv, envp);
fail:
    report(f->report, 2, errno, step);
    _exit(127);
}

/* In the pump (a child of the intermediate process, detached like bwrap): move the sandbox's
 * output from the log pipe into the rotating log (drivers/process_log.h). Async-signal-safe calls
 * only; nothing of the replica is kept open. */
static void __attribute__((noreturn))
run_pump(struct driver_process *p, const struct spawn_fds *f, const char *lpath)
{
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) {
        signal(sig, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    close_from(3, f->pump);
    plog_pump(f->pump, lpath, p->log_file_bytes);
    _exit(0);
}

static const char *const spawn_steps[] = {"set up descriptors", "join the egress network namespace",
                                          "switch to the sandbox uid", "execute bwrap"};

/* Start bwrap detached from us; *@pid is its pid. */
static int spawn_detached(struct driver_process *p, const struct spawn_fds *f, int report_rd,
                          char *const argv[], const char *lpath, pid_t *pid, char *errmsg)
{
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    pid_t mid = fork();
    if (mid < 0) {
        gerr_set(errmsg, "fork: %s", strerror(errno));
        return GERR_IO;
    }
    if (mid == 0) {
        setsid();
        pid_t pump = fork();
        if (pump == 0) {
            run_pump(p, f, lpath);
        }
        if (pump < 0) {
            report(f->report, 2, errno, 4);
            _exit(0);
        }
        close(f->pump);
        pid_t gc = fork();
        if (gc == 0) {
            exec_bwrap(p, f, argv, envp);
        }
        report(f->report, gc > 0 ? 1 : 2, gc > 0 ? gc : errno, 4);
        _exit(0);
    }
    close(f->report);
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
    }
    struct spawn_msg m;
    int rv = GERR_IO;
    *pid = 0;
    gerr_set(errmsg, "bwrap: no report from the spawning process");
    /* EOF comes once the grandchild has exec'd (the pipe is close-on-exec) or died. */
    while (read(report_rd, &m, sizeof m) == (ssize_t)sizeof m) {
        if (m.kind == 1) {
            *pid = m.value;
            rv = 0;
        } else {
            rv = gerr_from_errno(m.value);
            gerr_set(errmsg, "%s: %s: %s", p->bwrap, m.step < 4 ? spawn_steps[m.step] : "fork",
                     strerror(m.value));
            break;
        }
    }
    return rv;
}

static int move_high(int fd)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return high;
}

/* Start bwrap for @s; on 0 *@bwrap_pid is running (or has already failed: the caller watches). */
static int start_bwrap(struct driver_process *p, const struct driver_sandbox_spec *s, const char *ws,
                       pid_t *bwrap_pid, char *errmsg)
{
    struct strv opts = {0}, argv = {0};
    int pipe_fds[2], rv = GERR_IO;
    char *spath = status_path(p, s->id), *lpath = log_path(p, s->id);
    struct spawn_fds f = {-1, -1, -1, -1, -1, -1};
    int log_fds[2] = {-1, -1};

    bwrap_options(p, s, ws, &opts);
    f.args = options_memfd(&opts, errmsg);
    f.status = open(spath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (pipe2(log_fds, O_CLOEXEC) == 0) {
        f.log = log_fds[0 + 1];
        f.pump = log_fds[0];
    }
    if (f.args < 0 || f.status < 0 || f.log < 0 || pipe2(pipe_fds, O_CLOEXEC) != 0) {
        if (f.args >= 0) {
            gerr_set(errmsg, "open the status or log file of %s: %s", s->id, strerror(errno));
        }
        goto out;
    }
    f.args = move_high(f.args);
    f.status = move_high(f.status);
    f.log = move_high(f.log);
    f.pump = move_high(f.pump);
    f.report = move_high(pipe_fds[1]);
    if (is_egress(s) && (f.netns = process_net_open(s->id)) < 0) {
        gerr_set(errmsg, "open the egress network namespace of %s: %s", s->id, strerror(errno));
        goto out;
    }
    strv_push(&argv, p->bwrap);
    strv_push(&argv, "--args");
    strv_push(&argv, "4");
    strv_push(&argv, "--");
    for (size_t i = 0; i < s->n_command; i++) {
        strv_push(&argv, s->command[i]);
    }
    rv = spawn_detached(p, &f, pipe_fds[0], argv.v, lpath, bwrap_pid, errmsg);
    close(pipe_fds[0]);
    f.report = -1; /* closed by spawn_detached */
out:
    for (int *fd = &f.status; fd <= &f.report; fd++) {
        if (*fd >= 0) {
            close(*fd);
        }
    }
    strv_close(&opts);
    strv_close(&argv);
    mem_free(spath);
    mem_free(lpath);
    return rv;
}

/* Wait until bwrap's status stream names the sandbox's init; fill the pids of @st. */
static int await_init(struct driver_process *p, struct process_state *st, char *errmsg)
{
    uint64_t deadline = mono_ms() + p->start_timeout_ms;
    struct process_stat ps;
    for (;;) {
        struct process_status status;
        status_read(p, st->id, &status);
        if (status.child_pid != 0 && proc_stat_of(status.child_pid, &ps) == 0) {
            st->init_pid = status.child_pid;
            st->init_start = ps.starttime;
            st->pidns = status.pidns;
            return 0;
        }
        bool bwrap_alive = proc_is(st->bwrap_pid, st->bwrap_start, 0);
        if (!bwrap_alive || status.exited || mono_ms() >= deadline) {
            char *lpath = log_path(p, st->id), tail[300];
            plog_tail_text(lpath, bwrap_alive ? 0 : 500, tail, sizeof tail);
            gerr_set(errmsg, "bubblewrap did not start sandbox %s%s: %s", st->id,
                     bwrap_alive ? " in time" : "", tail[0] != '\0' ? tail : "(no output)");
            mem_free(lpath);
            return bwrap_alive ? GERR_TIMEOUT : GERR_UNAVAILABLE;
        }
        sleep_poll();
    }
}

/* ---- Ops */

static void process_capabilities(struct driver *d, struct driver_caps *caps)
{
    struct driver_process *p = process_of(d);
    caps->name = "process";
    caps->available = p->available;
    caps->isolation = p->available;
    caps->images = false;
    caps->gpus = false;
    caps->namespaces = true;
    caps->shared_backend = true; /* every replica on this host, through the state directory */
    caps->credentials = true;
    caps->config_keys = process_keys;
    snprintf(caps->detail, sizeof caps->detail, "%s", p->detail);
}

static int process_validate(struct driver *d, const struct driver_sandbox_spec *spec,
                            const char *const *allowed, char *errmsg)
{
    struct driver_process *p = process_of(d);
    const char *net = driver_kv_get(spec->driver_config, spec->n_driver_config, "network");
    int rv = driver__check_config_keys(spec, "process", process_keys, allowed, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (net != NULL && strcmp(net, "none") != 0 && strcmp(net, "host") != 0 && strcmp(net, "egress") != 0) {
        gerr_set(errmsg, "driver_config network must be \"none\", \"host\" or \"egress\"");
        return GERR_INVAL;
    }
    if (net != NULL && strcmp(net, "egress") == 0 && p->egress_port == 0) {
        gerr_set(errmsg,
                 "driver_config network \"egress\" needs the replicas' egress relay (egress_relay_port), "
                 "which is not configured");
        return GERR_INVAL;
    }
    if (spec->gpu_count > 0) {
        gerr_set(errmsg, "the process driver has no GPUs (gpu_count %u)", spec->gpu_count);
        return GERR_INVAL;
    }
    if (!p->available) {
        gerr_set(errmsg, "the process driver cannot run sandboxes here: %s", p->detail);
        return GERR_UNAVAILABLE;
    }
    return 0;
}

/* The existing record of @s->id: 0 with @out filled if it is the same sandbox. */
static int create_existing(struct driver_process *p, const struct driver_sandbox_spec *s,
                           struct driver_sandbox *out, char *errmsg)
{
    struct process_state st;
    int rv = state_read(p, s->id, &st, errmsg);
    if (rv == GERR_PROTO) {
        gerr_wrap(errmsg, "sandbox %s has a corrupt record (delete it first)", s->id);
        return rv;
    }
    if (rv != 0) {
        return rv;
    }
    if (strcmp(st.ns, s->namespace) != 0 || strcmp(st.name, s->name) != 0) {
        gerr_set(errmsg, "sandbox %s exists as %s/%s", s->id, st.ns, st.name);
        rv = GERR_EXISTS;
    } else {
        describe(p, &st, out);
    }
    process_state_close(&st);
    return rv;
}

static int make_workspace(struct driver_process *p, const char *ws, char *errmsg)
{
    int rv = driver__mkdir(ws, 0700, errmsg);
    if (rv == 0 && chown(ws, p->uid, p->gid) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "chown %s: %s", ws, strerror(errno));
    }
    return rv;
}

static int create_new(struct driver_process *p, uint64_t epoch, const struct driver_sandbox_spec *s,
                      struct driver_sandbox *out, char *errmsg)
{
    struct process_state st = {.id = (char *)s->id,
                               .ns = (char *)s->namespace,
                               .name = (char *)s->name,
                               .epoch = epoch,
                               .created_at_ms = driver__now_ms(),
                               .lifetime_s = s->lifetime_s};
    struct process_stat ps;
    pid_t pid = 0;
    char *ws = workspace_path(p, s->namespace, s->id);
    char *nsd = pathf("%s/%s", p->ns_dir, s->namespace);
    int rv;

    if (access(nsd, F_OK) != 0) {
        gerr_set(errmsg, "namespace %s was not ensured", s->namespace);
        rv = GERR_NOTFOUND;
        goto out;
    }
    if ((rv = make_workspace(p, ws, errmsg)) != 0 || (rv = state_write(p, &st, s, errmsg)) != 0) {
        goto err_after_workspace;
    }
    if (s->n_credentials > 0 && ((rv = pcreds_prepare(p->cred_root, errmsg)) != 0 ||
                                 (rv = pcreds_write(p->cred_root, s->id, p->drop, p->uid, p->gid,
                                                    s->credentials, s->n_credentials, errmsg)) != 0)) {
        gerr_wrap(errmsg, "credentials of sandbox %s", s->id);
        goto err_after_workspace;
    }
    if (is_egress(s)) {
        struct process_net_door door;
        memset(&door, 0, sizeof door);
        snprintf(door.ns, sizeof door.ns, "%s", s->namespace);
        snprintf(door.name, sizeof door.name, "%s", s->name);
        snprintf(door.owner, sizeof door.owner, "%s", s->owner != NULL ? s->owner : "");
        if ((rv = process_net_setup(p->state_dir, s->id, &door, p->egress_port, errmsg)) != 0) {
            goto err_after_workspace;
        }
    }
    if ((rv = start_bwrap(p, s, ws, &pid, errmsg)) != 0) {
        goto err_after_workspace;
    }
    st.bwrap_pid = pid;
    st.bwrap_start = proc_stat_of(pid, &ps) == 0 ? ps.starttime : 0;
    if ((rv = await_init(p, &st, errmsg)) != 0 || (rv = state_write(p, &st, s, errmsg)) != 0) {
        char ignored[GERR_MSG_SIZE];
        kill_tree(p, &st, ignored);
        goto err_after_workspace;
    }
    describe(p, &st, out);
    LOG_INFO("process driver: sandbox %s/%s (%s) started, init pid %ld, epoch %llu", s->namespace, s->name,
             s->id, st.init_pid, (unsigned long long)epoch);
    goto out;

err_after_workspace : {
    char ignored[GERR_MSG_SIZE];
    remove_files(p, s->namespace, s->id, ignored);
}
out:
    mem_free(nsd);
    mem_free(ws);
    return rv;
}

static int process_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *spec,
                          struct driver_sandbox *out, char *errmsg)
{
    struct driver_process *p = process_of(d);
    int lock_fd, rv = process_validate(d, spec, NULL, errmsg);
    if (rv != 0 || (rv = begin(p, epoch, &lock_fd, errmsg)) != 0) {
        return rv;
    }
    rv = create_existing(p, spec, out, errmsg);
    if (rv == GERR_NOTFOUND) {
        rv = create_new(p, epoch, spec, out, errmsg);
    }
    close(lock_fd);
    return rv;
}

/* The record of sandbox @id of namespace @ns into @st (close it whatever the result):
 * GERR_NOTFOUND, saying so, when there is none in @ns. Under the state lock. */
static int state_read_in(struct driver_process *p, const char *ns, const char *id, struct process_state *st,
                         char *errmsg)
{
    int rv = state_read(p, id, st, errmsg);
    if (rv == 0 && strcmp(st->ns, ns) != 0) {
        rv = GERR_NOTFOUND;
    }
    if (rv == GERR_NOTFOUND) {
        gerr_set(errmsg, "sandbox %s not found in namespace %s", id, ns);
    }
    return rv;
}

static int process_get(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                       struct driver_sandbox *out, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct process_state st;
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((rv = state_read_in(p, ns, id, &st, errmsg)) == 0) {
        describe(p, &st, out);
    }
    process_state_close(&st);
    close(lock_fd);
    return rv;
}

/* The id in a state file's name "<uuid>.json", or NULL. */
static bool state_file_id(const char *fname, char id[DRIVER_ID_LEN + 1])
{
    size_t n = strlen(fname);
    if (n != DRIVER_ID_LEN + 5 || strcmp(fname + DRIVER_ID_LEN, ".json") != 0) {
        return false;
    }
    memcpy(id, fname, DRIVER_ID_LEN);
    id[DRIVER_ID_LEN] = '\0';
    return driver_is_uuid(id);
}

static void list_one(struct driver_process *p, const char *id, const char *ns,
                     struct driver_sandbox_list *out)
{
    struct process_state st;
    char err[GERR_MSG_SIZE];
    int rv = state_read(p, id, &st, err);
    if (rv == 0 && (ns == NULL || strcmp(st.ns, ns) == 0)) {
        describe(p, &st, driver__list_push(out));
    } else if (rv != 0 && rv != GERR_NOTFOUND && ns == NULL) {
        /* Listed so the reconciler sees it and deletes it; never hidden. */
        driver__sandbox_fill(driver__list_push(out), id, "", "", DRIVER_PHASE_UNKNOWN, "bwrap:unknown", err,
                             0, 0);
    }
    process_state_close(&st);
}

static int list_locked(struct driver_process *p, const char *ns, struct driver_sandbox_list *out,
                       char *errmsg)
{
    DIR *dir = opendir(p->sb_dir);
    if (dir == NULL) {
        gerr_set(errmsg, "opendir %s: %s", p->sb_dir, strerror(errno));
        return gerr_from_errno(errno);
    }
    struct dirent *e;
    char id[DRIVER_ID_LEN + 1];
    while ((e = readdir(dir)) != NULL) {
        if (state_file_id(e->d_name, id)) {
            list_one(p, id, ns, out);
        }
    }
    closedir(dir);
    return 0;
}

static int process_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                        char *errmsg)
{
    struct driver_process *p = process_of(d);
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv == 0) {
        rv = list_locked(p, ns, out, errmsg);
        close(lock_fd);
    }
    return rv;
}

static int delete_locked(struct driver_process *p, const char *ns, const char *id, char *errmsg)
{
    struct process_state st;
    int rv = state_read(p, id, &st, errmsg);
    if (rv == GERR_PROTO) {
        /* A corrupt record: the status stream still names the init and its namespace. */
        LOG_WARN("process driver: deleting sandbox %s with a corrupt record: %s", id, errmsg);
        st.id = mem_strdup(id);
        st.ns = mem_strdup(ns);
        rv = 0;
    } else if (rv == GERR_NOTFOUND || (rv == 0 && strcmp(st.ns, ns) != 0)) {
        process_state_close(&st);
        return rv == 0 ? 0 : remove_files(p, ns, id, errmsg); /* leftovers of an interrupted delete */
    }
    if (rv == 0 && (rv = kill_tree(p, &st, errmsg)) == 0 && (rv = remove_files(p, ns, id, errmsg)) == 0) {
        LOG_INFO("process driver: sandbox %s/%s (%s) stopped and removed", ns,
                 st.name != NULL ? st.name : "?", id);
    }
    process_state_close(&st);
    return rv;
}

static int process_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    struct driver_process *p = process_of(d);
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv == 0) {
        rv = delete_locked(p, ns, id, errmsg);
        close(lock_fd);
    }
    return rv;
}

static int process_update_credentials(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                                      const struct driver_credential *creds, size_t n, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct process_state st;
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((rv = state_read_in(p, ns, id, &st, errmsg)) == 0) {
        /* Only where the sandbox was started with a credentials directory: a bind mount is made at
         * start, never added to a running sandbox. */
        char *cdir = pcreds_dir(p->cred_root, id);
        struct stat sb;
        if (lstat(cdir, &sb) != 0) {
            gerr_set(errmsg,
                     "sandbox %s was started without credentials: they reach it when it is made again", id);
            rv = GERR_INVAL;
        } else {
            rv = pcreds_write(p->cred_root, id, p->drop, p->uid, p->gid, creds, n, errmsg);
        }
        mem_free(cdir);
    }
    process_state_close(&st);
    close(lock_fd);
    return rv;
}

static int process_ensure_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct driver_process *p = process_of(d);
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv == 0) {
        char *nsd = pathf("%s/%s", p->ns_dir, ns);
        rv = driver__mkdir(nsd, 0711, errmsg);
        mem_free(nsd);
        close(lock_fd);
    }
    return rv;
}

static int process_delete_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct driver_sandbox_list l = {0};
    int lock_fd, rv = begin(p, epoch, &lock_fd, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((rv = list_locked(p, ns, &l, errmsg)) == 0 && l.n > 0) {
        gerr_set(errmsg, "namespace %s still holds %zu sandboxes", ns, l.n);
        rv = GERR_CONSTRAINT;
    }
    if (rv == 0) {
        char *nsd = pathf("%s/%s", p->ns_dir, ns);
        rv = driver__rmtree(nsd, errmsg);
        mem_free(nsd);
    }
    driver_sandbox_list_close(&l);
    close(lock_fd);
    return rv;
}

/* ---- Logs: a reader of the pump's files (drivers/process_log.h). */

struct process_log {
    struct driver_log base;
    struct plog_reader *r;
};

static int process_log_next(struct driver_log *l, uint8_t *buf, size_t cap, size_t *n, uint64_t *ts_ms,
                            char *errmsg)
{
    (void)cap; /* at least DRIVER_LOG_CHUNK == PLOG_CHUNK_MAX */
    return plog_next(((struct process_log *)l)->r, buf, n, ts_ms, errmsg);
}

static void process_log_close(struct driver_log *l)
{
    plog_close(((struct process_log *)l)->r);
    mem_free(l);
}

static const struct driver_log_ops process_log_ops = {.next = process_log_next, .close = process_log_close};

static int process_logs_open(struct driver *d, const char *ns, const char *id,
                             const struct driver_log_query *q, struct driver_log **out, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct process_state st = {0};
    int rv = state_read_in(p, ns, id, &st, errmsg); /* no lock: the state file is replaced atomically */
    process_state_close(&st);
    if (rv != 0) {
        return rv;
    }
    char *lpath = log_path(p, id);
    struct plog_query pq = {.tail_lines = q->tail_lines, .since_ms = q->since_ms};
    struct plog_reader *r = NULL;
    rv = plog_open(lpath, &pq, &r, errmsg);
    mem_free(lpath);
    if (rv == 0) {
        struct process_log *l = mem_zalloc(sizeof *l);
        l->base.ops = &process_log_ops;
        l->r = r;
        *out = &l->base;
    }
    return rv;
}

/* ---- Exec (drivers/process_exec.h) */

/* The sandbox's main command: the first child of bwrap's init (the init itself with
 * --as-pid-1, which the driver does not use). 0 if there is none. */
static long main_pid_of(long init_pid)
{
    char path[96], buf[256];
    size_t len = 0;
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", init_pid, init_pid);
    for (int i = 0; i < 1000 && read_small(path, buf, sizeof buf, &len) == 0 && len == 0; i++) {
        sleep_poll(); /* a sandbox just started: bwrap's init forks the command a moment later */
    }
    if (len == 0) {
        return 0;
    }
    buf[len < sizeof buf ? len : sizeof buf - 1] = '\0';
    long pid = strtol(buf, NULL, 10);
    /* Right after start the child may still be bwrap, before it set the sandbox's environment and
     * exec'd the command: its environ would be bwrap's. Wait (briefly) until it is not. */
    char a[PATH_MAX], b[PATH_MAX], pa[64], pb[64];
    snprintf(pa, sizeof pa, "/proc/%ld/exe", init_pid);
    snprintf(pb, sizeof pb, "/proc/%ld/exe", pid);
    for (int i = 0; i < 1000; i++) {
        ssize_t la = readlink(pa, a, sizeof a - 1), lb = readlink(pb, b, sizeof b - 1);
        if (la < 0 || lb < 0 || la != lb || memcmp(a, b, (size_t)la) != 0) {
            break;
        }
        sleep_poll();
    }
    return pid;
}

static int process_exec_start(struct driver *d, const char *ns, const char *id,
                              const struct driver_exec_spec *spec, struct driver_exec **out, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct process_state st = {0};
    int rv = state_read_in(p, ns, id, &st, errmsg); /* no lock: the state file is replaced atomically */
    if (rv == 0) {
        struct located loc;
        locate(p, &st, &loc);
        long main_pid = loc.alive ? main_pid_of(loc.init_pid) : 0;
        if (main_pid <= 0) {
            gerr_set(errmsg, "sandbox %s is not running", id);
            rv = GERR_UNAVAILABLE;
        } else {
            struct process_stat ps = {0};
            struct pexec_target t = {.main_pid = main_pid,
                                     .main_start = proc_stat_of(main_pid, &ps) == 0 ? ps.starttime : 0,
                                     .pidns = loc.pidns,
                                     .drop = p->drop,
                                     .user_first = geteuid() != 0,
                                     .uid = p->uid,
                                     .gid = p->gid,
                                     .workdir = WORKSPACE,
                                     .path = SANDBOX_PATH};
            rv = pexec_start(&t, spec, out, errmsg);
        }
    }
    process_state_close(&st);
    return rv;
}

static int process_port_connect(struct driver *d, const char *ns, const char *id, uint16_t port,
                                struct driver_exec **out, char *errmsg)
{
    struct driver_process *p = process_of(d);
    struct process_state st = {0};
    int rv = state_read_in(p, ns, id, &st, errmsg);
    if (rv == 0) {
        struct located loc;
        locate(p, &st, &loc);
        long main_pid = loc.alive ? main_pid_of(loc.init_pid) : 0;
        if (main_pid <= 0) {
            gerr_set(errmsg, "sandbox %s is not running", id);
            rv = GERR_UNAVAILABLE;
        } else {
            struct process_stat ps = {0};
            struct pexec_target t = {.main_pid = main_pid,
                                     .main_start = proc_stat_of(main_pid, &ps) == 0 ? ps.starttime : 0,
                                     .pidns = loc.pidns,
                                     .user_first = geteuid() != 0};
            rv = pexec_port_connect(&t, port, out, errmsg);
        }
    }
    process_state_close(&st);
    return rv;
}

static void process_free(struct driver *d)
{
    struct driver_process *p = process_of(d);
    mem_free(p->state_dir);
    mem_free(p->cred_root);
    mem_free(p->bwrap);
    mem_free(p->lock_path);
    mem_free(p->epoch_path);
    mem_free(p->sb_dir);
    mem_free(p->ns_dir);
    driver__close(&p->base);
    mem_free(p);
}

static const struct driver_ops process_ops = {
    .capabilities = process_capabilities,
    .validate = process_validate,
    .create = process_create,
    .get = process_get,
    .list = process_list,
    .delete = process_delete,
    .ensure_namespace = process_ensure_ns,
    .update_credentials = process_update_credentials,
    .delete_namespace = process_delete_ns,
    .logs_open = process_logs_open,
    .exec_start = process_exec_start,
    .port_connect = process_port_connect,
    .free = process_free,
};

/* ---- Construction and the availability probe */

/* Run bwrap with every namespace as the sandbox uid, binding the namespaces directory (which
 * proves the uid can reach the state directory), and wait for it. */
static void probe(struct driver_process *p)
{
    char out[GERR_MSG_SIZE] = "";
    int fds[2];
    if (access(p->bwrap, X_OK) != 0) {
        snprintf(p->detail, sizeof p->detail, "%.200s: %s (install bubblewrap)", p->bwrap, strerror(errno));
        return;
    }
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(p->detail, sizeof p->detail, "probe: pipe: %s", strerror(errno));
        return;
    }
    char *const argv[] = {p->bwrap,  "--unshare-all", "--ro-bind", "/",       "/",         "--dev",
                          "/dev",    "--proc",        "/proc",     "--tmpfs", "/home",     "--bind",
                          p->ns_dir, WORKSPACE,       "--",        p->bwrap,  "--version", NULL};
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(fds[1], 2) < 0 ||
            (p->drop && (setgroups(0, NULL) != 0 || setgid(p->gid) != 0 || setuid(p->uid) != 0))) {
            _exit(126);
        }
        execve(p->bwrap, argv, envp);
        _exit(127);
    }
    close(fds[1]);
    int status = 0;
    uint64_t deadline = mono_ms() + p->start_timeout_ms;
    pid_t w = 0;
    while (pid > 0 && (w = waitpid(pid, &status, WNOHANG)) == 0 && mono_ms() < deadline) {
        sleep_poll();
    }
    if (pid > 0 && w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    ssize_t n = read(fds[0], out, sizeof out - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    out[strcspn(out, "\n")] = '\0';
    p->available = pid > 0 && w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (p->available) {
        snprintf(p->detail, sizeof p->detail,
                 "bubblewrap %.200s: PID, mount, network, IPC, UTS and user namespaces; "
                 "sandboxes run as uid %ld",
                 p->bwrap, (long)p->uid);
    } else {
        snprintf(p->detail, sizeof p->detail, "bubblewrap cannot create namespaces here (%.200s): %.250s",
                 p->bwrap, out[0] != '\0' ? out : "probe failed without a message");
    }
}

static int resolve_ids(struct driver_process *p, const struct driver_process_config *cfg, char *errmsg)
{
    bool root = geteuid() == 0;
    if (!root && ((cfg->sandbox_uid >= 0 && (uid_t)cfg->sandbox_uid != geteuid()) ||
                  (cfg->sandbox_gid >= 0 && (gid_t)cfg->sandbox_gid != getegid()))) {
        gerr_set(errmsg, "process driver: sandbox_uid/gid other than our own need root");
        return GERR_INVAL;
    }
    p->uid = cfg->sandbox_uid >= 0 ? (uid_t)cfg->sandbox_uid : root ? NOBODY : geteuid();
    p->gid = cfg->sandbox_gid >= 0 ? (gid_t)cfg->sandbox_gid : root ? NOBODY : getegid();
    p->drop = root && (p->uid != 0 || p->gid != 0);
    return 0;
}

static int make_dirs(struct driver_process *p, char *errmsg)
{
    int rv;
    if ((rv = driver__mkdir(p->state_dir, 0711, errmsg)) != 0 ||
        (rv = driver__mkdir(p->sb_dir, 0700, errmsg)) != 0 ||
        (rv = driver__mkdir(p->ns_dir, 0711, errmsg)) != 0) {
        gerr_wrap(errmsg, "process driver state directory");
    }
    return rv;
}

int driver_process_new(const struct driver_process_config *cfg, struct driver **out, char *errmsg)
{
    int rv;
    *out = NULL;
    if (cfg->state_dir == NULL || cfg->state_dir[0] != '/' || strlen(cfg->state_dir) > 1024) {
        gerr_set(errmsg, "process driver: state_dir must be an absolute path of at most 1024 bytes");
        return GERR_INVAL;
    }
    struct driver_process *p = mem_zalloc(sizeof *p);
    driver__init(&p->base, &process_ops);
    p->state_dir = mem_strdup(cfg->state_dir);
    p->bwrap = mem_strdup(cfg->bwrap_path != NULL ? cfg->bwrap_path : DEFAULT_BWRAP);
    p->lock_path = pathf("%s/lock", cfg->state_dir);
    p->epoch_path = pathf("%s/epoch", cfg->state_dir);
    p->sb_dir = pathf("%s/sandboxes", cfg->state_dir);
    p->ns_dir = pathf("%s/namespaces", cfg->state_dir);
    p->start_timeout_ms = cfg->start_timeout_ms != 0 ? cfg->start_timeout_ms : DEFAULT_TIMEOUT_MS;
    p->log_file_bytes = cfg->log_file_bytes != 0 ? cfg->log_file_bytes : PLOG_FILE_DEFAULT;
    p->stop_timeout_ms = cfg->stop_timeout_ms != 0 ? cfg->stop_timeout_ms : DEFAULT_TIMEOUT_MS;
    p->egress_port = cfg->egress_relay_port <= 65535 ? cfg->egress_relay_port : 0;
    if (cfg->credentials_dir != NULL && cfg->credentials_dir[0] != '\0') {
        p->cred_root = mem_strdup(cfg->credentials_dir);
    } else {
        char root[256];
        pcreds_default_root(cfg->state_dir, root, sizeof root);
        p->cred_root = mem_strdup(root);
    }
    if ((rv = resolve_ids(p, cfg, errmsg)) != 0 || (rv = make_dirs(p, errmsg)) != 0) {
        process_free(&p->base);
        return rv;
    }
    probe(p);
    if (!p->available) {
        LOG_WARN("process driver: %s", p->detail);
    }
    *out = &p->base;
    return 0;
}
