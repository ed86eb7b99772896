/* The egress relay's DNS messages (docs/egress.md, "DNS"): the query a sandbox sends, and the answer
 * the relay builds. Pure functions over buffers: no I/O, no allocation. The parser has a libFuzzer
 * harness (tests/fuzz/fuzz_egress_dns.c).
 *
 * Accepted queries are the plain ones every stub resolver sends: one UDP datagram of at most
 * EGRESS_DNS_MAX bytes, QR 0, opcode QUERY, exactly one question of class IN, no answer or
 * authority records, at most one additional record (an EDNS OPT, ignored), a name without
 * compression of 1..253 characters in labels of 1..63 letters, digits, '-' or '_'. */
#ifndef GANTRY_EGRESS_DNS_H
#define GANTRY_EGRESS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EGRESS_DNS_MAX      512u /* bytes of a query read, and of an answer written */
#define EGRESS_DNS_NAME     253u
#define EGRESS_DNS_A        1u
#define EGRESS_DNS_AAAA     28u
#define EGRESS_DNS_NOERROR  0u
#define EGRESS_DNS_SERVFAIL 2u
#define EGRESS_DNS_NXDOMAIN 3u
#define EGRESS_DNS_REFUSED  5u

struct egress_dns_query {
    uint16_t id;
    uint16_t qtype;
    bool rd;                        /* recursion desired, echoed back */
    char name[EGRESS_DNS_NAME + 1]; /* dotted, as asked, without the root's dot */
    size_t question_end;            /* offset of the byte after the question */
};

/* Parse the @len bytes of one datagram. 0, or -1 with the reason in @why (if not NULL). */
int egress_dns_parse_query(const uint8_t *buf, size_t len, struct egress_dns_query *q, char *why,
                           size_t why_len);

/* DNS over TCP (RFC 1035 4.2.2, RFC 7766): each message is preceded by its length as two bytes in
 * network order, and several may follow one another on one connection. Of the @len bytes at @buf
 * (the stream as received so far): 1 with *@msg_len the length of the first message (which starts
 * at @buf + 2), 0 when more bytes are needed, -1 when the length is 0 or over EGRESS_DNS_MAX (the
 * relay reads no larger query; the connection is closed). */
int egress_dns_tcp_frame(const uint8_t *buf, size_t len, size_t *msg_len);

/* The answer to @q (parsed from @query) with @rcode and @n addresses (@addrs[i] of @addr_len bytes
 * each: 4 for A, 16 for AAAA; records of type @q->qtype), TTL @ttl, into @out. Its length, or 0 when
 * it would not fit @cap (answers past EGRESS_DNS_MAX are the caller's to avoid: at most 8 of them). */
size_t egress_dns_answer(const uint8_t *query, const struct egress_dns_query *q, unsigned rcode,
                         const uint8_t (*addrs)[16], size_t n, size_t addr_len, uint32_t ttl, uint8_t *out,
                         size_t cap);

#endif
