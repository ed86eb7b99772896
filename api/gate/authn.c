/* Authentication of API calls (api/gate/authn.h). */
#include "api/gate/authn.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#include <openssl/x509.h>

#include "api/auth/apikey.h"
#include "api/auth/oidc.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/events.h"
#include "store/feed.h"

#define KEY_SLOTS          512u
#define PRINCIPAL_SLOTS    512u
#define LAST_USED_EVERY_MS 60000
/* How long a principal's fill from the models waits for its read index before the store answers. */
#define AUTHN_MODEL_SYNC_MS 1000u

struct key_entry {
    char keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    char principal_id[40];
    int64_t expires_ms, revoked_ms;
    unsigned pepper_version; /* the pepper version that made @hash */
    int64_t fetched_ms;      /* 0: empty slot */
    int64_t last_used_written_ms;
    int64_t rehash_sent_ms; /* a rehash of this key was submitted then (0: never) */
    bool missing;           /* no such key (cached too, so a flood of bad keys costs no reads) */
    bool evented;           /* no invalidation raced its fetch: may live past the TTL (fresh()) */
};

struct principal_entry {
    struct authn_principal p;
    bool disabled, missing;
    bool evented; /* as in key_entry */
    int64_t fetched_ms;
};

/* A principal slot's id and fetched_ms, packed together so that a lookup scans 24 KiB, not one
 * page of each of the 512 entries of about 90 KiB (45 MiB), under a->mu on every call. */
struct principal_tag {
    char id[40];
    int64_t fetched_ms; /* 0: empty slot */
};

struct authn {
    struct oidc *oidc;
    pthread_mutex_t mu;
    uint8_t pepper[APIKEY_PEPPER_MAX];
    size_t pepper_len;
    struct store_writer *writer;
    struct authn_peppers peppers; /* .get NULL: version 1 only */
    struct key_entry keys[KEY_SLOTS];
    struct principal_entry principals[PRINCIPAL_SLOTS];
    struct principal_tag ptags[PRINCIPAL_SLOTS]; /* principals[i]'s, kept with it */
    /* Event-driven invalidation (authn_attach_feed). @gen moves on every invalidation: a fetch
     * that saw it move may have read the store before a change whose event has already been
     * applied, so its entry is not @evented. */
    struct feed *feed;
    struct feed_sub sub;
    uint64_t gen;
    struct authn_models models; /* .key NULL: none (authn_set_models) */
    atomic_uint_fast64_t fetches, invalidations, long_hits, model_answers, rechecks_store;
};

struct authn *authn_new(const uint8_t *pepper, size_t pepper_len, struct store_writer *writer)
{
    struct authn *a = mem_zalloc(sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    a->pepper_len = pepper_len < sizeof a->pepper ? pepper_len : sizeof a->pepper;
    memcpy(a->pepper, pepper, a->pepper_len);
    a->writer = writer;
    return a;
}

void authn_free(struct authn *a)
{
    if (a == NULL) {
        return;
    }
    pthread_mutex_destroy(&a->mu);
    memset(a->pepper, 0, sizeof a->pepper);
    mem_free(a);
}

void authn_set_peppers(struct authn *a, const struct authn_peppers *p)
{
    a->peppers = *p;
}

void authn_set_oidc(struct authn *a, struct oidc *o)
{
    a->oidc = o;
}

void authn_set_models(struct authn *a, const struct authn_models *m)
{
    a->models = *m;
}

void authn_flush(struct authn *a)
{
    pthread_mutex_lock(&a->mu);
    memset(a->keys, 0, sizeof a->keys);
    memset(a->principals, 0, sizeof a->principals);
    memset(a->ptags, 0, sizeof a->ptags);
    a->gen++;
    pthread_mutex_unlock(&a->mu);
}

/* --- invalidation by the change feed (feed thread) --- */

static void on_resync(struct store_client *cl, uint64_t rev, void *data)
{
    (void)cl;
    (void)rev;
    struct authn *a = data;
    authn_flush(a); /* the feed cannot tell what changed: forget everything */
    atomic_fetch_add(&a->invalidations, 1);
}

static void on_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    (void)cl;
    struct authn *a = data;
    bool keys = strcmp(ev->kind, "ApiKey") == 0;
    bool principal = strcmp(ev->kind, "Principal") == 0;
    /* A RoleBinding event names the binding, not its principal; a namespace's deletion removes
     * its bindings under its Namespace DELETED event (other Namespace events change no binding).
     * Both are rare: drop every cached principal. */
    bool all_principals = strcmp(ev->kind, "RoleBinding") == 0 ||
                          (strcmp(ev->kind, "Namespace") == 0 && strcmp(ev->type, "DELETED") == 0);
    if (!keys && !principal && !all_principals) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->gen++;
    if (keys) {
        for (unsigned i = 0; i < KEY_SLOTS; i++) {
            if (a->keys[i].fetched_ms != 0 && strcmp(a->keys[i].keyid, ev->object_id) == 0) {
                memset(&a->keys[i], 0, sizeof a->keys[i]);
            }
        }
    }
    for (unsigned i = 0; (principal || all_principals) && i < PRINCIPAL_SLOTS; i++) {
        if (a->ptags[i].fetched_ms != 0 && (all_principals || strcmp(a->ptags[i].id, ev->object_id) == 0)) {
            memset(&a->principals[i], 0, sizeof a->principals[i]);
            memset(&a->ptags[i], 0, sizeof a->ptags[i]);
        }
    }
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_add(&a->invalidations, 1);
}

void authn_attach_feed(struct authn *a, struct feed *f)
{
    a->feed = f;
    a->sub = (struct feed_sub){.on_resync = on_resync, .on_event = on_event, .data = a};
    feed_subscribe(f, &a->sub);
}

/* May a cached entry fetched at @fetched_ms (the caller's clock, as @now) answer now? Within
 * AUTHN_CACHE_TTL_MS always (the bound without a feed). Past it, up to AUTHN_CACHE_EVENT_TTL_MS,
 * only if no invalidation raced its fetch (@evented) and the feed is live: its latest complete
 * poll started less than AUTHN_CACHE_TTL_MS ago, so every change committed before now minus the
 * bound has had its event applied, which removed the entry had it changed. The argument is in
 * docs/security.md. */
static bool fresh(struct authn *a, int64_t fetched_ms, bool evented, int64_t now)
{
    int64_t age = now - fetched_ms;
    if (age < (int64_t)AUTHN_CACHE_TTL_MS) {
        return true;
    }
    if (!evented || a->feed == NULL || age >= (int64_t)AUTHN_CACHE_EVENT_TTL_MS) {
        return false;
    }
    uint64_t live = feed_live_since_ms(a->feed);
    uint64_t mono = clock_mono_ms(clock_system());
    if (live != 0 && mono >= live && mono - live < AUTHN_CACHE_TTL_MS) {
        atomic_fetch_add(&a->long_hits, 1);
        return true;
    }
    return false;
}

/* May the models answer (authn_set_models)? Only while the feed is live: its latest complete poll
 * started less than AUTHN_CACHE_TTL_MS ago (feed_live_since_ms), so they hold every change
 * committed before then. */
static bool models_live(struct authn *a)
{
    if (a->models.key == NULL || a->feed == NULL) {
        return false;
    }
    uint64_t live = feed_live_since_ms(a->feed);
    uint64_t mono = clock_mono_ms(clock_system());
    return live != 0 && mono >= live && mono - live < AUTHN_CACHE_TTL_MS;
}

void authn_metrics_write(struct authn *a, struct buf *out)
{
    buf_printf(
        out,
        "# HELP gantry_authn_fetches_total API key and principal lookups this replica read from "
        "the store (authentication cache misses).\n"
        "# TYPE gantry_authn_fetches_total counter\ngantry_authn_fetches_total %" PRIu64 "\n"
        "# HELP gantry_authn_invalidations_total Change events (and feed resyncs) that dropped "
        "authentication cache entries.\n"
        "# TYPE gantry_authn_invalidations_total counter\ngantry_authn_invalidations_total %" PRIu64 "\n"
        "# HELP gantry_authn_long_hits_total Authentication cache hits past the "
        "2 s bound, allowed because the change feed was live.\n"
        "# TYPE gantry_authn_long_hits_total counter\ngantry_authn_long_hits_total %" PRIu64 "\n"
        "# HELP gantry_authn_model_answers_total API key, principal and identity lookups this "
        "replica answered from its change-feed models instead of the store.\n"
        "# TYPE gantry_authn_model_answers_total counter\ngantry_authn_model_answers_total %" PRIu64 "\n"
        "# HELP gantry_authn_store_rechecks_total Credential rechecks of long-lived watches that read "
        "the store (the change-feed models could not answer them).\n"
        "# TYPE gantry_authn_store_rechecks_total counter\ngantry_authn_store_rechecks_total %" PRIu64 "\n",
        (uint64_t)atomic_load(&a->fetches), (uint64_t)atomic_load(&a->invalidations),
        (uint64_t)atomic_load(&a->long_hits), (uint64_t)atomic_load(&a->model_answers),
        (uint64_t)atomic_load(&a->rechecks_store));
}

/* --- the store side of the caches --- */

static void text_of(const struct proto_value *v, char *out, size_t len)
{
    if (v->type == PROTO_TEXT || v->type == PROTO_BLOB) {
        snprintf(out, len, "%.*s", (int)v->u.b.n, v->u.b.s);
    } else {
        out[0] = '\0';
    }
}

static int fetch_key(struct store_client *cl, const char *keyid, struct key_entry *e, int64_t now)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(keyid)};
    int rv = store_client_query(
        cl,
        "SELECT hash, principal_id, expires_at_ms, revoked_at_ms, last_used_ms, pepper_version FROM api_keys "
        "WHERE id = ?",
        p, 1, &rows);
    if (rv == 0) {
        memset(e, 0, sizeof *e);
        snprintf(e->keyid, sizeof e->keyid, "%s", keyid);
        e->fetched_ms = now;
        const struct proto_value *h = rows.n_rows == 1 ? proto_rows_at(&rows, 0, 0) : NULL;
        if (h == NULL || h->type != PROTO_BLOB || h->u.b.n != APIKEY_HASH_SIZE) {
            e->missing = true;
        } else {
            memcpy(e->hash, h->u.b.s, APIKEY_HASH_SIZE);
            text_of(proto_rows_at(&rows, 0, 1), e->principal_id, sizeof e->principal_id);
            e->expires_ms = proto_rows_at(&rows, 0, 2)->u.i;
            e->revoked_ms = proto_rows_at(&rows, 0, 3)->u.i;
            e->last_used_written_ms = proto_rows_at(&rows, 0, 4)->u.i;
            int64_t v = proto_rows_at(&rows, 0, 5)->u.i;
            e->pepper_version = v >= 1 && v <= 1000000 ? (unsigned)v : 0;
        }
    }
    proto_rows_close(&rows);
    return rv;
}

/* @id's bindings, in id order, into @out (at most AUTHN_MAX_BINDINGS); an unreadable scope grants
 * nothing. 0 or the store's errors (then *@n is 0). */
static int load_bindings(struct store_client *cl, const char *id, struct authz_binding *out, size_t *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    *n = 0;
    int rv = store_client_query(
        cl, "SELECT role, namespace, scope FROM role_bindings WHERE principal_id = ? ORDER BY id", p, 1,
        &rows);
    for (size_t i = 0; rv == 0 && i < rows.n_rows && *n < AUTHN_MAX_BINDINGS; i++) {
        char role[32];
        text_of(proto_rows_at(&rows, i, 0), role, sizeof role);
        struct authz_binding *b = &out[*n];
        memset(b, 0, sizeof *b);
        b->role = authz_role_parse(role);
        text_of(proto_rows_at(&rows, i, 1), b->ns, sizeof b->ns);
        char scope[4096];
        text_of(proto_rows_at(&rows, i, 2), scope, sizeof scope);
        if (authz_scope_parse(scope, &b->scope) != 0) {
            b->role = 0; /* an unreadable scope grants nothing */
        }
        if (b->role != 0) {
            (*n)++;
        }
    }
    if (rv != 0) {
        *n = 0;
    }
    proto_rows_close(&rows);
    return rv;
}

static int fetch_principal(struct store_client *cl, const char *id, struct principal_entry *e, int64_t now)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    int rv = store_client_query(cl, "SELECT name, kind, disabled FROM principals WHERE id = ?", p, 1, &rows);
    memset(e, 0, sizeof *e);
    e->fetched_ms = now;
    snprintf(e->p.id, sizeof e->p.id, "%s", id);
    if (rv == 0 && rows.n_rows == 0) {
        e->missing = true;
    } else if (rv == 0) {
        text_of(proto_rows_at(&rows, 0, 0), e->p.name, sizeof e->p.name);
        text_of(proto_rows_at(&rows, 0, 1), e->p.kind, sizeof e->p.kind);
        e->disabled = proto_rows_at(&rows, 0, 2)->u.i != 0;
        rv = load_bindings(cl, id, e->p.bindings, &e->p.n_bindings);
    }
    proto_rows_close(&rows);
    return rv;
}

int authn_recheck(struct store_client *cl, struct authn_principal *who, int64_t wall_ms, char *why,
                  size_t len)
{
    if (who->not_after_ms != 0 && wall_ms >= who->not_after_ms) {
        snprintf(why, len, "the watch ended: its credential expired");
        return GERR_UNAUTH;
    }
    int rv = 0;
    if (who->key_id[0] != '\0') {
        struct proto_value k[] = {proto_text(who->key_id)};
        int64_t revoked = 0;
        rv = store_client_query_int(cl, "SELECT revoked_at_ms FROM api_keys WHERE id = ?", k, 1, &revoked);
        if (rv == GERR_NOTFOUND || (rv == 0 && revoked != 0)) {
            snprintf(why, len, "the watch ended: its API key was %s", rv == 0 ? "revoked" : "deleted");
            return GERR_UNAUTH;
        }
        if (rv != 0) {
            return rv;
        }
    }
    struct proto_value p[] = {proto_text(who->id)};
    int64_t disabled = 0;
    rv = store_client_query_int(cl, "SELECT disabled FROM principals WHERE id = ?", p, 1, &disabled);
    if (rv == GERR_NOTFOUND || (rv == 0 && disabled != 0)) {
        snprintf(why, len, "the watch ended: principal %s was disabled or deleted", who->id);
        return GERR_UNAUTH;
    }
    if (rv != 0) {
        return rv;
    }
    struct authz_binding *bindings = mem_alloc(sizeof *bindings * AUTHN_MAX_BINDINGS);
    size_t n = 0;
    rv = load_bindings(cl, who->id, bindings, &n);
    if (rv == 0) {
        memcpy(who->bindings, bindings, sizeof *bindings * n);
        who->n_bindings = n;
    }
    mem_free(bindings);
    return rv;
}

int authn_recheck_models(struct authn *a, struct store_client *cl, struct authn_principal *who,
                         int64_t wall_ms, char *why, size_t len)
{
    if (who->not_after_ms != 0 && wall_ms >= who->not_after_ms) {
        return authn_recheck(cl, who, wall_ms, why, len); /* "expired", with no store query */
    }
    if (a == NULL || !models_live(a)) {
        if (a != NULL) {
            atomic_fetch_add(&a->rechecks_store, 1);
        }
        return authn_recheck(cl, who, wall_ms, why, len);
    }
    if (who->key_id[0] != '\0') {
        char principal_id[40];
        int64_t expires = 0;
        bool revoked = false;
        int k = a->models.key(a->models.arg, who->key_id, principal_id, &expires, &revoked);
        if (k == AUTHN_MODEL_FOUND && revoked) {
            atomic_fetch_add(&a->model_answers, 1);
            snprintf(why, len, "the watch ended: its API key was revoked");
            return GERR_UNAUTH;
        }
        if (k != AUTHN_MODEL_FOUND) { /* deleted a moment ago, or the model cannot tell */
            atomic_fetch_add(&a->rechecks_store, 1);
            return authn_recheck(cl, who, wall_ms, why, len);
        }
    }
    /* Straight into @who: the principal's id, name and kind, then its bindings (the id from a copy:
     * the callback writes who->id). */
    char id[sizeof who->id];
    snprintf(id, sizeof id, "%s", who->id);
    bool disabled = false;
    if (a->models.principal(a->models.arg, id, who, &disabled) != AUTHN_MODEL_FOUND || disabled) {
        atomic_fetch_add(&a->rechecks_store, 1);
        return authn_recheck(cl, who, wall_ms, why, len);
    }
    atomic_fetch_add(&a->model_answers, 1);
    return 0;
}

int authn_models_state(struct authn *a, const struct authn_principal *who, bool *revoked,
                       struct authz_binding *b, size_t *n)
{
    *revoked = false;
    *n = 0;
    if (a == NULL || !models_live(a)) {
        return GERR_UNAVAILABLE;
    }
    if (who->key_id[0] != '\0') {
        char principal_id[40];
        int64_t expires = 0;
        if (a->models.key(a->models.arg, who->key_id, principal_id, &expires, revoked) != AUTHN_MODEL_FOUND) {
            return GERR_UNAVAILABLE;
        }
    }
    struct authn_principal *p = mem_alloc(sizeof *p);
    bool disabled = false;
    int rv = a->models.principal(a->models.arg, who->id, p, &disabled) == AUTHN_MODEL_FOUND && !disabled
                 ? 0
                 : GERR_UNAVAILABLE;
    if (rv == 0) {
        memcpy(b, p->bindings, sizeof *b * p->n_bindings);
        *n = p->n_bindings;
        atomic_fetch_add(&a->model_answers, 1);
    }
    mem_free(p);
    return rv;
}

/* Cached lookups: copy out under the lock; refresh outside it. With @hash_only (the keys model
 * gives the key's metadata), a cached entry of the key answers whatever its age if no invalidation
 * raced its fetch: the hash changes only by a rehash, whose ApiKey event drops the entry. */
static int get_key(struct authn *a, struct store_client *cl, const char *keyid, int64_t now, bool hash_only,
                   struct key_entry *out)
{
    pthread_mutex_lock(&a->mu);
    struct key_entry *slot = NULL, *oldest = &a->keys[0];
    for (unsigned i = 0; i < KEY_SLOTS; i++) {
        if (a->keys[i].fetched_ms != 0 && strcmp(a->keys[i].keyid, keyid) == 0) {
            slot = &a->keys[i];
        }
        if (a->keys[i].fetched_ms < oldest->fetched_ms) {
            oldest = &a->keys[i];
        }
    }
    bool usable =
        slot != NULL &&
        (hash_only ? !slot->missing && (slot->evented || now - slot->fetched_ms < (int64_t)AUTHN_CACHE_TTL_MS)
                   : fresh(a, slot->fetched_ms, slot->evented, now));
    if (usable) {
        *out = *slot;
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    uint64_t gen = a->gen;
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_add(&a->fetches, 1);
    struct key_entry got;
    int rv = fetch_key(cl, keyid, &got, now);
    if (rv != 0) {
        return rv;
    }
    pthread_mutex_lock(&a->mu);
    got.evented = a->gen == gen;
    if (slot == NULL || strcmp(slot->keyid, keyid) != 0) {
        slot = oldest;
    }
    if (slot->fetched_ms != 0 && strcmp(slot->keyid, keyid) == 0 &&
        slot->last_used_written_ms > got.last_used_written_ms) {
        got.last_used_written_ms = slot->last_used_written_ms;
    }
    *slot = got;
    *out = got;
    pthread_mutex_unlock(&a->mu);
    return 0;
}

/* *@dst = *@src, copying only the bindings in use: struct authn_principal holds AUTHN_MAX_BINDINGS
 * bindings of a few KiB each (about 90 KiB in all), and a whole copy per call (twice, once under
 * a->mu) was the largest cost of an authenticated read (memmove and page faults; docs/benchmarks.md). */
static void principal_copy(struct authn_principal *dst, const struct authn_principal *src)
{
    size_t head = offsetof(struct authn_principal, bindings);
    size_t tail = offsetof(struct authn_principal, n_bindings);
    memcpy(dst, src, head);
    memcpy(dst->bindings, src->bindings, sizeof *src->bindings * src->n_bindings);
    memcpy((char *)dst + tail, (const char *)src + tail, sizeof *dst - tail);
}

static void entry_copy(struct principal_entry *dst, const struct principal_entry *src)
{
    principal_copy(&dst->p, &src->p);
    dst->disabled = src->disabled;
    dst->missing = src->missing;
    dst->evented = src->evented;
    dst->fetched_ms = src->fetched_ms;
}

/* The principal @id into *@out and whether it is *@gone (deleted or disabled; *@missing: deleted),
 * from the cache or the store. No entry-sized allocation on a hit: one would be an mmap and an
 * munmap per call (lib/mem.c sets the mmap threshold to 64 KiB). */
static int get_principal(struct authn *a, struct store_client *cl, const char *id, int64_t now,
                         struct authn_principal *out, bool *gone, bool *missing)
{
    pthread_mutex_lock(&a->mu);
    unsigned at = PRINCIPAL_SLOTS, oldest = 0;
    for (unsigned i = 0; i < PRINCIPAL_SLOTS; i++) {
        if (a->ptags[i].fetched_ms != 0 && strcmp(a->ptags[i].id, id) == 0) {
            at = i;
        }
        if (a->ptags[i].fetched_ms < a->ptags[oldest].fetched_ms) {
            oldest = i;
        }
    }
    struct principal_entry *slot = at < PRINCIPAL_SLOTS ? &a->principals[at] : NULL;
    if (slot != NULL && fresh(a, slot->fetched_ms, slot->evented, now)) {
        principal_copy(out, &slot->p);
        *gone = slot->missing || slot->disabled;
        *missing = slot->missing;
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    uint64_t gen = a->gen;
    pthread_mutex_unlock(&a->mu);
    struct principal_entry *got = mem_alloc(sizeof *got);
    int rv = 0;
    bool modeled = false;
    uint64_t rev = 0;
    if (a->models.principal != NULL && a->feed != NULL &&
        feed_sync(a->feed, clock_mono_ms(clock_system()) + AUTHN_MODEL_SYNC_MS, &rev) == 0) {
        /* The models first (authn_set_models), after a read index: they hold every change
         * acknowledged before this call, as a store read would, so a binding granted a moment ago
         * through any replica is seen. An invalidation that races the read below moves the
         * generation from here (the models are updated before the drop). A principal they do not
         * hold, or hold disabled, is read from the store. */
        pthread_mutex_lock(&a->mu);
        gen = a->gen;
        pthread_mutex_unlock(&a->mu);
        memset(got, 0, sizeof *got);
        bool disabled = false;
        modeled =
            a->models.principal(a->models.arg, id, &got->p, &disabled) == AUTHN_MODEL_FOUND && !disabled;
        if (modeled) {
            got->fetched_ms = now;
            atomic_fetch_add(&a->model_answers, 1);
        }
    }
    if (!modeled) {
        atomic_fetch_add(&a->fetches, 1);
        rv = fetch_principal(cl, id, got, now);
    }
    if (rv == 0) {
        pthread_mutex_lock(&a->mu);
        got->evented = a->gen == gen;
        if (slot == NULL || strcmp(a->ptags[at].id, id) != 0) {
            at = oldest;
            slot = &a->principals[at];
        }
        entry_copy(slot, got);
        snprintf(a->ptags[at].id, sizeof a->ptags[at].id, "%s", got->p.id);
        a->ptags[at].fetched_ms = got->fetched_ms;
        principal_copy(out, &got->p);
        *gone = got->missing || got->disabled;
        *missing = got->missing;
        pthread_mutex_unlock(&a->mu);
    }
    mem_free(got);
    return rv;
}

/* --- last-used times: fire-and-forget writes, at most one a minute per key --- */

struct last_used {
    struct store_write w;
    char keyid[APIKEY_ID_LEN + 1];
    int64_t at;
};

static int last_used_tx(struct store_tx *tx, void *arg)
{
    struct last_used *u = arg;
    struct proto_value p[] = {proto_int(u->at), proto_text(u->keyid)};
    return store_tx_exec(tx, "UPDATE api_keys SET last_used_ms = ? WHERE id = ? AND last_used_ms < ?1", p, 2,
                         NULL);
}

static void last_used_done(struct store_write *w, int status)
{
    (void)status; /* best effort: the next call retries a minute later */
    mem_free(w->data);
}

static void touch(struct authn *a, const struct key_entry *k, int64_t now)
{
    if (a->writer == NULL || now - k->last_used_written_ms < LAST_USED_EVERY_MS) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    for (unsigned i = 0; i < KEY_SLOTS; i++) {
        if (a->keys[i].fetched_ms != 0 && strcmp(a->keys[i].keyid, k->keyid) == 0) {
            a->keys[i].last_used_written_ms = now;
        }
    }
    pthread_mutex_unlock(&a->mu);
    struct last_used *u = mem_zalloc(sizeof *u);
    snprintf(u->keyid, sizeof u->keyid, "%s", k->keyid);
    u->at = now;
    u->w.data = u;
    if (store_writer_submit(a->writer, &u->w, last_used_tx, u, last_used_done) != 0) {
        mem_free(u);
    }
}

/* --- rehashing a key under the current pepper version: fire-and-forget, once per cache period --- */

struct rehash {
    struct store_write w;
    char keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    unsigned from, to;
};

static int rehash_tx(struct store_tx *tx, void *arg)
{
    struct rehash *r = arg;
    struct proto_value p[] = {proto_blob(r->hash, sizeof r->hash), proto_int(r->to), proto_text(r->keyid),
                              proto_int(r->from)};
    struct store_result res = {0};
    int rv = store_tx_exec(
        tx, "UPDATE api_keys SET hash = ?, pepper_version = ? WHERE id = ? AND pepper_version = ?", p, 4,
        &res);
    if (rv == 0 && res.rows_affected > 0) {
        /* the new hash replaces cached ones on every replica (authn_attach_feed) */
        rv = store_event_tx(tx, "ApiKey", "", r->keyid, "MODIFIED", NULL);
    }
    return rv;
}

static void rehash_done(struct store_write *w, int status)
{
    struct rehash *r = w->data;
    if (status == 0) {
        LOG_INFO("authn: API key %s rehashed from pepper version %u to %u", r->keyid, r->from, r->to);
    } /* else: the key is rehashed at a later use */
    memset(r->hash, 0, sizeof r->hash);
    mem_free(r);
}

static void maybe_rehash(struct authn *a, struct store_client *cl, const struct key_entry *k,
                         const char *secret, int64_t now)
{
    if (a->peppers.current == NULL || a->writer == NULL ||
        (k->rehash_sent_ms != 0 && now - k->rehash_sent_ms < (int64_t)AUTHN_CACHE_TTL_MS)) {
        return;
    }
    unsigned cur = 0;
    uint8_t pepper[32];
    char err[GERR_MSG_SIZE];
    if (a->peppers.current(a->peppers.arg, cl, now, &cur, pepper, err) != 0) {
        LOG_WARN("authn: the current API-key pepper is not readable, API key %s is not rehashed now: %s",
                 k->keyid, err);
        return;
    }
    if (cur <= k->pepper_version) {
        memset(pepper, 0, sizeof pepper);
        return;
    }
    struct rehash *r = mem_zalloc(sizeof *r);
    snprintf(r->keyid, sizeof r->keyid, "%s", k->keyid);
    r->from = k->pepper_version;
    r->to = cur;
    int rv = apikey_hash(pepper, sizeof pepper, secret, r->hash, err);
    memset(pepper, 0, sizeof pepper);
    pthread_mutex_lock(&a->mu);
    for (unsigned i = 0; i < KEY_SLOTS; i++) {
        if (a->keys[i].fetched_ms != 0 && strcmp(a->keys[i].keyid, k->keyid) == 0) {
            a->keys[i].rehash_sent_ms = now;
        }
    }
    pthread_mutex_unlock(&a->mu);
    r->w.data = r;
    if (rv != 0 || store_writer_submit(a->writer, &r->w, rehash_tx, r, rehash_done) != 0) {
        memset(r->hash, 0, sizeof r->hash);
        mem_free(r);
    }
}

/* --- the credentials --- */

_Static_assert(sizeof(((struct authn_principal *)0)->key_id) == APIKEY_ID_LEN + 1,
               "key_id holds an API key id");

static int by_api_key(struct authn *a, struct store_client *cl, const char *key, int64_t now,
                      char *principal_id, char *key_id, int64_t *not_after_ms, char *msg)
{
    struct apikey_parts parts;
    char err[GERR_MSG_SIZE];
    if (apikey_parse(key, strlen(key), &parts, err) != 0) {
        gerr_set(msg, "malformed API key: %s", err);
        return GERR_UNAUTH;
    }
    /* The key's principal, revocation and expiry from the keys model when it holds the key
     * (authn_set_models); its hash from the cache, or the store at its first use here. */
    char m_principal[40] = "";
    int64_t m_expires = 0;
    bool m_revoked = false;
    bool modeled = models_live(a) && a->models.key(a->models.arg, parts.keyid, m_principal, &m_expires,
                                                   &m_revoked) == AUTHN_MODEL_FOUND;
    struct key_entry k;
    int rv = get_key(a, cl, parts.keyid, now, modeled, &k);
    if (rv == 0 && modeled && !k.missing) {
        atomic_fetch_add(&a->model_answers, 1);
        /* neither can be undone, and a store read may be the newer of the two */
        k.revoked_ms = k.revoked_ms != 0 || m_revoked ? 1 : 0;
        k.expires_ms = m_expires;
        snprintf(k.principal_id, sizeof k.principal_id, "%s", m_principal);
    }
    if (rv != 0) {
        gerr_set(msg, "cannot check credentials now: %s", cl->errmsg);
        return rv;
    }
    if (k.missing) {
        gerr_set(msg, "unknown API key %s", parts.keyid);
        return GERR_UNAUTH;
    }
    uint8_t pepper[32];
    const uint8_t *pep = a->pepper;
    size_t pep_len = a->pepper_len;
    if (a->peppers.get != NULL) {
        rv = a->peppers.get(a->peppers.arg, cl, k.pepper_version, pepper, err);
        if (rv == GERR_NOTFOUND || rv == GERR_PERM) {
            gerr_set(
                msg,
                "API key %s was hashed with API-key pepper version %u, which this cluster cannot use: %s",
                parts.keyid, k.pepper_version, err);
            return GERR_UNAUTH;
        }
        if (rv != 0) {
            gerr_set(msg, "cannot check credentials now: %s", err);
            return rv;
        }
        pep = pepper;
        pep_len = sizeof pepper;
    } else if (k.pepper_version != 1) {
        gerr_set(msg,
                 "API key %s was hashed with API-key pepper version %u, which this replica does not have",
                 parts.keyid, k.pepper_version);
        return GERR_UNAUTH;
    }
    rv = apikey_verify(key, strlen(key), k.hash, pep, pep_len, err);
    memset(pepper, 0, sizeof pepper);
    if (rv != 0) {
        gerr_set(msg, "%s", err); /* "API key <keyid> does not match": never a part of the secret */
        return GERR_UNAUTH;
    }
    if (k.revoked_ms != 0) {
        gerr_set(msg, "the API key was revoked");
        return GERR_UNAUTH;
    }
    if (k.expires_ms != 0 && k.expires_ms <= now) {
        gerr_set(msg, "the API key expired");
        return GERR_UNAUTH;
    }
    touch(a, &k, now);
    maybe_rehash(a, cl, &k, parts.secret, now);
    snprintf(principal_id, 40, "%s", k.principal_id);
    snprintf(key_id, APIKEY_ID_LEN + 1, "%s", parts.keyid);
    *not_after_ms = k.expires_ms;
    return 0;
}

/* The principal of @issuer's @subject from the models, when they can tell (authn_set_models). */
static bool subject_from_models(struct authn *a, const char *issuer, const char *subject, char *principal_id)
{
    if (models_live(a) &&
        a->models.subject(a->models.arg, issuer, subject, principal_id) == AUTHN_MODEL_FOUND) {
        atomic_fetch_add(&a->model_answers, 1);
        return true;
    }
    return false;
}

static int by_token(struct authn *a, struct store_client *cl, const char *token, char *principal_id,
                    int64_t *not_after_ms, char *msg, bool *bad_credential)
{
    struct jwt_result res;
    char err[GERR_MSG_SIZE];
    int rv = oidc_verify(a->oidc, token, strlen(token), &res, err);
    if (rv != 0) {
        gerr_set(msg, "invalid token: %s", err);
        *bad_credential = rv != GERR_UNAVAILABLE;
        return rv == GERR_UNAVAILABLE ? rv : GERR_UNAUTH;
    }
    if (subject_from_models(a, res.issuer_name, res.subject, principal_id)) {
        *not_after_ms = res.valid_until_ms;
        jwt_result_close(&res);
        return 0;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(res.issuer_name), proto_text(res.subject)};
    rv = store_client_query(cl,
                            "SELECT id FROM principals WHERE issuer = ?1 AND subject = ?2 UNION ALL "
                            "SELECT principal_id FROM principal_links WHERE issuer = ?1 AND subject = ?2",
                            p, 2, &rows);
    if (rv != 0) {
        gerr_set(msg, "cannot check credentials now: %s", cl->errmsg);
    } else if (rows.n_rows != 1) {
        gerr_set(
            msg,
            "no principal is registered for %.200s: an admin creates it with this OIDC issuer and subject",
            res.principal);
        rv = GERR_UNAUTH;
    } else {
        text_of(proto_rows_at(&rows, 0, 0), principal_id, 40);
        *not_after_ms = res.valid_until_ms;
    }
    proto_rows_close(&rows);
    jwt_result_close(&res);
    return rv;
}

static int by_cert(struct authn *a, struct store_client *cl, X509 *cert, char *principal_id, char *msg)
{
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    if (cn[0] == '\0') {
        gerr_set(msg, "the client certificate has no common name");
        return GERR_UNAUTH;
    }
    if (subject_from_models(a, "mtls", cn, principal_id)) {
        return 0;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(cn)};
    int rv =
        store_client_query(cl,
                           "SELECT id FROM principals WHERE issuer = 'mtls' AND subject = ?1 UNION ALL "
                           "SELECT principal_id FROM principal_links WHERE issuer = 'mtls' AND subject = ?1",
                           p, 1, &rows);
    if (rv != 0) {
        gerr_set(msg, "cannot check credentials now: %s", cl->errmsg);
    } else if (rows.n_rows != 1) {
        gerr_set(msg, "no principal is mapped to client certificate \"%.64s\"", cn);
        rv = GERR_UNAUTH;
    } else {
        text_of(proto_rows_at(&rows, 0, 0), principal_id, 40);
    }
    proto_rows_close(&rows);
    return rv;
}

int authn_call(struct authn *a, struct store_client *cl, const char *authorization, X509 *peer_cert,
               int64_t now_ms, struct authn_principal *out, char *msg, bool *bad_credential)
{
    char principal_id[40] = "", key_id[APIKEY_ID_LEN + 1] = "";
    int64_t not_after_ms = 0;
    *bad_credential = false;
    const char *via;
    int rv;
    if (authorization != NULL && strncmp(authorization, "Bearer ", 7) == 0 &&
        strncmp(authorization + 7, "gtk_", 4) == 0) {
        via = "api_key";
        rv = by_api_key(a, cl, authorization + 7, now_ms, principal_id, key_id, &not_after_ms, msg);
        *bad_credential = rv == GERR_UNAUTH; /* malformed, unknown, wrong secret, revoked or expired */
    } else if (authorization != NULL && strncmp(authorization, "Bearer ", 7) == 0 && a->oidc != NULL) {
        via = "oidc";
        rv = by_token(a, cl, authorization + 7, principal_id, &not_after_ms, msg, bad_credential);
    } else if (authorization != NULL) {
        via = "?";
        gerr_set(msg, "unsupported credentials: send \"authorization: Bearer <API key or OIDC token>\"");
        rv = GERR_UNAUTH;
        *bad_credential = true;
    } else if (peer_cert != NULL) {
        via = "mtls";
        rv = by_cert(a, cl, peer_cert, principal_id, msg);
    } else {
        via = "none";
        gerr_set(msg, "missing credentials: send \"authorization: Bearer <API key>\"");
        rv = GERR_UNAUTH;
    }
    if (rv == 0) {
        bool gone = false, missing = false;
        rv = get_principal(a, cl, principal_id, now_ms, out, &gone, &missing);
        if (rv != 0) {
            gerr_set(msg, "cannot check credentials now: %s", cl->errmsg);
        } else if (gone) {
            gerr_set(msg, "the principal of these credentials is %s", missing ? "gone" : "disabled");
            rv = GERR_UNAUTH;
        }
        if (rv != 0) {
            memset(out, 0, sizeof *out); /* as before: nothing of a refused principal (rare path) */
        } else {
            snprintf(out->via, sizeof out->via, "%s", via);
            snprintf(out->key_id, sizeof out->key_id, "%s", key_id);
            out->not_after_ms = not_after_ms;
        }
    }
    return rv;
}
