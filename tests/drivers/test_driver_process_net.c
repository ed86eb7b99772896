/* drivers/process_net.h: the door file's decoder (valid, truncated, hostile), and, as root with ip
 * and iptables, one sandbox network made and undone: namespace, veth, addresses, host rules, door
 * file and slot, then nothing left, and a second teardown harmless. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drivers/driver.h"
#include "drivers/process.h"
#include "drivers/process_net.h"
#include "lib/err.h"

static void door_decode(void **state)
{
    (void)state;
    struct process_net_door d;
    char err[GERR_MSG_SIZE];
    const char ok[] = "team-a\tagent\t0190-owner\t10.213.0.1\n";
    assert_int_equal(process_net_door_decode(ok, sizeof ok - 1, &d, err), 0);
    assert_string_equal(d.ns, "team-a");
    assert_string_equal(d.name, "agent");
    assert_string_equal(d.owner, "0190-owner");
    assert_string_equal(d.addr, "10.213.0.1");
    const char no_owner[] = "team-a\tagent\t\t10.213.3.253\n";
    assert_int_equal(process_net_door_decode(no_owner, sizeof no_owner - 1, &d, err), 0);
    assert_string_equal(d.owner, "");
    /* Every proper prefix is refused (a door file is written whole, by rename). */
    for (size_t i = 0; i < sizeof ok - 1; i++) {
        assert_int_equal(process_net_door_decode(ok, i, &d, err), GERR_PROTO);
    }
    static const char *const bad[] = {
        "team-a\tagent\towner\t10.213.0.1",       /* no newline */
        "team-a\tagent\towner\t10.213.0.1\nmore", /* more after the line */
        "team-a\tagent\towner\n",                 /* three fields */
        "team-a\tagent\towner\t10.213.0.1\tx\n",  /* five fields */
        "\tagent\towner\t10.213.0.1\n",           /* empty namespace */
        "team-a\tagent\towner\t192.168.0.1\n",    /* outside 10.213/16 */
        "team-a\tagent\towner\t10.213.0.1x\n",    /* trailing garbage */
        "team-a\tagent\towner\t10.213.0.256\n",   /* octet */
        "team a\tagent\towner\t10.213.0.1\n",     /* space */
        "team-a\tag\x01nt\towner\t10.213.0.1\n",  /* control character */
        "t\t-\t\t10.+213.0.1\n",                  /* a sign (found by fuzz_process_net_door) */
        "t\t-\t\t010.213.0.1\n",                  /* leading zero */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (process_net_door_decode(bad[i], strlen(bad[i]), &d, err) != GERR_PROTO) {
            fail_msg("accepted bad door file #%zu", i);
        }
    }
    char big[400];
    memset(big, 'a', sizeof big);
    memcpy(big + 300, "\tb\tc\t10.213.0.1\n", 16);
    assert_int_equal(process_net_door_decode(big, 316, &d, err), GERR_PROTO);
}

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup_and_teardown_as_root(void **state)
{
    (void)state;
    if (geteuid() != 0 || access("/usr/sbin/iptables", X_OK) != 0 || access("/usr/sbin/ip", X_OK) != 0) {
        skip();
    }
    char dir[] = "/tmp/gantry-pnet-XXXXXX", err[GERR_MSG_SIZE], path[300];
    assert_non_null(mkdtemp(dir));
    const char *id = "01a2b3c4-0000-7000-8000-00000000beef";
    struct process_net_door d = {.ns = "team-a", .name = "agent", .owner = "o"};
    unsigned port = 47001;
    if (process_net_setup(dir, id, &d, port, err) != 0) {
        fail_msg("setup: %s", err);
    }
    snprintf(path, sizeof path, "%s/egress/%s.door", dir, id);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(sh("ip netns list | grep -q '^gantry-01a2b3c4-0000-7000-8000-00000000beef'"), 0);
    assert_int_equal(sh("iptables -t nat -S PREROUTING | grep -q -- '-i gxh6cea889beeda -p tcp -j REDIRECT "
                        "--to-ports 47001'"),
                     0);
    assert_int_equal(sh("iptables -S INPUT | grep -q -- '-i gxh6cea889beeda -j DROP'"), 0);
    assert_int_equal(
        sh("iptables -t nat -S PREROUTING | grep -q -- '-i gxh6cea889beeda -p udp -m udp --dport 53 -j "
           "REDIRECT --to-ports 47001'"),
        0);
    assert_int_equal(
        sh("iptables -S INPUT | grep -q -- '-i gxh6cea889beeda -p udp -m udp --dport 47001 -j ACCEPT'"), 0);
    assert_int_equal(sh("iptables -S FORWARD | grep -q -- '-i gxh6cea889beeda -j DROP'"), 0);
    /* Inside: one default route, through the door. */
    assert_int_equal(
        sh("ip -n gantry-01a2b3c4-0000-7000-8000-00000000beef route | grep -q '^default via 10.213.'"), 0);
    int fd = process_net_open(id);
    assert_true(fd >= 0);
    close(fd);
    /* A second sandbox made in the same millisecond (its id starts with the same 12 hex digits):
     * its own interfaces and rules, and removing it leaves the first one's in place. */
    const char *id2 = "01a2b3c4-0000-7000-8000-00000000cafe";
    struct process_net_door d2 = {.ns = "team-a", .name = "agent-2", .owner = "o"};
    if (process_net_setup(dir, id2, &d2, port, err) != 0) {
        fail_msg("setup of the second sandbox: %s", err);
    }
    assert_int_equal(sh("iptables -S INPUT | grep -q -- '-i gxh1ff5356a0fd9 -j DROP'"), 0);
    assert_int_equal(process_net_teardown(dir, id2, port, err), 0);
    assert_int_not_equal(sh("iptables -S | grep -q gxh1ff5356a0fd9"), 0);
    assert_int_equal(sh("iptables -S INPUT | grep -q -- '-i gxh6cea889beeda -j DROP'"), 0);
    assert_int_equal(sh("iptables -S FORWARD | grep -q -- '-i gxh6cea889beeda -j DROP'"), 0);

    assert_int_equal(process_net_teardown(dir, id, port, err), 0);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_not_equal(sh("ip netns list | grep -q '^gantry-01a2b3c4-0000-7000-8000-00000000beef'"), 0);
    assert_int_not_equal(sh("iptables -S | grep -q gxh6cea889beeda"), 0);
    assert_int_not_equal(sh("iptables -t nat -S | grep -q gxh6cea889beeda"), 0);
    assert_int_not_equal(sh("grep -qs 01a2b3c4-0000-7000-8000-00000000beef /run/gantry-egress/*"), 0);
    /* Idempotent. */
    assert_int_equal(process_net_teardown(dir, id, port, err), 0);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    assert_int_equal(sh(path), 0);
}

/* network = egress is refused at validation (so at admission) by a driver without a relay port, and
 * accepted as a value by one with it. */
static void egress_needs_a_relay(void **state)
{
    (void)state;
    char dir[] = "/tmp/gantry-pnetv-XXXXXX", err[GERR_MSG_SIZE], cmd[300];
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0711);
    const char *argv[] = {"true"};
    struct driver_kv net[] = {{"network", "egress"}};
    struct driver_sandbox_spec spec = {.id = "01a2b3c4-0000-7000-8000-00000000cafe",
                                       .namespace = "team-a",
                                       .name = "agent",
                                       .command = argv,
                                       .n_command = 1,
                                       .driver_config = net,
                                       .n_driver_config = 1};
    for (unsigned port = 0; port <= 47001; port += 47001) {
        struct driver_process_config cfg = {
            .state_dir = dir, .sandbox_uid = -1, .sandbox_gid = -1, .egress_relay_port = port};
        struct driver *d;
        assert_int_equal(driver_process_new(&cfg, &d, err), 0);
        int rv = driver_validate(d, &spec, NULL, err);
        if (port == 0) {
            assert_int_equal(rv, GERR_INVAL);
            if (strstr(err, "egress_relay_port") == NULL) {
                fail_msg("%s", err);
            }
        } else {
            assert_true(rv == 0 || rv == GERR_UNAVAILABLE); /* UNAVAILABLE: no working bwrap here */
        }
        driver_free(d);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(sh(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(door_decode),
        cmocka_unit_test(setup_and_teardown_as_root),
        cmocka_unit_test(egress_needs_a_relay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
