/* API keys: format, round trip, wrong secret or pepper, every malformation, and what is stored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>

#include "api/auth/apikey.h"

static char errmsg[GERR_MSG_SIZE];

static const uint8_t pepper[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t pepper2[32] = "0123456789abcdef0123456789abcdeF";

static void generate(char key[APIKEY_LEN + 1], char keyid[APIKEY_ID_LEN + 1], uint8_t hash[APIKEY_HASH_SIZE])
{
    assert_int_equal(apikey_generate(pepper, sizeof pepper, key, keyid, hash, errmsg), 0);
}

static void format_is_documented(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    generate(key, keyid, hash);
    assert_int_equal(strlen(key), 80);
    assert_int_equal(APIKEY_LEN, 80);
    assert_memory_equal(key, "gtk_", 4);
    assert_int_equal(strlen(keyid), 32);
    assert_memory_equal(key + 4, keyid, 32);
    assert_int_equal(key[36], '_');
    for (int i = 0; i < 32; i++) {
        assert_non_null(strchr("0123456789abcdef", keyid[i]));
    }
    for (int i = 37; i < 80; i++) {
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", key[i]));
    }
    struct apikey_parts p;
    assert_int_equal(apikey_parse(key, strlen(key), &p, errmsg), 0);
    assert_string_equal(p.keyid, keyid);
    assert_ptr_equal(p.secret, key + 37);
}

static void round_trip_and_uniqueness(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1], key2[APIKEY_LEN + 1], keyid2[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE], hash2[APIKEY_HASH_SIZE];
    generate(key, keyid, hash);
    generate(key2, keyid2, hash2);
    assert_int_equal(apikey_verify(key, strlen(key), hash, pepper, sizeof pepper, errmsg), 0);
    assert_int_equal(apikey_verify(key2, strlen(key2), hash2, pepper, sizeof pepper, errmsg), 0);
    assert_string_not_equal(key, key2);
    assert_string_not_equal(keyid, keyid2);
    assert_memory_not_equal(hash, hash2, APIKEY_HASH_SIZE);
    /* Each key only matches its own hash. */
    assert_int_equal(apikey_verify(key, strlen(key), hash2, pepper, sizeof pepper, errmsg), GERR_UNAUTH);
    /* apikey_hash agrees with what generate stored. */
    uint8_t h[APIKEY_HASH_SIZE];
    assert_int_equal(apikey_hash(pepper, sizeof pepper, key + 37, h, errmsg), 0);
    assert_memory_equal(h, hash, APIKEY_HASH_SIZE);
}

static void wrong_secret(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    generate(key, keyid, hash);
    /* Change each secret character to another valid canonical one: never verifies. */
    for (int i = 37; i < 80; i++) {
        char k2[APIKEY_LEN + 1];
        memcpy(k2, key, sizeof k2);
        if (i == 79) {
            k2[i] = key[i] == 'A' ? 'E' : 'A'; /* the last character must keep its low bits zero */
        } else {
            k2[i] = key[i] == 'x' ? 'y' : 'x';
        }
        assert_int_equal(apikey_verify(k2, APIKEY_LEN, hash, pepper, sizeof pepper, errmsg), GERR_UNAUTH);
        assert_null(strstr(errmsg, key + 37));
        assert_null(strstr(errmsg, k2 + 37));
    }
    /* Another key id with the same secret verifies against the hash (the row is found by key id;
     * the hash binds the secret), but a different key id is a different row in the store. */
    char k3[APIKEY_LEN + 1];
    memcpy(k3, key, sizeof k3);
    k3[4] = key[4] == 'a' ? 'b' : 'a';
    struct apikey_parts p;
    assert_int_equal(apikey_parse(k3, APIKEY_LEN, &p, errmsg), 0);
    assert_string_not_equal(p.keyid, keyid);
}

static void wrong_pepper(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    generate(key, keyid, hash);
    assert_int_equal(apikey_verify(key, APIKEY_LEN, hash, pepper2, sizeof pepper2, errmsg), GERR_UNAUTH);
    assert_int_equal(apikey_verify(key, APIKEY_LEN, hash, pepper, sizeof pepper - 1, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "pepper"));
    uint8_t h[APIKEY_HASH_SIZE];
    assert_int_equal(apikey_generate(pepper, 31, key, keyid, h, errmsg), GERR_INVAL);
    assert_int_equal(apikey_generate(NULL, 0, key, keyid, h, errmsg), GERR_INVAL);
    assert_int_equal(apikey_hash(pepper, 0, key + 37, h, errmsg), GERR_INVAL);
    static uint8_t huge_pepper[APIKEY_PEPPER_MAX + 1];
    assert_int_equal(apikey_hash(huge_pepper, sizeof huge_pepper, key + 37, h, errmsg), GERR_INVAL);
    assert_int_equal(apikey_hash(huge_pepper, APIKEY_PEPPER_MAX, key + 37, h, errmsg), 0);
    /* A longer pepper is fine and gives a different hash. */
    uint8_t long_pepper[64];
    memset(long_pepper, 7, sizeof long_pepper);
    char k2[APIKEY_LEN + 1], id2[APIKEY_ID_LEN + 1];
    uint8_t h2[APIKEY_HASH_SIZE];
    assert_int_equal(apikey_generate(long_pepper, sizeof long_pepper, k2, id2, h2, errmsg), 0);
    assert_int_equal(apikey_verify(k2, APIKEY_LEN, h2, long_pepper, sizeof long_pepper, errmsg), 0);
    assert_int_equal(apikey_verify(k2, APIKEY_LEN, h2, pepper, sizeof pepper, errmsg), GERR_UNAUTH);
}

/* The stored hash is HMAC-SHA256(pepper, secret), checked against OpenSSL's one-shot HMAC, with
 * one pepper twice in a row (the kept context, re-initialized), peppers alternating, and on another
 * thread (each keeps a context keyed by the last pepper it used: a stale one would hash with the
 * wrong key). */
struct hmac_case {
    const uint8_t *pepper;
    size_t len;
    bool ok;
};

static void *hash_on_thread(void *arg)
{
    struct hmac_case *c = arg;
    static const char secret[APIKEY_SECRET_LEN + 1] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
    uint8_t h[APIKEY_HASH_SIZE], want[EVP_MAX_MD_SIZE];
    unsigned wn = 0;
    char err[GERR_MSG_SIZE];
    c->ok = apikey_hash(c->pepper, c->len, secret, h, err) == 0 &&
            HMAC(EVP_sha256(), c->pepper, (int)c->len, (const unsigned char *)secret, APIKEY_SECRET_LEN, want,
                 &wn) != NULL &&
            wn == APIKEY_HASH_SIZE && memcmp(h, want, APIKEY_HASH_SIZE) == 0;
    return NULL;
}

static void hash_is_hmac_sha256_whatever_the_pepper_order(void **state)
{
    (void)state;
    uint8_t long_pepper[100];
    memset(long_pepper, 9, sizeof long_pepper);
    struct hmac_case cases[] = {{pepper, sizeof pepper, false},           {pepper, sizeof pepper, false},
                                {pepper2, sizeof pepper2, false},         {pepper, sizeof pepper, false},
                                {long_pepper, sizeof long_pepper, false}, {long_pepper, 40, false},
                                {pepper2, sizeof pepper2, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hash_on_thread(&cases[i]);
        assert_true(cases[i].ok);
    }
    struct hmac_case other = {pepper2, sizeof pepper2, false};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hash_on_thread, &other), 0);
    pthread_join(t, NULL);
    assert_true(other.ok);
}

static void every_truncation_and_extension_is_malformed(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    struct apikey_parts p;
    generate(key, keyid, hash);
    for (size_t n = 0; n < APIKEY_LEN; n++) {
        assert_int_equal(apikey_parse(key, n, &p, errmsg), GERR_INVAL); /* prefixes */
        assert_int_equal(apikey_parse(key + n + 1, APIKEY_LEN - n - 1, &p, errmsg),
                         GERR_INVAL); /* suffixes */
        assert_int_equal(apikey_verify(key, n, hash, pepper, sizeof pepper, errmsg), GERR_INVAL);
    }
    char longer[APIKEY_LEN + 2];
    memcpy(longer, key, APIKEY_LEN);
    const char extra[] = {'A', '\n', ' ', '=', '\0'};
    for (size_t i = 0; i < sizeof extra; i++) {
        longer[APIKEY_LEN] = extra[i];
        assert_int_equal(apikey_parse(longer, APIKEY_LEN + 1, &p, errmsg), GERR_INVAL);
    }
}

static void malformed_strings(void **state)
{
    (void)state;
    char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    struct apikey_parts p;
    generate(key, keyid, hash);
    /* Every position, every byte value that is not allowed there, is refused. */
    for (size_t i = 0; i < APIKEY_LEN; i++) {
        for (int c = 0; c < 256; c++) {
            char k2[APIKEY_LEN + 1];
            memcpy(k2, key, sizeof k2);
            k2[i] = (char)c;
            bool ok;
            if (i < 4) {
                ok = c == "gtk_"[i];
            } else if (i < 36) {
                ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            } else if (i == 36) {
                ok = c == '_';
            } else {
                ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '_';
                if (ok && i == 79) { /* canonical: the two overhanging bits are zero */
                    int v = c >= 'a'               ? c - 'a' + 26
                            : c >= 'A'             ? c - 'A'
                            : c >= '0' && c <= '9' ? c - '0' + 52
                            : c == '-'             ? 62
                                                   : 63;
                    ok = (v & 3) == 0;
                }
            }
            int rc = apikey_parse(k2, APIKEY_LEN, &p, errmsg);
            if (ok) {
                assert_int_equal(rc, 0);
            } else {
                assert_int_equal(rc, GERR_INVAL);
                assert_null(strstr(errmsg, key + 37)); /* never quotes the secret */
            }
        }
    }
    /* Uppercase hex in the key id, padding, the separator moved. */
    char k3[APIKEY_LEN + 1];
    memcpy(k3, key, sizeof k3);
    k3[5] = 'A';
    assert_int_equal(apikey_parse(k3, APIKEY_LEN, &p, errmsg), GERR_INVAL);
    memcpy(k3, key, sizeof k3);
    k3[79] = '=';
    assert_int_equal(apikey_parse(k3, APIKEY_LEN, &p, errmsg), GERR_INVAL);
    assert_int_equal(apikey_parse("", 0, &p, errmsg), GERR_INVAL);
    const char *gh = "ghp_0123456789abcdef0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_int_equal(strlen(gh), APIKEY_LEN);
    assert_int_equal(apikey_parse(gh, APIKEY_LEN, &p, errmsg), GERR_INVAL);
    assert_int_equal(apikey_parse(gh + 0, APIKEY_LEN, &p, errmsg), GERR_INVAL);
    const char *good = "gtk_0123456789abcdef0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_int_equal(apikey_parse(good, APIKEY_LEN, &p, errmsg), 0);
    assert_string_equal(p.keyid, "0123456789abcdef0123456789abcdef");
}

static bool contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0) {
            return true;
        }
    }
    return false;
}

static void hash_never_holds_the_secret(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        char key[APIKEY_LEN + 1], keyid[APIKEY_ID_LEN + 1];
        uint8_t hash[APIKEY_HASH_SIZE];
        generate(key, keyid, hash);
        const char *secret = key + 37;
        /* Not the secret's text, nor any 8-character run of it, nor its decoded bytes. */
        assert_memory_not_equal(hash, secret, APIKEY_HASH_SIZE);
        for (size_t i = 0; i + 8 <= APIKEY_SECRET_LEN; i++) {
            assert_false(contains(hash, sizeof hash, secret + i, 8));
        }
        /* Decode the secret (test-side, plain) and look for 8-byte runs of it. */
        uint8_t raw[33];
        size_t k = 0;
        uint32_t acc = 0;
        unsigned bits = 0;
        for (size_t i = 0; i < APIKEY_SECRET_LEN; i++) {
            char c = secret[i];
            int v = c >= 'a'               ? c - 'a' + 26
                    : c >= 'A'             ? c - 'A'
                    : c >= '0' && c <= '9' ? c - '0' + 52
                    : c == '-'             ? 62
                                           : 63;
            acc = (acc << 6) | (uint32_t)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                raw[k++] = (uint8_t)(acc >> bits);
                acc &= (1u << bits) - 1;
            }
        }
        assert_int_equal(k, 32);
        for (size_t i = 0; i + 8 <= 32; i++) {
            assert_false(contains(hash, sizeof hash, raw + i, 8));
        }
        /* And the hash is not a bare SHA-256 of the secret: the pepper matters (wrong_pepper). */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_is_documented),
        cmocka_unit_test(round_trip_and_uniqueness),
        cmocka_unit_test(wrong_secret),
        cmocka_unit_test(wrong_pepper),
        cmocka_unit_test(hash_is_hmac_sha256_whatever_the_pepper_order),
        cmocka_unit_test(every_truncation_and_extension_is_malformed),
        cmocka_unit_test(malformed_strings),
        cmocka_unit_test(hash_never_holds_the_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
