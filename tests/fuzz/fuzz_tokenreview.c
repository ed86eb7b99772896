/* Arbitrary bytes as a Kubernetes API server's answer to a TokenReview (api/auth/tokenreview.h):
 * the parser must never crash, leak or read out of bounds; it answers only 0, GERR_UNAUTH or
 * GERR_INVAL, always with a NUL-terminated message on a refusal; and it accepts an answer only when
 * it names the user and an audience asked for. The request builder is run on the same bytes as a
 * token: JSON that holds them byte for byte, or NULL exactly when they are not UTF-8. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/auth/tokenreview.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const auds[] = {"gantry", "other"};
    const char *user = "system:serviceaccount:platform:sandbox-controller";
    char errmsg[GERR_MSG_SIZE];
    errmsg[0] = '\0';
    int rc = tokenreview_parse((const char *)data, size, user, auds, 2, errmsg);
    if (rc != 0 && rc != GERR_UNAUTH && rc != GERR_INVAL) {
        __builtin_trap();
    }
    if (rc != 0 && (errmsg[0] == '\0' || strnlen(errmsg, GERR_MSG_SIZE) == GERR_MSG_SIZE)) {
        __builtin_trap();
    }
    if (rc == 0) { /* accepted: the answer really says so */
        json_t *doc = json_loadb((const char *)data, size, 0, NULL);
        json_t *st = json_object_get(doc, "status");
        const char *name = json_string_value(json_object_get(json_object_get(st, "user"), "username"));
        if (!json_is_true(json_object_get(st, "authenticated")) || name == NULL || strcmp(name, user) != 0) {
            __builtin_trap();
        }
        json_decref(doc);
    }
    /* The request: NULL only for a token that is not UTF-8; else JSON holding the token. */
    char *req = tokenreview_request((const char *)data, size, auds, 2);
    if (req != NULL) {
        json_t *doc = json_loads(req, JSON_ALLOW_NUL, NULL);
        json_t *tok = json_object_get(json_object_get(doc, "spec"), "token");
        if (tok == NULL || json_string_length(tok) != size ||
            memcmp(json_string_value(tok), data, size) != 0) {
            __builtin_trap();
        }
        json_decref(doc);
        mem_free(req);
    } else {
        json_t *t = json_stringn((const char *)data, size);
        if (t != NULL) {
            __builtin_trap();
        }
    }
    return 0;
}
