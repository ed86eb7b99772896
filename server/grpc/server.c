/* The gRPC server object: configuration, the dispatch table, the listener, cross-thread
 * completions, graceful shutdown and metrics. Connections live in h2.c, calls in call.c.
 *
 * Shutdown, step by step: close the listener; GOAWAY on every connection (each closes once its
 * streams are done); after the grace period, close whatever is left (cancelling its calls); when
 * no connection and no call remains, close the async handle and the grace timer; then the
 * callback. */
#include <assert.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/uverr.h"
#include "server/grpc/internal.h"

const double grpc__bucket_bounds[GRPC__BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

void grpc_server_config_defaults(struct grpc_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = "127.0.0.1:0";
    cfg->max_recv_message_bytes = 4u << 20;
    cfg->max_send_message_bytes = 16u << 20;
    cfg->max_concurrent_streams = 100;
    cfg->max_header_list_bytes = 16u << 10;
    cfg->conn_memory_bytes = 64u << 20;
    cfg->max_connections = 1024;
    cfg->max_connections_per_source = 128;
    cfg->established_reserve_percent = 25;
    cfg->handshake_timeout_ms = 10 * 1000;
    cfg->idle_timeout_ms = 5 * 60 * 1000;
    cfg->keepalive_ms = 30 * 1000;
    cfg->keepalive_timeout_ms = 20 * 1000;
    cfg->max_request_fields = 65536;
    cfg->max_request_depth = 32;
}

static char *server_dup(const char *s)
{
    return s != NULL ? mem_strdup(s) : NULL;
}

int grpc_server_new(uv_loop_t *loop, const struct grpc_server_config *cfg, struct grpc_server **out,
                    char *errmsg)
{
    int rv;
    struct sockaddr_storage ss;
    if ((rv = addr_parse(cfg->listen, &ss, errmsg)) != 0) {
        gerr_wrap(errmsg, "listen address");
        goto err;
    }
    if (cfg->h2c && !addr_is_loopback(&ss)) {
        gerr_set(
            errmsg,
            "refusing plaintext h2c on %s: h2c is only allowed on a loopback address (127.0.0.0/8 or ::1); "
            "use TLS with a certificate and key instead",
            cfg->listen);
        rv = GERR_INVAL;
        goto err;
    }
    if (!cfg->h2c && (cfg->cert_file == NULL || cfg->key_file == NULL)) {
        gerr_set(errmsg, "TLS needs a certificate and a key file (or h2c on loopback)");
        rv = GERR_INVAL;
        goto err;
    }
    if (cfg->max_concurrent_streams == 0 || cfg->max_recv_message_bytes == 0 ||
        cfg->max_header_list_bytes < 1024 || cfg->max_connections == 0) {
        gerr_set(errmsg, "limits must be positive (max header list at least 1024 bytes)");
        rv = GERR_INVAL;
        goto err;
    }
    if (cfg->established_reserve_percent > 90) {
        gerr_set(errmsg, "established_reserve_percent must be at most 90 (new clients need room too)");
        rv = GERR_INVAL;
        goto err;
    }
    struct grpc_server *s = mem_zalloc(sizeof(*s));
    s->loop = loop;
    s->cfg = *cfg;
    s->listen_copy = server_dup(cfg->listen);
    s->cert_copy = server_dup(cfg->cert_file);
    s->key_copy = server_dup(cfg->key_file);
    s->ca_copy = server_dup(cfg->client_ca_file);
    s->cfg.listen = s->listen_copy;
    s->cfg.cert_file = s->cert_copy;
    s->cfg.key_file = s->key_copy;
    s->cfg.client_ca_file = s->ca_copy;
    queue_init(&s->conns);
    queue_init(&s->async_q);
    s->unknown.path = mem_strdup("unknown");
    s->unknown.service = mem_strdup("unknown");
    if (!cfg->h2c &&
        (rv = tls_ctx_new(cfg->cert_file, cfg->key_file, cfg->client_ca_file, &s->tls, errmsg)) != 0) {
        goto err_after_alloc;
    }
    if ((rv = h2__callbacks_new(&s->callbacks)) != 0) {
        gerr_set(errmsg, "nghttp2 callbacks: %s", gerr_str(rv));
        goto err_after_tls;
    }
    if (nghttp2_option_new(&s->options) != 0) {
        rv = GERR_NOMEM;
        gerr_set(errmsg, "nghttp2 options");
        goto err_after_callbacks;
    }
    /* A server never accepts pushed streams. */
    nghttp2_option_set_max_reserved_remote_streams(s->options, 0);
    /* RFC 9110 5.5: whitespace around a field value is not part of it. nghttp2 would reset the
     * stream (the client sees INTERNAL); accept such values and trim them in call.c instead, so a
     * stray space after a bearer token is judged by the gate like any other credential. */
    nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(s->options, 1);
    /* Flow control by hand: received DATA is acknowledged (WINDOW_UPDATE) only once call.c has
     * taken it, so a stream whose handler is not keeping up stops its client (backpressure). */
    nghttp2_option_set_no_auto_window_update(s->options, 1);
    pthread_mutex_init(&s->async_mu, NULL);
    pthread_mutex_init(&s->tls_mu, NULL);
    *out = s;
    return 0;

err_after_callbacks:
    nghttp2_session_callbacks_del(s->callbacks);
err_after_tls:
    if (s->tls != NULL) {
        tls_ctx_free(s->tls);
    }
err_after_alloc:
    mem_free(s->unknown.path);
    mem_free(s->unknown.service);
    mem_free(s->listen_copy);
    mem_free(s->cert_copy);
    mem_free(s->key_copy);
    mem_free(s->ca_copy);
    mem_free(s);
err:
    return rv;
}

int grpc_server_reload_tls(struct grpc_server *s, char *errmsg)
{
    if (s->tls == NULL) {
        gerr_set(errmsg, "TLS reload: this server speaks h2c");
        return GERR_INVAL;
    }
    SSL_CTX *ctx = NULL;
    int rv = tls_ctx_new(s->cfg.cert_file, s->cfg.key_file, s->cfg.client_ca_file, &ctx, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "TLS reload");
        return rv;
    }
    pthread_mutex_lock(&s->tls_mu);
    SSL_CTX *old = s->tls;
    s->tls = ctx;
    pthread_mutex_unlock(&s->tls_mu);
    tls_ctx_free(old); /* open connections hold their own references */
    LOG_INFO("grpc: reloaded the TLS certificate for new connections");
    return 0;
}

void grpc_server_free(struct grpc_server *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n_methods; i++) {
        mem_free(s->methods[i].path);
        mem_free(s->methods[i].service);
    }
    mem_free(s->methods);
    for (size_t i = 0; i < s->n_services; i++) {
        mem_free(s->services[i]);
    }
    mem_free(s->services);
    mem_free(s->unknown.path);
    mem_free(s->unknown.service);
    mem_free(s->sources);
    nghttp2_option_del(s->options);
    nghttp2_session_callbacks_del(s->callbacks);
    if (s->tls != NULL) {
        tls_ctx_free(s->tls);
    }
    pthread_mutex_destroy(&s->async_mu);
    pthread_mutex_destroy(&s->tls_mu);
    mem_free(s->listen_copy);
    mem_free(s->cert_copy);
    mem_free(s->key_copy);
    mem_free(s->ca_copy);
    mem_free(s);
}

/* --- Dispatch table --- */

static struct grpc__method *server_method_by_path(struct grpc_server *s, const char *path)
{
    for (size_t i = 0; i < s->n_methods; i++) {
        if (strcmp(s->methods[i].path, path) == 0) {
            return &s->methods[i];
        }
    }
    return NULL;
}

static struct grpc__method *server_method_add(struct grpc_server *s, const char *service, const char *path,
                                              const ProtobufCMessageDescriptor *in,
                                              const ProtobufCMessageDescriptor *out)
{
    if (s->n_methods == s->cap_methods) {
        s->cap_methods = s->cap_methods == 0 ? 64 : s->cap_methods * 2;
        s->methods = mem_realloc(s->methods, s->cap_methods * sizeof(*s->methods));
    }
    struct grpc__method *m = &s->methods[s->n_methods++];
    memset(m, 0, sizeof(*m));
    m->path = mem_strdup(path);
    m->service = mem_strdup(service);
    m->input = in;
    m->output = out;
    return m;
}

int grpc_server_add_service(struct grpc_server *s, const ProtobufCServiceDescriptor *svc)
{
    assert(!s->started);
    for (unsigned i = 0; i < svc->n_methods; i++) {
        char path[512];
        snprintf(path, sizeof(path), "/%s/%s", svc->name, svc->methods[i].name);
        if (server_method_by_path(s, path) == NULL) {
            server_method_add(s, svc->name, path, svc->methods[i].input, svc->methods[i].output);
        }
    }
    return 0;
}

int grpc_server_handle(struct grpc_server *s, const ProtobufCServiceDescriptor *svc, const char *method,
                       const struct grpc_handler *h)
{
    assert(!s->started && h->on_start != NULL);
    grpc_server_add_service(s, svc);
    char path[512];
    snprintf(path, sizeof(path), "/%s/%s", svc->name, method);
    struct grpc__method *m = server_method_by_path(s, path);
    if (m == NULL) {
        return GERR_INVAL;
    }
    m->handler = *h;
    m->has_handler = true;
    return 0;
}

int grpc_server_handle_path(struct grpc_server *s, const char *service_name, const char *path,
                            const ProtobufCMessageDescriptor *input, const ProtobufCMessageDescriptor *output,
                            const struct grpc_handler *h)
{
    assert(!s->started && h->on_start != NULL);
    if (server_method_by_path(s, path) != NULL) {
        return GERR_EXISTS;
    }
    struct grpc__method *m = server_method_add(s, service_name, path, input, output);
    m->handler = *h;
    m->has_handler = true;
    return 0;
}

static int server_method_cmp(const void *a, const void *b)
{
    return strcmp(((const struct grpc__method *)a)->path, ((const struct grpc__method *)b)->path);
}

static int server_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct grpc__method *grpc__method_find(struct grpc_server *s, const char *path, size_t len)
{
    (void)len;
    struct grpc__method key;
    key.path = (char *)path;
    return bsearch(&key, s->methods, s->n_methods, sizeof(*s->methods), server_method_cmp);
}

size_t grpc_server_service_count(const struct grpc_server *s)
{
    return s->n_services;
}

const char *grpc_server_service_name(const struct grpc_server *s, size_t i)
{
    return i < s->n_services ? s->services[i] : NULL;
}

static void server_index(struct grpc_server *s)
{
    if (s->n_methods > 0) {
        qsort(s->methods, s->n_methods, sizeof(*s->methods), server_method_cmp);
    }
    for (size_t i = 0; i < s->n_methods; i++) {
        bool seen = false;
        for (size_t j = 0; j < s->n_services && !seen; j++) {
            seen = strcmp(s->services[j], s->methods[i].service) == 0;
        }
        if (!seen) {
            s->services = mem_realloc(s->services, (s->n_services + 1) * sizeof(char *));
            s->services[s->n_services++] = mem_strdup(s->methods[i].service);
        }
    }
    if (s->n_services > 0) {
        qsort(s->services, s->n_services, sizeof(char *), server_str_cmp);
    }
}

/* --- Listener --- */

/* A flood that refilled the backlog as fast as the loop accepted kept the loop accepting, and a
 * legitimate client's TLS handshake missed its deadline (lib/uvpace.h). */
#define GRPC__ACCEPTS_PER_TURN 16

static void server_on_connection(uv_stream_t *listener, int status)
{
    struct grpc_server *s = listener->data;
    if (status < 0) {
        LOG_WARN("grpc: accept: %s", uv_strerror(status));
        return;
    }
    if (s->closing) {
        return;
    }
    if (!uv_pace_take(&s->pace)) {
        return; /* taken after this turn's other I/O */
    }
    h2__conn_accept(s);
}

/* Every handle the server owns but the connections' (handles_open counts them). The listener is
 * only initialized here; grpc_server_start binds it. */
static void server_init_handles(struct grpc_server *s)
{
    s->handles_open = 5;
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    uv_pace_init(&s->pace, s->loop, (uv_stream_t *)&s->listener, GRPC__ACCEPTS_PER_TURN,
                 server_on_connection);
    s->pace.check.data = s;
    uv_async_init(s->loop, &s->async, grpc__async_cb);
    s->async.data = s;
    uv_timer_init(s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    uv_timer_init(s->loop, &s->trim_timer);
    s->trim_timer.data = s;
}

void grpc__server_prepare_detached(struct grpc_server *s)
{
    assert(!s->started);
    server_index(s);
    s->started = true;
    server_init_handles(s);
}

struct h2_conn *grpc__server_feed_conn(struct grpc_server *s)
{
    struct h2_conn *c = mem_zalloc(sizeof(*c));
    if (h2__conn_init(c, s, false) != 0) {
        h2__conn_close(c, c->errmsg);
        return NULL;
    }
    return c;
}

int grpc_server_start(struct grpc_server *s, char *errmsg)
{
    int rv;
    struct sockaddr_storage ss;
    assert(!s->started);
    server_index(s);
    if ((rv = addr_parse(s->cfg.listen, &ss, errmsg)) != 0) {
        return rv;
    }
    s->started = true;
    server_init_handles(s);
    if ((rv = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rv = uv_listen((uv_stream_t *)&s->listener, 511, server_on_connection)) != 0) {
        rv = uverr_to_gerr(rv, errmsg);
        gerr_wrap(errmsg, "listen on %s", s->cfg.listen);
        return rv; /* the caller shuts down to close the handles */
    }
    int len = sizeof(ss);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = addr_port(&ss);
    LOG_INFO("grpc: listening on %s (port %d, %s)", s->cfg.listen, s->port, s->tls != NULL ? "TLS" : "h2c");
    return 0;
}

int grpc_server_port(const struct grpc_server *s)
{
    return s->port;
}

bool grpc_server_closing(const struct grpc_server *s)
{
    return s->closing;
}

/* --- Shutdown --- */

static void server_handle_closed(uv_handle_t *h)
{
    struct grpc_server *s = h->data;
    if (--s->handles_open == 0 && s->closed_cb != NULL) {
        s->closed_cb(s, s->closed_data);
    }
}

static void server_maybe_closed(struct grpc_server *s)
{
    if (!s->closing || s->n_conns > 0 || s->n_calls > 0 || s->handles_closing) {
        return;
    }
    s->handles_closing = true;
    uv_pace_close(&s->pace, server_handle_closed);
    uv_close((uv_handle_t *)&s->async, server_handle_closed);
    uv_close((uv_handle_t *)&s->grace_timer, server_handle_closed);
    uv_close((uv_handle_t *)&s->trim_timer, server_handle_closed);
}

void grpc__conn_gone(struct grpc_server *s, struct h2_conn *c)
{
    (void)c;
    s->n_conns--;
    server_maybe_closed(s);
}

void grpc__call_gone(struct grpc_server *s)
{
    s->n_calls--;
    server_maybe_closed(s);
}

static void server_trim_cb(uv_timer_t *t)
{
    struct grpc_server *s = t->data;
    s->trim_pending = false;
    /* Large requests leave free memory inside malloc's arenas (a worker's arena among them, where
     * a decode allocated); glibc gives it back only from the top of the main heap on its own. */
    malloc_trim(0);
}

void grpc__trim_soon(struct grpc_server *s, size_t bytes)
{
    if (bytes < GRPC__TRIM_MIN_BYTES || s->trim_pending || s->handles_closing || !s->started) {
        return;
    }
    s->trim_pending = true;
    uv_timer_start(&s->trim_timer, server_trim_cb, GRPC__TRIM_DELAY_MS, 0);
}

static void server_grace_cb(uv_timer_t *t)
{
    struct grpc_server *s = t->data;
    struct queue *q;
    if (s->n_conns > 0) {
        LOG_WARN("grpc: shutdown grace period over: closing %zu connection(s) with %zu open call(s)",
                 s->n_conns, s->n_open_streams);
    }
    while ((q = queue_head(&s->conns)) != NULL) {
        h2__conn_close(QUEUE_DATA(q, struct h2_conn, link), "shutdown grace period over");
    }
}

void grpc_server_shutdown(struct grpc_server *s, uint64_t grace_ms, grpc_server_closed_cb cb, void *data)
{
    assert(!s->closing);
    s->closing = true;
    s->closed_cb = cb;
    s->closed_data = data;
    if (!s->started) {
        /* Nothing to close: still answer asynchronously, as promised, through a timer. */
        s->started = true;
        server_init_handles(s);
    }
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    LOG_INFO("grpc: shutting down: GOAWAY to %zu connection(s), grace %llu ms", s->n_conns,
             (unsigned long long)grace_ms);
    struct queue *q, *next;
    for (q = s->conns.next; q != &s->conns; q = next) {
        next = q->next; /* goaway may close (and unlink) the connection */
        h2__conn_goaway(QUEUE_DATA(q, struct h2_conn, link));
    }
    uv_timer_start(&s->grace_timer, server_grace_cb, grace_ms, 0);
    server_maybe_closed(s);
}

void grpc_server_set_outcome_observer(struct grpc_server *s, grpc_outcome_cb cb, void *data)
{
    assert(!s->started);
    s->outcome_cb = cb;
    s->outcome_data = data;
}

/* --- Metrics --- */

void grpc__metrics_record(struct grpc_server *s, struct grpc__method *m, int status, uint64_t start_ns)
{
    if (m == NULL) {
        m = &s->unknown;
    }
    if (status < 0 || status >= GRPC_STATUS__COUNT) {
        status = GRPC_STATUS_UNKNOWN;
    }
    m->handled[status]++;
    double secs = (double)(clock_system()->mono_ns(clock_system()) - start_ns) / 1e9;
    m->latency_count++;
    m->latency_sum += secs;
    for (int i = 0; i < GRPC__BUCKETS; i++) {
        if (secs <= grpc__bucket_bounds[i]) {
            m->buckets[i]++;
            break;
        }
    }
}

static void metrics_method(const struct grpc__method *m, struct buf *out, bool histogram)
{
    const char *name = strrchr(m->path, '/');
    name = name != NULL ? name + 1 : m->path;
    if (!histogram) {
        for (int code = 0; code < GRPC_STATUS__COUNT; code++) {
            if (m->handled[code] > 0) {
                buf_printf(out,
                           "gantry_grpc_server_handled_total{grpc_service=\"%s\",grpc_method=\"%s\","
                           "grpc_code=\"%s\"} %llu\n",
                           m->service, name, grpc_status_name(code), (unsigned long long)m->handled[code]);
            }
        }
        return;
    }
    if (m->latency_count == 0) {
        return;
    }
    uint64_t cum = 0;
    for (int i = 0; i < GRPC__BUCKETS; i++) {
        cum += m->buckets[i];
        buf_printf(
            out,
            "gantry_grpc_server_handling_seconds_bucket{grpc_service=\"%s\",grpc_method=\"%s\",le=\"%g\"} "
            "%llu\n",
            m->service, name, grpc__bucket_bounds[i], (unsigned long long)cum);
    }
    buf_printf(
        out,
        "gantry_grpc_server_handling_seconds_bucket{grpc_service=\"%s\",grpc_method=\"%s\",le=\"+Inf\"} "
        "%llu\n",
        m->service, name, (unsigned long long)m->latency_count);
    buf_printf(out, "gantry_grpc_server_handling_seconds_sum{grpc_service=\"%s\",grpc_method=\"%s\"} %.9f\n",
               m->service, name, m->latency_sum);
    buf_printf(out,
               "gantry_grpc_server_handling_seconds_count{grpc_service=\"%s\",grpc_method=\"%s\"} %llu\n",
               m->service, name, (unsigned long long)m->latency_count);
}

void grpc_server_metrics_write(const struct grpc_server *s, struct buf *out)
{
    buf_printf(out,
               "# HELP gantry_grpc_server_handled_total RPCs completed, by method and gRPC status code.\n"
               "# TYPE gantry_grpc_server_handled_total counter\n");
    for (size_t i = 0; i < s->n_methods; i++) {
        metrics_method(&s->methods[i], out, false);
    }
    metrics_method(&s->unknown, out, false);
    buf_printf(out,
               "# HELP gantry_grpc_server_handling_seconds Time from request headers to the final status.\n"
               "# TYPE gantry_grpc_server_handling_seconds histogram\n");
    for (size_t i = 0; i < s->n_methods; i++) {
        metrics_method(&s->methods[i], out, true);
    }
    metrics_method(&s->unknown, out, true);
    buf_printf(
        out,
        "# HELP gantry_grpc_server_connections Open HTTP/2 connections.\n"
        "# TYPE gantry_grpc_server_connections gauge\n"
        "gantry_grpc_server_connections %zu\n"
        "# HELP gantry_grpc_server_connections_total HTTP/2 connections accepted.\n"
        "# TYPE gantry_grpc_server_connections_total counter\n"
        "gantry_grpc_server_connections_total %llu\n"
        "# HELP gantry_grpc_server_connections_rejected_total Connections closed at accept, by limit.\n"
        "# TYPE gantry_grpc_server_connections_rejected_total counter\n"
        "gantry_grpc_server_connections_rejected_total{reason=\"max_connections\"} %llu\n"
        "gantry_grpc_server_connections_rejected_total{reason=\"per_source\"} %llu\n"
        "# HELP gantry_grpc_server_connections_evicted_total Unproven idle connections closed to admit new "
        "ones.\n"
        "# TYPE gantry_grpc_server_connections_evicted_total counter\n"
        "gantry_grpc_server_connections_evicted_total %llu\n"
        "# HELP gantry_grpc_server_handshake_timeouts_total Connections closed for not finishing the "
        "handshake.\n"
        "# TYPE gantry_grpc_server_handshake_timeouts_total counter\n"
        "gantry_grpc_server_handshake_timeouts_total %llu\n"
        "# HELP gantry_grpc_server_connections_established Live connections that carried an authenticated "
        "call.\n"
        "# TYPE gantry_grpc_server_connections_established gauge\n"
        "gantry_grpc_server_connections_established %zu\n"
        "# HELP gantry_grpc_server_streams Open gRPC streams.\n"
        "# TYPE gantry_grpc_server_streams gauge\n"
        "gantry_grpc_server_streams %zu\n",
        s->n_conns, (unsigned long long)s->conns_total, (unsigned long long)s->conns_rejected,
        (unsigned long long)s->conns_rejected_source, (unsigned long long)s->conns_evicted,
        (unsigned long long)s->handshake_timeouts, s->n_established, s->n_open_streams);
}
