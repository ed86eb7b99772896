/* OIDC JWT verification: keys generated here with OpenSSL (RSA 2048, EC P-256), tokens signed
 * here by a small signer, the fake clock for time. Covers every acceptance rule and every
 * rejection listed in api/auth/jwt.h, and checks that no message ever echoes a token segment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "api/auth/jwt.h"
#include "lib/buf.h"
#include "lib/mem.h"

#define NOW   1795428000LL /* 2026-11-23T10:00:00Z */
#define ISS_A "https://idp-a.example.com"
#define ISS_B "https://idp-b.example.com"
#define ISS_C "https://idp-c.example.com/tenant"

static char errmsg[GERR_MSG_SIZE];
static EVP_PKEY *rsa_a, *ec_a, *rsa_b;
static char *jwks_a, *jwks_b;
static struct clock_fake fake;
static struct jwt_verifier *ver;
static char last_principal[600];

/* ---- Test-side encoding and signing */

static char *b64url(const uint8_t *p, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = mem_alloc(n / 3 * 4 + 5);
    size_t k = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[k++] = abc[w >> 18];
        out[k++] = abc[(w >> 12) & 63];
        out[k++] = abc[(w >> 6) & 63];
        out[k++] = abc[w & 63];
    }
    if (n - i == 1) {
        out[k++] = abc[p[i] >> 2];
        out[k++] = abc[(p[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)p[i] << 8 | p[i + 1];
        out[k++] = abc[w >> 10];
        out[k++] = abc[(w >> 4) & 63];
        out[k++] = abc[(w << 2) & 63];
    }
    out[k] = '\0';
    return out;
}

static char *b64url_str(const char *s)
{
    return b64url((const uint8_t *)s, strlen(s));
}

static char *bn_param_b64(EVP_PKEY *k, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, name, &bn), 1);
    int n = pad > 0 ? pad : BN_num_bytes(bn);
    uint8_t *b = mem_alloc((size_t)n);
    assert_int_equal(BN_bn2binpad(bn, b, n), n);
    char *s = b64url(b, (size_t)n);
    mem_free(b);
    BN_free(bn);
    return s;
}

static char *jwk_rsa(EVP_PKEY *k, const char *kid)
{
    char *n = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
    char *out = mem_alloc(strlen(n) + 200);
    sprintf(out,
            "{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"RS256\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}",
            kid, n, e);
    mem_free(n);
    mem_free(e);
    return out;
}

static char *jwk_ec(EVP_PKEY *k, const char *kid)
{
    char *x = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32),
         *y = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *out = mem_alloc(300);
    sprintf(out, "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", kid, x, y);
    mem_free(x);
    mem_free(y);
    return out;
}

/* "{"keys":[<a>,<b>]}" (b may be NULL). */
static char *jwks(const char *a, const char *b)
{
    char *out = mem_alloc(strlen(a) + (b ? strlen(b) : 0) + 32);
    sprintf(out, "{\"keys\":[%s%s%s]}", a, b ? "," : "", b ? b : "");
    return out;
}

static char *join3(const char *h, const char *p, const char *s)
{
    char *out = mem_alloc(strlen(h) + strlen(p) + strlen(s) + 3);
    sprintf(out, "%s.%s.%s", h, p, s);
    return out;
}

/* Sign "<b64 header>.<b64 payload>" with @key as RS256 (RSA key) or ES256 (EC key, raw r||s). */
static char *sign_raw(const char *signing_input, EVP_PKEY *key)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = 0;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, NULL, &n, (const uint8_t *)signing_input, strlen(signing_input)), 1);
    uint8_t *sig = mem_alloc(n);
    assert_int_equal(EVP_DigestSign(md, sig, &n, (const uint8_t *)signing_input, strlen(signing_input)), 1);
    EVP_MD_CTX_free(md);
    char *out;
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
        const uint8_t *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        assert_non_null(es);
        uint8_t raw[64];
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
        ECDSA_SIG_free(es);
        out = b64url(raw, 64);
    } else {
        out = b64url(sig, n);
    }
    mem_free(sig);
    return out;
}

/* A token from header and payload JSON text, signed with @key (NULL: empty signature). */
static char *make_token(const char *header, const char *payload, EVP_PKEY *key)
{
    char *h = b64url_str(header), *p = b64url_str(payload);
    char *input = mem_alloc(strlen(h) + strlen(p) + 2);
    sprintf(input, "%s.%s", h, p);
    char *s = key != NULL ? sign_raw(input, key) : mem_strdup("");
    char *tok = join3(h, p, s);
    mem_free(h);
    mem_free(p);
    mem_free(s);
    mem_free(input);
    return tok;
}

static char *make_hmac_token(const char *header, const char *payload, const EVP_MD *md, const uint8_t *secret,
                             size_t secret_len)
{
    char *h = b64url_str(header), *p = b64url_str(payload);
    char *input = mem_alloc(strlen(h) + strlen(p) + 2);
    sprintf(input, "%s.%s", h, p);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    assert_non_null(HMAC(md, secret, (int)secret_len, (const uint8_t *)input, strlen(input), mac, &mac_len));
    char *s = b64url(mac, mac_len);
    char *tok = join3(h, p, s);
    mem_free(h);
    mem_free(p);
    mem_free(s);
    mem_free(input);
    return tok;
}

/* Standard claims for issuer @iss, subject @sub, expiring @exp_in seconds from NOW, plus @extra
 * (",\"k\":v" text or ""). */
static const char *claims(const char *iss, const char *sub, long long exp_in, const char *extra)
{
    static char buf[20000];
    snprintf(buf, sizeof buf,
             "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"gantry\",\"exp\":%lld,\"iat\":%lld%s}", iss, sub,
             NOW + exp_in, NOW - 10, extra);
    return buf;
}

#define HDR_RSA "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"rsa-1\"}"
#define HDR_EC  "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"ec-1\"}"
#define HDR_B   "{\"alg\":\"RS256\",\"kid\":\"b-rsa\"}"

/* Verify @tok; on success remember the principal. Every message is checked for echoes of the
 * token: no segment of 8 bytes or more may appear in it. */
static int verify(const char *tok)
{
    struct jwt_result r;
    int rc = jwt_verify(ver, tok, strlen(tok), &r, errmsg);
    const char *p = tok;
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (n >= 8) {
            char *seg = mem_strndup(p, n);
            assert_null(strstr(errmsg, seg));
            mem_free(seg);
        }
        p += n;
        if (*p == '.') {
            p++;
        }
    }
    if (rc == 0) {
        snprintf(last_principal, sizeof last_principal, "%s", r.principal);
        assert_non_null(r.claims);
        assert_true(json_is_object(r.claims));
        jwt_result_close(&r);
        assert_null(r.principal);
    } else {
        assert_null(r.principal);
        assert_null(r.claims);
        assert_non_null(memchr(errmsg, '\0', sizeof errmsg));
    }
    return rc;
}

static int verify_free(char *tok)
{
    int rc = verify(tok);
    mem_free(tok);
    return rc;
}

/* ---- Fixtures */

static int group_setup(void **state)
{
    (void)state;
    rsa_a = EVP_RSA_gen(2048);
    ec_a = EVP_EC_gen("P-256");
    rsa_b = EVP_RSA_gen(2048);
    if (rsa_a == NULL || ec_a == NULL || rsa_b == NULL) {
        return -1;
    }
    char *ja = jwk_rsa(rsa_a, "rsa-1"), *je = jwk_ec(ec_a, "ec-1"), *jb = jwk_rsa(rsa_b, "b-rsa");
    jwks_a = jwks(ja, je);
    jwks_b = jwks(jb, NULL);
    mem_free(ja);
    mem_free(je);
    mem_free(jb);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa_a);
    EVP_PKEY_free(ec_a);
    EVP_PKEY_free(rsa_b);
    mem_free(jwks_a);
    mem_free(jwks_b);
    return 0;
}

static void load_keys(const char *iss, const char *doc)
{
    struct jwt_keyset *ks;
    assert_int_equal(jwt_keyset_parse(doc, strlen(doc), &ks, errmsg), 0);
    assert_int_equal(jwt_verifier_set_keys(ver, iss, ks, errmsg), 0);
}

static int setup(void **state)
{
    (void)state;
    static const char *const aud_a[] = {"gantry"};
    static const char *const aud_b[] = {"gantry-cli", "gantry"};
    struct jwt_issuer a, b;
    clock_fake_init(&fake, 0, (uint64_t)NOW * 1000u);
    ver = jwt_verifier_new(&fake.base);
    jwt_issuer_init(&a, ISS_A, "idp-a");
    a.audiences = aud_a;
    a.n_audiences = 1;
    jwt_issuer_init(&b, ISS_B, "idp-b");
    b.audiences = aud_b;
    b.n_audiences = 2;
    if (jwt_verifier_add_issuer(ver, &a, errmsg) != 0 || jwt_verifier_add_issuer(ver, &b, errmsg) != 0) {
        return -1;
    }
    load_keys(ISS_A, jwks_a);
    load_keys(ISS_B, jwks_b);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jwt_verifier_free(ver);
    ver = NULL;
    return 0;
}

/* ---- Accepted tokens */

static void valid_rs256(void **state)
{
    (void)state;
    char *tok = make_token(HDR_RSA, claims(ISS_A, "alice", 300, ",\"email\":\"alice@example.com\""), rsa_a);
    struct jwt_result r;
    assert_int_equal(jwt_verify(ver, tok, strlen(tok), &r, errmsg), 0);
    assert_string_equal(r.issuer, ISS_A);
    assert_string_equal(r.issuer_name, "idp-a");
    assert_string_equal(r.subject, "alice");
    assert_string_equal(r.principal, "idp-a#alice");
    assert_int_equal(r.expires_at, NOW + 300);
    assert_string_equal(json_string_value(json_object_get(r.claims, "email")), "alice@example.com");
    /* The caller may keep the claims beyond the result. */
    json_t *keep = json_incref(r.claims);
    jwt_result_close(&r);
    assert_string_equal(json_string_value(json_object_get(keep, "sub")), "alice");
    json_decref(keep);
    jwt_result_close(&r); /* safe on a zeroed result */
    /* The token need not be NUL-terminated: a longer buffer with the length given. */
    char *padded = mem_alloc(strlen(tok) + 10);
    memcpy(padded, tok, strlen(tok));
    memcpy(padded + strlen(tok), "XXXXXXXXX", 10);
    assert_int_equal(jwt_verify(ver, padded, strlen(tok), &r, errmsg), 0);
    jwt_result_close(&r);
    mem_free(padded);
    mem_free(tok);
}

static void valid_es256(void **state)
{
    (void)state;
    /* ECDSA signatures are randomised: sign several times so short r or s values get exercised. */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(verify_free(make_token(HDR_EC, claims(ISS_A, "bob", 300, ""), ec_a)), 0);
        assert_string_equal(last_principal, "idp-a#bob");
    }
}

static void kid_absent_only_with_a_single_key(void **state)
{
    (void)state;
    /* Issuer B holds one key: a token without kid uses it. */
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\"}", claims(ISS_B, "carol", 300, ""), rsa_b)),
                     0);
    /* Issuer A holds two: without kid there is no telling which. */
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\"}", claims(ISS_A, "carol", 300, ""), rsa_a)),
                     GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "no kid"));
}

/* ---- Time */

static void expired(void **state)
{
    (void)state;
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "alice", -3600, ""), rsa_a)), GERR_UNAUTH);
    assert_non_null(
        strstr(errmsg, "token expired at 2026-11-23T09:00:00Z (now 2026-11-23T10:00:00Z, leeway 60s)"));
}

static void not_before_and_issued_at_in_the_future(void **state)
{
    (void)state;
    assert_int_equal(
        verify_free(make_token(HDR_RSA, claims(ISS_A, "alice", 7200, ",\"nbf\":1795431600"), rsa_a)),
        GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "not valid before 2026-11-23T11:00:00Z"));
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":%lld,\"iat\":%lld}", ISS_A, NOW + 7200,
             NOW + 3600);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "issued in the future"));
}

static void leeway_edges(void **state)
{
    (void)state;
    char extra[64];
    /* Default leeway 60 s. exp: accepted while now < exp + 60. */
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "a", -59, ""), rsa_a)), 0);
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "a", -60, ""), rsa_a)), GERR_UNAUTH);
    /* Milliseconds count: exp = now - 59 stays valid for 999 ms more, not 1000. */
    char *tok = make_token(HDR_RSA, claims(ISS_A, "a", -59, ""), rsa_a);
    clock_fake_advance(&fake, 999 * 1000000ull);
    assert_int_equal(verify(tok), 0);
    clock_fake_advance(&fake, 1000000ull);
    assert_int_equal(verify(tok), GERR_UNAUTH);
    mem_free(tok);
    clock_fake_init(&fake, 0, (uint64_t)NOW * 1000u);
    /* nbf and iat: accepted up to now + 60. */
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", NOW + 60);
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "a", 300, extra), rsa_a)), 0);
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", NOW + 61);
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "a", 300, extra), rsa_a)), GERR_UNAUTH);
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":%lld,\"iat\":%lld}", ISS_A, NOW + 300,
             NOW + 60);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), 0);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":%lld,\"iat\":%lld}", ISS_A, NOW + 300,
             NOW + 61);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    /* Fractional NumericDates are accepted (fraction dropped). */
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":%lld.75}",
             ISS_A, NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), 0);
}

static void zero_leeway_and_custom_principal_claim(void **state)
{
    (void)state;
    static const char *const aud[] = {"gantry"};
    struct jwt_issuer c;
    jwt_issuer_init(&c, ISS_C, "idp-c");
    c.audiences = aud;
    c.n_audiences = 1;
    c.leeway_s = 0;
    c.principal_claim = "email";
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), 0);
    char *jb = jwk_rsa(rsa_b, "c-rsa");
    char *doc = jwks(jb, NULL);
    load_keys(ISS_C, doc);
    mem_free(jb);
    mem_free(doc);
    const char *hdr = "{\"alg\":\"RS256\",\"kid\":\"c-rsa\"}";
    assert_int_equal(
        verify_free(make_token(hdr, claims(ISS_C, "u1", 1, ",\"email\":\"dana@example.com\""), rsa_b)), 0);
    assert_string_equal(last_principal, "idp-c#dana@example.com");
    assert_int_equal(
        verify_free(make_token(hdr, claims(ISS_C, "u1", 0, ",\"email\":\"dana@example.com\""), rsa_b)),
        GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "leeway 0s"));
    /* The configured claim must be there and be a string; "sub" does not stand in for it. */
    assert_int_equal(verify_free(make_token(hdr, claims(ISS_C, "u1", 60, ""), rsa_b)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "principal claim email"));
    assert_int_equal(verify_free(make_token(hdr, claims(ISS_C, "u1", 60, ",\"email\":7"), rsa_b)),
                     GERR_UNAUTH);
    assert_int_equal(verify_free(make_token(hdr, claims(ISS_C, "u1", 60, ",\"email\":\"\""), rsa_b)),
                     GERR_UNAUTH);
    assert_int_equal(verify_free(make_token(hdr, claims(ISS_C, "u1", 60, ",\"email\":\"a\\nb\""), rsa_b)),
                     GERR_UNAUTH);
}

/* ---- Issuer, audience, claims */

static void wrong_issuer(void **state)
{
    (void)state;
    assert_int_equal(
        verify_free(make_token(HDR_RSA, claims("https://evil.example.com", "alice", 300, ""), rsa_a)),
        GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "not trusted"));
    /* Untrusted text quoted into the message cannot close its quotes or add lines. */
    assert_int_equal(
        verify_free(make_token(HDR_RSA, claims("x\\\" is trusted\\nok", "alice", 300, ""), rsa_a)),
        GERR_UNAUTH);
    assert_string_equal(errmsg, "issuer \"x? is trusted?ok\" is not trusted");
    /* A prefix or a trailing slash is a different issuer. */
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A "/", "alice", 300, ""), rsa_a)),
                     GERR_UNAUTH);
    assert_int_equal(
        verify_free(make_token(HDR_RSA, claims("https://idp-a.example.co", "a", 300, ""), rsa_a)),
        GERR_UNAUTH);
    /* Issuer A's key cannot sign for issuer B, whatever kid the token names. */
    assert_int_equal(verify_free(make_token(HDR_B, claims(ISS_B, "alice", 300, ""), rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "signature verification failed"));
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_B, "alice", 300, ""), rsa_a)), GERR_NOTFOUND);
    /* No iss at all. */
    assert_int_equal(
        verify_free(make_token(HDR_RSA, "{\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":1895428000}", rsa_a)),
        GERR_UNAUTH);
}

static void audience(void **state)
{
    (void)state;
    char payload[512];
#define AUD_TOKEN(aud_json)                                                                                  \
    (snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":%s,\"exp\":%lld}", ISS_A,      \
              aud_json, NOW + 300),                                                                          \
     verify_free(make_token(HDR_RSA, payload, rsa_a)))
    assert_int_equal(AUD_TOKEN("\"gantry\""), 0);
    assert_int_equal(AUD_TOKEN("\"other\""), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "audience mismatch"));
    assert_int_equal(AUD_TOKEN("\"Gantry\""), GERR_UNAUTH);
    assert_int_equal(AUD_TOKEN("[\"other\",\"gantry\"]"), 0);
    assert_int_equal(AUD_TOKEN("[\"gantry\"]"), 0);
    assert_int_equal(AUD_TOKEN("[\"x\",\"y\"]"), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "audience mismatch"));
    assert_int_equal(AUD_TOKEN("[]"), GERR_UNAUTH);
    assert_int_equal(AUD_TOKEN("[\"gantry\",5]"), GERR_UNAUTH);
    assert_int_equal(AUD_TOKEN("null"), GERR_UNAUTH);
    assert_int_equal(AUD_TOKEN("{\"gantry\":1}"), GERR_UNAUTH);
#undef AUD_TOKEN
    /* No aud at all. */
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"exp\":%lld}", ISS_A, NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    /* Issuer B accepts either of its two audiences. */
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry-cli\",\"exp\":%lld}",
             ISS_B, NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_B, payload, rsa_b)), 0);
}

static void required_and_malformed_claims(void **state)
{
    (void)state;
    char payload[512];
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\"}", ISS_A);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "no exp"));
    const char *bad_dates[] = {"\"1895428000\"", "-1", "1e300", "true", "null", "253402300800"};
    for (size_t i = 0; i < sizeof bad_dates / sizeof *bad_dates; i++) {
        snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"a\",\"aud\":\"gantry\",\"exp\":%s}",
                 ISS_A, bad_dates[i]);
        assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    }
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"aud\":\"gantry\",\"exp\":%lld}", ISS_A, NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "principal claim sub"));
    /* Duplicate members are ambiguous: a different parser could read the other one. */
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"alice\",\"sub\":\"admin\",\"aud\":\"gantry\",\"exp\":%lld}", ISS_A,
             NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_INVAL);
    assert_non_null(strstr(errmsg, "duplicate"));
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"rsa-1\"}",
                                            claims(ISS_A, "a", 300, ""), rsa_a)),
                     GERR_INVAL);
    /* Payload or header not an object, or not JSON. */
    assert_int_equal(verify_free(make_token(HDR_RSA, "[1,2]", rsa_a)), GERR_INVAL);
    assert_int_equal(verify_free(make_token(HDR_RSA, "{\"iss\":", rsa_a)), GERR_INVAL);
    assert_int_equal(verify_free(make_token("\"RS256\"", claims(ISS_A, "a", 300, ""), rsa_a)), GERR_INVAL);
    assert_int_equal(verify_free(make_token("{\"kid\":\"rsa-1\"}", claims(ISS_A, "a", 300, ""), rsa_a)),
                     GERR_INVAL);
    assert_int_equal(verify_free(make_token("{\"alg\":256}", claims(ISS_A, "a", 300, ""), rsa_a)),
                     GERR_INVAL);
    assert_int_equal(
        verify_free(make_token("{\"alg\":\"RS256\",\"kid\":1}", claims(ISS_A, "a", 300, ""), rsa_a)),
        GERR_INVAL);
    /* crit: nothing is understood, so nothing may be required. */
    assert_int_equal(
        verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"exp\"],\"exp\":1}",
                               claims(ISS_A, "a", 300, ""), rsa_a)),
        GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "crit"));
    assert_int_equal(
        verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"b64\":false,\"crit\":[\"b64\"]}",
                               claims(ISS_A, "a", 300, ""), rsa_a)),
        GERR_UNAUTH);
}

static void two_issuers_same_subject_are_two_principals(void **state)
{
    (void)state;
    char p_a[600], p_b[600];
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_a)), 0);
    snprintf(p_a, sizeof p_a, "%s", last_principal);
    assert_int_equal(verify_free(make_token(HDR_B, claims(ISS_B, "alice", 300, ""), rsa_b)), 0);
    snprintf(p_b, sizeof p_b, "%s", last_principal);
    assert_string_equal(p_a, "idp-a#alice");
    assert_string_equal(p_b, "idp-b#alice");
    assert_string_not_equal(p_a, p_b);
    /* A subject containing '#' stays unambiguous: split at the first '#'. */
    assert_int_equal(verify_free(make_token(HDR_B, claims(ISS_B, "x#y", 300, ""), rsa_b)), 0);
    assert_string_equal(last_principal, "idp-b#x#y");
}

/* ---- Algorithms and keys */

static void alg_none_and_unsigned(void **state)
{
    (void)state;
    const char *c = claims(ISS_A, "alice", 300, "");
    const char *nones[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\",\"kid\":\"rsa-1\"}",
                           "{\"alg\":\"NONE\"}"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(verify_free(make_token(nones[i], c, NULL)), GERR_UNAUTH);
        assert_non_null(strstr(errmsg, "algorithm none is not accepted"));
        /* Even with a valid RS256 signature attached. */
        assert_int_equal(verify_free(make_token(nones[i], c, rsa_a)), GERR_UNAUTH);
    }
    /* RS256 header, no signature: unsigned. */
    assert_int_equal(verify_free(make_token(HDR_RSA, c, NULL)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "unsigned"));
    /* Two segments only. */
    char *h = b64url_str("{\"alg\":\"none\"}"), *p = b64url_str(c);
    char tok[2048];
    snprintf(tok, sizeof tok, "%s.%s", h, p);
    assert_int_equal(verify(tok), GERR_INVAL);
    mem_free(h);
    mem_free(p);
}

static void hmac_with_the_rsa_public_key_is_refused(void **state)
{
    (void)state;
    const char *c = claims(ISS_A, "mallory", 300, "");
    /* The classic confusion: the attacker uses the issuer's public key (which is public) as an
     * HMAC secret, hoping a verifier hands "the key" to HMAC. Try every form of that key. */
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, rsa_a), 1);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    uint8_t *der = NULL;
    int der_len = i2d_PUBKEY(rsa_a, &der);
    assert_true(der_len > 0);
    BIGNUM *n = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(rsa_a, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    uint8_t nbytes[256];
    assert_int_equal(BN_bn2binpad(n, nbytes, 256), 256);
    BN_free(n);
    const struct {
        const uint8_t *p;
        size_t n;
    } secrets[] = {{(const uint8_t *)pem, (size_t)pem_len},
                   {der, (size_t)der_len},
                   {nbytes, 256},
                   {(const uint8_t *)jwks_a, strlen(jwks_a)}};
    const struct {
        const char *hdr;
        const EVP_MD *(*md)(void);
    } algs[] = {{"{\"alg\":\"HS256\",\"kid\":\"rsa-1\"}", EVP_sha256},
                {"{\"alg\":\"HS384\",\"kid\":\"rsa-1\"}", EVP_sha384},
                {"{\"alg\":\"HS512\",\"kid\":\"rsa-1\"}", EVP_sha512},
                {"{\"alg\":\"HS256\"}", EVP_sha256},
                {"{\"alg\":\"hs256\",\"kid\":\"ec-1\"}", EVP_sha256}};
    for (size_t a = 0; a < sizeof algs / sizeof *algs; a++) {
        for (size_t s = 0; s < sizeof secrets / sizeof *secrets; s++) {
            assert_int_equal(
                verify_free(make_hmac_token(algs[a].hdr, c, algs[a].md(), secrets[s].p, secrets[s].n)),
                GERR_UNAUTH);
            assert_non_null(strstr(errmsg, "HMAC algorithm"));
        }
    }
    /* An HMAC-SHA256 over the signing input is 32 bytes: sending it as "RS256" fails on length. */
    char *tok = make_hmac_token(HDR_RSA, c, EVP_sha256(), (const uint8_t *)pem, (size_t)pem_len);
    assert_int_equal(verify_free(tok), GERR_UNAUTH);
    OPENSSL_free(der);
    BIO_free(bio);
}

static void alg_and_key_type_must_match(void **state)
{
    (void)state;
    const char *c = claims(ISS_A, "alice", 300, "");
    /* ES256 naming the RSA key, signed with the EC key: refused before the signature is read. */
    assert_int_equal(verify_free(make_token("{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", c, ec_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "does not match"));
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"ec-1\"}", c, rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "does not match"));
    /* Every other algorithm is refused by name. */
    const char *others[] = {"RS384", "RS512",  "PS256", "PS384",  "ES384", "ES512",
                            "EdDSA", "ES256K", "rs256", "RS256 ", "",      "A256GCM"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"kid\":\"rsa-1\"}", others[i]);
        assert_int_equal(verify_free(make_token(hdr, c, rsa_a)), GERR_UNAUTH);
        assert_non_null(strstr(errmsg, "is not accepted"));
    }
    /* Keys carried in the header (jwk, jku, x5u) are never used: signed by the attacker's own key. */
    EVP_PKEY *attacker = EVP_EC_gen("P-256");
    assert_non_null(attacker);
    char *ajwk = jwk_ec(attacker, "ec-1");
    char hdr_jwk[512];
    snprintf(hdr_jwk, sizeof hdr_jwk,
             "{\"alg\":\"ES256\",\"kid\":\"ec-1\",\"jwk\":%s,\"jku\":\"https://evil.example.com/jwks\"}",
             ajwk);
    assert_int_equal(verify_free(make_token(hdr_jwk, c, attacker)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "signature verification failed"));
    mem_free(ajwk);
    EVP_PKEY_free(attacker);
    /* A JWK whose own alg is RS384 is skipped, so its kid is unknown. */
    char *n = bn_param_b64(rsa_a, OSSL_PKEY_PARAM_RSA_N, 0);
    char *doc = mem_alloc(strlen(n) + 512);
    sprintf(doc,
            "{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"RS384\",\"kid\":\"r384\",\"n\":\"%s\",\"e\":\"AQAB\"},"
            "{\"kty\":\"RSA\",\"alg\":\"RS256\",\"kid\":\"r256\",\"n\":\"%s\",\"e\":\"AQAB\"}]}",
            n, n);
    load_keys(ISS_A, doc);
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"r384\"}", c, rsa_a)),
                     GERR_NOTFOUND);
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"r256\"}", c, rsa_a)), 0);
    mem_free(n);
    mem_free(doc);
}

static void unknown_kid_is_not_found_and_refresh_fixes_it(void **state)
{
    (void)state;
    const char *c = claims(ISS_A, "alice", 300, "");
    EVP_PKEY *rotated = EVP_EC_gen("P-256");
    assert_non_null(rotated);
    char *tok = make_token("{\"alg\":\"ES256\",\"kid\":\"ec-2\"}", c, rotated);
    assert_int_equal(verify(tok), GERR_NOTFOUND);
    assert_non_null(strstr(errmsg, "unknown key id \"ec-2\""));
    /* The caller refreshes the JWKS and retries. */
    char *j1 = jwk_rsa(rsa_a, "rsa-1"), *j2 = jwk_ec(rotated, "ec-2");
    char *doc = jwks(j1, j2);
    load_keys(ISS_A, doc);
    assert_int_equal(verify(tok), 0);
    /* The old EC key is gone with the old set. */
    assert_int_equal(verify_free(make_token(HDR_EC, c, ec_a)), GERR_NOTFOUND);
    mem_free(tok);
    mem_free(j1);
    mem_free(j2);
    mem_free(doc);
    EVP_PKEY_free(rotated);
    /* An issuer with no key set yet: not found too (fetch it). */
    static const char *const aud[] = {"gantry"};
    struct jwt_issuer d;
    jwt_issuer_init(&d, "https://idp-d.example.com", "idp-d");
    d.audiences = aud;
    d.n_audiences = 1;
    assert_int_equal(jwt_verifier_add_issuer(ver, &d, errmsg), 0);
    assert_int_equal(
        verify_free(make_token(HDR_RSA, claims("https://idp-d.example.com", "a", 300, ""), rsa_a)),
        GERR_NOTFOUND);
    assert_non_null(strstr(errmsg, "no JWKS"));
    /* Setting keys for an issuer that is not configured fails and leaves the set with the caller. */
    struct jwt_keyset *ks;
    assert_int_equal(jwt_keyset_parse(jwks_b, strlen(jwks_b), &ks, errmsg), 0);
    assert_int_equal(jwt_verifier_set_keys(ver, "https://nobody.example.com", ks, errmsg), GERR_NOTFOUND);
    jwt_keyset_free(ks);
}

/* ---- Tampering and framing */

static void tampered_payload(void **state)
{
    (void)state;
    char *tok = make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_a);
    char *sig = strrchr(tok, '.') + 1;
    char *h = b64url_str(HDR_RSA);
    char *p = b64url_str(claims(ISS_A, "admin", 300, ""));
    char *forged = join3(h, p, sig);
    assert_int_equal(verify_free(forged), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "signature verification failed"));
    /* Same with ES256. */
    char *tok2 = make_token(HDR_EC, claims(ISS_A, "alice", 300, ""), ec_a);
    char *h2 = b64url_str(HDR_EC);
    assert_int_equal(verify_free(join3(h2, p, strrchr(tok2, '.') + 1)), GERR_UNAUTH);
    /* Flip every payload character of the RS256 token: never accepted. */
    char *dot1 = strchr(tok, '.');
    for (char *q = dot1 + 1; q < sig - 1; q++) {
        char saved = *q;
        *q = saved == 'A' ? 'B' : 'A';
        assert_int_not_equal(verify(tok), 0);
        *q = saved;
    }
    assert_int_equal(verify(tok), 0);
    mem_free(h);
    mem_free(h2);
    mem_free(p);
    mem_free(tok);
    mem_free(tok2);
}

static void tampered_signature(void **state)
{
    (void)state;
    char *toks[] = {make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_a),
                    make_token(HDR_EC, claims(ISS_A, "alice", 300, ""), ec_a)};
    for (int t = 0; t < 2; t++) {
        char *tok = toks[t];
        assert_int_equal(verify(tok), 0);
        char *sig = strrchr(tok, '.') + 1;
        size_t n = strlen(sig);
        for (size_t i = 0; i < n; i++) {
            char saved = sig[i];
            sig[i] = saved == 'A' ? 'Q' : 'A'; /* both keep the low four bits zero */
            int rc = verify(tok);
            assert_true(rc == GERR_UNAUTH || rc == GERR_INVAL);
            sig[i] = saved;
        }
        /* A signature one byte short or long. */
        sig[n - 1] = '\0';
        assert_int_not_equal(verify(tok), 0);
        mem_free(tok);
    }
    /* ES256 in DER form (what OpenSSL produces natively) is not the JWS encoding. */
    char *h = b64url_str(HDR_EC), *p = b64url_str(claims(ISS_A, "alice", 300, ""));
    char input[4096];
    snprintf(input, sizeof input, "%s.%s", h, p);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[128];
    size_t der_len = sizeof der;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ec_a), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, (uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    char *s = b64url(der, der_len);
    assert_int_equal(verify_free(join3(h, p, s)), GERR_UNAUTH);
    /* r and s of zero, and of all ones (out of range). */
    uint8_t raw[64];
    memset(raw, 0, sizeof raw);
    char *z = b64url(raw, 64);
    assert_int_equal(verify_free(join3(h, p, z)), GERR_UNAUTH);
    memset(raw, 0xff, sizeof raw);
    char *f = b64url(raw, 64);
    assert_int_equal(verify_free(join3(h, p, f)), GERR_UNAUTH);
    mem_free(s);
    mem_free(z);
    mem_free(f);
    mem_free(h);
    mem_free(p);
}

static void truncated_segments(void **state)
{
    (void)state;
    char *tok = make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_a);
    size_t n = strlen(tok);
    for (size_t k = 0; k < n; k++) {
        struct jwt_result r;
        int rc = jwt_verify(ver, tok, k, &r, errmsg);
        assert_true(rc == GERR_INVAL || rc == GERR_UNAUTH);
    }
    /* Segment counts: 1, 2, 4 and the 5 of JWE. */
    char *dot2 = strrchr(tok, '.');
    const char *shapes[] = {"abc", "abc.def", "a.b.c.d", "a.b.c.d.e", ".", "..", "...", ".b.c", "a..c"};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        assert_int_equal(verify(shapes[i]), GERR_INVAL);
    }
    char four[8192];
    snprintf(four, sizeof four, "%s.AAAA", tok);
    assert_int_equal(verify(four), GERR_INVAL);
    assert_non_null(strstr(errmsg, "more than three"));
    snprintf(four, sizeof four, "%.*s", (int)(dot2 - tok + 1), tok);
    assert_int_equal(verify(four), GERR_UNAUTH);
    assert_int_equal(verify(""), GERR_INVAL);
    mem_free(tok);
}

static void padding_whitespace_and_alphabet(void **state)
{
    (void)state;
    char *tok = make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_a);
    char buf[8192];
    char *dot1 = strchr(tok, '.');
    int hl = (int)(dot1 - tok);
    /* Padding in any segment. */
    snprintf(buf, sizeof buf, "%.*s=%s", hl, tok, dot1);
    assert_int_equal(verify(buf), GERR_INVAL);
    assert_non_null(strstr(errmsg, "padding"));
    snprintf(buf, sizeof buf, "%s==", tok);
    assert_int_equal(verify(buf), GERR_INVAL);
    /* Whitespace anywhere, including a trailing newline and a leading "Bearer ". */
    snprintf(buf, sizeof buf, "%s\n", tok);
    assert_int_equal(verify(buf), GERR_INVAL);
    assert_non_null(strstr(errmsg, "whitespace"));
    snprintf(buf, sizeof buf, " %s", tok);
    assert_int_equal(verify(buf), GERR_INVAL);
    snprintf(buf, sizeof buf, "%.*s %s", hl, tok, dot1);
    assert_int_equal(verify(buf), GERR_INVAL);
    snprintf(buf, sizeof buf, "Bearer %s", tok);
    assert_int_equal(verify(buf), GERR_INVAL);
    /* Standard base64 characters '+' and '/' are not base64url. */
    snprintf(buf, sizeof buf, "%s", tok);
    buf[1] = '+';
    assert_int_equal(verify(buf), GERR_INVAL);
    buf[1] = '/';
    assert_int_equal(verify(buf), GERR_INVAL);
    /* An embedded NUL inside the stated length. */
    memcpy(buf, tok, strlen(tok) + 1);
    buf[5] = '\0';
    struct jwt_result r;
    assert_int_equal(jwt_verify(ver, buf, strlen(tok), &r, errmsg), GERR_INVAL);
    /* Non-canonical encodings: header segment of length 1 mod 4, and nonzero overhang bits. */
    const char *hdr = "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}"; /* 29 bytes: 39 chars, 2 overhang bits */
    char *h = b64url_str(hdr);
    assert_int_equal(strlen(h) % 4, 3);
    char *pl = b64url_str(claims(ISS_A, "alice", 300, ""));
    char *input = mem_alloc(strlen(h) + strlen(pl) + 2);
    h[strlen(h) - 1] += 1; /* set an overhang bit: decodes to the same bytes in a lax decoder */
    sprintf(input, "%s.%s", h, pl);
    char *sig = sign_raw(input, rsa_a);
    char *t2 = join3(h, pl, sig);
    assert_int_equal(verify_free(t2), GERR_INVAL);
    assert_non_null(strstr(errmsg, "canonical"));
    mem_free(h);
    mem_free(pl);
    mem_free(input);
    mem_free(sig);
    mem_free(tok);
}

static void oversized_token(void **state)
{
    (void)state;
    /* A validly signed token just under the cap is accepted; one just over is refused before
     * any decoding. */
    char *filler = mem_alloc(JWT_MAX_TOKEN);
    size_t lo = 0, hi = JWT_MAX_TOKEN;
    char *tok = NULL;
    /* Find the largest filler that keeps the token within the cap. */
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        memset(filler, 'x', mid);
        filler[mid] = '\0';
        char extra[JWT_MAX_TOKEN + 16];
        snprintf(extra, sizeof extra, ",\"x\":\"%s\"", filler);
        char *h = b64url_str(HDR_RSA), *p = b64url_str(claims(ISS_A, "a", 300, extra));
        size_t len = strlen(h) + strlen(p) + 2 + 342;
        mem_free(h);
        mem_free(p);
        if (len <= JWT_MAX_TOKEN) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    for (size_t k = lo; k <= lo + 3; k++) {
        memset(filler, 'x', k);
        filler[k] = '\0';
        char extra[JWT_MAX_TOKEN + 16];
        snprintf(extra, sizeof extra, ",\"x\":\"%s\"", filler);
        tok = make_token(HDR_RSA, claims(ISS_A, "a", 300, extra), rsa_a);
        int rc = verify(tok);
        if (strlen(tok) <= JWT_MAX_TOKEN) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, GERR_INVAL);
            assert_non_null(strstr(errmsg, "16384"));
        }
        mem_free(tok);
    }
    /* Garbage far over the cap is refused on size alone. */
    char *big = mem_alloc(1 << 20);
    memset(big, '!', 1 << 20);
    struct jwt_result r;
    assert_int_equal(jwt_verify(ver, big, 1 << 20, &r, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "more than the 16384 allowed"));
    mem_free(big);
    mem_free(filler);
}

/* ---- JWKS */

static void jwks_unsupported_keys_are_skipped(void **state)
{
    (void)state;
    char *good_rsa = jwk_rsa(rsa_a, "rsa-1"), *good_ec = jwk_ec(ec_a, "ec-1");
    char *n = bn_param_b64(rsa_b, OSSL_PKEY_PARAM_RSA_N, 0);
    char *doc = mem_alloc(8192);
    sprintf(doc,
            "{\"keys\":["
            "{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"},"
            "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\",\"x\":\"11qYAYKxCrfVS_"
            "7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
            "{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"p384\",\"x\":\"AAAA\",\"y\":\"AAAA\"},"
            "{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"enc\",\"n\":\"%s\",\"e\":\"AQAB\"},"
            "{\"kty\":\"RSA\",\"key_ops\":[\"encrypt\"],\"kid\":\"ops\",\"n\":\"%s\",\"e\":\"AQAB\"},"
            "{\"kty\":\"RSA\",\"alg\":\"PS256\",\"kid\":\"ps\",\"n\":\"%s\",\"e\":\"AQAB\"},"
            "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"RS256\",\"kid\":\"wrong-alg\",\"x\":\"AAAA\",\"y\":"
            "\"AAAA\"},"
            "{\"kty\":\"FUTURE\",\"kid\":\"x\"},"
            "%s,%s]}",
            n, n, n, good_rsa, good_ec);
    struct jwt_keyset *ks;
    assert_int_equal(jwt_keyset_parse(doc, strlen(doc), &ks, errmsg), 0);
    assert_int_equal(jwt_keyset_count(ks), 2);
    assert_int_equal(jwt_verifier_set_keys(ver, ISS_A, ks, errmsg), 0);
    const char *c = claims(ISS_A, "a", 300, "");
    assert_int_equal(verify_free(make_token(HDR_RSA, c, rsa_a)), 0);
    assert_int_equal(verify_free(make_token(HDR_EC, c, ec_a)), 0);
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"enc\"}", c, rsa_b)), GERR_NOTFOUND);
    assert_int_equal(verify_free(make_token("{\"alg\":\"RS256\",\"kid\":\"ops\"}", c, rsa_b)), GERR_NOTFOUND);
    assert_int_equal(verify_free(make_token("{\"alg\":\"HS256\",\"kid\":\"hmac\"}", c, rsa_b)), GERR_UNAUTH);
    /* key_ops with verify, and keys without use, are kept. */
    sprintf(
        doc,
        "{\"keys\":[{\"kty\":\"RSA\",\"key_ops\":[\"verify\"],\"kid\":\"k\",\"n\":\"%s\",\"e\":\"AQAB\"}]}",
        n);
    assert_int_equal(jwt_keyset_parse(doc, strlen(doc), &ks, errmsg), 0);
    assert_int_equal(jwt_keyset_count(ks), 1);
    jwt_keyset_free(ks);
    mem_free(doc);
    mem_free(n);
    mem_free(good_rsa);
    mem_free(good_ec);
}

static void jwks_malformed(void **state)
{
    (void)state;
    char *n = bn_param_b64(rsa_a, OSSL_PKEY_PARAM_RSA_N, 0);
    char *x = bn_param_b64(ec_a, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    char *y = bn_param_b64(ec_a, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    /* A 1024-bit modulus: too small. */
    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *n1024 = bn_param_b64(small, OSSL_PKEY_PARAM_RSA_N, 0);
    EVP_PKEY_free(small);
    /* y + 1: almost certainly off the curve. */
    char *y_off = mem_strdup(y);
    y_off[0] = y_off[0] == 'A' ? 'B' : 'A';
    char docs[20][4096];
    int k = 0;
    snprintf(docs[k++], 4096, "not json");
    snprintf(docs[k++], 4096, "[]");
    snprintf(docs[k++], 4096, "{}");
    snprintf(docs[k++], 4096, "{\"keys\":{}}");
    snprintf(docs[k++], 4096, "{\"keys\":[]}");
    snprintf(docs[k++], 4096, "{\"keys\":[1]}");
    snprintf(docs[k++], 4096, "{\"keys\":[{\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s=\",\"e\":\"AQAB\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n1024);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAA\"}]}", n); /* even e */
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", x,
             y_off);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%.42s\",\"y\":\"%s\"}]}",
             x, y);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, y);
    snprintf(docs[k++], 4096,
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"d\",\"n\":\"%s\",\"e\":\"AQAB\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"d\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             n, x, y);
    snprintf(docs[k++], 4096, "{\"keys\":[],\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"kid\":7,\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"RSA\",\"use\":1,\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    snprintf(docs[k++], 4096, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}");
    for (int i = 0; i < k; i++) {
        struct jwt_keyset *ks = (struct jwt_keyset *)&ks;
        int rc = jwt_keyset_parse(docs[i], strlen(docs[i]), &ks, errmsg);
        if (rc != GERR_INVAL) {
            print_error("document %d: rc %d (%s)\n", i, rc, errmsg);
        }
        assert_int_equal(rc, GERR_INVAL);
        assert_null(ks);
    }
    /* Size caps: the document and the number of keys. */
    char *huge = mem_alloc(JWT_MAX_JWKS + 2);
    memset(huge, ' ', JWT_MAX_JWKS + 1);
    huge[JWT_MAX_JWKS + 1] = '\0';
    struct jwt_keyset *ks;
    assert_int_equal(jwt_keyset_parse(huge, JWT_MAX_JWKS + 1, &ks, errmsg), GERR_INVAL);
    mem_free(huge);
    struct buf b;
    buf_init(&b);
    buf_append(&b, "{\"keys\":[", 9);
    for (unsigned i = 0; i < JWT_MAX_KEYS + 1; i++) {
        buf_append(&b, i ? ",{}" : "{}", i ? 3 : 2);
    }
    buf_append(&b, "]}", 2);
    assert_int_equal(jwt_keyset_parse((char *)b.data, b.len, &ks, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "more than the 64"));
    buf_close(&b);
    mem_free(n);
    mem_free(n1024);
    mem_free(x);
    mem_free(y);
    mem_free(y_off);
}

/* ---- Configuration */

static void issuer_configuration_is_checked(void **state)
{
    (void)state;
    static const char *const aud[] = {"gantry"};
    static const char *const empty_aud[] = {""};
    struct jwt_issuer c;
    jwt_issuer_init(&c, ISS_A, "other");
    c.audiences = aud;
    c.n_audiences = 1;
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_EXISTS); /* same iss */
    jwt_issuer_init(&c, "https://new.example.com", "idp-a");
    c.audiences = aud;
    c.n_audiences = 1;
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_EXISTS); /* same name */
    const char *bad_names[] = {"",
                               "Idp",
                               "idp#1",
                               "-idp",
                               "idp-",
                               "idp.a",
                               "a234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        jwt_issuer_init(&c, "https://new.example.com", bad_names[i]);
        c.audiences = aud;
        c.n_audiences = 1;
        assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL);
    }
    jwt_issuer_init(&c, "https://new.example.com", "new");
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL); /* no audiences */
    c.audiences = empty_aud;
    c.n_audiences = 1;
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL);
    c.audiences = aud;
    c.leeway_s = 3601;
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL);
    c.leeway_s = 60;
    c.principal_claim = "";
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL);
    c.principal_claim = NULL; /* NULL means "sub" */
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), 0);
    jwt_issuer_init(&c, "", "empty");
    c.audiences = aud;
    c.n_audiences = 1;
    assert_int_equal(jwt_verifier_add_issuer(ver, &c, errmsg), GERR_INVAL);
    /* Defaults. */
    jwt_issuer_init(&c, "x", "y");
    assert_int_equal(c.leeway_s, 60);
    assert_string_equal(c.principal_claim, "sub");
}

/* external_signature: no keys, everything but the signature checked; keys are refused. */
static void external_signature_checks_all_but_the_signature(void **state)
{
    (void)state;
    static const char *const aud[] = {"gantry"};
    struct jwt_issuer x;
    jwt_issuer_init(&x, ISS_C, "kube");
    x.audiences = aud;
    x.n_audiences = 1;
    x.external_signature = true;
    assert_int_equal(jwt_verifier_add_issuer(ver, &x, errmsg), 0);
    struct jwt_keyset *ks = NULL;
    assert_int_equal(jwt_keyset_parse(jwks_a, strlen(jwks_a), &ks, errmsg), 0);
    assert_int_equal(jwt_verifier_set_keys(ver, ISS_C, ks, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "verified elsewhere"));
    jwt_keyset_free(ks);
    /* Signed by any key, or with a signature that is not one: passes (the caller must verify). */
    assert_int_equal(verify_free(make_token(HDR_B, claims(ISS_C, "sa", 300, ""), rsa_b)), 0);
    assert_string_equal(last_principal, "kube#sa");
    assert_int_equal(verify_free(make_token(HDR_EC, claims(ISS_C, "sa", 300, ""), rsa_a)), 0);
    /* Everything else is still checked. */
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_C, "sa", 300, ""), NULL)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "unsigned"));
    assert_int_equal(verify_free(make_token("{\"alg\":\"none\"}", claims(ISS_C, "sa", 300, ""), rsa_a)),
                     GERR_UNAUTH);
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_C, "sa", -600, ""), rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "expired"));
    char payload[300];
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"sa\",\"aud\":\"other\",\"exp\":%lld}", ISS_C,
             NOW + 300);
    assert_int_equal(verify_free(make_token(HDR_RSA, payload, rsa_a)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "audience"));
    /* The other issuers keep verifying signatures. */
    assert_int_equal(verify_free(make_token(HDR_RSA, claims(ISS_A, "alice", 300, ""), rsa_b)), GERR_UNAUTH);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(valid_rs256),
        T(valid_es256),
        T(kid_absent_only_with_a_single_key),
        T(expired),
        T(not_before_and_issued_at_in_the_future),
        T(leeway_edges),
        T(zero_leeway_and_custom_principal_claim),
        T(wrong_issuer),
        T(audience),
        T(required_and_malformed_claims),
        T(two_issuers_same_subject_are_two_principals),
        T(alg_none_and_unsigned),
        T(hmac_with_the_rsa_public_key_is_refused),
        T(alg_and_key_type_must_match),
        T(unknown_kid_is_not_found_and_refresh_fixes_it),
        T(tampered_payload),
        T(tampered_signature),
        T(truncated_segments),
        T(padding_whitespace_and_alphabet),
        T(oversized_token),
        T(jwks_unsupported_keys_are_skipped),
        T(jwks_malformed),
        T(issuer_configuration_is_checked),
        T(external_signature_checks_all_but_the_signature),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
