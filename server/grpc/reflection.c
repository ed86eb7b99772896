#include "server/grpc/reflection.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"

/* The serialized descriptor set of the health and reflection protos (server/grpc/proto),
 * generated at build time by cmake/protos.cmake. */
extern const unsigned char grpc_descriptor_set[];
extern const size_t grpc_descriptor_set_len;

struct refl_file {
    char *name;
    const uint8_t *data;
    size_t len;
    char **deps;
    size_t n_deps;
};

struct refl_symbol {
    char *name;
    size_t file;
};

struct reflection {
    struct grpc_server *server;
    struct refl_file *files;
    size_t n_files;
    struct refl_symbol *symbols;
    size_t n_symbols;
    bool sorted;
};

/* --- A bounded protobuf wire-format walker (only what descriptors need) --- */

struct pb_cursor {
    const uint8_t *p;
    const uint8_t *end;
};

struct pb_field {
    uint32_t number;
    uint32_t wire;
    const uint8_t *data; /* wire type 2 */
    size_t len;
};

static int pb_varint(struct pb_cursor *c, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->p >= c->end) {
            return -1;
        }
        uint8_t b = *c->p++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* Next field: 1 if one was read, 0 at the end, -1 if malformed. */
static int pb_next(struct pb_cursor *c, struct pb_field *f)
{
    if (c->p >= c->end) {
        return 0;
    }
    uint64_t key, v;
    if (pb_varint(c, &key) != 0 || (key >> 3) == 0 || (key >> 3) > UINT32_MAX) {
        return -1;
    }
    f->number = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    switch (f->wire) {
    case 0:
        return pb_varint(c, &v) == 0 ? 1 : -1;
    case 1:
        if (c->end - c->p < 8) {
            return -1;
        }
        c->p += 8;
        return 1;
    case 5:
        if (c->end - c->p < 4) {
            return -1;
        }
        c->p += 4;
        return 1;
    case 2:
        if (pb_varint(c, &v) != 0 || v > (uint64_t)(c->end - c->p)) {
            return -1;
        }
        f->data = c->p;
        f->len = (size_t)v;
        c->p += v;
        return 1;
    default:
        return -1;
    }
}

static char *refl_join(const char *prefix, const uint8_t *name, size_t len)
{
    size_t pl = strlen(prefix);
    char *s = mem_alloc(pl + 1 + len + 1);
    memcpy(s, prefix, pl);
    size_t off = pl;
    if (pl > 0) {
        s[off++] = '.';
    }
    memcpy(s + off, name, len);
    s[off + len] = '\0';
    return s;
}

static void refl_add_symbol(struct reflection *r, char *name, size_t file)
{
    r->symbols = mem_realloc(r->symbols, (r->n_symbols + 1) * sizeof(*r->symbols));
    r->symbols[r->n_symbols].name = name;
    r->symbols[r->n_symbols].file = file;
    r->n_symbols++;
    r->sorted = false;
}

/* Index the "name" (field 1) of a message/enum/service at @data under @prefix, then recurse
 * into nested messages (3) and enums (4) of messages, or methods (2) of services. */
static int refl_walk(struct reflection *r, size_t file, const char *prefix, const uint8_t *data, size_t len,
                     int kind, int depth)
{
    enum { K_MESSAGE, K_ENUM, K_SERVICE, K_METHOD };
    if (depth > 32) {
        return -1;
    }
    struct pb_cursor c = {data, data + len};
    struct pb_field f;
    const uint8_t *name = NULL;
    size_t name_len = 0;
    int rv;
    while ((rv = pb_next(&c, &f)) == 1) {
        if (f.number == 1 && f.wire == 2) {
            name = f.data;
            name_len = f.len;
        }
    }
    if (rv < 0 || name == NULL || name_len == 0) {
        return -1;
    }
    char *full = refl_join(prefix, name, name_len);
    refl_add_symbol(r, full, file);
    if (kind == K_ENUM || kind == K_METHOD) {
        return 0;
    }
    c.p = data;
    while ((rv = pb_next(&c, &f)) == 1) {
        if (f.wire != 2) {
            continue;
        }
        int sub = -1;
        if (kind == K_MESSAGE && f.number == 3) {
            sub = K_MESSAGE;
        } else if (kind == K_MESSAGE && f.number == 4) {
            sub = K_ENUM;
        } else if (kind == K_SERVICE && f.number == 2) {
            sub = K_METHOD;
        }
        if (sub >= 0 && refl_walk(r, file, full, f.data, f.len, sub, depth + 1) != 0) {
            return -1;
        }
    }
    return rv < 0 ? -1 : 0;
}

int reflection__index_file(struct reflection *r, const uint8_t *data, size_t len, char *errmsg)
{
    struct pb_cursor c = {data, data + len};
    struct pb_field f;
    char *name = NULL;
    char *package = NULL;
    int rv;
    while ((rv = pb_next(&c, &f)) == 1) {
        if (f.wire != 2) {
            continue;
        }
        if (f.number == 1 && name == NULL) {
            name = mem_strndup((const char *)f.data, f.len);
        } else if (f.number == 2 && package == NULL) {
            package = mem_strndup((const char *)f.data, f.len);
        }
    }
    if (rv < 0 || name == NULL) {
        gerr_set(errmsg, "malformed FileDescriptorProto");
        mem_free(name);
        mem_free(package);
        return GERR_PROTO;
    }
    for (size_t i = 0; i < r->n_files; i++) {
        if (strcmp(r->files[i].name, name) == 0) {
            mem_free(name);
            mem_free(package);
            return 0;
        }
    }
    r->files = mem_realloc(r->files, (r->n_files + 1) * sizeof(*r->files));
    size_t idx = r->n_files++;
    struct refl_file *file = &r->files[idx];
    memset(file, 0, sizeof(*file));
    file->name = name;
    file->data = data;
    file->len = len;
    c.p = data;
    rv = 0;
    while (rv == 0 && pb_next(&c, &f) == 1) {
        if (f.wire != 2) {
            continue;
        }
        const char *pkg = package != NULL ? package : "";
        switch (f.number) {
        case 3:
            file->deps = mem_realloc(file->deps, (file->n_deps + 1) * sizeof(char *));
            file->deps[file->n_deps++] = mem_strndup((const char *)f.data, f.len);
            break;
        case 4:
            rv = refl_walk(r, idx, pkg, f.data, f.len, 0, 0);
            break;
        case 5:
            rv = refl_walk(r, idx, pkg, f.data, f.len, 1, 0);
            break;
        case 6:
            rv = refl_walk(r, idx, pkg, f.data, f.len, 2, 0);
            break;
        default:
            break;
        }
    }
    mem_free(package);
    if (rv != 0) {
        gerr_set(errmsg, "malformed descriptor in %s", file->name);
        return GERR_PROTO;
    }
    return 0;
}

int reflection_add_descriptor_set(struct reflection *r, const uint8_t *data, size_t len, char *errmsg)
{
    struct pb_cursor c = {data, data + len};
    struct pb_field f;
    int rv;
    while ((rv = pb_next(&c, &f)) == 1) {
        if (f.number == 1 && f.wire == 2) {
            int e = reflection__index_file(r, f.data, f.len, errmsg);
            if (e != 0) {
                return e;
            }
        }
    }
    if (rv < 0) {
        gerr_set(errmsg, "malformed FileDescriptorSet");
        return GERR_PROTO;
    }
    return 0;
}

/* --- Lookups --- */

static int refl_symbol_cmp(const void *a, const void *b)
{
    return strcmp(((const struct refl_symbol *)a)->name, ((const struct refl_symbol *)b)->name);
}

static long refl_find_symbol(struct reflection *r, const char *name)
{
    if (!r->sorted) {
        if (r->n_symbols > 0) {
            qsort(r->symbols, r->n_symbols, sizeof(*r->symbols), refl_symbol_cmp);
        }
        r->sorted = true;
    }
    struct refl_symbol key = {.name = (char *)name};
    struct refl_symbol *s =
        r->n_symbols > 0 ? bsearch(&key, r->symbols, r->n_symbols, sizeof(*r->symbols), refl_symbol_cmp)
                         : NULL;
    return s != NULL ? (long)s->file : -1;
}

static long refl_find_file(struct reflection *r, const char *name)
{
    for (size_t i = 0; i < r->n_files; i++) {
        if (strcmp(r->files[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* Append @file and its imports (depth first, each once) to @out. */
static void refl_collect(struct reflection *r, size_t file, bool *seen, size_t *out, size_t *n)
{
    if (seen[file]) {
        return;
    }
    seen[file] = true;
    out[(*n)++] = file;
    for (size_t i = 0; i < r->files[file].n_deps; i++) {
        long d = refl_find_file(r, r->files[file].deps[i]);
        if (d >= 0) {
            refl_collect(r, (size_t)d, seen, out, n);
        }
    }
}

static void refl_on_start(struct grpc_call *call, void *data)
{
    (void)call;
    (void)data;
}

static void refl_on_message(struct grpc_call *call, const ProtobufCMessage *m, void *data)
{
    struct reflection *r = data;
    if (m == NULL) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    const Grpc__Reflection__V1__ServerReflectionRequest *req = (const void *)m;
    Grpc__Reflection__V1__ServerReflectionResponse resp =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fdr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lsr = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse enr = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse err = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    bool *seen = NULL;
    size_t *order = NULL;
    ProtobufCBinaryData *blobs = NULL;
    Grpc__Reflection__V1__ServiceResponse *svcs = NULL;
    Grpc__Reflection__V1__ServiceResponse **svc_ptrs = NULL;
    long file = -1;
    char msg[300];
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
        size_t n = grpc_server_service_count(r->server);
        svcs = mem_zalloc((n + 1) * sizeof(*svcs));
        svc_ptrs = mem_zalloc((n + 1) * sizeof(*svc_ptrs));
        for (size_t i = 0; i < n; i++) {
            Grpc__Reflection__V1__ServiceResponse init = GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
            svcs[i] = init;
            svcs[i].name = (char *)grpc_server_service_name(r->server, i);
            svc_ptrs[i] = &svcs[i];
        }
        lsr.n_service = n;
        lsr.service = svc_ptrs;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lsr;
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = refl_find_file(r, req->file_by_filename);
        snprintf(msg, sizeof(msg), "file not found: %.250s", req->file_by_filename);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        file = refl_find_symbol(r, req->file_containing_symbol);
        snprintf(msg, sizeof(msg), "symbol not found: %.250s", req->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        if (refl_find_symbol(r, req->all_extension_numbers_of_type) >= 0) {
            enr.base_type_name = req->all_extension_numbers_of_type;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &enr;
        } else {
            snprintf(msg, sizeof(msg), "type not found: %.250s", req->all_extension_numbers_of_type);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        snprintf(msg, sizeof(msg), "extension not found");
        break;
    default:
        err.error_code = GRPC_STATUS_INVALID_ARGUMENT;
        err.error_message = "unsupported reflection request";
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &err;
        break;
    }
    if (file >= 0) {
        seen = mem_zalloc(r->n_files * sizeof(*seen));
        order = mem_alloc(r->n_files * sizeof(*order));
        size_t n = 0;
        refl_collect(r, (size_t)file, seen, order, &n);
        blobs = mem_alloc(n * sizeof(*blobs));
        for (size_t i = 0; i < n; i++) {
            blobs[i].data = (uint8_t *)r->files[order[i]].data;
            blobs[i].len = r->files[order[i]].len;
        }
        fdr.n_file_descriptor_proto = n;
        fdr.file_descriptor_proto = blobs;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &fdr;
    } else if (resp.message_response_case ==
               GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
        err.error_code = GRPC_STATUS_NOT_FOUND;
        err.error_message = msg;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &err;
    }
    grpc_call_send(call, &resp.base);
    mem_free(seen);
    mem_free(order);
    mem_free(blobs);
    mem_free(svcs);
    mem_free(svc_ptrs);
}

int reflection_new(struct grpc_server *s, struct reflection **out)
{
    struct reflection *r = mem_zalloc(sizeof(*r));
    r->server = s;
    struct grpc_handler h = {
        .kind = GRPC_BIDI_STREAMING, .on_start = refl_on_start, .on_message = refl_on_message, .data = r};
    /* v1alpha has the same wire format: decode and encode it with the v1 types. */
    int rv = grpc_server_handle(s, &grpc__reflection__v1__server_reflection__descriptor,
                                "ServerReflectionInfo", &h);
    if (rv == 0) {
        rv = grpc_server_handle_path(s, "grpc.reflection.v1alpha.ServerReflection",
                                     "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                     &grpc__reflection__v1__server_reflection_request__descriptor,
                                     &grpc__reflection__v1__server_reflection_response__descriptor, &h);
    }
    /* The transport's own services (health, reflection) are always described. */
    char errmsg[GERR_MSG_SIZE];
    if (rv == 0 &&
        reflection_add_descriptor_set(r, grpc_descriptor_set, grpc_descriptor_set_len, errmsg) != 0) {
        LOG_ERROR("reflection: the embedded grpc descriptor set does not parse: %s", errmsg);
        rv = GERR_INTERNAL;
    }
    if (rv != 0) {
        reflection_free(r);
        return rv;
    }
    *out = r;
    return 0;
}

void reflection_free(struct reflection *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n_files; i++) {
        for (size_t j = 0; j < r->files[i].n_deps; j++) {
            mem_free(r->files[i].deps[j]);
        }
        mem_free(r->files[i].deps);
        mem_free(r->files[i].name);
    }
    mem_free(r->files);
    for (size_t i = 0; i < r->n_symbols; i++) {
        mem_free(r->symbols[i].name);
    }
    mem_free(r->symbols);
    mem_free(r);
}
