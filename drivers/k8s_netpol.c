/* The egress NetworkPolicy and proxy variables of sandbox pods. See k8s_netpol.h. */
#include "drivers/k8s_netpol.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/k8s_json.h"
#include "lib/err.h"
#include "lib/mem.h"

#define RECONCILE_TRIES 5

bool k8s_egress_relay_on(const struct k8s_egress_relay *e)
{
    return e != NULL && e->address != NULL && e->address[0] != '\0';
}

/* "IPv4:port" or "[IPv6]:port" into @ip (46 bytes), *@port, *@v6. */
static bool split_address(const char *a, char ip[46], unsigned *port, bool *v6)
{
    const char *colon;
    size_t n;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL || close[1] != ':') {
            return false;
        }
        n = (size_t)(close - a - 1);
        if (n == 0 || n >= 46) {
            return false;
        }
        memcpy(ip, a + 1, n);
        colon = close + 1;
        *v6 = true;
    } else {
        colon = strrchr(a, ':');
        if (colon == NULL || (n = (size_t)(colon - a)) == 0 || n >= 46) {
            return false;
        }
        memcpy(ip, a, n);
        *v6 = false;
    }
    ip[n] = '\0';
    unsigned char b[16];
    if (inet_pton(*v6 ? AF_INET6 : AF_INET, ip, b) != 1) {
        return false;
    }
    char *end;
    const char *p = colon + 1;
    if (*p < '0' || *p > '9') {
        return false;
    }
    unsigned long v = strtoul(p, &end, 10);
    if (*end != '\0' || v == 0 || v > 65535) {
        return false;
    }
    *port = (unsigned)v;
    return true;
}

/* A label value or the name part of a key: 1..63 of [A-Za-z0-9-_.], alphanumeric at both ends. */
static bool label_part(const char *s, size_t n)
{
    if (n == 0 || n > 63) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && ((i == 0 || i == n - 1) || (c != '-' && c != '_' && c != '.'))) {
            return false;
        }
    }
    return true;
}

/* A label key: [prefix/]name, the prefix a DNS subdomain of at most 253 bytes. */
static bool label_key(const char *s, size_t n)
{
    const char *slash = memchr(s, '/', n);
    if (slash == NULL) {
        return label_part(s, n);
    }
    size_t pn = (size_t)(slash - s);
    if (pn == 0 || pn > 253) {
        return false;
    }
    for (size_t i = 0; i < pn; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
            return false;
        }
    }
    return label_part(slash + 1, n - pn - 1);
}

/* Each "key=value" pair of @sel, to @fn. False at the first malformed pair or past the maximum. */
static bool each_pair(const char *sel, json_t *into)
{
    size_t count = 0;
    for (const char *p = sel;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq == NULL || ++count > K8S_EGRESS_SELECTOR_MAX || !label_key(p, (size_t)(eq - p)) ||
            !label_part(eq + 1, n - (size_t)(eq - p) - 1)) {
            return false;
        }
        if (into != NULL) {
            char key[320], value[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            snprintf(value, sizeof value, "%.*s", (int)(n - (size_t)(eq - p) - 1), eq + 1);
            json_object_set_new(into, key, json_string(value));
        }
        if (comma == NULL) {
            return true;
        }
        p = comma + 1;
    }
}

int k8s_egress_relay_check(const struct k8s_egress_relay *e, char *errmsg)
{
    if (!k8s_egress_relay_on(e)) {
        return 0;
    }
    char ip[46];
    unsigned port;
    bool v6;
    if (!split_address(e->address, ip, &port, &v6)) {
        gerr_set(
            errmsg,
            "egress relay address for pods \"%.100s\" is not IPv4:port or [IPv6]:port (pods get an address, "
            "not a name: they have no DNS)",
            e->address);
        return GERR_INVAL;
    }
    if (e->port > 65535) {
        gerr_set(errmsg, "egress relay port for pods %u is outside 1..65535", e->port);
        return GERR_INVAL;
    }
    if (e->pod_selector != NULL && e->pod_selector[0] != '\0') {
        if (!each_pair(e->pod_selector, NULL)) {
            gerr_set(errmsg,
                     "egress relay pod selector \"%.100s\" is not 1..%u key=value pairs of Kubernetes label "
                     "syntax separated by commas",
                     e->pod_selector, K8S_EGRESS_SELECTOR_MAX);
            return GERR_INVAL;
        }
        if (e->home_namespace == NULL || e->home_namespace[0] == '\0') {
            gerr_set(errmsg, "egress relay pod selector needs the gateway's home namespace");
            return GERR_INVAL;
        }
    }
    return 0;
}

char *k8s_egress_netpol_manifest(const char *ns, const char *gateway_id, const struct k8s_egress_relay *e,
                                 const char *resource_version)
{
    char ip[46];
    unsigned port = 0;
    bool v6 = false;
    if (!split_address(e->address, ip, &port, &v6)) {
        return NULL;
    }
    json_t *peer;
    if (e->pod_selector != NULL && e->pod_selector[0] != '\0') {
        json_t *match = json_object();
        each_pair(e->pod_selector, match);
        peer =
            json_pack("{s:{s:{s:s}},s:{s:o}}", "namespaceSelector", "matchLabels",
                      "kubernetes.io/metadata.name", e->home_namespace, "podSelector", "matchLabels", match);
        if (e->port != 0) {
            port = e->port;
        }
    } else {
        char cidr[64];
        snprintf(cidr, sizeof cidr, "%s/%d", ip, v6 ? 128 : 32);
        peer = json_pack("{s:{s:s}}", "ipBlock", "cidr", cidr);
    }
    json_t *doc = json_pack(
        "{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s,s:s,s:s}},s:{s:{s:{s:s,s:s}},s:[s],s:[{s:[o],s:[{s:s,s:i}]}]}}",
        "apiVersion", "networking.k8s.io/v1", "kind", "NetworkPolicy", "metadata", "name",
        K8S_EGRESS_NETPOL_NAME, "namespace", ns, "labels", K8S_LABEL_GATEWAY, gateway_id, K8S_LABEL_MANAGED,
        K8S_MANAGED_BY, OS_LABEL_MANAGED, OS_MANAGED_BY, OS_LABEL_GATEWAY, gateway_id, "spec", "podSelector",
        "matchLabels", K8S_LABEL_GATEWAY, gateway_id, K8S_LABEL_MANAGED, K8S_MANAGED_BY, "policyTypes",
        "Egress", "egress", "to", peer, "ports", "protocol", "TCP", "port", (int)port);
    if (doc == NULL) {
        return NULL;
    }
    if (resource_version != NULL) {
        json_object_set_new(json_object_get(doc, "metadata"), "resourceVersion",
                            json_string(resource_version));
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (s == NULL) {
        return NULL;
    }
    char *out = mem_strdup(s);
    free(s);
    return out;
}

static bool spec_sets(const struct driver_sandbox_spec *spec, const char *name)
{
    for (size_t i = 0; spec != NULL && i < spec->n_env; i++) {
        if (strcmp(spec->env[i].key, name) == 0) {
            return true;
        }
    }
    for (size_t i = 0; spec != NULL && i < spec->n_credentials; i++) {
        if (spec->credentials[i].env != NULL && strcmp(spec->credentials[i].env, name) == 0) {
            return true;
        }
    }
    return false;
}

void k8s_egress_env(json_t *env, const struct k8s_egress_relay *e, const struct driver_sandbox_spec *spec)
{
    if (!k8s_egress_relay_on(e)) {
        return;
    }
    char url[128];
    snprintf(url, sizeof url, "http://%s", e->address);
    static const char *const proxy[] = {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                        "GANTRY_EGRESS_PROXY"};
    static const char *const none[] = {"no_proxy", "NO_PROXY"};
    for (size_t i = 0; i < sizeof proxy / sizeof proxy[0]; i++) {
        if (!spec_sets(spec, proxy[i])) {
            json_array_append_new(env, json_pack("{s:s,s:s}", "name", proxy[i], "value", url));
        }
    }
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        if (!spec_sets(spec, none[i])) {
            json_array_append_new(
                env, json_pack("{s:s,s:s}", "name", none[i], "value", "localhost,127.0.0.1,::1"));
        }
    }
}

int k8s_egress_netpol_compare(const char *text, size_t len, const char *ns, const char *gateway_id,
                              const struct k8s_egress_relay *e, bool *ours, bool *same, char rv[64])
{
    *ours = *same = false;
    rv[0] = '\0';
    if (len > K8S_MAX_BODY) {
        return GERR_PROTO;
    }
    json_t *have = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *md = json_object_get(have, "metadata");
    const char *v = json_string_value(json_object_get(md, "resourceVersion"));
    if (!json_is_object(md) || v == NULL || strlen(v) >= 64 ||
        strlen(v) != json_string_length(json_object_get(md, "resourceVersion"))) {
        json_decref(have);
        return GERR_PROTO;
    }
    snprintf(rv, 64, "%s", v);
    json_t *labels = json_object_get(md, "labels");
    const char *gw = json_string_value(json_object_get(labels, K8S_LABEL_GATEWAY));
    *ours = gw != NULL && strcmp(gw, gateway_id) == 0;
    char *want_doc = k8s_egress_relay_on(e) ? k8s_egress_netpol_manifest(ns, gateway_id, e, NULL) : NULL;
    json_t *want = want_doc != NULL ? json_loads(want_doc, 0, NULL) : NULL;
    mem_free(want_doc);
    if (want != NULL) {
        json_t *want_labels = json_object_get(json_object_get(want, "metadata"), "labels");
        bool labels_same = true;
        const char *key;
        json_t *value;
        json_object_foreach(want_labels, key, value)
        {
            labels_same = labels_same && json_equal(json_object_get(labels, key), value);
        }
        *same = labels_same && json_equal(json_object_get(have, "spec"), json_object_get(want, "spec"));
        json_decref(want);
    }
    json_decref(have);
    return 0;
}

int k8s_egress_netpol_reconcile(k8s_call_fn call, void *ctx, const char *ns, const char *gateway_id,
                                const struct k8s_egress_relay *e, char *errmsg)
{
    char path[256], rv[64];
    const char *resp;
    size_t len;
    snprintf(path, sizeof path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/%s", ns,
             K8S_EGRESS_NETPOL_NAME);
    int r = 0;
    for (int i = 0; i < RECONCILE_TRIES; i++) {
        r = call(ctx, "GET", path, NULL, &resp, &len, errmsg);
        if (r == GERR_NOTFOUND) {
            if (!k8s_egress_relay_on(e)) {
                return 0;
            }
            char *doc = k8s_egress_netpol_manifest(ns, gateway_id, e, NULL), coll[200];
            snprintf(coll, sizeof coll, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies", ns);
            r = doc == NULL ? GERR_NOMEM : call(ctx, "POST", coll, doc, &resp, &len, errmsg);
            mem_free(doc);
            if (r == GERR_EXISTS) {
                continue; /* made since our GET: look again */
            }
            return r;
        }
        if (r != 0) {
            return r;
        }
        bool ours = false, same = false;
        if (k8s_egress_netpol_compare(resp, len, ns, gateway_id, e, &ours, &same, rv) != 0) {
            gerr_set(errmsg, "NetworkPolicy %s/%s: the API server's answer is not a NetworkPolicy", ns,
                     K8S_EGRESS_NETPOL_NAME);
            return GERR_PROTO;
        }
        if (!ours) {
            gerr_set(errmsg, "NetworkPolicy %s/%s is not gateway %s's: not touching it", ns,
                     K8S_EGRESS_NETPOL_NAME, gateway_id);
            return GERR_EXISTS;
        }
        if (!k8s_egress_relay_on(e)) {
            char *opts = k8s_delete_options(rv);
            r = opts == NULL ? GERR_NOMEM : call(ctx, "DELETE", path, opts, &resp, &len, errmsg);
            mem_free(opts);
        } else if (same) {
            return 0;
        } else {
            char *doc = k8s_egress_netpol_manifest(ns, gateway_id, e, rv);
            r = doc == NULL ? GERR_NOMEM : call(ctx, "PUT", path, doc, &resp, &len, errmsg);
            mem_free(doc);
        }
        if (r == GERR_NOTFOUND && !k8s_egress_relay_on(e)) {
            return 0;
        }
        if (r != GERR_ABORTED && r != GERR_NOTFOUND) {
            return r;
        }
        /* 409 Conflict (written since we read it) or gone since: read again and decide again. */
    }
    gerr_set(errmsg, "NetworkPolicy %s/%s: still conflicting after %d attempts", ns, K8S_EGRESS_NETPOL_NAME,
             RECONCILE_TRIES);
    return GERR_ABORTED;
}
