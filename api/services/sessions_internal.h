/* What the session modules share (api/services/sessions_svc.c: Logs; exec_session.c: Exec). */
#ifndef GANTRY_API_SERVICES_SESSIONS_INTERNAL_H
#define GANTRY_API_SERVICES_SESSIONS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "api/gate/authn.h"
#include "api/gate/gate.h"
#include "api/services/sessions_svc.h"
#include "store/proto.h"

/* What the caller may do with a sandbox (decision.owner_check applied): NONE (neither its owner
 * nor a share holder: answer NOT_FOUND), READ (a read share: logs only), EXEC (owner, admin, or an
 * exec share). Uses ctx->cl. */
enum sessions__use { SESSIONS_USE_NONE = 0, SESSIONS_USE_READ, SESSIONS_USE_EXEC };
enum sessions__use sessions__access(struct gate_ctx *ctx, const char *id, const char *owner, const char *ns);

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

/* The implementations of Sandboxes.Exec and Sandboxes.PortForward (exec_session.c). */
void sessions__exec(struct gate_ctx *ctx, void *data);
void sessions__port_forward(struct gate_ctx *ctx, void *data);

#endif
