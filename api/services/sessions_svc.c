/* gantry.v1 Sandboxes.Logs (see sessions_svc.h).
 *
 * Happy path: the gate has authenticated and authorized the call (AZ_SANDBOX_USE) and runs sb_logs
 * on a worker: check the request, find the sandbox and check ownership or a share, open the
 * driver's log reader (so every error that can be known at once is answered at once), audit the
 * start, and hand the session to a thread of its own, which sends chunks (waiting while the call's
 * unsent output is above SESSIONS_SEND_BOUND), polls for more when following, and ends the call
 * and audits the end.
 *
 * Failure modes: the sandbox deleted meanwhile (the reader's GERR_NOTFOUND: NOT_FOUND "was
 * deleted"); the credential revoked or expired during a follow (UNAUTHENTICATED); a corrupt log
 * (INTERNAL with the reader's message); the client gone (CANCELLED, nothing more is sent); the
 * replica stopping (UNAVAILABLE). */
#include "api/services/sessions_svc.h"
#include "api/services/sessions_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/gate/gate.h"
#include "api/rules/sandbox.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

#define CREDENTIAL_CHECK_MS (AUTHN_CACHE_TTL_MS / 2)

struct session {
    struct sessions_svc *svc;
    struct grpc_call *call; /* one reference, dropped by grpc_call_finish_async */
    struct driver_log *log;
    struct authn_principal who;
    char ns[64], name[64], id[40], source[64];
    bool follow;
    int64_t started_ms;
    uint64_t bytes_out;
};

const char *sessions__text(const struct proto_rows *r, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, 0, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

void sessions__audit(struct sessions_svc *svc, const struct authn_principal *who, const char *ns,
                     const char *id, const char *name, const char *source, const char *operation,
                     int64_t time_ms, bool success, int status, const char *message)
{
    if (svc->sink == NULL) {
        return;
    }
    struct audit_record r = {.time_ms = time_ms,
                             .class_uid = AUDIT_CLASS_API_ACTIVITY,
                             .activity = strstr(operation, "/Logs") != NULL ? AUDIT_READ : AUDIT_OTHER,
                             .actor_id = who->id,
                             .actor_name = who->name,
                             .actor_kind = who->kind,
                             .operation = operation,
                             .ns = ns,
                             .resource_type = "sandbox",
                             .resource_id = id,
                             .resource_name = name,
                             .success = success,
                             .status_code = status,
                             .message = message,
                             .source = source,
                             .replica_id = svc->replica_id,
                             .gateway_id = svc->gateway_id};
    audit_sink_record(svc->sink, &r);
}

static void audit(struct sessions_svc *svc, const struct session *s, int64_t time_ms, bool success,
                  int status, const char *message)
{
    sessions__audit(svc, &s->who, s->ns, s->id, s->name, s->source, "/gantry.v1.Sandboxes/Logs", time_ms,
                    success, status, message);
}

/* The credential of a long session, checked again (as a watch does): 0, or GERR_UNAUTH with @why;
 * store errors are transient (0: the session goes on and checks later). */
int sessions__credential_ok(struct store_client *cl, const struct authn_principal *who, int64_t now_ms,
                            char *why, size_t len)
{
    if (who->not_after_ms != 0 && now_ms >= who->not_after_ms) {
        snprintf(why, len, "the session ended: its credential expired");
        return GERR_UNAUTH;
    }
    if (who->key_id[0] == '\0') {
        return 0;
    }
    struct proto_value k[] = {proto_text(who->key_id)};
    int64_t revoked = 0;
    int rv = store_client_query_int(cl, "SELECT revoked_at_ms FROM api_keys WHERE id = ?", k, 1, &revoked);
    if (rv == GERR_NOTFOUND || (rv == 0 && revoked != 0)) {
        snprintf(why, len, "the session ended: its API key was %s", rv == 0 ? "revoked" : "deleted");
        return GERR_UNAUTH;
    }
    return 0;
}

static void *session_main(void *arg)
{
    struct session *s = arg;
    struct sessions_svc *svc = s->svc;
    struct clock *clk = clock_system();
    struct store_client cl;
    bool have_cl = store_client_init(&cl, &svc->store_cfg) == 0;
    uint8_t *buf = mem_alloc(DRIVER_LOG_CHUNK);
    char errmsg[GERR_MSG_SIZE] = "", why[GERR_MSG_SIZE] = "";
    int status = GRPC_STATUS_OK;
    uint64_t last_check = clock_mono_ms(clk);
    for (;;) {
        if (atomic_load(&svc->stopping)) {
            status = GRPC_STATUS_UNAVAILABLE;
            snprintf(why, sizeof why, "the replica is stopping: read the log again (with since_ms)");
            break;
        }
        if (grpc_call_cancelled(s->call)) {
            status = GRPC_STATUS_CANCELLED;
            snprintf(why, sizeof why, "the client went away");
            break;
        }
        /* The credential is checked every CREDENTIAL_CHECK_MS whether or not output flows: a
         * sandbox printing without a pause must not keep a revoked key's stream open. */
        uint64_t now = clock_mono_ms(clk);
        if (s->follow && have_cl && now - last_check >= CREDENTIAL_CHECK_MS) {
            last_check = now;
            if (sessions__credential_ok(&cl, &s->who, (int64_t)clk->wall_ms(clk), why, sizeof why) != 0) {
                status = GRPC_STATUS_UNAUTHENTICATED;
                break;
            }
        }
        size_t n = 0;
        uint64_t ts = 0;
        int rv = driver_log_next(s->log, buf, DRIVER_LOG_CHUNK, &n, &ts, errmsg);
        if (rv == 0) {
            while (grpc_call_unsent(s->call) > SESSIONS_SEND_BOUND && !grpc_call_cancelled(s->call) &&
                   !atomic_load(&svc->stopping)) {
                clk->sleep_ns(clk, 2 * 1000000ull); /* the client reads slowly: wait for it */
            }
            Gantry__V1__LogChunk chunk = GANTRY__V1__LOG_CHUNK__INIT;
            chunk.data.data = buf;
            chunk.data.len = n;
            chunk.time_ms = ts;
            (void)grpc_call_send_async(s->call, &chunk.base); /* 64 KiB: never over the message limit */
            s->bytes_out += n;
            continue;
        }
        if (rv == GERR_BUSY && s->follow) {
            clk->sleep_ns(clk, (uint64_t)SESSIONS_POLL_MS * 1000000u);
            continue;
        }
        if (rv == GERR_BUSY || rv == GERR_CLOSED) {
            snprintf(why, sizeof why, "%s", rv == GERR_CLOSED ? "the output ended" : "the end of the log");
        } else if (rv == GERR_NOTFOUND) {
            status = GRPC_STATUS_NOT_FOUND;
            snprintf(why, sizeof why, "sandbox \"%s\" of namespace \"%s\" was deleted", s->name, s->ns);
        } else {
            status = GRPC_STATUS_INTERNAL;
            snprintf(why, sizeof why, "reading the log of sandbox \"%s\": %.400s", s->name, errmsg);
        }
        break;
    }
    grpc_call_finish_async(s->call, status, status == GRPC_STATUS_OK ? NULL : why, NULL);
    int64_t end_ms = (int64_t)clk->wall_ms(clk);
    char msg[GERR_MSG_SIZE + 200];
    snprintf(msg, sizeof msg,
             "logs session ended: %s; %" PRIu64 " bytes sent, 0 received; started %" PRId64
             ", lasted %" PRId64 " ms",
             why, s->bytes_out, s->started_ms, end_ms - s->started_ms);
    audit(svc, s, end_ms, status == GRPC_STATUS_OK || status == GRPC_STATUS_CANCELLED, status, msg);
    if (have_cl) {
        store_client_close(&cl);
    }
    mem_free(buf);
    driver_log_close(s->log);
    atomic_fetch_sub(&svc->sessions, 1);
    mem_free(s);
    return NULL;
}

enum sessions__use sessions__access(struct gate_ctx *ctx, const char *id, const char *owner, const char *ns)
{
    if (!ctx->decision.owner_check || strcmp(owner, ctx->who.id) == 0) {
        return SESSIONS_USE_EXEC;
    }
    if (!sandbox_rules_share_active(ctx->who.bindings, ctx->who.n_bindings, ns)) {
        return SESSIONS_USE_NONE;
    }
    struct proto_value p[] = {proto_text(id), proto_text(ctx->who.id)};
    int64_t exec = -1;
    int rv = store_client_query_int(ctx->cl,
                                    "SELECT max(access = 'exec') FROM shares WHERE sandbox_id = ? AND "
                                    "grantee_id = ? HAVING count(*) > 0",
                                    p, 2, &exec);
    return rv != 0 ? SESSIONS_USE_NONE : exec == 1 ? SESSIONS_USE_EXEC : SESSIONS_USE_READ;
}

static void sb_logs(struct gate_ctx *ctx, void *data)
{
    struct sessions_svc *svc = data;
    const Gantry__V1__LogsRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "name is required");
        return;
    }
    if (req->tail_lines < 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "tail_lines must be 0 (everything) or more, not %" PRId64, req->tail_lines);
        return;
    }
    if (req->since_ms < 0) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "since_ms must be 0 (no bound) or a Unix time in milliseconds, not %" PRId64,
                  req->since_ms);
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(req->namespace_), proto_text(req->name)};
    int rv = store_client_query(
        ctx->cl, "SELECT id, owner_id, phase FROM sandboxes WHERE namespace = ? AND name = ?", p, 2, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "find sandbox: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    if (rows.n_rows == 0 || sessions__access(ctx, sessions__text(&rows, 0), sessions__text(&rows, 1),
                                             req->namespace_) == SESSIONS_USE_NONE) {
        gate_fail(
            ctx, GRPC_STATUS_NOT_FOUND,
            "sandbox \"%.63s\" does not exist in namespace \"%.63s\" (or is not yours or shared with you)",
            req->name, req->namespace_);
        proto_rows_close(&rows);
        return;
    }
    struct session *s = mem_zalloc(sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", sessions__text(&rows, 0));
    char phase[24];
    snprintf(phase, sizeof phase, "%s", sessions__text(&rows, 2));
    proto_rows_close(&rows);
    gate_release_store(ctx);

    struct driver_caps caps = {0};
    if (svc->driver != NULL) {
        driver_capabilities(svc->driver, &caps);
    }
    char errmsg[GERR_MSG_SIZE] = "";
    if (svc->driver == NULL) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION,
                  "this cluster runs no compute driver: there are no logs");
    } else if (!caps.logs) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "logs are not supported by the %s driver yet",
                  caps.name);
    } else if (strcmp(phase, "PROVISIONING") == 0 || strcmp(phase, "DELETING") == 0) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "sandbox \"%.63s\" is %s: it has no log to read now",
                  req->name,
                  strcmp(phase, "DELETING") == 0 ? "being deleted" : "not started yet (PROVISIONING)");
    } else if (atomic_fetch_add(&svc->sessions, 1) >= SESSIONS_MAX || atomic_load(&svc->stopping)) {
        atomic_fetch_sub(&svc->sessions, 1);
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "this replica serves %u sessions already: try another replica", SESSIONS_MAX);
    } else {
        struct driver_log_query q = {.tail_lines = req->tail_lines > 0 ? req->tail_lines : -1,
                                     .since_ms = (uint64_t)req->since_ms};
        rv = driver_logs_open(svc->driver, req->namespace_, s->id, &q, &s->log, errmsg);
        if (rv != 0) {
            atomic_fetch_sub(&svc->sessions, 1);
            if (rv == GERR_NOTFOUND) {
                /* The store says it runs, the driver here has no log of it: another host's sandbox. */
                gate_fail(
                    ctx, GRPC_STATUS_UNAVAILABLE,
                    "this replica cannot reach the log of sandbox \"%.63s\" (phase %s): its driver has no "
                    "record of it here; sessions are not routed between replicas yet, so call a replica "
                    "that shares the driver's state",
                    req->name, phase);
            } else {
                gate_fail(ctx, grpc_status_from_gerr(rv), "open the log of sandbox \"%.63s\": %s", req->name,
                          errmsg);
            }
        } else {
            s->svc = svc;
            s->call = ctx->call;
            s->who = ctx->who;
            s->follow = req->follow;
            snprintf(s->ns, sizeof s->ns, "%s", req->namespace_);
            snprintf(s->name, sizeof s->name, "%s", req->name);
            snprintf(s->source, sizeof s->source, "%s", grpc_call_peer(ctx->call));
            s->started_ms = (int64_t)clock_system()->wall_ms(clock_system());
            char msg[200];
            snprintf(msg, sizeof msg,
                     "logs session started: follow %s, tail_lines %" PRId64 ", since_ms %" PRId64,
                     req->follow ? "yes" : "no", req->tail_lines, req->since_ms);
            audit(svc, s, s->started_ms, true, GRPC_STATUS_OK, msg);
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rv = pthread_create(&t, &attr, session_main, s);
            pthread_attr_destroy(&attr);
            if (rv == 0) {
                return; /* the thread owns s and answers the call */
            }
            driver_log_close(s->log);
            atomic_fetch_sub(&svc->sessions, 1);
            gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a session thread");
        }
    }
    mem_free(s);
}

int sessions_svc_register(struct gate *g, struct sessions_svc *svc, char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Sandboxes/Logs", sb_logs, svc) != 0 ||
        gate_route(g, "/gantry.v1.Sandboxes/Exec", sessions__exec, svc) != 0 ||
        gate_route(g, "/gantry.v1.Sandboxes/PortForward", sessions__port_forward, svc) != 0) {
        gerr_set(errmsg, "sessions service: cannot route Sandboxes/Logs, Exec and PortForward");
        return GERR_INVAL;
    }
    return 0;
}

void sessions_svc_stop(struct sessions_svc *svc)
{
    atomic_store(&svc->stopping, true);
    struct clock *clk = clock_system();
    for (int i = 0; i < 300 && atomic_load(&svc->sessions) > 0; i++) {
        clk->sleep_ns(clk, 10 * 1000000ull);
    }
}
