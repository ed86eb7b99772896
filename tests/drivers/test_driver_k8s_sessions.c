/* The kubernetes driver's sessions (drivers/k8s_sessions.h) against the strict fake API server
 * (tests/drivers/fake_kube_apiserver.py) over real TLS: the pod log API with tail, since and
 * follow; a sandbox that is not there; the server refusing. The driver runs in managed mode as
 * the cluster admin (the Helm chart's RBAC does not grant pods/log, pods/exec or
 * pods/portforward yet: docs/drivers.md).
 *
 * Without /usr/bin/python3 or /usr/bin/openssl the test says so and exits 77 (skipped). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "conformance.h"
#include "drivers/driver_internal.h"
#include "drivers/k8s.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_sessions.h"
#include "lib/clock.h"
#include "lib/mem.h"
#include "lib/proc.h"

#define PYTHON  "/usr/bin/python3"
#define OPENSSL "/usr/bin/openssl"
#define GW      "gw-s"
#define HOME_NS "gantry-s"

static char dir[256], cert[300], key[300], token[300], server[64];
static struct proc apiserver;
static const char *const sleeper[] = {"sleep", "infinity"};

static struct driver *open_driver(void *ctx)
{
    (void)ctx;
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_k8s_config c = {.server = server,
                                  .token_file = token,
                                  .ca_file = cert,
                                  .gateway_id = GW,
                                  .home_namespace = HOME_NS,
                                  .mode = DRIVER_K8S_MANAGED,
                                  .timeout_ms = 10000};
    if (driver_k8s_new(&c, &d, errmsg) != 0) {
        fail_msg("driver_k8s_new: %s", errmsg);
    }
    return d;
}

static const struct conf_env env = {
    .open = open_driver,
    .command = sleeper,
    .n_command = 2,
    .image = "busybox:1.36",
    .ns = "team-s",
    .ready_timeout_ms = 10000,
};

static long raw(const char *method, const char *path, const char *body)
{
    char errmsg[GERR_MSG_SIZE];
    struct k8s_http *h;
    struct k8s_http_config cfg = {
        .server = server, .token_file = token, .ca_file = cert, .max_body = 1 << 20};
    struct buf resp;
    long status = 0;
    assert_int_equal(k8s_http_new(&cfg, &h, errmsg), 0);
    buf_init(&resp);
    if (k8s_http_request(h, method, path, body, &status, &resp, errmsg) != 0) {
        fail_msg("%s %s: %s", method, path, errmsg);
    }
    buf_close(&resp);
    k8s_http_free(h);
    return status;
}

/* A running sandbox of gantry namespace team-s: its id, Kubernetes namespace and pod name. */
struct sbx {
    struct driver *d;
    struct conf_spec cs;
    char kns[64], pod[64];
};

static void sbx_make(struct sbx *s, const char *name)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver_sandbox out;
    s->d = open_driver(NULL);
    assert_int_equal(driver_ensure_namespace(s->d, 1, env.ns, errmsg), 0);
    conf_spec(&env, &s->cs, name);
    assert_int_equal(driver_create(s->d, 1, &s->cs.spec, &out, errmsg), 0);
    /* The handle is "k8s:<namespace>/<object name>"; the pod is named after the object. */
    assert_int_equal(strncmp(out.handle, "k8s:", 4), 0);
    const char *slash = strchr(out.handle, '/');
    assert_non_null(slash);
    snprintf(s->kns, sizeof s->kns, "%.*s", (int)(slash - out.handle - 4), out.handle + 4);
    snprintf(s->pod, sizeof s->pod, "%s", slash + 1);
    driver_sandbox_close(&out);
    conf_wait_ready(&env, s->d, 1, env.ns, s->cs.id);
}

static void sbx_free(struct sbx *s)
{
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(driver_delete(s->d, 1, env.ns, s->cs.id, errmsg), 0);
    driver_free(s->d);
}

/* Append @lines (a JSON array) to the pod's log, and end it with @end. */
static void podlog(const struct sbx *s, const char *lines, bool end)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"namespace\":\"%s\",\"name\":\"%s\",\"lines\":%s,\"end\":%s}", s->kns,
             s->pod, lines, end ? "true" : "false");
    assert_int_equal(raw("POST", "/_fake/podlog", body), 200);
}

/* Read from @l until GERR_BUSY or an end, appending to @out; returns that code. The stamps of
 * the pieces go into @stamps (up to 16). */
static int drain(struct driver_log *l, struct buf *out, uint64_t *stamps, size_t *n_stamps)
{
    char errmsg[GERR_MSG_SIZE];
    uint8_t *chunk = mem_alloc(DRIVER_LOG_CHUNK);
    int rv;
    for (;;) {
        size_t n;
        uint64_t ts;
        rv = driver_log_next(l, chunk, DRIVER_LOG_CHUNK, &n, &ts, errmsg);
        if (rv != 0) {
            break;
        }
        assert_true(n > 0);
        assert_true(ts > 1600000000000ull);
        buf_append(out, chunk, n);
        if (stamps != NULL && *n_stamps < 16) {
            stamps[(*n_stamps)++] = ts;
        }
    }
    mem_free(chunk);
    return rv;
}

/* Drain until @want is the whole output read so far, or fail after 10 s. */
static int drain_until(struct driver_log *l, struct buf *out, const char *want)
{
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    for (;;) {
        int rv = drain(l, out, NULL, NULL);
        if (out->len == strlen(want) && memcmp(out->data, want, out->len) == 0) {
            return rv;
        }
        if (rv != GERR_BUSY || clock_mono_ms(clock_system()) > deadline) {
            buf_append_zero(out, 1);
            fail_msg("log read %s; got \"%s\", want \"%s\"", gerr_name(rv), (const char *)out->data, want);
        }
        usleep(20000);
    }
}

static void test_log_stamp(void **state)
{
    (void)state;
    int64_t ns;
    size_t used;
    const char *ok = "2026-12-06T17:52:11.123456789Z hello";
    assert_int_equal(k8s_log_stamp(ok, strlen(ok), &ns, &used), 0);
    assert_int_equal(used, 31);
    assert_int_equal(ns, 1796579531123456789ll);
    const char *short_frac = "2026-12-06T17:52:11.5Z x";
    assert_int_equal(k8s_log_stamp(short_frac, strlen(short_frac), &ns, &used), 0);
    assert_int_equal(ns % 1000000000, 500000000);
    const char *bare = "2026-12-06T17:52:11Z";
    assert_int_equal(k8s_log_stamp(bare, strlen(bare), &ns, &used), 0);
    assert_int_equal(used, strlen(bare));
    const char *const bad[] = {"",
                               "hello",
                               "2026-13-06T17:52:11Z x",
                               "2026-12-06T17:52:11.Z x",
                               "2026-12-06T17:52:11.1234567890Z x",
                               "2026-12-06T17:52:11+01:00 x",
                               "2026-12-06T17:52:11Zx",
                               "2026-12-06 17:52:11Z x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(k8s_log_stamp(bad[i], strlen(bad[i]), &ns, &used), GERR_PROTO);
    }
}

static void test_logs_follow(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct sbx s;
    struct driver_caps caps;
    struct driver_log *l;
    struct buf out;
    sbx_make(&s, "logs");
    driver_capabilities(s.d, &caps);
    assert_true(caps.logs);
    podlog(&s, "[\"one\",\"two\"]", false);
    struct driver_log_query q = {.tail_lines = -1};
    assert_int_equal(driver_logs_open(s.d, env.ns, s.cs.id, &q, &l, errmsg), 0);
    buf_init(&out);
    /* What the kubelet holds now comes before the first GERR_BUSY. */
    assert_int_equal(drain(l, &out, NULL, NULL), GERR_BUSY);
    buf_append_zero(&out, 1);
    assert_string_equal((const char *)out.data, "one\ntwo\n");
    buf_reset(&out);
    /* Then follow: new lines, each once, and the end. */
    podlog(&s, "[\"three\"]", false);
    assert_int_equal(drain_until(l, &out, "three\n"), GERR_BUSY);
    podlog(&s, "[\"four\",\"\"]", true);
    buf_reset(&out);
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    int rv;
    while ((rv = drain(l, &out, NULL, NULL)) == GERR_BUSY && clock_mono_ms(clock_system()) < deadline) {
        usleep(20000);
    }
    assert_int_equal(rv, GERR_CLOSED);
    buf_append_zero(&out, 1);
    assert_string_equal((const char *)out.data, "four\n\n");
    driver_log_close(l);
    sbx_free(&s);
}

static void test_logs_tail_and_since(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct sbx s;
    struct driver_log *l;
    struct buf out;
    uint64_t stamps[16];
    size_t n_stamps = 0;
    sbx_make(&s, "tail");
    podlog(&s, "[\"a\",\"b\",\"c\"]", false);
    buf_init(&out);
    struct driver_log_query q = {.tail_lines = 2};
    assert_int_equal(driver_logs_open(s.d, env.ns, s.cs.id, &q, &l, errmsg), 0);
    assert_int_equal(drain(l, &out, stamps, &n_stamps), GERR_BUSY);
    buf_append_zero(&out, 1);
    assert_string_equal((const char *)out.data, "b\nc\n");
    assert_int_equal(n_stamps, 2);
    assert_true(stamps[0] <= stamps[1]);
    /* Following after a tail gives the new lines only, not the log again. */
    podlog(&s, "[\"d\"]", false);
    buf_reset(&out);
    drain_until(l, &out, "d\n");
    driver_log_close(l);

    q = (struct driver_log_query){.tail_lines = 0};
    assert_int_equal(driver_logs_open(s.d, env.ns, s.cs.id, &q, &l, errmsg), 0);
    buf_reset(&out);
    assert_int_equal(drain(l, &out, NULL, NULL), GERR_BUSY);
    assert_int_equal(out.len, 0);
    podlog(&s, "[\"e\"]", false);
    drain_until(l, &out, "e\n");
    driver_log_close(l);

    /* since: only what arrived at or after it (here: a moment after "e", so nothing, then "f"). */
    usleep(5000);
    q = (struct driver_log_query){.tail_lines = -1, .since_ms = driver__now_ms()};
    usleep(5000);
    assert_int_equal(driver_logs_open(s.d, env.ns, s.cs.id, &q, &l, errmsg), 0);
    buf_reset(&out);
    assert_int_equal(drain(l, &out, NULL, NULL), GERR_BUSY);
    assert_int_equal(out.len, 0);
    podlog(&s, "[\"f\"]", false);
    drain_until(l, &out, "f\n");
    driver_log_close(l);
    buf_close(&out);
    sbx_free(&s);
}

static void test_logs_errors(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct driver_log *l = (struct driver_log *)1;
    struct driver *d = open_driver(NULL);
    struct driver_log_query q = {.tail_lines = -1};
    assert_int_equal(driver_ensure_namespace(d, 1, env.ns, errmsg), 0);
    assert_int_equal(driver_logs_open(d, env.ns, "00000000-0000-4000-8000-000000000000", &q, &l, errmsg),
                     GERR_NOTFOUND);
    assert_null(l);
    assert_int_equal(driver_logs_open(d, "Bad_NS", "00000000-0000-4000-8000-000000000000", &q, &l, errmsg),
                     GERR_INVAL);
    driver_free(d);

    struct sbx s;
    sbx_make(&s, "deleted");
    assert_int_equal(driver_logs_open(s.d, env.ns, s.cs.id, &q, &l, errmsg), 0);
    /* The sandbox deleted while a reader follows: the stream ends, the reader says so. */
    sbx_free(&s);
    struct buf out;
    buf_init(&out);
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    int rv;
    while ((rv = drain(l, &out, NULL, NULL)) == GERR_BUSY && clock_mono_ms(clock_system()) < deadline) {
        usleep(20000);
    }
    assert_int_equal(rv, GERR_CLOSED);
    buf_close(&out);
    driver_log_close(l);
}

/* ---- Setup */

static int run(const char *const *argv)
{
    char errmsg[GERR_MSG_SIZE], out[320];
    struct proc p;
    int status;
    snprintf(out, sizeof out, "%s/openssl.log", dir);
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = out, .append = true};
    if (proc_spawn(&p, &spec, errmsg) != 0 || proc_reap(&p, 60000, &status) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], errmsg);
        return -1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int setup(void)
{
    char errmsg[GERR_MSG_SIZE], line[128], out[320], err[320];
    const char *const gen[] = {OPENSSL,
                               "req",
                               "-x509",
                               "-newkey",
                               "ec",
                               "-pkeyopt",
                               "ec_paramgen_curve:P-256",
                               "-nodes",
                               "-subj",
                               "/CN=localhost",
                               "-addext",
                               "subjectAltName=IP:127.0.0.1,DNS:localhost",
                               "-days",
                               "2",
                               "-keyout",
                               key,
                               "-out",
                               cert,
                               NULL};
    if (run(gen) != 0) {
        fprintf(stderr, "openssl could not make a certificate (see %s/openssl.log)\n", dir);
        return -1;
    }
    FILE *f = fopen(token, "w");
    if (f == NULL || fputs("test-token-sessions\n", f) < 0 || fclose(f) != 0) {
        return -1;
    }
    snprintf(out, sizeof out, "%s/apiserver.out", dir);
    snprintf(err, sizeof err, "%s/apiserver.err", dir);
    const char *argv[] = {PYTHON, FAKE_KUBE_APISERVER, "--cert", cert, "--key",
                          key,    "--token-file",      token,    NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    if (proc_spawn(&apiserver, &spec, errmsg) != 0 ||
        proc_wait_line(&apiserver, "LISTENING ", 30000, line, sizeof line, errmsg) != 0) {
        fprintf(stderr, "fake API server did not start: %s\n", errmsg);
        return -1;
    }
    snprintf(server, sizeof server, "https://127.0.0.1:%d", atoi(line + strlen("LISTENING ")));
    return raw("POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"" HOME_NS "\"}}") == 201 ? 0 : -1;
}

int main(void)
{
    if (access(PYTHON, X_OK) != 0 || access(OPENSSL, X_OK) != 0) {
        fprintf(stderr, "SKIP: driver_k8s_sessions needs %s and %s for the fake API server\n", PYTHON,
                OPENSSL);
        return 77;
    }
    snprintf(dir, sizeof dir, "/tmp/gantry-driver-k8s-sessions-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(token, sizeof token, "%s/token", dir);
    if (setup() != 0) {
        proc_stop(&apiserver, 5000);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_stamp),
        cmocka_unit_test(test_logs_follow),
        cmocka_unit_test(test_logs_tail_and_since),
        cmocka_unit_test(test_logs_errors),
    };
    if (getenv("GANTRY_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("GANTRY_TEST_FILTER"));
    }
    int failed = cmocka_run_group_tests_name("driver_k8s_sessions", tests, NULL, NULL);
    proc_stop(&apiserver, 5000);
    if (failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return failed != 0 ? 1 : 0;
}
