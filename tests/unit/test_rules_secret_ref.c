/* Unit tests for Secret-backed credential sources (api/rules/secret_ref.h) and the delegation
 * scope's Secret lists (api/authz/authz.h), without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/secret_ref.h"
#include "lib/err.h"
#include "lib/mem.h"

static void test_parse(void **state)
{
    (void)state;
    struct secret_ref r;
    assert_int_equal(secret_ref_parse("platform-creds/gh-token/token", &r), 0);
    assert_string_equal(r.ns, "platform-creds");
    assert_string_equal(r.name, "gh-token");
    assert_string_equal(r.key, "token");
    assert_int_equal(secret_ref_parse("a/b.c/.dockerconfig_json-1", &r), 0);
    assert_string_equal(r.name, "b.c");
    assert_string_equal(r.key, ".dockerconfig_json-1");
    char long_ns[80];
    memset(long_ns, 'a', 64);
    strcpy(long_ns + 64, "/n/k");
    const char *bad[] = {"",         "a/b",    "a/b/c/d", "/b/c",    "a//c",   "a/b/",
                         "A/b/c",    "a/B/c",  "a/b/k y", "a/b/.",   "a/b/..", "a_b/c/d",
                         "a/b..c/k", "a/-b/k", long_ns,   "a/b/k\n", "a/b/ké", "-a/b/c"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(secret_ref_parse(bad[i], &r), GERR_INVAL);
        assert_string_equal(r.ns, ""); /* zeroed on error */
    }
    assert_string_equal(secret_ref_key("secret_ref.token"), "token");
    assert_null(secret_ref_key("env.token"));
    assert_null(secret_ref_key("secret_re.token"));
}

static void test_allowed(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct secret_ref r;
    struct authz_scope sc, none;
    assert_int_equal(secret_ref_parse("platform-creds/gh-token/token", &r), 0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"],\"allowed_secret_namespaces\":"
                                       "[\"platform-*\"],\"allowed_secret_names\":[\"gh-*\",\"exact.name\"]}",
                                       &sc),
                     0);
    assert_int_equal(authz_scope_parse("{\"namespace_patterns\":[\"team-*\"]}", &none), 0);
    const struct authz_scope *one[] = {&sc}, *empty[] = {&none}, *both[] = {&none, &sc};
    assert_true(secret_ref_allowed(&r, false, one, 1, why, sizeof why));
    assert_string_equal(why, "");
    assert_true(secret_ref_allowed(&r, false, both, 2, why, sizeof why));
    assert_true(secret_ref_allowed(&r, true, NULL, 0, why, sizeof why)); /* platform_admin */
    assert_false(secret_ref_allowed(&r, false, NULL, 0, why, sizeof why));
    assert_non_null(strstr(why, "Kubernetes Secret platform-creds/gh-token: referencing a Secret needs "
                                "platform_admin or a delegation scope"));
    assert_false(secret_ref_allowed(&r, false, empty, 1, why, sizeof why));
    assert_non_null(strstr(why, "outside the delegation scope"));
    /* Both lists must match. */
    assert_int_equal(secret_ref_parse("platform-creds/db-pass/p", &r), 0);
    assert_false(secret_ref_allowed(&r, false, one, 1, why, sizeof why));
    assert_int_equal(secret_ref_parse("other/gh-token/token", &r), 0);
    assert_false(secret_ref_allowed(&r, false, one, 1, why, sizeof why));
    assert_int_equal(secret_ref_parse("platform-a/exact.name/k", &r), 0);
    assert_true(secret_ref_allowed(&r, false, one, 1, why, sizeof why));

    /* The lists round-trip through the stored JSON; malformed ones are refused. */
    char *json = authz_scope_json(&sc);
    assert_non_null(strstr(json, "\"allowed_secret_namespaces\":[\"platform-*\"]"));
    assert_non_null(strstr(json, "\"allowed_secret_names\":[\"gh-*\",\"exact.name\"]"));
    struct authz_scope back;
    assert_int_equal(authz_scope_parse(json, &back), 0);
    assert_true(authz_scope_allows_secret(&back, "platform-x", "gh-1"));
    mem_free(json);
    json = authz_scope_json(&none);
    assert_null(strstr(json, "allowed_secret"));
    mem_free(json);
    const char *bad[] = {"{\"namespace_patterns\":[\"a\"],\"allowed_secret_namespaces\":[\"Platform\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_secret_namespaces\":[\"a.b\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_secret_names\":[\"a/b\"]}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_secret_names\":\"gh-*\"}",
                         "{\"namespace_patterns\":[\"a\"],\"allowed_secret_names\":[\"\"]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(authz_scope_parse(bad[i], &sc), GERR_INVAL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
