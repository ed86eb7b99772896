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
#include "raft/replica.h"
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
static bool stop_requested(void *arg)
{
    const sigset_t *set = arg;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(set, NULL, &zero);
    if (sig == SIGTERM || sig == SIGINT) {
        LOG_INFO("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return true;
    }
    return false;
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
        if (join != NULL || replica_parse_members(recover, buf, sizeof buf, members, 64, &n) != 0) {
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

    struct replica_config rcfg = {.id = cfg.id,
                                  .address = cfg.address,
                                  .dir = cfg.dir,
                                  .tls_dir = tls_dir,
                                  .latency_ms = cfg.latency_ms,
                                  .snapshot_threshold = cfg.snapshot_threshold,
                                  .snapshot_trailing = cfg.snapshot_trailing,
                                  .failure_domain = cfg.failure_domain,
                                  .join = join,
                                  .join_role = role == 0 ? PROTO_ROLE_VOTER : PROTO_ROLE_STANDBY,
                                  .join_timeout_ms = (unsigned)join_timeout_ms,
                                  .manage_roles = manage_roles,
                                  .policy = policy,
                                  .roles_interval_ms = (unsigned)roles_interval_ms,
                                  .should_stop = stop_requested,
                                  .should_stop_arg = &stop_set};
    struct replica *r;
    char errmsg[GERR_MSG_SIZE];
    int rv = replica_start(&rcfg, &r, errmsg);
    if (rv == GERR_CANCELED) {
        return 0;
    }
    if (rv != 0) {
        LOG_ERROR("%s (%s)", errmsg, gerr_name(rv));
        if (join != NULL) {
            fprintf(stderr, "gantry-store-node: node %" PRIu64 " could not join the cluster (%s): %s\n",
                    cfg.id, gerr_name(rv), errmsg);
        } else {
            fprintf(stderr, "gantry-store-node: %s\n", errmsg);
        }
        return 1;
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
    if (handover && sig == SIGTERM) {
        replica_handover(r, (unsigned)handover_timeout_ms);
    }
    replica_stop(r);
    return 0;
}
