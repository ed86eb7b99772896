/* The roles planner. See roles.h for the policy. */
#include "raft/roles.h"

#include <stddef.h>

static bool dead(const struct roles_node *x, const struct roles_policy *p)
{
    return !x->online && x->offline_ms >= p->grace_ms;
}

bool roles_in_standby_site(const struct roles_node *x)
{
    return (x->failure_domain & ROLES_STANDBY_SITE) != 0;
}

/* Is any member outside the standby site healthy? Then the standby site does not vote. */
static bool primary_up(const struct roles_node *nodes, unsigned n, const struct roles_policy *p)
{
    for (unsigned i = 0; i < n; i++) {
        if (!roles_in_standby_site(&nodes[i]) && !dead(&nodes[i], p)) {
            return true;
        }
    }
    return false;
}

bool roles_may_vote(const struct roles_node *nodes, unsigned n, const struct roles_policy *p,
                    const struct roles_node *x)
{
    return !roles_in_standby_site(x) || !primary_up(nodes, n, p);
}

/* Does @x count for the voter target and may it vote? @split: the standby site is set apart. */
static bool counts(const struct roles_node *x, bool split)
{
    return !split || !roles_in_standby_site(x);
}

static unsigned target_voters(const struct roles_node *nodes, unsigned n, const struct roles_policy *p,
                              bool split)
{
    /* A member within its grace period still counts: shrinking from 5 to 3 voters while one of
     * them is briefly away would demote a healthy voter and leave no fault tolerance. */
    unsigned healthy = 0, members = 0;
    for (unsigned i = 0; i < n; i++) {
        if (counts(&nodes[i], split)) {
            members++;
            healthy += dead(&nodes[i], p) ? 0u : 1u;
        }
    }
    unsigned five_at = p->five_voters_at != 0 ? p->five_voters_at : ROLES_DEFAULT_FIVE_VOTERS_AT;
    if (healthy >= five_at && healthy >= 5) {
        return 5;
    }
    return members >= 3 ? 3 : 1;
}

unsigned roles_target_voters(const struct roles_node *nodes, unsigned n, const struct roles_policy *p)
{
    return target_voters(nodes, n, p, primary_up(nodes, n, p));
}

/* How many online voters share @domain (0 never counts as shared: it means unknown). */
static unsigned domain_load(const struct roles_node *nodes, unsigned n, uint64_t domain)
{
    unsigned k = 0;
    if (domain == 0) {
        return 0;
    }
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].role == PROTO_ROLE_VOTER && nodes[i].online && nodes[i].failure_domain == domain) {
            k++;
        }
    }
    return k;
}

/* The best online non-voter to promote: standbys before spares (they already have the data),
 * then the least represented failure domain, then lower weight, then lower id. */
static const struct roles_node *best_candidate(const struct roles_node *nodes, unsigned n, bool split)
{
    const struct roles_node *best = NULL;
    unsigned best_load = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct roles_node *x = &nodes[i];
        if (x->role == PROTO_ROLE_VOTER || !x->online || !counts(x, split)) {
            continue;
        }
        unsigned load = domain_load(nodes, n, x->failure_domain);
        if (best == NULL) {
            best = x;
            best_load = load;
            continue;
        }
        bool better;
        if (x->role != best->role) {
            better = x->role == PROTO_ROLE_STANDBY;
        } else if (load != best_load) {
            better = load < best_load;
        } else if (x->weight != best->weight) {
            better = x->weight < best->weight;
        } else {
            better = x->id < best->id;
        }
        if (better) {
            best = x;
            best_load = load;
        }
    }
    return best;
}

/* The voter to demote when there are too many: a dead one first, then the online voter in the
 * most crowded failure domain (highest weight, then highest id). Never the leader. */
static const struct roles_node *worst_voter(const struct roles_node *nodes, unsigned n, uint64_t leader_id,
                                            const struct roles_policy *p, bool split)
{
    const struct roles_node *worst = NULL;
    unsigned worst_load = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct roles_node *x = &nodes[i];
        if (x->role != PROTO_ROLE_VOTER || x->id == leader_id || !counts(x, split)) {
            continue;
        }
        if (dead(x, p)) {
            return x;
        }
        if (!x->online) {
            continue; /* within its grace period: leave it alone */
        }
        unsigned load = domain_load(nodes, n, x->failure_domain);
        bool worse = worst == NULL || load > worst_load ||
                     (load == worst_load &&
                      (x->weight > worst->weight || (x->weight == worst->weight && x->id > worst->id)));
        if (worse) {
            worst = x;
            worst_load = load;
        }
    }
    return worst;
}

bool roles_plan(const struct roles_node *nodes, unsigned n, uint64_t leader_id, const struct roles_policy *p,
                struct roles_change *out)
{
    /* With a healthy member outside the standby site, the standby site is set apart: its members
     * neither count for the target nor get promoted, and its voters step down. */
    bool split = primary_up(nodes, n, p);
    unsigned target = target_voters(nodes, n, p, split);
    unsigned voters = 0, dead_voters = 0;
    const struct roles_node *site_voter = NULL; /* a standby-site voter that may be demoted */

    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].role != PROTO_ROLE_VOTER) {
            continue;
        }
        if (counts(&nodes[i], split)) {
            voters++;
            dead_voters += dead(&nodes[i], p) ? 1u : 0u;
        } else if (nodes[i].id != leader_id && (site_voter == NULL || nodes[i].id < site_voter->id)) {
            site_voter = &nodes[i];
        }
    }

    /* 1. Too few voters that count (alive, or offline but within grace): promote. */
    if (voters - dead_voters < target) {
        const struct roles_node *c = best_candidate(nodes, n, split);
        if (c != NULL) {
            out->id = c->id;
            out->role = PROTO_ROLE_VOTER;
            out->reason = dead_voters > 0 ? "replace a voter unreachable past the grace period"
                                          : "fewer voters than the policy wants";
            return true;
        }
    }

    /* 2. Failback: the primary site has its voters, so a standby-site voter steps down. Only once
     * the primary site holds three live voters of its own: while it has fewer members its target
     * is 1, and stepping the standby site down then would leave a cluster that one failure stops. */
    if (site_voter != NULL && voters - dead_voters >= target && voters - dead_voters >= 3) {
        bool is_dead = dead(site_voter, p);
        out->id = site_voter->id;
        out->role = is_dead ? PROTO_ROLE_SPARE : PROTO_ROLE_STANDBY;
        out->reason = "the primary site has its voters again: a standby-site voter steps down";
        return true;
    }

    /* 3. Too many voters (including dead ones that now have a replacement): demote one. */
    if (voters > target) {
        const struct roles_node *w = worst_voter(nodes, n, leader_id, p, split);
        if (w != NULL) {
            bool is_dead = dead(w, p);
            out->id = w->id;
            out->role = is_dead ? PROTO_ROLE_SPARE : PROTO_ROLE_STANDBY;
            out->reason = is_dead ? "demote a voter unreachable past the grace period"
                                  : "more voters than the policy wants";
            return true;
        }
    }

    /* 4. Every healthy non-voter is a standby; a standby unreachable past grace becomes a spare. */
    for (unsigned i = 0; i < n; i++) {
        const struct roles_node *x = &nodes[i];
        if (x->role == PROTO_ROLE_SPARE && x->online) {
            out->id = x->id;
            out->role = PROTO_ROLE_STANDBY;
            out->reason = "healthy members are standbys";
            return true;
        }
        if (x->role == PROTO_ROLE_STANDBY && dead(x, p)) {
            out->id = x->id;
            out->role = PROTO_ROLE_SPARE;
            out->reason = "demote a standby unreachable past the grace period";
            return true;
        }
    }
    return false;
}
