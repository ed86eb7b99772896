#include "server/grpc/health.h"

#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "lib/err.h"
#include "lib/mem.h"
#include "lib/queue.h"

struct health_entry {
    char *service;
    int status;
};

/* A watcher that does not read gets the latest status, not every one: while its call reports
 * backpressure (grpc_call_send: GERR_BUSY) changes only update @pending, and on_drain sends it if
 * it differs from what was sent last. So a watch buffers at most the transport's high-water mark,
 * however often the status flips. */
struct health_watch {
    struct queue link;
    struct grpc_call *call;
    char *service;
    int last_sent;
    bool blocked; /* waiting for on_drain */
    int pending;  /* the latest status while blocked */
};

struct health {
    struct health_entry *entries;
    size_t n_entries;
    struct queue watches;
    bool shut_down;
};

static struct health_entry *health_find(struct health *h, const char *service)
{
    for (size_t i = 0; i < h->n_entries; i++) {
        if (strcmp(h->entries[i].service, service) == 0) {
            return &h->entries[i];
        }
    }
    return NULL;
}

static int health_status_of(struct health *h, const char *service)
{
    struct health_entry *e = health_find(h, service);
    return e != NULL ? e->status : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

static void health_send(struct health_watch *w, int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    w->last_sent = status;
    if (grpc_call_send(w->call, &resp.base) == GERR_BUSY) {
        w->blocked = true;
        w->pending = status;
    }
}

/* @status is @w's service's status now: send it, or remember it while blocked. */
static void health_update(struct health_watch *w, int status)
{
    if (w->blocked) {
        w->pending = status;
    } else if (w->last_sent != status) {
        health_send(w, status);
    }
}

/* The request, or NULL after answering the call with why it was refused. Health requests are
 * decoded on the loop thread: they are tiny, and the decode is bounded by max_recv_message_bytes
 * and max_request_fields like any other. */
static const Grpc__Health__V1__HealthCheckRequest *health_request(struct grpc_call *call)
{
    const ProtobufCMessage *m = grpc_call_request(call);
    if (m == NULL) {
        const char *why;
        int status = grpc_call_request_error(call, &why);
        grpc_call_finish(call, status, why, NULL);
    }
    return (const Grpc__Health__V1__HealthCheckRequest *)m;
}

static void health_check_start(struct grpc_call *call, void *data)
{
    struct health *h = data;
    const Grpc__Health__V1__HealthCheckRequest *req = health_request(call);
    if (req == NULL) {
        return;
    }
    struct health_entry *e = health_find(h, req->service);
    if (e == NULL) {
        grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)e->status;
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

static void health_watch_start(struct grpc_call *call, void *data)
{
    struct health *h = data;
    const Grpc__Health__V1__HealthCheckRequest *req = health_request(call);
    if (req == NULL) {
        return;
    }
    if (h->shut_down) {
        grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server is shutting down", NULL);
        return;
    }
    struct health_watch *w = mem_zalloc(sizeof(*w));
    w->call = call;
    w->service = mem_strdup(req->service);
    grpc_call_set_data(call, w);
    queue_insert_tail(&h->watches, &w->link);
    health_send(w, health_status_of(h, w->service));
}

static void health_watch_free(struct health_watch *w)
{
    queue_remove(&w->link);
    mem_free(w->service);
    mem_free(w);
}

static void health_watch_drain(struct grpc_call *call, void *data)
{
    (void)data;
    struct health_watch *w = grpc_call_get_data(call);
    if (w == NULL || !w->blocked) {
        return;
    }
    w->blocked = false;
    health_update(w, w->pending);
}

static void health_watch_cancel(struct grpc_call *call, void *data)
{
    (void)data;
    struct health_watch *w = grpc_call_get_data(call);
    if (w != NULL) {
        grpc_call_set_data(call, NULL);
        health_watch_free(w);
    }
}

int health_new(struct grpc_server *s, struct health **out)
{
    struct health *h = mem_zalloc(sizeof(*h));
    queue_init(&h->watches);
    struct grpc_handler check = {.kind = GRPC_UNARY, .on_start = health_check_start, .data = h};
    struct grpc_handler watch = {.kind = GRPC_SERVER_STREAMING,
                                 .on_start = health_watch_start,
                                 .on_cancel = health_watch_cancel,
                                 .on_drain = health_watch_drain,
                                 .data = h};
    int rv = grpc_server_handle(s, &grpc__health__v1__health__descriptor, "Check", &check);
    if (rv == 0) {
        rv = grpc_server_handle(s, &grpc__health__v1__health__descriptor, "Watch", &watch);
    }
    if (rv != 0) {
        mem_free(h);
        return rv;
    }
    health_set(h, "", GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    *out = h;
    return 0;
}

void health_set(struct health *h, const char *service, int status)
{
    struct health_entry *e = health_find(h, service);
    if (e == NULL) {
        h->entries = mem_realloc(h->entries, (h->n_entries + 1) * sizeof(*h->entries));
        e = &h->entries[h->n_entries++];
        e->service = mem_strdup(service);
    }
    e->status = status;
    struct queue *q;
    QUEUE_FOREACH (q, &h->watches) {
        struct health_watch *w = QUEUE_DATA(q, struct health_watch, link);
        if (strcmp(w->service, service) == 0) {
            health_update(w, status);
        }
    }
}

void health_serve_all(struct health *h, struct grpc_server *s)
{
    for (size_t i = 0; i < grpc_server_service_count(s); i++) {
        health_set(h, grpc_server_service_name(s, i),
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    }
    health_set(h, "", GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

void health_shutdown(struct health *h)
{
    h->shut_down = true;
    for (size_t i = 0; i < h->n_entries; i++) {
        health_set(h, h->entries[i].service,
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    }
    struct queue *q;
    while ((q = queue_head(&h->watches)) != NULL) {
        struct health_watch *w = QUEUE_DATA(q, struct health_watch, link);
        grpc_call_set_data(w->call, NULL);
        grpc_call_finish(w->call, GRPC_STATUS_OK, NULL, NULL);
        health_watch_free(w);
    }
}

void health_free(struct health *h)
{
    if (h == NULL) {
        return;
    }
    struct queue *q;
    while ((q = queue_head(&h->watches)) != NULL) {
        health_watch_free(QUEUE_DATA(q, struct health_watch, link));
    }
    for (size_t i = 0; i < h->n_entries; i++) {
        mem_free(h->entries[i].service);
    }
    mem_free(h->entries);
    mem_free(h);
}
