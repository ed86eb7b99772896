/* SandboxClaim, SandboxWarmPool: the JSON of claim allocation (see k8s_claims.h). */
#include "drivers/k8s_claims.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/k8s_json.h"
#include "drivers/driver_internal.h"
#include "lib/mem.h"

#define CLAIM_BODY_MAX (4u * 1024u * 1024u)

/* Keys that shape the pod: the template decides them for a claimed sandbox. */
static const char *const pod_keys[] = {"runtime_class",   "node_selector", "tolerations",
                                       "service_account", "resources",     NULL};

int k8s_allocation_of(const struct driver_sandbox_spec *spec, struct k8s_allocation *out, char *errmsg)
{
    const struct driver_kv *kv = spec->driver_config;
    size_t n = spec->n_driver_config;
    const char *alloc = driver_kv_get(kv, n, "allocation");
    memset(out, 0, sizeof *out);
    out->template_name = driver_kv_get(kv, n, "template");
    out->warm_pool = driver_kv_get(kv, n, "warm_pool");
    if (alloc != NULL && strcmp(alloc, "sandbox") != 0 && strcmp(alloc, "claim") != 0) {
        gerr_set(errmsg, "driver_config allocation must be \"sandbox\" or \"claim\"");
        return GERR_INVAL;
    }
    out->claim = alloc != NULL && strcmp(alloc, "claim") == 0;
    const char *names[2] = {out->template_name, out->warm_pool};
    const char *keys[2] = {"template", "warm_pool"};
    for (int i = 0; i < 2; i++) {
        if (names[i] != NULL && !driver_is_dns_subdomain(names[i])) {
            gerr_set(errmsg, "driver_config %s must be a DNS subdomain (a %s name)", keys[i],
                     i == 0 ? "SandboxTemplate" : "SandboxWarmPool");
            return GERR_INVAL;
        }
        if (names[i] != NULL && !out->claim) {
            gerr_set(errmsg, "driver_config %s needs allocation \"claim\"", keys[i]);
            return GERR_INVAL;
        }
    }
    if (!out->claim) {
        return 0;
    }
    if ((out->template_name == NULL) == (out->warm_pool == NULL)) {
        gerr_set(errmsg, "driver_config allocation \"claim\" needs exactly one of template and warm_pool");
        return GERR_INVAL;
    }
    for (size_t i = 0; pod_keys[i] != NULL; i++) {
        if (driver_kv_get(kv, n, pod_keys[i]) != NULL) {
            gerr_set(
                errmsg,
                "driver_config %s cannot be given with allocation \"claim\": the SandboxTemplate decides "
                "the pod",
                pod_keys[i]);
            return GERR_INVAL;
        }
    }
    if (spec->gpu_count > 0) {
        gerr_set(errmsg,
                 "gpu_count cannot be given with allocation \"claim\": the SandboxTemplate decides the pod");
        return GERR_INVAL;
    }
    return 0;
}

static json_t *load(const char *text, size_t len, char *errmsg)
{
    json_error_t jerr;
    if (len > CLAIM_BODY_MAX) {
        gerr_set(errmsg, "response of %zu bytes is larger than %u", len, CLAIM_BODY_MAX);
        return NULL;
    }
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        gerr_set(errmsg, "response is not a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A string member without NUL of at most @max bytes, or NULL. */
static const char *str_of(json_t *o, const char *key, size_t max)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_string(j) || json_string_length(j) > max ||
        strlen(json_string_value(j)) != json_string_length(j)) {
        return NULL;
    }
    return json_string_value(j);
}

/* @s with every byte outside printable ASCII as '?', cut to @len. */
static void printable(char *out, size_t len, const char *s)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[i] = '\0';
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int claim_from(json_t *o, struct k8s_claim *out, char *errmsg)
{
    json_t *md = json_object_get(o, "metadata");
    json_t *labels = json_object_get(md, "labels");
    json_t *status = json_object_get(o, "status");
    memset(out, 0, sizeof *out);
    const char *name = str_of(md, "name", 253);
    if (name == NULL || name[0] == '\0') {
        gerr_set(errmsg, "SandboxClaim without a name");
        return GERR_PROTO;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    const char *uid = str_of(md, "uid", sizeof out->uid - 1);
    const char *gw = str_of(labels, K8S_LABEL_GATEWAY, 63);
    const char *id = str_of(labels, K8S_LABEL_SANDBOX, 63);
    snprintf(out->uid, sizeof out->uid, "%s", uid != NULL ? uid : "");
    snprintf(out->gateway_id, sizeof out->gateway_id, "%s", gw != NULL ? gw : "");
    if (id != NULL && strlen(id) == 36) {
        snprintf(out->sandbox_id, sizeof out->sandbox_id, "%s", id);
    }
    json_t *del = json_object_get(md, "deletionTimestamp");
    out->deleting = del != NULL && !json_is_null(del);
    const char *bound = str_of(json_object_get(status, "sandbox"), "name", 253);
    if (bound != NULL && driver_is_dns_subdomain(bound)) {
        snprintf(out->bound, sizeof out->bound, "%s", bound);
    }
    json_t *conds = json_object_get(status, "conditions");
    for (size_t i = 0; i < json_array_size(conds) && i < 64; i++) {
        json_t *c = json_array_get(conds, i);
        const char *type = str_of(c, "type", 316);
        if (type == NULL || strcmp(type, "Ready") != 0) {
            continue;
        }
        const char *st = str_of(c, "status", 16), *reason = str_of(c, "reason", 1024);
        const char *msg = str_of(c, "message", 32768);
        char text[K8S_CLAIM_MESSAGE_MAX];
        snprintf(text, sizeof text, "%s%s%s", reason != NULL ? reason : "",
                 reason != NULL && msg != NULL && msg[0] != '\0' ? ": " : "", msg != NULL ? msg : "");
        printable(out->message, sizeof out->message, text);
        out->failed = out->bound[0] == '\0' && st != NULL && strcmp(st, "False") == 0 && reason != NULL &&
                      ends_with(reason, "NotFound");
        break;
    }
    return 0;
}

int k8s_claim_decode(const char *text, size_t len, struct k8s_claim *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    json_t *o = load(text, len, errmsg);
    if (o == NULL) {
        return GERR_PROTO;
    }
    int rv = claim_from(o, out, errmsg);
    json_decref(o);
    return rv;
}

int k8s_claim_list_decode(const char *text, size_t len, struct k8s_claim *out, size_t max, size_t *n,
                          char *errmsg)
{
    *n = 0;
    json_t *o = load(text, len, errmsg);
    if (o == NULL) {
        return GERR_PROTO;
    }
    json_t *items = json_object_get(o, "items");
    int rv = json_is_array(items) || json_is_null(items) || items == NULL ? 0 : GERR_PROTO;
    if (rv != 0) {
        gerr_set(errmsg, "SandboxClaimList without an items array");
    }
    for (size_t i = 0; rv == 0 && i < json_array_size(items) && *n < max; i++) {
        if ((rv = claim_from(json_array_get(items, i), &out[*n], errmsg)) == 0) {
            (*n)++;
        }
    }
    json_decref(o);
    return rv;
}

int k8s_pool_template(const char *text, size_t len, char out[254], char *errmsg)
{
    json_t *o = load(text, len, errmsg);
    if (o == NULL) {
        return GERR_PROTO;
    }
    const char *t = str_of(json_object_get(json_object_get(o, "spec"), "sandboxTemplateRef"), "name", 253);
    int rv = t != NULL && driver_is_dns_subdomain(t) ? 0 : GERR_PROTO;
    if (rv == 0) {
        snprintf(out, 254, "%s", t);
    } else {
        gerr_set(errmsg, "SandboxWarmPool without spec.sandboxTemplateRef.name");
    }
    json_decref(o);
    return rv;
}

/* The labels of a claim or a claimed Sandbox: the driver's own, OpenShell's and the spec's. */
static json_t *labels_of(const struct driver_sandbox_spec *s, const char *gateway_id)
{
    json_t *l = json_object();
    for (size_t i = 0; i < s->n_labels; i++) {
        json_object_set_new(l, s->labels[i].key, json_string(s->labels[i].value));
    }
    json_object_set_new(l, K8S_LABEL_GATEWAY, json_string(gateway_id));
    json_object_set_new(l, K8S_LABEL_MANAGED, json_string(K8S_MANAGED_BY));
    json_object_set_new(l, K8S_LABEL_SANDBOX, json_string(s->id));
    json_object_set_new(l, K8S_LABEL_NAMESPACE, json_string(s->namespace));
    json_object_set_new(l, K8S_LABEL_NAME, json_string(s->name));
    json_object_set_new(l, OS_LABEL_MANAGED, json_string(OS_MANAGED_BY));
    json_object_set_new(l, OS_LABEL_GATEWAY, json_string(gateway_id));
    json_object_set_new(l, OS_LABEL_SANDBOX, json_string(s->id));
    json_object_set_new(l, OS_LABEL_NAME, json_string(s->name));
    json_object_set_new(l, OS_LABEL_NAMESPACE, json_string(s->namespace));
    return l;
}

static json_t *annotations_of(const struct driver_sandbox_spec *s, uint64_t epoch)
{
    char e[24];
    snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
    json_t *a = json_pack("{s:s}", K8S_ANN_EPOCH, e);
    if (s->owner != NULL && s->owner[0] != '\0') {
        json_object_set_new(a, K8S_ANN_OWNER, json_string(s->owner));
    }
    return a;
}

static char *dump(json_t *j)
{
    char *t = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char *out = t != NULL ? mem_strdup(t) : NULL;
    free(t);
    return out;
}

char *k8s_claim_manifest(const struct driver_sandbox_spec *spec, const char *gateway_id,
                         const char *k8s_namespace, const char *object_name, uint64_t epoch,
                         const char *template_name, const char *warm_pool)
{
    return dump(json_pack("{s:s,s:s,s:{s:s,s:s,s:o,s:o},s:{s:{s:s},s:s}}", "apiVersion",
                          K8S_EXT_GROUP "/" K8S_EXT_VERSION, "kind", K8S_CLAIM_KIND, "metadata", "name",
                          object_name, "namespace", k8s_namespace, "labels", labels_of(spec, gateway_id),
                          "annotations", annotations_of(spec, epoch), "spec", "sandboxTemplateRef", "name",
                          template_name, "warmpool", warm_pool != NULL ? warm_pool : "none"));
}

char *k8s_claimed_patch(const struct driver_sandbox_spec *spec, const char *gateway_id, uint64_t epoch,
                        const char *claim_name, const char *resource_version)
{
    json_t *ann = annotations_of(spec, epoch);
    json_object_set_new(ann, K8S_ANN_CLAIM, json_string(claim_name));
    return dump(json_pack("{s:{s:s,s:o,s:o}}", "metadata", "resourceVersion", resource_version, "labels",
                          labels_of(spec, gateway_id), "annotations", ann));
}

char *k8s_claim_delete_options(const char *uid)
{
    return dump(json_pack("{s:s,s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "DeleteOptions",
                          "propagationPolicy", "Background", "preconditions", "uid", uid));
}
