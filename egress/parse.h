/* The egress relay's parsers of sandbox bytes (docs/egress.md, "Adapters"): what a sandbox's first
 * bytes on a connection say about where it wants to go. Pure functions over a buffer: no I/O, no
 * allocation, no state between calls. The relay calls them again with more bytes until they answer
 * DONE or BAD; every one has a libFuzzer harness (tests/fuzz/fuzz_egress_*.c).
 *
 * Results (enum egress_parse):
 *   EGRESS_PARSE_DONE  the head is complete; @out is filled and out->head_len says how many bytes
 *                      of @buf the head took (the CONNECT adapter consumes them; the others forward
 *                      the whole buffer unchanged to the destination).
 *   EGRESS_PARSE_MORE  the bytes so far are a valid beginning; call again with more. A caller that
 *                      already holds EGRESS_HEAD_MAX bytes must treat MORE as BAD: no parser asks
 *                      for more than EGRESS_HEAD_MAX bytes (each answers BAD past it).
 *   EGRESS_PARSE_BAD   not this protocol, or hostile; @why (if not NULL) says why, for the audit.
 *
 * Names are copied as sent, at most EGRESS_TARGET_NAME bytes, of letters, digits, '.', '-', '_'
 * (and ':' inside the brackets of an IPv6 literal); anything else is BAD. Whether a name is a DNS
 * name the policy can match is api/rules/egress.h's egress_intent_check's question, asked once for
 * every adapter. */
#ifndef GANTRY_EGRESS_PARSE_H
#define GANTRY_EGRESS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest head any parser reads: a CONNECT or HTTP request head, or a TLS ClientHello
 * (possibly over several records). */
#define EGRESS_HEAD_MAX    16384u
#define EGRESS_TARGET_NAME 255u

enum egress_parse { EGRESS_PARSE_DONE, EGRESS_PARSE_MORE, EGRESS_PARSE_BAD };

/* What the first bytes look like. */
enum egress_proto {
    EGRESS_PROTO_UNKNOWN, /* too few bytes to say (fewer than 8 and a prefix of something known) */
    EGRESS_PROTO_CONNECT, /* "CONNECT " */
    EGRESS_PROTO_HTTP,    /* an HTTP/1 method token in capitals followed by a space */
    EGRESS_PROTO_TLS,     /* a TLS handshake record (0x16 0x03) */
    EGRESS_PROTO_RAW,     /* anything else: raw TCP, decided by the connection's original destination */
};

struct egress_target {
    char host[EGRESS_TARGET_NAME + 1];      /* CONNECT target, absolute-form URI host, or SNI; "" if none */
    char http_host[EGRESS_TARGET_NAME + 1]; /* the Host header (without port); "" if none */
    unsigned port;                          /* from the CONNECT target, URI or Host header; 0 if none */
    size_t head_len;                        /* bytes of the head (see DONE above) */
};

/* Classify the first @len bytes of a connection. */
enum egress_proto egress_sniff(const uint8_t *buf, size_t len);

/* "CONNECT host:port HTTP/1.x" CRLF, header lines, CRLF. The target is host:port or [ipv6]:port
 * (the brackets dropped), the port 1..65535 in decimal; header lines must each hold a ':' and no
 * control characters; line folding and bare LF are refused. */
enum egress_parse egress_parse_connect(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                       size_t why_len);

/* An HTTP/1.x request head: "METHOD target HTTP/1.x" CRLF, headers, CRLF. The target is
 * origin-form ("/..."; the destination is the Host header) or absolute-form ("http://host[:port]/...";
 * the destination is the URI's host, and a Host header, when present, is reported too so the
 * decision checks both). Exactly one Host header at most (two are refused: two readers of the
 * request could pick different ones); origin-form needs one. Port: the URI's or the Host header's,
 * else 80. "https://" absolute-form is refused (a client sends that only inside CONNECT). */
enum egress_parse egress_parse_http(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                    size_t why_len);

/* A TLS ClientHello, reassembled from consecutive handshake records, read without terminating TLS:
 * out->host is the host_name of the server_name extension ("" when the ClientHello has none);
 * out->port is 0 (the port is the connection's). A record that is not a handshake, a handshake
 * message that is not a ClientHello, or any length that runs past its container is BAD. */
enum egress_parse egress_parse_tls_sni(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                       size_t why_len);

#endif
