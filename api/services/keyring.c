/* The provider key ring (api/services/keyring.h). */
#include "api/services/keyring.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "lib/mem.h"
#include "lib/rand.h"

#define SEAL_VERSION 1u
#define KDF_INFO     "gantry provider keyring v1"
#define WRAP_AAD     "gantry provider key "
#define ID_NUM_MAX   2000000000

/* --- AES-256-GCM --- */

static int gcm(bool enc, const uint8_t key[KEYRING_KEY_SIZE], const uint8_t nonce[KEYRING_NONCE_SIZE],
               const void *aad, size_t aad_len, const uint8_t *in, size_t n, uint8_t *out,
               uint8_t tag[KEYRING_TAG_SIZE])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL && n <= INT32_MAX && aad_len <= INT32_MAX;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, KEYRING_NONCE_SIZE, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) == 1;
    ok = ok && (aad_len == 0 || EVP_CipherUpdate(c, NULL, &len, aad, (int)aad_len) == 1);
    ok = ok && (n == 0 || EVP_CipherUpdate(c, out, &len, in, (int)n) == 1);
    if (ok && !enc) {
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KEYRING_TAG_SIZE, tag) == 1;
    }
    /* Decryption: the final step checks the tag; a mismatch is an authentication failure. */
    int final_ok = ok && EVP_CipherFinal_ex(c, out + n, &len) == 1;
    if (final_ok && enc) {
        final_ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KEYRING_TAG_SIZE, tag) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        return GERR_INTERNAL;
    }
    return final_ok ? 0 : (enc ? GERR_INTERNAL : GERR_PERM);
}

int keyring_seal(const struct keyring_key *k, const void *aad, size_t aad_len, const void *pt, size_t n,
                 struct buf *out, char *errmsg)
{
    uint8_t *p = buf_reserve(out, KEYRING_SEAL_OVERHEAD + n);
    p[0] = SEAL_VERSION;
    if (rand_bytes(p + 1, KEYRING_NONCE_SIZE) != 0) {
        gerr_set(errmsg, "keyring: no random bytes for a nonce");
        return GERR_INTERNAL;
    }
    uint8_t *ct = p + 1 + KEYRING_NONCE_SIZE;
    int rv = gcm(true, k->key, p + 1, aad, aad_len, pt, n, ct, ct + n);
    if (rv != 0) {
        OPENSSL_cleanse(p, KEYRING_SEAL_OVERHEAD + n);
        gerr_set(errmsg, "keyring: AES-256-GCM encryption failed");
        return rv;
    }
    out->len += KEYRING_SEAL_OVERHEAD + n;
    return 0;
}

int keyring_open(const struct keyring_key *k, const void *aad, size_t aad_len, const void *sealed, size_t n,
                 struct buf *out, char *errmsg)
{
    const uint8_t *s = sealed;
    if (n < KEYRING_SEAL_OVERHEAD || s[0] != SEAL_VERSION) {
        gerr_set(errmsg, "keyring: sealed value is malformed (%zu bytes, version %u)", n, n > 0 ? s[0] : 0u);
        return GERR_INVAL;
    }
    size_t len = n - KEYRING_SEAL_OVERHEAD;
    uint8_t tag[KEYRING_TAG_SIZE];
    memcpy(tag, s + 1 + KEYRING_NONCE_SIZE + len, KEYRING_TAG_SIZE);
    /* Room reserved once, so the plaintext is never left behind by a reallocation. */
    uint8_t *p = buf_reserve(out, len + 1);
    int rv = gcm(false, k->key, s + 1, aad, aad_len, s + 1 + KEYRING_NONCE_SIZE, len, p, tag);
    if (rv != 0) {
        OPENSSL_cleanse(p, len);
        gerr_set(errmsg,
                 "keyring: a value sealed under key %s does not open (wrong key, moved or tampered with)",
                 k->id);
        return rv;
    }
    out->len += len;
    return 0;
}

void keyring_buf_wipe(struct buf *b)
{
    if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->cap);
    }
    buf_close(b);
}

/* --- the ring --- */

int keyring_init(struct keyring *kr, const uint8_t *pepper, size_t pepper_len, char *errmsg)
{
    memset(kr, 0, sizeof *kr);
    if (pepper == NULL || pepper_len == 0) {
        gerr_set(errmsg, "keyring: no cluster secret to derive the key-encryption key from");
        return GERR_INVAL;
    }
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *c = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)pepper, pepper_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)KDF_INFO, strlen(KDF_INFO)),
        OSSL_PARAM_construct_end()};
    int ok = c != NULL && EVP_KDF_derive(c, kr->kek, sizeof kr->kek, params) == 1;
    EVP_KDF_CTX_free(c);
    EVP_KDF_free(kdf);
    if (!ok) {
        gerr_set(errmsg, "keyring: HKDF-SHA256 failed");
        return GERR_INTERNAL;
    }
    return 0;
}

void keyring_close(struct keyring *kr)
{
    OPENSSL_cleanse(kr->kek, sizeof kr->kek);
}

void keyring_key_wipe(struct keyring_key *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}

/* "k<n>" -> n, or 0 when @id is not a key id. */
static int id_number(const char *id)
{
    if (id[0] != 'k' || id[1] < '1' || id[1] > '9' || strlen(id) > 11) {
        return 0;
    }
    char *end = NULL;
    long n = strtol(id + 1, &end, 10);
    return *end == '\0' && n > 0 && n <= ID_NUM_MAX ? (int)n : 0;
}

static void wrap_aad(const char *id, char *out, size_t len)
{
    snprintf(out, len, WRAP_AAD "%s", id);
}

static int hex_decode(const char *hex, uint8_t *out, size_t max, size_t *n)
{
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > max) {
        return GERR_INVAL;
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            return GERR_INVAL;
        }
        out[i] = (uint8_t)v;
    }
    *n = len / 2;
    return 0;
}

/* Unwrap the ring row of @id (its hex @value) into @out. */
static int unwrap(const struct keyring *kr, struct store_tx *tx, const char *id, const char *value,
                  struct keyring_key *out)
{
    uint8_t sealed[KEYRING_SEAL_OVERHEAD + KEYRING_KEY_SIZE];
    size_t n = 0;
    if (hex_decode(value, sealed, sizeof sealed, &n) != 0 || n != sizeof sealed) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: the entry of key %s is malformed", id);
        return GERR_INVAL;
    }
    struct keyring_key kek = {.id = "kek"};
    memcpy(kek.key, kr->kek, sizeof kek.key);
    char aad[64];
    wrap_aad(id, aad, sizeof aad);
    struct buf plain;
    buf_init(&plain);
    char err[GERR_MSG_SIZE];
    int rv = keyring_open(&kek, aad, strlen(aad), sealed, n, &plain, err);
    keyring_key_wipe(&kek);
    if (rv == 0 && plain.len == KEYRING_KEY_SIZE) {
        memset(out, 0, sizeof *out);
        snprintf(out->id, sizeof out->id, "%s", id);
        memcpy(out->key, plain.data, KEYRING_KEY_SIZE);
    } else {
        rv = rv != 0 ? rv : GERR_INVAL;
        gerr_set(
            store_tx_errmsg(tx),
            "provider key ring: key %s does not open with this cluster's secrets (was the store restored "
            "without --secrets?)",
            id);
    }
    keyring_buf_wipe(&plain);
    return rv;
}

/* Wrap @k and insert it into the ring. */
static int ring_insert(const struct keyring *kr, struct store_tx *tx, const struct keyring_key *k,
                       int64_t now_ms)
{
    struct keyring_key kek = {.id = "kek"};
    memcpy(kek.key, kr->kek, sizeof kek.key);
    char aad[64], meta_key[64], hex[2 * (KEYRING_SEAL_OVERHEAD + KEYRING_KEY_SIZE) + 1];
    wrap_aad(k->id, aad, sizeof aad);
    struct buf sealed;
    buf_init(&sealed);
    int rv = keyring_seal(&kek, aad, strlen(aad), k->key, KEYRING_KEY_SIZE, &sealed, store_tx_errmsg(tx));
    keyring_key_wipe(&kek);
    for (size_t i = 0; rv == 0 && i < sealed.len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", sealed.data[i]);
    }
    buf_close(&sealed);
    if (rv != 0) {
        return rv;
    }
    snprintf(meta_key, sizeof meta_key, KEYRING_META_PREFIX "%s", k->id);
    struct proto_value p[] = {proto_text(meta_key), proto_text(hex), proto_int(now_ms)};
    return store_tx_exec(tx, "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES (?, ?, ?)", p, 3,
                         NULL);
}

/* The ring's highest key number and that key's row value (@value "" and 0 for an empty ring). */
static int ring_newest(struct store_tx *tx, int *number, char *value, size_t len)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv =
        store_tx_query(tx,
                       "SELECT substr(key, length('" KEYRING_META_PREFIX "') + 1), value FROM cluster_meta "
                       "WHERE key >= '" KEYRING_META_PREFIX "' AND key < 'provider_key0'",
                       NULL, 0, &rows);
    *number = 0;
    value[0] = '\0';
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        const struct proto_value *id = proto_rows_at(&rows, i, 0), *v = proto_rows_at(&rows, i, 1);
        int n = id->type == PROTO_TEXT ? id_number(id->u.b.s) : 0;
        if (n > *number && v->type == PROTO_TEXT) {
            *number = n;
            snprintf(value, len, "%s", v->u.b.s);
        }
    }
    proto_rows_close(&rows);
    return rv;
}

int keyring_current_tx(const struct keyring *kr, struct store_tx *tx, int64_t now_ms, struct keyring_key *out)
{
    char value[2 * (KEYRING_SEAL_OVERHEAD + KEYRING_KEY_SIZE) + 8];
    int n = 0;
    int rv = ring_newest(tx, &n, value, sizeof value);
    if (rv != 0) {
        return rv;
    }
    if (n > 0) {
        char id[KEYRING_ID_SIZE];
        snprintf(id, sizeof id, "k%d", n);
        rv = unwrap(kr, tx, id, value, out);
        if (rv == GERR_PERM) {
            gerr_set(
                store_tx_errmsg(tx),
                "the provider key ring's newest key %s does not open with this cluster's secrets (a "
                "restore without --secrets?): run `gantryd rotate-provider-key` to add a usable key, then "
                "set each provider's secret again",
                id);
            return GERR_REFUSED;
        }
        return rv;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "k1");
    if (rand_bytes(out->key, sizeof out->key) != 0) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: no random bytes for the first key");
        return GERR_INTERNAL;
    }
    rv = ring_insert(kr, tx, out, now_ms);
    if (rv != 0) {
        keyring_key_wipe(out);
    }
    return rv;
}

int keyring_get_tx(const struct keyring *kr, struct store_tx *tx, const char *id, struct keyring_key *out)
{
    if (id_number(id) == 0) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: \"%.20s\" is not a key id", id);
        return GERR_INVAL;
    }
    char meta_key[64];
    snprintf(meta_key, sizeof meta_key, KEYRING_META_PREFIX "%s", id);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(meta_key)};
    int rv = store_tx_query(tx, "SELECT value FROM cluster_meta WHERE key = ?", p, 1, &rows);
    if (rv == 0 && (rows.n_rows == 0 || proto_rows_at(&rows, 0, 0)->type != PROTO_TEXT)) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: no key %s", id);
        rv = GERR_NOTFOUND;
    }
    if (rv == 0) {
        rv = unwrap(kr, tx, id, proto_rows_at(&rows, 0, 0)->u.b.s, out);
    }
    proto_rows_close(&rows);
    return rv;
}

int keyring_rotate_tx(const struct keyring *kr, struct store_tx *tx, int64_t now_ms, char id[KEYRING_ID_SIZE])
{
    char value[2 * (KEYRING_SEAL_OVERHEAD + KEYRING_KEY_SIZE) + 8];
    int n = 0;
    int rv = ring_newest(tx, &n, value, sizeof value);
    if (rv != 0) {
        return rv;
    }
    if (n >= ID_NUM_MAX) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: no key number left");
        return GERR_REFUSED;
    }
    struct keyring_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "k%d", n + 1);
    if (rand_bytes(k.key, sizeof k.key) != 0) {
        gerr_set(store_tx_errmsg(tx), "provider key ring: no random bytes for a new key");
        return GERR_INTERNAL;
    }
    rv = ring_insert(kr, tx, &k, now_ms);
    if (rv == 0) {
        snprintf(id, KEYRING_ID_SIZE, "%s", k.id);
    }
    keyring_key_wipe(&k);
    return rv;
}
