/* How a Get or List answered from a replica's in-memory model waits for it (gantry.v1.ReadOptions,
 * docs/resources.md "Read consistency"). Shared by the Sandboxes and Namespaces models.
 *
 *   linearizable (no option): feed_sync, a read index: the answer reflects every write acknowledged
 *     before the call arrived. If the feed cannot get there within MODEL_SYNC_TIMEOUT_MS the caller
 *     reads the store (the leader) instead, as before the options existed.
 *   min_revision R: feed_wait(R) until MODEL_DEADLINE_MARGIN_MS before the call's deadline (so the
 *     client gets the reason, not its own timeout), at most MODEL_WAIT_MAX_MS; no leader round trip.
 *     When the model does not hold R yet, the feed's next poll tells whether R exists: above the
 *     leader's revision it is OUT_OF_RANGE at once (feed_next_head). The answer reflects revision R
 *     or later. Not reached (the leader unreachable): DEADLINE_EXCEEDED. max_staleness_ms B: if the feed was
 * live within B (feed_live_since_ms, store/feed.h: every change committed before that moment was applied),
 * answered at once; the answer then misses no change committed more than B ms before the call arrived. Else
 * as linearizable.
 *
 * The revision an answer reflects (the model's applied revision when it answered) is a List
 * response's revision and a Get's trailing metadata MODEL_REVISION_TRAILER. */
#ifndef GANTRY_API_SERVICES_MODEL_READ_H
#define GANTRY_API_SERVICES_MODEL_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/meta.pb-c.h"
#include "store/feed.h"

#define MODEL_SYNC_TIMEOUT_MS                                                                                \
    2000u /* a linearizable read waits this long for the feed, then reads the store */
#define MODEL_WAIT_MAX_MS        5000u  /* min_revision waits at most this long, whatever the deadline */
#define MODEL_DEADLINE_MARGIN_MS 200u   /* min_revision gives up this long before the call's deadline */
#define MODEL_MAX_STALENESS_MS   60000u /* the largest max_staleness_ms accepted */
#define MODEL_REVISION_TRAILER   "x-gantry-revision"

enum model_read_mode { MODEL_READ_LINEARIZABLE, MODEL_READ_MIN_REVISION, MODEL_READ_STALE };

struct model_read {
    enum model_read_mode mode;
    uint64_t min_revision;
    uint32_t max_staleness_ms;
};

/* Validate @o (NULL: linearizable) into @r. false with a message in @why (the caller answers
 * INVALID_ARGUMENT, nothing read): both options set, or max_staleness_ms over
 * MODEL_MAX_STALENESS_MS. */
bool model_read_parse(const Gantry__V1__ReadOptions *o, struct model_read *r, char *why, size_t len);

enum model_read_wait_result {
    MODEL_READ_READY,   /* the model may answer once it holds at least *@need */
    MODEL_READ_STORE,   /* linearizable and the feed did not catch up: read the store instead */
    MODEL_READ_TIMEOUT, /* min_revision not reached in time: DEADLINE_EXCEEDED with @why */
    MODEL_READ_FUTURE,  /* min_revision above the leader's revision: OUT_OF_RANGE with @why */
    MODEL_READ_CLOSED,  /* the feed is stopping: UNAVAILABLE with @why */
};

/* Wait as @r asks on @f (NULL: MODEL_READ_STORE for linearizable and stale reads, a
 * min_revision read waits nothing and gets MODEL_READ_STORE too, the store being the leader's).
 * @call_deadline_ms: grpc_call_deadline_ms (0: none). *@need gets the revision the model must hold
 * to answer (0 for a stale read answered at once). Any thread but the feed's. */
enum model_read_wait_result model_read_wait(struct feed *f, const struct model_read *r,
                                            uint64_t call_deadline_ms, uint64_t *need, char *why, size_t len);

/* The whole decision of a model-served Get or List: parse @o, then wait on @f as it asks.
 * @model: this replica may answer from its model (false: config model_reads off, or no model; a
 * min_revision read still waits for the feed, then the store answers).
 *   MODEL_GATE_MODEL: answer from the model once it holds *@need;
 *   MODEL_GATE_STORE: read the store (the leader's: linearizable, so within any staleness);
 *   MODEL_GATE_ANSWERED: the call was failed (gate_fail) with its status and the reason: a bad
 *     option (INVALID_ARGUMENT), a min_revision in the future (OUT_OF_RANGE) or not reached in time
 *     (DEADLINE_EXCEEDED), the replica stopping (UNAVAILABLE).
 * Worker threads only (it may block up to the call's deadline, at most MODEL_WAIT_MAX_MS). While it
 * waits for the feed (any read but a stale one answered at once), the call's pooled store client
 * goes back to the pool (gate_release_store): on MODEL_GATE_MODEL and MODEL_GATE_STORE ctx->cl is
 * set again, possibly to another client (nothing may be kept from the one before); on
 * MODEL_GATE_ANSWERED it may be NULL. */
enum model_gate { MODEL_GATE_MODEL, MODEL_GATE_STORE, MODEL_GATE_ANSWERED };
struct gate_ctx;
enum model_gate model_read_gate(struct gate_ctx *ctx, struct feed *f, bool model,
                                const Gantry__V1__ReadOptions *o, uint64_t *need);

#endif
