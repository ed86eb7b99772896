/* The reconciler (leases/reconciler.h). */
#include "leases/reconciler.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gantry/v1/sandboxes.pb-c.h"
#include "leases/dspec.h"
#include "leases/warmpools.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/events.h"

#define SB_COLS                                                                                              \
    "id, namespace, name, owner_id, labels, spec, status, phase, gpus, deletion_timestamp_ms, created_at_ms"
#define MAX_ATTEMPTS   5
#define BACKOFF_CAP_MS 60000u
#define MAX_TRACKED    4096u
#define MAX_NS_PENDING 64u

/* Per-sandbox retry state for driver failures, and what was last audited for it. */
struct attempt {
    char id[40];
    unsigned failures;
    uint64_t first_mono_ms; /* when the current run of failures began */
    uint64_t next_mono_ms;
    bool audited;             /* an event was written for ... */
    char audited_op[40];      /* ... this operation ... */
    int audited_code;         /* ... failing with this code ... */
    uint64_t audited_mono_ms; /* ... at this time */
};

struct reconciler {
    struct reconciler_config cfg;
    char holder[128], driver_name[64], gateway_id[32];
    struct lease lease;
    struct store_client cl;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    struct reconciler_status st; /* under mu */
    uint64_t epoch;              /* thread only */
    uint64_t last_revision;
    uint64_t last_resync_ms;
    int64_t next_expiry_ms;        /* the earliest lifetime end seen (wall ms), 0: none: resync then */
    uint64_t last_transitional_ms; /* when sandboxes in transition were last re-checked */
    struct attempt *attempts;
    unsigned n_attempts;
    char ns_pending[MAX_NS_PENDING][64]; /* deleted namespaces the driver has not removed yet */
    unsigned n_ns_pending;
    bool pools;             /* the driver manages warm pools (caps.pools) */
    bool pools_due;         /* a WarmPool changed: run the pool pass at the next poll */
    bool pools_orphans;     /* the next pool pass also deletes the driver's pools the store lacks */
    uint64_t last_pools_ms; /* when the pool pass last ran (mono) */
};

static uint64_t now_mono(void)
{
    return clock_mono_ms(clock_system());
}

static int64_t now_wall(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

static void bump(struct reconciler *r, uint64_t *counter)
{
    pthread_mutex_lock(&r->mu);
    (*counter)++;
    pthread_mutex_unlock(&r->mu);
}

/* --- one sandbox row --- */

struct row {
    char id[40], ns[64], name[64], owner[64];
    char *labels;
    Gantry__V1__SandboxSpec *spec;
    Gantry__V1__SandboxStatus *status;
    char phase[16];
    int64_t gpus, deletion_ms, created_ms;
};

static void row_close(struct row *w)
{
    mem_free(w->labels);
    if (w->spec != NULL) {
        protobuf_c_message_free_unpacked(&w->spec->base, NULL);
    }
    if (w->status != NULL) {
        protobuf_c_message_free_unpacked(&w->status->base, NULL);
    }
    memset(w, 0, sizeof *w);
}

static void text(const struct proto_value *v, char *out, size_t len)
{
    snprintf(out, len, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0,
             v->type == PROTO_TEXT ? v->u.b.s : "");
}

static void row_from(struct row *w, const struct proto_rows *r, size_t i)
{
    memset(w, 0, sizeof *w);
    text(proto_rows_at(r, i, 0), w->id, sizeof w->id);
    text(proto_rows_at(r, i, 1), w->ns, sizeof w->ns);
    text(proto_rows_at(r, i, 2), w->name, sizeof w->name);
    text(proto_rows_at(r, i, 3), w->owner, sizeof w->owner);
    const struct proto_value *l = proto_rows_at(r, i, 4);
    w->labels = mem_strdup(l->type == PROTO_TEXT ? l->u.b.s : "{}");
    const struct proto_value *sp = proto_rows_at(r, i, 5), *st = proto_rows_at(r, i, 6);
    w->spec = (Gantry__V1__SandboxSpec *)protobuf_c_message_unpack(
        &gantry__v1__sandbox_spec__descriptor, NULL, sp->u.b.n, (const uint8_t *)sp->u.b.s);
    w->status = (Gantry__V1__SandboxStatus *)protobuf_c_message_unpack(
        &gantry__v1__sandbox_status__descriptor, NULL, st->u.b.n, (const uint8_t *)st->u.b.s);
    text(proto_rows_at(r, i, 7), w->phase, sizeof w->phase);
    w->gpus = proto_rows_at(r, i, 8)->u.i;
    w->deletion_ms = proto_rows_at(r, i, 9)->u.i;
    w->created_ms = proto_rows_at(r, i, 10)->u.i;
}

/* --- fenced writes --- */

struct write {
    struct reconciler *r;
    const struct row *w;               /* NULL with audit_only */
    Gantry__V1__SandboxStatus *status; /* new status (update) */
    const char *phase;
    bool remove;
    bool open_usage;
    const struct reconciler_audit *audits[2]; /* written with the change, or alone (audit_only) */
    unsigned n_audits;
    bool audit_only;
};

static int audits_tx(struct store_tx *tx, const struct write *x)
{
    int rv = 0;
    for (unsigned i = 0; rv == 0 && i < x->n_audits && x->r->cfg.audit != NULL; i++) {
        rv = x->r->cfg.audit(tx, x->audits[i], x->r->cfg.audit_arg);
    }
    return rv;
}

/* The sandbox row's change, and its audit events when the change is made. */
static int change_tx(struct store_tx *tx, struct write *x)
{
    int rv;
    int64_t rev = 0, now = now_wall();
    struct proto_value idp[] = {proto_text(x->w->id)};
    int64_t exists = 0;
    rv = store_tx_query_int(tx, "SELECT count(*) FROM sandboxes WHERE id = ?", idp, 1, &exists);
    if (rv != 0 || exists == 0) {
        return rv; /* deleted meanwhile: nothing to write */
    }
    if (x->remove) {
        struct proto_value q[] = {proto_text(x->w->ns), proto_int(x->w->gpus)};
        rv = store_tx_exec(tx, "DELETE FROM shares WHERE sandbox_id = ?", idp, 1, NULL);
        if (rv == 0) {
            rv = store_tx_exec(tx, "DELETE FROM sandboxes WHERE id = ?", idp, 1, NULL);
        }
        if (rv == 0) {
            rv = store_tx_exec(
                tx,
                "UPDATE quota_usage SET sandboxes = max(sandboxes - 1, 0), gpus = max(gpus - ?2, 0) "
                "WHERE namespace = ?1",
                q, 2, NULL);
        }
        if (rv == 0) {
            struct proto_value u[] = {proto_int(now), proto_text(x->w->id)};
            rv = store_tx_exec(
                tx, "UPDATE usage SET ended_at_ms = ? WHERE sandbox_id = ? AND ended_at_ms = 0", u, 2, NULL);
        }
        if (rv == 0) {
            rv = store_event_tx(tx, "Sandbox", x->w->ns, x->w->id, "DELETED", &rev);
        }
        return rv == 0 ? audits_tx(tx, x) : rv;
    }
    rv = store_event_tx(tx, "Sandbox", x->w->ns, x->w->id, "MODIFIED", &rev);
    size_t len = protobuf_c_message_get_packed_size(&x->status->base);
    uint8_t *buf = mem_alloc(len + 1);
    protobuf_c_message_pack(&x->status->base, buf);
    if (rv == 0) {
        struct proto_value p[] = {proto_blob(buf, len), proto_text(x->phase), proto_int(rev), proto_int(now),
                                  proto_text(x->w->id)};
        rv = store_tx_exec(
            tx,
            "UPDATE sandboxes SET status = ?, phase = ?, resource_version = ?, updated_at_ms = ? "
            "WHERE id = ?",
            p, 5, NULL);
    }
    mem_free(buf);
    if (rv == 0) {
        /* The event carries the sandbox as this change left it (a watch delivers every state). */
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
        meta.id = (char *)x->w->id;
        meta.namespace_ = (char *)x->w->ns;
        meta.name = (char *)x->w->name;
        meta.resource_version = (uint64_t)rev;
        meta.updated_at_ms = now;
        sb.meta = &meta;
        sb.spec = x->w->spec;
        sb.status = x->status;
        size_t plen = protobuf_c_message_get_packed_size(&sb.base);
        uint8_t *pbuf = mem_alloc(plen + 1);
        protobuf_c_message_pack(&sb.base, pbuf);
        rv = store_event_payload_tx(tx, rev, pbuf, plen);
        mem_free(pbuf);
    }
    if (rv == 0 && x->open_usage) {
        struct proto_value u[] = {proto_text(x->w->id),     proto_text(x->w->ns),  proto_text(x->w->owner),
                                  proto_text(x->w->labels), proto_int(x->w->gpus), proto_int(now)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO usage (sandbox_id, namespace, owner_id, labels, gpus, started_at_ms, ended_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (sandbox_id) DO NOTHING",
            u, 6, NULL);
    }
    return rv == 0 ? audits_tx(tx, x) : rv;
}

static int fenced_tx(struct store_tx *tx, void *arg)
{
    struct write *x = arg;
    struct reconciler *r = x->r;
    int rv = lease_check_tx(tx, RECONCILER_LEASE, r->holder, r->epoch);
    if (rv != 0 || x->audit_only) {
        return rv != 0 ? rv : audits_tx(tx, x);
    }
    return change_tx(tx, x);
}

static int write(struct reconciler *r, struct write *x)
{
    char err[GERR_MSG_SIZE] = "";
    if (x->audit_only && (x->n_audits == 0 || r->cfg.audit == NULL)) {
        return 0;
    }
    int rv = store_writer_run(r->cfg.writer, fenced_tx, x, err);
    if (rv == GERR_STALE) {
        LOG_WARN("reconciler: %s", err);
        bump(r, &r->st.stale_refusals);
        r->lease.held = false; /* stop at once: the next tick re-reads the lease */
    } else if (rv != 0) {
        LOG_WARN("reconciler: writing sandbox %s: %s", x->w != NULL ? x->w->id : x->audits[0]->sandbox_id,
                 err);
    } else if (r->cfg.audit != NULL && x->n_audits > 0) {
        pthread_mutex_lock(&r->mu);
        r->st.audit_events += x->n_audits;
        pthread_mutex_unlock(&r->mu);
    }
    return rv;
}

static const char *phase_text(enum driver_phase p)
{
    switch (p) {
    case DRIVER_PHASE_PROVISIONING:
        return "PROVISIONING";
    case DRIVER_PHASE_READY:
        return "READY";
    case DRIVER_PHASE_ERROR:
        return "ERROR";
    case DRIVER_PHASE_DELETING:
        return "DELETING";
    case DRIVER_PHASE_STOPPED:
        return "STOPPED";
    default:
        return "UNKNOWN";
    }
}

static Gantry__V1__SandboxStatus__Phase phase_enum(const char *p)
{
    return strcmp(p, "PROVISIONING") == 0 ? GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING
           : strcmp(p, "READY") == 0      ? GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY
           : strcmp(p, "ERROR") == 0      ? GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR
           : strcmp(p, "DELETING") == 0   ? GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING
           : strcmp(p, "STOPPED") == 0    ? GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_STOPPED
                                          : GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_UNKNOWN;
}

/* Write the driver's view of @w if it differs from the stored status, with the audit event of a
 * failed driver call (@failure, may be NULL) and, when @w enters ERROR now, of that (with @code,
 * the failed call's, or 0 when the backend reported the sandbox failed: GERR_ABORTED). When the
 * status is unchanged the events are written alone. */
static void record(struct reconciler *r, const struct row *w, const char *phase, const char *handle,
                   const char *message, const char *condition_reason, const struct reconciler_audit *failure,
                   int code)
{
    Gantry__V1__SandboxStatus *old = w->status;
    struct reconciler_audit entered = {.operation = "reconciler/sandbox.error",
                                       .ns = w->ns,
                                       .sandbox_id = w->id,
                                       .sandbox_name = w->name,
                                       .actor = r->holder,
                                       .epoch = r->epoch,
                                       .code = code != 0 ? code : GERR_ABORTED,
                                       .message = message};
    struct write x = {.r = r, .w = w, .phase = phase, .open_usage = strcmp(phase, "READY") == 0};
    if (failure != NULL) {
        x.audits[x.n_audits++] = failure;
    }
    if (strcmp(phase, "ERROR") == 0 && strcmp(w->phase, "ERROR") != 0) {
        x.audits[x.n_audits++] = &entered;
    }
    bool same =
        old != NULL && strcmp(w->phase, phase) == 0 && strcmp(old->driver_handle, handle) == 0 &&
        (old->n_conditions > 0 ? strcmp(old->conditions[0]->message, message) == 0 : message[0] == '\0');
    if (same) {
        x.audit_only = true;
        write(r, &x);
        return;
    }
    Gantry__V1__SandboxStatus st = GANTRY__V1__SANDBOX_STATUS__INIT;
    if (old != NULL) {
        st.started_at_ms = old->started_at_ms;
        st.expires_at_ms = old->expires_at_ms;
    }
    st.phase = phase_enum(phase);
    st.driver = r->driver_name;
    st.driver_handle = (char *)handle;
    st.lease_epoch = r->epoch;
    if (strcmp(phase, "READY") == 0 && st.started_at_ms == 0) {
        st.started_at_ms = now_wall();
    }
    Gantry__V1__SandboxCondition cond = GANTRY__V1__SANDBOX_CONDITION__INIT;
    Gantry__V1__SandboxCondition *conds[1] = {&cond};
    if (message[0] != '\0') {
        cond.type = condition_reason != NULL ? "DriverError" : "Driver";
        cond.status = condition_reason == NULL;
        cond.reason = (char *)(condition_reason != NULL ? condition_reason : phase);
        cond.message = (char *)message;
        cond.last_transition_ms = now_wall();
        st.n_conditions = 1;
        st.conditions = conds;
    }
    x.status = &st;
    write(r, &x);
}

static struct attempt *attempt_of(struct reconciler *r, const char *id, bool create)
{
    for (unsigned i = 0; i < r->n_attempts; i++) {
        if (strcmp(r->attempts[i].id, id) == 0) {
            return &r->attempts[i];
        }
    }
    if (!create || r->n_attempts == MAX_TRACKED) {
        return NULL;
    }
    struct attempt *a = &r->attempts[r->n_attempts++];
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", id);
    return a;
}

static void forget_attempts(struct reconciler *r, const char *id)
{
    for (unsigned i = 0; i < r->n_attempts; i++) {
        if (strcmp(r->attempts[i].id, id) == 0) {
            r->attempts[i] = r->attempts[--r->n_attempts];
            return;
        }
    }
}

/* A driver call for @id succeeded: its failures are forgotten, but what was audited stays for
 * the rest of the backoff cap, so a call that fails, works, fails... is not audited each time. */
static void succeeded(struct reconciler *r, const char *id)
{
    struct attempt *a = attempt_of(r, id, false);
    if (a == NULL) {
        return;
    }
    if (a->audited && now_mono() - a->audited_mono_ms < BACKOFF_CAP_MS) {
        a->failures = 0;
        a->next_mono_ms = 0;
    } else {
        forget_attempts(r, id);
    }
}

/* The rate limit: true (and remembered) when @op failing with @code for @a is to be audited:
 * the first time, when the operation or code changed, or a backoff cap after the last event. An
 * untracked sandbox (the table is full) is not audited, except when it enters ERROR. */
static bool audit_due(struct attempt *a, const char *op, int code)
{
    uint64_t now = now_mono();
    if (a == NULL || (a->audited && strcmp(a->audited_op, op) == 0 && a->audited_code == code &&
                      now - a->audited_mono_ms < BACKOFF_CAP_MS)) {
        return false;
    }
    a->audited = true;
    snprintf(a->audited_op, sizeof a->audited_op, "%s", op);
    a->audited_code = code;
    a->audited_mono_ms = now;
    return true;
}

static bool permanent(int rv)
{
    return rv == GERR_INVAL || rv == GERR_PERM || rv == GERR_EXISTS;
}

/* Failures that clear by waiting (throttling, an unavailable or slow backend, conflicts, a
 * namespace being deleted): a create failing so is retried until the provisioning deadline, not
 * MAX_ATTEMPTS times. */
static bool transient(int rv)
{
    return rv == GERR_BUSY || rv == GERR_UNAVAILABLE || rv == GERR_TIMEOUT || rv == GERR_ABORTED ||
           rv == GERR_CLOSED;
}

static unsigned provision_deadline(const struct reconciler *r)
{
    return r->cfg.provision_deadline_ms != 0 ? r->cfg.provision_deadline_ms : 300000u;
}

static bool stale(struct reconciler *r, int rv, const char *err)
{
    if (rv != DRIVER_ERR_STALE) {
        return false;
    }
    LOG_WARN("reconciler: the driver refused epoch %" PRIu64 " (%s): stop acting", r->epoch, err);
    bump(r, &r->st.stale_refusals);
    r->lease.held = false;
    return true;
}

/* A driver call (@what: "create", "ensure_namespace", "get", "delete") failed for @w: a
 * DriverError condition and (rate-limited) an audit event now; a retry after the backoff. Only a
 * sandbox being created ends in ERROR, when the failure is permanent or keeps happening. */
static void driver_failed(struct reconciler *r, const struct row *w, const char *what, int rv,
                          const char *err)
{
    bump(r, &r->st.driver_errors);
    if (stale(r, rv, err)) {
        return;
    }
    bool creating = strcmp(what, "create") == 0 || strcmp(what, "ensure_namespace") == 0;
    /* NULL: the table of MAX_TRACKED sandboxes is full (a mass outage). Untracked, a failure that
     * clears by waiting is retried on the next pass (without backoff) rather than given up. */
    struct attempt *a = attempt_of(r, w->id, true);
    unsigned failures = a != NULL ? ++a->failures : 1;
    if (a != NULL && failures == 1) {
        a->first_mono_ms = now_mono();
    }
    unsigned deadline = provision_deadline(r);
    bool given_up;
    if (a == NULL) {
        given_up = !transient(rv);
    } else if (transient(rv)) {
        given_up = now_mono() - a->first_mono_ms >= deadline;
    } else {
        given_up = failures >= MAX_ATTEMPTS;
    }
    char msg[GERR_MSG_SIZE], op[40];
    snprintf(msg, sizeof msg, "%s: %s", what, err);
    snprintf(op, sizeof op, "reconciler/driver.%s", what);
    struct reconciler_audit ev = {.operation = op,
                                  .ns = w->ns,
                                  .sandbox_id = w->id,
                                  .sandbox_name = w->name,
                                  .actor = r->holder,
                                  .epoch = r->epoch,
                                  .code = rv,
                                  .message = msg};
    const struct reconciler_audit *audit = audit_due(a, op, rv) ? &ev : NULL;
    LOG_WARN("reconciler: sandbox %s/%s: %s (%s, attempt %u)", w->ns, w->name, msg, gerr_name(rv), failures);
    const char *handle = w->status != NULL ? w->status->driver_handle : "";
    if (creating && (permanent(rv) || given_up)) {
        record(r, w, "ERROR", handle, msg, gerr_name(rv), audit, rv);
        forget_attempts(r, w->id);
        return;
    }
    if (a != NULL) {
        unsigned shift = failures - 1 < 6 ? failures - 1 : 6;
        uint64_t backoff = 1000u << shift;
        a->next_mono_ms = now_mono() + (backoff > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff);
    }
    record(r, w, w->phase, handle, msg, gerr_name(rv), audit, rv);
}

static void remove_sandbox(struct reconciler *r, const struct row *w, const char *why)
{
    char err[GERR_MSG_SIZE] = "";
    int rv = driver_delete(r->cfg.driver, r->epoch, w->ns, w->id, err);
    if (rv != 0) {
        driver_failed(r, w, "delete", rv, err);
        return;
    }
    struct write x = {.r = r, .w = w, .remove = true};
    if (write(r, &x) == 0) {
        LOG_INFO("reconciler: sandbox %s/%s removed (%s)", w->ns, w->name, why);
        bump(r, &r->st.deletes);
        forget_attempts(r, w->id); /* gone: nothing left to rate-limit */
    }
}

/* The credentials of row @w's providers, when the driver delivers them and a resolver is set
 * (*@got: @out must be released). */
static int resolve_creds(struct reconciler *r, const struct row *w, struct reconciler_creds *out, bool *got,
                         char *err)
{
    *got = false;
    if (w->spec->n_providers == 0 || r->cfg.creds == NULL) {
        return 0;
    }
    struct driver_caps caps;
    driver_capabilities(r->cfg.driver, &caps);
    if (!caps.credentials) {
        return 0; /* documented: this driver starts sandboxes without their credentials */
    }
    int rv = r->cfg.creds(r->cfg.creds_arg, &r->cl, w->ns, (const char *const *)w->spec->providers,
                          w->spec->n_providers, out, err);
    *got = rv == 0;
    return rv;
}

static void sync_row(struct reconciler *r, const struct row *w)
{
    if (!lease_valid(&r->lease)) {
        return;
    }
    struct attempt *a = attempt_of(r, w->id, false);
    if (a != NULL && now_mono() < a->next_mono_ms) {
        return; /* backing off */
    }
    if (strcmp(w->phase, "DELETING") == 0) {
        remove_sandbox(r, w, "deleted");
        return;
    }
    if (strcmp(w->phase, "ERROR") == 0) {
        return; /* terminal until deleted */
    }
    if (w->status != NULL && w->status->expires_at_ms != 0 && w->status->expires_at_ms <= now_wall()) {
        remove_sandbox(r, w, "lifetime over");
        return;
    }
    if (w->status != NULL && w->status->expires_at_ms != 0 &&
        (r->next_expiry_ms == 0 || w->status->expires_at_ms < r->next_expiry_ms)) {
        r->next_expiry_ms = w->status->expires_at_ms;
    }
    char err[GERR_MSG_SIZE] = "";
    struct driver_sandbox ds = {0};
    int rv = driver_get(r->cfg.driver, r->epoch, w->ns, w->id, &ds, err);
    if (rv == GERR_NOTFOUND && (strcmp(w->phase, "PROVISIONING") == 0 || strcmp(w->phase, "UNKNOWN") == 0)) {
        struct dspec d;
        struct reconciler_creds rc = {0};
        bool with_creds = false;
        dspec_build(&d, w->spec, w->id, w->ns, w->name, w->owner, w->labels, r->driver_name);
        const char *what = "credentials";
        rv = resolve_creds(r, w, &rc, &with_creds, err);
        if (rv == 0) {
            d.s.credentials = rc.items;
            d.s.n_credentials = rc.n;
            what = "ensure_namespace";
            rv = driver_ensure_namespace(r->cfg.driver, r->epoch, w->ns, err);
        }
        if (rv == 0) {
            what = "create";
            rv = driver_create(r->cfg.driver, r->epoch, &d.s, &ds, err);
        }
        if (with_creds) {
            r->cfg.creds_free(r->cfg.creds_arg, &rc);
        }
        dspec_close(&d);
        if (rv != 0) {
            driver_failed(r, w, what, rv, err);
            return;
        }
        bump(r, &r->st.creates);
        LOG_INFO("reconciler: sandbox %s/%s created (%s)", w->ns, w->name, ds.handle);
    } else if (rv == GERR_NOTFOUND) {
        /* It ran and is gone (a lost node, or removed behind our back): say so. */
        record(r, w, "UNKNOWN", w->status != NULL ? w->status->driver_handle : "",
               "the driver no longer has this sandbox", NULL, NULL, 0);
        return;
    } else if (rv != 0) {
        driver_failed(r, w, "get", rv, err);
        return;
    }
    succeeded(r, w->id);
    const char *phase = phase_text(ds.phase), *message = ds.message != NULL ? ds.message : "";
    char late[GERR_MSG_SIZE];
    bool never_ready = w->status == NULL || w->status->started_at_ms == 0;
    if (ds.phase == DRIVER_PHASE_PROVISIONING && never_ready && w->created_ms > 0 &&
        now_wall() - w->created_ms >= (int64_t)provision_deadline(r)) {
        /* A pod that never schedules or never pulls its image: the backend keeps reporting it
         * starting for ever; the deadline makes it final, with the backend's words. A sandbox that
         * was READY once and is starting again (its pod evicted and being replaced) is not stuck
         * in provisioning and keeps its phase from the backend. */
        snprintf(late, sizeof late, "not running %u s after it was made (the provisioning deadline): %.400s",
                 provision_deadline(r) / 1000u, message);
        phase = "ERROR";
        message = late;
    }
    record(r, w, phase, ds.handle != NULL ? ds.handle : "", message, NULL, NULL, 0);
    driver_sandbox_close(&ds);
}

/* --- passes --- */

/* May the pass go on? Renews the lease in the middle of a pass when a renewal is due, so a pass
 * longer than the renew deadline (hundreds of sandboxes, a slow driver) is not cut at the same
 * row every time and restarted from the top: the reconciler starvation the Jepsen lease checker
 * found (docs/reliability.md). False once this replica may no longer act under r->epoch. */
static bool keep_lease(struct reconciler *r)
{
    pthread_mutex_lock(&r->mu);
    bool stop = r->stop; /* a stop ends the pass: reconciler_stop joins this thread */
    pthread_mutex_unlock(&r->mu);
    if (stop || !lease_valid(&r->lease)) {
        return false;
    }
    if (clock_mono_ms(r->lease.clock) - r->lease.renewed_mono_ms < r->lease.retry_ms) {
        return true;
    }
    bool held = false;
    uint64_t epoch = 0;
    (void)lease_tick(&r->lease, &r->cl, &held, &epoch); /* a store error: valid until the deadline */
    return held && epoch == r->epoch && lease_valid(&r->lease);
}

static int each_row(struct reconciler *r, const char *where, const struct proto_value *p, unsigned n,
                    void (*fn)(struct reconciler *r, const struct row *w, void *arg), void *arg)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " SB_COLS " FROM sandboxes %s", where);
    int rv = store_client_query(&r->cl, sql, p, n, &rows);
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        if (!keep_lease(r)) {
            rv = GERR_CANCELED; /* cut short: the caller must not count these rows as synced */
            break;
        }
        struct row w;
        row_from(&w, &rows, i);
        if (w.spec != NULL) {
            fn(r, &w, arg);
        }
        row_close(&w);
    }
    proto_rows_close(&rows);
    return rv;
}

static void sync_one(struct reconciler *r, const struct row *w, void *arg)
{
    (void)arg;
    sync_row(r, w);
}

static int sync_ids(struct reconciler *r, const char *where, const struct proto_value *p, unsigned n)
{
    return each_row(r, where, p, n, sync_one, NULL);
}

/* A provider @arg (its name; NULL: any) changed: running sandboxes that name it get their
 * credential files again. A failure is logged and left for the provider's next change or the next
 * holder; a sandbox the driver does not have yet gets them when it is made. */
static void redeliver_row(struct reconciler *r, const struct row *w, void *arg)
{
    const char *provider = arg;
    bool names = false;
    for (size_t i = 0; i < w->spec->n_providers; i++) {
        names = names || provider == NULL || strcmp(w->spec->providers[i], provider) == 0;
    }
    if (!names) {
        return;
    }
    struct reconciler_creds rc = {0};
    bool got = false;
    char err[GERR_MSG_SIZE] = "";
    int rv = resolve_creds(r, w, &rc, &got, err);
    if (rv == 0 && got) {
        rv = driver_update_credentials(r->cfg.driver, r->epoch, w->ns, w->id, rc.items, rc.n, err);
    }
    if (got) {
        r->cfg.creds_free(r->cfg.creds_arg, &rc);
    }
    const char *why = provider != NULL ? provider : "(a new lease holder renews every sandbox's)";
    if (rv == 0 && got) {
        LOG_INFO("reconciler: credentials of sandbox %s/%s renewed (provider %s)", w->ns, w->name, why);
    } else if (rv != 0 && rv != GERR_NOTFOUND && !stale(r, rv, err)) {
        bump(r, &r->st.driver_errors);
        LOG_WARN("reconciler: renewing the credentials of sandbox %s/%s (provider %s): %s (%s)", w->ns,
                 w->name, why, err, gerr_name(rv));
    }
}

/* A new holder cannot tell which provider changes its predecessor applied (its resync starts the
 * change feed at the current revision), so every running sandbox with providers gets its
 * credential files again. */
static void redeliver_all(struct reconciler *r)
{
    (void)each_row(r, "WHERE phase IN ('READY', 'PROVISIONING')", NULL, 0, redeliver_row, NULL);
}

static int provider_changed(struct reconciler *r, const char *ns, const struct proto_value *id)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id->u.b.s)};
    int rv = store_client_query(&r->cl, "SELECT name FROM providers WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        char name[64];
        text(proto_rows_at(&rows, 0, 0), name, sizeof name);
        struct proto_value q[] = {proto_text(ns)};
        rv = each_row(r, "WHERE namespace = ? AND phase IN ('READY', 'PROVISIONING')", q, 1, redeliver_row,
                      name);
    }
    proto_rows_close(&rows);
    return rv;
}

/* Delete @s, which the driver has and the store does not; a failure is audited like any other. */
static void orphan(struct reconciler *r, const struct driver_sandbox *s)
{
    char err[GERR_MSG_SIZE] = "";
    int rv = driver_delete(r->cfg.driver, r->epoch, s->namespace, s->id, err);
    if (rv == 0) {
        LOG_INFO("reconciler: removed orphan sandbox %s/%s", s->namespace, s->id);
        bump(r, &r->st.deletes);
        forget_attempts(r, s->id);
        return;
    }
    bump(r, &r->st.driver_errors);
    if (stale(r, rv, err)) {
        return;
    }
    LOG_WARN("reconciler: removing orphan sandbox %s/%s: %s (%s)", s->namespace, s->id, err, gerr_name(rv));
    char msg[GERR_MSG_SIZE];
    snprintf(msg, sizeof msg, "delete of an orphan: %.480s", err);
    struct reconciler_audit ev = {.operation = "reconciler/driver.delete",
                                  .ns = s->namespace,
                                  .sandbox_id = s->id,
                                  .sandbox_name = s->name != NULL ? s->name : "",
                                  .actor = r->holder,
                                  .epoch = r->epoch,
                                  .code = rv,
                                  .message = msg};
    if (audit_due(attempt_of(r, s->id, true), ev.operation, rv)) {
        struct write x = {.r = r, .audits = {&ev}, .n_audits = 1, .audit_only = true};
        write(r, &x);
    }
}

/* The store against the driver: every live row synced, every driver sandbox without a row gone. */
static int resync(struct reconciler *r)
{
    int64_t rev = 0;
    int rv =
        store_client_query_int(&r->cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &rev);
    if (rv == 0) {
        rv = sync_ids(r, "WHERE phase NOT IN ('ERROR', 'STOPPED') ORDER BY created_at_ms", NULL, 0);
    }
    struct driver_sandbox_list list = {0};
    char err[GERR_MSG_SIZE] = "";
    if (rv == 0 && keep_lease(r)) {
        int drv = driver_list(r->cfg.driver, r->epoch, NULL, &list, err);
        if (drv == DRIVER_ERR_STALE) {
            r->lease.held = false;
        } else if (drv != 0) {
            LOG_WARN("reconciler: listing the driver: %s", err);
        }
    }
    for (size_t i = 0; rv == 0 && i < list.n && keep_lease(r); i++) {
        struct proto_value p[] = {proto_text(list.items[i].id)};
        int64_t n = 0;
        rv = store_client_query_int(&r->cl, "SELECT count(*) FROM sandboxes WHERE id = ?", p, 1, &n);
        if (rv == 0 && n == 0) {
            orphan(r, &list.items[i]);
        }
    }
    driver_sandbox_list_close(&list);
    if (rv == 0 && keep_lease(r)) { /* a pass cut short is not a resync: the next one is due */
        r->last_revision = (uint64_t)rev > r->last_revision ? (uint64_t)rev : r->last_revision;
        r->last_resync_ms = now_mono();
        r->pools_due = true;
        r->pools_orphans = true;
        bump(r, &r->st.resyncs);
    }
    return rv;
}

/* Remove what the driver made for deleted namespaces: the new one @ns (NULL: none) and those
 * pending from earlier failures. A failure keeps it pending for the next poll. */
static void remove_namespaces(struct reconciler *r, const char *ns)
{
    if (ns != NULL) {
        bool known = false;
        for (unsigned i = 0; i < r->n_ns_pending; i++) {
            known = known || strcmp(r->ns_pending[i], ns) == 0;
        }
        if (!known && r->n_ns_pending < MAX_NS_PENDING) {
            snprintf(r->ns_pending[r->n_ns_pending++], sizeof r->ns_pending[0], "%s", ns);
        } else if (!known) {
            LOG_WARN("reconciler: namespace %s was deleted, but %u namespace removals are pending already: "
                     "the driver keeps what it made for it",
                     ns, MAX_NS_PENDING);
        }
    }
    for (unsigned i = 0; i < r->n_ns_pending && lease_valid(&r->lease);) {
        char err[GERR_MSG_SIZE] = "";
        int rv = driver_delete_namespace(r->cfg.driver, r->epoch, r->ns_pending[i], err);
        if (rv == 0) {
            LOG_INFO("reconciler: namespace %s deleted: the driver removed what it made for it",
                     r->ns_pending[i]);
        } else if (stale(r, rv, err)) {
            return;
        } else {
            LOG_WARN("reconciler: removing deleted namespace %s from the driver: %s (%s); will retry",
                     r->ns_pending[i], err, gerr_name(rv));
            i++;
            continue;
        }
        memmove(r->ns_pending[i], r->ns_pending[i + 1], (r->n_ns_pending - i - 1) * sizeof r->ns_pending[0]);
        r->n_ns_pending--;
    }
}

/* The change feed since the last revision: sync what changed. */
static int follow(struct reconciler *r)
{
    struct proto_rows ev;
    proto_rows_init(&ev, 0);
    struct proto_value p[] = {proto_int((int64_t)r->last_revision)};
    int rv = store_client_query(
        &r->cl,
        "SELECT revision, object_id, kind, namespace, type FROM events WHERE revision > ? AND "
        "(kind = 'Sandbox' OR (kind = 'Namespace' AND type = 'DELETED') OR "
        "(kind = 'Provider' AND type = 'MODIFIED') OR kind = 'WarmPool') "
        "ORDER BY revision LIMIT 500",
        p, 1, &ev);
    for (size_t i = 0; rv == 0 && i < ev.n_rows && keep_lease(r); i++) {
        char kind[16], ns[64];
        text(proto_rows_at(&ev, i, 2), kind, sizeof kind);
        text(proto_rows_at(&ev, i, 3), ns, sizeof ns);
        if (strcmp(kind, "WarmPool") == 0) {
            char type[16];
            text(proto_rows_at(&ev, i, 4), type, sizeof type);
            r->pools_due = true;
            r->pools_orphans = r->pools_orphans || strcmp(type, "DELETED") == 0;
        } else if (strcmp(kind, "Namespace") == 0) {
            r->pools_orphans = true; /* its pools went with it */
            remove_namespaces(r, ns);
        } else if (strcmp(kind, "Provider") == 0) {
            rv = provider_changed(r, ns, proto_rows_at(&ev, i, 1));
        } else {
            struct proto_value q[] = {proto_text(proto_rows_at(&ev, i, 1)->u.b.s)};
            rv = sync_ids(r, "WHERE id = ?", q, 1);
        }
        if (rv == 0) {
            r->last_revision = (uint64_t)proto_rows_at(&ev, i, 0)->u.i;
        }
    }
    proto_rows_close(&ev);
    if (rv == 0 && r->n_ns_pending > 0) {
        remove_namespaces(r, NULL);
    }
    return rv;
}

/* The warm pool pass (leases/warmpools.h): when a WarmPool changed, at every resync, and every
 * POOLS_POLL_MS while pools exist (their ready members change without events). */
#define POOLS_POLL_MS 2000u

static void pools_pass(struct reconciler *r)
{
    if (!r->pools || !lease_valid(&r->lease)) {
        return;
    }
    uint64_t now = now_mono();
    if (!r->pools_due && now - r->last_pools_ms < POOLS_POLL_MS) {
        return;
    }
    if (!r->pools_due && !r->pools_orphans) {
        int64_t n = 0;
        if (store_client_query_int(&r->cl, "SELECT count(*) FROM warm_pools", NULL, 0, &n) != 0 || n == 0) {
            r->last_pools_ms = now;
            return;
        }
    }
    struct warmpools_pass p = {.driver = r->cfg.driver,
                               .cl = &r->cl,
                               .writer = r->cfg.writer,
                               .lease = RECONCILER_LEASE,
                               .holder = r->holder,
                               .epoch = r->epoch,
                               .orphans = r->pools_orphans};
    struct warmpools_result res;
    int rv = warmpools_sync(&p, &res);
    r->last_pools_ms = now_mono();
    if (rv == DRIVER_ERR_STALE) {
        bump(r, &r->st.stale_refusals);
        r->lease.held = false;
        return;
    }
    if (rv == 0) {
        r->pools_due = false;
        r->pools_orphans = false;
    }
    if (res.failed > 0) {
        bump(r, &r->st.driver_errors);
    }
}

static void publish(struct reconciler *r, bool held)
{
    pthread_mutex_lock(&r->mu);
    r->st.held = held;
    r->st.epoch = held ? r->epoch : 0;
    pthread_mutex_unlock(&r->mu);
}

static bool wait_or_stop(struct reconciler *r, unsigned ms)
{
    struct timespec until;
    clock_mono_deadline(&until, ms);
    pthread_mutex_lock(&r->mu);
    while (!r->stop && clock_cond_wait_mono(&r->cond, &r->mu, &until) == 0) {
    }
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static void *reconciler_main(void *arg)
{
    struct reconciler *r = arg;
    unsigned poll_ms = r->cfg.poll_ms != 0 ? r->cfg.poll_ms : 200;
    unsigned resync_ms = r->cfg.resync_ms != 0 ? r->cfg.resync_ms : 30000;
    uint64_t last_tick = 0;
    bool held = false;
    for (;;) {
        uint64_t now = now_mono();
        if (last_tick == 0 || now - last_tick >= r->lease.retry_ms || !held) {
            uint64_t epoch = 0;
            bool was = held;
            lease_tick(&r->lease, &r->cl, &held, &epoch);
            last_tick = now;
            if (held && epoch != r->epoch) {
                r->epoch = epoch;
                r->n_attempts = 0;
                publish(r, true);
                resync(r); /* a new holder adopts what exists before anything else */
                if (r->cfg.creds != NULL && lease_valid(&r->lease)) {
                    redeliver_all(r);
                }
            } else if (held && !was) {
                /* The same epoch again (the deadline passed but nobody took the row): nobody
                 * else acted meanwhile, but a pass may have been cut short: resync. A pass renews
                 * the lease as it goes (keep_lease), so it is not cut again at the same row. */
                publish(r, true);
                resync(r);
            } else if (!held && was) {
                publish(r, false);
            }
        }
        if (held && lease_valid(&r->lease)) {
            bool expired = r->next_expiry_ms != 0 && now_wall() >= r->next_expiry_ms;
            if (now_mono() - r->last_resync_ms >= resync_ms || expired) {
                r->next_expiry_ms = 0; /* recomputed by the pass */
                resync(r);
            } else {
                follow(r);
            }
            pools_pass(r);
            /* Backends move on without telling us (PROVISIONING -> READY): poll those in
             * transition every second. */
            if (lease_valid(&r->lease) && now_mono() - r->last_transitional_ms >= 1000) {
                r->last_transitional_ms = now_mono();
                sync_ids(r,
                         "WHERE phase IN ('PROVISIONING', 'DELETING', 'UNKNOWN') ORDER BY created_at_ms "
                         "LIMIT 1000",
                         NULL, 0);
            }
        }
        if (held && !lease_valid(&r->lease)) {
            held = false;
            publish(r, false);
        }
        if (wait_or_stop(r, held ? poll_ms : (unsigned)r->lease.retry_ms)) {
            break;
        }
    }
    publish(r, false);
    lease_release(&r->lease, &r->cl);
    return NULL;
}

int reconciler_start(const struct reconciler_config *cfg, struct reconciler **out, char *errmsg)
{
    struct reconciler *r = mem_zalloc(sizeof *r);
    r->cfg = *cfg;
    snprintf(r->holder, sizeof r->holder, "%s", cfg->holder);
    snprintf(r->driver_name, sizeof r->driver_name, "%s", cfg->driver_name);
    snprintf(r->gateway_id, sizeof r->gateway_id, "%s", cfg->gateway_id != NULL ? cfg->gateway_id : "");
    r->cfg.holder = r->holder;
    r->cfg.driver_name = r->driver_name;
    r->cfg.gateway_id = r->gateway_id;
    struct lease_config lc = cfg->lease;
    lc.name = RECONCILER_LEASE;
    lc.holder = r->holder;
    int rv = lease_init(&r->lease, &lc);
    if (rv != 0) {
        gerr_set(errmsg,
                 "reconciler: bad lease timing (renew deadline below duration, retry below deadline)");
        mem_free(r);
        return rv;
    }
    /* A request stuck on a paused or partitioned leader must not outlive the lease's renew
     * deadline: the holder has to notice it lost the store in time, and a contender must not sit
     * behind a frozen connection while the lease expires. */
    struct store_client_config sc = cfg->store;
    unsigned bound = (unsigned)(r->lease.renew_deadline_ms / 2);
    sc.request_timeout_ms = bound;
    sc.leader_timeout_ms = bound;
    sc.connect_timeout_ms = bound;
    rv = store_client_init(&r->cl, &sc);
    if (rv != 0) {
        gerr_set(errmsg, "reconciler: %s", r->cl.errmsg);
        mem_free(r);
        return rv;
    }
    r->attempts = mem_zalloc(sizeof *r->attempts * MAX_TRACKED);
    struct driver_caps caps = {0};
    if (cfg->driver != NULL) {
        driver_capabilities(cfg->driver, &caps);
    }
    r->pools = caps.pools;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&r->thread, NULL, reconciler_main, r) != 0) {
        store_client_close(&r->cl);
        mem_free(r->attempts);
        mem_free(r);
        gerr_set(errmsg, "reconciler: cannot start its thread");
        return GERR_NOMEM;
    }
    *out = r;
    return 0;
}

void reconciler_status(struct reconciler *r, struct reconciler_status *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    pthread_mutex_unlock(&r->mu);
}

void reconciler_stop(struct reconciler *r)
{
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    store_client_close(&r->cl);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    mem_free(r->attempts);
    mem_free(r);
}
