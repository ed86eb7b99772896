/* The test-only gantry.testing.v1.Echo service (api/proto/gantry/testing/v1/echo.proto), served
 * by gantry-grpc-testserver so the interop suite can drive every server path: unary, the three
 * streaming kinds, chosen errors, answers from another thread after a delay (Delay), large
 * responses (Size) and the request context (Context). Never linked into gantryd. */
#ifndef GANTRY_TESTS_INTEROP_TESTSERVER_ECHO_H
#define GANTRY_TESTS_INTEROP_TESTSERVER_ECHO_H

#include "server/grpc/server.h"

struct echo;

/* Register every Echo method on @s and start the Delay worker thread. */
int echo_new(struct grpc_server *s, struct echo **out);

/* Route every method of @services (NULL-terminated) to a stand-in for the gate: the worker
 * thread decodes the request with grpc_call_request (as the gate does after authenticating) and
 * answers UNIMPLEMENTED, or the refusal the transport's request check gave. Before
 * grpc_server_start. Returns 0 or grpc_server_handle's error. */
int echo_route_checked(struct echo *e, struct grpc_server *s,
                       const ProtobufCServiceDescriptor *const *services);

/* Answer every pending Delay call now (CANCELLED) and join the worker. Idempotent. */
void echo_stop(struct echo *e);

/* After echo_stop and once the server is closed. */
void echo_free(struct echo *e);

#endif
