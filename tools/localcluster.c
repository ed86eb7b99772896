/* A multi-process dqlite cluster on loopback. See cluster.h.
 *
 * Happy path: mkdtemp a root, bind-test n consecutive ports from a random base, spawn node 1 and
 * wait for READY, spawn the others with --join at once and wait for each READY, then poll CLUSTER
 * until every node is a voter.
 *
 * Failure modes: no free ports after several tries; a node exits or stays silent past the
 * deadline (its stderr tail goes into the message); the cluster never shows all voters. In every
 * case what was started is stopped and the root removed (unless GANTRY_IT_KEEP=1). */
#include "tools/localcluster.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/mem.h"
#include "lib/rand.h"

/* ------------------------------------------------------------------------------------------------
 * Cleanup registry: every running cluster, so that exit and fatal signals never leave processes
 * or directories behind. The signal handler uses only async-signal-safe calls. */

#define MAX_CLUSTERS 8
static struct cluster *volatile registry[MAX_CLUSTERS];
static bool handlers_installed;

static void unregister(struct cluster *c)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (registry[i] == c) {
            registry[i] = NULL;
        }
    }
    c->registered = false;
}

static void on_exit_cleanup(void)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (registry[i] != NULL) {
            cluster_stop(registry[i]);
        }
    }
}

static bool keep_dirs(void)
{
    const char *k = getenv("GANTRY_IT_KEEP");
    return k != NULL && k[0] == '1';
}

static void on_fatal_signal(int sig)
{
    static const char *const rm_argv_tail = "-rf";
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        struct cluster *c = registry[i];
        if (c == NULL) {
            continue;
        }
        for (unsigned j = 0; j < c->n; j++) {
            if (c->nodes[j].running && c->nodes[j].proc.pid > 0) {
                kill(c->nodes[j].proc.pid, SIGKILL);
                waitpid(c->nodes[j].proc.pid, NULL, 0);
            }
        }
        if (c->root[0] != '\0') {
            pid_t pid = fork();
            if (pid == 0) {
                char *argv[] = {(char *)"/bin/rm", (char *)rm_argv_tail, c->root, NULL};
                char *envp[] = {NULL};
                execve("/bin/rm", argv, envp);
                _exit(127);
            }
            if (pid > 0) {
                waitpid(pid, NULL, 0);
            }
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void register_cluster(struct cluster *c)
{
    if (!handlers_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        atexit(on_exit_cleanup);
        handlers_installed = true;
    }
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (registry[i] == NULL) {
            registry[i] = c;
            c->registered = true;
            return;
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Helpers */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D) {
        rmdir(path);
    } else {
        unlink(path);
    }
    return 0;
}

int cluster_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return 0;
    }
    return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : GERR_IO;
}

static bool port_free(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    /* Same option as libuv's listener, so a port with connections in TIME_WAIT counts as free
     * exactly when the node will manage to bind it. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/* n consecutive free ports below the kernel's ephemeral range (32768+), so outgoing connections
 * cannot grab them between the test and the node's bind. */
static int pick_ports(unsigned n, unsigned *base_out)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        unsigned base = (unsigned)rand_range(20000, 32000 - CLUSTER_MAX_NODES);
        unsigned k = 0;
        while (k < n && port_free(base + k)) {
            k++;
        }
        if (k == n) {
            *base_out = base;
            return 0;
        }
    }
    return GERR_UNAVAILABLE;
}

/* A harness killed with SIGKILL cannot clean up (its nodes die with it, PR_SET_PDEATHSIG, but its
 * directory stays): each root records its owner, and the next harness removes the roots whose
 * owner is gone. */
static void write_owner(struct cluster *c)
{
    char path[PROC_PATH_MAX];
    snprintf(path, sizeof path, "%s/owner.pid", c->root);
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
}

static void reap_stale_roots(const char *tmp)
{
    DIR *d = opendir(tmp);
    struct dirent *e;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char path[PROC_PATH_MAX], owner[PROC_PATH_MAX + 16];
        if (strncmp(e->d_name, "gantry-it-", 10) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        snprintf(owner, sizeof owner, "%s/owner.pid", path);
        FILE *f = fopen(owner, "r");
        int pid = 0;
        if (f == NULL) {
            continue; /* not ours to judge (or still being created) */
        }
        if (fscanf(f, "%d", &pid) != 1) {
            pid = 0;
        }
        fclose(f);
        if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
            cluster_rm_rf(path);
        }
    }
    closedir(d);
}

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static void sleep_ms(unsigned ms)
{
    clock_system()->sleep_ns(clock_system(), (uint64_t)ms * 1000000u);
}

static void node_failure_message(struct cluster_node *nd, char *errmsg)
{
    char tail[1200];
    gerr_wrap(errmsg, "node %" PRIu64 " (%s)", nd->id, nd->address);
    size_t len = strlen(errmsg);
    snprintf(errmsg + len, GERR_MSG_SIZE - len, "; last log: %s",
             proc_file_tail(nd->err_path, 300, tail, sizeof tail));
}

/* ------------------------------------------------------------------------------------------------
 * Nodes */

static int spawn_node(struct cluster *c, unsigned i, char *errmsg)
{
    struct cluster_node *nd = &c->nodes[i];
    char id[24], latency[24], tls_dir[PROC_PATH_MAX + 32];
    const char *argv[20 + CLUSTER_MAX_EXTRA_ARGS];
    int k = 0;
    const char *level = getenv("GANTRY_IT_LOG_LEVEL");

    snprintf(id, sizeof id, "%" PRIu64, nd->id);
    snprintf(latency, sizeof latency, "%u", c->latency_ms);
    argv[k++] = c->node_bin;
    argv[k++] = "--id";
    argv[k++] = id;
    argv[k++] = "--address";
    argv[k++] = nd->address;
    argv[k++] = "--dir";
    argv[k++] = nd->dir;
    if (c->latency_ms != 0) {
        argv[k++] = "--latency-ms";
        argv[k++] = latency;
    }
    argv[k++] = "--log-level";
    argv[k++] = level != NULL ? level : "info";
    if (c->tls_root[0] != '\0') {
        snprintf(tls_dir, sizeof tls_dir, "%s/node%" PRIu64, c->tls_root, nd->id);
        argv[k++] = "--tls-dir";
        argv[k++] = tls_dir;
    }
    if (i != 0 && (nd->starts == 0 || c->join_on_restart)) {
        argv[k++] = "--join";
        argv[k++] = c->join;
        argv[k++] = c->join_as_standby ? "--standby" : "--voter";
    }
    for (unsigned e = 0; e < c->n_extra_args; e++) {
        argv[k++] = c->extra_args[e];
    }
    argv[k] = NULL;
    struct proc_spec spec = {
        .argv = argv,
        .stdout_path = nd->out_path,
        .stderr_path = nd->err_path,
        .append = true, /* keep the logs of earlier runs of this node */
    };
    int rv = proc_spawn(&nd->proc, &spec, errmsg);
    if (rv != 0) {
        return rv;
    }
    nd->running = true;
    nd->starts++;
    return 0;
}

static int wait_ready(struct cluster *c, unsigned i, char *errmsg)
{
    struct cluster_node *nd = &c->nodes[i];
    char line[128];
    int rv = proc_wait_line(&nd->proc, "READY ", c->ready_timeout_ms, line, sizeof line, errmsg);
    if (rv != 0) {
        if (rv == GERR_CLOSED) {
            nd->running = false;
        }
        node_failure_message(nd, errmsg);
    }
    return rv;
}

int cluster_node_start(struct cluster *c, unsigned i, char *errmsg)
{
    if (i >= c->n) {
        gerr_set(errmsg, "no node #%u", i);
        return GERR_INVAL;
    }
    if (c->nodes[i].running && proc_running(&c->nodes[i].proc)) {
        gerr_set(errmsg, "node %" PRIu64 " is already running", c->nodes[i].id);
        return GERR_EXISTS;
    }
    int rv = spawn_node(c, i, errmsg);
    return rv != 0 ? rv : wait_ready(c, i, errmsg);
}

void cluster_node_kill(struct cluster *c, unsigned i)
{
    if (c->nodes[i].running) {
        proc_kill(&c->nodes[i].proc);
        c->nodes[i].running = false;
    }
}

int cluster_node_term(struct cluster *c, unsigned i, unsigned timeout_ms)
{
    int rv = 0;
    if (c->nodes[i].running) {
        rv = proc_stop(&c->nodes[i].proc, timeout_ms);
        c->nodes[i].running = false;
    }
    return rv;
}

int cluster_index_of(const struct cluster *c, uint64_t id)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->nodes[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

void cluster_client_config(const struct cluster *c, struct store_client_config *cfg)
{
    cfg->addresses = c->addrs;
    cfg->n_addresses = c->n;
    cfg->dial = c->dial;
    cfg->dial_arg = c->dial_arg;
}

int cluster_start(struct cluster *c, unsigned n, const struct cluster_opts *o, char *errmsg)
{
    unsigned base;
    int rv;

    memset(c, 0, sizeof *c);
    if (n == 0 || n > CLUSTER_MAX_NODES || o->node_bin == NULL || strlen(o->node_bin) >= sizeof c->node_bin) {
        gerr_set(errmsg, "cluster: bad options");
        return GERR_INVAL;
    }
    if (access(o->node_bin, X_OK) != 0) {
        gerr_set(errmsg, "cluster: %s is not executable: %s", o->node_bin, strerror(errno));
        return GERR_INVAL;
    }
    snprintf(c->node_bin, sizeof c->node_bin, "%s", o->node_bin);
    c->latency_ms = o->latency_ms;
    c->ready_timeout_ms = o->ready_timeout_ms != 0 ? o->ready_timeout_ms : 60000;
    if (o->tls_root != NULL) {
        snprintf(c->tls_root, sizeof c->tls_root, "%s", o->tls_root);
    }
    c->dial = o->dial;
    c->dial_arg = o->dial_arg;
    c->join_as_standby = o->join_as_standby;
    for (const char *const *a = o->extra_args; a != NULL && *a != NULL; a++) {
        if (c->n_extra_args == CLUSTER_MAX_EXTRA_ARGS) {
            gerr_set(errmsg, "cluster: more than %u extra node arguments", CLUSTER_MAX_EXTRA_ARGS);
            return GERR_INVAL;
        }
        c->extra_args[c->n_extra_args++] = *a;
    }
    unsigned start_n = o->start_nodes != 0 && o->start_nodes < n ? o->start_nodes : n;
    const char *tmp = getenv("TMPDIR");
    snprintf(c->root, sizeof c->root, "%s/gantry-it-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(c->root) == NULL) {
        gerr_set(errmsg, "cluster: mkdtemp %s: %s", c->root, strerror(errno));
        c->root[0] = '\0';
        return GERR_IO;
    }
    c->n = n;
    register_cluster(c);
    write_owner(c);
    reap_stale_roots(tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (pick_ports(n, &base) != 0) {
        gerr_set(errmsg, "cluster: no %u consecutive free ports on 127.0.0.1", n);
        rv = GERR_UNAVAILABLE;
        goto err_after_root;
    }
    size_t jl = 0;
    for (unsigned i = 0; i < n; i++) {
        struct cluster_node *nd = &c->nodes[i];
        nd->id = i + 1;
        snprintf(nd->address, sizeof nd->address, "127.0.0.1:%u", base + i);
        snprintf(nd->dir, sizeof nd->dir, "%s/node%u", c->root, i + 1);
        snprintf(nd->out_path, sizeof nd->out_path, "%s/node%u.out", c->root, i + 1);
        snprintf(nd->err_path, sizeof nd->err_path, "%s/node%u.log", c->root, i + 1);
        c->addrs[i] = nd->address;
        jl += (size_t)snprintf(c->join + jl, sizeof c->join - jl, "%s%s", i > 0 ? "," : "", nd->address);
    }
    if ((rv = cluster_node_start(c, 0, errmsg)) != 0) {
        goto err_after_root;
    }
    /* The joiners start together: their ADD/ASSIGN requests collide on purpose (one
     * configuration change at a time), which gantry-store-node must retry. */
    for (unsigned i = 1; i < start_n; i++) {
        if ((rv = spawn_node(c, i, errmsg)) != 0) {
            goto err_after_root;
        }
    }
    for (unsigned i = 1; i < start_n; i++) {
        if ((rv = wait_ready(c, i, errmsg)) != 0) {
            goto err_after_root;
        }
    }
    /* Standby joiners get their final roles from the roles policy: the test waits for those. */
    if (!c->join_as_standby && (rv = cluster_wait_voters(c, start_n, c->ready_timeout_ms, errmsg)) != 0) {
        goto err_after_root;
    }
    return 0;

err_after_root:
    gerr_wrap(errmsg, "cluster of %u in %s", n, c->root);
    if (keep_dirs()) {
        cluster_print_logs(c, 2000);
    }
    cluster_stop(c);
    return rv;
}

int cluster_stop_checked(struct cluster *c, char *errmsg)
{
    int rv = 0;
    for (unsigned i = c->n; i-- > 0;) {
        struct cluster_node *nd = &c->nodes[i];
        if (nd->running) {
            int stopped = proc_stop(&nd->proc, 10000);
            nd->running = false;
            /* A clean stop is part of the contract (and where a sanitizer build reports leaks). */
            if (rv == 0 &&
                (stopped != 0 || !WIFEXITED(nd->proc.status) || WEXITSTATUS(nd->proc.status) != 0)) {
                char st[64];
                rv = GERR_INTERNAL;
                if (errmsg != NULL) {
                    gerr_set(errmsg, "did not stop cleanly on SIGTERM: %s%s",
                             proc_status_str(nd->proc.status, st, sizeof st),
                             stopped != 0 ? " (needed SIGKILL)" : "");
                    node_failure_message(nd, errmsg);
                }
            }
        }
        proc_close(&nd->proc);
    }
    if (c->root[0] != '\0') {
        if (keep_dirs()) {
            fprintf(stderr, "cluster: kept %s (GANTRY_IT_KEEP=1)\n", c->root);
        } else {
            cluster_rm_rf(c->root);
        }
        c->root[0] = '\0';
    }
    if (c->registered) {
        unregister(c);
    }
    return rv;
}

void cluster_stop(struct cluster *c)
{
    cluster_stop_checked(c, NULL);
}

/* ------------------------------------------------------------------------------------------------
 * Observing the cluster */

static void init_client(struct cluster *c, struct store_client *cl, unsigned leader_timeout_ms)
{
    struct store_client_config cfg = {.leader_timeout_ms = leader_timeout_ms, .connect_timeout_ms = 1000};
    cluster_client_config(c, &cfg);
    store_client_init(cl, &cfg);
}

int cluster_wait_roles(struct cluster *c, unsigned voters, unsigned standbys, unsigned spares,
                       unsigned timeout_ms, char *errmsg)
{
    struct store_client cl;
    uint64_t deadline = now_ms() + timeout_ms;
    unsigned seen[3] = {0, 0, 0};
    int rv;

    init_client(c, &cl, timeout_ms);
    for (;;) {
        struct proto_node_info *nodes = NULL;
        unsigned n = 0;
        rv = store_client_cluster(&cl, &nodes, &n);
        if (rv == 0) {
            seen[0] = seen[1] = seen[2] = 0;
            for (unsigned i = 0; i < n; i++) {
                if (nodes[i].role >= 0 && nodes[i].role <= 2) {
                    seen[nodes[i].role]++;
                }
            }
            mem_free(nodes);
            if (seen[0] == voters && seen[1] == standbys && seen[2] == spares) {
                break;
            }
        }
        if (now_ms() >= deadline) {
            gerr_set(errmsg,
                     "cluster: wanted %u voters, %u standbys, %u spares; saw %u, %u, %u within %u ms (%s)",
                     voters, standbys, spares, seen[0], seen[1], seen[2], timeout_ms,
                     rv != 0 ? cl.errmsg : "membership not there yet");
            rv = GERR_TIMEOUT;
            break;
        }
        store_client_disconnect(&cl); /* ask the leader afresh: CLUSTER is answered locally */
        sleep_ms(20);
    }
    store_client_close(&cl);
    return rv;
}

int cluster_wait_voters(struct cluster *c, unsigned voters, unsigned timeout_ms, char *errmsg)
{
    return cluster_wait_roles(c, voters, 0, 0, timeout_ms, errmsg);
}

int cluster_leader(struct cluster *c, unsigned timeout_ms, uint64_t *id, char *errmsg)
{
    struct store_client cl;
    init_client(c, &cl, timeout_ms);
    int rv = store_client_connect(&cl);
    if (rv == 0) {
        *id = cl.leader_id;
    } else {
        gerr_set(errmsg, "%s", cl.errmsg);
    }
    store_client_close(&cl);
    return rv;
}

int cluster_node_query_int(struct cluster *c, unsigned i, const char *db, const char *sql, int64_t *out,
                           char *errmsg)
{
    struct store_conn conn;
    char dir[PROC_PATH_MAX + 32], path[PROC_PATH_MAX + 300];
    sqlite3 *sdb = NULL;
    sqlite3_stmt *st = NULL;
    int rv;

    snprintf(dir, sizeof dir, "%s/dump-node%u", c->root, i + 1);
    cluster_rm_rf(dir);
    if (mkdir(dir, 0700) != 0) {
        gerr_set(errmsg, "mkdir %s: %s", dir, strerror(errno));
        return GERR_IO;
    }
    rv = store_conn_open(&conn, c->nodes[i].address, 5000, c->dial, c->dial_arg);
    if (rv == 0) {
        rv = store_conn_dump(&conn, db, dir);
    }
    if (rv != 0) {
        gerr_set(errmsg, "%s", conn.errmsg);
        store_conn_close(&conn);
        goto out;
    }
    store_conn_close(&conn);
    snprintf(path, sizeof path, "%s/%s", dir, db);
    if (sqlite3_open_v2(path, &sdb, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        gerr_set(errmsg, "sqlite3 open %s: %s", path, sdb != NULL ? sqlite3_errmsg(sdb) : "out of memory");
        rv = GERR_IO;
        goto out;
    }
    if (sqlite3_prepare_v2(sdb, sql, -1, &st, NULL) != SQLITE_OK) {
        /* Typically "no such table": the node has not applied the CREATE yet. */
        gerr_set(errmsg, "node %" PRIu64 ": %s", c->nodes[i].id, sqlite3_errmsg(sdb));
        rv = GERR_NOTFOUND;
        goto out;
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        gerr_set(errmsg, "node %" PRIu64 ": %s: no row (%s)", c->nodes[i].id, sql, sqlite3_errmsg(sdb));
        rv = GERR_NOTFOUND;
        goto out;
    }
    *out = sqlite3_column_int64(st, 0);
    rv = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(sdb);
    cluster_rm_rf(dir);
    return rv;
}

int cluster_wait_node_value(struct cluster *c, unsigned i, const char *db, const char *sql, int64_t want,
                            unsigned timeout_ms, char *errmsg)
{
    uint64_t deadline = now_ms() + timeout_ms;
    int64_t got = -1;
    int rv;
    for (;;) {
        rv = cluster_node_query_int(c, i, db, sql, &got, errmsg);
        if (rv == 0 && got == want) {
            return 0;
        }
        if (now_ms() >= deadline) {
            if (rv == 0) {
                gerr_set(errmsg, "node %" PRIu64 ": %s = %" PRId64 ", want %" PRId64 " (after %u ms)",
                         c->nodes[i].id, sql, got, want, timeout_ms);
            }
            return GERR_TIMEOUT;
        }
        sleep_ms(20);
    }
}

int cluster_check_alive(struct cluster *c, char *errmsg)
{
    for (unsigned i = 0; i < c->n; i++) {
        struct cluster_node *nd = &c->nodes[i];
        if (nd->running && !proc_running(&nd->proc)) {
            char st[64];
            nd->running = false;
            gerr_set(errmsg, "died unexpectedly: %s", proc_status_str(nd->proc.status, st, sizeof st));
            node_failure_message(nd, errmsg);
            return GERR_CLOSED;
        }
    }
    return 0;
}

void cluster_print_logs(struct cluster *c, unsigned max_bytes)
{
    char *tail = mem_alloc((size_t)max_bytes + 1);
    for (unsigned i = 0; i < c->n; i++) {
        fprintf(stderr, "---- node %" PRIu64 " (%s) %s, last %u bytes of %s:\n%s\n", c->nodes[i].id,
                c->nodes[i].address, c->nodes[i].running ? "running" : "stopped", max_bytes,
                c->nodes[i].err_path,
                proc_file_tail(c->nodes[i].err_path, max_bytes, tail, (size_t)max_bytes + 1));
    }
    mem_free(tail);
}
