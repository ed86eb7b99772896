/* Shared between the gRPC server's files: server.c (listener, dispatch table, shutdown,
 * metrics), h2.c (one connection: socket, TLS, nghttp2 session, flushing, timers) and call.c
 * (one call: framing, deadlines, responses, asynchronous completion). Not a public header. */
#ifndef GANTRY_SERVER_GRPC_INTERNAL_H
#define GANTRY_SERVER_GRPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <nghttp2/nghttp2.h>

#include "lib/err.h"
#include "lib/queue.h"
#include "lib/uvpace.h"
#include "server/grpc/server.h"
#include "server/grpc/tls.h"

/* Latency histogram buckets in seconds (upper bounds); +Inf is implicit. */
#define GRPC__BUCKETS 12
extern const double grpc__bucket_bounds[GRPC__BUCKETS];

struct grpc__method {
    char *path;    /* "/pkg.Svc/Method" */
    char *service; /* "pkg.Svc" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    bool has_handler;
    struct grpc_handler handler;
    /* Metrics, loop thread only. */
    uint64_t handled[GRPC_STATUS__COUNT];
    uint64_t buckets[GRPC__BUCKETS]; /* non-cumulative counts */
    uint64_t latency_count;
    double latency_sum;
};

/* Live connections from one source address (the budget of h2.c). */
struct grpc__source {
    uint8_t addr[16];
    uint8_t family; /* AF_INET, AF_INET6, or 0 (no socket: the fuzzer) */
    uint32_t live;
    uint32_t unproven; /* live and not established */
};

struct grpc_server {
    uv_loop_t *loop;
    struct grpc_server_config cfg; /* strings point to the copies below */
    char *listen_copy, *cert_copy, *key_copy, *ca_copy;
    SSL_CTX *tls;           /* NULL for h2c; swapped by grpc_server_reload_tls under tls_mu */
    pthread_mutex_t tls_mu; /* guards tls */
    uv_tcp_t listener;
    struct uv_pace pace; /* accepts per loop turn (server.c, GRPC__ACCEPTS_PER_TURN) */
    bool started;
    bool closing;
    int port;
    struct grpc__method *methods; /* sorted by path once started */
    size_t n_methods, cap_methods;
    char **services; /* sorted distinct service names */
    size_t n_services;
    struct grpc__method unknown; /* metrics of calls to unknown paths */
    nghttp2_session_callbacks *callbacks;
    nghttp2_option *options;
    struct queue conns;
    size_t n_conns;
    size_t n_calls;        /* allocated calls (alive until the last unref) */
    size_t n_open_streams; /* calls with an open HTTP/2 stream */
    uint64_t conns_total;
    uint64_t conns_rejected;        /* at accept: max_connections, no connection to evict */
    uint64_t conns_rejected_source; /* at accept: max_connections_per_source */
    uint64_t conns_evicted;         /* unproven idle connections closed to admit a new one */
    uint64_t handshake_timeouts;
    /* The connection budget (h2.c): live = accepted and not closing. */
    size_t n_live;
    size_t n_established;
    struct grpc__source *sources; /* one per address with live connections, unordered */
    size_t n_sources, cap_sources;
    uint64_t refusal_log_ms; /* refusals are logged once per window, then counted */
    uint64_t refusals_unlogged;
    /* Cross-thread completions (grpc_call_finish_async). */
    uv_async_t async;
    pthread_mutex_t async_mu;
    struct queue async_q;
    /* Shutdown. */
    uv_timer_t grace_timer;
    uv_timer_t trim_timer; /* malloc_trim after large requests were freed */
    bool trim_pending;
    grpc_server_closed_cb closed_cb;
    void *closed_data;
    int handles_open; /* listener, accept check, async, grace timer, trim timer */
    bool handles_closing;
    grpc_outcome_cb outcome_cb; /* set before start, read-only after */
    void *outcome_data;
    uint8_t read_buf[65536]; /* shared by every connection's read (loop thread only) */
};

struct h2_conn {
    struct grpc_server *server;
    struct queue link; /* in server->conns */
    uv_tcp_t tcp;
    bool has_socket; /* false for a detached connection (the fuzzer) */
    bool use_tls;
    struct tls_session tls;
    nghttp2_session *session;
    char peer[64];
    uint8_t src_addr[16]; /* the peer's address, for per-source accounting */
    uint8_t src_family;
    bool counted;        /* in the budget (n_live, its source); false once closing or evicted */
    bool established;    /* carried an authenticated call (h2__conn_established) */
    bool handshake_done; /* TLS done and the client's first SETTINGS received */
    struct queue calls;  /* calls with an open stream */
    size_t n_streams;
    size_t n_dispatched;  /* calls handed to their handler and not finished */
    size_t in_bytes;      /* buffered request bytes of every call */
    size_t write_pending; /* bytes handed to uv_write and not yet completed */
    size_t out_buffered;  /* response bytes queued in calls and not yet taken by nghttp2 */
    bool drain_waiting;   /* some call's output fell below its low-water mark */
    size_t n_held;        /* calls holding unframed input (see grpc_call.held) */
    X509 *peer_cert;      /* verified client certificate (a reference), or NULL */
    struct buf out;       /* bytes waiting to be handed to uv_write */
    bool reading;
    bool in_recv;    /* inside nghttp2 (receiving or sending): no reentry, no closing */
    bool want_flush; /* a flush was asked for during in_recv */
    bool goaway;     /* GOAWAY submitted: close once streams are done */
    bool closing;
    bool ping_outstanding;
    uint64_t ping_sent_ms;
    bool close_when_written; /* a fatal error: close once the last bytes (alert, GOAWAY) are out */
    bool header_abort;       /* a header list went over the limit: decoding stopped, GOAWAY queued */
    bool lingering;          /* GOAWAY done: wait briefly for the client to close first */
    uint64_t last_active_ms; /* last stream opened or closed (PINGs and SETTINGS do not count) */
    uv_timer_t idle_timer;
    uv_timer_t ping_timer;
    uv_timer_t hs_timer; /* handshake deadline */
    int handles_open;
    char errmsg[GERR_MSG_SIZE];
};

struct grpc__meta {
    const char *key;
    const char *value;
};

struct grpc_call {
    struct grpc_server *server;
    struct h2_conn *conn; /* NULL once the stream closed */
    int32_t stream_id;
    struct queue link;           /* in conn->calls while the stream is open */
    struct grpc__method *method; /* NULL: unknown path */
    const char *path;
    /* Taken and dropped from any thread (grpc_call_send_async runs on workers), so atomic: a
     * lost update here freed a call a watch thread was still sending on. */
    atomic_int refs;
    atomic_uint tag; /* grpc_call_set_tag */
    struct arena arena;
    /* Request headers. */
    struct grpc__meta *meta;
    size_t n_meta, cap_meta;
    size_t header_bytes;
    const char *http_method;
    const char *content_type;
    int reject_status;      /* nonzero: answer with this gRPC status at end of headers */
    const char *reject_msg; /* arena */
    bool headers_too_big;
    uint64_t deadline_ms;
    uv_timer_t timer;
    /* Request body framing. */
    uint8_t prefix[5];
    size_t prefix_have;
    uint32_t msg_len;
    struct buf msg; /* the message being received */
    /* Body bytes received but not framed yet, because the handler's output is over the
     * high-water mark (client-streaming and bidi only): nghttp2 was not told they were consumed,
     * so the client's flow-control window closes and it stops sending. */
    struct buf held;
    size_t held_off;
    bool held_counted; /* counted in conn->n_held */
    bool end_held;     /* END_STREAM arrived behind held bytes */
    bool input_paused; /* grpc_call_pause_input: no request message is framed until resumed */
    bool req_stashed;  /* grpc_call_stash_request put a bidi call's first message in @req */
    bool in_message;
    uint32_t n_received;
    /* The request of a unary or server-streaming call, decoded lazily by grpc_call_request on
     * the thread that first asks (a worker, after authentication). The loop thread fills @req
     * and never touches it, @req_arena or the results again before the last unref; the first
     * caller decodes under @req_mu. */
    struct buf req;       /* the request's bytes, freed once decoded */
    uint32_t req_counted; /* bytes of @req counted in conn->in_bytes (loop thread) */
    pthread_mutex_t req_mu;
    bool req_done;          /* decode attempted */
    struct arena req_arena; /* the decoded message */
    ProtobufCMessage *request;
    int req_status;        /* GRPC_STATUS_OK, or why the request was refused */
    const char *req_error; /* in req_arena */
    size_t req_heap;       /* bytes the decode held (req + req_arena), to decide on trimming */
    /* State. */
    bool started;          /* on_start fired */
    bool half_closed;      /* the client sent END_STREAM */
    bool finished;         /* grpc_call_finish ran */
    atomic_bool cancelled; /* read by workers through grpc_call_cancelled */
    /* grpc_call_unsent: bytes queued by grpc_call_send_async not yet on the loop thread, and a
     * copy of out.len - out_off the loop thread keeps for workers. */
    atomic_size_t unsent_async;
    atomic_size_t unsent_out;
    bool stream_closed;
    bool headers_sent;
    bool trailers_sent;
    bool deferred;     /* the data provider returned DEFERRED */
    bool drain_wanted; /* grpc_call_send reported GERR_BUSY */
    bool dispatched;   /* counted in conn->n_dispatched */
    int status;
    const char *status_msg; /* arena */
    char trailer_key[32];   /* the loop thread's copy, sent with the status; "" none */
    char trailer_val[64];
    char set_trailer_key[32]; /* grpc_call_set_trailer: the finishing thread's only, until the */
    char set_trailer_val[64]; /* grpc_call_finish_async that copies it into its completion */
    struct buf out;           /* prefixed response messages not yet given to nghttp2 */
    size_t out_off;
    uint64_t start_ns;
    void *user;
    char peer[64];
    bool tls;
    X509 *peer_cert; /* a reference, or NULL */
    /* A virtual call (grpc_call_new_virtual): no connection, no loop-thread state; finishing calls
     * @vdone on the finishing thread. */
    bool is_virtual;
    atomic_bool vfinished;
    grpc_virtual_done_cb vdone;
    void *vdata;
};

/* An answer from another thread, queued for the loop thread. */
struct grpc__completion {
    struct queue link;
    struct grpc_call *call;
    int status;
    char *message;  /* mem_strdup or NULL */
    uint8_t *reply; /* serialized reply, or NULL */
    size_t reply_len;
    bool has_reply;
    bool is_send;         /* grpc_call_send_async: reply holds one message to send */
    bool is_resume;       /* grpc_call_resume_input */
    char trailer_key[32]; /* the call's grpc_call_set_trailer at the finish; "" none */
    char trailer_val[64];
};

/* The one translation of nghttp2 errors (libuv: lib/uverr.h, OpenSSL: server/grpc/tls.h). */
int h2__err_from_nghttp2(int rv, char *errmsg);

/* server.c */
/* For the fuzzer: index the dispatch table and open the async handle without listening, then
 * create connections with no socket (output is discarded). Shut down as usual. */
void grpc__server_prepare_detached(struct grpc_server *s);
struct h2_conn *grpc__server_feed_conn(struct grpc_server *s);
struct grpc__method *grpc__method_find(struct grpc_server *s, const char *path, size_t len);
void grpc__metrics_record(struct grpc_server *s, struct grpc__method *m, int status, uint64_t start_ns);
/* Tell the outcome observer (if any) the call's final status. */
void grpc__outcome(const struct grpc_call *call, int status);
void grpc__conn_gone(struct grpc_server *s, struct h2_conn *c); /* after a connection is freed */
void grpc__call_gone(struct grpc_server *s);                    /* after a call is freed */
/* A call that held @bytes of request memory was freed: give the heap back to the system soon
 * (malloc_trim from a timer, at most once per GRPC__TRIM_DELAY_MS). */
void grpc__trim_soon(struct grpc_server *s, size_t bytes);
#define GRPC__TRIM_DELAY_MS  100
#define GRPC__TRIM_MIN_BYTES (1u << 20)
void grpc__async_cb(uv_async_t *h);

/* h2.c */
int h2__callbacks_new(nghttp2_session_callbacks **out);
/* Accept-side setup for a new connection (socket already accepted into c->tcp when
 * has_socket). Returns 0 or an error (the connection is then closed by the caller). */
int h2__conn_init(struct h2_conn *c, struct grpc_server *s, bool has_socket);
/* Process received plaintext HTTP/2 bytes. Returns 0 or an error (the caller closes). */
int h2__conn_recv(struct h2_conn *c, const uint8_t *data, size_t len);
/* Send what nghttp2 has queued (deferred while inside a receive). */
void h2__conn_flush(struct h2_conn *c);
/* Start closing; the memory is freed asynchronously. Safe to call twice. */
void h2__conn_close(struct h2_conn *c, const char *why);
/* Graceful: GOAWAY with the last processed stream id; close when the streams are done. */
void h2__conn_goaway(struct h2_conn *c);
void h2__conn_accept(struct grpc_server *s);
/* A call on @c carried credentials and was answered as only an authenticated caller is: the
 * connection now counts against the established share of the budget. */
void h2__conn_established(struct h2_conn *c);

/* call.c: the nghttp2 callbacks route stream events here. */
struct grpc_call *grpc__call_new(struct h2_conn *c, int32_t stream_id);
/* Count one header field (request headers and trailers alike) against max_header_list_bytes
 * (name + value + 32, RFC 7541). Returns 0, or GERR_TOOBIG once the list is over the limit: the
 * call has then been answered RESOURCE_EXHAUSTED and the caller must stop decoding. */
int grpc__call_header_bytes(struct grpc_call *call, size_t namelen, size_t valuelen);
/* A request header: counted as above, then kept (pseudo-headers, content-type, grpc-timeout,
 * metadata). Returns 0 or GERR_TOOBIG. */
int grpc__call_header(struct grpc_call *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen);
void grpc__call_headers_done(struct grpc_call *call);
void grpc__call_data(struct grpc_call *call, const uint8_t *data, size_t len);
void grpc__call_end_stream(struct grpc_call *call);
/* The stream is gone (closed, reset, or the connection closed). Drops the stream's reference. */
void grpc__call_stream_closed(struct grpc_call *call, uint32_t error_code);
/* The frame ending our side of the stream was sent. */
void grpc__call_sent_end(struct grpc_call *call);
void grpc__conn_notify_drain(struct h2_conn *c);
void grpc__call_finish_bytes(struct grpc_call *call, int status, const char *message, const uint8_t *reply,
                             size_t reply_len, bool has_reply);

#endif
