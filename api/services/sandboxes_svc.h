/* gantry.v1.Sandboxes: create, get, list, delete, share, unshare, list shared with me, watch.
 * Behind the gate (api/gate/gate.h); writes through api/gate/resource.h.
 *
 * Ownership and shares (what the table delegates, decision.owner_check): platform admins, auditors
 * (reads) and the namespace's admins see and act on every sandbox of a namespace; a user or service
 * account reads its own sandboxes and those shared with it, and deletes and shares only its own.
 * Shares stay inside the namespace: the grantee must hold a role there.
 *
 * Create validates the spec (image, command, environment, GPUs, lifetime, labels, driver_config
 * keyed by driver name with a JSON object each), charges the namespace's quota in the same
 * transaction (api/services/tenants_svc.h) and stores the sandbox PROVISIONING for the reconciler.
 * A spec's own policy (spec.policy) may only tighten (policy_rules_check_sandbox_policy). A
 * driver_config "process" network of "host" is PERMISSION_DENIED unless the caller is a
 * platform_admin, and each such create writes a second API Activity event, operation
 * SANDBOX_HOST_NETWORK_OP, in the same transaction (docs/egress.md).
 * Delete removes at once a sandbox no driver has touched yet (no handle) and releases its quota;
 * otherwise it marks it DELETING for the reconciler, which removes it and releases the quota.
 *
 * Watch streams the namespace's sandbox changes in revision order from since_revision (0: the
 * current state first, then changes), filtered by what the caller may see, with a BOOKMARK each
 * time it has caught up. Each watch runs on a thread of its own with its own store connection (at
 * most SANDBOXES_MAX_WATCHES per replica: RESOURCE_EXHAUSTED beyond), polling the change feed;
 * sandboxes_svc_stop ends every watch with UNAVAILABLE so a replica can stop. */
#ifndef GANTRY_API_SERVICES_SANDBOXES_SVC_H
#define GANTRY_API_SERVICES_SANDBOXES_SVC_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/gate/resource.h"
#include "drivers/driver.h"

/* The audit operation of a sandbox created with the host's network (its own event). */
#define SANDBOX_HOST_NETWORK_OP "/gantry.v1.Sandboxes/Create:network=host"

#define SANDBOXES_MAX_WATCHES   256u
#define SANDBOXES_WATCH_POLL_MS 100u

struct gate;

struct sandboxes_svc {
    const struct res_env *env;            /* borrowed */
    const char *driver_name;              /* policies' allowed_drivers apply to it; NULL: not checked */
    struct driver *driver;                /* borrowed; Create admits a spec only if driver_validate
                                           * does (NULL: no such check). Set before calls arrive. */
    struct store_client_config store_cfg; /* for watch connections; addresses must outlive the svc */
    atomic_bool stopping;
    atomic_uint watches;
};

int sandboxes_svc_register(struct gate *g, struct sandboxes_svc *svc, char *errmsg);

/* End every watch (UNAVAILABLE) and wait until their threads are gone. */
void sandboxes_svc_stop(struct sandboxes_svc *svc);

#endif
