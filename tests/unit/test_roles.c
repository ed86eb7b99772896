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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
