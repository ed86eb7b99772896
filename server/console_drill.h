/* The console's leadership drill (docs/console.md, "Failover drills"): a Platform Admin transfers
 * Raft leadership and watches the cluster settle, with the unavailability window measured.
 *
 * How it runs, on a thread of its own (one drill at a time per replica):
 *   1. Cluster.TransferLeadership is called for the admin (through the gate, with their credential:
 *      it is authorized and audited like any call), to @target (0: the server picks);
 *   2. when it returns, a probe thread writes one row (cluster_meta "console_drill_probe") through
 *      this replica's writer as fast as each write commits, recording when each committed. Not
 *      before: the leader transfers only to a target whose log stays level with its own
 *      (raft/catchup.h) and pauses only its own replica's writes, so probes from here could keep
 *      the target behind;
 *   3. the drill waits until this replica's membership view names a leader other than the old one
 *      and every member is reachable (at most 20 s), then probes for 1 s more;
 *   4. the result: the old and new leader, how long the transfer call took, how long until the view
 *      settled, and the unavailability window: the longest time between two consecutive committed
 *      probe writes, the first gap counted from the start of the transfer call (a write is the
 *      thing a failover makes unavailable; the window includes the whole call, the catch-up wait
 *      with the leader's writes paused among it, so it is an upper bound).
 * The drill never runs unless the caller may call Cluster.GetLeader (platform_admin) first.
 *
 * Threads: console_drill_start and console_drill_state from any thread; console_drill_free after
 * the loop stopped (it waits for a running drill). */
#ifndef GANTRY_SERVER_CONSOLE_DRILL_H
#define GANTRY_SERVER_CONSOLE_DRILL_H

#include <stdint.h>

#include <jansson.h>

#include "raft/replica.h"
#include "server/console_feed.h"
#include "store/writer.h"

#define CONSOLE_DRILL_SETTLE_MS 20000u

struct console_drill;

struct console_drill *console_drill_new(const struct console_feed *feed, struct replica *replica,
                                        struct store_writer *writer);

/* Start a drill for the holder of @authorization (copied) from @peer. Returns 0 (started: its
 * progress shows in console_drill_state), GERR_BUSY (a drill is running), GERR_PERM (the caller may
 * not: @res has the API's answer), GERR_NOMEM (no thread). */
int console_drill_start(struct console_drill *d, const char *authorization, const char *peer, uint64_t target,
                        struct console_call *res);

/* The last drill as JSON ({"state": "idle"} before any): state running|done|failed, by, from_leader,
 * to_leader, target_id, started_at_ms, transfer_ms, settled_ms, window_ms, probes, probe_failures,
 * message. A new reference. */
json_t *console_drill_state(struct console_drill *d);

/* Wait for a running drill and free @d. Set the feed's stop flag first: the drill then skips its
 * settle wait, so this waits at most for the transfer call and one probe write in flight (each at
 * most 5 s), not the ~21 s a whole drill may take. */
void console_drill_free(struct console_drill *d);

#endif
