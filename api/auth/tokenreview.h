/* Kubernetes TokenReview (authentication.k8s.io/v1): the request a gateway POSTs to
 * /apis/authentication.k8s.io/v1/tokenreviews to ask the API server whether a ServiceAccount token
 * is still good, the parser of the answer, and a small cache of positive answers. Pure: no
 * network (api/auth/oidc.c sends the request with libcurl).
 *
 * What the answer must say for the token to be accepted: status.authenticated true,
 * status.user.username exactly the subject the JWT carried, and, when status.audiences is present,
 * at least one of the audiences asked for (the API server intersects the token's audiences with
 * spec.audiences; it leaves status.audiences out only when none were asked for, and we always
 * ask).
 *
 * Messages never contain the token: the request body holds it, the parser never echoes the body
 * (only status.error, cut to 160 bytes with control characters replaced), and the cache keeps a
 * SHA-256 of it only.
 *
 * Threads: tokenreview_request/parse are reentrant. A tokenreview_cache serialises itself. */
#ifndef GANTRY_API_AUTH_TOKENREVIEW_H
#define GANTRY_API_AUTH_TOKENREVIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define TOKENREVIEW_PATH         "/apis/authentication.k8s.io/v1/tokenreviews"
#define TOKENREVIEW_MAX_RESPONSE (64u * 1024u) /* bytes of an answer we read */
#define TOKENREVIEW_CACHE_MS     1000u         /* how long a positive answer is reused */
#define TOKENREVIEW_CACHE_SLOTS  256u

/* The JSON body of a TokenReview for @token (@len bytes) and @n_auds audiences: a new
 * NUL-terminated string (mem_free it after explicit_bzero: it holds the token), or NULL when the
 * token is not valid UTF-8 (a JWS that jwt_verify accepted always is). Allocation aborts. */
char *tokenreview_request(const char *token, size_t len, const char *const *auds, unsigned n_auds);

/* Check the API server's answer @body (@len bytes, need not be NUL-terminated) to a review of a
 * token whose subject is @username, asked for @auds. Returns
 *   0            authenticated as @username for one of @auds;
 *   GERR_UNAUTH  the API server said no (status.authenticated false: the message carries its
 *                status.error, e.g. the ServiceAccount or the pod was deleted), or named another
 *                user, or none of the audiences asked for;
 *   GERR_INVAL   the answer is not a TokenReview (not JSON, wrong kind or apiVersion, status
 *                missing or of the wrong types, larger than TOKENREVIEW_MAX_RESPONSE).
 * @errmsg (GERR_MSG_SIZE) explains every refusal. */
int tokenreview_parse(const char *body, size_t len, const char *username, const char *const *auds,
                      unsigned n_auds, char *errmsg);

/* Positive answers, keyed by SHA-256 of the token, each reused for TOKENREVIEW_CACHE_MS and
 * never beyond @not_after_ms (the token's own end). Negative answers and failures are never
 * cached, so a token the API server refuses is refused on the next request. */
struct tokenreview_cache;

struct tokenreview_cache *tokenreview_cache_new(void);
void tokenreview_cache_free(struct tokenreview_cache *c);

/* True when @token was accepted less than TOKENREVIEW_CACHE_MS before @now_ms (monotonic). */
bool tokenreview_cache_hit(struct tokenreview_cache *c, const char *token, size_t len, uint64_t now_ms);

/* Remember that @token was accepted at @now_ms (a full cache evicts the oldest entry). */
void tokenreview_cache_put(struct tokenreview_cache *c, const char *token, size_t len, uint64_t now_ms);

#endif
