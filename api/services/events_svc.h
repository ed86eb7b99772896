/* gantry.v1.Events: Watch for every tenant-visible kind but Sandbox (api/proto/gantry/v1/events.proto;
 * docs/resources.md, "Watching changes"). Sandboxes stay on Sandboxes.Watch.
 *
 * One hub per replica, fed by the replica's change feed (store/feed.h): one subscriber, a ring of
 * the last EVENTS_RING events of the watchable kinds (EVENTS_KINDS) with their objects (the
 * payload each write stored with its event, unpacked once), the watchers and their credentials. No
 * thread and no store connection per watcher: the feed thread fans each event out under the hub's
 * lock, and a Watch handler registers its watcher under the same lock, so a watcher gets every
 * event after its start revision exactly once, in revision order.
 *
 * A watch starts at since_revision, or, for 0, at the revision a read index returns (feed_sync),
 * announced by a first BOOKMARK. No current state is sent. A resume older than the ring (past it,
 * or before the revision the hub loaded at, where the ring starts empty) first reads the events
 * between since_revision and the ring's floor from the store's events table with the handler's
 * connection (payloads included, the same checks), then links under the hub's lock once the ring
 * holds the rest: no gap, no duplicate. Events retention deleted (cluster_meta
 * events_compacted_revision, read after each page) make it OUT_OF_RANGE "list again and watch from
 * the list's revision".
 *
 * Each event goes to a watcher only when the watcher could read the object with the kind's Get or
 * List (decided with the watcher's principal, its bindings refreshed every EVENTS_REFRESH_MS):
 * namespaced kinds (Namespace, Provider, ProviderGrant, Quota, QuotaCeiling, WarmPool, a
 * namespace's Policy) to platform_admin, auditor and any role covering the namespace; the gateway
 * Policy to everyone;
 * Principal, RoleBinding and PrincipalLink to platform_admin, auditor, any namespace_admin and the
 * principal itself; ApiKey to platform_admin, auditor, the key's own principal and a
 * namespace_admin that manages that principal (ApiKeys.List's rule, principal_rules_manages over the
 * owner's bindings: read once per owner and kept in the hub, at most EVENTS_OWNER_CACHE of them,
 * dropped by the RoleBinding and Principal events that change them and by any Namespace DELETED,
 * whose cascade removes bindings without events of their own).
 *
 * A watch ends with: UNAUTHENTICATED when its API key is revoked, deleted or expired, or its
 * principal disabled or deleted (within the revocation bound, AUTHN_CACHE_TTL_MS);
 * PERMISSION_DENIED when it names a namespace the caller no longer holds a role in;
 * RESOURCE_EXHAUSTED "... watch again from revision N" when its client leaves more than
 * WATCH_MAX_UNSENT bytes unread (a resume's replay, queued at once, is allowed on top until the
 * client has once read below that); a new watch is refused with RESOURCE_EXHAUSTED while the
 * replica's watches hold more than total_unsent_max unread bytes (summed at each applied pass); OUT_OF_RANGE
 * "... list again" when the feed resyncs (compaction, a restore: the hub cannot tell what was missed);
 * UNAVAILABLE when the replica stops. BOOKMARKs follow each applied batch that sent the watcher something,
 * and come at least every WATCH_BOOKMARK_MS, as on Sandboxes.Watch. */
#ifndef GANTRY_API_SERVICES_EVENTS_SVC_H
#define GANTRY_API_SERVICES_EVENTS_SVC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

struct authn;

#define EVENTS_RING            4096u  /* events kept in memory for resuming watches (the default) */
#define EVENTS_MAX_WATCHES     20000u /* per replica */
#define EVENTS_MAX_SELECTOR    64u    /* labels in a watch's selector */
#define EVENTS_OWNER_CACHE     1024u  /* API key owners whose bindings the hub keeps (then it forgets all) */
#define EVENTS_CATCH_UP_PAGE   1000u  /* events per store read of a resume older than the ring */
#define EVENTS_CATCH_UP_PAGE_S "1000" /* the same, for SQL */
#define EVENTS_REFRESH_MS      1000u  /* a watcher's credential and bindings are checked this often */
/* What Events.Watch serves, comma-separated (the names events carry). */
#define EVENTS_KINDS                                                                                         \
    "Namespace, Principal, RoleBinding, ApiKey, Provider, ProviderGrant, Policy, Quota, QuotaCeiling, "      \
    "PrincipalLink, WarmPool"

struct gate;
struct feed;
struct events_hub;

struct events_svc {
    unsigned ring_size;      /* 0: EVENTS_RING; set before events_svc_attach_feed */
    size_t total_unsent_max; /* 0: WATCH_TOTAL_UNSENT; new watches are refused while the replica's
                              * watches hold more unread bytes (config watch_total_unsent_mib) */
    struct events_hub *hub;
    /* borrowed, may be NULL: the watches' credential rechecks read its models
     * (authn_recheck_models); NULL: the store. Set before feed_start. */
    struct authn *authn;
    atomic_uint watches;
    atomic_bool stopping;
    atomic_uint_fast64_t events_sent, cut_slow, cut_auth, refused_unsent;
};

/* Subscribe the hub to @feed (before feed_start). 0. Without it Watch answers UNAVAILABLE. */
int events_svc_attach_feed(struct events_svc *svc, struct feed *feed);

/* End every watch (UNAVAILABLE) and refuse new ones. Before the server stops. */
void events_svc_stop(struct events_svc *svc);

/* After feed_close: free the hub. */
void events_svc_detach_feed(struct events_svc *svc);

/* Route /gantry.v1.Events/Watch. 0 or GERR_INVAL with @errmsg. */
int events_svc_register(struct gate *g, struct events_svc *svc, char *errmsg);

/* gantry_events_watch_* families (docs/metrics.md). Any thread. */
void events_svc_metrics_write(struct events_svc *svc, struct buf *out);

#endif
