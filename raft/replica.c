/* One replica's membership runtime (raft/replica.h). */
#include "raft/replica.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/membership.h"
#include "raft/peertls.h"
#include "store/node.h"

struct replica {
    uint64_t id;
    char address[256];
    char join[1024];
    char seeds[2048];
    char private_bind[320];
    struct peertls *relay;
    struct store_node *node;
    store_dial_fn dial;
    void *dial_arg;
    char alt_alpn[64]; /* the relay's second protocol (cfg->peer.alt_alpn), "" for none */
    /* The roles thread and what it publishes. */
    struct membership m;
    struct store_client cl;
    bool manage_roles;
    unsigned interval_ms;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    struct replica_view view; /* under mu */
    uint64_t last_leader;     /* under mu: the last leader a snapshot named, 0 before the first */
    unsigned absent_rounds;   /* roles thread only: snapshots with a leader that lacked this node */
    bool removed;             /* under mu */
};

/* Split a comma-separated list into @addrs (pointing into @buf). */
static unsigned split_list(const char *list, char *buf, size_t buf_len, const char **addrs, unsigned max,
                           const char *skip)
{
    unsigned n = 0;
    snprintf(buf, buf_len, "%s", list != NULL ? list : "");
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ",", &save)) {
        if (*tok != '\0' && (skip == NULL || strcmp(tok, skip) != 0)) {
            addrs[n++] = tok;
        }
    }
    return n;
}

/* Find @id in the configuration: *@role -1 if absent, with its stored address. */
static int lookup_self(struct store_client *cl, uint64_t id, int *role, char *addr, size_t addr_len)
{
    struct proto_node_info *nodes = NULL;
    unsigned n = 0;
    int rv = store_client_cluster(cl, &nodes, &n);
    if (rv != 0) {
        return rv;
    }
    *role = -1;
    addr[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        if (nodes[i].id == id) {
            *role = nodes[i].role;
            snprintf(addr, addr_len, "%s", nodes[i].address);
        }
    }
    mem_free(nodes);
    return 0;
}

static const char *role_word(int role)
{
    return role == PROTO_ROLE_VOTER ? "voter" : role == PROTO_ROLE_STANDBY ? "standby" : "spare";
}

/* ADD + ASSIGN through the leader until this node holds @role or the deadline passes. Every step
 * re-reads the configuration first, so a retry after an unknown outcome or a concurrent
 * configuration change ("busy") does the right next step. A member that already holds the role
 * (a restart) skips the requests. */
static int join_cluster(struct replica *r, const struct replica_config *cfg, char *errmsg)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[1024];
    unsigned n_addrs = split_list(cfg->join, list, sizeof list, addrs, STORE_MAX_ADDRESSES, NULL);
    unsigned timeout_ms = cfg->join_timeout_ms != 0 ? cfg->join_timeout_ms : 60000;
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + timeout_ms;
    unsigned delay_ms = 20;
    int role = cfg->join_role;
    struct store_client cl;
    struct store_client_config ccfg = {
        .addresses = addrs,
        .n_addresses = n_addrs,
        .request_timeout_ms = 30000, /* ASSIGN blocks while Raft catches this node up */
        .leader_timeout_ms = timeout_ms < 5000 ? timeout_ms : 5000,
        .dial = r->dial,
        .dial_arg = r->dial_arg,
    };
    int rv = store_client_init(&cl, &ccfg);
    if (rv != 0) {
        gerr_set(errmsg, "join: %s", cl.errmsg);
        return rv;
    }
    for (;;) {
        int current;
        char stored[256];
        const char *step = "CLUSTER";
        rv = lookup_self(&cl, r->id, &current, stored, sizeof stored);
        if (rv == 0 && current >= 0 && strcmp(stored, r->address) != 0) {
            gerr_set(errmsg, "join: the cluster already has node %" PRIu64 " at %s, not %s: pick another id",
                     r->id, stored, r->address);
            rv = GERR_EXISTS;
            break;
        }
        if (rv == 0 && (current == role || (current == PROTO_ROLE_VOTER && role == PROTO_ROLE_STANDBY))) {
            /* A voter asked to join as a standby was promoted by the roles policy: keep it. */
            LOG_INFO("join: node %" PRIu64 " is a %s of the cluster", r->id, role_word(current));
            break;
        }
        if (rv == 0 && current < 0) {
            step = "ADD";
            rv = store_client_add(&cl, r->id, r->address);
            if (rv == 0) {
                LOG_INFO("join: added node %" PRIu64 " (%s) as a spare", r->id, r->address);
            }
        }
        if (rv == 0) {
            step = "ASSIGN";
            rv = store_client_assign(&cl, r->id, role);
            if (rv == 0) {
                LOG_INFO("join: assigned node %" PRIu64 " the role %s", r->id, role_word(role));
                continue; /* confirm from the configuration */
            }
        }
        LOG_WARN("join: %s: %s (%s); retrying", step, cl.errmsg, gerr_name(rv));
        if (clock_mono_ms(clk) >= deadline) {
            gerr_set(errmsg, "join: gave up after %u ms: %s", timeout_ms, cl.errmsg);
            rv = GERR_TIMEOUT;
            break;
        }
        if (cfg->should_stop != NULL && cfg->should_stop(cfg->should_stop_arg)) {
            gerr_set(errmsg, "join: stopped");
            rv = GERR_CANCELED;
            break;
        }
        clk->sleep_ns(clk, rand_range(delay_ms / 2, delay_ms) * 1000000u);
        delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
    }
    store_client_close(&cl);
    return rv;
}

static void publish(struct replica *r, int rv, const struct roles_node *nodes, unsigned n, uint64_t leader)
{
    pthread_mutex_lock(&r->mu);
    if (rv == 0) {
        r->view.valid = true;
        r->view.taken_ms = clock_mono_ms(clock_system());
        r->view.leader_id = leader;
        if (leader != 0 && leader != r->last_leader) {
            r->view.leader_changes++;
            r->last_leader = leader;
        }
        r->view.n = n < REPLICA_MAX_MEMBERS ? n : REPLICA_MAX_MEMBERS;
        memcpy(r->view.nodes, nodes, sizeof nodes[0] * r->view.n);
        r->view.errmsg[0] = '\0';
    } else {
        snprintf(r->view.errmsg, sizeof r->view.errmsg, "%s", r->m.errmsg);
        r->view.leader_id = 0;
    }
    pthread_mutex_unlock(&r->mu);
}

static void *roles_main(void *arg)
{
    struct replica *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        struct roles_node *nodes = NULL;
        unsigned n = 0;
        uint64_t leader = 0;
        bool changed = false;
        int rv = membership_snapshot(&r->m, &nodes, &n, &leader);
        publish(r, rv, nodes, n, leader);
        if (rv == 0 && leader != 0) {
            bool present = false;
            for (unsigned i = 0; i < n; i++) {
                present = present || nodes[i].id == r->id;
            }
            r->absent_rounds = present ? 0 : r->absent_rounds + 1;
            if (r->absent_rounds == 2) { /* twice, from a leader: not a glimpse mid-change */
                LOG_ERROR("replica %" PRIu64 " is not in the cluster's configuration (leader %" PRIu64
                          "): it was removed and must stop",
                          r->id, leader);
                pthread_mutex_lock(&r->mu);
                r->removed = true;
                pthread_mutex_unlock(&r->mu);
            }
        }
        if (rv == 0 && r->manage_roles) {
            struct roles_change ch;
            membership_apply(&r->m, r->id, nodes, n, leader, &changed, &ch);
        }
        mem_free(nodes);
        pthread_mutex_lock(&r->mu);
        if (changed) {
            continue; /* converge quickly: one change per round */
        }
        struct timespec until;
        clock_mono_deadline(&until, r->interval_ms);
        while (!r->stop && clock_cond_wait_mono(&r->cond, &r->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The membership client: this node first, then the join list. */
static int membership_client(struct replica *r)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[2048];
    unsigned n = 0;
    addrs[n++] = r->address;
    n += split_list(r->seeds, list, sizeof list, addrs + 1, STORE_MAX_ADDRESSES - 1, r->address);
    struct store_client_config cfg = {.addresses = addrs,
                                      .n_addresses = n,
                                      .leader_timeout_ms = 5000,
                                      .request_timeout_ms = 30000,
                                      .dial = r->dial,
                                      .dial_arg = r->dial_arg};
    return store_client_init(&r->cl, &cfg);
}

/* A restart (no join in progress) of a replica the cluster removed must not come back: it would
 * serve the API, contend for leases and reach the store with a certificate that is still valid
 * (a Jepsen finding, docs/reliability.md). Ask the leader, briefly: GERR_PERM if it answers
 * without this node. No answer (a whole-cluster restart needs this node for quorum) is not proof;
 * the roles thread keeps asking (replica_removed).
 *
 * A failed attempt is tried again within CHECK_BUDGET_MS: in the half second after a removal the
 * members install the revocation of its certificate (raft/certrevoke.h), and a member that does
 * so closes the connections it already accepted from the removed replica without a reason; the
 * next attempt gets the certificate_revoked alert or the leader's configuration. A cluster that
 * does not answer at all costs a start at most this budget plus one attempt. */
#define CHECK_BUDGET_MS 2500u
#define CHECK_PAUSE_MS  300u

/* One attempt: 0 (the leader lists this node), GERR_PERM (@errmsg says why) or another error
 * (no answer; @why gets the client's message). */
static int check_member_once(struct replica *r, const char **addrs, unsigned n, char *errmsg, char *why,
                             size_t why_len)
{
    struct store_client cl;
    struct store_client_config cfg = {.addresses = addrs,
                                      .n_addresses = n,
                                      .leader_timeout_ms = 1500,
                                      .connect_timeout_ms = 1000,
                                      .request_timeout_ms = 3000,
                                      .dial = r->dial,
                                      .dial_arg = r->dial_arg};
    int rv = store_client_init(&cl, &cfg);
    if (rv != 0) {
        snprintf(why, why_len, "%s", cl.errmsg);
        return rv;
    }
    int role = -1;
    char stored[256];
    rv = lookup_self(&cl, r->id, &role, stored, sizeof stored);
    if (rv != 0 && r->relay != NULL && peertls_self_revoked(r->relay)) {
        gerr_set(errmsg,
                 "replica %" PRIu64
                 " was removed from the cluster (its members refuse this replica's certificate as revoked); "
                 "a removed member must not come back with its old data: empty its data dir and join again "
                 "with a new join token (docs/operations.md, \"Removing and replacing a replica\")",
                 r->id);
        rv = GERR_PERM;
    } else if (rv != 0) {
        snprintf(why, why_len, "%s", cl.errmsg);
    } else if (role < 0) {
        gerr_set(errmsg,
                 "replica %" PRIu64
                 " was removed from the cluster (the leader's configuration does not list it); "
                 "a removed member must not come back with its old data: empty its data dir and join again "
                 "with a new join token (docs/operations.md, \"Removing and replacing a replica\")",
                 r->id);
        rv = GERR_PERM;
    }
    store_client_close(&cl);
    return rv;
}

static int check_member(struct replica *r, char *errmsg)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[2048];
    unsigned n = split_list(r->seeds, list, sizeof list, addrs, STORE_MAX_ADDRESSES, r->address);
    if (n == 0) {
        LOG_INFO("membership check: no peer known (a cluster of one): nobody else to ask");
        return 0;
    }
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + CHECK_BUDGET_MS;
    char why[GERR_MSG_SIZE] = "";
    unsigned attempts = 0;
    for (;;) {
        int rv = check_member_once(r, addrs, n, errmsg, why, sizeof why);
        attempts++;
        if (rv == 0 || rv == GERR_PERM) {
            return rv;
        }
        if (clock_mono_ms(clk) + CHECK_PAUSE_MS >= deadline) {
            break;
        }
        clk->sleep_ns(clk, (uint64_t)CHECK_PAUSE_MS * 1000000u);
    }
    LOG_INFO("membership check: no answer from the cluster yet (%s; %u attempts); the roles thread keeps "
             "checking",
             why, attempts);
    return 0;
}

bool replica_removed(struct replica *r)
{
    pthread_mutex_lock(&r->mu);
    bool removed = r->removed;
    pthread_mutex_unlock(&r->mu);
    return removed || (r->relay != NULL && peertls_self_revoked(r->relay));
}

struct peertls *replica_relay(struct replica *r)
{
    return r->relay;
}

static void stop_roles_thread(struct replica *r)
{
    if (!r->thread_running) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    r->thread_running = false;
}

static void teardown(struct replica *r)
{
    if (r->node != NULL) {
        store_node_stop(r->node);
    }
    if (r->relay != NULL) {
        peertls_stop(r->relay);
    }
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    mem_free(r);
}

int replica_start(const struct replica_config *cfg, struct replica **out, char *errmsg)
{
    if (cfg->id == 0 || cfg->address == NULL || cfg->dir == NULL || strlen(cfg->address) >= 64 ||
        (cfg->join != NULL && strlen(cfg->join) >= 1024) ||
        strlen(cfg->join != NULL ? cfg->join : "") + strlen(cfg->seeds != NULL ? cfg->seeds : "") >= 2000) {
        gerr_set(errmsg, "replica: id, a peer address (< 64 bytes) and a data dir are required");
        return GERR_INVAL;
    }
    struct replica *r = mem_zalloc(sizeof *r);
    r->id = cfg->id;
    snprintf(r->address, sizeof r->address, "%s", cfg->address);
    snprintf(r->join, sizeof r->join, "%s", cfg->join != NULL ? cfg->join : "");
    snprintf(r->seeds, sizeof r->seeds, "%s%s%s", r->join, r->join[0] != '\0' ? "," : "",
             cfg->seeds != NULL ? cfg->seeds : "");
    r->manage_roles = cfg->manage_roles;
    r->interval_ms = cfg->roles_interval_ms != 0 ? cfg->roles_interval_ms : 1000;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* roles_main's deadlines are monotonic */
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);

    struct store_node_config ncfg = {.id = cfg->id,
                                     .address = r->address,
                                     .dir = cfg->dir,
                                     .latency_ms = cfg->latency_ms,
                                     .snapshot_threshold = cfg->snapshot_threshold,
                                     .snapshot_trailing = cfg->snapshot_trailing,
                                     .failure_domain = cfg->failure_domain};
    int rv;
    if (cfg->tls_dir != NULL || cfg->tls_ca_file != NULL) {
        /* Abstract names are per host: derive it from the address, unique per host. */
        snprintf(r->private_bind, sizeof r->private_bind, "@gantry-store-%s", r->address);
        const char *listen = cfg->listen != NULL ? cfg->listen : r->address;
        if (cfg->tls_ca_file != NULL) {
            rv = peertls_start_files(cfg->tls_ca_file, cfg->tls_cert_file, cfg->tls_key_file, listen,
                                     r->private_bind, &cfg->peer, &r->relay, errmsg);
        } else {
            rv = peertls_start_dir(cfg->tls_dir, listen, r->private_bind, &cfg->peer, &r->relay, errmsg);
        }
        if (rv != 0) {
            teardown(r);
            return rv;
        }
        LOG_INFO("peer TLS relay on %s in front of %s", listen, r->private_bind);
        ncfg.bind_address = r->private_bind;
        snprintf(r->alt_alpn, sizeof r->alt_alpn, "%s", cfg->peer.alt_alpn != NULL ? cfg->peer.alt_alpn : "");
        ncfg.dial = peertls_store_dial;
        ncfg.dial_arg = r->relay;
        r->dial = peertls_store_dial;
        r->dial_arg = r->relay;
    }
    if (r->join[0] == '\0') {
        /* Before the node starts: a removed node must not even campaign with its old configuration. */
        rv = check_member(r, errmsg);
        if (rv != 0) {
            teardown(r);
            return rv;
        }
    }
    rv = store_node_start(&ncfg, &r->node, errmsg);
    if (rv != 0) {
        r->node = NULL;
        teardown(r);
        return rv;
    }
    if (r->join[0] != '\0') {
        rv = join_cluster(r, cfg, errmsg);
        if (rv != 0) {
            teardown(r);
            return rv;
        }
    }
    rv = membership_client(r);
    if (rv != 0) {
        gerr_set(errmsg, "replica: %s", r->cl.errmsg);
        teardown(r);
        return rv;
    }
    membership_init(&r->m, &r->cl, &cfg->policy, r->dial, r->dial_arg, NULL);
    r->m.catchup = cfg->catchup;
    if (pthread_create(&r->thread, NULL, roles_main, r) != 0) {
        gerr_set(errmsg, "replica: cannot start the roles thread");
        store_client_close(&r->cl);
        teardown(r);
        return GERR_NOMEM;
    }
    r->thread_running = true;
    *out = r;
    return 0;
}

void replica_peer_stats(struct replica *r, struct peertls_stats *out)
{
    if (r->relay == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    peertls_get_stats(r->relay, out);
}

void replica_view(struct replica *r, struct replica_view *out)
{
    pthread_mutex_lock(&r->mu);
    memcpy(out, &r->view, sizeof *out);
    pthread_mutex_unlock(&r->mu);
}

/* The store clients' dialer: this replica's own node directly on its private socket (no TLS, no
 * relay hop: the leader's writer talks to its own node), every other node through the relay. */
static int store_dial(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg)
{
    struct replica *r = arg;
    if (r->private_bind[0] != '\0' && strcmp(address, r->address) == 0) {
        return store_conn_unix_dial(NULL, r->private_bind, timeout_ms, fd, errmsg);
    }
    return r->dial(r->dial_arg, address, timeout_ms, fd, errmsg);
}

static int store_stream_dial(void *arg, const char *address, unsigned timeout_ms, int *fd,
                             struct store_stream *stream, char *errmsg)
{
    struct replica *r = arg;
    if (r->private_bind[0] != '\0' && strcmp(address, r->address) == 0) {
        return store_conn_unix_dial(NULL, r->private_bind, timeout_ms, fd, errmsg);
    }
    return peertls_dial_stream(r->relay, address, timeout_ms, fd, stream, errmsg);
}

int replica_alt_dial(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg)
{
    struct replica *r = arg;
    if (r->relay == NULL || r->alt_alpn[0] == '\0') {
        gerr_set(errmsg, "no peer TLS relay with a second protocol");
        return GERR_INVAL;
    }
    return peertls_dial_alpn(r->relay, address, r->alt_alpn, timeout_ms, fd, errmsg);
}

store_dial_fn replica_dial(const struct replica *r)
{
    return r->dial != NULL ? store_dial : NULL;
}

store_stream_dial_fn replica_stream_dial(const struct replica *r)
{
    return r->relay != NULL ? store_stream_dial : NULL;
}

void *replica_dial_arg(const struct replica *r)
{
    return r->dial != NULL ? (void *)r : NULL;
}

const char *replica_address(const struct replica *r)
{
    return r->address;
}

int replica_handover(struct replica *r, unsigned timeout_ms)
{
    stop_roles_thread(r);
    uint64_t t0 = clock_mono_ms(clock_system());
    int rv = membership_handover(&r->m, r->id, timeout_ms);
    if (rv == 0) {
        LOG_INFO("handover done in %" PRIu64 " ms", clock_mono_ms(clock_system()) - t0);
    } else {
        LOG_WARN("handover incomplete: %s", r->m.errmsg);
    }
    return rv;
}

void replica_stop(struct replica *r)
{
    stop_roles_thread(r);
    store_client_close(&r->cl);
    teardown(r);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v == 0) {
        return -1;
    }
    *out = v;
    return 0;
}

int replica_parse_members(const char *spec, char *buf, size_t buf_len, struct store_node_member *out,
                          unsigned max, unsigned *n)
{
    *n = 0;
    if (strlen(spec) >= buf_len) {
        return GERR_INVAL;
    }
    snprintf(buf, buf_len, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        uint64_t id;
        if (eq == NULL || *n == max) {
            return GERR_INVAL;
        }
        *eq = '\0';
        if (parse_u64(tok, &id) != 0) {
            return GERR_INVAL;
        }
        char *address = eq + 1;
        int role = PROTO_ROLE_VOTER;
        char *slash = strchr(address, '/');
        if (slash != NULL) {
            *slash = '\0';
            const char *w = slash + 1;
            role = strcmp(w, "voter") == 0     ? PROTO_ROLE_VOTER
                   : strcmp(w, "standby") == 0 ? PROTO_ROLE_STANDBY
                   : strcmp(w, "spare") == 0   ? PROTO_ROLE_SPARE
                                               : -1;
            if (role < 0) {
                return GERR_INVAL;
            }
        }
        if (*address == '\0') {
            return GERR_INVAL;
        }
        out[(*n)++] = (struct store_node_member){.id = id, .address = address, .role = role};
    }
    return *n > 0 ? 0 : GERR_INVAL;
}
