/* The admin HTTP/1.1 port (parser: llhttp from Debian's node-llhttp):
 *
 *   GET /healthz  200 "ok" while the process runs its loop
 *   GET /readyz   200 "ready", or 503 with the reason from the ready callback
 *   GET /metrics  200, Prometheus text format 0.0.4, from the metrics callback
 *   <prefix>...   any method: the handler callback (the operator console, server/console.h), which
 *                 answers now or later, once, or streams a close-delimited body (below)
 *   anything else 404; methods other than GET/HEAD 405; requests over the size limits 431/414,
 *   bodies over ADMIN_MAX_BODY 413 (only the handler's paths take a body).
 *
 * Keep-alive is honoured. Limits against hostile clients (admin.c has the details), each 0 in
 * struct admin_config meaning its default: max_connections (64) connections, plus probe_reserve
 * (8) more that may only ask /healthz or /readyz once, within probe_timeout_ms (2 s) of accept;
 * each request complete within header_timeout_ms (10 s) of its first byte (the first one of
 * accept), not restarted by further bytes; idle_timeout_ms (30 s) between requests; at most
 * max_buffered_bytes (1 MiB) of unwritten responses per connection, past which reading pauses.
 * Loop thread only. */
#ifndef GANTRY_SERVER_ADMIN_H
#define GANTRY_SERVER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/buf.h"

struct admin;
struct admin_exchange;

#define ADMIN_MAX_BODY (16u << 10)

/* A request for the handler. Strings are NUL-terminated and valid during the handler callback only;
 * a header that was not sent is "". Header values are those of the first occurrence, and a kept
 * header longer than its room (cookie 4 KiB, the others 255 bytes) makes the request 431. */
struct admin_request {
    const char *method;       /* "GET", "POST", ... */
    const char *path;         /* without the query */
    const char *query;        /* after '?', "" for none (still percent-encoded) */
    const char *cookie;       /* Cookie */
    const char *origin;       /* Origin */
    const char *host;         /* Host */
    const char *content_type; /* Content-Type */
    const char *console;      /* X-Gantry-Console: the console's own requests send it (CSRF guard) */
    const uint8_t *body;      /* at most ADMIN_MAX_BODY bytes */
    size_t body_len;
    const char *peer; /* "a.b.c.d:port" */
    bool head;        /* HEAD: answer as for GET; the body is not sent */
};

/* Called on the loop thread for a request under the handler prefix. @x is the handler's until it
 * calls admin_reply or admin_stream_close, exactly once (now, inside the callback, or later from
 * the loop thread). Meanwhile the connection reads nothing more (HTTP/1.1 answers in order). */
typedef void (*admin_handler_cb)(void *data, struct admin_exchange *x, const struct admin_request *req);

/* Return true if ready; otherwise write a one-line reason into @reason. */
typedef bool (*admin_ready_cb)(void *data, char *reason, size_t reason_len);
/* Append the metrics text to @out. */
typedef void (*admin_metrics_cb)(void *data, struct buf *out);
typedef void (*admin_closed_cb)(struct admin *a, void *data);

struct admin_config {
    const char *listen; /* "host:port", copied */
    admin_ready_cb ready;
    admin_metrics_cb metrics;
    void *data;
    /* Requests whose path starts with @handler_prefix (copied; NULL: none) go to @handler. */
    const char *handler_prefix;
    admin_handler_cb handler;
    void *handler_data;
    /* Limits; 0 means the default. */
    unsigned max_connections;   /* general connections; default 64 */
    unsigned probe_reserve;     /* more connections, for /healthz and /readyz only; default 8 */
    uint64_t header_timeout_ms; /* a request complete within this of its first byte; default 10 s */
    uint64_t idle_timeout_ms;   /* between requests, or without write progress; default 30 s */
    uint64_t probe_timeout_ms;  /* a probe connection's request and answer; default 2 s */
    size_t max_buffered_bytes;  /* unwritten responses per connection before reading pauses; 1 MiB */
};

/* Replace the zero limits in @cfg by their defaults. */
void admin_config_defaults(struct admin_config *cfg);

/* Bind and listen. Returns 0, GERR_INVAL (bad address) or a translated libuv error, with the
 * reason in @errmsg. On a bind/listen error the listener handle is closed asynchronously and
 * frees itself: run the loop before closing it. */
int admin_start(uv_loop_t *loop, const struct admin_config *cfg, struct admin **out, char *errmsg);

int admin_port(const struct admin *a);

/* Close the listener and every connection; @cb fires once, asynchronously, after which the
 * memory is gone. Exchanges the handler still holds stay valid (closed) until it finishes them. */
void admin_close(struct admin *a, admin_closed_cb cb, void *data);

/* --- Exchanges (loop thread only) --- */

/* Answer with @status (200, 401, ...), @content_type, extra header lines @headers (each ending in
 * "\r\n"; NULL for none) and @body (@len bytes, copied). Finishes @x: it must not be used again.
 * If the connection is gone meanwhile, nothing is sent. */
void admin_reply(struct admin_exchange *x, int status, const char *content_type, const char *headers,
                 const void *body, size_t len);

/* Start a streamed answer: status 200, @content_type, @headers, no length, "Connection: close"; the
 * body is what admin_stream_send sends until admin_stream_close. The idle deadline applies only while
 * writes are pending, restarted by each finished write (a stream may be quiet, a client that stops
 * reading is closed); sends count against max_buffered_bytes. Returns 0, or GERR_CLOSED (the
 * connection is gone: finish @x with admin_stream_close). */
int admin_stream_open(struct admin_exchange *x, const char *content_type, const char *headers);

/* Send @len bytes (copied) on a stream. Returns 0; GERR_CLOSED when the connection is gone; or
 * GERR_BUSY when the client has not read what was sent before (more than max_buffered_bytes
 * unwritten: nothing was queued; close the stream). */
int admin_stream_send(struct admin_exchange *x, const void *data, size_t len);

/* End a stream (what was sent is written, then the connection closes) and finish @x. */
void admin_stream_close(struct admin_exchange *x);

/* True while the client's connection is open. */
bool admin_exchange_open(const struct admin_exchange *x);

#endif
