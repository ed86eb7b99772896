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
 * Get is answered from the watch hub's model (below) after a read index (store/feed.h feed_sync:
 * one leader read shared by the Gets waiting together, then until the replica's feed has applied
 * up to it), so it sees every write acknowledged before it, through any replica; authorization is
 * unchanged (ownership and shares from the model: no store query). When the model cannot answer (not loaded,
 * or the feed not caught up within MODEL_SYNC_TIMEOUT_MS) Get reads the store as before. The call's
 * ReadOptions may ask for a min_revision or bounded staleness instead of the read index
 * (api/services/model_read.h; the same for List and ListSharedWithMe). List is
 * answered the same way, with the same pages, order, tokens, selectors and visibility as its store
 * path (the caller's shares from the model; a List of one namespace walks only that namespace's
 * index from the page token); so is ListSharedWithMe (the caller's shares, by grantee, and their
 * sandboxes, all from the model).
 *
 * Watch streams the namespace's sandbox changes in revision order from since_revision (0: the
 * current state first, then changes), filtered by what the caller may see, with a BOOKMARK each
 * time it has caught up. Watches are served by one hub per replica fed by the replica's change
 * feed (store/feed.h, attached with sandboxes_svc_attach_feed): no thread and no store
 * connection per watch; the hub keeps every sandbox's latest state and the last WATCH_RING
 * sandbox events in memory. A watch from a revision older than the ring reads the events it
 * missed from the store once, on its handler's connection. At most SANDBOXES_MAX_WATCHES per
 * replica (RESOURCE_EXHAUSTED beyond). A watcher whose client leaves more than WATCH_MAX_UNSENT
 * bytes unread is cut with RESOURCE_EXHAUSTED "the watch fell behind at revision N ...: watch
 * again from revision N" (everything up to N was queued to it): the hub never waits for one
 * client. sandboxes_svc_stop ends every watch with UNAVAILABLE so a replica can stop. */
#ifndef GANTRY_API_SERVICES_SANDBOXES_SVC_H
#define GANTRY_API_SERVICES_SANDBOXES_SVC_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/gate/resource.h"
#include "drivers/driver.h"
#include "store/feed.h"

struct authn;

/* The audit operation of a sandbox created with the host's network (its own event). */
#define SANDBOX_HOST_NETWORK_OP "/gantry.v1.Sandboxes/Create:network=host"

#define SANDBOXES_MAX_WATCHES 20000u
#define WATCH_RING            4096u /* sandbox events kept in memory for resuming watches */
#define WATCH_MAX_UNSENT                                                                                     \
    (1u << 20)                          /* bytes a watcher may leave unread before it is cut, on             \
                                         * top of its first list until that was read */
#define WATCH_TOTAL_UNSENT (256u << 20) /* unread bytes of all watches above which new ones are refused */
/* A resume from the store (both watch hubs) stops between pages once its client has more than
 * this unread: the watch ends with RESOURCE_EXHAUSTED naming the revision to watch again from. */
#define WATCH_CATCH_UP_MAX_UNSENT (8u << 20)
#define WATCH_BOOKMARK_MS         5000u  /* a BOOKMARK at least this often on a quiet watch */
#define WATCH_SYNC_TIMEOUT_MS     10000u /* a new watch waits this long for the feed to catch up */

struct gate;
struct watch_hub;

struct sandboxes_svc {
    const struct res_env *env; /* borrowed */
    const char *driver_name;   /* policies' allowed_drivers apply to it; NULL: not checked */
    struct driver *driver;     /* borrowed; Create admits a spec only if driver_validate
                                * does (NULL: no such check). Set before calls arrive. */
    /* borrowed, may be NULL: the watches' credential rechecks read its models
     * (authn_recheck_models) and the shares from this service's model; NULL: the store. Set
     * before feed_start. */
    struct authn *authn;
    atomic_bool stopping;
    atomic_uint watches;
    struct watch_hub *hub;    /* sandboxes_svc_attach_feed; NULL: Watch is UNAVAILABLE, Get reads the store */
    atomic_ullong model_gets; /* Gets answered from the hub's model (gantry_sandbox_model_gets_total) */
    atomic_ullong
        model_lists; /* Lists and ListSharedWithMe answered from it (gantry_sandbox_model_lists_total) */
    atomic_ullong model_sessions; /* Logs/Exec/PortForward targets from the model
                                   * (gantry_sandbox_model_session_checks_total) */
    bool store_reads;             /* Get and List read the store even with a hub (config model_reads false) */
    size_t total_unsent_max;      /* 0: WATCH_TOTAL_UNSENT (config watch_total_unsent_mib) */
};

int sandboxes_svc_register(struct gate *g, struct sandboxes_svc *svc, char *errmsg);

/* Before feed_start: make the watch hub and subscribe it to @feed (borrowed: it must outlive the
 * hub until sandboxes_svc_detach_feed). 0. */
int sandboxes_svc_attach_feed(struct sandboxes_svc *svc, struct feed *feed);

/* The sandbox a Logs, Exec or PortForward call names, as the caller may use it
 * (sandboxes_svc_session_target). */
struct sb_session_target {
    bool found;  /* false: no such sandbox, or neither the caller's nor shared with it while it
                  * holds a role in the namespace (the store path's NOT_FOUND) */
    bool exec;   /* the owner (or no owner check applies), or an exec share; false: a read share */
    char id[40]; /* found: its id, owner and phase as the sandboxes table has them */
    char owner[40];
    char phase[16];
};

/* For sessions (api/services/sessions_svc.h): @ns/@name and the caller's access to it from the
 * watch hub's model after a read index (linearizable, as the store read it replaces), deciding
 * ownership and shares as the store path does (sandbox_rules_share_active, then the share rows).
 * true: answered into @t. false: the model cannot tell (no hub, config model_reads false, not
 * loaded, its shares being read again, a status without a phase), and the caller reads the store,
 * unless *@answered (the read index failed the call, which is answered). Worker threads. */
bool sandboxes_svc_session_target(struct sandboxes_svc *svc, struct gate_ctx *ctx, const char *ns,
                                  const char *name, struct sb_session_target *t, bool *answered);

/* For a running session's checks: the share of sandbox @sandbox_id with @grantee_id as the model
 * holds it now (no read index: the checks run every second within the revocation bound). 1: an exec
 * share, 0: a read share, -1: none; -2: the model cannot tell (the caller reads the store). Any
 * thread but the feed's. */
int sandboxes_svc_share_now(struct sandboxes_svc *svc, const char *sandbox_id, const char *grantee_id);

/* After feed_close: free the hub (any watch left ends UNAVAILABLE). */
void sandboxes_svc_detach_feed(struct sandboxes_svc *svc);

/* End every watch (UNAVAILABLE); later ones are refused. Returns at once: nothing waits. */
void sandboxes_svc_stop(struct sandboxes_svc *svc);

#endif
