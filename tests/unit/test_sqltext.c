/* Unit tests for SQL text with literals (store/sqltext.h): what a writer batch sends as one request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "store/sqltext.h"

static const char *text(struct buf *b)
{
    buf_put_u8(b, 0);
    b->len--;
    return (const char *)b->data;
}

static void test_literals(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    struct proto_value v[] = {proto_int(-42), proto_text("it's ''quoted''"), proto_blob("\x00\xff\x10", 3),
                              proto_null(), proto_float(0.5)};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(store__sql_literal(&b, &v[i]), 0);
        buf_append(&b, " ", 1);
    }
    assert_string_equal(text(&b), "-42 'it''s ''''quoted''''' X'00ff10' NULL 0.5 ");
    /* Text with a NUL byte cannot be a literal. */
    struct proto_value nul = {.type = PROTO_TEXT, .u.b = {.s = "a\0b", .n = 3}};
    size_t len = b.len;
    assert_int_equal(store__sql_literal(&b, &nul), GERR_INVAL);
    assert_int_equal(b.len, len);
    buf_close(&b);
}

static void test_placeholders(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    struct proto_value p[] = {proto_text("ns"), proto_int(7), proto_text("?not a placeholder")};
    /* Bare ?, numbered ?N (reused), a bare ? after ?N takes the next number, quoted text untouched. */
    assert_int_equal(store__sql_append(
                         &b, "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = ?2", p, 3),
                     0);
    assert_int_equal(store__sql_append(&b, "UPDATE t SET c = '?', d = \"x?\" WHERE a = ?1 AND e = ?", p, 3),
                     0);
    assert_string_equal(text(&b), "INSERT INTO t (a, b) VALUES ('ns', 7) ON CONFLICT (a) DO UPDATE SET b = 7;"
                                  "UPDATE t SET c = '?', d = \"x?\" WHERE a = 'ns' AND e = 7;");
    /* A placeholder without a value, or an unterminated quote: refused, nothing appended. */
    size_t len = b.len;
    assert_int_equal(store__sql_append(&b, "SELECT ?4", p, 3), GERR_INVAL);
    assert_int_equal(store__sql_append(&b, "SELECT 'open", p, 3), GERR_INVAL);
    assert_int_equal(b.len, len);
    buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_placeholders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
