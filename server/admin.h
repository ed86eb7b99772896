/* The admin HTTP/1.1 port (parser: llhttp from Debian's node-llhttp):
 *
 *   GET /healthz  200 "ok" while the process runs its loop
 *   GET /readyz   200 "ready", or 503 with the reason from the ready callback
 *   GET /metrics  200, Prometheus text format 0.0.4, from the metrics callback
 *   anything else 404; methods other than GET/HEAD 405; requests over the size limits 431/414.
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
 * memory is gone. */
void admin_close(struct admin *a, admin_closed_cb cb, void *data);

#endif
