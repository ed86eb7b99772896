/* SQL text with its parameters written in as literals (internal to store/): several statements,
 * each with its own values, become one EXEC_SQL request. dqlite binds parameters to the first
 * statement of a multi-statement request only, so this is how a writer batch sends a call's writes
 * (behind its SAVEPOINT) or its end-of-batch rows in one round trip.
 *
 * Literals are written the way SQLite reads them back exactly: integers in decimal, floats with 17
 * significant digits, NULL, text as '...' with every ' doubled (SQLite has no other escapes), blobs
 * as X'hex'. Placeholders are ?, ?NNN (1-based) outside quoted strings and identifiers. Text holding
 * a NUL byte, or a placeholder beyond @n, is refused (GERR_INVAL): nothing is appended. */
#ifndef GANTRY_STORE_SQLTEXT_H
#define GANTRY_STORE_SQLTEXT_H

#include "lib/buf.h"
#include "store/proto.h"

/* Append @sql with its placeholders replaced by @params (n of them), then ";". */
int store__sql_append(struct buf *out, const char *sql, const struct proto_value *params, unsigned n);

/* Append one value as a literal. */
int store__sql_literal(struct buf *out, const struct proto_value *v);

#endif
