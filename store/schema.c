/* Gantry's replicated schema, as numbered migrations (store/migrate.h).
 *
 * Rules for every migration: tables are STRICT, columns are INTEGER, REAL, TEXT or BLOB only
 * (dqlite 1.11 aborts reading DATETIME/BOOLEAN columns that hold another storage class), times are
 * INTEGER milliseconds since the Unix epoch, and a migration is never edited once released: add a
 * new one. Later issues add the tenant resources (DESIGN.md section 3). */
#include "store/migrate.h"

static const struct store_migration schema[] = {
    {1, "cluster revision and change events",
     /* The cluster-wide revision: one row, bumped by every committed change. */
     "CREATE TABLE cluster_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL) "
     "STRICT;"
     "INSERT INTO cluster_revision (id, revision) VALUES (1, 0);"
     /* One row per committed change, in revision order: feeds Watch and the reconciler. */
     "CREATE TABLE events (revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT NULL,"
     " object_id TEXT NOT NULL, type TEXT NOT NULL, at_ms INTEGER NOT NULL) STRICT;"},
};

const struct store_migration *store_schema(unsigned *n)
{
    *n = sizeof schema / sizeof schema[0];
    return schema;
}
