/* Membership management for one replica: probe the members, apply the roles policy while this
 * replica's node leads, and hand over on a clean stop.
 *
 * Everything here blocks (store client round trips, probes with a timeout) and belongs on a
 * dedicated thread, never on an event loop. One struct membership per replica; not thread-safe.
 *
 * Probing: each snapshot rediscovers the leader (a kept connection could be to an ex-leader,
 * which dqlite 1.11 lets answer CLUSTER), then takes the member list from it (CLUSTER); each member is then
 * asked DESCRIBE directly, through the same dialer as the client, within probe_timeout_ms. A member that does
 * not answer is offline; how long it has been offline is measured on this replica's monotonic clock from the
 * last time it answered (or from when this replica first saw it). A replica that just started therefore waits
 * a full grace period before it judges anyone dead. */
#ifndef GANTRY_RAFT_MEMBERSHIP_H
#define GANTRY_RAFT_MEMBERSHIP_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/clock.h"
#include "raft/catchup.h"
#include "raft/roles.h"
#include "store/client.h"

#define MEMBERSHIP_MAX_NODES                64u
#define MEMBERSHIP_DEFAULT_PROBE_TIMEOUT_MS 1000u
#define HANDOVER_CATCHUP_MS                 5000u /* per candidate, within the handover's bound */

struct membership_seen {
    uint64_t id;
    uint64_t first_ms;    /* when this replica first saw it in the configuration */
    uint64_t last_ok_ms;  /* when it last answered a probe (0: never) */
    uint64_t up_since_ms; /* when its current run of answered probes began in its current role
                           * (0: the last probe failed) */
    int role;             /* the role it had at the last snapshot */
};

struct membership {
    struct store_client *cl; /* caller-owned, leader-following */
    store_dial_fn dial;      /* for probes; NULL = plain TCP */
    void *dial_arg;
    struct roles_policy policy;
    const struct catchup *catchup; /* NULL: hand leadership to any healthy voter (no catch-up rule) */
    unsigned probe_timeout_ms;
    struct clock *clock;
    struct membership_seen seen[MEMBERSHIP_MAX_NODES];
    unsigned n_seen;
    char errmsg[GERR_MSG_SIZE];
};

/* @cl must outlive @m. @policy is copied. @clock NULL = clock_system(). */
void membership_init(struct membership *m, struct store_client *cl, const struct roles_policy *policy,
                     store_dial_fn dial, void *dial_arg, struct clock *clock);

/* The current membership with each member's health. *@nodes is allocated (mem_free) and holds
 * *@n entries; *@leader_id is the leader's id. Errors: the client's (GERR_NOLEADER, ...). */
int membership_snapshot(struct membership *m, struct roles_node **nodes, unsigned *n, uint64_t *leader_id);

/* One round of the roles policy: when @self_id is the leader, apply at most one change
 * (ASSIGN) and describe it in *@change with *@changed = true. A replica that does not lead does
 * nothing (*@changed = false). */
int membership_adjust(struct membership *m, uint64_t self_id, bool *changed, struct roles_change *change);

/* The second half of membership_adjust, for a caller that also wants the snapshot: apply the
 * policy to @nodes (from membership_snapshot) when @self_id is @leader_id. */
int membership_apply(struct membership *m, uint64_t self_id, const struct roles_node *nodes, unsigned n,
                     uint64_t leader_id, bool *changed, struct roles_change *change);

/* Clean stop, within @timeout_ms: if @self_id is a voter, promote the best healthy standby (or
 * spare) in its place; if it leads, transfer leadership to another healthy voter (with m->catchup,
 * only to one that is caught up: each candidate gets HANDOVER_CATCHUP_MS, and when none is, the
 * node steps down without a transfer and the others elect a leader); then, if a
 * replacement voter exists, demote itself to spare. Each step re-reads the membership, so a
 * retry after an unknown outcome does the right next step. 0 when done (or nothing to do);
 * GERR_TIMEOUT with the last failure in m->errmsg otherwise. The node keeps running: the caller
 * stops it afterwards. */
int membership_handover(struct membership *m, uint64_t self_id, unsigned timeout_ms);

#endif
