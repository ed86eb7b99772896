/* Read consistency of the model-served reads (api/services/model_read.h). */
#include "api/services/model_read.h"

#include <inttypes.h>
#include <stdio.h>

#include "api/gate/gate.h"
#include "lib/clock.h"
#include "lib/err.h"

bool model_read_parse(const Gantry__V1__ReadOptions *o, struct model_read *r, char *why, size_t len)
{
    *r = (struct model_read){.mode = MODEL_READ_LINEARIZABLE};
    if (o == NULL) {
        return true;
    }
    if (o->min_revision != 0 && o->max_staleness_ms != 0) {
        snprintf(why, len, "read: min_revision and max_staleness_ms exclude each other: set at most one");
        return false;
    }
    if (o->max_staleness_ms > MODEL_MAX_STALENESS_MS) {
        snprintf(why, len, "read: max_staleness_ms %" PRIu32 " is over the maximum %u", o->max_staleness_ms,
                 MODEL_MAX_STALENESS_MS);
        return false;
    }
    if (o->min_revision != 0) {
        r->mode = MODEL_READ_MIN_REVISION;
        r->min_revision = o->min_revision;
    } else if (o->max_staleness_ms != 0) {
        r->mode = MODEL_READ_STALE;
        r->max_staleness_ms = o->max_staleness_ms;
    }
    return true;
}

enum model_read_wait_result model_read_wait(struct feed *f, const struct model_read *r,
                                            uint64_t call_deadline_ms, uint64_t *need, char *why, size_t len)
{
    *need = 0;
    if (f == NULL) {
        return MODEL_READ_STORE;
    }
    uint64_t now = clock_mono_ms(clock_system());
    if (r->mode == MODEL_READ_MIN_REVISION) {
        uint64_t deadline = now + MODEL_WAIT_MAX_MS;
        if (call_deadline_ms != 0) {
            /* answer before the client's own deadline fires, so it gets the reason */
            uint64_t d = call_deadline_ms > now + MODEL_DEADLINE_MARGIN_MS
                             ? call_deadline_ms - MODEL_DEADLINE_MARGIN_MS
                             : now;
            deadline = d < deadline ? d : deadline;
        }
        int rv = 0;
        if (feed_revision(f) < r->min_revision) {
            /* Not here yet: the feed's next poll (no extra leader read) says whether the revision
             * exists at all, so a revision in the future is refused within a poll instead of
             * holding a worker thread until the deadline. */
            uint64_t head = 0;
            rv = feed_next_head(f, deadline, &head);
            if (rv == 0 && head < r->min_revision) {
                snprintf(why, len,
                         "read: min_revision %" PRIu64 " is ahead of the cluster's revision %" PRIu64
                         " (a revision comes from an answer of this cluster: a List's revision, an "
                         "object's resource_version or a Get's %s)",
                         r->min_revision, head, MODEL_REVISION_TRAILER);
                return MODEL_READ_FUTURE;
            }
        }
        if (rv == 0) {
            rv = feed_wait(f, r->min_revision, deadline);
        }
        if (rv == GERR_CLOSED) {
            snprintf(why, len, "read: the replica is stopping");
            return MODEL_READ_CLOSED;
        }
        if (rv != 0) {
            snprintf(why, len,
                     "read: this replica has applied revision %" PRIu64 ", not yet the min_revision %" PRIu64
                     " asked for (waited %" PRIu64 " ms: the call's deadline less %u ms, at most %u ms)",
                     feed_revision(f), r->min_revision, clock_mono_ms(clock_system()) - now,
                     MODEL_DEADLINE_MARGIN_MS, MODEL_WAIT_MAX_MS);
            return MODEL_READ_TIMEOUT;
        }
        *need = r->min_revision;
        return MODEL_READ_READY;
    }
    if (r->mode == MODEL_READ_STALE) {
        uint64_t live = feed_live_since_ms(f);
        if (live != 0 && live + r->max_staleness_ms >= now) {
            return MODEL_READ_READY;
        }
    }
    uint64_t head = 0;
    if (feed_sync(f, now + MODEL_SYNC_TIMEOUT_MS, &head) != 0) {
        return MODEL_READ_STORE;
    }
    *need = head;
    return MODEL_READ_READY;
}

enum model_gate model_read_gate(struct gate_ctx *ctx, struct feed *f, bool model,
                                const Gantry__V1__ReadOptions *o, uint64_t *need)
{
    struct model_read r;
    char why[GERR_MSG_SIZE];
    *need = 0;
    if (!model_read_parse(o, &r, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return MODEL_GATE_ANSWERED;
    }
    if (!model && r.mode != MODEL_READ_MIN_REVISION) {
        return MODEL_GATE_STORE; /* the store is the leader's: linearizable, so within any staleness */
    }
    /* The call's store client goes back to the pool while it waits for the feed (a read index is
     * a leader round trip), or the pool's few clients would bound how many reads share one. */
    bool released = r.mode != MODEL_READ_STALE && ctx->cl != NULL;
    if (released) {
        gate_release_store(ctx);
    }
    enum model_read_wait_result w =
        model_read_wait(f, &r, grpc_call_deadline_ms(ctx->call), need, why, sizeof why);
    /* Back with a client for what follows (the model's answer may still read the store: a share,
     * a manager check, the fallback), not for the failures below, which answer with their reason. */
    if (released && (w == MODEL_READ_READY || w == MODEL_READ_STORE) && gate_acquire_store(ctx) != 0) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE, "the replica is overloaded: no store connection free");
        return MODEL_GATE_ANSWERED;
    }
    int status;
    switch (w) {
    case MODEL_READ_READY:
        return model ? MODEL_GATE_MODEL : MODEL_GATE_STORE;
    case MODEL_READ_TIMEOUT:
        status = GRPC_STATUS_DEADLINE_EXCEEDED;
        break;
    case MODEL_READ_FUTURE:
        status = GRPC_STATUS_OUT_OF_RANGE;
        break;
    case MODEL_READ_CLOSED:
        status = GRPC_STATUS_UNAVAILABLE;
        break;
    default:
        return MODEL_GATE_STORE;
    }
    gate_fail(ctx, status, "%s", why);
    return MODEL_GATE_ANSWERED;
}
