/* libFuzzer harness for api/auth/jwt.h: tokens, JWKS documents, and claims behind a valid signature.
 *
 * Input layout: byte 0 selects the mode (value % 3), the rest is the body. The seeds in
 * corpus/jwt/ start with the digits '0', '1' and '2'.
 *   0: the body is a token, verified by a fixed verifier: one issuer ("https://issuer.fuzz.example",
 *      name "fuzz", audience "gantry") holding the fixed JWKS below (RSA-2048 "fz-rsa", P-256
 *      "fz-ec" and "fz-claims"), on a fake clock at 2026-11-23T10:00:00Z. Seeds include tokens
 *      these keys really signed. The same token is also verified by a verifier whose issuer has
 *      external_signature (no keys, TokenReview issuers): it never answers GERR_NOTFOUND, and it
 *      accepts whatever the fixed verifier accepts (it checks a subset).
 *   1: the body is a JWKS document. When it parses, the set is installed for the issuer and
 *      fixed_token (signed by "fz-rsa") is verified against it, which drives whatever keys the
 *      fuzzer made through the verification path.
 *   2: the body is a token payload (any bytes). The harness signs it as ES256 with the "fz-claims"
 *      private key below (a throwaway key for this harness, nothing else trusts it) and verifies
 *      it, so the claim checks behind the signature get fuzzed too. Here the signature check must
 *      never be what fails.
 * Bodies are copied into heap blocks of exactly their size so ASan sees any overread.
 *
 * Besides "no crash, no leak, no overread", the harness checks the header's promises: the only
 * codes are 0, GERR_INVAL, GERR_UNAUTH, GERR_NOTFOUND (GERR_INTERNAL would mean a token reached
 * an OpenSSL failure the module blames on itself); on failure the result is zeroed and errmsg is
 * terminated and holds neither the token nor its signature; on success the principal is
 * "fuzz#<subject>" and the claims are an object; a parsed key set has 1..JWT_MAX_KEYS keys.
 * A broken promise calls abort(), which libFuzzer reports. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "api/auth/jwt.h"
#include "lib/err.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ISSUER        "https://issuer.fuzz.example"
#define NOW_MS        1795428000000ull
#define CLAIMS_HEADER "{\"alg\":\"ES256\",\"kid\":\"fz-claims\"}"

static const char fixed_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"fz-rsa\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"mni3dq1"
    "XL3_pLHtOWiIyQaFfdjfUlfxeLN6T3EzYC459denm_fmmZaLDI-n77aD6NorOPiQWrw2rjCXHkvczu-JmJoKUo-ISwFApN-O"
    "vzAK5FLsbOl6rdjXZMgGwYaUogI7OaVfCbyRq0V0JLPLiz9RZpK4lR7shVFsoPSyclSubV6FXEEC3Nsc47bOnNCZGtqAiZuZ"
    "GJb8wkToslmhnABXRLpY65qbE48tBVnZeZtfCEdxLs1mt7IXSgj9Ga_YOZRtsixvs3gNOAQpv80DbloBfJZ2vFa2-e4Jg3i4"
    "n_2OCVgMbvOZK4jdeSNwrMj6bX1S4Hd1I7UO6JSbOh_nl_w\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"crv\":\"P-25"
    "6\",\"kid\":\"fz-ec\",\"x\":\"uDcWKBAQ09we-_kD3O_gWXSwv23LD1QwXqaRws3eJxI\",\"y\":\"jz16aZMQvN7I"
    "922SntB9Okw67zjfPwRXxLhnN8CDq5c\"},{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"fz-claims\",\"x\""
    ":\"IIonIZDRnkqg3tdc4wzyHyre3iLu2bKGvtxZ7YZFyuY\",\"y\":\"ubsxZJGYnivymk9XHp6vxAJ9r5LVgrPjSnbT8r1"
    "0n-Y\"}]}";

/* Signed by "fz-rsa", expires in 2100: valid against fixed_jwks. */
static const char fixed_token[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ6LXJzYSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6LmV"
    "4YW1wbGUiLCJzdWIiOiJmdXp6ZXIiLCJhdWQiOiJnYW50cnkiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTc5NTQyNzk5MH0"
    ".faC9s0AyxKiHbrqE-6nyuPO-qKVw5sBh72C_iReCTI7q2CFyrH6wo3UwzBVHDfPD3t8k4524LYEmFCb-Hivz_FwPJLZiiK6"
    "dlpXvWlxytubKXX1c4PqP-NoaLzgF-09RNdtxiI-9ZAEb9mELya_FOJc0md8RxPnppqomC1EoilkfmqVzLuuKBq0QhOxlP4F"
    "wgvhdz7QoiJN0LwDELX_D7GD7-1DWKSLUxVUOpXzkL5_hrVweIdNCCXwQDBZsCNWAQYQSLnQs84fI96iuBQGLJzxqYNFndso"
    "kS7MoQgM2DmnynbZwI7E4m6xjpvAyQpJmdPGgBCUza1xeWOnJIaeXGA";

/* The private half of "fz-claims", generated for this harness only. */
static const char claims_key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                     "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjfSEXdNIY7q/iVrH\n"
                                     "/VbEXLNoD8L2rbHaESVK2VXjs8GhRANCAAQgiichkNGeSqDe11zjDPIfKt7eIu7Z\n"
                                     "soa+3FnthkXK5rm7MWSRmJ4r8ppPVx6er8QCfa+S1YKz40p20/K9dJ/m\n"
                                     "-----END PRIVATE KEY-----\n";

static struct clock_fake fake;
static struct jwt_verifier *fixed, *external;
static EVP_PKEY *claims_key;

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static struct jwt_verifier *make_verifier(const char *jwks, bool external_sig)
{
    static const char *const aud[] = {"gantry"};
    char errmsg[GERR_MSG_SIZE];
    struct jwt_issuer cfg;
    struct jwt_verifier *v = jwt_verifier_new(&fake.base);
    jwt_issuer_init(&cfg, ISSUER, "fuzz");
    cfg.audiences = aud;
    cfg.n_audiences = 1;
    cfg.external_signature = external_sig;
    check(jwt_verifier_add_issuer(v, &cfg, errmsg) == 0);
    if (jwks != NULL) {
        struct jwt_keyset *ks;
        check(jwt_keyset_parse(jwks, strlen(jwks), &ks, errmsg) == 0);
        check(jwt_verifier_set_keys(v, ISSUER, ks, errmsg) == 0);
    }
    return v;
}

static size_t b64url(const uint8_t *p, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
    return k;
}

/* Neither the whole token nor its signature segment (16 bytes or more) appears in the message.
 * (Shorter runs could match ordinary words; header and payload segments are not checked because
 * a kid or iss quoted from the decoded token may legitimately be any text, even such a segment.) */
static void check_no_echo(const char *tok, size_t len, const char *errmsg)
{
    size_t m = strlen(errmsg);
    const char *dot = memrchr(tok, '.', len);
    const char *sig = dot != NULL ? dot + 1 : tok;
    size_t sig_len = len - (size_t)(sig - tok);
    if (len >= 16) {
        check(memmem(errmsg, m, tok, len) == NULL);
    }
    if (sig_len >= 16) {
        check(memmem(errmsg, m, sig, sig_len) == NULL);
    }
}

static int verify_one(struct jwt_verifier *v, const char *tok, size_t len, char errmsg[GERR_MSG_SIZE])
{
    struct jwt_result r;
    memset(errmsg, 'X', GERR_MSG_SIZE);
    int rc = jwt_verify(v, tok, len, &r, errmsg);
    if (getenv("FUZZ_JWT_VERBOSE") != NULL) { /* to check what a seed reaches */
        fprintf(stderr, "jwt_verify: %s %s\n", gerr_name(rc), rc == 0 ? r.principal : errmsg);
    }
    if (rc == 0) {
        check(r.issuer != NULL && strcmp(r.issuer, ISSUER) == 0);
        check(r.subject != NULL && r.principal != NULL && json_is_object(r.claims));
        check(strncmp(r.principal, "fuzz#", 5) == 0 && strcmp(r.principal + 5, r.subject) == 0);
        check(r.expires_at > 0);
        jwt_result_close(&r);
        return 0;
    }
    check(rc == GERR_INVAL || rc == GERR_UNAUTH || rc == GERR_NOTFOUND);
    check(r.issuer == NULL && r.subject == NULL && r.principal == NULL && r.claims == NULL);
    check(memchr(errmsg, '\0', GERR_MSG_SIZE) != NULL);
    check_no_echo(tok, len, errmsg);
    return rc;
}

/* Mode 2: sign @payload as ES256 with the claims key and verify the token. */
static void verify_signed_payload(const uint8_t *payload, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    size_t cap = (sizeof CLAIMS_HEADER) * 2 + n / 3 * 4 + 4 + 2 + 90;
    char *tok = mem_alloc(cap);
    size_t k = b64url((const uint8_t *)CLAIMS_HEADER, strlen(CLAIMS_HEADER), tok);
    tok[k++] = '.';
    k += b64url(payload, n, tok + k);
    uint8_t der[80], raw[64];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    check(md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, claims_key) == 1 &&
          EVP_DigestSign(md, der, &der_len, (const uint8_t *)tok, k) == 1);
    EVP_MD_CTX_free(md);
    const uint8_t *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    check(sig != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) == 32 &&
          BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) == 32);
    ECDSA_SIG_free(sig);
    tok[k++] = '.';
    k += b64url(raw, sizeof raw, tok + k);
    check(k <= cap);
    int rc = verify_one(fixed, tok, k, errmsg);
    /* The signature is good: failures are about the payload (or the size cap), never the key. */
    check(rc != GERR_NOTFOUND);
    check(rc == 0 || strcmp(errmsg, "signature verification failed") != 0);
    mem_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (fixed == NULL) {
        clock_fake_init(&fake, 0, NOW_MS);
        fixed = make_verifier(fixed_jwks, false);
        external = make_verifier(NULL, true);
        BIO *bio = BIO_new_mem_buf(claims_key_pem, -1);
        claims_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        check(claims_key != NULL);
    }
    if (size == 0) {
        return 0;
    }
    size_t n = size - 1;
    char *body = mem_alloc(n > 0 ? n : 1);
    memcpy(body, data + 1, n);
    switch (data[0] % 3) {
    case 0: {
        int rc = verify_one(fixed, body, n, errmsg);
        int xrc = verify_one(external, body, n, errmsg);
        check(xrc != GERR_NOTFOUND && (rc != 0 || xrc == 0));
        break;
    }
    case 1: {
        struct jwt_keyset *ks = NULL;
        int rc = jwt_keyset_parse(body, n, &ks, errmsg);
        if (rc == 0) {
            check(ks != NULL && jwt_keyset_count(ks) >= 1 && jwt_keyset_count(ks) <= JWT_MAX_KEYS);
            struct jwt_verifier *v = make_verifier(NULL, false);
            check(jwt_verifier_set_keys(v, ISSUER, ks, errmsg) == 0);
            verify_one(v, fixed_token, strlen(fixed_token), errmsg);
            jwt_verifier_free(v);
        } else {
            check(ks == NULL);
            check(rc == GERR_INVAL);
            check(memchr(errmsg, '\0', sizeof errmsg) != NULL);
        }
        break;
    }
    default:
        verify_signed_payload((const uint8_t *)body, n);
        break;
    }
    mem_free(body);
    return 0;
}
