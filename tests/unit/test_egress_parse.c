/* egress/parse.h: the relay's parsers of sandbox bytes, with valid, truncated and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "egress/dns.h"
#include "egress/parse.h"

typedef enum egress_parse (*parser_fn)(const uint8_t *, size_t, struct egress_target *, char *, size_t);

static enum egress_parse run(parser_fn fn, const void *bytes, size_t len, struct egress_target *t, char *why)
{
    return fn((const uint8_t *)bytes, len, t, why, 200);
}

/* Every proper prefix of a complete head answers MORE, and the whole head DONE. */
static void prefixes_ask_for_more(parser_fn fn, const void *bytes, size_t head_len)
{
    struct egress_target t;
    char why[200];
    for (size_t i = 1; i < head_len; i++) {
        assert_int_equal(run(fn, bytes, i, &t, why), EGRESS_PARSE_MORE);
    }
    assert_int_equal(run(fn, bytes, head_len, &t, why), EGRESS_PARSE_DONE);
}

static void sniff_each_protocol(void **state)
{
    (void)state;
    assert_int_equal(egress_sniff((const uint8_t *)"", 0), EGRESS_PROTO_UNKNOWN);
    assert_int_equal(egress_sniff((const uint8_t *)"CONN", 4), EGRESS_PROTO_UNKNOWN);
    assert_int_equal(egress_sniff((const uint8_t *)"CONNECT x", 9), EGRESS_PROTO_CONNECT);
    assert_int_equal(egress_sniff((const uint8_t *)"GET / HTTP/1.1", 14), EGRESS_PROTO_HTTP);
    assert_int_equal(egress_sniff((const uint8_t *)"GE", 2), EGRESS_PROTO_UNKNOWN);
    assert_int_equal(egress_sniff((const uint8_t *)"\x16\x03\x01", 3), EGRESS_PROTO_TLS);
    assert_int_equal(egress_sniff((const uint8_t *)"\x16", 1), EGRESS_PROTO_UNKNOWN);
    assert_int_equal(egress_sniff((const uint8_t *)"\x16\x02", 2), EGRESS_PROTO_RAW);
    assert_int_equal(egress_sniff((const uint8_t *)"SSH-2.0-OpenSSH", 15), EGRESS_PROTO_RAW);
    assert_int_equal(egress_sniff((const uint8_t *)"ABCDEFGHIJKLMNOPQR", 18), EGRESS_PROTO_RAW);
    assert_int_equal(egress_sniff((const uint8_t *)"\x00\x01", 2), EGRESS_PROTO_RAW);
}

static void connect_valid(void **state)
{
    (void)state;
    const char req[] = "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\nTLSBYTES";
    struct egress_target t;
    char why[200];
    assert_int_equal(run(egress_parse_connect, req, sizeof req - 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "api.github.com");
    assert_int_equal(t.port, 443);
    assert_int_equal(t.head_len, sizeof req - 1 - strlen("TLSBYTES"));
    prefixes_ask_for_more(egress_parse_connect, req, t.head_len);

    const char v6[] = "CONNECT [2001:db8::1]:8443 HTTP/1.0\r\n\r\n";
    assert_int_equal(run(egress_parse_connect, v6, sizeof v6 - 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "2001:db8::1");
    assert_int_equal(t.port, 8443);
}

static void connect_hostile(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",                     /* not CONNECT */
        "CONNECT example.com HTTP/1.1\r\n\r\n",                  /* no port */
        "CONNECT example.com:0 HTTP/1.1\r\n\r\n",                /* port 0 */
        "CONNECT example.com:65536 HTTP/1.1\r\n\r\n",            /* port too big */
        "CONNECT example.com:44a HTTP/1.1\r\n\r\n",              /* port not decimal */
        "CONNECT example.com:443 HTTP/2.0\r\n\r\n",              /* version */
        "CONNECT  example.com:443 HTTP/1.1\r\n\r\n",             /* two spaces */
        "CONNECT ex ample.com:443 HTTP/1.1\r\n\r\n",             /* space in target */
        "CONNECT ex%41mple.com:443 HTTP/1.1\r\n\r\n",            /* odd character */
        "CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",         /* user information */
        "CONNECT :443 HTTP/1.1\r\n\r\n",                         /* empty host */
        "CONNECT [::1:443 HTTP/1.1\r\n\r\n",                     /* unclosed bracket */
        "CONNECT [zz::1]:443 HTTP/1.1\r\n\r\n",                  /* not hex */
        "CONNECT a.com:443 HTTP/1.1\nHost: a\r\n\r\n",           /* bare LF */
        "CONNECT a.com:443 HTTP/1.1\r\nHost a.com\r\n\r\n",      /* header without colon */
        "CONNECT a.com:443 HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", /* folding */
        "CONNECT a.com:443 HTTP/1.1\r\nX: \x01\r\n\r\n",         /* control character */
        "CONNECT a.com:443 HTTP/1.1\rX\r\n\r\n",                 /* CR without LF */
        "\r\n\r\n",                                              /* empty first line */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct egress_target t;
        char why[200] = "";
        if (run(egress_parse_connect, bad[i], strlen(bad[i]), &t, why) != EGRESS_PARSE_BAD) {
            fail_msg("accepted hostile CONNECT #%zu: %s", i, bad[i]);
        }
        assert_true(why[0] != '\0');
    }
    /* A host of 256 bytes, and a head that never ends. */
    char big[EGRESS_HEAD_MAX + 64];
    struct egress_target t;
    char why[200];
    int n = snprintf(big, sizeof big, "CONNECT %0256d:443 HTTP/1.1\r\n\r\n", 0);
    assert_int_equal(run(egress_parse_connect, big, (size_t)n, &t, why), EGRESS_PARSE_BAD);
    memcpy(big, "CONNECT a.com:443 HTTP/1.1\r\nX: ", 31);
    memset(big + 31, 'a', sizeof big - 31);
    assert_int_equal(run(egress_parse_connect, big, EGRESS_HEAD_MAX - 1, &t, why), EGRESS_PARSE_MORE);
    assert_int_equal(run(egress_parse_connect, big, EGRESS_HEAD_MAX, &t, why), EGRESS_PARSE_BAD);
    assert_string_equal(why, "the head is longer than 16 KiB");
}

static void http_valid(void **state)
{
    (void)state;
    struct egress_target t;
    char why[200];
    const char origin[] = "GET /simple/ HTTP/1.1\r\nAccept: */*\r\nhOsT:  PyPI.org:8080 \r\n\r\n";
    assert_int_equal(run(egress_parse_http, origin, sizeof origin - 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "");
    assert_string_equal(t.http_host, "PyPI.org");
    assert_int_equal(t.port, 8080);
    assert_int_equal(t.head_len, sizeof origin - 1);
    prefixes_ask_for_more(egress_parse_http, origin, t.head_len);

    const char absolute[] = "POST http://example.com/x HTTP/1.0\r\nHost: other.example\r\n\r\nbody";
    assert_int_equal(run(egress_parse_http, absolute, sizeof absolute - 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "example.com");
    assert_string_equal(t.http_host, "other.example");
    assert_int_equal(t.port, 80);

    const char no_host[] = "GET HTTP://example.com:81 HTTP/1.1\r\n\r\n";
    assert_int_equal(run(egress_parse_http, no_host, sizeof no_host - 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "example.com");
    assert_string_equal(t.http_host, "");
    assert_int_equal(t.port, 81);
}

static void http_hostile(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\n\r\n",                               /* origin-form without Host */
        "GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n", /* two Host headers */
        "GET https://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",   /* https absolute-form */
        "GET http://u:p@a.com/ HTTP/1.1\r\n\r\n",               /* user information */
        "GET * HTTP/1.1\r\nHost: a.com\r\n\r\n",                /* asterisk-form */
        "GET a.com:80 HTTP/1.1\r\nHost: a.com\r\n\r\n",         /* authority-form */
        "get / HTTP/1.1\r\nHost: a.com\r\n\r\n",                /* method not a token */
        "GET / HTTP/1.1\r\nHost: a.com:99999\r\n\r\n",          /* port */
        "GET / HTTP/1.1\r\nHost: a\x80.com\r\n\r\n",            /* byte outside names */
        "GET /\x80 HTTP/1.1\r\nHost: a.com\r\n\r\n",            /* high byte in the request line */
        "GET / HTTP/1.1\r\nHost : a.com\r\n\r\n",               /* space before colon */
        "CONNECT a.com:443 HTTP/1.1\r\n\r\n",                   /* CONNECT is not plain HTTP */
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",                     /* empty Host */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct egress_target t;
        char why[200] = "";
        if (run(egress_parse_http, bad[i], strlen(bad[i]), &t, why) != EGRESS_PARSE_BAD) {
            fail_msg("accepted hostile HTTP head #%zu: %s", i, bad[i]);
        }
        assert_true(why[0] != '\0');
    }
}

/* A ClientHello in one or two records (@split), with @sni (NULL: none) in 1 + @dup_sni server_name
 * extensions. */
static size_t client_hello(uint8_t *out, const char *sni, bool split, int dup_sni)
{
    uint8_t body[1024];
    size_t p = 0;
    body[p++] = 3, body[p++] = 3;
    memset(body + p, 0xab, 32), p += 32;
    body[p++] = 32, memset(body + p, 0xcd, 32), p += 32;           /* session id */
    body[p++] = 0, body[p++] = 4, body[p++] = 0x13, body[p++] = 1; /* cipher suites */
    body[p++] = 0x13, body[p++] = 2;
    body[p++] = 1, body[p++] = 0; /* compression */
    size_t ext_len_at = p;
    p += 2;
    /* supported_versions, before server_name, to walk past an extension */
    body[p++] = 0, body[p++] = 43, body[p++] = 0, body[p++] = 3, body[p++] = 2, body[p++] = 3, body[p++] = 4;
    for (int k = 0; sni != NULL && k < 1 + dup_sni; k++) {
        size_t n = strlen(sni);
        body[p++] = 0, body[p++] = 0;
        body[p++] = (uint8_t)((n + 5) >> 8), body[p++] = (uint8_t)(n + 5);
        body[p++] = (uint8_t)((n + 3) >> 8), body[p++] = (uint8_t)(n + 3);
        body[p++] = 0, body[p++] = (uint8_t)(n >> 8), body[p++] = (uint8_t)n;
        memcpy(body + p, sni, n), p += n;
    }
    body[ext_len_at] = (uint8_t)((p - ext_len_at - 2) >> 8),
    body[ext_len_at + 1] = (uint8_t)(p - ext_len_at - 2);
    uint8_t hs[1100];
    hs[0] = 1, hs[1] = 0, hs[2] = (uint8_t)(p >> 8), hs[3] = (uint8_t)p;
    memcpy(hs + 4, body, p);
    size_t hs_len = p + 4, o = 0, cut = split ? hs_len / 3 : hs_len;
    const size_t parts[2][2] = {{0, cut}, {cut, hs_len}};
    for (int i = 0; i < 2; i++) {
        size_t n = parts[i][1] - parts[i][0];
        if (n == 0) {
            continue;
        }
        out[o++] = 0x16, out[o++] = 3, out[o++] = 1, out[o++] = (uint8_t)(n >> 8), out[o++] = (uint8_t)n;
        memcpy(out + o, hs + parts[i][0], n), o += n;
    }
    return o;
}

static void tls_valid(void **state)
{
    (void)state;
    uint8_t buf[2048];
    struct egress_target t;
    char why[200];
    size_t n = client_hello(buf, "api.github.com", false, 0);
    buf[n] = 0x17; /* whatever follows is not read */
    assert_int_equal(run(egress_parse_tls_sni, buf, n + 1, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "api.github.com");
    assert_int_equal(t.port, 0);
    assert_int_equal(t.head_len, n);
    prefixes_ask_for_more(egress_parse_tls_sni, buf, n);

    n = client_hello(buf, "split.example", true, 0);
    assert_int_equal(run(egress_parse_tls_sni, buf, n, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "split.example");
    assert_int_equal(t.head_len, n);
    prefixes_ask_for_more(egress_parse_tls_sni, buf, n);

    n = client_hello(buf, NULL, false, 0);
    assert_int_equal(run(egress_parse_tls_sni, buf, n, &t, why), EGRESS_PARSE_DONE);
    assert_string_equal(t.host, "");
}

static void tls_hostile(void **state)
{
    (void)state;
    uint8_t buf[2048], copy[2048];
    struct egress_target t;
    char why[200];
    size_t n = client_hello(buf, "a.example", false, 1);
    assert_int_equal(run(egress_parse_tls_sni, buf, n, &t, why), EGRESS_PARSE_BAD);
    assert_string_equal(why, "two server_name extensions");

    n = client_hello(buf, "a.example", false, 0);
    /* Each length field made one too long or one too short must never read past the buffer
     * (ASan in the sanitized build) and must not be DONE with another name. */
    for (size_t i = 0; i < n; i++) {
        for (int d = -1; d <= 1; d += 2) {
            memcpy(copy, buf, n);
            copy[i] = (uint8_t)(copy[i] + d);
            enum egress_parse r = run(egress_parse_tls_sni, copy, n, &t, why);
            if (r == EGRESS_PARSE_DONE && t.host[0] != '\0' && strcmp(t.host, "a.example") != 0) {
                /* Only a change inside the name itself may change the name. */
                assert_true(i >= n - strlen("a.example"));
            }
        }
    }
    static const uint8_t alert[] = {0x15, 3, 3, 0, 2, 2, 40};
    assert_int_equal(run(egress_parse_tls_sni, alert, sizeof alert, &t, why), EGRESS_PARSE_BAD);
    static const uint8_t server_hello[] = {0x16, 3, 3, 0, 4, 2, 0, 0, 0};
    assert_int_equal(run(egress_parse_tls_sni, server_hello, sizeof server_hello, &t, why), EGRESS_PARSE_BAD);
    static const uint8_t empty[] = {0x16, 3, 1, 0, 0};
    assert_int_equal(run(egress_parse_tls_sni, empty, sizeof empty, &t, why), EGRESS_PARSE_BAD);
    static const uint8_t huge[] = {0x16, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff};
    assert_int_equal(run(egress_parse_tls_sni, huge, sizeof huge, &t, why), EGRESS_PARSE_BAD);
    /* A name with a character outside names. */
    n = client_hello(buf, "a/b.example", false, 0);
    assert_int_equal(run(egress_parse_tls_sni, buf, n, &t, why), EGRESS_PARSE_BAD);
}

/* A query for @name of @qtype, with an EDNS OPT record when @edns. */
static size_t dns_query(uint8_t *out, const char *name, unsigned qtype, bool edns)
{
    static const uint8_t head[12] = {0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(out, head, 12);
    out[11] = edns ? 1 : 0;
    size_t p = 12;
    const char *l = name;
    while (*l != '\0') {
        const char *dot = strchr(l, '.');
        size_t n = dot != NULL ? (size_t)(dot - l) : strlen(l);
        out[p++] = (uint8_t)n;
        memcpy(out + p, l, n);
        p += n;
        l += n + (dot != NULL);
    }
    out[p++] = 0;
    out[p++] = (uint8_t)(qtype >> 8), out[p++] = (uint8_t)qtype, out[p++] = 0, out[p++] = 1;
    if (edns) {
        static const uint8_t opt[11] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
        memcpy(out + p, opt, sizeof opt);
        p += sizeof opt;
    }
    return p;
}

static void dns_valid_and_answer(void **state)
{
    (void)state;
    uint8_t buf[600], out[EGRESS_DNS_MAX];
    struct egress_dns_query q;
    char why[200];
    size_t n = dns_query(buf, "Api.GitHub.com", EGRESS_DNS_A, true);
    assert_int_equal(egress_dns_parse_query(buf, n, &q, why, sizeof why), 0);
    assert_string_equal(q.name, "Api.GitHub.com");
    assert_int_equal(q.qtype, EGRESS_DNS_A);
    assert_int_equal(q.id, 0xbeef);
    assert_true(q.rd);
    assert_int_equal(q.question_end, n - 11);
    const uint8_t addrs[2][16] = {{127, 0, 0, 1}, {10, 1, 2, 3}};
    size_t len = egress_dns_answer(buf, &q, EGRESS_DNS_NOERROR, addrs, 2, 4, 30, out, sizeof out);
    assert_int_equal(len, q.question_end + 2 * 16);
    assert_int_equal(out[0], 0xbe);
    assert_int_equal(out[2], 0x81); /* QR, RD */
    assert_int_equal(out[3], 0x80); /* RA, NOERROR */
    assert_int_equal(out[7], 2);
    assert_memory_equal(out + len - 4, addrs[1], 4);
    len = egress_dns_answer(buf, &q, EGRESS_DNS_REFUSED, NULL, 0, 4, 30, out, sizeof out);
    assert_int_equal(len, q.question_end);
    assert_int_equal(out[3] & 0xf, EGRESS_DNS_REFUSED);
    assert_int_equal(
        egress_dns_answer(buf, &q, EGRESS_DNS_NOERROR, addrs, 2, 4, 30, out, q.question_end + 31), 0);
    /* Truncated anywhere: refused. */
    for (size_t i = 0; i < n - 11; i++) {
        assert_int_equal(egress_dns_parse_query(buf, i, &q, why, sizeof why), -1);
    }
}

static void dns_hostile(void **state)
{
    (void)state;
    uint8_t buf[600];
    struct egress_dns_query q;
    char why[200];
    size_t n = dns_query(buf, "a.example", EGRESS_DNS_A, false);
    struct {
        size_t at;
        uint8_t value;
        const char *what;
    } muts[] = {
        {2, 0x81, "a response (QR)"},        {2, 0x29, "opcode UPDATE"},    {5, 2, "two questions"},
        {7, 1, "an answer record"},          {9, 1, "an authority record"}, {11, 2, "two additional records"},
        {12, 0xc0, "a compression pointer"}, {12, 64, "a label over 63"},   {13, '/', "a slash in a label"},
        {n - 1, 3, "class CHAOS"},           {12, 0, "the root"},
    };
    for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++) {
        uint8_t copy[600];
        memcpy(copy, buf, n);
        copy[muts[i].at] = muts[i].value;
        if (egress_dns_parse_query(copy, n, &q, why, sizeof why) != -1) {
            fail_msg("accepted %s", muts[i].what);
        }
    }
    char name[300];
    memset(name, 'a', sizeof name);
    for (int i = 60; i < 300; i += 61) {
        name[i] = '.';
    }
    name[260] = '\0'; /* 260 characters in labels of 60 */
    n = dns_query(buf, name, EGRESS_DNS_A, false);
    assert_int_equal(egress_dns_parse_query(buf, n, &q, why, sizeof why), -1);
    assert_non_null(strstr(why, "253"));
    uint8_t big[EGRESS_DNS_MAX + 1] = {0};
    assert_int_equal(egress_dns_parse_query(big, sizeof big, &q, why, sizeof why), -1);
}

/* DNS over TCP framing: a complete frame, every prefix of it needing more, two frames back to back,
 * and the lengths refused (0, over EGRESS_DNS_MAX). */
static void dns_tcp_frames(void **state)
{
    (void)state;
    uint8_t b[600];
    size_t n;
    memset(b, 0, sizeof b);
    b[0] = 0, b[1] = 20;
    for (size_t len = 0; len < 22; len++) {
        assert_int_equal(egress_dns_tcp_frame(b, len, &n), 0);
        assert_int_equal(n, 0);
    }
    assert_int_equal(egress_dns_tcp_frame(b, 22, &n), 1);
    assert_int_equal(n, 20);
    b[22] = 0, b[23] = 12;
    assert_int_equal(egress_dns_tcp_frame(b, 40, &n), 1); /* the first of two */
    assert_int_equal(n, 20);
    assert_int_equal(egress_dns_tcp_frame(b + 22, 13, &n), 0);
    assert_int_equal(egress_dns_tcp_frame(b + 22, 14, &n), 1);
    assert_int_equal(n, 12);
    b[0] = 0, b[1] = 0;
    assert_int_equal(egress_dns_tcp_frame(b, 2, &n), -1);
    b[0] = 0x02, b[1] = 0x00; /* 512: the largest */
    assert_int_equal(egress_dns_tcp_frame(b, 514, &n), 1);
    assert_int_equal(n, 512);
    b[1] = 0x01; /* 513 */
    assert_int_equal(egress_dns_tcp_frame(b, 2, &n), -1);
    b[0] = 0xff, b[1] = 0xff;
    assert_int_equal(egress_dns_tcp_frame(b, 2, &n), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sniff_each_protocol), cmocka_unit_test(connect_valid),
        cmocka_unit_test(connect_hostile),     cmocka_unit_test(http_valid),
        cmocka_unit_test(http_hostile),        cmocka_unit_test(tls_valid),
        cmocka_unit_test(tls_hostile),         cmocka_unit_test(dns_valid_and_answer),
        cmocka_unit_test(dns_hostile),         cmocka_unit_test(dns_tcp_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
