/* A strict check of a protobuf message's wire bytes against its protobuf-c descriptor, run before
 * protobuf-c decodes them (call.c does it for every request message before a handler sees it).
 *
 * protobuf-c accepts what proto3 forbids and changes it silently: a string field that is not
 * valid UTF-8 is stored as sent, one with an embedded NUL is cut at the NUL (the C string ends
 * there), and an enum value the descriptor does not list is kept as a plain int. It also decodes
 * any number of fields, allocating for each. This walker refuses all of these, naming the field:
 *
 *   sandbox.meta.name: invalid UTF-8
 *   sandbox.meta.labels["team"]: contains a NUL byte
 *   sandbox.spec.env[3].value: invalid UTF-8
 *   quota.mode: unknown value 77 of enum gantry.v1.QuotaMode
 *
 * Paths use the proto field names; a repeated field's element is `name[i]` (i counts the
 * field's elements in the order they appear on the wire, packed ones included); a map entry
 * (a repeated message of a `...Entry` type with fields key = 1 and value = 2) is
 * `name["key"]` when its key is a short printable string, `name[123]` for an integer key, and
 * `name[i]` otherwise.
 *
 * What it checks: every string field (recursively through sub-messages, repeated fields, oneofs
 * and map entries) is valid UTF-8 (lib/utf8.h) without NUL bytes; every enum value, packed or
 * not, is one the enum declares; the encoding is well formed (varints of at most 10 bytes,
 * lengths within the message, wire types 0, 1, 2 and 5 only, field numbers 1 to 2^29-1, and
 * wire type 2 for known string and message fields, 0 or 2 for enums); at most @max_fields
 * fields in all (every tag counts, nested and unknown ones included, and so does every element
 * of a packed repeated field); sub-messages nested at most @max_depth deep. Unknown fields are
 * allowed (proto3 forward compatibility) and counted. Bytes fields are not looked into.
 *
 * Cost: one pass over the bytes, no allocation, recursion bounded by @max_depth. Pure: any
 * thread. */
#ifndef GANTRY_SERVER_GRPC_WIRECHECK_H
#define GANTRY_SERVER_GRPC_WIRECHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

struct wirecheck_limits {
    uint32_t max_fields; /* fields in the whole message, nested ones included; 0 = no limit */
    uint32_t max_depth;  /* nesting of sub-messages (the top level is 0); 0 = no limit */
};

/* Check the @len bytes at @data as a message of type @desc. Returns 0 or:
 *   GERR_INVAL  a string that is not UTF-8 or contains a NUL, or an unknown enum value;
 *               @errmsg is "<field path>: <what is wrong>";
 *   GERR_TOOBIG more than max_fields fields, or deeper than max_depth (@errmsg says which);
 *   GERR_PROTO  not a well-formed encoding of @desc (@errmsg says where).
 * @errmsg (GERR_MSG_SIZE bytes) is written only on error. */
int wirecheck_message(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                      const struct wirecheck_limits *limits, char *errmsg);

#endif
