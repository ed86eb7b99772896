/* libFuzzer harness for api/services/session_route.h's decoder: what a peer sends over a routed
 * session's connection (frames of a kind byte and a payload), and the messages in them as either
 * end decodes them (the HEADER's ForwardRequest and the call's first message in it, END's
 * ForwardResponse, MSG's Logs/Exec/PortForward requests and responses).
 *
 * Input: the first byte chooses how the rest is cut into reads (1 to 256 bytes each), as a socket
 * would deliver it; the rest is the stream. Payloads are copied into heap blocks of exactly their
 * size so ASan sees any overread.
 *
 * Promises checked (abort() on a broken one): sroute_reader_next answers 0, GERR_BUSY or
 * GERR_PROTO; a frame's kind is one of the four and its payload at most SROUTE_MAX_FRAME - 1
 * bytes; after GERR_PROTO the stream is not read on (the connection is dropped); a frame appended
 * again with sroute_frame_append reads back as the same kind and bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/forward/fwd.h"
#include "api/services/session_route.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/err.h"
#include "lib/mem.h"

static void decode_all(int kind, const uint8_t *p, size_t n)
{
    if (kind == SROUTE_HEADER) {
        fwd_request *h = fwd_request_decode(p, n);
        if (h != NULL) {
            if (strlen(h->method) + strlen(h->sandbox_id) == SIZE_MAX) {
                abort();
            }
            Gantry__V1__ExecRequest *x =
                gantry__v1__exec_request__unpack(NULL, h->request.len, h->request.data);
            if (x != NULL) {
                gantry__v1__exec_request__free_unpacked(x, NULL);
            }
            Gantry__V1__LogsRequest *l =
                gantry__v1__logs_request__unpack(NULL, h->request.len, h->request.data);
            if (l != NULL) {
                gantry__v1__logs_request__free_unpacked(l, NULL);
            }
            gantry__internal__v1__forward_request__free_unpacked(h, NULL);
        }
    } else if (kind == SROUTE_END) {
        fwd_response *r = fwd_response_decode(p, n);
        if (r != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(r, NULL);
        }
    } else if (kind == SROUTE_MSG) {
        ProtobufCMessage *m[5] = {(ProtobufCMessage *)gantry__v1__log_chunk__unpack(NULL, n, p),
                                  (ProtobufCMessage *)gantry__v1__exec_request__unpack(NULL, n, p),
                                  (ProtobufCMessage *)gantry__v1__exec_response__unpack(NULL, n, p),
                                  (ProtobufCMessage *)gantry__v1__port_forward_request__unpack(NULL, n, p),
                                  (ProtobufCMessage *)gantry__v1__port_forward_response__unpack(NULL, n, p)};
        for (int i = 0; i < 5; i++) {
            if (m[i] != NULL) {
                protobuf_c_message_free_unpacked(m[i], NULL);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t cut = (size_t)data[0] + 1;
    data++;
    size--;
    struct sroute_reader r = {0};
    buf_init(&r.b);
    bool dropped = false;
    for (size_t off = 0; off < size && !dropped;) {
        size_t n = size - off < cut ? size - off : cut;
        sroute_reader_feed(&r, data + off, n);
        off += n;
        for (;;) {
            int kind = 0;
            const uint8_t *p = NULL;
            size_t len = 0;
            int rv = sroute_reader_next(&r, &kind, &p, &len);
            if (rv == GERR_BUSY) {
                break;
            }
            if (rv == GERR_PROTO) {
                dropped = true;
                break;
            }
            if (rv != 0 || len > SROUTE_MAX_FRAME - 1 ||
                (kind != SROUTE_HEADER && kind != SROUTE_STARTED && kind != SROUTE_MSG &&
                 kind != SROUTE_END)) {
                abort();
            }
            uint8_t *copy = mem_alloc(len + 1);
            memcpy(copy, p, len);
            decode_all(kind, copy, len);
            /* Round trip of the framing: the same bytes as a frame read back alike. */
            struct buf b;
            buf_init(&b);
            uint8_t hdr[5] = {(uint8_t)((len + 1) >> 24), (uint8_t)((len + 1) >> 16),
                              (uint8_t)((len + 1) >> 8), (uint8_t)(len + 1), (uint8_t)kind};
            buf_append(&b, hdr, 5);
            buf_append(&b, copy, len);
            struct sroute_reader again = {0};
            buf_init(&again.b);
            sroute_reader_feed(&again, b.data, b.len);
            int k2 = 0;
            const uint8_t *p2 = NULL;
            size_t l2 = 0;
            if (sroute_reader_next(&again, &k2, &p2, &l2) != 0 || k2 != kind || l2 != len ||
                memcmp(p2, copy, len) != 0) {
                abort();
            }
            sroute_reader_close(&again);
            buf_close(&b);
            mem_free(copy);
        }
    }
    sroute_reader_close(&r);
    return 0;
}
