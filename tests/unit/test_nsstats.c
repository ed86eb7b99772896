/* api/gate/nsstats.h: per-namespace call counters and their bound on series. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/gate/nsstats.h"
#include "lib/buf.h"
#include "server/grpc/status.h"

#define CREATE "/gantry.v1.Sandboxes/Create"
#define LIST   "/gantry.v1.Sandboxes/List"

static char *render(struct nsstats *s, struct buf *b)
{
    buf_init(b);
    nsstats_write(s, b);
    buf_append(b, "", 1);
    return (char *)b->data;
}

static void counts_by_namespace_method_and_outcome(void **state)
{
    (void)state;
    struct nsstats *s = nsstats_new(4);
    const char *names[] = {"team-a", "team-b"};
    assert_int_equal(nsstats_set_known(s, names, 2), 2);
    nsstats_count(s, nsstats_tag(s, "team-a", CREATE), GRPC_STATUS_OK);
    nsstats_count(s, nsstats_tag(s, "team-a", CREATE), GRPC_STATUS_RESOURCE_EXHAUSTED);
    nsstats_count(s, nsstats_tag(s, "team-b", LIST), GRPC_STATUS_PERMISSION_DENIED);
    struct buf b;
    char *t = render(s, &b);
    assert_non_null(
        strstr(t, "gantry_namespace_api_calls_total{namespace=\"team-a\",method=\"Sandboxes/Create\"} 2\n"));
    assert_non_null(
        strstr(t, "gantry_namespace_api_errors_total{namespace=\"team-a\",method=\"Sandboxes/Create\"} 1\n"));
    assert_non_null(
        strstr(t, "gantry_namespace_api_calls_total{namespace=\"team-b\",method=\"Sandboxes/List\"} 1\n"));
    assert_non_null(
        strstr(t, "gantry_namespace_api_errors_total{namespace=\"team-b\",method=\"Sandboxes/List\"} 1\n"));
    assert_non_null(strstr(t, "gantry_namespace_api_denied_total{namespace=\"team-b\"} 1\n"));
    /* Zero counters are not written. */
    assert_null(strstr(t, "gantry_namespace_api_denied_total{namespace=\"team-a\"}"));
    assert_null(strstr(t, "_other"));
    buf_close(&b);
    nsstats_free(s);
}

static void unknown_names_and_overflow_go_to_other(void **state)
{
    (void)state;
    struct nsstats *s = nsstats_new(2);
    const char *names[] = {"a", "b", "c", "d"};
    assert_int_equal(nsstats_set_known(s, names, 4), 2);
    assert_int_equal(nsstats_overflow(s), 2);
    nsstats_count(s, nsstats_tag(s, "c", CREATE), GRPC_STATUS_OK);          /* past the bound */
    nsstats_count(s, nsstats_tag(s, "no-such-ns", CREATE), GRPC_STATUS_OK); /* never known */
    nsstats_count(s, nsstats_tag(s, "a", CREATE), GRPC_STATUS_OK);
    struct buf b;
    char *t = render(s, &b);
    assert_non_null(strstr(t, "{namespace=\"_other\",method=\"Sandboxes/Create\"} 2\n"));
    assert_non_null(strstr(t, "{namespace=\"a\",method=\"Sandboxes/Create\"} 1\n"));
    assert_null(strstr(t, "no-such-ns"));
    assert_null(strstr(t, "namespace=\"c\""));
    buf_close(&b);
    /* A name once tracked keeps its slot; adding it again changes nothing. */
    const char *again[] = {"b", "a"};
    assert_int_equal(nsstats_set_known(s, again, 2), 2);
    nsstats_free(s);
}

static void names_that_are_not_labels_are_refused(void **state)
{
    (void)state;
    struct nsstats *s = nsstats_new(8);
    const char *names[] = {"",           "Upper",
                           "has\"quote", "x\ny",
                           "ok-1",       "0123456789012345678901234567890123456789012345678901234567890123"};
    assert_int_equal(nsstats_set_known(s, names, 6), 1);
    assert_int_equal(nsstats_tag(s, "", CREATE), 0);                /* no namespace: not counted */
    assert_int_equal(nsstats_tag(s, "ok-1", "/no.Such/Method"), 0); /* not in the table */
    assert_int_not_equal(nsstats_tag(s, "ok-1", CREATE), 0);
    nsstats_count(s, 0, GRPC_STATUS_OK);           /* tag 0: nothing */
    nsstats_count(s, 0xffffffffu, GRPC_STATUS_OK); /* not a tag of this table */
    struct buf b;
    char *t = render(s, &b);
    assert_null(strstr(t, "} 1"));
    buf_close(&b);
    nsstats_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counts_by_namespace_method_and_outcome),
        cmocka_unit_test(unknown_names_and_overflow_go_to_other),
        cmocka_unit_test(names_that_are_not_labels_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
