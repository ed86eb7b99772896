/* gRPC server reflection, grpc.reflection.v1 and v1alpha (same wire format, same code), served
 * from embedded serialized FileDescriptorSets (its own for health and reflection, and the ones an
 * application adds, such as api/proto/services.h's), so grpcurl-style tools can list
 * services, fetch descriptors and build calls without local proto files.
 *
 * file_by_filename and file_containing_symbol answer with the file and everything it imports,
 * transitively; list_services lists every service routable on the server; extensions are not
 * used by Gantry's protos, so extension queries answer NOT_FOUND (or an empty number list). */
#ifndef GANTRY_SERVER_GRPC_REFLECTION_H
#define GANTRY_SERVER_GRPC_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "server/grpc/server.h"

struct reflection;

/* Register ServerReflectionInfo (v1 and v1alpha) on @s, before grpc_server_start. */
int reflection_new(struct grpc_server *s, struct reflection **out);

/* Index a serialized FileDescriptorSet. @data is NOT copied: it must outlive the reflection
 * (the embedded sets are static). Files already indexed (same name) are skipped. Returns 0 or
 * GERR_PROTO (malformed set) with the reason in @errmsg. */
int reflection_add_descriptor_set(struct reflection *r, const uint8_t *data, size_t len, char *errmsg);

/* Free after the server is closed. */
void reflection_free(struct reflection *r);

/* The symbol walker alone, for the fuzzer: returns 0 or GERR_PROTO. */
int reflection__index_file(struct reflection *r, const uint8_t *data, size_t len, char *errmsg);

#endif
