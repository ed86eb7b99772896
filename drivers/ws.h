/* A WebSocket client (RFC 6455), just what the kubernetes driver's exec and port-forward need:
 * the opening handshake with subprotocol negotiation, masked client frames, reassembly of
 * fragmented messages, ping answered with pong, the closing handshake, and a payload limit.
 *
 * Two layers:
 *  - pure functions over bytes (ws_frame_decode, ws_reader_*, ws_frame_encode, ws_accept_for,
 *    ws_handshake_check): no I/O, so the tests and tests/fuzz/fuzz_ws.c drive them directly;
 *  - struct ws_conn: one connection to the API server over libcurl (CURLOPT_CONNECT_ONLY: curl
 *    does TCP and TLS with the driver's settings, verified as for every request; the HTTP/1.1
 *    upgrade and the frames are ours: Debian's libcurl 7.88 has no WebSocket support).
 *
 * What is refused (GERR_PROTO unless said): a frame with RSV bits set, an unknown opcode (3-7,
 * 11-15), a masked frame from the server (RFC 6455 5.1), a length not in its shortest form or with
 * the top bit set, a control frame over 125 bytes or fragmented, a continuation with no message
 * begun or a new data frame inside one, a close payload of 1 byte or with a code that may not be
 * sent; a frame or message payload over the reader's limit is GERR_TOOBIG. Text messages are not
 * checked for UTF-8 (the Kubernetes channel protocols send binary). */
#ifndef GANTRY_DRIVERS_WS_H
#define GANTRY_DRIVERS_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/k8s_http.h"
#include "lib/buf.h"
#include "lib/err.h"

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xa,
};

#define WS_CONTROL_MAX 125u
#define WS_HEAD_MAX    (16u * 1024u) /* the server's handshake response head */

struct ws_frame {
    bool fin;
    uint8_t opcode;
    const uint8_t *payload; /* into the decoded bytes (server frames are never masked) */
    size_t len;
};

/* Decode the frame at the start of @p (@len bytes): 0 with *@f and *@used (the frame's bytes);
 * GERR_BUSY when more bytes are needed; GERR_PROTO or GERR_TOOBIG (payload over @max) as above. */
int ws_frame_decode(const uint8_t *p, size_t len, size_t max, struct ws_frame *f, size_t *used);

/* Append one frame to @b: @fin, @opcode, @n bytes of @p masked with @mask (a client's frames are
 * always masked; NULL @mask sends it unmasked, for tests playing a server). */
void ws_frame_encode(struct buf *b, uint8_t opcode, bool fin, const void *p, size_t n, const uint8_t mask[4]);

/* Messages from a byte stream: feed what arrives, take whole messages. */
struct ws_reader {
    struct buf in;  /* bytes not yet decoded */
    struct buf msg; /* a fragmented data message being reassembled */
    uint8_t msg_op; /* its opcode; 0: none begun */
    size_t max;     /* the largest message (and frame) payload */
    size_t consumed;
};
void ws_reader_init(struct ws_reader *r, size_t max);
void ws_reader_close(struct ws_reader *r);
void ws_reader_feed(struct ws_reader *r, const void *p, size_t n);
/* The next whole message: 0 with *@op (TEXT, BINARY, CLOSE, PING or PONG) and *@data, *@n (valid
 * until the next call); GERR_BUSY when none is complete yet; GERR_PROTO, GERR_TOOBIG (the stream
 * is unusable after these). A CLOSE's payload has been checked (empty, or a code that may be
 * sent and a reason). */
int ws_reader_next(struct ws_reader *r, uint8_t *op, const uint8_t **data, size_t *n);

/* Sec-WebSocket-Accept for the key @key: base64(SHA-1(key + the RFC's GUID)), 28 chars + NUL. */
void ws_accept_for(const char *key, char out[29]);

/* Check the server's response head @p (@len bytes, which may hold frames after it): GERR_BUSY
 * while "\r\n\r\n" has not arrived (GERR_TOOBIG past WS_HEAD_MAX). Otherwise *@status is the
 * HTTP status and *@used the head's length; for 101, 0 when Upgrade: websocket, Connection:
 * Upgrade and Sec-WebSocket-Accept for @key are there and Sec-WebSocket-Protocol is one of
 * @protocols (NULL-terminated; copied into @proto, "" when @protocols is empty and the server
 * chose none), else GERR_PROTO naming what is wrong. Another status is 0 with *@status set and
 * *@content_length (-1 if absent) so the caller can read the body. */
int ws_handshake_check(const char *p, size_t len, const char *key, const char *const *protocols, long *status,
                       long *content_length, char proto[64], size_t *used, char *errmsg);

/* ---- A connection */
struct ws_conn;

/* Connect to @hc's server (TLS as k8s_http: verified against ca_file, client certificate, bearer
 * token read now) and upgrade GET @path offering @protocols. 0 with *@out and @proto when the
 * server switched protocols. A refusal (any other HTTP status) is 0 with *@out NULL, *@status
 * and the body (at most 64 KiB) in @body. Transport failures as k8s_http_err_from_curl; a bad
 * handshake GERR_PROTO. @timeout_ms bounds the connect and the handshake. */
int ws_connect(const struct k8s_http_config *hc, const char *path, const char *const *protocols,
               unsigned timeout_ms, size_t max_message, struct ws_conn **out, char proto[64], long *status,
               struct buf *body, char *errmsg);

/* The socket to poll(2) for reading (owned by the connection). */
int ws_fd(struct ws_conn *c);

/* Send one whole message (one frame, masked with fresh random bytes) after whatever ws_queue left
 * unsent, waiting for the socket as needed (bounded by 30 s). GERR_CLOSED, GERR_IO, GERR_TIMEOUT. */
int ws_send(struct ws_conn *c, uint8_t opcode, const void *p, size_t n, char *errmsg);

/* The same without waiting: the frame is queued behind the unsent ones and the socket is given
 * what it takes now; the rest goes with later ws_flush (poll ws_fd for POLLOUT while ws_unsent is
 * above 0), ws_queue or ws_send calls. The queue is unbounded: the caller stops producing while
 * ws_unsent is above its own bound. 0, GERR_CLOSED (the connection failed or closed), GERR_IO. */
int ws_queue(struct ws_conn *c, uint8_t opcode, const void *p, size_t n, char *errmsg);
int ws_flush(struct ws_conn *c, char *errmsg);
size_t ws_unsent(const struct ws_conn *c);

/* Read what the socket has now (never blocks) and return the next data message: 0 with *@op
 * (TEXT or BINARY) and *@data, *@n (valid until the next call); GERR_BUSY when none is complete
 * (poll ws_fd and call again); GERR_CLOSED once the server closed (its close answered) or the
 * connection ended; GERR_PROTO, GERR_TOOBIG, GERR_IO. Pings are answered here. */
int ws_recv(struct ws_conn *c, uint8_t *op, const uint8_t **data, size_t *n, char *errmsg);

/* Send what is queued and a close frame (best effort, at most about 2 s each while the server takes
 * nothing) and release everything. NULL is fine. */
void ws_close(struct ws_conn *c);

#endif
