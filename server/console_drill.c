/* The console's leadership drill (server/console_drill.h).
 *
 * States: IDLE -> RUNNING -> DONE | FAILED -> RUNNING (the next drill) ... Each move is logged. */
#include "server/console_drill.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "gantry/v1/cluster.pb-c.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "server/grpc/status.h"

#define PROBE_MAX       20000u /* committed probes remembered (a drill lasts at most ~22 s) */
#define AFTER_SETTLE_MS 1000u

enum drill_state { DRILL_IDLE, DRILL_RUNNING, DRILL_DONE, DRILL_FAILED };
static const char *const state_names[] = {"idle", "running", "done", "failed"};

struct console_drill {
    struct console_feed feed;
    struct replica *replica;
    struct store_writer *writer;
    pthread_mutex_t mu;
    /* Under mu: the state shown. */
    enum drill_state state;
    bool thread_started;
    pthread_t thread;
    char by[128];
    uint64_t target, from, to;
    int64_t started_at_ms;
    uint64_t transfer_ms, settled_ms, window_ms;
    unsigned probes, probe_failures;
    char message[300];
    /* The drill thread's own. */
    char *authorization;
    char peer[64];
    /* Probes: the drill thread starts and stops them; the probe thread writes, under mu. */
    pthread_t probe_thread;
    bool probing;      /* under mu */
    uint64_t *commits; /* monotonic ms of each committed probe */
    unsigned n_commits;
    uint64_t counter; /* probe thread only */
};

struct console_drill *console_drill_new(const struct console_feed *feed, struct replica *replica,
                                        struct store_writer *writer)
{
    struct console_drill *d = mem_zalloc(sizeof *d);
    d->feed = *feed;
    d->replica = replica;
    d->writer = writer;
    d->commits = mem_zalloc(sizeof *d->commits * PROBE_MAX);
    pthread_mutex_init(&d->mu, NULL);
    return d;
}

static void move(struct console_drill *d, enum drill_state to, const char *why)
{
    LOG_INFO("console drill: %s -> %s%s%s", state_names[d->state], state_names[to],
             why[0] != '\0' ? ": " : "", why);
    d->state = to;
}

static int probe_tx(struct store_tx *tx, void *arg)
{
    uint64_t *n = arg;
    char v[24];
    snprintf(v, sizeof v, "%" PRIu64, *n);
    struct proto_value p[] = {proto_text(v), proto_int((int64_t)clock_system()->wall_ms(clock_system()))};
    return store_tx_exec(
        tx,
        "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES ('console_drill_probe', ?1, ?2) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        p, 2, NULL);
}

static void *probe_main(void *arg)
{
    struct console_drill *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        bool go = d->probing;
        pthread_mutex_unlock(&d->mu);
        if (!go) {
            return NULL;
        }
        d->counter++;
        char err[GERR_MSG_SIZE];
        uint64_t deadline = clock_mono_ms(clock_system()) + 5000;
        int rv = store_writer_run_by(d->writer, probe_tx, &d->counter, deadline, err);
        uint64_t now = clock_mono_ms(clock_system());
        pthread_mutex_lock(&d->mu);
        if (rv == 0 && d->n_commits < PROBE_MAX) {
            d->commits[d->n_commits++] = now;
        }
        d->probes++;
        d->probe_failures += rv != 0;
        pthread_mutex_unlock(&d->mu);
        if (rv != 0) {
            clock_system()->sleep_ns(clock_system(), 5 * 1000000u); /* no tight loop while nothing commits */
        }
    }
}

/* The leader of this replica's view, and whether every member answers. */
static uint64_t view_leader(struct console_drill *d, bool *all_up)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(d->replica, v);
    uint64_t leader = v->valid ? v->leader_id : 0;
    *all_up = v->valid && v->n > 0;
    for (unsigned i = 0; i < v->n; i++) {
        *all_up = *all_up && v->nodes[i].online;
    }
    mem_free(v);
    return leader;
}

static void *drill_main(void *arg)
{
    struct console_drill *d = arg;
    struct clock *clk = clock_system();
    uint64_t t0 = clock_mono_ms(clk);
    pthread_mutex_lock(&d->mu);
    d->probing = true;
    d->n_commits = 0;
    uint64_t from = d->from, target = d->target;
    pthread_mutex_unlock(&d->mu);
    /* The transfer, for the admin, through the gate. No probe writes meanwhile: the leader hands over
     * only once the target's log has stayed level with its own (raft/catchup.h), and it pauses only
     * its own replica's writes, so a steady stream of writes from this replica could keep the target
     * behind until the call gives up. The probes start when the call returns, and the first gap runs
     * from the call's start: the window counts the whole call, an upper bound. */
    Gantry__V1__TransferLeadershipRequest req = GANTRY__V1__TRANSFER_LEADERSHIP_REQUEST__INIT;
    req.target_id = target;
    ProtobufCMessage *m;
    struct console_call res;
    console_feed_call(&d->feed, d->authorization, d->peer, "/gantry.v1.Cluster/TransferLeadership", &req.base,
                      &gantry__v1__transfer_leadership_response__descriptor, &m, &res);
    uint64_t t_transfer = clock_mono_ms(clk);
    uint64_t to = 0;
    bool transferred = m != NULL;
    /* Probe writes only after a transfer: a refused one (not an admin, no such voter) writes nothing. */
    bool probe_ok = transferred && pthread_create(&d->probe_thread, NULL, probe_main, d) == 0;
    if (transferred) {
        const Gantry__V1__TransferLeadershipResponse *r = (const void *)m;
        to = r->leader != NULL ? r->leader->id : 0;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* Settle: the view names another leader and every member answers. */
    uint64_t settled = 0, seen = 0;
    while (transferred && !console_feed_stopping(&d->feed) &&
           clock_mono_ms(clk) - t0 < CONSOLE_DRILL_SETTLE_MS) {
        bool all_up;
        seen = view_leader(d, &all_up);
        if (seen != 0 && seen != from && all_up) {
            settled = clock_mono_ms(clk);
            break;
        }
        clk->sleep_ns(clk, 20 * 1000000u);
    }
    if (settled != 0 && !console_feed_stopping(&d->feed)) {
        clk->sleep_ns(clk, AFTER_SETTLE_MS * 1000000u); /* probes after the change, to see writes back */
    }
    pthread_mutex_lock(&d->mu);
    d->probing = false;
    pthread_mutex_unlock(&d->mu);
    if (probe_ok) {
        pthread_join(d->probe_thread, NULL);
    }
    /* The longest time between consecutive commits, from the transfer call on. */
    uint64_t window = 0, prev = t0;
    unsigned i = 0;
    while (i < d->n_commits && d->commits[i] < t0) {
        prev = d->commits[i++];
    }
    for (; i < d->n_commits; i++) {
        window = d->commits[i] - prev > window ? d->commits[i] - prev : window;
        prev = d->commits[i];
    }
    pthread_mutex_lock(&d->mu);
    d->to = to != 0 ? to : seen;
    d->transfer_ms = t_transfer - t0;
    d->settled_ms = settled != 0 ? settled - t0 : 0;
    d->window_ms = window;
    if (!transferred) {
        snprintf(d->message, sizeof d->message, "TransferLeadership: %s: %s", grpc_status_name(res.status),
                 res.message);
        move(d, DRILL_FAILED, d->message);
    } else if (settled == 0 && console_feed_stopping(&d->feed)) {
        snprintf(d->message, sizeof d->message, "the replica stopped before the cluster settled");
        move(d, DRILL_FAILED, d->message);
    } else if (settled == 0) {
        snprintf(d->message, sizeof d->message, "the cluster did not settle on a new leader within %u ms",
                 CONSOLE_DRILL_SETTLE_MS);
        move(d, DRILL_FAILED, d->message);
    } else if (!probe_ok || d->n_commits == 0) {
        snprintf(d->message, sizeof d->message, "no probe write committed: the window could not be measured");
        move(d, DRILL_FAILED, d->message);
    } else {
        snprintf(d->message, sizeof d->message,
                 "leader %" PRIu64 " -> %" PRIu64 ": writes unavailable for at most %" PRIu64 " ms", from,
                 d->to, window);
        move(d, DRILL_DONE, d->message);
    }
    explicit_bzero(d->authorization, strlen(d->authorization));
    mem_free(d->authorization);
    d->authorization = NULL;
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int console_drill_start(struct console_drill *d, const char *authorization, const char *peer, uint64_t target,
                        struct console_call *res)
{
    /* The caller must be allowed cluster operations before anything is probed. */
    Gantry__V1__GetLeaderRequest req = GANTRY__V1__GET_LEADER_REQUEST__INIT;
    ProtobufCMessage *m;
    console_feed_call(&d->feed, authorization, peer, "/gantry.v1.Cluster/GetLeader", &req.base,
                      &gantry__v1__get_leader_response__descriptor, &m, res);
    if (m == NULL) {
        return GERR_PERM;
    }
    const Gantry__V1__GetLeaderResponse *r = (const void *)m;
    uint64_t from = r->leader != NULL ? r->leader->id : 0;
    protobuf_c_message_free_unpacked(m, NULL);
    json_t *who = NULL;
    struct console_call wres;
    console_feed_whoami(&d->feed, authorization, peer, &who, &wres);
    char by[128];
    snprintf(by, sizeof by, "%s", who != NULL ? json_string_value(json_object_get(who, "name")) : "");
    json_decref(who);
    pthread_mutex_lock(&d->mu);
    if (d->state == DRILL_RUNNING) {
        pthread_mutex_unlock(&d->mu);
        return GERR_BUSY;
    }
    if (d->thread_started) {
        /* The last drill's thread left its state under the lock and does nothing after: this only
         * reaps it. */
        pthread_join(d->thread, NULL);
        d->thread_started = false;
    }
    memcpy(d->by, by, sizeof by);
    d->target = target;
    d->from = from;
    d->to = 0;
    d->started_at_ms = (int64_t)clock_system()->wall_ms(clock_system());
    d->transfer_ms = d->settled_ms = d->window_ms = 0;
    d->probes = d->probe_failures = 0;
    d->message[0] = '\0';
    d->authorization = mem_strdup(authorization);
    snprintf(d->peer, sizeof d->peer, "%s", peer);
    move(d, DRILL_RUNNING, "");
    if (pthread_create(&d->thread, NULL, drill_main, d) != 0) {
        explicit_bzero(d->authorization, strlen(d->authorization));
        mem_free(d->authorization);
        d->authorization = NULL;
        snprintf(d->message, sizeof d->message, "no thread for the drill");
        move(d, DRILL_FAILED, d->message);
        pthread_mutex_unlock(&d->mu);
        return GERR_NOMEM;
    }
    d->thread_started = true;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

json_t *console_drill_state(struct console_drill *d)
{
    pthread_mutex_lock(&d->mu);
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string(state_names[d->state]));
    if (d->state != DRILL_IDLE) {
        json_object_set_new(o, "by", json_string(d->by));
        json_object_set_new(o, "target_id", json_integer((json_int_t)d->target));
        json_object_set_new(o, "from_leader", json_integer((json_int_t)d->from));
        json_object_set_new(o, "to_leader", json_integer((json_int_t)d->to));
        json_object_set_new(o, "started_at_ms", json_integer(d->started_at_ms));
        json_object_set_new(o, "transfer_ms", json_integer((json_int_t)d->transfer_ms));
        json_object_set_new(o, "settled_ms", json_integer((json_int_t)d->settled_ms));
        json_object_set_new(o, "window_ms", json_integer((json_int_t)d->window_ms));
        json_object_set_new(o, "probes", json_integer(d->probes));
        json_object_set_new(o, "probe_failures", json_integer(d->probe_failures));
        json_object_set_new(o, "message", json_string(d->message));
    }
    pthread_mutex_unlock(&d->mu);
    return o;
}

void console_drill_free(struct console_drill *d)
{
    if (d == NULL) {
        return;
    }
    pthread_mutex_lock(&d->mu);
    bool started = d->thread_started;
    pthread_mutex_unlock(&d->mu);
    if (started) {
        pthread_join(d->thread, NULL);
    }
    pthread_mutex_destroy(&d->mu);
    mem_free(d->commits);
    mem_free(d);
}
