/* benchcluster: the two 3-member clusters `gantry-bench api` measures, each of separate processes on
 * 127.0.0.1 with fresh temporary directories:
 *
 *   gantry  `gantryd init` makes replica 1 (its admin API key goes to a file), replica 1 runs,
 *           Cluster.CreateJoinToken gives a token for two joins, replicas 2 and 3 join with it,
 *           then the bench waits until ListMembers shows three reachable voters. Every replica
 *           runs with --driver none (creates start no processes). Clients trust <data_dir>/tls/ca.pem
 *           with the server name "localhost".
 *   etcd    three members of Debian's etcd (3.4) started together with a static initial cluster,
 *           TLS on the client and the peer ports (a CA and one certificate for 127.0.0.1 and
 *           localhost, made with raft/pki.h: ECDSA P-256 like gantryd's), peer client-certificate
 *           authentication on (like gantryd's peer mTLS), no client certificates on the client port
 *           (gantry's clients authenticate with an API key instead; etcd 3.4 demands client
 *           certificates as soon as --trusted-ca-file is set, so it is not), heartbeat and election timeout
 * from the same --latency-ms rule as gantryd (1.5x and 15x), then the bench waits until every member answers
 *           Maintenance.Status and names a leader.
 *
 * Every wait is bounded. Children are started with PR_SET_PDEATHSIG (lib/proc.h), so spawn from
 * the main thread. Whatever happens, bc_stop stops the processes and removes the directory; an
 * atexit handler and a SIGINT/SIGTERM/SIGHUP/SIGABRT handler do the same if the bench exits or is
 * interrupted first (the handler kills with SIGKILL and re-raises the signal).
 *
 * Not thread-safe: drive a cluster from one thread. */
#ifndef GANTRY_TOOLS_BENCH_BENCHCLUSTER_H
#define GANTRY_TOOLS_BENCH_BENCHCLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/err.h"
#include "lib/proc.h"

#define BC_NODES 3u

enum bc_kind {
    BC_GANTRY,
    BC_ETCD,
};

struct bc_node {
    char name[32];
    char api[32];   /* the client (gRPC) address, host:port */
    char peer[32];  /* the peer address, host:port */
    char admin[32]; /* gantry: the admin HTTP address; etcd: "" */
    char dir[PROC_PATH_MAX - 64];
    char out_path[PROC_PATH_MAX];
    char log_path[PROC_PATH_MAX];
    uint64_t member_id; /* etcd: the member id from Maintenance.Status; gantry: the replica id */
    struct proc proc;
    bool running; /* spawned and not reaped by us */
    bool killed;  /* by bc_kill */
    bool term_sent;
};

struct bc_opts {
    const char *bin;     /* gantryd or etcd */
    unsigned latency_ms; /* gantryd --latency-ms (its default is 20); etcd gets 1.5x / 15x of it */
    bool keep;           /* keep the directory (logs, data) after bc_stop */
};

struct bc_cluster {
    enum bc_kind kind;
    struct bc_node nodes[BC_NODES];
    char root[PROC_PATH_MAX - 128];
    char ca_file[PROC_PATH_MAX]; /* the CA clients trust */
    char auth[256];              /* gantry: "Bearer gtk_..."; etcd: "" */
    char version[160];           /* "gantryd 0.1.0-dev", "etcd Version: 3.4.23" */
    struct bc_opts opts;
    bool registered;
};

/* Start a cluster of @kind. On error everything started is stopped again and @errmsg says why
 * (with the tail of the failing process's log). */
int bc_start(struct bc_cluster *c, enum bc_kind kind, const struct bc_opts *o, char *errmsg);

/* Stop every running member (SIGTERM to all at once, SIGKILL to those still running 5 s later:
 * the bench does not measure clean stops, and a replica handing over leadership to a member that
 * is gone can take longer) and remove the directory unless opts.keep. Idempotent. */
void bc_stop(struct bc_cluster *c);

/* Send the SIGTERMs of bc_stop now, so that several clusters stop in parallel. */
void bc_stop_begin(struct bc_cluster *c);

/* The index of the current leader (gantry: Cluster.GetLeader, which asks dqlite; etcd:
 * Maintenance.Status of a running member), asked of the running members in turn until
 * @timeout_ms passes. */
int bc_leader(struct bc_cluster *c, unsigned timeout_ms, unsigned *idx, char *errmsg);

/* One unary call to member @i through the blocking client (server/grpc/client.h), with the
 * cluster's credential, within 5 s: for setup and leader lookups, not for load. 0 with the
 * response in *@out (free with protobuf_c_message_free_unpacked); a non-OK status is
 * GERR_UNAVAILABLE with the status and message in @errmsg. */
int bc_call(struct bc_cluster *c, unsigned i, const char *path, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *resp, ProtobufCMessage **out, char *errmsg);

/* SIGKILL member @i now; it is reaped later (bc_reap_killed or bc_stop). */
void bc_kill(struct bc_cluster *c, unsigned i);
void bc_reap_killed(struct bc_cluster *c);

/* 0 if every member that was not killed by bc_kill still runs; else GERR_CLOSED naming it. */
int bc_check_alive(struct bc_cluster *c, char *errmsg);

/* Resident set of member @i in KiB (VmRSS), or -1 if it does not run. */
long bc_rss_kib(struct bc_cluster *c, unsigned i);

/* CPU time (user + system) of member @i in milliseconds, or -1 if it does not run. */
double bc_cpu_ms(struct bc_cluster *c, unsigned i);

/* gantry: the sum of every gantry_store_requests_total sample on member @i's /metrics.
 * GERR_NOTFOUND if the page has no such metric, GERR_CLOSED / GERR_TIMEOUT if it did not answer
 * within 2 s. */
int bc_store_requests(struct bc_cluster *c, unsigned i, double *out, char *errmsg);

/* Print the last lines of every member's log to stderr. */
void bc_print_logs(struct bc_cluster *c, unsigned max_bytes);

#endif
