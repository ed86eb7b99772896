/* Restore a backup into an empty cluster. See backup.h.
 *
 * Happy path: open the backup read-only with SQLite, check the target is empty, create each
 * table from its stored CREATE statement, copy its rows in batched transactions, then create
 * indexes, views and triggers (after the data, so triggers do not fire on the copy). */
#include "store/backup.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "store/archive.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/mem.h"

/* The one translation of SQLite's result codes on the backup side. */
static int backup_err(sqlite3 *db, int rc, const char *what, char *errmsg)
{
    gerr_set(errmsg, "backup: %s: %s", what, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    switch (rc & 0xff) {
    case SQLITE_CANTOPEN:
        return GERR_NOTFOUND;
    case SQLITE_NOMEM:
        return GERR_NOMEM;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return GERR_INVAL;
    default:
        return GERR_IO;
    }
}

/* "name" with embedded quotes doubled, in a new heap string. */
static char *quote_ident(const char *name)
{
    size_t n = strlen(name), k = 0;
    char *q = mem_alloc(2 * n + 3);
    q[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"') {
            q[k++] = '"';
        }
        q[k++] = name[i];
    }
    q[k++] = '"';
    q[k] = '\0';
    return q;
}

struct batch {
    sqlite3_stmt *rows; /* SELECT * FROM table, stepping */
    const char *insert; /* INSERT INTO "table" VALUES (?, ...) */
    int ncols;
    bool done;
    uint64_t copied;   /* rows committed by earlier batches */
    unsigned in_batch; /* rows written by the current attempt */
    char *errmsg;
};

/* One transaction: up to STORE_RESTORE_BATCH rows. store_client_tx may run this again after a
 * failed attempt, so it always repositions the reader just past the rows already committed. The
 * skip is a re-read from the start; batches are retried rarely (BUSY from another writer, a
 * leader change), and a restore targets a new cluster with no other writers. */
static int copy_batch(struct store_tx *tx, void *arg)
{
    struct batch *b = arg;
    struct proto_value params[PROTO_MAX_PARAMS];
    int rc;

    sqlite3_reset(b->rows);
    for (uint64_t i = 0; i < b->copied; i++) {
        if (sqlite3_step(b->rows) != SQLITE_ROW) {
            gerr_set(b->errmsg, "backup: rows vanished while restoring");
            return GERR_INTERNAL;
        }
    }
    b->done = false;
    b->in_batch = 0;
    /* dqlite turns foreign keys on; check them at each batch's commit, not row by row, so rows
     * may reference rows later in the same batch. */
    int fk = store_tx_exec(tx, "PRAGMA defer_foreign_keys = ON", NULL, 0, NULL);
    if (fk != 0) {
        return fk;
    }
    for (unsigned n = 0; n < STORE_RESTORE_BATCH; n++) {
        rc = sqlite3_step(b->rows);
        if (rc == SQLITE_DONE) {
            b->done = true;
            return 0;
        }
        if (rc != SQLITE_ROW) {
            return backup_err(sqlite3_db_handle(b->rows), rc, "read rows", b->errmsg);
        }
        for (int c = 0; c < b->ncols; c++) {
            switch (sqlite3_column_type(b->rows, c)) {
            case SQLITE_INTEGER:
                params[c] = proto_int(sqlite3_column_int64(b->rows, c));
                break;
            case SQLITE_FLOAT:
                params[c] = proto_float(sqlite3_column_double(b->rows, c));
                break;
            case SQLITE_TEXT:
                params[c] = proto_text((const char *)sqlite3_column_text(b->rows, c));
                break;
            case SQLITE_BLOB:
                params[c] =
                    proto_blob(sqlite3_column_blob(b->rows, c), (size_t)sqlite3_column_bytes(b->rows, c));
                break;
            default:
                params[c] = proto_null();
            }
        }
        int rv = store_tx_exec(tx, b->insert, params, (unsigned)b->ncols, NULL);
        if (rv != 0) {
            return rv;
        }
        b->in_batch++;
    }
    return 0;
}

static int copy_table(struct store_client *cl, sqlite3 *db, const char *table, uint64_t *rows, char *errmsg)
{
    sqlite3_stmt *st = NULL;
    int rv;

    char *quoted = quote_ident(table);
    char *sql = mem_alloc(strlen(quoted) + 32);
    sprintf(sql, "SELECT * FROM %s", quoted);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    mem_free(sql);
    if (rc != SQLITE_OK) {
        mem_free(quoted);
        return backup_err(db, rc, "read table", errmsg);
    }
    int ncols = sqlite3_column_count(st);
    if (ncols <= 0 || ncols > (int)PROTO_MAX_PARAMS) {
        gerr_set(errmsg, "backup: table %s has %d columns; at most %u can be restored", table, ncols,
                 PROTO_MAX_PARAMS);
        sqlite3_finalize(st);
        mem_free(quoted);
        return GERR_INVAL;
    }
    char *insert = mem_alloc(64 + strlen(quoted) + 3u * (unsigned)ncols);
    size_t k = (size_t)sprintf(insert, "INSERT INTO %s VALUES (", quoted);
    mem_free(quoted);
    for (int c = 0; c < ncols; c++) {
        k += (size_t)sprintf(insert + k, c == 0 ? "?" : ", ?");
    }
    sprintf(insert + k, ")");
    struct batch b = {.rows = st, .insert = insert, .ncols = ncols, .errmsg = errmsg};
    for (;;) {
        errmsg[0] = '\0';
        rv = store_client_tx(cl, copy_batch, &b);
        if (rv != 0) {
            if (errmsg[0] == '\0') {
                memcpy(errmsg, cl->errmsg, GERR_MSG_SIZE);
            }
            gerr_wrap(errmsg, "restore table %s after %" PRIu64 " rows", table, b.copied);
            break;
        }
        b.copied += b.in_batch;
        if (b.done) {
            break;
        }
    }
    *rows += b.copied;
    mem_free(insert);
    sqlite3_finalize(st);
    return rv;
}

int store_restore(struct store_client *cl, const char *dir, struct store_restore_stats *stats, char *errmsg)
{
    char path[4096];
    struct stat stbuf;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rv, rc;

    memset(stats, 0, sizeof *stats);
    snprintf(path, sizeof path, "%s/%s", dir, cl->database);
    if (stat(path, &stbuf) != 0) {
        gerr_set(errmsg, "backup: no backup of database %s in %s", cl->database, dir);
        return GERR_NOTFOUND;
    }
    int64_t existing;
    rv = store_client_query_int(cl, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", NULL, 0,
                                &existing);
    if (rv != 0) {
        memcpy(errmsg, cl->errmsg, GERR_MSG_SIZE);
        return rv;
    }
    if (existing != 0) {
        gerr_set(errmsg,
                 "restore: the target cluster already has %" PRId64 " table(s); restore only into a new one",
                 existing);
        return GERR_EXISTS;
    }
    /* Read-write open so SQLite can replay the WAL into the main file (on our copy). */
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        rv = backup_err(db, rc, "open", errmsg);
        goto out;
    }
    /* Every table first, so foreign keys can point anywhere; then the rows, parents before
     * children; then indexes, views and triggers (after the data, so triggers do not fire). */
    struct table {
        char *name;
        bool copied;
    } *tables = NULL;
    unsigned n_tables = 0;
    rc = sqlite3_prepare_v2(
        db,
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND sql IS NOT NULL ORDER BY rowid",
        -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rv = backup_err(db, rc, "read schema", errmsg);
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        rv = store_client_exec(cl, (const char *)sqlite3_column_text(st, 1), NULL, 0, NULL);
        if (rv != 0) {
            memcpy(errmsg, cl->errmsg, GERR_MSG_SIZE);
            gerr_wrap(errmsg, "restore: create table %s", name);
            goto out_tables;
        }
        tables = mem_realloc(tables, sizeof *tables * (n_tables + 1));
        tables[n_tables++] = (struct table){.name = mem_strdup(name)};
        stats->tables++;
    }
    if (rc != SQLITE_DONE) {
        rv = backup_err(db, rc, "read schema", errmsg);
        goto out_tables;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* Copy a table once every table it references is copied; with a cycle, copy in creation order
     * (a reference that still fails then names the table in the error). */
    for (unsigned done = 0; done < n_tables;) {
        unsigned before = done;
        for (unsigned i = 0; i < n_tables; i++) {
            if (tables[i].copied) {
                continue;
            }
            bool ready = true;
            char *quoted = quote_ident(tables[i].name);
            char *sql = mem_alloc(strlen(quoted) + 32);
            sprintf(sql, "PRAGMA foreign_key_list(%s)", quoted);
            mem_free(quoted);
            if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
                while (ready && sqlite3_step(st) == SQLITE_ROW) {
                    const char *parent = (const char *)sqlite3_column_text(st, 2);
                    for (unsigned j = 0; j < n_tables; j++) {
                        if (j != i && !tables[j].copied && parent != NULL &&
                            strcmp(tables[j].name, parent) == 0) {
                            ready = false;
                        }
                    }
                }
            }
            sqlite3_finalize(st);
            st = NULL;
            mem_free(sql);
            if (!ready) {
                continue;
            }
            if ((rv = copy_table(cl, db, tables[i].name, &stats->rows, errmsg)) != 0) {
                goto out_tables;
            }
            tables[i].copied = true;
            done++;
        }
        if (done == before) { /* a cycle: take the first remaining table */
            for (unsigned i = 0; i < n_tables; i++) {
                if (!tables[i].copied) {
                    if ((rv = copy_table(cl, db, tables[i].name, &stats->rows, errmsg)) != 0) {
                        goto out_tables;
                    }
                    tables[i].copied = true;
                    done++;
                    break;
                }
            }
        }
    }
    rc = sqlite3_prepare_v2(db,
                            "SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'view', 'trigger') "
                            "AND name NOT LIKE 'sqlite_%' AND sql IS NOT NULL ORDER BY rowid",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rv = backup_err(db, rc, "read schema", errmsg);
        goto out_tables;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rv = store_client_exec(cl, (const char *)sqlite3_column_text(st, 1), NULL, 0, NULL);
        if (rv != 0) {
            memcpy(errmsg, cl->errmsg, GERR_MSG_SIZE);
            gerr_wrap(errmsg, "restore: create %s", (const char *)sqlite3_column_text(st, 0));
            goto out_tables;
        }
        stats->other_objects++;
    }
    if (rc != SQLITE_DONE) {
        rv = backup_err(db, rc, "read schema", errmsg);
        goto out_tables;
    }
    rv = 0;
out_tables:
    for (unsigned i = 0; i < n_tables; i++) {
        mem_free(tables[i].name);
    }
    mem_free(tables);
    if (rv != 0) {
        goto out;
    }
    LOG_INFO("restore: %u tables, %" PRIu64 " rows, %u indexes/views/triggers from %s", stats->tables,
             stats->rows, stats->other_objects, dir);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

int store_backup_revision(const char *dir, const char *database, int64_t *out, char *errmsg)
{
    char path[4096];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, database);
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL); /* replays the WAL into our copy */
    int rv = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "SELECT revision FROM cluster_revision WHERE id = 1", -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            gerr_set(errmsg, "backup: %s has no cluster revision", path);
            rv = GERR_NOTFOUND;
        }
    }
    if (rv == 0 && rc != SQLITE_OK) {
        rv = backup_err(db, rc, "read the revision", errmsg);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}

int store_backup_take(struct store_client *cl, const char *scratch_dir, struct buf *archive,
                      int64_t *revision, char *errmsg)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/backup-XXXXXX", scratch_dir);
    if (mkdtemp(dir) == NULL) {
        gerr_set(errmsg, "cannot create a scratch directory under %s: %s", scratch_dir, strerror(errno));
        return GERR_IO;
    }
    int rv = store_client_dump(cl, dir);
    if (rv != 0) {
        snprintf(errmsg, GERR_MSG_SIZE, "%s", cl->errmsg);
    } else {
        rv = store_archive_pack_dir(dir, archive, errmsg);
    }
    if (rv == 0) {
        /* The dump is atomic on the leader; the revision inside it is what it is consistent at. */
        rv = store_backup_revision(dir, cl->database, revision, errmsg);
    }
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (unsigned i = 0; i < 3; i++) {
        char f[4300];
        snprintf(f, sizeof f, "%s/%s%s", dir, cl->database, suffixes[i]);
        unlink(f);
    }
    rmdir(dir);
    return rv;
}
