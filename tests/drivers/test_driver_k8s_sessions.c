/* The kubernetes driver's sessions (drivers/k8s_sessions.h) against the strict fake API server
 * (tests/drivers/fake_kube_apiserver.py) over real TLS: the pod log API with tail, since and
 * follow; exec (stdin, stdout, stderr, the exit code, the end of stdin, a TTY and its resize, a
 * command that cannot run) and port-forward (an echo server, a refused port) over WebSocket; a
 * sandbox that is not there. The driver runs in managed mode as the ServiceAccount of the Helm
 * release "gantry" with exactly the RBAC the chart renders for it (tests/drivers/rbac/
 * managed-gw-a.json, which grants pods/log, pods/exec and pods/portforward); the test's own
 * requests use the admin token.
 *
 * Without /usr/bin/python3 or /usr/bin/openssl the test says so and exits 77 (skipped). */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
#define GW      "gw-a"
#define HOME_NS "gantry"

static char dir[256], cert[300], key[300], token[300], sa_token[300], server[64];
static struct proc apiserver;
static const char *const sleeper[] = {"sleep", "infinity"};

static struct driver *open_driver(void *ctx)
{
    (void)ctx;
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_k8s_config c = {.server = server,
                                  .token_file = sa_token,
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
    if (driver_ensure_namespace(s->d, 1, env.ns, errmsg) != 0) {
        fail_msg("ensure_namespace: %s", errmsg);
    }
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
                               "2026-12-06 17:52:11Z x",
                               "2826-12-06T17:52:12.123456789Z x" /* past int64 ns (fuzz_ws found it) */};
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
    buf_close(&out);
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
    /* driver.h: GERR_CLOSED when the stream ended, GERR_NOTFOUND when the reader learned the sandbox
     * was deleted; which one comes depends on whether the stream ended before the reader asked the
     * API server again (under load it may not have). */
    if (rv != GERR_CLOSED && rv != GERR_NOTFOUND) {
        fail_msg("the reader of a deleted sandbox ended with %s, not GERR_CLOSED or GERR_NOTFOUND",
                 gerr_name(rv));
    }
    buf_close(&out);
    driver_log_close(l);
}

/* ---- Exec and port-forward */

/* Write all of @s to non-blocking @fd. */
static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Read @out and @err (-1: none) to EOF (or until @until appears in @out), 10 s at most. */
static void read_to_eof(int out, int err, struct buf *o, struct buf *e, const char *until)
{
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    bool out_open = true, err_open = err >= 0;
    while (out_open || err_open) {
        struct pollfd p[2] = {{.fd = out_open ? out : -1, .events = POLLIN},
                              {.fd = err_open ? err : -1, .events = POLLIN}};
        assert_true(clock_mono_ms(clock_system()) < deadline);
        poll(p, 2, 200);
        char tmp[4096];
        for (int i = 0; i < 2; i++) {
            if (p[i].revents == 0) {
                continue;
            }
            ssize_t r = read(p[i].fd, tmp, sizeof tmp);
            if (r > 0) {
                buf_append(i == 0 ? o : e, tmp, (size_t)r);
            } else if (r == 0 || errno != EAGAIN) {
                *(i == 0 ? &out_open : &err_open) = false;
            }
        }
        if (until != NULL && o->len > 0) {
            buf_append_zero(o, 1);
            o->len--;
            if (strstr((const char *)o->data, until) != NULL) {
                return;
            }
        }
    }
    buf_append_zero(o, 1);
    o->len--;
    buf_append_zero(e, 1);
    e->len--;
}

static int wait_status(struct driver_exec *x)
{
    int code, sig, rv;
    uint64_t deadline = clock_mono_ms(clock_system()) + 10000;
    while ((rv = driver_exec_status(x, &code, &sig)) == GERR_BUSY) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        usleep(10000);
    }
    assert_int_equal(rv, 0);
    assert_int_equal(sig, 0);
    return code;
}

/* A writer of @n bytes of 'q' to @fd (non-blocking), for test_exec_both_ways. */
struct feeder {
    int fd;
    size_t n;
};

static void *feed_main(void *arg)
{
    struct feeder *f = arg;
    char chunk[65536];
    memset(chunk, 'q', sizeof chunk);
    size_t left = f->n;
    uint64_t deadline = clock_mono_ms(clock_system()) + 60000;
    while (left > 0 && clock_mono_ms(clock_system()) < deadline) {
        ssize_t w = write(f->fd, chunk, left < sizeof chunk ? left : sizeof chunk);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = f->fd, .events = POLLOUT};
            poll(&p, 1, 200);
            continue;
        }
        if (w <= 0) {
            break;
        }
        left -= (size_t)w;
    }
    f->n -= left; /* what was written */
    return NULL;
}

/* `cat` with 8 MiB in while its output is read late: the command's output and input both back up,
 * and the bridge must keep reading the server's output while the server is not taking input, or
 * the two wait on each other until the send times out (30 s; the command's output cut, exit 255). */
/* driver_exec_start that must succeed; a failure names the driver's reason. */
static void exec_start_ok(const struct sbx *s, const struct driver_exec_spec *spec, struct driver_exec **x)
{
    char errmsg[GERR_MSG_SIZE] = "";
    int rv = driver_exec_start(s->d, env.ns, s->cs.id, spec, x, errmsg);
    if (rv != 0) {
        fail_msg("exec start of %s: %s: %s", spec->command[0], gerr_name(rv), errmsg);
    }
}

static void test_exec_both_ways(void **state)
{
    (void)state;
    struct sbx s;
    struct driver_exec *x;
    int in, out, err;
    sbx_make(&s, "both");
    const char *const cat[] = {"cat"};
    struct driver_exec_spec spec = {.command = cat, .n_command = 1};
    exec_start_ok(&s, &spec, &x);
    driver_exec_fds(x, &in, &out, &err);
    struct feeder f = {.fd = in, .n = 8u << 20};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feed_main, &f), 0);
    usleep(1500 * 1000); /* nobody reads the output yet: it backs up through the server to cat */
    size_t got = 0;
    bool fed = false;
    uint64_t start = clock_mono_ms(clock_system()), deadline = start + 25000;
    char tmp[65536];
    for (;;) {
        assert_true(clock_mono_ms(clock_system()) < deadline);
        if (!fed && got >= f.n && pthread_tryjoin_np(t, NULL) == 0) {
            fed = true;
            assert_int_equal(f.n, 8u << 20);
            driver_exec_close_stdin(x);
        }
        struct pollfd p = {.fd = out, .events = POLLIN};
        poll(&p, 1, 200);
        ssize_t r = read(out, tmp, sizeof tmp);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            break;
        }
        if (!fed && pthread_tryjoin_np(t, NULL) == 0) {
            fed = true;
            assert_int_equal(f.n, 8u << 20);
            driver_exec_close_stdin(x);
        }
    }
    if (!fed) {
        fail_msg("the output ended after %zu bytes, before the input was all written", got);
    }
    assert_int_equal(got, 8u << 20);
    assert_int_equal(wait_status(x), 0);
    printf("exec both ways: 8 MiB through cat in %llu ms after the output was first read\n",
           (unsigned long long)(clock_mono_ms(clock_system()) - start));
    driver_exec_close(x);
    sbx_free(&s);
}

static void test_exec(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct sbx s;
    struct driver_caps caps;
    struct driver_exec *x;
    int in, out, err;
    struct buf o, e;
    buf_init(&o);
    buf_init(&e);
    sbx_make(&s, "exec");
    driver_capabilities(s.d, &caps);
    assert_true(caps.exec);
    assert_true(caps.port_forward);

    /* stdin, stdout, stderr and the exit code, without a TTY. */
    const char *const script[] = {"sh", "-c", "read x; echo out:$x; echo err:$x >&2; exit 3"};
    struct driver_exec_spec spec = {.command = script, .n_command = 3};
    exec_start_ok(&s, &spec, &x);
    driver_exec_fds(x, &in, &out, &err);
    assert_true(in >= 0 && out >= 0 && err >= 0 && in != out);
    put(in, "hi\n");
    read_to_eof(out, err, &o, &e, NULL);
    assert_string_equal((const char *)o.data, "out:hi\n");
    assert_string_equal((const char *)e.data, "err:hi\n");
    assert_int_equal(wait_status(x), 3);
    assert_int_equal(driver_exec_resize(x, 10, 10), GERR_INVAL); /* no TTY */
    assert_int_equal(driver_exec_signal(x, SIGTERM), GERR_INVAL);
    driver_exec_close(x);

    /* The end of stdin reaches the command (v5's close channel). */
    const char *const cat[] = {"cat"};
    spec = (struct driver_exec_spec){.command = cat, .n_command = 1};
    exec_start_ok(&s, &spec, &x);
    driver_exec_fds(x, &in, &out, &err);
    put(in, "abc");
    driver_exec_close_stdin(x);
    buf_reset(&o);
    buf_reset(&e);
    read_to_eof(out, err, &o, &e, NULL);
    assert_string_equal((const char *)o.data, "abc");
    assert_int_equal(wait_status(x), 0);
    driver_exec_close(x);

    /* A TTY: one descriptor, its size, a resize before the command looks again. */
    const char *const tty[] = {"sh", "-c", "stty size; read x; stty size"};
    spec = (struct driver_exec_spec){.command = tty, .n_command = 3, .tty = true, .rows = 24, .cols = 80};
    exec_start_ok(&s, &spec, &x);
    driver_exec_fds(x, &in, &out, &err);
    assert_int_equal(in, out);
    assert_int_equal(err, -1);
    buf_reset(&o);
    read_to_eof(out, -1, &o, &e, "24 80");
    assert_int_equal(driver_exec_resize(x, 40, 120), 0);
    put(in, "\n");
    buf_reset(&o);
    read_to_eof(out, -1, &o, &e, "40 120");
    assert_int_equal(wait_status(x), 0);
    driver_exec_close(x);

    /* A command that cannot be run: why on stderr, 127. */
    const char *const nope[] = {"/no/such/command"};
    spec = (struct driver_exec_spec){.command = nope, .n_command = 1};
    exec_start_ok(&s, &spec, &x);
    driver_exec_fds(x, &in, &out, &err);
    buf_reset(&o);
    buf_reset(&e);
    read_to_eof(out, err, &o, &e, NULL);
    assert_int_equal(wait_status(x), 127);
    assert_non_null(strstr((const char *)e.data, "/no/such/command"));
    driver_exec_close(x);

    /* Closing an exec whose command still runs returns. */
    const char *const sleeper2[] = {"sleep", "30"};
    spec = (struct driver_exec_spec){.command = sleeper2, .n_command = 2};
    exec_start_ok(&s, &spec, &x);
    assert_int_equal(driver_exec_status(x, &in, &out), GERR_BUSY);
    driver_exec_close(x);

    /* No such sandbox. */
    assert_int_equal(
        driver_exec_start(s.d, env.ns, "00000000-0000-4000-8000-000000000000", &spec, &x, errmsg),
        GERR_NOTFOUND);
    buf_close(&o);
    buf_close(&e);
    sbx_free(&s);
}

/* A one-connection echo server on 127.0.0.1 (the pod's loopback, as the fake plays it). */
static int echo_listener = -1;

static void *echo_once(void *arg)
{
    (void)arg;
    int c = accept(echo_listener, NULL, NULL);
    char tmp[4096];
    ssize_t r;
    while (c >= 0 && (r = read(c, tmp, sizeof tmp)) > 0) {
        if (write(c, tmp, (size_t)r) != r) {
            break;
        }
        if (memchr(tmp, '!', (size_t)r) != NULL) {
            break; /* "!" ends the conversation from this side */
        }
    }
    if (c >= 0) {
        close(c);
    }
    return NULL;
}

static uint16_t listen_local(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(*fd, 4), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

static void test_port_forward(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct sbx s;
    struct driver_exec *x;
    int in, out, err, code, sig;
    pthread_t th;
    struct buf o, e;
    buf_init(&o);
    buf_init(&e);
    sbx_make(&s, "forward");
    uint16_t port = listen_local(&echo_listener);
    assert_int_equal(pthread_create(&th, NULL, echo_once, NULL), 0);
    assert_int_equal(driver_port_connect(s.d, env.ns, s.cs.id, port, &x, errmsg), 0);
    driver_exec_fds(x, &in, &out, &err);
    assert_int_equal(in, out);
    assert_int_equal(err, -1);
    assert_int_equal(driver_exec_status(x, &code, &sig), 0);
    assert_int_equal(driver_exec_resize(x, 1, 1), GERR_INVAL);
    put(in, "ping");
    read_to_eof(out, -1, &o, &e, "ping");
    assert_string_equal((const char *)o.data, "ping"); /* no port prefix in the data */
    put(in, "bye!");
    buf_reset(&o);
    read_to_eof(out, -1, &o, &e, NULL); /* the pod's side closed: EOF */
    assert_string_equal((const char *)o.data, "bye!");
    driver_exec_close(x);
    pthread_join(th, NULL);
    close(echo_listener);

    /* Nothing listens: refused, with the kubelet's words. */
    int fd;
    port = listen_local(&fd);
    close(fd);
    assert_int_equal(driver_port_connect(s.d, env.ns, s.cs.id, port, &x, errmsg), GERR_REFUSED);
    assert_null(x);
    assert_non_null(strstr(errmsg, "refused"));
    assert_int_equal(driver_port_connect(s.d, env.ns, s.cs.id, 0, &x, errmsg), GERR_INVAL);
    buf_close(&o);
    buf_close(&e);
    sbx_free(&s);
}

static void test_exec_status_decode(void **state)
{
    (void)state;
    char msg[128];
    int code;
    const char *ok = "{\"status\":\"Success\",\"metadata\":{}}";
    assert_int_equal(k8s_exec_status_decode(ok, strlen(ok), &code, msg, sizeof msg), 0);
    assert_int_equal(code, 0);
    const char *nz = "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
                     "[{\"reason\":\"ExitCode\",\"message\":\"42\"}]}}";
    assert_int_equal(k8s_exec_status_decode(nz, strlen(nz), &code, msg, sizeof msg), 0);
    assert_int_equal(code, 42);
    const char *nr = "{\"status\":\"Failure\",\"reason\":\"InternalError\",\"message\":\"no\\u0001such\"}";
    assert_int_equal(k8s_exec_status_decode(nr, strlen(nr), &code, msg, sizeof msg), 0);
    assert_int_equal(code, -1);
    assert_string_equal(msg, "no?such");
    const char *const bad[] = {
        "", "[]", "{\"status\":\"Maybe\"}", "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\"}",
        "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
        "[{\"reason\":\"ExitCode\",\"message\":\"300\"}]}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(k8s_exec_status_decode(bad[i], strlen(bad[i]), &code, msg, sizeof msg), GERR_PROTO);
    }
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
    f = fopen(sa_token, "w");
    if (f == NULL || fputs("sa-token-gantry\n", f) < 0 || fclose(f) != 0) {
        return -1;
    }
    char ident[700];
    snprintf(ident, sizeof ident, "%s=%s/managed-gw-a.json", sa_token, RBAC_DIR);
    snprintf(out, sizeof out, "%s/apiserver.out", dir);
    snprintf(err, sizeof err, "%s/apiserver.err", dir);
    const char *argv[] = {PYTHON, FAKE_KUBE_APISERVER, "--cert", cert, "--key", key, "--token-file",
                          token,  "--identity",        ident,    NULL};
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
    snprintf(sa_token, sizeof sa_token, "%s/token-gantry", dir);
    if (setup() != 0) {
        proc_stop(&apiserver, 5000);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_stamp),           cmocka_unit_test(test_logs_follow),
        cmocka_unit_test(test_logs_tail_and_since), cmocka_unit_test(test_logs_errors),
        cmocka_unit_test(test_exec_status_decode),  cmocka_unit_test(test_exec),
        cmocka_unit_test(test_exec_both_ways),      cmocka_unit_test(test_port_forward),
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
