/* The operator console's data (server/console_feed.h).
 *
 * Happy path of a snapshot: WhoAmI (who the credential is, which roles), then the calls those roles
 * make worthwhile, each answered through the gate exactly as a network call, then one JSON object.
 * Failure modes: the credential is refused (WhoAmI UNAUTHENTICATED: the caller ends the session);
 * any other call fails (no leader during an election, a denial after a role was revoked): its
 * section is null and "errors" names the call and the status, the rest is still shown. */
#include "server/console_feed.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "gantry/v1/audit.pb-c.h"
#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/clock.h"
#include "lib/mem.h"
#include "server/grpc/status.h"

#define PAGE_SIZE       500u
#define MAX_NS_QUOTAS   16u
#define AUDIT_FIRST_MS  (15u * 60u * 1000u) /* a new view's tail starts this far back */
#define AUDIT_MAX_PAGES 4u
#define LIST_MAX_PAGES  100u /* Namespaces.List, Quotas.List: 50,000 rows at most */

/* --- One call --- */

/* Shared by the waiting thread and the completion: whoever drops the last reference frees it, so a
 * completion after the waiter gave up is harmless. */
struct vcall {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int refs;
    bool done;
    int status;
    char message[256];
    uint8_t *reply;
    size_t len;
};

static void vcall_unref(struct vcall *v)
{
    pthread_mutex_lock(&v->mu);
    bool last = --v->refs == 0;
    pthread_mutex_unlock(&v->mu);
    if (last) {
        pthread_cond_destroy(&v->cond);
        pthread_mutex_destroy(&v->mu);
        mem_free(v->reply);
        mem_free(v);
    }
}

static void vcall_done(void *data, int status, const char *message, const uint8_t *reply, size_t len)
{
    struct vcall *v = data;
    pthread_mutex_lock(&v->mu);
    v->status = status;
    snprintf(v->message, sizeof v->message, "%s", message != NULL ? message : "");
    if (reply != NULL) {
        v->reply = mem_alloc(len > 0 ? len : 1);
        memcpy(v->reply, reply, len);
        v->len = len;
    }
    v->done = true;
    pthread_cond_signal(&v->cond);
    pthread_mutex_unlock(&v->mu);
    vcall_unref(v);
}

void console_feed_call(const struct console_feed *f, const char *authorization, const char *peer,
                       const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       struct console_call *res)
{
    *resp = NULL;
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *bytes = mem_alloc(len > 0 ? len : 1);
    protobuf_c_message_pack(req, bytes);
    struct vcall *v = mem_zalloc(sizeof *v);
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cond, NULL);
    v->refs = 2;
    int rv =
        gate_call_local(f->gate, path, bytes, len, authorization, peer, CONSOLE_FEED_CALL_MS, vcall_done, v);
    mem_free(bytes);
    if (rv != 0) {
        v->refs = 1;
        vcall_unref(v);
        res->status = GRPC_STATUS_INTERNAL;
        snprintf(res->message, sizeof res->message, "%s is not a method this replica serves", path);
        return;
    }
    /* The gate answers within the call's deadline; the margin only guards against a bug there. */
    struct timespec until;
    clock_mono_deadline(&until, CONSOLE_FEED_CALL_MS + 5000);
    pthread_mutex_lock(&v->mu);
    while (!v->done && clock_cond_wait_mono(&v->cond, &v->mu, &until) == 0) {
    }
    bool done = v->done;
    res->status = done ? v->status : GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(res->message, sizeof res->message, "%s", done ? v->message : "no answer in time");
    if (done && v->status == GRPC_STATUS_OK) {
        *resp = protobuf_c_message_unpack(resp_desc, NULL, v->len,
                                          v->reply != NULL ? v->reply : (const uint8_t *)"");
        if (*resp == NULL) {
            res->status = GRPC_STATUS_INTERNAL;
            snprintf(res->message, sizeof res->message, "the answer of %s did not decode", path);
        }
    }
    pthread_mutex_unlock(&v->mu);
    vcall_unref(v);
}

/* --- JSON helpers --- */

static void set_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, json_string(v != NULL ? v : ""));
}

static void set_int(json_t *o, const char *k, int64_t v)
{
    json_object_set_new(o, k, json_integer(v));
}

/* Record that @what failed. */
static void add_error(json_t *errors, const char *what, const struct console_call *res)
{
    char line[400];
    snprintf(line, sizeof line, "%s: %s: %s", what, grpc_status_name(res->status), res->message);
    json_array_append_new(errors, json_string(line));
}

static const char *role_name(int role)
{
    switch (role) {
    case GANTRY__V1__ROLE__ROLE_PLATFORM_ADMIN:
        return "platform_admin";
    case GANTRY__V1__ROLE__ROLE_NAMESPACE_ADMIN:
        return "namespace_admin";
    case GANTRY__V1__ROLE__ROLE_AUDITOR:
        return "auditor";
    case GANTRY__V1__ROLE__ROLE_USER:
        return "user";
    default:
        return "unknown";
    }
}

static const char *phase_name(int phase)
{
    switch (phase) {
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING:
        return "PROVISIONING";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY:
        return "READY";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR:
        return "ERROR";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING:
        return "DELETING";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_STOPPED:
        return "STOPPED";
    default:
        return "UNKNOWN";
    }
}

static const char *member_role(int role)
{
    switch (role) {
    case GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER:
        return "voter";
    case GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY:
        return "standby";
    case GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_SPARE:
        return "spare";
    default:
        return "unknown";
    }
}

/* --- WhoAmI --- */

void console_feed_whoami(const struct console_feed *f, const char *authorization, const char *peer,
                         json_t **who, struct console_call *res)
{
    Gantry__V1__WhoAmIRequest req = GANTRY__V1__WHO_AM_IREQUEST__INIT;
    ProtobufCMessage *m;
    *who = NULL;
    console_feed_call(f, authorization, peer, "/gantry.v1.Principals/WhoAmI", &req.base,
                      &gantry__v1__who_am_iresponse__descriptor, &m, res);
    if (m == NULL) {
        return;
    }
    const Gantry__V1__WhoAmIResponse *r = (const void *)m;
    json_t *o = json_object();
    const Gantry__V1__Principal *p = r->principal;
    set_str(o, "id", p != NULL && p->meta != NULL ? p->meta->id : "");
    set_str(o, "name", p != NULL && p->meta != NULL ? p->meta->name : "");
    set_str(o, "kind",
            p != NULL && p->kind == GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT
                ? "service_account"
                : "user");
    set_str(o, "via", r->authenticated_via);
    json_t *roles = json_array();
    for (size_t i = 0; i < r->n_bindings; i++) {
        json_t *b = json_object();
        set_str(b, "role", role_name(r->bindings[i]->role));
        set_str(b, "namespace", r->bindings[i]->namespace_);
        json_array_append_new(roles, b);
    }
    json_object_set_new(o, "roles", roles);
    *who = o;
    protobuf_c_message_free_unpacked(m, NULL);
}

/* --- The snapshot's sections --- */

struct powers {
    bool platform_admin, auditor;
    const char *admin_ns[MAX_NS_QUOTAS]; /* namespaces the principal administers */
    unsigned n_admin;
    const char *member_ns[MAX_NS_QUOTAS]; /* namespaces it holds any role in */
    unsigned n_member;
};

static void powers_of(const json_t *who, struct powers *pw)
{
    memset(pw, 0, sizeof *pw);
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(who, "roles"), i, b)
    {
        const char *role = json_string_value(json_object_get(b, "role"));
        const char *ns = json_string_value(json_object_get(b, "namespace"));
        if (role == NULL || ns == NULL) {
            continue;
        }
        pw->platform_admin = pw->platform_admin || (strcmp(role, "platform_admin") == 0 && ns[0] == '\0');
        pw->auditor = pw->auditor || (strcmp(role, "auditor") == 0 && ns[0] == '\0');
        if (ns[0] != '\0' && strcmp(role, "namespace_admin") == 0 && pw->n_admin < MAX_NS_QUOTAS) {
            pw->admin_ns[pw->n_admin++] = ns;
        }
        bool dup = false;
        for (unsigned k = 0; k < pw->n_member; k++) {
            dup = dup || strcmp(pw->member_ns[k], ns) == 0;
        }
        if (ns[0] != '\0' && !dup && pw->n_member < MAX_NS_QUOTAS) {
            pw->member_ns[pw->n_member++] = ns;
        }
    }
}

bool console_feed_stopping(const struct console_feed *f)
{
    return f->stop != NULL && atomic_load(f->stop);
}

bool console_feed_platform_admin(const json_t *who)
{
    struct powers pw;
    powers_of(who, &pw);
    return pw.platform_admin;
}

static json_t *cluster_section(const struct console_feed *f, const char *auth, const char *peer,
                               json_t *errors)
{
    struct console_call res;
    ProtobufCMessage *m;
    Gantry__V1__ListMembersRequest lreq = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
    console_feed_call(f, auth, peer, "/gantry.v1.Cluster/ListMembers", &lreq.base,
                      &gantry__v1__list_members_response__descriptor, &m, &res);
    if (m == NULL) {
        add_error(errors, "Cluster.ListMembers", &res);
        return json_null();
    }
    const Gantry__V1__ListMembersResponse *r = (const void *)m;
    json_t *c = json_object();
    json_t *members = json_array();
    uint64_t leader = 0;
    for (size_t i = 0; i < r->n_members; i++) {
        const Gantry__V1__Member *x = r->members[i];
        json_t *o = json_object();
        set_int(o, "id", (int64_t)x->id);
        set_str(o, "name", x->name);
        set_str(o, "address", x->address);
        set_str(o, "api_address", x->api_address);
        set_str(o, "role", member_role(x->role));
        json_object_set_new(o, "reachable", json_boolean(x->reachable));
        json_object_set_new(o, "leader", json_boolean(x->leader));
        set_str(o, "failure_domain", x->failure_domain);
        set_int(o, "last_contact_ms", x->last_contact_ms);
        if (x->lag_known) {
            set_int(o, "lag_entries", x->lag_entries); /* absent: not measured recently */
        }
        json_array_append_new(members, o);
        leader = x->leader ? x->id : leader;
    }
    json_object_set_new(c, "members", members);
    set_int(c, "leader_id", (int64_t)leader);
    set_int(c, "revision", (int64_t)r->revision);
    protobuf_c_message_free_unpacked(m, NULL);

    Gantry__V1__GetHealthRequest hreq = GANTRY__V1__GET_HEALTH_REQUEST__INIT;
    console_feed_call(f, auth, peer, "/gantry.v1.Cluster/GetHealth", &hreq.base,
                      &gantry__v1__cluster_health__descriptor, &m, &res);
    if (m == NULL) {
        add_error(errors, "Cluster.GetHealth", &res);
    } else {
        const Gantry__V1__ClusterHealth *h = (const void *)m;
        json_object_set_new(c, "healthy", json_boolean(h->healthy));
        json_t *problems = json_array();
        for (size_t i = 0; i < h->n_problems; i++) {
            json_array_append_new(problems, json_string(h->problems[i]));
        }
        json_object_set_new(c, "problems", problems);
        set_str(c, "cluster_id", h->cluster_id);
        set_str(c, "gateway_id", h->gateway_id);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return c;
}

static json_t *lease_section(const struct console_feed *f, const char *auth, const char *peer, json_t *errors)
{
    struct console_call res;
    ProtobufCMessage *m;
    Gantry__V1__GetLeaseRequest req = GANTRY__V1__GET_LEASE_REQUEST__INIT;
    console_feed_call(f, auth, peer, "/gantry.v1.Cluster/GetLease", &req.base, &gantry__v1__lease__descriptor,
                      &m, &res);
    if (m == NULL) {
        if (res.status != GRPC_STATUS_NOT_FOUND) {
            add_error(errors, "Cluster.GetLease", &res);
        }
        return json_null();
    }
    const Gantry__V1__Lease *l = (const void *)m;
    json_t *o = json_object();
    set_str(o, "name", l->name);
    set_str(o, "holder", l->holder);
    set_int(o, "epoch", (int64_t)l->epoch);
    set_int(o, "renewed_at_ms", l->renewed_at_ms);
    set_int(o, "duration_ms", (int64_t)l->duration_ms);
    protobuf_c_message_free_unpacked(m, NULL);
    return o;
}

/* The namespace object for @ns in @byname, made if new. */
static json_t *ns_entry(json_t *byname, const char *ns)
{
    json_t *o = json_object_get(byname, ns);
    if (o == NULL) {
        o = json_object();
        set_str(o, "name", ns);
        json_t *phases = json_object();
        for (int p = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING;
             p <= GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_UNKNOWN; p++) {
            set_int(phases, phase_name(p), 0);
        }
        json_object_set_new(o, "phases", phases);
        json_object_set_new(o, "sandboxes", json_array());
        json_object_set_new(o, "quota", json_null());
        json_object_set_new(byname, ns, o);
    }
    return o;
}

/* Keep @next (a reply's next_page_token) in @token for the next page. Returns whether there is one. */
static bool next_page(char *token, size_t cap, const char *next)
{
    bool more = next != NULL && next[0] != '\0' && strlen(next) < cap;
    if (more) {
        snprintf(token, cap, "%s", next);
    }
    return more;
}

/* The next_page_token of any List reply (every one has the field). */
static const char *next_token_of(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "next_page_token");
    return fd != NULL ? *(char *const *)(const void *)((const char *)m + fd->offset) : NULL;
}

/* Read a List call page by page (at most @max_pages, PAGE_SIZE each; @page is @req's page field,
 * filled here): every reply goes to @each, which returns false once it wants no more. Stops early
 * when the feed stops. True when @each stopped while pages remained; false otherwise, a failed
 * call included (added to @errors under @what). */
static bool list_pages(const struct console_feed *f, const char *auth, const char *peer, const char *method,
                       const char *what, ProtobufCMessage *req, Gantry__V1__PageRequest *page,
                       const ProtobufCMessageDescriptor *resp, unsigned max_pages,
                       bool (*each)(const ProtobufCMessage *m, void *arg), void *arg, json_t *errors)
{
    char token[256] = "";
    page->page_size = PAGE_SIZE;
    page->page_token = token;
    bool cut = false;
    for (unsigned pages = 0; pages < max_pages && !console_feed_stopping(f); pages++) {
        struct console_call res;
        ProtobufCMessage *m;
        console_feed_call(f, auth, peer, method, req, resp, &m, &res);
        if (m == NULL) {
            add_error(errors, what, &res);
            break;
        }
        bool go_on = each(m, arg);
        bool more = next_page(token, sizeof token, next_token_of(m));
        protobuf_c_message_free_unpacked(m, NULL);
        if (!more || !go_on) {
            cut = more;
            break;
        }
    }
    page->page_token = NULL; /* @token ends here */
    return cut;
}

static bool namespaces_page(const ProtobufCMessage *m, void *byname)
{
    const Gantry__V1__ListNamespacesResponse *r = (const void *)m;
    for (size_t i = 0; i < r->n_namespaces; i++) {
        if (r->namespaces[i]->meta != NULL) {
            ns_entry(byname, r->namespaces[i]->meta->name);
        }
    }
    return true;
}

/* Every namespace the principal may list, page by page (at most LIST_MAX_PAGES pages). */
static void namespaces_list(const struct console_feed *f, const char *auth, const char *peer, json_t *byname,
                            json_t *errors)
{
    Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
    Gantry__V1__ListNamespacesRequest req = GANTRY__V1__LIST_NAMESPACES_REQUEST__INIT;
    req.page = &page;
    (void)list_pages(f, auth, peer, "/gantry.v1.Namespaces/List", "Namespaces.List", &req.base, &page,
                     &gantry__v1__list_namespaces_response__descriptor, LIST_MAX_PAGES, namespaces_page,
                     byname, errors);
}

struct sandboxes_read {
    json_t *byname;
    size_t total;
};

static bool sandboxes_page(const ProtobufCMessage *m, void *arg)
{
    struct sandboxes_read *sr = arg;
    const Gantry__V1__ListSandboxesResponse *r = (const void *)m;
    for (size_t i = 0; i < r->n_sandboxes && sr->total < CONSOLE_FEED_MAX_SANDBOXES; i++, sr->total++) {
        const Gantry__V1__Sandbox *s = r->sandboxes[i];
        if (s->meta == NULL) {
            continue;
        }
        json_t *ns = ns_entry(sr->byname, s->meta->namespace_);
        int phase = s->status != NULL ? (int)s->status->phase : 0;
        json_t *phases = json_object_get(ns, "phases");
        set_int(phases, phase_name(phase),
                json_integer_value(json_object_get(phases, phase_name(phase))) + 1);
        json_t *o = json_object();
        set_str(o, "name", s->meta->name);
        set_str(o, "phase", phase_name(phase));
        set_str(o, "owner_id", s->spec != NULL ? s->spec->owner_id : "");
        set_int(o, "gpus", s->spec != NULL ? s->spec->gpu_count : 0);
        set_str(o, "image", s->spec != NULL ? s->spec->image : "");
        set_int(o, "created_at_ms", s->meta->created_at_ms);
        set_int(o, "expires_at_ms", s->status != NULL ? s->status->expires_at_ms : 0);
        json_array_append_new(json_object_get(ns, "sandboxes"), o);
    }
    return sr->total < CONSOLE_FEED_MAX_SANDBOXES;
}

/* Every sandbox the principal may read, by namespace (at most CONSOLE_FEED_MAX_SANDBOXES). Returns
 * whether the list was cut there. */
static bool sandboxes_list(const struct console_feed *f, const char *auth, const char *peer, json_t *byname,
                           json_t *errors)
{
    Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
    Gantry__V1__ListSandboxesRequest req = GANTRY__V1__LIST_SANDBOXES_REQUEST__INIT;
    req.page = &page;
    struct sandboxes_read sr = {.byname = byname};
    return list_pages(f, auth, peer, "/gantry.v1.Sandboxes/List", "Sandboxes.List", &req.base, &page,
                      &gantry__v1__list_sandboxes_response__descriptor, UINT_MAX, sandboxes_page, &sr,
                      errors);
}

static json_t *quota_json(const Gantry__V1__GetQuotaResponse *q)
{
    json_t *o = json_object();
    json_t *used = json_object(), *limit = json_object();
    set_int(used, "sandboxes", q->usage != NULL ? q->usage->sandboxes : 0);
    set_int(used, "gpus", q->usage != NULL ? q->usage->gpus : 0);
    uint32_t ls = q->quota != NULL ? q->quota->max_concurrent_sandboxes : 0;
    uint32_t lg = q->quota != NULL ? q->quota->max_gpus : 0;
    if (q->ceiling != NULL) {
        uint32_t cs = q->ceiling->max_concurrent_sandboxes, cg = q->ceiling->max_gpus;
        ls = ls == 0 ? cs : (cs != 0 && cs < ls ? cs : ls);
        lg = lg == 0 ? cg : (cg != 0 && cg < lg ? cg : lg);
    }
    set_int(limit, "sandboxes", ls); /* 0: no limit */
    set_int(limit, "gpus", lg);
    json_object_set_new(o, "used", used);
    json_object_set_new(o, "limit", limit);
    set_str(o, "mode",
            q->quota == NULL                                            ? ""
            : q->quota->mode == GANTRY__V1__QUOTA_MODE__QUOTA_MODE_SOFT ? "soft"
                                                                        : "hard");
    return o;
}

static bool quotas_page(const ProtobufCMessage *m, void *byname)
{
    const Gantry__V1__ListQuotasResponse *r = (const void *)m;
    for (size_t i = 0; i < r->n_quotas; i++) {
        const Gantry__V1__GetQuotaResponse *q = r->quotas[i];
        const char *ns = q->quota != NULL && q->quota->meta != NULL       ? q->quota->meta->namespace_
                         : q->ceiling != NULL && q->ceiling->meta != NULL ? q->ceiling->meta->namespace_
                                                                          : "";
        if (ns[0] != '\0') {
            json_object_set_new(ns_entry(byname, ns), "quota", quota_json(q));
        }
    }
    return true;
}

static void quotas(const struct console_feed *f, const char *auth, const char *peer, const struct powers *pw,
                   json_t *byname, json_t *errors)
{
    struct console_call res;
    ProtobufCMessage *m;
    if (pw->platform_admin || pw->auditor) {
        Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
        Gantry__V1__ListQuotasRequest req = GANTRY__V1__LIST_QUOTAS_REQUEST__INIT;
        req.page = &page;
        (void)list_pages(f, auth, peer, "/gantry.v1.Quotas/List", "Quotas.List", &req.base, &page,
                         &gantry__v1__list_quotas_response__descriptor, LIST_MAX_PAGES, quotas_page, byname,
                         errors);
        return;
    }
    for (unsigned i = 0; i < pw->n_member; i++) {
        Gantry__V1__GetQuotaRequest req = GANTRY__V1__GET_QUOTA_REQUEST__INIT;
        req.namespace_ = (char *)pw->member_ns[i];
        console_feed_call(f, auth, peer, "/gantry.v1.Quotas/Get", &req.base,
                          &gantry__v1__get_quota_response__descriptor, &m, &res);
        if (m == NULL) {
            add_error(errors, "Quotas.Get", &res);
            continue;
        }
        json_object_set_new(ns_entry(byname, pw->member_ns[i]), "quota", quota_json((const void *)m));
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

static json_t *event_json(const Gantry__V1__AuditEvent *e)
{
    json_t *o = json_object();
    set_int(o, "id", (int64_t)e->id);
    set_int(o, "time_ms", e->time_ms);
    set_int(o, "class_uid", e->class_uid);
    set_str(o, "operation", e->api_operation);
    set_str(o, "namespace", e->namespace_);
    set_str(o, "actor_id", e->actor_principal_id);
    set_str(o, "actor_name", e->actor_name);
    set_str(o, "resource_type", e->resource_type);
    set_str(o, "resource_name", e->resource_name);
    set_str(o, "status", e->status);
    set_str(o, "status_detail", e->status_detail);
    set_str(o, "source", e->source_endpoint);
    set_str(o, "replica_id", e->replica_id);
    return o;
}

/* The audit tail under @filter, continued from @view. */
static json_t *audit_section(const struct console_feed *f, const char *auth, const char *peer,
                             const struct powers *pw, const struct console_filter *filter,
                             struct console_view *view, json_t *errors)
{
    json_t *o = json_object();
    json_t *fo = json_object();
    set_str(fo, "namespace", filter->ns);
    set_str(fo, "operation", filter->op);
    set_str(fo, "status", filter->status);
    set_str(fo, "actor", filter->actor);
    json_object_set_new(o, "filter", fo);
    /* The audit log needs a global role, or namespace_admin of the namespace asked for (the first
     * one administered when none is asked for). */
    const char *ns = filter->ns;
    bool may = pw->platform_admin || pw->auditor;
    for (unsigned i = 0; !may && i < pw->n_admin; i++) {
        may = ns[0] == '\0' || strcmp(ns, pw->admin_ns[i]) == 0;
    }
    if (!may) {
        json_object_set_new(o, "permitted", json_false());
        json_object_set_new(o, "events", json_array());
        return o;
    }
    if (ns[0] == '\0' && !pw->platform_admin && !pw->auditor) {
        ns = pw->admin_ns[0];
    }
    json_object_set_new(o, "permitted", json_true());
    set_str(fo, "namespace", ns);
    if (view->events == NULL) {
        view->events = json_array();
        view->last_ms = (int64_t)clock_system()->wall_ms(clock_system()) - AUDIT_FIRST_MS;
        view->last_id = 0;
    }
    char token[256] = "";
    for (unsigned pages = 0; pages < AUDIT_MAX_PAGES && !console_feed_stopping(f); pages++) {
        struct console_call res;
        ProtobufCMessage *m;
        Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
        page.page_size = PAGE_SIZE;
        page.page_token = token;
        Gantry__V1__QueryAuditRequest req = GANTRY__V1__QUERY_AUDIT_REQUEST__INIT;
        req.start_ms = view->last_ms;
        req.namespace_ = (char *)ns;
        req.api_operation = (char *)filter->op;
        req.status = (char *)filter->status;
        req.actor_principal_id = (char *)filter->actor;
        req.page = &page;
        console_feed_call(f, auth, peer, "/gantry.v1.Audit/Query", &req.base,
                          &gantry__v1__query_audit_response__descriptor, &m, &res);
        if (m == NULL) {
            add_error(errors, "Audit.Query", &res);
            break;
        }
        const Gantry__V1__QueryAuditResponse *r = (const void *)m;
        for (size_t i = 0; i < r->n_events; i++) {
            const Gantry__V1__AuditEvent *e = r->events[i];
            if (e->id <= view->last_id) {
                continue; /* shown before (the query starts at the last event's time, inclusive) */
            }
            json_array_append_new(view->events, event_json(e));
            view->last_id = e->id;
            view->last_ms = e->time_ms > view->last_ms ? e->time_ms : view->last_ms;
        }
        while (json_array_size(view->events) > CONSOLE_FEED_AUDIT_TAIL) {
            json_array_remove(view->events, 0);
        }
        bool more = r->next_page_token[0] != '\0' && strlen(r->next_page_token) < sizeof token;
        if (more) {
            snprintf(token, sizeof token, "%s", r->next_page_token);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (!more) {
            break;
        }
    }
    json_object_set(o, "events", view->events);
    return o;
}

void console_view_free(struct console_view *v)
{
    json_decref(v->who);
    json_decref(v->events);
    memset(v, 0, sizeof *v);
}

json_t *console_feed_snapshot(const struct console_feed *f, const char *authorization, const char *peer,
                              const struct console_filter *filter, struct console_view *view,
                              struct console_call *res)
{
    json_t *errors = json_array();
    json_t *who = NULL;
    console_feed_whoami(f, authorization, peer, &who, res);
    if (who == NULL && (res->status == GRPC_STATUS_UNAUTHENTICATED || view->who == NULL)) {
        json_decref(errors);
        return NULL;
    }
    if (who != NULL) {
        json_decref(view->who);
        view->who = who;
    } else {
        add_error(errors, "Principals.WhoAmI", res); /* e.g. no leader for a moment: the last answer stands */
    }
    res->status = GRPC_STATUS_OK;
    res->message[0] = '\0';
    struct powers pw;
    powers_of(view->who, &pw);
    json_t *snap = json_object();
    set_str(snap, "type", "snapshot");
    set_int(snap, "at_ms", (int64_t)clock_system()->wall_ms(clock_system()));
    json_t *replica = json_object();
    set_int(replica, "id", (int64_t)f->replica_id);
    set_str(replica, "name", f->replica_name);
    json_object_set_new(snap, "replica", replica);
    json_object_set(snap, "principal", view->who);
    if (pw.platform_admin && !console_feed_stopping(f)) {
        json_object_set_new(snap, "cluster", cluster_section(f, authorization, peer, errors));
        json_object_set_new(snap, "lease", lease_section(f, authorization, peer, errors));
    } else {
        json_object_set_new(snap, "cluster", json_null());
        json_object_set_new(snap, "lease", json_null());
    }
    json_t *byname = json_object();
    bool cut = false;
    if (!console_feed_stopping(f)) {
        namespaces_list(f, authorization, peer, byname, errors);
    }
    if (!console_feed_stopping(f)) {
        cut = sandboxes_list(f, authorization, peer, byname, errors);
    }
    if (!console_feed_stopping(f)) {
        quotas(f, authorization, peer, &pw, byname, errors);
    }
    json_t *nss = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(byname, k, v)
    {
        json_array_append(nss, v);
    }
    json_decref(byname);
    json_object_set_new(snap, "namespaces", nss);
    json_object_set_new(snap, "sandboxes_truncated", json_boolean(cut));
    json_object_set_new(snap, "audit", audit_section(f, authorization, peer, &pw, filter, view, errors));
    json_object_set_new(snap, "errors", errors);
    if (console_feed_stopping(f)) {
        /* Sections were skipped: not a snapshot to show. */
        json_decref(snap);
        res->status = GRPC_STATUS_UNAVAILABLE;
        snprintf(res->message, sizeof res->message, "the replica is stopping");
        return NULL;
    }
    return snap;
}
