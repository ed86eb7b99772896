/* The egress relay's DNS messages. See dns.h. */
#include "egress/dns.h"

#include <stdio.h>
#include <string.h>

static int bad(char *why, size_t len, const char *text)
{
    if (why != NULL && len > 0) {
        snprintf(why, len, "%s", text);
    }
    return -1;
}

static unsigned u16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

int egress_dns_tcp_frame(const uint8_t *buf, size_t len, size_t *msg_len)
{
    *msg_len = 0;
    if (len < 2) {
        return 0;
    }
    size_t n = u16(buf);
    if (n == 0 || n > EGRESS_DNS_MAX) {
        return -1;
    }
    if (len < 2 + n) {
        return 0;
    }
    *msg_len = n;
    return 1;
}

int egress_dns_parse_query(const uint8_t *buf, size_t len, struct egress_dns_query *q, char *why,
                           size_t why_len)
{
    memset(q, 0, sizeof *q);
    if (len < 12 || len > EGRESS_DNS_MAX) {
        return bad(why, why_len, "a DNS message shorter than its header or longer than 512 bytes");
    }
    unsigned flags = u16(buf + 2);
    if ((flags & 0x8000u) != 0 || ((flags >> 11) & 0xfu) != 0) {
        return bad(why, why_len, "not a standard DNS query");
    }
    if (u16(buf + 4) != 1 || u16(buf + 6) != 0 || u16(buf + 8) != 0 || u16(buf + 10) > 1) {
        return bad(why, why_len, "a DNS query must ask exactly one question and carry no records but EDNS");
    }
    q->id = (uint16_t)u16(buf);
    q->rd = (flags & 0x0100u) != 0;
    size_t p = 12, n = 0;
    for (;;) {
        if (p >= len) {
            return bad(why, why_len, "the question name runs past the message");
        }
        unsigned l = buf[p++];
        if (l == 0) {
            break;
        }
        if (l > 63) {
            return bad(why, why_len, "a compressed or over-long label in the question");
        }
        if (len - p < l) {
            return bad(why, why_len, "a label runs past the message");
        }
        if (n + (n > 0) + l > EGRESS_DNS_NAME) {
            return bad(why, why_len, "the question name is longer than 253 characters");
        }
        if (n > 0) {
            q->name[n++] = '.';
        }
        for (unsigned i = 0; i < l; i++) {
            uint8_t c = buf[p + i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_')) {
                return bad(why, why_len, "a label holds a character outside letters, digits, '-', '_'");
            }
            q->name[n++] = (char)c;
        }
        p += l;
    }
    q->name[n] = '\0';
    if (n == 0) {
        return bad(why, why_len, "a question about the root");
    }
    if (len - p < 4) {
        return bad(why, why_len, "the question's type and class run past the message");
    }
    q->qtype = (uint16_t)u16(buf + p);
    if (u16(buf + p + 2) != 1) {
        return bad(why, why_len, "a question of a class other than IN");
    }
    q->question_end = p + 4;
    return 0;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

size_t egress_dns_answer(const uint8_t *query, const struct egress_dns_query *q, unsigned rcode,
                         const uint8_t (*addrs)[16], size_t n, size_t addr_len, uint32_t ttl, uint8_t *out,
                         size_t cap)
{
    size_t qlen = q->question_end - 12, need = 12 + qlen + n * (12 + addr_len);
    if (need > cap || q->question_end < 12) {
        return 0;
    }
    put16(out, q->id);
    put16(out + 2, 0x8000u | 0x0080u | (q->rd ? 0x0100u : 0) | (rcode & 0xfu)); /* QR, RA, RD, rcode */
    put16(out + 4, 1);
    put16(out + 6, (unsigned)n);
    put16(out + 8, 0);
    put16(out + 10, 0);
    memcpy(out + 12, query + 12, qlen);
    size_t p = 12 + qlen;
    for (size_t i = 0; i < n; i++) {
        put16(out + p, 0xc00cu); /* the question's name */
        put16(out + p + 2, q->qtype);
        put16(out + p + 4, 1);
        put16(out + p + 6, ttl >> 16);
        put16(out + p + 8, ttl & 0xffffu);
        put16(out + p + 10, (unsigned)addr_len);
        memcpy(out + p + 12, addrs[i], addr_len);
        p += 12 + addr_len;
    }
    return p;
}
