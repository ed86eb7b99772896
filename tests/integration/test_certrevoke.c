/* The revocation tables on a real (one-node) cluster: what removing a member revokes, what it
 * leaves alone, and what the relays are given (raft/certrevoke.h, store/schema.c migration 9). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "it_common.h"
#include "lib/mem.h"
#include "raft/certrevoke.h"
#include "store/migrate.h"

static struct cluster cluster;
static char errmsg[GERR_MSG_SIZE];
static struct store_client cl;

#define FP_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define FP_C "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define NOW  1800000000000ll

static int group_setup(void **state)
{
    struct cluster_opts o = {.node_bin = it_node_bin()};
    (void)state;
    if (cluster_start(&cluster, 1, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    struct store_client_config cfg = {.leader_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    unsigned n;
    const struct store_migration *schema = store_schema(&n);
    if (store_client_init(&cl, &cfg) != 0 || store_migrate(&cl, schema, n) != 0) {
        fprintf(stderr, "migrate: %s\n", cl.errmsg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    store_client_close(&cl);
    if (cluster_stop_checked(&cluster, errmsg) != 0) {
        fprintf(stderr, "cluster_stop: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static void note(uint64_t member, const char *fp, int64_t not_after)
{
    struct certrevoke_cert c = {
        .member_id = member, .fingerprint = fp, .not_after_ms = not_after, .now_ms = NOW};
    assert_int_equal(store_client_tx(&cl, certrevoke_note_tx, &c), 0);
}

static int64_t count(const char *sql)
{
    int64_t v = -1;
    assert_int_equal(store_client_query_int(&cl, sql, NULL, 0, &v), 0);
    return v;
}

static void removing_revokes_its_own_certificates_only(void **state)
{
    (void)state;
    int64_t later = NOW + 86400000;
    int64_t rev0 = count("SELECT revision FROM cluster_revision");
    note(2, FP_A, later);
    note(2, FP_A, later); /* again: nothing new */
    note(2, FP_B, later);
    note(3, FP_B, later); /* member 3 holds B too */
    note(3, FP_C, later);
    assert_int_equal(count("SELECT count(*) FROM member_certs"), 4);
    assert_int_equal(count("SELECT revision FROM cluster_revision"),
                     rev0 + 4); /* the repeat changed nothing */

    struct certrevoke_member m = {.member_id = 2, .now_ms = NOW, .reason = "removed by request"};
    assert_int_equal(store_client_tx(&cl, certrevoke_member_tx, &m), 0);
    assert_int_equal(m.revoked, 1);
    assert_int_equal(m.shared, 1);
    assert_int_equal(count("SELECT count(*) FROM member_certs WHERE member_id = 2"), 0);
    assert_int_equal(count("SELECT count(*) FROM member_certs WHERE member_id = 3"), 2);
    assert_int_equal(
        count("SELECT count(*) FROM revoked_certs WHERE fingerprint = '" FP_A "' AND member_id = 2"), 1);
    assert_int_equal(count("SELECT count(*) FROM revoked_certs WHERE fingerprint = '" FP_B "'"), 0);

    char(*set)[PKI_FINGERPRINT_SIZE] = NULL;
    unsigned n = 0;
    assert_int_equal(certrevoke_list(&cl, NOW, &set, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(set[0], FP_A);
    mem_free(set);
    /* Once it has expired it is not handed to the relays any more (verification refuses it anyway). */
    assert_int_equal(certrevoke_list(&cl, later + 1, &set, &n), 0);
    assert_int_equal(n, 0);
    mem_free(set);

    /* A retried removal revokes nothing twice and writes no event. */
    int64_t rev1 = count("SELECT revision FROM cluster_revision");
    assert_int_equal(store_client_tx(&cl, certrevoke_member_tx, &m), 0);
    assert_int_equal(m.revoked, 0);
    assert_int_equal(count("SELECT revision FROM cluster_revision"), rev1);
    assert_int_equal(count("SELECT count(*) FROM revoked_certs"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(removing_revokes_its_own_certificates_only),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
