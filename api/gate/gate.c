/* Authentication, authorization and dispatch for every gantry.v1 call (api/gate/gate.h). */
#include "api/gate/gate.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#include "api/gate/audit.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "server/grpc/arena.h"

#define MAX_ROUTES 128u

struct route {
    const struct authz_rule *rule;
    gate_impl_fn fn;
    void *data;
};

/* The longest a call waits for a store client when it has no deadline of its own. */
#define POOL_WAIT_MS 5000u
/* The longest a forwarded call waits for its answer when it has no deadline of its own. */
#define FORWARD_WAIT_MS 30000u

/* Freed pendings a gate keeps for reuse (see struct gate). None under AddressSanitizer, so a use
 * after pending_free is still reported there. */
#if defined(__SANITIZE_ADDRESS__)
#define GATE_PENDING_CACHE 0u
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GATE_PENDING_CACHE 0u
#endif
#endif
#ifndef GATE_PENDING_CACHE
#define GATE_PENDING_CACHE 16u
#endif

struct gate {
    struct gate_config cfg;
    char gateway_id[32];
    struct route routes[MAX_ROUTES];
    unsigned n_routes;
    atomic_uint_fast64_t refused_admission, shed_overloaded, dropped_expired;
    atomic_uint_fast64_t forwarded_out, forwarded_in, forward_fallbacks;
    /* Freed pendings kept for the next calls: a pending holds a whole principal (about 90 KiB, over
     * lib/mem.c's mmap threshold), so a fresh one per call was an mmap, its page faults and an
     * munmap with TLB shootdowns (docs/benchmarks.md, issue 17). */
    pthread_mutex_t free_mu;
    struct pending *free_list[GATE_PENDING_CACHE + 1]; /* + 1: no zero-length array */
    unsigned n_free;
};

struct pending {
    struct gate *g;
    struct gate_ctx ctx;
    bool has_digest;
    uint8_t digest[ADMISSION_DIGEST_SIZE];
    char host[64];
    char *authorization; /* gate_call_local: the credential (heap, wiped and freed with the pending) */
};

/* A zeroed pending, from @g's cache when it has one. */
static struct pending *pending_new(struct gate *g)
{
    pthread_mutex_lock(&g->free_mu);
    struct pending *p = g->n_free > 0 ? g->free_list[--g->n_free] : NULL;
    pthread_mutex_unlock(&g->free_mu);
    if (p == NULL) {
        return mem_zalloc(sizeof *p);
    }
    /* Everything but the principal's bindings array (most of the 90 KiB): only the first
     * n_bindings (now 0) of it are ever read, and each call writes those it sets. */
    size_t b0 = offsetof(struct pending, ctx.who.bindings), b1 = b0 + sizeof p->ctx.who.bindings;
    memset(p, 0, b0);
    memset((char *)p + b1, 0, sizeof *p - b1);
    return p;
}

static void pending_free(struct pending *p)
{
    struct gate *g = p->g;
    if (p->authorization != NULL) {
        explicit_bzero(p->authorization, strlen(p->authorization));
        mem_free(p->authorization);
        p->authorization = NULL;
    }
#if GATE_PENDING_CACHE > 0
    pthread_mutex_lock(&g->free_mu);
    if (g->n_free < GATE_PENDING_CACHE) {
        g->free_list[g->n_free++] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&g->free_mu);
#else
    (void)g;
#endif
    mem_free(p);
}

struct gate *gate_new(const struct gate_config *cfg)
{
    struct gate *g = mem_zalloc(sizeof *g);
    pthread_mutex_init(&g->free_mu, NULL);
    g->cfg = *cfg;
    snprintf(g->gateway_id, sizeof g->gateway_id, "%s", cfg->gateway_id != NULL ? cfg->gateway_id : "");
    g->cfg.gateway_id = g->gateway_id;
    return g;
}

void gate_free(struct gate *g)
{
    if (g == NULL) {
        return;
    }
    for (unsigned i = 0; i < g->n_free; i++) {
        mem_free(g->free_list[i]);
    }
    pthread_mutex_destroy(&g->free_mu);
    mem_free(g);
}

void gate_stats(struct gate *g, struct gate_stats *out)
{
    out->refused_admission = atomic_load(&g->refused_admission);
    out->shed_overloaded = atomic_load(&g->shed_overloaded);
    out->dropped_expired = atomic_load(&g->dropped_expired);
    out->forwarded_out = atomic_load(&g->forwarded_out);
    out->forwarded_in = atomic_load(&g->forwarded_in);
    out->forward_fallbacks = atomic_load(&g->forward_fallbacks);
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

/* The caller as the forward message carries it. Strings point into @who; scopes into @scopes. */
static void principal_to_wire(const struct authn_principal *who, Gantry__Internal__V1__ForwardPrincipal *pr,
                              Gantry__Internal__V1__ForwardBinding *bs,
                              Gantry__Internal__V1__ForwardBinding **bp, char **scopes)
{
    gantry__internal__v1__forward_principal__init(pr);
    pr->id = (char *)who->id;
    pr->name = (char *)who->name;
    pr->kind = (char *)who->kind;
    pr->via = (char *)who->via;
    for (size_t i = 0; i < who->n_bindings; i++) {
        gantry__internal__v1__forward_binding__init(&bs[i]);
        bs[i].role = (char *)authz_role_name(who->bindings[i].role);
        bs[i].namespace_ = (char *)who->bindings[i].ns;
        scopes[i] = who->bindings[i].scope.set ? authz_scope_json(&who->bindings[i].scope) : NULL;
        bs[i].scope = scopes[i] != NULL ? scopes[i] : "";
        bp[i] = &bs[i];
    }
    pr->n_bindings = who->n_bindings;
    pr->bindings = bp;
}

static bool principal_from_wire(const Gantry__Internal__V1__ForwardPrincipal *pr, struct authn_principal *who)
{
    memset(who, 0, sizeof *who);
    if (pr == NULL) {
        return true; /* a call that needs no credential (Cluster/Join) */
    }
    snprintf(who->id, sizeof who->id, "%s", pr->id);
    snprintf(who->name, sizeof who->name, "%s", pr->name);
    snprintf(who->kind, sizeof who->kind, "%s", pr->kind);
    snprintf(who->via, sizeof who->via, "%s", pr->via);
    for (size_t i = 0; i < pr->n_bindings && who->n_bindings < AUTHN_MAX_BINDINGS; i++) {
        struct authz_binding *b = &who->bindings[who->n_bindings];
        b->role = authz_role_parse(pr->bindings[i]->role);
        snprintf(b->ns, sizeof b->ns, "%s", pr->bindings[i]->namespace_);
        if (authz_scope_parse(pr->bindings[i]->scope, &b->scope) != 0) {
            return false;
        }
        if (b->role != 0) {
            who->n_bindings++;
        }
    }
    return true;
}

/* Send the call to the replica at @leader and answer the client with what it answers. Returns
 * false when that failed and the call is to run here (ctx->idem_key/idem_fresh say how to settle
 * a forward that may have run). */
static bool forward(struct gate *g, struct pending *p, const char *leader, const ProtobufCMessage *req)
{
    struct gate_ctx *ctx = &p->ctx;
    ctx->idem_buf[0] = '~';
    rand_uuid7(ctx->idem_buf + 1);
    ctx->idem_key = ctx->idem_buf;
    ctx->idem_fresh = true;
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *bytes = mem_alloc(len > 0 ? len : 1);
    protobuf_c_message_pack(req, bytes);
    Gantry__Internal__V1__ForwardPrincipal pr;
    Gantry__Internal__V1__ForwardBinding bs[AUTHN_MAX_BINDINGS], *bp[AUTHN_MAX_BINDINGS];
    char *scopes[AUTHN_MAX_BINDINGS] = {NULL};
    principal_to_wire(&ctx->who, &pr, bs, bp, scopes);
    fwd_request fr = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    fr.method = (char *)grpc_call_method(ctx->call);
    fr.request.data = bytes;
    fr.request.len = len;
    fr.principal = ctx->rule->action == AZ_TOKEN ? NULL : &pr;
    fr.peer = (char *)grpc_call_peer(ctx->call);
    uint64_t budget = wait_budget(ctx->call, FORWARD_WAIT_MS);
    fr.timeout_ms = grpc_call_deadline_ms(ctx->call) != 0 ? (uint32_t)budget : 0;
    fr.idem_key = ctx->idem_buf;
    fr.origin_replica = g->cfg.replica_id;
    fwd_response *resp = NULL;
    bool sent = false;
    char err[GERR_MSG_SIZE] = "";
    int rv = budget == 0
                 ? GERR_TIMEOUT
                 : fwd_client_call(g->cfg.fwd.client, leader, &fr, (unsigned)budget, &resp, &sent, err);
    mem_free(bytes);
    for (size_t i = 0; i < ctx->who.n_bindings; i++) {
        mem_free(scopes[i]);
    }
    if (rv == 0) {
        atomic_fetch_add(&g->forwarded_out, 1);
        grpc_call_finish_async_bytes(ctx->call, resp->status, resp->message,
                                     resp->status == GRPC_STATUS_OK ? resp->reply.data : NULL,
                                     resp->reply.len);
        gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
        return true;
    }
    if (wait_budget(ctx->call, FORWARD_WAIT_MS) == 0) {
        grpc_call_finish_async(
            ctx->call, GRPC_STATUS_DEADLINE_EXCEEDED,
            sent ? "the deadline passed while the leader's replica ran the call: its outcome "
                   "is unknown (retry with the same request_id to settle it)"
                 : "the deadline passed before the call could be forwarded; it did not run",
            NULL);
        return true;
    }
    /* The leader's replica cannot be reached: run it here (this replica's writer still reaches the
     * leader's node). A forward that may have run is settled by its key. */
    atomic_fetch_add(&g->forward_fallbacks, 1);
    ctx->idem_fresh = !sent;
    LOG_WARN("gate: forwarding %s to %s failed (%s); running it here%s", fr.method, leader, err,
             sent ? ", its key looked up first" : "");
    return false;
}

static void forwarded_done(void *data, int status, const char *message, const uint8_t *reply, size_t len)
{
    fwd_reply(data, status, message, reply, len);
}

static void run(void *arg);

void gate_forwarded(struct gate *g, fwd_request *req, struct fwd_reply *reply)
{
    struct pending *p = pending_new(g);
    p->g = g;
    p->ctx.gate = g;
    p->ctx.forwarded = true;
    atomic_fetch_add(&g->forwarded_in, 1);
    if (!principal_from_wire(req->principal, &p->ctx.who) || req->method == NULL) {
        fwd_reply(reply, GRPC_STATUS_INTERNAL, "a forwarded call carried a malformed principal", NULL, 0);
        goto out;
    }
    snprintf(p->ctx.idem_buf, sizeof p->ctx.idem_buf, "%s", req->idem_key != NULL ? req->idem_key : "");
    p->ctx.idem_key = p->ctx.idem_buf[0] != '\0' ? p->ctx.idem_buf : NULL;
    /* Never fresh here: the forwarding replica runs the call itself if it loses the connection
     * after sending (forward()), so this copy looks its key up, inside a transaction that holds
     * the database's write lock (BEGIN IMMEDIATE), and whichever copy commits second replays. */
    p->ctx.idem_fresh = false;
    uint64_t deadline = req->timeout_ms != 0 ? clock_mono_ms(clock_system()) + req->timeout_ms : 0;
    struct grpc_call *call =
        g->cfg.fwd.server != NULL
            ? grpc_call_new_virtual(g->cfg.fwd.server, req->method, req->request.data, req->request.len,
                                    req->peer, deadline, forwarded_done, reply)
            : NULL;
    if (call == NULL) {
        fwd_reply(reply, GRPC_STATUS_UNIMPLEMENTED, "this replica does not run that method for others", NULL,
                  0);
        goto out;
    }
    p->ctx.call = call;
    gantry__internal__v1__forward_request__free_unpacked(req, NULL);
    if (jobs_submit(g->cfg.jobs, 0, run, p) != 0) {
        atomic_fetch_add(&g->shed_overloaded, 1);
        grpc_call_finish_async(call, GRPC_STATUS_UNAVAILABLE,
                               "the leader's replica is overloaded; retry with backoff", NULL);
        pending_free(p);
    }
    return;
out:
    gantry__internal__v1__forward_request__free_unpacked(req, NULL);
    pending_free(p);
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
        pending_free(p);
        return;
    }
    int rv = store_pool_acquire(g->cfg.pool, (unsigned)budget, &ctx->cl);
    if (rv != 0) {
        grpc_call_finish_async(ctx->call, GRPC_STATUS_UNAVAILABLE,
                               "the replica is overloaded: no store connection free", NULL);
        pending_free(p);
        return;
    }
    char msg[GERR_MSG_SIZE] = "";
    if (ctx->forwarded) {
        /* Authenticated by the replica that forwarded it. */
        ctx->caller = (struct authz_caller){
            .principal_id = ctx->who.id, .bindings = ctx->who.bindings, .n_bindings = ctx->who.n_bindings};
    } else if (ctx->rule->action != AZ_TOKEN) {
        bool bad_credential = false;
        const char *authorization =
            p->authorization != NULL ? p->authorization : grpc_call_metadata(ctx->call, "authorization");
        rv = authn_call(g->cfg.authn, ctx->cl, authorization, grpc_call_peer_cert(ctx->call), ctx->now_ms,
                        &ctx->who, msg, &bad_credential);
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
        /* Two statements: the order in which a call's arguments are evaluated is unspecified, and
         * @why was read (NULL) before the call that sets it, so the reason never reached the client. */
        int status = grpc_call_request_error(ctx->call, &why);
        grpc_call_finish_async(ctx->call, status, why, NULL);
        goto out;
    }
    authz_decide(ctx->rule, &ctx->caller, req, &ctx->decision);
    if (!ctx->forwarded) {
        /* Counted where the client called (a forwarded copy is not counted again). */
        grpc_call_set_tag(ctx->call, nsstats_tag(g->cfg.nsstats, ctx->decision.ns, path));
    }
    if (ctx->decision.invalid) {
        /* Malformed, not refused: no namespace to decide in (a platform_admin's call reaches the
         * handler, which answers the same). */
        grpc_call_finish_async(ctx->call, GRPC_STATUS_INVALID_ARGUMENT, ctx->decision.why, NULL);
        goto out;
    }
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
    /* A mutation runs beside the dqlite leader: forwarded there unless this replica is it. Not
     * Cluster/Join (the one AZ_TOKEN method): it runs where it arrived, because only a replica
     * holding the CA key can sign the joiner's certificate, and one that does not relays it to one
     * that does (api/services/cluster_svc.c); its write goes through this replica's writer. */
    char leader[256];
    if (g->cfg.fwd.client != NULL && !ctx->forwarded && ctx->rule->mutating &&
        ctx->rule->action != AZ_TOKEN && g->cfg.fwd.leader_address(g->cfg.fwd.data, leader, sizeof leader)) {
        gate_release_store(ctx);
        if (forward(g, p, leader, req)) {
            goto out;
        }
        budget = wait_budget(ctx->call, POOL_WAIT_MS);
        if (budget == 0 || store_pool_acquire(g->cfg.pool, (unsigned)budget, &ctx->cl) != 0) {
            grpc_call_finish_async(ctx->call, GRPC_STATUS_UNAVAILABLE,
                                   "the replica is overloaded: no store connection free", NULL);
            goto out;
        }
    }
    route->fn(ctx, route->data);
out:
    gate_release_store(ctx);
    pending_free(p);
}

int gate_acquire_store(struct gate_ctx *ctx)
{
    if (ctx->cl != NULL) {
        return 0;
    }
    uint64_t budget = wait_budget(ctx->call, POOL_WAIT_MS);
    if (budget == 0) {
        return GERR_TIMEOUT;
    }
    return store_pool_acquire(ctx->gate->cfg.pool, (unsigned)budget, &ctx->cl);
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

/* A call refused at admission: its answer now, on the loop thread, and its audit record. Every
 * admission refusal is a failed authentication (OCSF 3002), whatever its status: the caller was
 * never authenticated, and RESOURCE_EXHAUSTED ("too many failed authentication attempts", "too many
 * calls without verified credentials") refuses an attempt to authenticate as surely as
 * UNAUTHENTICATED does. An auditor counting a source's refused logons finds them in one class. */
static void audit_admission_refusal(struct gate *g, struct grpc_call *call, int status, const char *why,
                                    int64_t now_ms)
{
    atomic_fetch_add(&g->refused_admission, 1);
    if (g->cfg.sink != NULL) {
        struct audit_record r = {.time_ms = now_ms,
                                 .class_uid = AUDIT_CLASS_AUTHENTICATION,
                                 .activity = AUDIT_CREATE,
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
}

static void refuse_now(struct gate *g, struct grpc_call *call, int status, const char *why, int64_t now_ms)
{
    audit_admission_refusal(g, call, status, why, now_ms);
    grpc_call_finish(call, status, why, NULL);
}

static void on_start(struct grpc_call *call, void *data)
{
    struct gate *g = data;
    const struct authz_rule *rule = authz_rule_find(grpc_call_method(call));
    struct clock *clk = clock_system();
    int64_t now = (int64_t)clk->wall_ms(clk);
    struct pending *p = pending_new(g);
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
        pending_free(p);
        return;
    }
    grpc_call_ref(call); /* dropped by grpc_call_finish_async */
    int rv = jobs_submit(g->cfg.jobs, cls == ADMIT_KNOWN ? 0 : 1, run, p);
    if (rv != 0) {
        atomic_fetch_add(&g->shed_overloaded, 1);
        pending_free(p);
        grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE,
                         rv == GERR_TOOBIG
                             ? "the replica is overloaded (its queue of calls is full); retry with "
                               "backoff, or through another replica"
                             : "the replica is stopping",
                         NULL);
        grpc_call_unref(call);
    }
}

/* ---- Bidi calls: authorized by their first message (gate.h). */

struct gate_bidi {
    pthread_mutex_t mu;
    gate_bidi_message_fn fn; /* NULL: nobody takes further messages */
    void *data;
    bool first_seen;
};

static void bidi_start(struct grpc_call *call, void *data)
{
    (void)data;
    struct gate_bidi *b = arena_alloc(grpc_call_arena(call), sizeof *b); /* freed with the call */
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    grpc_call_set_data(call, b);
}

static void bidi_message(struct grpc_call *call, const ProtobufCMessage *msg, void *data)
{
    struct gate_bidi *b = grpc_call_get_data(call);
    if (!b->first_seen) {
        b->first_seen = true;
        if (msg == NULL) {
            grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                             "the stream ended before its first message, which says what to start", NULL);
            return;
        }
        grpc_call_stash_request(call, msg);
        grpc_call_pause_input(call); /* until the implementation attaches and resumes it */
        on_start(call, data);
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (b->fn != NULL) {
        b->fn(call, msg, b->data);
    }
    pthread_mutex_unlock(&b->mu);
}

void gate_bidi_attach(struct gate_ctx *ctx, gate_bidi_message_fn fn, void *data)
{
    struct gate_bidi *b = grpc_call_get_data(ctx->call);
    pthread_mutex_lock(&b->mu);
    b->fn = fn;
    b->data = data;
    pthread_mutex_unlock(&b->mu);
}

void gate_bidi_detach(struct grpc_call *call)
{
    struct gate_bidi *b = grpc_call_get_data(call);
    pthread_mutex_lock(&b->mu);
    b->fn = NULL;
    b->data = NULL;
    pthread_mutex_unlock(&b->mu);
}

int gate_call_local(struct gate *g, const char *path, const uint8_t *request, size_t len,
                    const char *authorization, const char *peer, uint64_t timeout_ms,
                    grpc_virtual_done_cb done, void *data)
{
    const struct authz_rule *rule = authz_rule_find(path);
    uint64_t deadline = timeout_ms != 0 ? clock_mono_ms(clock_system()) + timeout_ms : 0;
    struct grpc_call *call =
        rule != NULL && g->cfg.fwd.server != NULL
            ? grpc_call_new_virtual(g->cfg.fwd.server, path, request, len, peer, deadline, done, data)
            : NULL;
    if (call == NULL) {
        return GERR_INVAL;
    }
    struct clock *clk = clock_system();
    int64_t now = (int64_t)clk->wall_ms(clk);
    struct pending *p = pending_new(g);
    p->g = g;
    p->ctx.call = call;
    p->ctx.gate = g;
    p->authorization = mem_strdup(authorization != NULL ? authorization : "");
    admission_source_host(peer, p->host, sizeof p->host);
    int status = 0;
    char why[GERR_MSG_SIZE];
    enum admission_class cls;
    if (rule->action == AZ_TOKEN) {
        cls = admission_anonymous(g->cfg.admission, p->host, now, &status, why, sizeof why);
    } else {
        p->has_digest = p->authorization[0] != '\0' && admission_digest(p->authorization, NULL, 0, p->digest);
        cls = admission_check(g->cfg.admission, p->host, p->has_digest ? p->digest : NULL, now, &status, why,
                              sizeof why);
    }
    if (cls == ADMIT_REFUSE) {
        audit_admission_refusal(g, call, status, why, now);
        pending_free(p);
        grpc_call_finish_async(call, status, why, NULL); /* drops the call's one reference */
        return 0;
    }
    if (jobs_submit(g->cfg.jobs, cls == ADMIT_KNOWN ? 0 : 1, run, p) != 0) {
        atomic_fetch_add(&g->shed_overloaded, 1);
        pending_free(p);
        grpc_call_finish_async(call, GRPC_STATUS_UNAVAILABLE, "the replica is overloaded; retry with backoff",
                               NULL);
    }
    return 0;
}

static void count_outcome(void *data, const struct grpc_call *call, int status)
{
    struct gate *g = data;
    nsstats_count(g->cfg.nsstats, grpc_call_tag(call), status);
}

int gate_register(struct gate *g, struct grpc_server *s, const ProtobufCServiceDescriptor *const *services,
                  char *errmsg)
{
    if (g->cfg.nsstats != NULL) {
        grpc_server_set_outcome_observer(s, count_outcome, g);
    }
    int rv = authz_table_check(services, errmsg);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; services[i] != NULL; i++) {
        for (unsigned m = 0; m < services[i]->n_methods; m++) {
            const ProtobufCMethodDescriptor *md = &services[i]->methods[m];
            char path[256];
            snprintf(path, sizeof path, "/%s/%s", services[i]->name, md->name);
            /* protobuf-c's method descriptors do not say which side streams, so the streaming
             * methods are named here: two bidi calls (authorized by their first message, above)
             * and the server streams; every other method is unary. */
            bool bidi = strcmp(path, "/gantry.v1.Sandboxes/Exec") == 0 ||
                        strcmp(path, "/gantry.v1.Sandboxes/PortForward") == 0;
            bool streaming = strcmp(path, "/gantry.v1.Cluster/Backup") == 0 ||
                             strcmp(path, "/gantry.v1.Sandboxes/Watch") == 0 ||
                             strcmp(path, "/gantry.v1.Events/Watch") == 0 ||
                             strcmp(path, "/gantry.v1.Sandboxes/Logs") == 0 ||
                             strcmp(path, "/gantry.v1.Audit/Export") == 0;
            struct grpc_handler h = {
                .kind = streaming ? GRPC_SERVER_STREAMING : GRPC_UNARY, .on_start = on_start, .data = g};
            if (bidi) {
                h = (struct grpc_handler){.kind = GRPC_BIDI_STREAMING,
                                          .on_start = bidi_start,
                                          .on_message = bidi_message,
                                          .data = g};
            }
            rv = grpc_server_handle(s, services[i], md->name, &h);
            if (rv != 0) {
                gerr_set(errmsg, "gate: cannot route %s", path);
                return rv;
            }
        }
    }
    return 0;
}
