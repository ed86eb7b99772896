/* h2mux: a multiplexing gRPC client for the load generator. N connections (HTTP/2 over TLS, ALPN
 * h2, nghttp2 + OpenSSL), each carrying up to M concurrent unary calls, driven by one poll(2) loop
 * on the calling thread.
 *
 * The blocking client in server/grpc/client.h runs one call at a time per connection (what the CLI
 * needs); a benchmark of "N connections x M streams" needs real multiplexing, so this lives beside
 * the bench and leaves that client alone.
 *
 * Use:
 *   struct h2mux *m;
 *   h2mux_new(&cfg, &m, errmsg);                        (one TLS context: the CA, SNI, credential)
 *   h2mux_add(m, targets, n_targets, 0, errmsg);       (one connection per call; returns its index)
 *   h2mux_connect(m, 10000, errmsg);                   (every connection up before the clock starts)
 *   h2mux_run(m, &workload, deadline_ms, errmsg);      (issues calls through workload.next, reports
 *                                                       each one to workload.done, until next says
 *                                                       H2MUX_STOP and nothing is in flight)
 *   h2mux_free(m);
 *
 * Connections: each has a list of targets ("host:port") and starts at the first. A connection that
 * breaks (EOF, reset, TLS or HTTP/2 error, GOAWAY) finishes every call it carried (a call the server
 * refused unprocessed, REFUSED_STREAM or beyond a GOAWAY's last stream id, is reported as
 * H2MUX_REFUSED, anything else as H2MUX_TRANSPORT: the outcome is unknown) and reconnects to the
 * next target of its list after a short backoff (20 ms doubling to 500 ms). A target that refuses
 * the TCP connection is skipped at once.
 *
 * Deadlines: every call carries grpc-timeout = call_timeout_ms; a call still open 1 s after that is
 * cancelled (RST_STREAM) and reported as H2MUX_TIMEOUT. h2mux_run returns GERR_TIMEOUT if its own
 * deadline passes first (calls still in flight are then cancelled and reported).
 *
 * Not thread-safe: one h2mux is driven by one thread. Callbacks run on that thread, inside
 * h2mux_run, never synchronously inside h2mux_add or h2mux_connect. */
#ifndef GANTRY_TOOLS_BENCH_H2MUX_H
#define GANTRY_TOOLS_BENCH_H2MUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/err.h"

#define H2MUX_MAX_TARGETS 8

/* Call outcomes besides the gRPC status codes 0..16. */
enum {
    H2MUX_TRANSPORT = -1, /* the connection broke with the call open: outcome unknown */
    H2MUX_TIMEOUT = -2,   /* no answer within call_timeout_ms + 1 s: cancelled, outcome unknown */
    H2MUX_REFUSED = -3,   /* the server did not process it (REFUSED_STREAM, GOAWAY) */
    H2MUX_BAD_REPLY = -4, /* no grpc-status, or a malformed response */
};
#define H2MUX_OUTCOME_MIN (-4)

struct h2mux_config {
    const char *ca_file;       /* PEM CA the servers' chains must verify against (required) */
    const char *server_name;   /* SNI and the name checked in the leaf, e.g. "localhost" */
    const char *authorization; /* sent as "authorization" on every call, or NULL */
    unsigned streams; /* concurrent calls per connection (unless h2mux_add says), 1..H2MUX_MAX_STREAMS */
    unsigned call_timeout_ms;    /* 0 = 10000 */
    unsigned connect_timeout_ms; /* per TCP connect + TLS handshake; 0 = 5000 */
};
#define H2MUX_MAX_STREAMS 256u

/* What the workload asks for: a call of @path with @msg (packed and copied at once). */
struct h2mux_req {
    const char *path; /* "/gantry.v1.Sandboxes/Create" */
    const ProtobufCMessage *msg;
    uint64_t tag; /* the workload's own, given back in the result */
    /* A server-streaming call (one request message, then the request side is closed): it carries
     * no grpc-timeout and is never expired by call_timeout_ms; each response message goes to
     * workload.message as it arrives, and done reports the end (its status; no body). */
    bool streaming;
};

/* One message of a streaming call, given to workload.message. */
struct h2mux_msg {
    uint64_t tag;
    unsigned conn;
    const uint8_t *body; /* the message without its 5-byte prefix, valid in the callback only */
    size_t body_len;
    uint64_t recv_us; /* monotonic microseconds when it was read */
};

struct h2mux_result {
    uint64_t tag;
    unsigned conn;       /* index of the connection that carried it */
    int status;          /* grpc-status 0..16, or one of the H2MUX_* outcomes above */
    const char *message; /* grpc-message or a description of the failure; never NULL */
    const uint8_t *body; /* the response message (without the 5-byte prefix), valid in the callback */
    size_t body_len;
    uint64_t sent_us; /* monotonic microseconds when the call was submitted */
    uint64_t done_us; /* ... and when it finished */
};

enum {
    H2MUX_WAIT = 1,       /* nothing to send on this connection now; ask again later */
    H2MUX_STOP = 2,       /* nothing more to send at all: the run ends when nothing is in flight */
    H2MUX_CANCEL_ALL = 3, /* from tick: STOP, and cancel every open call (reported as CANCELLED) */
};

struct h2mux_workload {
    /* Fill @req and return 0, or return H2MUX_WAIT / H2MUX_STOP. Asked for each free stream slot of
     * each ready connection, after every completion and at least every 5 ms. */
    int (*next)(void *arg, unsigned conn, struct h2mux_req *req);
    /* Every submitted call is reported exactly once. */
    void (*done)(void *arg, const struct h2mux_result *res);
    /* Optional: called on every turn of the loop (at least every 5 ms); H2MUX_STOP ends issuing,
     * H2MUX_CANCEL_ALL also cancels what is open (how a run of streaming calls ends). */
    int (*tick)(void *arg);
    /* Required for streaming calls: each message of one, in order, before its done. Runs inside
     * the connection's read: it must not call h2mux functions. A message larger than 64 MiB or
     * compressed ends the call as H2MUX_BAD_REPLY. */
    void (*message)(void *arg, const struct h2mux_msg *msg);
    void *arg;
};

struct h2mux;

/* A multiplexer with no connections. GERR_INVAL for a bad configuration, or the OpenSSL error. */
int h2mux_new(const struct h2mux_config *cfg, struct h2mux **out, char *errmsg);
void h2mux_free(struct h2mux *m);

/* Add a connection that tries @targets in turn (copied; 1..H2MUX_MAX_TARGETS) and carries up to
 * @streams concurrent calls (0: the configuration's). It connects in h2mux_connect or h2mux_run.
 * Returns its index (>= 0) or -1 (too many targets or streams, or a target longer than 63 bytes;
 * @errmsg says which). */
int h2mux_add(struct h2mux *m, const char *const *targets, unsigned n_targets, unsigned streams,
              char *errmsg);

/* Establish every connection (TCP, TLS, HTTP/2 settings exchanged) within @timeout_ms. 0, or
 * GERR_TIMEOUT / GERR_CLOSED / GERR_PERM (the certificate did not verify) / GERR_PROTO (no h2)
 * with the first failure in @errmsg. */
int h2mux_connect(struct h2mux *m, unsigned timeout_ms, char *errmsg);

/* Drive @w until it says H2MUX_STOP and every call has finished, or until the monotonic time
 * @deadline_ms (then GERR_TIMEOUT, after cancelling what is in flight and reporting it). */
int h2mux_run(struct h2mux *m, const struct h2mux_workload *w, uint64_t deadline_ms, char *errmsg);

/* Counters since h2mux_new. */
struct h2mux_stats {
    uint64_t connects;         /* successful handshakes */
    uint64_t disconnects;      /* connections that broke */
    uint32_t peer_max_streams; /* smallest SETTINGS_MAX_CONCURRENT_STREAMS seen (0: none yet) */
};
void h2mux_get_stats(const struct h2mux *m, struct h2mux_stats *out);

/* "OK", "UNAVAILABLE", ..., "transport", "timeout", "refused", "bad-reply". Static. */
const char *h2mux_status_name(int status);

/* Monotonic microseconds (the clock of sent_us / done_us). */
uint64_t h2mux_now_us(void);

#endif
