/* The gantry.v1.Cluster service: members, leader, transfer, remove, join tokens, join, health,
 * backup.
 *
 * Every handler hands its call to a worker (server/jobs.h) at once; the worker authenticates,
 * talks to the store and answers with grpc_call_finish_async (and grpc_call_send_async for the
 * backup stream). Authentication: a bearer API key of a principal with a global platform_admin
 * binding (server/clusterdb.h), except Join, which the join token in its request authenticates.
 * GetLease is not registered (the lease arrives with the reconciler) and answers UNIMPLEMENTED.
 *
 * Status codes: UNAUTHENTICATED (no, bad, revoked or expired key; a bad or spent join token),
 * PERMISSION_DENIED (not a Platform Admin), INVALID_ARGUMENT (bad fields, named in the message),
 * NOT_FOUND (no such member), FAILED_PRECONDITION (removing self, the leader, or a member that
 * still answers without force; transferring to a non-voter), ALREADY_EXISTS (a joiner's id or
 * name taken), UNAVAILABLE (no leader, membership not known yet). */
#ifndef GANTRY_SERVER_CLUSTER_SVC_H
#define GANTRY_SERVER_CLUSTER_SVC_H

#include <stdint.h>

#include "raft/pki.h"
#include "raft/replica.h"
#include "server/grpc_server.h"
#include "server/identity.h"
#include "server/jobs.h"
#include "store/pool.h"
#include "store/writer.h"

struct cluster_svc {
    /* Borrowed, all must outlive the server. */
    struct replica *replica;
    struct store_writer *writer;
    struct store_pool *pool;
    struct jobs *jobs;
    const struct identity *id;
    const struct identity_secrets *secrets;
    uint64_t replica_id;
    const char *scratch_dir; /* where backups are dumped before streaming */
    /* Filled by cluster_svc_register. */
    char ca_fingerprint[PKI_FINGERPRINT_SIZE];
};

/* Route the Cluster methods to @svc. Returns 0, or GERR_INVAL (the CA does not parse). */
int cluster_svc_register(struct grpc_server *s, struct cluster_svc *svc, char *errmsg);

#endif
