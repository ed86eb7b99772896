/* Principals.LinkIdentity, UnlinkIdentity and ListIdentities (api/services/links_svc.h). */
#include "api/services/links_svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/gate/gate.h"
#include "api/services/principals_svc.h"
#include "gantry/v1/principals.pb-c.h"
#include "lib/mem.h"
#include "store/events.h"

#define SUBJECT_MAX 255u

static char *col(const struct proto_rows *r, size_t row, unsigned c)
{
    const struct proto_value *v = proto_rows_at(r, row, c);
    return v->type == PROTO_TEXT ? (char *)v->u.b.s : "";
}

/* issuer: "mtls" or an issuer name (a DNS label, as the issuers file requires). */
static bool pair_ok(struct gate_ctx *ctx, const char *issuer, const char *subject)
{
    size_t il = strlen(issuer), sl = strlen(subject);
    bool ok = il > 0 && il <= 63;
    for (size_t i = 0; ok && i < il; i++) {
        ok = (issuer[i] >= 'a' && issuer[i] <= 'z') || (issuer[i] >= '0' && issuer[i] <= '9') ||
             issuer[i] == '-';
    }
    if (!ok) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "identity.issuer must be the name of a configured OIDC issuer or \"mtls\"");
        return false;
    }
    if (sl == 0 || sl > SUBJECT_MAX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "identity.subject is required (at most %u bytes)",
                  SUBJECT_MAX);
        return false;
    }
    return true;
}

static void identity_msg(Gantry__V1__ExternalIdentity *m, const struct proto_rows *r, size_t i)
{
    gantry__v1__external_identity__init(m);
    m->principal_id = col(r, i, 0);
    m->issuer = col(r, i, 1);
    m->subject = col(r, i, 2);
    m->created_by = col(r, i, 3);
    m->created_at_ms = proto_rows_at(r, i, 4)->u.i;
}

#define LINK_COLS "principal_id, issuer, subject, created_by, created_at_ms"

/* The model's columns: LINK_COLS and its order key, issuer and subject joined by a newline (issuer
 * names hold none and sort before it, so the model's order is ORDER BY issuer, subject). */
#define LINK_MODEL_COLS LINK_COLS ", issuer || char(10) || subject"

static uint8_t *pack_link(const struct proto_rows *r, size_t i, size_t *len)
{
    Gantry__V1__ExternalIdentity m;
    identity_msg(&m, r, i);
    return kind_model_pack(&m.base, len);
}

struct kind_model *links_svc_links_model_new(void)
{
    struct kind_model_config cfg = {.kind = "PrincipalLink",
                                    .what = "linked identity",
                                    .table = "principal_links",
                                    .cols = LINK_MODEL_COLS,
                                    .n_cols = 6,
                                    .ns_col = KIND_MODEL_NO_COL,
                                    .name_col = 5,
                                    .labels_col = KIND_MODEL_NO_COL,
                                    .key_col = 0, /* a link's events carry its principal's id */
                                    .key_where = "principal_id = ?",
                                    .key = KIND_MODEL_KEY_OBJECT_ID,
                                    .parent_kind = "Principal",
                                    .parent_key = KIND_MODEL_KEY_OBJECT_ID,
                                    .parent_col = 0,
                                    .parent_where = "principal_id = ?",
                                    .desc = &gantry__v1__external_identity__descriptor,
                                    .pack = pack_link};
    return kind_model_new(&cfg);
}

static int link_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__LinkIdentityRequest *req = c->arg;
    const Gantry__V1__ExternalIdentity *in = req->identity;
    struct proto_value pp[] = {proto_text(in->principal_id)};
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_tx_query(tx,
                            "SELECT id, kind, name FROM principals WHERE id = ?1 OR name = ?1 "
                            "ORDER BY kind = 'user' DESC, id = ?1 DESC, id LIMIT 1",
                            pp, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "identity.principal_id: no principal \"%.63s\"", in->principal_id);
    }
    char id[40] = "", name[64] = "";
    if (rv == 0) {
        snprintf(id, sizeof id, "%s", col(&rows, 0, 0));
        snprintf(name, sizeof name, "%s", col(&rows, 0, 2));
    }
    proto_rows_close(&rows);
    int64_t taken = 0;
    struct proto_value kp[] = {proto_text(in->issuer), proto_text(in->subject)};
    if (rv == 0) {
        rv = store_tx_query_int(
            tx,
            "SELECT (SELECT count(*) FROM principals WHERE issuer = ?1 AND subject = ?2) + "
            "(SELECT count(*) FROM principal_links WHERE issuer = ?1 AND subject = ?2)",
            kp, 2, &taken);
    }
    if (rv == 0 && taken > 0) {
        rv = res_fail(tx, GERR_EXISTS,
                      "issuer \"%.63s\" subject \"%.100s\" already belongs to a principal: unlink it first",
                      in->issuer, in->subject);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "PrincipalLink", "", id, name, "ADDED");
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_text(in->issuer), proto_text(in->subject), proto_text(id),
                                  proto_text(c->ctx->who.id), proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(tx,
                           "INSERT INTO principal_links (issuer, subject, principal_id, created_by, "
                           "created_at_ms) VALUES (?, ?, ?, ?, ?)",
                           p, 5, NULL);
    }
    if (rv == 0) {
        Gantry__V1__ExternalIdentity out = GANTRY__V1__EXTERNAL_IDENTITY__INIT;
        out.principal_id = id;
        out.issuer = in->issuer;
        out.subject = in->subject;
        out.created_by = c->ctx->who.id;
        out.created_at_ms = c->ctx->now_ms;
        res_reply(c, &out.base);
        rv = res_event_payload(tx, c, &out.base); /* Events.Watch's object */
    }
    return rv;
}

static void link_(struct gate_ctx *ctx, void *data)
{
    const struct res_env *env = data;
    const Gantry__V1__LinkIdentityRequest *req = (const void *)grpc_call_request(ctx->call);
    if (req->identity == NULL || req->identity->principal_id[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "identity.principal_id is required");
        return;
    }
    if (!pair_ok(ctx, req->identity->issuer, req->identity->subject)) {
        return;
    }
    res_mutate(ctx, env, req->request_id, &gantry__v1__external_identity__descriptor, link_tx, (void *)req);
}

static int unlink_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__UnlinkIdentityRequest *req = c->arg;
    struct proto_value kp[] = {proto_text(req->issuer), proto_text(req->subject)};
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_tx_query(tx, "SELECT principal_id FROM principal_links WHERE issuer = ? AND subject = ?",
                            kp, 2, &rows);
    char id[40] = "";
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "issuer \"%.63s\" subject \"%.100s\" is not linked to any principal",
                      req->issuer, req->subject);
    } else if (rv == 0) {
        snprintf(id, sizeof id, "%s", col(&rows, 0, 0));
    }
    proto_rows_close(&rows);
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM principal_links WHERE issuer = ? AND subject = ?", kp, 2, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "PrincipalLink", "", id, "", "DELETED");
    }
    if (rv == 0) { /* the DELETED event's payload: the link that went */
        Gantry__V1__ExternalIdentity gone = GANTRY__V1__EXTERNAL_IDENTITY__INIT;
        gone.principal_id = id;
        gone.issuer = req->issuer;
        gone.subject = req->subject;
        rv = res_event_payload(tx, c, &gone.base);
    }
    if (rv == 0) {
        Gantry__V1__DeleteResponse out = GANTRY__V1__DELETE_RESPONSE__INIT;
        out.id = id;
        out.revision = (uint64_t)c->revision;
        res_reply(c, &out.base);
    }
    return rv;
}

static void unlink_(struct gate_ctx *ctx, void *data)
{
    const struct res_env *env = data;
    const Gantry__V1__UnlinkIdentityRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!pair_ok(ctx, req->issuer, req->subject)) {
        return;
    }
    res_mutate(ctx, env, req->request_id, &gantry__v1__delete_response__descriptor, unlink_tx, (void *)req);
}

struct resolve_arg {
    const char *who;
    char id[40];  /* "" when no principal has that id or name */
    uint64_t rev; /* the principals model's revision when read */
};

static void resolve_model(const struct kind_model_view *v, void *arg)
{
    struct resolve_arg *a = arg;
    a->rev = v->rev;
    if (!principals_model_resolve(v, a->who, a->id)) {
        a->id[0] = '\0';
    }
}

struct links_arg {
    struct gate_ctx *ctx;
    const char *id;
    uint64_t resolved_rev; /* the principals model's revision the id was resolved at */
};

/* Under the links model's lock: the store path's list (that principal's links by issuer and
 * subject, at most 1000). */
static void links_model(const struct kind_model_view *v, void *arg)
{
    struct links_arg *a = arg;
    Gantry__V1__ExternalIdentity **ps = mem_zalloc(sizeof *ps * 1001);
    size_t n = 0;
    for (size_t i = 0; a->id[0] != '\0' && i < v->n && n < 1000; i++) {
        if (strcmp(v->entries[i].key, a->id) == 0) {
            ps[n++] = (Gantry__V1__ExternalIdentity *)v->entries[i].msg;
        }
    }
    Gantry__V1__ListIdentitiesResponse resp = GANTRY__V1__LIST_IDENTITIES_RESPONSE__INIT;
    resp.n_identities = n;
    resp.identities = ps;
    /* Two models, each at the revision it had: the answer reflects every change up to the smaller. */
    resp.revision = a->resolved_rev < v->rev ? a->resolved_rev : v->rev;
    grpc_call_finish_async(a->ctx->call, 0, NULL, &resp.base);
    mem_free(ps);
}

static bool list_model(struct gate_ctx *ctx, const struct links_reads *rd,
                       const Gantry__V1__ListIdentitiesRequest *req, const char *who, bool *answered)
{
    uint64_t need = 0;
    if (!kind_model_wait(rd != NULL ? &rd->links : NULL, ctx, req->read, &need, answered) || rd == NULL ||
        rd->principals.store_reads) {
        return false;
    }
    struct resolve_arg r = {.who = who};
    struct links_arg a = {.ctx = ctx, .id = r.id};
    if (!kind_model_read(rd->principals.model, need, resolve_model, &r)) {
        return false;
    }
    a.resolved_rev = r.rev;
    if (!kind_model_read(rd->links.model, need, links_model, &a)) {
        return false;
    }
    if (rd->model_reads != NULL) {
        atomic_fetch_add(rd->model_reads, 1);
    }
    return true;
}

static void list(struct gate_ctx *ctx, void *data)
{
    const struct links_reads *rd = data;
    const Gantry__V1__ListIdentitiesRequest *req = (const void *)grpc_call_request(ctx->call);
    const char *who = req->principal_id[0] != '\0' ? req->principal_id : ctx->who.id;
    if (ctx->decision.self_check) {
        if (strcmp(who, ctx->who.id) != 0 && strcmp(who, ctx->who.name) != 0) {
            gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED,
                      "listing another principal's linked identities needs the platform_admin, auditor or "
                      "namespace_admin role");
            return;
        }
        /* One's own name may also be another principal's (a user and a service account, service
         * accounts of other namespaces): a caller held to itself lists its own links, by its id. */
        who = ctx->who.id;
    }
    bool answered = false;
    if (list_model(ctx, rd, req, who, &answered) || answered) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(who)};
    int rv = store_client_query(
        ctx->cl,
        STORE_LIST_AT_REVISION(
            "SELECT " LINK_COLS " FROM principal_links WHERE principal_id = (SELECT id FROM "
            "principals WHERE id = ?1 OR name = ?1 ORDER BY kind = 'user' DESC, id = ?1 DESC, id "
            "LIMIT 1) "
            "ORDER BY issuer, subject LIMIT 1000",
            "x.issuer, x.subject"),
        p, 1, &rows);
    uint64_t revision = 0;
    if (rv == 0) {
        rv = store_list_revision(&rows, &revision);
    }
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list identities: %s", ctx->cl->errmsg);
        proto_rows_close(&rows);
        return;
    }
    Gantry__V1__ExternalIdentity *ms = mem_zalloc(sizeof *ms * (rows.n_rows + 1));
    Gantry__V1__ExternalIdentity **ps = mem_zalloc(sizeof *ps * (rows.n_rows + 1));
    for (size_t i = 0; i < rows.n_rows; i++) {
        identity_msg(&ms[i], &rows, i);
        ps[i] = &ms[i];
    }
    Gantry__V1__ListIdentitiesResponse resp = GANTRY__V1__LIST_IDENTITIES_RESPONSE__INIT;
    resp.n_identities = rows.n_rows;
    resp.identities = ps;
    resp.revision = revision;
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    proto_rows_close(&rows);
}

int links_svc_register(struct gate *g, const struct res_env *env, const struct links_reads *reads,
                       char *errmsg)
{
    if (gate_route(g, "/gantry.v1.Principals/LinkIdentity", link_, (void *)env) != 0 ||
        gate_route(g, "/gantry.v1.Principals/UnlinkIdentity", unlink_, (void *)env) != 0 ||
        gate_route(g, "/gantry.v1.Principals/ListIdentities", list, (void *)reads) != 0) {
        gerr_set(errmsg, "links service: cannot route the identity methods");
        return GERR_INVAL;
    }
    return 0;
}
