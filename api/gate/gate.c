/* Authentication, authorization and dispatch for every gantry.v1 call (api/gate/gate.h). */
#include "api/gate/gate.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/gate/audit.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

#define MAX_ROUTES 128u

struct route {
    const struct authz_rule *rule;
    gate_impl_fn fn;
    void *data;
};

struct gate {
    struct store_writer *writer;
    uint64_t replica_id;
    char gateway_id[32];
    struct jobs *jobs;
    struct store_pool *pool;
    struct authn *authn;
    struct route routes[MAX_ROUTES];
    unsigned n_routes;
};

struct pending {
    struct gate *g;
    struct gate_ctx ctx;
};

struct gate *gate_new(struct jobs *jobs, struct store_pool *pool, struct authn *authn,
                      struct store_writer *writer, uint64_t replica_id, const char *gateway_id)
{
    struct gate *g = mem_zalloc(sizeof *g);
    g->writer = writer;
    g->replica_id = replica_id;
    snprintf(g->gateway_id, sizeof g->gateway_id, "%s", gateway_id);
    g->jobs = jobs;
    g->pool = pool;
    g->authn = authn;
    return g;
}

void gate_free(struct gate *g)
{
    mem_free(g);
}

static struct route *find_route(struct gate *g, const char *path)
{
    for (unsigned i = 0; i < g->n_routes; i++) {
        if (strcmp(g->routes[i].rule->path, path) == 0) {
            return &g->routes[i];
        }
    }
    return NULL;
}

int gate_route(struct gate *g, const char *path, gate_impl_fn fn, void *data)
{
    const struct authz_rule *r = authz_rule_find(path);
    if (r == NULL || g->n_routes == MAX_ROUTES || find_route(g, path) != NULL) {
        return GERR_INVAL;
    }
    g->routes[g->n_routes++] = (struct route){.rule = r, .fn = fn, .data = data};
    return 0;
}

void gate_fail(struct gate_ctx *ctx, int status, const char *fmt, ...)
{
    char msg[GERR_MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    grpc_call_finish_async(ctx->call, status, msg, NULL);
}

/* Denials and failed logins go to the audit trail in a transaction of their own. */
static void audit_refusal(struct gate *g, struct gate_ctx *ctx, int class_uid, int status,
                          const char *message)
{
    struct audit_record r = {.time_ms = ctx->now_ms,
                             .class_uid = class_uid,
                             .activity = class_uid == AUDIT_CLASS_AUTHENTICATION
                                             ? AUDIT_CREATE
                                             : audit_activity_of(grpc_call_method(ctx->call)),
                             .actor_id = ctx->who.id,
                             .actor_name = ctx->who.name,
                             .actor_kind = ctx->who.kind,
                             .operation = grpc_call_method(ctx->call),
                             .ns = ctx->decision.ns,
                             .success = false,
                             .status_code = status,
                             .message = message,
                             .source = grpc_call_peer(ctx->call),
                             .replica_id = g->replica_id,
                             .gateway_id = g->gateway_id};
    audit_submit(g->writer, &r);
}

static void run(void *arg)
{
    struct pending *p = arg;
    struct gate *g = p->g;
    struct gate_ctx *ctx = &p->ctx;
    struct clock *clk = clock_system();
    ctx->now_ms = (int64_t)clk->wall_ms(clk);
    const char *path = grpc_call_method(ctx->call);
    ctx->rule = authz_rule_find(path);
    int rv = store_pool_acquire(g->pool, 10000, &ctx->cl);
    if (rv != 0) {
        grpc_call_finish_async(ctx->call, GRPC_STATUS_UNAVAILABLE,
                               "the replica is overloaded: no store connection free", NULL);
        mem_free(p);
        return;
    }
    char msg[GERR_MSG_SIZE] = "";
    if (ctx->rule->action != AZ_TOKEN) {
        rv = authn_call(g->authn, ctx->cl, grpc_call_metadata(ctx->call, "authorization"),
                        grpc_call_peer_cert(ctx->call), grpc_call_peer(ctx->call), ctx->now_ms, &ctx->who,
                        msg);
        if (rv != 0) {
            int status = rv == GERR_UNAUTH   ? GRPC_STATUS_UNAUTHENTICATED
                         : rv == GERR_TOOBIG ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                             : grpc_status_from_gerr(rv);
            if (rv == GERR_UNAUTH && g->writer != NULL) {
                audit_refusal(g, ctx, AUDIT_CLASS_AUTHENTICATION, status, msg);
            }
            grpc_call_finish_async(ctx->call, status, msg, NULL);
            goto out;
        }
        ctx->caller = (struct authz_caller){
            .principal_id = ctx->who.id, .bindings = ctx->who.bindings, .n_bindings = ctx->who.n_bindings};
    }
    /* The transport decodes the request here, on this worker, now that the caller is known; it
     * refuses invalid UTF-8, NULs and unknown enum values naming the field (server/grpc/server.h). */
    const ProtobufCMessage *req = grpc_call_request(ctx->call);
    if (req == NULL) {
        const char *why = NULL;
        grpc_call_finish_async(ctx->call, grpc_call_request_error(ctx->call, &why), why, NULL);
        goto out;
    }
    authz_decide(ctx->rule, &ctx->caller, req, &ctx->decision);
    if (!ctx->decision.allowed) {
        LOG_WARN("authz: %s denied to %s (%s) from %s: %s", path, ctx->who.name, ctx->who.id,
                 grpc_call_peer(ctx->call), ctx->decision.why);
        if (g->writer != NULL) {
            audit_refusal(g, ctx, AUDIT_CLASS_API_ACTIVITY, GRPC_STATUS_PERMISSION_DENIED, ctx->decision.why);
        }
        grpc_call_finish_async(ctx->call, GRPC_STATUS_PERMISSION_DENIED, ctx->decision.why, NULL);
        goto out;
    }
    struct route *route = find_route(g, path);
    if (route == NULL) {
        snprintf(msg, sizeof msg, "method %.200s is not implemented yet", path);
        grpc_call_finish_async(ctx->call, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
        goto out;
    }
    route->fn(ctx, route->data);
out:
    store_pool_release(g->pool, ctx->cl);
    mem_free(p);
}

static void on_start(struct grpc_call *call, void *data)
{
    struct gate *g = data;
    struct pending *p = mem_zalloc(sizeof *p);
    p->g = g;
    p->ctx.call = call;
    grpc_call_ref(call); /* dropped by grpc_call_finish_async */
    jobs_submit(g->jobs, run, p);
}

int gate_register(struct gate *g, struct grpc_server *s, const ProtobufCServiceDescriptor *const *services,
                  char *errmsg)
{
    int rv = authz_table_check(services, errmsg);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; services[i] != NULL; i++) {
        for (unsigned m = 0; m < services[i]->n_methods; m++) {
            const ProtobufCMethodDescriptor *md = &services[i]->methods[m];
            char path[256];
            snprintf(path, sizeof path, "/%s/%s", services[i]->name, md->name);
            /* Streaming requests do not exist in gantry.v1; server streams are recognised by name
             * through the descriptor's output being used with grpc_call_send_async. */
            bool streaming = strcmp(path, "/gantry.v1.Cluster/Backup") == 0 ||
                             strcmp(path, "/gantry.v1.Sandboxes/Watch") == 0 ||
                             strcmp(path, "/gantry.v1.Audit/Export") == 0;
            struct grpc_handler h = {
                .kind = streaming ? GRPC_SERVER_STREAMING : GRPC_UNARY, .on_start = on_start, .data = g};
            rv = grpc_server_handle(s, services[i], md->name, &h);
            if (rv != 0) {
                gerr_set(errmsg, "gate: cannot route %s", path);
                return rv;
            }
        }
    }
    return 0;
}
