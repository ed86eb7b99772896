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

#include <stdatomic.h>

#include "api/gate/resource.h"
#include "api/services/kind_model.h"

struct gate;

/* How ListIdentities reads: from @links (links_svc_links_model_new) and @principals
 * (principals_model_new, to resolve an id or a name) as the call's read options ask
 * (api/services/model_read.h), or from the store when a model is NULL, store_reads is set (config
 * model_reads false) or a model cannot answer; the answer is the store path's byte for byte.
 * @model_reads (may be NULL) counts the calls answered from the models. */
struct links_reads {
    struct kind_reads links, principals;
    atomic_uint_fast64_t *model_reads;
};

/* @env and @reads (NULL: the store) are borrowed and outlive the gate. */
int links_svc_register(struct gate *g, const struct res_env *env, const struct links_reads *reads,
                       char *errmsg);

/* The linked identities' model (kind_model_free frees it): by issuer and subject; a PrincipalLink
 * event (its object id is the principal's) re-reads that principal's links, and so does a Principal
 * deletion, which deletes them without events of their own. */
struct kind_model *links_svc_links_model_new(void);

#endif
