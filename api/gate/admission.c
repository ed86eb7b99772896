/* Admission of calls before any real work (api/gate/admission.h).
 *
 * Three fixed tables, each probed in a window of PROBE slots from a hash of its key; a miss evicts
 * the oldest entry of the window. The known and failed tables hold credential digests with the time
 * they were seen; the source table holds, per source host, the failures of the current window and a
 * token bucket for calls without a known credential. */
#include "api/gate/admission.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "lib/mem.h"
#include "server/grpc/status.h"

#define KNOWN_SLOTS  8192u
#define FAILED_SLOTS 8192u
#define SOURCE_SLOTS 1024u
#define PROBE        8u

struct cred_entry {
    uint8_t digest[ADMISSION_DIGEST_SIZE];
    int64_t seen_ms; /* 0: empty */
};

struct source_entry {
    char host[64];
    int64_t used_ms; /* 0: empty */
    int64_t window_start_ms;
    unsigned failures;
    double tokens;
    int64_t refilled_ms;
};

struct admission {
    struct admission_config cfg;
    pthread_mutex_t mu;
    struct cred_entry *known;
    struct cred_entry *failed;
    struct source_entry *sources;
};

void admission_config_defaults(struct admission_config *cfg)
{
    *cfg = (struct admission_config){
        .fail_limit = 20,
        .fail_window_ms = 60000,
        .unauth_rate = 50,
        .unauth_burst = 100,
        .known_ttl_ms = 600000,
        .failed_ttl_ms = 5000,
    };
}

struct admission *admission_new(const struct admission_config *cfg)
{
    struct admission *a = mem_zalloc(sizeof *a);
    a->cfg = *cfg;
    pthread_mutex_init(&a->mu, NULL);
    a->known = mem_zalloc(sizeof *a->known * KNOWN_SLOTS);
    a->failed = mem_zalloc(sizeof *a->failed * FAILED_SLOTS);
    a->sources = mem_zalloc(sizeof *a->sources * SOURCE_SLOTS);
    return a;
}

void admission_free(struct admission *a)
{
    if (a == NULL) {
        return;
    }
    pthread_mutex_destroy(&a->mu);
    mem_free(a->known);
    mem_free(a->failed);
    mem_free(a->sources);
    mem_free(a);
}

/* --- tables --- */

static uint64_t digest_hash(const uint8_t *d)
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return h;
}

/* The entry of @digest in @t (or NULL), and in *@victim the slot to use for it: its own, else an
 * empty one, else the oldest of the window. */
static struct cred_entry *cred_find(struct cred_entry *t, unsigned n, const uint8_t *digest,
                                    struct cred_entry **victim)
{
    uint64_t h = digest_hash(digest);
    struct cred_entry *oldest = NULL;
    for (unsigned i = 0; i < PROBE; i++) {
        struct cred_entry *e = &t[(h + i) % n];
        if (e->seen_ms != 0 && memcmp(e->digest, digest, ADMISSION_DIGEST_SIZE) == 0) {
            *victim = e;
            return e;
        }
        if (oldest == NULL || e->seen_ms < oldest->seen_ms) {
            oldest = e;
        }
    }
    *victim = oldest;
    return NULL;
}

static void cred_put(struct cred_entry *t, unsigned n, const uint8_t *digest, int64_t now)
{
    struct cred_entry *slot;
    cred_find(t, n, digest, &slot);
    memcpy(slot->digest, digest, ADMISSION_DIGEST_SIZE);
    slot->seen_ms = now;
}

static void cred_forget(struct cred_entry *t, unsigned n, const uint8_t *digest)
{
    struct cred_entry *slot, *e = cred_find(t, n, digest, &slot);
    if (e != NULL) {
        e->seen_ms = 0;
    }
}

static uint64_t host_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

/* The entry of @host, created (evicting the oldest of its window) when missing. */
static struct source_entry *source_get(struct admission *a, const char *host, int64_t now)
{
    uint64_t h = host_hash(host);
    struct source_entry *oldest = NULL;
    for (unsigned i = 0; i < PROBE; i++) {
        struct source_entry *e = &a->sources[(h + i) % SOURCE_SLOTS];
        if (e->used_ms != 0 && strcmp(e->host, host) == 0) {
            e->used_ms = now;
            return e;
        }
        if (oldest == NULL || e->used_ms < oldest->used_ms) {
            oldest = e;
        }
    }
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->host, sizeof oldest->host, "%s", host);
    oldest->used_ms = now;
    oldest->window_start_ms = now;
    oldest->tokens = a->cfg.unauth_burst;
    oldest->refilled_ms = now;
    return oldest;
}

static void source_roll(const struct admission *a, struct source_entry *s, int64_t now)
{
    if (now - s->window_start_ms >= (int64_t)a->cfg.fail_window_ms) {
        s->window_start_ms = now;
        s->failures = 0;
    }
}

/* Take one token of the source's bucket for a call without a known credential. */
static bool source_take(const struct admission *a, struct source_entry *s, int64_t now)
{
    if (now > s->refilled_ms) {
        s->tokens += (double)(now - s->refilled_ms) * a->cfg.unauth_rate / 1000.0;
        if (s->tokens > a->cfg.unauth_burst) {
            s->tokens = a->cfg.unauth_burst;
        }
        s->refilled_ms = now;
    }
    if (s->tokens < 1.0) {
        return false;
    }
    s->tokens -= 1.0;
    return true;
}

/* --- the decisions --- */

enum admission_class admission_check(struct admission *a, const char *source_host,
                                     const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms, int *status,
                                     char *why, size_t len)
{
    enum admission_class cls = ADMIT_UNKNOWN;
    pthread_mutex_lock(&a->mu);
    struct cred_entry *slot, *e;
    if (digest != NULL && (e = cred_find(a->known, KNOWN_SLOTS, digest, &slot)) != NULL &&
        now_ms - e->seen_ms < (int64_t)a->cfg.known_ttl_ms) {
        pthread_mutex_unlock(&a->mu);
        return ADMIT_KNOWN;
    }
    struct source_entry *s = source_get(a, source_host, now_ms);
    source_roll(a, s, now_ms);
    if (digest == NULL) {
        cls = ADMIT_REFUSE;
        *status = GRPC_STATUS_UNAUTHENTICATED;
        snprintf(why, len, "missing credentials: send \"authorization: Bearer <API key>\"");
    } else if ((e = cred_find(a->failed, FAILED_SLOTS, digest, &slot)) != NULL &&
               now_ms - e->seen_ms < (int64_t)a->cfg.failed_ttl_ms) {
        cls = ADMIT_REFUSE;
        *status = GRPC_STATUS_UNAUTHENTICATED;
        snprintf(why, len,
                 "these credentials were refused less than %u ms ago; they are not checked again until then",
                 a->cfg.failed_ttl_ms);
    } else if (s->failures >= a->cfg.fail_limit) {
        cls = ADMIT_REFUSE;
        *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(why, len,
                 "too many failed authentication attempts from %.63s; try again later (credentials "
                 "this replica verified recently are still accepted)",
                 source_host);
    }
    if (cls != ADMIT_REFUSE && !source_take(a, s, now_ms)) {
        cls = ADMIT_REFUSE;
        *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(why, len, "too many calls without verified credentials from %.63s; slow down", source_host);
    }
    pthread_mutex_unlock(&a->mu);
    return cls;
}

enum admission_class admission_anonymous(struct admission *a, const char *source_host, int64_t now_ms,
                                         int *status, char *why, size_t len)
{
    pthread_mutex_lock(&a->mu);
    struct source_entry *s = source_get(a, source_host, now_ms);
    bool ok = source_take(a, s, now_ms);
    pthread_mutex_unlock(&a->mu);
    if (!ok) {
        *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(why, len, "too many calls without verified credentials from %.63s; slow down", source_host);
        return ADMIT_REFUSE;
    }
    return ADMIT_UNKNOWN;
}

void admission_verified(struct admission *a, const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms)
{
    pthread_mutex_lock(&a->mu);
    cred_put(a->known, KNOWN_SLOTS, digest, now_ms);
    cred_forget(a->failed, FAILED_SLOTS, digest);
    pthread_mutex_unlock(&a->mu);
}

unsigned admission_failed(struct admission *a, const char *source_host,
                          const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms)
{
    pthread_mutex_lock(&a->mu);
    if (digest != NULL) {
        cred_put(a->failed, FAILED_SLOTS, digest, now_ms);
        cred_forget(a->known, KNOWN_SLOTS, digest);
    }
    struct source_entry *s = source_get(a, source_host, now_ms);
    source_roll(a, s, now_ms);
    unsigned n = ++s->failures;
    pthread_mutex_unlock(&a->mu);
    return n;
}

bool admission_digest(const char *authorization, const uint8_t *cert_der, size_t cert_len,
                      uint8_t out[ADMISSION_DIGEST_SIZE])
{
    const void *p = authorization != NULL ? (const void *)authorization : (const void *)cert_der;
    size_t n = authorization != NULL ? strlen(authorization) : cert_len;
    if (p == NULL || n == 0) {
        return false;
    }
    unsigned int len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == ADMISSION_DIGEST_SIZE;
}

void admission_source_host(const char *peer, char *out, size_t len)
{
    const char *end = peer[0] == '[' ? strchr(peer, ']') : strrchr(peer, ':');
    size_t n = end != NULL ? (size_t)(end - peer) + (peer[0] == '[' ? 1 : 0) : strlen(peer);
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), peer);
}
