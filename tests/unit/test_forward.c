/* Unit tests for the forwarding transport (api/forward/fwd.h): a client and a server in one process
 * over an abstract unix socket. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/forward/fwd.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/mem.h"

static char sock_path[64];

static int dial(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg)
{
    (void)arg;
    (void)timeout_ms;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(address);
    memcpy(sa.sun_path, address, n);
    sa.sun_path[0] = '\0';
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) != 0) {
        close(s);
        gerr_set(errmsg, "connect failed");
        return GERR_CLOSED;
    }
    *fd = s;
    return 0;
}

/* The server: answers "echo:<method>" unless the method is "/silent" (never answers: the reply is
 * kept and sent at stop) or "/late" (answered when released). */
struct srv {
    pthread_mutex_t mu;
    struct fwd_reply *held[64];
    unsigned n_held;
};

static void on_request(void *data, fwd_request *req, struct fwd_reply *r)
{
    struct srv *s = data;
    if (strcmp(req->method, "/silent") == 0) {
        pthread_mutex_lock(&s->mu);
        s->held[s->n_held++] = r;
        pthread_mutex_unlock(&s->mu);
    } else {
        char reply[300];
        int n = snprintf(reply, sizeof reply, "echo:%s:%s", req->method,
                         req->principal != NULL ? req->principal->id : "");
        fwd_reply(r, req->timeout_ms == 7 ? 5 : 0, "msg", (const uint8_t *)reply, (size_t)n);
    }
    gantry__internal__v1__forward_request__free_unpacked(req, NULL);
}

static void release_held(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < s->n_held; i++) {
        fwd_reply(s->held[i], 0, NULL, NULL, 0);
    }
    s->n_held = 0;
    pthread_mutex_unlock(&s->mu);
}

/* Start the server at a socket named after @tag and this process. */
static struct fwd_server *start_server(const char *tag, struct srv *s)
{
    snprintf(sock_path, sizeof sock_path, "@gantry-test-%s-%d", tag, (int)getpid());
    struct fwd_server *server = NULL;
    char err[GERR_MSG_SIZE];
    assert_int_equal(fwd_server_start(sock_path, on_request, s, &server, err), 0);
    return server;
}

struct caller {
    struct fwd_client *c;
    int id;
    int failures;
};

static void *call_many(void *arg)
{
    struct caller *k = arg;
    for (int i = 0; i < 200; i++) {
        char method[64], pid[32];
        snprintf(method, sizeof method, "/m%d-%d", k->id, i);
        snprintf(pid, sizeof pid, "p%d", k->id);
        fwd_request req = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
        Gantry__Internal__V1__ForwardPrincipal pr = GANTRY__INTERNAL__V1__FORWARD_PRINCIPAL__INIT;
        pr.id = pid;
        req.method = method;
        req.principal = &pr;
        fwd_response *resp = NULL;
        bool sent;
        char err[GERR_MSG_SIZE];
        int rv = fwd_client_call(k->c, sock_path, &req, 5000, &resp, &sent, err);
        char want[128];
        snprintf(want, sizeof want, "echo:%s:%s", method, pid);
        if (rv != 0 || resp->reply.len != strlen(want) ||
            memcmp(resp->reply.data, want, resp->reply.len) != 0) {
            k->failures++;
        }
        if (resp != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
        }
    }
    return NULL;
}

static void test_many_calls_in_flight(void **state)
{
    (void)state;
    struct srv s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct fwd_server *server = start_server("fwd", &s);
    char err[GERR_MSG_SIZE];
    struct fwd_client *c = fwd_client_new(dial, NULL, 2);
    pthread_t t[8];
    struct caller k[8];
    for (int i = 0; i < 8; i++) {
        k[i] = (struct caller){.c = c, .id = i};
        pthread_create(&t[i], NULL, call_many, &k[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(k[i].failures, 0);
    }
    uint64_t requests, conns;
    fwd_server_stats(server, &requests, &conns);
    assert_int_equal(requests, 1600);
    assert_true(conns >= 1 && conns <= 2); /* at most conns_per_target */
    /* A status and message come back as sent. */
    fwd_request req = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    req.method = "/status";
    req.timeout_ms = 7;
    fwd_response *resp;
    bool sent;
    assert_int_equal(fwd_client_call(c, sock_path, &req, 5000, &resp, &sent, err), 0);
    assert_int_equal(resp->status, 5);
    assert_string_equal(resp->message, "msg");
    gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
    fwd_client_free(c);
    fwd_server_stop(server);
}

static void test_timeout_and_failure(void **state)
{
    (void)state;
    struct srv s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct fwd_server *server = start_server("fwd2", &s);
    char err[GERR_MSG_SIZE];
    struct fwd_client *c = fwd_client_new(dial, NULL, 1);
    fwd_request req = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    req.method = "/silent";
    fwd_response *resp;
    bool sent;
    /* No answer: a timeout, after the request was sent. */
    assert_int_equal(fwd_client_call(c, sock_path, &req, 100, &resp, &sent, err), GERR_TIMEOUT);
    assert_true(sent);
    assert_null(resp);
    /* The late answer is discarded; the connection keeps working. */
    release_held(&s);
    req.method = "/again";
    assert_int_equal(fwd_client_call(c, sock_path, &req, 5000, &resp, &sent, err), 0);
    assert_memory_equal(resp->reply.data, "echo:/again:", 12);
    gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
    /* A malformed frame from the client side closes the connection on the server. */
    int fd;
    assert_int_equal(dial(NULL, sock_path, 1000, &fd, err), 0);
    uint8_t junk[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    uint8_t b;
    assert_int_equal(read(fd, &b, 1), 0); /* EOF */
    close(fd);
    /* After the server stops, a call fails (its connection is gone and nobody listens). */
    struct fwd_client *c2 = fwd_client_new(dial, NULL, 1);
    req.method = "/silent";
    assert_int_equal(fwd_client_call(c2, sock_path, &req, 50, &resp, &sent, err), GERR_TIMEOUT);
    release_held(&s);
    fwd_server_stop(server);
    req.method = "/after";
    assert_int_not_equal(fwd_client_call(c2, sock_path, &req, 1000, &resp, &sent, err), 0);
    fwd_client_free(c2);
    fwd_client_free(c);
}

struct silent_caller {
    struct fwd_client *c;
    int rv;
    uint64_t took_ms;
};

static void *call_silent(void *arg)
{
    struct silent_caller *k = arg;
    fwd_request req = GANTRY__INTERNAL__V1__FORWARD_REQUEST__INIT;
    req.method = "/silent";
    fwd_response *resp = NULL;
    bool sent;
    char err[GERR_MSG_SIZE];
    uint64_t t0 = clock_mono_ms(clock_system());
    k->rv = fwd_client_call(k->c, sock_path, &req, 20000, &resp, &sent, err);
    k->took_ms = clock_mono_ms(clock_system()) - t0;
    return NULL;
}

static void *stop_server(void *arg)
{
    fwd_server_stop(arg);
    return NULL;
}

/* A connection that fails wakes each of its waiting callers at once (each waits on a condition of
 * its own), not at its deadline. */
static void test_failure_wakes_every_waiter(void **state)
{
    (void)state;
    struct srv s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct fwd_server *server = start_server("fwd3", &s);
    struct fwd_client *c = fwd_client_new(dial, NULL, 2);
    enum { N = 6 };
    pthread_t t[N], stopper;
    struct silent_caller k[N];
    for (int i = 0; i < N; i++) {
        k[i] = (struct silent_caller){.c = c};
        pthread_create(&t[i], NULL, call_silent, &k[i]);
    }
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&s.mu);
        unsigned held = s.n_held;
        pthread_mutex_unlock(&s.mu);
        if (held == N) {
            break;
        }
        usleep(10000);
    }
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n_held, N);
    pthread_mutex_unlock(&s.mu);
    /* The stop shuts the connections (and then waits for the held replies). */
    pthread_create(&stopper, NULL, stop_server, server);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(k[i].rv, GERR_CLOSED);
        if (k[i].took_ms >= 10000) {
            fail_msg("caller %d woke at its deadline (%llu ms), not at the failure", i,
                     (unsigned long long)k[i].took_ms);
        }
    }
    release_held(&s);
    pthread_join(stopper, NULL);
    fwd_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_calls_in_flight),
        cmocka_unit_test(test_timeout_and_failure),
        cmocka_unit_test(test_failure_wakes_every_waiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
