/* gantry.v1.Events (api/services/events_svc.h). */
#include "api/services/events_svc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/authz/authz.h"
#include "api/gate/gate.h"
#include "api/rules/principal.h"
#include "api/services/sandboxes_svc.h" /* WATCH_MAX_UNSENT, WATCH_BOOKMARK_MS, WATCH_SYNC_TIMEOUT_MS */
#include "gantry/v1/events.pb-c.h"
#include "gantry/v1/warmpools.pb-c.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "store/events.h"
#include "store/feed.h"

/* The kinds served, the message each event's payload holds and the WatchEvent field it goes in.
 * @ns_read: a role covering the event's namespace suffices to see it (else a global reader only). */
static const struct kind {
    const char *name;
    const ProtobufCMessageDescriptor *desc;
    const char *field;
    bool ns_read;
} kinds[] = {
    {"Namespace", &gantry__v1__namespace__descriptor, "namespace_object", true},
    {"Principal", &gantry__v1__principal__descriptor, "principal", false},
    {"RoleBinding", &gantry__v1__role_binding__descriptor, "role_binding", false},
    {"ApiKey", &gantry__v1__api_key__descriptor, "api_key", false},
    {"Provider", &gantry__v1__provider__descriptor, "provider", true},
    {"ProviderGrant", &gantry__v1__provider_grant__descriptor, "provider_grant", true},
    {"Policy", &gantry__v1__policy__descriptor, "policy", true},
    {"Quota", &gantry__v1__quota__descriptor, "quota", true},
    {"QuotaCeiling", &gantry__v1__quota_ceiling__descriptor, "quota_ceiling", true},
    {"PrincipalLink", &gantry__v1__external_identity__descriptor, "external_identity", false},
    {"WarmPool", &gantry__v1__warm_pool__descriptor, "warm_pool", true},
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static int kind_index(const char *name)
{
    for (size_t i = 0; i < N_KINDS; i++) {
        if (strcmp(kinds[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

struct ring_ev {
    uint64_t rev;
    Gantry__V1__EventType type;
    unsigned kind;
    char *ns, *id;
    ProtobufCMessage *obj; /* NULL: the change stored no object */
};

struct ecred { /* one per distinct principal and credential, shared by its watchers */
    char key[128];
    struct authn_principal who;
    uint64_t refreshed_ms;
    int denied; /* GERR_UNAUTH once the credential or principal is gone */
    char why[GERR_MSG_SIZE];
    unsigned refs;
    struct ecred *next;
};

struct ewatch {
    struct grpc_call *call;
    struct ecred *cred;
    char ns[64];
    uint32_t kinds;                            /* bit per kinds[] index */
    const Gantry__V1__LabelSelector *selector; /* in the call's arena, kept with the call; NULL or
                                                * empty: every object */
    uint64_t from;                             /* every event up to here was delivered or skipped */
    bool sent;
    uint64_t last_bookmark_ms;
    size_t allowance; /* bytes its replay queued at once, allowed on top of WATCH_MAX_UNSENT until the
                       * client has once drained below that (as on Sandboxes.Watch) */
    struct ewatch *next;
};

struct pbind { /* a principal's role bindings, read once for the ApiKey events of the keys it owns */
    char id[64];
    struct authz_binding *b; /* n of them */
    size_t n;
    bool over; /* more than AUTHN_MAX_BINDINGS: only a platform_admin manages it */
    struct pbind *next;
};

struct events_hub {
    pthread_mutex_t mu;
    struct feed *feed;
    struct feed_sub sub;
    struct events_svc *svc;
    bool ready, stopping;
    uint64_t rev;         /* every event up to here was applied */
    struct ring_ev *ring; /* svc->ring_size slots, oldest at ring_head */
    size_t ring_cap, ring_head, ring_n;
    uint64_t ring_floor; /* the ring holds every watchable event after this revision */
    size_t total_unsent; /* bytes queued to watchers and not yet sent, summed at each applied pass
                          * (and grown by each new watch's replay): new watches are refused above
                          * the svc's total_unsent_max, as on Sandboxes.Watch */
    struct ewatch *watches;
    struct ecred *creds;
    struct pbind *pbinds; /* key owners' bindings (at most EVENTS_OWNER_CACHE), dropped by the
                           * RoleBinding, Principal and Namespace DELETED events that change them */
    unsigned n_pbinds;
};

/* --- the ring --- */

static void ring_drop_oldest(struct events_hub *h)
{
    struct ring_ev *r = &h->ring[h->ring_head];
    h->ring_floor = r->rev;
    if (r->obj != NULL) {
        protobuf_c_message_free_unpacked(r->obj, NULL);
    }
    mem_free(r->ns);
    mem_free(r->id);
    memset(r, 0, sizeof *r);
    h->ring_head = (h->ring_head + 1) % h->ring_cap;
    h->ring_n--;
}

static void ring_clear(struct events_hub *h, uint64_t floor)
{
    while (h->ring_n > 0) {
        ring_drop_oldest(h);
    }
    h->ring_floor = floor;
}

/* Takes @obj. Returns the slot. */
static const struct ring_ev *ring_push(struct events_hub *h, const struct feed_event *ev, unsigned kind,
                                       Gantry__V1__EventType type, ProtobufCMessage *obj)
{
    if (h->ring_n == h->ring_cap) {
        ring_drop_oldest(h);
    }
    struct ring_ev *r = &h->ring[(h->ring_head + h->ring_n) % h->ring_cap];
    r->rev = ev->revision;
    r->type = type;
    r->kind = kind;
    r->ns = mem_strdup(ev->ns);
    r->id = mem_strdup(ev->object_id);
    r->obj = obj;
    h->ring_n++;
    return r;
}

/* --- authorization --- */

static bool has_role(const struct authn_principal *who, enum authz_role role, const char *ns)
{
    for (size_t i = 0; i < who->n_bindings; i++) {
        if ((role == 0 || who->bindings[i].role == role) && authz_binding_covers(&who->bindings[i], ns)) {
            return true;
        }
    }
    return false;
}

static bool global_reader(const struct authn_principal *who)
{
    return has_role(who, AZ_ROLE_PLATFORM_ADMIN, "") || has_role(who, AZ_ROLE_AUDITOR, "");
}

/* The principal @r's object belongs to (RoleBinding, ApiKey), or its own id (Principal,
 * PrincipalLink, whose events name the principal); "" when unknown. */
static const char *owner_of(const struct ring_ev *r)
{
    const char *name = kinds[r->kind].name;
    if (strcmp(name, "Principal") == 0 || strcmp(name, "PrincipalLink") == 0) {
        return r->id;
    }
    if (r->obj != NULL && strcmp(name, "RoleBinding") == 0) {
        return ((const Gantry__V1__RoleBinding *)r->obj)->principal_id;
    }
    if (r->obj != NULL && strcmp(name, "ApiKey") == 0) {
        return ((const Gantry__V1__ApiKey *)r->obj)->principal_id;
    }
    return "";
}

/* --- key owners' bindings (a namespace_admin sees the keys of the principals it manages) --- */

/* Where owner bindings come from: @h's cache (under h->mu) filled through @cl, or, with @h NULL,
 * @cl directly (the handler's catch-up, which reads the store anyway). */
struct owners {
    struct events_hub *h;
    struct store_client *cl;
};

static void pbind_free(struct pbind *p)
{
    mem_free(p->b);
    mem_free(p);
}

/* Under h->mu: forget @id's bindings (NULL: everyone's). */
static void pbind_drop(struct events_hub *h, const char *id)
{
    for (struct pbind **pp = &h->pbinds; *pp != NULL;) {
        struct pbind *p = *pp;
        if (id == NULL || strcmp(p->id, id) == 0) {
            *pp = p->next;
            pbind_free(p);
            h->n_pbinds--;
        } else {
            pp = &p->next;
        }
    }
}

/* @id's bindings, as ApiKeys.List's check reads them (principals_svc.c bindings_of: an unreadable
 * scope counts as a delegation scope). NULL on a store error (the key is then not shown). */
static struct pbind *pbind_load(struct store_client *cl, const char *id)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    if (store_client_query(
            cl, "SELECT role, namespace, scope FROM role_bindings WHERE principal_id = ? ORDER BY id", p, 1,
            &rows) != 0) {
        proto_rows_close(&rows);
        return NULL;
    }
    struct pbind *pb = mem_zalloc(sizeof *pb);
    snprintf(pb->id, sizeof pb->id, "%s", id);
    pb->over = rows.n_rows > AUTHN_MAX_BINDINGS;
    pb->b = mem_zalloc(sizeof *pb->b * (rows.n_rows + 1));
    for (size_t i = 0; i < rows.n_rows && !pb->over; i++) {
        struct authz_binding *b = &pb->b[pb->n++];
        const struct proto_value *role = proto_rows_at(&rows, i, 0), *ns = proto_rows_at(&rows, i, 1),
                                 *scope = proto_rows_at(&rows, i, 2);
        b->role = authz_role_parse(role->type == PROTO_TEXT ? role->u.b.s : "");
        snprintf(b->ns, sizeof b->ns, "%s", ns->type == PROTO_TEXT ? ns->u.b.s : "");
        if (authz_scope_parse(scope->type == PROTO_TEXT ? scope->u.b.s : "", &b->scope) != 0) {
            b->scope.set = true;
        }
    }
    proto_rows_close(&rows);
    return pb;
}

/* Does @who (a namespace_admin) manage @owner, so ApiKeys.List would show it @owner's keys? */
static bool manages_owner(const struct authn_principal *who, const char *owner, const struct owners *o)
{
    struct pbind *pb = NULL;
    if (o->h != NULL) {
        for (pb = o->h->pbinds; pb != NULL && strcmp(pb->id, owner) != 0; pb = pb->next) {
        }
        if (pb == NULL && (pb = pbind_load(o->cl, owner)) != NULL) {
            if (o->h->n_pbinds >= EVENTS_OWNER_CACHE) {
                pbind_drop(o->h, NULL);
            }
            pb->next = o->h->pbinds;
            o->h->pbinds = pb;
            o->h->n_pbinds++;
        }
    } else {
        pb = pbind_load(o->cl, owner);
    }
    char why[GERR_MSG_SIZE];
    bool yes = pb != NULL && !pb->over &&
               principal_rules_manages(who->bindings, who->n_bindings, pb->b, pb->n, why, sizeof why);
    if (o->h == NULL && pb != NULL) {
        pbind_free(pb);
    }
    return yes;
}

/* Under h->mu, before @r is offered: drop the cached bindings @r may have changed (a binding's
 * principal; a principal, whose delete removed its bindings; a deleted namespace, whose bindings
 * went with it and carry no events of their own). */
static void pbind_note(struct events_hub *h, const struct ring_ev *r)
{
    const char *name = kinds[r->kind].name;
    if (strcmp(name, "RoleBinding") == 0) {
        pbind_drop(h, r->obj != NULL ? ((const Gantry__V1__RoleBinding *)r->obj)->principal_id : NULL);
    } else if (strcmp(name, "Principal") == 0) {
        pbind_drop(h, r->id);
    } else if (strcmp(name, "Namespace") == 0 && r->type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED) {
        pbind_drop(h, NULL);
    }
}

/* Would the kind's Get or List show @who this object? (api/authz/authz.c.) Namespaced kinds
 * (Namespaces.Get, Providers.Get/ListGrants, Policies.Get, Quotas.Get, WarmPools.Get: AZ_NS_READ): a global
 * reader or a role covering the namespace; the gateway policy (Policies.Get with no namespace): anyone.
 * Principal, RoleBinding, PrincipalLink (AZ_PRINCIPAL_READ): a global reader, any namespace_admin,
 * or the principal itself. ApiKey (AZ_APIKEY_READ, ApiKeys.List's manage check): a global reader,
 * the key's own principal, or a namespace_admin that manages that principal
 * (principal_rules_manages over the owner's bindings, from @o). */
static bool visible(const struct authn_principal *who, const struct ring_ev *r, const struct owners *o)
{
    if (global_reader(who)) {
        return true;
    }
    const struct kind *k = &kinds[r->kind];
    if (k->ns_read) {
        return r->ns[0] != '\0' ? has_role(who, 0, r->ns) : strcmp(k->name, "Policy") == 0;
    }
    const char *owner = owner_of(r);
    if (owner[0] != '\0' && strcmp(owner, who->id) == 0) {
        return true;
    }
    bool ns_admin = false;
    for (size_t i = 0; i < who->n_bindings; i++) {
        ns_admin = ns_admin || who->bindings[i].role == AZ_ROLE_NAMESPACE_ADMIN;
    }
    if (strcmp(k->name, "ApiKey") == 0) {
        return ns_admin && owner[0] != '\0' && manages_owner(who, owner, o);
    }
    return ns_admin;
}

/* --- sending --- */

static void send_ev(struct events_svc *svc, struct grpc_call *call, const struct ring_ev *r)
{
    Gantry__V1__WatchEvent ev = GANTRY__V1__WATCH_EVENT__INIT;
    ev.type = r->type;
    ev.revision = r->rev;
    ev.kind = (char *)kinds[r->kind].name;
    ev.namespace_ = r->ns;
    ev.object_id = r->id;
    if (r->obj != NULL) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
            &gantry__v1__watch_event__descriptor, kinds[r->kind].field);
        *(ProtobufCMessage **)((char *)&ev + f->offset) = r->obj;
        *(uint32_t *)((char *)&ev + f->quantifier_offset) = f->id;
    }
    grpc_call_send_async(call, &ev.base);
    atomic_fetch_add(&svc->events_sent, 1);
}

static void send_bookmark(struct grpc_call *call, uint64_t rev)
{
    Gantry__V1__WatchEvent ev = GANTRY__V1__WATCH_EVENT__INIT;
    ev.type = GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK;
    ev.revision = rev;
    grpc_call_send_async(call, &ev.base);
}

/* Does @r's object carry every label of @sel (Sandboxes.Watch's rule: same key, same value)? An
 * empty selector matches everything; a non-empty one never matches an event without an object nor
 * a kind whose object has no labels (no ObjectMeta, or none set). */
static bool labels_ok(const Gantry__V1__LabelSelector *sel, const struct ring_ev *r)
{
    if (sel == NULL || sel->n_match_labels == 0) {
        return true;
    }
    if (r->obj == NULL) {
        return false;
    }
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(kinds[r->kind].desc, "meta");
    const Gantry__V1__ObjectMeta *meta =
        f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                f->descriptor == &gantry__v1__object_meta__descriptor
            ? *(Gantry__V1__ObjectMeta *const *)((const char *)r->obj + f->offset)
            : NULL;
    if (meta == NULL) {
        return false;
    }
    for (size_t i = 0; i < sel->n_match_labels; i++) {
        bool found = false;
        for (size_t j = 0; j < meta->n_labels && !found; j++) {
            found = strcmp(meta->labels[j]->key, sel->match_labels[i]->key) == 0 &&
                    strcmp(meta->labels[j]->value, sel->match_labels[i]->value) == 0;
        }
        if (!found) {
            return false;
        }
    }
    return true;
}

/* Does @w ask for @r (kind, namespace, labels) and may @who see it? */
static bool wants(const struct ewatch *w, const struct authn_principal *who, const struct ring_ev *r,
                  const struct owners *o)
{
    return (w->kinds & (1u << r->kind)) != 0 && (w->ns[0] == '\0' || strcmp(w->ns, r->ns) == 0) &&
           labels_ok(w->selector, r) && visible(who, r, o);
}

/* Under h->mu: @r to @w if it wants it and may see it (owner bindings read through @cl). */
static void offer(struct events_hub *h, struct store_client *cl, struct ewatch *w, const struct ring_ev *r)
{
    struct owners o = {h, cl};
    if (wants(w, &w->cred->who, r, &o)) {
        send_ev(h->svc, w->call, r);
        w->sent = true;
    }
}

/* --- credentials --- */

static struct ecred *cred_get(struct events_hub *h, const struct authn_principal *who)
{
    char key[128];
    snprintf(key, sizeof key, "%s|%s|%" PRId64, who->id, who->key_id, who->not_after_ms);
    for (struct ecred *c = h->creds; c != NULL; c = c->next) {
        if (strcmp(c->key, key) == 0 && c->denied == 0) {
            c->refs++;
            return c;
        }
    }
    struct ecred *c = mem_zalloc(sizeof *c);
    snprintf(c->key, sizeof c->key, "%s", key);
    c->who = *who;
    c->refreshed_ms = clock_mono_ms(clock_system());
    c->refs = 1;
    c->next = h->creds;
    h->creds = c;
    return c;
}

static void cred_unref(struct events_hub *h, struct ecred *c)
{
    if (--c->refs > 0) {
        return;
    }
    for (struct ecred **p = &h->creds; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    mem_free(c);
}

static const char *col(const struct proto_rows *r, size_t i, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, i, c);
    return v->type == PROTO_TEXT ? v->u.b.s : "";
}

/* Feed thread, under h->mu: check @c's credential and principal again and reload its bindings, as
 * Sandboxes.Watch does (a call's authentication would see the same), from the models when @a has
 * them (authn_recheck_models), else the store: a revoked, deleted or expired API key, or a
 * disabled or deleted principal, sets c->denied; a store error keeps what @c has and tries again
 * at the next interval. */
static void cred_refresh(struct authn *a, struct store_client *cl, struct ecred *c, int64_t wall_ms)
{
    int rv = authn_recheck_models(a, cl, &c->who, wall_ms, c->why, sizeof c->why);
    if (rv == GERR_UNAUTH) {
        c->denied = GERR_UNAUTH;
    } else if (rv == 0) {
        c->refreshed_ms = clock_mono_ms(clock_system());
    }
}

/* --- watchers --- */

static void watch_end(struct events_hub *h, struct ewatch *w, int status, const char *msg)
{
    for (struct ewatch **p = &h->watches; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    grpc_call_finish_async(w->call, status, msg, NULL);
    cred_unref(h, w->cred);
    atomic_fetch_sub(&h->svc->watches, 1);
    mem_free(w);
}

static void watch_end_all(struct events_hub *h, int status, const char *msg)
{
    while (h->watches != NULL) {
        watch_end(h, h->watches, status, msg);
    }
}

/* Under h->mu: a cancelled call ends; one whose client left more than WATCH_MAX_UNSENT bytes
 * unread (plus its replay's allowance) is cut (the hub never waits for one client). */
static bool watch_alive(struct events_hub *h, struct ewatch *w)
{
    if (grpc_call_cancelled(w->call)) {
        watch_end(h, w, GRPC_STATUS_CANCELLED, "cancelled");
        return false;
    }
    size_t unsent = grpc_call_unsent(w->call);
    if (unsent <= WATCH_MAX_UNSENT) {
        w->allowance = 0;
    }
    if (unsent > WATCH_MAX_UNSENT + w->allowance) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the watch fell behind at revision %" PRIu64 " (more than %u bytes unread): watch again "
                 "from revision %" PRIu64,
                 w->from, WATCH_MAX_UNSENT, w->from);
        atomic_fetch_add(&h->svc->cut_slow, 1);
        watch_end(h, w, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return false;
    }
    return true;
}

/* --- the feed's callbacks --- */

static void hub_on_resync(struct store_client *cl, uint64_t rev, void *data)
{
    struct events_hub *h = data;
    (void)cl;
    pthread_mutex_lock(&h->mu);
    if (h->ready) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "revision %" PRIu64 " is older than the retained change history: list again and watch from "
                 "the list's revision",
                 h->rev);
        watch_end_all(h, GRPC_STATUS_OUT_OF_RANGE, msg);
    }
    /* No model to load: the ring starts empty at @rev, and events after it follow. */
    ring_clear(h, rev);
    pbind_drop(h, NULL);
    h->rev = rev;
    h->ready = true;
    pthread_mutex_unlock(&h->mu);
}

static void hub_on_event(struct store_client *cl, const struct feed_event *ev, void *data)
{
    struct events_hub *h = data;
    int k = kind_index(ev->kind);
    if (k < 0) {
        return;
    }
    Gantry__V1__EventType type = strcmp(ev->type, "DELETED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED
                                 : strcmp(ev->type, "ADDED") == 0
                                     ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                     : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED;
    ProtobufCMessage *obj = NULL;
    if (ev->payload != NULL && ev->payload_len > 0) {
        obj = protobuf_c_message_unpack(kinds[k].desc, NULL, ev->payload_len, ev->payload);
        if (obj == NULL) {
            LOG_WARN("events watch: the %s event at revision %" PRIu64 " has an unreadable payload", ev->kind,
                     ev->revision);
        }
    }
    pthread_mutex_lock(&h->mu);
    if (!h->ready || ev->revision <= h->rev) {
        pthread_mutex_unlock(&h->mu);
        if (obj != NULL) {
            protobuf_c_message_free_unpacked(obj, NULL);
        }
        return;
    }
    const struct ring_ev *r = ring_push(h, ev, (unsigned)k, type, obj);
    pbind_note(h, r);
    for (struct ewatch *w = h->watches, *next; w != NULL; w = next) {
        next = w->next;
        if (w->from >= ev->revision || !watch_alive(h, w)) {
            continue;
        }
        offer(h, cl, w, r);
        w->from = ev->revision;
    }
    h->rev = ev->revision;
    pthread_mutex_unlock(&h->mu);
}

static void hub_on_applied(struct store_client *cl, uint64_t rev, void *data)
{
    struct events_hub *h = data;
    struct clock *clk = clock_system();
    uint64_t now = clock_mono_ms(clk);
    pthread_mutex_lock(&h->mu);
    if (h->stopping || !h->ready) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (rev > h->rev) {
        h->rev = rev;
    }
    h->total_unsent = 0; /* summed again over every watcher below */
    for (struct ecred *c = h->creds; c != NULL; c = c->next) {
        if (c->denied == 0 && now - c->refreshed_ms >= EVENTS_REFRESH_MS) {
            cred_refresh(h->svc->authn, cl, c, (int64_t)clk->wall_ms(clk));
        }
    }
    for (struct ewatch *w = h->watches, *next; w != NULL; w = next) {
        next = w->next;
        if (!watch_alive(h, w)) {
            continue;
        }
        h->total_unsent += grpc_call_unsent(w->call);
        if (w->cred->denied != 0) {
            atomic_fetch_add(&h->svc->cut_auth, 1);
            watch_end(h, w, GRPC_STATUS_UNAUTHENTICATED, w->cred->why);
            continue;
        }
        const struct authn_principal *who = &w->cred->who;
        if (w->ns[0] != '\0' && !global_reader(who) && !has_role(who, 0, w->ns)) {
            char why[GERR_MSG_SIZE];
            snprintf(why, sizeof why, "the watch ended: you no longer hold a role in namespace \"%.63s\"",
                     w->ns);
            atomic_fetch_add(&h->svc->cut_auth, 1);
            watch_end(h, w, GRPC_STATUS_PERMISSION_DENIED, why);
            continue;
        }
        if (w->from < h->rev) {
            w->from = h->rev;
        }
        if (w->sent || now - w->last_bookmark_ms >= WATCH_BOOKMARK_MS) {
            send_bookmark(w->call, w->from);
            w->sent = false;
            w->last_bookmark_ms = now;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

/* --- the handler --- */

/* The kinds bitmask of @req, or false having answered INVALID_ARGUMENT. */
static bool parse_kinds(struct gate_ctx *ctx, const Gantry__V1__WatchEventsRequest *req, uint32_t *out)
{
    *out = 0;
    for (size_t i = 0; i < req->n_kinds; i++) {
        if (strcmp(req->kinds[i], "Sandbox") == 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                      "kinds: sandboxes are watched with Sandboxes.Watch (which also sends their current "
                      "state), not Events.Watch");
            return false;
        }
        int k = kind_index(req->kinds[i]);
        if (k < 0) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "kinds: unknown kind \"%.63s\" (one of: %s)",
                      req->kinds[i], EVENTS_KINDS);
            return false;
        }
        *out |= 1u << k;
    }
    if (*out == 0) {
        *out = (1u << N_KINDS) - 1;
    }
    return true;
}

/* Under h->mu: send @w the ring's events after @from (none when @from is the hub's revision), then
 * a BOOKMARK, and link it with @who's credential. */
static void watch_link(struct events_hub *h, struct store_client *cl, struct ewatch *w,
                       const struct authn_principal *who, uint64_t from)
{
    w->cred = cred_get(h, who);
    w->from = from;
    w->last_bookmark_ms = clock_mono_ms(clock_system());
    for (size_t i = 0; i < h->ring_n; i++) {
        const struct ring_ev *r = &h->ring[(h->ring_head + i) % h->ring_cap];
        if (r->rev > w->from) {
            offer(h, cl, w, r);
        }
    }
    if (w->from < h->rev) {
        w->from = h->rev;
    }
    send_bookmark(w->call, w->from);
    w->allowance = grpc_call_unsent(w->call);
    h->total_unsent += w->allowance;
    w->next = h->watches;
    h->watches = w;
}

static Gantry__V1__EventType event_type(const char *type)
{
    return strcmp(type, "DELETED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_DELETED
           : strcmp(type, "ADDED") == 0 ? GANTRY__V1__EVENT_TYPE__EVENT_TYPE_ADDED
                                        : GANTRY__V1__EVENT_TYPE__EVENT_TYPE_MODIFIED;
}

/* The watchable events after *@cur up to @upto that the ring no longer holds (older than its
 * floor: past the ring, or before this replica loaded its feed), read from the events table with
 * the handler's connection (once per such watch, in pages of EVENTS_CATCH_UP_PAGE) with their
 * payloads, and sent to @w (not yet linked) after the same checks as the ring's, as @who sees them;
 * *@cur advances to what was read. The compaction marker is read after each page, as the feed does:
 * GERR_ABORTED with *@gone when retention deleted events after *@cur. Else 0 or the store's errors. */
static int catch_up(struct events_svc *svc, struct store_client *cl, struct ewatch *w,
                    const struct authn_principal *who, uint64_t *cur, uint64_t upto, int64_t *gone)
{
    while (*cur < upto) {
        struct proto_rows ev;
        proto_rows_init(&ev, 0);
        struct proto_value p[] = {proto_text(w->ns), proto_int((int64_t)*cur), proto_int((int64_t)upto)};
        int rv = store_client_query(
            cl,
            "SELECT revision, kind, namespace, object_id, type, payload FROM events WHERE kind <> 'Sandbox' "
            "AND (?1 = '' OR namespace = ?1) AND revision > ?2 AND revision <= ?3 ORDER BY revision "
            "LIMIT " EVENTS_CATCH_UP_PAGE_S,
            p, 3, &ev);
        int64_t compacted = 0;
        if (rv == 0) {
            rv = store_events_compacted(cl, &compacted);
        }
        if (rv == 0 && (uint64_t)compacted > *cur) {
            *gone = compacted;
            rv = GERR_ABORTED;
        }
        if (rv != 0) {
            proto_rows_close(&ev);
            return rv;
        }
        uint64_t reached = upto;
        if (ev.n_rows == EVENTS_CATCH_UP_PAGE) {
            reached = (uint64_t)proto_rows_at(&ev, ev.n_rows - 1, 0)->u.i;
        }
        for (size_t i = 0; i < ev.n_rows; i++) {
            int k = kind_index(col(&ev, i, 1));
            if (k < 0 || (w->kinds & (1u << k)) == 0) {
                continue;
            }
            struct ring_ev r = {
                .rev = (uint64_t)proto_rows_at(&ev, i, 0)->u.i,
                .type = event_type(col(&ev, i, 4)),
                .kind = (unsigned)k,
                .ns = (char *)col(&ev, i, 2),
                .id = (char *)col(&ev, i, 3),
            };
            const struct proto_value *payload = proto_rows_at(&ev, i, 5);
            if (payload->type == PROTO_BLOB && payload->u.b.n > 0) {
                r.obj = protobuf_c_message_unpack(kinds[k].desc, NULL, payload->u.b.n,
                                                  (const uint8_t *)payload->u.b.s);
            }
            struct owners o = {NULL, cl};
            if (wants(w, who, &r, &o)) {
                send_ev(svc, w->call, &r);
            }
            if (r.obj != NULL) {
                protobuf_c_message_free_unpacked(r.obj, NULL);
            }
        }
        proto_rows_close(&ev);
        *cur = reached;
        if (*cur < upto && grpc_call_cancelled(w->call)) {
            return GERR_CANCELED; /* nobody to send the rest to */
        }
        if (*cur < upto && grpc_call_unsent(w->call) > WATCH_CATCH_UP_MAX_UNSENT) {
            return GERR_TOOBIG; /* the client reads slower than the store replays */
        }
    }
    return 0;
}

static void ev_watch(struct gate_ctx *ctx, void *data)
{
    struct events_svc *svc = data;
    struct events_hub *h = svc->hub;
    const Gantry__V1__WatchEventsRequest *req = (const void *)grpc_call_request(ctx->call);
    uint32_t mask = 0;
    if (!parse_kinds(ctx, req, &mask)) {
        return;
    }
    char why[128];
    if (req->namespace_[0] != '\0' && !names_dns_label_ok(req->namespace_, 63, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "namespace: %s", why);
        return;
    }
    if (req->selector != NULL && req->selector->n_match_labels > EVENTS_MAX_SELECTOR) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "selector: at most %u labels (objects carry at most 64)",
                  EVENTS_MAX_SELECTOR);
        return;
    }
    if (h == NULL) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE, "this replica serves no watches: try another replica");
        return;
    }
    /* A read index: the hub has applied every change acknowledged before this call. */
    uint64_t head = 0;
    if (feed_sync(h->feed, clock_mono_ms(clock_system()) + WATCH_SYNC_TIMEOUT_MS, &head) != 0) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE,
                  "this replica's change feed did not catch up with the leader within %u ms: try again or "
                  "another replica",
                  WATCH_SYNC_TIMEOUT_MS);
        return;
    }
    if (req->since_revision > head) {
        gate_fail(ctx, GRPC_STATUS_OUT_OF_RANGE,
                  "since_revision %" PRIu64 " is in the future (the cluster is at %" PRIu64 ")",
                  req->since_revision, head);
        return;
    }
    if (atomic_load(&svc->stopping)) {
        gate_fail(ctx, GRPC_STATUS_UNAVAILABLE, "this replica is stopping: watch through another replica");
        return;
    }
    if (atomic_fetch_add(&svc->watches, 1) >= EVENTS_MAX_WATCHES) {
        atomic_fetch_sub(&svc->watches, 1);
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "this replica serves %u event watches already: try another replica", EVENTS_MAX_WATCHES);
        return;
    }
    struct ewatch *w = mem_zalloc(sizeof *w);
    w->call = ctx->call;
    w->kinds = mask;
    w->selector = req->selector;
    snprintf(w->ns, sizeof w->ns, "%s", req->namespace_);
    /* Catch up from the store while the ring's floor is above the resume point (it only rises), then
     * link under the lock once the ring holds every event after it: the feed thread appends under
     * the same lock, so nothing falls between the store's events, the ring's and the live ones. */
    uint64_t cur = req->since_revision;
    int64_t gone = 0;
    int rv = 0;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        if (!h->ready || h->stopping) {
            bool stopping = h->stopping;
            pthread_mutex_unlock(&h->mu);
            atomic_fetch_sub(&svc->watches, 1);
            mem_free(w);
            gate_fail(ctx, GRPC_STATUS_UNAVAILABLE,
                      stopping ? "the replica is stopping: watch again from the last revision"
                               : "this replica's change feed is not loaded yet: try again");
            return;
        }
        size_t max = svc->total_unsent_max != 0 ? svc->total_unsent_max : WATCH_TOTAL_UNSENT;
        if (h->total_unsent > max) {
            size_t held = h->total_unsent;
            pthread_mutex_unlock(&h->mu);
            atomic_fetch_sub(&svc->watches, 1);
            atomic_fetch_add(&svc->refused_unsent, 1);
            mem_free(w);
            gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "this replica's event watches hold %zu MiB their clients have not read (more than %zu "
                      "MiB): try another replica or later",
                      held >> 20, max >> 20);
            return;
        }
        if (req->since_revision == 0 || cur >= h->ring_floor) {
            watch_link(h, ctx->cl, w, &ctx->who, req->since_revision == 0 ? h->rev : cur);
            pthread_mutex_unlock(&h->mu);
            return;
        }
        uint64_t upto = h->ring_floor;
        pthread_mutex_unlock(&h->mu);
        rv = catch_up(svc, ctx->cl, w, &ctx->who, &cur, upto, &gone);
        if (rv != 0) {
            break;
        }
    }
    atomic_fetch_sub(&svc->watches, 1);
    mem_free(w);
    if (rv == GERR_TOOBIG) {
        gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "the replay of retained events holds more than %u MiB this client has not read: read "
                  "them, then watch again from revision %" PRIu64,
                  WATCH_CATCH_UP_MAX_UNSENT >> 20, cur);
    } else if (gone > 0) {
        gate_fail(ctx, GRPC_STATUS_OUT_OF_RANGE,
                  "revision %" PRIu64 " is older than the retained change history (events up to %" PRId64
                  " were deleted): list again and watch from the list's revision",
                  req->since_revision, gone);
    } else {
        gate_fail(ctx, grpc_status_from_gerr(rv), "%s",
                  ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
    }
}

int events_svc_attach_feed(struct events_svc *svc, struct feed *feed)
{
    struct events_hub *h = mem_zalloc(sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->feed = feed;
    h->svc = svc;
    h->ring_cap = svc->ring_size != 0 ? svc->ring_size : EVENTS_RING;
    h->ring = mem_zalloc(sizeof *h->ring * h->ring_cap);
    h->sub.on_resync = hub_on_resync;
    h->sub.on_event = hub_on_event;
    h->sub.on_applied = hub_on_applied;
    h->sub.data = h;
    feed_subscribe(feed, &h->sub);
    svc->hub = h;
    return 0;
}

void events_svc_stop(struct events_svc *svc)
{
    atomic_store(&svc->stopping, true);
    struct events_hub *h = svc->hub;
    if (h != NULL) {
        pthread_mutex_lock(&h->mu);
        h->stopping = true;
        watch_end_all(h, GRPC_STATUS_UNAVAILABLE,
                      "the replica is stopping: watch again from the last revision");
        pthread_mutex_unlock(&h->mu);
    }
}

void events_svc_detach_feed(struct events_svc *svc)
{
    struct events_hub *h = svc->hub;
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    watch_end_all(h, GRPC_STATUS_UNAVAILABLE, "the replica is stopping: watch again from the last revision");
    ring_clear(h, 0);
    pbind_drop(h, NULL);
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_destroy(&h->mu);
    mem_free(h->ring);
    mem_free(h);
    svc->hub = NULL;
}

int events_svc_register(struct gate *g, struct events_svc *svc, char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Events/Watch", ev_watch, svc) != 0) {
        gerr_set(errmsg, "events service: cannot route /gantry.v1.Events/Watch");
        return GERR_INVAL;
    }
    return 0;
}

void events_svc_metrics_write(struct events_svc *svc, struct buf *out)
{
    buf_printf(
        out,
        "# HELP gantry_events_watches Events.Watch calls open on this replica.\n"
        "# TYPE gantry_events_watches gauge\ngantry_events_watches %u\n"
        "# HELP gantry_events_watch_events_total Events.Watch events sent to watchers.\n"
        "# TYPE gantry_events_watch_events_total counter\ngantry_events_watch_events_total %" PRIu64 "\n"
        "# HELP gantry_events_watch_cut_slow_total Events.Watch calls cut for leaving too much "
        "unread.\n"
        "# TYPE gantry_events_watch_cut_slow_total counter\ngantry_events_watch_cut_slow_total %" PRIu64 "\n"
        "# HELP gantry_events_watch_cut_auth_total Events.Watch calls ended because their "
        "credential or role went away.\n"
        "# TYPE gantry_events_watch_cut_auth_total counter\ngantry_events_watch_cut_auth_total %" PRIu64 "\n"
        "# HELP gantry_events_watch_refused_unsent_total Events.Watch calls refused because the "
        "replica's watches held more unread bytes than watch_total_unsent_mib.\n"
        "# TYPE gantry_events_watch_refused_unsent_total counter\n"
        "gantry_events_watch_refused_unsent_total %" PRIu64 "\n",
        atomic_load(&svc->watches), (uint64_t)atomic_load(&svc->events_sent),
        (uint64_t)atomic_load(&svc->cut_slow), (uint64_t)atomic_load(&svc->cut_auth),
        (uint64_t)atomic_load(&svc->refused_unsent));
}
