/* libFuzzer harness for the join-token parser (api/services/clusterdb.h): tokens arrive from anyone who
 * can reach the API (Join is authenticated by the token itself) and from operators' files.
 *
 * Checks besides "no crash, no overread": a parsed token's parts have the documented lengths and
 * alphabet, and re-serialising them gives back exactly the input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services/clusterdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512) {
        return 0;
    }
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct join_token_parts p;
    char errmsg[GERR_MSG_SIZE];
    if (join_token_parse(s, &p, errmsg) == 0) {
        char again[JOIN_TOKEN_MAX_LEN + 2];
        if (strlen(p.id) != JOIN_TOKEN_ID_HEX || strlen(p.secret) != JOIN_TOKEN_SECRET_HEX) {
            abort();
        }
        if (p.ca_fingerprint[0] != '\0') {
            snprintf(again, sizeof again, "gjt_%s_%s_%s", p.id, p.secret, p.ca_fingerprint + 7);
        } else {
            snprintf(again, sizeof again, "gjt_%s_%s", p.id, p.secret);
        }
        if (strcmp(again, s) != 0) {
            abort();
        }
    } else if (strlen(s) >= 12 && strstr(errmsg, s) != NULL) {
        abort(); /* the message must not quote the token */
    }
    free(s);
    return 0;
}
