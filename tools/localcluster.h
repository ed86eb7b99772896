/* A real dqlite cluster of separate gantry-store-node processes on 127.0.0.1, for integration
 * tests and the benchmark.
 *
 * cluster_start picks free ports (bind-tested), makes a fresh temporary directory with one data
 * dir and two log files per node, starts node 1 (it bootstraps), then starts the others with
 * --join --voter at the same moment and waits for every READY line and for CLUSTER to list all of
 * them as voters. Children are killed and the directory removed by cluster_stop, and also, if the
 * harness exits or is interrupted first, by an atexit handler and a SIGINT/SIGTERM/SIGHUP handler;
 * a harness killed outright takes its children with it (lib/proc.h, PR_SET_PDEATHSIG).
 *
 * Environment: GANTRY_IT_KEEP=1 keeps the directory (logs, data) after cluster_stop;
 * GANTRY_IT_LOG_LEVEL sets the nodes' log level (default info).
 *
 * Indexes are 0-based; node i has id i + 1. Not thread-safe: drive a cluster from one thread. */
#ifndef GANTRY_TOOLS_LOCALCLUSTER_H
#define GANTRY_TOOLS_LOCALCLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/proc.h"
#include "store/client.h"

#define CLUSTER_MAX_NODES      7u
#define CLUSTER_MAX_EXTRA_ARGS 16u

struct cluster_opts {
    const char *node_bin;      /* path of gantry-store-node (required) */
    unsigned latency_ms;       /* --latency-ms; 0 = the node's default */
    unsigned ready_timeout_ms; /* per node start (and join); 0 = 60000 */
    const char *tls_root;      /* if set, node with id N runs with --tls-dir <tls_root>/node<N> */
    store_dial_fn dial;        /* how the harness's own clients reach nodes (NULL = plain TCP) */
    void *dial_arg;
    const char *const *extra_args; /* NULL-terminated, appended to every node's arguments */
    bool join_as_standby;          /* joiners ask for --standby (roles then come from the policy) and
                                    * cluster_start does not wait for voters */
    unsigned start_nodes;          /* start only the first N of the @n nodes (0 = all); the others
                                    * have their ports and directories and start with
                                    * cluster_node_start */
};

struct cluster_node {
    uint64_t id;
    char address[32];
    char dir[PROC_PATH_MAX];
    char out_path[PROC_PATH_MAX];
    char err_path[PROC_PATH_MAX];
    struct proc proc;
    bool running; /* spawned and not yet reaped by us */
    unsigned starts;
};

struct cluster {
    unsigned n;
    char root[PROC_PATH_MAX - 64]; /* leaves room for "/nodeN.log" below it */
    char node_bin[PROC_PATH_MAX];
    unsigned latency_ms;
    unsigned ready_timeout_ms;
    char tls_root[PROC_PATH_MAX];
    store_dial_fn dial;
    void *dial_arg;
    const char *extra_args[CLUSTER_MAX_EXTRA_ARGS];
    unsigned n_extra_args;
    bool join_as_standby;
    struct cluster_node nodes[CLUSTER_MAX_NODES];
    const char *addrs[CLUSTER_MAX_NODES]; /* nodes[i].address, for store_client_config */
    char join[CLUSTER_MAX_NODES * 32];
    bool join_on_restart; /* pass --join on restarts too (default: only on a node's first start) */
    bool registered;
};

/* Start @n (1..CLUSTER_MAX_NODES) nodes and wait until all are voters. On error everything
 * started is stopped again and the reason (with the tail of the failing node's log) is in
 * @errmsg. */
int cluster_start(struct cluster *c, unsigned n, const struct cluster_opts *o, char *errmsg);

/* Stop every running node (SIGTERM, then SIGKILL after 10 s) and remove the directory.
 * Idempotent. */
void cluster_stop(struct cluster *c);

/* cluster_stop, and check how the nodes ended: 0, or GERR_INTERNAL if a node did not exit with
 * status 0 on SIGTERM (it needed SIGKILL, crashed, or a sanitizer build reported an error at
 * exit); the first such node is described in @errmsg (may be NULL). */
int cluster_stop_checked(struct cluster *c, char *errmsg);

/* (Re)start node @i with its existing data dir and wait for READY. Node 1 (i == 0) never gets
 * --join; the others get --join --voter on their first start only (a restarted node already is a
 * member, and a restart of several nodes must not wait for a leader), unless c->join_on_restart
 * is set (then gantry-store-node sees it already is a voter and skips ADD/ASSIGN). */
int cluster_node_start(struct cluster *c, unsigned i, char *errmsg);

/* kill -9 node @i and reap it. */
void cluster_node_kill(struct cluster *c, unsigned i);

/* SIGTERM node @i and reap it (SIGKILL after @timeout_ms). 0 if it stopped on SIGTERM. */
int cluster_node_term(struct cluster *c, unsigned i, unsigned timeout_ms);

/* Index of node @id, or -1. */
int cluster_index_of(const struct cluster *c, uint64_t id);

/* Fill the addresses and the dialer of @cfg (other fields untouched). */
void cluster_client_config(const struct cluster *c, struct store_client_config *cfg);

/* Poll CLUSTER until it lists @voters voters (and nothing else), within @timeout_ms. */
int cluster_wait_voters(struct cluster *c, unsigned voters, unsigned timeout_ms, char *errmsg);

/* Poll CLUSTER until it lists exactly @voters voters, @standbys standbys and @spares spares. */
int cluster_wait_roles(struct cluster *c, unsigned voters, unsigned standbys, unsigned spares,
                       unsigned timeout_ms, char *errmsg);

/* The leader's id as the cluster reports it (through a fresh client), within @timeout_ms. */
int cluster_leader(struct cluster *c, unsigned timeout_ms, uint64_t *id, char *errmsg);

/* DUMP database @db from node @i itself (leader or not: DUMP has no leader check), open the copy
 * with SQLite and run @sql, which returns one integer. GERR_NOTFOUND if the node has no such
 * table yet. The copy lives under the cluster's directory and is removed afterwards. */
int cluster_node_query_int(struct cluster *c, unsigned i, const char *db, const char *sql, int64_t *out,
                           char *errmsg);

/* Poll cluster_node_query_int on node @i until it returns @want, within @timeout_ms. */
int cluster_wait_node_value(struct cluster *c, unsigned i, const char *db, const char *sql, int64_t want,
                            unsigned timeout_ms, char *errmsg);

/* 0 if every node we started is still running; otherwise GERR_CLOSED with which node died and
 * how (a node abort is a failed test even if the client coped). */
int cluster_check_alive(struct cluster *c, char *errmsg);

/* Print the last lines of every node's stderr log to stderr (for a failing test). */
void cluster_print_logs(struct cluster *c, unsigned max_bytes);

/* Remove a directory tree (used for the cluster directory; exposed for tests' own temp dirs). */
int cluster_rm_rf(const char *path);

#endif
