/* gRPC status codes and the one mapping from Gantry's GERR_* codes to them.
 *
 * Handlers return GERR_* codes from lib/err.h; grpc_status_from_gerr() is the only place that
 * decides which gRPC status a client sees for each. */
#ifndef GANTRY_SERVER_GRPC_STATUS_H
#define GANTRY_SERVER_GRPC_STATUS_H

#include <stddef.h>

#include "lib/buf.h"

enum grpc_status {
    GRPC_STATUS_OK = 0,
    GRPC_STATUS_CANCELLED = 1,
    GRPC_STATUS_UNKNOWN = 2,
    GRPC_STATUS_INVALID_ARGUMENT = 3,
    GRPC_STATUS_DEADLINE_EXCEEDED = 4,
    GRPC_STATUS_NOT_FOUND = 5,
    GRPC_STATUS_ALREADY_EXISTS = 6,
    GRPC_STATUS_PERMISSION_DENIED = 7,
    GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
    GRPC_STATUS_FAILED_PRECONDITION = 9,
    GRPC_STATUS_ABORTED = 10,
    GRPC_STATUS_OUT_OF_RANGE = 11,
    GRPC_STATUS_UNIMPLEMENTED = 12,
    GRPC_STATUS_INTERNAL = 13,
    GRPC_STATUS_UNAVAILABLE = 14,
    GRPC_STATUS_DATA_LOSS = 15,
    GRPC_STATUS_UNAUTHENTICATED = 16,
};
#define GRPC_STATUS__COUNT 17

/* The gRPC status a client sees for @gerr (a GERR_* code; 0 gives OK, unknown codes INTERNAL). */
int grpc_status_from_gerr(int gerr);

/* "DEADLINE_EXCEEDED" etc.; "UNKNOWN_CODE" outside 0..16. Static. */
const char *grpc_status_name(int status);

/* Append @msg percent-encoded as the gRPC spec requires for grpc-message: bytes outside
 * 0x20..0x7e and '%' itself become %XX. Not NUL-terminated. */
void grpc_status_percent_encode(struct buf *out, const char *msg);

#endif
