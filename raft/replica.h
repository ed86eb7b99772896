/* One replica's membership runtime: the embedded dqlite node, the peer TLS relay in front of it,
 * joining the cluster, the roles thread, the published membership view and the clean-stop
 * handover. gantryd and gantry-store-node both run exactly this.
 *
 * Lifecycle (one thread calls these, in order):
 *   replica_start   relay (with tls_dir) -> node -> join (with join addresses) -> roles thread
 *   replica_view    any thread, any time after start: the last membership snapshot
 *   replica_handover   on SIGTERM: stop the roles thread, promote a replacement, transfer
 *                      leadership, demote self (raft/membership.h)
 *   replica_stop    stop the roles thread (if still running), the node, the relay; free
 *
 * Threads: replica_start starts dqlite's threads, the relay's thread and the roles thread. The
 * caller should block SIGTERM/SIGINT before replica_start so every thread inherits the mask.
 *
 * Errors from replica_start: GERR_INVAL (bad config), GERR_IO (dqlite or TLS material), GERR_EXISTS
 * (the cluster holds this id under another address), GERR_PERM (a restart of a replica the leader's
 * configuration no longer lists: it was removed), GERR_TIMEOUT (join did not finish in time),
 * GERR_CANCELED (the stop check said stop while joining). On error nothing is left running and
 * @errmsg says why. */
#ifndef GANTRY_RAFT_REPLICA_H
#define GANTRY_RAFT_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"
#include "raft/catchup.h"
#include "raft/peertls.h"
#include "raft/roles.h"
#include "store/client.h"
#include "store/node.h"

#define REPLICA_MAX_MEMBERS 64u

struct replica_config {
    uint64_t id;
    const char *address; /* the advertised peer address (what the other members dial), copied */
    const char *listen;  /* where the TLS relay binds; NULL = address */
    const char *dir;     /* dqlite data dir */
    const char *tls_dir; /* ca.pem, cert.pem, key.pem; NULL = plain TCP (tests only) ... */
    const char *tls_ca_file, *tls_cert_file, *tls_key_file; /* ... or these three files (they win) */
    struct peertls_options peer; /* the relay's limits and second backend (raft/peertls.h); zero: defaults */
    unsigned latency_ms;         /* 0 = default */
    unsigned snapshot_threshold, snapshot_trailing;
    uint64_t failure_domain;
    const char *join;         /* comma-separated peer addresses of members; NULL or "" = no join */
    const char *seeds;        /* comma-separated peer addresses known from before (a restart), for
                               * finding the leader; NULL = none */
    int join_role;            /* PROTO_ROLE_VOTER or PROTO_ROLE_STANDBY */
    unsigned join_timeout_ms; /* 0 = 60000 */
    /* Roles: with manage_roles the roles thread applies the policy while this node leads;
     * without it the thread only publishes the view. */
    bool manage_roles;
    struct roles_policy policy;
    unsigned roles_interval_ms; /* 0 = 1000 */
    /* The planned-transfer rule for the handover (raft/catchup.h): leadership goes only to a
     * caught-up voter. NULL: no check (gantry-store-node). Must outlive the replica. */
    const struct catchup *catchup;
    /* Polled while joining; returns true to give up (GERR_CANCELED). May be NULL. */
    bool (*should_stop)(void *arg);
    void *should_stop_arg;
};

/* The published membership view. */
struct replica_view {
    bool valid;         /* false until the first successful snapshot */
    uint64_t taken_ms;  /* monotonic time of the snapshot */
    uint64_t leader_id; /* 0: none known */
    unsigned n;
    struct roles_node nodes[REPLICA_MAX_MEMBERS];
    char errmsg[GERR_MSG_SIZE]; /* the last snapshot failure, "" if the last one worked */
    uint64_t leader_changes;    /* times a snapshot named a leader other than the last one named
                                 * (the first leader seen counts too); a snapshot without one is
                                 * not a change */
};

struct replica;

int replica_start(const struct replica_config *cfg, struct replica **out, char *errmsg);

/* True once the roles thread has seen, twice in a row, a leader's configuration without this
 * replica, or once the relay found this replica's certificate revoked (peertls_self_revoked): it
 * was removed and must stop serving (its owner exits). Thread-safe. */
bool replica_removed(struct replica *r);

/* The peer relay (NULL without TLS: tests), for revocation (raft/certrevoke.h). Owned by the
 * replica, valid until replica_stop. */
struct peertls *replica_relay(struct replica *r);

/* Copy the latest view into @out. Thread-safe. */
void replica_view(struct replica *r, struct replica_view *out);

/* The peer relay's counters (raft/peertls.h); all zero without TLS (tests). Thread-safe. */
void replica_peer_stats(struct replica *r, struct peertls_stats *out);

/* The dialer every store client of this replica must use, and its argument: the replica's own node
 * on its private socket, other nodes over mutual TLS through the relay (or plain TCP without TLS:
 * NULL, the store's default). */
store_dial_fn replica_dial(const struct replica *r);

/* The same dialer in store_stream_dial_fn form (store/conn.h), for store_client_config.stream_dial
 * with replica_dial_arg: other nodes over mutual TLS driven by the client's own thread
 * (peertls_dial_stream) instead of through the relay thread. NULL without TLS. */
store_stream_dial_fn replica_stream_dial(const struct replica *r);

/* Dial a member's peer port asking for the relay's second protocol (config peer.alt_alpn): a
 * blocking local socket whose bytes reach that member's second backend over mutual TLS. A
 * store_dial_fn-shaped function; @arg is the replica. */
int replica_alt_dial(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg);
void *replica_dial_arg(const struct replica *r);
const char *replica_address(const struct replica *r);

/* Clean-stop handover within @timeout_ms (stops the roles thread first). Returns 0 or
 * GERR_TIMEOUT (logged). The node keeps running. */
int replica_handover(struct replica *r, unsigned timeout_ms);

/* Stop everything and free @r. */
void replica_stop(struct replica *r);

/* Parse "ID=ADDR[/voter|/standby|/spare],..." (the recovery member list) into @out, with the
 * addresses pointing into @buf. Returns 0 or GERR_INVAL. */
int replica_parse_members(const char *spec, char *buf, size_t buf_len, struct store_node_member *out,
                          unsigned max, unsigned *n);

#endif
