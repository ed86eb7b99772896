/* libFuzzer harness for api/auth/apikey.h: the whole input is a presented API key.
 *
 * Checks, besides "no crash, no leak, no overread": apikey_parse accepts exactly the documented
 * format (re-checked here by a plain, independent implementation), the parts point where the
 * header says, and apikey_verify agrees with parse on malformed input (GERR_INVAL) and, for a
 * well-formed key, answers 0 only for the hash computed from that key's secret. Messages are
 * terminated and never contain the secret. A broken promise calls abort(). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth/apikey.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t pepper[32] = "fuzz-pepper-fuzz-pepper-fuzz-pep";

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static int b64_value(char c)
{
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *p = c != '\0' ? strchr(abc, c) : NULL;
    return p != NULL ? (int)(p - abc) : -1;
}

/* The format of apikey.h, written the obvious way. */
static bool well_formed(const char *s, size_t n)
{
    if (n != APIKEY_LEN || memcmp(s, "gtk_", 4) != 0 || s[36] != '_') {
        return false;
    }
    for (size_t i = 4; i < 36; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    for (size_t i = 37; i < 80; i++) {
        if (b64_value(s[i]) < 0) {
            return false;
        }
    }
    return (b64_value(s[79]) & 3) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    struct apikey_parts parts;
    char *s = mem_alloc(size > 0 ? size : 1);
    memcpy(s, data, size);
    int rc = apikey_parse(s, size, &parts, errmsg);
    bool expect = well_formed(s, size);
    check((rc == 0) == expect);
    uint8_t zero[APIKEY_HASH_SIZE] = {0};
    int vrc = apikey_verify(s, size, zero, pepper, sizeof pepper, errmsg);
    check(memchr(errmsg, '\0', sizeof errmsg) != NULL);
    if (rc == 0) {
        check(parts.secret == s + 37);
        check(strlen(parts.keyid) == APIKEY_ID_LEN && memcmp(parts.keyid, s + 4, APIKEY_ID_LEN) == 0);
        check(vrc == GERR_UNAUTH); /* an all-zero hash is (overwhelmingly) no key's hash */
        check(memmem(errmsg, strlen(errmsg), parts.secret, APIKEY_SECRET_LEN) == NULL);
        uint8_t h[APIKEY_HASH_SIZE];
        check(apikey_hash(pepper, sizeof pepper, parts.secret, h, errmsg) == 0);
        check(apikey_verify(s, size, h, pepper, sizeof pepper, errmsg) == 0);
    } else {
        check(rc == GERR_INVAL && vrc == GERR_INVAL);
    }
    mem_free(s);
    return 0;
}
