/* Forwarding calls between replicas: frames, the client's connections, the server (fwd.h).
 *
 * Happy path (client): pick a connection to the address (dial one when fewer than the limit exist),
 * register a waiter under a fresh call_id, write the frame under the connection's write lock, wait
 * on the waiter's condition; the connection's reader thread decodes each response and wakes the
 * waiter with the same call_id.
 * Failure modes: a write or read error, EOF or a malformed frame marks the connection broken: every
 * waiter on it is woken with GERR_CLOSED (sent = true: the request may have run) and the connection
 * is dropped from its address's set once its reader exits; a waiter that times out removes itself,
 * and a response that arrives later is discarded.
 *
 * Happy path (server): an accept thread, one reader thread per connection handing each request to
 * the server's function; fwd_reply writes the response under the connection's write lock.
 * Connections and replies are reference counted, so a reply owed by a closed connection is a no-op
 * and frees nothing twice. */
#include "api/forward/fwd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"

/* --- frames --- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return GERR_CLOSED;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return GERR_CLOSED;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Pack @m into one frame. Heap (mem_free). */
static uint8_t *frame_of(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *f = mem_alloc(n + 4);
    f[0] = (uint8_t)(n >> 24);
    f[1] = (uint8_t)(n >> 16);
    f[2] = (uint8_t)(n >> 8);
    f[3] = (uint8_t)n;
    protobuf_c_message_pack(m, f + 4);
    *len = n + 4;
    return f;
}

int fwd_frame_length(const uint8_t header[4], size_t *len)
{
    uint32_t n = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
    if (n > FWD_MAX_FRAME) {
        return GERR_PROTO;
    }
    *len = n;
    return 0;
}

fwd_request *fwd_request_decode(const uint8_t *body, size_t len)
{
    return gantry__internal__v1__forward_request__unpack(NULL, len, body);
}

fwd_response *fwd_response_decode(const uint8_t *body, size_t len)
{
    return gantry__internal__v1__forward_response__unpack(NULL, len, body);
}

/* Read one frame's body. GERR_CLOSED (EOF or error) or GERR_PROTO (too big). Heap (mem_free). */
static int read_frame(int fd, uint8_t **out, size_t *len)
{
    uint8_t h[4];
    size_t n;
    int rv = read_all(fd, h, 4);
    if (rv != 0) {
        return rv;
    }
    if (fwd_frame_length(h, &n) != 0) {
        return GERR_PROTO;
    }
    uint8_t *b = mem_alloc(n > 0 ? n : 1);
    rv = read_all(fd, b, n);
    if (rv != 0) {
        mem_free(b);
        return rv;
    }
    *out = b;
    *len = n;
    return 0;
}

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* --- client --- */

/* A call waiting for its answer. Its own condition variable: an answer wakes only its caller (one
 * shared variable woke every caller of the client on each answer, about 20 on a follower under
 * load, all but one to sleep again). */
struct waiter {
    struct waiter *next;
    uint64_t call_id;
    pthread_cond_t cond; /* signalled under client->mu when done is set */
    bool done;
    int status;
    fwd_response *resp;
};

struct cconn {
    struct cconn *next;
    struct fwd_client *client;
    char address[256];
    int fd;
    pthread_t reader;
    pthread_mutex_t wmu; /* writes */
    bool ready;          /* under client->mu: dialled and its reader started */
    bool broken;         /* under client->mu */
    bool reader_done;    /* under client->mu */
    unsigned inflight;   /* under client->mu */
    struct waiter *waiters;
};

struct fwd_client {
    fwd_dial_fn dial;
    void *dial_arg;
    unsigned per_target;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* connection changes: ready, broken, reader exits, the last call of one */
    struct cconn *conns;
    uint64_t next_id;
    bool closing;
};

struct fwd_client *fwd_client_new(fwd_dial_fn dial, void *dial_arg, unsigned conns_per_target)
{
    struct fwd_client *c = mem_zalloc(sizeof *c);
    c->dial = dial;
    c->dial_arg = dial_arg;
    c->per_target = conns_per_target > 0 ? conns_per_target : 1;
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->cond);
    return c;
}

/* Under c->mu: wake every waiter of @k with @status. */
static void fail_waiters(struct fwd_client *c, struct cconn *k, int status)
{
    for (struct waiter *w = k->waiters; w != NULL; w = w->next) {
        if (!w->done) {
            w->done = true;
            w->status = status;
            pthread_cond_signal(&w->cond);
        }
    }
    k->waiters = NULL;
    pthread_cond_broadcast(&c->cond);
}

static void *client_reader(void *arg)
{
    struct cconn *k = arg;
    struct fwd_client *c = k->client;
    for (;;) {
        uint8_t *body;
        size_t len;
        int rv = read_frame(k->fd, &body, &len);
        fwd_response *resp = NULL;
        if (rv == 0) {
            resp = fwd_response_decode(body, len);
            mem_free(body);
            if (resp == NULL) {
                rv = GERR_PROTO;
            }
        }
        pthread_mutex_lock(&c->mu);
        if (rv != 0) {
            k->broken = true;
            fail_waiters(c, k, GERR_CLOSED);
            k->reader_done = true;
            pthread_cond_broadcast(&c->cond);
            pthread_mutex_unlock(&c->mu);
            if (rv == GERR_PROTO) {
                LOG_WARN("forward: a malformed response from %s: connection dropped", k->address);
            }
            return NULL;
        }
        struct waiter **pp = &k->waiters;
        while (*pp != NULL && (*pp)->call_id != resp->call_id) {
            pp = &(*pp)->next;
        }
        if (*pp != NULL) {
            struct waiter *w = *pp;
            *pp = w->next;
            w->done = true;
            w->status = 0;
            w->resp = resp;
            resp = NULL;
            pthread_cond_signal(&w->cond);
        }
        pthread_mutex_unlock(&c->mu);
        if (resp != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(resp, NULL); /* its caller gave up */
        }
    }
}

/* Under c->mu: reap connections whose reader has exited. */
static void reap(struct fwd_client *c)
{
    for (struct cconn **pp = &c->conns; *pp != NULL;) {
        struct cconn *k = *pp;
        if (k->reader_done && k->inflight == 0) {
            *pp = k->next;
            if (k->ready) {
                pthread_join(k->reader, NULL);
            }
            if (k->fd >= 0) {
                close(k->fd);
            }
            pthread_mutex_destroy(&k->wmu);
            mem_free(k);
        } else {
            pp = &k->next;
        }
    }
}

/* A connection to @address with the fewest calls in flight; dials a new one (without the lock, a
 * placeholder holding its place) when fewer than per_target exist and all are busy. Returns it with
 * inflight counted, or NULL with @rv. */
static struct cconn *conn_for(struct fwd_client *c, const char *address, unsigned timeout_ms, int *rv,
                              char *errmsg)
{
    pthread_mutex_lock(&c->mu);
    reap(c);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        *rv = GERR_CLOSED;
        gerr_set(errmsg, "forward: the client is closing");
        return NULL;
    }
    struct cconn *best = NULL;
    unsigned n = 0;
    for (struct cconn *k = c->conns; k != NULL; k = k->next) {
        if (k->broken || strcmp(k->address, address) != 0) {
            continue;
        }
        n++;
        if (best == NULL || k->inflight < best->inflight) {
            best = k;
        }
    }
    if (best != NULL && (n >= c->per_target || best->inflight == 0)) {
        best->inflight++;
        while (!best->ready && !best->broken) {
            pthread_cond_wait(&c->cond, &c->mu);
        }
        if (best->broken) {
            best->inflight--;
            pthread_cond_broadcast(&c->cond);
            pthread_mutex_unlock(&c->mu);
            *rv = GERR_CLOSED;
            gerr_set(errmsg, "forward: cannot connect to %s", address);
            return NULL;
        }
        pthread_mutex_unlock(&c->mu);
        return best;
    }
    struct cconn *k = mem_zalloc(sizeof *k);
    k->client = c;
    snprintf(k->address, sizeof k->address, "%s", address);
    k->fd = -1;
    k->inflight = 1;
    pthread_mutex_init(&k->wmu, NULL);
    k->next = c->conns;
    c->conns = k;
    pthread_mutex_unlock(&c->mu);
    int fd = -1;
    *rv = c->dial(c->dial_arg, address, timeout_ms, &fd, errmsg);
    pthread_mutex_lock(&c->mu);
    if (*rv == 0) {
        k->fd = fd;
        if (c->closing) {
            shutdown(fd, SHUT_RDWR); /* fwd_client_free is waiting: the reader ends at once */
        }
        if (pthread_create(&k->reader, NULL, client_reader, k) == 0) {
            k->ready = true;
        } else {
            *rv = GERR_NOMEM;
            gerr_set(errmsg, "forward: cannot start a reader thread");
        }
    }
    if (!k->ready) {
        k->broken = true;
        k->reader_done = true; /* no reader: reap closes it */
        k->inflight--;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
        return NULL;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return k;
}

int fwd_client_call(struct fwd_client *c, const char *address, fwd_request *req, unsigned timeout_ms,
                    fwd_response **resp, bool *sent, char *errmsg)
{
    *resp = NULL;
    *sent = false;
    int rv = 0;
    struct cconn *k = conn_for(c, address, timeout_ms, &rv, errmsg);
    if (k == NULL) {
        return rv;
    }
    struct waiter w = {0};
    cond_init_mono(&w.cond);
    pthread_mutex_lock(&c->mu);
    w.call_id = ++c->next_id;
    req->call_id = w.call_id;
    bool broken = k->broken;
    if (!broken) {
        w.next = k->waiters;
        k->waiters = &w;
    }
    pthread_mutex_unlock(&c->mu);
    if (broken) {
        rv = GERR_CLOSED;
        gerr_set(errmsg, "forward: the connection to %s failed", address);
        goto out;
    }
    size_t len;
    uint8_t *frame = frame_of(&req->base, &len);
    pthread_mutex_lock(&k->wmu);
    *sent = true;
    rv = write_all(k->fd, frame, len);
    pthread_mutex_unlock(&k->wmu);
    mem_free(frame);
    if (rv != 0) {
        shutdown(k->fd, SHUT_RDWR); /* the reader fails every waiter, this one included */
    }
    struct timespec ts;
    clock_mono_deadline(&ts, timeout_ms > 0 ? timeout_ms : 30000);
    pthread_mutex_lock(&c->mu);
    int wrv = 0;
    while (!w.done && wrv != ETIMEDOUT) {
        wrv = clock_cond_wait_mono(&w.cond, &c->mu, &ts);
    }
    if (!w.done) {
        for (struct waiter **pp = &k->waiters; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == &w) {
                *pp = w.next;
                break;
            }
        }
        rv = GERR_TIMEOUT;
        gerr_set(errmsg, "forward: no answer from %s within %u ms", address, timeout_ms);
    } else if (w.status != 0) {
        rv = w.status;
        gerr_set(errmsg, "forward: the connection to %s failed", address);
    } else {
        rv = 0;
        *resp = w.resp;
    }
    pthread_mutex_unlock(&c->mu);
out:
    pthread_mutex_lock(&c->mu);
    if (--k->inflight == 0 && k->reader_done) {
        pthread_cond_broadcast(&c->cond); /* reap may free it now: fwd_client_free waits for that */
    }
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&w.cond); /* no one signals it now: done, or out of the list, under c->mu */
    return rv;
}

void fwd_client_free(struct fwd_client *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    for (struct cconn *k = c->conns; k != NULL; k = k->next) {
        if (k->fd >= 0) {
            shutdown(k->fd, SHUT_RDWR);
        }
    }
    while (c->conns != NULL) {
        reap(c);
        if (c->conns != NULL) {
            pthread_cond_wait(&c->cond, &c->mu);
        }
    }
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    mem_free(c);
}

/* --- server --- */

struct sconn {
    struct sconn *next;
    struct fwd_server *server;
    int fd;
    pthread_t reader;
    pthread_mutex_t wmu;
    unsigned refs; /* under server->mu: the reader and each reply owed */
    bool closed;   /* under server->mu */
};

struct fwd_reply {
    struct sconn *conn;
    uint64_t call_id;
};

struct fwd_server {
    fwd_request_fn fn;
    void *data;
    int lfd;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct sconn *conns;
    bool stopping;
    uint64_t requests, connections;
};

/* Under s->mu: drop a reference; the last one frees the connection. */
static void sconn_unref(struct fwd_server *s, struct sconn *k)
{
    if (--k->refs > 0) {
        return;
    }
    for (struct sconn **pp = &s->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    close(k->fd);
    pthread_mutex_destroy(&k->wmu);
    mem_free(k);
    pthread_cond_broadcast(&s->cond);
}

static void *server_reader(void *arg)
{
    struct sconn *k = arg;
    struct fwd_server *s = k->server;
    for (;;) {
        uint8_t *body;
        size_t len;
        int rv = read_frame(k->fd, &body, &len);
        fwd_request *req = NULL;
        if (rv == 0) {
            req = fwd_request_decode(body, len);
            mem_free(body);
            if (req == NULL) {
                rv = GERR_PROTO;
                LOG_WARN("forward: a malformed request: connection closed");
            }
        }
        if (rv != 0) {
            break;
        }
        struct fwd_reply *r = mem_zalloc(sizeof *r);
        r->conn = k;
        r->call_id = req->call_id;
        pthread_mutex_lock(&s->mu);
        k->refs++;
        s->requests++;
        pthread_mutex_unlock(&s->mu);
        s->fn(s->data, req, r);
    }
    pthread_mutex_lock(&s->mu);
    k->closed = true;
    shutdown(k->fd, SHUT_RDWR);
    sconn_unref(s, k); /* the reader's own reference */
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void fwd_reply(struct fwd_reply *r, int status, const char *message, const uint8_t *reply, size_t len)
{
    fwd_response resp = GANTRY__INTERNAL__V1__FORWARD_RESPONSE__INIT;
    resp.status = status;
    resp.message = (char *)(message != NULL ? message : "");
    resp.reply.data = (uint8_t *)reply;
    resp.reply.len = reply != NULL ? len : 0;
    fwd_reply_response(r, &resp);
}

void fwd_reply_response(struct fwd_reply *r, fwd_response *resp)
{
    struct sconn *k = r->conn;
    struct fwd_server *s = k->server;
    resp->call_id = r->call_id;
    size_t flen;
    uint8_t *frame = frame_of(&resp->base, &flen);
    pthread_mutex_lock(&s->mu);
    bool closed = k->closed;
    pthread_mutex_unlock(&s->mu);
    if (!closed) {
        pthread_mutex_lock(&k->wmu);
        if (write_all(k->fd, frame, flen) != 0) {
            shutdown(k->fd, SHUT_RDWR);
        }
        pthread_mutex_unlock(&k->wmu);
    }
    mem_free(frame);
    pthread_mutex_lock(&s->mu);
    sconn_unref(s, k);
    pthread_mutex_unlock(&s->mu);
    mem_free(r);
}

static bool same_process(int fd)
{
    struct ucred cred;
    socklen_t n = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) == 0 && cred.pid == getpid();
}

static void *acceptor(void *arg)
{
    struct fwd_server *s = arg;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) {
            if (fd >= 0) {
                close(fd);
            }
            return NULL;
        }
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            struct timespec ts = {0, 50 * 1000000L}; /* EMFILE and friends: do not spin */
            nanosleep(&ts, NULL);
            continue;
        }
        if (!same_process(fd)) {
            LOG_WARN("forward: refused a connection from another process");
            close(fd);
            continue;
        }
        struct sconn *k = mem_zalloc(sizeof *k);
        k->server = s;
        k->fd = fd;
        k->refs = 1;
        pthread_mutex_init(&k->wmu, NULL);
        pthread_mutex_lock(&s->mu);
        k->next = s->conns;
        s->conns = k;
        s->connections++;
        if (pthread_create(&k->reader, NULL, server_reader, k) != 0) {
            k->closed = true;
            sconn_unref(s, k);
        } else {
            pthread_detach(k->reader);
        }
        pthread_mutex_unlock(&s->mu);
    }
}

int fwd_server_start(const char *path, fwd_request_fn fn, void *data, struct fwd_server **out, char *errmsg)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sa.sun_path) {
        gerr_set(errmsg, "forward: bad socket path %s", path);
        return GERR_INVAL;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 64) != 0) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "forward: listen on %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return rv;
    }
    struct fwd_server *s = mem_zalloc(sizeof *s);
    s->fn = fn;
    s->data = data;
    s->lfd = fd;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->acceptor, NULL, acceptor, s) != 0) {
        close(fd);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        mem_free(s);
        gerr_set(errmsg, "forward: cannot start the accept thread");
        return GERR_NOMEM;
    }
    *out = s;
    return 0;
}

void fwd_server_stop(struct fwd_server *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (struct sconn *k = s->conns; k != NULL; k = k->next) {
        shutdown(k->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&s->mu);
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->lfd);
    /* Readers exit on the shut-down sockets, each dropping its reference; the caller has answered
     * every request it was given (fwd.h), so the connections go. */
    pthread_mutex_lock(&s->mu);
    for (struct sconn *k = s->conns; k != NULL; k = k->next) {
        k->closed = true;
    }
    while (s->conns != NULL) {
        pthread_cond_wait(&s->cond, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    mem_free(s);
}

void fwd_server_stats(struct fwd_server *s, uint64_t *requests, uint64_t *connections)
{
    pthread_mutex_lock(&s->mu);
    *requests = s->requests;
    *connections = s->connections;
    pthread_mutex_unlock(&s->mu);
}
