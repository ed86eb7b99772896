/* Unit tests for the decisions about a sandbox to create (api/rules/sandbox.h) and labels
 * (api/rules/labels.h), without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/labels.h"
#include "api/rules/sandbox.h"
#include "lib/mem.h"

struct sb {
    Gantry__V1__Sandbox s;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__SandboxSpec spec;
};

static void sb_init(struct sb *b)
{
    gantry__v1__sandbox__init(&b->s);
    gantry__v1__object_meta__init(&b->meta);
    gantry__v1__sandbox_spec__init(&b->spec);
    b->meta.name = "agent-1";
    b->meta.namespace_ = "team-a";
    b->spec.image = "busybox";
    b->s.meta = &b->meta;
    b->s.spec = &b->spec;
}

static void test_validate(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct sb b;
    sb_init(&b);
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));

    b.meta.name = "Agent_1";
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_non_null(strstr(why, "sandbox.meta.name "));
    b.meta.name = "agent-1";

    b.spec.image = "busy box";
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_string_equal(why, "sandbox.spec.image is required (at most 512 bytes, no spaces)");
    b.spec.image = "";
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    b.spec.image = "busybox";
    b.s.spec = NULL;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    b.s.spec = &b.spec;

    Gantry__V1__SandboxSpec__EnvEntry e = GANTRY__V1__SANDBOX_SPEC__ENV_ENTRY__INIT;
    Gantry__V1__SandboxSpec__EnvEntry *ep[] = {&e};
    e.key = "9LIVES";
    e.value = "x";
    b.spec.env = ep;
    b.spec.n_env = 1;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_string_equal(why,
                        "sandbox.spec.env: variable 0 needs a name of letters, digits and '_' (not starting "
                        "with a digit) and a value of at most 32 KiB");
    e.key = "_LIVES9";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));

    b.spec.gpu_count = SANDBOX_MAX_GPUS + 1;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_string_equal(why, "sandbox.spec.gpu_count is at most 64");
    b.spec.gpu_count = SANDBOX_MAX_GPUS;
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));

    b.spec.lifetime_seconds = SANDBOX_MAX_LIFETIME_S + 1;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_string_equal(why, "sandbox.spec.lifetime_seconds is at most 2592000 (30 days)");
    b.spec.lifetime_seconds = 0;

    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    d.value = "\"not an object\"";
    b.spec.driver_config = dp;
    b.spec.n_driver_config = 1;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_string_equal(
        why, "sandbox.spec.driver_config: the entry for driver 0 must be a driver name with a JSON "
             "object (at most 64 KiB)");
    d.value = "{}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
}

static void test_labels(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE];
    Gantry__V1__ObjectMeta__LabelsEntry a = GANTRY__V1__OBJECT_META__LABELS_ENTRY__INIT,
                                        b = GANTRY__V1__OBJECT_META__LABELS_ENTRY__INIT;
    Gantry__V1__ObjectMeta__LabelsEntry *l[] = {&a, &b};
    a.key = "team";
    a.value = "red";
    b.key = "app.kubernetes.io/name";
    b.value = "x";
    assert_int_equal(labels_check(l, 2, "x.labels", err), 0);
    char *json = labels_json(l, 2);
    assert_string_equal(json, "{\"app.kubernetes.io/name\":\"x\",\"team\":\"red\"}");
    Gantry__V1__LabelSelector sel = GANTRY__V1__LABEL_SELECTOR__INIT;
    Gantry__V1__LabelSelector__MatchLabelsEntry m = GANTRY__V1__LABEL_SELECTOR__MATCH_LABELS_ENTRY__INIT;
    Gantry__V1__LabelSelector__MatchLabelsEntry *mp[] = {&m};
    m.key = "team";
    m.value = "red";
    sel.match_labels = mp;
    sel.n_match_labels = 1;
    assert_true(labels_match(json, &sel));
    m.value = "blue";
    assert_false(labels_match(json, &sel));
    assert_true(labels_match(json, NULL));
    mem_free(json);
    b.key = "";
    assert_int_equal(labels_check(l, 2, "x.labels", err), GERR_INVAL);
    assert_string_equal(err,
                        "x.labels: key 1 is not 1..63 characters of letters, digits, '.', '_', '-', '/'");
}

static void test_delegation(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    Gantry__V1__SandboxSpec s = GANTRY__V1__SANDBOX_SPEC__INIT;
    s.image = "busybox";
    struct sandbox_creator c = {.id = "p1"};
    assert_true(sandbox_rules_delegation(&c, &s, why, sizeof why));
    s.owner_id = "p1"; /* oneself is not "on behalf" */
    assert_true(sandbox_rules_delegation(&c, &s, why, sizeof why));
    s.owner_id = "p2";
    assert_false(sandbox_rules_delegation(&c, &s, why, sizeof why));
    assert_string_equal(why,
                        "creating a sandbox on behalf of another principal needs a delegation scope with "
                        "create_on_behalf_of_owner, or platform_admin");
    c.platform_admin = true;
    assert_true(sandbox_rules_delegation(&c, &s, why, sizeof why));
    c.platform_admin = false;

    struct authz_scope narrow, wide;
    assert_int_equal(
        authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                          "[\"kubernetes.runtime_class\"],\"allowed_credential_sources\":[\"gh\"],"
                          "\"allowed_runtime_classes\":[\"gvisor\"]}",
                          &narrow),
        0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.*\"],\"allowed_credential_sources\":[\"*\"],"
                                       "\"create_on_behalf_of_owner\":true}",
                                       &wide),
                     0);
    const struct authz_scope *one[] = {&narrow}, *two[] = {&narrow, &wide};
    c.scopes = one;
    c.n_scopes = 1;
    assert_false(sandbox_rules_delegation(&c, &s, why, sizeof why));
    assert_string_equal(
        why, "the delegation scope does not allow creating sandboxes on behalf of another principal");
    s.owner_id = "";
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    d.value = "{\"resources\":{}}";
    s.driver_config = dp;
    s.n_driver_config = 1;
    assert_false(sandbox_rules_delegation(&c, &s, why, sizeof why));
    assert_string_equal(why, "driver_config key \"kubernetes.resources\" is outside the delegation scope");
    d.value = "{\"runtime_class\":\"gvisor\"}";
    char *prov[] = {"openai"};
    s.providers = prov;
    s.n_providers = 1;
    assert_false(sandbox_rules_delegation(&c, &s, why, sizeof why));
    assert_string_equal(why, "credential source (provider) \"openai\" is outside the delegation scope");
    /* Any one scope wide enough is enough. */
    c.scopes = two;
    c.n_scopes = 2;
    s.owner_id = "p2";
    d.value = "{\"resources\":{}}";
    assert_true(sandbox_rules_delegation(&c, &s, why, sizeof why));
    assert_string_equal(why, "");
}

/* A driver_config "service_account" is a ServiceAccount name (INVALID_ARGUMENT otherwise), and a
 * delegated caller may name only one its scope lists (PERMISSION_DENIED otherwise). */
static void test_service_account(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct sb b;
    sb_init(&b);
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    b.spec.driver_config = dp;
    b.spec.n_driver_config = 1;
    const char *bad[] = {"{\"service_account\":\"Runner\"}", "{\"service_account\":7}",
                         "{\"service_account\":\"\"}", "{\"service_account\":\"a..b\"}",
                         "{\"service_account\":null}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.value = (char *)bad[i];
        assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
        assert_string_equal(why, "sandbox.spec.driver_config[\"kubernetes\"].service_account must be a "
                                 "ServiceAccount name (a DNS-1123 subdomain: at most 253 characters of a-z, "
                                 "0-9, '-' and '.')");
    }
    d.value = "{\"service_account\":\"ci.runner\"}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));

    /* Not delegated: the scope check does not apply (the policies do, in the handler). */
    struct sandbox_creator c = {.id = "p1"};
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));

    struct authz_scope keys_only, with_sa;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.*\"]}",
                                       &keys_only),
                     0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.service_account\"],\"allowed_service_accounts\":"
                                       "[\"runner\",\"ci.runner\"]}",
                                       &with_sa),
                     0);
    const struct authz_scope *one[] = {&keys_only}, *two[] = {&keys_only, &with_sa};
    c.scopes = one;
    c.n_scopes = 1;
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why,
                        "driver_config kubernetes.service_account \"ci.runner\" is outside the delegation "
                        "scope (allowed_service_accounts is empty: none)");
    c.scopes = two;
    c.n_scopes = 2;
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.value = "{\"service_account\":\"builder\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.service_account \"builder\" is outside the delegation "
                             "scope (allowed_service_accounts)");
    /* Exact names only: a prefix is not a match. */
    d.value = "{\"service_account\":\"runner2\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
}

/* Placement (issue 21): namespace, runtime_class and tolerations of the "kubernetes" entry are a
 * platform_admin's or a delegated caller's choice, value by value within its scope; malformed
 * namespace and runtime_class values are INVALID_ARGUMENT for everyone. */
static void test_placement(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct sb b;
    sb_init(&b);
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    b.spec.driver_config = dp;
    b.spec.n_driver_config = 1;
    const char *bad[] = {"{\"namespace\":\"Bad_NS\"}", "{\"namespace\":7}", "{\"namespace\":\"\"}",
                         "{\"runtime_class\":\"Not A Class\"}", "{\"runtime_class\":[]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.value = (char *)bad[i];
        assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
        assert_non_null(strstr(why, i < 3 ? "].namespace must be" : "].runtime_class must be"));
    }
    /* Another driver's entry may use these names for its own purposes. */
    d.key = "process";
    d.value = "{\"namespace\":\"Bad_NS\"}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
    struct sandbox_creator c = {.id = "p1"};
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.key = "kubernetes";

    /* An ordinary user gets the configured placement: any choice is refused, naming key and value. */
    d.value = "{\"namespace\":\"gpu-pool\",\"node_selector\":\"pool=a\"}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "driver_config kubernetes.namespace \"gpu-pool\": choosing the placement"));
    d.value = "{\"tolerations\":[{\"key\":\"k\",\"operator\":\"Exists\"}]}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "kubernetes.tolerations \"[{\"key\":\"k\",\"operator\":\"Exists\"}]\""));
    d.value = "{\"node_selector\":\"pool=a\",\"service_account\":\"runner\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "driver_config kubernetes.node_selector \"pool=a\": choosing the placement"));
    d.value = "{\"service_account\":\"runner\",\"resources\":{}}"; /* not placement keys */
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    /* A platform_admin chooses freely (the driver still checks its own limits). */
    c.platform_admin = true;
    d.value = "{\"namespace\":\"anything\",\"runtime_class\":\"kata\"}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    c.platform_admin = false;

    struct authz_scope keys_only, placed;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.*\"]}",
                                       &keys_only),
                     0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.namespace\",\"kubernetes.runtime_class\"],"
                                       "\"allowed_kubernetes_namespaces\":[\"gpu-*\"],"
                                       "\"allowed_runtime_classes\":[\"gvisor\"]}",
                                       &placed),
                     0);
    const struct authz_scope *one[] = {&keys_only}, *two[] = {&keys_only, &placed};
    c.scopes = one;
    c.n_scopes = 1;
    d.value = "{\"namespace\":\"gpu-pool\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why,
                        "driver_config kubernetes.namespace \"gpu-pool\" is outside the delegation scope "
                        "(allowed_kubernetes_namespaces is empty: none)");
    c.scopes = two;
    c.n_scopes = 2;
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.value = "{\"namespace\":\"gpu-pool\",\"runtime_class\":\"gvisor\"}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.value = "{\"namespace\":\"tenant-b\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "\"tenant-b\" is outside the delegation scope"));
    d.value = "{\"namespace\":\"gpu-pool\",\"runtime_class\":\"gvisor2\"}"; /* exact names only */
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why,
                        "driver_config kubernetes.runtime_class \"gvisor2\" is outside the delegation scope "
                        "(allowed_runtime_classes)");
    /* The key must be allowed as well as the value. */
    d.value = "{\"namespace\":\"gpu-pool\",\"tolerations\":[]}";
    c.scopes = (const struct authz_scope *const[]){&placed};
    c.n_scopes = 1;
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "kubernetes.tolerations"));
}

/* Node placement (issue 21): node_selector and tolerations of the "kubernetes" entry, in the
 * kubernetes driver's encodings, value by value within a delegated caller's allowed_node_selectors
 * and allowed_tolerations; malformed values INVALID_ARGUMENT (sandbox_rules_validate) for everyone. */
static void test_node_placement(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct sb b;
    sb_init(&b);
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    b.spec.driver_config = dp;
    b.spec.n_driver_config = 1;
    const char *bad[] = {"{\"node_selector\":{\"pool\":\"gpu\"}}",
                         "{\"node_selector\":\"\"}",
                         "{\"node_selector\":\"pool\"}",
                         "{\"node_selector\":\"pool=gpu,\"}",
                         "{\"node_selector\":\"pool=g pu\"}",
                         "{\"node_selector\":7}",
                         "{\"tolerations\":{}}",
                         "{\"tolerations\":\"[\"}",
                         "{\"tolerations\":[{\"key\":\"k\",\"operator\":\"Sometimes\"}]}",
                         "{\"tolerations\":[{\"key\":\"k\",\"effect\":\"Never\"}]}",
                         "{\"tolerations\":[{\"key\":\"k\",\"color\":\"red\"}]}",
                         "{\"tolerations\":[7]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.value = (char *)bad[i];
        assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
        assert_non_null(strstr(why, i < 6 ? "].node_selector must be" : "].tolerations"));
    }
    const char *good[] = {"{\"node_selector\":\"pool=gpu,example.com/zone=eu-1\"}", "{\"tolerations\":[]}",
                          "{\"tolerations\":\"[{\\\"key\\\":\\\"gpu\\\",\\\"operator\\\":\\\"Exists\\\"}]\"}",
                          "{\"tolerations\":[{\"key\":\"gpu\",\"value\":\"a100\",\"effect\":\"NoSchedule\","
                          "\"tolerationSeconds\":30}]}"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        d.value = (char *)good[i];
        assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
    }

    struct authz_scope keys_only, placed;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.*\"]}",
                                       &keys_only),
                     0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.node_selector\",\"kubernetes.tolerations\"],"
                                       "\"allowed_node_selectors\":[\"pool=gpu\",\"zone=eu-1\"],"
                                       "\"allowed_tolerations\":[\"gpu=a100:NoSchedule\",\"agents\"]}",
                                       &placed),
                     0);
    struct sandbox_creator c = {.id = "p1"};
    const struct authz_scope *one[] = {&keys_only}, *two[] = {&keys_only, &placed};
    c.scopes = one;
    c.n_scopes = 1;
    /* The key alone is not enough: the lists are empty, so no value is allowed. */
    d.value = "{\"node_selector\":\"pool=gpu\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.node_selector \"pool=gpu\" is outside the delegation "
                             "scope (allowed_node_selectors is empty: none)");
    d.value = "{\"tolerations\":[{\"key\":\"agents\",\"operator\":\"Exists\"}]}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.tolerations entry 0 (key \"agents\", operator Exists, "
                             "value \"\", effect \"\") is outside the delegation scope (allowed_tolerations "
                             "is empty: none)");
    /* No value at all needs no list. */
    d.value = "{\"tolerations\":[]}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    c.scopes = two;
    c.n_scopes = 2;
    d.value = "{\"node_selector\":\"pool=gpu,zone=eu-1\",\"tolerations\":[{\"key\":\"gpu\",\"operator\":"
              "\"Equal\",\"value\":\"a100\",\"effect\":\"NoSchedule\"},{\"key\":\"agents\",\"operator\":"
              "\"Exists\"}]}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    /* The string encoding of tolerations is authorized the same way. */
    d.value = "{\"tolerations\":\"[{\\\"key\\\":\\\"gpu\\\",\\\"value\\\":\\\"a100\\\",\\\"effect\\\":"
              "\\\"NoSchedule\\\"}]\"}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    /* One pair outside the list refuses the whole selector, naming that pair. */
    d.value = "{\"node_selector\":\"pool=gpu,zone=us-1\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.node_selector \"zone=us-1\" is outside the delegation "
                             "scope (allowed_node_selectors)");
    /* Exists is wider than the one listed value; so is a toleration without the listed effect. */
    d.value = "{\"tolerations\":[{\"key\":\"agents\"},{\"key\":\"gpu\",\"operator\":\"Exists\","
              "\"effect\":\"NoSchedule\"}]}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.tolerations entry 1 (key \"gpu\", operator Exists, "
                             "value \"\", effect \"NoSchedule\") is outside the delegation scope "
                             "(allowed_tolerations)");
    d.value = "{\"tolerations\":[{\"key\":\"gpu\",\"value\":\"a100\"}]}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "key \"gpu\", operator Equal, value \"a100\", effect \"\""));
    /* A toleration without a key tolerates every taint: never delegated. */
    d.value = "{\"tolerations\":[{\"operator\":\"Exists\"}]}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "entry 0 (key \"\""));
    /* A platform_admin chooses freely; another driver's entry is not placement. */
    c.scopes = NULL;
    c.n_scopes = 0;
    c.platform_admin = true;
    d.value = "{\"node_selector\":\"pool=cpu\",\"tolerations\":[{\"operator\":\"Exists\"}]}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    c.platform_admin = false;
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.key = "process";
    d.value = "{\"node_selector\":7}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
}

/* Claim allocation (issue 21): allocation, warm_pool and template of the "kubernetes" entry are
 * placement choices like namespace: refused for an ordinary caller, value by value within a
 * delegated caller's allowed_warm_pools and allowed_templates; malformed values INVALID_ARGUMENT. */
static void test_claim_placement(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct sb b;
    sb_init(&b);
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    d.key = "kubernetes";
    b.spec.driver_config = dp;
    b.spec.n_driver_config = 1;
    struct {
        const char *value, *want;
    } bad[] = {{"{\"allocation\":\"pool\"}", "].allocation must be"},
               {"{\"allocation\":1}", "].allocation must be"},
               {"{\"warm_pool\":\"Pool_A\"}", "].warm_pool must be"},
               {"{\"template\":[]}", "].template must be"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.value = (char *)bad[i].value;
        assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
        assert_non_null(strstr(why, bad[i].want));
    }
    struct sandbox_creator c = {.id = "p1"};
    d.value = "{\"allocation\":\"claim\",\"warm_pool\":\"pool-a\"}";
    assert_true(sandbox_rules_validate(&b.s, why, sizeof why));
    char *providers[] = {"gh"};
    b.spec.providers = providers; /* credentials cannot reach a claimed pod */
    b.spec.n_providers = 1;
    assert_false(sandbox_rules_validate(&b.s, why, sizeof why));
    assert_non_null(strstr(why, "sandbox.spec.providers cannot be combined"));
    b.spec.n_providers = 0;
    b.spec.providers = NULL;
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "driver_config kubernetes.allocation \"claim\": choosing the placement"));
    c.platform_admin = true;
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    c.platform_admin = false;

    struct authz_scope sc;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.allocation\",\"kubernetes.warm_pool\","
                                       "\"kubernetes.template\"],\"allowed_warm_pools\":[\"pool-a\"],"
                                       "\"allowed_templates\":[\"agent-tpl\"]}",
                                       &sc),
                     0);
    c.scopes = (const struct authz_scope *const[]){&sc};
    c.n_scopes = 1;
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.value = "{\"allocation\":\"claim\",\"warm_pool\":\"pool-b\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.warm_pool \"pool-b\" is outside the delegation scope "
                             "(allowed_warm_pools)");
    d.value = "{\"allocation\":\"claim\",\"template\":\"agent-tpl\"}";
    assert_true(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    d.value = "{\"allocation\":\"claim\",\"template\":\"other\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.template \"other\" is outside the delegation scope "
                             "(allowed_templates)");
    /* A scope without the lists allows no value, naming the empty list. */
    struct authz_scope keys_only;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.*\"]}",
                                       &keys_only),
                     0);
    c.scopes = (const struct authz_scope *const[]){&keys_only};
    d.value = "{\"allocation\":\"claim\",\"warm_pool\":\"pool-a\"}";
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_string_equal(why, "driver_config kubernetes.warm_pool \"pool-a\" is outside the delegation scope "
                             "(allowed_warm_pools is empty: none)");
    /* The key must be allowed as well as the value. */
    struct authz_scope no_key;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":"
                                       "[\"kubernetes.allocation\"],\"allowed_warm_pools\":[\"pool-a\"]}",
                                       &no_key),
                     0);
    c.scopes = (const struct authz_scope *const[]){&no_key};
    assert_false(sandbox_rules_delegation(&c, &b.spec, why, sizeof why));
    assert_non_null(strstr(why, "kubernetes.warm_pool\" is outside"));
}

static void test_default_lifetime(void **state)
{
    (void)state;
    Gantry__V1__Policy g = GANTRY__V1__POLICY__INIT, n = GANTRY__V1__POLICY__INIT;
    assert_int_equal(sandbox_rules_default_lifetime(0, NULL, NULL), SANDBOX_DEFAULT_LIFETIME_S);
    assert_int_equal(sandbox_rules_default_lifetime(3600, NULL, NULL), 3600);
    assert_int_equal(sandbox_rules_default_lifetime(2 * 86400, NULL, NULL), SANDBOX_DEFAULT_LIFETIME_S);
    g.max_lifetime_seconds = 1800;
    n.max_lifetime_seconds = 900;
    assert_int_equal(sandbox_rules_default_lifetime(3600, &g, NULL), 1800);
    assert_int_equal(sandbox_rules_default_lifetime(3600, &g, &n), 900);
    assert_int_equal(sandbox_rules_default_lifetime(60, &g, &n), 60);
}

static void test_share_active(void **state)
{
    (void)state;
    struct authz_binding b[3];
    memset(b, 0, sizeof b);
    /* No role at all (the binding was removed): the share gives nothing. */
    assert_false(sandbox_rules_share_active(b, 0, "team-a"));
    /* A role in another namespace does not count. */
    b[0].role = AZ_ROLE_USER;
    snprintf(b[0].ns, sizeof b[0].ns, "team-b");
    assert_false(sandbox_rules_share_active(b, 1, "team-a"));
    /* Any role in the sandbox's namespace does. */
    b[1].role = AZ_ROLE_USER;
    snprintf(b[1].ns, sizeof b[1].ns, "team-a");
    assert_true(sandbox_rules_share_active(b, 2, "team-a"));
    b[1].role = AZ_ROLE_NAMESPACE_ADMIN;
    assert_true(sandbox_rules_share_active(b, 2, "team-a"));
    /* A delegated binding counts where its patterns reach. */
    memset(&b[1], 0, sizeof b[1]);
    b[1].role = AZ_ROLE_USER;
    b[1].scope.set = true;
    snprintf(b[1].scope.patterns[0], sizeof b[1].scope.patterns[0], "team-*");
    b[1].scope.n_patterns = 1;
    assert_true(sandbox_rules_share_active(b, 2, "team-a"));
    assert_false(sandbox_rules_share_active(b, 2, "ops"));
    /* Global roles read everything anyway. */
    b[2].role = AZ_ROLE_AUDITOR;
    assert_true(sandbox_rules_share_active(b, 3, "ops"));
    assert_false(sandbox_rules_share_active(b, 3, ""));
}

/* Which specs ask for the host's network (platform_admin only, api/services/sandboxes_svc.c). */
static void test_host_network(void **state)
{
    (void)state;
    Gantry__V1__SandboxSpec s = GANTRY__V1__SANDBOX_SPEC__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT,
                                               k = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&k, &d};
    s.driver_config = dp;
    s.n_driver_config = 2;
    k.key = "kubernetes";
    k.value = "{\"network\": \"host\"}"; /* another driver's key: not the process driver's */
    d.key = "process";
    const struct {
        const char *value;
        bool host;
    } rows[] = {
        {"{\"network\": \"host\"}", true},
        {"{\"network\":\"host\", \"other\": 1}", true},
        {"{\"network\": \"egress\"}", false},
        {"{\"network\": \"none\"}", false},
        {"{}", false},
        {"{\"network\": [\"host\"]}", false}, /* not a string: the driver refuses it */
        {"not json", false},                  /* refused as INVALID_ARGUMENT by the policy check */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        d.value = (char *)rows[i].value;
        if (sandbox_rules_host_network(&s) != rows[i].host) {
            fail_msg("row %zu: %s", i, rows[i].value);
        }
    }
    s.n_driver_config = 0;
    assert_false(sandbox_rules_host_network(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_delegation),      cmocka_unit_test(test_default_lifetime),
        cmocka_unit_test(test_share_active),    cmocka_unit_test(test_service_account),
        cmocka_unit_test(test_host_network),    cmocka_unit_test(test_placement),
        cmocka_unit_test(test_claim_placement), cmocka_unit_test(test_node_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
