/* The gantry.v1.Cluster service (api/services/cluster_svc.h). */
#include "api/services/cluster_svc.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "api/gate/audit.h"
#include "api/gate/gate.h"
#include "api/proto/services.h"
#include "api/rules/page.h"
#include "api/services/clusterdb.h"
#include "raft/catchup.h"
#include "raft/cakeeper.h"
#include "raft/certrevoke.h"
#include "raft/roles.h"
#include "gantry/v1/cluster.pb-c.h"
#include "server/grpc/client.h"
#include "leases/reconciler.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "store/archive.h"
#include "store/backup.h"
#include "store/migrate.h"

enum method { M_LIST, M_LEADER, M_TRANSFER, M_REMOVE, M_JOIN, M_HEALTH, M_BACKUP, M_LEASE };

struct job {
    struct cluster_svc *svc;
    struct grpc_call *call;
    enum method m;
    struct gate_ctx *ctx;
};

/* A cluster write and its audit event in one transaction. */
struct audited {
    store_tx_fn fn;
    void *arg;
    struct audit_record rec;
};

static int audited_tx(struct store_tx *tx, void *arg)
{
    struct audited *a = arg;
    int rv = a->fn(tx, a->arg);
    if (rv == 0) {
        rv = audit_insert_tx(tx, &a->rec);
    }
    return rv;
}

static struct audit_record audit_rec(const struct job *j, const char *type, const char *id, const char *name,
                                     bool ok, int status, const char *message)
{
    const struct gate_ctx *ctx = j->ctx;
    return (struct audit_record){.time_ms = ctx->now_ms,
                                 .class_uid = AUDIT_CLASS_API_ACTIVITY,
                                 .activity = audit_activity_of(grpc_call_method(j->call)),
                                 .actor_id = ctx->who.id,
                                 .actor_name = ctx->who.name,
                                 .actor_kind = ctx->who.kind,
                                 .operation = grpc_call_method(j->call),
                                 .resource_type = type,
                                 .resource_id = id,
                                 .resource_name = name,
                                 .success = ok,
                                 .status_code = status,
                                 .message = message,
                                 .source = grpc_call_peer(j->call),
                                 .replica_id = j->svc->replica_id,
                                 .gateway_id = j->svc->id->gateway_id};
}

/* Run @fn with its audit event; a failure is audited on its own. */
static int run_audited(struct job *j, store_tx_fn fn, void *arg, const char *type, const char *id,
                       const char *name, char *err)
{
    struct audited a = {.fn = fn, .arg = arg, .rec = audit_rec(j, type, id, name, true, 0, "")};
    int rv = store_writer_run(j->svc->writer, audited_tx, &a, err);
    if (rv != 0 && j->svc->sink != NULL) {
        struct audit_record r = audit_rec(j, type, id, name, false, grpc_status_from_gerr(rv), err);
        audit_sink_record(j->svc->sink, &r);
    }
    return rv;
}

/* What one method answers: status, message and the reply (owned by the method's code). */
struct answer {
    int status;
    char msg[GERR_MSG_SIZE];
};

static int64_t wall_ms(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

static void fail(struct answer *a, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct answer *a, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
    a->status = status;
}

static void fail_store(struct answer *a, int gerr, const char *what, const char *detail)
{
    fail(a, grpc_status_from_gerr(gerr), "%s: %s", what,
         detail != NULL && detail[0] != '\0' ? detail : gerr_str(gerr));
}

static Gantry__V1__MemberRole role_of(int role)
{
    return role == PROTO_ROLE_VOTER     ? GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER
           : role == PROTO_ROLE_STANDBY ? GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY
                                        : GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_SPARE;
}

/* Members as the API shows them: the view (roles, health) joined with the member rows. */
struct member_set {
    Gantry__V1__Member *m;
    Gantry__V1__Member **ptrs;
    unsigned n;
    char (*text)[3][256]; /* name, failure domain, address per member */
};

static void member_set_build(const struct cluster_svc *svc, struct member_set *s,
                             const struct replica_view *v, const struct clusterdb_member *rows,
                             unsigned n_rows)
{
    uint64_t now_mono = clock_mono_ms(clock_system());
    int64_t now_wall = wall_ms();
    s->n = v->n;
    s->m = mem_zalloc(sizeof *s->m * (v->n + 1));
    s->ptrs = mem_zalloc(sizeof *s->ptrs * (v->n + 1));
    s->text = mem_zalloc(sizeof *s->text * (v->n + 1));
    for (unsigned i = 0; i < v->n; i++) {
        const struct roles_node *node = &v->nodes[i];
        const struct clusterdb_member *row = NULL;
        for (unsigned j = 0; j < n_rows; j++) {
            if (rows[j].id == node->id) {
                row = &rows[j];
            }
        }
        Gantry__V1__Member *m = &s->m[i];
        gantry__v1__member__init(m);
        m->id = node->id;
        if (row != NULL && row->name[0] != '\0') {
            snprintf(s->text[i][0], sizeof s->text[i][0], "%s", row->name);
        } else {
            snprintf(s->text[i][0], sizeof s->text[i][0], "replica-%" PRIu64, node->id);
        }
        if (row != NULL && row->failure_domain_name[0] != '\0') {
            snprintf(s->text[i][1], sizeof s->text[i][1], "%s", row->failure_domain_name);
        } else if ((node->failure_domain & ~ROLES_STANDBY_SITE) != 0) {
            snprintf(s->text[i][1], sizeof s->text[i][1], "%" PRIu64,
                     node->failure_domain & ~ROLES_STANDBY_SITE);
        }
        m->standby_site = roles_in_standby_site(node);
        snprintf(s->text[i][2], sizeof s->text[i][2], "%s", node->address);
        m->name = s->text[i][0];
        m->failure_domain = s->text[i][1];
        m->address = s->text[i][2];
        m->api_address = row != NULL ? (char *)row->api_address : "";
        m->role = role_of(node->role);
        m->reachable = node->online;
        m->leader = node->id == v->leader_id;
        if (node->last_ok_ms != 0 && node->last_ok_ms <= now_mono) {
            m->last_contact_ms = now_wall - (int64_t)(now_mono - node->last_ok_ms);
        }
        if (m->leader) {
            m->lag_known = true;
        } else if (svc->member_lag != NULL && v->leader_id != 0) {
            m->lag_known = svc->member_lag(svc->member_lag_arg, node->id, v->leader_id, &m->lag_entries);
        }
        s->ptrs[i] = m;
    }
}

static void member_set_free(struct member_set *s)
{
    mem_free(s->m);
    mem_free(s->ptrs);
    mem_free(s->text);
}

/* The view, or UNAVAILABLE. */
static bool get_view(struct cluster_svc *svc, struct replica_view *v, struct answer *a)
{
    replica_view(svc->replica, v);
    if (!v->valid) {
        fail(a, GRPC_STATUS_UNAVAILABLE, "cluster membership is not known yet%s%s",
             v->errmsg[0] != '\0' ? ": " : "", v->errmsg);
        return false;
    }
    return true;
}

/* --- ListMembers / GetLeader / GetHealth --- */

static void do_list(struct job *j, struct store_client *cl, struct answer *a)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    struct clusterdb_member *rows = NULL;
    unsigned n_rows = 0;
    int64_t revision = 0;
    if (get_view(j->svc, v, a)) {
        int rv = clusterdb_members(cl, &rows, &n_rows);
        if (rv == 0) {
            rv = store_client_query_int(cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                        &revision);
        }
        if (rv != 0) {
            fail_store(a, rv, "list members", cl->errmsg);
        } else {
            struct member_set s;
            member_set_build(j->svc, &s, v, rows, n_rows);
            Gantry__V1__ListMembersResponse resp = GANTRY__V1__LIST_MEMBERS_RESPONSE__INIT;
            resp.n_members = s.n;
            resp.members = s.ptrs;
            resp.revision = (uint64_t)revision;
            grpc_call_finish_async(j->call, 0, NULL, &resp.base);
            member_set_free(&s);
            a->status = -1; /* answered */
        }
    }
    mem_free(rows);
    mem_free(v);
}

static void do_leader(struct job *j, struct store_client *cl, struct answer *a)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    struct clusterdb_member *rows = NULL;
    unsigned n_rows = 0;
    if (get_view(j->svc, v, a)) {
        /* Ask dqlite now rather than trust the view (up to a roles interval old): a fresh
         * connection finds the current leader. */
        store_client_disconnect(cl);
        int rv = store_client_connect(cl);
        if (rv == 0) {
            v->leader_id = cl->leader_id;
            rv = clusterdb_members(cl, &rows, &n_rows);
        }
        if (rv != 0) {
            fail_store(a, rv, "get leader", cl->errmsg);
        } else {
            struct member_set s;
            member_set_build(j->svc, &s, v, rows, n_rows);
            Gantry__V1__GetLeaderResponse resp = GANTRY__V1__GET_LEADER_RESPONSE__INIT;
            for (unsigned i = 0; i < s.n; i++) {
                if (s.m[i].leader) {
                    resp.leader = &s.m[i];
                }
            }
            if (resp.leader == NULL) {
                fail(a, GRPC_STATUS_UNAVAILABLE, "the cluster has no leader now");
            } else {
                grpc_call_finish_async(j->call, 0, NULL, &resp.base);
                a->status = -1;
            }
            member_set_free(&s);
        }
    }
    mem_free(rows);
    mem_free(v);
}

static void do_health(struct job *j, struct store_client *cl, struct answer *a)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(j->svc->replica, v);
    Gantry__V1__ClusterHealth resp = GANTRY__V1__CLUSTER_HEALTH__INIT;
    char problems[8][GERR_MSG_SIZE];
    char *pp[8];
    unsigned np = 0;
    unsigned n_schema;
    store_schema(&n_schema);
    const struct store_migration *schema = store_schema(&n_schema);
    resp.schema_version_wanted = schema[n_schema - 1].version;
    resp.cluster_id = (char *)j->svc->id->cluster_id;
    resp.gateway_id = (char *)j->svc->id->gateway_id;
    if (!v->valid) {
        snprintf(problems[np++], GERR_MSG_SIZE, "membership unknown: %.400s", v->errmsg);
    } else {
        resp.leader_id = v->leader_id;
        resp.members = v->n;
        for (unsigned i = 0; i < v->n; i++) {
            if (v->nodes[i].role == PROTO_ROLE_VOTER) {
                resp.voters++;
                resp.voters_reachable += v->nodes[i].online ? 1 : 0;
            } else if (v->nodes[i].role == PROTO_ROLE_STANDBY) {
                resp.standbys++;
            }
            if (!v->nodes[i].online && np < 6) {
                snprintf(problems[np++], GERR_MSG_SIZE, "member %" PRIu64 " (%s) does not answer",
                         v->nodes[i].id, v->nodes[i].address);
            }
        }
        if (v->leader_id == 0) {
            snprintf(problems[np++], GERR_MSG_SIZE, "no leader");
        }
        if (resp.voters_reachable * 2 <= resp.voters && np < 8) {
            snprintf(problems[np++], GERR_MSG_SIZE, "only %u of %u voters answer: no quorum",
                     resp.voters_reachable, resp.voters);
        }
    }
    int rv = store_schema_version(cl, &resp.schema_version);
    int64_t revision = 0;
    if (rv == 0) {
        rv = store_client_query_int(cl, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0,
                                    &revision);
    }
    resp.revision = (uint64_t)revision;
    if (rv != 0 && np < 8) {
        snprintf(problems[np++], GERR_MSG_SIZE, "the store does not answer: %.400s", cl->errmsg);
    } else if (resp.schema_version != resp.schema_version_wanted && np < 8) {
        snprintf(problems[np++], GERR_MSG_SIZE, "schema version %" PRId64 ", this replica wants %" PRId64,
                 resp.schema_version, resp.schema_version_wanted);
    }
    for (unsigned i = 0; i < np; i++) {
        pp[i] = problems[i];
    }
    resp.n_problems = np;
    resp.problems = pp;
    resp.healthy = np == 0;
    grpc_call_finish_async(j->call, 0, NULL, &resp.base);
    a->status = -1;
    mem_free(v);
}

/* --- TransferLeadership / RemoveMember --- */

static const struct roles_node *find_node(const struct replica_view *v, uint64_t id)
{
    for (unsigned i = 0; i < v->n; i++) {
        if (v->nodes[i].id == id) {
            return &v->nodes[i];
        }
    }
    return NULL;
}

/* Reconnect until the client names a leader other than @old (or @timeout_ms passes). */
static uint64_t wait_new_leader(struct store_client *cl, uint64_t old, unsigned timeout_ms)
{
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + timeout_ms;
    while (clock_mono_ms(clk) < deadline) {
        store_client_disconnect(cl);
        if (store_client_connect(cl) == 0 && cl->leader_id != 0 && cl->leader_id != old) {
            return cl->leader_id;
        }
        clk->sleep_ns(clk, 50 * 1000000ull);
    }
    return 0;
}

static void do_transfer(struct job *j, struct store_client *cl, struct answer *a)
{
    const Gantry__V1__TransferLeadershipRequest *req = (const void *)grpc_call_request(j->call);
    struct replica_view *v = mem_alloc(sizeof *v);
    if (get_view(j->svc, v, a)) {
        uint64_t target = req->target_id;
        const struct roles_node *t = target != 0 ? find_node(v, target) : NULL;
        if (target == 0) {
            /* The voter up the longest (see the stability rule below). */
            for (unsigned i = 0; i < v->n; i++) {
                if (v->nodes[i].role == PROTO_ROLE_VOTER && v->nodes[i].online &&
                    v->nodes[i].id != v->leader_id && (t == NULL || v->nodes[i].up_ms > t->up_ms)) {
                    t = &v->nodes[i];
                }
            }
        }
        if (target != 0 && t == NULL) {
            fail(a, GRPC_STATUS_NOT_FOUND, "member %" PRIu64 " is not in the cluster", target);
        } else if (t == NULL) {
            fail(a, GRPC_STATUS_FAILED_PRECONDITION, "no other reachable voter to transfer leadership to");
        } else if (t->role != PROTO_ROLE_VOTER) {
            fail(a, GRPC_STATUS_FAILED_PRECONDITION,
                 "member %" PRIu64 " is not a voter; only voters can lead", t->id);
        } else if (t->id == v->leader_id) {
            a->status = 0; /* already there: answer below */
        } else if (clock_mono_ms(clock_system()) - v->taken_ms > 20000) {
            /* A round probes every member in turn, so unreachable ones make it slow; past 20 s the
             * up times are too old to judge a target by. */
            fail(a, GRPC_STATUS_UNAVAILABLE,
                 "this replica's membership view is %" PRIu64 " s old (%s): try again or another replica",
                 (clock_mono_ms(clock_system()) - v->taken_ms) / 1000,
                 v->errmsg[0] != '\0' ? v->errmsg : "a probe round is still running");
        } else if (v->leader_id != j->svc->replica_id) {
            /* The catch-up rule compares this node's log with the target's: it must lead. */
            fail(a, GRPC_STATUS_UNAVAILABLE,
                 "leadership moved to member %" PRIu64 " while the call was on its way here: try again",
                 v->leader_id);
        } else if (req->catch_up_timeout_ms > 60000) {
            fail(a, GRPC_STATUS_INVALID_ARGUMENT, "catch_up_timeout_ms: %u is over the maximum of 60000",
                 req->catch_up_timeout_ms);
        } else {
            /* Only to a target that is caught up, with none of this replica's writes in flight:
             * dqlite 1.11 can crash the leader when TimeoutNow queues behind catch-up traffic
             * (raft/catchup.h). */
            uint64_t id = t->id, lag = 0;
            char why[GERR_MSG_SIZE] = "";
            int rv = 0;
            bool ready = false;
            unsigned wait_ms = req->catch_up_timeout_ms != 0 ? req->catch_up_timeout_ms : CATCHUP_TIMEOUT_MS;
            if (j->svc->catchup != NULL) {
                uint64_t t0 = clock_mono_ms(clock_system());
                if (!t->online && wait_ms > 1000) {
                    /* The view (up to a second old) calls it unreachable, a target just resumed
                     * or reconnected among them: the probe decides. One that does not answer
                     * within a second is refused then; one that answers gets the whole wait. */
                    rv = catchup_ready(j->svc->catchup, id, 1000, &lag, why);
                    /* An unknown lag is also the answer of a target too far behind to measure (a
                     * snapshot is on its way to it): one probe more tells it from a silent one. */
                    uint64_t probe_lag;
                    char probe_why[GERR_MSG_SIZE];
                    if (rv != 0 && (lag != RAFTLOG_LAG_UNKNOWN ||
                                    catchup_measure(j->svc->catchup, id, &probe_lag, probe_why) == 0)) {
                        uint64_t spent = clock_mono_ms(clock_system()) - t0;
                        if (spent < wait_ms) {
                            rv = catchup_ready(j->svc->catchup, id, (unsigned)(wait_ms - spent), &lag, why);
                        }
                    }
                } else {
                    rv = catchup_ready(j->svc->catchup, id, wait_ms, &lag, why);
                }
                ready = rv == 0;
            }
            if (rv == 0) {
                rv = store_client_transfer(cl, id);
            }
            if (ready) {
                catchup_done(j->svc->catchup); /* this replica's writes go again, to the new leader */
            }
            if (why[0] != '\0' && rv == GERR_UNAVAILABLE) {
                fail(a, GRPC_STATUS_UNAVAILABLE, "%s; try again when it has caught up", why);
            } else if (rv != 0) {
                fail_store(a, rv, "transfer leadership", cl->errmsg);
            } else if (wait_new_leader(cl, v->leader_id, 5000) == 0) {
                fail(a, GRPC_STATUS_UNAVAILABLE, "leadership transfer to %" PRIu64 " did not complete in 5 s",
                     id);
            } else {
                LOG_INFO("cluster: leadership transferred to %" PRIu64 " by request", cl->leader_id);
                char idtext[24];
                snprintf(idtext, sizeof idtext, "%" PRIu64, id);
                struct audit_record r = audit_rec(j, "Member", idtext, "", true, 0, "leadership transferred");
                if (j->svc->sink != NULL) {
                    audit_sink_record(j->svc->sink, &r); /* no store write of ours to share a transaction */
                }
            }
        }
        if (a->status == 0) {
            Gantry__V1__Member leader = GANTRY__V1__MEMBER__INIT;
            char addr[256] = "";
            leader.id = cl->leader_id != 0 ? cl->leader_id : v->leader_id;
            const struct roles_node *ln = find_node(v, leader.id);
            if (ln != NULL) {
                snprintf(addr, sizeof addr, "%s", ln->address);
                leader.role = role_of(ln->role);
                leader.reachable = true;
            }
            leader.address = addr;
            leader.leader = true;
            Gantry__V1__TransferLeadershipResponse resp = GANTRY__V1__TRANSFER_LEADERSHIP_RESPONSE__INIT;
            resp.leader = &leader;
            grpc_call_finish_async(j->call, 0, NULL, &resp.base);
            a->status = -1;
        }
    }
    mem_free(v);
}

static void do_remove(struct job *j, struct store_client *cl, struct answer *a)
{
    const Gantry__V1__RemoveMemberRequest *req = (const void *)grpc_call_request(j->call);
    struct replica_view *v = mem_alloc(sizeof *v);
    if (get_view(j->svc, v, a)) {
        const struct roles_node *t = find_node(v, req->id);
        if (req->id == 0) {
            fail(a, GRPC_STATUS_INVALID_ARGUMENT, "id: the member id to remove is required");
        } else if (t == NULL) {
            fail(a, GRPC_STATUS_NOT_FOUND, "member %" PRIu64 " is not in the cluster", req->id);
        } else if (req->id == v->leader_id) {
            fail(a, GRPC_STATUS_FAILED_PRECONDITION,
                 "member %" PRIu64 " leads the cluster: transfer leadership first (TransferLeadership)",
                 req->id);
        } else if (t->online && !req->force) {
            fail(a, GRPC_STATUS_FAILED_PRECONDITION,
                 "member %" PRIu64
                 " still answers: stop it first (SIGTERM hands over cleanly), or pass force",
                 req->id);
        } else {
            /* Revoke first: from the moment the member leaves the configuration its certificate
             * must be refused, and the replicas' relays learn revocations from this table within
             * CERTREVOKE_INTERVAL_MS. A member cut off before it leaves looks offline, which a
             * removal allows. A failure here stops the removal: retrying is safe. */
            struct certrevoke_member rm = {
                .member_id = req->id, .now_ms = wall_ms(), .reason = "removed by request"};
            char rerr[GERR_MSG_SIZE] = "";
            int rv = store_writer_run(j->svc->writer, certrevoke_member_tx, &rm, rerr);
            if (rv != 0) {
                memcpy(cl->errmsg, rerr, sizeof rerr);
                gerr_wrap(cl->errmsg, "revoke its certificate");
            } else if (rm.revoked == 0) {
                LOG_WARN("cluster: member %" PRIu64
                         " has no certificate on record of its own to revoke (%u shared "
                         "with another member): its certificate stays valid until it expires",
                         req->id, rm.shared);
            } else {
                LOG_INFO("cluster: revoked %u certificate(s) of member %" PRIu64 "%s", rm.revoked, req->id,
                         rm.shared > 0 ? " (one it shares with another member is not)" : "");
            }
            if (rv == 0) {
                rv = store_client_remove(cl, req->id);
            }
            if (rv == 0) {
                struct clusterdb_forget f = {.id = req->id};
                char err[GERR_MSG_SIZE] = "";
                char idtext[24];
                snprintf(idtext, sizeof idtext, "%" PRIu64, req->id);
                if (run_audited(j, clusterdb_forget_tx, &f, "Member", idtext, "", err) != 0) {
                    LOG_WARN("cluster: member %" PRIu64 " removed, but its row stays: %s", req->id, err);
                }
                LOG_INFO("cluster: member %" PRIu64 " removed by request", req->id);
                struct proto_node_info *nodes = NULL;
                unsigned n = 0;
                rv = store_client_cluster(cl, &nodes, &n);
                if (rv == 0) {
                    Gantry__V1__RemoveMemberResponse resp = GANTRY__V1__REMOVE_MEMBER_RESPONSE__INIT;
                    Gantry__V1__Member *ms = mem_zalloc(sizeof *ms * (n + 1));
                    Gantry__V1__Member **ps = mem_zalloc(sizeof *ps * (n + 1));
                    for (unsigned i = 0; i < n; i++) {
                        gantry__v1__member__init(&ms[i]);
                        ms[i].id = nodes[i].id;
                        ms[i].address = nodes[i].address;
                        ms[i].role = role_of(nodes[i].role);
                        ms[i].leader = nodes[i].id == cl->leader_id;
                        ps[i] = &ms[i];
                    }
                    resp.n_members = n;
                    resp.members = ps;
                    grpc_call_finish_async(j->call, 0, NULL, &resp.base);
                    a->status = -1;
                    mem_free(ms);
                    mem_free(ps);
                }
                mem_free(nodes);
            }
            if (rv != 0) {
                fail_store(a, rv, "remove member", cl->errmsg);
            }
        }
    }
    mem_free(v);
}

/* --- Join tokens: CreateJoinToken, ListJoinTokens, RevokeJoinToken --- */

static void token_msg(Gantry__V1__JoinToken *m, const struct clusterdb_token *t, const char *ca_fingerprint)
{
    gantry__v1__join_token__init(m);
    m->id = (char *)t->id;
    m->expires_at_ms = t->expires_ms;
    m->uses = t->uses_left;
    m->ca_fingerprint = (char *)ca_fingerprint;
    m->created_by = (char *)t->created_by;
    m->created_at_ms = t->created_ms;
}

struct token_create {
    struct clusterdb_token_new t;
    const char *token; /* the whole token: in this call's answer, never stored */
    const char *ca_fingerprint;
};

/* The token row, its change event and (by res_mutate) its audit event and idempotency record in
 * one transaction. The stored reply has no token: a retry under the same request_id gets the
 * metadata only, as for a new API key (the secret exists in this call's answer alone). */
static int token_create_tx(struct store_tx *tx, struct res_call *c)
{
    const struct token_create *a = c->arg;
    int rv = clusterdb_token_insert_tx(tx, &a->t);
    if (rv == 0) {
        rv = res_event(tx, c, "JoinToken", "", a->t.parts->id, "", "ADDED");
    }
    if (rv == 0) {
        struct clusterdb_token row = {
            .uses_left = a->t.uses, .expires_ms = a->t.expires_ms, .created_ms = a->t.now_ms};
        snprintf(row.id, sizeof row.id, "%s", a->t.parts->id);
        snprintf(row.created_by, sizeof row.created_by, "%s", a->t.created_by);
        Gantry__V1__JoinToken m;
        token_msg(&m, &row, a->ca_fingerprint);
        res_reply(c, &m.base);
        m.token = (char *)a->token;
        res_answer(c, &m.base);
    }
    return rv;
}

static void impl_token(struct gate_ctx *ctx, void *data)
{
    struct cluster_svc *svc = data;
    const Gantry__V1__CreateJoinTokenRequest *req = (const void *)grpc_call_request(ctx->call);
    unsigned ttl = req->ttl_seconds != 0 ? req->ttl_seconds : 3600;
    unsigned uses = req->uses != 0 ? req->uses : 1;
    if (ttl > 86400) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "ttl_seconds: %u is over the maximum of 86400 (one day)",
                  ttl);
        return;
    }
    if (uses > 100) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "uses: %u is over the maximum of 100", uses);
        return;
    }
    char token[JOIN_TOKEN_MAX_LEN + 1];
    struct join_token_parts parts;
    char cafp[PKI_FINGERPRINT_SIZE];
    cakeeper_fingerprint(svc->ca, cafp); /* the CA that signs now (the new one during a rotation) */
    join_token_generate(cafp, token, &parts);
    struct token_create a = {.t = {.parts = &parts,
                                   .uses = uses,
                                   .expires_ms = ctx->now_ms + (int64_t)ttl * 1000,
                                   .created_by = ctx->who.id,
                                   .now_ms = ctx->now_ms},
                             .token = token,
                             .ca_fingerprint = cafp};
    LOG_INFO("cluster: join token %s requested by %s (%u uses, %u s)", parts.id, ctx->who.id, uses, ttl);
    ctx->answer_secret = true;
    res_mutate(ctx, &svc->env, req->request_id, &gantry__v1__join_token__descriptor, token_create_tx, &a);
    memset(token, 0, sizeof token);
    memset(&parts, 0, sizeof parts);
}

static void impl_list_tokens(struct gate_ctx *ctx, void *data)
{
    struct cluster_svc *svc = data;
    const Gantry__V1__ListJoinTokensRequest *req = (const void *)grpc_call_request(ctx->call);
    struct page_req page;
    char why[GERR_MSG_SIZE];
    if (!page_rules_read(req->page, PAGE_KEY_HEX16, &page, why, sizeof why)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
        return;
    }
    struct clusterdb_token *rows = NULL;
    unsigned n_rows = 0;
    int rv = clusterdb_tokens(ctx->cl, page.after, page.limit + 1, &rows, &n_rows);
    if (rv != 0) {
        gate_fail(ctx, grpc_status_from_gerr(rv), "list join tokens: %s", ctx->cl->errmsg);
        mem_free(rows);
        return;
    }
    unsigned n = n_rows > page.limit ? page.limit : n_rows;
    char cafp[PKI_FINGERPRINT_SIZE];
    cakeeper_fingerprint(svc->ca, cafp);
    Gantry__V1__JoinToken *ms = mem_zalloc(sizeof *ms * (n + 1));
    Gantry__V1__JoinToken **ps = mem_zalloc(sizeof *ps * (n + 1));
    for (unsigned i = 0; i < n; i++) {
        token_msg(&ms[i], &rows[i], cafp);
        ps[i] = &ms[i];
    }
    Gantry__V1__ListJoinTokensResponse resp = GANTRY__V1__LIST_JOIN_TOKENS_RESPONSE__INIT;
    resp.n_tokens = n;
    resp.tokens = ps;
    resp.next_page_token = n_rows > page.limit ? rows[n - 1].id : "";
    grpc_call_finish_async(ctx->call, 0, NULL, &resp.base);
    mem_free(ms);
    mem_free(ps);
    mem_free(rows);
}

struct token_revoke {
    const char *id;
    const char *ca_fingerprint;
};

static int token_revoke_tx(struct store_tx *tx, struct res_call *c)
{
    const struct token_revoke *a = c->arg;
    struct clusterdb_token row;
    int rv = clusterdb_token_revoke_tx(tx, a->id, &row);
    if (rv == 0) {
        rv = res_event(tx, c, "JoinToken", "", a->id, "", "DELETED");
    }
    if (rv == 0) {
        Gantry__V1__JoinToken m;
        token_msg(&m, &row, a->ca_fingerprint);
        res_reply(c, &m.base);
    }
    return rv;
}

static void impl_revoke_token(struct gate_ctx *ctx, void *data)
{
    struct cluster_svc *svc = data;
    const Gantry__V1__RevokeJoinTokenRequest *req = (const void *)grpc_call_request(ctx->call);
    bool hex = strlen(req->id) == JOIN_TOKEN_ID_HEX;
    for (size_t i = 0; hex && i < JOIN_TOKEN_ID_HEX; i++) {
        hex = (req->id[i] >= '0' && req->id[i] <= '9') || (req->id[i] >= 'a' && req->id[i] <= 'f');
    }
    if (!hex) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "id: a join token id is the %d lowercase hex digits after gjt_ (ListJoinTokens shows them)",
                  JOIN_TOKEN_ID_HEX);
        return;
    }
    char cafp[PKI_FINGERPRINT_SIZE];
    cakeeper_fingerprint(svc->ca, cafp);
    struct token_revoke a = {.id = req->id, .ca_fingerprint = cafp};
    res_mutate(ctx, &svc->env, req->request_id, &gantry__v1__join_token__descriptor, token_revoke_tx, &a);
}

/* --- Join --- */

/* Split the joiner's addresses and extra names into IP and DNS SANs. */
struct sans {
    const char *ip[12];
    const char *dns[12];
    unsigned n_ip, n_dns;
    char hosts[4][64];
};

static void add_host(struct sans *s, const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
        if (s->n_ip < 12 && strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0) {
            s->ip[s->n_ip++] = host;
        }
    } else if (s->n_dns < 12 && host[0] != '\0') {
        s->dns[s->n_dns++] = host;
    }
}

static void host_of(const char *address, char *out, size_t len)
{
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        snprintf(out, len, "%.*s", end != NULL ? (int)(end - address - 1) : 0, address + 1);
    } else {
        const char *colon = strrchr(address, ':');
        snprintf(out, len, "%.*s", colon != NULL ? (int)(colon - address) : (int)strlen(address), address);
    }
}

static bool join_check(const Gantry__V1__JoinRequest *req, struct answer *a)
{
    char why[160];
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    char err[GERR_MSG_SIZE];
    if (req->replica_id == 0) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "replica_id: must be a positive integer");
    } else if (!names_dns_label_ok(req->replica_name, 63, why, sizeof why)) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "replica_name: %s", why);
    } else if (addr_parse_ipv4(req->peer_address, &sa, 0) != 0 || sa.sin_addr.s_addr == 0) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "peer_address: must be a concrete a.b.c.d:port");
    } else if (addr_parse(req->api_address, &ss, err) != 0) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "api_address: %s", err);
    } else if (req->csr_pem[0] == '\0' || strlen(req->csr_pem) > 16384) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "csr_pem: a PEM certificate signing request is required");
    } else if (req->n_sans > 8) {
        fail(a, GRPC_STATUS_INVALID_ARGUMENT, "sans: at most 8 extra names");
    } else {
        for (size_t i = 0; i < req->n_sans; i++) {
            if (strlen(req->sans[i]) == 0 || strlen(req->sans[i]) > 253 ||
                strpbrk(req->sans[i], " ,/") != NULL) {
                fail(a, GRPC_STATUS_INVALID_ARGUMENT, "sans[%zu]: not a DNS name or IP address", i);
                return false;
            }
        }
        return true;
    }
    return false;
}

/* A host that names no one machine (a wildcard listen address): not worth dialing. */
static bool relay_target_ok(const char *api_address)
{
    char host[256];
    host_of(api_address, host, sizeof host);
    return host[0] != '\0' && strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0;
}

/* This replica holds no CA key (it joined; raft/identity.h), so it relays the join, marked
 * `relayed`, to the other members in turn over TLS verified against the cluster CA, and hands the
 * first decisive answer back unchanged. A member without the key answers FAILED_PRECONDITION to a
 * relayed join, and one that does not answer is skipped; if none decides, the joiner gets
 * UNAVAILABLE and tries its next --join address. The token is spent only by the member that
 * signs. Blocks (a job thread) for at most a few seconds per member. */
static void join_relay(struct job *j, struct store_client *cl, const Gantry__V1__JoinRequest *req,
                       struct answer *a)
{
    struct cluster_svc *svc = j->svc;
    struct clusterdb_member *rows = NULL;
    unsigned n = 0;
    int rv = clusterdb_members(cl, &rows, &n);
    if (rv != 0) {
        fail_store(a, rv, "join", cl->errmsg);
        return;
    }
    Gantry__V1__JoinRequest fwd = *req;
    fwd.relayed = true;
    char *bundle = cakeeper_bundle(svc->ca);
    char last[GERR_MSG_SIZE + 32];
    snprintf(last, sizeof last, "no other member's API address is on record");
    for (unsigned i = 0; i < n; i++) {
        if (rows[i].id == svc->replica_id || !relay_target_ok(rows[i].api_address)) {
            continue;
        }
        struct grpc_client_config cc = {
            .target = rows[i].api_address, .ca_pem = bundle, .connect_timeout_ms = 2000};
        struct grpc_client *c;
        char err[GERR_MSG_SIZE] = "";
        if (grpc_client_connect(&cc, &c, err) != 0) {
            snprintf(last, sizeof last, "replica %" PRIu64 ": %s", rows[i].id, err);
            continue;
        }
        struct grpc_client_result res;
        ProtobufCMessage *resp = NULL;
        rv = grpc_client_unary(c, "/gantry.v1.Cluster/Join", NULL, 0, &fwd.base,
                               &gantry__v1__join_response__descriptor, 10000, &resp, &res, err);
        grpc_client_close(c);
        if (rv != 0) {
            snprintf(last, sizeof last, "replica %" PRIu64 ": %s", rows[i].id, err);
        } else if (res.status == GRPC_STATUS_FAILED_PRECONDITION || res.status == GRPC_STATUS_UNAVAILABLE) {
            snprintf(last, sizeof last, "replica %" PRIu64 ": %s", rows[i].id, res.message);
        } else {
            if (res.status != 0) {
                fail(a, res.status, "%s", res.message);
            } else {
                LOG_INFO("cluster: relayed the join of replica %" PRIu64 " to replica %" PRIu64
                         ", which holds the CA key",
                         req->replica_id, rows[i].id);
                grpc_call_finish_async(j->call, 0, NULL, resp);
                a->status = -1;
            }
            if (resp != NULL) {
                protobuf_c_message_free_unpacked(resp, NULL);
            }
            mem_free(rows);
            mem_free(bundle);
            return;
        }
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    mem_free(bundle);
    fail(a, GRPC_STATUS_UNAVAILABLE,
         "replica %" PRIu64 " does not hold the cluster CA key and no member that does answered (%s)",
         svc->replica_id, last);
    LOG_WARN("cluster: could not relay the join of replica %" PRIu64 ": %s", req->replica_id, a->msg);
    mem_free(rows);
}

static void do_join(struct job *j, struct store_client *cl, struct answer *a)
{
    const Gantry__V1__JoinRequest *req = (const void *)grpc_call_request(j->call);
    struct cluster_svc *svc = j->svc;
    struct join_token_parts parts;
    char err[GERR_MSG_SIZE] = "";
    if (join_token_parse(req->token, &parts, err) != 0) {
        fail(a, GRPC_STATUS_UNAUTHENTICATED, "%s", err);
        LOG_WARN("cluster: join refused for %s: malformed token", grpc_call_peer(j->call));
        return;
    }
    if (parts.ca_fingerprint[0] != '\0' && !cakeeper_trusts(svc->ca, parts.ca_fingerprint)) {
        fail(a, GRPC_STATUS_UNAUTHENTICATED,
             "the join token names a CA this cluster does not trust (made for another cluster, or before "
             "a CA rotation finished)");
        return;
    }
    if (!join_check(req, a)) {
        return;
    }
    if (!cakeeper_can_sign(svc->ca)) {
        int vrv;
        if (req->relayed) {
            fail(a, GRPC_STATUS_FAILED_PRECONDITION,
                 "replica %" PRIu64 " does not hold the cluster CA key, so it cannot sign certificates",
                 svc->replica_id);
        } else if ((vrv = clusterdb_token_valid(cl, &parts, wall_ms())) == GERR_PERM) {
            /* Checked here first: a made-up token costs one read, not a call to every member. */
            fail(a, GRPC_STATUS_UNAUTHENTICATED, "the join token is unknown, expired or already used");
            LOG_WARN("cluster: join refused for %s: the token is unknown, expired or used (not relayed)",
                     grpc_call_peer(j->call));
        } else if (vrv != 0) {
            fail_store(a, vrv, "join", cl->errmsg);
        } else {
            join_relay(j, cl, req, a);
        }
        memset(&parts, 0, sizeof parts);
        return;
    }
    struct replica_view *v = mem_alloc(sizeof *v);
    if (!get_view(svc, v, a)) {
        mem_free(v);
        return;
    }
    const struct roles_node *same = find_node(v, req->replica_id);
    if (same != NULL && strcmp(same->address, req->peer_address) != 0) {
        fail(a, GRPC_STATUS_ALREADY_EXISTS, "replica id %" PRIu64 " is already a member at %s",
             req->replica_id, same->address);
        mem_free(v);
        return;
    }
    struct clusterdb_join jn = {.parts = &parts,
                                .now_ms = wall_ms(),
                                .replica_id = req->replica_id,
                                .replica_name = req->replica_name,
                                .peer_address = req->peer_address,
                                .api_address = req->api_address,
                                .failure_domain = req->failure_domain,
                                .failure_domain_name = req->failure_domain_name};
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%" PRIu64, req->replica_id);
    int rv = run_audited(j, clusterdb_join_tx, &jn, "Member", idtext, req->replica_name, err);
    char *cert = NULL, *bundle = NULL;
    if (rv == GERR_PERM) {
        fail(a, GRPC_STATUS_UNAUTHENTICATED, "%s", err);
        LOG_WARN("cluster: join refused for replica %" PRIu64 " from %s: %s", req->replica_id,
                 grpc_call_peer(j->call), err);
    } else if (rv != 0) {
        fail_store(a, rv, "join", err);
    } else {
        struct sans s = {0};
        host_of(req->peer_address, s.hosts[0], sizeof s.hosts[0]);
        host_of(req->api_address, s.hosts[1], sizeof s.hosts[1]);
        add_host(&s, s.hosts[0]);
        add_host(&s, s.hosts[1]);
        add_host(&s, "localhost");
        for (size_t i = 0; i < req->n_sans; i++) {
            add_host(&s, req->sans[i]);
        }
        struct pki_subject subj = {.common_name = req->replica_name,
                                   .ip_sans = s.ip,
                                   .n_ip_sans = s.n_ip,
                                   .dns_sans = s.dns,
                                   .n_dns_sans = s.n_dns};
        char *ca_pem = NULL, *ca_key = NULL;
        cakeeper_signer(svc->ca, &ca_pem, &ca_key);
        rv = ca_key != NULL ? pki_sign_csr(ca_key, ca_pem, req->csr_pem, &subj, PKI_CERT_DAYS, &cert, err)
                            : GERR_UNAVAILABLE;
        if (ca_key != NULL) {
            memset(ca_key, 0, strlen(ca_key));
        }
        mem_free(ca_key);
        mem_free(ca_pem);
        if (rv == GERR_UNAVAILABLE) {
            snprintf(err, sizeof err, "this member no longer holds the signing CA's key");
        }
        if (rv != 0) {
            fail(a, GRPC_STATUS_INVALID_ARGUMENT, "csr_pem: %s", err);
        } else {
            /* So that removing it revokes this certificate even if it never starts to record it. */
            struct certrevoke_cert note = {.member_id = req->replica_id, .now_ms = wall_ms()};
            char fp[PKI_FINGERPRINT_SIZE], nerr[GERR_MSG_SIZE] = "";
            if (pki_fingerprint(cert, fp, nerr) == 0 &&
                pki_not_after_ms(cert, &note.not_after_ms, nerr) == 0) {
                note.fingerprint = fp;
                if (store_writer_run(svc->writer, certrevoke_note_tx, &note, nerr) != 0) {
                    LOG_WARN("cluster: the certificate of replica %" PRIu64 " is not on record yet (%s); it "
                             "records it itself when it starts",
                             req->replica_id, nerr);
                }
            }
            Gantry__V1__JoinResponse resp = GANTRY__V1__JOIN_RESPONSE__INIT;
            char *peers[REPLICA_MAX_MEMBERS];
            for (unsigned i = 0; i < v->n; i++) {
                peers[i] = v->nodes[i].address;
            }
            resp.cert_pem = cert;
            bundle = cakeeper_bundle(svc->ca); /* every CA trusted now: two during a rotation */
            resp.ca_pem = bundle;
            resp.cluster_id = (char *)svc->id->cluster_id;
            resp.gateway_id = (char *)svc->id->gateway_id;
            resp.n_peer_addresses = v->n;
            resp.peer_addresses = peers;
            /* Never the CA key: it stays on the replicas that hold it (docs/security.md). */
            resp.apikey_pepper.data = (uint8_t *)svc->secrets->pepper;
            resp.apikey_pepper.len = IDENTITY_PEPPER_SIZE;
            /* Log first: once finished, the call (and the request in its arena) may be freed. */
            LOG_INFO("cluster: admitted replica %" PRIu64 " (%s) at %s", req->replica_id, req->replica_name,
                     req->peer_address);
            grpc_call_finish_async(j->call, 0, NULL, &resp.base);
            a->status = -1;
        }
    }
    mem_free(cert);
    mem_free(bundle);
    memset(&parts, 0, sizeof parts);
    mem_free(v);
}

/* --- Backup --- */

static void do_backup(struct job *j, struct store_client *cl, struct answer *a)
{
    struct buf out;
    buf_init(&out);
    char err[GERR_MSG_SIZE] = "";
    int64_t revision = 0;
    int rv = store_backup_take(cl, j->svc->scratch_dir, &out, &revision, err);
    if (rv != 0) {
        fail_store(a, rv, "backup", err);
        buf_close(&out);
        return;
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    char hexd[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256(out.data, out.len, digest);
    for (unsigned i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        snprintf(hexd + 2 * i, 3, "%02x", digest[i]);
    }
    const size_t chunk = 1u << 20;
    for (size_t off = 0; off == 0 || off < out.len; off += chunk) {
        Gantry__V1__BackupChunk c = GANTRY__V1__BACKUP_CHUNK__INIT;
        size_t n = out.len - off < chunk ? out.len - off : chunk;
        c.data.data = (uint8_t *)out.data + off;
        c.data.len = n;
        c.offset = off;
        if (off == 0) {
            c.revision = (uint64_t)revision;
        }
        if (off + n >= out.len) {
            c.last = true;
            c.sha256 = hexd;
        }
        grpc_call_send_async(j->call, &c.base);
        if (c.last) {
            break;
        }
    }
    LOG_INFO("cluster: backup of %zu bytes at revision %" PRId64 " streamed", out.len, revision);
    buf_close(&out);
    a->status = 0;
    a->msg[0] = '\0';
}

/* --- GetLease --- */

static void do_lease(struct job *j, struct store_client *cl, struct answer *a)
{
    const Gantry__V1__GetLeaseRequest *req = (const void *)grpc_call_request(j->call);
    const char *name = req->name[0] != '\0' ? req->name : RECONCILER_LEASE;
    char holder[128];
    uint64_t epoch = 0, duration = 0;
    int64_t renewed = 0;
    int rv = lease_read(cl, name, holder, sizeof holder, &epoch, &renewed, &duration);
    if (rv == GERR_NOTFOUND) {
        fail(a, GRPC_STATUS_NOT_FOUND, "no lease named \"%.64s\" has been taken yet", name);
        return;
    }
    if (rv != 0) {
        fail_store(a, rv, "get lease", cl->errmsg);
        return;
    }
    Gantry__V1__Lease resp = GANTRY__V1__LEASE__INIT;
    resp.name = (char *)name;
    resp.holder = holder;
    resp.epoch = epoch;
    resp.renewed_at_ms = renewed;
    resp.duration_ms = duration;
    grpc_call_finish_async(j->call, 0, NULL, &resp.base);
    a->status = -1;
}

/* --- Dispatch: the gate (api/gate/gate.h) authenticated and authorized the call already. --- */

static void run_method(struct gate_ctx *ctx, struct cluster_svc *svc, enum method m)
{
    struct job j = {.svc = svc, .call = ctx->call, .m = m, .ctx = ctx};
    struct answer a = {.status = 0};
    struct store_client *cl = ctx->cl;
    switch (m) {
    case M_LIST:
        do_list(&j, cl, &a);
        break;
    case M_LEADER:
        do_leader(&j, cl, &a);
        break;
    case M_HEALTH:
        do_health(&j, cl, &a);
        break;
    case M_TRANSFER:
        do_transfer(&j, cl, &a);
        break;
    case M_REMOVE:
        do_remove(&j, cl, &a);
        break;
    case M_JOIN:
        do_join(&j, cl, &a);
        break;
    case M_BACKUP:
        do_backup(&j, cl, &a);
        break;
    case M_LEASE:
        do_lease(&j, cl, &a);
        break;
    }
    if (a.status >= 0) {
        grpc_call_finish_async(ctx->call, a.status, a.status != 0 ? a.msg : NULL, NULL);
    }
}

#define IMPL(fn, m)                                                                                          \
    static void fn(struct gate_ctx *ctx, void *data)                                                         \
    {                                                                                                        \
        run_method(ctx, data, m);                                                                            \
    }
IMPL(impl_list, M_LIST)
IMPL(impl_leader, M_LEADER)
IMPL(impl_transfer, M_TRANSFER)
IMPL(impl_remove, M_REMOVE)
IMPL(impl_join, M_JOIN)
IMPL(impl_health, M_HEALTH)
IMPL(impl_backup, M_BACKUP)
IMPL(impl_lease, M_LEASE)
#undef IMPL

int cluster_svc_register(struct gate *g, struct cluster_svc *svc, char *errmsg)
{
    if (svc->ca == NULL) {
        gerr_set(errmsg, "cluster service: no CA keeper");
        return GERR_INVAL;
    }
    int rv = 0;
    svc->env = (struct res_env){.writer = svc->writer,
                                .sink = svc->sink,
                                .replica_id = svc->replica_id,
                                .gateway_id = svc->id->gateway_id};
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Cluster/ListMembers", impl_list},
        {"/gantry.v1.Cluster/GetLeader", impl_leader},
        {"/gantry.v1.Cluster/TransferLeadership", impl_transfer},
        {"/gantry.v1.Cluster/RemoveMember", impl_remove},
        {"/gantry.v1.Cluster/CreateJoinToken", impl_token},
        {"/gantry.v1.Cluster/ListJoinTokens", impl_list_tokens},
        {"/gantry.v1.Cluster/RevokeJoinToken", impl_revoke_token},
        {"/gantry.v1.Cluster/Join", impl_join},
        {"/gantry.v1.Cluster/GetHealth", impl_health},
        {"/gantry.v1.Cluster/Backup", impl_backup},
        {"/gantry.v1.Cluster/GetLease", impl_lease},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        rv = gate_route(g, routes[i].path, routes[i].fn, svc);
        if (rv != 0) {
            gerr_set(errmsg, "cluster service: cannot route %s", routes[i].path);
            return rv;
        }
    }
    return 0;
}
