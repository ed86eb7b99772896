/* The WebSocket client's pure layer (drivers/ws.h): frames, hostile ones, reassembly, the
 * opening handshake's checks. The connection itself is exercised end to end by
 * driver_k8s_sessions against the fake API server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "drivers/ws.h"

#define MAX 1024u

/* Decode @len bytes of @p as the only input of a fresh reader. */
static int one(const uint8_t *p, size_t len, uint8_t *op, size_t *n)
{
    struct ws_reader r;
    const uint8_t *data;
    ws_reader_init(&r, MAX);
    ws_reader_feed(&r, p, len);
    int rv = ws_reader_next(&r, op, &data, n);
    ws_reader_close(&r);
    return rv;
}

static void test_frames(void **state)
{
    (void)state;
    struct ws_frame f;
    size_t used, n;
    uint8_t op;
    /* Unmasked from the server is how it must be. */
    const uint8_t hello[] = {0x82, 0x05, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(ws_frame_decode(hello, sizeof hello, MAX, &f, &used), 0);
    assert_true(f.fin);
    assert_int_equal(f.opcode, WS_OP_BINARY);
    assert_int_equal(f.len, 5);
    assert_memory_equal(f.payload, "hello", 5);
    assert_int_equal(used, sizeof hello);
    /* Truncated anywhere: more is needed, nothing is taken. */
    for (size_t i = 0; i < sizeof hello; i++) {
        assert_int_equal(ws_frame_decode(hello, i, MAX, &f, &used), GERR_BUSY);
        assert_int_equal(used, 0);
    }
    /* Masked from the server: refused. */
    const uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 'x'};
    assert_int_equal(one(masked, sizeof masked, &op, &n), GERR_PROTO);
    /* Reserved bits, unknown opcodes. */
    const uint8_t rsv[] = {0xc2, 0x00};
    assert_int_equal(one(rsv, sizeof rsv, &op, &n), GERR_PROTO);
    for (uint8_t bad = 3; bad <= 15; bad++) {
        if (bad >= 8 && bad <= 10) {
            continue;
        }
        const uint8_t b[] = {(uint8_t)(0x80 | bad), 0x00};
        assert_int_equal(one(b, sizeof b, &op, &n), GERR_PROTO);
    }
    /* Oversized: over the limit with a 16-bit and a 64-bit length, and the 64-bit top bit. */
    const uint8_t big16[] = {0x82, 126, 0x04, 0x01};
    assert_int_equal(one(big16, sizeof big16, &op, &n), GERR_TOOBIG);
    const uint8_t big64[] = {0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0};
    assert_int_equal(one(big64, sizeof big64, &op, &n), GERR_TOOBIG);
    const uint8_t top[] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(one(top, sizeof top, &op, &n), GERR_PROTO);
    /* Lengths not in their shortest form. */
    const uint8_t long16[] = {0x82, 126, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(one(long16, sizeof long16, &op, &n), GERR_PROTO);
    const uint8_t long64[] = {0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(one(long64, sizeof long64, &op, &n), GERR_PROTO);
    /* Control frames: over 125 bytes, fragmented. */
    const uint8_t bigping[] = {0x89, 126, 0x00, 0x7e};
    assert_int_equal(one(bigping, sizeof bigping, &op, &n), GERR_PROTO);
    const uint8_t fragping[] = {0x09, 0x00};
    assert_int_equal(one(fragping, sizeof fragping, &op, &n), GERR_PROTO);
    /* Close payloads: 1 byte, a code that may not be sent; a good one. */
    const uint8_t close1[] = {0x88, 0x01, 0x03};
    assert_int_equal(one(close1, sizeof close1, &op, &n), GERR_PROTO);
    const uint8_t close1005[] = {0x88, 0x02, 0x03, 0xed};
    assert_int_equal(one(close1005, sizeof close1005, &op, &n), GERR_PROTO);
    const uint8_t close1000[] = {0x88, 0x04, 0x03, 0xe8, 'o', 'k'};
    assert_int_equal(one(close1000, sizeof close1000, &op, &n), 0);
    assert_int_equal(op, WS_OP_CLOSE);
    assert_int_equal(n, 4);
    /* Continuations: of nothing; a new message inside one. */
    const uint8_t cont[] = {0x80, 0x01, 'x'};
    assert_int_equal(one(cont, sizeof cont, &op, &n), GERR_PROTO);
    const uint8_t twice[] = {0x02, 0x01, 'a', 0x82, 0x01, 'b'};
    assert_int_equal(one(twice, sizeof twice, &op, &n), GERR_PROTO);
}

static void test_reassembly(void **state)
{
    (void)state;
    struct ws_reader r;
    const uint8_t *data;
    size_t n;
    uint8_t op;
    struct buf b;
    buf_init(&b);
    ws_frame_encode(&b, WS_OP_BINARY, false, "hel", 3, NULL);
    ws_frame_encode(&b, WS_OP_PING, true, "p", 1, NULL); /* a control frame between fragments */
    ws_frame_encode(&b, WS_OP_CONT, false, "lo ", 3, NULL);
    ws_frame_encode(&b, WS_OP_CONT, true, "world", 5, NULL);
    ws_frame_encode(&b, WS_OP_TEXT, true, "", 0, NULL);
    ws_reader_init(&r, MAX);
    /* Byte by byte: nothing before its last byte. */
    size_t i = 0;
    int rv;
    for (; i < b.len; i++) {
        ws_reader_feed(&r, b.data + i, 1);
        rv = ws_reader_next(&r, &op, &data, &n);
        if (rv == 0) {
            break;
        }
        assert_int_equal(rv, GERR_BUSY);
    }
    assert_int_equal(op, WS_OP_PING);
    assert_int_equal(n, 1);
    for (i++; i < b.len; i++) {
        ws_reader_feed(&r, b.data + i, 1);
        if ((rv = ws_reader_next(&r, &op, &data, &n)) == 0) {
            break;
        }
        assert_int_equal(rv, GERR_BUSY);
    }
    assert_int_equal(op, WS_OP_BINARY);
    assert_int_equal(n, 11);
    assert_memory_equal(data, "hello world", 11);
    ws_reader_feed(&r, b.data + i + 1, b.len - i - 1);
    assert_int_equal(ws_reader_next(&r, &op, &data, &n), 0);
    assert_int_equal(op, WS_OP_TEXT);
    assert_int_equal(n, 0);
    assert_int_equal(ws_reader_next(&r, &op, &data, &n), GERR_BUSY);
    ws_reader_close(&r);

    /* Fragments that together pass the limit. */
    uint8_t part[600];
    memset(part, 'x', sizeof part);
    buf_reset(&b);
    ws_frame_encode(&b, WS_OP_BINARY, false, part, sizeof part, NULL);
    ws_frame_encode(&b, WS_OP_CONT, true, part, sizeof part, NULL);
    ws_reader_init(&r, MAX);
    ws_reader_feed(&r, b.data, b.len);
    assert_int_equal(ws_reader_next(&r, &op, &data, &n), GERR_TOOBIG);
    ws_reader_close(&r);

    /* A client frame is masked: the mask bit and key are there and the payload is not in clear. */
    static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
    buf_reset(&b);
    ws_frame_encode(&b, WS_OP_BINARY, true, "abcd", 4, mask);
    assert_int_equal(b.len, 2 + 4 + 4);
    assert_int_equal(b.data[1], 0x80 | 4);
    assert_memory_equal(b.data + 2, mask, 4);
    assert_int_equal(b.data[6], 'a' ^ 0x11);
    assert_int_equal(b.data[9], 'd' ^ 0x44);
    /* 16- and 64-bit lengths round-trip (unmasked, as a server sends). */
    static uint8_t large[70000];
    buf_reset(&b);
    ws_frame_encode(&b, WS_OP_BINARY, true, large, 300, NULL);
    ws_frame_encode(&b, WS_OP_BINARY, true, large, sizeof large, NULL);
    struct ws_frame f;
    size_t used;
    assert_int_equal(ws_frame_decode(b.data, b.len, sizeof large, &f, &used), 0);
    assert_int_equal(f.len, 300);
    assert_int_equal(ws_frame_decode(b.data + used, b.len - used, sizeof large, &f, &used), 0);
    assert_int_equal(f.len, sizeof large);
    buf_close(&b);
}

static void test_handshake(void **state)
{
    (void)state;
    char accept[29], proto[64], errmsg[GERR_MSG_SIZE];
    long status, clen;
    size_t used;
    /* RFC 6455 section 1.3's example. */
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", accept);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const char *const protos[] = {"v5.channel.k8s.io", "v4.channel.k8s.io", NULL};
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n\x82\x00";
    size_t oklen = strlen(ok) + 1; /* with the frame's 0x00 */
    assert_int_equal(ws_handshake_check(ok, oklen, key, protos, &status, &clen, proto, &used, errmsg), 0);
    assert_int_equal(status, 101);
    assert_string_equal(proto, "v4.channel.k8s.io");
    assert_int_equal(used, oklen - 2);
    /* Not yet complete. */
    assert_int_equal(ws_handshake_check(ok, 40, key, protos, &status, &clen, proto, &used, errmsg),
                     GERR_BUSY);
    /* A wrong accept, a protocol not offered, no protocol, no upgrade. */
    const char *bad[] = {
        "HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
        "HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: v3.channel.k8s.io\r\n\r\n",
        "HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 X\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
        "HTTP/1.0 101 X\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            ws_handshake_check(bad[i], strlen(bad[i]), key, protos, &status, &clen, proto, &used, errmsg),
            GERR_PROTO);
    }
    /* A refusal: its status and body length for the caller. */
    const char *refused =
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n{";
    assert_int_equal(
        ws_handshake_check(refused, strlen(refused), key, protos, &status, &clen, proto, &used, errmsg), 0);
    assert_int_equal(status, 403);
    assert_int_equal(clen, 42);
    /* A head that never ends. */
    static char endless[WS_HEAD_MAX + 10];
    memset(endless, 'a', sizeof endless);
    assert_int_equal(
        ws_handshake_check(endless, sizeof endless, key, protos, &status, &clen, proto, &used, errmsg),
        GERR_TOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_reassembly),
        cmocka_unit_test(test_handshake),
    };
    return cmocka_run_group_tests_name("driver_ws", tests, NULL, NULL);
}
