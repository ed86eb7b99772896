/* The admin HTTP/1.1 port (parser: llhttp from Debian's node-llhttp):
 *
 *   GET /healthz  200 "ok" while the process runs its loop
 *   GET /readyz   200 "ready", or 503 with the reason from the ready callback
 *   GET /metrics  200, Prometheus text format 0.0.4, from the metrics callback
 *   anything else 404; methods other than GET/HEAD 405; requests over the size limits 431/414.
 *
 * Keep-alive is honoured; each connection is closed after 30 s without a request, and at most
 * 64 connections are open at once. Loop thread only. */
#ifndef GANTRY_SERVER_ADMIN_H
#define GANTRY_SERVER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

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
};

/* Bind and listen. Returns 0, GERR_INVAL (bad address) or a translated libuv error, with the
 * reason in @errmsg. On a bind/listen error the listener handle is closed asynchronously and
 * frees itself: run the loop before closing it. */
int admin_start(uv_loop_t *loop, const struct admin_config *cfg, struct admin **out, char *errmsg);

int admin_port(const struct admin *a);

/* Close the listener and every connection; @cb fires once, asynchronously, after which the
 * memory is gone. */
void admin_close(struct admin *a, admin_closed_cb cb, void *data);

#endif
