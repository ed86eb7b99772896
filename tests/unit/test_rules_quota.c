/* Unit tests for the quota arithmetic (api/rules/quota.h), without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/quota.h"

static struct quota_state hard(int64_t max_sb, int64_t max_gpu, int64_t max_life, int64_t used_sb,
                               int64_t used_gpu)
{
    return (struct quota_state){.active = true,
                                .has_quota = true,
                                .max_sandboxes = max_sb,
                                .max_gpus = max_gpu,
                                .max_lifetime_s = max_life,
                                .hard = true,
                                .used_sandboxes = used_sb,
                                .used_gpus = used_gpu};
}

static void test_charge_limits(void **state)
{
    (void)state;
    char why[256];
    struct quota_state st = hard(2, 0, 0, 1, 0);
    assert_int_equal(quota_rules_charge(&st, "t", 1, 0, 60, why, sizeof why), QUOTA_OK);
    assert_string_equal(why, "");
    st.used_sandboxes = 2;
    assert_int_equal(quota_rules_charge(&st, "t", 1, 0, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota of namespace \"t\": at most 2 concurrent sandboxes (2 in use)");
    /* Exactly N of N+k fit, whatever k: the arithmetic the batches and the concurrency tests rely on. */
    st.used_sandboxes = 0;
    unsigned ok = 0;
    for (int i = 0; i < 5; i++) {
        if (quota_rules_charge(&st, "t", 1, 0, 60, why, sizeof why) == QUOTA_OK) {
            st.used_sandboxes++;
            ok++;
        }
    }
    assert_int_equal(ok, 2);

    struct quota_state g = hard(0, 4, 0, 0, 3);
    assert_int_equal(quota_rules_charge(&g, "t", 1, 1, 60, why, sizeof why), QUOTA_OK);
    assert_int_equal(quota_rules_charge(&g, "t", 1, 2, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota of namespace \"t\": at most 4 GPUs in use (3 in use, 2 asked)");

    struct quota_state l = hard(0, 0, 3600, 0, 0);
    assert_int_equal(quota_rules_charge(&l, "t", 1, 0, 3600, why, sizeof why), QUOTA_OK);
    assert_int_equal(quota_rules_charge(&l, "t", 1, 0, 3601, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota of namespace \"t\": lifetime at most 3600 s (3601 asked)");

    /* Sandboxes are named before GPUs, GPUs before the lifetime. */
    struct quota_state all = hard(1, 1, 1, 1, 1);
    assert_int_equal(quota_rules_charge(&all, "t", 1, 1, 2, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_non_null(strstr(why, "concurrent sandboxes"));
}

static void test_soft_release_and_phase(void **state)
{
    (void)state;
    char why[256];
    struct quota_state st = hard(1, 0, 0, 1, 0);
    st.hard = false;
    assert_int_equal(quota_rules_charge(&st, "t", 1, 0, 60, why, sizeof why), QUOTA_SOFT_EXCEEDED);
    assert_string_equal(why, "quota of namespace \"t\": at most 1 concurrent sandboxes (1 in use)");

    /* No quota set: limits (even stale ones) are ignored. */
    struct quota_state none = hard(1, 1, 1, 5, 5);
    none.has_quota = false;
    assert_int_equal(quota_rules_charge(&none, "t", 1, 1, 99, why, sizeof why), QUOTA_OK);

    /* A namespace being deleted takes no new sandbox, but releases always pass. */
    struct quota_state term = hard(0, 0, 0, 1, 1);
    term.active = false;
    assert_int_equal(quota_rules_charge(&term, "t", 1, 0, 60, why, sizeof why), QUOTA_TERMINATING);
    assert_string_equal(why, "namespace \"t\" is being deleted (TERMINATING)");
    assert_int_equal(quota_rules_charge(&term, "t", -1, -1, 0, why, sizeof why), QUOTA_OK);
    struct quota_state over = hard(1, 1, 1, 9, 9);
    assert_int_equal(quota_rules_charge(&over, "t", -1, -1, 0, why, sizeof why), QUOTA_OK);
}

static void test_validate(void **state)
{
    (void)state;
    char why[256];
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Quota q = GANTRY__V1__QUOTA__INIT;
    assert_false(quota_rules_validate(NULL, why, sizeof why));
    assert_false(quota_rules_validate(&q, why, sizeof why));
    assert_string_equal(why, "quota.meta.namespace is required");
    q.meta = &meta;
    meta.namespace_ = "team-a";
    assert_false(quota_rules_validate(&q, why, sizeof why));
    assert_string_equal(why, "quota.mode must be HARD or SOFT");
    q.mode = GANTRY__V1__QUOTA_MODE__QUOTA_MODE_SOFT;
    assert_true(quota_rules_validate(&q, why, sizeof why));
    q.max_lifetime_seconds = UINT64_MAX / 2;
    assert_false(quota_rules_validate(&q, why, sizeof why));
    assert_string_equal(why, "quota.max_lifetime_seconds is out of range");
}

static void test_ceiling(void **state)
{
    (void)state;
    char why[256];
    /* The ceiling is checked first and always refuses, even under a soft or a looser quota. */
    struct quota_state st = hard(10, 8, 0, 4, 3);
    st.hard = false;
    st.ceiling =
        (struct quota_ceiling){.set = true, .max_sandboxes = 5, .max_gpus = 4, .max_lifetime_s = 3600};
    assert_int_equal(quota_rules_charge(&st, "t", 1, 1, 3600, why, sizeof why), QUOTA_OK);
    st.used_sandboxes = 5;
    assert_int_equal(quota_rules_charge(&st, "t", 1, 0, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota ceiling of namespace \"t\": at most 5 concurrent sandboxes (5 in use)");
    st.used_sandboxes = 0;
    assert_int_equal(quota_rules_charge(&st, "t", 1, 2, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota ceiling of namespace \"t\": at most 4 GPUs in use (3 in use, 2 asked)");
    assert_int_equal(quota_rules_charge(&st, "t", 1, 0, 3601, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_string_equal(why, "quota ceiling of namespace \"t\": lifetime at most 3600 s (3601 asked)");
    /* Without a quota, the ceiling alone applies; releases always pass. */
    st.has_quota = false;
    st.used_gpus = 4;
    assert_int_equal(quota_rules_charge(&st, "t", 1, 1, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_int_equal(quota_rules_charge(&st, "t", -1, -4, 0, why, sizeof why), QUOTA_OK);
    /* Within the ceiling, the quota still answers in its mode. */
    struct quota_state q = hard(1, 0, 0, 1, 0);
    q.hard = false;
    q.ceiling = (struct quota_ceiling){.set = true, .max_sandboxes = 3};
    assert_int_equal(quota_rules_charge(&q, "t", 1, 0, 60, why, sizeof why), QUOTA_SOFT_EXCEEDED);
    q.used_sandboxes = 3;
    assert_int_equal(quota_rules_charge(&q, "t", 1, 0, 60, why, sizeof why), QUOTA_HARD_EXCEEDED);
    assert_non_null(strstr(why, "quota ceiling"));

    /* The lifetime a sandbox may ask for: the tighter of quota and ceiling. */
    struct quota_state l = hard(0, 0, 600, 0, 0);
    assert_int_equal(quota_rules_lifetime_max(&l), 600);
    l.ceiling = (struct quota_ceiling){.set = true, .max_lifetime_s = 300};
    assert_int_equal(quota_rules_lifetime_max(&l), 300);
    l.has_quota = false;
    assert_int_equal(quota_rules_lifetime_max(&l), 300);
    l.ceiling.set = false;
    assert_int_equal(quota_rules_lifetime_max(&l), 0);
}

static void test_within_ceiling(void **state)
{
    (void)state;
    char why[256];
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Quota q = GANTRY__V1__QUOTA__INIT;
    meta.namespace_ = "team-a";
    q.meta = &meta;
    q.mode = GANTRY__V1__QUOTA_MODE__QUOTA_MODE_HARD;
    struct quota_ceiling none = {.set = false};
    assert_true(quota_rules_within_ceiling(&q, "team-a", &none, why, sizeof why));
    struct quota_ceiling c = {.set = true, .max_sandboxes = 10, .max_gpus = 4, .max_lifetime_s = 0};
    /* 0 is unlimited: above any limit the ceiling sets. */
    assert_false(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));
    assert_string_equal(why, "quota.max_concurrent_sandboxes 0 (unlimited) is above the ceiling of 10 the "
                             "platform_admin set for namespace \"team-a\"");
    q.max_concurrent_sandboxes = 10;
    q.max_gpus = 5;
    assert_false(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));
    assert_string_equal(
        why, "quota.max_gpus 5 is above the ceiling of 4 the platform_admin set for namespace \"team-a\"");
    q.max_gpus = 4;
    /* A dimension the ceiling leaves open is the quota's to choose. */
    q.max_lifetime_seconds = 0;
    assert_true(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));
    q.max_lifetime_seconds = 999999;
    assert_true(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));
    c.max_lifetime_s = 3600;
    assert_false(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));
    assert_non_null(strstr(why, "quota.max_lifetime_seconds 999999"));
    q.max_lifetime_seconds = 60;
    q.max_concurrent_sandboxes = 1;
    assert_true(quota_rules_within_ceiling(&q, "team-a", &c, why, sizeof why));

    Gantry__V1__QuotaCeiling cl = GANTRY__V1__QUOTA_CEILING__INIT;
    assert_false(quota_rules_validate_ceiling(NULL, why, sizeof why));
    assert_false(quota_rules_validate_ceiling(&cl, why, sizeof why));
    assert_string_equal(why, "ceiling.meta.namespace is required");
    cl.meta = &meta;
    assert_true(quota_rules_validate_ceiling(&cl, why, sizeof why));
    cl.max_lifetime_seconds = UINT64_MAX;
    assert_false(quota_rules_validate_ceiling(&cl, why, sizeof why));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_charge_limits),  cmocka_unit_test(test_soft_release_and_phase),
        cmocka_unit_test(test_validate),       cmocka_unit_test(test_ceiling),
        cmocka_unit_test(test_within_ceiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
