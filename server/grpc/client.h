/* A small blocking gRPC client (HTTP/2 with nghttp2 over TLS with OpenSSL, or h2c): what gantryd
 * needs to join a cluster and what the gantry CLI and gantry-bench call the API with.
 *
 * One client is one connection to one target; calls on it are sequential (not thread-safe). A
 * call sends one request message and receives zero or more response messages, handed one by one
 * to a callback, then the status from the trailers. A call may stream more request messages after
 * the first (bidi) from an input the caller sets (grpc_client_set_input).
 *
 * Trust, in order of preference:
 *   ca_pem / ca_file      the server's chain must verify against this CA;
 *   pin_sha256            "sha256:<64 hex>": the server must present, in its chain, a certificate
 *                         with this fingerprint, and the leaf must verify against it (how a joiner
 *                         checks the cluster CA from its join token, as kubeadm does);
 *   insecure              no verification (only for tools, never by default).
 * server_name, when set, is sent as SNI and checked against the leaf's DNS/IP names.
 *
 * Errors (return values): GERR_INVAL (bad config or target), GERR_CLOSED / GERR_REFUSED /
 * GERR_TIMEOUT (transport), GERR_PERM (the server's certificate failed verification), GERR_PROTO
 * (an HTTP/2 or gRPC framing violation, a response that does not decode); @errmsg says which.
 * A call that completed at the gRPC level returns 0 and puts the gRPC status in *@status. */
#ifndef GANTRY_SERVER_GRPC_CLIENT_H
#define GANTRY_SERVER_GRPC_CLIENT_H

/* "sha256:" + 64 hex digits + NUL: the size of a pinned fingerprint (raft/pki.h computes the
 * same form as PKI_FINGERPRINT_SIZE). */
#define GRPC_CLIENT_PIN_SIZE 72

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/err.h"

struct grpc_client;

struct grpc_client_config {
    const char *target;      /* "host:port" or "[v6]:port"; host may be a DNS name */
    const char *ca_pem;      /* PEM text of the CA to trust, or NULL */
    const char *ca_file;     /* or a file holding it, or NULL */
    const char *pin_sha256;  /* or a pinned CA fingerprint, or NULL */
    bool insecure;           /* or nothing (tools only) */
    const char *server_name; /* SNI and name check, or NULL */
    const char *cert_file;   /* client certificate (mTLS), or NULL */
    const char *key_file;
    bool h2c;                    /* plaintext HTTP/2 */
    unsigned connect_timeout_ms; /* 0 = 5000 */
    uint32_t max_message_bytes;  /* largest response message; 0 = 64 MiB */
};

/* Connect and handshake. On error *@out is untouched. */
int grpc_client_connect(const struct grpc_client_config *cfg, struct grpc_client **out, char *errmsg);

/* One metadata entry ("authorization", "Bearer ..."). */
struct grpc_client_md {
    const char *key;
    const char *value;
};

/* Called for each response message, unpacked with @resp (freed after the callback returns). A
 * non-zero return cancels the call (RST_STREAM) and becomes the call's return value. */
typedef int (*grpc_client_msg_cb)(const ProtobufCMessage *msg, void *arg);

struct grpc_client_result {
    int status;                  /* grpc-status, or -1 when the call did not complete */
    char message[GERR_MSG_SIZE]; /* grpc-message, percent-decoded */
    unsigned n_messages;
    /* x-gantry-revision (the revision a model-served Get answered at, api/services/model_read.h),
     * 0 when the server sent none. */
    uint64_t revision;
};

/* Call @path ("/gantry.v1.Cluster/Join") with @req, within @timeout_ms (sent as grpc-timeout
 * too; 0 = no deadline). The connection stays usable after a call that completed. */
int grpc_client_call(struct grpc_client *c, const char *path, const struct grpc_client_md *md, size_t n_md,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
                     grpc_client_msg_cb cb, void *arg, unsigned timeout_ms, struct grpc_client_result *result,
                     char *errmsg);

/* Unary convenience: the single response is unpacked into *@out (free with
 * protobuf_c_message_free_unpacked) when the status is OK; NULL otherwise. */
int grpc_client_unary(struct grpc_client *c, const char *path, const struct grpc_client_md *md, size_t n_md,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
                      unsigned timeout_ms, ProtobufCMessage **out, struct grpc_client_result *result,
                      char *errmsg);

/* Streaming requests for the NEXT call only (grpc_client_call sends @req first, then these). While
 * the call runs, @produce is called on the calling thread when @fd (-1: none) is readable
 * (@fd_ready true) and every @tick_ms (false): it appends framed request messages
 * (grpc_client_frame) to @out, and sets *@eof when no more will come (the client then half-closes).
 * It is not called while more than 1 MiB it produced waits for the server's window, so a server
 * that stops reading stops the caller's input too. A nonzero return cancels the call and becomes
 * its return value. @in is borrowed for the call. */
struct buf;
struct grpc_client_input {
    int fd;
    int (*produce)(void *arg, bool fd_ready, struct buf *out, bool *eof);
    void *arg;
    unsigned tick_ms; /* 0 = 100 */
};
void grpc_client_set_input(struct grpc_client *c, const struct grpc_client_input *in);

/* Append @msg to @out as one gRPC message (the 5-byte prefix, then the packed bytes). */
void grpc_client_frame(struct buf *out, const ProtobufCMessage *msg);

void grpc_client_close(struct grpc_client *c);

#endif
