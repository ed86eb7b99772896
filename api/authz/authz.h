/* Authorization: the one table that says, for every gantry.v1 RPC, what the caller needs and
 * where the target namespace is found, and the decision for one call. A pure module (no store,
 * no I/O): the gate (api/gate/gate.h) feeds it the authenticated caller and the decoded request.
 *
 * The five roles (DESIGN.md section 4):
 *   platform_admin   global: everything
 *   auditor          global: read every namespace, sandbox, policy, quota, principal and the
 *                    audit log; never writes, never credentials, never exec
 *   namespace_admin  one namespace: its role bindings below admin (the user role), providers
 *                    and grants, its policy (tighten only), every sandbox in it
 *   user             one namespace: create sandboxes; read, exec, delete and share its own
 *                    and those shared with it; read the namespace's objects
 *   service accounts hold bindings like users.
 *
 * Actions (what a rule asks for):
 *   AZ_TOKEN            no principal: the request carries its own credential (Cluster.Join)
 *   AZ_AUTHENTICATED    any principal (WhoAmI, ListSharedWithMe; lists the handler filters)
 *   AZ_CLUSTER          platform_admin (cluster operations)
 *   AZ_GLOBAL_WRITE     platform_admin (namespaces, quotas, principals, global policy)
 *   AZ_GLOBAL_READ      platform_admin, auditor
 *   AZ_NS_READ          platform_admin, auditor, or any binding in the namespace; an empty
 *                       namespace (when the rule allows it) means "every namespace the caller may
 *                       read": allowed, and the handler filters (decision.filter)
 *   AZ_NS_ADMIN         platform_admin, namespace_admin of the namespace
 *   AZ_SANDBOX_CREATE   platform_admin, namespace_admin or user of the namespace
 *   AZ_SANDBOX_READ     as AZ_NS_READ; a user only for own or shared sandboxes (decision.owner_check)
 *   AZ_SANDBOX_WRITE    platform_admin, namespace_admin; a user only for own sandboxes
 *                       (decision.owner_check); never an auditor
 *   AZ_POLICY_WRITE     empty namespace (the gateway policy): platform_admin; else AZ_NS_ADMIN
 *   AZ_BINDING_WRITE    platform_admin; a namespace_admin for the user role in their namespace
 *                       (from the request's binding; for deletes the handler re-checks with
 *                       authz_binding_write on the stored binding: decision.binding_check)
 *   AZ_PRINCIPAL_READ   platform_admin, auditor, any namespace_admin; anyone for themselves
 *                       (decision.self_check when the caller has none of those roles)
 *   AZ_APIKEY           platform_admin; anyone but an auditor for their own keys (the handler
 *                       checks that the key or principal is the caller's: decision.self_check);
 *                       a namespace_admin also for the principals it manages, users whose every
 *                       binding is the user role in a namespace it administers (the handler
 *                       checks with api/rules/principal.h: decision.manage_check)
 *   AZ_APIKEY_READ      as AZ_APIKEY, and auditors may read (metadata only, never a secret)
 *   AZ_PRINCIPAL_CREATE platform_admin; a namespace_admin of the namespace the request binds the new
 *                       principal in, for a user (not a service account): onboarding
 *                       (decision.onboard: the handler binds it there with the user role)
 *   AZ_QUOTA_WRITE      platform_admin; a namespace_admin of the namespace, within the ceiling a
 *                       platform_admin set for it (the handler checks: decision.ceiling_check)
 *   AZ_AUDIT_READ       platform_admin, auditor; a namespace_admin for the namespace the request
 *                       names (an empty namespace needs a global role)
 *   AZ_SANDBOX_USE      using a sandbox (Logs): platform_admin, namespace_admin; a principal with a
 *                       role in the namespace only for own sandboxes or those shared with it
 *                       (decision.owner_check: the handler checks the share's access); never an
 *                       auditor, whose reading stops at the objects (a sandbox's output may hold
 *                       anything the sandbox printed)
 *
 * Messages on denial say what is missing ("needs the namespace_admin role in namespace \"team-a\"
 * (or platform_admin)") and never echo secrets. */
#ifndef GANTRY_API_AUTHZ_AUTHZ_H
#define GANTRY_API_AUTHZ_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/err.h"

enum authz_action {
    AZ_TOKEN = 1,
    AZ_AUTHENTICATED,
    AZ_CLUSTER,
    AZ_GLOBAL_WRITE,
    AZ_GLOBAL_READ,
    AZ_NS_READ,
    AZ_NS_ADMIN,
    AZ_SANDBOX_CREATE,
    AZ_SANDBOX_READ,
    AZ_SANDBOX_WRITE,
    AZ_POLICY_WRITE,
    AZ_BINDING_WRITE,
    AZ_PRINCIPAL_READ,
    AZ_APIKEY,
    AZ_APIKEY_READ,
    AZ_AUDIT_READ,
    AZ_PRINCIPAL_CREATE,
    AZ_QUOTA_WRITE,
    AZ_SANDBOX_USE,
};

enum authz_role { AZ_ROLE_PLATFORM_ADMIN = 1, AZ_ROLE_NAMESPACE_ADMIN, AZ_ROLE_AUDITOR, AZ_ROLE_USER };

struct authz_rule {
    const char *path; /* "/gantry.v1.Sandboxes/Create" */
    enum authz_action action;
    const char *ns_field; /* dotted field path of the namespace in the request, or NULL */
    bool ns_optional;     /* an empty namespace means "all I may read" (lists) */
    bool mutating;        /* changes state: audited */
};

/* A delegation scope on a service account's binding (RFC 0005 platform controller): the binding
 * has no namespace of its own and gives its role in every namespace matching one of the patterns
 * (fnmatch globs), restricted to the listed driver_config keys, credential sources (provider
 * names) and Kubernetes ServiceAccount names (exact; none when the list is empty), and optionally
 * lets the account create sandboxes on behalf of another principal.
 *
 * The ServiceAccount names sit back to back in one buffer (each NUL-terminated) rather than in
 * fixed slots: a name may be 253 characters, and every cached principal carries
 * AUTHN_MAX_BINDINGS scopes, so 8 slots of 254 bytes would cost 64 KiB per principal. */
#define AUTHZ_SCOPE_MAX         8u
#define AUTHZ_SCOPE_SA_BYTES    512u
#define AUTHZ_SCOPE_PLACE_BYTES 1024u
struct authz_scope {
    bool set;
    char patterns[AUTHZ_SCOPE_MAX][48];
    unsigned n_patterns;
    char config_keys[AUTHZ_SCOPE_MAX][48];
    unsigned n_config_keys;
    char sources[AUTHZ_SCOPE_MAX][48];
    unsigned n_sources;
    char service_accounts[AUTHZ_SCOPE_SA_BYTES]; /* n_service_accounts names, "a\0b\0" */
    unsigned n_service_accounts;
    /* Placement (driver_config "kubernetes"): the Kubernetes namespaces a sandbox may be put in
     * (fnmatch patterns of a-z, 0-9, '-', '*', '?', at most 63 characters each) and the RuntimeClass
     * names it may run under (exact DNS-1123 subdomains); and Secret-backed credential sources: the
     * Kubernetes Secrets a provider may reference, as namespace patterns and name patterns (fnmatch;
     * a Secret is allowed when both match). Each list is empty (none allowed) or up to
     * AUTHZ_SCOPE_MAX entries; all the lists below share one buffer of AUTHZ_SCOPE_PLACE_BYTES, each entry a
     * tag byte, the text and a NUL (in the order added), read through the functions below. */
    char place[AUTHZ_SCOPE_PLACE_BYTES];
    unsigned n_kube_namespaces, n_runtime_classes, n_secret_namespaces, n_secret_names;
    /* Allocation through agent-sandbox claims (driver_config "kubernetes" "warm_pool", "template"):
     * the SandboxWarmPool and SandboxTemplate names a sandbox may be claimed from (exact DNS-1123
     * subdomains), in the same buffer. */
    unsigned n_warm_pools, n_templates;
    /* Node placement (driver_config "kubernetes" "node_selector", "tolerations"): the node selector
     * pairs ("key=value", exact) and toleration patterns ("key[=value][:effect]") a sandbox may
     * carry, in the same buffer. */
    unsigned n_node_selectors, n_tolerations;
    bool on_behalf;
};

/* Kubernetes ServiceAccount names, as policies and delegation scopes list them and a sandbox's
 * driver_config "service_account" names them. */
#define AUTHZ_SA_NAME_MAX 253u
/* The name the gateway's own ServiceAccount has (the Helm chart's default, docs/drivers.md): never
 * accepted in a policy, a scope or a sandbox, whatever the lists say. */
#define AUTHZ_SA_GATEWAY "gantry"

/* Is @s a DNS-1123 subdomain of at most AUTHZ_SA_NAME_MAX characters (lower-case letters, digits,
 * '-' and '.', labels of 1..63 starting and ending with a letter or digit)? */
bool authz_sa_name_ok(const char *s);
/* Is @s the gateway's own ServiceAccount name (AUTHZ_SA_GATEWAY)? */
bool authz_sa_reserved(const char *s);

/* Append @name (copied) to @s's ServiceAccount names. 0; GERR_INVAL when it is not a name
 * (authz_sa_name_ok) or is reserved; GERR_TOOBIG when @s already has AUTHZ_SCOPE_MAX names or they
 * would not fit AUTHZ_SCOPE_SA_BYTES together. @s is unchanged on error. */
int authz_scope_add_service_account(struct authz_scope *s, const char *name);
/* Point @out[0..] (at most @max) at @s's ServiceAccount names, in order; returns how many. */
size_t authz_scope_service_accounts(const struct authz_scope *s, const char **out, size_t max);
/* Does @s allow a sandbox to name ServiceAccount @name? Only when it lists it exactly. */
bool authz_scope_allows_service_account(const struct authz_scope *s, const char *name);

/* Placement lists of a scope (RFC 0005, issue 21), stored like the ServiceAccount names.
 * authz_scope_add_kube_namespace: @pattern is 1..63 characters of a-z, 0-9, '-', '*', '?';
 * authz_scope_add_runtime_class: @name is a DNS-1123 subdomain (authz_sa_name_ok). 0; GERR_INVAL
 * for anything else; GERR_TOOBIG when the list has AUTHZ_SCOPE_MAX entries or the four lists'
 * AUTHZ_SCOPE_PLACE_BYTES (an entry takes its length plus 2) are used up. @s is unchanged on error. */
int authz_scope_add_kube_namespace(struct authz_scope *s, const char *pattern);
int authz_scope_add_runtime_class(struct authz_scope *s, const char *name);
size_t authz_scope_kube_namespaces(const struct authz_scope *s, const char **out, size_t max);
size_t authz_scope_runtime_classes(const struct authz_scope *s, const char **out, size_t max);
/* Does @s allow placing a sandbox in Kubernetes namespace @kns (a pattern matches it) / running it
 * under RuntimeClass @name (listed exactly)? Never when the list is empty. */
bool authz_scope_allows_kube_namespace(const struct authz_scope *s, const char *kns);
/* Secret patterns: authz_scope_add_secret_namespace takes what add_kube_namespace takes;
 * authz_scope_add_secret_name 1..253 characters of a-z, 0-9, '-', '.', '*', '?'. Errors as above.
 * authz_scope_allows_secret: does a namespace pattern match @ns and a name pattern match @name? */
int authz_scope_add_secret_namespace(struct authz_scope *s, const char *pattern);
int authz_scope_add_secret_name(struct authz_scope *s, const char *pattern);
size_t authz_scope_secret_namespaces(const struct authz_scope *s, const char **out, size_t max);
size_t authz_scope_secret_names(const struct authz_scope *s, const char **out, size_t max);
bool authz_scope_allows_secret(const struct authz_scope *s, const char *ns, const char *name);
bool authz_scope_allows_runtime_class(const struct authz_scope *s, const char *name);
/* Claim allocation lists (issue 21): SandboxWarmPool and SandboxTemplate names, each a DNS-1123
 * subdomain (authz_sa_name_ok), matched exactly; errors as for the placement lists. Never allowed
 * when the list is empty. */
int authz_scope_add_warm_pool(struct authz_scope *s, const char *name);
int authz_scope_add_template(struct authz_scope *s, const char *name);
size_t authz_scope_warm_pools(const struct authz_scope *s, const char **out, size_t max);
size_t authz_scope_templates(const struct authz_scope *s, const char **out, size_t max);
bool authz_scope_allows_warm_pool(const struct authz_scope *s, const char *name);
bool authz_scope_allows_template(const struct authz_scope *s, const char *name);

/* Kubernetes label syntax: is the @n bytes at @key a label key ([prefix/]name: prefix a DNS-1123
 * subdomain, name 1..63 of [A-Za-z0-9._-] alphanumeric at both ends) / at @value a label value
 * (0..63 of the same)? Is @effect a taint effect (NoSchedule, PreferNoSchedule, NoExecute)? */
bool authz_label_key_ok(const char *key, size_t n);
bool authz_label_value_ok(const char *value, size_t n);
bool authz_toleration_effect_ok(const char *effect);

/* One toleration of a sandbox's pod (driver_config "kubernetes" "tolerations"); NULL members are
 * absent (operator defaults to "Equal", as in Kubernetes). */
struct authz_toleration {
    const char *key, *op, *value, *effect;
};

/* Node placement lists (issue 21), stored like the other placement lists; errors as for them.
 * authz_scope_add_node_selector: @pair is "key=value" (authz_label_key_ok, authz_label_value_ok).
 * authz_scope_add_toleration: @pattern is "key[=value][:effect]" (a label key, a label value, a
 * taint effect).
 * authz_scope_allows_node_selector: is "@key=@value" listed exactly?
 * authz_scope_allows_toleration: does a pattern allow @t? Its key must be the pattern's (a
 * toleration without a key, which with Exists tolerates every taint, is never allowed); a pattern
 * with a value allows only operator Equal with that value (Exists tolerates every value); a pattern
 * with an effect allows only that effect (a toleration without one tolerates every effect); a
 * pattern without them allows any operator, value and effect of its key. Never allowed when the list
 * is empty. */
int authz_scope_add_node_selector(struct authz_scope *s, const char *pair);
int authz_scope_add_toleration(struct authz_scope *s, const char *pattern);
size_t authz_scope_node_selectors(const struct authz_scope *s, const char **out, size_t max);
size_t authz_scope_tolerations(const struct authz_scope *s, const char **out, size_t max);
bool authz_scope_allows_node_selector(const struct authz_scope *s, const char *key, const char *value);
bool authz_scope_allows_toleration(const struct authz_scope *s, const struct authz_toleration *t);

struct authz_binding {
    enum authz_role role;
    char ns[64]; /* "" for the global roles and for delegated bindings */
    struct authz_scope scope;
};

/* Does @b give its role in namespace @ns? Its own namespace, or, for a delegated binding, a
 * pattern match. Delegated bindings never cover "" (they are not global). */
bool authz_binding_covers(const struct authz_binding *b, const char *ns);

/* The scope as stored (role_bindings.scope): "" for none, else a JSON object {"namespace_patterns":
 * [...], "allowed_driver_config_keys": [...], "allowed_credential_sources": [...],
 * "allowed_service_accounts": [...], "allowed_kubernetes_namespaces": [...],
 * "allowed_runtime_classes": [...], "allowed_secret_namespaces": [...],
 * "allowed_secret_names": [...], "allowed_warm_pools": [...], "allowed_templates": [...],
 * "allowed_node_selectors": [...], "allowed_tolerations": [...] (each optional: absent in scopes stored
 * before it existed, and written only when not empty), "create_on_behalf_of_owner": bool}. Parse returns
 * GERR_INVAL for anything else. */
int authz_scope_parse(const char *json, struct authz_scope *out);
/* Heap JSON text (mem_free). */
char *authz_scope_json(const struct authz_scope *s);

struct authz_caller {
    const char *principal_id;
    const struct authz_binding *bindings;
    size_t n_bindings;
};

struct authz_decision {
    bool allowed;
    bool invalid;            /* not allowed because the request lacks its namespace field: the
                                answer is INVALID_ARGUMENT, not PERMISSION_DENIED */
    char ns[64];             /* the namespace the call targets ("" for none or all) */
    bool filter;             /* the handler must restrict results to what the caller may read */
    bool owner_check;        /* the handler must check ownership or shares (sandboxes) */
    bool self_check;         /* the handler must check the target is the caller's own */
    bool binding_check;      /* the handler must re-check with authz_binding_write */
    bool manage_check;       /* with self_check: a principal the caller manages passes too */
    bool onboard;            /* a namespace_admin creates a user bound in d->ns with the user role */
    bool ceiling_check;      /* the quota must fit the namespace's ceiling, which must exist */
    char why[GERR_MSG_SIZE]; /* on denial */
};

/* The rule for @path, or NULL. */
const struct authz_rule *authz_rule_find(const char *path);

/* Every method of every service in @services (NULL-terminated) has a rule, and every rule names
 * a method that exists. Returns 0, or GERR_INVAL naming the first gap in @errmsg. */
int authz_table_check(const ProtobufCServiceDescriptor *const *services, char *errmsg);

/* Decide. @req is the decoded request (its namespace is read by the rule's field path). Always
 * fills @d. */
void authz_decide(const struct authz_rule *r, const struct authz_caller *c, const ProtobufCMessage *req,
                  struct authz_decision *d);

/* May @c create or delete a binding of @role in @ns? (The AZ_BINDING_WRITE rule, for handlers.) */
bool authz_binding_write(const struct authz_caller *c, enum authz_role role, const char *ns, char *why,
                         size_t len);

/* Delegation (RFC 0005). When @c's authority in @ns comes only from delegated bindings, the
 * scopes of those covering @ns are stored in @out (at most @max) and their number returned; 0
 * when a global role or a plain binding covers @ns (no scope restricts the call). A call is
 * within scope when ONE of the returned scopes allows all of it. */
size_t authz_delegations(const struct authz_caller *c, const char *ns, const struct authz_scope **out,
                         size_t max);
/* Does @s allow key @key of the driver_config entry for @driver? An allowed entry is a glob
 * matched against "<driver>.<key>" and against "<key>" ("kubernetes.node_selector",
 * "node_selector", "kubernetes.*"). */
bool authz_scope_allows_config(const struct authz_scope *s, const char *driver, const char *key);
/* Does @s allow attaching the provider (credential source) @name? Globs, as above. */
bool authz_scope_allows_source(const struct authz_scope *s, const char *name);

/* Effective permissions (WhoAmI): calls @fn once for every rule @c may call, with where
 * ("" cluster-wide, "*" every namespace, a namespace, or a delegated pattern) and what the
 * handler still checks ("" for nothing; a static string). */
typedef void (*authz_permission_fn)(void *arg, const struct authz_rule *r, const char *where,
                                    const char *condition);
void authz_effective(const struct authz_caller *c, authz_permission_fn fn, void *arg);

/* Role names as stored and shown ("platform_admin", ...); 0 for an unknown name. */
const char *authz_role_name(enum authz_role r);
enum authz_role authz_role_parse(const char *name);

/* Number of rules and the @i'th (for docs/api.md generation and tests). */
size_t authz_rule_count(void);
const struct authz_rule *authz_rule_at(size_t i);
const char *authz_action_describe(enum authz_action a);

#endif
