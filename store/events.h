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

#endif
