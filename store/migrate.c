/* Schema migrations applied exactly once cluster-wide. See migrate.h. */
#include "store/migrate.h"

#include <inttypes.h>

#include "lib/log.h"

#define MIGRATIONS_TABLE                                                                                     \
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"         \
    " applied_at_ms INTEGER NOT NULL) STRICT"

struct migrate_step {
    const struct store_migration *m;
    int64_t wall_ms;
    int64_t found; /* highest version seen inside the transaction */
    bool applied;
};

static int migrate_tx(struct store_tx *tx, void *arg)
{
    struct migrate_step *s = arg;
    int rv;

    s->applied = false;
    if ((rv = store_tx_exec(tx, MIGRATIONS_TABLE, NULL, 0, NULL)) != 0) {
        return rv;
    }
    if ((rv = store_tx_query_int(tx, "SELECT coalesce(max(version), 0) FROM schema_migrations", NULL, 0,
                                 &s->found)) != 0) {
        return rv;
    }
    if (s->found >= s->m->version) {
        return 0; /* another replica got there first: nothing to write */
    }
    if (s->found != s->m->version - 1) {
        gerr_set(store_tx_errmsg(tx), "schema is at version %" PRId64 ", cannot apply migration %" PRId64,
                 s->found, s->m->version);
        return GERR_INVAL;
    }
    if ((rv = store_tx_exec(tx, s->m->sql, NULL, 0, NULL)) != 0) {
        gerr_wrap(store_tx_errmsg(tx), "migration %" PRId64 " (%s)", s->m->version, s->m->name);
        return rv;
    }
    struct proto_value p[3] = {proto_int(s->m->version), proto_text(s->m->name), proto_int(s->wall_ms)};
    if ((rv = store_tx_exec(tx,
                            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
                            p, 3, NULL)) != 0) {
        return rv;
    }
    s->applied = true;
    return 0;
}

int store_migrate(struct store_client *cl, const struct store_migration *m, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (m[i].version != (int64_t)i + 1) {
            gerr_set(cl->errmsg, "migration #%u has version %" PRId64 ", want %u", i, m[i].version, i + 1);
            return GERR_INVAL;
        }
        if (proto_sql_check_ddl(m[i].sql) != 0) {
            gerr_set(cl->errmsg,
                     "migration %" PRId64 " (%s) declares a DATETIME/DATE/TIMESTAMP/BOOLEAN column, which "
                     "dqlite 1.11 cannot read safely: use INTEGER or TEXT",
                     m[i].version, m[i].name);
            return GERR_REFUSED;
        }
    }
    int64_t current;
    int rv = store_schema_version(cl, &current);
    if (rv != 0) {
        return rv;
    }
    if (current > (int64_t)n) {
        gerr_set(cl->errmsg,
                 "database schema version %" PRId64 " is newer than this binary's %u: refusing a downgrade",
                 current, n);
        return GERR_INVAL;
    }
    for (unsigned i = (unsigned)current; i < n; i++) {
        struct migrate_step s = {.m = &m[i], .wall_ms = (int64_t)cl->clock->wall_ms(cl->clock)};
        rv = store_client_tx(cl, migrate_tx, &s);
        if (rv != 0) {
            return rv;
        }
        if (s.applied) {
            LOG_INFO("store: applied schema migration %" PRId64 " (%s)", m[i].version, m[i].name);
        }
    }
    return 0;
}

int store_schema_version(struct store_client *cl, int64_t *version)
{
    int64_t exists;
    int rv = store_client_query_int(
        cl, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", NULL, 0,
        &exists);
    if (rv != 0) {
        return rv;
    }
    if (exists == 0) {
        *version = 0;
        return 0;
    }
    return store_client_query_int(cl, "SELECT coalesce(max(version), 0) FROM schema_migrations", NULL, 0,
                                  version);
}
