/* gantry.v1.Principals and gantry.v1.ApiKeys: users, service accounts, role bindings and API
 * keys. Implementations behind the gate (api/gate/gate.h), which has already authenticated the
 * caller and applied the authorization table; these check what the table delegates to them
 * (decision.self_check, decision.binding_check) and validate the request.
 *
 * Rules beyond the table:
 *   - names are DNS-1123 labels, unique per kind; users and service accounts alike may carry an
 *     OIDC issuer and subject (an issuer name, or "mtls" and a certificate's common name);
 *   - bindings: platform_admin and auditor are global (namespace must be empty); namespace_admin
 *     and user need an existing namespace; a binding is unique per (principal, role, namespace);
 *   - the last enabled principal holding platform_admin cannot be disabled, deleted or lose that
 *     binding (FAILED_PRECONDITION), so a cluster never locks its admins out;
 *   - API keys: the secret is returned once by Create and never again; Revoke stops the key on
 *     every replica within the authentication cache bound (api/gate/authn.h);
 *   - updates and deletes honour expected_resource_version (ABORTED on mismatch).
 * Every write goes through res_mutate (api/gate/resource.h): one transaction with its change event
 * and its OCSF audit event, idempotent under request_id. ApiKeys.Create is the exception to
 * "a retry returns the same reply": the secret is never stored, so a retry under the same
 * request_id returns the key without its secret (revoke it and create another). */
#ifndef GANTRY_API_SERVICES_PRINCIPALS_SVC_H
#define GANTRY_API_SERVICES_PRINCIPALS_SVC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "api/gate/resource.h"
#include "api/services/kind_model.h"

struct gate;
struct pepper_ring;

struct principals_svc {
    const struct res_env *env; /* borrowed: the writer, and where audit events come from */
    const uint8_t *pepper;     /* borrowed, the API-key pepper (version 1) */
    size_t pepper_len;
    /* borrowed, may be NULL (then every key is hashed with @pepper, version 1): new keys are
     * hashed with its current version (api/services/pepper_ring.h) */
    struct pepper_ring *peppers;
    /* How Principals.Get and List, ListRoleBindings and ApiKeys.Get and List read: from these
     * models (api/services/kind_model.h; borrowed, set before the gate takes calls) as the call's
     * read options ask (api/services/model_read.h), or from the store (the leader) when a model is
     * NULL, store_reads is set (config model_reads false) or the model cannot answer. The models'
     * answers are the store path's byte for byte (an API key's last_used_at_ms aside: written
     * without a change event, the keys model reloads it every PRINCIPALS_KEYS_RELOAD_MS).
     * Authorization is unchanged and decided before the read (the gate's decision; a namespace
     * admin's right to another principal's keys, decision.manage_check, is still read from the
     * store). */
    struct kind_reads principals, bindings, keys;
    /* calls answered from the models (gantry_principal_model_reads_total; ListIdentities's too) */
    atomic_uint_fast64_t model_reads;
};

/* The keys model reloads every key's metadata at most this often, for last_used_at_ms (written by
 * authentication without a change event, at most once a minute per key and replica). */
#define PRINCIPALS_KEYS_RELOAD_MS 10000u

int principals_svc_register(struct gate *g, struct principals_svc *svc, char *errmsg);

/* The models of this service's kinds, whose messages are this service's (kind_model_free frees
 * each): principals (by id), role bindings (by namespace, then id; a Principal deletion re-reads
 * the principal's bindings, a Namespace deletion reloads them all) and API key metadata (by id;
 * never the key's hash or pepper version; a Principal deletion re-reads the principal's keys, and
 * every key is reloaded every PRINCIPALS_KEYS_RELOAD_MS). */
struct kind_model *principals_model_new(void);
struct kind_model *principals_bindings_model_new(void);
struct kind_model *principals_keys_model_new(void);

/* In a view of principals_model_new's model (kind_model_read's callback): the id of the principal
 * named by @id_or_name as the store path resolves it (its id, or its name with a user before a
 * service account), copied to @id (40 bytes). false: none. Names are not indexed: a name scans. */
bool principals_model_resolve(const struct kind_model_view *v, const char *id_or_name, char id[40]);

#endif
