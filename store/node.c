/* The dqlite node embedded in a replica. See node.h.
 *
 * Happy path: ignore SIGPIPE for the whole process, check the addresses, create the data dir
 * (0700), dqlite_node_create, bind the Raft address (or the private one behind the TLS relay), set
 * the Raft timing, snapshot parameters, failure domain and our connect function, dqlite_node_start. dqlite
 * then runs the node on its own thread; store_node_stop stops it and waits for that thread.
 *
 * Failure modes: a bad configuration (GERR_INVAL, nothing created); dqlite refusing a setting or
 * the start (GERR_IO with dqlite's own message, the node destroyed). At run time the only code of
 * ours that runs is the connect function, on a libuv worker thread: a peer that does not answer
 * costs at most connect_timeout_ms of that worker (the dialer enforces it), and every failure is
 * just "no connection" to Raft, which retries on its next heartbeat. Only the public dqlite.h is used. */
#include "store/node.h"

#include <dqlite.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/addr.h"
#include "lib/log.h"
#include "lib/mem.h"

struct store_node {
    dqlite_node *dq;
    uint64_t id;
    char address[64];
    unsigned connect_timeout_ms;
    store_dial_fn dial;
    void *dial_arg;
};

/* The one translation of dqlite's int return codes. */
static int node_err_from_dqlite(int rv)
{
    switch (rv) {
    case 0:
        return GERR_OK;
    case DQLITE_MISUSE:
        return GERR_INVAL; /* a setting dqlite rejects (e.g. trailing < threshold) */
    default:
        return GERR_IO; /* DQLITE_ERROR, DQLITE_NOMEM and anything newer */
    }
}

static const char *dqlite_code_name(int rv)
{
    switch (rv) {
    case DQLITE_ERROR:
        return "DQLITE_ERROR";
    case DQLITE_MISUSE:
        return "DQLITE_MISUSE";
    case DQLITE_NOMEM:
        return "DQLITE_NOMEM";
    default:
        return "dqlite error";
    }
}

/* Raft's connect function. It runs on a libuv worker thread and must block until connected:
 * dqlite then writes its handshake on the fd with blocking writes before handing it to libuv.
 * So: dial through the configured dialer (which bounds the wait by connect_timeout_ms and, for
 * TCP, sets TCP_NODELAY: without it Nagle plus delayed ACK put ~40 ms into the p99 of writes),
 * then hand the socket over in blocking mode. */
static int node_connect(void *arg, const char *address, int *fd_out)
{
    struct store_node *n = arg;
    char errmsg[GERR_MSG_SIZE];
    int fd = -1;

    int rv = n->dial(n->dial_arg, address, n->connect_timeout_ms, &fd, errmsg);
    if (rv != 0) {
        /* Peers that are down are normal (Raft retries every heartbeat): keep it out of INFO
         * logs, but a peer refused by TLS is worth a warning. */
        if (rv == GERR_PERM) {
            LOG_WARN("node %llu: peer %s refused: %s", (unsigned long long)n->id, address, errmsg);
        } else {
            LOG_DEBUG("node %llu: connect to peer %s: %s", (unsigned long long)n->id, address, errmsg);
        }
        return DQLITE_ERROR;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        LOG_WARN("node %llu: peer %s: fcntl: %s", (unsigned long long)n->id, address, strerror(errno));
        close(fd);
        return DQLITE_ERROR;
    }
    *fd_out = fd;
    LOG_TRACE("node %llu: connected to peer %s", (unsigned long long)n->id, address);
    return 0;
}

/* mkdir -p with mode 0700 for every directory it creates; an existing directory is kept as is. */
static int make_dir(const char *dir, char *errmsg)
{
    char path[4096];
    struct stat st;
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof path) {
        gerr_set(errmsg, "bad data dir \"%s\"", dir);
        return GERR_INVAL;
    }
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') {
            continue;
        }
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            int err = errno;
            gerr_set(errmsg, "create data dir %s: %s", path, strerror(err));
            return gerr_from_errno(err);
        }
        path[i] = saved;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        gerr_set(errmsg, "data dir %s is not a directory", dir);
        return GERR_INVAL;
    }
    return 0;
}

/* Wrap a failed dqlite call into @errmsg and translate its code. */
static int node_fail(struct store_node *n, int rv, const char *what, char *errmsg)
{
    const char *msg = n->dq != NULL ? dqlite_node_errmsg(n->dq) : NULL;
    gerr_set(errmsg, "node %llu (%s): %s: %s (%d)%s%s", (unsigned long long)n->id, n->address, what,
             dqlite_code_name(rv), rv, msg != NULL && msg[0] != '\0' ? ": " : "", msg != NULL ? msg : "");
    return node_err_from_dqlite(rv);
}

int store_node_start(const struct store_node_config *cfg, struct store_node **out, char *errmsg)
{
    struct sockaddr_in sa;
    struct sigaction ign;
    struct store_node *n;
    int rv;

    *out = NULL;
    /* Before anything else: when a peer dies, dqlite's writes to it must fail with EPIPE instead
     * of killing this process (dqlite-protocol.md 0.2). */
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);

    if (cfg->id == 0) {
        gerr_set(errmsg, "node id must be non-zero");
        return GERR_INVAL;
    }
    if (cfg->address == NULL || strlen(cfg->address) >= sizeof n->address ||
        addr_parse_ipv4(cfg->address, &sa, 0) != 0) {
        gerr_set(errmsg,
                 "node %llu: address \"%s\" is not a.b.c.d:port (dqlite 1.11 binds IPv4 literals only)",
                 (unsigned long long)cfg->id, cfg->address != NULL ? cfg->address : "(null)");
        return GERR_INVAL;
    }
    if (cfg->bind_address != NULL && cfg->bind_address[0] != '@' &&
        addr_parse_ipv4(cfg->bind_address, &sa, 0) != 0) {
        gerr_set(errmsg, "node %llu: bind address \"%s\" is neither a.b.c.d:port nor @abstract-name",
                 (unsigned long long)cfg->id, cfg->bind_address);
        return GERR_INVAL;
    }
    if (cfg->bind_address != NULL && cfg->bind_address[0] == '@' &&
        (strlen(cfg->bind_address) < 2 || strlen(cfg->bind_address) > 100)) {
        gerr_set(errmsg, "node %llu: abstract bind address must have 1 to 99 characters after '@'",
                 (unsigned long long)cfg->id);
        return GERR_INVAL;
    }
    if (cfg->dir == NULL) {
        gerr_set(errmsg, "node %llu: no data dir", (unsigned long long)cfg->id);
        return GERR_INVAL;
    }
    unsigned latency = cfg->latency_ms != 0 ? cfg->latency_ms : STORE_NODE_DEFAULT_LATENCY_MS;
    unsigned threshold =
        cfg->snapshot_threshold != 0 ? cfg->snapshot_threshold : STORE_NODE_DEFAULT_SNAPSHOT_THRESHOLD;
    unsigned trailing =
        cfg->snapshot_trailing != 0 ? cfg->snapshot_trailing : STORE_NODE_DEFAULT_SNAPSHOT_TRAILING;
    if (latency > 3600000u) {
        gerr_set(errmsg, "node %llu: latency %u ms out of range 1..3600000", (unsigned long long)cfg->id,
                 latency);
        return GERR_INVAL;
    }
    if (trailing < 4 || trailing < threshold) {
        gerr_set(errmsg, "node %llu: snapshot trailing %u must be >= 4 and >= threshold %u",
                 (unsigned long long)cfg->id, trailing, threshold);
        return GERR_INVAL;
    }
    rv = make_dir(cfg->dir, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "node %llu", (unsigned long long)cfg->id);
        return rv;
    }

    n = mem_zalloc(sizeof *n);
    n->id = cfg->id;
    snprintf(n->address, sizeof n->address, "%s", cfg->address);
    n->connect_timeout_ms =
        cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : STORE_NODE_DEFAULT_CONNECT_TIMEOUT_MS;

    rv = dqlite_node_create(cfg->id, cfg->address, cfg->dir, &n->dq);
    if (rv != 0) {
        rv = node_fail(n, rv, "create", errmsg);
        goto err_after_create;
    }
    n->dial = cfg->dial != NULL ? cfg->dial : store_conn_tcp_dial;
    n->dial_arg = cfg->dial_arg;
    if ((rv = dqlite_node_set_bind_address(n->dq, cfg->bind_address != NULL ? cfg->bind_address
                                                                            : cfg->address)) != 0) {
        rv = node_fail(n, rv, "bind address", errmsg);
        goto err_after_create;
    }
    if ((rv = dqlite_node_set_connect_func(n->dq, node_connect, n)) != 0) {
        rv = node_fail(n, rv, "set connect function", errmsg);
        goto err_after_create;
    }
    if ((rv = dqlite_node_set_network_latency_ms(n->dq, latency)) != 0) {
        rv = node_fail(n, rv, "set network latency", errmsg);
        goto err_after_create;
    }
    if ((rv = dqlite_node_set_snapshot_params(n->dq, threshold, trailing)) != 0) {
        rv = node_fail(n, rv, "set snapshot parameters", errmsg);
        goto err_after_create;
    }
    if (cfg->failure_domain != 0 && (rv = dqlite_node_set_failure_domain(n->dq, cfg->failure_domain)) != 0) {
        rv = node_fail(n, rv, "set failure domain", errmsg);
        goto err_after_create;
    }
    if ((rv = dqlite_node_start(n->dq)) != 0) {
        rv = node_fail(n, rv, "start", errmsg);
        goto err_after_create;
    }
    LOG_INFO("node %llu: started at %s, data dir %s, latency %u ms (heartbeat %u ms, election %u ms), "
             "snapshot %u/%u",
             (unsigned long long)n->id, n->address, cfg->dir, latency, latency * 3 / 2, latency * 15,
             threshold, trailing);
    *out = n;
    return 0;

err_after_create:
    /* dqlite_node_create may fail after allocating the node; like go-dqlite, read the message
     * first (done in node_fail) and then destroy what exists. */
    if (n->dq != NULL) {
        dqlite_node_destroy(n->dq);
    }
    mem_free(n);
    return rv;
}

void store_node_stop(struct store_node *n)
{
    if (n == NULL) {
        return;
    }
    int rv = dqlite_node_stop(n->dq);
    if (rv != 0) {
        LOG_WARN("node %llu: stop: %s (%d): %s", (unsigned long long)n->id, dqlite_code_name(rv), rv,
                 dqlite_node_errmsg(n->dq));
    }
    dqlite_node_destroy(n->dq);
    LOG_INFO("node %llu: stopped", (unsigned long long)n->id);
    mem_free(n);
}

int store_node_recover(const struct store_node_config *cfg, const struct store_node_member *members,
                       unsigned n, char *errmsg)
{
    struct sockaddr_in sa;
    bool self_listed = false;
    int rv;

    if (cfg->id == 0 || cfg->address == NULL || cfg->dir == NULL || n == 0 || n > 64) {
        gerr_set(errmsg, "recover: need this node's id, address, data dir and 1 to 64 members");
        return GERR_INVAL;
    }
    dqlite_node_info_ext *infos = mem_zalloc(sizeof *infos * n);
    for (unsigned i = 0; i < n; i++) {
        if (members[i].id == 0 || members[i].address == NULL ||
            addr_parse_ipv4(members[i].address, &sa, 0) != 0 || members[i].role < 0 || members[i].role > 2) {
            gerr_set(errmsg, "recover: member #%u needs a non-zero id, an a.b.c.d:port address and a role",
                     i);
            mem_free(infos);
            return GERR_INVAL;
        }
        self_listed = self_listed || members[i].id == cfg->id;
        infos[i].size = sizeof infos[i];
        infos[i].id = members[i].id;
        infos[i].address = (uint64_t)(uintptr_t)members[i].address;
        infos[i].dqlite_role = (uint64_t)members[i].role; /* dqlite's roles are the wire protocol's */
    }
    if (!self_listed) {
        gerr_set(errmsg, "recover: node %llu must be one of the members it recovers to",
                 (unsigned long long)cfg->id);
        mem_free(infos);
        return GERR_INVAL;
    }
    struct store_node tmp = {.id = cfg->id};
    snprintf(tmp.address, sizeof tmp.address, "%s", cfg->address);
    rv = dqlite_node_create(cfg->id, cfg->address, cfg->dir, &tmp.dq);
    if (rv == 0) {
        rv = dqlite_node_recover_ext(tmp.dq, infos, (int)n);
    }
    if (rv != 0) {
        rv = node_fail(&tmp, rv, "recover", errmsg);
    } else {
        LOG_INFO("node %llu: recovered: the cluster now has %u member(s)", (unsigned long long)cfg->id, n);
    }
    if (tmp.dq != NULL) {
        dqlite_node_destroy(tmp.dq);
    }
    mem_free(infos);
    return rv;
}
