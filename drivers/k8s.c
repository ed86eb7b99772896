/* The kubernetes driver (see k8s.h): agents.x-k8s.io Sandbox objects, namespaces and a fence
 * ConfigMap over HTTPS, with a list+watch cache for reads.
 *
 * Every mutating call is: check the fence (and raise it), then the request, then on 409 read
 * again and decide again, a bounded number of times. Every object read back is checked for this
 * gateway's labels before it is believed. Sandboxes are found in the cache, then by the name they
 * were last seen under, then by their labels (gateway id and sandbox id): object names are
 * readable and may have had to step aside for someone else's object (see driver_k8s_object_name),
 * so a name derived from the id is never trusted. */
#include "drivers/k8s.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_claims.h"
#include "drivers/k8s_pools.h"
#include "drivers/k8s_cache.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_json.h"
#include "drivers/k8s_sessions.h"
#include "drivers/k8s_watch.h"
#include "lib/buf.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"

#define CONFLICT_RETRIES 8
#define LIST_PAGE        500
#define LIST_RESTARTS    3
#define LIST_MAX         100000u
#define SA_DIR           "/var/run/secrets/kubernetes.io/serviceaccount"
#define DEFAULT_GPU      "nvidia.com/gpu"
#define MEMO_MAX         1024u

/* A namespace ensure_namespace made usable, and when (monotonic ms). */
struct memo {
    char kns[64];
    uint64_t at_ms;
};

struct driver_k8s {
    struct driver base;
    struct k8s_http *http;
    struct k8s_http_config hc; /* for the watches' own connections (strings owned below) */
    char *gw;
    enum driver_k8s_mode mode;
    char *shared_ns;
    char **op_from; /* operator allowlist: gantry namespace ... */
    char **op_to;   /* ... -> Kubernetes namespace */
    size_t n_op;
    char *home_ns;
    char fence_name[64];
    char **service_accounts; /* NULL-terminated */
    char **pull_secrets;     /* NULL-terminated */
    char *gpu_res;
    struct k8s_egress_relay egress; /* strings owned */
    char *server, *token_file, *ca_file, *cert_file, *key_file;
    unsigned watch_timeout_s;
    bool no_watch;
    uint64_t newest; /* the newest epoch this instance has seen */
    struct buf resp;
    long last_status;       /* the HTTP status of the last request (0: none answered) */
    struct k8s_status last; /* the Status of the last failed request */
    unsigned long long requests;
    /* The served version and the path prefix of the Sandbox resource; "" until discovered. */
    char version[16];
    char api[64];
    /* The list+watch cache: one scope per watch. */
    struct k8s_cache *cache;
    struct k8s_watch **watches;
    const char **scopes;
    size_t n_scopes;
    struct memo memo[MEMO_MAX];
    size_t n_memo;
    /* Waiting out a 429 (throttle_wait) releases base.mu: other calls run meanwhile. The fields
     * below are read and written under base.mu. */
    pthread_cond_t wake; /* on CLOCK_MONOTONIC; broadcast by driver_k8s_stop */
    bool stopping;       /* driver_k8s_stop was called: no more waits, no more requests */
    unsigned throttled;  /* calls waiting out a 429 now */
    uint64_t op_epoch;   /* the epoch of the call that holds base.mu (0: none) */
};

static struct driver_k8s *k8s_of(struct driver *d)
{
    return (struct driver_k8s *)d;
}

/* The start of every call that carries an epoch: it holds base.mu from here to its return, except
 * while it waits out a 429 (throttle_wait restores op_epoch when it has the mutex back). */
static struct driver_k8s *k8s_enter(struct driver *d, uint64_t epoch)
{
    struct driver_k8s *k = k8s_of(d);
    k->op_epoch = epoch;
    return k;
}

static const char *mode_name(enum driver_k8s_mode m)
{
    return m == DRIVER_K8S_MANAGED ? "managed" : m == DRIVER_K8S_OPERATOR ? "operator" : "shared";
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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

/* Wait @s seconds before repeating a throttled request, without holding the driver's mutex: the
 * caller holds base.mu (every op runs under it) and the timed wait on k->wake releases it until
 * the wait ends, so the other calls (the API's validate and capabilities, stats, another thread's
 * ops) are not held up behind a throttled one. driver_k8s_stop ends the wait at once.
 *
 * Another call may run meanwhile and use k->http, k->resp and k->last: the caller must not keep
 * anything it read from them before (call() repeats its request afterwards). It may also have
 * raised the newest epoch: then this call's fence check no longer holds. Returns 0 after the
 * wait, GERR_CANCELED when the driver is stopping, DRIVER_ERR_STALE when a newer epoch than this
 * call's was seen meanwhile. */
static int throttle_wait(struct driver_k8s *k, unsigned s, const char *method, const char *path, char *errmsg)
{
    uint64_t epoch = k->op_epoch;
    struct timespec until;
    int rc = 0;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)s;
    k->throttled++;
    while (!k->stopping && rc == 0) { /* 0 is a wakeup (maybe spurious): check and wait again */
        rc = pthread_cond_timedwait(&k->wake, &k->base.mu, &until);
    }
    k->throttled--;
    k->op_epoch = epoch;
    if (k->stopping) {
        gerr_set(errmsg, "%s %s: throttled (HTTP 429) and the kubernetes driver is stopping", method, path);
        return GERR_CANCELED;
    }
    if (epoch != 0 && k->newest > epoch) {
        gerr_set(errmsg,
                 "stale epoch %llu: this kubernetes driver saw epoch %llu while %s %s waited out throttling",
                 (unsigned long long)epoch, (unsigned long long)k->newest, method, path);
        return DRIVER_ERR_STALE;
    }
    return 0;
}

/* One request; a non-2xx status becomes its GERR_* code with the Status message. On 0 the body
 * is in k->resp. A 429 is waited out (its Retry-After, 1 s without one; throttle_wait, which lets
 * other calls run meanwhile) while the waits add up to at most DRIVER_K8S_THROTTLE_WAIT_S, then
 * GERR_BUSY. After driver_k8s_stop every call is GERR_CANCELED without a request. A 403 because
 * the namespace is being deleted is GERR_UNAVAILABLE: it clears by waiting, unlike RBAC's 403. */
static int call(struct driver_k8s *k, const char *method, const char *path, const char *body, char *errmsg)
{
    struct k8s_status *st = &k->last;
    unsigned waited = 0;
    if (body == NULL && strcmp(method, "GET") != 0) {
        /* Every write here sends a document (a DELETE its preconditions); NULL is a builder that
         * could not encode it (out of memory). Never send the write without it. */
        gerr_set(errmsg, "%s %s: cannot encode the request body", method, path);
        return GERR_NOMEM;
    }
    for (;;) {
        long status = 0;
        if (k->stopping) {
            gerr_set(errmsg, "%s %s: the kubernetes driver is stopping", method, path);
            return GERR_CANCELED;
        }
        memset(st, 0, sizeof *st);
        k->requests++;
        int rv = k8s_http_request(k->http, method, path, body, &status, &k->resp, errmsg);
        k->last_status = rv == 0 ? status : 0;
        if (rv != 0 || (status >= 200 && status < 300)) {
            return rv;
        }
        k8s_status_decode((const char *)k->resp.data, k->resp.len, st);
        rv = k8s_http_err_from_status(status, st->reason);
        if (status == 429) {
            unsigned wait = k8s_http_retry_after(k->http);
            wait = wait != 0 ? wait : st->retry_after_s != 0 ? st->retry_after_s : 1u;
            if (waited + wait <= DRIVER_K8S_THROTTLE_WAIT_S) {
                LOG_INFO("kubernetes driver: %s %s throttled (429); retrying after %u s", method, path, wait);
                if ((rv = throttle_wait(k, wait, method, path, errmsg)) != 0) {
                    memset(st, 0, sizeof *st); /* another call's, if one ran meanwhile */
                    k->last_status = 0;
                    return rv;
                }
                waited += wait;
                continue;
            }
            gerr_set(errmsg, "%s %s: throttled by the API server (HTTP 429 %s), retry after %u s", method,
                     path, st->reason, wait);
            return GERR_BUSY;
        }
        if (status == 403 && st->ns_terminating) {
            rv = GERR_UNAVAILABLE;
        }
        gerr_set(errmsg, "%s %s: HTTP %ld %s%s%s", method, path, status, st->reason,
                 st->message[0] != '\0' ? ": " : "", st->message);
        return rv;
    }
}

static const char *body(struct driver_k8s *k)
{
    return k->resp.data != NULL ? (const char *)k->resp.data : "";
}

/* ---- Discovery and the watches */

/* Every watch is told first, then joined: each takes up to about a second to notice, and one
 * scope per operator namespace (up to 256) joined in turn would hold the driver's mutex as long. */
static void stop_watches(struct driver_k8s *k)
{
    for (size_t i = 0; k->watches != NULL && i < k->n_scopes; i++) {
        k8s_watch_signal(k->watches[i]);
    }
    for (size_t i = 0; k->watches != NULL && i < k->n_scopes; i++) {
        k8s_watch_stop(k->watches[i]);
        k->watches[i] = NULL;
    }
}

static void start_watches(struct driver_k8s *k)
{
    char errmsg[GERR_MSG_SIZE];
    for (size_t i = 0; !k->no_watch && i < k->n_scopes; i++) {
        struct k8s_watch_config wc = {.http = k->hc,
                                      .api = k->api,
                                      .gateway_id = k->gw,
                                      .kns = k->scopes[i],
                                      .scope = i,
                                      .cache = k->cache,
                                      .timeout_s = k->watch_timeout_s};
        wc.http.timeout_ms = 0; /* each watch sets its own */
        if (k8s_watch_start(&wc, &k->watches[i], errmsg) != 0) {
            LOG_WARN("kubernetes driver: %s; reads go to the API server", errmsg); /* costs requests only */
        }
    }
}

/* The served agents.x-k8s.io version, asked of the API server once (and again after a 404 of the
 * resource): v1beta1, or v1alpha1 where v1beta1 is not served. The watches start (or restart
 * under the new version) here. */
static int sandbox_api(struct driver_k8s *k, char *errmsg)
{
    if (k->version[0] != '\0') {
        return 0;
    }
    unsigned served = 0;
    int rv = call(k, "GET", "/apis/" K8S_SANDBOX_GROUP, NULL, errmsg);
    if (rv == GERR_NOTFOUND) {
        gerr_set(errmsg, "the API server does not serve the API group " K8S_SANDBOX_GROUP
                         " (is the agent-sandbox CRD installed?)");
        return GERR_UNAVAILABLE;
    }
    if (rv != 0 || (rv = k8s_api_group_decode(body(k), k->resp.len, &served, errmsg)) != 0) {
        gerr_wrap(errmsg, "discovery of " K8S_SANDBOX_GROUP);
        return rv;
    }
    if (k->version[0] != '\0') {
        return 0; /* another call discovered it while this one waited out throttling */
    }
    const char *v = (served & K8S_SERVES_V1BETA1) != 0    ? K8S_SANDBOX_V1BETA1
                    : (served & K8S_SERVES_V1ALPHA1) != 0 ? K8S_SANDBOX_V1ALPHA1
                                                          : NULL;
    if (v == NULL) {
        gerr_set(errmsg,
                 "the API server serves " K8S_SANDBOX_GROUP " in neither " K8S_SANDBOX_V1BETA1
                 " nor " K8S_SANDBOX_V1ALPHA1 " (an agent-sandbox release this driver does not know)");
        return GERR_UNAVAILABLE;
    }
    stop_watches(k);
    snprintf(k->version, sizeof k->version, "%s", v);
    snprintf(k->api, sizeof k->api, "/apis/" K8S_SANDBOX_GROUP "/%s", v);
    LOG_INFO("kubernetes driver: using " K8S_SANDBOX_GROUP "/%s%s", v,
             strcmp(v, K8S_SANDBOX_V1ALPHA1) == 0 ? " (v1beta1 is not served: agent-sandbox before v0.5.0)"
                                                  : "");
    start_watches(k);
    return 0;
}

/* A 404 from a sandboxes URL is about the object (its Status names it: details.kind "sandboxes"),
 * the namespace (details.kind "namespaces"), or the resource itself, which the API server does not
 * serve (no details: the CRD is not installed, or not at this version any more: ask again next
 * time). Only the last is turned into GERR_UNAVAILABLE. */
static int not_served(struct driver_k8s *k, int rv, char *errmsg)
{
    if (rv == GERR_NOTFOUND && k->last.details_kind[0] == '\0') {
        gerr_set(errmsg,
                 "the API server does not serve " K8S_SANDBOX_RESOURCE "." K8S_SANDBOX_GROUP "/%s (is the "
                 "agent-sandbox CRD installed?)",
                 k->version);
        k->version[0] = '\0';
        return GERR_UNAVAILABLE;
    }
    return rv;
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
        snprintf(create, sizeof create, "/api/v1/namespaces/%s/configmaps", k->home_ns);
        doc = k8s_fence_manifest(k->fence_name, k->home_ns, k->gw, epoch, NULL);
        rv = call(k, "POST", create, doc, errmsg);
        mem_free(doc);
        *again = rv == GERR_EXISTS; /* another replica made it first: read theirs */
        return rv;
    }
    if (rv != 0 || (rv = k8s_meta_decode(body(k), k->resp.len, &m, errmsg)) != 0) {
        return rv;
    }
    if (m.gateway_id == NULL || strcmp(m.gateway_id, k->gw) != 0) {
        gerr_set(errmsg, "ConfigMap %s/%s exists without this gateway's label: not touching it", k->home_ns,
                 k->fence_name);
        rv = GERR_PERM;
    } else if (m.epoch > epoch) {
        k->newest = m.epoch > k->newest ? m.epoch : k->newest;
        rv = driver__epoch_check(epoch, &k->newest, "the kubernetes fence", errmsg);
    } else if (m.epoch < epoch) {
        doc = k8s_fence_manifest(k->fence_name, k->home_ns, k->gw, epoch, m.resource_version);
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
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/configmaps/%s", k->home_ns, k->fence_name);
    for (int i = 0; i < CONFLICT_RETRIES; i++) {
        bool again;
        rv = fence_once(k, epoch, path, &again, errmsg);
        if (rv == 0) {
            k->newest = epoch > k->newest ? epoch : k->newest;
            return 0;
        }
        if (!again) {
            if (rv != DRIVER_ERR_STALE) {
                gerr_wrap(errmsg, "epoch fence");
            }
            return rv;
        }
    }
    gerr_set(errmsg, "epoch fence %s/%s: still conflicting after %d attempts", k->home_ns, k->fence_name,
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
    return k8s_sandbox_belongs(m, k->gw) && (id == NULL || strcmp(m->sandbox_id, id) == 0) &&
           (ns == NULL || strcmp(m->gantry_ns, ns) == 0);
}

/* The phase as the controller reports it. A pod that never schedules or never pulls its image stays
 * PROVISIONING (DependenciesNotReady) for ever, and so does a running sandbox whose pod was evicted:
 * only the reconciler knows whether the sandbox was ever READY, so it applies the provisioning
 * deadline (leases/reconciler.h). */
static void describe(struct driver_k8s *k, const struct k8s_sandbox *p, struct driver_sandbox *out)
{
    (void)k;
    char handle[160];
    snprintf(handle, sizeof handle, "k8s:%s/%s", p->meta.ns, p->meta.name);
    driver__sandbox_fill(out, p->meta.sandbox_id, p->meta.gantry_ns, p->meta.gantry_name, p->phase, handle,
                         p->message, p->meta.epoch, p->meta.created_at_ms);
}

static void sandbox_path(struct driver_k8s *k, char *out, size_t len, const char *kns, const char *name)
{
    snprintf(out, len, "%s/namespaces/%s/" K8S_SANDBOX_RESOURCE "/%s", k->api, kns, name);
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

static void found_push(struct found *f, struct k8s_sandbox *s)
{
    if (f->n == f->cap) {
        f->cap = f->cap == 0 ? 16 : f->cap * 2;
        f->items = mem_realloc(f->items, f->cap * sizeof *f->items);
    }
    f->items[f->n++] = *s;
    memset(s, 0, sizeof *s); /* moved */
}

/* Append this gateway's sandboxes from @kns (NULL: every namespace) of gantry namespace @ns
 * (NULL: all) and, with @id, of that sandbox only, page by page, to @out. The label selector
 * asks the server for exactly these; each item is checked again before it is believed. A page
 * answered 410 (the continue token expired) starts the list again from the first page. */
static int list_once(struct driver_k8s *k, const char *kns, const char *ns, const char *id, struct found *out,
                     char *errmsg)
{
    char *next = NULL;
    int rv = 0;
    do {
        struct buf path;
        struct k8s_sandbox_list l;
        buf_init(&path);
        if (kns != NULL) {
            buf_printf(&path, "%s/namespaces/%s/" K8S_SANDBOX_RESOURCE, k->api, kns);
        } else {
            buf_printf(&path, "%s/" K8S_SANDBOX_RESOURCE, k->api);
        }
        buf_printf(&path, "?limit=%d&labelSelector=", LIST_PAGE);
        k8s_http_put_escaped(&path, K8S_LABEL_GATEWAY "=");
        k8s_http_put_escaped(&path, k->gw);
        if (ns != NULL) {
            k8s_http_put_escaped(&path, "," K8S_LABEL_NAMESPACE "=");
            k8s_http_put_escaped(&path, ns);
        }
        if (id != NULL) {
            k8s_http_put_escaped(&path, "," K8S_LABEL_SANDBOX "=");
            k8s_http_put_escaped(&path, id);
        }
        if (next != NULL) {
            buf_printf(&path, "&continue=");
            k8s_http_put_escaped(&path, next);
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
            if (sandbox_ours(k, &l.items[i].meta, id, ns)) {
                k8s_cache_put(k->cache, &l.items[i]);
                found_push(out, &l.items[i]);
            }
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

static int list_from(struct driver_k8s *k, const char *kns, const char *ns, const char *id, struct found *out,
                     char *errmsg)
{
    size_t had = out->n;
    for (int attempt = 0;; attempt++) {
        int rv = list_once(k, kns, ns, id, out, errmsg);
        if (rv == 0 || k->last_status != 410 || attempt == LIST_RESTARTS) {
            return rv;
        }
        LOG_INFO("kubernetes driver: %s; listing again from the first page", errmsg);
        while (out->n > had) { /* drop what the expired list had found */
            k8s_sandbox_close(&out->items[--out->n]);
        }
    }
}

/* GET Sandbox @kns/@name into @out: 0, GERR_NOTFOUND, or an error. */
static int read_named(struct driver_k8s *k, const char *kns, const char *name, struct k8s_sandbox *out,
                      char *errmsg)
{
    char path[256];
    sandbox_path(k, path, sizeof path, kns, name);
    int rv = not_served(k, call(k, "GET", path, NULL, errmsg), errmsg);
    if (rv == 0) {
        rv = k8s_sandbox_decode(body(k), k->resp.len, out, errmsg);
    }
    return rv;
}

/* The Sandbox object(s) of sandbox @id of gantry namespace @ns in Kubernetes namespace @kns: from
 * the cache while its scope is live, else by the name it was last seen under (one GET), else by
 * label (one LIST). The cache's "none" is confirmed with the API server: a watch event may be a
 * moment behind a create made by another replica, and a wrong NOTFOUND would make the reconciler
 * report the sandbox lost. */
static int find_in(struct driver_k8s *k, const char *kns, const char *ns, const char *id, struct found *out,
                   char *errmsg)
{
    char hint_ns[64], hint_name[64];
    struct k8s_sandbox s;
    int rv;
    int cached = k8s_cache_get(k->cache, kns, id, &s);
    if (cached == 1 && sandbox_ours(k, &s.meta, id, ns)) {
        found_push(out, &s);
        return 0;
    }
    k8s_sandbox_close(&s);
    if (k8s_cache_name_of(k->cache, id, hint_ns, hint_name) && strcmp(hint_ns, kns) == 0) {
        rv = read_named(k, kns, hint_name, &s, errmsg);
        if (rv == 0 && sandbox_ours(k, &s.meta, id, ns)) {
            k8s_cache_put(k->cache, &s);
            found_push(out, &s);
            return 0;
        }
        k8s_sandbox_close(&s);
        if (rv != 0 && rv != GERR_NOTFOUND) {
            return rv;
        }
        /* Gone, or not ours any more under that name: search by label. */
    }
    return list_from(k, kns, ns, id, out, errmsg);
}

/* Is @i the first allowlist entry naming its Kubernetes namespace? */
static bool op_first(struct driver_k8s *k, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (strcmp(k->op_to[j], k->op_to[i]) == 0) {
            return false;
        }
    }
    return true;
}

/* Is @kns one of the operator allowlist's Kubernetes namespaces? */
static bool op_holds(struct driver_k8s *k, const char *kns)
{
    for (size_t i = 0; i < k->n_op; i++) {
        if (strcmp(k->op_to[i], kns) == 0) {
            return true;
        }
    }
    return false;
}

/* The Sandbox object(s) of sandbox @id of gantry namespace @ns, wherever the driver may have put
 * it: in operator mode a caller may have placed it (driver_config "namespace") in any of the
 * allowlist's Kubernetes namespaces, so the one the cache last saw it in is asked first, then the
 * namespace @ns maps to, then the others (a sandbox never seen costs a LIST in each). */
static int find(struct driver_k8s *k, const char *ns, const char *id, struct found *out, char *errmsg)
{
    char kns[64], hint_ns[64], hint_name[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || (rv = sandbox_api(k, errmsg)) != 0) {
        return rv;
    }
    if (k->mode != DRIVER_K8S_OPERATOR) {
        return find_in(k, kns, ns, id, out, errmsg);
    }
    bool hinted = k8s_cache_name_of(k->cache, id, hint_ns, hint_name) && op_holds(k, hint_ns) &&
                  strcmp(hint_ns, kns) != 0;
    if (hinted && ((rv = find_in(k, hint_ns, ns, id, out, errmsg)) != 0 || out->n > 0)) {
        return rv;
    }
    if ((rv = find_in(k, kns, ns, id, out, errmsg)) != 0 || out->n > 0) {
        return rv;
    }
    for (size_t i = 0; rv == 0 && out->n == 0 && i < k->n_op; i++) {
        if (op_first(k, i) && strcmp(k->op_to[i], kns) != 0 &&
            !(hinted && strcmp(k->op_to[i], hint_ns) == 0)) {
            rv = find_in(k, k->op_to[i], ns, id, out, errmsg);
        }
    }
    return rv;
}

/* This gateway's objects of gantry namespace @ns (and sandbox @id, NULL: all) asked of the API
 * server in every Kubernetes namespace they may be in (operator mode: every allowlist namespace). */
static int list_everywhere(struct driver_k8s *k, const char *ns, const char *id, struct found *out,
                           char *errmsg)
{
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || k->mode != DRIVER_K8S_OPERATOR) {
        return rv != 0 ? rv : list_from(k, kns, ns, id, out, errmsg);
    }
    for (size_t i = 0; rv == 0 && i < k->n_op; i++) {
        if (op_first(k, i)) {
            rv = list_from(k, k->op_to[i], ns, id, out, errmsg);
        }
    }
    return rv;
}

/* The Kubernetes namespace sandbox @spec goes into: the driver_config "namespace" its creator chose
 * (operator mode only, and only one of the allowlist's Kubernetes namespaces: GERR_PERM otherwise),
 * else the one its gantry namespace maps to. The gantry namespace must be allowed either way. */
static int spec_namespace(struct driver_k8s *k, const struct driver_sandbox_spec *spec, char out[64],
                          char *errmsg)
{
    const char *chosen = driver_kv_get(spec->driver_config, spec->n_driver_config, "namespace");
    int rv = k8s_namespace(k, spec->namespace, out, errmsg);
    if (rv != 0 || chosen == NULL) {
        return rv;
    }
    if (k->mode != DRIVER_K8S_OPERATOR) {
        gerr_set(
            errmsg,
            "driver_config namespace %.63s: the kubernetes driver in %s mode chooses the namespace itself "
            "(only operator mode places a sandbox in a namespace of its allowlist)",
            chosen, k->mode == DRIVER_K8S_MANAGED ? "managed" : "shared");
        return GERR_PERM;
    }
    if (!op_holds(k, chosen)) {
        gerr_set(
            errmsg,
            "driver_config namespace %.63s is not a namespace of the kubernetes driver's operator allowlist",
            chosen);
        return GERR_PERM;
    }
    snprintf(out, 64, "%s", chosen);
    return 0;
}

static int k8s_get(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                   struct driver_sandbox *out, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    struct found f = {0};
    int rv = read_check(k, epoch, errmsg);
    if (rv == 0 && (rv = find(k, ns, id, &f, errmsg)) == 0) {
        if (f.n == 0) {
            gerr_set(errmsg, "no sandbox %s of gateway %s in %s", id, k->gw, ns);
            rv = GERR_NOTFOUND;
        } else {
            describe(k, &f.items[0], out);
        }
    }
    found_close(&f);
    return rv;
}

static int validate_spec(struct driver_k8s *k, const struct driver_sandbox_spec *spec,
                         const char *const *allowed, char *errmsg)
{
    char kns[64], secret[128];
    struct k8s_allocation alloc;
    int rv = driver__check_config_keys(spec, "kubernetes", k8s_config_keys, allowed, errmsg);
    if (rv != 0 || (rv = k8s_check_config(spec, errmsg)) != 0 || (rv = k8s_check_labels(spec, errmsg)) != 0 ||
        (rv = k8s_allocation_of(spec, &alloc, errmsg)) != 0) {
        return rv;
    }
    const char *sa = driver_kv_get(spec->driver_config, spec->n_driver_config, "service_account");
    if (sa != NULL && !driver__in_list((const char *const *)k->service_accounts, sa)) {
        struct buf b;
        buf_init(&b);
        driver__join(&b, (const char *const *)k->service_accounts);
        gerr_set(errmsg,
                 "driver_config service_account %s is not one the kubernetes driver may give sandboxes (its "
                 "allow-list: %s)",
                 sa, (const char *)b.data);
        buf_close(&b);
        return GERR_PERM;
    }
    if (spec->image == NULL || spec->image[0] == '\0') {
        gerr_set(errmsg, "the kubernetes driver needs an image");
        return GERR_INVAL;
    }
    if ((rv = spec_namespace(k, spec, kns, errmsg)) != 0) {
        return rv;
    }
    /* The object's size: render it as create would (the longest names it could get). */
    char *doc;
    struct k8s_sandbox_params params = {.spec = spec,
                                        .api_version = K8S_SANDBOX_GROUP "/" K8S_SANDBOX_V1ALPHA1,
                                        .gateway_id = k->gw,
                                        .k8s_namespace = kns,
                                        .object_name =
                                            "x23456789012345678901234567890123456789012345678901234567890123",
                                        .epoch = UINT64_MAX,
                                        .gpu_resource = k->gpu_res,
                                        .image_pull_secrets = (const char *const *)k->pull_secrets,
                                        .now_ms = driver__now_ms(),
                                        .credentials_secret = secret,
                                        .egress = &k->egress};
    k8s_credentials_secret_name(k->gw, spec->id, secret);
    rv = k8s_sandbox_manifest(&params, &doc, errmsg);
    mem_free(doc);
    return rv;
}

static int k8s_validate(struct driver *d, const struct driver_sandbox_spec *spec, const char *const *allowed,
                        char *errmsg)
{
    return validate_spec(k8s_of(d), spec, allowed, errmsg);
}

/* Sandbox @s exists as @p: 0 with @out if it has the spec's name, else GERR_EXISTS. */
static int adopt(struct driver_k8s *k, const struct driver_sandbox_spec *s, const struct k8s_sandbox *p,
                 struct driver_sandbox *out, char *errmsg)
{
    if (strcmp(p->meta.gantry_name, s->name) != 0 || strcmp(p->meta.gantry_ns, s->namespace) != 0) {
        gerr_set(errmsg, "sandbox %s exists as %s/%s", s->id, p->meta.gantry_ns, p->meta.gantry_name);
        return GERR_EXISTS;
    }
    describe(k, p, out);
    return 0;
}

static void memo_forget(struct driver_k8s *k, const char *kns)
{
    for (size_t i = 0; i < k->n_memo; i++) {
        if (strcmp(k->memo[i].kns, kns) == 0) {
            k->memo[i] = k->memo[--k->n_memo];
            return;
        }
    }
}

/* POST the Sandbox under @name. 0 with @out and @obj (the object as the server has it): made (or
 * found to be ours after AlreadyExists); GERR_EXISTS with *@taken: the name holds another object;
 * anything else: failed. */
static int create_as(struct driver_k8s *k, uint64_t epoch, const struct driver_sandbox_spec *s,
                     const char *kns, const char *name, bool *taken, struct driver_sandbox *out,
                     struct k8s_sandbox *obj, char *errmsg)
{
    char path[200], apiv[64], secret[128], *doc;
    struct k8s_sandbox p;
    snprintf(apiv, sizeof apiv, K8S_SANDBOX_GROUP "/%s", k->version);
    k8s_credentials_secret_name(k->gw, s->id, secret);
    struct k8s_sandbox_params params = {.spec = s,
                                        .api_version = apiv,
                                        .gateway_id = k->gw,
                                        .k8s_namespace = kns,
                                        .object_name = name,
                                        .epoch = epoch,
                                        .gpu_resource = k->gpu_res,
                                        .image_pull_secrets = (const char *const *)k->pull_secrets,
                                        .now_ms = driver__now_ms(),
                                        .credentials_secret = secret,
                                        .egress = &k->egress};
    *taken = false;
    int rv = k8s_sandbox_manifest(&params, &doc, errmsg);
    if (rv != 0) {
        return rv;
    }
    snprintf(path, sizeof path, "%s/namespaces/%s/" K8S_SANDBOX_RESOURCE, k->api, kns);
    rv = call(k, "POST", path, doc, errmsg);
    mem_free(doc);
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, "namespaces") == 0) {
        memo_forget(k, kns);
        gerr_wrap(errmsg, "namespace %s (%s) does not exist: ensure_namespace first", s->namespace, kns);
        return rv;
    }
    if (rv == GERR_EXISTS) {
        /* A lost reply to our own earlier create, or someone else's object under that name. */
        if ((rv = read_named(k, kns, name, &p, errmsg)) != 0) {
            return rv == GERR_NOTFOUND ? GERR_ABORTED : rv; /* deleted meanwhile: try again */
        }
        if (sandbox_ours(k, &p.meta, s->id, NULL)) {
            k8s_cache_put(k->cache, &p);
            rv = adopt(k, s, &p, out, errmsg);
            if (rv == 0) {
                *obj = p; /* moved */
                memset(&p, 0, sizeof p);
            }
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
        k8s_cache_put(k->cache, &p); /* written through: a get() right after sees it */
        describe(k, &p, out);
        *obj = p; /* moved */
        LOG_INFO("kubernetes driver: sandbox %s/%s created for %s/%s, epoch %llu", kns, name, s->namespace,
                 s->name, (unsigned long long)epoch);
    }
    return rv;
}

/* ---- Credentials
 *
 * The happy path of a create with credentials: the Secret first (no owner yet: a POST, or a PUT
 * over one an earlier attempt left), so the pod never starts without it; then the Sandbox; then
 * the Secret again with the Sandbox as its owner (a PUT), so Kubernetes deletes it with the
 * Sandbox. An existing Sandbox (create again, adopt) gets the last step only. The driver never
 * reads a Secret back: its ServiceAccount may not (docs/deploy-helm.md), and nothing in one is
 * the driver's to trust. The write is an unconditional replace: the name is this gateway's and
 * this sandbox's alone, and the whole set is written every time, so there is nothing to merge.
 *
 * The plaintext is in the request body (wiped by k8s_secret_free) and in the API server's answer
 * (wiped from k->resp here); error messages carry the HTTP status and reason and, for a 403, the
 * server's message (RBAC's names the verb and resource), never the server's text about the data. */

static void wipe_resp(struct driver_k8s *k)
{
    volatile uint8_t *v = k->resp.data;
    for (size_t i = 0; v != NULL && i < k->resp.cap; i++) {
        v[i] = 0;
    }
    k->resp.len = 0;
}

int driver_k8s_read_secret(struct driver *d, const char *ns, const char *name, const char *key, char **out,
                           char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    char path[400];
    *out = NULL;
    if (!driver_is_dns_label(ns) || !driver_is_dns_subdomain(name)) {
        gerr_set(errmsg, "Secret %.63s/%.253s: not a namespace and Secret name", ns, name);
        return GERR_INVAL;
    }
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets/%s", ns, name);
    pthread_mutex_lock(&k->base.mu);
    k->op_epoch = 0; /* a read outside any epoch: a throttled wait is never stale */
    int rv = call(k, "GET", path, NULL, errmsg);
    if (rv == 0) {
        char why[GERR_MSG_SIZE];
        rv = k8s_secret_value(body(k), k->resp.len, key, out, why);
        if (rv != 0) {
            gerr_set(errmsg, "Secret %s/%s: %s", ns, name, why);
        }
    } else if (k->last_status != 0) {
        gerr_set(errmsg, "GET Secret %s/%s: HTTP %ld %s%s%s", ns, name, k->last_status, k->last.reason,
                 k->last_status == 403 ? ": " : "", k->last_status == 403 ? k->last.message : "");
    }
    wipe_resp(k);
    pthread_mutex_unlock(&k->base.mu);
    return rv;
}

/* One write of the credentials Secret: @method to @path with @doc. */
static int secret_call(struct driver_k8s *k, const char *method, const char *path, const char *doc,
                       char *errmsg)
{
    int rv = call(k, method, path, doc, errmsg);
    wipe_resp(k);
    if (rv != 0 && k->last_status != 0) {
        gerr_set(errmsg, "%s %s: HTTP %ld %s%s%s", method, path, k->last_status, k->last.reason,
                 k->last_status == 403 ? ": " : "", k->last_status == 403 ? k->last.message : "");
        if (k->last_status == 403 && k->last.ns_terminating) {
            rv = GERR_UNAVAILABLE;
        }
    }
    return rv;
}

/* Write the credentials Secret of sandbox @s in @kns, with @owner (NULL: none yet). @exists: it is
 * expected to exist (PUT first, POST on 404), else POST first (PUT on 409 AlreadyExists). */
static int put_credentials(struct driver_k8s *k, const char *kns, const char *ns, const char *id,
                           const char *name, const struct k8s_owner *owner, const struct driver_credential *c,
                           size_t n, bool exists, char *errmsg)
{
    char secret[128], one[240], collection[100], *doc;
    k8s_credentials_secret_name(k->gw, id, secret);
    struct k8s_credentials_params cp = {.name = secret,
                                        .k8s_namespace = kns,
                                        .gateway_id = k->gw,
                                        .gantry_ns = ns,
                                        .sandbox_id = id,
                                        .sandbox_name = name,
                                        .owner = owner,
                                        .creds = c,
                                        .n = n};
    int rv = k8s_credentials_secret(&cp, &doc, errmsg);
    if (rv != 0) {
        return rv;
    }
    snprintf(collection, sizeof collection, "/api/v1/namespaces/%s/secrets", kns);
    snprintf(one, sizeof one, "%s/%s", collection, secret);
    if (exists) {
        rv = secret_call(k, "PUT", one, doc, errmsg);
        if (rv == GERR_NOTFOUND) {
            rv = secret_call(k, "POST", collection, doc, errmsg);
        }
    } else {
        rv = secret_call(k, "POST", collection, doc, errmsg);
        if (rv == GERR_EXISTS) {
            rv = secret_call(k, "PUT", one, doc, errmsg);
        }
    }
    k8s_secret_free(doc);
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, "namespaces") == 0) {
        memo_forget(k, kns); /* ensure_namespace must look again */
        gerr_wrap(errmsg, "namespace %s (%s) does not exist: ensure_namespace first", ns, kns);
    } else if (rv != 0) {
        gerr_wrap(errmsg, "credentials of sandbox %s", id);
    }
    return rv;
}

/* Give the existing Sandbox @p of sandbox @id its credentials, owned by it. */
static int own_credentials(struct driver_k8s *k, const struct k8s_sandbox *p, const char *id,
                           const struct driver_credential *c, size_t n, char *errmsg)
{
    char apiv[64];
    if (p->meta.uid == NULL || p->meta.uid[0] == '\0') {
        gerr_set(errmsg, "Sandbox %s/%s has no metadata.uid: cannot make it own its credentials", p->meta.ns,
                 p->meta.name);
        return GERR_PROTO;
    }
    snprintf(apiv, sizeof apiv, K8S_SANDBOX_GROUP "/%s", k->version);
    struct k8s_owner owner = {.api_version = apiv, .name = p->meta.name, .uid = p->meta.uid};
    return put_credentials(k, p->meta.ns, p->meta.gantry_ns, id, p->meta.gantry_name, &owner, c, n, true,
                           errmsg);
}

/* Delete the credentials Secret of sandbox @id in @kns. 404 is fine; so is 403 when @orphan (no
 * Sandbox was found, so this looks for what a create that failed after its first step may have
 * left: a ServiceAccount without rights on Secrets there cannot have made one). */
static int delete_credentials(struct driver_k8s *k, const char *kns, const char *id, bool orphan,
                              char *errmsg)
{
    char secret[128], path[300];
    static const char opts[] = "{\"apiVersion\":\"v1\",\"kind\":\"DeleteOptions\",\"propagationPolicy\":"
                               "\"Background\"}";
    k8s_credentials_secret_name(k->gw, id, secret);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets/%s", kns, secret);
    int rv = secret_call(k, "DELETE", path, opts, errmsg);
    if (rv == GERR_NOTFOUND || (orphan && rv == GERR_PERM)) {
        rv = 0;
    }
    if (rv != 0) {
        gerr_wrap(errmsg, "credentials of sandbox %s", id);
    }
    return rv;
}

static int k8s_update_credentials(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                                  const struct driver_credential *creds, size_t n, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    struct found f = {0};
    int rv = fence(k, epoch, errmsg);
    if (rv == 0 && (rv = find(k, ns, id, &f, errmsg)) == 0) {
        if (f.n == 0) {
            gerr_set(errmsg, "no sandbox %s of gateway %s in %s", id, k->gw, ns);
            rv = GERR_NOTFOUND;
        } else if (!f.items[0].meta.credentials) {
            /* Its pod mounts no Secret, and a pod's volumes never change. */
            gerr_set(errmsg,
                     "sandbox %s was started without credentials: they reach it when it is made again", id);
            rv = GERR_INVAL;
        } else if ((rv = own_credentials(k, &f.items[0], id, creds, n, errmsg)) == 0) {
            LOG_INFO("kubernetes driver: credentials of sandbox %s/%s replaced (%zu entries)", ns, id, n);
        }
    }
    found_close(&f);
    return rv;
}

/* After a failed create of sandbox @id in @kns that had written its credentials Secret: when no
 * Sandbox of @id is there (asked of the API server), nothing owns the Secret and nothing would
 * ever collect it, so it is deleted now (a retry of the create writes it again). When one is there
 * (a lost reply, an adopt that failed, another replica's), its pod mounts the Secret and it stays.
 * Best effort: what is left here, the sandbox's delete removes (delete_orphan_credentials). */
static void drop_unowned_credentials(struct driver_k8s *k, const char *kns, const char *id)
{
    char why[GERR_MSG_SIZE];
    struct found f = {0};
    int rv = list_from(k, kns, NULL, id, &f, why);
    if (rv == 0 && f.n == 0) {
        rv = delete_credentials(k, kns, id, true, why);
    }
    found_close(&f);
    if (rv != 0) {
        LOG_WARN("kubernetes driver: sandbox %s: its credentials Secret in %s outlives a failed create "
                 "until the sandbox is deleted: %s",
                 id, kns, why);
    }
}

/* ---- Claims (allocation "claim", drivers/k8s_claims.h)
 *
 * create: the SandboxClaim (named like the Sandbox would be, labelled like one), then, once the
 * controller has bound it (status.sandbox.name), the bound Sandbox gets this gateway's labels and
 * annotations (and gantry.dev/claim) by a merge PATCH carrying its resourceVersion: from then on it
 * is found, cached, watched and described like a Sandbox the driver made. delete: the claim (the
 * controller's owner reference makes the garbage collector delete the Sandbox). */

#define CLAIM_WAIT_MS 2000u /* how long one create waits for the controller to bind the claim */
#define CLAIM_POLL_MS 100u

static void claim_path(char *out, size_t len, const char *kns, const char *name)
{
    snprintf(out, len, K8S_EXT_API "/namespaces/%s/" K8S_CLAIM_RESOURCE "%s%s", kns, name != NULL ? "/" : "",
             name != NULL ? name : "");
}

static bool claim_ours(struct driver_k8s *k, const struct k8s_claim *c, const char *id)
{
    return strcmp(c->gateway_id, k->gw) == 0 && strcmp(c->sandbox_id, id) == 0;
}

/* A 404 for the extensions resources themselves (no details naming the object's kind or the
 * namespace) means the CRDs are not installed: that clears when an operator installs them. */
static int ext_missing(struct driver_k8s *k, int rv, const char *resource, char *errmsg)
{
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, resource) != 0 &&
        strcmp(k->last.details_kind, "namespaces") != 0) {
        gerr_wrap(errmsg,
                  "the %s." K8S_EXT_GROUP "/" K8S_EXT_VERSION
                  " resource is not served: are agent-sandbox's extensions installed?",
                  resource);
        return GERR_UNAVAILABLE;
    }
    return rv;
}

/* Wait @ms with base.mu released (as throttle_wait): other calls run meanwhile. 0, GERR_CANCELED
 * when the driver is stopping, DRIVER_ERR_STALE when a newer epoch was seen meanwhile. */
static int claim_wait(struct driver_k8s *k, unsigned ms, char *errmsg)
{
    uint64_t epoch = k->op_epoch;
    struct timespec until;
    int rc = 0;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)(ms % 1000u) * 1000000L;
    until.tv_sec += (time_t)(ms / 1000u) + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (!k->stopping && rc == 0) {
        rc = pthread_cond_timedwait(&k->wake, &k->base.mu, &until);
    }
    k->op_epoch = epoch;
    if (k->stopping) {
        gerr_set(errmsg, "the kubernetes driver is stopping");
        return GERR_CANCELED;
    }
    return driver__epoch_check(epoch, &k->newest, "this kubernetes driver", errmsg);
}

/* The template a claim of @a refers to: the one given, or the warm pool's. */
static int claim_template(struct driver_k8s *k, const struct k8s_allocation *a, const char *kns,
                          char out[254], char *errmsg)
{
    char path[512];
    if (a->warm_pool == NULL) {
        snprintf(out, 254, "%s", a->template_name);
        return 0;
    }
    snprintf(path, sizeof path, K8S_EXT_API "/namespaces/%s/" K8S_POOL_RESOURCE "/%s", kns, a->warm_pool);
    int rv = ext_missing(k, call(k, "GET", path, NULL, errmsg), K8S_POOL_RESOURCE, errmsg);
    if (rv == GERR_NOTFOUND) {
        gerr_set(errmsg, "driver_config warm_pool %.253s: no SandboxWarmPool of that name in namespace %s",
                 a->warm_pool, kns);
        return GERR_INVAL;
    }
    return rv != 0 ? rv : k8s_pool_template(body(k), k->resp.len, out, errmsg);
}

/* POST the claim under @name, or find ours there. 0 with @c; GERR_EXISTS with *@taken when the name
 * holds someone else's claim. */
static int claim_post(struct driver_k8s *k, uint64_t epoch, const struct driver_sandbox_spec *s,
                      const struct k8s_allocation *a, const char *kns, const char *tmpl, const char *name,
                      bool *taken, struct k8s_claim *c, char *errmsg)
{
    char path[512];
    *taken = false;
    char *doc = k8s_claim_manifest(s, k->gw, kns, name, epoch, tmpl, a->warm_pool);
    claim_path(path, sizeof path, kns, NULL);
    int rv = ext_missing(k, call(k, "POST", path, doc, errmsg), K8S_CLAIM_RESOURCE, errmsg);
    mem_free(doc);
    if (rv == GERR_NOTFOUND && strcmp(k->last.details_kind, "namespaces") == 0) {
        memo_forget(k, kns);
        gerr_wrap(errmsg, "namespace %s (%s) does not exist: ensure_namespace first", s->namespace, kns);
        return rv;
    }
    if (rv == GERR_EXISTS) { /* our own earlier attempt, or someone else's claim */
        claim_path(path, sizeof path, kns, name);
        if ((rv = call(k, "GET", path, NULL, errmsg)) != 0) {
            return rv == GERR_NOTFOUND ? GERR_ABORTED : rv; /* deleted meanwhile: try again */
        }
        if ((rv = k8s_claim_decode(body(k), k->resp.len, c, errmsg)) == 0 && !claim_ours(k, c, s->id)) {
            gerr_set(errmsg, "a SandboxClaim named %s/%s exists and is not sandbox %s of gateway %s", kns,
                     name, s->id, k->gw);
            *taken = true;
            rv = GERR_EXISTS;
        }
        return rv;
    }
    if (rv == 0) {
        rv = k8s_claim_decode(body(k), k->resp.len, c, errmsg);
        LOG_INFO("kubernetes driver: SandboxClaim %s/%s (template %s%s%s) created for %s/%s, epoch %llu", kns,
                 name, tmpl, a->warm_pool != NULL ? ", warm pool " : "",
                 a->warm_pool != NULL ? a->warm_pool : "", s->namespace, s->name, (unsigned long long)epoch);
    }
    return rv;
}

/* Make the Sandbox @c is bound to this gateway's (labels, annotations), then describe it. A Sandbox
 * carrying another gateway's or sandbox's labels is never taken over: GERR_EXISTS. */
static int claim_adopt(struct driver_k8s *k, uint64_t epoch, const struct driver_sandbox_spec *s,
                       const char *kns, const struct k8s_claim *c, struct driver_sandbox *out, char *errmsg)
{
    char path[512];
    for (int i = 0; i < CONFLICT_RETRIES; i++) {
        struct k8s_sandbox p;
        int rv = read_named(k, kns, c->bound, &p, errmsg);
        if (rv == GERR_NOTFOUND) {
            gerr_set(errmsg, "SandboxClaim %s/%s is bound to Sandbox %s, which is not there (yet)", kns,
                     c->name, c->bound);
            return GERR_UNAVAILABLE;
        }
        if (rv != 0) {
            return rv;
        }
        bool ours = sandbox_ours(k, &p.meta, s->id, NULL) && strcmp(p.meta.claim, c->name) == 0;
        if (!ours && p.meta.gateway_id != NULL && !sandbox_ours(k, &p.meta, s->id, NULL)) {
            gerr_set(errmsg,
                     "SandboxClaim %s/%s is bound to Sandbox %s, which carries another sandbox's labels", kns,
                     c->name, c->bound);
            k8s_sandbox_close(&p);
            return GERR_EXISTS;
        }
        if (!ours) {
            char *patch = k8s_claimed_patch(s, k->gw, epoch, c->name, p.meta.resource_version);
            sandbox_path(k, path, sizeof path, kns, c->bound);
            rv = not_served(k, call(k, "PATCH", path, patch, errmsg), errmsg);
            mem_free(patch);
            k8s_sandbox_close(&p);
            if (rv == GERR_ABORTED) {
                continue; /* changed since read (the controller wrote its status): read again */
            }
            if (rv != 0 || (rv = k8s_sandbox_decode(body(k), k->resp.len, &p, errmsg)) != 0) {
                return rv;
            }
            LOG_INFO("kubernetes driver: Sandbox %s/%s, bound to claim %s, is sandbox %s/%s now", kns,
                     c->bound, c->name, s->namespace, s->name);
        }
        k8s_cache_put(k->cache, &p);
        rv = adopt(k, s, &p, out, errmsg);
        k8s_sandbox_close(&p);
        return rv;
    }
    gerr_set(errmsg, "Sandbox %s/%s: still conflicting after %d attempts", kns, c->bound, CONFLICT_RETRIES);
    return GERR_ABORTED;
}

/* A create with allocation "claim": the claim (or ours, found), then its Sandbox once bound. A
 * claim the controller reports it cannot satisfy (its template or warm pool does not exist) is
 * GERR_INVAL with the controller's reason; one still unbound after CLAIM_WAIT_MS is
 * GERR_UNAVAILABLE (the reconciler tries again until its provisioning deadline; the next create
 * finds this claim). */
static int claim_create(struct driver_k8s *k, uint64_t epoch, const struct driver_sandbox_spec *s,
                        const struct k8s_allocation *a, const char *kns, struct driver_sandbox *out,
                        char *errmsg)
{
    char tmpl[254], name[64], fallback[64], path[512];
    struct k8s_claim c;
    bool taken;
    if (s->n_credentials > 0) {
        gerr_set(errmsg,
                 "a sandbox with allocation \"claim\" cannot be given credentials: its pod comes from the "
                 "SandboxTemplate, which does not mount them");
        return GERR_INVAL;
    }
    int rv = claim_template(k, a, kns, tmpl, errmsg);
    if (rv != 0) {
        return rv;
    }
    driver_k8s_object_name(k->mode, s->namespace, s->name, name);
    rv = claim_post(k, epoch, s, a, kns, tmpl, name, &taken, &c, errmsg);
    if (rv == GERR_EXISTS && taken) {
        driver_k8s_fallback_name(name, k->gw, s->id, fallback);
        rv = claim_post(k, epoch, s, a, kns, tmpl, fallback, &taken, &c, errmsg);
    }
    for (unsigned waited = 0; rv == 0 && c.bound[0] == '\0'; waited += CLAIM_POLL_MS) {
        if (c.failed) {
            gerr_set(errmsg, "SandboxClaim %s/%s cannot be satisfied: %s", kns, c.name, c.message);
            return GERR_INVAL;
        }
        if (c.deleting) {
            gerr_set(errmsg, "SandboxClaim %s/%s is being deleted", kns, c.name);
            return GERR_UNAVAILABLE;
        }
        if (waited >= CLAIM_WAIT_MS) {
            gerr_set(errmsg, "SandboxClaim %s/%s is not bound to a Sandbox yet%s%s", kns, c.name,
                     c.message[0] != '\0' ? ": " : "", c.message);
            return GERR_UNAVAILABLE;
        }
        if ((rv = claim_wait(k, CLAIM_POLL_MS, errmsg)) != 0) {
            return rv;
        }
        claim_path(path, sizeof path, kns, c.name);
        if ((rv = call(k, "GET", path, NULL, errmsg)) == 0) {
            rv = k8s_claim_decode(body(k), k->resp.len, &c, errmsg);
        } else if (rv == GERR_NOTFOUND) {
            gerr_wrap(errmsg, "SandboxClaim %s/%s was deleted while waiting for it to be bound", kns, c.name);
            return GERR_ABORTED;
        }
    }
    return rv != 0 ? rv : claim_adopt(k, epoch, s, kns, &c, out, errmsg);
}

/* Delete claim @name in @kns if it is sandbox @id's of this gateway (uid precondition). 404 is 0. */
static int claim_delete(struct driver_k8s *k, const char *kns, const char *name, const char *id, char *errmsg)
{
    char path[512];
    struct k8s_claim c;
    claim_path(path, sizeof path, kns, name);
    int rv = ext_missing(k, call(k, "GET", path, NULL, errmsg), K8S_CLAIM_RESOURCE, errmsg);
    if (rv == GERR_NOTFOUND) {
        return 0;
    }
    if (rv != 0 || (rv = k8s_claim_decode(body(k), k->resp.len, &c, errmsg)) != 0) {
        return rv;
    }
    if (!claim_ours(k, &c, id)) {
        LOG_WARN("kubernetes driver: SandboxClaim %s/%s is not sandbox %s's of gateway %s: not deleted", kns,
                 name, id, k->gw);
        return 0;
    }
    if (c.deleting) {
        return 0;
    }
    char *doc = k8s_claim_delete_options(c.uid);
    rv = call(k, "DELETE", path, doc, errmsg);
    mem_free(doc);
    if (rv == 0) {
        LOG_INFO("kubernetes driver: SandboxClaim %s/%s of sandbox %s deleted", kns, name, id);
    }
    return rv == GERR_NOTFOUND ? 0 : rv;
}

/* The claims of sandbox @id in @kns that hold no Sandbox of ours (a create that never saw its claim
 * bound): found by label, deleted. */
static int claims_delete_unbound(struct driver_k8s *k, const char *kns, const char *id, char *errmsg)
{
    struct buf path;
    struct k8s_claim found[8];
    size_t n = 0;
    buf_init(&path);
    buf_printf(&path, K8S_EXT_API "/namespaces/%s/" K8S_CLAIM_RESOURCE "?labelSelector=", kns);
    k8s_http_put_escaped(&path, K8S_LABEL_GATEWAY "=");
    k8s_http_put_escaped(&path, k->gw);
    k8s_http_put_escaped(&path, "," K8S_LABEL_SANDBOX "=");
    k8s_http_put_escaped(&path, id);
    buf_append_zero(&path, 1); /* buf_append does not terminate */
    int rv = call(k, "GET", (const char *)path.data, NULL, errmsg);
    buf_close(&path);
    if (rv == GERR_NOTFOUND || rv == GERR_PERM) {
        return 0; /* no extensions installed (or no right to them): there can be no claim of ours */
    }
    if (rv != 0 || (rv = k8s_claim_list_decode(body(k), k->resp.len, found, 8, &n, errmsg)) != 0) {
        return rv;
    }
    for (size_t i = 0; rv == 0 && i < n; i++) {
        if (claim_ours(k, &found[i], id)) {
            rv = claim_delete(k, kns, found[i].name, id, errmsg);
        }
    }
    return rv;
}

static int k8s_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *s,
                      struct driver_sandbox *out, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    char kns[64], name[64], fallback[64];
    struct found f = {0};
    struct k8s_allocation alloc;
    bool taken;
    int rv = validate_spec(k, s, NULL, errmsg);
    if (rv != 0 || (rv = k8s_allocation_of(s, &alloc, errmsg)) != 0 ||
        (rv = spec_namespace(k, s, kns, errmsg)) != 0 || (rv = fence(k, epoch, errmsg)) != 0 ||
        (rv = sandbox_api(k, errmsg)) != 0) {
        return rv;
    }
    /* Idempotent by id: whatever name it got, an existing one is found by its labels. Asked of the
     * API server, not the cache: another replica may have made it under a fallback name a moment
     * ago. */
    rv = list_from(k, kns, NULL, s->id, &f, errmsg);
    if (rv == 0 && f.n > 0) {
        rv = adopt(k, s, &f.items[0], out, errmsg);
        if (rv == 0 && s->n_credentials > 0 && f.items[0].meta.credentials) {
            rv = own_credentials(k, &f.items[0], s->id, s->credentials, s->n_credentials, errmsg);
        } else if (rv == 0 && s->n_credentials > 0) {
            LOG_WARN("kubernetes driver: sandbox %s exists without a credentials volume (made by an older "
                     "version): its credentials reach it when it is made again",
                     s->id);
        }
        found_close(&f);
        goto out;
    }
    found_close(&f);
    if (rv != 0) {
        return rv;
    }
    if (alloc.claim) {
        rv = claim_create(k, epoch, s, &alloc, kns, out, errmsg);
        goto out;
    }
    if (s->n_credentials > 0 &&
        (rv = put_credentials(k, kns, s->namespace, s->id, s->name, NULL, s->credentials, s->n_credentials,
                              false, errmsg)) != 0) {
        return rv;
    }
    struct k8s_sandbox made = {0};
    driver_k8s_object_name(k->mode, s->namespace, s->name, name);
    rv = create_as(k, epoch, s, kns, name, &taken, out, &made, errmsg);
    if (rv == GERR_EXISTS && taken) {
        /* The readable name is someone else's (another gateway in a shared namespace, or another
         * of ours whose "ns--name" reads the same): step aside to a name of our own. */
        driver_k8s_fallback_name(name, k->gw, s->id, fallback);
        rv = create_as(k, epoch, s, kns, fallback, &taken, out, &made, errmsg);
    }
    if (rv == 0 && s->n_credentials > 0) {
        rv = own_credentials(k, &made, s->id, s->credentials, s->n_credentials, errmsg);
    } else if (rv != 0 && s->n_credentials > 0) {
        drop_unowned_credentials(k, kns, s->id);
    }
    k8s_sandbox_close(&made);
out:
    if (rv != 0) {
        driver_sandbox_close(out); /* a failed call leaves its result zeroed */
    }
    return rv;
}

/* One pass of a delete: 0 done, GERR_ABORTED to read again, anything else final. @fresh: read from
 * the API server (after a conflict), not the cache. *@creds: 1 when a Sandbox found mounts a
 * credentials Secret, 2 when none was found (a create may have failed after making the Secret). */
static int delete_once(struct driver_k8s *k, uint64_t epoch, const char *ns, const char *id, bool fresh,
                       int *creds, char where[64], char *errmsg)
{
    char path[200];
    struct found f = {0};
    int rv = fresh ? list_everywhere(k, ns, id, &f, errmsg) : find(k, ns, id, &f, errmsg);
    *creds = f.n == 0 ? 2 : 0;
    for (size_t i = 0; i < f.n; i++) {
        *creds = f.items[i].meta.credentials ? 1 : *creds;
        if (f.items[i].meta.credentials) {
            snprintf(where, 64, "%s", f.items[i].meta.ns);
        }
    }
    for (size_t i = 0; rv == 0 && i < f.n; i++) {
        const struct k8s_sandbox *p = &f.items[i];
        if (p->meta.epoch > epoch) {
            uint64_t newest = p->meta.epoch;
            rv = driver__epoch_check(epoch, &newest, "the sandbox's epoch annotation", errmsg);
        } else if (!p->meta.deleting && p->meta.claim[0] != '\0') {
            /* A claimed Sandbox: release it by deleting its claim (the controller's owner reference
             * makes the garbage collector delete the Sandbox); the cache follows the watch. */
            rv = claim_delete(k, p->meta.ns, p->meta.claim, id, errmsg);
            struct k8s_sandbox now = {0};
            int r = rv == 0 ? read_named(k, p->meta.ns, p->meta.name, &now, errmsg) : -1;
            if (r == GERR_NOTFOUND) {
                k8s_cache_remove(k->cache, p->meta.sandbox_id, p->meta.ns, p->meta.name,
                                 p->meta.resource_version);
            } else if (r == 0 && sandbox_ours(k, &now.meta, id, ns)) {
                k8s_cache_put(k->cache, &now);
            }
            k8s_sandbox_close(&now);
        } else if (!p->meta.deleting) {
            char *doc = k8s_delete_options(p->meta.resource_version);
            sandbox_path(k, path, sizeof path, p->meta.ns, p->meta.name);
            rv = not_served(k, call(k, "DELETE", path, doc, errmsg), errmsg);
            mem_free(doc);
            if (rv == 0 || rv == GERR_NOTFOUND) {
                /* Gone, or deleting (the answer says which): the cache follows at once, and a late
                 * watch event from before the delete cannot bring the old state back. */
                struct k8s_sandbox gone = {0};
                if (rv == 0 && k8s_sandbox_decode(body(k), k->resp.len, &gone, errmsg) == 0 &&
                    gone.meta.deleting && sandbox_ours(k, &gone.meta, id, ns)) {
                    k8s_cache_put(k->cache, &gone);
                } else {
                    k8s_cache_remove(k->cache, p->meta.sandbox_id, p->meta.ns, p->meta.name,
                                     rv == 0 && gone.meta.resource_version != NULL
                                         ? gone.meta.resource_version
                                         : p->meta.resource_version);
                }
                k8s_sandbox_close(&gone);
                rv = 0;
            }
        }
    }
    found_close(&f);
    return rv;
}

/* The credentials Secret of sandbox @id when no Sandbox of it was found: a create that failed after
 * writing the Secret left it without an owner, so Kubernetes' garbage collector never removes it.
 * It is in the namespace its creator chose (operator mode: any of the allowlist's Kubernetes
 * namespaces, and the driver is not told which on delete) or else the one @ns maps to: its
 * deterministic name is deleted in each of them (a 404 or 403 costs nothing). */
static int delete_orphan_credentials(struct driver_k8s *k, const char *ns, const char *id, char *errmsg)
{
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || k->mode != DRIVER_K8S_OPERATOR) {
        if (rv == 0) {
            rv = claims_delete_unbound(k, kns, id, errmsg);
        }
        return rv != 0 ? rv : delete_credentials(k, kns, id, true, errmsg);
    }
    for (size_t i = 0; rv == 0 && i < k->n_op; i++) {
        if (op_first(k, i) && (rv = claims_delete_unbound(k, k->op_to[i], id, errmsg)) == 0) {
            rv = delete_credentials(k, k->op_to[i], id, true, errmsg);
        }
    }
    return rv;
}

/* The Sandbox first (the epoch annotation on it may refuse the delete), then its credentials
 * Secret: in the namespace the Sandbox was in (Kubernetes' garbage collector would delete that one
 * too, it being owned by the Sandbox, but not at once), or, when no Sandbox was found, wherever a
 * failed create may have left one without an owner (delete_orphan_credentials). */
static int k8s_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    char kns[64];
    int creds = 0, rv = fence(k, epoch, errmsg);
    for (int i = 0; rv == 0 && i < CONFLICT_RETRIES; i++) {
        kns[0] = '\0';
        rv = delete_once(k, epoch, ns, id, i > 0, &creds, kns, errmsg);
        if (rv == 0 && creds == 1 && kns[0] != '\0') {
            rv = delete_credentials(k, kns, id, false, errmsg);
        } else if (rv == 0 && creds == 2) {
            rv = delete_orphan_credentials(k, ns, id, errmsg);
        }
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

/* This gateway's sandboxes of Kubernetes namespace @kns (NULL: all) and gantry namespace @ns
 * (NULL: all): from the cache when live, else from the API server. */
static int list_scope(struct driver_k8s *k, const char *kns, const char *ns, struct found *out, char *errmsg)
{
    if (k8s_cache_snapshot(k->cache, kns, ns, &out->items, &out->n, &out->cap)) {
        return 0;
    }
    return list_from(k, kns, ns, NULL, out, errmsg);
}

static int list_all(struct driver_k8s *k, const char *ns, struct found *out, char *errmsg)
{
    char kns[64];
    int rv = sandbox_api(k, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (ns != NULL) {
        rv = k8s_namespace(k, ns, kns, errmsg);
        if (rv != 0 || k->mode != DRIVER_K8S_OPERATOR) {
            return rv != 0 ? rv : list_scope(k, kns, ns, out, errmsg);
        }
        for (size_t i = 0; rv == 0 && i < k->n_op; i++) { /* placed by driver_config "namespace" */
            if (op_first(k, i)) {
                rv = list_scope(k, k->op_to[i], ns, out, errmsg);
            }
        }
        return rv;
    }
    switch (k->mode) {
    case DRIVER_K8S_MANAGED:
        return list_scope(k, NULL, NULL, out, errmsg);
    case DRIVER_K8S_SHARED:
        return list_scope(k, k->shared_ns, NULL, out, errmsg);
    case DRIVER_K8S_OPERATOR:
    default:
        for (size_t i = 0; rv == 0 && i < k->n_op; i++) {
            if (op_first(k, i)) {
                rv = list_scope(k, k->op_to[i], NULL, out, errmsg);
            }
        }
        return rv;
    }
}

static int k8s_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                    char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    struct found f = {0};
    int rv = read_check(k, epoch, errmsg);
    if (rv == 0 && (rv = list_all(k, ns, &f, errmsg)) == 0) {
        for (size_t i = 0; i < f.n; i++) {
            describe(k, &f.items[i], driver__list_push(out));
        }
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

/* The refusal of managed namespace @kns, which is not ours (@what: what is refused). When it
 * carries another gateway's id label, the message names that gateway (and its gantry namespace):
 * "openshell-<gateway>-<namespace>" names collide between gateway ids where one followed by "-"
 * begins the other (gw-a with namespace b-x, gw-a-b with namespace x), and the operator must be
 * able to see which gateway holds the name. Label values from the server are shown only if they
 * are label values (printable, short). */
static void not_ours_msg(struct driver_k8s *k, const struct k8s_meta *m, const char *kns, const char *what,
                         char *errmsg)
{
    const char *other = m->gateway_id, *other_ns = m->gantry_ns;
    if (other == NULL || strcmp(other, k->gw) == 0 || !driver__label_value_ok(other)) {
        gerr_set(errmsg, "namespace %s is not managed by gateway %s: %s", kns, k->gw, what);
        return;
    }
    gerr_set(errmsg,
             "namespace %s is not managed by gateway %s: %s; it belongs to gateway %s (gantry namespace %s). "
             "Managed namespace names collide when one gateway id followed by \"-\" begins another: give "
             "gateways ids that do not (docs/drivers.md)",
             kns, k->gw, what, other,
             other_ns != NULL && driver__label_value_ok(other_ns) ? other_ns : "unknown");
}

/* POST @doc to @collection; AlreadyExists is fine (made before). */
static int create_or_keep(struct driver_k8s *k, const char *collection, const char *doc, char *errmsg)
{
    int rv = call(k, "POST", collection, doc, errmsg);
    return rv == GERR_EXISTS ? 0 : rv;
}

/* Copy image pull secret @name from the home namespace into managed namespace @kns: created, or
 * replaced (unconditionally: the namespace is this gateway's, and so is a Secret of that name in
 * it) so a rotated credential reaches every namespace within DRIVER_K8S_ENSURE_MEMO_MS. The
 * driver never reads Secrets outside its own namespace. */
static int copy_pull_secret(struct driver_k8s *k, const char *kns, const char *name, char *errmsg)
{
    char path[300], *doc = NULL;
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets/%s", k->home_ns, name);
    int rv = call(k, "GET", path, NULL, errmsg);
    if (rv == GERR_NOTFOUND) {
        gerr_set(errmsg, "image pull secret %s does not exist in the gateway's namespace %s", name,
                 k->home_ns);
        return GERR_INVAL;
    }
    if (rv != 0 || (rv = k8s_secret_copy(body(k), k->resp.len, kns, k->gw, &doc, errmsg)) != 0) {
        wipe_resp(k);
        return rv;
    }
    wipe_resp(k);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets", kns);
    rv = call(k, "POST", path, doc, errmsg);
    if (rv == GERR_EXISTS) {
        snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets/%s", kns, name);
        rv = call(k, "PUT", path, doc, errmsg);
    }
    wipe_resp(k);
    k8s_secret_free(doc);
    return rv;
}

/* One look at managed namespace @kns, which exists: refuse it unless it is ours, and bring its
 * labels up to date (an older Gantry made it without some of them, such as the Pod Security ones)
 * with a merge PATCH carrying the resourceVersion read. *@again on a 409 Conflict. */
static int update_managed_once(struct driver_k8s *k, const char *ns, const char *kns, bool *again,
                               char *errmsg)
{
    struct k8s_meta m;
    char path[128], *patch = NULL;
    *again = false;
    int rv = get_namespace(k, kns, &m, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (!ns_ours(k, &m)) {
        not_ours_msg(k, &m, kns, "not using it", errmsg);
        rv = GERR_EXISTS;
    } else if (m.gantry_ns != NULL && strcmp(m.gantry_ns, ns) != 0) {
        /* Only a hash collision of two long names can do this: never take the other's. */
        gerr_set(errmsg, "namespace %s belongs to gantry namespace %s of gateway %s, not to %s", kns,
                 m.gantry_ns, k->gw, ns);
        rv = GERR_EXISTS;
    } else if (m.terminating || m.deleting) {
        gerr_set(errmsg,
                 "namespace %s is still terminating (it was deleted); it can be made again once it is "
                 "gone",
                 kns);
        rv = GERR_UNAVAILABLE;
    } else if ((rv = k8s_namespace_patch(body(k), k->resp.len, k->gw, ns, &patch, errmsg)) == 0 &&
               patch != NULL) {
        LOG_INFO("kubernetes driver: namespace %s lacks labels this version sets; updating them", kns);
        snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
        rv = call(k, "PATCH", path, patch, errmsg);
        *again = rv == GERR_ABORTED; /* 409 Conflict: someone wrote it since we read it */
        mem_free(patch);
    }
    k8s_meta_close(&m);
    return rv;
}

/* k8s_call_fn over call(), for drivers/k8s_netpol.c. */
static int netpol_call(void *ctx, const char *method, const char *path, const char *doc, const char **resp,
                       size_t *len, char *errmsg)
{
    struct driver_k8s *k = ctx;
    int rv = call(k, method, path, doc, errmsg);
    *resp = body(k);
    *len = k->resp.len;
    return rv;
}

static int ensure_managed(struct driver_k8s *k, uint64_t epoch, const char *ns, const char *kns, char *errmsg)
{
    char path[200];
    char *doc = k8s_namespace_manifest(kns, k->gw, ns, epoch);
    int rv = call(k, "POST", "/api/v1/namespaces", doc, errmsg);
    mem_free(doc);
    if (rv == GERR_EXISTS) {
        bool again = true;
        for (int i = 0; again && i < CONFLICT_RETRIES; i++) {
            rv = update_managed_once(k, ns, kns, &again, errmsg);
        }
        if (again) {
            gerr_set(errmsg, "labels of namespace %s: still conflicting after %d attempts", kns,
                     CONFLICT_RETRIES);
        }
    }
    if (rv != 0) {
        return rv;
    }
    /* Nothing in the namespace talks to anything until a policy allows it. */
    doc = k8s_network_policy_manifest(kns, k->gw);
    snprintf(path, sizeof path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies", kns);
    rv = create_or_keep(k, path, doc, errmsg);
    mem_free(doc);
    if (rv == 0) {
        /* The one way out beside it, to the egress relay (or none: then any old one goes). */
        rv = k8s_egress_netpol_reconcile(netpol_call, k, kns, k->gw, &k->egress, errmsg);
    }
    for (size_t i = 0; rv == 0 && k->pull_secrets[i] != NULL; i++) {
        rv = copy_pull_secret(k, kns, k->pull_secrets[i], errmsg);
    }
    return rv;
}

static bool memo_fresh(struct driver_k8s *k, const char *kns)
{
    uint64_t now = mono_ms();
    for (size_t i = 0; i < k->n_memo; i++) {
        if (strcmp(k->memo[i].kns, kns) == 0) {
            if (now - k->memo[i].at_ms < DRIVER_K8S_ENSURE_MEMO_MS) {
                return true;
            }
            k->memo[i] = k->memo[--k->n_memo];
            return false;
        }
    }
    return false;
}

static void memo_add(struct driver_k8s *k, const char *kns)
{
    if (k->n_memo == MEMO_MAX) {
        k->n_memo = 0; /* forget everything: at worst each namespace is ensured once more */
    }
    snprintf(k->memo[k->n_memo].kns, sizeof k->memo[k->n_memo].kns, "%s", kns);
    k->memo[k->n_memo++].at_ms = mono_ms();
}

static int k8s_ensure_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    struct k8s_meta m;
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || (rv = fence(k, epoch, errmsg)) != 0 || memo_fresh(k, kns)) {
        return rv;
    }
    switch (k->mode) {
    case DRIVER_K8S_MANAGED:
        rv = ensure_managed(k, epoch, ns, kns, errmsg);
        break;
    case DRIVER_K8S_OPERATOR:
        rv = get_namespace(k, kns, &m, errmsg);
        if (rv == GERR_NOTFOUND) {
            gerr_set(errmsg,
                     "namespace %s does not exist; in operator mode it must be made by the cluster's "
                     "operator",
                     kns);
        } else if (rv == 0) {
            if (m.terminating || m.deleting) {
                gerr_set(errmsg, "namespace %s is terminating", kns);
                rv = GERR_UNAVAILABLE;
            }
            k8s_meta_close(&m);
        }
        break;
    case DRIVER_K8S_SHARED:
    default:
        /* A Role in the shared namespace cannot grant reading the Namespace object itself; a
         * sandbox create there answers 404 (namespaces) if it does not exist. */
        break;
    }
    if (rv == 0) {
        memo_add(k, kns);
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
            not_ours_msg(k, &m, kns, "not deleting it", errmsg);
            k8s_meta_close(&m);
            return GERR_PERM;
        }
        bool going = m.deleting || m.terminating;
        char *doc = going ? NULL : k8s_delete_options(m.resource_version);
        rv = going ? 0 : call(k, "DELETE", path, doc, errmsg);
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
    struct driver_k8s *k = k8s_enter(d, epoch);
    struct found f = {0};
    char kns[64];
    int rv = k8s_namespace(k, ns, kns, errmsg);
    if (rv != 0 || (rv = fence(k, epoch, errmsg)) != 0 || (rv = sandbox_api(k, errmsg)) != 0) {
        return rv;
    }
    if ((rv = list_everywhere(k, ns, NULL, &f, errmsg)) == 0 && f.n > 0) {
        gerr_set(errmsg, "namespace %s still holds %zu sandboxes", ns, f.n);
        rv = GERR_CONSTRAINT;
    }
    found_close(&f);
    memo_forget(k, kns);
    if (rv == 0 && k->mode == DRIVER_K8S_MANAGED) {
        rv = delete_managed(k, kns, errmsg);
    }
    return rv;
}

/* ---- Sessions (drivers/k8s_sessions.h): where a sandbox's pod is */

int k8s__pod_of(struct driver *d, const char *ns, const char *id, char kns[64], char pod[64],
                enum driver_phase *phase, struct k8s_http_config *hc, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    struct found f = {0};
    int rv;
    pthread_mutex_lock(&d->mu);
    if (k->stopping) {
        gerr_set(errmsg, "the kubernetes driver is stopping");
        rv = GERR_CANCELED;
    } else if ((rv = find(k, ns, id, &f, errmsg)) == 0) {
        if (f.n == 0) {
            gerr_set(errmsg, "no sandbox %s of gateway %s in %s", id, k->gw, ns);
            rv = GERR_NOTFOUND;
        } else {
            snprintf(kns, 64, "%s", f.items[0].meta.ns);
            snprintf(pod, 64, "%s", f.items[0].meta.name);
            *phase = f.items[0].phase;
            *hc = k->hc;
        }
    }
    found_close(&f);
    pthread_mutex_unlock(&d->mu);
    return rv;
}

/* ---- Warm pools (drivers/k8s_pools.h): SandboxWarmPool objects of Gantry's WarmPools */

#define POOL_LIST_MAX 1024u

static void pool_path(char *out, size_t len, const char *kns, const char *name)
{
    snprintf(out, len, K8S_EXT_API "/namespaces/%s/" K8S_POOL_RESOURCE "%s%s", kns, name != NULL ? "/" : "",
             name != NULL ? name : "");
}

/* Where @spec's pool goes: the namespace it names (operator mode, one of the allowlist's only, as a
 * sandbox's driver_config "namespace"), else the one its gantry namespace maps to. */
static int pool_namespace(struct driver_k8s *k, const struct driver_pool_spec *spec, char out[64],
                          char *errmsg)
{
    const char *chosen =
        spec->k8s_namespace != NULL && spec->k8s_namespace[0] != '\0' ? spec->k8s_namespace : NULL;
    int rv = k8s_namespace(k, spec->namespace, out, errmsg);
    if (rv != 0 || chosen == NULL) {
        return rv;
    }
    if (k->mode != DRIVER_K8S_OPERATOR || !op_holds(k, chosen)) {
        gerr_set(errmsg, "warm pool namespace %.63s: %s", chosen,
                 k->mode != DRIVER_K8S_OPERATOR
                     ? "the kubernetes driver chooses the namespace itself outside operator mode"
                     : "not a namespace of the kubernetes driver's operator allowlist");
        return GERR_PERM;
    }
    snprintf(out, 64, "%s", chosen);
    return 0;
}

static void pool_describe(const struct k8s_pool *p, const char *kns, struct driver_pool *out)
{
    out->id = mem_strdup(p->pool_id);
    out->namespace = mem_strdup(p->gantry_ns);
    out->name = mem_strdup(p->name);
    out->k8s_namespace = mem_strdup(p->k8s_namespace[0] != '\0' ? p->k8s_namespace : kns);
    out->replicas = p->replicas < 0 ? 0 : (uint32_t)p->replicas;
    out->ready = p->ready;
}

/* One round of apply: *@again on a conflict (a POST that found the name taken meanwhile, a PATCH
 * whose resourceVersion is no longer the pool's). */
static int pool_apply_once(struct driver_k8s *k, uint64_t epoch, const struct driver_pool_spec *spec,
                           const char *kns, bool *again, struct driver_pool *out, char *errmsg)
{
    char path[512];
    struct k8s_pool p;
    *again = false;
    pool_path(path, sizeof path, kns, spec->name);
    int rv = ext_missing(k, call(k, "GET", path, NULL, errmsg), K8S_POOL_RESOURCE, errmsg);
    if (rv == GERR_NOTFOUND) {
        char coll[512];
        pool_path(coll, sizeof coll, kns, NULL);
        char *doc = k8s_pool_manifest(spec, k->gw, kns, epoch);
        rv = ext_missing(k, call(k, "POST", coll, doc, errmsg), K8S_POOL_RESOURCE, errmsg);
        mem_free(doc);
        *again = rv == GERR_EXISTS; /* made meanwhile (another replica, another gateway): read it */
        if (rv == 0 && (rv = k8s_pool_decode(body(k), k->resp.len, &p, errmsg)) == 0) {
            pool_describe(&p, kns, out);
        }
        return rv;
    }
    if (rv != 0 || (rv = k8s_pool_decode(body(k), k->resp.len, &p, errmsg)) != 0) {
        return rv;
    }
    if (!k8s_pool_ours(&p, k->gw, spec->id)) {
        gerr_set(errmsg,
                 "SandboxWarmPool %s/%s exists and is not this gateway's pool %s (labels %s=%s, %s=%s): not "
                 "touching it",
                 kns, spec->name, spec->id, K8S_LABEL_GATEWAY,
                 p.gateway_id[0] != '\0' ? p.gateway_id : "(none)", K8S_LABEL_POOL,
                 p.pool_id[0] != '\0' ? p.pool_id : "(none)");
        return GERR_EXISTS;
    }
    if (p.replicas == (int64_t)spec->replicas && strcmp(p.template_name, spec->template_name) == 0) {
        pool_describe(&p, kns, out);
        return 0;
    }
    char *doc = k8s_pool_replacement(body(k), k->resp.len, spec, epoch);
    rv = call(k, "PUT", path, doc, errmsg);
    mem_free(doc);
    *again = rv == GERR_ABORTED; /* 409 Conflict: changed since we read it */
    if (rv == 0 && (rv = k8s_pool_decode(body(k), k->resp.len, &p, errmsg)) == 0) {
        pool_describe(&p, kns, out);
    }
    return rv;
}

static int k8s_pool_apply(struct driver *d, uint64_t epoch, const struct driver_pool_spec *spec,
                          struct driver_pool *out, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    char kns[64];
    int rv = pool_namespace(k, spec, kns, errmsg);
    if (rv == 0) {
        rv = fence(k, epoch, errmsg);
    }
    for (int i = 0; rv == 0 && i < CONFLICT_RETRIES; i++) {
        bool again;
        driver_pool_close(out);
        rv = pool_apply_once(k, epoch, spec, kns, &again, out, errmsg);
        if (!again) {
            return rv;
        }
        LOG_INFO("kubernetes driver: warm pool %s/%s changed meanwhile (%s); reading it again", kns,
                 spec->name, errmsg);
        rv = 0;
    }
    if (rv == 0) {
        gerr_set(errmsg, "SandboxWarmPool %s/%s: still conflicting after %d attempts", kns, spec->name,
                 CONFLICT_RETRIES);
        rv = GERR_ABORTED;
    }
    return rv;
}

static int k8s_pool_delete(struct driver *d, uint64_t epoch, const char *kns, const char *name,
                           const char *id, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    char path[512];
    struct k8s_pool p;
    pool_path(path, sizeof path, kns, name);
    int rv = fence(k, epoch, errmsg);
    for (int i = 0; rv == 0 && i < CONFLICT_RETRIES; i++) {
        rv = ext_missing(k, call(k, "GET", path, NULL, errmsg), K8S_POOL_RESOURCE, errmsg);
        if (rv == GERR_NOTFOUND) {
            return 0;
        }
        if (rv != 0 || (rv = k8s_pool_decode(body(k), k->resp.len, &p, errmsg)) != 0) {
            return rv;
        }
        if (!k8s_pool_ours(&p, k->gw, id)) {
            LOG_INFO("kubernetes driver: SandboxWarmPool %s/%s is not this gateway's pool %s: left alone",
                     kns, name, id);
            return 0;
        }
        if (p.deleting) {
            return 0;
        }
        char *opts = k8s_pool_delete_options(p.resource_version);
        rv = call(k, "DELETE", path, opts, errmsg);
        mem_free(opts);
        if (rv == GERR_NOTFOUND) {
            return 0;
        }
        if (rv != GERR_ABORTED) {
            return rv;
        }
        rv = 0; /* 409: changed since we read it; read again */
    }
    if (rv == 0) {
        gerr_set(errmsg, "SandboxWarmPool %s/%s: still conflicting after %d attempts", kns, name,
                 CONFLICT_RETRIES);
        rv = GERR_ABORTED;
    }
    return rv;
}

static int pool_list_in(struct driver_k8s *k, const char *kns, struct driver_pool_list *out, char *errmsg)
{
    char path[600];
    if (kns != NULL) {
        snprintf(path, sizeof path, K8S_EXT_API "/namespaces/%s/" K8S_POOL_RESOURCE "?labelSelector=%s%%3D%s",
                 kns, "gantry.dev%2Fgateway-id", k->gw);
    } else {
        snprintf(path, sizeof path, K8S_EXT_API "/" K8S_POOL_RESOURCE "?labelSelector=%s%%3D%s",
                 "gantry.dev%2Fgateway-id", k->gw);
    }
    int rv = ext_missing(k, call(k, "GET", path, NULL, errmsg), K8S_POOL_RESOURCE, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct k8s_pool *items = mem_zalloc(sizeof *items * POOL_LIST_MAX);
    size_t n = 0;
    rv = k8s_pool_list_decode(body(k), k->resp.len, items, POOL_LIST_MAX, &n, errmsg);
    for (size_t i = 0; rv == 0 && i < n; i++) {
        if (!k8s_pool_ours(&items[i], k->gw, NULL)) {
            continue;
        }
        struct driver_pool *p = mem_realloc(out->items, sizeof *out->items * (out->n + 1));
        out->items = p;
        memset(&out->items[out->n], 0, sizeof out->items[0]);
        pool_describe(&items[i], kns != NULL ? kns : items[i].k8s_namespace, &out->items[out->n++]);
    }
    mem_free(items);
    return rv;
}

static int k8s_pool_list(struct driver *d, uint64_t epoch, struct driver_pool_list *out, char *errmsg)
{
    struct driver_k8s *k = k8s_enter(d, epoch);
    int rv = read_check(k, epoch, errmsg);
    if (rv != 0) {
        return rv;
    }
    switch (k->mode) {
    case DRIVER_K8S_MANAGED:
        rv = pool_list_in(k, NULL, out, errmsg);
        break;
    case DRIVER_K8S_SHARED:
        rv = pool_list_in(k, k->shared_ns, out, errmsg);
        break;
    case DRIVER_K8S_OPERATOR:
    default:
        for (size_t i = 0; rv == 0 && i < k->n_op; i++) {
            if (op_first(k, i)) {
                rv = pool_list_in(k, k->op_to[i], out, errmsg);
            }
        }
        break;
    }
    if (rv != 0) {
        driver_pool_list_close(out);
    }
    return rv;
}

/* ---- Capabilities, statistics, construction */

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
    caps->credentials = true;
    caps->config_keys = k8s_config_keys;
    snprintf(caps->detail, sizeof caps->detail,
             "kubernetes %s as gateway %s, " K8S_SANDBOX_GROUP
             " Sandbox objects (%s), %s namespaces, fence %s/%s, "
             "%s",
             k->server, k->gw, k->version[0] != '\0' ? k->version : "version not discovered yet",
             mode_name(k->mode), k->home_ns, k->fence_name, k->no_watch ? "no watch" : "list+watch cache");
}

void driver_k8s_stats(struct driver *d, struct driver_k8s_stats *out)
{
    struct driver_k8s *k = k8s_of(d);
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&d->mu);
    out->requests = k->requests;
    out->throttled = k->throttled;
    for (size_t i = 0; k->watches != NULL && i < k->n_scopes; i++) {
        struct k8s_watch_stats ws;
        if (k->watches[i] == NULL) {
            continue;
        }
        k8s_watch_stats_get(k->watches[i], &ws);
        out->watch_list_pages += ws.list_pages;
        out->watch_requests += ws.watches;
        out->watch_events += ws.events;
        out->watch_relists += ws.relists;
        out->watch_errors += ws.errors;
    }
    out->cached = k8s_cache_size(k->cache);
    out->live = k8s_cache_live(k->cache, NULL);
    pthread_mutex_unlock(&d->mu);
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l != NULL && (n == SIZE_MAX ? l[i] != NULL : i < n); i++) {
        mem_free(l[i]);
    }
    mem_free(l);
}

void driver_k8s_stop(struct driver *d)
{
    struct driver_k8s *k = k8s_of(d);
    pthread_mutex_lock(&d->mu);
    k->stopping = true;
    pthread_cond_broadcast(&k->wake);
    for (size_t i = 0; k->watches != NULL && i < k->n_scopes; i++) {
        if (k->watches[i] != NULL) {
            k8s_watch_signal(k->watches[i]);
        }
    }
    pthread_mutex_unlock(&d->mu);
}

static void k8s_free(struct driver *d)
{
    struct driver_k8s *k = k8s_of(d);
    stop_watches(k);
    mem_free(k->watches);
    mem_free(k->scopes);
    k8s_cache_free(k->cache);
    k8s_http_free(k->http);
    mem_free(k->gw);
    mem_free(k->shared_ns);
    free_list(k->op_from, k->n_op);
    free_list(k->op_to, k->n_op);
    mem_free(k->home_ns);
    free_list(k->service_accounts, SIZE_MAX);
    free_list(k->pull_secrets, SIZE_MAX);
    mem_free(k->gpu_res);
    mem_free((char *)k->egress.address);
    mem_free((char *)k->egress.pod_selector);
    mem_free(k->server);
    mem_free(k->token_file);
    mem_free(k->ca_file);
    mem_free(k->cert_file);
    mem_free(k->key_file);
    buf_close(&k->resp);
    pthread_cond_destroy(&k->wake);
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
    .update_credentials = k8s_update_credentials,
    .delete_namespace = k8s_delete_ns,
    .logs_open = k8s_logs_open,
    .exec_start = k8s_exec_start,
    .port_connect = k8s_port_connect,
    .pool_apply = k8s_pool_apply,
    .pool_delete = k8s_pool_delete,
    .pool_list = k8s_pool_list,
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

/* A NULL-terminated copy of @list whose entries must satisfy @ok (else GERR_INVAL naming @what). */
static int copy_names(const char *const *list, bool (*ok)(const char *), const char *what, char ***out,
                      char *errmsg)
{
    size_t n = 0;
    while (list != NULL && list[n] != NULL) {
        n++;
    }
    if (n > DRIVER_K8S_ALLOWLIST_MAX) {
        gerr_set(errmsg, "kubernetes %s: at most %u entries", what, DRIVER_K8S_ALLOWLIST_MAX);
        return GERR_INVAL;
    }
    *out = mem_zalloc((n + 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) {
        if (!ok(list[i])) {
            gerr_set(errmsg, "kubernetes %s entry %zu is not a Kubernetes object name (DNS subdomain)", what,
                     i);
            return GERR_INVAL;
        }
        (*out)[i] = mem_strdup(list[i]);
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
    if (cfg->home_namespace != NULL && !driver_is_dns_label(cfg->home_namespace)) {
        gerr_set(errmsg, "kubernetes home_namespace must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (cfg->gpu_resource != NULL && !driver__label_key_ok(cfg->gpu_resource)) {
        gerr_set(errmsg, "kubernetes gpu_resource must be a resource name such as nvidia.com/gpu");
        return GERR_INVAL;
    }
    return 0;
}

/* The gateway's own namespace: configured, else in a cluster the pod's (the service account's
 * namespace file), else "default". */
static int home_namespace(const struct driver_k8s_config *cfg, char out[64], char *errmsg)
{
    if (cfg->home_namespace != NULL) {
        snprintf(out, 64, "%s", cfg->home_namespace);
        return 0;
    }
    if (cfg->server != NULL) {
        snprintf(out, 64, "default");
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    int rv = file_read_all(SA_DIR "/namespace", 256, &text, &len, errmsg);
    while (rv == 0 && len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ')) {
        text[--len] = '\0';
    }
    if (rv != 0 || !driver_is_dns_label(text)) {
        mem_free(text);
        gerr_set(errmsg,
                 "kubernetes: cannot read the pod's namespace from " SA_DIR "/namespace; set home_namespace");
        return GERR_INVAL;
    }
    snprintf(out, 64, "%s", text);
    mem_free(text);
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

static char *dup_opt(const char *s)
{
    return s != NULL ? mem_strdup(s) : NULL;
}

/* The scopes of the list+watch: every namespace (managed), the shared one, or each distinct
 * operator namespace. */
static void make_scopes(struct driver_k8s *k)
{
    size_t n = k->mode == DRIVER_K8S_OPERATOR ? k->n_op : 1;
    k->scopes = mem_zalloc(n * sizeof *k->scopes);
    if (k->mode == DRIVER_K8S_MANAGED) {
        k->scopes[k->n_scopes++] = NULL;
    } else if (k->mode == DRIVER_K8S_SHARED) {
        k->scopes[k->n_scopes++] = k->shared_ns;
    } else {
        for (size_t i = 0; i < k->n_op; i++) {
            if (op_first(k, i)) {
                k->scopes[k->n_scopes++] = k->op_to[i];
            }
        }
    }
    k->cache = k8s_cache_new(k->scopes, k->n_scopes);
    k->watches = mem_zalloc(k->n_scopes * sizeof *k->watches);
}

static bool is_subdomain(const char *s)
{
    return driver_is_dns_subdomain(s);
}

int driver_k8s_lookup_ip(struct driver *d, const char *ip, struct driver_k8s_pod *out)
{
    struct driver_k8s *k = k8s_of(d);
    struct k8s_sandbox s;
    memset(out, 0, sizeof *out);
    if (k->cache == NULL || !k8s_cache_live(k->cache, NULL)) {
        return GERR_UNAVAILABLE;
    }
    if (!k8s_cache_find_pod_ip(k->cache, ip, &s)) {
        return GERR_NOTFOUND;
    }
    int rv = GERR_NOTFOUND;
    if (k8s_sandbox_belongs(&s.meta, k->gw)) {
        snprintf(out->ns, sizeof out->ns, "%s", s.meta.gantry_ns);
        snprintf(out->name, sizeof out->name, "%s", s.meta.gantry_name);
        snprintf(out->id, sizeof out->id, "%s", s.meta.sandbox_id);
        snprintf(out->owner, sizeof out->owner, "%s", s.owner);
        rv = 0;
    }
    k8s_sandbox_close(&s);
    return rv;
}

int driver_k8s_start_cache(struct driver *d, char *errmsg)
{
    struct driver_k8s *k = k8s_of(d);
    if (k->no_watch) {
        gerr_set(errmsg, "the kubernetes driver runs without its list+watch cache (no_watch)");
        return GERR_UNAVAILABLE;
    }
    pthread_mutex_lock(&k->base.mu);
    int rv = sandbox_api(k, errmsg); /* discovers the version once, then starts the watches */
    pthread_mutex_unlock(&k->base.mu);
    return rv;
}

int driver_k8s_ready_ids(struct driver *d, char (**ids)[40], size_t *n)
{
    struct driver_k8s *k = k8s_of(d);
    struct k8s_sandbox *items = NULL;
    size_t count = 0, cap = 0;
    *ids = NULL;
    *n = 0;
    if (!k8s_cache_snapshot(k->cache, NULL, NULL, &items, &count, &cap)) {
        mem_free(items);
        return GERR_UNAVAILABLE;
    }
    *ids = mem_zalloc((count + 1) * sizeof **ids);
    for (size_t i = 0; i < count; i++) {
        if (items[i].phase == DRIVER_PHASE_READY && k8s_sandbox_belongs(&items[i].meta, k->gw)) {
            snprintf((*ids)[(*n)++], 40, "%s", items[i].meta.sandbox_id);
        }
        k8s_sandbox_close(&items[i]);
    }
    mem_free(items);
    return 0;
}

int driver_k8s_new(const struct driver_k8s_config *cfg, struct driver **out, char *errmsg)
{
    struct k8s_http_config hc;
    char server[300], home[64];
    int rv;
    *out = NULL;
    if ((rv = check_config(cfg, errmsg)) != 0 ||
        (rv = connection(cfg, &hc, server, sizeof server, errmsg)) != 0 ||
        (rv = home_namespace(cfg, home, errmsg)) != 0) {
        return rv;
    }
    struct driver_k8s *k = mem_zalloc(sizeof *k);
    driver__init(&k->base, &k8s_ops);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->wake, &ca);
    pthread_condattr_destroy(&ca);
    buf_init(&k->resp);
    k->gw = mem_strdup(cfg->gateway_id);
    k->mode = cfg->mode;
    k->server = mem_strdup(hc.server);
    k->token_file = dup_opt(hc.token_file);
    k->ca_file = dup_opt(hc.ca_file);
    k->cert_file = dup_opt(hc.client_cert_file);
    k->key_file = dup_opt(hc.client_key_file);
    k->hc = hc;
    k->hc.server = k->server;
    k->hc.token_file = k->token_file;
    k->hc.ca_file = k->ca_file;
    k->hc.client_cert_file = k->cert_file;
    k->hc.client_key_file = k->key_file;
    k->gpu_res = mem_strdup(cfg->gpu_resource != NULL ? cfg->gpu_resource : DEFAULT_GPU);
    k->home_ns = mem_strdup(home);
    k->egress.address = dup_opt(cfg->egress.address);
    k->egress.pod_selector = dup_opt(cfg->egress.pod_selector);
    k->egress.home_namespace = k->home_ns;
    k->egress.port = cfg->egress.port;
    if ((rv = k8s_egress_relay_check(&k->egress, errmsg)) != 0) {
        goto err_after_alloc;
    }
    k->watch_timeout_s = cfg->watch_timeout_s;
    k->no_watch = cfg->no_watch;
    snprintf(k->fence_name, sizeof k->fence_name, "gantry-fence-%s", cfg->gateway_id);
    if (cfg->mode == DRIVER_K8S_SHARED) {
        k->shared_ns = mem_strdup(cfg->shared_namespace);
    }
    if ((cfg->mode == DRIVER_K8S_OPERATOR &&
         (rv = parse_allowlist(k, cfg->operator_namespaces, errmsg)) != 0) ||
        (rv = copy_names(cfg->service_accounts, is_subdomain, "service_accounts", &k->service_accounts,
                         errmsg)) != 0 ||
        (rv = copy_names(cfg->image_pull_secrets, is_subdomain, "image_pull_secrets", &k->pull_secrets,
                         errmsg)) != 0) {
        goto err_after_alloc;
    }
    if (k->shared_ns != NULL && strcmp(k->shared_ns, k->home_ns) == 0) {
        gerr_set(
            errmsg,
            "kubernetes shared_namespace %s is the gateway's own namespace: sandbox pods there could mount "
            "the gateway's Secrets; use a namespace of their own",
            k->shared_ns);
        rv = GERR_INVAL;
        goto err_after_alloc;
    }
    for (size_t i = 0; i < k->n_op; i++) {
        if (strcmp(k->op_to[i], k->home_ns) == 0) {
            gerr_set(
                errmsg,
                "kubernetes operator allowlist entry %s is the gateway's own namespace: sandbox pods there "
                "could mount the gateway's Secrets",
                k->op_to[i]);
            rv = GERR_INVAL;
            goto err_after_alloc;
        }
    }
    make_scopes(k);
    if ((rv = k8s_http_new(&hc, &k->http, errmsg)) != 0) {
        goto err_after_alloc;
    }
    *out = &k->base;
    return 0;

err_after_alloc:
    k8s_free(&k->base);
    return rv;
}
