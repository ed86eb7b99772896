/* Using a kubernetes sandbox: its main process's output (caps.logs) from the pod log API, commands
 * run in it (caps.exec) through the pod's exec subresource, and TCP connections to its ports
 * (caps.port_forward) through the pod's portforward subresource, both over WebSocket
 * (drivers/ws.h). Internal to drivers/: k8s.c fills its ops table with these and provides
 * k8s__pod_of. The contracts are those of drivers/driver.h; what differs is said here.
 *
 * The pod. The agent-sandbox controller names a Sandbox's pod after the Sandbox object, in its
 * namespace, and the driver's manifest names the container "sandbox" (K8S_CONTAINER). The pod is
 * found through the Sandbox object (the driver's cache or one request: k8s__pod_of), never from
 * the id alone.
 *
 * Logs. driver_logs_open reads the log in two requests, each on a connection of its own made
 * with the driver's TLS settings and bearer token: first GET .../pods/P/log?container=sandbox&
 * timestamps=true with tailLines and sinceTime from the query (what the kubelet holds now; while it
 * arrives driver_log_next waits for it rather than answering GERR_BUSY), then the same with
 * follow=true and sinceTime at the last line seen, skipping lines stamped at or before it. Each
 * line (its newline kept) is one piece, stamped with the kubelet's timestamp; a line longer than
 * the caller's buffer comes in several pieces with the same stamp. GERR_CLOSED once the follow
 * stream ends (the container ended or the pod went away). A reader thread fills a queue bounded
 * at K8S_LOG_QUEUE bytes and waits while it is full.
 *
 * Known limits: since_ms is sent as whole seconds and refined on the received stamps; a line
 * whose stamp equals (to the nanosecond) the last line of the first request is skipped. */
#ifndef GANTRY_DRIVERS_K8S_SESSIONS_H
#define GANTRY_DRIVERS_K8S_SESSIONS_H

#include <stdint.h>

#include "drivers/driver.h"
#include "drivers/k8s_http.h"

#define K8S_CONTAINER "sandbox"
#define K8S_LOG_QUEUE (1024u * 1024u)

/* In k8s.c: the Kubernetes namespace and pod name of sandbox @id of @ns, the Sandbox's phase, and
 * the driver's connection settings (its strings live as long as the driver). Takes the driver's
 * mutex. GERR_NOTFOUND, GERR_CANCELED (the driver is stopping), or a request's error. */
int k8s__pod_of(struct driver *d, const char *ns, const char *id, char kns[64], char pod[64],
                enum driver_phase *phase, struct k8s_http_config *hc, char *errmsg);

/* The ops (see driver_internal.h; called without the driver's mutex). */
int k8s_logs_open(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                  struct driver_log **out, char *errmsg);

/* A kubelet log timestamp ("2006-01-02T15:04:05.999999999Z", RFC 3339 in UTC with 0..9 fraction
 * digits) at the start of @line, followed by one space: 0 with *@ns (Unix nanoseconds) and *@used
 * (bytes including the space), or GERR_PROTO. Exposed for the tests. */
int k8s_log_stamp(const char *line, size_t len, int64_t *ns, size_t *used);

#endif
