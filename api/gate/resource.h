/* The shape every mutating call of the tenant resources shares (DESIGN.md sections 3 and 7):
 *
 *   one writer transaction =  idempotency lookup (principal, request_id)
 *                           + the change (the service's apply function)
 *                           + the cluster revision bump and change event
 *                           + the OCSF audit event
 *                           + the idempotency record (the packed reply)
 *
 * so an acknowledged change always has its event and its audit record, and a retry under the same
 * request_id, on any replica, after any failover, returns the first reply without applying twice.
 * A mutation sent without a request_id gets an internal key, so a commit whose outcome is unknown
 * (a leader change at the wrong moment) is always settled by running it again under its key: the
 * writer's idempotency lookup answers with the first run's reply when it committed (never applied
 * twice, never reported as failed when it committed). Mutations run in the writer's batches
 * (store/writer.h): one transaction for many calls, each in its own savepoint.
 * A request_id reused for a different method is INVALID_ARGUMENT. Failed mutations get an audit
 * event of their own (status Failure) outside the rolled-back transaction, through the audit sink.
 *
 * Load: a mutation waits in the writer's bounded queue at most until the call's deadline (or
 * RES_QUEUE_WAIT_MS without one): past it, it is dropped unrun (DEADLINE_EXCEEDED, nothing
 * applied); a full queue answers UNAVAILABLE at once (nothing applied, retry with backoff).
 *
 * Also here: label and page helpers shared by the list calls. Blocking; worker threads only. */
#ifndef GANTRY_API_GATE_RESOURCE_H
#define GANTRY_API_GATE_RESOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "api/gate/gate.h"
#include "gantry/v1/meta.pb-c.h"
#include "lib/buf.h"
#include "store/writer.h"

#define RES_REQUEST_ID_MAX 128u
#define RES_QUEUE_WAIT_MS  30000u
/* Internal idempotency keys (for mutations sent without a request_id) start with this; a client's
 * request_id may not. They are pruned after RES_INTERNAL_KEY_RETENTION_MS. */
#define RES_INTERNAL_KEY_PREFIX       '~'
#define RES_INTERNAL_KEY_RETENTION_MS 300000

/* Where mutations run and where audit events say they come from. */
struct res_env {
    struct store_writer *writer;
    struct audit_sink *sink; /* failed mutations' audit events (aggregated); NULL: not audited */
    uint64_t replica_id;
    const char *gateway_id;
};

struct res_call {
    struct gate_ctx *ctx;
    const struct res_env *env;
    void *arg; /* the service's */
    /* Filled by the apply function: */
    char resource_type[32];
    char resource_id[40];
    char resource_name[64];
    char ns[64];
    int64_t revision;            /* from res_event */
    struct buf reply;            /* the packed reply (res_reply) */
    struct buf answer;           /* this call's reply when it differs from the stored one (res_answer) */
    char warning[GERR_MSG_SIZE]; /* e.g. a soft quota exceeded: recorded in the audit event */
};

/* The change itself, inside the transaction. Return 0, or a GERR_* with a message in
 * store_tx_errmsg(tx) (GERR_INVAL, GERR_NOTFOUND, GERR_EXISTS, GERR_ABORTED, GERR_REFUSED for
 * failed preconditions, GERR_TOOBIG for RESOURCE_EXHAUSTED). It may run more than once (retries):
 * derive everything from what it reads and from c->arg, and reset what it fills. */
typedef int (*res_apply_fn)(struct store_tx *tx, struct res_call *c);

/* Run a mutation and answer the call (OK with the reply, or the mapped error). @reply_desc
 * unpacks the stored reply for the answer. A call without a request_id whose answer carries a
 * secret (ctx->answer_secret) and that was settled by a replay (its first run committed but its
 * outcome was unknown here) is answered ABORTED: the secret is gone, the client must make another. */
void res_mutate(struct gate_ctx *ctx, const struct res_env *env, const char *request_id,
                const ProtobufCMessageDescriptor *reply_desc, res_apply_fn fn, void *arg);

/* res_mutate for an apply function that shares memos (store_tx_memo, store/client.h) with the other
 * calls of its batch of the same @memo_class (a static string). */
void res_mutate_memo(struct gate_ctx *ctx, const struct res_env *env, const char *request_id,
                     const ProtobufCMessageDescriptor *reply_desc, res_apply_fn fn, void *arg,
                     const char *memo_class);

/* In apply: bump the revision with a change event (kind "Sandbox", type "ADDED" ...). Sets
 * c->revision and the audited resource. */
int res_event(struct store_tx *tx, struct res_call *c, const char *kind, const char *ns, const char *id,
              const char *name, const char *type);

/* In apply: pack @msg as the reply. */
void res_reply(struct res_call *c, const ProtobufCMessage *msg);

/* In apply, after res_event: store @obj (packed) as the payload of the event at c->revision, the
 * object's public state at that change (a DELETED event: its last state), which Events.Watch
 * delivers (api/services/events_svc.h). @obj must be the kind's public message, never one that
 * holds secret material. res_event_payload_reply stores c->reply instead, for handlers whose
 * reply is that public message. The store's errors. */
int res_event_payload(struct store_tx *tx, struct res_call *c, const ProtobufCMessage *obj);
int res_event_payload_reply(struct store_tx *tx, struct res_call *c);
/* The same for the event at @revision, for changes made outside a res_mutate call. */
int res_payload_tx(struct store_tx *tx, int64_t revision, const ProtobufCMessage *obj);

/* In apply, after res_reply: answer THIS call with @msg instead, while the idempotency record
 * keeps res_reply's message. For replies that carry a secret which must never be stored (a new
 * API key): a retry under the same request_id gets the stored reply, without the secret. The
 * handler also sets ctx->answer_secret before res_mutate (see above). */
void res_answer(struct res_call *c, const ProtobufCMessage *msg);

/* In apply: fail with a message. */
int res_fail(struct store_tx *tx, int gerr, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The gRPC status for a GERR_* from apply. */
int res_status(int gerr);

#endif
