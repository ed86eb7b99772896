/* The lifecycle webhook (docs/platform-controller.md, "Lifecycle events"): sandbox changes from the
 * change feed's events table, mapped to lifecycle states and POSTed as CloudEvents 1.0 (structured
 * mode, application/cloudevents+json, one event per POST) to one configured URL. The mapping and
 * the encoding are server/lifecycle_event.h; this is the delivery.
 *
 * Who delivers: only the replica that holds the reconciler lease (@held says so, with its epoch).
 * Every move of the durable cursor (cluster_meta "lifecycle_webhook_cursor": the revision of the
 * last change delivered or given up) goes through the writer in a transaction fenced by that epoch
 * (@fence_tx), so a replica that lost the lease can no longer move it; it stops POSTing at its next
 * @held check (before every attempt, and about once a second during a POST, which is then
 * aborted), so two replicas POST together at most for the time the old holder takes to notice
 * (bounded by the lease's renew deadline). @held must be cheap: it runs on libcurl's progress
 * callback.
 *
 * Happy path, one thread: while held, read the cursor (once per epoch; none stored: start at the
 * current cluster revision and store it), read up to 100 Sandbox events after it with their
 * payloads, read the compaction marker, then POST each event in revision order and move the cursor
 * past it. At-least-once: a holder that dies after a POST and before the cursor write makes the
 * next holder POST the same change again, with the same CloudEvent id ("<gateway>-<revision>").
 *
 * Failure modes: a transport error, a timeout or an answer other than 2xx is retried with
 * exponential backoff (backoff_ms doubling to backoff_max_ms), the same event again, never a later
 * one first. After max_attempts failures of one event it is dropped: an audit event (OCSF API
 * Activity, operation "lifecycle_webhook/deliver", status Failure) is written in the transaction
 * that moves the cursor past it. Events that retention deleted before they were delivered (the
 * compaction marker is past the cursor) are dropped the same way, one audit event for the gap. A
 * change whose phase did not change since the previous event of that sandbox that this holder saw
 * is skipped (not POSTed), so a holder change may repeat one state once per sandbox.
 *
 * The secret (an HMAC-SHA256 key, read once at start) is never logged; the signature header is
 * X-Gantry-Signature: sha256=<hex of HMAC-SHA256(key, body)>. */
#ifndef GANTRY_SERVER_LIFECYCLE_HOOK_H
#define GANTRY_SERVER_LIFECYCLE_HOOK_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"
#include "store/client.h"
#include "store/writer.h"

#define LIFECYCLE_HOOK_CURSOR_KEY "lifecycle_webhook_cursor"

/* Does this replica hold the reconciler lease now? *@epoch gets its epoch. Any thread. */
typedef bool (*lifecycle_hook_held_fn)(void *arg, uint64_t *epoch);
/* Inside a write transaction: GERR_STALE unless the lease is still held with @epoch. */
typedef int (*lifecycle_hook_fence_fn)(struct store_tx *tx, uint64_t epoch, void *arg);

struct lifecycle_hook_config {
    struct store_client_config store; /* its own leader-following client (addresses must outlive it) */
    struct store_writer *writer;      /* the cursor and audit writes (borrowed) */
    const char *url;                  /* http:// or https:// */
    const char *ca_file;              /* https: the receiver's CA bundle; NULL or "": system CAs */
    const char *secret_file;          /* NULL or "": no signature header */
    const char *gateway_id;           /* CloudEvent source, and the id's prefix */
    uint64_t replica_id;
    unsigned timeout_ms;     /* one POST, connect included; 0 = 5000 */
    unsigned max_attempts;   /* failures of one event before it is dropped; 0 = 10 */
    unsigned backoff_ms;     /* first retry delay; 0 = 500 */
    unsigned backoff_max_ms; /* cap; 0 = 30000 */
    unsigned poll_ms;        /* how often to look for new events; 0 = 200 */
    lifecycle_hook_held_fn held;
    lifecycle_hook_fence_fn fence_tx;
    void *fence_arg;
};

/* Read the secret file (at most 4096 bytes, trailing whitespace trimmed, not empty), check the
 * URL, start the thread. @cfg's strings are copied. 0, or GERR_INVAL / the file's error with a
 * message in @errmsg that names the key and never quotes the secret. */
struct lifecycle_hook;
int lifecycle_hook_start(const struct lifecycle_hook_config *cfg, struct lifecycle_hook **out, char *errmsg);

/* Stop (a backoff wait ends at once, a POST under way within about a second), join, wipe the secret,
 * free. NULL is fine. */
void lifecycle_hook_stop(struct lifecycle_hook *h);

/* The gantry_lifecycle_webhook_* families (docs/metrics.md), always written: @h NULL (no webhook
 * configured) writes zeros. Any thread. */
void lifecycle_hook_metrics_write(struct lifecycle_hook *h, struct buf *out);

#endif
