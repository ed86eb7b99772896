/* The OIDC authenticator: configured issuers in, verified principals out.
 *
 * It owns a jwt_verifier (api/auth/jwt.h) and keeps each issuer's JWKS installed in it (except
 * for an issuer with verify OIDC_VERIFY_TOKEN_REVIEW, which has none: see its field). A JWKS
 * comes from a local file (read with lib/file.h) or from an https:// URL (fetched with libcurl;
 * plain http and every other scheme are refused when the issuer is added). Key sets are fetched
 *   - for every issuer by oidc_start();
 *   - when a token names a key id the installed set does not hold (GERR_NOTFOUND from
 *     jwt_verify): the calling thread refreshes that issuer once and verifies again, at most once
 *     per min_refresh_interval_ms per issuer, so a flood of tokens with random kids cannot make
 *     us hammer the identity provider;
 *   - periodically, by oidc_refresh_due() called from the daemon's maintenance thread: every
 *     refresh_ms after the last fetch, or every min_refresh_interval_ms while the last fetch of
 *     the issuer failed.
 * One fetch of an issuer runs at a time: a thread that needs a refresh while another thread is
 * fetching the same issuer waits for that fetch and uses its result instead of starting its own.
 * A fetch that fails leaves the previous key set (if any) installed. An issuer whose key set was
 * never loaded stays configured: its tokens fail with GERR_UNAUTH and a message that gives the
 * last fetch error, until a later fetch succeeds.
 *
 * HTTPS fetches: TLS peer and host name verification always on (against @ca_file only when it is
 * given, else the system trust store); redirects are followed (at most 5) only to https URLs, and
 * never when a bearer token is sent (@bearer_token_file: read, trimmed and checked at each fetch,
 * wiped after; an unreadable or empty file fails the fetch like the network would);
 * connect + transfer bounded by @timeout_ms; the body is refused beyond @max_document bytes
 * (checked as it arrives, and at once when the server announces a larger Content-Length); only
 * HTTP 200 is accepted. libcurl honours the usual proxy environment variables (https_proxy,
 * all_proxy, no_proxy); TLS is still verified end to end through a proxy. Transfers run with
 * CURLOPT_NOSIGNAL (many threads), so the process must ignore SIGPIPE, as gantryd does.
 *
 * Time: scheduling uses @clock's monotonic time and token checks its wall time (jwt.h), so tests
 * drive both with the fake clock. Network timeouts are real time (libcurl's own).
 *
 * Threads: oidc_verify(), oidc_refresh_due() and oidc_issuer_status() may be called from any
 * number of threads at once. oidc_add_issuer() and oidc_start() are called once, from one thread,
 * before any of those; oidc_free() after all of them have returned. Verification holds a
 * read lock on the verifier; installing a fetched key set takes the write lock for a pointer
 * swap only (network and parsing happen outside every lock), which honours jwt.h's rule that
 * installing keys never runs concurrently with verification.
 *
 * TokenReview (token_review on an issuer): after the JWKS checks pass (for an issuer with
 * verify OIDC_VERIFY_TOKEN_REVIEW: after every check but the signature, which is the API
 * server's to judge), oidc_verify() POSTs the
 * token to the issuer's API server on the calling thread (same TLS, bearer and timeout rules as a
 * JWKS fetch, no redirects with the bearer token; no lock is held meanwhile) unless the same token
 * was accepted less than TOKENREVIEW_CACHE_MS ago.
 *
 * Errors (messages go into the caller's GERR_MSG_SIZE errmsg buffer; a message never contains the
 * token or any segment of it):
 *   fetching  GERR_UNAVAILABLE  network, TLS, timeout, or an HTTP status other than 200;
 *             GERR_REFUSED      a redirect to a URL that is not https;
 *             GERR_TOOBIG       the document is larger than max_document;
 *             GERR_INVAL        the document is not a usable JWKS (jwt_keyset_parse), or a local
 *                               TLS setting (an unreadable ca_file) is wrong;
 *             file sources      what file_read_all() answers (GERR_NOTFOUND, GERR_PERM, ...);
 *   verifying see oidc_verify(). */
#ifndef GANTRY_API_AUTH_OIDC_H
#define GANTRY_API_AUTH_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/auth/jwt.h"
#include "lib/clock.h"
#include "lib/err.h"

#define OIDC_DEFAULT_TIMEOUT_MS      10000u       /* connect + transfer of one HTTPS fetch */
#define OIDC_MAX_TIMEOUT_MS          120000u      /* the largest accepted timeout_ms */
#define OIDC_DEFAULT_MAX_DOCUMENT    JWT_MAX_JWKS /* bytes; also the largest accepted value */
#define OIDC_DEFAULT_REFRESH_MS      3600000u     /* 1 h between periodic refreshes */
#define OIDC_DEFAULT_MIN_INTERVAL_MS 30000u       /* 30 s between fetches of one issuer */
#define OIDC_MIN_INTERVAL_FLOOR_MS   1000u        /* min_refresh_interval_ms may not be lower */
#define OIDC_MAX_URL                 2048u        /* bytes of a jwks_url */
#define OIDC_MAX_REDIRECTS           5

/* How an issuer's tokens are verified. */
enum oidc_verify {
    OIDC_VERIFY_JWKS = 0,     /* the signature against the issuer's JWKS (jwks_file or jwks_url),
                                 plus a TokenReview when token_review is on */
    OIDC_VERIFY_TOKEN_REVIEW, /* a Kubernetes issuer without JWKS: the API server's TokenReview
                                 is the verification (below) */
};

/* One issuer. Every string is copied by oidc_add_issuer(). Start from oidc_issuer_config_init(). */
struct oidc_issuer_config {
    const char *name;             /* local name: a DNS-1123 label (jwt.h), the "<name>#" of principals */
    const char *issuer;           /* the exact "iss" value */
    const char *const *audiences; /* accepted "aud" values, 1..JWT_MAX_AUDIENCES */
    unsigned n_audiences;
    const char *principal_claim; /* NULL means "sub" */
    unsigned leeway_s;           /* clock skew on exp/nbf/iat; default JWT_DEFAULT_LEEWAY_S */
    /* The JWKS source: exactly one of these two. */
    const char *jwks_file;            /* a local path, read whole on every fetch */
    const char *jwks_url;             /* an https:// URL */
    const char *ca_file;              /* PEM CA bundle trusted for jwks_url instead of the system store;
                                         NULL for the system store; refused with jwks_file */
    const char *bearer_token_file;    /* a file whose content is sent as "Authorization: Bearer" with
                                         each jwks_url fetch (a Kubernetes API server's
                                         /openid/v1/jwks wants the pod's projected token); read at
                                         every fetch, so a rotated token is used; redirects are
                                         then not followed; NULL: none; refused with jwks_file */
    unsigned timeout_ms;              /* 1..OIDC_MAX_TIMEOUT_MS; default OIDC_DEFAULT_TIMEOUT_MS */
    size_t max_document;              /* bytes, 1..JWT_MAX_JWKS; default JWT_MAX_JWKS (256 KiB) */
    uint64_t refresh_ms;              /* periodic refresh; default 1 h; at least min_refresh_interval_ms */
    uint64_t min_refresh_interval_ms; /* rate limit of fetches of this issuer (unknown kid and
                                         retries after failure); default 30 s, at least 1 s */
    /* TokenReview (a Kubernetes cluster as the issuer): when on, a token that passed every JWKS
     * check is also POSTed to the API server's /apis/authentication.k8s.io/v1/tokenreviews (with
     * ca_file and bearer_token_file, which is then required) and accepted only when the answer
     * is authenticated, names the token's "sub" as user and one of @audiences (tokenreview.h).
     * Positive answers are reused for TOKENREVIEW_CACHE_MS per token; refusals are not cached. */
    bool token_review;
    const char *token_review_url; /* the API server's https:// base URL; NULL: scheme, host and
                                     port of jwks_url (required with jwks_file); refused without
                                     token_review */
    /* OIDC_VERIFY_TOKEN_REVIEW: no key set at all (jwks_file and jwks_url must be NULL; nothing
     * is fetched, oidc_start() and oidc_refresh_due() skip the issuer). The token is parsed
     * without trusting its signature (jwt.h external_signature): its "iss" routes it here and
     * its header, exp/nbf/iat (with leeway), aud and principal claim are checked locally, so an
     * expired token or one for another audience is refused without asking; it must carry the
     * "kubernetes.io" claim object and a "sub" of the form system:serviceaccount:NS:NAME. Then
     * the TokenReview above decides (token_review is implied; token_review_url and
     * bearer_token_file are required): only the API server's authenticated answer for exactly
     * that sub and one of @audiences accepts the token. Cache and UNAVAILABLE as above. */
    enum oidc_verify verify;
};

/* Fill @cfg with the defaults above, @name and @issuer (borrowed until oidc_add_issuer copies
 * them), no audiences and no source yet. */
void oidc_issuer_config_init(struct oidc_issuer_config *cfg, const char *name, const char *issuer);

struct oidc;

/* A new authenticator without issuers that reads time from @clock (borrowed; it must outlive the
 * authenticator). Initialises libcurl once per process (never cleaned up). Never fails
 * (allocation aborts, lib/mem.h). */
struct oidc *oidc_new(struct clock *clock);

/* Free everything, including installed key sets. NULL is fine. No other call may be running. */
void oidc_free(struct oidc *o);

/* Add an issuer (copied). Only before oidc_start(). Nothing is fetched yet. GERR_INVAL for a
 * missing or doubled source (for OIDC_VERIFY_TOKEN_REVIEW: any JWKS source, or no
 * token_review_url or bearer_token_file), a jwks_url that does not parse or is not https ("plain http is
 * refused"), a ca_file or bearer_token_file with a jwks_file, an out-of-range timeout, size or interval, and
 * for everything jwt_verifier_add_issuer() refuses; GERR_EXISTS for a duplicate issuer or name. On error
 * nothing was added. */
int oidc_add_issuer(struct oidc *o, const struct oidc_issuer_config *cfg, char *errmsg);

/* Fetch every issuer's key set once (issuers verified by TokenReview only have none), in the order added, and
 * log each outcome. The authenticator is started whatever happens: an issuer whose fetch failed stays
 * configured and is retried (see the file comment). Returns 0 when every issuer has keys, else the code of
 * the first failure with its message (prefixed by the issuer's name), for the caller to log or to refuse to
 * start. */
int oidc_start(struct oidc *o, char *errmsg);

/* Verify the compact JWS @token of @len bytes (need not be NUL-terminated). Only after
 * oidc_start(). On success fills *@out (caller-owned: jwt_result_close) and returns 0; out->principal
 * is "<issuer name>#<claim value>" (jwt.h). When jwt_verify() answers GERR_NOTFOUND (unknown kid,
 * or no key set loaded for the token's issuer), refreshes that issuer (rate limited, single
 * flight) and verifies once more. Errors, with *@out zeroed:
 *   GERR_INVAL     not a well-formed compact JWS (jwt.h);
 *   GERR_UNAUTH    refused (jwt.h), or (OIDC_VERIFY_TOKEN_REVIEW) not a Kubernetes
 *                  ServiceAccount token, or the key is still unknown after the refresh, or the refresh
 *                  was rate limited or failed: the message says which, with the fetch error; or
 *                  the issuer's API server did not authenticate the token (TokenReview: the
 *                  message carries its status.error, e.g. a deleted ServiceAccount or pod);
 *   GERR_UNAVAILABLE  the TokenReview could not be done: the API server is unreachable, answered
 *                  an HTTP status other than 200/201 (401/403: gantryd's own bearer token is not
 *                  allowed to create TokenReviews), or something that is not a TokenReview;
 *   GERR_INTERNAL, GERR_NOMEM  from OpenSSL (jwt.h).
 * It never answers GERR_NOTFOUND. The API layer maps INVAL and UNAUTH to UNAUTHENTICATED and
 * UNAVAILABLE to UNAVAILABLE (the client may retry; the token itself may be fine). */
int oidc_verify(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg);

/* Refresh, synchronously, every issuer that is due (refresh_ms since its last fetch, or
 * min_refresh_interval_ms when its last fetch failed) and is not being fetched by another
 * thread. Meant for a maintenance thread that calls it every few seconds. Returns 0 when nothing
 * failed, else the code and message of the first failure (each failure is also logged). */
int oidc_refresh_due(struct oidc *o, char *errmsg);

/* A snapshot of one issuer's fetch state, for health reporting and tests. */
struct oidc_issuer_status {
    bool has_keys;                  /* a key set is installed */
    unsigned n_keys;                /* usable keys in it */
    uint64_t fetches;               /* completed fetches, successful or not */
    uint64_t failures;              /* of which failed */
    int last_rc;                    /* 0 or the GERR_* of the last fetch (0 before any) */
    uint64_t last_success_wall_ms;  /* wall time of the last successful fetch, 0 if none */
    char last_error[GERR_MSG_SIZE]; /* message of the last failed fetch, "" if it succeeded */
};

/* Fill *@out for the issuer named @name (local name). GERR_NOTFOUND if there is none. */
int oidc_issuer_status(struct oidc *o, const char *name, struct oidc_issuer_status *out);

#endif
