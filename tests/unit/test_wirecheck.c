/* The strict request check (server/grpc/wirecheck.h) against the real gantry.v1 descriptors:
 * strings (UTF-8, NUL) at every depth and in repeated fields and maps, enums (plain and packed),
 * the field and depth caps, and malformed encodings. Messages are written byte by byte so that
 * they can hold what protobuf-c itself would never encode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gantry/testing/v1/echo.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "server/grpc/wirecheck.h"

static char errmsg[GERR_MSG_SIZE];

/* --- A tiny protobuf writer --- */

static void put_varint(struct buf *b, uint64_t v)
{
    while (v >= 0x80) {
        buf_put_u8(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    buf_put_u8(b, (uint8_t)v);
}

static void put_tag(struct buf *b, uint32_t field, unsigned wire)
{
    put_varint(b, (uint64_t)field << 3 | wire);
}

static void put_bytes(struct buf *b, uint32_t field, const void *p, size_t n)
{
    put_tag(b, field, 2);
    put_varint(b, n);
    buf_append(b, p, n);
}

static void put_str(struct buf *b, uint32_t field, const char *s)
{
    put_bytes(b, field, s, strlen(s));
}

static void put_msg(struct buf *b, uint32_t field, struct buf *sub)
{
    put_bytes(b, field, sub->data, sub->len);
    buf_close(sub);
    buf_init(sub);
}

static void put_uint(struct buf *b, uint32_t field, uint64_t v)
{
    put_tag(b, field, 0);
    put_varint(b, v);
}

static void put_entry(struct buf *b, uint32_t field, const void *k, size_t kn, const void *v, size_t vn)
{
    struct buf e;
    buf_init(&e);
    put_bytes(&e, 1, k, kn);
    put_bytes(&e, 2, v, vn);
    put_msg(b, field, &e);
}

static int check(const ProtobufCMessageDescriptor *d, struct buf *b, uint32_t max_fields, uint32_t max_depth)
{
    struct wirecheck_limits lim = {.max_fields = max_fields, .max_depth = max_depth};
    errmsg[0] = '\0';
    return wirecheck_message(d, b->data, b->len, &lim, errmsg);
}

/* A CreateSandboxRequest with @name and one label, env entry and command of the caller's
 * choosing; every other string valid. */
struct sandbox_parts {
    const char *name;
    size_t name_len;
    const char *label_key;
    size_t label_key_len;
    const char *label_value;
    size_t label_value_len;
    const char *env_value;
    size_t env_value_len;
    const char *command2;
    size_t command2_len;
};

static void build_sandbox(struct buf *out, const struct sandbox_parts *p)
{
    struct buf meta, spec, sandbox;
    buf_init(&meta);
    buf_init(&spec);
    buf_init(&sandbox);
    put_bytes(&meta, 2, p->name, p->name_len);
    put_str(&meta, 3, "team-a");
    put_entry(&meta, 5, "app", 3, "web", 3);
    put_entry(&meta, 5, p->label_key, p->label_key_len, p->label_value, p->label_value_len);
    put_str(&spec, 1, "debian:12");
    put_str(&spec, 2, "sh");
    put_str(&spec, 2, "-c");
    put_bytes(&spec, 2, p->command2, p->command2_len);
    put_entry(&spec, 3, "A", 1, "1", 1);
    put_entry(&spec, 3, "B", 1, p->env_value, p->env_value_len);
    put_uint(&spec, 4, 1);
    put_msg(&sandbox, 1, &meta);
    put_msg(&sandbox, 2, &spec);
    put_str(out, 1, "req-1");
    put_msg(out, 2, &sandbox);
}

#define S(lit) lit, sizeof(lit) - 1

static struct sandbox_parts good_parts(void)
{
    struct sandbox_parts p = {S("web-1"), S("team"), S("infra"), S("x"), S("echo hi")};
    return p;
}

static int check_sandbox(const struct sandbox_parts *p)
{
    struct buf b;
    buf_init(&b);
    build_sandbox(&b, p);
    int rv = check(&gantry__v1__create_sandbox_request__descriptor, &b, 0, 0);
    buf_close(&b);
    return rv;
}

/* --- Tests --- */

static void valid_request_passes_and_decodes(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    p.name = "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80"; /* multi-byte UTF-8 is fine */
    p.name_len = strlen(p.name);
    struct buf b;
    buf_init(&b);
    build_sandbox(&b, &p);
    assert_int_equal(check(&gantry__v1__create_sandbox_request__descriptor, &b, 0, 0), 0);
    Gantry__V1__CreateSandboxRequest *req = gantry__v1__create_sandbox_request__unpack(NULL, b.len, b.data);
    assert_non_null(req);
    assert_string_equal(req->sandbox->meta->name, p.name);
    assert_int_equal(req->sandbox->spec->n_command, 3);
    gantry__v1__create_sandbox_request__free_unpacked(req, NULL);
    buf_close(&b);
    /* Empty messages are valid. */
    assert_int_equal(
        wirecheck_message(&gantry__v1__create_sandbox_request__descriptor, NULL, 0, NULL, errmsg), 0);
}

static void invalid_utf8_is_named_by_path(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    p.name = "bad\xff";
    p.name_len = 4;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.name: invalid UTF-8");
    /* Overlong forms and surrogates are invalid too (lib/utf8's strict rules). */
    p.name = "\xc0\xaf";
    p.name_len = 2;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    p.name = "\xed\xa0\x80";
    p.name_len = 3;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.name: invalid UTF-8");
}

static void nul_byte_is_refused(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    p.name = "nul\0Evil";
    p.name_len = 8;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.name: contains a NUL byte");
}

static void repeated_fields_get_an_index(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    p.command2 = "rm\xfe";
    p.command2_len = 3;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.spec.command[2]: invalid UTF-8");
}

static void map_values_and_keys(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    p.label_value = "in\xfe";
    p.label_value_len = 3;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.labels[\"team\"]: invalid UTF-8");

    p = good_parts();
    p.env_value = "cut\0here";
    p.env_value_len = 8;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.spec.env[\"B\"]: contains a NUL byte");

    /* A key that cannot be shown is named by the entry's position. */
    p = good_parts();
    p.label_key = "t\xffm";
    p.label_key_len = 3;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.labels[1].key: invalid UTF-8");
    p = good_parts();
    p.label_key = "has \"quotes\"";
    p.label_key_len = strlen(p.label_key);
    p.label_value = "v\0";
    p.label_value_len = 2;
    assert_int_equal(check_sandbox(&p), GERR_INVAL);
    assert_string_equal(errmsg, "sandbox.meta.labels[1]: contains a NUL byte");
}

static void unknown_enum_values_are_refused(void **state)
{
    (void)state;
    const int64_t bad[] = {77, 99, -1, 3};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf quota, b;
        buf_init(&quota);
        buf_init(&b);
        put_uint(&quota, 2, 5);
        put_uint(&quota, 5, (uint64_t)bad[i]); /* -1: a ten-byte varint, as protobuf encodes it */
        put_str(&b, 1, "req");
        put_msg(&b, 2, &quota);
        assert_int_equal(check(&gantry__v1__set_quota_request__descriptor, &b, 0, 0), GERR_INVAL);
        char want[128];
        snprintf(want, sizeof want, "quota.mode: unknown value %lld of enum gantry.v1.QuotaMode",
                 (long long)bad[i]);
        assert_string_equal(errmsg, want);
        buf_close(&b);
    }
    struct buf quota, b;
    buf_init(&quota);
    buf_init(&b);
    put_uint(&quota, 5, 2); /* SOFT */
    put_msg(&b, 2, &quota);
    assert_int_equal(check(&gantry__v1__set_quota_request__descriptor, &b, 0, 0), 0);
    buf_close(&b);
}

/* gantry.v1 has no repeated enum, so a descriptor of one: message Roles { repeated Role roles = 1; } */
static const ProtobufCFieldDescriptor roles_fields[1] = {
    {"roles", 1, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_ENUM, 0, 0, &gantry__v1__role__descriptor, NULL,
     PROTOBUF_C_FIELD_FLAG_PACKED, 0, NULL, NULL},
};
static const unsigned roles_by_name[1] = {0};
static const ProtobufCIntRange roles_ranges[2] = {{1, 0}, {0, 1}};
static const ProtobufCMessageDescriptor roles_descriptor = {PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
                                                            "test.Roles",
                                                            "Roles",
                                                            "Test__Roles",
                                                            "test",
                                                            0,
                                                            1,
                                                            roles_fields,
                                                            roles_by_name,
                                                            1,
                                                            roles_ranges,
                                                            NULL,
                                                            NULL,
                                                            NULL,
                                                            NULL};

static void packed_enums_are_checked_element_by_element(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    put_uint(&b, 1, 1);                  /* roles[0], unpacked */
    put_bytes(&b, 1, "\x02\x03\x04", 3); /* roles[1..3], packed */
    put_bytes(&b, 1, "\x01\x09\x02", 3); /* roles[4..6]: 9 is not a Role */
    assert_int_equal(check(&roles_descriptor, &b, 0, 0), GERR_INVAL);
    assert_string_equal(errmsg, "roles[5]: unknown value 9 of enum gantry.v1.Role");
    buf_close(&b);
    buf_init(&b);
    put_bytes(&b, 1, "\x01\x02\x03\x04", 4);
    assert_int_equal(check(&roles_descriptor, &b, 0, 0), 0);
    /* Each packed element counts as a field. */
    assert_int_equal(check(&roles_descriptor, &b, 4, 0), GERR_TOOBIG);
    assert_int_equal(check(&roles_descriptor, &b, 5, 0), 0);
    buf_close(&b);
}

static void unknown_fields_pass_and_count(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    put_str(&b, 1, "hello");
    put_bytes(&b, 99, "\xff\xfe\x00", 3); /* unknown: not looked into */
    for (int i = 0; i < 100; i++) {
        put_uint(&b, 1000, 1);
    }
    assert_int_equal(check(&gantry__testing__v1__echo_request__descriptor, &b, 0, 0), 0);
    assert_int_equal(check(&gantry__testing__v1__echo_request__descriptor, &b, 102, 0), 0);
    assert_int_equal(check(&gantry__testing__v1__echo_request__descriptor, &b, 101, 0), GERR_TOOBIG);
    assert_string_equal(errmsg, "more than 101 fields");
    buf_close(&b);
}

static void bytes_fields_are_not_text(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    put_bytes(&b, 2, "\x00\xff\xfe", 3); /* EchoRequest.payload is bytes */
    assert_int_equal(check(&gantry__testing__v1__echo_request__descriptor, &b, 0, 0), 0);
    put_bytes(&b, 1, "\x00", 1); /* EchoRequest.message is a string */
    assert_int_equal(check(&gantry__testing__v1__echo_request__descriptor, &b, 0, 0), GERR_INVAL);
    assert_string_equal(errmsg, "message: contains a NUL byte");
    buf_close(&b);
}

static void depth_is_capped(void **state)
{
    (void)state;
    struct sandbox_parts p = good_parts();
    struct buf b;
    buf_init(&b);
    build_sandbox(&b, &p); /* request > sandbox > meta > labels entry: depth 3 */
    assert_int_equal(check(&gantry__v1__create_sandbox_request__descriptor, &b, 0, 3), 0);
    assert_int_equal(check(&gantry__v1__create_sandbox_request__descriptor, &b, 0, 2), GERR_TOOBIG);
    assert_non_null(strstr(errmsg, "nested deeper than 2 levels"));
    buf_close(&b);
}

static void malformed_encodings(void **state)
{
    (void)state;
    const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } cases[] = {
        {"\x0a\x05"
         "abc",
         5, "length of field 1 runs past the message"},
        {"\x10", 1, "truncated varint in field 2"},
        {"\x80", 1, "truncated field key"},
        {"\x0b", 1, "unsupported wire type 3"},
        {"\x00\x01", 2, "bad field number 0"},
        {"\x08\x01", 2, "message: wire type 0 for a length-delimited field"},
        {"\x0d\x01\x02\x03\x04", 5, "message: wire type 5 does not fit the field's type"},
        {"\x1d\x01\x02", 3, "truncated fixed-size field 3"},
        {"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "truncated varint in field 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errmsg[0] = '\0';
        int rv = wirecheck_message(&gantry__testing__v1__echo_request__descriptor,
                                   (const uint8_t *)cases[i].bytes, cases[i].len, NULL, errmsg);
        if (rv != GERR_PROTO || strcmp(errmsg, cases[i].want) != 0) {
            fail_msg("case %zu: rv %d, \"%s\" (want \"%s\")", i, rv, errmsg, cases[i].want);
        }
    }
    /* Only repeated scalars may be packed (length-delimited). */
    assert_int_equal(wirecheck_message(&gantry__testing__v1__stream_request__descriptor,
                                       (const uint8_t *)"\x12\x01\x05", 3, NULL, errmsg),
                     GERR_PROTO);
    assert_string_equal(errmsg, "count: wire type 2 for a scalar field");
    /* A malformed sub-message is named by its path. */
    struct buf meta, sandbox, b;
    buf_init(&meta);
    buf_init(&sandbox);
    buf_init(&b);
    buf_append(&meta,
               "\x12\x09"
               "ab",
               4);
    put_msg(&sandbox, 1, &meta);
    put_msg(&b, 2, &sandbox);
    assert_int_equal(check(&gantry__v1__create_sandbox_request__descriptor, &b, 0, 0), GERR_PROTO);
    assert_string_equal(errmsg, "sandbox.meta: length of field 2 runs past the message");
    buf_close(&b);
}

static void deep_repeated_messages_in_principals(void **state)
{
    (void)state;
    /* CreateRoleBindingRequest.binding.delegation.namespace_patterns[1] and binding.role. */
    struct buf scope, binding, b;
    buf_init(&scope);
    buf_init(&binding);
    buf_init(&b);
    put_str(&scope, 1, "team-*");
    put_str(&scope, 1, "ops-\xc3");
    put_str(&binding, 2, "principal-1");
    put_uint(&binding, 3, 4);
    put_msg(&binding, 5, &scope);
    put_msg(&b, 2, &binding);
    const ProtobufCMessageDescriptor *d = &gantry__v1__create_role_binding_request__descriptor;
    assert_int_equal(d->fields[1].id, 2); /* the binding, as written above */
    assert_int_equal(check(d, &b, 0, 0), GERR_INVAL);
    assert_string_equal(errmsg, "binding.delegation.namespace_patterns[1]: invalid UTF-8");
    buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_request_passes_and_decodes),
        cmocka_unit_test(invalid_utf8_is_named_by_path),
        cmocka_unit_test(nul_byte_is_refused),
        cmocka_unit_test(repeated_fields_get_an_index),
        cmocka_unit_test(map_values_and_keys),
        cmocka_unit_test(unknown_enum_values_are_refused),
        cmocka_unit_test(packed_enums_are_checked_element_by_element),
        cmocka_unit_test(unknown_fields_pass_and_count),
        cmocka_unit_test(bytes_fields_are_not_text),
        cmocka_unit_test(depth_is_capped),
        cmocka_unit_test(malformed_encodings),
        cmocka_unit_test(deep_repeated_messages_in_principals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
