/* The gate every gantry.v1 call passes: authentication (api/gate/authn.h), then the authorization
 * table (api/authz/authz.h), then the method's implementation, on a worker thread.
 *
 * gate_register routes EVERY method of every gantry.v1 service to the gate, so a call to a method
 * without an implementation is still authenticated and authorized first and only then answered
 * UNIMPLEMENTED: the table is enforced for all of the API, built or not. It refuses to start
 * (GERR_INVAL) when a method has no rule in the table.
 *
 * An implementation (gate_impl_fn) runs on a worker with the authenticated caller, the decision
 * and a store client; it must answer the call exactly once with grpc_call_finish_async (after
 * any grpc_call_send_async for streams). The gate holds one call reference for it.
 *
 * Statuses the gate answers itself: UNAUTHENTICATED, RESOURCE_EXHAUSTED (too many failed
 * attempts from one source), PERMISSION_DENIED (with what is missing), UNAVAILABLE (no store
 * connection or leader), UNIMPLEMENTED (authorized, but not built yet). Denials and failed
 * authentications are logged and audited. */
#ifndef GANTRY_API_GATE_GATE_H
#define GANTRY_API_GATE_GATE_H

#include <stdint.h>

#include "api/authz/authz.h"
#include "api/gate/authn.h"
#include "lib/jobs.h"
#include "server/grpc/server.h"
#include "store/pool.h"
#include "store/writer.h"

struct gate_ctx {
    struct grpc_call *call;
    const struct authz_rule *rule;
    struct authz_decision decision;
    struct authn_principal who; /* empty for AZ_TOKEN methods */
    struct authz_caller caller; /* points into who */
    struct store_client *cl;    /* a pooled client, held for the implementation */
    int64_t now_ms;
};

typedef void (*gate_impl_fn)(struct gate_ctx *ctx, void *data);

struct gate;

/* @writer records audit events of denials (OCSF API Activity, Failure) and failed
 * authentications (OCSF Authentication 3002), tagged with @replica_id and @gateway_id (copied). */
struct gate *gate_new(struct jobs *jobs, struct store_pool *pool, struct authn *authn,
                      struct store_writer *writer, uint64_t replica_id, const char *gateway_id);
void gate_free(struct gate *g);

/* Implement @path with @fn. Before gate_register. Returns 0 or GERR_INVAL (no such rule). */
int gate_route(struct gate *g, const char *path, gate_impl_fn fn, void *data);

/* Route every method of @services (NULL-terminated) through the gate. */
int gate_register(struct gate *g, struct grpc_server *s, const ProtobufCServiceDescriptor *const *services,
                  char *errmsg);

/* Helpers for implementations: answer with @status and a printf message. */
void gate_fail(struct gate_ctx *ctx, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
