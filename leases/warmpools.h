/* The reconciler's pass over Gantry-owned warm pools (api/services/warmpools_svc.h): make every
 * WarmPool in the store exist in the driver (driver_pool_apply: created, resized, its template set),
 * write each pool's status back (ready members, the resource_version applied, the last error), and
 * delete the driver's pools of this gateway that the store no longer has.
 *
 * Run by the reconciler thread while it holds the lease, with its epoch: every driver call carries
 * it, and every status write checks it in the same transaction (lease_check_tx). A status write
 * happens only when the status changed; it is a WarmPool MODIFIED change event carrying the pool
 * (Events.Watch) and leaves the pool's resource_version (its spec's version) as it was. A pool whose
 * apply fails keeps its last status with last_error set, and is tried again on the next pass. A
 * pool with kubernetes_namespace "" lives in the namespace its gantry namespace maps to, which the
 * pass makes usable first (driver_ensure_namespace). Blocking. */
#ifndef GANTRY_LEASES_WARMPOOLS_H
#define GANTRY_LEASES_WARMPOOLS_H

#include <stdbool.h>
#include <stdint.h>

#include "drivers/driver.h"
#include "store/client.h"
#include "store/writer.h"

#define WARMPOOLS_MAX 10000u /* pools one pass looks at */

struct warmpools_pass {
    struct driver *driver;   /* borrowed; must have caps.pools */
    struct store_client *cl; /* the reconciler's reads */
    struct store_writer *writer;
    const char *lease; /* the lease name and holder that fence the writes */
    const char *holder;
    uint64_t epoch;
    bool orphans; /* also list the driver's pools and delete those the store lacks */
};

struct warmpools_result {
    unsigned applied; /* pools applied without error */
    unsigned failed;  /* pools whose apply failed (their status says why) */
    unsigned deleted; /* orphaned driver pools deleted */
    unsigned written; /* status writes */
};

/* One pass. 0; DRIVER_ERR_STALE when the driver or the store refused the epoch (stop acting: the
 * lease is lost); or the store's error reading the pools. @out is filled either way. */
int warmpools_sync(const struct warmpools_pass *p, struct warmpools_result *out);

#endif
