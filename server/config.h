/* gantryd's configuration: defaults, a JSON file, environment variables and flags, validated.
 *
 * Precedence, lowest to highest: built-in default < JSON file < environment (GANTRY_<KEY>) < flags
 * (--<kebab-key>). Every field remembers which of those set it, and a layer never overrides a value
 * set by a higher one, so the order of the calls does not matter. That lets gantryd read the flags
 * and the environment first (one of them names the file, --config or GANTRY_CONFIG) and the file
 * last:
 *
 *   struct config cfg;
 *   bool help;
 *   config_init_defaults(&cfg);
 *   int rv = config_apply_env(&cfg, environ, errmsg);
 *   if (rv == 0) rv = config_apply_flags(&cfg, argc, argv, &help, errmsg);
 *   if (rv == 0 && help) { config_help(&b); print it; exit 0 }
 *   if (rv == 0 && cfg.config_file[0] != '\0') rv = config_load_file(&cfg, cfg.config_file, errmsg);
 *   if (rv == 0) rv = config_read_join_token_file(&cfg, errmsg);
 *   if (rv == 0) rv = config_validate(&cfg, errmsg);
 *   if (rv != 0) { print errmsg; exit 2 }
 *   ...
 *   config_free(&cfg);
 *
 * Every field is described once, in one entry of the field table in config.c (key, type, member,
 * default, range, validator, help). The JSON keys, the environment variable names and the flags
 * (derived from the key: api_address is GANTRY_API_ADDRESS and --api-address), the --help text,
 * docs/configuration.md and config_dump_json all come from that table. The rules between fields
 * (keys that come together or exclude each other, orders, ports) are a second table beside it.
 *
 * Errors are GERR_INVAL (bad input), GERR_IO / GERR_NOTFOUND / GERR_PERM (a file could not be read)
 * or GERR_NOMEM (jansson could not allocate). The message in @errmsg starts with "config: " and names
 * the key and where its value came from, e.g.
 *   config: peer_address (from GANTRY_PEER_ADDRESS): "10.0.0.1" is not a.b.c.d:port
 * Messages never contain the value of a secret (join_token).
 *
 * Nothing here starts threads, opens sockets or touches global state (not even the log level): the
 * module is pure apart from reading the files it is asked to read. */
#ifndef GANTRY_SERVER_CONFIG_H
#define GANTRY_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"

/* Where a field's value came from, in increasing precedence. */
enum config_source { CONFIG_SRC_DEFAULT = 0, CONFIG_SRC_FILE, CONFIG_SRC_ENV, CONFIG_SRC_FLAG };

/* Room for the provenance of every field; config.c checks the table fits at compile time. */
#define CONFIG_MAX_FIELDS 112

/* A list of strings (the join addresses). Owned by the config. */
struct config_list {
    char **items;
    size_t n;
};

/* The effective configuration. The caller owns the struct; every string and list in it is owned by
 * the struct (heap, freed by config_free). Strings are never NULL after config_init_defaults: an
 * unset optional string is "". Defaults are listed with each field; docs/configuration.md explains
 * them at more length. */
struct config {
    /* config: path of the JSON file to load (flag/env only). Default "": no file. gantryd has no
     * implicit file path, so what a replica runs with is always visible on its command line or in
     * its environment. */
    char *config_file;

    /* replica_id: this replica's id in the cluster (the dqlite node id). Required, 1..2^63-1, and
     * stable forever: a replica that comes back with a new id is a new member. Id 1 bootstraps a new
     * cluster when its data dir is empty (store/node.h), so a joining replica must not use 1. */
    uint64_t replica_id;
    /* replica_name: human name in logs, audit and the Cluster API. Default "": config_validate
     * derives "replica-<id>". DNS-1123 label, at most 63 characters. */
    char *replica_name;
    /* data_dir: dqlite's data and this replica's cluster identity. Default "/var/lib/gantry". */
    char *data_dir;

    /* api_address: gRPC listen address, "a.b.c.d:port" or "[v6]:port" (numeric: a control plane
     * binds where it is told, it does not resolve names). Default "127.0.0.1:8443": nothing is
     * exposed until the operator says so. */
    char *api_address;
    /* peer_address: Raft/dqlite peer TLS address, "a.b.c.d:port". Default "127.0.0.1:9443". It is
     * both bound and advertised to the other members (dqlite 1.11 dials IPv4 literals and identifies
     * the leader by exact string), so it must be a concrete address: no 0.0.0.0, no port 0. */
    char *peer_address;
    /* peer_advertise_address: what the other members dial when it differs from peer_address (for
     * example a Kubernetes Service's stable IP in front of a pod whose own IP changes). Default "":
     * the same as peer_address. When set, peer_address may be 0.0.0.0:port. */
    char *peer_advertise_address;
    /* admin_address: HTTP /healthz, /readyz, /metrics. Default "127.0.0.1:8081". Same syntax as
     * api_address. */
    char *admin_address;

    /* gateway_id: identifies this gateway cluster in Kubernetes names and labels
     * (openshell-{gateway_id}-{namespace}). Default "gantry". DNS-1123 label of at most 20
     * characters so that the derived names stay under Kubernetes' 63. */
    char *gateway_id;
    /* failure_domain: 0 = unknown (default). Either an integer, or a name (rack, zone) that is
     * hashed to a non-zero integer (FNV-1a 64, see config_failure_domain_hash); the name is kept in
     * failure_domain_name for display ("" when an integer was given). */
    uint64_t failure_domain;
    char *failure_domain_name;

    /* API TLS. Empty cert and key (the default) mean the replica's certificate issued by the
     * cluster CA at init/join. Cert and key come as a pair. api_tls_client_ca enables client
     * certificate authentication (mTLS principals). */
    char *api_tls_cert;
    char *api_tls_key;
    char *api_tls_client_ca;
    /* api_h2c: plaintext HTTP/2, for tests and local tools only. Default false. Allowed only when
     * api_address is a loopback address, and excludes the api_tls_* paths. */
    bool api_h2c;

    /* Peer TLS. All three or none; none (the default) means the files init/join create in
     * data_dir. */
    char *peer_tls_ca;
    char *peer_tls_cert;
    char *peer_tls_key;
    /* cert_renew_days: at start, a replica whose peer certificate (the one init/join created in
     * <data_dir>/tls; not peer_tls_cert, which the operator manages) has fewer days left renews it
     * (raft/certrenew.h). Default 30, range 1..365. */
    unsigned cert_renew_days;

    /* join: API addresses of existing members to join through ("a.b.c.d:port", "[v6]:port" or
     * "name:port": dialled once, so a DNS name such as a Kubernetes Service is fine here). Default empty: no
     * join (bootstrap, or restart of an existing member). From env or a flag: comma-separated;
     * repeating --join adds to the list. */
    struct config_list join;
    /* join_token: the secret a Platform Admin created. Never from a flag (flags show in ps): from the
     * file, GANTRY_JOIN_TOKEN, or join_token_file. Redacted in config_dump_json and never quoted in
     * error messages. */
    char *join_token;
    /* join_token_file: a file holding the join token; read by config_read_join_token_file. */
    char *join_token_file;
    /* audit_retention_hours: audit events older than this are pruned by the leader's replica.
     * Default 2160 (90 days), range 1..876000. */
    unsigned audit_retention_hours;
    /* event_retention_s: change events (the Watch and reconciler feed) older than this are pruned;
     * a watch resuming from before the oldest kept revision gets OUT_OF_RANGE. Default 86400. */
    unsigned event_retention_s;
    /* session_idle_timeout_s: an Exec or PortForward session idle (no byte either way) this long
     * ends. Default 14400, 0: never, range 0..604800. */
    unsigned session_idle_timeout_s;
    /* retention_interval_s: how often retention runs. Default 60, range 1..86400. */
    unsigned retention_interval_s;
    /* Scheduled backups (docs/operations.md, "Scheduled backups"): the replica holding the
     * reconciler lease writes a sealed backup into backup_dir every backup_interval_s seconds
     * (default 3600, range 1..604800), then deletes the oldest beyond backup_keep_count (default
     * 24, range 1..100000) and those older than backup_keep_age_hours (default 0: no age limit);
     * the newest is never deleted. backup_dir "" (default): none. backup_seal_key_file: the key
     * (store/sealed.h), required with backup_dir: scheduled backups are never unencrypted. */
    char *backup_dir;
    unsigned backup_interval_s;
    unsigned backup_keep_count;
    unsigned backup_keep_age_hours;
    char *backup_seal_key_file;
    /* The compute driver and the reconciler lease (docs/reconciler.md). driver: "process" (default),
     * "fake" or "none". driver_state_dir: the process driver's state (shared by the replicas of a
     * host) or the fake driver's state file; "" = <data_dir>/sandboxes. driver_journal: the fake
     * driver's call journal. Lease timing: duration 15000, renew deadline 10000, retry 2000 ms;
     * config_validate checks retry < renew deadline < duration. */
    char *driver;
    /* The kubernetes driver (drivers/k8s.h): namespace mode managed (default), operator (the
     * k8s_namespaces allowlist) or shared (k8s_shared_namespace); the API server, token and CA
     * files ("" = in cluster). */
    char *k8s_namespace_mode;
    struct config_list k8s_namespaces;
    char *k8s_shared_namespace;
    char *k8s_server, *k8s_token_file, *k8s_ca_file;
    /* k8s_service_accounts: the allow-list of driver_config service_account values (empty: none);
     * k8s_image_pull_secrets: Secrets in the gateway's namespace copied into managed namespaces.
     * provision_deadline_s: how long a create may keep failing transiently (and a sandbox that was
     * never READY stay PROVISIONING) before the sandbox is ERROR. Default 300. */
    struct config_list k8s_service_accounts, k8s_image_pull_secrets;
    unsigned provision_deadline_s;
    char *driver_state_dir;
    char *driver_journal;
    unsigned lease_duration_ms, lease_renew_deadline_ms, lease_retry_ms;
    /* The lifecycle webhook (server/lifecycle_hook.h, docs/platform-controller.md): "" = off. */
    char *lifecycle_webhook_url, *lifecycle_webhook_ca_file, *lifecycle_webhook_secret_file;
    unsigned lifecycle_webhook_timeout_ms, lifecycle_webhook_max_attempts;
    unsigned lifecycle_webhook_backoff_ms, lifecycle_webhook_backoff_max_ms;
    /* oidc_issuers_file: a JSON file holding {"oidc_issuers": [...]} (docs/oidc.md). Default "". */
    char *oidc_issuers_file;
    /* join_ca_file: a CA certificate that verifies the member joined through, for join tokens that
     * carry no CA fingerprint (a token pre-shared by the Helm chart). Default "". */
    char *join_ca_file;
    /* cert_sans: extra DNS names / IPs for this replica's certificate. Default empty. */
    struct config_list cert_sans;
    /* Set by config_read_join_token_file: join_token holds that file's content. */
    bool join_token_from_file;

    /* Raft timing (store/node.h). latency_ms: typical peer round trip; dqlite derives heartbeat =
     * 1.5x and election timeout = 15x. Default 20, range 1..3600000. */
    unsigned latency_ms;
    /* snapshot_threshold: entries between snapshots. Default 256, >= 1. */
    unsigned snapshot_threshold;
    /* snapshot_trailing: entries kept after a snapshot. Default 256, >= 4 and >= threshold. */
    unsigned snapshot_trailing;
    /* roles_grace_ms: how long a member may be unreachable before it is replaced (raft/roles.h).
     * Default 30000; must exceed the election timeout (15 x latency_ms). */
    uint64_t roles_grace_ms;
    /* standby_site: this replica belongs to the standby site (raft/roles.h, ROLES_STANDBY_SITE):
     * it advertises its failure domain with that bit set. Default false. */
    bool standby_site;

    /* log_level: error, warn, info (default), debug or trace (case-insensitive, stored lowercase). */
    char *log_level;

    /* Limits. max_message_bytes: largest gRPC message accepted, default 4 MiB (gRPC's own default),
     * range 1 KiB..256 MiB. max_concurrent_streams: HTTP/2 streams per connection, default 100,
     * range 1..10000. */
    unsigned max_message_bytes;
    unsigned max_concurrent_streams;

    /* Load and admission (docs/security.md, "Load and admission limits"): worker threads, the two
     * bounded call queues (recently verified credentials first), the writer's bounded queue, the
     * per-source limits on unverified calls and failed authentications, and the aggregation of
     * refused calls in the audit trail. Defaults: 4 workers; queues 4096 / 256 calls and 1024
     * writes; 20 failures per 60000 ms; 50 calls/s (burst 100); known 600000 ms; refused 5000 ms;
     * audit window 10000 ms, flush 1000 ms, 1024 distinct events. */
    unsigned workers;
    unsigned call_queue_max, unverified_call_queue_max, write_queue_max;
    unsigned auth_fail_limit, auth_fail_window_ms, unverified_call_rate, unverified_call_burst;
    unsigned known_credential_ttl_ms, refused_credential_ttl_ms;
    unsigned audit_window_ms, audit_flush_ms, audit_max_keys;
    /* The write path (docs/architecture.md): batch size, forwarding to the leader's replica. */
    unsigned write_batch_max;
    unsigned write_batch_linger_ms;
    unsigned read_index_linger_us;
    bool forward_writes;
    bool model_reads;
    unsigned events_watch_ring; /* Events.Watch's ring (api/services/events_svc.h) */
    unsigned
        watch_total_unsent_mib; /* both watch hubs' bound on unread bytes (events_svc.h, sandboxes_svc.h) */
    /* The egress relay (docs/egress.md). */
    unsigned egress_relay_port, egress_max_connections, egress_max_connections_per_sandbox;
    unsigned egress_policy_refresh_ms;
    char *egress_relay_k8s_address, *egress_relay_k8s_pod_selector; /* docs/egress.md, "Kubernetes" */
    unsigned egress_relay_k8s_port;
    /* Transport limits (docs/security.md, "Transport limits"). */
    unsigned api_max_connections_per_source, api_established_reserve_percent, api_handshake_timeout_ms;
    unsigned api_idle_timeout_ms, api_max_request_fields, api_max_request_depth;
    unsigned admin_max_connections, admin_probe_reserve, admin_probe_timeout_ms, admin_header_timeout_ms;
    unsigned admin_idle_timeout_ms, admin_max_buffered_bytes;
    unsigned peer_max_handshakes_per_source, peer_refusal_log_window_ms;
    /* The operator console (docs/console.md) and the per-namespace metrics (docs/metrics.md). */
    bool console;
    unsigned console_max_streams, console_refresh_ms, console_session_idle_s;
    unsigned metrics_namespace_interval_ms, metrics_namespace_max;

    /* Provenance, indexed like the field table. */
    enum config_source origin[CONFIG_MAX_FIELDS];
    /* The file the CONFIG_SRC_FILE values came from ("" if none), for messages. */
    char *loaded_file;
};

/* Room for a field's environment variable or flag name, with its NUL. */
#define CONFIG_NAME_SIZE 64

/* A read-only view of one row of the field table, for --help, the docs and their test. The names are
 * derived from the key, so they are copied in; the other strings are static. */
struct config_field_info {
    const char *key;             /* JSON key, e.g. "api_address" */
    char env[CONFIG_NAME_SIZE];  /* "GANTRY_API_ADDRESS" */
    char flag[CONFIG_NAME_SIZE]; /* "--api-address", or "" when the field may not come from a flag */
    const char *type;            /* "string", "integer", "bool", "host:port", ... */
    const char *default_text;    /* as shown in the docs, e.g. "127.0.0.1:8443" or "(none)" */
    const char *help;            /* one line */
    bool secret;                 /* redacted in dumps, never quoted in messages */
    bool file_ok;                /* may appear in the JSON file */
};

/* Number of rows in the field table, and row @i (0 <= i < count). */
size_t config_field_count(void);
void config_field_get(size_t i, struct config_field_info *out);

/* Fill @cfg with the defaults; every origin is CONFIG_SRC_DEFAULT. Cannot fail (allocation aborts,
 * see lib/mem.h). */
void config_init_defaults(struct config *cfg);

/* Free what @cfg owns (not @cfg itself). @cfg may then be re-initialised. Safe on a zeroed struct. */
void config_free(struct config *cfg);

/* Load the JSON object in @path (at most 1 MiB). Values from the file replace defaults but not
 * values already set from the environment or flags (those file values are still checked, so a
 * mistake in the file is reported even while it is overridden). Unknown keys, duplicate keys, wrong JSON
 * types and malformed JSON (message with line and column) are GERR_INVAL; an unreadable file is GERR_NOTFOUND
 * / GERR_PERM / GERR_IO. On error @cfg may hold some of the file's values: discard it. */
int config_load_file(struct config *cfg, const char *path, char *errmsg);

/* The same from @len bytes at @data; @name stands for the file in messages. */
int config_load_buffer(struct config *cfg, const char *data, size_t len, const char *name, char *errmsg);

/* Apply GANTRY_<KEY> variables from @envp (NULL-terminated "NAME=value" strings, e.g. environ),
 * except over values set by flags (checked all the same).
 * Variables outside the table are ignored, since tools, tests and Kubernetes service links set
 * other GANTRY_* variables, unless the name is a near miss of a config variable
 * (GANTRY_API_ADRESS): that is GERR_INVAL with a suggestion. */
int config_apply_env(struct config *cfg, char *const envp[], char *errmsg);

/* Apply flags from @argv[1 .. argc) (argv[0], the program or subcommand name, is skipped):
 * "--key value", "--key=value"; bool flags take no separate value ("--api-h2c",
 * "--api-h2c=false"). "--help"/"-h" set *@help and stop (nothing else is applied after it).
 * Positional arguments, unknown flags (with a suggestion), a missing value and --join-token are
 * GERR_INVAL. */
int config_apply_flags(struct config *cfg, int argc, char *const argv[], bool *help, char *errmsg);

/* If join_token_file is set, read the token from it (trailing newline stripped, at most 4 KiB),
 * replacing join_token. 0 if nothing to do. Call after the layers and before config_validate. */
int config_read_join_token_file(struct config *cfg, char *errmsg);

/* Check every field and the rules between fields, and fill derived defaults (replica_name).
 * Returns 0 or GERR_INVAL with the first problem found: the fields' own checks in field table order,
 * then the rules in rule table order. */
int config_validate(struct config *cfg, char *errmsg);

/* Append the effective configuration to @out as a JSON object that config_load_buffer accepts, with
 * secrets replaced by "(redacted)" (so a dump with a join token does not load back unchanged, on
 * purpose). No trailing NUL. */
void config_dump_json(const struct config *cfg, struct buf *out);

/* Append the --help text for gantryd's flags to @out (NUL-terminated). */
void config_help(struct buf *out);

/* Append the generated reference table for docs/configuration.md to @out (NUL-terminated). */
void config_doc_markdown(struct buf *out);

/* The failure-domain hash of a name: FNV-1a 64 of its bytes, with 0 mapped to 1 (0 means
 * "unknown"). Stable across versions: changing it would silently regroup every cluster. */
uint64_t config_failure_domain_hash(const char *name);

/* "default", "file", "env" or "flag". */
const char *config_source_name(enum config_source src);

#endif
