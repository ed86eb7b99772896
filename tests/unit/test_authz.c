/* Unit tests for the authorization table (api/authz/authz.h), and the check that docs/api.md, generated
 * from the protos' descriptors and the table, is current. Run with --write-doc to regenerate it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/authz/authz.h"
#include "api/proto/services.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/buf.h"
#include "lib/file.h"
#include "lib/mem.h"

#define DOC_PATH GANTRY_SOURCE_DIR "/docs/api.md"

static struct authz_binding b_pa[] = {{.role = AZ_ROLE_PLATFORM_ADMIN, .ns = ""}};
static struct authz_binding b_aud[] = {{.role = AZ_ROLE_AUDITOR, .ns = ""}};
static struct authz_binding b_na[] = {{.role = AZ_ROLE_NAMESPACE_ADMIN, .ns = "team-a"}};
static struct authz_binding b_user[] = {{.role = AZ_ROLE_USER, .ns = "team-a"}};

static struct authz_caller caller(struct authz_binding *b, size_t n)
{
    return (struct authz_caller){.principal_id = "p", .bindings = b, .n_bindings = n};
}

static void test_table_covers_every_rpc(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE];
    assert_int_equal(authz_table_check(api_services, err), 0);
    for (size_t i = 0; i < authz_rule_count(); i++) {
        assert_non_null(authz_rule_find(authz_rule_at(i)->path));
    }
    assert_null(authz_rule_find("/gantry.v1.Sandboxes/Nope"));
}

static void test_namespace_from_request(void **state)
{
    (void)state;
    const struct authz_rule *r = authz_rule_find("/gantry.v1.Sandboxes/Create");
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__CreateSandboxRequest req = GANTRY__V1__CREATE_SANDBOX_REQUEST__INIT;
    meta.namespace_ = "team-a";
    sb.meta = &meta;
    req.sandbox = &sb;
    struct authz_decision d;
    struct authz_caller u = caller(b_user, 1), aud = caller(b_aud, 1);
    authz_decide(r, &u, &req.base, &d);
    assert_true(d.allowed);
    assert_string_equal(d.ns, "team-a");
    meta.namespace_ = "team-b";
    authz_decide(r, &u, &req.base, &d);
    assert_false(d.allowed);
    assert_non_null(strstr(d.why, "team-b"));
    authz_decide(r, &aud, &req.base, &d);
    assert_false(d.allowed);
    /* A missing namespace is a clear refusal of the request as malformed, not a crash. */
    assert_false(d.invalid);
    req.sandbox = NULL;
    authz_decide(r, &u, &req.base, &d);
    assert_false(d.allowed);
    assert_true(d.invalid);
    assert_non_null(strstr(d.why, "sandbox.meta.namespace is required"));
}

static void test_sandbox_ownership_is_delegated(void **state)
{
    (void)state;
    const struct authz_rule *r = authz_rule_find("/gantry.v1.Sandboxes/Delete");
    Gantry__V1__DeleteSandboxRequest req = GANTRY__V1__DELETE_SANDBOX_REQUEST__INIT;
    req.namespace_ = "team-a";
    struct authz_decision d;
    struct authz_caller u = caller(b_user, 1), na = caller(b_na, 1), aud = caller(b_aud, 1),
                        pa = caller(b_pa, 1);
    authz_decide(r, &u, &req.base, &d);
    assert_true(d.allowed);
    assert_true(d.owner_check);
    authz_decide(r, &na, &req.base, &d);
    assert_true(d.allowed);
    assert_false(d.owner_check);
    authz_decide(r, &aud, &req.base, &d);
    assert_false(d.allowed);
    authz_decide(r, &pa, &req.base, &d);
    assert_true(d.allowed);
}

static void test_binding_rules(void **state)
{
    (void)state;
    char why[256];
    struct authz_caller na = caller(b_na, 1), pa = caller(b_pa, 1), u = caller(b_user, 1);
    assert_true(authz_binding_write(&na, AZ_ROLE_USER, "team-a", why, sizeof why));
    assert_false(authz_binding_write(&na, AZ_ROLE_USER, "team-b", why, sizeof why));
    assert_false(authz_binding_write(&na, AZ_ROLE_NAMESPACE_ADMIN, "team-a", why, sizeof why));
    assert_false(authz_binding_write(&na, AZ_ROLE_NAMESPACE_ADMIN, "team-b", why, sizeof why));
    assert_false(authz_binding_write(&na, AZ_ROLE_PLATFORM_ADMIN, "", why, sizeof why));
    assert_false(authz_binding_write(&na, AZ_ROLE_AUDITOR, "", why, sizeof why));
    assert_false(authz_binding_write(&u, AZ_ROLE_USER, "team-a", why, sizeof why));
    assert_true(authz_binding_write(&pa, AZ_ROLE_AUDITOR, "", why, sizeof why));
    /* Through the table, with the role read from the request. */
    const struct authz_rule *r = authz_rule_find("/gantry.v1.Principals/CreateRoleBinding");
    Gantry__V1__RoleBinding b = GANTRY__V1__ROLE_BINDING__INIT;
    Gantry__V1__CreateRoleBindingRequest req = GANTRY__V1__CREATE_ROLE_BINDING_REQUEST__INIT;
    b.role = GANTRY__V1__ROLE__ROLE_NAMESPACE_ADMIN;
    b.namespace_ = "team-a";
    req.binding = &b;
    struct authz_decision d;
    authz_decide(r, &na, &req.base, &d);
    assert_false(d.allowed);
    b.role = GANTRY__V1__ROLE__ROLE_USER;
    authz_decide(r, &na, &req.base, &d);
    assert_true(d.allowed);
}

/* A namespace_admin onboards users into its namespace and sets its quota within the ceiling. */
static void test_namespace_admin_onboards(void **state)
{
    (void)state;
    struct authz_caller na = caller(b_na, 1), pa = caller(b_pa, 1), u = caller(b_user, 1),
                        aud = caller(b_aud, 1);
    struct authz_decision d;
    const struct authz_rule *create = authz_rule_find("/gantry.v1.Principals/Create");
    Gantry__V1__Principal p = GANTRY__V1__PRINCIPAL__INIT;
    Gantry__V1__CreatePrincipalRequest req = GANTRY__V1__CREATE_PRINCIPAL_REQUEST__INIT;
    p.kind = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    req.principal = &p;
    req.namespace_ = "team-a";
    authz_decide(create, &na, &req.base, &d);
    assert_true(d.allowed && d.onboard);
    assert_string_equal(d.ns, "team-a");
    req.namespace_ = "team-b"; /* not its namespace */
    authz_decide(create, &na, &req.base, &d);
    assert_false(d.allowed);
    assert_non_null(strstr(d.why, "team-b"));
    req.namespace_ = ""; /* an unbound principal: platform admins only */
    authz_decide(create, &na, &req.base, &d);
    assert_false(d.allowed);
    authz_decide(create, &pa, &req.base, &d);
    assert_true(d.allowed && !d.onboard);
    req.namespace_ = "team-a";
    p.kind = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT;
    authz_decide(create, &na, &req.base, &d);
    assert_false(d.allowed);
    assert_non_null(strstr(d.why, "service accounts"));
    p.kind = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    authz_decide(create, &u, &req.base, &d);
    assert_false(d.allowed);
    authz_decide(create, &aud, &req.base, &d);
    assert_false(d.allowed);

    /* API keys: its own, and (checked by the handler) those of the users it manages. */
    authz_decide(authz_rule_find("/gantry.v1.ApiKeys/Create"), &na, NULL, &d);
    assert_true(d.allowed && d.self_check && d.manage_check);
    authz_decide(authz_rule_find("/gantry.v1.ApiKeys/List"), &na, NULL, &d);
    assert_true(d.allowed && d.self_check && d.manage_check);
    authz_decide(authz_rule_find("/gantry.v1.ApiKeys/Revoke"), &u, NULL, &d);
    assert_true(d.allowed && d.self_check && !d.manage_check);

    /* Quotas: within the ceiling (the handler's check), in its namespace only; ceilings are the
     * platform admin's. */
    const struct authz_rule *set = authz_rule_find("/gantry.v1.Quotas/Set");
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Quota q = GANTRY__V1__QUOTA__INIT;
    Gantry__V1__SetQuotaRequest qreq = GANTRY__V1__SET_QUOTA_REQUEST__INIT;
    meta.namespace_ = "team-a";
    q.meta = &meta;
    qreq.quota = &q;
    authz_decide(set, &na, &qreq.base, &d);
    assert_true(d.allowed && d.ceiling_check);
    authz_decide(set, &pa, &qreq.base, &d);
    assert_true(d.allowed && !d.ceiling_check);
    authz_decide(set, &u, &qreq.base, &d);
    assert_false(d.allowed);
    meta.namespace_ = "team-b";
    authz_decide(set, &na, &qreq.base, &d);
    assert_false(d.allowed);
    authz_decide(authz_rule_find("/gantry.v1.Quotas/SetCeiling"), &na, NULL, &d);
    assert_false(d.allowed);
    authz_decide(authz_rule_find("/gantry.v1.Quotas/DeleteCeiling"), &na, NULL, &d);
    assert_false(d.allowed);
}

static void test_no_bindings_no_access(void **state)
{
    (void)state;
    struct authz_caller nobody = caller(NULL, 0);
    size_t denied = 0, open = 0;
    for (size_t i = 0; i < authz_rule_count(); i++) {
        const struct authz_rule *r = authz_rule_at(i);
        struct authz_decision d;
        authz_decide(r, &nobody, NULL, &d);
        if (d.allowed) {
            /* Only rules that need no role, or that delegate a self check to the handler. */
            assert_true(r->action == AZ_TOKEN || r->action == AZ_AUTHENTICATED || d.self_check || d.filter);
            open++;
        } else {
            assert_true(d.why[0] != '\0');
            denied++;
        }
    }
    assert_true(denied > open);
}

/* --- delegation scopes (RFC 0005) --- */

static void test_scope_parse(void **state)
{
    (void)state;
    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("", &sc), 0);
    assert_false(sc.set);
    assert_int_equal(
        authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                          "[\"kubernetes.node_selector\"],\"allowed_credential_sources\":[\"gh\"],"
                          "\"create_on_behalf_of_owner\":true}",
                          &sc),
        0);
    assert_true(sc.set && sc.on_behalf);
    assert_int_equal(sc.n_patterns, 1);
    char *json = authz_scope_json(&sc);
    struct authz_scope again;
    assert_int_equal(authz_scope_parse(json, &again), 0);
    assert_memory_equal(&sc, &again, sizeof sc);
    mem_free(json);
    /* Anything else grants nothing. */
    assert_int_equal(authz_scope_parse("[]", &sc), GERR_INVAL);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":\"team-*\"}", &sc), GERR_INVAL);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[1]}", &sc), GERR_INVAL);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\","
                                       "\"h\",\"i\"]}",
                                       &sc),
                     GERR_INVAL);
    assert_int_equal(authz_scope_parse("{not json", &sc), GERR_INVAL);
}

/* ServiceAccount names in a scope: exact DNS-1123 subdomains, at most 8 and 512 bytes together,
 * never the gateway's own; kept across the stored JSON. */
/* The placement lists of a scope (issue 21): kubernetes namespace patterns and runtime classes,
 * parsed, matched, written back only when set, malformed ones refused. */
static void test_scope_placement(void **state)
{
    (void)state;
    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],"
                                       "\"allowed_kubernetes_namespaces\":[\"gpu-*\",\"batch\"],"
                                       "\"allowed_runtime_classes\":[\"gvisor\",\"kata.v2\"]}",
                                       &sc),
                     0);
    assert_int_equal(sc.n_kube_namespaces, 2);
    assert_true(authz_scope_allows_kube_namespace(&sc, "gpu-pool"));
    assert_true(authz_scope_allows_kube_namespace(&sc, "batch"));
    assert_false(authz_scope_allows_kube_namespace(&sc, "batch2"));
    assert_false(authz_scope_allows_kube_namespace(&sc, "tenant-a"));
    assert_true(authz_scope_allows_runtime_class(&sc, "kata.v2"));
    assert_false(authz_scope_allows_runtime_class(&sc, "kata"));
    assert_false(authz_scope_allows_runtime_class(&sc, "gvisor*"));
    char *json = authz_scope_json(&sc);
    assert_non_null(strstr(json, "\"allowed_kubernetes_namespaces\":[\"gpu-*\",\"batch\"]"));
    assert_non_null(strstr(json, "\"allowed_runtime_classes\":[\"gvisor\",\"kata.v2\"]"));
    struct authz_scope back;
    assert_int_equal(authz_scope_parse(json, &back), 0);
    assert_true(authz_scope_allows_runtime_class(&back, "gvisor"));
    assert_true(authz_scope_allows_kube_namespace(&back, "gpu-x"));
    mem_free(json);
    /* Absent (a scope stored before the fields existed): none, and not written. */
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &sc), 0);
    assert_false(authz_scope_allows_kube_namespace(&sc, "team-a"));
    assert_false(authz_scope_allows_runtime_class(&sc, "gvisor"));
    json = authz_scope_json(&sc);
    assert_null(strstr(json, "allowed_kubernetes_namespaces"));
    assert_null(strstr(json, "allowed_runtime_classes"));
    mem_free(json);
    const char *bad[] = {"{\"namespace_patterns\":[\"a\"],\"allowed_kubernetes_namespaces\":[\"Gpu\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_kubernetes_namespaces\":[\"\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_kubernetes_namespaces\":\"gpu\"}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_runtime_classes\":[\"a b\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_runtime_classes\":[7]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_runtime_classes\":[\"a\",\"b\",\"c\","
                         "\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(authz_scope_parse(bad[i], &sc), GERR_INVAL);
    }
    /* 63 characters at most for a pattern; the bytes together are bounded. */
    char long_pat[70];
    memset(long_pat, 'a', 64);
    long_pat[64] = '\0';
    memset(&sc, 0, sizeof sc);
    assert_int_equal(authz_scope_add_kube_namespace(&sc, long_pat), GERR_INVAL);
    long_pat[63] = '\0';
    for (int i = 0; i < 8; i++) {
        assert_int_equal(authz_scope_add_kube_namespace(&sc, long_pat), 0); /* 65 bytes each */
    }
    for (int i = 0; i < 7; i++) {
        assert_int_equal(authz_scope_add_secret_namespace(&sc, long_pat), 0);
    }
    assert_int_equal(authz_scope_add_secret_namespace(&sc, long_pat), GERR_TOOBIG); /* 1040 > 1024 */
    assert_int_equal(sc.n_secret_namespaces, 7);
    /* The six lists share the buffer: what is left fits a short entry of another list, no more. */
    assert_int_equal(authz_scope_add_runtime_class(&sc, "gvisor"), 0);
    assert_int_equal(authz_scope_add_secret_name(&sc, long_pat), GERR_TOOBIG);
    assert_int_equal(sc.n_secret_names, 0);
    const char *kns[AUTHZ_SCOPE_MAX], *rcs[AUTHZ_SCOPE_MAX];
    assert_int_equal(authz_scope_kube_namespaces(&sc, kns, AUTHZ_SCOPE_MAX), 8);
    assert_int_equal(authz_scope_runtime_classes(&sc, rcs, AUTHZ_SCOPE_MAX), 1);
    assert_string_equal(rcs[0], "gvisor");
    assert_string_equal(kns[7], long_pat);
    /* AUTHZ_SCOPE_MAX entries per list, however short. */
    memset(&sc, 0, sizeof sc);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(authz_scope_add_runtime_class(&sc, "r"), 0);
    }
    assert_int_equal(authz_scope_add_runtime_class(&sc, "r"), GERR_TOOBIG);
    assert_int_equal(authz_scope_add_secret_namespace(&sc, "s"), 0);
}

/* The claim allocation lists (issue 21): warm pools and templates, exact names, parsed, matched,
 * written back only when set, malformed ones refused; they share the placement buffer. */
static void test_scope_claims(void **state)
{
    (void)state;
    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],"
                                       "\"allowed_warm_pools\":[\"pool-a\",\"gpu.pool\"],"
                                       "\"allowed_templates\":[\"agent-tpl\"]}",
                                       &sc),
                     0);
    assert_int_equal(sc.n_warm_pools, 2);
    assert_int_equal(sc.n_templates, 1);
    assert_true(authz_scope_allows_warm_pool(&sc, "pool-a"));
    assert_true(authz_scope_allows_warm_pool(&sc, "gpu.pool"));
    assert_false(authz_scope_allows_warm_pool(&sc, "pool-b"));
    assert_false(authz_scope_allows_warm_pool(&sc, "agent-tpl")); /* lists are not mixed */
    assert_true(authz_scope_allows_template(&sc, "agent-tpl"));
    assert_false(authz_scope_allows_template(&sc, "pool-a"));
    assert_false(authz_scope_allows_runtime_class(&sc, "pool-a"));
    char *json = authz_scope_json(&sc);
    assert_non_null(strstr(json, "\"allowed_warm_pools\":[\"pool-a\",\"gpu.pool\"]"));
    assert_non_null(strstr(json, "\"allowed_templates\":[\"agent-tpl\"]"));
    struct authz_scope back;
    assert_int_equal(authz_scope_parse(json, &back), 0);
    assert_true(authz_scope_allows_warm_pool(&back, "gpu.pool"));
    assert_true(authz_scope_allows_template(&back, "agent-tpl"));
    mem_free(json);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &sc), 0);
    assert_false(authz_scope_allows_warm_pool(&sc, "pool-a"));
    assert_false(authz_scope_allows_template(&sc, "agent-tpl"));
    json = authz_scope_json(&sc);
    assert_null(strstr(json, "allowed_warm_pools"));
    assert_null(strstr(json, "allowed_templates"));
    mem_free(json);
    const char *bad[] = {"{\"namespace_patterns\":[\"a\"],\"allowed_warm_pools\":[\"Pool\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_warm_pools\":[\"pool-*\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_templates\":\"t\"}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_templates\":[\"\"]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(authz_scope_parse(bad[i], &sc), GERR_INVAL);
    }
}

/* Node placement lists (issue 21): node selector pairs matched exactly, toleration patterns
 * key[=value][:effect] matched as authz.h says; parsed, written back only when set, malformed ones
 * refused. */
static void test_scope_node_placement(void **state)
{
    (void)state;
    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],"
                                       "\"allowed_node_selectors\":[\"pool=gpu\",\"example.com/zone=eu-1\"],"
                                       "\"allowed_tolerations\":[\"agents\",\"gpu=a100:NoSchedule\","
                                       "\"example.com/spot:NoExecute\"]}",
                                       &sc),
                     0);
    assert_int_equal(sc.n_node_selectors, 2);
    assert_int_equal(sc.n_tolerations, 3);
    assert_true(authz_scope_allows_node_selector(&sc, "pool", "gpu"));
    assert_true(authz_scope_allows_node_selector(&sc, "example.com/zone", "eu-1"));
    assert_false(authz_scope_allows_node_selector(&sc, "pool", "cpu"));
    assert_false(authz_scope_allows_node_selector(&sc, "poo", "l=gpu"));
    assert_false(authz_scope_allows_node_selector(&sc, "pool", "gp"));
    assert_false(authz_scope_allows_node_selector(&sc, "zone", "eu-1"));
    /* A key alone: any operator, value and effect of that key. */
    struct authz_toleration t = {"agents", "Exists", NULL, NULL};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"agents", NULL, "x", "NoExecute"};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    /* A value: only Equal (also the default operator) with that value. */
    t = (struct authz_toleration){"gpu", "Equal", "a100", "NoSchedule"};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"gpu", NULL, "a100", "NoSchedule"};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"gpu", "Exists", NULL, "NoSchedule"}; /* every value of gpu */
    assert_false(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"gpu", "Equal", "h100", "NoSchedule"};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    /* An effect: only that effect; no effect tolerates them all. */
    t = (struct authz_toleration){"gpu", "Equal", "a100", NULL};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"gpu", "Equal", "a100", "NoExecute"};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"example.com/spot", "Exists", NULL, "NoExecute"};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"example.com/spot", "Exists", NULL, ""};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    /* No key (with Exists: every taint) is never allowed; other keys are not. */
    t = (struct authz_toleration){"", "Exists", NULL, NULL};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){NULL, "Exists", NULL, NULL};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    t = (struct authz_toleration){"agent", "Exists", NULL, NULL};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    char *json = authz_scope_json(&sc);
    assert_non_null(strstr(json, "\"allowed_node_selectors\":[\"pool=gpu\",\"example.com/zone=eu-1\"]"));
    assert_non_null(strstr(
        json, "\"allowed_tolerations\":[\"agents\",\"gpu=a100:NoSchedule\",\"example.com/spot:NoExecute\"]"));
    struct authz_scope back;
    assert_int_equal(authz_scope_parse(json, &back), 0);
    assert_true(authz_scope_allows_node_selector(&back, "pool", "gpu"));
    t = (struct authz_toleration){"gpu", "Equal", "a100", "NoSchedule"};
    assert_true(authz_scope_allows_toleration(&back, &t));
    mem_free(json);
    /* Empty lists: none (the key alone in allowed_driver_config_keys is not enough). */
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &sc), 0);
    assert_false(authz_scope_allows_node_selector(&sc, "pool", "gpu"));
    t = (struct authz_toleration){"agents", "Exists", NULL, NULL};
    assert_false(authz_scope_allows_toleration(&sc, &t));
    json = authz_scope_json(&sc);
    assert_null(strstr(json, "allowed_node_selectors"));
    assert_null(strstr(json, "allowed_tolerations"));
    mem_free(json);
    const char *bad_sel[] = {"pool",
                             "=gpu",
                             "pool=gpu,zone=a",
                             "pool=-gpu",
                             "Pool Key=x",
                             "pool=a:b",
                             "-pool=x",
                             "a/b/c=x",
                             "/x=y",
                             "pool="
                             "0123456789012345678901234567890123456789"
                             "012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad_sel / sizeof bad_sel[0]; i++) {
        memset(&sc, 0, sizeof sc);
        assert_int_equal(authz_scope_add_node_selector(&sc, bad_sel[i]), GERR_INVAL);
        assert_int_equal(sc.n_node_selectors, 0);
    }
    const char *bad_tol[] = {"",       "=x",     ":NoSchedule", "gpu:Sometimes", "gpu=a:b:NoSchedule",
                             "gpu=-a", "gpu==a", "*",           "gpu=a:"};
    for (size_t i = 0; i < sizeof bad_tol / sizeof bad_tol[0]; i++) {
        memset(&sc, 0, sizeof sc);
        assert_int_equal(authz_scope_add_toleration(&sc, bad_tol[i]), GERR_INVAL);
        assert_int_equal(sc.n_tolerations, 0);
    }
    /* A label may have an empty value: "key=" selects and tolerates exactly that. */
    memset(&sc, 0, sizeof sc);
    assert_int_equal(authz_scope_add_node_selector(&sc, "pool="), 0);
    assert_true(authz_scope_allows_node_selector(&sc, "pool", ""));
    assert_int_equal(authz_scope_add_toleration(&sc, "gpu="), 0);
    t = (struct authz_toleration){"gpu", "Equal", "", NULL};
    assert_true(authz_scope_allows_toleration(&sc, &t));
    /* AUTHZ_SCOPE_MAX entries per list; the lists share the placement buffer with the others. */
    for (int i = 1; i < 8; i++) {
        assert_int_equal(authz_scope_add_toleration(&sc, "agents:NoSchedule"), 0);
    }
    assert_int_equal(authz_scope_add_toleration(&sc, "agents"), GERR_TOOBIG);
    const char *bad[] = {"{\"namespace_patterns\":[\"a\"],\"allowed_node_selectors\":[\"pool\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_node_selectors\":\"pool=a\"}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_tolerations\":[\"gpu:Never\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_tolerations\":[7]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(authz_scope_parse(bad[i], &sc), GERR_INVAL);
    }
}

static void test_scope_service_accounts(void **state)
{
    (void)state;
    assert_true(authz_sa_name_ok("runner"));
    assert_true(authz_sa_name_ok("ci.runner-2"));
    assert_false(authz_sa_name_ok(""));
    assert_false(authz_sa_name_ok("Runner"));
    assert_false(authz_sa_name_ok("-a"));
    assert_false(authz_sa_name_ok("a-"));
    assert_false(authz_sa_name_ok("a.-b"));
    assert_false(authz_sa_name_ok("a-.b"));
    assert_false(authz_sa_name_ok("a..b"));
    assert_false(authz_sa_name_ok("a_b"));
    assert_true(authz_sa_reserved("gantry"));
    assert_false(authz_sa_reserved("gantry-runner"));

    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_service_accounts\":"
                                       "[\"runner\",\"ci.runner\"]}",
                                       &sc),
                     0);
    assert_int_equal(sc.n_service_accounts, 2);
    assert_true(authz_scope_allows_service_account(&sc, "runner"));
    assert_true(authz_scope_allows_service_account(&sc, "ci.runner"));
    assert_false(authz_scope_allows_service_account(&sc, "ci"));
    assert_false(authz_scope_allows_service_account(&sc, "runner2"));
    const char *names[AUTHZ_SCOPE_MAX];
    assert_int_equal(authz_scope_service_accounts(&sc, names, AUTHZ_SCOPE_MAX), 2);
    assert_string_equal(names[1], "ci.runner");
    char *json = authz_scope_json(&sc);
    assert_non_null(strstr(json, "\"allowed_service_accounts\":[\"runner\",\"ci.runner\"]"));
    struct authz_scope again;
    assert_int_equal(authz_scope_parse(json, &again), 0);
    assert_memory_equal(&sc, &again, sizeof sc);
    mem_free(json);

    /* An old scope (no list) allows none, and its stored text does not change. */
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &sc), 0);
    assert_false(authz_scope_allows_service_account(&sc, "runner"));
    json = authz_scope_json(&sc);
    assert_null(strstr(json, "allowed_service_accounts"));
    mem_free(json);

    /* Malformed, reserved, too many: the scope grants nothing. */
    assert_int_equal(
        authz_scope_parse("{\"namespace_patterns\":[\"a\"],\"allowed_service_accounts\":[\"Bad\"]}", &sc),
        GERR_INVAL);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"a\"],\"allowed_service_accounts\":"
                                       "[\"gantry\"]}",
                                       &sc),
                     GERR_INVAL);
    assert_int_equal(
        authz_scope_parse("{\"namespace_patterns\":[\"a\"],\"allowed_service_accounts\":\"x\"}", &sc),
        GERR_INVAL);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"a\"],\"allowed_service_accounts\":"
                                       "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}",
                                       &sc),
                     GERR_INVAL);
    /* Bytes: two names of 253 fit, a third does not; the scope is unchanged by the refusal. */
    memset(&sc, 0, sizeof sc);
    char big[254];
    for (size_t i = 0; i < 253; i++) {
        big[i] = i % 60 == 59 ? '.' : 'a';
    }
    big[253] = '\0';
    assert_int_equal(authz_scope_add_service_account(&sc, big), 0);
    big[0] = 'b';
    assert_int_equal(authz_scope_add_service_account(&sc, big), 0);
    big[0] = 'c';
    assert_int_equal(authz_scope_add_service_account(&sc, big), GERR_TOOBIG);
    assert_int_equal(sc.n_service_accounts, 2);
    assert_int_equal(authz_scope_add_service_account(&sc, "short"), GERR_TOOBIG); /* 508 + 6 > 512 */
    assert_int_equal(authz_scope_add_service_account(&sc, "s"), 0);
    assert_true(authz_scope_allows_service_account(&sc, "s"));
    assert_int_equal(authz_scope_add_service_account(&sc, "gantry"), GERR_INVAL);
}

static void test_delegated_binding(void **state)
{
    (void)state;
    struct authz_binding b[2] = {{.role = AZ_ROLE_USER, .ns = ""}};
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.node_selector\",\"runtime_class\"],"
                                       "\"allowed_credential_sources\":[\"gh-*\"]}",
                                       &b[0].scope),
                     0);
    assert_true(authz_binding_covers(&b[0], "team-a"));
    assert_false(authz_binding_covers(&b[0], "ops"));
    assert_false(authz_binding_covers(&b[0], "")); /* never global */
    struct authz_caller c = caller(b, 1);
    const struct authz_rule *create = authz_rule_find("/gantry.v1.Sandboxes/Create");
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__CreateSandboxRequest req = GANTRY__V1__CREATE_SANDBOX_REQUEST__INIT;
    sb.meta = &meta;
    req.sandbox = &sb;
    struct authz_decision d;
    meta.namespace_ = "team-b";
    authz_decide(create, &c, &req.base, &d);
    assert_true(d.allowed);
    meta.namespace_ = "ops";
    authz_decide(create, &c, &req.base, &d);
    assert_false(d.allowed);
    /* Not an admin anywhere, not global. */
    authz_decide(authz_rule_find("/gantry.v1.Cluster/ListMembers"), &c, NULL, &d);
    assert_false(d.allowed);

    const struct authz_scope *scopes[4];
    assert_int_equal(authz_delegations(&c, "team-a", scopes, 4), 1);
    assert_true(authz_scope_allows_config(scopes[0], "kubernetes", "node_selector"));
    assert_true(authz_scope_allows_config(scopes[0], "process", "runtime_class"));
    assert_false(authz_scope_allows_config(scopes[0], "kubernetes", "tolerations"));
    assert_true(authz_scope_allows_source(scopes[0], "gh-bot"));
    assert_false(authz_scope_allows_source(scopes[0], "aws"));
    /* A plain binding in the namespace lifts the restriction there, not elsewhere. */
    b[1] = (struct authz_binding){.role = AZ_ROLE_USER, .ns = "team-a"};
    c = caller(b, 2);
    assert_int_equal(authz_delegations(&c, "team-a", scopes, 4), 0);
    assert_int_equal(authz_delegations(&c, "team-c", scopes, 4), 1);
    assert_int_equal(authz_delegations(&c, "ops", scopes, 4), 0); /* and no authority at all there */
    c = caller(b_pa, 1);
    assert_int_equal(authz_delegations(&c, "team-a", scopes, 4), 0);
}

struct perms {
    size_t n;
    bool create_team, create_star, members, shared_own;
};

static void count_perm(void *arg, const struct authz_rule *r, const char *where, const char *condition)
{
    struct perms *p = arg;
    p->n++;
    p->create_team |= strcmp(r->path, "/gantry.v1.Sandboxes/Create") == 0 && strcmp(where, "team-a") == 0;
    p->create_star |= strcmp(r->path, "/gantry.v1.Sandboxes/Create") == 0 && strcmp(where, "*") == 0;
    p->members |= strcmp(r->path, "/gantry.v1.Cluster/ListMembers") == 0;
    p->shared_own |= strcmp(r->path, "/gantry.v1.Sandboxes/Delete") == 0 && condition[0] != '\0';
}

static void test_effective_permissions(void **state)
{
    (void)state;
    struct perms user = {0}, pa = {0}, aud = {0}, none = {0};
    struct authz_caller c = caller(b_user, 1);
    authz_effective(&c, count_perm, &user);
    assert_true(user.create_team && !user.create_star && !user.members && user.shared_own);
    c = caller(b_pa, 1);
    authz_effective(&c, count_perm, &pa);
    assert_true(pa.create_star && pa.members && !pa.shared_own);
    /* Every rule but Join (a token call) is the platform admin's. */
    assert_int_equal(pa.n, authz_rule_count() - 1);
    c = caller(b_aud, 1);
    authz_effective(&c, count_perm, &aud);
    assert_true(!aud.create_star && !aud.create_team && !aud.members);
    c = caller(NULL, 0);
    authz_effective(&c, count_perm, &none);
    assert_true(none.n < user.n && !none.create_team);
}

/* --- docs/api.md --- */

static void doc(struct buf *out)
{
    buf_printf(
        out, "# API reference\n\n"
             "Generated from the `gantry.v1` protos and the authorization table (`api/authz/authz.c`) by\n"
             "`tests/unit/test_authz --write-doc`; `unit_authz` fails when this file is out of date. Every\n"
             "call is authenticated (an API key, or a client certificate mapped to a principal) and "
             "authorized by the\n"
             "table before anything else; [security.md](security.md) explains the roles. \"Namespace from\"\n"
             "names the request field the target namespace is read from.\n");
    buf_printf(out,
               "\nSome calls check more inside the handler, after the table: `Sandboxes.Create` with a\n"
               "`driver_config` `process` `network` of `host` (the host's network, where `egress_allow` is\n"
               "not applied) is PERMISSION_DENIED for everyone but a platform_admin, and audited as an\n"
               "event of its own ([egress.md](egress.md)); its `spec.policy` may only tighten the gateway\n"
               "and namespace policies\n"
               "([providers-policies.md](providers-policies.md#a-sandboxs-own-policy-third-layer));\n"
               "`Egress.Decide` with `intent.sandbox` applies that sandbox's own policy as a third layer.\n");
    for (size_t s = 0; api_services[s] != NULL; s++) {
        const ProtobufCServiceDescriptor *svc = api_services[s];
        buf_printf(out,
                   "\n## %s\n\n| method | request | response | who may call | namespace from "
                   "|\n|---|---|---|---|---|\n",
                   svc->name);
        for (unsigned m = 0; m < svc->n_methods; m++) {
            char path[256];
            snprintf(path, sizeof path, "/%s/%s", svc->name, svc->methods[m].name);
            const struct authz_rule *r = authz_rule_find(path);
            buf_printf(out, "| `%s` | `%s` | `%s` | %s%s | %s%s%s |\n", svc->methods[m].name,
                       svc->methods[m].input->name, svc->methods[m].output->name,
                       authz_action_describe(r->action), r->mutating ? " (write)" : "",
                       r->ns_field != NULL ? "`" : "", r->ns_field != NULL ? r->ns_field : "-",
                       r->ns_field == NULL ? ""
                       : !r->ns_optional   ? "`"
                       : r->mutating       ? "` (may be empty: see the method)"
                                           : "` (empty: all the caller may read)");
        }
    }
}

static void test_doc_is_current(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    doc(&b);
    char *have = NULL, err[GERR_MSG_SIZE];
    size_t len = 0;
    int rv = file_read_all(DOC_PATH, 1u << 20, &have, &len, err);
    if (rv != 0 || len != b.len || memcmp(have, b.data, len) != 0) {
        fail_msg("docs/api.md is out of date: run tests/unit/test_authz --write-doc (from the build tree)");
    }
    mem_free(have);
    buf_close(&b);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--write-doc") == 0) {
        struct buf b;
        buf_init(&b);
        doc(&b);
        FILE *f = fopen(DOC_PATH, "w");
        if (f == NULL || fwrite(b.data, 1, b.len, f) != b.len || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", DOC_PATH);
            return 1;
        }
        buf_close(&b);
        printf("rewrote %s\n", DOC_PATH);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_covers_every_rpc),
        cmocka_unit_test(test_namespace_from_request),
        cmocka_unit_test(test_sandbox_ownership_is_delegated),
        cmocka_unit_test(test_binding_rules),
        cmocka_unit_test(test_namespace_admin_onboards),
        cmocka_unit_test(test_no_bindings_no_access),
        cmocka_unit_test(test_scope_parse),
        cmocka_unit_test(test_scope_service_accounts),
        cmocka_unit_test(test_scope_placement),
        cmocka_unit_test(test_scope_claims),
        cmocka_unit_test(test_scope_node_placement),
        cmocka_unit_test(test_delegated_binding),
        cmocka_unit_test(test_effective_permissions),
        cmocka_unit_test(test_doc_is_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
