/* The kubernetes driver (see k8s.h): agents.x-k8s.io Sandbox objects, namespaces and a fence
 * ConfigMap over HTTPS.
 *
 * Every mutating call is: check the fence (and raise it), then the request, then on 409 read
 * again and decide again, a bounded number of times. Every object read back is checked for this
 * gateway's labels before it is believed. Sandboxes are found by their labels (gateway id and
 * sandbox id), never by a name derived from the id: object names are readable and may have had
 * to step aside for someone else's object (see driver_k8s_object_name). */
#include "drivers/k8s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_json.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/mem.h"

#define CONFLICT_RETRIES 8
#define LIST_PAGE        500
#define LIST_MAX         100000u
#define SA_DIR           "/var/run/secrets/kubernetes.io/serviceaccount"
#define DEFAULT_GPU      "nvidia.com/gpu"
#define SANDBOXES        "/apis/" K8S_SANDBOX_API

struct driver_k8s {
    struct driver base;
    struct k8s_http *http;
    char *gw;
    enum driver_k8s_mode mode;
    char *shared_ns;
    char **op_from; /* operator allowlist: gantry namespace ... */
    char **op_to;   /* ... -> Kubernetes namespace */
    size_t n_op;
    char *fence_ns;
    char fence_name[64];
    char *gpu_res;
    char *server;
    uint64_t newest; /* the newest epoch this instance has seen */
    struct buf resp;
    struct k8s_status last; /* the Status of the last failed request */
};

static struct driver_k8s *k8s_of(struct driver *d)
{
    return (struct driver_k8s *)d;
}

static const char *mode_name(enum driver_k8s_mode m)
{
    return m == DRIVER_K8S_MANAGED ? "managed" : m == DRIVER_K8S_OPERATOR ? "operator" : "shared";
}

/* ---- Names */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

/* @s cut to 54 bytes, "-", 8 hex digits of @hash: 63 bytes, a DNS label when @s starts with one. */
static void cut_and_hash(const char *s, uint32_t hash, char out[64])
{
    snprintf(out, 64, "%.54s-%08x", s, (unsigned)hash);
}

void driver_k8s_object_name(enum driver_k8s_mode mode, const char *ns, const char *name, char out[64])
{
    char full[160];
    if (mode == DRIVER_K8S_MANAGED) {
        snprintf(out, 64, "%.63s", name);
        return;
    }
    snprintf(full, sizeof full, "%s--%s", ns, name);
    if (strlen(full) <= 63) {
        memcpy(out, full, strlen(full) + 1);
    } else {
        cut_and_hash(full, fnv1a(full), out);
    }
}

void driver_k8s_fallback_name(const char *preferred, const char *gateway_id, const char *sandbox_id,
                              char out[64])
{
    char key[160];
    snprintf(key, sizeof key, "%s/%s", gateway_id, sandbox_id);
    cut_and_hash(preferred, fnv1a(key), out);
}

void driver_k8s_managed_namespace(const char *gateway_id, const char *ns, char out[64])
{
    char full[160];
    snprintf(full, sizeof full, "openshell-%s-%s", gateway_id, ns);
    if (strlen(full) <= 63) {
        memcpy(out, full, strlen(full) + 1);
    } else {
        snprintf(out, 64, "%.54s-%08x", full, (unsigned)fnv1a(full));
    }
}

/* The Kubernetes namespace that holds the Sandbox objects of gantry namespace @ns. */
static int k8s_namespace(struct driver_k8s *k, const char *ns, char out[64], char *errmsg)
{
    switch (k->mode) {
    case DRIVER_K8S_MANAGED:
        driver_k8s_managed_namespace(k->gw, ns, out);
        return 0;
    case DRIVER_K8S_SHARED:
        snprintf(out, 64, "%.63s", k->shared_ns);
        return 0;
    case DRIVER_K8S_OPERATOR:
    default:
        for (size_t i = 0; i < k->n_op; i++) {
            if (strcmp(k->op_from[i], ns) == 0) {
                snprintf(out, 64, "%.63s", k->op_to[i]);
                return 0;
            }
        }
        struct buf b;
        buf_init(&b);
        driver__join(&b, (const char *const *)k->op_from);
        gerr_set(errmsg, "namespace %s is not in the kubernetes driver's operator allowlist (%s)", ns,
                 (const char *)b.data);
        buf_close(&b);
        return GERR_PERM;
    }
}

/* ---- Requests */

/* One request; a non-2xx status becomes its GERR_* code with the Status message. On 0 the body
 * is in k->resp. */
static int call(struct driver_k8s *k, const char *method, const char *path, const char *body, char *errmsg)
{
    long status;
    struct k8s_status *st = &k->last;
    memset(st, 0, sizeof *st);
    int rv = k8s_http_request(k->http, method, path, body, &status, &k->resp, errmsg);
    if (rv != 0 || (status >= 200 && status < 300)) {
        return rv;
    }
    k8s_status_decode((const char *)k->resp.data, k->resp.len, st);
    rv = k8s_http_err_from_status(status, st->reason);
    gerr_set(errmsg, "%s %s: HTTP %ld %s%s%s", method, path, status, st->reason,
             st->message[0] != '\0' ? ": " : "", st->message);
    return rv;
}

static const char *body(struct driver_k8s *k)
{
    return k->resp.data != NULL ? (const char *)k->resp.data : "";
}

/* Percent-encode @s (query values) onto @b. */
static void put_escaped(struct buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '_' || c == '.' || c == '~') {
            buf_append(b, s, 1);
        } else {
            buf_printf(b, "%%%02X", c);
        }
    }
}

/* ---- The fence */

static int fence_once(struct driver_k8s *k, uint64_t epoch, const char *path, bool *again, char *errmsg)
{
    struct k8s_meta m;
    char *doc;
    *again = false;
    int rv = call(k, "GET", path, NULL, errmsg);
    if (rv == GERR_NOTFOUND) {
        char create[200];
        snprintf(create, sizeof create, "/api/v1/namespaces/%s/configmaps", k->fence_ns);
        doc = k8s_fence_manifest(k->fence_name, k->fence_ns, k->gw, epoch, NULL);
        rv = call(k, "POST", create, doc, errmsg);
        mem_free(doc);
        *again = rv == GERR_EXISTS; /* another replica made it first: read theirs */
        return rv;
    }
    if (rv != 0 || (rv = k8s_meta_decode(body(k), k->resp.len, &m, errmsg)) != 0) {
        return rv;
    }
    if (m.gateway_id == NULL || strcmp(m.gateway_id, k->gw) != 0) {
        gerr_set(errmsg, "ConfigMap %s/%s exists without this gateway's label: not touching it", k->fence_ns,
                 k->fence_name);
        rv = GERR_PERM;
    } else if (m.epoch > epoch) {
        k->newest = m.epoch > k->newest ? m.epoch : k->newest;
        rv = driver__epoch_check(epoch, &k->newest, "the kubernetes fence", errmsg);
    } else if (m.epoch < epoch) {
        doc = k8s_fence_manifest(k->fence_name, k->fence_ns, k->gw, epoch, m.resource_version);
        rv = call(k, "PUT", path, doc, errmsg);
        mem_free(doc);
        *again = rv == GERR_ABORTED; /* 409 Conflict: someone wrote it since we read it */
    }
    k8s_meta_close(&m);
    return rv;
}

/* Apply the epoch rule against the fence ConfigMap, raising it to @epoch if it is older. */
static int fence(struct driver_k8s *k, uint64_t epoch, char *errmsg)
{
    char path[200];
    int rv = driver__epoch_check(epoch, &(uint64_t){k->newest}, "this kubernetes driver", errmsg);
    if (rv != 0) {
        return rv;
    }
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/configmaps/%s", k->fence_ns, k->fence_name);
    for (int i = 0; i < CONFLICT_RETRIES; i++) {
        bool again;
        rv = fence_once(k, epoch, path, &again, errmsg);
        if (rv == 0) {
            k->newest = epoch;
            return 0;
        }
        if (!again) {
            if (rv != DRIVER_ERR_STALE) {
                gerr_wrap(errmsg, "epoch fence");
            }
            return rv;
        }
    }
    gerr_set(errmsg, "epoch fence %s/%s: still conflicting after %d attempts", k->fence_ns, k->fence_name,
             CONFLICT_RETRIES);
    return GERR_ABORTED;
}

/* Reads check the newest epoch this instance knows, without a request. */
static int read_check(struct driver_k8s *k, uint64_t epoch, char *errmsg)
{
    return driver__epoch_check(epoch, &k->newest, "this kubernetes driver", errmsg);
}

/* ---- Sandboxes */

static bool sandbox_ours(struct driver_k8s *k, const struct k8s_meta *m, const char *id, const char *ns)
{
    return m->gateway_id != NULL && strcmp(m->gateway_id, k->gw) == 0 && m->sandbox_id != NULL &&
           driver_is_uuid(m->sandbox_id) && (id == NULL || strcmp(m->sandbox_id, id) == 0) &&
           m->gantry_ns != NULL && (ns == NULL || strcmp(m->gantry_ns, ns) == 0) && m->gantry_name != NULL;
}

static void describe(const struct k8s_sandbox *p, struct driver_sandbox *out)
{
    char handle[160];
    snprintf(handle, sizeof handle, "k8s:%s/%s", p->meta.ns, p->meta.name);
    driver__sandbox_fill(out, p->meta.sandbox_id, p->meta.gantry_ns, p->meta.gantry_name, p->phase, handle,
                         p->message, p->meta.epoch, p->meta.created_at_ms);
}

static void sandbox_path(char *out, size_t len, const char *kns, const char *name)
{
    snprintf(out, len, SANDBOXES "/namespaces/%s/" K8S_SANDBOX_RESOURCE "/%s", kns, name);
}

/* A 404 from a sandboxes URL: the namespace is missing, or the API server does not serve the
 * resource at all (the agent-sandbox CRD is not installed). */
static int not_served(struct driver_k8s *k, int rv, char *errmsg)
{
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, "namespaces") != 0) {
        gerr_wrap(errmsg, "the API server does not serve " K8S_SANDBOX_RESOURCE "." K8S_SANDBOX_GROUP
                          "/" K8S_SANDBOX_VERSION " (is the agent-sandbox CRD installed?)");
        return GERR_UNAVAILABLE;
    }
    return rv;
}

/* Growable array of decoded sandboxes. */
struct found {
    struct k8s_sandbox *items;
    size_t n, cap;
};

static void found_close(struct found *f)
{
    for (size_t i = 0; i < f->n; i++) {
        k8s_sandbox_close(&f->items[i]);
    }
    mem_free(f->items);
    memset(f, 0, sizeof *f);
}

/* Append this gateway's sandboxes from @kns (NULL: every namespace) of gantry namespace @ns
 * (NULL: all) and, with @id, of that sandbox only, page by page, to @out. The label selector
 * asks the server for exactly these; each item is checked again before it is believed. */
static int list_from(struct driver_k8s *k, const char *kns, const char *ns, const char *id, struct found *out,
                     char *errmsg)
{
    char *next = NULL;
    int rv = 0;
    do {
        struct buf path;
        struct k8s_sandbox_list l;
        buf_init(&path);
        if (kns != NULL) {
            buf_printf(&path, SANDBOXES "/namespaces/%s/" K8S_SANDBOX_RESOURCE, kns);
        } else {
            buf_printf(&path, SANDBOXES "/" K8S_SANDBOX_RESOURCE);
        }
        buf_printf(&path, "?limit=%d&labelSelector=", LIST_PAGE);
        put_escaped(&path, K8S_LABEL_GATEWAY "=");
        put_escaped(&path, k->gw);
        if (ns != NULL) {
            put_escaped(&path, "," K8S_LABEL_NAMESPACE "=");
            put_escaped(&path, ns);
        }
        if (id != NULL) {
            put_escaped(&path, "," K8S_LABEL_SANDBOX "=");
            put_escaped(&path, id);
        }
        if (next != NULL) {
            buf_printf(&path, "&continue=");
            put_escaped(&path, next);
            mem_free(next);
            next = NULL;
        }
        buf_append_zero(&path, 1); /* buf_append does not terminate */
        rv = call(k, "GET", (const char *)path.data, NULL, errmsg);
        buf_close(&path);
        if (rv != 0) {
            return not_served(k, rv, errmsg);
        }
        if ((rv = k8s_sandbox_list_decode(body(k), k->resp.len, &l, errmsg)) != 0) {
            return rv;
        }
        for (size_t i = 0; i < l.n; i++) {
            if (!sandbox_ours(k, &l.items[i].meta, id, ns)) {
                continue;
            }
            if (out->n == out->cap) {
                out->cap = out->cap == 0 ? 16 : out->cap * 2;
                out->items = mem_realloc(out->items, out->cap * sizeof *out->items);
            }
            out->items[out->n++] = l.items[i];
            memset(&l.items[i], 0, sizeof l.items[i]); /* moved */
        }
        next = l.next;
        l.next = NULL;
        k8s_sandbox_list_close(&l);
        if (out->n > LIST_MAX) {
            mem_free(next);
            gerr_set(errmsg, "more than %u sandboxes listed", LIST_MAX);
            return GERR_TOOBIG;
        }
    } while (next != NULL);
    return rv;
}

/* The Sandbox object(s) of sandbox @id of gantry namespace @ns, found by label. */
static int find(struct driver_k8s *k, const char *ns, const char *id, struct found *out, char *errmsg)
{
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    return rv != 0 ? rv : list_from(k, kns, ns, id, out, errmsg);
}

static int k8s_get(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                   struct driver_sandbox *out, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    struct found f = {0};
    int rv = read_check(k, epoch, errmsg);
    if (rv == 0 && (rv = find(k, ns, id, &f, errmsg)) == 0) {
        if (f.n == 0) {
            gerr_set(errmsg, "no sandbox %s of gateway %s in %s", id, k->gw, ns);
            rv = GERR_NOTFOUND;
        } else {
            describe(&f.items[0], out);
        }
    }
    found_close(&f);
    return rv;
}

static int validate_spec(struct driver_k8s *k, const struct driver_sandbox_spec *spec,
                         const char *const *allowed, char *errmsg)
{
    char kns[64];
    int rv = driver__check_config_keys(spec, "kubernetes", k8s_config_keys, allowed, errmsg);
    if (rv != 0 || (rv = k8s_check_config(spec, errmsg)) != 0) {
        return rv;
    }
    if (spec->image == NULL || spec->image[0] == '\0') {
        gerr_set(errmsg, "the kubernetes driver needs an image");
        return GERR_INVAL;
    }
    return k8s_namespace(k, spec->namespace, kns, errmsg);
}

static int k8s_validate(struct driver *d, const struct driver_sandbox_spec *spec, const char *const *allowed,
                        char *errmsg)
{
    return validate_spec(k8s_of(d), spec, allowed, errmsg);
}

/* Sandbox @s exists as @p: 0 with @out if it has the spec's name, else GERR_EXISTS. */
static int adopt(const struct driver_sandbox_spec *s, const struct k8s_sandbox *p, struct driver_sandbox *out,
                 char *errmsg)
{
    if (strcmp(p->meta.gantry_name, s->name) != 0 || strcmp(p->meta.gantry_ns, s->namespace) != 0) {
        gerr_set(errmsg, "sandbox %s exists as %s/%s", s->id, p->meta.gantry_ns, p->meta.gantry_name);
        return GERR_EXISTS;
    }
    describe(p, out);
    return 0;
}

/* POST the Sandbox under @name. 0 with @out: made (or found to be ours after AlreadyExists);
 * GERR_EXISTS with *@taken: the name holds another object; anything else: failed. */
static int create_as(struct driver_k8s *k, uint64_t epoch, const struct driver_sandbox_spec *s,
                     const char *kns, const char *name, bool *taken, struct driver_sandbox *out, char *errmsg)
{
    char path[200], *doc;
    struct k8s_sandbox p;
    struct k8s_sandbox_params params = {.spec = s,
                                        .gateway_id = k->gw,
                                        .k8s_namespace = kns,
                                        .object_name = name,
                                        .epoch = epoch,
                                        .gpu_resource = k->gpu_res,
                                        .now_ms = driver__now_ms()};
    *taken = false;
    int rv = k8s_sandbox_manifest(&params, &doc, errmsg);
    if (rv != 0) {
        return rv;
    }
    snprintf(path, sizeof path, SANDBOXES "/namespaces/%s/" K8S_SANDBOX_RESOURCE, kns);
    rv = call(k, "POST", path, doc, errmsg);
    mem_free(doc);
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, "namespaces") == 0) {
        gerr_wrap(errmsg, "namespace %s (%s) does not exist: ensure_namespace first", s->namespace, kns);
        return rv;
    }
    if (rv == GERR_EXISTS) {
        /* A lost reply to our own earlier create, or someone else's object under that name. */
        sandbox_path(path, sizeof path, kns, name);
        if ((rv = call(k, "GET", path, NULL, errmsg)) != 0) {
            return rv == GERR_NOTFOUND ? GERR_ABORTED : rv; /* deleted meanwhile: try again */
        }
        if ((rv = k8s_sandbox_decode(body(k), k->resp.len, &p, errmsg)) != 0) {
            return rv;
        }
        if (sandbox_ours(k, &p.meta, s->id, NULL)) {
            rv = adopt(s, &p, out, errmsg);
        } else {
            gerr_set(errmsg, "a Sandbox named %s/%s exists and is not sandbox %s of gateway %s", kns, name,
                     s->id, k->gw);
            *taken = true;
            rv = GERR_EXISTS;
        }
        k8s_sandbox_close(&p);
        return rv;
    }
    if (rv != 0) {
        return not_served(k, rv, errmsg);
    }
    if ((rv = k8s_sandbox_decode(body(k), k->resp.len, &p, errmsg)) == 0) {
        describe(&p, out);
        k8s_sandbox_close(&p);
        LOG_INFO("kubernetes driver: sandbox %s/%s created for %s/%s, epoch %llu", kns, name, s->namespace,
                 s->name, (unsigned long long)epoch);
    }
    return rv;
}

static int k8s_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *s,
                      struct driver_sandbox *out, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    char kns[64], name[64], fallback[64];
    struct found f = {0};
    bool taken;
    int rv = validate_spec(k, s, NULL, errmsg);
    if (rv != 0 || (rv = k8s_namespace(k, s->namespace, kns, errmsg)) != 0 ||
        (rv = fence(k, epoch, errmsg)) != 0) {
        return rv;
    }
    /* Idempotent by id: whatever name it got, an existing one is found by its labels. */
    rv = list_from(k, kns, NULL, s->id, &f, errmsg);
    if (rv == 0 && f.n > 0) {
        rv = adopt(s, &f.items[0], out, errmsg);
        found_close(&f);
        return rv;
    }
    found_close(&f);
    if (rv != 0) {
        return rv;
    }
    driver_k8s_object_name(k->mode, s->namespace, s->name, name);
    rv = create_as(k, epoch, s, kns, name, &taken, out, errmsg);
    if (rv == GERR_EXISTS && taken) {
        /* The readable name is someone else's (another gateway in a shared namespace, or another
         * of ours whose "ns--name" reads the same): step aside to a name of our own. */
        driver_k8s_fallback_name(name, k->gw, s->id, fallback);
        rv = create_as(k, epoch, s, kns, fallback, &taken, out, errmsg);
    }
    return rv;
}

/* One pass of a delete: 0 done, GERR_ABORTED to read again, anything else final. */
static int delete_once(struct driver_k8s *k, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    char path[200];
    struct found f = {0};
    int rv = find(k, ns, id, &f, errmsg);
    for (size_t i = 0; rv == 0 && i < f.n; i++) {
        const struct k8s_sandbox *p = &f.items[i];
        if (p->meta.epoch > epoch) {
            uint64_t newest = p->meta.epoch;
            rv = driver__epoch_check(epoch, &newest, "the sandbox's epoch annotation", errmsg);
        } else if (!p->meta.deleting) {
            char *doc = k8s_delete_options(p->meta.resource_version);
            sandbox_path(path, sizeof path, p->meta.ns, p->meta.name);
            rv = call(k, "DELETE", path, doc, errmsg);
            mem_free(doc);
            rv = rv == GERR_NOTFOUND ? 0 : rv;
        }
    }
    found_close(&f);
    return rv;
}

static int k8s_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    int rv = fence(k, epoch, errmsg);
    for (int i = 0; rv == 0 && i < CONFLICT_RETRIES; i++) {
        rv = delete_once(k, epoch, ns, id, errmsg);
        if (rv != GERR_ABORTED) {
            return rv;
        }
        rv = 0; /* 409: the sandbox changed since we read it; read it again */
    }
    if (rv == 0) {
        gerr_set(errmsg, "delete of sandbox %s: still conflicting after %d attempts", id, CONFLICT_RETRIES);
        rv = GERR_ABORTED;
    }
    return rv;
}

/* ---- Lists */

/* Describe everything in @f onto @out. */
static void describe_all(const struct found *f, struct driver_sandbox_list *out)
{
    for (size_t i = 0; i < f->n; i++) {
        describe(&f->items[i], driver__list_push(out));
    }
}

static bool seen_before(struct driver_k8s *k, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (strcmp(k->op_to[j], k->op_to[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int list_all(struct driver_k8s *k, const char *ns, struct found *out, char *errmsg)
{
    char kns[64];
    int rv = 0;
    if (ns != NULL) {
        rv = k8s_namespace(k, ns, kns, errmsg);
        return rv != 0 ? rv : list_from(k, kns, ns, NULL, out, errmsg);
    }
    switch (k->mode) {
    case DRIVER_K8S_MANAGED:
        return list_from(k, NULL, NULL, NULL, out, errmsg);
    case DRIVER_K8S_SHARED:
        return list_from(k, k->shared_ns, NULL, NULL, out, errmsg);
    case DRIVER_K8S_OPERATOR:
    default:
        for (size_t i = 0; rv == 0 && i < k->n_op; i++) {
            if (!seen_before(k, i)) {
                rv = list_from(k, k->op_to[i], NULL, NULL, out, errmsg);
            }
        }
        return rv;
    }
}

static int k8s_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                    char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    struct found f = {0};
    int rv = read_check(k, epoch, errmsg);
    if (rv == 0 && (rv = list_all(k, ns, &f, errmsg)) == 0) {
        describe_all(&f, out);
    }
    found_close(&f);
    return rv;
}

/* ---- Namespaces */

static int get_namespace(struct driver_k8s *k, const char *kns, struct k8s_meta *m, char *errmsg)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    int rv = call(k, "GET", path, NULL, errmsg);
    return rv != 0 ? rv : k8s_meta_decode(body(k), k->resp.len, m, errmsg);
}

static bool ns_ours(struct driver_k8s *k, const struct k8s_meta *m)
{
    return m->gateway_id != NULL && strcmp(m->gateway_id, k->gw) == 0 && m->managed_by != NULL &&
           strcmp(m->managed_by, K8S_MANAGED_BY) == 0;
}

static int ensure_managed(struct driver_k8s *k, uint64_t epoch, const char *ns, const char *kns, char *errmsg)
{
    struct k8s_meta m;
    char *doc = k8s_namespace_manifest(kns, k->gw, ns, epoch);
    int rv = call(k, "POST", "/api/v1/namespaces", doc, errmsg);
    mem_free(doc);
    if (rv != GERR_EXISTS) {
        return rv;
    }
    if ((rv = get_namespace(k, kns, &m, errmsg)) != 0) {
        return rv;
    }
    if (!ns_ours(k, &m)) {
        gerr_set(errmsg, "namespace %s exists and is not managed by gateway %s", kns, k->gw);
        rv = GERR_EXISTS;
    } else if (m.terminating || m.deleting) {
        gerr_set(errmsg, "namespace %s is still terminating; try again", kns);
        rv = GERR_UNAVAILABLE;
    }
    k8s_meta_close(&m);
    return rv;
}

static int k8s_ensure_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    struct k8s_meta m;
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || (rv = fence(k, epoch, errmsg)) != 0) {
        return rv;
    }
    if (k->mode == DRIVER_K8S_MANAGED) {
        return ensure_managed(k, epoch, ns, kns, errmsg);
    }
    rv = get_namespace(k, kns, &m, errmsg);
    if (rv == GERR_NOTFOUND) {
        gerr_set(errmsg, "namespace %s does not exist; in %s mode it must be made by the cluster's operator",
                 kns, mode_name(k->mode));
    } else if (rv == 0) {
        k8s_meta_close(&m);
    }
    return rv;
}

static int delete_managed(struct driver_k8s *k, const char *kns, char *errmsg)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    for (int i = 0; i < CONFLICT_RETRIES; i++) {
        struct k8s_meta m;
        int rv = get_namespace(k, kns, &m, errmsg);
        if (rv == GERR_NOTFOUND) {
            return 0;
        }
        if (rv != 0) {
            return rv;
        }
        if (!ns_ours(k, &m)) {
            gerr_set(errmsg, "namespace %s is not labelled as managed by gateway %s: not deleting it", kns,
                     k->gw);
            k8s_meta_close(&m);
            return GERR_PERM;
        }
        char *doc = m.deleting || m.terminating ? NULL : k8s_delete_options(m.resource_version);
        rv = doc != NULL ? call(k, "DELETE", path, doc, errmsg) : 0;
        mem_free(doc);
        k8s_meta_close(&m);
        if (rv != GERR_ABORTED) {
            return rv == GERR_NOTFOUND ? 0 : rv;
        }
    }
    gerr_set(errmsg, "delete of namespace %s: still conflicting after %d attempts", kns, CONFLICT_RETRIES);
    return GERR_ABORTED;
}

static int k8s_delete_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    struct found f = {0};
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || (rv = fence(k, epoch, errmsg)) != 0) {
        return rv;
    }
    if ((rv = list_from(k, kns, ns, NULL, &f, errmsg)) == 0 && f.n > 0) {
        gerr_set(errmsg, "namespace %s still holds %zu sandboxes", ns, f.n);
        rv = GERR_CONSTRAINT;
    }
    found_close(&f);
    if (rv == 0 && k->mode == DRIVER_K8S_MANAGED) {
        rv = delete_managed(k, kns, errmsg);
    }
    return rv;
}

/* ---- Capabilities, construction */

static void k8s_capabilities(struct driver *d, struct driver_caps *caps)
{
    struct driver_k8s *k = k8s_of(d);
    caps->name = "kubernetes";
    caps->available = true;
    caps->isolation = true;
    caps->images = true;
    caps->gpus = true;
    caps->namespaces = k->mode == DRIVER_K8S_MANAGED;
    caps->shared_backend = true;
    caps->config_keys = k8s_config_keys;
    snprintf(caps->detail, sizeof caps->detail,
             "kubernetes %s as gateway %s, " K8S_SANDBOX_API " Sandbox objects, %s namespaces, fence %s/%s",
             k->server, k->gw, mode_name(k->mode), k->fence_ns, k->fence_name);
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l != NULL && i < n; i++) {
        mem_free(l[i]);
    }
    mem_free(l);
}

static void k8s_free(struct driver *d)
{
    struct driver_k8s *k = k8s_of(d);
    k8s_http_free(k->http);
    mem_free(k->gw);
    mem_free(k->shared_ns);
    free_list(k->op_from, k->n_op);
    free_list(k->op_to, k->n_op);
    mem_free(k->fence_ns);
    mem_free(k->gpu_res);
    mem_free(k->server);
    buf_close(&k->resp);
    driver__close(&k->base);
    mem_free(k);
}

static const struct driver_ops k8s_ops = {
    .capabilities = k8s_capabilities,
    .validate = k8s_validate,
    .create = k8s_create,
    .get = k8s_get,
    .list = k8s_list,
    .delete = k8s_delete,
    .ensure_namespace = k8s_ensure_ns,
    .delete_namespace = k8s_delete_ns,
    .free = k8s_free,
};

/* Parse the operator allowlist into k->op_from/op_to. */
static int parse_allowlist(struct driver_k8s *k, const char *const *list, char *errmsg)
{
    size_t n = 0;
    while (list != NULL && list[n] != NULL) {
        n++;
    }
    if (n == 0 || n > DRIVER_K8S_ALLOWLIST_MAX) {
        gerr_set(errmsg, "kubernetes operator mode needs 1 to %u allowlisted namespaces",
                 DRIVER_K8S_ALLOWLIST_MAX);
        return GERR_INVAL;
    }
    k->op_from = mem_zalloc((n + 1) * sizeof *k->op_from);
    k->op_to = mem_zalloc((n + 1) * sizeof *k->op_to);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(list[i], '=');
        k->op_from[i] = eq != NULL ? mem_strndup(list[i], (size_t)(eq - list[i])) : mem_strdup(list[i]);
        k->op_to[i] = mem_strdup(eq != NULL ? eq + 1 : list[i]);
        k->n_op = i + 1;
        bool dup = false;
        for (size_t j = 0; j < i; j++) {
            dup = dup || strcmp(k->op_from[j], k->op_from[i]) == 0;
        }
        if (!driver_is_dns_label(k->op_from[i]) || !driver_is_dns_label(k->op_to[i]) || dup) {
            gerr_set(errmsg,
                     "kubernetes operator allowlist entry %zu must be \"ns\" or \"ns=k8s-ns\" (DNS labels, "
                     "each gantry namespace once)",
                     i);
            return GERR_INVAL;
        }
    }
    return 0;
}

static int check_config(const struct driver_k8s_config *cfg, char *errmsg)
{
    if (!driver_is_dns_label(cfg->gateway_id) || strlen(cfg->gateway_id) > DRIVER_K8S_GATEWAY_ID_MAX) {
        gerr_set(errmsg, "kubernetes gateway_id must be a DNS-1123 label of at most %u bytes",
                 DRIVER_K8S_GATEWAY_ID_MAX);
        return GERR_INVAL;
    }
    if (cfg->mode != DRIVER_K8S_MANAGED && cfg->mode != DRIVER_K8S_OPERATOR &&
        cfg->mode != DRIVER_K8S_SHARED) {
        gerr_set(errmsg, "kubernetes mode must be managed, operator or shared");
        return GERR_INVAL;
    }
    if (cfg->mode == DRIVER_K8S_SHARED && !driver_is_dns_label(cfg->shared_namespace)) {
        gerr_set(errmsg, "kubernetes shared mode needs shared_namespace (a DNS-1123 label)");
        return GERR_INVAL;
    }
    if (cfg->fence_namespace != NULL && !driver_is_dns_label(cfg->fence_namespace)) {
        gerr_set(errmsg, "kubernetes fence_namespace must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (cfg->gpu_resource != NULL && !driver__label_key_ok(cfg->gpu_resource)) {
        gerr_set(errmsg, "kubernetes gpu_resource must be a resource name such as nvidia.com/gpu");
        return GERR_INVAL;
    }
    return 0;
}

/* The server, token and CA, from the configuration or, without a server, from the pod's
 * service account (in-cluster configuration). */
static int connection(const struct driver_k8s_config *cfg, struct k8s_http_config *hc, char *server,
                      size_t len, char *errmsg)
{
    *hc = (struct k8s_http_config){.server = cfg->server,
                                   .token_file = cfg->token_file,
                                   .ca_file = cfg->ca_file,
                                   .client_cert_file = cfg->client_cert_file,
                                   .client_key_file = cfg->client_key_file,
                                   .timeout_ms = cfg->timeout_ms,
                                   .max_body = K8S_MAX_BODY};
    if (cfg->server != NULL) {
        return 0;
    }
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || port == NULL || strlen(host) > 200 || strlen(port) > 8) {
        gerr_set(errmsg, "kubernetes: no server configured and not running in a cluster "
                         "(KUBERNETES_SERVICE_HOST/PORT unset)");
        return GERR_INVAL;
    }
    snprintf(server, len, strchr(host, ':') != NULL ? "https://[%s]:%s" : "https://%s:%s", host, port);
    hc->server = server;
    hc->token_file = cfg->token_file != NULL ? cfg->token_file : SA_DIR "/token";
    hc->ca_file = cfg->ca_file != NULL ? cfg->ca_file : SA_DIR "/ca.crt";
    return 0;
}

int driver_k8s_new(const struct driver_k8s_config *cfg, struct driver **out, char *errmsg)
{
    struct k8s_http_config hc;
    char server[300];
    int rv;
    *out = NULL;
    if ((rv = check_config(cfg, errmsg)) != 0 ||
        (rv = connection(cfg, &hc, server, sizeof server, errmsg)) != 0) {
        return rv;
    }
    struct driver_k8s *k = mem_zalloc(sizeof *k);
    driver__init(&k->base, &k8s_ops);
    buf_init(&k->resp);
    k->gw = mem_strdup(cfg->gateway_id);
    k->mode = cfg->mode;
    k->server = mem_strdup(hc.server);
    k->gpu_res = mem_strdup(cfg->gpu_resource != NULL ? cfg->gpu_resource : DEFAULT_GPU);
    snprintf(k->fence_name, sizeof k->fence_name, "gantry-fence-%s", cfg->gateway_id);
    if (cfg->mode == DRIVER_K8S_SHARED) {
        k->shared_ns = mem_strdup(cfg->shared_namespace);
    }
    if (cfg->mode == DRIVER_K8S_OPERATOR &&
        (rv = parse_allowlist(k, cfg->operator_namespaces, errmsg)) != 0) {
        goto err_after_alloc;
    }
    k->fence_ns = mem_strdup(cfg->fence_namespace != NULL       ? cfg->fence_namespace
                             : cfg->mode == DRIVER_K8S_SHARED   ? cfg->shared_namespace
                             : cfg->mode == DRIVER_K8S_OPERATOR ? k->op_to[0]
                                                                : "default");
    if ((rv = k8s_http_new(&hc, &k->http, errmsg)) != 0) {
        goto err_after_alloc;
    }
    *out = &k->base;
    return 0;

err_after_alloc:
    k8s_free(&k->base);
    return rv;
}
