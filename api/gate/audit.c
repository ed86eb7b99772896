/* The audit trail (api/gate/audit.h). */
#include "api/gate/audit.h"

#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "lib/mem.h"

static const char *s_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

int audit_insert_tx(struct store_tx *tx, const struct audit_record *r)
{
    struct proto_value p[] = {proto_int(r->time_ms),
                              proto_int(r->class_uid),
                              proto_int(r->activity),
                              proto_text(s_or_empty(r->actor_id)),
                              proto_text(s_or_empty(r->actor_name)),
                              proto_text(s_or_empty(r->actor_kind)),
                              proto_text(s_or_empty(r->operation)),
                              proto_text(s_or_empty(r->ns)),
                              proto_text(s_or_empty(r->resource_type)),
                              proto_text(s_or_empty(r->resource_id)),
                              proto_text(s_or_empty(r->resource_name)),
                              proto_text(r->success ? "Success" : "Failure"),
                              proto_int(r->status_code),
                              proto_text(s_or_empty(r->message)),
                              proto_text(s_or_empty(r->source)),
                              proto_text(s_or_empty(r->request_id)),
                              proto_int((int64_t)r->replica_id),
                              proto_text(s_or_empty(r->gateway_id)),
                              proto_int(r->revision)};
    return store_tx_exec(
        tx,
        "INSERT INTO audit (time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, operation, "
        "namespace, resource_type, resource_id, resource_name, status, status_code, message, source, "
        "request_id, replica_id, gateway_id, revision) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        p, 19, NULL);
}

/* An owned copy of a record, for the writer thread. */
struct owned {
    struct store_write w;
    struct audit_record r;
    char *strs[14];
};

static const char *dup(struct owned *o, int i, const char *s)
{
    o->strs[i] = mem_strdup(s_or_empty(s));
    return o->strs[i];
}

static int submit_tx(struct store_tx *tx, void *arg)
{
    struct owned *o = arg;
    return audit_insert_tx(tx, &o->r);
}

static void submit_done(struct store_write *w, int status)
{
    struct owned *o = w->data;
    if (status != 0) {
        LOG_WARN("audit: could not record %s by %s: %s", o->r.operation, o->r.actor_id, w->errmsg);
    }
    for (int i = 0; i < 14; i++) {
        mem_free(o->strs[i]);
    }
    mem_free(o);
}

void audit_submit(struct store_writer *w, const struct audit_record *r)
{
    struct owned *o = mem_zalloc(sizeof *o);
    o->r = *r;
    o->r.actor_id = dup(o, 0, r->actor_id);
    o->r.actor_name = dup(o, 1, r->actor_name);
    o->r.actor_kind = dup(o, 2, r->actor_kind);
    o->r.operation = dup(o, 3, r->operation);
    o->r.ns = dup(o, 4, r->ns);
    o->r.resource_type = dup(o, 5, r->resource_type);
    o->r.resource_id = dup(o, 6, r->resource_id);
    o->r.resource_name = dup(o, 7, r->resource_name);
    o->r.message = dup(o, 8, r->message);
    o->r.source = dup(o, 9, r->source);
    o->r.request_id = dup(o, 10, r->request_id);
    o->r.gateway_id = dup(o, 11, r->gateway_id);
    o->w.data = o;
    if (store_writer_submit(w, &o->w, submit_tx, o, submit_done) != 0) {
        submit_done(&o->w, GERR_CLOSED);
    }
}

enum audit_activity audit_activity_of(const char *operation)
{
    const char *m = strrchr(s_or_empty(operation), '/');
    m = m != NULL ? m + 1 : s_or_empty(operation);
    if (strncmp(m, "Create", 6) == 0 || strcmp(m, "Grant") == 0 || strcmp(m, "Join") == 0) {
        return AUDIT_CREATE;
    }
    if (strncmp(m, "Delete", 6) == 0 || strncmp(m, "Revoke", 6) == 0 || strcmp(m, "RemoveMember") == 0 ||
        strcmp(m, "Unshare") == 0) {
        return AUDIT_DELETE;
    }
    if (strncmp(m, "Get", 3) == 0 || strncmp(m, "List", 4) == 0 || strcmp(m, "Query") == 0 ||
        strcmp(m, "Export") == 0 || strcmp(m, "Watch") == 0 || strcmp(m, "WhoAmI") == 0 ||
        strcmp(m, "Backup") == 0) {
        return AUDIT_READ;
    }
    return AUDIT_UPDATE;
}

static const char *text(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static int64_t num(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

static const char *tail_text(json_t *a, size_t k)
{
    const char *v = json_string_value(json_array_get(a, k));
    return v != NULL ? v : "";
}

void audit_row_read(const struct proto_rows *rows, size_t i, struct audit_row *out)
{
    *out = (struct audit_row){.seq = num(rows, i, 0),
                              .time_ms = num(rows, i, 1),
                              .class_uid = num(rows, i, 2),
                              .activity_id = num(rows, i, 3),
                              .actor_id = text(rows, i, 4),
                              .actor_name = text(rows, i, 5),
                              .actor_kind = text(rows, i, 6),
                              .operation = text(rows, i, 7),
                              .ns = text(rows, i, 8),
                              .resource_type = text(rows, i, 9),
                              .resource_id = text(rows, i, 10),
                              .resource_name = text(rows, i, 11),
                              .status = text(rows, i, 12),
                              .status_code = num(rows, i, 13),
                              .message = text(rows, i, 14)};
    out->tail_ = json_loads(text(rows, i, 15), 0, NULL);
    out->source = tail_text(out->tail_, 0);
    out->request_id = tail_text(out->tail_, 1);
    out->replica_id = (int64_t)json_integer_value(json_array_get(out->tail_, 2));
    out->gateway_id = tail_text(out->tail_, 3);
    out->revision = (int64_t)json_integer_value(json_array_get(out->tail_, 4));
}

void audit_row_close(struct audit_row *r)
{
    json_decref(r->tail_);
    r->tail_ = NULL;
}

json_t *audit_row_json(const struct audit_row *r)
{
    bool ok = strcmp(r->status, "Success") == 0;
    json_t *resource = json_pack("{s:s, s:s, s:s, s:s}", "type", r->resource_type, "uid", r->resource_id,
                                 "name", r->resource_name, "namespace", r->ns);
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:s, s:{s:{s:s, s:s, s:s}}, s:{s:s, s:{s:s}}, s:[o], "
        "s:{s:s}, "
        "s:{s:{s:s, s:s}, s:s}, s:{s:I, s:I, s:s, s:I}}",
        "class_uid", (json_int_t)r->class_uid, "category_uid", (json_int_t)(r->class_uid / 1000),
        "activity_id", (json_int_t)r->activity_id, "time", (json_int_t)r->time_ms, "severity_id",
        (json_int_t)(ok ? 1 : 3), "status", r->status, "status_id", (json_int_t)(ok ? 1 : 2), "status_code",
        (json_int_t)r->status_code, "status_detail", r->message, "actor", "user", "uid", r->actor_id, "name",
        r->actor_name, "type", r->actor_kind, "api", "operation", r->operation, "request", "uid",
        r->request_id, "resources", resource, "src_endpoint", "ip", r->source, "metadata", "product", "name",
        "Gantry", "vendor_name", "Gantry", "version", "1.1.0", "unmapped", "seq", (json_int_t)r->seq,
        "replica_id", (json_int_t)r->replica_id, "gateway_id", r->gateway_id, "revision",
        (json_int_t)r->revision);
    return o;
}

int audit_prune(struct store_client *cl, int64_t before_ms, unsigned limit, int64_t *deleted)
{
    struct proto_value p[] = {proto_int(before_ms), proto_int(limit)};
    struct store_result res = {0};
    int rv = store_client_exec(
        cl, "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE time_ms < ? ORDER BY seq LIMIT ?)",
        p, 2, &res);
    if (rv == 0 && deleted != NULL) {
        *deleted = (int64_t)res.rows_affected;
    }
    return rv;
}
