/* Unit tests for store/proto: the dqlite 1.11 wire codec.
 *
 * Written from store/proto.h and ../shared/design/dqlite-protocol.md, not from proto.c. Expected
 * bytes are spelled out literally where the protocol doc gives them, and otherwise built with the
 * small independent body builder below (put_text, put_blob, ...), which the literal tests anchor.
 *
 * Three groups:
 *   - encoders: byte-exact messages for every request type, every parameter type, padding rules;
 *   - refusals: the requests that crash or wedge a 1.11 node are never produced, and a refused call
 *     leaves the output buffer untouched;
 *   - decoders: every response type, then hostile input (every truncation, bogus lengths, huge
 *     counts, garbage markers). Decoder inputs are copied into exact-size heap blocks so that
 *     ASan catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/mem.h"
#include "store/proto.h"

#define MARK_DONE UINT64_C(0xffffffffffffffff)
#define MARK_PART UINT64_C(0xeeeeeeeeeeeeeeee)

/* ------------------------------------------------------------------------------------------------
 * Helpers: an independent body builder, comparison with hex dumps, frame checks. */

static size_t round8(size_t n)
{
    return (n + 7u) / 8u * 8u;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Text: bytes, NUL, zero padding to the next multiple of 8. */
static void put_text(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    buf_append(b, s, n);
    buf_append_zero(b, round8(n + 1) - n);
}

/* Blob: u64 length, then the bytes zero-padded to a multiple of 8. */
static void put_blob(struct buf *b, const void *p, size_t n)
{
    buf_put_u64(b, n);
    buf_append(b, p, n);
    buf_append_zero(b, round8(n) - n);
}

static void put_double(struct buf *b, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    buf_put_u64(b, bits);
}

/* One value as the protocol encodes it (parameters and row values share the encoding). */
static void put_value(struct buf *b, const struct proto_value *v)
{
    switch (v->type) {
    case PROTO_INTEGER:
    case PROTO_UNIXTIME:
    case PROTO_BOOLEAN:
        buf_put_u64(b, (uint64_t)v->u.i);
        break;
    case PROTO_FLOAT:
        put_double(b, v->u.f);
        break;
    case PROTO_TEXT:
    case PROTO_ISO8601:
        put_text(b, v->u.b.s);
        break;
    case PROTO_BLOB:
        put_blob(b, v->u.b.s, v->u.b.n);
        break;
    case PROTO_NULL:
        buf_put_u64(b, 0);
        break;
    default:
        fail_msg("put_value: bad type %d", v->type);
    }
}

/* Parameter tuple, schema 0: u8 n, n type bytes, zero padding to a multiple of 8, values. */
static void put_params(struct buf *b, const struct proto_value *params, unsigned n)
{
    if (n == 0) {
        return;
    }
    size_t hdr = round8(1u + n);
    uint8_t *h = buf_append_zero(b, hdr);
    h[0] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        h[1 + i] = (uint8_t)params[i].type;
    }
    for (unsigned i = 0; i < n; i++) {
        put_value(b, &params[i]);
    }
}

/* Row header: one nibble per column (low nibble for even columns), padded to a multiple of 8. */
static void put_row(struct buf *b, const struct proto_value *vals, unsigned ncols)
{
    size_t hdr = round8((ncols + 1u) / 2u);
    size_t at = b->len;
    buf_append_zero(b, hdr);
    for (unsigned i = 0; i < ncols; i++) {
        uint8_t t = (uint8_t)(vals[i].type & 0x0f);
        b->data[at + i / 2] |= (uint8_t)(i % 2 == 0 ? t : t << 4);
    }
    for (unsigned i = 0; i < ncols; i++) {
        put_value(b, &vals[i]);
    }
}

static void put_row_names(struct buf *b, const char *const *names, unsigned ncols)
{
    buf_put_u64(b, ncols);
    for (unsigned i = 0; i < ncols; i++) {
        put_text(b, names[i]);
    }
}

static void hexdump(const char *label, const uint8_t *p, size_t n)
{
    print_error("%s (%zu bytes):\n", label, n);
    for (size_t i = 0; i < n; i += 8) {
        print_error("  %04zx:", i);
        for (size_t j = i; j < i + 8 && j < n; j++) {
            print_error(" %02x", p[j]);
        }
        print_error("\n");
    }
}

static void expect_bytes(const uint8_t *got, size_t got_n, const uint8_t *want, size_t want_n)
{
    if (got_n == want_n && (want_n == 0 || memcmp(got, want, want_n) == 0)) {
        return;
    }
    hexdump("expected", want, want_n);
    hexdump("got", got, got_n);
    fail_msg("encoded bytes differ");
}

/* @out must hold exactly one message of @type whose body equals @body. */
static void expect_msg(const struct buf *out, uint8_t type, const uint8_t *body, size_t body_n)
{
    assert_int_equal(body_n % 8, 0);
    assert_true(body_n > 0);
    uint8_t want[8] = {0};
    uint32_t words = (uint32_t)(body_n / 8);
    want[0] = (uint8_t)words;
    want[1] = (uint8_t)(words >> 8);
    want[2] = (uint8_t)(words >> 16);
    want[3] = (uint8_t)(words >> 24);
    want[4] = type;
    assert_true(out->len >= 8);
    expect_bytes(out->data, 8, want, 8);
    expect_bytes(out->data + 8, out->len - 8, body, body_n);
}

static void expect_msg_buf(const struct buf *out, uint8_t type, const struct buf *body)
{
    expect_msg(out, type, body->data, body->len);
}

static bool is_sendable_type(unsigned t)
{
    switch (t) {
    case PROTO_REQ_LEADER:
    case PROTO_REQ_CLIENT:
    case PROTO_REQ_OPEN:
    case PROTO_REQ_PREPARE:
    case PROTO_REQ_EXEC:
    case PROTO_REQ_QUERY:
    case PROTO_REQ_FINALIZE:
    case PROTO_REQ_EXEC_SQL:
    case PROTO_REQ_QUERY_SQL:
    case PROTO_REQ_INTERRUPT:
    case PROTO_REQ_ADD:
    case PROTO_REQ_ASSIGN:
    case PROTO_REQ_REMOVE:
    case PROTO_REQ_DUMP:
    case PROTO_REQ_CLUSTER:
    case PROTO_REQ_TRANSFER:
    case PROTO_REQ_DESCRIBE:
    case PROTO_REQ_WEIGHT:
        return true;
    default:
        return false;
    }
}

/* Walk every message in @out[from..len): each must have words > 0, a known request type, schema 0,
 * extra 0 and a body that is exactly there. Returns the number of messages; adds their types to
 * @seen (a bit per type) when not NULL. */
static unsigned check_frames(const struct buf *out, size_t from, uint32_t *seen)
{
    unsigned count = 0;
    size_t off = from;
    while (off < out->len) {
        assert_true(out->len - off >= 8);
        const uint8_t *h = out->data + off;
        uint32_t words = get_le32(h);
        if (words == 0) {
            fail_msg("message at offset %zu has words=0 (aborts a 1.11 node)", off);
        }
        if (!is_sendable_type(h[4])) {
            fail_msg("message at offset %zu has type %u, which must never be sent", off, h[4]);
        }
        assert_int_equal(h[5], 0); /* schema: 1.11 answers schema 1 with FAILURE 1005 */
        assert_int_equal(h[6], 0);
        assert_int_equal(h[7], 0);
        assert_true((uint64_t)words * 8u <= out->len - off - 8);
        if (seen != NULL) {
            *seen |= UINT32_C(1) << h[4];
        }
        off += 8u + (size_t)words * 8u;
        count++;
    }
    assert_int_equal(off, out->len);
    return count;
}

/* A refused or invalid call must leave @out exactly as it was: prefill it, then compare. */
static const uint8_t prefill_bytes[] = {0xde, 0xad, 0xbe, 0xef, 0x01};

static void prefill(struct buf *out)
{
    buf_init(out);
    buf_append(out, prefill_bytes, sizeof prefill_bytes);
}

static void expect_untouched(const struct buf *out)
{
    assert_int_equal(out->len, sizeof prefill_bytes);
    assert_memory_equal(out->data, prefill_bytes, sizeof prefill_bytes);
}

/* ------------------------------------------------------------------------------------------------
 * Constructors and header decoding. */

static void test_value_constructors(void **state)
{
    (void)state;
    struct proto_value v = proto_int(-5);
    assert_int_equal(v.type, PROTO_INTEGER);
    assert_true(v.u.i == -5);
    v = proto_float(2.5);
    assert_int_equal(v.type, PROTO_FLOAT);
    assert_true(v.u.f == 2.5);
    const char *s = "hello";
    v = proto_text(s);
    assert_int_equal(v.type, PROTO_TEXT);
    assert_ptr_equal(v.u.b.s, s);
    assert_int_equal(v.u.b.n, 5);
    static const uint8_t blob[3] = {1, 0, 2};
    v = proto_blob(blob, sizeof blob);
    assert_int_equal(v.type, PROTO_BLOB);
    assert_ptr_equal(v.u.b.s, (const char *)blob);
    assert_int_equal(v.u.b.n, 3);
    v = proto_null();
    assert_int_equal(v.type, PROTO_NULL);
}

static void test_header_decode(void **state)
{
    (void)state;
    static const uint8_t raw[8] = {0x04, 0x03, 0x02, 0x01, 0x07, 0x00, 0x34, 0x12};
    struct proto_header h;
    proto_header_decode(raw, &h);
    assert_int_equal(h.words, 0x01020304u);
    assert_int_equal(h.type, 7);
    assert_int_equal(h.schema, 0);
    assert_int_equal(h.extra, 0x1234);

    static const uint8_t raw2[8] = {0xff, 0xff, 0xff, 0xff, 0x0a, 0x01, 0x00, 0x00};
    proto_header_decode(raw2, &h);
    assert_int_equal(h.words, 0xffffffffu);
    assert_int_equal(h.type, 10);
    assert_int_equal(h.schema, 1);
}

/* ------------------------------------------------------------------------------------------------
 * Encoders: byte-exact. */

static void test_enc_leader(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_leader(&out), 0);
    static const uint8_t want[] = {0x01, 0, 0, 0, 0x00, 0, 0, 0, /* header */
                                   0,    0, 0, 0, 0,    0, 0, 0};
    expect_bytes(out.data, out.len, want, sizeof want);
    buf_close(&out);
}

static void test_enc_client(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_client(&out, UINT64_C(0x0102030405060708)), 0);
    static const uint8_t want[] = {0x01, 0,    0,    0,    0x01, 0,    0,    0, /* header */
                                   0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    expect_bytes(out.data, out.len, want, sizeof want);
    buf_close(&out);
}

/* OPEN: text name, u64 flags (0), text vfs. The vfs name is ignored by 1.11 and not fixed by the
 * header, so any well-formed text is accepted there; everything else is byte-exact. */
static void check_open(const char *name, size_t name_bytes)
{
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_open(&out, name), 0);
    assert_int_equal(check_frames(&out, 0, NULL), 1);
    assert_int_equal(out.data[4], PROTO_REQ_OPEN);
    const uint8_t *body = out.data + 8;
    size_t n = out.len - 8;
    assert_true(n >= name_bytes + 8 + 8);

    struct buf want;
    buf_init(&want);
    put_text(&want, name);
    assert_int_equal(want.len, name_bytes);
    buf_put_u64(&want, 0);
    expect_bytes(body, name_bytes + 8, want.data, want.len);

    const uint8_t *vfs = body + name_bytes + 8;
    size_t vfs_n = n - name_bytes - 8;
    const uint8_t *nul = memchr(vfs, 0, vfs_n);
    assert_non_null(nul);
    size_t len = (size_t)(nul - vfs);
    assert_int_equal(vfs_n, round8(len + 1));
    for (size_t i = len; i < vfs_n; i++) {
        assert_int_equal(vfs[i], 0);
    }
    buf_close(&want);
    buf_close(&out);
}

static void test_enc_open(void **state)
{
    (void)state;
    check_open("test", 8);
    check_open("abcdefg", 8);   /* 7 chars + NUL fill one word exactly */
    check_open("abcdefgh", 16); /* 8 chars need a second word for the NUL */
    check_open("gantry.db", 16);
}

static void test_enc_prepare(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_prepare(&out, 0x01020304u, "SELECT 1"), 0);
    static const uint8_t body[] = {0x04, 0x03, 0x02, 0x01, 0,   0,   0,   0, /* u64 db_id */
                                   'S',  'E',  'L',  'E',  'C', 'T', ' ', '1', 0, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_PREPARE, body, sizeof body);
    buf_close(&out);

    buf_init(&out);
    assert_int_equal(proto_enc_prepare(&out, 0, "SELECT ?"), 0);
    struct buf want;
    buf_init(&want);
    buf_put_u64(&want, 0);
    put_text(&want, "SELECT ?");
    expect_msg_buf(&out, PROTO_REQ_PREPARE, &want);
    buf_close(&want);
    buf_close(&out);
}

static void test_enc_exec_no_params(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec(&out, 0x11223344u, 0x55667788u, NULL, 0), 0);
    /* No params: the tuple is omitted entirely. */
    static const uint8_t body[] = {0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55};
    expect_msg(&out, PROTO_REQ_EXEC, body, sizeof body);
    buf_close(&out);
}

static void test_enc_query_no_params(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_query(&out, 0, 3, NULL, 0), 0);
    static const uint8_t body[] = {0, 0, 0, 0, 3, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_QUERY, body, sizeof body);
    buf_close(&out);
}

static void test_enc_finalize(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_finalize(&out, 1, 0x0a0b0c0du), 0);
    static const uint8_t body[] = {1, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a};
    expect_msg(&out, PROTO_REQ_FINALIZE, body, sizeof body);
    buf_close(&out);
}

/* The protocol doc's own example: 2 params (INTEGER 7, TEXT "hi"). */
static void test_enc_exec_sql_doc_example(void **state)
{
    (void)state;
    struct proto_value params[2] = {proto_int(7), proto_text("hi")};
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec_sql(&out, 0, "INSERT INTO t VALUES(?,?)", params, 2), 0);
    struct buf want;
    buf_init(&want);
    buf_put_u64(&want, 0);
    put_text(&want, "INSERT INTO t VALUES(?,?)");
    static const uint8_t tuple[] = {0x02, 0x01, 0x03, 0, 0, 0, 0, 0,  /* n, types, pad */
                                    0x07, 0,    0,    0, 0, 0, 0, 0,  /* 7 */
                                    0x68, 0x69, 0,    0, 0, 0, 0, 0}; /* "hi" */
    buf_append(&want, tuple, sizeof tuple);
    expect_msg_buf(&out, PROTO_REQ_EXEC_SQL, &want);
    buf_close(&want);
    buf_close(&out);
}

/* Every parameter type, spelled out byte by byte. */
static void test_enc_exec_sql_all_param_types(void **state)
{
    (void)state;
    static const uint8_t blob[3] = {0x01, 0x02, 0x03};
    struct proto_value params[5] = {proto_int(-2), proto_float(1.5), proto_text("hi"), proto_blob(blob, 3),
                                    proto_null()};
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec_sql(&out, 0x0102u, "X", params, 5), 0);
    static const uint8_t body[] = {
        0x02, 0x01, 0,    0,    0,    0,    0,    0,    /* u64 db_id */
        'X',  0,    0,    0,    0,    0,    0,    0,    /* sql */
        0x05, 0x01, 0x02, 0x03, 0x04, 0x05, 0,    0,    /* n=5, types, pad to 8 */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* INTEGER -2 */
        0,    0,    0,    0,    0,    0,    0xf8, 0x3f, /* FLOAT 1.5 */
        'h',  'i',  0,    0,    0,    0,    0,    0,    /* TEXT "hi" */
        0x03, 0,    0,    0,    0,    0,    0,    0,    /* BLOB length 3 */
        0x01, 0x02, 0x03, 0,    0,    0,    0,    0,    /* BLOB data, padded */
        0,    0,    0,    0,    0,    0,    0,    0,    /* NULL: 8 zero bytes */
    };
    expect_msg(&out, PROTO_REQ_EXEC_SQL, body, sizeof body);
    buf_close(&out);
}

/* The same parameter block must come out of all four parameterised encoders. */
static void test_enc_params_every_encoder(void **state)
{
    (void)state;
    static const uint8_t blob8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const uint8_t blob9[9] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    struct proto_value params[] = {
        proto_int(INT64_MIN), proto_int(INT64_MAX),  proto_float(-2.25),     proto_float(0.0),
        proto_text(""),       proto_text("abcdefg"), proto_text("abcdefgh"), proto_blob(NULL, 0),
        proto_blob(blob8, 8), proto_blob(blob9, 9),  proto_null(),
    };
    unsigned n = (unsigned)(sizeof params / sizeof params[0]);
    struct buf tuple;
    buf_init(&tuple);
    put_params(&tuple, params, n);
    /* Sanity of the builder against the padding rules: header 1+11 -> 16 bytes. */
    assert_int_equal(tuple.data[0], 11);
    assert_int_equal(tuple.data[12], 0);

    for (int which = 0; which < 4; which++) {
        struct buf out, want;
        buf_init(&out);
        buf_init(&want);
        int rc;
        uint8_t type;
        switch (which) {
        case 0:
            rc = proto_enc_exec(&out, 0, 9, params, n);
            type = PROTO_REQ_EXEC;
            buf_put_u32(&want, 0);
            buf_put_u32(&want, 9);
            break;
        case 1:
            rc = proto_enc_query(&out, 0, 9, params, n);
            type = PROTO_REQ_QUERY;
            buf_put_u32(&want, 0);
            buf_put_u32(&want, 9);
            break;
        case 2:
            rc = proto_enc_exec_sql(&out, 0, "INSERT INTO t VALUES(?,?,?,?,?,?,?,?,?,?,?)", params, n);
            type = PROTO_REQ_EXEC_SQL;
            buf_put_u64(&want, 0);
            put_text(&want, "INSERT INTO t VALUES(?,?,?,?,?,?,?,?,?,?,?)");
            break;
        default:
            rc = proto_enc_query_sql(&out, 0, "SELECT ?,?,?,?,?,?,?,?,?,?,?", params, n);
            type = PROTO_REQ_QUERY_SQL;
            buf_put_u64(&want, 0);
            put_text(&want, "SELECT ?,?,?,?,?,?,?,?,?,?,?");
            break;
        }
        assert_int_equal(rc, 0);
        buf_append(&want, tuple.data, tuple.len);
        expect_msg_buf(&out, type, &want);
        buf_close(&want);
        buf_close(&out);
    }
    buf_close(&tuple);
}

static void test_enc_text_param_padding(void **state)
{
    (void)state;
    /* A 7-char text param takes one word, an 8-char one takes two, "" takes one. */
    static const struct {
        const char *s;
        size_t bytes;
    } cases[] = {{"", 8},
                 {"a", 8},
                 {"abcdefg", 8},
                 {"abcdefgh", 16},
                 {"abcdefghijklmno", 16},
                 {"abcdefghijklmnop", 24}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_value p = proto_text(cases[i].s);
        struct buf out;
        buf_init(&out);
        assert_int_equal(proto_enc_exec(&out, 0, 1, &p, 1), 0);
        /* header 8 + ids 8 + tuple header 8 + text */
        assert_int_equal(out.len, 24 + cases[i].bytes);
        assert_int_equal(get_le32(out.data), (16 + cases[i].bytes) / 8);
        assert_memory_equal(out.data + 24, cases[i].s, strlen(cases[i].s));
        for (size_t j = 24 + strlen(cases[i].s); j < out.len; j++) {
            assert_int_equal(out.data[j], 0);
        }
        buf_close(&out);
    }
}

/* Tuple header padding: 1 + n type bytes rounded up to 8. 0 params: no tuple at all. */
static void check_tuple_padding(unsigned n, size_t header_bytes)
{
    struct proto_value params[16];
    for (unsigned i = 0; i < n; i++) {
        params[i] = proto_int((int64_t)i + 100);
    }
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec(&out, 0, 1, params, n), 0);
    size_t body = 8 + header_bytes + 8u * n;
    assert_int_equal(out.len, 8 + body);
    assert_int_equal(get_le32(out.data), body / 8);
    if (n > 0) {
        const uint8_t *h = out.data + 16;
        assert_int_equal(h[0], n);
        for (unsigned i = 0; i < n; i++) {
            assert_int_equal(h[1 + i], PROTO_INTEGER);
        }
        for (size_t i = 1 + n; i < header_bytes; i++) {
            assert_int_equal(h[i], 0);
        }
        for (unsigned i = 0; i < n; i++) {
            assert_int_equal(get_le64(h + header_bytes + 8u * i), i + 100);
        }
    }
    buf_close(&out);
}

static void test_enc_tuple_header_padding(void **state)
{
    (void)state;
    check_tuple_padding(0, 0);
    check_tuple_padding(1, 8);
    check_tuple_padding(7, 8);
    check_tuple_padding(8, 16);
    check_tuple_padding(15, 16);
}

static void test_enc_255_params(void **state)
{
    (void)state;
    struct proto_value *params = calloc(PROTO_MAX_PARAMS, sizeof *params);
    assert_non_null(params);
    for (unsigned i = 0; i < PROTO_MAX_PARAMS; i++) {
        params[i] = proto_null();
    }
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec(&out, 0, 1, params, PROTO_MAX_PARAMS), 0);
    /* 1 + 255 = 256 header bytes, no padding; 255 NULLs of 8 bytes. */
    assert_int_equal(out.len, 8 + 8 + 256 + 255 * 8);
    assert_int_equal(out.data[16], 255);
    assert_int_equal(check_frames(&out, 0, NULL), 1);
    buf_close(&out);
    free(params);
}

static void test_enc_interrupt(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_interrupt(&out, 0x01020304u), 0);
    static const uint8_t body[] = {0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_INTERRUPT, body, sizeof body);
    buf_close(&out);
}

static void test_enc_add(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_add(&out, UINT64_C(0x1122334455667788), "127.0.0.1:9001"), 0);
    static const uint8_t body[] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* id */
                                   '1',  '2',  '7',  '.',  '0',  '.',  '0',  '.',  /* address */
                                   '1',  ':',  '9',  '0',  '0',  '1',  0,    0};
    expect_msg(&out, PROTO_REQ_ADD, body, sizeof body);
    buf_close(&out);
}

static void test_enc_assign(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_assign(&out, 5, PROTO_ROLE_STANDBY), 0);
    static const uint8_t standby[] = {5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_ASSIGN, standby, sizeof standby);
    buf_close(&out);

    buf_init(&out);
    assert_int_equal(proto_enc_assign(&out, 6, PROTO_ROLE_SPARE), 0);
    static const uint8_t spare[] = {6, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_ASSIGN, spare, sizeof spare);
    buf_close(&out);

    /* Voter: the role word is optional on the wire (absent means voter), both forms are correct. */
    buf_init(&out);
    assert_int_equal(proto_enc_assign(&out, 7, PROTO_ROLE_VOTER), 0);
    static const uint8_t voter[] = {7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (out.len == 16) {
        expect_msg(&out, PROTO_REQ_ASSIGN, voter, 8);
    } else {
        expect_msg(&out, PROTO_REQ_ASSIGN, voter, sizeof voter);
    }
    buf_close(&out);
}

static void test_enc_remove(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_remove(&out, 9), 0);
    static const uint8_t body[] = {9, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_REMOVE, body, sizeof body);
    buf_close(&out);
}

static void test_enc_dump(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_dump(&out, "db"), 0);
    static const uint8_t body[] = {'d', 'b', 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_DUMP, body, sizeof body);
    buf_close(&out);

    buf_init(&out);
    assert_int_equal(proto_enc_dump(&out, "gantry01"), 0);
    static const uint8_t body8[] = {'g', 'a', 'n', 't', 'r', 'y', '0', '1', 0, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_DUMP, body8, sizeof body8);
    buf_close(&out);
}

static void test_enc_cluster(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_cluster(&out), 0);
    static const uint8_t body[] = {1, 0, 0, 0, 0, 0, 0, 0}; /* format 1: with roles */
    expect_msg(&out, PROTO_REQ_CLUSTER, body, sizeof body);
    buf_close(&out);
}

static void test_enc_transfer(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_transfer(&out, 3), 0);
    static const uint8_t body[] = {3, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_TRANSFER, body, sizeof body);
    buf_close(&out);

    buf_init(&out);
    assert_int_equal(proto_enc_transfer(&out, 0), 0); /* 0 = let raft pick */
    static const uint8_t zero[] = {0, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_TRANSFER, zero, sizeof zero);
    buf_close(&out);
}

static void test_enc_describe(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_describe(&out), 0);
    static const uint8_t body[] = {0, 0, 0, 0, 0, 0, 0, 0}; /* format 0 only */
    expect_msg(&out, PROTO_REQ_DESCRIBE, body, sizeof body);
    buf_close(&out);
}

static void test_enc_weight(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_weight(&out, 42), 0);
    static const uint8_t body[] = {42, 0, 0, 0, 0, 0, 0, 0};
    expect_msg(&out, PROTO_REQ_WEIGHT, body, sizeof body);
    buf_close(&out);
}

/* Encoders append: what was in the buffer stays, and messages can be pipelined back to back. */
static void test_enc_appends(void **state)
{
    (void)state;
    struct buf out;
    prefill(&out);
    assert_int_equal(proto_enc_leader(&out), 0);
    assert_int_equal(proto_enc_weight(&out, 1), 0);
    assert_memory_equal(out.data, prefill_bytes, sizeof prefill_bytes);
    assert_int_equal(out.len, sizeof prefill_bytes + 16 + 16);
    assert_int_equal(check_frames(&out, sizeof prefill_bytes, NULL), 2);
    buf_close(&out);
}

/* ------------------------------------------------------------------------------------------------
 * Refusals: what crashes or wedges a 1.11 node is never produced. */

/* Every encoder, with ordinary and edge-case arguments: every message that comes out has words > 0,
 * a request type that 1.11 answers (never HEARTBEAT 2, CONNECT 11 or unknown), and schema 0. */
static void test_refuse_no_empty_body_no_unknown_type(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out);
    struct proto_value one = proto_int(1);
    int rc = 0;
    rc |= proto_enc_leader(&out);
    rc |= proto_enc_client(&out, 0);
    rc |= proto_enc_open(&out, "db");
    rc |= proto_enc_prepare(&out, 0, "SELECT 1");
    rc |= proto_enc_exec(&out, 0, 0, NULL, 0);
    rc |= proto_enc_exec(&out, 0, 0, &one, 1);
    rc |= proto_enc_query(&out, 0, 0, NULL, 0);
    rc |= proto_enc_query(&out, 0, 0, &one, 1);
    rc |= proto_enc_finalize(&out, 0, 0);
    rc |= proto_enc_exec_sql(&out, 0, "PRAGMA gantry_noop", NULL, 0);
    rc |= proto_enc_exec_sql(&out, 0, "SELECT ?", &one, 1);
    rc |= proto_enc_query_sql(&out, 0, "SELECT 1", NULL, 0);
    rc |= proto_enc_query_sql(&out, 0, "SELECT ?", &one, 1);
    rc |= proto_enc_interrupt(&out, 0);
    rc |= proto_enc_add(&out, 2, "127.0.0.1:9002");
    rc |= proto_enc_assign(&out, 2, PROTO_ROLE_VOTER);
    rc |= proto_enc_assign(&out, 2, PROTO_ROLE_STANDBY);
    rc |= proto_enc_assign(&out, 2, PROTO_ROLE_SPARE);
    rc |= proto_enc_remove(&out, 2);
    rc |= proto_enc_dump(&out, "db");
    rc |= proto_enc_cluster(&out);
    rc |= proto_enc_transfer(&out, 0);
    rc |= proto_enc_describe(&out);
    rc |= proto_enc_weight(&out, 0);
    assert_int_equal(rc, 0);
    uint32_t seen = 0;
    assert_int_equal(check_frames(&out, 0, &seen), 24);
    /* Every sendable type was produced, and nothing else. */
    uint32_t all = 0;
    for (unsigned t = 0; t < 32; t++) {
        if (is_sendable_type(t)) {
            all |= UINT32_C(1) << t;
        }
    }
    assert_int_equal(seen, all);
    assert_false(is_sendable_type(2));  /* HEARTBEAT */
    assert_false(is_sendable_type(11)); /* CONNECT */
    buf_close(&out);

    /* Edge-case arguments (empty strings, id 0, extreme values). Whatever the verdict: either one
     * well-formed message with a non-empty body, or an error and the buffer untouched. */
    for (int k = 0; k < 14; k++) {
        prefill(&out);
        switch (k) {
        case 0:
            rc = proto_enc_open(&out, "");
            break;
        case 1:
            rc = proto_enc_prepare(&out, 0, "");
            break;
        case 2:
            rc = proto_enc_exec_sql(&out, 0, "", NULL, 0);
            break;
        case 3:
            rc = proto_enc_query_sql(&out, 0, "", NULL, 0);
            break;
        case 4:
            rc = proto_enc_add(&out, 0, "");
            break;
        case 5:
            rc = proto_enc_add(&out, 0, "127.0.0.1:9001");
            break;
        case 6:
            rc = proto_enc_dump(&out, "");
            break;
        case 7:
            rc = proto_enc_assign(&out, 0, PROTO_ROLE_VOTER);
            break;
        case 8:
            rc = proto_enc_remove(&out, 0);
            break;
        case 9:
            rc = proto_enc_client(&out, UINT64_MAX);
            break;
        case 10:
            rc = proto_enc_weight(&out, UINT64_MAX);
            break;
        case 11:
            rc = proto_enc_exec(&out, UINT32_MAX, UINT32_MAX, NULL, 0);
            break;
        case 12:
            rc = proto_enc_finalize(&out, UINT32_MAX, UINT32_MAX);
            break;
        default:
            rc = proto_enc_transfer(&out, UINT64_MAX);
            break;
        }
        if (rc == 0) {
            assert_memory_equal(out.data, prefill_bytes, sizeof prefill_bytes);
            assert_int_equal(check_frames(&out, sizeof prefill_bytes, NULL), 1);
        } else {
            if (rc != GERR_INVAL && rc != GERR_REFUSED) {
                fail_msg("edge case %d: rc %d (%s)", k, rc, gerr_name(rc));
            }
            expect_untouched(&out);
        }
        buf_close(&out);
    }
}

/* The request enum itself has no HEARTBEAT or CONNECT: there is nothing to call. */
static void test_refuse_request_enum(void **state)
{
    (void)state;
    static const int reqs[] = {
        PROTO_REQ_LEADER,   PROTO_REQ_CLIENT,   PROTO_REQ_OPEN,     PROTO_REQ_PREPARE,   PROTO_REQ_EXEC,
        PROTO_REQ_QUERY,    PROTO_REQ_FINALIZE, PROTO_REQ_EXEC_SQL, PROTO_REQ_QUERY_SQL, PROTO_REQ_INTERRUPT,
        PROTO_REQ_ADD,      PROTO_REQ_ASSIGN,   PROTO_REQ_REMOVE,   PROTO_REQ_DUMP,      PROTO_REQ_CLUSTER,
        PROTO_REQ_TRANSFER, PROTO_REQ_DESCRIBE, PROTO_REQ_WEIGHT};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        assert_int_not_equal(reqs[i], 2);
        assert_int_not_equal(reqs[i], 11);
        assert_in_range(reqs[i], 0, 19);
    }
}

typedef int (*param_enc_fn)(struct buf *out, const struct proto_value *params, unsigned n);

static int enc_exec_p(struct buf *out, const struct proto_value *params, unsigned n)
{
    return proto_enc_exec(out, 0, 1, params, n);
}

static int enc_query_p(struct buf *out, const struct proto_value *params, unsigned n)
{
    return proto_enc_query(out, 0, 1, params, n);
}

static int enc_exec_sql_p(struct buf *out, const struct proto_value *params, unsigned n)
{
    return proto_enc_exec_sql(out, 0, "INSERT INTO t VALUES(?)", params, n);
}

static int enc_query_sql_p(struct buf *out, const struct proto_value *params, unsigned n)
{
    return proto_enc_query_sql(out, 0, "SELECT ?", params, n);
}

static const param_enc_fn param_encoders[4] = {enc_exec_p, enc_query_p, enc_exec_sql_p, enc_query_sql_p};

static void test_refuse_too_many_params(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct proto_value *params = calloc(N, sizeof *params);
    assert_non_null(params);
    for (unsigned i = 0; i < N; i++) {
        params[i] = proto_int(i);
    }
    static const unsigned counts[] = {PROTO_MAX_PARAMS + 1, 257, 511, 512, N};
    for (size_t e = 0; e < 4; e++) {
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            struct buf out;
            prefill(&out);
            assert_int_equal(param_encoders[e](&out, params, counts[c]), GERR_REFUSED);
            expect_untouched(&out);
            buf_close(&out);
        }
    }
    free(params);
}

static void test_refuse_unixtime_param(void **state)
{
    (void)state;
    struct proto_value params[2] = {proto_int(1), {.type = PROTO_UNIXTIME, .u.i = 1700000000}};
    for (size_t e = 0; e < 4; e++) {
        struct buf out;
        prefill(&out);
        assert_int_equal(param_encoders[e](&out, params, 2), GERR_REFUSED);
        expect_untouched(&out);
        buf_close(&out);
    }
}

/* Type codes that do not exist (or that 1.11 cannot decode as params) never reach the wire. */
static void test_refuse_unknown_param_type(void **state)
{
    (void)state;
    static const int bad[] = {0, 6, 7, 8, 12, 15, 16, 255, 256, -1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct proto_value p = {.type = bad[i], .u.i = 0};
        for (size_t e = 0; e < 4; e++) {
            struct buf out;
            prefill(&out);
            int rc = param_encoders[e](&out, &p, 1);
            if (rc != GERR_INVAL && rc != GERR_REFUSED) {
                fail_msg("param type %d: encoder %zu returned %d (%s), want GERR_INVAL or GERR_REFUSED",
                         bad[i], e, rc, gerr_name(rc));
            }
            expect_untouched(&out);
            buf_close(&out);
        }
    }
}

/* C strings cannot carry a NUL, but a TEXT value built by hand with a length can. 1.11 reads text
 * with strnlen, so the tail after the NUL would be parsed as the next value: refuse. */
static void test_refuse_text_with_nul(void **state)
{
    (void)state;
    static const char with_nul[] = "ab\0cd";
    struct proto_value p = {.type = PROTO_TEXT, .u.b = {.s = with_nul, .n = 5}};
    struct proto_value iso = {.type = PROTO_ISO8601, .u.b = {.s = with_nul, .n = 5}};
    for (size_t e = 0; e < 4; e++) {
        struct buf out;
        prefill(&out);
        assert_int_equal(param_encoders[e](&out, &p, 1), GERR_REFUSED);
        expect_untouched(&out);
        int rc = param_encoders[e](&out, &iso, 1);
        assert_int_not_equal(rc, 0);
        expect_untouched(&out);
        buf_close(&out);
    }
    /* A blob may hold NULs: that is what blobs are for. */
    struct proto_value b = proto_blob(with_nul, 5);
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec(&out, 0, 1, &b, 1), 0);
    static const uint8_t body[] = {0, 0, 0, 0, 1, 0, 0, 0, 1,   PROTO_BLOB, 0, 0,   0,   0, 0, 0,
                                   5, 0, 0, 0, 0, 0, 0, 0, 'a', 'b',        0, 'c', 'd', 0, 0, 0};
    expect_msg(&out, PROTO_REQ_EXEC, body, sizeof body);
    buf_close(&out);
}

/* BOOLEAN and ISO8601 are legal 1.11 parameter types. Whether the encoder offers them is not fixed
 * by the header; if it accepts them, the bytes must be right. */
static void test_enc_boolean_iso8601_params(void **state)
{
    (void)state;
    struct proto_value p[2] = {{.type = PROTO_BOOLEAN, .u.i = 1},
                               {.type = PROTO_ISO8601, .u.b = {.s = "2026-11-23", .n = 10}}};
    struct buf out;
    prefill(&out);
    int rc = proto_enc_exec(&out, 0, 1, p, 2);
    if (rc != 0) {
        expect_untouched(&out);
        buf_close(&out);
        return;
    }
    struct buf want;
    buf_init(&want);
    buf_put_u32(&want, 0);
    buf_put_u32(&want, 1);
    put_params(&want, p, 2);
    assert_int_equal(out.len, sizeof prefill_bytes + 8 + want.len);
    expect_bytes(out.data + sizeof prefill_bytes + 8, want.len, want.data, want.len);
    buf_close(&want);
    buf_close(&out);
}

static void test_refuse_bad_arguments(void **state)
{
    (void)state;
    struct buf out;
    prefill(&out);
    assert_int_equal(proto_enc_assign(&out, 1, 3), GERR_INVAL);
    expect_untouched(&out);
    assert_int_equal(proto_enc_assign(&out, 1, -1), GERR_INVAL);
    expect_untouched(&out);
    /* n_params > 0 with no array. */
    assert_int_equal(proto_enc_exec(&out, 0, 1, NULL, 1), GERR_INVAL);
    expect_untouched(&out);
    assert_int_equal(proto_enc_exec_sql(&out, 0, "SELECT ?", NULL, 2), GERR_INVAL);
    expect_untouched(&out);
    /* A TEXT/BLOB param with no bytes but a length. */
    struct proto_value t = {.type = PROTO_TEXT, .u.b = {.s = NULL, .n = 3}};
    assert_int_not_equal(proto_enc_exec(&out, 0, 1, &t, 1), 0);
    expect_untouched(&out);
    struct proto_value bl = {.type = PROTO_BLOB, .u.b = {.s = NULL, .n = 3}};
    assert_int_not_equal(proto_enc_exec(&out, 0, 1, &bl, 1), 0);
    expect_untouched(&out);
    buf_close(&out);
}

/* Encoder-level refusal of writes sent as QUERY_SQL (1.11: the row is lost, then the leader aborts
 * on the next write on that connection). */
static const char *const write_sql[] = {
    "INSERT INTO t(a) VALUES (1) RETURNING id",
    "insert into t(a) values (1) returning id",
    "WITH x AS (SELECT 1 AS a) INSERT INTO t(a) SELECT a FROM x",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x RETURNING *",
    "UPDATE t SET a = 1",
    "update t set a = 1 returning a",
    "DELETE FROM t",
    "DELETE FROM t WHERE id = 1 RETURNING *",
    "REPLACE INTO t VALUES (1)",
    "SELECT 1; DELETE FROM t",
    "SELECT 1;DELETE FROM t",
    "SELECT 1; SELECT 2",
    "SELECT 'a'';' ; DELETE FROM t",
    "SELECT \"a\"\";\" FROM t; DROP TABLE t",
    "SELECT 1 -- comment\n; DELETE FROM t",
    "SELECT 1 /* c */; UPDATE t SET a = 2",
    "CREATE TABLE t (a INTEGER)",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN b TEXT",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "PRAGMA foreign_keys = OFF",
    "VACUUM",
    "ATTACH DATABASE 'x' AS y",
    "DETACH DATABASE y",
    "ANALYZE",
    "REINDEX",
    "SAVEPOINT a",
};

/* Not a statement at all: not read-only, and QUERY_SQL refuses them one way or another. */
static const char *const nonstatement_sql[] = {"", "   ", ";", "-- only a comment", "/* only a comment */"};

static const char *const read_sql[] = {
    "SELECT 1",
    "select 1",
    "SeLeCt 1",
    "  \n\tSELECT 1",
    "SELECT * FROM t WHERE id = ?",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "WITH RECURSIVE c(x) AS (VALUES(1) UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c",
    "VALUES (1), (2)",
    "values (1, 'a')",
    "SELECT 'delete from t' AS s",
    "SELECT 'it''s; DELETE FROM t' AS s",
    "SELECT 'update', 'insert', 'drop table t', 'returning' FROM t",
    "SELECT \"update\" FROM t",
    "SELECT \"delete\", \"insert\", \"returning\" FROM \"replace\"",
    "SELECT \"a\"\"; DELETE\" FROM t",
    "SELECT `delete` FROM t",
    "SELECT [update] FROM t",
    "SELECT 1 -- delete from t",
    "SELECT 1 -- ; DELETE FROM t",
    "SELECT /* ; drop table t */ 1",
    "/* leading comment */ SELECT 1",
    "-- leading line comment\nSELECT 1",
    "SELECT updated_at, deleted, insert_count, created_by FROM t",
    "SELECT x'44454c455445' AS blob",
    "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
    "SELECT 1;",
    "SELECT 1 ;  ",
    "SELECT 1; -- trailing comment",
    "SELECT 1; /* trailing */",
};

static void test_sql_is_read_only(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof read_sql / sizeof read_sql[0]; i++) {
        if (!proto_sql_is_read_only(read_sql[i])) {
            print_error("proto_sql_is_read_only(\"%s\") = false, want true\n", read_sql[i]);
            bad++;
        }
    }
    for (size_t i = 0; i < sizeof write_sql / sizeof write_sql[0]; i++) {
        if (proto_sql_is_read_only(write_sql[i])) {
            print_error("proto_sql_is_read_only(\"%s\") = true, want false\n", write_sql[i]);
            bad++;
        }
    }
    for (size_t i = 0; i < sizeof nonstatement_sql / sizeof nonstatement_sql[0]; i++) {
        if (proto_sql_is_read_only(nonstatement_sql[i])) {
            print_error("proto_sql_is_read_only(\"%s\") = true, want false\n", nonstatement_sql[i]);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* The same split, one statement per case, so that a failure names the exact input. These only
 * cover the safety-critical direction (a write must never pass). */
static void test_sql_writes_never_read_only(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof write_sql / sizeof write_sql[0]; i++) {
        if (proto_sql_is_read_only(write_sql[i])) {
            fail_msg("write passed as read-only: \"%s\"", write_sql[i]);
        }
    }
}

static void test_refuse_query_sql_write(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof write_sql / sizeof write_sql[0]; i++) {
        struct buf out;
        prefill(&out);
        int rc = proto_enc_query_sql(&out, 0, write_sql[i], NULL, 0);
        if (rc != GERR_REFUSED) {
            fail_msg("proto_enc_query_sql(\"%s\") = %d (%s), want GERR_REFUSED", write_sql[i], rc,
                     gerr_name(rc));
        }
        expect_untouched(&out);
        /* With params too. */
        struct proto_value p = proto_int(1);
        rc = proto_enc_query_sql(&out, 0, write_sql[i], &p, 1);
        assert_int_equal(rc, GERR_REFUSED);
        expect_untouched(&out);
        buf_close(&out);
    }
    for (size_t i = 0; i < sizeof nonstatement_sql / sizeof nonstatement_sql[0]; i++) {
        struct buf out;
        prefill(&out);
        int rc = proto_enc_query_sql(&out, 0, nonstatement_sql[i], NULL, 0);
        if (rc != GERR_REFUSED && rc != GERR_INVAL) {
            fail_msg("proto_enc_query_sql(\"%s\") = %d (%s), want GERR_REFUSED or GERR_INVAL",
                     nonstatement_sql[i], rc, gerr_name(rc));
        }
        expect_untouched(&out);
        buf_close(&out);
    }
}

static void test_query_sql_read_accepted(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof read_sql / sizeof read_sql[0]; i++) {
        struct buf out;
        buf_init(&out);
        int rc = proto_enc_query_sql(&out, 0, read_sql[i], NULL, 0);
        if (rc != 0) {
            print_error("proto_enc_query_sql(\"%s\") = %d (%s), want 0\n", read_sql[i], rc, gerr_name(rc));
            bad++;
        } else {
            struct buf want;
            buf_init(&want);
            buf_put_u64(&want, 0);
            put_text(&want, read_sql[i]);
            expect_msg_buf(&out, PROTO_REQ_QUERY_SQL, &want);
            buf_close(&want);
        }
        buf_close(&out);
    }
    assert_int_equal(bad, 0);
}

/* DDL screening: DATETIME/DATE/TIMESTAMP/BOOLEAN declared column types abort 1.11 leaders on read. */
static const char *const bad_ddl[] = {
    "CREATE TABLE t (a DATETIME)",
    "CREATE TABLE t (a datetime)",
    "create table t (a DateTime)",
    "CREATE TABLE t (a INTEGER, b DATE NOT NULL)",
    "CREATE TABLE t (a INTEGER, b date)",
    "CREATE TABLE t (id INTEGER PRIMARY KEY, ts TIMESTAMP DEFAULT 0)",
    "CREATE TABLE t (a timestamp)",
    "CREATE TABLE t (flag BOOLEAN)",
    "CREATE TABLE t (flag boolean NOT NULL DEFAULT 0)",
    "CREATE TABLE t(a DATETIME,b INTEGER)",
    "CREATE TABLE t(a INTEGER,b\tBOOLEAN)",
    "CREATE TABLE t(a INTEGER,\nb\nDATE\n)",
    "CREATE TABLE IF NOT EXISTS t (a TIMESTAMP)",
    "CREATE TEMP TABLE t (a DATE)",
    "CREATE TABLE \"a b\" (\"c d\" DATE)",
    "CREATE TABLE t ([x] boolean)",
    "CREATE TABLE t (`x` Timestamp)",
    "ALTER TABLE t ADD COLUMN c boolean",
    "ALTER TABLE t ADD COLUMN c DATETIME",
    "alter table t add column c date default 0",
    "ALTER TABLE t ADD c TIMESTAMP",
    "CREATE TABLE a (x INTEGER); CREATE TABLE b (y BOOLEAN)",
    /* A quoted type name is dequoted by SQLite (>= 3.37; Debian's dqlite uses 3.40.1):
     * sqlite3_column_decltype() then returns exactly DATETIME/BOOLEAN/DATE/TIMESTAMP. */
    "CREATE TABLE t (a \"DATETIME\")",
    "CREATE TABLE t (a 'BOOLEAN')",
    "CREATE TABLE t (a [DATE])",
    "CREATE TABLE t (a `TIMESTAMP`)",
    "CREATE TABLE t (id INTEGER PRIMARY KEY, a \"datetime\" NOT NULL)",
    "ALTER TABLE t ADD COLUMN c 'boolean'",
    "BEGIN; CREATE TABLE b (y DATE); COMMIT",
};

static const char *const good_ddl[] = {
    "CREATE TABLE t (a INTEGER, b REAL, c TEXT, d BLOB)",
    "CREATE TABLE t (created_date_ms INTEGER)",
    "CREATE TABLE t (date_ms INTEGER, is_boolean INTEGER, timestamp_ns INTEGER, datetime_text TEXT)",
    "CREATE TABLE t (a TEXT DEFAULT 'DATETIME')",
    "CREATE TABLE t (a TEXT NOT NULL DEFAULT 'BOOLEAN' CHECK (a <> 'DATE'))",
    "CREATE TABLE t (a INTEGER -- DATETIME\n)",
    "CREATE TABLE t (a /* BOOLEAN */ INTEGER)",
    "CREATE TABLE t (\"date\" INTEGER, \"timestamp\" TEXT)",
    "CREATE TABLE t (a TEXT DEFAULT (datetime('now')))",
    "ALTER TABLE t ADD COLUMN updated_date_ms INTEGER",
    "ALTER TABLE t ADD COLUMN note TEXT DEFAULT 'timestamp'",
    "INSERT INTO t VALUES ('BOOLEAN', 'DATE')",
    "INSERT INTO t (a) VALUES (datetime('now'))",
    "SELECT date('now'), datetime('now')",
    "UPDATE t SET note = 'DATETIME' WHERE id = 1",
    "CREATE INDEX t_created_date ON t (created_date_ms)",
    /* Function calls declare nothing (a type name followed by "(" is not an exact decltype either). */
    "CREATE VIEW v AS SELECT date(created_ms / 1000, 'unixepoch') AS day FROM t",
    "CREATE TRIGGER t_touch AFTER UPDATE ON t BEGIN UPDATE t SET note = datetime('now') WHERE id = NEW.id; "
    "END",
    "",
};

static void test_sql_check_ddl(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof bad_ddl / sizeof bad_ddl[0]; i++) {
        int rc = proto_sql_check_ddl(bad_ddl[i]);
        if (rc != GERR_REFUSED) {
            print_error("proto_sql_check_ddl(\"%s\") = %d, want GERR_REFUSED\n", bad_ddl[i], rc);
            bad++;
        }
    }
    for (size_t i = 0; i < sizeof good_ddl / sizeof good_ddl[0]; i++) {
        int rc = proto_sql_check_ddl(good_ddl[i]);
        if (rc != 0) {
            print_error("proto_sql_check_ddl(\"%s\") = %d, want 0\n", good_ddl[i], rc);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* The encoders that can carry DDL refuse it (safety direction only). EXEC_SQL runs it; QUERY_SQL
 * refuses it anyway as a write. */
static void test_refuse_bad_ddl_exec_sql(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof bad_ddl / sizeof bad_ddl[0]; i++) {
        struct buf out;
        prefill(&out);
        int rc = proto_enc_exec_sql(&out, 0, bad_ddl[i], NULL, 0);
        if (rc != GERR_REFUSED) {
            print_error("proto_enc_exec_sql(\"%s\") = %d (%s), want GERR_REFUSED\n", bad_ddl[i], rc,
                        gerr_name(rc));
            bad++;
        }
        buf_close(&out);
        prefill(&out);
        rc = proto_enc_query_sql(&out, 0, bad_ddl[i], NULL, 0);
        assert_int_equal(rc, GERR_REFUSED);
        expect_untouched(&out);
        buf_close(&out);
    }
    assert_int_equal(bad, 0);
}

/* PREPARE compiles DDL for a later EXEC, which then creates the column: proto.h lists the DDL check
 * among the encoder refusals, so PREPARE must refuse too. */
static void test_refuse_bad_ddl_prepare(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof bad_ddl / sizeof bad_ddl[0]; i++) {
        struct buf out;
        prefill(&out);
        int rc = proto_enc_prepare(&out, 0, bad_ddl[i]);
        if (rc != GERR_REFUSED) {
            print_error("proto_enc_prepare(\"%s\") = %d (%s), want GERR_REFUSED\n", bad_ddl[i], rc,
                        gerr_name(rc));
            bad++;
        }
        buf_close(&out);
    }
    assert_int_equal(bad, 0);
}

/* A refused EXEC_SQL/PREPARE leaves the buffer untouched, and good DDL goes through unchanged. */
static void test_ddl_encoders_untouched_and_pass(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_ddl / sizeof bad_ddl[0]; i++) {
        struct buf out;
        prefill(&out);
        if (proto_enc_exec_sql(&out, 0, bad_ddl[i], NULL, 0) != 0) {
            expect_untouched(&out);
        }
        buf_close(&out);
        prefill(&out);
        if (proto_enc_prepare(&out, 0, bad_ddl[i]) != 0) {
            expect_untouched(&out);
        }
        buf_close(&out);
    }
    struct buf out;
    buf_init(&out);
    assert_int_equal(proto_enc_exec_sql(&out, 0, "CREATE TABLE t (created_date_ms INTEGER)", NULL, 0), 0);
    struct buf want;
    buf_init(&want);
    buf_put_u64(&want, 0);
    put_text(&want, "CREATE TABLE t (created_date_ms INTEGER)");
    expect_msg_buf(&out, PROTO_REQ_EXEC_SQL, &want);
    buf_close(&want);
    buf_close(&out);
}

/* ------------------------------------------------------------------------------------------------
 * Decoders: helpers. */

/* A copy of @p in a heap block of exactly @n bytes, so that ASan flags reads past the end. */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n == 0 ? 1 : n);
    assert_non_null(c);
    if (n > 0) {
        memcpy(c, p, n);
    }
    return c;
}

static void errmsg_poison(char *errmsg)
{
    memset(errmsg, 'X', GERR_MSG_SIZE);
}

/* After an error the message must be set and terminated within GERR_MSG_SIZE. */
static void expect_errmsg(const char *errmsg)
{
    const char *nul = memchr(errmsg, '\0', GERR_MSG_SIZE);
    if (nul == NULL) {
        fail_msg("errmsg was not set (no NUL within GERR_MSG_SIZE)");
    }
    assert_true(nul > errmsg);
}

typedef int (*dec_fn)(const uint8_t *p, size_t n, char *errmsg);

static int dec_failure_w(const uint8_t *p, size_t n, char *errmsg)
{
    struct proto_failure f;
    int rc = proto_dec_failure(p, n, &f, errmsg);
    if (rc == 0) {
        assert_non_null(memchr(f.message, '\0', sizeof f.message));
    }
    return rc;
}

static int dec_server_w(const uint8_t *p, size_t n, char *errmsg)
{
    struct proto_server s;
    int rc = proto_dec_server(p, n, &s, errmsg);
    if (rc == 0) {
        assert_non_null(memchr(s.address, '\0', sizeof s.address));
    }
    return rc;
}

static int dec_welcome_w(const uint8_t *p, size_t n, char *errmsg)
{
    uint64_t hb;
    return proto_dec_welcome(p, n, &hb, errmsg);
}

static int dec_servers_w(const uint8_t *p, size_t n, char *errmsg)
{
    struct proto_node_info *nodes = NULL;
    unsigned count = 0;
    int rc = proto_dec_servers(p, n, &nodes, &count, errmsg);
    if (rc == 0) {
        for (unsigned i = 0; i < count; i++) {
            assert_non_null(memchr(nodes[i].address, '\0', sizeof nodes[i].address));
        }
        mem_free(nodes);
    }
    return rc;
}

static int dec_db_w(const uint8_t *p, size_t n, char *errmsg)
{
    uint32_t db;
    return proto_dec_db(p, n, &db, errmsg);
}

static int dec_stmt_w(const uint8_t *p, size_t n, char *errmsg)
{
    uint32_t db, stmt;
    uint64_t np;
    return proto_dec_stmt(p, n, &db, &stmt, &np, errmsg);
}

static int dec_result_w(const uint8_t *p, size_t n, char *errmsg)
{
    uint64_t a, b;
    return proto_dec_result(p, n, &a, &b, errmsg);
}

static int dec_empty_w(const uint8_t *p, size_t n, char *errmsg)
{
    return proto_dec_empty(p, n, errmsg);
}

static int dec_metadata_w(const uint8_t *p, size_t n, char *errmsg)
{
    uint64_t fd, w;
    return proto_dec_metadata(p, n, &fd, &w, errmsg);
}

static int dec_files_w(const uint8_t *p, size_t n, char *errmsg)
{
    struct proto_file files[2];
    return proto_dec_files(p, n, files, errmsg);
}

static int dec_rows_w(const uint8_t *p, size_t n, char *errmsg)
{
    struct proto_rows r;
    bool done = false;
    proto_rows_init(&r, 0);
    int rc = proto_dec_rows(p, n, &r, &done, errmsg);
    proto_rows_close(&r);
    return rc;
}

/* Decode @body from an exact-size copy and return the code; checks errmsg on failure. */
static int run_dec(dec_fn fn, const uint8_t *body, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    errmsg_poison(errmsg);
    uint8_t *copy = exact_copy(body, n);
    int rc = fn(copy, n, errmsg);
    free(copy);
    if (rc != 0) {
        expect_errmsg(errmsg);
    }
    return rc;
}

/* The full body decodes; every strict prefix is GERR_PROTO (and never crashes or reads past it). */
static void check_all_prefixes(const char *what, dec_fn fn, const uint8_t *body, size_t n)
{
    assert_int_equal(run_dec(fn, body, n), 0);
    for (size_t len = 0; len < n; len++) {
        int rc = run_dec(fn, body, len);
        if (rc != GERR_PROTO) {
            fail_msg("%s truncated to %zu of %zu bytes: got %d (%s), want GERR_PROTO", what, len, n, rc,
                     gerr_name(rc));
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Decoders: valid bodies. */

static void test_dec_failure(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, 2067);
    put_text(&b, "UNIQUE constraint failed: t.id");
    struct proto_failure f;
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(proto_dec_failure(b.data, b.len, &f, errmsg), 0);
    assert_int_equal(f.code, 2067);
    assert_string_equal(f.message, "UNIQUE constraint failed: t.id");
    check_all_prefixes("FAILURE", dec_failure_w, b.data, b.len);
    buf_close(&b);

    /* Empty message. */
    buf_init(&b);
    buf_put_u64(&b, 10250);
    put_text(&b, "");
    assert_int_equal(proto_dec_failure(b.data, b.len, &f, errmsg), 0);
    assert_int_equal(f.code, 10250);
    assert_string_equal(f.message, "");
    buf_close(&b);

    /* A message longer than the struct: a truncated, terminated copy. */
    char longmsg[400];
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    buf_init(&b);
    buf_put_u64(&b, 1);
    put_text(&b, longmsg);
    assert_int_equal(proto_dec_failure(b.data, b.len, &f, errmsg), 0);
    assert_int_equal(strlen(f.message), sizeof f.message - 1);
    assert_memory_equal(f.message, longmsg, sizeof f.message - 1);
    buf_close(&b);
}

static void test_dec_server(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, 3);
    put_text(&b, "127.0.0.1:9003");
    struct proto_server s;
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(proto_dec_server(b.data, b.len, &s, errmsg), 0);
    assert_int_equal(s.id, 3);
    assert_string_equal(s.address, "127.0.0.1:9003");
    check_all_prefixes("SERVER", dec_server_w, b.data, b.len);
    buf_close(&b);

    /* No leader known: id 0, empty address. */
    buf_init(&b);
    buf_put_u64(&b, 0);
    put_text(&b, "");
    assert_int_equal(proto_dec_server(b.data, b.len, &s, errmsg), 0);
    assert_int_equal(s.id, 0);
    assert_string_equal(s.address, "");
    buf_close(&b);

    /* An address longer than the struct must not overflow it (an error is the better answer: a
     * truncated leader address would be dialled). */
    char longaddr[600];
    memset(longaddr, '1', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    buf_init(&b);
    buf_put_u64(&b, 3);
    put_text(&b, longaddr);
    (void)run_dec(dec_server_w, b.data, b.len); /* the wrapper checks the copy is terminated */
    buf_close(&b);
}

static void test_dec_welcome(void **state)
{
    (void)state;
    static const uint8_t body[] = {0x98, 0x3a, 0, 0, 0, 0, 0, 0}; /* 15000 */
    uint64_t hb = 0;
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(proto_dec_welcome(body, sizeof body, &hb, errmsg), 0);
    assert_int_equal(hb, 15000);
    check_all_prefixes("WELCOME", dec_welcome_w, body, sizeof body);
}

static void test_dec_servers(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, 3);
    buf_put_u64(&b, 1);
    put_text(&b, "127.0.0.1:9001");
    buf_put_u64(&b, PROTO_ROLE_VOTER);
    buf_put_u64(&b, 2);
    put_text(&b, "127.0.0.1:9002"); /* 14 chars */
    buf_put_u64(&b, PROTO_ROLE_STANDBY);
    buf_put_u64(&b, UINT64_C(0x8000000000000001));
    put_text(&b, "10.0.0.1:1"); /* 10 chars */
    buf_put_u64(&b, PROTO_ROLE_SPARE);

    struct proto_node_info *nodes = NULL;
    unsigned n = 0;
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(proto_dec_servers(b.data, b.len, &nodes, &n, errmsg), 0);
    assert_int_equal(n, 3);
    assert_non_null(nodes);
    assert_int_equal(nodes[0].id, 1);
    assert_string_equal(nodes[0].address, "127.0.0.1:9001");
    assert_int_equal(nodes[0].role, PROTO_ROLE_VOTER);
    assert_int_equal(nodes[1].id, 2);
    assert_string_equal(nodes[1].address, "127.0.0.1:9002");
    assert_int_equal(nodes[1].role, PROTO_ROLE_STANDBY);
    assert_true(nodes[2].id == UINT64_C(0x8000000000000001));
    assert_string_equal(nodes[2].address, "10.0.0.1:1");
    assert_int_equal(nodes[2].role, PROTO_ROLE_SPARE);
    mem_free(nodes);
    check_all_prefixes("SERVERS", dec_servers_w, b.data, b.len);
    buf_close(&b);

    /* Zero servers. */
    buf_init(&b);
    buf_put_u64(&b, 0);
    nodes = NULL;
    assert_int_equal(proto_dec_servers(b.data, b.len, &nodes, &n, errmsg), 0);
    assert_int_equal(n, 0);
    mem_free(nodes);
    buf_close(&b);
}

static void test_dec_db_stmt_result_empty_metadata(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];

    static const uint8_t db[] = {0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0};
    uint32_t db_id = 99;
    assert_int_equal(proto_dec_db(db, sizeof db, &db_id, errmsg), 0);
    assert_int_equal(db_id, 0x01020304u);
    check_all_prefixes("DB", dec_db_w, db, sizeof db);

    static const uint8_t stmt[] = {0, 0, 0, 0, 0x07, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0};
    uint32_t sdb = 9, sid = 0;
    uint64_t np = 0;
    assert_int_equal(proto_dec_stmt(stmt, sizeof stmt, &sdb, &sid, &np, errmsg), 0);
    assert_int_equal(sdb, 0);
    assert_int_equal(sid, 7);
    assert_int_equal(np, 3);
    check_all_prefixes("STMT", dec_stmt_w, stmt, sizeof stmt);

    static const uint8_t result[] = {0x10, 0x27, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0};
    uint64_t last = 0, changes = 0;
    assert_int_equal(proto_dec_result(result, sizeof result, &last, &changes, errmsg), 0);
    assert_int_equal(last, 10000);
    assert_int_equal(changes, 1);
    check_all_prefixes("RESULT", dec_result_w, result, sizeof result);

    static const uint8_t empty[] = {0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(proto_dec_empty(empty, sizeof empty, errmsg), 0);
    check_all_prefixes("EMPTY", dec_empty_w, empty, sizeof empty);

    static const uint8_t meta[] = {0x05, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0, 0, 0, 0, 0, 0, 0};
    uint64_t fd = 0, w = 0;
    assert_int_equal(proto_dec_metadata(meta, sizeof meta, &fd, &w, errmsg), 0);
    assert_int_equal(fd, 5);
    assert_int_equal(w, 42);
    check_all_prefixes("METADATA", dec_metadata_w, meta, sizeof meta);
}

static void test_dec_files(void **state)
{
    (void)state;
    uint8_t page[24];
    for (size_t i = 0; i < sizeof page; i++) {
        page[i] = (uint8_t)(0xa0 + i);
    }
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, 2);
    put_text(&b, "gantry.db");
    buf_put_u64(&b, sizeof page);
    buf_append(&b, page, sizeof page);
    put_text(&b, "gantry.db-wal");
    buf_put_u64(&b, 0); /* no WAL */

    struct proto_file files[2];
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(proto_dec_files(b.data, b.len, files, errmsg), 0);
    assert_string_equal(files[0].name, "gantry.db");
    assert_int_equal(files[0].size, sizeof page);
    assert_ptr_equal(files[0].data, b.data + 8 + 16 + 8); /* points into the body, no copy */
    assert_memory_equal(files[0].data, page, sizeof page);
    assert_string_equal(files[1].name, "gantry.db-wal");
    assert_int_equal(files[1].size, 0);
    check_all_prefixes("FILES", dec_files_w, b.data, b.len);
    buf_close(&b);

    /* A nonexistent database: two empty files. */
    buf_init(&b);
    buf_put_u64(&b, 2);
    put_text(&b, "x");
    buf_put_u64(&b, 0);
    put_text(&b, "x-wal");
    buf_put_u64(&b, 0);
    assert_int_equal(proto_dec_files(b.data, b.len, files, errmsg), 0);
    assert_string_equal(files[0].name, "x");
    assert_string_equal(files[1].name, "x-wal");
    assert_int_equal(files[0].size + files[1].size, 0);
    buf_close(&b);
}

/* One row holding every value type a 1.11 server sends. */
static const char *const all_names[8] = {"i", "f", "t", "b", "n", "u", "iso", "bool"};
static const uint8_t all_blob[11] = {0, 1, 2, 0, 4, 5, 6, 7, 8, 9, 0};

static void all_types_row(struct proto_value v[8], int64_t k)
{
    v[0] = proto_int(-1000 - k);
    v[1] = proto_float(3.25 + (double)k);
    v[2] = proto_text(k % 2 == 0 ? "seven77" : "eight888");
    v[3] = proto_blob(all_blob, sizeof all_blob);
    v[4] = proto_null();
    v[5] = (struct proto_value){.type = PROTO_UNIXTIME, .u.i = 1700000000 + k};
    v[6] = (struct proto_value){.type = PROTO_ISO8601, .u.b = {.s = "2026-11-23T10:00:00Z", .n = 20}};
    v[7] = (struct proto_value){.type = PROTO_BOOLEAN, .u.i = k % 2};
}

static void check_all_types_row(const struct proto_rows *r, size_t row, int64_t k)
{
    const struct proto_value *v = proto_rows_at(r, row, 0);
    assert_int_equal(v->type, PROTO_INTEGER);
    assert_true(v->u.i == -1000 - k);
    v = proto_rows_at(r, row, 1);
    assert_int_equal(v->type, PROTO_FLOAT);
    assert_true(v->u.f == 3.25 + (double)k);
    v = proto_rows_at(r, row, 2);
    assert_int_equal(v->type, PROTO_TEXT);
    const char *want = k % 2 == 0 ? "seven77" : "eight888";
    assert_int_equal(v->u.b.n, strlen(want));
    assert_string_equal(v->u.b.s, want); /* NUL-terminated per the header */
    v = proto_rows_at(r, row, 3);
    assert_int_equal(v->type, PROTO_BLOB);
    assert_int_equal(v->u.b.n, sizeof all_blob);
    assert_memory_equal(v->u.b.s, all_blob, sizeof all_blob);
    v = proto_rows_at(r, row, 4);
    assert_int_equal(v->type, PROTO_NULL);
    v = proto_rows_at(r, row, 5);
    assert_int_equal(v->type, PROTO_UNIXTIME);
    assert_true(v->u.i == 1700000000 + k);
    v = proto_rows_at(r, row, 6);
    assert_int_equal(v->type, PROTO_ISO8601);
    assert_int_equal(v->u.b.n, 20);
    assert_string_equal(v->u.b.s, "2026-11-23T10:00:00Z");
    v = proto_rows_at(r, row, 7);
    assert_int_equal(v->type, PROTO_BOOLEAN);
    assert_true(v->u.i == k % 2);
}

/* A ROWS body with the all-types columns and rows k0 .. k0+nrows-1. */
static void build_all_types_rows(struct buf *b, int64_t k0, unsigned nrows, uint64_t marker)
{
    buf_init(b);
    put_row_names(b, all_names, 8);
    for (unsigned i = 0; i < nrows; i++) {
        struct proto_value v[8];
        all_types_row(v, k0 + i);
        put_row(b, v, 8);
    }
    buf_put_u64(b, marker);
}

/* Decode @b from an exact-size copy that is scribbled over and freed right after, so that decoded
 * values pointing into the input instead of the arena are caught. */
static int dec_rows_then_free(const struct buf *b, struct proto_rows *r, bool *done, char *errmsg)
{
    uint8_t *copy = exact_copy(b->data, b->len);
    int rc = proto_dec_rows(copy, b->len, r, done, errmsg);
    memset(copy, 0xaa, b->len);
    free(copy);
    return rc;
}

static void test_dec_rows_single_batch(void **state)
{
    (void)state;
    struct buf b;
    build_all_types_rows(&b, 0, 2, MARK_DONE);
    /* The builder itself: 8 names of one word, a one-word row header. */
    assert_int_equal(b.data[64 + 8], (PROTO_FLOAT << 4) | PROTO_INTEGER);

    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    proto_rows_init(&r, 0);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_true(done);
    assert_int_equal(r.n_cols, 8);
    for (unsigned i = 0; i < 8; i++) {
        assert_string_equal(r.cols[i], all_names[i]);
    }
    assert_int_equal(r.n_rows, 2);
    check_all_types_row(&r, 0, 0);
    check_all_types_row(&r, 1, 1);
    proto_rows_close(&r);

    check_all_prefixes("ROWS", dec_rows_w, b.data, b.len);
    buf_close(&b);
}

static void test_dec_rows_batches(void **state)
{
    (void)state;
    struct proto_rows r;
    bool done = true;
    char errmsg[GERR_MSG_SIZE];
    proto_rows_init(&r, 0);

    struct buf b;
    build_all_types_rows(&b, 0, 2, MARK_PART);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_false(done);
    assert_int_equal(r.n_rows, 2);
    buf_close(&b);

    build_all_types_rows(&b, 2, 1, MARK_PART);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_false(done);
    assert_int_equal(r.n_rows, 3);
    buf_close(&b);

    /* A PART batch can also carry no rows at all. */
    build_all_types_rows(&b, 0, 0, MARK_PART);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_false(done);
    assert_int_equal(r.n_rows, 3);
    buf_close(&b);

    /* A bigger batch, to force the value array and the arena to grow. */
    build_all_types_rows(&b, 3, 200, MARK_DONE);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_true(done);
    buf_close(&b);

    assert_int_equal(r.n_cols, 8);
    assert_int_equal(r.n_rows, 203);
    for (size_t i = 0; i < r.n_rows; i++) {
        check_all_types_row(&r, i, (int64_t)i);
    }
    for (unsigned i = 0; i < 8; i++) {
        assert_string_equal(r.cols[i], all_names[i]);
    }
    proto_rows_close(&r);

    /* Re-initialise after close and use again. */
    proto_rows_init(&r, 0);
    build_all_types_rows(&b, 0, 1, MARK_DONE);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_int_equal(r.n_rows, 1);
    check_all_types_row(&r, 0, 0);
    proto_rows_close(&r);
    buf_close(&b);
}

static void test_dec_rows_empty_result(void **state)
{
    (void)state;
    static const char *const names[2] = {"id", "a_longer_column_name"};
    struct buf b;
    buf_init(&b);
    put_row_names(&b, names, 2);
    buf_put_u64(&b, MARK_DONE);
    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    proto_rows_init(&r, 0);
    assert_int_equal(dec_rows_then_free(&b, &r, &done, errmsg), 0);
    assert_true(done);
    assert_int_equal(r.n_cols, 2);
    assert_int_equal(r.n_rows, 0);
    assert_string_equal(r.cols[0], "id");
    assert_string_equal(r.cols[1], "a_longer_column_name");
    proto_rows_close(&r);
    check_all_prefixes("ROWS (empty)", dec_rows_w, b.data, b.len);
    buf_close(&b);
}

/* Row headers: 1..16 columns take one word, 17..32 take two. Column types cycle so that the low and
 * high nibbles and the second header word are all exercised. */
static const int cycle_types[8] = {PROTO_INTEGER, PROTO_TEXT,    PROTO_FLOAT,    PROTO_NULL,
                                   PROTO_BLOB,    PROTO_BOOLEAN, PROTO_UNIXTIME, PROTO_ISO8601};

static struct proto_value cycle_value(unsigned col, unsigned row)
{
    static char texts[64][16];
    struct proto_value v;
    int t = cycle_types[col % 8];
    unsigned k = row * 32 + col;
    switch (t) {
    case PROTO_INTEGER:
    case PROTO_UNIXTIME:
        v = (struct proto_value){.type = t, .u.i = (int64_t)k * 1000};
        break;
    case PROTO_BOOLEAN:
        v = (struct proto_value){.type = t, .u.i = k % 2};
        break;
    case PROTO_FLOAT:
        v = proto_float((double)k + 0.5);
        break;
    case PROTO_NULL:
        v = proto_null();
        break;
    default: /* TEXT, ISO8601, BLOB */
        snprintf(texts[k % 64], sizeof texts[0], "v%u", k);
        v = (struct proto_value){.type = t, .u.b = {.s = texts[k % 64], .n = strlen(texts[k % 64])}};
        break;
    }
    return v;
}

static void check_ncols(unsigned ncols, size_t header_bytes)
{
    char names[40][16];
    const char *name_ptrs[40];
    for (unsigned c = 0; c < ncols; c++) {
        snprintf(names[c], sizeof names[c], "c%u", c);
        name_ptrs[c] = names[c];
    }
    struct buf b;
    buf_init(&b);
    put_row_names(&b, name_ptrs, ncols);
    size_t names_end = b.len;
    for (unsigned row = 0; row < 2; row++) {
        struct proto_value v[40];
        for (unsigned c = 0; c < ncols; c++) {
            v[c] = cycle_value(c, row);
        }
        put_row(&b, v, ncols);
        if (row == 0) {
            /* The builder's header size is the doc's: ceil(ncols/2) rounded up to 8. */
            assert_int_equal(round8((ncols + 1u) / 2u), header_bytes);
            for (size_t i = (ncols + 1) / 2; i < header_bytes; i++) {
                assert_int_equal(b.data[names_end + i], 0);
            }
        }
    }
    buf_put_u64(&b, MARK_DONE);

    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    proto_rows_init(&r, 0);
    int rc = dec_rows_then_free(&b, &r, &done, errmsg);
    if (rc != 0) {
        fail_msg("%u columns: rc %d (%s): %s", ncols, rc, gerr_name(rc), errmsg);
    }
    assert_true(done);
    assert_int_equal(r.n_cols, ncols);
    assert_int_equal(r.n_rows, 2);
    for (unsigned row = 0; row < 2; row++) {
        for (unsigned c = 0; c < ncols; c++) {
            struct proto_value want = cycle_value(c, row);
            const struct proto_value *got = proto_rows_at(&r, row, c);
            if (got->type != want.type) {
                fail_msg("%u columns, row %u col %u: type %d, want %d", ncols, row, c, got->type, want.type);
            }
            switch (want.type) {
            case PROTO_INTEGER:
            case PROTO_UNIXTIME:
            case PROTO_BOOLEAN:
                assert_true(got->u.i == want.u.i);
                break;
            case PROTO_FLOAT:
                assert_true(got->u.f == want.u.f);
                break;
            case PROTO_NULL:
                break;
            default:
                assert_int_equal(got->u.b.n, want.u.b.n);
                assert_memory_equal(got->u.b.s, want.u.b.s, want.u.b.n);
                break;
            }
        }
    }
    for (unsigned c = 0; c < ncols; c++) {
        assert_string_equal(r.cols[c], names[c]);
    }
    proto_rows_close(&r);
    check_all_prefixes("ROWS (ncols)", dec_rows_w, b.data, b.len);
    buf_close(&b);
}

static void test_dec_rows_header_padding(void **state)
{
    (void)state;
    check_ncols(1, 8);
    check_ncols(2, 8);
    check_ncols(15, 8);
    check_ncols(16, 8);
    check_ncols(17, 16);
    check_ncols(32, 16);
    check_ncols(33, 24);
}

static void test_dec_rows_max_columns(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, PROTO_MAX_COLUMNS);
    for (unsigned c = 0; c < PROTO_MAX_COLUMNS; c++) {
        put_text(&b, "c");
    }
    buf_append_zero(&b, PROTO_MAX_COLUMNS / 2); /* header: all type 0 nibbles, then fix below */
    size_t hdr = b.len - PROTO_MAX_COLUMNS / 2;
    for (unsigned c = 0; c < PROTO_MAX_COLUMNS; c++) {
        b.data[hdr + c / 2] |= (uint8_t)(c % 2 == 0 ? PROTO_NULL : PROTO_NULL << 4);
    }
    buf_append_zero(&b, 8u * PROTO_MAX_COLUMNS);
    buf_put_u64(&b, MARK_DONE);
    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    proto_rows_init(&r, 0);
    assert_int_equal(proto_dec_rows(b.data, b.len, &r, &done, errmsg), 0);
    assert_int_equal(r.n_cols, PROTO_MAX_COLUMNS);
    assert_int_equal(r.n_rows, 1);
    assert_int_equal(proto_rows_at(&r, 0, PROTO_MAX_COLUMNS - 1)->type, PROTO_NULL);
    proto_rows_close(&r);
    buf_close(&b);
}

/* One more column than the cap, with every byte present: GERR_TOOBIG ("exceeds a cap"). */
static void test_dec_rows_over_max_columns(void **state)
{
    (void)state;
    struct buf b;
    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    buf_init(&b);
    buf_put_u64(&b, PROTO_MAX_COLUMNS + 1);
    for (unsigned c = 0; c < PROTO_MAX_COLUMNS + 1; c++) {
        put_text(&b, "c");
    }
    buf_put_u64(&b, MARK_DONE);
    proto_rows_init(&r, 0);
    errmsg_poison(errmsg);
    int rc = proto_dec_rows(b.data, b.len, &r, &done, errmsg);
    proto_rows_close(&r);
    buf_close(&b);
    assert_int_equal(rc, GERR_TOOBIG);
    expect_errmsg(errmsg);
}

/* ------------------------------------------------------------------------------------------------
 * Decoders: hostile input. */

static int dec_rows_once(const struct buf *b, size_t max_bytes)
{
    struct proto_rows r;
    bool done = false;
    char errmsg[GERR_MSG_SIZE];
    errmsg_poison(errmsg);
    proto_rows_init(&r, max_bytes);
    uint8_t *copy = exact_copy(b->data, b->len);
    int rc = proto_dec_rows(copy, b->len, &r, &done, errmsg);
    free(copy);
    if (rc != 0) {
        expect_errmsg(errmsg);
    }
    proto_rows_close(&r);
    return rc;
}

static void expect_rows_rc(const char *what, const struct buf *b, int want)
{
    int rc = dec_rows_once(b, 0);
    if (rc != want) {
        fail_msg("ROWS %s: got %d (%s), want %s", what, rc, gerr_name(rc), gerr_name(want));
    }
}

static void expect_rows_error(const char *what, const struct buf *b)
{
    int rc = dec_rows_once(b, 0);
    if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
        fail_msg("ROWS %s: got %d (%s), want GERR_PROTO or GERR_TOOBIG", what, rc, gerr_name(rc));
    }
}

static void test_hostile_rows_counts(void **state)
{
    (void)state;
    struct buf b;

    /* ncols = 2^32: must not wrap to 0 in an unsigned and pass as an empty result. */
    buf_init(&b);
    buf_put_u64(&b, UINT64_C(1) << 32);
    buf_put_u64(&b, MARK_DONE);
    expect_rows_error("ncols=2^32", &b);
    buf_close(&b);

    /* ncols = 2^32 + 1 followed by a perfectly good 1-column result. */
    buf_init(&b);
    buf_put_u64(&b, (UINT64_C(1) << 32) + 1);
    put_text(&b, "a");
    struct proto_value one = proto_int(1);
    put_row(&b, &one, 1);
    buf_put_u64(&b, MARK_DONE);
    expect_rows_error("ncols=2^32+1", &b);
    buf_close(&b);

    static const uint64_t huge[] = {UINT64_C(1) << 63, UINT64_MAX, UINT64_MAX - 1, UINT64_C(1) << 31,
                                    (UINT64_C(1) << 61) + 1};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, huge[i]);
        put_text(&b, "a");
        buf_put_u64(&b, MARK_DONE);
        expect_rows_error("huge ncols", &b);
        buf_close(&b);
    }

    /* ncols = 0: a row would be 0 bytes long. A decoder that loops "until the marker" must still
     * terminate on a non-marker word. */
    buf_init(&b);
    buf_put_u64(&b, 0);
    buf_put_u64(&b, 1);
    buf_put_u64(&b, MARK_DONE);
    expect_rows_rc("ncols=0 then a non-marker", &b, GERR_PROTO);
    buf_close(&b);
    buf_init(&b);
    buf_put_u64(&b, 0);
    buf_put_u64(&b, MARK_DONE);
    int rc = dec_rows_once(&b, 0); /* 1.11 never sends it; either answer is fine, no hang, no leak */
    assert_true(rc == 0 || rc == GERR_PROTO);
    buf_close(&b);
}

static void test_hostile_rows_text_and_blob(void **state)
{
    (void)state;
    struct buf b;

    /* Unterminated column name filling the rest of the body. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    buf_append(&b, "abcdefghabcdefgh", 16);
    expect_rows_rc("unterminated column name", &b, GERR_PROTO);
    buf_close(&b);

    /* Unterminated column name followed by what looks like a marker. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    buf_append(&b, "abcdefgh", 8);
    buf_put_u64(&b, MARK_DONE);
    expect_rows_rc("unterminated column name before a marker", &b, GERR_PROTO);
    buf_close(&b);

    /* Unterminated TEXT value. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    put_text(&b, "t");
    buf_put_u64(&b, PROTO_TEXT);
    buf_append(&b, "abcdefghabcdefgh", 16);
    expect_rows_rc("unterminated text value", &b, GERR_PROTO);
    buf_close(&b);

    /* TEXT whose padding is not zero-filled to the word but ends the body mid-word. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    put_text(&b, "t");
    buf_put_u64(&b, PROTO_ISO8601);
    buf_append(&b, "abc", 4); /* "abc\0", then the body ends */
    expect_rows_rc("text ending mid-word", &b, GERR_PROTO);
    buf_close(&b);

    /* BLOB lengths larger than what remains, including values whose rounding overflows. */
    static const uint64_t lens[] = {17,
                                    64,
                                    UINT64_C(1) << 32,
                                    UINT64_C(1) << 62,
                                    UINT64_C(1) << 63,
                                    UINT64_MAX,
                                    UINT64_MAX - 6,
                                    UINT64_MAX - 7,
                                    UINT64_MAX - 8,
                                    (uint64_t)SIZE_MAX - 3};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 1);
        put_text(&b, "b");
        buf_put_u64(&b, PROTO_BLOB);
        buf_put_u64(&b, lens[i]);
        buf_append_zero(&b, 16);
        buf_put_u64(&b, MARK_DONE);
        int rc = dec_rows_once(&b, 0);
        if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
            fail_msg("ROWS blob length %" PRIu64 " with 16 bytes left: got %d (%s)", lens[i], rc,
                     gerr_name(rc));
        }
        buf_close(&b);
    }
}

static void test_hostile_rows_types_and_markers(void **state)
{
    (void)state;
    struct buf b;

    /* Type nibbles that are not value types. */
    static const uint8_t bad_types[] = {0, 6, 7, 8, 12, 13, 14, 15};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 1);
        put_text(&b, "x");
        buf_put_u64(&b, bad_types[i]);
        buf_put_u64(&b, 0);
        buf_put_u64(&b, MARK_DONE);
        char what[64];
        snprintf(what, sizeof what, "value type %u", bad_types[i]);
        expect_rows_rc(what, &b, GERR_PROTO);
        buf_close(&b);
    }

    /* Garbage where the end marker should be. */
    static const uint64_t garbage[] = {
        UINT64_C(0x00000000000000ff), /* first byte 0xff only: go-dqlite style would take it as DONE */
        UINT64_C(0x00000000000000ee), /* first byte 0xee only: would pass as PART */
        UINT64_C(0xffffffffffffff00), UINT64_C(0xeeeeeeeeeeeeee00), UINT64_C(0xeeeeeeeeeeeeeeef),
        UINT64_C(0xfffffffffffffffe), UINT64_C(0x0f0f0f0f0f0f0f0f),
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 1);
        put_text(&b, "x");
        struct proto_value v = proto_int(5);
        put_row(&b, &v, 1);
        buf_put_u64(&b, garbage[i]);
        char what[64];
        snprintf(what, sizeof what, "end marker 0x%016" PRIx64, garbage[i]);
        expect_rows_rc(what, &b, GERR_PROTO);
        buf_close(&b);
    }

    /* No end marker at all: the rows fill the body exactly. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    put_text(&b, "x");
    struct proto_value v = proto_int(5);
    put_row(&b, &v, 1);
    expect_rows_rc("missing end marker", &b, GERR_PROTO);
    buf_close(&b);
}

static void test_hostile_rows_batch_mismatch(void **state)
{
    (void)state;
    static const char *const two[2] = {"a", "b"};
    static const char *const three[3] = {"a", "b", "c"};
    static const char *const other[2] = {"a", "z"};
    struct proto_value vals[3] = {proto_int(1), proto_int(2), proto_int(3)};
    char errmsg[GERR_MSG_SIZE];
    bool done = true;

    struct buf first;
    buf_init(&first);
    put_row_names(&first, two, 2);
    put_row(&first, vals, 2);
    buf_put_u64(&first, MARK_PART);

    /* Column count changes in the second batch. */
    struct buf second;
    buf_init(&second);
    put_row_names(&second, three, 3);
    put_row(&second, vals, 3);
    buf_put_u64(&second, MARK_DONE);
    struct proto_rows r;
    proto_rows_init(&r, 0);
    assert_int_equal(proto_dec_rows(first.data, first.len, &r, &done, errmsg), 0);
    assert_false(done);
    errmsg_poison(errmsg);
    assert_int_equal(proto_dec_rows(second.data, second.len, &r, &done, errmsg), GERR_PROTO);
    expect_errmsg(errmsg);
    proto_rows_close(&r);
    buf_close(&second);

    /* Same count, different names. */
    buf_init(&second);
    put_row_names(&second, other, 2);
    put_row(&second, vals, 2);
    buf_put_u64(&second, MARK_DONE);
    proto_rows_init(&r, 0);
    assert_int_equal(proto_dec_rows(first.data, first.len, &r, &done, errmsg), 0);
    errmsg_poison(errmsg);
    assert_int_equal(proto_dec_rows(second.data, second.len, &r, &done, errmsg), GERR_PROTO);
    expect_errmsg(errmsg);
    proto_rows_close(&r);
    buf_close(&second);

    /* The second batch truncated at every offset, after a good first batch. */
    buf_init(&second);
    put_row_names(&second, two, 2);
    put_row(&second, vals, 2);
    put_row(&second, vals, 2);
    buf_put_u64(&second, MARK_DONE);
    for (size_t len = 0; len < second.len; len++) {
        proto_rows_init(&r, 0);
        assert_int_equal(proto_dec_rows(first.data, first.len, &r, &done, errmsg), 0);
        uint8_t *copy = exact_copy(second.data, len);
        errmsg_poison(errmsg);
        int rc = proto_dec_rows(copy, len, &r, &done, errmsg);
        free(copy);
        if (rc != GERR_PROTO) {
            fail_msg("second batch truncated to %zu of %zu: got %d (%s)", len, second.len, rc, gerr_name(rc));
        }
        proto_rows_close(&r);
    }
    buf_close(&second);
    buf_close(&first);
}

static void test_hostile_rows_max_bytes(void **state)
{
    (void)state;
    static const char *const names[1] = {"b"};
    uint8_t *big = calloc(1, 1000);
    assert_non_null(big);
    struct proto_value v = proto_blob(big, 1000);
    char errmsg[GERR_MSG_SIZE];
    bool done = false;

    struct buf b;
    buf_init(&b);
    put_row_names(&b, names, 1);
    put_row(&b, &v, 1);
    buf_put_u64(&b, MARK_DONE);
    /* One row over a small cap. */
    assert_int_equal(dec_rows_once(&b, 64), GERR_TOOBIG);
    /* Under the default cap (0 = PROTO_DEFAULT_MAX_RESULT) it is fine. */
    assert_int_equal(dec_rows_once(&b, 0), 0);
    assert_int_equal(dec_rows_once(&b, 4096), 0);
    buf_close(&b);

    /* Text counts too. */
    char *text = malloc(1001);
    assert_non_null(text);
    memset(text, 't', 1000);
    text[1000] = '\0';
    struct proto_value t = proto_text(text);
    buf_init(&b);
    put_row_names(&b, names, 1);
    put_row(&b, &t, 1);
    buf_put_u64(&b, MARK_DONE);
    assert_int_equal(dec_rows_once(&b, 500), GERR_TOOBIG);
    buf_close(&b);
    free(text);

    /* Across batches: each batch fits alone, the sum does not. */
    struct proto_value half = proto_blob(big, 600);
    buf_init(&b);
    put_row_names(&b, names, 1);
    put_row(&b, &half, 1);
    buf_put_u64(&b, MARK_PART);
    struct proto_rows r;
    proto_rows_init(&r, 1000);
    assert_int_equal(proto_dec_rows(b.data, b.len, &r, &done, errmsg), 0);
    errmsg_poison(errmsg);
    int rc = proto_dec_rows(b.data, b.len, &r, &done, errmsg);
    if (rc != GERR_TOOBIG) {
        fail_msg("two batches of 600 blob bytes against max_bytes 1000: got %d (%s), want GERR_TOOBIG", rc,
                 gerr_name(rc));
    }
    expect_errmsg(errmsg);
    proto_rows_close(&r);
    buf_close(&b);

    /* Many small fixed-size values add up as well: each costs memory in the result set. */
    buf_init(&b);
    put_row_names(&b, names, 1);
    struct proto_value i = proto_int(1);
    for (int k = 0; k < 2000; k++) {
        put_row(&b, &i, 1);
    }
    buf_put_u64(&b, MARK_DONE);
    assert_int_equal(dec_rows_once(&b, 1024), GERR_TOOBIG);
    buf_close(&b);
    free(big);
}

static void test_hostile_servers(void **state)
{
    (void)state;
    struct buf b;

    static const uint64_t huge[] = {UINT64_C(1) << 63, UINT64_MAX, UINT64_C(1) << 32, PROTO_MAX_SERVERS + 1u};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, huge[i]);
        buf_put_u64(&b, 1);
        put_text(&b, "127.0.0.1:9001");
        buf_put_u64(&b, 0);
        int rc = run_dec(dec_servers_w, b.data, b.len);
        if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
            fail_msg("SERVERS n=%" PRIu64 ": got %d (%s)", huge[i], rc, gerr_name(rc));
        }
        buf_close(&b);
    }

    /* Exactly at the cap is fine. */
    buf_init(&b);
    buf_put_u64(&b, PROTO_MAX_SERVERS);
    for (unsigned i = 0; i < PROTO_MAX_SERVERS; i++) {
        buf_put_u64(&b, i + 1);
        put_text(&b, "1.2.3.4:5");
        buf_put_u64(&b, PROTO_ROLE_SPARE);
    }
    assert_int_equal(run_dec(dec_servers_w, b.data, b.len), 0);
    buf_close(&b);

    /* Unterminated address. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    buf_put_u64(&b, 1);
    buf_append(&b, "127.0.0.1:9001xx127.0.0.1:9001xx", 32);
    assert_int_equal(run_dec(dec_servers_w, b.data, b.len), GERR_PROTO);
    buf_close(&b);

    /* A role that is not voter/standby/spare. */
    static const uint64_t roles[] = {3, 255, UINT64_C(1) << 32, UINT64_MAX};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 1);
        buf_put_u64(&b, 1);
        put_text(&b, "127.0.0.1:9001");
        buf_put_u64(&b, roles[i]);
        int rc = run_dec(dec_servers_w, b.data, b.len);
        if (rc != GERR_PROTO) {
            fail_msg("SERVERS role %" PRIu64 ": got %d (%s), want GERR_PROTO", roles[i], rc, gerr_name(rc));
        }
        buf_close(&b);
    }
}

/* More servers than the cap, every byte present: GERR_TOOBIG ("exceeds a cap"). */
static void test_hostile_servers_over_cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, PROTO_MAX_SERVERS + 1u);
    for (unsigned i = 0; i < PROTO_MAX_SERVERS + 1u; i++) {
        buf_put_u64(&b, i + 1);
        put_text(&b, "1.2.3.4:5");
        buf_put_u64(&b, PROTO_ROLE_SPARE);
    }
    int rc = run_dec(dec_servers_w, b.data, b.len);
    buf_close(&b);
    assert_int_equal(rc, GERR_TOOBIG);
}

static void test_hostile_failure_server_files(void **state)
{
    (void)state;
    struct buf b;

    /* FAILURE with an unterminated message. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    buf_append(&b, "abcdefghabcdefgh", 16);
    assert_int_equal(run_dec(dec_failure_w, b.data, b.len), GERR_PROTO);
    buf_close(&b);

    /* SERVER with an unterminated address. */
    buf_init(&b);
    buf_put_u64(&b, 1);
    buf_append(&b, "1.2.3.4:", 8);
    assert_int_equal(run_dec(dec_server_w, b.data, b.len), GERR_PROTO);
    buf_close(&b);

    /* FILES: wrong file counts. */
    static const uint64_t counts[] = {0, 1, 3, UINT64_C(1) << 63, UINT64_MAX};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, counts[i]);
        for (int f = 0; f < 3; f++) {
            put_text(&b, "x");
            buf_put_u64(&b, 0);
        }
        int rc = run_dec(dec_files_w, b.data, b.len);
        if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
            fail_msg("FILES n=%" PRIu64 ": got %d (%s)", counts[i], rc, gerr_name(rc));
        }
        buf_close(&b);
    }

    /* FILES: sizes beyond the body, including ones that overflow pointer arithmetic. */
    static const uint64_t sizes[] = {24,         1000,          UINT64_C(1) << 40, UINT64_C(1) << 63,
                                     UINT64_MAX, UINT64_MAX - 7};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 2);
        put_text(&b, "x");
        buf_put_u64(&b, sizes[i]);
        buf_append_zero(&b, 16);
        put_text(&b, "x-wal");
        buf_put_u64(&b, 0);
        int rc = run_dec(dec_files_w, b.data, b.len);
        if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
            fail_msg("FILES size %" PRIu64 ": got %d (%s)", sizes[i], rc, gerr_name(rc));
        }
        buf_close(&b);
    }
    /* Same for the second file. */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        buf_init(&b);
        buf_put_u64(&b, 2);
        put_text(&b, "x");
        buf_put_u64(&b, 8);
        buf_append_zero(&b, 8);
        put_text(&b, "x-wal");
        buf_put_u64(&b, sizes[i]);
        buf_append_zero(&b, 16);
        int rc = run_dec(dec_files_w, b.data, b.len);
        if (rc != GERR_PROTO && rc != GERR_TOOBIG) {
            fail_msg("FILES second size %" PRIu64 ": got %d (%s)", sizes[i], rc, gerr_name(rc));
        }
        buf_close(&b);
    }
}

/* Every decoder, fed every short garbage body: never crashes, never reads past the end. */
static void test_hostile_all_decoders_short_garbage(void **state)
{
    (void)state;
    static const dec_fn fns[] = {dec_failure_w,  dec_server_w, dec_welcome_w, dec_servers_w,
                                 dec_db_w,       dec_stmt_w,   dec_result_w,  dec_empty_w,
                                 dec_metadata_w, dec_files_w,  dec_rows_w};
    uint8_t body[48];
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    for (int round = 0; round < 400; round++) {
        for (size_t i = 0; i < sizeof body; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body[i] = (uint8_t)x;
        }
        /* Small counts often, so that the parsers get past the first word. */
        if (round % 2 == 0) {
            memset(body + 1, 0, 7);
            body[0] %= 4;
        }
        for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
            for (size_t len = 0; len <= sizeof body; len += 4) {
                int rc = run_dec(fns[f], body, len);
                assert_true(rc == 0 || rc == GERR_PROTO || rc == GERR_TOOBIG);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_constructors),
        cmocka_unit_test(test_header_decode),
        cmocka_unit_test(test_enc_leader),
        cmocka_unit_test(test_enc_client),
        cmocka_unit_test(test_enc_open),
        cmocka_unit_test(test_enc_prepare),
        cmocka_unit_test(test_enc_exec_no_params),
        cmocka_unit_test(test_enc_query_no_params),
        cmocka_unit_test(test_enc_finalize),
        cmocka_unit_test(test_enc_exec_sql_doc_example),
        cmocka_unit_test(test_enc_exec_sql_all_param_types),
        cmocka_unit_test(test_enc_params_every_encoder),
        cmocka_unit_test(test_enc_text_param_padding),
        cmocka_unit_test(test_enc_tuple_header_padding),
        cmocka_unit_test(test_enc_255_params),
        cmocka_unit_test(test_enc_interrupt),
        cmocka_unit_test(test_enc_add),
        cmocka_unit_test(test_enc_assign),
        cmocka_unit_test(test_enc_remove),
        cmocka_unit_test(test_enc_dump),
        cmocka_unit_test(test_enc_cluster),
        cmocka_unit_test(test_enc_transfer),
        cmocka_unit_test(test_enc_describe),
        cmocka_unit_test(test_enc_weight),
        cmocka_unit_test(test_enc_appends),
        cmocka_unit_test(test_enc_boolean_iso8601_params),
        cmocka_unit_test(test_refuse_no_empty_body_no_unknown_type),
        cmocka_unit_test(test_refuse_request_enum),
        cmocka_unit_test(test_refuse_too_many_params),
        cmocka_unit_test(test_refuse_unixtime_param),
        cmocka_unit_test(test_refuse_unknown_param_type),
        cmocka_unit_test(test_refuse_text_with_nul),
        cmocka_unit_test(test_refuse_bad_arguments),
        cmocka_unit_test(test_sql_is_read_only),
        cmocka_unit_test(test_sql_writes_never_read_only),
        cmocka_unit_test(test_refuse_query_sql_write),
        cmocka_unit_test(test_query_sql_read_accepted),
        cmocka_unit_test(test_sql_check_ddl),
        cmocka_unit_test(test_refuse_bad_ddl_exec_sql),
        cmocka_unit_test(test_refuse_bad_ddl_prepare),
        cmocka_unit_test(test_ddl_encoders_untouched_and_pass),
        cmocka_unit_test(test_dec_failure),
        cmocka_unit_test(test_dec_server),
        cmocka_unit_test(test_dec_welcome),
        cmocka_unit_test(test_dec_servers),
        cmocka_unit_test(test_dec_db_stmt_result_empty_metadata),
        cmocka_unit_test(test_dec_files),
        cmocka_unit_test(test_dec_rows_single_batch),
        cmocka_unit_test(test_dec_rows_batches),
        cmocka_unit_test(test_dec_rows_empty_result),
        cmocka_unit_test(test_dec_rows_header_padding),
        cmocka_unit_test(test_dec_rows_max_columns),
        cmocka_unit_test(test_dec_rows_over_max_columns),
        cmocka_unit_test(test_hostile_rows_counts),
        cmocka_unit_test(test_hostile_rows_text_and_blob),
        cmocka_unit_test(test_hostile_rows_types_and_markers),
        cmocka_unit_test(test_hostile_rows_batch_mismatch),
        cmocka_unit_test(test_hostile_rows_max_bytes),
        cmocka_unit_test(test_hostile_servers),
        cmocka_unit_test(test_hostile_servers_over_cap),
        cmocka_unit_test(test_hostile_failure_server_files),
        cmocka_unit_test(test_hostile_all_decoders_short_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
