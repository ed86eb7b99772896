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
 * in the audit event and gantry_quota_soft_exceeded_total). A platform_admin may set a ceiling per
 * namespace: the namespace_admin then sets the quota within it, and it is enforced on its own,
 * always hard. The usage counters (`quota_usage`) change in the sandbox's own transaction
 * (api/services/sandboxes_svc.h). */
#ifndef GANTRY_API_SERVICES_TENANTS_SVC_H
#define GANTRY_API_SERVICES_TENANTS_SVC_H

#include "api/gate/resource.h"
#include "api/rules/quota.h"
#include "api/services/kind_model.h"

struct gate;

/* Namespaces.Get and List read from @reads' model (api/services/kind_model.h) as the call's read
 * options ask (api/services/model_read.h), or from the store (the leader) when it has none, its
 * store_reads is set (config model_reads false) or the model cannot answer. The model's answers
 * are the store path's byte for byte; authorization is the gate's either way (Get: the gate's
 * decision; List: the namespaces the caller holds a role in, unless a global role). */
/* Quotas.Get and List read from @quota_reads' model the same way (docs/resources.md "Read
 * consistency"; Get: the gate's decision on the namespace; List: global readers). @reads and
 * @quota_reads borrowed: they must outlive the gate's calls. */
int tenants_svc_register(struct gate *g, const struct res_env *env, const struct kind_reads *reads,
                         const struct kind_reads *quota_reads, char *errmsg);

/* A namespaces model whose messages are this service's (kind_model_free frees it). */
struct kind_model *tenants_ns_model_new(void);

/* A quotas model: every namespace's GetQuotaResponse (quota, usage counters, ceiling), kept exact
 * at its revision by batched re-reads (api/services/kind_model.h): Sandbox ADDED and DELETED events
 * change the usage without an event of their own. kind_model_free frees it. */
struct kind_model *tenants_quota_model_new(void);

/* For sandboxes: check and charge (or release, with negative deltas) the namespace's quota in
 * @tx. Returns 0, GERR_TOOBIG (hard quota; message names the limit), with *@warning set for a soft
 * excess; GERR_REFUSED when the namespace is missing or TERMINATING. */
int tenants_charge(struct store_tx *tx, const char *ns, int sandboxes, int gpus, uint64_t lifetime_s,
                   char *warning, size_t warning_len);

/* The decision of tenants_charge for a state the caller read itself (in the same transaction), and
 * the statement that records the charge, for a caller that sends it with its own writes:
 * parameters (namespace, sandboxes delta, GPUs delta). @st carries the ceiling too (checked first,
 * always hard). */
int tenants_charge_decide(struct store_tx *tx, const char *ns, const struct quota_state *st, int sandboxes,
                          int gpus, uint64_t lifetime_s, char *warning, size_t warning_len);
#define TENANTS_USAGE_UPSERT_SQL                                                                             \
    "INSERT INTO quota_usage (namespace, sandboxes, gpus) VALUES (?1, max(?2, 0), max(?3, 0)) "              \
    "ON CONFLICT (namespace) DO UPDATE SET sandboxes = max(sandboxes + ?2, 0), gpus = max(gpus + ?3, 0)"

/* Soft quota excesses so far (for /metrics). */
uint64_t tenants_soft_exceeded(void);

#endif
