/* gantry cluster top: a terminal view of the cluster's live state for operators without a browser
 * (docs/cli.md, "cluster top"; the same data as the operator console, docs/console.md).
 *
 * Every frame is fetched anew through the API with the caller's credential, so it shows exactly
 * what the API lets that principal see: the cluster's health, the reconciler lease and the members
 * for a Platform Admin (Cluster.GetHealth, GetLease, ListMembers), and for everyone the namespaces
 * they may read (Namespaces.List) with their sandboxes by phase (Sandboxes.List) and quota use
 * (Quotas.List, and Quotas.Get for the namespaces it does not cover: those without a quota, or all
 * of them when the caller may not list every quota; at most 16 per frame). A section the
 * API refuses says so ("not permitted"); one no replica answered ("no answer") keeps the frame going,
 * so the view carries on through an election. Calls are not retried within a frame: the next frame
 * is the retry.
 *
 * On a terminal the screen is redrawn in place every --interval-ms; otherwise frames follow one
 * another, each opening with its "gantry cluster top" line. --once prints one frame, --count N
 * prints N; without either it runs until interrupted. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "server/grpc/status.h"
#include "tools/gantry.h"

#define TOP_MAX_NS     256u /* namespaces shown; more are counted in the last line */
#define TOP_MAX_QUOTAS 16u  /* Quotas.Get calls per frame for namespaces Quotas.List did not cover */

static const char *const phases[] = {"PROVISIONING", "READY", "ERROR", "DELETING", "STOPPED", "UNKNOWN"};
#define N_PHASES (sizeof phases / sizeof phases[0])

struct top_ns {
    const char *name; /* borrowed from the frame's JSON */
    unsigned phase[N_PHASES];
    unsigned sandboxes;
    uint64_t gpus;
    bool has_quota; /* a usage row came back */
    int64_t used_sb, used_gpus, max_sb, max_gpus;
};

/* One section of a frame: the reply as JSON, or why there is none. */
struct top_part {
    json_t *doc;
    int status; /* 0: answered; a gRPC status; -1: no replica answered */
    int rc;     /* the GANTRY_EXIT_* code of the call */
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* One call; for a list (@items non-NULL) gantry_call_json follows next_page_token through every page,
 * so the counts cover every item, not the first page of 100. */
static struct top_part fetch(struct cli *c, const char *path, ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp, const char *items)
{
    struct top_part p = {NULL, 0, 0};
    c->last_status = -1;
    if ((p.rc = gantry_call_json(c, path, req, resp, items, &p.doc)) != 0) {
        p.doc = NULL;
        p.status = c->last_status > 0 ? c->last_status : -1;
    }
    return p;
}

static const char *why(const struct top_part *p)
{
    return p->status == GRPC_STATUS_PERMISSION_DENIED ? "not permitted"
           : p->status < 0                            ? "no answer (no replica answered)"
                                                      : grpc_status_name(p->status);
}

static int64_t num(json_t *doc, const char *path)
{
    json_t *v = gantry_json_path(doc, path);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static const char *str(json_t *doc, const char *path)
{
    json_t *v = gantry_json_path(doc, path);
    return json_is_string(v) ? json_string_value(v) : "";
}

static void ago(char *out, size_t len, int64_t ms, int64_t now)
{
    if (ms <= 0) {
        snprintf(out, len, "never");
    } else if (now - ms < 60000) {
        snprintf(out, len, "%.1f s ago", (double)(now > ms ? now - ms : 0) / 1000.0);
    } else {
        snprintf(out, len, "%" PRId64 " min ago", (now - ms) / 60000);
    }
}

static void print_cluster(struct top_part *health, struct top_part *lease, struct top_part *members,
                          int64_t now)
{
    if (health->doc == NULL) {
        printf("cluster: %s\n", why(health));
    } else {
        json_t *h = health->doc;
        printf("cluster: %s; leader %" PRId64 "; %" PRId64 " members (%" PRId64 " voters, %" PRId64
               " reachable; %" PRId64 " standbys); revision %" PRId64 "\n",
               json_is_true(json_object_get(h, "healthy")) ? "healthy" : "UNHEALTHY", num(h, "leader_id"),
               num(h, "members"), num(h, "voters"), num(h, "voters_reachable"), num(h, "standbys"),
               num(h, "revision"));
        json_t *probs = json_object_get(h, "problems");
        for (size_t i = 0; i < json_array_size(probs); i++) {
            printf("  problem: %s\n", json_string_value(json_array_get(probs, i)));
        }
    }
    if (lease->doc == NULL) {
        printf("lease: %s\n", why(lease));
    } else {
        char when[32];
        ago(when, sizeof when, num(lease->doc, "renewed_at_ms"), now);
        const char *holder = str(lease->doc, "holder");
        printf("lease: %s, epoch %" PRId64 ", renewed %s, duration %" PRId64 " ms\n",
               holder[0] != '\0' ? holder : "(none)", num(lease->doc, "epoch"), when,
               num(lease->doc, "duration_ms"));
    }
    if (members->doc == NULL) {
        printf("members: %s\n", why(members));
        return;
    }
    printf("\n%-4s %-16s %-8s %-7s %-10s %-14s %-8s %s\n", "ID", "NAME", "ROLE", "LEADER", "REACHABLE",
           "LAST CONTACT", "LAG", "API ADDRESS");
    json_t *ms = json_object_get(members->doc, "members");
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        char role[16], when[32];
        const char *r = str(m, "role");
        snprintf(role, sizeof role, "%s", strncmp(r, "MEMBER_ROLE_", 12) == 0 ? r + 12 : r);
        for (char *p = role; *p != '\0'; p++) {
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        }
        ago(when, sizeof when, num(m, "last_contact_ms"), now);
        char lag[24] = "-"; /* not measured recently */
        if (json_is_true(json_object_get(m, "lag_known"))) {
            snprintf(lag, sizeof lag, "%" PRId64, num(m, "lag_entries"));
        }
        printf("%-4" PRId64 " %-16s %-8s %-7s %-10s %-14s %-8s %s\n", num(m, "id"), str(m, "name"), role,
               json_is_true(json_object_get(m, "leader")) ? "leader" : "",
               json_is_true(json_object_get(m, "reachable")) ? "yes" : "NO", when, lag,
               str(m, "api_address"));
    }
}

static struct top_ns *find_ns(struct top_ns *ns, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(ns[i].name, name) == 0) {
            return &ns[i];
        }
    }
    return NULL;
}

static void quota_row(struct top_ns *t, json_t *q)
{
    t->has_quota = json_object_get(q, "usage") != NULL;
    t->used_sb = num(q, "usage.sandboxes");
    t->used_gpus = num(q, "usage.gpus");
    t->max_sb = num(q, "quota.max_concurrent_sandboxes");
    t->max_gpus = num(q, "quota.max_gpus");
}

static void use(char *out, size_t len, const struct top_ns *t, int64_t used, int64_t max)
{
    if (!t->has_quota) {
        snprintf(out, len, "-");
    } else if (max > 0) {
        snprintf(out, len, "%" PRId64 "/%" PRId64, used, max);
    } else {
        snprintf(out, len, "%" PRId64 "/-", used);
    }
}

/* The namespaces part: returns the status of Namespaces.List (0 when it answered). */
static int print_namespaces(struct cli *c, json_t **keep, unsigned *n_keep)
{
    Gantry__V1__ListNamespacesRequest nreq = GANTRY__V1__LIST_NAMESPACES_REQUEST__INIT;
    struct top_part nsl = fetch(c, "/gantry.v1.Namespaces/List", &nreq.base,
                                &gantry__v1__list_namespaces_response__descriptor, "namespaces");
    if (nsl.doc == NULL) {
        printf("\nnamespaces: %s\n", why(&nsl));
        return nsl.status;
    }
    keep[(*n_keep)++] = nsl.doc;
    json_t *list = json_object_get(nsl.doc, "namespaces");
    unsigned n = 0, more = 0;
    struct top_ns *ns = calloc(TOP_MAX_NS, sizeof *ns);
    if (ns == NULL) {
        fprintf(stderr, "gantry: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        if (n < TOP_MAX_NS) {
            ns[n++].name = str(json_array_get(list, i), "meta.name");
        } else {
            more++;
        }
    }
    /* Sandboxes of every namespace the caller may read. */
    Gantry__V1__ListSandboxesRequest sreq = GANTRY__V1__LIST_SANDBOXES_REQUEST__INIT;
    sreq.namespace_ = "";
    struct top_part sbs = fetch(c, "/gantry.v1.Sandboxes/List", &sreq.base,
                                &gantry__v1__list_sandboxes_response__descriptor, "sandboxes");
    if (sbs.doc != NULL) {
        keep[(*n_keep)++] = sbs.doc;
        json_t *arr = json_object_get(sbs.doc, "sandboxes");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *s = json_array_get(arr, i);
            struct top_ns *t = find_ns(ns, n, str(s, "meta.namespace"));
            if (t == NULL) {
                continue;
            }
            const char *ph = str(s, "status.phase");
            ph = strncmp(ph, "PHASE_", 6) == 0 ? ph + 6 : ph;
            for (unsigned k = 0; k < N_PHASES; k++) {
                t->phase[k] += strcmp(ph, phases[k]) == 0;
            }
            t->sandboxes++;
            t->gpus += (uint64_t)num(s, "spec.gpu_count");
        }
    }
    /* Quota use: every quota at once when the caller may, else namespace by namespace. */
    Gantry__V1__ListQuotasRequest qreq = GANTRY__V1__LIST_QUOTAS_REQUEST__INIT;
    struct top_part ql = fetch(c, "/gantry.v1.Quotas/List", &qreq.base,
                               &gantry__v1__list_quotas_response__descriptor, "quotas");
    if (ql.doc != NULL) {
        keep[(*n_keep)++] = ql.doc;
        json_t *arr = json_object_get(ql.doc, "quotas");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *q = json_array_get(arr, i);
            struct top_ns *t = find_ns(ns, n, str(q, "usage.namespace"));
            if (t != NULL) {
                quota_row(t, q);
            }
        }
    }
    /* Quotas.List has no row for a namespace without a quota, and a caller without global read
     * may not call it: their usage comes from Quotas.Get, for a bounded number per frame. */
    if (ql.doc != NULL || ql.status == GRPC_STATUS_PERMISSION_DENIED) {
        for (unsigned i = 0, asked = 0; i < n && asked < TOP_MAX_QUOTAS; i++) {
            if (ns[i].has_quota) {
                continue;
            }
            asked++;
            Gantry__V1__GetQuotaRequest g = GANTRY__V1__GET_QUOTA_REQUEST__INIT;
            g.namespace_ = (char *)ns[i].name;
            json_t *q = NULL;
            if (gantry_call_json(c, "/gantry.v1.Quotas/Get", &g.base,
                                 &gantry__v1__get_quota_response__descriptor, NULL, &q) == 0) {
                quota_row(&ns[i], q);
                json_decref(q);
            }
        }
    }
    printf("\n%-20s %9s", "NAMESPACE", "SANDBOXES");
    for (unsigned k = 0; k < N_PHASES; k++) {
        printf(" %*s", (int)strlen(phases[k]), phases[k]);
    }
    printf(" %5s %15s %10s\n", "GPUS", "QUOTA SANDBOXES", "QUOTA GPUS");
    for (unsigned i = 0; i < n; i++) {
        char qs[48], qg[48];
        use(qs, sizeof qs, &ns[i], ns[i].used_sb, ns[i].max_sb);
        use(qg, sizeof qg, &ns[i], ns[i].used_gpus, ns[i].max_gpus);
        printf("%-20s %9u", ns[i].name, ns[i].sandboxes);
        for (unsigned k = 0; k < N_PHASES; k++) {
            printf(" %*u", (int)strlen(phases[k]), ns[i].phase[k]);
        }
        printf(" %5" PRIu64 " %15s %10s\n", ns[i].gpus, qs, qg);
    }
    if (more > 0) {
        printf("(%u more namespaces not shown)\n", more);
    }
    if (sbs.doc == NULL) {
        printf("sandboxes: %s\n", why(&sbs));
    }
    free(ns);
    return 0;
}

/* One frame on stdout. Returns 0; GANTRY_EXIT_DENIED (the credential refused), GANTRY_EXIT_USAGE
 * (no endpoint or CA to call) or GANTRY_EXIT_FAILED (stdout cannot be written), which end the view;
 * or GANTRY_EXIT_UNAVAILABLE (nothing answered: the view goes on). */
static int frame(struct cli *c, unsigned interval_ms, bool tty)
{
    int64_t now = wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    char stamp[32];
    gmtime_r(&secs, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    Gantry__V1__GetHealthRequest hreq = GANTRY__V1__GET_HEALTH_REQUEST__INIT;
    Gantry__V1__GetLeaseRequest lreq = GANTRY__V1__GET_LEASE_REQUEST__INIT;
    Gantry__V1__ListMembersRequest mreq = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
    lreq.name = "";
    /* Fetch everything first, then draw, so a redraw is one quick burst of output. */
    struct top_part health =
        fetch(c, "/gantry.v1.Cluster/GetHealth", &hreq.base, &gantry__v1__cluster_health__descriptor, NULL);
    if (health.status == GRPC_STATUS_UNAUTHENTICATED) {
        fprintf(stderr, "gantry: the credential was refused (UNAUTHENTICATED)\n");
        return GANTRY_EXIT_DENIED;
    }
    if (health.rc == GANTRY_EXIT_USAGE) {
        return GANTRY_EXIT_USAGE; /* no endpoint or CA configured: gantry_call said so */
    }
    struct top_part lease = {NULL, health.status, health.rc}, members = {NULL, health.status, health.rc};
    if (health.status != GRPC_STATUS_PERMISSION_DENIED) {
        lease = fetch(c, "/gantry.v1.Cluster/GetLease", &lreq.base, &gantry__v1__lease__descriptor, NULL);
        members = fetch(c, "/gantry.v1.Cluster/ListMembers", &mreq.base,
                        &gantry__v1__list_members_response__descriptor, NULL);
    }
    if (tty) {
        fputs("\033[H\033[2J", stdout);
    }
    printf("gantry cluster top  %s  every %.1f s\n", stamp, (double)interval_ms / 1000.0);
    print_cluster(&health, &lease, &members, now);
    json_t *keep[4];
    unsigned n_keep = 0;
    int ns_status = print_namespaces(c, keep, &n_keep);
    if (!tty) {
        printf("\n");
    }
    bool out_ok = fflush(stdout) == 0 && !ferror(stdout);
    for (unsigned i = 0; i < n_keep; i++) {
        json_decref(keep[i]);
    }
    json_decref(health.doc);
    json_decref(lease.doc);
    json_decref(members.doc);
    if (ns_status == GRPC_STATUS_UNAUTHENTICATED) {
        fprintf(stderr, "gantry: the credential was refused (UNAUTHENTICATED)\n");
        return GANTRY_EXIT_DENIED;
    }
    if (!out_ok) {
        return GANTRY_EXIT_FAILED; /* stdout is gone (a closed pipe): nobody is watching */
    }
    return health.status < 0 && ns_status < 0 ? GANTRY_EXIT_UNAVAILABLE : 0;
}

int gantry_cluster_top(struct cli *c, int argc, char **argv)
{
    uint64_t interval = 1000, count = 0;
    bool once = gantry_flag(&argc, argv, "--once");
    if (gantry_u64("--interval-ms", gantry_opt(&argc, argv, "--interval-ms"), 60000, &interval) != 0 ||
        gantry_u64("--count", gantry_opt(&argc, argv, "--count"), UINT32_MAX, &count) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("cluster", "top"), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    if (interval < 100) {
        fprintf(stderr, "gantry: --interval-ms must be at least 100\n");
        return GANTRY_EXIT_USAGE;
    }
    if (c->out != GANTRY_OUT_TABLE) {
        fprintf(stderr, "gantry: cluster top draws a table only; for JSON use cluster health, members, lease "
                        "and sandbox list -o json\n");
        return GANTRY_EXIT_USAGE;
    }
    count = once ? 1 : count;
    bool tty = isatty(STDOUT_FILENO) == 1;
    /* A frame is one pass over the endpoints per call, each call bounded: the next frame is the
     * retry. A read waits for the store, so during an election it would otherwise hold the view for
     * the default 30 s deadline. */
    c->retry_ms = 0;
    /* A replica killed while a call is in flight fails that call (SIGPIPE is ignored, tools/gantry.c
     * main): the next endpoint is tried. */
    c->call_timeout_ms = interval < 2000 ? 2000 : (unsigned)interval;
    c->quiet = true;
    for (uint64_t i = 0; count == 0 || i < count; i++) {
        int64_t start = wall_ms();
        rc = frame(c, (unsigned)interval, tty);
        if (rc == GANTRY_EXIT_DENIED || rc == GANTRY_EXIT_USAGE || rc == GANTRY_EXIT_FAILED ||
            (count != 0 && i + 1 == count)) {
            return rc;
        }
        int64_t left = (int64_t)interval - (wall_ms() - start);
        if (left > 0) {
            usleep((useconds_t)left * 1000u);
        }
    }
    return rc;
}
