/* The in-memory model of one API kind (api/services/kind_model.h). */
#include "api/services/kind_model.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/gate.h"
#include "api/services/model_read.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

struct kind_model {
    struct kind_model_config cfg;
    struct feed *feed;
    struct feed_sub sub;
    pthread_rwlock_t lock;            /* readers: kind_model_read; the writer: the feed thread */
    struct kind_model_entry *entries; /* sorted by (ns, name); each field mem_alloc'd / unpacked */
    size_t n, cap;
    uint64_t rev;
    bool ready, need_reload;
    uint64_t reloaded_ms; /* the feed thread's last reload (clock_mono_ms), for reload_every_ms */
    atomic_uint_fast64_t reads;
    /* Batched re-reads (cfg.batch_where): the keys marked since the last on_applied (feed thread
     * only), mem_alloc'd; duplicates allowed. */
    char **dirty;
    size_t n_dirty, cap_dirty;
};

static const char *col(const struct proto_rows *r, size_t i, int c)
{
    if (c == KIND_MODEL_NO_COL) {
        return "";
    }
    const struct proto_value *v = proto_rows_at(r, i, (unsigned)c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static void entry_free(struct kind_model_entry *e)
{
    mem_free((char *)e->ns);
    mem_free((char *)e->name);
    mem_free((char *)e->key);
    mem_free((char *)e->parent);
    mem_free((char *)e->labels);
    mem_free((char *)e->aux);
    if (e->msg != NULL) {
        protobuf_c_message_free_unpacked((ProtobufCMessage *)e->msg, NULL);
    }
}

/* Row @i as an entry; false if it cannot be packed or unpacked. */
static bool entry_from_row(struct kind_model *m, const struct proto_rows *r, size_t i,
                           struct kind_model_entry *e)
{
    size_t len = 0;
    uint8_t *bytes = m->cfg.pack(r, i, &len);
    if (bytes == NULL) {
        return false;
    }
    e->msg = protobuf_c_message_unpack(m->cfg.desc, NULL, len, bytes);
    mem_free(bytes);
    if (e->msg == NULL) {
        return false;
    }
    e->ns = mem_strdup(col(r, i, m->cfg.ns_col));
    e->name = mem_strdup(col(r, i, (int)m->cfg.name_col));
    e->key = mem_strdup(col(r, i, (int)m->cfg.key_col));
    e->parent = mem_strdup(col(r, i, m->cfg.parent_kind != NULL ? m->cfg.parent_col : KIND_MODEL_NO_COL));
    e->labels = mem_strdup(col(r, i, m->cfg.labels_col));
    e->aux = mem_strdup(col(r, i, m->cfg.has_aux ? (int)m->cfg.aux_col : KIND_MODEL_NO_COL));
    return true;
}

static int cmp_key(const char *ns_a, const char *name_a, const char *ns_b, const char *name_b)
{
    int c = strcmp(ns_a, ns_b);
    return c != 0 ? c : strcmp(name_a, name_b);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct kind_model_entry *x = a, *y = b;
    return cmp_key(x->ns, x->name, y->ns, y->name);
}

/* The first index in @es[0..@n) whose (ns, name) is not below (@ns, @name); *@eq: it is equal. */
static size_t lower(const struct kind_model_entry *es, size_t n, const char *ns, const char *name, bool *eq)
{
    size_t lo = 0, hi = n;
    *eq = false;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = cmp_key(es[mid].ns, es[mid].name, ns, name);
        if (c == 0) {
            *eq = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void clear(struct kind_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        entry_free(&m->entries[i]);
    }
    m->n = 0;
}

/* Feed thread: forget the marked keys. */
static void dirty_clear(struct kind_model *m)
{
    for (size_t i = 0; i < m->n_dirty; i++) {
        mem_free(m->dirty[i]);
    }
    m->n_dirty = 0;
}

static void dirty_add(struct kind_model *m, const char *key)
{
    if (m->n_dirty == m->cap_dirty) {
        m->cap_dirty = m->cap_dirty != 0 ? m->cap_dirty * 2 : 16;
        m->dirty = mem_realloc(m->dirty, sizeof *m->dirty * m->cap_dirty);
    }
    m->dirty[m->n_dirty++] = mem_strdup(key);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Under the write lock: @e (taken) replaces the entry of its namespace and name or is inserted in
 * order. */
static void put(struct kind_model *m, struct kind_model_entry *e)
{
    bool eq = false;
    size_t at = lower(m->entries, m->n, e->ns, e->name, &eq);
    if (eq) {
        entry_free(&m->entries[at]);
        m->entries[at] = *e;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap != 0 ? m->cap * 2 : 16;
        m->entries = mem_realloc(m->entries, sizeof *m->entries * m->cap);
    }
    memmove(&m->entries[at + 1], &m->entries[at], sizeof *m->entries * (m->n - at));
    m->entries[at] = *e;
    m->n++;
}

/* Under the write lock: remove the entries @drop_it picks (in place, keeping the order). */
static void drop_if(struct kind_model *m, bool (*drop_it)(const struct kind_model_entry *e, const char *arg),
                    const char *arg)
{
    size_t out = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (drop_it(&m->entries[i], arg)) {
            entry_free(&m->entries[i]);
        } else {
            m->entries[out++] = m->entries[i];
        }
    }
    m->n = out;
}

static bool key_is(const struct kind_model_entry *e, const char *key)
{
    return strcmp(e->key, key) == 0;
}

static bool parent_is(const struct kind_model_entry *e, const char *parent)
{
    return strcmp(e->parent, parent) == 0;
}

static const char *event_key(const struct feed_event *ev, enum kind_model_key k)
{
    return k == KIND_MODEL_KEY_NS ? ev->ns : ev->object_id;
}

/* Feed thread: every row and the revision, in one statement; then swapped in. */
static int reload(struct kind_model *m, struct store_client *cl)
{
    char sql[1024];
    snprintf(
        sql, sizeof sql,
        "SELECT %s, rev FROM (SELECT revision AS rev FROM cluster_revision WHERE id = 1) LEFT JOIN %s ON 1",
        m->cfg.cols, m->cfg.table);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    m->reloaded_ms = clock_mono_ms(clock_system());
    int rv = store_client_query(cl, sql, NULL, 0, &rows);
    if (rv != 0 || rows.n_rows == 0) {
        proto_rows_close(&rows);
        return rv != 0 ? rv : GERR_NOTFOUND;
    }
    uint64_t rev = (uint64_t)proto_rows_at(&rows, 0, m->cfg.n_cols)->u.i;
    size_t cap = rows.n_rows + 1; /* before proto_rows_close, which zeroes n_rows */
    struct kind_model_entry *es = mem_zalloc(sizeof *es * cap);
    size_t n = 0;
    for (size_t i = 0; i < rows.n_rows; i++) {
        if (proto_rows_at(&rows, i, m->cfg.key_col)->type == PROTO_NULL) {
            continue; /* no row at all: the LEFT JOIN's one row */
        }
        if (entry_from_row(m, &rows, i, &es[n])) {
            n++;
        }
    }
    proto_rows_close(&rows);
    qsort(es, n, sizeof *es, cmp_entry);
    pthread_rwlock_wrlock(&m->lock);
    clear(m);
    mem_free(m->entries);
    m->entries = es;
    m->n = n;
    m->cap = cap;
    m->rev = rev;
    m->ready = true;
    m->need_reload = false;
    pthread_rwlock_unlock(&m->lock);
    dirty_clear(m); /* the snapshot holds every row as of @rev or later */
    return 0;
}

static void on_resync(struct store_client *cl, uint64_t rev, void *data)
{
    struct kind_model *m = data;
    (void)rev;
    pthread_rwlock_wrlock(&m->lock);
    m->ready = false;
    m->need_reload = true;
    pthread_rwlock_unlock(&m->lock);
    if (reload(m, cl) != 0) {
        LOG_WARN("%s model: cannot load the %s table (%s): trying again", m->cfg.what, m->cfg.table,
                 cl->errmsg);
    }
}

/* Feed thread: the rows WHERE @where (one parameter, @value) read again; they replace the entries
 * @stale picks for @value (every entry of the key, or of the parent). */
static void reread(struct kind_model *m, struct store_client *cl, const struct feed_event *ev,
                   const char *where, bool (*stale)(const struct kind_model_entry *e, const char *arg),
                   const char *value)
{
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE %s", m->cfg.cols, m->cfg.table, where);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(value)};
    int rv = store_client_query(cl, sql, p, 1, &rows);
    struct kind_model_entry *es = mem_zalloc(sizeof *es * (rows.n_rows + 1));
    size_t n = 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        if (entry_from_row(m, &rows, i, &es[n])) {
            n++;
        }
    }
    proto_rows_close(&rows);
    pthread_rwlock_wrlock(&m->lock);
    if (rv != 0) {
        m->need_reload = true; /* readers use the store until on_applied reloads */
    } else {
        drop_if(m, stale, value);
        for (size_t i = 0; i < n; i++) {
            put(m, &es[i]);
        }
        m->rev = ev->revision;
    }
    pthread_rwlock_unlock(&m->lock);
    mem_free(es);
    if (rv != 0) {
        LOG_WARN("%s model: cannot re-read the rows of \"%.63s\" (%s): reloading", m->cfg.what, value,
                 cl->errmsg);
    }
}

static bool marked(const struct kind_model *m, const struct feed_event *ev)
{
    for (size_t i = 0; i < m->cfg.n_marks; i++) {
        const struct kind_model_mark *k = &m->cfg.marks[i];
        if (strcmp(ev->kind, k->kind) == 0 && (k->type == NULL || strcmp(ev->type, k->type) == 0)) {
            return true;
        }
    }
    return false;
}

/* Feed thread, batched re-reads: the dirty keys' rows read again in one statement (@cfg.batch_where,
 * the keys as one JSON array); they replace every entry of those keys and the model moves to @rev.
 * A read that fails marks the model for reloading (readers use the store meanwhile). */
static void reread_dirty(struct kind_model *m, struct store_client *cl, uint64_t rev)
{
    qsort(m->dirty, m->n_dirty, sizeof *m->dirty, cmp_str);
    size_t u = 0;
    bool bad_key = false;
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_dirty; i++) {
        if (u > 0 && strcmp(m->dirty[u - 1], m->dirty[i]) == 0) {
            mem_free(m->dirty[i]);
            continue;
        }
        m->dirty[u++] = m->dirty[i];
        if (json_array_append_new(a, json_string(m->dirty[u - 1])) != 0) {
            bad_key = true; /* not UTF-8: it cannot be asked for, so reload the whole model */
        }
    }
    m->n_dirty = u;
    char *keys = bad_key ? NULL : json_dumps(a, JSON_COMPACT);
    json_decref(a);
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE %s", m->cfg.cols, m->cfg.table, m->cfg.batch_where);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(keys != NULL ? keys : "[]")};
    int rv = keys != NULL ? store_client_query(cl, sql, p, 1, &rows) : GERR_NOMEM;
    free(keys);
    struct kind_model_entry *es = mem_zalloc(sizeof *es * (rows.n_rows + 1));
    size_t n = 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        if (entry_from_row(m, &rows, i, &es[n])) {
            n++;
        }
    }
    proto_rows_close(&rows);
    pthread_rwlock_wrlock(&m->lock);
    if (rv != 0) {
        m->need_reload = true;
    } else {
        size_t out = 0;
        for (size_t i = 0; i < m->n; i++) {
            const char *k = m->entries[i].key;
            if (bsearch(&k, m->dirty, m->n_dirty, sizeof *m->dirty, cmp_str) != NULL) {
                entry_free(&m->entries[i]);
            } else {
                m->entries[out++] = m->entries[i];
            }
        }
        m->n = out;
        for (size_t i = 0; i < n; i++) {
            put(m, &es[i]);
        }
        if (rev > m->rev) {
            m->rev = rev;
        }
    }
    pthread_rwlock_unlock(&m->lock);
    mem_free(es);
    if (rv != 0) {
        LOG_WARN("%s model: cannot read %zu changed %s rows (%s): reloading", m->cfg.what, m->n_dirty,
                 m->cfg.table, cl->errmsg);
    }
    dirty_clear(m);
}

static void on_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    struct kind_model *m = data;
    bool own = strcmp(ev->kind, m->cfg.kind) == 0;
    if (m->cfg.batch_where != NULL) {
        if (!own && !marked(m, ev)) {
            return;
        }
        pthread_rwlock_rdlock(&m->lock);
        bool skip = !m->ready || m->need_reload || ev->revision <= m->rev;
        pthread_rwlock_unlock(&m->lock);
        if (!skip) {
            dirty_add(m, event_key(ev, m->cfg.key));
        }
        return;
    }
    bool parent = !own && m->cfg.parent_kind != NULL && strcmp(ev->kind, m->cfg.parent_kind) == 0 &&
                  strcmp(ev->type, "DELETED") == 0;
    bool all = !own && !parent && m->cfg.reload_on_delete != NULL &&
               strcmp(ev->kind, m->cfg.reload_on_delete) == 0 && strcmp(ev->type, "DELETED") == 0;
    if (!own && !parent && !all) {
        return;
    }
    pthread_rwlock_rdlock(&m->lock);
    bool skip = !m->ready || m->need_reload || ev->revision <= m->rev;
    pthread_rwlock_unlock(&m->lock);
    if (skip) {
        return;
    }
    if (all) {
        /* a snapshot at a revision at or past this event's: later events up to it are skipped */
        if (reload(m, cl) != 0) {
            pthread_rwlock_wrlock(&m->lock);
            m->need_reload = true; /* readers use the store until on_applied reloads */
            pthread_rwlock_unlock(&m->lock);
            LOG_WARN("%s model: cannot reload the %s table (%s): trying again", m->cfg.what, m->cfg.table,
                     cl->errmsg);
        }
    } else if (parent) {
        reread(m, cl, ev, m->cfg.parent_where, parent_is, event_key(ev, m->cfg.parent_key));
    } else {
        reread(m, cl, ev, m->cfg.key_where, key_is, event_key(ev, m->cfg.key));
    }
}

static void on_applied(struct store_client *cl, uint64_t rev, void *data)
{
    struct kind_model *m = data;
    pthread_rwlock_rdlock(&m->lock);
    bool again = m->need_reload;
    pthread_rwlock_unlock(&m->lock);
    again = again || (m->cfg.reload_every_ms != 0 &&
                      clock_mono_ms(clock_system()) - m->reloaded_ms >= m->cfg.reload_every_ms);
    if (again && reload(m, cl) != 0) {
        return;
    }
    if (!again && m->n_dirty > 0) {
        reread_dirty(m, cl, rev);
    }
    pthread_rwlock_wrlock(&m->lock);
    if (m->ready && !m->need_reload && rev > m->rev) {
        m->rev = rev;
    }
    pthread_rwlock_unlock(&m->lock);
}

struct kind_model *kind_model_new(const struct kind_model_config *cfg)
{
    struct kind_model *m = mem_zalloc(sizeof *m);
    m->cfg = *cfg;
    /* Prefer writers: glibc's default lets overlapping List readers keep the feed thread's
     * update (and so every subscriber after this one) waiting indefinitely. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&m->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return m;
}

void kind_model_attach_feed(struct kind_model *m, struct feed *f)
{
    m->feed = f;
    m->sub =
        (struct feed_sub){.on_resync = on_resync, .on_event = on_event, .on_applied = on_applied, .data = m};
    feed_subscribe(f, &m->sub);
}

struct feed *kind_model_feed(struct kind_model *m)
{
    return m != NULL ? m->feed : NULL;
}

void kind_model_free(struct kind_model *m)
{
    if (m == NULL) {
        return;
    }
    clear(m);
    mem_free(m->entries);
    dirty_clear(m);
    mem_free(m->dirty);
    pthread_rwlock_destroy(&m->lock);
    mem_free(m);
}

static bool read_view(struct kind_model *m, uint64_t need, bool count,
                      void (*fn)(const struct kind_model_view *v, void *arg), void *arg)
{
    if (m == NULL) {
        return false;
    }
    pthread_rwlock_rdlock(&m->lock);
    bool ok = m->ready && !m->need_reload && m->rev >= need;
    if (ok) {
        if (count) {
            atomic_fetch_add(&m->reads, 1);
        }
        struct kind_model_view v = {.entries = m->entries, .n = m->n, .rev = m->rev};
        fn(&v, arg);
    }
    pthread_rwlock_unlock(&m->lock);
    return ok;
}

bool kind_model_read(struct kind_model *m, uint64_t need,
                     void (*fn)(const struct kind_model_view *v, void *arg), void *arg)
{
    return read_view(m, need, true, fn, arg);
}

bool kind_model_peek(struct kind_model *m, void (*fn)(const struct kind_model_view *v, void *arg), void *arg)
{
    return read_view(m, 0, false, fn, arg);
}

static int cmp_entry_name(const void *a, const void *b)
{
    const struct kind_model_entry *x = *(const struct kind_model_entry *const *)a;
    const struct kind_model_entry *y = *(const struct kind_model_entry *const *)b;
    return strcmp(x->name, y->name);
}

const struct kind_model_entry **kind_model_children(const struct kind_model_view *v, const char *parent,
                                                    size_t *n)
{
    const struct kind_model_entry **out = NULL;
    size_t cap = 0;
    *n = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->entries[i].parent, parent) != 0) {
            continue;
        }
        if (*n == cap) {
            cap = cap == 0 ? 8 : cap * 2;
            out = mem_realloc(out, sizeof *out * cap);
        }
        out[(*n)++] = &v->entries[i];
    }
    if (*n > 1) {
        qsort(out, *n, sizeof *out, cmp_entry_name);
    }
    return out;
}

const struct kind_model_entry *kind_model_find(const struct kind_model_view *v, const char *ns,
                                               const char *name)
{
    bool eq = false;
    size_t at = lower(v->entries, v->n, ns, name, &eq);
    return eq ? &v->entries[at] : NULL;
}

size_t kind_model_after(const struct kind_model_view *v, const char *ns, const char *after)
{
    bool eq = false;
    size_t at = lower(v->entries, v->n, ns, after, &eq);
    return eq ? at + 1 : at;
}

bool kind_model_page_if(const struct kind_model_view *v, const char *ns, const char *after, size_t limit,
                        bool (*keep)(const struct kind_model_entry *e, void *arg), void *arg,
                        const ProtobufCMessage **out, size_t *n)
{
    *n = 0;
    for (size_t i = kind_model_after(v, ns, after); i < v->n && strcmp(v->entries[i].ns, ns) == 0; i++) {
        if (keep != NULL && !keep(&v->entries[i], arg)) {
            continue;
        }
        if (*n == limit) {
            return true;
        }
        out[(*n)++] = v->entries[i].msg;
    }
    return false;
}

bool kind_model_page(const struct kind_model_view *v, const char *ns, const char *after, size_t limit,
                     const ProtobufCMessage **out, size_t *n)
{
    return kind_model_page_if(v, ns, after, limit, NULL, NULL, out, n);
}

uint8_t *kind_model_pack(const ProtobufCMessage *msg, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(msg);
    uint8_t *out = mem_alloc(*len + 1);
    protobuf_c_message_pack(msg, out);
    return out;
}

struct get_arg {
    const char *ns, *name;
    uint8_t *bytes;
    size_t len;
    uint64_t rev;
};

/* Under the model's lock: only copy out (the answer, and any audit a refusal writes, come after). */
static void get_under_lock(const struct kind_model_view *v, void *arg)
{
    struct get_arg *a = arg;
    a->rev = v->rev;
    const struct kind_model_entry *e = kind_model_find(v, a->ns, a->name);
    if (e != NULL) {
        a->bytes = kind_model_pack(e->msg, &a->len);
    }
}

bool kind_model_get(struct kind_model *m, uint64_t need, const char *ns, const char *name, uint8_t **bytes,
                    size_t *len, uint64_t *rev)
{
    struct get_arg a = {.ns = ns, .name = name};
    bool ok = kind_model_read(m, need, get_under_lock, &a);
    *bytes = a.bytes;
    *len = a.len;
    *rev = a.rev;
    return ok;
}

bool kind_model_wait(const struct kind_reads *rd, struct gate_ctx *ctx, const Gantry__V1__ReadOptions *o,
                     uint64_t *need, bool *answered)
{
    bool model = rd != NULL && rd->model != NULL && !rd->store_reads;
    enum model_gate g = model_read_gate(ctx, rd != NULL ? kind_model_feed(rd->model) : NULL, model, o, need);
    *answered = g == MODEL_GATE_ANSWERED;
    return g == MODEL_GATE_MODEL;
}

bool kind_model_serve_get(const struct kind_reads *rd, struct gate_ctx *ctx, const Gantry__V1__ReadOptions *o,
                          const char *ns, const char *name, const char *not_found)
{
    uint64_t need = 0, rev = 0;
    bool answered = false;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (!kind_model_wait(rd, ctx, o, &need, &answered) ||
        !kind_model_get(rd->model, need, ns, name, &bytes, &len, &rev)) {
        return answered;
    }
    char trailer[24];
    snprintf(trailer, sizeof trailer, "%" PRIu64, rev);
    grpc_call_set_trailer(ctx->call, MODEL_REVISION_TRAILER, trailer);
    if (bytes == NULL) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "%s", not_found);
    } else {
        grpc_call_finish_async_bytes(ctx->call, 0, NULL, bytes, len);
        mem_free(bytes);
    }
    return true;
}

struct page_arg {
    struct gate_ctx *ctx;
    const char *ns, *after;
    size_t limit;
    kind_model_page_fn answer;
};

static void page_under_lock(const struct kind_model_view *v, void *arg)
{
    const struct page_arg *a = arg;
    const ProtobufCMessage **msgs = mem_zalloc(sizeof *msgs * (a->limit + 1));
    size_t n = 0;
    bool more = kind_model_page(v, a->ns, a->after, a->limit, msgs, &n);
    /* the last entry of the page: the one before the first that did not fit */
    const char *token = more ? v->entries[kind_model_after(v, a->ns, a->after) + n - 1].name : "";
    a->answer(a->ctx, msgs, n, token, v->rev);
    mem_free(msgs);
}

bool kind_model_serve_page(const struct kind_reads *rd, struct gate_ctx *ctx,
                           const Gantry__V1__ReadOptions *o, const char *ns, const char *after, size_t limit,
                           kind_model_page_fn answer)
{
    uint64_t need = 0;
    bool answered = false;
    struct page_arg a = {.ctx = ctx, .ns = ns, .after = after, .limit = limit, .answer = answer};
    return (kind_model_wait(rd, ctx, o, &need, &answered) &&
            kind_model_read(rd->model, need, page_under_lock, &a)) ||
           answered;
}

uint64_t kind_model_reads(struct kind_model *m)
{
    return m != NULL ? atomic_load(&m->reads) : 0;
}
