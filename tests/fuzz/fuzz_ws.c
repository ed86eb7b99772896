/* libFuzzer harness for drivers/ws.h: what a WebSocket server (the Kubernetes API server, or
 * anything in between) sends the kubernetes driver.
 *
 * Input layout: byte 0 selects ((byte - '0') % 4, so the seeds in corpus/ws/ start with a digit):
 *   0: a byte stream of frames, fed to a reader (limit 4096) in pieces whose sizes come from byte 1
 *      (1..256 bytes each), every message taken as it completes;
 *   1: the server's handshake response head, checked against a fixed key and offered protocols;
 *   2: an exec status message (channel 3: k8s_exec_status_decode, drivers/k8s_sessions.h);
 *   3: a line of the pod log API with its timestamp (k8s_log_stamp, drivers/k8s_sessions.h).
 * Besides "no crash, no leak, no overread", the harness checks the header's promises: the reader
 * answers 0, GERR_BUSY, GERR_PROTO or GERR_TOOBIG; a message is TEXT, BINARY, CLOSE, PING or
 * PONG within the limit (a control one within 125 bytes); a data message re-encoded decodes to
 * itself; the handshake answers 0, GERR_BUSY, GERR_PROTO or GERR_TOOBIG and, on 0 with 101, a
 * protocol that was offered; the status decoder answers 0 (a code 0..255, or -1 with a printable
 * message) or GERR_PROTO; the stamp parser answers 0 (a non-negative time, a length within the
 * line) or GERR_PROTO. A broken promise calls abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/k8s_sessions.h"
#include "drivers/ws.h"

#define LIMIT 4096u

static void stream(const uint8_t *p, size_t len)
{
    if (len < 1) {
        return;
    }
    size_t piece = (size_t)p[0] + 1;
    p++, len--;
    struct ws_reader r;
    ws_reader_init(&r, LIMIT);
    for (size_t at = 0; at < len;) {
        size_t n = len - at < piece ? len - at : piece;
        uint8_t *copy = malloc(n);
        memcpy(copy, p + at, n);
        ws_reader_feed(&r, copy, n);
        free(copy);
        at += n;
        for (;;) {
            uint8_t op;
            const uint8_t *data;
            size_t dn;
            int rv = ws_reader_next(&r, &op, &data, &dn);
            if (rv == GERR_BUSY) {
                break;
            }
            if (rv == GERR_PROTO || rv == GERR_TOOBIG) {
                ws_reader_close(&r);
                return;
            }
            if (rv != 0 || dn > LIMIT) {
                abort();
            }
            if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
                struct buf b;
                struct ws_frame f;
                size_t used;
                buf_init(&b);
                ws_frame_encode(&b, op, true, data, dn, NULL);
                if (ws_frame_decode(b.data, b.len, LIMIT, &f, &used) != 0 || used != b.len || f.len != dn ||
                    f.opcode != op || (dn > 0 && memcmp(f.payload, data, dn) != 0)) {
                    abort();
                }
                buf_close(&b);
            } else if (op == WS_OP_CLOSE || op == WS_OP_PING || op == WS_OP_PONG) {
                if (dn > WS_CONTROL_MAX) {
                    abort();
                }
            } else {
                abort();
            }
        }
    }
    ws_reader_close(&r);
}

static void handshake(const uint8_t *p, size_t len)
{
    static const char *const protos[] = {"v5.channel.k8s.io", "v4.channel.k8s.io", NULL};
    char proto[64], errmsg[GERR_MSG_SIZE];
    long status, clen;
    size_t used;
    char *copy = malloc(len + 1);
    memcpy(copy, p, len);
    int rv = ws_handshake_check(copy, len, "dGhlIHNhbXBsZSBub25jZQ==", protos, &status, &clen, proto, &used,
                                errmsg);
    if (rv != 0 && rv != GERR_BUSY && rv != GERR_PROTO && rv != GERR_TOOBIG) {
        abort();
    }
    if (rv == 0 && (used > len || status < 100 || status > 599)) {
        abort();
    }
    if (rv == 0 && status == 101 && strcmp(proto, protos[0]) != 0 && strcmp(proto, protos[1]) != 0) {
        abort();
    }
    free(copy);
}

static void exec_status(const uint8_t *p, size_t len)
{
    char msg[96];
    int code;
    char *copy = malloc(len + 1);
    memcpy(copy, p, len);
    int rv = k8s_exec_status_decode(copy, len, &code, msg, sizeof msg);
    if (rv != 0 && rv != GERR_PROTO) {
        abort();
    }
    if (rv == 0 && (code < -1 || code > 255)) {
        abort();
    }
    if (rv == 0 && code == -1) {
        for (const char *q = msg; *q != '\0'; q++) {
            if (*q < 0x20 || *q > 0x7e) {
                abort();
            }
        }
    }
    free(copy);
}

static void log_stamp(const uint8_t *p, size_t len)
{
    char *copy = malloc(len + 1);
    memcpy(copy, p, len);
    int64_t ns;
    size_t used;
    int rv = k8s_log_stamp(copy, len, &ns, &used);
    if (rv != 0 && rv != GERR_PROTO) {
        abort();
    }
    if (rv == 0 && (ns < 0 || used > len || used < 20)) {
        abort();
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch ((unsigned)(data[0] - '0') % 4u) {
    case 0:
        stream(data + 1, size - 1);
        break;
    case 1:
        handshake(data + 1, size - 1);
        break;
    case 2:
        exec_status(data + 1, size - 1);
        break;
    default:
        log_stamp(data + 1, size - 1);
        break;
    }
    return 0;
}
