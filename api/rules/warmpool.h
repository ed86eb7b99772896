/* Decisions about a WarmPool (api/proto/gantry/v1/warmpools.proto), as pure functions: its shape
 * and what a caller may choose for it. The store-backed checks (the namespace active, the name
 * free, the Kubernetes object name free, the quota) are made by api/services/warmpools_svc.c.
 *
 * @why is a caller buffer, always NUL-terminated: the message of the gRPC status the handler
 * answers with (INVALID_ARGUMENT for validate, PERMISSION_DENIED for placement). */
#ifndef GANTRY_API_RULES_WARMPOOL_H
#define GANTRY_API_RULES_WARMPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "api/authz/authz.h"
#include "gantry/v1/warmpools.pb-c.h"

#define WARMPOOL_MAX_REPLICAS 100u /* = DRIVER_POOL_REPLICAS_MAX */

/* Is @p a well-formed pool to create: meta.name and meta.namespace DNS-1123 labels, labels
 * (labels_check), kubernetes_namespace "" or a DNS-1123 label, template a DNS subdomain (at most
 * 253 bytes), replicas 0..WARMPOOL_MAX_REPLICAS? */
bool warmpool_rules_validate(const Gantry__V1__WarmPool *p, char *why, size_t len);

/* Is @replicas a size a pool may have (0..WARMPOOL_MAX_REPLICAS)? */
bool warmpool_rules_replicas_ok(uint32_t replicas, char *why, size_t len);

/* May a caller create @p? A caller whose authority in the namespace comes only from delegated
 * bindings (@n_scopes > 0) stays inside one of @scopes: kubernetes_namespace (when given) matching
 * allowed_kubernetes_namespaces, template in allowed_templates and the pool's name in
 * allowed_warm_pools (the pools it may claim from). A caller with no delegation scope may choose
 * kubernetes_namespace only as a platform_admin (others get the gateway's placement: ""). */
bool warmpool_rules_placement(const Gantry__V1__WarmPool *p, bool platform_admin,
                              const struct authz_scope *const *scopes, size_t n_scopes, char *why,
                              size_t len);

#endif
