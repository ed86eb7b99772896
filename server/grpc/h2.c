/* One HTTP/2 connection: the socket, TLS, the nghttp2 session, flushing and the connection timers.
 *
 * The happy path: accept -> (TLS handshake with ALPN h2) -> nghttp2 server session with our
 * SETTINGS -> reads feed nghttp2_session_mem_recv, whose callbacks route stream events to call.c
 * -> after each batch of input (or an answer from a handler, timer or another thread) flush pulls
 * frames out of nghttp2, encrypts them and hands them to uv_write.
 *
 * Failure modes: read error or EOF, TLS failure, an HTTP/2 protocol error (nghttp2 queues a GOAWAY
 * which we try to send), keepalive PING not acknowledged, idle timeout (GOAWAY), or server
 * shutdown. Each ends in h2__conn_close(), the one teardown: every open call is cancelled, the
 * session and TLS are freed, and the handles close; the memory goes in the last close callback.
 *
 * Backpressure: once write_pending (bytes given to the kernel and not yet written) passes a
 * high-water mark we stop pulling frames from nghttp2 and stop reading the socket, so a client
 * that does not read cannot make us buffer without bound; the write callback resumes both.
 *
 * The connection budget (server.h): at accept, per-source and overall limits are checked before
 * TLS or nghttp2 state is allocated; an idle unproven connection may be evicted to make room.
 * A connection must finish its handshake (TLS, and the client's first SETTINGS frame) within
 * handshake_timeout_ms, and one without stream activity for idle_timeout_ms gets a GOAWAY. */
#include <arpa/inet.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/uverr.h"
#include "server/grpc/internal.h"

#define H2_WRITE_HIGH  (1u << 20) /* stop pulling frames / reading above this many unsent bytes */
#define H2_WRITE_CHUNK (64u << 10)
#define H2_LINGER_MS   1000

struct h2_write {
    uv_write_t req;
    struct h2_conn *conn;
    uint8_t *data;
    size_t len;
};

int h2__err_from_nghttp2(int rv, char *errmsg)
{
    if (errmsg != NULL) {
        gerr_set(errmsg, "nghttp2: %s", nghttp2_strerror(rv));
    }
    switch (rv) {
    case 0:
        return 0;
    case NGHTTP2_ERR_NOMEM:
        return GERR_NOMEM;
    case NGHTTP2_ERR_INVALID_ARGUMENT:
    case NGHTTP2_ERR_INVALID_STATE:
    case NGHTTP2_ERR_STREAM_CLOSED:
    case NGHTTP2_ERR_STREAM_CLOSING:
    case NGHTTP2_ERR_STREAM_SHUT_WR:
        return GERR_INVAL;
    case NGHTTP2_ERR_EOF:
        return GERR_CLOSED;
    case NGHTTP2_ERR_CALLBACK_FAILURE:
        return GERR_INTERNAL;
    default:
        return GERR_PROTO; /* bad client preface, flow control, framing, HPACK ... */
    }
}

static uint64_t h2_now_ms(void)
{
    return clock_mono_ms(clock_system());
}

/* --- nghttp2 callbacks: route to call.c --- */

static int h2_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct grpc_call *call = grpc__call_new(c, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
    c->last_active_ms = h2_now_ms(); /* only streams count as activity, not PINGs */
    return 0;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)flags;
    struct h2_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call == NULL) {
        return 0;
    }
    /* Trailers from the client (HCAT_HEADERS) carry nothing gRPC uses, but they are counted
     * against the limit like the request headers. */
    int rv = frame->headers.cat == NGHTTP2_HCAT_REQUEST
                 ? grpc__call_header(call, name, namelen, value, valuelen)
                 : grpc__call_header_bytes(call, namelen, valuelen);
    if (rv == 0) {
        return 0;
    }
    /* Over max_header_list_bytes. A small header block can decode into an enormous list (an
     * HPACK bomb: one large entry in the dynamic table, referenced a byte at a time), and
     * decoding it all costs the loop thread dearly. Stop here: the rest of the block cannot be
     * skipped without decoding it (the HPACK state would be lost), so the connection ends. The
     * stream was answered RESOURCE_EXHAUSTED; a GOAWAY (ENHANCE_YOUR_CALM) naming it as the
     * last processed follows, and h2_read_cb sends both and closes. */
    c->header_abort = true;
    snprintf(c->errmsg, sizeof(c->errmsg), "request headers over the limit of %u bytes: connection closed",
             c->server->cfg.max_header_list_bytes);
    nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_ENHANCE_YOUR_CALM, NULL,
                          0);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *c = user;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        /* nghttp2 checked the preface; its first frame is SETTINGS: the handshake is done. */
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->handshake_done) {
            c->handshake_done = true;
            uv_timer_stop(&c->hs_timer);
        }
        return 0;
    case NGHTTP2_HEADERS: {
        struct grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (call == NULL) {
            return 0;
        }
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            grpc__call_headers_done(call);
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            grpc__call_end_stream(call);
        }
        return 0;
    }
    case NGHTTP2_DATA: {
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            struct grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
            if (call != NULL) {
                grpc__call_end_stream(call);
            }
        }
        return 0;
    }
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_outstanding = false;
        }
        return 0;
    default:
        return 0;
    }
}

static int h2_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                            size_t len, void *user)
{
    (void)flags;
    (void)user;
    struct grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (call == NULL) {
        nghttp2_session_consume(session, stream_id, len); /* nobody wants it: reopen the window */
        return 0;
    }
    grpc__call_data(call, data, len); /* consumes what it takes (flow control is by hand) */
    return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    struct h2_conn *c = user;
    c->last_active_ms = h2_now_ms();
    struct grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (call != NULL) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        grpc__call_stream_closed(call, error_code);
    }
    return 0;
}

static int h2_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    (void)user;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (call != NULL) {
            grpc__call_sent_end(call);
        }
    }
    return 0;
}

int h2__callbacks_new(nghttp2_session_callbacks **out)
{
    nghttp2_session_callbacks *cbs;
    int rv = nghttp2_session_callbacks_new(&cbs);
    if (rv != 0) {
        return h2__err_from_nghttp2(rv, NULL);
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2_on_frame_send);
    *out = cbs;
    return 0;
}

/* --- The connection budget --- */

static struct grpc__source *h2_source(struct grpc_server *s, const struct h2_conn *c)
{
    for (size_t i = 0; i < s->n_sources; i++) {
        struct grpc__source *src = &s->sources[i];
        if (src->family == c->src_family && memcmp(src->addr, c->src_addr, sizeof(src->addr)) == 0) {
            return src;
        }
    }
    return NULL;
}

/* Count @c (just admitted) against the budget. */
static void h2_count(struct grpc_server *s, struct h2_conn *c)
{
    struct grpc__source *src = h2_source(s, c);
    if (src == NULL) {
        if (s->n_sources == s->cap_sources) {
            s->cap_sources = s->cap_sources == 0 ? 16 : s->cap_sources * 2;
            s->sources = mem_realloc(s->sources, s->cap_sources * sizeof(*s->sources));
        }
        src = &s->sources[s->n_sources++];
        memset(src, 0, sizeof(*src));
        memcpy(src->addr, c->src_addr, sizeof(src->addr));
        src->family = c->src_family;
    }
    src->live++;
    src->unproven++;
    s->n_live++;
    c->counted = true;
}

/* @c is closing or evicted: it no longer takes room. Safe to call twice. */
static void h2_uncount(struct grpc_server *s, struct h2_conn *c)
{
    if (!c->counted) {
        return;
    }
    c->counted = false;
    s->n_live--;
    if (c->established) {
        s->n_established--;
    }
    struct grpc__source *src = h2_source(s, c);
    if (src == NULL) {
        return;
    }
    if (!c->established) {
        src->unproven--;
    }
    if (--src->live == 0) {
        *src = s->sources[--s->n_sources]; /* unordered: move the last one here */
    }
}

void h2__conn_established(struct h2_conn *c)
{
    if (c->established) {
        return;
    }
    c->established = true;
    if (!c->counted) {
        return;
    }
    c->server->n_established++;
    struct grpc__source *src = h2_source(c->server, c);
    if (src != NULL) {
        src->unproven--;
    }
    LOG_DEBUG("grpc: connection from %s established", c->peer);
}

/* The unproven connection with no call at its handler from the address with the most unproven
 * connections (the oldest of those: s->conns is in accept order), else the oldest such
 * connection from anywhere, else NULL. Preferring the busiest address keeps one source's flood
 * from evicting everyone else's new connections. */
static struct h2_conn *h2_victim(struct grpc_server *s)
{
    const struct grpc__source *worst = NULL;
    for (size_t i = 0; i < s->n_sources; i++) {
        if (s->sources[i].unproven > 0 && (worst == NULL || s->sources[i].unproven > worst->unproven)) {
            worst = &s->sources[i];
        }
    }
    struct h2_conn *oldest = NULL;
    struct queue *q;
    QUEUE_FOREACH (q, &s->conns) {
        struct h2_conn *c = QUEUE_DATA(q, struct h2_conn, link);
        if (!c->counted || c->established || c->n_dispatched > 0) {
            continue;
        }
        if (worst != NULL && c->src_family == worst->family &&
            memcmp(c->src_addr, worst->addr, sizeof(c->src_addr)) == 0) {
            return c;
        }
        if (oldest == NULL) {
            oldest = c;
        }
    }
    return oldest;
}

static void h2_close_after_write(struct h2_conn *c, const char *why);

/* Make room: GOAWAY (NO_ERROR: a legitimate client retries elsewhere or reconnects) and close. */
static void h2_evict(struct h2_conn *c)
{
    struct grpc_server *s = c->server;
    s->conns_evicted++;
    h2_uncount(s, c);
    LOG_DEBUG("grpc: evicting idle unproven connection from %s to admit a new one", c->peer);
    if (c->session != NULL && c->handshake_done && !c->goaway) {
        c->goaway = true;
        nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR, NULL, 0);
        h2__conn_flush(c);
    }
    h2_close_after_write(c, "evicted: the connection budget is full");
}

/* Refusals are logged once per window with the count of those not logged since: a flood must
 * not turn into a flood of log lines. */
#define H2_REFUSAL_LOG_WINDOW_MS 10000

static void h2_log_refusal(struct grpc_server *s, const char *peer, const char *why)
{
    uint64_t now = h2_now_ms();
    if (s->refusal_log_ms != 0 && now - s->refusal_log_ms < H2_REFUSAL_LOG_WINDOW_MS) {
        s->refusals_unlogged++;
        return;
    }
    if (s->refusals_unlogged > 0) {
        LOG_WARN("grpc: %llu more connection(s) refused in the last %llu s",
                 (unsigned long long)s->refusals_unlogged,
                 (unsigned long long)((now - s->refusal_log_ms) / 1000));
    }
    LOG_WARN("grpc: connection from %s refused: %s", peer, why);
    s->refusal_log_ms = now;
    s->refusals_unlogged = 0;
}

/* Whether a new connection from @c's address may come in; may evict another to make room.
 * Returns NULL or why not. */
static const char *h2_admit(struct grpc_server *s, struct h2_conn *c)
{
    const struct grpc_server_config *cfg = &s->cfg;
    const struct grpc__source *src = h2_source(s, c);
    if (cfg->max_connections_per_source > 0 && src != NULL && src->live >= cfg->max_connections_per_source) {
        s->conns_rejected_source++;
        return "too many connections from this address (max_connections_per_source)";
    }
    size_t reserve = (size_t)cfg->max_connections * cfg->established_reserve_percent / 100;
    size_t unproven_cap = cfg->max_connections > reserve ? cfg->max_connections - reserve : 1;
    if (s->n_live < cfg->max_connections && s->n_live - s->n_established < unproven_cap) {
        return NULL;
    }
    struct h2_conn *victim = h2_victim(s);
    if (victim == NULL) {
        s->conns_rejected++;
        return s->n_live >= cfg->max_connections ? "too many connections (max_connections)"
                                                 : "too many connections not established yet (the rest "
                                                   "is reserved: established_reserve_percent)";
    }
    h2_evict(victim);
    return NULL;
}

/* --- Teardown --- */

static void h2_conn_handle_closed(uv_handle_t *h)
{
    struct h2_conn *c = h->data;
    if (--c->handles_open > 0) {
        return;
    }
    struct grpc_server *s = c->server;
    buf_close(&c->out);
    mem_free(c);
    grpc__conn_gone(s, c);
}

void h2__conn_close(struct h2_conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    h2_uncount(c->server, c);
    LOG_DEBUG("grpc: closing connection from %s: %s", c->peer, why);
    /* Cancel every open call first: the session still exists, so their stream user data can be
     * cleared, and handlers learn of it through on_cancel. */
    struct queue *q;
    while ((q = queue_head(&c->calls)) != NULL) {
        struct grpc_call *call = QUEUE_DATA(q, struct grpc_call, link);
        if (c->session != NULL) {
            nghttp2_session_set_stream_user_data(c->session, call->stream_id, NULL);
        }
        grpc__call_stream_closed(call, NGHTTP2_CANCEL);
    }
    if (c->session != NULL) {
        nghttp2_session_del(c->session);
        c->session = NULL;
    }
    if (c->use_tls) {
        tls_session_close(&c->tls);
    }
    if (c->peer_cert != NULL) {
        X509_free(c->peer_cert);
        c->peer_cert = NULL;
    }
    queue_remove(&c->link);
    uv_close((uv_handle_t *)&c->idle_timer, h2_conn_handle_closed);
    uv_close((uv_handle_t *)&c->ping_timer, h2_conn_handle_closed);
    uv_close((uv_handle_t *)&c->hs_timer, h2_conn_handle_closed);
    if (c->has_socket) {
        uv_close((uv_handle_t *)&c->tcp, h2_conn_handle_closed);
    }
}

/* --- Writing --- */

static void h2_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void h2_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

static void h2_write_cb(uv_write_t *req, int status)
{
    struct h2_write *w = (struct h2_write *)req;
    struct h2_conn *c = w->conn;
    c->write_pending -= w->len;
    mem_free(w->data);
    mem_free(w);
    if (c->closing) {
        return;
    }
    if (status < 0) {
        uverr_to_gerr(status, c->errmsg);
        h2__conn_close(c, c->errmsg);
        return;
    }
    if (c->close_when_written) {
        if (c->write_pending == 0) {
            h2__conn_close(c, c->errmsg);
        }
        return;
    }
    h2__conn_flush(c);
}

/* Hand c->out to the kernel. Returns 0 or an error (the caller closes). */
static int h2_write_out(struct h2_conn *c)
{
    if (c->use_tls && c->tls.established) {
        /* c->out holds HTTP/2 plaintext: swap in the ciphertext (plus anything OpenSSL queued
         * itself, such as TLS 1.3 session tickets). */
        struct buf plain = c->out;
        buf_init(&c->out);
        int rv = plain.len > 0 ? tls_session_write(&c->tls, plain.data, plain.len, c->errmsg) : 0;
        buf_close(&plain);
        if (rv != 0) {
            return rv;
        }
        tls_session_pending_out(&c->tls, &c->out);
    }
    if (c->out.len == 0) {
        return 0;
    }
    if (!c->has_socket) {
        buf_reset(&c->out); /* detached (fuzzing): the output goes nowhere */
        return 0;
    }
    struct h2_write *w = mem_alloc(sizeof(*w));
    w->conn = c;
    w->data = c->out.data; /* ownership moves to the write request */
    w->len = c->out.len;
    buf_init(&c->out);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned int)w->len);
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, h2_write_cb);
    if (rv != 0) {
        mem_free(w->data);
        mem_free(w);
        return uverr_to_gerr(rv, c->errmsg);
    }
    c->write_pending += w->len;
    return 0;
}

static void h2_linger_cb(uv_timer_t *t)
{
    h2__conn_close(t->data, "GOAWAY sent, streams done, linger over");
}

/* After a graceful GOAWAY with nothing left to do, give the client a moment to close first:
 * closing at once races a client that is just starting a call on this connection (it would
 * see "socket closed" instead of the GOAWAY). EOF from the client or the timer ends it. */
static void h2_linger(struct h2_conn *c)
{
    if (c->lingering) {
        return;
    }
    c->lingering = true;
    uv_timer_stop(&c->ping_timer);
    uv_timer_start(&c->idle_timer, h2_linger_cb, H2_LINGER_MS, 0);
}

/* A fatal error: send what is queued (a TLS alert, nghttp2's GOAWAY), then close. */
static void h2_close_after_write(struct h2_conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    if (why != c->errmsg) {
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", why);
    }
    if (c->use_tls && c->tls.ssl != NULL && !c->tls.established) {
        tls_session_pending_out(&c->tls, &c->out); /* the handshake's alert */
    }
    if (h2_write_out(c) != 0 || c->write_pending == 0) {
        h2__conn_close(c, c->errmsg);
        return;
    }
    c->close_when_written = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

void h2__conn_flush(struct h2_conn *c)
{
    if (c->closing || c->session == NULL || c->close_when_written) {
        return;
    }
    if (c->in_recv) {
        c->want_flush = true; /* nghttp2 is running: the outermost flush picks this up */
        return;
    }
    if (c->use_tls && !c->tls.established) {
        return; /* nothing but the handshake may go out yet */
    }
    do {
        c->want_flush = false;
        while (c->write_pending + c->out.len < H2_WRITE_HIGH) {
            const uint8_t *data;
            c->in_recv = true;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            c->in_recv = false;
            if (n < 0) {
                h2__err_from_nghttp2((int)n, c->errmsg);
                h2__conn_close(c, c->errmsg);
                return;
            }
            if (n == 0) {
                break;
            }
            /* With TLS, c->out collects plaintext and is encrypted in one go (few, full
             * records) by h2_write_out. */
            buf_append(&c->out, data, (size_t)n);
            if (c->out.len >= H2_WRITE_CHUNK && h2_write_out(c) != 0) {
                h2__conn_close(c, c->errmsg);
                return;
            }
        }
        if (c->drain_waiting) {
            /* Handlers may queue more output; their flushes are deferred to this loop. */
            c->in_recv = true;
            grpc__conn_notify_drain(c);
            c->in_recv = false;
            c->want_flush = true;
        }
        if (c->closing) {
            return;
        }
    } while (c->want_flush && c->write_pending + c->out.len < H2_WRITE_HIGH);
    if (h2_write_out(c) != 0) {
        h2__conn_close(c, c->errmsg);
        return;
    }
    /* Backpressure on the reading side. */
    if (c->has_socket) {
        if (c->write_pending >= H2_WRITE_HIGH && c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        } else if (c->write_pending < H2_WRITE_HIGH && !c->reading) {
            if (uv_read_start((uv_stream_t *)&c->tcp, h2_alloc_cb, h2_read_cb) == 0) {
                c->reading = true;
            }
        }
    }
    bool done = !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session);
    if (c->goaway && c->n_streams == 0 && !nghttp2_session_want_write(c->session)) {
        done = true;
    }
    if (done && c->write_pending == 0) {
        if (c->goaway && c->has_socket) {
            h2_linger(c);
            return;
        }
        h2__conn_close(c, c->goaway ? "GOAWAY sent and streams done" : "session finished");
    }
}

/* --- Reading --- */

int h2__conn_recv(struct h2_conn *c, const uint8_t *data, size_t len)
{
    c->in_recv = true;
    ssize_t n = nghttp2_session_mem_recv(c->session, data, len);
    c->in_recv = false;
    if (n < 0 && c->header_abort) {
        return GERR_TOOBIG; /* c->errmsg says why */
    }
    if (n < 0) {
        return h2__err_from_nghttp2((int)n, c->errmsg);
    }
    return 0;
}

static void h2_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct h2_conn *c = h->data;
    /* One buffer for all connections: read_cb consumes it synchronously. */
    *b = uv_buf_init((char *)c->server->read_buf, sizeof(c->server->read_buf));
}

static void h2_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct h2_conn *c = stream->data;
    if (c->closing || c->close_when_written) {
        return;
    }
    if (nread < 0) {
        uverr_to_gerr((int)nread, c->errmsg);
        h2__conn_close(c, c->errmsg);
        return;
    }
    if (nread == 0) {
        return;
    }
    int rv;
    if (!c->use_tls) {
        rv = h2__conn_recv(c, (const uint8_t *)b->base, (size_t)nread);
    } else {
        rv = tls_session_feed(&c->tls, b->base, (size_t)nread, c->errmsg);
        if (rv == 0 && c->tls.established && c->peer_cert == NULL) {
            X509 *cert = tls_session_peer_cert(&c->tls);
            if (cert != NULL && X509_up_ref(cert) == 1) {
                c->peer_cert = cert;
            }
        }
        if (rv == 0 && !c->tls.established) {
            /* Handshake in progress: send what it produced. */
            tls_session_pending_out(&c->tls, &c->out);
            if (h2_write_out(c) != 0) {
                h2__conn_close(c, c->errmsg);
            }
            return;
        }
        /* Decrypt into a stack buffer, never the shared read buffer (it holds the input). */
        uint8_t plain[16384];
        while (rv == 0) {
            long n = tls_session_read(&c->tls, plain, sizeof(plain), c->errmsg);
            if (n < 0) {
                rv = (int)-n;
                break;
            }
            if (n == 0) {
                break;
            }
            rv = h2__conn_recv(c, plain, (size_t)n);
            if (c->closing) {
                return;
            }
        }
    }
    if (rv != 0) {
        /* nghttp2 may have queued a GOAWAY explaining the protocol error: send it first. */
        char why[GERR_MSG_SIZE];
        snprintf(why, sizeof(why), "%s", c->errmsg);
        c->want_flush = false;
        h2__conn_flush(c);
        h2_close_after_write(c, why);
        return;
    }
    h2__conn_flush(c);
}

/* --- Timers --- */

static void h2_idle_timer_cb(uv_timer_t *t)
{
    struct h2_conn *c = t->data;
    uint64_t idle = c->server->cfg.idle_timeout_ms;
    if (c->closing || c->session == NULL || c->goaway || idle == 0) {
        return;
    }
    if (c->n_streams == 0 && h2_now_ms() - c->last_active_ms >= idle) {
        LOG_DEBUG("grpc: connection from %s idle for %llu ms: GOAWAY", c->peer, (unsigned long long)idle);
        h2__conn_goaway(c);
    }
}

static void h2_ping_timer_cb(uv_timer_t *t)
{
    struct h2_conn *c = t->data;
    if (c->closing || c->session == NULL) {
        return;
    }
    uint64_t now = h2_now_ms();
    if (c->ping_outstanding) {
        if (now - c->ping_sent_ms >= c->server->cfg.keepalive_timeout_ms) {
            h2__conn_close(c, "keepalive PING not acknowledged in time");
        }
        return;
    }
    /* Only connections with open streams are probed: a dead peer under a long Watch must be
     * noticed, while idle connections are the idle timeout's business (and many clients do not
     * read an idle connection, so they could not answer). */
    if (c->n_streams == 0) {
        return;
    }
    if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) == 0) {
        c->ping_outstanding = true;
        c->ping_sent_ms = now;
        h2__conn_flush(c);
    }
}

void h2__conn_goaway(struct h2_conn *c)
{
    if (c->closing || c->session == NULL || c->goaway) {
        return;
    }
    if (c->use_tls && !c->tls.established) {
        h2__conn_close(c, "shutting down during the TLS handshake");
        return;
    }
    c->goaway = true;
    int32_t last = nghttp2_session_get_last_proc_stream_id(c->session);
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    h2__conn_flush(c);
}

static void h2_handshake_timer_cb(uv_timer_t *t)
{
    struct h2_conn *c = t->data;
    if (c->closing || c->handshake_done) {
        return;
    }
    c->server->handshake_timeouts++;
    snprintf(c->errmsg, sizeof(c->errmsg), "handshake not completed within %llu ms",
             (unsigned long long)c->server->cfg.handshake_timeout_ms);
    h2__conn_close(c, c->errmsg);
}

/* --- Setup --- */

static void h2_peer_name(struct h2_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "unknown");
    if (!c->has_socket || uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) {
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        uv_ip4_name(sin, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", ip, ntohs(sin->sin_port));
        c->src_family = AF_INET;
        memcpy(c->src_addr, &sin->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(sin6, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", ip, ntohs(sin6->sin6_port));
        c->src_family = AF_INET6;
        memcpy(c->src_addr, &sin6->sin6_addr, 16);
    }
}

int h2__conn_init(struct h2_conn *c, struct grpc_server *s, bool has_socket)
{
    c->server = s;
    c->has_socket = has_socket;
    c->use_tls = s->tls != NULL && has_socket;
    queue_init(&c->calls);
    queue_init(&c->link);
    buf_init(&c->out);
    c->last_active_ms = h2_now_ms();
    c->tcp.data = c;
    uv_timer_init(s->loop, &c->idle_timer);
    uv_timer_init(s->loop, &c->ping_timer);
    uv_timer_init(s->loop, &c->hs_timer);
    c->idle_timer.data = c;
    c->ping_timer.data = c;
    c->hs_timer.data = c;
    c->handles_open = has_socket ? 4 : 3;
    queue_insert_tail(&s->conns, &c->link);
    s->n_conns++;
    s->conns_total++;
    if (c->peer[0] == '\0') {
        h2_peer_name(c);
    }
    h2_count(s, c);
    if (has_socket && s->cfg.handshake_timeout_ms > 0) {
        uv_timer_start(&c->hs_timer, h2_handshake_timer_cb, s->cfg.handshake_timeout_ms, 0);
    }

    int rv;
    if (c->use_tls) {
        pthread_mutex_lock(&s->tls_mu); /* the SSL object takes its own reference to the context */
        rv = tls_session_init(&c->tls, s->tls, c->errmsg);
        pthread_mutex_unlock(&s->tls_mu);
    } else {
        rv = 0;
    }
    if (rv != 0) {
        c->use_tls = false;
        return rv;
    }
    rv = nghttp2_session_server_new2(&c->session, s->callbacks, c, s->options);
    if (rv != 0) {
        c->session = NULL;
        return h2__err_from_nghttp2(rv, c->errmsg);
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->cfg.max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->cfg.max_header_list_bytes},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
    };
    rv = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0) {
        /* Open the connection window beyond the default 64 KiB so streams are not starved. */
        rv = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 8 << 20);
    }
    if (rv != 0) {
        return h2__err_from_nghttp2(rv, c->errmsg);
    }
    if (s->cfg.idle_timeout_ms > 0) {
        uint64_t every = s->cfg.idle_timeout_ms / 4 + 1;
        uv_timer_start(&c->idle_timer, h2_idle_timer_cb, every, every);
    }
    if (s->cfg.keepalive_ms > 0) {
        uint64_t every = s->cfg.keepalive_ms;
        if (s->cfg.keepalive_timeout_ms > 0 && s->cfg.keepalive_timeout_ms < every) {
            every = s->cfg.keepalive_timeout_ms; /* check for a late ACK at least this often */
        }
        uv_timer_start(&c->ping_timer, h2_ping_timer_cb, s->cfg.keepalive_ms, every);
    }
    return 0;
}

void h2__conn_accept(struct grpc_server *s)
{
    struct h2_conn *c = mem_zalloc(sizeof(*c));
    int rv = uv_tcp_init(s->loop, &c->tcp);
    if (rv != 0) {
        mem_free(c);
        LOG_WARN("grpc: uv_tcp_init: %s", uv_strerror(rv));
        return;
    }
    c->tcp.data = c;
    c->server = s;
    c->has_socket = true;
    rv = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp);
    const char *refused = rv != 0 ? "accept failed" : NULL;
    if (refused == NULL) {
        h2_peer_name(c);
        refused = h2_admit(s, c);
        if (refused != NULL) {
            h2_log_refusal(s, c->peer, refused);
        }
    }
    if (refused != NULL) {
        /* Closed bare: no TLS or nghttp2 state was allocated for it. */
        c->handles_open = 1;
        c->closing = true;
        buf_init(&c->out);
        queue_init(&c->link);
        s->n_conns++; /* balanced in grpc__conn_gone */
        uv_close((uv_handle_t *)&c->tcp, h2_conn_handle_closed);
        return;
    }
    rv = h2__conn_init(c, s, true);
    if (rv != 0) {
        LOG_WARN("grpc: connection from %s refused: %s", c->peer, c->errmsg);
        h2__conn_close(c, c->errmsg);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    rv = uv_read_start((uv_stream_t *)&c->tcp, h2_alloc_cb, h2_read_cb);
    if (rv != 0) {
        uverr_to_gerr(rv, c->errmsg);
        h2__conn_close(c, c->errmsg);
        return;
    }
    c->reading = true;
    if (!c->use_tls) {
        h2__conn_flush(c); /* our SETTINGS */
    }
    /* With TLS, SETTINGS go out with the first flush after the handshake. */
}
