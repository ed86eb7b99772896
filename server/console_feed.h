/* The operator console's data (server/console.h): what one signed-in principal may see, as JSON,
 * built from gantry.v1 calls made for them inside the replica (api/gate/gate.h gate_call_local).
 *
 * Every value comes from an API call carrying the principal's own credential, so the console can
 * show nothing the API would not: the authorization table decides, denials are audited like any
 * other, and a revoked key stops working within the API's bound. The principal's bindings (WhoAmI)
 * only decide which calls are worth making (no ListMembers for a user, who would be denied).
 *
 * One snapshot costs, for a platform admin: WhoAmI, ListMembers, GetLease, Namespaces.List (every
 * page of 500), Sandboxes.List (up to CONSOLE_FEED_MAX_SANDBOXES), Quotas.List (every page), Audit.Query
 * (only events newer than the view's last); for others the same without the cluster calls, with Quotas.Get
 * per namespace they are bound in (at most 16) and Audit.Query only where they may read it.
 *
 * Never in the JSON: secrets (none of these calls returns one), sandbox specs (environment values
 * may hold credentials), OCSF JSON. Blocking: call on the console's own threads, never the loop. */
#ifndef GANTRY_SERVER_CONSOLE_FEED_H
#define GANTRY_SERVER_CONSOLE_FEED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api/gate/gate.h"
#include "server/console_req.h"

#define CONSOLE_FEED_MAX_SANDBOXES 1000u
#define CONSOLE_FEED_AUDIT_TAIL    50u
#define CONSOLE_FEED_CALL_MS       5000u

struct console_feed {
    struct gate *gate;
    uint64_t replica_id;
    const char *replica_name;
    const atomic_bool *stop; /* may be NULL; once true, a snapshot or drill gives up between calls */
};

/* Whether the replica is stopping (f->stop set): long work on the console's threads ends early. */
bool console_feed_stopping(const struct console_feed *f);

/* The result of one call made for the principal. */
struct console_call {
    int status; /* gRPC status */
    char message[256];
};

/* Make one unary call @path for the holder of @authorization ("Bearer <token>") from @peer (the
 * browser's address, for the audit trail), waiting at most CONSOLE_FEED_CALL_MS. On OK, *@resp is
 * the decoded answer (free it with protobuf_c_message_free_unpacked); otherwise NULL and @res says
 * why. */
void console_feed_call(const struct console_feed *f, const char *authorization, const char *peer,
                       const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       struct console_call *res);

/* What one live view keeps between snapshots: the principal as last seen (used while WhoAmI itself
 * cannot be answered, e.g. during an election) and the audit tail shown so far (newest last) with
 * where the next query starts. Zeroed: a new view. */
struct console_view {
    json_t *who;      /* console_feed_whoami's object, or NULL */
    json_t *events;   /* array, or NULL */
    int64_t last_ms;  /* time of the newest event shown */
    uint64_t last_id; /* its id */
};
void console_view_free(struct console_view *v);

/* WhoAmI for @authorization: the principal as JSON {"id", "name", "kind", "roles": [{"role",
 * "namespace"}]} in *@who, or NULL with @res saying why (UNAUTHENTICATED: not a valid credential). */
void console_feed_whoami(const struct console_feed *f, const char *authorization, const char *peer,
                         json_t **who, struct console_call *res);

/* Whether @who (console_feed_whoami's object, or NULL) holds platform_admin on the whole cluster. */
bool console_feed_platform_admin(const json_t *who);

/* A snapshot (docs/console.md, "The data endpoint") for @authorization. @view carries a live view's
 * state from one snapshot to the next (a one-shot request passes a zeroed one and frees it after).
 * Returns the object, or NULL when the credential is not valid (any more): @res has WhoAmI's
 * UNAUTHENTICATED; or NULL with UNAVAILABLE when the replica began stopping meanwhile. Failures of other
 * calls are listed in the snapshot's "errors". */
json_t *console_feed_snapshot(const struct console_feed *f, const char *authorization, const char *peer,
                              const struct console_filter *filter, struct console_view *view,
                              struct console_call *res);

#endif
