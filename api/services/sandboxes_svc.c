/* gantry.v1.Sandboxes (api/services/sandboxes_svc.h). */
#include "api/services/sandboxes_svc.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api/gate/audit.h"
#include "api/gate/gate.h"
#include "api/rules/labels.h"
#include "api/rules/page.h"
#include "api/rules/policy.h"
#include "api/rules/sandbox.h"
#include "api/services/providers_svc.h"
#include "api/services/policies_svc.h"
#include "api/services/tenants_svc.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "leases/dspec.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "store/events.h"

#define SB_COLS                                                                                              \
    "id, namespace, name, owner_id, created_by, labels, annotations, spec, status, phase, gpus, "            \
    "resource_version, "                                                                                     \
    "created_at_ms, updated_at_ms, deletion_timestamp_ms"

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static int64_t coli(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

static bool role_in(const struct authn_principal *who, enum authz_role role, const char *ns)
{
    for (size_t i = 0; i < who->n_bindings; i++) {
        if (who->bindings[i].role == role && (ns == NULL || authz_binding_covers(&who->bindings[i], ns))) {
            return true;
        }
    }
    return false;
}

static bool global_reader(const struct authn_principal *who)
{
    return role_in(who, AZ_ROLE_PLATFORM_ADMIN, "") || role_in(who, AZ_ROLE_AUDITOR, "");
}

/* Namespaces where @who administers everything, as a JSON array text (mem_free). A delegated
 * namespace_admin binding names patterns, not namespaces: it counts for @ns when it covers it. */
static char *admin_namespaces(const struct authn_principal *who, const char *ns)
{
    json_t *a = json_array();
    for (size_t i = 0; i < who->n_bindings; i++) {
        const struct authz_binding *b = &who->bindings[i];
        if (b->role == AZ_ROLE_NAMESPACE_ADMIN && !b->scope.set) {
            json_array_append_new(a, json_string(b->ns));
        } else if (b->role == AZ_ROLE_NAMESPACE_ADMIN && ns[0] != '\0' && authz_binding_covers(b, ns)) {
            json_array_append_new(a, json_string(ns));
        }
    }
    char *t = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    char *out = mem_strdup(t != NULL ? t : "[]");
    free(t);
    return out;
}

/* --- messages from rows --- */

struct sb_msg {
    Gantry__V1__Sandbox s;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__SandboxSpec *spec;
    Gantry__V1__SandboxStatus *status;
    json_t *labels;
    Gantry__V1__ObjectMeta__LabelsEntry *entries;
    Gantry__V1__ObjectMeta__LabelsEntry **ptrs;
};

static void sb_from_row(struct sb_msg *m, const struct proto_rows *r, size_t i)
{
    memset(m, 0, sizeof *m);
    gantry__v1__sandbox__init(&m->s);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = (char *)col(r, i, 0);
    m->meta.namespace_ = (char *)col(r, i, 1);
    m->meta.name = (char *)col(r, i, 2);
    m->meta.created_by = (char *)col(r, i, 4);
    m->meta.resource_version = (uint64_t)coli(r, i, 11);
    m->meta.created_at_ms = coli(r, i, 12);
    m->meta.updated_at_ms = coli(r, i, 13);
    m->meta.deletion_timestamp_ms = coli(r, i, 14);
    m->labels = json_loads(col(r, i, 5), 0, NULL);
    size_t n = json_is_object(m->labels) ? json_object_size(m->labels) : 0;
    m->entries = mem_zalloc(sizeof *m->entries * (n + 1));
    m->ptrs = mem_zalloc(sizeof *m->ptrs * (n + 1));
    const char *k;
    json_t *v;
    size_t j = 0;
    if (n > 0) {
        json_object_foreach(m->labels, k, v)
        {
            gantry__v1__object_meta__labels_entry__init(&m->entries[j]);
            m->entries[j].key = (char *)k;
            m->entries[j].value = (char *)(json_string_value(v) != NULL ? json_string_value(v) : "");
            m->ptrs[j] = &m->entries[j];
            j++;
        }
    }
    m->meta.n_labels = j;
    m->meta.labels = m->ptrs;
    const struct proto_value *spec = proto_rows_at(r, i, 7), *status = proto_rows_at(r, i, 8);
    m->spec = (Gantry__V1__SandboxSpec *)protobuf_c_message_unpack(
        &gantry__v1__sandbox_spec__descriptor, NULL, spec->u.b.n, (const uint8_t *)spec->u.b.s);
    m->status = (Gantry__V1__SandboxStatus *)protobuf_c_message_unpack(
        &gantry__v1__sandbox_status__descriptor, NULL, status->u.b.n, (const uint8_t *)status->u.b.s);
    m->s.meta = &m->meta;
    m->s.spec = m->spec;
    m->s.status = m->status;
}

static void sb_msg_free(struct sb_msg *m)
{
    if (m->spec != NULL) {
        protobuf_c_message_free_unpacked(&m->spec->base, NULL);
    }
    if (m->status != NULL) {
        protobuf_c_message_free_unpacked(&m->status->base, NULL);
    }
    json_decref(m->labels);
    mem_free(m->entries);
    mem_free(m->ptrs);
}

static int sb_read_tx(struct store_tx *tx, const char *ns, const char *name, struct proto_rows *rows)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(name)};
    int rv =
        store_tx_query(tx, "SELECT " SB_COLS " FROM sandboxes WHERE namespace = ? AND name = ?", p, 2, rows);
    if (rv == 0 && rows->n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "sandbox \"%.63s\" does not exist in namespace \"%.63s\"", name, ns);
    }
    return rv;
}

static void reply_sb_tx(struct store_tx *tx, struct res_call *c, const char *ns, const char *name)
{
    struct proto_rows rows;
    if (sb_read_tx(tx, ns, name, &rows) == 0) {
        struct sb_msg m;
        sb_from_row(&m, &rows, 0);
        res_reply(c, &m.s.base);
        sb_msg_free(&m);
    }
    proto_rows_close(&rows);
}

/* The event of this change carries the sandbox as the change left it (packed in c->reply by the
 * caller, or read back), so a watch can deliver every state. */
static int payload_from_row_tx(struct store_tx *tx, int64_t revision, const char *ns, const char *name)
{
    struct proto_rows rows;
    int rv = sb_read_tx(tx, ns, name, &rows);
    if (rv == 0) {
        struct sb_msg m;
        sb_from_row(&m, &rows, 0);
        size_t len = protobuf_c_message_get_packed_size(&m.s.base);
        uint8_t *buf = mem_alloc(len + 1);
        protobuf_c_message_pack(&m.s.base, buf);
        rv = store_event_payload_tx(tx, revision, buf, len);
        mem_free(buf);
        sb_msg_free(&m);
    }
    proto_rows_close(&rows);
    return rv;
}

/* --- Create --- */

/* May the caller create @sb, as far as delegation goes (api/rules/sandbox.h: driver_config keys
 * and placement values, credential sources, ServiceAccounts, on behalf of another owner)? Checked
 * inside the mutation (create_tx), so a refusal is audited with the caller as the actor. */
static bool delegation_ok(struct gate_ctx *ctx, const Gantry__V1__Sandbox *sb, char *why, size_t len)
{
    const struct authz_scope *scopes[AUTHN_MAX_BINDINGS];
    struct sandbox_creator c = {
        .id = ctx->who.id,
        .platform_admin = role_in(&ctx->who, AZ_ROLE_PLATFORM_ADMIN, ""),
        .scopes = scopes,
        .n_scopes = authz_delegations(&ctx->caller, sb->meta->namespace_, scopes, AUTHN_MAX_BINDINGS),
    };
    return sandbox_rules_delegation(&c, sb->spec, why, len);
}

static bool spec_ok(struct gate_ctx *ctx, const Gantry__V1__Sandbox *sb)
{
    char why[GERR_MSG_SIZE];
    if (!sandbox_rules_validate(sb, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return false;
    }
    return true;
}

/* Each provider exists in the namespace, and the caller may attach it: namespace admins and
 * platform admins always, others with a grant. */
static int providers_ok_tx(struct store_tx *tx, struct res_call *c, const Gantry__V1__SandboxSpec *s,
                           const char *ns)
{
    bool admin = role_in(&c->ctx->who, AZ_ROLE_PLATFORM_ADMIN, "") ||
                 role_in(&c->ctx->who, AZ_ROLE_NAMESPACE_ADMIN, ns);
    const struct authz_scope *scopes[AUTHN_MAX_BINDINGS];
    bool delegated = authz_delegations(&c->ctx->caller, ns, scopes, AUTHN_MAX_BINDINGS) > 0;
    for (size_t i = 0; i < s->n_providers; i++) {
        struct proto_value p[] = {proto_text(ns), proto_text(s->providers[i]), proto_text(c->ctx->who.id)};
        int64_t exists = 0, granted = 0;
        int rv = store_tx_query_int(tx, "SELECT count(*) FROM providers WHERE namespace = ? AND name = ?", p,
                                    2, &exists);
        if (rv == 0 && exists == 0) {
            return res_fail(tx, GERR_NOTFOUND, "provider \"%.63s\" does not exist in namespace \"%.63s\"",
                            s->providers[i], ns);
        }
        if (rv == 0 && !admin) {
            rv = store_tx_query_int(
                tx,
                "SELECT count(*) FROM provider_grants g JOIN providers p ON p.id = g.provider_id "
                "WHERE p.namespace = ?1 AND p.name = ?2 AND g.principal_id = ?3",
                p, 3, &granted);
            if (rv == 0 && granted == 0) {
                return res_fail(tx, GERR_PERM,
                                "attaching provider \"%.63s\" needs a grant (or namespace_admin)",
                                s->providers[i]);
            }
        }
        if (rv == 0 && delegated) {
            /* Secret-backed credentials: a delegated caller attaches only providers whose Secrets its
             * scope allows (docs/credentials.md), whoever created them. */
            struct proto_rows rows;
            proto_rows_init(&rows, 0);
            rv = store_tx_query(tx, "SELECT config FROM providers WHERE namespace = ? AND name = ?", p, 2,
                                &rows);
            char why[GERR_MSG_SIZE];
            if (rv == 0 && rows.n_rows == 1 &&
                providers_refs_allowed(c->ctx, ns, col(&rows, 0, 0), why, sizeof why) != 0) {
                rv = res_fail(tx, GERR_PERM, "attaching provider \"%.63s\": %s", s->providers[i], why);
            }
            proto_rows_close(&rows);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

struct create_arg {
    const Gantry__V1__CreateSandboxRequest *req;
    const char *driver; /* the driver the policy's allowed_drivers is checked against */
    const struct sandboxes_svc *svc;
};

/* The configured driver's own rules (its driver_config schema, label and size limits, GPU
 * support), checked on the spec exactly as the reconciler will hand it over (leases/dspec.h), after
 * the policies, so a spec the driver would refuse is INVALID_ARGUMENT now rather than an ERROR
 * later. Pure (no backend call). A driver that is unavailable right now does not block admission:
 * the reconciler reports that. */
static int driver_admits_tx(struct store_tx *tx, struct res_call *c, const struct sandboxes_svc *svc,
                            const Gantry__V1__Sandbox *sb)
{
    if (svc == NULL || svc->driver == NULL) {
        return 0;
    }
    char *labels = labels_json(sb->meta->labels, sb->meta->n_labels);
    struct dspec d;
    /* The id is assigned later in the transaction; any canonical UUID stands in for it here. */
    dspec_build(&d, sb->spec, "00000000-0000-4000-8000-000000000000", sb->meta->namespace_, sb->meta->name,
                sb->spec->owner_id[0] != '\0' ? sb->spec->owner_id : c->ctx->who.id, labels,
                svc->driver_name);
    char err[GERR_MSG_SIZE] = "";
    int rv = driver_validate(svc->driver, &d.s, NULL, err);
    dspec_close(&d);
    mem_free(labels);
    if (rv == GERR_INVAL || rv == GERR_PERM) {
        return res_fail(tx, rv, "the %s driver refuses this sandbox: %s", svc->driver_name, err);
    }
    return 0;
}

/* Everything create_tx decides on, in one read inside the transaction: whether the name is taken,
 * the namespace's phase, quota, ceiling and usage, both policies, and the cluster revision (16
 * columns: the most dqlite 1.11 reads). */
#define CREATE_FACTS_SQL                                                                                     \
    "SELECT (SELECT count(*) FROM sandboxes WHERE namespace = ?1 AND name = ?2), n.phase, q.max_sandboxes, " \
    "q.max_gpus, q.max_lifetime_s, q.mode, coalesce(u.sandboxes, 0), coalesce(u.gpus, 0), "                  \
    "q.namespace IS NOT NULL, (SELECT policy FROM policies WHERE namespace = ''), "                          \
    "(SELECT policy FROM policies WHERE namespace = ?1), (SELECT revision FROM cluster_revision WHERE id = " \
    "1), coalesce(c.max_sandboxes, 0), coalesce(c.max_gpus, 0), coalesce(c.max_lifetime_s, 0), "             \
    "c.namespace IS NOT NULL "                                                                               \
    "FROM namespaces n LEFT JOIN quotas q ON q.namespace = n.name "                                          \
    "LEFT JOIN quota_usage u ON u.namespace = n.name "                                                       \
    "LEFT JOIN quota_ceilings c ON c.namespace = n.name WHERE n.name = ?1"

struct create_facts {
    bool exists;
    struct quota_state quota;
    Gantry__V1__Policy *gw, *nsp; /* gw never NULL: the built-in default when none is stored */
    int64_t revision;
};

static Gantry__V1__Policy *policy_of(const struct proto_value *v)
{
    if (v->type != PROTO_BLOB) {
        return NULL;
    }
    return gantry__v1__policy__unpack(NULL, v->u.b.n, (const uint8_t *)v->u.b.s);
}

static int create_facts_tx(struct store_tx *tx, const char *ns, const char *name, struct create_facts *f)
{
    memset(f, 0, sizeof *f);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value q[] = {proto_text(ns), proto_text(name)};
    int rv = store_tx_query(tx, CREATE_FACTS_SQL, q, 2, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    }
    if (rv == 0) {
        f->exists = coli(&rows, 0, 0) > 0;
        f->quota = (struct quota_state){.active = strcmp(col(&rows, 0, 1), "ACTIVE") == 0,
                                        .has_quota = coli(&rows, 0, 8) != 0,
                                        .max_sandboxes = coli(&rows, 0, 2),
                                        .max_gpus = coli(&rows, 0, 3),
                                        .max_lifetime_s = coli(&rows, 0, 4),
                                        .hard = strcmp(col(&rows, 0, 5), "hard") == 0,
                                        .used_sandboxes = coli(&rows, 0, 6),
                                        .used_gpus = coli(&rows, 0, 7),
                                        .ceiling = {.set = coli(&rows, 0, 15) != 0,
                                                    .max_sandboxes = coli(&rows, 0, 12),
                                                    .max_gpus = coli(&rows, 0, 13),
                                                    .max_lifetime_s = coli(&rows, 0, 14)}};
        const struct proto_value *g = proto_rows_at(&rows, 0, 9), *n = proto_rows_at(&rows, 0, 10);
        f->gw = g->type == PROTO_BLOB ? policy_of(g) : policy_rules_default();
        f->nsp = n->type == PROTO_BLOB ? policy_of(n) : NULL;
        f->revision = coli(&rows, 0, 11);
        if (f->gw == NULL || (n->type == PROTO_BLOB && f->nsp == NULL)) {
            rv = res_fail(tx, GERR_INTERNAL, "a stored policy does not decode");
        } else {
            store_tx_seed_revision(tx, f->revision);
        }
    }
    proto_rows_close(&rows);
    return rv;
}

/* The stored labels' entries in the order a read returns them (sorted by key; the last of equal
 * keys wins, as in labels_json), pointing into @in. */
static int label_cmp(const void *a, const void *b)
{
    const Gantry__V1__ObjectMeta__LabelsEntry *x = *(const Gantry__V1__ObjectMeta__LabelsEntry *const *)a,
                                              *y = *(const Gantry__V1__ObjectMeta__LabelsEntry *const *)b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x < y ? -1 : x > y);
}

static size_t labels_sorted(Gantry__V1__ObjectMeta__LabelsEntry *const *in, size_t n,
                            Gantry__V1__ObjectMeta__LabelsEntry **out)
{
    if (n == 0) {
        return 0; /* @in is NULL for a sandbox without labels: memcpy and qsort want a valid pointer */
    }
    memcpy(out, in, sizeof *out * n);
    qsort(out, n, sizeof *out, label_cmp); /* ties by address: the later entry last */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(out[i]->key, out[i + 1]->key) == 0) {
            continue; /* a later entry with the same key replaces it */
        }
        out[k++] = out[i];
    }
    return k;
}

static int create_tx(struct store_tx *tx, struct res_call *c)
{
    const struct create_arg *a = c->arg;
    const Gantry__V1__CreateSandboxRequest *req = a->req;
    const Gantry__V1__Sandbox *in = req->sandbox;
    const char *ns = in->meta->namespace_, *name = in->meta->name;
    char refusal[GERR_MSG_SIZE];
    if (!delegation_ok(c->ctx, in, refusal, sizeof refusal)) {
        return res_fail(tx, GERR_PERM, "%s", refusal);
    }
    /* The host's network bypasses egress_allow: a platform_admin's choice only, audited on its own
     * (SANDBOX_HOST_NETWORK_OP). Refused here, inside the mutation, so the refusal is audited too. */
    bool host_net = sandbox_rules_host_network(in->spec);
    if (host_net && !role_in(&c->ctx->who, AZ_ROLE_PLATFORM_ADMIN, "")) {
        return res_fail(tx, GERR_PERM,
                        "driver_config process.network \"host\" gives the sandbox the host's network, where "
                        "egress_allow is not applied: only a platform_admin may choose it (use \"egress\" or "
                        "\"none\")");
    }
    struct create_facts f;
    int rv = create_facts_tx(tx, ns, name, &f);
    if (rv == 0 && f.exists) {
        rv = res_fail(tx, GERR_EXISTS, "sandbox \"%.63s\" already exists in namespace \"%.63s\"", name, ns);
    }
    if (rv == 0 && in->spec->owner_id[0] != '\0' && strcmp(in->spec->owner_id, c->ctx->who.id) != 0) {
        /* On behalf of another owner (delegation or platform_admin): the owner must be an
         * enabled principal who may have sandboxes here. */
        int64_t n = 0;
        struct proto_value op[] = {proto_text(in->spec->owner_id), proto_text(ns)};
        rv = store_tx_query_int(tx,
                                "SELECT count(*) FROM principals p WHERE p.id = ?1 AND p.disabled = 0 AND "
                                "EXISTS (SELECT 1 FROM role_bindings b WHERE b.principal_id = p.id AND "
                                "(b.role = 'platform_admin' OR (b.role IN ('user', 'namespace_admin') AND "
                                "b.namespace = ?2)))",
                                op, 2, &n);
        if (rv == 0 && n == 0) {
            rv = res_fail(tx, GERR_REFUSED,
                          "sandbox.spec.owner_id \"%.40s\" is not an enabled principal with the user or "
                          "namespace_admin role in namespace \"%.63s\"",
                          in->spec->owner_id, ns);
        }
    }
    if (rv == 0) {
        rv = providers_ok_tx(tx, c, in->spec, ns);
    }
    /* The policies, then the lifetime: 0 means a day, or the namespace's quota maximum when that
     * is lower, within the policies' maxima. */
    uint64_t lifetime = in->spec->lifetime_seconds;
    if (rv == 0) {
        char why[GERR_MSG_SIZE];
        rv = policy_rules_check_sandbox(f.gw, f.nsp, ns, in->spec, a->driver, why, sizeof why);
        if (rv == 0) {
            /* The sandbox's own policy: only egress_allow, and only tighter than both layers. */
            rv = policy_rules_check_sandbox_policy(f.gw, f.nsp, in->spec->policy, why, sizeof why);
        }
        if (rv == GERR_REFUSED || rv == GERR_INVAL) {
            rv = res_fail(tx, rv, "%s", why);
        }
    }
    if (rv == 0 && lifetime == 0) {
        /* The tighter of the quota's and the ceiling's maximum bounds the default. */
        lifetime = sandbox_rules_default_lifetime(quota_rules_lifetime_max(&f.quota), f.gw, f.nsp);
    }
    policy_rules_free(f.gw);
    policy_rules_free(f.nsp);
    if (rv == 0) {
        rv = driver_admits_tx(tx, c, a->svc, in);
    }
    if (rv == 0) {
        rv = tenants_charge_decide(tx, ns, &f.quota, 1, (int)in->spec->gpu_count, lifetime, c->warning,
                                   sizeof c->warning);
    }
    if (rv != 0) {
        return rv;
    }
    char id[37];
    rand_uuid7(id); /* time-ordered: the id index grows at its end */
    rv = res_event(tx, c, "Sandbox", ns, id, name, "ADDED");
    if (rv != 0) {
        return rv;
    }
    Gantry__V1__SandboxSpec spec = *in->spec;
    Gantry__V1__Policy own;
    if (spec.policy != NULL) {
        own = *spec.policy; /* stored without the caller's meta, which means nothing here */
        own.meta = NULL;
        spec.policy = &own;
    }
    if (spec.owner_id[0] == '\0') {
        spec.owner_id = c->ctx->who.id;
    }
    spec.lifetime_seconds = lifetime;
    Gantry__V1__SandboxStatus st = GANTRY__V1__SANDBOX_STATUS__INIT;
    st.phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING;
    st.expires_at_ms = c->ctx->now_ms + (int64_t)spec.lifetime_seconds * 1000;
    size_t spec_len = protobuf_c_message_get_packed_size(&spec.base),
           st_len = protobuf_c_message_get_packed_size(&st.base);
    uint8_t *spec_buf = mem_alloc(spec_len + 1), *st_buf = mem_alloc(st_len + 1);
    protobuf_c_message_pack(&spec.base, spec_buf);
    protobuf_c_message_pack(&st.base, st_buf);
    char *labels = labels_json(in->meta->labels, in->meta->n_labels);
    /* The row and the quota charge in one request (behind the call's savepoint in a batch). */
    struct proto_value p[] = {proto_text(id),
                              proto_text(ns),
                              proto_text(name),
                              proto_text(spec.owner_id),
                              proto_text(c->ctx->who.id),
                              proto_text(labels),
                              proto_blob(spec_buf, spec_len),
                              proto_blob(st_buf, st_len),
                              proto_int(spec.gpu_count),
                              proto_int(c->revision),
                              proto_int(c->ctx->now_ms)};
    struct proto_value u[] = {proto_text(ns), proto_int(1), proto_int((int64_t)spec.gpu_count)};
    struct store_stmt writes[] = {
        {"INSERT INTO sandboxes (id, namespace, name, owner_id, created_by, labels, annotations, spec, "
         "status, phase, gpus, resource_version, created_at_ms, updated_at_ms, deletion_timestamp_ms) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?8, 'PROVISIONING', ?9, ?10, ?11, ?11, 0)",
         p, 11},
        {TENANTS_USAGE_UPSERT_SQL, u, 3},
    };
    rv = store_tx_exec_many(tx, writes, 2, NULL);
    if (rv == 0 && host_net) {
        /* An event of its own, beside the call's, in the same transaction. */
        char msg[400];
        snprintf(msg, sizeof msg,
                 "sandbox \"%.63s\" runs on the host's network (driver_config process.network = host): "
                 "egress_allow is not applied to it; chosen by platform_admin \"%.63s\"",
                 name, c->ctx->who.name);
        struct audit_record r = {.time_ms = c->ctx->now_ms,
                                 .class_uid = AUDIT_CLASS_API_ACTIVITY,
                                 .activity = AUDIT_CREATE,
                                 .actor_id = c->ctx->who.id,
                                 .actor_name = c->ctx->who.name,
                                 .actor_kind = c->ctx->who.kind,
                                 .operation = SANDBOX_HOST_NETWORK_OP,
                                 .ns = ns,
                                 .resource_type = "sandbox",
                                 .resource_id = id,
                                 .resource_name = name,
                                 .success = true,
                                 .message = msg,
                                 .source = grpc_call_peer(c->ctx->call),
                                 .request_id = req->request_id,
                                 .replica_id = c->env->replica_id,
                                 .gateway_id = c->env->gateway_id,
                                 .revision = c->revision};
        rv = audit_insert_tx(tx, &r);
    }
    if (rv == 0) {
        /* The reply as a read would return it, built from what was just written. */
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
        Gantry__V1__ObjectMeta__LabelsEntry **lp = mem_alloc(sizeof *lp * (in->meta->n_labels + 1));
        meta.id = id;
        meta.namespace_ = (char *)ns;
        meta.name = (char *)name;
        meta.created_by = c->ctx->who.id;
        meta.resource_version = (uint64_t)c->revision;
        meta.created_at_ms = meta.updated_at_ms = c->ctx->now_ms;
        meta.n_labels = labels_sorted(in->meta->labels, in->meta->n_labels, lp);
        meta.labels = lp;
        sb.meta = &meta;
        sb.spec = &spec;
        sb.status = &st;
        res_reply(c, &sb.base);
        mem_free(lp);
        rv = store_event_payload_tx(tx, c->revision, c->reply.data, c->reply.len);
    }
    mem_free(labels);
    mem_free(spec_buf);
    mem_free(st_buf);
    return rv;
}

static void sb_create(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__CreateSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->sandbox == NULL || req->sandbox->meta == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "sandbox.meta and sandbox.spec are required");
        return;
    }
    if (!spec_ok(ctx, req->sandbox)) {
        return; /* answered: the request (in the call's arena) is gone */
    }
    struct create_arg a = {.req = req, .driver = svc->driver_name, .svc = svc};
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__sandbox__descriptor, create_tx, &a);
}

/* --- Get / List / ListSharedWithMe --- */

/* Does a share of sandbox @id (namespace @ns) give @who access? Only while @who holds a role in
 * @ns (api/rules/sandbox.h): @who's bindings are those of this call (the authentication cache's,
 * at most AUTHN_CACHE_TTL_MS old) or a watch's last refresh, so a removed binding ends access
 * through shares on every replica within the revocation bound. */
static bool shared_with(struct store_client *cl, const struct authn_principal *who, const char *id,
                        const char *ns)
{
    if (!sandbox_rules_share_active(who->bindings, who->n_bindings, ns)) {
        return false;
    }
    struct proto_value p[] = {proto_text(id), proto_text(who->id)};
    int64_t n = 0;
    return store_client_query_int(cl, "SELECT count(*) FROM shares WHERE sandbox_id = ? AND grantee_id = ?",
                                  p, 2, &n) == 0 &&
           n > 0;
}

/* Is row @i of list_visible's result visible to @who? The query returns the sandboxes @who reads
 * by a global role, administration, ownership or a share; ownership and a share count only while
 * @who holds a role in the sandbox's namespace, as for Get (api/authz, AZ_SANDBOX_READ): an owner
 * whose binding was removed no longer sees the sandboxes they left there. */
static bool listed_visible(const struct authn_principal *who, const struct proto_rows *r, size_t i)
{
    const char *ns = col(r, i, 1);
    return global_reader(who) || role_in(who, AZ_ROLE_NAMESPACE_ADMIN, ns) ||
           sandbox_rules_share_active(who->bindings, who->n_bindings, ns);
}

/* May the caller read row @i? (Owner, a share, or a decision without owner_check.) */
static bool may_read(struct gate_ctx *ctx, const struct proto_rows *r, size_t i)
{
    if (!ctx->decision.owner_check) {
        return true;
    }
    if (strcmp(col(r, i, 3), ctx->who.id) == 0) {
        return true;
    }
    return shared_with(ctx->cl, &ctx->who, col(r, i, 0), col(r, i, 1));
}

static void sb_get(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__GetSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(req->name)};
    int rv = store_client_query(ctx->cl, "SELECT " SB_COLS " FROM sandboxes WHERE namespace = ? AND name = ?",
                                p, 2, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "get sandbox: %s", ctx->cl->errmsg);
    } else if (rows.n_rows == 0 || !may_read(ctx, &rows, 0)) {
        /* Not confirming that someone else's sandbox exists. */
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND,
                  "sandbox \"%.63s\" does not exist in namespace \"%.63s\" (or is not yours)", req->name,
                  req->namespace_);
    } else {
        struct sb_msg m;
        sb_from_row(&m, &rows, 0);
        grpc_call_finish_async(ctx->call, 0, NULL, &m.s.base);
        sb_msg_free(&m);
    }
    proto_rows_close(&rows);
}

/* The visible sandboxes of @ns ("" for all) after @after ("ns/name"), at most @limit rows. */
static int list_visible(struct store_client *cl, const struct authn_principal *who, const char *ns,
                        const char *owner, const char *after, unsigned limit, struct proto_rows *rows)
{
    char *admin_ns = admin_namespaces(who, ns);
    proto_rows_init(rows, 0);
    struct proto_value p[] = {
        proto_text(ns),       proto_text(who->id), proto_int(global_reader(who) ? 1 : 0),
        proto_text(admin_ns), proto_text(owner),   proto_text(after),
        proto_int(limit)};
    int rv = store_client_query(
        cl,
        "SELECT " SB_COLS " FROM sandboxes WHERE (?1 = '' OR namespace = ?1) AND (?3 = 1 OR "
        "namespace IN (SELECT value FROM json_each(?4)) OR owner_id = ?2 OR EXISTS (SELECT 1 FROM "
        "shares s WHERE s.sandbox_id = sandboxes.id AND s.grantee_id = ?2)) AND (?5 = '' OR "
        "owner_id = ?5) AND (namespace || '/' || name) > ?6 ORDER BY namespace, name LIMIT ?7",
        p, 7, rows);
    mem_free(admin_ns);
    return rv;
}

static void send_list(struct gate_ctx *ctx, const struct proto_rows *rows, unsigned limit,
                      const Gantry__V1__LabelSelector *sel, int64_t revision)
{
    const struct authn_principal *who = &ctx->who;
    struct sb_msg *ms = mem_zalloc(sizeof *ms * (rows->n_rows + 1));
    Gantry__V1__Sandbox **ps = mem_zalloc(sizeof *ps * (rows->n_rows + 1));
    size_t n = 0, scanned = 0;
    char token[160] = "";
    for (size_t i = 0; i < rows->n_rows && scanned < limit; i++, scanned++) {
        snprintf(token, sizeof token, "%s/%s", col(rows, i, 1), col(rows, i, 2));
        if (!labels_match(col(rows, i, 5), sel) || !listed_visible(who, rows, i)) {
            continue;
        }
        sb_from_row(&ms[n], rows, i);
        ps[n] = &ms[n].s;
        n++;
    }
    Gantry__V1__ListSandboxesResponse resp = GANTRY__V1__LIST_SANDBOXES_RESPONSE__INIT;
    resp.n_sandboxes = n;
    resp.sandboxes = ps;
    resp.next_page_token = rows->n_rows > limit ? token : "";
    resp.revision = (uint64_t)revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < n; i++) {
        sb_msg_free(&ms[i]);
    }
    mem_free(ms);
    mem_free(ps);
}

static void sb_list(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__ListSandboxesRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NS_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    unsigned limit = page.limit;
    int64_t revision = 0;
    struct proto_rows rows;
    int rv = store_client_query_int(ctx->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &revision);
    if (rv == 0) {
        rv = list_visible(ctx->cl, &ctx->who, req->namespace_, req->owner_id, page.after, limit + 1, &rows);
    } else {
        proto_rows_init(&rows, 0);
    }
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list sandboxes: %s", ctx->cl->errmsg);
    } else {
        send_list(ctx, &rows, limit, req->selector, revision);
    }
    proto_rows_close(&rows);
}

/* --- Delete --- */

static int owner_or_admin_tx(struct store_tx *tx, struct res_call *c, const struct proto_rows *r)
{
    if (c->ctx->decision.owner_check && strcmp(col(r, 0, 3), c->ctx->who.id) != 0) {
        return res_fail(tx, GERR_PERM,
                        "sandbox \"%.63s\" belongs to another principal: only its owner or a "
                        "namespace_admin may do this",
                        col(r, 0, 2));
    }
    return 0;
}

static int delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteSandboxRequest *req = c->arg;
    struct proto_rows rows;
    int rv = sb_read_tx(tx, req->namespace_, req->name, &rows);
    if (rv == 0) {
        rv = owner_or_admin_tx(tx, c, &rows);
    }
    if (rv == 0 && req->expected_resource_version != 0 &&
        (uint64_t)coli(&rows, 0, 11) != req->expected_resource_version) {
        rv = res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64,
                      coli(&rows, 0, 11), req->expected_resource_version);
    }
    if (rv != 0) {
        proto_rows_close(&rows);
        return rv;
    }
    struct sb_msg m;
    sb_from_row(&m, &rows, 0);
    char id[40];
    snprintf(id, sizeof id, "%s", m.meta.id);
    bool untouched = m.status == NULL || m.status->driver_handle[0] == '\0';
    int64_t gpus = coli(&rows, 0, 10);
    struct proto_value p[] = {proto_text(id)};
    if (untouched) {
        rv = store_tx_exec(tx, "DELETE FROM shares WHERE sandbox_id = ?", p, 1, NULL);
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM sandboxes WHERE id = ?", p, 1, NULL);
        }
        if (rv == 0) {
            rv = tenants_charge(tx, req->namespace_, -1, -(int)gpus, 0, c->warning, sizeof c->warning);
        }
        if (rv == 0) {
            rv = res_event(tx, c, "Sandbox", req->namespace_, id, req->name, "DELETED");
        }
        if (rv == 0) {
            m.meta.deletion_timestamp_ms = c->ctx->now_ms;
            m.meta.resource_version = (uint64_t)c->revision;
            if (m.status != NULL) {
                m.status->phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING;
            }
            res_reply(c, &m.s.base);
            rv = store_event_payload_tx(tx, c->revision, c->reply.data, c->reply.len);
        }
    } else {
        rv = res_event(tx, c, "Sandbox", req->namespace_, id, req->name, "MODIFIED");
        if (rv == 0 && m.status != NULL) {
            m.status->phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING;
            size_t len = protobuf_c_message_get_packed_size(&m.status->base);
            uint8_t *buf = mem_alloc(len + 1);
            protobuf_c_message_pack(&m.status->base, buf);
            struct proto_value u[] = {proto_blob(buf, len), proto_int(c->revision), proto_int(c->ctx->now_ms),
                                      proto_text(id)};
            rv = store_tx_exec(
                tx,
                "UPDATE sandboxes SET status = ?1, phase = 'DELETING', resource_version = ?2, "
                "updated_at_ms = ?3, deletion_timestamp_ms = CASE WHEN deletion_timestamp_ms = 0 THEN ?3 "
                "ELSE deletion_timestamp_ms END WHERE id = ?4",
                u, 4, NULL);
            mem_free(buf);
        }
        if (rv == 0) {
            reply_sb_tx(tx, c, req->namespace_, req->name);
            rv = store_event_payload_tx(tx, c->revision, c->reply.data, c->reply.len);
        }
    }
    sb_msg_free(&m);
    proto_rows_close(&rows);
    return rv;
}

static void sb_delete(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__DeleteSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name is required");
        return;
    }
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__sandbox__descriptor, delete_tx, (void *)req);
}

/* --- Share / Unshare --- */

struct share_arg {
    const char *ns, *name, *grantee;
    Gantry__V1__ShareAccess access; /* 0 for unshare */
    uint64_t expected;
};

static void reply_shares_tx(struct store_tx *tx, struct res_call *c, const char *id)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    store_tx_query(tx,
                   "SELECT sandbox_id, namespace, grantee_id, access, created_by, created_at_ms FROM shares "
                   "WHERE sandbox_id = ? ORDER BY grantee_id",
                   p, 1, &rows);
    Gantry__V1__Share *ss = mem_zalloc(sizeof *ss * (rows.n_rows + 1));
    Gantry__V1__Share **ps = mem_zalloc(sizeof *ps * (rows.n_rows + 1));
    for (size_t i = 0; i < rows.n_rows; i++) {
        gantry__v1__share__init(&ss[i]);
        ss[i].sandbox_id = (char *)col(&rows, i, 0);
        ss[i].namespace_ = (char *)col(&rows, i, 1);
        ss[i].grantee_principal_id = (char *)col(&rows, i, 2);
        ss[i].access = strcmp(col(&rows, i, 3), "exec") == 0 ? GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC
                                                             : GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_READ;
        ss[i].created_by = (char *)col(&rows, i, 4);
        ss[i].created_at_ms = coli(&rows, i, 5);
        ps[i] = &ss[i];
    }
    Gantry__V1__ListSharesResponse resp = GANTRY__V1__LIST_SHARES_RESPONSE__INIT;
    resp.n_shares = rows.n_rows;
    resp.shares = ps;
    res_reply(c, &resp.base);
    mem_free(ss);
    mem_free(ps);
    proto_rows_close(&rows);
}

/* The gateway policy and the namespace's both allow shares (and exec shares for @exec)?
 * Existing shares stay when a policy later forbids new ones; unsharing is always allowed. */
static int shares_allowed_tx(struct store_tx *tx, const char *ns, bool exec)
{
    Gantry__V1__Policy *gw = NULL, *np = NULL;
    int rv = policies_load_tx(tx, ns, &gw, &np);
    const char *by = NULL, *what = NULL;
    if (rv == 0 && !policy_rules_share_allowed(gw, np, exec, &by, &what)) {
        rv = res_fail(tx, GERR_REFUSED, "%s of \"%.63s\" forbids this share (%s is false)", by, ns, what);
    }
    policy_rules_free(gw);
    policy_rules_free(np);
    return rv;
}

static int share_tx(struct store_tx *tx, struct res_call *c)
{
    const struct share_arg *a = c->arg;
    struct proto_rows rows;
    int rv = sb_read_tx(tx, a->ns, a->name, &rows);
    if (rv == 0) {
        rv = owner_or_admin_tx(tx, c, &rows);
    }
    char id[40];
    snprintf(id, sizeof id, "%s", rv == 0 ? col(&rows, 0, 0) : "");
    proto_rows_close(&rows);
    if (rv != 0) {
        return rv;
    }
    struct proto_value g[] = {proto_text(a->grantee), proto_text(a->ns), proto_text(id)};
    int64_t n = 0;
    if (a->access != 0) {
        rv = store_tx_query_int(
            tx,
            "SELECT count(*) FROM principals p WHERE p.id = ?1 AND p.disabled = 0 AND EXISTS (SELECT 1 "
            "FROM role_bindings b WHERE b.principal_id = p.id AND (b.namespace = ?2 OR (b.namespace = '' AND "
            "b.scope = '')))",
            g, 2, &n);
        if (rv == 0 && n == 0) {
            return res_fail(
                tx, GERR_REFUSED,
                "shares stay inside the namespace: the grantee must be an enabled principal with a role in "
                "\"%.63s\"",
                a->ns);
        }
        if (rv == 0) {
            rv = shares_allowed_tx(tx, a->ns, a->access == GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC);
        }
        struct proto_value p[] = {
            proto_text(id),
            proto_text(a->ns),
            proto_text(a->grantee),
            proto_text(a->access == GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC ? "exec" : "read"),
            proto_text(c->ctx->who.id),
            proto_int(c->ctx->now_ms)};
        if (rv == 0) {
            rv = store_tx_exec(
                tx,
                "INSERT INTO shares (sandbox_id, namespace, grantee_id, access, created_by, created_at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sandbox_id, grantee_id) DO UPDATE SET "
                "access = excluded.access",
                p, 6, NULL);
        }
    } else {
        struct store_result res = {0};
        struct proto_value p[] = {proto_text(id), proto_text(a->grantee)};
        rv = store_tx_exec(tx, "DELETE FROM shares WHERE sandbox_id = ? AND grantee_id = ?", p, 2, &res);
        if (rv == 0 && res.rows_affected == 0) {
            return res_fail(tx, GERR_NOTFOUND, "the sandbox is not shared with that principal");
        }
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Sandbox", a->ns, id, a->name, "MODIFIED");
    }
    if (rv == 0) {
        rv = payload_from_row_tx(tx, c->revision, a->ns, a->name);
    }
    if (rv == 0) {
        reply_shares_tx(tx, c, id);
    }
    return rv;
}

static void sb_share(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__ShareSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->name[0] == '\0' || req->grantee_principal_id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name and grantee_principal_id are required");
        return;
    }
    if (req->access != GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_READ &&
        req->access != GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "access must be READ or EXEC");
        return;
    }
    struct share_arg a = {.ns = req->namespace_,
                          .name = req->name,
                          .grantee = req->grantee_principal_id,
                          .access = req->access};
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__list_shares_response__descriptor, share_tx, &a);
}

static void sb_unshare(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__UnshareSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->name[0] == '\0' || req->grantee_principal_id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name and grantee_principal_id are required");
        return;
    }
    struct share_arg a = {.ns = req->namespace_, .name = req->name, .grantee = req->grantee_principal_id};
    res_mutate(ctx, svc->env, req->request_id, &gantry__v1__list_shares_response__descriptor, share_tx, &a);
}

/* The sandboxes shared with the caller, each with the caller's share of it (shares[i] is the
 * share of sandboxes[i]: its access, read or exec, who made it and when). A share gives nothing
 * in a namespace where the caller no longer holds a role (shared_with): such rows are skipped,
 * so a page may hold fewer items than asked while more remain, as with label selectors. */
static void sb_shared_with_me(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__ListSharedWithMeRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NS_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ctx->who.id), proto_text(req->namespace_), proto_text(page.after),
                              proto_int(limit + 1)};
    /* Column 15 is the share, [access, created_by, created_at_ms], packed into one column (dqlite
     * 1.11 reads at most 16) and renamed in the subquery so that SB_COLS stay the sandbox's. */
    int rv = store_client_query(
        ctx->cl,
        "SELECT " SB_COLS ", sh FROM sandboxes JOIN (SELECT sandbox_id AS sh_id, json_array(access, "
        "created_by, created_at_ms) AS sh FROM shares WHERE grantee_id = ?1) ON sh_id = sandboxes.id "
        "WHERE (?2 = '' OR namespace = ?2) AND (namespace || '/' || name) > ?3 ORDER BY namespace, name "
        "LIMIT ?4",
        p, 4, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list shared sandboxes: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    struct sb_msg *ms = mem_zalloc(sizeof *ms * (rows.n_rows + 1));
    Gantry__V1__Sandbox **ps = mem_zalloc(sizeof *ps * (rows.n_rows + 1));
    Gantry__V1__Share *ss = mem_zalloc(sizeof *ss * (rows.n_rows + 1));
    Gantry__V1__Share **sp = mem_zalloc(sizeof *sp * (rows.n_rows + 1));
    json_t **sh = mem_zalloc(sizeof *sh * (rows.n_rows + 1));
    size_t n = 0, scanned = 0;
    char token[160] = "";
    for (size_t i = 0; i < rows.n_rows && scanned < limit; i++, scanned++) {
        snprintf(token, sizeof token, "%s/%s", col(&rows, i, 1), col(&rows, i, 2));
        if (!sandbox_rules_share_active(ctx->who.bindings, ctx->who.n_bindings, col(&rows, i, 1))) {
            continue;
        }
        sb_from_row(&ms[n], &rows, i);
        ps[n] = &ms[n].s;
        sh[n] = json_loads(col(&rows, i, 15), 0, NULL);
        const char *access = json_string_value(json_array_get(sh[n], 0));
        const char *by = json_string_value(json_array_get(sh[n], 1));
        gantry__v1__share__init(&ss[n]);
        ss[n].sandbox_id = (char *)col(&rows, i, 0);
        ss[n].namespace_ = (char *)col(&rows, i, 1);
        ss[n].grantee_principal_id = ctx->who.id;
        ss[n].access = access != NULL && strcmp(access, "exec") == 0
                           ? GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC
                           : GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_READ;
        ss[n].created_by = (char *)(by != NULL ? by : "");
        ss[n].created_at_ms = json_integer_value(json_array_get(sh[n], 2));
        sp[n] = &ss[n];
        n++;
    }
    Gantry__V1__ListSharedWithMeResponse resp = GANTRY__V1__LIST_SHARED_WITH_ME_RESPONSE__INIT;
    resp.n_sandboxes = n;
    resp.sandboxes = ps;
    resp.n_shares = n;
    resp.shares = sp;
    resp.next_page_token = rows.n_rows > limit ? token : "";
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < n; i++) {
        sb_msg_free(&ms[i]);
        json_decref(sh[i]);
    }
    mem_free(ms);
    mem_free(ps);
    mem_free(ss);
    mem_free(sp);
    mem_free(sh);
    proto_rows_close(&rows);
}

/* --- Watch --- */

struct watch {
    struct sandboxes_svc *svc;
    struct grpc_call *call;
    struct authn_principal who;
    bool owner_check;
    char ns[64];
    const Gantry__V1__LabelSelector *selector; /* in the call's arena, which our reference keeps */
    uint64_t since;
};

static bool watch_visible(struct store_client *cl, const struct watch *w, const struct proto_rows *r,
                          size_t i)
{
    if (!labels_match(col(r, i, 5), w->selector)) {
        return false;
    }
    if (global_reader(&w->who) || role_in(&w->who, AZ_ROLE_NAMESPACE_ADMIN, col(r, i, 1))) {
        return true;
    }
    if (strcmp(col(r, i, 3), w->who.id) == 0) { /* ownership counts while holding a role there */
        return sandbox_rules_share_active(w->who.bindings, w->who.n_bindings, col(r, i, 1));
    }
    return shared_with(cl, &w->who, col(r, i, 0), col(r, i, 1));
}

/* The watch's visibility rule for a sandbox message (from an event payload). */
static bool payload_visible(struct store_client *cl, const struct watch *w, const Gantry__V1__Sandbox *sb)
{
    if (sb->meta == NULL || sb->spec == NULL) {
        return false;
    }
    const Gantry__V1__LabelSelector *sel = w->selector;
    for (size_t i = 0; sel != NULL && i < sel->n_match_labels; i++) {
        bool found = false;
        for (size_t j = 0; j < sb->meta->n_labels; j++) {
            found = found || (strcmp(sb->meta->labels[j]->key, sel->match_labels[i]->key) == 0 &&
                              strcmp(sb->meta->labels[j]->value, sel->match_labels[i]->value) == 0);
        }
        if (!found) {
            return false;
        }
    }
    if (global_reader(&w->who) || role_in(&w->who, AZ_ROLE_NAMESPACE_ADMIN, sb->meta->namespace_)) {
        return true;
    }
    if (strcmp(sb->spec->owner_id, w->who.id) == 0) { /* ownership counts while holding a role there */
        return sandbox_rules_share_active(w->who.bindings, w->who.n_bindings, sb->meta->namespace_);
    }
    return shared_with(cl, &w->who, sb->meta->id, sb->meta->namespace_);
}

/* A watch outlives the authentication of its call: every WATCH_REFRESH_MS it checks the call's
 * credential again (an API key revoked, deleted or past its expiry, a token past its exp plus
 * leeway, end it) and reloads the watcher's principal and bindings from the store, as a call's
 * authentication would (at most AUTHN_CACHE_TTL_MS old), so a removed binding changes what it
 * delivers, and a disabled or deleted principal, or one without a role left in the watched
 * namespace, ends it, within the revocation bound. Returns 0; GERR_UNAUTH or GERR_PERM with the
 * client's message in @why; or the store's error (transient: the caller keeps the bindings it has
 * and tries again). */
#define WATCH_REFRESH_MS (AUTHN_CACHE_TTL_MS / 2)

static int watch_credential(struct store_client *cl, const struct watch *w, int64_t now_ms, char *why,
                            size_t len)
{
    if (w->who.not_after_ms != 0 && now_ms >= w->who.not_after_ms) {
        snprintf(why, len, "the watch ended: its credential expired");
        return GERR_UNAUTH;
    }
    if (w->who.key_id[0] == '\0') {
        return 0;
    }
    struct proto_value k[] = {proto_text(w->who.key_id)};
    int64_t revoked = 0;
    int rv = store_client_query_int(cl, "SELECT revoked_at_ms FROM api_keys WHERE id = ?", k, 1, &revoked);
    if (rv == GERR_NOTFOUND || (rv == 0 && revoked != 0)) {
        snprintf(why, len, "the watch ended: its API key was %s", rv == 0 ? "revoked" : "deleted");
        return GERR_UNAUTH;
    }
    return rv;
}

static int watch_refresh(struct store_client *cl, struct watch *w, char *why, size_t len)
{
    struct clock *clk = clock_system();
    int rv = watch_credential(cl, w, (int64_t)clk->wall_ms(clk), why, len);
    if (rv != 0) {
        return rv;
    }
    struct proto_value p[] = {proto_text(w->who.id)};
    int64_t disabled = 0;
    rv = store_client_query_int(cl, "SELECT disabled FROM principals WHERE id = ?", p, 1, &disabled);
    if (rv == GERR_NOTFOUND || (rv == 0 && disabled != 0)) {
        snprintf(why, len, "principal %s was disabled or deleted", w->who.id);
        return GERR_UNAUTH;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    if (rv == 0) {
        rv = store_client_query(
            cl, "SELECT role, namespace, scope FROM role_bindings WHERE principal_id = ? ORDER BY id", p, 1,
            &rows);
    }
    if (rv == 0) {
        w->who.n_bindings = 0;
        for (size_t i = 0; i < rows.n_rows && w->who.n_bindings < AUTHN_MAX_BINDINGS; i++) {
            struct authz_binding *b = &w->who.bindings[w->who.n_bindings];
            memset(b, 0, sizeof *b);
            b->role = authz_role_parse(col(&rows, i, 0));
            snprintf(b->ns, sizeof b->ns, "%s", col(&rows, i, 1));
            if (authz_scope_parse(col(&rows, i, 2), &b->scope) == 0 && b->role != 0) {
                w->who.n_bindings++; /* an unreadable scope grants nothing, as in authentication */
            }
        }
    }
    proto_rows_close(&rows);
    if (rv == 0 && w->ns[0] != '\0' && !global_reader(&w->who) &&
        !sandbox_rules_share_active(w->who.bindings, w->who.n_bindings, w->ns)) {
        snprintf(why, len, "the watch ended: you no longer hold a role in namespace \"%.63s\"", w->ns);
        return GERR_PERM;
    }
    return rv;
}

static void send_event(struct watch *w, Gantry__V1__EventType type, Gantry__V1__Sandbox *sb,
                       uint64_t revision)
{
    Gantry__V1__SandboxEvent ev = GANTRY__V1__SANDBOX_EVENT__INIT;
    ev.type = type;
    ev.sandbox = sb;
    ev.revision = revision;
    grpc_call_send_async(w->call, &ev.base);
}

static int watch_initial(struct store_client *cl, struct watch *w, uint64_t *last)
{
    int64_t rev = 0;
    int rv = store_client_query_int(cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &rev);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    if (rv == 0) {
        rv = list_visible(cl, &w->who, w->ns, "", "", 100000, &rows);
    }
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        if (watch_visible(cl, w, &rows, i)) {
            struct sb_msg m;
            sb_from_row(&m, &rows, i);
            send_event(w, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED, &m.s, (uint64_t)rev);
            sb_msg_free(&m);
        }
    }
    proto_rows_close(&rows);
    if (rv == 0) {
        *last = (uint64_t)rev;
        send_event(w, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK, NULL, (uint64_t)rev);
    }
    return rv;
}

/* The newest change event deleted by retention (0: none). */
static int compacted_revision(struct store_client *cl, int64_t *out)
{
    int rv = store_client_query_int(
        cl, "SELECT CAST(value AS INTEGER) FROM cluster_meta WHERE key = 'events_compacted_revision'", NULL,
        0, out);
    if (rv == GERR_NOTFOUND) {
        *out = 0;
        rv = 0;
    }
    return rv;
}

/* Changes after *@last up to the revision read first; *@last advances. *@gone is set (and
 * GERR_ABORTED returned) when events the watch still needs were deleted by retention: the marker
 * is read after the events, and retention moves it in the transaction that deletes them, so a
 * marker at or below *@last proves nothing needed was missing. */
static int watch_poll(struct store_client *cl, struct watch *w, uint64_t *last, bool *sent, int64_t *gone)
{
    int64_t upto = 0, compacted = 0;
    int rv = store_client_query_int(cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &upto);
    if (rv == 0 && (uint64_t)upto <= *last) {
        rv = compacted_revision(cl, &compacted);
        if (rv == 0 && (uint64_t)compacted > *last) {
            *gone = compacted;
            rv = GERR_ABORTED;
        }
        return rv;
    }
    if (rv != 0) {
        return rv;
    }
    struct proto_rows ev;
    proto_rows_init(&ev, 0);
    struct proto_value p[] = {proto_text(w->ns), proto_int((int64_t)*last), proto_int(upto)};
    rv = store_client_query(
        cl,
        "SELECT revision, object_id, type, namespace, payload FROM events WHERE kind = 'Sandbox' AND "
        "(?1 = '' OR namespace = ?1) AND revision > ?2 AND revision <= ?3 ORDER BY revision LIMIT 1000",
        p, 3, &ev);
    uint64_t reached = (uint64_t)upto;
    if (rv == 0 && ev.n_rows == 1000) {
        reached = (uint64_t)coli(&ev, ev.n_rows - 1, 0); /* more to come: continue from there */
    }
    if (rv == 0) {
        rv = compacted_revision(cl, &compacted);
    }
    if (rv == 0 && (uint64_t)compacted > *last) {
        *gone = compacted;
        proto_rows_close(&ev);
        return GERR_ABORTED;
    }
    for (size_t i = 0; rv == 0 && i < ev.n_rows; i++) {
        uint64_t rev = (uint64_t)coli(&ev, i, 0);
        const char *type = col(&ev, i, 2);
        if (strcmp(type, "DELETED") == 0) {
            /* Deleted rows are gone; the event says which. Callers that never saw it ignore it. */
            Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
            Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
            meta.id = (char *)col(&ev, i, 1);
            meta.namespace_ = (char *)col(&ev, i, 3);
            meta.resource_version = rev;
            sb.meta = &meta;
            send_event(w, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED, &sb, rev);
            *sent = true;
            continue;
        }
        const struct proto_value *payload = proto_rows_at(&ev, i, 4);
        if (payload->type == PROTO_BLOB && payload->u.b.n > 0) {
            /* The state this change left: every change is delivered, none merged. */
            Gantry__V1__Sandbox *sb = (Gantry__V1__Sandbox *)protobuf_c_message_unpack(
                &gantry__v1__sandbox__descriptor, NULL, payload->u.b.n, (const uint8_t *)payload->u.b.s);
            if (sb != NULL && payload_visible(cl, w, sb)) {
                send_event(w,
                           strcmp(type, "ADDED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                                      : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED,
                           sb, rev);
                *sent = true;
            }
            if (sb != NULL) {
                protobuf_c_message_free_unpacked(&sb->base, NULL);
            }
            continue;
        }
        struct proto_rows r;
        proto_rows_init(&r, 0);
        struct proto_value q[] = {proto_text(col(&ev, i, 1))};
        rv = store_client_query(cl, "SELECT " SB_COLS " FROM sandboxes WHERE id = ?", q, 1, &r);
        /* Send the object only at its latest event (older ones would show a newer state). */
        if (rv == 0 && r.n_rows == 1 && (uint64_t)coli(&r, 0, 11) == rev && watch_visible(cl, w, &r, 0)) {
            struct sb_msg m;
            sb_from_row(&m, &r, 0);
            send_event(w,
                       strcmp(type, "ADDED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                                  : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED,
                       &m.s, rev);
            sb_msg_free(&m);
            *sent = true;
        }
        proto_rows_close(&r);
    }
    proto_rows_close(&ev);
    if (rv == 0) {
        *last = reached;
    }
    return rv;
}

static void *watch_main(void *arg)
{
    struct watch *w = arg;
    struct store_client cl;
    int rv = store_client_init(&cl, &w->svc->store_cfg);
    uint64_t last = w->since;
    if (rv == 0 && w->since == 0) {
        rv = watch_initial(&cl, w, &last);
    }
    struct clock *clk = clock_system();
    uint64_t last_bookmark = clock_mono_ms(clk), last_refresh = last_bookmark;
    int64_t gone = 0;
    char denied[GERR_MSG_SIZE] = "";
    int denied_rv = 0;
    while (rv == 0 && !atomic_load(&w->svc->stopping) && !grpc_call_cancelled(w->call)) {
        bool sent = false;
        if (clock_mono_ms(clk) - last_refresh >= WATCH_REFRESH_MS) {
            int frv = watch_refresh(&cl, w, denied, sizeof denied);
            if (frv == GERR_UNAUTH || frv == GERR_PERM) {
                denied_rv = frv;
                break;
            }
            last_refresh = frv == 0 ? clock_mono_ms(clk) : last_refresh;
        }
        int prv = watch_poll(&cl, w, &last, &sent, &gone);
        if (prv != 0 && prv != GERR_NOLEADER && prv != GERR_CLOSED && prv != GERR_TIMEOUT) {
            rv = prv; /* transient store errors are retried; others end the watch */
            break;
        }
        uint64_t now = clock_mono_ms(clk);
        if (prv == 0 && (sent || now - last_bookmark >= 5000)) {
            send_event(w, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK, NULL, last);
            last_bookmark = now;
        }
        clk->sleep_ns(clk, (uint64_t)SANDBOXES_WATCH_POLL_MS * 1000000u);
    }
    if (denied_rv != 0) {
        grpc_call_finish_async(
            w->call, denied_rv == GERR_UNAUTH ? GRPC_STATUS_UNAUTHENTICATED : GRPC_STATUS_PERMISSION_DENIED,
            denied, NULL);
    } else if (gone > 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "revision %" PRIu64 " is older than the retained change history (events up to %" PRId64
                 " were deleted): list again and watch from the list's revision",
                 last, gone);
        grpc_call_finish_async(w->call, GRPC_STATUS_OUT_OF_RANGE, msg, NULL);
    } else if (rv != 0) {
        grpc_call_finish_async(w->call, grpc_status_from_gerr(rv),
                               cl.errmsg[0] != '\0' ? cl.errmsg : gerr_str(rv), NULL);
    } else if (atomic_load(&w->svc->stopping)) {
        grpc_call_finish_async(w->call, GRPC_STATUS_UNAVAILABLE,
                               "the replica is stopping: watch again from the last revision", NULL);
    } else {
        grpc_call_finish_async(w->call, GRPC_STATUS_CANCELLED, "cancelled", NULL);
    }
    store_client_close(&cl);
    atomic_fetch_sub(&w->svc->watches, 1);
    mem_free(w);
    return NULL;
}

static void sb_watch(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__WatchSandboxesRequest *req = (const void *)grpc_call_request(ctx->call);
    int64_t rev = 0;
    if (store_client_query_int(ctx->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                               &rev) == 0 &&
        req->since_revision > (uint64_t)rev) {
        gate_fail(ctx, GRPC_STATUS_OUT_OF_RANGE,
                  "since_revision %" PRIu64 " is in the future (the cluster is at %" PRId64 ")",
                  req->since_revision, rev);
        return;
    }
    if (atomic_fetch_add(&svc->watches, 1) >= SANDBOXES_MAX_WATCHES || atomic_load(&svc->stopping)) {
        atomic_fetch_sub(&svc->watches, 1);
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "this replica serves %u watches already: try another replica", SANDBOXES_MAX_WATCHES);
        return;
    }
    struct watch *w = mem_zalloc(sizeof *w);
    w->svc = svc;
    w->call = ctx->call;
    w->who = ctx->who;
    w->owner_check = ctx->decision.filter;
    snprintf(w->ns, sizeof w->ns, "%s", req->namespace_);
    w->selector = req->selector;
    w->since = req->since_revision;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watch_main, w) != 0) {
        atomic_fetch_sub(&svc->watches, 1);
        mem_free(w);
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a watch thread");
    }
    pthread_attr_destroy(&attr);
}

void sandboxes_svc_stop(struct sandboxes_svc *svc)
{
    atomic_store(&svc->stopping, true);
    struct clock *clk = clock_system();
    for (int i = 0; i < 300 && atomic_load(&svc->watches) > 0; i++) {
        clk->sleep_ns(clk, 10 * 1000000ull);
    }
}

int sandboxes_svc_register(struct gate *g, struct sandboxes_svc *svc, char *errmsg)
{
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Sandboxes/Create", sb_create},
        {"/gantry.v1.Sandboxes/Get", sb_get},
        {"/gantry.v1.Sandboxes/List", sb_list},
        {"/gantry.v1.Sandboxes/Delete", sb_delete},
        {"/gantry.v1.Sandboxes/Share", sb_share},
        {"/gantry.v1.Sandboxes/Unshare", sb_unshare},
        {"/gantry.v1.Sandboxes/ListSharedWithMe", sb_shared_with_me},
        {"/gantry.v1.Sandboxes/Watch", sb_watch},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, svc) != 0) {
            gerr_set(errmsg, "sandboxes service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
