/* gantry-bench api: load over the real gantry.v1 API of a local 3-replica gantryd cluster, and
 * with --baseline etcd the same phases as Put/Range against a local 3-member etcd, interleaved in
 * one run (gantry phase 1, etcd phase 1, gantry phase 2, ...).
 *
 * Phases (each on fresh connections, through h2mux: N connections x M concurrent streams, TLS with
 * the cluster's CA, ALPN h2, gantry calls with "authorization: Bearer <admin key>"):
 *   1a/1b  sequential create (1 connection, 1 stream) to the leader, then to a follower;
 *   2      concurrent create spread over all three members (default 8 x 8 = 64 calls in flight);
 *   3      Get of objects created in phase 2, from the two followers (64 in flight), linearizable
 *          then stale-ok (ReadOptions.max_staleness_ms BENCH_STALE_MS); etcd twice:
 *          linearizable Range (its default) and serializable Range;
 *   fill   optional (--fill N), before phase 1: N concurrent creates, then RSS per member at N
 *          objects (the phases after it run on a store that holds them);
 *   4      List of --list-objects objects (default 1,000): gantry pages of 500 (the documented
 *          maximum, docs/resources.md), so one List is 2 calls; etcd one Range over the prefix;
 *   5      SIGKILL of the leader under concurrent create load: time from the kill to the first
 *          acknowledged create *sent after* the kill (from the kill on, probes every 20 ms on
 *          connections of their own count too, so the figure does not wait for load calls stuck
 *          on the dead leader); afterwards every acknowledged create is read back (none may be
 *          missing).
 * Per phase: calls/s, p50/p99/p99.9 latency, errors by status, CPU of the whole cluster per call
 * (utime + stime of the members from /proc), and for gantry the dqlite requests per call (the
 * replicas' gantry_store_requests_total, summed, before and after). Load phases run for --seconds;
 * every wait has a bound; a phase that cannot finish says why and the bench exits 1. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "benchcluster.h"
#include "etcd_kv.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "h2mux.h"
#include "lib/mem.h"
#include "lib/rand.h"

#define NS_LOAD           "bench"
#define NS_LIST           "bench-list"
#define NS_WATCH          "bench-watch"
#define GANTRY_PAGE_MAX   500u /* ListSandboxes' largest page (docs/resources.md) */
#define FAILOVER_LIMIT_US (30u * 1000000u)
#define BENCH_STALE_MS    1000u /* phase 3's stale-ok Get: ReadOptions.max_staleness_ms */
#define SETUP_TIMEOUT_MS  10000u
#define STATUS_SLOTS      (17 - H2MUX_OUTCOME_MIN)
#define MAX_RESULTS       24
/* Failover probes: from the kill on, one create every PROBE_INTERVAL_US over connections of their
 * own (one per member, PROBE_STREAMS streams each), so the time to the first acknowledged write
 * does not wait for the load's own calls that hang on the dead leader. */
#define PROBE_INTERVAL_US 20000u
#define PROBE_STREAMS     64u
#define PROBE_TAG         (UINT64_C(1) << 63)

/* ------------------------------------------------------------------------------------------------
 * Options */

struct opts {
    bool etcd;
    bool quick;
    double seconds;
    unsigned conns, streams;
    unsigned read_conns, read_streams;
    unsigned list_conns, list_streams;
    unsigned list_objects;
    unsigned watchers, watch_events, watch_streams;
    double watch_idle_s;
    uint64_t fill;
    unsigned call_timeout_ms;
    unsigned latency_ms;
    unsigned value_bytes; /* 0: the size of a stored sandbox, measured in phase 1a */
    double warmup_s, after_s;
    const char *gantryd, *etcd_bin, *json_path;
    char gantryd_buf[PATH_MAX];
    bool gantryd_default; /* the gantryd of this build tree (so built from the source commit) */
    bool keep;
    unsigned phases; /* bit N: run phase N (1 covers 1a and 1b); --phases */
};

/* ------------------------------------------------------------------------------------------------
 * Name pools: the objects a phase created (acknowledged), by sequence number. */

struct pool {
    const char *prefix;
    uint64_t *seq;
    size_t n, cap;
};

static void pool_add(struct pool *p, uint64_t seq)
{
    if (p->n == p->cap) {
        p->cap = p->cap == 0 ? 1024 : p->cap * 2;
        p->seq = mem_realloc(p->seq, p->cap * sizeof *p->seq);
    }
    p->seq[p->n++] = seq;
}

static void gantry_name(char *out, size_t len, const char *prefix, uint64_t seq)
{
    snprintf(out, len, "%s-%07" PRIu64, prefix, seq);
}

static void etcd_key(char *out, size_t len, const char *prefix, uint64_t seq)
{
    snprintf(out, len, "/bench/%s/%07" PRIu64, prefix, seq);
}

/* ------------------------------------------------------------------------------------------------
 * Results */

struct result {
    char key[48];
    char title[96];
    const char *system; /* "gantry" or "etcd" */
    unsigned conns, streams;
    bool ran, failed;
    char why[GERR_MSG_SIZE];
    double seconds;
    uint64_t calls, ok;
    uint64_t by_status[STATUS_SLOTS]; /* index: status - H2MUX_OUTCOME_MIN */
    double rate, p50, p90, p99, p999, max, mean;
    uint64_t histogram[16]; /* latencies by upper bound, see HIST_BOUNDS_MS */
    double cpu_ms_per_call;
    bool cpu_known;
    double store_per_call;
    bool store_known;
    char store_note[160];
    double resp_bytes_mean;
    /* list */
    unsigned list_items;
    unsigned list_pages; /* calls one List took (gantry follows next_page_token) */
    uint64_t list_short;
    /* failover */
    bool failover;
    char killed[32];
    double failover_ms;
    uint64_t acked, missing, readback_errors;
    double load_first_ms; /* first ack of a load call (not a probe) sent after the kill */
    uint64_t probes, probes_ok;
    /* watch */
    bool watch;
    unsigned watch_member;
    double watch_ready_ms;
    long watch_rss_before_kib, watch_rss_after_kib;
    double watch_idle_rate_before, watch_idle_rate_with; /* dqlite requests/s, all replicas; -1 unknown */
    uint64_t watch_delivered, watch_expected, watch_order_errors, watch_ended_early;
    uint64_t watch_reopened; /* watch opens shed with UNAVAILABLE and sent again */
};

struct bench {
    struct opts o;
    struct bc_cluster g, e;
    bool g_up, e_up;
    struct result rs[MAX_RESULTS];
    unsigned n_rs;
    unsigned value_bytes;
    char *value;
    /* name pools */
    struct pool g_conc, e_conc;
    uint64_t g_objects, e_objects;           /* acknowledged creates / puts so far */
    uint64_t g_objects_fill, e_objects_fill; /* ... when the fill phase's RSS was taken */
    long rss_phases[2][BC_NODES], rss_fill[2][BC_NODES];
    bool rss_fill_known;
    char load_start[64], load_end[64];
    char source_commit[64];
};

static void read_loadavg(char *out, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "r");
    out[0] = '\0';
    if (f != NULL) {
        if (fgets(out, (int)len, f) != NULL) {
            out[strcspn(out, "\n")] = '\0';
        }
        fclose(f);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Latency histogram buckets: [0, 1 ms), [1, 2), [2, 5), ... [5000, 10000), [10000, inf). */
static const double HIST_BOUNDS_MS[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
#define N_HIST (sizeof HIST_BOUNDS_MS / sizeof HIST_BOUNDS_MS[0] + 1)

struct lat {
    uint32_t *us;
    size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t us)
{
    if (l->n == l->cap) {
        l->cap = l->cap == 0 ? 4096 : l->cap * 2;
        l->us = mem_realloc(l->us, l->cap * sizeof *l->us);
    }
    l->us[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static double pct(const struct lat *l, double q)
{
    if (l->n == 0) {
        return 0;
    }
    size_t i = (size_t)ceil(q * (double)l->n) - 1;
    return (i >= l->n ? l->us[l->n - 1] : l->us[i]) / 1000.0;
}

static void lat_summarize(struct lat *l, struct result *r)
{
    if (l->n == 0) {
        return;
    }
    qsort(l->us, l->n, sizeof *l->us, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < l->n; i++) {
        sum += l->us[i];
    }
    r->p50 = pct(l, 0.50);
    r->p99 = pct(l, 0.99);
    r->p90 = pct(l, 0.90);
    r->p999 = pct(l, 0.999);
    for (size_t i = 0; i < l->n; i++) {
        unsigned b = 0;
        while (b < N_HIST - 1 && (double)l->us[i] >= HIST_BOUNDS_MS[b] * 1000.0) {
            b++;
        }
        r->histogram[b]++;
    }
    r->max = l->us[l->n - 1] / 1000.0;
    r->mean = sum / (double)l->n / 1000.0;
}

/* ------------------------------------------------------------------------------------------------
 * Workloads: one struct run per phase, driven by h2mux. */

enum op {
    OP_G_CREATE,
    OP_G_GET,
    OP_G_LIST,
    OP_E_PUT,
    OP_E_RANGE,
    OP_E_LIST,
};

struct list_op {
    uint64_t start_us;
    unsigned items, pages;
    char token[512];
};

struct run {
    struct bench *b;
    struct bc_cluster *c;
    struct result *r;
    enum op op;
    bool serializable; /* OP_E_RANGE */
    const char *prefix;
    const char *ns;
    /* stop rules */
    uint64_t duration_us; /* time-bound: issue for this long (0: count-bound) */
    uint64_t end_us;      /* ... until this time (set when the run starts) */
    uint64_t max_calls;   /* count-bound: issue this many (ops for lists, reads for read-back) */
    uint64_t issued;
    uint64_t inflight;
    /* reads: the pool to read from; read-back: every entry once, with retries */
    const struct pool *from;
    bool readback;
    uint64_t *retry;
    size_t n_retry, cap_retry;
    uint8_t *attempts;
    /* acknowledged creates go here (NULL: nowhere) */
    struct pool *record;
    /* lists */
    struct list_op *lops;
    size_t n_lops;
    size_t *pending; /* list ops waiting for their next page */
    size_t n_pending;
    unsigned expect_items;
    /* failover: kill after warmup_us, stop after_us after the first acknowledgement */
    bool failover;
    uint64_t warmup_us, after_us;
    uint64_t kill_at_us, kill_us, first_ack_us, load_first_ack_us;
    unsigned n_load_conns; /* connections from here on are the probes' */
    uint64_t next_probe_us;
    unsigned victim;
    bool killed;
    /* measurements */
    struct lat lat;
    double resp_bytes;
    uint64_t resp_n;
    /* scratch for building requests (packed at once by h2mux) */
    char name[96];
    char name2[96];
    Gantry__V1__CreateSandboxRequest create;
    Gantry__V1__Sandbox sandbox;
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__SandboxSpec spec;
    Gantry__V1__ObjectMeta__LabelsEntry label[3], *labels[3];
    Gantry__V1__SandboxSpec__EnvEntry env[4], *envs[4];
    char *command[7];
    Gantry__V1__GetSandboxRequest get;
    Gantry__V1__ReadOptions read; /* OP_G_GET with serializable: max_staleness_ms */
    Gantry__V1__ListSandboxesRequest list;
    Gantry__V1__PageRequest page;
    Etcdserverpb__PutRequest put;
    Etcdserverpb__RangeRequest range;
};

static void run_init(struct run *w, struct bench *b, struct bc_cluster *c, struct result *r, enum op op)
{
    memset(w, 0, sizeof *w);
    w->b = b;
    w->c = c;
    w->r = r;
    w->op = op;
    gantry__v1__create_sandbox_request__init(&w->create);
    gantry__v1__sandbox__init(&w->sandbox);
    gantry__v1__object_meta__init(&w->meta);
    gantry__v1__sandbox_spec__init(&w->spec);
    /* A sandbox like an agent's: a few labels, an image, a command line, some environment; as
     * CreateSandbox returns it (with the server's id, owner, timestamps and status) it is about
     * 500 bytes, the size the etcd baseline's values take by default. */
    static const char *const labels[3][2] = {
        {"app", "gantry-bench"}, {"team", "research-agents"}, {"tier", "batch"}};
    for (int i = 0; i < 3; i++) {
        gantry__v1__object_meta__labels_entry__init(&w->label[i]);
        w->label[i].key = (char *)labels[i][0];
        w->label[i].value = (char *)labels[i][1];
        w->labels[i] = &w->label[i];
    }
    w->meta.n_labels = 3;
    w->meta.labels = w->labels;
    w->meta.name = w->name;
    w->meta.namespace_ = (char *)NS_LOAD;
    static const char *const env[4][2] = {{"TASK", "/work/task.json"},
                                          {"MODEL", "agent-large-2026-10"},
                                          {"LOG_LEVEL", "info"},
                                          {"WORKSPACE", "/work/checkout"}};
    for (int i = 0; i < 4; i++) {
        gantry__v1__sandbox_spec__env_entry__init(&w->env[i]);
        w->env[i].key = (char *)env[i][0];
        w->env[i].value = (char *)env[i][1];
        w->envs[i] = &w->env[i];
    }
    static const char *const cmd[7] = {
        "/usr/bin/agent", "--task", "/work/task.json", "--max-steps", "200", "--workspace", "/work/checkout"};
    for (int i = 0; i < 7; i++) {
        w->command[i] = (char *)cmd[i];
    }
    w->spec.image = "registry.example.com/agents/bench-agent:1.4.2";
    w->spec.n_command = 7;
    w->spec.command = w->command;
    w->spec.n_env = 4;
    w->spec.env = w->envs;
    w->spec.lifetime_seconds = 3600;
    w->sandbox.meta = &w->meta;
    w->sandbox.spec = &w->spec;
    w->create.sandbox = &w->sandbox;
    gantry__v1__get_sandbox_request__init(&w->get);
    w->get.namespace_ = (char *)NS_LOAD;
    w->get.name = w->name;
    gantry__v1__list_sandboxes_request__init(&w->list);
    gantry__v1__page_request__init(&w->page);
    w->list.namespace_ = (char *)NS_LIST;
    w->list.page = &w->page;
    w->page.page_size = GANTRY_PAGE_MAX;
    etcdserverpb__put_request__init(&w->put);
    etcdserverpb__range_request__init(&w->range);
}

static void run_close(struct run *w)
{
    mem_free(w->lat.us);
    mem_free(w->retry);
    mem_free(w->attempts);
    mem_free(w->lops);
    mem_free(w->pending);
}

/* The seq of the next object to read: read-back takes each entry of the pool once (then the
 * retries), a load phase picks at random. UINT64_MAX: nothing (more) to read. */
static uint64_t pick_read(struct run *w, uint64_t *idx)
{
    if (w->readback) {
        if (w->n_retry > 0) {
            *idx = w->retry[--w->n_retry];
            return w->from->seq[*idx];
        }
        if (w->issued >= w->from->n) {
            return UINT64_MAX;
        }
        *idx = w->issued++;
        return w->from->seq[*idx];
    }
    w->issued++;
    *idx = (uint64_t)rand_range(0, w->from->n - 1);
    return w->from->seq[*idx];
}

static int w_tick(void *arg)
{
    struct run *w = arg;
    uint64_t now = h2mux_now_us();
    if (w->failover) {
        if (!w->killed && now >= w->kill_at_us) {
            bc_kill(w->c, w->victim);
            w->kill_us = h2mux_now_us();
            w->killed = true;
        }
        if (w->killed && w->first_ack_us != 0 && now >= w->first_ack_us + w->after_us) {
            return H2MUX_STOP;
        }
        if (w->killed && w->first_ack_us == 0 && now >= w->kill_us + FAILOVER_LIMIT_US) {
            return H2MUX_STOP;
        }
        return 0;
    }
    if (w->end_us != 0 && now >= w->end_us) {
        return H2MUX_STOP;
    }
    if (w->readback && w->issued >= w->from->n && w->n_retry == 0 && w->inflight == 0) {
        return H2MUX_STOP;
    }
    return 0;
}

static int w_next_req(struct run *w, struct h2mux_req *req);

static int w_next(void *arg, unsigned conn, struct h2mux_req *req)
{
    struct run *w = arg;
    bool probe = w->failover && conn >= w->n_load_conns;
    if (probe) {
        uint64_t now = h2mux_now_us();
        if (!w->killed || w->first_ack_us != 0 || now < w->next_probe_us) {
            return H2MUX_WAIT;
        }
        w->next_probe_us = now + PROBE_INTERVAL_US;
    }
    int rv = w_next_req(w, req);
    if (rv == 0) {
        w->inflight++;
        if (probe) {
            req->tag |= PROBE_TAG;
            w->r->probes++;
        }
    }
    return rv;
}

static int w_next_req(struct run *w, struct h2mux_req *req)
{
    uint64_t idx = 0, seq;
    switch (w->op) {
    case OP_G_CREATE:
    case OP_E_PUT:
        if (w->max_calls != 0 && w->issued >= w->max_calls) {
            return H2MUX_STOP;
        }
        seq = w->issued++;
        req->tag = seq;
        if (w->op == OP_G_CREATE) {
            gantry_name(w->name, sizeof w->name, w->prefix, seq);
            w->meta.namespace_ = (char *)w->ns;
            req->path = "/gantry.v1.Sandboxes/Create";
            req->msg = &w->create.base;
        } else {
            etcd_key(w->name, sizeof w->name, w->prefix, seq);
            w->put.key.data = (uint8_t *)w->name;
            w->put.key.len = strlen(w->name);
            w->put.value.data = (uint8_t *)w->b->value;
            w->put.value.len = w->b->value_bytes;
            req->path = "/etcdserverpb.KV/Put";
            req->msg = &w->put.base;
        }
        return 0;
    case OP_G_GET:
    case OP_E_RANGE:
        if (w->from == NULL || w->from->n == 0) {
            return H2MUX_STOP;
        }
        seq = pick_read(w, &idx);
        if (seq == UINT64_MAX) {
            return H2MUX_WAIT; /* read-back: retries may still come; the tick ends it */
        }
        req->tag = idx;
        if (w->op == OP_G_GET) {
            gantry_name(w->name, sizeof w->name, w->from->prefix, seq);
            req->path = "/gantry.v1.Sandboxes/Get";
            /* the stale-ok read (docs/resources.md "Read consistency"), etcd's serializable analogue */
            gantry__v1__read_options__init(&w->read);
            w->read.max_staleness_ms = BENCH_STALE_MS;
            w->get.read = w->serializable ? &w->read : NULL;
            req->msg = &w->get.base;
        } else {
            etcd_key(w->name, sizeof w->name, w->from->prefix, seq);
            w->range.key.data = (uint8_t *)w->name;
            w->range.key.len = strlen(w->name);
            w->range.range_end.len = 0;
            w->range.serializable = w->serializable;
            req->path = "/etcdserverpb.KV/Range";
            req->msg = &w->range.base;
        }
        return 0;
    case OP_G_LIST:
    case OP_E_LIST: {
        size_t op;
        if (w->n_pending > 0) {
            op = w->pending[--w->n_pending];
        } else {
            if (w->max_calls != 0 && w->issued >= w->max_calls) {
                return H2MUX_WAIT; /* continuations may still come; the tick ends it */
            }
            w->lops = mem_realloc(w->lops, (w->n_lops + 1) * sizeof *w->lops);
            op = w->n_lops++;
            memset(&w->lops[op], 0, sizeof w->lops[op]);
            w->lops[op].start_us = h2mux_now_us();
            w->issued++;
        }
        req->tag = op;
        if (w->op == OP_G_LIST) {
            w->page.page_token = w->lops[op].token;
            req->path = "/gantry.v1.Sandboxes/List";
            req->msg = &w->list.base;
        } else {
            snprintf(w->name, sizeof w->name, "/bench/%s/", w->prefix);
            snprintf(w->name2, sizeof w->name2, "/bench/%s0", w->prefix); /* '/' + 1 == '0' */
            w->range.key.data = (uint8_t *)w->name;
            w->range.key.len = strlen(w->name);
            w->range.range_end.data = (uint8_t *)w->name2;
            w->range.range_end.len = strlen(w->name2);
            w->range.serializable = false;
            req->path = "/etcdserverpb.KV/Range";
            req->msg = &w->range.base;
        }
        return 0;
    }
    }
    return H2MUX_STOP;
}

static void count_status(struct result *r, int status)
{
    int i = status - H2MUX_OUTCOME_MIN;
    if (i >= 0 && i < STATUS_SLOTS) {
        r->by_status[i]++;
    }
}

static void w_done(void *arg, const struct h2mux_result *res)
{
    struct run *w = arg;
    struct result *r = w->r;
    w->inflight--;
    if (w->op == OP_G_LIST || w->op == OP_E_LIST) {
        struct list_op *lo = &w->lops[res->tag];
        lo->pages++;
        if (res->status != 0) {
            r->calls++;
            count_status(r, res->status);
            return;
        }
        unsigned items = 0;
        bool more = false;
        if (w->op == OP_G_LIST) {
            Gantry__V1__ListSandboxesResponse *m =
                gantry__v1__list_sandboxes_response__unpack(NULL, res->body_len, res->body);
            if (m != NULL) {
                items = (unsigned)m->n_sandboxes;
                more = m->next_page_token[0] != '\0';
                snprintf(lo->token, sizeof lo->token, "%s", m->next_page_token);
                gantry__v1__list_sandboxes_response__free_unpacked(m, NULL);
            }
        } else {
            Etcdserverpb__RangeResponse *m =
                etcdserverpb__range_response__unpack(NULL, res->body_len, res->body);
            if (m != NULL) {
                items = (unsigned)m->n_kvs;
                etcdserverpb__range_response__free_unpacked(m, NULL);
            }
        }
        lo->items += items;
        if (more) {
            w->pending = mem_realloc(w->pending, (w->n_pending + 1) * sizeof *w->pending);
            w->pending[w->n_pending++] = (size_t)res->tag;
            return;
        }
        r->calls++;
        if (lo->items != w->expect_items) {
            r->list_short++;
            count_status(r, H2MUX_BAD_REPLY);
            return;
        }
        r->ok++;
        r->list_items = lo->items;
        r->list_pages = lo->pages;
        lat_add(&w->lat, res->done_us - lo->start_us);
        return;
    }
    if (w->readback) {
        /* Every acknowledged object must be there: NOT_FOUND (gantry) or no key (etcd) is a lost
         * write; anything else is retried a few times, then counted as unverifiable. */
        bool found = res->status == 0, missing = res->status == 5;
        if (found && w->op == OP_E_RANGE) {
            Etcdserverpb__RangeResponse *m =
                etcdserverpb__range_response__unpack(NULL, res->body_len, res->body);
            found = m != NULL && m->n_kvs == 1;
            missing = m != NULL && m->n_kvs == 0;
            if (m != NULL) {
                etcdserverpb__range_response__free_unpacked(m, NULL);
            }
        }
        if (found) {
            return;
        }
        if (missing) {
            r->missing++;
            return;
        }
        if (w->attempts[res->tag]++ < 5) {
            if (w->n_retry == w->cap_retry) {
                w->cap_retry = w->cap_retry == 0 ? 64 : w->cap_retry * 2;
                w->retry = mem_realloc(w->retry, w->cap_retry * sizeof *w->retry);
            }
            w->retry[w->n_retry++] = res->tag;
        } else {
            r->readback_errors++;
        }
        return;
    }
    bool probe = (res->tag & PROBE_TAG) != 0;
    uint64_t seq = res->tag & ~PROBE_TAG;
    if (!probe) {
        r->calls++;
    }
    if (res->status != 0) {
        if (!probe) {
            count_status(r, res->status);
        }
        return;
    }
    if (probe) {
        r->probes_ok++;
    } else {
        r->ok++;
        lat_add(&w->lat, res->done_us - res->sent_us);
        w->resp_bytes += (double)res->body_len;
        w->resp_n++;
    }
    if (w->record != NULL) {
        pool_add(w->record, seq);
    }
    if (w->failover && w->killed && res->sent_us > w->kill_us) {
        if (w->first_ack_us == 0) {
            w->first_ack_us = res->done_us;
        }
        if (!probe && w->load_first_ack_us == 0) {
            w->load_first_ack_us = res->done_us;
        }
    }
}

/* Connections: @n_conns, connection k to member targets[k % n_targets] (and, when @rotate, on to
 * the other members of @targets if it breaks). */
static int run_mux(struct run *w, const unsigned *targets, unsigned n_targets, unsigned n_conns,
                   unsigned streams, bool rotate, char *errmsg)
{
    struct bc_cluster *c = w->c;
    struct h2mux_config cfg = {
        .ca_file = c->ca_file,
        .server_name = "localhost",
        .authorization = c->auth[0] != '\0' ? c->auth : NULL,
        .streams = streams,
        .call_timeout_ms = w->b->o.call_timeout_ms,
    };
    struct h2mux *m;
    int rv = h2mux_new(&cfg, &m, errmsg);
    if (rv != 0) {
        return rv;
    }
    for (unsigned k = 0; k < n_conns; k++) {
        const char *addrs[BC_NODES];
        unsigned n = rotate ? n_targets : 1;
        for (unsigned j = 0; j < n; j++) {
            addrs[j] = c->nodes[targets[(k + j) % n_targets]].api;
        }
        if (h2mux_add(m, addrs, n, 0, errmsg) < 0) {
            h2mux_free(m);
            return GERR_INVAL;
        }
    }
    w->n_load_conns = n_conns;
    for (unsigned k = 0; w->failover && k < n_targets; k++) {
        const char *addrs[BC_NODES];
        for (unsigned j = 0; j < n_targets; j++) {
            addrs[j] = c->nodes[targets[(k + j) % n_targets]].api;
        }
        if (h2mux_add(m, addrs, n_targets, PROBE_STREAMS, errmsg) < 0) {
            h2mux_free(m);
            return GERR_INVAL;
        }
    }
    if ((rv = h2mux_connect(m, 10000, errmsg)) != 0) {
        h2mux_free(m);
        return rv;
    }
    struct h2mux_workload wl = {.next = w_next, .done = w_done, .tick = w_tick, .arg = w};
    uint64_t start = h2mux_now_us();
    w->end_us = w->duration_us != 0 ? start + w->duration_us : 0;
    w->kill_at_us = start + w->warmup_us;
    uint64_t budget_ms = (uint64_t)w->b->o.call_timeout_ms * 3 + 30000u;
    if (w->duration_us != 0) {
        budget_ms += w->duration_us / 1000u;
    } else if (w->max_calls != 0 || w->readback) {
        /* Count-bound work (setup, fill, read-back): at least 50 calls/s, plus 10 minutes. */
        uint64_t n = w->readback ? w->from->n : w->max_calls;
        budget_ms += 600000u + n * 20u;
    } else {
        budget_ms += FAILOVER_LIMIT_US / 1000u + 60000u;
    }
    rv = h2mux_run(m, &wl, start / 1000u + budget_ms, errmsg);
    w->r->seconds = (double)(h2mux_now_us() - start) / 1e6;
    struct h2mux_stats st;
    h2mux_get_stats(m, &st);
    if (st.peer_max_streams != 0 && st.peer_max_streams < streams) {
        fprintf(stderr,
                "gantry-bench: note: %s allows only %u concurrent streams per connection (asked %u)\n",
                c->kind == BC_GANTRY ? "gantryd" : "etcd", st.peer_max_streams, streams);
    }
    h2mux_free(m);
    return rv;
}

/* ------------------------------------------------------------------------------------------------
 * Phases */

static struct result *new_result(struct bench *b, struct bc_cluster *c, const char *key, const char *title)
{
    struct result *r = &b->rs[b->n_rs < MAX_RESULTS - 1 ? b->n_rs++ : b->n_rs];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->title, sizeof r->title, "%s", title);
    r->system = c->kind == BC_GANTRY ? "gantry" : "etcd";
    return r;
}

struct snap {
    double cpu[BC_NODES];
    double store[BC_NODES];
    bool store_ok[BC_NODES];
    char store_err[GERR_MSG_SIZE];
};

static void snap_take(struct bc_cluster *c, struct snap *s)
{
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < BC_NODES; i++) {
        s->cpu[i] = bc_cpu_ms(c, i);
        if (c->kind == BC_GANTRY) {
            char err[GERR_MSG_SIZE];
            s->store_ok[i] = bc_store_requests(c, i, &s->store[i], err) == 0;
            if (!s->store_ok[i] && s->store_err[0] == '\0') {
                snprintf(s->store_err, sizeof s->store_err, "%s", err);
            }
        }
    }
}

static void snap_diff(struct bc_cluster *c, const struct snap *a, const struct snap *z, struct result *r)
{
    double cpu = 0, store = 0;
    bool cpu_ok = true, store_ok = true;
    unsigned live = 0;
    for (unsigned i = 0; i < BC_NODES; i++) {
        if (a->cpu[i] >= 0 && z->cpu[i] >= 0) {
            cpu += z->cpu[i] - a->cpu[i];
            live++;
        } else if (!c->nodes[i].killed) {
            cpu_ok = false;
        }
        if (c->kind == BC_GANTRY) {
            if (a->store_ok[i] && z->store_ok[i]) {
                store += z->store[i] - a->store[i];
            } else if (!c->nodes[i].killed) {
                store_ok = false;
            }
        }
    }
    uint64_t calls = r->calls > 0 ? r->calls : 1;
    r->cpu_known = cpu_ok && live > 0;
    r->cpu_ms_per_call = cpu / (double)calls;
    if (c->kind == BC_GANTRY) {
        r->store_known = store_ok;
        r->store_per_call = store / (double)calls;
        if (!store_ok) {
            snprintf(r->store_note, sizeof r->store_note, "%.150s",
                     a->store_err[0] != '\0' ? a->store_err : z->store_err);
        }
    }
}

static void finish_result(struct run *w, int rv, const char *errmsg)
{
    struct result *r = w->r;
    r->ran = true;
    r->rate = r->seconds > 0 ? (double)r->ok / r->seconds : 0;
    r->resp_bytes_mean = w->resp_n > 0 ? w->resp_bytes / (double)w->resp_n : 0;
    lat_summarize(&w->lat, r);
    if (rv != 0) {
        r->failed = true;
        snprintf(r->why, sizeof r->why, "%s", errmsg);
    } else if (r->ok == 0 && !w->readback) {
        r->failed = true;
        snprintf(r->why, sizeof r->why, "no call succeeded");
    } else if (r->list_short > 0) {
        r->failed = true;
        snprintf(r->why, sizeof r->why, "%" PRIu64 " lists returned other than %u objects", r->list_short,
                 w->expect_items);
    }
    if (r->failed) {
        fprintf(stderr, "gantry-bench: %s %s: FAILED: %s\n", r->system, r->key, r->why);
    }
}

/* A load phase: @op against @targets for --seconds (or @count calls when non-zero). */
static struct result *phase_load(struct bench *b, struct bc_cluster *c, const char *key, const char *title,
                                 enum op op, const unsigned *targets, unsigned n_targets, unsigned conns,
                                 unsigned streams, const char *prefix, uint64_t count, struct pool *record,
                                 const struct pool *from, bool serializable)
{
    struct result *r = new_result(b, c, key, title);
    struct run w;
    char errmsg[GERR_MSG_SIZE] = "";
    struct snap a, z;
    run_init(&w, b, c, r, op);
    r->conns = conns;
    r->streams = streams;
    w.prefix = prefix;
    w.ns = NS_LOAD;
    w.record = record;
    w.from = from;
    w.serializable = serializable;
    w.expect_items = b->o.list_objects;
    if (count != 0) {
        w.max_calls = count;
    } else {
        w.duration_us = (uint64_t)(b->o.seconds * 1e6);
    }
    int rv = bc_check_alive(c, errmsg);
    if (rv == 0) {
        snap_take(c, &a);
        rv = run_mux(&w, targets, n_targets, conns, streams, false, errmsg);
        snap_take(c, &z);
        snap_diff(c, &a, &z, r);
    }
    finish_result(&w, rv, errmsg);
    if (op == OP_G_CREATE) {
        b->g_objects += r->ok;
    } else if (op == OP_E_PUT) {
        b->e_objects += r->ok;
    }
    fprintf(stderr, "  %-6s %-46s %9.1f/s  p50 %8.2f ms  p99 %8.2f ms  (%" PRIu64 " ok, %" PRIu64 " calls)\n",
            r->system, r->title, r->rate, r->p50, r->p99, r->ok, r->calls);
    run_close(&w);
    return r;
}

/* Count-bound creates that are setup, not a measured phase (the List phase's objects). */
static int setup_creates(struct bench *b, struct bc_cluster *c, const char *ns, const char *prefix,
                         uint64_t count, char *errmsg)
{
    struct result r;
    struct run w;
    static const unsigned all[BC_NODES] = {0, 1, 2};
    memset(&r, 0, sizeof r);
    run_init(&w, b, c, &r, c->kind == BC_GANTRY ? OP_G_CREATE : OP_E_PUT);
    w.prefix = prefix;
    w.ns = ns;
    w.max_calls = count;
    int rv = run_mux(&w, all, BC_NODES, b->o.conns, b->o.streams, false, errmsg);
    run_close(&w);
    if (rv == 0 && r.ok != count) {
        /* Setup needs every object: create the missing ones (names are taken once each, so the
         * sequence numbers go on). */
        uint64_t missing = count - r.ok;
        for (int attempt = 0; attempt < 5 && missing > 0 && rv == 0; attempt++) {
            struct result r2;
            memset(&r2, 0, sizeof r2);
            run_init(&w, b, c, &r2, c->kind == BC_GANTRY ? OP_G_CREATE : OP_E_PUT);
            w.prefix = prefix;
            w.ns = ns;
            w.issued = count + (uint64_t)attempt * count; /* fresh names */
            w.max_calls = w.issued + missing;
            rv = run_mux(&w, all, BC_NODES, b->o.conns, b->o.streams, false, errmsg);
            run_close(&w);
            missing -= r2.ok;
        }
        if (rv == 0 && missing > 0) {
            gerr_set(errmsg, "%" PRIu64 " of %" PRIu64 " setup creates failed", missing, count);
            rv = GERR_UNAVAILABLE;
        }
    }
    if (rv == 0) {
        if (c->kind == BC_GANTRY) {
            b->g_objects += count;
        } else {
            b->e_objects += count;
        }
    }
    return rv;
}

static struct result *phase_list(struct bench *b, struct bc_cluster *c, const unsigned *followers)
{
    char errmsg[GERR_MSG_SIZE] = "";
    bool g = c->kind == BC_GANTRY;
    char title[96];
    uint64_t t0 = h2mux_now_us();
    int rv = setup_creates(b, c, NS_LIST, "ls", b->o.list_objects, errmsg);
    fprintf(stderr, "  %-6s setup: %u objects for the List phase in %.1f s\n", g ? "gantry" : "etcd",
            b->o.list_objects, (double)(h2mux_now_us() - t0) / 1e6);
    if (g) {
        snprintf(title, sizeof title, "4 List %u objects, pages of %u, followers", b->o.list_objects,
                 GANTRY_PAGE_MAX);
    } else {
        snprintf(title, sizeof title, "4 Range prefix, %u keys, followers", b->o.list_objects);
    }
    if (rv != 0) {
        struct result *r = new_result(b, c, g ? "list" : "range_prefix", title);
        r->ran = r->failed = true;
        snprintf(r->why, sizeof r->why, "setup: %.480s", errmsg);
        fprintf(stderr, "gantry-bench: %s list setup FAILED: %s\n", r->system, errmsg);
        return r;
    }
    return phase_load(b, c, g ? "list" : "range_prefix", title, g ? OP_G_LIST : OP_E_LIST, followers, 2,
                      b->o.list_conns, b->o.list_streams, "ls", 0, NULL, NULL, false);
}

/* Phase 5: concurrent creates over all members; the leader gets SIGKILL after the warm-up; then
 * every acknowledged create is read back from the survivors. */
static struct result *phase_failover(struct bench *b, struct bc_cluster *c)
{
    bool g = c->kind == BC_GANTRY;
    struct result *r = new_result(b, c, g ? "failover" : "failover",
                                  g ? "5 create under leader SIGKILL" : "5 Put under leader SIGKILL");
    struct run w;
    struct pool acked = {.prefix = "fo"};
    char errmsg[GERR_MSG_SIZE] = "";
    unsigned leader = 0;
    static const unsigned all[BC_NODES] = {0, 1, 2};
    struct snap a, z;
    r->failover = true;
    r->conns = b->o.conns;
    r->streams = b->o.streams;
    run_init(&w, b, c, r, g ? OP_G_CREATE : OP_E_PUT);
    w.prefix = "fo";
    w.ns = NS_LOAD;
    w.record = &acked;
    w.failover = true;
    w.warmup_us = (uint64_t)(b->o.warmup_s * 1e6);
    w.after_us = (uint64_t)(b->o.after_s * 1e6);
    int rv = bc_check_alive(c, errmsg);
    if (rv == 0) {
        rv = bc_leader(c, SETUP_TIMEOUT_MS, &leader, errmsg);
    }
    if (rv == 0) {
        w.victim = leader;
        snprintf(r->killed, sizeof r->killed, "%s", c->nodes[leader].name);
        snap_take(c, &a);
        rv = run_mux(&w, all, BC_NODES, b->o.conns, b->o.streams, true, errmsg);
        snap_take(c, &z);
        snap_diff(c, &a, &z, r);
        bc_reap_killed(c);
    }
    if (rv == 0 && !w.killed) {
        rv = GERR_INTERNAL;
        gerr_set(errmsg, "the load ended before the kill");
    }
    if (rv == 0 && w.first_ack_us == 0) {
        rv = GERR_TIMEOUT;
        gerr_set(errmsg, "no write sent after the kill was acknowledged within %u s",
                 FAILOVER_LIMIT_US / 1000000u);
    }
    if (w.killed && w.first_ack_us != 0) {
        r->failover_ms = (double)(w.first_ack_us - w.kill_us) / 1000.0;
    }
    if (w.killed && w.load_first_ack_us != 0) {
        r->load_first_ms = (double)(w.load_first_ack_us - w.kill_us) / 1000.0;
    }
    r->acked = acked.n;
    finish_result(&w, rv, errmsg);
    run_close(&w);
    if (rv == 0) {
        /* Read back every acknowledged create from the survivors. */
        unsigned live[BC_NODES], n_live = 0;
        for (unsigned i = 0; i < BC_NODES; i++) {
            if (!c->nodes[i].killed) {
                live[n_live++] = i;
            }
        }
        struct result scratch;
        memset(&scratch, 0, sizeof scratch);
        run_init(&w, b, c, &scratch, g ? OP_G_GET : OP_E_RANGE);
        w.readback = true;
        w.from = &acked;
        w.max_calls = acked.n;
        w.attempts = mem_zalloc(acked.n > 0 ? acked.n : 1);
        rv = acked.n == 0 ? 0 : run_mux(&w, live, n_live, b->o.conns, b->o.streams, false, errmsg);
        r->missing = scratch.missing;
        r->readback_errors = scratch.readback_errors;
        run_close(&w);
        if (rv != 0 || r->missing > 0 || r->readback_errors > 0) {
            r->failed = true;
            if (rv != 0) {
                snprintf(r->why, sizeof r->why, "read-back: %.480s", errmsg);
            } else {
                snprintf(r->why, sizeof r->why,
                         "%" PRIu64 " acknowledged writes MISSING, %" PRIu64 " could not be read back",
                         r->missing, r->readback_errors);
            }
            fprintf(stderr, "gantry-bench: %s failover: FAILED: %s\n", r->system, r->why);
        }
    }
    if (g) {
        b->g_objects += acked.n;
    } else {
        b->e_objects += acked.n;
    }
    fprintf(stderr,
            "  %-6s %-46s first ack %.0f ms after the kill of %s; %" PRIu64 " acknowledged, %" PRIu64
            " missing\n",
            r->system, r->title, r->failover_ms, r->killed, r->acked, r->missing);
    mem_free(acked.seq);
    return r;
}

/* ------------------------------------------------------------------------------------------------
 * Phase 6: watch fan-out. W watchers on one follower (gantry: Sandboxes.Watch of NS_WATCH; etcd:
 * Watch of the prefix /bench/wt/), each on a stream of its own over connections of up to
 * --watch-streams streams; once every watcher is in place (gantry: its first BOOKMARK; etcd: the
 * created answer), the store load is measured idle for --watch-idle seconds (gantry: dqlite
 * requests per second of all replicas, compared with the same idle window before the watchers
 * came), then a burst of --watch-events creates over all members (CONNS x STREAMS). The phase
 * ends when every watcher has received every created object exactly once and in revision order;
 * the latency of an event is from the submission of its create until the last watcher had it. */

struct watcher {
    uint32_t got;      /* creates of the burst received */
    uint64_t last_rev; /* revision of the last event, for the order check */
    bool ready;
    bool ended; /* the stream ended before the phase did */
};

struct watch_run {
    struct bench *b;
    struct bc_cluster *c;
    struct result *r;
    bool etcd;
    unsigned n_watchers, opened, ready, complete, n_watch_conns;
    unsigned *reopen; /* watchers whose open the replica shed (UNAVAILABLE): opened again */
    unsigned n_reopen;
    uint64_t reopened;
    struct watcher *ws;
    int stage;       /* 0 opening, 1 idle, 2 burst, 3 done */
    bool cancelling; /* the tick cancelled every call: what ends now ended because of that */
    uint64_t stage_at_us, open_start_us, deadline_us;
    uint64_t burst, issued, acked, failed_creates;
    struct revslot *revs;
    uint64_t rev_cap;
    uint64_t first_sent_us, last_recv_us;
    uint64_t order_errors, extra, ended_early;
    struct snap idle_a, idle_z;
    struct lat lat;
    char name[96];
    Gantry__V1__WatchSandboxesRequest gw;
    Etcdserverpb__WatchRequest ew;
    Etcdserverpb__WatchCreateRequest ewc;
    struct run create; /* for its request scratch */
};

/* Per revision of the burst (index: revision - 1): when its create was submitted, and when the
 * first and the last watcher received it. Filled in any order (an event may arrive before its
 * create's answer); the latencies are taken at the end. */
struct revslot {
    uint64_t sent_us, first_us, last_us;
};

static struct revslot *wr_slot(struct watch_run *w, uint64_t rev)
{
    if (rev == 0 || rev > (UINT64_C(1) << 32)) {
        return NULL;
    }
    uint64_t i = rev - 1;
    if (i >= w->rev_cap) {
        uint64_t cap = w->rev_cap == 0 ? 1024 : w->rev_cap;
        while (cap <= i) {
            cap *= 2;
        }
        w->revs = mem_realloc(w->revs, cap * sizeof *w->revs);
        memset(w->revs + w->rev_cap, 0, (cap - w->rev_cap) * sizeof *w->revs);
        w->rev_cap = cap;
    }
    return &w->revs[i];
}

static void wr_event(struct watch_run *w, unsigned idx, uint64_t rev, uint64_t recv_us)
{
    struct watcher *x = &w->ws[idx];
    if (rev <= x->last_rev) {
        w->order_errors++; /* a repeat or an event out of order */
        return;
    }
    x->last_rev = rev;
    if (x->got >= w->burst) {
        w->extra++;
        return;
    }
    x->got++;
    w->last_recv_us = recv_us;
    if (x->got == w->burst) {
        w->complete++;
    }
    struct revslot *s = wr_slot(w, rev);
    if (s != NULL) {
        s->first_us = s->first_us == 0 ? recv_us : s->first_us;
        s->last_us = recv_us;
    }
}

/* A gantry SandboxEvent: only its type (field 1) and revision (field 3) are read, by a scan of the
 * top-level fields, so ten thousand watchers do not mean ten million full decodes in the client. */
static bool scan_sandbox_event(const uint8_t *p, size_t n, uint64_t *type, uint64_t *rev)
{
    size_t i = 0;
    *type = *rev = 0;
    while (i < n) {
        uint64_t key = 0, v = 0;
        for (int sh = 0; i < n && sh < 64; sh += 7) {
            key |= (uint64_t)(p[i] & 0x7f) << sh;
            if ((p[i++] & 0x80) == 0) {
                break;
            }
        }
        unsigned wt = (unsigned)(key & 7);
        if (wt == 0) {
            for (int sh = 0; i < n && sh < 64; sh += 7) {
                v |= (uint64_t)(p[i] & 0x7f) << sh;
                if ((p[i++] & 0x80) == 0) {
                    break;
                }
            }
            if ((key >> 3) == 1) {
                *type = v;
            } else if ((key >> 3) == 3) {
                *rev = v;
            }
        } else if (wt == 2) {
            for (int sh = 0; i < n && sh < 64; sh += 7) {
                v |= (uint64_t)(p[i] & 0x7f) << sh;
                if ((p[i++] & 0x80) == 0) {
                    break;
                }
            }
            if (v > n - i) {
                return false;
            }
            i += (size_t)v;
        } else {
            return false;
        }
    }
    return true;
}

static void wr_message(void *arg, const struct h2mux_msg *m)
{
    struct watch_run *w = arg;
    if (m->tag >= w->n_watchers) {
        return;
    }
    struct watcher *x = &w->ws[m->tag];
    if (!w->etcd) {
        uint64_t type = 0, rev = 0;
        if (!scan_sandbox_event(m->body, m->body_len, &type, &rev)) {
            w->order_errors++;
            return;
        }
        if (type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK) {
            if (!x->ready) {
                x->ready = true;
                w->ready++;
                x->last_rev = rev;
            }
            return;
        }
        if (type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED) {
            wr_event(w, (unsigned)m->tag, rev, m->recv_us);
        }
        return;
    }
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, m->body_len, m->body);
    if (r == NULL) {
        w->order_errors++;
        return;
    }
    if (r->created && !x->ready) {
        x->ready = true;
        w->ready++;
        x->last_rev = r->header != NULL ? (uint64_t)r->header->revision : 0;
    }
    for (size_t i = 0; i < r->n_events; i++) {
        if (r->events[i]->type == ETCDSERVERPB__EVENT__EVENT_TYPE__PUT && r->events[i]->kv != NULL) {
            wr_event(w, (unsigned)m->tag, (uint64_t)r->events[i]->kv->mod_revision, m->recv_us);
        }
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static int wr_next(void *arg, unsigned conn, struct h2mux_req *req)
{
    struct watch_run *w = arg;
    if (conn < w->n_watch_conns) {
        if (w->n_reopen > 0) {
            req->tag = w->reopen[--w->n_reopen];
            w->reopened++;
        } else if (w->opened < w->n_watchers) {
            req->tag = w->opened++;
        } else {
            return H2MUX_WAIT;
        }
        req->streaming = true;
        if (w->etcd) {
            req->path = "/etcdserverpb.Watch/Watch";
            req->msg = &w->ew.base;
        } else {
            req->path = "/gantry.v1.Sandboxes/Watch";
            req->msg = &w->gw.base;
        }
        return 0;
    }
    if (w->stage != 2 || w->issued >= w->burst) {
        return H2MUX_WAIT;
    }
    uint64_t seq = w->issued++;
    struct run *cr = &w->create;
    req->tag = UINT64_C(1) << 62 | seq;
    if (w->etcd) {
        etcd_key(cr->name, sizeof cr->name, "wt", seq);
        cr->put.key.data = (uint8_t *)cr->name;
        cr->put.key.len = strlen(cr->name);
        cr->put.value.data = (uint8_t *)w->b->value;
        cr->put.value.len = w->b->value_bytes;
        req->path = "/etcdserverpb.KV/Put";
        req->msg = &cr->put.base;
    } else {
        gantry_name(cr->name, sizeof cr->name, "wt", seq);
        cr->meta.namespace_ = (char *)NS_WATCH;
        req->path = "/gantry.v1.Sandboxes/Create";
        req->msg = &cr->create.base;
    }
    if (w->first_sent_us == 0) {
        w->first_sent_us = h2mux_now_us();
    }
    return 0;
}

static void wr_done(void *arg, const struct h2mux_result *res)
{
    struct watch_run *w = arg;
    if ((res->tag & UINT64_C(1) << 62) == 0) {
        if (res->tag < w->n_watchers && !w->cancelling && !w->ws[res->tag].ready && res->status == 14) {
            /* Shed before it started (the replica's bounded queue of calls, or etcd's "too many
             * requests"): a client retries, and so does the bench. */
            w->reopen[w->n_reopen++] = (unsigned)res->tag;
            return;
        }
        if (res->tag < w->n_watchers && !w->cancelling) {
            w->ws[res->tag].ended = true; /* a watch that ended on its own */
            w->ended_early++;
            count_status(w->r, res->status);
        }
        return;
    }
    w->r->calls++;
    if (res->status != 0) {
        w->failed_creates++;
        count_status(w->r, res->status);
        return;
    }
    w->acked++;
    w->r->ok++;
    uint64_t rev = 0;
    if (w->etcd) {
        Etcdserverpb__PutResponse *m = etcdserverpb__put_response__unpack(NULL, res->body_len, res->body);
        rev = m != NULL && m->header != NULL ? (uint64_t)m->header->revision : 0;
        if (m != NULL) {
            etcdserverpb__put_response__free_unpacked(m, NULL);
        }
    } else {
        Gantry__V1__Sandbox *m = gantry__v1__sandbox__unpack(NULL, res->body_len, res->body);
        rev = m != NULL && m->meta != NULL ? m->meta->resource_version : 0;
        if (m != NULL) {
            gantry__v1__sandbox__free_unpacked(m, NULL);
        }
    }
    struct revslot *s = wr_slot(w, rev);
    if (s != NULL) {
        s->sent_us = res->sent_us;
    }
}

static int wr_tick(void *arg)
{
    struct watch_run *w = arg;
    uint64_t now = h2mux_now_us();
    if (now >= w->deadline_us || w->ended_early > 0) {
        w->cancelling = true;
        return H2MUX_CANCEL_ALL;
    }
    if (w->stage == 0 && w->ready == w->n_watchers) {
        w->r->watch_ready_ms = (double)(now - w->open_start_us) / 1000.0;
        w->r->watch_rss_after_kib = bc_rss_kib(w->c, w->r->watch_member);
        snap_take(w->c, &w->idle_a);
        w->stage = 1;
        w->stage_at_us = now;
    } else if (w->stage == 1 && now - w->stage_at_us >= (uint64_t)(w->b->o.watch_idle_s * 1e6)) {
        snap_take(w->c, &w->idle_z);
        w->stage = 2;
        w->stage_at_us = now;
    } else if (w->stage == 2 && w->acked + w->failed_creates == w->burst) {
        /* Every create answered: done once every watcher has every acknowledged one (a failed
         * create fails the phase, but the delivery figures still count what was acknowledged). */
        unsigned caught = 0;
        for (unsigned i = 0; i < w->n_watchers; i++) {
            caught += w->ws[i].got >= w->acked;
        }
        if (caught == w->n_watchers) {
            w->stage = 3;
            w->cancelling = true;
            return H2MUX_CANCEL_ALL;
        }
    }
    return 0;
}

/* dqlite requests per second of all replicas between two snapshots @s apart; -1 unknown. */
static double store_rate(const struct snap *a, const struct snap *z, double s)
{
    double sum = 0;
    for (unsigned i = 0; i < BC_NODES; i++) {
        if (!a->store_ok[i] || !z->store_ok[i]) {
            return -1;
        }
        sum += z->store[i] - a->store[i];
    }
    return s > 0 ? sum / s : -1;
}

static struct result *phase_watch(struct bench *b, struct bc_cluster *c, unsigned member)
{
    bool g = c->kind == BC_GANTRY;
    char title[96], errmsg[GERR_MSG_SIZE] = "";
    snprintf(title, sizeof title, "6 watch: %u watchers, %u creates", b->o.watchers, b->o.watch_events);
    struct result *r = new_result(b, c, "watch", title);
    struct watch_run w;
    memset(&w, 0, sizeof w);
    w.b = b;
    w.c = c;
    w.r = r;
    w.etcd = !g;
    w.n_watchers = b->o.watchers;
    w.burst = b->o.watch_events;
    w.ws = mem_zalloc(w.n_watchers * sizeof *w.ws);
    w.reopen = mem_zalloc(w.n_watchers * sizeof *w.reopen);
    r->watch = true;
    r->watch_member = member;
    r->conns = (b->o.watchers + b->o.watch_streams - 1) / b->o.watch_streams;
    r->streams = b->o.watch_streams;
    run_init(&w.create, b, c, r, g ? OP_G_CREATE : OP_E_PUT);
    gantry__v1__watch_sandboxes_request__init(&w.gw);
    w.gw.namespace_ = (char *)NS_WATCH;
    etcdserverpb__watch_request__init(&w.ew);
    etcdserverpb__watch_create_request__init(&w.ewc);
    snprintf(w.name, sizeof w.name, "/bench/wt/");
    w.ewc.key.data = (uint8_t *)w.name;
    w.ewc.key.len = strlen(w.name);
    w.ewc.range_end.data = (uint8_t *)"/bench/wt0";
    w.ewc.range_end.len = strlen("/bench/wt0");
    w.ew.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.ew.create_request = &w.ewc;

    int rv = bc_check_alive(c, errmsg);
    struct snap quiet_a, quiet_z;
    double idle_s = b->o.watch_idle_s;
    if (rv == 0 && g) {
        /* The same idle window without watchers: the baseline of the store's request rate. */
        snap_take(c, &quiet_a);
        usleep((useconds_t)(idle_s * 1e6));
        snap_take(c, &quiet_z);
        r->watch_idle_rate_before = store_rate(&quiet_a, &quiet_z, idle_s);
    }
    r->watch_rss_before_kib = bc_rss_kib(c, member);
    r->watch_rss_after_kib = -1; /* until every watcher is in place */
    struct h2mux *m = NULL;
    if (rv == 0) {
        struct h2mux_config cfg = {.ca_file = c->ca_file,
                                   .server_name = "localhost",
                                   .authorization = c->auth[0] != '\0' ? c->auth : NULL,
                                   .streams = b->o.watch_streams,
                                   .call_timeout_ms = b->o.call_timeout_ms};
        rv = h2mux_new(&cfg, &m, errmsg);
    }
    for (unsigned k = 0; rv == 0 && k < r->conns; k++) {
        const char *addr = c->nodes[member].api;
        rv = h2mux_add(m, &addr, 1, 0, errmsg) < 0 ? GERR_INVAL : 0;
    }
    w.n_watch_conns = r->conns;
    for (unsigned k = 0; rv == 0 && k < b->o.conns; k++) {
        const char *addr = c->nodes[k % BC_NODES].api;
        rv = h2mux_add(m, &addr, 1, b->o.streams, errmsg) < 0 ? GERR_INVAL : 0;
    }
    if (rv == 0) {
        rv = h2mux_connect(m, 30000, errmsg);
    }
    if (rv == 0) {
        struct h2mux_workload wl = {
            .next = wr_next, .done = wr_done, .tick = wr_tick, .message = wr_message, .arg = &w};
        w.open_start_us = h2mux_now_us();
        /* 2 min, plus 2 ms per watcher, 20 ms per create and 20 us per event to deliver. */
        w.deadline_us = w.open_start_us + 120000000u + (uint64_t)w.n_watchers * 2000u + w.burst * 20000u +
                        (uint64_t)w.n_watchers * w.burst * 20u;
        rv = h2mux_run(m, &wl, w.deadline_us / 1000u + 10000u, errmsg);
    }
    h2mux_free(m);
    r->seconds = w.first_sent_us != 0 && w.last_recv_us > w.first_sent_us
                     ? (double)(w.last_recv_us - w.first_sent_us) / 1e6
                     : 0;
    r->watch_delivered = 0;
    for (unsigned i = 0; i < w.n_watchers; i++) {
        r->watch_delivered += w.ws[i].got;
    }
    r->watch_expected = (uint64_t)w.n_watchers * w.acked;
    r->watch_order_errors = w.order_errors + w.extra;
    r->watch_ended_early = w.ended_early;
    r->watch_reopened = w.reopened;
    if (g && w.stage >= 2) {
        r->watch_idle_rate_with = store_rate(&w.idle_a, &w.idle_z, idle_s);
    }
    /* An event's latency: from its create's submission until the last watcher had it. */
    for (uint64_t i = 0; i < w.rev_cap; i++) {
        const struct revslot *s = &w.revs[i];
        if (s->sent_us != 0 && s->last_us > s->sent_us) {
            lat_add(&w.lat, s->last_us - s->sent_us);
        }
    }
    lat_summarize(&w.lat, r);
    r->ran = true;
    r->rate = r->seconds > 0 ? (double)r->watch_delivered / r->seconds : 0;
    if (rv == 0 && w.stage < 3) {
        rv = GERR_TIMEOUT;
        gerr_set(errmsg,
                 "%s: %u of %u watchers ready, %u complete, %" PRIu64 " of %" PRIu64 " creates acknowledged",
                 w.ended_early > 0 ? "a watch ended on its own" : "not finished in time", w.ready,
                 w.n_watchers, w.complete, w.acked, w.burst);
    }
    if (rv == 0 &&
        (w.failed_creates > 0 || r->watch_order_errors > 0 || r->watch_delivered != r->watch_expected)) {
        rv = GERR_INTERNAL;
        gerr_set(errmsg,
                 "%" PRIu64 " creates failed, %" PRIu64 " events repeated or out of order, %" PRIu64
                 " of %" PRIu64 " delivered",
                 w.failed_creates, r->watch_order_errors, r->watch_delivered, r->watch_expected);
    }
    if (rv != 0) {
        r->failed = true;
        snprintf(r->why, sizeof r->why, "%s", errmsg);
        fprintf(stderr, "gantry-bench: %s watch: FAILED: %s\n", r->system, r->why);
    }
    if (g) {
        b->g_objects += w.acked;
    } else {
        b->e_objects += w.acked;
    }
    char grew[48] = "n/a";
    if (r->watch_rss_after_kib >= 0 && r->watch_rss_before_kib >= 0) {
        snprintf(grew, sizeof grew, "%+.1f MiB",
                 (double)(r->watch_rss_after_kib - r->watch_rss_before_kib) / 1024.0);
    }
    fprintf(stderr,
            "  %-6s %-46s %9.0f events/s  p50 %8.2f ms  p99 %8.2f ms  (ready in %.0f ms; RSS of %s %s)\n",
            r->system, r->title, r->rate, r->p50, r->p99, r->watch_ready_ms, c->nodes[member].name, grew);
    mem_free(w.lat.us);
    mem_free(w.ws);
    mem_free(w.reopen);
    mem_free(w.revs);
    run_close(&w.create);
    return r;
}

/* ------------------------------------------------------------------------------------------------
 * Setup */

static int gantry_namespaces(struct bench *b, char *errmsg)
{
    const char *names[] = {NS_LOAD, NS_LIST, NS_WATCH};
    for (int i = 0; i < 3; i++) {
        Gantry__V1__CreateNamespaceRequest req = GANTRY__V1__CREATE_NAMESPACE_REQUEST__INIT;
        Gantry__V1__Namespace ns = GANTRY__V1__NAMESPACE__INIT;
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        ProtobufCMessage *out = NULL;
        meta.name = (char *)names[i];
        ns.meta = &meta;
        ns.description = "gantry-bench api";
        req.namespace_ = &ns;
        int rv = bc_call(&b->g, 0, "/gantry.v1.Namespaces/Create", &req.base,
                         &gantry__v1__namespace__descriptor, &out, errmsg);
        if (rv != 0) {
            gerr_wrap(errmsg, "create namespace %s", names[i]);
            return rv;
        }
        protobuf_c_message_free_unpacked(out, NULL);
    }
    return 0;
}

static void source_commit(struct bench *b)
{
    snprintf(b->source_commit, sizeof b->source_commit, "unknown");
#ifdef GANTRY_BENCH_SOURCE_DIR
    char cmd[PATH_MAX + 96];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse --short=12 HEAD 2>/dev/null", GANTRY_BENCH_SOURCE_DIR);
    FILE *f = popen(cmd, "r");
    if (f != NULL) {
        char line[64];
        if (fgets(line, sizeof line, f) != NULL && line[0] != '\0' && line[0] != '\n') {
            line[strcspn(line, "\n")] = '\0';
            snprintf(b->source_commit, sizeof b->source_commit, "%s", line);
        }
        pclose(f);
    }
    snprintf(cmd, sizeof cmd, "git -C '%s' status --porcelain --untracked-files=no 2>/dev/null",
             GANTRY_BENCH_SOURCE_DIR);
    f = popen(cmd, "r");
    if (f != NULL) {
        char line[8];
        if (fgets(line, sizeof line, f) != NULL && strcmp(b->source_commit, "unknown") != 0) {
            size_t len = strlen(b->source_commit);
            snprintf(b->source_commit + len, sizeof b->source_commit - len, "+dirty");
        }
        pclose(f);
    }
#endif
}

/* ------------------------------------------------------------------------------------------------
 * Output */

static const struct result *find_result(const struct bench *b, const char *system, const char *key)
{
    for (unsigned i = 0; i < b->n_rs; i++) {
        if (strcmp(b->rs[i].system, system) == 0 && strcmp(b->rs[i].key, key) == 0) {
            return &b->rs[i];
        }
    }
    return NULL;
}

static void errors_text(const struct result *r, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < STATUS_SLOTS; i++) {
        if (r->by_status[i] != 0 && o < len) {
            o += (size_t)snprintf(out + o, len - o, "%s%s:%" PRIu64, o > 0 ? " " : "",
                                  h2mux_status_name(i + H2MUX_OUTCOME_MIN), r->by_status[i]);
        }
    }
    if (o == 0) {
        snprintf(out, len, "0");
    }
}

static void print_table(const struct bench *b)
{
    printf("\n%-46s %-6s %7s %10s %9s %9s %9s %9s %11s %11s  %s\n", "phase", "system", "conc", "calls/s",
           "p50 ms", "p99 ms", "p99.9 ms", "max ms", "dqlite/call", "cpu ms/call", "errors");
    for (unsigned i = 0; i < b->n_rs; i++) {
        const struct result *r = &b->rs[i];
        char conc[24], store[24], cpu[24], errs[256];
        snprintf(conc, sizeof conc, "%ux%u", r->conns, r->streams);
        if (r->system[0] == 'e') {
            snprintf(store, sizeof store, "-");
        } else if (r->store_known) {
            snprintf(store, sizeof store, "%.1f", r->store_per_call);
        } else {
            snprintf(store, sizeof store, "n/a");
        }
        if (r->cpu_known) {
            snprintf(cpu, sizeof cpu, "%.2f", r->cpu_ms_per_call);
        } else {
            snprintf(cpu, sizeof cpu, "n/a");
        }
        errors_text(r, errs, sizeof errs);
        printf("%-46s %-6s %7s %10.1f %9.2f %9.2f %9.2f %9.1f %11s %11s  %s%s%s\n", r->title, r->system, conc,
               r->rate, r->p50, r->p99, r->p999, r->max, store, cpu, errs, r->failed ? "  FAILED: " : "",
               r->failed ? r->why : "");
    }
    const struct result *note = NULL;
    for (unsigned i = 0; i < b->n_rs; i++) {
        if (b->rs[i].system[0] == 'g' && !b->rs[i].store_known && b->rs[i].ran &&
            b->rs[i].store_note[0] != '\0') {
            note = &b->rs[i];
            break;
        }
    }
    if (note != NULL) {
        printf("dqlite/call n/a: %s\n", note->store_note);
    }
    const struct result *gl = find_result(b, "gantry", "list");
    if (gl != NULL) {
        printf("(List: calls/s and latency are per List of all %u objects; a gantry List took %u calls.)\n",
               b->o.list_objects, gl->list_pages);
    }

    for (unsigned i = 0; i < b->n_rs; i++) {
        const struct result *r = &b->rs[i];
        if (r->failover) {
            char load_first[48];
            if (r->load_first_ms > 0) {
                snprintf(load_first, sizeof load_first, "%.0f ms", r->load_first_ms);
            } else {
                snprintf(load_first, sizeof load_first, "none in the phase");
            }
            printf(
                "\n%s failover: SIGKILL of the leader (%s) -> first acknowledged write sent after the kill: "
                "%.0f ms (the load's own calls: %s; probes every %u ms from the kill on: %" PRIu64
                " sent, %" PRIu64 " ok)\n  %" PRIu64 " writes acknowledged in the phase, %" PRIu64
                " missing on read-back, %" PRIu64 " unverifiable%s\n",
                r->system, r->killed, r->failover_ms, load_first, PROBE_INTERVAL_US / 1000u, r->probes,
                r->probes_ok, r->acked, r->missing, r->readback_errors, r->failed ? " (FAILED)" : "");
        }
    }

    for (unsigned i = 0; i < b->n_rs; i++) {
        const struct result *r = &b->rs[i];
        if (!r->watch || !r->ran) {
            continue;
        }
        char before[32] = "n/a", with[32] = "n/a";
        if (r->watch_idle_rate_before >= 0 && r->system[0] == 'g') {
            snprintf(before, sizeof before, "%.1f/s", r->watch_idle_rate_before);
        }
        if (r->watch_idle_rate_with >= 0 && r->system[0] == 'g') {
            snprintf(with, sizeof with, "%.1f/s", r->watch_idle_rate_with);
        }
        char rss[96] = "RSS n/a (not every watcher was in place)";
        if (r->watch_rss_after_kib >= 0 && r->watch_rss_before_kib >= 0) {
            snprintf(rss, sizeof rss, "RSS %.1f -> %.1f MiB (%+.1f KiB per watcher)",
                     (double)r->watch_rss_before_kib / 1024.0, (double)r->watch_rss_after_kib / 1024.0,
                     (double)(r->watch_rss_after_kib - r->watch_rss_before_kib) / b->o.watchers);
        }
        printf("\n%s watch: %u watchers on %s ready in %.0f ms; %s; %" PRIu64
               " opens shed (UNAVAILABLE) and sent again; %" PRIu64 " of %" PRIu64
               " events delivered, %" PRIu64 " repeated or out of order, %" PRIu64
               " watches ended early; event latency until the last watcher had it p50 %.1f ms p99 %.1f ms",
               r->system, b->o.watchers,
               r->system[0] == 'g' ? b->g.nodes[r->watch_member].name : b->e.nodes[r->watch_member].name,
               r->watch_ready_ms, rss, r->watch_reopened, r->watch_delivered, r->watch_expected,
               r->watch_order_errors, r->watch_ended_early, r->p50, r->p99);
        if (r->system[0] == 'g') {
            printf("; dqlite requests of all replicas, idle: %s without watchers, %s with them", before,
                   with);
        }
        printf("%s\n", r->failed ? " (FAILED)" : "");
    }

    if (b->o.etcd) {
        static const char *const pairs[][3] = {
            {"create_seq_leader", "put_seq_leader", "1a sequential, to the leader"},
            {"create_seq_follower", "put_seq_follower", "1b sequential, to a follower"},
            {"create_concurrent", "put_concurrent", "2 concurrent, all members"},
            {"get_followers", "range_followers_linearizable", "3 get vs linearizable Range"},
            {"get_followers", "range_followers_serializable", "3 get vs serializable Range"},
            {"get_followers_stale", "range_followers_serializable", "3 stale get vs serializable Range"},
            {"list", "range_prefix", "4 list"},
            {"fill", "fill", "fill"},
            {"failover", "failover", "5 under leader SIGKILL"},
            {"watch", "watch", "6 watch fan-out (events/s)"},
        };
        printf("\nratios gantry/etcd (same run)       %9s %9s %9s %12s\n", "rate", "p50", "p99", "cpu/call");
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            const struct result *g = find_result(b, "gantry", pairs[i][0]);
            const struct result *e = find_result(b, "etcd", pairs[i][1]);
            if (g == NULL || e == NULL || !g->ran || !e->ran) {
                continue;
            }
            char cpu[24] = "n/a";
            if (g->cpu_known && e->cpu_known && e->cpu_ms_per_call > 0) {
                snprintf(cpu, sizeof cpu, "%.1fx", g->cpu_ms_per_call / e->cpu_ms_per_call);
            }
            printf("%-35s %8.2fx %8.1fx %8.1fx %12s\n", pairs[i][2], e->rate > 0 ? g->rate / e->rate : 0,
                   e->p50 > 0 ? g->p50 / e->p50 : 0, e->p99 > 0 ? g->p99 / e->p99 : 0, cpu);
        }
        const struct result *g = find_result(b, "gantry", "failover");
        const struct result *e = find_result(b, "etcd", "failover");
        if (g != NULL && e != NULL && e->failover_ms > 0) {
            printf("%-35s %9s %9s %9s   kill -> first ack %.1fx\n", "5 failover time", "", "", "",
                   g->failover_ms / e->failover_ms);
        }
    }

    printf("\nRSS per member (MiB)           ");
    for (unsigned i = 0; i < BC_NODES; i++) {
        printf(" %9s%u", "member ", i + 1);
    }
    printf("\n");
    for (int s = 0; s < (b->o.etcd ? 2 : 1); s++) {
        const struct bc_cluster *c = s == 0 ? &b->g : &b->e;
        printf("%-6s after phases 1-4          ", s == 0 ? "gantry" : "etcd");
        for (unsigned i = 0; i < BC_NODES; i++) {
            printf(" %10.1f", b->rss_phases[s][i] >= 0 ? (double)b->rss_phases[s][i] / 1024.0 : -1.0);
        }
        printf("   (%s = member 1)\n", c->nodes[0].name);
        if (b->rss_fill_known) {
            printf("%-6s at %-10" PRIu64 " objects    ", s == 0 ? "gantry" : "etcd",
                   s == 0 ? b->g_objects_fill : b->e_objects_fill);
            for (unsigned i = 0; i < BC_NODES; i++) {
                printf(" %10.1f", b->rss_fill[s][i] >= 0 ? (double)b->rss_fill[s][i] / 1024.0 : -1.0);
            }
            printf("\n");
        }
    }
}

static json_t *result_json(const struct result *r)
{
    json_t *o = json_object();
    json_t *errs = json_object();
    for (int i = 0; i < STATUS_SLOTS; i++) {
        if (r->by_status[i] != 0) {
            json_object_set_new(errs, h2mux_status_name(i + H2MUX_OUTCOME_MIN),
                                json_integer((json_int_t)r->by_status[i]));
        }
    }
    json_object_set_new(o, "phase", json_string(r->key));
    json_object_set_new(o, "title", json_string(r->title));
    json_object_set_new(o, "system", json_string(r->system));
    json_object_set_new(o, "connections", json_integer(r->conns));
    json_object_set_new(o, "streams_per_connection", json_integer(r->streams));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "calls", json_integer((json_int_t)r->calls));
    json_object_set_new(o, "ok", json_integer((json_int_t)r->ok));
    json_object_set_new(o, "rate_per_s", json_real(r->rate));
    json_object_set_new(o, "p50_ms", json_real(r->p50));
    json_object_set_new(o, "p90_ms", json_real(r->p90));
    json_object_set_new(o, "p99_ms", json_real(r->p99));
    json_object_set_new(o, "p999_ms", json_real(r->p999));
    json_object_set_new(o, "max_ms", json_real(r->max));
    json_object_set_new(o, "mean_ms", json_real(r->mean));
    json_object_set_new(o, "errors", errs);
    json_t *hist = json_object();
    for (size_t i = 0; i < N_HIST; i++) {
        char label[32];
        if (i < N_HIST - 1) {
            snprintf(label, sizeof label, "<%g", HIST_BOUNDS_MS[i]);
        } else {
            snprintf(label, sizeof label, ">=%g", HIST_BOUNDS_MS[N_HIST - 2]);
        }
        json_object_set_new(hist, label, json_integer((json_int_t)r->histogram[i]));
    }
    json_object_set_new(o, "latency_histogram_ms", hist);
    json_object_set_new(o, "cluster_cpu_ms_per_call",
                        r->cpu_known ? json_real(r->cpu_ms_per_call) : json_null());
    if (r->system[0] == 'g') {
        json_object_set_new(o, "dqlite_requests_per_call",
                            r->store_known ? json_real(r->store_per_call) : json_null());
        if (!r->store_known) {
            json_object_set_new(o, "dqlite_requests_note", json_string(r->store_note));
        }
    }
    if (r->resp_bytes_mean > 0) {
        json_object_set_new(o, "response_bytes_mean", json_real(r->resp_bytes_mean));
    }
    if (r->list_items > 0 || r->list_short > 0) {
        json_object_set_new(o, "list_objects", json_integer(r->list_items));
        json_object_set_new(o, "calls_per_list", json_integer(r->list_pages));
        json_object_set_new(o, "lists_short", json_integer((json_int_t)r->list_short));
    }
    if (r->failover) {
        json_object_set_new(o, "killed", json_string(r->killed));
        json_object_set_new(o, "kill_to_first_ack_ms", json_real(r->failover_ms));
        json_object_set_new(o, "kill_to_first_load_ack_ms",
                            r->load_first_ms > 0 ? json_real(r->load_first_ms) : json_null());
        json_object_set_new(o, "probes", json_integer((json_int_t)r->probes));
        json_object_set_new(o, "probes_ok", json_integer((json_int_t)r->probes_ok));
        json_object_set_new(o, "acknowledged", json_integer((json_int_t)r->acked));
        json_object_set_new(o, "missing", json_integer((json_int_t)r->missing));
        json_object_set_new(o, "unverifiable", json_integer((json_int_t)r->readback_errors));
    }
    if (r->watch) {
        json_object_set_new(o, "watch_ready_ms", json_real(r->watch_ready_ms));
        json_object_set_new(o, "watch_rss_before_kib", json_integer(r->watch_rss_before_kib));
        json_object_set_new(o, "watch_rss_after_kib", json_integer(r->watch_rss_after_kib));
        json_object_set_new(o, "watch_events_delivered", json_integer((json_int_t)r->watch_delivered));
        json_object_set_new(o, "watch_events_expected", json_integer((json_int_t)r->watch_expected));
        json_object_set_new(o, "watch_repeated_or_out_of_order",
                            json_integer((json_int_t)r->watch_order_errors));
        json_object_set_new(o, "watch_ended_early", json_integer((json_int_t)r->watch_ended_early));
        json_object_set_new(o, "watch_opens_shed_and_retried", json_integer((json_int_t)r->watch_reopened));
        if (r->system[0] == 'g') {
            json_object_set_new(o, "dqlite_requests_per_s_idle_without_watchers",
                                r->watch_idle_rate_before >= 0 ? json_real(r->watch_idle_rate_before)
                                                               : json_null());
            json_object_set_new(o, "dqlite_requests_per_s_idle_with_watchers",
                                r->watch_idle_rate_with >= 0 ? json_real(r->watch_idle_rate_with)
                                                             : json_null());
        }
    }
    json_object_set_new(o, "failed", json_boolean(r->failed));
    if (r->failed) {
        json_object_set_new(o, "why", json_string(r->why));
    }
    return o;
}

static int write_json(const struct bench *b, const char *path)
{
    json_t *root = json_object();
    json_t *machine = json_object();
    struct utsname u;
    uname(&u);
    json_object_set_new(machine, "nproc", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_set_new(machine, "kernel", json_string(u.release));
    json_object_set_new(machine, "loadavg_start", json_string(b->load_start));
    json_object_set_new(machine, "loadavg_end", json_string(b->load_end));
    json_object_set_new(root, "bench", json_string("api"));
    json_object_set_new(root, "machine", machine);
    json_t *ver = json_object();
    json_object_set_new(ver, "gantryd", json_string(b->g.version));
    json_object_set_new(ver, "source_commit", json_string(b->source_commit));
    json_object_set_new(ver, "gantryd_path", json_string(b->o.gantryd));
    json_object_set_new(ver, "gantryd_from_source_commit", json_boolean(b->o.gantryd_default));
    if (b->o.etcd) {
        json_object_set_new(ver, "etcd", json_string(b->e.version));
    }
    json_object_set_new(root, "versions", ver);
    json_t *cfg = json_object();
    json_object_set_new(cfg, "seconds_per_phase", json_real(b->o.seconds));
    json_object_set_new(cfg, "connections", json_integer(b->o.conns));
    json_object_set_new(cfg, "streams", json_integer(b->o.streams));
    json_object_set_new(cfg, "list_objects", json_integer(b->o.list_objects));
    json_object_set_new(cfg, "watchers", json_integer(b->o.watchers));
    json_object_set_new(cfg, "watch_events", json_integer(b->o.watch_events));
    json_object_set_new(cfg, "watch_streams", json_integer(b->o.watch_streams));
    json_object_set_new(cfg, "watch_idle_s", json_real(b->o.watch_idle_s));
    json_object_set_new(cfg, "gantry_page_size", json_integer(GANTRY_PAGE_MAX));
    json_object_set_new(cfg, "etcd_value_bytes", json_integer(b->value_bytes));
    json_object_set_new(cfg, "fill", json_integer((json_int_t)b->o.fill));
    json_object_set_new(cfg, "call_timeout_ms", json_integer(b->o.call_timeout_ms));
    json_object_set_new(cfg, "latency_ms", json_integer(b->o.latency_ms != 0 ? b->o.latency_ms : 20));
    json_object_set_new(cfg, "quick", json_boolean(b->o.quick));
    json_object_set_new(cfg, "baseline", b->o.etcd ? json_string("etcd") : json_null());
    json_object_set_new(root, "config", cfg);
    json_t *phases = json_array();
    for (unsigned i = 0; i < b->n_rs; i++) {
        json_array_append_new(phases, result_json(&b->rs[i]));
    }
    json_object_set_new(root, "phases", phases);
    json_t *rss = json_object();
    for (int s = 0; s < (b->o.etcd ? 2 : 1); s++) {
        const struct bc_cluster *c = s == 0 ? &b->g : &b->e;
        json_t *sys = json_object();
        json_t *after = json_object(), *fill = json_object();
        for (unsigned i = 0; i < BC_NODES; i++) {
            json_object_set_new(after, c->nodes[i].name,
                                b->rss_phases[s][i] >= 0 ? json_integer(b->rss_phases[s][i]) : json_null());
            json_object_set_new(fill, c->nodes[i].name,
                                b->rss_fill[s][i] >= 0 ? json_integer(b->rss_fill[s][i]) : json_null());
        }
        json_object_set_new(sys, "after_phases_kib", after);
        if (b->rss_fill_known) {
            json_object_set_new(sys, "at_fill_kib", fill);
            json_object_set_new(sys, "objects_at_fill",
                                json_integer((json_int_t)(s == 0 ? b->g_objects_fill : b->e_objects_fill)));
        } else {
            json_decref(fill);
        }
        json_object_set_new(sys, "objects_at_end",
                            json_integer((json_int_t)(s == 0 ? b->g_objects : b->e_objects)));
        json_object_set_new(rss, s == 0 ? "gantry" : "etcd", sys);
    }
    json_object_set_new(root, "rss", rss);
    int rv = json_dump_file(root, path, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(8));
    json_decref(root);
    if (rv != 0) {
        fprintf(stderr, "gantry-bench: cannot write %s\n", path);
        return GERR_IO;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Flags */

static const char usage[] =
    "usage: gantry-bench api [options]\n"
    "\n"
    "Starts a local 3-replica gantryd cluster on 127.0.0.1 (fresh temporary data dirs, TLS, the\n"
    "admin API key from init, --driver none) and drives the gantry.v1 API over N connections x M\n"
    "concurrent HTTP/2 streams:\n"
    "  fill   with --fill N, first: N creates, then RSS per replica at N objects\n"
    "  1a/1b  sequential CreateSandbox to the leader, then to a follower (1 x 1)\n"
    "  2      concurrent CreateSandbox spread over all three replicas (CONNS x STREAMS)\n"
    "  3      GetSandbox from the two followers (READ_CONNS x READ_STREAMS), linearizable, then\n"
    "         with max_staleness_ms 1000 (answered from the model without a read index)\n"
    "  4      ListSandboxes of LIST_OBJECTS objects, pages of 500 (the maximum), from the followers\n"
    "  6      (before 5) WATCHERS Sandboxes.Watch streams on a follower, then a burst of\n"
    "         WATCH_EVENTS creates: every watcher must get every one exactly once, in order;\n"
    "         RSS of that replica and dqlite requests/s idle, without and with the watchers\n"
    "  5      SIGKILL of the leader under concurrent creates: kill -> first acknowledged create\n"
    "         sent after it; every acknowledged create read back afterwards\n"
    "With --baseline etcd it also starts a 3-member etcd (TLS on client and peer ports) and runs\n"
    "each phase against it right after gantry's (Put; linearizable and serializable Range;\n"
    "Range over a prefix), then prints the ratios gantry/etcd.\n"
    "\n"
    "  --baseline etcd     also measure etcd (/usr/bin/etcd, or --etcd PATH)\n"
    "  --seconds S         length of each load phase (default 5; --quick: 0.5)\n"
    "  --connections N     connections of the concurrent phases (default 8)\n"
    "  --streams M         concurrent streams per connection (default 8)\n"
    "  --read-connections N, --read-streams M   for phase 3 (default 8 x 8)\n"
    "  --list-connections N, --list-streams M   for phase 4 (default 2 x 4)\n"
    "  --list-objects N    objects the List phase lists (default 1000; --quick: 100)\n"
    "  --watchers N        watchers of phase 6 (default 1000; --quick: 20; 0: no phase 6)\n"
    "  --watch-events N    creates of phase 6's burst (default 1000; --quick: 20)\n"
    "  --watch-streams M   watch streams per connection (default 100, gantryd's default limit)\n"
    "  --watch-idle S      seconds of each idle window of phase 6 (default 2; --quick: 0.3)\n"
    "  --fill N            first create N objects and take RSS at N (default off)\n"
    "  --value-bytes N     etcd value size (default: the size of a stored sandbox, from phase 1a)\n"
    "  --warmup S          failover: seconds of load before the kill (default 1; --quick: 0.3)\n"
    "  --after S           failover: seconds of load after the first ack (default 1; --quick: 0.3)\n"
    "  --call-timeout-ms N deadline of every call (grpc-timeout; default 10000)\n"
    "  --latency-ms N      gantryd --latency-ms, and etcd heartbeat 1.5x / election 15x (default 20)\n"
    "  --gantryd PATH      gantryd to run (default ../server/gantryd relative to this binary)\n"
    "  --etcd PATH         etcd to run (default /usr/bin/etcd)\n"
    "  --json FILE         also write every figure to FILE as JSON\n"
    "  --phases LIST       run only these phases, e.g. 2,3 (default 1,2,3,4,5,6; phase 3 reads what\n"
    "                      phase 2 created, so 3 runs 2 too; --fill runs whatever is listed)\n"
    "  --quick             tiny counts, for a smoke test\n"
    "  --keep              keep the clusters' directories (logs, data)\n";

static int parse_unsigned(const char *s, unsigned long long lo, unsigned long long hi,
                          unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0.05 && v <= 3600)) {
        return -1;
    }
    *out = v;
    return 0;
}

static const char *default_gantryd(struct opts *o)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        return NULL;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash == NULL) {
        return NULL;
    }
    *slash = '\0';
    snprintf(o->gantryd_buf, sizeof o->gantryd_buf, "%.*s/../server/gantryd", PATH_MAX - 64, self);
    return o->gantryd_buf;
}

/* "1,3,5" -> bits 1, 3 and 5 of *@out; 1 on a bad list (empty, a phase not in 1-6). */
static int parse_phases(const char *arg, unsigned *out)
{
    unsigned bits = 0;
    const char *p = arg;
    while (*p != '\0') {
        if (*p < '1' || *p > '6' || (p[1] != ',' && p[1] != '\0') || (p[1] == ',' && p[2] == '\0')) {
            return 1;
        }
        bits |= 1u << (unsigned)(*p - '0');
        p += p[1] == ',' ? 2 : 1;
    }
    *out = bits;
    return bits == 0;
}

static int parse_flags(int argc, char **argv, struct opts *o)
{
    enum {
        F_BASELINE = 1000,
        F_SECONDS,
        F_CONNS,
        F_STREAMS,
        F_RCONNS,
        F_RSTREAMS,
        F_LCONNS,
        F_LSTREAMS,
        F_LIST_OBJECTS,
        F_FILL,
        F_WATCHERS,
        F_WATCH_EVENTS,
        F_WATCH_STREAMS,
        F_WATCH_IDLE,
        F_VALUE,
        F_WARMUP,
        F_AFTER,
        F_TIMEOUT,
        F_LATENCY,
        F_GANTRYD,
        F_ETCD,
        F_JSON,
        F_QUICK,
        F_KEEP,
        F_PHASES,
        F_HELP,
    };
    static const struct option lopts[] = {
        {"baseline", required_argument, NULL, F_BASELINE},
        {"seconds", required_argument, NULL, F_SECONDS},
        {"connections", required_argument, NULL, F_CONNS},
        {"streams", required_argument, NULL, F_STREAMS},
        {"read-connections", required_argument, NULL, F_RCONNS},
        {"read-streams", required_argument, NULL, F_RSTREAMS},
        {"list-connections", required_argument, NULL, F_LCONNS},
        {"list-streams", required_argument, NULL, F_LSTREAMS},
        {"list-objects", required_argument, NULL, F_LIST_OBJECTS},
        {"fill", required_argument, NULL, F_FILL},
        {"watchers", required_argument, NULL, F_WATCHERS},
        {"watch-events", required_argument, NULL, F_WATCH_EVENTS},
        {"watch-streams", required_argument, NULL, F_WATCH_STREAMS},
        {"watch-idle", required_argument, NULL, F_WATCH_IDLE},
        {"value-bytes", required_argument, NULL, F_VALUE},
        {"warmup", required_argument, NULL, F_WARMUP},
        {"after", required_argument, NULL, F_AFTER},
        {"call-timeout-ms", required_argument, NULL, F_TIMEOUT},
        {"latency-ms", required_argument, NULL, F_LATENCY},
        {"gantryd", required_argument, NULL, F_GANTRYD},
        {"etcd", required_argument, NULL, F_ETCD},
        {"json", required_argument, NULL, F_JSON},
        {"quick", no_argument, NULL, F_QUICK},
        {"keep", no_argument, NULL, F_KEEP},
        {"phases", required_argument, NULL, F_PHASES},
        {"help", no_argument, NULL, F_HELP},
        {NULL, 0, NULL, 0},
    };
    bool seconds_set = false, list_set = false, warm_set = false, after_set = false;
    bool watch_set = false, events_set = false, idle_set = false;
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        unsigned long long v = 0;
        int bad = 0;
        switch (ch) {
        case F_BASELINE:
            bad = strcmp(optarg, "etcd") != 0;
            o->etcd = true;
            break;
        case F_SECONDS:
            bad = parse_seconds(optarg, &o->seconds);
            seconds_set = true;
            break;
        case F_CONNS:
        case F_RCONNS:
        case F_LCONNS:
            bad = parse_unsigned(optarg, 1, 64, &v);
            *(ch == F_CONNS ? &o->conns : ch == F_RCONNS ? &o->read_conns : &o->list_conns) = (unsigned)v;
            break;
        case F_STREAMS:
        case F_RSTREAMS:
        case F_LSTREAMS:
            bad = parse_unsigned(optarg, 1, 100, &v);
            *(ch == F_STREAMS    ? &o->streams
              : ch == F_RSTREAMS ? &o->read_streams
                                 : &o->list_streams) = (unsigned)v;
            break;
        case F_LIST_OBJECTS:
            bad = parse_unsigned(optarg, 1, 100000, &v);
            o->list_objects = (unsigned)v;
            list_set = true;
            break;
        case F_FILL:
            bad = parse_unsigned(optarg, 1, 10000000, &v);
            o->fill = v;
            break;
        case F_WATCHERS:
            bad = parse_unsigned(optarg, 0, 100000, &v);
            o->watchers = (unsigned)v;
            watch_set = true;
            break;
        case F_WATCH_EVENTS:
            bad = parse_unsigned(optarg, 1, 1000000, &v);
            o->watch_events = (unsigned)v;
            events_set = true;
            break;
        case F_WATCH_STREAMS:
            bad = parse_unsigned(optarg, 1, H2MUX_MAX_STREAMS, &v);
            o->watch_streams = (unsigned)v;
            break;
        case F_WATCH_IDLE:
            bad = parse_seconds(optarg, &o->watch_idle_s);
            idle_set = true;
            break;
        case F_VALUE:
            bad = parse_unsigned(optarg, 1, 1 << 20, &v);
            o->value_bytes = (unsigned)v;
            break;
        case F_WARMUP:
            bad = parse_seconds(optarg, &o->warmup_s);
            warm_set = true;
            break;
        case F_AFTER:
            bad = parse_seconds(optarg, &o->after_s);
            after_set = true;
            break;
        case F_TIMEOUT:
            bad = parse_unsigned(optarg, 100, 600000, &v);
            o->call_timeout_ms = (unsigned)v;
            break;
        case F_LATENCY:
            bad = parse_unsigned(optarg, 1, 10000, &v);
            o->latency_ms = (unsigned)v;
            break;
        case F_GANTRYD:
            o->gantryd = optarg;
            break;
        case F_ETCD:
            o->etcd_bin = optarg;
            break;
        case F_JSON:
            o->json_path = optarg;
            break;
        case F_QUICK:
            o->quick = true;
            break;
        case F_KEEP:
            o->keep = true;
            break;
        case F_PHASES:
            bad = parse_phases(optarg, &o->phases);
            break;
        case F_HELP:
            fputs(usage, stdout);
            return 1;
        default:
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "gantry-bench api: bad or unknown option \"%s\"\n\n%s", argv[optind - 1], usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gantry-bench api: unexpected argument \"%s\"\n\n%s", argv[optind], usage);
        return 2;
    }
    if (o->quick) {
        o->seconds = seconds_set ? o->seconds : 0.5;
        o->list_objects = list_set ? o->list_objects : 100;
        o->watchers = watch_set ? o->watchers : 20;
        o->watch_events = events_set ? o->watch_events : 20;
        o->watch_idle_s = idle_set ? o->watch_idle_s : 0.3;
        o->warmup_s = warm_set ? o->warmup_s : 0.3;
        o->after_s = after_set ? o->after_s : 0.3;
    }
    if (o->gantryd == NULL) {
        o->gantryd = default_gantryd(o);
        o->gantryd_default = true;
    }
    if (o->gantryd == NULL || access(o->gantryd, X_OK) != 0) {
        fprintf(stderr, "gantry-bench api: cannot run gantryd (%s); pass --gantryd\n",
                o->gantryd != NULL ? o->gantryd : "?");
        return 2;
    }
    if (o->etcd && access(o->etcd_bin, X_OK) != 0) {
        fprintf(stderr, "gantry-bench api: cannot run etcd (%s); install etcd-server or pass --etcd\n",
                o->etcd_bin);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The run */

static void rss_snapshot(struct bench *b, long (*out)[BC_NODES])
{
    for (unsigned i = 0; i < BC_NODES; i++) {
        out[0][i] = b->g_up ? bc_rss_kib(&b->g, i) : -1;
        out[1][i] = b->e_up ? bc_rss_kib(&b->e, i) : -1;
    }
}

/* etcd's values: --value-bytes, or the size of a stored sandbox as the first measured gantry
 * creates returned it (@r), or 512 bytes. Made once. */
static void make_value(struct bench *b, const struct result *r)
{
    if (b->value != NULL) {
        return;
    }
    unsigned bytes = b->o.value_bytes != 0                 ? b->o.value_bytes
                     : r != NULL && r->resp_bytes_mean > 0 ? (unsigned)(r->resp_bytes_mean + 0.5)
                                                           : 512u;
    b->value_bytes = bytes;
    b->value = mem_alloc(bytes + 1);
    for (unsigned i = 0; i < bytes; i++) {
        b->value[i] = (char)('a' + i % 26);
    }
    b->value[bytes] = '\0';
}

static void run_phases(struct bench *b)
{
    struct bc_cluster *g = &b->g, *e = b->o.etcd ? &b->e : NULL;
    static const unsigned all[BC_NODES] = {0, 1, 2};
    char errmsg[GERR_MSG_SIZE];
    unsigned gl = 0, el = 0;
    unsigned gf[2], ef[2];

    if (bc_leader(g, SETUP_TIMEOUT_MS, &gl, errmsg) != 0) {
        fprintf(stderr, "gantry-bench: gantry: %s\n", errmsg);
        struct result *r = new_result(b, g, "create_seq_leader", "1a create sequential, leader");
        r->ran = r->failed = true;
        snprintf(r->why, sizeof r->why, "%s", errmsg);
        return;
    }
    gf[0] = (gl + 1) % BC_NODES;
    gf[1] = (gl + 2) % BC_NODES;
    if (e != NULL && bc_leader(e, SETUP_TIMEOUT_MS, &el, errmsg) != 0) {
        fprintf(stderr, "gantry-bench: etcd: %s\n", errmsg);
        e = NULL;
        struct result *r = new_result(b, &b->e, "put_seq_leader", "1a Put sequential, leader");
        r->ran = r->failed = true;
        snprintf(r->why, sizeof r->why, "%s", errmsg);
    }
    ef[0] = (el + 1) % BC_NODES;
    ef[1] = (el + 2) % BC_NODES;

    if (b->o.fill != 0) {
        fprintf(stderr, "fill: %" PRIu64 " objects first; the phases then run on a store that holds them\n",
                b->o.fill);
        struct result *rf =
            phase_load(b, g, "fill", "fill create, concurrent, all replicas", OP_G_CREATE, all, BC_NODES,
                       b->o.conns, b->o.streams, "fl", b->o.fill, NULL, NULL, false);
        make_value(b, rf);
        if (e != NULL) {
            phase_load(b, e, "fill", "fill Put, concurrent, all members", OP_E_PUT, all, BC_NODES, b->o.conns,
                       b->o.streams, "fl", b->o.fill, NULL, NULL, false);
        }
        rss_snapshot(b, b->rss_fill);
        b->rss_fill_known = true;
        b->g_objects_fill = b->g_objects;
        b->e_objects_fill = b->e_objects;
    }

    unsigned want = b->o.phases;
    if (want & (1u << 1)) {
        fprintf(stderr, "phase 1: sequential writes (gantry leader %s, etcd leader %s)\n", g->nodes[gl].name,
                e != NULL ? e->nodes[el].name : "-");
        struct result *r1 = phase_load(b, g, "create_seq_leader", "1a create, sequential, to the leader",
                                       OP_G_CREATE, &gl, 1, 1, 1, "sl", 0, NULL, NULL, false);
        make_value(b, r1);
        if (e != NULL) {
            phase_load(b, e, "put_seq_leader", "1a Put, sequential, to the leader", OP_E_PUT, &el, 1, 1, 1,
                       "sl", 0, NULL, NULL, false);
        }
        phase_load(b, g, "create_seq_follower", "1b create, sequential, to a follower", OP_G_CREATE, &gf[0],
                   1, 1, 1, "sf", 0, NULL, NULL, false);
        if (e != NULL) {
            phase_load(b, e, "put_seq_follower", "1b Put, sequential, to a follower", OP_E_PUT, &ef[0], 1, 1,
                       1, "sf", 0, NULL, NULL, false);
        }
    }

    if (want & (1u << 2 | 1u << 3)) {
        fprintf(stderr, "phase 2: concurrent writes over all members%s\n",
                want & (1u << 2) ? "" : " (phase 3 reads what it creates)");
        b->g_conc.prefix = "cc";
        b->e_conc.prefix = "cc";
        struct result *r2 =
            phase_load(b, g, "create_concurrent", "2 create, concurrent, all replicas", OP_G_CREATE, all,
                       BC_NODES, b->o.conns, b->o.streams, "cc", 0, &b->g_conc, NULL, false);
        make_value(b, r2); /* when phase 1 did not run */
        if (e != NULL) {
            phase_load(b, e, "put_concurrent", "2 Put, concurrent, all members", OP_E_PUT, all, BC_NODES,
                       b->o.conns, b->o.streams, "cc", 0, &b->e_conc, NULL, false);
        }
    }
    if (!(want & (1u << 3))) {
        goto after_reads;
    }
    fprintf(stderr, "phase 3: reads from the followers\n");
    phase_load(b, g, "get_followers", "3 get, followers", OP_G_GET, gf, 2, b->o.read_conns, b->o.read_streams,
               "cc", 0, NULL, &b->g_conc, false);
    phase_load(b, g, "get_followers_stale", "3 get max_staleness_ms 1000, followers", OP_G_GET, gf, 2,
               b->o.read_conns, b->o.read_streams, "cc", 0, NULL, &b->g_conc, true);
    if (e != NULL) {
        phase_load(b, e, "range_followers_linearizable", "3 Range linearizable, followers", OP_E_RANGE, ef, 2,
                   b->o.read_conns, b->o.read_streams, "cc", 0, NULL, &b->e_conc, false);
        phase_load(b, e, "range_followers_serializable", "3 Range serializable, followers", OP_E_RANGE, ef, 2,
                   b->o.read_conns, b->o.read_streams, "cc", 0, NULL, &b->e_conc, true);
    }

after_reads:
    if (want & (1u << 4)) {
        fprintf(stderr, "phase 4: list\n");
        make_value(b, NULL); /* when no earlier phase ran */
        phase_list(b, g, gf);
        if (e != NULL) {
            phase_list(b, e, ef);
        }
    }
    rss_snapshot(b, b->rss_phases);

    if (b->o.watchers > 0 && (want & (1u << 6))) {
        make_value(b, NULL);
        fprintf(stderr, "phase 6: %u watchers on a follower, %u creates\n", b->o.watchers, b->o.watch_events);
        phase_watch(b, g, gf[0]);
        if (e != NULL) {
            phase_watch(b, e, ef[0]);
        }
    }

    if (want & (1u << 5)) {
        fprintf(stderr, "phase 5: leader SIGKILL under concurrent writes\n");
        make_value(b, NULL);
        phase_failover(b, g);
        if (e != NULL) {
            phase_failover(b, e);
        }
    }
}

int bench_api(int argc, char **argv)
{
    struct bench *b = mem_zalloc(sizeof *b);
    struct opts *o = &b->o;
    *o = (struct opts){
        .seconds = 5,
        .conns = 8,
        .streams = 8,
        .read_conns = 8,
        .read_streams = 8,
        .list_conns = 2,
        .list_streams = 4,
        .list_objects = 1000,
        .watchers = 1000,
        .watch_events = 1000,
        .watch_streams = 100,
        .watch_idle_s = 2,
        .call_timeout_ms = 10000,
        .warmup_s = 1,
        .after_s = 1,
        .etcd_bin = "/usr/bin/etcd",
        .phases = 1u << 1 | 1u << 2 | 1u << 3 | 1u << 4 | 1u << 5 | 1u << 6,
    };
    /* A peer that closes a connection must not kill the bench: writes report EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    int rv = parse_flags(argc, argv, o);
    if (rv != 0) {
        mem_free(b);
        return rv == 1 ? 0 : rv;
    }
    char errmsg[GERR_MSG_SIZE];
    struct utsname u;
    uname(&u);
    read_loadavg(b->load_start, sizeof b->load_start);
    source_commit(b);
    for (int s = 0; s < 2; s++) {
        for (unsigned i = 0; i < BC_NODES; i++) {
            b->rss_phases[s][i] = b->rss_fill[s][i] = -1;
        }
    }

    struct bc_opts gopts = {.bin = o->gantryd, .latency_ms = o->latency_ms, .keep = o->keep};
    fprintf(stderr, "gantry-bench api: starting 3 gantryd replicas (%s)\n", o->gantryd);
    if ((rv = bc_start(&b->g, BC_GANTRY, &gopts, errmsg)) != 0) {
        fprintf(stderr, "gantry-bench api: gantry cluster: %s\n", errmsg);
        mem_free(b);
        return 1;
    }
    b->g_up = true;
    if ((rv = gantry_namespaces(b, errmsg)) != 0) {
        fprintf(stderr, "gantry-bench api: %s\n", errmsg);
        bc_stop(&b->g);
        mem_free(b);
        return 1;
    }
    if (o->etcd) {
        struct bc_opts eopts = {.bin = o->etcd_bin, .latency_ms = o->latency_ms, .keep = o->keep};
        fprintf(stderr, "gantry-bench api: starting 3 etcd members (%s)\n", o->etcd_bin);
        if ((rv = bc_start(&b->e, BC_ETCD, &eopts, errmsg)) != 0) {
            fprintf(stderr, "gantry-bench api: etcd cluster: %s\n", errmsg);
            bc_stop(&b->g);
            mem_free(b);
            return 1;
        }
        b->e_up = true;
    }

    printf("gantry-bench api: 3 gantryd replicas%s on 127.0.0.1, TLS (ECDSA P-256), HTTP/2\n",
           o->etcd ? " and 3 etcd members" : "");
    printf("machine: nproc %ld, %s %s, load average at start: %s\n", sysconf(_SC_NPROCESSORS_ONLN), u.sysname,
           u.release, b->load_start);
    printf("versions: %s (%s %s)%s%s\n", b->g.version,
           o->gantryd_default ? "built with the bench from source"
                              : "given with --gantryd; the bench's source is",
           b->source_commit, o->etcd ? ", " : "", o->etcd ? b->e.version : "");
    printf(
        "phases of %.1f s; concurrent %ux%u, reads %ux%u, lists %ux%u; call deadline %u ms; latency-ms %u\n",
        o->seconds, o->conns, o->streams, o->read_conns, o->read_streams, o->list_conns, o->list_streams,
        o->call_timeout_ms, o->latency_ms != 0 ? o->latency_ms : 20);
    fflush(stdout);

    run_phases(b);

    if (o->etcd) {
        const struct result *vr = find_result(b, "gantry", "create_seq_leader");
        if (vr == NULL) {
            vr = find_result(b, "gantry", "create_concurrent");
        }
        printf("etcd values: %u bytes (a stored sandbox, as CreateSandbox returns it: %.0f bytes)\n",
               b->value_bytes, vr != NULL ? vr->resp_bytes_mean : 0.0);
    }
    bool failed = false;
    for (unsigned i = 0; i < b->n_rs; i++) {
        failed = failed || b->rs[i].failed;
    }
    if (bc_check_alive(&b->g, errmsg) != 0) {
        fprintf(stderr, "gantry-bench api: gantry: %s\n", errmsg);
        failed = true;
    }
    if (b->e_up && bc_check_alive(&b->e, errmsg) != 0) {
        fprintf(stderr, "gantry-bench api: etcd: %s\n", errmsg);
        failed = true;
    }
    read_loadavg(b->load_end, sizeof b->load_end);
    print_table(b);
    printf("\nload average at end: %s\n", b->load_end);
    fflush(stdout);
    if (o->json_path != NULL && write_json(b, o->json_path) != 0) {
        failed = true;
    }
    if (b->e_up) {
        bc_stop_begin(&b->e);
    }
    bc_stop_begin(&b->g);
    if (b->e_up) {
        bc_stop(&b->e);
    }
    bc_stop(&b->g);
    mem_free(b->value);
    mem_free(b->g_conc.seq);
    mem_free(b->e_conc.seq);
    mem_free(b);
    if (failed) {
        fprintf(stderr, "gantry-bench api: FAILED (see above)\n");
        return 1;
    }
    return 0;
}
