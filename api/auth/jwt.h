/* OIDC JWT verification against several configured issuers at once.
 *
 * A pure module: no network, no store, no logging of tokens. The caller (the server's OIDC
 * authenticator, a later issue) fetches each issuer's JWKS document from a file or an HTTPS URL,
 * hands the text to jwt_keyset_parse(), installs the key set with jwt_verifier_set_keys(), and
 * calls jwt_verify() for every bearer token. When jwt_verify() answers GERR_NOTFOUND the token
 * names a key the installed set does not hold (or no set is installed yet): the caller refreshes
 * that issuer's JWKS (rate limited) and tries once more.
 *
 * What is accepted (everything else is rejected):
 *   - compact JWS only: exactly three base64url segments "header.payload.signature", unpadded,
 *     canonical (unused trailing bits zero), no whitespace, at most JWT_MAX_TOKEN bytes in all,
 *     checked before anything is decoded;
 *   - header and payload are JSON objects without duplicate member names;
 *   - header "alg" RS256 (RSASSA-PKCS1-v1_5 with SHA-256, RSA modulus 2048..8192 bits) or ES256
 *     (ECDSA P-256 with SHA-256, signature the 64-byte r||s of RFC 7518 section 3.4); "none",
 *     the HMAC algorithms (HS256/384/512) and every other value are rejected by name, before any
 *     key is looked at, so an RSA public key can never be used as an HMAC secret;
 *   - no "crit" header (no extension is understood, so none may be required of us); keys named
 *     by "jwk", "jku", "x5u" or "x5c" headers are never used: keys come only from the JWKS;
 *     "typ" is not checked (issuers differ: "JWT", "at+jwt", none);
 *   - the key is found by the header's "kid" in the issuer's set (a token without "kid" is
 *     accepted only when the set holds exactly one key); the key's type must match the algorithm
 *     (RS256 needs kty RSA, ES256 needs kty EC with crv P-256) and so must the JWK's own "alg"
 *     when it has one;
 *   - claims: "iss" equals one configured issuer exactly; "aud" (a string or an array of strings)
 *     contains at least one of that issuer's audiences; "exp" is required and now < exp + leeway;
 *     "nbf" and "iat", when present, are <= now + leeway. NumericDates may carry a fraction,
 *     which is dropped. Time comes from the verifier's struct clock (wall_ms), so tests use the
 *     fake clock;
 *   - the principal claim (default "sub") is a string of 1..JWT_MAX_SUBJECT bytes without
 *     control characters.
 *
 * Errors (every message goes into the caller's GERR_MSG_SIZE errmsg buffer):
 *   GERR_INVAL     not a well-formed compact JWS: size, segments, base64url, JSON syntax,
 *                  duplicate members, a header or payload that is not an object, "alg"/"kid"
 *                  of the wrong JSON type;
 *   GERR_UNAUTH    well formed but refused: algorithm, crit, unknown issuer, key type mismatch,
 *                  bad signature, expired, not yet valid, issued in the future, audience
 *                  mismatch, missing or malformed claims;
 *   GERR_NOTFOUND  the issuer is configured but its installed key set (if any) has no key with
 *                  the token's kid: refresh the JWKS and retry;
 *   GERR_INTERNAL  OpenSSL failed for a reason unrelated to the input (GERR_NOMEM when it ran out
 *                  of memory), both via sslerr_from_openssl.
 * The API layer answers GERR_INVAL, GERR_UNAUTH and (after one refresh) GERR_NOTFOUND with
 * UNAUTHENTICATED. Messages never contain the token, its signature, or any segment of it;
 * values quoted from an unverified token (issuer, kid, alg) are cut to 64 bytes with
 * non-printable bytes replaced by '?'.
 *
 * Threads: a key set is immutable once parsed, and jwt_verify() only reads the verifier, so
 * several threads may verify at once. Adding issuers and installing key sets must not run
 * concurrently with anything else on the same verifier (the server does both on its loop). */
#ifndef GANTRY_API_AUTH_JWT_H
#define GANTRY_API_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lib/clock.h"
#include "lib/err.h"

#define JWT_MAX_TOKEN               16384u         /* bytes of the whole compact token */
#define JWT_MAX_JWKS                (256u * 1024u) /* bytes of a JWKS document */
#define JWT_MAX_KEYS                64u            /* entries in a JWKS "keys" array (usable or not) */
#define JWT_MAX_KID                 256u           /* bytes of a "kid" */
#define JWT_MAX_SUBJECT             256u           /* bytes of the principal claim's value */
#define JWT_MAX_AUDIENCES           16u            /* audiences per issuer configuration */
#define JWT_MAX_ISSUERS             32u            /* issuers per verifier */
#define JWT_MAX_NAME                63u            /* bytes of an issuer's local name */
#define JWT_DEFAULT_LEEWAY_S        60u
#define JWT_DEFAULT_PRINCIPAL_CLAIM "sub"

/* A parsed JWKS: the usable signature keys of one issuer, looked up by "kid". Immutable. */
struct jwt_keyset;

/* Parse a JWKS document (RFC 7517) of @len bytes (at most JWT_MAX_JWKS). Keys are kept when they
 * are kty RSA (n, e; modulus 2048..8192 bits) or kty EC with crv P-256 (x, y of 32 bytes each,
 * a point on the curve). Keys are skipped, not refused, when "use" is present and not "sig",
 * "key_ops" is present without "verify", "alg" is present and not RS256/ES256 or does not fit
 * kty, or kty/crv is anything else (oct, OKP, P-384, ...). Members other than these are ignored
 * (a private "d" is never imported).
 *
 * GERR_INVAL (with the reason) when the document is not a JSON object with a "keys" array of at
 * most JWT_MAX_KEYS objects, has duplicate member names, when a key of a supported type has
 * malformed material or members of the wrong JSON type, when two usable keys share a kid, or
 * when no usable key remains. The material of a key of an unsupported type (an "oct" key without
 * "k") is never inspected: it is skipped. Keys are looked up by a linear scan (at most 64). On
 * success *@out is a new set owned by the caller (jwt_keyset_free, or jwt_verifier_set_keys). */
int jwt_keyset_parse(const char *json, size_t len, struct jwt_keyset **out, char *errmsg);

/* Number of usable keys in @ks. */
unsigned jwt_keyset_count(const struct jwt_keyset *ks);

void jwt_keyset_free(struct jwt_keyset *ks); /* NULL is fine */

/* One trusted issuer. Every string is copied by jwt_verifier_add_issuer(). Start from
 * jwt_issuer_init() to get the defaults, or set every field yourself. */
struct jwt_issuer {
    const char *issuer;           /* the exact "iss" value, e.g. "https://accounts.example.com" */
    const char *name;             /* local name, a DNS-1123 label (a-z, 0-9, '-', at most 63
                                     bytes): the issuer part of principal keys (below) */
    const char *const *audiences; /* accepted "aud" values (1..JWT_MAX_AUDIENCES) */
    unsigned n_audiences;
    unsigned leeway_s;           /* clock skew allowed on exp, nbf and iat (at most 3600) */
    const char *principal_claim; /* the claim that names the principal; NULL means "sub" */
    bool external_signature;     /* no key set: jwt_verify() checks everything but the signature
                                    (header, alg, a non-empty signature segment, claims) and the
                                    CALLER must have the token verified by someone else (a
                                    Kubernetes API server's TokenReview, api/auth/oidc.h) before
                                    trusting the result; jwt_verifier_set_keys() is refused */
};

/* Fill @cfg with the defaults: leeway JWT_DEFAULT_LEEWAY_S, principal claim "sub", the given
 * issuer and name (borrowed until jwt_verifier_add_issuer copies them), no audiences yet. */
void jwt_issuer_init(struct jwt_issuer *cfg, const char *issuer, const char *name);

/* The trusted issuers and their key sets. */
struct jwt_verifier;

/* A verifier with no issuers that reads time from @clock (borrowed; it must outlive the
 * verifier). Never fails (allocation aborts, see lib/mem.h). */
struct jwt_verifier *jwt_verifier_new(struct clock *clock);

void jwt_verifier_free(struct jwt_verifier *v); /* frees the installed key sets; NULL is fine */

/* Trust @cfg (copied). GERR_INVAL for an empty issuer, a bad name, no audiences, an empty
 * audience, too many audiences or issuers, a leeway over an hour, an empty principal claim;
 * GERR_EXISTS when another issuer has the same "iss" or the same name. No keys yet: until
 * jwt_verifier_set_keys(), tokens of this issuer get GERR_NOTFOUND. */
int jwt_verifier_add_issuer(struct jwt_verifier *v, const struct jwt_issuer *cfg, char *errmsg);

/* Install @keys for the issuer whose "iss" is @issuer, replacing (and freeing) the previous set.
 * Ownership of @keys passes to the verifier on success; on GERR_NOTFOUND (no such issuer) and
 * GERR_INVAL (an issuer with external_signature) the caller keeps it. */
int jwt_verifier_set_keys(struct jwt_verifier *v, const char *issuer, struct jwt_keyset *keys, char *errmsg);

/* The outcome of a successful verification. Caller-owned: release with jwt_result_close(). */
struct jwt_result {
    char *issuer;           /* the "iss" value (heap) */
    char *issuer_name;      /* the issuer's local name from its configuration (heap) */
    char *subject;          /* the principal claim's value (heap) */
    char *principal;        /* "<issuer_name>#<subject>" (heap), see below */
    int64_t expires_at;     /* "exp", Unix seconds */
    int64_t valid_until_ms; /* when the token stops verifying: exp plus the issuer's leeway, Unix ms */
    json_t *claims;         /* the whole payload object; the result holds one reference, which
                               jwt_result_close() drops: json_incref() it to keep it longer */
};

/* Principal keys. The same person seen through two issuers is two principals (until an admin
 * links them), so a principal is named by the issuer and the subject together:
 *
 *     <issuer name> "#" <subject>          e.g.  "corp-okta#00u1a2b3c4"
 *
 * The issuer name is the configured local name (a DNS-1123 label, so it holds no '#'); the
 * subject is the principal claim's value byte for byte (it may itself contain '#'). Split a key
 * at its first '#'. The local name rather than the "iss" URL keeps keys short and lets an
 * operator move an issuer to a new URL without renaming every principal. */

/* Verify the compact JWS @token of @len bytes (it need not be NUL-terminated) against the
 * configured issuers. On success fills *@out (which the caller then owns) and returns 0; on
 * failure returns one of the codes in the file comment, leaves *@out zeroed and explains in
 * @errmsg. */
int jwt_verify(const struct jwt_verifier *v, const char *token, size_t len, struct jwt_result *out,
               char *errmsg);

/* Free what jwt_verify() put into @r and zero it. Safe on a zeroed result. */
void jwt_result_close(struct jwt_result *r);

#endif
