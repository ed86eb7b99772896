/* The gantry.v1.Cluster service: members, leader, transfer, remove, join tokens (create, list,
 * revoke), join, health, backup.
 *
 The gate (api/gate/gate.h) authenticates and authorizes each call (platform_admin; Join is
 * authenticated by the join token in its request) and runs these implementations on a worker;
 * they talk to the store and answer with grpc_call_finish_async (and grpc_call_send_async for the
 * backup stream). GetLease reads the reconciler lease (leases/lease.h).
 *
 * Status codes: UNAUTHENTICATED (no, bad, revoked or expired key; a bad or spent join token),
 * PERMISSION_DENIED (not a Platform Admin), INVALID_ARGUMENT (bad fields, named in the message),
 * NOT_FOUND (no such member or join token), FAILED_PRECONDITION (removing self, the leader, or a member that
 * still answers without force; transferring to a non-voter), ALREADY_EXISTS (a joiner's id or
 * name taken), UNAVAILABLE (no leader, membership not known yet). */
#ifndef GANTRY_API_SERVICES_CLUSTER_SVC_H
#define GANTRY_API_SERVICES_CLUSTER_SVC_H

#include <stdint.h>

#include "api/gate/resource.h"
#include "raft/identity.h"
#include "api/gate/audit_sink.h"
#include "raft/pki.h"
#include "raft/replica.h"
#include "server/grpc/server.h"
#include "store/pool.h"
#include "store/writer.h"

struct catchup;

struct cakeeper;

struct cluster_svc {
    /* Borrowed, all must outlive the server. */
    struct replica *replica;
    struct store_writer *writer;
    const struct catchup *catchup; /* the planned-transfer rule (raft/catchup.h) */
    struct audit_sink *sink;       /* audit events outside a transaction (may be NULL) */
    struct store_pool *pool;
    const struct identity *id;
    const struct identity_secrets *secrets; /* the pepper (the CA comes from @ca) */
    struct cakeeper *ca;                    /* the CA that signs joins, and the trusted ones */
    uint64_t replica_id;
    const char *scratch_dir; /* where backups are dumped before streaming */
    /* Member.lag_entries: true with *@entries when a recent measurement by the replica beside
     * @leader_id says how far member @id's log is behind the leader's. Called on a job thread; must
     * not block. May be NULL (lag never known). */
    bool (*member_lag)(void *arg, uint64_t id, uint64_t leader_id, int64_t *entries);
    void *member_lag_arg;
    struct res_env env; /* join tokens are written through res_mutate (idempotent, audited) */
};

/* Implement the Cluster methods in @g (api/gate/gate.h). Returns 0, or GERR_INVAL (no CA keeper). */
struct gate;
int cluster_svc_register(struct gate *g, struct cluster_svc *svc, char *errmsg);

#endif
