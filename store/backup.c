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
    char sql[512];
    sqlite3_stmt *st = NULL;
    int rv;

    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\"", table);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return backup_err(db, rc, "read table", errmsg);
    }
    int ncols = sqlite3_column_count(st);
    if (ncols <= 0 || ncols > (int)PROTO_MAX_PARAMS) {
        gerr_set(errmsg, "backup: table %s has %d columns; at most %u can be restored", table, ncols,
                 PROTO_MAX_PARAMS);
        sqlite3_finalize(st);
        return GERR_INVAL;
    }
    char *insert = mem_alloc(64 + strlen(table) + 3u * (unsigned)ncols);
    size_t k = (size_t)sprintf(insert, "INSERT INTO \"%s\" VALUES (", table);
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
    /* Tables first (in creation order), their rows, then everything else. */
    static const char *const phases[] = {
        "SELECT type, name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND sql IS NOT NULL ORDER BY rowid",
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'view', 'trigger') "
        "AND name NOT LIKE 'sqlite_%' AND sql IS NOT NULL ORDER BY rowid",
    };
    for (int phase = 0; phase < 2; phase++) {
        rc = sqlite3_prepare_v2(db, phases[phase], -1, &st, NULL);
        if (rc != SQLITE_OK) {
            rv = backup_err(db, rc, "read schema", errmsg);
            goto out;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 1);
            const char *sql = (const char *)sqlite3_column_text(st, 2);
            rv = store_client_exec(cl, sql, NULL, 0, NULL);
            if (rv != 0) {
                memcpy(errmsg, cl->errmsg, GERR_MSG_SIZE);
                gerr_wrap(errmsg, "restore: create %s", name);
                goto out;
            }
            if (phase == 0) {
                stats->tables++;
                if ((rv = copy_table(cl, db, name, &stats->rows, errmsg)) != 0) {
                    goto out;
                }
            } else {
                stats->other_objects++;
            }
        }
        if (rc != SQLITE_DONE) {
            rv = backup_err(db, rc, "read schema", errmsg);
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    rv = 0;
    LOG_INFO("restore: %u tables, %" PRIu64 " rows, %u indexes/views/triggers from %s", stats->tables,
             stats->rows, stats->other_objects, dir);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rv;
}
