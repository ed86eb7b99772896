/* The roles planner, driven to convergence over membership snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "raft/roles.h"

#define V PROTO_ROLE_VOTER
#define S PROTO_ROLE_STANDBY
#define P PROTO_ROLE_SPARE

static const struct roles_policy policy = {.grace_ms = 30000};

/* Apply plans until none is due; returns the number of changes. Fails on a loop. */
static int converge(struct roles_node *nodes, unsigned n, uint64_t leader)
{
    struct roles_change ch;
    int steps = 0;
    while (roles_plan(nodes, n, leader, &policy, &ch)) {
        assert_true(++steps < 20);
        assert_int_not_equal(ch.id, 0);
        assert_non_null(ch.reason);
        if (ch.id == leader) {
            assert_int_equal(ch.role, V); /* the leader is never demoted */
        }
        for (unsigned i = 0; i < n; i++) {
            if (nodes[i].id == ch.id) {
                assert_int_not_equal(nodes[i].role, ch.role); /* every change changes something */
                nodes[i].role = ch.role;
            }
        }
    }
    return steps;
}

static unsigned count(const struct roles_node *nodes, unsigned n, int role)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        k += nodes[i].role == role ? 1u : 0u;
    }
    return k;
}

static void single_node_stays_voter(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true}};
    assert_int_equal(converge(nodes, 1, 1), 0);
}

static void two_nodes_keep_one_voter(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true}, {.id = 2, .role = P, .online = true}};
    converge(nodes, 2, 1);
    assert_int_equal(nodes[0].role, V);
    assert_int_equal(nodes[1].role, S);
}

static void three_nodes_become_three_voters(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true},
                                 {.id = 2, .role = P, .online = true},
                                 {.id = 3, .role = S, .online = true}};
    converge(nodes, 3, 1);
    assert_int_equal(count(nodes, 3, V), 3);
}

static void five_members_keep_three_voters_six_get_five(void **state)
{
    (void)state;
    struct roles_node nodes[7];
    for (unsigned i = 0; i < 7; i++) {
        nodes[i] = (struct roles_node){.id = i + 1, .role = i == 0 ? V : P, .online = true};
    }
    converge(nodes, 5, 1);
    assert_int_equal(count(nodes, 5, V), 3); /* a standby stays ready to replace a voter */
    assert_int_equal(count(nodes, 5, S), 2);
    converge(nodes, 6, 1);
    assert_int_equal(count(nodes, 6, V), 5);
    assert_int_equal(count(nodes, 6, S), 1);
    converge(nodes, 7, 1);
    assert_int_equal(count(nodes, 7, V), 5);
    assert_int_equal(count(nodes, 7, S), 2);
}

static void five_voters_threshold_is_configurable(void **state)
{
    (void)state;
    struct roles_policy p5 = {.grace_ms = 30000, .five_voters_at = 5};
    struct roles_node nodes[5];
    for (unsigned i = 0; i < 5; i++) {
        nodes[i] = (struct roles_node){.id = i + 1, .role = i == 0 ? V : S, .online = true};
    }
    assert_int_equal(roles_target_voters(nodes, 5, &p5), 5);
    assert_int_equal(roles_target_voters(nodes, 5, &policy), 3);
}

static void four_nodes_spread_voters_over_failure_domains(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true, .failure_domain = 1},
                                 {.id = 2, .role = S, .online = true, .failure_domain = 1},
                                 {.id = 3, .role = S, .online = true, .failure_domain = 2},
                                 {.id = 4, .role = S, .online = true, .failure_domain = 3}};
    converge(nodes, 4, 1);
    assert_int_equal(nodes[0].role, V);
    assert_int_equal(nodes[1].role, S); /* domain 1 already has the leader */
    assert_int_equal(nodes[2].role, V);
    assert_int_equal(nodes[3].role, V);
}

static void dead_voter_is_replaced_after_grace_only(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true},
                                 {.id = 2, .role = V, .online = false, .offline_ms = 1000},
                                 {.id = 3, .role = V, .online = true},
                                 {.id = 4, .role = S, .online = true}};
    assert_int_equal(converge(nodes, 4, 1), 0); /* within grace: nothing moves */
    nodes[1].offline_ms = policy.grace_ms;
    struct roles_change ch;
    assert_true(roles_plan(nodes, 4, 1, &policy, &ch));
    assert_int_equal(ch.id, 4); /* promote the replacement first... */
    assert_int_equal(ch.role, V);
    converge(nodes, 4, 1);
    assert_int_equal(nodes[1].role, P); /* ...then demote the dead voter */
    assert_int_equal(count(nodes, 4, V), 3);
}

static void dead_voter_without_replacement_is_kept(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true},
                                 {.id = 2, .role = V, .online = false, .offline_ms = 3600000},
                                 {.id = 3, .role = V, .online = true}};
    assert_int_equal(converge(nodes, 3, 1), 0);
    assert_int_equal(nodes[1].role, V);
}

static void five_voters_do_not_shrink_during_grace(void **state)
{
    (void)state;
    struct roles_node nodes[6];
    for (unsigned i = 0; i < 6; i++) {
        nodes[i] = (struct roles_node){.id = i + 1, .role = i < 5 ? V : S, .online = true};
    }
    nodes[4].online = false;
    nodes[4].offline_ms = 5000;
    assert_int_equal(converge(nodes, 6, 1), 0); /* would otherwise demote a healthy voter */
    nodes[4].offline_ms = policy.grace_ms + 1;
    converge(nodes, 6, 1);
    assert_int_equal(nodes[4].role, P);      /* the dead voter is out... */
    assert_int_equal(count(nodes, 6, V), 3); /* ...and 5 healthy members keep 3 voters */
    assert_int_equal(nodes[0].role, V);
}

static void leader_is_never_demoted(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true, .failure_domain = 7, .weight = 100},
                                 {.id = 2, .role = V, .online = true, .failure_domain = 7},
                                 {.id = 3, .role = V, .online = true, .failure_domain = 8},
                                 {.id = 4, .role = V, .online = true, .failure_domain = 9}};
    converge(nodes, 4, 1);
    assert_int_equal(nodes[0].role, V);
    assert_int_equal(nodes[1].role, S);
    assert_int_equal(count(nodes, 4, V), 3);
}

static void dead_standby_becomes_spare(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true},
                                 {.id = 2, .role = V, .online = true},
                                 {.id = 3, .role = V, .online = true},
                                 {.id = 4, .role = S, .online = false, .offline_ms = 60000}};
    converge(nodes, 4, 1);
    assert_int_equal(nodes[3].role, P);
}

#define SITE ROLES_STANDBY_SITE

/* 3 primary members and 2 in the standby site: the standby site never votes while the primary
 * site is up, even when a primary voter dies and no primary standby is left to replace it. */
static void standby_site_never_votes_while_primary_is_up(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true, .failure_domain = 1},
                                 {.id = 2, .role = P, .online = true, .failure_domain = 2},
                                 {.id = 3, .role = P, .online = true, .failure_domain = 3},
                                 {.id = 4, .role = P, .online = true, .failure_domain = SITE | 7},
                                 {.id = 5, .role = P, .online = true, .failure_domain = SITE | 7}};
    converge(nodes, 5, 1);
    assert_int_equal(nodes[0].role, V);
    assert_int_equal(nodes[1].role, V);
    assert_int_equal(nodes[2].role, V);
    assert_int_equal(nodes[3].role, S); /* a full copy, no vote */
    assert_int_equal(nodes[4].role, S);
    assert_int_equal(roles_target_voters(nodes, 5, &policy), 3);
    assert_false(roles_may_vote(nodes, 5, &policy, &nodes[3]));
    assert_true(roles_may_vote(nodes, 5, &policy, &nodes[1]));
    /* A primary voter dies past the grace period: no primary candidate, so nothing is promoted. */
    nodes[2].online = false;
    nodes[2].offline_ms = 60000;
    converge(nodes, 5, 1);
    assert_int_equal(nodes[3].role, S);
    assert_int_equal(nodes[4].role, S);
    assert_int_equal(nodes[2].role, V); /* kept: no replacement */
    /* Without the site bit the same members would promote a standby in its place. */
    nodes[3].failure_domain = 7;
    converge(nodes, 5, 1);
    assert_int_equal(nodes[3].role, V);
    assert_int_equal(nodes[2].role, P);
}

/* Six primary members get 5 voters by the primary count alone; the standby site adds none. */
static void standby_site_does_not_count_for_the_target(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 1, .role = V, .online = true},
                                 {.id = 2, .role = S, .online = true},
                                 {.id = 3, .role = S, .online = true},
                                 {.id = 4, .role = S, .online = true},
                                 {.id = 5, .role = S, .online = true, .failure_domain = SITE},
                                 {.id = 6, .role = S, .online = true, .failure_domain = SITE},
                                 {.id = 7, .role = S, .online = true, .failure_domain = SITE}};
    /* 4 primary members: 3 voters (7 members in all would otherwise mean 5). */
    assert_int_equal(roles_target_voters(nodes, 7, &policy), 3);
    converge(nodes, 7, 1);
    assert_int_equal(count(nodes, 7, V), 3);
    for (unsigned i = 4; i < 7; i++) {
        assert_int_equal(nodes[i].role, S);
    }
}

/* The primary site is gone (every member past the grace period) and the standby site was
 * recovered as voters: the standby site is the cluster, and the policy applies to it. */
static void standby_site_alone_is_the_cluster(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 4, .role = V, .online = true, .failure_domain = SITE | 7},
                                 {.id = 5, .role = S, .online = true, .failure_domain = SITE | 7},
                                 {.id = 6, .role = S, .online = true, .failure_domain = SITE | 8}};
    assert_true(roles_may_vote(nodes, 3, &policy, &nodes[1]));
    converge(nodes, 3, 4);
    assert_int_equal(count(nodes, 3, V), 3);
    /* Dead primary members still in the configuration do not hold the standby site back. */
    struct roles_node mixed[] = {{.id = 1, .role = V, .online = false, .offline_ms = 90000},
                                 {.id = 4, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 5, .role = S, .online = true, .failure_domain = SITE}};
    converge(mixed, 3, 4);
    assert_int_equal(mixed[2].role, V);
    assert_int_equal(mixed[0].role, V); /* no third voter to replace it: kept, as without a site */
}

/* Failback: after a promotion the standby site holds the votes; primary members join again. They
 * are promoted first, then the standby-site voters step down, the leader last (never by the
 * planner: it keeps its vote until leadership moves). */
static void failback_promotes_primary_then_demotes_standby_site(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 4, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 5, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 6, .role = S, .online = true, .failure_domain = 1},
                                 {.id = 7, .role = S, .online = true, .failure_domain = 2},
                                 {.id = 8, .role = S, .online = true, .failure_domain = 3}};
    struct roles_change ch;
    /* The first change is a promotion: the voter count never dips. */
    assert_true(roles_plan(nodes, 5, 4, &policy, &ch));
    assert_int_equal(ch.role, V);
    assert_true(ch.id >= 6);
    int steps = 0;
    unsigned primary_voters = 0;
    while (roles_plan(nodes, 5, 4, &policy, &ch)) {
        assert_true(++steps < 20);
        if (ch.role != V) {
            /* Nothing is demoted before the primary site has its 3 voters. */
            assert_int_equal(primary_voters, 3);
        }
        for (unsigned i = 0; i < 5; i++) {
            if (nodes[i].id == ch.id) {
                primary_voters += i >= 2 && ch.role == V ? 1u : 0u;
                nodes[i].role = ch.role;
            }
        }
    }
    assert_int_equal(nodes[1].role, S); /* demoted */
    assert_int_equal(nodes[0].role, V); /* the leader keeps its vote */
    assert_int_equal(count(nodes, 5, V), 4);
    /* Once leadership moves to the primary site, the old leader steps down too. */
    converge(nodes, 5, 6);
    assert_int_equal(nodes[0].role, S);
    assert_int_equal(count(nodes, 5, V), 3);
}

/* Failback with one primary member back (a review found the standby site stepping down to leave
 * {leader, that member}): it is promoted, and the standby site keeps its votes until the primary
 * site has three voters of its own. */
static void failback_keeps_the_standby_site_until_three_primary_voters(void **state)
{
    (void)state;
    struct roles_node nodes[] = {{.id = 4, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 5, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 7, .role = V, .online = true, .failure_domain = SITE},
                                 {.id = 6, .role = S, .online = true, .failure_domain = 1}};
    converge(nodes, 4, 4);
    assert_int_equal(nodes[3].role, V);
    assert_int_equal(count(nodes, 4, V), 4); /* still tolerates a failure */
    assert_int_equal(nodes[1].role, V);
    assert_int_equal(nodes[2].role, V);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_node_stays_voter),
        cmocka_unit_test(two_nodes_keep_one_voter),
        cmocka_unit_test(three_nodes_become_three_voters),
        cmocka_unit_test(five_members_keep_three_voters_six_get_five),
        cmocka_unit_test(five_voters_threshold_is_configurable),
        cmocka_unit_test(four_nodes_spread_voters_over_failure_domains),
        cmocka_unit_test(dead_voter_is_replaced_after_grace_only),
        cmocka_unit_test(dead_voter_without_replacement_is_kept),
        cmocka_unit_test(five_voters_do_not_shrink_during_grace),
        cmocka_unit_test(leader_is_never_demoted),
        cmocka_unit_test(dead_standby_becomes_spare),
        cmocka_unit_test(standby_site_never_votes_while_primary_is_up),
        cmocka_unit_test(standby_site_does_not_count_for_the_target),
        cmocka_unit_test(standby_site_alone_is_the_cluster),
        cmocka_unit_test(failback_promotes_primary_then_demotes_standby_site),
        cmocka_unit_test(failback_keeps_the_standby_site_until_three_primary_voters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
