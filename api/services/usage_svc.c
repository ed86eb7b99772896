/* gantry.v1.Usage: sandbox-seconds and GPU-seconds for cost attribution (api/services/usage_svc.h). */
#include "api/services/usage_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/gate.h"
#include "api/gate/resource.h"
#include "api/rules/labels.h"
#include "api/rules/page.h"
#include "gantry/v1/usage.pb-c.h"
#include "lib/mem.h"

#define MAX_RECORDS 10000u
#define MAX_GROUPS  1000u

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static int64_t coli(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

/* May the caller see usage of @ns? (The table allowed the call; with an empty namespace the
 * results are filtered to the namespaces the caller holds a role in.) */
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

/* The group key of row @i for @by ("namespace", "owner", "label:<key>"). */
static const char *group_value(const struct proto_rows *r, size_t i, const char *by, json_t *labels)
{
    if (strcmp(by, "namespace") == 0) {
        return col(r, i, 1);
    }
    if (strcmp(by, "owner") == 0) {
        return col(r, i, 2);
    }
    const char *v = json_string_value(json_object_get(labels, by + 6));
    return v != NULL ? v : "";
}

struct total {
    char key[512];
    uint64_t sandbox_s, gpu_s;
};

static void q_usage(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__QueryUsageRequest *req = (const void *)grpc_call_request(ctx->call);
    for (size_t g = 0; g < req->n_group_by; g++) {
        const char *by = req->group_by[g];
        if (strcmp(by, "namespace") != 0 && strcmp(by, "owner") != 0 && strncmp(by, "label:", 6) != 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "group_by[%zu]: \"namespace\", \"owner\" or \"label:<key>\"", g);
            return;
        }
    }
    if (req->n_group_by > 4 || (req->end_ms != 0 && req->end_ms < req->start_ms)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "at most 4 group_by keys, and end_ms after start_ms");
        return;
    }
    /* One reply of at most MAX_RECORDS records, its totals over all of them: the query does not
     * page, so it issues no token and takes none. */
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NONE, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    int64_t now = ctx->now_ms;
    int64_t from = req->start_ms, to = req->end_ms != 0 ? req->end_ms : now;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(req->owner_id), proto_int(from),
                              proto_int(to), proto_int(MAX_RECORDS)};
    int rv = store_client_query(
        ctx->cl,
        "SELECT u.sandbox_id, u.namespace, u.owner_id, u.labels, u.gpus, u.started_at_ms, "
        "u.ended_at_ms, coalesce(s.name, '') FROM usage u LEFT JOIN sandboxes s ON s.id = "
        "u.sandbox_id WHERE (?1 = '' OR u.namespace = ?1) AND (?2 = '' OR u.owner_id = ?2) AND "
        "u.started_at_ms < ?4 AND (u.ended_at_ms = 0 OR u.ended_at_ms > ?3) "
        "ORDER BY u.started_at_ms LIMIT ?5",
        p, 5, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "query usage: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    Gantry__V1__UsageRecord *recs = mem_zalloc(sizeof *recs * (rows.n_rows + 1));
    Gantry__V1__UsageRecord **rp = mem_zalloc(sizeof *rp * (rows.n_rows + 1));
    struct total *totals = mem_zalloc(sizeof *totals * MAX_GROUPS);
    size_t n = 0, n_totals = 0;
    for (size_t i = 0; i < rows.n_rows; i++) {
        if (!may_see(ctx, col(&rows, i, 1)) || !labels_match(col(&rows, i, 3), req->selector)) {
            continue;
        }
        int64_t start = coli(&rows, i, 5), end = coli(&rows, i, 6) != 0 ? coli(&rows, i, 6) : now;
        int64_t lo = start > from ? start : from, hi = end < to ? end : to;
        uint64_t secs = hi > lo ? (uint64_t)(hi - lo) / 1000 : 0;
        Gantry__V1__UsageRecord *u = &recs[n];
        gantry__v1__usage_record__init(u);
        u->sandbox_id = (char *)col(&rows, i, 0);
        u->sandbox_name = (char *)col(&rows, i, 7);
        u->namespace_ = (char *)col(&rows, i, 1);
        u->owner_id = (char *)col(&rows, i, 2);
        u->sandbox_seconds = secs;
        u->gpu_seconds = secs * (uint64_t)coli(&rows, i, 4);
        u->start_ms = start;
        u->end_ms = coli(&rows, i, 6);
        rp[n++] = u;
        if (req->n_group_by > 0) {
            json_t *labels = json_loads(col(&rows, i, 3), 0, NULL);
            char key[512] = "";
            for (size_t g = 0; g < req->n_group_by; g++) {
                size_t used = strlen(key);
                snprintf(key + used, sizeof key - used, "%s%s", g > 0 ? "\x1f" : "",
                         group_value(&rows, i, req->group_by[g], labels));
            }
            json_decref(labels);
            size_t t = 0;
            while (t < n_totals && strcmp(totals[t].key, key) != 0) {
                t++;
            }
            if (t == n_totals && n_totals < MAX_GROUPS) {
                snprintf(totals[n_totals++].key, sizeof totals[0].key, "%s", key);
            }
            if (t < n_totals) {
                totals[t].sandbox_s += u->sandbox_seconds;
                totals[t].gpu_s += u->gpu_seconds;
            }
        }
    }
    /* Totals: one map entry per group_by key. */
    Gantry__V1__UsageTotal *ts = mem_zalloc(sizeof *ts * (n_totals + 1));
    Gantry__V1__UsageTotal **tp = mem_zalloc(sizeof *tp * (n_totals + 1));
    Gantry__V1__UsageTotal__GroupEntry *entries =
        mem_zalloc(sizeof *entries * (n_totals * req->n_group_by + 1));
    Gantry__V1__UsageTotal__GroupEntry **ep = mem_zalloc(sizeof *ep * (n_totals * req->n_group_by + 1));
    char **parts = mem_zalloc(sizeof *parts * (n_totals * req->n_group_by + 1));
    size_t e = 0;
    for (size_t t = 0; t < n_totals; t++) {
        gantry__v1__usage_total__init(&ts[t]);
        ts[t].sandbox_seconds = totals[t].sandbox_s;
        ts[t].gpu_seconds = totals[t].gpu_s;
        ts[t].group = &ep[e];
        char *save = NULL, *copy = mem_strdup(totals[t].key);
        char *tok = copy;
        for (size_t g = 0; g < req->n_group_by; g++) {
            char *sep = tok != NULL ? strchr(tok, '\x1f') : NULL;
            if (sep != NULL) {
                *sep = '\0';
            }
            gantry__v1__usage_total__group_entry__init(&entries[e]);
            entries[e].key = req->group_by[g];
            parts[e] = mem_strdup(tok != NULL ? tok : "");
            entries[e].value = parts[e];
            ep[e] = &entries[e];
            e++;
            tok = sep != NULL ? sep + 1 : NULL;
        }
        (void)save;
        mem_free(copy);
        ts[t].n_group = req->n_group_by;
        tp[t] = &ts[t];
    }
    Gantry__V1__QueryUsageResponse resp = GANTRY__V1__QUERY_USAGE_RESPONSE__INIT;
    resp.n_records = n;
    resp.records = rp;
    resp.n_totals = n_totals;
    resp.totals = tp;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < e; i++) {
        mem_free(parts[i]);
    }
    mem_free(parts);
    mem_free(ep);
    mem_free(entries);
    mem_free(tp);
    mem_free(ts);
    mem_free(totals);
    mem_free(rp);
    mem_free(recs);
    proto_rows_close(&rows);
}

int usage_svc_register(struct gate *g, char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Usage/Query", q_usage, NULL) != 0) {
        gerr_set(errmsg, "usage service: cannot route Usage/Query");
        return GERR_INVAL;
    }
    return 0;
}
