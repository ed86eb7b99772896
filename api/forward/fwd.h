/* Forwarding calls between replicas: a replica that is not beside the dqlite leader sends each
 * authenticated mutation to the replica that is (gantry.internal.v1.ForwardRequest) and relays the
 * answer (ForwardResponse). This module is the transport only: frames over connected streams that
 * the caller's dial function opens (gantryd dials the peer's mutual-TLS port with the ALPN
 * "gantry-fwd/1"), and on the leader a server on a private abstract socket that the peer TLS relay
 * hands those connections to. What a request means is the gate's business (api/gate/gate.h).
 *
 * Frames: a 4-byte big-endian length, then the packed message; at most FWD_MAX_FRAME bytes. Many
 * requests are in flight per connection at once; responses come back in any order, matched by
 * call_id.
 *
 * Client. fwd_client_call blocks the calling thread until the response, the timeout, or the
 * connection's failure; the answer wakes only its own caller, and a failure each caller of that
 * connection at once. It keeps up to conns_per_target connections per address and spreads calls
 * over them. Errors: GERR_TIMEOUT, GERR_CLOSED (the connection failed), the dial function's errors,
 * GERR_PROTO (a malformed response: the connection is dropped). *@sent says whether the request
 * reached the connection: after a failure with sent, the request may or may not have run, and the
 * caller settles that by the request's idempotency key.
 *
 * Server. Each request is handed to the server's function on the connection's reader thread; the
 * function must not block long (it queues the work) and answers later, from any thread, with
 * fwd_reply, exactly once. Connections are accepted only from this process (SO_PEERCRED), since an
 * abstract socket is visible to every process of the network namespace and the relay in front of it
 * is what authenticates peers.
 *
 * Thread-safe. */
#ifndef GANTRY_API_FORWARD_FWD_H
#define GANTRY_API_FORWARD_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/internal/v1/forward.pb-c.h"

#define FWD_MAX_FRAME (64u << 20)
#define FWD_ALPN      "gantry-fwd/1"

typedef Gantry__Internal__V1__ForwardRequest fwd_request;
typedef Gantry__Internal__V1__ForwardResponse fwd_response;

/* Open a connected stream to @address (blocking fd, owned by the caller on success). */
typedef int (*fwd_dial_fn)(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg);

/* The decoders of a peer's bytes (pure; fuzzed by tests/fuzz/fuzz_forward.c). A frame header
 * gives the body's length: 0, or GERR_PROTO when over FWD_MAX_FRAME. A body decodes to a message
 * (free with gantry__internal__v1__forward_{request,response}__free_unpacked(m, NULL)) or NULL
 * when malformed. */
int fwd_frame_length(const uint8_t header[4], size_t *len);
fwd_request *fwd_request_decode(const uint8_t *body, size_t len);
fwd_response *fwd_response_decode(const uint8_t *body, size_t len);

struct fwd_client;

/* A client dialling with @dial(@dial_arg, ...). Never fails (allocation aborts). */
struct fwd_client *fwd_client_new(fwd_dial_fn dial, void *dial_arg, unsigned conns_per_target);

/* Close every connection (waiting calls fail with GERR_CLOSED) and free. */
void fwd_client_free(struct fwd_client *c);

/* Send @req (its call_id is set here) to @address; wait up to @timeout_ms. On 0, *@resp is the
 * response (free with gantry__internal__v1__forward_response__free_unpacked(*resp, NULL)). */
int fwd_client_call(struct fwd_client *c, const char *address, fwd_request *req, unsigned timeout_ms,
                    fwd_response **resp, bool *sent, char *errmsg);

struct fwd_server;
struct fwd_reply;

/* Called on a reader thread for each request; ownership of @req passes to the function (free with
 * gantry__internal__v1__forward_request__free_unpacked(req, NULL)). */
typedef void (*fwd_request_fn)(void *data, fwd_request *req, struct fwd_reply *reply);

/* Listen on the unix socket @path ("@name": abstract). 0 or GERR_IO with @errmsg. */
int fwd_server_start(const char *path, fwd_request_fn fn, void *data, struct fwd_server **out, char *errmsg);

/* Stop accepting, close every connection, wait for the reader threads, free. Every request handed
 * out must have been answered (fwd_reply) before: the caller stops its workers first. */
void fwd_server_stop(struct fwd_server *s);

/* Answer one request, from any thread, exactly once; @reply (@len bytes) is copied. */
void fwd_reply(struct fwd_reply *r, int status, const char *message, const uint8_t *reply, size_t len);

/* The same with a whole response (its call_id is set here; the caller keeps @resp). */
void fwd_reply_response(struct fwd_reply *r, fwd_response *resp);

/* Requests served and connections accepted so far, for /metrics. */
void fwd_server_stats(struct fwd_server *s, uint64_t *requests, uint64_t *connections);

#endif
