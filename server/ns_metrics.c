/* Per-namespace state for /metrics (server/ns_metrics.h).
 *
 * Happy path, once per interval on the refresh thread: take a pooled client, read the namespaces,
 * the sandbox counts by phase, quota usage, quota limits and the new audit rows into a scratch
 * result, give the client back, then apply the result to the table under the lock. A read that
 * fails leaves the table as it was (the age gauge grows; the failure is counted and logged once per
 * run of failures). The table's rows are append-only up to the bound, so counters (audit events)
 * keep their series; gauges are written only for namespaces the last refresh saw. */
#include "server/ns_metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/names.h"

static const char *const phases[] = {"PROVISIONING", "READY", "ERROR", "DELETING", "STOPPED", "UNKNOWN"};
#define N_PHASES      (sizeof phases / sizeof phases[0])
#define PHASE_READY   1u
#define PHASE_UNKNOWN 5u
#define ROW_OTHER     0u
#define ROW_CLUSTER   1u
#define FIRST_NS_ROW  2u

struct row {
    char name[NSSTATS_NAME_MAX];
    bool present; /* named by the last refresh (gauges are written) */
    uint64_t sandboxes[N_PHASES];
    uint64_t gpus_ready;
    uint64_t used_sandboxes, used_gpus;
    uint64_t limit_sandboxes, limit_gpus; /* 0: no limit */
    uint64_t audit_events;                /* counter */
};

struct ns_metrics {
    struct ns_metrics_config cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop; /* under mu */
    /* The table, under mu. */
    struct row *rows; /* [max + 2]: "_other", "_cluster", then namespaces */
    unsigned n_rows;
    unsigned namespaces;   /* namespaces in the cluster at the last refresh */
    unsigned overflow;     /* of them, summed under "_other" */
    uint64_t refreshed_ms; /* monotonic time of the last successful refresh, 0: none */
    uint64_t failures;
    /* Refresh thread only. */
    bool audit_based; /* audit_seq is the base to count from */
    int64_t audit_seq;
};

static struct row *find_row(struct ns_metrics *m, const char *name)
{
    for (unsigned i = FIRST_NS_ROW; i < m->n_rows; i++) {
        if (strcmp(m->rows[i].name, name) == 0) {
            return &m->rows[i];
        }
    }
    return NULL;
}

/* The row a namespace's numbers go to: its own, or "_other". */
static struct row *row_for(struct ns_metrics *m, const char *ns)
{
    struct row *r = find_row(m, ns);
    return r != NULL ? r : &m->rows[ROW_OTHER];
}

static const char *text(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static uint64_t num(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_INTEGER && v->u.i > 0 ? (uint64_t)v->u.i : 0;
}

/* The tighter of two limits where 0 means none. */
static uint64_t tighter(uint64_t a, uint64_t b)
{
    return a == 0 ? b : b == 0 ? a : (a < b ? a : b);
}

struct result {
    struct proto_rows ns, sb, usage, limits, audit;
    int64_t audit_top; /* the newest audit seq read */
};

static void result_close(struct result *res)
{
    proto_rows_close(&res->ns);
    proto_rows_close(&res->sb);
    proto_rows_close(&res->usage);
    proto_rows_close(&res->limits);
    proto_rows_close(&res->audit);
}

static int read_all(struct ns_metrics *m, struct store_client *cl, struct result *res)
{
    int rv = store_client_query(cl, "SELECT name FROM namespaces ORDER BY name", NULL, 0, &res->ns);
    if (rv == 0) {
        rv = store_client_query(cl,
                                "SELECT namespace, phase, count(*), coalesce(sum(gpus), 0) FROM sandboxes "
                                "GROUP BY namespace, phase",
                                NULL, 0, &res->sb);
    }
    if (rv == 0) {
        rv = store_client_query(cl, "SELECT namespace, sandboxes, gpus FROM quota_usage", NULL, 0,
                                &res->usage);
    }
    if (rv == 0) {
        rv = store_client_query(cl,
                                "SELECT namespace, max_sandboxes, max_gpus FROM quotas UNION ALL "
                                "SELECT namespace, max_sandboxes, max_gpus FROM quota_ceilings",
                                NULL, 0, &res->limits);
    }
    if (rv == 0 && !m->audit_based) {
        int64_t top = 0;
        rv = store_client_query_int(cl, "SELECT coalesce(max(seq), 0) FROM audit", NULL, 0, &top);
        res->audit_top = top;
    } else if (rv == 0) {
        /* Only the rows added since the last refresh: a range of the primary key. */
        struct proto_value p[] = {proto_int(m->audit_seq)};
        rv = store_client_query(cl,
                                "SELECT namespace, sum(max(count, 1)), max(seq) FROM audit WHERE seq > ?1 "
                                "GROUP BY namespace",
                                p, 1, &res->audit);
        res->audit_top = m->audit_seq;
        for (size_t i = 0; rv == 0 && i < res->audit.n_rows; i++) {
            int64_t top = proto_rows_at(&res->audit, i, 2)->u.i;
            res->audit_top = top > res->audit_top ? top : res->audit_top;
        }
    }
    return rv;
}

/* Apply a complete result to the table. Under mu. */
static void apply(struct ns_metrics *m, const struct result *res)
{
    unsigned max = m->cfg.max_namespaces;
    m->namespaces = (unsigned)res->ns.n_rows;
    m->overflow = 0;
    for (unsigned i = 0; i < m->n_rows; i++) {
        struct row *r = &m->rows[i];
        uint64_t audit = r->audit_events;
        char name[NSSTATS_NAME_MAX];
        memcpy(name, r->name, sizeof name);
        memset(r, 0, sizeof *r);
        memcpy(r->name, name, sizeof name);
        r->audit_events = audit;
    }
    m->rows[ROW_OTHER].present = true;
    for (size_t i = 0; i < res->ns.n_rows; i++) {
        const char *name = text(&res->ns, i, 0);
        char why[8];
        if (!names_dns_label_ok(name, NSSTATS_NAME_MAX - 1, why, sizeof why)) {
            m->overflow++; /* cannot be a label value as is: counted under "_other" */
            continue;
        }
        struct row *r = find_row(m, name);
        if (r == NULL && m->n_rows < max + FIRST_NS_ROW) {
            r = &m->rows[m->n_rows++];
            snprintf(r->name, sizeof r->name, "%s", name);
        }
        if (r == NULL) {
            m->overflow++;
            continue;
        }
        r->present = true;
    }
    for (size_t i = 0; i < res->sb.n_rows; i++) {
        struct row *r = row_for(m, text(&res->sb, i, 0));
        const char *phase = text(&res->sb, i, 1);
        unsigned p = PHASE_UNKNOWN;
        for (unsigned k = 0; k < N_PHASES; k++) {
            p = strcmp(phase, phases[k]) == 0 ? k : p;
        }
        r->sandboxes[p] += num(&res->sb, i, 2);
        if (p == PHASE_READY) {
            r->gpus_ready += num(&res->sb, i, 3);
        }
    }
    for (size_t i = 0; i < res->usage.n_rows; i++) {
        struct row *r = row_for(m, text(&res->usage, i, 0));
        r->used_sandboxes += num(&res->usage, i, 1);
        r->used_gpus += num(&res->usage, i, 2);
    }
    for (size_t i = 0; i < res->limits.n_rows; i++) {
        struct row *r = find_row(m, text(&res->limits, i, 0));
        if (r != NULL) { /* "_other" sums namespaces; a sum of limits would mean nothing */
            r->limit_sandboxes = tighter(r->limit_sandboxes, num(&res->limits, i, 1));
            r->limit_gpus = tighter(r->limit_gpus, num(&res->limits, i, 2));
        }
    }
    for (size_t i = 0; i < res->audit.n_rows; i++) {
        const char *ns = text(&res->audit, i, 0);
        struct row *r = ns[0] == '\0' ? &m->rows[ROW_CLUSTER] : row_for(m, ns);
        r->audit_events += num(&res->audit, i, 1);
    }
    m->audit_based = true;
    m->audit_seq = res->audit_top;
    m->refreshed_ms = clock_mono_ms(clock_system());
}

static void refresh(struct ns_metrics *m, bool *failing)
{
    struct store_client *cl;
    struct result res;
    memset(&res, 0, sizeof res);
    proto_rows_init(&res.ns, 0);
    proto_rows_init(&res.sb, 0);
    proto_rows_init(&res.usage, 0);
    proto_rows_init(&res.limits, 0);
    proto_rows_init(&res.audit, 0);
    int rv = store_pool_acquire(m->cfg.pool, 2000, &cl);
    char err[GERR_MSG_SIZE] = "no store connection free";
    if (rv == 0) {
        rv = read_all(m, cl, &res);
        if (rv != 0) {
            snprintf(err, sizeof err, "%s", cl->errmsg);
        }
        store_pool_release(m->cfg.pool, cl);
    }
    if (rv == 0) {
        if (m->cfg.nsstats != NULL) {
            /* The same names, in the same order, for the gate's call counters; before the table is
             * published, so a scrape that shows a namespace in gantry_namespaces finds its call
             * counters already keyed by it (not under "_other"). */
            const char **names = mem_zalloc(sizeof *names * (res.ns.n_rows + 1));
            for (size_t i = 0; i < res.ns.n_rows; i++) {
                names[i] = text(&res.ns, i, 0);
            }
            nsstats_set_known(m->cfg.nsstats, names, (unsigned)res.ns.n_rows);
            mem_free(names);
        }
        pthread_mutex_lock(&m->mu);
        apply(m, &res);
        pthread_mutex_unlock(&m->mu);
        *failing = false;
    } else {
        pthread_mutex_lock(&m->mu);
        m->failures++;
        pthread_mutex_unlock(&m->mu);
        if (!*failing) {
            LOG_WARN("namespace metrics: refresh failed: %s", err);
        }
        *failing = true;
    }
    result_close(&res);
}

static void *refresh_main(void *arg)
{
    struct ns_metrics *m = arg;
    bool failing = false;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        pthread_mutex_unlock(&m->mu);
        refresh(m, &failing);
        pthread_mutex_lock(&m->mu);
        struct timespec until;
        clock_mono_deadline(&until, m->cfg.interval_ms);
        while (!m->stop && clock_cond_wait_mono(&m->cond, &m->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int ns_metrics_start(const struct ns_metrics_config *cfg, struct ns_metrics **out)
{
    struct ns_metrics *m = mem_zalloc(sizeof *m);
    m->cfg = *cfg;
    if (m->cfg.interval_ms == 0) {
        m->cfg.interval_ms = NS_METRICS_DEFAULT_INTERVAL_MS;
    }
    if (m->cfg.max_namespaces == 0) {
        m->cfg.max_namespaces = NSSTATS_DEFAULT_MAX_NAMESPACES;
    }
    m->rows = mem_zalloc(sizeof *m->rows * (m->cfg.max_namespaces + FIRST_NS_ROW));
    snprintf(m->rows[ROW_OTHER].name, NSSTATS_NAME_MAX, "%s", NSSTATS_OTHER);
    snprintf(m->rows[ROW_CLUSTER].name, NSSTATS_NAME_MAX, "%s", NS_METRICS_CLUSTER);
    m->n_rows = FIRST_NS_ROW;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cond, NULL);
    if (pthread_create(&m->thread, NULL, refresh_main, m) != 0) {
        pthread_cond_destroy(&m->cond);
        pthread_mutex_destroy(&m->mu);
        mem_free(m->rows);
        mem_free(m);
        return GERR_NOMEM;
    }
    *out = m;
    return 0;
}

void ns_metrics_stop(struct ns_metrics *m)
{
    if (m == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->mu);
    mem_free(m->rows);
    mem_free(m);
}

/* One gauge family over the rows the last refresh saw (and "_other" when it holds anything). */
static void gauge(struct ns_metrics *m, struct buf *out, const char *name, const char *help,
                  const char *extra, size_t offset)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (unsigned i = 0; i < m->n_rows; i++) {
        const struct row *r = &m->rows[i];
        uint64_t v = *(const uint64_t *)((const char *)r + offset);
        if (i == ROW_CLUSTER || !r->present || (i == ROW_OTHER && v == 0)) {
            continue;
        }
        buf_printf(out, "%s{namespace=\"%s\"%s} %" PRIu64 "\n", name, r->name, extra, v);
    }
}

void ns_metrics_write(struct ns_metrics *m, struct buf *out)
{
    pthread_mutex_lock(&m->mu);
    uint64_t now = clock_mono_ms(clock_system());
    buf_printf(out,
               "# HELP gantry_namespaces Namespaces in the cluster (at the last refresh).\n"
               "# TYPE gantry_namespaces gauge\ngantry_namespaces %u\n"
               "# HELP gantry_namespace_series_overflow Namespaces summed under namespace=\"_other\" because "
               "more exist than namespace_metrics_max.\n"
               "# TYPE gantry_namespace_series_overflow gauge\ngantry_namespace_series_overflow %u\n"
               "# HELP gantry_namespace_metrics_refresh_failures_total Refreshes of the per-namespace "
               "gauges that failed (the last values stay).\n"
               "# TYPE gantry_namespace_metrics_refresh_failures_total counter\n"
               "gantry_namespace_metrics_refresh_failures_total %" PRIu64 "\n",
               m->namespaces, m->overflow, m->failures);
    if (m->refreshed_ms == 0) {
        pthread_mutex_unlock(&m->mu);
        return; /* nothing read yet: no per-namespace series rather than zeros */
    }
    buf_printf(
        out,
        "# HELP gantry_namespace_metrics_age_seconds Age of the per-namespace gauges.\n"
        "# TYPE gantry_namespace_metrics_age_seconds gauge\ngantry_namespace_metrics_age_seconds %.3f\n",
        (double)(now - m->refreshed_ms) / 1000.0);
    buf_printf(out, "# HELP gantry_namespace_sandboxes Sandboxes by namespace and phase.\n"
                    "# TYPE gantry_namespace_sandboxes gauge\n");
    for (unsigned i = 0; i < m->n_rows; i++) {
        const struct row *r = &m->rows[i];
        uint64_t any = 0;
        for (unsigned p = 0; p < N_PHASES; p++) {
            any += r->sandboxes[p];
        }
        if (i == ROW_CLUSTER || !r->present || (i == ROW_OTHER && any == 0)) {
            continue;
        }
        for (unsigned p = 0; p < N_PHASES; p++) {
            buf_printf(out, "gantry_namespace_sandboxes{namespace=\"%s\",phase=\"%s\"} %" PRIu64 "\n",
                       r->name, phases[p], r->sandboxes[p]);
        }
    }
    gauge(m, out, "gantry_namespace_gpus_in_use", "GPUs of the namespace's sandboxes in phase READY.", "",
          offsetof(struct row, gpus_ready));
    buf_printf(out, "# HELP gantry_namespace_quota_used What the namespace's quota counts as used, by "
                    "resource.\n# TYPE gantry_namespace_quota_used gauge\n");
    for (unsigned i = 0; i < m->n_rows; i++) {
        const struct row *r = &m->rows[i];
        if (i == ROW_CLUSTER || !r->present || (i == ROW_OTHER && r->used_sandboxes + r->used_gpus == 0)) {
            continue;
        }
        buf_printf(out,
                   "gantry_namespace_quota_used{namespace=\"%s\",resource=\"sandboxes\"} %" PRIu64 "\n"
                   "gantry_namespace_quota_used{namespace=\"%s\",resource=\"gpus\"} %" PRIu64 "\n",
                   r->name, r->used_sandboxes, r->name, r->used_gpus);
    }
    buf_printf(out,
               "# HELP gantry_namespace_quota_limit The namespace's limit by resource: the tighter of its "
               "quota and its ceiling; absent when neither limits it.\n"
               "# TYPE gantry_namespace_quota_limit gauge\n");
    for (unsigned i = FIRST_NS_ROW; i < m->n_rows; i++) {
        const struct row *r = &m->rows[i];
        if (r->present && r->limit_sandboxes != 0) {
            buf_printf(out,
                       "gantry_namespace_quota_limit{namespace=\"%s\",resource=\"sandboxes\"} %" PRIu64 "\n",
                       r->name, r->limit_sandboxes);
        }
        if (r->present && r->limit_gpus != 0) {
            buf_printf(out, "gantry_namespace_quota_limit{namespace=\"%s\",resource=\"gpus\"} %" PRIu64 "\n",
                       r->name, r->limit_gpus);
        }
    }
    buf_printf(out,
               "# HELP gantry_namespace_audit_events_total Audit events the cluster wrote since this replica "
               "started counting, by namespace (cluster-wide: every replica counts the same rows).\n"
               "# TYPE gantry_namespace_audit_events_total counter\n");
    for (unsigned i = 0; i < m->n_rows; i++) {
        const struct row *r = &m->rows[i];
        if (r->audit_events != 0 || (i >= FIRST_NS_ROW && r->present)) {
            buf_printf(out, "gantry_namespace_audit_events_total{namespace=\"%s\"} %" PRIu64 "\n", r->name,
                       r->audit_events);
        }
    }
    pthread_mutex_unlock(&m->mu);
}
