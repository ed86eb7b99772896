/* The change feed's one follower per replica (store/events.h writes the feed).
 *
 * One thread with one store_client polls the leader: every FEED_POLL_MS (or at once when a
 * feed_sync caller is waiting) it reads cluster_revision, then the events after its applied
 * revision up to that one, of every kind, with their payload, in revision order, in pages of at
 * most FEED_PAGE events, and reads the compaction marker (cluster_meta
 * events_compacted_revision) after the events, as a watch did: retention moves the marker in the
 * transaction that deletes events, so a marker at or below the applied revision proves nothing
 * was missed. The leader sees one poll per replica, whatever the number of consumers.
 *
 * Subscribers (struct feed_sub, registered before feed_start) are called on the feed thread, in
 * revision order, one at a time:
 *   on_resync(cl, rev): the feed cannot tell what happened up to @rev (its start, compaction past
 *     its applied revision, the cluster's revision going backwards after a restore): the
 *     subscriber reloads a consistent snapshot (one statement) at some revision >= @rev with @cl
 *     and ignores later events at or below its snapshot's revision;
 *   on_event(cl, ev): one change; @ev and everything it points to are the feed's, valid only
 *     during the call;
 *   on_applied(cl, rev): after each page and after each poll, even an empty one: every event up
 *     to @rev was delivered (the time for bookmarks and periodic work). It runs before
 *     feed_revision shows @rev, so a feed_wait or feed_sync caller that returns finds every
 *     subscriber at @rev or later.
 * @cl is the feed's own store client, usable only during the callback (for reads the subscriber
 * does once for all its consumers). A callback must not call feed_wait or feed_sync.
 *
 * Transient store errors (no leader, a timeout) are retried from the applied revision: events are
 * durable, so nothing is missed and no resync happens. */
#ifndef GANTRY_STORE_FEED_H
#define GANTRY_STORE_FEED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "store/client.h"

#define FEED_POLL_MS 100u
#define FEED_PAGE    1000u
/* Read-index batching: when the last revision read served FEED_SYNC_BUSY or more feed_sync callers
 * (reads are arriving faster than one round trip), the next read waits for more callers to join it
 * while they keep coming: it starts once FEED_SYNC_QUIET_US pass without a new caller, after
 * FEED_SYNC_LINGER_US (feed_set_linger_us) in all, or with FEED_SYNC_BATCH_MAX waiting. A read that
 * served one caller is followed by no wait, so callers one at a time never wait; the first caller
 * after a burst may wait FEED_SYNC_QUIET_US. Callers that gave up (their deadline) still count. */
#define FEED_SYNC_BUSY      2u
#define FEED_SYNC_LINGER_US 2000u
#define FEED_SYNC_QUIET_US  200u
#define FEED_SYNC_BATCH_MAX 64u

struct feed_event {
    uint64_t revision;
    const char *kind; /* "Sandbox", "Namespace", ... */
    const char *ns;   /* "" for cluster-scoped kinds */
    const char *object_id;
    const char *type;       /* "ADDED", "MODIFIED", "DELETED" */
    const uint8_t *payload; /* the packed object at this change (Sandbox only today); NULL: none */
    size_t payload_len;
};

typedef void (*feed_resync_cb)(struct store_client *cl, uint64_t rev, void *data);
typedef void (*feed_event_cb)(struct store_client *cl, const struct feed_event *ev, void *data);
typedef void (*feed_applied_cb)(struct store_client *cl, uint64_t rev, void *data);

/* Caller-owned; must outlive the feed once subscribed. */
struct feed_sub {
    feed_resync_cb on_resync;   /* required */
    feed_event_cb on_event;     /* required */
    feed_applied_cb on_applied; /* optional */
    void *data;
    struct feed_sub *next; /* private */
};

struct feed {
    /* private */
    struct store_client cl;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* applied moved; stop */
    /* A read-index read finished (reads_done moved), by the parity of its batch number: callers
     * wait for the read after the one in flight, so waking them by parity wakes only those the
     * finished read serves, not the next batch as well; stop. */
    pthread_cond_t done[2];
    pthread_cond_t wake; /* the feed thread's sleep: a sync waiter or stop */
    bool stopping;
    bool ready;             /* the first resync happened */
    uint64_t applied;       /* every event up to here was delivered */
    uint64_t reads_started; /* cluster_revision reads started (the read-index batch number) */
    uint64_t reads_done;    /* ... and finished successfully */
    uint64_t read_rev;      /* the revision the last finished read returned */
    uint64_t sync_need;     /* the read a feed_sync caller waits for (reads_started + 1) */
    uint64_t sync_waiting;  /* feed_sync callers waiting for that read */
    uint64_t last_served;   /* feed_sync callers the last read served */
    unsigned linger_us;     /* FEED_SYNC_LINGER_US; 0: no lingering */
    struct feed_sub *subs;
    unsigned poll_ms;
    atomic_uint_fast64_t polls, resyncs, events, syncs, sync_reads, errors, lingers;
    atomic_uint_fast64_t live_ms; /* see feed_live_since_ms */
};

/* Copies @cfg (its addresses must be valid only during the call); nothing runs yet. @poll_ms 0:
 * FEED_POLL_MS. Returns 0 or the store client's GERR_INVAL. */
int feed_init(struct feed *f, const struct store_client_config *cfg, unsigned poll_ms);

/* Before feed_start: how long a busy read index waits for more callers (FEED_SYNC_LINGER_US by
 * default; 0: never). */
void feed_set_linger_us(struct feed *f, unsigned us);

/* Before feed_start only: add @s (not copied). */
void feed_subscribe(struct feed *f, struct feed_sub *s);

/* Start the thread: the first poll resyncs every subscriber. 0 or GERR_NOMEM. */
int feed_start(struct feed *f);

/* Stop the thread (wakes waiters: they return GERR_CLOSED), join it and close the client. Safe on
 * a feed that was initialised but never started. */
void feed_close(struct feed *f);

/* The applied revision (0 before the first resync). Any thread. */
uint64_t feed_revision(struct feed *f);

/* When (clock_mono_ms of the system clock) the latest poll that delivered everything it read
 * started its cluster_revision read; 0: no such poll yet. Every event of a change committed
 * before that moment was delivered to every subscriber (and its callbacks returned) before this
 * value was published, so a consumer that sees it within X ms of now knows it has missed no change
 * committed more than X ms ago (api/gate/authn.h relies on this; docs/security.md). It does not
 * move while the leader is unreachable or polls fail. It is published before the applied revision
 * that poll reached, so a feed_sync that returns finds it from a poll that started after its call.
 * Any thread, lock-free. */
uint64_t feed_live_since_ms(struct feed *f);

/* Wait until the applied revision is at least @rev or @deadline_ms (clock_mono_ms of the system
 * clock) passes. 0, GERR_TIMEOUT or GERR_CLOSED. Any thread but the feed's. */
int feed_wait(struct feed *f, uint64_t rev, uint64_t deadline_ms);

/* A read index: learn the leader's current revision with one cluster_revision read shared by
 * every caller waiting at that moment (a caller arriving while a read is in flight waits for the
 * next one, which starts after its arrival, so it covers any write acknowledged before the call),
 * then wait until the applied revision reaches it; *@rev gets it. 0, GERR_TIMEOUT or GERR_CLOSED.
 * Any thread but the feed's. */
int feed_sync(struct feed *f, uint64_t deadline_ms, uint64_t *rev);

/* The leader's revision as read by the first poll that starts after this call, without asking for
 * one (unlike feed_sync: no extra leader read, the feed polls every FEED_POLL_MS anyway); so it
 * is at least the revision of any write acknowledged before the call. It does not wait for the
 * subscribers to apply it. 0, GERR_TIMEOUT or GERR_CLOSED. Any thread but the feed's. */
int feed_next_head(struct feed *f, uint64_t deadline_ms, uint64_t *rev);

/* gantry_feed_* families (docs/metrics.md); always written, zero before start. Any thread. */
void feed_metrics_write(struct feed *f, struct buf *out);

#endif
