/* Is a transfer target caught up with the leader? The rule every planned leadership transfer
 * follows (Cluster.TransferLeadership and the SIGTERM handover): docs/reliability.md,
 * "Leadership transfers".
 *
 * dqlite 1.11 can crash the leader when raft's TimeoutNow message to the target goes out behind
 * catch-up traffic to it (dqlite-protocol.md, section 4.2). So leadership goes only to a voter
 * whose Raft log ends where the leader's does, and has for a settling time: then no append is
 * owed to it and none is queued ahead of TimeoutNow. The leader's log is read from its own
 * directory; the target's last entries come from the target's replica (the probe function,
 * which gantryd implements over the forwarding channel), and raft/raftlog.h compares them.
 *
 * For the last stretch the replica stops submitting writes to its node (store_writer_pause
 * through the pause hook), so the leader's log stops growing, a caught-up target stays caught up,
 * and none of the replica's requests is in flight when leadership moves. */
#ifndef GANTRY_RAFT_CATCHUP_H
#define GANTRY_RAFT_CATCHUP_H

#include <stdint.h>

#include "raft/raftlog.h"

/* Ask member @node_id's replica for the last entries of its node's log (oldest first, at most
 * RAFTLOG_PROBE_TAIL, their number in *@n). 0, or an error with @errmsg (GERR_MSG_SIZE). Called
 * on the thread that runs catchup_ready; may block up to about a second. */
typedef int (*catchup_probe_fn)(void *arg, uint64_t node_id, struct raftlog_entry_id *tail, unsigned *n,
                                char *errmsg);

struct catchup {
    const char *dir; /* this (the leader's) node's data directory */
    /* Optional: a reader of @dir that keeps what it scanned (raft/raftlog.h), owned by the caller
     * and valid while this is used; NULL: every read scans the segments again. */
    struct raftlog_reader *reader;
    catchup_probe_fn probe;
    /* Stop this replica's writes to the node (bounded: the batch in progress ends first) and let
     * them go again (pauses nest). May be NULL (nothing to pause). */
    void (*pause)(void *arg);
    void (*resume)(void *arg);
    void *arg;
};

#define CATCHUP_NEAR_ENTRIES 64u    /* close enough to pause writes for the last stretch */
#define CATCHUP_SETTLE_MS    300u   /* caught up for this long before a transfer */
#define CATCHUP_FINAL_MS     3000u  /* the longest writes stay paused waiting for the last stretch */
#define CATCHUP_TIMEOUT_MS   10000u /* the default bound of the whole wait */

/* Get ready to transfer leadership to @node_id, within @timeout_ms (at least one probe is made):
 * first, with writes flowing, until the target is within CATCHUP_NEAR_ENTRIES of the leader; then,
 * with this replica's writes paused, until it has been caught up (lag 0) for CATCHUP_SETTLE_MS,
 * for at most CATCHUP_FINAL_MS. 0: caught up, writes paused: transfer, then call catchup_done.
 * Otherwise GERR_UNAVAILABLE with writes resumed, *@lag the last lag seen (RAFTLOG_LAG_UNKNOWN
 * when it could not be measured) and @errmsg saying how far behind the member is or why it could
 * not be told ("member 3 is 25 Raft entries behind the leader: it is catching up", "member 3 did
 * not answer the catch-up probe: ..."). */
int catchup_ready(const struct catchup *c, uint64_t node_id, unsigned timeout_ms, uint64_t *lag,
                  char *errmsg);

/* One measurement, as catchup_ready makes them, without waiting or pausing anything: 0 with *@lag
 * the number of entries this node's log holds after member @node_id's last one
 * (RAFTLOG_LAG_UNKNOWN when its last entries are not in this log: further behind than the log
 * kept, or diverged), or the probe's error (GERR_UNAVAILABLE, GERR_TIMEOUT, ...) or the local
 * read's with @errmsg. Blocks for the probe (up to about a second). For the lag gauge of
 * /metrics, which the leader's replica refreshes once a second (docs/metrics.md). */
int catchup_measure(const struct catchup *c, uint64_t node_id, uint64_t *lag, char *errmsg);

/* The other way round, for readiness (/readyz): does this node's log hold the last entries of
 * member @leader_id's log? The leader's replica is probed first and this node's log read after, so
 * a follower keeping up holds them. 0: it does (this log may hold a few more); GERR_UNAVAILABLE
 * with @errmsg when it does not ("this replica's Raft log does not hold the leader's last entries:
 * it is catching up"); the probe's or the local read's error otherwise, with @errmsg. Blocks for
 * the probe (up to about a second). */
int catchup_self(const struct catchup *c, uint64_t leader_id, char *errmsg);

/* After a successful catchup_ready (whatever became of the transfer): writes go again. */
void catchup_done(const struct catchup *c);

#endif
