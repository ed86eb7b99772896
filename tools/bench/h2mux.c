/* h2mux: a multiplexing gRPC client on one poll(2) loop (see h2mux.h).
 *
 * Happy path, per connection: non-blocking TCP connect -> non-blocking TLS handshake (ALPN h2, the
 * CA, the server name) -> nghttp2 client session (SETTINGS with large windows) -> READY. The loop
 * asks the workload for a call whenever a READY connection has a free stream slot, packs it,
 * submits it with nghttp2, and writes what nghttp2 produces through SSL_write; what SSL_read
 * returns goes to nghttp2, whose callbacks collect headers, data and trailers; a closed stream is
 * one finished call, reported to the workload.
 *
 * Failure modes: connect refused or timed out, certificate not trusted, no ALPN h2 (the
 * connection tries its next target after a backoff); EOF, reset, TLS or HTTP/2 errors on a READY
 * connection (every open call is reported, then the connection reconnects); GOAWAY (no new calls;
 * reconnect once the open ones are done); a call without an answer past its deadline (cancelled
 * and reported). nghttp2 callbacks never tear a connection down themselves: they set flags that the
 * loop acts on after nghttp2 returns. */
#include "h2mux.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/mem.h"
#include "lib/sslerr.h"

#define MAX_RESPONSE_BYTES (64u << 20)
#define BACKOFF_MIN_MS     20u
#define BACKOFF_MAX_MS     500u
#define LOOP_TICK_MS       5
#define TIMEOUT_SLACK_MS   1000u
#define WINDOW_BYTES       (16 << 20)

enum conn_state {
    CONN_IDLE,       /* not connected; (re)connects at retry_at_ms */
    CONN_CONNECTING, /* TCP connect in progress */
    CONN_HANDSHAKE,  /* TLS handshake in progress */
    CONN_READY,      /* HTTP/2 session up */
};

struct mux_conn;

struct mux_call {
    struct mux_call *prev, *next; /* in the connection's list of open streams */
    struct mux_conn *conn;
    int32_t stream_id;
    uint64_t tag;
    uint64_t sent_us;
    uint8_t *req; /* the gRPC frame: 5-byte prefix + message */
    size_t req_len, req_off;
    struct buf resp;
    int grpc_status; /* -1 until seen */
    int http_status;
    bool too_big;
    bool streaming;  /* messages go to workload.message as they arrive (h2mux_req.streaming) */
    bool bad_stream; /* a streamed message was compressed or too large: reset, reported bad-reply */
    bool reported;   /* given to the workload already (a cancelled call waiting for its stream to close) */
    char message[256];
};

struct mux_conn {
    struct h2mux *m;
    unsigned index;
    char targets[H2MUX_MAX_TARGETS][64];
    unsigned n_targets, cur;
    unsigned streams;         /* concurrent calls on this connection */
    unsigned failed_in_cycle; /* consecutive connect failures since the last success */
    enum conn_state state;
    int fd;
    SSL *ssl;
    nghttp2_session *h2;
    bool hs_wants_write;   /* handshake: poll for POLLOUT rather than POLLIN */
    bool read_wants_write; /* SSL_read asked for a write (TLS 1.3 key update) */
    bool write_blocked;    /* SSL_write said WANT_WRITE */
    bool got_settings;     /* the server's SETTINGS arrived */
    bool goaway;
    int32_t goaway_last_id;
    bool broken; /* set by callbacks: tear down after nghttp2 returns */
    struct buf out;
    size_t out_off;
    struct mux_call *calls; /* open streams */
    unsigned open;          /* calls not yet reported */
    uint64_t deadline_ms;   /* of the connect or handshake in progress */
    uint64_t retry_at_ms;
    unsigned backoff_ms;
    int err;
    char errmsg[GERR_MSG_SIZE];
};

struct h2mux {
    SSL_CTX *ctx;
    char server_name[256];
    char authorization[1024];
    bool has_auth;
    unsigned streams;
    unsigned call_timeout_ms;
    unsigned connect_timeout_ms;
    struct mux_conn **conns;
    unsigned n_conns;
    const struct h2mux_workload *w; /* during h2mux_run */
    bool stopping;                  /* the workload said H2MUX_STOP */
    uint64_t unreported;            /* calls submitted and not yet reported */
    struct h2mux_stats stats;
    char grpc_timeout[32];
    struct pollfd *pfd; /* one per connection */
};

uint64_t h2mux_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_ms(void)
{
    return h2mux_now_us() / 1000u;
}

const char *h2mux_status_name(int status)
{
    static const char *const names[] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
    };
    switch (status) {
    case H2MUX_TRANSPORT:
        return "transport";
    case H2MUX_TIMEOUT:
        return "timeout";
    case H2MUX_REFUSED:
        return "refused";
    case H2MUX_BAD_REPLY:
        return "bad-reply";
    default:
        return status >= 0 && status <= 16 ? names[status] : "status?";
    }
}

/* ---- Reporting calls. */

static void call_unlink(struct mux_call *c)
{
    struct mux_conn *conn = c->conn;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        conn->calls = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void call_free(struct mux_call *c)
{
    buf_close(&c->resp);
    mem_free(c->req);
    mem_free(c);
}

static void report(struct mux_call *c, int status, const char *message, const uint8_t *body, size_t len)
{
    struct mux_conn *conn = c->conn;
    struct h2mux *m = conn->m;
    if (c->reported) {
        return;
    }
    c->reported = true;
    conn->open--;
    m->unreported--;
    struct h2mux_result r = {
        .tag = c->tag,
        .conn = conn->index,
        .status = status,
        .message = message != NULL ? message : "",
        .body = body,
        .body_len = len,
        .sent_us = c->sent_us,
        .done_us = h2mux_now_us(),
    };
    if (m->w != NULL) {
        m->w->done(m->w->arg, &r);
    }
}

/* The outcome of a call whose stream closed with @error_code. */
static void finish_call(struct mux_call *c, uint32_t error_code)
{
    char msg[320];
    if (c->reported) {
        return;
    }
    if (error_code == NGHTTP2_REFUSED_STREAM) {
        report(c, H2MUX_REFUSED, "stream refused by the server (not processed)", NULL, 0);
    } else if (c->bad_stream) {
        report(c, H2MUX_BAD_REPLY, "a streamed message was compressed or larger than 64 MiB", NULL, 0);
    } else if (c->grpc_status >= 0 && c->streaming) {
        if (c->grpc_status != 0) {
            report(c, c->grpc_status, c->message, NULL, 0);
        } else if (c->resp.len != 0) {
            report(c, H2MUX_BAD_REPLY, "the stream ended inside a message", NULL, 0);
        } else {
            report(c, 0, "", NULL, 0);
        }
    } else if (c->grpc_status >= 0) {
        const uint8_t *p = c->resp.data;
        if (c->grpc_status != 0) {
            report(c, c->grpc_status, c->message, NULL, 0);
        } else if (c->too_big) {
            report(c, H2MUX_BAD_REPLY, "response larger than 64 MiB", NULL, 0);
        } else if (c->resp.len == 0) {
            report(c, 0, "", (const uint8_t *)"", 0);
        } else if (c->resp.len < 5 || p[0] != 0 ||
                   ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]) !=
                       c->resp.len - 5) {
            report(c, H2MUX_BAD_REPLY, "response is not exactly one uncompressed gRPC message", NULL, 0);
        } else {
            report(c, 0, "", p + 5, c->resp.len - 5);
        }
    } else if (error_code != 0) {
        snprintf(msg, sizeof msg, "stream reset: %s", nghttp2_http2_strerror(error_code));
        report(c, H2MUX_TRANSPORT, msg, NULL, 0);
    } else {
        snprintf(msg, sizeof msg, "no grpc-status (HTTP status %d)", c->http_status);
        report(c, H2MUX_BAD_REPLY, msg, NULL, 0);
    }
}

/* ---- nghttp2 callbacks (they only record; the loop acts). */

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
    (void)flags;
    (void)arg;
    struct mux_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (c == NULL) {
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        c->http_status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) {
            c->http_status = c->http_status * 10 + (value[i] - '0');
        }
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 2; i++) {
            st = value[i] >= '0' && value[i] <= '9' ? st * 10 + (value[i] - '0') : 2;
        }
        c->grpc_status = valuelen == 0 || valuelen > 2 || st > 16 ? 2 : st;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof c->message - 1 ? valuelen : sizeof c->message - 1;
        memcpy(c->message, value, n); /* percent-encoded; shown as is */
        c->message[n] = '\0';
    }
    return 0;
}

/* A streaming call's buffer: hand every complete message to the workload, keep the rest. */
static void stream_messages(nghttp2_session *s, struct mux_call *c)
{
    struct h2mux *m = c->conn->m;
    size_t off = 0;
    uint64_t now = h2mux_now_us();
    while (c->resp.len - off >= 5) {
        const uint8_t *p = c->resp.data + off;
        uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] != 0 || n > MAX_RESPONSE_BYTES) {
            c->bad_stream = true;
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
            c->resp.len = 0;
            return;
        }
        if (c->resp.len - off - 5 < n) {
            break;
        }
        if (!c->reported && m->w != NULL && m->w->message != NULL) {
            struct h2mux_msg msg = {
                .tag = c->tag, .conn = c->conn->index, .body = p + 5, .body_len = n, .recv_us = now};
            m->w->message(m->w->arg, &msg);
        }
        off += 5 + (size_t)n;
    }
    memmove(c->resp.data, c->resp.data + off, c->resp.len - off);
    c->resp.len -= off;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *arg)
{
    (void)flags;
    (void)arg;
    struct mux_call *c = nghttp2_session_get_stream_user_data(s, id);
    if (c == NULL || c->too_big || c->bad_stream) {
        return 0;
    }
    if (c->streaming) {
        buf_append(&c->resp, data, len);
        stream_messages(s, c);
        return 0;
    }
    if (c->resp.len + len > MAX_RESPONSE_BYTES) {
        c->too_big = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        return 0;
    }
    buf_append(&c->resp, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct mux_conn *conn = arg;
    if (f->hd.type == NGHTTP2_SETTINGS && (f->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
        conn->got_settings = true;
        uint32_t max = nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        struct h2mux_stats *st = &conn->m->stats;
        if (st->peer_max_streams == 0 || max < st->peer_max_streams) {
            st->peer_max_streams = max;
        }
    } else if (f->hd.type == NGHTTP2_GOAWAY) {
        conn->goaway = true;
        conn->goaway_last_id = f->goaway.last_stream_id;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *arg)
{
    (void)arg;
    struct mux_call *c = nghttp2_session_get_stream_user_data(s, id);
    if (c == NULL) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(s, id, NULL);
    finish_call(c, error_code);
    call_unlink(c);
    call_free(c);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
    (void)s;
    (void)id;
    (void)arg;
    struct mux_call *c = src->ptr;
    size_t n = c->req_len - c->req_off;
    if (n > len) {
        n = len;
    }
    memcpy(buf, c->req + c->req_off, n);
    c->req_off += n;
    if (c->req_off == c->req_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* ---- Connections. */

static void conn_close_transport(struct mux_conn *conn)
{
    if (conn->h2 != NULL) {
        nghttp2_session_del(conn->h2); /* calls no callbacks */
        conn->h2 = NULL;
    }
    if (conn->ssl != NULL) {
        SSL_free(conn->ssl);
        conn->ssl = NULL;
    }
    if (conn->fd >= 0) {
        close(conn->fd);
        conn->fd = -1;
    }
    buf_reset(&conn->out);
    conn->out_off = 0;
    conn->got_settings = conn->goaway = conn->broken = false;
    conn->read_wants_write = conn->write_blocked = conn->hs_wants_write = false;
    conn->state = CONN_IDLE;
}

/* A READY connection broke (or drained after GOAWAY): report its calls, reconnect to the same
 * target soon. */
static void conn_fail(struct mux_conn *conn, int err, const char *why)
{
    char msg[GERR_MSG_SIZE];
    snprintf(msg, sizeof msg, "connection to %s lost: %s", conn->targets[conn->cur], why);
    conn->err = err;
    snprintf(conn->errmsg, sizeof conn->errmsg, "%s", msg);
    while (conn->calls != NULL) {
        struct mux_call *c = conn->calls;
        bool unprocessed = c->stream_id < 0 || (conn->goaway && c->stream_id > conn->goaway_last_id);
        report(c, unprocessed ? H2MUX_REFUSED : H2MUX_TRANSPORT, msg, NULL, 0);
        call_unlink(c);
        call_free(c);
    }
    conn->m->stats.disconnects++;
    conn_close_transport(conn);
    conn->retry_at_ms = now_ms() + BACKOFF_MIN_MS;
}

/* A connect or handshake failed: try the next target (at once, unless every target failed in a
 * row: then after the backoff). */
static void connect_failed(struct mux_conn *conn, int err, const char *why)
{
    conn->err = err;
    snprintf(conn->errmsg, sizeof conn->errmsg, "%s: %s", conn->targets[conn->cur], why);
    conn_close_transport(conn);
    conn->cur = (conn->cur + 1) % conn->n_targets;
    conn->failed_in_cycle++;
    uint64_t now = now_ms();
    if (conn->failed_in_cycle >= conn->n_targets) {
        conn->failed_in_cycle = 0;
        conn->retry_at_ms = now + conn->backoff_ms;
        conn->backoff_ms = conn->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : conn->backoff_ms * 2;
    } else {
        conn->retry_at_ms = now;
    }
}

static void start_connect(struct mux_conn *conn)
{
    char host[64], port[16];
    const char *t = conn->targets[conn->cur];
    const char *colon = strrchr(t, ':');
    if (colon == NULL || (size_t)(colon - t) >= sizeof host || strlen(colon + 1) >= sizeof port) {
        connect_failed(conn, GERR_INVAL, "not host:port");
        return;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - t), t);
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0 || res == NULL) {
        connect_failed(conn, GERR_INVAL, gai_strerror(gai));
        return;
    }
    conn->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (conn->fd < 0) {
        freeaddrinfo(res);
        connect_failed(conn, gerr_from_errno(errno), strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(conn->fd, res->ai_addr, res->ai_addrlen);
    int e = errno;
    freeaddrinfo(res);
    if (r != 0 && e != EINPROGRESS) {
        connect_failed(conn, e == ECONNREFUSED ? GERR_REFUSED : gerr_from_errno(e), strerror(e));
        return;
    }
    conn->state = CONN_CONNECTING;
    conn->deadline_ms = now_ms() + conn->m->connect_timeout_ms;
}

static int session_start(struct mux_conn *conn)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        return GERR_NOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int rv = nghttp2_session_client_new(&conn->h2, cbs, conn);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        conn->h2 = NULL;
        return GERR_NOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_BYTES},
    };
    if (nghttp2_submit_settings(conn->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(conn->h2, NGHTTP2_FLAG_NONE, 0, WINDOW_BYTES) != 0) {
        return GERR_NOMEM;
    }
    return 0;
}

static void handshake_step(struct mux_conn *conn)
{
    ERR_clear_error();
    int r = SSL_connect(conn->ssl);
    if (r == 1) {
        const unsigned char *proto = NULL;
        unsigned int proto_len = 0;
        SSL_get0_alpn_selected(conn->ssl, &proto, &proto_len);
        if (proto_len != 2 || memcmp(proto, "h2", 2) != 0) {
            connect_failed(conn, GERR_PROTO, "the server did not agree to ALPN h2");
            return;
        }
        int rv = session_start(conn);
        if (rv != 0) {
            connect_failed(conn, rv, "nghttp2 session");
            return;
        }
        conn->state = CONN_READY;
        conn->failed_in_cycle = 0;
        conn->backoff_ms = BACKOFF_MIN_MS;
        conn->m->stats.connects++;
        return;
    }
    int e = SSL_get_error(conn->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        conn->hs_wants_write = e == SSL_ERROR_WANT_WRITE;
        return;
    }
    long vr = SSL_get_verify_result(conn->ssl);
    char why[GERR_MSG_SIZE];
    if (vr != X509_V_OK) {
        ERR_clear_error();
        snprintf(why, sizeof why, "certificate not trusted: %s", X509_verify_cert_error_string(vr));
        connect_failed(conn, GERR_PERM, why);
        return;
    }
    sslerr_from_openssl(why, "TLS handshake");
    connect_failed(conn, GERR_CLOSED, why);
}

static void connected_step(struct mux_conn *conn)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err != 0) {
        connect_failed(conn, err == ECONNREFUSED ? GERR_REFUSED : gerr_from_errno(err), strerror(err));
        return;
    }
    conn->ssl = SSL_new(conn->m->ctx);
    if (conn->ssl == NULL || SSL_set_fd(conn->ssl, conn->fd) != 1) {
        char why[GERR_MSG_SIZE];
        sslerr_from_openssl(why, "SSL_new");
        connect_failed(conn, GERR_NOMEM, why);
        return;
    }
    SSL_set_tlsext_host_name(conn->ssl, conn->m->server_name);
    X509_VERIFY_PARAM *param = SSL_get0_param(conn->ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(param, conn->m->server_name, 0);
    conn->state = CONN_HANDSHAKE;
    handshake_step(conn);
}

/* Write what nghttp2 has to send, as far as the socket takes it. */
static void conn_flush(struct mux_conn *conn)
{
    conn->write_blocked = false;
    for (;;) {
        if (conn->out_off == conn->out.len) {
            buf_reset(&conn->out);
            conn->out_off = 0;
            while (conn->out.len < 65536) {
                const uint8_t *data;
                ssize_t n = nghttp2_session_mem_send(conn->h2, &data);
                if (n < 0) {
                    conn->broken = true;
                    snprintf(conn->errmsg, sizeof conn->errmsg, "nghttp2: %s", nghttp2_strerror((int)n));
                    return;
                }
                if (n == 0) {
                    break;
                }
                buf_append(&conn->out, data, (size_t)n);
            }
            if (conn->out.len == 0) {
                return;
            }
        }
        ERR_clear_error();
        int n = SSL_write(conn->ssl, conn->out.data + conn->out_off, (int)(conn->out.len - conn->out_off));
        if (n > 0) {
            conn->out_off += (size_t)n;
            continue;
        }
        int e = SSL_get_error(conn->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            conn->write_blocked = true;
            return;
        }
        ERR_clear_error();
        conn->broken = true;
        snprintf(conn->errmsg, sizeof conn->errmsg, "write failed (%s)",
                 e == SSL_ERROR_SYSCALL ? strerror(errno) : "TLS error");
        return;
    }
}

static void conn_read(struct mux_conn *conn)
{
    uint8_t buf[32768];
    conn->read_wants_write = false;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(conn->ssl, buf, sizeof buf);
        if (n > 0) {
            ssize_t rv = nghttp2_session_mem_recv(conn->h2, buf, (size_t)n);
            if (rv < 0) {
                conn->broken = true;
                snprintf(conn->errmsg, sizeof conn->errmsg, "HTTP/2: %s", nghttp2_strerror((int)rv));
                return;
            }
            continue;
        }
        int e = SSL_get_error(conn->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            return;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            conn->read_wants_write = true;
            return;
        }
        ERR_clear_error();
        conn->broken = true;
        snprintf(conn->errmsg, sizeof conn->errmsg, "%s",
                 e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0) ? "closed by the server"
                 : e == SSL_ERROR_SYSCALL                                             ? strerror(errno)
                                                                                      : "TLS error");
        return;
    }
}

static int submit(struct mux_conn *conn, const struct h2mux_req *req)
{
    struct h2mux *m = conn->m;
    struct mux_call *c = mem_zalloc(sizeof *c);
    size_t len = protobuf_c_message_get_packed_size(req->msg);
    c->conn = conn;
    c->tag = req->tag;
    c->streaming = req->streaming;
    c->grpc_status = -1;
    c->stream_id = -1;
    c->req_len = 5 + len;
    c->req = mem_alloc(c->req_len);
    c->req[0] = 0;
    c->req[1] = (uint8_t)(len >> 24);
    c->req[2] = (uint8_t)(len >> 16);
    c->req[3] = (uint8_t)(len >> 8);
    c->req[4] = (uint8_t)len;
    protobuf_c_message_pack(req->msg, c->req + 5);
    buf_init(&c->resp);

#define NV(n, v)                                                                                             \
    {                                                                                                        \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME               \
    }
    const char *target = conn->targets[conn->cur];
    nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "https"),
        NV(":path", req->path),
        NV(":authority", target),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("authorization", m->authorization),
        NV("grpc-timeout", m->grpc_timeout),
    };
#undef NV
    size_t n_nva = 6;
    if (m->has_auth) {
        n_nva++;
    }
    if (!c->streaming) { /* a streaming call lasts until the workload cancels it: no deadline */
        nva[n_nva++] = nva[7];
    }
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_body};
    c->sent_us = h2mux_now_us();
    int32_t id = nghttp2_submit_request(conn->h2, NULL, nva, n_nva, &prd, c);
    if (id < 0) {
        call_free(c);
        return GERR_INTERNAL;
    }
    c->stream_id = id;
    c->next = conn->calls;
    if (conn->calls != NULL) {
        conn->calls->prev = c;
    }
    conn->calls = c;
    conn->open++;
    m->unreported++;
    return 0;
}

/* Ask the workload for calls while this connection has free slots. */
static void conn_fill(struct mux_conn *conn)
{
    struct h2mux *m = conn->m;
    while (!m->stopping && !conn->goaway && !conn->broken && conn->open < conn->streams) {
        struct h2mux_req req = {0};
        int rv = m->w->next(m->w->arg, conn->index, &req);
        if (rv == H2MUX_STOP) {
            m->stopping = true;
            return;
        }
        if (rv != 0) {
            return;
        }
        if (submit(conn, &req) != 0) {
            conn->broken = true;
            snprintf(conn->errmsg, sizeof conn->errmsg, "nghttp2 refused a new stream");
            return;
        }
    }
}

static void expire_calls(struct h2mux *m)
{
    uint64_t now = h2mux_now_us();
    uint64_t limit = ((uint64_t)m->call_timeout_ms + TIMEOUT_SLACK_MS) * 1000u;
    for (unsigned i = 0; i < m->n_conns; i++) {
        struct mux_conn *conn = m->conns[i];
        for (struct mux_call *c = conn->calls; c != NULL; c = c->next) {
            if (!c->reported && !c->streaming && now - c->sent_us > limit) {
                report(c, H2MUX_TIMEOUT, "no answer within the call deadline (cancelled)", NULL, 0);
                if (conn->h2 != NULL && c->stream_id > 0) {
                    nghttp2_submit_rst_stream(conn->h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
                }
            }
        }
    }
}

/* One turn of the loop: start due connects, fill, flush, poll, handle events, expire. */
static void loop_once(struct h2mux *m, int max_wait_ms)
{
    struct pollfd *pfd = m->pfd;
    uint64_t now = now_ms();
    for (unsigned i = 0; i < m->n_conns; i++) {
        struct mux_conn *conn = m->conns[i];
        if (conn->state == CONN_IDLE && now >= conn->retry_at_ms) {
            start_connect(conn);
        }
        if (conn->state == CONN_READY) {
            if (m->w != NULL) {
                conn_fill(conn);
            }
            if (!conn->broken) {
                conn_flush(conn);
            }
            if (conn->broken) {
                conn_fail(conn, GERR_CLOSED, conn->errmsg);
            } else if (conn->goaway && conn->open == 0 && conn->calls == NULL) {
                conn_fail(conn, GERR_CLOSED, "GOAWAY");
            }
        }
        pfd[i].fd = conn->fd;
        pfd[i].events = pfd[i].revents = 0;
        switch (conn->state) {
        case CONN_IDLE:
            pfd[i].fd = -1;
            break;
        case CONN_CONNECTING:
            pfd[i].events = POLLOUT;
            break;
        case CONN_HANDSHAKE:
            pfd[i].events = conn->hs_wants_write ? POLLOUT : POLLIN;
            break;
        case CONN_READY:
            pfd[i].events = POLLIN | (conn->write_blocked || conn->read_wants_write ? POLLOUT : 0);
            break;
        }
    }
    int n = poll(pfd, m->n_conns, max_wait_ms);
    now = now_ms();
    for (unsigned i = 0; i < m->n_conns && n >= 0; i++) {
        struct mux_conn *conn = m->conns[i];
        short re = pfd[i].revents;
        switch (conn->state) {
        case CONN_IDLE:
            break;
        case CONN_CONNECTING:
            if (re != 0) {
                connected_step(conn);
            } else if (now >= conn->deadline_ms) {
                connect_failed(conn, GERR_TIMEOUT, "connect timed out");
            }
            break;
        case CONN_HANDSHAKE:
            if (re != 0) {
                handshake_step(conn);
            } else if (now >= conn->deadline_ms) {
                connect_failed(conn, GERR_TIMEOUT, "TLS handshake timed out");
            }
            break;
        case CONN_READY:
            if (re != 0) {
                conn_read(conn);
                if (!conn->broken) {
                    conn_flush(conn);
                }
                if (conn->broken) {
                    conn_fail(conn, GERR_CLOSED, conn->errmsg);
                }
            }
            break;
        }
    }
    expire_calls(m);
}

/* ---- The public functions. */

int h2mux_new(const struct h2mux_config *cfg, struct h2mux **out, char *errmsg)
{
    if (cfg->ca_file == NULL || cfg->server_name == NULL || cfg->streams == 0 ||
        cfg->streams > H2MUX_MAX_STREAMS ||
        (cfg->authorization != NULL && strlen(cfg->authorization) >= 1024)) {
        gerr_set(errmsg, "h2mux: bad configuration (CA file, server name and 1..%u streams are required)",
                 H2MUX_MAX_STREAMS);
        return GERR_INVAL;
    }
    struct h2mux *m = mem_zalloc(sizeof *m);
    m->streams = cfg->streams;
    m->call_timeout_ms = cfg->call_timeout_ms != 0 ? cfg->call_timeout_ms : 10000;
    m->connect_timeout_ms = cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : 5000;
    snprintf(m->grpc_timeout, sizeof m->grpc_timeout, "%um", m->call_timeout_ms);
    snprintf(m->server_name, sizeof m->server_name, "%s", cfg->server_name);
    if (cfg->authorization != NULL) {
        snprintf(m->authorization, sizeof m->authorization, "%s", cfg->authorization);
        m->has_auth = true;
    }
    int rv;
    m->ctx = SSL_CTX_new(TLS_client_method());
    if (m->ctx == NULL) {
        rv = sslerr_from_openssl(errmsg, "h2mux: SSL_CTX_new");
        goto err_after_alloc;
    }
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_min_proto_version(m->ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_protos(m->ctx, alpn, sizeof alpn);
    SSL_CTX_set_mode(m->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(m->ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(m->ctx, cfg->ca_file, NULL) != 1) {
        rv = sslerr_from_openssl(errmsg, "h2mux: CA file");
        gerr_wrap(errmsg, "%s", cfg->ca_file);
        goto err_after_ctx;
    }
    *out = m;
    return 0;

err_after_ctx:
    SSL_CTX_free(m->ctx);
err_after_alloc:
    mem_free(m);
    return rv;
}

void h2mux_free(struct h2mux *m)
{
    if (m == NULL) {
        return;
    }
    m->w = NULL;
    for (unsigned i = 0; i < m->n_conns; i++) {
        struct mux_conn *conn = m->conns[i];
        while (conn->calls != NULL) {
            struct mux_call *c = conn->calls;
            call_unlink(c);
            call_free(c);
        }
        conn_close_transport(conn);
        buf_close(&conn->out);
        mem_free(conn);
    }
    mem_free(m->conns);
    mem_free(m->pfd);
    SSL_CTX_free(m->ctx);
    mem_free(m);
}

int h2mux_add(struct h2mux *m, const char *const *targets, unsigned n_targets, unsigned streams, char *errmsg)
{
    if (n_targets == 0 || n_targets > H2MUX_MAX_TARGETS || streams > H2MUX_MAX_STREAMS) {
        gerr_set(errmsg, "h2mux: 1..%u targets and at most %u streams per connection", H2MUX_MAX_TARGETS,
                 H2MUX_MAX_STREAMS);
        return -1;
    }
    struct mux_conn *conn = mem_zalloc(sizeof *conn);
    for (unsigned i = 0; i < n_targets; i++) {
        if (strlen(targets[i]) >= sizeof conn->targets[i]) {
            gerr_set(errmsg, "h2mux: target \"%.80s\" is too long", targets[i]);
            mem_free(conn);
            return -1;
        }
        snprintf(conn->targets[i], sizeof conn->targets[i], "%s", targets[i]);
    }
    conn->m = m;
    conn->n_targets = n_targets;
    conn->streams = streams != 0 ? streams : m->streams;
    conn->fd = -1;
    conn->backoff_ms = BACKOFF_MIN_MS;
    conn->state = CONN_IDLE;
    buf_init(&conn->out);
    m->conns = mem_realloc(m->conns, (m->n_conns + 1) * sizeof *m->conns);
    m->pfd = mem_realloc(m->pfd, (m->n_conns + 1) * sizeof *m->pfd);
    conn->index = m->n_conns;
    m->conns[m->n_conns++] = conn;
    return (int)conn->index;
}

int h2mux_connect(struct h2mux *m, unsigned timeout_ms, char *errmsg)
{
    uint64_t deadline = now_ms() + timeout_ms;
    m->w = NULL;
    for (;;) {
        unsigned up = 0;
        for (unsigned i = 0; i < m->n_conns; i++) {
            struct mux_conn *conn = m->conns[i];
            up += conn->state == CONN_READY && conn->got_settings;
            if (conn->state == CONN_IDLE && (conn->err == GERR_PERM || conn->err == GERR_PROTO)) {
                gerr_set(errmsg, "h2mux: connection %u: %s", i, conn->errmsg);
                return conn->err;
            }
        }
        if (up == m->n_conns) {
            return 0;
        }
        if (now_ms() >= deadline) {
            for (unsigned i = 0; i < m->n_conns; i++) {
                struct mux_conn *conn = m->conns[i];
                if (!(conn->state == CONN_READY && conn->got_settings)) {
                    gerr_set(errmsg, "h2mux: connection %u (%s) not up within %u ms: %s", i,
                             conn->targets[conn->cur], timeout_ms,
                             conn->errmsg[0] != '\0' ? conn->errmsg : "no answer");
                    return conn->err != 0 ? conn->err : GERR_TIMEOUT;
                }
            }
        }
        loop_once(m, LOOP_TICK_MS);
    }
}

/* Cancel every call still open (RST_STREAM) and report it with @status, so every call is
 * accounted for. */
static void cancel_open(struct h2mux *m, int status, const char *why)
{
    for (unsigned i = 0; i < m->n_conns; i++) {
        struct mux_conn *conn = m->conns[i];
        for (struct mux_call *c = conn->calls; c != NULL; c = c->next) {
            if (!c->reported) {
                report(c, status, why, NULL, 0);
                if (conn->h2 != NULL && c->stream_id > 0) {
                    nghttp2_submit_rst_stream(conn->h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
                }
            }
        }
    }
}

int h2mux_run(struct h2mux *m, const struct h2mux_workload *w, uint64_t deadline_ms, char *errmsg)
{
    m->w = w;
    m->stopping = false;
    int rv = 0;
    while (!(m->stopping && m->unreported == 0)) {
        if (now_ms() >= deadline_ms) {
            cancel_open(m, H2MUX_TIMEOUT, "still open at the end of the run (cancelled)");
            gerr_set(errmsg, "h2mux: the run did not finish by its deadline");
            rv = GERR_TIMEOUT;
            break;
        }
        int t = w->tick != NULL && !m->stopping ? w->tick(w->arg) : 0;
        if (t == H2MUX_STOP || t == H2MUX_CANCEL_ALL) {
            m->stopping = true;
        }
        if (t == H2MUX_CANCEL_ALL) {
            cancel_open(m, 1, "cancelled by the workload");
        }
        loop_once(m, LOOP_TICK_MS);
    }
    m->w = NULL;
    return rv;
}

void h2mux_get_stats(const struct h2mux *m, struct h2mux_stats *out)
{
    *out = m->stats;
}
