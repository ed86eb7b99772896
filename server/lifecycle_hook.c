/* The lifecycle webhook. See lifecycle_hook.h for the contract.
 *
 * The happy path, one round of the thread: held? -> cursor (once per epoch) -> revision now ->
 * Sandbox events in (cursor, now] with payloads, 100 at most -> compaction marker -> for each
 * event: its state, skipped when the sandbox's state did not change, else POST until a 2xx
 * (backoff between failures) -> cursor = its revision, fenced. When the page held every Sandbox
 * event up to `now`, the cursor may jump to `now` (at most every CURSOR_IDLE_MS when nothing was
 * delivered), so retention deleting other kinds' events never looks like a gap. */
#include "server/lifecycle_hook.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "api/gate/audit.h"
#include "api/services/clusterdb.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "server/lifecycle_event.h"
#include "store/events.h"

#define SECRET_MAX     4096u
#define PAGE           100
#define CURSOR_IDLE_MS 10000u
#define MAP_BUCKETS    1024u
#define MAP_MAX        100000u
#define ANSWER_MAX     65536 /* bytes of a receiver's answer body read (and thrown away) */

/* gRPC status codes of the audit rows (the audit trail speaks gRPC's). */
#define STATUS_OUT_OF_RANGE 11
#define STATUS_UNAVAILABLE  14

struct seen { /* the last state this holder POSTed (or skipped) for a sandbox */
    char id[64];
    const char *state; /* static string */
    struct seen *next;
};

struct lifecycle_hook {
    struct lifecycle_hook_config cfg; /* strings point into the copies below */
    char *url, *ca_file, *gateway_id;
    unsigned char *secret;
    size_t secret_len;
    struct store_client cl;
    CURL *curl;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
    /* the holder's state, on the thread */
    uint64_t epoch;      /* the epoch the cursor was read under; 0: not read */
    uint64_t cursor;     /* stored cursor */
    uint64_t last_write; /* monotonic ms of the last cursor write */
    struct seen *map[MAP_BUCKETS];
    unsigned map_n;
    /* metrics */
    atomic_uint_fast64_t delivered, failed_attempts, dropped_attempts, dropped_compacted, skipped;
    atomic_uint_fast64_t m_cursor, m_pending, m_oldest_ms, m_active;
};

/* ---- the per-sandbox state map (a holder's memory: repeats of a state are skipped) */

static unsigned map_hash(const char *id)
{
    unsigned h = 2166136261u;
    for (const char *p = id; *p != '\0'; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    return h % MAP_BUCKETS;
}

static void map_clear(struct lifecycle_hook *h)
{
    for (unsigned i = 0; i < MAP_BUCKETS; i++) {
        while (h->map[i] != NULL) {
            struct seen *s = h->map[i];
            h->map[i] = s->next;
            mem_free(s);
        }
    }
    h->map_n = 0;
}

static const char *map_get(struct lifecycle_hook *h, const char *id)
{
    for (struct seen *s = h->map[map_hash(id)]; s != NULL; s = s->next) {
        if (strcmp(s->id, id) == 0) {
            return s->state;
        }
    }
    return NULL;
}

/* @state NULL: forget @id. */
static void map_set(struct lifecycle_hook *h, const char *id, const char *state)
{
    struct seen **pp = &h->map[map_hash(id)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            break;
        }
    }
    if (*pp != NULL && state == NULL) {
        struct seen *s = *pp;
        *pp = s->next;
        mem_free(s);
        h->map_n--;
    } else if (*pp != NULL) {
        (*pp)->state = state;
    } else if (state != NULL) {
        if (h->map_n >= MAP_MAX) {
            map_clear(h); /* bounded memory; the price is one repeated state per sandbox */
            pp = &h->map[map_hash(id)];
        }
        struct seen *s = mem_zalloc(sizeof *s);
        snprintf(s->id, sizeof s->id, "%s", id);
        s->state = state;
        s->next = *pp;
        *pp = s;
        h->map_n++;
    }
}

/* ---- waiting */

/* Sleep @ms or until stop; true when stopping. */
static bool wait_or_stop(struct lifecycle_hook *h, unsigned ms)
{
    struct timespec ts;
    clock_mono_deadline(&ts, ms);
    pthread_mutex_lock(&h->mu);
    while (!h->stopping && clock_cond_wait_mono(&h->cond, &h->mu, &ts) == 0) {
    }
    bool stop = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return stop;
}

static bool stopping(struct lifecycle_hook *h)
{
    pthread_mutex_lock(&h->mu);
    bool stop = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return stop;
}

/* Still the holder, with the epoch the cursor was read under? */
static bool still_held(struct lifecycle_hook *h)
{
    uint64_t epoch = 0;
    return h->cfg.held(h->cfg.fence_arg, &epoch) && epoch == h->epoch;
}

/* ---- the cursor, fenced */

struct cursor_write {
    struct lifecycle_hook *h;
    uint64_t epoch, cursor;
    const struct audit_record *audit; /* NULL: none */
};

static int cursor_tx(struct store_tx *tx, void *arg)
{
    struct cursor_write *c = arg;
    int rv = c->h->cfg.fence_tx(tx, c->epoch, c->h->cfg.fence_arg);
    if (rv != 0) {
        return rv;
    }
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64, c->cursor);
    rv = clusterdb_meta_put_tx(tx, LIFECYCLE_HOOK_CURSOR_KEY, text,
                               (int64_t)clock_system()->wall_ms(clock_system()));
    if (rv == 0 && c->audit != NULL) {
        rv = audit_insert_tx(tx, c->audit);
    }
    return rv;
}

/* 0, GERR_STALE (the lease is gone: stop acting) or the writer's errors. */
static int cursor_store(struct lifecycle_hook *h, uint64_t cursor, const struct audit_record *audit)
{
    struct cursor_write c = {.h = h, .epoch = h->epoch, .cursor = cursor, .audit = audit};
    char errmsg[GERR_MSG_SIZE] = "";
    int rv = store_writer_run(h->cfg.writer, cursor_tx, &c, errmsg);
    if (rv != 0) {
        LOG_WARN("lifecycle webhook: storing the cursor %" PRIu64 ": %s", cursor,
                 errmsg[0] != '\0' ? errmsg : gerr_str(rv));
        return rv;
    }
    h->cursor = cursor;
    h->last_write = clock_mono_ms(clock_system());
    atomic_store(&h->m_cursor, cursor);
    return 0;
}

/* Read the stored cursor, or start one at the current revision. */
static int cursor_load(struct lifecycle_hook *h)
{
    char text[32];
    int rv = clusterdb_meta_get(&h->cl, LIFECYCLE_HOOK_CURSOR_KEY, text, sizeof text);
    if (rv == 0) {
        h->cursor = strtoull(text, NULL, 10);
        atomic_store(&h->m_cursor, h->cursor);
        return 0;
    }
    if (rv != GERR_NOTFOUND) {
        return rv;
    }
    int64_t now = 0;
    rv = store_client_query_int(&h->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &now);
    if (rv == 0) {
        rv = cursor_store(h, (uint64_t)now, NULL);
    }
    if (rv == 0) {
        LOG_INFO("lifecycle webhook: no cursor stored: delivering changes after revision %" PRId64, now);
    }
    return rv;
}

/* ---- one CloudEvent */

static void audit_drop(struct lifecycle_hook *h, struct audit_record *r, const char *ns, const char *id,
                       const char *name, int status, const char *message)
{
    *r = (struct audit_record){.time_ms = (int64_t)clock_system()->wall_ms(clock_system()),
                               .class_uid = AUDIT_CLASS_API_ACTIVITY,
                               .activity = AUDIT_OTHER,
                               .actor_id = "lifecycle_webhook",
                               .actor_name = "lifecycle_webhook",
                               .actor_kind = "system",
                               .operation = "lifecycle_webhook/deliver",
                               .ns = ns,
                               .resource_type = "Sandbox",
                               .resource_id = id,
                               .resource_name = name,
                               .success = false,
                               .status_code = status,
                               .message = message,
                               .source = "local",
                               .request_id = "",
                               .replica_id = h->cfg.replica_id,
                               .gateway_id = h->gateway_id};
}

static size_t discard(char *data, size_t size, size_t nmemb, void *ud)
{
    (void)data;
    size_t *n = ud;
    *n += size * nmemb;
    return *n > ANSWER_MAX ? 0 : size * nmemb;
}

/* libcurl's progress callback (about once a second, and as bytes move): a POST under way ends
 * when the hook stops or this replica no longer holds the lease it was sent under, so an old
 * holder's slow POST does not land after the new holder's. */
static int abort_on_stop(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return stopping(ud) || !still_held(ud) ? 1 : 0;
}

/* One POST. 0 on a 2xx; else an error with a message (never the secret, never the URL). */
static int post(struct lifecycle_hook *h, const char *body, char *errmsg)
{
    char sig[32 + LIFECYCLE_SIGNATURE_SIZE] = "";
    if (h->secret != NULL) {
        char value[LIFECYCLE_SIGNATURE_SIZE];
        lifecycle_event_sign(h->secret, h->secret_len, body, strlen(body), value);
        snprintf(sig, sizeof sig, "%s: %s", LIFECYCLE_SIGNATURE_HEADER, value);
        OPENSSL_cleanse(value, sizeof value);
    }
    struct curl_slist *hdr =
        curl_slist_append(NULL, "Content-Type: application/cloudevents+json; charset=utf-8");
    if (sig[0] != '\0') {
        hdr = curl_slist_append(hdr, sig);
    }
    hdr = curl_slist_append(hdr, "Expect:");
    char detail[CURL_ERROR_SIZE] = "";
    size_t got = 0;
    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->cfg.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->cfg.timeout_ms);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->ca_file != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
        curl_easy_setopt(c, CURLOPT_CAPATH, (char *)NULL);
    }
    curl_easy_setopt(c, CURLOPT_USERAGENT, "gantryd-lifecycle-webhook");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_on_stop);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hdr);
    OPENSSL_cleanse(sig, sizeof sig);
    if (rc == CURLE_WRITE_ERROR && status >= 200 && status < 300) {
        return 0; /* a 2xx with a body too long to read: delivered */
    }
    if (rc != CURLE_OK) {
        gerr_set(errmsg, "%s", detail[0] != '\0' ? detail : curl_easy_strerror(rc));
        return rc == CURLE_OPERATION_TIMEDOUT ? GERR_TIMEOUT : GERR_UNAVAILABLE;
    }
    if (status < 200 || status >= 300) {
        gerr_set(errmsg, "HTTP %ld", status);
        return GERR_UNAVAILABLE;
    }
    return 0;
}

/* A DELETED event carries no payload: the sandbox as its last change before @rev left it (for its
 * name and data), or NULL when retention deleted that too or the store failed (the event then
 * names the sandbox by id). */
static Gantry__V1__Sandbox *last_state(struct lifecycle_hook *h, const char *object_id, uint64_t rev)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(object_id), proto_int((int64_t)rev)};
    Gantry__V1__Sandbox *sb = NULL;
    int rv = store_client_query(&h->cl,
                                "SELECT payload FROM events WHERE kind = 'Sandbox' AND object_id = ? AND "
                                "revision < ? AND payload IS NOT NULL ORDER BY revision DESC LIMIT 1",
                                p, 2, &rows);
    if (rv == 0 && rows.n_rows == 1 && proto_rows_at(&rows, 0, 0)->type == PROTO_BLOB) {
        const struct proto_value *v = proto_rows_at(&rows, 0, 0);
        sb = gantry__v1__sandbox__unpack(NULL, v->u.b.n, (const uint8_t *)v->u.b.s);
    }
    proto_rows_close(&rows);
    return sb;
}

/* Deliver one change: 0 when it was delivered, skipped or dropped (the cursor is past it);
 * GERR_STALE / GERR_CANCELED when this replica must stop acting (lease lost, stopping); the
 * writer's errors when the cursor could not be stored (the round ends; the change is POSTed again). */
static int deliver(struct lifecycle_hook *h, uint64_t rev, int64_t at_ms, const char *ns,
                   const char *object_id, const char *type, const struct proto_value *payload)
{
    Gantry__V1__Sandbox *sb = NULL;
    if (payload->type == PROTO_BLOB && payload->u.b.n > 0) {
        sb = gantry__v1__sandbox__unpack(NULL, payload->u.b.n, (const uint8_t *)payload->u.b.s);
    } else if (strcmp(type, "DELETED") == 0) {
        sb = last_state(h, object_id, rev);
    }
    const char *state =
        lifecycle_state(type, sb != NULL && sb->status != NULL ? (int)sb->status->phase
                                                               : (strcmp(type, "DELETED") == 0 ? 0 : -1));
    bool same = state != NULL && strcmp(type, "DELETED") != 0 && map_get(h, object_id) == state;
    if (state == NULL || same) {
        if (sb != NULL) {
            gantry__v1__sandbox__free_unpacked(sb, NULL);
        }
        atomic_fetch_add(&h->skipped, 1);
        return cursor_store(h, rev, NULL);
    }
    char *body = lifecycle_event_json(h->gateway_id, rev, at_ms, state, sb, ns, object_id);
    if (body == NULL) { /* jansson could not allocate: like a failure of every attempt */
        if (sb != NULL) {
            gantry__v1__sandbox__free_unpacked(sb, NULL);
        }
        LOG_ERROR("lifecycle webhook: event %s-%" PRIu64 ": cannot encode it: dropped", h->gateway_id, rev);
        struct audit_record r;
        audit_drop(h, &r, ns, object_id, "", STATUS_UNAVAILABLE, "lifecycle event dropped: cannot encode it");
        atomic_fetch_add(&h->dropped_attempts, 1);
        return cursor_store(h, rev, &r);
    }
    char name[128];
    snprintf(name, sizeof name, "%s", sb != NULL && sb->meta != NULL ? sb->meta->name : "");
    if (sb != NULL) {
        gantry__v1__sandbox__free_unpacked(sb, NULL);
    }
    unsigned delay = h->cfg.backoff_ms;
    int rv = 0;
    char errmsg[GERR_MSG_SIZE] = "";
    for (unsigned attempt = 1;; attempt++) {
        if (stopping(h)) {
            rv = GERR_CANCELED;
            break;
        }
        if (!still_held(h)) {
            rv = GERR_STALE;
            break;
        }
        rv = post(h, body, errmsg);
        if (rv == 0) {
            atomic_fetch_add(&h->delivered, 1);
            map_set(h, object_id, strcmp(state, "deleted") == 0 ? NULL : state);
            rv = cursor_store(h, rev, NULL);
            break;
        }
        atomic_fetch_add(&h->failed_attempts, 1);
        if (attempt >= h->cfg.max_attempts) {
            char msg[GERR_MSG_SIZE + 128];
            snprintf(msg, sizeof msg,
                     "lifecycle event %s-%" PRIu64
                     " (io.gantry.sandbox.%s) dropped after %u failed attempts: %s",
                     h->gateway_id, rev, state, attempt, errmsg);
            LOG_WARN("%s", msg);
            struct audit_record r;
            audit_drop(h, &r, ns, object_id, name, STATUS_UNAVAILABLE, msg);
            atomic_fetch_add(&h->dropped_attempts, 1);
            map_set(h, object_id, strcmp(state, "deleted") == 0 ? NULL : state);
            rv = cursor_store(h, rev, &r);
            break;
        }
        if (attempt == 1) {
            LOG_WARN("lifecycle webhook: event %s-%" PRIu64 ": %s (attempt 1 of %u), retrying with backoff",
                     h->gateway_id, rev, errmsg, h->cfg.max_attempts);
        } else {
            LOG_DEBUG("lifecycle webhook: event %s-%" PRIu64 ": %s (attempt %u of %u), retrying in %u ms",
                      h->gateway_id, rev, errmsg, attempt, h->cfg.max_attempts, delay);
        }
        if (wait_or_stop(h, delay)) {
            rv = GERR_CANCELED;
            break;
        }
        delay = delay > h->cfg.backoff_max_ms / 2 ? h->cfg.backoff_max_ms : delay * 2;
    }
    free(body);
    return rv;
}

/* One round as the holder. */
static int round_held(struct lifecycle_hook *h)
{
    int64_t now_rev = 0;
    int rv = store_client_query_int(&h->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &now_rev);
    if (rv != 0) {
        return rv;
    }
    struct proto_rows ev;
    proto_rows_init(&ev, 0);
    struct proto_value p[] = {proto_int((int64_t)h->cursor), proto_int(now_rev), proto_int(PAGE)};
    rv = store_client_query(&h->cl,
                            "SELECT revision, namespace, object_id, type, payload, at_ms FROM events WHERE "
                            "kind = 'Sandbox' AND revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
                            p, 3, &ev);
    int64_t marker = 0;
    if (rv == 0) {
        rv = store_events_compacted(&h->cl, &marker);
    }
    if (rv == 0 && (uint64_t)marker > h->cursor) {
        /* Retention deleted events this holder never saw: whatever Sandbox changes were among
         * them are lost. One audit event for the gap, and on. */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "lifecycle events after revision %" PRIu64 " up to %" PRId64
                 " were deleted by retention before they were delivered",
                 h->cursor, marker);
        LOG_WARN("lifecycle webhook: %s", msg);
        struct audit_record r;
        audit_drop(h, &r, "", "", "", STATUS_OUT_OF_RANGE, msg);
        rv = cursor_store(h, (uint64_t)marker, &r);
        if (rv == 0) {
            atomic_fetch_add(&h->dropped_compacted, 1);
        }
        proto_rows_close(&ev);
        return rv;
    }
    size_t done = 0;
    for (size_t i = 0; rv == 0 && i < ev.n_rows; i++) {
        atomic_store(&h->m_pending, ev.n_rows - i);
        atomic_store(&h->m_oldest_ms, (uint64_t)proto_rows_at(&ev, i, 5)->u.i);
        char ns[128], id[128], type[16];
        const struct proto_value *v;
        v = proto_rows_at(&ev, i, 1);
        snprintf(ns, sizeof ns, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0, v->u.b.s);
        v = proto_rows_at(&ev, i, 2);
        snprintf(id, sizeof id, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0, v->u.b.s);
        v = proto_rows_at(&ev, i, 3);
        snprintf(type, sizeof type, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0, v->u.b.s);
        rv = deliver(h, (uint64_t)proto_rows_at(&ev, i, 0)->u.i, proto_rows_at(&ev, i, 5)->u.i, ns, id, type,
                     proto_rows_at(&ev, i, 4));
        done += rv == 0;
    }
    size_t n = ev.n_rows;
    proto_rows_close(&ev);
    if (rv == 0) {
        atomic_store(&h->m_pending, 0);
        atomic_store(&h->m_oldest_ms, 0);
    }
    /* Every Sandbox change up to now_rev was seen: the cursor may jump there (not at every poll). */
    if (rv == 0 && n < PAGE && (uint64_t)now_rev > h->cursor &&
        (done > 0 || clock_mono_ms(clock_system()) - h->last_write >= CURSOR_IDLE_MS)) {
        rv = cursor_store(h, (uint64_t)now_rev, NULL);
    }
    return rv == 0 && n == PAGE ? GERR_BUSY : rv; /* GERR_BUSY: more to read at once */
}

static void *hook_main(void *arg)
{
    struct lifecycle_hook *h = arg;
    while (!stopping(h)) {
        uint64_t epoch = 0;
        bool held = h->cfg.held(h->cfg.fence_arg, &epoch);
        if (!held || epoch != h->epoch) {
            if (h->epoch != 0) {
                LOG_INFO("lifecycle webhook: this replica stopped delivering (lease epoch %" PRIu64 ")",
                         h->epoch);
            }
            h->epoch = 0;
            map_clear(h);
            atomic_store(&h->m_active, 0);
            atomic_store(&h->m_pending, 0);
            atomic_store(&h->m_oldest_ms, 0);
        }
        if (!held) {
            wait_or_stop(h, h->cfg.poll_ms);
            continue;
        }
        int rv = 0;
        if (h->epoch == 0) {
            h->epoch = epoch;
            rv = cursor_load(h);
            if (rv == 0) {
                LOG_INFO("lifecycle webhook: delivering as lease epoch %" PRIu64 " from revision %" PRIu64,
                         epoch, h->cursor);
                atomic_store(&h->m_active, 1);
            } else {
                h->epoch = 0; /* read it again next round */
            }
        }
        if (rv == 0) {
            rv = round_held(h);
        }
        if (rv == GERR_BUSY) {
            continue;
        }
        if (rv == GERR_STALE) {
            h->epoch = 0;
        }
        wait_or_stop(h, h->cfg.poll_ms);
    }
    return NULL;
}

/* ---- start, stop, metrics */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void hook_free(struct lifecycle_hook *h)
{
    if (h->secret != NULL) {
        OPENSSL_cleanse(h->secret, h->secret_len);
        mem_free(h->secret);
    }
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
    }
    map_clear(h);
    mem_free(h->url);
    mem_free(h->ca_file);
    mem_free(h->gateway_id);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cond);
    mem_free(h);
}

static int load_secret(struct lifecycle_hook *h, const char *path, char *errmsg)
{
    char *text = NULL;
    size_t len = 0;
    int rv = file_read_all(path, SECRET_MAX, &text, &len, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "lifecycle_webhook_secret_file");
        return rv;
    }
    struct stat sb;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077) != 0) {
        OPENSSL_cleanse(text, len);
        mem_free(text);
        gerr_set(errmsg, "lifecycle_webhook_secret_file %s: others may read it (mode %03o): chmod 600 it",
                 path, (unsigned)(sb.st_mode & 0777));
        return GERR_PERM;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                       text[len - 1] == '\t')) {
        len--;
    }
    if (len == 0) {
        OPENSSL_cleanse(text, strlen(text));
        mem_free(text);
        gerr_set(errmsg, "lifecycle_webhook_secret_file %s: the file is empty", path);
        return GERR_INVAL;
    }
    h->secret = mem_alloc(len);
    memcpy(h->secret, text, len);
    h->secret_len = len;
    OPENSSL_cleanse(text, strlen(text));
    mem_free(text);
    return 0;
}

int lifecycle_hook_start(const struct lifecycle_hook_config *cfg, struct lifecycle_hook **out, char *errmsg)
{
    *out = NULL;
    const char *u = cfg->url;
    bool https = strncmp(u, "https://", 8) == 0;
    if (!https && strncmp(u, "http://", 7) != 0) {
        gerr_set(errmsg, "lifecycle_webhook_url: must start with http:// or https://");
        return GERR_INVAL;
    }
    CURLU *cu = curl_url();
    CURLUcode uc = curl_url_set(cu, CURLUPART_URL, u, 0);
    char *host = NULL;
    if (uc == CURLUE_OK) {
        uc = curl_url_get(cu, CURLUPART_HOST, &host, 0);
    }
    bool bad_host = uc != CURLUE_OK || host == NULL || host[0] == '\0';
    curl_free(host);
    curl_url_cleanup(cu);
    if (bad_host) {
        gerr_set(errmsg, "lifecycle_webhook_url: not a valid URL with a host (%s)",
                 uc != CURLUE_OK ? curl_url_strerror(uc) : "no host");
        return GERR_INVAL;
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        gerr_set(errmsg, "lifecycle webhook: curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return GERR_INTERNAL;
    }
    struct lifecycle_hook *h = mem_zalloc(sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    h->cfg = *cfg;
    h->url = mem_strdup(cfg->url);
    h->ca_file = cfg->ca_file != NULL && cfg->ca_file[0] != '\0' ? mem_strdup(cfg->ca_file) : NULL;
    h->gateway_id = mem_strdup(cfg->gateway_id);
    h->cfg.url = h->url;
    h->cfg.ca_file = h->ca_file;
    h->cfg.secret_file = NULL;
    h->cfg.gateway_id = h->gateway_id;
    h->cfg.timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : 5000;
    h->cfg.max_attempts = cfg->max_attempts != 0 ? cfg->max_attempts : 10;
    h->cfg.backoff_ms = cfg->backoff_ms != 0 ? cfg->backoff_ms : 500;
    h->cfg.backoff_max_ms = cfg->backoff_max_ms != 0 ? cfg->backoff_max_ms : 30000;
    h->cfg.poll_ms = cfg->poll_ms != 0 ? cfg->poll_ms : 200;
    int rv = 0;
    if (cfg->secret_file != NULL && cfg->secret_file[0] != '\0') {
        rv = load_secret(h, cfg->secret_file, errmsg);
    }
    if (rv == 0 && h->ca_file != NULL && access(h->ca_file, R_OK) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "lifecycle_webhook_ca_file %s: %s", h->ca_file, strerror(errno));
    }
    if (rv == 0 && (h->curl = curl_easy_init()) == NULL) {
        gerr_set(errmsg, "lifecycle webhook: curl_easy_init failed");
        rv = GERR_NOMEM;
    }
    if (rv == 0 && store_client_init(&h->cl, &cfg->store) != 0) {
        gerr_set(errmsg, "lifecycle webhook: %s", h->cl.errmsg);
        rv = GERR_INVAL;
    }
    if (rv == 0 && pthread_create(&h->thread, NULL, hook_main, h) != 0) {
        store_client_close(&h->cl);
        gerr_set(errmsg, "lifecycle webhook: cannot start its thread");
        rv = GERR_NOMEM;
    }
    if (rv != 0) {
        hook_free(h);
        return rv;
    }
    LOG_INFO("lifecycle webhook: on (%s, %s), delivered by the reconciler lease holder",
             https ? "https" : "http", h->secret != NULL ? "signed" : "unsigned");
    *out = h;
    return 0;
}

void lifecycle_hook_stop(struct lifecycle_hook *h)
{
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    store_client_close(&h->cl);
    hook_free(h);
}

void lifecycle_hook_metrics_write(struct lifecycle_hook *h, struct buf *out)
{
    uint64_t delivered = 0, failed = 0, drop_att = 0, drop_comp = 0, skipped = 0, cursor = 0, pending = 0,
             oldest = 0, active = 0;
    if (h != NULL) {
        delivered = atomic_load(&h->delivered);
        failed = atomic_load(&h->failed_attempts);
        drop_att = atomic_load(&h->dropped_attempts);
        drop_comp = atomic_load(&h->dropped_compacted);
        skipped = atomic_load(&h->skipped);
        cursor = atomic_load(&h->m_cursor);
        pending = atomic_load(&h->m_pending);
        oldest = atomic_load(&h->m_oldest_ms);
        active = atomic_load(&h->m_active);
    }
    uint64_t now = clock_system()->wall_ms(clock_system());
    double lag = oldest != 0 && now > oldest ? (double)(now - oldest) / 1000.0 : 0.0;
    buf_printf(
        out,
        "# HELP gantry_lifecycle_webhook_active 1 while this replica delivers lifecycle events (it holds "
        "the reconciler lease and a webhook is configured).\n"
        "# TYPE gantry_lifecycle_webhook_active gauge\ngantry_lifecycle_webhook_active %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_delivered_total Lifecycle events a receiver answered with 2xx, "
        "from this replica.\n"
        "# TYPE gantry_lifecycle_webhook_delivered_total counter\n"
        "gantry_lifecycle_webhook_delivered_total %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_failed_attempts_total POSTs that failed (transport error, "
        "timeout, non-2xx) and were retried or led to a drop.\n"
        "# TYPE gantry_lifecycle_webhook_failed_attempts_total counter\n"
        "gantry_lifecycle_webhook_failed_attempts_total %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_dropped_total Lifecycle events given up, by reason: attempts "
        "(max attempts failed), compacted (a gap retention deleted before delivery).\n"
        "# TYPE gantry_lifecycle_webhook_dropped_total counter\n"
        "gantry_lifecycle_webhook_dropped_total{reason=\"attempts\"} %" PRIu64 "\n"
        "gantry_lifecycle_webhook_dropped_total{reason=\"compacted\"} %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_skipped_total Sandbox changes that were no lifecycle "
        "transition (the state did not change) and were not sent.\n"
        "# TYPE gantry_lifecycle_webhook_skipped_total counter\n"
        "gantry_lifecycle_webhook_skipped_total %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_cursor_revision The revision of the last change delivered or "
        "given up (0 on a replica that is not delivering and never did).\n"
        "# TYPE gantry_lifecycle_webhook_cursor_revision gauge\n"
        "gantry_lifecycle_webhook_cursor_revision %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_pending Sandbox changes read and not yet delivered or given up.\n"
        "# TYPE gantry_lifecycle_webhook_pending gauge\ngantry_lifecycle_webhook_pending %" PRIu64 "\n"
        "# HELP gantry_lifecycle_webhook_lag_seconds Age of the oldest change read and not yet "
        "delivered (0: none pending).\n"
        "# TYPE gantry_lifecycle_webhook_lag_seconds gauge\ngantry_lifecycle_webhook_lag_seconds %.3f\n",
        active, delivered, failed, drop_att, drop_comp, skipped, cursor, pending, lag);
}
