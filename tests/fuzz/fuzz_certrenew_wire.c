/* libFuzzer harness for the certificate renewal's bytes (raft/certrenew_wire.h): a CA holder's
 * renewal service decodes requests from any member whose certificate the relay verified, and a
 * renewing replica decodes the answer of any member it asks.
 *
 * Checks besides "no crash, no overread": a decoded request's fingerprint has the documented form,
 * its texts hold no NUL and fit the maximum, the length used is within the input, and re-encoding
 * the request (after the relay's header) gives back exactly the bytes used; a response that needs
 * more bytes still does with one byte less. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/mem.h"
#include "raft/certrenew_wire.h"
#include "raft/peertls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > CERTRENEW_WIRE_MAX_REQ + 16) {
        return 0;
    }
    char errmsg[GERR_MSG_SIZE];
    struct certrenew_wire_request req = {.csr_pem = NULL};
    size_t used = 0;
    int rv = certrenew_wire_request_decode(data, size, &req, &used, errmsg);
    if (rv == 0) {
        size_t hl = sizeof PEERTLS_PEER_HEADER - 1 + PKI_FINGERPRINT_SIZE;
        if (used > size || used < hl || strlen(req.peer_fp) != PKI_FINGERPRINT_SIZE - 1 ||
            strncmp(req.peer_fp, "sha256:", 7) != 0 || strlen(req.csr_pem) > CERTRENEW_WIRE_MAX_PEM ||
            strlen(req.cert_pem) > CERTRENEW_WIRE_MAX_PEM) {
            abort();
        }
        struct buf again;
        buf_init(&again);
        certrenew_wire_request_encode(req.csr_pem, req.cert_pem, &again);
        if (again.len != used - hl || memcmp(again.data, data + hl, again.len) != 0) {
            abort();
        }
        buf_close(&again);
        certrenew_wire_request_free(&req);
    } else if (rv != GERR_CLOSED && rv != GERR_PROTO) {
        abort();
    }
    int status = 0;
    char *text = NULL;
    rv = certrenew_wire_response_decode(data, size, &status, &text, errmsg);
    if (rv == 0) {
        if (status < 0 || status > GERR_STALE || text == NULL || strlen(text) > CERTRENEW_WIRE_MAX_PEM) {
            abort();
        }
        mem_free(text);
    } else if (rv == GERR_CLOSED && size > 0) {
        if (certrenew_wire_response_decode(data, size - 1, &status, &text, errmsg) != GERR_CLOSED) {
            abort();
        }
    } else if (rv != GERR_CLOSED && rv != GERR_PROTO) {
        abort();
    }
    return 0;
}
