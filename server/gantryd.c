/* gantryd: one Gantry replica.
 *
 *   gantryd [run] [config flags]     run a replica (joining first when the data dir is empty and
 *                                    join + a join token are configured)
 *   gantryd init [config flags] [--ca-cert F --ca-key F] [--admin-key-file F]
 *                [--join-token-file F [--join-token-uses N] [--join-token-ttl-s S]]
 *                                    make replica 1 of a new cluster, print the first Platform
 *                                    Admin key once, exit
 *   gantryd restore --from BACKUP [--backup-key-file F] [--secrets DIR] [init flags]
 *                                    make replica 1 of a new cluster from a backup, exit
 *   gantryd recover --members ID=ADDR[/role],... [--ca-key F] [config flags]
 *                                    rewrite this stopped replica's Raft configuration (quorum
 *                                    lost for good), optionally install the CA key, exit
 *   gantryd version | help
 *
 * Threads while running: the main thread waits for SIGTERM/SIGINT (blocked everywhere else);
 * one thread runs the libuv loop with the gRPC server and the admin endpoint; workers
 * (lib/jobs.h) run handler work; the replica runtime (raft/replica.h) runs dqlite, the peer
 * TLS relay and the roles thread; the writer thread (store/writer.h); a maintenance thread
 * applies migrations and keeps this replica's member row current.
 *
 * Clean stop (SIGTERM): the gRPC server stops accepting (GOAWAY) and gives in-flight calls up to
 * 10 s while the replica hands leadership over (and demotes itself when a replacement exists);
 * then everything stops in reverse order. SIGINT skips the handover. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/gate/audit.h"
#include "api/gate/authn.h"
#include "api/forward/fwd.h"
#include "api/gate/gate.h"
#include "api/proto/services.h"
#include "api/services/audit_svc.h"
#include "api/services/authn_models.h"
#include "api/services/cluster_svc.h"
#include "api/services/clusterdb.h"
#include "api/services/links_svc.h"
#include "api/services/policies_svc.h"
#include "api/services/warmpools_svc.h"
#include "api/services/pepper_ring.h"
#include "api/services/principals_svc.h"
#include "api/services/providers_svc.h"
#include "api/services/events_svc.h"
#include "api/services/sandboxes_svc.h"
#include "api/services/session_route.h"
#include "api/services/sessions_svc.h"
#include "api/services/tenants_svc.h"
#include "api/services/usage_svc.h"
#include "drivers/fake.h"
#include "drivers/k8s.h"
#include "drivers/process.h"
#include "leases/reconciler.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/jobs.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/cakeeper.h"
#include "raft/certrenew.h"
#include "raft/certrenew_wire.h"
#include "raft/certrevoke.h"
#include "raft/identity.h"
#include "raft/raftlog.h"
#include "raft/peertls.h"
#include "raft/replica.h"
#include "raft/roles.h"
#include "server/admin.h"
#include "server/backup_sched.h"
#include "server/carotate.h"
#include "server/bootstrap.h"
#include "server/config.h"
#include "server/console.h"
#include "server/egress_svc.h"
#include "server/lifecycle_hook.h"
#include "server/ns_metrics.h"
#include "server/grpc/health.h"
#include "server/grpc/reflection.h"
#include "server/grpc/server.h"
#include "server/grpc/status.h"
#include "server/oidc_config.h"
#include "server/renewer.h"
#include "server/replica_metrics.h"
#include "store/feed.h"
#include "server/rotate_key.h"
#include "store/migrate.h"
#include "store/node.h"
#include "store/pool.h"
#include "store/writer.h"

#ifndef GANTRY_VERSION
#define GANTRY_VERSION "0.1.0-dev"
#endif

extern char **environ;

#define SHUTDOWN_GRACE_MS   10000u
#define HANDOVER_TIMEOUT_MS 30000u
#define JOIN_TIMEOUT_MS     120000u

/* Flags that belong to a subcommand, not to the configuration. */
struct sub_flags {
    const char *ca_cert, *ca_key, *admin_key_file, *join_token_file, *from, *secrets, *members,
        *backup_key_file;
    unsigned join_token_uses, join_token_ttl_s;
    bool keep_cluster_id; /* restore: keep the backup's cluster id instead of a new one */
};

static int take_flags(int *argc, char **argv, struct sub_flags *sf, char *errmsg)
{
    static const char *names[] = {
        "--ca-cert", "--ca-key",  "--admin-key-file",  "--join-token-file",  "--from",
        "--secrets", "--members", "--join-token-uses", "--join-token-ttl-s", "--backup-key-file"};
    const char **slots[] = {&sf->ca_cert, &sf->ca_key,         &sf->admin_key_file, &sf->join_token_file,
                            &sf->from,    &sf->secrets,        &sf->members,        NULL,
                            NULL,         &sf->backup_key_file};
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--keep-cluster-id") == 0) { /* the one flag without a value */
            sf->keep_cluster_id = true;
            continue;
        }
        int which = -1;
        const char *value = NULL;
        for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++) {
            size_t n = strlen(names[k]);
            if (strcmp(argv[i], names[k]) == 0) {
                which = k;
                if (i + 1 >= *argc) {
                    gerr_set(errmsg, "%s needs a value", names[k]);
                    return GERR_INVAL;
                }
                value = argv[++i];
            } else if (strncmp(argv[i], names[k], n) == 0 && argv[i][n] == '=') {
                which = k;
                value = argv[i] + n + 1;
            }
            if (which >= 0) {
                break;
            }
        }
        if (which < 0) {
            argv[out++] = argv[i];
            continue;
        }
        if (slots[which] != NULL) {
            *slots[which] = value;
        } else {
            char *end;
            unsigned long v = strtoul(value, &end, 10);
            if (*value == '\0' || *end != '\0' || v == 0 || v > 100000000ul) {
                gerr_set(errmsg, "%s must be a positive integer", names[which]);
                return GERR_INVAL;
            }
            *(which == 7 ? &sf->join_token_uses : &sf->join_token_ttl_s) = (unsigned)v;
        }
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

static int load_config(int argc, char **argv, struct config *cfg, bool *help, char *errmsg)
{
    config_init_defaults(cfg);
    int rv = config_apply_env(cfg, environ, errmsg);
    if (rv == 0) {
        rv = config_apply_flags(cfg, argc, argv, help, errmsg);
    }
    if (rv == 0 && *help) {
        return 0;
    }
    if (rv == 0 && cfg->config_file[0] != '\0') {
        rv = config_load_file(cfg, cfg->config_file, errmsg);
    }
    if (rv == 0) {
        rv = config_read_join_token_file(cfg, errmsg);
    }
    if (rv == 0) {
        rv = config_validate(cfg, errmsg);
    }
    if (rv == 0) {
        log_set_level_name(cfg->log_level);
        log_set_replica(cfg->replica_name);
    }
    return rv;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gantryd [run|init|restore|recover|config show|version|help] [flags]\n\n"
            "  run (default)  run this replica; with an empty data dir and --join plus a join token\n"
            "                 (GANTRY_JOIN_TOKEN or --join-token-file), join the cluster first\n"
            "  init           make replica 1 of a new cluster in an empty data dir and print the\n"
            "                 first Platform Admin API key once. Extra flags: --ca-cert F --ca-key F\n"
            "                 (use an existing CA), --admin-key-file F (write the key there, 0600,\n"
            "                 instead of stdout), --join-token-file F [--join-token-uses N]\n"
            "                 [--join-token-ttl-s S] (register a pre-shared join token)\n"
            "  restore        like init, from a backup: --from FILE [--secrets OLD_DATA_DIR/secrets]\n"
            "                 [--backup-key-file KEYFILE] (the key of an encrypted backup; else "
            "GANTRY_BACKUP_KEY)\n"
            "                 [--keep-cluster-id] (keep the backup's cluster id instead of a new one)\n"
            "  recover        disaster recovery on a stopped replica: --members ID=A.B.C.D:PORT[/role],...\n"
            "                 [--ca-key F] (also make it a CA holder, so it can admit new replicas)\n"
            "  rotate-pepper  add a version of the API-key pepper (new keys use it, older keys are\n"
            "                 rehashed at their next use), then print what pepper-status prints\n"
            "  pepper-status  the current API-key pepper version and how many keys each version hashed\n"
            "  rotate-ca begin|finish|status\n"
            "                 rotate the cluster CA with an overlap: begin (on a CA holder) makes a new CA\n"
            "                 that every replica trusts beside the old one and renews from; finish drops\n"
            "                 the old CA once every member presents a new certificate; status shows both\n"
            "  config show    print the effective configuration (flags, environment, --config file\n"
            "                 and defaults) as a JSON file gantryd accepts back; secrets redacted\n"
            "  version        print the version\n\n"
            "Configuration flags (also GANTRY_* environment variables and a JSON --config file):\n\n");
    struct buf b;
    buf_init(&b);
    config_help(&b);
    fputs((const char *)b.data, f);
    buf_close(&b);
    fprintf(
        f,
        "\nExamples:\n"
        "  gantryd init --data-dir /var/lib/gantry --peer-address 10.0.0.1:9443 --api-address 10.0.0.1:8443\n"
        "  gantryd --data-dir /var/lib/gantry --peer-address 10.0.0.1:9443 --api-address 10.0.0.1:8443\n"
        "  GANTRY_JOIN_TOKEN=gjt_... gantryd --replica-id 2 --join 10.0.0.1:8443 ...\n"
        "Docs: docs/operations.md\n");
}

/* --- init / restore / recover --- */

static int show_admin_key(const char *key, const char *file)
{
    char errmsg[GERR_MSG_SIZE];
    if (key[0] == '\0') {
        printf("The restored cluster keeps the old cluster's API keys (its secrets were given).\n");
        return 0;
    }
    if (file != NULL) {
        char line[APIKEY_LEN + 2];
        snprintf(line, sizeof line, "%s\n", key);
        if (identity_write_file(file, line, strlen(line), 0600, errmsg) != 0) {
            fprintf(stderr, "gantryd: %s\n", errmsg);
            return 1;
        }
        printf("The first Platform Admin API key was written to %s (mode 0600). It is not stored anywhere\n"
               "else: keep it safe, then delete that file.\n",
               file);
        return 0;
    }
    printf("The first Platform Admin API key (shown once, never stored in clear):\n\n    %s\n\n"
           "Use it as \"authorization: Bearer <key>\" or GANTRY_TOKEN.\n",
           key);
    return 0;
}

static int cmd_init(struct config *cfg, const struct sub_flags *sf, bool restore)
{
    char errmsg[GERR_MSG_SIZE] = "";
    char key[APIKEY_LEN + 1];
    if (restore && sf->from == NULL) {
        fprintf(stderr, "gantryd restore: --from BACKUP is required\n");
        return 2;
    }
    if (!restore && sf->keep_cluster_id) {
        fprintf(stderr,
                "gantryd init: --keep-cluster-id is a restore flag (a new cluster has no id to keep)\n");
        return 2;
    }
    struct bootstrap_init_opts o = {.ca_cert_file = sf->ca_cert,
                                    .ca_key_file = sf->ca_key,
                                    .join_token_file = sf->join_token_file,
                                    .join_token_uses = sf->join_token_uses,
                                    .join_token_ttl_s = sf->join_token_ttl_s,
                                    .restore_from = restore ? sf->from : NULL,
                                    .secrets_dir = restore ? sf->secrets : NULL,
                                    .backup_key_file = restore ? sf->backup_key_file : NULL,
                                    .keep_cluster_id = restore && sf->keep_cluster_id};
    int rv = bootstrap_init(cfg, &o, key, errmsg);
    if (rv != 0) {
        fprintf(stderr, "gantryd %s: %s\n", restore ? "restore" : "init", errmsg);
        return 1;
    }
    printf("Initialised replica 1 of a new cluster in %s.\n", cfg->data_dir);
    rv = show_admin_key(key, sf->admin_key_file);
    memset(key, 0, sizeof key);
    printf("Start it with: gantryd --data-dir %s (and the same flags)\n", cfg->data_dir);
    return rv;
}

static int cmd_recover(struct config *cfg, const struct sub_flags *sf)
{
    char errmsg[GERR_MSG_SIZE] = "";
    struct store_node_member members[REPLICA_MAX_MEMBERS];
    char buf[8192], store_dir[4096];
    unsigned n;
    if (sf->members == NULL ||
        replica_parse_members(sf->members, buf, sizeof buf, members, REPLICA_MAX_MEMBERS, &n) != 0) {
        fprintf(stderr, "gantryd recover: --members wants ID=A.B.C.D:PORT[/voter|/standby|/spare],...\n");
        return 2;
    }
    if (!identity_exists(cfg->data_dir)) {
        fprintf(stderr, "gantryd recover: %s holds no replica\n", cfg->data_dir);
        return 1;
    }
    /* --ca-key F: make this survivor a CA holder, so that the recovered cluster can admit new
     * replicas (one that joined holds no CA key: docs/operations.md). Checked before anything
     * changes, installed after the recovery. */
    char *ca_key = NULL;
    if (sf->ca_key != NULL) {
        if (file_read_all(sf->ca_key, 65536, &ca_key, NULL, errmsg) != 0 ||
            identity_check_ca_key(cfg->data_dir, ca_key, errmsg) != 0) {
            fprintf(stderr, "gantryd recover: --ca-key: %s; nothing was changed\n", errmsg);
            mem_free(ca_key);
            return 1;
        }
    }
    identity_path(cfg->data_dir, "store", store_dir, sizeof store_dir);
    struct store_node_config nc = {
        .id = cfg->replica_id, .address = bootstrap_peer_address(cfg), .dir = store_dir};
    int rc = 0;
    if (store_node_recover(&nc, members, n, errmsg) != 0) {
        fprintf(stderr, "gantryd recover: %s\n", errmsg);
        rc = 1;
    } else if (ca_key != NULL && identity_install_ca_key(cfg->data_dir, ca_key, errmsg) != 0) {
        fprintf(stderr, "gantryd recover: recovered, but the CA key was not installed: %s\n", errmsg);
        rc = 1;
    } else {
        printf("Recovered: replica %" PRIu64
               " now believes the cluster is %u member(s). Start the listed members\n"
               "with their data directories; replace the lost ones by joining new replicas.\n",
               cfg->replica_id, n);
        if (ca_key != NULL) {
            printf("It now holds the cluster CA key, so it can admit them.\n");
        }
    }
    if (ca_key != NULL) {
        memset(ca_key, 0, strlen(ca_key));
    }
    mem_free(ca_key);
    return rc;
}

/* --- run --- */

struct daemon {
    struct config *cfg;
    struct identity id;
    struct identity_secrets secrets;
    struct replica *replica;
    struct store_writer writer;
    bool writer_started;
    struct store_pool pool;
    bool pool_started;
    struct jobs jobs;
    bool jobs_started;
    struct cluster_svc csvc;
    struct principals_svc psvc;
    /* how psvc reads principals, role bindings and API keys, and ListIdentities linked
     * identities (preads[3]): their models, kept by the feed */
    struct kind_reads preads[4];
    struct authn_models_src amodels; /* authentication's view of those models (authn_models.h) */
    struct links_reads lreads;
    struct pepper_ring peppers; /* API-key pepper versions (api/services/pepper_ring.h) */
    bool peppers_ready;
    struct res_env env;
    struct sandboxes_svc ssvc;
    struct events_svc esvc; /* Events.Watch, fed by the feed like ssvc's hub */
    struct warmpools_svc wsvc;
    struct feed feed;             /* the change feed's one follower on this replica (store/feed.h) */
    struct kind_model *ns_model;  /* the namespaces model, kept by the feed (api/services/kind_model.h) */
    struct kind_reads ns_reads;   /* how Namespaces.Get and List read */
    struct kind_model *q_model;   /* the quotas model, usage counters included (api/services/tenants_svc.h) */
    struct kind_reads q_reads;    /* how Quotas.Get and List read */
    struct kind_model *pol_model; /* the policies model (api/services/policies_svc.h) */
    struct kind_model *prov_model;   /* the providers model (api/services/providers_svc.h) */
    struct kind_model *grants_model; /* provider grants, for ListGrants (providers_svc.h) */
    struct kind_model *wp_model;     /* the warm pools model (api/services/warmpools_svc.h) */
    struct policies_svc polsvc;
    bool feed_ready;
    struct sessions_svc sesvc; /* Sandboxes.Logs */
    struct providers_svc prov;
    struct authn *authn;
    struct admission *admission;
    struct audit_sink *sink;
    struct fwd_client *fwd_client; /* forwarded calls (with forward_writes) and catch-up probes */
    struct fwd_server *fwd_server;
    char fwd_path[320];
    struct sroute_server *sroute; /* routed sessions other replicas send here */
    char sroute_path[320];
    char renew_path[320]; /* the renewal service's socket (server/renewer.h) */
    char store_dir[4096];
    struct catchup catchup; /* the rule of planned leadership transfers (raft/catchup.h) */
    /* This node's Raft log as the probes read it (raft/raftlog.h): asked every second by the lag
     * and readiness checks, so what was scanned is kept. */
    struct raftlog_reader *log_reader;
    struct oidc *oidc;
    struct driver *driver;
    struct reconciler *reconciler;
    char lease_holder[128];      /* the reconciler's lease holder identity */
    struct lifecycle_hook *hook; /* the lifecycle webhook (server/lifecycle_hook.h); NULL: off */
    struct gate *gate;
    struct nsstats *nsstats;         /* per-namespace call counters (api/gate/nsstats.h) */
    struct ns_metrics *nsm;          /* per-namespace gauges (server/ns_metrics.h) */
    struct certrevoke_sync *revsync; /* revoked certificates into the relay (raft/certrevoke.h) */
    struct renew_server *renew_srv;  /* signs members' renewals on a CA holder (server/renewer.h) */
    struct renewer *renewer;         /* renews this replica's certificate while it runs */
    struct cakeeper *ca;             /* the CA that signs now, and the trusted ones (raft/cakeeper.h) */
    struct carotate_sync *casync;    /* applies a CA rotation (server/carotate.h) */
    struct backup_sched *bsched;     /* scheduled backups (server/backup_sched.h), NULL when off */
    struct egress_svc *egress;       /* the egress relay (server/egress_svc.h); NULL when not configured */
    char scratch[4096];
    /* loop thread */
    uv_loop_t loop;
    uv_async_t stop_async;
    pthread_t loop_thread;
    struct grpc_server *server;
    struct health *health;
    struct reflection *refl;
    struct admin *admin;
    struct console *console; /* the operator console (config console), NULL when off */
    /* maintenance thread */
    pthread_t maint_thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping; /* under mu */
    bool migrated; /* under mu */
    char maint_err[GERR_MSG_SIZE];
    int64_t old_pepper_keys; /* under mu: keys not revoked on an older pepper version; -1 unknown */
    unsigned pepper_current; /* under mu: the current pepper version when it was counted */
    /* The members' Raft lag as this replica measured it while its node led (under mu; n_lags 0
     * otherwise): gantry_raft_member_lag_entries. */
    struct member_lag {
        uint64_t id;
        int64_t entries;   /* -1: not measurable (no answer, or not in this log) */
        bool standby_site; /* the member advertises ROLES_STANDBY_SITE (set where measured) */
    } lags[REPLICA_MAX_MEMBERS];
    unsigned n_lags;
    /* The same figures as every replica knows them (under mu): measured here while this replica's
     * node leads, asked of the leader's replica otherwise, once a second; for Cluster.ListMembers. */
    struct member_lag known_lags[REPLICA_MAX_MEMBERS];
    unsigned n_known_lags;
    uint64_t known_lags_ms;     /* monotonic time they were learnt, 0: never */
    uint64_t known_lags_leader; /* the node that led when they were measured */
    /* Readiness (under mu): this node's log holds the leader's last entries (catchup_self). Set by
     * one success, cleared after CAUGHT_UP_MISSES failures in a row. */
    bool caught_up;
    unsigned catchup_misses;
    char catchup_err[GERR_MSG_SIZE];
};

/* Checks in a row that find this node without the leader's last entries before /readyz says so: a
 * follower keeping up can miss the newest entries of a busy leader once. */
#define CAUGHT_UP_MISSES 3u

static bool is_stopping(struct daemon *d)
{
    pthread_mutex_lock(&d->mu);
    bool s = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return s;
}

static bool ready(void *data, char *reason, size_t len)
{
    struct daemon *d = data;
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    pthread_mutex_lock(&d->mu);
    bool migrated = d->migrated, stopping = d->stopping, caught_up = d->caught_up;
    char err[GERR_MSG_SIZE], cerr[GERR_MSG_SIZE];
    snprintf(err, sizeof err, "%s", d->maint_err);
    snprintf(cerr, sizeof cerr, "%s", d->catchup_err);
    pthread_mutex_unlock(&d->mu);
    bool member = false;
    for (unsigned i = 0; i < v->n; i++) {
        member = member || v->nodes[i].id == d->cfg->replica_id;
    }
    bool ok = false;
    if (stopping) {
        snprintf(reason, len, "shutting down");
    } else if (!v->valid) {
        snprintf(reason, len, "cluster membership not known yet: %.200s", v->errmsg);
    } else if (!member) {
        snprintf(reason, len, "this replica is not a member of the cluster");
    } else if (v->leader_id == 0) {
        snprintf(reason, len, "the cluster has no leader");
    } else if (!migrated) {
        snprintf(reason, len, "schema migrations not applied yet%s%.200s", err[0] != '\0' ? ": " : "", err);
    } else if (!caught_up) {
        snprintf(reason, len, "not caught up with the leader's Raft log%s%.300s", cerr[0] != '\0' ? ": " : "",
                 cerr);
    } else {
        ok = true;
    }
    mem_free(v);
    return ok;
}

/* Routed sessions (sessions_svc.h): the other members' peer addresses, and a dial to one. */
static unsigned route_peers(void *arg, char (*out)[64], unsigned max)
{
    struct daemon *d = arg;
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    unsigned n = 0;
    for (unsigned i = 0; v->valid && i < v->n && n < max; i++) {
        size_t len = strlen(v->nodes[i].address);
        if (v->nodes[i].id != d->cfg->replica_id && len > 0 && len < 64) { /* "a.b.c.d:port" fits */
            memcpy(out[n++], v->nodes[i].address, len + 1);
        }
    }
    mem_free(v);
    return n;
}

static int route_dial(void *arg, const char *address, int *fd, char *errmsg)
{
    struct daemon *d = arg;
    struct peertls *relay = d->replica != NULL ? replica_relay(d->replica) : NULL;
    if (relay == NULL) {
        gerr_set(errmsg, "no peer channel");
        return GERR_UNAVAILABLE;
    }
    return peertls_dial_alpn(relay, address, SROUTE_ALPN, 2000, fd, errmsg);
}

/* The peer address of the replica beside the dqlite leader, when it is another one (gate.h). */
static bool leader_address(void *data, char *out, size_t len)
{
    struct daemon *d = data;
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    bool other = false;
    if (v->valid && v->leader_id != 0 && v->leader_id != d->cfg->replica_id) {
        for (unsigned i = 0; i < v->n; i++) {
            if (v->nodes[i].id == v->leader_id && v->nodes[i].address[0] != '\0') {
                snprintf(out, len, "%s", v->nodes[i].address);
                other = true;
            }
        }
    }
    mem_free(v);
    return other;
}

/* A catch-up probe from the replica beside the leader: the last entries of this node's log. */
static void answer_probe(struct daemon *d, struct fwd_reply *reply)
{
    struct raftlog_entry_id ids[RAFTLOG_PROBE_TAIL];
    unsigned n = 0;
    char err[GERR_MSG_SIZE] = "";
    int rv = raftlog_reader_tail(d->log_reader, ids, RAFTLOG_PROBE_TAIL, &n, err);
    if (rv != 0) {
        fwd_reply(reply, GRPC_STATUS_UNAVAILABLE, err, NULL, 0);
        return;
    }
    Gantry__Internal__V1__LogEntryId e[RAFTLOG_PROBE_TAIL], *ep[RAFTLOG_PROBE_TAIL];
    for (unsigned i = 0; i < n; i++) {
        gantry__internal__v1__log_entry_id__init(&e[i]);
        e[i].term = ids[i].term;
        e[i].size = ids[i].size;
        e[i].crc = ids[i].crc;
        ep[i] = &e[i];
    }
    fwd_response resp = GANTRY__INTERNAL__V1__FORWARD_RESPONSE__INIT;
    resp.message = "";
    resp.n_log_tail = n;
    resp.log_tail = ep;
    fwd_reply_response(reply, &resp);
}

/* Another replica asks for the members' lag this replica measured while its node led. */
static void answer_lags(struct daemon *d, struct fwd_reply *reply)
{
    struct member_lag lags[REPLICA_MAX_MEMBERS];
    pthread_mutex_lock(&d->mu);
    unsigned n = d->n_lags;
    memcpy(lags, d->lags, sizeof *lags * n);
    pthread_mutex_unlock(&d->mu);
    if (n == 0) {
        fwd_reply(reply, GRPC_STATUS_FAILED_PRECONDITION, "this replica's node does not lead", NULL, 0);
        return;
    }
    Gantry__Internal__V1__MemberLag e[REPLICA_MAX_MEMBERS], *ep[REPLICA_MAX_MEMBERS];
    for (unsigned i = 0; i < n; i++) {
        gantry__internal__v1__member_lag__init(&e[i]);
        e[i].id = lags[i].id;
        e[i].entries = lags[i].entries;
        ep[i] = &e[i];
    }
    fwd_response resp = GANTRY__INTERNAL__V1__FORWARD_RESPONSE__INIT;
    resp.status = GRPC_STATUS_OK;
    resp.message = "";
    resp.n_lags = n;
    resp.lags = ep;
    resp.lags_leader = d->cfg->replica_id;
    fwd_reply_response(reply, &resp);
}

/* A call another replica forwarded here, a catch-up probe or a lag query. */
static void forwarded(void *data, fwd_request *req, struct fwd_reply *reply)
{
    struct daemon *d = data;
    if (req->probe_log || req->member_lags) {
        if (req->probe_log) {
            answer_probe(d, reply);
        } else {
            answer_lags(d, reply);
        }
        gantry__internal__v1__forward_request__free_unpacked(req, NULL);
        return;
    }
    gate_forwarded(d->gate, req, reply);
}

/* The catch-up rule's pause hooks: this replica's writer. */
static void pause_writes(void *arg)
{
    struct daemon *d = arg;
    if (d->writer_started && store_writer_pause(&d->writer, 2000) != 0) {
        LOG_WARN("transfer: a write batch still runs 2 s after the pause; measuring the target anyway");
    }
}

static void resume_writes(void *arg)
{
    struct daemon *d = arg;
    if (d->writer_started) {
        store_writer_resume(&d->writer);
    }
}

/* A question to another replica over the peer channel, answered by forwarded() there without
 * running a method: its log's last entries (@probe) or the members' lag it measured. 0 with
 * *@resp (free it), or fwd_client_call's error. Waits up to a second. */
static int peer_ask(struct daemon *d, const char *address, bool probe, fwd_response **resp, char *errmsg)
{
    fwd_request fr = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    fr.method = "";
    fr.peer = "";
    fr.idem_key = "";
    fr.probe_log = probe;
    fr.member_lags = !probe;
    fr.origin_replica = d->cfg->replica_id;
    bool sent = false;
    return fwd_client_call(d->fwd_client, address, &fr, 1000, resp, &sent, errmsg);
}

/* catchup_probe_fn: ask member @node_id's replica for its log's last entries. */
static int probe_member(void *arg, uint64_t node_id, struct raftlog_entry_id *tail, unsigned *n, char *errmsg)
{
    struct daemon *d = arg;
    *n = 0;
    char address[256] = "";
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    for (unsigned i = 0; i < v->n; i++) {
        if (v->nodes[i].id == node_id) {
            snprintf(address, sizeof address, "%s", v->nodes[i].address);
        }
    }
    mem_free(v);
    if (address[0] == '\0' || d->fwd_client == NULL) {
        gerr_set(errmsg, "member %" PRIu64 " is not in this replica's membership view", node_id);
        return GERR_NOTFOUND;
    }
    fwd_response *resp = NULL;
    int rv = peer_ask(d, address, true, &resp, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (resp->status != GRPC_STATUS_OK) {
        gerr_set(errmsg, "%s", resp->message);
        rv = GERR_UNAVAILABLE;
    } else {
        for (size_t i = 0; i < resp->n_log_tail && i < RAFTLOG_PROBE_TAIL; i++) {
            tail[i] = (struct raftlog_entry_id){.term = resp->log_tail[i]->term,
                                                .size = resp->log_tail[i]->size,
                                                .crc = resp->log_tail[i]->crc};
            (*n)++;
        }
    }
    gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
    return rv;
}

/* Admission, queues, the writer and the audit sink (docs/security.md, "Load and admission limits"). */
static void load_metrics(struct daemon *d, struct buf *out)
{
    struct gate_stats gs;
    gate_stats(d->gate, &gs);
    unsigned depth[JOBS_CLASSES], wpending;
    uint64_t shed, wrefused, wexpired; /* the gate counts what the classes shed */
    for (unsigned c = 0; c < JOBS_CLASSES; c++) {
        jobs_depth(&d->jobs, c, &depth[c], &shed);
    }
    store_writer_stats(&d->writer, &wpending, &wrefused, &wexpired);
    struct audit_sink_stats as;
    audit_sink_stats(d->sink, &as);
    struct store_writer_stats_full ws;
    store_writer_stats_full(&d->writer, &ws);
    buf_printf(
        out,
        "# HELP gantry_store_requests_total Requests this replica sent to dqlite nodes (every connection).\n"
        "# TYPE gantry_store_requests_total counter\ngantry_store_requests_total %" PRIu64 "\n"
        "# HELP gantry_write_batches_total Write transactions this replica's writer committed.\n"
        "# TYPE gantry_write_batches_total counter\ngantry_write_batches_total %" PRIu64 "\n"
        "# HELP gantry_write_batched_requests_total Requests those transactions answered.\n"
        "# TYPE gantry_write_batched_requests_total counter\ngantry_write_batched_requests_total %" PRIu64
        "\n",
        store_conn_requests_total(), ws.batches, ws.requests);
    /* Batch sizes as a Prometheus histogram: cumulative buckets le=1, 2, 4, ... 128, +Inf. */
    buf_printf(out, "# HELP gantry_write_batch_size Requests per committed write transaction.\n"
                    "# TYPE gantry_write_batch_size histogram\n");
    uint64_t cum = 0;
    for (unsigned i = 0; i < STORE_WRITER_SIZE_BUCKETS; i++) {
        cum += ws.size_buckets[i];
        if (i + 1 < STORE_WRITER_SIZE_BUCKETS) {
            buf_printf(out, "gantry_write_batch_size_bucket{le=\"%u\"} %" PRIu64 "\n", 1u << i, cum);
        }
    }
    buf_printf(out,
               "gantry_write_batch_size_bucket{le=\"+Inf\"} %" PRIu64 "\ngantry_write_batch_size_sum %" PRIu64
               "\ngantry_write_batch_size_count %" PRIu64 "\n",
               cum, ws.requests, ws.batches);
    buf_printf(
        out,
        "# HELP gantry_forwarded_total Mutations forwarded between replicas: sent to the leader's replica, "
        "received from others, and run here after forwarding failed.\n"
        "# TYPE gantry_forwarded_total counter\n"
        "gantry_forwarded_total{direction=\"out\"} %" PRIu64 "\n"
        "gantry_forwarded_total{direction=\"in\"} %" PRIu64 "\n"
        "gantry_forwarded_total{direction=\"fallback\"} %" PRIu64 "\n",
        gs.forwarded_out, gs.forwarded_in, gs.forward_fallbacks);
    buf_printf(
        out,
        "# HELP gantry_calls_refused_total Calls answered without running them, by reason.\n"
        "# TYPE gantry_calls_refused_total counter\n"
        "gantry_calls_refused_total{reason=\"admission\"} %" PRIu64 "\n"
        "gantry_calls_refused_total{reason=\"overloaded\"} %" PRIu64 "\n"
        "gantry_calls_refused_total{reason=\"expired\"} %" PRIu64 "\n"
        "# HELP gantry_call_queue_depth Calls waiting for a worker, by class.\n"
        "# TYPE gantry_call_queue_depth gauge\n"
        "gantry_call_queue_depth{class=\"verified\"} %u\ngantry_call_queue_depth{class=\"unverified\"} %u\n"
        "# HELP gantry_write_queue_depth Writes waiting for the replica's writer.\n"
        "# TYPE gantry_write_queue_depth gauge\ngantry_write_queue_depth %u\n"
        "# HELP gantry_writes_refused_total Writes refused (queue full) or dropped (deadline passed in the "
        "queue).\n"
        "# TYPE gantry_writes_refused_total counter\n"
        "gantry_writes_refused_total{reason=\"full\"} %" PRIu64 "\n"
        "gantry_writes_refused_total{reason=\"expired\"} %" PRIu64 "\n"
        "# HELP gantry_audit_sink_events_total Events outside a transaction given to the audit sink, and "
        "how they were written.\n"
        "# TYPE gantry_audit_sink_events_total counter\n"
        "gantry_audit_sink_events_total{kind=\"recorded\"} %" PRIu64 "\n"
        "gantry_audit_sink_events_total{kind=\"aggregated\"} %" PRIu64 "\n"
        "gantry_audit_sink_events_total{kind=\"overflow\"} %" PRIu64 "\n"
        "# HELP gantry_audit_sink_rows_total Audit rows the sink committed.\n"
        "# TYPE gantry_audit_sink_rows_total counter\ngantry_audit_sink_rows_total %" PRIu64 "\n"
        "# HELP gantry_audit_sink_write_failures_total Sink flushes whose transaction failed (rows "
        "dropped).\n"
        "# TYPE gantry_audit_sink_write_failures_total counter\ngantry_audit_sink_write_failures_total "
        "%" PRIu64 "\n",
        gs.refused_admission, gs.shed_overloaded, gs.dropped_expired, depth[0], depth[1], wpending, wrefused,
        wexpired, as.recorded, as.aggregated, as.overflow, as.rows_written, as.write_failures);
}

static void metrics(void *data, struct buf *out)
{
    struct daemon *d = data;
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    unsigned voters = 0, reachable = 0, standbys = 0;
    int role = -1;
    for (unsigned i = 0; i < v->n; i++) {
        voters += v->nodes[i].role == PROTO_ROLE_VOTER;
        standbys += v->nodes[i].role == PROTO_ROLE_STANDBY;
        reachable += v->nodes[i].online;
        if (v->nodes[i].id == d->cfg->replica_id) {
            role = v->nodes[i].role;
        }
    }
    buf_printf(out,
               "# HELP gantry_cluster_members Members in the cluster's Raft configuration, by role.\n"
               "# TYPE gantry_cluster_members gauge\n"
               "gantry_cluster_members{role=\"voter\"} %u\ngantry_cluster_members{role=\"standby\"} %u\n"
               "gantry_cluster_members{role=\"spare\"} %u\n"
               "# HELP gantry_cluster_members_reachable Members that answered the last probe.\n"
               "# TYPE gantry_cluster_members_reachable gauge\ngantry_cluster_members_reachable %u\n"
               "# HELP gantry_replica_is_leader 1 if this replica's node leads the cluster.\n"
               "# TYPE gantry_replica_is_leader gauge\ngantry_replica_is_leader %d\n"
               "# HELP gantry_replica_role This replica's role: 0 voter, 1 standby, 2 spare, -1 unknown.\n"
               "# TYPE gantry_replica_role gauge\ngantry_replica_role %d\n",
               voters, standbys, v->n - voters - standbys, reachable, v->leader_id == d->cfg->replica_id,
               role);
    mem_free(v);
    if (d->reconciler != NULL) {
        struct reconciler_status rs;
        reconciler_status(d->reconciler, &rs);
        buf_printf(out,
                   "# HELP gantry_lease_held 1 while this replica holds the reconciler lease.\n"
                   "# TYPE gantry_lease_held gauge\ngantry_lease_held %d\n"
                   "# HELP gantry_lease_epoch The reconciler lease epoch this replica holds (0: none).\n"
                   "# TYPE gantry_lease_epoch gauge\ngantry_lease_epoch %" PRIu64 "\n"
                   "# HELP gantry_reconciler_total Reconciler actions by kind, since this replica started.\n"
                   "# TYPE gantry_reconciler_total counter\n"
                   "gantry_reconciler_total{kind=\"resync\"} %" PRIu64 "\n"
                   "gantry_reconciler_total{kind=\"create\"} %" PRIu64 "\n"
                   "gantry_reconciler_total{kind=\"delete\"} %" PRIu64 "\n"
                   "gantry_reconciler_total{kind=\"driver_error\"} %" PRIu64 "\n"
                   "gantry_reconciler_total{kind=\"stale_refusal\"} %" PRIu64 "\n"
                   "gantry_reconciler_total{kind=\"audit_event\"} %" PRIu64 "\n",
                   rs.held, rs.epoch, rs.resyncs, rs.creates, rs.deletes, rs.driver_errors, rs.stale_refusals,
                   rs.audit_events);
    }
    if (d->bsched != NULL) {
        backup_sched_metrics(d->bsched, out);
    }
    buf_printf(out,
               "# HELP gantry_quota_soft_exceeded_total Creates allowed past a soft quota.\n"
               "# TYPE gantry_quota_soft_exceeded_total counter\ngantry_quota_soft_exceeded_total %" PRIu64
               "\n",
               tenants_soft_exceeded());
    buf_printf(out,
               "# HELP gantry_ca_key_held 1 when this replica holds the cluster CA key (it can sign joiners' "
               "certificates and renew its own), 0 when it joined and does not.\n"
               "# TYPE gantry_ca_key_held gauge\ngantry_ca_key_held %d\n",
               cakeeper_can_sign(d->ca) ? 1 : 0);
    buf_printf(
        out,
        "# HELP gantry_ca_rotation_phase The cluster CA rotation this replica has applied: 0 none yet, 1 "
        "overlap (the old and the new CA are trusted), 2 done (only the new CA).\n"
        "# TYPE gantry_ca_rotation_phase gauge\ngantry_ca_rotation_phase %d\n",
        (int)carotate_sync_phase(d->casync));
    pthread_mutex_lock(&d->mu);
    int64_t old_keys = d->old_pepper_keys;
    unsigned pepper_current = d->pepper_current;
    pthread_mutex_unlock(&d->mu);
    if (old_keys >= 0) {
        buf_printf(
            out,
            "# HELP gantry_apikey_pepper_version The current API-key pepper version.\n"
            "# TYPE gantry_apikey_pepper_version gauge\ngantry_apikey_pepper_version %u\n"
            "# HELP gantry_apikeys_old_pepper API keys (not revoked) still hashed with an older pepper "
            "version than the current one; each is rehashed at its next use.\n"
            "# TYPE gantry_apikeys_old_pepper gauge\ngantry_apikeys_old_pepper %" PRId64 "\n",
            pepper_current, old_keys);
    }
    load_metrics(d, out);
    grpc_server_metrics_write(d->server, out);
    struct replica_metrics_sources rms = {.replica = d->replica,
                                          .writer = &d->writer,
                                          .store_dir = d->store_dir,
                                          .data_dir = d->cfg->data_dir,
                                          .watches = &d->ssvc.watches};
    replica_metrics_write(&rms, out);
    feed_metrics_write(&d->feed, out);
    lifecycle_hook_metrics_write(d->hook, out);
    events_svc_metrics_write(&d->esvc, out);
    if (d->authn != NULL) {
        authn_metrics_write(d->authn, out);
    }
    buf_printf(out,
               "# HELP gantry_principal_model_reads_total Principals.Get, List, ListRoleBindings and "
               "ListIdentities and ApiKeys.Get and List calls answered from this replica's principals, role "
               "bindings, API keys and linked identities models (the others read the store).\n"
               "# TYPE gantry_principal_model_reads_total counter\ngantry_principal_model_reads_total %llu\n",
               (unsigned long long)atomic_load(&d->psvc.model_reads));
    buf_printf(out,
               "# HELP gantry_sandbox_model_gets_total Sandboxes.Get calls answered from this replica's "
               "model after a read index (the others read the store).\n"
               "# TYPE gantry_sandbox_model_gets_total counter\ngantry_sandbox_model_gets_total %llu\n",
               (unsigned long long)atomic_load(&d->ssvc.model_gets));
    buf_printf(out,
               "# HELP gantry_sandbox_model_lists_total Sandboxes.List and ListSharedWithMe calls answered "
               "from this replica's "
               "model after a read index (the others read the store).\n"
               "# TYPE gantry_sandbox_model_lists_total counter\ngantry_sandbox_model_lists_total %llu\n",
               (unsigned long long)atomic_load(&d->ssvc.model_lists));
    buf_printf(out,
               "# HELP gantry_sandbox_model_session_checks_total Logs, Exec and PortForward calls whose "
               "sandbox and share this replica found in its model after a read index (the others read "
               "the store).\n"
               "# TYPE gantry_sandbox_model_session_checks_total counter\n"
               "gantry_sandbox_model_session_checks_total %llu\n",
               (unsigned long long)atomic_load(&d->ssvc.model_sessions));
    buf_printf(out,
               "# HELP gantry_session_model_checks_total Checks of running sessions (every second each) "
               "decided from this replica's change-feed models (the others read the store).\n"
               "# TYPE gantry_session_model_checks_total counter\ngantry_session_model_checks_total %llu\n",
               (unsigned long long)atomic_load(&d->sesvc.model_checks));
    const struct {
        const char *family, *help;
        struct kind_model *m;
    } models[] = {
        {"gantry_namespace_model_reads_total",
         "Namespaces.Get and List calls answered from this replica's namespaces model (the others read the "
         "store), and Policies.Get calls that took the namespace's existence from it.",
         d->ns_model},
        {"gantry_policy_model_reads_total",
         "Policies.Get calls whose policy was read from this replica's policies model (the others read the "
         "store).",
         d->pol_model},
        {"gantry_provider_model_reads_total",
         "Providers.Get and List calls answered from this replica's providers model (the others read the "
         "store).",
         d->prov_model},
        {"gantry_warm_pool_model_reads_total",
         "WarmPools.Get and List calls answered from this replica's warm pools model (the others read the "
         "store).",
         d->wp_model},
        {"gantry_quota_model_reads_total",
         "Quotas.Get and List calls answered from this replica's quotas model (the others read the store).",
         d->q_model},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", models[i].family, models[i].help,
                   models[i].family, models[i].family, (unsigned long long)kind_model_reads(models[i].m));
    }
    pthread_mutex_lock(&d->mu);
    if (d->n_lags > 0) {
        buf_printf(
            out,
            "# HELP gantry_raft_member_lag_entries Raft entries the leader's log holds after the member's "
            "last one (measured by the leader's replica once a second; -1: not measurable).\n"
            "# TYPE gantry_raft_member_lag_entries gauge\n");
        for (unsigned i = 0; i < d->n_lags; i++) {
            buf_printf(out, "gantry_raft_member_lag_entries{member=\"%" PRIu64 "\"} %" PRId64 "\n",
                       d->lags[i].id, d->lags[i].entries);
        }
        /* The same figures for the standby site alone: how much the primary site could lose if it
         * went now (docs/operations.md, "Standby site"). The family is there on the leader's replica
         * even without a standby site (no samples then), as every family of /metrics is. */
        buf_printf(out, "# HELP gantry_standby_site_lag_entries Raft entries the leader's log holds after "
                        "the standby-site member's last one (measured by the leader's replica once a "
                        "second; -1: not measurable: no answer, or further behind than the leader's log "
                        "keeps).\n"
                        "# TYPE gantry_standby_site_lag_entries gauge\n");
        for (unsigned i = 0; i < d->n_lags; i++) {
            if (!d->lags[i].standby_site) {
                continue;
            }
            buf_printf(out, "gantry_standby_site_lag_entries{member=\"%" PRIu64 "\"} %" PRId64 "\n",
                       d->lags[i].id, d->lags[i].entries);
        }
    }
    pthread_mutex_unlock(&d->mu);
    if (d->nsm != NULL) {
        ns_metrics_write(d->nsm, out);
    }
    egress_svc_write_metrics(d->egress, out);
    nsstats_write(d->nsstats, out);
}

/* Remember the members' peer addresses in <data_dir>/peers, so a restart can find the leader even
 * when this replica is a spare (spares hear no heartbeats). */
static void save_peers(struct daemon *d, char *last, size_t last_len)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    struct buf b;
    buf_init(&b);
    for (unsigned i = 0; v->valid && i < v->n; i++) {
        if (v->nodes[i].id != d->cfg->replica_id) {
            buf_printf(&b, "%s%s", b.len > 0 ? "," : "", v->nodes[i].address);
        }
    }
    buf_append(&b, "", 1);
    if (v->valid && b.len > 1 && strcmp((const char *)b.data, last) != 0 && b.len < last_len) {
        char p[4096], err[GERR_MSG_SIZE];
        identity_path(d->cfg->data_dir, "peers", p, sizeof p);
        if (identity_write_file(p, b.data, b.len - 1, 0600, err) == 0) {
            snprintf(last, last_len, "%s", (const char *)b.data);
        } else {
            LOG_WARN("%s", err);
        }
    }
    buf_close(&b);
    mem_free(v);
}

/* Change events older than @before_ms, at most 5000 per run, in one transaction with the marker
 * "events_compacted_revision" (the newest revision deleted): a watch that needs an event at or
 * below the marker knows it is gone (api/services/sandboxes_svc.c). */
struct events_prune {
    int64_t before_ms, now_ms, upto;
};

static int prune_events_tx(struct store_tx *tx, void *arg)
{
    struct events_prune *e = arg;
    struct proto_value p[] = {proto_int(e->before_ms)};
    e->upto = 0;
    int rv = store_tx_query_int(
        tx,
        "SELECT coalesce(max(revision), 0) FROM (SELECT revision FROM events WHERE at_ms < ? "
        "ORDER BY revision LIMIT 5000)",
        p, 1, &e->upto);
    if (rv != 0 || e->upto == 0) {
        return rv;
    }
    struct proto_value d[] = {proto_int(e->upto)};
    rv = store_tx_exec(tx, "DELETE FROM events WHERE revision <= ?", d, 1, NULL);
    if (rv == 0) {
        char v[24];
        snprintf(v, sizeof v, "%" PRId64, e->upto);
        struct proto_value m[] = {proto_text(v), proto_int(e->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES "
            "('events_compacted_revision', ?1, ?2) ON CONFLICT (key) DO UPDATE SET value = "
            "excluded.value, updated_at_ms = excluded.updated_at_ms WHERE CAST(value AS INTEGER) < "
            "CAST(excluded.value AS INTEGER)",
            m, 2, NULL);
    }
    return rv;
}

/* Retention, every retention_interval_s, by the replica whose node leads (one pruner per cluster): audit
 * events past audit_retention_hours, change events past event_retention_s, and idempotency
 * records older than a day (retries come within minutes; a day leaves room for long outages).
 * Bounded batches keep each transaction short. */
static void prune_history(struct daemon *d, uint64_t *last_ms)
{
    struct clock *clk = clock_system();
    uint64_t now_mono = clock_mono_ms(clk);
    if (*last_ms != 0 && now_mono - *last_ms < (uint64_t)d->cfg->retention_interval_s * 1000) {
        return;
    }
    *last_ms = now_mono;
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    bool leads = v->valid && v->leader_id == d->cfg->replica_id;
    mem_free(v);
    struct store_client *cl;
    if (!leads || store_pool_acquire(&d->pool, 1000, &cl) != 0) {
        return;
    }
    int64_t now = (int64_t)clk->wall_ms(clk), deleted = 0;
    if (audit_prune(cl, now - (int64_t)d->cfg->audit_retention_hours * 3600000, 5000, &deleted) == 0 &&
        deleted > 0) {
        LOG_INFO("retention: deleted %" PRId64 " audit event(s) older than %u h", deleted,
                 d->cfg->audit_retention_hours);
    }
    struct events_prune ep = {.before_ms = now - (int64_t)d->cfg->event_retention_s * 1000, .now_ms = now};
    char err[GERR_MSG_SIZE] = "";
    if (store_writer_run(&d->writer, prune_events_tx, &ep, err) == 0 && ep.upto > 0) {
        LOG_INFO("retention: change events up to revision %" PRId64 " deleted (older than %u s)", ep.upto,
                 d->cfg->event_retention_s);
    }
    /* Client request ids for a day; the internal keys of mutations sent without one only serve the
     * replica's own settlement of an unknown outcome, within seconds: minutes are plenty. */
    struct proto_value p[] = {proto_int(now - 24 * 3600000LL),
                              proto_int(now - RES_INTERNAL_KEY_RETENTION_MS)};
    store_client_exec(
        cl,
        "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE "
        "created_at_ms < ?1 OR (created_at_ms < ?2 AND substr(request_id, 1, 1) = '~') LIMIT 5000)",
        p, 2, NULL);
    store_pool_release(&d->pool, cl);
}

/* Ask the leader's replica (member @leader_id) for the lags it measured: 0 with @out and *@n, or
 * an error with @errmsg. */
static int fetch_lags(struct daemon *d, uint64_t leader_id, const char *address, struct member_lag *out,
                      unsigned *n, char *errmsg)
{
    *n = 0;
    if (d->fwd_client == NULL) {
        gerr_set(errmsg, "no peer channel");
        return GERR_UNAVAILABLE;
    }
    fwd_response *resp = NULL;
    int rv = peer_ask(d, address, false, &resp, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (resp->status != GRPC_STATUS_OK || resp->lags_leader != leader_id) {
        gerr_set(errmsg, "%s", resp->status != GRPC_STATUS_OK ? resp->message : "another member leads");
        rv = GERR_UNAVAILABLE;
    } else {
        for (size_t i = 0; i < resp->n_lags && *n < REPLICA_MAX_MEMBERS; i++) {
            out[(*n)++] = (struct member_lag){.id = resp->lags[i]->id, .entries = resp->lags[i]->entries};
        }
    }
    gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
    return rv;
}

/* Once a second: while this replica's node leads, how far behind it each other member's log is,
 * by the catch-up probe (raft/catchup.h), for /metrics (members the membership view calls
 * unreachable are not probed: -1); otherwise the leader's replica's figures, asked over the peer
 * channel, for Cluster.ListMembers. */
static void measure_lags(struct daemon *d, const struct replica_view *v)
{
    struct member_lag lags[REPLICA_MAX_MEMBERS];
    unsigned n = 0;
    bool leads = v->valid && v->leader_id == d->cfg->replica_id, known = false;
    if (leads) {
        for (unsigned i = 0; i < v->n && n < REPLICA_MAX_MEMBERS && !is_stopping(d); i++) {
            if (v->nodes[i].id == d->cfg->replica_id) {
                continue;
            }
            uint64_t lag = RAFTLOG_LAG_UNKNOWN;
            char err[GERR_MSG_SIZE];
            bool ok = v->nodes[i].online && catchup_measure(&d->catchup, v->nodes[i].id, &lag, err) == 0 &&
                      lag != RAFTLOG_LAG_UNKNOWN;
            lags[n++] = (struct member_lag){.id = v->nodes[i].id,
                                            .entries = ok ? (int64_t)lag : -1,
                                            .standby_site = roles_in_standby_site(&v->nodes[i])};
        }
        known = true;
    } else if (v->valid && v->leader_id != 0) {
        for (unsigned i = 0; i < v->n; i++) {
            char err[GERR_MSG_SIZE];
            if (v->nodes[i].id == v->leader_id && v->nodes[i].address[0] != '\0') {
                known = fetch_lags(d, v->leader_id, v->nodes[i].address, lags, &n, err) == 0;
            }
        }
    }
    uint64_t now = clock_mono_ms(clock_system());
    pthread_mutex_lock(&d->mu);
    memcpy(d->lags, lags, sizeof *lags * (leads ? n : 0));
    d->n_lags = leads ? n : 0;
    if (known) {
        memcpy(d->known_lags, lags, sizeof *lags * n);
        d->n_known_lags = n;
        d->known_lags_ms = now;
        d->known_lags_leader = v->leader_id;
    }
    pthread_mutex_unlock(&d->mu);
}

/* cluster_svc.member_lag: the figure the leader's replica measured, learnt within the last 3 s
 * while @leader_id led. */
static bool member_lag(void *arg, uint64_t id, uint64_t leader_id, int64_t *entries)
{
    struct daemon *d = arg;
    uint64_t now = clock_mono_ms(clock_system());
    bool known = false;
    pthread_mutex_lock(&d->mu);
    if (d->known_lags_leader == leader_id && d->known_lags_ms != 0 && now - d->known_lags_ms <= 3000) {
        for (unsigned i = 0; i < d->n_known_lags; i++) {
            if (d->known_lags[i].id == id && d->known_lags[i].entries >= 0) {
                *entries = d->known_lags[i].entries;
                known = true;
            }
        }
    }
    pthread_mutex_unlock(&d->mu);
    return known;
}

/* Readiness: has this node caught up with the leader's log? The leader's replica and a spare
 * (which holds no log) are; a voter or standby is once its log holds the leader's last entries,
 * and stops being after CAUGHT_UP_MISSES checks in a row find it without them. */
static void check_caught_up(struct daemon *d, const struct replica_view *v)
{
    bool spare = false;
    for (unsigned i = 0; i < v->n; i++) {
        spare = spare || (v->nodes[i].id == d->cfg->replica_id && v->nodes[i].role == PROTO_ROLE_SPARE);
    }
    char err[GERR_MSG_SIZE] = "";
    int rv;
    if (!v->valid || v->leader_id == 0) {
        rv = GERR_UNAVAILABLE;
        gerr_set(err, "no leader known");
    } else if (v->leader_id == d->cfg->replica_id || spare) {
        rv = 0;
    } else {
        rv = catchup_self(&d->catchup, v->leader_id, err);
    }
    pthread_mutex_lock(&d->mu);
    bool was = d->caught_up;
    if (rv == 0) {
        d->caught_up = true;
        d->catchup_misses = 0;
        d->catchup_err[0] = '\0';
    } else {
        snprintf(d->catchup_err, sizeof d->catchup_err, "%s", err);
        if (++d->catchup_misses >= CAUGHT_UP_MISSES) {
            d->caught_up = false;
        }
    }
    bool now = d->caught_up;
    pthread_mutex_unlock(&d->mu);
    if (was != now) {
        if (now) {
            LOG_INFO("ready: this replica's Raft log holds the leader's last entries");
        } else {
            LOG_WARN("not ready: %s", err);
        }
    }
}

/* Migrations, then this replica's member row, retried until done; and the peers file, kept
 * current; and the members' lag while this replica leads. One round per second until stop. */
/* Every 5 s: how many API keys (not revoked) an older pepper version than the current one still
 * hashes, for gantry_apikeys_old_pepper (docs/security.md, "Rotating the API-key pepper"). */
static void count_old_pepper_keys(struct daemon *d, uint64_t *last_ms)
{
    uint64_t now = clock_mono_ms(clock_system());
    if (*last_ms != 0 && now - *last_ms < 5000) {
        return;
    }
    *last_ms = now;
    struct store_client *cl;
    if (store_pool_acquire(&d->pool, 1000, &cl) != 0) {
        return;
    }
    unsigned cur = 0;
    uint8_t pepper[PEPPER_RING_SIZE];
    char err[GERR_MSG_SIZE];
    int64_t n = -1;
    int rv = pepper_ring_current(&d->peppers, cl, (int64_t)clock_system()->wall_ms(clock_system()), &cur,
                                 pepper, err);
    memset(pepper, 0, sizeof pepper);
    if (rv == 0) {
        struct proto_value p[] = {proto_int(cur)};
        if (store_client_query_int(
                cl, "SELECT count(*) FROM api_keys WHERE revoked_at_ms = 0 AND pepper_version < ?", p, 1,
                &n) != 0) {
            n = -1;
        }
    }
    store_pool_release(&d->pool, cl);
    pthread_mutex_lock(&d->mu);
    d->old_pepper_keys = n;
    d->pepper_current = cur;
    pthread_mutex_unlock(&d->mu);
}

static void *maint_main(void *arg)
{
    struct daemon *d = arg;
    struct store_client *cl = NULL;
    bool row_done = false, migrated = false;
    unsigned n_schema;
    const struct store_migration *schema = store_schema(&n_schema);
    char last_peers[2048] = "";
    uint64_t last_prune_ms = 0, last_lags_ms = 0, last_pepper_ms = 0;
    while (!is_stopping(d)) {
        int rv = 0;
        if (!migrated || !row_done) {
            rv = store_pool_acquire(&d->pool, 1000, &cl);
        }
        if (rv == 0 && !migrated) {
            rv = store_migrate(cl, schema, n_schema);
            migrated = rv == 0;
            pthread_mutex_lock(&d->mu);
            d->migrated = migrated;
            snprintf(d->maint_err, sizeof d->maint_err, "%s", rv == 0 ? "" : cl->errmsg);
            pthread_mutex_unlock(&d->mu);
            if (rv == 0) {
                LOG_INFO("schema at version %" PRId64, schema[n_schema - 1].version);
            } else {
                LOG_WARN("migrations: %s", cl->errmsg);
            }
        }
        if (rv == 0 && migrated && !row_done) {
            struct clusterdb_join self = {.replica_id = d->cfg->replica_id,
                                          .replica_name = d->cfg->replica_name,
                                          .peer_address = bootstrap_peer_address(d->cfg),
                                          .api_address = d->cfg->api_address,
                                          .failure_domain = d->cfg->failure_domain,
                                          .failure_domain_name = d->cfg->failure_domain_name};
            char err[GERR_MSG_SIZE] = "";
            row_done = store_writer_run(&d->writer, clusterdb_member_upsert_tx, &self, err) == 0;
            if (!row_done) {
                LOG_WARN("member row: %s", err);
            }
        }
        if (cl != NULL) {
            store_pool_release(&d->pool, cl);
            cl = NULL;
        }
        save_peers(d, last_peers, sizeof last_peers);
        prune_history(d, &last_prune_ms);
        if (migrated && d->peppers_ready) {
            count_old_pepper_keys(d, &last_pepper_ms);
        }
        struct replica_view *v = mem_alloc(sizeof *v);
        replica_view(d->replica, v);
        uint64_t now = clock_mono_ms(clock_system());
        if (now - last_lags_ms >= 1000) {
            measure_lags(d, v);
            last_lags_ms = now;
        }
        if (migrated) {
            check_caught_up(d, v);
        }
        mem_free(v);
        if (d->oidc != NULL) {
            char oerr[GERR_MSG_SIZE];
            if (oidc_refresh_due(d->oidc, oerr) != 0) {
                LOG_WARN("oidc: %s", oerr);
            }
        }
        pthread_mutex_lock(&d->mu);
        struct timespec until;
        /* Quicker rounds until this replica is ready, so a starting replica is not held back. */
        clock_mono_deadline(&until, d->caught_up && migrated && row_done ? 1000 : 200);
        if (!d->stopping) {
            clock_cond_wait_mono(&d->cond, &d->mu, &until);
        }
        pthread_mutex_unlock(&d->mu);
    }
    return NULL;
}

static void on_closed_handle(uv_handle_t *h)
{
    (void)h;
}

static void admin_closed(struct admin *a, void *data)
{
    (void)a;
    struct daemon *d = data;
    d->admin = NULL;
}

static void server_closed(struct grpc_server *s, void *data)
{
    (void)s;
    struct daemon *d = data;
    LOG_INFO("gRPC server closed");
    if (d->console != NULL) {
        console_shutdown(d->console);
    }
    if (d->admin != NULL) {
        admin_close(d->admin, admin_closed, d);
    }
    uv_close((uv_handle_t *)&d->stop_async, on_closed_handle);
}

static void stop_cb(uv_async_t *a)
{
    struct daemon *d = a->data;
    if (grpc_server_closing(d->server)) {
        return;
    }
    health_shutdown(d->health);
    grpc_server_shutdown(d->server, SHUTDOWN_GRACE_MS, server_closed, d);
}

static void *loop_main(void *arg)
{
    struct daemon *d = arg;
    uv_run(&d->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Build the gRPC server, the services and the admin endpoint on the loop (before it runs). */
/* The admin port has no authentication of its own: /metrics names every namespace (up to
 * metrics_namespace_max, always on) with its sandboxes, GPUs, quota and API call counts, and the
 * console speaks plain HTTP. Say so once at startup when that port is reachable beyond this host. */
static void warn_admin_exposure(const struct config *cfg)
{
    struct sockaddr_storage a;
    if (addr_parse(cfg->admin_address, &a, NULL) == 0 && addr_is_loopback(&a)) {
        return;
    }
    LOG_WARN("admin_address %s is not loopback: /metrics shows namespace names and per-namespace counts "
             "(sandboxes, GPUs, quotas, API calls) to anyone who reaches it%s; keep the port on a trusted "
             "network or behind a proxy (docs/metrics.md, \"Security\")",
             cfg->admin_address,
             cfg->console
                 ? ", and the console's sign-in and session cookie cross it as plain HTTP unless a TLS "
                   "proxy fronts it (docs/console.md)"
                 : "");
}

/* authn's view of the pepper versions (api/gate/authn.h, struct authn_peppers). */
static int peppers_get(void *arg, struct store_client *cl, unsigned version, uint8_t out[32], char *errmsg)
{
    return pepper_ring_get(arg, cl, version, out, errmsg);
}

static int peppers_current(void *arg, struct store_client *cl, int64_t now_ms, unsigned *version,
                           uint8_t out[32], char *errmsg)
{
    return pepper_ring_current(arg, cl, now_ms, version, out, errmsg);
}

static int serve(struct daemon *d, char *errmsg)
{
    struct config *cfg = d->cfg;
    char cert[4096], key[4096];
    struct grpc_server_config gc;
    grpc_server_config_defaults(&gc);
    gc.listen = cfg->api_address;
    gc.h2c = cfg->api_h2c;
    if (!cfg->api_h2c) {
        if (cfg->api_tls_cert[0] != '\0') {
            snprintf(cert, sizeof cert, "%s", cfg->api_tls_cert);
            snprintf(key, sizeof key, "%s", cfg->api_tls_key);
        } else {
            identity_path(cfg->data_dir, "tls/api.pem", cert, sizeof cert);
            identity_path(cfg->data_dir, "tls/key.pem", key, sizeof key);
        }
        gc.cert_file = cert;
        gc.key_file = key;
        gc.client_ca_file = cfg->api_tls_client_ca[0] != '\0' ? cfg->api_tls_client_ca : NULL;
    }
    gc.max_recv_message_bytes = cfg->max_message_bytes;
    gc.max_concurrent_streams = cfg->max_concurrent_streams;
    gc.max_connections_per_source = cfg->api_max_connections_per_source;
    gc.established_reserve_percent = cfg->api_established_reserve_percent;
    gc.handshake_timeout_ms = cfg->api_handshake_timeout_ms;
    gc.idle_timeout_ms = cfg->api_idle_timeout_ms;
    gc.max_request_fields = cfg->api_max_request_fields;
    gc.max_request_depth = cfg->api_max_request_depth;
    int rv = grpc_server_new(&d->loop, &gc, &d->server, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (d->authn == NULL) { /* normally made before the feed started (cmd_run) */
        d->authn = authn_new(d->secrets.pepper, IDENTITY_PEPPER_SIZE, &d->writer);
    }
    rv = pepper_ring_init(&d->peppers, d->secrets.pepper, errmsg);
    if (rv != 0) {
        return rv;
    }
    d->peppers_ready = true;
    struct authn_peppers ap = {.get = peppers_get, .current = peppers_current, .arg = &d->peppers};
    authn_set_peppers(d->authn, &ap);
    if (cfg->oidc_issuers_file[0] != '\0') {
        int orv = oidc_config_load(cfg->oidc_issuers_file, &d->oidc, errmsg);
        if (orv != 0) {
            return orv;
        }
        authn_set_oidc(d->authn, d->oidc);
    }
    struct admission_config adc = {.fail_limit = cfg->auth_fail_limit,
                                   .fail_window_ms = cfg->auth_fail_window_ms,
                                   .unauth_rate = cfg->unverified_call_rate,
                                   .unauth_burst = cfg->unverified_call_burst,
                                   .known_ttl_ms = cfg->known_credential_ttl_ms,
                                   .failed_ttl_ms = cfg->refused_credential_ttl_ms};
    d->admission = admission_new(&adc);
    struct audit_sink_config asc = {
        .window_ms = cfg->audit_window_ms, .flush_ms = cfg->audit_flush_ms, .max_keys = cfg->audit_max_keys};
    d->sink = audit_sink_start(&d->writer, &asc);
    d->sesvc.sink = d->sink;       /* sessions are audited through it */
    d->sesvc.sandboxes = &d->ssvc; /* a session's sandbox and share from its model (or the store) */
    if (d->sink == NULL) {
        gerr_set(errmsg, "cannot start the audit sink thread");
        return GERR_NOMEM;
    }
    d->fwd_client = fwd_client_new(replica_alt_dial, d->replica, 2);
    d->log_reader = raftlog_reader_new(d->store_dir);
    d->catchup = (struct catchup){.dir = d->store_dir,
                                  .reader = d->log_reader,
                                  .probe = probe_member,
                                  .pause = pause_writes,
                                  .resume = resume_writes,
                                  .arg = d};
    d->nsstats = nsstats_new(cfg->metrics_namespace_max);
    struct gate_config gcfg = {.jobs = &d->jobs,
                               .nsstats = d->nsstats,
                               .pool = &d->pool,
                               .authn = d->authn,
                               .admission = d->admission,
                               .sink = d->sink,
                               .replica_id = cfg->replica_id,
                               .gateway_id = d->id.gateway_id,
                               .fwd = {.client = cfg->forward_writes ? d->fwd_client : NULL,
                                       .leader_address = leader_address,
                                       .data = d,
                                       .server = d->server}};
    d->gate = gate_new(&gcfg);
    d->csvc = (struct cluster_svc){.replica = d->replica,
                                   .writer = &d->writer,
                                   .catchup = &d->catchup,
                                   .sink = d->sink,
                                   .pool = &d->pool,
                                   .id = &d->id,
                                   .secrets = &d->secrets,
                                   .ca = d->ca,
                                   .replica_id = cfg->replica_id,
                                   .scratch_dir = d->scratch,
                                   .member_lag = member_lag,
                                   .member_lag_arg = d};
    d->env = (struct res_env){
        .writer = &d->writer, .sink = d->sink, .replica_id = cfg->replica_id, .gateway_id = d->id.gateway_id};
    d->wsvc.env = &d->env;
    d->polsvc.env = &d->env;
    d->prov = (struct providers_svc){.env = &d->env,
                                     .pepper = d->secrets.pepper,
                                     .pepper_len = IDENTITY_PEPPER_SIZE,
                                     .reads = d->prov.reads, /* cmd_run set them */
                                     .grants = d->prov.grants};
    d->psvc = (struct principals_svc){.env = &d->env,
                                      .pepper = d->secrets.pepper,
                                      .pepper_len = IDENTITY_PEPPER_SIZE,
                                      .peppers = &d->peppers,
                                      .principals = d->preads[0],
                                      .bindings = d->preads[1],
                                      .keys = d->preads[2]};
    d->lreads = (struct links_reads){
        .links = d->preads[3], .principals = d->preads[0], .model_reads = &d->psvc.model_reads};
    if ((rv = cluster_svc_register(d->gate, &d->csvc, errmsg)) != 0 ||
        (rv = principals_svc_register(d->gate, &d->psvc, errmsg)) != 0 ||
        (rv = links_svc_register(d->gate, &d->env, &d->lreads, errmsg)) != 0 ||
        (rv = tenants_svc_register(d->gate, &d->env, &d->ns_reads, &d->q_reads, errmsg)) != 0 ||
        (rv = providers_svc_register(d->gate, &d->prov, errmsg)) != 0 ||
        (rv = policies_svc_register(d->gate, &d->polsvc, errmsg)) != 0 ||
        (rv = warmpools_svc_register(d->gate, &d->wsvc, errmsg)) != 0 ||
        (rv = sandboxes_svc_register(d->gate, &d->ssvc, errmsg)) != 0 ||
        (rv = events_svc_register(d->gate, &d->esvc, errmsg)) != 0 ||
        (rv = sessions_svc_register(d->gate, &d->sesvc, errmsg)) != 0 ||
        (rv = audit_svc_register(d->gate, errmsg)) != 0 || (rv = usage_svc_register(d->gate, errmsg)) != 0 ||
        (rv = gate_register(d->gate, d->server, api_services, errmsg)) != 0 ||
        (rv = health_new(d->server, &d->health)) != 0 || (rv = reflection_new(d->server, &d->refl)) != 0 ||
        (rv = reflection_add_descriptor_set(d->refl, api_descriptor_set, api_descriptor_set_len, errmsg)) !=
            0) {
        if (errmsg[0] == '\0') {
            gerr_set(errmsg, "cannot set up the services");
        }
        return rv;
    }
    health_serve_all(d->health, d->server);
    rv = grpc_server_start(d->server, errmsg);
    if (rv != 0) {
        return rv;
    }
    /* Calls other replicas forward (the method table is complete now). */
    rv = fwd_server_start(d->fwd_path, forwarded, d, &d->fwd_server, errmsg);
    if (rv != 0) {
        return rv;
    }
    /* Sessions other replicas route here (their callers were authorized there). */
    d->sesvc.route_peers = route_peers;
    d->sesvc.route_dial = route_dial;
    d->sesvc.route_arg = d;
    rv = sroute_server_start(d->sroute_path, &d->sesvc, &d->sroute, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (cfg->console) {
        struct console_config cc = {.loop = &d->loop,
                                    .gate = d->gate,
                                    .replica = d->replica,
                                    .writer = &d->writer,
                                    .replica_id = cfg->replica_id,
                                    .replica_name = cfg->replica_name,
                                    .max_streams = cfg->console_max_streams,
                                    .refresh_ms = cfg->console_refresh_ms,
                                    .session_idle_s = cfg->console_session_idle_s};
        rv = console_start(&cc, &d->console, errmsg);
        if (rv != 0) {
            return rv;
        }
    }
    warn_admin_exposure(cfg);
    struct admin_config ac = {.listen = cfg->admin_address,
                              .handler_prefix = d->console != NULL ? CONSOLE_PREFIX : NULL,
                              .handler = d->console != NULL ? console_handle : NULL,
                              .handler_data = d->console,
                              .ready = ready,
                              .metrics = metrics,
                              .data = d,
                              .max_connections = cfg->admin_max_connections,
                              .probe_reserve = cfg->admin_probe_reserve,
                              .header_timeout_ms = cfg->admin_header_timeout_ms,
                              .idle_timeout_ms = cfg->admin_idle_timeout_ms,
                              .probe_timeout_ms = cfg->admin_probe_timeout_ms,
                              .max_buffered_bytes = cfg->admin_max_buffered_bytes};
    rv = admin_start(&d->loop, &ac, &d->admin, errmsg);
    if (rv != 0) {
        d->admin = NULL;
        return rv;
    }
    uv_async_init(&d->loop, &d->stop_async, stop_cb);
    d->stop_async.data = d;
    return 0;
}

static int store_config(struct daemon *d, const char *join_peers, const char **addrs, char *list,
                        size_t list_len, struct store_client_config *sc)
{
    unsigned n = 0;
    addrs[n++] = bootstrap_peer_address(d->cfg);
    snprintf(list, list_len, "%s", join_peers);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL && n < STORE_MAX_ADDRESSES;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, addrs[0]) != 0) {
            addrs[n++] = tok;
        }
    }
    *sc = (struct store_client_config){.addresses = addrs,
                                       .n_addresses = n,
                                       .leader_timeout_ms = 5000,
                                       .request_timeout_ms = 10000,
                                       .dial = replica_dial(d->replica),
                                       .dial_arg = replica_dial_arg(d->replica),
                                       .stream_dial = replica_stream_dial(d->replica)};
    return 0;
}

/* providers_secret_fetch_fn: a Secret-backed credential, read through the kubernetes driver's API
 * client (docs/credentials.md). */
static int sandbox_secret_fetch(void *arg, const char *ns, const char *name, const char *key, char **value,
                                char *errmsg)
{
    struct daemon *d = arg;
    return driver_k8s_read_secret(d->driver, ns, name, key, value, errmsg);
}

/* reconciler_creds_fn: the providers' credentials (docs/credentials.md). */
static int sandbox_creds(void *arg, struct store_client *cl, const char *ns, const char *const *names,
                         size_t n, struct reconciler_creds *out, char *errmsg)
{
    struct daemon *d = arg;
    struct providers_credentials *pc = mem_zalloc(sizeof *pc);
    bool k8s = d->driver != NULL && strcmp(d->cfg->driver, "kubernetes") == 0;
    int rv = providers_credentials_open(cl, &d->prov.ring, ns, names, n, k8s ? sandbox_secret_fetch : NULL, d,
                                        pc, errmsg);
    if (rv != 0) {
        mem_free(pc);
        return rv;
    }
    *out = (struct reconciler_creds){.items = pc->items, .n = pc->n, .owner = pc};
    return 0;
}

static void sandbox_creds_free(void *arg, struct reconciler_creds *c)
{
    (void)arg;
    providers_credentials_close(c->owner);
    mem_free(c->owner);
    memset(c, 0, sizeof *c);
}

/* The reconciler's audit events (leases/reconciler.h): API Activity, status Failure, the
 * reconciler as a system actor, inside the reconciler's fenced transaction. */
static int reconciler_audit_tx(struct store_tx *tx, const struct reconciler_audit *ev, void *arg)
{
    struct daemon *d = arg;
    const char *op = ev->operation;
    struct audit_record r = {.time_ms = (int64_t)clock_system()->wall_ms(clock_system()),
                             .class_uid = AUDIT_CLASS_API_ACTIVITY,
                             .activity = strstr(op, ".create") != NULL   ? AUDIT_CREATE
                                         : strstr(op, ".delete") != NULL ? AUDIT_DELETE
                                         : strstr(op, ".get") != NULL    ? AUDIT_READ
                                                                         : AUDIT_UPDATE,
                             .actor_id = "reconciler",
                             .actor_name = ev->actor,
                             .actor_kind = "system",
                             .operation = op,
                             .ns = ev->ns,
                             .resource_type = "Sandbox",
                             .resource_id = ev->sandbox_id,
                             .resource_name = ev->sandbox_name,
                             .success = false,
                             .status_code = grpc_status_from_gerr(ev->code),
                             .message = ev->message,
                             .source = "local",
                             .request_id = "",
                             .replica_id = d->cfg->replica_id,
                             .gateway_id = d->id.gateway_id};
    return audit_insert_tx(tx, &r);
}

/* @l (the configuration key @key) as a NULL-terminated array in @out. More than
 * DRIVER_K8S_ALLOWLIST_MAX entries, which the driver could not be given, is GERR_INVAL: never a
 * silently shorter list. (The configuration allows fewer entries than that today.) */
static int k8s_names(const struct config_list *l, const char *key,
                     const char *out[DRIVER_K8S_ALLOWLIST_MAX + 1], char *errmsg)
{
    if (l->n > DRIVER_K8S_ALLOWLIST_MAX) {
        gerr_set(errmsg, "%s: at most %u entries, not %zu", key, DRIVER_K8S_ALLOWLIST_MAX, l->n);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < l->n; i++) {
        out[i] = l->items[i];
    }
    out[l->n] = NULL;
    return 0;
}

/* The compute driver named by the configuration, and the reconciler that drives it while this
 * replica holds the lease. driver "none": neither. */
/* Start the egress relay with @ec's doors (a door directory for the process driver, a shared door
 * for kubernetes pods) and everything else from the configuration. */
static int start_egress(struct daemon *d, struct egress_svc_config *ec, char *errmsg)
{
    const struct config *cfg = d->cfg;
    ec->policy_refresh_ms = cfg->egress_policy_refresh_ms;
    ec->pool = &d->pool;
    ec->sink = d->sink;
    ec->replica_id = cfg->replica_id;
    ec->gateway_id = d->id.gateway_id;
    egress_relay_config_defaults(&ec->relay);
    ec->relay.max_conns = cfg->egress_max_connections;
    ec->relay.max_conns_per_sandbox = cfg->egress_max_connections_per_sandbox;
    return egress_svc_start(ec, &d->egress, errmsg);
}

static int start_reconciler(struct daemon *d, const struct store_client_config *sc, char *errmsg)
{
    struct config *cfg = d->cfg;
    if (strcmp(cfg->driver, "none") == 0) {
        return 0;
    }
    char state[4096];
    if (cfg->driver_state_dir[0] != '\0') {
        snprintf(state, sizeof state, "%s", cfg->driver_state_dir);
    } else {
        identity_path(cfg->data_dir, strcmp(cfg->driver, "fake") == 0 ? "sandboxes.json" : "sandboxes", state,
                      sizeof state);
    }
    int rv;
    if (strcmp(cfg->driver, "fake") == 0) {
        struct driver_fake_config fc = {.state_path = state,
                                        .journal_path =
                                            cfg->driver_journal[0] != '\0' ? cfg->driver_journal : NULL,
                                        .ready_after_ms = 200};
        rv = driver_fake_new(&fc, &d->driver, errmsg);
    } else if (strcmp(cfg->driver, "kubernetes") == 0) {
        const char *allow[DRIVER_K8S_ALLOWLIST_MAX + 1];
        const char *mode = cfg->k8s_namespace_mode;
        const char *sas[DRIVER_K8S_ALLOWLIST_MAX + 1], *pulls[DRIVER_K8S_ALLOWLIST_MAX + 1];
        if ((rv = k8s_names(&cfg->k8s_namespaces, "k8s_namespaces", allow, errmsg)) != 0 ||
            (rv = k8s_names(&cfg->k8s_service_accounts, "k8s_service_accounts", sas, errmsg)) != 0 ||
            (rv = k8s_names(&cfg->k8s_image_pull_secrets, "k8s_image_pull_secrets", pulls, errmsg)) != 0) {
            return rv;
        }
        struct driver_k8s_config kc = {
            .server = cfg->k8s_server[0] != '\0' ? cfg->k8s_server : NULL,
            .token_file = cfg->k8s_token_file[0] != '\0' ? cfg->k8s_token_file : NULL,
            .ca_file = cfg->k8s_ca_file[0] != '\0' ? cfg->k8s_ca_file : NULL,
            .gateway_id = d->id.gateway_id,
            .mode = strcmp(mode, "operator") == 0 ? DRIVER_K8S_OPERATOR
                    : strcmp(mode, "shared") == 0 ? DRIVER_K8S_SHARED
                                                  : DRIVER_K8S_MANAGED,
            .shared_namespace = cfg->k8s_shared_namespace[0] != '\0' ? cfg->k8s_shared_namespace : NULL,
            .operator_namespaces = allow,
            .service_accounts = sas,
            .image_pull_secrets = pulls,
            .egress = {.address = cfg->egress_relay_k8s_address,
                       .pod_selector = cfg->egress_relay_k8s_pod_selector,
                       .port = cfg->egress_relay_k8s_port}};
        rv = driver_k8s_new(&kc, &d->driver, errmsg);
        if (rv == 0 && cfg->egress_relay_k8s_port != 0) {
            /* The relay for pods (docs/egress.md, "Kubernetes"): one shared door on this replica. */
            struct egress_svc_config ec = {.k8s = d->driver, .shared_port = cfg->egress_relay_k8s_port};
            rv = start_egress(d, &ec, errmsg);
        }
    } else {
        struct driver_process_config pc = {.state_dir = state,
                                           .sandbox_uid = -1,
                                           .sandbox_gid = -1,
                                           .egress_relay_port = cfg->egress_relay_port};
        rv = driver_process_new(&pc, &d->driver, errmsg);
        if (rv == 0 && cfg->egress_relay_port != 0) {
            char doors[4200];
            snprintf(doors, sizeof doors, "%s/egress", state);
            struct egress_svc_config ec = {.door_dir = doors, .relay_port = cfg->egress_relay_port};
            rv = start_egress(d, &ec, errmsg);
        }
    }
    if (rv != 0) {
        return rv;
    }
    struct driver_caps caps;
    driver_capabilities(d->driver, &caps);
    d->ssvc.driver = d->driver;  /* admission checks; before the loop thread takes calls */
    d->wsvc.driver = d->driver;  /* WarmPools.Create needs caps.pools */
    d->sesvc.driver = d->driver; /* sessions read through it */
    LOG_INFO("driver %s: %s%s", caps.name, caps.available ? "" : "UNAVAILABLE: ", caps.detail);
    char holder[128], uuid[37];
    rand_uuid(uuid);
    snprintf(holder, sizeof holder, "%s/%.8s", cfg->replica_name, uuid);
    snprintf(d->lease_holder, sizeof d->lease_holder, "%s", holder);
    struct reconciler_config rc = {.store = *sc,
                                   .writer = &d->writer,
                                   .driver = d->driver,
                                   .driver_name = caps.name,
                                   .holder = holder,
                                   .replica_id = cfg->replica_id,
                                   .gateway_id = d->id.gateway_id,
                                   .audit = reconciler_audit_tx,
                                   .audit_arg = d,
                                   .creds = sandbox_creds,
                                   .creds_free = sandbox_creds_free,
                                   .creds_arg = d,
                                   .provision_deadline_ms = cfg->provision_deadline_s * 1000u,
                                   .lease = {.duration_ms = cfg->lease_duration_ms,
                                             .renew_deadline_ms = cfg->lease_renew_deadline_ms,
                                             .retry_ms = cfg->lease_retry_ms}};
    return reconciler_start(&rc, &d->reconciler, errmsg);
}

static bool lease_held(void *arg)
{
    struct daemon *d = arg;
    struct reconciler_status rs = {.held = false};
    if (d->reconciler != NULL) {
        reconciler_status(d->reconciler, &rs);
    }
    return rs.held;
}

/* The lifecycle webhook's fence: the reconciler lease (server/lifecycle_hook.h). */
static bool hook_held(void *arg, uint64_t *epoch)
{
    struct daemon *d = arg;
    struct reconciler_status rs = {.held = false};
    reconciler_status(d->reconciler, &rs);
    *epoch = rs.epoch;
    return rs.held;
}

static int hook_fence_tx(struct store_tx *tx, uint64_t epoch, void *arg)
{
    struct daemon *d = arg;
    return lease_check_tx(tx, RECONCILER_LEASE, d->lease_holder, epoch);
}

static int start_hook(struct daemon *d, const struct store_client_config *sc, char *errmsg)
{
    const struct config *cfg = d->cfg;
    struct lifecycle_hook_config hc = {.store = *sc,
                                       .writer = &d->writer,
                                       .url = cfg->lifecycle_webhook_url,
                                       .ca_file = cfg->lifecycle_webhook_ca_file,
                                       .secret_file = cfg->lifecycle_webhook_secret_file,
                                       .gateway_id = d->id.gateway_id,
                                       .replica_id = cfg->replica_id,
                                       .timeout_ms = cfg->lifecycle_webhook_timeout_ms,
                                       .max_attempts = cfg->lifecycle_webhook_max_attempts,
                                       .backoff_ms = cfg->lifecycle_webhook_backoff_ms,
                                       .backoff_max_ms = cfg->lifecycle_webhook_backoff_max_ms,
                                       .held = hook_held,
                                       .fence_tx = hook_fence_tx,
                                       .fence_arg = d};
    return lifecycle_hook_start(&hc, &d->hook, errmsg);
}

static int start_backups(struct daemon *d, const struct store_client_config *sc, char *errmsg)
{
    struct backup_sched_config bc = {.dir = d->cfg->backup_dir,
                                     .key_file = d->cfg->backup_seal_key_file,
                                     .interval_s = d->cfg->backup_interval_s,
                                     .keep_count = d->cfg->backup_keep_count,
                                     .keep_age_hours = d->cfg->backup_keep_age_hours,
                                     .scratch_dir = d->scratch,
                                     .cluster_id = d->id.cluster_id,
                                     .replica_id = d->cfg->replica_id,
                                     .store = sc,
                                     .held = lease_held,
                                     .held_arg = d};
    return backup_sched_start(&bc, &d->bsched, errmsg);
}

static bool stop_signalled(void *arg)
{
    const sigset_t *set = arg;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(set, NULL, &zero);
    return sig == SIGTERM || sig == SIGINT;
}

static int cmd_run(struct config *cfg)
{
    char errmsg[GERR_MSG_SIZE] = "";
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigset_t wait_set = stop_set; /* and SIGHUP: reload the TLS files, check the renewal now */
    sigaddset(&wait_set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &wait_set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!identity_exists(cfg->data_dir)) {
        if (cfg->join.n == 0) {
            fprintf(
                stderr,
                "gantryd: %s holds no replica. Run `gantryd init` for the first replica of a new cluster,\n"
                "or give --join <member API address> and a join token to join an existing one.\n",
                cfg->data_dir);
            return 1;
        }
        if (bootstrap_join(cfg, JOIN_TIMEOUT_MS, errmsg) != 0) {
            fprintf(stderr, "gantryd: %s\n", errmsg);
            return 1;
        }
    }
    struct daemon *d = mem_zalloc(sizeof *d);
    d->cfg = cfg;
    d->old_pepper_keys = -1;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    int rv = identity_load(cfg->data_dir, &d->id, errmsg);
    if (rv == 0 && d->id.replica_id != cfg->replica_id) {
        gerr_set(errmsg, "%s belongs to replica %" PRIu64 ", not replica_id %" PRIu64, cfg->data_dir,
                 d->id.replica_id, cfg->replica_id);
        rv = GERR_INVAL;
    }
    if (rv == 0 && strcmp(d->id.gateway_id, cfg->gateway_id) != 0 && strcmp(cfg->gateway_id, "gantry") != 0) {
        /* Two gateway clusters sharing one Kubernetes cluster must never swap names. */
        gerr_set(errmsg, "%s belongs to gateway \"%s\", but gateway_id is \"%s\"", cfg->data_dir,
                 d->id.gateway_id, cfg->gateway_id);
        rv = GERR_INVAL;
    }
    if (rv == 0) {
        rv = identity_secrets_load(cfg->data_dir, &d->secrets, errmsg);
    }
    if (rv == 0) {
        rv = cakeeper_new(d->secrets.ca_pem, d->secrets.ca_key_pem, &d->ca, errmsg);
    }
    char peers[2048] = "", seeds[2048] = "";
    if (rv == 0) {
        rv = bootstrap_pending_join(cfg->data_dir, peers, sizeof peers, errmsg);
    }
    if (rv == 0) {
        char p[4096], *text = NULL;
        identity_path(cfg->data_dir, "peers", p, sizeof p);
        if (file_read_all(p, sizeof seeds - 1, &text, NULL, errmsg) == 0) {
            snprintf(seeds, sizeof seeds, "%s", text);
        }
        mem_free(text);
        errmsg[0] = '\0';
    }
    if (rv == 0 && cfg->peer_tls_cert[0] == '\0') {
        bool renewed = false;
        int64_t not_after = 0;
        rv = certrenew_at_start(cfg->data_dir, &d->secrets, cfg->cert_renew_days,
                                (int64_t)clock_system()->wall_ms(clock_system()), &renewed, &not_after,
                                errmsg);
    }
    char tls_dir[4096];
    identity_path(cfg->data_dir, "tls", tls_dir, sizeof tls_dir);
    identity_path(cfg->data_dir, "store", d->store_dir, sizeof d->store_dir);
    identity_path(cfg->data_dir, "scratch", d->scratch, sizeof d->scratch);
    mkdir(d->scratch, 0700);
    if (rv == 0) {
        snprintf(d->fwd_path, sizeof d->fwd_path, "@gantry-fwd-%s", bootstrap_peer_address(cfg));
        snprintf(d->sroute_path, sizeof d->sroute_path, "@gantry-sess-%s", bootstrap_peer_address(cfg));
        snprintf(d->renew_path, sizeof d->renew_path, "@gantry-renew-%s", bootstrap_peer_address(cfg));
        struct replica_config rc = {.id = cfg->replica_id,
                                    .address = bootstrap_peer_address(cfg),
                                    .listen = cfg->peer_address,
                                    .dir = d->store_dir,
                                    .tls_dir = tls_dir,
                                    .catchup = &d->catchup,
                                    .tls_ca_file = cfg->peer_tls_ca[0] != '\0' ? cfg->peer_tls_ca : NULL,
                                    .tls_cert_file = cfg->peer_tls_cert,
                                    .tls_key_file = cfg->peer_tls_key,
                                    .peer = {.max_handshakes_per_source = cfg->peer_max_handshakes_per_source,
                                             .refusal_log_window_ms = cfg->peer_refusal_log_window_ms,
                                             .alt_alpn = FWD_ALPN,
                                             .alt_backend = d->fwd_path,
                                             .alt2_alpn = SROUTE_ALPN,
                                             .alt2_backend = d->sroute_path,
                                             .alt3_alpn = CERTRENEW_ALPN,
                                             .alt3_backend = d->renew_path},
                                    .latency_ms = cfg->latency_ms,
                                    .snapshot_threshold = cfg->snapshot_threshold,
                                    .snapshot_trailing = cfg->snapshot_trailing,
                                    .failure_domain = bootstrap_failure_domain(cfg),
                                    .join = peers[0] != '\0' ? peers : NULL,
                                    .seeds = seeds,
                                    .join_role = PROTO_ROLE_STANDBY,
                                    .join_timeout_ms = JOIN_TIMEOUT_MS,
                                    .manage_roles = true,
                                    .policy = {.grace_ms = cfg->roles_grace_ms},
                                    .should_stop = stop_signalled,
                                    .should_stop_arg = &stop_set};
        rv = replica_start(&rc, &d->replica, errmsg);
    }
    if (rv == 0 && peers[0] != '\0') {
        bootstrap_join_done(cfg->data_dir);
        LOG_INFO("joined the cluster's Raft configuration as a standby");
    }
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[4300];
    struct store_client_config sc;
    if (rv == 0) {
        char known[4200];
        snprintf(known, sizeof known, "%s,%s", peers, seeds);
        store_config(d, known, addrs, list, sizeof list, &sc);
        d->sesvc.store_cfg = sc; /* addrs and list live in this frame until the replica stops */
        d->sesvc.replica_id = cfg->replica_id;
        d->sesvc.idle_timeout_ms = (uint64_t)cfg->session_idle_timeout_s * 1000u;
        d->sesvc.gateway_id = d->id.gateway_id;
        d->ssvc.env = &d->env;
        d->ssvc.store_reads = !cfg->model_reads;
        d->ssvc.driver_name = strcmp(cfg->driver, "none") == 0 ? NULL : cfg->driver;
        rv = store_writer_start(&d->writer, &sc);
        d->writer_started = rv == 0;
        if (rv == 0) {
            store_writer_set_max_pending(&d->writer, cfg->write_queue_max);
            store_writer_set_max_batch(&d->writer, cfg->write_batch_max);
            store_writer_set_linger(&d->writer, cfg->write_batch_linger_ms);
        }
    }
    if (rv == 0) {
        rv = store_pool_init(&d->pool, &sc, 8);
        d->pool_started = rv == 0;
    }
    if (rv == 0) {
        rv = feed_init(&d->feed, &sc, 0);
        d->feed_ready = rv == 0;
        if (rv == 0) {
            feed_set_linger_us(&d->feed, cfg->read_index_linger_us);
        }
    }
    if (rv == 0) {
        d->ssvc.total_unsent_max = (size_t)cfg->watch_total_unsent_mib << 20;
        rv = sandboxes_svc_attach_feed(&d->ssvc, &d->feed);
    }
    if (rv == 0) {
        d->ns_model = tenants_ns_model_new();
        kind_model_attach_feed(d->ns_model, &d->feed);
        d->ns_reads.store_reads = !cfg->model_reads;
        d->ns_reads.model = d->ns_model; /* before the loop thread takes calls */
        d->q_model = tenants_quota_model_new();
        kind_model_attach_feed(d->q_model, &d->feed);
        d->q_reads = (struct kind_reads){.model = d->q_model, .store_reads = !cfg->model_reads};
        d->pol_model = policies_model_new();
        kind_model_attach_feed(d->pol_model, &d->feed);
        d->polsvc.reads = (struct kind_reads){.model = d->pol_model, .store_reads = !cfg->model_reads};
        d->polsvc.namespaces = d->ns_model;
        d->prov_model = providers_model_new();
        kind_model_attach_feed(d->prov_model, &d->feed);
        d->prov.reads = (struct kind_reads){.model = d->prov_model, .store_reads = !cfg->model_reads};
        d->grants_model = providers_grants_model_new();
        kind_model_attach_feed(d->grants_model, &d->feed);
        d->prov.grants = d->grants_model; /* ListGrants, read as d->prov.reads says */
        d->wp_model = warmpools_model_new();
        kind_model_attach_feed(d->wp_model, &d->feed);
        d->wsvc.reads = (struct kind_reads){.model = d->wp_model, .store_reads = !cfg->model_reads};
    }
    if (rv == 0) {
        d->esvc.ring_size = cfg->events_watch_ring;
        d->esvc.total_unsent_max = (size_t)cfg->watch_total_unsent_mib << 20;
        rv = events_svc_attach_feed(&d->esvc, &d->feed);
    }
    if (rv == 0) {
        /* Principals, role bindings, API key metadata and linked identities, kept by the feed for
         * the principals service's Gets and Lists (api/services/principals_svc.h) and
         * ListIdentities (api/services/links_svc.h); freed after the feed. */
        struct kind_model *ms[] = {principals_model_new(), principals_bindings_model_new(),
                                   principals_keys_model_new(), links_svc_links_model_new()};
        for (size_t i = 0; i < 4; i++) {
            kind_model_attach_feed(ms[i], &d->feed);
            d->preads[i] = (struct kind_reads){.model = ms[i], .store_reads = !cfg->model_reads};
        }
    }
    if (rv == 0) {
        /* The gate's authentication decides from those models and caches what only the store has
         * (key hashes); the feed's events invalidate the cache. Subscribed after the models, so a
         * change reaches them before it drops cached entries (api/gate/authn.h). */
        d->authn = authn_new(d->secrets.pepper, IDENTITY_PEPPER_SIZE, &d->writer);
        authn_attach_feed(d->authn, &d->feed);
        if (cfg->model_reads) {
            d->amodels = (struct authn_models_src){.principals = d->preads[0].model,
                                                   .bindings = d->preads[1].model,
                                                   .keys = d->preads[2].model,
                                                   .links = d->preads[3].model};
            struct authn_models am;
            authn_models_init(&am, &d->amodels);
            authn_set_models(d->authn, &am);
            /* the watches' credential rechecks read the models too (authn_recheck_models) */
            d->ssvc.authn = d->authn;
            d->esvc.authn = d->authn;
            d->sesvc.authn = d->authn; /* and the running sessions' checks */
        }
    }
    if (rv == 0) {
        rv = feed_start(&d->feed);
    }
    if (rv == 0 && replica_relay(d->replica) != NULL) {
        struct certrevoke_sync_config rsc = {
            .store = &sc, .relay = replica_relay(d->replica), .member_id = cfg->replica_id};
        rv = certrevoke_sync_start(&rsc, &d->revsync, errmsg);
    }
    if (rv == 0 && replica_relay(d->replica) != NULL) {
        rv = renew_server_start(d->renew_path, d->ca, d->replica, &d->writer, &d->renew_srv, errmsg);
    }
    if (rv == 0) {
        unsigned caps[JOBS_CLASSES] = {cfg->call_queue_max, cfg->unverified_call_queue_max};
        rv = jobs_start(&d->jobs, cfg->workers, caps);
        d->jobs_started = rv == 0;
    }
    if (rv == 0) {
        uv_loop_init(&d->loop);
        rv = serve(d, errmsg);
    }
    if (rv == 0) {
        rv = start_reconciler(d, &sc, errmsg);
    }
    if (rv == 0 && replica_relay(d->replica) != NULL && cfg->peer_tls_cert[0] == '\0') {
        /* The relay and the API read <data_dir>/tls: renew those files while running. */
        struct renewer_config nc = {.data_dir = cfg->data_dir,
                                    .ca = d->ca,
                                    .renew_days = cfg->cert_renew_days,
                                    .replica = d->replica,
                                    .api = cfg->api_h2c ? NULL : d->server};
        rv = renewer_start(&nc, &d->renewer, errmsg);
    }
    if (rv == 0 && replica_relay(d->replica) != NULL) {
        struct carotate_sync_config cc = {.data_dir = cfg->data_dir,
                                          .store = &sc,
                                          .ca = d->ca,
                                          .replica = d->replica,
                                          .api = cfg->api_h2c ? NULL : d->server,
                                          .renewer = d->renewer};
        rv = carotate_sync_start(&cc, &d->casync, errmsg);
    }
    if (rv == 0 && cfg->backup_dir[0] != '\0') {
        rv = start_backups(d, &sc, errmsg);
    }
    if (rv == 0 && d->reconciler != NULL && cfg->lifecycle_webhook_url[0] != '\0') {
        rv = start_hook(d, &sc, errmsg);
    }
    if (rv == 0) {
        struct ns_metrics_config nmc = {.pool = &d->pool,
                                        .nsstats = d->nsstats,
                                        .interval_ms = cfg->metrics_namespace_interval_ms,
                                        .max_namespaces = cfg->metrics_namespace_max};
        rv = ns_metrics_start(&nmc, &d->nsm);
    }
    if (rv == 0 && pthread_create(&d->maint_thread, NULL, maint_main, d) != 0) {
        rv = GERR_NOMEM;
    }
    if (rv == 0 && pthread_create(&d->loop_thread, NULL, loop_main, d) != 0) {
        rv = GERR_NOMEM;
    }
    if (rv != 0) {
        fprintf(stderr, "gantryd: %s\n", errmsg[0] != '\0' ? errmsg : gerr_str(rv));
        LOG_ERROR("start failed: %s", errmsg);
        _exit(1); /* threads of half-started parts may hold locks: leave without unwinding */
    }
    LOG_INFO("replica %" PRIu64
             " (%s) of cluster %s serving the API on %s (port %d), admin on %s, peers on %s",
             cfg->replica_id, cfg->replica_name, d->id.cluster_id, cfg->api_address,
             grpc_server_port(d->server), cfg->admin_address, bootstrap_peer_address(cfg));
    printf("READY %" PRIu64 " api=%s admin=%s peer=%s\n", cfg->replica_id, cfg->api_address,
           cfg->admin_address, bootstrap_peer_address(cfg));
    fflush(stdout);

    int sig;
    bool removed = false;
    const struct timespec tick = {.tv_sec = 1};
    do {
        sig = sigtimedwait(&wait_set, NULL, &tick);
        if (sig == SIGHUP) {
            LOG_INFO("received SIGHUP: reloading the TLS files and checking the certificate's renewal");
            if (d->renewer != NULL) {
                renewer_kick(d->renewer);
            }
        }
        removed = sig < 0 && replica_removed(d->replica);
    } while (sig != SIGTERM && sig != SIGINT && !removed);
    if (removed) {
        /* Not a member any more: stop serving at once; no handover (nothing to hand over). */
        fprintf(stderr,
                "gantryd: replica %" PRIu64 " was removed from the cluster: stopping. Empty %s and join "
                "again with a new join token to bring it back (docs/operations.md).\n",
                cfg->replica_id, cfg->data_dir);
        LOG_ERROR("removed from the cluster: stopping");
        sig = SIGINT;
    } else {
        LOG_INFO("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (d->driver != NULL && strcmp(d->cfg->driver, "kubernetes") == 0) {
        driver_k8s_stop(d->driver); /* a call waiting out throttling ends now, not after its wait */
    }
    carotate_sync_stop(d->casync); /* it forces the renewer's renewals */
    d->casync = NULL;
    renewer_stop(d->renewer); /* a renewal under way finishes; it reloads the API server */
    d->renewer = NULL;
    backup_sched_stop(d->bsched); /* before the reconciler it asks about the lease */
    lifecycle_hook_stop(d->hook); /* likewise */
    d->hook = NULL;
    reconciler_stop(d->reconciler); /* releases the lease: another replica takes over at once */
    d->reconciler = NULL;
    sandboxes_svc_stop(&d->ssvc); /* watches end first: the server waits for every call */
    events_svc_stop(&d->esvc);
    sessions_svc_stop(&d->sesvc);
    sroute_server_stop(d->sroute); /* its sessions ended with the service */
    d->sroute = NULL;
    uv_async_send(&d->stop_async);
    if (sig == SIGTERM) {
        replica_handover(d->replica, HANDOVER_TIMEOUT_MS); /* pauses our writes while it transfers */
    }
    pthread_join(d->loop_thread, NULL);
    pthread_join(d->maint_thread, NULL);
    backup_sched_free(d->bsched); /* the admin endpoint (its metrics) stopped with the loop */
    ns_metrics_stop(d->nsm);
    egress_svc_stop(d->egress); /* before the audit sink it reports to */
    d->egress = NULL;
    console_free(d->console); /* its calls go through the workers: before they stop */
    jobs_stop(&d->jobs);
    fwd_server_stop(d->fwd_server); /* every forwarded call was answered by the workers */
    fwd_client_free(d->fwd_client);
    gate_free(d->gate);
    nsstats_free(d->nsstats);
    audit_sink_stop(d->sink); /* its last rows go through the writer, stopped below */
    admission_free(d->admission);
    if (d->oidc != NULL) {
        oidc_free(d->oidc);
    }
    health_free(d->health);
    reflection_free(d->refl);
    grpc_server_free(d->server);
    uv_loop_close(&d->loop);
    certrevoke_sync_stop(d->revsync);
    if (d->feed_ready) {
        feed_close(&d->feed); /* the server is gone: no watch is left for the hub to feed */
    }
    authn_free(d->authn); /* after the feed, whose thread invalidates its entries */
    d->ns_reads.model = NULL;
    d->polsvc.reads.model = NULL;
    d->polsvc.namespaces = NULL;
    kind_model_free(d->ns_model); /* after the feed, whose thread keeps it, and after the server's calls */
    d->ns_model = NULL;
    d->q_reads.model = NULL;
    kind_model_free(d->q_model);
    d->q_model = NULL;
    kind_model_free(d->pol_model);
    d->pol_model = NULL;
    d->prov.reads.model = NULL;
    kind_model_free(d->prov_model);
    d->prov_model = NULL;
    d->prov.grants = NULL;
    kind_model_free(d->grants_model);
    d->grants_model = NULL;
    d->wsvc.reads.model = NULL;
    kind_model_free(d->wp_model);
    d->wp_model = NULL;
    sandboxes_svc_detach_feed(&d->ssvc);
    events_svc_detach_feed(&d->esvc);
    renew_server_stop(d->renew_srv); /* before the writer it records certificates with */
    for (size_t i = 0; i < 4; i++) { /* after the feed and the server's calls */
        kind_model_free(d->preads[i].model);
        d->preads[i].model = NULL;
    }
    store_pool_close(&d->pool);
    store_writer_stop(&d->writer);
    driver_free(d->driver);
    replica_stop(d->replica);
    raftlog_reader_free(d->log_reader); /* after everything that probes the log has stopped */
    providers_svc_close(&d->prov);
    if (d->peppers_ready) {
        pepper_ring_close(&d->peppers);
    }
    identity_secrets_free(&d->secrets);
    cakeeper_free(d->ca);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    mem_free(d);
    LOG_INFO("stopped");
    return removed ? 3 : 0;
}

int main(int argc, char **argv)
{
    (void)mem_tune_for_server(); /* before any thread: bounds what freed Raft entries leave behind */
    const char *sub = "run";
    if (argc > 1 && argv[1][0] != '-') {
        sub = argv[1];
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    if (strcmp(sub, "version") == 0) {
        printf("gantryd %s\n", GANTRY_VERSION);
        return 0;
    }
    if (strcmp(sub, "help") == 0) {
        usage(stdout);
        return 0;
    }
    bool show = false;
    if (strcmp(sub, "config") == 0) {
        if (argc < 2 || strcmp(argv[1], "show") != 0) {
            fprintf(stderr, "gantryd config: the only command is \"show\" (gantryd config show [flags])\n");
            return 2;
        }
        show = true;
        sub = "run"; /* the flags, file and environment of a run, printed instead of run */
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    bool known = strcmp(sub, "run") == 0 || strcmp(sub, "init") == 0 || strcmp(sub, "restore") == 0 ||
                 strcmp(sub, "recover") == 0 || strcmp(sub, "rotate-provider-key") == 0 ||
                 strcmp(sub, "rotate-pepper") == 0 || strcmp(sub, "pepper-status") == 0 ||
                 strcmp(sub, "rotate-ca") == 0;
    if (!known) {
        fprintf(stderr,
                "gantryd: unknown command \"%s\" (run, init, restore, recover, rotate-provider-key, "
                "rotate-pepper, pepper-status, rotate-ca, config show, version, help)\n",
                sub);
        return 2;
    }
    const char *ca_action = NULL;
    if (strcmp(sub, "rotate-ca") == 0) {
        if (argc < 2 || argv[1][0] == '-') {
            fprintf(stderr,
                    "gantryd rotate-ca: say begin, finish or status (gantryd rotate-ca begin [flags])\n");
            return 2;
        }
        ca_action = argv[1];
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    char errmsg[GERR_MSG_SIZE] = "";
    struct sub_flags sf = {0};
    if (strcmp(sub, "run") != 0 && take_flags(&argc, argv, &sf, errmsg) != 0) {
        fprintf(stderr, "gantryd %s: %s\n", sub, errmsg);
        return 2;
    }
    /* init and restore make replica 1: say so for the user unless they did. */
    char **args = mem_zalloc(sizeof *args * ((size_t)argc + 2));
    memcpy(args, argv, sizeof *args * (size_t)argc);
    bool has_id = getenv("GANTRY_REPLICA_ID") != NULL;
    for (int i = 1; i < argc; i++) {
        has_id = has_id || strncmp(argv[i], "--replica-id", 12) == 0;
    }
    if (!has_id && (strcmp(sub, "init") == 0 || strcmp(sub, "restore") == 0)) {
        args[argc++] = "--replica-id=1";
    }
    struct config cfg;
    bool help = false;
    int lrv = load_config(argc, args, &cfg, &help, errmsg);
    mem_free(args);
    if (lrv != 0) {
        fprintf(stderr, "gantryd: %s\n", errmsg);
        config_free(&cfg);
        return 2;
    }
    int rc;
    if (help) {
        usage(stdout);
        rc = 0;
    } else if (show) {
        struct buf out;
        buf_init(&out);
        config_dump_json(&cfg, &out);
        fwrite(out.data, 1, out.len, stdout);
        buf_close(&out);
        rc = 0;
    } else if (strcmp(sub, "init") == 0 || strcmp(sub, "restore") == 0) {
        rc = cmd_init(&cfg, &sf, strcmp(sub, "restore") == 0);
    } else if (strcmp(sub, "rotate-provider-key") == 0) {
        rc = rotate_key_command(&cfg, stdout);
    } else if (strcmp(sub, "rotate-ca") == 0) {
        rc = carotate_command(&cfg, ca_action, stdout);
    } else if (strcmp(sub, "rotate-pepper") == 0 || strcmp(sub, "pepper-status") == 0) {
        rc = rotate_pepper_command(&cfg, strcmp(sub, "rotate-pepper") == 0, stdout);
    } else if (strcmp(sub, "recover") == 0) {
        rc = cmd_recover(&cfg, &sf);
        /* dqlite 1.11 leaks the node dqlite_node_recover_ext needs and never starts (its destroy
         * skips the raft and libuv teardown that only a stop does: see store/node_main.c). The
         * process ends here anyway; leave without running exit handlers, so LeakSanitizer builds
         * do not report that library leak. Everything of ours is freed first. */
        config_free(&cfg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    } else {
        rc = cmd_run(&cfg);
    }
    config_free(&cfg);
    return rc;
}
