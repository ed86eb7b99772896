/* Two chained hashes of share lists: by sandbox id (each list owns its rows) and by grantee id
 * (each list points at rows the sandbox lists own). A sandbox has few grantees and a grantee few
 * shares, so lists are arrays scanned in full. */
#include "api/services/share_index.h"

#include <string.h>

#include "lib/mem.h"

struct share_list {
    char *key;
    struct share_row **rows;
    size_t n, cap;
    struct share_list *next;
};

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

static struct share_list **list_slot(struct share_list **buckets, size_t n_buckets, const char *key)
{
    struct share_list **p = &buckets[key_hash(key) % n_buckets];
    while (*p != NULL && strcmp((*p)->key, key) != 0) {
        p = &(*p)->next;
    }
    return p;
}

static void rehash(struct share_list ***buckets, size_t n_old, size_t n_new)
{
    struct share_list **b = mem_zalloc(sizeof *b * n_new);
    for (size_t i = 0; i < n_old; i++) {
        for (struct share_list *l = (*buckets)[i], *next; l != NULL; l = next) {
            next = l->next;
            size_t k = key_hash(l->key) % n_new;
            l->next = b[k];
            b[k] = l;
        }
    }
    mem_free(*buckets);
    *buckets = b;
}

/* The list of @key in @buckets, made when @make and missing (NULL otherwise). */
static struct share_list *list_get(struct share_index *x, struct share_list **buckets, const char *key,
                                   bool make)
{
    struct share_list **p = list_slot(buckets, x->n_buckets, key);
    if (*p != NULL || !make) {
        return *p;
    }
    struct share_list *l = mem_zalloc(sizeof *l);
    l->key = mem_strdup(key);
    *p = l;
    x->n_lists++;
    return l;
}

static void list_push(struct share_list *l, struct share_row *r)
{
    if (l->n == l->cap) {
        l->cap = l->cap != 0 ? l->cap * 2 : 4;
        l->rows = mem_realloc(l->rows, sizeof *l->rows * l->cap);
    }
    l->rows[l->n++] = r;
}

static void list_remove(struct share_list *l, const struct share_row *r)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->rows[i] == r) {
            l->rows[i] = l->rows[--l->n];
            return;
        }
    }
}

/* Unlink and free @key's list from @buckets if it is empty. */
static void list_drop_empty(struct share_index *x, struct share_list **buckets, const char *key)
{
    struct share_list **p = list_slot(buckets, x->n_buckets, key);
    struct share_list *l = *p;
    if (l == NULL || l->n > 0) {
        return;
    }
    *p = l->next;
    mem_free(l->key);
    mem_free(l->rows);
    mem_free(l);
    x->n_lists--;
}

static void row_free(struct share_row *r)
{
    mem_free(r->sandbox_id);
    mem_free(r->grantee_id);
    mem_free(r->created_by);
    mem_free(r);
}

void share_index_init(struct share_index *x)
{
    memset(x, 0, sizeof *x);
    x->n_buckets = 256;
    x->by_sandbox = mem_zalloc(sizeof *x->by_sandbox * x->n_buckets);
    x->by_grantee = mem_zalloc(sizeof *x->by_grantee * x->n_buckets);
}

static void free_lists(struct share_list **buckets, size_t n_buckets, bool rows)
{
    for (size_t i = 0; i < n_buckets; i++) {
        for (struct share_list *l = buckets[i], *next; l != NULL; l = next) {
            next = l->next;
            for (size_t k = 0; rows && k < l->n; k++) {
                row_free(l->rows[k]);
            }
            mem_free(l->key);
            mem_free(l->rows);
            mem_free(l);
        }
        buckets[i] = NULL;
    }
}

void share_index_clear(struct share_index *x)
{
    free_lists(x->by_grantee, x->n_buckets, false);
    free_lists(x->by_sandbox, x->n_buckets, true);
    x->n_lists = 0;
    x->n_rows = 0;
}

void share_index_close(struct share_index *x)
{
    share_index_clear(x);
    mem_free(x->by_sandbox);
    mem_free(x->by_grantee);
    memset(x, 0, sizeof *x);
}

static struct share_row *find(const struct share_index *x, const char *sandbox_id, const char *grantee_id)
{
    struct share_list *l = *list_slot(x->by_sandbox, x->n_buckets, sandbox_id);
    for (size_t i = 0; l != NULL && i < l->n; i++) {
        if (strcmp(l->rows[i]->grantee_id, grantee_id) == 0) {
            return l->rows[i];
        }
    }
    return NULL;
}

void share_index_add(struct share_index *x, const char *sandbox_id, const char *grantee_id, bool exec,
                     const char *created_by, int64_t created_at_ms)
{
    struct share_row *r = find(x, sandbox_id, grantee_id);
    if (r != NULL) {
        r->exec = exec;
        mem_free(r->created_by);
        r->created_by = mem_strdup(created_by);
        r->created_at_ms = created_at_ms;
        return;
    }
    if (x->n_lists >= 2 * x->n_buckets) {
        size_t nb = x->n_buckets * 2;
        rehash(&x->by_sandbox, x->n_buckets, nb);
        rehash(&x->by_grantee, x->n_buckets, nb);
        x->n_buckets = nb;
    }
    r = mem_zalloc(sizeof *r);
    r->sandbox_id = mem_strdup(sandbox_id);
    r->grantee_id = mem_strdup(grantee_id);
    r->exec = exec;
    r->created_by = mem_strdup(created_by);
    r->created_at_ms = created_at_ms;
    list_push(list_get(x, x->by_sandbox, sandbox_id, true), r);
    list_push(list_get(x, x->by_grantee, grantee_id, true), r);
    x->n_rows++;
}

void share_index_drop_sandbox(struct share_index *x, const char *sandbox_id)
{
    struct share_list *l = list_get(x, x->by_sandbox, sandbox_id, false);
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        struct share_row *r = l->rows[i];
        struct share_list *g = list_get(x, x->by_grantee, r->grantee_id, false);
        if (g != NULL) {
            list_remove(g, r);
            list_drop_empty(x, x->by_grantee, r->grantee_id);
        }
        row_free(r);
        x->n_rows--;
    }
    l->n = 0;
    list_drop_empty(x, x->by_sandbox, sandbox_id);
}

void share_index_drop_grantee(struct share_index *x, const char *grantee_id)
{
    struct share_list *g = list_get(x, x->by_grantee, grantee_id, false);
    if (g == NULL) {
        return;
    }
    for (size_t i = 0; i < g->n; i++) {
        struct share_row *r = g->rows[i];
        struct share_list *l = list_get(x, x->by_sandbox, r->sandbox_id, false);
        if (l != NULL) {
            list_remove(l, r);
            list_drop_empty(x, x->by_sandbox, r->sandbox_id);
        }
        row_free(r);
        x->n_rows--;
    }
    g->n = 0;
    list_drop_empty(x, x->by_grantee, grantee_id);
}

const struct share_row *share_index_find(const struct share_index *x, const char *sandbox_id,
                                         const char *grantee_id)
{
    return find(x, sandbox_id, grantee_id);
}

size_t share_index_of_grantee(const struct share_index *x, const char *grantee_id,
                              struct share_row *const **rows)
{
    struct share_list *g = *list_slot(x->by_grantee, x->n_buckets, grantee_id);
    *rows = g != NULL ? g->rows : NULL;
    return g != NULL ? g->n : 0;
}
