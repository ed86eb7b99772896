/* gantry.v1.Principals and gantry.v1.ApiKeys (api/services/principals_svc.h). */
#include "api/services/principals_svc.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth/apikey.h"
#include "api/services/pepper_ring.h"
#include "api/authz/authz.h"
#include "api/gate/gate.h"
#include "api/gate/resource.h"
#include "api/rules/page.h"
#include "api/rules/principal.h"
#include "api/services/model_read.h"
#include "gantry/v1/api_keys.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "store/events.h"

/* WhoAmI lists the caller's bindings in one reply; a principal holds at most this many. */
#define WHOAMI_BINDINGS_MAX 500u

#define PRINCIPAL_COLS                                                                                       \
    "id, kind, name, display_name, email, issuer, subject, disabled, created_by, resource_version, "         \
    "created_at_ms, "                                                                                        \
    "updated_at_ms"
#define BINDING_COLS "id, principal_id, role, namespace, created_by, resource_version, created_at_ms, scope"
#define KEY_COLS                                                                                             \
    "id, principal_id, name, created_by, created_at_ms, expires_at_ms, last_used_ms, revoked_at_ms, "        \
    "resource_version"

/* --- small helpers --- */

static char *col(const struct proto_rows *r, size_t row, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, row, c);
    /* TEXT values are NUL-terminated in the result (store/proto.h). */
    return v->type == PROTO_TEXT ? (char *)v->u.b.s : "";
}

static int64_t coli(const struct proto_rows *r, size_t row, unsigned c)
{
    return proto_rows_at(r, row, c)->u.i;
}

static int64_t now_ms(const struct gate_ctx *ctx)
{
    return ctx->now_ms;
}

static void fail_gerr(struct gate_ctx *ctx, int rv, const char *what, const char *detail)
{
    gate_fail(ctx, grpc_status_from_gerr(rv), "%s: %s", what,
              detail != NULL && detail[0] != '\0' ? detail : gerr_str(rv));
}

/* The page of a list keyed by @key; answers INVALID_ARGUMENT and returns false for a bad token. */
static bool read_page(struct gate_ctx *ctx, const Gantry__V1__PageRequest *p, enum page_key key,
                      struct page_req *out)
{
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(p, key, out, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return false;
    }
    return true;
}

static const char *kind_text(Gantry__V1__PrincipalKind k)
{
    return k == GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER              ? "user"
           : k == GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT ? "service_account"
                                                                             : NULL;
}

static Gantry__V1__PrincipalKind kind_enum(const char *s)
{
    return strcmp(s, "user") == 0 ? GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER
                                  : GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT;
}

/* --- conversions (the messages point into @rows; pack before closing them) --- */

struct principal_msg {
    Gantry__V1__Principal p;
    Gantry__V1__ObjectMeta meta;
};

static void principal_from_row(struct principal_msg *m, const struct proto_rows *r, size_t i)
{
    gantry__v1__principal__init(&m->p);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = col(r, i, 0);
    m->p.kind = kind_enum(col(r, i, 1));
    m->meta.name = col(r, i, 2);
    m->p.display_name = col(r, i, 3);
    m->p.email = col(r, i, 4);
    m->p.oidc_issuer = col(r, i, 5);
    m->p.oidc_subject = col(r, i, 6);
    m->p.disabled = coli(r, i, 7) != 0;
    m->meta.created_by = col(r, i, 8);
    m->meta.resource_version = (uint64_t)coli(r, i, 9);
    m->meta.created_at_ms = coli(r, i, 10);
    m->meta.updated_at_ms = coli(r, i, 11);
    m->p.meta = &m->meta;
}

struct binding_msg {
    Gantry__V1__RoleBinding b;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__DelegationScope ds;
    struct authz_scope sc; /* ds points into it */
    char *ptrs[12][AUTHZ_SCOPE_MAX];
};

static void scope_strings(char (*items)[48], unsigned n, char **ptrs, char ***out, size_t *n_out)
{
    for (unsigned i = 0; i < n; i++) {
        ptrs[i] = items[i];
    }
    *out = ptrs;
    *n_out = n;
}

static void binding_from_row(struct binding_msg *m, const struct proto_rows *r, size_t i)
{
    gantry__v1__role_binding__init(&m->b);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = col(r, i, 0);
    m->b.principal_id = col(r, i, 1);
    m->b.role = (Gantry__V1__Role)authz_role_parse(col(r, i, 2));
    m->b.namespace_ = col(r, i, 3);
    m->meta.namespace_ = col(r, i, 3);
    m->meta.created_by = col(r, i, 4);
    m->meta.resource_version = (uint64_t)coli(r, i, 5);
    m->meta.created_at_ms = coli(r, i, 6);
    m->b.meta = &m->meta;
    if (authz_scope_parse(col(r, i, 7), &m->sc) == 0 && m->sc.set) {
        gantry__v1__delegation_scope__init(&m->ds);
        scope_strings(m->sc.patterns, m->sc.n_patterns, m->ptrs[0], &m->ds.namespace_patterns,
                      &m->ds.n_namespace_patterns);
        scope_strings(m->sc.config_keys, m->sc.n_config_keys, m->ptrs[1], &m->ds.allowed_driver_config_keys,
                      &m->ds.n_allowed_driver_config_keys);
        scope_strings(m->sc.sources, m->sc.n_sources, m->ptrs[2], &m->ds.allowed_credential_sources,
                      &m->ds.n_allowed_credential_sources);
        m->ds.n_allowed_service_accounts =
            authz_scope_service_accounts(&m->sc, (const char **)m->ptrs[3], AUTHZ_SCOPE_MAX);
        m->ds.allowed_service_accounts = m->ptrs[3];
        m->ds.n_allowed_kubernetes_namespaces =
            authz_scope_kube_namespaces(&m->sc, (const char **)m->ptrs[4], AUTHZ_SCOPE_MAX);
        m->ds.allowed_kubernetes_namespaces = m->ptrs[4];
        m->ds.n_allowed_runtime_classes =
            authz_scope_runtime_classes(&m->sc, (const char **)m->ptrs[5], AUTHZ_SCOPE_MAX);
        m->ds.allowed_runtime_classes = m->ptrs[5];
        m->ds.n_allowed_secret_namespaces =
            authz_scope_secret_namespaces(&m->sc, (const char **)m->ptrs[6], AUTHZ_SCOPE_MAX);
        m->ds.allowed_secret_namespaces = m->ptrs[6];
        m->ds.n_allowed_secret_names =
            authz_scope_secret_names(&m->sc, (const char **)m->ptrs[7], AUTHZ_SCOPE_MAX);
        m->ds.allowed_secret_names = m->ptrs[7];
        m->ds.n_allowed_warm_pools =
            authz_scope_warm_pools(&m->sc, (const char **)m->ptrs[8], AUTHZ_SCOPE_MAX);
        m->ds.allowed_warm_pools = m->ptrs[8];
        m->ds.n_allowed_templates = authz_scope_templates(&m->sc, (const char **)m->ptrs[9], AUTHZ_SCOPE_MAX);
        m->ds.allowed_templates = m->ptrs[9];
        m->ds.n_allowed_node_selectors =
            authz_scope_node_selectors(&m->sc, (const char **)m->ptrs[10], AUTHZ_SCOPE_MAX);
        m->ds.allowed_node_selectors = m->ptrs[10];
        m->ds.n_allowed_tolerations =
            authz_scope_tolerations(&m->sc, (const char **)m->ptrs[11], AUTHZ_SCOPE_MAX);
        m->ds.allowed_tolerations = m->ptrs[11];
        m->ds.create_on_behalf_of_owner = m->sc.on_behalf;
        m->b.delegation = &m->ds;
    }
}

struct key_msg {
    Gantry__V1__ApiKey k;
    Gantry__V1__ObjectMeta meta;
    char prefix[APIKEY_PREFIX_LEN + APIKEY_ID_LEN + 1];
};

static void key_from_row(struct key_msg *m, const struct proto_rows *r, size_t i)
{
    gantry__v1__api_key__init(&m->k);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = col(r, i, 0);
    m->k.principal_id = col(r, i, 1);
    m->meta.name = col(r, i, 2);
    m->meta.created_by = col(r, i, 3);
    m->meta.created_at_ms = coli(r, i, 4);
    m->k.expires_at_ms = coli(r, i, 5);
    m->k.last_used_at_ms = coli(r, i, 6);
    m->k.revoked = coli(r, i, 7) != 0;
    m->meta.resource_version = (uint64_t)coli(r, i, 8);
    snprintf(m->prefix, sizeof m->prefix, "%s%s", APIKEY_PREFIX, m->meta.id);
    m->k.prefix = m->prefix;
    m->k.meta = &m->meta;
}

/* Read one row by @sql with one text parameter. GERR_NOTFOUND when absent. */
static int read_one(struct gate_ctx *ctx, const char *sql, const char *param, struct proto_rows *rows)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_text(param), proto_text(param), proto_text(param)};
    unsigned n = 0;
    for (const char *q = sql; *q != '\0'; q++) {
        n += *q == '?';
    }
    assert(n <= sizeof p / sizeof p[0]);
    int rv = store_client_query(ctx->cl, sql, p, n, rows);
    if (rv == 0 && rows->n_rows == 0) {
        rv = GERR_NOTFOUND;
    }
    return rv;
}

static int read_principal(struct gate_ctx *ctx, const char *id_or_name, struct proto_rows *rows)
{
    return read_one(ctx,
                    "SELECT " PRINCIPAL_COLS
                    " FROM principals WHERE id = ? OR name = ? ORDER BY kind = 'user' DESC, id = ? DESC, id "
                    "LIMIT 1",
                    id_or_name, rows);
}

/* --- the models (principals_svc.h): the rows packed as the store path packs them --- */

static uint8_t *pack_principal(const struct proto_rows *r, size_t i, size_t *len)
{
    struct principal_msg m;
    principal_from_row(&m, r, i);
    return kind_model_pack(&m.p.base, len);
}

static uint8_t *pack_binding(const struct proto_rows *r, size_t i, size_t *len)
{
    struct binding_msg m;
    binding_from_row(&m, r, i);
    return kind_model_pack(&m.b.base, len);
}

static uint8_t *pack_key(const struct proto_rows *r, size_t i, size_t *len)
{
    struct key_msg m;
    key_from_row(&m, r, i);
    return kind_model_pack(&m.k.base, len);
}

struct kind_model *principals_model_new(void)
{
    struct kind_model_config cfg = {.kind = "Principal",
                                    .what = "principal",
                                    .table = "principals",
                                    .cols = PRINCIPAL_COLS,
                                    .n_cols = 12,
                                    .ns_col = KIND_MODEL_NO_COL,
                                    .name_col = 0, /* by id: names are unique per kind only */
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0,
                                    .key_where = "id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    .desc = &gantry__v1__principal__descriptor,
                                    .pack = pack_principal};
    return kind_model_new(&cfg);
}

struct kind_model *principals_bindings_model_new(void)
{
    struct kind_model_config cfg = {.kind = "RoleBinding",
                                    .what = "role binding",
                                    .table = "role_bindings",
                                    .cols = BINDING_COLS,
                                    .n_cols = 8,
                                    .ns_col = 3, /* "" for the global roles and delegated bindings */
                                    .name_col = 0,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0,
                                    .key_where = "id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    /* deleting a principal deletes its bindings, deleting a
                                     * namespace its bindings, without events of their own */
                                    .parent_kind = "Principal",
                                    .parent_key = KIND_MODEL_KEY_OBJECT_ID,
                                    .parent_col = 1,
                                    .parent_where = "principal_id = ?",
                                    .reload_on_delete = "Namespace",
                                    /* the scope as stored, for authentication (authn_models.h) */
                                    .has_aux = true,
                                    .aux_col = 7,
                                    .desc = &gantry__v1__role_binding__descriptor,
                                    .pack = pack_binding};
    return kind_model_new(&cfg);
}

struct kind_model *principals_keys_model_new(void)
{
    struct kind_model_config cfg = {.kind = "ApiKey",
                                    .what = "API key",
                                    .table = "api_keys",
                                    .cols = KEY_COLS, /* metadata only: never the hash */
                                    .n_cols = 9,
                                    .ns_col = KIND_MODEL_NO_COL,
                                    .name_col = 0,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0,
                                    .key_where = "id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    /* deleting a principal deletes its keys without events */
                                    .parent_kind = "Principal",
                                    .parent_key = KIND_MODEL_KEY_OBJECT_ID,
                                    .parent_col = 1,
                                    .parent_where = "principal_id = ?",
                                    .reload_every_ms = PRINCIPALS_KEYS_RELOAD_MS, /* last_used_ms */
                                    .desc = &gantry__v1__api_key__descriptor,
                                    .pack = pack_key};
    return kind_model_new(&cfg);
}

static void set_revision_trailer(struct gate_ctx *ctx, uint64_t rev)
{
    char t[24];
    snprintf(t, sizeof t, "%" PRIu64, rev);
    grpc_call_set_trailer(ctx->call, MODEL_REVISION_TRAILER, t);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const struct kind_model_entry *const *)a)->name,
                  (*(const struct kind_model_entry *const *)b)->name);
}

/* The writes. Each returns a GERR_* with its message in store_tx_errmsg. */

static int tx_fail(struct store_tx *tx, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int tx_fail(struct store_tx *tx, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(store_tx_errmsg(tx), GERR_MSG_SIZE, fmt, ap);
    va_end(ap);
    return rv;
}

/* Would removing @principal_id's platform_admin powers (disable, delete, unbind @binding_id) leave
 * no enabled platform admin? */
static int keeps_an_admin(struct store_tx *tx, const char *principal_id, const char *binding_id)
{
    struct proto_value p[] = {proto_text(principal_id != NULL ? principal_id : ""),
                              proto_text(binding_id != NULL ? binding_id : "")};
    int64_t others = 0;
    int rv =
        store_tx_query_int(tx,
                           "SELECT count(*) FROM role_bindings b JOIN principals p ON p.id = b.principal_id "
                           "WHERE b.role = 'platform_admin' AND b.namespace = '' AND p.disabled = 0 "
                           "AND p.id <> ?1 AND b.id <> ?2",
                           p, 2, &others);
    if (rv == 0 && others == 0) {
        return tx_fail(tx, GERR_REFUSED, "this would leave the cluster without an enabled platform_admin");
    }
    return rv;
}

static int check_version(struct store_tx *tx, const char *table, const char *id, uint64_t expected)
{
    if (expected == 0) {
        return 0;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT resource_version FROM %s WHERE id = ?", table);
    struct proto_value p[] = {proto_text(id)};
    int64_t v = 0;
    int rv = store_tx_query_int(tx, sql, p, 1, &v);
    if (rv == 0 && (uint64_t)v != expected) {
        return tx_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, v,
                       expected);
    }
    return rv;
}

/* Every write is one res_mutate transaction (api/gate/resource.h): idempotent under request_id,
 * audited (OCSF API Activity, success or failure), with its change event. @fn makes the change
 * and records the event with write_event through *@call; @reply packs the answer in the same
 * transaction, so a replay returns exactly what the first call returned. */
typedef int (*write_fn)(struct store_tx *tx, void *arg);
typedef int (*reply_fn)(struct store_tx *tx, struct res_call *c, void *arg);

struct write_op {
    write_fn fn;
    reply_fn reply;
    reply_fn last; /* deletes: packs the object's state before @fn, the DELETED event's payload */
    const ProtobufCMessageDescriptor *desc;
    void *arg;
    struct res_call **call;
};

/* The change event's payload (Events.Watch): the reply when it is the object's public message
 * (never CreateApiKeyResponse: reply_key_created_tx stores the key's metadata itself), or for a
 * delete the state @op->last packed before the change. */
static int write_tx(struct store_tx *tx, struct res_call *c)
{
    struct write_op *op = c->arg;
    *op->call = c;
    struct buf last;
    buf_init(&last);
    int rv = 0;
    if (op->last != NULL) {
        rv = op->last(tx, c, op->arg);
        buf_append(&last, c->reply.data, c->reply.len);
        c->reply.len = 0;
    }
    if (rv == 0) {
        rv = op->fn(tx, op->arg);
    }
    if (rv == 0) {
        rv = op->reply(tx, c, op->arg);
    }
    if (rv == 0 && c->revision > 0 && op->last != NULL) {
        rv = store_event_payload_tx(tx, c->revision, last.data, last.len);
    } else if (rv == 0 && c->revision > 0 && op->desc != &gantry__v1__delete_response__descriptor &&
               op->desc != &gantry__v1__create_api_key_response__descriptor) {
        rv = res_event_payload_reply(tx, c);
    }
    buf_close(&last);
    return rv;
}

static void run_write_last(struct gate_ctx *ctx, const struct principals_svc *svc, const char *request_id,
                           const ProtobufCMessageDescriptor *desc, write_fn fn, reply_fn reply, reply_fn last,
                           void *arg, struct res_call **call)
{
    struct write_op op = {.fn = fn, .reply = reply, .last = last, .desc = desc, .arg = arg, .call = call};
    res_mutate(ctx, svc->env, request_id, desc, write_tx, &op);
}

static void run_write(struct gate_ctx *ctx, const struct principals_svc *svc, const char *request_id,
                      const ProtobufCMessageDescriptor *desc, write_fn fn, reply_fn reply, void *arg,
                      struct res_call **call)
{
    run_write_last(ctx, svc, request_id, desc, fn, reply, NULL, arg, call);
}

static int write_event(struct res_call *c, struct store_tx *tx, const char *kind, const char *ns,
                       const char *id, const char *name, const char *type, int64_t *rev)
{
    int rv = res_event(tx, c, kind, ns, id, name, type);
    *rev = c->revision;
    return rv;
}

static int reply_deleted_tx(struct res_call *c, const char *id)
{
    Gantry__V1__DeleteResponse resp = GANTRY__V1__DELETE_RESPONSE__INIT;
    resp.id = (char *)id;
    resp.revision = (uint64_t)c->revision;
    res_reply(c, &resp.base);
    return 0;
}

/* --- Principals a namespace_admin manages (api/rules/principal.h) --- */

/* The bindings of principal @id as the authorization table reads them: through @tx when not NULL,
 * else the call's client. A scope that does not parse counts as a delegation scope (so it is never
 * taken for a plain binding). */
static int bindings_of(struct gate_ctx *ctx, struct store_tx *tx, const char *id, struct authz_binding *out,
                       size_t *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    static const char sql[] =
        "SELECT role, namespace, scope FROM role_bindings WHERE principal_id = ? ORDER BY id";
    int rv =
        tx != NULL ? store_tx_query(tx, sql, p, 1, &rows) : store_client_query(ctx->cl, sql, p, 1, &rows);
    *n = 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows && *n < AUTHN_MAX_BINDINGS; i++) {
        struct authz_binding *b = &out[(*n)++];
        memset(b, 0, sizeof *b);
        b->role = authz_role_parse(col(&rows, i, 0));
        snprintf(b->ns, sizeof b->ns, "%s", col(&rows, i, 1));
        if (authz_scope_parse(col(&rows, i, 2), &b->scope) != 0) {
            b->scope.set = true;
        }
    }
    if (rv == 0 && rows.n_rows > AUTHN_MAX_BINDINGS) {
        rv = GERR_PERM; /* more than a caller can hold: not one a namespace_admin manages */
        snprintf(tx != NULL ? store_tx_errmsg(tx) : ctx->cl->errmsg, GERR_MSG_SIZE,
                 "the principal holds over %u bindings: only a platform_admin manages its API keys",
                 AUTHN_MAX_BINDINGS);
    }
    proto_rows_close(&rows);
    return rv;
}

/* May the caller manage the API keys of principal @id (a namespace_admin: decision.manage_check)?
 * 0; GERR_PERM with the reason in @why; or the store's error. Through @tx when not NULL, so a write
 * decides on what its own transaction reads. */
static int manages(struct gate_ctx *ctx, struct store_tx *tx, const char *id, char *why, size_t len)
{
    struct authz_binding *target = mem_alloc(sizeof *target * AUTHN_MAX_BINDINGS);
    size_t n = 0;
    int rv = bindings_of(ctx, tx, id, target, &n);
    if (rv == GERR_PERM) {
        snprintf(why, len, "%s", tx != NULL ? store_tx_errmsg(tx) : ctx->cl->errmsg);
    } else if (rv == 0 &&
               !principal_rules_manages(ctx->who.bindings, ctx->who.n_bindings, target, n, why, len)) {
        rv = GERR_PERM;
    }
    mem_free(target);
    return rv;
}

/* --- Principals --- */

struct principal_write {
    struct gate_ctx *ctx;
    struct res_call *call;
    const Gantry__V1__Principal *in;
    const char *ns; /* create: bind the new principal with the user role here ("" for none) */
    const char *kind;
    char id[40];
    uint64_t expected;
    bool delete;
};

static int tx_create_principal(struct store_tx *tx, void *arg)
{
    struct principal_write *w = arg;
    const Gantry__V1__Principal *in = w->in;
    struct proto_value q[] = {proto_text(w->kind), proto_text(in->meta->name)};
    int64_t n = 0;
    int rv = store_tx_query_int(tx, "SELECT count(*) FROM principals WHERE kind = ? AND name = ?", q, 2, &n);
    if (rv == 0 && n > 0) {
        return tx_fail(tx, GERR_EXISTS, "a %s named \"%s\" already exists", w->kind, in->meta->name);
    }
    if (rv == 0 && in->oidc_issuer[0] != '\0') {
        struct proto_value o[] = {proto_text(in->oidc_issuer), proto_text(in->oidc_subject)};
        rv = store_tx_query_int(tx, "SELECT count(*) FROM principals WHERE issuer = ? AND subject = ?", o, 2,
                                &n);
        if (rv == 0 && n == 0) {
            rv = store_tx_query_int(
                tx, "SELECT count(*) FROM principal_links WHERE issuer = ? AND subject = ?", o, 2, &n);
        }
        if (rv == 0 && n > 0) {
            return tx_fail(
                tx, GERR_EXISTS,
                "another principal already has this OIDC issuer and subject (as its own or linked)");
        }
    }
    if (rv == 0 && w->ns[0] != '\0') {
        struct proto_value np[] = {proto_text(w->ns)};
        rv = store_tx_query_int(tx, "SELECT count(*) FROM namespaces WHERE name = ? AND phase = 'ACTIVE'", np,
                                1, &n);
        if (rv == 0 && n == 0) {
            return tx_fail(tx, GERR_NOTFOUND, "namespace: no active namespace \"%.63s\"", w->ns);
        }
    }
    int64_t rev = 0;
    if (rv == 0) {
        rand_uuid(w->id);
        rv = write_event(w->call, tx, "Principal", "", w->id, in->meta->name, "ADDED", &rev);
    }
    if (rv == 0) {
        int64_t now = now_ms(w->ctx);
        struct proto_value p[] = {proto_text(w->id),
                                  proto_text(w->kind),
                                  proto_text(in->meta->name),
                                  proto_text(in->oidc_issuer),
                                  proto_text(in->oidc_subject),
                                  proto_text(in->display_name),
                                  proto_int(in->disabled),
                                  proto_text(w->ctx->who.id),
                                  proto_int(rev),
                                  proto_int(now),
                                  proto_int(now),
                                  proto_text(in->email)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO principals (id, kind, name, namespace, issuer, subject, display_name, disabled, "
            "labels, created_by, resource_version, created_at_ms, updated_at_ms, email) "
            "VALUES (?, ?, ?, '', ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?)",
            p, 12, NULL);
    }
    /* Onboarding: the user role in the namespace, in the same transaction (its own change event;
     * the audit event names the principal). */
    if (rv == 0 && w->ns[0] != '\0') {
        char bid[37];
        rand_uuid(bid);
        int64_t brev = 0;
        rv = store_event_tx(tx, "RoleBinding", w->ns, bid, "ADDED", &brev);
        struct proto_value b[] = {proto_text(bid),           proto_text(w->id),
                                  proto_text(w->ns),         proto_text(w->ctx->who.id),
                                  proto_int(now_ms(w->ctx)), proto_int(brev)};
        if (rv == 0) {
            rv = store_tx_exec(
                tx,
                "INSERT INTO role_bindings (id, principal_id, role, namespace, scope, created_by, "
                "created_at_ms, resource_version) VALUES (?, ?, 'user', ?, '', ?, ?, ?)",
                b, 6, NULL);
        }
        struct proto_rows rows; /* the binding as stored: its event's payload (Events.Watch) */
        proto_rows_init(&rows, 0);
        if (rv == 0) {
            rv = store_tx_query(tx, "SELECT " BINDING_COLS " FROM role_bindings WHERE id = ?", b, 1, &rows);
        }
        if (rv == 0 && rows.n_rows == 1) {
            struct binding_msg m;
            binding_from_row(&m, &rows, 0);
            rv = res_payload_tx(tx, brev, &m.b.base);
        }
        proto_rows_close(&rows);
    }
    return rv;
}

static int reply_principal_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    const struct principal_write *w = arg;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(w->id)};
    int rv = store_tx_query(tx, "SELECT " PRINCIPAL_COLS " FROM principals WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        struct principal_msg m;
        principal_from_row(&m, &rows, 0);
        res_reply(c, &m.p.base);
    } else if (rv == 0) {
        rv = tx_fail(tx, GERR_NOTFOUND, "no such principal");
    }
    proto_rows_close(&rows);
    return rv;
}

static void p_create(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__CreatePrincipalRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__Principal *in = req->principal;
    char why[160];
    const char *kind = in != NULL ? kind_text(in->kind) : NULL;
    if (in == NULL || in->meta == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "principal.meta.name is required");
        return;
    }
    if (!names_dns_label_ok(in->meta->name, 63, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "principal.meta.name %s", why);
        return;
    }
    if (kind == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "principal.kind must be USER or SERVICE_ACCOUNT");
        return;
    }
    if ((in->oidc_issuer[0] == '\0') != (in->oidc_subject[0] == '\0')) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "principal.oidc_issuer and oidc_subject go together");
        return;
    }
    if (strlen(in->display_name) > 256 || strlen(in->email) > 256 || strlen(in->oidc_subject) > 256 ||
        strlen(in->oidc_issuer) > 256) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "display_name, email and the OIDC fields are at most 256 bytes");
        return;
    }
    /* A namespace_admin onboards users (the table checked the namespace and the kind): always
     * bound in that namespace, so the principal is one it manages (api/rules/principal.h). */
    struct principal_write w = {.ctx = ctx, .in = in, .kind = kind, .ns = req->namespace_};
    run_write(ctx, svc, req->request_id, &gantry__v1__principal__descriptor, tx_create_principal,
              reply_principal_tx, &w, &w.call);
}

struct pget_arg {
    const char *id; /* an id or a name */
    uint8_t *bytes; /* the principal found, mem_alloc'd; NULL: none */
    size_t len;
    char found_id[40];
    uint64_t rev;
};

/* Under the model's lock, read_principal's choice: the principal with that id or name, a user
 * before a service account, then the one whose id it is, then the lowest id (the store's ORDER BY
 * kind = 'user' DESC, id = ? DESC, id: service accounts of several namespaces may share a name). Names
 * are not indexed: a lookup by name scans the principals. */
static const struct kind_model_entry *pick_principal(const struct kind_model_view *v, const char *id_or_name)
{
    const struct kind_model_entry *pick = kind_model_find(v, "", id_or_name);
    const Gantry__V1__PrincipalKind user = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    if (pick == NULL || ((const Gantry__V1__Principal *)pick->msg)->kind != user) {
        for (size_t i = 0; i < v->n; i++) {
            const Gantry__V1__Principal *p = (const void *)v->entries[i].msg;
            if (strcmp(p->meta->name, id_or_name) == 0 && (pick == NULL || p->kind == user)) {
                pick = &v->entries[i];
                if (p->kind == user) {
                    break;
                }
            }
        }
    }
    return pick;
}

bool principals_model_resolve(const struct kind_model_view *v, const char *id_or_name, char id[40])
{
    const struct kind_model_entry *e = pick_principal(v, id_or_name);
    if (e != NULL) {
        snprintf(id, 40, "%s", e->key);
    }
    return e != NULL;
}

static void pget_model(const struct kind_model_view *v, void *arg)
{
    struct pget_arg *a = arg;
    a->rev = v->rev;
    const struct kind_model_entry *pick = pick_principal(v, a->id);
    if (pick != NULL) {
        a->bytes = kind_model_pack(pick->msg, &a->len);
        snprintf(a->found_id, sizeof a->found_id, "%s", pick->key);
    }
}

static void p_get(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__GetPrincipalRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "id (an id or a name) is required");
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    struct pget_arg a = {.id = req->id};
    if (kind_model_wait(&svc->principals, ctx, req->read, &need, &answered) &&
        kind_model_read(svc->principals.model, need, pget_model, &a)) {
        atomic_fetch_add(&svc->model_reads, 1);
        set_revision_trailer(ctx, a.rev);
        if (a.bytes == NULL) {
            fail_gerr(ctx, GERR_NOTFOUND, "get principal", "no such principal");
        } else if (ctx->decision.self_check && strcmp(a.found_id, ctx->who.id) != 0) {
            gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED,
                      "reading other principals needs the platform_admin, auditor or namespace_admin role");
        } else {
            grpc_call_finish_async_bytes(ctx->call, 0, NULL, a.bytes, a.len);
        }
        mem_free(a.bytes);
        return;
    }
    if (answered) {
        return;
    }
    struct proto_rows rows;
    int rv = read_principal(ctx, req->id, &rows);
    if (rv == 0 && ctx->decision.self_check && strcmp(col(&rows, 0, 0), ctx->who.id) != 0) {
        rv = GERR_PERM;
    }
    if (rv == GERR_PERM) {
        gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED,
                  "reading other principals needs the platform_admin, auditor or namespace_admin role");
    } else if (rv != 0) {
        fail_gerr(ctx, rv, "get principal", rv == GERR_NOTFOUND ? "no such principal" : ctx->cl->errmsg);
    } else {
        struct principal_msg m;
        principal_from_row(&m, &rows, 0);
        grpc_call_finish_async(ctx->call, 0, NULL, &m.p.base);
    }
    proto_rows_close(&rows);
}

/* One statement, so *@rev (may be NULL) is the revision the bindings were read at. */
static int list_bindings(struct gate_ctx *ctx, const char *principal_id, const char *ns, const char *after,
                         unsigned limit, struct proto_rows *rows, uint64_t *rev)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_text(principal_id), proto_text(ns), proto_text(after), proto_int(limit)};
    int rv =
        store_client_query(ctx->cl,
                           STORE_LIST_AT_REVISION("SELECT " BINDING_COLS
                                                  " FROM role_bindings WHERE (?1 = '' OR principal_id = ?1) "
                                                  "AND (?2 = '' OR namespace = ?2) AND id > ?3 ORDER BY id "
                                                  "LIMIT ?4",
                                                  "x.id"),
                           p, 4, rows);
    uint64_t r = 0;
    return rv != 0 ? rv : store_list_revision(rows, rev != NULL ? rev : &r);
}

struct perm_list {
    Gantry__V1__Permission *items;
    Gantry__V1__Permission **ptrs;
    size_t n, cap;
};

static void perm_add(void *arg, const struct authz_rule *r, const char *where, const char *condition)
{
    struct perm_list *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap != 0 ? l->cap * 2 : 64;
        l->items = mem_realloc(l->items, sizeof *l->items * l->cap);
    }
    Gantry__V1__Permission *p = &l->items[l->n++];
    gantry__v1__permission__init(p);
    /* The strings live in the rule table, the caller's bindings (ctx->who) or are static. */
    p->method = (char *)r->path;
    p->namespace_ = (char *)where;
    p->condition = (char *)condition;
}

/* Answer WhoAmI with @p and its @n bindings (in id order), and the permissions of the bindings
 * this call was authorized with (the gate's view), so they match what the gate enforces. */
static void whoami_answer(struct gate_ctx *ctx, const Gantry__V1__Principal *p, Gantry__V1__RoleBinding **bp,
                          size_t n)
{
    struct perm_list perms = {0};
    authz_effective(&ctx->caller, perm_add, &perms);
    perms.ptrs = mem_zalloc(sizeof *perms.ptrs * (perms.n + 1));
    for (size_t i = 0; i < perms.n; i++) {
        perms.ptrs[i] = &perms.items[i];
    }
    Gantry__V1__WhoAmIResponse resp = GANTRY__V1__WHO_AM_IRESPONSE__INIT;
    resp.principal = (Gantry__V1__Principal *)p;
    resp.n_bindings = n;
    resp.bindings = bp;
    resp.n_permissions = perms.n;
    resp.permissions = perms.ptrs;
    resp.authenticated_via = ctx->who.via;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(perms.items);
    mem_free(perms.ptrs);
}

/* WhoAmI from the principals and bindings models (both at @need or later), the principal's lock
 * held while the bindings are read, so the answer is packed from the models' messages. */
struct whoami_arg {
    struct gate_ctx *ctx;
    struct principals_svc *svc;
    uint64_t need;
    const Gantry__V1__Principal *principal;
    bool answered;
};

static void whoami_bindings(const struct kind_model_view *v, void *arg)
{
    struct whoami_arg *a = arg;
    size_t n = 0;
    /* by binding id (the model's name): the store path's ORDER BY id */
    const struct kind_model_entry **es = kind_model_children(v, a->ctx->who.id, &n);
    n = n < WHOAMI_BINDINGS_MAX ? n : WHOAMI_BINDINGS_MAX;
    Gantry__V1__RoleBinding **bp = mem_zalloc(sizeof *bp * (n + 1));
    for (size_t i = 0; i < n; i++) {
        bp[i] = (Gantry__V1__RoleBinding *)es[i]->msg;
    }
    whoami_answer(a->ctx, a->principal, bp, n);
    a->answered = true;
    mem_free(bp);
    mem_free(es);
}

static void whoami_principal(const struct kind_model_view *v, void *arg)
{
    struct whoami_arg *a = arg;
    const struct kind_model_entry *e = pick_principal(v, a->ctx->who.id);
    if (e != NULL) { /* else (deleted since authentication): the store path answers */
        a->principal = (const Gantry__V1__Principal *)e->msg;
        kind_model_read(a->svc->bindings.model, a->need, whoami_bindings, a);
    }
}

static void p_whoami(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    /* No read options: linearizable, as the store path (the leader) is. */
    struct whoami_arg a = {.ctx = ctx, .svc = svc};
    bool answered = false;
    if (!svc->bindings.store_reads && svc->bindings.model != NULL &&
        kind_model_wait(&svc->principals, ctx, NULL, &a.need, &answered)) {
        kind_model_read(svc->principals.model, a.need, whoami_principal, &a);
        if (a.answered) {
            atomic_fetch_add(&svc->model_reads, 1);
            return;
        }
    }
    if (answered) {
        return;
    }
    struct proto_rows prow, brows;
    int rv = read_principal(ctx, ctx->who.id, &prow);
    if (rv == 0) {
        rv = list_bindings(ctx, ctx->who.id, "", "", WHOAMI_BINDINGS_MAX, &brows, NULL);
        if (rv == 0) {
            struct principal_msg m;
            principal_from_row(&m, &prow, 0);
            struct binding_msg *bm = mem_zalloc(sizeof *bm * (brows.n_rows + 1));
            Gantry__V1__RoleBinding **bp = mem_zalloc(sizeof *bp * (brows.n_rows + 1));
            for (size_t i = 0; i < brows.n_rows; i++) {
                binding_from_row(&bm[i], &brows, i);
                bp[i] = &bm[i].b;
            }
            whoami_answer(ctx, &m.p, bp, brows.n_rows);
            mem_free(bm);
            mem_free(bp);
        }
        proto_rows_close(&brows);
    }
    if (rv != 0) {
        fail_gerr(ctx, rv, "whoami", ctx->cl->errmsg);
    }
    proto_rows_close(&prow);
}

struct bound_arg {
    const char *ns;
    char **ids; /* the principals bound in @ns, mem_strdup'd, sorted (strcmp), repeats kept */
    size_t n;
    uint64_t rev; /* the bindings model's revision when read */
};

/* Under the bindings model's lock: who holds a binding in @ns (for List's namespace filter). */
static void bound_model(const struct kind_model_view *v, void *arg)
{
    struct bound_arg *a = arg;
    a->rev = v->rev;
    size_t from = kind_model_after(v, a->ns, ""), to = from;
    while (to < v->n && strcmp(v->entries[to].ns, a->ns) == 0) {
        to++;
    }
    a->ids = mem_zalloc(sizeof *a->ids * (to - from + 1));
    for (size_t i = from; i < to; i++) {
        a->ids[a->n++] = mem_strdup(((const Gantry__V1__RoleBinding *)v->entries[i].msg)->principal_id);
    }
    qsort(a->ids, a->n, sizeof *a->ids, cmp_str);
}

struct plist_arg {
    struct gate_ctx *ctx;
    Gantry__V1__PrincipalKind kind; /* 0: every kind */
    const char *self;               /* only this id (decision.self_check); NULL: any */
    const struct bound_arg *bound;  /* only principals bound there; NULL: any */
    const struct page_req *page;
};

/* The store List's WHERE: the kind, the caller itself, bound in the namespace. */
static bool plist_keep(const struct kind_model_entry *e, void *arg)
{
    const struct plist_arg *a = arg;
    const Gantry__V1__Principal *p = (const void *)e->msg;
    return (a->kind == 0 || p->kind == a->kind) && (a->self == NULL || strcmp(e->key, a->self) == 0) &&
           (a->bound == NULL ||
            bsearch(&e->key, a->bound->ids, a->bound->n, sizeof *a->bound->ids, cmp_str) != NULL);
}

/* Under the principals model's lock: the store path's page (its WHERE, ORDER BY id, LIMIT). */
static void plist_model(const struct kind_model_view *v, void *arg)
{
    struct plist_arg *a = arg;
    const ProtobufCMessage **ps = mem_zalloc(sizeof *ps * (a->page->limit + 1));
    size_t n = 0;
    bool more = kind_model_page_if(v, "", a->page->after, a->page->limit, plist_keep, a, ps, &n);
    Gantry__V1__ListPrincipalsResponse resp = GANTRY__V1__LIST_PRINCIPALS_RESPONSE__INIT;
    resp.n_principals = n;
    resp.principals = (Gantry__V1__Principal **)ps;
    resp.next_page_token = more ? resp.principals[n - 1]->meta->id : "";
    /* With a namespace filter the page joins two models, each at the revision it had: the page
     * reflects every change up to the smaller one (both are at least the call's need). */
    resp.revision = a->bound != NULL && a->bound->rev < v->rev ? a->bound->rev : v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
}

/* The model's page (with the bindings model's for a namespace filter); false: the store's turn. */
static bool p_list_model(struct gate_ctx *ctx, struct principals_svc *svc,
                         const Gantry__V1__ListPrincipalsRequest *req, const struct page_req *page,
                         bool *answered)
{
    uint64_t need = 0;
    if (!kind_model_wait(&svc->principals, ctx, req->read, &need, answered)) {
        return false;
    }
    struct bound_arg bound = {.ns = req->namespace_};
    struct plist_arg a = {.ctx = ctx,
                          .kind = req->kind,
                          .self = ctx->decision.self_check ? ctx->who.id : NULL,
                          .bound = req->namespace_[0] != '\0' ? &bound : NULL,
                          .page = page};
    bool ok = (a.bound == NULL || (!svc->bindings.store_reads &&
                                   kind_model_read(svc->bindings.model, need, bound_model, &bound))) &&
              kind_model_read(svc->principals.model, need, plist_model, &a);
    for (size_t i = 0; i < bound.n; i++) {
        mem_free(bound.ids[i]);
    }
    mem_free(bound.ids);
    if (ok) {
        atomic_fetch_add(&svc->model_reads, 1);
    }
    return ok;
}

static void p_list(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__ListPrincipalsRequest *req = (const void *)grpc_call_request(ctx->call);
    const char *kind = req->kind != 0 ? kind_text(req->kind) : "";
    if (kind == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "kind: unknown principal kind %d", (int)req->kind);
        return;
    }
    struct page_req page;
    if (!read_page(ctx, req->page, PAGE_KEY_UUID, &page)) {
        return;
    }
    bool answered = false;
    if (p_list_model(ctx, svc, req, &page, &answered) || answered) {
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(kind), proto_text(req->namespace_), proto_text(page.after),
                              proto_int(limit + 1), proto_text(ctx->decision.self_check ? ctx->who.id : "")};
    int rv = store_client_query(
        ctx->cl,
        STORE_LIST_AT_REVISION(
            "SELECT " PRINCIPAL_COLS " FROM principals p WHERE (?1 = '' OR kind = ?1) AND (?2 = '' "
            "OR EXISTS (SELECT 1 FROM role_bindings b WHERE b.principal_id = p.id AND b.namespace = ?2)) "
            "AND id > ?3 AND (?5 = '' OR id = ?5) ORDER BY id LIMIT ?4",
            "x.id"),
        p, 5, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        fail_gerr(ctx, rv, "list principals", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    struct principal_msg *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__Principal **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        principal_from_row(&ms[i], &rows, i);
        ps[i] = &ms[i].p;
    }
    Gantry__V1__ListPrincipalsResponse resp = GANTRY__V1__LIST_PRINCIPALS_RESPONSE__INIT;
    resp.n_principals = n;
    resp.principals = ps;
    resp.next_page_token = rows.n_rows > limit ? ms[n - 1].meta.id : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

static int tx_update_principal(struct store_tx *tx, void *arg)
{
    struct principal_write *w = arg;
    const Gantry__V1__Principal *in = w->in;
    int rv = check_version(tx, "principals", w->id, w->expected);
    if (rv == 0 && in->disabled) {
        rv = keeps_an_admin(tx, w->id, NULL);
    }
    int64_t rev = 0;
    if (rv == 0) {
        rv = write_event(w->call, tx, "Principal", "", w->id, "", "MODIFIED", &rev);
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(in->display_name), proto_text(in->email),
                                  proto_int(in->disabled),      proto_int(rev),
                                  proto_int(now_ms(w->ctx)),    proto_text(w->id)};
        rv = store_tx_exec(
            tx,
            "UPDATE principals SET display_name = ?, email = ?, disabled = ?, resource_version = ?, "
            "updated_at_ms = ? WHERE id = ?",
            p, 6, NULL);
    }
    return rv;
}

/* Resolve the principal a write targets; answers the call and returns false when it cannot. */
static bool resolve_principal(struct gate_ctx *ctx, const char *id_or_name, char id[40])
{
    struct proto_rows rows;
    int rv = read_principal(ctx, id_or_name, &rows);
    if (rv == 0) {
        snprintf(id, 40, "%s", col(&rows, 0, 0));
    } else {
        fail_gerr(ctx, rv, "principal", rv == GERR_NOTFOUND ? "no such principal" : ctx->cl->errmsg);
    }
    proto_rows_close(&rows);
    return rv == 0;
}

static void p_update(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__UpdatePrincipalRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__Principal *in = req->principal;
    if (in == NULL || in->meta == NULL || (in->meta->id[0] == '\0' && in->meta->name[0] == '\0')) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "principal.meta.id or principal.meta.name selects the principal");
        return;
    }
    if (strlen(in->display_name) > 256 || strlen(in->email) > 256) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "display_name and email are at most 256 bytes");
        return;
    }
    struct principal_write w = {.ctx = ctx, .in = in, .expected = req->expected_resource_version};
    if (!resolve_principal(ctx, in->meta->id[0] != '\0' ? in->meta->id : in->meta->name, w.id)) {
        return;
    }
    run_write(ctx, svc, req->request_id, &gantry__v1__principal__descriptor, tx_update_principal,
              reply_principal_tx, &w, &w.call);
}

static int tx_delete_principal(struct store_tx *tx, void *arg)
{
    struct principal_write *w = arg;
    int rv = check_version(tx, "principals", w->id, w->expected);
    if (rv == 0) {
        rv = keeps_an_admin(tx, w->id, NULL);
    }
    struct proto_value p[] = {proto_text(w->id)};
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM api_keys WHERE principal_id = ?", p, 1, NULL);
    }
    /* Nothing the principal was given outlives it: a new principal can never inherit a stale
     * share, provider grant or linked identity. */
    static const char *const cleanup[] = {
        "DELETE FROM role_bindings WHERE principal_id = ?",
        "DELETE FROM shares WHERE grantee_id = ?",
        "DELETE FROM provider_grants WHERE principal_id = ?",
        "DELETE FROM principal_links WHERE principal_id = ?",
        "DELETE FROM principals WHERE id = ?",
    };
    for (size_t i = 0; rv == 0 && i < sizeof cleanup / sizeof cleanup[0]; i++) {
        rv = store_tx_exec(tx, cleanup[i], p, 1, NULL);
    }
    int64_t rev = 0;
    if (rv == 0) {
        rv = write_event(w->call, tx, "Principal", "", w->id, "", "DELETED", &rev);
    }
    return rv;
}

static int reply_principal_deleted_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    (void)tx;
    return reply_deleted_tx(c, ((const struct principal_write *)arg)->id);
}

static void p_delete(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__DeletePrincipalRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "id (an id or a name) is required");
        return;
    }
    struct principal_write w = {.ctx = ctx, .expected = req->expected_resource_version, .delete = true};
    if (!resolve_principal(ctx, req->id, w.id)) {
        return;
    }
    run_write_last(ctx, svc, req->request_id, &gantry__v1__delete_response__descriptor, tx_delete_principal,
                   reply_principal_deleted_tx, reply_principal_tx, &w, &w.call);
}

/* --- Role bindings --- */

struct binding_write {
    struct gate_ctx *ctx;
    struct res_call *call;
    const char *principal_id, *role, *ns;
    const char *scope; /* delegation JSON or "" */
    char id[40];
    uint64_t expected;
    int64_t revision;
};

/* A namespace_admin that issued API keys for a user it onboarded holds their secrets. Such a user
 * must not gain, through a new binding, more than that admin could grant itself, or the admin
 * would hold a credential with that power. So while the principal has a live key issued by
 * another principal that is not a platform_admin, a new binding is refused unless it is the user
 * role in a namespace where that issuer is namespace_admin (FAILED_PRECONDITION naming the key):
 * revoke those keys first; the principal may create its own. */
static int issued_keys_allow(struct store_tx *tx, const struct binding_write *w)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(w->principal_id), proto_int(now_ms(w->ctx)), proto_text(w->role),
                              proto_text(w->ns), proto_text(w->scope)};
    int rv = store_tx_query(
        tx,
        "SELECT k.id, k.created_by FROM api_keys k WHERE k.principal_id = ?1 AND k.revoked_at_ms = 0 "
        "AND (k.expires_at_ms = 0 OR k.expires_at_ms > ?2) AND k.created_by <> ?1 "
        "AND k.created_by NOT LIKE 'system:%' "
        "AND NOT EXISTS (SELECT 1 FROM role_bindings b WHERE b.principal_id = k.created_by "
        "AND b.role = 'platform_admin' AND b.namespace = '' AND b.scope = '') "
        "AND NOT (?3 = 'user' AND ?4 <> '' AND ?5 = '' AND EXISTS (SELECT 1 FROM role_bindings b "
        "WHERE b.principal_id = k.created_by AND b.role = 'namespace_admin' AND b.namespace = ?4 "
        "AND b.scope = '')) ORDER BY k.id LIMIT 1",
        p, 5, &rows);
    if (rv == 0 && rows.n_rows > 0) {
        rv = tx_fail(
            tx, GERR_REFUSED,
            "the principal has API key %s, issued by %s, who could not grant this binding: revoke the "
            "keys others issued for it first (the principal may create its own)",
            col(&rows, 0, 0), col(&rows, 0, 1));
    }
    proto_rows_close(&rows);
    return rv;
}

static int tx_create_binding(struct store_tx *tx, void *arg)
{
    struct binding_write *w = arg;
    struct proto_value pp[] = {proto_text(w->principal_id)};
    int64_t n = 0;
    int rv = store_tx_query_int(tx, "SELECT count(*) FROM principals WHERE id = ?", pp, 1, &n);
    if (rv == 0 && n == 0) {
        return tx_fail(tx, GERR_NOTFOUND, "binding.principal_id: no such principal");
    }
    if (rv == 0 && w->scope[0] != '\0') {
        rv = store_tx_query_int(
            tx, "SELECT count(*) FROM principals WHERE id = ? AND kind = 'service_account'", pp, 1, &n);
        if (rv == 0 && n == 0) {
            return tx_fail(tx, GERR_INVAL,
                           "binding.delegation: only a service account's binding may carry a "
                           "delegation scope");
        }
    }
    if (rv == 0 && w->ns[0] != '\0') {
        struct proto_value np[] = {proto_text(w->ns)};
        rv = store_tx_query_int(tx, "SELECT count(*) FROM namespaces WHERE name = ? AND phase = 'ACTIVE'", np,
                                1, &n);
        if (rv == 0 && n == 0) {
            return tx_fail(tx, GERR_NOTFOUND, "binding.namespace: no active namespace \"%s\"", w->ns);
        }
    }
    if (rv == 0) {
        struct proto_value dp[] = {proto_text(w->principal_id), proto_text(w->role), proto_text(w->ns)};
        rv = store_tx_query_int(
            tx, "SELECT count(*) FROM role_bindings WHERE principal_id = ? AND role = ? AND namespace = ?",
            dp, 3, &n);
        if (rv == 0 && n > 0) {
            return tx_fail(tx, GERR_EXISTS, "the principal already holds this role here");
        }
    }
    if (rv == 0) {
        rv = issued_keys_allow(tx, w);
    }
    if (rv == 0) {
        rand_uuid(w->id);
        rv = write_event(w->call, tx, "RoleBinding", w->ns, w->id, w->role, "ADDED", &w->revision);
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(w->id),         proto_text(w->principal_id),
                                  proto_text(w->role),       proto_text(w->ns),
                                  proto_text(w->scope),      proto_text(w->ctx->who.id),
                                  proto_int(now_ms(w->ctx)), proto_int(w->revision)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO role_bindings (id, principal_id, role, namespace, scope, created_by, created_at_ms, "
            "resource_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            p, 8, NULL);
    }
    return rv;
}

static int reply_binding_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    const struct binding_write *w = arg;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(w->id)};
    int rv = store_tx_query(tx, "SELECT " BINDING_COLS " FROM role_bindings WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        struct binding_msg m;
        binding_from_row(&m, &rows, 0);
        res_reply(c, &m.b.base);
    } else if (rv == 0) {
        rv = tx_fail(tx, GERR_NOTFOUND, "no such role binding");
    }
    proto_rows_close(&rows);
    return rv;
}

static int reply_binding_deleted_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    (void)tx;
    return reply_deleted_tx(c, ((const struct binding_write *)arg)->id);
}

/* A delegation scope from the request, checked: globs of DNS-label characters, at most
 * AUTHZ_SCOPE_MAX each. Returns false after answering the call. */
static bool scope_from_request(struct gate_ctx *ctx, const Gantry__V1__DelegationScope *d,
                               struct authz_scope *sc)
{
    struct {
        const char *field;
        char **items;
        size_t n;
        char (*out)[48];
        unsigned *n_out;
        const char *extra; /* characters allowed besides [a-z0-9-*?] */
    } lists[] = {
        {"namespace_patterns", d->namespace_patterns, d->n_namespace_patterns, sc->patterns, &sc->n_patterns,
         ""},
        {"allowed_driver_config_keys", d->allowed_driver_config_keys, d->n_allowed_driver_config_keys,
         sc->config_keys, &sc->n_config_keys, "._"},
        {"allowed_credential_sources", d->allowed_credential_sources, d->n_allowed_credential_sources,
         sc->sources, &sc->n_sources, ""},
    };
    memset(sc, 0, sizeof *sc);
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
        if (lists[l].n > AUTHZ_SCOPE_MAX) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "binding.delegation.%s has at most %u entries",
                      lists[l].field, AUTHZ_SCOPE_MAX);
            return false;
        }
        for (size_t i = 0; i < lists[l].n; i++) {
            const char *v = lists[l].items[i];
            size_t len = strlen(v);
            bool ok = len > 0 && len < 48;
            for (size_t k = 0; ok && k < len; k++) {
                char ch = v[k];
                ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '*' ||
                     ch == '?' || (ch >= 'A' && ch <= 'Z' && lists[l].extra[0] != '\0') ||
                     strchr(lists[l].extra, ch) != NULL;
            }
            if (!ok) {
                gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                          "binding.delegation.%s[%zu] must be 1..47 characters of a-z, 0-9, '-'%s and the "
                          "wildcards '*' and '?'",
                          lists[l].field, i, lists[l].extra[0] != '\0' ? ", A-Z, '.', '_'" : "");
                return false;
            }
            snprintf(lists[l].out[i], 48, "%s", v);
        }
        *lists[l].n_out = (unsigned)lists[l].n;
    }
    if (sc->n_patterns == 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "binding.delegation.namespace_patterns needs at least one pattern (e.g. \"team-*\")");
        return false;
    }
    if (d->n_allowed_service_accounts > AUTHZ_SCOPE_MAX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "binding.delegation.allowed_service_accounts has at most %u entries", AUTHZ_SCOPE_MAX);
        return false;
    }
    for (size_t i = 0; i < d->n_allowed_service_accounts; i++) {
        const char *v = d->allowed_service_accounts[i];
        int rv = authz_scope_add_service_account(sc, v);
        if (rv == GERR_INVAL && authz_sa_name_ok(v)) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "binding.delegation.allowed_service_accounts[%zu] \"%s\" is the gateway's own "
                      "ServiceAccount: never allowed",
                      i, v);
            return false;
        }
        if (rv == GERR_INVAL) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "binding.delegation.allowed_service_accounts[%zu] \"%.100s\" is not a ServiceAccount "
                      "name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')",
                      i, v);
            return false;
        }
        if (rv != 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "binding.delegation.allowed_service_accounts: at most %u bytes together",
                      AUTHZ_SCOPE_SA_BYTES);
            return false;
        }
    }
    struct {
        const char *field, *what;
        char **items;
        size_t n;
        int (*add)(struct authz_scope *, const char *);
    } place[] = {
        {"allowed_kubernetes_namespaces", "a pattern of 1..63 characters of a-z, 0-9, '-', '*' and '?'",
         d->allowed_kubernetes_namespaces, d->n_allowed_kubernetes_namespaces,
         authz_scope_add_kube_namespace},
        {"allowed_runtime_classes",
         "a RuntimeClass name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')",
         d->allowed_runtime_classes, d->n_allowed_runtime_classes, authz_scope_add_runtime_class},
        {"allowed_secret_namespaces", "a pattern of 1..63 characters of a-z, 0-9, '-', '*' and '?'",
         d->allowed_secret_namespaces, d->n_allowed_secret_namespaces, authz_scope_add_secret_namespace},
        {"allowed_secret_names", "a pattern of 1..253 characters of a-z, 0-9, '-', '.', '*' and '?'",
         d->allowed_secret_names, d->n_allowed_secret_names, authz_scope_add_secret_name},
        {"allowed_warm_pools",
         "a SandboxWarmPool name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')",
         d->allowed_warm_pools, d->n_allowed_warm_pools, authz_scope_add_warm_pool},
        {"allowed_templates",
         "a SandboxTemplate name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')",
         d->allowed_templates, d->n_allowed_templates, authz_scope_add_template},
        {"allowed_node_selectors",
         "a node selector pair key=value (Kubernetes label syntax: key [prefix/]name, value at most 63 "
         "characters of A-Z, a-z, 0-9, '-', '_' and '.')",
         d->allowed_node_selectors, d->n_allowed_node_selectors, authz_scope_add_node_selector},
        {"allowed_tolerations",
         "a toleration pattern key[=value][:effect] (a label key, a label value, and NoSchedule, "
         "PreferNoSchedule or NoExecute)",
         d->allowed_tolerations, d->n_allowed_tolerations, authz_scope_add_toleration},
    };
    for (size_t l = 0; l < sizeof place / sizeof place[0]; l++) {
        for (size_t i = 0; i < place[l].n; i++) {
            int rv = place[l].add(sc, place[l].items[i]);
            if (rv == GERR_INVAL) {
                gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                          "binding.delegation.%s[%zu] \"%.100s\" is not %s", place[l].field, i,
                          place[l].items[i], place[l].what);
                return false;
            }
            if (rv != 0) {
                gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                          "binding.delegation.%s: at most %u entries and %u bytes together", place[l].field,
                          AUTHZ_SCOPE_MAX, AUTHZ_SCOPE_PLACE_BYTES);
                return false;
            }
        }
    }
    sc->on_behalf = d->create_on_behalf_of_owner;
    sc->set = true;
    return true;
}

static void b_create(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__CreateRoleBindingRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__RoleBinding *b = req->binding;
    if (b == NULL || b->principal_id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "binding.principal_id is required");
        return;
    }
    if (b->role < 1 || b->role > 4) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "binding.role must be PLATFORM_ADMIN, NAMESPACE_ADMIN, AUDITOR or USER");
        return;
    }
    enum authz_role role = (enum authz_role)b->role;
    bool global = role == AZ_ROLE_PLATFORM_ADMIN || role == AZ_ROLE_AUDITOR;
    char *scope = NULL;
    if (b->delegation != NULL) {
        /* A delegated binding has no namespace of its own: its patterns say where it applies. */
        struct authz_scope sc;
        bool pa = false;
        for (size_t i = 0; i < ctx->who.n_bindings; i++) {
            pa = pa || ctx->who.bindings[i].role == AZ_ROLE_PLATFORM_ADMIN;
        }
        if (!pa) {
            gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED,
                      "granting a delegation scope needs the platform_admin role");
            return;
        }
        if (global) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "binding.delegation: only the user and namespace_admin roles can be delegated");
            return;
        }
        if (b->namespace_[0] != '\0') {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "binding.namespace must be empty with a delegation scope: its namespace_patterns say "
                      "where it applies");
            return;
        }
        if (!scope_from_request(ctx, b->delegation, &sc)) {
            return;
        }
        scope = authz_scope_json(&sc);
    } else if (global && b->namespace_[0] != '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "binding.namespace must be empty: %s is a global role",
                  authz_role_name(role));
        return;
    } else if (!global && b->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "binding.namespace is required for the %s role",
                  authz_role_name(role));
        return;
    }
    struct binding_write w = {.ctx = ctx,
                              .principal_id = b->principal_id,
                              .role = authz_role_name(role),
                              .ns = b->namespace_,
                              .scope = scope != NULL ? scope : ""};
    run_write(ctx, svc, req->request_id, &gantry__v1__role_binding__descriptor, tx_create_binding,
              reply_binding_tx, &w, &w.call);
    mem_free(scope);
}

static int tx_delete_binding(struct store_tx *tx, void *arg)
{
    struct binding_write *w = arg;
    int rv = check_version(tx, "role_bindings", w->id, w->expected);
    if (rv == 0 && strcmp(w->role, "platform_admin") == 0) {
        rv = keeps_an_admin(tx, NULL, w->id);
    }
    struct proto_value p[] = {proto_text(w->id)};
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM role_bindings WHERE id = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = write_event(w->call, tx, "RoleBinding", w->ns, w->id, w->role, "DELETED", &w->revision);
    }
    return rv;
}

static void b_delete(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__DeleteRoleBindingRequest *req = (const void *)grpc_call_request(ctx->call);
    struct proto_rows rows;
    int rv = read_one(ctx, "SELECT " BINDING_COLS " FROM role_bindings WHERE id = ?", req->id, &rows);
    if (rv != 0) {
        fail_gerr(ctx, rv, "delete role binding",
                  rv == GERR_NOTFOUND ? "no such role binding" : ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    char role[32], ns[64], why[GERR_MSG_SIZE];
    snprintf(role, sizeof role, "%s", col(&rows, 0, 2));
    snprintf(ns, sizeof ns, "%s", col(&rows, 0, 3));
    proto_rows_close(&rows);
    if (!authz_binding_write(&ctx->caller, authz_role_parse(role), ns, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED, "%s", why);
        return;
    }
    struct binding_write w = {.ctx = ctx, .role = role, .ns = ns, .expected = req->expected_resource_version};
    snprintf(w.id, sizeof w.id, "%s", req->id);
    run_write_last(ctx, svc, req->request_id, &gantry__v1__delete_response__descriptor, tx_delete_binding,
                   reply_binding_deleted_tx, reply_binding_tx, &w, &w.call);
}

struct blist_arg {
    struct gate_ctx *ctx;
    const char *principal, *ns; /* "": any */
    const struct page_req *page;
};

/* Under the bindings model's lock: list_bindings' page (ORDER BY id LIMIT limit + 1). One
 * namespace's bindings are in id order already; every namespace's are gathered and sorted. */
static void blist_model(const struct kind_model_view *v, void *arg)
{
    struct blist_arg *a = arg;
    const struct kind_model_entry **es = mem_zalloc(sizeof *es * (v->n + 1));
    size_t n = 0;
    size_t from = a->ns[0] != '\0' ? kind_model_after(v, a->ns, a->page->after) : 0;
    for (size_t i = from; i < v->n; i++) {
        const struct kind_model_entry *e = &v->entries[i];
        if (a->ns[0] != '\0' && strcmp(e->ns, a->ns) != 0) {
            break;
        }
        if (strcmp(e->name, a->page->after) <= 0 ||
            (a->principal[0] != '\0' &&
             strcmp(((const Gantry__V1__RoleBinding *)e->msg)->principal_id, a->principal) != 0)) {
            continue;
        }
        es[n++] = e;
        if (a->ns[0] != '\0' && n > a->page->limit) {
            break;
        }
    }
    if (a->ns[0] == '\0') {
        qsort(es, n, sizeof *es, cmp_entry_name);
    }
    bool more = n > a->page->limit;
    n = more ? a->page->limit : n;
    const Gantry__V1__RoleBinding **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        ps[i] = (const Gantry__V1__RoleBinding *)es[i]->msg;
    }
    Gantry__V1__ListRoleBindingsResponse resp = GANTRY__V1__LIST_ROLE_BINDINGS_RESPONSE__INIT;
    resp.n_bindings = n;
    resp.bindings = (Gantry__V1__RoleBinding **)ps;
    resp.next_page_token = more ? ps[n - 1]->meta->id : "";
    resp.revision = v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
    mem_free(es);
}

static void b_list(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__ListRoleBindingsRequest *req = (const void *)grpc_call_request(ctx->call);
    const char *principal = req->principal_id;
    if (ctx->decision.self_check) {
        if (principal[0] != '\0' && strcmp(principal, ctx->who.id) != 0) {
            gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED,
                      "listing other principals' bindings needs the platform_admin, auditor or "
                      "namespace_admin role");
            return;
        }
        principal = ctx->who.id;
    }
    struct page_req page;
    if (!read_page(ctx, req->page, PAGE_KEY_UUID, &page)) {
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    struct blist_arg a = {.ctx = ctx, .principal = principal, .ns = req->namespace_, .page = &page};
    if (kind_model_wait(&svc->bindings, ctx, req->read, &need, &answered) &&
        kind_model_read(svc->bindings.model, need, blist_model, &a)) {
        atomic_fetch_add(&svc->model_reads, 1);
        return;
    }
    if (answered) {
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    uint64_t revision = 0;
    int rv = list_bindings(ctx, principal, req->namespace_, page.after, limit + 1, &rows, &revision);
    if (rv != 0) {
        fail_gerr(ctx, rv, "list role bindings", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    struct binding_msg *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__RoleBinding **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        binding_from_row(&ms[i], &rows, i);
        ps[i] = &ms[i].b;
    }
    Gantry__V1__ListRoleBindingsResponse resp = GANTRY__V1__LIST_ROLE_BINDINGS_RESPONSE__INIT;
    resp.n_bindings = n;
    resp.bindings = ps;
    resp.next_page_token = rows.n_rows > limit ? ms[n - 1].meta.id : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

/* --- API keys --- */

struct key_write {
    struct gate_ctx *ctx;
    struct res_call *call;
    const char *secret; /* the new key (create): answered once, never stored */
    struct principals_svc *svc;
    const char *principal_id, *name;
    int64_t expires;
    char keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    unsigned pepper_version; /* create: the pepper version that made @hash */
    uint64_t expected;
    int64_t revision;
    bool delete;
    bool manage;    /* the key is another principal's: the caller must manage it (in the tx) */
    char owner[40]; /* revoke, delete: the key's principal */
};

/* In a key write's transaction: does the caller still manage the key's principal? */
static int managed_tx(struct store_tx *tx, struct key_write *w, const char *principal)
{
    char why[GERR_MSG_SIZE];
    int rv = w->manage ? manages(w->ctx, tx, principal, why, sizeof why) : 0;
    return rv == GERR_PERM ? tx_fail(tx, GERR_PERM, "%s", why) : rv;
}

static int tx_create_key(struct store_tx *tx, void *arg)
{
    struct key_write *w = arg;
    struct proto_value pp[] = {proto_text(w->principal_id)};
    int64_t disabled = 0;
    int rv = store_tx_query_int(tx, "SELECT disabled FROM principals WHERE id = ?", pp, 1, &disabled);
    if (rv == GERR_NOTFOUND) {
        return tx_fail(tx, GERR_NOTFOUND, "principal_id: no such principal");
    }
    if (rv == 0) {
        rv = managed_tx(tx, w, w->principal_id);
    }
    if (rv == 0 && disabled) {
        return tx_fail(tx, GERR_REFUSED, "the principal is disabled");
    }
    if (rv == 0) {
        rv = write_event(w->call, tx, "ApiKey", "", w->keyid, w->name, "ADDED", &w->revision);
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(w->keyid),        proto_text(w->principal_id),
                                  proto_text(w->name),         proto_blob(w->hash, sizeof w->hash),
                                  proto_text(w->ctx->who.id),  proto_int(now_ms(w->ctx)),
                                  proto_int(w->expires),       proto_int(w->revision),
                                  proto_int(w->pepper_version)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO api_keys (id, principal_id, name, hash, created_by, created_at_ms, expires_at_ms, "
            "last_used_ms, revoked_at_ms, resource_version, pepper_version) VALUES (?, ?, ?, ?, ?, ?, ?, 0, "
            "0, "
            "?, ?)",
            p, 9, NULL);
    }
    return rv;
}

/* The stored reply has the key without its secret; this call's answer has the secret too. */
static int reply_key_created_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    const struct key_write *w = arg;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(w->keyid)};
    int rv = store_tx_query(tx, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        struct key_msg m;
        key_from_row(&m, &rows, 0);
        Gantry__V1__CreateApiKeyResponse resp = GANTRY__V1__CREATE_API_KEY_RESPONSE__INIT;
        resp.key = &m.k;
        res_reply(c, &resp.base);
        rv = res_event_payload(tx, c, &m.k.base); /* the key's metadata: never the secret */
        resp.secret = (char *)w->secret;
        res_answer(c, &resp.base);
    } else if (rv == 0) {
        rv = tx_fail(tx, GERR_NOTFOUND, "no such API key");
    }
    proto_rows_close(&rows);
    return rv;
}

/* The key's public message (metadata only, never the secret or its hash) as the reply. */
static int key_object_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    const struct key_write *w = arg;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(w->keyid)};
    int rv = store_tx_query(tx, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        struct key_msg m;
        key_from_row(&m, &rows, 0);
        res_reply(c, &m.k.base);
    } else if (rv == 0) {
        rv = tx_fail(tx, GERR_NOTFOUND, "no such API key");
    }
    proto_rows_close(&rows);
    return rv;
}

static int reply_key_tx(struct store_tx *tx, struct res_call *c, void *arg)
{
    const struct key_write *w = arg;
    return w->delete ? reply_deleted_tx(c, w->keyid) : key_object_tx(tx, c, arg);
}

static void k_create(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__CreateApiKeyRequest *req = (const void *)grpc_call_request(ctx->call);
    const char *principal = req->principal_id[0] != '\0' ? req->principal_id : ctx->who.id;
    bool other = ctx->decision.self_check && strcmp(principal, ctx->who.id) != 0;
    if (other && !ctx->decision.manage_check) {
        gate_fail(
            ctx, GRPC_STATUS_PERMISSION_DENIED,
            "creating API keys for another principal needs the platform_admin role (or namespace_admin of "
            "every namespace a user is bound in)");
        return;
    }
    if (strlen(req->name) > 63) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name is at most 63 bytes");
        return;
    }
    if (req->expires_at_ms != 0 && req->expires_at_ms <= ctx->now_ms) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "expires_at_ms is in the past");
        return;
    }
    char key[APIKEY_LEN + 1], err[GERR_MSG_SIZE] = "";
    struct key_write w = {.ctx = ctx,
                          .svc = svc,
                          .principal_id = principal,
                          .name = req->name,
                          .expires = req->expires_at_ms,
                          .secret = key,
                          .manage = other,
                          .pepper_version = 1};
    /* New keys are hashed with the current pepper version (a rotation's newest). */
    uint8_t pepper[PEPPER_RING_SIZE];
    const uint8_t *pep = svc->pepper;
    size_t pep_len = svc->pepper_len;
    int rv = 0;
    if (svc->peppers != NULL) {
        rv = pepper_ring_current(svc->peppers, ctx->cl, ctx->now_ms, &w.pepper_version, pepper, err);
        pep = pepper;
        pep_len = sizeof pepper;
    }
    if (rv == 0) {
        rv = apikey_generate(pep, pep_len, key, w.keyid, w.hash, err);
    }
    memset(pepper, 0, sizeof pepper);
    if (rv != 0) {
        fail_gerr(ctx, rv, "create API key", err);
    } else {
        ctx->answer_secret = true;
        run_write(ctx, svc, req->request_id, &gantry__v1__create_api_key_response__descriptor, tx_create_key,
                  reply_key_created_tx, &w, &w.call);
    }
    memset(key, 0, sizeof key);
}

/* Read a key and apply the self check; answers and returns false when the call cannot go on. */
static bool read_key(struct gate_ctx *ctx, const char *id, struct proto_rows *rows)
{
    if (id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "id (the key id) is required");
        proto_rows_init(rows, 0);
        return false;
    }
    int rv = read_one(ctx, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?", id, rows);
    if (rv == 0 && ctx->decision.self_check && strcmp(col(rows, 0, 1), ctx->who.id) != 0) {
        /* Other principals' keys are not even confirmed to exist, unless the caller manages them. */
        char why[GERR_MSG_SIZE];
        int mrv =
            ctx->decision.manage_check ? manages(ctx, NULL, col(rows, 0, 1), why, sizeof why) : GERR_PERM;
        rv = mrv == GERR_PERM ? GERR_NOTFOUND : mrv;
    }
    if (rv != 0) {
        fail_gerr(ctx, rv, "API key", rv == GERR_NOTFOUND ? "no such API key" : ctx->cl->errmsg);
        return false;
    }
    return true;
}

struct kget_arg {
    const char *id;
    uint8_t *bytes; /* the key's metadata, mem_alloc'd; NULL: none */
    size_t len;
    char owner[40];
    uint64_t rev;
};

static void kget_model(const struct kind_model_view *v, void *arg)
{
    struct kget_arg *a = arg;
    a->rev = v->rev;
    const struct kind_model_entry *e = kind_model_find(v, "", a->id);
    if (e != NULL) {
        a->bytes = kind_model_pack(e->msg, &a->len);
        snprintf(a->owner, sizeof a->owner, "%s", ((const Gantry__V1__ApiKey *)e->msg)->principal_id);
    }
}

/* read_key's answer from the model, the self and manage checks as there (a namespace admin's
 * right to the owner's keys is read from the store); false: the store's turn. */
static bool k_get_model(struct gate_ctx *ctx, struct principals_svc *svc,
                        const Gantry__V1__GetApiKeyRequest *req, bool *answered)
{
    uint64_t need = 0;
    struct kget_arg a = {.id = req->id};
    if (!kind_model_wait(&svc->keys, ctx, req->read, &need, answered) ||
        !kind_model_read(svc->keys.model, need, kget_model, &a)) {
        return false;
    }
    atomic_fetch_add(&svc->model_reads, 1);
    set_revision_trailer(ctx, a.rev);
    int rv = a.bytes != NULL ? 0 : GERR_NOTFOUND;
    if (rv == 0 && ctx->decision.self_check && strcmp(a.owner, ctx->who.id) != 0) {
        char why[GERR_MSG_SIZE];
        int mrv = ctx->decision.manage_check ? manages(ctx, NULL, a.owner, why, sizeof why) : GERR_PERM;
        rv = mrv == GERR_PERM ? GERR_NOTFOUND : mrv;
    }
    if (rv != 0) {
        fail_gerr(ctx, rv, "API key", rv == GERR_NOTFOUND ? "no such API key" : ctx->cl->errmsg);
    } else {
        grpc_call_finish_async_bytes(ctx->call, 0, NULL, a.bytes, a.len);
    }
    mem_free(a.bytes);
    return true;
}

static void k_get(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__GetApiKeyRequest *req = (const void *)grpc_call_request(ctx->call);
    bool answered = false;
    if (req->id[0] != '\0' && (k_get_model(ctx, svc, req, &answered) || answered)) {
        return;
    }
    struct proto_rows rows;
    if (read_key(ctx, req->id, &rows)) {
        struct key_msg m;
        key_from_row(&m, &rows, 0);
        grpc_call_finish_async(ctx->call, 0, NULL, &m.k.base);
    }
    proto_rows_close(&rows);
}

struct klist_arg {
    struct gate_ctx *ctx;
    const char *principal; /* "": any */
    const struct page_req *page;
};

/* The store List's WHERE: one principal's keys. */
static bool klist_keep(const struct kind_model_entry *e, void *arg)
{
    const struct klist_arg *a = arg;
    return a->principal[0] == '\0' ||
           strcmp(((const Gantry__V1__ApiKey *)e->msg)->principal_id, a->principal) == 0;
}

/* Under the keys model's lock: the store path's page (ORDER BY id LIMIT limit + 1). */
static void klist_model(const struct kind_model_view *v, void *arg)
{
    struct klist_arg *a = arg;
    const ProtobufCMessage **ps = mem_zalloc(sizeof *ps * (a->page->limit + 1));
    size_t n = 0;
    bool more = kind_model_page_if(v, "", a->page->after, a->page->limit, klist_keep, a, ps, &n);
    Gantry__V1__ListApiKeysResponse resp = GANTRY__V1__LIST_API_KEYS_RESPONSE__INIT;
    resp.n_keys = n;
    resp.keys = (Gantry__V1__ApiKey **)ps;
    resp.next_page_token = more ? resp.keys[n - 1]->meta->id : "";
    resp.revision = v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
}

static void k_list(struct gate_ctx *ctx, void *data)
{
    struct principals_svc *svc = data;
    const Gantry__V1__ListApiKeysRequest *req = (const void *)grpc_call_request(ctx->call);
    const char *principal = req->principal_id;
    if (ctx->decision.self_check) {
        if (principal[0] != '\0' && strcmp(principal, ctx->who.id) != 0) {
            char why[GERR_MSG_SIZE];
            int rv = ctx->decision.manage_check ? manages(ctx, NULL, principal, why, sizeof why) : GERR_PERM;
            if (rv != 0) {
                gate_fail(ctx, rv == GERR_PERM ? GRPC_STATUS_PERMISSION_DENIED : grpc_status_from_gerr(rv),
                          "listing other principals' API keys needs the platform_admin or auditor role, or "
                          "namespace_admin of every namespace a user is bound in%s%s",
                          rv == GERR_PERM && ctx->decision.manage_check ? ": " : "",
                          rv == GERR_PERM && ctx->decision.manage_check ? why : "");
                return;
            }
        } else {
            principal = ctx->who.id;
        }
    }
    struct page_req page;
    if (!read_page(ctx, req->page, PAGE_KEY_HEX32, &page)) {
        return;
    }
    uint64_t need = 0;
    bool answered = false;
    struct klist_arg a = {.ctx = ctx, .principal = principal, .page = &page};
    if (kind_model_wait(&svc->keys, ctx, req->read, &need, &answered) &&
        kind_model_read(svc->keys.model, need, klist_model, &a)) {
        atomic_fetch_add(&svc->model_reads, 1);
        return;
    }
    if (answered) {
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(principal), proto_text(page.after), proto_int(limit + 1)};
    int rv = store_client_query(
        ctx->cl,
        STORE_LIST_AT_REVISION("SELECT " KEY_COLS " FROM api_keys WHERE (?1 = '' OR principal_id = ?1) AND "
                               "id > ?2 ORDER BY id LIMIT ?3",
                               "x.id"),
        p, 3, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        fail_gerr(ctx, rv, "list API keys", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    struct key_msg *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__ApiKey **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        key_from_row(&ms[i], &rows, i);
        ps[i] = &ms[i].k;
    }
    Gantry__V1__ListApiKeysResponse resp = GANTRY__V1__LIST_API_KEYS_RESPONSE__INIT;
    resp.n_keys = n;
    resp.keys = ps;
    resp.next_page_token = rows.n_rows > limit ? ms[n - 1].meta.id : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

static int tx_revoke_key(struct store_tx *tx, void *arg)
{
    struct key_write *w = arg;
    int rv = managed_tx(tx, w, w->owner);
    if (rv == 0) {
        rv = check_version(tx, "api_keys", w->keyid, w->expected);
    }
    if (rv == 0) {
        rv = write_event(w->call, tx, "ApiKey", "", w->keyid, "", w->delete ? "DELETED" : "MODIFIED",
                         &w->revision);
    }
    struct proto_value p[] = {proto_int(now_ms(w->ctx)), proto_int(w->revision), proto_text(w->keyid)};
    if (rv == 0 && w->delete) {
        rv = store_tx_exec(tx, "DELETE FROM api_keys WHERE id = ?", p + 2, 1, NULL);
    } else if (rv == 0) {
        rv = store_tx_exec(
            tx,
            "UPDATE api_keys SET revoked_at_ms = CASE WHEN revoked_at_ms = 0 THEN ?1 ELSE revoked_at_ms END, "
            "resource_version = ?2 WHERE id = ?3",
            p, 3, NULL);
    }
    return rv;
}

static void k_revoke_or_delete(struct gate_ctx *ctx, struct principals_svc *svc, bool delete)
{
    const Gantry__V1__RevokeApiKeyRequest *req = (const void *)grpc_call_request(ctx->call);
    struct proto_rows rows;
    if (!read_key(ctx, req->id, &rows)) {
        proto_rows_close(&rows);
        return;
    }
    struct key_write w = {
        .ctx = ctx, .svc = svc, .expected = req->expected_resource_version, .delete = delete};
    snprintf(w.owner, sizeof w.owner, "%s", col(&rows, 0, 1));
    w.manage = ctx->decision.self_check && strcmp(w.owner, ctx->who.id) != 0;
    proto_rows_close(&rows);
    snprintf(w.keyid, sizeof w.keyid, "%s", req->id);
    run_write_last(ctx, svc, req->request_id,
                   delete ? &gantry__v1__delete_response__descriptor : &gantry__v1__api_key__descriptor,
                   tx_revoke_key, reply_key_tx, delete ? key_object_tx : NULL, &w, &w.call);
}

static void k_revoke(struct gate_ctx *ctx, void *data)
{
    k_revoke_or_delete(ctx, data, false);
}

static void k_delete(struct gate_ctx *ctx, void *data)
{
    k_revoke_or_delete(ctx, data, true);
}

int principals_svc_register(struct gate *g, struct principals_svc *svc, char *errmsg)
{
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Principals/Create", p_create},
        {"/gantry.v1.Principals/Get", p_get},
        {"/gantry.v1.Principals/WhoAmI", p_whoami},
        {"/gantry.v1.Principals/List", p_list},
        {"/gantry.v1.Principals/Update", p_update},
        {"/gantry.v1.Principals/Delete", p_delete},
        {"/gantry.v1.Principals/CreateRoleBinding", b_create},
        {"/gantry.v1.Principals/DeleteRoleBinding", b_delete},
        {"/gantry.v1.Principals/ListRoleBindings", b_list},
        {"/gantry.v1.ApiKeys/Create", k_create},
        {"/gantry.v1.ApiKeys/Get", k_get},
        {"/gantry.v1.ApiKeys/List", k_list},
        {"/gantry.v1.ApiKeys/Revoke", k_revoke},
        {"/gantry.v1.ApiKeys/Delete", k_delete},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, svc) != 0) {
            gerr_set(errmsg, "principals service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
