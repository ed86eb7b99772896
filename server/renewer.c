/* Renewing this replica's certificate while it runs, and signing renewals on a CA holder. See
 * renewer.h.
 *
 * Happy path (renewer): wait RENEWER_FIRST_MS, certrenew_run; nothing due: sleep an hour. Due and
 * renewed: reload the relay and the API server. Failure modes: no holder answers, the store is not
 * ready, a file cannot be written: logged, tried again after retry_ms; the files installed stay
 * whole (certrenew_run), and a reload that fails leaves the running identity as it was. */
#include "server/renewer.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "raft/cakeeper.h"
#include "raft/certrenew.h"
#include "raft/certrenew_wire.h"
#include "raft/certrevoke.h"
#include "raft/peertls.h"

#define DIAL_TIMEOUT_MS 3000u
#define IO_TIMEOUT_MS   5000u

static int64_t wall_now_ms(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

/* Write all of @b to @fd, waiting at most IO_TIMEOUT_MS in all. */
static int send_all(int fd, const struct buf *b)
{
    size_t off = 0;
    uint64_t end = clock_mono_ms(clock_system()) + IO_TIMEOUT_MS;
    while (off < b->len) {
        ssize_t n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return GERR_IO;
        }
        uint64_t now = clock_mono_ms(clock_system());
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        if (now >= end || poll(&pf, 1, (int)(end - now)) <= 0) {
            return GERR_TIMEOUT;
        }
    }
    return 0;
}

/* Read once into @b (at most @max in all) within the time left until @end. GERR_CLOSED at EOF. */
static int recv_some(int fd, struct buf *b, size_t max, uint64_t end)
{
    uint64_t now = clock_mono_ms(clock_system());
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&pf, 1, (int)(end - now)) <= 0) {
        return GERR_TIMEOUT;
    }
    if (b->len >= max) {
        return GERR_TOOBIG;
    }
    uint8_t tmp[4096];
    size_t want = max - b->len < sizeof tmp ? max - b->len : sizeof tmp;
    ssize_t n = recv(fd, tmp, want, MSG_DONTWAIT);
    if (n == 0) {
        return GERR_CLOSED;
    }
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : GERR_IO;
    }
    buf_append(b, tmp, (size_t)n);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The client side: ask the members in turn */

struct renewer {
    char data_dir[4096];
    struct cakeeper *ca;
    unsigned renew_days;
    struct replica *replica;
    struct grpc_server *api;
    unsigned interval_ms, retry_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop, kicked, forced; /* under mu */
};

/* One member: 0 with *@cert_out, or its error (GERR_UNAVAILABLE: it holds no CA key). */
static int ask_one(struct renewer *r, const char *address, const struct buf *req, char **cert_out,
                   char *errmsg)
{
    struct peertls *relay = replica_relay(r->replica);
    int fd = -1;
    int rv = peertls_dial_alpn(relay, address, CERTRENEW_ALPN, DIAL_TIMEOUT_MS, &fd, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct buf in;
    buf_init(&in);
    rv = send_all(fd, req);
    uint64_t end = clock_mono_ms(clock_system()) + IO_TIMEOUT_MS;
    int status = 0;
    char *text = NULL;
    while (rv == 0) {
        rv = certrenew_wire_response_decode(in.data, in.len, &status, &text, errmsg);
        if (rv != GERR_CLOSED) {
            break;
        }
        rv = recv_some(fd, &in, CERTRENEW_WIRE_MAX_RESP, end);
    }
    if (rv == GERR_CLOSED || rv == GERR_TIMEOUT || rv == GERR_IO || rv == GERR_TOOBIG) {
        gerr_set(errmsg, "no answer (%s)", gerr_str(rv));
    }
    if (rv == 0 && status != 0) {
        gerr_set(errmsg, "%s", text);
        rv = status;
    } else if (rv == 0) {
        *cert_out = text;
        text = NULL;
    }
    mem_free(text);
    buf_close(&in);
    close(fd);
    return rv;
}

static int sign_via_holder(void *arg, const char *csr_pem, const char *cert_pem, char **cert_out,
                           char *errmsg)
{
    struct renewer *r = arg;
    if (replica_relay(r->replica) == NULL) {
        gerr_set(errmsg, "no peer relay to reach a CA holder through");
        return GERR_UNAVAILABLE;
    }
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(r->replica, v);
    struct buf req;
    buf_init(&req);
    certrenew_wire_request_encode(csr_pem, cert_pem, &req);
    char last[GERR_MSG_SIZE + 320] = "the cluster's membership is not known yet";
    int rv = GERR_UNAVAILABLE;
    const char *self = replica_address(r->replica);
    for (unsigned i = 0; v->valid && i < v->n; i++) {
        if (strcmp(v->nodes[i].address, self) == 0) {
            continue;
        }
        char err[GERR_MSG_SIZE] = "";
        rv = ask_one(r, v->nodes[i].address, &req, cert_out, err);
        if (rv == 0) {
            LOG_INFO("certificate renewal: replica %" PRIu64 " at %s signed this replica's renewal",
                     v->nodes[i].id, v->nodes[i].address);
            break;
        }
        snprintf(last, sizeof last, "replica %" PRIu64 " at %s: %s", v->nodes[i].id, v->nodes[i].address,
                 err);
        if (rv != GERR_UNAVAILABLE) {
            LOG_WARN("certificate renewal: %s", last);
        }
    }
    if (rv != 0) {
        gerr_set(errmsg, "no member that holds the cluster CA key signed the renewal (last: %s)", last);
        rv = GERR_UNAVAILABLE;
    }
    buf_close(&req);
    mem_free(v);
    return rv;
}

static void reload(struct renewer *r, const char *why)
{
    char err[GERR_MSG_SIZE] = "";
    struct peertls *relay = replica_relay(r->replica);
    certrenew_files_lock(); /* the files read whole, not half-way through a renewal or a rotation */
    if (relay != NULL && peertls_reload(relay, err) != 0) {
        LOG_ERROR(
            "certificate renewal: %s, but the peer relay could not reload it (%s): it keeps the old one "
            "until a restart",
            why, err);
    }
    if (r->api != NULL && grpc_server_reload_tls(r->api, err) != 0) {
        LOG_ERROR(
            "certificate renewal: %s, but the API server could not reload it (%s): it keeps the old one "
            "until a restart",
            why, err);
    }
    certrenew_files_unlock();
}

static void *renewer_main(void *arg)
{
    struct renewer *r = arg;
    uint64_t wait_ms = RENEWER_FIRST_MS;
    bool forced = false;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        struct timespec until;
        clock_mono_deadline(&until, wait_ms);
        while (!r->stop && !r->kicked && !r->forced && clock_cond_wait_mono(&r->cond, &r->mu, &until) == 0) {
        }
        if (r->stop) {
            break;
        }
        bool kicked = r->kicked;
        forced = forced || r->forced; /* until a renewal succeeds */
        r->kicked = r->forced = false;
        pthread_mutex_unlock(&r->mu);
        if (kicked) {
            reload(r, "reloading on request");
        }
        bool renewed = false;
        int64_t not_after = 0;
        char err[GERR_MSG_SIZE] = "";
        struct identity_secrets sec = {.ca_pem = NULL};
        cakeeper_signer(r->ca, &sec.ca_pem, &sec.ca_key_pem);
        int rv = certrenew_run(r->data_dir, &sec, r->renew_days, wall_now_ms(), forced, sign_via_holder, r,
                               &renewed, &not_after, err);
        identity_secrets_free(&sec);
        if (rv != 0) {
            LOG_WARN("%s; trying again in %u s", err, r->retry_ms / 1000);
            wait_ms = r->retry_ms;
        } else {
            if (renewed) {
                reload(r, "the certificate was renewed");
            }
            wait_ms = r->interval_ms;
        }
        forced = forced && rv != 0; /* a failed one is tried again after retry_ms */
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int renewer_start(const struct renewer_config *cfg, struct renewer **out, char *errmsg)
{
    struct renewer *r = mem_zalloc(sizeof *r);
    snprintf(r->data_dir, sizeof r->data_dir, "%s", cfg->data_dir);
    r->ca = cfg->ca;
    r->renew_days = cfg->renew_days;
    r->replica = cfg->replica;
    r->api = cfg->api;
    r->interval_ms = cfg->interval_ms != 0 ? cfg->interval_ms : RENEWER_INTERVAL_MS;
    r->retry_ms = cfg->retry_ms != 0 ? cfg->retry_ms : RENEWER_RETRY_MS;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, renewer_main, r) != 0) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->mu);
        mem_free(r);
        gerr_set(errmsg, "certificate renewal: cannot start the thread");
        return GERR_NOMEM;
    }
    *out = r;
    return 0;
}

void renewer_kick(struct renewer *r)
{
    pthread_mutex_lock(&r->mu);
    r->kicked = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

void renewer_force(struct renewer *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->forced) {
        r->forced = true;
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->mu);
}

void renewer_stop(struct renewer *r)
{
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    mem_free(r);
}

/* ------------------------------------------------------------------------------------------------
 * The service on a holder: one request at a time (renewals are rare), on its accept thread */

struct renew_server {
    struct cakeeper *ca;
    struct replica *replica;
    struct store_writer *writer;
    int lfd;
    pthread_t thread;
    pthread_mutex_t mu;
    bool stop; /* under mu */
};

/* How many certificates of @member_id were recorded after @fingerprint (its renewals): a store_tx_fn.
 * Only the member's newest certificate may be renewed, so a leaked older key cannot mint new ones.
 * "After" is insertion order (rowid), not recorded_at_ms: that comes from the clocks of different
 * replicas. A new row's rowid is above every row in the table, and a restore copies rows in rowid
 * order (store/backup.c), so the order holds. */
struct newer_certs {
    uint64_t member_id;
    const char *fingerprint;
    int64_t newer;
};

static int newer_certs_tx(struct store_tx *tx, void *arg)
{
    struct newer_certs *n = arg;
    struct proto_value p[] = {proto_int((int64_t)n->member_id), proto_text(n->fingerprint),
                              proto_int((int64_t)n->member_id), proto_text(n->fingerprint)};
    return store_tx_query_int(tx,
                              "SELECT count(*) FROM member_certs AS c, member_certs AS mine WHERE "
                              "c.member_id = ? AND c.fingerprint <> ? AND mine.member_id = ? AND "
                              "mine.fingerprint = ? AND c.rowid > mine.rowid",
                              p, 4, &n->newer);
}

/* Decide and sign: 0 with *@cert, or a GERR_* code with @errmsg for the caller. */
static int sign_request(struct renew_server *s, const struct certrenew_wire_request *req, uint64_t *member_id,
                        char **cert, char *errmsg)
{
    if (!cakeeper_can_sign(s->ca)) {
        gerr_set(errmsg, "this member does not hold the cluster CA key");
        return GERR_UNAVAILABLE;
    }
    char fp[PKI_FINGERPRINT_SIZE];
    int rv;
    if (pki_fingerprint(req->cert_pem, fp, errmsg) != 0 || strcmp(fp, req->peer_fp) != 0) {
        gerr_set(errmsg, "the certificate sent is not the one the connection was made with");
        return GERR_PERM;
    }
    char *bundle = cakeeper_bundle(s->ca); /* the old CA too during a rotation */
    rv = pki_verify(bundle, req->cert_pem, errmsg);
    mem_free(bundle);
    if (rv != 0) {
        return GERR_PERM;
    }
    struct certrevoke_holder h = {.fingerprint = fp};
    rv = store_writer_run(s->writer, certrevoke_holder_tx, &h, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "read member_certs");
        return GERR_UNAVAILABLE;
    }
    if (h.member_id == 0) {
        gerr_set(errmsg, "certificate %s is on record for %u members, not one", fp, h.members);
        return GERR_PERM;
    }
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(s->replica, v);
    bool member = false;
    for (unsigned i = 0; v->valid && i < v->n; i++) {
        member = member || v->nodes[i].id == h.member_id;
    }
    bool valid = v->valid;
    mem_free(v);
    if (!member) {
        gerr_set(errmsg, "replica %" PRIu64 " is not in the cluster's configuration%s", h.member_id,
                 valid ? "" : " (not known yet)");
        return valid ? GERR_PERM : GERR_UNAVAILABLE;
    }
    struct newer_certs nc = {.member_id = h.member_id, .fingerprint = fp};
    if ((rv = store_writer_run(s->writer, newer_certs_tx, &nc, errmsg)) != 0) {
        gerr_wrap(errmsg, "read member_certs");
        return GERR_UNAVAILABLE;
    }
    if (nc.newer > 0) {
        gerr_set(errmsg,
                 "certificate %s is not replica %" PRIu64 "'s newest: it was renewed since (%" PRId64
                 " newer on record), and only the newest is renewed",
                 fp, h.member_id, nc.newer);
        return GERR_PERM;
    }
    *member_id = h.member_id;
    char *ca_pem = NULL, *ca_key = NULL;
    cakeeper_signer(s->ca, &ca_pem, &ca_key); /* the new CA during a rotation */
    rv = ca_key != NULL
             ? pki_renew_csr(ca_key, ca_pem, req->cert_pem, req->csr_pem, PKI_CERT_DAYS, cert, errmsg)
             : GERR_UNAVAILABLE;
    if (ca_key != NULL) {
        memset(ca_key, 0, strlen(ca_key));
    }
    mem_free(ca_key);
    mem_free(ca_pem);
    if (rv != 0) {
        return GERR_INVAL;
    }
    /* On record before it is handed out: removing the member revokes it too. */
    char nfp[PKI_FINGERPRINT_SIZE];
    struct certrevoke_cert note = {.member_id = h.member_id, .now_ms = wall_now_ms(), .fingerprint = nfp};
    rv = pki_fingerprint(*cert, nfp, errmsg);
    if (rv == 0) {
        rv = pki_not_after_ms(*cert, &note.not_after_ms, errmsg);
    }
    if (rv == 0 && (rv = store_writer_run(s->writer, certrevoke_note_tx, &note, errmsg)) != 0) {
        gerr_wrap(errmsg, "record the new certificate");
        rv = GERR_UNAVAILABLE;
    }
    if (rv != 0) {
        mem_free(*cert);
        *cert = NULL;
    }
    return rv;
}

static void serve_one(struct renew_server *s, int fd)
{
    struct buf in, out;
    buf_init(&in);
    buf_init(&out);
    struct certrenew_wire_request req = {.csr_pem = NULL};
    char err[GERR_MSG_SIZE] = "";
    uint64_t end = clock_mono_ms(clock_system()) + IO_TIMEOUT_MS;
    size_t used = 0;
    int rv;
    for (;;) {
        rv = in.len > 0 ? certrenew_wire_request_decode(in.data, in.len, &req, &used, err) : GERR_CLOSED;
        if (rv != GERR_CLOSED) {
            break;
        }
        rv = recv_some(fd, &in, CERTRENEW_WIRE_MAX_REQ, end);
        if (rv != 0) {
            snprintf(err, sizeof err, "renewal: the request did not arrive whole (%s)", gerr_str(rv));
            break;
        }
    }
    uint64_t member = 0;
    char *cert = NULL;
    if (rv == 0) {
        rv = sign_request(s, &req, &member, &cert, err);
    }
    if (rv == 0) {
        LOG_INFO("certificate renewal: signed a renewal for replica %" PRIu64 " (its certificate %s)", member,
                 req.peer_fp);
        certrenew_wire_response_encode(0, cert, &out);
    } else {
        if (rv != GERR_UNAVAILABLE || cakeeper_can_sign(s->ca)) {
            LOG_WARN("certificate renewal: refused a renewal for the holder of %s: %s",
                     req.peer_fp[0] != '\0' ? req.peer_fp : "an unknown certificate", err);
        }
        certrenew_wire_response_encode(
            rv == GERR_PROTO || rv == GERR_CLOSED || rv == GERR_TIMEOUT ? GERR_PROTO : rv, err, &out);
    }
    (void)send_all(fd, &out);
    mem_free(cert);
    certrenew_wire_request_free(&req);
    buf_close(&in);
    buf_close(&out);
}

static bool same_process(int fd)
{
    struct ucred cred;
    socklen_t n = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) == 0 && cred.pid == getpid();
}

static void *server_main(void *arg)
{
    struct renew_server *s = arg;
    for (;;) {
        struct pollfd pf = {.fd = s->lfd, .events = POLLIN};
        int pr = poll(&pf, 1, 200);
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            return NULL;
        }
        if (pr <= 0) {
            continue;
        }
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        if (!same_process(fd)) {
            LOG_WARN("certificate renewal: refused a connection from another process");
        } else {
            serve_one(s, fd);
        }
        close(fd);
    }
}

int renew_server_start(const char *path, struct cakeeper *ca, struct replica *replica,
                       struct store_writer *writer, struct renew_server **out, char *errmsg)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n < 2 || n >= sizeof sa.sun_path || path[0] != '@') {
        gerr_set(errmsg, "certificate renewal: bad socket name %s", path);
        return GERR_INVAL;
    }
    memcpy(sa.sun_path, path, n);
    sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 16) != 0) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "certificate renewal: listen on %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return rv;
    }
    struct renew_server *s = mem_zalloc(sizeof *s);
    s->ca = ca;
    s->replica = replica;
    s->writer = writer;
    s->lfd = fd;
    pthread_mutex_init(&s->mu, NULL);
    if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
        close(fd);
        pthread_mutex_destroy(&s->mu);
        mem_free(s);
        gerr_set(errmsg, "certificate renewal: cannot start the thread");
        return GERR_NOMEM;
    }
    *out = s;
    return 0;
}

void renew_server_stop(struct renew_server *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    mem_free(s);
}
