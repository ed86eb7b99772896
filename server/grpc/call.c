/* One gRPC call on one HTTP/2 stream: request headers and metadata, the length-prefixed message
 * framing across DATA frames, deadlines, dispatch to the handler, the response (headers, messages,
 * trailers or a trailers-only error) and asynchronous completion from other threads.
 *
 * Lifetime: the stream holds one reference from HEADERS until nghttp2 closes the stream (or the
 * connection goes); handlers that answer later hold their own (grpc_call_ref). The memory, arena
 * included, goes when the last reference is dropped, after the deadline timer has closed.
 *
 * Every limit is checked before allocating: header bytes as they arrive, and a message's declared
 * length (the 5-byte prefix) against max_recv_message_bytes and the connection's memory budget
 * before a byte of it is buffered. */
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "server/grpc/internal.h"
#include "server/grpc/wirecheck.h"

#define CALL_OUT_HIGH (1u << 20) /* grpc_call_send reports GERR_BUSY above this */
#define CALL_OUT_LOW  (256u << 10)

static uint64_t call_now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static void call_timer_closed(uv_handle_t *h)
{
    struct grpc_call *call = h->data;
    struct grpc_server *s = call->server;
    mem_free(call);
    grpc__call_gone(s);
}

void grpc_call_ref(struct grpc_call *call)
{
    atomic_fetch_add(&call->refs, 1);
}

void grpc_call_unref(struct grpc_call *call)
{
    if (atomic_fetch_sub(&call->refs, 1) > 1) {
        return;
    }
    if (call->is_virtual) {
        buf_close(&call->req);
        arena_close(&call->req_arena);
        pthread_mutex_destroy(&call->req_mu);
        arena_close(&call->arena);
        mem_free(call);
        return;
    }
    size_t request_heap = call->req_heap + call->req.cap + call->req_arena.total + call->msg.cap;
    buf_close(&call->msg);
    buf_close(&call->held);
    buf_close(&call->out);
    buf_close(&call->req);
    arena_close(&call->req_arena);
    pthread_mutex_destroy(&call->req_mu);
    grpc__trim_soon(call->server, request_heap);
    arena_close(&call->arena);
    if (call->peer_cert != NULL) {
        X509_free(call->peer_cert);
    }
    uv_close((uv_handle_t *)&call->timer, call_timer_closed);
}

struct grpc_call *grpc__call_new(struct h2_conn *c, int32_t stream_id)
{
    struct grpc_server *s = c->server;
    struct grpc_call *call = mem_zalloc(sizeof(*call));
    call->server = s;
    call->conn = c;
    call->stream_id = stream_id;
    atomic_init(&call->refs, 1);
    arena_init(&call->arena);
    buf_init(&call->msg);
    buf_init(&call->held);
    buf_init(&call->out);
    buf_init(&call->req);
    arena_init(&call->req_arena);
    pthread_mutex_init(&call->req_mu, NULL);
    uv_timer_init(s->loop, &call->timer);
    call->timer.data = call;
    call->start_ns = clock_system()->mono_ns(clock_system());
    memcpy(call->peer, c->peer, sizeof(call->peer));
    call->tls = c->use_tls;
    if (c->peer_cert != NULL && X509_up_ref(c->peer_cert) == 1) {
        call->peer_cert = c->peer_cert;
    }
    queue_insert_tail(&c->calls, &call->link);
    c->n_streams++;
    s->n_calls++;
    s->n_open_streams++;
    return call;
}

/* Tell nghttp2 that @n body bytes were taken, so the stream's and connection's windows reopen. */
static void call_consume(struct grpc_call *call, size_t n)
{
    if (n > 0 && call->conn != NULL && call->conn->session != NULL) {
        nghttp2_session_consume(call->conn->session, call->stream_id, n);
    }
}

static size_t call_held(const struct grpc_call *call)
{
    return call->held.len - call->held_off;
}

static void call_hold(struct grpc_call *call, const uint8_t *data, size_t n)
{
    if (n == 0) {
        return;
    }
    if (!call->held_counted) {
        call->held_counted = true;
        call->conn->n_held++;
    }
    buf_append(&call->held, data, n);
}

/* Empty the held buffer (its bytes were consumed or handed elsewhere). */
static void call_held_clear(struct grpc_call *call)
{
    if (call->held_counted && call->conn != NULL) {
        call->conn->n_held--;
    }
    call->held_counted = false;
    buf_close(&call->held);
    call->held_off = 0;
}

/* Drop held input (the call ended): its bytes count as consumed, at the connection level only
 * once the stream is gone. */
static void call_release_held(struct grpc_call *call, bool stream_gone)
{
    size_t n = call_held(call);
    if (n > 0 && call->conn != NULL && call->conn->session != NULL) {
        if (stream_gone) {
            nghttp2_session_consume_connection(call->conn->session, n);
        } else {
            nghttp2_session_consume(call->conn->session, call->stream_id, n);
        }
    }
    call_held_clear(call);
    call->end_held = false;
}

/* Whether a client-streaming or bidi call must stop taking input: its handler has more than
 * CALL_OUT_HIGH unsent, or the connection more than conn_memory_bytes. A handler that answers
 * every message without waiting for on_drain (reflection does) is thus paced by its client's
 * reading, through HTTP/2 flow control. */
static bool call_input_blocked(const struct grpc_call *call)
{
    if (call->method == NULL || !call->method->has_handler || call->finished || call->cancelled ||
        call->conn == NULL) {
        return false;
    }
    enum grpc_method_kind kind = call->method->handler.kind;
    if (kind != GRPC_CLIENT_STREAMING && kind != GRPC_BIDI_STREAMING) {
        return false;
    }
    return call->input_paused || call->out.len - call->out_off > CALL_OUT_HIGH ||
           call->conn->out_buffered > call->server->cfg.conn_memory_bytes;
}

/* Forget a partly received message and give its budget back to the connection. */
static void call_drop_input(struct grpc_call *call)
{
    if (call->in_message && call->conn != NULL) {
        call->conn->in_bytes -= call->msg_len;
    }
    if (call->conn != NULL) {
        call->conn->in_bytes -= call->req_counted; /* the memory itself goes with the call */
    }
    call->req_counted = 0;
    call->in_message = false;
    call->prefix_have = 0;
    buf_close(&call->msg);
}

/* --- Headers --- */

static bool call_name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

/* grpc-timeout: 1 to 8 digits and a unit (H M S m u n). Returns milliseconds (rounded up) or -1. */
static int64_t call_parse_timeout(const uint8_t *v, size_t len)
{
    if (len < 2 || len > 9) {
        return -1;
    }
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return -1;
        }
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        return (int64_t)(n * 3600000u);
    case 'M':
        return (int64_t)(n * 60000u);
    case 'S':
        return (int64_t)(n * 1000u);
    case 'm':
        return (int64_t)n;
    case 'u':
        return (int64_t)((n + 999u) / 1000u);
    case 'n':
        return (int64_t)((n + 999999u) / 1000000u);
    default:
        return -1;
    }
}

int grpc__call_header_bytes(struct grpc_call *call, size_t namelen, size_t valuelen)
{
    uint32_t max = call->server->cfg.max_header_list_bytes;
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes <= max) {
        return 0;
    }
    if (!call->headers_too_big && !call->finished) {
        /* (Trailers can arrive after the handler finished: then only the connection ends.) */
        char msg[128];
        snprintf(msg, sizeof(msg), "request headers exceed the limit of %u bytes", max);
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
    }
    call->headers_too_big = true;
    return GERR_TOOBIG;
}

int grpc__call_header(struct grpc_call *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen)
{
    struct arena *a = &call->arena;
    int rv = grpc__call_header_bytes(call, namelen, valuelen);
    if (rv != 0) {
        return rv;
    }
    /* Optional whitespace around a field value is not part of it (RFC 9110 5.5); nghttp2 was told
     * to let it through (server.c), so trim it here, before anything looks at the value. */
    while (valuelen > 0 && (value[0] == ' ' || value[0] == '\t')) {
        value++;
        valuelen--;
    }
    while (valuelen > 0 && (value[valuelen - 1] == ' ' || value[valuelen - 1] == '\t')) {
        valuelen--;
    }
    if (namelen > 0 && name[0] == ':') {
        if (call_name_is(name, namelen, ":method")) {
            call->http_method = arena_strndup(a, (const char *)value, valuelen);
        } else if (call_name_is(name, namelen, ":path")) {
            call->path = arena_strndup(a, (const char *)value, valuelen);
        }
        return 0;
    }
    if (call_name_is(name, namelen, "content-type")) {
        call->content_type = arena_strndup(a, (const char *)value, valuelen);
        return 0;
    }
    if (call_name_is(name, namelen, "grpc-timeout")) {
        int64_t ms = call_parse_timeout(value, valuelen);
        if (ms < 0) {
            call->reject_status = GRPC_STATUS_INTERNAL;
            call->reject_msg = "malformed grpc-timeout header";
        } else {
            call->deadline_ms = call_now_ms() + (uint64_t)ms;
            if (call->deadline_ms == 0) {
                call->deadline_ms = 1;
            }
        }
        return 0;
    }
    if (call_name_is(name, namelen, "te") || call_name_is(name, namelen, "grpc-encoding") ||
        call_name_is(name, namelen, "grpc-accept-encoding") || call_name_is(name, namelen, "connection")) {
        return 0;
    }
    if (call->n_meta == call->cap_meta) {
        size_t cap = call->cap_meta == 0 ? 8 : call->cap_meta * 2;
        struct grpc__meta *m = arena_alloc(a, cap * sizeof(*m));
        if (call->n_meta > 0) {
            memcpy(m, call->meta, call->n_meta * sizeof(*m));
        }
        call->meta = m;
        call->cap_meta = cap;
    }
    call->meta[call->n_meta].key = arena_strndup(a, (const char *)name, namelen);
    call->meta[call->n_meta].value = arena_strndup(a, (const char *)value, valuelen);
    call->n_meta++;
    return 0;
}

static void call_deadline_cb(uv_timer_t *t);

/* Answer with a bare HTTP status (415, 405): not a gRPC response. */
static void call_respond_http(struct grpc_call *call, const char *status)
{
    call->finished = true;
    call->headers_sent = true;
    call->trailers_sent = true;
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_response(call->conn->session, call->stream_id, nva, 2, NULL);
    h2__conn_flush(call->conn);
}

static void call_start(struct grpc_call *call)
{
    struct grpc_handler *h = &call->method->handler;
    call->started = true;
    call->dispatched = true;
    call->conn->n_dispatched++; /* a connection with a call at its handler is never evicted */
    h->on_start(call, h->data);
}

static void call_undispatch(struct grpc_call *call)
{
    if (call->dispatched && call->conn != NULL) {
        call->conn->n_dispatched--;
    }
    call->dispatched = false;
}

/* Whether @call, answered @status, shows that the connection's client was accepted by whoever
 * authenticates (the gate): it carried credentials and got OK or a refusal only an authenticated
 * caller gets. The transport's proxy for "authenticated" (server.h, the connection budget). */
static bool call_proves_caller(struct grpc_call *call, int status)
{
    if (!call->started || (call->peer_cert == NULL && grpc_call_metadata(call, "authorization") == NULL)) {
        return false;
    }
    switch (status) {
    case GRPC_STATUS_OK:
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_NOT_FOUND:
    case GRPC_STATUS_ALREADY_EXISTS:
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ABORTED:
    case GRPC_STATUS_OUT_OF_RANGE:
        return true;
    default:
        return false;
    }
}

void grpc__call_headers_done(struct grpc_call *call)
{
    struct grpc_server *s = call->server;
    char msg[256];
    if (call->finished) {
        return; /* answered while the headers arrived */
    }
    if (call->http_method == NULL || strcmp(call->http_method, "POST") != 0) {
        call_respond_http(call, "405");
        return;
    }
    const char *ct = call->content_type;
    if (ct == NULL || strncmp(ct, "application/grpc", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != '+' && ct[16] != ';')) {
        call_respond_http(call, "415");
        return;
    }
    if (call->path == NULL) {
        call->path = "";
    }
    call->method = grpc__method_find(s, call->path, strlen(call->path));
    if (call->reject_status != 0) {
        grpc_call_finish(call, call->reject_status, call->reject_msg, NULL);
        return;
    }
    if (call->method == NULL) {
        snprintf(msg, sizeof(msg), "unknown method %.200s", call->path);
        grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
        return;
    }
    if (!call->method->has_handler) {
        snprintf(msg, sizeof(msg), "method %.200s is not implemented", call->path);
        grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
        return;
    }
    if (call->deadline_ms != 0) {
        uint64_t now = call_now_ms();
        if (call->deadline_ms <= now) {
            grpc_call_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded", NULL);
            return;
        }
        uv_timer_start(&call->timer, call_deadline_cb, call->deadline_ms - now, 0);
    }
    enum grpc_method_kind kind = call->method->handler.kind;
    if (kind == GRPC_CLIENT_STREAMING || kind == GRPC_BIDI_STREAMING) {
        call_start(call);
    }
}

/* --- Body framing --- */

/* The status and message for a wirecheck_message failure @rv (@detail is its errmsg). */
static int call_check_status(int rv, const char *detail, char *msg, size_t cap)
{
    switch (rv) {
    case GERR_INVAL:
        snprintf(msg, cap, "%s", detail);
        return GRPC_STATUS_INVALID_ARGUMENT;
    case GERR_TOOBIG:
        snprintf(msg, cap, "request message refused: %.400s", detail);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    default:
        snprintf(msg, cap, "could not decode the request message (%.400s)", detail);
        return GRPC_STATUS_INTERNAL;
    }
}

static void call_deliver(struct grpc_call *call)
{
    struct grpc__method *m = call->method;
    struct grpc_handler *h = &m->handler;
    call->in_message = false;
    call->prefix_have = 0;
    call->n_received++;
    if (h->kind == GRPC_UNARY || h->kind == GRPC_SERVER_STREAMING) {
        if (call->n_received > 1) {
            call->conn->in_bytes -= call->msg_len;
            grpc_call_finish(call, GRPC_STATUS_INTERNAL, "more than one request message for a unary request",
                             NULL);
            return;
        }
        /* Keep the bytes, undecoded and still counted against the connection's budget, for
         * grpc_call_request (on a worker, after authentication). */
        call->req = call->msg;
        buf_init(&call->msg);
        call->req_counted = call->msg_len;
        return;
    }
    call->conn->in_bytes -= call->msg_len;
    /* Client-streaming and bidi messages are decoded here, on the loop thread, for on_message:
     * the same strict check first, bounded by max_recv_message_bytes and max_request_fields (a
     * 4 MiB message is walked in a few milliseconds and refused before protobuf-c allocates). */
    char detail[GERR_MSG_SIZE], why[GERR_MSG_SIZE];
    struct wirecheck_limits lim = {call->server->cfg.max_request_fields, call->server->cfg.max_request_depth};
    int rv = wirecheck_message(m->input, call->msg.data, call->msg.len, &lim, detail);
    if (rv != 0) {
        int status = call_check_status(rv, detail, why, sizeof(why));
        buf_close(&call->msg);
        grpc_call_finish(call, status, why, NULL);
        return;
    }
    ProtobufCMessage *msg = protobuf_c_message_unpack(m->input, NULL, call->msg.len, call->msg.data);
    if (call->msg.cap > (64u << 10)) {
        buf_close(&call->msg);
    } else {
        buf_reset(&call->msg);
    }
    if (msg == NULL) {
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "could not decode a request message", NULL);
        return;
    }
    /* A held reference: the handler may finish the call, and the stream may close, inside. */
    grpc_call_ref(call);
    if (!call->finished && !call->cancelled && h->on_message != NULL) {
        h->on_message(call, msg, h->data);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    grpc_call_unref(call);
}

/* Frame @len body bytes into messages and deliver them. Returns how many bytes were taken: all
 * of them (delivered, buffered, or dropped because the call has ended), or fewer when a delivery
 * left the call's input blocked (call_input_blocked). */
static size_t call_frame(struct grpc_call *call, const uint8_t *data, size_t len)
{
    struct grpc_server *s = call->server;
    const size_t total = len;
    char msg[256];
    while (len > 0 && !call->finished && !call->cancelled && call->conn != NULL) {
        if (call->method == NULL || !call->method->has_handler) {
            return total; /* answered already (unimplemented) */
        }
        if (!call->in_message) {
            size_t take = 5 - call->prefix_have;
            if (take > len) {
                take = len;
            }
            memcpy(call->prefix + call->prefix_have, data, take);
            call->prefix_have += take;
            data += take;
            len -= take;
            if (call->prefix_have < 5) {
                return total;
            }
            uint8_t flags = call->prefix[0];
            uint32_t n = (uint32_t)call->prefix[1] << 24 | (uint32_t)call->prefix[2] << 16 |
                         (uint32_t)call->prefix[3] << 8 | (uint32_t)call->prefix[4];
            if (flags & 1u) {
                grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED,
                                 "compressed messages are not supported (no grpc-encoding was offered)",
                                 NULL);
                return total;
            }
            if (flags != 0) {
                grpc_call_finish(call, GRPC_STATUS_INTERNAL, "reserved message flags set", NULL);
                return total;
            }
            if (n > s->cfg.max_recv_message_bytes) {
                snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %u)", n,
                         s->cfg.max_recv_message_bytes);
                grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
                return total;
            }
            if (call->conn->in_bytes + n > s->cfg.conn_memory_bytes) {
                snprintf(msg, sizeof(msg), "connection memory limit of %zu bytes reached",
                         s->cfg.conn_memory_bytes);
                grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
                return total;
            }
            call->msg_len = n;
            call->in_message = true;
            call->conn->in_bytes += n;
            buf_reset(&call->msg);
            if (n == 0) {
                call_deliver(call);
                if (call_input_blocked(call)) {
                    return total - len;
                }
            }
            continue;
        }
        size_t want = call->msg_len - call->msg.len;
        size_t take = want < len ? want : len;
        buf_append(&call->msg, data, take);
        data += take;
        len -= take;
        if (call->msg.len == call->msg_len) {
            call_deliver(call);
            if (call_input_blocked(call)) {
                return total - len;
            }
        }
    }
    return total;
}

void grpc__call_data(struct grpc_call *call, const uint8_t *data, size_t len)
{
    if (call_held(call) > 0 || call_input_blocked(call)) {
        call_hold(call, data, len); /* behind what is held already, or paused */
        return;
    }
    size_t used = call_frame(call, data, len);
    call_consume(call, used);
    if (used < len) {
        call_hold(call, data + used, len - used);
    }
}

static void call_end_stream_now(struct grpc_call *call);

/* Frame held input now that the call's output has drained (from grpc__conn_notify_drain). The
 * buffer is taken out of the call first: a handler finishing the call inside on_message must
 * not free the bytes being framed. Whatever is left when the call blocks again is held again. */
static void call_resume_input(struct grpc_call *call)
{
    if (call_input_blocked(call)) {
        return;
    }
    if (call_held(call) == 0) {
        if (call->end_held) { /* END_STREAM arrived while the input was paused */
            call->end_held = false;
            call_end_stream_now(call);
        }
        return;
    }
    struct buf local = call->held;
    size_t off = call->held_off;
    bool end = call->end_held;
    buf_init(&call->held);
    call_held_clear(call);
    call->end_held = false;
    size_t left = local.len - off;
    while (left > 0) {
        size_t used = call_frame(call, local.data + off, left);
        call_consume(call, used);
        off += used;
        left -= used;
        if (used == 0 || call_input_blocked(call)) {
            break;
        }
    }
    if (left > 0) {
        call_hold(call, local.data + off, left);
        call->end_held = end;
    } else if (end) {
        call_end_stream_now(call);
    }
    buf_close(&local);
}

void grpc__call_end_stream(struct grpc_call *call)
{
    call->half_closed = true;
    if (call_held(call) > 0 || call->input_paused) {
        call->end_held = true; /* after the held messages */
        return;
    }
    call_end_stream_now(call);
}

static void call_end_stream_now(struct grpc_call *call)
{
    if (call->finished || call->cancelled || call->conn == NULL) {
        return;
    }
    if (call->in_message || call->prefix_have > 0) {
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "the request ended inside a message", NULL);
        return;
    }
    struct grpc_handler *h = &call->method->handler;
    if (h->kind == GRPC_UNARY || h->kind == GRPC_SERVER_STREAMING) {
        if (call->n_received == 0) {
            grpc_call_finish(call, GRPC_STATUS_INTERNAL, "missing request message", NULL);
            return;
        }
        call_start(call);
        return;
    }
    if (h->on_message != NULL) {
        h->on_message(call, NULL, h->data);
    }
}

/* --- Responses --- */

static ssize_t call_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *dst, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user);

static const nghttp2_data_provider *call_provider(struct grpc_call *call, nghttp2_data_provider *p)
{
    p->source.ptr = call;
    p->read_callback = call_read_cb;
    return p;
}

static void call_submit_trailers(struct grpc_call *call, bool trailers_only)
{
    char code[12];
    snprintf(code, sizeof(code), "%d", call->status);
    struct buf enc;
    buf_init(&enc);
    if (call->status_msg != NULL) {
        grpc_status_percent_encode(&enc, call->status_msg);
    }
    nghttp2_nv nva[5];
    size_t n = 0;
    if (trailers_only) {
        nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE};
        nva[n++] = (nghttp2_nv){(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
                                NGHTTP2_NV_FLAG_NONE};
    }
    nva[n++] =
        (nghttp2_nv){(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE};
    if (enc.len > 0) {
        nva[n++] = (nghttp2_nv){(uint8_t *)"grpc-message", enc.data, 12, enc.len, NGHTTP2_NV_FLAG_NONE};
    }
    if (call->trailer_key[0] != '\0') {
        nva[n++] = (nghttp2_nv){(uint8_t *)call->trailer_key, (uint8_t *)call->trailer_val,
                                strlen(call->trailer_key), strlen(call->trailer_val), NGHTTP2_NV_FLAG_NONE};
    }
    if (trailers_only) {
        nghttp2_submit_response(call->conn->session, call->stream_id, nva, n, NULL);
    } else {
        nghttp2_submit_trailer(call->conn->session, call->stream_id, nva, n);
    }
    call->trailers_sent = true;
    buf_close(&enc);
}

static void call_submit_headers(struct grpc_call *call)
{
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider p;
    nghttp2_submit_response(call->conn->session, call->stream_id, nva, 2, call_provider(call, &p));
    call->headers_sent = true;
}

static ssize_t call_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *dst, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)session;
    (void)stream_id;
    (void)user;
    struct grpc_call *call = source->ptr;
    size_t avail = call->out.len - call->out_off;
    size_t n = avail < length ? avail : length;
    struct h2_conn *c = call->conn;
    if (n > 0) {
        memcpy(dst, call->out.data + call->out_off, n);
        call->out_off += n;
        c->out_buffered -= n;
        atomic_store(&call->unsent_out, call->out.len - call->out_off);
        /* A call may be holding input because the connection was over its budget. */
        if (c->n_held > 0 && c->out_buffered <= call->server->cfg.conn_memory_bytes) {
            c->drain_waiting = true;
        }
    }
    if (call->out_off == call->out.len) {
        if (call->out.cap > (256u << 10)) {
            buf_close(&call->out);
        } else {
            buf_reset(&call->out);
        }
        call->out_off = 0;
        if (call->drain_wanted || call_held(call) > 0) {
            c->drain_waiting = true;
        }
        if (call->finished) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            call_submit_trailers(call, false);
            return (ssize_t)n;
        }
        if (n == 0) {
            call->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    } else if ((call->drain_wanted || call_held(call) > 0) && call->out.len - call->out_off < CALL_OUT_LOW) {
        c->drain_waiting = true;
    }
    return (ssize_t)n;
}

/* Frame one serialized message into call->out. */
static void call_append_message(struct grpc_call *call, const uint8_t *data, size_t len)
{
    uint8_t prefix[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    buf_append(&call->out, prefix, 5);
    if (len > 0) {
        buf_append(&call->out, data, len);
    }
    if (call->conn != NULL) {
        call->conn->out_buffered += len + 5;
    }
}

static void call_kick(struct grpc_call *call)
{
    if (!call->headers_sent) {
        call_submit_headers(call);
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->conn->session, call->stream_id);
    }
    h2__conn_flush(call->conn);
}

/* Queue @len packed bytes as one response message. Checks as grpc_call_send. */
static int call_send_bytes(struct grpc_call *call, const uint8_t *msg, size_t len)
{
    if (call->finished || call->method == NULL) {
        return GERR_INVAL;
    }
    enum grpc_method_kind kind = call->method->handler.kind;
    if (kind == GRPC_UNARY || kind == GRPC_CLIENT_STREAMING) {
        return GERR_INVAL;
    }
    if (len > call->server->cfg.max_send_message_bytes) {
        return GERR_TOOBIG;
    }
    if (call->cancelled || call->conn == NULL || call->conn->closing) {
        return 0;
    }
    uint8_t *dst = buf_reserve(&call->out, len + 5);
    dst[0] = 0;
    dst[1] = (uint8_t)(len >> 24);
    dst[2] = (uint8_t)(len >> 16);
    dst[3] = (uint8_t)(len >> 8);
    dst[4] = (uint8_t)len;
    if (len > 0) {
        memcpy(dst + 5, msg, len);
    }
    call->out.len += len + 5;
    call->conn->out_buffered += len + 5;
    atomic_store(&call->unsent_out, call->out.len - call->out_off);
    struct h2_conn *c = call->conn;
    call_kick(call);
    if (call->conn != NULL && (call->out.len - call->out_off > CALL_OUT_HIGH ||
                               c->out_buffered > call->server->cfg.conn_memory_bytes)) {
        call->drain_wanted = true;
        return GERR_BUSY;
    }
    return 0;
}

int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > call->server->cfg.max_send_message_bytes) {
        return GERR_TOOBIG; /* before packing anything */
    }
    uint8_t stackbuf[512];
    uint8_t *packed = len <= sizeof stackbuf ? stackbuf : mem_alloc(len);
    protobuf_c_message_pack(msg, packed);
    int rv = call_send_bytes(call, packed, len);
    if (packed != stackbuf) {
        mem_free(packed);
    }
    return rv;
}

void grpc__call_finish_bytes(struct grpc_call *call, int status, const char *message, const uint8_t *reply,
                             size_t reply_len, bool has_reply)
{
    if (call->finished) {
        if (!call->cancelled) {
            LOG_WARN("grpc: %s finished twice (API misuse)", call->path != NULL ? call->path : "?");
        }
        return;
    }
    call->finished = true;
    uv_timer_stop(&call->timer);
    call_drop_input(call);
    call_release_held(call, false);
    char msg[160];
    if (has_reply && reply_len > call->server->cfg.max_send_message_bytes) {
        snprintf(msg, sizeof(msg), "response message of %zu bytes exceeds the limit of %u bytes", reply_len,
                 call->server->cfg.max_send_message_bytes);
        status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        message = msg;
        has_reply = false;
    }
    if (status < 0 || status >= GRPC_STATUS__COUNT) {
        status = GRPC_STATUS_UNKNOWN;
    }
    call->status = status;
    call->status_msg = message != NULL && message[0] != '\0' ? arena_strdup(&call->arena, message) : NULL;
    if (!call->cancelled) {
        grpc__metrics_record(call->server, call->method, status, call->start_ns);
        grpc__outcome(call, status);
    }
    call_undispatch(call);
    if (call->cancelled || call->conn == NULL || call->conn->closing) {
        return;
    }
    if (call_proves_caller(call, status)) {
        h2__conn_established(call->conn);
    }
    if (has_reply && status == GRPC_STATUS_OK) {
        call_append_message(call, reply, reply_len);
    }
    if (!call->headers_sent && call->out.len == call->out_off) {
        call->headers_sent = true;
        call_submit_trailers(call, true);
        h2__conn_flush(call->conn);
        return;
    }
    call_kick(call);
}

static void call_vfinish(struct grpc_call *call, int status, const char *message, const uint8_t *reply,
                         size_t len);

void grpc_call_finish(struct grpc_call *call, int status, const char *message, const ProtobufCMessage *reply)
{
    if (call->is_virtual) {
        size_t len = reply != NULL ? protobuf_c_message_get_packed_size(reply) : 0;
        uint8_t *data = reply != NULL ? mem_alloc(len > 0 ? len : 1) : NULL;
        if (reply != NULL) {
            protobuf_c_message_pack(reply, data);
        }
        call_vfinish(call, status, message, data, len);
        mem_free(data);
        return;
    }
    if (reply == NULL || call->finished || call->cancelled) {
        grpc__call_finish_bytes(call, status, message, NULL, 0, false);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(reply);
    uint8_t *data = len > 0 ? mem_alloc(len) : NULL;
    if (len > 0) {
        protobuf_c_message_pack(reply, data);
    }
    grpc__call_finish_bytes(call, status, message, data, len, true);
    mem_free(data);
}

void grpc_call_finish_gerr(struct grpc_call *call, int gerr, const char *message)
{
    grpc_call_finish(call, grpc_status_from_gerr(gerr), message != NULL ? message : gerr_str(gerr), NULL);
}

/* Cancel from the server side (deadline): answer @status, then tell the handler. */
static void call_cancel(struct grpc_call *call, int status, const char *message)
{
    bool notify = call->started && !call->finished;
    grpc__call_finish_bytes(call, status, message, NULL, 0, false);
    call->cancelled = true;
    struct grpc_handler *h = call->method != NULL ? &call->method->handler : NULL;
    if (notify && h->on_cancel != NULL) {
        h->on_cancel(call, h->data);
    }
}

static void call_deadline_cb(uv_timer_t *t)
{
    struct grpc_call *call = t->data;
    if (call->finished) {
        return;
    }
    grpc_call_ref(call);
    call_cancel(call, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
    grpc_call_unref(call);
}

void grpc__call_sent_end(struct grpc_call *call)
{
    /* We ended our side while the client is still sending: tell it to stop (RFC 7540 8.1). */
    if (!call->half_closed && call->conn != NULL && call->conn->session != NULL) {
        nghttp2_submit_rst_stream(call->conn->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_NO_ERROR);
    }
}

void grpc__call_stream_closed(struct grpc_call *call, uint32_t error_code)
{
    struct h2_conn *c = call->conn;
    call_release_held(call, true);
    call_drop_input(call);
    call_undispatch(call);
    if (c != NULL) {
        c->out_buffered -= call->out.len - call->out_off;
        if (c->n_held > 0 && c->out_buffered <= call->server->cfg.conn_memory_bytes) {
            c->drain_waiting = true; /* a call holding input may go on (the next flush tells it) */
        }
        queue_remove(&call->link);
        c->n_streams--;
        call->server->n_open_streams--;
    }
    buf_close(&call->out);
    call->out_off = 0;
    atomic_store(&call->unsent_out, 0);
    call->conn = NULL;
    call->stream_closed = true;
    uv_timer_stop(&call->timer);
    if (!call->finished && !call->cancelled) {
        LOG_DEBUG("grpc: %s cancelled by the client or the connection (error %u)",
                  call->path != NULL ? call->path : "?", error_code);
        bool notify = call->started;
        call->cancelled = true;
        grpc__metrics_record(call->server, call->method, GRPC_STATUS_CANCELLED, call->start_ns);
        grpc__outcome(call, GRPC_STATUS_CANCELLED);
        struct grpc_handler *h = call->method != NULL ? &call->method->handler : NULL;
        if (notify && h->on_cancel != NULL) {
            h->on_cancel(call, h->data);
        }
    }
    grpc_call_unref(call);
}

/* Called by h2.c after a flush when some call's output drained below the low-water mark, or
 * the connection's below its budget while some call holds input. */
void grpc__conn_notify_drain(struct h2_conn *c)
{
    c->drain_waiting = false;
    struct queue *q;
    QUEUE_FOREACH (q, &c->calls) {
        struct grpc_call *call = QUEUE_DATA(q, struct grpc_call, link);
        /* Handlers may send (appending output) or finish, but the list is not modified here:
         * streams close only inside nghttp2, which is not running now. */
        if (call->drain_wanted && !call->finished && call->out.len - call->out_off < CALL_OUT_LOW) {
            call->drain_wanted = false;
            struct grpc_handler *h = &call->method->handler;
            if (h->on_drain != NULL) {
                h->on_drain(call, h->data);
            }
        }
        if (call_held(call) > 0 && call->out.len - call->out_off < CALL_OUT_LOW) {
            call_resume_input(call);
        }
    }
}

/* --- Cross-thread completion --- */

/* --- Virtual calls --- */

struct grpc_call *grpc_call_new_virtual(struct grpc_server *s, const char *path, const uint8_t *request,
                                        size_t len, const char *peer, uint64_t deadline_ms,
                                        grpc_virtual_done_cb done, void *data)
{
    struct grpc__method *m =
        grpc__method_find(s, path, strlen(path)); /* the table is read-only once serving */
    if (m == NULL || !m->has_handler || m->handler.kind != GRPC_UNARY) {
        return NULL;
    }
    struct grpc_call *call = mem_zalloc(sizeof(*call));
    call->server = s;
    call->is_virtual = true;
    call->method = m;
    atomic_init(&call->refs, 1);
    atomic_init(&call->vfinished, false);
    arena_init(&call->arena);
    buf_init(&call->msg);
    buf_init(&call->held);
    buf_init(&call->out);
    buf_init(&call->req);
    arena_init(&call->req_arena);
    pthread_mutex_init(&call->req_mu, NULL);
    call->path = arena_strdup(&call->arena, path);
    buf_append(&call->req, request, len);
    call->deadline_ms = deadline_ms;
    snprintf(call->peer, sizeof(call->peer), "%s", peer != NULL ? peer : "");
    call->start_ns = clock_system()->mono_ns(clock_system());
    call->vdone = done;
    call->vdata = data;
    return call;
}

bool grpc_call_is_virtual(const struct grpc_call *call)
{
    return call->is_virtual;
}

/* Finish a virtual call: its callback, once. */
static void call_vfinish(struct grpc_call *call, int status, const char *message, const uint8_t *reply,
                         size_t len)
{
    bool was = false;
    if (!atomic_compare_exchange_strong(&call->vfinished, &was, true)) {
        LOG_WARN("grpc: virtual call %s finished twice (API misuse)", call->path);
        return;
    }
    if (status < 0 || status >= GRPC_STATUS__COUNT) {
        status = GRPC_STATUS_UNKNOWN;
    }
    grpc__outcome(call, status);
    call->vdone(call->vdata, status, message != NULL ? message : "", status == GRPC_STATUS_OK ? reply : NULL,
                status == GRPC_STATUS_OK ? len : 0);
}

void grpc_call_set_trailer(struct grpc_call *call, const char *key, const char *value)
{
    snprintf(call->set_trailer_key, sizeof call->set_trailer_key, "%s", key);
    snprintf(call->set_trailer_val, sizeof call->set_trailer_val, "%s", value);
}

int grpc_call_finish_async_bytes(struct grpc_call *call, int status, const char *message,
                                 const uint8_t *reply, size_t len)
{
    if (call->is_virtual) {
        call_vfinish(call, status, message, reply, len);
        grpc_call_unref(call);
        return 0;
    }
    struct grpc_server *s = call->server;
    struct grpc__completion *comp = mem_zalloc(sizeof(*comp));
    comp->call = call;
    comp->status = status;
    comp->message = message != NULL ? mem_strdup(message) : NULL;
    memcpy(comp->trailer_key, call->set_trailer_key, sizeof comp->trailer_key);
    memcpy(comp->trailer_val, call->set_trailer_val, sizeof comp->trailer_val);
    if (reply != NULL) {
        comp->reply_len = len;
        comp->reply = mem_alloc(len > 0 ? len : 1);
        if (len > 0) {
            memcpy(comp->reply, reply, len);
        }
        comp->has_reply = true;
    }
    pthread_mutex_lock(&s->async_mu);
    queue_insert_tail(&s->async_q, &comp->link);
    pthread_mutex_unlock(&s->async_mu);
    uv_async_send(&s->async);
    return 0;
}

int grpc_call_send_async(struct grpc_call *call, const ProtobufCMessage *msg)
{
    struct grpc_server *s = call->server;
    if (call->is_virtual) {
        return GERR_INVAL;
    }
    struct grpc__completion *comp = mem_zalloc(sizeof(*comp));
    comp->call = call;
    comp->is_send = true;
    comp->reply_len = protobuf_c_message_get_packed_size(msg);
    if (comp->reply_len > s->cfg.max_send_message_bytes) {
        mem_free(comp);
        return GERR_TOOBIG;
    }
    comp->reply = mem_alloc(comp->reply_len > 0 ? comp->reply_len : 1);
    protobuf_c_message_pack(msg, comp->reply);
    atomic_fetch_add(&call->unsent_async, comp->reply_len + 5);
    grpc_call_ref(call); /* dropped when the completion runs */
    pthread_mutex_lock(&s->async_mu);
    queue_insert_tail(&s->async_q, &comp->link);
    pthread_mutex_unlock(&s->async_mu);
    uv_async_send(&s->async);
    return 0;
}

int grpc_call_finish_async(struct grpc_call *call, int status, const char *message,
                           const ProtobufCMessage *reply)
{
    struct grpc_server *s = call->server;
    if (call->is_virtual) {
        size_t len = reply != NULL ? protobuf_c_message_get_packed_size(reply) : 0;
        uint8_t *data = reply != NULL ? mem_alloc(len > 0 ? len : 1) : NULL;
        if (reply != NULL) {
            protobuf_c_message_pack(reply, data);
        }
        call_vfinish(call, status, message, data, len);
        mem_free(data);
        grpc_call_unref(call);
        return 0;
    }
    struct grpc__completion *comp = mem_zalloc(sizeof(*comp));
    comp->call = call;
    comp->status = status;
    comp->message = message != NULL ? mem_strdup(message) : NULL;
    memcpy(comp->trailer_key, call->set_trailer_key, sizeof comp->trailer_key);
    memcpy(comp->trailer_val, call->set_trailer_val, sizeof comp->trailer_val);
    if (reply != NULL) {
        comp->reply_len = protobuf_c_message_get_packed_size(reply);
        comp->reply = mem_alloc(comp->reply_len > 0 ? comp->reply_len : 1);
        protobuf_c_message_pack(reply, comp->reply);
        comp->has_reply = true;
    }
    pthread_mutex_lock(&s->async_mu);
    queue_insert_tail(&s->async_q, &comp->link);
    pthread_mutex_unlock(&s->async_mu);
    uv_async_send(&s->async);
    return 0;
}

int grpc_call_stash_request(struct grpc_call *call, const ProtobufCMessage *msg)
{
    if (call->req_stashed || call->method == NULL ||
        (call->method->handler.kind != GRPC_BIDI_STREAMING &&
         call->method->handler.kind != GRPC_CLIENT_STREAMING)) {
        return GERR_INVAL;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    buf_reset(&call->req);
    protobuf_c_message_pack(msg, buf_reserve(&call->req, len + 1));
    call->req.len = len;
    call->req_stashed = true; /* before any worker can see the call: the caller hands it over after */
    return 0;
}

void grpc_call_pause_input(struct grpc_call *call)
{
    call->input_paused = true;
}

void grpc_call_resume_input(struct grpc_call *call)
{
    struct grpc_server *s = call->server;
    struct grpc__completion *comp = mem_zalloc(sizeof(*comp));
    comp->call = call;
    comp->is_resume = true;
    grpc_call_ref(call); /* dropped when the completion runs */
    pthread_mutex_lock(&s->async_mu);
    queue_insert_tail(&s->async_q, &comp->link);
    pthread_mutex_unlock(&s->async_mu);
    uv_async_send(&s->async);
}

size_t grpc_call_unsent(const struct grpc_call *call)
{
    if (atomic_load(&call->cancelled)) {
        return 0;
    }
    return atomic_load(&call->unsent_async) + atomic_load(&call->unsent_out);
}

void grpc__async_cb(uv_async_t *h)
{
    struct grpc_server *s = h->data;
    struct queue local;
    queue_init(&local);
    pthread_mutex_lock(&s->async_mu);
    queue_move(&s->async_q, &local);
    pthread_mutex_unlock(&s->async_mu);
    struct queue *q;
    while ((q = queue_head(&local)) != NULL) {
        queue_remove(q);
        struct grpc__completion *comp = QUEUE_DATA(q, struct grpc__completion, link);
        struct grpc_call *call = comp->call;
        if (comp->is_resume) {
            call->input_paused = false;
            if (!call->finished && !call->cancelled && call->conn != NULL) {
                call_resume_input(call);
                if (call->conn != NULL) {
                    /* The bytes consumed above open the client's window again, but only a flush
                     * sends that WINDOW_UPDATE: a handler that answers nothing would wait forever. */
                    h2__conn_flush(call->conn);
                }
            }
        } else if (comp->is_send) {
            (void)call_send_bytes(call, comp->reply, comp->reply_len); /* BUSY: buffered anyway */
            atomic_fetch_sub(&call->unsent_async, comp->reply_len + 5);
        } else if (!call->finished) {
            memcpy(call->trailer_key, comp->trailer_key, sizeof call->trailer_key);
            memcpy(call->trailer_val, comp->trailer_val, sizeof call->trailer_val);
            grpc__call_finish_bytes(call, comp->status, comp->message, comp->reply, comp->reply_len,
                                    comp->has_reply);
        }
        grpc_call_unref(call);
        mem_free(comp->message);
        mem_free(comp->reply);
        mem_free(comp);
    }
}

/* --- Accessors --- */

/* Check and decode call->req into req_arena (under req_mu, once). */
static void call_decode(struct grpc_call *call)
{
    const struct grpc_server_config *cfg = &call->server->cfg;
    const ProtobufCMessageDescriptor *input = call->method->input;
    char detail[GERR_MSG_SIZE], why[GERR_MSG_SIZE];
    struct wirecheck_limits lim = {cfg->max_request_fields, cfg->max_request_depth};
    int rv = wirecheck_message(input, call->req.data, call->req.len, &lim, detail);
    if (rv == 0) {
        call->request = protobuf_c_message_unpack(input, arena_protobuf_allocator(&call->req_arena),
                                                  call->req.len, call->req.data);
        if (call->request == NULL) {
            rv = GERR_PROTO;
            snprintf(detail, sizeof(detail), "protobuf-c refused it");
        }
    }
    call->req_heap = call->req.cap;
    buf_close(&call->req); /* nobody reads the bytes again */
    if (rv != 0) {
        call->req_status = call_check_status(rv, detail, why, sizeof(why));
        call->req_error = arena_strdup(&call->req_arena, why);
        LOG_DEBUG("grpc: %s from %s: request refused: %s", call->path, call->peer, why);
    }
}

const ProtobufCMessage *grpc_call_request(const struct grpc_call *ccall)
{
    /* Logically const: the decode is done once and remembered. */
    struct grpc_call *call = (struct grpc_call *)ccall;
    if (call->method == NULL || (call->method->handler.kind != GRPC_UNARY &&
                                 call->method->handler.kind != GRPC_SERVER_STREAMING && !call->req_stashed)) {
        return NULL;
    }
    pthread_mutex_lock(&call->req_mu);
    if (!call->req_done) {
        call->req_done = true;
        call_decode(call);
    }
    pthread_mutex_unlock(&call->req_mu);
    return call->request;
}

int grpc_call_request_error(const struct grpc_call *ccall, const char **message)
{
    struct grpc_call *call = (struct grpc_call *)ccall;
    pthread_mutex_lock(&call->req_mu);
    int status = call->req_done ? call->req_status : GRPC_STATUS_OK;
    *message = call->req_done ? call->req_error : NULL;
    pthread_mutex_unlock(&call->req_mu);
    return status;
}

const char *grpc_call_method(const struct grpc_call *call)
{
    return call->path != NULL ? call->path : "";
}

const char *grpc_call_metadata(const struct grpc_call *call, const char *key)
{
    for (size_t i = 0; i < call->n_meta; i++) {
        if (strcmp(call->meta[i].key, key) == 0) {
            return call->meta[i].value;
        }
    }
    return NULL;
}

size_t grpc_call_metadata_count(const struct grpc_call *call)
{
    return call->n_meta;
}

void grpc_call_metadata_at(const struct grpc_call *call, size_t i, const char **key, const char **value)
{
    *key = call->meta[i].key;
    *value = call->meta[i].value;
}

const char *grpc_call_peer(const struct grpc_call *call)
{
    return call->peer;
}

bool grpc_call_tls(const struct grpc_call *call)
{
    return call->tls;
}

X509 *grpc_call_peer_cert(const struct grpc_call *call)
{
    return call->peer_cert;
}

uint64_t grpc_call_deadline_ms(const struct grpc_call *call)
{
    return call->deadline_ms;
}

struct arena *grpc_call_arena(struct grpc_call *call)
{
    return &call->arena;
}

void grpc_call_set_tag(struct grpc_call *call, uint32_t tag)
{
    atomic_store(&call->tag, tag);
}

uint32_t grpc_call_tag(const struct grpc_call *call)
{
    return atomic_load(&((struct grpc_call *)call)->tag);
}

void grpc__outcome(const struct grpc_call *call, int status)
{
    const struct grpc_server *s = call->server;
    if (s->outcome_cb != NULL) {
        s->outcome_cb(s->outcome_data, call, status);
    }
}

void grpc_call_set_data(struct grpc_call *call, void *data)
{
    call->user = data;
}

void *grpc_call_get_data(const struct grpc_call *call)
{
    return call->user;
}

bool grpc_call_cancelled(const struct grpc_call *call)
{
    return atomic_load(&call->cancelled);
}

uv_loop_t *grpc_call_loop(const struct grpc_call *call)
{
    return call->server->loop;
}
