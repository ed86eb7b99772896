/* WarmPool decisions (api/rules/warmpool.h). */
#include "api/rules/warmpool.h"

#include <stdio.h>
#include <string.h>

#include "api/rules/labels.h"
#include "lib/err.h"
#include "lib/names.h"

/* Dot-separated DNS-1123 labels, 1..253 bytes. */
static bool dns_subdomain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253) {
        return false;
    }
    const char *p = s;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
        char label[64], why[8];
        if (len == 0 || len > 63) {
            return false;
        }
        memcpy(label, p, len);
        label[len] = '\0';
        if (!names_dns_label_ok(label, 63, why, sizeof why)) {
            return false;
        }
        if (dot == NULL) {
            return true;
        }
        p = dot + 1;
    }
}

bool warmpool_rules_replicas_ok(uint32_t replicas, char *why, size_t len)
{
    if (replicas > WARMPOOL_MAX_REPLICAS) {
        snprintf(why, len, "replicas %u is out of range: a warm pool keeps 0..%u members", replicas,
                 WARMPOOL_MAX_REPLICAS);
        return false;
    }
    return true;
}

bool warmpool_rules_validate(const Gantry__V1__WarmPool *p, char *why, size_t len)
{
    char r[GERR_MSG_SIZE];
    why[0] = '\0';
    if (p == NULL || p->meta == NULL) {
        snprintf(why, len, "warm_pool.meta is required (namespace and name)");
        return false;
    }
    if (!names_dns_label_ok(p->meta->namespace_, 63, r, sizeof r)) {
        snprintf(why, len, "warm_pool.meta.namespace: %s", r);
        return false;
    }
    if (!names_dns_label_ok(p->meta->name, 63, r, sizeof r)) {
        snprintf(why, len, "warm_pool.meta.name (the SandboxWarmPool's name): %s", r);
        return false;
    }
    if (labels_check(p->meta->labels, p->meta->n_labels, "warm_pool.meta.labels", r) != 0) {
        snprintf(why, len, "%s", r);
        return false;
    }
    if (p->kubernetes_namespace[0] != '\0' && !names_dns_label_ok(p->kubernetes_namespace, 63, r, sizeof r)) {
        snprintf(why, len, "warm_pool.kubernetes_namespace must be a Kubernetes namespace name: %s", r);
        return false;
    }
    if (!dns_subdomain(p->template_)) {
        snprintf(why, len,
                 "warm_pool.template must be a SandboxTemplate name (a DNS subdomain: dot-separated DNS-1123 "
                 "labels, at most 253 bytes)");
        return false;
    }
    return warmpool_rules_replicas_ok(p->replicas, why, len);
}

static bool scope_allows(const struct authz_scope *sc, const Gantry__V1__WarmPool *p, char *why, size_t len)
{
    if (p->kubernetes_namespace[0] != '\0' &&
        !authz_scope_allows_kube_namespace(sc, p->kubernetes_namespace)) {
        snprintf(why, len,
                 "warm_pool.kubernetes_namespace \"%.63s\" is outside the delegation scope "
                 "(allowed_kubernetes_namespaces)",
                 p->kubernetes_namespace);
        return false;
    }
    if (!authz_scope_allows_template(sc, p->template_)) {
        snprintf(why, len,
                 "warm_pool.template \"%.100s\" is outside the delegation scope (allowed_templates)",
                 p->template_);
        return false;
    }
    if (!authz_scope_allows_warm_pool(sc, p->meta->name)) {
        snprintf(why, len, "warm pool \"%.63s\" is outside the delegation scope (allowed_warm_pools)",
                 p->meta->name);
        return false;
    }
    return true;
}

bool warmpool_rules_placement(const Gantry__V1__WarmPool *p, bool platform_admin,
                              const struct authz_scope *const *scopes, size_t n_scopes, char *why, size_t len)
{
    why[0] = '\0';
    if (n_scopes == 0) {
        if (p->kubernetes_namespace[0] != '\0' && !platform_admin) {
            snprintf(why, len,
                     "warm_pool.kubernetes_namespace \"%.63s\": choosing the Kubernetes namespace needs a "
                     "delegation scope that allows it, or platform_admin (leave it empty for the gateway's "
                     "placement)",
                     p->kubernetes_namespace);
            return false;
        }
        return true;
    }
    for (size_t i = 0; i < n_scopes; i++) {
        if (scope_allows(scopes[i], p, why, len)) {
            why[0] = '\0';
            return true;
        }
    }
    return false;
}
