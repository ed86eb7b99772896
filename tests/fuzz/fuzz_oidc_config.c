/* Arbitrary bytes as gantryd's OIDC issuers file (server/oidc_config.h): parsing and every check of
 * oidc_add_issuer must never crash, leak or read out of bounds, and every refusal has a message
 * naming the file or the issuer. Nothing is fetched: the authenticator is never started. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/oidc_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct oidc *o = NULL;
    char errmsg[GERR_MSG_SIZE];
    errmsg[0] = '\0';
    int rv = oidc_config_parse((const char *)data, size, "fuzz.json", &o, errmsg);
    if (rv == 0) {
        if (o == NULL) {
            __builtin_trap();
        }
        oidc_free(o);
    } else if (o != NULL || strnlen(errmsg, GERR_MSG_SIZE) == GERR_MSG_SIZE ||
               strncmp(errmsg, "oidc", 4) != 0) {
        __builtin_trap();
    }
    return 0;
}
