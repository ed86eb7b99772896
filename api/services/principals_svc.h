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

#include <stddef.h>
#include <stdint.h>

#include "api/gate/resource.h"

struct gate;
struct pepper_ring;

struct principals_svc {
    const struct res_env *env; /* borrowed: the writer, and where audit events come from */
    const uint8_t *pepper;     /* borrowed, the API-key pepper (version 1) */
    size_t pepper_len;
    /* borrowed, may be NULL (then every key is hashed with @pepper, version 1): new keys are
     * hashed with its current version (api/services/pepper_ring.h) */
    struct pepper_ring *peppers;
};

int principals_svc_register(struct gate *g, struct principals_svc *svc, char *errmsg);

#endif
