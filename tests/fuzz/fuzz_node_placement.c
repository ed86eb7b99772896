/* libFuzzer harness for the node placement checks (issue 21): a caller's "kubernetes" driver_config
 * value as Sandboxes.Create reads it (api/rules/sandbox.h: the node_selector and tolerations shapes
 * and the decision over a delegation scope's allowed_node_selectors and allowed_tolerations), and a
 * delegation scope's node placement entries as a platform admin sends them (api/authz/authz.h).
 *
 * Input: bytes up to the first NUL are the driver_config value (a JSON object, as sent); the bytes
 * after it (up to the next NUL) are one entry tried as a toleration pattern and as a node selector
 * pair. Each is copied into a heap block of exactly its size plus the NUL, so ASan sees an overread.
 *
 * Promises checked (abort() on a broken one): validate and the delegation decision answer with a
 * NUL-terminated, non-empty reason on a refusal; a platform_admin is never refused a validated
 * value; a caller without a scope is refused whenever the value sets node_selector or tolerations
 * (or another placement key); a scope refuses a validated value whose selector or tolerations are
 * outside it, whatever its lists, when the lists are empty and the value has a pair or toleration.
 * An accepted toleration pattern "key[=value][:effect]" allows the toleration made of its own parts
 * (operator Equal with the value, else Exists), survives authz_scope_json / authz_scope_parse, and a
 * toleration without a key is never allowed; an accepted selector pair allows exactly itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/authz/authz.h"
#include "api/rules/sandbox.h"
#include "lib/err.h"
#include "lib/mem.h"

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

static void check_value(const char *value)
{
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__SandboxSpec spec = GANTRY__V1__SANDBOX_SPEC__INIT;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry d = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *dp[] = {&d};
    meta.name = "sb";
    meta.namespace_ = "team-a";
    spec.image = "busybox";
    d.key = "kubernetes";
    d.value = (char *)value;
    spec.driver_config = dp;
    spec.n_driver_config = 1;
    sb.meta = &meta;
    sb.spec = &spec;
    char why[GERR_MSG_SIZE];
    bool valid = sandbox_rules_validate(&sb, why, sizeof why);
    check(valid || (why[0] != '\0' && strnlen(why, sizeof why) < sizeof why));
    if (!valid) {
        return;
    }
    json_t *o = json_loads(value, 0, NULL);
    json_t *nsel = json_object_get(o, "node_selector"), *tols = json_object_get(o, "tolerations");
    bool placed = json_object_get(o, "namespace") != NULL || json_object_get(o, "runtime_class") != NULL ||
                  json_object_get(o, "allocation") != NULL || json_object_get(o, "warm_pool") != NULL ||
                  json_object_get(o, "template") != NULL || nsel != NULL || tols != NULL;
    json_t *arr = json_is_string(tols) ? json_loads(json_string_value(tols), 0, NULL) : json_incref(tols);
    bool has_tol = json_array_size(arr) > 0;
    json_decref(arr);
    json_decref(o);

    struct sandbox_creator admin = {.id = "p1", .platform_admin = true};
    check(sandbox_rules_delegation(&admin, &spec, why, sizeof why));
    struct sandbox_creator user = {.id = "p1"};
    bool ok = sandbox_rules_delegation(&user, &spec, why, sizeof why);
    check(ok == !placed);
    check(ok || why[0] != '\0');

    struct authz_scope empty, listed;
    check(authz_scope_parse(
              "{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":[\"kubernetes.*\"],"
              "\"allowed_kubernetes_namespaces\":[\"*\"],\"allowed_runtime_classes\":[\"gvisor\"]}",
              &empty) == 0);
    check(authz_scope_parse(
              "{\"namespace_patterns\":[\"team-*\"],\"allowed_driver_config_keys\":[\"kubernetes.*\"],"
              "\"allowed_node_selectors\":[\"pool=gpu\",\"example.com/zone=eu-1\"],"
              "\"allowed_tolerations\":[\"gpu=a100:NoSchedule\",\"agents\",\"spot:NoExecute\"]}",
              &listed) == 0);
    const struct authz_scope *one[] = {&empty}, *two[] = {&listed};
    struct sandbox_creator ctrl = {.id = "p1", .scopes = one, .n_scopes = 1};
    ok = sandbox_rules_delegation(&ctrl, &spec, why, sizeof why);
    check(ok || why[0] != '\0');
    if (nsel != NULL || has_tol) {
        check(!ok);
    }
    ctrl.scopes = two;
    ok = sandbox_rules_delegation(&ctrl, &spec, why, sizeof why);
    check(ok || why[0] != '\0');
}

static void check_entry(const char *e)
{
    struct authz_scope sc;
    memset(&sc, 0, sizeof sc);
    int rv = authz_scope_add_toleration(&sc, e);
    check(rv == 0 || rv == GERR_INVAL);
    if (rv == 0) {
        char buf[AUTHZ_SCOPE_PLACE_BYTES];
        snprintf(buf, sizeof buf, "%s", e);
        char *colon = strrchr(buf, ':'), *eq;
        const char *effect = NULL, *value = NULL;
        if (colon != NULL) {
            *colon = '\0';
            effect = colon + 1;
        }
        if ((eq = strchr(buf, '=')) != NULL) {
            *eq = '\0';
            value = eq + 1;
        }
        check(buf[0] != '\0');
        struct authz_toleration t = {buf, value != NULL ? "Equal" : "Exists", value, effect};
        check(authz_scope_allows_toleration(&sc, &t));
        struct authz_toleration none = {"", "Exists", NULL, effect};
        check(!authz_scope_allows_toleration(&sc, &none));
        sc.set = true;
        char *json = authz_scope_json(&sc);
        struct authz_scope back;
        check(authz_scope_parse(json, &back) == 0 && back.n_tolerations == 1);
        check(authz_scope_allows_toleration(&back, &t));
        mem_free(json);
    }
    memset(&sc, 0, sizeof sc);
    rv = authz_scope_add_node_selector(&sc, e);
    check(rv == 0 || rv == GERR_INVAL);
    if (rv == 0) {
        char buf[AUTHZ_SCOPE_PLACE_BYTES];
        snprintf(buf, sizeof buf, "%s", e);
        char *eq = strchr(buf, '=');
        check(eq != NULL && eq != buf);
        *eq = '\0';
        check(authz_scope_allows_node_selector(&sc, buf, eq + 1));
        check(!authz_scope_allows_node_selector(&sc, buf, "x-not-listed-x"));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n1 = strnlen((const char *)data, size);
    char *value = mem_alloc(n1 + 1);
    memcpy(value, data, n1);
    value[n1] = '\0';
    check_value(value);
    mem_free(value);
    if (n1 < size) {
        const uint8_t *rest = data + n1 + 1;
        size_t n2 = strnlen((const char *)rest, size - n1 - 1);
        char *entry = mem_alloc(n2 + 1);
        memcpy(entry, rest, n2);
        entry[n2] = '\0';
        check_entry(entry);
        mem_free(entry);
    }
    return 0;
}
