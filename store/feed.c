/* The change feed's follower (store/feed.h).
 *
 * The happy path, once per poll: start a read (reads_started++), SELECT the cluster revision,
 * publish it (reads_done, read_rev: feed_sync waiters take it), then page through the events
 * after `applied` up to it, read the compaction marker, deliver the page to every subscriber,
 * advance `applied` and broadcast. Then sleep FEED_POLL_MS, or less when a feed_sync caller
 * arrives.
 *
 * Failure modes: a store error (no leader, timeout, connection lost) ends the poll; the next one
 * starts again from `applied`. The marker above `applied` (retention deleted events the feed had
 * not read) or the cluster revision below `applied` (a restore) resyncs every subscriber at the
 * cluster's revision. */
#include "store/feed.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "store/events.h"

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static void abs_deadline(uint64_t deadline_ms, struct timespec *ts)
{
    /* The conditions use CLOCK_MONOTONIC, the system clock's mono_ns. */
    ts->tv_sec = (time_t)(deadline_ms / 1000u);
    ts->tv_nsec = (long)((deadline_ms % 1000u) * 1000000u);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void abs_after_us(unsigned us, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += (long)us * 1000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

int feed_init(struct feed *f, const struct store_client_config *cfg, unsigned poll_ms)
{
    memset(f, 0, sizeof *f);
    int rv = store_client_init(&f->cl, cfg);
    if (rv != 0) {
        return rv;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, &ca);
    pthread_cond_init(&f->done[0], &ca);
    pthread_cond_init(&f->done[1], &ca);
    pthread_cond_init(&f->wake, &ca);
    pthread_condattr_destroy(&ca);
    f->poll_ms = poll_ms != 0 ? poll_ms : FEED_POLL_MS;
    f->linger_us = FEED_SYNC_LINGER_US;
    return 0;
}

void feed_set_linger_us(struct feed *f, unsigned us)
{
    assert(!f->started);
    f->linger_us = us;
}

void feed_subscribe(struct feed *f, struct feed_sub *s)
{
    assert(!f->started);
    assert(s->on_resync != NULL && s->on_event != NULL);
    s->next = NULL;
    struct feed_sub **p = &f->subs;
    while (*p != NULL) {
        p = &(*p)->next;
    }
    *p = s;
}

static void resync_all(struct feed *f, uint64_t rev)
{
    for (struct feed_sub *s = f->subs; s != NULL; s = s->next) {
        s->on_resync(&f->cl, rev, s->data);
    }
    atomic_fetch_add(&f->resyncs, 1);
}

static void applied_all(struct feed *f, uint64_t rev)
{
    for (struct feed_sub *s = f->subs; s != NULL; s = s->next) {
        if (s->on_applied != NULL) {
            s->on_applied(&f->cl, rev, s->data);
        }
    }
}

static void set_applied(struct feed *f, uint64_t rev)
{
    pthread_mutex_lock(&f->mu);
    f->applied = rev;
    f->ready = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

static const char *text(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

/* One poll. Returns the store's errors. */
static int feed_poll(struct feed *f)
{
    pthread_mutex_lock(&f->mu);
    if (f->sync_need > f->reads_started) {
        atomic_fetch_add(&f->sync_reads, 1); /* this read serves every feed_sync waiting now */
    }
    f->last_served = f->sync_waiting;
    f->sync_waiting = 0;
    uint64_t batch = ++f->reads_started;
    bool ready = f->ready;
    uint64_t applied = f->applied;
    pthread_mutex_unlock(&f->mu);
    atomic_fetch_add(&f->polls, 1);
    uint64_t started_ms = now_ms(); /* before the revision read: see feed_live_since_ms */
    int64_t upto = 0;
    int rv =
        store_client_query_int(&f->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &upto);
    if (rv != 0) {
        return rv;
    }
    pthread_mutex_lock(&f->mu);
    bool skipped = f->reads_done + 1 != batch; /* a read failed in between: its waiters are served too */
    f->reads_done = batch;
    f->read_rev = (uint64_t)upto;
    pthread_cond_broadcast(&f->done[batch & 1]);
    if (skipped) {
        pthread_cond_broadcast(&f->done[(batch + 1) & 1]);
    }
    pthread_mutex_unlock(&f->mu);
    if (!ready || (uint64_t)upto < applied) {
        if (ready) {
            LOG_WARN("change feed: the cluster's revision %" PRId64 " is below the feed's %" PRIu64
                     " (a restore?): resyncing",
                     upto, applied);
        }
        resync_all(f, (uint64_t)upto);
        applied_all(f, (uint64_t)upto);
        atomic_store(&f->live_ms, started_ms);
        set_applied(f, (uint64_t)upto);
        return 0;
    }
    while (applied < (uint64_t)upto) {
        struct proto_rows ev;
        proto_rows_init(&ev, 0);
        struct proto_value p[] = {proto_int((int64_t)applied), proto_int(upto), proto_int(FEED_PAGE)};
        rv =
            store_client_query(&f->cl,
                               "SELECT revision, kind, namespace, object_id, type, payload FROM events WHERE "
                               "revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
                               p, 3, &ev);
        int64_t compacted = 0;
        if (rv == 0) {
            rv = store_events_compacted(&f->cl, &compacted);
        }
        if (rv != 0) {
            proto_rows_close(&ev);
            return rv;
        }
        if ((uint64_t)compacted > applied) {
            proto_rows_close(&ev);
            LOG_WARN("change feed: events after %" PRIu64 " up to %" PRId64
                     " were deleted by retention before the feed read them: resyncing",
                     applied, compacted);
            resync_all(f, (uint64_t)upto);
            applied_all(f, (uint64_t)upto);
            atomic_store(&f->live_ms, started_ms);
            set_applied(f, (uint64_t)upto);
            return 0;
        }
        uint64_t reached =
            ev.n_rows == FEED_PAGE ? (uint64_t)proto_rows_at(&ev, ev.n_rows - 1, 0)->u.i : (uint64_t)upto;
        for (size_t i = 0; i < ev.n_rows; i++) {
            const struct proto_value *pl = proto_rows_at(&ev, i, 5);
            struct feed_event e = {.revision = (uint64_t)proto_rows_at(&ev, i, 0)->u.i,
                                   .kind = text(&ev, i, 1),
                                   .ns = text(&ev, i, 2),
                                   .object_id = text(&ev, i, 3),
                                   .type = text(&ev, i, 4)};
            if (pl->type == PROTO_BLOB && pl->u.b.n > 0) {
                e.payload = (const uint8_t *)pl->u.b.s;
                e.payload_len = pl->u.b.n;
            }
            for (struct feed_sub *s = f->subs; s != NULL; s = s->next) {
                s->on_event(&f->cl, &e, s->data);
            }
        }
        atomic_fetch_add(&f->events, ev.n_rows);
        proto_rows_close(&ev);
        applied = reached;
        applied_all(f, applied);
        if (applied == (uint64_t)upto) {
            atomic_store(&f->live_ms, started_ms); /* before feed_sync callers see it applied */
        }
        set_applied(f, applied);
    }
    if (applied == (uint64_t)upto) {
        applied_all(f, applied); /* an empty poll still ticks bookmarks and refreshes */
    }
    atomic_store(&f->live_ms, started_ms); /* every event up to upto was delivered (an empty poll too) */
    return 0;
}

static void *feed_main(void *arg)
{
    struct feed *f = arg;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        bool stop = f->stopping;
        pthread_mutex_unlock(&f->mu);
        if (stop) {
            break;
        }
        int rv = feed_poll(f);
        if (rv != 0) {
            atomic_fetch_add(&f->errors, 1);
            LOG_DEBUG("change feed: poll failed (%s): %s", gerr_name(rv), f->cl.errmsg);
        }
        pthread_mutex_lock(&f->mu);
        if (!f->stopping && (f->sync_need <= f->reads_started || rv != 0)) {
            struct timespec ts;
            abs_deadline(now_ms() + f->poll_ms, &ts);
            pthread_cond_timedwait(&f->wake, &f->mu, &ts);
        } else if (!f->stopping && f->linger_us != 0 && f->last_served >= FEED_SYNC_BUSY) {
            /* Busy: let more readers join the next read (one leader round trip for all of them),
             * while they keep coming: every FEED_SYNC_QUIET_US without a new one ends the wait,
             * as do linger_us in all and FEED_SYNC_BATCH_MAX waiting. */
            atomic_fetch_add(&f->lingers, 1);
            uint64_t start_us = mono_us(), seen = f->sync_waiting;
            for (;;) {
                uint64_t now = mono_us(),
                         left = start_us + f->linger_us > now ? start_us + f->linger_us - now : 0;
                if (f->stopping || left == 0 || f->sync_waiting >= FEED_SYNC_BATCH_MAX) {
                    break;
                }
                struct timespec ts;
                abs_after_us(left < FEED_SYNC_QUIET_US ? (unsigned)left : FEED_SYNC_QUIET_US, &ts);
                while (!f->stopping && f->sync_waiting < FEED_SYNC_BATCH_MAX &&
                       pthread_cond_timedwait(&f->wake, &f->mu, &ts) == 0) {
                }
                if (f->sync_waiting == seen) {
                    break; /* nobody came for a while: the burst is in */
                }
                seen = f->sync_waiting;
            }
        }
        pthread_mutex_unlock(&f->mu);
    }
    return NULL;
}

int feed_start(struct feed *f)
{
    if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
        return GERR_NOMEM;
    }
    f->started = true;
    return 0;
}

void feed_close(struct feed *f)
{
    pthread_mutex_lock(&f->mu);
    f->stopping = true;
    pthread_cond_broadcast(&f->cond);
    pthread_cond_broadcast(&f->done[0]);
    pthread_cond_broadcast(&f->done[1]);
    pthread_cond_broadcast(&f->wake);
    pthread_mutex_unlock(&f->mu);
    if (f->started) {
        pthread_join(f->thread, NULL);
        f->started = false;
    }
    store_client_close(&f->cl);
    pthread_cond_destroy(&f->cond);
    pthread_cond_destroy(&f->done[0]);
    pthread_cond_destroy(&f->done[1]);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->mu);
}

uint64_t feed_live_since_ms(struct feed *f)
{
    return (uint64_t)atomic_load(&f->live_ms);
}

uint64_t feed_revision(struct feed *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t rev = f->applied;
    pthread_mutex_unlock(&f->mu);
    return rev;
}

/* Under f->mu: wait on @cv until @cond_fn holds; 0, GERR_TIMEOUT or GERR_CLOSED. */
static int wait_locked(struct feed *f, pthread_cond_t *cv, uint64_t deadline_ms,
                       bool (*cond_fn)(struct feed *, uint64_t), uint64_t arg)
{
    struct timespec ts;
    abs_deadline(deadline_ms, &ts);
    while (!cond_fn(f, arg)) {
        if (f->stopping) {
            return GERR_CLOSED;
        }
        if (now_ms() >= deadline_ms) {
            return GERR_TIMEOUT;
        }
        pthread_cond_timedwait(cv, &f->mu, &ts);
    }
    return 0;
}

static bool applied_reached(struct feed *f, uint64_t rev)
{
    return f->ready && f->applied >= rev;
}

static bool read_done(struct feed *f, uint64_t batch)
{
    return f->reads_done >= batch;
}

int feed_wait(struct feed *f, uint64_t rev, uint64_t deadline_ms)
{
    pthread_mutex_lock(&f->mu);
    int rv = wait_locked(f, &f->cond, deadline_ms, applied_reached, rev);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int feed_sync(struct feed *f, uint64_t deadline_ms, uint64_t *rev)
{
    atomic_fetch_add(&f->syncs, 1);
    pthread_mutex_lock(&f->mu);
    uint64_t batch = f->reads_started + 1; /* the first read that starts after this call */
    f->sync_waiting++;
    if (f->sync_need < batch || f->sync_waiting == FEED_SYNC_BATCH_MAX) {
        f->sync_need = batch;
        pthread_cond_signal(&f->wake);
    }
    int rv = wait_locked(f, &f->done[batch & 1], deadline_ms, read_done, batch);
    uint64_t target = f->read_rev;
    if (rv == 0) {
        rv = wait_locked(f, &f->cond, deadline_ms, applied_reached, target);
    }
    pthread_mutex_unlock(&f->mu);
    if (rv == 0) {
        *rev = target;
    }
    return rv;
}

int feed_next_head(struct feed *f, uint64_t deadline_ms, uint64_t *rev)
{
    pthread_mutex_lock(&f->mu);
    uint64_t batch = f->reads_started + 1; /* the first read that starts after this call */
    int rv = wait_locked(f, &f->done[batch & 1], deadline_ms, read_done, batch);
    if (rv == 0) {
        *rev = f->read_rev;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

void feed_metrics_write(struct feed *f, struct buf *out)
{
    uint64_t rev = f->started ? feed_revision(f) : 0;
    buf_printf(out,
               "# HELP gantry_feed_revision The change feed's applied revision on this replica.\n"
               "# TYPE gantry_feed_revision gauge\ngantry_feed_revision %" PRIu64 "\n"
               "# HELP gantry_feed_polls_total Polls of the leader by this replica's change feed.\n"
               "# TYPE gantry_feed_polls_total counter\ngantry_feed_polls_total %" PRIu64 "\n"
               "# HELP gantry_feed_events_total Change events this replica's feed delivered.\n"
               "# TYPE gantry_feed_events_total counter\ngantry_feed_events_total %" PRIu64 "\n"
               "# HELP gantry_feed_resyncs_total Times the feed could not tell what it missed and its "
               "consumers reloaded a snapshot.\n"
               "# TYPE gantry_feed_resyncs_total counter\ngantry_feed_resyncs_total %" PRIu64 "\n"
               "# HELP gantry_feed_errors_total Feed polls that failed on a store error (retried).\n"
               "# TYPE gantry_feed_errors_total counter\ngantry_feed_errors_total %" PRIu64 "\n"
               "# HELP gantry_feed_syncs_total Read-index requests (feed_sync calls).\n"
               "# TYPE gantry_feed_syncs_total counter\ngantry_feed_syncs_total %" PRIu64 "\n"
               "# HELP gantry_feed_sync_reads_total Leader revision reads that served read-index "
               "requests (one per batch).\n"
               "# TYPE gantry_feed_sync_reads_total counter\ngantry_feed_sync_reads_total %" PRIu64 "\n"
               "# HELP gantry_feed_sync_lingers_total Read-index reads that waited (read_index_linger_us) "
               "for more requests to share them.\n"
               "# TYPE gantry_feed_sync_lingers_total counter\ngantry_feed_sync_lingers_total %" PRIu64 "\n",
               rev, (uint64_t)atomic_load(&f->polls), (uint64_t)atomic_load(&f->events),
               (uint64_t)atomic_load(&f->resyncs), (uint64_t)atomic_load(&f->errors),
               (uint64_t)atomic_load(&f->syncs), (uint64_t)atomic_load(&f->sync_reads),
               (uint64_t)atomic_load(&f->lingers));
}
