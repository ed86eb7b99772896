/* List+watch of one gateway's Sandbox objects in one scope (a Kubernetes namespace, or all of
 * them) into a k8s_cache: the kubernetes driver's informer.
 *
 * The happy path: list the scope page by page (label selector gantry.dev/gateway-id=<gateway>),
 * replace the scope's objects in the cache with the list, then watch from the list's
 * resourceVersion (with bookmarks, so the resourceVersion stays fresh); the scope is live from the
 * moment the watch is established. Each ADDED or MODIFIED event of an object of this gateway is put
 * into the cache, each DELETED event removes one, each BOOKMARK moves the resourceVersion on. When
 * the server ends a watch (timeoutSeconds), a new one starts from the last resourceVersion.
 *
 * The failure modes: a list page answered 410 Gone (its continue token expired) restarts the list
 * from the first page; a watch answered with an ERROR event 410 (the resourceVersion is too old,
 * e.g. after an API server restart) makes the scope not live and lists again; a connection that
 * fails or breaks, or any other error, makes the scope not live, waits (1 s, doubling up to 30 s)
 * and watches again from the last resourceVersion (or lists, if that is refused). An event that
 * cannot be decoded ends the watch like an error. While a scope is not live the driver reads
 * through to the API server, so a broken watch costs requests, never correctness.
 *
 * One thread and one HTTPS connection per watch. k8s_watch_stop ends the stream within about a
 * second (curl's progress callback) and joins the thread. */
#ifndef GANTRY_DRIVERS_K8S_WATCH_H
#define GANTRY_DRIVERS_K8S_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "drivers/k8s_cache.h"
#include "drivers/k8s_http.h"

struct k8s_watch_config {
    struct k8s_http_config http; /* the connection; its strings are copied */
    const char *api;             /* "/apis/agents.x-k8s.io/<version>"; copied */
    const char *gateway_id;      /* copied */
    const char *kns;             /* the scope's namespace; NULL: every namespace; copied */
    size_t scope;                /* the cache's scope index for it */
    struct k8s_cache *cache;     /* borrowed: must outlive the watch */
    unsigned timeout_s;          /* timeoutSeconds asked of the server per watch; 0: 300 */
};

struct k8s_watch;

/* Start the thread. GERR_INVAL for a bad connection configuration, GERR_NOMEM if no thread. */
int k8s_watch_start(const struct k8s_watch_config *cfg, struct k8s_watch **out, char *errmsg);

/* Ask the stream and the thread to stop, without waiting: stopping many watches, call this for
 * each first, then k8s_watch_stop for each, so they wind down together. NULL is fine. */
void k8s_watch_signal(struct k8s_watch *w);

/* Stop the stream and the thread, mark the scope not live, free everything. NULL is fine. */
void k8s_watch_stop(struct k8s_watch *w);

/* Requests made so far, for measurements and tests. */
struct k8s_watch_stats {
    uint64_t list_pages; /* GETs of list pages */
    uint64_t watches;    /* watch requests */
    uint64_t events;     /* ADDED/MODIFIED/DELETED events applied */
    uint64_t relists;    /* lists after the first (410 on a watch) */
    uint64_t restarts;   /* lists restarted because a continue token expired */
    uint64_t errors;     /* failed requests and broken streams */
};
void k8s_watch_stats_get(struct k8s_watch *w, struct k8s_watch_stats *out);

#endif
