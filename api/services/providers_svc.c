/* gantry.v1.Providers (api/services/providers_svc.h). */
#include "api/services/providers_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/audit.h"
#include "api/gate/gate.h"
#include "api/rules/labels.h"
#include "api/rules/page.h"
#include "api/rules/secret_ref.h"
#include "drivers/driver.h"
#include "gantry/v1/providers.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "store/events.h"

#define PROV_COLS                                                                                            \
    "id, namespace, name, type, config, secret_keys, key_id, labels, created_by, resource_version, "         \
    "created_at_ms, updated_at_ms"
#define MAX_ENTRIES      64u
#define MAX_CONFIG_VALUE 4096u
#define MAX_SECRET_KEY   128u
#define MAX_SECRET_VALUE (16u * 1024u)
#define MAX_SECRET_TOTAL (64u * 1024u)
#define REENCRYPT_BATCH  32u
#define SYSTEM_ACTOR     "gantryd"
#define ROTATE_OPERATION "gantryd rotate-provider-key"

/* What an apply function gets: the service (its key ring) and the decoded request. */
struct prov_op {
    struct providers_svc *svc;
    const void *req;
};

/* A (key, value) view of the protobuf-c map entries of either request type. */
struct kv {
    const char *k, *v;
};

/* --- small helpers --- */

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static int64_t coli(const struct proto_rows *r, size_t i, unsigned c)
{
    return proto_rows_at(r, i, c)->u.i;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->k, ((const struct kv *)b)->k);
}

/* Sorted views of map entries (protobuf-c keeps wire order and duplicates). */
#define KV_OF(entries, n, out)                                                                               \
    do {                                                                                                     \
        for (size_t i_ = 0; i_ < (n); i_++) {                                                                \
            (out)[i_] = (struct kv){(entries)[i_]->key, (entries)[i_]->value};                               \
        }                                                                                                    \
        qsort((out), (n), sizeof(struct kv), kv_cmp);                                                        \
    } while (0)

static bool chars_ok(const char *s, size_t max, const char *extra, bool upper)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper && c >= 'A' && c <= 'Z') ||
                  strchr(extra, c) != NULL;
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool has_dup(const struct kv *kv, size_t n, size_t *at)
{
    for (size_t i = 1; i < n; i++) {
        if (strcmp(kv[i - 1].k, kv[i].k) == 0) {
            *at = i;
            return true;
        }
    }
    return false;
}

/* Config: non-secret settings, keys as label keys. */
/* "env.<secret key>" = VARIABLE: the sandbox also gets that secret entry in environment variable
 * VARIABLE (docs/credentials.md). Names the sandbox's own set-up relies on, the dynamic loader's
 * and Gantry's are refused. */
#define ENV_PREFIX "env."

static bool env_var_ok(const char *v)
{
    if (!chars_ok(v, 128, "_", true) || (v[0] >= '0' && v[0] <= '9')) {
        return false;
    }
    static const char *const reserved[] = {"PATH", "HOME", "USER", "SHELL", "PWD", NULL};
    for (size_t i = 0; reserved[i] != NULL; i++) {
        if (strcmp(v, reserved[i]) == 0) {
            return false;
        }
    }
    return strncmp(v, "GANTRY_", 7) != 0 && strncmp(v, "LD_", 3) != 0;
}

static bool env_config_ok(struct gate_ctx *ctx, const struct kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strncmp(kv[i].k, ENV_PREFIX, strlen(ENV_PREFIX)) != 0) {
            continue;
        }
        const char *key = kv[i].k + strlen(ENV_PREFIX);
        if (!chars_ok(key, MAX_SECRET_KEY, "._-", true) || strcmp(key, ".") == 0 || strcmp(key, "..") == 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "provider.config: \"%s\" must name a secret key after \"" ENV_PREFIX "\"", kv[i].k);
            return false;
        }
        if (!env_var_ok(kv[i].v)) {
            gate_fail(
                ctx, GRPC_STATUS_INVALID_ARGUMENT,
                "provider.config: the value of \"%s\" must be an environment variable name "
                "([A-Za-z_][A-Za-z0-9_]*, at most 128) other than PATH, HOME, USER, SHELL, PWD, GANTRY_* "
                "and LD_*",
                kv[i].k);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (strncmp(kv[j].k, ENV_PREFIX, strlen(ENV_PREFIX)) == 0 && strcmp(kv[j].v, kv[i].v) == 0) {
                gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                          "provider.config: \"%s\" and \"%s\" both set environment variable %s", kv[j].k,
                          kv[i].k, kv[i].v);
                return false;
            }
        }
    }
    return true;
}

static bool config_ok(struct gate_ctx *ctx, const struct kv *kv, size_t n)
{
    size_t dup;
    if (n > MAX_ENTRIES) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.config: at most %u entries", MAX_ENTRIES);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!chars_ok(kv[i].k, 63, "._-/", true)) {
            gate_fail(
                ctx, GRPC_STATUS_INVALID_ARGUMENT,
                "provider.config: key %zu is not 1..63 characters of letters, digits, '.', '_', '-', '/'", i);
            return false;
        }
        json_t *utf8 = json_string(kv[i].v);
        json_decref(utf8);
        if (utf8 == NULL) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.config: the value of \"%s\" is not UTF-8",
                      kv[i].k);
            return false;
        }
        if (strlen(kv[i].v) > MAX_CONFIG_VALUE) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "provider.config: the value of \"%s\" is over %u bytes", kv[i].k, MAX_CONFIG_VALUE);
            return false;
        }
    }
    if (has_dup(kv, n, &dup)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.config: key \"%s\" is given twice", kv[dup].k);
        return false;
    }
    if (!env_config_ok(ctx, kv, n)) {
        return false;
    }
    return true;
}

/* Secret: messages name a key, never a value. */
static bool secret_ok(struct gate_ctx *ctx, const struct kv *kv, size_t n, bool required)
{
    size_t total = 0, dup;
    if (required && n == 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "secret is required: a provider holds at least one credential");
        return false;
    }
    if (n > MAX_ENTRIES) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "secret: at most %u entries", MAX_ENTRIES);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!chars_ok(kv[i].k, MAX_SECRET_KEY, "._-", true) || strcmp(kv[i].k, ".") == 0 ||
            strcmp(kv[i].k, "..") == 0) {
            gate_fail(
                ctx, GRPC_STATUS_INVALID_ARGUMENT,
                "secret: key %zu is not 1..%u characters of letters, digits, '.', '_', '-' (nor \".\" or "
                "\"..\": each key is a file name in the sandbox)",
                i, MAX_SECRET_KEY);
            return false;
        }
        size_t len = strlen(kv[i].v);
        if (len == 0 || len > MAX_SECRET_VALUE) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "secret: the value of \"%s\" must be 1..%u bytes",
                      kv[i].k, MAX_SECRET_VALUE);
            return false;
        }
        total += strlen(kv[i].k) + len + 2;
    }
    if (total > MAX_SECRET_TOTAL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "secret: %zu bytes in all, over %u", total,
                  MAX_SECRET_TOTAL);
        return false;
    }
    if (has_dup(kv, n, &dup)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "secret: key \"%s\" is given twice", kv[dup].k);
        return false;
    }
    return true;
}

static bool provider_ok(struct gate_ctx *ctx, const Gantry__V1__Provider *p, bool type_required)
{
    char why[160], err[GERR_MSG_SIZE];
    if (p == NULL || p->meta == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.meta.name is required");
        return false;
    }
    if (p->meta->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.meta.namespace is required");
        return false;
    }
    if (!names_dns_label_ok(p->meta->name, 63, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "provider.meta.name %s", why);
        return false;
    }
    if ((type_required || p->type[0] != '\0') && !chars_ok(p->type, 63, "._-", false)) {
        gate_fail(
            ctx, GRPC_STATUS_INVALID_ARGUMENT,
            "provider.type must be 1..63 characters of a-z, 0-9, '.', '_', '-' (\"openai\", \"github\", "
            "\"generic\", ...)");
        return false;
    }
    if (labels_check(p->meta->labels, p->meta->n_labels, "provider.meta.labels", err) != 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return false;
    }
    struct kv *kv = mem_zalloc(sizeof *kv * (p->n_config + 1));
    KV_OF(p->config, p->n_config, kv);
    bool ok = config_ok(ctx, kv, p->n_config);
    mem_free(kv);
    return ok;
}

/* JSON texts stored beside the sealed secret: config (object) and secret_keys (array of names). */
static char *json_text(json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    char *out = mem_strdup(t != NULL ? t : "{}");
    free(t);
    return out;
}

static char *config_json(const Gantry__V1__Provider *p)
{
    json_t *o = json_object();
    for (size_t i = 0; i < p->n_config; i++) {
        json_object_set_new(o, p->config[i]->key, json_string(p->config[i]->value));
    }
    return json_text(o);
}

static char *keys_json(const struct kv *kv, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_string(kv[i].k));
    }
    return json_text(a);
}

/* --- sealing --- */

/* The AAD that binds a sealed secret to its row: provider id, namespace and key id. */
static size_t secret_aad(char *out, size_t len, const char *id, const char *ns, const char *key_id)
{
    int n = snprintf(out, len, "gantry.v1.Provider%c%s%c%s%c%s", 0, id, 0, ns, 0, key_id);
    return n > 0 && (size_t)n < len ? (size_t)n : len - 1;
}

/* The plaintext "k\0v\0k\0v\0..." of the sorted entries, in a buffer sized once (no copies left
 * behind by a reallocation), sealed under the ring's newest key into @sealed. */
static int seal_secret(struct store_tx *tx, const struct keyring *ring, int64_t now_ms, const char *id,
                       const char *ns, const struct kv *kv, size_t n, struct buf *sealed,
                       char key_id[KEYRING_ID_SIZE])
{
    struct keyring_key k;
    int rv = keyring_current_tx(ring, tx, now_ms, &k);
    if (rv != 0) {
        return rv;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += strlen(kv[i].k) + strlen(kv[i].v) + 2;
    }
    struct buf plain;
    buf_init(&plain);
    buf_reserve(&plain, total + 1);
    for (size_t i = 0; i < n; i++) {
        buf_append(&plain, kv[i].k, strlen(kv[i].k) + 1);
        buf_append(&plain, kv[i].v, strlen(kv[i].v) + 1);
    }
    char aad[256];
    size_t aad_len = secret_aad(aad, sizeof aad, id, ns, k.id);
    rv = keyring_seal(&k, aad, aad_len, plain.data, plain.len, sealed, store_tx_errmsg(tx));
    snprintf(key_id, KEYRING_ID_SIZE, "%s", k.id);
    keyring_key_wipe(&k);
    keyring_buf_wipe(&plain);
    return rv;
}

/* Open the sealed secret of row (@id, @ns, @key_id) into @plain. */
static int open_secret(struct store_tx *tx, const struct keyring *ring, const char *id, const char *ns,
                       const char *key_id, const struct proto_value *sealed, struct buf *plain)
{
    struct keyring_key k;
    int rv = keyring_get_tx(ring, tx, key_id, &k);
    if (rv != 0) {
        return rv;
    }
    char aad[256];
    size_t aad_len = secret_aad(aad, sizeof aad, id, ns, key_id);
    rv = sealed->type == PROTO_BLOB
             ? keyring_open(&k, aad, aad_len, sealed->u.b.s, sealed->u.b.n, plain, store_tx_errmsg(tx))
             : GERR_INVAL;
    keyring_key_wipe(&k);
    return rv;
}

/* --- Provider messages from rows --- */

struct prov_msg {
    Gantry__V1__Provider p;
    Gantry__V1__ObjectMeta meta;
    json_t *labels, *config, *keys;
    Gantry__V1__ObjectMeta__LabelsEntry *lent, **lptr;
    Gantry__V1__Provider__ConfigEntry *cent, **cptr;
    char **kptr;
};

static void labels_into(struct prov_msg *m, const char *json)
{
    m->labels = json_loads(json, 0, NULL);
    size_t n = json_is_object(m->labels) ? json_object_size(m->labels) : 0, i = 0;
    m->lent = mem_zalloc(sizeof *m->lent * (n + 1));
    m->lptr = mem_zalloc(sizeof *m->lptr * (n + 1));
    const char *k;
    json_t *v;
    if (n > 0) {
        json_object_foreach(m->labels, k, v)
        {
            gantry__v1__object_meta__labels_entry__init(&m->lent[i]);
            m->lent[i].key = (char *)k;
            m->lent[i].value = (char *)(json_is_string(v) ? json_string_value(v) : "");
            m->lptr[i] = &m->lent[i];
            i++;
        }
    }
    m->meta.n_labels = i;
    m->meta.labels = m->lptr;
}

static void config_into(struct prov_msg *m, const char *json)
{
    m->config = json_loads(json, 0, NULL);
    size_t n = json_is_object(m->config) ? json_object_size(m->config) : 0, i = 0;
    m->cent = mem_zalloc(sizeof *m->cent * (n + 1));
    m->cptr = mem_zalloc(sizeof *m->cptr * (n + 1));
    const char *k;
    json_t *v;
    if (n > 0) {
        json_object_foreach(m->config, k, v)
        {
            gantry__v1__provider__config_entry__init(&m->cent[i]);
            m->cent[i].key = (char *)k;
            m->cent[i].value = (char *)(json_is_string(v) ? json_string_value(v) : "");
            m->cptr[i] = &m->cent[i];
            i++;
        }
    }
    m->p.n_config = i;
    m->p.config = m->cptr;
}

static void keys_into(struct prov_msg *m, const char *json)
{
    m->keys = json_loads(json, 0, NULL);
    size_t n = json_is_array(m->keys) ? json_array_size(m->keys) : 0, k = 0;
    m->kptr = mem_zalloc(sizeof *m->kptr * (n + 1));
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(m->keys, i));
        if (s != NULL) {
            m->kptr[k++] = (char *)s;
        }
    }
    m->p.n_secret_keys = k;
    m->p.secret_keys = m->kptr;
}

static void prov_from_row(struct prov_msg *m, const struct proto_rows *r, size_t i)
{
    memset(m, 0, sizeof *m);
    gantry__v1__provider__init(&m->p);
    gantry__v1__object_meta__init(&m->meta);
    m->meta.id = (char *)col(r, i, 0);
    m->meta.namespace_ = (char *)col(r, i, 1);
    m->meta.name = (char *)col(r, i, 2);
    m->p.type = (char *)col(r, i, 3);
    config_into(m, col(r, i, 4));
    keys_into(m, col(r, i, 5));
    m->p.key_id = (char *)col(r, i, 6);
    labels_into(m, col(r, i, 7));
    m->meta.created_by = (char *)col(r, i, 8);
    m->meta.resource_version = (uint64_t)coli(r, i, 9);
    m->meta.created_at_ms = coli(r, i, 10);
    m->meta.updated_at_ms = coli(r, i, 11);
    m->p.meta = &m->meta;
}

static void prov_msg_free(struct prov_msg *m)
{
    json_decref(m->labels);
    json_decref(m->config);
    json_decref(m->keys);
    mem_free(m->lent);
    mem_free(m->lptr);
    mem_free(m->cent);
    mem_free(m->cptr);
    mem_free(m->kptr);
}

static int prov_read_tx(struct store_tx *tx, const char *ns, const char *name, struct proto_rows *rows)
{
    proto_rows_init(rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(name)};
    int rv = store_tx_query(tx, "SELECT " PROV_COLS " FROM providers WHERE namespace = ? AND name = ?", p, 2,
                            rows);
    if (rv == 0 && rows->n_rows == 0) {
        return res_fail(tx, GERR_NOTFOUND, "provider \"%.63s\" does not exist in namespace \"%.63s\"", name,
                        ns);
    }
    return rv;
}

static void reply_prov(struct store_tx *tx, struct res_call *c, const char *ns, const char *name)
{
    struct proto_rows rows;
    if (prov_read_tx(tx, ns, name, &rows) == 0) {
        struct prov_msg m;
        prov_from_row(&m, &rows, 0);
        res_reply(c, &m.p.base);
        prov_msg_free(&m);
    }
    proto_rows_close(&rows);
}

static int check_version(struct store_tx *tx, int64_t have, uint64_t expected)
{
    if (expected != 0 && (uint64_t)have != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, have,
                        expected);
    }
    return 0;
}

static int ns_active_tx(struct store_tx *tx, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv = store_tx_query(tx, "SELECT phase FROM namespaces WHERE name = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    } else if (rv == 0 && strcmp(col(&rows, 0, 0), "ACTIVE") != 0) {
        rv = res_fail(tx, GERR_REFUSED, "namespace \"%.63s\" is being deleted (TERMINATING)", ns);
    }
    proto_rows_close(&rows);
    return rv;
}

/* --- Secret-backed credentials (api/rules/secret_ref.h) --- */

/* The Secret references in @p's config are well formed, each names a credential key that is a file
 * name, and none is also a stored key of @secret (@n_secret of them). *@n_refs counts them. Answers
 * INVALID_ARGUMENT itself when not. */
static bool refs_ok(struct gate_ctx *ctx, const Gantry__V1__Provider *p, const struct kv *secret,
                    size_t n_secret, size_t *n_refs)
{
    *n_refs = 0;
    for (size_t i = 0; i < p->n_config; i++) {
        const char *key = secret_ref_key(p->config[i]->key);
        if (key == NULL) {
            continue;
        }
        struct secret_ref r;
        if (!chars_ok(key, MAX_SECRET_KEY, "._-", true) || strcmp(key, ".") == 0 || strcmp(key, "..") == 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "provider.config: \"%s\" must name a credential key after \"" SECRET_REF_PREFIX
                      "\" (letters, digits, '.', '_', '-'; a file name in the sandbox)",
                      p->config[i]->key);
            return false;
        }
        if (secret_ref_parse(p->config[i]->value, &r) != 0) {
            gate_fail(
                ctx, GRPC_STATUS_INVALID_ARGUMENT,
                "provider.config: the value of \"%s\" must be NAMESPACE/NAME/KEY of a Kubernetes Secret "
                "(a namespace name, a Secret name, a data key of letters, digits, '.', '_', '-')",
                p->config[i]->key);
            return false;
        }
        for (size_t k = 0; k < n_secret; k++) {
            if (strcmp(secret[k].k, key) == 0) {
                gate_fail(
                    ctx, GRPC_STATUS_INVALID_ARGUMENT,
                    "provider: credential \"%s\" is both a stored secret and \"%s\": give it one source", key,
                    p->config[i]->key);
                return false;
            }
        }
        (*n_refs)++;
    }
    return true;
}

static bool platform_admin(const struct gate_ctx *ctx)
{
    for (size_t i = 0; i < ctx->who.n_bindings; i++) {
        if (ctx->who.bindings[i].role == AZ_ROLE_PLATFORM_ADMIN && ctx->who.bindings[i].ns[0] == '\0' &&
            !ctx->who.bindings[i].scope.set) {
            return true;
        }
    }
    return false;
}

int providers_refs_allowed(const struct gate_ctx *ctx, const char *ns, const char *config_json, char *why,
                           size_t len)
{
    const struct authz_scope *scopes[AUTHN_MAX_BINDINGS];
    size_t n = authz_delegations(&ctx->caller, ns, scopes, AUTHN_MAX_BINDINGS);
    bool pa = platform_admin(ctx);
    json_t *cfg = json_loads(config_json, 0, NULL);
    const char *k;
    json_t *v;
    int rv = 0;
    why[0] = '\0';
    json_object_foreach(cfg, k, v)
    {
        struct secret_ref r;
        const char *text = json_string_value(v);
        if (rv != 0 || secret_ref_key(k) == NULL || text == NULL || secret_ref_parse(text, &r) != 0) {
            continue;
        }
        char reason[GERR_MSG_SIZE];
        if (!secret_ref_allowed(&r, pa, scopes, n, reason, sizeof reason)) {
            snprintf(why, len, "provider config \"%.60s\": %s", k, reason);
            rv = GERR_PERM;
        }
    }
    json_decref(cfg);
    return rv;
}

/* Inside a create or update: may the caller reference the Secrets @p's config names? Refused with
 * PERMISSION_DENIED (audited: the mutation's failure) naming the Secret. */
static int refs_allowed_tx(struct store_tx *tx, const struct res_call *c, const Gantry__V1__Provider *p)
{
    char why[GERR_MSG_SIZE];
    char *config = config_json(p);
    int rv = providers_refs_allowed(c->ctx, p->meta->namespace_, config, why, sizeof why);
    mem_free(config);
    return rv != 0 ? res_fail(tx, rv, "%s", why) : 0;
}

/* --- Create / Update --- */

static int prov_create_tx(struct store_tx *tx, struct res_call *c)
{
    const struct prov_op *op = c->arg;
    const Gantry__V1__CreateProviderRequest *req = op->req;
    const Gantry__V1__Provider *in = req->provider;
    const char *ns = in->meta->namespace_, *name = in->meta->name;
    int rv = refs_allowed_tx(tx, c, in);
    struct proto_rows rows;
    if (rv == 0) {
        rv = ns_active_tx(tx, ns);
    }
    if (rv == 0) {
        rv = prov_read_tx(tx, ns, name, &rows);
        proto_rows_close(&rows);
        if (rv == 0) {
            return res_fail(tx, GERR_EXISTS, "provider \"%.63s\" already exists in namespace \"%.63s\"", name,
                            ns);
        }
        if (rv == GERR_NOTFOUND) {
            store_tx_errmsg(tx)[0] = '\0';
            rv = 0;
        }
    }
    if (rv != 0) {
        return rv;
    }
    char id[37], key_id[KEYRING_ID_SIZE];
    rand_uuid(id);
    struct kv *kv = mem_zalloc(sizeof *kv * (req->n_secret + 1));
    KV_OF(req->secret, req->n_secret, kv);
    struct buf sealed;
    buf_init(&sealed);
    rv = seal_secret(tx, &op->svc->ring, c->ctx->now_ms, id, ns, kv, req->n_secret, &sealed, key_id);
    if (rv == 0) {
        rv = res_event(tx, c, "Provider", ns, id, name, "ADDED");
    }
    char *config = config_json(in), *keys = keys_json(kv, req->n_secret);
    char *labels = labels_json(in->meta->labels, in->meta->n_labels);
    if (rv == 0) {
        struct proto_value p[] = {proto_text(id),
                                  proto_text(ns),
                                  proto_text(name),
                                  proto_text(in->type),
                                  proto_text(config),
                                  proto_text(keys),
                                  proto_blob(sealed.data, sealed.len),
                                  proto_text(key_id),
                                  proto_text(labels),
                                  proto_text(c->ctx->who.id),
                                  proto_int(c->revision),
                                  proto_int(c->ctx->now_ms),
                                  proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO providers (id, namespace, name, type, config, secret_keys, secret, key_id, "
            "labels, created_by, resource_version, created_at_ms, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            p, 13, NULL);
    }
    mem_free(config);
    mem_free(keys);
    mem_free(labels);
    mem_free(kv);
    buf_close(&sealed);
    if (rv == 0) {
        reply_prov(tx, c, ns, name);
        rv = res_event_payload_reply(tx, c); /* the public Provider: key names, never values */
    }
    return rv;
}

static void prov_create(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__CreateProviderRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!provider_ok(ctx, req->provider, true)) {
        return;
    }
    struct kv *kv = mem_zalloc(sizeof *kv * (req->n_secret + 1));
    KV_OF(req->secret, req->n_secret, kv);
    size_t n_refs = 0;
    /* A provider holds at least one credential: stored, or a Secret reference. */
    bool ok = refs_ok(ctx, req->provider, kv, req->n_secret, &n_refs) &&
              secret_ok(ctx, kv, req->n_secret, n_refs == 0);
    mem_free(kv);
    if (ok) {
        struct prov_op op = {.svc = data, .req = req};
        res_mutate(ctx, op.svc->env, req->request_id, &gantry__v1__provider__descriptor, prov_create_tx, &op);
    }
}

/* The new secret of an update, sealed under the newest key; or the stored one kept. */
static int update_secret(struct store_tx *tx, struct res_call *c, const struct proto_rows *rows,
                         struct buf *sealed, char key_id[KEYRING_ID_SIZE], char **keys)
{
    const struct prov_op *op = c->arg;
    const Gantry__V1__UpdateProviderRequest *req = op->req;
    if (req->n_secret == 0) {
        *keys = mem_strdup(col(rows, 0, 5));
        snprintf(key_id, KEYRING_ID_SIZE, "%s", col(rows, 0, 6));
        return 0;
    }
    struct kv *kv = mem_zalloc(sizeof *kv * (req->n_secret + 1));
    KV_OF(req->secret, req->n_secret, kv);
    *keys = keys_json(kv, req->n_secret);
    int rv = seal_secret(tx, &op->svc->ring, c->ctx->now_ms, col(rows, 0, 0), col(rows, 0, 1), kv,
                         req->n_secret, sealed, key_id);
    mem_free(kv);
    return rv;
}

static int prov_update_tx(struct store_tx *tx, struct res_call *c)
{
    const struct prov_op *op = c->arg;
    const Gantry__V1__UpdateProviderRequest *req = op->req;
    const Gantry__V1__Provider *in = req->provider;
    const char *ns = in->meta->namespace_, *name = in->meta->name;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = refs_allowed_tx(tx, c, in);
    if (rv == 0) {
        rv = prov_read_tx(tx, ns, name, &rows);
    }
    if (rv == 0) {
        rv = check_version(tx, coli(&rows, 0, 9), req->expected_resource_version);
    }
    struct buf sealed;
    buf_init(&sealed);
    char key_id[KEYRING_ID_SIZE] = "", id[40] = "", type[64] = "";
    char *keys = NULL;
    if (rv == 0 && req->n_secret == 0) {
        /* The stored secret stays: a reference must not give one of its keys a second source. */
        json_t *stored = json_loads(col(&rows, 0, 5), 0, NULL);
        for (size_t i = 0; rv == 0 && i < in->n_config; i++) {
            const char *key = secret_ref_key(in->config[i]->key);
            for (size_t k = 0; key != NULL && rv == 0 && k < json_array_size(stored); k++) {
                const char *have = json_string_value(json_array_get(stored, k));
                if (have != NULL && strcmp(have, key) == 0) {
                    rv = res_fail(
                        tx, GERR_INVAL,
                        "provider: credential \"%s\" is both a stored secret and \"%s\": give it one "
                        "source",
                        key, in->config[i]->key);
                }
            }
        }
        json_decref(stored);
    }
    if (rv == 0) {
        snprintf(id, sizeof id, "%s", col(&rows, 0, 0));
        snprintf(type, sizeof type, "%s", in->type[0] != '\0' ? in->type : col(&rows, 0, 3));
        rv = update_secret(tx, c, &rows, &sealed, key_id, &keys);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Provider", ns, id, name, "MODIFIED");
    }
    char *config = config_json(in), *labels = labels_json(in->meta->labels, in->meta->n_labels);
    if (rv == 0 && req->n_secret > 0) {
        struct proto_value p[] = {proto_blob(sealed.data, sealed.len), proto_text(key_id), proto_text(keys),
                                  proto_text(id)};
        rv = store_tx_exec(tx, "UPDATE providers SET secret = ?, key_id = ?, secret_keys = ? WHERE id = ?", p,
                           4, NULL);
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(type),       proto_text(config),        proto_text(labels),
                                  proto_int(c->revision), proto_int(c->ctx->now_ms), proto_text(id)};
        rv = store_tx_exec(tx,
                           "UPDATE providers SET type = ?, config = ?, labels = ?, resource_version = ?, "
                           "updated_at_ms = ? WHERE id = ?",
                           p, 6, NULL);
    }
    mem_free(config);
    mem_free(labels);
    mem_free(keys);
    buf_close(&sealed);
    proto_rows_close(&rows);
    if (rv == 0) {
        reply_prov(tx, c, ns, name);
        rv = res_event_payload_reply(tx, c); /* the public Provider: key names, never values */
    }
    return rv;
}

static void prov_update(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__UpdateProviderRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!provider_ok(ctx, req->provider, false)) {
        return;
    }
    struct kv *kv = mem_zalloc(sizeof *kv * (req->n_secret + 1));
    KV_OF(req->secret, req->n_secret, kv);
    size_t n_refs = 0;
    bool ok =
        refs_ok(ctx, req->provider, kv, req->n_secret, &n_refs) && secret_ok(ctx, kv, req->n_secret, false);
    mem_free(kv);
    if (ok) {
        struct prov_op op = {.svc = data, .req = req};
        res_mutate(ctx, op.svc->env, req->request_id, &gantry__v1__provider__descriptor, prov_update_tx, &op);
    }
}

/* --- Delete --- */

/* The first sandbox of @ns whose spec lists provider @name (@user "" if none), and how many do. */
static int provider_users(struct store_tx *tx, const char *ns, const char *name, char *user, size_t len,
                          unsigned *count)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv =
        store_tx_query(tx, "SELECT name, spec FROM sandboxes WHERE namespace = ? ORDER BY name", p, 1, &rows);
    user[0] = '\0';
    *count = 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        const struct proto_value *spec = proto_rows_at(&rows, i, 1);
        Gantry__V1__SandboxSpec *s =
            spec->type == PROTO_BLOB
                ? gantry__v1__sandbox_spec__unpack(NULL, spec->u.b.n, (const uint8_t *)spec->u.b.s)
                : NULL;
        for (size_t k = 0; s != NULL && k < s->n_providers; k++) {
            if (strcmp(s->providers[k], name) == 0) {
                if ((*count)++ == 0) {
                    snprintf(user, len, "%s", col(&rows, i, 0));
                }
                break;
            }
        }
        if (s != NULL) {
            gantry__v1__sandbox_spec__free_unpacked(s, NULL);
        }
    }
    proto_rows_close(&rows);
    return rv;
}

static int prov_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeleteProviderRequest *req = ((const struct prov_op *)c->arg)->req;
    struct proto_rows rows;
    int rv = prov_read_tx(tx, req->namespace_, req->name, &rows);
    if (rv == 0) {
        rv = check_version(tx, coli(&rows, 0, 9), req->expected_resource_version);
    }
    char id[40] = "", user[64];
    unsigned users = 0;
    if (rv == 0) {
        snprintf(id, sizeof id, "%s", col(&rows, 0, 0));
        rv = provider_users(tx, req->namespace_, req->name, user, sizeof user, &users);
    }
    proto_rows_close(&rows);
    if (rv == 0 && users > 0) {
        char more[48] = "";
        if (users > 1) {
            snprintf(more, sizeof more, " (and %u more)", users - 1);
        }
        return res_fail(tx, GERR_REFUSED,
                        "provider \"%.63s\" is used by sandbox \"%s\"%s: delete those sandboxes first",
                        req->name, user, more);
    }
    struct proto_value p[] = {proto_text(id)};
    struct buf last; /* the DELETED event's payload: the provider's last public state */
    buf_init(&last);
    if (rv == 0) {
        reply_prov(tx, c, req->namespace_, req->name);
        buf_append(&last, c->reply.data, c->reply.len);
        c->reply.len = 0;
        rv = store_tx_exec(tx, "DELETE FROM provider_grants WHERE provider_id = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM providers WHERE id = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Provider", req->namespace_, id, req->name, "DELETED");
    }
    if (rv == 0) {
        rv = store_event_payload_tx(tx, c->revision, last.data, last.len);
    }
    buf_close(&last);
    if (rv == 0) {
        Gantry__V1__DeleteResponse r = GANTRY__V1__DELETE_RESPONSE__INIT;
        r.id = id;
        r.revision = (uint64_t)c->revision;
        res_reply(c, &r.base);
    }
    return rv;
}

static bool ns_name_ok(struct gate_ctx *ctx, const char *ns, const char *name)
{
    if (ns[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace is required");
        return false;
    }
    if (name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name is required");
        return false;
    }
    return true;
}

static void prov_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeleteProviderRequest *req = (const void *)grpc_call_request(ctx->call);
    if (ns_name_ok(ctx, req->namespace_, req->name)) {
        struct prov_op op = {.svc = data, .req = req};
        res_mutate(ctx, op.svc->env, req->request_id, &gantry__v1__delete_response__descriptor,
                   prov_delete_tx, &op);
    }
}

/* --- Grants --- */

/* The principal named by @who (an id, or a name) into @id. */
static int principal_tx(struct store_tx *tx, const char *who, char *id, size_t len)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(who)};
    int rv = store_tx_query(
        tx, "SELECT id FROM principals WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1", p, 1,
        &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "principal \"%.63s\" does not exist", who);
    }
    if (rv == 0) {
        snprintf(id, len, "%s", col(&rows, 0, 0));
    }
    proto_rows_close(&rows);
    return rv;
}

static void grant_msg(Gantry__V1__ProviderGrant *g, const struct proto_rows *r, size_t i)
{
    gantry__v1__provider_grant__init(g);
    g->provider_id = (char *)col(r, i, 0);
    g->namespace_ = (char *)col(r, i, 1);
    g->principal_id = (char *)col(r, i, 2);
    g->created_by = (char *)col(r, i, 3);
    g->created_at_ms = coli(r, i, 4);
}

#define GRANT_COLS "provider_id, namespace, principal_id, created_by, created_at_ms"

static int grant_target(struct store_tx *tx, const char *ns, const char *name, const char *who, char *pid,
                        char *principal)
{
    struct proto_rows rows;
    int rv = prov_read_tx(tx, ns, name, &rows);
    if (rv == 0) {
        snprintf(pid, 40, "%s", col(&rows, 0, 0));
    }
    proto_rows_close(&rows);
    return rv != 0 ? rv : principal_tx(tx, who, principal, 40);
}

static int grant_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__GrantProviderRequest *req = ((const struct prov_op *)c->arg)->req;
    char pid[40], principal[40];
    int rv = grant_target(tx, req->namespace_, req->name, req->principal_id, pid, principal);
    int64_t n = 0;
    struct proto_value b[] = {proto_text(principal), proto_text(req->namespace_)};
    if (rv == 0) {
        rv = store_tx_query_int(
            tx, "SELECT count(*) FROM role_bindings WHERE principal_id = ? AND namespace = ?", b, 2, &n);
    }
    if (rv == 0 && n == 0) {
        return res_fail(tx, GERR_REFUSED,
                        "principal \"%.63s\" holds no role in namespace \"%.63s\": bind it first "
                        "(Principals.CreateRoleBinding)",
                        req->principal_id, req->namespace_);
    }
    struct proto_value g[] = {proto_text(pid), proto_text(principal)};
    if (rv == 0) {
        rv = store_tx_query_int(
            tx, "SELECT count(*) FROM provider_grants WHERE provider_id = ? AND principal_id = ?", g, 2, &n);
    }
    if (rv == 0 && n > 0) {
        return res_fail(tx, GERR_EXISTS, "principal \"%.63s\" already holds a grant on provider \"%.63s\"",
                        req->principal_id, req->name);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "ProviderGrant", req->namespace_, pid, req->name, "ADDED");
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(pid), proto_text(req->namespace_), proto_text(principal),
                                  proto_text(c->ctx->who.id), proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(tx, "INSERT INTO provider_grants (" GRANT_COLS ") VALUES (?, ?, ?, ?, ?)", p, 5,
                           NULL);
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    if (rv == 0) {
        rv = store_tx_query(
            tx, "SELECT " GRANT_COLS " FROM provider_grants WHERE provider_id = ? AND principal_id = ?", g, 2,
            &rows);
    }
    if (rv == 0 && rows.n_rows == 1) {
        Gantry__V1__ProviderGrant msg;
        grant_msg(&msg, &rows, 0);
        res_reply(c, &msg.base);
        rv = res_event_payload(tx, c, &msg.base);
    }
    proto_rows_close(&rows);
    return rv;
}

static int revoke_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__RevokeProviderGrantRequest *req = ((const struct prov_op *)c->arg)->req;
    char pid[40], principal[40];
    int rv = grant_target(tx, req->namespace_, req->name, req->principal_id, pid, principal);
    struct proto_value g[] = {proto_text(pid), proto_text(principal)};
    struct store_result res = {0};
    struct proto_rows last; /* the DELETED event's payload: the grant as it was */
    proto_rows_init(&last, 0);
    if (rv == 0) {
        rv = store_tx_query(
            tx, "SELECT " GRANT_COLS " FROM provider_grants WHERE provider_id = ? AND principal_id = ?", g, 2,
            &last);
    }
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM provider_grants WHERE provider_id = ? AND principal_id = ?", g, 2,
                           &res);
    }
    if (rv == 0 && res.rows_affected == 0) {
        proto_rows_close(&last);
        return res_fail(tx, GERR_NOTFOUND, "principal \"%.63s\" holds no grant on provider \"%.63s\"",
                        req->principal_id, req->name);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "ProviderGrant", req->namespace_, pid, req->name, "DELETED");
    }
    if (rv == 0 && last.n_rows == 1) {
        Gantry__V1__ProviderGrant msg;
        grant_msg(&msg, &last, 0);
        rv = res_event_payload(tx, c, &msg.base);
    }
    proto_rows_close(&last);
    if (rv == 0) {
        Gantry__V1__DeleteResponse r = GANTRY__V1__DELETE_RESPONSE__INIT;
        r.id = pid;
        r.revision = (uint64_t)c->revision;
        res_reply(c, &r.base);
    }
    return rv;
}

static bool grant_input_ok(struct gate_ctx *ctx, const char *ns, const char *name, const char *principal)
{
    if (!ns_name_ok(ctx, ns, name)) {
        return false;
    }
    if (principal[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "principal_id is required");
        return false;
    }
    return true;
}

static void prov_grant(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__GrantProviderRequest *req = (const void *)grpc_call_request(ctx->call);
    if (grant_input_ok(ctx, req->namespace_, req->name, req->principal_id)) {
        struct prov_op op = {.svc = data, .req = req};
        res_mutate(ctx, op.svc->env, req->request_id, &gantry__v1__provider_grant__descriptor, grant_tx, &op);
    }
}

static void prov_revoke(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__RevokeProviderGrantRequest *req = (const void *)grpc_call_request(ctx->call);
    if (grant_input_ok(ctx, req->namespace_, req->name, req->principal_id)) {
        struct prov_op op = {.svc = data, .req = req};
        res_mutate(ctx, op.svc->env, req->request_id, &gantry__v1__delete_response__descriptor, revoke_tx,
                   &op);
    }
}

/* --- reads --- */

static void read_fail(struct gate_ctx *ctx, int rv, const char *what)
{
    gate_fail(ctx, grpc_status_from_gerr(rv), "%s: %s", what,
              ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
}

/* --- the model (api/services/kind_model.h): PROV_COLS, never the secret --- */

static uint8_t *prov_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    struct prov_msg m;
    prov_from_row(&m, r, i);
    uint8_t *out = kind_model_pack(&m.p.base, len);
    prov_msg_free(&m);
    return out;
}

struct kind_model *providers_model_new(void)
{
    struct kind_model_config cfg = {.kind = "Provider",
                                    .what = "provider",
                                    .table = "providers",
                                    .cols = PROV_COLS,
                                    .n_cols = 12,
                                    .ns_col = 1,
                                    .name_col = 2,
                                    .labels_col = 7,
                                    .key_col = 0,
                                    .key_where = "id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    .desc = &gantry__v1__provider__descriptor,
                                    .pack = prov_pack_row};
    return kind_model_new(&cfg);
}

static void prov_get(struct gate_ctx *ctx, void *data)
{
    const struct providers_svc *svc = data;
    const Gantry__V1__GetProviderRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_name_ok(ctx, req->namespace_, req->name)) {
        return;
    }
    char not_found[GERR_MSG_SIZE];
    snprintf(not_found, sizeof not_found, "provider \"%.63s\" does not exist in namespace \"%.63s\"",
             req->name, req->namespace_);
    if (kind_model_serve_get(&svc->reads, ctx, req->read, req->namespace_, req->name, not_found)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(req->name)};
    int rv = store_client_query(
        ctx->cl, "SELECT " PROV_COLS " FROM providers WHERE namespace = ? AND name = ?", p, 2, &rows);
    if (rv != 0) {
        read_fail(ctx, rv, "get provider");
    } else if (rows.n_rows == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "%s", not_found);
    } else {
        struct prov_msg m;
        prov_from_row(&m, &rows, 0);
        grpc_call_finish_async(ctx->call, 0, NULL, &m.p.base);
        prov_msg_free(&m);
    }
    proto_rows_close(&rows);
}

/* A page from the model (kind_model_serve_page). */
static void prov_list_answer(struct gate_ctx *ctx, const ProtobufCMessage **msgs, size_t n,
                             const char *next_token, uint64_t rev)
{
    Gantry__V1__ListProvidersResponse resp = GANTRY__V1__LIST_PROVIDERS_RESPONSE__INIT;
    resp.n_providers = n;
    resp.providers = (Gantry__V1__Provider **)msgs;
    resp.next_page_token = (char *)next_token;
    resp.revision = rev;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
}

static void prov_list(struct gate_ctx *ctx, void *data)
{
    const struct providers_svc *svc = data;
    const Gantry__V1__ListProvidersRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace is required");
        return;
    }
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_NAME, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (kind_model_serve_page(&svc->reads, ctx, req->read, req->namespace_, page.after, page.limit,
                              prov_list_answer)) {
        return;
    }
    unsigned limit = page.limit;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(page.after), proto_int(limit + 1)};
    int rv =
        store_client_query(ctx->cl,
                           STORE_LIST_AT_REVISION("SELECT " PROV_COLS " FROM providers WHERE namespace = ?1 "
                                                  "AND name > ?2 ORDER BY name LIMIT ?3",
                                                  "x.name"),
                           p, 3, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        read_fail(ctx, rv, "list providers");
        proto_rows_close(&rows);
        return;
    }
    size_t n = rows.n_rows > limit ? limit : rows.n_rows;
    struct prov_msg *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__Provider **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        prov_from_row(&ms[i], &rows, i);
        ps[i] = &ms[i].p;
    }
    Gantry__V1__ListProvidersResponse resp = GANTRY__V1__LIST_PROVIDERS_RESPONSE__INIT;
    resp.n_providers = n;
    resp.providers = ps;
    resp.next_page_token = rows.n_rows > limit ? ms[n - 1].meta.name : "";
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    for (size_t i = 0; i < n; i++) {
        prov_msg_free(&ms[i]);
    }
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

/* --- ListGrants from the grants model --- */

#define GRANT_MODEL_COLS GRANT_COLS ", provider_id || char(10) || principal_id"

static uint8_t *grant_pack_row(const struct proto_rows *r, size_t i, size_t *len)
{
    Gantry__V1__ProviderGrant g;
    grant_msg(&g, r, i);
    return kind_model_pack(&g.base, len);
}

struct kind_model *providers_grants_model_new(void)
{
    struct kind_model_config cfg = {.kind = "ProviderGrant",
                                    .what = "provider grant",
                                    .table = "provider_grants",
                                    .cols = GRANT_MODEL_COLS,
                                    .n_cols = 6,
                                    .ns_col = 1,
                                    .name_col = 5, /* "<provider id>\n<principal id>": by grantee */
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0, /* a grant's events carry its provider's id */
                                    .key_where = "provider_id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    /* deleting a provider deletes its grants without events */
                                    .parent_kind = "Provider",
                                    .parent_key = KIND_MODEL_KEY_OBJECT_ID,
                                    .parent_col = 0,
                                    .parent_where = "provider_id = ?",
                                    /* so does deleting a principal, for its grants */
                                    .reload_on_delete = "Principal",
                                    .desc = &gantry__v1__provider_grant__descriptor,
                                    .pack = grant_pack_row};
    return kind_model_new(&cfg);
}

struct grants_arg {
    struct gate_ctx *ctx;
    const char *ns, *name;
    char pid[48]; /* "<provider id>\n" once found */
    bool found, answered;
};

static void provider_id_model(const struct kind_model_view *v, void *arg)
{
    struct grants_arg *a = arg;
    const struct kind_model_entry *e = kind_model_find(v, a->ns, a->name);
    a->found = e != NULL;
    if (e != NULL) {
        snprintf(a->pid, sizeof a->pid, "%s\n", e->key); /* the providers model's key is the id */
    }
}

static void grants_model(const struct kind_model_view *v, void *arg)
{
    struct grants_arg *a = arg;
    size_t plen = strlen(a->pid), from = kind_model_after(v, a->ns, ""), n = 0;
    size_t at = from;
    /* the namespace's grants in order of provider id and grantee: skip to this provider's */
    while (at < v->n && strcmp(v->entries[at].ns, a->ns) == 0 &&
           strncmp(v->entries[at].name, a->pid, plen) < 0) {
        at++;
    }
    size_t first = at;
    while (at < v->n && strcmp(v->entries[at].ns, a->ns) == 0 &&
           strncmp(v->entries[at].name, a->pid, plen) == 0) {
        at++;
        n++;
    }
    Gantry__V1__ProviderGrant **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (size_t i = 0; i < n; i++) {
        ps[i] = (Gantry__V1__ProviderGrant *)v->entries[first + i].msg;
    }
    Gantry__V1__ListProviderGrantsResponse resp = GANTRY__V1__LIST_PROVIDER_GRANTS_RESPONSE__INIT;
    resp.n_grants = n;
    resp.grants = ps;
    resp.revision = v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
    a->answered = true;
}

/* true when the call was answered (from the models, or failed by its read index). */
static bool list_grants_model(const struct providers_svc *svc, struct gate_ctx *ctx,
                              const Gantry__V1__ListProviderGrantsRequest *req)
{
    uint64_t need = 0;
    bool answered = false;
    if (svc->grants == NULL || !kind_model_wait(&svc->reads, ctx, NULL, &need, &answered)) {
        return answered;
    }
    struct grants_arg a = {.ctx = ctx, .ns = req->namespace_, .name = req->name};
    if (!kind_model_read(svc->reads.model, need, provider_id_model, &a)) {
        return false;
    }
    if (!a.found) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "provider \"%.63s\" does not exist in namespace \"%.63s\"",
                  req->name, req->namespace_);
        return true;
    }
    return kind_model_read(svc->grants, need, grants_model, &a) && a.answered;
}

static void prov_list_grants(struct gate_ctx *ctx, void *data)
{
    const struct providers_svc *svc = data;
    const Gantry__V1__ListProviderGrantsRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_name_ok(ctx, req->namespace_, req->name) || list_grants_model(svc, ctx, req)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(req->name)};
    int rv = store_client_query(
        ctx->cl,
        "SELECT g.provider_id, g.namespace, g.principal_id, g.created_by, g.created_at_ms, "
        "p.id, (SELECT revision FROM cluster_revision WHERE id = 1) FROM providers p "
        "LEFT JOIN provider_grants g ON g.provider_id = p.id "
        "WHERE p.namespace = ? AND p.name = ? ORDER BY g.principal_id LIMIT 10001",
        p, 2, &rows);
    if (rv != 0) {
        read_fail(ctx, rv, "list provider grants");
    } else if (rows.n_rows == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "provider \"%.63s\" does not exist in namespace \"%.63s\"",
                  req->name, req->namespace_);
    } else {
        Gantry__V1__ProviderGrant *gs = mem_zalloc(sizeof *gs * (rows.n_rows + 1));
        Gantry__V1__ProviderGrant **ps = mem_zalloc(sizeof *ps * (rows.n_rows + 1));
        size_t n = 0;
        for (size_t i = 0; i < rows.n_rows; i++) {
            if (proto_rows_at(&rows, i, 0)->type == PROTO_TEXT) { /* NULL: a provider without grants */
                grant_msg(&gs[n], &rows, i);
                ps[n] = &gs[n];
                n++;
            }
        }
        Gantry__V1__ListProviderGrantsResponse resp = GANTRY__V1__LIST_PROVIDER_GRANTS_RESPONSE__INIT;
        resp.n_grants = n;
        resp.grants = ps;
        resp.revision = (uint64_t)proto_rows_at(&rows, 0, 6)->u.i; /* the statement's snapshot */
        grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
        mem_free(gs);
        mem_free(ps);
    }
    proto_rows_close(&rows);
}

/* --- exports --- */

static bool admin_of(const struct gate_ctx *ctx, const char *ns)
{
    for (size_t i = 0; i < ctx->who.n_bindings; i++) {
        const struct authz_binding *b = &ctx->who.bindings[i];
        if (b->role == AZ_ROLE_PLATFORM_ADMIN ||
            (b->role == AZ_ROLE_NAMESPACE_ADMIN && authz_binding_covers(b, ns))) {
            return true;
        }
    }
    return false;
}

int providers_check_attach(struct store_tx *tx, const char *ns, const char *provider_name,
                           const struct gate_ctx *ctx, char *why, size_t len)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(provider_name)};
    int rv = store_tx_query(tx, "SELECT id FROM providers WHERE namespace = ? AND name = ?", p, 2, &rows);
    char id[40] = "";
    if (rv == 0 && rows.n_rows == 0) {
        snprintf(why, len, "provider \"%.63s\" does not exist in namespace \"%.63s\"", provider_name, ns);
        rv = GERR_NOTFOUND;
    } else if (rv == 0) {
        snprintf(id, sizeof id, "%s", col(&rows, 0, 0));
    }
    proto_rows_close(&rows);
    if (rv != 0 || admin_of(ctx, ns)) {
        return rv;
    }
    int64_t n = 0;
    struct proto_value g[] = {proto_text(id), proto_text(ctx->who.id)};
    rv = store_tx_query_int(
        tx, "SELECT count(*) FROM provider_grants WHERE provider_id = ? AND principal_id = ?", g, 2, &n);
    if (rv == 0 && n == 0) {
        snprintf(
            why, len,
            "attaching provider \"%.63s\" needs a grant for you (Providers.Grant, by a namespace_admin of "
            "\"%.63s\") or the namespace_admin role there",
            provider_name, ns);
        rv = GERR_PERM;
    }
    return rv;
}

static int split_secret(struct providers_secret *s)
{
    size_t pairs = 0, i = 0;
    for (size_t at = 0; at < s->plain.len; at++) {
        pairs += s->plain.data[at] == '\0';
    }
    if (pairs % 2 != 0 || (s->plain.len > 0 && s->plain.data[s->plain.len - 1] != '\0')) {
        return GERR_INVAL;
    }
    s->n = pairs / 2;
    s->keys = mem_zalloc(sizeof *s->keys * (s->n + 1));
    s->values = mem_zalloc(sizeof *s->values * (s->n + 1));
    for (size_t at = 0; at < s->plain.len; i++) {
        const char *k = (const char *)s->plain.data + at;
        at += strlen(k) + 1;
        const char *v = (const char *)s->plain.data + at;
        at += strlen(v) + 1;
        s->keys[i] = k;
        s->values[i] = v;
    }
    return 0;
}

int providers_secret_open_tx(struct store_tx *tx, const struct keyring *ring, const char *ns,
                             const char *name, struct providers_secret *out)
{
    memset(out, 0, sizeof *out);
    buf_init(&out->plain);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(name)};
    int rv = store_tx_query(tx, "SELECT id, key_id, secret FROM providers WHERE namespace = ? AND name = ?",
                            p, 2, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv =
            res_fail(tx, GERR_NOTFOUND, "provider \"%.63s\" does not exist in namespace \"%.63s\"", name, ns);
    }
    if (rv == 0) {
        rv = open_secret(tx, ring, col(&rows, 0, 0), ns, col(&rows, 0, 1), proto_rows_at(&rows, 0, 2),
                         &out->plain);
    }
    if (rv == 0 && split_secret(out) != 0) {
        rv = res_fail(tx, GERR_INVAL, "provider \"%.63s\": the opened secret is malformed", name);
    }
    proto_rows_close(&rows);
    if (rv != 0) {
        providers_secret_close(out);
    }
    return rv;
}

void providers_secret_close(struct providers_secret *s)
{
    keyring_buf_wipe(&s->plain);
    mem_free(s->keys);
    mem_free(s->values);
    s->keys = s->values = NULL;
    s->n = 0;
}

/* --- credentials for sandboxes --- */

struct creds_read {
    const struct keyring *ring;
    const char *ns;
    const char *const *names;
    size_t n;
    struct providers_credentials *out;
};

static void creds_reset(struct providers_credentials *c)
{
    for (size_t i = 0; i < c->n_fetched; i++) {
        volatile char *w = c->fetched[i];
        for (size_t k = 0; w != NULL && w[k] != '\0'; k++) {
            w[k] = 0;
        }
        mem_free(c->fetched[i]);
    }
    mem_free(c->fetched);
    for (size_t i = 0; i < c->n_secrets; i++) {
        providers_secret_close(&c->secrets[i]);
        json_decref(c->configs[i]);
    }
    mem_free(c->items);
    mem_free(c->secrets);
    mem_free(c->configs);
    memset(c, 0, sizeof *c);
}

/* One attempt (the transaction may run again): every provider's secret and config. */
static int creds_tx(struct store_tx *tx, void *arg)
{
    struct creds_read *a = arg;
    struct providers_credentials *c = a->out;
    creds_reset(c);
    c->secrets = mem_zalloc(sizeof *c->secrets * (a->n + 1));
    c->configs = mem_zalloc(sizeof *c->configs * (a->n + 1));
    size_t total = 0;
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < a->n; i++) {
        rv = providers_secret_open_tx(tx, a->ring, a->ns, a->names[i], &c->secrets[i]);
        if (rv != 0) {
            break;
        }
        c->n_secrets++;
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        struct proto_value p[] = {proto_text(a->ns), proto_text(a->names[i])};
        rv = store_tx_query(tx, "SELECT config FROM providers WHERE namespace = ? AND name = ?", p, 2, &rows);
        c->configs[i] = rv == 0 && rows.n_rows == 1 ? json_loads(col(&rows, 0, 0), 0, NULL) : NULL;
        if (c->configs[i] == NULL) {
            c->configs[i] = json_object();
        }
        proto_rows_close(&rows);
        total += c->secrets[i].n;
    }
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < a->n; i++) { /* room for the Secret-backed entries, resolved after */
        const char *k;
        json_t *v;
        json_object_foreach(c->configs[i], k, v)
        {
            total += secret_ref_key(k) != NULL ? 1 : 0;
        }
    }
    c->items = mem_zalloc(sizeof *c->items * (total + 1));
    for (size_t i = 0; i < a->n; i++) {
        for (size_t k = 0; k < c->secrets[i].n; k++) {
            char env_key[8 + MAX_SECRET_KEY];
            snprintf(env_key, sizeof env_key, ENV_PREFIX "%s", c->secrets[i].keys[k]);
            const char *env = json_string_value(json_object_get(c->configs[i], env_key));
            c->items[c->n++] = (struct driver_credential){.provider = a->names[i],
                                                          .key = c->secrets[i].keys[k],
                                                          .value = c->secrets[i].values[k],
                                                          .env = env};
        }
    }
    return 0;
}

int providers_credentials_open(struct store_client *cl, const struct keyring *ring, const char *ns,
                               const char *const *names, size_t n, providers_secret_fetch_fn fetch,
                               void *fetch_arg, struct providers_credentials *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    struct creds_read a = {.ring = ring, .ns = ns, .names = names, .n = n, .out = out};
    int rv = store_client_tx(cl, creds_tx, &a);
    if (rv != 0) {
        gerr_set(errmsg, "credentials of namespace %s: %s", ns, cl->errmsg);
        creds_reset(out);
        return rv;
    }
    /* The Secret-backed entries, read now, outside the store's transaction. */
    size_t n_refs = 0;
    for (size_t i = 0; i < out->n_secrets; i++) {
        const char *k;
        json_t *v;
        json_object_foreach(out->configs[i], k, v)
        {
            n_refs += secret_ref_key(k) != NULL ? 1 : 0;
        }
    }
    out->fetched = mem_zalloc(sizeof *out->fetched * (n_refs + 1));
    for (size_t i = 0; rv == 0 && i < out->n_secrets; i++) {
        const char *k;
        json_t *v;
        json_object_foreach(out->configs[i], k, v)
        {
            const char *key = secret_ref_key(k), *text = json_string_value(v);
            struct secret_ref r;
            if (rv != 0 || key == NULL || text == NULL) {
                continue;
            }
            if (secret_ref_parse(text, &r) != 0) {
                gerr_set(errmsg, "provider %s: config %s is not a Secret reference", names[i], k);
                rv = GERR_INVAL;
                continue;
            }
            if (fetch == NULL) {
                gerr_set(errmsg,
                         "provider %s: credential %s comes from Kubernetes Secret %s/%s: Secret-backed "
                         "credentials need the kubernetes driver",
                         names[i], key, r.ns, r.name);
                rv = GERR_UNAVAILABLE;
                continue;
            }
            char *value = NULL, why[GERR_MSG_SIZE] = "";
            rv = fetch(fetch_arg, r.ns, r.name, r.key, &value, why);
            if (rv != 0) {
                gerr_set(errmsg, "provider %s: credential %s: %s", names[i], key, why);
                continue;
            }
            out->fetched[out->n_fetched++] = value;
            char env_key[8 + MAX_SECRET_KEY];
            snprintf(env_key, sizeof env_key, ENV_PREFIX "%s", key);
            out->items[out->n++] = (struct driver_credential){
                .provider = names[i],
                .key = key,
                .value = value,
                .env = json_string_value(json_object_get(out->configs[i], env_key))};
        }
    }
    if (rv != 0) {
        creds_reset(out);
    }
    return rv;
}

void providers_credentials_close(struct providers_credentials *c)
{
    creds_reset(c);
}

/* --- re-encryption and rotation --- */

struct reencrypt {
    const struct keyring *ring;
    int64_t now_ms;
    char after[40]; /* cursor: provider ids are visited in order */
    /* per attempt (the transaction may run more than once): */
    char next_after[40];
    unsigned done, failed;
    bool more;
};

static void audit_system(struct store_tx *tx, int64_t now_ms, const char *ns, const char *type,
                         const char *id, const char *name, const char *message, int64_t revision, int *rv)
{
    struct audit_record r = {.time_ms = now_ms,
                             .class_uid = AUDIT_CLASS_API_ACTIVITY,
                             .activity = AUDIT_UPDATE,
                             .actor_id = SYSTEM_ACTOR,
                             .actor_name = SYSTEM_ACTOR,
                             .actor_kind = "system",
                             .operation = ROTATE_OPERATION,
                             .ns = ns,
                             .resource_type = type,
                             .resource_id = id,
                             .resource_name = name,
                             .success = true,
                             .message = message,
                             .source = "local",
                             .request_id = "",
                             .gateway_id = "",
                             .revision = revision};
    if (*rv == 0) {
        *rv = audit_insert_tx(tx, &r);
    }
}

/* Re-seal one provider row @i under @cur. A secret that does not open is counted, not fatal. */
static int reencrypt_row(struct store_tx *tx, struct reencrypt *st, const struct keyring_key *cur,
                         const struct proto_rows *rows, size_t i)
{
    const char *id = col(rows, i, 0), *ns = col(rows, i, 1), *name = col(rows, i, 2), *old = col(rows, i, 3);
    struct buf plain, sealed;
    buf_init(&plain);
    buf_init(&sealed);
    int rv = open_secret(tx, st->ring, id, ns, old, proto_rows_at(rows, i, 4), &plain);
    if (rv == GERR_NOTFOUND || rv == GERR_PERM || rv == GERR_INVAL) {
        LOG_WARN("rotate-provider-key: provider %s/%s stays under key %s: %s", ns, name, old,
                 store_tx_errmsg(tx));
        st->failed++;
        keyring_buf_wipe(&plain);
        return 0;
    }
    char aad[256];
    size_t aad_len = secret_aad(aad, sizeof aad, id, ns, cur->id);
    if (rv == 0) {
        rv = keyring_seal(cur, aad, aad_len, plain.data, plain.len, &sealed, store_tx_errmsg(tx));
    }
    keyring_buf_wipe(&plain);
    int64_t rev = 0;
    if (rv == 0) {
        rv = store_event_tx(tx, "Provider", ns, id, "MODIFIED", &rev);
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_blob(sealed.data, sealed.len), proto_text(cur->id), proto_int(rev),
                                  proto_int(st->now_ms), proto_text(id)};
        rv = store_tx_exec(
            tx,
            "UPDATE providers SET secret = ?, key_id = ?, resource_version = ?, updated_at_ms = ? "
            "WHERE id = ?",
            p, 5, NULL);
    }
    struct proto_rows pub; /* the public provider under its new key: the event's payload */
    proto_rows_init(&pub, 0);
    if (rv == 0 && prov_read_tx(tx, ns, name, &pub) == 0) {
        struct prov_msg m;
        prov_from_row(&m, &pub, 0);
        rv = res_payload_tx(tx, rev, &m.p.base);
        prov_msg_free(&m);
    }
    proto_rows_close(&pub);
    char msg[96];
    snprintf(msg, sizeof msg, "secret re-encrypted from key %s to key %s", old, cur->id);
    audit_system(tx, st->now_ms, ns, "Provider", id, name, msg, rev, &rv);
    buf_close(&sealed);
    st->done += rv == 0;
    return rv;
}

static int reencrypt_batch_tx(struct store_tx *tx, void *arg)
{
    struct reencrypt *st = arg;
    st->done = st->failed = 0;
    st->more = false;
    snprintf(st->next_after, sizeof st->next_after, "%s", st->after);
    struct keyring_key cur;
    int rv = keyring_current_tx(st->ring, tx, st->now_ms, &cur);
    if (rv != 0) {
        return rv;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(st->after), proto_text(cur.id), proto_int(REENCRYPT_BATCH)};
    rv = store_tx_query(
        tx,
        "SELECT id, namespace, name, key_id, secret FROM providers WHERE id > ? AND key_id != ? "
        "ORDER BY id LIMIT ?",
        p, 3, &rows);
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        rv = reencrypt_row(tx, st, &cur, &rows, i);
        snprintf(st->next_after, sizeof st->next_after, "%s", col(&rows, i, 0));
    }
    st->more = rv == 0 && rows.n_rows == REENCRYPT_BATCH;
    proto_rows_close(&rows);
    keyring_key_wipe(&cur);
    return rv;
}

int providers_reencrypt_all(struct store_client *cl, const struct keyring *ring, int64_t now_ms,
                            unsigned *done, unsigned *failed, char *errmsg)
{
    struct reencrypt st = {.ring = ring, .now_ms = now_ms};
    *done = *failed = 0;
    do {
        cl->errmsg[0] = '\0';
        int rv = store_client_tx(cl, reencrypt_batch_tx, &st);
        if (rv != 0) {
            gerr_set(errmsg, "re-encrypting provider secrets: %s",
                     cl->errmsg[0] != '\0' ? cl->errmsg : gerr_str(rv));
            return rv;
        }
        *done += st.done;
        *failed += st.failed;
        snprintf(st.after, sizeof st.after, "%s", st.next_after);
    } while (st.more);
    return 0;
}

struct rotation {
    const struct keyring *ring;
    int64_t now_ms;
    char id[KEYRING_ID_SIZE];
};

static int rotate_tx(struct store_tx *tx, void *arg)
{
    struct rotation *r = arg;
    int rv = keyring_rotate_tx(r->ring, tx, r->now_ms, r->id);
    int64_t rev = 0;
    if (rv == 0) {
        rv = store_event_tx(tx, "ProviderKey", "", r->id, "ADDED", &rev);
    }
    audit_system(tx, r->now_ms, "", "ProviderKey", r->id, r->id, "provider key added", rev, &rv);
    return rv;
}

int providers_add_key(struct store_client *cl, const struct keyring *ring, int64_t now_ms,
                      char id[KEYRING_ID_SIZE], char *errmsg)
{
    struct rotation r = {.ring = ring, .now_ms = now_ms};
    cl->errmsg[0] = '\0';
    int rv = store_client_tx(cl, rotate_tx, &r);
    if (rv != 0) {
        gerr_set(errmsg, "adding a provider key: %s", cl->errmsg[0] != '\0' ? cl->errmsg : gerr_str(rv));
        return rv;
    }
    memcpy(id, r.id, KEYRING_ID_SIZE);
    return 0;
}

/* --- registration --- */

int providers_svc_register(struct gate *g, struct providers_svc *svc, char *errmsg)
{
    int rv = keyring_init(&svc->ring, svc->pepper, svc->pepper_len, errmsg);
    if (rv != 0) {
        return rv;
    }
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Providers/Create", prov_create},
        {"/gantry.v1.Providers/Get", prov_get},
        {"/gantry.v1.Providers/List", prov_list},
        {"/gantry.v1.Providers/Update", prov_update},
        {"/gantry.v1.Providers/Delete", prov_delete},
        {"/gantry.v1.Providers/Grant", prov_grant},
        {"/gantry.v1.Providers/RevokeGrant", prov_revoke},
        {"/gantry.v1.Providers/ListGrants", prov_list_grants},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, svc) != 0) {
            gerr_set(errmsg, "providers service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}

void providers_svc_close(struct providers_svc *svc)
{
    keyring_close(&svc->ring);
}
