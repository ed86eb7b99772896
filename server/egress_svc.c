/* gantryd's egress relay. See egress_svc.h. */
#include "server/egress_svc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "drivers/k8s.h"
#include "drivers/process_net.h"
#include "egress/parse.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/events.h"

#define SCAN_MS     500u
#define MAX_NS_ROWS 1024u /* namespaces with their own metric series; the rest sum under "_other" */
#define DOOR_ID_MAX 64u

/* OCSF Network Activity (class 4001) activities. */
#define NET_ACTIVITY_OPEN   1
#define NET_ACTIVITY_REFUSE 5

struct ns_row {
    char ns[64];
    uint64_t allowed, denied, bytes_out, bytes_in;
};

struct open_door {
    char id[DOOR_ID_MAX];
    struct egress_door *door;
    bool seen; /* in the last scan */
};

struct egress_svc {
    struct egress_svc_config cfg;
    char *door_dir, *gateway_id;
    struct egress_policy_cache *cache;
    /* Relay thread. */
    pthread_t relay_thread;
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_timer_t scan_timer;
    uv_fs_event_t watch; /* the door directory: a new door opens as soon as its file appears */
    bool watching, scanning;
    struct egress_door *shared; /* kubernetes pods: the one shared door */
    struct egress_relay *relay;
    struct open_door *doors;
    size_t n_doors, cap_doors;
    /* Policy thread. */
    pthread_t policy_thread;
    pthread_mutex_t mu; /* stop, wake, rows, failures */
    pthread_cond_t cond;
    bool stop, wake; /* wake: a door waits for its sandbox's policy */
    uint64_t policy_failures, policy_reads, policy_full_reads;
    /* Policy thread only: the change feed is followed from feed_revision once the policies were
     * read whole (feed_loaded); see refresh_policies. */
    bool feed_loaded;
    int64_t feed_revision;
    struct ns_row rows[MAX_NS_ROWS + 1]; /* the last one is "_other" */
    unsigned n_rows;
};

/* ---- metrics and audit (relay thread) --------------------------------------------------------- */

static struct ns_row *row_of(struct egress_svc *s, const char *ns)
{
    for (unsigned i = 0; i < s->n_rows; i++) {
        if (strcmp(s->rows[i].ns, ns) == 0) {
            return &s->rows[i];
        }
    }
    if (s->n_rows < MAX_NS_ROWS) {
        struct ns_row *r = &s->rows[s->n_rows++];
        snprintf(r->ns, sizeof r->ns, "%s", ns);
        return r;
    }
    return &s->rows[MAX_NS_ROWS];
}

static const char *transport_name(int t)
{
    switch (t) {
    case GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP_CONNECT:
        return "HTTP_CONNECT";
    case GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP:
        return "HTTP";
    case GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TLS:
        return "TLS";
    case GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS:
        return "DNS";
    default:
        return "TCP";
    }
}

static void on_event(void *ctx, const struct egress_event *ev)
{
    struct egress_svc *s = ctx;
    const struct egress_decision *d = ev->decision;
    pthread_mutex_lock(&s->mu);
    struct ns_row *row = row_of(s, ev->sandbox->ns);
    if (ev->kind == EGRESS_EVENT_CLOSED) {
        row->bytes_out += ev->bytes_out;
        row->bytes_in += ev->bytes_in;
    } else if (d->allowed) {
        row->allowed++;
    } else {
        row->denied++;
    }
    pthread_mutex_unlock(&s->mu);
    if (ev->kind != EGRESS_EVENT_DECIDED || s->cfg.sink == NULL) {
        return;
    }
    /* The operation names the transport and the destination, so the sink's aggregation key (which
     * includes it and the message) counts allowed connections per destination and window. */
    char op[300], msg[900];
    if (ev->intent->port != 0) {
        snprintf(op, sizeof op, "egress/%s %.253s:%u", transport_name(ev->intent->transport), d->destination,
                 ev->intent->port);
    } else {
        snprintf(op, sizeof op, "egress/%s %.253s", transport_name(ev->intent->transport), d->destination);
    }
    snprintf(msg, sizeof msg, "%s (layer %s%s%s)", d->reason, d->layer, d->rule[0] != '\0' ? ", rule " : "",
             d->rule);
    struct audit_record r = {
        .time_ms = (int64_t)clock_system()->wall_ms(clock_system()),
        .class_uid = AUDIT_CLASS_NETWORK_ACTIVITY,
        .activity = d->allowed ? NET_ACTIVITY_OPEN : NET_ACTIVITY_REFUSE,
        .actor_id = ev->sandbox->owner,
        .actor_name = ev->sandbox->owner,
        .actor_kind = "owner",
        .operation = op,
        .ns = ev->sandbox->ns,
        .resource_type = "sandbox",
        .resource_id = "",
        .resource_name = ev->sandbox->name,
        .success = d->allowed,
        .status_code = d->allowed ? 0 : 7, /* PERMISSION_DENIED */
        .message = msg,
        .source = "",
        .request_id = "",
        .replica_id = s->cfg.replica_id,
        .gateway_id = s->gateway_id,
        .revision = (int64_t)d->revision,
    };
    audit_sink_record(s->cfg.sink, &r);
}

static const char *const families[] = {
    "# HELP gantry_egress_connections_total Egress decisions of this replica's relay, by the sandbox's "
    "namespace.\n# TYPE gantry_egress_connections_total counter\n",
    "# HELP gantry_egress_bytes_total Bytes relayed for allowed connections that ended (out: sandbox to "
    "destination).\n# TYPE gantry_egress_bytes_total counter\n",
    "# HELP gantry_egress_open_connections Connections the relay holds now.\n"
    "# TYPE gantry_egress_open_connections gauge\n",
    "# HELP gantry_egress_refused_limit_total Connections refused over the per-sandbox or relay limit.\n"
    "# TYPE gantry_egress_refused_limit_total counter\n",
    "# HELP gantry_egress_policy_refresh_failures_total Policy reads that failed (the cached policies "
    "stayed).\n"
    "# TYPE gantry_egress_policy_refresh_failures_total counter\n",
    "# HELP gantry_egress_policy_reads_total Successful policy refreshes of the relay's cache (each a read "
    "of the change feed, or of every policy).\n"
    "# TYPE gantry_egress_policy_reads_total counter\n",
    "# HELP gantry_egress_policy_full_reads_total Refreshes that read every stored policy (at start, and "
    "when the change feed was compacted past the revision followed).\n"
    "# TYPE gantry_egress_policy_full_reads_total counter\n",
};

void egress_svc_write_metrics(struct egress_svc *s, struct buf *out)
{
    if (s == NULL) {
        /* No relay on this replica: the families exist, without samples. */
        for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
            buf_printf(out, "%s", families[i]);
        }
        return;
    }
    struct egress_relay_stats st;
    egress_relay_stats(s->relay, &st);
    pthread_mutex_lock(&s->mu);
    buf_printf(out, "%s", families[0]);
    for (unsigned i = 0; i <= MAX_NS_ROWS; i++) {
        const struct ns_row *r = &s->rows[i];
        if (i >= s->n_rows && i != MAX_NS_ROWS) {
            continue;
        }
        if (i == MAX_NS_ROWS && r->allowed + r->denied + r->bytes_in + r->bytes_out == 0) {
            continue;
        }
        const char *ns = i == MAX_NS_ROWS ? "_other" : r->ns;
        buf_printf(out,
                   "gantry_egress_connections_total{namespace=\"%s\",decision=\"allowed\"} %" PRIu64 "\n", ns,
                   r->allowed);
        buf_printf(out, "gantry_egress_connections_total{namespace=\"%s\",decision=\"denied\"} %" PRIu64 "\n",
                   ns, r->denied);
    }
    buf_printf(out, "%s", families[1]);
    for (unsigned i = 0; i <= MAX_NS_ROWS; i++) {
        const struct ns_row *r = &s->rows[i];
        if ((i >= s->n_rows && i != MAX_NS_ROWS) ||
            (i == MAX_NS_ROWS && r->allowed + r->denied + r->bytes_in + r->bytes_out == 0)) {
            continue;
        }
        const char *ns = i == MAX_NS_ROWS ? "_other" : r->ns;
        buf_printf(out, "gantry_egress_bytes_total{namespace=\"%s\",direction=\"out\"} %" PRIu64 "\n", ns,
                   r->bytes_out);
        buf_printf(out, "gantry_egress_bytes_total{namespace=\"%s\",direction=\"in\"} %" PRIu64 "\n", ns,
                   r->bytes_in);
    }
    buf_printf(out, "%sgantry_egress_open_connections %" PRIu64 "\n", families[2], st.open);
    buf_printf(out, "%sgantry_egress_refused_limit_total %" PRIu64 "\n", families[3], st.refused_limit);
    buf_printf(out, "%sgantry_egress_policy_refresh_failures_total %" PRIu64 "\n", families[4],
               s->policy_failures);
    buf_printf(out, "%sgantry_egress_policy_reads_total %" PRIu64 "\n", families[5], s->policy_reads);
    buf_printf(out, "%sgantry_egress_policy_full_reads_total %" PRIu64 "\n", families[6],
               s->policy_full_reads);
    pthread_mutex_unlock(&s->mu);
}

/* ---- doors (relay thread) --------------------------------------------------------------------- */

static void open_door_of(struct egress_svc *s, const char *id, const char *path)
{
    char text[1200], err[GERR_MSG_SIZE];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return; /* removed meanwhile */
    }
    ssize_t n = read(fd, text, sizeof text);
    close(fd);
    struct process_net_door d;
    if (n <= 0 || process_net_door_decode(text, (size_t)n, &d, err) != 0) {
        LOG_WARN("egress: %s: %s", path, n <= 0 ? "unreadable" : err);
        return;
    }
    struct sockaddr_in addr;
    if (uv_ip4_addr(d.addr, (int)s->cfg.relay_port, &addr) != 0) {
        return;
    }
    if (!egress_policy_cache_has_sandbox(s->cache, id)) {
        /* Its own policy is not read yet: the door stays shut (the kernel refuses its connections)
         * until the policy thread, woken now, has read it; the next scan opens it. */
        pthread_mutex_lock(&s->mu);
        s->wake = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    struct egress_sandbox sb = {.ns = d.ns, .name = d.name, .owner = d.owner, .id = id};
    struct egress_door *door;
    if (egress_relay_open_door(s->relay, &sb, (struct sockaddr *)&addr,
                               EGRESS_DOOR_REUSE_PORT | EGRESS_DOOR_DNS, NULL, &door, err) != 0) {
        LOG_WARN("egress: door of %s/%s on %s:%u: %s (retried)", d.ns, d.name, d.addr, s->cfg.relay_port,
                 err);
        return;
    }
    if (s->n_doors == s->cap_doors) {
        s->cap_doors = s->cap_doors ? 2 * s->cap_doors : 16;
        s->doors = mem_realloc(s->doors, s->cap_doors * sizeof *s->doors);
    }
    struct open_door *o = &s->doors[s->n_doors++];
    snprintf(o->id, sizeof o->id, "%s", id);
    o->door = door;
    o->seen = true;
    LOG_INFO("egress: door of %s/%s open on %s:%u", d.ns, d.name, d.addr, s->cfg.relay_port);
}

static void scan(uv_timer_t *t)
{
    struct egress_svc *s = t->data;
    for (size_t i = 0; i < s->n_doors; i++) {
        s->doors[i].seen = false;
    }
    DIR *dir = opendir(s->door_dir);
    struct dirent *e;
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 5 || n - 5 >= DOOR_ID_MAX || strcmp(e->d_name + n - 5, ".door") != 0) {
            continue;
        }
        char id[DOOR_ID_MAX];
        snprintf(id, sizeof id, "%.*s", (int)(n - 5), e->d_name);
        bool known = false;
        for (size_t i = 0; i < s->n_doors && !known; i++) {
            if (strcmp(s->doors[i].id, id) == 0) {
                s->doors[i].seen = known = true;
            }
        }
        if (!known) {
            char path[1200];
            snprintf(path, sizeof path, "%s/%s", s->door_dir, e->d_name);
            open_door_of(s, id, path);
        }
    }
    if (dir != NULL) {
        closedir(dir);
    }
    size_t w = 0;
    for (size_t i = 0; i < s->n_doors; i++) {
        if (s->doors[i].seen) {
            s->doors[w++] = s->doors[i];
        } else {
            LOG_INFO("egress: door of sandbox %s closed (its sandbox is gone)", s->doors[i].id);
            egress_relay_close_door(s->doors[i].door);
        }
    }
    s->n_doors = w;
}

static void on_door_dir_changed(uv_fs_event_t *h, const char *name, int events, int status)
{
    (void)name, (void)events, (void)status;
    scan(&((struct egress_svc *)h->data)->scan_timer);
}

static void on_relay_closed(void *ctx)
{
    struct egress_svc *s = ctx;
    uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void on_stop(uv_async_t *a)
{
    struct egress_svc *s = a->data;
    if (s->scanning) {
        uv_close((uv_handle_t *)&s->scan_timer, NULL);
    }
    if (s->watching) {
        uv_close((uv_handle_t *)&s->watch, NULL);
    }
    egress_relay_close(s->relay, on_relay_closed, s);
}

static void *relay_main(void *arg)
{
    struct egress_svc *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- kubernetes pods (relay thread) ---------------------------------------------------------- */

/* egress_source_lookup_fn over the kubernetes driver's cache: the strings go into @buf. */
static int pod_lookup(void *ctx, const struct sockaddr *peer, struct egress_sandbox *out, char *buf,
                      size_t len)
{
    struct egress_svc *s = ctx;
    char ip[INET6_ADDRSTRLEN];
    struct driver_k8s_pod p;
    if ((peer->sa_family == AF_INET && uv_ip4_name((const struct sockaddr_in *)peer, ip, sizeof ip) != 0) ||
        (peer->sa_family == AF_INET6 && uv_ip6_name((const struct sockaddr_in6 *)peer, ip, sizeof ip) != 0) ||
        (peer->sa_family != AF_INET && peer->sa_family != AF_INET6) ||
        driver_k8s_lookup_ip(s->cfg.k8s, ip, &p) != 0) {
        return GERR_NOTFOUND;
    }
    size_t a = strlen(p.ns) + 1, b = strlen(p.name) + 1, c = strlen(p.owner) + 1, d = strlen(p.id) + 1;
    if (a + b + c + d > len) {
        return GERR_NOTFOUND;
    }
    memcpy(buf, p.ns, a);
    memcpy(buf + a, p.name, b);
    memcpy(buf + a + b, p.owner, c);
    memcpy(buf + a + b + c, p.id, d);
    *out = (struct egress_sandbox){.ns = buf, .name = buf + a, .owner = buf + a + b, .id = buf + a + b + c};
    return 0;
}

/* ---- policies (policy thread) ----------------------------------------------------------------- */

/* Every stored policy, replacing the cache's (one read of the whole table). */
static int read_all_policies(struct egress_svc *s, struct store_client *cl, char *err)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv =
        store_client_query(cl, "SELECT namespace, policy, resource_version FROM policies", NULL, 0, &rows);
    if (rv != 0) {
        gerr_set(err, "%s", cl->errmsg);
    }
    const char **keep = mem_zalloc(sizeof *keep * (rows.n_rows + 1));
    size_t n_keep = 0;
    bool gateway_seen = false;
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        const struct proto_value *ns = proto_rows_at(&rows, i, 0), *b = proto_rows_at(&rows, i, 1),
                                 *ver = proto_rows_at(&rows, i, 2);
        if (ns->type != PROTO_TEXT || b->type != PROTO_BLOB) {
            continue;
        }
        Gantry__V1__Policy *p = gantry__v1__policy__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s);
        if (p == NULL) {
            gerr_set(err, "the stored policy of \"%.63s\" does not decode", ns->u.b.s);
            rv = GERR_INTERNAL;
            break;
        }
        uint64_t revision = ver->type == PROTO_INTEGER ? (uint64_t)ver->u.i : 0;
        if (ns->u.b.s[0] == '\0') {
            gateway_seen = true;
            rv = egress_policy_cache_set_gateway(s->cache, p, revision);
        } else {
            keep[n_keep++] = ns->u.b.s;
            rv = egress_policy_cache_set_namespace(s->cache, ns->u.b.s, p, revision);
        }
        gantry__v1__policy__free_unpacked(p, NULL);
    }
    if (rv == 0) {
        if (!gateway_seen) {
            rv = egress_policy_cache_set_gateway(s->cache, NULL, 0);
        }
        egress_policy_cache_retain(s->cache, keep, n_keep);
    }
    mem_free(keep);
    proto_rows_close(&rows);
    return rv;
}

/* One namespace's stored policy ("" the gateway's) into the cache, or its absence. */
static int read_one_policy(struct egress_svc *s, struct store_client *cl, const char *ns, char *err)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value q = {.type = PROTO_TEXT, .u.b = {.s = (char *)ns, .n = strlen(ns)}};
    int rv = store_client_query(cl, "SELECT policy, resource_version FROM policies WHERE namespace = ?", &q,
                                1, &rows);
    if (rv != 0) {
        gerr_set(err, "%s", cl->errmsg);
        proto_rows_close(&rows);
        return rv;
    }
    Gantry__V1__Policy *p = NULL;
    uint64_t revision = 0;
    if (rows.n_rows > 0) {
        const struct proto_value *b = proto_rows_at(&rows, 0, 0), *ver = proto_rows_at(&rows, 0, 1);
        p = b->type == PROTO_BLOB ? gantry__v1__policy__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s)
                                  : NULL;
        if (p == NULL) {
            gerr_set(err, "the stored policy of \"%.63s\" does not decode", ns);
            proto_rows_close(&rows);
            return GERR_INTERNAL;
        }
        revision = ver->type == PROTO_INTEGER ? (uint64_t)ver->u.i : 0;
    }
    rv = ns[0] == '\0' ? egress_policy_cache_set_gateway(s->cache, p, revision)
                       : egress_policy_cache_set_namespace(s->cache, ns, p, revision);
    if (p != NULL) {
        gantry__v1__policy__free_unpacked(p, NULL);
    }
    proto_rows_close(&rows);
    return rv;
}

/* Bring the cache up to date from the change feed: the cluster revision first, then (the first
 * time, or when the feed was compacted past what was followed) every policy, else only the
 * namespaces with "Policy" or "Namespace" events (a namespace deleted takes its policy with it)
 * after the last revision followed. Reading the revision before the policies means a change in
 * between is seen twice, never missed; the compaction mark is read again after the events, so a
 * compaction between the two reads makes the round read every policy. At most three small queries
 * per round when nothing changed (four when something did), instead of a read of every policy row.
 * *@full: every policy was read. */
static int refresh_policies(struct egress_svc *s, bool *full, char *err)
{
    *full = false;
    struct store_client *cl;
    int rv = store_pool_acquire(s->cfg.pool, 2000, &cl);
    if (rv != 0) {
        gerr_set(err, "no store connection free");
        return rv;
    }
    int64_t now = 0, compacted = 0;
    rv = store_client_query_int(cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &now);
    if (rv == 0 && s->feed_loaded) {
        rv = store_events_compacted(cl, &compacted);
    }
    if (rv != 0) {
        gerr_set(err, "%s", cl->errmsg);
    } else if (!s->feed_loaded || compacted > s->feed_revision) {
        rv = read_all_policies(s, cl, err);
        *full = rv == 0;
    } else if (now > s->feed_revision) {
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        struct proto_value q[2] = {{.type = PROTO_INTEGER, .u.i = s->feed_revision},
                                   {.type = PROTO_INTEGER, .u.i = now}};
        rv = store_client_query(cl,
                                "SELECT DISTINCT namespace FROM events WHERE revision > ? AND revision <= ? "
                                "AND kind IN ('Policy', 'Namespace')",
                                q, 2, &rows);
        if (rv != 0) {
            gerr_set(err, "%s", cl->errmsg);
        }
        for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
            const struct proto_value *ns = proto_rows_at(&rows, i, 0);
            if (ns->type == PROTO_TEXT) {
                rv = read_one_policy(s, cl, ns->u.b.s, err);
            }
        }
        proto_rows_close(&rows);
        /* A compaction that committed between the check above and the events read took events
         * this round did not see: then every policy is read. */
        int64_t after = 0;
        if (rv == 0) {
            if ((rv = store_events_compacted(cl, &after)) != 0) {
                gerr_set(err, "%s", cl->errmsg);
            }
        }
        if (rv == 0 && after > s->feed_revision) {
            rv = read_all_policies(s, cl, err);
            *full = rv == 0;
        }
    }
    store_pool_release(s->cfg.pool, cl);
    if (rv == 0) {
        s->feed_loaded = true;
        s->feed_revision = now > s->feed_revision ? now : s->feed_revision;
    }
    return rv;
}

/* The own policy (SandboxSpec.policy) of each sandbox with a door file here and none recorded yet,
 * read from its row; sandboxes whose door file is gone are forgotten. A policy is fixed at create,
 * so each is read once. A sandbox without a row yet (or any more) stays unrecorded: its door stays
 * shut. */
/* Kubernetes: the READY sandboxes of the driver's cache (started here if it is not running). While
 * the cache is not live (starting, or relisting after its watch broke) *@wait is set and nothing is
 * changed this round: what is recorded stays, and the lookup refuses every pod meanwhile anyway. */
static int pod_ids(struct egress_svc *s, char ***out, size_t *n_out, bool *wait, char *err)
{
    char(*ready)[40] = NULL;
    size_t n = 0;
    *out = NULL;
    *n_out = 0;
    *wait = false;
    if (driver_k8s_ready_ids(s->cfg.k8s, &ready, &n) != 0) {
        int rv = driver_k8s_start_cache(s->cfg.k8s, err);
        if (rv != 0) {
            return rv; /* the API server did not answer the discovery: a failed refresh */
        }
        if (driver_k8s_ready_ids(s->cfg.k8s, &ready, &n) != 0) {
            *wait = true;
            return 0;
        }
    }
    char **ids = mem_zalloc((n + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        ids[i] = mem_strdup(ready[i]);
    }
    mem_free(ready);
    *out = ids;
    *n_out = n;
    return 0;
}

static int refresh_sandboxes(struct egress_svc *s, char *err)
{
    char **ids = NULL;
    size_t n = 0, cap = 0;
    if (s->cfg.k8s != NULL) {
        bool wait;
        int prv = pod_ids(s, &ids, &n, &wait, err);
        if (prv != 0 || wait) {
            return prv;
        }
    }
    DIR *dir = s->cfg.k8s != NULL ? NULL : opendir(s->door_dir);
    struct dirent *e;
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || len - 5 >= DOOR_ID_MAX || strcmp(e->d_name + len - 5, ".door") != 0) {
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            ids = mem_realloc(ids, cap * sizeof *ids);
        }
        ids[n] = mem_alloc(len - 4);
        snprintf(ids[n], len - 4, "%.*s", (int)(len - 5), e->d_name);
        n++;
    }
    if (dir != NULL) {
        closedir(dir);
    }
    egress_policy_cache_retain_sandboxes(s->cache, (const char *const *)ids, n);
    int rv = 0;
    struct store_client *cl = NULL;
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (egress_policy_cache_has_sandbox(s->cache, ids[i])) {
            continue;
        }
        if (cl == NULL && (rv = store_pool_acquire(s->cfg.pool, 2000, &cl)) != 0) {
            gerr_set(err, "no store connection free");
            break;
        }
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        struct proto_value q[] = {proto_text(ids[i])};
        rv = store_client_query(cl, "SELECT spec FROM sandboxes WHERE id = ?", q, 1, &rows);
        if (rv != 0) {
            gerr_set(err, "%s", cl->errmsg);
        } else if (rows.n_rows > 0) {
            const struct proto_value *b = proto_rows_at(&rows, 0, 0);
            Gantry__V1__SandboxSpec *spec =
                b->type == PROTO_BLOB
                    ? gantry__v1__sandbox_spec__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s)
                    : NULL;
            if (spec == NULL) {
                gerr_set(err, "the stored spec of sandbox %s does not decode", ids[i]);
                rv = GERR_INTERNAL;
            } else {
                rv = egress_policy_cache_set_sandbox(s->cache, ids[i], spec->policy);
                gantry__v1__sandbox_spec__free_unpacked(spec, NULL);
            }
        }
        proto_rows_close(&rows);
    }
    if (cl != NULL) {
        store_pool_release(s->cfg.pool, cl);
    }
    for (size_t i = 0; i < n; i++) {
        mem_free(ids[i]);
    }
    mem_free(ids);
    return rv;
}

static void *policy_main(void *arg)
{
    struct egress_svc *s = arg;
    bool failing = false;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        char err[GERR_MSG_SIZE] = "";
        bool full = false;
        int rv = refresh_policies(s, &full, err);
        if (rv == 0) {
            rv = refresh_sandboxes(s, err);
        }
        pthread_mutex_lock(&s->mu);
        s->wake = false;
        s->policy_reads += rv == 0;
        s->policy_full_reads += full;
        if (rv != 0) {
            s->policy_failures++;
            if (!failing) {
                LOG_WARN("egress: policy refresh failed (the cached policies stay): %s", err);
            }
        }
        failing = rv != 0;
        struct timespec until;
        clock_mono_deadline(&until, s->cfg.policy_refresh_ms);
        while (!s->stop && !s->wake && clock_cond_wait_mono(&s->cond, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

int egress_svc_start(const struct egress_svc_config *cfg, struct egress_svc **out, char *errmsg)
{
    struct egress_svc *s = mem_zalloc(sizeof *s);
    s->cfg = *cfg;
    s->door_dir = cfg->door_dir != NULL ? mem_strdup(cfg->door_dir) : NULL;
    s->gateway_id = mem_strdup(cfg->gateway_id != NULL ? cfg->gateway_id : "");
    s->cfg.door_dir = s->door_dir;
    s->cfg.gateway_id = s->gateway_id;
    if (s->cfg.policy_refresh_ms == 0) {
        s->cfg.policy_refresh_ms = 500;
    }
    snprintf(s->rows[MAX_NS_ROWS].ns, sizeof s->rows[MAX_NS_ROWS].ns, "_other");
    int rv = egress_policy_cache_new(&s->cache);
    if (rv != 0) {
        gerr_set(errmsg, "egress: %s", gerr_str(rv));
        goto err_after_alloc;
    }
    uv_loop_init(&s->loop);
    if ((rv = egress_relay_new(&s->loop, &cfg->relay, s->cache, on_event, s, &s->relay)) != 0) {
        gerr_set(errmsg, "egress: the relay's limits are invalid (buffer at least %u bytes, limits above 0)",
                 EGRESS_HEAD_MAX);
        goto err_after_loop;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    uv_async_init(&s->loop, &s->stop_async, on_stop);
    s->stop_async.data = s;
    if (cfg->k8s != NULL) {
        /* Kubernetes pods: one shared door, opened before the loop runs (this thread is its only
         * user until the relay thread starts). */
        struct sockaddr_in any;
        uv_ip4_addr("0.0.0.0", (int)cfg->shared_port, &any);
        if ((rv = egress_relay_open_shared_door(s->relay, (const struct sockaddr *)&any,
                                                EGRESS_DOOR_REUSE_PORT, pod_lookup, s, NULL, &s->shared,
                                                errmsg)) != 0) {
            gerr_wrap(errmsg, "egress relay for kubernetes pods on port %u", cfg->shared_port);
            goto err_after_relay;
        }
    } else {
        uv_timer_init(&s->loop, &s->scan_timer);
        s->scan_timer.data = s;
        s->scanning = true;
        uv_timer_start(&s->scan_timer, scan, 0, SCAN_MS);
        /* The directory the process driver writes door files into (it makes it too; whoever is
         * first). */
        if (mkdir(s->door_dir, 0700) != 0 && errno != EEXIST) {
            LOG_WARN("egress: mkdir %s: %s (doors are found by the %u ms scan only)", s->door_dir,
                     strerror(errno), SCAN_MS);
        }
        uv_fs_event_init(&s->loop, &s->watch);
        s->watch.data = s;
        s->watching = true;
        if (uv_fs_event_start(&s->watch, on_door_dir_changed, s->door_dir, 0) != 0) {
            LOG_WARN("egress: cannot watch %s: doors are found by the %u ms scan only", s->door_dir, SCAN_MS);
        }
    }
    /* Policies first: no door opens before the relay has read them once (or tried). */
    char err[GERR_MSG_SIZE] = "";
    bool full = false;
    if (refresh_policies(s, &full, err) != 0 || refresh_sandboxes(s, err) != 0) {
        LOG_WARN("egress: first policy read failed (retried): %s", err);
    }
    s->policy_full_reads += full; /* before the threads: no lock needed yet */
    if (pthread_create(&s->policy_thread, NULL, policy_main, s) != 0) {
        rv = GERR_NOMEM;
        gerr_set(errmsg, "egress: cannot start the policy thread");
        goto err_after_relay;
    }
    if (pthread_create(&s->relay_thread, NULL, relay_main, s) != 0) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->policy_thread, NULL);
        rv = GERR_NOMEM;
        gerr_set(errmsg, "egress: cannot start the relay thread");
        goto err_after_relay;
    }
    if (cfg->k8s != NULL) {
        LOG_INFO("egress: relay for kubernetes pods up on port %u", cfg->shared_port);
    } else {
        LOG_INFO("egress: relay up, doors on port %u from %s", cfg->relay_port, s->door_dir);
    }
    *out = s;
    return 0;

err_after_relay:
    if (s->scanning) {
        uv_close((uv_handle_t *)&s->scan_timer, NULL);
    }
    if (s->watching) {
        uv_close((uv_handle_t *)&s->watch, NULL);
    }
    egress_relay_close(s->relay, on_relay_closed, s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
err_after_loop:
    uv_loop_close(&s->loop);
    egress_policy_cache_free(s->cache);
err_after_alloc:
    mem_free(s->door_dir);
    mem_free(s->gateway_id);
    mem_free(s);
    return rv;
}

void egress_svc_stop(struct egress_svc *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->policy_thread, NULL);
    uv_async_send(&s->stop_async);
    pthread_join(s->relay_thread, NULL);
    uv_loop_close(&s->loop);
    egress_policy_cache_free(s->cache);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    mem_free(s->doors);
    mem_free(s->door_dir);
    mem_free(s->gateway_id);
    mem_free(s);
}
