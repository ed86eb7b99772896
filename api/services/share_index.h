/* The sandbox shares of the cluster held in memory, inside the sandboxes hub's model
 * (api/services/sandboxes_svc.c), so Get, List and ListSharedWithMe decide access through a share
 * without a store query. Two ways in: by sandbox (is this sandbox shared with this principal?) and
 * by grantee (what is shared with this principal?).
 *
 * Not thread-safe: the owner serializes every call (the hub calls them under its lock). Strings
 * passed in are copied; pointers handed out point into the index and stay valid until the next
 * change (add, drop, clear). */
#ifndef GANTRY_API_SERVICES_SHARE_INDEX_H
#define GANTRY_API_SERVICES_SHARE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct share_row { /* one row of the shares table */
    char *sandbox_id;
    char *grantee_id;
    bool exec; /* access "exec" (else "read") */
    char *created_by;
    int64_t created_at_ms;
};

struct share_list;

struct share_index {
    struct share_list **by_sandbox, **by_grantee; /* chained hashes, n_buckets each */
    size_t n_buckets, n_lists;
    size_t n_rows;
};

void share_index_init(struct share_index *x);

/* Frees every row; @x stays usable (empty). */
void share_index_clear(struct share_index *x);

/* Add the share of @sandbox_id with @grantee_id, replacing the one already held for that pair. */
void share_index_add(struct share_index *x, const char *sandbox_id, const char *grantee_id, bool exec,
                     const char *created_by, int64_t created_at_ms);

/* Forget every share of @sandbox_id (its shares were re-read, or the sandbox is gone). */
void share_index_drop_sandbox(struct share_index *x, const char *sandbox_id);

/* Forget every share given to @grantee_id (the principal was deleted, and its shares with it). */
void share_index_drop_grantee(struct share_index *x, const char *grantee_id);

/* The share of @sandbox_id with @grantee_id, or NULL. */
const struct share_row *share_index_find(const struct share_index *x, const char *sandbox_id,
                                         const char *grantee_id);

/* The shares given to @grantee_id, in no particular order: *@rows (NULL when none), their count
 * returned. */
size_t share_index_of_grantee(const struct share_index *x, const char *grantee_id,
                              struct share_row *const **rows);

/* Frees everything; @x must be initialized again before use. */
void share_index_close(struct share_index *x);

#endif
