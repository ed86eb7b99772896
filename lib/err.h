/* Gantry's error codes: one table for the whole project.
 *
 * Functions return int: 0 for success, otherwise one of the positive GERR_* codes below. Codes from
 * dependencies (errno, libuv, SQLite/dqlite, OpenSSL, nghttp2, curl) are translated in exactly one
 * function per dependency: gerr_from_errno() here, the others in the module that owns the dependency.
 * The text that explains *this* failure travels separately, in a caller-provided errmsg buffer of
 * GERR_MSG_SIZE bytes, wrapped with context as it crosses layers (gerr_wrap). */
#ifndef GANTRY_LIB_ERR_H
#define GANTRY_LIB_ERR_H

#include <stddef.h>

#define GERR_MSG_SIZE 512

/* X(name, value, text). Values are stable: they appear in logs and metrics. */
#define GERR_MAP(X)                                                                                          \
    X(GERR_OK, 0, "ok")                                                                                      \
    X(GERR_NOMEM, 1, "out of memory")                                                                        \
    X(GERR_INVAL, 2, "invalid argument")                                                                     \
    X(GERR_IO, 3, "I/O error")                                                                               \
    X(GERR_TIMEOUT, 4, "timed out")                                                                          \
    X(GERR_PROTO, 5, "protocol violation by peer")                                                           \
    X(GERR_TOOBIG, 6, "message or result too large")                                                         \
    X(GERR_REFUSED, 7, "request refused by client-side safety check")                                        \
    X(GERR_CLOSED, 8, "connection closed")                                                                   \
    X(GERR_NOTLEADER, 9, "node is not the leader")                                                           \
    X(GERR_NOLEADER, 10, "no leader could be found")                                                         \
    X(GERR_UNKNOWN_OUTCOME, 11, "write outcome unknown (it may or may not have committed)")                  \
    X(GERR_BUSY, 12, "database busy")                                                                        \
    X(GERR_NOTFOUND, 13, "not found")                                                                        \
    X(GERR_EXISTS, 14, "already exists")                                                                     \
    X(GERR_CONSTRAINT, 15, "constraint violated")                                                            \
    X(GERR_SQL, 16, "SQL error")                                                                             \
    X(GERR_ABORTED, 17, "aborted")                                                                           \
    X(GERR_UNAVAILABLE, 18, "unavailable")                                                                   \
    X(GERR_CANCELED, 19, "canceled")                                                                         \
    X(GERR_PERM, 20, "permission denied")                                                                    \
    X(GERR_UNAUTH, 21, "unauthenticated")                                                                    \
    X(GERR_INTERNAL, 22, "internal error")                                                                   \
    X(GERR_STALE, 23, "stale lease epoch")

enum {
#define GERR__ENUM(name, value, text) name = value,
    GERR_MAP(GERR__ENUM)
#undef GERR__ENUM
        GERR__COUNT
};

/* Static text for @code ("unknown error" for codes outside the table). Never NULL. */
const char *gerr_str(int code);

/* Static symbolic name ("GERR_TIMEOUT") for @code. Never NULL. */
const char *gerr_name(int code);

/* The one translation of errno values: EAGAIN/ETIMEDOUT -> GERR_TIMEOUT; ENOMEM -> GERR_NOMEM;
 * ECONNREFUSED/ECONNRESET/ECONNABORTED/EPIPE/ENOTCONN/EHOSTUNREACH/ENETUNREACH -> GERR_CLOSED;
 * EINVAL -> GERR_INVAL; ENOENT -> GERR_NOTFOUND; EEXIST -> GERR_EXISTS; EACCES/EPERM -> GERR_PERM;
 * 0 -> GERR_OK; anything else -> GERR_IO. */
int gerr_from_errno(int err);

/* printf-style into @msg (GERR_MSG_SIZE bytes). Always NUL-terminates; truncates silently. */
void gerr_set(char *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the message already in @msg with context: "ctx: <old message>". */
void gerr_wrap(char *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
