/* The namespaces model (api/services/ns_model.h). */
#include "api/services/ns_model.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/mem.h"

struct ns_model {
    struct ns_model_config cfg;
    struct feed *feed;
    struct feed_sub sub;
    pthread_rwlock_t lock;          /* readers: ns_model_read; the writer: the feed thread */
    struct ns_model_entry *entries; /* sorted by name; each field mem_alloc'd / unpacked */
    size_t n, cap;
    uint64_t rev;
    bool ready, need_reload;
    atomic_uint_fast64_t reads;
};

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

static void entry_free(struct ns_model_entry *e)
{
    mem_free((char *)e->name);
    mem_free((char *)e->labels);
    if (e->msg != NULL) {
        protobuf_c_message_free_unpacked((ProtobufCMessage *)e->msg, NULL);
    }
}

/* Row @i as an entry; false if it cannot be packed or unpacked. */
static bool entry_from_row(struct ns_model *m, const struct proto_rows *r, size_t i, struct ns_model_entry *e)
{
    size_t len = 0;
    uint8_t *bytes = m->cfg.pack(r, i, &len);
    if (bytes == NULL) {
        return false;
    }
    e->msg = gantry__v1__namespace__unpack(NULL, len, bytes);
    mem_free(bytes);
    if (e->msg == NULL) {
        return false;
    }
    e->name = mem_strdup(col(r, i, m->cfg.name_col));
    e->labels = mem_strdup(col(r, i, m->cfg.labels_col));
    return true;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct ns_model_entry *)a)->name, ((const struct ns_model_entry *)b)->name);
}

static void clear(struct ns_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        entry_free(&m->entries[i]);
    }
    m->n = 0;
}

/* Under the write lock: @e (taken) replaces the entry of its name or is inserted in order. */
static void put(struct ns_model *m, struct ns_model_entry *e)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->entries[mid].name, e->name);
        if (c == 0) {
            entry_free(&m->entries[mid]);
            m->entries[mid] = *e;
            return;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (m->n == m->cap) {
        m->cap = m->cap != 0 ? m->cap * 2 : 16;
        m->entries = mem_realloc(m->entries, sizeof *m->entries * m->cap);
    }
    memmove(&m->entries[lo + 1], &m->entries[lo], sizeof *m->entries * (m->n - lo));
    m->entries[lo] = *e;
    m->n++;
}

/* Under the write lock: remove the entry named @name, if any. */
static void drop(struct ns_model *m, const char *name)
{
    struct ns_model_view v = {.entries = m->entries, .n = m->n};
    const struct ns_model_entry *e = ns_model_find(&v, name);
    if (e != NULL) {
        size_t at = (size_t)(e - m->entries);
        entry_free(&m->entries[at]);
        memmove(&m->entries[at], &m->entries[at + 1], sizeof *m->entries * (m->n - at - 1));
        m->n--;
    }
}

/* Feed thread: every namespace and the revision, in one statement; then swapped in. */
static int reload(struct ns_model *m, struct store_client *cl)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s, rev FROM (SELECT revision AS rev FROM cluster_revision WHERE id = 1) LEFT JOIN "
             "namespaces ON 1",
             m->cfg.cols);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(cl, sql, NULL, 0, &rows);
    if (rv != 0 || rows.n_rows == 0) {
        proto_rows_close(&rows);
        return rv != 0 ? rv : GERR_NOTFOUND;
    }
    uint64_t rev = (uint64_t)proto_rows_at(&rows, 0, m->cfg.n_cols)->u.i;
    struct ns_model_entry *es = mem_zalloc(sizeof *es * (rows.n_rows + 1));
    size_t n = 0;
    for (size_t i = 0; i < rows.n_rows; i++) {
        if (proto_rows_at(&rows, i, m->cfg.name_col)->type != PROTO_TEXT) {
            continue; /* no namespace at all: the LEFT JOIN's one row */
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
    m->cap = rows.n_rows + 1;
    m->rev = rev;
    m->ready = true;
    m->need_reload = false;
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static void on_resync(struct store_client *cl, uint64_t rev, void *data)
{
    struct ns_model *m = data;
    (void)rev;
    pthread_rwlock_wrlock(&m->lock);
    m->ready = false;
    m->need_reload = true;
    pthread_rwlock_unlock(&m->lock);
    if (reload(m, cl) != 0) {
        LOG_WARN("namespace model: cannot load the namespaces (%s): trying again", cl->errmsg);
    }
}

static void on_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    struct ns_model *m = data;
    if (strcmp(ev->kind, "Namespace") != 0) {
        return;
    }
    pthread_rwlock_rdlock(&m->lock);
    bool skip = !m->ready || m->need_reload || ev->revision <= m->rev;
    pthread_rwlock_unlock(&m->lock);
    if (skip) {
        return;
    }
    const char *name = ev->ns[0] != '\0' ? ev->ns : ev->object_id;
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM namespaces WHERE name = ?", m->cfg.cols);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(name)};
    int rv = store_client_query(cl, sql, p, 1, &rows);
    struct ns_model_entry e = {0};
    bool have = rv == 0 && rows.n_rows == 1 && entry_from_row(m, &rows, 0, &e);
    proto_rows_close(&rows);
    pthread_rwlock_wrlock(&m->lock);
    if (rv != 0) {
        m->need_reload = true; /* readers use the store until on_applied reloads */
    } else if (have) {
        put(m, &e);
        m->rev = ev->revision;
    } else {
        drop(m, name);
        m->rev = ev->revision;
    }
    pthread_rwlock_unlock(&m->lock);
    if (rv != 0) {
        LOG_WARN("namespace model: cannot read namespace \"%.63s\" (%s): reloading", name, cl->errmsg);
    }
}

static void on_applied(struct store_client *cl, uint64_t rev, void *data)
{
    struct ns_model *m = data;
    pthread_rwlock_rdlock(&m->lock);
    bool again = m->need_reload;
    pthread_rwlock_unlock(&m->lock);
    if (again && reload(m, cl) != 0) {
        return;
    }
    pthread_rwlock_wrlock(&m->lock);
    if (m->ready && !m->need_reload && rev > m->rev) {
        m->rev = rev;
    }
    pthread_rwlock_unlock(&m->lock);
}

struct ns_model *ns_model_new(const struct ns_model_config *cfg)
{
    struct ns_model *m = mem_zalloc(sizeof *m);
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

void ns_model_attach_feed(struct ns_model *m, struct feed *f)
{
    m->feed = f;
    m->sub =
        (struct feed_sub){.on_resync = on_resync, .on_event = on_event, .on_applied = on_applied, .data = m};
    feed_subscribe(f, &m->sub);
}

struct feed *ns_model_feed(struct ns_model *m)
{
    return m != NULL ? m->feed : NULL;
}

void ns_model_free(struct ns_model *m)
{
    if (m == NULL) {
        return;
    }
    clear(m);
    mem_free(m->entries);
    pthread_rwlock_destroy(&m->lock);
    mem_free(m);
}

bool ns_model_read(struct ns_model *m, uint64_t need, void (*fn)(const struct ns_model_view *v, void *arg),
                   void *arg)
{
    if (m == NULL) {
        return false;
    }
    pthread_rwlock_rdlock(&m->lock);
    bool ok = m->ready && !m->need_reload && m->rev >= need;
    if (ok) {
        atomic_fetch_add(&m->reads, 1);
        struct ns_model_view v = {.entries = m->entries, .n = m->n, .rev = m->rev};
        fn(&v, arg);
    }
    pthread_rwlock_unlock(&m->lock);
    return ok;
}

const struct ns_model_entry *ns_model_find(const struct ns_model_view *v, const char *name)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(v->entries[mid].name, name);
        if (c == 0) {
            return &v->entries[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

uint64_t ns_model_reads(struct ns_model *m)
{
    return m != NULL ? atomic_load(&m->reads) : 0;
}
