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
#include "api/services/model_read.h"
#include "api/services/providers_svc.h"
#include "api/services/share_index.h"
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
    int rv = store_tx_query_prepared(tx, "SELECT " SB_COLS " FROM sandboxes WHERE namespace = ? AND name = ?",
                                     p, 2, rows);
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
    int rv = store_tx_query_prepared(tx, CREATE_FACTS_SQL, q, 2, &rows);
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

/* CreateSandbox's memo in a writer batch (store_tx_memo), one per namespace: the facts a create
 * of the batch read, as the batch's later successful creates left them. A create changes nothing
 * of them but the usage, which it adds to the memo; every other call drops the memos (its memo
 * class differs), as does any failed call. The name is the one fact a memo cannot give: the
 * INSERT's UNIQUE (namespace, name) checks it, and a refusal is answered ALREADY_EXISTS first when
 * the name is taken, as it would be without the memo (create_taken_first). */
#define CREATE_MEMO_CLASS "Sandboxes.Create"

struct create_memo {
    struct quota_state quota;
    Gantry__V1__Policy *gw, *nsp;
};

static void create_memo_free(void *p)
{
    struct create_memo *m = p;
    policy_rules_free(m->gw);
    policy_rules_free(m->nsp);
    mem_free(m);
}

/* ALREADY_EXISTS for a create of a taken name, with or without the memo. */
static int create_name_taken(struct store_tx *tx, const char *ns, const char *name)
{
    return res_fail(tx, GERR_EXISTS, "sandbox \"%.63s\" already exists in namespace \"%.63s\"", name, ns);
}

/* The refusals of create_tx's checks (not the store's errors, which end the transaction). */
static bool create_refusal(int rv)
{
    return rv == GERR_PERM || rv == GERR_REFUSED || rv == GERR_INVAL || rv == GERR_TOOBIG ||
           rv == GERR_NOTFOUND || rv == GERR_CONSTRAINT;
}

/* A create whose facts came from the memo failed with @rv: ALREADY_EXISTS instead when the name is
 * taken (the facts query checks the name before anything else), else @rv with its message. */
static int create_taken_first(struct store_tx *tx, const char *ns, const char *name, int rv)
{
    char msg[GERR_MSG_SIZE];
    memcpy(msg, store_tx_errmsg(tx), sizeof msg);
    int64_t n = 0;
    struct proto_value q[] = {proto_text(ns), proto_text(name)};
    int qrv = store_tx_query_prepared_int(
        tx, "SELECT count(*) FROM sandboxes WHERE namespace = ?1 AND name = ?2", q, 2, &n);
    if (qrv != 0) {
        return qrv;
    }
    if (n > 0) {
        return create_name_taken(tx, ns, name);
    }
    memcpy(store_tx_errmsg(tx), msg, sizeof msg);
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
    char memo_key[STORE_MEMO_KEY_MAX + 1];
    snprintf(memo_key, sizeof memo_key, "create-facts/%s", ns);
    struct create_memo *memo = store_tx_memo(tx, memo_key);
    bool name_unchecked = memo != NULL; /* the facts come from an earlier create of the batch */
    int rv = 0;
    if (memo != NULL) {
        memset(&f, 0, sizeof f);
        f.quota = memo->quota;
        f.gw = memo->gw;
        f.nsp = memo->nsp;
    } else {
        rv = create_facts_tx(tx, ns, name, &f);
        if (rv == 0) {
            memo = mem_zalloc(sizeof *memo);
            *memo = (struct create_memo){.quota = f.quota, .gw = f.gw, .nsp = f.nsp};
            if (!store_tx_memo_set(tx, memo_key, memo, create_memo_free)) {
                mem_free(memo); /* not in a writer batch: the policies stay f's */
                memo = NULL;
            }
        }
    }
    if (rv == 0 && f.exists) {
        rv = create_name_taken(tx, ns, name);
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
    if (memo == NULL) {
        policy_rules_free(f.gw);
        policy_rules_free(f.nsp);
    }
    if (rv == 0) {
        rv = driver_admits_tx(tx, c, a->svc, in);
    }
    if (rv == 0) {
        rv = tenants_charge_decide(tx, ns, &f.quota, 1, (int)in->spec->gpu_count, lifetime, c->warning,
                                   sizeof c->warning);
    }
    if (rv != 0 && name_unchecked && create_refusal(rv)) {
        rv = create_taken_first(tx, ns, name, rv);
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
    if (rv == GERR_CONSTRAINT && name_unchecked) {
        rv = create_taken_first(tx, ns, name, rv); /* the INSERT's UNIQUE (namespace, name) */
    }
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
    if (rv == 0 && memo != NULL) {
        /* What the usage upsert just did, for the batch's next create in this namespace. */
        memo->quota.used_sandboxes += 1;
        memo->quota.used_gpus += (int64_t)spec.gpu_count;
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
    res_mutate_memo(ctx, svc->env, req->request_id, &gantry__v1__sandbox__descriptor, create_tx, &a,
                    CREATE_MEMO_CLASS);
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

struct watch_hub;
static bool hub_get(struct watch_hub *h, struct gate_ctx *ctx, const Gantry__V1__GetSandboxRequest *req,
                    uint64_t need);
static bool hub_list(struct watch_hub *h, struct gate_ctx *ctx, const Gantry__V1__ListSandboxesRequest *req,
                     const struct page_req *page, uint64_t need);
static struct feed *hub_feed(struct watch_hub *h);

/* The read options of a model-served call (api/services/model_read.h): true with *@need set when
 * the model may answer (at *@need or later); false when the call was answered (a bad option, a
 * min_revision not reached) or, with *@answered false, when the store must answer. */
static bool read_wait(struct sandboxes_svc *svc, struct gate_ctx *ctx, const Gantry__V1__ReadOptions *o,
                      uint64_t *need, bool *answered)
{
    enum model_gate g = model_read_gate(ctx, hub_feed(svc->hub), !svc->store_reads, o, need);
    *answered = g == MODEL_GATE_ANSWERED;
    return g == MODEL_GATE_MODEL;
}
static bool hub_shared_with_me(struct watch_hub *h, struct gate_ctx *ctx,
                               const Gantry__V1__ListSharedWithMeRequest *req, const struct page_req *page,
                               uint64_t need);

/* Answered from the replica's model after a read index (hub_get), so a Get through any replica sees
 * every write acknowledged before it; from the store when the model cannot answer. */
static void sb_get(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__GetSandboxRequest *req = (const void *)grpc_call_request(ctx->call);
    uint64_t need = 0;
    bool answered = false;
    if (read_wait(svc, ctx, req->read, &need, &answered) && hub_get(svc->hub, ctx, req, need)) {
        return;
    }
    if (answered) {
        return;
    }
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

/* Answered from the replica's model after a read index (hub_list), with the same pages as the
 * store path below; from the store when the model cannot answer. */
static void sb_list(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__ListSandboxesRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NS_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    if (read_wait(svc, ctx, req->read, &need, &answered) && hub_list(svc->hub, ctx, req, &page, need)) {
        return;
    }
    if (answered) {
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
/* From the model when it can answer (hub_shared_with_me), with the same pages, as the call's read
 * options ask (read_wait, as sb_list); else the store. The response's revision is the model's, or
 * the store's cluster revision read before the rows (as sb_list's). */
static void sb_shared_with_me(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    const Gantry__V1__ListSharedWithMeRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NS_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    if (read_wait(svc, ctx, req->read, &need, &answered) &&
        hub_shared_with_me(svc->hub, ctx, req, &page, need)) {
        return;
    }
    if (answered) {
        return;
    }
    unsigned limit = page.limit;
    int64_t revision = 0;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ctx->who.id), proto_text(req->namespace_), proto_text(page.after),
                              proto_int(limit + 1)};
    int rv = store_client_query_int(ctx->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &revision);
    /* Column 15 is the share, [access, created_by, created_at_ms], packed into one column (dqlite
     * 1.11 reads at most 16) and renamed in the subquery so that SB_COLS stay the sandbox's. */
    if (rv == 0) {
        rv = store_client_query(
            ctx->cl,
            "SELECT " SB_COLS ", sh FROM sandboxes JOIN (SELECT sandbox_id AS sh_id, json_array(access, "
            "created_by, created_at_ms) AS sh FROM shares WHERE grantee_id = ?1) ON sh_id = sandboxes.id "
            "WHERE (?2 = '' OR namespace = ?2) AND (namespace || '/' || name) > ?3 ORDER BY namespace, name "
            "LIMIT ?4",
            p, 4, &rows);
    }
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
    resp.revision = (uint64_t)revision;
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

/* --- Watch: served from the replica's change feed (store/feed.h) ---
 *
 * One hub per replica keeps the model (every sandbox's latest state, unpacked once, by id) at the
 * feed's revision, a ring of the last WATCH_RING sandbox events, the watchers and their
 * credentials (one entry per distinct principal and credential). All of it under hub->mu: the feed
 * thread applies events and fans them out; a Watch handler registers its watcher under the same
 * lock, so a watcher sees every event after its start exactly once. */

struct sb_obj { /* an unpacked sandbox shared by the model and the ring */
    Gantry__V1__Sandbox *sb;
    uint8_t *packed; /* @sb packed once (obj_new): what a Get sends */
    size_t packed_len;
    atomic_uint refs; /* taken under hub->mu from a reference the model holds; dropped anywhere */
};

struct ns_sbs { /* the model's sandboxes of one namespace, sorted by name (strcmp) */
    char *ns;
    struct sb_obj **v; /* the references are the model's by-id index's */
    size_t n, cap;
};

struct sb_entry {
    char *id;
    struct sb_obj *obj;
    struct sb_entry *next;
};

struct sb_index { /* a chained hash of sb_entry by key (id, or "namespace/name") */
    struct sb_entry **buckets;
    size_t n_buckets, n_entries;
};

struct ring_ev {
    uint64_t rev;
    Gantry__V1__EventType type;
    char *id, *ns;
    struct sb_obj *obj; /* NULL for DELETED */
};

struct watch_cred {
    char key[128]; /* principal id, credential (key id), its end */
    struct authn_principal who;
    char **shares; /* sorted ids of the sandboxes shared with who */
    size_t n_shares;
    uint64_t refreshed_ms;
    int denied; /* GERR_UNAUTH or GERR_PERM once the credential or principal is gone */
    char why[GERR_MSG_SIZE];
    unsigned refs;
    struct watch_cred *next;
};

struct watch {
    struct grpc_call *call;
    struct watch_cred *cred;
    char ns[64];
    const Gantry__V1__LabelSelector *selector; /* in the call's arena, which our reference keeps */
    uint64_t from;                             /* every event up to here was delivered or skipped */
    bool sent;
    uint64_t last_bookmark_ms;
    size_t allowance; /* bytes its first list (or replay) queued at once, allowed on top of
                       * WATCH_MAX_UNSENT until the client has once drained below that */
    struct watch *next;
};

struct watch_hub {
    pthread_mutex_t mu;
    struct feed *feed;
    struct feed_sub sub;
    struct sandboxes_svc *svc;
    bool ready, need_reload, stopping;
    uint64_t rev;        /* the model's revision */
    size_t total_unsent; /* bytes queued to watchers and not yet sent, summed at each applied pass
                          * (and grown by each new watch's first list): new watches are refused
                          * above WATCH_TOTAL_UNSENT */
    struct sb_index by_id, by_name;
    struct ns_sbs **nss; /* every namespace with a sandbox in the model, sorted by name */
    size_t n_nss, cap_nss;
    struct share_index shares; /* every share row (sandbox -> grantee, access, by, at) */
    bool shares_stale;         /* a share re-read failed: readers use the store until on_applied
                                * has read every share again */
    struct ring_ev ring[WATCH_RING];
    size_t ring_head, ring_n; /* oldest at ring_head */
    uint64_t ring_floor;      /* the ring holds every sandbox event after this revision */
    struct watch *watches;
    struct watch_cred *creds;
};

static struct feed *hub_feed(struct watch_hub *h)
{
    return h != NULL ? h->feed : NULL;
}

static void obj_unref(struct sb_obj *o)
{
    if (o != NULL && --o->refs == 0) {
        protobuf_c_message_free_unpacked(&o->sb->base, NULL);
        mem_free(o->packed);
        mem_free(o);
    }
}

/* A model object for @sb (taken), packed once; no reference yet. */
static struct sb_obj *obj_new(Gantry__V1__Sandbox *sb)
{
    struct sb_obj *o = mem_zalloc(sizeof *o);
    o->sb = sb;
    o->packed_len = protobuf_c_message_get_packed_size(&sb->base);
    o->packed = mem_alloc(o->packed_len + 1);
    protobuf_c_message_pack(&sb->base, o->packed);
    return o;
}

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

static struct sb_entry **index_slot(struct sb_index *x, const char *key)
{
    struct sb_entry **p = &x->buckets[str_hash(key) % x->n_buckets];
    while (*p != NULL && strcmp((*p)->id, key) != 0) {
        p = &(*p)->next;
    }
    return p;
}

static void index_grow(struct sb_index *x)
{
    size_t nb = x->n_buckets * 2;
    struct sb_entry **b = mem_zalloc(sizeof *b * nb);
    for (size_t i = 0; i < x->n_buckets; i++) {
        for (struct sb_entry *e = x->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            size_t k = str_hash(e->id) % nb;
            e->next = b[k];
            b[k] = e;
        }
    }
    mem_free(x->buckets);
    x->buckets = b;
    x->n_buckets = nb;
}

/* Takes a reference to @o (NULL: remove @key). */
static void index_set(struct sb_index *x, const char *key, struct sb_obj *o)
{
    struct sb_entry **p = index_slot(x, key);
    if (*p != NULL) {
        obj_unref((*p)->obj);
        if (o != NULL) {
            (*p)->obj = o;
            o->refs++;
            return;
        }
        struct sb_entry *e = *p;
        *p = e->next;
        mem_free(e->id);
        mem_free(e);
        x->n_entries--;
        return;
    }
    if (o == NULL) {
        return;
    }
    struct sb_entry *e = mem_zalloc(sizeof *e);
    e->id = mem_strdup(key);
    e->obj = o;
    o->refs++;
    *p = e;
    if (++x->n_entries > 2 * x->n_buckets) {
        index_grow(x);
    }
}

static void index_clear(struct sb_index *x)
{
    for (size_t i = 0; i < x->n_buckets; i++) {
        for (struct sb_entry *e = x->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            obj_unref(e->obj);
            mem_free(e->id);
            mem_free(e);
        }
        x->buckets[i] = NULL;
    }
    x->n_entries = 0;
}

static void index_init(struct sb_index *x)
{
    x->n_buckets = 1024;
    x->buckets = mem_zalloc(sizeof *x->buckets * x->n_buckets);
    x->n_entries = 0;
}

static void name_key(char *key, size_t len, const char *ns, const char *name)
{
    snprintf(key, len, "%s/%s", ns, name); /* DNS labels: never a '/' in either */
}

static struct sb_entry **model_slot(struct watch_hub *h, const char *id)
{
    return index_slot(&h->by_id, id);
}

/* The position of namespace @ns in h->nss, or where it would go (*@found false). */
static size_t ns_pos(const struct watch_hub *h, const char *ns, bool *found)
{
    size_t lo = 0, hi = h->n_nss;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(h->nss[mid]->ns, ns);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = false;
    return lo;
}

static struct ns_sbs *ns_find(const struct watch_hub *h, const char *ns)
{
    bool found = false;
    size_t i = ns_pos(h, ns, &found);
    return found ? h->nss[i] : NULL;
}

/* The first position in @l whose name is not below @name (*@found: equal). */
static size_t name_pos(const struct ns_sbs *l, const char *name, bool *found)
{
    size_t lo = 0, hi = l->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(l->v[mid]->sb->meta->name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Put @o (meta set) in its namespace's list, replacing one of the same name. */
static void ns_index_put(struct watch_hub *h, struct sb_obj *o)
{
    bool found = false;
    size_t at = ns_pos(h, o->sb->meta->namespace_, &found);
    if (!found) {
        if (h->n_nss == h->cap_nss) {
            h->cap_nss = h->cap_nss != 0 ? h->cap_nss * 2 : 16;
            h->nss = mem_realloc(h->nss, sizeof *h->nss * h->cap_nss);
        }
        memmove(h->nss + at + 1, h->nss + at, sizeof *h->nss * (h->n_nss - at));
        h->nss[at] = mem_zalloc(sizeof **h->nss);
        h->nss[at]->ns = mem_strdup(o->sb->meta->namespace_);
        h->n_nss++;
    }
    struct ns_sbs *l = h->nss[at];
    size_t i = name_pos(l, o->sb->meta->name, &found);
    if (found) {
        l->v[i] = o;
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap != 0 ? l->cap * 2 : 8;
        l->v = mem_realloc(l->v, sizeof *l->v * l->cap);
    }
    memmove(l->v + i + 1, l->v + i, sizeof *l->v * (l->n - i));
    l->v[i] = o;
    l->n++;
}

/* Take @o (meta set) out of its namespace's list, if it is there. */
static void ns_index_drop(struct watch_hub *h, const struct sb_obj *o)
{
    bool found = false;
    size_t at = ns_pos(h, o->sb->meta->namespace_, &found);
    if (!found) {
        return;
    }
    struct ns_sbs *l = h->nss[at];
    size_t i = name_pos(l, o->sb->meta->name, &found);
    if (!found || l->v[i] != o) {
        return;
    }
    memmove(l->v + i, l->v + i + 1, sizeof *l->v * (l->n - i - 1));
    if (--l->n == 0) {
        mem_free(l->v);
        mem_free(l->ns);
        mem_free(l);
        memmove(h->nss + at, h->nss + at + 1, sizeof *h->nss * (h->n_nss - at - 1));
        h->n_nss--;
    }
}

/* The model: by id, by namespace and name for Get, and per namespace in name order for List.
 * Takes a reference to @o (NULL: delete). */
static void model_set(struct watch_hub *h, const char *id, struct sb_obj *o)
{
    char key[160];
    struct sb_entry *old = *index_slot(&h->by_id, id);
    if (old != NULL && old->obj->sb->meta != NULL) {
        name_key(key, sizeof key, old->obj->sb->meta->namespace_, old->obj->sb->meta->name);
        index_set(&h->by_name, key, NULL);
        ns_index_drop(h, old->obj);
    }
    if (o != NULL && o->sb->meta != NULL) {
        name_key(key, sizeof key, o->sb->meta->namespace_, o->sb->meta->name);
        index_set(&h->by_name, key, o);
        ns_index_put(h, o);
    }
    index_set(&h->by_id, id, o);
}

static void model_clear(struct watch_hub *h)
{
    for (size_t i = 0; i < h->n_nss; i++) {
        mem_free(h->nss[i]->v);
        mem_free(h->nss[i]->ns);
        mem_free(h->nss[i]);
    }
    h->n_nss = 0;
    index_clear(&h->by_id);
    index_clear(&h->by_name);
    share_index_clear(&h->shares);
    h->shares_stale = false;
}

static void ring_drop_oldest(struct watch_hub *h)
{
    struct ring_ev *r = &h->ring[h->ring_head];
    h->ring_floor = r->rev;
    obj_unref(r->obj);
    mem_free(r->id);
    mem_free(r->ns);
    memset(r, 0, sizeof *r);
    h->ring_head = (h->ring_head + 1) % WATCH_RING;
    h->ring_n--;
}

static void ring_clear(struct watch_hub *h, uint64_t floor)
{
    while (h->ring_n > 0) {
        ring_drop_oldest(h);
    }
    h->ring_floor = floor;
}

static void ring_push(struct watch_hub *h, uint64_t rev, Gantry__V1__EventType type, const char *id,
                      const char *ns, struct sb_obj *o)
{
    if (h->ring_n == WATCH_RING) {
        ring_drop_oldest(h);
    }
    struct ring_ev *r = &h->ring[(h->ring_head + h->ring_n) % WATCH_RING];
    r->rev = rev;
    r->type = type;
    r->id = mem_strdup(id);
    r->ns = mem_strdup(ns);
    r->obj = o;
    if (o != NULL) {
        o->refs++;
    }
    h->ring_n++;
}

typedef bool (*share_fn)(const char *id, const char *ns, void *arg);

/* labels_match (api/rules/labels.h) on an unpacked sandbox: every selector label, same value. */
static bool sb_labels_match(const Gantry__V1__Sandbox *sb, const Gantry__V1__LabelSelector *sel)
{
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
    return true;
}

/* The watch's visibility rule for a sandbox (the state an event left), as Get's: a global reader
 * or the namespace's admin, the owner while holding a role there, or a share (@shared). */
static bool sb_visible(const struct authn_principal *who, const Gantry__V1__LabelSelector *sel,
                       const Gantry__V1__Sandbox *sb, share_fn shared, void *arg)
{
    if (sb->meta == NULL || sb->spec == NULL || !sb_labels_match(sb, sel)) {
        return false;
    }
    if (global_reader(who) || role_in(who, AZ_ROLE_NAMESPACE_ADMIN, sb->meta->namespace_)) {
        return true;
    }
    if (strcmp(sb->spec->owner_id, who->id) == 0) { /* ownership counts while holding a role there */
        return sandbox_rules_share_active(who->bindings, who->n_bindings, sb->meta->namespace_);
    }
    return sandbox_rules_share_active(who->bindings, who->n_bindings, sb->meta->namespace_) &&
           shared(sb->meta->id, sb->meta->namespace_, arg);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool cred_shared(const char *id, const char *ns, void *arg)
{
    (void)ns;
    const struct watch_cred *c = arg;
    return c->n_shares > 0 && bsearch(&id, c->shares, c->n_shares, sizeof *c->shares, cmp_str) != NULL;
}

struct store_shared {
    struct store_client *cl;
    const struct authn_principal *who;
};

static bool store_shared_fn(const char *id, const char *ns, void *arg)
{
    struct store_shared *s = arg;
    return shared_with(s->cl, s->who, id, ns);
}

static void send_event(struct grpc_call *call, Gantry__V1__EventType type, Gantry__V1__Sandbox *sb,
                       uint64_t revision)
{
    Gantry__V1__SandboxEvent ev = GANTRY__V1__SANDBOX_EVENT__INIT;
    ev.type = type;
    ev.sandbox = sb;
    ev.revision = revision;
    grpc_call_send_async(call, &ev.base);
}

static void send_deleted(struct grpc_call *call, const char *id, const char *ns, uint64_t rev)
{
    /* Deleted rows are gone; the event says which. Callers that never saw it ignore it. */
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    meta.id = (char *)id;
    meta.namespace_ = (char *)ns;
    meta.resource_version = rev;
    sb.meta = &meta;
    send_event(call, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED, &sb, rev);
}

/* Which credential entry serves @who: found or made (its shares read with @cl, outside the lock).
 * The caller holds a reference on return (NULL: the store's error in @cl). */
static struct watch_cred *cred_get(struct watch_hub *h, const struct authn_principal *who,
                                   struct store_client *cl)
{
    char key[128];
    snprintf(key, sizeof key, "%s|%s|%" PRId64, who->id, who->key_id, who->not_after_ms);
    pthread_mutex_lock(&h->mu);
    for (struct watch_cred *c = h->creds; c != NULL; c = c->next) {
        if (strcmp(c->key, key) == 0 && c->denied == 0) {
            c->refs++;
            pthread_mutex_unlock(&h->mu);
            return c;
        }
    }
    pthread_mutex_unlock(&h->mu);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(who->id)};
    if (store_client_query(cl, "SELECT sandbox_id FROM shares WHERE grantee_id = ? ORDER BY sandbox_id", p, 1,
                           &rows) != 0) {
        proto_rows_close(&rows);
        return NULL;
    }
    struct watch_cred *c = mem_zalloc(sizeof *c);
    snprintf(c->key, sizeof c->key, "%s", key);
    c->who = *who;
    c->shares = mem_zalloc(sizeof *c->shares * (rows.n_rows + 1));
    for (size_t i = 0; i < rows.n_rows; i++) {
        c->shares[c->n_shares++] = mem_strdup(col(&rows, i, 0));
    }
    proto_rows_close(&rows);
    qsort(c->shares, c->n_shares, sizeof *c->shares, cmp_str);
    c->refreshed_ms = clock_mono_ms(clock_system());
    c->refs = 1;
    pthread_mutex_lock(&h->mu);
    c->next = h->creds;
    h->creds = c;
    pthread_mutex_unlock(&h->mu);
    return c;
}

static void cred_shares_free(struct watch_cred *c)
{
    for (size_t i = 0; i < c->n_shares; i++) {
        mem_free(c->shares[i]);
    }
    mem_free(c->shares);
    c->shares = NULL;
    c->n_shares = 0;
}

/* Under h->mu. */
static void cred_unref(struct watch_hub *h, struct watch_cred *c)
{
    if (--c->refs > 0) {
        return;
    }
    for (struct watch_cred **p = &h->creds; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    cred_shares_free(c);
    mem_free(c);
}

/* A watch outlives the authentication of its call: every WATCH_REFRESH_MS, once per credential
 * entry whatever the number of its watchers, the hub checks the credential again (an API key
 * revoked, deleted or past its expiry, a token past its exp plus leeway, end it) and reloads the
 * principal, its bindings and the sandboxes shared with it, as a call's authentication would (at
 * most AUTHN_CACHE_TTL_MS old), so a removed binding changes what it delivers and a disabled or
 * deleted principal ends it within the revocation bound. From the change-feed models and this
 * model's share rows when the service has an authn with models (authn_recheck_models), else (or
 * for what they cannot confirm) the store. Sets c->denied with the client's message; a store error
 * keeps what the entry has and tries again at the next interval. */
#define WATCH_REFRESH_MS (AUTHN_CACHE_TTL_MS / 2)

static void cred_refresh(struct watch_hub *h, struct store_client *cl, struct watch_cred *c, int64_t wall_ms)
{
    int rv = authn_recheck_models(h->svc->authn, cl, &c->who, wall_ms, c->why, sizeof c->why);
    if (rv == GERR_UNAUTH) {
        c->denied = GERR_UNAUTH;
        return;
    }
    if (rv != 0) {
        return;
    }
    if (h->svc->authn != NULL && h->ready && !h->need_reload && !h->shares_stale) {
        /* The shares from this model's own share rows, as current as its sandboxes. */
        struct share_row *const *rows = NULL;
        size_t n = share_index_of_grantee(&h->shares, c->who.id, &rows);
        cred_shares_free(c);
        c->shares = mem_zalloc(sizeof *c->shares * (n + 1));
        for (size_t i = 0; i < n; i++) {
            c->shares[c->n_shares++] = mem_strdup(rows[i]->sandbox_id);
        }
        if (c->n_shares > 1) {
            qsort(c->shares, c->n_shares, sizeof *c->shares, cmp_str);
        }
        c->refreshed_ms = clock_mono_ms(clock_system());
        return;
    }
    struct proto_value p[] = {proto_text(c->who.id)};
    struct proto_rows sh;
    proto_rows_init(&sh, 0);
    if (store_client_query(cl, "SELECT sandbox_id FROM shares WHERE grantee_id = ? ORDER BY sandbox_id", p, 1,
                           &sh) == 0) {
        cred_shares_free(c);
        c->shares = mem_zalloc(sizeof *c->shares * (sh.n_rows + 1));
        for (size_t i = 0; i < sh.n_rows; i++) {
            c->shares[c->n_shares++] = mem_strdup(col(&sh, i, 0));
        }
        qsort(c->shares, c->n_shares, sizeof *c->shares, cmp_str);
        c->refreshed_ms = clock_mono_ms(clock_system());
    }
    proto_rows_close(&sh);
}

/* Under h->mu: end @w with @status and @msg, unlink and free it. */
static void watch_end(struct watch_hub *h, struct watch *w, int status, const char *msg)
{
    for (struct watch **p = &h->watches; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    grpc_call_finish_async(w->call, status, msg, NULL);
    cred_unref(h, w->cred);
    atomic_fetch_sub(&h->svc->watches, 1);
    mem_free(w);
}

/* Under h->mu: is @w still served? A cancelled call ends; one whose client left more than
 * WATCH_MAX_UNSENT bytes unread is cut (the hub never waits for one client). */
static bool watch_alive(struct watch_hub *h, struct watch *w)
{
    if (grpc_call_cancelled(w->call)) {
        watch_end(h, w, GRPC_STATUS_CANCELLED, "cancelled");
        return false;
    }
    size_t unsent = grpc_call_unsent(w->call);
    if (unsent <= WATCH_MAX_UNSENT) {
        w->allowance = 0; /* the first list was read: from now on the plain bound */
    }
    if (unsent > WATCH_MAX_UNSENT + w->allowance) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the watch fell behind at revision %" PRIu64 " (more than %u bytes unread): watch again "
                 "from revision %" PRIu64,
                 w->from, WATCH_MAX_UNSENT, w->from);
        watch_end(h, w, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return false;
    }
    return true;
}

/* Under h->mu: cut every watcher (the hub cannot tell what they missed). */
static void watch_end_all(struct watch_hub *h, int status, const char *msg)
{
    while (h->watches != NULL) {
        watch_end(h, h->watches, status, msg);
    }
}

/* Row @i of a "SELECT " SB_COLS result as a model object (no reference yet); NULL if it does not
 * unpack. The bytes are sb_from_row's, so the model answers what the store path does. */
static struct sb_obj *obj_from_row(const struct proto_rows *rows, size_t i)
{
    struct sb_msg m;
    sb_from_row(&m, rows, i);
    size_t n = protobuf_c_message_get_packed_size(&m.s.base);
    uint8_t *buf = mem_alloc(n + 1);
    protobuf_c_message_pack(&m.s.base, buf);
    sb_msg_free(&m);
    Gantry__V1__Sandbox *sb =
        (Gantry__V1__Sandbox *)protobuf_c_message_unpack(&gantry__v1__sandbox__descriptor, NULL, n, buf);
    if (sb == NULL) {
        mem_free(buf);
        return NULL;
    }
    struct sb_obj *o = mem_zalloc(sizeof *o);
    o->sb = sb;
    o->packed = buf;
    o->packed_len = n;
    return o;
}

/* Under h->mu: add share row @i (sandbox_id, grantee_id, access, created_by, created_at_ms) to
 * the model. */
static void share_add_row(struct watch_hub *h, const struct proto_rows *rows, size_t i)
{
    share_index_add(&h->shares, col(rows, i, 0), col(rows, i, 1), strcmp(col(rows, i, 2), "exec") == 0,
                    col(rows, i, 3), coli(rows, i, 4));
}

/* Feed thread, under h->mu: read every share again (after a failed re-read of one sandbox's): a
 * state at least as new as every event applied, so the model only moves forward. */
static int hub_reload_shares(struct watch_hub *h, struct store_client *cl)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(
        cl, "SELECT sandbox_id, grantee_id, access, created_by, created_at_ms FROM shares", NULL, 0, &rows);
    if (rv == 0) {
        share_index_clear(&h->shares);
        for (size_t i = 0; i < rows.n_rows; i++) {
            share_add_row(h, &rows, i);
        }
        h->shares_stale = false;
    }
    proto_rows_close(&rows);
    return rv;
}

/* Feed thread: load the model, sandboxes and shares, from one consistent statement (16 columns,
 * dqlite 1.11's safe maximum: a share row has resource_version -1, which no sandbox has). */
static int hub_reload(struct watch_hub *h, struct store_client *cl)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(
        cl,
        "SELECT " SB_COLS ", rev FROM (SELECT revision AS rev FROM cluster_revision WHERE id = 1) "
        "LEFT JOIN sandboxes ON 1 UNION ALL SELECT sandbox_id, grantee_id, access, created_by, "
        "created_at_ms, '', '', '', '', '', 0, -1, 0, 0, 0, rev FROM (SELECT revision AS rev FROM "
        "cluster_revision WHERE id = 1) JOIN shares ON 1",
        NULL, 0, &rows);
    if (rv != 0 || rows.n_rows == 0) {
        proto_rows_close(&rows);
        return rv != 0 ? rv : GERR_NOTFOUND;
    }
    uint64_t rev = (uint64_t)coli(&rows, 0, 15);
    model_clear(h);
    ring_clear(h, rev);
    for (size_t i = 0; i < rows.n_rows; i++) {
        if (coli(&rows, i, 11) == -1) {
            share_add_row(h, &rows, i);
            continue;
        }
        if (col(&rows, i, 0)[0] == '\0') {
            continue; /* no sandbox at all: the LEFT JOIN's one row */
        }
        struct sb_obj *o = obj_from_row(&rows, i);
        if (o != NULL) {
            model_set(h, col(&rows, i, 0), o);
        }
    }
    proto_rows_close(&rows);
    h->rev = rev;
    h->ready = true;
    h->need_reload = false;
    return 0;
}

static void hub_on_resync(struct store_client *cl, uint64_t rev, void *data)
{
    struct watch_hub *h = data;
    (void)rev;
    pthread_mutex_lock(&h->mu);
    if (h->ready) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "revision %" PRIu64 " is older than the retained change history: list again and watch from "
                 "the list's revision",
                 h->rev);
        watch_end_all(h, GRPC_STATUS_OUT_OF_RANGE, msg);
    }
    h->ready = false;
    h->need_reload = true;
    if (hub_reload(h, cl) != 0) {
        LOG_WARN("sandbox watch: cannot load the sandboxes (%s): trying again", cl->errmsg);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The reconciler's status changes carry the sandbox's id, name, namespace, spec and status, not
 * its labels and creation metadata (those never change after Create, except the deletion time):
 * fill them in from the model's previous state, so the model, the first list of a new watch and
 * label selectors see the whole sandbox. Takes @sb; returns the completed message (or @sb as it
 * was when the model does not hold the sandbox). */
static Gantry__V1__Sandbox *complete_payload(struct watch_hub *h, Gantry__V1__Sandbox *sb)
{
    pthread_mutex_lock(&h->mu);
    struct sb_entry *e = *model_slot(h, sb->meta->id);
    Gantry__V1__Sandbox *out = sb;
    if (e != NULL && e->obj->sb->meta != NULL) {
        const Gantry__V1__ObjectMeta *prev = e->obj->sb->meta;
        Gantry__V1__ObjectMeta meta = *sb->meta;
        meta.n_labels = prev->n_labels;
        meta.labels = prev->labels;
        meta.created_by = prev->created_by;
        meta.created_at_ms = prev->created_at_ms;
        if (meta.deletion_timestamp_ms == 0) {
            meta.deletion_timestamp_ms = prev->deletion_timestamp_ms;
        }
        Gantry__V1__Sandbox whole = *sb;
        whole.meta = &meta;
        size_t n = protobuf_c_message_get_packed_size(&whole.base);
        uint8_t *buf = mem_alloc(n + 1);
        protobuf_c_message_pack(&whole.base, buf);
        out =
            (Gantry__V1__Sandbox *)protobuf_c_message_unpack(&gantry__v1__sandbox__descriptor, NULL, n, buf);
        mem_free(buf);
        if (out != NULL) {
            protobuf_c_message_free_unpacked(&sb->base, NULL);
        } else {
            out = sb;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return out;
}

/* Under h->mu: make @c's share set hold sandbox @id exactly when @shared (kept sorted). */
static void cred_share_set(struct watch_cred *c, const char *id, bool shared)
{
    char *const *hit =
        c->n_shares > 0 ? bsearch(&id, c->shares, c->n_shares, sizeof *c->shares, cmp_str) : NULL;
    if (shared && hit == NULL) {
        c->shares = mem_realloc(c->shares, sizeof *c->shares * (c->n_shares + 1));
        c->shares[c->n_shares++] = mem_strdup(id);
        qsort(c->shares, c->n_shares, sizeof *c->shares, cmp_str);
    } else if (!shared && hit != NULL) {
        size_t i = (size_t)(hit - c->shares);
        mem_free(c->shares[i]);
        memmove(c->shares + i, c->shares + i + 1, sizeof *c->shares * (c->n_shares - i - 1));
        c->n_shares--;
    }
}

/* Share and Unshare write a Sandbox MODIFIED event whose state is the unchanged row (the
 * resource_version the model already holds): the sandbox's grantees changed, and the event does
 * not say how. Is this such an event? */
static bool share_change(struct watch_hub *h, const char *id, const struct sb_obj *o)
{
    pthread_mutex_lock(&h->mu);
    struct sb_entry *old = *model_slot(h, id);
    bool same = old != NULL && old->obj->sb->meta != NULL && o->sb->meta != NULL &&
                old->obj->sb->meta->resource_version == o->sb->meta->resource_version;
    pthread_mutex_unlock(&h->mu);
    return same;
}

/* The hub reads that sandbox's shares once (@cl, outside its lock) into @out, in share_add_row's
 * columns, so that the model's shares and every credential entry's share set are patched before
 * the event is applied and fanned out: a Get at that revision or later sees the change (an
 * acknowledged Unshare is refused to a linearizable read), a grantee's watch gets the sandbox at
 * that very event, and one whose share was removed stops getting it. The rows may show a newer
 * state than the event's (a later share change, whose event comes next): never an older one. */
static int share_change_rows(struct store_client *cl, const char *id, struct proto_rows *out)
{
    struct proto_value q[] = {proto_text(id)};
    return store_client_query(
        cl,
        "SELECT sandbox_id, grantee_id, access, created_by, created_at_ms FROM shares WHERE sandbox_id = ?",
        q, 1, out);
}

static void hub_on_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    struct watch_hub *h = data;
    if (strcmp(ev->kind, "Principal") == 0 && strcmp(ev->type, "DELETED") == 0) {
        /* Deleting a principal deletes its shares in the same transaction, with no Sandbox event. */
        pthread_mutex_lock(&h->mu);
        if (h->ready && ev->revision > h->rev) {
            share_index_drop_grantee(&h->shares, ev->object_id);
        }
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (strcmp(ev->kind, "Sandbox") != 0) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    bool skip = !h->ready || ev->revision <= h->rev;
    pthread_mutex_unlock(&h->mu);
    if (skip) {
        return;
    }
    Gantry__V1__EventType type = strcmp(ev->type, "DELETED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED
                                 : strcmp(ev->type, "ADDED") == 0
                                     ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                     : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED;
    struct sb_obj *o = NULL;
    if (type != GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED && ev->payload != NULL) {
        Gantry__V1__Sandbox *sb = (Gantry__V1__Sandbox *)protobuf_c_message_unpack(
            &gantry__v1__sandbox__descriptor, NULL, ev->payload_len, ev->payload);
        if (sb != NULL && sb->meta != NULL && sb->meta->created_at_ms == 0) {
            sb = complete_payload(h, sb);
        }
        if (sb != NULL) {
            o = obj_new(sb);
            o->refs = 1;
        }
    } else if (type != GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED) {
        /* No payload: read the row once for every watcher, and send it only at its latest event
         * (an older event would show a newer state). */
        struct proto_rows r;
        proto_rows_init(&r, 0);
        struct proto_value q[] = {proto_text(ev->object_id)};
        if (store_client_query(cl, "SELECT " SB_COLS " FROM sandboxes WHERE id = ?", q, 1, &r) == 0 &&
            r.n_rows == 1 && (uint64_t)coli(&r, 0, 11) == ev->revision) {
            o = obj_from_row(&r, 0);
            if (o != NULL) {
                o->refs = 1;
            }
        }
        proto_rows_close(&r);
    }
    struct proto_rows grantees;
    proto_rows_init(&grantees, 0);
    /* A MODIFIED event whose state the hub could not take (no payload and the row moved on, or it
     * does not unpack) may be a share change too: read the shares then as well (rare). */
    bool reshare = type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED &&
                   (o == NULL || share_change(h, ev->object_id, o));
    bool regrant = reshare && share_change_rows(cl, ev->object_id, &grantees) == 0;
    pthread_mutex_lock(&h->mu);
    if (h->ready && ev->revision > h->rev) {
        if (reshare && !regrant) {
            h->shares_stale = true; /* reads go to the store until on_applied reads them all */
            LOG_WARN("sandbox model: cannot read the shares of %s (%s): reading every share again",
                     ev->object_id, cl->errmsg);
        } else if (regrant) {
            share_index_drop_sandbox(&h->shares, ev->object_id);
            for (size_t i = 0; i < grantees.n_rows; i++) {
                share_add_row(h, &grantees, i);
            }
        }
        for (struct watch_cred *c = h->creds; regrant && c != NULL; c = c->next) {
            bool shared = false;
            for (size_t i = 0; i < grantees.n_rows && !shared; i++) {
                shared = strcmp(col(&grantees, i, 1), c->who.id) == 0;
            }
            cred_share_set(c, ev->object_id, shared);
        }
        if (type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED) {
            share_index_drop_sandbox(&h->shares, ev->object_id); /* deleted with the sandbox */
            model_set(h, ev->object_id, NULL);
            ring_push(h, ev->revision, type, ev->object_id, ev->ns, NULL);
        } else if (o != NULL) {
            model_set(h, ev->object_id, o);
            ring_push(h, ev->revision, type, ev->object_id, ev->ns, o);
        }
        for (struct watch *w = h->watches, *next; w != NULL; w = next) {
            next = w->next;
            if (w->from >= ev->revision) {
                continue;
            }
            if (!watch_alive(h, w)) {
                continue;
            }
            if (w->ns[0] == '\0' || strcmp(w->ns, ev->ns) == 0) {
                if (type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED) {
                    send_deleted(w->call, ev->object_id, ev->ns, ev->revision);
                    w->sent = true;
                } else if (o != NULL && sb_visible(&w->cred->who, w->selector, o->sb, cred_shared, w->cred)) {
                    send_event(w->call, type, o->sb, ev->revision);
                    w->sent = true;
                }
            }
            w->from = ev->revision;
        }
        h->rev = ev->revision;
    }
    obj_unref(o);
    pthread_mutex_unlock(&h->mu);
    proto_rows_close(&grantees);
}

static void hub_on_applied(struct store_client *cl, uint64_t rev, void *data)
{
    struct watch_hub *h = data;
    struct clock *clk = clock_system();
    uint64_t now = clock_mono_ms(clk);
    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (h->need_reload && hub_reload(h, cl) != 0) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (h->shares_stale && hub_reload_shares(h, cl) != 0) {
        LOG_WARN("sandbox model: cannot read the shares (%s): trying again", cl->errmsg);
    }
    if (rev > h->rev) {
        h->rev = rev;
    }
    h->total_unsent = 0; /* summed again over every watcher below */
    for (struct watch_cred *c = h->creds; c != NULL; c = c->next) {
        if (c->denied == 0 && now - c->refreshed_ms >= WATCH_REFRESH_MS) {
            cred_refresh(h, cl, c, (int64_t)clk->wall_ms(clk));
        }
    }
    for (struct watch *w = h->watches, *next; w != NULL; w = next) {
        next = w->next;
        if (!watch_alive(h, w)) {
            continue;
        }
        h->total_unsent += grpc_call_unsent(w->call);
        if (w->cred->denied != 0) {
            watch_end(h, w,
                      w->cred->denied == GERR_UNAUTH ? GRPC_STATUS_UNAUTHENTICATED
                                                     : GRPC_STATUS_PERMISSION_DENIED,
                      w->cred->why);
            continue;
        }
        const struct authn_principal *who = &w->cred->who;
        if (w->ns[0] != '\0' && !global_reader(who) &&
            !sandbox_rules_share_active(who->bindings, who->n_bindings, w->ns)) {
            char why[GERR_MSG_SIZE];
            snprintf(why, sizeof why, "the watch ended: you no longer hold a role in namespace \"%.63s\"",
                     w->ns);
            watch_end(h, w, GRPC_STATUS_PERMISSION_DENIED, why);
            continue;
        }
        if (w->from < h->rev) {
            w->from = h->rev;
        }
        if (w->sent || now - w->last_bookmark_ms >= WATCH_BOOKMARK_MS) {
            send_event(w->call, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK, NULL, w->from);
            w->sent = false;
            w->last_bookmark_ms = now;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

/* Get from the model once it holds revision @head (sb_get's read_wait decided it: a read index,
 * a min_revision, or 0 for a stale read the feed's liveness allows; api/services/model_read.h), so
 * the answer is what the read options promise; authorization as sb_get's (may_read: the owner, or a
 * share, both only while the caller holds a role in the namespace), the share from the model's
 * own share rows: no store query. The object's bytes were packed once when the model took it and
 * go out as they are. The model's revision goes out as MODEL_REVISION_TRAILER. Returns false,
 * having answered nothing, when the model cannot answer (no hub, not loaded, stopping, below
 * @head, or its shares being read again): the caller reads the store. */
static bool hub_get(struct watch_hub *h, struct gate_ctx *ctx, const Gantry__V1__GetSandboxRequest *req,
                    uint64_t head)
{
    if (h == NULL) {
        return false;
    }
    char key[160];
    name_key(key, sizeof key, req->namespace_, req->name);
    const struct authn_principal *who = &ctx->who;
    pthread_mutex_lock(&h->mu);
    if (!h->ready || h->need_reload || h->stopping || h->rev < head ||
        (h->shares_stale && ctx->decision.owner_check)) {
        pthread_mutex_unlock(&h->mu);
        return false;
    }
    struct sb_entry *e = *index_slot(&h->by_name, key);
    struct sb_obj *o = e != NULL && e->obj->sb->meta != NULL ? e->obj : NULL;
    if (o != NULL && ctx->decision.owner_check) {
        const Gantry__V1__Sandbox *sb = o->sb;
        const char *owner = sb->spec != NULL ? sb->spec->owner_id : "";
        if (strcmp(owner, who->id) != 0 &&
            !(sandbox_rules_share_active(who->bindings, who->n_bindings, sb->meta->namespace_) &&
              share_index_find(&h->shares, sb->meta->id, who->id) != NULL)) {
            o = NULL;
        }
    }
    if (o != NULL) {
        o->refs++;
    }
    uint64_t at = h->rev;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add(&h->svc->model_gets, 1);
    char rev[24];
    snprintf(rev, sizeof rev, "%" PRIu64, at);
    grpc_call_set_trailer(ctx->call, MODEL_REVISION_TRAILER, rev);
    if (o == NULL) {
        /* Not confirming that someone else's sandbox exists. */
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND,
                  "sandbox \"%.63s\" does not exist in namespace \"%.63s\" (or is not yours)", req->name,
                  req->namespace_);
    } else {
        grpc_call_finish_async_bytes(ctx->call, 0, NULL, o->packed, o->packed_len);
        obj_unref(o); /* atomic: no lock */
    }
    return true;
}

/* list_visible's admin_namespaces condition for a sandbox in @sb_ns, the list asking for @req_ns. */
static bool admin_listed(const struct authn_principal *who, const char *sb_ns, const char *req_ns)
{
    for (size_t i = 0; i < who->n_bindings; i++) {
        const struct authz_binding *b = &who->bindings[i];
        if (b->role == AZ_ROLE_NAMESPACE_ADMIN && !b->scope.set && strcmp(b->ns, sb_ns) == 0) {
            return true;
        }
        if (b->role == AZ_ROLE_NAMESPACE_ADMIN && b->scope.set && req_ns[0] != '\0' &&
            strcmp(sb_ns, req_ns) == 0 && authz_binding_covers(b, req_ns)) {
            return true;
        }
    }
    return false;
}

static int cmp_ns_name(const void *a, const void *b)
{
    const Gantry__V1__ObjectMeta *x = (*(struct sb_obj *const *)a)->sb->meta;
    const Gantry__V1__ObjectMeta *y = (*(struct sb_obj *const *)b)->sb->meta;
    int c = strcmp(x->namespace_, y->namespace_);
    return c != 0 ? c : strcmp(x->name, y->name);
}

/* The first position in @l whose key ("namespace/name") is after @after. Within one namespace the
 * key grows with the name, so the keys after @after are a suffix of @l. */
static size_t key_after_pos(const struct ns_sbs *l, const char *after)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        char key[160];
        name_key(key, sizeof key, l->ns, l->v[mid]->sb->meta->name);
        if (strcmp(key, after) <= 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

struct list_walk { /* hub_list's candidates, at most @want, in (namespace, name) order */
    const struct authn_principal *who;
    const char *req_ns, *owner, *after;
    bool global;
    struct sb_obj **found;
    size_t n, want;
};

/* Under h->mu: add @l's candidates after w->after (list_visible's conditions) until w->want. */
static void list_walk_ns(struct watch_hub *h, struct list_walk *w, const struct ns_sbs *l)
{
    for (size_t i = key_after_pos(l, w->after); i < l->n && w->n < w->want; i++) {
        struct sb_obj *o = l->v[i];
        const Gantry__V1__Sandbox *sb = o->sb;
        if (sb->spec == NULL || (w->owner[0] != '\0' && strcmp(sb->spec->owner_id, w->owner) != 0)) {
            continue;
        }
        if (!w->global && !admin_listed(w->who, l->ns, w->req_ns) &&
            strcmp(sb->spec->owner_id, w->who->id) != 0 &&
            share_index_find(&h->shares, sb->meta->id, w->who->id) == NULL) {
            continue;
        }
        o->refs++;
        w->found[w->n++] = o;
    }
}

int sandboxes_svc_share_now(struct sandboxes_svc *svc, const char *sandbox_id, const char *grantee_id)
{
    struct watch_hub *h = svc->hub;
    if (h == NULL || svc->store_reads) {
        return -2;
    }
    pthread_mutex_lock(&h->mu);
    int rv = -2;
    if (h->ready && !h->need_reload && !h->stopping && !h->shares_stale) {
        const struct share_row *s = share_index_find(&h->shares, sandbox_id, grantee_id);
        rv = s == NULL ? -1 : s->exec ? 1 : 0;
    }
    pthread_mutex_unlock(&h->mu);
    return rv;
}

bool sandboxes_svc_session_target(struct sandboxes_svc *svc, struct gate_ctx *ctx, const char *ns,
                                  const char *name, struct sb_session_target *t, bool *answered)
{
    *answered = false;
    memset(t, 0, sizeof *t);
    uint64_t need = 0;
    struct watch_hub *h = svc->hub;
    if (h == NULL || svc->store_reads || !read_wait(svc, ctx, NULL, &need, answered)) {
        return false;
    }
    char key[160];
    name_key(key, sizeof key, ns, name);
    const struct authn_principal *who = &ctx->who;
    pthread_mutex_lock(&h->mu);
    if (!h->ready || h->need_reload || h->stopping || h->rev < need || h->shares_stale) {
        pthread_mutex_unlock(&h->mu);
        return false;
    }
    struct sb_entry *e = *index_slot(&h->by_name, key);
    const Gantry__V1__Sandbox *sb = e != NULL ? e->obj->sb : NULL;
    bool ok = true;
    if (sb != NULL && sb->meta != NULL) {
        const ProtobufCEnumValue *ph =
            sb->status != NULL && sb->status->phase != GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_UNSPECIFIED
                ? protobuf_c_enum_descriptor_get_value(&gantry__v1__sandbox_status__phase__descriptor,
                                                       (int)sb->status->phase)
                : NULL;
        /* the table's phase column is the status's phase without "PHASE_" (leases/reconciler.c) */
        ok = ph != NULL && strncmp(ph->name, "PHASE_", 6) == 0;
        const char *owner = sb->spec != NULL ? sb->spec->owner_id : "";
        if (ok) {
            t->found = true;
            t->exec = true;
            snprintf(t->id, sizeof t->id, "%s", sb->meta->id);
            snprintf(t->owner, sizeof t->owner, "%s", owner);
            snprintf(t->phase, sizeof t->phase, "%s", ph->name + 6);
        }
        if (ok && ctx->decision.owner_check && strcmp(owner, who->id) != 0) {
            const struct share_row *s = sandbox_rules_share_active(who->bindings, who->n_bindings, ns)
                                            ? share_index_find(&h->shares, sb->meta->id, who->id)
                                            : NULL;
            t->found = s != NULL;
            t->exec = s != NULL && s->exec;
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (ok) {
        atomic_fetch_add(&svc->model_sessions, 1);
    }
    return ok;
}

/* List from the model at @head or later (as hub_get), page for page what sb_list's store path
 * returns for the same data: list_visible's candidates (namespace, visibility by global role,
 * administration, ownership or a share, owner filter, key after the token) in (namespace, name)
 * order, limit + 1 of them, then send_list's scan (labels, listed_visible, the token of the last
 * scanned row). The walk uses the per-namespace index: a List of one namespace starts at the page
 * token's position in that namespace (a binary search) and stops after limit + 1 candidates; a
 * List of every namespace walks the namespaces in order the same way. Shares are the model's. The
 * response's revision is the model's (at least the leader's at the read index). false, having
 * answered nothing, when the model cannot answer (as hub_get). */
static bool hub_list(struct watch_hub *h, struct gate_ctx *ctx, const Gantry__V1__ListSandboxesRequest *req,
                     const struct page_req *page, uint64_t head)
{
    if (h == NULL) {
        return false;
    }
    const struct authn_principal *who = &ctx->who;
    unsigned limit = page->limit;
    struct list_walk w = {.who = who,
                          .req_ns = req->namespace_,
                          .owner = req->owner_id,
                          .after = page->after,
                          .global = global_reader(who),
                          .want = (size_t)limit + 1};
    w.found = mem_zalloc(sizeof *w.found * (w.want + 1));
    uint64_t rev = 0;
    pthread_mutex_lock(&h->mu);
    bool ok = h->ready && !h->need_reload && !h->stopping && h->rev >= head && (w.global || !h->shares_stale);
    if (ok && w.req_ns[0] != '\0') {
        const struct ns_sbs *l = ns_find(h, w.req_ns);
        if (l != NULL) {
            list_walk_ns(h, &w, l);
        }
    }
    for (size_t i = 0; ok && w.req_ns[0] == '\0' && i < h->n_nss && w.n < w.want; i++) {
        list_walk_ns(h, &w, h->nss[i]);
    }
    rev = h->rev;
    pthread_mutex_unlock(&h->mu);
    if (!ok) {
        mem_free(w.found);
        return false;
    }
    atomic_fetch_add(&h->svc->model_lists, 1);
    size_t take = w.n;
    Gantry__V1__Sandbox **ps = mem_zalloc(sizeof *ps * (take + 1));
    size_t k = 0, scanned = 0;
    char token[160] = "";
    for (size_t i = 0; i < take && scanned < limit; i++, scanned++) {
        const Gantry__V1__Sandbox *sb = w.found[i]->sb;
        name_key(token, sizeof token, sb->meta->namespace_, sb->meta->name);
        if (!sb_labels_match(sb, req->selector) ||
            !(w.global || role_in(who, AZ_ROLE_NAMESPACE_ADMIN, sb->meta->namespace_) ||
              sandbox_rules_share_active(who->bindings, who->n_bindings, sb->meta->namespace_))) {
            continue;
        }
        ps[k++] = w.found[i]->sb;
    }
    Gantry__V1__ListSandboxesResponse resp = GANTRY__V1__LIST_SANDBOXES_RESPONSE__INIT;
    resp.n_sandboxes = k;
    resp.sandboxes = ps;
    resp.next_page_token = take > limit ? token : "";
    resp.revision = rev;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
    for (size_t i = 0; i < w.n; i++) {
        obj_unref(w.found[i]);
    }
    mem_free(w.found);
    return true;
}

struct shared_item {
    struct sb_obj *obj;
    bool exec;
    char *created_by;
    int64_t created_at_ms;
};

static int cmp_shared_item(const void *a, const void *b)
{
    const struct shared_item *x = a, *y = b;
    return cmp_ns_name(&x->obj, &y->obj);
}

/* ListSharedWithMe from the model once it holds revision @head (sb_shared_with_me's read_wait
 * decided it, as for hub_list), page for page like sb_shared_with_me's store path: the caller's
 * shares are the model's (its by-grantee index: only the caller's shares are touched); each names
 * a sandbox looked up in the model (the store path's join), filtered by namespace and the page
 * token, in (namespace, name) order, limit + 1 of them, then the same scan (a role in the
 * sandbox's namespace). The response's revision is the model's. false, having answered nothing,
 * when the model cannot answer (as hub_get). */
static bool hub_shared_with_me(struct watch_hub *h, struct gate_ctx *ctx,
                               const Gantry__V1__ListSharedWithMeRequest *req, const struct page_req *page,
                               uint64_t head)
{
    if (h == NULL) {
        return false;
    }
    struct shared_item *found = NULL;
    size_t n = 0;
    pthread_mutex_lock(&h->mu);
    bool ok = h->ready && !h->need_reload && !h->stopping && !h->shares_stale && h->rev >= head;
    uint64_t rev = h->rev;
    struct share_row *const *rows = NULL;
    size_t n_rows = ok ? share_index_of_grantee(&h->shares, ctx->who.id, &rows) : 0;
    found = mem_zalloc(sizeof *found * (n_rows + 1));
    for (size_t i = 0; i < n_rows; i++) {
        struct sb_entry *e = *model_slot(h, rows[i]->sandbox_id);
        const Gantry__V1__Sandbox *sb = e != NULL ? e->obj->sb : NULL;
        if (sb == NULL || sb->meta == NULL || sb->spec == NULL ||
            (req->namespace_[0] != '\0' && strcmp(sb->meta->namespace_, req->namespace_) != 0)) {
            continue;
        }
        char key[160];
        name_key(key, sizeof key, sb->meta->namespace_, sb->meta->name);
        if (strcmp(key, page->after) <= 0) {
            continue;
        }
        e->obj->refs++;
        found[n++] = (struct shared_item){.obj = e->obj,
                                          .exec = rows[i]->exec,
                                          .created_by = mem_strdup(rows[i]->created_by),
                                          .created_at_ms = rows[i]->created_at_ms};
    }
    pthread_mutex_unlock(&h->mu);
    if (!ok) {
        mem_free(found);
        return false;
    }
    atomic_fetch_add(&h->svc->model_lists, 1);
    if (n > 1) {
        qsort(found, n, sizeof *found, cmp_shared_item);
    }
    unsigned limit = page->limit;
    size_t take = n < (size_t)limit + 1 ? n : (size_t)limit + 1;
    Gantry__V1__Sandbox **ps = mem_zalloc(sizeof *ps * (take + 1));
    Gantry__V1__Share *ss = mem_zalloc(sizeof *ss * (take + 1));
    Gantry__V1__Share **sp = mem_zalloc(sizeof *sp * (take + 1));
    size_t k = 0, scanned = 0;
    char token[160] = "";
    for (size_t i = 0; i < take && scanned < limit; i++, scanned++) {
        Gantry__V1__Sandbox *sb = found[i].obj->sb;
        name_key(token, sizeof token, sb->meta->namespace_, sb->meta->name);
        if (!sandbox_rules_share_active(ctx->who.bindings, ctx->who.n_bindings, sb->meta->namespace_)) {
            continue;
        }
        gantry__v1__share__init(&ss[k]);
        ss[k].sandbox_id = sb->meta->id;
        ss[k].namespace_ = sb->meta->namespace_;
        ss[k].grantee_principal_id = ctx->who.id;
        ss[k].access = found[i].exec ? GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC
                                     : GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_READ;
        ss[k].created_by = found[i].created_by;
        ss[k].created_at_ms = found[i].created_at_ms;
        sp[k] = &ss[k];
        ps[k++] = sb;
    }
    Gantry__V1__ListSharedWithMeResponse resp = GANTRY__V1__LIST_SHARED_WITH_ME_RESPONSE__INIT;
    resp.n_sandboxes = k;
    resp.sandboxes = ps;
    resp.n_shares = k;
    resp.shares = sp;
    resp.next_page_token = take > limit ? token : "";
    resp.revision = rev;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
    mem_free(ss);
    mem_free(sp);
    for (size_t i = 0; i < n; i++) {
        obj_unref(found[i].obj);
        mem_free(found[i].created_by);
    }
    mem_free(found);
    return true;
}

int sandboxes_svc_attach_feed(struct sandboxes_svc *svc, struct feed *feed)
{
    struct watch_hub *h = mem_zalloc(sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->feed = feed;
    h->svc = svc;
    index_init(&h->by_id);
    index_init(&h->by_name);
    share_index_init(&h->shares);
    h->sub.on_resync = hub_on_resync;
    h->sub.on_event = hub_on_event;
    h->sub.on_applied = hub_on_applied;
    h->sub.data = h;
    feed_subscribe(feed, &h->sub);
    svc->hub = h;
    return 0;
}

void sandboxes_svc_detach_feed(struct sandboxes_svc *svc)
{
    struct watch_hub *h = svc->hub;
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    watch_end_all(h, GRPC_STATUS_UNAVAILABLE, "the replica is stopping: watch again from the last revision");
    model_clear(h);
    ring_clear(h, 0);
    pthread_mutex_unlock(&h->mu);
    assert(h->creds == NULL);
    pthread_mutex_destroy(&h->mu);
    mem_free(h->by_id.buckets);
    mem_free(h->by_name.buckets);
    mem_free(h->nss);
    share_index_close(&h->shares);
    mem_free(h);
    svc->hub = NULL;
}

/* Events after @cur up to @upto that the ring no longer holds, read from the store with the
 * handler's connection (once per such watch) and sent with its own visibility check; *@cur
 * advances. GERR_ABORTED with *@gone when retention deleted some of them. */
static int watch_catch_up(struct store_client *cl, struct watch *w, const struct authn_principal *who,
                          uint64_t *cur, uint64_t upto, int64_t *gone)
{
    struct store_shared ss = {cl, who};
    while (*cur < upto) {
        struct proto_rows ev;
        proto_rows_init(&ev, 0);
        struct proto_value p[] = {proto_text(w->ns), proto_int((int64_t)*cur), proto_int((int64_t)upto)};
        int rv = store_client_query(
            cl,
            "SELECT revision, object_id, type, namespace, payload FROM events WHERE kind = 'Sandbox' AND "
            "(?1 = '' OR namespace = ?1) AND revision > ?2 AND revision <= ?3 ORDER BY revision LIMIT 1000",
            p, 3, &ev);
        int64_t compacted = 0;
        if (rv == 0) {
            rv = store_events_compacted(cl, &compacted);
        }
        if (rv == 0 && (uint64_t)compacted > *cur) {
            *gone = compacted;
            rv = GERR_ABORTED;
        }
        if (rv != 0) {
            proto_rows_close(&ev);
            return rv;
        }
        uint64_t reached = ev.n_rows == 1000 ? (uint64_t)coli(&ev, ev.n_rows - 1, 0) : upto;
        for (size_t i = 0; i < ev.n_rows; i++) {
            uint64_t rev = (uint64_t)coli(&ev, i, 0);
            const char *type = col(&ev, i, 2);
            if (strcmp(type, "DELETED") == 0) {
                send_deleted(w->call, col(&ev, i, 1), col(&ev, i, 3), rev);
                continue;
            }
            Gantry__V1__EventType t = strcmp(type, "ADDED") == 0
                                          ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                          : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED;
            const struct proto_value *payload = proto_rows_at(&ev, i, 4);
            if (payload->type == PROTO_BLOB && payload->u.b.n > 0) {
                Gantry__V1__Sandbox *sb = (Gantry__V1__Sandbox *)protobuf_c_message_unpack(
                    &gantry__v1__sandbox__descriptor, NULL, payload->u.b.n, (const uint8_t *)payload->u.b.s);
                if (sb != NULL && sb_visible(who, w->selector, sb, store_shared_fn, &ss)) {
                    send_event(w->call, t, sb, rev);
                }
                if (sb != NULL) {
                    protobuf_c_message_free_unpacked(&sb->base, NULL);
                }
                continue;
            }
            struct proto_rows r;
            proto_rows_init(&r, 0);
            struct proto_value q[] = {proto_text(col(&ev, i, 1))};
            if (store_client_query(cl, "SELECT " SB_COLS " FROM sandboxes WHERE id = ?", q, 1, &r) == 0 &&
                r.n_rows == 1 && (uint64_t)coli(&r, 0, 11) == rev) {
                struct sb_msg m;
                sb_from_row(&m, &r, 0);
                if (sb_visible(who, w->selector, &m.s, store_shared_fn, &ss)) {
                    send_event(w->call, t, &m.s, rev);
                }
                sb_msg_free(&m);
            }
            proto_rows_close(&r);
        }
        proto_rows_close(&ev);
        *cur = reached;
        if (*cur < upto && grpc_call_cancelled(w->call)) {
            return GERR_CANCELED; /* nobody to send the rest to */
        }
        if (*cur < upto && grpc_call_unsent(w->call) > WATCH_CATCH_UP_MAX_UNSENT) {
            return GERR_TOOBIG; /* the client reads slower than the store replays */
        }
    }
    return 0;
}

/* Under h->mu: send @w what the model holds (since_revision 0) or the ring's events after
 * w->from, then link it. */
static void watch_link(struct watch_hub *h, struct watch *w, bool initial)
{
    uint64_t now = clock_mono_ms(clock_system());
    if (initial) {
        for (size_t i = 0; i < h->by_id.n_buckets; i++) {
            for (struct sb_entry *e = h->by_id.buckets[i]; e != NULL; e = e->next) {
                const Gantry__V1__Sandbox *sb = e->obj->sb;
                if (sb->meta != NULL && (w->ns[0] == '\0' || strcmp(w->ns, sb->meta->namespace_) == 0) &&
                    sb_visible(&w->cred->who, w->selector, sb, cred_shared, w->cred)) {
                    send_event(w->call, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED, e->obj->sb, h->rev);
                }
            }
        }
        w->from = h->rev;
        send_event(w->call, GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK, NULL, h->rev);
        w->last_bookmark_ms = now;
    } else {
        for (size_t k = 0; k < h->ring_n; k++) {
            const struct ring_ev *r = &h->ring[(h->ring_head + k) % WATCH_RING];
            if (r->rev <= w->from || (w->ns[0] != '\0' && strcmp(w->ns, r->ns) != 0)) {
                continue;
            }
            if (r->obj == NULL) {
                send_deleted(w->call, r->id, r->ns, r->rev);
                w->sent = true;
            } else if (sb_visible(&w->cred->who, w->selector, r->obj->sb, cred_shared, w->cred)) {
                send_event(w->call, r->type, r->obj->sb, r->rev);
                w->sent = true;
            }
        }
        if (w->from < h->rev) {
            w->from = h->rev;
        }
        w->last_bookmark_ms = now;
    }
    w->allowance = grpc_call_unsent(w->call);
    h->total_unsent += w->allowance;
    w->next = h->watches;
    h->watches = w;
}

static void sb_watch(struct gate_ctx *ctx, void *data)
{
    struct sandboxes_svc *svc = data;
    struct watch_hub *h = svc->hub;
    const Gantry__V1__WatchSandboxesRequest *req = (const void *)grpc_call_request(ctx->call);
    if (h == NULL) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE, "this replica serves no watches: try another replica");
        return;
    }
    /* A read index: the hub has applied every change acknowledged before this call (one leader
     * read shared by every call waiting now), so the first list shows the caller's own writes
     * made through any replica. */
    uint64_t head = 0;
    struct clock *clk = clock_system();
    if (feed_sync(h->feed, clock_mono_ms(clk) + WATCH_SYNC_TIMEOUT_MS, &head) != 0) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE,
                  "this replica's change feed did not catch up with the leader within %u ms: try again or "
                  "another replica",
                  WATCH_SYNC_TIMEOUT_MS);
        return;
    }
    if (req->since_revision > head) {
        gate_fail(ctx, GRPC_STATUS_OUT_OF_RANGE,
                  "since_revision %" PRIu64 " is in the future (the cluster is at %" PRIu64 ")",
                  req->since_revision, head);
        return;
    }
    if (atomic_fetch_add(&svc->watches, 1) >= SANDBOXES_MAX_WATCHES || atomic_load(&svc->stopping)) {
        atomic_fetch_sub(&svc->watches, 1);
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "this replica serves %u watches already: try another replica", SANDBOXES_MAX_WATCHES);
        return;
    }
    struct watch_cred *cred = cred_get(h, &ctx->who, ctx->cl);
    if (cred == NULL) {
        atomic_fetch_sub(&svc->watches, 1);
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE, "%s", ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : "store");
        return;
    }
    struct watch *w = mem_zalloc(sizeof *w);
    w->call = ctx->call;
    w->cred = cred;
    snprintf(w->ns, sizeof w->ns, "%s", req->namespace_);
    w->selector = req->selector;
    uint64_t cur = req->since_revision;
    int64_t gone = 0;
    int rv = 0;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        if (!h->ready || h->stopping || atomic_load(&svc->stopping)) {
            bool stopping = h->stopping || atomic_load(&svc->stopping);
            cred_unref(h, cred);
            pthread_mutex_unlock(&h->mu);
            atomic_fetch_sub(&svc->watches, 1);
            mem_free(w);
            gate_fail(ctx, GRPC_STATUS_UNAVAILABLE,
                      stopping ? "the replica is stopping: watch again from the last revision"
                               : "this replica's sandbox cache is not loaded yet: try again");
            return;
        }
        size_t max = svc->total_unsent_max != 0 ? svc->total_unsent_max : WATCH_TOTAL_UNSENT;
        if (h->total_unsent > max) {
            size_t held = h->total_unsent;
            cred_unref(h, cred);
            pthread_mutex_unlock(&h->mu);
            atomic_fetch_sub(&svc->watches, 1);
            mem_free(w);
            gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "this replica's watches hold %zu MiB their clients have not read (more than %zu): try "
                      "another replica or later",
                      held >> 20, max >> 20);
            return;
        }
        if (req->since_revision == 0 || cur >= h->ring_floor) {
            w->from = cur;
            watch_link(h, w, req->since_revision == 0);
            pthread_mutex_unlock(&h->mu);
            return;
        }
        uint64_t upto = h->ring_floor;
        pthread_mutex_unlock(&h->mu);
        rv = watch_catch_up(ctx->cl, w, &ctx->who, &cur, upto, &gone);
        if (rv != 0) {
            break;
        }
    }
    pthread_mutex_lock(&h->mu);
    cred_unref(h, cred);
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_sub(&svc->watches, 1);
    mem_free(w);
    if (rv == GERR_TOOBIG) {
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "the replay of retained events holds more than %u MiB this client has not read: read "
                  "them, then watch again from revision %" PRIu64,
                  WATCH_CATCH_UP_MAX_UNSENT >> 20, cur);
    } else if (gone > 0) {
        gate_fail(ctx, GRPC_STATUS_OUT_OF_RANGE,
                  "revision %" PRIu64 " is older than the retained change history (events up to %" PRId64
                  " were deleted): list again and watch from the list's revision",
                  cur, gone);
    } else {
        gate_fail(ctx, grpc_status_from_gerr(rv), "%s",
                  ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
    }
}

void sandboxes_svc_stop(struct sandboxes_svc *svc)
{
    atomic_store(&svc->stopping, true);
    struct watch_hub *h = svc->hub;
    if (h != NULL) {
        pthread_mutex_lock(&h->mu);
        h->stopping = true;
        watch_end_all(h, GRPC_STATUS_UNAVAILABLE,
                      "the replica is stopping: watch again from the last revision");
        pthread_mutex_unlock(&h->mu);
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
