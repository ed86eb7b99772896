/* gantry.v1.WarmPools: pools of ready sandboxes of a SandboxTemplate that the gateway keeps
 * (docs/platform-controller.md, "Gantry-owned warm pools"). Create, Update (the size), Delete are
 * mutations through the shared path (api/gate/resource.h: idempotent, audited, a change event of
 * kind "WarmPool" with the pool as payload, which Events.Watch carries). The reconciler
 * (leases/reconciler.h) makes the store's pools exist in the driver and writes their status back.
 *
 * Create is FAILED_PRECONDITION when the configured driver cannot manage pools (caps.pools: the
 * kubernetes driver only), INVALID_ARGUMENT for a malformed pool (api/rules/warmpool.h),
 * PERMISSION_DENIED for a placement outside the caller's delegation scope, ALREADY_EXISTS for a
 * name taken in the namespace (or, for a chosen kubernetes_namespace, there), NOT_FOUND /
 * FAILED_PRECONDITION for a namespace missing / TERMINATING, RESOURCE_EXHAUSTED when the sum of the
 * namespace's pool sizes would exceed its quota's or ceiling's max_concurrent_sandboxes. Update
 * applies the same size and quota checks. Blocking; worker threads only. */
#ifndef GANTRY_API_SERVICES_WARMPOOLS_SVC_H
#define GANTRY_API_SERVICES_WARMPOOLS_SVC_H

#include "api/gate/resource.h"
#include "api/services/kind_model.h"
#include "drivers/driver.h"

struct gate;

struct warmpools_svc {
    const struct res_env *env; /* borrowed */
    struct driver *driver;     /* borrowed; NULL (no driver): Create is FAILED_PRECONDITION. Set before
                                * calls arrive. */
    /* How Get and List read (api/services/kind_model.h), the model from warmpools_model_new. */
    struct kind_reads reads;
};

int warmpools_svc_register(struct gate *g, struct warmpools_svc *svc, char *errmsg);

/* A warm pools model whose messages are Get's and List's (the pool with its status).
 * kind_model_free frees it. */
struct kind_model *warmpools_model_new(void);

#endif
