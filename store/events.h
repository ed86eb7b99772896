/* The change feed (store/schema.c: cluster_revision, events): every committed change bumps the
 * cluster revision and appends one event (revision, kind, namespace, object id, type). Watch and
 * the reconciler read it. */
#ifndef GANTRY_STORE_EVENTS_H
#define GANTRY_STORE_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "store/client.h"

/* Inside a write transaction: bump the revision and append the event (type "ADDED", "MODIFIED",
 * "DELETED"); *@revision gets the new revision (may be NULL). The store's errors. */
int store_event_tx(struct store_tx *tx, const char *kind, const char *ns, const char *object_id,
                   const char *type, int64_t *revision);

/* Inside the same transaction, after store_event_tx: the object's state at that change (a packed
 * message, copied), which Watch delivers. The store's errors. */
int store_event_payload_tx(struct store_tx *tx, int64_t revision, const void *data, size_t len);

/* The newest change event retention deleted (cluster_meta events_compacted_revision; 0 when none
 * was). Retention moves it in the transaction that deletes the events, so a reader that reads it
 * after the events it read knows whether any it needed were gone. 0 or the store's errors. */
int store_events_compacted(struct store_client *cl, int64_t *out);

/* A List read at a known revision, in one statement (one snapshot): @INNER is the List's SELECT
 * (its ORDER BY and LIMIT included) and @ORDER the same order on its result columns. Every row
 * gets the cluster revision as an extra last column; when @INNER has no row the statement still
 * returns one row, whose List columns are NULL. Pass the result to store_list_revision. */
#define STORE_LIST_AT_REVISION(INNER, ORDER)                                                                 \
    "SELECT x.*, r.revision FROM cluster_revision r LEFT JOIN (" INNER                                       \
    ") x ON 1 WHERE r.id = 1 ORDER BY " ORDER

/* After a STORE_LIST_AT_REVISION statement: *@rev gets the revision its snapshot was at (a watch
 * from it misses no change after the List and repeats none before it), and the placeholder row of
 * an empty List is dropped (@rows->n_rows 0). GERR_PROTO when @rows has no row at all. */
int store_list_revision(struct proto_rows *rows, uint64_t *rev);

#endif
