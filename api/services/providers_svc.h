/* gantry.v1.Providers: namespace-scoped credentials, behind the gate (api/gate/gate.h), writes
 * through api/gate/resource.h (idempotency, change event and audit event in one transaction).
 *
 * A provider is (namespace, name, type, config, labels) in the clear plus a `secret` map that is
 * write-only: Create and Update seal it with the provider key ring's newest key (api/services/keyring.h:
 * AES-256-GCM, a random 96-bit nonce per encryption, AAD = provider id, namespace and key id), and
 * no read returns it. Responses carry the secret's key NAMES (secret_keys) and the key id only.
 * No response, log line, audit event, metric or error message carries a secret value: the
 * validation messages name the offending secret key, never its value.
 *
 * Rules beyond the authorization table (api/authz/authz.c):
 *   - names are DNS-1123 labels, unique per namespace; the namespace must exist and be ACTIVE
 *     for Create (a TERMINATING one refuses new objects);
 *   - Update replaces type (when given), config and labels; an empty `secret` keeps the stored one
 *     (and its key id), a non-empty one replaces it whole under the newest key;
 *   - Delete is refused (FAILED_PRECONDITION, naming one sandbox) while a sandbox of the namespace
 *     lists the provider; it removes the provider's grants with it;
 *   - Grant (provider, principal): the principal (id or name) must hold a role in the namespace;
 *     a second grant of the same pair is ALREADY_EXISTS; RevokeGrant of a missing one NOT_FOUND;
 *   - updates and deletes honour expected_resource_version (ABORTED on mismatch).
 *
 * Limits: 64 config entries (keys as label keys, values up to 4096 bytes); 64 secret entries, keys
 * 1..128 of [A-Za-z0-9_.-], values up to 16 KiB, 64 KiB in all; type 1..63 of [a-z0-9_.-]. */
#ifndef GANTRY_API_SERVICES_PROVIDERS_SVC_H
#define GANTRY_API_SERVICES_PROVIDERS_SVC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "api/gate/resource.h"
#include "api/services/keyring.h"
#include "api/services/kind_model.h"

struct gate;

struct providers_svc {
    const struct res_env *env; /* borrowed */
    const uint8_t *pepper;     /* borrowed: the cluster's API-key pepper (raft/identity.h) */
    size_t pepper_len;
    struct keyring ring; /* derived by providers_svc_register */
    /* How Get and List read (api/services/kind_model.h), the model from providers_model_new. */
    struct kind_reads reads;
    /* ListGrants: the grants model (providers_grants_model_new; borrowed, NULL: the store), read
     * with @reads' model and options (linearizable: ListGrants has no read options). */
    struct kind_model *grants;
};

/* A model of every provider grant (kind_model_free frees it), whose messages are ListGrants's:
 * by the provider's namespace, then provider id and grantee; a ProviderGrant event re-reads its
 * provider's grants, a Provider deletion drops them, a Principal deletion (which deletes its
 * grants without events) reloads them all. */
struct kind_model *providers_grants_model_new(void);

/* Derive the key ring from svc->pepper and route the Providers methods. 0 or GERR_INVAL. */
int providers_svc_register(struct gate *g, struct providers_svc *svc, char *errmsg);
void providers_svc_close(struct providers_svc *svc);

/* A providers model whose messages are Get's and List's: the public Provider (secret key names and
 * the key id, never the secret). kind_model_free frees it. */
struct kind_model *providers_model_new(void);

/* For sandboxes: may the caller of @ctx attach provider @provider_name of namespace @ns? 0 for a
 * platform_admin, a namespace_admin of @ns, or a holder of a grant; GERR_NOTFOUND (no such
 * provider) or GERR_PERM (no grant) otherwise, with the reason in @why (never a secret). Other
 * codes are the store's. */
int providers_check_attach(struct store_tx *tx, const char *ns, const char *provider_name,
                           const struct gate_ctx *ctx, char *why, size_t len);

/* May the caller of @ctx reference the Kubernetes Secrets that provider config @config_json (the
 * stored JSON object) names in "secret_ref.<key>" entries (api/rules/secret_ref.h)? 0 for a
 * platform_admin or a caller whose delegation scopes covering @ns allow each; GERR_PERM otherwise,
 * with @why naming the entry and the Secret. A caller with no delegation scope in @ns and without
 * platform_admin is refused too: only trusted callers reference Secrets (at provider Create and
 * Update). Sandboxes.Create calls it for delegated callers only (a provider set up by a trusted
 * caller may be attached by anyone it is granted to). */
int providers_refs_allowed(const struct gate_ctx *ctx, const char *ns, const char *config_json, char *why,
                           size_t len);

/* For the reconciler and drivers: the decrypted secret of provider @name in @ns. On success
 * @out holds n entries whose keys and values point into out->plain; providers_secret_close wipes
 * and frees it. Errors: GERR_NOTFOUND, GERR_PERM (does not open), the store's; message in the
 * transaction's errmsg. */
struct providers_secret {
    size_t n;
    const char **keys, **values;
    struct buf plain;
};
int providers_secret_open_tx(struct store_tx *tx, const struct keyring *ring, const char *ns,
                             const char *name, struct providers_secret *out);
void providers_secret_close(struct providers_secret *s);

/* For the reconciler (docs/credentials.md): the credentials of providers @names (@n, at most 32)
 * of namespace @ns, as a sandbox receives them: every entry of each one's secret, with the
 * environment variable its config names for it ("env.<key>" = VARIABLE), read in one transaction
 * on @cl (a client no other thread uses). @out owns every string; providers_credentials_close wipes
 * and frees them. 0, GERR_NOTFOUND (a provider is gone), GERR_PERM (a secret does not open), or the
 * store's, with @errmsg (never a value). */
struct driver_credential;
struct providers_credentials {
    struct driver_credential *items;
    size_t n;
    struct providers_secret *secrets; /* one per provider: the values point into them */
    size_t n_secrets;
    json_t **configs; /* one per provider: the env names point into them */
    char **fetched;   /* the values of Secret-backed entries (wiped and freed at close) */
    size_t n_fetched;
};
/* Resolve a Secret-backed credential (provider config "secret_ref.<key>" = "NS/NAME/KEY",
 * api/rules/secret_ref.h): 0 with *@value the value (heap, NUL-terminated; providers_credentials_close
 * wipes and frees it), or an error with @errmsg (never a value). Called after the store read, on the
 * caller's thread. */
typedef int (*providers_secret_fetch_fn)(void *arg, const char *ns, const char *name, const char *key,
                                         char **value, char *errmsg);
/* As above; Secret-backed entries are resolved through @fetch (NULL: such a provider fails with
 * GERR_UNAVAILABLE, "Secret-backed credentials need the kubernetes driver"), after the stored ones,
 * in config order. */
int providers_credentials_open(struct store_client *cl, const struct keyring *ring, const char *ns,
                               const char *const *names, size_t n, providers_secret_fetch_fn fetch,
                               void *fetch_arg, struct providers_credentials *out, char *errmsg);
void providers_credentials_close(struct providers_credentials *c);

/* Move every provider secret that is not sealed under the ring's newest key to it, in batches of
 * one transaction each (a change event and an audit event per provider). @cl is a client no
 * other thread uses. Providers whose secret does not open are left as they are and counted in
 * *@failed (their names are logged). Returns 0 or the store's error, with @errmsg. */
int providers_reencrypt_all(struct store_client *cl, const struct keyring *ring, int64_t now_ms,
                            unsigned *done, unsigned *failed, char *errmsg);

/* Add a key to the ring (it becomes the one new secrets are sealed under), with a change event
 * and an audit event, in one transaction; its id into @id. @cl is a client no other thread uses.
 * Returns 0 or the store's error, with @errmsg. */
int providers_add_key(struct store_client *cl, const struct keyring *ring, int64_t now_ms,
                      char id[KEYRING_ID_SIZE], char *errmsg);

#endif
