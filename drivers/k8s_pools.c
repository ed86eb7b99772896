/* SandboxWarmPool objects of Gantry's WarmPools (see k8s_pools.h). */
#include "drivers/k8s_pools.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_claims.h"
#include "drivers/k8s_json.h"
#include "lib/mem.h"

#define POOL_BODY_MAX (8u * 1024u * 1024u)

static json_t *load(const char *text, size_t len, char *errmsg)
{
    json_error_t jerr;
    if (len > POOL_BODY_MAX) {
        gerr_set(errmsg, "response of %zu bytes is larger than %u", len, POOL_BODY_MAX);
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

static void copy(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s != NULL && strlen(s) < len ? s : "");
}

static int pool_from(json_t *o, struct k8s_pool *out, char *errmsg)
{
    json_t *md = json_object_get(o, "metadata");
    json_t *labels = json_object_get(md, "labels");
    json_t *spec = json_object_get(o, "spec");
    memset(out, 0, sizeof *out);
    const char *name = str_of(md, "name", 253);
    if (name == NULL || name[0] == '\0') {
        gerr_set(errmsg, "SandboxWarmPool without a name");
        return GERR_PROTO;
    }
    copy(out->name, sizeof out->name, name);
    copy(out->k8s_namespace, sizeof out->k8s_namespace, str_of(md, "namespace", 63));
    copy(out->resource_version, sizeof out->resource_version, str_of(md, "resourceVersion", 63));
    copy(out->gateway_id, sizeof out->gateway_id, str_of(labels, K8S_LABEL_GATEWAY, 63));
    copy(out->gantry_ns, sizeof out->gantry_ns, str_of(labels, K8S_LABEL_NAMESPACE, 63));
    const char *id = str_of(labels, K8S_LABEL_POOL, 63);
    if (id != NULL && driver_is_uuid(id)) {
        copy(out->pool_id, sizeof out->pool_id, id);
    }
    copy(out->template_name, sizeof out->template_name,
         str_of(json_object_get(spec, "sandboxTemplateRef"), "name", 253));
    json_t *r = json_object_get(spec, "replicas");
    out->replicas = json_is_integer(r) ? (int64_t)json_integer_value(r) : -1;
    json_t *ready = json_object_get(json_object_get(o, "status"), "readyReplicas");
    json_int_t rn = json_is_integer(ready) ? json_integer_value(ready) : 0;
    out->ready = rn < 0                                      ? 0
                 : rn > (json_int_t)DRIVER_POOL_REPLICAS_MAX ? DRIVER_POOL_REPLICAS_MAX
                                                             : (uint32_t)rn;
    json_t *del = json_object_get(md, "deletionTimestamp");
    out->deleting = del != NULL && !json_is_null(del);
    return 0;
}

int k8s_pool_decode(const char *text, size_t len, struct k8s_pool *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    json_t *o = load(text, len, errmsg);
    if (o == NULL) {
        return GERR_PROTO;
    }
    int rv = pool_from(o, out, errmsg);
    json_decref(o);
    return rv;
}

int k8s_pool_list_decode(const char *text, size_t len, struct k8s_pool *out, size_t max, size_t *n,
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
        gerr_set(errmsg, "SandboxWarmPoolList without an items array");
    }
    for (size_t i = 0; rv == 0 && i < json_array_size(items) && *n < max; i++) {
        if ((rv = pool_from(json_array_get(items, i), &out[*n], errmsg)) == 0) {
            (*n)++;
        }
    }
    json_decref(o);
    return rv;
}

bool k8s_pool_ours(const struct k8s_pool *p, const char *gateway_id, const char *pool_id)
{
    return p->gateway_id[0] != '\0' && strcmp(p->gateway_id, gateway_id) == 0 && p->pool_id[0] != '\0' &&
           (pool_id == NULL || strcmp(p->pool_id, pool_id) == 0);
}

static char *dump(json_t *j)
{
    char *t = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char *out = t != NULL ? mem_strdup(t) : NULL;
    free(t);
    return out;
}

static json_t *epoch_ann(uint64_t epoch)
{
    char e[24];
    snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
    return json_pack("{s:s}", K8S_ANN_EPOCH, e);
}

char *k8s_pool_manifest(const struct driver_pool_spec *spec, const char *gateway_id,
                        const char *k8s_namespace, uint64_t epoch)
{
    json_t *labels =
        json_pack("{s:s,s:s,s:s,s:s,s:s}", K8S_LABEL_GATEWAY, gateway_id, K8S_LABEL_MANAGED, K8S_MANAGED_BY,
                  K8S_LABEL_NAMESPACE, spec->namespace, K8S_LABEL_NAME, spec->name, K8S_LABEL_POOL, spec->id);
    return dump(json_pack("{s:s,s:s,s:{s:s,s:s,s:o,s:o},s:{s:I,s:{s:s}}}", "apiVersion",
                          K8S_EXT_GROUP "/" K8S_EXT_VERSION, "kind", K8S_POOL_KIND, "metadata", "name",
                          spec->name, "namespace", k8s_namespace, "labels", labels, "annotations",
                          epoch_ann(epoch), "spec", "replicas", (json_int_t)spec->replicas,
                          "sandboxTemplateRef", "name", spec->template_name));
}

char *k8s_pool_replacement(const char *text, size_t len, const struct driver_pool_spec *spec, uint64_t epoch)
{
    char err[GERR_MSG_SIZE];
    json_t *o = load(text, len, err);
    json_t *md = json_object_get(o, "metadata");
    if (o == NULL || !json_is_object(md) || !json_is_string(json_object_get(md, "resourceVersion"))) {
        json_decref(o);
        return NULL;
    }
    json_t *ann = json_object_get(md, "annotations");
    if (!json_is_object(ann)) {
        ann = json_object();
        json_object_set_new(md, "annotations", ann);
    }
    json_t *e = epoch_ann(epoch);
    json_object_update(ann, e);
    json_decref(e);
    json_t *sp = json_object_get(o, "spec");
    if (!json_is_object(sp)) {
        sp = json_object();
        json_object_set_new(o, "spec", sp);
    }
    json_object_set_new(sp, "replicas", json_integer((json_int_t)spec->replicas));
    json_object_set_new(sp, "sandboxTemplateRef", json_pack("{s:s}", "name", spec->template_name));
    json_object_del(o, "status");
    return dump(o);
}

char *k8s_pool_delete_options(const char *resource_version)
{
    return dump(json_pack("{s:s,s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "DeleteOptions",
                          "propagationPolicy", "Background", "preconditions", "resourceVersion",
                          resource_version));
}
