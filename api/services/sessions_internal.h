/* What the session modules share (api/services/sessions_svc.c: Logs; exec_session.c: Exec). */
#ifndef GANTRY_API_SERVICES_SESSIONS_INTERNAL_H
#define GANTRY_API_SERVICES_SESSIONS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "api/gate/authn.h"
#include "api/gate/gate.h"
#include "api/services/sandboxes_svc.h"
#include "api/services/sessions_svc.h"
#include "store/proto.h"

/* What the caller may do with a sandbox (decision.owner_check applied): NONE (neither its owner
 * nor a share holder: answer NOT_FOUND), READ (a read share: logs only), EXEC (owner, admin, or an
 * exec share). Uses ctx->cl. */
enum sessions__use { SESSIONS_USE_NONE = 0, SESSIONS_USE_READ, SESSIONS_USE_EXEC };
enum sessions__use sessions__access(struct gate_ctx *ctx, const char *id, const char *owner, const char *ns);

/* The sandbox @ns/@name a session names and the caller's access to it (found false: NOT_FOUND),
 * from the sandboxes model after a read index when the service has one
 * (sandboxes_svc_session_target), else from the store through ctx->cl (sessions__access). true:
 * @t filled; false: the call was answered (a store error, or its read index failed it). */
bool sessions__target(struct sessions_svc *svc, struct gate_ctx *ctx, const char *ns, const char *name,
                      struct sb_session_target *t);

/* Column @c of the first row as text ("" when not text). */
const char *sessions__text(const struct proto_rows *r, unsigned c);

/* One OCSF API Activity event of a session, through the audit sink (nothing when it is NULL). */
void sessions__audit(struct sessions_svc *svc, const struct authn_principal *who, const char *ns,
                     const char *id, const char *name, const char *source, const char *operation,
                     int64_t time_ms, bool success, int status, const char *message);

/* The caller's credential still valid (a long session checks it every second): 0, or GERR_UNAUTH
 * with @why. Store errors count as valid (checked again later). */
int sessions__credential_ok(struct store_client *cl, const struct authn_principal *who, int64_t now_ms,
                            char *why, size_t len);

/* What authorized a session, to authorize it again while it runs (sessions__still_allowed). */
struct sessions__grant {
    const struct authz_rule *rule; /* the method's rule (gate_ctx.rule) */
    enum { SESSIONS_OP_LOGS, SESSIONS_OP_EXEC, SESSIONS_OP_PORT } op;
    char ns[64], id[40];
    char owner[40]; /* the sandbox's owner when the session started */
};

/* The grant of a session starting now (@ctx's rule; @op; the sandbox @id of @ns owned by @owner). */
void sessions__grant_init(struct sessions__grant *g, const struct gate_ctx *ctx, int op, const char *ns,
                          const char *id, const char *owner);

/* A running session authorized again, as at its start, from the store (no cache): the credential
 * (sessions__credential_ok); the principal still exists and is enabled (GERR_UNAUTH otherwise,
 * whatever the credential: API key, OIDC token or client certificate); its role bindings, read
 * again, still pass the method's rule for the namespace; and when the rule leaves the sandbox to
 * this module (owner_check) and the caller is not the owner, a share still grants the session's
 * use (any share for logs, an EXEC share for exec and port-forward). 0, GERR_UNAUTH or GERR_PERM
 * with @why for the client. From the change-feed models (svc->authn, authn_models_state, and the
 * sandboxes model's shares) when they hold the key and the enabled principal, else from the store
 * through @cl. Store errors count as allowed (checked again at the next round). */
int sessions__still_allowed(struct sessions_svc *svc, struct store_client *cl,
                            const struct authn_principal *who, const struct sessions__grant *g,
                            int64_t now_ms, char *why, size_t len);

/* The session limits: at most SESSIONS_MAX on this replica and SESSIONS_PER_SANDBOX per sandbox
 * on this replica. 0 (the caller holds a place: give it back with sessions__release), GERR_BUSY
 * (the replica is full or stopping) or GERR_TOOBIG (the sandbox has its limit). Thread-safe. */
int sessions__claim(struct sessions_svc *svc, const char *id);
void sessions__release(struct sessions_svc *svc, const char *id);

/* Route a session this replica's driver has no record of (session_route.h): ask the other
 * replicas in turn with a HEADER for @method, @first (the call's first message), the caller and
 * sandbox @id. 0: *@fd (non-blocking, the caller's) is the session's connection, STARTED read,
 * @r holding what came after it, @via the serving replica's peer address. GERR_NOTFOUND: no
 * replica serves it (or routing is off). Other errors: the serving replica refused it, with the
 * gRPC status in *@status and its message in @msg. */
struct sroute_reader;
int sessions__route(struct sessions_svc *svc, struct gate_ctx *ctx, const char *method,
                    const ProtobufCMessage *first, const char *id, int *fd, struct sroute_reader *r,
                    char *via, size_t via_len, int *status, char *msg, size_t msg_len);

/* Answer the refusal of sessions__claim (@rv) on @ctx. */
void sessions__claim_fail(struct gate_ctx *ctx, int rv, const char *name);

/* The implementations of Sandboxes.Exec and Sandboxes.PortForward (exec_session.c). */
void sessions__exec(struct gate_ctx *ctx, void *data);
void sessions__port_forward(struct gate_ctx *ctx, void *data);

#endif
