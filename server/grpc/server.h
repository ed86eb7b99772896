/* The gRPC server: HTTP/2 (nghttp2) over TLS (OpenSSL, ALPN h2) or loopback-only h2c, on a libuv
 * loop, dispatching protobuf-c messages to handlers by :path.
 *
 * Threading: everything here runs on the loop thread, except grpc_call_finish_async() and
 * grpc_call_send_async(), which any thread may call (it is how a handler answers after waiting on
 * the store elsewhere), and grpc_call_request()/grpc_call_request_error(), which decode the
 * request on the thread that asks first (see grpc_call_request for the rule).
 *
 * The happy path of one unary call:
 *   HEADERS (:path, content-type application/grpc, grpc-timeout, metadata)
 *     -> a struct grpc_call with its arena, metadata, deadline timer
 *   DATA (5-byte prefix + message, possibly across frames) + END_STREAM
 *     -> the message's bytes are buffered -> handler->on_start(call)
 *     -> the handler (on a worker, after authentication) calls grpc_call_request: checked, decoded
 *   handler calls grpc_call_finish(call, 0, NULL, reply) now or later
 *     -> HEADERS(:status 200), DATA (prefixed reply), trailers (grpc-status, grpc-message)
 *   the stream closes -> the call is freed once no handler holds a reference.
 *
 * The connection budget (h2.c). A connection is "established" once a call on it carried
 * credentials (an authorization header or a verified client certificate), reached its handler
 * and was answered with OK or a handler's own refusal (INVALID_ARGUMENT, NOT_FOUND,
 * ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE): the transport
 * cannot authenticate, so that is its proxy for "a caller the gate accepted". Others (in the
 * handshake, idle, or only unauthenticated calls so far) are unproven. At accept:
 *   - more than max_connections_per_source live connections from the address: closed at once;
 *   - max_connections reached, or the unproven ones at their share (max_connections minus
 *     established_reserve_percent): the unproven connection with no call at its handler that
 *     comes from the address holding the most unproven connections (the oldest of them) gets a
 *     GOAWAY and is closed; if there is none, the new connection is closed.
 * So idle or handshake-only floods cannot lock out established clients nor, while there is an
 * idle unproven connection from a busier address, new ones. Unproven connections also meet
 * handshake_timeout_ms and idle_timeout_ms, which PINGs do not reset.
 *
 * Failure modes and what the client sees:
 *   - content-type not application/grpc*: HTTP 415, no gRPC status;
 *   - unknown :path, or a known method with no handler yet: UNIMPLEMENTED;
 *   - a message over max_recv_message_bytes, or buffered input over conn_memory_bytes:
 *     RESOURCE_EXHAUSTED (checked on the 5-byte prefix, before anything is allocated);
 *   - headers over max_header_list_bytes: RESOURCE_EXHAUSTED;
 *   - a request message that is not valid UTF-8 where the proto says string, holds a NUL or an
 *     unknown enum value: INVALID_ARGUMENT; more than max_request_fields fields: RESOURCE_EXHAUSTED;
 *     undecodable: INTERNAL (unary and server-streaming: when the handler asks, grpc_call_request);
 *   - compressed messages: UNIMPLEMENTED (no encoding offered);
 *   - grpc-timeout expires: DEADLINE_EXCEEDED, and the handler's on_cancel fires;
 *   - the client resets the stream or the connection drops: on_cancel fires, late answers are
 *     dropped;
 *   - HTTP/2 protocol errors, failed TLS handshakes, a missing ALPN h2: the connection is closed
 *     (with GOAWAY where the session exists) and the reason logged at DEBUG.
 */
#ifndef GANTRY_SERVER_GRPC_SERVER_H
#define GANTRY_SERVER_GRPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "lib/buf.h"
#include "server/grpc/arena.h"
#include "server/grpc/status.h"

struct grpc_server;
struct grpc_call;

struct grpc_server_config {
    const char *listen;                   /* "host:port"; port 0 picks a free one (grpc_server_port) */
    const char *cert_file;                /* PEM chain; required unless h2c */
    const char *key_file;                 /* PEM private key; required unless h2c */
    const char *client_ca_file;           /* optional: ask for client certificates and verify them */
    bool h2c;                             /* plaintext HTTP/2; refused unless listen is a loopback IP */
    uint32_t max_recv_message_bytes;      /* default 4 MiB */
    uint32_t max_send_message_bytes;      /* default 16 MiB */
    uint32_t max_concurrent_streams;      /* per connection, advertised in SETTINGS; default 100 */
    uint32_t max_header_list_bytes;       /* per request, name + value + 32 per field; default 16 KiB */
    size_t conn_memory_bytes;             /* buffered input + unsent output per connection; default 64 MiB */
    uint32_t max_connections;             /* in all; see established_reserve_percent; default 1024 */
    uint32_t max_connections_per_source;  /* from one IP address; further ones are closed at accept;
                                             0 = no limit; default 128 */
    uint32_t established_reserve_percent; /* share of max_connections only established connections
                                             may use (at most 90); default 25 */
    uint64_t handshake_timeout_ms;        /* TLS handshake and the client's HTTP/2 preface must be done
                                             within this from accept; 0 disables; default 10 s */
    uint64_t idle_timeout_ms;             /* no stream opened or closed for this long (PINGs do not count):
                                             GOAWAY; 0 disables; default 5 min */
    uint64_t keepalive_ms;                /* PING interval while streams are open; 0 disables; default 30 s */
    uint64_t keepalive_timeout_ms;        /* no PING ACK for this long closes the connection; default 20 s */
    uint32_t max_request_fields;          /* fields in one request message, nested and unknown ones and packed
                                             elements included, refused before decoding; default 65536 */
    uint32_t max_request_depth;           /* nesting of sub-messages in a request; default 32 */
};

/* Fill @cfg with the defaults above (listen "127.0.0.1:0", TLS, no files). */
void grpc_server_config_defaults(struct grpc_server_config *cfg);

enum grpc_method_kind {
    GRPC_UNARY = 0,
    GRPC_SERVER_STREAMING,
    GRPC_CLIENT_STREAMING,
    GRPC_BIDI_STREAMING,
};

/* Handler callbacks. All fire on the loop thread, never synchronously from a grpc_* call the
 * handler itself makes.
 *
 * on_start: unary and server-streaming: once the single request message has arrived, still
 *   undecoded (grpc_call_request decodes it, and may refuse it); client-streaming and bidi: once
 *   the request headers have arrived. Required.
 * on_message: client-streaming and bidi only: each request message, owned by the server and
 *   valid only during the callback; then once with @msg NULL when the client half-closes.
 * on_cancel: the call ended before the handler finished it (deadline, client reset, connection
 *   lost, server forced shutdown). Further grpc_call_send/finish calls are accepted and dropped.
 *   Fires at most once, and never after the handler finished the call. Optional.
 * on_drain: the call's unsent output fell below the low-water mark after grpc_call_send()
 *   reported it above (see grpc_call_send). Optional. */
typedef void (*grpc_start_cb)(struct grpc_call *call, void *data);
typedef void (*grpc_message_cb)(struct grpc_call *call, const ProtobufCMessage *msg, void *data);
typedef void (*grpc_cancel_cb)(struct grpc_call *call, void *data);
typedef void (*grpc_drain_cb)(struct grpc_call *call, void *data);

struct grpc_handler {
    enum grpc_method_kind kind;
    grpc_start_cb on_start;
    grpc_message_cb on_message;
    grpc_cancel_cb on_cancel;
    grpc_drain_cb on_drain;
    void *data;
};

typedef void (*grpc_server_closed_cb)(struct grpc_server *s, void *data);

/* The outcome observer: fires exactly once per call whose outcome is known, with its final status
 * (what the client was answered, or CANCELLED when it went away first: deadline, reset, lost
 * connection), for client calls on the loop thread and for virtual calls on the thread that
 * finished them. It sees the call's tag (grpc_call_tag) and path. It must be quick, must not block
 * and must be thread-safe; the call must not be touched after it returns. */
typedef void (*grpc_outcome_cb)(void *data, const struct grpc_call *call, int status);

/* Allocate a server on @loop. @cfg and the strings in it are copied. Loads the certificate and
 * key (unless h2c) and checks the h2c loopback rule. Returns 0 or GERR_INVAL (bad config, with
 * the reason in @errmsg), GERR_IO (certificate or key unreadable). On error *out is untouched. */
int grpc_server_new(uv_loop_t *loop, const struct grpc_server_config *cfg, struct grpc_server **out,
                    char *errmsg);

/* Make every method of @svc routable. Methods without a handler answer UNIMPLEMENTED ("method
 * /pkg.Svc/M is not implemented"). Idempotent. Returns 0. Before grpc_server_start only. */
int grpc_server_add_service(struct grpc_server *s, const ProtobufCServiceDescriptor *svc);

/* Route @svc's method @method to @h (copied). Adds the service if needed. Returns 0 or GERR_INVAL
 * (no such method). Before grpc_server_start only. */
int grpc_server_handle(struct grpc_server *s, const ProtobufCServiceDescriptor *svc, const char *method,
                       const struct grpc_handler *h);

/* Route an explicit @path ("/pkg.Svc/Method") of service @service_name, decoding requests with
 * @input and encoding replies with @output (for wire-identical services such as reflection
 * v1alpha). Strings are copied. Returns 0 or GERR_EXISTS. */
int grpc_server_handle_path(struct grpc_server *s, const char *service_name, const char *path,
                            const ProtobufCMessageDescriptor *input, const ProtobufCMessageDescriptor *output,
                            const struct grpc_handler *h);

/* Set the outcome observer (at most one; NULL removes it). Before grpc_server_start only. */
void grpc_server_set_outcome_observer(struct grpc_server *s, grpc_outcome_cb cb, void *data);

/* Number of distinct services routable, and the name of the @i'th (sorted). Names are static
 * until the server is freed. */
size_t grpc_server_service_count(const struct grpc_server *s);
const char *grpc_server_service_name(const struct grpc_server *s, size_t i);

/* Bind and listen. Returns 0, GERR_INVAL (unparseable address) or the translated libuv error
 * (GERR_REFUSED for an address in use), with the reason in @errmsg. Handles are open even on
 * failure: call grpc_server_shutdown and wait for its callback before grpc_server_free. */
int grpc_server_start(struct grpc_server *s, char *errmsg);

/* The bound TCP port (after grpc_server_start). */
int grpc_server_port(const struct grpc_server *s);

/* Re-read the certificate chain, key and client CA files the server was made with and use them
 * for every connection accepted after the return; open connections keep the context they started
 * with. Any thread. On error (GERR_IO/GERR_INVAL: a file is missing or bad, the key does not match)
 * the server keeps its current files' contents. GERR_INVAL for an h2c server. */
int grpc_server_reload_tls(struct grpc_server *s, char *errmsg);

/* Graceful stop: close the listener, send GOAWAY (last stream id = the last one accepted) on every
 * connection, let in-flight calls finish for up to @grace_ms, then cancel what is left and close
 * every connection. @cb fires once, asynchronously, after every connection, timer and call is
 * gone (calls a handler still holds keep it waiting: finish them). Call once. */
void grpc_server_shutdown(struct grpc_server *s, uint64_t grace_ms, grpc_server_closed_cb cb, void *data);

/* Free a server that was never started, or whose shutdown callback has fired. */
void grpc_server_free(struct grpc_server *s);

/* True once grpc_server_shutdown has been called. */
bool grpc_server_closing(const struct grpc_server *s);

/* Append the server's metrics in the Prometheus text format: per-method call counts by status
 * code (gantry_grpc_server_handled_total), latency histograms
 * (gantry_grpc_server_handling_seconds), open connections and streams. */
void grpc_server_metrics_write(const struct grpc_server *s, struct buf *out);

/* --- The request context, for handlers. Loop thread only unless stated. --- */

/* The decoded request of a unary or server-streaming call, or the first message a handler of a
 * bidi or client-streaming call stashed (grpc_call_stash_request); NULL for the others.
 *
 * Thread rule: the loop thread only frames the request and buffers its bytes (bounded by
 * max_recv_message_bytes and conn_memory_bytes); nothing is decoded until a handler asks. The
 * first call of grpc_call_request decodes, on the calling thread: a worker thread that holds a
 * reference (grpc_call_ref), or the loop thread inside a handler callback. The gate calls it
 * only after authenticating, so the requests of unauthenticated callers are never decoded, and
 * a large request costs a worker, not the loop. Later calls, from any thread holding a
 * reference, return the same message. Thread-safe.
 *
 * Decoding first walks the bytes with the message descriptor (wirecheck.h) and refuses, before
 * protobuf-c allocates anything: a string field that is not valid UTF-8 or contains a NUL, an
 * enum value the enum does not declare (INVALID_ARGUMENT, naming the field path:
 * "sandbox.meta.name: invalid UTF-8"), more than max_request_fields fields or nesting deeper
 * than max_request_depth (RESOURCE_EXHAUSTED), and bytes that are not a valid encoding
 * (INTERNAL). Then NULL is returned and grpc_call_request_error says what to answer: the
 * caller must finish the call with it (the transport does not, since it cannot know what the
 * caller has started meanwhile).
 *
 * The message lives in memory of the call's own (not grpc_call_arena): valid until the call is
 * freed; the request's bytes are released once decoded. */
const ProtobufCMessage *grpc_call_request(const struct grpc_call *call);

/* After grpc_call_request returned NULL for a unary or server-streaming call: the gRPC status
 * to answer with and its message (*@message valid for the call's life). GRPC_STATUS_OK (and
 * *@message NULL) if the request decoded or was never asked for. Same threads as
 * grpc_call_request, after it. */
int grpc_call_request_error(const struct grpc_call *call, const char **message);

/* The path ("/gantry.v1.Sandboxes/Create"). */
const char *grpc_call_method(const struct grpc_call *call);

/* First value of request metadata @key (lowercase, e.g. "authorization"), or NULL. Binary keys
 * ("-bin") return the base64 text as sent. Pseudo-headers and transport headers are excluded. */
const char *grpc_call_metadata(const struct grpc_call *call, const char *key);

/* Number of metadata entries, and the @i'th. */
size_t grpc_call_metadata_count(const struct grpc_call *call);
void grpc_call_metadata_at(const struct grpc_call *call, size_t i, const char **key, const char **value);

/* The peer's address ("127.0.0.1:54321", "[::1]:54321"). */
const char *grpc_call_peer(const struct grpc_call *call);

/* Whether the connection is TLS, and the verified client certificate (borrowed, valid for the
 * call's life; NULL without mTLS). */
bool grpc_call_tls(const struct grpc_call *call);
X509 *grpc_call_peer_cert(const struct grpc_call *call);

/* The deadline from grpc-timeout as clock_system() monotonic milliseconds, or 0 for none. */
uint64_t grpc_call_deadline_ms(const struct grpc_call *call);

/* The loop the call runs on (for handler timers). */
uv_loop_t *grpc_call_loop(const struct grpc_call *call);

/* The call's arena: freed with the call. */
struct arena *grpc_call_arena(struct grpc_call *call);

/* A number of the handler's choosing for the outcome observer, 0 at first. Any thread holding a
 * reference; atomic. */
void grpc_call_set_tag(struct grpc_call *call, uint32_t tag);
uint32_t grpc_call_tag(const struct grpc_call *call);

/* A pointer of the handler's choosing, NULL at first. */
void grpc_call_set_data(struct grpc_call *call, void *data);
void *grpc_call_get_data(const struct grpc_call *call);

/* True if the call ended before the handler finished it (on_cancel has fired or will). */
bool grpc_call_cancelled(const struct grpc_call *call);

/* Queue one response message (streaming methods). The message is serialized at once, so it
 * may be freed on return. Returns 0 (sent or dropped because the call was cancelled),
 * GERR_TOOBIG (over max_send_message_bytes, nothing queued), GERR_BUSY (queued, but the
 * call's unsent output is above the high-water mark: wait for on_drain before sending more),
 * GERR_INVAL (after finish, or on a unary method). */
int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *msg);

/* End the call with gRPC @status (enum grpc_status) and @message (copied, may be NULL), after
 * sending @reply if not NULL (unary and client-streaming methods answer OK with a reply).
 * An error status before any response message gives a trailers-only response. A reply over
 * max_send_message_bytes turns into RESOURCE_EXHAUSTED. Calling it twice is API misuse (the
 * second is ignored and logged). */
void grpc_call_finish(struct grpc_call *call, int status, const char *message, const ProtobufCMessage *reply);

/* grpc_call_finish with the status grpc_status_from_gerr(@gerr) and no reply. */
void grpc_call_finish_gerr(struct grpc_call *call, int gerr, const char *message);

/* Keep the call's memory alive past the stream (for asynchronous answers). Every ref needs one
 * unref or one grpc_call_finish_async. The count is atomic: grpc_call_ref may be called from any
 * thread that already holds a reference; grpc_call_unref only on the loop thread (the last one
 * closes the call's timer). */
void grpc_call_ref(struct grpc_call *call);
void grpc_call_unref(struct grpc_call *call);

/* From ANY thread: queue one response message like grpc_call_send, for a streaming call the
 * caller holds a reference to (grpc_call_ref). @msg is serialized before return; it is sent on
 * the loop thread in the order of this thread's grpc_call_send_async and grpc_call_finish_async
 * calls, or dropped if the call was cancelled meanwhile. There is no flow control: the caller
 * bounds what it queues (the backup stream queues the database once). Returns 0, or GERR_TOOBIG
 * (over max_send_message_bytes, nothing queued). */
int grpc_call_send_async(struct grpc_call *call, const ProtobufCMessage *msg);

/* Loop thread, inside on_message of a client-streaming or bidi call: keep @msg (packed now, so it
 * may be freed on return) as the call's request, which grpc_call_request then decodes on any
 * thread with the usual checks, as for a unary call. How the gate authorizes a bidi call by its
 * first message. Once per call: GERR_INVAL after the first, or for other kinds of call. */
int grpc_call_stash_request(struct grpc_call *call, const ProtobufCMessage *msg);

/* Inbound flow control for client-streaming and bidi calls, beyond what the transport does by
 * itself (it frames no request message while the call's unsent output is over 1 MiB): a handler
 * that cannot take more input now (a sandbox that does not read its stdin) pauses the call's
 * input. Request bytes that arrive meanwhile are held unconsumed, so the stream's HTTP/2 window
 * (1 MiB) closes and the client must stop sending; nothing more is delivered to on_message
 * (END_STREAM included, behind held bytes) until resumed.
 *
 * grpc_call_pause_input: loop thread only (inside a callback of the call); takes effect for the
 * next message. grpc_call_resume_input: from ANY thread holding a reference (grpc_call_ref);
 * queued to the loop, which then delivers what was held (never synchronously from this call).
 * Pausing a unary or server-streaming call has no effect. */
void grpc_call_pause_input(struct grpc_call *call);
void grpc_call_resume_input(struct grpc_call *call);

/* From ANY thread holding a reference: the call's output not yet handed to HTTP/2 (what
 * grpc_call_send_async queued and what waits in the call's buffer for the client's flow-control
 * window), in bytes; 0 once the call was cancelled. A thread streaming with grpc_call_send_async
 * keeps this under a bound of its choosing (waiting while it is above), which gives it the flow
 * control grpc_call_send_async lacks: a client that reads slowly makes it wait, never the replica
 * buffer without bound. Atomic reads; the value may be a moment old. */
size_t grpc_call_unsent(const struct grpc_call *call);

/* From ANY thread: finish the call like grpc_call_finish and drop one reference taken with
 * grpc_call_ref. @reply is serialized on the calling thread before return (the caller keeps
 * ownership of it); @message is copied. The finish happens on the loop thread soon after; if the
 * call was cancelled meanwhile it is dropped. Returns 0. */
int grpc_call_finish_async_bytes(struct grpc_call *call, int status, const char *message,
                                 const uint8_t *reply, size_t len);

/* --- Virtual calls: a call that did not come from a client connection (a call another replica
 * forwarded), run by the same handlers. It has no connection, no metadata and no client
 * certificate; grpc_call_request decodes @request (copied) on first use, with the same checks;
 * grpc_call_peer, grpc_call_method and grpc_call_deadline_ms answer what was given. Finishing it
 * (grpc_call_finish_async, grpc_call_finish_async_bytes or grpc_call_finish), from any thread,
 * calls @done exactly once on that thread with the status, message and packed reply (valid during
 * the callback only); grpc_call_send_async is refused (unary methods only). The call starts with
 * one reference, the one grpc_call_finish_async drops. Thread-safe; never touches the loop.
 * NULL if @path names no unary method with a handler. */
typedef void (*grpc_virtual_done_cb)(void *data, int status, const char *message, const uint8_t *reply,
                                     size_t len);
struct grpc_call *grpc_call_new_virtual(struct grpc_server *s, const char *path, const uint8_t *request,
                                        size_t len, const char *peer, uint64_t deadline_ms,
                                        grpc_virtual_done_cb done, void *data);
bool grpc_call_is_virtual(const struct grpc_call *call);

int grpc_call_finish_async(struct grpc_call *call, int status, const char *message,
                           const ProtobufCMessage *reply);

/* One trailing metadata entry sent with the call's status (after grpc-status and grpc-message),
 * e.g. "x-gantry-revision": @key lowercase ASCII of at most 31 bytes, @value printable ASCII of at
 * most 63 (both copied, longer ones truncated); a second call replaces the first. Only for a call
 * answered with grpc_call_finish_async or grpc_call_finish_async_bytes: call it just before, on the
 * thread that finishes it; the finish copies it into its completion, and the loop thread alone sets
 * it on the call (so a deadline the loop enforces meanwhile reads nothing half-written; that status
 * goes without it). A virtual call (no connection) sends nothing. */
void grpc_call_set_trailer(struct grpc_call *call, const char *key, const char *value);

#endif
