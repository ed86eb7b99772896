/* gantry.v1.Policies (api/services/policies_svc.h). */
#include "api/services/policies_svc.h"

#include <stddef.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/gate/gate.h"
#include "api/rules/egress.h"
#include "api/rules/policy.h"
#include "api/services/model_read.h"
#include "lib/mem.h"

#define POL_COLS "policy, resource_version, created_by, updated_at_ms"

/* --- storage --- */

/* The stored policy of row @i of @rows (POL_COLS), with its meta (pointing into @meta). */
static Gantry__V1__Policy *policy_from_row(const struct proto_rows *rows, size_t i, const char *ns,
                                           Gantry__V1__ObjectMeta *meta)
{
    const struct proto_value *b = proto_rows_at(rows, i, 0);
    Gantry__V1__Policy *p =
        b->type == PROTO_BLOB ? gantry__v1__policy__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s) : NULL;
    if (p == NULL) {
        return NULL;
    }
    if (meta != NULL) {
        gantry__v1__object_meta__init(meta);
        meta->namespace_ = (char *)ns;
        meta->name = (char *)ns;
        meta->resource_version = (uint64_t)proto_rows_at(rows, i, 1)->u.i;
        const struct proto_value *by = proto_rows_at(rows, i, 2);
        meta->created_by = by->type == PROTO_TEXT ? (char *)by->u.b.s : "";
        meta->updated_at_ms = proto_rows_at(rows, i, 3)->u.i;
    }
    return p;
}

/* Read the policy of @ns through @tx (or @cl when @tx is NULL): *@out NULL when none is stored. */
static int policy_read(struct store_tx *tx, struct store_client *cl, const char *ns, struct proto_rows *rows,
                       Gantry__V1__Policy **out, Gantry__V1__ObjectMeta *meta)
{
    struct proto_value p[] = {proto_text(ns)};
    const char *sql = "SELECT " POL_COLS " FROM policies WHERE namespace = ?";
    int rv = tx != NULL ? store_tx_query(tx, sql, p, 1, rows) : store_client_query(cl, sql, p, 1, rows);
    *out = NULL;
    if (rv == 0 && rows->n_rows > 0) {
        *out = policy_from_row(rows, 0, ns, meta);
        if (*out == NULL) {
            if (tx != NULL) {
                gerr_set(store_tx_errmsg(tx), "the stored policy of \"%.63s\" does not decode", ns);
            }
            rv = GERR_INTERNAL;
        }
    }
    return rv;
}

int policies_load_tx(struct store_tx *tx, const char *ns, Gantry__V1__Policy **gateway,
                     Gantry__V1__Policy **ns_policy)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    *ns_policy = NULL;
    int rv = policy_read(tx, NULL, "", &rows, gateway, NULL);
    proto_rows_close(&rows);
    if (rv == 0 && *gateway == NULL) {
        *gateway = policy_rules_default();
    }
    if (rv == 0 && ns[0] != '\0') {
        proto_rows_init(&rows, 0);
        rv = policy_read(tx, NULL, ns, &rows, ns_policy, NULL);
        proto_rows_close(&rows);
    }
    if (rv != 0) {
        policy_rules_free(*gateway);
        *gateway = NULL;
    }
    return rv;
}

/* --- enforcement --- */

int policies_check_sandbox(struct store_tx *tx, const char *ns, const Gantry__V1__SandboxSpec *spec,
                           const char *driver, char *why, size_t len)
{
    why[0] = '\0';
    Gantry__V1__Policy *g = NULL, *n = NULL;
    int rv = policies_load_tx(tx, ns, &g, &n);
    if (rv != 0) {
        snprintf(why, len, "%s", store_tx_errmsg(tx));
        return rv;
    }
    rv = policy_rules_check_sandbox(g, n, ns, spec, driver, why, len);
    policy_rules_free(g);
    policy_rules_free(n);
    return rv;
}

/* --- handlers --- */

static void read_fail(struct gate_ctx *ctx, int rv, const char *what)
{
    gate_fail(ctx, grpc_status_from_gerr(rv), "%s: %s", what,
              ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
}

/* NOT_FOUND answered when @ns is not "" and no such namespace exists. */
static bool ns_exists(struct gate_ctx *ctx, const char *ns)
{
    if (ns[0] == '\0') {
        return true;
    }
    struct proto_value p[] = {proto_text(ns)};
    int64_t n = 0;
    int rv = store_client_query_int(ctx->cl, "SELECT count(*) FROM namespaces WHERE name = ?", p, 1, &n);
    if (rv != 0) {
        read_fail(ctx, rv, "policy");
    } else if (n == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", ns);
    }
    return rv == 0 && n > 0;
}

/* --- the model (api/services/kind_model.h) --- */

#define POL_MODEL_COLS POL_COLS ", namespace"
#define POL_MODEL_NS   4 /* the namespace among POL_MODEL_COLS: the policy's name and its events' key */

/* Row @i of POL_MODEL_COLS packed as Get returns it. */
static uint8_t *pol_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    const struct proto_value *ns = proto_rows_at(r, i, POL_MODEL_NS);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = policy_from_row(r, i, ns->type == PROTO_TEXT ? ns->u.b.s : "", &meta);
    if (p == NULL) {
        return NULL;
    }
    p->meta = &meta;
    uint8_t *out = kind_model_pack(&p->base, len);
    p->meta = NULL;
    policy_rules_free(p);
    return out;
}

struct kind_model *policies_model_new(void)
{
    struct kind_model_config cfg = {.kind = "Policy",
                                    .what = "policy",
                                    .table = "policies",
                                    .cols = POL_MODEL_COLS,
                                    .n_cols = 5,
                                    .ns_col = POL_MODEL_NS,
                                    .name_col = POL_MODEL_NS,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = POL_MODEL_NS,
                                    .key_where = "namespace = ?",
                                    .key = KIND_MODEL_KEY_NS,
                                    /* deleting a namespace deletes its policy without a Policy event */
                                    .parent_kind = "Namespace",
                                    .parent_key = KIND_MODEL_KEY_NS,
                                    .parent_col = POL_MODEL_NS,
                                    .parent_where = "namespace = ?",
                                    .desc = &gantry__v1__policy__descriptor,
                                    .pack = pol_pack_row};
    return kind_model_new(&cfg);
}

struct ns_seen {
    const char *name;
    bool found;
    uint64_t rev;
};

static void ns_seen_under_lock(const struct kind_model_view *v, void *arg)
{
    struct ns_seen *a = arg;
    a->rev = v->rev;
    a->found = kind_model_find(v, "", a->name) != NULL;
}

static void not_set(struct gate_ctx *ctx, const char *ns)
{
    if (ns[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND,
                  "no gateway policy is set (the built-in default allows everything; GetEffective shows it)");
    } else {
        gate_fail(
            ctx, GRPC_STATUS_NOT_FOUND,
            "no policy is set for namespace \"%.63s\" (the gateway policy applies; GetEffective shows it)",
            ns);
    }
}

/* Get from the models as the read options ask: true when the call was answered. The namespace's
 * existence comes from the namespaces model at the same revision or later. */
static bool pol_get_model(const struct policies_svc *svc, struct gate_ctx *ctx,
                          const Gantry__V1__GetPolicyRequest *req)
{
    uint64_t need = 0, rev = 0;
    bool answered = false;
    if (!kind_model_wait(&svc->reads, ctx, req->read, &need, &answered)) {
        return answered;
    }
    struct ns_seen seen = {.name = req->namespace_, .found = req->namespace_[0] == '\0'};
    if (!seen.found && !kind_model_read(svc->namespaces, need, ns_seen_under_lock, &seen)) {
        return false;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (seen.found &&
        !kind_model_get(svc->reads.model, need, req->namespace_, req->namespace_, &bytes, &len, &rev)) {
        return false;
    }
    char trailer[24];
    snprintf(trailer, sizeof trailer, "%" PRIu64, seen.found ? rev : seen.rev);
    grpc_call_set_trailer(ctx->call, MODEL_REVISION_TRAILER, trailer);
    if (!seen.found) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", req->namespace_);
    } else if (bytes == NULL) {
        not_set(ctx, req->namespace_);
    } else {
        grpc_call_finish_async_bytes(ctx->call, 0, NULL, bytes, len);
        mem_free(bytes);
    }
    return true;
}

static void pol_get(struct gate_ctx *ctx, void *data)
{
    const struct policies_svc *svc = data;
    const Gantry__V1__GetPolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    if (pol_get_model(svc, ctx, req) || !ns_exists(ctx, req->namespace_)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    int rv = policy_read(NULL, ctx->cl, req->namespace_, &rows, &p, &meta);
    if (rv != 0) {
        read_fail(ctx, rv, "get policy");
    } else if (p == NULL) {
        not_set(ctx, req->namespace_);
    } else {
        p->meta = &meta;
        grpc_call_finish_async(ctx->call, 0, NULL, &p->base);
        p->meta = NULL;
    }
    policy_rules_free(p);
    proto_rows_close(&rows);
}

/* Both layers for namespace @ns: the gateway policy (the stored one, else the built-in default)
 * and the namespace's (NULL when none is stored), with their metas. layers_close frees them. */
struct layers {
    struct proto_rows gr, nr;
    Gantry__V1__ObjectMeta gm, nm;
    Gantry__V1__Policy *stored_g, *n, *def;
    const Gantry__V1__Policy *g; /* stored_g or def */
};

static int layers_read(struct gate_ctx *ctx, const char *ns, struct layers *l)
{
    memset(l, 0, sizeof *l);
    proto_rows_init(&l->gr, 0);
    proto_rows_init(&l->nr, 0);
    int rv = policy_read(NULL, ctx->cl, "", &l->gr, &l->stored_g, &l->gm);
    if (rv == 0) {
        rv = policy_read(NULL, ctx->cl, ns, &l->nr, &l->n, &l->nm);
    }
    l->def = l->stored_g == NULL ? policy_rules_default() : NULL;
    l->g = l->stored_g != NULL ? l->stored_g : l->def;
    return rv != 0 ? rv : l->g == NULL ? GERR_NOMEM : 0;
}

static void layers_close(struct layers *l)
{
    policy_rules_free(l->stored_g);
    policy_rules_free(l->n);
    policy_rules_free(l->def);
    proto_rows_close(&l->gr);
    proto_rows_close(&l->nr);
}

/* Answer GetEffective for @ns from the gateway layer @g (@gv: its resource_version, 0 for the
 * built-in default) and the namespace's @n (NULL: none; @nv). */
static void effective_answer(struct gate_ctx *ctx, const char *ns, const Gantry__V1__Policy *g, uint64_t gv,
                             const Gantry__V1__Policy *n, uint64_t nv)
{
    Gantry__V1__Policy e;
    char also[128];
    policy_rules_effective(g, n, &e, also, sizeof also);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__ObjectMeta__AnnotationsEntry ann = GANTRY__V1__OBJECT_META__ANNOTATIONS_ENTRY__INIT;
    Gantry__V1__ObjectMeta__AnnotationsEntry *anns[] = {&ann};
    meta.namespace_ = (char *)ns;
    meta.name = (char *)ns;
    meta.resource_version = gv > nv ? gv : nv;
    if (also[0] != '\0') {
        ann.key = POLICY_ALSO_ENFORCED;
        ann.value = also;
        meta.n_annotations = 1;
        meta.annotations = anns;
    }
    e.meta = &meta;
    grpc_call_finish_async(ctx->call, 0, NULL, &e.base);
}

/* The egress decision for @in from the layers @g (@gv as above), @n (@nv) and the sandbox's own
 * policy @sp (NULL: none). */
static void decide_answer(struct gate_ctx *ctx, const struct egress_intent *in, const Gantry__V1__Policy *g,
                          uint64_t gv, const Gantry__V1__Policy *n, uint64_t nv, const Gantry__V1__Policy *sp)
{
    struct egress_decision d;
    egress_decide(g, n, sp, in, &d);
    Gantry__V1__EgressDecision out = GANTRY__V1__EGRESS_DECISION__INIT;
    out.allowed = d.allowed;
    out.layer = (char *)d.layer;
    out.rule = d.rule;
    out.policy_revision = strcmp(d.layer, "namespace") == 0 && n != NULL ? nv
                          : strcmp(d.layer, "gateway") == 0 && gv != 0   ? gv
                                                                         : 0;
    out.reason = d.reason;
    out.destination = d.destination;
    grpc_call_finish_async(ctx->call, 0, NULL, &out.base);
}

/* GetEffective and Decide (without a sandbox) from the models: the namespace's existence from the
 * namespaces model, then both layers under the policies model's lock, each at the call's read
 * index or later (neither call has read options: linearizable, as the store path). */
struct layers_arg {
    struct gate_ctx *ctx;
    const char *ns;
    const struct egress_intent *in; /* NULL: GetEffective */
    bool answered;
};

static void layers_model(const struct kind_model_view *v, void *arg)
{
    struct layers_arg *a = arg;
    const struct kind_model_entry *ge = kind_model_find(v, "", ""), *ne = kind_model_find(v, a->ns, a->ns);
    const Gantry__V1__Policy *stored_g = ge != NULL ? (const Gantry__V1__Policy *)ge->msg : NULL;
    const Gantry__V1__Policy *n = ne != NULL ? (const Gantry__V1__Policy *)ne->msg : NULL;
    Gantry__V1__Policy *def = stored_g == NULL ? policy_rules_default() : NULL;
    const Gantry__V1__Policy *g = stored_g != NULL ? stored_g : def;
    if (g == NULL) {
        return; /* no memory for the default: the store path answers */
    }
    uint64_t gv = stored_g != NULL && stored_g->meta != NULL ? stored_g->meta->resource_version : 0;
    uint64_t nv = n != NULL && n->meta != NULL ? n->meta->resource_version : 0;
    if (a->in == NULL) {
        effective_answer(a->ctx, a->ns, g, gv, n, nv);
    } else {
        decide_answer(a->ctx, a->in, g, gv, n, nv, NULL);
    }
    policy_rules_free(def);
    a->answered = true;
}

/* true when the call was answered (from the models, or failed by its read index). */
static bool layers_from_models(const struct policies_svc *svc, struct gate_ctx *ctx, const char *ns,
                               const struct egress_intent *in)
{
    uint64_t need = 0;
    bool answered = false;
    if (svc == NULL || svc->namespaces == NULL ||
        !kind_model_wait(&svc->reads, ctx, NULL, &need, &answered)) {
        return answered;
    }
    struct ns_seen seen = {.name = ns, .found = ns[0] == '\0'};
    if (!seen.found && !kind_model_read(svc->namespaces, need, ns_seen_under_lock, &seen)) {
        return false;
    }
    if (!seen.found) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", ns);
        return true;
    }
    struct layers_arg a = {.ctx = ctx, .ns = ns, .in = in};
    return kind_model_read(svc->reads.model, need, layers_model, &a) && a.answered;
}

static void pol_get_effective(struct gate_ctx *ctx, void *data)
{
    const struct policies_svc *svc = data;
    const Gantry__V1__GetEffectivePolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    if (layers_from_models(svc, ctx, req->namespace_, NULL) || !ns_exists(ctx, req->namespace_)) {
        return;
    }
    struct layers l;
    int rv = layers_read(ctx, req->namespace_, &l);
    if (rv != 0) {
        read_fail(ctx, rv, "get effective policy");
    } else {
        effective_answer(ctx, req->namespace_, l.g, l.stored_g != NULL ? l.gm.resource_version : 0, l.n,
                         l.n != NULL ? l.nm.resource_version : 0);
    }
    layers_close(&l);
}

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

/* The stored version of @ns's policy (0: none) against @expected. */
static int version_tx(struct store_tx *tx, const char *ns, uint64_t expected, bool must_exist, int64_t *have)
{
    struct proto_value p[] = {proto_text(ns)};
    *have = 0;
    int rv = store_tx_query_int(tx, "SELECT resource_version FROM policies WHERE namespace = ?", p, 1, have);
    if (rv == GERR_NOTFOUND && must_exist) {
        return ns[0] == '\0' ? res_fail(tx, rv, "no gateway policy is set")
                             : res_fail(tx, rv, "no policy is set for namespace \"%.63s\"", ns);
    }
    rv = rv == GERR_NOTFOUND ? 0 : rv;
    if (rv == 0 && expected != 0 && (uint64_t)*have != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, *have,
                        expected);
    }
    return rv;
}

/* A namespace policy must not loosen the gateway's. */
static int tighten_tx(struct store_tx *tx, const char *ns, const Gantry__V1__Policy *n)
{
    Gantry__V1__Policy *g = NULL, *unused = NULL;
    int rv = policies_load_tx(tx, "", &g, &unused);
    struct policy_looser *l = mem_zalloc(sizeof *l);
    if (rv == 0) {
        policy_rules_loosening(g, n, l);
        if (l->names[0] != '\0') {
            rv = res_fail(
                tx, GERR_REFUSED,
                "the policy of namespace \"%.63s\" may only tighten the gateway policy; looser fields: "
                "%s (%s)",
                ns, l->names, l->why);
        }
    }
    mem_free(l);
    policy_rules_free(g);
    return rv;
}

static void reply_policy_tx(struct store_tx *tx, struct res_call *c, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    if (policy_read(tx, NULL, ns, &rows, &p, &meta) == 0 && p != NULL) {
        p->meta = &meta;
        res_reply(c, &p->base);
        p->meta = NULL;
    }
    policy_rules_free(p);
    proto_rows_close(&rows);
}

static int pol_set_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__SetPolicyRequest *req = c->arg;
    const char *ns = req->policy->meta != NULL ? req->policy->meta->namespace_ : "";
    int64_t have = 0;
    int rv = ns[0] != '\0' ? ns_active_tx(tx, ns) : 0;
    if (rv == 0) {
        rv = version_tx(tx, ns, req->expected_resource_version, false, &have);
    }
    if (rv == 0 && ns[0] != '\0') {
        rv = tighten_tx(tx, ns, req->policy);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Policy", ns, ns[0] != '\0' ? ns : "gateway", ns,
                       have != 0 ? "MODIFIED" : "ADDED");
    }
    if (rv == 0) {
        Gantry__V1__Policy stored = *req->policy;
        stored.meta = NULL;
        size_t n = protobuf_c_message_get_packed_size(&stored.base);
        uint8_t *blob = mem_alloc(n + 1);
        protobuf_c_message_pack(&stored.base, blob);
        struct proto_value p[] = {proto_text(ns), proto_blob(blob, n), proto_int(c->revision),
                                  proto_text(c->ctx->who.id), proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO policies (namespace, policy, resource_version, created_by, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET policy = excluded.policy, "
            "resource_version = excluded.resource_version, updated_at_ms = excluded.updated_at_ms",
            p, 5, NULL);
        mem_free(blob);
    }
    if (rv == 0) {
        reply_policy_tx(tx, c, ns);
        rv = res_event_payload_reply(tx, c); /* Events.Watch's object */
    }
    return rv;
}

static void pol_set(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__SetPolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    char why[GERR_MSG_SIZE];
    if (!policy_rules_validate(req->policy, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
    } else {
        res_mutate(ctx, ((const struct policies_svc *)data)->env, req->request_id,
                   &gantry__v1__policy__descriptor, pol_set_tx, (void *)req);
    }
}

static int pol_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeletePolicyRequest *req = c->arg;
    const char *ns = req->namespace_;
    int64_t have = 0;
    int rv = version_tx(tx, ns, req->expected_resource_version, true, &have);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    if (rv == 0) {
        rv = policy_read(tx, NULL, ns, &rows, &p, &meta);
    }
    struct proto_value np[] = {proto_text(ns)};
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM policies WHERE namespace = ?", np, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Policy", ns, ns[0] != '\0' ? ns : "gateway", ns, "DELETED");
    }
    if (rv == 0 && p != NULL) {
        meta.resource_version = (uint64_t)c->revision;
        meta.deletion_timestamp_ms = c->ctx->now_ms;
        p->meta = &meta;
        res_reply(c, &p->base);
        p->meta = NULL;
        rv = res_event_payload_reply(tx, c); /* the DELETED event carries the last policy */
    }
    policy_rules_free(p);
    proto_rows_close(&rows);
    return rv;
}

static void pol_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeletePolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    res_mutate(ctx, ((const struct policies_svc *)data)->env, req->request_id,
               &gantry__v1__policy__descriptor, pol_delete_tx, (void *)req);
}

/* --- Egress.Decide (api/rules/egress.h) --- */

static void egress_decide_call(struct gate_ctx *ctx, void *data)
{
    const struct policies_svc *svc = data;
    const Gantry__V1__DecideEgressRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__EgressIntent *it = req->intent;
    if (it == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "intent is required");
        return;
    }
    struct egress_intent in = {.transport = (int)it->transport,
                               .host = it->host,
                               .ip = it->ip,
                               .port = it->port,
                               .sni = it->sni,
                               .http_host = it->http_host};
    char why[512];
    if (egress_intent_check(&in, why, sizeof why) != 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    /* Without a sandbox, the two layers from the models; a sandbox's own policy is in its spec,
     * read from the store with the layers. */
    if ((it->sandbox[0] == '\0' && layers_from_models(svc, ctx, it->namespace_, &in)) ||
        !ns_exists(ctx, it->namespace_)) {
        return;
    }
    /* The sandbox's own policy (SandboxSpec.policy), the third layer; fixed at create. */
    Gantry__V1__SandboxSpec *spec = NULL;
    if (it->sandbox[0] != '\0') {
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        struct proto_value p[] = {proto_text(it->namespace_), proto_text(it->sandbox)};
        int rv = store_client_query(ctx->cl, "SELECT spec FROM sandboxes WHERE namespace = ? AND name = ?", p,
                                    2, &rows);
        if (rv == 0 && rows.n_rows > 0) {
            const struct proto_value *b = proto_rows_at(&rows, 0, 0);
            spec = b->type == PROTO_BLOB
                       ? gantry__v1__sandbox_spec__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s)
                       : NULL;
            rv = spec == NULL ? GERR_INTERNAL : 0;
        }
        size_t found = rows.n_rows;
        proto_rows_close(&rows);
        if (rv != 0) {
            read_fail(ctx, rv, "egress decision");
            return;
        }
        if (found == 0) {
            gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "sandbox \"%.63s\" does not exist in namespace \"%.63s\"",
                      it->sandbox, it->namespace_);
            return;
        }
    }
    struct layers l;
    int rv = layers_read(ctx, it->namespace_, &l);
    if (rv != 0) {
        read_fail(ctx, rv, "egress decision");
    } else {
        decide_answer(ctx, &in, l.g, l.stored_g != NULL ? l.gm.resource_version : 0, l.n,
                      l.n != NULL ? l.nm.resource_version : 0, spec != NULL ? spec->policy : NULL);
    }
    layers_close(&l);
    if (spec != NULL) {
        gantry__v1__sandbox_spec__free_unpacked(spec, NULL);
    }
}

int policies_svc_register(struct gate *g, const struct policies_svc *svc, char *errmsg)
{
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Policies/Get", pol_get},
        {"/gantry.v1.Policies/GetEffective", pol_get_effective},
        {"/gantry.v1.Policies/Set", pol_set},
        {"/gantry.v1.Policies/Delete", pol_delete},
        {"/gantry.v1.Egress/Decide", egress_decide_call},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, (void *)svc) != 0) {
            gerr_set(errmsg, "policies service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
