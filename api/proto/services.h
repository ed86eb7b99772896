/* The gantry.v1 API surface as data: every service descriptor generated from api/proto, and the
 * embedded descriptor sets that server reflection serves.
 *
 * The server builds its dispatch table from api_services[]: every method of every service here
 * has a path ("/gantry.v1.Sandboxes/Create") whether or not a handler is registered yet; calls to
 * a method without a handler answer UNIMPLEMENTED. */
#ifndef GANTRY_API_PROTO_SERVICES_H
#define GANTRY_API_PROTO_SERVICES_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* NULL-terminated list of the gantry.v1 services. Static data. */
extern const ProtobufCServiceDescriptor *const api_services[];

/* A serialized google.protobuf.FileDescriptorSet holding every gantry.v1 file (with imports).
 * Static data, generated at build time. The transport's reflection service describes its own
 * grpc.health.v1 and grpc.reflection files. */
extern const unsigned char api_descriptor_set[];
extern const size_t api_descriptor_set_len;

/* The same for the test-only gantry.testing.v1 protos (library gantry_api_testing). */
extern const unsigned char api_testing_descriptor_set[];
extern const size_t api_testing_descriptor_set_len;

#endif
