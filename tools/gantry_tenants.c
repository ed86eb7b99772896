/* gantry namespace, quota, policy, usage, audit: the Namespaces, Quotas, Policies, Usage and Audit
 * services (docs/cli.md). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gantry/v1/audit.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/policies.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/usage.pb-c.h"
#include "tools/gantry.h"

#define END                                                                                                  \
    {                                                                                                        \
        NULL, NULL, NULL, false                                                                              \
    }

static const struct gantry_col ns_cols[] = {
    {"NAME", "meta.name", NULL, false},
    {"PHASE", "phase", "PHASE_", false},
    {"DESCRIPTION", "description", NULL, false},
    {"LABELS", "meta.labels", NULL, false},
    {"CREATED", "meta.created_at_ms", NULL, true},
    END,
};

/* --- namespaces --- */

static int ns_create(struct cli *c, int argc, char **argv)
{
    const char *desc = gantry_opt(&argc, argv, "--description"), *labels[32];
    int n_labels = gantry_opt_all(&argc, argv, "--label", labels, 32);
    int rc = gantry_args(gantry_find("namespace", "create"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Namespace ns = GANTRY__V1__NAMESPACE__INIT;
    Gantry__V1__CreateNamespaceRequest req = GANTRY__V1__CREATE_NAMESPACE_REQUEST__INIT;
    if (gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, n_labels, &meta.labels,
                   &meta.n_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    meta.name = argv[0];
    ns.meta = &meta;
    ns.description = (char *)(desc != NULL ? desc : "");
    req.namespace_ = &ns;
    req.request_id = rid;
    rc = gantry_simple(c, "/gantry.v1.Namespaces/Create", &req.base, &gantry__v1__namespace__descriptor, NULL,
                       ns_cols);
    gantry_map_free(meta.labels, meta.n_labels);
    return rc;
}

static int ns_get(struct cli *c, int argc, char **argv)
{
    struct gantry_read rd;
    int rc = gantry_read_opts(&argc, argv, &rd);
    if (rc != 0 || (rc = gantry_args(gantry_find("namespace", "get"), argc, argv, 1, 1)) != 0) {
        return rc;
    }
    Gantry__V1__GetNamespaceRequest req = GANTRY__V1__GET_NAMESPACE_REQUEST__INIT;
    req.name = argv[0];
    return gantry_read_simple(c, "/gantry.v1.Namespaces/Get", &req.base, &gantry__v1__namespace__descriptor,
                              NULL, ns_cols, &rd);
}

static int ns_list(struct cli *c, int argc, char **argv)
{
    const char *sel[32];
    int n_sel = gantry_opt_all(&argc, argv, "--selector", sel, 32);
    struct gantry_read rd;
    int rc = gantry_read_opts(&argc, argv, &rd);
    if (rc != 0) {
        return rc;
    }
    rc = gantry_args(gantry_find("namespace", "list"), argc, argv, 0, 0);
    Gantry__V1__ListNamespacesRequest req = GANTRY__V1__LIST_NAMESPACES_REQUEST__INIT;
    Gantry__V1__LabelSelector s = GANTRY__V1__LABEL_SELECTOR__INIT;
    if (rc != 0 || gantry_map(&gantry__v1__label_selector__match_labels_entry__descriptor, sel, n_sel,
                              &s.match_labels, &s.n_match_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    req.selector = n_sel > 0 ? &s : NULL;
    rc = gantry_read_simple(c, "/gantry.v1.Namespaces/List", &req.base,
                            &gantry__v1__list_namespaces_response__descriptor, "namespaces", ns_cols, &rd);
    gantry_map_free(s.match_labels, s.n_match_labels);
    return rc;
}

static int ns_update(struct cli *c, int argc, char **argv)
{
    const char *desc = gantry_opt(&argc, argv, "--description"), *labels[32];
    int n_labels = gantry_opt_all(&argc, argv, "--label", labels, 32);
    int rc = gantry_args(gantry_find("namespace", "update"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (desc == NULL && n_labels == 0) {
        fprintf(stderr, "gantry namespace update: nothing to change: give --description and/or --label\n");
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__GetNamespaceRequest get = GANTRY__V1__GET_NAMESPACE_REQUEST__INIT;
    get.name = argv[0];
    ProtobufCMessage *out;
    if ((rc = gantry_call(c, "/gantry.v1.Namespaces/Get", &get.base, &gantry__v1__namespace__descriptor, NULL,
                          NULL, &out, 10000)) != 0) {
        return rc;
    }
    Gantry__V1__Namespace *ns = (Gantry__V1__Namespace *)out;
    char *old_desc = ns->description;
    size_t old_n = ns->meta->n_labels;
    Gantry__V1__ObjectMeta__LabelsEntry **old_labels = ns->meta->labels;
    if (n_labels > 0 && gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, n_labels,
                                   &ns->meta->labels, &ns->meta->n_labels) != 0) {
        protobuf_c_message_free_unpacked(out, NULL);
        return GANTRY_EXIT_USAGE;
    }
    ns->description = (char *)(desc != NULL ? desc : old_desc);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__UpdateNamespaceRequest req = GANTRY__V1__UPDATE_NAMESPACE_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = ns;
    req.expected_resource_version = ns->meta->resource_version;
    rc = gantry_simple(c, "/gantry.v1.Namespaces/Update", &req.base, &gantry__v1__namespace__descriptor, NULL,
                       ns_cols);
    if (n_labels > 0) {
        gantry_map_free(ns->meta->labels, ns->meta->n_labels);
    }
    ns->meta->labels = old_labels;
    ns->meta->n_labels = old_n;
    ns->description = old_desc;
    protobuf_c_message_free_unpacked(out, NULL);
    return rc;
}

static int ns_delete(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("namespace", "delete"), argc, argv, 1, 1);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteNamespaceRequest req = GANTRY__V1__DELETE_NAMESPACE_REQUEST__INIT;
    req.request_id = rid;
    req.name = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Namespaces/Delete", &req.base,
                                   &gantry__v1__namespace__descriptor, NULL, ns_cols);
}

/* --- quotas --- */

static const struct gantry_col quota_cols[] = {
    {"NAMESPACE", "usage.namespace", NULL, false},
    {"MODE", "quota.mode", "QUOTA_MODE_", false},
    {"SANDBOXES", "usage.sandboxes", NULL, false},
    {"MAX SANDBOXES", "quota.max_concurrent_sandboxes", NULL, false},
    {"GPUS", "usage.gpus", NULL, false},
    {"MAX GPUS", "quota.max_gpus", NULL, false},
    {"MAX LIFETIME S", "quota.max_lifetime_seconds", NULL, false},
    {"CEILING SANDBOXES", "ceiling.max_concurrent_sandboxes", NULL, false},
    {"CEILING GPUS", "ceiling.max_gpus", NULL, false},
    {"CEILING LIFETIME S", "ceiling.max_lifetime_seconds", NULL, false},
    END,
};

static const struct gantry_col ceiling_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},
    {"MAX SANDBOXES", "max_concurrent_sandboxes", NULL, false},
    {"MAX GPUS", "max_gpus", NULL, false},
    {"MAX LIFETIME S", "max_lifetime_seconds", NULL, false},
    {"VERSION", "meta.resource_version", NULL, false},
    END,
};

static const struct gantry_col quota_set_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},
    {"MODE", "mode", "QUOTA_MODE_", false},
    {"MAX SANDBOXES", "max_concurrent_sandboxes", NULL, false},
    {"MAX GPUS", "max_gpus", NULL, false},
    {"MAX LIFETIME S", "max_lifetime_seconds", NULL, false},
    {"VERSION", "meta.resource_version", NULL, false},
    END,
};

static int quota_get(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("quota", "get"), argc, argv, 0, 0);
    Gantry__V1__GetQuotaRequest req = GANTRY__V1__GET_QUOTA_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Quotas/Get", &req.base,
                                   &gantry__v1__get_quota_response__descriptor, NULL, quota_cols);
}

static int quota_list(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("quota", "list"), argc, argv, 0, 0);
    Gantry__V1__ListQuotasRequest req = GANTRY__V1__LIST_QUOTAS_REQUEST__INIT;
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Quotas/List", &req.base,
                                   &gantry__v1__list_quotas_response__descriptor, "quotas", quota_cols);
}

static int quota_set(struct cli *c, int argc, char **argv)
{
    const char *mode = gantry_opt(&argc, argv, "--mode");
    uint64_t sb = 0, gpus = 0, life = 0;
    /* The fields' own ranges (uint32, and seconds whose milliseconds fit in 63 bits): a larger
     * number must never be sent wrapped around (4294967297 would be 1, 4294967296 unlimited). */
    if (gantry_u64("--max-sandboxes", gantry_opt(&argc, argv, "--max-sandboxes"), UINT32_MAX, &sb) != 0 ||
        gantry_u64("--max-gpus", gantry_opt(&argc, argv, "--max-gpus"), UINT32_MAX, &gpus) != 0 ||
        gantry_u64("--max-lifetime", gantry_opt(&argc, argv, "--max-lifetime"), INT64_MAX / 1000, &life) !=
            0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("quota", "set"), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    if (mode != NULL && strcmp(mode, "hard") != 0 && strcmp(mode, "soft") != 0) {
        fprintf(stderr, "gantry quota set: --mode is hard or soft\n");
        return GANTRY_EXIT_USAGE;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Quota q = GANTRY__V1__QUOTA__INIT;
    Gantry__V1__SetQuotaRequest req = GANTRY__V1__SET_QUOTA_REQUEST__INIT;
    meta.namespace_ = (char *)gantry_ns(c);
    q.meta = &meta;
    q.max_concurrent_sandboxes = (uint32_t)sb;
    q.max_gpus = (uint32_t)gpus;
    q.max_lifetime_seconds = life;
    q.mode = mode != NULL && strcmp(mode, "soft") == 0 ? GANTRY__V1__QUOTA_MODE__QUOTA_MODE_SOFT
                                                       : GANTRY__V1__QUOTA_MODE__QUOTA_MODE_HARD;
    req.request_id = rid;
    req.quota = &q;
    return gantry_simple(c, "/gantry.v1.Quotas/Set", &req.base, &gantry__v1__quota__descriptor, NULL,
                         quota_set_cols);
}

static int quota_delete(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("quota", "delete"), argc, argv, 0, 0);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteQuotaRequest req = GANTRY__V1__DELETE_QUOTA_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Quotas/Delete", &req.base, &gantry__v1__quota__descriptor,
                                   NULL, quota_set_cols);
}

static int ceiling_set(struct cli *c, int argc, char **argv)
{
    uint64_t sb = 0, gpus = 0, life = 0;
    if (gantry_u64("--max-sandboxes", gantry_opt(&argc, argv, "--max-sandboxes"), UINT32_MAX, &sb) != 0 ||
        gantry_u64("--max-gpus", gantry_opt(&argc, argv, "--max-gpus"), UINT32_MAX, &gpus) != 0 ||
        gantry_u64("--max-lifetime", gantry_opt(&argc, argv, "--max-lifetime"), INT64_MAX / 1000, &life) !=
            0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("quota", "set-ceiling"), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__QuotaCeiling q = GANTRY__V1__QUOTA_CEILING__INIT;
    Gantry__V1__SetQuotaCeilingRequest req = GANTRY__V1__SET_QUOTA_CEILING_REQUEST__INIT;
    meta.namespace_ = (char *)gantry_ns(c);
    q.meta = &meta;
    q.max_concurrent_sandboxes = (uint32_t)sb;
    q.max_gpus = (uint32_t)gpus;
    q.max_lifetime_seconds = life;
    req.request_id = rid;
    req.ceiling = &q;
    return gantry_simple(c, "/gantry.v1.Quotas/SetCeiling", &req.base, &gantry__v1__quota_ceiling__descriptor,
                         NULL, ceiling_cols);
}

static int ceiling_delete(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("quota", "delete-ceiling"), argc, argv, 0, 0);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteQuotaCeilingRequest req = GANTRY__V1__DELETE_QUOTA_CEILING_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Quotas/DeleteCeiling", &req.base,
                                   &gantry__v1__quota_ceiling__descriptor, NULL, ceiling_cols);
}

/* --- policies: --gateway selects the gateway-wide policy, otherwise the namespace's --- */

static const struct gantry_col policy_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},
    {"IMAGES", "allowed_images", NULL, false},
    {"DRIVERS", "allowed_drivers", NULL, false},
    {"MAX LIFETIME S", "max_lifetime_seconds", NULL, false},
    {"MAX GPUS", "max_gpus_per_sandbox", NULL, false},
    {"DENY GPUS", "deny_gpus", NULL, false},
    {"SHARES", "allow_shares", NULL, false},
    {"EXEC SHARES", "allow_exec_shares", NULL, false},
    {"EGRESS", "egress_allow", NULL, false},
    {"SERVICE ACCOUNTS", "allowed_service_accounts", NULL, false},
    END,
};

static const char *policy_ns(struct cli *c, int *argc, char **argv)
{
    return gantry_flag(argc, argv, "--gateway") ? "" : gantry_ns(c);
}

static int policy_get(struct cli *c, int argc, char **argv)
{
    Gantry__V1__GetPolicyRequest req = GANTRY__V1__GET_POLICY_REQUEST__INIT;
    req.namespace_ = (char *)policy_ns(c, &argc, argv);
    int rc = gantry_args(gantry_find("policy", "get"), argc, argv, 0, 0);
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Policies/Get", &req.base, &gantry__v1__policy__descriptor,
                                   NULL, policy_cols);
}

static int policy_effective(struct cli *c, int argc, char **argv)
{
    Gantry__V1__GetEffectivePolicyRequest req = GANTRY__V1__GET_EFFECTIVE_POLICY_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    int rc = gantry_args(gantry_find("policy", "effective"), argc, argv, 0, 0);
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Policies/GetEffective", &req.base,
                                   &gantry__v1__policy__descriptor, NULL, policy_cols);
}

static int policy_set(struct cli *c, int argc, char **argv)
{
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Policy p = GANTRY__V1__POLICY__INIT;
    meta.namespace_ = (char *)policy_ns(c, &argc, argv);
    const char *images[64], *drivers[16], *keys[64], *egress[64], *sas[65];
    p.n_allowed_images = (size_t)gantry_opt_all(&argc, argv, "--allow-image", images, 64);
    p.n_allowed_drivers = (size_t)gantry_opt_all(&argc, argv, "--allow-driver", drivers, 16);
    p.n_allowed_driver_config_keys = (size_t)gantry_opt_all(&argc, argv, "--allow-config-key", keys, 64);
    p.n_egress_allow = (size_t)gantry_opt_all(&argc, argv, "--egress-allow", egress, 64);
    p.n_allowed_service_accounts = (size_t)gantry_opt_all(&argc, argv, "--allow-service-account", sas, 65);
    p.allowed_images = (char **)images;
    p.allowed_drivers = (char **)drivers;
    p.allowed_driver_config_keys = (char **)keys;
    p.egress_allow = (char **)egress;
    p.allowed_service_accounts = (char **)sas;
    uint64_t gpus = 0;
    if (gantry_u64("--max-lifetime", gantry_opt(&argc, argv, "--max-lifetime"), INT64_MAX / 1000,
                   &p.max_lifetime_seconds) != 0 ||
        gantry_u64("--max-gpus", gantry_opt(&argc, argv, "--max-gpus"), UINT32_MAX, &gpus) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    p.max_gpus_per_sandbox = (uint32_t)gpus;
    p.allow_shares = gantry_flag(&argc, argv, "--allow-shares");
    p.allow_exec_shares = gantry_flag(&argc, argv, "--allow-exec-shares");
    p.deny_gpus = gantry_flag(&argc, argv, "--deny-gpus");
    int rc = gantry_args(gantry_find("policy", "set"), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__SetPolicyRequest req = GANTRY__V1__SET_POLICY_REQUEST__INIT;
    p.meta = &meta;
    req.request_id = rid;
    req.policy = &p;
    return gantry_simple(c, "/gantry.v1.Policies/Set", &req.base, &gantry__v1__policy__descriptor, NULL,
                         policy_cols);
}

static int policy_delete(struct cli *c, int argc, char **argv)
{
    Gantry__V1__DeletePolicyRequest req = GANTRY__V1__DELETE_POLICY_REQUEST__INIT;
    req.namespace_ = (char *)policy_ns(c, &argc, argv);
    int rc = gantry_args(gantry_find("policy", "delete"), argc, argv, 0, 0);
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Policies/Delete", &req.base,
                                   &gantry__v1__policy__descriptor, NULL, policy_cols);
}

/* gantry policy test HOST:PORT: Egress.Decide (docs/egress.md). */
static const struct gantry_col egress_cols[] = {
    {"ALLOWED", "allowed", NULL, false},
    {"LAYER", "layer", NULL, false},
    {"RULE", "rule", NULL, false},
    {"REVISION", "policy_revision", NULL, false},
    {"DESTINATION", "destination", NULL, false},
    {"REASON", "reason", NULL, false},
    END,
};

static int transport_of(const char *s, Gantry__V1__EgressTransport *out)
{
    static const struct {
        const char *name;
        Gantry__V1__EgressTransport t;
    } names[] = {{"tcp", GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TCP},
                 {"connect", GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP_CONNECT},
                 {"http", GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP},
                 {"tls", GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TLS},
                 {"dns", GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (s == NULL || strcmp(s, names[i].name) == 0) {
            *out = s == NULL ? GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TCP : names[i].t;
            return 0;
        }
    }
    fprintf(stderr, "gantry: --transport must be tcp, connect, http, tls or dns\n");
    return -1;
}

static int policy_test(struct cli *c, int argc, char **argv)
{
    Gantry__V1__EgressIntent in = GANTRY__V1__EGRESS_INTENT__INIT;
    in.namespace_ = (char *)gantry_ns(c);
    const char *sni = gantry_opt(&argc, argv, "--sni"), *hh = gantry_opt(&argc, argv, "--http-host");
    const char *sb = gantry_opt(&argc, argv, "--sandbox"), *tr = gantry_opt(&argc, argv, "--transport");
    int rc = gantry_args(gantry_find("policy", "test"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    /* HOST:PORT, [IPv6]:PORT */
    char host[300];
    const char *dest = argv[0], *colon = strrchr(dest, ':');
    uint64_t port = 0;
    if (colon == NULL || colon == dest || (size_t)(colon - dest) >= sizeof host ||
        gantry_u64("PORT", colon + 1, 65535, &port) != 0 || port == 0 ||
        transport_of(tr, &in.transport) != 0) {
        fprintf(stderr,
                "gantry: give the destination as HOST:PORT (PORT 1..65535), e.g. api.github.com:443\n");
        return GANTRY_EXIT_USAGE;
    }
    size_t n = (size_t)(colon - dest);
    if (dest[0] == '[' && n >= 2 && dest[n - 1] == ']') {
        snprintf(host, sizeof host, "%.*s", (int)(n - 2), dest + 1);
    } else {
        snprintf(host, sizeof host, "%.*s", (int)n, dest);
    }
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    in.host = ip ? "" : host;
    in.ip = ip ? host : "";
    in.port = (uint32_t)port;
    in.sni = (char *)(sni != NULL ? sni : "");
    in.http_host = (char *)(hh != NULL ? hh : "");
    in.sandbox = (char *)(sb != NULL ? sb : "");
    Gantry__V1__DecideEgressRequest req = GANTRY__V1__DECIDE_EGRESS_REQUEST__INIT;
    req.intent = &in;
    json_t *doc;
    if ((rc = gantry_call_json(c, "/gantry.v1.Egress/Decide", &req.base,
                               &gantry__v1__egress_decision__descriptor, NULL, &doc)) != 0) {
        return rc;
    }
    bool allowed = json_is_true(json_object_get(doc, "allowed"));
    gantry_print(c, doc, NULL, egress_cols);
    json_decref(doc);
    return allowed ? GANTRY_EXIT_OK : GANTRY_EXIT_REFUSED;
}

/* --- usage --- */

static int usage_query(struct cli *c, int argc, char **argv)
{
    Gantry__V1__QueryUsageRequest req = GANTRY__V1__QUERY_USAGE_REQUEST__INIT;
    Gantry__V1__LabelSelector s = GANTRY__V1__LABEL_SELECTOR__INIT;
    const char *since = gantry_opt(&argc, argv, "--since"), *until = gantry_opt(&argc, argv, "--until");
    const char *owner = gantry_opt(&argc, argv, "--owner"), *group[4], *sel[32];
    req.n_group_by = (size_t)gantry_opt_all(&argc, argv, "--group-by", group, 4);
    req.group_by = (char **)group;
    int n_sel = gantry_opt_all(&argc, argv, "--selector", sel, 32);
    int rc = gantry_args(gantry_find("usage", "query"), argc, argv, 0, 0);
    if (rc != 0 || gantry_time(since, &req.start_ms) != 0 || gantry_time(until, &req.end_ms) != 0 ||
        gantry_map(&gantry__v1__label_selector__match_labels_entry__descriptor, sel, n_sel, &s.match_labels,
                   &s.n_match_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    char oid[64] = "";
    if (owner != NULL && (rc = gantry_principal_id(c, owner, oid, sizeof oid)) != 0) {
        gantry_map_free(s.match_labels, s.n_match_labels);
        return rc;
    }
    req.namespace_ = (char *)gantry_list_ns(c);
    req.owner_id = oid;
    req.selector = n_sel > 0 ? &s : NULL;
    json_t *doc;
    rc = gantry_call_json(c, "/gantry.v1.Usage/Query", &req.base,
                          &gantry__v1__query_usage_response__descriptor, "records", &doc);
    gantry_map_free(s.match_labels, s.n_match_labels);
    if (rc != 0) {
        return rc;
    }
    if (c->out != GANTRY_OUT_TABLE || req.n_group_by == 0) {
        static const struct gantry_col cols[] = {
            {"NAMESPACE", "namespace", NULL, false}, {"SANDBOX", "sandbox_name", NULL, false},
            {"OWNER", "owner_id", NULL, false},      {"START", "start_ms", NULL, true},
            {"END", "end_ms", NULL, true},           {"SANDBOX S", "sandbox_seconds", NULL, false},
            {"GPU S", "gpu_seconds", NULL, false},   END,
        };
        gantry_print(c, doc, "records", cols);
    } else {
        static const struct gantry_col cols[] = {{"GROUP", "group", NULL, false},
                                                 {"SANDBOX S", "sandbox_seconds", NULL, false},
                                                 {"GPU S", "gpu_seconds", NULL, false},
                                                 END};
        gantry_print(c, doc, "totals", cols);
    }
    json_decref(doc);
    return 0;
}

/* --- audit --- */

static int audit_query(struct cli *c, int argc, char **argv)
{
    Gantry__V1__QueryAuditRequest req = GANTRY__V1__QUERY_AUDIT_REQUEST__INIT;
    const char *since = gantry_opt(&argc, argv, "--since"), *until = gantry_opt(&argc, argv, "--until");
    const char *actor = gantry_opt(&argc, argv, "--actor"), *op = gantry_opt(&argc, argv, "--operation");
    uint64_t cls = 0, limit = 0;
    if (gantry_u64("--class", gantry_opt(&argc, argv, "--class"), UINT32_MAX, &cls) != 0 ||
        gantry_u64("--limit", gantry_opt(&argc, argv, "--limit"), UINT32_MAX, &limit) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("audit", "query"), argc, argv, 0, 0);
    if (rc != 0 || gantry_time(since, &req.start_ms) != 0 || gantry_time(until, &req.end_ms) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    char aid[64] = "";
    if (actor != NULL && (rc = gantry_principal_id(c, actor, aid, sizeof aid)) != 0) {
        return rc;
    }
    req.namespace_ = (char *)gantry_list_ns(c);
    req.actor_principal_id = aid;
    req.api_operation = (char *)(op != NULL ? op : "");
    req.class_uid = (uint32_t)cls;
    json_t *doc;
    if ((rc = gantry_call_json(c, "/gantry.v1.Audit/Query", &req.base,
                               &gantry__v1__query_audit_response__descriptor, "events", &doc)) != 0) {
        return rc;
    }
    json_t *ev = json_object_get(doc, "events");
    while (limit > 0 && json_array_size(ev) > limit) { /* the newest @limit */
        json_array_remove(ev, 0);
    }
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        json_object_del(e, "ocsf_json"); /* the same event again; audit export gives it */
    }
    static const struct gantry_col cols[] = {
        {"ID", "id", NULL, false},
        {"TIME", "time_ms", NULL, true},
        {"ACTOR", "actor_name", NULL, false},
        {"OPERATION", "api_operation", "/gantry.v1.", false},
        {"NAMESPACE", "namespace", NULL, false},
        {"RESOURCE", "resource_name", NULL, false},
        {"STATUS", "status", NULL, false},
        {"DETAIL", "status_detail", NULL, false},
        END,
    };
    gantry_print(c, doc, "events", cols);
    json_decref(doc);
    return 0;
}

static int on_export(const ProtobufCMessage *msg, void *arg)
{
    FILE *f = arg;
    const Gantry__V1__ExportAuditChunk *ch = (const Gantry__V1__ExportAuditChunk *)msg;
    if (fwrite(ch->jsonl.data, 1, ch->jsonl.len, f) != ch->jsonl.len) {
        fprintf(stderr, "gantry: cannot write the export\n");
        return GERR_IO;
    }
    return 0;
}

static int audit_export(struct cli *c, int argc, char **argv)
{
    Gantry__V1__ExportAuditRequest req = GANTRY__V1__EXPORT_AUDIT_REQUEST__INIT;
    const char *since = gantry_opt(&argc, argv, "--since"), *until = gantry_opt(&argc, argv, "--until");
    const char *file = gantry_opt(&argc, argv, "--file");
    int rc = gantry_args(gantry_find("audit", "export"), argc, argv, 0, 0);
    if (rc != 0 || gantry_time(since, &req.start_ms) != 0 || gantry_time(until, &req.end_ms) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    req.namespace_ = (char *)gantry_list_ns(c);
    char tmp[4096];
    FILE *f = stdout;
    if (file != NULL) {
        snprintf(tmp, sizeof tmp, "%s.partial", file);
        if ((f = fopen(tmp, "w")) == NULL) {
            fprintf(stderr, "gantry: cannot create %s\n", tmp);
            return GANTRY_EXIT_FAILED;
        }
    }
    rc = gantry_call(c, "/gantry.v1.Audit/Export", &req.base, &gantry__v1__export_audit_chunk__descriptor,
                     on_export, f, NULL, 600000);
    if (file == NULL) {
        fflush(stdout);
        return rc;
    }
    if (fclose(f) != 0 && rc == 0) {
        rc = GANTRY_EXIT_FAILED;
    }
    if (rc != 0 || rename(tmp, file) != 0) {
        remove(tmp);
        return rc != 0 ? rc : GANTRY_EXIT_FAILED;
    }
    fprintf(stderr, "audit events written to %s\n", file);
    return 0;
}

const struct gantry_cmd gantry_tenant_cmds[] = {
    {"namespace", "create", "NAME [--description D] [--label K=V ...]", "create a namespace",
     "gantry namespace create team-a --description \"team A's agents\" --label cost-center=42", ns_create,
     false},
    {"namespace", "get", "NAME [--min-revision N | --max-staleness DURATION] [--show-revision]",
     "show a namespace; read options as `sandbox get` (default: linearizable)",
     "gantry namespace get team-a -o yaml --min-revision 1200", ns_get, false},
    {"namespace", "list",
     "[--selector K=V ...] [--min-revision N | --max-staleness DURATION] [--show-revision]",
     "list the namespaces you may see; read options as `sandbox get`",
     "gantry namespace list --selector cost-center=42 --show-revision", ns_list, false},
    {"namespace", "update", "NAME [--description D] [--label K=V ...]",
     "change a namespace's description or labels (--label replaces the labels)",
     "gantry namespace update team-a --description \"team A\"", ns_update, false},
    {"namespace", "delete", "NAME",
     "delete a namespace (two-phase: it is TERMINATING first; docs/resources.md)",
     "gantry namespace delete team-a", ns_delete, false},
    {"quota", "get", "[--namespace NS]", "a namespace's quota, its ceiling and what it uses now",
     "gantry quota get --namespace team-a", quota_get, false},
    {"quota", "list", "", "every namespace with a quota or a ceiling, and its usage", "gantry quota list",
     quota_list, false},
    {"quota", "set",
     "[--namespace NS] [--max-sandboxes N] [--max-gpus N] [--max-lifetime SECONDS] [--mode hard|soft]",
     "set a namespace's quota (0: unlimited; hard rejects what would exceed, soft records a warning); a "
     "namespace_admin sets its namespace's within the ceiling",
     "gantry quota set --namespace team-a --max-sandboxes 10 --max-gpus 2 --max-lifetime 86400", quota_set,
     false},
    {"quota", "delete", "[--namespace NS]", "remove a namespace's quota (its ceiling stays)",
     "gantry quota delete --namespace team-a", quota_delete, false},
    {"quota", "set-ceiling", "[--namespace NS] [--max-sandboxes N] [--max-gpus N] [--max-lifetime SECONDS]",
     "platform_admin: the most a namespace may have (0: no limit); its namespace_admin may then set its "
     "quota within it, and it is enforced, always hard",
     "gantry quota set-ceiling --namespace team-a --max-sandboxes 20 --max-gpus 4", ceiling_set, false},
    {"quota", "delete-ceiling", "[--namespace NS]",
     "platform_admin: remove a namespace's ceiling (its namespace_admin can no longer change its quota)",
     "gantry quota delete-ceiling --namespace team-a", ceiling_delete, false},
    {"policy", "get", "[--namespace NS | --gateway]",
     "the policy set on a namespace, or the gateway-wide one", "gantry policy get --gateway", policy_get,
     false},
    {"policy", "effective", "[--namespace NS]",
     "the policy that applies in a namespace: its own within the gateway's",
     "gantry policy effective --namespace team-a", policy_effective, false},
    {"policy", "set",
     "[--namespace NS | --gateway] [--allow-image GLOB ...] [--allow-driver D ...] [--allow-config-key GLOB "
     "...] "
     "[--egress-allow HOST[:PORT] ...] [--allow-service-account NAME ...] [--max-lifetime S] [--max-gpus N] "
     "[--deny-gpus] [--allow-shares] [--allow-exec-shares]",
     "replace a policy; a namespace's may only tighten the gateway's (what is left out: any / unlimited / "
     "off; service accounts: none)",
     "gantry policy set --namespace team-a --allow-image 'python:*' --max-lifetime 3600 --allow-shares",
     policy_set, false},
    {"policy", "delete", "[--namespace NS | --gateway]", "remove a policy",
     "gantry policy delete --namespace team-a", policy_delete, false},
    {"policy", "test",
     "HOST:PORT [--namespace NS] [--transport tcp|connect|http|tls|dns] [--sni NAME] [--http-host NAME] "
     "[--sandbox NAME]",
     "would the namespace's egress policy let a sandbox connect there? (Egress.Decide; exit 6 when refused)",
     "gantry policy test api.github.com:443 --namespace team-a --transport tls --sni api.github.com",
     policy_test, false},
    {"usage", "query",
     "[--namespace NS | -A] [--since TIME] [--until TIME] [--owner P] [--selector K=V ...] "
     "[--group-by namespace|owner|label:KEY ...]",
     "sandbox-seconds and GPU-seconds per run, or totals per group; TIME: -1d, ms, or 2026-01-31T00:00:00Z",
     "gantry usage query -A --since -7d --group-by namespace", usage_query, false},
    {"audit", "query",
     "[--namespace NS | -A] [--since TIME] [--until TIME] [--actor P] [--operation /gantry.v1.S/M] [--class "
     "UID] "
     "[--limit N]",
     "audit events as a table (or -o json|yaml)", "gantry audit query -A --since -1h --limit 20", audit_query,
     false},
    {"audit", "export", "[--namespace NS | -A] [--since TIME] [--until TIME] [--file FILE]",
     "every audit event as OCSF JSON lines, on stdout or into FILE",
     "gantry audit export -A --file audit.jsonl", audit_export, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
