/* The roles planner: which single membership change brings the cluster closer to its target.
 *
 * Policy: 3 voters, or 5 once policy->five_voters_at (default 6) or more members are healthy
 * (reachable, or unreachable for less than the grace period); 1 voter while the cluster has fewer
 * than 3 members; every other healthy member a standby. The default keeps 3 voters and 2
 * standbys at 5 members, so a standby is always there to replace a failed voter; 5 voters start
 * at 6 members (docs/operations.md, "Roles"). Voters are spread over failure domains when there is a choice.
 * A voter that has been unreachable for longer than the grace period is replaced by a healthy standby
 * (promote first, then demote the dead voter, so the voter count never dips). The leader is never demoted.
 *
 * Standby site (docs/operations.md, "Standby site"): a member whose failure domain carries
 * ROLES_STANDBY_SITE belongs to a second site that keeps a full copy without voting. While any
 * member outside that site is healthy, standby-site members are never promoted, the voter target
 * counts only the other members, and a standby-site voter (left over from a promotion, once the
 * primary site is back) is demoted first, as soon as the primary site has its voters (promote
 * first, then demote). A standby-site voter that leads keeps its vote until leadership moves
 * (the leader is never demoted). When no member outside the standby site is healthy, the standby
 * site is simply the cluster: the policy above applies to its members.
 *
 * Pure function over a snapshot of the membership: no I/O, no clock. The caller (the leader's
 * replica) gathers the snapshot, applies the returned change with ASSIGN, and calls again. Raft
 * allows one configuration change at a time, hence one change per call. */
#ifndef GANTRY_RAFT_ROLES_H
#define GANTRY_RAFT_ROLES_H

#include <stdbool.h>
#include <stdint.h>

#include "store/proto.h" /* PROTO_ROLE_VOTER, _STANDBY, _SPARE */

struct roles_node {
    uint64_t id;
    int role;                /* enum proto_role */
    bool online;             /* answered the last probe */
    uint64_t offline_ms;     /* how long it has been unreachable (0 when online) */
    uint64_t failure_domain; /* 0 = unknown */
    uint64_t weight;         /* lower is preferred for promotion */
    /* Informational, not used by the policy (membership fills them for the Cluster API). */
    char address[256];   /* the member's peer address */
    uint64_t last_ok_ms; /* monotonic time of the last answered probe, 0: never */
    uint64_t up_ms;      /* how long it has answered every probe in its current role (0 when
                          * offline); at most as long as this replica has been probing. A
                          * restart quicker than one probe interval goes unseen. */
};

struct roles_policy {
    uint64_t grace_ms;       /* how long a voter or standby may be unreachable before it is replaced */
    unsigned five_voters_at; /* healthy members from which 5 voters are kept; 0 = default */
};

/* The failure-domain bit that marks a standby-site member: gantryd advertises its failure domain
 * with it set when standby_site is on. Configured failure domains never set it (integers with it
 * are refused, hashed names clear it). */
#define ROLES_STANDBY_SITE (UINT64_C(1) << 63)

#define ROLES_DEFAULT_GRACE_MS       30000u
#define ROLES_DEFAULT_FIVE_VOTERS_AT 6u

struct roles_change {
    uint64_t id;
    int role;
    const char *reason; /* static text for the log and the audit trail */
};

/* The number of voters the policy wants for this membership. Members unreachable for less than
 * the grace period count as healthy. While a member outside the standby site is healthy, only
 * members outside it count. */
unsigned roles_target_voters(const struct roles_node *nodes, unsigned n, const struct roles_policy *policy);

/* Returns true and fills @out when a change is due, false when the membership matches the
 * policy (or nothing safe can be done yet, e.g. no healthy candidate). */
bool roles_plan(const struct roles_node *nodes, unsigned n, uint64_t leader_id,
                const struct roles_policy *policy, struct roles_change *out);

/* Is @x in the standby site (its failure domain carries ROLES_STANDBY_SITE)? */
bool roles_in_standby_site(const struct roles_node *x);

/* May @x be made a voter now? False for a standby-site member while any member outside the
 * standby site is healthy (not unreachable past the grace period); true otherwise. */
bool roles_may_vote(const struct roles_node *nodes, unsigned n, const struct roles_policy *policy,
                    const struct roles_node *x);

#endif
