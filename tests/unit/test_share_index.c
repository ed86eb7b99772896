/* Unit tests for the sandbox model's share rows (api/services/share_index.h): lookups both ways,
 * upserts, drops by sandbox and by grantee, growth past the initial buckets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/services/share_index.h"

static size_t of(const struct share_index *x, const char *grantee)
{
    struct share_row *const *rows = NULL;
    size_t n = share_index_of_grantee(x, grantee, &rows);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i]->grantee_id, grantee);
    }
    return n;
}

static void test_add_find_drop(void **state)
{
    (void)state;
    struct share_index x;
    share_index_init(&x);
    assert_null(share_index_find(&x, "s1", "g1"));
    assert_int_equal(of(&x, "g1"), 0);
    share_index_add(&x, "s1", "g1", false, "owner", 10);
    share_index_add(&x, "s1", "g2", true, "owner", 11);
    share_index_add(&x, "s2", "g1", true, "admin", 12);
    const struct share_row *r = share_index_find(&x, "s1", "g2");
    assert_non_null(r);
    assert_true(r->exec);
    assert_string_equal(r->created_by, "owner");
    assert_int_equal(r->created_at_ms, 11);
    assert_int_equal(of(&x, "g1"), 2);
    assert_int_equal(x.n_rows, 3);
    /* An upsert replaces the pair's row (Share again with another access). */
    share_index_add(&x, "s1", "g1", true, "other", 20);
    assert_int_equal(x.n_rows, 3);
    assert_true(share_index_find(&x, "s1", "g1")->exec);
    assert_string_equal(share_index_find(&x, "s1", "g1")->created_by, "other");
    /* Drop a sandbox: its rows leave both ways. */
    share_index_drop_sandbox(&x, "s1");
    assert_null(share_index_find(&x, "s1", "g1"));
    assert_null(share_index_find(&x, "s1", "g2"));
    assert_int_equal(of(&x, "g1"), 1);
    assert_int_equal(of(&x, "g2"), 0);
    share_index_drop_sandbox(&x, "nope");
    /* Drop a grantee (a deleted principal). */
    share_index_add(&x, "s3", "g1", false, "o", 1);
    share_index_add(&x, "s3", "g3", false, "o", 1);
    share_index_drop_grantee(&x, "g1");
    assert_int_equal(of(&x, "g1"), 0);
    assert_null(share_index_find(&x, "s2", "g1"));
    assert_non_null(share_index_find(&x, "s3", "g3"));
    assert_int_equal(x.n_rows, 1);
    share_index_clear(&x);
    assert_int_equal(x.n_rows, 0);
    assert_null(share_index_find(&x, "s3", "g3"));
    share_index_close(&x);
}

static void test_many(void **state)
{
    (void)state;
    struct share_index x;
    share_index_init(&x);
    char s[32], g[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(s, sizeof s, "sb-%d", i);
        for (int k = 0; k < 3; k++) {
            snprintf(g, sizeof g, "p-%d", (i + k) % 97);
            share_index_add(&x, s, g, k == 1, "o", i);
        }
    }
    assert_int_equal(x.n_rows, 9000);
    size_t total = 0;
    for (int k = 0; k < 97; k++) {
        snprintf(g, sizeof g, "p-%d", k);
        total += of(&x, g);
    }
    assert_int_equal(total, 9000);
    for (int i = 0; i < 3000; i += 2) {
        snprintf(s, sizeof s, "sb-%d", i);
        share_index_drop_sandbox(&x, s);
    }
    assert_int_equal(x.n_rows, 4500);
    snprintf(g, sizeof g, "p-%d", (1 + 1) % 97);
    const struct share_row *r = share_index_find(&x, "sb-1", g);
    assert_non_null(r);
    assert_true(r->exec);
    assert_null(share_index_find(&x, "sb-2", g));
    share_index_close(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_drop),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
