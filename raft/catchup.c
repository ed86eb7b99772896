/* Waiting until a transfer target's Raft log ends where the leader's does. See catchup.h. */
#include "raft/catchup.h"

#include <inttypes.h>
#include <stdio.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/mem.h"

/* The leader's entries looked through for the target's tail: far more than the 512 + 512 a
 * default replica keeps (docs/configuration.md); a target further behind is "unknown". */
#define LEADER_TAIL_MAX 65536u
#define PROBE_EVERY_MS  50u

/* This node's last entries, through the reader when there is one. */
static int own_tail(const struct catchup *c, struct raftlog_entry_id *out, unsigned max, unsigned *n,
                    char *errmsg)
{
    return c->reader != NULL ? raftlog_reader_tail(c->reader, out, max, n, errmsg)
                             : raftlog_tail(c->dir, out, max, n, errmsg);
}

/* One measurement: 0 with *lag, or the probe's or the leader's read error. */
static int measure(const struct catchup *c, uint64_t node_id, struct raftlog_entry_id *leader, uint64_t *lag,
                   char *errmsg)
{
    struct raftlog_entry_id tail[RAFTLOG_PROBE_TAIL];
    unsigned n_tail = 0, n_leader = 0;
    char why[GERR_MSG_SIZE] = "";
    int rv = c->probe(c->arg, node_id, tail, &n_tail, why);
    if (rv != 0) {
        gerr_set(errmsg, "member %" PRIu64 " did not answer the catch-up probe: %s", node_id, why);
        return rv;
    }
    /* The newest entries first (the newest segments only); the whole retained log only when the
     * target's entries are not among them. */
    for (unsigned window = 256; window <= LEADER_TAIL_MAX; window *= 16) {
        rv = own_tail(c, leader, window, &n_leader, why);
        if (rv != 0) {
            gerr_set(errmsg, "the leader's own Raft log could not be read: %s", why);
            return rv;
        }
        *lag = raftlog_lag(leader, n_leader, tail, n_tail);
        if (*lag != RAFTLOG_LAG_UNKNOWN || n_leader < window) {
            break;
        }
    }
    if (*lag == RAFTLOG_LAG_UNKNOWN) {
        gerr_set(errmsg,
                 "member %" PRIu64
                 " is further behind the leader than the %u Raft entries the leader keeps (or "
                 "its log diverged): it is catching up",
                 node_id, n_leader);
    } else if (*lag > 0) {
        gerr_set(errmsg, "member %" PRIu64 " is %" PRIu64 " Raft entr%s behind the leader: it is catching up",
                 node_id, *lag, *lag == 1 ? "y" : "ies");
    }
    return 0;
}

/* Measure until the lag has been at most @max_lag for @settle_ms, or @deadline passes. */
static int wait_lag(const struct catchup *c, uint64_t node_id, uint64_t max_lag, unsigned settle_ms,
                    uint64_t deadline, struct raftlog_entry_id *leader, uint64_t *lag, char *errmsg)
{
    struct clock *clk = clock_system();
    uint64_t since = 0;
    for (;;) {
        int rv = measure(c, node_id, leader, lag, errmsg);
        uint64_t now = clock_mono_ms(clk);
        if (rv == 0 && *lag <= max_lag) {
            if (since == 0) {
                since = now;
            }
            if (now - since >= settle_ms) {
                return 0;
            }
        } else {
            since = 0;
        }
        if (now >= deadline) {
            if (rv == 0 && *lag <= max_lag) {
                gerr_set(errmsg,
                         "member %" PRIu64 " caught up only %" PRIu64
                         " ms ago; leadership goes to a member caught "
                         "up for %u ms",
                         node_id, now - since, settle_ms);
            }
            return GERR_UNAVAILABLE;
        }
        clk->sleep_ns(clk, (uint64_t)PROBE_EVERY_MS * 1000000u);
    }
}

int catchup_ready(const struct catchup *c, uint64_t node_id, unsigned timeout_ms, uint64_t *lag, char *errmsg)
{
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + timeout_ms;
    struct raftlog_entry_id *leader = mem_alloc(sizeof *leader * LEADER_TAIL_MAX);
    *lag = RAFTLOG_LAG_UNKNOWN;
    int rv = wait_lag(c, node_id, CATCHUP_NEAR_ENTRIES, 0, deadline, leader, lag, errmsg);
    if (rv == 0) {
        if (c->pause != NULL) {
            c->pause(c->arg);
        }
        uint64_t now = clock_mono_ms(clk);
        uint64_t final = now + CATCHUP_FINAL_MS < deadline ? now + CATCHUP_FINAL_MS : deadline;
        rv = wait_lag(c, node_id, 0, CATCHUP_SETTLE_MS, final, leader, lag, errmsg);
        if (rv != 0 && c->resume != NULL) {
            c->resume(c->arg);
        }
    }
    mem_free(leader);
    return rv;
}

int catchup_measure(const struct catchup *c, uint64_t node_id, uint64_t *lag, char *errmsg)
{
    struct raftlog_entry_id *leader = mem_alloc(sizeof *leader * LEADER_TAIL_MAX);
    *lag = RAFTLOG_LAG_UNKNOWN;
    int rv = measure(c, node_id, leader, lag, errmsg);
    mem_free(leader);
    return rv;
}

int catchup_self(const struct catchup *c, uint64_t leader_id, char *errmsg)
{
    struct raftlog_entry_id tail[RAFTLOG_PROBE_TAIL];
    unsigned n_tail = 0, n_own = 0;
    char why[GERR_MSG_SIZE] = "";
    int rv = c->probe(c->arg, leader_id, tail, &n_tail, why);
    if (rv != 0) {
        gerr_set(errmsg, "the leader's replica (member %" PRIu64 ") did not answer the catch-up probe: %s",
                 leader_id, why);
        return rv;
    }
    if (n_tail == 0) {
        return 0; /* the leader's log is empty: nothing to hold */
    }
    /* A follower keeping up holds the leader's last entries among its newest ones; a few hundred
     * more entries (written since the probe) are looked through, not the whole log. */
    struct raftlog_entry_id *own = mem_alloc(sizeof *own * 4096u);
    rv = own_tail(c, own, 4096u, &n_own, why);
    if (rv != 0) {
        gerr_set(errmsg, "this replica's Raft log could not be read: %s", why);
    } else if (raftlog_lag(own, n_own, tail, n_tail) == RAFTLOG_LAG_UNKNOWN &&
               !(n_own > 0 && n_own < n_tail &&
                 raftlog_lag(own, n_own, tail + (n_tail - n_own), n_own) == 0)) {
        /* The second test: a node that installed a snapshot keeps only the entries after it, which
         * may be fewer than the probe's tail; then every one of them must be the leader's newest.
         * Without it such a replica stayed unready until RAFTLOG_PROBE_TAIL more entries were
         * written, forever on a quiet cluster. */
        gerr_set(errmsg,
                 "this replica's Raft log does not hold the leader's last entries: it is catching up");
        rv = GERR_UNAVAILABLE;
    }
    mem_free(own);
    return rv;
}

void catchup_done(const struct catchup *c)
{
    if (c->resume != NULL) {
        c->resume(c->arg);
    }
}
