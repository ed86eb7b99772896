/* Revoking a removed member's certificate (docs/security.md, "Removing a member revokes its
 * certificate").
 *
 * Every replica certificate comes from the cluster CA, so chain verification alone would let a
 * removed member that keeps its certificate reach every replica's peer port (dqlite traffic and
 * forwarded calls) until the certificate expires. Two replicated tables (store/schema.c,
 * migration 9) close that:
 *
 *   member_certs    the certificate each member holds: recorded by the replica that issued it at
 *                   join, and by the member itself at every start (which also covers the first
 *                   replica and members that joined before the table existed)
 *   revoked_certs   certificates revoked when their member was removed
 *
 * Removal (api/services/cluster_svc.c) first moves the member's rows from member_certs to
 * revoked_certs in one transaction, then takes the member out of Raft's configuration. A
 * fingerprint another member also holds is not revoked (an operator who gave several replicas
 * one certificate would otherwise cut them all off); it is counted and logged instead.
 *
 * The sync thread on every replica reads revoked_certs from the leader every interval (500 ms by
 * default) and hands the set to its relay (peertls_set_revoked), which refuses those certificates
 * in handshakes and closes the connections already open with them. A replica whose own
 * certificate is in the set learns that it was removed (peertls_self_revoked).
 *
 * The transaction functions are store_tx_fn-shaped (run them with store_client_tx or a writer);
 * each bumps the cluster revision and appends a change event when it changes something. Errors:
 * the store's (store/client.h). */
#ifndef GANTRY_RAFT_CERTREVOKE_H
#define GANTRY_RAFT_CERTREVOKE_H

#include <stdint.h>

#include "raft/peertls.h"
#include "raft/pki.h"
#include "store/client.h"

#define CERTREVOKE_INTERVAL_MS 500u

/* Record that @member_id holds the certificate @fingerprint, valid until @not_after_ms. Nothing
 * is written (no event) when that row exists already. */
struct certrevoke_cert {
    uint64_t member_id;
    const char *fingerprint;
    int64_t not_after_ms;
    int64_t now_ms;
};
int certrevoke_note_tx(struct store_tx *tx, void *arg);

/* Which member holds the certificate @fingerprint: *@member_id (0 when none does, or when more
 * than one member holds it: @members says how many). Reads only. */
struct certrevoke_holder {
    const char *fingerprint;
    uint64_t member_id;
    unsigned members;
};
int certrevoke_holder_tx(struct store_tx *tx, void *arg);

/* Revoke every certificate recorded for @member_id that no other member holds, and forget the
 * member's rows. On return @revoked and @shared say how many were revoked and how many were left
 * alone because another member holds them too. Idempotent: a retry after a removal that failed
 * half-way revokes nothing twice. */
struct certrevoke_member {
    uint64_t member_id;
    int64_t now_ms;
    const char *reason; /* e.g. "removed by request", copied into the rows */
    unsigned revoked, shared;
};
int certrevoke_member_tx(struct store_tx *tx, void *arg);

/* The fingerprints of revoked certificates that have not expired by @now_ms (an expired one fails
 * chain verification anyway), at most PEERTLS_MAX_REVOKED. *@out is allocated (mem_free) with *@n
 * entries. */
int certrevoke_list(struct store_client *cl, int64_t now_ms, char (**out)[PKI_FINGERPRINT_SIZE], unsigned *n);

/* The sync thread. @store is copied (its addresses are copied by store_client_init); @relay and
 * @clock must outlive the thread. member_id and the relay's own certificate are recorded with
 * certrevoke_note_tx until that succeeds once, and again whenever the relay's certificate changes
 * (a renewal reloaded it: raft/certrenew.h). */
struct certrevoke_sync_config {
    const struct store_client_config *store;
    struct peertls *relay;
    uint64_t member_id;
    unsigned interval_ms; /* 0: CERTREVOKE_INTERVAL_MS */
};
struct certrevoke_sync;

/* Start the thread. GERR_INVAL (bad store config) or GERR_NOMEM; nothing runs on error. */
int certrevoke_sync_start(const struct certrevoke_sync_config *cfg, struct certrevoke_sync **out,
                          char *errmsg);

/* Stop and join the thread (an in-flight store call finishes first, bounded by the client's
 * timeouts), free everything. NULL is fine. */
void certrevoke_sync_stop(struct certrevoke_sync *s);

#endif
