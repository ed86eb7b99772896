/* The shared shape of mutating calls (api/gate/resource.h). */
#include "api/gate/resource.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/audit.h"
#include "api/gate/audit_sink.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "store/events.h"

struct mutation {
    struct res_call c;
    const char *request_id;
    const char *method;
    res_apply_fn fn;
};

int res_fail(struct store_tx *tx, int gerr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(store_tx_errmsg(tx), GERR_MSG_SIZE, fmt, ap);
    va_end(ap);
    return gerr;
}

int res_status(int gerr)
{
    switch (gerr) {
    case GERR_TOOBIG:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case GERR_REFUSED:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case GERR_PERM:
        return GRPC_STATUS_PERMISSION_DENIED;
    default:
        return grpc_status_from_gerr(gerr);
    }
}

int res_event(struct store_tx *tx, struct res_call *c, const char *kind, const char *ns, const char *id,
              const char *name, const char *type)
{
    snprintf(c->resource_type, sizeof c->resource_type, "%s", kind);
    snprintf(c->resource_id, sizeof c->resource_id, "%s", id);
    snprintf(c->resource_name, sizeof c->resource_name, "%s", name != NULL ? name : "");
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    return store_event_tx(tx, kind, ns, id, type, &c->revision);
}

int res_payload_tx(struct store_tx *tx, int64_t revision, const ProtobufCMessage *obj)
{
    size_t n = protobuf_c_message_get_packed_size(obj);
    uint8_t *p = mem_alloc(n + 1);
    protobuf_c_message_pack(obj, p);
    int rv = store_event_payload_tx(tx, revision, p, n);
    mem_free(p);
    return rv;
}

int res_event_payload(struct store_tx *tx, struct res_call *c, const ProtobufCMessage *obj)
{
    return res_payload_tx(tx, c->revision, obj);
}

int res_event_payload_reply(struct store_tx *tx, struct res_call *c)
{
    return store_event_payload_tx(tx, c->revision, c->reply.data, c->reply.len);
}

void res_reply(struct res_call *c, const ProtobufCMessage *msg)
{
    c->reply.len = 0;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = buf_reserve(&c->reply, n + 1);
    protobuf_c_message_pack(msg, p);
    c->reply.len = n;
}

void res_answer(struct res_call *c, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    c->answer.len = 0;
    uint8_t *p = buf_reserve(&c->answer, n + 1);
    protobuf_c_message_pack(msg, p);
    c->answer.len = n;
}

static void audit_of(const struct mutation *m, bool ok, int status, const char *message,
                     struct audit_record *r)
{
    const struct gate_ctx *ctx = m->c.ctx;
    *r = (struct audit_record){.time_ms = ctx->now_ms,
                               .class_uid = AUDIT_CLASS_API_ACTIVITY,
                               .activity = audit_activity_of(m->method),
                               .actor_id = ctx->who.id,
                               .actor_name = ctx->who.name,
                               .actor_kind = ctx->who.kind,
                               .operation = m->method,
                               .ns = m->c.ns[0] != '\0' ? m->c.ns : ctx->decision.ns,
                               .resource_type = m->c.resource_type,
                               .resource_id = m->c.resource_id,
                               .resource_name = m->c.resource_name,
                               .success = ok,
                               .status_code = status,
                               .message = message,
                               .source = grpc_call_peer(ctx->call),
                               .request_id = m->request_id,
                               .replica_id = m->c.env->replica_id,
                               .gateway_id = m->c.env->gateway_id,
                               .revision = m->c.revision};
}

/* One call's part of a writer batch: the change and its audit event. The writer looks up and
 * stores the idempotency record (store/writer.h); store_tx_set_result gives it the reply. */
static int mutation_tx(struct store_tx *tx, void *arg)
{
    struct mutation *m = arg;
    m->c.revision = 0;
    m->c.reply.len = 0;
    m->c.answer.len = 0;
    m->c.warning[0] = '\0';
    int rv = m->fn(tx, &m->c);
    if (rv == 0) {
        struct audit_record r;
        audit_of(m, true, 0, m->c.warning, &r);
        rv = audit_insert_tx(tx, &r);
    }
    if (rv == 0) {
        store_tx_set_result(tx, m->c.reply.data, m->c.reply.len, m->c.revision);
    }
    return rv;
}

void res_mutate(struct gate_ctx *ctx, const struct res_env *env, const char *request_id,
                const ProtobufCMessageDescriptor *reply_desc, res_apply_fn fn, void *arg)
{
    res_mutate_memo(ctx, env, request_id, reply_desc, fn, arg, NULL);
}

void res_mutate_memo(struct gate_ctx *ctx, const struct res_env *env, const char *request_id,
                     const ProtobufCMessageDescriptor *reply_desc, res_apply_fn fn, void *arg,
                     const char *memo_class)
{
    if (strlen(request_id) > RES_REQUEST_ID_MAX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "request_id is at most %u bytes", RES_REQUEST_ID_MAX);
        return;
    }
    if (request_id[0] == RES_INTERNAL_KEY_PREFIX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "request_id may not start with '%c' (reserved)",
                  RES_INTERNAL_KEY_PREFIX);
        return;
    }
    struct mutation *m = mem_zalloc(sizeof *m);
    m->c.ctx = ctx;
    m->c.env = env;
    m->c.arg = arg;
    m->request_id = request_id;
    m->method = grpc_call_method(ctx->call);
    m->fn = fn;
    buf_init(&m->c.reply);
    buf_init(&m->c.answer);
    /* Every mutation has an idempotency key: the client's request id, or an internal one, so an
     * unknown commit outcome is settled by looking, never by guessing. */
    char internal[40];
    const char *key = request_id;
    bool fresh = false;
    if (request_id[0] == '\0' && ctx->idem_key != NULL) {
        key = ctx->idem_key; /* chosen by the replica that forwarded the call, or before a failed forward */
        fresh = ctx->idem_fresh;
    } else if (request_id[0] == '\0') {
        internal[0] = RES_INTERNAL_KEY_PREFIX;
        rand_uuid7(internal + 1); /* time-ordered: appended to the idempotency index's last page */
        key = internal;
        fresh = true; /* a new internal key: nothing stored under it yet */
    }
    struct store_write req;
    memset(&req, 0, sizeof req);
    req.fn = mutation_tx;
    req.arg = m;
    req.idem_principal = ctx->who.id;
    req.idem_key = key;
    req.idem_method = m->method;
    req.idem_fresh = fresh;
    req.memo_class = memo_class;
    uint64_t deadline = grpc_call_deadline_ms(ctx->call);
    req.deadline_ms = deadline != 0 ? deadline : clock_mono_ms(clock_system()) + RES_QUEUE_WAIT_MS;
    int rv;
    gate_release_store(ctx); /* the handler's reads are done: do not hold a read connection while queued */
    for (int attempt = 0;; attempt++) {
        rv = store_writer_run_req(env->writer, &req);
#ifdef GANTRY_PLANT_BUG_ACK_BEFORE_COMMIT
        /* Planted bug (tests/jepsen, docs/reliability.md): the reply built inside the transaction
         * is sent whatever became of the commit. */
        if (rv != 0 && m->c.reply.len > 0) {
            rv = 0;
            break;
        }
#endif
        if (rv != GERR_UNKNOWN_OUTCOME || attempt == 3) {
            break;
        }
        LOG_WARN("resource: %s outcome unknown; settling it under its idempotency key", m->method);
        buf_close(&req.response);
        req.idem_fresh = false; /* it may have committed: look it up */
    }
    char *err = req.errmsg;
    if (rv == GERR_UNKNOWN_OUTCOME) {
        gate_fail(
            ctx, GRPC_STATUS_UNAVAILABLE,
            "the write's outcome is unknown (leader change): retry with the same request_id to settle it");
    } else if (rv != 0) {
        int status = res_status(rv);
        if (err[0] == '\0') {
            snprintf(err, sizeof req.errmsg, "%s", gerr_str(rv));
        }
        if (env->sink != NULL) {
            struct audit_record r;
            audit_of(m, false, status, err, &r);
            audit_sink_record(env->sink, &r);
        }
        grpc_call_finish_async(ctx->call, status, err, NULL);
    } else if (req.replayed && request_id[0] == '\0' && ctx->answer_secret) {
        /* The client sent no request_id, so it never retried: this replay settled an outcome the
         * replica did not know (a leader change, a lost forward). The stored reply lacks the
         * secret, and an answer without it would look like success and be useless. */
        grpc_call_finish_async(
            ctx->call, GRPC_STATUS_ABORTED,
            "the call committed, but a leader change interrupted it and its answer held a "
            "secret that is never stored: the object it made exists without a usable secret "
            "(see the audit trail); make another and revoke the unused one",
            NULL);
    } else {
        const struct buf *b = req.replayed ? &req.response : m->c.answer.len > 0 ? &m->c.answer : &m->c.reply;
        ProtobufCMessage *reply = protobuf_c_message_unpack(reply_desc, NULL, b->len, b->data);
        if (reply == NULL) {
            grpc_call_finish_async(ctx->call, GRPC_STATUS_INTERNAL, "the stored reply does not decode", NULL);
        } else {
            grpc_call_finish_async(ctx->call, 0, NULL, reply);
            protobuf_c_message_free_unpacked(reply, NULL);
        }
    }
    buf_close(&req.response);
    buf_close(&m->c.reply);
    if (m->c.answer.len > 0) {
        memset(m->c.answer.data, 0, m->c.answer.len); /* it may hold a secret */
    }
    buf_close(&m->c.answer);
    mem_free(m);
}
