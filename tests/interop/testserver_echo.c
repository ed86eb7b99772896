#include "testserver_echo.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "gantry/testing/v1/echo.pb-c.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/mem.h"
#include "lib/queue.h"

/* A call answered by the worker thread. The worker first decodes its request
 * (grpc_call_request on the worker, as the gate does after authenticating): a Delay call then
 * waits until @due_ms; a gantry.v1 call (@validate_only) is answered UNIMPLEMENTED at once, so the
 * interop suite can drive the strict request check with real gantry.v1 messages. */
struct echo_delay {
    struct queue link;
    struct grpc_call *call;
    uint64_t due_ms;
    char *message;
    bool decoded;
    bool validate_only;
};

struct echo {
    pthread_t worker;
    bool worker_running;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    struct queue delays;
};

/* The request, or NULL after answering the call with why the transport refused it. */
static const void *echo_request(struct grpc_call *call)
{
    const ProtobufCMessage *m = grpc_call_request(call);
    if (m == NULL) {
        const char *why;
        int status = grpc_call_request_error(call, &why);
        grpc_call_finish(call, status, why, NULL);
    }
    return m;
}

/* --- Unary --- */

static void echo_unary(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__EchoRequest *req = echo_request(call);
    if (req == NULL) {
        return;
    }
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = req->message;
    resp.payload = req->payload;
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

static void echo_fail(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__FailRequest *req = echo_request(call);
    if (req == NULL) {
        return;
    }
    int code = req->code <= 16 ? (int)req->code : GRPC_STATUS_UNKNOWN;
    if (code == GRPC_STATUS_OK) {
        Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
        resp.message = req->message;
        grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
        return;
    }
    grpc_call_finish(call, code, req->message, NULL);
}

static void echo_size(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__SizeRequest *req = echo_request(call);
    if (req == NULL) {
        return;
    }
    if (req->size > (64u << 20)) {
        grpc_call_finish_gerr(call, GERR_INVAL, "size over 64 MiB");
        return;
    }
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.payload.len = req->size;
    resp.payload.data = arena_alloc(grpc_call_arena(call), req->size + 1);
    memset(resp.payload.data, 'x', req->size);
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

static void echo_context(struct grpc_call *call, void *data)
{
    (void)data;
    struct arena *a = grpc_call_arena(call);
    Gantry__Testing__V1__ContextResponse resp = GANTRY__TESTING__V1__CONTEXT_RESPONSE__INIT;
    resp.peer = (char *)grpc_call_peer(call);
    const char *auth = grpc_call_metadata(call, "authorization");
    resp.authorization = (char *)(auth != NULL ? auth : "");
    resp.tls = grpc_call_tls(call);
    X509 *cert = grpc_call_peer_cert(call);
    resp.peer_certificate_subject = "";
    if (cert != NULL) {
        char *subject = arena_alloc(a, 256);
        X509_NAME_oneline(X509_get_subject_name(cert), subject, 256);
        resp.peer_certificate_subject = subject;
    }
    uint64_t deadline = grpc_call_deadline_ms(call);
    uint64_t now = clock_mono_ms(clock_system());
    resp.deadline_remaining_ms = deadline == 0 ? -1 : (deadline > now ? (int64_t)(deadline - now) : 0);
    size_t n = grpc_call_metadata_count(call);
    resp.metadata_keys = arena_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        grpc_call_metadata_at(call, i, &k, &v);
        resp.metadata_keys[i] = (char *)k;
    }
    resp.n_metadata_keys = n;
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

/* --- Server streaming: timer-driven or as fast as flow control allows --- */

struct echo_stream {
    struct grpc_call *call;
    uv_timer_t timer;
    uint32_t sent;
    uint32_t count;
    bool fail;
    bool ended;
    bool waiting_drain;
    ProtobufCBinaryData payload;
    char *message;
};

static void echo_stream_closed(uv_handle_t *h)
{
    struct echo_stream *st = h->data;
    grpc_call_unref(st->call);
    mem_free(st->payload.data);
    mem_free(st->message);
    mem_free(st);
}

static void echo_stream_end(struct echo_stream *st)
{
    if (st->ended) {
        return;
    }
    st->ended = true;
    grpc_call_set_data(st->call, NULL);
    uv_close((uv_handle_t *)&st->timer, echo_stream_closed);
}

/* Send one message; returns the grpc_call_send result. */
static int echo_stream_send(struct echo_stream *st)
{
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = st->message;
    resp.payload = st->payload;
    resp.index = st->sent++;
    return grpc_call_send(st->call, &resp.base);
}

static void echo_stream_done(struct echo_stream *st)
{
    if (st->fail) {
        grpc_call_finish(st->call, GRPC_STATUS_ABORTED, "failing after the stream as asked", NULL);
    } else {
        grpc_call_finish(st->call, GRPC_STATUS_OK, NULL, NULL);
    }
    echo_stream_end(st);
}

static void echo_stream_pump(struct echo_stream *st)
{
    while (st->sent < st->count) {
        int rv = echo_stream_send(st);
        if (rv == GERR_BUSY) {
            st->waiting_drain = true;
            if (st->sent == st->count) {
                break;
            }
            return;
        }
        if (rv != 0) {
            grpc_call_finish_gerr(st->call, rv, "could not send a stream message");
            echo_stream_end(st);
            return;
        }
    }
    echo_stream_done(st);
}

static void echo_stream_tick(uv_timer_t *t)
{
    struct echo_stream *st = t->data;
    if (st->ended) {
        return;
    }
    if (st->sent < st->count) {
        echo_stream_send(st);
    }
    if (st->sent >= st->count) {
        echo_stream_done(st);
    }
}

/* from_thread: the whole stream from a detached thread, through the cross-thread calls only,
 * as the Watch and Backup streams send. Each grpc_call_send_async takes a call reference on this
 * thread while the loop thread drops the previous ones: the reference count is shared. */
struct echo_thread_stream {
    struct grpc_call *call; /* one reference, dropped by grpc_call_finish_async */
    uint32_t count;
    bool fail;
    char *message;
    uint32_t max_unsent;
    uint32_t payload_size;
};

static void *echo_thread_stream_main(void *arg)
{
    struct echo_thread_stream *ts = arg;
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = ts->message;
    char seen[32];
    uint8_t *payload = mem_zalloc(ts->payload_size + 1);
    resp.payload.data = payload;
    resp.payload.len = ts->payload_size;
    for (uint32_t i = 0; i < ts->count && !grpc_call_cancelled(ts->call); i++) {
        resp.index = i;
        if (ts->max_unsent > 0) {
            size_t unsent;
            while ((unsent = grpc_call_unsent(ts->call)) > ts->max_unsent && !grpc_call_cancelled(ts->call)) {
                usleep(1000);
            }
            snprintf(seen, sizeof seen, "%zu", unsent);
            resp.message = seen;
        }
        (void)grpc_call_send_async(ts->call, &resp.base);
    }
    mem_free(payload);
    grpc_call_finish_async(ts->call, ts->fail ? GRPC_STATUS_ABORTED : GRPC_STATUS_OK,
                           ts->fail ? "failing after the stream as asked" : NULL, NULL);
    mem_free(ts->message);
    mem_free(ts);
    return NULL;
}

static void echo_thread_stream_start(struct grpc_call *call, const Gantry__Testing__V1__StreamRequest *req)
{
    struct echo_thread_stream *ts = mem_zalloc(sizeof(*ts));
    ts->call = call;
    ts->count = req->count;
    ts->fail = req->fail_after;
    ts->message = mem_strdup(req->message);
    ts->max_unsent = req->max_unsent;
    ts->payload_size = req->payload_size;
    grpc_call_ref(call);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, echo_thread_stream_main, ts) != 0) {
        grpc_call_unref(call);
        mem_free(ts->message);
        mem_free(ts);
        grpc_call_finish_gerr(call, GERR_NOMEM, "cannot start a stream thread");
    }
    pthread_attr_destroy(&attr);
}

static void echo_stream_start(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__StreamRequest *req = echo_request(call);
    if (req == NULL) {
        return;
    }
    if (req->payload_size > (4u << 20)) {
        grpc_call_finish_gerr(call, GERR_INVAL, "payload_size over 4 MiB");
        return;
    }
    if (req->from_thread) {
        if ((req->payload_size != 0 && (req->max_unsent == 0 || req->payload_size > (64u << 10))) ||
            req->interval_ms != 0 || req->count > 1000000) {
            grpc_call_finish_gerr(
                call, GERR_INVAL,
                "from_thread: no interval, count at most 1000000, a payload (at most 64 KiB) "
                "only with max_unsent");
            return;
        }
        echo_thread_stream_start(call, req);
        return;
    }
    struct echo_stream *st = mem_zalloc(sizeof(*st));
    st->call = call;
    st->count = req->count;
    st->fail = req->fail_after;
    st->message = mem_strdup(req->message);
    st->payload.len = req->payload_size;
    st->payload.data = mem_alloc(req->payload_size + 1);
    memset(st->payload.data, 'p', req->payload_size);
    grpc_call_ref(call);
    grpc_call_set_data(call, st);
    uv_timer_init(grpc_call_loop(call), &st->timer);
    st->timer.data = st;
    if (req->interval_ms == 0) {
        echo_stream_pump(st);
    } else {
        uv_timer_start(&st->timer, echo_stream_tick, req->interval_ms, req->interval_ms);
    }
}

static void echo_stream_cancel(struct grpc_call *call, void *data)
{
    (void)data;
    struct echo_stream *st = grpc_call_get_data(call);
    if (st != NULL) {
        echo_stream_end(st);
    }
}

static void echo_stream_drain(struct grpc_call *call, void *data)
{
    (void)data;
    struct echo_stream *st = grpc_call_get_data(call);
    if (st != NULL && st->waiting_drain) {
        st->waiting_drain = false;
        echo_stream_pump(st);
    }
}

/* --- Client streaming and bidi --- */

struct echo_count {
    uint32_t n;
    size_t bytes;
};

static void echo_client_start(struct grpc_call *call, void *data)
{
    (void)data;
    grpc_call_set_data(call, arena_alloc(grpc_call_arena(call), sizeof(struct echo_count)));
    memset(grpc_call_get_data(call), 0, sizeof(struct echo_count));
}

static void echo_client_message(struct grpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    struct echo_count *cnt = grpc_call_get_data(call);
    if (m != NULL) {
        const Gantry__Testing__V1__EchoRequest *req = (const void *)m;
        cnt->n++;
        cnt->bytes += req->payload.len;
        return;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "received %u messages, %zu payload bytes", cnt->n, cnt->bytes);
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = msg;
    resp.index = cnt->n;
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

/* "pause:MS": the call takes no input for MS ms (grpc_call_pause_input), then a timer resumes it. */
struct echo_pause {
    uv_timer_t timer;
    struct grpc_call *call; /* one reference, dropped when the timer fires */
};

static void echo_pause_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void echo_pause_done(uv_timer_t *t)
{
    struct echo_pause *p = t->data;
    grpc_call_resume_input(p->call);
    grpc_call_unref(p->call);
    uv_close((uv_handle_t *)&p->timer, echo_pause_closed);
}

static void echo_bidi_message(struct grpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    struct echo_count *cnt = grpc_call_get_data(call);
    if (m == NULL) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    const Gantry__Testing__V1__EchoRequest *req = (const void *)m;
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = req->message;
    resp.payload = req->payload;
    resp.index = cnt->n++;
    grpc_call_send(call, &resp.base);
    unsigned ms = 0;
    if (sscanf(req->message, "pause:%u", &ms) == 1 && ms > 0 && ms <= 10000) {
        struct echo_pause *p = mem_zalloc(sizeof *p);
        p->call = call;
        grpc_call_ref(call);
        grpc_call_pause_input(call);
        uv_timer_init(grpc_call_loop(call), &p->timer);
        p->timer.data = p;
        uv_timer_start(&p->timer, echo_pause_done, ms, 0);
    }
}

/* --- Delay: answered from the worker thread --- */

static void echo_delay_complete(struct echo_delay *d, bool cancelled)
{
    if (cancelled) {
        grpc_call_finish_async(d->call, GRPC_STATUS_CANCELLED, "server shutting down", NULL);
    } else {
        Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
        resp.message = d->message != NULL ? d->message : "";
        grpc_call_finish_async(d->call, GRPC_STATUS_OK, NULL, &resp.base);
    }
    mem_free(d->message);
    mem_free(d);
}

/* On the worker: decode @d's request. Returns true if @d must wait for its due time (requeue
 * it); otherwise the call was answered and @d freed. */
static bool echo_decode(struct echo_delay *d)
{
    const ProtobufCMessage *m = grpc_call_request(d->call);
    if (m == NULL) {
        const char *why;
        int status = grpc_call_request_error(d->call, &why);
        grpc_call_finish_async(d->call, status, why, NULL);
    } else if (d->validate_only) {
        char msg[300];
        snprintf(msg, sizeof(msg), "method %.200s is not implemented (the request was checked and decoded)",
                 grpc_call_method(d->call));
        grpc_call_finish_async(d->call, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
    } else {
        const Gantry__Testing__V1__DelayRequest *req = (const void *)m;
        d->decoded = true;
        d->due_ms = clock_mono_ms(clock_system()) + req->delay_ms;
        d->message = mem_strdup(req->message);
        return true;
    }
    mem_free(d);
    return false;
}

static void *echo_worker(void *arg)
{
    struct echo *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        struct echo_delay *next = NULL;
        struct queue *q;
        QUEUE_FOREACH (q, &e->delays) {
            struct echo_delay *d = QUEUE_DATA(q, struct echo_delay, link);
            if (next == NULL || d->due_ms < next->due_ms) {
                next = d;
            }
        }
        if (next == NULL) {
            pthread_cond_wait(&e->cond, &e->mu);
            continue;
        }
        uint64_t now = clock_mono_ms(clock_system());
        if (next->due_ms <= now) {
            queue_remove(&next->link);
            pthread_mutex_unlock(&e->mu);
            bool requeue = false;
            if (next->decoded) {
                echo_delay_complete(next, false);
            } else {
                requeue = echo_decode(next);
            }
            pthread_mutex_lock(&e->mu);
            if (requeue) {
                queue_insert_tail(&e->delays, &next->link);
            }
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait = next->due_ms - now;
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->cond, &e->mu, &ts);
    }
    struct queue *q;
    while ((q = queue_head(&e->delays)) != NULL) {
        queue_remove(q);
        echo_delay_complete(QUEUE_DATA(q, struct echo_delay, link), true);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Hand the call, request undecoded, to the worker. */
static void echo_queue(struct echo *e, struct grpc_call *call, bool validate_only)
{
    struct echo_delay *d = mem_zalloc(sizeof(*d));
    d->call = call;
    d->validate_only = validate_only;
    grpc_call_ref(call); /* dropped by grpc_call_finish_async */
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        echo_delay_complete(d, true);
        return;
    }
    queue_insert_tail(&e->delays, &d->link);
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

static void echo_delay_start(struct grpc_call *call, void *data)
{
    echo_queue(data, call, false);
}

static void echo_validate_start(struct grpc_call *call, void *data)
{
    echo_queue(data, call, true);
}

int echo_route_checked(struct echo *e, struct grpc_server *s,
                       const ProtobufCServiceDescriptor *const *services)
{
    struct grpc_handler h = {.kind = GRPC_UNARY, .on_start = echo_validate_start, .data = e};
    for (size_t i = 0; services[i] != NULL; i++) {
        for (unsigned m = 0; m < services[i]->n_methods; m++) {
            int rv = grpc_server_handle(s, services[i], services[i]->methods[m].name, &h);
            if (rv != 0) {
                return rv;
            }
        }
    }
    return 0;
}

/* --- Registration --- */

int echo_new(struct grpc_server *s, struct echo **out)
{
    const ProtobufCServiceDescriptor *svc = &gantry__testing__v1__echo__descriptor;
    struct echo *e = mem_zalloc(sizeof(*e));
    queue_init(&e->delays);
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &ca);
    pthread_condattr_destroy(&ca);
    struct {
        const char *name;
        struct grpc_handler h;
    } table[] = {
        {"Unary", {.kind = GRPC_UNARY, .on_start = echo_unary}},
        {"Fail", {.kind = GRPC_UNARY, .on_start = echo_fail}},
        {"Size", {.kind = GRPC_UNARY, .on_start = echo_size}},
        {"Context", {.kind = GRPC_UNARY, .on_start = echo_context}},
        {"Delay", {.kind = GRPC_UNARY, .on_start = echo_delay_start, .data = e}},
        {"ServerStream",
         {.kind = GRPC_SERVER_STREAMING,
          .on_start = echo_stream_start,
          .on_cancel = echo_stream_cancel,
          .on_drain = echo_stream_drain}},
        {"ClientStream",
         {.kind = GRPC_CLIENT_STREAMING, .on_start = echo_client_start, .on_message = echo_client_message}},
        {"Bidi",
         {.kind = GRPC_BIDI_STREAMING, .on_start = echo_client_start, .on_message = echo_bidi_message}},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        int rv = grpc_server_handle(s, svc, table[i].name, &table[i].h);
        if (rv != 0) {
            echo_free(e);
            return rv;
        }
    }
    if (pthread_create(&e->worker, NULL, echo_worker, e) != 0) {
        echo_free(e);
        return GERR_IO;
    }
    e->worker_running = true;
    *out = e;
    return 0;
}

void echo_stop(struct echo *e)
{
    if (!e->worker_running) {
        return;
    }
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->worker, NULL);
    e->worker_running = false;
}

void echo_free(struct echo *e)
{
    if (e == NULL) {
        return;
    }
    echo_stop(e);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
    mem_free(e);
}
