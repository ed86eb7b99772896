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
#include "store/events.h"

struct mutation {
    struct res_call c;
    const char *request_id;
    const char *method;
    res_apply_fn fn;
    bool replayed;
    struct buf stored; /* a replayed reply */
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

static int mutation_tx(struct store_tx *tx, void *arg)
{
    struct mutation *m = arg;
    struct gate_ctx *ctx = m->c.ctx;
    m->replayed = false;
    m->c.revision = 0;
    m->c.reply.len = 0;
    m->c.answer.len = 0;
    m->c.warning[0] = '\0';
    int rv = 0;
#ifdef GANTRY_PLANT_BUG_SKIP_IDEMPOTENCY
    /* Planted bug (tests/jepsen, docs/reliability.md): the idempotency record is never looked up. */
    if (false) {
#else
    if (m->request_id[0] != '\0') {
#endif
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        struct proto_value p[] = {proto_text(ctx->who.id), proto_text(m->request_id)};
        rv = store_tx_query(
            tx, "SELECT method, response FROM idempotency WHERE principal_id = ? AND request_id = ?", p, 2,
            &rows);
        if (rv == 0 && rows.n_rows == 1) {
            const struct proto_value *method = proto_rows_at(&rows, 0, 0), *resp = proto_rows_at(&rows, 0, 1);
            if (strcmp(method->u.b.s, m->method) != 0) {
                rv = res_fail(tx, GERR_INVAL, "request_id \"%.64s\" was already used for %.100s",
                              m->request_id, method->u.b.s);
            } else {
                m->replayed = true;
                m->stored.len = 0;
                buf_append(&m->stored, resp->u.b.s, resp->u.b.n);
            }
        }
        proto_rows_close(&rows);
        if (rv != 0 || m->replayed) {
            return rv;
        }
    }
    rv = m->fn(tx, &m->c);
    if (rv == 0) {
        struct audit_record r;
        audit_of(m, true, 0, m->c.warning, &r);
        rv = audit_insert_tx(tx, &r);
    }
    if (rv == 0 && m->request_id[0] != '\0') {
        struct proto_value p[] = {proto_text(ctx->who.id),  proto_text(m->request_id),
                                  proto_text(m->method),    proto_blob(m->c.reply.data, m->c.reply.len),
                                  proto_int(m->c.revision), proto_int(ctx->now_ms)};
        rv = store_tx_exec(
            tx,
#ifdef GANTRY_PLANT_BUG_SKIP_IDEMPOTENCY
            "INSERT OR REPLACE INTO idempotency (principal_id, request_id, method, response, revision, "
            "created_at_ms) "
#else
            "INSERT INTO idempotency (principal_id, request_id, method, response, revision, created_at_ms) "
#endif
            "VALUES (?, ?, ?, ?, ?, ?)",
            p, 6, NULL);
    }
    return rv;
}

void res_mutate(struct gate_ctx *ctx, const struct res_env *env, const char *request_id,
                const ProtobufCMessageDescriptor *reply_desc, res_apply_fn fn, void *arg)
{
    if (strlen(request_id) > RES_REQUEST_ID_MAX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "request_id is at most %u bytes", RES_REQUEST_ID_MAX);
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
    buf_init(&m->stored);
    char err[GERR_MSG_SIZE] = "";
    int rv;
    /* An unknown outcome is settled by running again: the idempotency record says whether the
     * first attempt committed. Without a request id there is nothing to settle it with. */
    for (int attempt = 0;; attempt++) {
        err[0] = '\0';
        uint64_t deadline = grpc_call_deadline_ms(ctx->call);
        if (deadline == 0) {
            deadline = clock_mono_ms(clock_system()) + RES_QUEUE_WAIT_MS;
        }
        rv = store_writer_run_by(env->writer, mutation_tx, m, deadline, err);
#ifdef GANTRY_PLANT_BUG_ACK_BEFORE_COMMIT
        /* Planted bug (tests/jepsen, docs/reliability.md): the reply built inside the transaction
         * is sent whatever became of the commit. */
        if (rv != 0 && m->c.reply.len > 0) {
            rv = 0;
            break;
        }
#endif
        if (rv != GERR_UNKNOWN_OUTCOME || request_id[0] == '\0' || attempt == 3) {
            break;
        }
        LOG_WARN("resource: %s outcome unknown; settling it under request_id %s", m->method, request_id);
    }
    if (rv == GERR_UNKNOWN_OUTCOME) {
        gate_fail(
            ctx, GRPC_STATUS_UNAVAILABLE,
            "the write's outcome is unknown (leader change): retry with the same request_id to settle it");
    } else if (rv != 0) {
        int status = res_status(rv);
        if (err[0] == '\0') {
            snprintf(err, sizeof err, "%s", gerr_str(rv));
        }
        if (env->sink != NULL) {
            struct audit_record r;
            audit_of(m, false, status, err, &r);
            audit_sink_record(env->sink, &r);
        }
        grpc_call_finish_async(ctx->call, status, err, NULL);
    } else {
        const struct buf *b = m->replayed ? &m->stored : m->c.answer.len > 0 ? &m->c.answer : &m->c.reply;
        ProtobufCMessage *reply = protobuf_c_message_unpack(reply_desc, NULL, b->len, b->data);
        if (reply == NULL) {
            grpc_call_finish_async(ctx->call, GRPC_STATUS_INTERNAL, "the stored reply does not decode", NULL);
        } else {
            grpc_call_finish_async(ctx->call, 0, NULL, reply);
            protobuf_c_message_free_unpacked(reply, NULL);
        }
    }
    buf_close(&m->c.reply);
    if (m->c.answer.len > 0) {
        memset(m->c.answer.data, 0, m->c.answer.len); /* it may hold a secret */
    }
    buf_close(&m->c.answer);
    buf_close(&m->stored);
    mem_free(m);
}
