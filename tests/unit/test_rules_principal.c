/* Unit tests for which principals a caller manages (api/rules/principal.h), without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/principal.h"
#include "lib/err.h"

static struct authz_binding bind(enum authz_role role, const char *ns)
{
    struct authz_binding b;
    memset(&b, 0, sizeof b);
    b.role = role;
    snprintf(b.ns, sizeof b.ns, "%s", ns);
    return b;
}

static void test_namespace_admin_manages_its_users(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct authz_binding na[] = {bind(AZ_ROLE_NAMESPACE_ADMIN, "team-a"),
                                 bind(AZ_ROLE_NAMESPACE_ADMIN, "team-b"), bind(AZ_ROLE_USER, "ops")};
    /* Users bound only in namespaces it administers: managed, one binding or several. */
    struct authz_binding u1[] = {bind(AZ_ROLE_USER, "team-a")};
    assert_true(principal_rules_manages(na, 3, u1, 1, why, sizeof why));
    struct authz_binding u2[] = {bind(AZ_ROLE_USER, "team-a"), bind(AZ_ROLE_USER, "team-b")};
    assert_true(principal_rules_manages(na, 3, u2, 2, why, sizeof why));
    /* A user also bound elsewhere, or only elsewhere (the admin's own user role does not count). */
    struct authz_binding u3[] = {bind(AZ_ROLE_USER, "team-a"), bind(AZ_ROLE_USER, "team-c")};
    assert_false(principal_rules_manages(na, 3, u3, 2, why, sizeof why));
    assert_non_null(strstr(why, "\"team-c\""));
    struct authz_binding u4[] = {bind(AZ_ROLE_USER, "ops")};
    assert_false(principal_rules_manages(na, 3, u4, 1, why, sizeof why));
    /* Anything more than the user role: a fellow namespace_admin, global roles. */
    struct authz_binding co[] = {bind(AZ_ROLE_NAMESPACE_ADMIN, "team-a")};
    assert_false(principal_rules_manages(na, 3, co, 1, why, sizeof why));
    assert_non_null(strstr(why, "namespace_admin"));
    struct authz_binding pa[] = {bind(AZ_ROLE_USER, "team-a"), bind(AZ_ROLE_PLATFORM_ADMIN, "")};
    assert_false(principal_rules_manages(na, 3, pa, 2, why, sizeof why));
    assert_non_null(strstr(why, "platform_admin role"));
    struct authz_binding aud[] = {bind(AZ_ROLE_AUDITOR, "")};
    assert_false(principal_rules_manages(na, 3, aud, 1, why, sizeof why));
    /* A delegation scope (a platform controller's binding) is a platform_admin's to manage. */
    struct authz_binding ctrl[] = {bind(AZ_ROLE_USER, "")};
    ctrl[0].scope.set = true;
    snprintf(ctrl[0].scope.patterns[0], sizeof ctrl[0].scope.patterns[0], "team-*");
    ctrl[0].scope.n_patterns = 1;
    assert_false(principal_rules_manages(na, 3, ctrl, 1, why, sizeof why));
    assert_non_null(strstr(why, "delegation"));
    /* No binding at all: nobody but a platform_admin. */
    assert_false(principal_rules_manages(na, 3, NULL, 0, why, sizeof why));
    /* A plain user manages nobody; a platform_admin everybody. */
    struct authz_binding user[] = {bind(AZ_ROLE_USER, "team-a")};
    assert_false(principal_rules_manages(user, 1, u1, 1, why, sizeof why));
    struct authz_binding root[] = {bind(AZ_ROLE_PLATFORM_ADMIN, "")};
    assert_true(principal_rules_manages(root, 1, pa, 2, why, sizeof why));
    assert_true(principal_rules_manages(root, 1, NULL, 0, why, sizeof why));
    /* A delegated namespace_admin manages users in the namespaces its patterns cover. */
    struct authz_binding dna[] = {bind(AZ_ROLE_NAMESPACE_ADMIN, "")};
    dna[0].scope.set = true;
    snprintf(dna[0].scope.patterns[0], sizeof dna[0].scope.patterns[0], "team-*");
    dna[0].scope.n_patterns = 1;
    assert_true(principal_rules_manages(dna, 1, u2, 2, why, sizeof why));
    assert_false(principal_rules_manages(dna, 1, u4, 1, why, sizeof why));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_namespace_admin_manages_its_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
