#include "lib/uverr.h"

#include <uv.h>

#include "lib/err.h"

int uverr_to_gerr(int rv, char *errmsg)
{
    if (errmsg != NULL) {
        gerr_set(errmsg, "%s", uv_strerror(rv));
    }
    switch (rv) {
    case 0:
        return 0;
    case UV_ENOMEM:
        return GERR_NOMEM;
    case UV_EINVAL:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT:
        return GERR_INVAL;
    case UV_EOF:
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ENOTCONN:
    case UV_ECANCELED:
        return GERR_CLOSED;
    case UV_ETIMEDOUT:
        return GERR_TIMEOUT;
    case UV_EADDRINUSE:
    case UV_EACCES:
        return GERR_REFUSED;
    default:
        return GERR_IO;
    }
}
