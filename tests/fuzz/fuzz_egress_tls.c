/* libFuzzer harness for egress/parse.h's egress_parse_tls_sni: the first bytes a sandbox sends the egress
 * relay, read as a TLS ClientHello (its server_name).
 *
 * Input: the bytes exactly as read from the connection, copied into a heap block of exactly their
 * size so ASan sees any overread.
 *
 * Promises checked (abort() on a broken one): DONE gives a head_len within the input, names that are
 * NUL-terminated and hold only letters, digits, '.', '-', '_' (and ':' for an IPv6 literal), and a
 * port of at most 65535; every shorter prefix of the head answers MORE (the relay feeds the parser
 * as bytes arrive, so an earlier answer must never contradict the final one); feeding the head plus
 * whatever followed answers DONE with the same head; the sniffer agrees that the bytes are this
 * protocol (or cannot tell yet). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress/parse.h"

static void check_name(const char *s)
{
    size_t n = strnlen(s, EGRESS_TARGET_NAME + 1);
    if (n > EGRESS_TARGET_NAME) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_' || c == ':')) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    struct egress_target t;
    char why[128];
    enum egress_parse r = egress_parse_tls_sni(buf, size, &t, why, sizeof why);
    if (r == EGRESS_PARSE_DONE) {
        if (t.head_len == 0 || t.head_len > size || t.port > 65535) {
            abort();
        }
        check_name(t.host);
        check_name(t.http_host);
        size_t cuts[] = {t.head_len - 1, t.head_len / 2};
        for (size_t i = 0; i < 2; i++) {
            struct egress_target p;
            if (cuts[i] > 0 && egress_parse_tls_sni(buf, cuts[i], &p, why, sizeof why) != EGRESS_PARSE_MORE) {
                abort();
            }
        }
        struct egress_target again;
        if (egress_parse_tls_sni(buf, t.head_len, &again, why, sizeof why) != EGRESS_PARSE_DONE ||
            memcmp(&again, &t, sizeof t) != 0) {
            abort();
        }
        enum egress_proto pr = egress_sniff(buf, size);
        if (pr == EGRESS_PROTO_RAW) {
            abort();
        }
    }
    free(buf);
    return 0;
}
