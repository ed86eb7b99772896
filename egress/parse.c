/* The egress relay's parsers of sandbox bytes. See parse.h. Every length read from the input is
 * checked against what remains of its container before it is used. */
#include "egress/parse.h"

#include <stdio.h>
#include <string.h>

static enum egress_parse bad(char *why, size_t why_len, const char *text)
{
    if (why != NULL && why_len > 0) {
        snprintf(why, why_len, "%s", text);
    }
    return EGRESS_PARSE_BAD;
}

static bool is_upper(uint8_t c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_name_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static bool is_hex_or_colon(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
}

enum egress_proto egress_sniff(const uint8_t *buf, size_t len)
{
    static const char connect[] = "CONNECT ";
    if (len == 0) {
        return EGRESS_PROTO_UNKNOWN;
    }
    if (buf[0] == 0x16) {
        if (len < 2) {
            return EGRESS_PROTO_UNKNOWN;
        }
        return buf[1] == 0x03 ? EGRESS_PROTO_TLS : EGRESS_PROTO_RAW;
    }
    size_t n = len < 8 ? len : 8;
    if (memcmp(buf, connect, n) == 0) {
        return n == 8 ? EGRESS_PROTO_CONNECT : EGRESS_PROTO_UNKNOWN;
    }
    for (size_t i = 0; i < len && i <= 16; i++) {
        if (buf[i] == ' ' && i > 0) {
            return EGRESS_PROTO_HTTP;
        }
        if (!is_upper(buf[i])) {
            return EGRESS_PROTO_RAW;
        }
    }
    return len <= 16 ? EGRESS_PROTO_UNKNOWN : EGRESS_PROTO_RAW;
}

/* "host", "host:port", "[v6]" or "[v6]:port" in @s[0..n) into @host and *@port (0 when absent).
 * false with @why on anything else. */
static bool parse_hostport(const uint8_t *s, size_t n, char *host, unsigned *port, const char **why)
{
    size_t hs, he, rest;
    if (n > 0 && s[0] == '[') {
        size_t close = 1;
        while (close < n && s[close] != ']') {
            if (!is_hex_or_colon(s[close])) {
                *why = "the address in brackets is not an IPv6 literal";
                return false;
            }
            close++;
        }
        if (close == n) {
            *why = "an IPv6 literal without its closing ']'";
            return false;
        }
        hs = 1, he = close, rest = close + 1;
    } else {
        size_t colon = 0;
        while (colon < n && s[colon] != ':') {
            if (!is_name_char(s[colon])) {
                *why = "the host holds a character outside letters, digits, '.', '-', '_'";
                return false;
            }
            colon++;
        }
        hs = 0, he = colon, rest = colon;
    }
    if (he == hs) {
        *why = "the host is empty";
        return false;
    }
    if (he - hs > EGRESS_TARGET_NAME) {
        *why = "the host is longer than 255 bytes";
        return false;
    }
    *port = 0;
    if (rest < n) {
        if (s[rest] != ':' || rest + 1 == n || n - rest - 1 > 5) {
            *why = "the port is not 1..65535 in decimal";
            return false;
        }
        unsigned v = 0;
        for (size_t i = rest + 1; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                *why = "the port is not 1..65535 in decimal";
                return false;
            }
            v = v * 10 + (unsigned)(s[i] - '0');
        }
        if (v == 0 || v > 65535) {
            *why = "the port is not 1..65535 in decimal";
            return false;
        }
        *port = v;
    }
    memcpy(host, s + hs, he - hs);
    host[he - hs] = '\0';
    return true;
}

/* Where the head ends ("\r\n\r\n" included), or 0 when it has not ended yet. Every line must end
 * in CRLF, and hold no control character but HTAB (and no byte >= 0x80 in the first line). */
static enum egress_parse head_end(const uint8_t *buf, size_t len, size_t *end, const char **why)
{
    size_t line_start = 0;
    bool first = true;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = buf[i];
        if (c == '\r') {
            if (i + 1 == len) {
                break;
            }
            if (buf[i + 1] != '\n') {
                *why = "a CR not followed by LF";
                return EGRESS_PARSE_BAD;
            }
            if (i == line_start) {
                if (first) {
                    *why = "the head starts with an empty line";
                    return EGRESS_PARSE_BAD;
                }
                *end = i + 2;
                return EGRESS_PARSE_DONE;
            }
            if (!first && (buf[line_start] == ' ' || buf[line_start] == '\t')) {
                *why = "header line folding is not accepted";
                return EGRESS_PARSE_BAD;
            }
            first = false;
            i++;
            line_start = i + 1;
            continue;
        }
        if (c == '\n') {
            *why = "a bare LF (lines end in CRLF)";
            return EGRESS_PARSE_BAD;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f || (first && c >= 0x80)) {
            *why = "a control character in the head";
            return EGRESS_PARSE_BAD;
        }
    }
    if (len >= EGRESS_HEAD_MAX) {
        *why = "the head is longer than 16 KiB";
        return EGRESS_PARSE_BAD;
    }
    return EGRESS_PARSE_MORE;
}

/* The request line "METHOD SP target SP HTTP/1.x" in @buf[0..@n): the target's span. */
static bool request_line(const uint8_t *buf, size_t n, size_t *ts, size_t *te, const char **why)
{
    size_t sp1 = 0;
    while (sp1 < n && is_upper(buf[sp1])) {
        sp1++;
    }
    if (sp1 == 0 || sp1 > 16 || sp1 == n || buf[sp1] != ' ') {
        *why = "the request line does not start with a method and one space";
        return false;
    }
    size_t sp2 = sp1 + 1;
    while (sp2 < n && buf[sp2] != ' ') {
        sp2++;
    }
    if (sp2 == sp1 + 1 || sp2 == n) {
        *why = "the request line has no target";
        return false;
    }
    if (n - sp2 - 1 != 8 ||
        (memcmp(buf + sp2 + 1, "HTTP/1.1", 8) != 0 && memcmp(buf + sp2 + 1, "HTTP/1.0", 8) != 0)) {
        *why = "the request line does not end in HTTP/1.0 or HTTP/1.1";
        return false;
    }
    *ts = sp1 + 1;
    *te = sp2;
    return true;
}

static bool name_is(const uint8_t *s, size_t n, const char *name)
{
    if (n != strlen(name)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = (uint8_t)(c - 'A' + 'a');
        }
        if (c != (uint8_t)name[i]) {
            return false;
        }
    }
    return true;
}

/* Walk the header lines of a head (after the request line) ending at @end; the Host header's value
 * span when there is one. Every line needs a non-empty name without spaces before its ':'. */
static bool headers(const uint8_t *buf, size_t start, size_t end, size_t *hv_s, size_t *hv_e, int *n_host,
                    const char **why)
{
    *n_host = 0;
    size_t p = start;
    while (p + 2 < end) {
        size_t e = p;
        while (buf[e] != '\r') {
            e++;
        }
        size_t colon = p;
        while (colon < e && buf[colon] != ':' && buf[colon] != ' ' && buf[colon] != '\t') {
            colon++;
        }
        if (colon == p || colon == e || buf[colon] != ':') {
            *why = "a header line without 'name:'";
            return false;
        }
        if (name_is(buf + p, colon - p, "host")) {
            size_t vs = colon + 1, ve = e;
            while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t')) {
                vs++;
            }
            while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) {
                ve--;
            }
            *hv_s = vs, *hv_e = ve;
            (*n_host)++;
        }
        p = e + 2;
    }
    return true;
}

enum egress_parse egress_parse_connect(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                       size_t why_len)
{
    const char *w = NULL;
    size_t end = 0;
    memset(out, 0, sizeof *out);
    if (len >= 8 && memcmp(buf, "CONNECT ", 8) != 0) {
        return bad(why, why_len, "not a CONNECT request");
    }
    enum egress_parse r = head_end(buf, len, &end, &w);
    if (r != EGRESS_PARSE_DONE) {
        return r == EGRESS_PARSE_BAD ? bad(why, why_len, w) : r;
    }
    size_t line_end = 0;
    while (buf[line_end] != '\r') {
        line_end++;
    }
    size_t ts, te;
    if (!request_line(buf, line_end, &ts, &te, &w)) {
        return bad(why, why_len, w);
    }
    if (ts != 8) {
        return bad(why, why_len, "not a CONNECT request");
    }
    if (!parse_hostport(buf + ts, te - ts, out->host, &out->port, &w)) {
        return bad(why, why_len, w);
    }
    if (out->port == 0) {
        return bad(why, why_len, "the CONNECT target has no port");
    }
    size_t hv_s, hv_e;
    int n_host;
    if (!headers(buf, line_end + 2, end, &hv_s, &hv_e, &n_host, &w)) {
        return bad(why, why_len, w);
    }
    out->head_len = end;
    return EGRESS_PARSE_DONE;
}

enum egress_parse egress_parse_http(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                    size_t why_len)
{
    const char *w = NULL;
    size_t end = 0;
    memset(out, 0, sizeof *out);
    enum egress_parse r = head_end(buf, len, &end, &w);
    if (r != EGRESS_PARSE_DONE) {
        return r == EGRESS_PARSE_BAD ? bad(why, why_len, w) : r;
    }
    size_t line_end = 0;
    while (buf[line_end] != '\r') {
        line_end++;
    }
    size_t ts, te;
    if (!request_line(buf, line_end, &ts, &te, &w)) {
        return bad(why, why_len, w);
    }
    if (ts == 8 && memcmp(buf, "CONNECT ", 8) == 0) {
        return bad(why, why_len, "a CONNECT request is not plain HTTP");
    }
    size_t hv_s = 0, hv_e = 0;
    int n_host;
    if (!headers(buf, line_end + 2, end, &hv_s, &hv_e, &n_host, &w)) {
        return bad(why, why_len, w);
    }
    if (n_host > 1) {
        return bad(why, why_len, "more than one Host header");
    }
    unsigned host_port = 0;
    if (n_host == 1 && !parse_hostport(buf + hv_s, hv_e - hv_s, out->http_host, &host_port, &w)) {
        return bad(why, why_len, w);
    }
    if (buf[ts] == '/') {
        if (n_host == 0) {
            return bad(why, why_len, "an origin-form request without a Host header");
        }
        out->port = host_port != 0 ? host_port : 80;
    } else {
        static const char scheme[] = "http://";
        size_t sl = sizeof scheme - 1;
        if (te - ts < sl || !name_is(buf + ts, sl, scheme)) {
            return bad(why, why_len, "the request target is neither origin-form nor an http:// URI");
        }
        size_t as = ts + sl, ae = as;
        while (ae < te && buf[ae] != '/' && buf[ae] != '?' && buf[ae] != '#') {
            if (buf[ae] == '@') {
                return bad(why, why_len, "a URI with user information");
            }
            ae++;
        }
        if (!parse_hostport(buf + as, ae - as, out->host, &out->port, &w)) {
            return bad(why, why_len, w);
        }
        if (out->port == 0) {
            out->port = 80;
        }
    }
    out->head_len = end;
    return EGRESS_PARSE_DONE;
}

static unsigned u16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* The ClientHello body @b[0..@n) (after the 4-byte handshake header): the server_name. */
static enum egress_parse client_hello(const uint8_t *b, size_t n, struct egress_target *out, char *why,
                                      size_t why_len)
{
    size_t p = 34; /* legacy_version (2), random (32) */
    if (n < p + 1) {
        return bad(why, why_len, "a ClientHello shorter than its fixed fields");
    }
    size_t sid = b[p++];
    if (sid > 32 || n - p < sid + 2) {
        return bad(why, why_len, "a ClientHello's session id runs past it");
    }
    p += sid;
    size_t cs = u16(b + p);
    p += 2;
    if (cs < 2 || cs % 2 != 0 || n - p < cs + 1) {
        return bad(why, why_len, "a ClientHello's cipher suites run past it");
    }
    p += cs;
    size_t comp = b[p++];
    if (comp < 1 || n - p < comp) {
        return bad(why, why_len, "a ClientHello's compression methods run past it");
    }
    p += comp;
    if (p == n) {
        return EGRESS_PARSE_DONE; /* no extensions, so no server_name */
    }
    if (n - p < 2 || u16(b + p) != n - p - 2) {
        return bad(why, why_len, "a ClientHello's extensions do not fill it exactly");
    }
    p += 2;
    bool seen = false;
    while (p < n) {
        if (n - p < 4) {
            return bad(why, why_len, "a truncated extension header");
        }
        unsigned type = u16(b + p);
        size_t elen = u16(b + p + 2);
        p += 4;
        if (n - p < elen) {
            return bad(why, why_len, "an extension runs past the ClientHello");
        }
        if (type == 0) {
            if (seen) {
                return bad(why, why_len, "two server_name extensions");
            }
            seen = true;
            const uint8_t *e = b + p;
            if (elen < 2 || u16(e) != elen - 2) {
                return bad(why, why_len, "a server_name list that does not fill its extension");
            }
            size_t q = 2;
            while (q < elen) {
                if (elen - q < 3) {
                    return bad(why, why_len, "a truncated server_name entry");
                }
                unsigned name_type = e[q];
                size_t nl = u16(e + q + 1);
                q += 3;
                if (elen - q < nl) {
                    return bad(why, why_len, "a server_name entry runs past its list");
                }
                if (name_type == 0) {
                    if (out->host[0] != '\0') {
                        return bad(why, why_len, "two host_name entries in server_name");
                    }
                    if (nl == 0 || nl > EGRESS_TARGET_NAME) {
                        return bad(why, why_len, "a host_name of 0 or more than 255 bytes");
                    }
                    for (size_t i = 0; i < nl; i++) {
                        if (!is_name_char(e[q + i])) {
                            return bad(
                                why, why_len,
                                "a host_name holds a character outside letters, digits, '.', '-', '_'");
                        }
                    }
                    memcpy(out->host, e + q, nl);
                    out->host[nl] = '\0';
                }
                q += nl;
            }
        }
        p += elen;
    }
    return EGRESS_PARSE_DONE;
}

enum egress_parse egress_parse_tls_sni(const uint8_t *buf, size_t len, struct egress_target *out, char *why,
                                       size_t why_len)
{
    uint8_t hs[EGRESS_HEAD_MAX];
    size_t hs_len = 0, pos = 0;
    memset(out, 0, sizeof *out);
    while (len - pos >= 5) {
        if (buf[pos] != 0x16) {
            return bad(why, why_len, "a TLS record that is not a handshake before the ClientHello ended");
        }
        if (buf[pos + 1] != 0x03) {
            return bad(why, why_len, "a TLS record of an unknown version");
        }
        size_t rlen = u16(buf + pos + 3);
        if (rlen == 0) {
            return bad(why, why_len, "an empty TLS handshake record");
        }
        if (pos + 5 + rlen > EGRESS_HEAD_MAX) {
            return bad(why, why_len, "a ClientHello longer than 16 KiB");
        }
        if (len - pos - 5 < rlen) {
            return EGRESS_PARSE_MORE;
        }
        memcpy(hs + hs_len, buf + pos + 5, rlen);
        hs_len += rlen;
        pos += 5 + rlen;
        if (hs[0] != 1) {
            return bad(why, why_len, "the first handshake message is not a ClientHello");
        }
        if (hs_len < 4) {
            continue;
        }
        size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
        if (mlen > EGRESS_HEAD_MAX - 4) {
            return bad(why, why_len, "a ClientHello longer than 16 KiB");
        }
        if (hs_len < 4 + mlen) {
            continue;
        }
        enum egress_parse r = client_hello(hs + 4, mlen, out, why, why_len);
        out->head_len = pos;
        return r;
    }
    if (len >= EGRESS_HEAD_MAX) {
        return bad(why, why_len, "a ClientHello longer than 16 KiB");
    }
    return EGRESS_PARSE_MORE;
}
