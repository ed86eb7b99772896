/* Unit tests for WarmPool decisions (api/rules/warmpool.h): the shape of a pool and what a caller
 * may choose for it, without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/warmpool.h"
#include "lib/err.h"

struct pool {
    Gantry__V1__WarmPool p;
    Gantry__V1__ObjectMeta meta;
};

static Gantry__V1__WarmPool *pool(struct pool *w, const char *name, const char *kns, const char *tmpl,
                                  uint32_t n)
{
    gantry__v1__warm_pool__init(&w->p);
    gantry__v1__object_meta__init(&w->meta);
    w->meta.namespace_ = "team-a";
    w->meta.name = (char *)name;
    w->p.meta = &w->meta;
    w->p.kubernetes_namespace = (char *)kns;
    w->p.template_ = (char *)tmpl;
    w->p.replicas = n;
    return &w->p;
}

static void test_validate(void **state)
{
    (void)state;
    struct pool w;
    char why[GERR_MSG_SIZE];
    assert_true(warmpool_rules_validate(pool(&w, "warm", "", "agent", 0), why, sizeof why));
    assert_true(warmpool_rules_validate(pool(&w, "warm", "agents-gpu", "agent.v1", WARMPOOL_MAX_REPLICAS),
                                        why, sizeof why));
    char long_tmpl[300];
    memset(long_tmpl, 'a', 254);
    long_tmpl[254] = '\0';
    const struct {
        const char *name, *kns, *tmpl;
        uint32_t n;
        const char *want;
    } bad[] = {
        {"warm", "", "agent", WARMPOOL_MAX_REPLICAS + 1, "replicas 101 is out of range"},
        {"warm", "", "agent", UINT32_MAX, "out of range"},
        {"Warm", "", "agent", 1, "warm_pool.meta.name"},
        {"", "", "agent", 1, "warm_pool.meta.name"},
        {"warm", "Agents", "agent", 1, "kubernetes_namespace"},
        {"warm", "a.b", "agent", 1, "kubernetes_namespace"},
        {"warm", "", "", 1, "warm_pool.template"},
        {"warm", "", "Agent", 1, "warm_pool.template"},
        {"warm", "", "a..b", 1, "warm_pool.template"},
        {"warm", "", long_tmpl, 1, "warm_pool.template"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(warmpool_rules_validate(pool(&w, bad[i].name, bad[i].kns, bad[i].tmpl, bad[i].n), why,
                                             sizeof why));
        if (strstr(why, bad[i].want) == NULL) {
            fail_msg("case %zu: %s (wanted %s)", i, why, bad[i].want);
        }
    }
    pool(&w, "warm", "", "agent", 1);
    w.p.meta = NULL;
    assert_false(warmpool_rules_validate(&w.p, why, sizeof why));
    assert_false(warmpool_rules_validate(NULL, why, sizeof why));
}

static void test_placement(void **state)
{
    (void)state;
    struct pool w;
    char why[GERR_MSG_SIZE];
    /* No scope: the gateway's placement for everyone, a chosen namespace for platform_admin only. */
    assert_true(warmpool_rules_placement(pool(&w, "warm", "", "agent", 1), false, NULL, 0, why, sizeof why));
    assert_false(warmpool_rules_placement(pool(&w, "warm", "agents-gpu", "agent", 1), false, NULL, 0, why,
                                          sizeof why));
    assert_non_null(strstr(why, "choosing the Kubernetes namespace"));
    assert_true(warmpool_rules_placement(&w.p, true, NULL, 0, why, sizeof why));

    struct authz_scope sc, other;
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],"
                                       "\"allowed_kubernetes_namespaces\":[\"agents-*\"],"
                                       "\"allowed_warm_pools\":[\"warm\"],\"allowed_templates\":[\"agent\"]}",
                                       &sc),
                     0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &other), 0);
    const struct authz_scope *one[] = {&sc}, *none[] = {&other}, *two[] = {&other, &sc};
    assert_true(
        warmpool_rules_placement(pool(&w, "warm", "agents-gpu", "agent", 1), false, one, 1, why, sizeof why));
    assert_true(warmpool_rules_placement(pool(&w, "warm", "", "agent", 1), false, one, 1, why, sizeof why));
    assert_true(
        warmpool_rules_placement(pool(&w, "warm", "agents-gpu", "agent", 1), false, two, 2, why, sizeof why));
    assert_string_equal(why, "");
    const struct {
        const char *name, *kns, *tmpl, *want;
    } bad[] = {
        {"warm", "kube-system", "agent", "allowed_kubernetes_namespaces"},
        {"other", "agents-gpu", "agent", "allowed_warm_pools"},
        {"warm", "agents-gpu", "other", "allowed_templates"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(warmpool_rules_placement(pool(&w, bad[i].name, bad[i].kns, bad[i].tmpl, 1), true, one, 1,
                                              why, sizeof why));
        assert_non_null(strstr(why, bad[i].want));
    }
    /* A scope with empty lists allows no pool at all, even the gateway's placement. */
    assert_false(warmpool_rules_placement(pool(&w, "warm", "", "agent", 1), false, none, 1, why, sizeof why));
    assert_non_null(strstr(why, "allowed_templates"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
