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
 * A watch starts at since_revision (the ring must hold every event after it, else OUT_OF_RANGE
 * "list again and watch from the list's revision"; the ring starts empty at the revision the hub
 * loaded, so a resume from before the replica's start is refused too), or, for 0, at the revision
 * a read index returns (feed_sync), announced by a first BOOKMARK. No current state is sent.
 *
 * Each event goes to a watcher only when the watcher could read the object with the kind's Get or
 * List (decided with the watcher's principal, its bindings refreshed every EVENTS_REFRESH_MS):
 * namespaced kinds (Namespace, Provider, ProviderGrant, Quota, QuotaCeiling, WarmPool, a
 * namespace's Policy) to platform_admin, auditor and any role covering the namespace; the gateway
 * Policy to everyone;
 * Principal, RoleBinding and PrincipalLink to platform_admin, auditor, any namespace_admin and the
 * principal itself; ApiKey to platform_admin, auditor and the key's own principal (not to the
 * namespace_admin that manages it, which ApiKeys.List allows: that needs a store read).
 *
 * A watch ends with: UNAUTHENTICATED when its API key is revoked, deleted or expired, or its
 * principal disabled or deleted (within the revocation bound, AUTHN_CACHE_TTL_MS);
 * PERMISSION_DENIED when it names a namespace the caller no longer holds a role in;
 * RESOURCE_EXHAUSTED "... watch again from revision N" when its client leaves more than
 * WATCH_MAX_UNSENT bytes unread (a resume's replay, queued at once, is allowed on top until the
 * client has once read below that); OUT_OF_RANGE "... list again" when the feed resyncs (compaction,
 * a restore: the hub cannot tell what was missed); UNAVAILABLE when the replica stops. BOOKMARKs
 * follow each applied batch that sent the watcher something, and come at least every
 * WATCH_BOOKMARK_MS, as on Sandboxes.Watch. */
#ifndef GANTRY_API_SERVICES_EVENTS_SVC_H
#define GANTRY_API_SERVICES_EVENTS_SVC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

#define EVENTS_RING        4096u  /* events kept in memory for resuming watches (the default) */
#define EVENTS_MAX_WATCHES 20000u /* per replica */
#define EVENTS_REFRESH_MS  1000u  /* a watcher's credential and bindings are checked this often */
/* What Events.Watch serves, comma-separated (the names events carry). */
#define EVENTS_KINDS                                                                                         \
    "Namespace, Principal, RoleBinding, ApiKey, Provider, ProviderGrant, Policy, Quota, QuotaCeiling, "      \
    "PrincipalLink, WarmPool"

struct gate;
struct feed;
struct events_hub;

struct events_svc {
    unsigned ring_size; /* 0: EVENTS_RING; set before events_svc_attach_feed */
    struct events_hub *hub;
    atomic_uint watches;
    atomic_bool stopping;
    atomic_uint_fast64_t events_sent, cut_slow, cut_auth;
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
