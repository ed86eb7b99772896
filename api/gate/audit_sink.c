/* Aggregated audit events outside a transaction (api/gate/audit_sink.h). */
#include "api/gate/audit_sink.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/gate/admission.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

#define N_STRS 12

/* An owned copy of a record: its strings live in strs[]. */
struct owned_record {
    struct audit_record r;
    char *strs[N_STRS];
};

struct entry {
    struct owned_record rec; /* the first occurrence in this window */
    char host[64];
    uint64_t hash;
    int64_t first_ms, repeat_first_ms, last_ms;
    uint64_t count, written;
};

struct overflow {
    uint64_t count;
    int64_t first_ms, last_ms;
};

struct audit_sink {
    struct audit_sink_config cfg;
    struct store_writer *writer;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
    /* The current window. */
    struct entry *entries;
    unsigned n_entries;
    int *index; /* 2 * max_keys slots: entry index + 1, 0 empty */
    int64_t window_start_ms;
    struct overflow ovf[2]; /* [0] API activity, [1] authentication */
    struct audit_sink_stats stats;
};

void audit_sink_config_defaults(struct audit_sink_config *cfg)
{
    *cfg = (struct audit_sink_config){.window_ms = 10000, .flush_ms = 1000, .max_keys = 1024};
}

static const char *s0(const char *s)
{
    return s != NULL ? s : "";
}

static void owned_copy(struct owned_record *o, const struct audit_record *r)
{
    const char *in[N_STRS] = {r->actor_id, r->actor_name,    r->actor_kind,  r->operation,
                              r->ns,       r->resource_type, r->resource_id, r->resource_name,
                              r->message,  r->source,        r->request_id,  r->gateway_id};
    o->r = *r;
    for (int i = 0; i < N_STRS; i++) {
        o->strs[i] = mem_strdup(s0(in[i]));
    }
    o->r.actor_id = o->strs[0];
    o->r.actor_name = o->strs[1];
    o->r.actor_kind = o->strs[2];
    o->r.operation = o->strs[3];
    o->r.ns = o->strs[4];
    o->r.resource_type = o->strs[5];
    o->r.resource_id = o->strs[6];
    o->r.resource_name = o->strs[7];
    o->r.message = o->strs[8];
    o->r.source = o->strs[9];
    o->r.request_id = o->strs[10];
    o->r.gateway_id = o->strs[11];
    o->r.count = 1;
    o->r.start_time_ms = 0;
}

static void owned_free(struct owned_record *o)
{
    for (int i = 0; i < N_STRS; i++) {
        mem_free(o->strs[i]);
        o->strs[i] = NULL;
    }
}

/* --- the key of an event --- */

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    s = s0(s);
    return mix(h, s, strlen(s) + 1);
}

static uint64_t key_hash(const struct audit_record *r, const char *host)
{
    uint64_t h = 1469598103934665603ull;
    int nums[4] = {r->class_uid, (int)r->activity, r->status_code, r->success};
    h = mix(h, nums, sizeof nums);
    const char *strs[] = {r->actor_id,    r->operation,     r->ns,      r->resource_type,
                          r->resource_id, r->resource_name, r->message, host};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        h = mix_str(h, strs[i]);
    }
    return h;
}

static bool same_event(const struct entry *e, const struct audit_record *r, const char *host)
{
    const struct audit_record *a = &e->rec.r;
    return a->class_uid == r->class_uid && a->activity == r->activity && a->status_code == r->status_code &&
           a->success == r->success && strcmp(a->actor_id, s0(r->actor_id)) == 0 &&
           strcmp(a->operation, s0(r->operation)) == 0 && strcmp(a->ns, s0(r->ns)) == 0 &&
           strcmp(a->resource_type, s0(r->resource_type)) == 0 &&
           strcmp(a->resource_id, s0(r->resource_id)) == 0 &&
           strcmp(a->resource_name, s0(r->resource_name)) == 0 && strcmp(a->message, s0(r->message)) == 0 &&
           strcmp(e->host, host) == 0;
}

/* --- recording --- */

void audit_sink_record(struct audit_sink *s, const struct audit_record *r)
{
    char host[64];
    admission_source_host(s0(r->source), host, sizeof host);
    uint64_t h = key_hash(r, host);
    unsigned slots = 2 * s->cfg.max_keys;
    pthread_mutex_lock(&s->mu);
    s->stats.recorded++;
    for (unsigned i = 0; i < slots; i++) {
        int *slot = &s->index[(h + i) % slots];
        if (*slot == 0) {
            if (s->n_entries == s->cfg.max_keys) {
                break; /* full: counted below as overflow */
            }
            struct entry *e = &s->entries[s->n_entries];
            memset(e, 0, sizeof *e);
            owned_copy(&e->rec, r);
            snprintf(e->host, sizeof e->host, "%s", host);
            e->hash = h;
            e->first_ms = e->last_ms = r->time_ms;
            e->count = 1;
            *slot = (int)++s->n_entries;
            pthread_mutex_unlock(&s->mu);
            return;
        }
        struct entry *e = &s->entries[*slot - 1];
        if (e->hash == h && same_event(e, r, host)) {
            if (e->count == 1) {
                e->repeat_first_ms = r->time_ms;
            }
            e->count++;
            e->last_ms = r->time_ms;
            pthread_mutex_unlock(&s->mu);
            return;
        }
    }
    struct overflow *o = &s->ovf[r->class_uid == AUDIT_CLASS_AUTHENTICATION ? 1 : 0];
    if (o->count == 0) {
        o->first_ms = r->time_ms;
    }
    o->count++;
    o->last_ms = r->time_ms;
    pthread_mutex_unlock(&s->mu);
}

/* --- flushing --- */

struct batch {
    struct owned_record *rows;
    size_t n, cap;
};

static struct owned_record *batch_add(struct batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap == 0 ? 16 : 2 * b->cap;
        b->rows = mem_realloc(b->rows, sizeof *b->rows * b->cap);
    }
    return &b->rows[b->n++];
}

static int batch_tx(struct store_tx *tx, void *arg)
{
    struct batch *b = arg;
    struct audit_record *r = mem_alloc(sizeof *r * (b->n > 0 ? b->n : 1));
    for (size_t i = 0; i < b->n; i++) {
        r[i] = b->rows[i].r;
    }
    int rv = audit_insert_many_tx(tx, r, b->n);
    mem_free(r);
    return rv;
}

static void log_first(const struct audit_record *r)
{
    if (r->class_uid == AUDIT_CLASS_AUTHENTICATION) {
        LOG_WARN("authn: refused a call to %s from %s: %s", r->operation, r->source, r->message);
    } else if (!r->success) {
        LOG_WARN("audit: %s by %s (%s) from %s failed with status %d: %s", r->operation, r->actor_name,
                 r->actor_id, r->source, r->status_code, r->message);
    }
}

/* Under the lock: move what is due into @b. */
static void collect(struct audit_sink *s, int64_t now, bool close_window, struct batch *b)
{
    for (unsigned i = 0; i < s->n_entries; i++) {
        struct entry *e = &s->entries[i];
        if (e->written == 0) {
            struct owned_record *o = batch_add(b);
            owned_copy(o, &e->rec.r);
            o->r.time_ms = e->first_ms;
            e->written = 1;
        }
    }
    if (!close_window && now - s->window_start_ms < (int64_t)s->cfg.window_ms) {
        return;
    }
    for (unsigned i = 0; i < s->n_entries; i++) {
        struct entry *e = &s->entries[i];
        if (e->count > e->written) {
            struct owned_record *o = batch_add(b);
            owned_copy(o, &e->rec.r);
            o->r.count = (int64_t)(e->count - e->written);
            o->r.start_time_ms = e->repeat_first_ms;
            o->r.time_ms = e->last_ms;
            o->r.request_id = ""; /* the repeats carried request ids of their own */
            s->stats.aggregated += e->count - e->written;
        }
        owned_free(&e->rec);
    }
    for (int c = 0; c < 2; c++) {
        struct overflow *ov = &s->ovf[c];
        if (ov->count == 0) {
            continue;
        }
        char msg[200];
        snprintf(msg, sizeof msg,
                 "%" PRIu64
                 " further refused or failed calls from other sources and for other reasons (more than "
                 "%u distinct events in the window)",
                 ov->count, s->cfg.max_keys);
        struct audit_record r = {.time_ms = ov->last_ms,
                                 .class_uid = c == 1 ? AUDIT_CLASS_AUTHENTICATION : AUDIT_CLASS_API_ACTIVITY,
                                 .activity = c == 1 ? AUDIT_CREATE : AUDIT_OTHER,
                                 .actor_kind = "unknown",
                                 .success = false,
                                 .status_code = 0,
                                 .message = msg,
                                 .source = "(many)"};
        struct owned_record *o = batch_add(b);
        owned_copy(o, &r);
        o->r.count = (int64_t)ov->count;
        o->r.start_time_ms = ov->first_ms;
        s->stats.overflow += ov->count;
        ov->count = 0;
    }
    s->n_entries = 0;
    memset(s->index, 0, sizeof *s->index * 2 * s->cfg.max_keys);
    s->window_start_ms = now;
}

static void write_batch(struct audit_sink *s, struct batch *b)
{
    if (b->n == 0) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct audit_record *r = &b->rows[i].r;
        if (r->count > 1) {
            LOG_WARN("audit: %" PRId64 " more like this in %" PRId64 " ms (%s from %s, status %d): %s",
                     r->count, r->time_ms - r->start_time_ms,
                     r->operation[0] != '\0' ? r->operation : "calls", r->source, r->status_code, r->message);
        } else {
            log_first(r);
        }
    }
    char errmsg[GERR_MSG_SIZE] = "";
    int rv = s->writer != NULL ? store_writer_run(s->writer, batch_tx, b, errmsg) : 0;
    pthread_mutex_lock(&s->mu);
    if (rv == 0) {
        s->stats.rows_written += b->n;
    } else {
        s->stats.write_failures++;
    }
    pthread_mutex_unlock(&s->mu);
    if (rv != 0) {
        LOG_WARN("audit: %zu aggregated audit row(s) could not be written and are dropped: %s", b->n,
                 errmsg[0] != '\0' ? errmsg : gerr_str(rv));
    }
    for (size_t i = 0; i < b->n; i++) {
        owned_free(&b->rows[i]);
    }
    b->n = 0;
}

void audit_sink_flush(struct audit_sink *s, bool close_window)
{
    struct batch b = {0};
    struct clock *clk = clock_system();
    pthread_mutex_lock(&s->mu);
    collect(s, (int64_t)clk->wall_ms(clk), close_window, &b);
    pthread_mutex_unlock(&s->mu);
    write_batch(s, &b);
    mem_free(b.rows);
}

static void *sink_main(void *arg)
{
    struct audit_sink *s = arg;
    struct batch b = {0};
    struct clock *clk = clock_system();
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_mono_deadline(&ts, s->cfg.flush_ms);
        int rc = 0;
        while (!s->stopping && rc != ETIMEDOUT) {
            rc = clock_cond_wait_mono(&s->cond, &s->mu, &ts);
        }
        collect(s, (int64_t)clk->wall_ms(clk), s->stopping, &b);
        pthread_mutex_unlock(&s->mu);
        write_batch(s, &b);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    mem_free(b.rows);
    return NULL;
}

struct audit_sink *audit_sink_start(struct store_writer *w, const struct audit_sink_config *cfg)
{
    struct audit_sink *s = mem_zalloc(sizeof *s);
    s->cfg = *cfg;
    if (s->cfg.max_keys == 0) {
        s->cfg.max_keys = 1;
    }
    if (s->cfg.flush_ms == 0) {
        s->cfg.flush_ms = 1000;
    }
    s->writer = w;
    s->entries = mem_zalloc(sizeof *s->entries * s->cfg.max_keys);
    s->index = mem_zalloc(sizeof *s->index * 2 * s->cfg.max_keys);
    struct clock *clk = clock_system();
    s->window_start_ms = (int64_t)clk->wall_ms(clk);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, sink_main, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        mem_free(s->entries);
        mem_free(s->index);
        mem_free(s);
        return NULL;
    }
    return s;
}

void audit_sink_stop(struct audit_sink *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    for (unsigned i = 0; i < s->n_entries; i++) {
        owned_free(&s->entries[i].rec);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    mem_free(s->entries);
    mem_free(s->index);
    mem_free(s);
}

void audit_sink_stats(struct audit_sink *s, struct audit_sink_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}
