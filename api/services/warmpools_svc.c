/* gantry.v1.WarmPools (api/services/warmpools_svc.h). */
#include "api/services/warmpools_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/authz/authz.h"
#include "api/gate/gate.h"
#include "api/rules/page.h"
#include "api/rules/warmpool.h"
#include "gantry/v1/warmpools.pb-c.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "store/events.h"

#define WP_COLS "pool, status, id, resource_version"

/* --- storage --- */

/* A stored pool with its status attached (wp_free). */
static Gantry__V1__WarmPool *wp_from_row(const struct proto_rows *rows, size_t i)
{
    const struct proto_value *b = proto_rows_at(rows, i, 0), *st = proto_rows_at(rows, i, 1);
    Gantry__V1__WarmPool *p = b->type == PROTO_BLOB
                                  ? gantry__v1__warm_pool__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s)
                                  : NULL;
    if (p == NULL || p->meta == NULL) {
        if (p != NULL) {
            gantry__v1__warm_pool__free_unpacked(p, NULL);
        }
        return NULL;
    }
    if (p->status != NULL) { /* never stored with the pool; ignore one if it were */
        gantry__v1__warm_pool_status__free_unpacked(p->status, NULL);
        p->status = NULL;
    }
    if (st->type == PROTO_BLOB && st->u.b.n > 0) {
        p->status = gantry__v1__warm_pool_status__unpack(NULL, st->u.b.n, (const uint8_t *)st->u.b.s);
    }
    if (p->status == NULL) { /* not synced yet: the empty status, allocated as protobuf-c frees it */
        p->status = gantry__v1__warm_pool_status__unpack(NULL, 0, (const uint8_t *)"");
    }
    return p;
}

static void wp_free(Gantry__V1__WarmPool *p)
{
    if (p != NULL) {
        gantry__v1__warm_pool__free_unpacked(p, NULL);
    }
}

static void read_fail(struct gate_ctx *ctx, int rv, const char *what)
{
    gate_fail(ctx, grpc_status_from_gerr(rv), "%s: %s", what,
              ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
}

static bool ns_name_ok(struct gate_ctx *ctx, const char *ns, const char *name)
{
    if (ns[0] == '\0' || name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace and name are required");
        return false;
    }
    return true;
}

/* Read pool @ns/@name through @tx (or @cl): *@out NULL when there is none. */
static int wp_read(struct store_tx *tx, struct store_client *cl, const char *ns, const char *name,
                   Gantry__V1__WarmPool **out)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(name)};
    const char *sql = "SELECT " WP_COLS " FROM warm_pools WHERE namespace = ? AND name = ?";
    int rv = tx != NULL ? store_tx_query(tx, sql, p, 2, &rows) : store_client_query(cl, sql, p, 2, &rows);
    *out = NULL;
    if (rv == 0 && rows.n_rows > 0) {
        *out = wp_from_row(&rows, 0);
        if (*out == NULL) {
            if (tx != NULL) {
                gerr_set(store_tx_errmsg(tx), "the stored warm pool \"%.63s\" does not decode", name);
            }
            rv = GERR_INTERNAL;
        }
    }
    proto_rows_close(&rows);
    return rv;
}

/* --- reads: from the model (api/services/kind_model.h), else the store --- */

#define WP_MODEL_COLS WP_COLS ", namespace, name"

static uint8_t *wp_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    Gantry__V1__WarmPool *p = wp_from_row(r, i);
    uint8_t *out = p != NULL ? kind_model_pack(&p->base, len) : NULL;
    wp_free(p);
    return out;
}

struct kind_model *warmpools_model_new(void)
{
    struct kind_model_config cfg = {.kind = "WarmPool",
                                    .what = "warm pool",
                                    .table = "warm_pools",
                                    .cols = WP_MODEL_COLS,
                                    .n_cols = 6,
                                    .ns_col = 4,
                                    .name_col = 5,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 2,
                                    .key_where = "id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    /* store/schema.c's trigger deletes a deleted namespace's pools */
                                    .parent_kind = "Namespace",
                                    .parent_key = KIND_MODEL_KEY_NS,
                                    .parent_col = 4,
                                    .parent_where = "namespace = ?",
                                    .desc = &gantry__v1__warm_pool__descriptor,
                                    .pack = wp_pack_row};
    return kind_model_new(&cfg);
}

static void wp_get(struct gate_ctx *ctx, void *data)
{
    const struct warmpools_svc *svc = data;
    const Gantry__V1__GetWarmPoolRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_name_ok(ctx, req->namespace_, req->name)) {
        return;
    }
    char not_found[GERR_MSG_SIZE];
    snprintf(not_found, sizeof not_found, "warm pool \"%.63s\" does not exist in namespace \"%.63s\"",
             req->name, req->namespace_);
    if (kind_model_serve_get(&svc->reads, ctx, req->read, req->namespace_, req->name, not_found)) {
        return;
    }
    Gantry__V1__WarmPool *p = NULL;
    int rv = wp_read(NULL, ctx->cl, req->namespace_, req->name, &p);
    if (rv != 0) {
        read_fail(ctx, rv, "get warm pool");
    } else if (p == NULL) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "%s", not_found);
    } else {
        grpc_call_finish_async(ctx->call, 0, NULL, &p->base);
    }
    wp_free(p);
}

/* A page from the model (kind_model_serve_page). */
static void wp_list_answer(struct gate_ctx *ctx, const ProtobufCMessage **msgs, size_t n,
                           const char *next_token, uint64_t rev)
{
    Gantry__V1__ListWarmPoolsResponse resp = GANTRY__V1__LIST_WARM_POOLS_RESPONSE__INIT;
    resp.n_warm_pools = n;
    resp.warm_pools = (Gantry__V1__WarmPool **)msgs;
    resp.next_page_token = (char *)next_token;
    resp.revision = rev;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
}

static void wp_list(struct gate_ctx *ctx, void *data)
{
    const struct warmpools_svc *svc = data;
    const Gantry__V1__ListWarmPoolsRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace is required");
        return;
    }
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (kind_model_serve_page(&svc->reads, ctx, req->read, req->namespace_, page.after, page.limit,
                              wp_list_answer)) {
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(page.after), proto_int(limit + 1)};
    int rv = store_client_query(ctx->cl,
                                STORE_LIST_AT_REVISION("SELECT " WP_COLS
                                                       ", name FROM warm_pools WHERE namespace = ?1 "
                                                       "AND name > ?2 ORDER BY name LIMIT ?3",
                                                       "x.name"),
                                p, 3, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        read_fail(ctx, rv, "list warm pools");
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    Gantry__V1__WarmPool **ps = mem_zalloc(sizeof *ps * (n + 1));
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        if ((ps[got] = wp_from_row(&rows, i)) != NULL) {
            got++;
        }
    }
    Gantry__V1__ListWarmPoolsResponse resp = GANTRY__V1__LIST_WARM_POOLS_RESPONSE__INIT;
    resp.n_warm_pools = got;
    resp.warm_pools = ps;
    /* The last row read, decoded or not: a row that does not decode is skipped, never repeated,
     * and never ends the List early. */
    const struct proto_value *last = n > 0 ? proto_rows_at(&rows, n - 1, 4) : NULL;
    resp.next_page_token =
        rows.n_rows > limit && last != NULL && last->type == PROTO_TEXT ? (char *)last->u.b.s : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < got; i++) {
        wp_free(ps[i]);
    }
    mem_free(ps);
    proto_rows_close(&rows);
}

/* --- mutations --- */

static int ns_active_tx(struct store_tx *tx, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv = store_tx_query(tx, "SELECT phase FROM namespaces WHERE name = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    } else if (rv == 0 && strcmp(proto_rows_at(&rows, 0, 0)->u.b.s, "ACTIVE") != 0) {
        rv = res_fail(tx, GERR_REFUSED, "namespace \"%.63s\" is being deleted (TERMINATING)", ns);
    }
    proto_rows_close(&rows);
    return rv;
}

/* Idle pool members are not sandboxes of anyone, so they do not take the namespace's sandbox quota;
 * but they are pods the namespace holds, so the sum of its pools' sizes may not exceed its
 * max_concurrent_sandboxes (the quota's and the ceiling's, whichever is lower; no limit when
 * neither is set). Checked at Create and Update, always hard. */
static int quota_tx(struct store_tx *tx, const char *ns, const char *except_id, uint32_t replicas)
{
    struct proto_value p[] = {proto_text(ns)}, q[] = {proto_text(ns), proto_text(except_id)};
    int64_t quota = 0, ceiling = 0, others = 0;
    int rv = store_tx_query_int(tx, "SELECT max_sandboxes FROM quotas WHERE namespace = ?", p, 1, &quota);
    rv = rv == GERR_NOTFOUND ? 0 : rv;
    if (rv == 0) {
        rv = store_tx_query_int(tx, "SELECT max_sandboxes FROM quota_ceilings WHERE namespace = ?", p, 1,
                                &ceiling);
        rv = rv == GERR_NOTFOUND ? 0 : rv;
    }
    if (rv == 0) {
        rv = store_tx_query_int(
            tx, "SELECT coalesce(sum(replicas), 0) FROM warm_pools WHERE namespace = ? AND id != ?", q, 2,
            &others);
    }
    int64_t limit = quota > 0 && (ceiling <= 0 || quota < ceiling) ? quota : ceiling;
    if (rv == 0 && limit > 0 && others + (int64_t)replicas > limit) {
        rv = res_fail(tx, GERR_TOOBIG,
                      "warm pools of namespace \"%.63s\" would keep %" PRId64
                      " members, above its max_concurrent_sandboxes %" PRId64
                      " (its other pools keep %" PRId64 ")",
                      ns, others + (int64_t)replicas, limit, others);
    }
    return rv;
}

static int store_pool_tx(struct store_tx *tx, struct res_call *c, Gantry__V1__WarmPool *p, bool insert)
{
    Gantry__V1__WarmPoolStatus *st = p->status;
    p->status = NULL;
    size_t n = protobuf_c_message_get_packed_size(&p->base);
    uint8_t *blob = mem_alloc(n + 1);
    protobuf_c_message_pack(&p->base, blob);
    p->status = st;
    int rv;
    if (insert) {
        struct proto_value v[] = {proto_text(p->meta->id),   proto_text(p->meta->namespace_),
                                  proto_text(p->meta->name), proto_text(p->kubernetes_namespace),
                                  proto_text(p->template_),  proto_int(p->replicas),
                                  proto_blob(blob, n),       proto_text(p->meta->created_by),
                                  proto_int(c->revision),    proto_int(c->ctx->now_ms),
                                  proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO warm_pools (id, namespace, name, kube_namespace, template, replicas, pool, "
            "created_by, resource_version, created_at_ms, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            v, 11, NULL);
    } else {
        struct proto_value v[] = {proto_int(p->replicas), proto_blob(blob, n), proto_int(c->revision),
                                  proto_int(c->ctx->now_ms), proto_text(p->meta->id)};
        rv = store_tx_exec(
            tx,
            "UPDATE warm_pools SET replicas = ?, pool = ?, resource_version = ?, updated_at_ms = ? "
            "WHERE id = ?",
            v, 5, NULL);
    }
    mem_free(blob);
    return rv;
}

struct create_arg {
    const Gantry__V1__CreateWarmPoolRequest *req;
    struct warmpools_svc *svc;
};

static bool role_in(const struct authn_principal *who, enum authz_role role, const char *ns)
{
    for (size_t i = 0; i < who->n_bindings; i++) {
        if (who->bindings[i].role == role && (ns == NULL || authz_binding_covers(&who->bindings[i], ns))) {
            return true;
        }
    }
    return false;
}

static int wp_create_tx(struct store_tx *tx, struct res_call *c)
{
    const struct create_arg *a = c->arg;
    const Gantry__V1__WarmPool *in = a->req->warm_pool;
    const char *ns = in->meta->namespace_;
    char why[GERR_MSG_SIZE];
    struct driver_caps caps = {.name = "none"};
    if (a->svc->driver != NULL) {
        driver_capabilities(a->svc->driver, &caps);
    }
    if (!caps.pools) {
        return res_fail(
            tx, GERR_REFUSED,
            "warm pools need the kubernetes driver: this gateway runs the %s driver, which does not "
            "manage warm pools",
            caps.name);
    }
    const struct authz_scope *scopes[AUTHN_MAX_BINDINGS];
    size_t n_scopes = authz_delegations(&c->ctx->caller, ns, scopes, AUTHN_MAX_BINDINGS);
    if (!warmpool_rules_placement(in, role_in(&c->ctx->who, AZ_ROLE_PLATFORM_ADMIN, ""), scopes, n_scopes,
                                  why, sizeof why)) {
        return res_fail(tx, GERR_PERM, "%s", why);
    }
    int rv = ns_active_tx(tx, ns);
    if (rv != 0) {
        return rv;
    }
    int64_t n = 0;
    struct proto_value np[] = {proto_text(ns), proto_text(in->meta->name)};
    rv =
        store_tx_query_int(tx, "SELECT count(*) FROM warm_pools WHERE namespace = ? AND name = ?", np, 2, &n);
    if (rv == 0 && n > 0) {
        return res_fail(tx, GERR_EXISTS, "warm pool \"%.63s\" already exists in namespace \"%.63s\"",
                        in->meta->name, ns);
    }
    if (rv == 0 && in->kubernetes_namespace[0] != '\0') {
        struct proto_value kp[] = {proto_text(in->kubernetes_namespace), proto_text(in->meta->name)};
        rv = store_tx_query_int(tx, "SELECT count(*) FROM warm_pools WHERE kube_namespace = ? AND name = ?",
                                kp, 2, &n);
        if (rv == 0 && n > 0) {
            return res_fail(
                tx, GERR_EXISTS,
                "a warm pool named \"%.63s\" already exists in Kubernetes namespace \"%.63s\" (of "
                "another gantry namespace)",
                in->meta->name, in->kubernetes_namespace);
        }
    }
    if (rv == 0) {
        rv = quota_tx(tx, ns, "", in->replicas);
    }
    char id[37];
    rand_uuid(id);
    if (rv == 0) {
        rv = res_event(tx, c, "WarmPool", ns, id, in->meta->name, "ADDED");
    }
    if (rv != 0) {
        return rv;
    }
    Gantry__V1__WarmPool p = *in;
    Gantry__V1__ObjectMeta meta = *in->meta;
    Gantry__V1__WarmPoolStatus st = GANTRY__V1__WARM_POOL_STATUS__INIT;
    meta.id = id;
    meta.created_by = (char *)c->ctx->who.id;
    meta.resource_version = (uint64_t)c->revision;
    meta.created_at_ms = c->ctx->now_ms;
    meta.updated_at_ms = c->ctx->now_ms;
    meta.deletion_timestamp_ms = 0;
    meta.n_annotations = 0;
    meta.annotations = NULL;
    p.meta = &meta;
    p.status = &st;
    rv = store_pool_tx(tx, c, &p, true);
    if (rv == 0) {
        res_reply(c, &p.base);
        rv = res_event_payload_reply(tx, c);
    }
    return rv;
}

static void wp_create(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__CreateWarmPoolRequest *req = (const void *)grpc_call_request(ctx->call);
    char why[GERR_MSG_SIZE];
    if (!warmpool_rules_validate(req->warm_pool, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    struct warmpools_svc *svc = data;
    struct create_arg a = {.req = req, .svc = svc};
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__warm_pool__descriptor, wp_create_tx, &a);
}

/* The stored pool @ns/@name for a change, checked against @expected (0: any version). */
static int existing_tx(struct store_tx *tx, const char *ns, const char *name, uint64_t expected,
                       Gantry__V1__WarmPool **out)
{
    int rv = wp_read(tx, NULL, ns, name, out);
    if (rv == 0 && *out == NULL) {
        return res_fail(tx, GERR_NOTFOUND, "warm pool \"%.63s\" does not exist in namespace \"%.63s\"", name,
                        ns);
    }
    if (rv == 0 && expected != 0 && (*out)->meta->resource_version != expected) {
        rv = res_fail(tx, GERR_ABORTED, "resource_version is %" PRIu64 ", not the expected %" PRIu64,
                      (*out)->meta->resource_version, expected);
    }
    if (rv != 0) {
        wp_free(*out);
        *out = NULL;
    }
    return rv;
}

static int wp_update_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__UpdateWarmPoolRequest *req = c->arg;
    Gantry__V1__WarmPool *p = NULL;
    int rv = existing_tx(tx, req->namespace_, req->name, req->expected_resource_version, &p);
    if (rv == 0) {
        rv = quota_tx(tx, req->namespace_, p->meta->id, req->replicas);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "WarmPool", req->namespace_, p->meta->id, req->name, "MODIFIED");
    }
    if (rv == 0) {
        p->replicas = req->replicas;
        p->meta->resource_version = (uint64_t)c->revision;
        p->meta->updated_at_ms = c->ctx->now_ms;
        rv = store_pool_tx(tx, c, p, false);
    }
    if (rv == 0) {
        res_reply(c, &p->base);
        rv = res_event_payload_reply(tx, c);
    }
    wp_free(p);
    return rv;
}

static void wp_update(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__UpdateWarmPoolRequest *req = (const void *)grpc_call_request(ctx->call);
    char why[GERR_MSG_SIZE];
    if (!ns_name_ok(ctx, req->namespace_, req->name)) {
        return;
    }
    if (!warmpool_rules_replicas_ok(req->replicas, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    struct warmpools_svc *svc = data;
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__warm_pool__descriptor, wp_update_tx, (void *)req);
}

static int wp_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteWarmPoolRequest *req = c->arg;
    Gantry__V1__WarmPool *p = NULL;
    int rv = existing_tx(tx, req->namespace_, req->name, req->expected_resource_version, &p);
    struct proto_value idp[] = {proto_text(p != NULL ? p->meta->id : "")};
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM warm_pools WHERE id = ?", idp, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "WarmPool", req->namespace_, p->meta->id, req->name, "DELETED");
    }
    if (rv == 0) {
        p->meta->resource_version = (uint64_t)c->revision;
        p->meta->deletion_timestamp_ms = c->ctx->now_ms;
        res_reply(c, &p->base);
        rv = res_event_payload_reply(tx, c); /* the DELETED event carries the last pool */
    }
    wp_free(p);
    return rv;
}

static void wp_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeleteWarmPoolRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_name_ok(ctx, req->namespace_, req->name)) {
        return;
    }
    struct warmpools_svc *svc = data;
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__warm_pool__descriptor, wp_delete_tx, (void *)req);
}

int warmpools_svc_register(struct gate *g, struct warmpools_svc *svc, char *errmsg)
{
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.WarmPools/Create", wp_create}, {"/gantry.v1.WarmPools/Get", wp_get},
        {"/gantry.v1.WarmPools/List", wp_list},     {"/gantry.v1.WarmPools/Update", wp_update},
        {"/gantry.v1.WarmPools/Delete", wp_delete},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, svc) != 0) {
            gerr_set(errmsg, "warm pools service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
