/* libFuzzer harness for egress/dns.h: a datagram a sandbox sends to port 53, read by the relay's
 * DNS responder, and the answer built for it.
 *
 * Promises checked (abort() on a broken one): a parsed query has a question_end within the input,
 * a name of 1..253 characters of letters, digits, '-', '_' and single dots, NUL-terminated; the
 * answer built for it (two A records) has exactly the length its parts add up to, the query's id,
 * the QR bit, one question copied byte for byte; an answer that would not fit is refused (0).
 * Input is copied into a heap block of exactly its size so ASan sees any overread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    struct egress_dns_query q;
    char why[128];
    if (egress_dns_parse_query(buf, size, &q, why, sizeof why) == 0) {
        size_t n = strnlen(q.name, sizeof q.name);
        if (q.question_end > size || q.question_end < 17 || n == 0 || n > EGRESS_DNS_NAME ||
            q.name[0] == '.' || q.name[n - 1] == '.' || strstr(q.name, "..") != NULL) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            char c = q.name[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || c == '.')) {
                abort();
            }
        }
        const uint8_t addrs[2][16] = {{10, 0, 0, 1}, {10, 0, 0, 2}};
        uint8_t out[EGRESS_DNS_MAX + 64];
        size_t len = egress_dns_answer(buf, &q, EGRESS_DNS_NOERROR, addrs, 2, 4, 30, out, sizeof out);
        size_t want = q.question_end + 2 * 16;
        if (len != want || ((unsigned)out[0] << 8 | out[1]) != q.id || (out[2] & 0x80) == 0 ||
            memcmp(out + 12, buf + 12, q.question_end - 12) != 0) {
            abort();
        }
        if (egress_dns_answer(buf, &q, EGRESS_DNS_NOERROR, addrs, 2, 4, 30, out, want - 1) != 0) {
            abort();
        }
    }
    free(buf);
    return 0;
}
