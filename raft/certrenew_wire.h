/* The bytes of a certificate renewal between replicas (docs/security.md, "Certificate renewal").
 *
 * A replica without the CA key dials a member's peer port with the ALPN CERTRENEW_ALPN; the
 * member's relay (raft/peertls.h) hands the connection to its renewal service, first telling it
 * the caller's verified certificate fingerprint in one header line. Then, over that connection:
 *
 *   request   "GANTRY-RENEW/1\n", u32 length + the CSR (PEM), u32 length + the caller's current
 *             certificate (PEM)
 *   response  u8 status (0, or a GERR_* code), u32 length + the new certificate (PEM) on 0, or
 *             a message saying why not
 *
 * Lengths are big-endian; each text is at most CERTRENEW_WIRE_MAX_PEM bytes (a message at most
 * GERR_MSG_SIZE - 1). The decoders are pure and take the bytes read so far (fuzzed by
 * tests/fuzz/fuzz_certrenew_wire.c). */
#ifndef GANTRY_RAFT_CERTRENEW_WIRE_H
#define GANTRY_RAFT_CERTRENEW_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "raft/pki.h"

#define CERTRENEW_ALPN          "gantry-renew/1"
#define CERTRENEW_WIRE_MAGIC    "GANTRY-RENEW/1\n"
#define CERTRENEW_WIRE_MAX_PEM  16384u
#define CERTRENEW_WIRE_MAX_REQ  (128u + sizeof CERTRENEW_WIRE_MAGIC + 8u + 2u * CERTRENEW_WIRE_MAX_PEM)
#define CERTRENEW_WIRE_MAX_RESP (5u + CERTRENEW_WIRE_MAX_PEM)

/* A decoded request; the strings are heap copies, NUL-terminated (certrenew_wire_request_free). */
struct certrenew_wire_request {
    char peer_fp[PKI_FINGERPRINT_SIZE]; /* from the relay's header line */
    char *csr_pem;
    char *cert_pem;
};

/* Decode what the service has read: the relay's header line, then the request. Returns 0 with
 * @out filled when @buf holds a whole request (*@used: its length), GERR_CLOSED when more bytes
 * are needed (@out untouched), GERR_PROTO for bytes that can never become a request (a bad header,
 * magic, length over the maximum, or a NUL inside a PEM), with @errmsg. */
int certrenew_wire_request_decode(const uint8_t *buf, size_t len, struct certrenew_wire_request *out,
                                  size_t *used, char *errmsg);
void certrenew_wire_request_free(struct certrenew_wire_request *r);

/* The caller's request, appended to @out (without the relay's header line). */
void certrenew_wire_request_encode(const char *csr_pem, const char *cert_pem, struct buf *out);

/* A response, appended to @out: @status 0 with the certificate as @text, or a GERR_* code with a
 * message. */
void certrenew_wire_response_encode(int status, const char *text, struct buf *out);

/* Decode a response: 0 when @buf holds a whole one (*@status, *@text a heap copy: mem_free),
 * GERR_CLOSED when more bytes are needed, GERR_PROTO when it can never be one. */
int certrenew_wire_response_decode(const uint8_t *buf, size_t len, int *status, char **text, char *errmsg);

#endif
