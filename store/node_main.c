/* gantry-store-node: run one embedded dqlite node in its own process.
 *
 * Used by the integration tests, the benchmark and the dev cluster until gantryd exists.
 *
 * With --tls-dir, every byte between nodes and from clients goes over mutual TLS: the node binds a
 * private abstract socket and a peer TLS relay listens on --address in front of it; Raft and the
 * join client dial through the same relay.
 *
 * Happy path: parse flags, block SIGTERM/SIGINT (so every thread, dqlite's included, inherits the
 * mask and the main thread alone takes them), start the node; with --join, ask the cluster's
 * leader (through the store client) to ADD this node and ASSIGN it the requested role, then print
 * "READY <id> <address>" on stdout and wait for SIGTERM or SIGINT, then stop the node.
 *
 * Failure modes: bad flags (exit 2, usage on stderr); the node does not start (exit 1); the join
 * does not finish within --join-timeout-ms, or the cluster holds this id under another address
 * (exit 1, node stopped). A node that is already a member with the requested role (a restart with
 * the same flags) skips the join requests. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/membership.h"
#include "raft/peertls.h"
#include "store/client.h"
#include "store/node.h"

static const char usage[] =
    "usage: gantry-store-node --id N --address A.B.C.D:PORT --dir DIR [options]\n"
    "\n"
    "  --id N               node id: non-zero, unique, stable (id 1 bootstraps a new cluster\n"
    "                       when its data dir is empty)\n"
    "  --address A          IPv4 address and port to bind; peers and clients dial exactly this\n"
    "  --dir D              data directory (created 0700)\n"
    "  --latency-ms N       Raft timing: heartbeat 1.5 x N, election timeout 15 x N (default 20)\n"
    "  --join A1,A2,...     addresses of cluster members: add this node and assign it a role\n"
    "  --voter | --standby  role requested with --join (default voter)\n"
    "  --join-timeout-ms N  give up joining after N ms (default 60000)\n"
    "  --snapshot-threshold N, --snapshot-trailing N, --failure-domain N\n"
    "  --manage-roles       while this node leads, keep voters and standbys per the roles policy\n"
    "                       (raft/roles.h): 3 voters, 5 from --five-voters-at healthy members\n"
    "                       (default 6), the rest standbys; a member unreachable for --grace-ms\n"
    "                       (default 30000) is replaced. --roles-interval-ms N (default 1000)\n"
    "  --handover           on SIGTERM, hand over first: promote a replacement voter, transfer\n"
    "                       leadership, demote this node (--handover-timeout-ms, default 30000)\n"
    "  --recover MEMBERS    disaster recovery, then exit: rewrite the stopped node's Raft\n"
    "                       configuration so the cluster is MEMBERS only, given as\n"
    "                       ID=A.B.C.D:PORT[/voter|/standby|/spare],... and including --id\n"
    "                       (docs/operations.md, \"Recovering from the loss of a majority\")\n"
    "  --tls-dir D          peer traffic over mutual TLS: D holds ca.pem, cert.pem and key.pem\n"
    "                       from the cluster CA. The node then listens on a private abstract\n"
    "                       socket and a TLS relay serves --address (raft/peertls.h)\n"
    "  --log-level L        error, warn, info (default), debug, trace\n"
    "\n"
    "Prints \"READY <id> <address>\" on stdout once the node runs (and has joined); stops cleanly\n"
    "on SIGTERM or SIGINT. Logs go to stderr.\n";

#if defined(__SANITIZE_ADDRESS__)
#define NODE_MAIN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NODE_MAIN_ASAN 1
#endif
#endif
#ifdef NODE_MAIN_ASAN
/* dqlite 1.11 leaks a node that was created but never started (dqlite_node_destroy skips the
 * raft and libuv teardown that only dqlite_node_stop does), which --recover must do. These are
 * allocations inside libraft and the loop dqlite initialises for the node. One libuv frame has
 * no symbol, hence the library-wide entry: acceptable only because this binary uses libuv solely
 * through dqlite. The suppressions are compiled into this program alone. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:raft_uv_init\nleak:raft_init\nleak:uv_loop_init\nleak:libuv.so.1\n";
}
#endif

static int bad_flag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_flag(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "gantry-store-node: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage);
    return 2;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

/* True if SIGTERM or SIGINT arrived (they are blocked; this consumes one). */
static bool stop_requested(const sigset_t *set)
{
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(set, NULL, &zero);
    if (sig == SIGTERM || sig == SIGINT) {
        LOG_INFO("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return true;
    }
    return false;
}

/* Find @id in the cluster's configuration. Returns 0 with *@role (-1 if absent) and the stored
 * address in @addr, or the client's error. */
static int lookup_self(struct store_client *cl, uint64_t id, int *role, char *addr, size_t addr_len)
{
    struct proto_node_info *nodes = NULL;
    unsigned n = 0;
    int rv = store_client_cluster(cl, &nodes, &n);
    if (rv != 0) {
        return rv;
    }
    *role = -1;
    addr[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].id == id) {
            *role = nodes[i].role;
            snprintf(addr, addr_len, "%s", nodes[i].address);
        }
    }
    mem_free(nodes);
    return 0;
}

/* ADD + ASSIGN through the leader, until this node holds @role or the deadline passes. Every step
 * re-reads the configuration first, so a retry after an unknown outcome or a concurrent
 * configuration change ("busy") does the right next step. */
static int join_cluster(const char *join, uint64_t id, const char *address, int role, unsigned timeout_ms,
                        const sigset_t *stop_set, store_dial_fn dial, void *dial_arg)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[STORE_MAX_ADDRESSES * 64];
    unsigned n_addrs = 0;
    struct store_client cl;
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + timeout_ms;
    unsigned delay_ms = 20;
    int rv;

    snprintf(list, sizeof list, "%s", join);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (*tok == '\0') {
            continue;
        }
        if (n_addrs == STORE_MAX_ADDRESSES) {
            LOG_ERROR("--join: more than %u addresses", STORE_MAX_ADDRESSES);
            return GERR_INVAL;
        }
        addrs[n_addrs++] = tok;
    }
    struct store_client_config cfg = {
        .addresses = addrs,
        .n_addresses = n_addrs,
        .request_timeout_ms = 30000, /* ASSIGN blocks while Raft catches this node up */
        /* One leader search per attempt; short, so SIGTERM and the deadline are checked often. */
        .leader_timeout_ms = timeout_ms < 5000 ? timeout_ms : 5000,
        .dial = dial,
        .dial_arg = dial_arg,
    };
    rv = store_client_init(&cl, &cfg);
    if (rv != 0) {
        LOG_ERROR("--join: %s", cl.errmsg);
        return rv;
    }
    for (;;) {
        int current;
        char stored[256];
        const char *step = "CLUSTER";
        rv = lookup_self(&cl, id, &current, stored, sizeof stored);
        if (rv == 0 && current >= 0 && strcmp(stored, address) != 0) {
            LOG_ERROR("join: the cluster already has node %" PRIu64 " at %s, not %s: pick another id", id,
                      stored, address);
            rv = GERR_EXISTS;
            break;
        }
        if (rv == 0 && current == role) {
            LOG_INFO("join: node %" PRIu64 " is a %s of the cluster", id, role == 0 ? "voter" : "standby");
            break;
        }
        if (rv == 0 && current < 0) {
            step = "ADD";
            rv = store_client_add(&cl, id, address);
            if (rv == 0) {
                LOG_INFO("join: added node %" PRIu64 " (%s) as a spare", id, address);
            }
        }
        if (rv == 0) {
            step = "ASSIGN";
            rv = store_client_assign(&cl, id, role);
            if (rv == 0) {
                LOG_INFO("join: assigned node %" PRIu64 " the role %s", id, role == 0 ? "voter" : "standby");
                continue; /* confirm from the configuration */
            }
        }
        /* BUSY here means another configuration change is in progress (raft allows one at a
         * time); an unknown outcome is settled by reading the configuration again. */
        LOG_WARN("join: %s: %s (%s); retrying", step, cl.errmsg, gerr_name(rv));
        if (clock_mono_ms(clk) >= deadline) {
            LOG_ERROR("join: gave up after %u ms", timeout_ms);
            rv = GERR_TIMEOUT;
            break;
        }
        if (stop_requested(stop_set)) {
            rv = GERR_CANCELED;
            break;
        }
        clk->sleep_ns(clk, rand_range(delay_ms / 2, delay_ms) * 1000000u);
        delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
    }
    store_client_close(&cl);
    return rv;
}

/* Parse "ID=ADDR[/role],..." for --recover into @out (addresses point into @buf). */
static int parse_members(const char *spec, char *buf, size_t buf_len, struct store_node_member *out,
                         unsigned max, unsigned *n)
{
    *n = 0;
    snprintf(buf, buf_len, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        uint64_t id;
        if (eq == NULL || *n == max) {
            return -1;
        }
        *eq = '\0';
        if (parse_uint(tok, UINT64_MAX, &id) != 0 || id == 0) {
            return -1;
        }
        char *address = eq + 1;
        int role = PROTO_ROLE_VOTER;
        char *slash = strchr(address, '/');
        if (slash != NULL) {
            *slash = '\0';
            const char *r = slash + 1;
            role = strcmp(r, "voter") == 0     ? PROTO_ROLE_VOTER
                   : strcmp(r, "standby") == 0 ? PROTO_ROLE_STANDBY
                   : strcmp(r, "spare") == 0   ? PROTO_ROLE_SPARE
                                               : -1;
            if (role < 0) {
                return -1;
            }
        }
        out[(*n)++] = (struct store_node_member){.id = id, .address = address, .role = role};
    }
    return *n > 0 ? 0 : -1;
}

/* The roles thread: one policy round per interval, until stopped. */
struct roles_loop {
    struct membership m;
    struct store_client cl;
    uint64_t self_id;
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
};

static void *roles_main(void *arg)
{
    struct roles_loop *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        bool changed;
        struct roles_change ch;
        membership_adjust(&r->m, r->self_id, &changed, &ch);
        pthread_mutex_lock(&r->mu);
        if (changed) {
            continue; /* converge quickly: one change per round */
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += r->interval_ms / 1000;
        until.tv_nsec += (long)(r->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->cond, &r->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* A client for membership work: this node first, then the join list. */
static int membership_client(struct store_client *cl, const char *self, const char *join, store_dial_fn dial,
                             void *dial_arg, char *list, size_t list_len)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    unsigned n = 0;
    addrs[n++] = self;
    snprintf(list, list_len, "%s", join != NULL ? join : "");
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL && n < STORE_MAX_ADDRESSES;
         tok = strtok_r(NULL, ",", &save)) {
        if (*tok != '\0' && strcmp(tok, self) != 0) {
            addrs[n++] = tok;
        }
    }
    struct store_client_config cfg = {.addresses = addrs,
                                      .n_addresses = n,
                                      .leader_timeout_ms = 5000,
                                      .request_timeout_ms = 30000,
                                      .dial = dial,
                                      .dial_arg = dial_arg};
    return store_client_init(cl, &cfg);
}

int main(int argc, char **argv)
{
    enum {
        OPT_LATENCY = 256,
        OPT_JOIN,
        OPT_VOTER,
        OPT_STANDBY,
        OPT_JOIN_TIMEOUT,
        OPT_THRESHOLD,
        OPT_TRAILING,
        OPT_DOMAIN,
        OPT_LOG_LEVEL,
        OPT_TLS_DIR,
        OPT_MANAGE_ROLES,
        OPT_ROLES_INTERVAL,
        OPT_GRACE,
        OPT_FIVE_AT,
        OPT_HANDOVER,
        OPT_HANDOVER_TIMEOUT,
        OPT_RECOVER,
        OPT_HELP
    };
    static const struct option opts[] = {
        {"id", required_argument, NULL, 'i'},
        {"address", required_argument, NULL, 'a'},
        {"dir", required_argument, NULL, 'd'},
        {"latency-ms", required_argument, NULL, OPT_LATENCY},
        {"join", required_argument, NULL, OPT_JOIN},
        {"voter", no_argument, NULL, OPT_VOTER},
        {"standby", no_argument, NULL, OPT_STANDBY},
        {"join-timeout-ms", required_argument, NULL, OPT_JOIN_TIMEOUT},
        {"snapshot-threshold", required_argument, NULL, OPT_THRESHOLD},
        {"snapshot-trailing", required_argument, NULL, OPT_TRAILING},
        {"failure-domain", required_argument, NULL, OPT_DOMAIN},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"tls-dir", required_argument, NULL, OPT_TLS_DIR},
        {"manage-roles", no_argument, NULL, OPT_MANAGE_ROLES},
        {"roles-interval-ms", required_argument, NULL, OPT_ROLES_INTERVAL},
        {"grace-ms", required_argument, NULL, OPT_GRACE},
        {"five-voters-at", required_argument, NULL, OPT_FIVE_AT},
        {"handover", no_argument, NULL, OPT_HANDOVER},
        {"handover-timeout-ms", required_argument, NULL, OPT_HANDOVER_TIMEOUT},
        {"recover", required_argument, NULL, OPT_RECOVER},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct store_node_config cfg = {0};
    const char *join = NULL;
    const char *tls_dir = NULL;
    const char *recover = NULL;
    bool manage_roles = false, handover = false;
    uint64_t roles_interval_ms = 1000, handover_timeout_ms = 30000;
    struct roles_policy policy = {.grace_ms = ROLES_DEFAULT_GRACE_MS,
                                  .five_voters_at = ROLES_DEFAULT_FIVE_VOTERS_AT};
    int role = -1;
    uint64_t v, join_timeout_ms = 60000;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (parse_uint(optarg, UINT64_MAX, &v) != 0 || v == 0) {
                return bad_flag("--id must be a non-zero integer, got \"%s\"", optarg);
            }
            cfg.id = v;
            break;
        case 'a':
            cfg.address = optarg;
            break;
        case 'd':
            cfg.dir = optarg;
            break;
        case OPT_LATENCY:
            if (parse_uint(optarg, 3600000, &v) != 0 || v == 0) {
                return bad_flag("--latency-ms must be 1..3600000, got \"%s\"", optarg);
            }
            cfg.latency_ms = (unsigned)v;
            break;
        case OPT_JOIN:
            if (optarg[0] == '\0') {
                return bad_flag("--join needs at least one address");
            }
            join = optarg;
            break;
        case OPT_VOTER:
        case OPT_STANDBY:
            if (role >= 0) {
                return bad_flag("give only one of --voter and --standby");
            }
            role = c == OPT_VOTER ? 0 : 1;
            break;
        case OPT_JOIN_TIMEOUT:
            if (parse_uint(optarg, 24u * 3600u * 1000u, &join_timeout_ms) != 0 || join_timeout_ms == 0) {
                return bad_flag("--join-timeout-ms must be a positive integer, got \"%s\"", optarg);
            }
            break;
        case OPT_THRESHOLD:
        case OPT_TRAILING:
            if (parse_uint(optarg, UINT32_MAX, &v) != 0 || v == 0) {
                return bad_flag("snapshot parameters must be positive integers, got \"%s\"", optarg);
            }
            if (c == OPT_THRESHOLD) {
                cfg.snapshot_threshold = (unsigned)v;
            } else {
                cfg.snapshot_trailing = (unsigned)v;
            }
            break;
        case OPT_DOMAIN:
            if (parse_uint(optarg, UINT64_MAX, &v) != 0) {
                return bad_flag("--failure-domain must be an integer, got \"%s\"", optarg);
            }
            cfg.failure_domain = v;
            break;
        case OPT_LOG_LEVEL:
            if (log_set_level_name(optarg) != 0) {
                return bad_flag("--log-level must be error, warn, info, debug or trace, got \"%s\"", optarg);
            }
            break;
        case OPT_TLS_DIR:
            tls_dir = optarg;
            break;
        case OPT_MANAGE_ROLES:
            manage_roles = true;
            break;
        case OPT_RECOVER:
            recover = optarg;
            break;
        case OPT_HANDOVER:
            handover = true;
            break;
        case OPT_ROLES_INTERVAL:
        case OPT_GRACE:
        case OPT_FIVE_AT:
        case OPT_HANDOVER_TIMEOUT:
            if (parse_uint(optarg, 24u * 3600u * 1000u, &v) != 0 || v == 0) {
                return bad_flag("%s must be a positive integer, got \"%s\"", argv[optind - 1], optarg);
            }
            if (c == OPT_ROLES_INTERVAL) {
                roles_interval_ms = v;
            } else if (c == OPT_GRACE) {
                policy.grace_ms = v;
            } else if (c == OPT_FIVE_AT) {
                if (v < 5) {
                    return bad_flag("--five-voters-at must be at least 5");
                }
                policy.five_voters_at = (unsigned)v;
            } else {
                handover_timeout_ms = v;
            }
            break;
        case OPT_HELP:
            fputs(usage, stdout);
            return 0;
        default:
            return bad_flag("unknown or incomplete option \"%s\"", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return bad_flag("unexpected argument \"%s\"", argv[optind]);
    }
    if (cfg.id == 0 || cfg.address == NULL || cfg.dir == NULL) {
        return bad_flag("--id, --address and --dir are required");
    }
    if (role >= 0 && join == NULL) {
        return bad_flag("--voter/--standby only make sense with --join");
    }
    if (role < 0) {
        role = 0;
    }
    if (join != NULL && cfg.id == 1) {
        return bad_flag("node 1 bootstraps a cluster and cannot --join one");
    }
    if (recover != NULL) {
        struct store_node_member members[64];
        char buf[4096], errmsg[GERR_MSG_SIZE];
        unsigned n;
        if (join != NULL || parse_members(recover, buf, sizeof buf, members, 64, &n) != 0) {
            return bad_flag("--recover wants ID=A.B.C.D:PORT[/voter|/standby|/spare],... and no --join");
        }
        if (store_node_recover(&cfg, members, n, errmsg) != 0) {
            fprintf(stderr, "gantry-store-node: %s\n", errmsg);
            return 1;
        }
        printf("RECOVERED %" PRIu64 " members=%u\n", cfg.id, n);
        return 0;
    }

    char replica[32];
    snprintf(replica, sizeof replica, "n%" PRIu64, cfg.id);
    log_set_replica(replica);

    /* Block the stop signals before dqlite starts its threads, so they inherit the mask and only
     * this thread ever sees SIGTERM/SIGINT (through sigtimedwait). */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

    struct store_node *node;
    struct peertls *relay = NULL;
    char errmsg[GERR_MSG_SIZE];
    char private_bind[128];
    int rv;
    if (tls_dir != NULL) {
        /* Abstract names are per host: derive it from the address, which is unique per host. */
        snprintf(private_bind, sizeof private_bind, "@gantry-store-%s", cfg.address);
        rv = peertls_start_dir(tls_dir, cfg.address, private_bind, &relay, errmsg);
        if (rv == 0) {
            LOG_INFO("peer TLS relay on %s in front of %s", cfg.address, private_bind);
        }
        if (rv != 0) {
            fprintf(stderr, "gantry-store-node: %s\n", errmsg);
            return 1;
        }
        cfg.bind_address = private_bind;
        cfg.dial = peertls_store_dial;
        cfg.dial_arg = relay;
    }
    rv = store_node_start(&cfg, &node, errmsg);
    if (rv != 0) {
        LOG_ERROR("%s (%s)", errmsg, gerr_name(rv));
        fprintf(stderr, "gantry-store-node: %s\n", errmsg);
        if (relay != NULL) {
            peertls_stop(relay);
        }
        return 1;
    }
    if (join != NULL) {
        rv = join_cluster(join, cfg.id, cfg.address, role, (unsigned)join_timeout_ms, &stop_set, cfg.dial,
                          cfg.dial_arg);
        if (rv != 0) {
            store_node_stop(node);
            if (relay != NULL) {
                peertls_stop(relay);
            }
            if (rv == GERR_CANCELED) {
                return 0;
            }
            fprintf(stderr, "gantry-store-node: node %" PRIu64 " could not join the cluster (%s)\n", cfg.id,
                    gerr_name(rv));
            return 1;
        }
    }
    struct roles_loop roles = {.self_id = cfg.id, .interval_ms = (unsigned)roles_interval_ms};
    char roles_list[STORE_MAX_ADDRESSES * 64];
    bool membership_ready = false;
    if (manage_roles || handover) {
        if (membership_client(&roles.cl, cfg.address, join, cfg.dial, cfg.dial_arg, roles_list,
                              sizeof roles_list) == 0) {
            membership_init(&roles.m, &roles.cl, &policy, cfg.dial, cfg.dial_arg, NULL);
            membership_ready = true;
        }
    }
    if (manage_roles && membership_ready) {
        pthread_mutex_init(&roles.mu, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* roles_main's deadlines are monotonic */
        pthread_cond_init(&roles.cond, &attr);
        pthread_condattr_destroy(&attr);
        if (pthread_create(&roles.thread, NULL, roles_main, &roles) != 0) {
            fprintf(stderr, "gantry-store-node: cannot start the roles thread\n");
            manage_roles = false;
        }
    }

    printf("READY %" PRIu64 " %s\n", cfg.id, cfg.address);
    fflush(stdout);

    int sig;
    for (;;) {
        sig = sigwaitinfo(&stop_set, NULL);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_INFO("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
    }
    if (manage_roles && membership_ready) {
        pthread_mutex_lock(&roles.mu);
        roles.stop = true;
        pthread_cond_signal(&roles.cond);
        pthread_mutex_unlock(&roles.mu);
        pthread_join(roles.thread, NULL);
        pthread_cond_destroy(&roles.cond);
        pthread_mutex_destroy(&roles.mu);
    }
    if (handover && membership_ready && sig == SIGTERM) {
        uint64_t t0 = clock_mono_ms(clock_system());
        rv = membership_handover(&roles.m, cfg.id, (unsigned)handover_timeout_ms);
        if (rv == 0) {
            LOG_INFO("handover done in %" PRIu64 " ms", clock_mono_ms(clock_system()) - t0);
        } else {
            LOG_WARN("handover incomplete: %s", roles.m.errmsg);
        }
    }
    if (membership_ready) {
        store_client_close(&roles.cl);
    }
    store_node_stop(node);
    if (relay != NULL) {
        peertls_stop(relay);
    }
    return 0;
}
