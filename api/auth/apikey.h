/* API keys: format, generation and verification. A pure module: no store, no I/O but getrandom.
 *
 * Format (80 ASCII bytes, shown to the user exactly once, at creation):
 *
 *     gtk_<keyid>_<secret>
 *     gtk_                   the prefix: makes a leaked key recognisable to secret scanners
 *         <keyid>            32 lowercase hex digits: 16 random bytes; public, it finds the row
 *                _           separator
 *                 <secret>   43 base64url characters (A-Z a-z 0-9 - _), no padding: 32 random
 *                            bytes; the last character carries 2 unused bits, which must be zero
 *
 * Parsing is by position, not by splitting at '_' (the secret's alphabet contains '_'): the whole
 * string must be exactly APIKEY_LEN bytes, start with "gtk_", have '_' at byte 36, and every other
 * byte must come from its part's alphabet. Nothing else (whitespace, a newline, uppercase hex,
 * padding, a NUL) is tolerated.
 *
 * Storage: the `api_keys` row keeps the key id and hash = HMAC-SHA256(pepper, secret), where the
 * secret is the 43 ASCII characters and the pepper a cluster-wide secret of at least
 * APIKEY_PEPPER_MIN bytes kept outside the database (replica configuration). Never the secret.
 *   - Why not a slow KDF (bcrypt, scrypt, Argon2): those exist to slow down guessing of
 *     low-entropy passwords. The secret is 256 uniformly random bits; no guessing attack on it
 *     is feasible at any speed, and a KDF would only make every authenticated call expensive.
 *   - Why a keyed hash rather than bare SHA-256: with the pepper, a stolen database (or backup)
 *     alone cannot even be used to test a candidate secret, and the hashes it holds are useless
 *     without the replicas' configuration too. Rotating the pepper invalidates every key.
 *
 * Verification recomputes the HMAC and compares with CRYPTO_memcmp. The path through parse and
 * verify never branches on a secret byte: the secret's characters are validated with branch-free
 * arithmetic and one decision on the accumulated result, and the HMAC and the comparison are
 * constant time. (Whether the presented string is well formed is not a secret; the key id is
 * public.) Messages never contain the key or any part of the secret. */
#ifndef GANTRY_API_AUTH_APIKEY_H
#define GANTRY_API_AUTH_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define APIKEY_PREFIX       "gtk_"
#define APIKEY_PREFIX_LEN   4u
#define APIKEY_ID_BYTES     16u
#define APIKEY_ID_LEN       32u /* hex characters */
#define APIKEY_SECRET_BYTES 32u
#define APIKEY_SECRET_LEN   43u /* base64url characters */
#define APIKEY_LEN          (APIKEY_PREFIX_LEN + APIKEY_ID_LEN + 1u + APIKEY_SECRET_LEN) /* 80 */
#define APIKEY_HASH_SIZE    32u                                                          /* HMAC-SHA256 */
#define APIKEY_PEPPER_MIN   32u                                                          /* bytes */
#define APIKEY_PEPPER_MAX   4096u

/* A parsed key. @secret points into the string given to apikey_parse (not NUL-terminated, not
 * copied), so it lives exactly as long as that string. */
struct apikey_parts {
    char keyid[APIKEY_ID_LEN + 1];
    const char *secret; /* APIKEY_SECRET_LEN bytes */
};

/* Create a new key. Writes the full key (NUL-terminated, show it once, then forget it), its key id
 * (NUL-terminated) and the hash to store. GERR_INVAL when @pepper is not APIKEY_PEPPER_MIN..
 * APIKEY_PEPPER_MAX bytes; GERR_IO when the kernel refuses random bytes; GERR_INTERNAL (or
 * GERR_NOMEM) when OpenSSL's HMAC fails. On failure nothing is written except @errmsg. */
int apikey_generate(const uint8_t *pepper, size_t pepper_len, char key[APIKEY_LEN + 1],
                    char keyid[APIKEY_ID_LEN + 1], uint8_t hash[APIKEY_HASH_SIZE], char *errmsg);

/* Check the format of @s (@len bytes, NUL not needed) and split it. 0, or GERR_INVAL with a
 * message that says what is wrong without quoting the input. */
int apikey_parse(const char *s, size_t len, struct apikey_parts *out, char *errmsg);

/* hash = HMAC-SHA256(pepper, secret) for the APIKEY_SECRET_LEN bytes at @secret. GERR_INVAL for a
 * pepper outside APIKEY_PEPPER_MIN..APIKEY_PEPPER_MAX bytes; GERR_INTERNAL (GERR_NOMEM) if OpenSSL
 * fails. */
int apikey_hash(const uint8_t *pepper, size_t pepper_len, const char *secret, uint8_t hash[APIKEY_HASH_SIZE],
                char *errmsg);

/* Does the presented key @s (@len bytes) match @stored_hash under @pepper? The caller found the
 * row by the key id from apikey_parse(). 0 on a match; GERR_INVAL for a malformed key or a short
 * pepper; GERR_UNAUTH ("API key does not match") otherwise; GERR_INTERNAL if OpenSSL fails. */
int apikey_verify(const char *s, size_t len, const uint8_t stored_hash[APIKEY_HASH_SIZE],
                  const uint8_t *pepper, size_t pepper_len, char *errmsg);

#endif
