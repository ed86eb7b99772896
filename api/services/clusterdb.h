/* The cluster's own rows in the store: cluster_meta, members, join tokens, and the bootstrap
 * objects (the default namespace, the first Platform Admin). Each write is one transaction that
 * also bumps the cluster revision and appends a change event (store/schema.c), so it commits or
 * vanishes whole.
 *
 * All functions block (store round trips) and run on worker threads with the caller's client or
 * through the writer (the *_tx functions are store_tx_fn-shaped pieces to run inside
 * store_client_tx / store_writer_run). Errors: the store's (store/client.h), GERR_NOTFOUND,
 * GERR_EXISTS, GERR_PERM (a bad or spent join token; the message never says which part of it was
 * wrong), with a message in the transaction's errmsg. */
#ifndef GANTRY_API_SERVICES_CLUSTERDB_H
#define GANTRY_API_SERVICES_CLUSTERDB_H

#include <stdbool.h>
#include <stdint.h>

#include "api/auth/apikey.h"
#include "store/client.h"

/* Join tokens: gjt_<16 hex id>_<32 hex secret>[_<64 hex CA fingerprint>]. */
#define JOIN_TOKEN_ID_HEX     16
#define JOIN_TOKEN_SECRET_HEX 32
#define JOIN_TOKEN_MAX_LEN    (4 + JOIN_TOKEN_ID_HEX + 1 + JOIN_TOKEN_SECRET_HEX + 1 + 64)

struct join_token_parts {
    char id[JOIN_TOKEN_ID_HEX + 1];
    char secret[JOIN_TOKEN_SECRET_HEX + 1];
    char ca_fingerprint[80]; /* "sha256:<hex>" or "" */
};

/* Parse a token. 0 or GERR_INVAL (the message does not quote the token). */
int join_token_parse(const char *token, struct join_token_parts *out, char *errmsg);
/* A new random token with @ca_fingerprint ("sha256:..." or NULL for none). */
void join_token_generate(const char *ca_fingerprint, char out[JOIN_TOKEN_MAX_LEN + 1],
                         struct join_token_parts *parts);

/* The bootstrap content of a new cluster, in one transaction: cluster_meta (cluster id, gateway
 * id, CA certificate), this replica's members row, the default namespace, a user principal
 * "admin" with a global platform_admin binding, and its API key (id + hash only). */
struct clusterdb_seed {
    const char *cluster_id, *gateway_id, *ca_pem;
    uint64_t replica_id;
    const char *replica_name, *peer_address, *api_address, *failure_domain_name;
    uint64_t failure_domain;
    bool default_namespace; /* false for a restore: the backup has its own */
    const char *admin_name; /* principal name, e.g. "admin"; NULL: no admin */
    const char *admin_key_id;
    const uint8_t *admin_key_hash; /* APIKEY_HASH_SIZE bytes */
    /* An optional pre-shared join token (Helm): id + secret, for @join_uses uses until @join_expires_ms. */
    const struct join_token_parts *join;
    unsigned join_uses;
    int64_t join_expires_ms;
};
int clusterdb_seed_tx(struct store_tx *tx, void *seed);

/* Inside a write transaction: set cluster_meta @key to @value (insert or replace, stamped @now).
 * The store's errors. */
int clusterdb_meta_put_tx(struct store_tx *tx, const char *key, const char *value, int64_t now);

/* Insert a join token (the SHA-256 of its secret, never the secret) for @uses uses until
 * @expires_ms, dropping tokens that expired over a day before @now_ms on the way. No change event:
 * the caller records it with its audit event (api/gate/resource.h, res_event). */
struct clusterdb_token_new {
    const struct join_token_parts *parts;
    unsigned uses;
    int64_t expires_ms;
    const char *created_by;
    int64_t now_ms;
};
int clusterdb_token_insert_tx(struct store_tx *tx, const struct clusterdb_token_new *t);

/* A join token's metadata as stored (the secret's hash is never read out). */
struct clusterdb_token {
    char id[JOIN_TOKEN_ID_HEX + 1];
    unsigned uses_left;
    int64_t expires_ms, created_ms;
    char created_by[64];
};
/* The tokens with an id after @after ("" from the first), in id order, at most @limit. *@out is
 * allocated (mem_free). */
int clusterdb_tokens(struct store_client *cl, const char *after, unsigned limit, struct clusterdb_token **out,
                     unsigned *n);
/* Delete the token @id, its metadata as it stood in @out. GERR_NOTFOUND (with a message in the
 * transaction's errmsg) when there is none. No change event, as for insert. */
int clusterdb_token_revoke_tx(struct store_tx *tx, const char *id, struct clusterdb_token *out);

/* Spend one use of a token and record the joining member, atomically. GERR_PERM: unknown, expired
 * or spent token, or a wrong secret. GERR_EXISTS: the replica id or name is taken by another
 * member row with another peer address. */
struct clusterdb_join {
    const struct join_token_parts *parts;
    int64_t now_ms;
    uint64_t replica_id;
    const char *replica_name, *peer_address, *api_address, *failure_domain_name;
    uint64_t failure_domain;
};
int clusterdb_join_tx(struct store_tx *tx, void *arg);

/* Read-only: does @parts name a stored token with that secret, uses left and not expired at @now_ms?
 * 0 (valid), GERR_PERM (not), or the store's errors. What a replica without the CA key checks before
 * it relays a join to one that has it, so made-up tokens cost it one read, not calls to every
 * member; the signing member checks again and spends a use in clusterdb_join_tx. */
int clusterdb_token_valid(struct store_client *cl, const struct join_token_parts *parts, int64_t now_ms);

/* Forget a member's row (after it left Raft's configuration). */
struct clusterdb_forget {
    uint64_t id;
};
int clusterdb_forget_tx(struct store_tx *tx, void *arg);

/* Read one cluster_meta value into @out (NUL-terminated, truncated to @len). GERR_NOTFOUND. */
int clusterdb_meta_get(struct store_client *cl, const char *key, char *out, size_t len);

/* Ensure this replica's members row says what its configuration says (a restart with a new API
 * address or failure domain updates it). */
int clusterdb_member_upsert_tx(struct store_tx *tx, void *arg); /* arg: struct clusterdb_join (no token) */

/* One member row. */
struct clusterdb_member {
    uint64_t id;
    char name[64];
    char api_address[128];
    char failure_domain_name[128];
    uint64_t failure_domain;
};
/* All member rows; *@out allocated (mem_free). */
int clusterdb_members(struct store_client *cl, struct clusterdb_member **out, unsigned *n);

#endif
