/* The clusters gantry-bench api measures (see benchcluster.h).
 *
 * Happy path (gantry): mkdtemp a root, bind-test 9 free ports, `gantryd init` (bounded), start
 * replica 1 and wait for READY, CreateJoinToken (uses 2), start replicas 2 and 3 with --join and
 * wait for each READY, poll ListMembers until three reachable voters. (etcd): mkdtemp, 6 ports, a CA
 * and a certificate, three members at once, poll Maintenance.Status on each until all answer and
 * agree on a leader.
 *
 * Failure modes: no free ports; a process exits or stays silent past its deadline (its log tail
 * goes into the message); the cluster never forms. In every case what was started is stopped and
 * the root removed. */
#include "benchcluster.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "etcd_kv.pb-c.h"
#include "gantry/v1/cluster.pb-c.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/pki.h"
#include "server/grpc/client.h"

#define START_TIMEOUT_MS  60000u
#define FORM_TIMEOUT_MS   60000u
#define STOP_TIMEOUT_MS   5000u
#define SERVER_NAME       "localhost"
#define METRIC_STORE_REQS "gantry_store_requests_total"

/* ------------------------------------------------------------------------------------------------
 * Cleanup registry: every running cluster, so that exit and fatal signals leave neither processes
 * nor directories behind. The signal handler uses only async-signal-safe calls. */

#define MAX_CLUSTERS 4
static struct bc_cluster *volatile registry[MAX_CLUSTERS];
static bool handlers_installed;

static void on_exit_cleanup(void)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (registry[i] != NULL) {
            bc_stop(registry[i]);
        }
    }
}

static void on_fatal_signal(int sig)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        struct bc_cluster *c = registry[i];
        if (c == NULL) {
            continue;
        }
        for (unsigned j = 0; j < BC_NODES; j++) {
            if (c->nodes[j].running && c->nodes[j].proc.pid > 0) {
                kill(c->nodes[j].proc.pid, SIGKILL);
                waitpid(c->nodes[j].proc.pid, NULL, 0);
            }
        }
        if (c->root[0] != '\0' && !c->opts.keep) {
            pid_t pid = fork();
            if (pid == 0) {
                char *argv[] = {(char *)"/bin/rm", (char *)"-rf", c->root, NULL};
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

static void register_cluster(struct bc_cluster *c)
{
    if (!handlers_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGABRT, &sa, NULL); /* a failed assertion or a sanitizer report */
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

static void unregister(struct bc_cluster *c)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (registry[i] == c) {
            registry[i] = NULL;
        }
    }
    c->registered = false;
}

/* ------------------------------------------------------------------------------------------------
 * Helpers */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

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

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
    }
}

static bool port_free(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/* @n consecutive free ports below the kernel's ephemeral range (32768+), so that outgoing
 * connections cannot take them between this test and the members' bind. */
static int pick_ports(unsigned n, unsigned *base_out)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        unsigned base = (unsigned)rand_range(20000, 32000 - n);
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

static void failure_message(struct bc_node *nd, char *errmsg)
{
    char tail[1200];
    gerr_wrap(errmsg, "%s", nd->name);
    size_t len = strlen(errmsg);
    snprintf(errmsg + len, GERR_MSG_SIZE - len, "; last log: %s",
             proc_file_tail(nd->log_path, 400, tail, sizeof tail));
}

static int write_file(const char *path, const char *text, char *errmsg)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text), off = 0;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    if (fd < 0 || off != len) {
        gerr_set(errmsg, "write %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return GERR_IO;
    }
    close(fd);
    return 0;
}

static int dial(struct bc_cluster *c, unsigned i, struct grpc_client **out, char *errmsg)
{
    struct grpc_client_config cfg = {
        .target = c->nodes[i].api,
        .ca_file = c->ca_file,
        .server_name = SERVER_NAME,
        .connect_timeout_ms = 3000,
    };
    return grpc_client_connect(&cfg, out, errmsg);
}

int bc_call(struct bc_cluster *c, unsigned i, const char *path, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *resp, ProtobufCMessage **out, char *errmsg)
{
    struct grpc_client *cl;
    struct grpc_client_result res;
    struct grpc_client_md md = {"authorization", c->auth};
    int rv = dial(c, i, &cl, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = grpc_client_unary(cl, path, &md, c->auth[0] != '\0' ? 1 : 0, req, resp, 5000, out, &res, errmsg);
    grpc_client_close(cl);
    if (rv == 0 && res.status != 0) {
        gerr_set(errmsg, "%s: status %d: %s", path, res.status, res.message);
        rv = GERR_UNAVAILABLE;
    }
    return rv;
}

static int spawn(struct bc_cluster *c, unsigned i, const char *const *argv, const char *const *env,
                 char *errmsg)
{
    struct bc_node *nd = &c->nodes[i];
    struct proc_spec spec = {
        .argv = argv, .env = env, .stdout_path = nd->out_path, .stderr_path = nd->log_path};
    int rv = proc_spawn(&nd->proc, &spec, errmsg);
    if (rv == 0) {
        nd->running = true;
    }
    return rv;
}

/* ------------------------------------------------------------------------------------------------
 * gantry */

static unsigned gantry_argv(struct bc_cluster *c, unsigned i, const char **argv, char *id, char *latency)
{
    struct bc_node *nd = &c->nodes[i];
    unsigned k = 0;
    snprintf(id, 16, "%u", i + 1);
    snprintf(latency, 16, "%u", c->opts.latency_ms);
    argv[k++] = "--replica-id";
    argv[k++] = id;
    argv[k++] = "--data-dir";
    argv[k++] = nd->dir;
    argv[k++] = "--api-address";
    argv[k++] = nd->api;
    argv[k++] = "--peer-address";
    argv[k++] = nd->peer;
    argv[k++] = "--admin-address";
    argv[k++] = nd->admin;
    argv[k++] = "--driver";
    argv[k++] = "none";
    if (c->opts.latency_ms != 0) {
        argv[k++] = "--latency-ms";
        argv[k++] = latency;
    }
    return k;
}

static int gantry_init(struct bc_cluster *c, char *errmsg)
{
    char id[16], latency[16], key_path[PROC_PATH_MAX + 16], init_out[PROC_PATH_MAX + 16];
    char init_err[PROC_PATH_MAX + 16];
    const char *argv[32];
    unsigned k = 0;
    argv[k++] = c->opts.bin;
    argv[k++] = "init";
    k += gantry_argv(c, 0, argv + k, id, latency);
    snprintf(key_path, sizeof key_path, "%s/admin.key", c->root);
    snprintf(init_out, sizeof init_out, "%s/init.out", c->root);
    snprintf(init_err, sizeof init_err, "%s/init.log", c->root);
    argv[k++] = "--admin-key-file";
    argv[k++] = key_path;
    argv[k] = NULL;
    struct proc p;
    struct proc_spec spec = {.argv = argv, .stdout_path = init_out, .stderr_path = init_err};
    int status = 0;
    int rv = proc_spawn(&p, &spec, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (proc_reap(&p, START_TIMEOUT_MS, &status) != 0) {
        proc_kill(&p);
        gerr_set(errmsg, "gantryd init did not finish within %u s", START_TIMEOUT_MS / 1000);
        return GERR_TIMEOUT;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char tail[600], how[64];
        gerr_set(errmsg, "gantryd init %s: %s", proc_status_str(status, how, sizeof how),
                 proc_file_tail(init_err, 400, tail, sizeof tail));
        return GERR_INTERNAL;
    }
    char *key = NULL;
    size_t len = 0;
    if ((rv = file_read_all(key_path, 4096, &key, &len, errmsg)) != 0) {
        return rv;
    }
    while (len > 0 && (key[len - 1] == '\n' || key[len - 1] == '\r' || key[len - 1] == ' ')) {
        key[--len] = '\0';
    }
    if (strncmp(key, "gtk_", 4) != 0 || len + 8 >= sizeof c->auth) {
        gerr_set(errmsg, "gantryd init wrote no API key (gtk_...) to %s", key_path);
        mem_free(key);
        return GERR_PROTO;
    }
    snprintf(c->auth, sizeof c->auth, "Bearer %s", key);
    mem_free(key);
    return 0;
}

static int gantry_run(struct bc_cluster *c, unsigned i, const char *join, const char *token, char *errmsg)
{
    char id[16], latency[16], env_token[512];
    const char *argv[32];
    const char *env[2] = {NULL, NULL};
    unsigned k = 0;
    argv[k++] = c->opts.bin;
    k += gantry_argv(c, i, argv + k, id, latency);
    if (join != NULL) {
        argv[k++] = "--join";
        argv[k++] = join;
        snprintf(env_token, sizeof env_token, "GANTRY_JOIN_TOKEN=%s", token);
        env[0] = env_token;
    }
    argv[k] = NULL;
    int rv = spawn(c, i, argv, env, errmsg);
    if (rv != 0) {
        return rv;
    }
    char line[256];
    rv = proc_wait_line(&c->nodes[i].proc, "READY", START_TIMEOUT_MS, line, sizeof line, errmsg);
    if (rv != 0) {
        if (rv == GERR_CLOSED) {
            c->nodes[i].running = false;
        }
        failure_message(&c->nodes[i], errmsg);
    }
    return rv;
}

static int gantry_join_token(struct bc_cluster *c, char *token, size_t len, char *errmsg)
{
    Gantry__V1__CreateJoinTokenRequest req = GANTRY__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    req.uses = BC_NODES - 1;
    req.ttl_seconds = 600;
    int rv = bc_call(c, 0, "/gantry.v1.Cluster/CreateJoinToken", &req.base,
                     &gantry__v1__join_token__descriptor, &out, errmsg);
    if (rv != 0) {
        return rv;
    }
    const Gantry__V1__JoinToken *t = (const void *)out;
    if (strlen(t->token) >= len) {
        rv = GERR_TOOBIG;
        gerr_set(errmsg, "join token too long");
    } else {
        snprintf(token, len, "%s", t->token);
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return rv;
}

/* Poll ListMembers until every replica is a reachable voter. */
static int gantry_wait_voters(struct bc_cluster *c, char *errmsg)
{
    uint64_t deadline = now_ms() + FORM_TIMEOUT_MS;
    char last[GERR_MSG_SIZE] = "no answer";
    while (now_ms() < deadline) {
        Gantry__V1__ListMembersRequest req = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        char err[GERR_MSG_SIZE];
        if (bc_call(c, 0, "/gantry.v1.Cluster/ListMembers", &req.base,
                    &gantry__v1__list_members_response__descriptor, &out, err) == 0) {
            const Gantry__V1__ListMembersResponse *r = (const void *)out;
            unsigned voters = 0;
            size_t members = r->n_members;
            for (size_t m = 0; m < members; m++) {
                voters += r->members[m]->role == GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER &&
                          r->members[m]->reachable;
            }
            snprintf(last, sizeof last, "%u of %zu members are reachable voters", voters, members);
            protobuf_c_message_free_unpacked(out, NULL);
            if (voters == BC_NODES && members == BC_NODES) {
                return 0;
            }
        } else {
            snprintf(last, sizeof last, "%s", err);
        }
        sleep_ms(200);
    }
    gerr_set(errmsg, "the gantry cluster did not reach %u reachable voters within %u s (%s)", BC_NODES,
             FORM_TIMEOUT_MS / 1000, last);
    return GERR_TIMEOUT;
}

static int gantry_start(struct bc_cluster *c, char *errmsg)
{
    unsigned base;
    int rv = pick_ports(3 * BC_NODES, &base);
    if (rv != 0) {
        gerr_set(errmsg, "no %u free consecutive ports on 127.0.0.1", 3 * BC_NODES);
        return rv;
    }
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        snprintf(nd->name, sizeof nd->name, "gantryd-%u", i + 1);
        snprintf(nd->api, sizeof nd->api, "127.0.0.1:%u", base + 3 * i);
        snprintf(nd->peer, sizeof nd->peer, "127.0.0.1:%u", base + 3 * i + 1);
        snprintf(nd->admin, sizeof nd->admin, "127.0.0.1:%u", base + 3 * i + 2);
        snprintf(nd->dir, sizeof nd->dir, "%s/r%u", c->root, i + 1);
        snprintf(nd->out_path, sizeof nd->out_path, "%s/r%u.out", c->root, i + 1);
        snprintf(nd->log_path, sizeof nd->log_path, "%s/r%u.log", c->root, i + 1);
        nd->member_id = i + 1;
    }
    snprintf(c->ca_file, sizeof c->ca_file, "%s/tls/ca.pem", c->nodes[0].dir);
    if ((rv = gantry_init(c, errmsg)) != 0 || (rv = gantry_run(c, 0, NULL, NULL, errmsg)) != 0) {
        return rv;
    }
    char token[512];
    if ((rv = gantry_join_token(c, token, sizeof token, errmsg)) != 0) {
        gerr_wrap(errmsg, "CreateJoinToken");
        return rv;
    }
    for (unsigned i = 1; i < BC_NODES; i++) {
        if ((rv = gantry_run(c, i, c->nodes[0].api, token, errmsg)) != 0) {
            return rv;
        }
    }
    return gantry_wait_voters(c, errmsg);
}

/* ------------------------------------------------------------------------------------------------
 * etcd */

static int etcd_pki(struct bc_cluster *c, char *cert_path, char *key_path, size_t len, char *errmsg)
{
    char *ca_key = NULL, *ca_cert = NULL, *key = NULL, *cert = NULL;
    char dir[PROC_PATH_MAX - 64];
    const char *ips[] = {"127.0.0.1"};
    const char *dns[] = {SERVER_NAME};
    struct pki_subject subj = {
        .common_name = "etcd", .ip_sans = ips, .n_ip_sans = 1, .dns_sans = dns, .n_dns_sans = 1};
    snprintf(dir, sizeof dir, "%s/tls", c->root);
    int rv = mkdir(dir, 0700) == 0 ? 0 : GERR_IO;
    if (rv != 0) {
        gerr_set(errmsg, "mkdir %s: %s", dir, strerror(errno));
        return rv;
    }
    snprintf(c->ca_file, sizeof c->ca_file, "%s/ca.pem", dir);
    snprintf(cert_path, len, "%s/cert.pem", dir);
    snprintf(key_path, len, "%s/key.pem", dir);
    if ((rv = pki_ca_create("gantry-bench etcd CA", &ca_key, &ca_cert, errmsg)) == 0 &&
        (rv = pki_issue(ca_key, ca_cert, &subj, 30, &key, &cert, errmsg)) == 0 &&
        (rv = write_file(c->ca_file, ca_cert, errmsg)) == 0 &&
        (rv = write_file(cert_path, cert, errmsg)) == 0) {
        rv = write_file(key_path, key, errmsg);
    }
    mem_free(ca_key);
    mem_free(ca_cert);
    mem_free(key);
    mem_free(cert);
    return rv;
}

static int etcd_status(struct bc_cluster *c, unsigned i, uint64_t *member, uint64_t *leader, char *errmsg)
{
    Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rv = bc_call(c, i, "/etcdserverpb.Maintenance/Status", &req.base,
                     &etcdserverpb__status_response__descriptor, &out, errmsg);
    if (rv != 0) {
        return rv;
    }
    const Etcdserverpb__StatusResponse *r = (const void *)out;
    *member = r->header != NULL ? r->header->member_id : 0;
    *leader = r->leader;
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int etcd_version(struct bc_cluster *c)
{
    char out[PROC_PATH_MAX + 16];
    const char *argv[] = {c->opts.bin, "--version", NULL};
    struct proc p;
    char errmsg[GERR_MSG_SIZE], line[160];
    snprintf(out, sizeof out, "%s/version.out", c->root);
    struct proc_spec spec = {.argv = argv, .stdout_path = out};
    if (proc_spawn(&p, &spec, errmsg) != 0) {
        return GERR_IO;
    }
    int rv = proc_wait_line(&p, "etcd Version:", 10000, line, sizeof line, errmsg);
    if (rv == 0) {
        snprintf(c->version, sizeof c->version, "%s", line);
    }
    proc_stop(&p, 2000);
    return rv;
}

static int etcd_start(struct bc_cluster *c, char *errmsg)
{
    unsigned base;
    char cert[PROC_PATH_MAX], key[PROC_PATH_MAX], initial[512] = "", heartbeat[16], election[16];
    char token[64], client_url[BC_NODES][64], peer_url[BC_NODES][64];
    int rv = pick_ports(2 * BC_NODES, &base);
    if (rv != 0) {
        gerr_set(errmsg, "no %u free consecutive ports on 127.0.0.1", 2 * BC_NODES);
        return rv;
    }
    etcd_version(c);
    if ((rv = etcd_pki(c, cert, key, sizeof cert, errmsg)) != 0) {
        return rv;
    }
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        snprintf(nd->name, sizeof nd->name, "etcd-%u", i + 1);
        snprintf(nd->api, sizeof nd->api, "127.0.0.1:%u", base + 2 * i);
        snprintf(nd->peer, sizeof nd->peer, "127.0.0.1:%u", base + 2 * i + 1);
        snprintf(nd->dir, sizeof nd->dir, "%s/m%u", c->root, i + 1);
        snprintf(nd->out_path, sizeof nd->out_path, "%s/m%u.out", c->root, i + 1);
        snprintf(nd->log_path, sizeof nd->log_path, "%s/m%u.log", c->root, i + 1);
        snprintf(client_url[i], sizeof client_url[i], "https://%s", nd->api);
        snprintf(peer_url[i], sizeof peer_url[i], "https://%s", nd->peer);
        size_t len = strlen(initial);
        snprintf(initial + len, sizeof initial - len, "%s%s=%s", i > 0 ? "," : "", nd->name, peer_url[i]);
    }
    /* The same rule as gantryd's --latency-ms: heartbeat 1.5x, election timeout 15x. */
    unsigned latency = c->opts.latency_ms != 0 ? c->opts.latency_ms : 20;
    snprintf(heartbeat, sizeof heartbeat, "%u", latency * 3 / 2);
    snprintf(election, sizeof election, "%u", latency * 15);
    snprintf(token, sizeof token, "gantry-bench-%d", (int)getpid());
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        const char *argv[] = {c->opts.bin,
                              "--name",
                              nd->name,
                              "--data-dir",
                              nd->dir,
                              "--listen-client-urls",
                              client_url[i],
                              "--advertise-client-urls",
                              client_url[i],
                              "--listen-peer-urls",
                              peer_url[i],
                              "--initial-advertise-peer-urls",
                              peer_url[i],
                              "--initial-cluster",
                              initial,
                              "--initial-cluster-state",
                              "new",
                              "--initial-cluster-token",
                              token,
                              "--cert-file",
                              cert,
                              "--key-file",
                              key,
                              "--peer-cert-file",
                              cert,
                              "--peer-key-file",
                              key,
                              "--peer-trusted-ca-file",
                              c->ca_file,
                              "--peer-client-cert-auth",
                              "--heartbeat-interval",
                              heartbeat,
                              "--election-timeout",
                              election,
                              "--logger",
                              "zap",
                              "--log-outputs",
                              "stderr",
                              "--log-level",
                              "warn",
                              NULL};
        if ((rv = spawn(c, i, argv, NULL, errmsg)) != 0) {
            return rv;
        }
    }
    /* Every member answers and names the same leader. */
    uint64_t deadline = now_ms() + FORM_TIMEOUT_MS;
    char last[GERR_MSG_SIZE] = "no answer";
    while (now_ms() < deadline) {
        uint64_t leaders[BC_NODES] = {0};
        unsigned ok = 0;
        for (unsigned i = 0; i < BC_NODES; i++) {
            if (!proc_running(&c->nodes[i].proc)) {
                c->nodes[i].running = false;
                gerr_set(errmsg, "exited during startup");
                failure_message(&c->nodes[i], errmsg);
                return GERR_CLOSED;
            }
            if (etcd_status(c, i, &c->nodes[i].member_id, &leaders[i], last) == 0 && leaders[i] != 0) {
                ok++;
            }
        }
        if (ok == BC_NODES && leaders[0] == leaders[1] && leaders[1] == leaders[2]) {
            return 0;
        }
        sleep_ms(100);
    }
    gerr_set(errmsg, "the etcd cluster did not form within %u s (%s)", FORM_TIMEOUT_MS / 1000, last);
    return GERR_TIMEOUT;
}

/* ------------------------------------------------------------------------------------------------
 * The public functions */

int bc_start(struct bc_cluster *c, enum bc_kind kind, const struct bc_opts *o, char *errmsg)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->opts = *o;
    const char *tmp = getenv("TMPDIR");
    snprintf(c->root, sizeof c->root, "%s/gantry-bench-%s-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", kind == BC_GANTRY ? "gantry" : "etcd");
    if (mkdtemp(c->root) == NULL) {
        gerr_set(errmsg, "mkdtemp %s: %s", c->root, strerror(errno));
        c->root[0] = '\0';
        return GERR_IO;
    }
    register_cluster(c);
    int rv;
    if (kind == BC_GANTRY) {
        const char *argv[] = {o->bin, "version", NULL};
        char out[PROC_PATH_MAX + 16], line[160], err[GERR_MSG_SIZE];
        struct proc p;
        snprintf(out, sizeof out, "%s/version.out", c->root);
        struct proc_spec spec = {.argv = argv, .stdout_path = out};
        if (proc_spawn(&p, &spec, err) == 0) {
            if (proc_wait_line(&p, "gantryd", 10000, line, sizeof line, err) == 0) {
                snprintf(c->version, sizeof c->version, "%s", line);
            }
            proc_stop(&p, 2000);
        }
        rv = gantry_start(c, errmsg);
    } else {
        rv = etcd_start(c, errmsg);
    }
    if (rv != 0) {
        bc_stop(c);
    }
    return rv;
}

void bc_stop_begin(struct bc_cluster *c)
{
    for (unsigned i = 0; i < BC_NODES; i++) {
        if (c->nodes[i].running && !c->nodes[i].term_sent) {
            proc_signal(&c->nodes[i].proc, SIGTERM);
            c->nodes[i].term_sent = true;
        }
    }
}

void bc_stop(struct bc_cluster *c)
{
    uint64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    bc_stop_begin(c);
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        if (nd->running) {
            uint64_t now = now_ms();
            if (proc_reap(&nd->proc, now < deadline ? (unsigned)(deadline - now) : 0, NULL) != 0) {
                proc_kill(&nd->proc);
            }
            nd->running = false;
        }
        proc_close(&nd->proc);
    }
    if (c->root[0] != '\0') {
        if (c->opts.keep) {
            fprintf(stderr, "gantry-bench: kept %s\n", c->root);
        } else {
            rm_rf(c->root);
        }
        c->root[0] = '\0';
    }
    if (c->registered) {
        unregister(c);
    }
}

int bc_leader(struct bc_cluster *c, unsigned timeout_ms, unsigned *idx, char *errmsg)
{
    uint64_t deadline = now_ms() + timeout_ms;
    char last[GERR_MSG_SIZE] = "no member answered";
    do {
        for (unsigned i = 0; i < BC_NODES; i++) {
            if (!c->nodes[i].running || c->nodes[i].killed) {
                continue;
            }
            if (c->kind == BC_ETCD) {
                uint64_t member, leader;
                if (etcd_status(c, i, &member, &leader, last) == 0 && leader != 0) {
                    for (unsigned j = 0; j < BC_NODES; j++) {
                        if (c->nodes[j].member_id == leader && !c->nodes[j].killed) {
                            *idx = j;
                            return 0;
                        }
                    }
                    snprintf(last, sizeof last, "the leader %" PRIx64 " is not a running member", leader);
                }
                continue;
            }
            Gantry__V1__GetLeaderRequest req = GANTRY__V1__GET_LEADER_REQUEST__INIT;
            ProtobufCMessage *out = NULL;
            if (bc_call(c, i, "/gantry.v1.Cluster/GetLeader", &req.base,
                        &gantry__v1__get_leader_response__descriptor, &out, last) != 0) {
                continue;
            }
            const Gantry__V1__GetLeaderResponse *r = (const void *)out;
            int found = -1;
            for (unsigned j = 0; r->leader != NULL && j < BC_NODES; j++) {
                if (strcmp(r->leader->api_address, c->nodes[j].api) == 0 ||
                    strcmp(r->leader->address, c->nodes[j].peer) == 0) {
                    found = (int)j;
                }
            }
            snprintf(last, sizeof last, "GetLeader named %s",
                     r->leader != NULL ? r->leader->address : "nobody");
            protobuf_c_message_free_unpacked(out, NULL);
            if (found >= 0 && !c->nodes[found].killed) {
                *idx = (unsigned)found;
                return 0;
            }
        }
        sleep_ms(50);
    } while (now_ms() < deadline);
    gerr_set(errmsg, "no leader within %u ms: %s", timeout_ms, last);
    return GERR_NOLEADER;
}

void bc_kill(struct bc_cluster *c, unsigned i)
{
    struct bc_node *nd = &c->nodes[i];
    if (nd->running && nd->proc.pid > 0) {
        kill(nd->proc.pid, SIGKILL);
        nd->killed = true;
    }
}

void bc_reap_killed(struct bc_cluster *c)
{
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        if (nd->killed && nd->running) {
            proc_reap(&nd->proc, 5000, NULL);
            nd->running = false;
        }
    }
}

int bc_check_alive(struct bc_cluster *c, char *errmsg)
{
    for (unsigned i = 0; i < BC_NODES; i++) {
        struct bc_node *nd = &c->nodes[i];
        if (nd->killed) {
            continue;
        }
        if (!nd->running || !proc_running(&nd->proc)) {
            char how[64];
            nd->running = false;
            gerr_set(errmsg, "%s",
                     nd->proc.exited ? proc_status_str(nd->proc.status, how, sizeof how) : "not running");
            failure_message(nd, errmsg);
            return GERR_CLOSED;
        }
    }
    return 0;
}

static bool node_live(struct bc_cluster *c, unsigned i)
{
    return c->nodes[i].running && !c->nodes[i].killed && c->nodes[i].proc.pid > 0;
}

long bc_rss_kib(struct bc_cluster *c, unsigned i)
{
    char path[64], line[256];
    long kib = -1;
    if (!node_live(c, i)) {
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->nodes[i].proc.pid);
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kib;
}

double bc_cpu_ms(struct bc_cluster *c, unsigned i)
{
    char path[64], text[1024];
    if (!node_live(c, i)) {
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)c->nodes[i].proc.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    /* Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15. */
    char *p = strrchr(text, ')');
    unsigned long long utime = 0, stime = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) {
        return -1;
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) * 1000.0 / (double)(hz > 0 ? hz : 100);
}

int bc_store_requests(struct bc_cluster *c, unsigned i, double *out, char *errmsg)
{
    const char *addr = c->nodes[i].admin;
    const char *colon = strrchr(addr, ':');
    if (c->kind != BC_GANTRY || !node_live(c, i) || colon == NULL) {
        gerr_set(errmsg, "%s has no admin port", c->nodes[i].name);
        return GERR_INVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 2};
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(colon + 1)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0) {
        gerr_set(errmsg, "socket: %s", strerror(errno));
        return GERR_IO;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static const char request[] = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) {
        gerr_set(errmsg, "%s: %s", addr, strerror(errno));
        close(fd);
        return GERR_CLOSED;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = mem_alloc(cap);
    for (;;) {
        if (len + 1 == cap) {
            if (cap >= (8u << 20)) {
                break;
            }
            cap *= 2;
            text = mem_realloc(text, cap);
        }
        ssize_t n = recv(fd, text + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            gerr_set(errmsg, "%s/metrics: %s", addr, strerror(errno));
            close(fd);
            mem_free(text);
            return errno == EAGAIN ? GERR_TIMEOUT : GERR_CLOSED;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    text[len] = '\0';
    /* Prometheus text: "name{labels} value" or "name value"; sum every sample of the metric. */
    double sum = 0;
    bool found = false;
    size_t mlen = strlen(METRIC_STORE_REQS);
    for (char *line = text; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        if (strncmp(line, METRIC_STORE_REQS, mlen) == 0 && (line[mlen] == ' ' || line[mlen] == '{')) {
            char *v = line[mlen] == '{' ? strchr(line + mlen, '}') : line + mlen;
            if (v != NULL) {
                v += v[0] == '}' ? 1 : 0;
                sum += strtod(v, NULL);
                found = true;
            }
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    mem_free(text);
    if (!found) {
        gerr_set(errmsg, "%s/metrics has no %s", addr, METRIC_STORE_REQS);
        return GERR_NOTFOUND;
    }
    *out = sum;
    return 0;
}

void bc_print_logs(struct bc_cluster *c, unsigned max_bytes)
{
    for (unsigned i = 0; i < BC_NODES; i++) {
        char *tail = mem_alloc(max_bytes + 1);
        fprintf(stderr, "--- %s (%s), last %u bytes:\n%s\n", c->nodes[i].name, c->nodes[i].log_path,
                max_bytes, proc_file_tail(c->nodes[i].log_path, max_bytes, tail, max_bytes + 1));
        mem_free(tail);
    }
}
