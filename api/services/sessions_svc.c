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

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/gate/gate.h"
#include "api/rules/sandbox.h"
#include "api/services/session_route.h"
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
    struct sessions__grant grant;
    int sock; /* a routed session: the connection to the serving replica (-1: served here) */
    struct sroute_reader rd;
    char via[64]; /* its peer address */
};

/* A routed follow's next step: relay the serving replica's frames. 0 to go on; otherwise the
 * session ends with *@status and @why. */
static int routed_step(struct session *s, int *status, char *why, size_t len)
{
    struct clock *clk = clock_system();
    int kind;
    const uint8_t *p;
    size_t n;
    int rv = sroute_reader_next(&s->rd, &kind, &p, &n);
    if (rv == GERR_BUSY) {
        struct pollfd pf = {s->sock, POLLIN, 0};
        if (poll(&pf, 1, 100) > 0 && (rv = sroute_reader_fill(&s->rd, s->sock)) != 0) {
            *status = GRPC_STATUS_UNAVAILABLE;
            snprintf(why, len,
                     "the replica serving the session (%s) went away: read the log again (with since_ms)",
                     s->via);
            return rv;
        }
        return 0;
    }
    if (rv != 0 || kind == SROUTE_END) {
        fwd_response *e = rv == 0 ? fwd_response_decode(p, n) : NULL;
        *status = e != NULL ? e->status : GRPC_STATUS_UNAVAILABLE;
        if (e == NULL) {
            snprintf(why, len, "the replica serving the session (%s) sent a malformed frame", s->via);
        } else if (e->status == GRPC_STATUS_NOT_FOUND) {
            snprintf(why, len, "sandbox \"%s\" of namespace \"%s\" was deleted", s->name, s->ns);
        } else {
            snprintf(why, len, "%s", e->message);
        }
        if (e != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(e, NULL);
        }
        return GERR_CLOSED;
    }
    Gantry__V1__LogChunk *c = kind == SROUTE_MSG ? gantry__v1__log_chunk__unpack(NULL, n, p) : NULL;
    if (c == NULL) {
        return 0;
    }
    while (grpc_call_unsent(s->call) > SESSIONS_SEND_BOUND && !grpc_call_cancelled(s->call) &&
           !atomic_load(&s->svc->stopping)) {
        clk->sleep_ns(clk, 2 * 1000000ull); /* the client reads slowly: stop reading the target */
    }
    (void)grpc_call_send_async(s->call, &c->base);
    s->bytes_out += c->data.len;
    gantry__v1__log_chunk__free_unpacked(c, NULL);
    return 0;
}

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

void sessions__grant_init(struct sessions__grant *g, const struct gate_ctx *ctx, int op, const char *ns,
                          const char *id, const char *owner)
{
    memset(g, 0, sizeof *g);
    g->rule = ctx->rule;
    g->op = op;
    snprintf(g->ns, sizeof g->ns, "%s", ns);
    snprintf(g->id, sizeof g->id, "%s", id);
    snprintf(g->owner, sizeof g->owner, "%s", owner);
}

/* The role bindings of principal @id as stored now, into @b (at most AUTHN_MAX_BINDINGS); an
 * unreadable scope grants nothing, as in authn. */
static int read_bindings(struct store_client *cl, const char *id, struct authz_binding *b, size_t *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    int rv = store_client_query(
        cl, "SELECT role, namespace, scope FROM role_bindings WHERE principal_id = ? ORDER BY id", p, 1,
        &rows);
    *n = 0;
    for (size_t i = 0; rv == 0 && i < rows.n_rows && *n < AUTHN_MAX_BINDINGS; i++) {
        const struct proto_value *role = proto_rows_at(&rows, i, 0), *ns = proto_rows_at(&rows, i, 1),
                                 *scope = proto_rows_at(&rows, i, 2);
        struct authz_binding *x = &b[*n];
        memset(x, 0, sizeof *x);
        x->role = role->type == PROTO_TEXT ? authz_role_parse(role->u.b.s) : 0;
        snprintf(x->ns, sizeof x->ns, "%s", ns->type == PROTO_TEXT ? ns->u.b.s : "");
        if (authz_scope_parse(scope->type == PROTO_TEXT ? scope->u.b.s : "", &x->scope) != 0) {
            x->role = 0;
        }
        if (x->role != 0) {
            (*n)++;
        }
    }
    proto_rows_close(&rows);
    return rv;
}

int sessions__still_allowed(struct sessions_svc *svc, struct store_client *cl,
                            const struct authn_principal *who, const struct sessions__grant *g,
                            int64_t now_ms, char *why, size_t len)
{
    if (who->not_after_ms != 0 && now_ms >= who->not_after_ms) {
        snprintf(why, len, "the session ended: its credential expired");
        return GERR_UNAUTH;
    }
    /* From the change-feed models when they hold the key and the enabled principal (the store
     * gives the exact reason otherwise: deleted, disabled). */
    struct authz_binding *b = mem_zalloc(AUTHN_MAX_BINDINGS * sizeof *b);
    size_t n = 0;
    bool revoked = false;
    bool modeled = authn_models_state(svc->authn, who, &revoked, b, &n) == 0;
    if (modeled) {
        atomic_fetch_add(&svc->model_checks, 1);
    }
    int rv = 0;
    if (modeled && revoked) {
        snprintf(why, len, "the session ended: its API key was revoked");
        mem_free(b);
        return GERR_UNAUTH;
    }
    if (!modeled) {
        rv = sessions__credential_ok(cl, who, now_ms, why, len);
        if (rv != 0) {
            mem_free(b);
            return rv;
        }
        struct proto_value k[] = {proto_text(who->id)};
        int64_t disabled = 0;
        rv = store_client_query_int(cl, "SELECT disabled FROM principals WHERE id = ?", k, 1, &disabled);
        if (rv == GERR_NOTFOUND || (rv == 0 && disabled != 0)) {
            snprintf(why, len, "the session ended: its principal \"%.127s\" was %s", who->name,
                     rv == 0 ? "disabled" : "deleted");
            mem_free(b);
            return GERR_UNAUTH;
        }
        if (rv == 0 && g->rule != NULL) {
            rv = read_bindings(cl, who->id, b, &n);
        }
    }
    if (rv != 0 || g->rule == NULL) {
        mem_free(b);
        return 0;
    }
    /* The rule again, on a request naming the session's namespace (its field path differs). */
    Gantry__V1__LogsRequest lr = GANTRY__V1__LOGS_REQUEST__INIT;
    Gantry__V1__ExecStart xs = GANTRY__V1__EXEC_START__INIT;
    Gantry__V1__ExecRequest xr = GANTRY__V1__EXEC_REQUEST__INIT;
    Gantry__V1__PortForwardStart ps = GANTRY__V1__PORT_FORWARD_START__INIT;
    Gantry__V1__PortForwardRequest pr = GANTRY__V1__PORT_FORWARD_REQUEST__INIT;
    const ProtobufCMessage *req = &lr.base;
    lr.namespace_ = (char *)g->ns;
    xs.namespace_ = (char *)g->ns;
    ps.namespace_ = (char *)g->ns;
    xr.start = &xs;
    pr.start = &ps;
    if (g->op == SESSIONS_OP_EXEC) {
        req = &xr.base;
    } else if (g->op == SESSIONS_OP_PORT) {
        req = &pr.base;
    }
    struct authz_caller c = {.principal_id = who->id, .bindings = b, .n_bindings = n};
    struct authz_decision d;
    authz_decide(g->rule, &c, req, &d);
    rv = 0;
    if (!d.allowed) {
        snprintf(why, len,
                 "the session ended: principal \"%.127s\" no longer holds a role that allows it in namespace "
                 "\"%s\"",
                 who->name, g->ns);
        rv = GERR_PERM;
    } else if (d.owner_check && strcmp(g->owner, who->id) != 0) {
        int64_t exec = -1;
        struct proto_value p[] = {proto_text(g->id), proto_text(who->id)};
        int share = !sandbox_rules_share_active(b, n, g->ns) ? -1
                    : modeled && svc->sandboxes != NULL
                        ? sandboxes_svc_share_now(svc->sandboxes, g->id, who->id)
                        : -2;
        int q = share == -1 ? GERR_NOTFOUND : 0;
        if (share == -2) {
            q = store_client_query_int(cl,
                                       "SELECT max(access = 'exec') FROM shares WHERE sandbox_id = ? AND "
                                       "grantee_id = ? HAVING count(*) > 0",
                                       p, 2, &exec);
        } else if (share >= 0) {
            exec = share;
        }
        if (q == GERR_NOTFOUND) {
            snprintf(why, len, "the session ended: the sandbox is no longer shared with principal \"%.127s\"",
                     who->name);
            rv = GERR_PERM;
        } else if (q == 0 && exec != 1 && g->op != SESSIONS_OP_LOGS) {
            snprintf(why, len,
                     "the session ended: principal \"%.127s\" now holds a read share of the sandbox, which "
                     "allows reading its logs only",
                     who->name);
            rv = GERR_PERM;
        }
    }
    mem_free(b);
    return rv;
}

int sessions__claim(struct sessions_svc *svc, const char *id)
{
    if (atomic_load(&svc->stopping)) {
        return GERR_BUSY;
    }
    pthread_mutex_lock(&svc->mu);
    int free_slot = -1;
    unsigned same = 0;
    for (unsigned i = 0; i < SESSIONS_MAX; i++) {
        if (svc->running[i][0] == '\0') {
            free_slot = free_slot < 0 ? (int)i : free_slot;
        } else if (strcmp(svc->running[i], id) == 0) {
            same++;
        }
    }
    int rv = free_slot < 0 ? GERR_BUSY : same >= SESSIONS_PER_SANDBOX ? GERR_TOOBIG : 0;
    if (rv == 0) {
        snprintf(svc->running[free_slot], sizeof svc->running[free_slot], "%s", id);
        atomic_fetch_add(&svc->sessions, 1);
    }
    pthread_mutex_unlock(&svc->mu);
    return rv;
}

void sessions__release(struct sessions_svc *svc, const char *id)
{
    pthread_mutex_lock(&svc->mu);
    for (unsigned i = 0; i < SESSIONS_MAX; i++) {
        if (strcmp(svc->running[i], id) == 0) {
            svc->running[i][0] = '\0';
            break;
        }
    }
    pthread_mutex_unlock(&svc->mu);
    atomic_fetch_sub(&svc->sessions, 1);
}

int sessions__route(struct sessions_svc *svc, struct gate_ctx *ctx, const char *method,
                    const ProtobufCMessage *first, const char *id, int *fd, struct sroute_reader *r,
                    char *via, size_t via_len, int *status, char *msg, size_t msg_len)
{
    if (svc->route_peers == NULL || svc->route_dial == NULL) {
        return GERR_NOTFOUND;
    }
    char(*peers)[64] = mem_zalloc(16 * sizeof *peers);
    unsigned n = svc->route_peers(svc->route_arg, peers, 16);
    size_t len = protobuf_c_message_get_packed_size(first);
    uint8_t *packed = mem_alloc(len + 1);
    protobuf_c_message_pack(first, packed);
    fwd_request h = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    Gantry__Internal__V1__ForwardPrincipal pr = GANTRY__INTERNAL__V1__FORWARD_PRINCIPAL__INIT;
    pr.id = ctx->who.id;
    pr.name = ctx->who.name;
    pr.kind = ctx->who.kind;
    pr.via = ctx->who.via;
    h.method = (char *)method;
    h.request.data = packed;
    h.request.len = len;
    h.principal = &pr;
    h.peer = (char *)grpc_call_peer(ctx->call);
    h.origin_replica = svc->replica_id;
    h.sandbox_id = (char *)id;
    int rv = GERR_NOTFOUND;
    for (unsigned i = 0; i < n && rv == GERR_NOTFOUND; i++) {
        char err[GERR_MSG_SIZE];
        int c = -1;
        if (svc->route_dial(svc->route_arg, peers[i], &c, err) != 0) {
            LOG_INFO("sessions: route to %s: %s", peers[i], err);
            continue;
        }
        fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
        sroute_reader_close(r);
        int kind = 0;
        const uint8_t *p = NULL;
        size_t plen = 0;
        if (sroute_send(c, SROUTE_HEADER, &h.base, &svc->stopping) != 0 ||
            sroute_wait_frame(c, r, &kind, &p, &plen, 10000) != 0) {
            close(c);
            continue;
        }
        if (kind == SROUTE_STARTED) {
            *fd = c;
            snprintf(via, via_len, "%s", peers[i]);
            rv = 0;
            break;
        }
        fwd_response *e = kind == SROUTE_END ? fwd_response_decode(p, plen) : NULL;
        close(c);
        if (e != NULL && e->status != GRPC_STATUS_NOT_FOUND) {
            *status = e->status;
            snprintf(msg, msg_len, "%s (replica at %s)", e->message, peers[i]);
            rv = GERR_REFUSED;
        }
        if (e != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(e, NULL);
        }
    }
    if (rv != 0) {
        sroute_reader_close(r); /* nothing of it is the caller's */
    }
    mem_free(packed);
    mem_free(peers);
    return rv;
}

void sessions__claim_fail(struct gate_ctx *ctx, int rv, const char *name)
{
    if (rv == GERR_TOOBIG) {
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "sandbox \"%.63s\" has %u sessions on this replica already (logs, exec and port-forward "
                  "together): end one first",
                  name, SESSIONS_PER_SANDBOX);
    } else {
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "this replica serves %u sessions already: try another replica", SESSIONS_MAX);
    }
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
        /* Authorized again every CREDENTIAL_CHECK_MS whether or not output flows: a sandbox
         * printing without a pause must not keep a revoked key's or an unshared reader's stream
         * open. */
        uint64_t now = clock_mono_ms(clk);
        if ((s->follow || s->sock >= 0) && have_cl && now - last_check >= CREDENTIAL_CHECK_MS) {
            last_check = now;
            int az = sessions__still_allowed(svc, &cl, &s->who, &s->grant, (int64_t)clk->wall_ms(clk), why,
                                             sizeof why);
            if (az != 0) {
                status = az == GERR_PERM ? GRPC_STATUS_PERMISSION_DENIED : GRPC_STATUS_UNAUTHENTICATED;
                break;
            }
        }
        if (s->sock >= 0) {
            if (routed_step(s, &status, why, sizeof why) != 0) {
                break;
            }
            continue;
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
    char msg[GERR_MSG_SIZE + 300];
    snprintf(msg, sizeof msg,
             "logs session ended: %s; %" PRIu64 " bytes sent, 0 received; started %" PRId64
             ", lasted %" PRId64 " ms%s%s",
             why, s->bytes_out, s->started_ms, end_ms - s->started_ms,
             s->sock >= 0 ? "; served by the replica at " : "", s->via);
    audit(svc, s, end_ms, status == GRPC_STATUS_OK || status == GRPC_STATUS_CANCELLED, status, msg);
    if (have_cl) {
        store_client_close(&cl);
    }
    mem_free(buf);
    if (s->sock >= 0) {
        close(s->sock); /* ends the serving replica's side */
    }
    sroute_reader_close(&s->rd);
    if (s->log != NULL) {
        driver_log_close(s->log);
    }
    sessions__release(svc, s->id);
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

bool sessions__target(struct sessions_svc *svc, struct gate_ctx *ctx, const char *ns, const char *name,
                      struct sb_session_target *t)
{
    bool answered = false;
    if (svc->sandboxes != NULL && sandboxes_svc_session_target(svc->sandboxes, ctx, ns, name, t, &answered)) {
        return true;
    }
    if (answered) {
        return false;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns), proto_text(name)};
    int rv = store_client_query(
        ctx->cl, "SELECT id, owner_id, phase FROM sandboxes WHERE namespace = ? AND name = ?", p, 2, &rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "find sandbox: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return false;
    }
    memset(t, 0, sizeof *t);
    if (rows.n_rows > 0) {
        enum sessions__use use =
            sessions__access(ctx, sessions__text(&rows, 0), sessions__text(&rows, 1), ns);
        t->found = use != SESSIONS_USE_NONE;
        t->exec = use == SESSIONS_USE_EXEC;
        snprintf(t->id, sizeof t->id, "%s", sessions__text(&rows, 0));
        snprintf(t->owner, sizeof t->owner, "%s", sessions__text(&rows, 1));
        snprintf(t->phase, sizeof t->phase, "%s", sessions__text(&rows, 2));
    }
    proto_rows_close(&rows);
    return true;
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
    struct sb_session_target target;
    if (!sessions__target(svc, ctx, req->namespace_, req->name, &target)) {
        return;
    }
    if (!target.found) {
        gate_fail(
            ctx, GRPC_STATUS_NOT_FOUND,
            "sandbox \"%.63s\" does not exist in namespace \"%.63s\" (or is not yours or shared with you)",
            req->name, req->namespace_);
        return;
    }
    struct session *s = mem_zalloc(sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", target.id);
    sessions__grant_init(&s->grant, ctx, SESSIONS_OP_LOGS, req->namespace_, s->id, target.owner);
    char phase[24];
    snprintf(phase, sizeof phase, "%s", target.phase);
    int rv = 0;
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
    } else if ((rv = sessions__claim(svc, s->id)) != 0) {
        sessions__claim_fail(ctx, rv, req->name);
    } else {
        struct driver_log_query q = {.tail_lines = req->tail_lines > 0 ? req->tail_lines : -1,
                                     .since_ms = (uint64_t)req->since_ms};
        s->sock = -1;
        rv = driver_logs_open(svc->driver, req->namespace_, s->id, &q, &s->log, errmsg);
        int rst = 0;
        char rmsg[GERR_MSG_SIZE + 100] = "";
        bool refused = false; /* by the replica that has the sandbox: its answer is the client's */
        if (rv == GERR_NOTFOUND) {
            /* The store says it runs, the driver here has no log of it: another host's sandbox. */
            int r2 = sessions__route(svc, ctx, "/gantry.v1.Sandboxes/Logs", &req->base, s->id, &s->sock,
                                     &s->rd, s->via, sizeof s->via, &rst, rmsg, sizeof rmsg);
            rv = r2 == 0 ? 0 : rv;
            refused = r2 != 0 && r2 != GERR_NOTFOUND && rst != 0;
        }
        if (refused) {
            sessions__release(svc, s->id);
            gate_fail(ctx, rst, "%s", rmsg);
        } else if (rv != 0) {
            sessions__release(svc, s->id);
            if (rv == GERR_NOTFOUND) {
                /* The store says it runs, the driver here has no log of it: another host's sandbox. */
                gate_fail(
                    ctx, GRPC_STATUS_UNAVAILABLE,
                    "cannot reach the log of sandbox \"%.63s\" (phase %s): neither this replica's driver nor "
                    "any other replica that answered has a record of it",
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
            char msg[300];
            snprintf(msg, sizeof msg,
                     "logs session started: follow %s, tail_lines %" PRId64 ", since_ms %" PRId64 "%s%s",
                     req->follow ? "yes" : "no", req->tail_lines, req->since_ms,
                     s->sock >= 0 ? "; served by the replica at " : "", s->via);
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
            if (s->log != NULL) {
                driver_log_close(s->log);
            }
            if (s->sock >= 0) {
                close(s->sock);
            }
            sroute_reader_close(&s->rd);
            sessions__release(svc, s->id);
            gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a session thread");
        }
    }
    mem_free(s);
}

int sessions_svc_register(struct gate *g, struct sessions_svc *svc, char *errmsg)
{
    pthread_mutex_init(&svc->mu, NULL);
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
