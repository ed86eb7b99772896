/* Unit tests for the paging of List and Query calls (api/rules/page.h), without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/page.h"
#include "lib/err.h"

static bool read_page(uint32_t size, const char *token, enum page_key key, struct page_req *out, char *why)
{
    Gantry__V1__PageRequest p = GANTRY__V1__PAGE_REQUEST__INIT;
    p.page_size = size;
    p.page_token = (char *)token;
    return page_rules_read(&p, key, out, why, GERR_MSG_SIZE);
}

static void test_sizes(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct page_req r;
    assert_true(page_rules_read(NULL, PAGE_KEY_NAME, &r, why, sizeof why));
    assert_int_equal(r.limit, PAGE_RULES_DEFAULT);
    assert_string_equal(r.after, "");
    assert_true(read_page(0, "", PAGE_KEY_SEQ, &r, why));
    assert_int_equal(r.limit, PAGE_RULES_DEFAULT);
    assert_int_equal(r.after_seq, 0);
    assert_true(read_page(1, "", PAGE_KEY_SEQ, &r, why));
    assert_int_equal(r.limit, 1);
    assert_true(read_page(PAGE_RULES_MAX, "", PAGE_KEY_SEQ, &r, why));
    assert_int_equal(r.limit, PAGE_RULES_MAX);
    /* Asking for more than the maximum is clamped, not refused: the client still pages. */
    assert_true(read_page(100000, "", PAGE_KEY_SEQ, &r, why));
    assert_int_equal(r.limit, PAGE_RULES_MAX);
    assert_true(read_page(UINT32_MAX, "", PAGE_KEY_UUID, &r, why));
    assert_int_equal(r.limit, PAGE_RULES_MAX);
}

static void test_tokens(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    struct page_req r;
    static const struct {
        enum page_key key;
        const char *token;
        bool ok;
    } cases[] = {
        {PAGE_KEY_NAME, "team-a", true},
        {PAGE_KEY_NAME, "Team-A", false},
        {PAGE_KEY_NAME, "-a", false},
        {PAGE_KEY_NAME, "a/b", false},
        {PAGE_KEY_NS_NAME, "default/agent-1", true},
        {PAGE_KEY_NS_NAME, "default/", false},
        {PAGE_KEY_NS_NAME, "/agent-1", false},
        {PAGE_KEY_NS_NAME, "default", false},
        {PAGE_KEY_NS_NAME, "a/b/c", false},
        {PAGE_KEY_UUID, "0f8fad5b-d9cb-469f-a165-70867728950e", true},
        {PAGE_KEY_UUID, "0F8FAD5B-D9CB-469F-A165-70867728950E", false},
        {PAGE_KEY_UUID, "0f8fad5bd9cb469fa16570867728950e", false},
        {PAGE_KEY_UUID, "0f8fad5b-d9cb-469f-a165-70867728950", false},
        {PAGE_KEY_UUID, "0f8fad5b-d9cb-469f-a165-70867728950g", false},
        {PAGE_KEY_HEX32, "9f2c41d07a3e4b5c8d6e1f20a3b4c5d6", true},
        {PAGE_KEY_HEX32, "9f2c41d07a3e4b5c8d6e1f20a3b4c5d", false},
        {PAGE_KEY_HEX16, "9f2c41d07a3e4b5c", true},
        {PAGE_KEY_HEX16, "9f2c41d07a3e4b5z", false},
        {PAGE_KEY_SEQ, "1", true},
        {PAGE_KEY_SEQ, "9223372036854775807", true},
        {PAGE_KEY_SEQ, "9223372036854775808", false}, /* 2^63: would wrap negative */
        {PAGE_KEY_SEQ, "99999999999999999999", false},
        {PAGE_KEY_SEQ, "0", false},
        {PAGE_KEY_SEQ, "007", false},
        {PAGE_KEY_SEQ, "-5", false},
        {PAGE_KEY_SEQ, "+5", false},
        {PAGE_KEY_SEQ, " 5", false},
        {PAGE_KEY_SEQ, "5x", false},
        {PAGE_KEY_SEQ, "garbage", false},
        {PAGE_KEY_NONE, "1", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        bool ok = read_page(10, cases[i].token, cases[i].key, &r, why);
        if (ok != cases[i].ok) {
            fail_msg("token \"%s\" for key %d: %s", cases[i].token, (int)cases[i].key, ok ? "accepted" : why);
        }
        if (ok) {
            assert_string_equal(r.after, cases[i].token);
        } else {
            assert_non_null(strstr(why, "page.page_token"));
            assert_null(strstr(why, cases[i].token)); /* never quoted */
        }
    }
    assert_true(read_page(10, "9223372036854775807", PAGE_KEY_SEQ, &r, why));
    assert_int_equal(r.after_seq, INT64_MAX);
    /* Whatever the list, a token longer than any the server issues is refused; 100 KB of a
     * well-formed alphabet too. */
    static char big[100 * 1024 + 1];
    memset(big, 'a', sizeof big - 1);
    for (enum page_key k = PAGE_KEY_NAME; k <= PAGE_KEY_NONE; k++) {
        assert_false(read_page(10, big, k, &r, why));
    }
    memset(big, '1', sizeof big - 1);
    assert_false(read_page(10, big, PAGE_KEY_SEQ, &r, why));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
