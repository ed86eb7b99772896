/* The reconciler's warm pool pass (leases/warmpools.h). */
#include "leases/warmpools.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gantry/v1/warmpools.pb-c.h"
#include "leases/lease.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/events.h"

struct pool_row {
    char id[40], ns[64], name[64], kns[64], tmpl[254];
    uint32_t replicas;
    uint64_t version;
    Gantry__V1__WarmPoolStatus *status; /* as stored (NULL: never written) */
};

static void text(const struct proto_value *v, char *out, size_t len)
{
    snprintf(out, len, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0,
             v->type == PROTO_TEXT ? v->u.b.s : "");
}

static int64_t now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the fenced status write --- */

struct status_write {
    const struct warmpools_pass *p;
    const struct pool_row *w;
    const Gantry__V1__WarmPoolStatus *status;
};

static int status_tx(struct store_tx *tx, void *arg)
{
    struct status_write *x = arg;
    int rv = lease_check_tx(tx, x->p->lease, x->p->holder, x->p->epoch);
    if (rv != 0) {
        return rv;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value idp[] = {proto_text(x->w->id)};
    rv = store_tx_query(tx, "SELECT pool FROM warm_pools WHERE id = ?", idp, 1, &rows);
    if (rv != 0 || rows.n_rows == 0) {
        proto_rows_close(&rows);
        return rv; /* deleted meanwhile: nothing to write */
    }
    const struct proto_value *b = proto_rows_at(&rows, 0, 0);
    Gantry__V1__WarmPool *pool =
        b->type == PROTO_BLOB ? gantry__v1__warm_pool__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s)
                              : NULL;
    proto_rows_close(&rows);
    size_t n = protobuf_c_message_get_packed_size(&x->status->base);
    uint8_t *blob = mem_alloc(n + 1);
    protobuf_c_message_pack(&x->status->base, blob);
    struct proto_value v[] = {proto_blob(blob, n), proto_text(x->w->id)};
    rv = store_tx_exec(tx, "UPDATE warm_pools SET status = ? WHERE id = ?", v, 2, NULL);
    mem_free(blob);
    int64_t rev = 0;
    if (rv == 0) {
        rv = store_event_tx(tx, "WarmPool", x->w->ns, x->w->id, "MODIFIED", &rev);
    }
    if (rv == 0 && pool != NULL) { /* the event carries the pool as this change left it */
        Gantry__V1__WarmPoolStatus *old = pool->status;
        pool->status = (Gantry__V1__WarmPoolStatus *)x->status;
        size_t pn = protobuf_c_message_get_packed_size(&pool->base);
        uint8_t *pb = mem_alloc(pn + 1);
        protobuf_c_message_pack(&pool->base, pb);
        pool->status = old;
        rv = store_event_payload_tx(tx, rev, pb, pn);
        mem_free(pb);
    }
    if (pool != NULL) {
        gantry__v1__warm_pool__free_unpacked(pool, NULL);
    }
    return rv;
}

static bool same_status(const Gantry__V1__WarmPoolStatus *a, const Gantry__V1__WarmPoolStatus *b)
{
    return a != NULL && a->ready_replicas == b->ready_replicas && a->replicas == b->replicas &&
           a->observed_resource_version == b->observed_resource_version &&
           strcmp(a->kubernetes_namespace, b->kubernetes_namespace) == 0 &&
           strcmp(a->last_error, b->last_error) == 0;
}

/* Write @st for @w when it differs from the stored one. DRIVER_ERR_STALE when the lease is gone. */
static int write_status(const struct warmpools_pass *p, const struct pool_row *w,
                        Gantry__V1__WarmPoolStatus *st, struct warmpools_result *out)
{
    if (same_status(w->status, st)) {
        return 0;
    }
    st->synced_at_ms = now_wall();
    struct status_write x = {.p = p, .w = w, .status = st};
    char err[GERR_MSG_SIZE] = "";
    int rv = store_writer_run(p->writer, status_tx, &x, err);
    if (rv == GERR_STALE) {
        LOG_WARN("reconciler: warm pool status: %s", err);
        return DRIVER_ERR_STALE;
    }
    if (rv != 0) {
        LOG_WARN("reconciler: writing the status of warm pool %s/%s: %s", w->ns, w->name, err);
        return 0; /* the next pass writes it */
    }
    out->written++;
    return 0;
}

/* --- the pass --- */

static int apply_one(const struct warmpools_pass *p, const struct pool_row *w, struct warmpools_result *out)
{
    char err[GERR_MSG_SIZE] = "";
    struct driver_pool got = {0};
    int rv = 0;
    if (w->kns[0] == '\0') {
        rv = driver_ensure_namespace(p->driver, p->epoch, w->ns, err);
    }
    if (rv == 0) {
        struct driver_pool_spec spec = {.id = w->id,
                                        .namespace = w->ns,
                                        .name = w->name,
                                        .k8s_namespace = w->kns,
                                        .template_name = w->tmpl,
                                        .replicas = w->replicas};
        rv = driver_pool_apply(p->driver, p->epoch, &spec, &got, err);
    }
    if (rv == DRIVER_ERR_STALE) {
        LOG_WARN("reconciler: warm pool %s/%s: %s", w->ns, w->name, err);
        return rv;
    }
    Gantry__V1__WarmPoolStatus st = GANTRY__V1__WARM_POOL_STATUS__INIT;
    if (rv == 0) {
        st.ready_replicas = got.ready;
        st.replicas = got.replicas;
        st.observed_resource_version = w->version;
        st.kubernetes_namespace = got.k8s_namespace != NULL ? got.k8s_namespace : "";
        st.last_error = "";
        out->applied++;
    } else {
        if (w->status != NULL) { /* what was last seen stays; the error says why it is not newer */
            st.ready_replicas = w->status->ready_replicas;
            st.replicas = w->status->replicas;
            st.observed_resource_version = w->status->observed_resource_version;
            st.kubernetes_namespace = w->status->kubernetes_namespace;
        } else {
            st.kubernetes_namespace = "";
        }
        st.last_error = err;
        out->failed++;
        LOG_WARN("reconciler: warm pool %s/%s: %s (%s)", w->ns, w->name, err, gerr_name(rv));
    }
    rv = write_status(p, w, &st, out);
    driver_pool_close(&got);
    return rv;
}

static void row_close(struct pool_row *w)
{
    if (w->status != NULL) {
        gantry__v1__warm_pool_status__free_unpacked(w->status, NULL);
    }
    memset(w, 0, sizeof *w);
}

static void row_from(struct pool_row *w, const struct proto_rows *r, size_t i)
{
    memset(w, 0, sizeof *w);
    text(proto_rows_at(r, i, 0), w->id, sizeof w->id);
    text(proto_rows_at(r, i, 1), w->ns, sizeof w->ns);
    text(proto_rows_at(r, i, 2), w->name, sizeof w->name);
    text(proto_rows_at(r, i, 3), w->kns, sizeof w->kns);
    text(proto_rows_at(r, i, 4), w->tmpl, sizeof w->tmpl);
    w->replicas = (uint32_t)proto_rows_at(r, i, 5)->u.i;
    w->version = (uint64_t)proto_rows_at(r, i, 6)->u.i;
    const struct proto_value *st = proto_rows_at(r, i, 7);
    if (st->type == PROTO_BLOB && st->u.b.n > 0) {
        w->status = gantry__v1__warm_pool_status__unpack(NULL, st->u.b.n, (const uint8_t *)st->u.b.s);
    }
}

/* Delete the driver's pools of this gateway that the store does not have. */
static int orphans(const struct warmpools_pass *p, struct warmpools_result *out)
{
    struct driver_pool_list list = {0};
    char err[GERR_MSG_SIZE] = "";
    int rv = driver_pool_list(p->driver, p->epoch, &list, err);
    if (rv != 0) {
        if (rv != DRIVER_ERR_STALE) {
            LOG_WARN("reconciler: listing the driver's warm pools: %s", err);
        }
        return rv == DRIVER_ERR_STALE ? rv : 0;
    }
    for (size_t i = 0; rv == 0 && i < list.n; i++) {
        const struct driver_pool *dp = &list.items[i];
        struct proto_value q[] = {proto_text(dp->id)};
        int64_t n = 0;
        rv = store_client_query_int(p->cl, "SELECT count(*) FROM warm_pools WHERE id = ?", q, 1, &n);
        if (rv != 0 || n > 0) {
            continue;
        }
        rv = driver_pool_delete(p->driver, p->epoch, dp->k8s_namespace, dp->name, dp->id, err);
        if (rv == 0) {
            LOG_INFO("reconciler: deleted warm pool %s/%s (%s): no longer in the store", dp->k8s_namespace,
                     dp->name, dp->id);
            out->deleted++;
        } else if (rv != DRIVER_ERR_STALE) {
            LOG_WARN("reconciler: deleting warm pool %s/%s: %s; will retry", dp->k8s_namespace, dp->name,
                     err);
            rv = 0;
        }
    }
    driver_pool_list_close(&list);
    return rv;
}

int warmpools_sync(const struct warmpools_pass *p, struct warmpools_result *out)
{
    memset(out, 0, sizeof *out);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value lim[] = {proto_int(WARMPOOLS_MAX)};
    int rv = store_client_query(
        p->cl,
        "SELECT id, namespace, name, kube_namespace, template, replicas, resource_version, "
        "status FROM warm_pools ORDER BY id LIMIT ?",
        lim, 1, &rows);
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        struct pool_row w;
        row_from(&w, &rows, i);
        rv = apply_one(p, &w, out);
        row_close(&w);
    }
    proto_rows_close(&rows);
    if (rv == 0 && p->orphans) {
        rv = orphans(p, out);
    }
    return rv;
}
