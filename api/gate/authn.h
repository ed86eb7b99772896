/* Authentication of API calls: who is calling, and with which role bindings.
 *
 * Credentials, in order:
 *   "authorization: Bearer gtk_..."   an API key (api/auth/apikey.h), checked against its stored
 *                                     hash with the cluster pepper, in constant time;
 *   "authorization: Bearer <JWT>"     an OIDC token, when issuers are configured (api/auth/oidc.h):
 *                                     the principal whose oidc_issuer is the issuer's local name
 *                                     and oidc_subject the token's principal claim (created by an
 *                                     admin beforehand: no principal, no access);
 *   a verified client certificate     when the API asks for client certificates (api_tls_client_ca):
 *                                     the principal whose issuer is "mtls" and subject the
 *                                     certificate's common name.
 * A credential that names no enabled principal is refused.
 *
 * With the change-feed models (authn_set_models), lookups are answered from them and the store is
 * read only for what they cannot confirm (below). Without them:
 * Caching and the revocation bound: key rows and a principal's bindings are cached per replica.
 * Without a change feed (authn_attach_feed) an entry answers for at most AUTHN_CACHE_TTL_MS. With
 * one, the feed's events drop exactly the entries a change affects (ApiKey: that key; Principal:
 * that principal; RoleBinding or Namespace DELETED: every principal), and an entry may answer for
 * up to AUTHN_CACHE_EVENT_TTL_MS while the feed is live (feed_live_since_ms less than
 * AUTHN_CACHE_TTL_MS ago); whenever it is not (leader unreachable, polls failing, not started),
 * entries fall back to AUTHN_CACHE_TTL_MS. Either way a revoked or expired key, a disabled
 * principal or a removed binding takes effect on every replica within AUTHN_CACHE_TTL_MS
 * (docs/security.md gives the argument; test_identity.py and test_store_feed.c check it). Expiry
 * itself is checked on every call against the cached expiry time.
 *
 * Limits on failed attempts are the gate's (api/gate/admission.h): they apply before a call gets
 * here, and never to a credential this replica verified recently.
 *
 * Thread-safe: worker threads call authn_call concurrently. Blocking (store round trips on a
 * cache miss; for a token of an issuer with token_review, the API server's TokenReview unless its
 * 1 s cache answers: api/auth/oidc.h, up to the issuer's timeout_ms). An OIDC token that cannot be
 * checked (GERR_UNAVAILABLE from oidc_verify) is UNAVAILABLE, not a bad credential. */
#ifndef GANTRY_API_GATE_AUTHN_H
#define GANTRY_API_GATE_AUTHN_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "api/authz/authz.h"
#include "lib/buf.h"
#include "store/client.h"
#include "store/writer.h"

#define AUTHN_CACHE_TTL_MS       2000u  /* the revocation bound */
#define AUTHN_CACHE_EVENT_TTL_MS 60000u /* backstop for entries kept by a live feed */
#define AUTHN_MAX_BINDINGS       32u

struct authn_principal {
    char id[40];
    char name[128];
    char kind[20]; /* "user" or "service_account" */
    struct authz_binding bindings[AUTHN_MAX_BINDINGS];
    size_t n_bindings;
    char via[16]; /* "api_key", "oidc", "mtls" */
    /* The credential of the call, for streams that outlive its authentication (a watch checks
     * them again): the API key's id (via "api_key", "" otherwise), and when the credential stops
     * being valid (the key's expiry, the token's exp plus leeway; 0: no end). */
    char key_id[33];
    int64_t not_after_ms;
};

struct authn;
struct oidc; /* api/auth/oidc.h, optional */
struct feed; /* store/feed.h, optional */

/* @pepper is copied. @writer records last-used times (at most once a minute per key). */
struct authn *authn_new(const uint8_t *pepper, size_t pepper_len, struct store_writer *writer);
void authn_free(struct authn *a);

/* Authenticate a call: @authorization is the metadata value (or NULL), @peer_cert the verified
 * client certificate (or NULL). Returns 0 with @out filled; GERR_UNAUTH (missing or bad
 * credentials: "unknown API key <keyid>", "API key <keyid> does not match", "the API key was
 * revoked", ...), or the store's error (GERR_NOLEADER, ...), with a message for the client in @msg
 * that never contains the credential. *@bad_credential says whether a GERR_UNAUTH is about the
 * credential itself (malformed, unknown, wrong secret, revoked, expired, a token that does not
 * verify), which no later change can make valid, rather than about the principal it maps to (none
 * registered yet, disabled), which an admin may fix at any moment. */
int authn_call(struct authn *a, struct store_client *cl, const char *authorization, X509 *peer_cert,
               int64_t now_ms, struct authn_principal *out, char *msg, bool *bad_credential);

/* Check @who (an earlier authn_call's answer) again against the store through @cl, for a stream
 * that outlives its call's authentication (the watch hubs, about once a second): GERR_UNAUTH with
 * the reason in @why when its credential expired at @wall_ms, its API key was revoked or deleted,
 * or its principal was disabled or deleted; 0 with who->bindings reloaded; another store error:
 * @who unchanged (try again later). Blocking; any thread. */
int authn_recheck(struct store_client *cl, struct authn_principal *who, int64_t wall_ms, char *why,
                  size_t len);

/* As authn_recheck, from @a's models (authn_set_models) while its feed is live: no store query when
 * they hold the key (not revoked) and the principal (enabled), whose bindings they reload into
 * @who. What they cannot confirm (a key or principal they do not hold, a disabled principal, a
 * feed that is not live, @a NULL or without models) is checked against the store through @cl as
 * authn_recheck does. A key the keys model holds as revoked ends at once. Counted in
 * gantry_authn_model_answers_total, and in gantry_authn_store_rechecks_total when the store is
 * read. Blocking only then; any thread, the feed's included (the models are read under their read
 * locks, which the feed thread holds only inside their own callbacks). */
int authn_recheck_models(struct authn *a, struct store_client *cl, struct authn_principal *who,
                         int64_t wall_ms, char *why, size_t len);

/* What @a's models (authn_set_models) hold now for @who, while its feed is live: 0 with *@revoked
 * (its API key is held revoked; false without a key) and the principal's bindings in @b (room for
 * AUTHN_MAX_BINDINGS; *@n of them), the principal being held and enabled. GERR_UNAVAILABLE when the
 * models cannot tell (none, the feed not live, the key or the principal not held, the principal
 * disabled): the caller asks the store, which gives the exact reason. Never blocks; any thread.
 * Counted in gantry_authn_model_answers_total. */
int authn_models_state(struct authn *a, const struct authn_principal *who, bool *revoked,
                       struct authz_binding *b, size_t *n);

/* Versions of the API-key pepper (api/services/pepper_ring.h provides them; the gate does not
 * depend on that module). Each api_keys row records the version that hashed it; without this, only
 * version 1 (the pepper given to authn_new) verifies and nothing is rehashed. Both functions are
 * called on worker threads, may block on the store through @cl, write 32 bytes to @out, and return
 * 0, GERR_NOTFOUND / GERR_PERM (no such version, or it does not open), or the store's errors. */
struct authn_peppers {
    int (*get)(void *arg, struct store_client *cl, unsigned version, uint8_t out[32], char *errmsg);
    int (*current)(void *arg, struct store_client *cl, int64_t now_ms, unsigned *version, uint8_t out[32],
                   char *errmsg);
    void *arg;
};

/* Verify each key with the version that hashed it, and rehash a key verified under an older
 * version than the current one under the current one (a fire-and-forget write through the
 * writer: UPDATE ... WHERE pepper_version is still the old one, so concurrent rehashes on several
 * replicas agree). Copied. Before the first authn_call. */
void authn_set_peppers(struct authn *a, const struct authn_peppers *p);

/* Accept OIDC tokens verified by @o (borrowed, outlives @a). Before the first authn_call. */
void authn_set_oidc(struct authn *a, struct oidc *o);

/* Let @f's events invalidate cached entries, so they may live up to AUTHN_CACHE_EVENT_TTL_MS while
 * @f is live (see above). Subscribes to @f: before feed_start and before the first authn_call;
 * @f must outlive @a's use (close the feed before authn_free). */
void authn_attach_feed(struct authn *a, struct feed *f);

/* Where authentication finds its answers without a store query: the replica's change-feed models
 * of principals, role bindings, API key metadata and linked identities (api/services/authn_models.h
 * provides them; the gate does not depend on that module). Each function answers from what the
 * models hold now, under their read locks, without blocking: AUTHN_MODEL_FOUND with its outputs
 * filled, AUTHN_MODEL_ABSENT (the model holds no such object, or for @subject not exactly one
 * principal) or AUTHN_MODEL_CANNOT (a model is not loaded). Called on worker threads.
 *   key:       API key @keyid's principal, expiry (0: none) and whether it was revoked; never its
 *              hash, which only the store has (cached here, below);
 *   principal: @id's id, name, kind, and its bindings as the store path loads them (in id order,
 *              at most AUTHN_MAX_BINDINGS, an unreadable scope granting nothing) into @out (@id
 *              must not point into @out), and whether it is disabled;
 *   subject:   the principal whose issuer and subject (or a linked identity's) are @issuer and
 *              @subject. */
enum { AUTHN_MODEL_FOUND, AUTHN_MODEL_ABSENT, AUTHN_MODEL_CANNOT };
struct authn_models {
    int (*key)(void *arg, const char *keyid, char principal_id[40], int64_t *expires_ms, bool *revoked);
    int (*principal)(void *arg, const char *id, struct authn_principal *out, bool *disabled);
    int (*subject)(void *arg, const char *issuer, const char *subject, char principal_id[40]);
    void *arg;
};

/* Decide from @m (copied; its arg borrowed and outliving @a) whenever the feed attached with
 * authn_attach_feed is live (its latest complete poll started less than AUTHN_CACHE_TTL_MS ago:
 * every change committed before then is in the models). Then:
 *   - an API key's principal, revocation and expiry come from the keys model, and its hash from
 *     this module's cache, read from the store at the key's first use on this replica and again
 *     only after an ApiKey event (a rehash) dropped it;
 *   - a principal missing from the cache is filled from the models, not the store, after a read
 *     index (feed_sync, at most AUTHN_MODEL_SYNC_MS, one leader read shared by every call waiting
 *     at that moment): the models then hold every change acknowledged before the call, as a store
 *     read would, so a binding granted a moment ago through any replica is in force, and the
 *     revocation bound holds as for a store read;
 *   - an OIDC token's or a client certificate's principal comes from the models.
 * Whatever the models cannot confirm goes to the store as without them: a key or principal they
 * do not hold (yet: one created a moment ago through another replica), a disabled principal (it may
 * have been enabled a moment ago), an identity with no principal, a feed that is not live. So no
 * call is refused on the models' word that the store would let through: a refusal reads the
 * store, except for a revoked or expired key (neither can be undone). @a must be attached to the
 * feed AFTER the models are (feed_subscribe order): then a change's event has reached the models
 * before it drops this module's cached entries. Before the first authn_call. */
void authn_set_models(struct authn *a, const struct authn_models *m);

/* gantry_authn_* families (docs/metrics.md). Any thread. */
void authn_metrics_write(struct authn *a, struct buf *out);

/* Forget cached entries (tests; after a local revocation this replica need not wait). */
void authn_flush(struct authn *a);

#endif
