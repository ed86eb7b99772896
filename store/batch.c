/* Deferred work of a writer batch (store/batch.h). */
#include "store/batch.h"

#include <stdio.h>
#include <string.h>

#include "lib/mem.h"
#include "store/proto.h"

void store_batch__init(struct store_batch *b, unsigned n_calls)
{
    memset(b, 0, sizeof *b);
    b->n_calls = n_calls;
    b->results = mem_zalloc(sizeof *b->results * (n_calls > 0 ? n_calls : 1));
    for (unsigned i = 0; i < n_calls; i++) {
        buf_init(&b->results[i].response);
    }
}

static void row_free(struct store_batch_row *r, unsigned ncols)
{
    for (unsigned c = 0; c < ncols; c++) {
        struct proto_value *v = &r->v[c];
        if (v->type == PROTO_TEXT || v->type == PROTO_BLOB || v->type == PROTO_ISO8601) {
            mem_free((void *)v->u.b.s);
        }
    }
    mem_free(r->v);
    r->v = NULL;
}

static void table_truncate(struct store_batch_table *t, size_t n)
{
    while (t->n > n) {
        row_free(&t->rows[--t->n], t->t->ncols);
    }
}

void store_batch__drop_memos(struct store_batch *b)
{
    for (size_t i = 0; i < b->n_memos; i++) {
        mem_free(b->memos[i].key);
        if (b->memos[i].free_fn != NULL) {
            b->memos[i].free_fn(b->memos[i].v);
        }
    }
    b->n_memos = 0;
    b->memo_class = NULL;
}

void *store_tx_memo(struct store_tx *tx, const char *key)
{
    struct store_batch *b = tx->batch;
    for (size_t i = 0; b != NULL && i < b->n_memos; i++) {
        if (strcmp(b->memos[i].key, key) == 0) {
            return b->memos[i].v;
        }
    }
    return NULL;
}

bool store_tx_memo_set(struct store_tx *tx, const char *key, void *v, void (*free_fn)(void *))
{
    struct store_batch *b = tx->batch;
    if (b == NULL || strlen(key) > STORE_MEMO_KEY_MAX) {
        return false;
    }
    for (size_t i = 0; i < b->n_memos; i++) {
        if (strcmp(b->memos[i].key, key) == 0) {
            if (b->memos[i].free_fn != NULL && b->memos[i].v != v) {
                b->memos[i].free_fn(b->memos[i].v);
            }
            b->memos[i].v = v;
            b->memos[i].free_fn = free_fn;
            return true;
        }
    }
    if (b->n_memos == b->cap_memos) {
        b->cap_memos = b->cap_memos == 0 ? 4 : b->cap_memos * 2;
        b->memos = mem_realloc(b->memos, sizeof *b->memos * b->cap_memos);
    }
    b->memos[b->n_memos++] = (struct store_batch_memo){.key = mem_strdup(key), .v = v, .free_fn = free_fn};
    return true;
}

void store_batch__reset(struct store_batch *b)
{
    store_batch__drop_memos(b);
    for (unsigned i = 0; i < b->n_tables; i++) {
        table_truncate(&b->tables[i], 0);
    }
    for (unsigned i = 0; i < b->n_calls; i++) {
        b->results[i].set = false;
        b->results[i].revision = 0;
        buf_reset(&b->results[i].response);
    }
    b->have_revision = false;
    b->base_revision = b->revision = 0;
    b->call = 0;
}

void store_batch__close(struct store_batch *b)
{
    store_batch__reset(b);
    for (unsigned i = 0; i < b->n_tables; i++) {
        mem_free(b->tables[i].rows);
    }
    for (unsigned i = 0; i < b->n_calls; i++) {
        buf_close(&b->results[i].response);
    }
    mem_free(b->results);
    mem_free(b->memos);
    memset(b, 0, sizeof *b);
}

void store_batch__mark(const struct store_batch *b, struct store_batch_mark *m)
{
    memset(m, 0, sizeof *m);
    m->revision = b->have_revision ? b->revision : -1; /* -1: not read yet */
    for (unsigned i = 0; i < b->n_tables; i++) {
        m->rows[i] = b->tables[i].n;
    }
}

void store_batch__rollback(struct store_batch *b, const struct store_batch_mark *m)
{
    /* Revisions the call took are given back. When the call was the one that read the revision, the
     * value read stays valid: nothing the call deferred reached the store. */
    b->revision = m->revision >= 0 ? m->revision : b->base_revision;
    for (unsigned i = 0; i < b->n_tables; i++) {
        table_truncate(&b->tables[i], i < STORE_BATCH_TABLES ? m->rows[i] : 0);
    }
    if (b->call < b->n_calls) {
        b->results[b->call].set = false;
        buf_reset(&b->results[b->call].response);
    }
}

int store_batch__next_revision(struct store_tx *tx, int64_t *rev)
{
    struct store_batch *b = tx->batch;
    if (!b->have_revision) {
        int64_t r = 0;
        int rv = store_tx_query_int(tx, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &r);
        if (rv != 0) {
            return rv;
        }
        b->have_revision = true;
        b->base_revision = b->revision = r;
    }
    *rev = ++b->revision;
    return 0;
}

void store_tx_seed_revision(struct store_tx *tx, int64_t revision)
{
    struct store_batch *b = tx->batch;
    if (b != NULL && !b->have_revision) {
        b->have_revision = true;
        b->base_revision = b->revision = revision;
    }
}

static struct store_batch_table *table_of(struct store_batch *b, const struct store_table *t)
{
    for (unsigned i = 0; i < b->n_tables; i++) {
        if (b->tables[i].t == t) {
            return &b->tables[i];
        }
    }
    if (b->n_tables == STORE_BATCH_TABLES) {
        return NULL;
    }
    struct store_batch_table *bt = &b->tables[b->n_tables++];
    memset(bt, 0, sizeof *bt);
    bt->t = t;
    return bt;
}

static void copy_value(struct proto_value *dst, const struct proto_value *src)
{
    *dst = *src;
    if (src->type == PROTO_TEXT || src->type == PROTO_ISO8601) {
        char *s = mem_alloc(src->u.b.n + 1);
        memcpy(s, src->u.b.s, src->u.b.n);
        s[src->u.b.n] = '\0';
        dst->u.b.s = s;
    } else if (src->type == PROTO_BLOB) {
        char *s = mem_alloc(src->u.b.n > 0 ? src->u.b.n : 1);
        if (src->u.b.n > 0) {
            memcpy(s, src->u.b.s, src->u.b.n);
        }
        dst->u.b.s = s;
    }
}

int store_tx_insert(struct store_tx *tx, const struct store_table *t, const struct proto_value *row)
{
    if (tx->batch == NULL) {
        struct buf sql;
        buf_init(&sql);
        buf_printf(&sql, "%s (", t->insert);
        for (unsigned c = 0; c < t->ncols; c++) {
            buf_printf(&sql, c == 0 ? "?" : ", ?");
        }
        buf_printf(&sql, ")");
        int rv = store_tx_exec(tx, (const char *)sql.data, row, t->ncols, NULL);
        buf_close(&sql);
        return rv;
    }
    struct store_batch_table *bt = table_of(tx->batch, t);
    if (bt == NULL) {
        gerr_set(store_tx_errmsg(tx), "store batch: more than %u tables of deferred rows",
                 STORE_BATCH_TABLES);
        return GERR_INTERNAL;
    }
    if (bt->n == bt->cap) {
        bt->cap = bt->cap == 0 ? 16 : 2 * bt->cap;
        bt->rows = mem_realloc(bt->rows, sizeof *bt->rows * bt->cap);
    }
    struct store_batch_row *r = &bt->rows[bt->n++];
    r->call = tx->batch->call;
    r->v = mem_alloc(sizeof *r->v * t->ncols);
    for (unsigned c = 0; c < t->ncols; c++) {
        copy_value(&r->v[c], &row[c]);
    }
    return 0;
}

void store_tx_set_result(struct store_tx *tx, const void *response, size_t len, int64_t revision)
{
    struct store_batch *b = tx->batch;
    if (b == NULL || b->call >= b->n_calls) {
        return;
    }
    struct store_batch_result *r = &b->results[b->call];
    buf_reset(&r->response);
    if (len > 0) {
        buf_append(&r->response, response, len);
    }
    r->revision = revision;
    r->set = true;
}

int store_batch__set_value(struct store_batch *b, const struct store_table *t, unsigned key_col, int64_t key,
                           unsigned col, const struct proto_value *value)
{
    for (unsigned i = 0; i < b->n_tables; i++) {
        struct store_batch_table *bt = &b->tables[i];
        if (bt->t != t) {
            continue;
        }
        for (size_t k = bt->n; k-- > 0;) {
            struct proto_value *v = bt->rows[k].v;
            if (v[key_col].type == PROTO_INTEGER && v[key_col].u.i == key) {
                struct proto_value *dst = &v[col];
                if (dst->type == PROTO_TEXT || dst->type == PROTO_BLOB || dst->type == PROTO_ISO8601) {
                    mem_free((void *)dst->u.b.s);
                }
                copy_value(dst, value);
                return 0;
            }
        }
    }
    return GERR_NOTFOUND;
}

void store_batch__savepoint_name(const struct store_batch *b, char out[16])
{
    snprintf(out, 16, "c%u", b->call);
}

int store_batch__exec(struct store_tx *tx, const struct store_stmt *stmts, unsigned n,
                      struct store_result *res)
{
    struct store_batch *b = tx->batch;
    struct buf sql;
    buf_init(&sql);
    if (b->savepoints && !b->savepoint_open) {
        char name[16];
        store_batch__savepoint_name(b, name);
        buf_printf(&sql, "SAVEPOINT %s;", name);
        b->savepoint_open = true; /* even if the statements after it fail: ROLLBACK TO it then */
    }
    int rv = 0;
    for (unsigned i = 0; rv == 0 && i < n; i++) {
        rv = store__sql_append(&sql, stmts[i].sql, stmts[i].params, stmts[i].n);
    }
    if (rv != 0) {
        gerr_set(store_tx_errmsg(tx), "a statement's values cannot be written as SQL literals");
    } else {
        buf_put_u8(&sql, 0);
        rv = store_conn_exec_sql(&tx->cl->conn, (const char *)sql.data, NULL, 0, res);
        if (rv != 0) {
            memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
        }
    }
    buf_close(&sql);
    return rv;
}

/* Text of one request at most this long; more rows go to the next request. */
#define FLUSH_TEXT_MAX (1u << 20)

static int flush_text(struct store_tx *tx, struct buf *sql)
{
    if (sql->len == 0) {
        return 0;
    }
    buf_put_u8(sql, 0);
    int rv = store_conn_exec_sql(&tx->cl->conn, (const char *)sql->data, NULL, 0, NULL);
    if (rv != 0) {
        memcpy(tx->cl->errmsg, tx->cl->conn.errmsg, sizeof tx->cl->errmsg);
    }
    buf_reset(sql);
    return rv;
}

int store_batch__flush(struct store_tx *tx)
{
    struct store_batch *b = tx->batch;
    struct buf sql;
    buf_init(&sql);
    int rv = 0;
    if (b->have_revision && b->revision != b->base_revision) {
        buf_printf(&sql, "UPDATE cluster_revision SET revision = %lld WHERE id = 1;", (long long)b->revision);
    }
    for (unsigned i = 0; rv == 0 && i < b->n_tables; i++) {
        struct store_batch_table *bt = &b->tables[i];
        for (size_t k = 0; rv == 0 && k < bt->n; k++) {
            if (k == 0 || sql.len > FLUSH_TEXT_MAX) {
                if (k > 0) {
                    sql.data[sql.len - 1] = ';'; /* end the statement begun with this table's rows */
                    rv = flush_text(tx, &sql);
                    if (rv != 0) {
                        break;
                    }
                }
                buf_printf(&sql, "%s ", bt->t->insert);
            }
            buf_append(&sql, "(", 1);
            for (unsigned c = 0; rv == 0 && c < bt->t->ncols; c++) {
                if (c > 0) {
                    buf_append(&sql, ",", 1);
                }
                rv = store__sql_literal(&sql, &bt->rows[k].v[c]);
            }
            buf_append(&sql, "),", 2);
        }
        if (rv == 0 && bt->n > 0) {
            sql.data[sql.len - 1] = ';';
        }
    }
    if (rv != 0 && store_tx_errmsg(tx)[0] == '\0') {
        gerr_set(store_tx_errmsg(tx), "a deferred row's values cannot be written as SQL literals");
    }
    if (rv == 0) {
        rv = flush_text(tx, &sql);
    }
    buf_close(&sql);
    return rv;
}
