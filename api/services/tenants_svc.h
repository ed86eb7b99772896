/* gantry.v1.Namespaces and gantry.v1.Quotas, behind the gate (api/gate/gate.h), writes through
 * api/gate/resource.h (idempotency, change event and audit event in one transaction).
 *
 * Namespaces: names are DNS-1123 labels of at most 63 characters, unique. `default` exists from
 * bootstrap and cannot be deleted. Deletion is two-phase: Delete marks the namespace TERMINATING
 * (new sandboxes, providers and bindings are refused from then on) and removes it only when no
 * sandbox or provider remains; otherwise it answers FAILED_PRECONDITION naming what remains,
 * and the operator calls Delete again once they are gone. Lists show global roles every
 * namespace and others the namespaces they hold a role in.
 *
 * Quotas: per namespace, maximum concurrent sandboxes, GPUs in use and sandbox lifetime (0:
 * unlimited), mode hard (RESOURCE_EXHAUSTED naming the limit) or soft (allowed, with a warning
 * in the audit event and gantry_quota_soft_exceeded_total). The usage counters
 * (`quota_usage`) change in the sandbox's own transaction (api/services/sandboxes_svc.h). */
#ifndef GANTRY_API_SERVICES_TENANTS_SVC_H
#define GANTRY_API_SERVICES_TENANTS_SVC_H

#include "api/gate/resource.h"

struct gate;

int tenants_svc_register(struct gate *g, const struct res_env *env, char *errmsg);

/* For sandboxes: check and charge (or release, with negative deltas) the namespace's quota in
 * @tx. Returns 0, GERR_TOOBIG (hard quota; message names the limit), with *@warning set for a soft
 * excess; GERR_REFUSED when the namespace is missing or TERMINATING. */
int tenants_charge(struct store_tx *tx, const char *ns, int sandboxes, int gpus, uint64_t lifetime_s,
                   char *warning, size_t warning_len);

/* Soft quota excesses so far (for /metrics). */
uint64_t tenants_soft_exceeded(void);

#endif
