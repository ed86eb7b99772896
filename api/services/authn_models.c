/* Authentication's lookups from the change-feed models (api/services/authn_models.h). */
#include "api/services/authn_models.h"

#include <stdio.h>
#include <string.h>

#include "gantry/v1/api_keys.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "lib/mem.h"

/* --- API key metadata --- */

struct key_q {
    const char *keyid;
    char *principal_id;
    int64_t *expires_ms;
    bool *revoked;
    int found;
};

static void key_fn(const struct kind_model_view *v, void *arg)
{
    struct key_q *q = arg;
    const struct kind_model_entry *e = kind_model_find(v, "", q->keyid);
    if (e == NULL) {
        q->found = AUTHN_MODEL_ABSENT;
        return;
    }
    const Gantry__V1__ApiKey *k = (const Gantry__V1__ApiKey *)e->msg;
    snprintf(q->principal_id, 40, "%s", k->principal_id);
    *q->expires_ms = k->expires_at_ms;
    *q->revoked = k->revoked;
    q->found = AUTHN_MODEL_FOUND;
}

static int key(void *arg, const char *keyid, char principal_id[40], int64_t *expires_ms, bool *revoked)
{
    struct authn_models_src *src = arg;
    struct key_q q = {
        .keyid = keyid, .principal_id = principal_id, .expires_ms = expires_ms, .revoked = revoked};
    return kind_model_peek(src->keys, key_fn, &q) ? q.found : AUTHN_MODEL_CANNOT;
}

/* --- principals and their bindings --- */

struct principal_q {
    const char *id;
    struct authn_principal *out;
    bool *disabled;
    int found;
};

static void principal_fn(const struct kind_model_view *v, void *arg)
{
    struct principal_q *q = arg;
    const struct kind_model_entry *e = kind_model_find(v, "", q->id);
    if (e == NULL) {
        q->found = AUTHN_MODEL_ABSENT;
        return;
    }
    const Gantry__V1__Principal *p = (const Gantry__V1__Principal *)e->msg;
    snprintf(q->out->id, sizeof q->out->id, "%s", q->id);
    snprintf(q->out->name, sizeof q->out->name, "%s", p->meta != NULL ? p->meta->name : "");
    snprintf(q->out->kind, sizeof q->out->kind, "%s",
             p->kind == GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER ? "user" : "service_account");
    *q->disabled = p->disabled;
    q->found = AUTHN_MODEL_FOUND;
}

/* The bindings of one principal, as the store path loads them. */
struct bindings_q {
    const char *principal_id;
    struct authn_principal *out;
};

static void bindings_fn(const struct kind_model_view *v, void *arg)
{
    struct bindings_q *q = arg;
    size_t n = 0;
    /* by binding id (the bindings model's name): the store path's ORDER BY id */
    const struct kind_model_entry **es = kind_model_children(v, q->principal_id, &n);
    struct authn_principal *out = q->out;
    out->n_bindings = 0;
    for (size_t i = 0; i < n && out->n_bindings < AUTHN_MAX_BINDINGS; i++) {
        const Gantry__V1__RoleBinding *rb = (const Gantry__V1__RoleBinding *)es[i]->msg;
        struct authz_binding *b = &out->bindings[out->n_bindings];
        memset(b, 0, sizeof *b);
        b->role = (enum authz_role)rb->role; /* the message's role is authz_role_parse's value */
        snprintf(b->ns, sizeof b->ns, "%s", rb->namespace_);
        if (authz_scope_parse(es[i]->aux, &b->scope) != 0) {
            b->role = 0; /* an unreadable scope grants nothing */
        }
        if (b->role != 0) {
            out->n_bindings++;
        }
    }
    mem_free(es);
}

static int principal(void *arg, const char *id, struct authn_principal *out, bool *disabled)
{
    struct authn_models_src *src = arg;
    struct principal_q q = {.id = id, .out = out, .disabled = disabled};
    if (!kind_model_peek(src->principals, principal_fn, &q)) {
        return AUTHN_MODEL_CANNOT;
    }
    if (q.found != AUTHN_MODEL_FOUND) {
        return q.found;
    }
    /* Read after the principal, under the bindings model's own lock: a binding created after the
     * principal was read is at most newer than it, as a store read of the two tables in turn. */
    struct bindings_q b = {.principal_id = id, .out = out};
    bool ok = kind_model_peek(src->bindings, bindings_fn, &b);
    return ok ? AUTHN_MODEL_FOUND : AUTHN_MODEL_CANNOT;
}

/* --- OIDC and mTLS identities --- */

struct subject_q {
    const char *issuer, *subject;
    char *principal_id;
    unsigned matches;
};

static void principals_by_subject(const struct kind_model_view *v, void *arg)
{
    struct subject_q *q = arg;
    for (size_t i = 0; i < v->n; i++) {
        const Gantry__V1__Principal *p = (const Gantry__V1__Principal *)v->entries[i].msg;
        if (strcmp(p->oidc_issuer, q->issuer) == 0 && strcmp(p->oidc_subject, q->subject) == 0) {
            if (q->matches++ == 0) {
                snprintf(q->principal_id, 40, "%s", v->entries[i].name);
            }
        }
    }
}

static void links_by_subject(const struct kind_model_view *v, void *arg)
{
    struct subject_q *q = arg;
    /* the links model's name is "<issuer>\n<subject>" (links_svc.c), unique */
    size_t len = strlen(q->issuer) + 1 + strlen(q->subject) + 1;
    char *name = mem_alloc(len);
    snprintf(name, len, "%s\n%s", q->issuer, q->subject);
    const struct kind_model_entry *e = kind_model_find(v, "", name);
    if (e != NULL && q->matches++ == 0) {
        snprintf(q->principal_id, 40, "%s", ((const Gantry__V1__ExternalIdentity *)e->msg)->principal_id);
    }
    mem_free(name);
}

static int subject(void *arg, const char *issuer, const char *subject, char principal_id[40])
{
    struct authn_models_src *src = arg;
    if (issuer[0] == '\0' || subject[0] == '\0') {
        return AUTHN_MODEL_ABSENT; /* the store's NULL columns match no empty string: let it decide */
    }
    struct subject_q q = {.issuer = issuer, .subject = subject, .principal_id = principal_id};
    if (!kind_model_peek(src->principals, principals_by_subject, &q) ||
        !kind_model_peek(src->links, links_by_subject, &q)) {
        return AUTHN_MODEL_CANNOT;
    }
    /* the store path's "exactly one row" of principals UNION ALL principal_links */
    return q.matches == 1 ? AUTHN_MODEL_FOUND : AUTHN_MODEL_ABSENT;
}

void authn_models_init(struct authn_models *out, struct authn_models_src *src)
{
    *out = (struct authn_models){.key = key, .principal = principal, .subject = subject, .arg = src};
}
