/* The authorization table and decisions (api/authz/authz.h). */
#include "api/authz/authz.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lib/mem.h"

#define R(path, action, field, optional, mutating)                                                           \
    {                                                                                                        \
        "/gantry.v1." path, action, field, optional, mutating                                                \
    }

/* One row per RPC. Keep it sorted by service as the protos are; docs/api.md is generated from it. */
static const struct authz_rule rules[] = {
    /* Cluster: operations on the gateway cluster itself. */
    R("Cluster/ListMembers", AZ_CLUSTER, NULL, false, false),
    R("Cluster/GetLeader", AZ_CLUSTER, NULL, false, false),
    R("Cluster/GetLease", AZ_CLUSTER, NULL, false, false),
    R("Cluster/TransferLeadership", AZ_CLUSTER, NULL, false, true),
    R("Cluster/RemoveMember", AZ_CLUSTER, NULL, false, true),
    R("Cluster/Backup", AZ_CLUSTER, NULL, false, false),
    R("Cluster/CreateJoinToken", AZ_CLUSTER, NULL, false, true),
    R("Cluster/ListJoinTokens", AZ_CLUSTER, NULL, false, false),
    R("Cluster/RevokeJoinToken", AZ_CLUSTER, NULL, false, true),
    R("Cluster/Join", AZ_TOKEN, NULL, false, true),
    R("Cluster/GetHealth", AZ_CLUSTER, NULL, false, false),
    /* Namespaces. */
    R("Namespaces/Create", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Namespaces/Get", AZ_NS_READ, "name", false, false),
    R("Namespaces/List", AZ_AUTHENTICATED, NULL, false, false),
    R("Namespaces/Update", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Namespaces/Delete", AZ_GLOBAL_WRITE, NULL, false, true),
    /* Principals and role bindings. */
    R("Principals/Create", AZ_PRINCIPAL_CREATE, "namespace", true, true),
    R("Principals/Get", AZ_PRINCIPAL_READ, NULL, false, false),
    R("Principals/WhoAmI", AZ_AUTHENTICATED, NULL, false, false),
    R("Principals/List", AZ_PRINCIPAL_READ, NULL, false, false),
    R("Principals/Update", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Principals/Delete", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Principals/CreateRoleBinding", AZ_BINDING_WRITE, "binding.namespace", true, true),
    R("Principals/DeleteRoleBinding", AZ_BINDING_WRITE, NULL, false, true),
    R("Principals/ListRoleBindings", AZ_PRINCIPAL_READ, NULL, false, false),
    R("Principals/LinkIdentity", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Principals/UnlinkIdentity", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Principals/ListIdentities", AZ_PRINCIPAL_READ, NULL, false, false),
    /* API keys. */
    R("ApiKeys/Create", AZ_APIKEY, NULL, false, true),
    R("ApiKeys/Get", AZ_APIKEY_READ, NULL, false, false),
    R("ApiKeys/List", AZ_APIKEY_READ, NULL, false, false),
    R("ApiKeys/Revoke", AZ_APIKEY, NULL, false, true),
    R("ApiKeys/Delete", AZ_APIKEY, NULL, false, true),
    /* Sandboxes. */
    R("Sandboxes/Create", AZ_SANDBOX_CREATE, "sandbox.meta.namespace", false, true),
    R("Sandboxes/Get", AZ_SANDBOX_READ, "namespace", false, false),
    R("Sandboxes/List", AZ_NS_READ, "namespace", true, false),
    R("Sandboxes/Delete", AZ_SANDBOX_WRITE, "namespace", false, true),
    R("Sandboxes/Share", AZ_SANDBOX_WRITE, "namespace", false, true),
    R("Sandboxes/Unshare", AZ_SANDBOX_WRITE, "namespace", false, true),
    R("Sandboxes/ListSharedWithMe", AZ_AUTHENTICATED, NULL, false, false),
    R("Sandboxes/Watch", AZ_NS_READ, "namespace", true, false),
    /* Events.Watch: every kind but Sandbox; the handler filters each event as the kind's Get. */
    R("Events/Watch", AZ_NS_READ, "namespace", true, false),
    R("Sandboxes/Logs", AZ_SANDBOX_USE, "namespace", false, false),
    R("Sandboxes/Exec", AZ_SANDBOX_USE, "start.namespace", false, false),
    R("Sandboxes/PortForward", AZ_SANDBOX_USE, "start.namespace", false, false),
    /* Providers: namespace-scoped credentials, managed by namespace admins. */
    R("Providers/Create", AZ_NS_ADMIN, "provider.meta.namespace", false, true),
    R("Providers/Get", AZ_NS_READ, "namespace", false, false),
    R("Providers/List", AZ_NS_READ, "namespace", false, false),
    R("Providers/Update", AZ_NS_ADMIN, "provider.meta.namespace", false, true),
    R("Providers/Delete", AZ_NS_ADMIN, "namespace", false, true),
    R("Providers/Grant", AZ_NS_ADMIN, "namespace", false, true),
    R("Providers/RevokeGrant", AZ_NS_ADMIN, "namespace", false, true),
    R("Providers/ListGrants", AZ_NS_READ, "namespace", false, false),
    /* Policies: the gateway policy (empty namespace) and namespace policies. */
    R("Policies/Get", AZ_NS_READ, "namespace", true, false),
    R("Policies/GetEffective", AZ_NS_READ, "namespace", false, false),
    R("Policies/Set", AZ_POLICY_WRITE, "policy.meta.namespace", true, true),
    R("Policies/Delete", AZ_POLICY_WRITE, "namespace", true, true),
    R("Egress/Decide", AZ_NS_READ, "intent.namespace", false, false),
    /* WarmPools: Gantry-owned warm pools, managed by namespace admins (placement checked by the
     * handler against a delegated caller's scope). */
    R("WarmPools/Create", AZ_NS_ADMIN, "warm_pool.meta.namespace", false, true),
    R("WarmPools/Get", AZ_NS_READ, "namespace", false, false),
    R("WarmPools/List", AZ_NS_READ, "namespace", false, false),
    R("WarmPools/Update", AZ_NS_ADMIN, "namespace", false, true),
    R("WarmPools/Delete", AZ_NS_ADMIN, "namespace", false, true),
    /* Quotas: a platform admin sets each namespace's ceiling; the namespace's admin sets its quota
     * within it; readable in the namespace. */
    R("Quotas/Get", AZ_NS_READ, "namespace", false, false),
    R("Quotas/List", AZ_GLOBAL_READ, NULL, false, false),
    R("Quotas/Set", AZ_QUOTA_WRITE, "quota.meta.namespace", false, true),
    R("Quotas/Delete", AZ_QUOTA_WRITE, "namespace", false, true),
    R("Quotas/SetCeiling", AZ_GLOBAL_WRITE, NULL, false, true),
    R("Quotas/DeleteCeiling", AZ_GLOBAL_WRITE, NULL, false, true),
    /* Usage and audit. */
    R("Usage/Query", AZ_NS_READ, "namespace", true, false),
    R("Audit/Query", AZ_AUDIT_READ, "namespace", true, false),
    R("Audit/Export", AZ_AUDIT_READ, "namespace", true, false),
};
#undef R

const struct authz_rule *authz_rule_find(const char *path)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if (strcmp(rules[i].path, path) == 0) {
            return &rules[i];
        }
    }
    return NULL;
}

size_t authz_rule_count(void)
{
    return sizeof rules / sizeof rules[0];
}

const struct authz_rule *authz_rule_at(size_t i)
{
    return i < authz_rule_count() ? &rules[i] : NULL;
}

int authz_table_check(const ProtobufCServiceDescriptor *const *services, char *errmsg)
{
    size_t methods = 0;
    for (size_t s = 0; services[s] != NULL; s++) {
        for (unsigned m = 0; m < services[s]->n_methods; m++) {
            char path[256];
            snprintf(path, sizeof path, "/%s/%s", services[s]->name, services[s]->methods[m].name);
            if (authz_rule_find(path) == NULL) {
                gerr_set(errmsg,
                         "authorization: %s has no entry in the authorization table (api/authz/authz.c)",
                         path);
                return GERR_INVAL;
            }
            methods++;
        }
    }
    if (methods != authz_rule_count()) {
        gerr_set(errmsg,
                 "authorization: the table has %zu entries for %zu methods: a rule names a method that does "
                 "not exist",
                 authz_rule_count(), methods);
        return GERR_INVAL;
    }
    return 0;
}

const char *authz_role_name(enum authz_role r)
{
    switch (r) {
    case AZ_ROLE_PLATFORM_ADMIN:
        return "platform_admin";
    case AZ_ROLE_NAMESPACE_ADMIN:
        return "namespace_admin";
    case AZ_ROLE_AUDITOR:
        return "auditor";
    case AZ_ROLE_USER:
        return "user";
    }
    return "unknown";
}

enum authz_role authz_role_parse(const char *name)
{
    for (int r = AZ_ROLE_PLATFORM_ADMIN; r <= AZ_ROLE_USER; r++) {
        if (strcmp(name, authz_role_name((enum authz_role)r)) == 0) {
            return (enum authz_role)r;
        }
    }
    return 0;
}

const char *authz_action_describe(enum authz_action a)
{
    switch (a) {
    case AZ_TOKEN:
        return "a join token in the request (no principal)";
    case AZ_AUTHENTICATED:
        return "any authenticated principal";
    case AZ_CLUSTER:
        return "platform_admin";
    case AZ_GLOBAL_WRITE:
        return "platform_admin";
    case AZ_GLOBAL_READ:
        return "platform_admin or auditor";
    case AZ_NS_READ:
        return "platform_admin, auditor, or any role in the namespace";
    case AZ_NS_ADMIN:
        return "platform_admin or namespace_admin of the namespace";
    case AZ_SANDBOX_CREATE:
        return "platform_admin, or namespace_admin or user of the namespace";
    case AZ_SANDBOX_READ:
        return "platform_admin, auditor, namespace_admin of the namespace, or a user of it who owns the "
               "sandbox or "
               "has it shared";
    case AZ_SANDBOX_WRITE:
        return "platform_admin, namespace_admin of the namespace, or a user of it who owns the sandbox";
    case AZ_POLICY_WRITE:
        return "platform_admin (gateway policy) or namespace_admin of the namespace (tighten only)";
    case AZ_BINDING_WRITE:
        return "platform_admin, or namespace_admin of the namespace for the user role";
    case AZ_PRINCIPAL_READ:
        return "platform_admin, auditor or a namespace_admin; anyone for themselves";
    case AZ_APIKEY:
        return "platform_admin; the key's own principal (not an auditor); a namespace_admin for principals "
               "whose only bindings are the user role in namespaces it administers";
    case AZ_APIKEY_READ:
        return "platform_admin or auditor; the key's own principal; a namespace_admin for principals whose "
               "only bindings are the user role in namespaces it administers";
    case AZ_PRINCIPAL_CREATE:
        return "platform_admin, or namespace_admin of the namespace for a user it binds there with the "
               "user role";
    case AZ_QUOTA_WRITE:
        return "platform_admin, or namespace_admin of the namespace within the ceiling a platform_admin set";
    case AZ_AUDIT_READ:
        return "platform_admin or auditor; namespace_admin for their namespace";
    case AZ_SANDBOX_USE:
        return "platform_admin, namespace_admin of the namespace, or a member of it who owns the sandbox or "
               "holds a share of it";
    }
    return "?";
}

/* The string at the dotted @path in @msg ("" when a message on the way is unset). */
static const char *field_string(const ProtobufCMessage *msg, const char *path)
{
    char part[64];
    while (msg != NULL && *path != '\0') {
        const char *dot = strchr(path, '.');
        size_t n = dot != NULL ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part) {
            return "";
        }
        memcpy(part, path, n);
        part[n] = '\0';
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, part);
        if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED) {
            return "";
        }
        const void *at = (const char *)msg + f->offset;
        if (dot == NULL) {
            if (f->type != PROTOBUF_C_TYPE_STRING) {
                return "";
            }
            const char *s = *(char *const *)at;
            return s != NULL ? s : "";
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            return "";
        }
        msg = *(const ProtobufCMessage *const *)at;
        path = dot + 1;
    }
    return "";
}

/* The enum (or int) field @name of the message field @msg_field of @req; 0 when either is unset. */
static int field_enum(const ProtobufCMessage *req, const char *msg_field, const char *name)
{
    const ProtobufCFieldDescriptor *mf =
        protobuf_c_message_descriptor_get_field_by_name(req->descriptor, msg_field);
    if (mf == NULL || mf->type != PROTOBUF_C_TYPE_MESSAGE || mf->label == PROTOBUF_C_LABEL_REPEATED) {
        return 0;
    }
    const ProtobufCMessage *m = *(const ProtobufCMessage *const *)((const char *)req + mf->offset);
    const ProtobufCFieldDescriptor *f =
        m != NULL ? protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name) : NULL;
    if (f == NULL || (f->type != PROTOBUF_C_TYPE_ENUM && f->type != PROTOBUF_C_TYPE_INT32) ||
        f->label == PROTOBUF_C_LABEL_REPEATED) {
        return 0;
    }
    return *(const int *)((const char *)m + f->offset);
}

bool authz_binding_covers(const struct authz_binding *b, const char *ns)
{
    if (!b->scope.set) {
        return strcmp(b->ns, ns) == 0;
    }
    if (ns[0] == '\0') {
        return false;
    }
    for (unsigned i = 0; i < b->scope.n_patterns; i++) {
        if (fnmatch(b->scope.patterns[i], ns, 0) == 0) {
            return true;
        }
    }
    return false;
}

static bool has_role(const struct authz_caller *c, enum authz_role role, const char *ns)
{
    for (size_t i = 0; i < c->n_bindings; i++) {
        if (c->bindings[i].role == role && (ns == NULL || authz_binding_covers(&c->bindings[i], ns))) {
            return true;
        }
    }
    return false;
}

static bool any_in(const struct authz_caller *c, const char *ns)
{
    for (size_t i = 0; i < c->n_bindings; i++) {
        if ((c->bindings[i].ns[0] != '\0' || c->bindings[i].scope.set) &&
            authz_binding_covers(&c->bindings[i], ns)) {
            return true;
        }
    }
    return false;
}

static int scope_list(json_t *o, const char *key, char (*out)[48], unsigned *n)
{
    json_t *a = json_object_get(o, key);
    *n = 0;
    if (a == NULL) {
        return 0;
    }
    if (!json_is_array(a) || json_array_size(a) > AUTHZ_SCOPE_MAX) {
        return GERR_INVAL;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v == NULL || v[0] == '\0' || strlen(v) >= 48) {
            return GERR_INVAL;
        }
        snprintf(out[(*n)++], 48, "%s", v);
    }
    return 0;
}

bool authz_sa_name_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > AUTHZ_SA_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (ch == '.') {
            /* A label ends here: it must not be empty and must end with a letter or digit. */
            if (label == 0 || s[i - 1] == '-') {
                return false;
            }
            label = 0;
        } else if (alnum || (ch == '-' && label > 0)) {
            if (++label > 63) {
                return false;
            }
        } else {
            return false;
        }
    }
    return s[n - 1] != '-' && s[n - 1] != '.';
}

bool authz_sa_reserved(const char *s)
{
    return strcmp(s, AUTHZ_SA_GATEWAY) == 0;
}

static size_t sa_used(const struct authz_scope *s)
{
    size_t used = 0;
    for (unsigned i = 0; i < s->n_service_accounts; i++) {
        used += strlen(s->service_accounts + used) + 1;
    }
    return used;
}

int authz_scope_add_service_account(struct authz_scope *s, const char *name)
{
    if (!authz_sa_name_ok(name) || authz_sa_reserved(name)) {
        return GERR_INVAL;
    }
    size_t used = sa_used(s), n = strlen(name) + 1;
    if (s->n_service_accounts >= AUTHZ_SCOPE_MAX || used + n > sizeof s->service_accounts) {
        return GERR_TOOBIG;
    }
    memcpy(s->service_accounts + used, name, n);
    s->n_service_accounts++;
    return 0;
}

size_t authz_scope_service_accounts(const struct authz_scope *s, const char **out, size_t max)
{
    size_t used = 0, k = 0;
    for (unsigned i = 0; i < s->n_service_accounts && k < max; i++) {
        out[k++] = s->service_accounts + used;
        used += strlen(s->service_accounts + used) + 1;
    }
    return k;
}

bool authz_scope_allows_service_account(const struct authz_scope *s, const char *name)
{
    const char *names[AUTHZ_SCOPE_MAX];
    size_t n = authz_scope_service_accounts(s, names, AUTHZ_SCOPE_MAX);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) {
            return !authz_sa_reserved(name);
        }
    }
    return false;
}

/* ---- The placement and Secret lists: tagged entries in one buffer (struct authz_scope) */

enum {
    PLACE_KNS = 'n',
    PLACE_RC = 'r',
    PLACE_SNS = 's',
    PLACE_SNAME = 'm',
    PLACE_WP = 'w',
    PLACE_TPL = 't',
    PLACE_NSEL = 'l',
    PLACE_TOL = 'o'
};

static unsigned place_total(const struct authz_scope *s)
{
    return s->n_kube_namespaces + s->n_runtime_classes + s->n_secret_namespaces + s->n_secret_names +
           s->n_warm_pools + s->n_templates + s->n_node_selectors + s->n_tolerations;
}

static int place_add(struct authz_scope *s, char tag, unsigned *n, const char *v)
{
    size_t used = 0, len = strlen(v) + 2; /* tag, text, NUL */
    for (unsigned i = 0, total = place_total(s); i < total; i++) {
        used += strlen(s->place + used) + 1;
    }
    if (*n >= AUTHZ_SCOPE_MAX || used + len > sizeof s->place) {
        return GERR_TOOBIG;
    }
    s->place[used] = tag;
    memcpy(s->place + used + 1, v, len - 1);
    (*n)++;
    return 0;
}

static size_t place_list(const struct authz_scope *s, char tag, const char **out, size_t max)
{
    size_t used = 0, k = 0;
    for (unsigned i = 0, total = place_total(s); i < total && k < max; i++) {
        if (s->place[used] == tag) {
            out[k++] = s->place + used + 1;
        }
        used += strlen(s->place + used) + 1;
    }
    return k;
}

static bool kube_pattern_ok(const char *p)
{
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '*' || ch == '?')) {
            return false;
        }
    }
    return n > 0 && n <= 63;
}

int authz_scope_add_kube_namespace(struct authz_scope *s, const char *pattern)
{
    if (!kube_pattern_ok(pattern)) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_KNS, &s->n_kube_namespaces, pattern);
}

int authz_scope_add_runtime_class(struct authz_scope *s, const char *name)
{
    if (!authz_sa_name_ok(name)) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_RC, &s->n_runtime_classes, name);
}

size_t authz_scope_kube_namespaces(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_KNS, out, max);
}

size_t authz_scope_runtime_classes(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_RC, out, max);
}

bool authz_scope_allows_kube_namespace(const struct authz_scope *s, const char *kns)
{
    const char *p[AUTHZ_SCOPE_MAX];
    size_t n = authz_scope_kube_namespaces(s, p, AUTHZ_SCOPE_MAX);
    for (size_t i = 0; i < n; i++) {
        if (fnmatch(p[i], kns, 0) == 0) {
            return true;
        }
    }
    return false;
}

bool authz_scope_allows_runtime_class(const struct authz_scope *s, const char *name)
{
    const char *p[AUTHZ_SCOPE_MAX];
    size_t n = authz_scope_runtime_classes(s, p, AUTHZ_SCOPE_MAX);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static bool secret_name_pattern_ok(const char *p)
{
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '*' ||
              ch == '?')) {
            return false;
        }
    }
    return n > 0 && n <= AUTHZ_SA_NAME_MAX;
}

static int exact_add(struct authz_scope *s, char tag, unsigned *n, const char *name)
{
    if (!authz_sa_name_ok(name)) {
        return GERR_INVAL;
    }
    return place_add(s, tag, n, name);
}

static bool exact_allows(const struct authz_scope *s, char tag, const char *name)
{
    const char *p[AUTHZ_SCOPE_MAX];
    size_t n = place_list(s, tag, p, AUTHZ_SCOPE_MAX);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p[i], name) == 0) {
            return true;
        }
    }
    return false;
}

int authz_scope_add_warm_pool(struct authz_scope *s, const char *name)
{
    return exact_add(s, PLACE_WP, &s->n_warm_pools, name);
}

int authz_scope_add_template(struct authz_scope *s, const char *name)
{
    return exact_add(s, PLACE_TPL, &s->n_templates, name);
}

size_t authz_scope_warm_pools(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_WP, out, max);
}

size_t authz_scope_templates(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_TPL, out, max);
}

bool authz_scope_allows_warm_pool(const struct authz_scope *s, const char *name)
{
    return exact_allows(s, PLACE_WP, name);
}

bool authz_scope_allows_template(const struct authz_scope *s, const char *name)
{
    return exact_allows(s, PLACE_TPL, name);
}

/* ---- Node selectors and tolerations: Kubernetes label syntax */

static bool label_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '_' || ch == '.';
}

static bool label_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* A label name or value of @n bytes at @s: 0..63 (name: 1..63) of [A-Za-z0-9._-], alphanumeric at
 * both ends. */
static bool label_part_ok(const char *s, size_t n, bool empty_ok)
{
    if (n == 0) {
        return empty_ok;
    }
    if (n > 63 || !label_alnum(s[0]) || !label_alnum(s[n - 1])) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!label_char(s[i])) {
            return false;
        }
    }
    return true;
}

bool authz_label_key_ok(const char *key, size_t n)
{
    const char *slash = memchr(key, '/', n);
    if (slash == NULL) {
        return label_part_ok(key, n, false);
    }
    size_t plen = (size_t)(slash - key);
    char prefix[AUTHZ_SA_NAME_MAX + 1];
    if (plen == 0 || plen > AUTHZ_SA_NAME_MAX) {
        return false;
    }
    memcpy(prefix, key, plen);
    prefix[plen] = '\0';
    return authz_sa_name_ok(prefix) && label_part_ok(slash + 1, n - plen - 1, false);
}

bool authz_label_value_ok(const char *value, size_t n)
{
    return label_part_ok(value, n, true);
}

static const char *const toleration_effects[] = {"NoSchedule", "PreferNoSchedule", "NoExecute", NULL};

bool authz_toleration_effect_ok(const char *effect)
{
    for (size_t i = 0; toleration_effects[i] != NULL; i++) {
        if (strcmp(effect, toleration_effects[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* A toleration pattern "key[=value][:effect]" split in place into its parts (NULL when absent);
 * false when malformed. @buf holds a copy of the pattern. */
static bool toleration_split(char *buf, const char **key, const char **value, const char **effect)
{
    char *colon = strrchr(buf, ':'), *eq;
    *effect = NULL;
    *value = NULL;
    if (colon != NULL) {
        *colon = '\0';
        *effect = colon + 1;
        if (!authz_toleration_effect_ok(*effect)) {
            return false;
        }
    }
    if ((eq = strchr(buf, '=')) != NULL) {
        *eq = '\0';
        *value = eq + 1;
        if (!authz_label_value_ok(*value, strlen(*value))) {
            return false;
        }
    }
    *key = buf;
    return authz_label_key_ok(buf, strlen(buf));
}

int authz_scope_add_node_selector(struct authz_scope *s, const char *pair)
{
    const char *eq = strchr(pair, '=');
    if (eq == NULL || !authz_label_key_ok(pair, (size_t)(eq - pair)) ||
        !authz_label_value_ok(eq + 1, strlen(eq + 1))) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_NSEL, &s->n_node_selectors, pair);
}

int authz_scope_add_toleration(struct authz_scope *s, const char *pattern)
{
    char buf[AUTHZ_SCOPE_PLACE_BYTES];
    const char *k, *v, *e;
    if (strlen(pattern) >= sizeof buf) {
        return GERR_INVAL;
    }
    snprintf(buf, sizeof buf, "%s", pattern);
    if (!toleration_split(buf, &k, &v, &e)) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_TOL, &s->n_tolerations, pattern);
}

size_t authz_scope_node_selectors(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_NSEL, out, max);
}

size_t authz_scope_tolerations(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_TOL, out, max);
}

bool authz_scope_allows_node_selector(const struct authz_scope *s, const char *key, const char *value)
{
    const char *p[AUTHZ_SCOPE_MAX];
    size_t n = authz_scope_node_selectors(s, p, AUTHZ_SCOPE_MAX), klen = strlen(key);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(p[i], key, klen) == 0 && p[i][klen] == '=' && strcmp(p[i] + klen + 1, value) == 0) {
            return true;
        }
    }
    return false;
}

bool authz_scope_allows_toleration(const struct authz_scope *s, const struct authz_toleration *t)
{
    const char *p[AUTHZ_SCOPE_MAX];
    size_t n = authz_scope_tolerations(s, p, AUTHZ_SCOPE_MAX);
    const char *op = t->op != NULL && t->op[0] != '\0' ? t->op : "Equal"; /* Kubernetes' default */
    const char *tval = t->value != NULL ? t->value : "", *teff = t->effect != NULL ? t->effect : "";
    if (t->key == NULL || t->key[0] == '\0') {
        return false; /* an empty key with Exists tolerates every taint: never delegated */
    }
    for (size_t i = 0; i < n; i++) {
        char buf[AUTHZ_SCOPE_PLACE_BYTES];
        const char *k, *v, *e;
        snprintf(buf, sizeof buf, "%s", p[i]);
        if (!toleration_split(buf, &k, &v, &e) || strcmp(k, t->key) != 0) {
            continue;
        }
        if (v != NULL && (strcmp(op, "Equal") != 0 || strcmp(v, tval) != 0)) {
            continue; /* Exists tolerates every value of the key: wider than one listed value */
        }
        if (e != NULL && strcmp(e, teff) != 0) {
            continue; /* no effect tolerates every effect: wider than the listed one */
        }
        return true;
    }
    return false;
}

int authz_scope_add_secret_namespace(struct authz_scope *s, const char *pattern)
{
    if (!kube_pattern_ok(pattern)) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_SNS, &s->n_secret_namespaces, pattern);
}

int authz_scope_add_secret_name(struct authz_scope *s, const char *pattern)
{
    if (!secret_name_pattern_ok(pattern)) {
        return GERR_INVAL;
    }
    return place_add(s, PLACE_SNAME, &s->n_secret_names, pattern);
}

size_t authz_scope_secret_namespaces(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_SNS, out, max);
}

size_t authz_scope_secret_names(const struct authz_scope *s, const char **out, size_t max)
{
    return place_list(s, PLACE_SNAME, out, max);
}

static bool any_match(const char *const *p, size_t n, const char *v)
{
    for (size_t i = 0; i < n; i++) {
        if (fnmatch(p[i], v, 0) == 0) {
            return true;
        }
    }
    return false;
}

bool authz_scope_allows_secret(const struct authz_scope *s, const char *ns, const char *name)
{
    const char *nss[AUTHZ_SCOPE_MAX], *names[AUTHZ_SCOPE_MAX];
    size_t n_ns = authz_scope_secret_namespaces(s, nss, AUTHZ_SCOPE_MAX);
    size_t n_names = authz_scope_secret_names(s, names, AUTHZ_SCOPE_MAX);
    return any_match(nss, n_ns, ns) && any_match(names, n_names, name);
}

/* A placement list member @key of @o into @s through @add; GERR_INVAL for anything malformed. */
static int scope_place(json_t *o, const char *key, struct authz_scope *s,
                       int (*add)(struct authz_scope *, const char *))
{
    json_t *a = json_object_get(o, key);
    if (a == NULL) {
        return 0;
    }
    if (!json_is_array(a)) {
        return GERR_INVAL;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v == NULL || add(s, v) != 0) {
            return GERR_INVAL;
        }
    }
    return 0;
}

static json_t *place_array(const struct authz_scope *s, char tag)
{
    const char *names[AUTHZ_SCOPE_MAX];
    size_t k = place_list(s, tag, names, AUTHZ_SCOPE_MAX);
    json_t *a = json_array();
    for (size_t i = 0; i < k; i++) {
        json_array_append_new(a, json_string(names[i]));
    }
    return a;
}

static int scope_service_accounts(json_t *o, struct authz_scope *out)
{
    json_t *a = json_object_get(o, "allowed_service_accounts");
    if (a == NULL) {
        return 0;
    }
    if (!json_is_array(a)) {
        return GERR_INVAL;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v == NULL || authz_scope_add_service_account(out, v) != 0) {
            return GERR_INVAL;
        }
    }
    return 0;
}

int authz_scope_parse(const char *text, struct authz_scope *out)
{
    memset(out, 0, sizeof *out);
    if (text == NULL || text[0] == '\0') {
        return 0;
    }
    json_t *o = json_loads(text, 0, NULL);
    int rv = json_is_object(o) ? 0 : GERR_INVAL;
    if (rv == 0) {
        rv = scope_list(o, "namespace_patterns", out->patterns, &out->n_patterns);
    }
    if (rv == 0) {
        rv = scope_list(o, "allowed_driver_config_keys", out->config_keys, &out->n_config_keys);
    }
    if (rv == 0) {
        rv = scope_list(o, "allowed_credential_sources", out->sources, &out->n_sources);
    }
    if (rv == 0) {
        rv = scope_service_accounts(o, out);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_kubernetes_namespaces", out, authz_scope_add_kube_namespace);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_runtime_classes", out, authz_scope_add_runtime_class);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_secret_namespaces", out, authz_scope_add_secret_namespace);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_secret_names", out, authz_scope_add_secret_name);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_warm_pools", out, authz_scope_add_warm_pool);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_templates", out, authz_scope_add_template);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_node_selectors", out, authz_scope_add_node_selector);
    }
    if (rv == 0) {
        rv = scope_place(o, "allowed_tolerations", out, authz_scope_add_toleration);
    }
    if (rv == 0) {
        out->on_behalf = json_is_true(json_object_get(o, "create_on_behalf_of_owner"));
        out->set = true;
    }
    json_decref(o);
    return rv;
}

static json_t *scope_array(char (*items)[48], unsigned n)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < n; i++) {
        json_array_append_new(a, json_string(items[i]));
    }
    return a;
}

char *authz_scope_json(const struct authz_scope *s)
{
    struct authz_scope copy = *s;
    json_t *o = json_object();
    json_object_set_new(o, "namespace_patterns", scope_array(copy.patterns, copy.n_patterns));
    json_object_set_new(o, "allowed_driver_config_keys", scope_array(copy.config_keys, copy.n_config_keys));
    json_object_set_new(o, "allowed_credential_sources", scope_array(copy.sources, copy.n_sources));
    if (copy.n_service_accounts > 0) {
        const char *names[AUTHZ_SCOPE_MAX];
        size_t n = authz_scope_service_accounts(&copy, names, AUTHZ_SCOPE_MAX);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(a, json_string(names[i]));
        }
        json_object_set_new(o, "allowed_service_accounts", a);
    }
    if (copy.n_kube_namespaces > 0) {
        json_object_set_new(o, "allowed_kubernetes_namespaces", place_array(&copy, PLACE_KNS));
    }
    if (copy.n_runtime_classes > 0) {
        json_object_set_new(o, "allowed_runtime_classes", place_array(&copy, PLACE_RC));
    }
    if (copy.n_secret_namespaces > 0) {
        json_object_set_new(o, "allowed_secret_namespaces", place_array(&copy, PLACE_SNS));
    }
    if (copy.n_secret_names > 0) {
        json_object_set_new(o, "allowed_secret_names", place_array(&copy, PLACE_SNAME));
    }
    if (copy.n_warm_pools > 0) {
        json_object_set_new(o, "allowed_warm_pools", place_array(&copy, PLACE_WP));
    }
    if (copy.n_templates > 0) {
        json_object_set_new(o, "allowed_templates", place_array(&copy, PLACE_TPL));
    }
    if (copy.n_node_selectors > 0) {
        json_object_set_new(o, "allowed_node_selectors", place_array(&copy, PLACE_NSEL));
    }
    if (copy.n_tolerations > 0) {
        json_object_set_new(o, "allowed_tolerations", place_array(&copy, PLACE_TOL));
    }
    json_object_set_new(o, "create_on_behalf_of_owner", json_boolean(copy.on_behalf));
    char *t = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    char *out = mem_strdup(t != NULL ? t : "{}");
    free(t);
    return out;
}

bool authz_binding_write(const struct authz_caller *c, enum authz_role role, const char *ns, char *why,
                         size_t len)
{
    if (has_role(c, AZ_ROLE_PLATFORM_ADMIN, "")) {
        return true;
    }
    if (role != AZ_ROLE_USER) {
        snprintf(why, len, "only a platform_admin may grant or revoke the %s role", authz_role_name(role));
        return false;
    }
    if (ns[0] == '\0' || !has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
        snprintf(
            why, len,
            "granting or revoking the user role in namespace \"%.63s\" needs the namespace_admin role there "
            "(or platform_admin)",
            ns);
        return false;
    }
    return true;
}

static void deny(struct authz_decision *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void deny(struct authz_decision *d, const char *fmt, ...)
{
    va_list ap;
    d->allowed = false;
    va_start(ap, fmt);
    vsnprintf(d->why, sizeof d->why, fmt, ap);
    va_end(ap);
}

static void decide_in(const struct authz_rule *r, const struct authz_caller *c, const ProtobufCMessage *req,
                      const char *ns, struct authz_decision *d);

void authz_decide(const struct authz_rule *r, const struct authz_caller *c, const ProtobufCMessage *req,
                  struct authz_decision *d)
{
    decide_in(r, c, req, r->ns_field != NULL && req != NULL ? field_string(req, r->ns_field) : "", d);
}

static void decide_in(const struct authz_rule *r, const struct authz_caller *c, const ProtobufCMessage *req,
                      const char *ns, struct authz_decision *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->ns, sizeof d->ns, "%s", ns);
    bool pa = has_role(c, AZ_ROLE_PLATFORM_ADMIN, "");
    bool auditor = has_role(c, AZ_ROLE_AUDITOR, "");
    d->allowed = true;
    if (pa || r->action == AZ_TOKEN || r->action == AZ_AUTHENTICATED) {
        d->filter = r->action == AZ_AUTHENTICATED && !pa && !auditor;
        return;
    }
    if (r->ns_field != NULL && !r->ns_optional && ns[0] == '\0') {
        snprintf(d->why, sizeof d->why, "%s is required", r->ns_field);
        d->allowed = false;
        d->invalid = true;
        return;
    }
    switch (r->action) {
    case AZ_CLUSTER:
    case AZ_GLOBAL_WRITE:
        deny(d, "%sneeds the platform_admin role", "");
        return;
    case AZ_GLOBAL_READ:
        if (!auditor) {
            deny(d, "%sneeds the platform_admin or auditor role", "");
        }
        return;
    case AZ_NS_READ:
        if (ns[0] == '\0') {
            d->filter = !auditor; /* all the caller may read */
        } else if (!auditor && !any_in(c, ns)) {
            deny(d, "needs a role in namespace \"%.63s\" (or the auditor or platform_admin role)", ns);
        }
        return;
    case AZ_NS_ADMIN:
        if (!has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            deny(d, "needs the namespace_admin role in namespace \"%.63s\" (or platform_admin)", ns);
        }
        return;
    case AZ_SANDBOX_CREATE:
        if (!has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns) && !has_role(c, AZ_ROLE_USER, ns)) {
            deny(d, "creating sandboxes in namespace \"%.63s\" needs the user or namespace_admin role there",
                 ns);
        }
        return;
    case AZ_SANDBOX_READ:
        /* Shares stay inside a namespace: a caller without a role there reads nothing in it; a
         * user reads own or shared sandboxes only. */
        if (auditor || has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            return;
        }
        if (!any_in(c, ns)) {
            deny(d, "needs a role in namespace \"%.63s\" (or the auditor or platform_admin role)", ns);
            return;
        }
        d->owner_check = true;
        return;
    case AZ_SANDBOX_USE:
        if (has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            return;
        }
        if (!any_in(c, ns)) {
            deny(d,
                 "using sandboxes in namespace \"%.63s\" needs a role there (for your own or shared "
                 "sandboxes) or "
                 "namespace_admin; the auditor role never uses sandboxes",
                 ns);
            return;
        }
        d->owner_check = true;
        return;
    case AZ_SANDBOX_WRITE:
        if (has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            return;
        }
        if (has_role(c, AZ_ROLE_USER, ns)) {
            d->owner_check = true;
            return;
        }
        deny(
            d,
            "changing sandboxes in namespace \"%.63s\" needs the user role there (for your own sandboxes) or "
            "namespace_admin",
            ns);
        return;
    case AZ_POLICY_WRITE:
        if (ns[0] == '\0') {
            deny(d, "%sthe gateway policy needs the platform_admin role", "");
        } else if (!has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            deny(d,
                 "the policy of namespace \"%.63s\" needs the namespace_admin role there (or platform_admin)",
                 ns);
        }
        return;
    case AZ_BINDING_WRITE: {
        if (req != NULL && r->ns_field != NULL) {
            const ProtobufCFieldDescriptor *bf =
                protobuf_c_message_descriptor_get_field_by_name(req->descriptor, "binding");
            const ProtobufCMessage *b =
                bf != NULL ? *(const ProtobufCMessage *const *)((const char *)req + bf->offset) : NULL;
            const ProtobufCFieldDescriptor *rf =
                b != NULL ? protobuf_c_message_descriptor_get_field_by_name(b->descriptor, "role") : NULL;
            int role_value = rf != NULL ? *(const int *)((const char *)b + rf->offset) : 0;
            /* gantry.v1.Role and enum authz_role share their numbering (1..4). */
            if (!authz_binding_write(c, (enum authz_role)role_value, ns, d->why, sizeof d->why)) {
                d->allowed = false;
            }
            return;
        }
        if (!has_role(c, AZ_ROLE_NAMESPACE_ADMIN, NULL)) {
            deny(d, "%sneeds the platform_admin role, or namespace_admin for bindings in that namespace", "");
        } else {
            d->binding_check = true;
        }
        return;
    }
    case AZ_PRINCIPAL_READ:
        if (!auditor && !has_role(c, AZ_ROLE_NAMESPACE_ADMIN, NULL)) {
            d->self_check = true;
        }
        return;
    case AZ_APIKEY_READ:
        if (!auditor) {
            d->self_check = true;
            d->manage_check = has_role(c, AZ_ROLE_NAMESPACE_ADMIN, NULL);
        }
        return;
    case AZ_APIKEY:
        if (auditor && c->n_bindings > 0 && !has_role(c, AZ_ROLE_USER, NULL) &&
            !has_role(c, AZ_ROLE_NAMESPACE_ADMIN, NULL)) {
            deny(d, "%sauditors never write: API keys are managed by their owner or a platform_admin", "");
            return;
        }
        d->self_check = true;
        d->manage_check = has_role(c, AZ_ROLE_NAMESPACE_ADMIN, NULL);
        return;
    case AZ_PRINCIPAL_CREATE: {
        if (ns[0] == '\0' || !has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            deny(d,
                 "creating principals needs the platform_admin role, or namespace_admin of the namespace the "
                 "request binds the new user in (namespace%s%.63s%s)",
                 ns[0] != '\0' ? ": \"" : " is empty", ns, ns[0] != '\0' ? "\"" : "");
            return;
        }
        /* gantry.v1.PrincipalKind: 2 is SERVICE_ACCOUNT. Other bad kinds are the handler's
         * INVALID_ARGUMENT. */
        if (req != NULL && field_enum(req, "principal", "kind") == 2) {
            deny(d, "%sa namespace_admin creates users only: service accounts need the platform_admin role",
                 "");
            return;
        }
        d->onboard = true;
        return;
    }
    case AZ_QUOTA_WRITE:
        if (!has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns)) {
            deny(
                d,
                "the quota of namespace \"%.63s\" needs the namespace_admin role there, within the ceiling a "
                "platform_admin set (or platform_admin)",
                ns);
            return;
        }
        d->ceiling_check = true;
        return;
    case AZ_AUDIT_READ:
        if (!auditor && (ns[0] == '\0' || !has_role(c, AZ_ROLE_NAMESPACE_ADMIN, ns))) {
            deny(d,
                 "reading the audit log needs the auditor or platform_admin role, or namespace_admin of the "
                 "namespace named in the request%s",
                 "");
        }
        return;
    case AZ_TOKEN:
    case AZ_AUTHENTICATED:
        return;
    }
    deny(d, "%sno rule allows this call", "");
}

size_t authz_delegations(const struct authz_caller *c, const char *ns, const struct authz_scope **out,
                         size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_bindings; i++) {
        const struct authz_binding *b = &c->bindings[i];
        if (b->role == AZ_ROLE_PLATFORM_ADMIN ||
            (!b->scope.set && b->role != AZ_ROLE_AUDITOR && b->ns[0] != '\0' && strcmp(b->ns, ns) == 0)) {
            return 0;
        }
        if (b->scope.set && authz_binding_covers(b, ns) && n < max) {
            out[n++] = &b->scope;
        }
    }
    return n;
}

static bool glob_any(const char (*globs)[48], unsigned n, const char *a, const char *b)
{
    for (unsigned i = 0; i < n; i++) {
        if (fnmatch(globs[i], a, 0) == 0 || (b != NULL && fnmatch(globs[i], b, 0) == 0)) {
            return true;
        }
    }
    return false;
}

bool authz_scope_allows_config(const struct authz_scope *s, const char *driver, const char *key)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", driver, key);
    return glob_any((const char(*)[48])s->config_keys, s->n_config_keys, full, key);
}

bool authz_scope_allows_source(const struct authz_scope *s, const char *name)
{
    return glob_any((const char(*)[48])s->sources, s->n_sources, name, NULL);
}

static const char *condition_of(const struct authz_decision *d)
{
    if (d->owner_check) {
        return "own sandboxes and those shared with you";
    }
    if (d->self_check && d->manage_check) {
        return "your own keys, and those of users bound only in namespaces you administer";
    }
    if (d->self_check) {
        return "your own principal and keys only";
    }
    if (d->onboard) {
        return "users bound here with the user role";
    }
    if (d->ceiling_check) {
        return "within the ceiling a platform_admin set";
    }
    if (d->binding_check) {
        return "bindings of the user role in namespaces you administer";
    }
    if (d->filter) {
        return "results limited to namespaces you hold a role in";
    }
    return "";
}

void authz_effective(const struct authz_caller *c, authz_permission_fn fn, void *arg)
{
    /* Where to ask: every namespace ("*": what global roles give), then each binding's own
     * namespace or delegated pattern, once each. */
    const char *wheres[1 + 64];
    size_t n_where = 0;
    wheres[n_where++] = "*";
    for (size_t i = 0; i < c->n_bindings && n_where < 1 + 64; i++) {
        const struct authz_binding *b = &c->bindings[i];
        const char *list[AUTHZ_SCOPE_MAX + 1];
        size_t n = 0;
        if (b->scope.set) {
            for (unsigned j = 0; j < b->scope.n_patterns; j++) {
                list[n++] = b->scope.patterns[j];
            }
        } else if (b->ns[0] != '\0') {
            list[n++] = b->ns;
        }
        for (size_t j = 0; j < n && n_where < 1 + 64; j++) {
            bool seen = false;
            for (size_t k = 0; k < n_where; k++) {
                seen = seen || strcmp(wheres[k], list[j]) == 0;
            }
            if (!seen) {
                wheres[n_where++] = list[j];
            }
        }
    }
    bool global = has_role(c, AZ_ROLE_PLATFORM_ADMIN, "") || has_role(c, AZ_ROLE_AUDITOR, "");
    for (size_t i = 0; i < authz_rule_count(); i++) {
        const struct authz_rule *r = authz_rule_at(i);
        struct authz_decision d;
        if (r->action == AZ_TOKEN) {
            continue;
        }
        if (r->ns_field == NULL) {
            decide_in(r, c, NULL, "", &d);
            if (d.allowed) {
                fn(arg, r, "", condition_of(&d));
            }
            continue;
        }
        for (size_t w = 0; w < n_where; w++) {
            /* "*" stands for any namespace: only global roles act there; a binding named "*"
             * does not exist (names are DNS labels), a pattern "*" is a delegated scope. */
            if (w == 0 && !global) {
                continue;
            }
            decide_in(r, c, NULL, wheres[w], &d);
            if (d.allowed) {
                fn(arg, r, wheres[w], condition_of(&d));
                if (w == 0) {
                    break; /* allowed everywhere: no need to list namespaces */
                }
            }
        }
    }
}
