/* Using a sandbox: gantry.v1 Sandboxes.Logs (here) and Sandboxes.Exec (exec_session.c), which
 * share the session limit, the stop and the audit (docs/sessions.md).
 *
 * Logs streams the output of a sandbox's main process (LogChunk messages) from the driver's log
 * reader (drivers/driver.h, driver_logs_open): everything kept, the last tail_lines lines, or what
 * came at or after since_ms; with follow, new output as it comes until the output ends (the main
 * process and everything holding its output are gone: OK), the sandbox is deleted (NOT_FOUND,
 * "... was deleted"), the caller's credential is revoked or expires (UNAUTHENTICATED), the client
 * goes away, or the replica stops (UNAVAILABLE).
 *
 * Who: the rule AZ_SANDBOX_USE (api/authz/authz.h) admits platform and namespace admins, and
 * members of the namespace for their own sandboxes or those shared with them (a READ or an EXEC
 * share); this module checks ownership and shares. A sandbox the caller may not use is NOT_FOUND,
 * as for Get (its existence is not confirmed).
 *
 * Where: the replica that receives the call serves it through its own driver when that driver
 * has a record of the sandbox (the process driver keeps logs in its state directory, which every
 * replica of a host shares, docs/drivers.md). Otherwise it routes the session over the peer
 * channel to another replica whose driver has one (session_route.h: the members are asked in
 * turn), relays it, and keeps authorizing it itself; UNAVAILABLE when no replica has a record.
 *
 * Flow control: each session runs on a thread of its own and sends with grpc_call_send_async,
 * waiting while grpc_call_unsent is above SESSIONS_SEND_BOUND, so a client that reads slowly
 * holds at most about that much of the replica's memory; the driver's reader holds one chunk.
 *
 * Limits: at most SESSIONS_MAX per replica and SESSIONS_PER_SANDBOX per sandbox on a replica
 * (RESOURCE_EXHAUSTED beyond). An Exec or PortForward in which no byte moved either way for
 * idle_timeout_ms ends with DEADLINE_EXCEEDED (a Logs follow of a quiet sandbox is not cut). A follow polls
 * the log every SESSIONS_POLL_MS while it has nothing to send.
 *
 * Re-authorization: every second a running session (a follow, an exec, a port-forward) is
 * authorized again from the store: credential, principal enabled, role bindings, share
 * (sessions_internal.h, sessions__still_allowed); UNAUTHENTICATED or PERMISSION_DENIED ends it.
 *
 * Audit: each session is two OCSF API Activity events attributed to the caller (through the
 * audit sink): its start (with the query) and its end (status, duration, bytes sent). */
#ifndef GANTRY_API_SERVICES_SESSIONS_SVC_H
#define GANTRY_API_SERVICES_SESSIONS_SVC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/gate/audit_sink.h"
#include "drivers/driver.h"
#include "store/client.h"

#define SESSIONS_MAX         64u
#define SESSIONS_PER_SANDBOX 16u
#define SESSIONS_SEND_BOUND  (256u << 10)
#define SESSIONS_POLL_MS     100u

struct gate;
struct sandboxes_svc;
struct authn;

struct sessions_svc {
    struct driver *driver;    /* borrowed; NULL: the cluster runs no driver */
    struct audit_sink *sink;  /* borrowed; NULL: sessions are not audited */
    uint64_t replica_id;      /* tags the audit events */
    uint64_t idle_timeout_ms; /* Exec/PortForward with no byte either way this long end; 0: never */
    const char *gateway_id;   /* borrowed */
    struct store_client_config store_cfg; /* for the credential checks of long sessions */
    /* Routing (api/services/session_route.h): the other replicas' peer addresses (at most @max,
     * returns how many) and a dial to one of them with SROUTE_ALPN (0 with a connected fd, owned
     * by the caller). route_peers NULL: a session this replica cannot serve is not routed. */
    unsigned (*route_peers)(void *arg, char (*out)[64], unsigned max);
    int (*route_dial)(void *arg, const char *address, int *fd, char *errmsg);
    void *route_arg;
    /* borrowed, may be NULL: where a session's sandbox and the caller's share are found at its
     * start (sandboxes_svc_session_target, no store query); NULL: the store. Set before calls
     * arrive. */
    struct sandboxes_svc *sandboxes;
    /* borrowed, may be NULL: a running session's checks read its models (authn_models_state)
     * and the shares from @sandboxes' model; NULL: the store. Set before calls arrive. */
    struct authn *authn;
    atomic_ullong model_checks; /* running sessions' checks decided from the models
                                 * (gantry_session_model_checks_total) */
    atomic_bool stopping;
    atomic_uint sessions;
    /* The sandbox of each running session (""), for SESSIONS_PER_SANDBOX; under mu, which
     * sessions_svc_register initializes. */
    pthread_mutex_t mu;
    char running[SESSIONS_MAX][40];
};

/* Route Sandboxes.Logs and Sandboxes.Exec to this service. Before gate_register. */
int sessions_svc_register(struct gate *g, struct sessions_svc *svc, char *errmsg);

/* End every session (UNAVAILABLE) and wait (up to 3 s) until their threads are gone. */
void sessions_svc_stop(struct sessions_svc *svc);

#endif
