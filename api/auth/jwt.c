/* OIDC JWT verification on OpenSSL 3 and jansson. See jwt.h for what is accepted and why.
 *
 * The order of checks matters and is deliberate:
 *   1. size cap and character set, before any decoding or allocation proportional to input;
 *   2. the header: "alg" is decided (RS256 or ES256, everything else refused by name) before any
 *      key is looked at, so no key can ever be used with an algorithm it was not meant for;
 *   3. the payload is parsed only to find "iss", which selects the issuer and its key set;
 *   4. the key (by kid) and its type against the algorithm; then the signature (skipped for an
 *      issuer with external_signature, whose caller has the token verified elsewhere);
 *   5. only then the claims, so that every claim-related message describes an authentic token.
 * Nothing from the token is copied into a message except short, sanitised issuer, kid and alg
 * values (quote()), and never any part of the encoded segments or the signature. */
#include "api/auth/jwt.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "lib/mem.h"
#include "lib/sslerr.h"

#define QUOTE_MAX        64
#define NUMERIC_DATE_MAX 253402300799LL /* 9999-12-31T23:59:59Z */
#define ES256_SIG_SIZE   64
#define RSA_MIN_BITS     2048
#define RSA_MAX_BITS     8192
#define LEEWAY_MAX_S     3600u

enum jwt_alg { JWT_ALG_RS256, JWT_ALG_ES256 };

struct jwt_key {
    char *kid;        /* NULL when the JWK has none */
    enum jwt_alg alg; /* the only algorithm this key verifies (from kty/crv) */
    EVP_PKEY *pkey;
};

struct jwt_keyset {
    struct jwt_key *keys;
    unsigned n;
};

struct jwt_trusted {
    char *issuer;
    char *name;
    char **audiences;
    unsigned n_audiences;
    unsigned leeway_s;
    char *principal_claim;
    bool external_signature; /* never has keys: the caller verifies the signature (jwt.h) */
    struct jwt_keyset *keys; /* NULL until installed */
};

struct jwt_verifier {
    struct clock *clock;
    struct jwt_trusted issuers[JWT_MAX_ISSUERS];
    unsigned n_issuers;
};

/* ---- Small helpers */

/* Copy at most QUOTE_MAX bytes of untrusted @s into @out for a message: printable ASCII kept,
 * everything else (and '"' and '\\', so a quoted value cannot end its quotes early) becomes '?';
 * "..." is appended when cut. */
static const char *quote(const char *s, char out[QUOTE_MAX + 4])
{
    size_t i;
    for (i = 0; s[i] != '\0' && i < QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

static void fmt_time(int64_t unix_s, char out[32])
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(out, 32, "@%lld", (long long)unix_s);
    }
}

/* Value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

/* Strict, unpadded base64url (RFC 7515 section 2): every character from the alphabet, a length
 * that is not 1 mod 4, and zero bits where the last character overhangs the data, so each byte
 * string has exactly one encoding. On success *@out is a heap block (mem_free) of *@out_len bytes
 * plus a NUL the caller may rely on. Not constant time: nothing decoded here is secret. */
static bool b64url_decode(const char *s, size_t n, uint8_t **out, size_t *out_len)
{
    if (n % 4 == 1) {
        return false;
    }
    size_t cap = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    uint8_t *p = mem_alloc(cap + 1);
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0) {
            mem_free(p);
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[k++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* non-canonical: leftover bits must be zero */
        mem_free(p);
        return false;
    }
    p[k] = '\0';
    *out = p;
    *out_len = k;
    return true;
}

static const char *json_error_reason(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_duplicate_key:
        return "duplicate member name";
    case json_error_invalid_utf8:
        return "invalid UTF-8";
    case json_error_null_character:
        return "NUL character in a string";
    case json_error_numeric_overflow:
        return "number out of range";
    case json_error_stack_overflow:
        return "nested too deeply";
    case json_error_premature_end_of_input:
        return "truncated";
    case json_error_end_of_input_expected:
        return "trailing data";
    default:
        return "syntax error";
    }
}

/* Parse @len bytes of JSON that must be an object, rejecting duplicate member names. The error
 * names only the reason and position, never the text (it may be token content). */
static int parse_object(const uint8_t *p, size_t len, const char *what, json_t **out, char *errmsg)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            gerr_set(errmsg, "%s: out of memory parsing JSON", what);
            return GERR_NOMEM;
        }
        gerr_set(errmsg, "%s is not valid JSON (%s at byte %d)", what, json_error_reason(&jerr),
                 jerr.position);
        return GERR_INVAL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        gerr_set(errmsg, "%s is not a JSON object", what);
        return GERR_INVAL;
    }
    *out = j;
    return 0;
}

/* DNS-1123 label. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JWT_MAX_NAME || s[0] == '-' || s[n - 1] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

/* ---- Key sets */

/* Import an RSA public key from the JWK's n and e. */
static int import_rsa(json_t *jwk, EVP_PKEY **out, char *errmsg)
{
    json_t *jn = json_object_get(jwk, "n"), *je = json_object_get(jwk, "e");
    uint8_t *n = NULL, *e = NULL;
    size_t n_len, e_len;
    int rv = GERR_INVAL;
    if (!json_is_string(jn) || !json_is_string(je)) {
        gerr_set(errmsg, "RSA key needs string members n and e");
        return GERR_INVAL;
    }
    /* 8192 bits is 1366 characters; allow a few leading zero octets, refuse anything larger
     * before decoding. */
    if (json_string_length(jn) > 1400 || json_string_length(je) > 12) {
        gerr_set(errmsg, "RSA key material is too large");
        return GERR_INVAL;
    }
    if (!b64url_decode(json_string_value(jn), json_string_length(jn), &n, &n_len) ||
        !b64url_decode(json_string_value(je), json_string_length(je), &e, &e_len)) {
        gerr_set(errmsg, "RSA key n or e is not base64url");
        goto err_after_decode;
    }
    BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL);
    BIGNUM *bn_e = BN_bin2bn(e, (int)e_len, NULL);
    if (bn_n == NULL || bn_e == NULL) {
        rv = sslerr_from_openssl(errmsg, "import RSA key");
        goto err_after_bn;
    }
    int bits = BN_num_bits(bn_n);
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
        gerr_set(errmsg, "RSA modulus of %d bits is outside %d..%d", bits, RSA_MIN_BITS, RSA_MAX_BITS);
        goto err_after_bn;
    }
    /* e: odd, at least 3, at most 2^32 - 1 (every real issuer uses 65537). */
    if (!BN_is_odd(bn_e) || BN_num_bits(bn_e) > 32 || BN_is_one(bn_e)) {
        gerr_set(errmsg, "RSA public exponent is not an odd value in 3..2^32-1");
        goto err_after_bn;
    }
    if (!BN_is_odd(bn_n)) {
        gerr_set(errmsg, "RSA modulus is even");
        goto err_after_bn;
    }
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (bld == NULL || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        rv = sslerr_from_openssl(errmsg, "import RSA key");
    } else {
        *out = pkey;
        rv = 0;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
err_after_bn:
    BN_free(bn_n);
    BN_free(bn_e);
err_after_decode:
    mem_free(n);
    mem_free(e);
    return rv;
}

/* Import a P-256 public key from the JWK's x and y (32 bytes each; the point must be on the curve). */
static int import_ec(json_t *jwk, EVP_PKEY **out, char *errmsg)
{
    json_t *jx = json_object_get(jwk, "x"), *jy = json_object_get(jwk, "y");
    uint8_t *x = NULL, *y = NULL;
    size_t x_len = 0, y_len = 0;
    int rv = GERR_INVAL;
    if (!json_is_string(jx) || !json_is_string(jy)) {
        gerr_set(errmsg, "EC key needs string members x and y");
        return GERR_INVAL;
    }
    if (json_string_length(jx) != 43 || json_string_length(jy) != 43 ||
        !b64url_decode(json_string_value(jx), 43, &x, &x_len) ||
        !b64url_decode(json_string_value(jy), 43, &y, &y_len)) {
        gerr_set(errmsg, "EC key x or y is not 32 bytes of base64url");
        goto err_after_decode;
    }
    uint8_t point[65];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    char group[] = "P-256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
        OSSL_PARAM_END,
    };
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        /* OpenSSL refuses a point that is not on the curve here: that is bad input. */
        ERR_clear_error();
        gerr_set(errmsg, "EC key is not a valid P-256 point");
        goto err_after_ctx;
    }
    EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL) {
        rv = sslerr_from_openssl(errmsg, "check EC key");
        EVP_PKEY_free(pkey);
        goto err_after_ctx;
    }
    if (EVP_PKEY_public_check(check) != 1) {
        ERR_clear_error();
        gerr_set(errmsg, "EC key is not a valid P-256 point");
        EVP_PKEY_free(pkey);
    } else {
        *out = pkey;
        rv = 0;
    }
    EVP_PKEY_CTX_free(check);
err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
err_after_decode:
    mem_free(x);
    mem_free(y);
    return rv;
}

static void keyset_free_keys(struct jwt_keyset *ks)
{
    for (unsigned i = 0; i < ks->n; i++) {
        mem_free(ks->keys[i].kid);
        EVP_PKEY_free(ks->keys[i].pkey);
    }
    mem_free(ks->keys);
}

/* Decide whether JWK @i is usable. 1: usable, *alg set; 0: skip it; <0: -(error code). */
static int classify_key(json_t *jwk, unsigned i, enum jwt_alg *alg, char *errmsg)
{
    json_t *kty = json_object_get(jwk, "kty");
    json_t *use = json_object_get(jwk, "use");
    json_t *ops = json_object_get(jwk, "key_ops");
    json_t *jalg = json_object_get(jwk, "alg");
    json_t *crv = json_object_get(jwk, "crv");
    if (!json_is_string(kty) || (use != NULL && !json_is_string(use)) ||
        (ops != NULL && !json_is_array(ops)) || (jalg != NULL && !json_is_string(jalg))) {
        gerr_set(errmsg, "key %u: kty must be a string; use and alg strings; key_ops an array", i);
        return -GERR_INVAL;
    }
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0) {
        return 0;
    }
    if (ops != NULL) {
        bool verify = false;
        size_t k;
        json_t *op;
        json_array_foreach(ops, k, op)
        {
            if (!json_is_string(op)) {
                gerr_set(errmsg, "key %u: key_ops holds a non-string", i);
                return -GERR_INVAL;
            }
            verify = verify || strcmp(json_string_value(op), "verify") == 0;
        }
        if (!verify) {
            return 0;
        }
    }
    if (strcmp(json_string_value(kty), "RSA") == 0) {
        *alg = JWT_ALG_RS256;
    } else if (strcmp(json_string_value(kty), "EC") == 0) {
        if (!json_is_string(crv)) {
            gerr_set(errmsg, "key %u: EC key without a string crv", i);
            return -GERR_INVAL;
        }
        if (strcmp(json_string_value(crv), "P-256") != 0) {
            return 0; /* P-384, P-521, secp256k1: not supported */
        }
        *alg = JWT_ALG_ES256;
    } else {
        return 0; /* oct (HMAC secrets), OKP, anything newer */
    }
    if (jalg != NULL && strcmp(json_string_value(jalg), *alg == JWT_ALG_RS256 ? "RS256" : "ES256") != 0) {
        return 0; /* RS384, PS256, RSA-OAEP, or an alg that does not fit kty */
    }
    return 1;
}

int jwt_keyset_parse(const char *json, size_t len, struct jwt_keyset **out, char *errmsg)
{
    json_t *doc = NULL;
    int rv;
    *out = NULL;
    if (len > JWT_MAX_JWKS) {
        gerr_set(errmsg, "JWKS document is %zu bytes, more than the %u allowed", len, JWT_MAX_JWKS);
        return GERR_INVAL;
    }
    rv = parse_object((const uint8_t *)json, len, "JWKS document", &doc, errmsg);
    if (rv != 0) {
        return rv;
    }
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        gerr_set(errmsg, "JWKS document has no \"keys\" array");
        rv = GERR_INVAL;
        goto err_after_doc;
    }
    if (json_array_size(keys) > JWT_MAX_KEYS) {
        gerr_set(errmsg, "JWKS document has %zu keys, more than the %u allowed", json_array_size(keys),
                 JWT_MAX_KEYS);
        rv = GERR_INVAL;
        goto err_after_doc;
    }
    struct jwt_keyset *ks = mem_zalloc(sizeof *ks);
    ks->keys = mem_zalloc(sizeof *ks->keys * (json_array_size(keys) + 1));
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        enum jwt_alg alg = JWT_ALG_RS256;
        if (!json_is_object(jwk)) {
            gerr_set(errmsg, "JWKS key %zu is not an object", i);
            rv = GERR_INVAL;
            goto err_after_set;
        }
        int c = classify_key(jwk, (unsigned)i, &alg, errmsg);
        if (c < 0) {
            rv = -c;
            goto err_after_set;
        }
        if (c == 0) {
            continue;
        }
        json_t *kid = json_object_get(jwk, "kid");
        if (kid != NULL &&
            (!json_is_string(kid) || json_string_length(kid) == 0 || json_string_length(kid) > JWT_MAX_KID)) {
            gerr_set(errmsg, "JWKS key %zu: kid must be a string of 1..%u bytes", i, JWT_MAX_KID);
            rv = GERR_INVAL;
            goto err_after_set;
        }
        for (unsigned k = 0; kid != NULL && k < ks->n; k++) {
            if (ks->keys[k].kid != NULL && strcmp(ks->keys[k].kid, json_string_value(kid)) == 0) {
                char q[QUOTE_MAX + 4];
                gerr_set(errmsg, "JWKS has two usable keys with kid \"%s\"",
                         quote(json_string_value(kid), q));
                rv = GERR_INVAL;
                goto err_after_set;
            }
        }
        EVP_PKEY *pkey = NULL;
        rv = alg == JWT_ALG_RS256 ? import_rsa(jwk, &pkey, errmsg) : import_ec(jwk, &pkey, errmsg);
        if (rv != 0) {
            gerr_wrap(errmsg, "JWKS key %zu", i);
            goto err_after_set;
        }
        struct jwt_key *key = &ks->keys[ks->n++];
        key->kid = kid != NULL ? mem_strdup(json_string_value(kid)) : NULL;
        key->alg = alg;
        key->pkey = pkey;
    }
    if (ks->n == 0) {
        gerr_set(errmsg, "JWKS document holds no usable RS256 or ES256 signature key");
        rv = GERR_INVAL;
        goto err_after_set;
    }
    json_decref(doc);
    *out = ks;
    return 0;

err_after_set:
    keyset_free_keys(ks);
    mem_free(ks);
err_after_doc:
    json_decref(doc);
    return rv;
}

unsigned jwt_keyset_count(const struct jwt_keyset *ks)
{
    return ks->n;
}

void jwt_keyset_free(struct jwt_keyset *ks)
{
    if (ks != NULL) {
        keyset_free_keys(ks);
        mem_free(ks);
    }
}

/* ---- Verifier configuration */

void jwt_issuer_init(struct jwt_issuer *cfg, const char *issuer, const char *name)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->issuer = issuer;
    cfg->name = name;
    cfg->leeway_s = JWT_DEFAULT_LEEWAY_S;
    cfg->principal_claim = JWT_DEFAULT_PRINCIPAL_CLAIM;
}

struct jwt_verifier *jwt_verifier_new(struct clock *clock)
{
    struct jwt_verifier *v = mem_zalloc(sizeof *v);
    v->clock = clock;
    return v;
}

void jwt_verifier_free(struct jwt_verifier *v)
{
    if (v == NULL) {
        return;
    }
    for (unsigned i = 0; i < v->n_issuers; i++) {
        struct jwt_trusted *t = &v->issuers[i];
        mem_free(t->issuer);
        mem_free(t->name);
        for (unsigned k = 0; k < t->n_audiences; k++) {
            mem_free(t->audiences[k]);
        }
        mem_free(t->audiences);
        mem_free(t->principal_claim);
        jwt_keyset_free(t->keys);
    }
    mem_free(v);
}

int jwt_verifier_add_issuer(struct jwt_verifier *v, const struct jwt_issuer *cfg, char *errmsg)
{
    if (cfg->issuer == NULL || cfg->issuer[0] == '\0') {
        gerr_set(errmsg, "issuer configuration has an empty issuer");
        return GERR_INVAL;
    }
    if (cfg->name == NULL || !valid_name(cfg->name)) {
        gerr_set(errmsg, "issuer %s: the local name must be a DNS-1123 label (a-z, 0-9, '-', 1..%u bytes)",
                 cfg->issuer, JWT_MAX_NAME);
        return GERR_INVAL;
    }
    if (cfg->n_audiences == 0 || cfg->n_audiences > JWT_MAX_AUDIENCES || cfg->audiences == NULL) {
        gerr_set(errmsg, "issuer %s: needs 1..%u accepted audiences", cfg->issuer, JWT_MAX_AUDIENCES);
        return GERR_INVAL;
    }
    for (unsigned k = 0; k < cfg->n_audiences; k++) {
        if (cfg->audiences[k] == NULL || cfg->audiences[k][0] == '\0') {
            gerr_set(errmsg, "issuer %s: audience %u is empty", cfg->issuer, k);
            return GERR_INVAL;
        }
    }
    if (cfg->leeway_s > LEEWAY_MAX_S) {
        gerr_set(errmsg, "issuer %s: leeway of %us is more than the %us allowed", cfg->issuer, cfg->leeway_s,
                 LEEWAY_MAX_S);
        return GERR_INVAL;
    }
    if (cfg->principal_claim != NULL && cfg->principal_claim[0] == '\0') {
        gerr_set(errmsg, "issuer %s: the principal claim name is empty", cfg->issuer);
        return GERR_INVAL;
    }
    for (unsigned i = 0; i < v->n_issuers; i++) {
        if (strcmp(v->issuers[i].issuer, cfg->issuer) == 0 || strcmp(v->issuers[i].name, cfg->name) == 0) {
            gerr_set(errmsg, "issuer %s (%s): another issuer has the same URL or name", cfg->issuer,
                     cfg->name);
            return GERR_EXISTS;
        }
    }
    if (v->n_issuers == JWT_MAX_ISSUERS) {
        gerr_set(errmsg, "issuer %s: more than %u issuers", cfg->issuer, JWT_MAX_ISSUERS);
        return GERR_INVAL;
    }
    struct jwt_trusted *t = &v->issuers[v->n_issuers++];
    t->issuer = mem_strdup(cfg->issuer);
    t->name = mem_strdup(cfg->name);
    t->audiences = mem_zalloc(sizeof *t->audiences * cfg->n_audiences);
    for (unsigned k = 0; k < cfg->n_audiences; k++) {
        t->audiences[k] = mem_strdup(cfg->audiences[k]);
    }
    t->n_audiences = cfg->n_audiences;
    t->leeway_s = cfg->leeway_s;
    t->principal_claim =
        mem_strdup(cfg->principal_claim != NULL ? cfg->principal_claim : JWT_DEFAULT_PRINCIPAL_CLAIM);
    t->external_signature = cfg->external_signature;
    t->keys = NULL;
    return 0;
}

static const struct jwt_trusted *find_issuer(const struct jwt_verifier *v, const char *issuer)
{
    for (unsigned i = 0; i < v->n_issuers; i++) {
        if (strcmp(v->issuers[i].issuer, issuer) == 0) {
            return &v->issuers[i];
        }
    }
    return NULL;
}

int jwt_verifier_set_keys(struct jwt_verifier *v, const char *issuer, struct jwt_keyset *keys, char *errmsg)
{
    struct jwt_trusted *t = (struct jwt_trusted *)find_issuer(v, issuer);
    if (t == NULL) {
        gerr_set(errmsg, "issuer %s is not configured", issuer);
        return GERR_NOTFOUND;
    }
    if (t->external_signature) {
        gerr_set(errmsg, "issuer %s has its tokens verified elsewhere and takes no keys", issuer);
        return GERR_INVAL;
    }
    jwt_keyset_free(t->keys);
    t->keys = keys;
    return 0;
}

/* ---- Verification */

struct segments {
    const char *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
};

/* Size, characters and the two dots, before anything is decoded. */
static int split(const char *token, size_t len, struct segments *s, char *errmsg)
{
    if (len == 0) {
        gerr_set(errmsg, "token is empty");
        return GERR_INVAL;
    }
    if (len > JWT_MAX_TOKEN) {
        gerr_set(errmsg, "token is %zu bytes, more than the %u allowed", len, JWT_MAX_TOKEN);
        return GERR_INVAL;
    }
    size_t dots[2];
    unsigned n_dots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c == '.') {
            if (n_dots == 2) {
                gerr_set(errmsg, "token has more than three segments (only compact JWS is accepted)");
                return GERR_INVAL;
            }
            dots[n_dots++] = i;
        } else if (b64url_value(c) < 0) {
            if (c == '=') {
                gerr_set(errmsg,
                         "token has base64 padding at byte %zu (base64url without padding is required)", i);
            } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                gerr_set(errmsg, "token has whitespace at byte %zu", i);
            } else {
                gerr_set(errmsg, "token has a character outside base64url at byte %zu", i);
            }
            return GERR_INVAL;
        }
    }
    if (n_dots != 2) {
        gerr_set(errmsg, "token has %u segments, a compact JWS has 3", n_dots + 1);
        return GERR_INVAL;
    }
    s->header = token;
    s->header_len = dots[0];
    s->payload = token + dots[0] + 1;
    s->payload_len = dots[1] - dots[0] - 1;
    s->sig = token + dots[1] + 1;
    s->sig_len = len - dots[1] - 1;
    if (s->header_len == 0 || s->payload_len == 0) {
        gerr_set(errmsg, "token has an empty %s segment", s->header_len == 0 ? "header" : "payload");
        return GERR_INVAL;
    }
    return 0;
}

/* The header decides the algorithm; everything but RS256 and ES256 is refused by name. */
static int check_header(json_t *hdr, enum jwt_alg *alg, const char **kid, char *errmsg)
{
    char q[QUOTE_MAX + 4];
    json_t *jalg = json_object_get(hdr, "alg");
    json_t *jkid = json_object_get(hdr, "kid");
    if (!json_is_string(jalg)) {
        gerr_set(errmsg, "token header has no string \"alg\"");
        return GERR_INVAL;
    }
    const char *a = json_string_value(jalg);
    if (strcmp(a, "RS256") == 0) {
        *alg = JWT_ALG_RS256;
    } else if (strcmp(a, "ES256") == 0) {
        *alg = JWT_ALG_ES256;
    } else if (strcasecmp(a, "none") == 0) {
        gerr_set(errmsg,
                 "algorithm none is not accepted (unsigned tokens are refused; only RS256 and ES256)");
        return GERR_UNAUTH;
    } else if (strncasecmp(a, "HS", 2) == 0) {
        gerr_set(errmsg,
                 "HMAC algorithm %s is not accepted (only RS256 and ES256 with the issuer's public keys)",
                 quote(a, q));
        return GERR_UNAUTH;
    } else {
        gerr_set(errmsg, "algorithm %s is not accepted (only RS256 and ES256)", quote(a, q));
        return GERR_UNAUTH;
    }
    if (json_object_get(hdr, "crit") != NULL) {
        gerr_set(errmsg, "token has critical header parameters (crit), which are not supported");
        return GERR_UNAUTH;
    }
    if (jkid != NULL && !json_is_string(jkid)) {
        gerr_set(errmsg, "token header \"kid\" is not a string");
        return GERR_INVAL;
    }
    if (jkid != NULL && (json_string_length(jkid) == 0 || json_string_length(jkid) > JWT_MAX_KID)) {
        gerr_set(errmsg, "token header \"kid\" is empty or longer than %u bytes", JWT_MAX_KID);
        return GERR_INVAL;
    }
    *kid = jkid != NULL ? json_string_value(jkid) : NULL;
    return 0;
}

static int find_key(const struct jwt_trusted *t, const char *kid, const struct jwt_key **out, char *errmsg)
{
    char q[QUOTE_MAX + 4];
    if (t->keys == NULL) {
        gerr_set(errmsg, "no JWKS is loaded for issuer %s", t->issuer);
        return GERR_NOTFOUND;
    }
    if (kid == NULL) {
        if (t->keys->n != 1) {
            gerr_set(errmsg, "token has no kid and the JWKS of issuer %s holds %u keys", t->issuer,
                     t->keys->n);
            return GERR_UNAUTH;
        }
        *out = &t->keys->keys[0];
        return 0;
    }
    for (unsigned i = 0; i < t->keys->n; i++) {
        if (t->keys->keys[i].kid != NULL && strcmp(t->keys->keys[i].kid, kid) == 0) {
            *out = &t->keys->keys[i];
            return 0;
        }
    }
    gerr_set(errmsg, "unknown key id \"%s\" for issuer %s (refresh its JWKS)", quote(kid, q), t->issuer);
    return GERR_NOTFOUND;
}

/* The 64-byte r||s of a JWS ES256 signature as the DER ECDSA-Sig-Value EVP expects.
 * Returns the DER length (the buffer is heap, mem_free), or 0 on failure. */
static size_t es256_to_der(const uint8_t *raw, uint8_t **der)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL);
    BIGNUM *s = BN_bin2bn(raw + 32, 32, NULL);
    size_t n = 0;
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return 0;
    }
    /* r and s now belong to sig. */
    int len = i2d_ECDSA_SIG(sig, NULL);
    if (len > 0) {
        uint8_t *p = mem_alloc((size_t)len);
        uint8_t *q = p;
        if (i2d_ECDSA_SIG(sig, &q) == len) {
            *der = p;
            n = (size_t)len;
        } else {
            mem_free(p);
        }
    }
    ECDSA_SIG_free(sig);
    return n;
}

static int verify_signature(const struct jwt_key *key, enum jwt_alg alg, const char *signed_part,
                            size_t signed_len, const uint8_t *sig, size_t sig_len, char *errmsg)
{
    uint8_t *der = NULL;
    const uint8_t *vsig = sig;
    size_t vsig_len = sig_len;
    int rv;
    if (alg == JWT_ALG_ES256) {
        if (sig_len != ES256_SIG_SIZE) {
            gerr_set(errmsg, "ES256 signature is %zu bytes, not %d", sig_len, ES256_SIG_SIZE);
            return GERR_UNAUTH;
        }
        vsig_len = es256_to_der(sig, &der);
        if (vsig_len == 0) {
            return sslerr_from_openssl(errmsg, "encode ES256 signature");
        }
        vsig = der;
    } else if (sig_len != (size_t)EVP_PKEY_get_size(key->pkey)) {
        gerr_set(errmsg, "RS256 signature is %zu bytes, the key needs %d", sig_len,
                 EVP_PKEY_get_size(key->pkey));
        return GERR_UNAUTH;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1) {
        rv = sslerr_from_openssl(errmsg, "start signature verification");
        goto err_after_md;
    }
    int ok = EVP_DigestVerify(md, vsig, vsig_len, (const unsigned char *)signed_part, signed_len);
    if (ok == 1) {
        rv = 0;
    } else {
        /* 0 is a wrong signature; a negative value is a malformed one (say r or s out of range).
         * Both are the token's fault, not OpenSSL's, so the queue is dropped, not reported. */
        ERR_clear_error();
        gerr_set(errmsg, "signature verification failed");
        rv = GERR_UNAUTH;
    }
err_after_md:
    EVP_MD_CTX_free(md);
    mem_free(der);
    return rv;
}

/* A NumericDate claim: an integer or real in 0..year 9999, fraction dropped. 1 present, 0 absent,
 * <0 -(error). */
static int numeric_date(json_t *claims, const char *name, int64_t *out, char *errmsg)
{
    json_t *j = json_object_get(claims, name);
    if (j == NULL) {
        return 0;
    }
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v >= 0 && v <= NUMERIC_DATE_MAX) {
            *out = (int64_t)v;
            return 1;
        }
    } else if (json_is_real(j)) {
        double d = json_real_value(j);
        if (isfinite(d) && d >= 0 && d <= (double)NUMERIC_DATE_MAX) {
            *out = (int64_t)floor(d);
            return 1;
        }
    }
    gerr_set(errmsg, "claim %s is not a date (seconds since 1970 up to year 9999)", name);
    return -GERR_UNAUTH;
}

static int check_times(const struct jwt_trusted *t, json_t *claims, int64_t now_ms, int64_t *exp_out,
                       char *errmsg)
{
    char at[32], now[32];
    int64_t exp = 0, nbf = 0, iat = 0;
    int64_t leeway_ms = (int64_t)t->leeway_s * 1000;
    int p = numeric_date(claims, "exp", &exp, errmsg);
    if (p < 0) {
        return -p;
    }
    if (p == 0) {
        gerr_set(errmsg, "token has no exp claim (tokens without an expiry are refused)");
        return GERR_UNAUTH;
    }
    fmt_time(now_ms / 1000, now);
    if (now_ms >= exp * 1000 + leeway_ms) {
        fmt_time(exp, at);
        gerr_set(errmsg, "token expired at %s (now %s, leeway %us)", at, now, t->leeway_s);
        return GERR_UNAUTH;
    }
    p = numeric_date(claims, "nbf", &nbf, errmsg);
    if (p < 0) {
        return -p;
    }
    if (p == 1 && nbf * 1000 > now_ms + leeway_ms) {
        fmt_time(nbf, at);
        gerr_set(errmsg, "token not valid before %s (now %s, leeway %us)", at, now, t->leeway_s);
        return GERR_UNAUTH;
    }
    p = numeric_date(claims, "iat", &iat, errmsg);
    if (p < 0) {
        return -p;
    }
    if (p == 1 && iat * 1000 > now_ms + leeway_ms) {
        fmt_time(iat, at);
        gerr_set(errmsg, "token issued in the future at %s (now %s, leeway %us)", at, now, t->leeway_s);
        return GERR_UNAUTH;
    }
    *exp_out = exp;
    return 0;
}

static bool audience_accepted(const struct jwt_trusted *t, const char *aud)
{
    for (unsigned k = 0; k < t->n_audiences; k++) {
        if (strcmp(t->audiences[k], aud) == 0) {
            return true;
        }
    }
    return false;
}

static int check_audience(const struct jwt_trusted *t, json_t *claims, char *errmsg)
{
    json_t *aud = json_object_get(claims, "aud");
    bool match = false;
    if (json_is_string(aud)) {
        match = audience_accepted(t, json_string_value(aud));
    } else if (json_is_array(aud) && json_array_size(aud) > 0) {
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a)
        {
            if (!json_is_string(a)) {
                gerr_set(errmsg, "aud claim holds a value that is not a string");
                return GERR_UNAUTH;
            }
            match = match || audience_accepted(t, json_string_value(a));
        }
    } else {
        gerr_set(errmsg, "token has no aud claim (a string or a non-empty array of strings)");
        return GERR_UNAUTH;
    }
    if (!match) {
        gerr_set(errmsg, "audience mismatch: the token is not for any audience accepted from issuer %s",
                 t->issuer);
        return GERR_UNAUTH;
    }
    return 0;
}

static int check_subject(const struct jwt_trusted *t, json_t *claims, const char **out, char *errmsg)
{
    json_t *j = json_object_get(claims, t->principal_claim);
    if (!json_is_string(j) || json_string_length(j) == 0 || json_string_length(j) > JWT_MAX_SUBJECT) {
        gerr_set(errmsg, "principal claim %s is missing, not a string, or not 1..%u bytes",
                 t->principal_claim, JWT_MAX_SUBJECT);
        return GERR_UNAUTH;
    }
    const char *s = json_string_value(j);
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            gerr_set(errmsg, "principal claim %s holds a control character", t->principal_claim);
            return GERR_UNAUTH;
        }
    }
    *out = s;
    return 0;
}

/* The key named by @kid in the issuer's set, of the token's @alg, and the signature over
 * "header.payload" (jwt_verify's steps 4). */
static int check_signature(const struct jwt_trusted *t, const struct segments *seg, const char *token,
                           enum jwt_alg alg, const char *kid, char *errmsg)
{
    char q[QUOTE_MAX + 4];
    const struct jwt_key *key = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    int rv = find_key(t, kid, &key, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (key->alg != alg) {
        gerr_set(errmsg, "algorithm %s does not match the %s key \"%s\" of issuer %s",
                 alg == JWT_ALG_RS256 ? "RS256" : "ES256", key->alg == JWT_ALG_RS256 ? "RSA" : "EC P-256",
                 key->kid != NULL ? quote(key->kid, q) : "", t->issuer);
        return GERR_UNAUTH;
    }
    if (!b64url_decode(seg->sig, seg->sig_len, &sig, &sig_len)) {
        gerr_set(errmsg, "token signature is not canonical base64url");
        return GERR_INVAL;
    }
    rv = verify_signature(key, alg, token, seg->header_len + 1 + seg->payload_len, sig, sig_len, errmsg);
    mem_free(sig);
    return rv;
}

int jwt_verify(const struct jwt_verifier *v, const char *token, size_t len, struct jwt_result *out,
               char *errmsg)
{
    struct segments seg;
    uint8_t *raw_hdr = NULL, *raw_payload = NULL;
    size_t raw_hdr_len, raw_payload_len;
    json_t *hdr = NULL, *claims = NULL;
    enum jwt_alg alg = JWT_ALG_RS256;
    const char *kid = NULL;
    int rv;
    char q[QUOTE_MAX + 4];

    memset(out, 0, sizeof *out);
    rv = split(token, len, &seg, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (!b64url_decode(seg.header, seg.header_len, &raw_hdr, &raw_hdr_len)) {
        gerr_set(errmsg, "token header is not canonical base64url");
        return GERR_INVAL;
    }
    rv = parse_object(raw_hdr, raw_hdr_len, "token header", &hdr, errmsg);
    if (rv != 0) {
        goto err_after_raw_hdr;
    }
    rv = check_header(hdr, &alg, &kid, errmsg);
    if (rv != 0) {
        goto err_after_hdr;
    }
    if (seg.sig_len == 0) {
        gerr_set(errmsg, "token is unsigned (empty signature segment)");
        rv = GERR_UNAUTH;
        goto err_after_hdr;
    }
    if (!b64url_decode(seg.payload, seg.payload_len, &raw_payload, &raw_payload_len)) {
        gerr_set(errmsg, "token payload is not canonical base64url");
        rv = GERR_INVAL;
        goto err_after_hdr;
    }
    rv = parse_object(raw_payload, raw_payload_len, "token payload", &claims, errmsg);
    if (rv != 0) {
        goto err_after_raw_payload;
    }
    json_t *iss = json_object_get(claims, "iss");
    if (!json_is_string(iss)) {
        gerr_set(errmsg, "token has no string iss claim");
        rv = GERR_UNAUTH;
        goto err_after_claims;
    }
    const struct jwt_trusted *t = find_issuer(v, json_string_value(iss));
    if (t == NULL) {
        gerr_set(errmsg, "issuer \"%s\" is not trusted", quote(json_string_value(iss), q));
        rv = GERR_UNAUTH;
        goto err_after_claims;
    }
    if (!t->external_signature) {
        rv = check_signature(t, &seg, token, alg, kid, errmsg);
        if (rv != 0) {
            goto err_after_claims;
        }
    }
    /* From here on the token is authentic (or, with external_signature, is only as good as the
     * caller's own check); what remains is whether it is meant for us, now. */
    int64_t exp = 0;
    const char *subject = NULL;
    rv = check_times(t, claims, (int64_t)v->clock->wall_ms(v->clock), &exp, errmsg);
    if (rv == 0) {
        rv = check_audience(t, claims, errmsg);
    }
    if (rv == 0) {
        rv = check_subject(t, claims, &subject, errmsg);
    }
    if (rv != 0) {
        gerr_wrap(errmsg, "issuer %s", t->issuer);
        goto err_after_claims;
    }
    size_t name_len = strlen(t->name), sub_len = strlen(subject);
    out->issuer = mem_strdup(t->issuer);
    out->issuer_name = mem_strdup(t->name);
    out->subject = mem_strdup(subject);
    out->principal = mem_alloc(name_len + 1 + sub_len + 1);
    memcpy(out->principal, t->name, name_len);
    out->principal[name_len] = '#';
    memcpy(out->principal + name_len + 1, subject, sub_len + 1);
    out->expires_at = exp;
    out->valid_until_ms = exp * 1000 + (int64_t)t->leeway_s * 1000;
    out->claims = claims; /* our reference passes to the result */
    claims = NULL;
    rv = 0;

err_after_claims:
    json_decref(claims);
err_after_raw_payload:
    mem_free(raw_payload);
err_after_hdr:
    json_decref(hdr);
err_after_raw_hdr:
    mem_free(raw_hdr);
    return rv;
}

void jwt_result_close(struct jwt_result *r)
{
    mem_free(r->issuer);
    mem_free(r->issuer_name);
    mem_free(r->subject);
    mem_free(r->principal);
    json_decref(r->claims);
    memset(r, 0, sizeof *r);
}
