/* Numbered schema migrations, applied exactly once cluster-wide.
 *
 * Each migration runs in its own BEGIN IMMEDIATE transaction that first re-reads the applied
 * versions from `schema_migrations`, applies the migration if it is missing, and records it. When
 * several replicas start at the same moment, dqlite's write lock lets one transaction through;
 * the others get BUSY, roll back, retry, see the version recorded and skip it. Every migration's
 * SQL is screened by proto_sql_check_ddl (no DATETIME/DATE/TIMESTAMP/BOOLEAN columns), and our
 * own tables are STRICT so SQLite enforces storage classes. */
#ifndef GANTRY_STORE_MIGRATE_H
#define GANTRY_STORE_MIGRATE_H

#include <stdint.h>

#include "store/client.h"

struct store_migration {
    int64_t version;  /* 1, 2, 3 ... strictly increasing, never reused */
    const char *name; /* short description */
    const char *sql;  /* one or more statements */
};

/* Apply every migration in @m (sorted by version) that is not applied yet. Returns 0, the
 * client's errors, GERR_REFUSED (bad DDL), or GERR_INVAL (versions not increasing, or the
 * database has a version newer than this binary knows: a downgrade). */
int store_migrate(struct store_client *cl, const struct store_migration *m, unsigned n);

/* The highest applied version (0 for an empty database). */
int store_schema_version(struct store_client *cl, int64_t *version);

/* Gantry's own schema (store/schema.c). */
const struct store_migration *store_schema(unsigned *n);

#endif
