/* gantry.v1.Audit: Query and Export of the audit trail (api/services/audit_svc.h). */
#include "api/services/audit_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/audit.h"
#include "api/gate/gate.h"
#include "api/rules/page.h"
#include "gantry/v1/audit.pb-c.h"
#include "lib/buf.h"
#include "lib/mem.h"

#define EXPORT_BATCH 1000u
#define EXPORT_CHUNK (512u * 1024u)

static int64_t coli(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

/* Rows after @after_seq matching the filters. */
static int query(struct store_client *cl, int64_t start, int64_t end, const char *ns, const char *actor,
                 const char *operation, uint32_t class_uid, const char *status, int64_t after_seq,
                 unsigned limit, struct proto_rows *rows)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_int(start),      proto_int(end != 0 ? end : INT64_MAX),
                              proto_text(ns),        proto_text(actor),
                              proto_text(operation), proto_int(class_uid),
                              proto_int(after_seq),  proto_int(limit),
                              proto_text(status)};
    return store_client_query(
        cl,
        "SELECT " AUDIT_COLUMNS " FROM audit WHERE time_ms >= ?1 AND time_ms < ?2 AND (?3 = '' OR "
        "namespace = ?3) AND (?4 = '' OR actor_id = ?4) AND (?5 = '' OR operation = ?5) AND (?6 = 0 "
        "OR class_uid = ?6) AND (?9 = '' OR status = ?9) AND seq > ?7 ORDER BY seq LIMIT ?8",
        p, 9, rows);
}

static void q_query(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__QueryAuditRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_SEQ, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    unsigned limit = page.limit;
    if (req->status[0] != '\0' && strcmp(req->status, "Success") != 0 &&
        strcmp(req->status, "Failure") != 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "status must be \"Success\", \"Failure\" or empty (both)");
        return;
    }
    struct proto_rows rows;
    int rv = query(ctx->cl, req->start_ms, req->end_ms, req->namespace_, req->actor_principal_id,
                   req->api_operation, req->class_uid, req->status, page.after_seq, limit + 1, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "query audit: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    Gantry__V1__AuditEvent *ev = mem_zalloc(sizeof *ev * (n + 1));
    Gantry__V1__AuditEvent **ps = mem_zalloc(sizeof *ps * (n + 1));
    char **json = mem_zalloc(sizeof *json * (n + 1));
    char(*replica)[24] = mem_zalloc(sizeof *replica * (n + 1));
    struct audit_row *ar = mem_zalloc(sizeof *ar * (n + 1));
    for (size_t i = 0; i < n; i++) {
        Gantry__V1__AuditEvent *e = &ev[i];
        struct audit_row *r = &ar[i];
        audit_row_read(&rows, i, r);
        gantry__v1__audit_event__init(e);
        e->id = (uint64_t)r->seq;
        e->time_ms = r->time_ms;
        e->class_uid = (uint32_t)r->class_uid;
        e->actor_principal_id = (char *)r->actor_id;
        e->actor_name = (char *)r->actor_name;
        e->api_operation = (char *)r->operation;
        e->namespace_ = (char *)r->ns;
        e->resource_type = (char *)r->resource_type;
        e->resource_id = (char *)r->resource_id;
        e->resource_name = (char *)r->resource_name;
        e->status = (char *)r->status;
        e->status_detail = (char *)r->message;
        e->source_endpoint = (char *)r->source;
        e->request_id = (char *)r->request_id;
        snprintf(replica[i], sizeof replica[i], "%" PRId64, r->replica_id);
        e->replica_id = replica[i];
        e->gateway_id = (char *)r->gateway_id;
        json_t *o = audit_row_json(r);
        char *t = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        json[i] = mem_strdup(t != NULL ? t : "{}");
        free(t);
        e->ocsf_json = json[i];
        ps[i] = e;
    }
    char token[24] = "";
    if (rows.n_rows > limit) {
        snprintf(token, sizeof token, "%" PRIu64, ev[n - 1].id);
    }
    Gantry__V1__QueryAuditResponse resp = GANTRY__V1__QUERY_AUDIT_RESPONSE__INIT;
    resp.n_events = n;
    resp.events = ps;
    resp.next_page_token = token;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < n; i++) {
        mem_free(json[i]);
        audit_row_close(&ar[i]);
    }
    mem_free(ar);
    mem_free(json);
    mem_free(replica);
    mem_free(ev);
    mem_free(ps);
    proto_rows_close(&rows);
}

static void send_chunk(struct gate_ctx *ctx, struct buf *b, uint64_t last)
{
    Gantry__V1__ExportAuditChunk c = GANTRY__V1__EXPORT_AUDIT_CHUNK__INIT;
    c.jsonl.data = b->data;
    c.jsonl.len = b->len;
    c.last_event_id = last;
    grpc_call_send_async(ctx->call, &c.base);
    b->len = 0;
}

static void q_export(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__ExportAuditRequest *req = (const void *)grpc_call_request(ctx->call);
    struct buf b;
    buf_init(&b);
    int64_t after = 0;
    uint64_t last = 0;
    int rv = 0;
    for (;;) {
        struct proto_rows rows;
        rv = query(ctx->cl, req->start_ms, req->end_ms, req->namespace_, "", "", 0, "", after, EXPORT_BATCH,
                   &rows);
        for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
            struct audit_row r;
            audit_row_read(&rows, i, &r);
            json_t *o = audit_row_json(&r);
            audit_row_close(&r);
            char *t = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (t != NULL) {
                buf_append(&b, t, strlen(t));
                buf_append(&b, "\n", 1);
                free(t);
            }
            last = (uint64_t)coli(&rows, i, 0);
            after = (int64_t)last;
            if (b.len >= EXPORT_CHUNK) {
                send_chunk(ctx, &b, last);
            }
        }
        bool done = rv != 0 || rows.n_rows < EXPORT_BATCH || grpc_call_cancelled(ctx->call);
        proto_rows_close(&rows);
        if (done) {
            break;
        }
    }
    if (rv == 0 && b.len > 0) {
        send_chunk(ctx, &b, last);
    }
    buf_close(&b);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "export audit: %s", ctx->cl->errmsg);
    } else {
        grpc_call_finish_async(ctx->call, 0, NULL, NULL);
    }
}

int audit_svc_register(struct gate *g, char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Audit/Query", q_query, NULL) != 0 ||
        gate_route(g, "/gantry.v1.Audit/Export", q_export, NULL) != 0) {
        gerr_set(errmsg, "audit service: cannot route its methods");
        return GERR_INVAL;
    }
    return 0;
}
