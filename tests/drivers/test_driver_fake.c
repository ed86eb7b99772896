/* The fake driver: the shared conformance checks (over a shared state file, so a second instance
 * sees the same backend), then what fake.h promises on its own: deterministic injected failures
 * and lost replies, latency on the injected clock, the PROVISIONING -> READY delay, the journal's
 * lines, and refusing a corrupt state file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "conformance.h"
#include "drivers/fake.h"
#include "lib/file.h"
#include "lib/mem.h"

static char dir[256];
static char state_path[300];
static char journal_path[300];
static const char *const keys[] = {"flavour", NULL};
static const char *const command[] = {"sleep", "infinity"};

static struct driver *open_shared(void *ctx)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_fake_config cfg = {
        .state_path = state_path, .journal_path = journal_path, .config_keys = keys};
    (void)ctx;
    if (driver_fake_new(&cfg, &d, errmsg) != 0) {
        fail_msg("driver_fake_new: %s", errmsg);
    }
    return d;
}

static const struct conf_env env = {
    .open = open_shared,
    .command = command,
    .n_command = 2,
    .image = "",
    .config_key = "flavour",
    .config_value = "vanilla",
    .ns = "team-a",
    .ready_timeout_ms = 5000,
};

static void test_lifecycle(void **state)
{
    conf_lifecycle(&env);
}

static void test_stale_epoch(void **state)
{
    conf_stale_epoch(&env);
}

static void test_adoption(void **state)
{
    conf_adoption(&env);
}

static void test_namespaces(void **state)
{
    conf_namespaces(&env);
}

static void test_config_keys(void **state)
{
    conf_config_keys(&env);
}

static void test_bad_arguments(void **state)
{
    conf_bad_arguments(&env);
}

/* Run 200 calls with 30% failures and 20% lost replies; return the outcome string. */
static void outcomes(uint64_t seed, char *out, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct clock_fake clk;
    clock_fake_init(&clk, 0, 1795428000000ull);
    struct driver_fake_config cfg = {.clock = &clk.base,
                                     .failure_ppm = 300000,
                                     .lost_reply_ppm = 200000,
                                     .seed = seed,
                                     .latency_ns = 1000000};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), 0);
    for (size_t i = 0; i + 1 < n; i++) {
        int rv = driver_ensure_namespace(d, 1, "ns", errmsg);
        out[i] = rv == 0 ? 'o' : rv == GERR_UNAVAILABLE ? 'f' : rv == GERR_TIMEOUT ? 'l' : '?';
    }
    out[n - 1] = '\0';
    assert_int_equal(driver_fake_calls(d), n - 1);
    assert_int_equal(clk.slept, (n - 1) * 1000000ull); /* latency went through the clock */
    driver_free(d);
}

static void test_injection_is_deterministic(void **state)
{
    char a[201], b[201], c[201];
    outcomes(42, a, sizeof a);
    outcomes(42, b, sizeof b);
    outcomes(43, c, sizeof c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_non_null(strchr(a, 'o'));
    assert_non_null(strchr(a, 'f'));
    assert_non_null(strchr(a, 'l'));
    assert_null(strchr(a, '?'));
}

static void test_stale_beats_injection(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_fake_config cfg = {.failure_ppm = 1000000};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), 0);
    assert_int_equal(driver_ensure_namespace(d, 5, "ns", errmsg), GERR_UNAVAILABLE);
    assert_int_equal(driver_ensure_namespace(d, 4, "ns", errmsg), DRIVER_ERR_STALE);
    driver_free(d);
}

static void test_ready_delay(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct clock_fake clk;
    struct conf_spec cs;
    struct driver_sandbox s;
    clock_fake_init(&clk, 0, 1795428000000ull);
    struct driver_fake_config cfg = {.clock = &clk.base, .ready_after_ms = 1500};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), 0);
    conf_spec(&env, &cs, "slow");
    assert_int_equal(driver_ensure_namespace(d, 1, env.ns, errmsg), 0);
    assert_int_equal(driver_create(d, 1, &cs.spec, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_PROVISIONING);
    assert_int_equal(s.created_at_ms, 1795428000000ull);
    driver_sandbox_close(&s);
    clock_fake_advance(&clk, 1499000000ull);
    assert_int_equal(driver_get(d, 1, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_PROVISIONING);
    driver_sandbox_close(&s);
    clock_fake_advance(&clk, 1000000ull);
    assert_int_equal(driver_get(d, 1, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_READY);
    driver_sandbox_close(&s);
    uint64_t n = 0;
    assert_int_equal(driver_fake_count(d, &n, errmsg), 0);
    assert_int_equal(n, 1);
    driver_free(d);
}

static void test_journal(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[320];
    struct driver *d;
    struct conf_spec cs;
    struct driver_sandbox s;
    snprintf(path, sizeof path, "%s/journal-only.jsonl", dir);
    struct driver_fake_config cfg = {.journal_path = path};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), 0);
    conf_spec(&env, &cs, "journaled");
    assert_int_equal(driver_ensure_namespace(d, 7, env.ns, errmsg), 0);
    assert_int_equal(driver_create(d, 7, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, 6, env.ns, cs.id, errmsg), DRIVER_ERR_STALE);
    assert_int_equal(driver_delete(d, 8, env.ns, cs.id, errmsg), 0);
    driver_free(d);

    char *text;
    size_t len;
    assert_int_equal(file_read_all(path, 1 << 20, &text, &len, errmsg), 0);
    const char *want[][4] = {{"ensure_namespace", "", "7", "GERR_OK"},
                             {"create", cs.id, "7", "GERR_OK"},
                             {"delete", cs.id, "6", "GERR_STALE"},
                             {"delete", cs.id, "8", "GERR_OK"}};
    char *line = text;
    for (size_t i = 0; i < 4; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "op")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(j, "id")), want[i][1]);
        assert_int_equal(json_integer_value(json_object_get(j, "epoch")), atoi(want[i][2]));
        assert_string_equal(json_string_value(json_object_get(j, "result")), want[i][3]);
        assert_string_equal(json_string_value(json_object_get(j, "ns")), env.ns);
        assert_true(json_integer_value(json_object_get(j, "t_ms")) > 0);
        assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
        /* The fencing invariant a checker looks for: nothing accepted below the newest epoch. */
        if (strcmp(want[i][3], "GERR_OK") == 0) {
            assert_true(json_integer_value(json_object_get(j, "epoch")) >=
                        json_integer_value(json_object_get(j, "newest")));
        }
        json_decref(j);
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    mem_free(text);
}

static void test_corrupt_state_refused(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[320];
    struct driver *d = NULL;
    snprintf(path, sizeof path, "%s/corrupt.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(
        "{\"version\":1,\"newest_epoch\":3,\"seq\":0,\"namespaces\":[\"a\"],\"sandboxes\":[{\"id\":\"x\"}]}",
        f);
    fclose(f);
    struct driver_fake_config cfg = {.state_path = path};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), GERR_PROTO);
    assert_null(d);
    assert_non_null(strstr(errmsg, path));
}

static void test_bad_config(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = NULL;
    struct driver_fake_config cfg = {.failure_ppm = 1000001};
    assert_int_equal(driver_fake_new(&cfg, &d, errmsg), GERR_INVAL);
    struct driver_fake_config cfg2 = {.journal_path = "/nonexistent/dir/journal"};
    assert_int_equal(driver_fake_new(&cfg2, &d, errmsg), GERR_NOTFOUND);
    assert_null(d);
}

static void test_capabilities(void **state)
{
    struct driver *d = open_shared(NULL);
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_string_equal(caps.name, "fake");
    assert_true(caps.available);
    assert_true(caps.shared_backend);
    assert_string_equal(caps.config_keys[0], "flavour");
    assert_null(caps.config_keys[1]);
    /* No logs and no exec: a clear refusal naming the driver, nothing made. */
    assert_false(caps.logs);
    assert_false(caps.exec);
    char errmsg[GERR_MSG_SIZE];
    struct driver_log *l = NULL;
    struct driver_log_query q = {.tail_lines = -1};
    const char *id = "01234567-89ab-cdef-0123-456789abcdef";
    assert_int_equal(driver_logs_open(d, "team-a", id, &q, &l, errmsg), GERR_UNAVAILABLE);
    assert_string_equal(errmsg, "logs are not supported by the fake driver yet");
    assert_null(l);
    const char *const cmd[] = {"true"};
    struct driver_exec_spec xs = {.command = cmd, .n_command = 1};
    struct driver_exec *x = NULL;
    assert_int_equal(driver_exec_start(d, "team-a", id, &xs, &x, errmsg), GERR_UNAVAILABLE);
    assert_string_equal(errmsg, "exec is not supported by the fake driver yet");
    assert_null(x);
    /* No warm pools either (drivers/driver.h, caps.pools): every pool call refused, saying so. */
    assert_false(caps.pools);
    struct driver_pool_spec ps = {
        .id = id, .namespace = "team-a", .name = "warm", .template_name = "agent", .replicas = 1};
    struct driver_pool p;
    struct driver_pool_list pl;
    assert_int_equal(driver_pool_apply(d, 1, &ps, &p, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "the fake driver does not manage warm pools"));
    assert_null(p.name);
    assert_int_equal(driver_pool_delete(d, 1, "team-a", "warm", id, errmsg), GERR_UNAVAILABLE);
    assert_int_equal(driver_pool_list(d, 1, &pl, errmsg), GERR_UNAVAILABLE);
    assert_int_equal(pl.n, 0);
    driver_free(d);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/gantry-driver-fake-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(state_path, sizeof state_path, "%s/state.json", dir);
    snprintf(journal_path, sizeof journal_path, "%s/journal.jsonl", dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_stale_epoch),
        cmocka_unit_test(test_adoption),
        cmocka_unit_test(test_namespaces),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_injection_is_deterministic),
        cmocka_unit_test(test_stale_beats_injection),
        cmocka_unit_test(test_ready_delay),
        cmocka_unit_test(test_journal),
        cmocka_unit_test(test_corrupt_state_refused),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_capabilities),
    };
    int failed = cmocka_run_group_tests_name("driver_fake", tests, NULL, NULL);
    if (failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return failed;
}
