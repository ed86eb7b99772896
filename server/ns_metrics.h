/* Per-namespace state for /metrics (docs/metrics.md, "Namespaces"): sandboxes by phase, GPUs of
 * running sandboxes, quota use and limits, and the audit events the cluster wrote, by namespace.
 *
 * A scrape never queries the store: a thread of this module refreshes a table every interval
 * (default 15 s) with four small reads and one aggregate on the leader (namespaces; sandboxes
 * grouped by namespace and phase, one scan of that table; quota_usage; quotas and ceilings; the audit
 * rows added since the last refresh, a range of the primary key), and ns_metrics_write renders the
 * last table. So the store's cost is fixed per interval and per replica, whatever the scrape rate,
 * and the values are at most one interval old (gantry_namespace_metrics_age_seconds says how old).
 *
 * Cardinality: a table of at most @max_namespaces names gets series of their own. The first refresh
 * fills it with the namespaces that exist, in name order; later ones add new namespaces while room is
 * left. Rows are never given back while the process runs: a deleted namespace keeps its row (its
 * gauges are no longer written, its audit counter stays), so new namespaces that find the table full
 * go under namespace "_other" until restart. Each refresh hands the same names, in the same order,
 * to the gate's call counters (api/gate/nsstats.h) before publishing, and that table has the same
 * bound and never gives rows back either, so both hold the same names. Sandbox names, principals
 * and labels never become label values.
 *
 * Audit events are counted from the replicated trail (every row written since this replica's first
 * refresh, a row that stands for n repeated events counting n), so every replica reports the same
 * cluster-wide count: use one replica's rate, not the sum over replicas. Events of no namespace
 * (failed logins, cluster operations) go under "_cluster".
 *
 * Threads: ns_metrics_start starts one thread; ns_metrics_write from any thread;
 * ns_metrics_stop joins it and frees everything. */
#ifndef GANTRY_SERVER_NS_METRICS_H
#define GANTRY_SERVER_NS_METRICS_H

#include "api/gate/nsstats.h"
#include "lib/buf.h"
#include "store/pool.h"

#define NS_METRICS_DEFAULT_INTERVAL_MS 15000u
#define NS_METRICS_CLUSTER             "_cluster"

struct ns_metrics_config {
    struct store_pool *pool; /* borrowed: one client per refresh, released after */
    struct nsstats *nsstats; /* borrowed, may be NULL: told which namespaces exist */
    unsigned interval_ms;    /* 0: NS_METRICS_DEFAULT_INTERVAL_MS */
    unsigned max_namespaces; /* 0: NSSTATS_DEFAULT_MAX_NAMESPACES */
};

struct ns_metrics;

/* Start the refresh thread (its first refresh at once). Returns 0 or GERR_NOMEM (no thread). */
int ns_metrics_start(const struct ns_metrics_config *cfg, struct ns_metrics **out);

/* Append the gantry_namespace_* families and gantry_namespaces to @out. */
void ns_metrics_write(struct ns_metrics *m, struct buf *out);

/* Stop the thread and free @m. NULL is ignored. */
void ns_metrics_stop(struct ns_metrics *m);

#endif
