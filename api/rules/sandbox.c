/* Decisions about a sandbox to create (api/rules/sandbox.h). */
#include "api/rules/sandbox.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/rules/labels.h"
#include "api/rules/policy.h"
#include "lib/err.h"
#include "lib/names.h"

static bool env_key_ok(const char *k)
{
    if (!(isalpha((unsigned char)k[0]) || k[0] == '_')) {
        return false;
    }
    for (const char *p = k; *p != '\0'; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '_')) {
            return false;
        }
    }
    return strlen(k) <= 128;
}

static bool refuse(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool refuse(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return false;
}

static bool placement_shapes_ok(const char *value, char *why, size_t len);

/* Does a "kubernetes" driver_config value ask for allocation "claim" (drivers/k8s_claims.h)? */
static bool claim_allocation(const char *value)
{
    json_t *o = json_loads(value, 0, NULL);
    const char *a = json_string_value(json_object_get(o, "allocation"));
    bool claim = a != NULL && strcmp(a, "claim") == 0;
    json_decref(o);
    return claim;
}

bool sandbox_rules_validate(const Gantry__V1__Sandbox *sb, char *why, size_t len)
{
    char reason[160], err[GERR_MSG_SIZE];
    const Gantry__V1__SandboxSpec *s = sb->spec;
    why[0] = '\0';
    if (!names_dns_label_ok(sb->meta->name, 63, reason, sizeof reason)) {
        return refuse(why, len, "sandbox.meta.name %s", reason);
    }
    if (labels_check(sb->meta->labels, sb->meta->n_labels, "sandbox.meta.labels", err) != 0) {
        return refuse(why, len, "%s", err);
    }
    if (s == NULL || s->image[0] == '\0' || strlen(s->image) > 512 || strpbrk(s->image, " \t\n") != NULL) {
        return refuse(why, len, "sandbox.spec.image is required (at most 512 bytes, no spaces)");
    }
    if (s->n_command > 256) {
        return refuse(why, len, "sandbox.spec.command has at most 256 arguments");
    }
    for (size_t i = 0; i < s->n_command; i++) {
        if (strlen(s->command[i]) > 8192) {
            return refuse(why, len, "sandbox.spec.command[%zu] is over 8192 bytes", i);
        }
    }
    if (s->n_env > 256) {
        return refuse(why, len, "sandbox.spec.env has at most 256 variables");
    }
    for (size_t i = 0; i < s->n_env; i++) {
        if (!env_key_ok(s->env[i]->key) || strlen(s->env[i]->value) > 32768) {
            return refuse(
                why, len,
                "sandbox.spec.env: variable %zu needs a name of letters, digits and '_' (not starting "
                "with a digit) and a value of at most 32 KiB",
                i);
        }
    }
    if (s->gpu_count > SANDBOX_MAX_GPUS) {
        return refuse(why, len, "sandbox.spec.gpu_count is at most %u", SANDBOX_MAX_GPUS);
    }
    if (s->lifetime_seconds > SANDBOX_MAX_LIFETIME_S) {
        return refuse(why, len, "sandbox.spec.lifetime_seconds is at most %llu (30 days)",
                      (unsigned long long)SANDBOX_MAX_LIFETIME_S);
    }
    if (s->n_providers > 32) {
        return refuse(why, len, "sandbox.spec.providers has at most 32 entries");
    }
    for (size_t i = 0; i < s->n_driver_config; i++) {
        json_t *o = json_loads(s->driver_config[i]->value, 0, NULL);
        bool ok = json_is_object(o) && strlen(s->driver_config[i]->value) <= 65536;
        json_decref(o);
        if (!ok || !names_dns_label_ok(s->driver_config[i]->key, 63, reason, sizeof reason)) {
            return refuse(
                why, len,
                "sandbox.spec.driver_config: the entry for driver %zu must be a driver name with a JSON "
                "object (at most 64 KiB)",
                i);
        }
        char sa[AUTHZ_SA_NAME_MAX + 1];
        if (policy_rules_sa_of(s->driver_config[i]->value, sa, sizeof sa) != 0) {
            return refuse(why, len,
                          "sandbox.spec.driver_config[\"%s\"].service_account must be a ServiceAccount name "
                          "(a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')",
                          s->driver_config[i]->key);
        }
        if (strcmp(s->driver_config[i]->key, "kubernetes") == 0 &&
            !placement_shapes_ok(s->driver_config[i]->value, why, len)) {
            return false;
        }
        if (strcmp(s->driver_config[i]->key, "kubernetes") == 0 && s->n_providers > 0 &&
            claim_allocation(s->driver_config[i]->value)) {
            return refuse(
                why, len,
                "sandbox.spec.providers cannot be combined with driver_config[\"kubernetes\"].allocation "
                "\"claim\": the SandboxTemplate's pod does not mount credentials");
        }
    }
    return true;
}

/* The placement members of the "kubernetes" driver_config entry that only a trusted caller may set:
 * a platform_admin, or a delegated caller within its scope (issue 21). */
static const char *const placement_keys[] = {"namespace",  "runtime_class", "tolerations", "node_selector",
                                             "allocation", "warm_pool",     "template",    NULL};

/* The first placement member of @s's "kubernetes" entry: true with its name in *@key and its value
 * (a string member's text, else compact JSON, cut to fit) in @val. */
static bool placement_chosen(const Gantry__V1__SandboxSpec *s, const char **key, char *val, size_t len)
{
    for (size_t i = 0; i < s->n_driver_config; i++) {
        if (strcmp(s->driver_config[i]->key, "kubernetes") != 0) {
            continue;
        }
        json_t *o = json_loads(s->driver_config[i]->value, 0, NULL);
        for (size_t k = 0; placement_keys[k] != NULL; k++) {
            json_t *v = json_object_get(o, placement_keys[k]);
            if (v != NULL) {
                char *d = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT);
                snprintf(val, len, "%s", d != NULL ? d : json_string_value(v));
                free(d);
                *key = placement_keys[k];
                json_decref(o);
                return true;
            }
        }
        json_decref(o);
    }
    return false;
}

/* A string member @key of the JSON object @value: its text, or NULL (absent or not a string). */
static const char *member_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* At most this many node selector pairs and tolerations (the kubernetes driver's limit). */
#define NODE_PLACEMENT_MAX 32u

/* A "node_selector" value (the kubernetes driver's encoding, drivers/k8s_json.h: a string
 * "key=value[,key=value...]", at most NODE_PLACEMENT_MAX pairs in Kubernetes label syntax). With @sc
 * NULL: is it well formed (false with @why when not)? With @sc: is every pair also one of @sc's
 * allowed_node_selectors (false with @why naming the first that is not)? */
static bool node_selector_ok(json_t *v, const struct authz_scope *sc, char *why, size_t len)
{
    const char *p = json_string_value(v);
    for (unsigned n = 1; p != NULL; n++) {
        const char *end = strchr(p, ','), *eq;
        if (end == NULL) {
            end = p + strlen(p);
        }
        eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL || n > NODE_PLACEMENT_MAX || !authz_label_key_ok(p, (size_t)(eq - p)) ||
            !authz_label_value_ok(eq + 1, (size_t)(end - eq - 1))) {
            break;
        }
        if (sc != NULL) {
            char key[AUTHZ_SA_NAME_MAX + 80], val[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            snprintf(val, sizeof val, "%.*s", (int)(end - eq - 1), eq + 1);
            if (!authz_scope_allows_node_selector(sc, key, val)) {
                return refuse(
                    why, len,
                    "driver_config kubernetes.node_selector \"%.120s=%s\" is outside the delegation "
                    "scope (allowed_node_selectors%s)",
                    key, val, sc->n_node_selectors == 0 ? " is empty: none" : "");
            }
        }
        if (*end == '\0') {
            return true;
        }
        p = end + 1;
    }
    return refuse(why, len,
                  "sandbox.spec.driver_config[\"kubernetes\"].node_selector must be a string of key=value "
                  "pairs separated by commas (at most %u, Kubernetes label syntax: e.g. "
                  "\"pool=gpu,zone=eu-1\")",
                  NODE_PLACEMENT_MAX);
}

/* One toleration object: members key ("" or a label key), operator (Exists, Equal), value (a label
 * value), effect (a taint effect), tolerationSeconds (an integer), nothing else (the kubernetes
 * driver's check, drivers/k8s_json.h). Fills @t. */
static bool toleration_shape_ok(json_t *o, struct authz_toleration *t)
{
    const char *key;
    json_t *m;
    *t = (struct authz_toleration){0};
    if (!json_is_object(o)) {
        return false;
    }
    json_object_foreach(o, key, m)
    {
        const char *s = json_string_value(m);
        bool ok = false;
        if (strcmp(key, "key") == 0 && s != NULL) {
            ok = s[0] == '\0' || authz_label_key_ok(s, strlen(s));
            t->key = s;
        } else if (strcmp(key, "operator") == 0 && s != NULL) {
            ok = strcmp(s, "Exists") == 0 || strcmp(s, "Equal") == 0;
            t->op = s;
        } else if (strcmp(key, "value") == 0 && s != NULL) {
            ok = authz_label_value_ok(s, strlen(s));
            t->value = s;
        } else if (strcmp(key, "effect") == 0 && s != NULL) {
            ok = authz_toleration_effect_ok(s);
            t->effect = s;
        } else if (strcmp(key, "tolerationSeconds") == 0) {
            ok = json_is_integer(m);
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* A "tolerations" value: a JSON array of at most NODE_PLACEMENT_MAX toleration objects
 * (toleration_shape_ok), or a string holding one (the driver's encoding). With @sc NULL: is it well
 * formed (false with @why when not)? With @sc: is every toleration also allowed by one of @sc's
 * allowed_tolerations (false with @why naming the first that is not, its key and value)? */
static bool tolerations_ok(json_t *v, const struct authz_scope *sc, char *why, size_t len)
{
    json_t *loaded =
        json_is_string(v) ? json_loads(json_string_value(v), JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *arr = json_is_string(v) ? loaded : v;
    bool ok = json_is_array(arr) && json_array_size(arr) <= NODE_PLACEMENT_MAX;
    for (size_t i = 0; ok && i < json_array_size(arr); i++) {
        struct authz_toleration t;
        if (!toleration_shape_ok(json_array_get(arr, i), &t)) {
            ok = refuse(why, len,
                        "sandbox.spec.driver_config[\"kubernetes\"].tolerations[%zu] must be an object with "
                        "key, operator (Exists|Equal), value, effect (NoSchedule|PreferNoSchedule|NoExecute) "
                        "and tolerationSeconds only, in Kubernetes label syntax",
                        i);
            json_decref(loaded);
            return false;
        }
        if (sc != NULL && !authz_scope_allows_toleration(sc, &t)) {
            refuse(why, len,
                   "driver_config kubernetes.tolerations entry %zu (key \"%.120s\", operator %s, value "
                   "\"%s\", effect \"%s\") is outside the delegation scope (allowed_tolerations%s)",
                   i, t.key != NULL ? t.key : "", t.op != NULL ? t.op : "Equal",
                   t.value != NULL ? t.value : "", t.effect != NULL ? t.effect : "",
                   sc->n_tolerations == 0 ? " is empty: none" : "");
            json_decref(loaded);
            return false;
        }
    }
    json_decref(loaded);
    if (!ok) {
        return refuse(
            why, len,
            "sandbox.spec.driver_config[\"kubernetes\"].tolerations must be a JSON array of at most %u "
            "toleration objects",
            NODE_PLACEMENT_MAX);
    }
    return true;
}

/* The shapes of the "kubernetes" placement values the API checks itself (before any scope, so a
 * malformed one is INVALID_ARGUMENT for everyone): namespace a DNS-1123 label, runtime_class a
 * DNS-1123 subdomain, allocation, warm_pool and template, node_selector and tolerations in the
 * kubernetes driver's encodings (the driver checks them again when it validates the spec). */
static bool placement_shapes_ok(const char *value, char *why, size_t len)
{
    json_t *o = json_loads(value, 0, NULL);
    json_t *ns = json_object_get(o, "namespace"), *rc = json_object_get(o, "runtime_class");
    json_t *alloc = json_object_get(o, "allocation"), *wp = json_object_get(o, "warm_pool"),
           *tpl = json_object_get(o, "template");
    char reason[160];
    bool ok = true;
    if (ns != NULL &&
        (!json_is_string(ns) || !names_dns_label_ok(json_string_value(ns), 63, reason, sizeof reason))) {
        ok = refuse(
            why, len,
            "sandbox.spec.driver_config[\"kubernetes\"].namespace must be a Kubernetes namespace name (a "
            "DNS-1123 label: at most 63 characters of a-z, 0-9 and '-')");
    } else if (rc != NULL && (!json_is_string(rc) || !authz_sa_name_ok(json_string_value(rc)))) {
        ok = refuse(why, len,
                    "sandbox.spec.driver_config[\"kubernetes\"].runtime_class must be a RuntimeClass name (a "
                    "DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')");
    } else if (alloc != NULL &&
               (!json_is_string(alloc) || (strcmp(json_string_value(alloc), "sandbox") != 0 &&
                                           strcmp(json_string_value(alloc), "claim") != 0))) {
        ok = refuse(why, len,
                    "sandbox.spec.driver_config[\"kubernetes\"].allocation must be \"sandbox\" or \"claim\"");
    } else if (wp != NULL && (!json_is_string(wp) || !authz_sa_name_ok(json_string_value(wp)))) {
        ok = refuse(why, len,
                    "sandbox.spec.driver_config[\"kubernetes\"].warm_pool must be a SandboxWarmPool name (a "
                    "DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')");
    } else if (tpl != NULL && (!json_is_string(tpl) || !authz_sa_name_ok(json_string_value(tpl)))) {
        ok = refuse(why, len,
                    "sandbox.spec.driver_config[\"kubernetes\"].template must be a SandboxTemplate name (a "
                    "DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')");
    } else if (json_object_get(o, "node_selector") != NULL) {
        ok = node_selector_ok(json_object_get(o, "node_selector"), NULL, why, len);
    }
    if (ok && json_object_get(o, "tolerations") != NULL) {
        ok = tolerations_ok(json_object_get(o, "tolerations"), NULL, why, len);
    }
    json_decref(o);
    return ok;
}

/* Is @sc's scope wide enough for this spec? Fills @why when not. */
static bool scope_allows(const struct authz_scope *sc, const Gantry__V1__SandboxSpec *s, bool on_behalf,
                         char *why, size_t len)
{
    for (size_t i = 0; i < s->n_driver_config; i++) {
        json_t *o = json_loads(s->driver_config[i]->value, 0, NULL);
        const char *key;
        json_t *v;
        bool ok = true;
        json_object_foreach(o, key, v)
        {
            if (ok && !authz_scope_allows_config(sc, s->driver_config[i]->key, key)) {
                snprintf(why, len, "driver_config key \"%.40s.%.60s\" is outside the delegation scope",
                         s->driver_config[i]->key, key);
                ok = false;
            }
        }
        const char *kns = member_str(o, "namespace"), *rc = member_str(o, "runtime_class");
        bool kube = strcmp(s->driver_config[i]->key, "kubernetes") == 0;
        if (ok && kube && kns != NULL && !authz_scope_allows_kube_namespace(sc, kns)) {
            snprintf(why, len,
                     "driver_config kubernetes.namespace \"%.63s\" is outside the delegation scope "
                     "(allowed_kubernetes_namespaces%s)",
                     kns, sc->n_kube_namespaces == 0 ? " is empty: none" : "");
            ok = false;
        }
        const char *wp = member_str(o, "warm_pool"), *tpl = member_str(o, "template");
        if (ok && kube && wp != NULL && !authz_scope_allows_warm_pool(sc, wp)) {
            snprintf(why, len,
                     "driver_config kubernetes.warm_pool \"%.100s\" is outside the delegation scope "
                     "(allowed_warm_pools%s)",
                     wp, sc->n_warm_pools == 0 ? " is empty: none" : "");
            ok = false;
        }
        if (ok && kube && tpl != NULL && !authz_scope_allows_template(sc, tpl)) {
            snprintf(why, len,
                     "driver_config kubernetes.template \"%.100s\" is outside the delegation scope "
                     "(allowed_templates%s)",
                     tpl, sc->n_templates == 0 ? " is empty: none" : "");
            ok = false;
        }
        if (ok && kube && rc != NULL && !authz_scope_allows_runtime_class(sc, rc)) {
            snprintf(why, len,
                     "driver_config kubernetes.runtime_class \"%.100s\" is outside the delegation scope "
                     "(allowed_runtime_classes%s)",
                     rc, sc->n_runtime_classes == 0 ? " is empty: none" : "");
            ok = false;
        }
        json_t *nsel = json_object_get(o, "node_selector"), *tols = json_object_get(o, "tolerations");
        if (ok && kube && nsel != NULL) {
            ok = node_selector_ok(nsel, sc, why, len);
        }
        if (ok && kube && tols != NULL) {
            ok = tolerations_ok(tols, sc, why, len);
        }
        json_decref(o);
        if (!ok) {
            return false;
        }
        char sa[AUTHZ_SA_NAME_MAX + 1];
        if (policy_rules_sa_of(s->driver_config[i]->value, sa, sizeof sa) == 0 && sa[0] != '\0' &&
            !authz_scope_allows_service_account(sc, sa)) {
            snprintf(why, len,
                     "driver_config %.40s.service_account \"%.100s\" is outside the delegation scope "
                     "(allowed_service_accounts%s)",
                     s->driver_config[i]->key, sa, sc->n_service_accounts == 0 ? " is empty: none" : "");
            return false;
        }
    }
    for (size_t i = 0; i < s->n_providers; i++) {
        if (!authz_scope_allows_source(sc, s->providers[i])) {
            snprintf(why, len, "credential source (provider) \"%.63s\" is outside the delegation scope",
                     s->providers[i]);
            return false;
        }
    }
    if (on_behalf && !sc->on_behalf) {
        snprintf(why, len,
                 "the delegation scope does not allow creating sandboxes on behalf of another principal");
        return false;
    }
    return true;
}

bool sandbox_rules_delegation(const struct sandbox_creator *c, const Gantry__V1__SandboxSpec *s, char *why,
                              size_t len)
{
    bool on_behalf = s->owner_id[0] != '\0' && strcmp(s->owner_id, c->id) != 0;
    why[0] = '\0';
    const char *key;
    char val[128];
    if (c->n_scopes == 0 && !c->platform_admin && placement_chosen(s, &key, val, sizeof val)) {
        return refuse(
            why, len,
            "driver_config kubernetes.%s \"%s\": choosing the placement needs a delegation scope that "
            "allows it, or platform_admin (other callers get the gateway's configured placement)",
            key, val);
    }
    if (c->n_scopes == 0) {
        if (on_behalf && !c->platform_admin) {
            return refuse(why, len,
                          "creating a sandbox on behalf of another principal needs a delegation scope with "
                          "create_on_behalf_of_owner, or platform_admin");
        }
        return true;
    }
    for (size_t i = 0; i < c->n_scopes; i++) {
        if (scope_allows(c->scopes[i], s, on_behalf, why, len)) {
            why[0] = '\0';
            return true;
        }
    }
    return false;
}

uint64_t sandbox_rules_default_lifetime(int64_t quota_max_s, const Gantry__V1__Policy *g,
                                        const Gantry__V1__Policy *n)
{
    uint64_t lifetime = quota_max_s > 0 && (uint64_t)quota_max_s < SANDBOX_DEFAULT_LIFETIME_S
                            ? (uint64_t)quota_max_s
                            : SANDBOX_DEFAULT_LIFETIME_S;
    return policy_rules_cap_lifetime(g, n, lifetime);
}

bool sandbox_rules_share_active(const struct authz_binding *bindings, size_t n, const char *ns)
{
    if (ns[0] == '\0') {
        return false; /* sandboxes always have a namespace */
    }
    for (size_t i = 0; i < n; i++) {
        const struct authz_binding *b = &bindings[i];
        bool global = b->ns[0] == '\0' && !b->scope.set;
        if (b->role != 0 && (global || authz_binding_covers(b, ns))) {
            return true;
        }
    }
    return false;
}

bool sandbox_rules_host_network(const Gantry__V1__SandboxSpec *s)
{
    bool host = false;
    for (size_t i = 0; s != NULL && i < s->n_driver_config && !host; i++) {
        const Gantry__V1__SandboxSpec__DriverConfigEntry *e = s->driver_config[i];
        if (e->key == NULL || strcmp(e->key, "process") != 0 || e->value == NULL) {
            continue;
        }
        json_t *v = json_loads(e->value, 0, NULL);
        const char *net = json_is_object(v) ? json_string_value(json_object_get(v, "network")) : NULL;
        host = net != NULL && strcmp(net, "host") == 0;
        json_decref(v);
    }
    return host;
}
