/* libFuzzer harness: the strict request check (server/grpc/wirecheck.h) on arbitrary bytes.
 *
 * The first byte picks the message type: 0 CreateSandboxRequest, 1 SetQuotaRequest,
 * 2 CreateRoleBindingRequest, 3 EchoRequest, then the input type of every gantry.v1 method in
 * api_services[] order; the rest is the message. Checked properties:
 *   - the walker terminates without reading out of bounds (ASan), and any error message is a
 *     NUL-terminated string that fits GERR_MSG_SIZE;
 *   - whatever the walker accepts and protobuf-c then decodes holds only valid UTF-8 strings
 *     and enum values the descriptors declare (what the handlers rely on);
 *   - with a field limit, a message the walker accepts decodes into at most that many fields. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/proto/services.h"
#include "gantry/testing/v1/echo.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/err.h"
#include "lib/utf8.h"
#include "server/grpc/wirecheck.h"

#define MAX_TYPES 256

static const ProtobufCMessageDescriptor *types[MAX_TYPES];
static size_t n_types;

static void setup(void)
{
    types[n_types++] = &gantry__v1__create_sandbox_request__descriptor;
    types[n_types++] = &gantry__v1__set_quota_request__descriptor;
    types[n_types++] = &gantry__v1__create_role_binding_request__descriptor;
    types[n_types++] = &gantry__testing__v1__echo_request__descriptor;
    for (size_t i = 0; api_services[i] != NULL; i++) {
        for (unsigned m = 0; m < api_services[i]->n_methods && n_types < MAX_TYPES; m++) {
            types[n_types++] = api_services[i]->methods[m].input;
        }
    }
}

/* Walk a decoded message: every string valid UTF-8, every enum known. Returns how many strings,
 * enums and messages it holds that must have come from a field on the wire. */
static size_t verify(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    size_t count = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)msg;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id) {
            continue;
        }
        size_t n = 1;
        const void *vals = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            vals = *(void *const *)(base + f->offset);
        }
        for (size_t j = 0; j < n; j++) {
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING: {
                const char *s = ((const char *const *)vals)[j];
                if (s != NULL && !utf8_valid(s, strlen(s), NULL)) {
                    abort();
                }
                count += s != NULL && s[0] != '\0'; /* proto3: an absent string is "" */
                break;
            }
            case PROTOBUF_C_TYPE_ENUM: {
                int32_t v = ((const int32_t *)vals)[j];
                if (protobuf_c_enum_descriptor_get_value(f->descriptor, v) == NULL) {
                    abort();
                }
                count += v != 0; /* proto3: an absent enum is 0 */
                break;
            }
            case PROTOBUF_C_TYPE_MESSAGE: {
                const ProtobufCMessage *sub = ((const ProtobufCMessage *const *)vals)[j];
                if (sub != NULL) {
                    count += 1 + verify(sub);
                }
                break;
            }
            default:
                break;
            }
        }
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (n_types == 0) {
        setup();
    }
    if (size < 1) {
        return 0;
    }
    const ProtobufCMessageDescriptor *d = types[data[0] % n_types];
    char errmsg[GERR_MSG_SIZE];
    memset(errmsg, 'x', sizeof errmsg);
    struct wirecheck_limits lim = {.max_fields = 512, .max_depth = 8};
    int rv = wirecheck_message(d, data + 1, size - 1, &lim, errmsg);
    if (rv != 0) {
        if (memchr(errmsg, '\0', sizeof errmsg) == NULL ||
            (rv != GERR_INVAL && rv != GERR_TOOBIG && rv != GERR_PROTO)) {
            abort();
        }
        return 0;
    }
    ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (msg != NULL) {
        if (verify(msg) > lim.max_fields) {
            abort();
        }
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return 0;
}
