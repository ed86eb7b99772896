/* drivers/process_net.h: the door file's decoder (valid, truncated, hostile), and, as root with ip
 * and iptables, one sandbox network made and undone: namespace, veth, addresses, host rules, door
 * file and slot, then nothing left, and a second teardown harmless; and that one sandbox reaches
 * only its own door, never another's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
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

/* A socket of @type bound to @addr:@port on the host (a door as the relay would hold it). */
static int door_socket(int type, const char *addr, unsigned port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0), one = 1;
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, addr, &a.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (type == SOCK_STREAM) {
        assert_int_equal(listen(fd, 4), 0);
    }
    return fd;
}

/* Does @fd become readable (a datagram, or a connection to accept) within @ms? */
static bool arrives(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* From inside sandbox @id's network namespace, send a datagram to (udp) or connect to (tcp)
 * @addr:@port, with bash's /dev/udp and /dev/tcp. */
static void from_sandbox(const char *id, const char *proto, const char *addr, unsigned port)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd,
             "ip netns exec gantry-%s timeout 2 bash -c 'echo hi > /dev/%s/%s/%u' 2>/dev/null", id, proto,
             addr, port);
    (void)system(cmd);
}

/* Sandbox @a's network reaches its own door (@door_a) and never @door_b, another sandbox's door:
 * neither a datagram to @door_b's relay port (the DNS responder) nor a TCP connection (which the
 * REDIRECT rule brings to @a's own door instead). */
static void only_own_door(const char *a, const char *door_a, const char *door_b, unsigned port)
{
    int ua = door_socket(SOCK_DGRAM, door_a, port), ub = door_socket(SOCK_DGRAM, door_b, port);
    int ta = door_socket(SOCK_STREAM, door_a, port), tb = door_socket(SOCK_STREAM, door_b, port);
    from_sandbox(a, "udp", door_a, port);
    assert_true(arrives(ua, 1000)); /* the control: its own door works */
    from_sandbox(a, "udp", door_b, port);
    if (arrives(ub, 300)) {
        fail_msg("a datagram from the sandbox reached another sandbox's door %s", door_b);
    }
    from_sandbox(a, "tcp", door_b, port);
    if (arrives(tb, 300)) {
        fail_msg("a TCP connection from the sandbox reached another sandbox's door %s", door_b);
    }
    assert_true(arrives(ta, 1000)); /* redirected to its own door */
    close(ua), close(ub), close(ta), close(tb);
}

/* sh() of a formatted command. */
static int shf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int shf(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return sh(cmd);
}

/* The host end's interface name of sandbox @id, as drivers/process_net.c names it: "gxh" and 12 hex
 * digits of the FNV-1a hash of the whole id. */
static void host_if(const char *id, char *out, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    snprintf(out, len, "gxh%012llx", (unsigned long long)(h & 0xffffffffffffull));
}

static char net_dir[] = "/tmp/gantry-pnet-XXXXXX";
static char net_ids[2][40];

/* Whatever a failed run of setup_and_teardown_as_root left: undone (teardown is idempotent). */
static int net_cleanup(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE];
    for (int i = 0; i < 2; i++) {
        if (net_ids[i][0] != '\0') {
            process_net_teardown(net_dir, net_ids[i], 47001, err);
        }
    }
    return 0;
}

static void setup_and_teardown_as_root(void **state)
{
    (void)state;
    if (geteuid() != 0 || access("/usr/sbin/iptables", X_OK) != 0 || access("/usr/sbin/ip", X_OK) != 0) {
        skip();
    }
    char *dir = net_dir, err[GERR_MSG_SIZE], path[300];
    assert_non_null(mkdtemp(dir));
    /* Ids of this process's own (the test may run in several worktrees at once on one host: fixed
     * ids would tear down each other's networks), both starting with the same 12 hex digits. */
    char *id = net_ids[0], *id2 = net_ids[1], h1[16], h2[16];
    snprintf(id, sizeof net_ids[0], "01a2b3c4-0000-7000-8000-beef%08x", (unsigned)getpid());
    snprintf(id2, sizeof net_ids[1], "01a2b3c4-0000-7000-8000-cafe%08x", (unsigned)getpid());
    host_if(id, h1, sizeof h1);
    host_if(id2, h2, sizeof h2);
    struct process_net_door d = {.ns = "team-a", .name = "agent", .owner = "o"};
    unsigned port = 47001;
    if (process_net_setup(dir, id, &d, port, err) != 0) {
        fail_msg("setup: %s", err);
    }
    snprintf(path, sizeof path, "%s/egress/%s.door", dir, id);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(shf("ip netns list | grep -q '^gantry-%s'", id), 0);
    assert_int_equal(shf("iptables -t nat -S PREROUTING | grep -q -- '-i %s -p tcp -j REDIRECT "
                         "--to-ports 47001'",
                         h1),
                     0);
    assert_int_equal(shf("iptables -S INPUT | grep -q -- '-i %s -j DROP'", h1), 0);
    assert_int_equal(shf("iptables -t nat -S PREROUTING | grep -q -- '-i %s -p udp -m udp --dport 53 -j "
                         "REDIRECT --to-ports 47001'",
                         h1),
                     0);
    assert_int_equal(shf("iptables -S FORWARD | grep -q -- '-i %s -j DROP'", h1), 0);
    /* Inside: one default route, through the door. */
    assert_int_equal(shf("ip -n gantry-%s route | grep -q '^default via 10.213.'", id), 0);
    int fd = process_net_open(id);
    assert_true(fd >= 0);
    close(fd);
    /* A second sandbox made in the same millisecond (its id starts with the same 12 hex digits):
     * its own interfaces and rules, and removing it leaves the first one's in place. */
    struct process_net_door d2 = {.ns = "team-a", .name = "agent-2", .owner = "o"};
    if (process_net_setup(dir, id2, &d2, port, err) != 0) {
        fail_msg("setup of the second sandbox: %s", err);
    }
    assert_int_equal(shf("iptables -S INPUT | grep -q -- '-i %s -j DROP'", h2), 0);
    /* Each sandbox's ACCEPT rules name its own door, and the two cannot use each other's. */
    struct process_net_door d1r, d2r;
    assert_int_equal(process_net_door_read(dir, id, &d1r, err), 0);
    assert_int_equal(process_net_door_read(dir, id2, &d2r, err), 0);
    assert_string_not_equal(d1r.addr, d2r.addr);
    only_own_door(id, d1r.addr, d2r.addr, port);
    only_own_door(id2, d2r.addr, d1r.addr, port);
    assert_int_equal(
        shf("iptables -S INPUT | grep -q -- '-d %s/32 -i %s -p udp -m udp --dport 47001 -j ACCEPT'", d1r.addr,
            h1),
        0);
    assert_int_equal(process_net_teardown(dir, id2, port, err), 0);
    assert_int_not_equal(shf("iptables -S | grep -q %s", h2), 0);
    assert_int_equal(shf("iptables -S INPUT | grep -q -- '-i %s -j DROP'", h1), 0);
    assert_int_equal(shf("iptables -S FORWARD | grep -q -- '-i %s -j DROP'", h1), 0);

    assert_int_equal(process_net_teardown(dir, id, port, err), 0);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_not_equal(shf("ip netns list | grep -q '^gantry-%s'", id), 0);
    assert_int_not_equal(shf("iptables -S | grep -q %s", h1), 0);
    assert_int_not_equal(shf("iptables -t nat -S | grep -q %s", h1), 0);
    assert_int_not_equal(shf("grep -qs %s /run/gantry-egress/*", id), 0);
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
        cmocka_unit_test_teardown(setup_and_teardown_as_root, net_cleanup),
        cmocka_unit_test(egress_needs_a_relay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
