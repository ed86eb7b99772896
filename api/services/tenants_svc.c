/* gantry.v1.Namespaces and gantry.v1.Quotas (api/services/tenants_svc.h). */
#include "api/services/tenants_svc.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/audit.h"
#include "api/gate/gate.h"
#include "api/rules/labels.h"
#include "api/rules/page.h"
#include "api/rules/quota.h"
#include "api/services/model_read.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "store/events.h"

#define NS_COLS                                                                                              \
    "id, name, phase, labels, annotations, created_by, resource_version, created_at_ms, updated_at_ms, "     \
    "deletion_timestamp_ms, description"

static _Atomic uint64_t soft_exceeded;

uint64_t tenants_soft_exceeded(void)
{
    return atomic_load(&soft_exceeded);
}

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static int64_t coli(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

/* --- Namespace messages from rows --- */

struct ns_msg {
    Gantry__V1__Namespace n;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__ObjectMeta__LabelsEntry *entries;
    Gantry__V1__ObjectMeta__LabelsEntry **ptrs;
    json_t *labels;
};

static void labels_into(Gantry__V1__ObjectMeta *meta, const char *json, struct ns_msg *m)
{
    m->labels = json_loads(json, 0, NULL);
    size_t n = json_is_object(m->labels) ? json_object_size(m->labels) : 0;
    m->entries = mem_zalloc(sizeof *m->entries * (n + 1));
    m->ptrs = mem_zalloc(sizeof *m->ptrs * (n + 1));
    const char *k;
    json_t *v;
    size_t i = 0;
    if (n > 0) {
        json_object_foreach(m->labels, k, v)
        {
            gantry__v1__object_meta__labels_entry__init(&m->entries[i]);
            m->entries[i].key = (char *)k;
            m->entries[i].value = (char *)(json_string_value(v) != NULL ? json_string_value(v) : "");
            m->ptrs[i] = &m->entries[i];
            i++;
        }
    }
    meta->n_labels = i;
    meta->labels = m->ptrs;
}

static void ns_from_row(struct ns_msg *m, const struct proto_rows *r, size_t i)
{
    memset(m, 0, sizeof *m);
    gantry__v1__namespace__init(&m->n);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = (char *)col(r, i, 0);
    m->meta.name = (char *)col(r, i, 1);
    m->n.phase = strcmp(col(r, i, 2), "ACTIVE") == 0 ? GANTRY__V1__NAMESPACE__PHASE__PHASE_ACTIVE
                                                     : GANTRY__V1__NAMESPACE__PHASE__PHASE_TERMINATING;
    labels_into(&m->meta, col(r, i, 3), m);
    m->meta.created_by = (char *)col(r, i, 5);
    m->meta.resource_version = (uint64_t)coli(r, i, 6);
    m->meta.created_at_ms = coli(r, i, 7);
    m->meta.updated_at_ms = coli(r, i, 8);
    m->meta.deletion_timestamp_ms = coli(r, i, 9);
    m->n.description = (char *)col(r, i, 10);
    m->n.meta = &m->meta;
}

static void ns_msg_free(struct ns_msg *m)
{
    json_decref(m->labels);
    mem_free(m->entries);
    mem_free(m->ptrs);
}

static int ns_read_tx(struct store_tx *tx, const char *name, struct proto_rows *rows)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_text(name)};
    int rv = store_tx_query(tx, "SELECT " NS_COLS " FROM namespaces WHERE name = ?", p, 1, rows);
    return rv == 0 && rows->n_rows == 0 ? GERR_NOTFOUND : rv;
}

static void reply_ns(struct store_tx *tx, struct res_call *c, const char *name)
{
    struct proto_rows rows;
    if (ns_read_tx(tx, name, &rows) == 0) {
        struct ns_msg m;
        ns_from_row(&m, &rows, 0);
        res_reply(c, &m.n.base);
        ns_msg_free(&m);
    }
    proto_rows_close(&rows);
}

/* Move what res_reply packed into @out: a delete's last state, the payload of its DELETED event
 * (Events.Watch), read before the rows go. */
static void keep_reply(struct res_call *c, struct buf *out)
{
    buf_append(out, c->reply.data, c->reply.len);
    c->reply.len = 0;
}

/* The change event's payload: the reply (the object's public message). */
static int payload_reply(struct store_tx *tx, struct res_call *c, int rv)
{
    return rv == 0 && c->reply.len > 0 ? res_event_payload_reply(tx, c) : rv;
}

/* --- Namespaces.Create / Update / Delete --- */

static int ns_create_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__CreateNamespaceRequest *req = c->arg;
    const Gantry__V1__Namespace *in = req->namespace_;
    struct proto_rows rows;
    int rv = ns_read_tx(tx, in->meta->name, &rows);
    proto_rows_close(&rows);
    if (rv == 0) {
        return res_fail(tx, GERR_EXISTS, "namespace \"%s\" already exists", in->meta->name);
    }
    if (rv != GERR_NOTFOUND) {
        return rv;
    }
    char id[37];
    rand_uuid(id);
    rv = res_event(tx, c, "Namespace", in->meta->name, id, in->meta->name, "ADDED");
    char *labels = labels_json(in->meta->labels, in->meta->n_labels);
    if (rv == 0) {
        struct proto_value p[] = {proto_text(id),
                                  proto_text(in->meta->name),
                                  proto_text(labels),
                                  proto_text(c->ctx->who.id),
                                  proto_int(c->revision),
                                  proto_int(c->ctx->now_ms),
                                  proto_int(c->ctx->now_ms),
                                  proto_text(in->description)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO namespaces (id, name, phase, labels, annotations, created_by, resource_version, "
            "created_at_ms, updated_at_ms, deletion_timestamp_ms, description) "
            "VALUES (?, ?, 'ACTIVE', ?, '{}', ?, ?, ?, ?, 0, ?)",
            p, 8, NULL);
    }
    mem_free(labels);
    if (rv == 0) {
        reply_ns(tx, c, in->meta->name);
    }
    return payload_reply(tx, c, rv);
}

static bool ns_input_ok(struct gate_ctx *ctx, const Gantry__V1__Namespace *in)
{
    char why[160], err[GERR_MSG_SIZE];
    if (in == NULL || in->meta == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace.meta.name is required");
        return false;
    }
    if (!names_dns_label_ok(in->meta->name, 63, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace.meta.name %s", why);
        return false;
    }
    if (strlen(in->description) > 1024) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace.description is at most 1024 bytes");
        return false;
    }
    if (labels_check(in->meta->labels, in->meta->n_labels, "namespace.meta.labels", err) != 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return false;
    }
    return true;
}

static void ns_create(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__CreateNamespaceRequest *req = (const void *)grpc_call_request(ctx->call);
    if (ns_input_ok(ctx, req->namespace_)) {
        res_mutate(ctx, data, req->request_id, &gantry__v1__namespace__descriptor, ns_create_tx, (void *)req);
    }
}

static int check_rv(struct store_tx *tx, const struct proto_rows *rows, uint64_t expected)
{
    if (expected != 0 && (uint64_t)coli(rows, 0, 6) != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64,
                        coli(rows, 0, 6), expected);
    }
    return 0;
}

static int ns_update_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__UpdateNamespaceRequest *req = c->arg;
    const Gantry__V1__Namespace *in = req->namespace_;
    struct proto_rows rows;
    int rv = ns_read_tx(tx, in->meta->name, &rows);
    if (rv == GERR_NOTFOUND) {
        rv = res_fail(tx, rv, "namespace \"%s\" does not exist", in->meta->name);
    }
    if (rv == 0) {
        rv = check_rv(tx, &rows, req->expected_resource_version);
    }
    char id[40];
    snprintf(id, sizeof id, "%s", rv == 0 ? col(&rows, 0, 0) : "");
    proto_rows_close(&rows);
    if (rv == 0) {
        rv = res_event(tx, c, "Namespace", in->meta->name, id, in->meta->name, "MODIFIED");
    }
    char *labels = labels_json(in->meta->labels, in->meta->n_labels);
    if (rv == 0) {
        struct proto_value p[] = {proto_text(labels), proto_text(in->description), proto_int(c->revision),
                                  proto_int(c->ctx->now_ms), proto_text(id)};
        rv = store_tx_exec(
            tx,
            "UPDATE namespaces SET labels = ?, description = ?, resource_version = ?, updated_at_ms = ? "
            "WHERE id = ?",
            p, 5, NULL);
    }
    mem_free(labels);
    if (rv == 0) {
        reply_ns(tx, c, in->meta->name);
    }
    return payload_reply(tx, c, rv);
}

static void ns_update(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__UpdateNamespaceRequest *req = (const void *)grpc_call_request(ctx->call);
    if (ns_input_ok(ctx, req->namespace_)) {
        res_mutate(ctx, data, req->request_id, &gantry__v1__namespace__descriptor, ns_update_tx, (void *)req);
    }
}

/* Up to 5 names of what remains in @ns, for the refusal message. */
static int remaining(struct store_tx *tx, const char *ns, char *out, size_t len, int64_t *count)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv = store_tx_query(tx,
                            "SELECT 'sandbox ' || name FROM sandboxes WHERE namespace = ?1 UNION ALL "
                            "SELECT 'provider ' || name FROM providers WHERE namespace = ?1 LIMIT 6",
                            p, 1, &rows);
    out[0] = '\0';
    *count = rv == 0 ? (int64_t)rows.n_rows : 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows && i < 5; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i > 0 ? ", " : "", col(&rows, i, 0));
    }
    if (rv == 0 && rows.n_rows > 5) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, ", ...");
    }
    proto_rows_close(&rows);
    return rv;
}

static int ns_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteNamespaceRequest *req = c->arg;
    if (strcmp(req->name, "default") == 0) {
        return res_fail(tx, GERR_REFUSED, "the default namespace cannot be deleted");
    }
    struct proto_rows rows;
    int rv = ns_read_tx(tx, req->name, &rows);
    if (rv == GERR_NOTFOUND) {
        rv = res_fail(tx, rv, "namespace \"%s\" does not exist", req->name);
    }
    if (rv == 0) {
        rv = check_rv(tx, &rows, req->expected_resource_version);
    }
    char id[40];
    snprintf(id, sizeof id, "%s", rv == 0 ? col(&rows, 0, 0) : "");
    proto_rows_close(&rows);
    char left[GERR_MSG_SIZE / 2];
    int64_t n_left = 0;
    if (rv == 0) {
        rv = remaining(tx, req->name, left, sizeof left, &n_left);
    }
    if (rv == 0 && n_left > 0) {
        return res_fail(tx, GERR_REFUSED, "namespace \"%.63s\" still holds %s: delete them first", req->name,
                        left);
    }
    struct buf last;
    buf_init(&last);
    if (rv == 0) {
        reply_ns(tx, c, req->name);
        keep_reply(c, &last);
        struct proto_value p[] = {proto_text(id), proto_text(req->name)};
        rv = store_tx_exec(tx, "DELETE FROM namespaces WHERE id = ?", p, 1, NULL);
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM role_bindings WHERE namespace = ?", p + 1, 1, NULL);
        }
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM quotas WHERE namespace = ?", p + 1, 1, NULL);
        }
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM quota_usage WHERE namespace = ?", p + 1, 1, NULL);
        }
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM quota_ceilings WHERE namespace = ?", p + 1, 1, NULL);
        }
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM policies WHERE namespace = ?", p + 1, 1, NULL);
        }
        if (rv == 0) {
            rv = res_event(tx, c, "Namespace", req->name, id, req->name, "DELETED");
        }
        if (rv == 0) {
            Gantry__V1__Namespace gone = GANTRY__V1__NAMESPACE__INIT;
            Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
            meta.id = id;
            meta.name = (char *)req->name;
            meta.resource_version = (uint64_t)c->revision;
            meta.deletion_timestamp_ms = c->ctx->now_ms;
            gone.meta = &meta;
            gone.phase = GANTRY__V1__NAMESPACE__PHASE__PHASE_TERMINATING;
            res_reply(c, &gone.base);
            rv = store_event_payload_tx(tx, c->revision, last.data, last.len);
        }
    }
    buf_close(&last);
    return rv;
}

/* Phase one of a delete: mark the namespace TERMINATING (so nothing new lands in it) and report
 * what still remains. Its own transaction, committed even though the delete is then refused. */
struct terminating {
    const struct res_env *env;
    struct gate_ctx *ctx;
    const char *name;
    char left[GERR_MSG_SIZE / 2];
    int64_t n_left;
};

static int mark_terminating_tx(struct store_tx *tx, void *arg)
{
    struct terminating *t = arg;
    t->n_left = 0;
    int rv = remaining(tx, t->name, t->left, sizeof t->left, &t->n_left);
    if (rv != 0 || t->n_left == 0) {
        return rv;
    }
    struct proto_value p[] = {proto_int(t->ctx->now_ms), proto_text(t->name)};
    struct store_result res = {0};
    rv = store_tx_exec(tx,
                       "UPDATE namespaces SET phase = 'TERMINATING', deletion_timestamp_ms = ?1 "
                       "WHERE name = ?2 AND phase = 'ACTIVE'",
                       p, 2, &res);
    if (rv == 0 && res.rows_affected > 0) {
        int64_t rev = 0;
        rv = store_event_tx(tx, "Namespace", t->name, t->name, "MODIFIED", &rev);
        struct proto_rows rows; /* the namespace, now TERMINATING: the event's payload */
        proto_rows_init(&rows, 0);
        if (rv == 0 && ns_read_tx(tx, t->name, &rows) == 0) {
            struct ns_msg m;
            ns_from_row(&m, &rows, 0);
            rv = res_payload_tx(tx, rev, &m.n.base);
            ns_msg_free(&m);
        }
        proto_rows_close(&rows);
        struct audit_record r = {.time_ms = t->ctx->now_ms,
                                 .class_uid = AUDIT_CLASS_API_ACTIVITY,
                                 .activity = AUDIT_UPDATE,
                                 .actor_id = t->ctx->who.id,
                                 .actor_name = t->ctx->who.name,
                                 .actor_kind = t->ctx->who.kind,
                                 .operation = grpc_call_method(t->ctx->call),
                                 .ns = t->name,
                                 .resource_type = "Namespace",
                                 .resource_name = t->name,
                                 .success = true,
                                 .message = "namespace is TERMINATING",
                                 .source = grpc_call_peer(t->ctx->call),
                                 .replica_id = t->env->replica_id,
                                 .gateway_id = t->env->gateway_id,
                                 .revision = rev};
        if (rv == 0) {
            rv = audit_insert_tx(tx, &r);
        }
    }
    return rv;
}

static void ns_delete(struct gate_ctx *ctx, void *data)
{
    const struct res_env *env = data;
    const Gantry__V1__DeleteNamespaceRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name is required");
        return;
    }
    if (strcmp(req->name, "default") == 0) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "the default namespace cannot be deleted");
        return;
    }
    struct terminating t = {.env = env, .ctx = ctx, .name = req->name};
    char err[GERR_MSG_SIZE] = "";
    int rv = store_writer_run(env->writer, mark_terminating_tx, &t, err);
    if (rv != 0) {
        gate_fail(ctx, res_status(rv), "delete namespace: %s", err[0] != '\0' ? err : gerr_str(rv));
        return;
    }
    if (t.n_left > 0) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION,
                  "namespace \"%.63s\" is TERMINATING but still holds %s: delete them, then delete the "
                  "namespace again",
                  req->name, t.left);
        return;
    }
    res_mutate(ctx, env, req->request_id, &gantry__v1__namespace__descriptor, ns_delete_tx, (void *)req);
}

/* --- reads --- */

/* A row packed as a Namespace, for the model (the same message the store path sends). */
static uint8_t *ns_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    struct ns_msg m;
    ns_from_row(&m, r, i);
    uint8_t *out = kind_model_pack(&m.n.base, len);
    ns_msg_free(&m);
    return out;
}

struct kind_model *tenants_ns_model_new(void)
{
    struct kind_model_config cfg = {.kind = "Namespace",
                                    .what = "namespace",
                                    .table = "namespaces",
                                    .cols = NS_COLS,
                                    .n_cols = 11,
                                    .ns_col = KIND_MODEL_NO_COL,
                                    .name_col = 1,
                                    .labels_col = 3,
                                    .key_col = 1,
                                    .key_where = "name = ?",
                                    .key = KIND_MODEL_KEY_NS,
                                    .desc = &gantry__v1__namespace__descriptor,
                                    .pack = ns_pack_row};
    return kind_model_new(&cfg);
}

/* From the replica's model (api/services/kind_model.h) as the read options ask, else the store. */
static void ns_get(struct gate_ctx *ctx, void *data)
{
    const struct kind_reads *rd = data;
    const Gantry__V1__GetNamespaceRequest *req = (const void *)grpc_call_request(ctx->call);
    char not_found[GERR_MSG_SIZE];
    snprintf(not_found, sizeof not_found, "namespace \"%.63s\" does not exist", req->name);
    if (kind_model_serve_get(rd, ctx, req->read, "", req->name, not_found)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->name)};
    int rv = store_client_query(ctx->cl, "SELECT " NS_COLS " FROM namespaces WHERE name = ?", p, 1, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "get namespace: %s", ctx->cl->errmsg);
    } else if (rows.n_rows == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "%s", not_found);
    } else {
        struct ns_msg m;
        ns_from_row(&m, &rows, 0);
        grpc_call_finish_async(ctx->call, 0, NULL, &m.n.base);
        ns_msg_free(&m);
    }
    proto_rows_close(&rows);
}

static bool may_see(const struct gate_ctx *ctx, const char *ns)
{
    if (!ctx->decision.filter) {
        return true;
    }
    for (size_t i = 0; i < ctx->who.n_bindings; i++) {
        if (authz_binding_covers(&ctx->who.bindings[i], ns)) {
            return true;
        }
    }
    return false;
}

struct ns_list_arg {
    struct gate_ctx *ctx;
    const Gantry__V1__ListNamespacesRequest *req;
    const struct page_req *page;
};

/* The store path's page from the model: names after the token in order, visible and matching,
 * at most limit of them, the token the last one's name when more follow. */
static void ns_list_model(const struct kind_model_view *v, void *arg)
{
    struct ns_list_arg *a = arg;
    const Gantry__V1__Namespace **ps = mem_zalloc(sizeof *ps * (v->n + 1));
    size_t n = 0;
    bool more = false;
    for (size_t i = kind_model_after(v, "", a->page->after); i < v->n; i++) {
        const struct kind_model_entry *e = &v->entries[i];
        if (!may_see(a->ctx, e->name) || !labels_match(e->labels, a->req->selector)) {
            continue;
        }
        if (n == a->page->limit) {
            more = true;
            break;
        }
        ps[n++] = (const Gantry__V1__Namespace *)e->msg;
    }
    Gantry__V1__ListNamespacesResponse resp = GANTRY__V1__LIST_NAMESPACES_RESPONSE__INIT;
    resp.n_namespaces = n;
    resp.namespaces = (Gantry__V1__Namespace **)ps;
    resp.next_page_token = more ? ps[n - 1]->meta->name : "";
    resp.revision = v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
}

static void ns_list(struct gate_ctx *ctx, void *data)
{
    const struct kind_reads *rd = data;
    const Gantry__V1__ListNamespacesRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    struct ns_list_arg a = {.ctx = ctx, .req = req, .page = &page};
    if (kind_model_wait(rd, ctx, req->read, &need, &answered) &&
        kind_model_read(rd->model, need, ns_list_model, &a)) {
        return;
    }
    if (answered) {
        return;
    }
    unsigned limit = page.limit;
    const char *after = page.after;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(after)};
    int64_t revision = 0;
    int rv = store_client_query_int(ctx->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &revision);
    if (rv == 0) {
        rv = store_client_query(ctx->cl, "SELECT " NS_COLS " FROM namespaces WHERE name > ? ORDER BY name", p,
                                1, &rows);
    }
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list namespaces: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    struct ns_msg *ms = mem_zalloc(sizeof *ms * (rows.n_rows + 1));
    Gantry__V1__Namespace **ps = mem_zalloc(sizeof *ps * (rows.n_rows + 1));
    size_t n = 0;
    bool more = false;
    for (size_t i = 0; i < rows.n_rows; i++) {
        if (!may_see(ctx, col(&rows, i, 1)) || !labels_match(col(&rows, i, 3), req->selector)) {
            continue;
        }
        if (n == limit) {
            more = true;
            break;
        }
        ns_from_row(&ms[n], &rows, i);
        ps[n] = &ms[n].n;
        n++;
    }
    Gantry__V1__ListNamespacesResponse resp = GANTRY__V1__LIST_NAMESPACES_RESPONSE__INIT;
    resp.n_namespaces = n;
    resp.namespaces = ps;
    resp.next_page_token = more ? ms[n - 1].meta.name : "";
    resp.revision = (uint64_t)revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < n; i++) {
        ns_msg_free(&ms[i]);
    }
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

/* --- Quotas ---
 *
 * Two rows per namespace, both optional: the ceiling a platform_admin sets (quota_ceilings) and
 * the quota (quotas), which a namespace_admin may set or remove as long as a ceiling exists and the
 * quota fits it (api/rules/quota.h). Charges check the ceiling first, always hard, then the quota in
 * its mode, so a namespace_admin can tighten what the platform allows but never loosen it. */

#define CEIL_COLS "c.max_sandboxes, c.max_gpus, c.max_lifetime_s, c.resource_version, c.updated_at_ms"

/* The ceiling of @ns (c->set false when there is none), and its version. */
static int ceiling_tx(struct store_tx *tx, const char *ns, struct quota_ceiling *c, int64_t *version)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv =
        store_tx_query(tx, "SELECT " CEIL_COLS " FROM quota_ceilings c WHERE c.namespace = ?", p, 1, &rows);
    memset(c, 0, sizeof *c);
    *version = 0;
    if (rv == 0 && rows.n_rows == 1) {
        c->set = true;
        c->max_sandboxes = coli(&rows, 0, 0);
        c->max_gpus = coli(&rows, 0, 1);
        c->max_lifetime_s = coli(&rows, 0, 2);
        *version = coli(&rows, 0, 3);
    }
    proto_rows_close(&rows);
    return rv;
}

int tenants_charge(struct store_tx *tx, const char *ns, int sandboxes, int gpus, uint64_t lifetime_s,
                   char *warning, size_t warning_len)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv = store_tx_query(
        tx,
        "SELECT n.phase, q.max_sandboxes, q.max_gpus, q.max_lifetime_s, q.mode, "
        "coalesce(u.sandboxes, 0), coalesce(u.gpus, 0), q.namespace IS NOT NULL, "
        "coalesce(c.max_sandboxes, 0), coalesce(c.max_gpus, 0), coalesce(c.max_lifetime_s, 0), "
        "c.namespace IS NOT NULL "
        "FROM namespaces n LEFT JOIN quotas q ON q.namespace = n.name "
        "LEFT JOIN quota_usage u ON u.namespace = n.name "
        "LEFT JOIN quota_ceilings c ON c.namespace = n.name WHERE n.name = ?",
        p, 1, &rows);
    if (rv != 0) {
        proto_rows_close(&rows);
        return rv;
    }
    if (rows.n_rows == 0) {
        proto_rows_close(&rows);
        return res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    }
    struct quota_state st = {
        .active = strcmp(col(&rows, 0, 0), "ACTIVE") == 0,
        .has_quota = coli(&rows, 0, 7) != 0,
        .max_sandboxes = coli(&rows, 0, 1),
        .max_gpus = coli(&rows, 0, 2),
        .max_lifetime_s = coli(&rows, 0, 3),
        .hard = strcmp(col(&rows, 0, 4), "hard") == 0,
        .used_sandboxes = coli(&rows, 0, 5),
        .used_gpus = coli(&rows, 0, 6),
        .ceiling = {.set = coli(&rows, 0, 11) != 0,
                    .max_sandboxes = coli(&rows, 0, 8),
                    .max_gpus = coli(&rows, 0, 9),
                    .max_lifetime_s = coli(&rows, 0, 10)},
    };
    proto_rows_close(&rows);
    rv = tenants_charge_decide(tx, ns, &st, sandboxes, gpus, lifetime_s, warning, warning_len);
    if (rv != 0) {
        return rv;
    }
    struct proto_value u[] = {proto_text(ns), proto_int(sandboxes), proto_int(gpus)};
    return store_tx_exec(tx, TENANTS_USAGE_UPSERT_SQL, u, 3, NULL);
}

int tenants_charge_decide(struct store_tx *tx, const char *ns, const struct quota_state *st, int sandboxes,
                          int gpus, uint64_t lifetime_s, char *warning, size_t warning_len)
{
    char over[GERR_MSG_SIZE];
    switch (quota_rules_charge(st, ns, sandboxes, gpus, lifetime_s, over, sizeof over)) {
    case QUOTA_TERMINATING:
        return res_fail(tx, GERR_REFUSED, "%s", over);
    case QUOTA_HARD_EXCEEDED:
        return res_fail(tx, GERR_TOOBIG, "%s", over);
    case QUOTA_SOFT_EXCEEDED:
        snprintf(warning, warning_len, "soft %s", over);
        atomic_fetch_add(&soft_exceeded, 1);
        break;
    case QUOTA_OK:
        break;
    }
    return 0;
}

struct quota_msg {
    Gantry__V1__GetQuotaResponse r;
    Gantry__V1__Quota q;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__QuotaUsage u;
    Gantry__V1__QuotaCeiling c;
    Gantry__V1__ObjectMeta cmeta;
};

static void quota_init(struct quota_msg *m, const char *ns)
{
    gantry__v1__get_quota_response__init(&m->r);
    gantry__v1__quota__init(&m->q);
    gantry__v1__object_meta__init(&m->meta);
    gantry__v1__quota_usage__init(&m->u);
    gantry__v1__quota_ceiling__init(&m->c);
    gantry__v1__object_meta__init(&m->cmeta);
    m->meta.namespace_ = (char *)ns;
    m->meta.name = (char *)ns;
    m->cmeta.namespace_ = (char *)ns;
    m->cmeta.name = (char *)ns;
    m->u.namespace_ = (char *)ns;
    m->q.meta = &m->meta;
    m->c.meta = &m->cmeta;
    m->r.usage = &m->u;
}

/* The quota from columns @at.. of row @i: max_sandboxes, max_gpus, max_lifetime_s, mode,
 * resource_version, updated_at_ms. */
static void quota_cols(struct quota_msg *m, const struct proto_rows *r, size_t i, unsigned at)
{
    m->q.max_concurrent_sandboxes = (uint32_t)coli(r, i, at);
    m->q.max_gpus = (uint32_t)coli(r, i, at + 1);
    m->q.max_lifetime_seconds = (uint64_t)coli(r, i, at + 2);
    m->q.mode = strcmp(col(r, i, at + 3), "hard") == 0 ? GANTRY__V1__QUOTA_MODE__QUOTA_MODE_HARD
                                                       : GANTRY__V1__QUOTA_MODE__QUOTA_MODE_SOFT;
    m->meta.resource_version = (uint64_t)coli(r, i, at + 4);
    m->meta.updated_at_ms = coli(r, i, at + 5);
    m->r.quota = &m->q;
}

/* The ceiling from columns @at.. of row @i (CEIL_COLS). */
static void ceiling_cols(struct quota_msg *m, const struct proto_rows *r, size_t i, unsigned at)
{
    m->c.max_concurrent_sandboxes = (uint32_t)coli(r, i, at);
    m->c.max_gpus = (uint32_t)coli(r, i, at + 1);
    m->c.max_lifetime_seconds = (uint64_t)coli(r, i, at + 2);
    m->cmeta.resource_version = (uint64_t)coli(r, i, at + 3);
    m->cmeta.updated_at_ms = coli(r, i, at + 4);
    m->r.ceiling = &m->c;
}

/* One namespace's quota, usage and ceiling as columns of a row: 0 the namespace, 1..6 the quota
 * (quota_cols), 7 which exist (bit 1 the quota, bit 2 the ceiling), 8..9 the usage, 10..14 the
 * ceiling (ceiling_cols); @NS the namespace's expression, joined with QUOTA_JOINS(@NS). 15
 * columns: dqlite 1.11 returns at most 16 safely, and a List's revision takes the 16th. */
#define QUOTA_COLS(NS)                                                                                       \
    NS ", coalesce(q.max_sandboxes, 0), coalesce(q.max_gpus, 0), coalesce(q.max_lifetime_s, 0), "            \
       "coalesce(q.mode, ''), coalesce(q.resource_version, 0), coalesce(q.updated_at_ms, 0), "               \
       "(q.namespace IS NOT NULL) + 2 * (c.namespace IS NOT NULL), coalesce(u.sandboxes, 0), "               \
       "coalesce(u.gpus, 0), coalesce(c.max_sandboxes, 0), coalesce(c.max_gpus, 0), "                        \
       "coalesce(c.max_lifetime_s, 0), coalesce(c.resource_version, 0), coalesce(c.updated_at_ms, 0)"
#define QUOTA_JOINS(NS)                                                                                      \
    "LEFT JOIN quotas q ON q.namespace = " NS " LEFT JOIN quota_usage u ON u.namespace = " NS                \
    " LEFT JOIN quota_ceilings c ON c.namespace = " NS

/* @m (quota_init'd with row @i's namespace) filled from row @i of QUOTA_COLS; usage.revision unset. */
static void quota_from_row(struct quota_msg *m, const struct proto_rows *r, size_t i)
{
    if ((coli(r, i, 7) & 1) != 0) {
        quota_cols(m, r, i, 1);
    }
    m->u.sandboxes = (uint32_t)coli(r, i, 8);
    m->u.gpus = (uint32_t)coli(r, i, 9);
    if ((coli(r, i, 7) & 2) != 0) {
        ceiling_cols(m, r, i, 10);
    }
}

/* --- Quotas read from the replica's quota model (api/services/kind_model.h), else the store ---
 *
 * One entry per namespace (every namespace: Get answers one without a quota or a ceiling), its
 * GetQuotaResponse as List sends it (usage.revision unset). The usage counters (quota_usage) change
 * with no event of their own: in the transaction of a Sandbox ADDED (Sandboxes.Create charges) or
 * DELETED (Sandboxes.Delete of a sandbox never started, the reconciler's removal) event, and with
 * the Namespace DELETED event (its rows deleted). So those events, the Quota and QuotaCeiling ones
 * and every Namespace event (a new namespace answers Get at once) mark their namespace, and the
 * model reads the marked namespaces' rows again in one statement per feed page (batched re-reads).
 * A quota or ceiling row exists only for an existing namespace (Set and SetCeiling check it in
 * their transaction; the namespace's deletion deletes them in its), so the namespaces the model
 * holds with either are the store List's. */

#define QUOTA_MODEL_TABLE                                                                                    \
    "(SELECT " QUOTA_COLS("n.name AS ns") " FROM namespaces n " QUOTA_JOINS("n.name") ") qm"

static uint8_t *quota_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    struct quota_msg m;
    quota_init(&m, col(r, i, 0));
    quota_from_row(&m, r, i);
    return kind_model_pack(&m.r.base, len);
}

static const struct kind_model_mark quota_marks[] = {
    {"QuotaCeiling", NULL}, {"Namespace", NULL}, {"Sandbox", "ADDED"}, {"Sandbox", "DELETED"}};

struct kind_model *tenants_quota_model_new(void)
{
    struct kind_model_config cfg = {.kind = "Quota",
                                    .what = "quota",
                                    .table = QUOTA_MODEL_TABLE,
                                    .cols = "qm.*",
                                    .n_cols = 15,
                                    .ns_col = KIND_MODEL_NO_COL,
                                    .name_col = 0,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0,
                                    .key_where = "qm.ns = ?",
                                    .key = KIND_MODEL_KEY_NS,
                                    .batch_where = "qm.ns IN (SELECT value FROM json_each(?))",
                                    .marks = quota_marks,
                                    .n_marks = sizeof quota_marks / sizeof quota_marks[0],
                                    .desc = &gantry__v1__get_quota_response__descriptor,
                                    .pack = quota_pack_row};
    return kind_model_new(&cfg);
}

struct q_get_arg {
    const char *ns;
    uint8_t *bytes;
    size_t len;
    uint64_t rev;
};

/* Under the model's lock: the entry packed with usage.revision the model's (the store path's is the
 * revision it read at). Only copies out. */
static void q_get_model(const struct kind_model_view *v, void *arg)
{
    struct q_get_arg *a = arg;
    a->rev = v->rev;
    const struct kind_model_entry *e = kind_model_find(v, "", a->ns);
    if (e == NULL) {
        return;
    }
    Gantry__V1__GetQuotaResponse r = *(const Gantry__V1__GetQuotaResponse *)e->msg;
    Gantry__V1__QuotaUsage u = *r.usage;
    u.revision = v->rev;
    r.usage = &u;
    a->bytes = kind_model_pack(&r.base, &a->len);
}

/* true: answered from the model (or a read option failed the call). */
static bool q_get_from_model(const struct kind_reads *rd, struct gate_ctx *ctx,
                             const Gantry__V1__GetQuotaRequest *req)
{
    uint64_t need = 0;
    bool answered = false;
    struct q_get_arg a = {.ns = req->namespace_};
    if (!kind_model_wait(rd, ctx, req->read, &need, &answered) ||
        !kind_model_read(rd->model, need, q_get_model, &a)) {
        return answered;
    }
    char trailer[24];
    snprintf(trailer, sizeof trailer, "%" PRIu64, a.rev);
    grpc_call_set_trailer(ctx->call, MODEL_REVISION_TRAILER, trailer);
    if (a.bytes == NULL) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", req->namespace_);
    } else {
        grpc_call_finish_async_bytes(ctx->call, 0, NULL, a.bytes, a.len);
        mem_free(a.bytes);
    }
    return true;
}

static void q_get(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__GetQuotaRequest *req = (const void *)grpc_call_request(ctx->call);
    if (q_get_from_model(data, ctx, req)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_)};
    int64_t revision = 0;
    int rv = store_client_query_int(ctx->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &revision);
    if (rv == 0) {
        /* 0 namespace, 1..6 the quota, 7 has one, 8..9 usage, 10..14 the ceiling, 15 has one */
        rv = store_client_query(
            ctx->cl,
            "SELECT " QUOTA_COLS("n.name") " FROM namespaces n " QUOTA_JOINS("n.name") " WHERE n.name = ?", p,
            1, &rows);
    }
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "get quota: %s", ctx->cl->errmsg);
    } else if (rows.n_rows == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", req->namespace_);
    } else {
        struct quota_msg m;
        quota_init(&m, req->namespace_);
        quota_from_row(&m, &rows, 0);
        m.u.revision = (uint64_t)revision;
        grpc_call_finish_async(ctx->call, 0, NULL, &m.r.base);
    }
    proto_rows_close(&rows);
}

struct q_list_arg {
    struct gate_ctx *ctx;
    const struct page_req *page;
};

/* Under the model's lock: the store path's page, the namespaces with a quota or a ceiling after the
 * token in order, at most limit of them, the token the last one's when more follow. */
static void q_list_model(const struct kind_model_view *v, void *arg)
{
    const struct q_list_arg *a = arg;
    const Gantry__V1__GetQuotaResponse **ps = mem_zalloc(sizeof *ps * (a->page->limit + 1));
    size_t n = 0;
    bool more = false;
    for (size_t i = kind_model_after(v, "", a->page->after); i < v->n; i++) {
        const Gantry__V1__GetQuotaResponse *q = (const void *)v->entries[i].msg;
        if (q->quota == NULL && q->ceiling == NULL) {
            continue;
        }
        if (n == a->page->limit) {
            more = true;
            break;
        }
        ps[n++] = q;
    }
    Gantry__V1__ListQuotasResponse resp = GANTRY__V1__LIST_QUOTAS_RESPONSE__INIT;
    resp.n_quotas = n;
    resp.quotas = (Gantry__V1__GetQuotaResponse **)ps;
    resp.next_page_token = more ? ps[n - 1]->usage->namespace_ : "";
    resp.revision = v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
}

static void q_list(struct gate_ctx *ctx, void *data)
{
    const struct kind_reads *rd = data;
    const Gantry__V1__ListQuotasRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    struct q_list_arg a = {.ctx = ctx, .page = &page};
    if ((kind_model_wait(rd, ctx, req->read, &need, &answered) &&
         kind_model_read(rd->model, need, q_list_model, &a)) ||
        answered) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(page.after), proto_int(page.limit + 1)};
    /* Every namespace with a quota or a ceiling; one statement, so the revision is the one they
     * were read at. */
    int rv = store_client_query(
        ctx->cl,
        STORE_LIST_AT_REVISION(
            "SELECT " QUOTA_COLS("n.ns") " FROM (SELECT namespace AS ns FROM quotas UNION SELECT namespace "
                                         "FROM quota_ceilings) n " QUOTA_JOINS(
                                             "n.ns") " WHERE n.ns > ?1 "
                                                     "ORDER BY n.ns LIMIT ?2",
            "x.ns"),
        p, 2, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list quotas: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > page.limit ? page.limit : rows.n_rows;
    struct quota_msg *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__GetQuotaResponse **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        struct quota_msg *m = &ms[i];
        quota_init(m, col(&rows, i, 0));
        quota_from_row(m, &rows, i);
        ps[i] = &m->r;
    }
    Gantry__V1__ListQuotasResponse resp = GANTRY__V1__LIST_QUOTAS_RESPONSE__INIT;
    resp.n_quotas = n;
    resp.quotas = ps;
    resp.next_page_token = rows.n_rows > page.limit ? (char *)col(&rows, n - 1, 0) : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

static void reply_quota_tx(struct store_tx *tx, struct res_call *c, const char *ns, bool deleted)
{
    struct proto_rows q;
    proto_rows_init(&q, 0);
    struct proto_value p[] = {proto_text(ns)};
    struct quota_msg m;
    quota_init(&m, ns);
    if (!deleted &&
        store_tx_query(tx,
                       "SELECT max_sandboxes, max_gpus, max_lifetime_s, mode, resource_version, "
                       "updated_at_ms FROM quotas WHERE namespace = ?",
                       p, 1, &q) == 0 &&
        q.n_rows == 1) {
        quota_cols(&m, &q, 0, 0);
    } else {
        m.meta.resource_version = (uint64_t)c->revision;
    }
    res_reply(c, &m.q.base);
    proto_rows_close(&q);
}

static int quota_version(struct store_tx *tx, const char *ns, uint64_t expected, bool must_exist)
{
    struct proto_value p[] = {proto_text(ns)};
    int64_t v = 0;
    int rv = store_tx_query_int(tx, "SELECT resource_version FROM quotas WHERE namespace = ?", p, 1, &v);
    if (rv == GERR_NOTFOUND && !must_exist) {
        rv = 0;
        v = 0;
    } else if (rv == GERR_NOTFOUND) {
        return res_fail(tx, rv, "namespace \"%.63s\" has no quota", ns);
    }
    if (rv == 0 && expected != 0 && (uint64_t)v != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, v,
                        expected);
    }
    return rv;
}

/* A namespace_admin changes its namespace's quota only under a ceiling (the platform's limit);
 * without one, the quota is the platform admin's own. */
static int need_ceiling(struct store_tx *tx, struct res_call *c, const char *ns,
                        const struct quota_ceiling *ceil)
{
    if (c->ctx->decision.ceiling_check && !ceil->set) {
        return res_fail(
            tx, GERR_REFUSED,
            "namespace \"%.63s\" has no quota ceiling: its namespace_admin may set or remove its quota "
            "once a platform_admin has set one (Quotas.SetCeiling, `gantry quota set-ceiling`)",
            ns);
    }
    return 0;
}

static int q_set_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__SetQuotaRequest *req = c->arg;
    const Gantry__V1__Quota *q = req->quota;
    const char *ns = q->meta->namespace_;
    struct proto_value np[] = {proto_text(ns)};
    int64_t exists = 0, cv = 0;
    struct quota_ceiling ceil;
    int rv = store_tx_query_int(tx, "SELECT count(*) FROM namespaces WHERE name = ?", np, 1, &exists);
    if (rv == 0 && exists == 0) {
        return res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    }
    if (rv == 0) {
        rv = ceiling_tx(tx, ns, &ceil, &cv);
    }
    if (rv == 0) {
        rv = need_ceiling(tx, c, ns, &ceil);
    }
    char why[GERR_MSG_SIZE];
    if (rv == 0 && !quota_rules_within_ceiling(q, ns, &ceil, why, sizeof why)) {
        return res_fail(tx, GERR_REFUSED, "%s", why);
    }
    if (rv == 0) {
        rv = quota_version(tx, ns, req->expected_resource_version, false);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Quota", ns, ns, ns, "MODIFIED");
    }
    if (rv == 0) {
        struct proto_value p[] = {
            proto_text(ns),
            proto_int(q->max_concurrent_sandboxes),
            proto_int(q->max_gpus),
            proto_int((int64_t)q->max_lifetime_seconds),
            proto_text(q->mode == GANTRY__V1__QUOTA_MODE__QUOTA_MODE_SOFT ? "soft" : "hard"),
            proto_int(c->revision),
            proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO quotas (namespace, max_sandboxes, max_gpus, max_lifetime_s, mode, resource_version, "
            "updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET "
            "max_sandboxes = excluded.max_sandboxes, max_gpus = excluded.max_gpus, "
            "max_lifetime_s = excluded.max_lifetime_s, mode = excluded.mode, "
            "resource_version = excluded.resource_version, updated_at_ms = excluded.updated_at_ms",
            p, 7, NULL);
    }
    if (rv == 0) {
        reply_quota_tx(tx, c, ns, false);
    }
    return payload_reply(tx, c, rv);
}

static void q_set(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__SetQuotaRequest *req = (const void *)grpc_call_request(ctx->call);
    char why[GERR_MSG_SIZE];
    if (!quota_rules_validate(req->quota, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    res_mutate(ctx, data, req->request_id, &gantry__v1__quota__descriptor, q_set_tx, (void *)req);
}

static int q_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteQuotaRequest *req = c->arg;
    struct quota_ceiling ceil;
    int64_t cv = 0;
    int rv = ceiling_tx(tx, req->namespace_, &ceil, &cv);
    if (rv == 0) {
        rv = need_ceiling(tx, c, req->namespace_, &ceil);
    }
    if (rv == 0) {
        rv = quota_version(tx, req->namespace_, req->expected_resource_version, true);
    }
    struct proto_value p[] = {proto_text(req->namespace_)};
    struct buf last;
    buf_init(&last);
    if (rv == 0) {
        reply_quota_tx(tx, c, req->namespace_, false);
        keep_reply(c, &last);
        rv = store_tx_exec(tx, "DELETE FROM quotas WHERE namespace = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Quota", req->namespace_, req->namespace_, req->namespace_, "DELETED");
    }
    if (rv == 0) {
        reply_quota_tx(tx, c, req->namespace_, true);
        rv = store_event_payload_tx(tx, c->revision, last.data, last.len);
    }
    buf_close(&last);
    return rv;
}

static void q_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeleteQuotaRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace is required");
        return;
    }
    res_mutate(ctx, data, req->request_id, &gantry__v1__quota__descriptor, q_delete_tx, (void *)req);
}

/* --- Quota ceilings (platform_admin) --- */

static void reply_ceiling_tx(struct store_tx *tx, struct res_call *c, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    struct quota_msg m;
    quota_init(&m, ns);
    m.cmeta.resource_version = (uint64_t)c->revision;
    if (store_tx_query(tx, "SELECT " CEIL_COLS " FROM quota_ceilings c WHERE c.namespace = ?", p, 1, &rows) ==
            0 &&
        rows.n_rows == 1) {
        ceiling_cols(&m, &rows, 0, 0);
    }
    res_reply(c, &m.c.base);
    proto_rows_close(&rows);
}

static int ceiling_version(struct store_tx *tx, const char *ns, uint64_t expected, bool must_exist)
{
    struct quota_ceiling ceil;
    int64_t v = 0;
    int rv = ceiling_tx(tx, ns, &ceil, &v);
    if (rv == 0 && !ceil.set && must_exist) {
        return res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" has no quota ceiling", ns);
    }
    if (rv == 0 && expected != 0 && (uint64_t)v != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, v,
                        expected);
    }
    return rv;
}

static int ceil_set_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__SetQuotaCeilingRequest *req = c->arg;
    const Gantry__V1__QuotaCeiling *in = req->ceiling;
    const char *ns = in->meta->namespace_;
    struct proto_value np[] = {proto_text(ns)};
    int64_t exists = 0;
    int rv = store_tx_query_int(tx, "SELECT count(*) FROM namespaces WHERE name = ?", np, 1, &exists);
    if (rv == 0 && exists == 0) {
        return res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    }
    if (rv == 0) {
        rv = ceiling_version(tx, ns, req->expected_resource_version, false);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "QuotaCeiling", ns, ns, ns, "MODIFIED");
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(ns),
                                  proto_int(in->max_concurrent_sandboxes),
                                  proto_int(in->max_gpus),
                                  proto_int((int64_t)in->max_lifetime_seconds),
                                  proto_text(c->ctx->who.id),
                                  proto_int(c->revision),
                                  proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO quota_ceilings (namespace, max_sandboxes, max_gpus, max_lifetime_s, created_by, "
            "resource_version, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE "
            "SET "
            "max_sandboxes = excluded.max_sandboxes, max_gpus = excluded.max_gpus, "
            "max_lifetime_s = excluded.max_lifetime_s, resource_version = excluded.resource_version, "
            "updated_at_ms = excluded.updated_at_ms",
            p, 7, NULL);
    }
    if (rv == 0) {
        reply_ceiling_tx(tx, c, ns);
    }
    return payload_reply(tx, c, rv);
}

static void ceil_set(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__SetQuotaCeilingRequest *req = (const void *)grpc_call_request(ctx->call);
    char why[GERR_MSG_SIZE];
    if (!quota_rules_validate_ceiling(req->ceiling, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    res_mutate(ctx, data, req->request_id, &gantry__v1__quota_ceiling__descriptor, ceil_set_tx, (void *)req);
}

static int ceil_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteQuotaCeilingRequest *req = c->arg;
    int rv = ceiling_version(tx, req->namespace_, req->expected_resource_version, true);
    struct proto_value p[] = {proto_text(req->namespace_)};
    struct buf last;
    buf_init(&last);
    if (rv == 0) {
        reply_ceiling_tx(tx, c, req->namespace_);
        keep_reply(c, &last);
        rv = store_tx_exec(tx, "DELETE FROM quota_ceilings WHERE namespace = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "QuotaCeiling", req->namespace_, req->namespace_, req->namespace_, "DELETED");
    }
    if (rv == 0) {
        reply_ceiling_tx(tx, c, req->namespace_);
        rv = store_event_payload_tx(tx, c->revision, last.data, last.len);
    }
    buf_close(&last);
    return rv;
}

static void ceil_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeleteQuotaCeilingRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace is required");
        return;
    }
    res_mutate(ctx, data, req->request_id, &gantry__v1__quota_ceiling__descriptor, ceil_delete_tx,
               (void *)req);
}

int tenants_svc_register(struct gate *g, const struct res_env *env, const struct kind_reads *reads,
                         const struct kind_reads *quota_reads, char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Namespaces/Get", ns_get, (void *)reads) != 0 ||
        gate_route(g, "/gantry.v1.Namespaces/List", ns_list, (void *)reads) != 0 ||
        gate_route(g, "/gantry.v1.Quotas/Get", q_get, (void *)quota_reads) != 0 ||
        gate_route(g, "/gantry.v1.Quotas/List", q_list, (void *)quota_reads) != 0) {
        gerr_set(errmsg, "tenants service: cannot route Namespaces and Quotas Get and List");
        return GERR_INVAL;
    }
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Namespaces/Create", ns_create},      {"/gantry.v1.Namespaces/Update", ns_update},
        {"/gantry.v1.Namespaces/Delete", ns_delete},      {"/gantry.v1.Quotas/Set", q_set},
        {"/gantry.v1.Quotas/Delete", q_delete},           {"/gantry.v1.Quotas/SetCeiling", ceil_set},
        {"/gantry.v1.Quotas/DeleteCeiling", ceil_delete},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, (void *)env) != 0) {
            gerr_set(errmsg, "tenants service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
