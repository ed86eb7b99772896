/* Restoring a backup (store_client_dump's two files) into a new, empty cluster.
 *
 * dqlite 1.11 has no RESTORE request, so the backup is opened read-only with the local SQLite
 * library (which replays its WAL) and replayed through the store client: every table's CREATE
 * statement, then the rows in transactions of up to STORE_RESTORE_BATCH rows, parent tables before
 * the tables whose foreign keys point at them (foreign keys checked at each batch's commit), then
 * indexes, views and triggers. Values keep their SQLite storage class. The target must hold no tables (so a
 * restore never merges into live data); a failure part-way leaves a partial copy that the operator drops
 * together with the new cluster. */
#ifndef GANTRY_STORE_BACKUP_H
#define GANTRY_STORE_BACKUP_H

#include <stdint.h>

#include "lib/buf.h"
#include "store/client.h"

#define STORE_RESTORE_BATCH 500u

struct store_restore_stats {
    unsigned tables;
    unsigned other_objects; /* indexes, views, triggers */
    uint64_t rows;
};

/* Restore the backup in @dir (files <database> and <database>-wal, as written by
 * store_client_dump for @cl's database name) into @cl's cluster. Errors: GERR_NOTFOUND (no
 * backup there), GERR_EXISTS (the target already has tables), GERR_INVAL (a table with more than
 * PROTO_MAX_PARAMS columns, or a backup SQLite cannot read), and the client's errors; the reason is
 * in @errmsg (GERR_MSG_SIZE). */
int store_restore(struct store_client *cl, const char *dir, struct store_restore_stats *stats, char *errmsg);

/* The cluster revision recorded in the dump in @dir (file @database): what a backup is consistent
 * at. Opens the copy read-write (SQLite replays its WAL into it): call it after the files were
 * archived. GERR_NOTFOUND (no revision row), GERR_INVAL/GERR_IO (SQLite cannot read it). */
int store_backup_revision(const char *dir, const char *database, int64_t *out, char *errmsg);

/* Take a consistent backup through @cl (store_client_dump on the leader) as an archive
 * (store/archive.h) appended to @archive, with the revision it is consistent at in *@revision:
 * the dump goes into a new directory under @scratch_dir, removed again whatever happens. Errors:
 * the client's, GERR_IO (no scratch directory), and those of store_archive_pack_dir and
 * store_backup_revision, with the reason in @errmsg. */
int store_backup_take(struct store_client *cl, const char *scratch_dir, struct buf *archive,
                      int64_t *revision, char *errmsg);

#endif
