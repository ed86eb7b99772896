/* The egress policies of one replica. See policy_cache.h. A mutex guards everything; decisions are
 * microseconds, so the relay's loop never waits long behind a refresh (which copies outside the
 * lock and swaps under it). */
#include "egress/policy_cache.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/rules/policy.h"
#include "lib/err.h"
#include "lib/mem.h"

struct ns_entry {
    char *ns;
    Gantry__V1__Policy *p; /* NULL: no namespace policy stored */
    uint64_t revision;
};

struct sb_entry {
    char *id;
    Gantry__V1__Policy *p; /* NULL: the sandbox has no policy of its own */
};

struct egress_policy_cache {
    pthread_mutex_t mu;
    Gantry__V1__Policy *gateway; /* the stored one, or the built-in default */
    uint64_t gateway_revision;
    struct ns_entry *ns;
    size_t n_ns, cap_ns;
    struct sb_entry *sb;
    size_t n_sb, cap_sb;
};

/* A deep copy of @p (pack, unpack), or NULL when protobuf-c cannot allocate. */
static Gantry__V1__Policy *copy_policy(const Gantry__V1__Policy *p)
{
    size_t n = gantry__v1__policy__get_packed_size(p);
    uint8_t *buf = mem_alloc(n ? n : 1);
    gantry__v1__policy__pack(p, buf);
    Gantry__V1__Policy *c = gantry__v1__policy__unpack(NULL, n, buf);
    mem_free(buf);
    return c;
}

int egress_policy_cache_new(struct egress_policy_cache **out)
{
    struct egress_policy_cache *c = mem_zalloc(sizeof *c);
    c->gateway = policy_rules_default();
    if (c->gateway == NULL) {
        mem_free(c);
        return GERR_NOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void egress_policy_cache_free(struct egress_policy_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n_ns; i++) {
        mem_free(c->ns[i].ns);
        policy_rules_free(c->ns[i].p);
    }
    mem_free(c->ns);
    for (size_t i = 0; i < c->n_sb; i++) {
        mem_free(c->sb[i].id);
        policy_rules_free(c->sb[i].p);
    }
    mem_free(c->sb);
    policy_rules_free(c->gateway);
    pthread_mutex_destroy(&c->mu);
    mem_free(c);
}

int egress_policy_cache_set_gateway(struct egress_policy_cache *c, const Gantry__V1__Policy *p,
                                    uint64_t revision)
{
    Gantry__V1__Policy *n = p != NULL ? copy_policy(p) : policy_rules_default();
    if (n == NULL) {
        return GERR_NOMEM;
    }
    pthread_mutex_lock(&c->mu);
    Gantry__V1__Policy *old = c->gateway;
    c->gateway = n;
    c->gateway_revision = p != NULL ? revision : 0;
    pthread_mutex_unlock(&c->mu);
    policy_rules_free(old);
    return 0;
}

static struct ns_entry *find(struct egress_policy_cache *c, const char *ns)
{
    for (size_t i = 0; i < c->n_ns; i++) {
        if (strcmp(c->ns[i].ns, ns) == 0) {
            return &c->ns[i];
        }
    }
    return NULL;
}

int egress_policy_cache_set_namespace(struct egress_policy_cache *c, const char *ns,
                                      const Gantry__V1__Policy *p, uint64_t revision)
{
    Gantry__V1__Policy *n = NULL;
    if (p != NULL && (n = copy_policy(p)) == NULL) {
        return GERR_NOMEM;
    }
    Gantry__V1__Policy *old = NULL;
    pthread_mutex_lock(&c->mu);
    struct ns_entry *e = find(c, ns);
    if (e == NULL) {
        if (c->n_ns == c->cap_ns) {
            c->cap_ns = c->cap_ns ? 2 * c->cap_ns : 16;
            c->ns = mem_realloc(c->ns, c->cap_ns * sizeof *c->ns);
        }
        e = &c->ns[c->n_ns++];
        e->ns = mem_strdup(ns);
        e->p = NULL;
    }
    old = e->p;
    e->p = n;
    e->revision = p != NULL ? revision : 0;
    pthread_mutex_unlock(&c->mu);
    policy_rules_free(old);
    return 0;
}

void egress_policy_cache_retain(struct egress_policy_cache *c, const char *const *keep, size_t n)
{
    pthread_mutex_lock(&c->mu);
    size_t w = 0;
    for (size_t i = 0; i < c->n_ns; i++) {
        bool kept = false;
        for (size_t k = 0; k < n && !kept; k++) {
            kept = strcmp(keep[k], c->ns[i].ns) == 0;
        }
        if (kept) {
            c->ns[w++] = c->ns[i];
        } else {
            mem_free(c->ns[i].ns);
            policy_rules_free(c->ns[i].p);
        }
    }
    c->n_ns = w;
    pthread_mutex_unlock(&c->mu);
}

static struct sb_entry *find_sb(struct egress_policy_cache *c, const char *id)
{
    for (size_t i = 0; i < c->n_sb; i++) {
        if (strcmp(c->sb[i].id, id) == 0) {
            return &c->sb[i];
        }
    }
    return NULL;
}

int egress_policy_cache_set_sandbox(struct egress_policy_cache *c, const char *id,
                                    const Gantry__V1__Policy *p)
{
    Gantry__V1__Policy *n = NULL;
    if (p != NULL && (n = copy_policy(p)) == NULL) {
        return GERR_NOMEM;
    }
    Gantry__V1__Policy *old = NULL;
    pthread_mutex_lock(&c->mu);
    struct sb_entry *e = find_sb(c, id);
    if (e == NULL) {
        if (c->n_sb == c->cap_sb) {
            c->cap_sb = c->cap_sb ? 2 * c->cap_sb : 16;
            c->sb = mem_realloc(c->sb, c->cap_sb * sizeof *c->sb);
        }
        e = &c->sb[c->n_sb++];
        e->id = mem_strdup(id);
        e->p = NULL;
    }
    old = e->p;
    e->p = n;
    pthread_mutex_unlock(&c->mu);
    policy_rules_free(old);
    return 0;
}

bool egress_policy_cache_has_sandbox(struct egress_policy_cache *c, const char *id)
{
    pthread_mutex_lock(&c->mu);
    bool has = find_sb(c, id) != NULL;
    pthread_mutex_unlock(&c->mu);
    return has;
}

void egress_policy_cache_retain_sandboxes(struct egress_policy_cache *c, const char *const *keep, size_t n)
{
    pthread_mutex_lock(&c->mu);
    size_t w = 0;
    for (size_t i = 0; i < c->n_sb; i++) {
        bool kept = false;
        for (size_t k = 0; k < n && !kept; k++) {
            kept = strcmp(keep[k], c->sb[i].id) == 0;
        }
        if (kept) {
            c->sb[w++] = c->sb[i];
        } else {
            mem_free(c->sb[i].id);
            policy_rules_free(c->sb[i].p);
        }
    }
    c->n_sb = w;
    pthread_mutex_unlock(&c->mu);
}

void egress_policy_cache_decide(struct egress_policy_cache *c, const char *ns, const char *sandbox_id,
                                const struct egress_intent *in, struct egress_decision *out)
{
    char why[256];
    if (egress_intent_check(in, why, sizeof why) != 0) {
        memset(out, 0, sizeof *out);
        out->layer = "intent";
        snprintf(out->destination, sizeof out->destination, "%.*s", (int)EGRESS_NAME_MAX,
                 in->host != NULL && in->host[0] != '\0' ? in->host
                 : in->ip != NULL                        ? in->ip
                                                         : "");
        snprintf(out->reason, sizeof out->reason,
                 "the connection's destination is not one a policy can allow: %s", why);
        return;
    }
    pthread_mutex_lock(&c->mu);
    struct sb_entry *s = sandbox_id != NULL ? find_sb(c, sandbox_id) : NULL;
    if (sandbox_id != NULL && s == NULL) {
        pthread_mutex_unlock(&c->mu);
        memset(out, 0, sizeof *out);
        out->layer = "sandbox";
        snprintf(out->destination, sizeof out->destination, "%.*s", (int)EGRESS_NAME_MAX,
                 in->host != NULL && in->host[0] != '\0' ? in->host
                 : in->ip != NULL                        ? in->ip
                                                         : "");
        snprintf(out->reason, sizeof out->reason,
                 "the sandbox's own policy is not loaded on this replica yet: refused until it is");
        return;
    }
    struct ns_entry *e = find(c, ns);
    egress_decide(c->gateway, e != NULL ? e->p : NULL, s != NULL ? s->p : NULL, in, out);
    if (strcmp(out->layer, "namespace") == 0 && e != NULL) {
        out->revision = e->revision;
    } else if (strcmp(out->layer, "gateway") == 0) {
        out->revision = c->gateway_revision;
    }
    pthread_mutex_unlock(&c->mu);
}
