/* The reconciler: run by the holder of the "reconciler" lease only, it makes the compute driver
 * (drivers/driver.h) match the sandboxes in the store (DESIGN.md section 6).
 *
 * On gaining the lease: a full resync (the store's sandboxes against driver_list). Then it follows
 * the change feed (events of kind Sandbox) every poll interval, with a full resync every resync
 * interval. For each sandbox:
 *   - PROVISIONING and absent from the driver: ensure its namespace, create it (adopting what
 *     exists: creates are idempotent by id, so a new holder never makes a second copy);
 *   - present in the driver: copy its phase, handle and message into the status, open the usage
 *     record when it first runs;
 *   - DELETING, or past its lifetime: delete it in the driver, then remove the row, its shares and
 *     its quota charge, and close its usage record;
 *   - sandboxes the driver has and the store does not (ours only: drivers list only their gateway's
 *     objects): deleted;
 *   - a namespace deleted from the store (a Namespace DELETED event in the feed): the driver's
 *     delete_namespace (the kubernetes driver's managed namespace goes), retried at every poll
 *     while it fails (at most 64 pending). Deletions while no replica held the lease are not
 *     seen: the feed is followed from the revision of the holder's first resync.
 * With a driver that has caps.pools, it also runs the warm pool pass (leases/warmpools.h) when a
 * WarmPool event is in the feed, at every resync and every 2 s while pools exist: the store's
 * WarmPools applied to the driver, their status written back, this gateway's pools without a row
 * deleted (at resyncs and after WarmPool or Namespace deletions).
 * Every store write it makes checks its lease epoch in the same transaction (lease_check_tx), and
 * every driver call carries the epoch, which drivers refuse once a newer one was seen.
 *
 * Driver failures are retried with backoff (1 s doubling to 60 s, per sandbox) and shown as a
 * DriverError condition. A create that fails permanently (GERR_INVAL, GERR_PERM, GERR_EXISTS) ends
 * the sandbox in ERROR with the reason at once; one failing with an error that clears by waiting
 * (throttling, an unavailable backend, a timeout, conflicts) does when its failures have lasted
 * provision_deadline_ms; any other after five failures in a row. Failed gets and deletes never do
 * (the sandbox exists, or is being deleted: they keep retrying at the 60 s cap). A sandbox that
 * was never READY and that the driver still reports PROVISIONING provision_deadline_ms after its
 * row was made (a pod that never schedules, an image that never pulls) is ERROR with the driver's
 * message; one that was READY once and is starting again (an evicted pod) keeps PROVISIONING.
 *
 * Audit: through the @audit callback, in a transaction fenced by the epoch like every other
 * write, an API Activity event (status Failure, actor "reconciler") for a failed driver call
 * (operation "reconciler/driver.<create|get|delete>", the driver's message, which never holds a
 * credential) and for a sandbox entering ERROR ("reconciler/sandbox.error", the reason). Rate
 * limit: one event per sandbox per operation and error code, repeated at most once per backoff
 * cap (60 s) while the same failure goes on; a success or a new lease holder starts afresh. So
 * a retry loop, or a backend that is down for an hour, costs at most one event per sandbox and
 * failure kind per minute.
 *
 * Threads: one of its own (reconciler_start .. reconciler_stop). Blocking inside. */
#ifndef GANTRY_LEASES_RECONCILER_H
#define GANTRY_LEASES_RECONCILER_H

#include <stdbool.h>
#include <stdint.h>

#include "drivers/driver.h"
#include "leases/lease.h"
#include "store/client.h"
#include "store/writer.h"

#define RECONCILER_LEASE "reconciler"

/* One audit event the reconciler asks to be recorded (an OCSF API Activity with status Failure
 * and the reconciler as actor). Every pointer is borrowed for the call. */
struct reconciler_audit {
    const char *operation; /* "reconciler/driver.create", ".get", ".delete", "reconciler/sandbox.error" */
    const char *ns;
    const char *sandbox_id;
    const char *sandbox_name; /* for an orphan (in the driver, not the store): the name the driver reports */
    const char *actor;        /* the lease holder, "<replica>/<process id>" */
    uint64_t epoch;
    int code; /* GERR_* of the failure */
    const char *message;
};

/* Insert @ev inside @tx, the reconciler's fenced transaction; return the store's error (which
 * fails the whole transaction). */
typedef int (*reconciler_audit_cb)(struct store_tx *tx, const struct reconciler_audit *ev, void *arg);

/* The credentials a sandbox receives (docs/credentials.md): the entries of its providers' secrets
 * as the driver delivers them. Filled by reconciler_creds_fn, released by reconciler_creds_free_fn
 * (which wipes the values). */
struct reconciler_creds {
    struct driver_credential *items;
    size_t n;
    void *owner; /* the callback's own */
};

/* Resolve providers @names (@n) of namespace @ns into @out, reading through @cl (the reconciler's
 * own store client, so a busy API pool never holds up the lease holder). 0, or an error with
 * @errmsg (never a value): GERR_NOTFOUND for a provider that is gone, the store's (retried like a
 * driver's). Called on the reconciler thread. */
typedef int (*reconciler_creds_fn)(void *arg, struct store_client *cl, const char *ns,
                                   const char *const *names, size_t n, struct reconciler_creds *out,
                                   char *errmsg);
typedef void (*reconciler_creds_free_fn)(void *arg, struct reconciler_creds *c);

struct reconciler_config {
    struct store_client_config store; /* its own leader-following client (addresses must outlive it) */
    struct store_writer *writer;      /* where its writes go (borrowed) */
    struct driver *driver;            /* borrowed */
    const char *driver_name;          /* the spec's driver_config key for this driver */
    const char *holder;               /* lease holder identity, unique per process start */
    uint64_t replica_id;
    const char *gateway_id;
    struct lease_config lease; /* name and holder are filled in */
    unsigned poll_ms;          /* 0 = 200 */
    unsigned resync_ms;        /* 0 = 30000 */
    /* A create failing with an error that clears by waiting (GERR_BUSY, _UNAVAILABLE, _TIMEOUT,
     * _ABORTED, _CLOSED) is retried with backoff until its failures have lasted this long, then the
     * sandbox is ERROR; other failures end it after 5 attempts, permanent ones (GERR_INVAL, _PERM,
     * _EXISTS) at once. Also how long a sandbox never READY may stay PROVISIONING. 0 = 300000. */
    unsigned provision_deadline_ms;
    reconciler_audit_cb audit; /* NULL: no audit events */
    void *audit_arg;
    /* Credential delivery, for drivers with caps.credentials: at create, and again to running
     * sandboxes when a provider they name changes (its files; environment variables keep the
     * first values). NULL: sandboxes start without credentials. */
    reconciler_creds_fn creds;
    reconciler_creds_free_fn creds_free;
    void *creds_arg;
};

struct reconciler_status {
    bool held;
    uint64_t epoch;
    uint64_t resyncs, creates, deletes, driver_errors, stale_refusals;
    uint64_t audit_events; /* audit events written (after the rate limit) */
};

struct reconciler;

int reconciler_start(const struct reconciler_config *cfg, struct reconciler **out, char *errmsg);
void reconciler_status(struct reconciler *r, struct reconciler_status *out);
/* Stop acting, release the lease (so another replica takes over at once), join, free. */
void reconciler_stop(struct reconciler *r);

#endif
