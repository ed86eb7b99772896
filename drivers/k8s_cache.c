/* The kubernetes driver's informer store (see k8s_cache.h): a chained hash table by sandbox id.
 * Nodes hold either a live object (present) or only the name a sandbox was last seen under. */
#include "drivers/k8s_cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>

#include "lib/mem.h"

#define BUCKETS   4096u
#define MAX_HINTS 200000u /* remembered names of sandboxes no longer present */

struct node {
    struct node *next;
    char id[40];
    bool present;
    unsigned long long tomb_rv; /* not present after our own delete: events up to here are late */
    struct k8s_sandbox s;       /* present: the object; otherwise only the last one seen, as a name */
};

struct scope {
    char *kns; /* NULL: every namespace */
    bool live;
};

struct k8s_cache {
    pthread_mutex_t mu;
    struct node *buckets[BUCKETS];
    struct scope *scopes;
    size_t n_scopes;
    size_t n_present, n_hints;
};

static char *dup_or_null(const char *s)
{
    return s != NULL ? mem_strdup(s) : NULL;
}

void k8s_sandbox_copy(const struct k8s_sandbox *s, struct k8s_sandbox *out)
{
    memset(out, 0, sizeof *out);
    out->meta = s->meta;
    out->meta.name = dup_or_null(s->meta.name);
    out->meta.ns = dup_or_null(s->meta.ns);
    out->meta.resource_version = dup_or_null(s->meta.resource_version);
    out->meta.uid = dup_or_null(s->meta.uid);
    out->meta.gateway_id = dup_or_null(s->meta.gateway_id);
    out->meta.managed_by = dup_or_null(s->meta.managed_by);
    out->meta.sandbox_id = dup_or_null(s->meta.sandbox_id);
    out->meta.gantry_ns = dup_or_null(s->meta.gantry_ns);
    out->meta.gantry_name = dup_or_null(s->meta.gantry_name);
    out->phase = s->phase;
    out->message = dup_or_null(s->message);
    memcpy(out->pod_ips, s->pod_ips, sizeof out->pod_ips);
    memcpy(out->owner, s->owner, sizeof out->owner);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h % BUCKETS;
}

struct k8s_cache *k8s_cache_new(const char *const *scopes, size_t n)
{
    struct k8s_cache *c = mem_zalloc(sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->scopes = mem_zalloc((n > 0 ? n : 1) * sizeof *c->scopes);
    c->n_scopes = n;
    for (size_t i = 0; i < n; i++) {
        c->scopes[i].kns = dup_or_null(scopes[i]);
    }
    return c;
}

static void node_free(struct node *x)
{
    k8s_sandbox_close(&x->s);
    mem_free(x);
}

void k8s_cache_free(struct k8s_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t b = 0; b < BUCKETS; b++) {
        while (c->buckets[b] != NULL) {
            struct node *x = c->buckets[b];
            c->buckets[b] = x->next;
            node_free(x);
        }
    }
    for (size_t i = 0; i < c->n_scopes; i++) {
        mem_free(c->scopes[i].kns);
    }
    mem_free(c->scopes);
    pthread_mutex_destroy(&c->mu);
    mem_free(c);
}

/* The scope holding namespace @kns, or NULL. */
static struct scope *scope_of(struct k8s_cache *c, const char *kns)
{
    for (size_t i = 0; i < c->n_scopes; i++) {
        if (c->scopes[i].kns == NULL || (kns != NULL && strcmp(c->scopes[i].kns, kns) == 0)) {
            return &c->scopes[i];
        }
    }
    return NULL;
}

static bool in_scope(const struct scope *sc, const char *kns)
{
    return sc->kns == NULL || (kns != NULL && strcmp(sc->kns, kns) == 0);
}

void k8s_cache_set_live(struct k8s_cache *c, size_t i, bool live)
{
    pthread_mutex_lock(&c->mu);
    if (i < c->n_scopes) {
        c->scopes[i].live = live;
    }
    pthread_mutex_unlock(&c->mu);
}

static bool live_locked(struct k8s_cache *c, const char *kns)
{
    if (kns != NULL) {
        struct scope *sc = scope_of(c, kns);
        return sc != NULL && sc->live;
    }
    bool all = c->n_scopes > 0;
    for (size_t i = 0; i < c->n_scopes; i++) {
        all = all && c->scopes[i].live;
    }
    return all;
}

bool k8s_cache_live(struct k8s_cache *c, const char *kns)
{
    pthread_mutex_lock(&c->mu);
    bool live = live_locked(c, kns);
    pthread_mutex_unlock(&c->mu);
    return live;
}

/* The node of object @kns/@name of sandbox @id, and the link that points at it. */
static struct node **find_node(struct k8s_cache *c, const char *id, const char *kns, const char *name)
{
    for (struct node **p = &c->buckets[hash(id)]; *p != NULL; p = &(*p)->next) {
        struct node *x = *p;
        if (strcmp(x->id, id) == 0 && strcmp(x->s.meta.ns, kns) == 0 && strcmp(x->s.meta.name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

static unsigned long long rv_number(const char *rv)
{
    return rv != NULL ? strtoull(rv, NULL, 10) : 0;
}

static void unlink_node(struct k8s_cache *c, struct node **p)
{
    struct node *x = *p;
    *p = x->next;
    if (x->present) {
        c->n_present--;
    } else {
        c->n_hints--;
    }
    node_free(x);
}

/* Forget every name hint when there are too many (sandboxes long gone). */
static void trim_hints(struct k8s_cache *c)
{
    if (c->n_hints <= MAX_HINTS) {
        return;
    }
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct node **p = &c->buckets[b]; *p != NULL;) {
            if (!(*p)->present) {
                unlink_node(c, p);
            } else {
                p = &(*p)->next;
            }
        }
    }
}

static void put_locked(struct k8s_cache *c, const struct k8s_sandbox *s)
{
    const char *id = s->meta.sandbox_id;
    struct node **p = find_node(c, id, s->meta.ns, s->meta.name);
    if (p != NULL) {
        struct node *x = *p;
        if (x->present && rv_number(x->s.meta.resource_version) > rv_number(s->meta.resource_version)) {
            return; /* we hold a newer version */
        }
        if (!x->present && x->tomb_rv != 0 && rv_number(s->meta.resource_version) <= x->tomb_rv) {
            return; /* an event from before our own delete */
        }
        x->tomb_rv = 0;
        k8s_sandbox_close(&x->s);
        k8s_sandbox_copy(s, &x->s);
        if (!x->present) {
            x->present = true;
            c->n_hints--;
            c->n_present++;
        }
        return;
    }
    struct node *x = mem_zalloc(sizeof *x);
    snprintf(x->id, sizeof x->id, "%s", id);
    x->present = true;
    k8s_sandbox_copy(s, &x->s);
    uint32_t b = hash(id);
    x->next = c->buckets[b];
    c->buckets[b] = x;
    c->n_present++;
}

void k8s_cache_put(struct k8s_cache *c, const struct k8s_sandbox *s)
{
    if (s->meta.sandbox_id == NULL || strlen(s->meta.sandbox_id) >= 40 || s->meta.ns == NULL ||
        s->meta.name == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    put_locked(c, s);
    pthread_mutex_unlock(&c->mu);
}

void k8s_cache_remove(struct k8s_cache *c, const char *id, const char *kns, const char *name, const char *rv)
{
    if (id == NULL || kns == NULL || name == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    struct node **p = find_node(c, id, kns, name);
    if (p != NULL && rv == NULL) {
        unlink_node(c, p);
    } else if (p != NULL && (*p)->present) {
        (*p)->present = false;
        (*p)->tomb_rv = rv_number(rv);
        c->n_present--;
        c->n_hints++;
    }
    pthread_mutex_unlock(&c->mu);
}

void k8s_cache_replace(struct k8s_cache *c, size_t i, const struct k8s_sandbox *items, size_t n)
{
    pthread_mutex_lock(&c->mu);
    if (i < c->n_scopes) {
        /* Objects of the scope that the list no longer has become name hints. */
        const struct scope *sc = &c->scopes[i];
        for (size_t b = 0; b < BUCKETS; b++) {
            for (struct node *x = c->buckets[b]; x != NULL; x = x->next) {
                if (x->present && in_scope(sc, x->s.meta.ns)) {
                    x->present = false;
                    x->tomb_rv = 0;
                    c->n_present--;
                    c->n_hints++;
                }
            }
        }
        for (size_t k = 0; k < n; k++) {
            if (items[k].meta.sandbox_id != NULL && strlen(items[k].meta.sandbox_id) < 40) {
                /* The list is newer than anything held: drop the version check. */
                struct node **p =
                    find_node(c, items[k].meta.sandbox_id, items[k].meta.ns, items[k].meta.name);
                if (p != NULL) {
                    unlink_node(c, p);
                }
                put_locked(c, &items[k]);
            }
        }
        trim_hints(c);
    }
    pthread_mutex_unlock(&c->mu);
}

int k8s_cache_get(struct k8s_cache *c, const char *kns, const char *id, struct k8s_sandbox *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    int rv = live_locked(c, kns) ? 0 : -1;
    for (struct node *x = c->buckets[hash(id)]; rv >= 0 && x != NULL; x = x->next) {
        if (x->present && strcmp(x->id, id) == 0 && strcmp(x->s.meta.ns, kns) == 0) {
            k8s_sandbox_copy(&x->s, out);
            rv = 1;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rv;
}

bool k8s_cache_name_of(struct k8s_cache *c, const char *id, char kns[64], char name[64])
{
    bool found = false;
    pthread_mutex_lock(&c->mu);
    for (struct node *x = c->buckets[hash(id)]; x != NULL && !found; x = x->next) {
        if (strcmp(x->id, id) == 0 && strlen(x->s.meta.ns) < 64 && strlen(x->s.meta.name) < 64) {
            snprintf(kns, 64, "%s", x->s.meta.ns);
            snprintf(name, 64, "%s", x->s.meta.name);
            found = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

bool k8s_cache_snapshot(struct k8s_cache *c, const char *kns, const char *gantry_ns,
                        struct k8s_sandbox **items, size_t *n, size_t *cap)
{
    pthread_mutex_lock(&c->mu);
    bool live = live_locked(c, kns);
    for (size_t b = 0; live && b < BUCKETS; b++) {
        for (struct node *x = c->buckets[b]; x != NULL; x = x->next) {
            if (!x->present || (kns != NULL && strcmp(x->s.meta.ns, kns) != 0) ||
                (gantry_ns != NULL &&
                 (x->s.meta.gantry_ns == NULL || strcmp(x->s.meta.gantry_ns, gantry_ns) != 0))) {
                continue;
            }
            if (*n == *cap) {
                *cap = *cap == 0 ? 16 : *cap * 2;
                *items = mem_realloc(*items, *cap * sizeof **items);
            }
            k8s_sandbox_copy(&x->s, &(*items)[(*n)++]);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return live;
}

/* @ip as 16 bytes (IPv4 mapped into IPv6), or false. */
static bool ip_bytes(const char *ip, unsigned char out[16])
{
    unsigned char v4[4];
    if (inet_pton(AF_INET, ip, v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, ip, out) == 1;
}

bool k8s_cache_find_pod_ip(struct k8s_cache *c, const char *ip, struct k8s_sandbox *out)
{
    unsigned char want[16], have[16];
    memset(out, 0, sizeof *out);
    if (!ip_bytes(ip, want)) {
        return false;
    }
    const struct k8s_sandbox *found = NULL;
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (const struct node *x = c->buckets[b]; x != NULL; x = x->next) {
            if (!x->present || x->s.phase != DRIVER_PHASE_READY) {
                continue;
            }
            for (size_t i = 0; i < K8S_POD_IPS; i++) {
                if (x->s.pod_ips[i][0] != '\0' && ip_bytes(x->s.pod_ips[i], have) &&
                    memcmp(have, want, 16) == 0) {
                    found = &x->s;
                    n++;
                    break;
                }
            }
        }
    }
    if (n == 1) {
        k8s_sandbox_copy(found, out);
    }
    pthread_mutex_unlock(&c->mu);
    return n == 1;
}

size_t k8s_cache_size(struct k8s_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n_present;
    pthread_mutex_unlock(&c->mu);
    return n;
}
