/* Decisions about a sandbox to create, as pure functions: the shape of its spec, the creator's
 * delegation scope, and the lifetime it gets when it asks for none. The store-backed checks
 * (name taken, owner eligible, providers granted, quota, policies) are made by
 * api/services/sandboxes_svc.c with the facts it loads; policy and quota arithmetic are in
 * api/rules/policy.h and api/rules/quota.h.
 *
 * @why is a caller buffer, always NUL-terminated; it holds the message of the gRPC status the
 * handler answers with (INVALID_ARGUMENT for validation, PERMISSION_DENIED for delegation). */
#ifndef GANTRY_API_RULES_SANDBOX_H
#define GANTRY_API_RULES_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/authz/authz.h"
#include "gantry/v1/policies.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"

#define SANDBOX_MAX_GPUS           64u
#define SANDBOX_MAX_LIFETIME_S     (30ull * 24 * 3600)
#define SANDBOX_DEFAULT_LIFETIME_S (24ull * 3600)

/* Is the sandbox of a Create request well formed: meta.name a DNS-1123 label, labels, image (1..512
 * bytes, no spaces), command (<= 256 arguments of <= 8 KiB), env (<= 256 variables, names of
 * letters, digits and '_' not starting with a digit, values <= 32 KiB), gpu_count, lifetime,
 * providers (<= 32) and driver_config (driver names with JSON objects of <= 64 KiB, a
 * "service_account" member a ServiceAccount name, authz_sa_name_ok; in the "kubernetes" entry a
 * "namespace" member a DNS-1123 label, a "runtime_class", "warm_pool" or "template" member a DNS-1123
 * subdomain, an "allocation" member "sandbox" or "claim", a "node_selector" member a string of
 * key=value pairs and a "tolerations" member an array of toleration objects (or a string holding
 * one), both in the kubernetes driver's encoding, drivers/k8s_json.h)? @sb->meta must not be NULL. */
bool sandbox_rules_validate(const Gantry__V1__Sandbox *sb, char *why, size_t len);

/* Who creates the sandbox, as far as delegation is concerned (RFC 0005). */
struct sandbox_creator {
    const char *id;                          /* the caller's principal id */
    bool platform_admin;                     /* holds the global platform_admin role */
    const struct authz_scope *const *scopes; /* the delegation scopes of the bindings that give the
                                              * caller its authority in the namespace */
    size_t n_scopes;                         /* 0: that authority is not delegated */
};

/* May @c create a sandbox of @s? A caller whose authority comes only from delegated bindings stays
 * inside one of their scopes (driver_config keys, credential sources, the ServiceAccount a
 * driver_config "service_account" names: exactly one of allowed_service_accounts; the placement of
 * the "kubernetes" entry: "namespace" matching one of allowed_kubernetes_namespaces,
 * "runtime_class" one of allowed_runtime_classes, "warm_pool" one of allowed_warm_pools,
 * "template" one of allowed_templates, every "node_selector" pair one of allowed_node_selectors and
 * every toleration allowed by one of allowed_tolerations: authz_scope_allows_toleration); creating on
 * behalf of another owner (@s->owner_id set and not the caller) needs a scope that allows it, or
 * platform_admin. A caller with neither a delegation scope nor platform_admin may not choose the
 * placement at all ("namespace", "runtime_class", "tolerations", "node_selector", "allocation",
 * "warm_pool" or "template" in the "kubernetes" entry): @why names the key and value. The owner's own
 * eligibility is checked against the store by the caller. */
bool sandbox_rules_delegation(const struct sandbox_creator *c, const Gantry__V1__SandboxSpec *s, char *why,
                              size_t len);

/* Does @s ask for the host's network (driver_config "process" = {"network": "host", ...})? That
 * mode bypasses egress_allow entirely, so only a platform_admin may choose it (docs/egress.md). A
 * value that is not a JSON object, or a "network" that is not a string, reads as not asking (the
 * policy and driver checks refuse such values on their own). */
bool sandbox_rules_host_network(const Gantry__V1__SandboxSpec *s);

/* Does a share give its grantee, who holds @bindings (@n of them), access to a sandbox of
 * namespace @ns? Only while the grantee holds a role there: a binding in @ns, a delegated binding
 * whose patterns cover it, or a global role. A share whose grantee lost every role in the
 * namespace stays stored (its owner still sees it and may unshare it) but gives nothing; it works
 * again if a role there is granted again (docs/resources.md, "Shares"). */
bool sandbox_rules_share_active(const struct authz_binding *bindings, size_t n, const char *ns);

/* The lifetime of a sandbox that asks for none: a day, or the namespace quota's maximum when
 * that is lower (@quota_max_s 0: no quota maximum), then within the maxima of the gateway policy
 * @g and the namespace policy @n (either may be NULL). */
uint64_t sandbox_rules_default_lifetime(int64_t quota_max_s, const Gantry__V1__Policy *g,
                                        const Gantry__V1__Policy *n);

#endif
