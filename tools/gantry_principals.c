/* gantry whoami, user, sa, role, identity, key: the Principals and ApiKeys services (docs/cli.md).
 * Principals are named by id or name everywhere; the server resolves either. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gantry/v1/api_keys.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "tools/gantry.h"

static const struct gantry_col principal_cols[] = {
    {"NAME", "meta.name", NULL, false},
    {"KIND", "kind", "PRINCIPAL_KIND_", false},
    {"ID", "meta.id", NULL, false},
    {"DISABLED", "disabled", NULL, false},
    {"DISPLAY NAME", "display_name", NULL, false},
    {"OIDC ISSUER", "oidc_issuer", NULL, false},
    {"OIDC SUBJECT", "oidc_subject", NULL, false},
    {NULL, NULL, NULL, false},
};

static const struct gantry_col binding_cols[] = {
    {"ID", "meta.id", NULL, false},
    {"PRINCIPAL", "principal_id", NULL, false},
    {"ROLE", "role", "ROLE_", false},
    {"NAMESPACE", "namespace", NULL, false},
    {"DELEGATED TO", "delegation.namespace_patterns", NULL, false},
    {"CREATED", "meta.created_at_ms", NULL, true},
    {NULL, NULL, NULL, false},
};

static const struct gantry_col key_cols[] = {
    {"ID", "meta.id", NULL, false},
    {"NAME", "meta.name", NULL, false},
    {"PREFIX", "prefix", NULL, false},
    {"PRINCIPAL", "principal_id", NULL, false},
    {"REVOKED", "revoked", NULL, false},
    {"EXPIRES", "expires_at_ms", NULL, true},
    {"LAST USED", "last_used_at_ms", NULL, true},
    {NULL, NULL, NULL, false},
};

/* --- whoami --- */

static int whoami(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("whoami", NULL), argc, argv, 0, 0);
    Gantry__V1__WhoAmIRequest req = GANTRY__V1__WHO_AM_IREQUEST__INIT;
    json_t *doc;
    if (rc != 0 || (rc = gantry_call_json(c, "/gantry.v1.Principals/WhoAmI", &req.base,
                                          &gantry__v1__who_am_iresponse__descriptor, NULL, &doc)) != 0) {
        return rc;
    }
    if (c->out != GANTRY_OUT_TABLE) {
        gantry_print(c, doc, NULL, NULL);
        json_decref(doc);
        return 0;
    }
    gantry_print(c, json_object_get(doc, "principal"), NULL, principal_cols);
    printf("\nROLE BINDINGS\n");
    gantry_print(c, doc, "bindings", binding_cols);
    /* The effective permissions, when the server reports them. */
    json_t *perms = json_object_get(doc, "permissions");
    if (json_array_size(perms) > 0) {
        static const struct gantry_col perm_cols[] = {{"METHOD", "method", "/gantry.v1.", false},
                                                      {"NAMESPACE", "namespace", NULL, false},
                                                      {"CONDITION", "condition", NULL, false},
                                                      {NULL, NULL, NULL, false}};
        printf("\nPERMISSIONS\n");
        gantry_print(c, doc, "permissions", perm_cols);
    }
    json_decref(doc);
    return 0;
}

/* --- users and service accounts --- */

static bool is_sa(const char *group)
{
    return strcmp(group, "sa") == 0;
}

static int p_create(struct cli *c, const char *group, int argc, char **argv)
{
    const char *iss = gantry_opt(&argc, argv, "--oidc-issuer"),
               *sub = gantry_opt(&argc, argv, "--oidc-subject");
    const char *dn = gantry_opt(&argc, argv, "--display-name"), *email = gantry_opt(&argc, argv, "--email");
    int rc = gantry_args(gantry_find(group, "create"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if ((iss == NULL) != (sub == NULL)) {
        fprintf(stderr, "gantry %s create: --oidc-issuer and --oidc-subject go together\n", group);
        return GANTRY_EXIT_USAGE;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Principal p = GANTRY__V1__PRINCIPAL__INIT;
    Gantry__V1__CreatePrincipalRequest req = GANTRY__V1__CREATE_PRINCIPAL_REQUEST__INIT;
    meta.name = argv[0];
    p.meta = &meta;
    p.kind = is_sa(group) ? GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT
                          : GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    p.oidc_issuer = (char *)(iss != NULL ? iss : "");
    p.oidc_subject = (char *)(sub != NULL ? sub : "");
    p.display_name = (char *)(dn != NULL ? dn : "");
    p.email = (char *)(email != NULL ? email : "");
    req.principal = &p;
    req.request_id = rid;
    /* Only an explicit --namespace binds the new principal there with the user role (what a
     * namespace_admin onboarding a user must do); the context's namespace never does. */
    req.namespace_ = (char *)(c->ns_flag ? c->ns : "");
    return gantry_simple(c, "/gantry.v1.Principals/Create", &req.base, &gantry__v1__principal__descriptor,
                         NULL, principal_cols);
}

static int p_get(struct cli *c, const char *group, int argc, char **argv)
{
    int rc = gantry_args(gantry_find(group, "get"), argc, argv, 1, 1);
    Gantry__V1__GetPrincipalRequest req = GANTRY__V1__GET_PRINCIPAL_REQUEST__INIT;
    req.id = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Principals/Get", &req.base,
                                   &gantry__v1__principal__descriptor, NULL, principal_cols);
}

static int p_list(struct cli *c, const char *group, int argc, char **argv)
{
    int rc = gantry_args(gantry_find(group, "list"), argc, argv, 0, 0);
    Gantry__V1__ListPrincipalsRequest req = GANTRY__V1__LIST_PRINCIPALS_REQUEST__INIT;
    req.kind = is_sa(group) ? GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT
                            : GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    req.namespace_ = (char *)(c->ns_flag ? c->ns : ""); /* only a namespace given on this command line */
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Principals/List", &req.base,
                                   &gantry__v1__list_principals_response__descriptor, "principals",
                                   principal_cols);
}

/* Read, change what was asked, write back with the version read (ABORTED if it changed between). */
static int p_update(struct cli *c, const char *group, const char *name, int argc, char **argv)
{
    const char *dn = NULL, *email = NULL;
    if (strcmp(name, "update") == 0) {
        dn = gantry_opt(&argc, argv, "--display-name");
        email = gantry_opt(&argc, argv, "--email");
    }
    int rc = gantry_args(gantry_find(group, name), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(name, "update") == 0 && dn == NULL && email == NULL) {
        fprintf(stderr, "gantry %s update: nothing to change: give --display-name and/or --email\n", group);
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__GetPrincipalRequest get = GANTRY__V1__GET_PRINCIPAL_REQUEST__INIT;
    get.id = argv[0];
    ProtobufCMessage *out;
    if ((rc = gantry_call(c, "/gantry.v1.Principals/Get", &get.base, &gantry__v1__principal__descriptor, NULL,
                          NULL, &out, 10000)) != 0) {
        return rc;
    }
    Gantry__V1__Principal *p = (Gantry__V1__Principal *)out;
    char *old_dn = p->display_name, *old_email = p->email;
    p->display_name = (char *)(dn != NULL ? dn : old_dn);
    p->email = (char *)(email != NULL ? email : old_email);
    if (strcmp(name, "disable") == 0 || strcmp(name, "enable") == 0) {
        p->disabled = strcmp(name, "disable") == 0;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__UpdatePrincipalRequest req = GANTRY__V1__UPDATE_PRINCIPAL_REQUEST__INIT;
    req.request_id = rid;
    req.principal = p;
    req.expected_resource_version = p->meta->resource_version;
    rc = gantry_simple(c, "/gantry.v1.Principals/Update", &req.base, &gantry__v1__principal__descriptor, NULL,
                       principal_cols);
    p->display_name = old_dn;
    p->email = old_email;
    protobuf_c_message_free_unpacked(out, NULL);
    return rc;
}

static int p_delete(struct cli *c, const char *group, int argc, char **argv)
{
    int rc = gantry_args(gantry_find(group, "delete"), argc, argv, 1, 1);
    char id[64], rid[37];
    if (rc != 0 || (rc = gantry_principal_id(c, argv[0], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__DeletePrincipalRequest req = GANTRY__V1__DELETE_PRINCIPAL_REQUEST__INIT;
    req.request_id = rid;
    req.id = id;
    static const struct gantry_col cols[] = {
        {"DELETED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, {NULL, NULL, NULL, false}};
    return gantry_simple(c, "/gantry.v1.Principals/Delete", &req.base,
                         &gantry__v1__delete_response__descriptor, NULL, cols);
}

#define PRINCIPAL_CMDS(G)                                                                                    \
    static int G##_create(struct cli *c, int argc, char **argv)                                              \
    {                                                                                                        \
        return p_create(c, #G, argc, argv);                                                                  \
    }                                                                                                        \
    static int G##_get(struct cli *c, int argc, char **argv)                                                 \
    {                                                                                                        \
        return p_get(c, #G, argc, argv);                                                                     \
    }                                                                                                        \
    static int G##_list(struct cli *c, int argc, char **argv)                                                \
    {                                                                                                        \
        return p_list(c, #G, argc, argv);                                                                    \
    }                                                                                                        \
    static int G##_update(struct cli *c, int argc, char **argv)                                              \
    {                                                                                                        \
        return p_update(c, #G, "update", argc, argv);                                                        \
    }                                                                                                        \
    static int G##_disable(struct cli *c, int argc, char **argv)                                             \
    {                                                                                                        \
        return p_update(c, #G, "disable", argc, argv);                                                       \
    }                                                                                                        \
    static int G##_enable(struct cli *c, int argc, char **argv)                                              \
    {                                                                                                        \
        return p_update(c, #G, "enable", argc, argv);                                                        \
    }                                                                                                        \
    static int G##_delete(struct cli *c, int argc, char **argv)                                              \
    {                                                                                                        \
        return p_delete(c, #G, argc, argv);                                                                  \
    }
PRINCIPAL_CMDS(user)
PRINCIPAL_CMDS(sa)

/* --- role bindings --- */

static int role_of(const char *name)
{
    char buf[64] = "ROLE_";
    size_t at = 5;
    for (const char *p = name; *p && at + 1 < sizeof buf; p++) {
        buf[at++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    }
    buf[at] = '\0';
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value_by_name(&gantry__v1__role__descriptor, buf);
    if (v == NULL || v->value == 0) {
        fprintf(stderr,
                "gantry role: \"%s\" is not a role: platform_admin, namespace_admin, auditor or user\n",
                name);
        return -1;
    }
    return v->value;
}

static bool global_role(int role)
{
    return role == GANTRY__V1__ROLE__ROLE_PLATFORM_ADMIN || role == GANTRY__V1__ROLE__ROLE_AUDITOR;
}

static int role_grant(struct cli *c, int argc, char **argv)
{
    /* A delegation scope (a platform controller's service account; docs/security.md). */
    Gantry__V1__DelegationScope ds = GANTRY__V1__DELEGATION_SCOPE__INIT;
    const char *pats[8], *keys[32], *srcs[32], *sas[32], *kns[32], *rcs[32], *sns[32], *snames[32], *wps[32],
        *tpls[32], *nsels[32], *tols[32];
    ds.n_namespace_patterns = (size_t)gantry_opt_all(&argc, argv, "--delegate", pats, 8);
    ds.n_allowed_driver_config_keys = (size_t)gantry_opt_all(&argc, argv, "--delegate-config-key", keys, 32);
    ds.n_allowed_credential_sources =
        (size_t)gantry_opt_all(&argc, argv, "--delegate-credential-source", srcs, 32);
    ds.n_allowed_service_accounts =
        (size_t)gantry_opt_all(&argc, argv, "--delegate-service-account", sas, 32);
    ds.n_allowed_kubernetes_namespaces =
        (size_t)gantry_opt_all(&argc, argv, "--delegate-kubernetes-namespace", kns, 32);
    ds.n_allowed_runtime_classes = (size_t)gantry_opt_all(&argc, argv, "--delegate-runtime-class", rcs, 32);
    ds.create_on_behalf_of_owner = gantry_flag(&argc, argv, "--on-behalf-of-owner");
    ds.n_allowed_secret_namespaces =
        (size_t)gantry_opt_all(&argc, argv, "--delegate-secret-namespace", sns, 32);
    ds.n_allowed_secret_names = (size_t)gantry_opt_all(&argc, argv, "--delegate-secret-name", snames, 32);
    ds.n_allowed_warm_pools = (size_t)gantry_opt_all(&argc, argv, "--delegate-warm-pool", wps, 32);
    ds.n_allowed_templates = (size_t)gantry_opt_all(&argc, argv, "--delegate-template", tpls, 32);
    ds.n_allowed_node_selectors = (size_t)gantry_opt_all(&argc, argv, "--delegate-node-selector", nsels, 32);
    ds.n_allowed_tolerations = (size_t)gantry_opt_all(&argc, argv, "--delegate-toleration", tols, 32);
    ds.allowed_node_selectors = (char **)nsels;
    ds.allowed_tolerations = (char **)tols;
    ds.allowed_warm_pools = (char **)wps;
    ds.allowed_templates = (char **)tpls;
    ds.allowed_secret_namespaces = (char **)sns;
    ds.allowed_secret_names = (char **)snames;
    ds.allowed_kubernetes_namespaces = (char **)kns;
    ds.allowed_runtime_classes = (char **)rcs;
    ds.namespace_patterns = (char **)pats;
    ds.allowed_driver_config_keys = (char **)keys;
    ds.allowed_credential_sources = (char **)srcs;
    ds.allowed_service_accounts = (char **)sas;
    bool delegated = ds.n_namespace_patterns > 0;
    int rc = gantry_args(gantry_find("role", "grant"), argc, argv, 2, 2), role;
    if (rc != 0 || (role = role_of(argv[1])) < 0) {
        return GANTRY_EXIT_USAGE;
    }
    if (global_role(role) && (c->ns_flag || delegated)) {
        fprintf(stderr, "gantry role grant: %s is cluster-wide: leave out --namespace and --delegate\n",
                argv[1]);
        return GANTRY_EXIT_USAGE;
    }
    if (!delegated &&
        (ds.n_allowed_driver_config_keys > 0 || ds.n_allowed_credential_sources > 0 ||
         ds.n_allowed_service_accounts > 0 || ds.n_allowed_kubernetes_namespaces > 0 ||
         ds.n_allowed_runtime_classes > 0 || ds.n_allowed_secret_namespaces > 0 ||
         ds.n_allowed_secret_names > 0 || ds.n_allowed_warm_pools > 0 || ds.n_allowed_templates > 0 ||
         ds.n_allowed_node_selectors > 0 || ds.n_allowed_tolerations > 0 || ds.create_on_behalf_of_owner)) {
        fprintf(stderr,
                "gantry role grant: the --delegate-* options and --on-behalf-of-owner need --delegate "
                "NAMESPACE-PATTERN\n");
        return GANTRY_EXIT_USAGE;
    }
    if (delegated && c->ns_flag) {
        fprintf(stderr,
                "gantry role grant: a delegated binding names its namespaces with --delegate patterns: "
                "leave out --namespace\n");
        return GANTRY_EXIT_USAGE;
    }
    char id[64], rid[37];
    if ((rc = gantry_principal_id(c, argv[0], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__RoleBinding b = GANTRY__V1__ROLE_BINDING__INIT;
    Gantry__V1__CreateRoleBindingRequest req = GANTRY__V1__CREATE_ROLE_BINDING_REQUEST__INIT;
    b.principal_id = id;
    b.role = (Gantry__V1__Role)role;
    b.namespace_ = (char *)(global_role(role) || delegated ? "" : gantry_ns(c));
    b.delegation = delegated ? &ds : NULL;
    req.binding = &b;
    req.request_id = rid;
    return gantry_simple(c, "/gantry.v1.Principals/CreateRoleBinding", &req.base,
                         &gantry__v1__role_binding__descriptor, NULL, binding_cols);
}

static int role_revoke(struct cli *c, int argc, char **argv)
{
    bool delegated = gantry_flag(&argc, argv, "--delegated");
    int rc = gantry_args(gantry_find("role", "revoke"), argc, argv, 1, 2), role = 0;
    if (rc != 0 || (argc == 2 && (role = role_of(argv[1])) < 0)) {
        return GANTRY_EXIT_USAGE;
    }
    char bid[64];
    snprintf(bid, sizeof bid, "%s", argv[0]);
    if (argc == 2) { /* PRINCIPAL ROLE: find the binding */
        char id[64];
        if ((rc = gantry_principal_id(c, argv[0], id, sizeof id)) != 0) {
            return rc;
        }
        Gantry__V1__ListRoleBindingsRequest lr = GANTRY__V1__LIST_ROLE_BINDINGS_REQUEST__INIT;
        lr.principal_id = id;
        json_t *doc;
        if ((rc = gantry_call_json(c, "/gantry.v1.Principals/ListRoleBindings", &lr.base,
                                   &gantry__v1__list_role_bindings_response__descriptor, "bindings", &doc)) !=
            0) {
            return rc;
        }
        const char *want_ns = global_role(role) || delegated ? "" : gantry_ns(c);
        const char *want_role =
            protobuf_c_enum_descriptor_get_value(&gantry__v1__role__descriptor, role)->name;
        size_t i;
        json_t *b;
        bid[0] = '\0';
        json_array_foreach(json_object_get(doc, "bindings"), i, b)
        {
            bool has_scope = json_is_object(json_object_get(b, "delegation"));
            if (strcmp(json_string_value(json_object_get(b, "role")), want_role) == 0 &&
                strcmp(json_string_value(json_object_get(b, "namespace")), want_ns) == 0 &&
                has_scope == delegated) {
                snprintf(bid, sizeof bid, "%s", json_string_value(gantry_json_path(b, "meta.id")));
            }
        }
        json_decref(doc);
        if (bid[0] == '\0') {
            fprintf(stderr,
                    "gantry role revoke: %s does not hold %s%s%s\n  see `gantry role list --principal %s`\n",
                    argv[0], argv[1], want_ns[0] ? " in " : "", want_ns, argv[0]);
            return GANTRY_EXIT_FAILED;
        }
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteRoleBindingRequest req = GANTRY__V1__DELETE_ROLE_BINDING_REQUEST__INIT;
    req.request_id = rid;
    req.id = bid;
    static const struct gantry_col cols[] = {
        {"DELETED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, {NULL, NULL, NULL, false}};
    return gantry_simple(c, "/gantry.v1.Principals/DeleteRoleBinding", &req.base,
                         &gantry__v1__delete_response__descriptor, NULL, cols);
}

static int role_list(struct cli *c, int argc, char **argv)
{
    const char *who = gantry_opt(&argc, argv, "--principal");
    int rc = gantry_args(gantry_find("role", "list"), argc, argv, 0, 0);
    char id[64] = "";
    if (rc != 0 || (who != NULL && (rc = gantry_principal_id(c, who, id, sizeof id)) != 0)) {
        return rc;
    }
    Gantry__V1__ListRoleBindingsRequest req = GANTRY__V1__LIST_ROLE_BINDINGS_REQUEST__INIT;
    req.principal_id = id;
    req.namespace_ = (char *)(c->ns_flag ? c->ns : "");
    return gantry_simple(c, "/gantry.v1.Principals/ListRoleBindings", &req.base,
                         &gantry__v1__list_role_bindings_response__descriptor, "bindings", binding_cols);
}

/* --- API keys --- */

static int key_create(struct cli *c, int argc, char **argv)
{
    const char *who = gantry_opt(&argc, argv, "--principal"), *name = gantry_opt(&argc, argv, "--name");
    const char *exp = gantry_opt(&argc, argv, "--expires");
    int rc = gantry_args(gantry_find("key", "create"), argc, argv, 0, 0);
    char id[64] = "", rid[37];
    Gantry__V1__CreateApiKeyRequest req = GANTRY__V1__CREATE_API_KEY_REQUEST__INIT;
    if (rc != 0 || gantry_time(exp, &req.expires_at_ms) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    if (who != NULL && (rc = gantry_principal_id(c, who, id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    req.principal_id = id;
    req.name = (char *)(name != NULL ? name : "");
    req.request_id = rid;
    ProtobufCMessage *out;
    if ((rc = gantry_call(c, "/gantry.v1.ApiKeys/Create", &req.base,
                          &gantry__v1__create_api_key_response__descriptor, NULL, NULL, &out, 10000)) != 0) {
        return rc;
    }
    Gantry__V1__CreateApiKeyResponse *r = (Gantry__V1__CreateApiKeyResponse *)out;
    if (c->out != GANTRY_OUT_TABLE) {
        json_t *doc = gantry_json(out);
        gantry_print(c, doc, NULL, NULL);
        json_decref(doc);
    } else {
        printf("%s\n", r->secret);
    }
    fprintf(stderr,
            "API key %s (id %s) for principal %s: shown once, keep it in a file (mode 0600) and use it with "
            "--token-file, GANTRY_TOKEN or `gantry context create --token-file`\n",
            r->key->prefix, r->key->meta->id, r->key->principal_id);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int key_list(struct cli *c, int argc, char **argv)
{
    const char *who = gantry_opt(&argc, argv, "--principal");
    int rc = gantry_args(gantry_find("key", "list"), argc, argv, 0, 0);
    char id[64] = "";
    if (rc != 0 || (who != NULL && (rc = gantry_principal_id(c, who, id, sizeof id)) != 0)) {
        return rc;
    }
    Gantry__V1__ListApiKeysRequest req = GANTRY__V1__LIST_API_KEYS_REQUEST__INIT;
    req.principal_id = id;
    return gantry_simple(c, "/gantry.v1.ApiKeys/List", &req.base,
                         &gantry__v1__list_api_keys_response__descriptor, "keys", key_cols);
}

static int key_get(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("key", "get"), argc, argv, 1, 1);
    Gantry__V1__GetApiKeyRequest req = GANTRY__V1__GET_API_KEY_REQUEST__INIT;
    req.id = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.ApiKeys/Get", &req.base, &gantry__v1__api_key__descriptor,
                                   NULL, key_cols);
}

static int key_revoke_or_delete(struct cli *c, int argc, char **argv, bool del)
{
    int rc = gantry_args(gantry_find("key", del ? "delete" : "revoke"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__RevokeApiKeyRequest req = GANTRY__V1__REVOKE_API_KEY_REQUEST__INIT;
    req.request_id = rid;
    req.id = argv[0];
    static const struct gantry_col del_cols[] = {
        {"DELETED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, {NULL, NULL, NULL, false}};
    return del ? gantry_simple(c, "/gantry.v1.ApiKeys/Delete", &req.base,
                               &gantry__v1__delete_response__descriptor, NULL, del_cols)
               : gantry_simple(c, "/gantry.v1.ApiKeys/Revoke", &req.base, &gantry__v1__api_key__descriptor,
                               NULL, key_cols);
}

static int key_revoke(struct cli *c, int argc, char **argv)
{
    return key_revoke_or_delete(c, argc, argv, false);
}

static int key_delete(struct cli *c, int argc, char **argv)
{
    return key_revoke_or_delete(c, argc, argv, true);
}

/* --- external identities: the same person from a second OIDC issuer, or a client certificate --- */

static const struct gantry_col identity_cols[] = {
    {"PRINCIPAL", "principal_id", NULL, false}, {"ISSUER", "issuer", NULL, false},
    {"SUBJECT", "subject", NULL, false},        {"LINKED BY", "created_by", NULL, false},
    {"AT", "created_at_ms", NULL, true},        {NULL, NULL, NULL, false},
};

static int identity_link(struct cli *c, int argc, char **argv)
{
    const char *iss = gantry_opt(&argc, argv, "--issuer"), *sub = gantry_opt(&argc, argv, "--subject");
    int rc = gantry_args(gantry_find("identity", "link"), argc, argv, 1, 1);
    if (rc != 0 || iss == NULL || sub == NULL) {
        if (rc == 0) {
            fprintf(stderr, "gantry identity link: --issuer and --subject are required\n");
        }
        return GANTRY_EXIT_USAGE;
    }
    char id[64], rid[37];
    if ((rc = gantry_principal_id(c, argv[0], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__ExternalIdentity e = GANTRY__V1__EXTERNAL_IDENTITY__INIT;
    Gantry__V1__LinkIdentityRequest req = GANTRY__V1__LINK_IDENTITY_REQUEST__INIT;
    e.principal_id = id;
    e.issuer = (char *)iss;
    e.subject = (char *)sub;
    req.request_id = rid;
    req.identity = &e;
    return gantry_simple(c, "/gantry.v1.Principals/LinkIdentity", &req.base,
                         &gantry__v1__external_identity__descriptor, NULL, identity_cols);
}

static int identity_unlink(struct cli *c, int argc, char **argv)
{
    const char *iss = gantry_opt(&argc, argv, "--issuer"), *sub = gantry_opt(&argc, argv, "--subject");
    int rc = gantry_args(gantry_find("identity", "unlink"), argc, argv, 0, 0);
    if (rc != 0 || iss == NULL || sub == NULL) {
        if (rc == 0) {
            fprintf(stderr, "gantry identity unlink: --issuer and --subject are required\n");
        }
        return GANTRY_EXIT_USAGE;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__UnlinkIdentityRequest req = GANTRY__V1__UNLINK_IDENTITY_REQUEST__INIT;
    req.request_id = rid;
    req.issuer = (char *)iss;
    req.subject = (char *)sub;
    static const struct gantry_col cols[] = {
        {"UNLINKED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, {NULL, NULL, NULL, false}};
    return gantry_simple(c, "/gantry.v1.Principals/UnlinkIdentity", &req.base,
                         &gantry__v1__delete_response__descriptor, NULL, cols);
}

static int identity_list(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("identity", "list"), argc, argv, 0, 1);
    Gantry__V1__ListIdentitiesRequest req = GANTRY__V1__LIST_IDENTITIES_REQUEST__INIT;
    req.principal_id = argc == 1 ? argv[0] : ""; /* the server takes an id or a name */
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Principals/ListIdentities", &req.base,
                                   &gantry__v1__list_identities_response__descriptor, "identities",
                                   identity_cols);
}

#define PRINCIPAL_TABLE(G, WHAT, EX)                                                                         \
    {#G,                                                                                                     \
     "create",                                                                                               \
     "NAME [--display-name D] [--email E]" EX,                                                               \
     "create a " WHAT,                                                                                       \
     "gantry " #G " create ci-bot",                                                                          \
     G##_create,                                                                                             \
     false},                                                                                                 \
        {#G, "get", "ID|NAME", "show a " WHAT, "gantry " #G " get ci-bot -o yaml", G##_get, false},          \
        {#G,                                                                                                 \
         "list",                                                                                             \
         "[--namespace NS]",                                                                                 \
         "list the " WHAT "s (--namespace: only those bound in NS)",                                         \
         "gantry " #G " list --namespace demo",                                                              \
         G##_list,                                                                                           \
         false},                                                                                             \
        {#G,                                                                                                 \
         "update",                                                                                           \
         "ID|NAME [--display-name D] [--email E]",                                                           \
         "change a " WHAT "'s display name or email",                                                        \
         "gantry " #G " update ci-bot --display-name \"CI robot\"",                                          \
         G##_update,                                                                                         \
         false},                                                                                             \
        {#G,                                                                                                 \
         "disable",                                                                                          \
         "ID|NAME",                                                                                          \
         "disable a " WHAT ": its credentials stop authenticating",                                          \
         "gantry " #G " disable ci-bot",                                                                     \
         G##_disable,                                                                                        \
         false},                                                                                             \
        {#G,         "enable", "ID|NAME", "enable a disabled " WHAT, "gantry " #G " enable ci-bot",          \
         G##_enable, false},                                                                                 \
    {                                                                                                        \
#G, "delete", "ID|NAME", "delete a " WHAT "", "gantry " #G " delete ci-bot", G##_delete, false       \
    }

const struct gantry_cmd gantry_principal_cmds[] = {
    {"whoami", NULL, "",
     "who the credential is: the principal, its role bindings and its effective permissions",
     "gantry whoami -o yaml", whoami, false},
    PRINCIPAL_TABLE(user, "user", " [--oidc-issuer ISSUER --oidc-subject SUBJECT] [--namespace NS]"),
    PRINCIPAL_TABLE(sa, "service account", " [--oidc-issuer ISSUER --oidc-subject SUBJECT] [--namespace NS]"),
    {"role", "grant",
     "PRINCIPAL ROLE [--namespace NS | --delegate NS-PATTERN ... [--delegate-config-key GLOB ...] "
     "[--delegate-credential-source GLOB ...] [--delegate-service-account NAME ...] "
     "[--delegate-kubernetes-namespace PATTERN ...] "
     "[--delegate-runtime-class NAME ...] [--delegate-secret-namespace PATTERN ...] "
     "[--delegate-secret-name PATTERN ...] [--delegate-warm-pool NAME ...] [--delegate-template NAME ...] "
     "[--delegate-node-selector KEY=VALUE ...] [--delegate-toleration KEY[=VALUE][:EFFECT] ...] "
     "[--on-behalf-of-owner]]",
     "bind ROLE (platform_admin, auditor: cluster-wide; namespace_admin, user: in NS, default the context's "
     "or "
     "\"default\") to PRINCIPAL (an id or a name); --delegate gives a service account the role in every "
     "namespace a pattern matches, within a delegation scope (docs/security.md)",
     "gantry role grant alice namespace_admin --namespace team-a\n"
     "gantry role grant ci-controller user --delegate 'team-*' --delegate-credential-source 'gh-*' "
     "--on-behalf-of-owner",
     role_grant, false},
    {"role", "revoke", "BINDING-ID | PRINCIPAL ROLE [--namespace NS | --delegated]", "remove a role binding",
     "gantry role revoke alice user --namespace team-a", role_revoke, false},
    {"role", "list", "[--principal P] [--namespace NS]", "list role bindings",
     "gantry role list --principal alice", role_list, false},
    {"identity", "link", "PRINCIPAL --issuer ISSUER --subject SUBJECT",
     "link an external identity to PRINCIPAL (id or name): an OIDC issuer name from the issuers file and its "
     "subject, or --issuer mtls and a client certificate's common name; that identity then authenticates as "
     "PRINCIPAL",
     "gantry identity link alice --issuer corp-google --subject 1090218", identity_link, false},
    {"identity", "unlink", "--issuer ISSUER --subject SUBJECT", "remove a linked identity",
     "gantry identity unlink --issuer corp-google --subject 1090218", identity_unlink, false},
    {"identity", "list", "[PRINCIPAL]", "the identities linked to PRINCIPAL (default: yourself)",
     "gantry identity list alice", identity_list, false},
    {"key", "create", "[--principal P] [--name N] [--expires TIME]",
     "create an API key (default: for yourself), printed once on stdout; TIME: +30d, +12h, ms since the "
     "epoch "
     "or 2027-01-31T00:00:00Z",
     "gantry key create --principal ci-bot --name ci --expires +90d > ci-bot.key && chmod 600 ci-bot.key",
     key_create, false},
    {"key", "list", "[--principal P]", "list API keys (never their secrets)",
     "gantry key list --principal ci-bot", key_list, false},
    {"key", "get", "ID", "show an API key", "gantry key get 5f0c...", key_get, false},
    {"key", "revoke", "ID", "revoke an API key: it stops working within 2 s; the record stays",
     "gantry key revoke 5f0c...", key_revoke, false},
    {"key", "delete", "ID", "delete an API key and its record", "gantry key delete 5f0c...", key_delete,
     false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
