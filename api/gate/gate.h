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
 * Admission, on the loop thread, before any work (api/gate/admission.h): a call without
 * credentials is answered UNAUTHENTICATED at once; a credential refused moments ago, a source over
 * its failure limit or over its rate of calls without a known credential get their answer at once
 * too, without a worker, a store round trip or a write. Admitted calls go to the worker pool in two
 * bounded classes: credentials verified recently first (never starved by unauthenticated floods),
 * then the rest; a full class answers UNAVAILABLE ("overloaded") at once. A call whose deadline has
 * passed, or whose client went away, while it waited for a worker is dropped unrun.
 *
 * Statuses the gate answers itself: UNAUTHENTICATED, RESOURCE_EXHAUSTED (per-source limits),
 * PERMISSION_DENIED (with what is missing), UNAVAILABLE (overloaded, no store connection or
 * leader), DEADLINE_EXCEEDED (expired while queued), UNIMPLEMENTED (authorized, but not built yet).
 * Denials and failed authentications are logged and audited through the audit sink, which
 * aggregates repeats (api/gate/audit_sink.h). */
#ifndef GANTRY_API_GATE_GATE_H
#define GANTRY_API_GATE_GATE_H

#include <stdint.h>

#include "api/authz/authz.h"
#include "api/forward/fwd.h"
#include "api/gate/admission.h"
#include "api/gate/audit_sink.h"
#include "api/gate/authn.h"
#include "api/gate/nsstats.h"
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
    struct store_client *cl;    /* a pooled client, held for the implementation (NULL once released) */
    int64_t now_ms;
    struct gate *gate;
    /* The idempotency key a mutation without a request_id uses (NULL: res_mutate makes one), and
     * whether it was ever sent before (nothing can be stored under a fresh one). Set for calls
     * forwarded to this replica, and for a call this replica runs itself after forwarding it
     * failed. */
    const char *idem_key;
    bool idem_fresh;
    bool forwarded; /* another replica forwarded this call (it is never forwarded again) */
    /* Set by a handler before res_mutate when its answer carries a secret that is never stored
     * (res_answer: a new API key, a join token). See res_mutate for what a replay then answers. */
    bool answer_secret;
    char idem_buf[40];
};

typedef void (*gate_impl_fn)(struct gate_ctx *ctx, void *data);

struct gate;

/* Forwarding mutations to the replica beside the dqlite leader (docs/architecture.md, "The write
 * path"). @leader_address fills @out with the peer address of the replica to forward to and returns
 * true, or returns false when this replica should run the call itself (it leads, or no leader is
 * known). */
struct gate_forwarding {
    struct fwd_client *client;
    bool (*leader_address)(void *data, char *out, size_t len);
    void *data;
    struct grpc_server *server; /* where calls forwarded to this replica run (virtual calls) */
};

struct gate_config {
    struct jobs *jobs;           /* the worker pool; class 0 and 1 as above */
    struct store_pool *pool;     /* store clients lent to implementations */
    struct authn *authn;         /* credentials to principals */
    struct admission *admission; /* per-source and per-credential limits */
    struct audit_sink *sink;     /* denials (OCSF API Activity, Failure) and failed authentications
                                  * (OCSF Authentication 3002); NULL: not audited */
    uint64_t replica_id;         /* tags the audit events */
    const char *gateway_id;      /* copied */
    struct gate_forwarding fwd;  /* client NULL: every call runs here */
    struct nsstats *nsstats;     /* per-namespace call counters (api/gate/nsstats.h); NULL: none */
};

/* Everything in @cfg is borrowed and must outlive the gate, except gateway_id (copied). */
struct gate *gate_new(const struct gate_config *cfg);
void gate_free(struct gate *g);

/* Calls the gate answered without running them, by reason, for /metrics. */
struct gate_stats {
    uint64_t refused_admission; /* no credential, recently refused credential, per-source limits */
    uint64_t shed_overloaded;   /* a worker class was full */
    uint64_t dropped_expired;   /* deadline passed or client gone while queued */
    uint64_t forwarded_out;     /* mutations forwarded to the leader's replica */
    uint64_t forwarded_in;      /* mutations other replicas forwarded here */
    uint64_t forward_fallbacks; /* forwarding failed: the call ran here */
};
void gate_stats(struct gate *g, struct gate_stats *out);

/* Implement @path with @fn. Before gate_register. Returns 0 or GERR_INVAL (no such rule). */
int gate_route(struct gate *g, const char *path, gate_impl_fn fn, void *data);

/* Route every method of @services (NULL-terminated) through the gate. */
int gate_register(struct gate *g, struct grpc_server *s, const ProtobufCServiceDescriptor *const *services,
                  char *errmsg);

/* A call another replica forwarded (api/forward/fwd.h): it runs here like a call of this replica's
 * own clients, with the principal the forwarding replica authenticated, and is answered through
 * @reply. Ownership of @req passes here. Called on the forward server's reader thread: it only
 * queues the work. */
void gate_forwarded(struct gate *g, fwd_request *req, struct fwd_reply *reply);

/* A call made inside this replica for a client that holds @authorization (the value of an
 * authorization header: "Bearer <API key or token>"), such as the operator console
 * (server/console.h). It runs exactly like a call from the network carrying that header: admission
 * (per-source limits, the source being @peer's host), authentication, the authorization table,
 * forwarding of mutations, audit of refusals (with @peer as the source endpoint) and the
 * per-namespace counters. Unary methods only; @request is the packed request (copied),
 * @authorization is copied and wiped after use. @done fires exactly once with the status, the
 * message and the packed reply (valid during the callback only): on the worker thread that finished
 * the call, or before this function returns when the call is refused at once (admission limits, a full worker
 * queue). Returns 0, or GERR_INVAL (@path names no unary method) and @done never fires. */
int gate_call_local(struct gate *g, const char *path, const uint8_t *request, size_t len,
                    const char *authorization, const char *peer, uint64_t timeout_ms,
                    grpc_virtual_done_cb done, void *data);

/* Bidirectional streams (Sandboxes.Exec). The gate authenticates and authorizes a bidi call by its
 * FIRST message: that message is the call's request for the rule's namespace field and for the
 * implementation (grpc_call_request), the call's input is paused meanwhile (grpc_call_pause_input),
 * and the implementation runs on a worker as for other calls. To receive the messages after the
 * first, it calls gate_bidi_attach (on the worker, before it resumes the input with
 * grpc_call_resume_input): @fn then gets each further message on the loop thread (NULL at the
 * client's half-close), under a lock that gate_bidi_detach also takes, so once gate_bidi_detach
 * returns @fn never runs again and @data may be freed. A call whose implementation never attaches
 * gets no further messages. */
typedef void (*gate_bidi_message_fn)(struct grpc_call *call, const ProtobufCMessage *msg, void *data);
void gate_bidi_attach(struct gate_ctx *ctx, gate_bidi_message_fn fn, void *data);
void gate_bidi_detach(struct grpc_call *call);

/* Give the pooled store client back before blocking on something else (the writer, a forwarded
 * call), so readers are not starved while writes wait. ctx->cl is NULL afterwards. */
void gate_release_store(struct gate_ctx *ctx);

/* Take a pooled store client again after gate_release_store (nothing when ctx->cl is set): waits
 * for one as the gate does before a call, within the call's deadline. 0, or GERR_TIMEOUT with
 * ctx->cl still NULL (the caller answers UNAVAILABLE). Worker threads. */
int gate_acquire_store(struct gate_ctx *ctx);

/* Helpers for implementations: answer with @status and a printf message. */
void gate_fail(struct gate_ctx *ctx, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
