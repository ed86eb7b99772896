/* libFuzzer harness for what a browser sends the operator console (server/console_req.h): query
 * strings, Cookie headers and the JSON bodies of sign-in and drills come from anyone who can reach
 * the admin port, before any authentication.
 *
 * The first byte picks the decoder; the rest is its input. Checks besides "no crash, no overread":
 * a decoded filter has only its field's characters, a session id is 64 lowercase hex digits, a
 * token only the token alphabet. (That messages never quote a value is tests/unit/test_console_req.c's
 * job: a fuzzer can spell a message's own words.) */
#include <stdlib.h>
#include <string.h>

#include "server/console_req.h"

static void only(const char *s, const char *alphabet)
{
    if (strspn(s, alphabet) != strlen(s)) {
        abort();
    }
}

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGIT "0123456789"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192) {
        return 0;
    }
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    char errmsg[GERR_MSG_SIZE];
    switch (data[0] % 4) {
    case 0: {
        struct console_filter f;
        if (console_req_filter(s, &f, errmsg) == 0) {
            only(f.ns, LOWER DIGIT "-");
            only(f.op, LOWER UPPER DIGIT "./"); /* "/gantry.v1.<Service>/<Method>" */
            only(f.status, "SuccessFailure");
            only(f.actor, LOWER UPPER DIGIT "-:._");
        }
        break;
    }
    case 1: {
        char id[CONSOLE_SESSION_ID_LEN + 1];
        if (console_req_session(s, id) == 0) {
            if (strlen(id) != CONSOLE_SESSION_ID_LEN) {
                abort();
            }
            only(id, DIGIT "abcdef");
        }
        break;
    }
    case 2: {
        char *tok = malloc(CONSOLE_TOKEN_MAX + 1);
        if (console_req_login(data + 1, size - 1, tok, CONSOLE_TOKEN_MAX + 1, errmsg) == 0) {
            if (strlen(tok) == 0 || strlen(tok) > CONSOLE_TOKEN_MAX) {
                abort();
            }
            only(tok, LOWER UPPER DIGIT "._~+/=-");
        }
        free(tok);
        break;
    }
    default: {
        uint64_t target;
        console_req_drill(data + 1, size - 1, &target, errmsg);
        break;
    }
    }
    free(s);
    return 0;
}
