/* The change feed's follower (store/feed.h) against a real one-node dqlite cluster with Gantry's
 * schema: events of every kind arrive once and in revision order across pages, with their
 * payload; feed_sync answers a burst of concurrent callers with few leader reads (a read index
 * batch) and never below a revision written before the call; retention deleting events the feed
 * had not read yet resyncs its subscribers. The gate's authentication cache (api/gate/authn.h) is
 * invalidated by the feed's events while the feed is live and falls back to its 2 s bound when the
 * feed stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/auth/apikey.h"
#include "api/gate/authn.h"
#include "it_common.h"
#include "lib/buf.h"
#include "store/events.h"
#include "store/feed.h"
#include "store/migrate.h"

static struct cluster cluster;
static char errmsg[GERR_MSG_SIZE];

struct recorder {
    pthread_mutex_t mu;
    uint64_t revs[4096];
    char kinds[4096][16];
    size_t payloads;
    size_t n;
    unsigned resyncs;
    bool hold; /* on_applied blocks while set: the feed thread stays inside a poll */
    bool held;
    pthread_cond_t cond;
    uint64_t resync_rev;
    bool disorder;
};

static void rec_resync(struct store_client *cl, uint64_t rev, void *data)
{
    struct recorder *r = data;
    (void)cl;
    pthread_mutex_lock(&r->mu);
    r->resyncs++;
    r->resync_rev = rev;
    r->n = 0;
    pthread_mutex_unlock(&r->mu);
}

static void rec_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    struct recorder *r = data;
    (void)cl;
    pthread_mutex_lock(&r->mu);
    if (r->n > 0 && ev->revision <= r->revs[r->n - 1]) {
        r->disorder = true;
    }
    if (r->n < 4096) {
        r->revs[r->n] = ev->revision;
        snprintf(r->kinds[r->n], sizeof r->kinds[r->n], "%s", ev->kind);
        r->n++;
    }
    if (ev->payload != NULL && ev->payload_len == 3 && memcmp(ev->payload, "abc", 3) == 0) {
        r->payloads++;
    }
    pthread_mutex_unlock(&r->mu);
}

static void rec_applied(struct store_client *cl, uint64_t rev, void *data)
{
    struct recorder *r = data;
    (void)cl;
    (void)rev;
    pthread_mutex_lock(&r->mu);
    while (r->hold) {
        r->held = true;
        pthread_cond_broadcast(&r->cond);
        pthread_cond_wait(&r->cond, &r->mu);
    }
    r->held = false;
    pthread_mutex_unlock(&r->mu);
}

static void client_for(struct store_client *cl)
{
    struct store_client_config cfg = {.leader_timeout_ms = 30000, .busy_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    assert_int_equal(store_client_init(cl, &cfg), 0);
}

static int group_setup(void **state)
{
    struct cluster_opts o = {.node_bin = it_node_bin()};
    (void)state;
    if (cluster_start(&cluster, 1, &o, errmsg) != 0) {
        fprintf(stderr, "cluster_start: %s\n", errmsg);
        return -1;
    }
    struct store_client cl;
    client_for(&cl);
    unsigned n = 0;
    const struct store_migration *m = store_schema(&n);
    int rv = store_migrate(&cl, m, n);
    if (rv != 0) {
        fprintf(stderr, "migrate: %s\n", cl.errmsg);
    }
    store_client_close(&cl);
    return rv == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (cluster_stop_checked(&cluster, errmsg) != 0) {
        fprintf(stderr, "cluster_stop: %s\n", errmsg);
        return -1;
    }
    return 0;
}

struct write_arg {
    unsigned n;
    const char *kind;
    bool payload;
};

/* @n events in one transaction, as store_event_tx writes them. */
static int write_events_tx(struct store_tx *tx, void *arg)
{
    struct write_arg *a = arg;
    for (unsigned i = 0; i < a->n; i++) {
        int rv = store_tx_exec(tx, "UPDATE cluster_revision SET revision = revision + 1 WHERE id = 1", NULL,
                               0, NULL);
        struct proto_value p[] = {proto_text(a->kind),
                                  proto_blob(a->payload ? "abc" : "", a->payload ? 3 : 0)};
        if (rv == 0) {
            rv = store_tx_exec(
                tx,
                "INSERT INTO events (revision, kind, namespace, object_id, type, at_ms, payload) "
                "SELECT revision, ?, 'default', 'x', 'MODIFIED', 0, ? FROM cluster_revision",
                p, 2, NULL);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int64_t write_events(struct store_client *cl, unsigned n, const char *kind, bool payload)
{
    struct write_arg a = {n, kind, payload};
    IT_CHECK(&cluster, store_client_tx(cl, write_events_tx, &a), cl->errmsg);
    int64_t rev = 0;
    IT_CHECK(&cluster, store_client_query_int(cl, "SELECT revision FROM cluster_revision", NULL, 0, &rev),
             cl->errmsg);
    return rev;
}

static void start_feed(struct feed *f, struct recorder *r, struct feed_sub *s, unsigned poll_ms)
{
    struct store_client_config cfg = {.leader_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    assert_int_equal(feed_init(f, &cfg, poll_ms), 0);
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    *s = (struct feed_sub){
        .on_resync = rec_resync, .on_event = rec_event, .on_applied = rec_applied, .data = r};
    feed_subscribe(f, s);
    assert_int_equal(feed_start(f), 0);
    IT_CHECK(&cluster, feed_wait(f, 0, it_now_ms() + 30000), "the feed never started");
}

static void test_events_in_order_across_pages(void **state)
{
    (void)state;
    struct store_client cl;
    client_for(&cl);
    int64_t before = write_events(&cl, 5, "Namespace", false);
    struct feed f;
    struct recorder r;
    struct feed_sub s;
    start_feed(&f, &r, &s, 20);
    assert_int_equal(r.resyncs, 1);
    assert_true(r.resync_rev >= (uint64_t)before);
    write_events(&cl, 1500, "Sandbox", true); /* more than a page */
    int64_t head = write_events(&cl, 700, "RoleBinding", false);
    uint64_t rev = 0;
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    assert_true(rev >= (uint64_t)head);
    assert_true(feed_revision(&f) >= (uint64_t)head);
    pthread_mutex_lock(&r.mu);
    assert_false(r.disorder);
    assert_int_equal(r.n, 2200);
    assert_int_equal(r.revs[0], r.resync_rev + 1);
    assert_int_equal(r.revs[2199], (uint64_t)head);
    assert_int_equal(r.payloads, 1500);
    assert_string_equal(r.kinds[0], "Sandbox");
    assert_string_equal(r.kinds[2199], "RoleBinding");
    pthread_mutex_unlock(&r.mu);
    struct buf out;
    buf_init(&out);
    feed_metrics_write(&f, &out);
    buf_append(&out, "", 1);
    assert_non_null(strstr((const char *)out.data, "# TYPE gantry_feed_revision gauge"));
    assert_non_null(strstr((const char *)out.data, "gantry_feed_resyncs_total 1\n"));
    buf_close(&out);
    feed_close(&f);
    store_client_close(&cl);
}

struct syncer {
    struct feed *f;
    uint64_t got;
    int rv;
};

static void *sync_main(void *arg)
{
    struct syncer *s = arg;
    s->rv = feed_sync(s->f, it_now_ms() + 30000, &s->got);
    return NULL;
}

#define N_SYNC 32

/* While the feed thread is inside a poll (held in on_applied, its read done), N_SYNC callers
 * arrive; when it goes on, one leader read serves them all, and each gets a revision at or above
 * a write committed before it called. */
static void test_sync_batches_concurrent_callers(void **state)
{
    (void)state;
    struct store_client cl;
    client_for(&cl);
    struct feed f;
    struct recorder r;
    struct feed_sub s;
    start_feed(&f, &r, &s, 60000); /* no timed polls: only feed_sync wakes it */
    for (int round = 0; round < 3; round++) {
        pthread_mutex_lock(&r.mu);
        r.hold = true;
        pthread_mutex_unlock(&r.mu);
        struct syncer first = {.f = &f};
        pthread_t t0;
        assert_int_equal(pthread_create(&t0, NULL, sync_main, &first), 0);
        pthread_mutex_lock(&r.mu);
        while (!r.held) {
            pthread_cond_wait(&r.cond, &r.mu);
        }
        pthread_mutex_unlock(&r.mu);
        int64_t written = write_events(&cl, 3, "Sandbox", false); /* after the held poll's read */
        uint64_t syncs0 = atomic_load(&f.syncs), reads0 = atomic_load(&f.sync_reads);
        struct syncer ss[N_SYNC];
        pthread_t t[N_SYNC];
        for (int i = 0; i < N_SYNC; i++) {
            ss[i] = (struct syncer){.f = &f};
            assert_int_equal(pthread_create(&t[i], NULL, sync_main, &ss[i]), 0);
        }
        uint64_t deadline = it_now_ms() + 10000;
        while (atomic_load(&f.syncs) - syncs0 < N_SYNC && it_now_ms() < deadline) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        struct timespec grace = {0, 50000000}; /* from counting a call to its wait: a few instructions */
        nanosleep(&grace, NULL);
        pthread_mutex_lock(&r.mu);
        r.hold = false;
        pthread_cond_broadcast(&r.cond);
        pthread_mutex_unlock(&r.mu);
        pthread_join(t0, NULL);
        assert_int_equal(first.rv, 0);
        int failed = 0, below = 0;
        for (int i = 0; i < N_SYNC; i++) {
            pthread_join(t[i], NULL);
            failed += ss[i].rv != 0;
            below += ss[i].got < (uint64_t)written; /* never below a write acknowledged before */
        }
        uint64_t reads = atomic_load(&f.sync_reads) - reads0;
        fprintf(stderr, "round %d: %d concurrent feed_sync calls, %" PRIu64 " leader reads\n", round, N_SYNC,
                reads);
        assert_int_equal(failed, 0);
        assert_int_equal(below, 0);
        assert_int_equal(reads, 1); /* shared, not one per caller */
        assert_true(feed_revision(&f) >= (uint64_t)written);
    }
    feed_close(&f);
    store_client_close(&cl);
}

struct looper {
    struct feed *f;
    struct store_client *cl;
    int calls, failed, below;
};

static void *loop_main(void *arg)
{
    struct looper *l = arg;
    for (int i = 0; i < l->calls; i++) {
        uint64_t got = 0;
        int64_t before = 0;
        /* the revision committed before this call: the read index must reach it */
        if (store_client_query_int(l->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                   &before) != 0) {
            l->failed++;
            continue;
        }
        l->failed += feed_sync(l->f, it_now_ms() + 30000, &got) != 0;
        l->below += got < (uint64_t)before;
    }
    return NULL;
}

#define N_LOOPERS 6

/* The read-index linger (store/feed.h FEED_SYNC_LINGER_US): a caller alone never waits for
 * company (no linger while each read serves one caller), callers arriving together make the feed
 * linger so later reads serve several, and every answer still covers what was committed before
 * its call. */
static void test_sync_lingers_only_when_busy(void **state)
{
    (void)state;
    struct store_client cl;
    client_for(&cl);
    struct feed f;
    struct recorder r;
    struct feed_sub s;
    start_feed(&f, &r, &s, 60000);
    uint64_t rev = 0;
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    uint64_t lingers0 = atomic_load(&f.lingers);
    for (int i = 0; i < 20; i++) {
        write_events(&cl, 1, "Sandbox", false);
        IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    }
    assert_int_equal(atomic_load(&f.lingers) - lingers0, 0); /* one caller at a time: no waiting */

    struct store_client cls[N_LOOPERS];
    struct looper ls[N_LOOPERS];
    pthread_t t[N_LOOPERS];
    uint64_t syncs0 = atomic_load(&f.syncs), reads0 = atomic_load(&f.sync_reads);
    for (int i = 0; i < N_LOOPERS; i++) {
        client_for(&cls[i]);
        ls[i] = (struct looper){.f = &f, .cl = &cls[i], .calls = 40};
        assert_int_equal(pthread_create(&t[i], NULL, loop_main, &ls[i]), 0);
    }
    int failed = 0, below = 0;
    for (int i = 0; i < N_LOOPERS; i++) {
        pthread_join(t[i], NULL);
        failed += ls[i].failed;
        below += ls[i].below;
        store_client_close(&cls[i]);
    }
    uint64_t syncs = atomic_load(&f.syncs) - syncs0, reads = atomic_load(&f.sync_reads) - reads0;
    uint64_t lingers = atomic_load(&f.lingers) - lingers0;
    fprintf(stderr,
            "%d callers x 40: %" PRIu64 " feed_sync calls, %" PRIu64 " leader reads, %" PRIu64 " lingers\n",
            N_LOOPERS, syncs, reads, lingers);
    assert_int_equal(failed, 0);
    assert_int_equal(below, 0);
    assert_true(lingers > 0);
    assert_true(reads < syncs); /* some reads were shared (how many depends on the machine's load) */
    feed_close(&f);
    store_client_close(&cl);
}

static void test_compaction_past_the_feed_resyncs(void **state)
{
    (void)state;
    struct store_client cl;
    client_for(&cl);
    struct feed f;
    struct recorder r;
    struct feed_sub s;
    start_feed(&f, &r, &s, 60000);
    uint64_t rev = 0;
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    int64_t head = write_events(&cl, 10, "Sandbox", false);
    /* Retention deletes them before the feed reads them, and moves the marker with them. */
    struct proto_value p[] = {proto_int(head)};
    IT_CHECK(&cluster, store_client_exec(&cl, "DELETE FROM events WHERE revision <= ?", p, 1, NULL),
             cl.errmsg);
    IT_CHECK(&cluster,
             store_client_exec(&cl,
                               "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES "
                               "('events_compacted_revision', ?, 0) ON CONFLICT (key) DO UPDATE SET value = "
                               "excluded.value",
                               p, 1, NULL),
             cl.errmsg);
    int64_t after = write_events(&cl, 2, "Sandbox", false);
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.resyncs, 2);
    assert_true(r.resync_rev >= (uint64_t)after);
    assert_int_equal(r.n, 0); /* nothing delivered from before the marker */
    pthread_mutex_unlock(&r.mu);
    assert_true(rev >= (uint64_t)after);
    feed_close(&f);
    store_client_close(&cl);
}

/* --- the authentication cache driven by the feed --- */

static uint64_t authn_fetches(struct authn *a)
{
    struct buf b;
    buf_init(&b);
    authn_metrics_write(a, &b);
    buf_append(&b, "", 1);
    const char *at = strstr((const char *)b.data, "\ngantry_authn_fetches_total ");
    uint64_t n = at != NULL ? strtoull(at + strlen("\ngantry_authn_fetches_total "), NULL, 10) : UINT64_MAX;
    buf_close(&b);
    return n;
}

static void add_principal_key(struct store_client *cl, const uint8_t *pepper, const char *pid, char *key,
                              char *keyid)
{
    uint8_t hash[APIKEY_HASH_SIZE];
    assert_int_equal(apikey_generate(pepper, 32, key, keyid, hash, errmsg), 0);
    struct proto_value p[] = {proto_text(pid)};
    IT_CHECK(
        &cluster,
        store_client_exec(cl,
                          "INSERT INTO principals (id, kind, name, namespace, issuer, subject, display_name, "
                          "disabled, labels, created_by, resource_version, created_at_ms, updated_at_ms) "
                          "VALUES (?1, 'user', ?1, '', '', '', '', 0, '{}', 't', 1, 0, 0)",
                          p, 1, NULL),
        cl->errmsg);
    struct proto_value k[] = {proto_text(keyid), proto_text(pid), proto_blob(hash, sizeof hash)};
    IT_CHECK(&cluster,
             store_client_exec(
                 cl,
                 "INSERT INTO api_keys (id, principal_id, name, hash, created_by, created_at_ms, "
                 "expires_at_ms, last_used_ms, revoked_at_ms) VALUES (?, ?, 'k', ?, 't', 0, 0, 0, 0)",
                 k, 3, NULL),
             cl->errmsg);
}

static int key_event_tx(struct store_tx *tx, void *arg)
{
    return store_event_tx(tx, "ApiKey", "", arg, "MODIFIED", NULL);
}

static int call_with(struct authn *a, struct store_client *cl, const char *key, int64_t now, char *msg)
{
    char authz[128];
    snprintf(authz, sizeof authz, "Bearer %s", key);
    struct authn_principal *who = malloc(sizeof *who);
    bool bad = false;
    int rv = authn_call(a, cl, authz, NULL, now, who, msg, &bad);
    free(who);
    return rv;
}

static void test_authn_cache_follows_the_feed(void **state)
{
    (void)state;
    struct store_client cl;
    client_for(&cl);
    uint8_t pepper[32];
    memset(pepper, 7, sizeof pepper);
    char k1[APIKEY_LEN + 1], id1[APIKEY_ID_LEN + 1], k2[APIKEY_LEN + 1], id2[APIKEY_ID_LEN + 1];
    add_principal_key(&cl, pepper, "p1", k1, id1);
    add_principal_key(&cl, pepper, "p2", k2, id2);
    struct store_client_config cfg = {.leader_timeout_ms = 30000};
    cluster_client_config(&cluster, &cfg);
    struct feed f;
    assert_int_equal(feed_init(&f, &cfg, 0), 0);
    struct authn *a = authn_new(pepper, sizeof pepper, NULL);
    authn_attach_feed(a, &f);
    assert_int_equal(feed_start(&f), 0);
    uint64_t rev = 0;
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    char msg[GERR_MSG_SIZE];
    const int64_t t0 = 1000000; /* the calls' clock (entry ages); the feed's liveness is real time */
    assert_int_equal(call_with(a, &cl, k1, t0, msg), 0);
    assert_int_equal(authn_fetches(a), 2); /* the key and its principal */
    /* Live feed: entries older than the 2 s bound answer without a store read (the sync makes the
     * feed's latest complete poll a fresh one, whatever the machine's load). */
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    assert_int_equal(call_with(a, &cl, k1, t0 + 5000, msg), 0);
    assert_int_equal(authn_fetches(a), 2);
    /* Only events invalidate while the feed is live: a revocation written without one is not seen
     * (which is why every revoking write carries its event, docs/security.md)... */
    struct proto_value p1[] = {proto_text(id1)};
    IT_CHECK(&cluster,
             store_client_exec(&cl, "UPDATE api_keys SET revoked_at_ms = 1 WHERE id = ?", p1, 1, NULL),
             cl.errmsg);
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    assert_int_equal(call_with(a, &cl, k1, t0 + 6000, msg), 0);
    /* ...and its event, once the feed applied it, drops the entry on the next call. */
    IT_CHECK(&cluster, store_client_tx(&cl, key_event_tx, id1), cl.errmsg);
    IT_CHECK(&cluster, feed_sync(&f, it_now_ms() + 30000, &rev), "feed_sync");
    assert_int_equal(call_with(a, &cl, k1, t0 + 7000, msg), GERR_UNAUTH);
    assert_non_null(strstr(msg, "revoked"));
    /* The feed stops (as when it cannot reach the leader): past 2 s of not being live, every entry
     * falls back to the 2 s bound, so a change it never delivers still takes effect in time. */
    assert_int_equal(call_with(a, &cl, k2, t0 + 7000, msg), 0);
    uint64_t before = authn_fetches(a);
    feed_close(&f);
    struct timespec ts = {.tv_sec = 2, .tv_nsec = 200 * 1000000L};
    nanosleep(&ts, NULL);
    struct proto_value p2[] = {proto_text(id2)};
    IT_CHECK(&cluster,
             store_client_exec(&cl, "UPDATE api_keys SET revoked_at_ms = 1 WHERE id = ?", p2, 1, NULL),
             cl.errmsg);
    assert_int_equal(call_with(a, &cl, k2, t0 + 8000, msg), 0); /* 1 s old: within the bound */
    assert_int_equal(authn_fetches(a), before);
    assert_int_equal(call_with(a, &cl, k2, t0 + 9100, msg), GERR_UNAUTH); /* 2.1 s old: read again */
    assert_non_null(strstr(msg, "revoked"));
    authn_free(a);
    store_client_close(&cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_in_order_across_pages),
        cmocka_unit_test(test_sync_batches_concurrent_callers),
        cmocka_unit_test(test_sync_lingers_only_when_busy),
        cmocka_unit_test(test_compaction_past_the_feed_resyncs),
        cmocka_unit_test(test_authn_cache_follows_the_feed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
