#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *gerr_str(int code)
{
    switch (code) {
#define GERR__STR(name, value, text)                                                                         \
    case value:                                                                                              \
        return text;
        GERR_MAP(GERR__STR)
#undef GERR__STR
    default:
        return "unknown error";
    }
}

const char *gerr_name(int code)
{
    switch (code) {
#define GERR__NAME(name, value, text)                                                                        \
    case value:                                                                                              \
        return #name;
        GERR_MAP(GERR__NAME)
#undef GERR__NAME
    default:
        return "GERR_UNKNOWN";
    }
}

int gerr_from_errno(int err)
{
    switch (err) {
    case 0:
        return GERR_OK;
    case EAGAIN:
    case ETIMEDOUT:
        return GERR_TIMEOUT;
    case ENOMEM:
        return GERR_NOMEM;
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
        return GERR_CLOSED;
    case EINVAL:
        return GERR_INVAL;
    case ENOENT:
        return GERR_NOTFOUND;
    case EEXIST:
        return GERR_EXISTS;
    case EACCES:
    case EPERM:
        return GERR_PERM;
    default:
        return GERR_IO;
    }
}

void gerr_set(char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, GERR_MSG_SIZE, fmt, ap);
    va_end(ap);
}

void gerr_wrap(char *msg, const char *fmt, ...)
{
    char inner[GERR_MSG_SIZE];
    char prefix[GERR_MSG_SIZE];
    va_list ap;

    memcpy(inner, msg, GERR_MSG_SIZE);
    inner[GERR_MSG_SIZE - 1] = '\0';
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Truncation is the documented behaviour: keep as much of both as fits. */
    size_t n = strnlen(prefix, sizeof prefix);
    memcpy(msg, prefix, n);
    if (inner[0] != '\0' && n + 2 < GERR_MSG_SIZE) {
        msg[n++] = ':';
        msg[n++] = ' ';
        size_t m = strnlen(inner, GERR_MSG_SIZE);
        if (m > GERR_MSG_SIZE - 1 - n) {
            m = GERR_MSG_SIZE - 1 - n;
        }
        memcpy(msg + n, inner, m);
        n += m;
    }
    msg[n < GERR_MSG_SIZE ? n : GERR_MSG_SIZE - 1] = '\0';
}
