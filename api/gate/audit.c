/* The audit trail (api/gate/audit.h). */
#include "api/gate/audit.h"

#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "lib/mem.h"
#include "lib/utf8.h"

static const char *s_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static const struct store_table audit_table = {
    "INSERT INTO audit (time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, operation, "
    "namespace, resource_type, resource_id, resource_name, status, status_code, message, source, "
    "request_id, replica_id, gateway_id, revision, count, start_time_ms) VALUES",
    21};

/* The text fields of a record, in column order, each valid UTF-8 (a sanitized copy when not). */
struct texts {
    const char *v[11];
    char *owned[11];
};

static void texts_init(struct texts *t, const struct audit_record *r)
{
    const char *in[11] = {r->actor_id, r->actor_name,    r->actor_kind,  r->operation,
                          r->ns,       r->resource_type, r->resource_id, r->resource_name,
                          r->message,  r->source,        r->request_id};
    for (int i = 0; i < 11; i++) {
        const char *v = s_or_empty(in[i]);
        t->owned[i] = utf8_valid(v, strlen(v), NULL) ? NULL : utf8_sanitize_dup(v);
        t->v[i] = t->owned[i] != NULL ? t->owned[i] : v;
    }
}

static void texts_close(struct texts *t)
{
    for (int i = 0; i < 11; i++) {
        mem_free(t->owned[i]);
    }
}

int audit_insert_tx(struct store_tx *tx, const struct audit_record *r)
{
    struct texts t;
    texts_init(&t, r);
    struct proto_value p[] = {proto_int(r->time_ms),
                              proto_int(r->class_uid),
                              proto_int(r->activity),
                              proto_text(t.v[0]),
                              proto_text(t.v[1]),
                              proto_text(t.v[2]),
                              proto_text(t.v[3]),
                              proto_text(t.v[4]),
                              proto_text(t.v[5]),
                              proto_text(t.v[6]),
                              proto_text(t.v[7]),
                              proto_text(r->success ? "Success" : "Failure"),
                              proto_int(r->status_code),
                              proto_text(t.v[8]),
                              proto_text(t.v[9]),
                              proto_text(t.v[10]),
                              proto_int((int64_t)r->replica_id),
                              proto_text(s_or_empty(r->gateway_id)),
                              proto_int(r->revision),
                              proto_int(r->count > 1 ? r->count : 1),
                              proto_int(r->count > 1 ? r->start_time_ms : 0)};
    int rv = store_tx_insert(tx, &audit_table, p);
    texts_close(&t);
    return rv;
}

int audit_insert_many_tx(struct store_tx *tx, const struct audit_record *r, size_t n)
{
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        rv = audit_insert_tx(tx, &r[i]);
    }
    return rv;
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
    out->count = (int64_t)json_integer_value(json_array_get(out->tail_, 5));
    out->count = out->count > 1 ? out->count : 1;
    out->start_time_ms = (int64_t)json_integer_value(json_array_get(out->tail_, 6));
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
    if (o != NULL && r->count > 1) {
        json_object_set_new(o, "count", json_integer((json_int_t)r->count));
        json_object_set_new(o, "start_time", json_integer((json_int_t)r->start_time_ms));
        json_object_set_new(o, "end_time", json_integer((json_int_t)r->time_ms));
    }
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
