/* Gantry's replicated schema, as numbered migrations (store/migrate.h).
 *
 * Rules for every migration: tables are STRICT, columns are INTEGER, REAL, TEXT or BLOB only
 * (dqlite 1.11 aborts reading DATETIME/BOOLEAN columns that hold another storage class), times are
 * INTEGER milliseconds since the Unix epoch, and a migration is never edited once released: add a
 * new one. Later migrations add the tenant resources (DESIGN.md section 3). */
#include "store/migrate.h"

static const struct store_migration schema[] = {
    {1, "cluster revision and change events",
     /* The cluster-wide revision: one row, bumped by every committed change. */
     "CREATE TABLE cluster_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL) "
     "STRICT;"
     "INSERT INTO cluster_revision (id, revision) VALUES (1, 0);"
     /* One row per committed change, in revision order: feeds Watch and the reconciler. */
     "CREATE TABLE events (revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT NULL,"
     " object_id TEXT NOT NULL, type TEXT NOT NULL, at_ms INTEGER NOT NULL) STRICT;"},
    {2, "cluster identity, members, join tokens, namespaces, principals, bindings, API keys",
     /* Cluster-wide facts by key: cluster_id, gateway_id, ca_pem (public), created_at_ms. Secrets
      * (the CA key, the API-key pepper) are never stored here: raft/identity.h. */
     "CREATE TABLE cluster_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at_ms INTEGER NOT NULL) "
     "STRICT;"
     /* What Raft's configuration does not hold about a member: its name, API address and failure
      * domain. Raft's configuration (id, address, role) stays the authority on membership. */
     "CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT NOT NULL, peer_address TEXT NOT NULL,"
     " api_address TEXT NOT NULL, failure_domain INTEGER NOT NULL, failure_domain_name TEXT NOT NULL,"
     " joined_at_ms INTEGER NOT NULL) STRICT;"
     /* Join tokens: the SHA-256 of the secret, never the secret; uses_left counts down to 0. */
     "CREATE TABLE join_tokens (id TEXT PRIMARY KEY, secret_hash BLOB NOT NULL, uses_left INTEGER NOT NULL,"
     " expires_at_ms INTEGER NOT NULL, created_by TEXT NOT NULL, created_at_ms INTEGER NOT NULL) STRICT;"
     "CREATE TABLE namespaces (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
     " phase TEXT NOT NULL CHECK (phase IN ('ACTIVE', 'TERMINATING')), labels TEXT NOT NULL,"
     " annotations TEXT NOT NULL, created_by TEXT NOT NULL, resource_version INTEGER NOT NULL,"
     " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, deletion_timestamp_ms INTEGER NOT "
     "NULL)"
     " STRICT;"
     /* Users and service accounts. OIDC users are (issuer, subject); local ones have issuer ''. */
     "CREATE TABLE principals (id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('user', "
     "'service_account')),"
     " name TEXT NOT NULL, namespace TEXT NOT NULL, issuer TEXT NOT NULL, subject TEXT NOT NULL,"
     " display_name TEXT NOT NULL, disabled INTEGER NOT NULL, labels TEXT NOT NULL, created_by TEXT NOT NULL,"
     " resource_version INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,"
     " UNIQUE (kind, namespace, name)) STRICT;"
     "CREATE UNIQUE INDEX principals_by_subject ON principals (issuer, subject) WHERE issuer <> '';"
     /* Role bindings: namespace '' for the global roles. scope: RFC 0005 delegation (JSON) or ''. */
     "CREATE TABLE role_bindings (id TEXT PRIMARY KEY,"
     " principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,"
     " role TEXT NOT NULL CHECK (role IN ('platform_admin', 'namespace_admin', 'auditor', 'user')),"
     " namespace TEXT NOT NULL, scope TEXT NOT NULL, created_by TEXT NOT NULL, created_at_ms INTEGER NOT "
     "NULL,"
     " UNIQUE (principal_id, role, namespace)) STRICT;"
     "CREATE INDEX role_bindings_by_principal ON role_bindings (principal_id);"
     /* API keys: id is the public key id of gtk_<id>_<secret>; hash = HMAC-SHA256(pepper, secret). */
     "CREATE TABLE api_keys (id TEXT PRIMARY KEY, principal_id TEXT NOT NULL REFERENCES principals (id)"
     " ON DELETE CASCADE, name TEXT NOT NULL, hash BLOB NOT NULL, created_by TEXT NOT NULL,"
     " created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL, last_used_ms INTEGER NOT NULL,"
     " revoked_at_ms INTEGER NOT NULL) STRICT;"
     "CREATE INDEX api_keys_by_principal ON api_keys (principal_id);"},
    {3, "principal e-mail; resource versions of bindings and API keys",
     "ALTER TABLE principals ADD COLUMN email TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE role_bindings ADD COLUMN resource_version INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE api_keys ADD COLUMN resource_version INTEGER NOT NULL DEFAULT 0;"},
    {4, "tenant resources: idempotency, audit, sandboxes, shares, quotas, providers, policies, usage, leases",
     /* A retried write under the same (principal, request_id) returns the stored response. */
     "CREATE TABLE idempotency (principal_id TEXT NOT NULL, request_id TEXT NOT NULL, method TEXT NOT NULL,"
     " response BLOB NOT NULL, revision INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
     " PRIMARY KEY (principal_id, request_id)) STRICT;"
     "CREATE INDEX idempotency_by_time ON idempotency (created_at_ms);"
     /* OCSF events, one row each; the JSON is built on export (api/gate/audit.h). */
     "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, class_uid INTEGER NOT NULL,"
     " activity_id INTEGER NOT NULL, actor_id TEXT NOT NULL, actor_name TEXT NOT NULL, actor_kind TEXT NOT "
     "NULL,"
     " operation TEXT NOT NULL, namespace TEXT NOT NULL, resource_type TEXT NOT NULL, resource_id TEXT NOT "
     "NULL,"
     " resource_name TEXT NOT NULL, status TEXT NOT NULL, status_code INTEGER NOT NULL, message TEXT NOT "
     "NULL,"
     " source TEXT NOT NULL, request_id TEXT NOT NULL, replica_id INTEGER NOT NULL, gateway_id TEXT NOT NULL,"
     " revision INTEGER NOT NULL) STRICT;"
     "CREATE INDEX audit_by_time ON audit (time_ms);"
     /* Sandboxes: spec and status are packed gantry.v1.SandboxSpec / SandboxStatus messages. */
     "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,"
     " owner_id TEXT NOT NULL, created_by TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,"
     " spec BLOB NOT NULL, status BLOB NOT NULL, phase TEXT NOT NULL, gpus INTEGER NOT NULL,"
     " resource_version INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,"
     " deletion_timestamp_ms INTEGER NOT NULL, UNIQUE (namespace, name)) STRICT;"
     "CREATE INDEX sandboxes_by_owner ON sandboxes (owner_id);"
     "CREATE TABLE shares (sandbox_id TEXT NOT NULL, namespace TEXT NOT NULL, grantee_id TEXT NOT NULL,"
     " access TEXT NOT NULL CHECK (access IN ('read', 'exec')), created_by TEXT NOT NULL,"
     " created_at_ms INTEGER NOT NULL, PRIMARY KEY (sandbox_id, grantee_id)) STRICT;"
     "CREATE INDEX shares_by_grantee ON shares (grantee_id);"
     /* Quotas and their usage counters, changed in the same transaction as the sandbox. */
     "CREATE TABLE quotas (namespace TEXT PRIMARY KEY, max_sandboxes INTEGER NOT NULL, max_gpus INTEGER NOT "
     "NULL,"
     " max_lifetime_s INTEGER NOT NULL, mode TEXT NOT NULL CHECK (mode IN ('hard', 'soft')),"
     " resource_version INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) STRICT;"
     "CREATE TABLE quota_usage (namespace TEXT PRIMARY KEY, sandboxes INTEGER NOT NULL, gpus INTEGER NOT "
     "NULL) STRICT;"
     /* Providers: secret is AES-256-GCM ciphertext under the cluster key key_id. */
     "CREATE TABLE providers (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, type TEXT "
     "NOT NULL,"
     " config TEXT NOT NULL, secret_keys TEXT NOT NULL, secret BLOB NOT NULL, key_id TEXT NOT NULL,"
     " labels TEXT NOT NULL, created_by TEXT NOT NULL, resource_version INTEGER NOT NULL,"
     " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, UNIQUE (namespace, name)) STRICT;"
     "CREATE TABLE provider_grants (provider_id TEXT NOT NULL, namespace TEXT NOT NULL, principal_id TEXT "
     "NOT NULL,"
     " created_by TEXT NOT NULL, created_at_ms INTEGER NOT NULL, PRIMARY KEY (provider_id, principal_id)) "
     "STRICT;"
     /* Policies: '' is the gateway policy; the value is a packed gantry.v1.Policy. */
     "CREATE TABLE policies (namespace TEXT PRIMARY KEY, policy BLOB NOT NULL, resource_version INTEGER NOT "
     "NULL,"
     " created_by TEXT NOT NULL, updated_at_ms INTEGER NOT NULL) STRICT;"
     /* Usage: one row per sandbox run, for cost attribution. */
     "CREATE TABLE usage (sandbox_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, owner_id TEXT NOT NULL,"
     " labels TEXT NOT NULL, gpus INTEGER NOT NULL, started_at_ms INTEGER NOT NULL, ended_at_ms INTEGER NOT "
     "NULL)"
     " STRICT;"
     "ALTER TABLE namespaces ADD COLUMN description TEXT NOT NULL DEFAULT '';"
     "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL,"
     " renewed_at_ms INTEGER NOT NULL, duration_ms INTEGER NOT NULL) STRICT;"},
    {5, "change events carry the object's state at that change",
     /* A packed message of the object as the change left it (sandboxes), so a watch delivers every
      * state, not only the latest; empty for kinds that do not need it. */
     "ALTER TABLE events ADD COLUMN payload BLOB NOT NULL DEFAULT x'';"},
    {6, "external identities linked to principals",
     /* (issuer, subject) pairs an admin linked to an existing principal: the same person from a
      * second OIDC issuer or a client certificate. A pair belongs to one principal, either as its
      * own issuer and subject (principals) or here. */
     "CREATE TABLE principal_links (issuer TEXT NOT NULL, subject TEXT NOT NULL,"
     " principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE, created_by TEXT NOT NULL,"
     " created_at_ms INTEGER NOT NULL, PRIMARY KEY (issuer, subject)) STRICT;"
     "CREATE INDEX principal_links_by_principal ON principal_links (principal_id);"},
    {7, "audit events count repeats",
     /* Refusals outside a mutation's transaction are aggregated (api/gate/audit_sink.h): one row
      * stands for @count identical events between start_time_ms and time_ms. */
     "ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;"
     "ALTER TABLE audit ADD COLUMN start_time_ms INTEGER NOT NULL DEFAULT 0;"},
    {8, "quota ceilings",
     /* The most a platform_admin allows a namespace (0: no limit on that dimension): the quota its
      * namespace_admin sets must fit it, and it is enforced on its own, always hard. A table of its
      * own, not columns of quotas, because a quota can be deleted while its ceiling stays. */
     "CREATE TABLE quota_ceilings (namespace TEXT PRIMARY KEY, max_sandboxes INTEGER NOT NULL,"
     " max_gpus INTEGER NOT NULL, max_lifetime_s INTEGER NOT NULL, created_by TEXT NOT NULL,"
     " resource_version INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) STRICT;"},
    {9, "member certificates and revoked certificates",
     /* The certificate each member holds (recorded by the replica that issued it at join, and by
      * the member itself at every start), so removing the member can revoke it; and the revoked
      * ones, which every replica's peer relay refuses (raft/certrevoke.h). Fingerprints are
      * "sha256:<hex of the DER certificate>". */
     "CREATE TABLE member_certs (member_id INTEGER NOT NULL, fingerprint TEXT NOT NULL,"
     " not_after_ms INTEGER NOT NULL, recorded_at_ms INTEGER NOT NULL, PRIMARY KEY (member_id, fingerprint))"
     " STRICT;"
     "CREATE TABLE revoked_certs (fingerprint TEXT PRIMARY KEY, member_id INTEGER NOT NULL,"
     " not_after_ms INTEGER NOT NULL, revoked_at_ms INTEGER NOT NULL, reason TEXT NOT NULL) STRICT;"},
    {10, "the API-key pepper version that hashed each key",
     /* Version 1 is the root pepper (secrets/pepper); later ones are sealed in cluster_meta
      * (api/services/pepper_ring.h). A key is rehashed under the current version when it is used. */
     "ALTER TABLE api_keys ADD COLUMN pepper_version INTEGER NOT NULL DEFAULT 1;"},
    {11, "Gantry-owned warm pools",
     /* WarmPools (api/services/warmpools_svc.h): pool is the packed gantry.v1.WarmPool as created
      * and updated (meta and spec, no status); status the packed WarmPoolStatus the reconciler
      * writes. kube_namespace is the chosen Kubernetes namespace ('' : the gateway's placement); a
      * chosen one holds one pool of a name. A namespace's pools go with the namespace. */
     "CREATE TABLE warm_pools (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,"
     " kube_namespace TEXT NOT NULL, template TEXT NOT NULL, replicas INTEGER NOT NULL, pool BLOB NOT NULL,"
     " status BLOB NOT NULL DEFAULT x'', created_by TEXT NOT NULL, resource_version INTEGER NOT NULL,"
     " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, UNIQUE (namespace, name)) STRICT;"
     "CREATE UNIQUE INDEX warm_pools_by_kube_name ON warm_pools (kube_namespace, name) WHERE kube_namespace "
     "!= '';"
     "CREATE TRIGGER warm_pools_namespace_gone AFTER DELETE ON namespaces BEGIN"
     " DELETE FROM warm_pools WHERE namespace = old.name; END;"},
};

const struct store_migration *store_schema(unsigned *n)
{
    *n = sizeof schema / sizeof schema[0];
    return schema;
}
