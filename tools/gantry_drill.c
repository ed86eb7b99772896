/* `gantry drill`: a failure drill against a live cluster, under load, with a report
 * (docs/operations.md, "Disaster-recovery drills").
 *
 * The CLI cannot stop a replica itself (it may run anywhere: a process here, a pod, a VM), so the
 * operator says how: --kill-cmd and --start-cmd are shell commands run once per chosen member with
 * GANTRY_DRILL_MEMBER (the replica id), GANTRY_DRILL_MEMBER_ID (the Raft node id),
 * GANTRY_DRILL_MEMBER_ADDRESS (peer) and GANTRY_DRILL_MEMBER_API in their environment.
 *
 * One run:
 *   1. the members and the leader are read; the drill picks its victims (the leader; one voter
 *      that does not lead; a majority of the voters, the leader among them);
 *   2. writers create service accounts named drill-<run>-<writer>-<n> (pure metadata: nothing
 *      reaches a compute driver), each write retried with its request_id until acknowledged, so a
 *      write is acknowledged exactly when the cluster answered OK; a reader gets acknowledged ones
 *      back; a monitor asks for the leader every 200 ms. Each keeps its own connection and moves to
 *      the next endpoint when one fails;
 *   3. after --before-ms the victims are killed, after --down-ms started again, then the drill
 *      waits (at most --settle-ms) for every member to be reachable again and a write acknowledged
 *      after that, and keeps the load on for --after-ms;
 *   4. the load stops; every acknowledged write is looked for (List, through any endpoint); the
 *      drill's service accounts are deleted unless --keep.
 * The report: RTO (the longest time without an acknowledged write, from the fault on), RPO (the
 * acknowledged writes not found), what clients saw (errors by status), the reads, and the timeline.
 * Exit 0 when nothing acknowledged was lost and the cluster recovered, else 1.
 *
 * standby-promotion differs: the victims are every member outside the standby site (Member.standby_site),
 * and instead of starting them again --promote-cmd runs once for the standby site (a promotion is one
 * recovery of the whole site). Recovered means the standby site is then the whole cluster and votes. A
 * standby acknowledges nothing, so writes the primary's quorum committed just before the loss may be lost:
 * the drill passes when every lost write was acknowledged within RPO_WINDOW_MS of the fault.
 *
 * restore replaces the cluster by one restored from a backup: --backup-cmd runs once (after
 * --before-ms, under load) to write a backup to $GANTRY_DRILL_BACKUP, then every member is killed,
 * and after --down-ms --restore-cmd runs once to make the cluster again from that file. Writes
 * acknowledged between the backup's start and the restore's are expected to be lost (they are
 * counted); the drill passes when none acknowledged before the backup or by the restored cluster is,
 * and the restored cluster is whole and takes writes. A backup that fails kills nothing. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "server/grpc/status.h"
#include "tools/gantry.h"

#define MAX_WRITERS     16
#define MAX_VICTIMS     8
#define MAX_EVENTS      256
#define CALL_TIMEOUT    3000u
#define CONNECT_TIMEOUT 1000u
#define N_STATUS        17 /* gRPC status codes 0..16 */

enum drill_kind { DRILL_LEADER, DRILL_MINORITY, DRILL_QUORUM, DRILL_STANDBY, DRILL_RESTORE };

static const char *const drill_names[] = {"leader-loss", "minority-loss", "quorum-loss", "standby-promotion",
                                          "restore"};

/* standby-promotion: lost writes acknowledged this close to the fault are within the documented promise
 * (docs/operations.md, "Standby site"). */
#define RPO_WINDOW_MS 2000u

struct victim {
    char name[64], address[256], api[256];
    uint64_t id;
};

struct ack {
    char name[64];
    int64_t t_ms; /* since the drill's start */
};

struct event {
    int64_t t_ms;
    char what[200];
};

struct drill {
    struct cli base;
    char run[9];
    uint64_t t0; /* monotonic ms at the start */
    atomic_bool stop;
    pthread_mutex_t mu;
    /* Under mu: */
    struct ack *acks;
    size_t n_acks, cap_acks;
    struct event events[MAX_EVENTS];
    unsigned n_events;
    uint64_t write_attempts, write_errors[N_STATUS + 1]; /* [N_STATUS]: transport */
    uint64_t reads_ok, reads_stale, read_errors;
    char leader[64];
};

/* One connection that moves to the next endpoint when it fails. */
struct conn {
    const struct cli *c;
    unsigned ep;
    struct grpc_client *gc;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t since(const struct drill *d)
{
    return (int64_t)(mono_ms() - d->t0);
}

static void event(struct drill *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(struct drill *d, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&d->mu);
    if (d->n_events < MAX_EVENTS) {
        struct event *e = &d->events[d->n_events++];
        e->t_ms = since(d);
        va_start(ap, fmt);
        vsnprintf(e->what, sizeof e->what, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&d->mu);
}

static void conn_drop(struct conn *k)
{
    if (k->gc != NULL) {
        grpc_client_close(k->gc);
        k->gc = NULL;
    }
    k->ep = (k->ep + 1) % k->c->n_endpoints;
}

/* One attempt: 0 with *@status the gRPC status, or -1 when no answer came (transport). The
 * connection moves on after a transport failure or UNAVAILABLE. */
static int conn_call(struct conn *k, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp, ProtobufCMessage **out, int *status)
{
    char errmsg[GERR_MSG_SIZE];
    char auth[sizeof k->c->token + 16];
    snprintf(auth, sizeof auth, "Bearer %s", k->c->token);
    struct grpc_client_md md = {"authorization", auth};
    *out = NULL;
    if (k->gc == NULL) {
        struct grpc_client_config cc = {.target = k->c->endpoints[k->ep],
                                        .ca_file = k->c->ca[0] != '\0' ? k->c->ca : NULL,
                                        .connect_timeout_ms = CONNECT_TIMEOUT};
        if (grpc_client_connect(&cc, &k->gc, errmsg) != 0) {
            k->gc = NULL;
            conn_drop(k);
            return -1;
        }
    }
    struct grpc_client_result res = {.status = -1};
    int rv = grpc_client_unary(k->gc, path, &md, 1, req, resp, CALL_TIMEOUT, out, &res, errmsg);
    if (rv != 0) {
        conn_drop(k);
        return -1;
    }
    *status = res.status;
    if (res.status == GRPC_STATUS_UNAVAILABLE) {
        conn_drop(k);
    }
    return 0;
}

static void conn_close(struct conn *k)
{
    if (k->gc != NULL) {
        grpc_client_close(k->gc);
        k->gc = NULL;
    }
}

/* --- the load --- */

struct writer {
    struct drill *d;
    unsigned index;
    unsigned period_ms;
    pthread_t thread;
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct drill *d = w->d;
    struct conn k = {.c = &d->base, .ep = w->index % d->base.n_endpoints};
    for (uint64_t seq = 0; !atomic_load(&d->stop); seq++) {
        uint64_t started = mono_ms();
        char name[64], rid[37];
        snprintf(name, sizeof name, "drill-%s-%u-%" PRIu64, d->run, w->index, seq);
        gantry_request_id(rid);
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__Principal p = GANTRY__V1__PRINCIPAL__INIT;
        Gantry__V1__CreatePrincipalRequest req = GANTRY__V1__CREATE_PRINCIPAL_REQUEST__INIT;
        meta.name = name;
        p.meta = &meta;
        p.kind = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT;
        p.display_name = "gantry drill";
        req.principal = &p;
        req.request_id = rid;
        /* The same request (request_id) until the cluster answers: acknowledged means OK. A write
         * still unanswered when the load stops was never acknowledged. */
        while (!atomic_load(&d->stop)) {
            ProtobufCMessage *out;
            int status = -1;
            int rv = conn_call(&k, "/gantry.v1.Principals/Create", &req.base,
                               &gantry__v1__principal__descriptor, &out, &status);
            pthread_mutex_lock(&d->mu);
            d->write_attempts++;
            if (rv == 0 && status == GRPC_STATUS_OK) {
                if (d->n_acks == d->cap_acks) {
                    d->cap_acks = d->cap_acks == 0 ? 1024 : 2 * d->cap_acks;
                    d->acks = mem_realloc(d->acks, d->cap_acks * sizeof *d->acks);
                }
                struct ack *a = &d->acks[d->n_acks++];
                snprintf(a->name, sizeof a->name, "%s", name);
                a->t_ms = since(d);
            } else {
                d->write_errors[rv != 0 || status < 0 || status >= N_STATUS ? N_STATUS : status]++;
            }
            pthread_mutex_unlock(&d->mu);
            if (out != NULL) {
                protobuf_c_message_free_unpacked(out, NULL);
            }
            if (rv == 0 && status == GRPC_STATUS_OK) {
                break;
            }
            if (rv == 0 && status != GRPC_STATUS_UNAVAILABLE && status != GRPC_STATUS_DEADLINE_EXCEEDED &&
                status != GRPC_STATUS_ABORTED) {
                break; /* a definite refusal: counted, not retried */
            }
            sleep_ms(50);
        }
        uint64_t took = mono_ms() - started;
        if (took < w->period_ms) {
            sleep_ms((unsigned)(w->period_ms - took));
        }
    }
    conn_close(&k);
    return NULL;
}

/* Reads an acknowledged write back, every 100 ms, through the endpoints in turn. NOT_FOUND for a
 * write acknowledged before the read started is a stale read. */
static void *reader_main(void *arg)
{
    struct drill *d = arg;
    struct conn k = {.c = &d->base, .ep = 1 % d->base.n_endpoints};
    while (!atomic_load(&d->stop)) {
        char name[64] = "";
        pthread_mutex_lock(&d->mu);
        if (d->n_acks > 0) {
            uint32_t r;
            rand_bytes(&r, sizeof r);
            snprintf(name, sizeof name, "%s", d->acks[r % d->n_acks].name);
        }
        pthread_mutex_unlock(&d->mu);
        if (name[0] != '\0') {
            Gantry__V1__GetPrincipalRequest req = GANTRY__V1__GET_PRINCIPAL_REQUEST__INIT;
            req.id = name;
            ProtobufCMessage *out;
            int status = -1;
            int rv = conn_call(&k, "/gantry.v1.Principals/Get", &req.base, &gantry__v1__principal__descriptor,
                               &out, &status);
            pthread_mutex_lock(&d->mu);
            if (rv == 0 && status == GRPC_STATUS_OK) {
                d->reads_ok++;
            } else if (rv == 0 && status == GRPC_STATUS_NOT_FOUND) {
                d->reads_stale++;
            } else {
                d->read_errors++;
            }
            pthread_mutex_unlock(&d->mu);
            if (out != NULL) {
                protobuf_c_message_free_unpacked(out, NULL);
            }
        }
        sleep_ms(100);
    }
    conn_close(&k);
    return NULL;
}

/* Notes every change of the leader the cluster reports. */
static void *monitor_main(void *arg)
{
    struct drill *d = arg;
    struct conn k = {.c = &d->base, .ep = 2 % d->base.n_endpoints};
    while (!atomic_load(&d->stop)) {
        Gantry__V1__GetLeaderRequest req = GANTRY__V1__GET_LEADER_REQUEST__INIT;
        ProtobufCMessage *out;
        int status = -1;
        if (conn_call(&k, "/gantry.v1.Cluster/GetLeader", &req.base,
                      &gantry__v1__get_leader_response__descriptor, &out, &status) == 0 &&
            status == GRPC_STATUS_OK && out != NULL) {
            const Gantry__V1__GetLeaderResponse *r = (const Gantry__V1__GetLeaderResponse *)out;
            const char *now = r->leader != NULL ? r->leader->name : "";
            pthread_mutex_lock(&d->mu);
            bool changed = strcmp(now, d->leader) != 0;
            if (changed) {
                snprintf(d->leader, sizeof d->leader, "%s", now);
            }
            pthread_mutex_unlock(&d->mu);
            if (changed) {
                event(d, now[0] != '\0' ? "leader: %s" : "no leader%s", now);
            }
        }
        if (out != NULL) {
            protobuf_c_message_free_unpacked(out, NULL);
        }
        sleep_ms(200);
    }
    conn_close(&k);
    return NULL;
}

/* --- the cluster, before and after --- */

static int list_members(struct cli *c, Gantry__V1__ListMembersResponse **out)
{
    Gantry__V1__ListMembersRequest req = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
    return gantry_call(c, "/gantry.v1.Cluster/ListMembers", &req.base,
                       &gantry__v1__list_members_response__descriptor, NULL, NULL, (ProtobufCMessage **)out,
                       10000);
}

static bool is_voter(const Gantry__V1__Member *m)
{
    return m->role == GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER;
}

static void victim_of(struct victim *v, const Gantry__V1__Member *m)
{
    snprintf(v->name, sizeof v->name, "%s", m->name);
    snprintf(v->address, sizeof v->address, "%s", m->address);
    snprintf(v->api, sizeof v->api, "%s", m->api_address);
    v->id = m->id;
}

/* standby-promotion: every member outside the standby site is a victim, and the standby site (@site,
 * *@n_site) is promoted. 0, or GANTRY_EXIT_USAGE with the reason printed. */
static int choose_standby(const Gantry__V1__ListMembersResponse *ms, struct victim *v, unsigned *n,
                          struct victim *site, unsigned *n_site)
{
    bool primary_leads = false;
    *n = *n_site = 0;
    for (size_t i = 0; i < ms->n_members; i++) {
        const Gantry__V1__Member *m = ms->members[i];
        if (m->standby_site && *n_site < MAX_VICTIMS) {
            victim_of(&site[(*n_site)++], m);
        } else if (!m->standby_site && *n < MAX_VICTIMS) {
            victim_of(&v[(*n)++], m);
            primary_leads = primary_leads || m->leader;
        }
    }
    if (*n_site == 0 || *n == 0 || !primary_leads) {
        fprintf(
            stderr,
            "gantry drill standby-promotion: needs a standby site (members with standby_site) and a primary "
            "site that leads (found %u standby-site member(s), %u other(s)%s)\n",
            *n_site, *n, primary_leads ? "" : ", no leader outside the standby site");
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

/* restore: every member is a victim. 0, or GANTRY_EXIT_USAGE with the reason printed. */
static int choose_all(const Gantry__V1__ListMembersResponse *ms, struct victim *v, unsigned *n)
{
    *n = 0;
    bool leader = false, all = true;
    for (size_t i = 0; i < ms->n_members && *n < MAX_VICTIMS; i++) {
        victim_of(&v[(*n)++], ms->members[i]);
        leader = leader || ms->members[i]->leader;
        all = all && ms->members[i]->reachable;
    }
    if (*n == 0 || !leader || !all || ms->n_members > MAX_VICTIMS) {
        fprintf(
            stderr,
            "gantry drill restore: needs a whole cluster (a leader, every member reachable) of at most %d "
            "members (found %zu%s%s)\n",
            MAX_VICTIMS, ms->n_members, leader ? "" : ", no leader", all ? "" : ", a member unreachable");
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

/* The victims of @kind among @ms: 0, or GANTRY_EXIT_USAGE with the reason printed. */
static int choose(enum drill_kind kind, const Gantry__V1__ListMembersResponse *ms, struct victim *v,
                  unsigned *n)
{
    const Gantry__V1__Member *leader = NULL;
    unsigned voters = 0;
    for (size_t i = 0; i < ms->n_members; i++) {
        voters += is_voter(ms->members[i]);
        if (ms->members[i]->leader) {
            leader = ms->members[i];
        }
    }
    *n = 0;
    if (leader == NULL || voters < 3) {
        fprintf(stderr, "gantry drill: needs a leader and at least 3 voters (found %u voter(s)%s)\n", voters,
                leader == NULL ? ", no leader" : "");
        return GANTRY_EXIT_USAGE;
    }
    if (kind != DRILL_MINORITY) {
        victim_of(&v[(*n)++], leader);
    }
    unsigned want = kind == DRILL_QUORUM ? voters / 2 + 1 : 1;
    for (size_t i = 0; i < ms->n_members && *n < want && *n < MAX_VICTIMS; i++) {
        if (is_voter(ms->members[i]) && !ms->members[i]->leader) {
            victim_of(&v[(*n)++], ms->members[i]);
        }
    }
    return 0;
}

extern char **environ;

/* Start @cmd with the member in the environment: its pid, or -1. The environment is built before
 * fork: the load's threads run meanwhile, so the child only execs. */
static pid_t spawn_hook(const char *cmd, const struct victim *v, char *const *extra, unsigned n_extra)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **env = mem_alloc((n + 5 + n_extra) * sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "GANTRY_DRILL_MEMBER", 19) != 0) {
            env[k++] = environ[i];
        }
    }
    char vars[4][320];
    snprintf(vars[0], sizeof vars[0], "GANTRY_DRILL_MEMBER=%s", v->name);
    snprintf(vars[1], sizeof vars[1], "GANTRY_DRILL_MEMBER_ID=%" PRIu64, v->id);
    snprintf(vars[2], sizeof vars[2], "GANTRY_DRILL_MEMBER_ADDRESS=%s", v->address);
    snprintf(vars[3], sizeof vars[3], "GANTRY_DRILL_MEMBER_API=%s", v->api);
    for (int i = 0; i < 4; i++) {
        env[k++] = vars[i];
    }
    for (unsigned i = 0; i < n_extra; i++) {
        env[k++] = extra[i];
    }
    env[k] = NULL;
    char *const argv[] = {"sh", "-c", (char *)cmd, NULL};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(2, 1); /* what the hook prints goes with the diagnostics, never into the report */
        execve("/bin/sh", argv, env);
        _exit(127);
    }
    mem_free(env);
    return pid;
}

/* Run @cmd for every victim at once (a majority fails together, and a majority must start together:
 * a replica may wait for the others to be ready), and note each exit status. */
static void run_hooks(struct drill *d, const char *what, const char *cmd, const struct victim *v, unsigned n)
{
    pid_t pids[MAX_VICTIMS];
    for (unsigned i = 0; i < n; i++) {
        pids[i] = spawn_hook(cmd, &v[i], NULL, 0);
    }
    for (unsigned i = 0; i < n; i++) {
        int st = 0, rv = pids[i];
        while (rv > 0 && (rv = waitpid(pids[i], &st, 0)) < 0 && errno == EINTR) {
        }
        int code = rv > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        event(d, "%s member %s (%s): exit %d", what, v[i].name, v[i].address, code);
    }
}

/* A hook run once for a set of members (standby-promotion's, for the whole standby site: a promotion is
 * one recovery of the site, not one per member; restore's, for the whole cluster), with
 * GANTRY_DRILL_MEMBER* naming the first member and GANTRY_DRILL_MEMBERS, _IDS and _ADDRESSES listing
 * them all, comma-separated, in the same order; with @backup, GANTRY_DRILL_BACKUP too. Its exit
 * status (-1 when it did not exit). */
static int run_site_hook(struct drill *d, const char *what, const char *cmd, const struct victim *site,
                         unsigned n, const char *backup)
{
    size_t cap = 64 + (size_t)n * 300;
    char *names = mem_zalloc(cap), *ids = mem_zalloc(cap), *addrs = mem_zalloc(cap);
    size_t ln = 0, li = 0, la = 0;
    ln += (size_t)snprintf(names + ln, cap - ln, "GANTRY_DRILL_MEMBERS=");
    li += (size_t)snprintf(ids + li, cap - li, "GANTRY_DRILL_MEMBER_IDS=");
    la += (size_t)snprintf(addrs + la, cap - la, "GANTRY_DRILL_MEMBER_ADDRESSES=");
    for (unsigned i = 0; i < n; i++) {
        const char *sep = i == 0 ? "" : ",";
        ln += (size_t)snprintf(names + ln, cap - ln, "%s%s", sep, site[i].name);
        li += (size_t)snprintf(ids + li, cap - li, "%s%" PRIu64, sep, site[i].id);
        la += (size_t)snprintf(addrs + la, cap - la, "%s%s", sep, site[i].address);
    }
    char backup_var[4200];
    snprintf(backup_var, sizeof backup_var, "GANTRY_DRILL_BACKUP=%s", backup != NULL ? backup : "");
    char *extra[] = {names, ids, addrs, backup_var};
    pid_t pid = spawn_hook(cmd, &site[0], extra, backup != NULL ? 4u : 3u);
    int st = 0, rv = pid;
    while (rv > 0 && (rv = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
    }
    int code = rv > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    event(d, "%s (%s): exit %d", what, names + strlen("GANTRY_DRILL_MEMBERS="), code);
    mem_free(names);
    mem_free(ids);
    mem_free(addrs);
    return code;
}

/* Every member reachable and a leader named. */
static bool healthy(struct cli *c)
{
    Gantry__V1__ListMembersResponse *ms = NULL;
    c->quiet = true;
    unsigned keep = c->retry_ms;
    c->retry_ms = 0;
    int rc = list_members(c, &ms);
    c->retry_ms = keep;
    c->quiet = false;
    bool ok = rc == 0 && ms != NULL;
    bool leader = false;
    for (size_t i = 0; ok && i < ms->n_members; i++) {
        ok = ms->members[i]->reachable;
        leader = leader || ms->members[i]->leader;
    }
    if (ms != NULL) {
        protobuf_c_message_free_unpacked(&ms->base, NULL);
    }
    return ok && leader;
}

/* standby-promotion, afterwards: every member is in the standby site and at least one votes (the
 * voters' names into @out, comma-separated). With 1 or 2 members the roles policy keeps 1 voter. */
static bool site_promoted(struct cli *c, char *out, size_t len)
{
    Gantry__V1__ListMembersResponse *ms = NULL;
    c->quiet = true;
    bool ok = list_members(c, &ms) == 0 && ms != NULL && ms->n_members > 0;
    c->quiet = false;
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; ok && i < ms->n_members; i++) {
        const Gantry__V1__Member *m = ms->members[i];
        ok = m->standby_site;
        if (ok && is_voter(m) && k < len) {
            k += (size_t)snprintf(out + k, len - k, "%s%s", k == 0 ? "" : ",", m->name);
        }
    }
    if (ms != NULL) {
        protobuf_c_message_free_unpacked(&ms->base, NULL);
    }
    return ok && k > 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The drill's service accounts the cluster holds, sorted (mem_free each and the array). */
static int drill_principals(struct drill *d, char ***names, size_t *n)
{
    Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
    char token[1024] = "", prefix[32];
    snprintf(prefix, sizeof prefix, "drill-%s-", d->run);
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    for (;;) {
        Gantry__V1__ListPrincipalsRequest req = GANTRY__V1__LIST_PRINCIPALS_REQUEST__INIT;
        req.kind = GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT;
        page.page_size = 1000;
        page.page_token = token;
        req.page = &page;
        Gantry__V1__ListPrincipalsResponse *r = NULL;
        int rc = gantry_call(&d->base, "/gantry.v1.Principals/List", &req.base,
                             &gantry__v1__list_principals_response__descriptor, NULL, NULL,
                             (ProtobufCMessage **)&r, 30000);
        if (rc != 0) {
            return rc;
        }
        for (size_t i = 0; i < r->n_principals; i++) {
            const char *nm = r->principals[i]->meta != NULL ? r->principals[i]->meta->name : "";
            if (strncmp(nm, prefix, strlen(prefix)) == 0) {
                if (*n == cap) {
                    cap = cap == 0 ? 1024 : 2 * cap;
                    *names = mem_realloc(*names, cap * sizeof **names);
                }
                (*names)[(*n)++] = mem_strdup(nm);
            }
        }
        snprintf(token, sizeof token, "%s", r->next_page_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (token[0] == '\0') {
            break;
        }
    }
    if (*n > 0) {
        qsort(*names, *n, sizeof **names, cmp_name);
    }
    return 0;
}

struct deleter {
    struct drill *d;
    char **names;
    size_t n, from, step;
    pthread_t thread;
};

/* Deletes names[from], names[from + step], ... */
static void *deleter_main(void *arg)
{
    struct deleter *x = arg;
    struct conn k = {.c = &x->d->base, .ep = (unsigned)(x->from % x->d->base.n_endpoints)};
    for (size_t i = x->from; i < x->n; i += x->step) {
        char **names = x->names;
        char rid[37];
        gantry_request_id(rid);
        Gantry__V1__DeletePrincipalRequest req = GANTRY__V1__DELETE_PRINCIPAL_REQUEST__INIT;
        req.request_id = rid;
        req.id = names[i];
        for (int attempt = 0; attempt < 5; attempt++) {
            ProtobufCMessage *out;
            int status = -1;
            int rv = conn_call(&k, "/gantry.v1.Principals/Delete", &req.base,
                               &gantry__v1__delete_response__descriptor, &out, &status);
            if (out != NULL) {
                protobuf_c_message_free_unpacked(out, NULL);
            }
            if (rv == 0 && status != GRPC_STATUS_UNAVAILABLE) {
                break;
            }
            sleep_ms(200);
        }
    }
    conn_close(&k);
    return NULL;
}

/* Delete the drill's service accounts, @n_threads calls at a time. */
static void delete_principals(struct drill *d, char **names, size_t n, unsigned n_threads)
{
    struct deleter x[MAX_WRITERS];
    for (unsigned i = 0; i < n_threads; i++) {
        x[i] = (struct deleter){.d = d, .names = names, .n = n, .from = i, .step = n_threads};
        pthread_create(&x[i].thread, NULL, deleter_main, &x[i]);
    }
    for (unsigned i = 0; i < n_threads; i++) {
        pthread_join(x[i].thread, NULL);
    }
}

/* --- the report --- */

struct outcome {
    int64_t fault_ms, restart_ms, healthy_ms, end_ms;
    int64_t rto_ms;
    size_t lost;
    size_t lost_early; /* standby-promotion: lost writes acknowledged before the promise's window;
                        * restore: outside [backup start, restore start) */
    int64_t backup_ms; /* restore: when --backup-cmd started (-1: never) */
    bool backup_ok;    /* restore: --backup-cmd exited 0 */
    bool recovered;
    bool passed;
    char promoted[512]; /* standby-promotion: the standby-site voters afterwards */
};

static json_t *report(struct drill *d, enum drill_kind kind, const struct victim *v, unsigned n_v,
                      const struct outcome *o, unsigned writers)
{
    json_t *victims = json_array();
    for (unsigned i = 0; i < n_v; i++) {
        json_array_append_new(victims, json_pack("{s:s, s:I, s:s}", "name", v[i].name, "id",
                                                 (json_int_t)v[i].id, "address", v[i].address));
    }
    json_t *errors = json_object();
    for (int s = 0; s <= N_STATUS; s++) {
        if (d->write_errors[s] != 0) {
            json_object_set_new(errors, s == N_STATUS ? "no answer" : grpc_status_name(s),
                                json_integer((json_int_t)d->write_errors[s]));
        }
    }
    json_t *timeline = json_array();
    for (unsigned i = 0; i < d->n_events; i++) {
        json_array_append_new(timeline, json_pack("{s:I, s:s}", "t_ms", (json_int_t)d->events[i].t_ms,
                                                  "event", d->events[i].what));
    }
    json_t *r = json_pack(
        "{s:s, s:s, s:o, s:b, s:b, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:o}, s:{s:I, s:I, s:I}, "
        "s:{s:I, s:I, s:I, s:I}, s:o}",
        "drill", drill_names[kind], "run", d->run, "victims", victims, "passed", o->passed, "recovered",
        o->recovered, "rto_ms", (json_int_t)o->rto_ms, "rpo_lost_writes", (json_int_t)o->lost, "writes",
        "writers", (json_int_t)writers, "attempts", (json_int_t)d->write_attempts, "acknowledged",
        (json_int_t)d->n_acks, "lost", (json_int_t)o->lost, "errors", errors, "reads", "ok",
        (json_int_t)d->reads_ok, "stale", (json_int_t)d->reads_stale, "errors", (json_int_t)d->read_errors,
        "phases_ms", "fault", (json_int_t)o->fault_ms, "restart", (json_int_t)o->restart_ms, "healthy",
        (json_int_t)o->healthy_ms, "end", (json_int_t)o->end_ms, "timeline", timeline);
    if (kind == DRILL_STANDBY && r != NULL) {
        json_t *names = json_array();
        char buf[sizeof o->promoted], *save = NULL;
        snprintf(buf, sizeof buf, "%s", o->promoted);
        for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            json_array_append_new(names, json_string(t));
        }
        json_object_set_new(r, "standby_site_voters", names);
        json_object_set_new(r, "rpo_window_ms", json_integer(RPO_WINDOW_MS));
        json_object_set_new(r, "rpo_within_promise", json_boolean(o->lost_early == 0));
    }
    if (kind == DRILL_RESTORE && r != NULL) {
        json_object_set_new(r, "backup_ms", json_integer(o->backup_ms));
        json_object_set_new(r, "backup_ok", json_boolean(o->backup_ok));
        json_object_set_new(r, "lost_after_backup", json_integer((json_int_t)(o->lost - o->lost_early)));
        json_object_set_new(r, "rpo_within_promise", json_boolean(o->backup_ok && o->lost_early == 0));
    }
    return r;
}

static void print_report(FILE *f, json_t *r)
{
    fprintf(f, "drill %s (run %s): %s\n", json_string_value(json_object_get(r, "drill")),
            json_string_value(json_object_get(r, "run")),
            json_is_true(json_object_get(r, "passed")) ? "PASSED" : "FAILED");
    fprintf(f,
            "  RTO (longest time without an acknowledged write, from the fault): %" JSON_INTEGER_FORMAT
            " ms\n",
            json_integer_value(json_object_get(r, "rto_ms")));
    json_t *w = json_object_get(r, "writes");
    fprintf(f,
            "  RPO: %" JSON_INTEGER_FORMAT " acknowledged write(s) lost of %" JSON_INTEGER_FORMAT
            " (%" JSON_INTEGER_FORMAT " attempts by %" JSON_INTEGER_FORMAT " writers)\n",
            json_integer_value(json_object_get(w, "lost")),
            json_integer_value(json_object_get(w, "acknowledged")),
            json_integer_value(json_object_get(w, "attempts")),
            json_integer_value(json_object_get(w, "writers")));
    if (json_object_get(r, "backup_ms") != NULL) {
        fprintf(f,
                "  backup: %s at %" JSON_INTEGER_FORMAT
                " ms; writes acknowledged after it and before the restore, lost as expected: "
                "%" JSON_INTEGER_FORMAT "; RPO promise (nothing acknowledged before the backup or after the "
                "restore lost): %s\n",
                json_is_true(json_object_get(r, "backup_ok")) ? "written" : "FAILED",
                json_integer_value(json_object_get(r, "backup_ms")),
                json_integer_value(json_object_get(r, "lost_after_backup")),
                json_is_true(json_object_get(r, "rpo_within_promise")) ? "kept" : "BROKEN");
    } else if (json_object_get(r, "rpo_within_promise") != NULL) {
        fprintf(f,
                "  RPO promise (lost writes only among those acknowledged in the last %" JSON_INTEGER_FORMAT
                " ms before the fault): %s\n  standby site now voting: %zu member(s)\n",
                json_integer_value(json_object_get(r, "rpo_window_ms")),
                json_is_true(json_object_get(r, "rpo_within_promise")) ? "kept" : "BROKEN",
                json_array_size(json_object_get(r, "standby_site_voters")));
    }
    const char *k;
    json_t *val;
    fprintf(f, "  errors seen by writers:");
    if (json_object_size(json_object_get(w, "errors")) == 0) {
        fprintf(f, " none");
    }
    json_object_foreach(json_object_get(w, "errors"), k, val)
    {
        fprintf(f, " %s %" JSON_INTEGER_FORMAT, k, json_integer_value(val));
    }
    json_t *rd = json_object_get(r, "reads");
    fprintf(f,
            "\n  reads: %" JSON_INTEGER_FORMAT " ok, %" JSON_INTEGER_FORMAT " stale, %" JSON_INTEGER_FORMAT
            " failed\n",
            json_integer_value(json_object_get(rd, "ok")), json_integer_value(json_object_get(rd, "stale")),
            json_integer_value(json_object_get(rd, "errors")));
    fprintf(f, "  timeline (ms from the start):\n");
    size_t i;
    json_array_foreach(json_object_get(r, "timeline"), i, val)
    {
        fprintf(f, "    %7" JSON_INTEGER_FORMAT "  %s\n", json_integer_value(json_object_get(val, "t_ms")),
                json_string_value(json_object_get(val, "event")));
    }
}

/* --- the command --- */

static int parse_ms(const char *flag, const char *v, unsigned dflt, unsigned *out)
{
    uint64_t x = dflt;
    if (v != NULL && gantry_u64(flag, v, 600000, &x) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    *out = (unsigned)x;
    return 0;
}

static int drill(struct cli *c, enum drill_kind kind, int argc, char **argv)
{
    const char *kill_cmd = gantry_opt(&argc, argv, "--kill-cmd"),
               *start_cmd = kind == DRILL_STANDBY   ? gantry_opt(&argc, argv, "--promote-cmd")
                            : kind == DRILL_RESTORE ? gantry_opt(&argc, argv, "--restore-cmd")
                                                    : gantry_opt(&argc, argv, "--start-cmd");
    const char *backup_cmd = kind == DRILL_RESTORE ? gantry_opt(&argc, argv, "--backup-cmd") : NULL;
    const char *report_file = gantry_opt(&argc, argv, "--report");
    unsigned before, down, settle, after, writers, rate;
    if (parse_ms("--before-ms", gantry_opt(&argc, argv, "--before-ms"), 3000, &before) != 0 ||
        parse_ms("--down-ms", gantry_opt(&argc, argv, "--down-ms"), 5000, &down) != 0 ||
        parse_ms("--settle-ms", gantry_opt(&argc, argv, "--settle-ms"), 60000, &settle) != 0 ||
        parse_ms("--after-ms", gantry_opt(&argc, argv, "--after-ms"), 3000, &after) != 0 ||
        parse_ms("--writers", gantry_opt(&argc, argv, "--writers"), 4, &writers) != 0 ||
        parse_ms("--rate", gantry_opt(&argc, argv, "--rate"), 10, &rate) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    bool keep = gantry_flag(&argc, argv, "--keep");
    int rc = gantry_args(gantry_find("drill", drill_names[kind]), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    if (kind == DRILL_STANDBY && (kill_cmd == NULL || start_cmd == NULL)) {
        fprintf(
            stderr,
            "gantry drill: --kill-cmd and --promote-cmd are required: the commands that stop one member and "
            "promote the standby site (see `gantry drill standby-promotion --help`)\n");
        return GANTRY_EXIT_USAGE;
    }
    if (kind == DRILL_RESTORE && (kill_cmd == NULL || start_cmd == NULL || backup_cmd == NULL)) {
        fprintf(stderr, "gantry drill: --kill-cmd, --backup-cmd and --restore-cmd are required: the commands "
                        "that stop one member, write a backup to $GANTRY_DRILL_BACKUP and make the cluster "
                        "again from it (see `gantry drill restore --help`)\n");
        return GANTRY_EXIT_USAGE;
    }
    if (kill_cmd == NULL || start_cmd == NULL) {
        fprintf(stderr,
                "gantry drill: --kill-cmd and --start-cmd are required: the commands that stop and start "
                "one member (see `gantry drill %s --help`)\n",
                drill_names[kind]);
        return GANTRY_EXIT_USAGE;
    }
    if (writers == 0 || writers > MAX_WRITERS || rate == 0 || rate > 1000) {
        fprintf(stderr,
                "gantry drill: --writers must be 1..%d and --rate 1..1000 writes per second per writer\n",
                MAX_WRITERS);
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__ListMembersResponse *ms = NULL;
    if ((rc = list_members(c, &ms)) != 0) {
        return rc;
    }
    struct victim v[MAX_VICTIMS], site[MAX_VICTIMS];
    unsigned n_v = 0, n_site = 0;
    rc = kind == DRILL_STANDBY   ? choose_standby(ms, v, &n_v, site, &n_site)
         : kind == DRILL_RESTORE ? choose_all(ms, v, &n_v)
                                 : choose(kind, ms, v, &n_v);
    protobuf_c_message_free_unpacked(&ms->base, NULL);
    if (rc != 0) {
        return rc;
    }
    struct drill *d = mem_zalloc(sizeof *d);
    d->base = *c;
    d->base.quiet = true;
    pthread_mutex_init(&d->mu, NULL);
    uint8_t rb[4];
    rand_bytes(rb, sizeof rb);
    snprintf(d->run, sizeof d->run, "%02x%02x%02x%02x", rb[0], rb[1], rb[2], rb[3]);
    d->t0 = mono_ms();
    struct outcome o = {.fault_ms = -1, .restart_ms = -1, .healthy_ms = -1, .backup_ms = -1};
    char backup_dir[64] = "", backup[96] = "";
    if (kind == DRILL_RESTORE) {
        snprintf(backup_dir, sizeof backup_dir, "/tmp/gantry-drill-backup-XXXXXX");
        if (mkdtemp(backup_dir) == NULL) {
            fprintf(stderr, "gantry drill: cannot make a directory for the backup: %s\n", strerror(errno));
            pthread_mutex_destroy(&d->mu);
            mem_free(d);
            return GANTRY_EXIT_FAILED;
        }
        snprintf(backup, sizeof backup, "%s/cluster.backup", backup_dir);
    }
    event(d, "load starts: %u writer(s) at %u writes/s each, a reader, a leader monitor", writers, rate);
    struct writer w[MAX_WRITERS];
    pthread_t reader, monitor;
    for (unsigned i = 0; i < writers; i++) {
        w[i] = (struct writer){.d = d, .index = i, .period_ms = 1000u / rate};
        pthread_create(&w[i].thread, NULL, writer_main, &w[i]);
    }
    pthread_create(&reader, NULL, reader_main, d);
    pthread_create(&monitor, NULL, monitor_main, d);
    sleep_ms(before);
    if (kind == DRILL_RESTORE) {
        o.backup_ms = since(d);
        o.backup_ok = run_site_hook(d, "--backup-cmd", backup_cmd, v, n_v, backup) == 0;
    }
    /* A restore drill whose backup failed kills nothing: there would be nothing to restore. */
    bool fault = kind != DRILL_RESTORE || o.backup_ok;
    if (!fault) {
        event(d, "--backup-cmd failed: nothing was killed, the drill stops");
    } else {
        o.fault_ms = since(d);
        run_hooks(d, "--kill-cmd", kill_cmd, v, n_v);
        sleep_ms(down);
        o.restart_ms = since(d);
        if (kind == DRILL_STANDBY) {
            run_site_hook(d, "--promote-cmd for the standby site", start_cmd, site, n_site, NULL);
        } else if (kind == DRILL_RESTORE) {
            run_site_hook(d, "--restore-cmd for the cluster", start_cmd, v, n_v, backup);
        } else {
            run_hooks(d, "--start-cmd", start_cmd, v, n_v);
        }
        struct cli probe = *c;
        probe.retry_ms = 0;
        for (uint64_t until = mono_ms() + settle; mono_ms() < until;) {
            if (healthy(&probe) &&
                (kind != DRILL_STANDBY || site_promoted(&probe, o.promoted, sizeof o.promoted))) {
                o.healthy_ms = since(d);
                event(d,
                      kind == DRILL_STANDBY
                          ? "every member reachable, a leader named, the standby site voting (%s)"
                          : "every member reachable, a leader named%s",
                      kind == DRILL_STANDBY ? o.promoted : "");
                break;
            }
            sleep_ms(250);
        }
        /* A write acknowledged after the cluster says it is whole. */
        if (o.healthy_ms >= 0) {
            for (uint64_t until = mono_ms() + settle; mono_ms() < until; sleep_ms(100)) {
                pthread_mutex_lock(&d->mu);
                bool acked = d->n_acks > 0 && d->acks[d->n_acks - 1].t_ms > o.healthy_ms;
                pthread_mutex_unlock(&d->mu);
                if (acked) {
                    o.recovered = true;
                    break;
                }
            }
        }
    }
    sleep_ms(after);
    atomic_store(&d->stop, true);
    for (unsigned i = 0; i < writers; i++) {
        pthread_join(w[i].thread, NULL);
    }
    pthread_join(reader, NULL);
    pthread_join(monitor, NULL);
    o.end_ms = since(d);
    event(d, "load stopped: %zu write(s) acknowledged", d->n_acks);
    /* RTO: the longest time without an acknowledged write, counted from the fault. */
    int64_t prev = o.fault_ms;
    for (size_t i = 0; i < d->n_acks; i++) {
        if (d->acks[i].t_ms < o.fault_ms) {
            continue;
        }
        if (d->acks[i].t_ms - prev > o.rto_ms) {
            o.rto_ms = d->acks[i].t_ms - prev;
        }
        prev = d->acks[i].t_ms;
    }
    if (!o.recovered) {
        o.rto_ms = o.end_ms - prev > o.rto_ms ? o.end_ms - prev : o.rto_ms;
    }
    /* RPO: every acknowledged write must be there. */
    char **names = NULL;
    size_t n_names = 0;
    d->base.retry_ms = c->retry_ms > 30000 ? c->retry_ms : 30000;
    d->base.quiet = false;
    rc = drill_principals(d, &names, &n_names);
    if (rc != 0) {
        fprintf(stderr, "gantry drill: could not read the drill's writes back to check them\n");
        o.lost = d->n_acks; /* unverified: not claimed as kept */
        o.recovered = false;
    }
    for (size_t i = 0; rc == 0 && i < d->n_acks; i++) {
        const char *key = d->acks[i].name;
        if (n_names == 0 || bsearch(&key, names, n_names, sizeof *names, cmp_name) == NULL) {
            o.lost++;
            /* A standby site acknowledges nothing: what the primary's quorum committed in the moment
             * before the loss may not have reached it. Anything older is a broken promise. */
            /* restore: only writes acknowledged between the backup's start and the restore's may be
             * gone; one acknowledged before the backup, or by the restored cluster, may not. */
            o.lost_early += kind == DRILL_RESTORE
                                ? (d->acks[i].t_ms < o.backup_ms || d->acks[i].t_ms >= o.restart_ms ? 1u : 0u)
                            : d->acks[i].t_ms < o.fault_ms - (int64_t)RPO_WINDOW_MS ? 1u
                                                                                    : 0u;
        }
    }
    if (rc != 0) {
        o.lost_early = o.lost;
    }
    event(d, "checked: %zu acknowledged write(s) not found", o.lost);
    if (!keep && rc == 0) {
        delete_principals(d, names, n_names, writers);
        event(d, "deleted the drill's %zu service account(s)", n_names);
    }
    for (size_t i = 0; i < n_names; i++) {
        mem_free(names[i]);
    }
    mem_free(names);
    o.passed = rc == 0 && o.recovered &&
               (kind == DRILL_STANDBY   ? o.lost_early == 0
                : kind == DRILL_RESTORE ? o.backup_ok && o.lost_early == 0
                                        : o.lost == 0);
    json_t *r = report(d, kind, v, n_v, &o, writers);
    if (c->out == GANTRY_OUT_JSON) {
        json_dumpf(r, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    } else {
        print_report(stdout, r);
    }
    if (report_file != NULL && json_dump_file(r, report_file, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        fprintf(stderr, "gantry drill: cannot write the report to %s\n", report_file);
        rc = GANTRY_EXIT_FAILED;
    }
    bool passed = rc == 0 && o.passed;
    if (backup_dir[0] != '\0' && !keep) {
        unlink(backup);
        rmdir(backup_dir);
    } else if (backup_dir[0] != '\0') {
        fprintf(stderr, "gantry drill: the backup is kept in %s\n", backup);
    }
    json_decref(r);
    mem_free(d->acks);
    pthread_mutex_destroy(&d->mu);
    mem_free(d);
    return rc != 0 ? rc : passed ? GANTRY_EXIT_OK : GANTRY_EXIT_FAILED;
}

static int leader_loss(struct cli *c, int argc, char **argv)
{
    return drill(c, DRILL_LEADER, argc, argv);
}

static int minority_loss(struct cli *c, int argc, char **argv)
{
    return drill(c, DRILL_MINORITY, argc, argv);
}

static int quorum_loss(struct cli *c, int argc, char **argv)
{
    return drill(c, DRILL_QUORUM, argc, argv);
}

static int standby_promotion(struct cli *c, int argc, char **argv)
{
    return drill(c, DRILL_STANDBY, argc, argv);
}

static int restore_drill(struct cli *c, int argc, char **argv)
{
    return drill(c, DRILL_RESTORE, argc, argv);
}

#define DRILL_ARGS                                                                                           \
    "--kill-cmd CMD --start-cmd CMD [--before-ms MS] [--down-ms MS] [--settle-ms MS] [--after-ms MS] "       \
    "[--writers N] [--rate N] [--report FILE] [--keep]"
#define DRILL_EXAMPLE(NAME)                                                                                  \
    "gantry drill " NAME " --kill-cmd 'tools/dev-cluster.sh kill $GANTRY_DRILL_MEMBER' \\\n"                 \
    "    --start-cmd 'tools/dev-cluster.sh start' --report drill.json"

const struct gantry_cmd gantry_drill_cmds[] = {
    {"drill", "leader-loss", DRILL_ARGS,
     "kill the Raft leader's replica under a load of writes and reads, start it again, and report the time "
     "without acknowledged writes (RTO), acknowledged writes lost (RPO), client errors and the timeline; "
     "--kill-cmd/--start-cmd run with GANTRY_DRILL_MEMBER (replica id), _ID, _ADDRESS and _API set; exit 1 "
     "when a write was lost or the cluster did not recover",
     DRILL_EXAMPLE("leader-loss"), leader_loss, false},
    {"drill", "minority-loss", DRILL_ARGS, "the same drill, killing one voter that does not lead",
     DRILL_EXAMPLE("minority-loss"), minority_loss, false},
    {"drill", "quorum-loss", DRILL_ARGS,
     "the same drill, killing a majority of the voters (the leader among them): writes stop until they are "
     "started again",
     DRILL_EXAMPLE("quorum-loss"), quorum_loss, false},
    {"drill", "standby-promotion",
     "--kill-cmd CMD --promote-cmd CMD [--before-ms MS] [--down-ms MS] [--settle-ms MS] [--after-ms MS] "
     "[--writers N] [--rate N] [--report FILE] [--keep]",
     "kill every member outside the standby site under load, wait --down-ms, run --promote-cmd once for the "
     "standby site (GANTRY_DRILL_MEMBER* name its first member; GANTRY_DRILL_MEMBERS, _IDS and _ADDRESSES "
     "list "
     "them all), wait until the standby site is the cluster and votes, and report RTO, RPO and whether every "
     "lost write was acknowledged in the last 2 s before the fault (the documented promise); exit 1 when "
     "not, "
     "or when the standby site did not take over",
     "gantry drill standby-promotion --kill-cmd 'tools/dev-cluster.sh kill $GANTRY_DRILL_MEMBER' \\\n"
     "    --promote-cmd 'tools/dev-cluster.sh promote' --report drill.json",
     standby_promotion, false},
    {"drill", "restore",
     "--kill-cmd CMD --backup-cmd CMD --restore-cmd CMD [--before-ms MS] [--down-ms MS] [--settle-ms MS] "
     "[--after-ms MS] [--writers N] [--rate N] [--report FILE] [--keep]",
     "under load, run --backup-cmd once to write a backup to $GANTRY_DRILL_BACKUP, kill every member, wait "
     "--down-ms, run --restore-cmd once to make the cluster again from that file (GANTRY_DRILL_MEMBERS, _IDS "
     "and _ADDRESSES list the members), wait until it is whole and takes writes, and report RTO, the writes "
     "lost after the backup (expected) and whether any acknowledged before it was lost (exit 1 then, or when "
     "the backup failed or the cluster did not come back)",
     "gantry drill restore --kill-cmd 'tools/dev-cluster.sh kill $GANTRY_DRILL_MEMBER' \\\n"
     "    --backup-cmd 'gantry cluster backup \"$GANTRY_DRILL_BACKUP\" --encrypt-key-file backup.key' \\\n"
     "    --restore-cmd 'tools/dev-cluster.sh restore \"$GANTRY_DRILL_BACKUP\" backup.key' --report "
     "drill.json",
     restore_drill, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
