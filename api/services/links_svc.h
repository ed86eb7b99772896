/* External identities linked to principals (Principals.LinkIdentity, UnlinkIdentity,
 * ListIdentities), behind the gate (api/gate/gate.h).
 *
 * The same person arriving from two OIDC issuers (or with a client certificate) is two
 * principals unless a platform_admin links the second (issuer, subject) to the first principal:
 * authentication (api/gate/authn.h) then maps both to one principal, with its bindings. Rules:
 *   - issuer is an issuer name from the OIDC issuers file or "mtls"; subject 1..255 bytes;
 *   - a pair belongs to one principal: ALREADY_EXISTS when a principal has it as its own issuer
 *     and subject, or it is linked already; the principal must exist (NOT_FOUND);
 *   - users and service accounts alike (a platform controller's service account authenticates
 *     with a Kubernetes projected token or a client certificate instead of a long-lived key);
 *   - unlinking takes effect on every replica within the authentication cache bound
 *     (docs/security.md), like a revocation.
 * Writes go through res_mutate (api/gate/resource.h): idempotent under request_id, audited, with a
 * change event. ListIdentities lists a principal's links (anyone for themselves; platform_admin,
 * auditor and namespace_admin for anyone). */
#ifndef GANTRY_API_SERVICES_LINKS_SVC_H
#define GANTRY_API_SERVICES_LINKS_SVC_H

#include "api/gate/resource.h"

struct gate;

/* @env is borrowed and outlives the gate. */
int links_svc_register(struct gate *g, const struct res_env *env, char *errmsg);

#endif
