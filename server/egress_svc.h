/* gantryd's egress relay (docs/egress.md): the relay of egress/relay.h on a thread of its own, fed
 * by the process driver's door files and by the replicated policies, reporting to the audit sink
 * and to /metrics.
 *
 * Happy path. The relay thread runs a libuv loop; every 500 ms it lists the files <door_dir>/<id>.door
 * (drivers/process_net.h) and opens a door (SO_REUSEPORT, so every replica of the host holds it)
 * for each new file, closing the doors whose file is gone. The policy thread reads every row of
 * the policies table every policy_refresh_ms (500) and replaces the relay's policy cache, so a
 * policy written on any replica reaches every relay within about policy_refresh_ms plus one read
 * (the bound docs/egress.md states: 2 s). Every decision goes to the audit sink as an OCSF Network
 * Activity row (class 4001), attributed to the sandbox's owner; the sink aggregates repeats per
 * window (allowed connections per destination; refusals per destination and reason, each counted).
 *
 * Failure modes: a door that cannot be opened is logged and retried on the next scan; a policy read
 * that fails keeps the policies already cached (logged once per run of failures), so a relay never
 * loosens because the store is unreachable - but it does not tighten either until a read succeeds.
 *
 * Threads: egress_svc_start starts two threads; egress_svc_write_metrics from any thread;
 * egress_svc_stop joins them and frees everything. */
#ifndef GANTRY_SERVER_EGRESS_SVC_H
#define GANTRY_SERVER_EGRESS_SVC_H

#include <stdint.h>

#include "api/gate/audit_sink.h"
#include "egress/relay.h"
#include "lib/buf.h"
#include "store/pool.h"

struct driver;

struct egress_svc_config {
    const char *door_dir; /* <driver_state_dir>/egress; copied; NULL with k8s */
    unsigned relay_port;  /* the doors' port, 1..65535 */
    struct egress_relay_config relay;
    unsigned policy_refresh_ms; /* 0 = 500 */
    struct store_pool *pool;    /* borrowed: the policy reads */
    struct audit_sink *sink;    /* borrowed, may be NULL */
    uint64_t replica_id;
    const char *gateway_id; /* copied */
    /* Kubernetes pods instead of door files (docs/egress.md, "Kubernetes"): one shared door on
     * every address at shared_port; each connection attributed by its source address through
     * driver_k8s_lookup_ip on @k8s (borrowed, a kubernetes driver that outlives the service), whose
     * cache the policy thread starts on this replica; the own policies loaded are those of the
     * cache's READY sandboxes. */
    struct driver *k8s;
    unsigned shared_port;
};

struct egress_svc;

/* Start both threads. 0, or GERR_INVAL (bad relay limits) / GERR_NOMEM with @errmsg. */
int egress_svc_start(const struct egress_svc_config *cfg, struct egress_svc **out, char *errmsg);

/* The Prometheus families gantry_egress_connections_total{namespace,decision},
 * gantry_egress_bytes_total{namespace,direction}, gantry_egress_open_connections and
 * gantry_egress_policy_refresh_failures_total and gantry_egress_policy_reads_total, appended to @out.
 * NULL @s (no relay on this replica) writes the families' HELP and TYPE lines without samples. */
void egress_svc_write_metrics(struct egress_svc *s, struct buf *out);

/* Close every door and connection, stop both threads, free. NULL is fine. */
void egress_svc_stop(struct egress_svc *s);

#endif
