#include "server/grpc/arena.h"

#include <stdalign.h>
#include <string.h>

#include "lib/mem.h"

#define ARENA_CHUNK 4096u

struct arena_chunk {
    struct arena_chunk *next;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

void arena_init(struct arena *a)
{
    a->chunks = NULL;
    a->used = 0;
    a->total = 0;
    a->pb.alloc = NULL;
    a->pb.free = NULL;
    a->pb.allocator_data = a;
}

void arena_close(struct arena *a)
{
    struct arena_chunk *c = a->chunks;
    while (c != NULL) {
        struct arena_chunk *next = c->next;
        mem_free(c);
        c = next;
    }
    arena_init(a);
}

void *arena_alloc(struct arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    if (size == 0) {
        size = align;
    }
    if (a->chunks == NULL || a->chunks->size - a->used < size) {
        size_t csize = size > ARENA_CHUNK / 2 ? size : ARENA_CHUNK;
        struct arena_chunk *c = mem_alloc(sizeof(*c) + csize);
        c->size = csize;
        a->total += csize;
        if (a->chunks != NULL && csize != ARENA_CHUNK) {
            /* A large block goes behind the current chunk so its free space stays usable. */
            c->next = a->chunks->next;
            a->chunks->next = c;
            return c->data;
        }
        c->next = a->chunks;
        a->chunks = c;
        a->used = 0;
    }
    void *p = a->chunks->data + a->used;
    a->used += size;
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

ProtobufCAllocator *arena_protobuf_allocator(struct arena *a)
{
    a->pb.alloc = arena_pb_alloc;
    a->pb.free = arena_pb_free;
    a->pb.allocator_data = a;
    return &a->pb;
}
