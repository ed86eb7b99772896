/* The control-plane audit trail: OCSF events in the replicated `audit` table.
 *
 *   API Activity (class_uid 6003): every mutating call (committed in the same transaction as the
 *   change, so an acknowledged change always has its event) and every denied call;
 *   Authentication (class_uid 3002): every failed authentication.
 *
 * Rows hold the fields; audit_row_json builds the OCSF JSON object an export line carries:
 *   class_uid, category_uid, activity_id, time, severity_id, status, status_id, status_code,
 *   status_detail, actor.user {uid, name, type}, api {operation, request.uid}, resources [{type,
 *   uid, name, namespace}], src_endpoint.ip, metadata {product, version}, unmapped {replica_id,
 *   gateway_id, revision}.
 * Messages never carry credentials: callers pass the status message they send to the client,
 * which never contains one. */
#ifndef GANTRY_API_GATE_AUDIT_H
#define GANTRY_API_GATE_AUDIT_H

#include <stdint.h>

#include <jansson.h>

#include "store/client.h"
#include "store/writer.h"

#define AUDIT_CLASS_API_ACTIVITY     6003
#define AUDIT_CLASS_AUTHENTICATION   3002
#define AUDIT_CLASS_NETWORK_ACTIVITY 4001 /* egress decisions (server/egress_svc.h) */

enum audit_activity {
    AUDIT_CREATE = 1,
    AUDIT_READ = 2,
    AUDIT_UPDATE = 3,
    AUDIT_DELETE = 4,
    AUDIT_OTHER = 99
};

struct audit_record {
    int64_t time_ms;
    int class_uid;
    enum audit_activity activity;
    const char *actor_id, *actor_name, *actor_kind;
    const char *operation; /* "/gantry.v1.Sandboxes/Create" */
    const char *ns, *resource_type, *resource_id, *resource_name;
    bool success;
    int status_code; /* gRPC status */
    const char *message;
    const char *source, *request_id;
    uint64_t replica_id;
    const char *gateway_id;
    int64_t revision;
    int64_t count;         /* identical events this row stands for; 0 means 1 */
    int64_t start_time_ms; /* when count > 1: the first of them (time_ms is the last); else 0 */
};

/* Insert inside the caller's transaction (deferred to the end of a writer batch, where rows are
 * written several per statement: store_tx_insert). Text that is not valid UTF-8 is stored with each
 * invalid sequence replaced by U+FFFD (a refused call's audit record carries what it was sent). */
int audit_insert_tx(struct store_tx *tx, const struct audit_record *r);

/* Insert @n records inside the caller's transaction. */
int audit_insert_many_tx(struct store_tx *tx, const struct audit_record *r, size_t n);

/* Events outside a mutation's transaction (denials, failed logins, failed mutations) go through
 * api/gate/audit_sink.h, which aggregates repeats and writes in batches. */

/* The activity of an operation from its method name (Create -> CREATE, Delete/Revoke -> DELETE,
 * Update/Set/Share/... -> UPDATE, reads -> READ). */
enum audit_activity audit_activity_of(const char *operation);

/* The columns audit_row_read expects, in order, for SELECT: 16 at most (store/conn.h
 * STORE_MAX_RESULT_COLUMNS, a dqlite 1.11 bug), so the last five fields travel as one JSON array. */
#define AUDIT_COLUMNS                                                                                        \
    "seq, time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, operation, namespace, "         \
    "resource_type, resource_id, resource_name, status, status_code, message, "                              \
    "json_array(source, request_id, replica_id, gateway_id, revision, count, start_time_ms)"

/* One audit event as read. Strings point into the rows or into @tail_: valid until
 * audit_row_close and while the rows are open. */
struct audit_row {
    int64_t seq, time_ms, class_uid, activity_id, status_code, replica_id, revision, count, start_time_ms;
    const char *actor_id, *actor_name, *actor_kind, *operation, *ns, *resource_type, *resource_id,
        *resource_name, *status, *message, *source, *request_id, *gateway_id;
    json_t *tail_;
};

/* Row @i of @rows (selected with AUDIT_COLUMNS). Never fails: a malformed tail reads as empty. */
void audit_row_read(const struct proto_rows *rows, size_t i, struct audit_row *out);
void audit_row_close(struct audit_row *r);

/* The OCSF JSON object of @r. New reference. A row that stands for several events has OCSF's
 * "count", "start_time" and "end_time". */
json_t *audit_row_json(const struct audit_row *r);

/* Delete events older than @before_ms, at most @limit rows. Returns the store's error. */
int audit_prune(struct store_client *cl, int64_t before_ms, unsigned limit, int64_t *deleted);

#endif
