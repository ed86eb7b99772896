/* Routing a session (Sandboxes.Logs, Exec, PortForward) to the replica that can reach its sandbox,
 * over the peer mutual-TLS channel (docs/sessions.md, "Where a session runs").
 *
 * The receiving replica (the forwarder) has authenticated and authorized the call, found that its
 * own driver has no record of the sandbox, and asks the other replicas in turn: it dials each one's
 * peer port with the ALPN SROUTE_ALPN (the peer TLS relay hands such connections to this
 * replica's session server on a private abstract socket; only peers with a certificate of the
 * cluster CA get there, and the server accepts connections from its own process only), sends a
 * HEADER frame, and waits for STARTED (that replica serves it) or END (it does not: NOT_FOUND means
 * "no record here, try the next one"). One session per connection.
 *
 * Frames, both ways: a 4-byte big-endian length (of what follows), a kind byte, the payload; at
 * most SROUTE_MAX_FRAME bytes.
 *   HEADER  (forwarder -> target, first) a packed ForwardRequest: method, the call's first message
 *           packed in request, the principal (for logs), the client's address, origin_replica and
 *           sandbox_id. The target trusts it: it does not authenticate or authorize again.
 *   STARTED (target -> forwarder) empty: the driver started the session.
 *   MSG     a packed message of the method: requests (ExecRequest, PortForwardRequest) from the
 *           forwarder, responses (LogChunk, ExecResponse, PortForwardResponse) from the target.
 *   END     (target -> forwarder, last) a packed ForwardResponse with the gRPC status and message.
 * The forwarder ends a session early (revocation, the client gone) by closing the connection;
 * the target then ends the command as a cancelled call does. A connection that ends without END
 * means the target is gone: the forwarder answers UNAVAILABLE.
 *
 * Flow control: each side writes frames with blocking writes (in slices, so a stop is noticed)
 * and reads only what it can pass on: the target stops reading the command's output while its
 * write waits, the forwarder stops reading frames while its client's unsent output is above
 * SESSIONS_SEND_BOUND, and stops taking the client's input (grpc_call_pause_input) while its
 * frames for the target wait. Nothing is buffered without bound on either replica.
 *
 * The authorization of a routed session stays with the forwarder: it checks the credential, the
 * principal and the share every second as for its own sessions and cuts the connection when one
 * fails. The session is audited once, by the forwarder, naming the serving replica. */
#ifndef GANTRY_API_SERVICES_SESSION_ROUTE_H
#define GANTRY_API_SERVICES_SESSION_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include <protobuf-c/protobuf-c.h>

#define SROUTE_ALPN      "gantry-sess/1"
#define SROUTE_MAX_FRAME (1u << 20)

enum sroute_kind { SROUTE_HEADER = 'h', SROUTE_STARTED = 's', SROUTE_MSG = 'm', SROUTE_END = 'e' };

/* Reassembles frames from a non-blocking descriptor. */
struct sroute_reader {
    struct buf b;
    size_t used; /* bytes of b consumed by frames returned */
};

/* The decoder of the peer's bytes (fuzzed by tests/fuzz/fuzz_session_route.c): feed @n bytes. */
void sroute_reader_feed(struct sroute_reader *r, const uint8_t *data, size_t n);

/* Read what @fd has now into @r: 0, GERR_CLOSED (end of stream) or GERR_IO. */
int sroute_reader_fill(struct sroute_reader *r, int fd);

/* The next whole frame: 0 with *@kind and @payload (@len bytes, valid until the next call),
 * GERR_BUSY (not complete yet), GERR_PROTO (over SROUTE_MAX_FRAME, an unknown kind, or an empty
 * frame: the connection must be dropped). */
int sroute_reader_next(struct sroute_reader *r, int *kind, const uint8_t **payload, size_t *len);

void sroute_reader_close(struct sroute_reader *r);

/* Wait up to @timeout_ms for the next whole frame from @fd (non-blocking): as sroute_reader_next,
 * or GERR_TIMEOUT, GERR_CLOSED, GERR_IO. */
int sroute_wait_frame(int fd, struct sroute_reader *r, int *kind, const uint8_t **payload, size_t *len,
                      unsigned timeout_ms);

/* Append one frame (@m packed, or empty) to @b. GERR_TOOBIG (nothing appended) over the limit. */
int sroute_frame_append(struct buf *b, int kind, const ProtobufCMessage *m);

/* Write one frame (@m packed, or empty when NULL) to @fd (blocking or not), waiting in 100 ms
 * slices while the peer's window is full; gives up with GERR_CANCELED when *@stop becomes true
 * (NULL: never), GERR_CLOSED when the connection failed. */
int sroute_send(int fd, int kind, const ProtobufCMessage *m, atomic_bool *stop);

/* END with @status and @message. */
int sroute_send_end(int fd, int status, const char *message, atomic_bool *stop);

struct sessions_svc;
struct sroute_server;

/* The target side: listen on the abstract unix socket @path ("@name") and serve each routed
 * session there with @svc's driver on a thread of its own. 0, or GERR_IO with @errmsg. */
int sroute_server_start(const char *path, struct sessions_svc *svc, struct sroute_server **out, char *errmsg);

/* Stop accepting; running sessions end with the service (sessions_svc_stop, before this). */
void sroute_server_stop(struct sroute_server *s);

#endif
