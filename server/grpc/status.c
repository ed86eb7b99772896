#include "server/grpc/status.h"

#include "lib/err.h"

int grpc_status_from_gerr(int gerr)
{
    switch (gerr) {
    case GERR_OK:
        return GRPC_STATUS_OK;
    case GERR_INVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case GERR_TIMEOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case GERR_TOOBIG:
    case GERR_NOMEM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case GERR_NOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case GERR_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case GERR_CONSTRAINT:
    case GERR_REFUSED:
    case GERR_STALE:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case GERR_ABORTED:
    case GERR_BUSY:
        return GRPC_STATUS_ABORTED;
    case GERR_UNAVAILABLE:
    case GERR_NOTLEADER:
    case GERR_NOLEADER:
    case GERR_CLOSED:
    case GERR_IO:
        return GRPC_STATUS_UNAVAILABLE;
    case GERR_UNKNOWN_OUTCOME:
        /* The write may have committed: the client must retry with the same request_id. */
        return GRPC_STATUS_UNAVAILABLE;
    case GERR_CANCELED:
        return GRPC_STATUS_CANCELLED;
    case GERR_PERM:
        return GRPC_STATUS_PERMISSION_DENIED;
    case GERR_UNAUTH:
        return GRPC_STATUS_UNAUTHENTICATED;
    case GERR_PROTO:
    case GERR_SQL:
    case GERR_INTERNAL:
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

const char *grpc_status_name(int status)
{
    static const char *const names[GRPC_STATUS__COUNT] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
    };
    if (status < 0 || status >= GRPC_STATUS__COUNT) {
        return "UNKNOWN_CODE";
    }
    return names[status];
}

void grpc_status_percent_encode(struct buf *out, const char *msg)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_append(out, enc, 3);
        } else {
            buf_append(out, p, 1);
        }
    }
}
