/* Authentication, authorization and dispatch for every gantry.v1 call (api/gate/gate.h). */
#include "api/gate/gate.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

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

/* The longest a call waits for a store client when it has no deadline of its own. */
#define POOL_WAIT_MS 5000u

struct gate {
    struct gate_config cfg;
    char gateway_id[32];
    struct route routes[MAX_ROUTES];
    unsigned n_routes;
    atomic_uint_fast64_t refused_admission, shed_overloaded, dropped_expired;
};

struct pending {
    struct gate *g;
    struct gate_ctx ctx;
    bool has_digest;
    uint8_t digest[ADMISSION_DIGEST_SIZE];
    char host[64];
};

struct gate *gate_new(const struct gate_config *cfg)
{
    struct gate *g = mem_zalloc(sizeof *g);
    g->cfg = *cfg;
    snprintf(g->gateway_id, sizeof g->gateway_id, "%s", cfg->gateway_id != NULL ? cfg->gateway_id : "");
    g->cfg.gateway_id = g->gateway_id;
    return g;
}

void gate_free(struct gate *g)
{
    mem_free(g);
}

void gate_stats(struct gate *g, struct gate_stats *out)
{
    out->refused_admission = atomic_load(&g->refused_admission);
    out->shed_overloaded = atomic_load(&g->shed_overloaded);
    out->dropped_expired = atomic_load(&g->dropped_expired);
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

/* Denials and failed logins go to the audit trail through the sink, which aggregates repeats. */
static void audit_refusal(struct gate *g, struct gate_ctx *ctx, int class_uid, int status,
                          const char *message)
{
    if (g->cfg.sink == NULL) {
        return;
    }
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
                             .replica_id = g->cfg.replica_id,
                             .gateway_id = g->gateway_id};
    audit_sink_record(g->cfg.sink, &r);
}

/* How long the call may still wait, in ms, capped at @cap; 0 when its deadline has passed. */
static uint64_t wait_budget(struct grpc_call *call, uint64_t cap)
{
    uint64_t deadline = grpc_call_deadline_ms(call);
    if (deadline == 0) {
        return cap;
    }
    uint64_t now = clock_mono_ms(clock_system());
    if (now >= deadline) {
        return 0;
    }
    return deadline - now < cap ? deadline - now : cap;
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
    /* Work nobody waits for any more is not done. */
    uint64_t budget = wait_budget(ctx->call, POOL_WAIT_MS);
    if (budget == 0 || grpc_call_cancelled(ctx->call)) {
        atomic_fetch_add(&g->dropped_expired, 1);
        grpc_call_finish_async(ctx->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                               "the deadline passed while the call waited for a worker; it did not run",
                               NULL);
        mem_free(p);
        return;
    }
    int rv = store_pool_acquire(g->cfg.pool, (unsigned)budget, &ctx->cl);
    if (rv != 0) {
        grpc_call_finish_async(ctx->call, GRPC_STATUS_UNAVAILABLE,
                               "the replica is overloaded: no store connection free", NULL);
        mem_free(p);
        return;
    }
    char msg[GERR_MSG_SIZE] = "";
    if (ctx->rule->action != AZ_TOKEN) {
        bool bad_credential = false;
        rv = authn_call(g->cfg.authn, ctx->cl, grpc_call_metadata(ctx->call, "authorization"),
                        grpc_call_peer_cert(ctx->call), ctx->now_ms, &ctx->who, msg, &bad_credential);
        if (rv != 0) {
            int status = rv == GERR_UNAUTH ? GRPC_STATUS_UNAUTHENTICATED : grpc_status_from_gerr(rv);
            if (rv == GERR_UNAUTH && bad_credential) {
                /* Only credentials that can never become valid count against the source. */
                admission_failed(g->cfg.admission, p->host, p->has_digest ? p->digest : NULL, ctx->now_ms);
            }
            if (rv == GERR_UNAUTH) {
                audit_refusal(g, ctx, AUDIT_CLASS_AUTHENTICATION, status, msg);
            }
            grpc_call_finish_async(ctx->call, status, msg, NULL);
            goto out;
        }
        if (p->has_digest) {
            admission_verified(g->cfg.admission, p->digest, ctx->now_ms);
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
        audit_refusal(g, ctx, AUDIT_CLASS_API_ACTIVITY, GRPC_STATUS_PERMISSION_DENIED, ctx->decision.why);
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
    gate_release_store(ctx);
    mem_free(p);
}

void gate_release_store(struct gate_ctx *ctx)
{
    if (ctx->cl != NULL) {
        store_pool_release(ctx->gate->cfg.pool, ctx->cl);
        ctx->cl = NULL;
    }
}

/* The digest of the call's credential (authorization header, else client certificate). */
static bool credential_digest(struct grpc_call *call, uint8_t out[ADMISSION_DIGEST_SIZE])
{
    const char *authorization = grpc_call_metadata(call, "authorization");
    if (authorization != NULL) {
        return admission_digest(authorization, NULL, 0, out);
    }
    X509 *cert = grpc_call_peer_cert(call);
    unsigned char *der = NULL;
    int n = cert != NULL ? i2d_X509(cert, &der) : -1;
    bool ok = n > 0 && admission_digest(NULL, der, (size_t)n, out);
    OPENSSL_free(der);
    return ok;
}

/* A call refused at admission: its answer now, on the loop thread, and its audit record. */
static void refuse_now(struct gate *g, struct grpc_call *call, int status, const char *why, int64_t now_ms)
{
    atomic_fetch_add(&g->refused_admission, 1);
    if (g->cfg.sink != NULL) {
        bool auth = status == GRPC_STATUS_UNAUTHENTICATED;
        struct audit_record r = {.time_ms = now_ms,
                                 .class_uid = auth ? AUDIT_CLASS_AUTHENTICATION : AUDIT_CLASS_API_ACTIVITY,
                                 .activity = auth ? AUDIT_CREATE : audit_activity_of(grpc_call_method(call)),
                                 .actor_kind = "unknown",
                                 .operation = grpc_call_method(call),
                                 .success = false,
                                 .status_code = status,
                                 .message = why,
                                 .source = grpc_call_peer(call),
                                 .replica_id = g->cfg.replica_id,
                                 .gateway_id = g->gateway_id};
        audit_sink_record(g->cfg.sink, &r);
    }
    grpc_call_finish(call, status, why, NULL);
}

static void on_start(struct grpc_call *call, void *data)
{
    struct gate *g = data;
    const struct authz_rule *rule = authz_rule_find(grpc_call_method(call));
    struct clock *clk = clock_system();
    int64_t now = (int64_t)clk->wall_ms(clk);
    struct pending *p = mem_zalloc(sizeof *p);
    p->g = g;
    p->ctx.call = call;
    p->ctx.gate = g;
    admission_source_host(grpc_call_peer(call), p->host, sizeof p->host);
    int status = 0;
    char why[GERR_MSG_SIZE];
    enum admission_class cls;
    if (rule == NULL || rule->action == AZ_TOKEN) {
        cls = admission_anonymous(g->cfg.admission, p->host, now, &status, why, sizeof why);
    } else {
        p->has_digest = credential_digest(call, p->digest);
        cls = admission_check(g->cfg.admission, p->host, p->has_digest ? p->digest : NULL, now, &status, why,
                              sizeof why);
    }
    if (cls == ADMIT_REFUSE) {
        refuse_now(g, call, status, why, now);
        mem_free(p);
        return;
    }
    grpc_call_ref(call); /* dropped by grpc_call_finish_async */
    int rv = jobs_submit(g->cfg.jobs, cls == ADMIT_KNOWN ? 0 : 1, run, p);
    if (rv != 0) {
        atomic_fetch_add(&g->shed_overloaded, 1);
        mem_free(p);
        grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE,
                         rv == GERR_TOOBIG
                             ? "the replica is overloaded (its queue of calls is full); retry with "
                               "backoff, or through another replica"
                             : "the replica is stopping",
                         NULL);
        grpc_call_unref(call);
    }
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
