/* gantry-bench store: the replicated store against its own 3-process cluster on 127.0.0.1.
 *
 * Phases (each on its own table, one cluster for the whole run):
 *   seq       sequential autocommit INSERTs through one store_client for --seconds;
 *   writer    --threads threads submitting one-row transactions to one store_writer (the
 *             replica's design: every write of a replica funnels through one connection);
 *   clients   the baseline measured in the same run: --threads threads, each with its own
 *             store_client, autocommit INSERTs (dqlite 1.11 answers all but one with BUSY);
 *   clients-tx  the same with one-row transactions, the writer's unit of work;
 *   failover  --trials times: a writer runs, the leader gets SIGKILL, time until the first
 *             acknowledged write through the new leader; the killed node is restarted and must
 *             catch up before the next trial.
 * After every phase the table is checked against what was acknowledged: no acknowledged write
 * may be missing. Everything is bounded: phases by --seconds, cluster starts and failovers by
 * fixed deadlines; the nodes are always stopped and their directory removed. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "store/writer.h"
#include "tools/localcluster.h"

#define MAX_THREADS 64
#define PAYLOAD     "a 40-byte payload, like a small object.."

struct opts {
    unsigned seconds;
    unsigned threads;
    unsigned trials;
    unsigned latency_ms;
    bool json;
    const char *node_bin;
    char node_bin_buf[PATH_MAX];
    const char *only; /* run one phase */
};

/* Latencies of one thread, in microseconds. */
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct result {
    const char *name;
    const char *what;
    unsigned threads;
    double seconds;
    uint64_t ok;
    uint64_t errors;
    uint64_t busy_retries;
    double rows_per_s;
    double p50_ms, p99_ms, mean_ms, max_ms;
    int64_t rows_in_table;
    bool invariant_ok;
};

static void summarize(struct result *r, struct lat *lats, unsigned n)
{
    struct lat all = {0};
    double sum = 0;
    for (unsigned i = 0; i < n; i++) {
        for (size_t k = 0; k < lats[i].n; k++) {
            lat_add(&all, lats[i].us[k]);
            sum += lats[i].us[k];
        }
    }
    r->rows_per_s = r->seconds > 0 ? (double)r->ok / r->seconds : 0;
    if (all.n > 0) {
        qsort(all.us, all.n, sizeof *all.us, cmp_u32);
        r->p50_ms = all.us[all.n / 2] / 1000.0;
        r->p99_ms =
            all.us[(size_t)((double)all.n * 0.99) < all.n ? (size_t)((double)all.n * 0.99) : all.n - 1] /
            1000.0;
        r->max_ms = all.us[all.n - 1] / 1000.0;
        r->mean_ms = sum / (double)all.n / 1000.0;
    }
    mem_free(all.us);
}

static uint64_t now_us(void)
{
    return clock_system()->mono_ns(clock_system()) / 1000u;
}

static void client_config(struct cluster *c, struct store_client_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cluster_client_config(c, cfg);
    cfg->database = "bench";
    cfg->leader_timeout_ms = 30000;
}

/* Count rows and compare with what was acknowledged (no unknown outcomes are expected in the
 * load phases: nothing fails there). */
static int check_table(struct cluster *c, const char *table, struct result *r)
{
    struct store_client_config cfg;
    struct store_client cl;
    char sql[128];
    client_config(c, &cfg);
    store_client_init(&cl, &cfg);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    int rv = store_client_query_int(&cl, sql, NULL, 0, &r->rows_in_table);
    if (rv != 0) {
        fprintf(stderr, "gantry-bench: %s: %s\n", sql, cl.errmsg);
    }
    r->invariant_ok = rv == 0 && (uint64_t)r->rows_in_table >= r->ok;
    store_client_close(&cl);
    return rv;
}

static int create_table(struct cluster *c, const char *table)
{
    struct store_client_config cfg;
    struct store_client cl;
    char sql[256];
    client_config(c, &cfg);
    store_client_init(&cl, &cfg);
    snprintf(
        sql, sizeof sql,
        "CREATE TABLE %s (id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, payload TEXT NOT NULL) STRICT",
        table);
    int rv = store_client_exec(&cl, sql, NULL, 0, NULL);
    if (rv != 0) {
        fprintf(stderr, "gantry-bench: %s: %s\n", sql, cl.errmsg);
    }
    store_client_close(&cl);
    return rv;
}

/* ---- Phase: sequential and per-thread clients. */

enum load_mode {
    LOAD_CLIENT_EXEC, /* own client, autocommit INSERT */
    LOAD_CLIENT_TX,   /* own client, one-row transaction (the same unit of work as the writer's) */
    LOAD_WRITER,      /* one-row transaction submitted to the shared store_writer */
};

struct load_thread {
    struct cluster *c;
    enum load_mode mode;
    struct store_writer *writer; /* LOAD_WRITER only */
    const char *table;
    unsigned worker;
    uint64_t stop_us;
    struct lat lat;
    uint64_t ok, errors, busy_retries;
    char sql[128];
    pthread_t th;
};

static int insert_tx(struct store_tx *tx, void *arg)
{
    struct load_thread *t = arg;
    struct proto_value p[2] = {proto_int(t->worker), proto_text(PAYLOAD)};
    return store_tx_exec(tx, t->sql, p, 2, NULL);
}

static void *load_main(void *arg)
{
    struct load_thread *t = arg;
    struct store_client cl;
    struct store_client_config cfg;
    char errmsg[GERR_MSG_SIZE];
    int last_err = 0;

    snprintf(t->sql, sizeof t->sql, "INSERT INTO %s (worker, payload) VALUES (?, ?)", t->table);
    if (t->mode != LOAD_WRITER) {
        client_config(t->c, &cfg);
        store_client_init(&cl, &cfg);
        store_client_connect(&cl);
    }
    while (now_us() < t->stop_us) {
        uint64_t t0 = now_us();
        int rv;
        if (t->mode == LOAD_WRITER) {
            rv = store_writer_run(t->writer, insert_tx, t, errmsg);
        } else if (t->mode == LOAD_CLIENT_TX) {
            rv = store_client_tx(&cl, insert_tx, t);
            if (rv != 0) {
                snprintf(errmsg, sizeof errmsg, "%s", cl.errmsg);
            }
        } else {
            struct proto_value p[2] = {proto_int(t->worker), proto_text(PAYLOAD)};
            rv = store_client_exec(&cl, t->sql, p, 2, NULL);
            if (rv != 0) {
                snprintf(errmsg, sizeof errmsg, "%s", cl.errmsg);
            }
        }
        if (rv == 0) {
            t->ok++;
            lat_add(&t->lat, now_us() - t0);
        } else {
            t->errors++;
            if (rv != last_err) {
                fprintf(stderr, "gantry-bench: worker %u: %s (%s)\n", t->worker, errmsg, gerr_name(rv));
                last_err = rv;
            }
        }
    }
    if (t->mode != LOAD_WRITER) {
        t->busy_retries = cl.stats.busy_retries;
        store_client_close(&cl);
    }
    return NULL;
}

static int run_load(struct cluster *c, const struct opts *o, struct result *r, const char *table,
                    unsigned threads, enum load_mode mode)
{
    bool use_writer = mode == LOAD_WRITER;
    struct load_thread *ts = mem_zalloc(threads * sizeof *ts);
    struct store_writer writer;
    struct lat *lats = mem_zalloc(threads * sizeof *lats);
    int rv = create_table(c, table);
    if (rv != 0) {
        goto out;
    }
    if (use_writer) {
        struct store_client_config cfg;
        client_config(c, &cfg);
        if ((rv = store_writer_start(&writer, &cfg)) != 0) {
            goto out;
        }
    }
    uint64_t start = now_us();
    uint64_t stop = start + (uint64_t)o->seconds * 1000000u;
    for (unsigned i = 0; i < threads; i++) {
        ts[i] = (struct load_thread){.c = c,
                                     .mode = mode,
                                     .writer = use_writer ? &writer : NULL,
                                     .table = table,
                                     .worker = i,
                                     .stop_us = stop};
        pthread_create(&ts[i].th, NULL, load_main, &ts[i]);
    }
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(ts[i].th, NULL);
        r->ok += ts[i].ok;
        r->errors += ts[i].errors;
        r->busy_retries += ts[i].busy_retries;
        lats[i] = ts[i].lat;
    }
    r->seconds = (double)(now_us() - start) / 1e6;
    if (use_writer) {
        r->busy_retries = writer.client.stats.busy_retries; /* read before stop closes the client */
        store_writer_stop(&writer);
    }
    r->threads = threads;
    summarize(r, lats, threads);
    rv = check_table(c, table, r);
    for (unsigned i = 0; i < threads; i++) {
        mem_free(lats[i].us);
    }
out:
    mem_free(lats);
    mem_free(ts);
    return rv;
}

/* ---- Phase: failover. */

struct fo_writer {
    struct store_client cl;
    _Atomic bool stop;
    _Atomic bool killed;
    _Atomic uint64_t first_ack_after_kill_us;
    _Atomic uint64_t acks;
    uint64_t unknowns;
    int error;
    char errmsg[GERR_MSG_SIZE];
    int64_t next_id;
    unsigned char *acked; /* by id */
    size_t cap;
};

static void *fo_main(void *arg)
{
    struct fo_writer *w = arg;
    while (!atomic_load(&w->stop)) {
        int64_t id = w->next_id++;
        if ((size_t)id >= w->cap) {
            w->error = GERR_TOOBIG;
            gerr_set(w->errmsg, "too many writes");
            break;
        }
        bool killed = atomic_load(&w->killed);
        struct proto_value p[2] = {proto_int(id), proto_text(PAYLOAD)};
        int rv =
            store_client_exec(&w->cl, "INSERT INTO fo (id, worker, payload) VALUES (?, 0, ?)", p, 2, NULL);
        if (rv == 0) {
            w->acked[id] = 1;
            atomic_fetch_add(&w->acks, 1);
            if (killed) {
                uint64_t zero = 0;
                atomic_compare_exchange_strong(&w->first_ack_after_kill_us, &zero, now_us());
            }
        } else if (rv == GERR_UNKNOWN_OUTCOME) {
            w->unknowns++;
        } else {
            w->error = rv;
            gerr_set(w->errmsg, "id %" PRId64 ": %s (%s)", id, w->cl.errmsg, gerr_name(rv));
            break;
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct fo_result {
    unsigned trials;
    double *ms;
    double median, min, max;
    uint64_t acks, unknowns;
    int64_t rows;
    bool invariant_ok;
};

static int run_failover(struct cluster *c, const struct opts *o, struct fo_result *fr)
{
    struct fo_writer *w = mem_zalloc(sizeof *w);
    struct store_client_config cfg;
    char errmsg[GERR_MSG_SIZE];
    int rv = create_table(c, "fo");
    if (rv != 0) {
        mem_free(w);
        return rv;
    }
    client_config(c, &cfg);
    store_client_init(&w->cl, &cfg);
    w->cap = 10u * 1000u * 1000u;
    w->acked = mem_zalloc(w->cap);
    w->next_id = 1;
    fr->ms = mem_zalloc(o->trials * sizeof *fr->ms);

    for (unsigned t = 0; t < o->trials && rv == 0; t++) {
        pthread_t th;
        atomic_store(&w->stop, false);
        atomic_store(&w->killed, false);
        atomic_store(&w->first_ack_after_kill_us, 0);
        uint64_t base_acks = atomic_load(&w->acks);
        pthread_create(&th, NULL, fo_main, w);
        /* Let it write for a moment, then kill the leader at a random point. */
        uint64_t deadline = clock_mono_ms(clock_system()) + 30000;
        while (atomic_load(&w->acks) < base_acks + 100 && w->error == 0 &&
               clock_mono_ms(clock_system()) < deadline) {
            clock_system()->sleep_ns(clock_system(), 1000000);
        }
        uint64_t leader = 0;
        int idx = -1;
        if (w->error == 0 && (rv = cluster_leader(c, 30000, &leader, errmsg)) == 0) {
            idx = cluster_index_of(c, leader);
        }
        if (idx < 0) {
            atomic_store(&w->stop, true);
            pthread_join(th, NULL);
            fprintf(stderr, "gantry-bench: failover trial %u: no leader to kill: %s\n", t + 1,
                    w->error != 0 ? w->errmsg : errmsg);
            rv = rv != 0 ? rv : (w->error != 0 ? w->error : GERR_NOLEADER);
            break;
        }
        clock_system()->sleep_ns(clock_system(), rand_range(0, 2000) * 1000u);
        uint64_t kill_us = now_us();
        cluster_node_kill(c, (unsigned)idx);
        atomic_store(&w->killed, true);
        deadline = clock_mono_ms(clock_system()) + 60000;
        while (atomic_load(&w->first_ack_after_kill_us) == 0 && w->error == 0 &&
               clock_mono_ms(clock_system()) < deadline) {
            clock_system()->sleep_ns(clock_system(), 1000000);
        }
        atomic_store(&w->stop, true);
        pthread_join(th, NULL);
        uint64_t first = atomic_load(&w->first_ack_after_kill_us);
        if (first == 0) {
            fprintf(stderr, "gantry-bench: failover trial %u: no write succeeded within 60 s: %s\n", t + 1,
                    w->errmsg);
            rv = w->error != 0 ? w->error : GERR_TIMEOUT;
            break;
        }
        fr->ms[fr->trials++] = (double)(first - kill_us) / 1000.0;
        if (!o->json) {
            fprintf(stderr, "failover trial %u: killed leader node %" PRIu64 ", first write after %.0f ms\n",
                    t + 1, leader, fr->ms[fr->trials - 1]);
        }
        /* Bring the node back and let it catch up before the next trial. */
        if ((rv = cluster_node_start(c, (unsigned)idx, errmsg)) != 0) {
            fprintf(stderr, "gantry-bench: restart node %" PRIu64 ": %s\n", leader, errmsg);
            break;
        }
        int64_t rows;
        if ((rv = store_client_query_int(&w->cl, "SELECT count(*) FROM fo", NULL, 0, &rows)) != 0 ||
            (rv = cluster_wait_node_value(c, (unsigned)idx, "bench", "SELECT count(*) FROM fo", rows, 60000,
                                          errmsg)) != 0) {
            fprintf(stderr, "gantry-bench: node %" PRIu64 " did not catch up: %s\n", leader,
                    rv != 0 ? errmsg : w->cl.errmsg);
            break;
        }
    }
    fr->acks = atomic_load(&w->acks);
    fr->unknowns = w->unknowns;
    /* The invariant: every acknowledged id is there. */
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    fr->invariant_ok = false;
    if (store_client_query(&w->cl, "SELECT id FROM fo", NULL, 0, &rows) == 0) {
        unsigned char *seen = mem_zalloc(w->cap);
        for (size_t r = 0; r < rows.n_rows; r++) {
            int64_t id = proto_rows_at(&rows, r, 0)->u.i;
            if (id > 0 && (size_t)id < w->cap) {
                seen[id] = 1;
            }
        }
        size_t missing = 0;
        for (size_t id = 1; id < w->cap && (int64_t)id < w->next_id; id++) {
            missing += w->acked[id] && !seen[id];
        }
        fr->rows = (int64_t)rows.n_rows;
        fr->invariant_ok = missing == 0 && rows.n_rows <= fr->acks + fr->unknowns;
        if (missing != 0) {
            fprintf(stderr, "gantry-bench: %zu acknowledged writes are MISSING after failover\n", missing);
        }
        mem_free(seen);
    }
    proto_rows_close(&rows);
    if (fr->trials > 0) {
        double *sorted = mem_alloc(fr->trials * sizeof *sorted);
        memcpy(sorted, fr->ms, fr->trials * sizeof *sorted);
        qsort(sorted, fr->trials, sizeof *sorted, cmp_double);
        fr->min = sorted[0];
        fr->max = sorted[fr->trials - 1];
        fr->median = fr->trials % 2 ? sorted[fr->trials / 2]
                                    : (sorted[fr->trials / 2 - 1] + sorted[fr->trials / 2]) / 2;
        mem_free(sorted);
    }
    store_client_close(&w->cl);
    mem_free(w->acked);
    mem_free(w);
    return rv;
}

/* ---- Output. */

static void print_table(const struct opts *o, struct result *rs, unsigned n, const struct fo_result *fr,
                        bool fo_ran)
{
    printf("gantry-bench store: 3 gantry-store-node processes on 127.0.0.1, latency %u ms, %u s per load "
           "phase\n\n",
           o->latency_ms, o->seconds);
    printf("%-44s %7s %9s %8s %8s %8s %8s %11s %7s %s\n", "phase", "threads", "rows/s", "p50 ms", "p99 ms",
           "mean ms", "max ms", "busy/row", "errors", "acked rows present");
    for (unsigned i = 0; i < n; i++) {
        struct result *r = &rs[i];
        printf("%-44s %7u %9.0f %8.2f %8.2f %8.2f %8.1f %11.2f %7" PRIu64 " %s (%" PRIu64 " acked, %" PRId64
               " rows)\n",
               r->what, r->threads, r->rows_per_s, r->p50_ms, r->p99_ms, r->mean_ms, r->max_ms,
               r->ok > 0 ? (double)r->busy_retries / (double)r->ok : 0.0, r->errors,
               r->invariant_ok ? "yes" : "NO", r->ok, r->rows_in_table);
    }
    if (fo_ran) {
        printf("\nfailover (SIGKILL leader -> first acknowledged write), %u trials: median %.0f ms, min %.0f "
               "ms, max "
               "%.0f ms\n",
               fr->trials, fr->median, fr->min, fr->max);
        printf("  per trial:");
        for (unsigned i = 0; i < fr->trials; i++) {
            printf(" %.0f", fr->ms[i]);
        }
        printf(" ms\n  writes: %" PRIu64 " acknowledged, %" PRIu64 " unknown outcome, %" PRId64
               " rows; every acknowledged write present: %s\n",
               fr->acks, fr->unknowns, fr->rows, fr->invariant_ok ? "yes" : "NO");
    }
}

static void print_json(const struct opts *o, struct result *rs, unsigned n, const struct fo_result *fr,
                       bool fo_ran)
{
    printf("{\"bench\":\"store\",\"nodes\":3,\"latency_ms\":%u,\"seconds_per_phase\":%u,\"phases\":[",
           o->latency_ms, o->seconds);
    for (unsigned i = 0; i < n; i++) {
        struct result *r = &rs[i];
        printf("%s{\"name\":\"%s\",\"threads\":%u,\"seconds\":%.3f,\"acked\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"busy_retries\":%" PRIu64
               ",\"rows_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,"
               "\"max_ms\":%.3f,\"rows_in_table\":%" PRId64 ",\"acked_present\":%s}",
               i > 0 ? "," : "", r->name, r->threads, r->seconds, r->ok, r->errors, r->busy_retries,
               r->rows_per_s, r->p50_ms, r->p99_ms, r->mean_ms, r->max_ms, r->rows_in_table,
               r->invariant_ok ? "true" : "false");
    }
    printf("]");
    if (fo_ran) {
        printf(",\"failover\":{\"trials\":%u,\"median_ms\":%.1f,\"min_ms\":%.1f,\"max_ms\":%.1f,\"ms\":[",
               fr->trials, fr->median, fr->min, fr->max);
        for (unsigned i = 0; i < fr->trials; i++) {
            printf("%s%.1f", i > 0 ? "," : "", fr->ms[i]);
        }
        printf("],\"acked\":%" PRIu64 ",\"unknown\":%" PRIu64 ",\"rows\":%" PRId64 ",\"acked_present\":%s}",
               fr->acks, fr->unknowns, fr->rows, fr->invariant_ok ? "true" : "false");
    }
    printf("}\n");
}

/* ---- Flags. */

static const char usage[] =
    "usage: gantry-bench store [options]\n"
    "\n"
    "Starts its own cluster of 3 gantry-store-node processes on 127.0.0.1 (fresh temporary data\n"
    "dirs, free ports) and measures:\n"
    "  seq       sequential autocommit INSERTs, 1 store_client\n"
    "  writer    THREADS threads through one store_writer (one connection: the replica's design)\n"
    "  clients   baseline: THREADS threads with a store_client each, autocommit INSERTs\n"
    "            (BUSY collisions)\n"
    "  clients-tx  baseline: THREADS threads with a store_client each, one-row transactions\n"
    "            (the writer's unit of work, without the queue)\n"
    "  failover  SIGKILL the leader -> first acknowledged write, TRIALS times\n"
    "\n"
    "  --seconds N     length of each load phase (default 5)\n"
    "  --threads N     threads in the writer and clients phases (default 8)\n"
    "  --trials N      failover trials (default 5; 0 skips the phase)\n"
    "  --latency-ms N  the nodes' --latency-ms (default 20)\n"
    "  --phase NAME    run only seq, writer, clients, clients-tx or failover\n"
    "  --node-bin P    gantry-store-node to run (default: $GANTRY_STORE_NODE_BIN, else\n"
    "                  ../raft/gantry-store-node relative to this binary, as in the build tree)\n"
    "  --json          print one JSON object instead of the table\n";

static int parse_unsigned(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static const char *default_node_bin(struct opts *o)
{
    const char *env = getenv("GANTRY_STORE_NODE_BIN");
    if (env != NULL && env[0] != '\0') {
        return env;
    }
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
    snprintf(o->node_bin_buf, sizeof o->node_bin_buf, "%.*s/../raft/gantry-store-node", PATH_MAX - 64, self);
    return o->node_bin_buf;
}

int bench_store(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"seconds", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"trials", required_argument, NULL, 'k'},
        {"latency-ms", required_argument, NULL, 'l'},
        {"phase", required_argument, NULL, 'p'},
        {"node-bin", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o = {.seconds = 5, .threads = 8, .trials = 5, .latency_ms = 20};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 's':
            bad = parse_unsigned(optarg, 1, 3600, &o.seconds);
            break;
        case 't':
            bad = parse_unsigned(optarg, 1, MAX_THREADS, &o.threads);
            break;
        case 'k':
            bad = parse_unsigned(optarg, 0, 1000, &o.trials);
            break;
        case 'l':
            bad = parse_unsigned(optarg, 1, 10000, &o.latency_ms);
            break;
        case 'p':
            o.only = optarg;
            bad = strcmp(optarg, "seq") != 0 && strcmp(optarg, "writer") != 0 &&
                  strcmp(optarg, "clients") != 0 && strcmp(optarg, "clients-tx") != 0 &&
                  strcmp(optarg, "failover") != 0;
            break;
        case 'n':
            o.node_bin = optarg;
            break;
        case 'j':
            o.json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "gantry-bench store: bad or unknown option \"%s\"\n\n%s", argv[optind - 1],
                    usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gantry-bench store: unexpected argument \"%s\"\n\n%s", argv[optind], usage);
        return 2;
    }
    if (o.node_bin == NULL) {
        o.node_bin = default_node_bin(&o);
    }
    if (o.node_bin == NULL || access(o.node_bin, X_OK) != 0) {
        fprintf(stderr, "gantry-bench store: cannot find gantry-store-node (%s); pass --node-bin\n",
                o.node_bin != NULL ? o.node_bin : "?");
        return 2;
    }
    log_set_level(LOG_LEVEL_ERROR); /* the client's reconnect messages would drown the table */

    struct cluster c;
    char errmsg[GERR_MSG_SIZE];
    struct cluster_opts co = {.node_bin = o.node_bin, .latency_ms = o.latency_ms};
    if (cluster_start(&c, 3, &co, errmsg) != 0) {
        fprintf(stderr, "gantry-bench store: %s\n", errmsg);
        return 1;
    }
    struct result rs[4];
    unsigned n = 0;
    struct fo_result fr = {0};
    bool fo_ran = false;
    int rv = 0;
    memset(rs, 0, sizeof rs);
    if (rv == 0 && (o.only == NULL || strcmp(o.only, "seq") == 0)) {
        rs[n] = (struct result){.name = "seq", .what = "sequential INSERT, 1 client"};
        rv = run_load(&c, &o, &rs[n++], "seq", 1, LOAD_CLIENT_EXEC);
    }
    if (rv == 0 && (o.only == NULL || strcmp(o.only, "writer") == 0)) {
        rs[n] = (struct result){.name = "writer", .what = "concurrent INSERT, threads -> 1 store_writer"};
        rv = run_load(&c, &o, &rs[n++], "writer", o.threads, LOAD_WRITER);
    }
    if (rv == 0 && (o.only == NULL || strcmp(o.only, "clients") == 0)) {
        rs[n] = (struct result){.name = "clients", .what = "baseline: concurrent INSERT, 1 client/thread"};
        rv = run_load(&c, &o, &rs[n++], "clients", o.threads, LOAD_CLIENT_EXEC);
    }
    if (rv == 0 && (o.only == NULL || strcmp(o.only, "clients-tx") == 0)) {
        rs[n] = (struct result){.name = "clients-tx", .what = "baseline: 1-row tx, 1 client/thread"};
        rv = run_load(&c, &o, &rs[n++], "clients_tx", o.threads, LOAD_CLIENT_TX);
    }
    if (rv == 0 && o.trials > 0 && (o.only == NULL || strcmp(o.only, "failover") == 0)) {
        fo_ran = true;
        rv = run_failover(&c, &o, &fr);
    }
    if (rv == 0) {
        rv = cluster_check_alive(&c, errmsg);
        if (rv != 0) {
            fprintf(stderr, "gantry-bench store: %s\n", errmsg);
        }
    }
    if (o.json) {
        print_json(&o, rs, n, &fr, fo_ran);
    } else {
        print_table(&o, rs, n, &fr, fo_ran);
    }
    bool invariant = !fo_ran || fr.invariant_ok;
    for (unsigned i = 0; i < n; i++) {
        invariant = invariant && rs[i].invariant_ok;
    }
    mem_free(fr.ms);
    if (cluster_stop_checked(&c, errmsg) != 0) {
        fprintf(stderr, "gantry-bench store: %s\n", errmsg);
        rv = rv != 0 ? rv : GERR_INTERNAL;
    }
    if (rv != 0) {
        fprintf(stderr, "gantry-bench store: failed (%s)\n", gerr_name(rv));
        return 1;
    }
    return invariant ? 0 : 1;
}
