/* The dqlite node embedded in a replica.
 *
 * store_node_start creates, configures and starts a node; dqlite then runs it on its own thread.
 * It ignores SIGPIPE for the whole process first (dqlite-protocol.md 0.2: otherwise killing the
 * leader kills its followers) and installs a Raft connect function that dials with a timeout
 * through the configured dialer (plain TCP with TCP_NODELAY by default: p99 write latency 41 ms
 * -> 3 ms on loopback; or mutual TLS through the peer relay).
 *
 * Node id 1 bootstraps a new single-voter cluster when its data dir is empty; any other id waits
 * to be added (store_client_add + store_client_assign). Never restart id 1 with an empty data dir
 * on a cluster that exists: it would bootstrap a second, separate cluster. */
#ifndef GANTRY_STORE_NODE_H
#define GANTRY_STORE_NODE_H

#include <stdint.h>

#include "lib/err.h"
#include "store/conn.h" /* store_dial_fn */

/* Raft timing: dqlite derives heartbeat = 1.5 x latency and election timeout = 15 x latency.
 * 20 ms gives ~0.6 s failover on loopback (dqlite-protocol.md 5.3). */
#define STORE_NODE_DEFAULT_LATENCY_MS         20u
#define STORE_NODE_DEFAULT_SNAPSHOT_THRESHOLD 256u
#define STORE_NODE_DEFAULT_SNAPSHOT_TRAILING  256u
#define STORE_NODE_DEFAULT_CONNECT_TIMEOUT_MS 1000u

struct store_node_config {
    uint64_t id;              /* non-zero, unique in the cluster, stable forever */
    const char *address;      /* "a.b.c.d:port": what peers and clients dial (Raft address) */
    const char *bind_address; /* where the node listens: NULL = @address; or "@name", an
                               * abstract unix socket only this process can reach, for a
                               * node behind the peer TLS relay (raft/peertls.h) */
    store_dial_fn dial;       /* how Raft reaches peers: NULL = plain TCP (store_conn_tcp_dial);
                               * peertls_dial for mutual TLS. Called on a libuv worker thread. */
    void *dial_arg;
    const char *dir;             /* data dir, created 0700 if missing */
    unsigned latency_ms;         /* 0 = STORE_NODE_DEFAULT_LATENCY_MS */
    unsigned snapshot_threshold; /* 0 = default */
    unsigned snapshot_trailing;  /* 0 = default; must be >= threshold and >= 4 */
    unsigned connect_timeout_ms; /* Raft peer connect timeout; 0 = default */
    uint64_t failure_domain;     /* 0 = none */
};

struct store_node;

/* On success *@out is a running node, to be stopped with store_node_stop. On error returns
 * GERR_INVAL (bad config) or GERR_IO (dqlite refused: message in @errmsg) and nothing is left running. */
int store_node_start(const struct store_node_config *cfg, struct store_node **out, char *errmsg);

/* Stop the node (blocking until dqlite's thread exits) and free it. */
void store_node_stop(struct store_node *n);

/* A member of a recovered cluster. */
struct store_node_member {
    uint64_t id;
    const char *address;
    int role; /* enum proto_role */
};

/* Disaster recovery when a majority is lost for good (dqlite_node_recover_ext). Rewrites the
 * Raft configuration in @cfg->dir so the cluster consists of @members only (they must include
 * @cfg->id). Run it on a STOPPED node, the survivor with the most up-to-date log, exactly once;
 * then start that node, copy its data dir to any other survivor listed in @members, and grow the
 * cluster again with fresh nodes (docs/operations.md, "Recovering from the loss of a majority").
 * Returns 0, GERR_INVAL (bad arguments, or @cfg->id not among @members) or GERR_IO (dqlite's
 * message in @errmsg). */
int store_node_recover(const struct store_node_config *cfg, const struct store_node_member *members,
                       unsigned n, char *errmsg);

#endif
