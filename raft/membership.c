/* Membership management: probes, the roles policy, clean-stop handover. See membership.h. */
#include "raft/membership.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"

void membership_init(struct membership *m, struct store_client *cl, const struct roles_policy *policy,
                     store_dial_fn dial, void *dial_arg, struct clock *clock)
{
    memset(m, 0, sizeof *m);
    m->cl = cl;
    m->dial = dial;
    m->dial_arg = dial_arg;
    m->policy = *policy;
    if (m->policy.grace_ms == 0) {
        m->policy.grace_ms = ROLES_DEFAULT_GRACE_MS;
    }
    m->probe_timeout_ms = MEMBERSHIP_DEFAULT_PROBE_TIMEOUT_MS;
    m->clock = clock != NULL ? clock : clock_system();
}

static struct membership_seen *seen_entry(struct membership *m, uint64_t id, uint64_t now)
{
    for (unsigned i = 0; i < m->n_seen; i++) {
        if (m->seen[i].id == id) {
            return &m->seen[i];
        }
    }
    if (m->n_seen == MEMBERSHIP_MAX_NODES) {
        return NULL;
    }
    struct membership_seen *s = &m->seen[m->n_seen++];
    s->id = id;
    s->first_ms = now;
    s->last_ok_ms = 0;
    s->up_since_ms = 0;
    s->role = -1;
    return s;
}

/* DESCRIBE a member directly. */
static bool probe(struct membership *m, const char *address, uint64_t *domain, uint64_t *weight)
{
    struct store_conn c;
    bool ok = false;
    if (store_conn_open(&c, address, m->probe_timeout_ms, m->dial, m->dial_arg) == 0) {
        c.timeout_ms = m->probe_timeout_ms;
        ok = store_conn_describe(&c, domain, weight) == 0;
    }
    store_conn_close(&c);
    return ok;
}

/* Forget members that left the configuration, so the table never fills up with old ids. */
static void seen_prune(struct membership *m, const struct proto_node_info *info, unsigned count)
{
    unsigned k = 0;
    for (unsigned i = 0; i < m->n_seen; i++) {
        bool present = false;
        for (unsigned j = 0; j < count && !present; j++) {
            present = info[j].id == m->seen[i].id;
        }
        if (present) {
            m->seen[k++] = m->seen[i];
        }
    }
    m->n_seen = k;
}

int membership_snapshot(struct membership *m, struct roles_node **nodes, unsigned *n, uint64_t *leader_id)
{
    struct proto_node_info *info;
    unsigned count;
    /* Ask who leads now: dqlite 1.11 answers CLUSTER without a leader check, and an ex-leader
     * keeps its client connections open, so a kept connection would keep naming the old leader
     * and the policy would run on the wrong replica, or on none. */
    store_client_disconnect(m->cl);
    int rv = store_client_cluster(m->cl, &info, &count);
    if (rv != 0) {
        memcpy(m->errmsg, m->cl->errmsg, sizeof m->errmsg);
        return rv;
    }
    *leader_id = m->cl->leader_id;
    seen_prune(m, info, count);
    uint64_t now = clock_mono_ms(m->clock);
    struct roles_node *out = mem_zalloc(sizeof *out * (count == 0 ? 1 : count));
    for (unsigned i = 0; i < count; i++) {
        uint64_t domain = 0, weight = 0;
        struct membership_seen *s = seen_entry(m, info[i].id, now);
        bool online = probe(m, info[i].address, &domain, &weight);
        if (online && s != NULL) {
            s->last_ok_ms = now;
            /* A new role starts the count again: a spare promoted to voter holds no data yet. */
            s->up_since_ms = s->up_since_ms != 0 && s->role == info[i].role ? s->up_since_ms : now;
        } else if (s != NULL) {
            s->up_since_ms = 0;
        }
        if (s != NULL) {
            s->role = info[i].role;
        }
        uint64_t since = s == NULL ? now : (s->last_ok_ms != 0 ? s->last_ok_ms : s->first_ms);
        out[i] = (struct roles_node){.id = info[i].id,
                                     .role = info[i].role,
                                     .online = online,
                                     .offline_ms = online ? 0 : now - since,
                                     .failure_domain = domain,
                                     .weight = weight,
                                     .last_ok_ms = s != NULL ? s->last_ok_ms : 0,
                                     .up_ms = online && s != NULL ? now - s->up_since_ms : 0};
        snprintf(out[i].address, sizeof out[i].address, "%s", info[i].address);
    }
    mem_free(info);
    *nodes = out;
    *n = count;
    return 0;
}

static const char *role_name(int role)
{
    return role == PROTO_ROLE_VOTER ? "voter" : role == PROTO_ROLE_STANDBY ? "standby" : "spare";
}

int membership_apply(struct membership *m, uint64_t self_id, const struct roles_node *nodes, unsigned n,
                     uint64_t leader_id, bool *changed, struct roles_change *change)
{
    *changed = false;
    if (leader_id != self_id || !roles_plan(nodes, n, leader_id, &m->policy, change)) {
        return 0;
    }
    int rv = store_client_assign(m->cl, change->id, change->role);
    if (rv == 0) {
        *changed = true;
        LOG_INFO("roles: node %" PRIu64 " is now a %s (%s)", change->id, role_name(change->role),
                 change->reason);
    } else {
        memcpy(m->errmsg, m->cl->errmsg, sizeof m->errmsg);
        LOG_WARN("roles: make node %" PRIu64 " a %s (%s): %s", change->id, role_name(change->role),
                 change->reason, m->errmsg);
    }
    return rv;
}

int membership_adjust(struct membership *m, uint64_t self_id, bool *changed, struct roles_change *change)
{
    struct roles_node *nodes;
    unsigned n;
    uint64_t leader;
    *changed = false;
    int rv = membership_snapshot(m, &nodes, &n, &leader);
    if (rv != 0) {
        return rv;
    }
    rv = membership_apply(m, self_id, nodes, n, leader, changed, change);
    mem_free(nodes);
    return rv;
}

static const struct roles_node *find(const struct roles_node *nodes, unsigned n, uint64_t id)
{
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].id == id) {
            return &nodes[i];
        }
    }
    return NULL;
}

/* The healthy non-voter to take our place: standbys first (they hold the data), then spares; never
 * a standby-site member while the primary site is up (roles.h). */
static const struct roles_node *replacement(const struct roles_node *nodes, unsigned n, uint64_t self_id,
                                            const struct roles_policy *policy)
{
    const struct roles_node *best = NULL;
    for (unsigned i = 0; i < n; i++) {
        const struct roles_node *x = &nodes[i];
        if (x->id == self_id || !x->online || x->role == PROTO_ROLE_VOTER ||
            !roles_may_vote(nodes, n, policy, x)) {
            continue;
        }
        if (best == NULL || (x->role == PROTO_ROLE_STANDBY && best->role != PROTO_ROLE_STANDBY)) {
            best = x;
        }
    }
    return best;
}

/* The healthy voter to hand leadership to: with a catch-up rule, the first one (up the longest
 * first) that is ready within HANDOVER_CATCHUP_MS (then this replica's writes are paused until
 * catchup_done), or 0 (m->errmsg says why); without one, the voter up the longest. */
static uint64_t transfer_target(struct membership *m, const struct roles_node *nodes, unsigned n,
                                uint64_t self_id)
{
    bool tried[MEMBERSHIP_MAX_NODES] = {false};
    for (;;) {
        int best = -1;
        for (unsigned i = 0; i < n && i < MEMBERSHIP_MAX_NODES; i++) {
            if (!tried[i] && nodes[i].role == PROTO_ROLE_VOTER && nodes[i].online && nodes[i].id != self_id &&
                (best < 0 || nodes[i].up_ms > nodes[best].up_ms)) {
                best = (int)i;
            }
        }
        if (best < 0) {
            return 0;
        }
        if (m->catchup == NULL) {
            return nodes[best].id;
        }
        tried[best] = true;
        uint64_t lag;
        if (catchup_ready(m->catchup, nodes[best].id, HANDOVER_CATCHUP_MS, &lag, m->errmsg) == 0) {
            return nodes[best].id;
        }
        LOG_INFO("handover: %s", m->errmsg);
    }
}

/* One step of the handover: 0 with *@done set when there is nothing left to do, 0 after a
 * successful step (call again), or an error. */
static int handover_step(struct membership *m, uint64_t self_id, bool *done)
{
    struct roles_node *nodes;
    unsigned n;
    uint64_t leader;
    int rv = membership_snapshot(m, &nodes, &n, &leader);
    if (rv != 0) {
        return rv;
    }
    const struct roles_node *self = find(nodes, n, self_id);
    unsigned healthy_voters = 0;
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].role == PROTO_ROLE_VOTER && nodes[i].online && nodes[i].id != self_id) {
            healthy_voters++;
        }
    }
    unsigned target = roles_target_voters(nodes, n, &m->policy);
    const struct roles_node *repl = replacement(nodes, n, self_id, &m->policy);
    *done = false;
    if (self == NULL || self->role != PROTO_ROLE_VOTER) {
        *done = true; /* not a voter: quorum does not depend on us */
    } else if (healthy_voters < target && repl != NULL) {
        LOG_INFO("handover: promoting node %" PRIu64 " to take this voter's place", repl->id);
        rv = store_client_assign(m->cl, repl->id, PROTO_ROLE_VOTER);
    } else if (leader == self_id && healthy_voters > 0) {
        /* A voter that is caught up (raft/catchup.h): a transfer to one still catching up is what
         * crashes dqlite 1.11. The voters up the longest are asked first. */
        uint64_t to = transfer_target(m, nodes, n, self_id);
        if (to == 0) {
            LOG_WARN("handover: no voter is caught up (%s); stepping down without a transfer, the others "
                     "elect a leader",
                     m->errmsg);
            *done = true;
        } else {
            LOG_INFO("handover: transferring leadership to node %" PRIu64 "%s", to,
                     m->catchup != NULL ? " (caught up)" : "");
            rv = store_client_transfer(m->cl, to);
            if (m->catchup != NULL) {
                catchup_done(m->catchup);
            }
        }
    } else if (leader != self_id && healthy_voters >= target) {
        LOG_INFO("handover: a replacement voter is in place; demoting this node to spare");
        rv = store_client_assign(m->cl, self_id, PROTO_ROLE_SPARE);
    } else {
        *done = true; /* a voter with no replacement stays one: demoting it would shrink quorum */
    }
    if (rv != 0) {
        memcpy(m->errmsg, m->cl->errmsg, sizeof m->errmsg);
    }
    mem_free(nodes);
    return rv;
}

int membership_handover(struct membership *m, uint64_t self_id, unsigned timeout_ms)
{
    uint64_t deadline = clock_mono_ms(m->clock) + timeout_ms;
    unsigned delay = 20;
    for (unsigned steps = 0; steps < 16; steps++) {
        bool done = false;
        int rv = handover_step(m, self_id, &done);
        if (rv == 0 && done) {
            return 0;
        }
        if (rv != 0) {
            LOG_WARN("handover: %s (%s); retrying", m->errmsg, gerr_name(rv));
            if (clock_mono_ms(m->clock) >= deadline) {
                return GERR_TIMEOUT;
            }
            m->clock->sleep_ns(m->clock, rand_range(delay / 2, delay) * 1000000u);
            delay = delay * 2 > 500 ? 500 : delay * 2;
        }
        if (clock_mono_ms(m->clock) >= deadline) {
            gerr_set(m->errmsg, "handover did not finish within %u ms", timeout_ms);
            return GERR_TIMEOUT;
        }
    }
    gerr_set(m->errmsg, "handover did not settle after 16 steps");
    return GERR_TIMEOUT;
}
