#include "lib/sslerr.h"

#include <openssl/err.h>

#include "lib/err.h"

int sslerr_from_openssl(char *errmsg, const char *what)
{
    unsigned long e, first = 0;
    char reason[256] = "unknown OpenSSL error";
    while ((e = ERR_get_error()) != 0) {
        if (first == 0) {
            first = e;
            ERR_error_string_n(e, reason, sizeof reason);
        }
    }
    gerr_set(errmsg, "%s: %s", what, reason);
    if (first == 0) {
        return GERR_INTERNAL;
    }
    if (ERR_GET_REASON(first) == ERR_R_MALLOC_FAILURE) {
        return GERR_NOMEM;
    }
    int lib = ERR_GET_LIB(first);
    if (lib == ERR_LIB_PEM || lib == ERR_LIB_ASN1 || lib == ERR_LIB_X509 || lib == ERR_LIB_X509V3) {
        return GERR_INVAL;
    }
    return GERR_INTERNAL;
}
