/* gantryd's configuration. See config.h for the contract.
 *
 * Everything is driven by the field table below: one entry per key with its type, the member of
 * struct config it lives in, its default (as text, parsed by the same code as an environment
 * variable, so the documented default is exactly what runs), its range, an optional validator, flags
 * and the help line. The environment variable and the flag are not in the table: they are derived
 * from the key (env_name, flag_name), so they cannot drift from it. Adding a key means adding a
 * member to struct config and an entry here; the JSON loader, the environment and flag parsers,
 * --help, config_dump_json and docs/configuration.md (whose test compares it with
 * config_doc_markdown) follow.
 *
 * Setting a value happens in two steps. set_*() checks the syntax and the range of one value and
 * stores it, so a value that is not an integer never lands in an integer field; config_validate()
 * then runs each field's validator (formats: addresses, DNS labels) and then the rule table, the rules
 * between fields (TLS files that come together, h2c only on loopback, join needs a token, snapshot
 * trailing >= threshold, lease timing, ports apart), most of them one line of a few shapes. */
#include "server/config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/names.h"
#include "lib/addr.h"
#include "lib/mem.h"
#include "lib/utf8.h"

/* Input limits: a config is small; anything larger is a mistake or an attack on the parser. */
#define CONFIG_FILE_MAX   (1u << 20)
#define CONFIG_STRING_MAX 4096u
#define CONFIG_LIST_MAX   64u
#define CONFIG_TOKEN_MAX  4096u

/* How a value in an error message is shown: quoted, escaped, and cut after this many bytes. */
#define QUOTE_MAX 80u

enum field_type {
    FT_STRING, /* char * */
    FT_BOOL,   /* bool */
    FT_U32,    /* unsigned, range [min, max] */
    FT_U64,    /* uint64_t, range [min, max] */
    FT_LIST,   /* struct config_list */
    FT_DOMAIN, /* failure_domain: uint64_t plus its name (see set_domain) */
};

enum {
    F_SECRET = 1u << 0,  /* never shown: redacted in dumps and messages */
    F_NO_FLAG = 1u << 1, /* may not come from a flag (secrets: flags show in ps) */
    F_NO_FILE = 1u << 2, /* may not come from the file (the file's own path) */
};

struct field;
/* A validator checks the field's current value. On failure it writes the reason (completing
 * "config: <key> (from <origin>): <value> ...") into @why and returns GERR_INVAL. */
typedef int (*field_check_fn)(struct config *cfg, const struct field *f, char *why);

struct field {
    const char *key; /* JSON key; the environment variable and the flag derive from it (env_name) */
    enum field_type type;
    size_t offset;   /* of the member in struct config */
    const char *def; /* default as text, NULL = required / no default ("" or 0) */
    field_check_fn check;
    uint64_t min, max;     /* integer range */
    unsigned flags;        /* F_* */
    const char *type_name; /* for --help and docs */
    const char *help;
};

static int check_name63(struct config *cfg, const struct field *f, char *why);
static int check_nonempty(struct config *cfg, const struct field *f, char *why);
static int check_listen(struct config *cfg, const struct field *f, char *why);
static int check_peer(struct config *cfg, const struct field *f, char *why);
static int check_peer_advertise(struct config *cfg, const struct field *f, char *why);
static int check_sans(struct config *cfg, const struct field *f, char *why);
static int check_driver(struct config *cfg, const struct field *f, char *why);
static int check_k8s_mode(struct config *cfg, const struct field *f, char *why);
static int check_gateway_id(struct config *cfg, const struct field *f, char *why);
static int check_domain(struct config *cfg, const struct field *f, char *why);
static int check_join(struct config *cfg, const struct field *f, char *why);
static int check_token(struct config *cfg, const struct field *f, char *why);
static int check_log_level(struct config *cfg, const struct field *f, char *why);
static int check_webhook_url(struct config *cfg, const struct field *f, char *why);

static int cur_error(const struct config *cfg, const char *key, char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool is_set(const char *s);
static int token_conflict(const struct config *cfg, char *errmsg);

/* Table entries. FIELD spells out everything, for the exceptions: a member named unlike its key, a
 * key that must not come from a flag or the file, a required key, a type of its own. The others
 * cover the usual kinds, whose member is named like the key:
 *   STRING(key, default, check, type name, help)
 *   UINT(key, default, min, max, help)   FT_U32 or FT_U64 by the member's width; type name "integer"
 *   BOOL(key, default, help)
 *   LIST(key, check, type name, help)    default empty
 * UINT and BOOL take their default as a literal and store it as text, like every default. */
#define FIELD(key_, member_, type_, def_, check_, min_, max_, flags_, type_name_, help_)                     \
    {                                                                                                        \
        .key = #key_, .type = (type_), .offset = offsetof(struct config, member_), .def = (def_),            \
        .check = (check_), .min = (min_), .max = (max_), .flags = (flags_), .type_name = (type_name_),       \
        .help = (help_)                                                                                      \
    }
#define STRING(key_, def_, check_, type_name_, help_)                                                        \
    FIELD(key_, key_, FT_STRING, def_, check_, 0, 0, 0, type_name_, help_)
#define UINT(key_, def_, min_, max_, help_)                                                                  \
    FIELD(key_, key_, sizeof(((struct config *)NULL)->key_) == sizeof(uint64_t) ? FT_U64 : FT_U32, #def_,    \
          NULL, min_, max_, 0, "integer", help_)
#define BOOL(key_, def_, help_) FIELD(key_, key_, FT_BOOL, #def_, NULL, 0, 0, 0, "bool", help_)
#define LIST(key_, check_, type_name_, help_)                                                                \
    FIELD(key_, key_, FT_LIST, "", check_, 0, 0, 0, type_name_, help_)

/* The field table. Order: identity, addresses, Kubernetes identity, TLS, join, Raft, logging, limits.
 * Keep docs/configuration.md in step by regenerating its table (see that file). */
static const struct field fields[] = {
    FIELD(config, config_file, FT_STRING, "", NULL, 0, 0, F_NO_FILE, "path",
          "JSON configuration file to load (lowest precedence after the defaults)"),
    FIELD(replica_id, replica_id, FT_U64, NULL, NULL, 1, INT64_MAX, 0, "integer",
          "this replica's stable, non-zero id in the cluster; 1 bootstraps a new cluster"),
    STRING(replica_name, "", check_name63, "DNS-1123 label",
           "human name in logs, audit and the Cluster API; empty means replica-N for replica_id N"),
    STRING(data_dir, "/var/lib/gantry", check_nonempty, "path",
           "directory for the database and this replica's cluster identity"),
    STRING(api_address, "127.0.0.1:8443", check_listen, "host:port",
           "gRPC API listen address, a.b.c.d:port or [v6]:port"),
    STRING(peer_address, "127.0.0.1:9443", check_peer, "a.b.c.d:port",
           "Raft/dqlite peer TLS address, bound and advertised to peers: IPv4 literal, not port 0; "
           "0.0.0.0 only with peer_advertise_address"),
    STRING(peer_advertise_address, "", check_peer_advertise, "a.b.c.d:port",
           "the peer address other members dial, when it differs from peer_address (a Kubernetes "
           "Service IP); empty: peer_address"),
    STRING(admin_address, "127.0.0.1:8081", check_listen, "host:port",
           "HTTP /healthz, /readyz and /metrics listen address"),
    STRING(gateway_id, "gantry", check_gateway_id, "DNS-1123 label",
           "this gateway cluster's id in Kubernetes names and labels, at most 20 characters"),
    FIELD(failure_domain, failure_domain, FT_DOMAIN, "0", check_domain, 0, 0, 0, "integer or name",
          "rack or zone for spreading voters: an integer, or a name hashed to one; 0 = unknown"),
    STRING(api_tls_cert, "", NULL, "path",
           "API server certificate (PEM); empty: the replica certificate issued by the cluster CA"),
    STRING(api_tls_key, "", NULL, "path", "API server private key (PEM); set together with api_tls_cert"),
    STRING(api_tls_client_ca, "", NULL, "path",
           "CA bundle for API client certificates (enables mTLS authentication)"),
    BOOL(api_h2c, false,
         "serve the API as plaintext HTTP/2; only on a loopback api_address, for tests and local tools"),
    STRING(peer_tls_ca, "", NULL, "path",
           "cluster CA for peer TLS; the three peer_tls_* come together, empty: the files init/join create"),
    STRING(peer_tls_cert, "", NULL, "path",
           "this replica's peer certificate (PEM), issued by the cluster CA"),
    STRING(peer_tls_key, "", NULL, "path", "this replica's peer private key (PEM)"),
    UINT(cert_renew_days, 30, 1, 365,
         "renew this replica's peer certificate (the one init/join created, not peer_tls_cert) when fewer "
         "days than this are left: checked at start and hourly while running"),
    LIST(join, check_join, "list of host:port",
         "API addresses (IP or DNS name) of members to join through; comma-separated in env and flags, "
         "--join may repeat"),
    FIELD(join_token, join_token, FT_STRING, "", check_token, 0, 0, F_SECRET | F_NO_FLAG, "secret",
          "join token from a Platform Admin; never a flag (flags show in ps): file, env or join_token_file"),
    STRING(join_token_file, "", NULL, "path", "file holding the join token (trailing newline ignored)"),
    STRING(oidc_issuers_file, "", NULL, "path",
           "JSON file {\"oidc_issuers\": [...]} of the OIDC issuers whose tokens authenticate API calls "
           "(docs/oidc.md); empty: no OIDC"),
    UINT(audit_retention_hours, 2160, 1, 876000,
         "audit events older than this are deleted in the background (default 90 days)"),
    UINT(event_retention_s, 86400, 1, 31536000,
         "change events (the feed of Sandboxes.Watch and the reconciler) older than this are deleted in the "
         "background; a watch resuming from an older revision gets OUT_OF_RANGE and lists again (default 1 "
         "day)"),
    UINT(session_idle_timeout_s, 14400, 0, 604800,
         "an Exec or PortForward session in which no byte moves either way for this long is ended "
         "(DEADLINE_EXCEEDED; the command is killed); 0: never (default 4 hours, the kubelet's streaming "
         "idle timeout; Logs follows are not cut)"),
    UINT(retention_interval_s, 60, 1, 86400,
         "how often the leader's replica deletes audit events, change events and idempotency records past "
         "retention"),
    STRING(backup_dir, "", NULL, "path",
           "the lease holder writes a sealed (encrypted) backup here every backup_interval_s and prunes old "
           "ones "
           "(docs/operations.md, \"Scheduled backups\"); empty: no scheduled backups"),
    UINT(backup_interval_s, 3600, 1, 604800, "seconds between scheduled backups"),
    UINT(backup_keep_count, 24, 1, 100000,
         "scheduled backups kept in backup_dir: the oldest beyond this are deleted"),
    UINT(backup_keep_age_hours, 0, 0, 876000,
         "scheduled backups older than this are deleted (the newest one never is); 0: no age limit"),
    STRING(backup_seal_key_file, "", NULL, "path",
           "the key of scheduled backups: 32 raw bytes or 64 hex digits, in a file only its owner may read; "
           "required with backup_dir"),
    STRING(driver, "process", check_driver, "process|kubernetes|fake|none",
           "the compute driver the lease holder drives: process (local bubblewrap sandboxes), kubernetes "
           "(agents.x-k8s.io Sandbox objects), fake (tests), none (no reconciler)"),
    STRING(driver_state_dir, "", NULL, "path",
           "process driver: where sandbox state lives, shared by the replicas of one host so any adopts the "
           "others' sandboxes; fake driver: its shared state file. Empty: <data_dir>/sandboxes"),
    STRING(k8s_namespace_mode, "managed", check_k8s_mode, "managed|operator|shared",
           "kubernetes driver: managed (creates openshell-<gateway>-<namespace>), operator (existing "
           "namespaces from k8s_namespaces) or shared (one namespace, k8s_shared_namespace)"),
    LIST(k8s_namespaces, NULL, "list",
         "kubernetes driver, operator mode: the allowlist of Kubernetes namespaces (N or gantry=N)"),
    STRING(k8s_shared_namespace, "", NULL, "name",
           "kubernetes driver, shared mode: the one Kubernetes namespace for every sandbox"),
    STRING(k8s_server, "", NULL, "https URL",
           "kubernetes driver: the API server; empty: in cluster (service account token and CA)"),
    STRING(k8s_token_file, "", NULL, "path",
           "kubernetes driver: bearer token file (re-read per request); empty: in cluster"),
    STRING(k8s_ca_file, "", NULL, "path", "kubernetes driver: CA of the API server; empty: in cluster"),
    LIST(k8s_service_accounts, NULL, "list",
         "kubernetes driver: the ServiceAccounts a sandbox's driver_config service_account may name (empty: "
         "none; sandboxes then get no service account token)"),
    LIST(k8s_image_pull_secrets, NULL, "list",
         "kubernetes driver: image pull Secrets, in the gateway's own namespace, copied into managed "
         "namespaces and named in every sandbox pod"),
    UINT(provision_deadline_s, 300, 10, 86400,
         "how long a sandbox may take to start: transient driver failures of its create are retried until "
         "then, and a sandbox never READY and still PROVISIONING then is ERROR with the driver's message (a "
         "READY sandbox starting again, e.g. an evicted pod, is not)"),
    STRING(driver_journal, "", NULL, "path",
           "fake driver: append a JSON line per driver call (with its epoch) to this file"),
    UINT(lease_duration_ms, 15000, 300, 3600000,
         "how long a contender must see the reconciler lease unchanged before taking it"),
    UINT(lease_renew_deadline_ms, 10000, 200, 3600000,
         "the holder stops acting when its last renewal started longer ago than this (below the duration)"),
    UINT(lease_retry_ms, 2000, 50, 3600000,
         "how often the holder renews and contenders try (below the renew deadline)"),
    STRING(lifecycle_webhook_url, "", check_webhook_url, "http(s) URL",
           "POST sandbox lifecycle events as CloudEvents to this URL, from the reconciler lease holder "
           "(docs/platform-controller.md, \"Lifecycle webhook\"); empty: none"),
    STRING(
        lifecycle_webhook_ca_file, "", NULL, "path",
        "lifecycle webhook over https: the receiver's CA bundle (only it is trusted); empty: the system CAs"),
    STRING(lifecycle_webhook_secret_file, "", NULL, "path",
           "lifecycle webhook: a file holding the HMAC-SHA256 key that signs each body (X-Gantry-Signature); "
           "read at start; empty: unsigned"),
    UINT(lifecycle_webhook_timeout_ms, 5000, 100, 120000,
         "lifecycle webhook: the limit of one POST, connection included"),
    UINT(lifecycle_webhook_max_attempts, 10, 1, 1000000,
         "lifecycle webhook: failed POSTs of one event before it is given up (audited)"),
    UINT(lifecycle_webhook_backoff_ms, 500, 10, 3600000,
         "lifecycle webhook: the delay before the first retry, doubled after each failure"),
    UINT(lifecycle_webhook_backoff_max_ms, 30000, 10, 3600000, "lifecycle webhook: the retry delay's cap"),
    STRING(join_ca_file, "", NULL, "path",
           "CA certificate that verifies the member joined through, for a join token without a CA "
           "fingerprint"),
    LIST(cert_sans, check_sans, "list of names",
         "extra DNS names or IP addresses for this replica's certificate (a load balancer's name); "
         "comma-separated"),
    UINT(latency_ms, 20, 1, 3600000, "typical peer round trip; heartbeat = 1.5x, election timeout = 15x"),
    UINT(snapshot_threshold, 256, 1, UINT32_MAX, "Raft log entries between snapshots"),
    UINT(snapshot_trailing, 256, 4, UINT32_MAX,
         "Raft log entries kept after a snapshot; >= 4 and >= snapshot_threshold"),
    UINT(roles_grace_ms, 30000, 1, 86400000,
         "how long a member may be unreachable before it is replaced; > election timeout (15 x latency_ms)"),
    BOOL(standby_site, false,
         "this replica belongs to the standby site: a full copy that never votes while a member outside the "
         "standby site is healthy, promoted by gantryd recover when the primary site is lost "
         "(docs/operations.md, \"Standby site\")"),
    STRING(log_level, "info", check_log_level, "level",
           "log verbosity: error, warn, info, debug or trace (any case)"),
    UINT(max_message_bytes, 4194304, 1024, 268435456,
         "largest gRPC message accepted or sent (1 KiB..256 MiB)"),
    UINT(max_concurrent_streams, 100, 1, 10000, "HTTP/2 streams per client connection"),
    UINT(workers, 64, 1, 1024,
         "worker threads that run calls (authentication, store round trips; a write waits on one until it "
         "commits)"),
    UINT(call_queue_max, 4096, 1, 1000000,
         "calls with a recently verified credential that may wait for a worker; more are UNAVAILABLE"),
    UINT(unverified_call_queue_max, 256, 1, 1000000,
         "calls with any other credential that may wait for a worker (served after the others)"),
    UINT(write_queue_max, 1024, 1, 1000000,
         "writes that may wait for the replica's writer; more are UNAVAILABLE"),
    UINT(
        auth_fail_limit, 20, 1, 1000000,
        "failed authentications from one source host per auth_fail_window_ms before its unverified calls are "
        "refused"),
    UINT(auth_fail_window_ms, 60000, 1000, 86400000, "the window of auth_fail_limit"),
    UINT(unverified_call_rate, 50, 1, 1000000,
         "calls per second one source host may make without a recently verified credential"),
    UINT(unverified_call_burst, 100, 1, 1000000, "burst allowance of unverified_call_rate"),
    UINT(
        known_credential_ttl_ms, 600000, 1000, 86400000,
        "how long a verified credential keeps its calls in the first class (still re-checked on every call)"),
    UINT(refused_credential_ttl_ms, 5000, 0, 3600000,
         "how long a refused credential is refused again without a check; 0: always checked"),
    UINT(audit_window_ms, 10000, 100, 3600000,
         "repeats of one refused call (same source, actor, operation, reason) are counted per window"),
    UINT(audit_flush_ms, 1000, 10, 60000,
         "first occurrences of refused calls reach the audit trail within this"),
    UINT(write_batch_max, 64, 1, 4096,
         "writes run in one transaction (each in its own savepoint); 1: no batching"),
    UINT(write_batch_linger_ms, 0, 0, 1000,
         "once a write is queued, wait up to this for more to share its transaction; 0: run at once"),
    UINT(read_index_linger_us, 2000, 0, 100000,
         "when linearizable reads arrive faster than the leader answers one read index, the next read index "
         "waits for more reads to share it while they keep coming (200 us without a new one ends the wait), "
         "at most this many microseconds; reads one at a time never wait; 0: never (docs/store.md)"),
    BOOL(model_reads, true,
         "answer Get and List of sandboxes, namespaces, policies (Get), providers, warm pools, principals, "
         "role bindings (List), API keys, linked identities (List) and quotas (usage counters included) from "
         "this replica's change-feed models (after a read index unless the call's read options say "
         "otherwise); "
         "false: read the store (docs/resources.md, Read consistency)"),
    UINT(events_watch_ring, 4096, 16, 1000000,
         "Events.Watch: change events each replica keeps in memory for resuming watches (docs/resources.md)"),
    UINT(watch_total_unsent_mib, 256, 1, 65536,
         "Sandboxes.Watch and Events.Watch: a replica refuses new watches (RESOURCE_EXHAUSTED) while its "
         "watches of that kind hold more than this many MiB their clients have not read (docs/resources.md)"),
    BOOL(forward_writes, true,
         "send every write to the replica beside the dqlite leader (one writer for the cluster); false: each "
         "replica "
         "writes through its own writer"),
    UINT(egress_relay_port, 0, 0, 65535,
         "the egress relay's port on every sandbox's door address (docs/egress.md); 0: no relay, and the "
         "process "
         "driver refuses network=egress"),
    UINT(egress_max_connections, 4096, 1, 1000000, "egress relay: connections of every sandbox together"),
    UINT(egress_max_connections_per_sandbox, 1024, 1, 1000000,
         "egress relay: connections of one sandbox; more are refused while the others keep flowing"),
    UINT(egress_policy_refresh_ms, 500, 50, 1500,
         "egress relay: how often the replica re-reads the policies (a tightened policy applies within this "
         "plus one read)"),
    STRING(
        egress_relay_k8s_address, "", NULL, "IP:port",
        "kubernetes driver: the address sandbox pods are given as http_proxy/https_proxy, and (without "
        "egress_relay_k8s_pod_selector) the one peer of their gantry-egress-relay NetworkPolicy; empty: no "
        "relay for pods (docs/egress.md)"),
    STRING(egress_relay_k8s_pod_selector, "", NULL, "key=value,...",
           "kubernetes driver: labels of the gantryd pods (in the gateway's namespace) that the pods' "
           "NetworkPolicy lets them reach on egress_relay_k8s_port; empty: an ipBlock of "
           "egress_relay_k8s_address"),
    UINT(egress_relay_k8s_port, 0, 0, 65535,
         "kubernetes driver: the port this replica's relay for pods listens on (every address; connections "
         "attributed by the pod's source address), also the NetworkPolicy's port with a pod selector; 0: no "
         "relay for pods on this replica"),
    UINT(api_max_connections_per_source, 128, 0, 1000000, "API connections from one IP address; 0: no limit"),
    UINT(api_established_reserve_percent, 25, 0, 90,
         "share of the API connection budget only connections that carried an authenticated call may use"),
    UINT(api_handshake_timeout_ms, 10000, 0, 3600000,
         "TLS handshake and HTTP/2 preface deadline of an API connection; 0: none"),
    UINT(api_idle_timeout_ms, 300000, 0, 86400000,
         "an API connection with no stream opened or closed for this long is closed (PINGs do not count); 0: "
         "never"),
    UINT(api_max_request_fields, 65536, 16, 100000000,
         "fields in one request message, refused before decoding"),
    UINT(api_max_request_depth, 32, 2, 100, "nesting of sub-messages in one request message"),
    UINT(admin_max_connections, 64, 1, 100000,
         "admin HTTP connections (plus admin_probe_reserve for probes)"),
    UINT(admin_probe_reserve, 8, 0, 1000, "more admin connections, for /healthz and /readyz only"),
    UINT(admin_probe_timeout_ms, 2000, 1, 600000, "a probe connection's request and answer"),
    UINT(admin_header_timeout_ms, 10000, 1, 600000,
         "an admin request completes within this of its first byte"),
    UINT(admin_idle_timeout_ms, 30000, 1, 3600000,
         "admin connections idle or without write progress are closed"),
    UINT(admin_max_buffered_bytes, 1048576, 4096, 1073741824,
         "unwritten admin responses per connection before reading pauses"),
    BOOL(console, false,
         "serve the operator console on the admin port under /console/ (docs/console.md): API-key sign-in, "
         "live "
         "members, lease, tenants and audit, failover drills; plain HTTP, so only behind TLS or on loopback"),
    UINT(console_max_streams, 8, 1, 256, "live console views (server-sent event streams) served at once"),
    UINT(console_refresh_ms, 500, 100, 10000, "how often a live console view gets fresh data"),
    UINT(console_session_idle_s, 1800, 60, 86400, "a console session unused for this long is forgotten"),
    UINT(metrics_namespace_interval_ms, 15000, 100, 3600000,
         "how often the per-namespace gauges of /metrics are read from the store (never per scrape)"),
    UINT(metrics_namespace_max, 200, 1, 100000,
         "namespaces with series of their own in /metrics; the rest are summed under namespace=\"_other\""),
    UINT(peer_max_handshakes_per_source, 8, 1, 100000, "peer TLS handshakes in progress from one IP address"),
    UINT(peer_refusal_log_window_ms, 10000, 100, 3600000,
         "refused peer connections are logged once per address per window, then counted"),
    UINT(audit_max_keys, 1024, 1, 1000000,
         "distinct refused-call events per audit window; more are counted in one overflow event"),
};

#undef FIELD
#undef STRING
#undef UINT
#undef BOOL
#undef LIST

#define NFIELDS (sizeof fields / sizeof fields[0])
_Static_assert(sizeof fields / sizeof fields[0] <= CONFIG_MAX_FIELDS, "raise CONFIG_MAX_FIELDS");

/* ---- small helpers ---------------------------------------------------------------------- */

/* snprintf for message text, which may be cut like every errmsg (lib/err.h): the key and the source
 * come first, so a cut only loses the end of a long value or reason. */
static void msg_printf(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msg_printf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

#define FIELD_PTR(cfg, f, T) ((T *)(void *)((char *)(cfg) + (f)->offset))

static size_t field_index(const struct field *f)
{
    return (size_t)(f - fields);
}

static const struct field *field_by_key(const char *key)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (strcmp(fields[i].key, key) == 0) {
            return &fields[i];
        }
    }
    return NULL;
}

/* A field's environment variable and flag follow from its key by one rule: api_address is
 * GANTRY_API_ADDRESS and --api-address. A key that may not come from a flag has no flag (""). @out
 * has room for CONFIG_NAME_SIZE bytes. */
static void env_name(const struct field *f, char *out)
{
    static const char prefix[] = "GANTRY_";
    size_t n = sizeof prefix - 1;
    assert(n + strlen(f->key) < CONFIG_NAME_SIZE);
    memcpy(out, prefix, n);
    for (const char *k = f->key; *k != '\0'; k++) {
        out[n++] = (char)(*k >= 'a' && *k <= 'z' ? *k - 'a' + 'A' : *k);
    }
    out[n] = '\0';
}

static void flag_name(const struct field *f, char *out)
{
    size_t n = 0;
    assert(2 + strlen(f->key) < CONFIG_NAME_SIZE);
    if (!(f->flags & F_NO_FLAG)) {
        out[n++] = '-';
        out[n++] = '-';
        for (const char *k = f->key; *k != '\0'; k++) {
            out[n++] = *k == '_' ? '-' : *k;
        }
    }
    out[n] = '\0';
}

const char *config_source_name(enum config_source src)
{
    switch (src) {
    case CONFIG_SRC_FILE:
        return "file";
    case CONFIG_SRC_ENV:
        return "env";
    case CONFIG_SRC_FLAG:
        return "flag";
    default:
        return "default";
    }
}

/* Where a field's current value came from, as a message shows it: the file's path, the variable, the
 * flag, or "default". A variable or flag name is written into @name (CONFIG_NAME_SIZE bytes). */
static const char *origin_text(const struct config *cfg, const struct field *f, char *name)
{
    switch (cfg->origin[field_index(f)]) {
    case CONFIG_SRC_FILE:
        return cfg->loaded_file != NULL && cfg->loaded_file[0] != '\0' ? cfg->loaded_file : "the file";
    case CONFIG_SRC_ENV:
        env_name(f, name);
        return name;
    case CONFIG_SRC_FLAG:
        flag_name(f, name);
        return name;
    default:
        return "default";
    }
}

/* Quote @s for a message: "...", with ", \ and non-printable bytes escaped, cut after QUOTE_MAX
 * bytes. @out has room for 4 * QUOTE_MAX + 8 bytes. */
#define QUOTE_SIZE (4 * QUOTE_MAX + 8)
static void quote(const char *s, char *out)
{
    size_t n = 0;
    size_t i;
    out[n++] = '"';
    for (i = 0; s[i] != '\0' && i < QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            n += (size_t)snprintf(out + n, 5, "\\x%02x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    if (s[i] != '\0') {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

/* The value of a field as a message shows it (quoted strings; secrets redacted). */
static void value_text(const struct config *cfg, const struct field *f, char *out)
{
    if (f->flags & F_SECRET) {
        snprintf(out, QUOTE_SIZE, "(redacted)");
        return;
    }
    switch (f->type) {
    case FT_STRING:
        quote(*FIELD_PTR(cfg, f, char *const), out);
        break;
    case FT_BOOL:
        snprintf(out, QUOTE_SIZE, "%s", *FIELD_PTR(cfg, f, const bool) ? "true" : "false");
        break;
    case FT_U32:
        snprintf(out, QUOTE_SIZE, "%u", *FIELD_PTR(cfg, f, const unsigned));
        break;
    case FT_U64:
        snprintf(out, QUOTE_SIZE, "%llu", (unsigned long long)*FIELD_PTR(cfg, f, const uint64_t));
        break;
    case FT_DOMAIN:
        if (cfg->failure_domain_name[0] != '\0') {
            quote(cfg->failure_domain_name, out);
        } else {
            snprintf(out, QUOTE_SIZE, "%llu", (unsigned long long)cfg->failure_domain);
        }
        break;
    case FT_LIST:
        snprintf(out, QUOTE_SIZE, "(list of %zu)", FIELD_PTR(cfg, f, const struct config_list)->n);
        break;
    }
}

/* "config: <key> (from <where>): <why>" */
static int field_error(const struct field *f, const char *where, char *errmsg, const char *why)
{
    gerr_set(errmsg, "config: %s (from %s): %s", f->key, where, why);
    return GERR_INVAL;
}

/* Levenshtein distance, for "did you mean". Inputs longer than 64 bytes get no suggestion. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    size_t row[65];
    if (la > 64 || lb > 64) {
        return SIZE_MAX;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (up + 1 < best) {
                best = up + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The field whose key is closest to @key (already in snake_case), if it is close enough to be a
 * typo: at most @limit edits, or for long keys a third of the length. */
static const struct field *suggest(const char *key, size_t limit, unsigned exclude_flags)
{
    const struct field *best = NULL;
    size_t best_d = SIZE_MAX;
    size_t len = strlen(key);
    size_t allowed = len / 3 > limit ? len / 3 : limit;
    for (size_t i = 0; i < NFIELDS; i++) {
        if (fields[i].flags & exclude_flags) {
            continue;
        }
        size_t d = edit_distance(key, fields[i].key);
        if (d < best_d) {
            best_d = d;
            best = &fields[i];
        }
    }
    return best_d <= allowed ? best : NULL;
}

static bool has_control_char(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f) {
            return true;
        }
    }
    return false;
}

/* Strict unsigned decimal: digits only, no sign, no spaces, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- setting values --------------------------------------------------------------------- */

static void list_clear(struct config_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        mem_free(l->items[i]);
    }
    mem_free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int list_add(const struct field *f, struct config_list *l, const char *item, size_t len,
                    const char *where, char *errmsg)
{
    if (l->n >= CONFIG_LIST_MAX) {
        char why[64];
        snprintf(why, sizeof why, "more than %u entries", CONFIG_LIST_MAX);
        return field_error(f, where, errmsg, why);
    }
    size_t bad_at = 0;
    if (!utf8_valid(item, len, &bad_at)) {
        char why[64];
        snprintf(why, sizeof why, "entry %zu is not UTF-8 (byte %zu)", (size_t)l->n + 1, bad_at);
        return field_error(f, where, errmsg, why);
    }
    l->items = mem_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = mem_strndup(item, len);
    return 0;
}

static void replace_string(char **slot, const char *s)
{
    char *copy = mem_strdup(s);
    mem_free(*slot);
    *slot = copy;
}

static int string_ok(const struct field *f, const char *s, const char *where, char *errmsg)
{
    char why[QUOTE_SIZE + 64];
    char q[QUOTE_SIZE];
    if (strlen(s) > CONFIG_STRING_MAX) {
        snprintf(why, sizeof why, "longer than %u bytes", CONFIG_STRING_MAX);
        return field_error(f, where, errmsg, why);
    }
    size_t bad_at = 0;
    if (!utf8_valid(s, strlen(s), &bad_at)) {
        snprintf(why, sizeof why, "%s is not UTF-8 (byte %zu)",
                 f->flags & F_SECRET ? "(redacted)" : "the value", bad_at);
        return field_error(f, where, errmsg, why);
    }
    if (has_control_char(s)) {
        if (f->flags & F_SECRET) {
            snprintf(why, sizeof why, "(redacted) contains a control character");
        } else {
            quote(s, q);
            snprintf(why, sizeof why, "%s contains a control character", q);
        }
        return field_error(f, where, errmsg, why);
    }
    return 0;
}

static int set_uint(struct config *cfg, const struct field *f, uint64_t v, const char *shown,
                    const char *where, char *errmsg)
{
    char why[QUOTE_SIZE + 96];
    if (v < f->min || v > f->max) {
        snprintf(why, sizeof why, "%s is out of range (%llu..%llu)", shown, (unsigned long long)f->min,
                 (unsigned long long)f->max);
        return field_error(f, where, errmsg, why);
    }
    if (f->type == FT_U32) {
        *FIELD_PTR(cfg, f, unsigned) = (unsigned)v;
    } else {
        *FIELD_PTR(cfg, f, uint64_t) = v;
    }
    return 0;
}

/* failure_domain: all digits is the integer itself; anything else is a name, hashed. */
static int set_domain(struct config *cfg, const struct field *f, const char *text, const char *where,
                      char *errmsg)
{
    uint64_t v;
    int rv = string_ok(f, text, where, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (parse_u64(text, &v)) {
        cfg->failure_domain = v;
        replace_string(&cfg->failure_domain_name, "");
    } else {
        cfg->failure_domain = config_failure_domain_hash(text);
        replace_string(&cfg->failure_domain_name, text);
    }
    return 0;
}

/* Set field @f from @text (an environment variable, a flag or a default). */
static int set_from_text(struct config *cfg, const struct field *f, const char *text, enum config_source src,
                         const char *where, char *errmsg)
{
    char why[QUOTE_SIZE + 96];
    char q[QUOTE_SIZE];
    uint64_t v;
    int rv;

    switch (f->type) {
    case FT_STRING:
        if ((rv = string_ok(f, text, where, errmsg)) != 0) {
            return rv;
        }
        replace_string(FIELD_PTR(cfg, f, char *), text);
        return 0;
    case FT_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
            *FIELD_PTR(cfg, f, bool) = true;
        } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
            *FIELD_PTR(cfg, f, bool) = false;
        } else {
            quote(text, q);
            snprintf(why, sizeof why, "%s is not a bool (true, false, 1 or 0)", q);
            return field_error(f, where, errmsg, why);
        }
        return 0;
    case FT_U32:
    case FT_U64:
        if (!parse_u64(text, &v)) {
            quote(text, q);
            snprintf(why, sizeof why, "%s is not an unsigned decimal integer", q);
            return field_error(f, where, errmsg, why);
        }
        quote(text, q);
        return set_uint(cfg, f, v, q, where, errmsg);
    case FT_DOMAIN:
        return set_domain(cfg, f, text, where, errmsg);
    case FT_LIST: {
        struct config_list *l = FIELD_PTR(cfg, f, struct config_list);
        if ((rv = string_ok(f, text, where, errmsg)) != 0) {
            return rv;
        }
        /* A new layer replaces the list; repeated flags add to it. */
        if (!(src == CONFIG_SRC_FLAG && cfg->origin[field_index(f)] == CONFIG_SRC_FLAG)) {
            list_clear(l);
        }
        if (text[0] == '\0') {
            return 0;
        }
        const char *p = text;
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
            while (len > 0 && *p == ' ') {
                p++;
                len--;
            }
            while (len > 0 && p[len - 1] == ' ') {
                len--;
            }
            if ((rv = list_add(f, l, p, len, where, errmsg)) != 0) {
                return rv;
            }
            if (comma == NULL) {
                break;
            }
            p = comma + 1;
        }
        return 0;
    }
    }
    return GERR_INTERNAL;
}

/* Layers never override a higher one (see config.h). */
static bool outranked(const struct config *cfg, const struct field *f, enum config_source src)
{
    return cfg->origin[field_index(f)] > src;
}

/* ---- defaults and free ------------------------------------------------------------------ */

void config_init_defaults(struct config *cfg)
{
    char errmsg[GERR_MSG_SIZE];
    memset(cfg, 0, sizeof *cfg);
    cfg->failure_domain_name = mem_strdup("");
    cfg->loaded_file = mem_strdup("");
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        if (f->type == FT_STRING) {
            *FIELD_PTR(cfg, f, char *) = mem_strdup("");
        }
        if (f->def != NULL) {
            int rv = set_from_text(cfg, f, f->def, CONFIG_SRC_DEFAULT, "default", errmsg);
            if (rv != 0) {
                /* A bad default is a bug in the table, caught by the first test run. */
                fprintf(stderr, "%s\n", errmsg);
                abort();
            }
        }
        cfg->origin[i] = CONFIG_SRC_DEFAULT;
    }
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        if (f->type == FT_STRING) {
            mem_free(*FIELD_PTR(cfg, f, char *));
            *FIELD_PTR(cfg, f, char *) = NULL;
        } else if (f->type == FT_LIST) {
            list_clear(FIELD_PTR(cfg, f, struct config_list));
        }
    }
    mem_free(cfg->failure_domain_name);
    cfg->failure_domain_name = NULL;
    mem_free(cfg->loaded_file);
    cfg->loaded_file = NULL;
}

/* ---- the JSON file ---------------------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a bool";
    default:
        return "null";
    }
}

static int type_error(const struct field *f, const char *where, const char *expected, const json_t *v,
                      char *errmsg)
{
    char why[128];
    snprintf(why, sizeof why, "expected %s, got %s", expected, json_type_name(v));
    return field_error(f, where, errmsg, why);
}

static int set_from_json(struct config *cfg, const struct field *f, const json_t *v, const char *where,
                         char *errmsg)
{
    char why[QUOTE_SIZE + 96];
    int rv;

    switch (f->type) {
    case FT_STRING:
        if (!json_is_string(v)) {
            return type_error(f, where, "a string", v, errmsg);
        }
        if ((rv = string_ok(f, json_string_value(v), where, errmsg)) != 0) {
            return rv;
        }
        replace_string(FIELD_PTR(cfg, f, char *), json_string_value(v));
        return 0;
    case FT_BOOL:
        if (!json_is_boolean(v)) {
            return type_error(f, where, "a bool (true or false)", v, errmsg);
        }
        *FIELD_PTR(cfg, f, bool) = json_is_true(v);
        return 0;
    case FT_U32:
    case FT_U64: {
        if (!json_is_integer(v)) {
            return type_error(f, where, "an integer", v, errmsg);
        }
        json_int_t n = json_integer_value(v);
        char shown[32];
        snprintf(shown, sizeof shown, "%lld", (long long)n);
        if (n < 0) {
            snprintf(why, sizeof why, "%s is out of range (%llu..%llu)", shown, (unsigned long long)f->min,
                     (unsigned long long)f->max);
            return field_error(f, where, errmsg, why);
        }
        return set_uint(cfg, f, (uint64_t)n, shown, where, errmsg);
    }
    case FT_DOMAIN:
        if (json_is_integer(v)) {
            if (json_integer_value(v) < 0) {
                snprintf(why, sizeof why, "%lld is negative", (long long)json_integer_value(v));
                return field_error(f, where, errmsg, why);
            }
            cfg->failure_domain = (uint64_t)json_integer_value(v);
            replace_string(&cfg->failure_domain_name, "");
            return 0;
        }
        if (!json_is_string(v)) {
            return type_error(f, where, "an integer or a string", v, errmsg);
        }
        return set_domain(cfg, f, json_string_value(v), where, errmsg);
    case FT_LIST: {
        struct config_list *l = FIELD_PTR(cfg, f, struct config_list);
        size_t i;
        json_t *item;
        if (!json_is_array(v)) {
            return type_error(f, where, "an array of strings", v, errmsg);
        }
        list_clear(l);
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item)) {
                snprintf(why, sizeof why, "entry %zu: expected a string, got %s", i, json_type_name(item));
                return field_error(f, where, errmsg, why);
            }
            const char *s = json_string_value(item);
            if ((rv = string_ok(f, s, where, errmsg)) != 0 ||
                (rv = list_add(f, l, s, strlen(s), where, errmsg)) != 0) {
                return rv;
            }
        }
        return 0;
    }
    }
    return GERR_INTERNAL;
}

int config_load_buffer(struct config *cfg, const char *data, size_t len, const char *name, char *errmsg)
{
    json_error_t jerr;
    const char *key;
    json_t *value;
    char q[QUOTE_SIZE];
    int rv = 0;

    replace_string(&cfg->loaded_file, name);
    /* Duplicate keys are rejected for the same reason as unknown ones: one of the two is a mistake
     * that would otherwise be silently ignored. */
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            gerr_set(errmsg, "config: %s: out of memory while parsing", name);
            return GERR_NOMEM;
        }
        gerr_set(errmsg, "config: %s: line %d, column %d: %s", name, jerr.line, jerr.column, jerr.text);
        return GERR_INVAL;
    }
    if (!json_is_object(root)) {
        gerr_set(errmsg, "config: %s: the top level must be a JSON object, got %s", name,
                 json_type_name(root));
        rv = GERR_INVAL;
        goto err_after_parse;
    }
    /* Unknown keys first, so a typo is reported as such and not as a missing value elsewhere. */
    json_object_foreach(root, key, value)
    {
        const struct field *f = field_by_key(key);
        if (f == NULL) {
            const struct field *s = suggest(key, 2, F_NO_FILE);
            quote(key, q);
            if (s != NULL) {
                gerr_set(errmsg, "config: unknown key %s in %s (did you mean \"%s\"?)", q, name, s->key);
            } else {
                gerr_set(errmsg, "config: unknown key %s in %s", q, name);
            }
            rv = GERR_INVAL;
            goto err_after_parse;
        }
        if (f->flags & F_NO_FILE) {
            char env[CONFIG_NAME_SIZE];
            char flag[CONFIG_NAME_SIZE];
            env_name(f, env);
            flag_name(f, flag);
            gerr_set(errmsg, "config: key \"%s\" in %s is not allowed in the file (use %s or %s)", key, name,
                     env, flag);
            rv = GERR_INVAL;
            goto err_after_parse;
        }
    }
    /* Then the values, in table order so the first error reported does not depend on hashing. */
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        value = json_object_get(root, f->key);
        if (value == NULL) {
            continue;
        }
        if (outranked(cfg, f, CONFIG_SRC_FILE)) {
            /* Overridden, but a wrong value in the file is still a mistake worth reporting. */
            struct config scratch;
            config_init_defaults(&scratch);
            rv = set_from_json(&scratch, f, value, name, errmsg);
            config_free(&scratch);
        } else {
            rv = set_from_json(cfg, f, value, name, errmsg);
            cfg->origin[i] = CONFIG_SRC_FILE;
        }
        if (rv != 0) {
            goto err_after_parse;
        }
    }
err_after_parse:
    json_decref(root);
    return rv;
}

/* Read at most @max bytes of the regular file @path into a new NUL-terminated buffer. */
static int read_small_file(const char *path, size_t max, const char *what, char **out, size_t *len,
                           char *errmsg)
{
    struct stat st;
    int rv;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "config: cannot open %s %s: %s", what, path, strerror(errno));
        return rv;
    }
    if (fstat(fd, &st) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "config: cannot stat %s %s: %s", what, path, strerror(errno));
        goto err_after_open;
    }
    if (!S_ISREG(st.st_mode)) {
        gerr_set(errmsg, "config: %s %s is not a regular file", what, path);
        rv = GERR_INVAL;
        goto err_after_open;
    }
    if ((uint64_t)st.st_size > max) {
        gerr_set(errmsg, "config: %s %s is larger than %zu bytes", what, path, max);
        rv = GERR_INVAL;
        goto err_after_open;
    }
    char *data = mem_alloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, data + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "config: cannot read %s %s: %s", what, path, strerror(errno));
            goto err_after_alloc;
        }
        if (r == 0) {
            break; /* shrank while we read: take what is there */
        }
        n += (size_t)r;
    }
    data[n] = '\0';
    close(fd);
    *out = data;
    *len = n;
    return 0;

err_after_alloc:
    mem_free(data);
err_after_open:
    close(fd);
    return rv;
}

int config_load_file(struct config *cfg, const char *path, char *errmsg)
{
    char *data;
    size_t len;
    int rv = read_small_file(path, CONFIG_FILE_MAX, "config file", &data, &len, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = config_load_buffer(cfg, data, len, path, errmsg);
    mem_free(data);
    return rv;
}

int config_read_join_token_file(struct config *cfg, char *errmsg)
{
    const struct field *f = field_by_key("join_token");
    char *data;
    size_t len;
    if (cfg->join_token_file[0] == '\0') {
        return 0;
    }
    if (is_set(cfg->join_token) && !cfg->join_token_from_file) {
        return token_conflict(cfg, errmsg);
    }
    int rv = read_small_file(cfg->join_token_file, CONFIG_TOKEN_MAX, "join token file", &data, &len, errmsg);
    if (rv != 0) {
        return rv;
    }
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r')) {
        data[--len] = '\0';
    }
    if (strlen(data) != len) {
        mem_free(data);
        gerr_set(errmsg, "config: join token file %s contains a NUL byte", cfg->join_token_file);
        return GERR_INVAL;
    }
    mem_free(cfg->join_token);
    cfg->join_token = data;
    /* The token now comes from the file named by join_token_file; report it as that file's source. */
    cfg->origin[field_index(f)] = cfg->origin[field_index(field_by_key("join_token_file"))];
    cfg->join_token_from_file = true;
    return 0;
}

/* ---- environment and flags -------------------------------------------------------------- */

int config_apply_env(struct config *cfg, char *const envp[], char *errmsg)
{
    static const char prefix[] = "GANTRY_";
    if (envp == NULL) {
        return 0;
    }
    for (size_t e = 0; envp[e] != NULL; e++) {
        const char *entry = envp[e];
        const char *eq = strchr(entry, '=');
        if (eq == NULL || strncmp(entry, prefix, sizeof prefix - 1) != 0) {
            continue;
        }
        size_t name_len = (size_t)(eq - entry);
        const struct field *f = NULL;
        char env[CONFIG_NAME_SIZE];
        for (size_t i = 0; i < NFIELDS; i++) {
            env_name(&fields[i], env);
            if (strlen(env) == name_len && memcmp(env, entry, name_len) == 0) {
                f = &fields[i];
                break;
            }
        }
        if (f == NULL) {
            /* Not ours (tools, tests and Kubernetes service links use GANTRY_* too), unless it is a
             * near miss of one of ours: a typo must not be silently ignored. */
            char key[65];
            size_t klen = name_len - (sizeof prefix - 1);
            if (klen == 0 || klen >= sizeof key) {
                continue;
            }
            for (size_t k = 0; k < klen; k++) {
                char c = entry[sizeof prefix - 1 + k];
                key[k] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            }
            key[klen] = '\0';
            const struct field *s = suggest(key, klen < 8 ? 1 : 2, 0);
            if (s != NULL && edit_distance(key, s->key) <= (klen < 8 ? 1u : 2u)) {
                env_name(s, env);
                gerr_set(errmsg, "config: unknown variable %.*s in the environment (did you mean %s?)",
                         (int)name_len, entry, env);
                return GERR_INVAL;
            }
            continue;
        }
        int rv;
        if (outranked(cfg, f, CONFIG_SRC_ENV)) {
            /* Overridden by a flag: still report a malformed value. */
            struct config scratch;
            config_init_defaults(&scratch);
            rv = set_from_text(&scratch, f, eq + 1, CONFIG_SRC_ENV, env, errmsg);
            config_free(&scratch);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        if ((rv = set_from_text(cfg, f, eq + 1, CONFIG_SRC_ENV, env, errmsg)) != 0) {
            return rv;
        }
        cfg->origin[field_index(f)] = CONFIG_SRC_ENV;
    }
    return 0;
}

static const struct field *field_by_flag(const char *flag, size_t len)
{
    char name[CONFIG_NAME_SIZE];
    for (size_t i = 0; i < NFIELDS; i++) {
        flag_name(&fields[i], name);
        if (name[0] != '\0' && strlen(name) == len && memcmp(name, flag, len) == 0) {
            return &fields[i];
        }
    }
    return NULL;
}

int config_apply_flags(struct config *cfg, int argc, char *const argv[], bool *help, char *errmsg)
{
    char q[QUOTE_SIZE];
    char flag[CONFIG_NAME_SIZE];
    *help = false;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(arg, "--") == 0) {
            if (a + 1 < argc) {
                quote(argv[a + 1], q);
                gerr_set(errmsg, "config: unexpected argument %s", q);
                return GERR_INVAL;
            }
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0) {
            quote(arg, q);
            gerr_set(errmsg, "config: unexpected argument %s (flags look like --key value or --key=value)",
                     q);
            return GERR_INVAL;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct field *f = field_by_flag(arg, name_len);
        if (f == NULL) {
            static const char token_flag[] = "--join-token";
            if (name_len == sizeof token_flag - 1 && memcmp(arg, token_flag, name_len) == 0) {
                /* Say why, and never echo the value. */
                gerr_set(errmsg,
                         "config: join_token may not be given as a flag (command lines are visible in ps); "
                         "use GANTRY_JOIN_TOKEN, the config file or --join-token-file");
                return GERR_INVAL;
            }
            /* Only the flag's name goes into the message: its value might be a secret. */
            char name[65];
            char key[65];
            const struct field *s = NULL;
            size_t klen = name_len - 2;
            if (klen < sizeof key) {
                for (size_t k = 0; k < klen; k++) {
                    key[k] = arg[2 + k] == '-' ? '_' : arg[2 + k];
                }
                key[klen] = '\0';
                s = suggest(key, 2, F_NO_FLAG);
            }
            snprintf(name, sizeof name, "%.*s", (int)(name_len < 64 ? name_len : 64), arg);
            quote(name, q);
            if (s != NULL) {
                flag_name(s, flag);
                gerr_set(errmsg, "config: unknown flag %s (did you mean %s?)", q, flag);
            } else {
                gerr_set(errmsg, "config: unknown flag %s (see --help)", q);
            }
            return GERR_INVAL;
        }
        const char *value;
        flag_name(f, flag);
        if (eq != NULL) {
            value = eq + 1;
        } else if (f->type == FT_BOOL) {
            value = "true";
        } else if (a + 1 < argc) {
            value = argv[++a];
        } else {
            gerr_set(errmsg, "config: flag %s needs a value (%s)", flag, f->type_name);
            return GERR_INVAL;
        }
        int rv = set_from_text(cfg, f, value, CONFIG_SRC_FLAG, flag, errmsg);
        if (rv != 0) {
            return rv;
        }
        cfg->origin[field_index(f)] = CONFIG_SRC_FLAG;
    }
    return 0;
}

/* ---- validation ------------------------------------------------------------------------- */

/* Builds "<value> <reason>" into @why for the validators. */
static int why_value(struct config *cfg, const struct field *f, char *why, const char *reason)
{
    char v[QUOTE_SIZE];
    value_text(cfg, f, v);
    msg_printf(why, GERR_MSG_SIZE, "%s %s", v, reason);
    return GERR_INVAL;
}

static int check_nonempty(struct config *cfg, const struct field *f, char *why)
{
    if ((*FIELD_PTR(cfg, f, char *))[0] == '\0') {
        snprintf(why, GERR_MSG_SIZE, "must not be empty");
        return GERR_INVAL;
    }
    return 0;
}

static int check_name63(struct config *cfg, const struct field *f, char *why)
{
    char reason[160];
    if (!names_dns_label_ok(*FIELD_PTR(cfg, f, char *), 63, reason, sizeof reason)) {
        return why_value(cfg, f, why, reason);
    }
    return 0;
}

static int check_gateway_id(struct config *cfg, const struct field *f, char *why)
{
    char reason[160];
    if (!names_dns_label_ok(*FIELD_PTR(cfg, f, char *), 20, reason, sizeof reason)) {
        char full[300];
        snprintf(full, sizeof full, "is not a DNS-1123 label of at most 20 characters: %s", reason);
        return why_value(cfg, f, why, full);
    }
    return 0;
}

static int check_listen(struct config *cfg, const struct field *f, char *why)
{
    struct sockaddr_storage h;
    if (addr_parse(*FIELD_PTR(cfg, f, char *), &h, NULL) != 0) {
        return why_value(cfg, f, why, "is not a.b.c.d:port or [v6]:port (numeric host, port 0..65535)");
    }
    return 0;
}

static int check_peer(struct config *cfg, const struct field *f, char *why)
{
    struct sockaddr_in sa;
    if (addr_parse_ipv4(*FIELD_PTR(cfg, f, char *), &sa, 0) != 0) {
        return why_value(cfg, f, why,
                         "is not a.b.c.d:port (dqlite 1.11 takes IPv4 literals only; port 1..65535)");
    }
    if (sa.sin_addr.s_addr == htonl(INADDR_ANY) &&
        (strcmp(f->key, "peer_address") != 0 || cfg->peer_advertise_address == NULL ||
         cfg->peer_advertise_address[0] == '\0')) {
        return why_value(cfg, f, why,
                         "is a wildcard: peers dial this address, so it must be one they can reach "
                         "(bind 0.0.0.0 only together with peer_advertise_address)");
    }
    return 0;
}

static int check_driver(struct config *cfg, const struct field *f, char *why)
{
    const char *v = *FIELD_PTR(cfg, f, char *);
    if (strcmp(v, "process") != 0 && strcmp(v, "kubernetes") != 0 && strcmp(v, "fake") != 0 &&
        strcmp(v, "none") != 0) {
        return why_value(cfg, f, why, "is not process, kubernetes, fake or none");
    }
    return 0;
}

/* The lifecycle webhook's URL: http or https, a host, no spaces (libcurl checks the rest at start). */
static int check_webhook_url(struct config *cfg, const struct field *f, char *why)
{
    const char *v = *FIELD_PTR(cfg, f, char *);
    if (!is_set(v)) {
        return 0;
    }
    const char *rest = strncmp(v, "https://", 8) == 0 ? v + 8 : strncmp(v, "http://", 7) == 0 ? v + 7 : NULL;
    if (rest == NULL) {
        return why_value(cfg, f, why, "is not an http:// or https:// URL");
    }
    if (rest[0] == '\0' || rest[0] == '/' || rest[0] == ':' || rest[0] == '?' || rest[0] == '#') {
        return why_value(cfg, f, why, "has no host");
    }
    for (const char *p = v; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            return why_value(cfg, f, why, "contains a space or a control character");
        }
    }
    return 0;
}

static int check_k8s_mode(struct config *cfg, const struct field *f, char *why)
{
    const char *v = *FIELD_PTR(cfg, f, char *);
    if (strcmp(v, "managed") != 0 && strcmp(v, "operator") != 0 && strcmp(v, "shared") != 0) {
        return why_value(cfg, f, why, "is not managed, operator or shared");
    }
    return 0;
}

static int check_peer_advertise(struct config *cfg, const struct field *f, char *why)
{
    const char *v = *FIELD_PTR(cfg, f, char *);
    return v[0] == '\0' ? 0 : check_peer(cfg, f, why);
}

static int check_sans(struct config *cfg, const struct field *f, char *why)
{
    const struct config_list *l = FIELD_PTR(cfg, f, struct config_list);
    for (size_t i = 0; i < l->n; i++) {
        const char *v = l->items[i];
        size_t n = strlen(v);
        bool ok = n > 0 && n <= 253;
        for (size_t k = 0; ok && k < n; k++) {
            char c = v[k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '-' || c == ':';
        }
        if (!ok) {
            msg_printf(why, GERR_MSG_SIZE, "entry %zu is not a DNS name or an IP address", i);
            return GERR_INVAL;
        }
    }
    return 0;
}

static int check_domain(struct config *cfg, const struct field *f, char *why)
{
    const char *name = cfg->failure_domain_name;
    size_t len = strlen(name);
    if (len == 0) {
        /* The top bit is ROLES_STANDBY_SITE (raft/roles.h), set by standby_site alone. */
        if (cfg->failure_domain >= (UINT64_C(1) << 63)) {
            return why_value(cfg, f, why,
                             "is 2^63 or more: that bit marks the standby site (use standby_site)");
        }
        return 0;
    }
    if (len > 63) {
        return why_value(cfg, f, why, "is longer than 63 characters");
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == '/')) {
            return why_value(cfg, f, why, "is not a name of letters, digits, '-', '_', '.' and '/'");
        }
    }
    return 0;
}

/* A DNS name a joiner may dial: dot-separated labels of letters, digits and '-' (not at either end
 * of a label), at most 253 characters, with an optional trailing dot (an absolute name). Names are fine here,
 * unlike in listen addresses, because the joiner dials them once (a Kubernetes Service or StatefulSet name is
 * the usual join address). */
static bool dns_name_ok(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > 253) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!(alnum || (c == '-' && label > 0)) || ++label > 63) {
            return false;
        }
    }
    return s[len - 1] != '-';
}

/* A join address: a numeric host:port, or name:port; never port 0 or a wildcard. */
static bool join_address_ok(const char *s)
{
    struct sockaddr_storage h;
    if (addr_parse(s, &h, NULL) == 0) {
        return addr_port(&h) != 0 && !addr_is_any(&h);
    }
    const char *colon = strrchr(s, ':');
    uint64_t port;
    if (s[0] == '[' || colon == NULL || !parse_u64(colon + 1, &port) || port == 0 || port > 65535 ||
        strlen(colon + 1) > 5) {
        return false;
    }
    /* All-numeric dotted names are malformed IPv4 addresses, not names. */
    bool numeric = true;
    for (const char *p = s; p < colon; p++) {
        numeric = numeric && ((*p >= '0' && *p <= '9') || *p == '.');
    }
    return !numeric && dns_name_ok(s, (size_t)(colon - s));
}

static int check_join(struct config *cfg, const struct field *f, char *why)
{
    const struct config_list *l = FIELD_PTR(cfg, f, struct config_list);
    for (size_t i = 0; i < l->n; i++) {
        if (!join_address_ok(l->items[i])) {
            char q[QUOTE_SIZE];
            quote(l->items[i], q);
            msg_printf(why, GERR_MSG_SIZE,
                       "entry %zu %s is not a member's API address (a.b.c.d:port, [v6]:port or name:port)", i,
                       q);
            return GERR_INVAL;
        }
    }
    return 0;
}

static int check_token(struct config *cfg, const struct field *f, char *why)
{
    const char *t = *FIELD_PTR(cfg, f, char *);
    for (; *t != '\0'; t++) {
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) {
            snprintf(why, GERR_MSG_SIZE, "(redacted) contains whitespace or a non-ASCII byte");
            return GERR_INVAL;
        }
    }
    return 0;
}

static int check_log_level(struct config *cfg, const struct field *f, char *why)
{
    /* The names lib/log.c accepts; stored lowercase so the dump is canonical. */
    static const char *const levels[] = {"error", "warn", "info", "debug", "trace"};
    char **slot = FIELD_PTR(cfg, f, char *);
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcasecmp(*slot, levels[i]) == 0) {
            replace_string(slot, levels[i]);
            return 0;
        }
    }
    return why_value(cfg, f, why, "is not one of error, warn, info, debug, trace");
}

/* "config: <key> (from <origin>): <why>" for a field's current value. */
static int cur_error(const struct config *cfg, const char *key, char *errmsg, const char *fmt, ...)
{
    char why[GERR_MSG_SIZE];
    const struct field *f = field_by_key(key);
    va_list ap;
    char nbuf[CONFIG_NAME_SIZE];
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return field_error(f, origin_text(cfg, f, nbuf), errmsg, why);
}

static bool is_set(const char *s)
{
    return s[0] != '\0';
}

/* A number field's value (FT_U32, FT_U64 or FT_DOMAIN). */
static uint64_t field_uint(const struct config *cfg, const struct field *f)
{
    assert(f->type == FT_U32 || f->type == FT_U64 || f->type == FT_DOMAIN);
    return f->type == FT_U32 ? *FIELD_PTR(cfg, f, const unsigned) : *FIELD_PTR(cfg, f, const uint64_t);
}

/* Whether a field holds a value: a non-empty string or list, true, or a non-zero number. */
static bool field_set(const struct config *cfg, const struct field *f)
{
    switch (f->type) {
    case FT_STRING:
        return is_set(*FIELD_PTR(cfg, f, char *const));
    case FT_BOOL:
        return *FIELD_PTR(cfg, f, const bool);
    case FT_LIST:
        return FIELD_PTR(cfg, f, const struct config_list)->n > 0;
    default:
        return field_uint(cfg, f) != 0;
    }
}

static int token_conflict(const struct config *cfg, char *errmsg)
{
    char nbuf[CONFIG_NAME_SIZE];
    return cur_error(cfg, "join_token", errmsg, "is set and so is join_token_file (from %s): choose one",
                     origin_text(cfg, field_by_key("join_token_file"), nbuf));
}

/* The rules that fit none of the rule table's shapes. */

static int rule_election(struct config *cfg, char *errmsg)
{
    char nbuf[CONFIG_NAME_SIZE];
    uint64_t election_ms = 15ull * cfg->latency_ms;
    if (cfg->roles_grace_ms <= election_ms) {
        return cur_error(
            cfg, "roles_grace_ms", errmsg,
            "%llu is not longer than the election timeout of %llu ms (15 x latency_ms %u, from %s): "
            "members would be replaced during ordinary elections",
            (unsigned long long)cfg->roles_grace_ms, (unsigned long long)election_ms, cfg->latency_ms,
            origin_text(cfg, field_by_key("latency_ms"), nbuf));
    }
    return 0;
}

static int rule_h2c_loopback(struct config *cfg, char *errmsg)
{
    struct sockaddr_storage h;
    char nbuf[CONFIG_NAME_SIZE];
    char q[QUOTE_SIZE];
    if (cfg->api_h2c && (addr_parse(cfg->api_address, &h, NULL) != 0 || !addr_is_loopback(&h))) {
        quote(cfg->api_address, q);
        return cur_error(
            cfg, "api_h2c", errmsg,
            "plaintext h2c is allowed only on a loopback api_address, and api_address (from %s) is %s",
            origin_text(cfg, field_by_key("api_address"), nbuf), q);
    }
    return 0;
}

/* One source for the token; join and a token (or its file) come together, with messages that say
 * more than a "together" rule can; and a joiner does not take the bootstrap id. */
static int rule_join(struct config *cfg, char *errmsg)
{
    if (is_set(cfg->join_token) && is_set(cfg->join_token_file) && !cfg->join_token_from_file) {
        return token_conflict(cfg, errmsg);
    }
    bool have_token = is_set(cfg->join_token) || is_set(cfg->join_token_file);
    if (cfg->join.n > 0 && !have_token) {
        return cur_error(cfg, "join", errmsg,
                         "joining needs a join token (GANTRY_JOIN_TOKEN, join_token in the file, "
                         "or --join-token-file)");
    }
    if (cfg->join.n == 0 && have_token) {
        const char *k = is_set(cfg->join_token) ? "join_token" : "join_token_file";
        return cur_error(cfg, k, errmsg,
                         "is set but join is empty: give the API address of a member to join");
    }
    if (cfg->join.n > 0 && cfg->replica_id == 1) {
        return cur_error(cfg, "replica_id", errmsg,
                         "1 is the id that bootstraps a new cluster; a joining replica needs another id");
    }
    return 0;
}

/* Scheduled backups are written by the reconciler lease holder, which driver "none" never runs. */
static int rule_backup(struct config *cfg, char *errmsg)
{
    if (is_set(cfg->backup_dir) && strcmp(cfg->driver, "none") == 0) {
        return cur_error(
            cfg, "backup_dir", errmsg,
            "scheduled backups are written by the replica holding the reconciler lease, and driver "
            "\"none\" runs no reconciler: choose a driver or drop backup_dir");
    }
    return 0;
}

/* The lifecycle webhook is delivered by the reconciler lease holder; its files need its URL. */
static int rule_webhook(struct config *cfg, char *errmsg)
{
    if (is_set(cfg->lifecycle_webhook_url) && strcmp(cfg->driver, "none") == 0) {
        return cur_error(cfg, "lifecycle_webhook_url", errmsg,
                         "lifecycle events are delivered by the replica holding the reconciler lease, and "
                         "driver \"none\" runs no reconciler: choose a driver or drop lifecycle_webhook_url");
    }
    if (!is_set(cfg->lifecycle_webhook_url)) {
        const char *keys[] = {"lifecycle_webhook_ca_file", "lifecycle_webhook_secret_file"};
        const char *vals[] = {cfg->lifecycle_webhook_ca_file, cfg->lifecycle_webhook_secret_file};
        for (size_t i = 0; i < 2; i++) {
            if (is_set(vals[i])) {
                return cur_error(cfg, keys[i], errmsg, "is set but lifecycle_webhook_url is not");
            }
        }
    }
    return 0;
}

/* The rules between fields, checked in this order once every field has passed its own validator;
 * the first one broken is reported. Most have one of a few shapes, each with its message:
 *   RULE_TOGETHER      keys: all set or none. On the first set key:
 *                      "is set but <first unset key> is not: <text>"
 *   RULE_EXCLUDES      when keys[0] is set, none of the others. On keys[0]:
 *                      "<text> cannot use <other> (from <its origin>): drop one of them"
 *   RULE_AT_LEAST      numbers keys[0] >= keys[1]. On keys[0]:
 *                      "<value> is less than <keys[1]> <value> (from <its origin>)"
 *   RULE_BETWEEN       numbers keys[0] < keys[1] < keys[2]. On keys[1]:
 *                      "must lie strictly between <keys[0]> and <keys[2]> (<text>)"
 *   RULE_PORTS_APART   listen addresses that may not share a port on one host. On keys[1]:
 *                      "port <N> is already used by <keys[0]> (from <its origin>)"
 * The rest are functions (RULE_FN). A key the field table lacks fails an assertion when the rule
 * runs, and every rule runs on the first config_validate of a valid config. */
enum rule_kind { RULE_FN, RULE_TOGETHER, RULE_EXCLUDES, RULE_AT_LEAST, RULE_BETWEEN, RULE_PORTS_APART };

struct rule {
    enum rule_kind kind;
    const char *keys[4]; /* NULL after the last when fewer */
    const char *text;    /* completes the message, see above */
    int (*fn)(struct config *cfg, char *errmsg);
};

static const struct rule rules[] = {
    {.kind = RULE_AT_LEAST, .keys = {"snapshot_trailing", "snapshot_threshold"}},
    {.kind = RULE_FN, .fn = rule_election}, /* roles_grace_ms > 15 x latency_ms */
    {.kind = RULE_FN, .fn = rule_h2c_loopback},
    {.kind = RULE_EXCLUDES,
     .keys = {"api_h2c", "api_tls_cert", "api_tls_key", "api_tls_client_ca"},
     .text = "plaintext h2c"},
    {.kind = RULE_TOGETHER, .keys = {"api_tls_cert", "api_tls_key"}, .text = "they come as a pair"},
    {.kind = RULE_TOGETHER,
     .keys = {"peer_tls_ca", "peer_tls_cert", "peer_tls_key"},
     .text = "set peer_tls_ca, peer_tls_cert and peer_tls_key together, or none of them to use the files "
             "init/join create"},
    {.kind = RULE_FN, .fn = rule_join},
    {.kind = RULE_TOGETHER,
     .keys = {"backup_dir", "backup_seal_key_file"},
     .text = "scheduled backups are always encrypted: give backup_dir and backup_seal_key_file together"},
    {.kind = RULE_FN, .fn = rule_backup},
    {.kind = RULE_FN, .fn = rule_webhook},
    {.kind = RULE_AT_LEAST, .keys = {"lifecycle_webhook_backoff_max_ms", "lifecycle_webhook_backoff_ms"}},
    {.kind = RULE_BETWEEN,
     .keys = {"lease_retry_ms", "lease_renew_deadline_ms", "lease_duration_ms"},
     .text = "the holder must stop acting before a contender may take over"},
    {.kind = RULE_PORTS_APART, .keys = {"api_address", "admin_address"}},
    {.kind = RULE_PORTS_APART, .keys = {"api_address", "peer_address"}},
    {.kind = RULE_PORTS_APART, .keys = {"admin_address", "peer_address"}},
};

/* Two listen addresses that would fight over one port: reported on @b. */
static int check_ports_apart(const struct config *cfg, const struct field *fa, const struct field *fb,
                             char *errmsg)
{
    struct sockaddr_storage ha, hb;
    char nbuf[CONFIG_NAME_SIZE];
    if (addr_parse(*FIELD_PTR(cfg, fa, char *const), &ha, NULL) != 0 ||
        addr_parse(*FIELD_PTR(cfg, fb, char *const), &hb, NULL) != 0 || addr_port(&ha) == 0 ||
        addr_port(&ha) != addr_port(&hb)) {
        return 0;
    }
    bool overlap = addr_is_any(&ha) || addr_is_any(&hb) || addr_same_host(&ha, &hb);
    if (overlap) {
        return cur_error(cfg, fb->key, errmsg, "port %d is already used by %s (from %s)", addr_port(&hb),
                         fa->key, origin_text(cfg, fa, nbuf));
    }
    return 0;
}

static int check_rule(struct config *cfg, const struct rule *r, char *errmsg)
{
    const struct field *f[4] = {NULL};
    const struct field *have = NULL;
    const struct field *missing = NULL;
    char nbuf[CONFIG_NAME_SIZE];
    char v0[QUOTE_SIZE];
    char v1[QUOTE_SIZE];
    size_t n;

    for (n = 0; n < 4 && r->keys[n] != NULL; n++) {
        f[n] = field_by_key(r->keys[n]);
        assert(f[n] != NULL); /* a key in the rule table that the field table lacks */
    }
    switch (r->kind) {
    case RULE_FN:
        return r->fn(cfg, errmsg);
    case RULE_TOGETHER:
        for (size_t i = 0; i < n; i++) {
            if (field_set(cfg, f[i])) {
                have = have != NULL ? have : f[i];
            } else {
                missing = missing != NULL ? missing : f[i];
            }
        }
        if (have != NULL && missing != NULL) {
            return cur_error(cfg, have->key, errmsg, "is set but %s is not: %s", missing->key, r->text);
        }
        return 0;
    case RULE_EXCLUDES:
        if (!field_set(cfg, f[0])) {
            return 0;
        }
        for (size_t i = 1; i < n; i++) {
            if (field_set(cfg, f[i])) {
                return cur_error(cfg, f[0]->key, errmsg, "%s cannot use %s (from %s): drop one of them",
                                 r->text, f[i]->key, origin_text(cfg, f[i], nbuf));
            }
        }
        return 0;
    case RULE_AT_LEAST:
        if (field_uint(cfg, f[0]) < field_uint(cfg, f[1])) {
            value_text(cfg, f[0], v0);
            value_text(cfg, f[1], v1);
            return cur_error(cfg, f[0]->key, errmsg, "%s is less than %s %s (from %s)", v0, f[1]->key, v1,
                             origin_text(cfg, f[1], nbuf));
        }
        return 0;
    case RULE_BETWEEN:
        if (!(field_uint(cfg, f[0]) < field_uint(cfg, f[1]) &&
              field_uint(cfg, f[1]) < field_uint(cfg, f[2]))) {
            return cur_error(cfg, f[1]->key, errmsg, "must lie strictly between %s and %s (%s)", f[0]->key,
                             f[2]->key, r->text);
        }
        return 0;
    case RULE_PORTS_APART:
        return check_ports_apart(cfg, f[0], f[1], errmsg);
    }
    return GERR_INTERNAL;
}

int config_validate(struct config *cfg, char *errmsg)
{
    char why[GERR_MSG_SIZE];
    char nbuf[CONFIG_NAME_SIZE];
    int rv;

    /* Required values. */
    if (cfg->replica_id == 0) {
        gerr_set(errmsg, "config: replica_id is required: a stable non-zero integer (file key replica_id, "
                         "GANTRY_REPLICA_ID or --replica-id)");
        return GERR_INVAL;
    }
    if (cfg->replica_name[0] == '\0') {
        char name[32];
        snprintf(name, sizeof name, "replica-%llu", (unsigned long long)cfg->replica_id);
        replace_string(&cfg->replica_name, name);
    }

    /* Each field on its own, in table order. */
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        if (f->check != NULL && (rv = f->check(cfg, f, why)) != 0) {
            return field_error(f, origin_text(cfg, f, nbuf), errmsg, why);
        }
    }

    /* Then the rules between fields, in table order. */
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if ((rv = check_rule(cfg, &rules[i], errmsg)) != 0) {
            return rv;
        }
    }
    return 0;
}

/* ---- output: dump, help, docs ----------------------------------------------------------- */

void config_dump_json(const struct config *cfg, struct buf *out)
{
    json_t *root = json_object();
    if (root == NULL) {
        abort(); /* jansson could not allocate a few bytes: same policy as lib/mem.h */
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        json_t *v;
        if (f->flags & F_NO_FILE) {
            continue; /* the dump is a file: it cannot name itself */
        }
        switch (f->type) {
        case FT_STRING: {
            const char *s = *FIELD_PTR(cfg, f, char *const);
            v = json_string((f->flags & F_SECRET) && s[0] != '\0' ? "(redacted)" : s);
            break;
        }
        case FT_BOOL:
            v = json_boolean(*FIELD_PTR(cfg, f, const bool));
            break;
        case FT_U32:
            v = json_integer((json_int_t)*FIELD_PTR(cfg, f, const unsigned));
            break;
        case FT_U64:
            v = json_integer((json_int_t)*FIELD_PTR(cfg, f, const uint64_t));
            break;
        case FT_DOMAIN:
            /* A name stays a name. Integers above 2^63 cannot be JSON integers here: give text. */
            if (cfg->failure_domain_name[0] != '\0') {
                v = json_string(cfg->failure_domain_name);
            } else if (cfg->failure_domain > INT64_MAX) {
                char n[32];
                snprintf(n, sizeof n, "%llu", (unsigned long long)cfg->failure_domain);
                v = json_string(n);
            } else {
                v = json_integer((json_int_t)cfg->failure_domain);
            }
            break;
        default: {
            const struct config_list *l = FIELD_PTR(cfg, f, const struct config_list);
            v = json_array();
            for (size_t k = 0; v != NULL && k < l->n; k++) {
                json_array_append_new(v, json_string(l->items[k]));
            }
            break;
        }
        }
        if (v == NULL || json_object_set_new(root, f->key, v) != 0) {
            abort();
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        abort();
    }
    buf_append(out, text, strlen(text));
    buf_append(out, "\n", 1);
    free(text); /* jansson's allocator is malloc */
    json_decref(root);
}

static void buf_terminate(struct buf *out)
{
    *buf_reserve(out, 1) = '\0';
}

static const char *default_text(const struct field *f)
{
    if (f->def == NULL) {
        return "(required)";
    }
    return f->def[0] == '\0' ? "(none)" : f->def;
}

void config_help(struct buf *out)
{
    buf_printf(out,
               "Usage: gantryd [flags]\n\n"
               "Configuration comes from, in increasing precedence: the JSON file (--config), environment\n"
               "variables (GANTRY_<KEY>) and these flags. See docs/configuration.md.\n\n");
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        char env[CONFIG_NAME_SIZE];
        char flag[CONFIG_NAME_SIZE];
        env_name(f, env);
        flag_name(f, flag);
        if (flag[0] == '\0') {
            buf_printf(out, "  (%s: the file or %s, never a flag)\n", f->key, env);
        } else if (f->type == FT_BOOL) {
            buf_printf(out, "  %s[=true|false]\n", flag);
        } else {
            buf_printf(out, "  %s <%s>\n", flag, f->type_name);
        }
        buf_printf(out, "        %s\n        default: %s; environment: %s\n", f->help, default_text(f), env);
    }
    buf_printf(out, "  --help, -h\n        show this text\n");
    buf_terminate(out);
}

void config_doc_markdown(struct buf *out)
{
    buf_printf(out, "| key | environment | flag | type | default | meaning |\n"
                    "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        char key[64];
        char env[CONFIG_NAME_SIZE];
        char name[CONFIG_NAME_SIZE];
        char flag[CONFIG_NAME_SIZE + 2];
        env_name(f, env);
        flag_name(f, name);
        snprintf(key, sizeof key, f->flags & F_NO_FILE ? "`%s` (not in the file)" : "`%s`", f->key);
        snprintf(flag, sizeof flag, name[0] == '\0' ? "(never a flag)" : "`%s`", name);
        buf_printf(out, "| %s | `%s` | %s | %s | %s%s%s | %s%s |\n", key, env, flag, f->type_name,
                   f->def != NULL && f->def[0] != '\0' ? "`" : "", default_text(f),
                   f->def != NULL && f->def[0] != '\0' ? "`" : "", f->help,
                   f->flags & F_SECRET ? " (secret: redacted in `gantryd config show`)" : "");
    }
    buf_terminate(out);
}

size_t config_field_count(void)
{
    return NFIELDS;
}

void config_field_get(size_t i, struct config_field_info *out)
{
    assert(i < NFIELDS);
    const struct field *f = &fields[i];
    out->key = f->key;
    env_name(f, out->env);
    flag_name(f, out->flag);
    out->type = f->type_name;
    out->default_text = default_text(f);
    out->help = f->help;
    out->secret = (f->flags & F_SECRET) != 0;
    out->file_ok = (f->flags & F_NO_FILE) == 0;
}

uint64_t config_failure_domain_hash(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h == 0 ? 1 : h;
}
