/* server/console_req.h: what a browser sends the operator console, decoded or refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/console_req.h"

#define SID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static int filter(const char *q, struct console_filter *f, char *err)
{
    err[0] = '\0';
    return console_req_filter(q, f, err);
}

static void filters_decode(void **state)
{
    (void)state;
    struct console_filter f;
    char err[GERR_MSG_SIZE];
    assert_int_equal(filter("", &f, err), 0);
    assert_string_equal(f.ns, "");
    assert_int_equal(
        filter("audit_ns=team-a&audit_op=%2Fgantry.v1.Sandboxes%2FCreate&audit_status=Failure&x=1"
               "&audit_actor=4b1f-9c",
               &f, err),
        0);
    assert_string_equal(f.ns, "team-a");
    assert_string_equal(f.op, "/gantry.v1.Sandboxes/Create");
    assert_string_equal(f.status, "Failure");
    assert_string_equal(f.actor, "4b1f-9c");
    assert_int_equal(filter("audit_ns=&audit_status", &f, err), 0); /* empty values: no filter */
    assert_string_equal(f.status, "");
}

static void bad_filters_are_refused_with_a_reason(void **state)
{
    (void)state;
    static const struct {
        const char *query, *reason;
    } cases[] = {
        {"audit_ns=a&audit_ns=b", "audit_ns is given twice"},
        {"audit_ns=Team", "audit_ns:"},
        {"audit_ns=%zz", "audit_ns: a malformed"},
        {"audit_ns=%4", "audit_ns: a malformed"},
        {"audit_ns=%0a", "audit_ns: a malformed"},
        {"audit_ns=%C3%A9", "audit_ns: a malformed"},
        {"audit_op=/gantry.v1.Sandboxes", "audit_op: want"},
        {"audit_op=/other.v1.X/Y", "audit_op: want"},
        {"audit_op=/gantry.v1.San%20dboxes/Create", "audit_op: want"},
        {"audit_status=failure", "audit_status: want"},
        {"audit_actor=a%20b", "audit_actor: want"},
        {"audit_actor=0123456789012345678901234567890123456789012345678901234567890123456789",
         "audit_actor: a malformed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct console_filter f;
        char err[GERR_MSG_SIZE];
        assert_int_equal(filter(cases[i].query, &f, err), GERR_INVAL);
        if (strstr(err, cases[i].reason) == NULL) {
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].query, err, cases[i].reason);
        }
    }
}

static void session_cookie(void **state)
{
    (void)state;
    char id[CONSOLE_SESSION_ID_LEN + 1];
    assert_int_equal(console_req_session("a=b; gantry_console=" SID "; c=d", id), 0);
    assert_string_equal(id, SID);
    assert_int_equal(console_req_session("gantry_console=" SID, id), 0);
    assert_int_equal(console_req_session("", id), GERR_NOTFOUND);
    assert_int_equal(console_req_session("xgantry_console=" SID, id), GERR_NOTFOUND);
    assert_int_equal(console_req_session("gantry_console=abc", id), GERR_INVAL);
    assert_int_equal(console_req_session("gantry_console=" SID "0", id), GERR_INVAL);
    assert_int_equal(
        console_req_session("gantry_console=0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                            id),
        GERR_INVAL);
}

static void login_bodies(void **state)
{
    (void)state;
    char tok[CONSOLE_TOKEN_MAX + 1], err[GERR_MSG_SIZE];
    const char *ok = "{\"token\": \"gtk_0123456789abcdef0123456789abcdef_h-_DM-GFtIngVsSPw\"}";
    assert_int_equal(console_req_login((const uint8_t *)ok, strlen(ok), tok, sizeof tok, err), 0);
    assert_string_equal(tok, "gtk_0123456789abcdef0123456789abcdef_h-_DM-GFtIngVsSPw");
    static const char *const bad[] = {
        "",
        "[]",
        "{}",
        "{\"token\": 5}",
        "{\"token\": \"\"}",
        "{\"token\": \"a b\"}",
        "{\"token\": \"x\", \"y\": 1}",
        "{\"token\": \"a\", \"token\": \"b\"}",
        "{\"token\": \"a\\u0000b\"}",
        "{\"token\": \"secret\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(console_req_login((const uint8_t *)bad[i], strlen(bad[i]), tok, sizeof tok, err),
                         GERR_INVAL);
        assert_true(err[0] != '\0');
        assert_null(strstr(err, "secret")); /* the value is never echoed */
    }
    /* Longer than CONSOLE_TOKEN_MAX. */
    char big[CONSOLE_TOKEN_MAX + 32];
    memcpy(big, "{\"token\":\"", 10);
    memset(big + 10, 'a', CONSOLE_TOKEN_MAX + 1);
    memcpy(big + 10 + CONSOLE_TOKEN_MAX + 1, "\"}", 3);
    assert_int_equal(console_req_login((const uint8_t *)big, strlen(big), tok, sizeof tok, err), GERR_INVAL);
}

static void drill_bodies(void **state)
{
    (void)state;
    uint64_t t = 99;
    char err[GERR_MSG_SIZE];
    assert_int_equal(console_req_drill((const uint8_t *)"{}", 2, &t, err), 0);
    assert_int_equal(t, 0);
    assert_int_equal(console_req_drill((const uint8_t *)"{\"target_id\": 3}", 16, &t, err), 0);
    assert_int_equal(t, 3);
    static const char *const bad[] = {"{\"target_id\": -1}",
                                      "{\"target_id\": \"3\"}",
                                      "{\"target_id\": 1.5}",
                                      "{\"other\": 1}",
                                      "3",
                                      "nope"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(console_req_drill((const uint8_t *)bad[i], strlen(bad[i]), &t, err), GERR_INVAL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(filters_decode), cmocka_unit_test(bad_filters_are_refused_with_a_reason),
        cmocka_unit_test(session_cookie), cmocka_unit_test(login_bodies),
        cmocka_unit_test(drill_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
