/* A per-request arena: many small allocations, freed together.
 *
 * Every gRPC call owns one (grpc_call_arena); it is freed when the call is freed, after the reply
 * has been written or the call was cancelled. Allocation aborts on OOM like lib/mem.h, so callers
 * cap peer-declared sizes first. arena_protobuf_allocator() lets protobuf-c unpack into it. */
#ifndef GANTRY_SERVER_GRPC_ARENA_H
#define GANTRY_SERVER_GRPC_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

struct arena_chunk;

struct arena {
    struct arena_chunk *chunks; /* newest first */
    size_t used;                /* bytes handed out from the newest chunk */
    size_t total;               /* bytes allocated from the heap, for accounting */
    ProtobufCAllocator pb;      /* allocator_data points back here */
};

void arena_init(struct arena *a);
void arena_close(struct arena *a); /* frees every allocation; the struct may be re-initialised */

/* @size bytes aligned for any type; never NULL. Valid until arena_close. */
void *arena_alloc(struct arena *a, size_t size);
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);

/* A protobuf-c allocator that allocates from @a and never frees individually. */
ProtobufCAllocator *arena_protobuf_allocator(struct arena *a);

#endif
