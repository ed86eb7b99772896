/* A real 3-process cluster whose every byte between nodes, and from clients, goes over mutual TLS
 * through raft/peertls: joining, writing, failover, and refusals (a node with a certificate from
 * another CA cannot join; a client without TLS cannot talk to the cluster). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "it_common.h"
#include "lib/mem.h"
#include "raft/peertls.h"
#include "raft/pki.h"

static struct cluster cl3;
static struct peertls *client_relay;
static char tls_root[PROC_PATH_MAX];
static char errmsg[GERR_MSG_SIZE];

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[PROC_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* Write ca.pem, cert.pem and key.pem for @cn into @dir, signed by (@ca_key, @ca_cert). */
static void make_identity(const char *dir, const char *ca_key, const char *ca_cert, const char *cn)
{
    const char *ips[] = {"127.0.0.1"};
    struct pki_subject s = {.common_name = cn, .ip_sans = ips, .n_ip_sans = 1};
    char *key, *cert;
    mkdir(dir, 0700);
    assert_int_equal(pki_issue(ca_key, ca_cert, &s, 0, &key, &cert, errmsg), 0);
    write_file(dir, "ca.pem", ca_cert);
    write_file(dir, "cert.pem", cert);
    write_file(dir, "key.pem", key);
    mem_free(key);
    mem_free(cert);
}

static int setup(void **state)
{
    (void)state;
    char *ca_key, *ca_cert, *key, *cert;
    snprintf(tls_root, sizeof tls_root, "/tmp/gantry-it-tls-XXXXXX");
    if (mkdtemp(tls_root) == NULL || pki_ca_create("it-cluster", &ca_key, &ca_cert, errmsg) != 0) {
        return -1;
    }
    for (int id = 1; id <= 3; id++) {
        char dir[PROC_PATH_MAX + 16], cn[16];
        snprintf(dir, sizeof dir, "%s/node%d", tls_root, id);
        snprintf(cn, sizeof cn, "replica-%d", id);
        make_identity(dir, ca_key, ca_cert, cn);
    }
    /* The test's own client identity, and a foreign CA's node for the refusal test. */
    const char *ips[] = {"127.0.0.1"};
    struct pki_subject s = {.common_name = "it-client", .ip_sans = ips, .n_ip_sans = 1};
    if (pki_issue(ca_key, ca_cert, &s, 0, &key, &cert, errmsg) != 0) {
        return -1;
    }
    struct peertls_config tc = {.ca_pem = ca_cert, .cert_pem = cert, .key_pem = key};
    int rv = peertls_start(&tc, &client_relay, errmsg);
    mem_free(key);
    mem_free(cert);
    char *other_key, *other_cert;
    if (rv != 0 || pki_ca_create("other-cluster", &other_key, &other_cert, errmsg) != 0) {
        return -1;
    }
    char dir[PROC_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/node4", tls_root);
    make_identity(dir, other_key, other_cert, "intruder");
    mem_free(other_key);
    mem_free(other_cert);
    mem_free(ca_key);
    mem_free(ca_cert);

    struct cluster_opts o = {.node_bin = it_node_bin(),
                             .tls_root = tls_root,
                             .dial = peertls_store_dial,
                             .dial_arg = client_relay};
    if (cluster_start(&cl3, 3, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int alive = cluster_check_alive(&cl3, errmsg);
    if (alive != 0) {
        fprintf(stderr, "%s\n", errmsg);
    }
    cluster_stop(&cl3);
    peertls_stop(client_relay);
    cluster_rm_rf(tls_root);
    return alive == 0 ? 0 : -1;
}

/* @tls: through the relay (peertls_store_dial); @stream: TLS on the client's own thread
 * (peertls_dial_stream, as gantryd's clients of other nodes). */
static void client_as(struct store_client *c, unsigned leader_timeout_ms, bool tls, bool stream)
{
    struct store_client_config cfg = {.leader_timeout_ms = leader_timeout_ms};
    cluster_client_config(&cl3, &cfg);
    if (!tls) {
        cfg.dial = NULL;
        cfg.dial_arg = NULL;
    } else if (stream) {
        cfg.dial = NULL;
        cfg.stream_dial = peertls_dial_stream;
    }
    assert_int_equal(store_client_init(c, &cfg), 0);
}

static void client(struct store_client *c, unsigned leader_timeout_ms, bool tls)
{
    client_as(c, leader_timeout_ms, tls, false);
}

/* Writes alternate between a relayed client and a direct-stream one, before and across a leader
 * kill; a 1 MiB result crosses many TLS records on the direct stream. */
static void writes_and_failover_over_tls(void **state)
{
    (void)state;
    struct store_client c, d;
    client(&c, 15000, true);
    client_as(&d, 15000, true, true);
    IT_CHECK(&cl3, store_client_exec(&c, "CREATE TABLE t (id INTEGER PRIMARY KEY) STRICT", NULL, 0, NULL),
             c.errmsg);
    int64_t acked = 0;
    for (int i = 0; i < 50; i++) {
        struct proto_value v = proto_int(i);
        struct store_client *w = i % 2 == 0 ? &c : &d;
        IT_CHECK(&cl3, store_client_exec(w, "INSERT INTO t (id) VALUES (?)", &v, 1, NULL), w->errmsg);
        acked++;
    }
    struct proto_rows big;
    proto_rows_init(&big, 0);
    IT_CHECK(&cl3, store_client_query(&d, "SELECT zeroblob(1048576), 7", NULL, 0, &big), d.errmsg);
    assert_int_equal(big.n_rows, 1);
    assert_int_equal(proto_rows_at(&big, 0, 0)->u.b.n, 1048576);
    assert_int_equal(proto_rows_at(&big, 0, 1)->u.i, 7);
    proto_rows_close(&big);
    uint64_t leader;
    IT_CHECK(&cl3, cluster_leader(&cl3, 10000, &leader, errmsg), errmsg);
    int li = cluster_index_of(&cl3, leader);
    assert_true(li >= 0);
    cluster_node_kill(&cl3, (unsigned)li);
    uint64_t t0 = it_now_ms();
    int unknown = 0;
    for (int i = 50; i < 100; i++) {
        struct proto_value v = proto_int(i);
        struct store_client *w = i % 2 == 0 ? &c : &d;
        int rv = store_client_exec(w, "INSERT INTO t (id) VALUES (?)", &v, 1, NULL);
        if (rv == GERR_UNKNOWN_OUTCOME) {
            unknown++;
            continue;
        }
        IT_CHECK(&cl3, rv, w->errmsg);
        if (acked == 50) {
            fprintf(stderr, "failover over TLS: %llu ms\n", (unsigned long long)(it_now_ms() - t0));
        }
        acked++;
    }
    int64_t n;
    IT_CHECK(&cl3, store_client_query_int(&c, "SELECT count(*) FROM t", NULL, 0, &n), c.errmsg);
    assert_true(n >= acked && n <= acked + unknown); /* no acknowledged write lost */
    IT_CHECK(&cl3, cluster_node_start(&cl3, (unsigned)li, errmsg), errmsg);
    IT_CHECK(
        &cl3,
        cluster_wait_node_value(&cl3, (unsigned)li, "gantry", "SELECT count(*) FROM t", n, 30000, errmsg),
        errmsg);
    store_client_close(&c);
    store_client_close(&d);
}

static void client_without_tls_is_refused(void **state)
{
    (void)state;
    struct store_client c;
    client(&c, 1500, false);
    int64_t n;
    assert_int_equal(store_client_query_int(&c, "SELECT 1", NULL, 0, &n), GERR_NOLEADER);
    store_client_close(&c);
}

static unsigned free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static void node_from_another_ca_cannot_join(void **state)
{
    (void)state;
    char address[32], dir[PROC_PATH_MAX + 16], tls[PROC_PATH_MAX + 16], out[PROC_PATH_MAX + 16],
        err[PROC_PATH_MAX + 16], join[128];
    snprintf(address, sizeof address, "127.0.0.1:%u", free_port());
    snprintf(dir, sizeof dir, "%s/node4-data", tls_root);
    snprintf(tls, sizeof tls, "%s/node4", tls_root);
    snprintf(out, sizeof out, "%s/node4.out", tls_root);
    snprintf(err, sizeof err, "%s/node4.err", tls_root);
    snprintf(join, sizeof join, "%s,%s,%s", cl3.addrs[0], cl3.addrs[1], cl3.addrs[2]);
    const char *argv[] = {it_node_bin(), "--id",      "4", "--address", address, "--dir",
                          dir,           "--tls-dir", tls, "--join",    join,    "--join-timeout-ms",
                          "3000",        NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    struct proc p;
    IT_CHECK(&cl3, proc_spawn(&p, &spec, errmsg), errmsg);
    int status;
    if (proc_reap(&p, 30000, &status) != 0) {
        proc_kill(&p);
        fail_msg("the intruder node neither joined nor gave up");
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char tail[2048];
    proc_file_tail(err, 4000, tail, sizeof tail);
    assert_non_null(strstr(tail, "could not join"));
    /* The cluster still has exactly its three voters. */
    IT_CHECK(&cl3, cluster_wait_voters(&cl3, 3, 10000, errmsg), errmsg);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as gantryd: a peer's close is an error, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writes_and_failover_over_tls),
        cmocka_unit_test(client_without_tls_is_refused),
        cmocka_unit_test(node_from_another_ca_cannot_join),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
