/* Unit tests for admission before work (api/gate/admission.h) and the aggregation of audit events
 * outside a transaction (api/gate/audit_sink.h, with no writer: rows are counted, not stored). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/gate/admission.h"
#include "api/gate/audit_sink.h"
#include "server/grpc/status.h"

static void digest_of(const char *cred, uint8_t d[ADMISSION_DIGEST_SIZE])
{
    assert_true(admission_digest(cred, NULL, 0, d));
}

static void test_known_unknown_and_missing(void **state)
{
    (void)state;
    struct admission_config cfg;
    admission_config_defaults(&cfg);
    struct admission *a = admission_new(&cfg);
    uint8_t good[ADMISSION_DIGEST_SIZE], other[ADMISSION_DIGEST_SIZE];
    digest_of("Bearer gtk_good", good);
    digest_of("Bearer gtk_other", other);
    int status = 0;
    char why[256];
    assert_int_equal(admission_check(a, "10.0.0.1", NULL, 1000, &status, why, sizeof why), ADMIT_REFUSE);
    assert_int_equal(status, GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(why, "missing credentials"));
    assert_int_equal(admission_check(a, "10.0.0.1", good, 1000, &status, why, sizeof why), ADMIT_UNKNOWN);
    admission_verified(a, good, 1000);
    assert_int_equal(admission_check(a, "10.0.0.1", good, 2000, &status, why, sizeof why), ADMIT_KNOWN);
    assert_int_equal(admission_check(a, "10.0.0.1", other, 2000, &status, why, sizeof why), ADMIT_UNKNOWN);
    /* Known for known_ttl_ms only. */
    assert_int_equal(admission_check(a, "10.0.0.1", good, 1000 + cfg.known_ttl_ms, &status, why, sizeof why),
                     ADMIT_UNKNOWN);
    admission_free(a);
}

static void test_failures_limit_the_source_but_never_a_known_credential(void **state)
{
    (void)state;
    struct admission_config cfg;
    admission_config_defaults(&cfg);
    cfg.fail_limit = 5;
    struct admission *a = admission_new(&cfg);
    uint8_t good[ADMISSION_DIGEST_SIZE], bad[ADMISSION_DIGEST_SIZE], fresh[ADMISSION_DIGEST_SIZE];
    digest_of("Bearer gtk_good", good);
    digest_of("Bearer gtk_fresh", fresh);
    admission_verified(a, good, 100);
    int status = 0;
    char why[256];
    for (int i = 0; i < 5; i++) {
        char cred[32];
        snprintf(cred, sizeof cred, "Bearer gtk_bad%d", i);
        digest_of(cred, bad);
        assert_int_equal(admission_check(a, "10.0.0.9", bad, 200, &status, why, sizeof why), ADMIT_UNKNOWN);
        assert_int_equal(admission_failed(a, "10.0.0.9", bad, 200), (unsigned)i + 1);
    }
    /* The same bad credential again: refused without a check, for failed_ttl_ms. */
    assert_int_equal(admission_check(a, "10.0.0.9", bad, 300, &status, why, sizeof why), ADMIT_REFUSE);
    assert_int_equal(status, GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(why, "refused less than"));
    /* Over the limit: unknown credentials from that source are refused, a known one is not, and
     * other sources are not affected. */
    assert_int_equal(admission_check(a, "10.0.0.9", fresh, 300, &status, why, sizeof why), ADMIT_REFUSE);
    assert_int_equal(status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(why, "too many failed authentication attempts from 10.0.0.9"));
    assert_int_equal(admission_check(a, "10.0.0.9", good, 300, &status, why, sizeof why), ADMIT_KNOWN);
    assert_int_equal(admission_check(a, "10.0.0.10", fresh, 300, &status, why, sizeof why), ADMIT_UNKNOWN);
    /* The window passes. */
    assert_int_equal(
        admission_check(a, "10.0.0.9", fresh, 200 + cfg.fail_window_ms, &status, why, sizeof why),
        ADMIT_UNKNOWN);
    /* A verified credential leaves the failed set at once. */
    admission_verified(a, bad, 400);
    assert_int_equal(admission_check(a, "10.0.0.11", bad, 400, &status, why, sizeof why), ADMIT_KNOWN);
    admission_free(a);
}

static void test_rate_of_unverified_calls(void **state)
{
    (void)state;
    struct admission_config cfg;
    admission_config_defaults(&cfg);
    cfg.unauth_rate = 10;
    cfg.unauth_burst = 20;
    struct admission *a = admission_new(&cfg);
    uint8_t d[ADMISSION_DIGEST_SIZE], good[ADMISSION_DIGEST_SIZE];
    digest_of("Bearer x", d);
    digest_of("Bearer good", good);
    admission_verified(a, good, 1); /* times are wall clock ms: 0 marks an empty slot */
    int status = 0;
    char why[256];
    unsigned admitted = 0;
    for (int i = 0; i < 100; i++) {
        admitted += admission_check(a, "h", d, 1000, &status, why, sizeof why) == ADMIT_UNKNOWN;
    }
    assert_int_equal(admitted, 20); /* the burst */
    assert_int_equal(status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(admission_check(a, "h", good, 1000, &status, why, sizeof why), ADMIT_KNOWN);
    /* 10 per second refill. */
    admitted = 0;
    for (int i = 0; i < 100; i++) {
        admitted += admission_check(a, "h", d, 2000, &status, why, sizeof why) == ADMIT_UNKNOWN;
    }
    assert_int_equal(admitted, 10);
    /* Anonymous calls (Cluster/Join) share the bucket. */
    assert_int_equal(admission_anonymous(a, "h", 2000, &status, why, sizeof why), ADMIT_REFUSE);
    assert_int_equal(admission_anonymous(a, "j", 2000, &status, why, sizeof why), ADMIT_UNKNOWN);
    admission_free(a);
}

static void test_tables_are_bounded(void **state)
{
    (void)state;
    struct admission_config cfg;
    admission_config_defaults(&cfg);
    struct admission *a = admission_new(&cfg);
    int status;
    char why[256], host[32];
    uint8_t d[ADMISSION_DIGEST_SIZE];
    /* A flood of distinct sources and credentials evicts; it never grows or fails. */
    for (int i = 0; i < 100000; i++) {
        snprintf(host, sizeof host, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        char cred[32];
        snprintf(cred, sizeof cred, "Bearer %d", i);
        digest_of(cred, d);
        admission_check(a, host, d, i, &status, why, sizeof why);
        admission_failed(a, host, d, i);
    }
    char h[64];
    admission_source_host("127.0.0.1:5000", h, sizeof h);
    assert_string_equal(h, "127.0.0.1");
    admission_source_host("[::1]:5000", h, sizeof h);
    assert_string_equal(h, "[::1]");
    admission_free(a);
}

static struct audit_record refusal(const char *source, const char *message)
{
    return (struct audit_record){.time_ms = 1000,
                                 .class_uid = AUDIT_CLASS_AUTHENTICATION,
                                 .activity = AUDIT_CREATE,
                                 .actor_kind = "unknown",
                                 .operation = "/gantry.v1.Sandboxes/List",
                                 .status_code = GRPC_STATUS_UNAUTHENTICATED,
                                 .message = message,
                                 .source = source,
                                 .request_id = "r"};
}

static void test_sink_aggregates_repeats(void **state)
{
    (void)state;
    struct audit_sink_config cfg;
    audit_sink_config_defaults(&cfg);
    cfg.flush_ms = 60000; /* only explicit flushes in this test */
    cfg.max_keys = 4;
    struct audit_sink *s = audit_sink_start(NULL, &cfg);
    assert_non_null(s);
    struct audit_sink_stats st;
    /* 10,000 identical refusals from one host (several ports): one row now, one row of 9,999 at the
     * end of the window. */
    for (int i = 0; i < 10000; i++) {
        char src[32];
        snprintf(src, sizeof src, "10.0.0.1:%d", 1000 + i % 50);
        struct audit_record r = refusal(src, "missing credentials");
        audit_sink_record(s, &r);
    }
    audit_sink_flush(s, false);
    audit_sink_stats(s, &st);
    assert_int_equal(st.recorded, 10000);
    assert_int_equal(st.rows_written, 1);
    audit_sink_flush(s, true);
    audit_sink_stats(s, &st);
    assert_int_equal(st.rows_written, 2);
    assert_int_equal(st.aggregated, 9999);
    /* Distinct events beyond max_keys are counted in one overflow row per class. */
    for (int i = 0; i < 10; i++) {
        char src[32];
        snprintf(src, sizeof src, "10.0.1.%d:1", i);
        struct audit_record r = refusal(src, "missing credentials");
        audit_sink_record(s, &r);
    }
    audit_sink_flush(s, true);
    audit_sink_stats(s, &st);
    assert_int_equal(st.overflow, 6);
    assert_int_equal(st.rows_written, 2 + 4 + 1);
    audit_sink_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_unknown_and_missing),
        cmocka_unit_test(test_failures_limit_the_source_but_never_a_known_credential),
        cmocka_unit_test(test_rate_of_unverified_calls),
        cmocka_unit_test(test_tables_are_bounded),
        cmocka_unit_test(test_sink_aggregates_repeats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
