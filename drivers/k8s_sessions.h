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
 * Exec. driver_exec_start upgrades GET .../pods/P/exec?container=sandbox&command=..&stdin=true&
 * stdout=true&stderr=(not tty)&tty= to a WebSocket offering v5.channel.k8s.io, then
 * v4.channel.k8s.io. Every message is binary, its first byte the channel: 0 stdin, 1 stdout,
 * 2 stderr, 3 the status (a Status object: Success is exit 0, Failure NonZeroExitCode carries the
 * code; any other Failure means the command did not run: its message goes to stderr and the exit
 * code is 127), 4 resize ({"Width","Height"}), 255 close (v5 only: the end of stdin). A bridge
 * thread moves bytes between the caller's socketpairs (three, or one with a TTY) and the
 * connection, holding at most 1 MiB per output (it stops reading the connection while the
 * caller is behind). Differences from the process driver: there is no signal channel
 * (driver_exec_signal sends SIGINT and SIGQUIT as ^C and ^\ with a TTY and answers GERR_INVAL
 * for anything else); the exit code of a command killed by a signal is 128 + the signal with
 * *signal 0 (the API does not say which it was); with v4 the end of stdin cannot be told to the
 * command; closing the exec closes the stream (the kubelet does not kill a command without a
 * TTY when its stream goes: it may run on); a stream that ends without a status is exit 255.
 *
 * Port-forward. driver_port_connect upgrades GET .../pods/P/portforward?ports=N offering
 * v4.channel.k8s.io, then portforward.k8s.io: channel 0 data, 1 errors, the first 2 bytes of each
 * the port (little-endian), skipped. The kubelet dials the port when the stream opens and reports
 * a failure on channel 1: driver_port_connect waits up to K8S_FORWARD_SETTLE_MS for it and answers
 * GERR_REFUSED with its text. driver_exec_close_stdin shuts the caller's write side only: the
 * protocol has no half-close, so the pod's side never sees it; the connection ends when the
 * pod's side closes or the caller closes the exec.
 *
 * Known limits: since_ms is sent as whole seconds and refined on the received stamps; a line
 * whose stamp equals (to the nanosecond) the last line of the first request is skipped. */
#ifndef GANTRY_DRIVERS_K8S_SESSIONS_H
#define GANTRY_DRIVERS_K8S_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"
#include "drivers/k8s_http.h"

#define K8S_CONTAINER         "sandbox"
#define K8S_LOG_QUEUE         (1024u * 1024u)
#define K8S_FORWARD_SETTLE_MS 200u

/* In k8s.c: the Kubernetes namespace and pod name of sandbox @id of @ns, the Sandbox's phase, and
 * the driver's connection settings (its strings live as long as the driver). Takes the driver's
 * mutex. GERR_NOTFOUND, GERR_CANCELED (the driver is stopping), or a request's error. */
int k8s__pod_of(struct driver *d, const char *ns, const char *id, char kns[64], char pod[64],
                enum driver_phase *phase, struct k8s_http_config *hc, char *errmsg);

/* The ops (see driver_internal.h; called without the driver's mutex). */
int k8s_logs_open(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                  struct driver_log **out, char *errmsg);

int k8s_exec_start(struct driver *d, const char *ns, const char *id, const struct driver_exec_spec *spec,
                   struct driver_exec **out, char *errmsg);
int k8s_port_connect(struct driver *d, const char *ns, const char *id, uint16_t port,
                     struct driver_exec **out, char *errmsg);

/* The exec status (channel 3): 0 with *@code 0..255 for Success or NonZeroExitCode, or *@code -1
 * and the message (printable ASCII, cut to @cap) for another Failure (the command did not run);
 * GERR_PROTO for anything else. Exposed for the tests and tests/fuzz/fuzz_ws.c. */
int k8s_exec_status_decode(const char *text, size_t len, int *code, char *msg, size_t cap);

/* A kubelet log timestamp ("2006-01-02T15:04:05.999999999Z", RFC 3339 in UTC with 0..9 fraction
 * digits, years 1970..2200) at the start of @line, followed by one space: 0 with *@ns (Unix nanoseconds) and
 * *@used (bytes including the space), or GERR_PROTO. Exposed for the tests. */
int k8s_log_stamp(const char *line, size_t len, int64_t *ns, size_t *used);

#endif
