/* API keys. See apikey.h for the format and why it is stored as HMAC-SHA256(pepper, secret).
 *
 * Constant time: everything that touches secret characters (encoding at generation, validation
 * at parse) uses masks computed with unsigned arithmetic instead of comparisons that compile to
 * branches or table lookups indexed by a secret; the one branch comes after the whole secret has
 * been folded into a single "bad" bit. HMAC and CRYPTO_memcmp are constant time in OpenSSL. */
#include "api/auth/apikey.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include "lib/mem.h"
#include "lib/rand.h"
#include "lib/sslerr.h"

#define ID_OFFSET     APIKEY_PREFIX_LEN
#define SEP_OFFSET    (APIKEY_PREFIX_LEN + APIKEY_ID_LEN)
#define SECRET_OFFSET (SEP_OFFSET + 1u)

/* ---- Branch-free character arithmetic (c and bounds are 0..255) */

static uint32_t ct_ge(uint32_t c, uint32_t lo) /* 1 if c >= lo */
{
    return ((c - lo) >> 31) ^ 1u;
}

static uint32_t ct_in(uint32_t c, uint32_t lo, uint32_t hi) /* 1 if lo <= c <= hi */
{
    return ct_ge(c, lo) & ct_ge(hi, c);
}

static uint32_t ct_eq(uint32_t c, uint32_t k) /* 1 if c == k */
{
    return ((c ^ k) - 1u) >> 31;
}

static uint32_t ct_mask(uint32_t bit) /* 0 -> 0, 1 -> all ones */
{
    return 0u - bit;
}

/* The base64url character for @v in 0..63. */
static char ct_b64url_char(uint32_t v)
{
    uint32_t c = ct_mask(ct_in(v, 0, 25)) & (v + 'A');
    c |= ct_mask(ct_in(v, 26, 51)) & (v - 26 + 'a');
    c |= ct_mask(ct_in(v, 52, 61)) & (v - 52 + '0');
    c |= ct_mask(ct_eq(v, 62)) & (uint32_t)'-';
    c |= ct_mask(ct_eq(v, 63)) & (uint32_t)'_';
    return (char)c;
}

/* The value of base64url character @c in *@v, and 1 if @c is in the alphabet (else 0, *@v 0). */
static uint32_t ct_b64url_value(uint32_t c, uint32_t *v)
{
    uint32_t up = ct_in(c, 'A', 'Z'), lo = ct_in(c, 'a', 'z'), dig = ct_in(c, '0', '9');
    uint32_t dash = ct_eq(c, '-'), us = ct_eq(c, '_');
    *v = (ct_mask(up) & (c - 'A')) | (ct_mask(lo) & (c - 'a' + 26)) | (ct_mask(dig) & (c - '0' + 52)) |
         (ct_mask(dash) & 62u) | (ct_mask(us) & 63u);
    return up | lo | dig | dash | us;
}

static void b64url_encode_secret(const uint8_t in[APIKEY_SECRET_BYTES], char out[APIKEY_SECRET_LEN])
{
    size_t i = 0, k = 0;
    for (; i + 3 <= APIKEY_SECRET_BYTES; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[k++] = ct_b64url_char(w >> 18);
        out[k++] = ct_b64url_char((w >> 12) & 63u);
        out[k++] = ct_b64url_char((w >> 6) & 63u);
        out[k++] = ct_b64url_char(w & 63u);
    }
    /* 32 = 10 * 3 + 2: two bytes left, three characters, the last with two zero bits. */
    uint32_t w = (uint32_t)in[i] << 8 | in[i + 1];
    out[k++] = ct_b64url_char(w >> 10);
    out[k++] = ct_b64url_char((w >> 4) & 63u);
    out[k++] = ct_b64url_char((w << 2) & 63u);
}

/* ---- Public functions */

/* ---- HMAC-SHA256 keyed by the pepper. OpenSSL 3's one-shot HMAC() fetches the algorithm and sets
 * the key on every call (about 4% of a follower's CPU during authenticated Gets, every call
 * verifying its key); each thread keeps a context keyed by the last pepper it used instead, and
 * re-initializes it per hash with the same key (EVP_MAC_init with a NULL key). */

struct mac_cache {
    uint8_t *pepper; /* a copy, cleansed when replaced or at thread exit */
    size_t len;
    EVP_MAC_CTX *ctx;
};

static pthread_key_t mac_key;
static pthread_once_t mac_once = PTHREAD_ONCE_INIT;

static void mac_cache_clear(struct mac_cache *m)
{
    EVP_MAC_CTX_free(m->ctx);
    if (m->pepper != NULL) {
        OPENSSL_cleanse(m->pepper, m->len);
        mem_free(m->pepper);
    }
    *m = (struct mac_cache){0};
}

static void mac_cache_free(void *p)
{
    mac_cache_clear(p);
    mem_free(p);
}

static void mac_key_init(void)
{
    (void)pthread_key_create(&mac_key, mac_cache_free);
}

/* The calling thread's context keyed by @pepper, or NULL (OpenSSL error queued). */
static EVP_MAC_CTX *mac_for(const uint8_t *pepper, size_t len)
{
    pthread_once(&mac_once, mac_key_init);
    struct mac_cache *m = pthread_getspecific(mac_key);
    if (m == NULL) {
        m = mem_zalloc(sizeof *m);
        if (pthread_setspecific(mac_key, m) != 0) {
            mem_free(m);
            return NULL;
        }
    }
    if (m->ctx != NULL && m->len == len && CRYPTO_memcmp(m->pepper, pepper, len) == 0) {
        return m->ctx;
    }
    mac_cache_clear(m);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    m->ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds its own reference */
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (m->ctx == NULL || EVP_MAC_init(m->ctx, pepper, len, params) != 1) {
        mac_cache_clear(m);
        return NULL;
    }
    m->pepper = mem_alloc(len);
    memcpy(m->pepper, pepper, len);
    m->len = len;
    return m->ctx;
}

int apikey_hash(const uint8_t *pepper, size_t pepper_len, const char *secret, uint8_t hash[APIKEY_HASH_SIZE],
                char *errmsg)
{
    if (pepper == NULL || pepper_len < APIKEY_PEPPER_MIN) {
        gerr_set(errmsg, "API key pepper is %zu bytes, at least %u are required",
                 pepper == NULL ? 0 : pepper_len, APIKEY_PEPPER_MIN);
        return GERR_INVAL;
    }
    if (pepper_len > APIKEY_PEPPER_MAX) {
        gerr_set(errmsg, "API key pepper is %zu bytes, at most %u are accepted", pepper_len,
                 APIKEY_PEPPER_MAX);
        return GERR_INVAL;
    }
    EVP_MAC_CTX *ctx = mac_for(pepper, pepper_len);
    size_t n = 0;
    if (ctx == NULL || EVP_MAC_init(ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)secret, APIKEY_SECRET_LEN) != 1 ||
        EVP_MAC_final(ctx, hash, &n, APIKEY_HASH_SIZE) != 1 || n != APIKEY_HASH_SIZE) {
        return sslerr_from_openssl(errmsg, "HMAC-SHA256 of an API key");
    }
    return 0;
}

int apikey_generate(const uint8_t *pepper, size_t pepper_len, char key[APIKEY_LEN + 1],
                    char keyid[APIKEY_ID_LEN + 1], uint8_t hash[APIKEY_HASH_SIZE], char *errmsg)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t id[APIKEY_ID_BYTES];
    uint8_t secret[APIKEY_SECRET_BYTES];
    char text[APIKEY_LEN + 1];
    uint8_t h[APIKEY_HASH_SIZE];
    int rv;

    if (pepper == NULL || pepper_len < APIKEY_PEPPER_MIN) {
        gerr_set(errmsg, "API key pepper is %zu bytes, at least %u are required",
                 pepper == NULL ? 0 : pepper_len, APIKEY_PEPPER_MIN);
        return GERR_INVAL;
    }
    rv = rand_bytes(id, sizeof id);
    if (rv == 0) {
        rv = rand_bytes(secret, sizeof secret);
    }
    if (rv != 0) {
        gerr_set(errmsg, "no random bytes for a new API key");
        goto err_after_buffers;
    }
    memcpy(text, APIKEY_PREFIX, APIKEY_PREFIX_LEN);
    for (size_t i = 0; i < APIKEY_ID_BYTES; i++) { /* the key id is public: a table is fine */
        text[ID_OFFSET + 2 * i] = hex[id[i] >> 4];
        text[ID_OFFSET + 2 * i + 1] = hex[id[i] & 15];
    }
    text[SEP_OFFSET] = '_';
    b64url_encode_secret(secret, text + SECRET_OFFSET);
    text[APIKEY_LEN] = '\0';
    rv = apikey_hash(pepper, pepper_len, text + SECRET_OFFSET, h, errmsg);
    if (rv != 0) {
        goto err_after_buffers;
    }
    memcpy(key, text, sizeof text);
    memcpy(keyid, text + ID_OFFSET, APIKEY_ID_LEN);
    keyid[APIKEY_ID_LEN] = '\0';
    memcpy(hash, h, sizeof h);
err_after_buffers:
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(text, sizeof text);
    return rv;
}

int apikey_parse(const char *s, size_t len, struct apikey_parts *out, char *errmsg)
{
    if (len != APIKEY_LEN) {
        gerr_set(errmsg, "API key is %zu bytes, a key is %u", len, APIKEY_LEN);
        return GERR_INVAL;
    }
    if (memcmp(s, APIKEY_PREFIX, APIKEY_PREFIX_LEN) != 0) {
        gerr_set(errmsg, "API key does not start with \"%s\"", APIKEY_PREFIX);
        return GERR_INVAL;
    }
    for (size_t i = ID_OFFSET; i < SEP_OFFSET; i++) { /* public: ordinary checks */
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            gerr_set(errmsg, "API key id has a character that is not a lowercase hex digit");
            return GERR_INVAL;
        }
    }
    if (s[SEP_OFFSET] != '_') {
        gerr_set(errmsg, "API key has no '_' between the key id and the secret");
        return GERR_INVAL;
    }
    /* Secret: fold every character's validity into one bit without branching on it. */
    uint32_t bad = 0, v = 0;
    for (size_t i = SECRET_OFFSET; i < APIKEY_LEN; i++) {
        bad |= ct_b64url_value((unsigned char)s[i], &v) ^ 1u;
    }
    /* v is the last character's value: 43 * 6 = 258 bits carry 256, the low two must be zero. */
    bad |= ((v & 3u) + 3u) >> 2;
    if (bad != 0) {
        gerr_set(errmsg, "API key secret is not %u canonical base64url characters", APIKEY_SECRET_LEN);
        return GERR_INVAL;
    }
    memcpy(out->keyid, s + ID_OFFSET, APIKEY_ID_LEN);
    out->keyid[APIKEY_ID_LEN] = '\0';
    out->secret = s + SECRET_OFFSET;
    return 0;
}

int apikey_verify(const char *s, size_t len, const uint8_t stored_hash[APIKEY_HASH_SIZE],
                  const uint8_t *pepper, size_t pepper_len, char *errmsg)
{
    struct apikey_parts parts;
    uint8_t h[APIKEY_HASH_SIZE];
    int rv = apikey_parse(s, len, &parts, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = apikey_hash(pepper, pepper_len, parts.secret, h, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = CRYPTO_memcmp(h, stored_hash, APIKEY_HASH_SIZE) == 0 ? 0 : GERR_UNAUTH;
    OPENSSL_cleanse(h, sizeof h);
    if (rv != 0) {
        gerr_set(errmsg, "API key %s does not match", parts.keyid);
    }
    return rv;
}
