/* The lifecycle webhook's encoding (docs/platform-controller.md, "Lifecycle events"): which
 * lifecycle state a sandbox change is, the CloudEvent 1.0 (structured mode) that carries it, and
 * its signature. Pure: no store, no clock, no I/O; thread-safe. */
#ifndef GANTRY_SERVER_LIFECYCLE_EVENT_H
#define GANTRY_SERVER_LIFECYCLE_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/sandboxes.pb-c.h"

#define LIFECYCLE_SIGNATURE_HEADER "X-Gantry-Signature"
#define LIFECYCLE_SIGNATURE_SIZE   (7 + 64 + 1) /* "sha256=" + 64 hex digits + NUL */

/* The lifecycle state of one Sandbox change: @type "ADDED", "MODIFIED" or "DELETED", @phase the
 * change's SandboxStatus.Phase (ignored for DELETED). "provisioning", "ready", "failed",
 * "deleting", "deleted", "stopped", or NULL (no lifecycle state: UNSPECIFIED, UNKNOWN, or a value
 * this build does not know). The strings are static. */
const char *lifecycle_state(const char *type, int phase);

/* The CloudEvent of the change at revision @rev (committed at @at_ms, Unix ms) of sandbox
 * @object_id in namespace @ns, in state @state, as compact JSON: specversion 1.0, id
 * "<gateway_id>-<rev>", source @gateway_id, type "io.gantry.sandbox.<state>", subject
 * "<ns>/<name>" (the id when @sb is NULL), time (RFC 3339, UTC, ms), datacontenttype
 * application/json, the extension gantryrevision, and data: @sb's public fields (never its
 * environment, command, driver configuration or policy; providers by name) plus "state", and
 * "reason" and "message" (its first condition's) when @sb's phase is ERROR; with @sb NULL only
 * state, id and namespace. @sb is borrowed. Returns a string to free(), or NULL when jansson
 * cannot allocate. */
char *lifecycle_event_json(const char *gateway_id, uint64_t rev, int64_t at_ms, const char *state,
                           const Gantry__V1__Sandbox *sb, const char *ns, const char *object_id);

/* @out = "sha256=<lowercase hex of HMAC-SHA256(@key, @body)>", the value of
 * LIFECYCLE_SIGNATURE_HEADER. */
void lifecycle_event_sign(const unsigned char *key, size_t key_len, const char *body, size_t body_len,
                          char out[LIFECYCLE_SIGNATURE_SIZE]);

#endif
