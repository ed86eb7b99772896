/* A fenced lease in the store: at most one holder acts at a time, and a holder that lost the lease
 * can never act on stale authority (DESIGN.md section 6).
 *
 * The row (leases: name, holder, epoch, renewed_at_ms, duration_ms) changes only in transactions:
 *
 *   acquire   no row, or an empty holder (released): take it, epoch + 1.
 *             another holder: note the row as seen (holder, epoch, renewed_at_ms) and the time on
 *             THIS replica's monotonic clock; only once the very same row has been seen unchanged
 *             for the full duration may the contender take it, with a conditional update on that
 *             row, epoch + 1. Wall clocks are never compared between replicas.
 *   renew     the holder rewrites renewed_at_ms (strictly increasing) if holder and epoch are still
 *             its own. The holder's authority lasts until its own monotonic clock says the last
 *             successful renewal STARTED more than renew_deadline_ms ago (renew_deadline <
 *             duration), so it stops acting before any contender can have waited out the duration.
 *   release   on a clean stop: holder '' (the epoch stays), so a contender takes it at once.
 *
 * Safety argument, with both clocks measuring intervals at rates within a factor (1 + r): the
 * contender waits duration D from its first sight of the last renewal's row, which is after that
 * renewal committed; the holder stops acting renew_deadline R after that renewal started. Holder
 * and contender never act together if R (1 + r) < D / (1 + r); with the defaults (D 15 s, R 10 s)
 * this tolerates a rate difference of ~22 % between the two clocks, far beyond real drift. Clock
 * jumps do not matter (monotonic clocks). A paused holder (SIGSTOP, GC-like stalls) that resumes
 * past R stops before its next act, and every act is also fenced: lease_check_tx in the same
 * transaction as each write, and the epoch handed to the drivers, which refuse older epochs.
 *
 * Not thread-safe: one struct lease per holder thread. Blocking (store round trips). */
#ifndef GANTRY_LEASES_LEASE_H
#define GANTRY_LEASES_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/clock.h"
#include "store/client.h"

#define LEASE_DEFAULT_DURATION_MS       15000u
#define LEASE_DEFAULT_RENEW_DEADLINE_MS 10000u
#define LEASE_DEFAULT_RETRY_MS          2000u

struct lease_config {
    const char *name;           /* e.g. "reconciler" */
    const char *holder;         /* this replica's identity, e.g. "replica-2/<start uuid>" */
    uint64_t duration_ms;       /* 0 = default */
    uint64_t renew_deadline_ms; /* 0 = default; must be < duration */
    uint64_t retry_ms;          /* 0 = default: how often to renew or try */
    struct clock *clock;        /* NULL = clock_system() */
};

struct lease {
    char name[64], holder[128];
    uint64_t duration_ms, renew_deadline_ms, retry_ms;
    struct clock *clock;
    /* held */
    bool held;
    uint64_t epoch;
    uint64_t renewed_mono_ms; /* when the last successful renewal (or acquisition) started */
    int64_t last_renewed_at;  /* the renewed_at_ms we wrote */
    /* contender's observation */
    bool seen;
    char seen_holder[128];
    uint64_t seen_epoch;
    int64_t seen_renewed_at;
    uint64_t seen_since_mono_ms;
    char errmsg[GERR_MSG_SIZE];
};

/* GERR_INVAL for a bad configuration. */
int lease_init(struct lease *l, const struct lease_config *cfg);

/* One step: acquire (or keep observing) when not held, renew when held. *@held says whether this
 * replica holds the lease after the step; @epoch the epoch (0 when not held). Store errors are
 * returned (the lease stays held until its deadline passes: lease_valid). */
int lease_tick(struct lease *l, struct store_client *cl, bool *held, uint64_t *epoch);

/* May the holder act now? (held, and the last renewal started less than renew_deadline ago.) */
bool lease_valid(const struct lease *l);

/* In a write transaction of the holder: GERR_STALE ("lease lost") unless the row still names
 * this holder with this epoch. */
int lease_check_tx(struct store_tx *tx, const char *name, const char *holder, uint64_t epoch);

/* After a restore (store_tx_fn-shaped; @arg: const int64_t *, the wall time in ms): every lease is
 * released and its epoch jumps to max(epoch + 1, now_ms). The backends still carry the fence of
 * the cluster the backup came from, which may have raised its epochs after the backup was taken;
 * the drivers would refuse the restored cluster's older epochs (DRIVER_ERR_STALE) until enough
 * acquisitions climbed past them. Epochs count acquisitions, and each replica tries at most once
 * per lease_retry_ms (at least 50 ms), so a cluster gains far fewer than one epoch per millisecond:
 * no cluster restored earlier (with the same jump) or never restored can have reached the wall
 * time in ms, and the first holder after the restore is ahead of every epoch its predecessors
 * used (given clocks that are not wildly behind). */
int lease_restored_tx(struct store_tx *tx, void *arg);

/* Release on a clean stop (best effort). */
int lease_release(struct lease *l, struct store_client *cl);

/* Read the row for display: holder ("" if none), epoch, renewed_at_ms, duration_ms. GERR_NOTFOUND. */
int lease_read(struct store_client *cl, const char *name, char *holder, size_t holder_len, uint64_t *epoch,
               int64_t *renewed_at_ms, uint64_t *duration_ms);

#endif
