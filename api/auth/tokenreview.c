/* Kubernetes TokenReview request, answer and cache (tokenreview.h). */
#include "api/auth/tokenreview.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "lib/mem.h"

#define ERROR_SHOWN 160 /* bytes of status.error copied into a message */

char *tokenreview_request(const char *token, size_t len, const char *const *auds, unsigned n_auds)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < n_auds; i++) {
        json_array_append_new(a, json_string(auds[i]));
    }
    json_t *doc = json_pack("{s:s, s:s, s:{s:s%, s:o}}", "apiVersion", "authentication.k8s.io/v1", "kind",
                            "TokenReview", "spec", "token", token, len, "audiences", a);
    if (doc == NULL) {
        return NULL; /* the token is not UTF-8 (json_pack took the audiences with it) */
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_t *t = json_object_get(json_object_get(doc, "spec"), "token");
    /* jansson keeps its own copy of the token: wipe it before freeing. */
    if (t != NULL) {
        char *p = (char *)json_string_value(t);
        explicit_bzero(p, json_string_length(t));
    }
    json_decref(doc);
    if (s == NULL) {
        abort(); /* jansson's allocation failed: as lib/mem.h does */
    }
    char *out = mem_strdup(s);
    explicit_bzero(s, strlen(s));
    free(s);
    return out;
}

/* status.error, printable and short, for a message. */
static void shown_error(json_t *status, char *out, size_t cap)
{
    const char *e = json_string_value(json_object_get(status, "error"));
    size_t n = 0;
    for (size_t i = 0; e != NULL && e[i] != '\0' && i < ERROR_SHOWN && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)e[i];
        out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[n] = '\0';
}

static int check_status(json_t *status, const char *username, const char *const *auds, unsigned n_auds,
                        char *errmsg)
{
    json_t *authd = json_object_get(status, "authenticated");
    json_t *user = json_object_get(status, "user");
    json_t *got_auds = json_object_get(status, "audiences");
    if ((authd != NULL && !json_is_boolean(authd)) || (user != NULL && !json_is_object(user)) ||
        (got_auds != NULL && !json_is_array(got_auds))) {
        gerr_set(errmsg, "the TokenReview answer has a status of the wrong shape");
        return GERR_INVAL;
    }
    if (!json_is_true(authd)) {
        char why[ERROR_SHOWN + 1];
        shown_error(status, why, sizeof why);
        gerr_set(errmsg, "the API server does not authenticate this token (TokenReview: %s)",
                 why[0] != '\0' ? why : "no reason given");
        return GERR_UNAUTH;
    }
    const char *name = json_string_value(json_object_get(user, "username"));
    if (name == NULL || strcmp(name, username) != 0) {
        gerr_set(errmsg, "the API server authenticates this token as another user than its subject");
        return GERR_UNAUTH;
    }
    if (got_auds == NULL) {
        return 0;
    }
    for (size_t i = 0; i < json_array_size(got_auds); i++) {
        const char *g = json_string_value(json_array_get(got_auds, i));
        for (unsigned j = 0; g != NULL && j < n_auds; j++) {
            if (strcmp(g, auds[j]) == 0) {
                return 0;
            }
        }
    }
    gerr_set(errmsg, "the API server authenticates this token for none of the audiences asked for");
    return GERR_UNAUTH;
}

int tokenreview_parse(const char *body, size_t len, const char *username, const char *const *auds,
                      unsigned n_auds, char *errmsg)
{
    if (len > TOKENREVIEW_MAX_RESPONSE) {
        gerr_set(errmsg, "the TokenReview answer is larger than %u bytes", TOKENREVIEW_MAX_RESPONSE);
        return GERR_INVAL;
    }
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    const char *api = json_string_value(json_object_get(doc, "apiVersion"));
    json_t *status = json_object_get(doc, "status");
    int rc;
    if (doc == NULL || kind == NULL || strcmp(kind, "TokenReview") != 0 || api == NULL ||
        strcmp(api, "authentication.k8s.io/v1") != 0 || !json_is_object(status)) {
        gerr_set(errmsg, "the answer is not an authentication.k8s.io/v1 TokenReview with a status");
        rc = GERR_INVAL;
    } else {
        rc = check_status(status, username, auds, n_auds, errmsg);
    }
    json_decref(doc);
    return rc;
}

/* ---- cache */

struct slot {
    unsigned char hash[32];
    uint64_t at_ms;
    bool used;
};

struct tokenreview_cache {
    pthread_mutex_t mu;
    struct slot slots[TOKENREVIEW_CACHE_SLOTS];
};

struct tokenreview_cache *tokenreview_cache_new(void)
{
    struct tokenreview_cache *c = mem_zalloc(sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void tokenreview_cache_free(struct tokenreview_cache *c)
{
    if (c != NULL) {
        pthread_mutex_destroy(&c->mu);
        mem_free(c);
    }
}

static void hash_of(const char *token, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(token, len, out, &n, EVP_sha256(), NULL) != 1) {
        abort(); /* only allocation can fail here; as lib/mem.h does */
    }
}

bool tokenreview_cache_hit(struct tokenreview_cache *c, const char *token, size_t len, uint64_t now_ms)
{
    unsigned char h[32];
    hash_of(token, len, h);
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < TOKENREVIEW_CACHE_SLOTS && !hit; i++) {
        const struct slot *s = &c->slots[i];
        hit = s->used && memcmp(s->hash, h, sizeof h) == 0 && now_ms >= s->at_ms &&
              now_ms - s->at_ms < TOKENREVIEW_CACHE_MS;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void tokenreview_cache_put(struct tokenreview_cache *c, const char *token, size_t len, uint64_t now_ms)
{
    unsigned char h[32];
    hash_of(token, len, h);
    pthread_mutex_lock(&c->mu);
    struct slot *victim = &c->slots[0];
    for (unsigned i = 0; i < TOKENREVIEW_CACHE_SLOTS; i++) {
        struct slot *s = &c->slots[i];
        if (s->used && memcmp(s->hash, h, sizeof h) == 0) {
            victim = s;
            break;
        }
        if (!s->used || (victim->used && s->at_ms < victim->at_ms)) {
            victim = s;
        }
    }
    memcpy(victim->hash, h, sizeof h);
    victim->at_ms = now_ms;
    victim->used = true;
    pthread_mutex_unlock(&c->mu);
}
