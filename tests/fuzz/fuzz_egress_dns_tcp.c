/* libFuzzer harness for DNS over TCP (egress/dns.h): the bytes a sandbox sends on a TCP connection
 * to port 53, cut into length-prefixed messages by egress_dns_tcp_frame, each parsed as a query and
 * answered, as the relay does.
 *
 * Promises checked (abort() on a broken one): a frame is reported only when all its bytes are there
 * and its length is 1..EGRESS_DNS_MAX; "more" only while fewer bytes than the prefix says are there;
 * an error only for a length of 0 or over EGRESS_DNS_MAX; a parsed query's question lies within its
 * message, and the answer built for it fits the relay's buffer with its own prefix. Every message is
 * copied into a heap block of exactly its size so ASan sees any overread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        size_t left = size - off, n = 0;
        uint8_t *head = malloc(left);
        if (head == NULL) {
            return 0;
        }
        memcpy(head, data + off, left);
        int r = egress_dns_tcp_frame(head, left, &n);
        size_t declared = left >= 2 ? ((size_t)head[0] << 8 | head[1]) : 0;
        free(head);
        if (r == 0) {
            if (left >= 2 && (declared == 0 || declared > EGRESS_DNS_MAX || left >= 2 + declared)) {
                abort();
            }
            return 0;
        }
        if (r < 0) {
            if (declared != 0 && declared <= EGRESS_DNS_MAX) {
                abort();
            }
            return 0;
        }
        if (n == 0 || n > EGRESS_DNS_MAX || n != declared || 2 + n > left) {
            abort();
        }
        uint8_t *msg = malloc(n);
        if (msg == NULL) {
            return 0;
        }
        memcpy(msg, data + off + 2, n);
        struct egress_dns_query q;
        if (egress_dns_parse_query(msg, n, &q, NULL, 0) == 0) {
            if (q.question_end > n) {
                abort();
            }
            const uint8_t addrs[8][16] = {{10, 0, 0, 1}};
            uint8_t out[2 + EGRESS_DNS_MAX];
            size_t len =
                egress_dns_answer(msg, &q, EGRESS_DNS_NOERROR, addrs, 8, 4, 30, out + 2, sizeof out - 2);
            if (len > EGRESS_DNS_MAX) {
                abort();
            }
        }
        free(msg);
        off += 2 + n;
    }
    return 0;
}
