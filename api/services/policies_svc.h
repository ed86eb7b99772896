/* gantry.v1.Policies: the gateway policy (namespace "", set by a platform_admin) and one policy
 * per namespace (set by its namespace_admin) that may only tighten the gateway's. Behind the gate
 * (api/gate/gate.h); writes through api/gate/resource.h. The decisions (validation, tightening,
 * enforcement, the effective policy) are pure functions in api/rules/policy.h.
 *
 * Semantics of each field (api/proto/gantry/v1/policies.proto):
 *   allowed_images              fnmatch(3) globs over the image reference; empty: any image
 *   allowed_drivers             driver names; empty: any driver
 *   max_lifetime_seconds        0: unlimited
 *   max_gpus_per_sandbox        0: unlimited
 *   deny_gpus                   true: no GPUs at all
 *   allowed_driver_config_keys  globs over "<driver>.<key>" (each top-level key of each
 *                               driver_config JSON object); empty: any key
 *   allow_shares, allow_exec_shares   false forbids; with no gateway policy stored (the built-in
 *                               default) both are true
 *   egress_allow                "host:port" patterns (host a glob of [a-z0-9.*?_-], port "*", N
 *                               or N-M); empty: any destination
 *   allowed_service_accounts    exact Kubernetes ServiceAccount names (DNS-1123 subdomains, at
 *                               most 64) a sandbox's driver_config "service_account" may name;
 *                               empty: NONE (the one list where empty is the tight end). The
 *                               gateway's own name (AUTHZ_SA_GATEWAY, "gantry") is refused.
 * Set replaces the whole policy; a field left out takes its zero value.
 *
 * Tightening. A namespace policy N is accepted only when, field by field, it allows no more than
 * the gateway policy G (the stored one, or the built-in default): a maximum is tighter when G's
 * is 0 or N's is nonzero and not above G's; a flag when it does not allow what G forbids; a list
 * when G's is empty, or N's is non-empty and every entry of N is covered by some entry of G.
 * Coverage of a glob p by a glob q is judged conservatively (possibly refusing a pattern that is
 * in fact narrower, never accepting a wider one): p equals q; q is "*"; p has no glob
 * characters and q matches it; or q is a literal prefix followed by "*" and p starts with that
 * prefix. Egress entries need host coverage and port-range containment. allowed_service_accounts
 * is tighter when every name N lists is listed by G (so an empty N always is, and a non-empty N
 * under an empty G never is). Set of a looser policy
 * fails with FAILED_PRECONDITION naming EACH loosening field.
 *
 * The gateway policy may later be tightened below a namespace's; then both apply: enforcement
 * (policies_check_sandbox) always checks the gateway policy and the namespace policy separately,
 * so the effective rule is exact. GetEffective returns, per field, the tighter value: the minimum
 * nonzero maximum, the AND of the allow flags, the OR of deny_gpus, and for a list the one that
 * lies within the other; when neither list lies within the other, it returns the gateway's list
 * and names the field in the annotation "gantry.io/also-enforced" (the namespace's list applies
 * as well). */
#ifndef GANTRY_API_SERVICES_POLICIES_SVC_H
#define GANTRY_API_SERVICES_POLICIES_SVC_H

#include <stdbool.h>
#include <stddef.h>

#include "api/gate/resource.h"
#include "api/services/kind_model.h"
#include "gantry/v1/policies.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"

struct gate;

/* Policies.Get reads from @reads' model as the call's read options ask (api/services/model_read.h),
 * the namespace's existence from @namespaces (tenants_ns_model_new), or from the store (the leader)
 * when a model is missing, reads.store_reads is set (config model_reads false) or a model cannot
 * answer; the answers are the store path's byte for byte. GetEffective and Egress.Decide read the
 * store. Authorization is the gate's, decided before the read. */
struct policies_svc {
    const struct res_env *env;
    struct kind_reads reads;       /* the policies model (policies_model_new), borrowed */
    struct kind_model *namespaces; /* borrowed; NULL: the store answers */
};

/* @svc borrowed: it must outlive the gate's calls. */
int policies_svc_register(struct gate *g, const struct policies_svc *svc, char *errmsg);

/* A policies model whose messages are Policies.Get's (kind_model_free frees it): one entry per
 * stored policy, named and namespaced by its namespace ("" for the gateway policy). */
struct kind_model *policies_model_new(void);

/* For sandboxes: may a sandbox of @spec run in @ns on @driver (NULL or "": not checked)? 0, or
 * GERR_REFUSED with @why naming every violated field and the policy that forbids it
 * (allowed_images, max_lifetime_seconds, deny_gpus, max_gpus_per_sandbox, allowed_drivers,
 * allowed_driver_config_keys, allowed_service_accounts); GERR_INVAL when a driver_config value is
 * not a JSON object or names a malformed service_account; the
 * store's errors otherwise. A lifetime of 0 (the namespace's maximum) passes. The decision is
 * policy_rules_check_sandbox (api/rules/policy.h); this loads the two policies for it. */
int policies_check_sandbox(struct store_tx *tx, const char *ns, const Gantry__V1__SandboxSpec *spec,
                           const char *driver, char *why, size_t len);

/* The gateway policy (*@gateway, the built-in default when none is stored) and the namespace's
 * (*@ns_policy, NULL when none). Free both with policy_rules_free (api/rules/policy.h). */
int policies_load_tx(struct store_tx *tx, const char *ns, Gantry__V1__Policy **gateway,
                     Gantry__V1__Policy **ns_policy);

#endif
