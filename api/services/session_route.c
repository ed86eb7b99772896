/* Routed sessions: the frame codec and the target's session server (see session_route.h).
 *
 * Happy path on the target: the acceptor takes a connection the peer TLS relay handed over (same
 * process only), a thread reads the HEADER, starts the driver's side (a log reader, an exec, a
 * port connection), answers STARTED and relays: driver output to MSG frames, MSG frames to the
 * command's input and controls, and ends with END.
 *
 * Failure modes: a malformed or late HEADER (the connection is closed, nothing started); a driver
 * without a record of the sandbox (END NOT_FOUND: the forwarder tries another replica); the
 * forwarder gone (end of stream: the command is killed, as for a cancelled call); the replica
 * stopping (END UNAVAILABLE). */
#include "api/services/session_route.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api/forward/fwd.h"
#include "api/services/sessions_internal.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "server/grpc/status.h"

#define TARGET_IN_HIGH    (256u << 10)
#define TARGET_READ       (32u << 10)
#define HEADER_TIMEOUT_MS 5000
#define LINGER_MS         2000

void sroute_reader_feed(struct sroute_reader *r, const uint8_t *data, size_t n)
{
    if (r->used > 0 && r->used == r->b.len) {
        buf_reset(&r->b);
        r->used = 0;
    } else if (r->used > (256u << 10)) {
        memmove(r->b.data, r->b.data + r->used, r->b.len - r->used);
        r->b.len -= r->used;
        r->used = 0;
    }
    buf_append(&r->b, data, n);
}

int sroute_reader_fill(struct sroute_reader *r, int fd)
{
    uint8_t tmp[TARGET_READ];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n > 0) {
        sroute_reader_feed(r, tmp, (size_t)n);
        return 0;
    }
    if (n == 0) {
        return GERR_CLOSED;
    }
    return errno == EAGAIN || errno == EINTR ? 0 : GERR_IO;
}

int sroute_reader_next(struct sroute_reader *r, int *kind, const uint8_t **payload, size_t *len)
{
    size_t have = r->b.len - r->used;
    if (have < 4) {
        return GERR_BUSY;
    }
    const uint8_t *p = r->b.data + r->used;
    size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (n == 0 || n > SROUTE_MAX_FRAME) {
        return GERR_PROTO;
    }
    if (have < 4 + n) {
        return GERR_BUSY;
    }
    int k = p[4];
    if (k != SROUTE_HEADER && k != SROUTE_STARTED && k != SROUTE_MSG && k != SROUTE_END) {
        return GERR_PROTO;
    }
    *kind = k;
    *payload = p + 5;
    *len = n - 1;
    r->used += 4 + n;
    return 0;
}

void sroute_reader_close(struct sroute_reader *r)
{
    buf_close(&r->b);
    r->used = 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, atomic_bool *stop)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return GERR_CLOSED;
        }
        if (stop != NULL && atomic_load(stop)) {
            return GERR_CANCELED;
        }
        struct pollfd pf = {fd, POLLOUT, 0};
        (void)poll(&pf, 1, 100);
        if (pf.revents & (POLLERR | POLLHUP)) {
            return GERR_CLOSED;
        }
    }
    return 0;
}

int sroute_frame_append(struct buf *b, int kind, const ProtobufCMessage *m)
{
    size_t n = m != NULL ? protobuf_c_message_get_packed_size(m) : 0;
    if (n + 1 > SROUTE_MAX_FRAME) {
        return GERR_TOOBIG;
    }
    uint8_t *f = buf_reserve(b, 5 + n);
    uint32_t len = (uint32_t)(n + 1);
    f[0] = (uint8_t)(len >> 24);
    f[1] = (uint8_t)(len >> 16);
    f[2] = (uint8_t)(len >> 8);
    f[3] = (uint8_t)len;
    f[4] = (uint8_t)kind;
    if (m != NULL) {
        protobuf_c_message_pack(m, f + 5);
    }
    b->len += 5 + n;
    return 0;
}

int sroute_send(int fd, int kind, const ProtobufCMessage *m, atomic_bool *stop)
{
    struct buf b;
    buf_init(&b);
    int rv = sroute_frame_append(&b, kind, m);
    if (rv == 0) {
        rv = write_all(fd, b.data, b.len, stop);
    }
    buf_close(&b);
    return rv;
}

int sroute_send_end(int fd, int status, const char *message, atomic_bool *stop)
{
    fwd_response r = GANTRY__INTERNAL__V1__FORWARD_RESPONSE__INIT;
    r.status = status;
    r.message = (char *)(message != NULL ? message : "");
    return sroute_send(fd, SROUTE_END, &r.base, stop);
}

/* ---- The target ---- */

struct sroute_server {
    struct sessions_svc *svc;
    int lfd;
    pthread_t acceptor;
    atomic_bool stopping;
};

struct tconn {
    struct sessions_svc *svc;
    int fd;
};

static bool sandbox_gone(struct sessions_svc *svc, const char *id)
{
    struct store_client cl;
    if (store_client_init(&cl, &svc->store_cfg) != 0) {
        return false;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    int rv = store_client_query(&cl, "SELECT phase FROM sandboxes WHERE id = ?", p, 1, &rows);
    bool gone = rv == 0 && (rows.n_rows == 0 || strcmp(sessions__text(&rows, 0), "DELETING") == 0);
    proto_rows_close(&rows);
    store_client_close(&cl);
    return gone;
}

int sroute_wait_frame(int fd, struct sroute_reader *r, int *kind, const uint8_t **p, size_t *n,
                      unsigned timeout_ms)
{
    for (unsigned waited = 0; waited <= timeout_ms; waited += 100) {
        int rv = sroute_reader_next(r, kind, p, n);
        if (rv != GERR_BUSY) {
            return rv;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 100) > 0 && (rv = sroute_reader_fill(r, fd)) != 0) {
            return rv;
        }
    }
    return GERR_TIMEOUT;
}

static void serve_logs(struct sessions_svc *svc, int fd, struct sroute_reader *r, struct driver_log *log,
                       bool follow, const char *id)
{
    uint8_t *buf = mem_alloc(DRIVER_LOG_CHUNK);
    char errmsg[GERR_MSG_SIZE] = "";
    for (;;) {
        if (atomic_load(&svc->stopping)) {
            (void)sroute_send_end(
                fd, GRPC_STATUS_UNAVAILABLE,
                "the replica serving the session is stopping: read the log again (with since_ms)", NULL);
            break;
        }
        size_t n = 0;
        uint64_t ts = 0;
        int rv = driver_log_next(log, buf, DRIVER_LOG_CHUNK, &n, &ts, errmsg);
        if (rv == 0) {
            Gantry__V1__LogChunk chunk = GANTRY__V1__LOG_CHUNK__INIT;
            chunk.data.data = buf;
            chunk.data.len = n;
            chunk.time_ms = ts;
            if (sroute_send(fd, SROUTE_MSG, &chunk.base, &svc->stopping) != 0) {
                break; /* the forwarder went away */
            }
            continue;
        }
        if (rv == GERR_BUSY && follow) {
            struct pollfd pf = {fd, POLLIN, 0};
            if (poll(&pf, 1, SESSIONS_POLL_MS) > 0 && sroute_reader_fill(r, fd) != 0) {
                break; /* the forwarder closed: the session ended there */
            }
            continue;
        }
        if (rv == GERR_BUSY || rv == GERR_CLOSED) {
            (void)sroute_send_end(fd, GRPC_STATUS_OK,
                                  rv == GERR_CLOSED ? "the output ended" : "the end of the log", NULL);
        } else if (rv == GERR_NOTFOUND) {
            (void)sroute_send_end(fd, GRPC_STATUS_NOT_FOUND, "the sandbox was deleted", NULL);
        } else {
            char m[GERR_MSG_SIZE + 40];
            snprintf(m, sizeof m, "reading the log: %s", errmsg);
            (void)sroute_send_end(fd, GRPC_STATUS_INTERNAL, m, NULL);
        }
        break;
    }
    (void)id;
    mem_free(buf);
}

/* A message of the forwarder for an exec or a port-forward. */
static void take_input(struct driver_exec *x, bool port, const uint8_t *p, size_t n, struct buf *in,
                       bool *close_in)
{
    if (port) {
        Gantry__V1__PortForwardRequest *m = gantry__v1__port_forward_request__unpack(NULL, n, p);
        if (m != NULL) {
            if (!*close_in) {
                buf_append(in, m->data.data, m->data.len);
            }
            *close_in |= m->close_write;
            gantry__v1__port_forward_request__free_unpacked(m, NULL);
        }
        return;
    }
    Gantry__V1__ExecRequest *m = gantry__v1__exec_request__unpack(NULL, n, p);
    if (m == NULL) {
        return;
    }
    if (!*close_in) {
        buf_append(in, m->stdin.data, m->stdin.len);
    }
    *close_in |= m->close_stdin;
    if (m->resize != NULL && m->resize->rows > 0 && m->resize->cols > 0 && m->resize->rows <= 10000 &&
        m->resize->cols <= 10000) {
        (void)driver_exec_resize(x, (uint16_t)m->resize->rows, (uint16_t)m->resize->cols);
    }
    if (m->signal >= 1 && m->signal <= 31) {
        (void)driver_exec_signal(x, m->signal);
    }
    gantry__v1__exec_request__free_unpacked(m, NULL);
}

static void serve_exec(struct sessions_svc *svc, int fd, struct sroute_reader *r, struct driver_exec *x,
                       bool port, const char *id, struct buf *in, bool close_in)
{
    int in_fd, out_fd, err_fd, code = -1, sig = 0;
    driver_exec_fds(x, &in_fd, &out_fd, &err_fd);
    bool out_open = true, err_open = err_fd >= 0, in_closed = false, peer_open = true, ended = false;
    size_t in_off = 0;
    uint8_t *buf = mem_alloc(TARGET_READ);
    for (;;) {
        if (atomic_load(&svc->stopping)) {
            (void)sroute_send_end(fd, GRPC_STATUS_UNAVAILABLE,
                                  "the replica serving the session is stopping: the command was killed",
                                  NULL);
            break;
        }
        /* Input: write what is queued; close when asked and drained. */
        while (!in_closed && in->len > in_off) {
            ssize_t w = write(in_fd, in->data + in_off, in->len - in_off);
            if (w <= 0) {
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    in_off = in->len;
                }
                break;
            }
            in_off += (size_t)w;
        }
        if (in_off == in->len) {
            buf_reset(in);
            in_off = 0;
        }
        if (close_in && in->len == 0 && !in_closed) {
            driver_exec_close_stdin(x);
            in_closed = true;
        }
        if (!out_open && !err_open && driver_exec_status(x, &code, &sig) == 0) {
            ended = true;
            break;
        }
        struct pollfd p[4] = {{out_open ? out_fd : -1, POLLIN, 0},
                              {err_open ? err_fd : -1, POLLIN, 0},
                              {peer_open && in->len - in_off < TARGET_IN_HIGH ? fd : -1, POLLIN, 0},
                              {!in_closed && in->len > in_off ? in_fd : -1, POLLOUT, 0}};
        if (poll(p, 4, 100) < 0 && errno != EINTR) {
            break;
        }
        if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (sroute_reader_fill(r, fd) != 0) {
                break; /* the forwarder ended the session: the command is killed below */
            }
            int kind;
            const uint8_t *pl;
            size_t n;
            int rv;
            while ((rv = sroute_reader_next(r, &kind, &pl, &n)) == 0) {
                if (kind == SROUTE_MSG) {
                    take_input(x, port, pl, n, in, &close_in);
                }
            }
            if (rv == GERR_PROTO) {
                break;
            }
        }
        bool gone = false;
        for (int k = 0; k < 2 && !gone; k++) {
            bool *open = k == 0 ? &out_open : &err_open;
            if (!*open || !(p[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            ssize_t n = read(k == 0 ? out_fd : err_fd, buf, TARGET_READ);
            if (n > 0) {
                ProtobufCBinaryData b = {(size_t)n, buf};
                Gantry__V1__ExecResponse xr = GANTRY__V1__EXEC_RESPONSE__INIT;
                Gantry__V1__PortForwardResponse pr = GANTRY__V1__PORT_FORWARD_RESPONSE__INIT;
                if (k == 0) {
                    xr.stdout = b;
                } else {
                    xr.stderr = b;
                }
                pr.data = b;
                gone = sroute_send(fd, SROUTE_MSG, port ? &pr.base : &xr.base, &svc->stopping) != 0;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                *open = false;
            }
        }
        if (gone) {
            break;
        }
    }
    if (ended) {
        if ((port || sig == SIGKILL) && sandbox_gone(svc, id)) {
            (void)sroute_send_end(fd, GRPC_STATUS_NOT_FOUND, "the sandbox was deleted", NULL);
        } else {
            Gantry__V1__ExecResponse xr = GANTRY__V1__EXEC_RESPONSE__INIT;
            Gantry__V1__PortForwardResponse pr = GANTRY__V1__PORT_FORWARD_RESPONSE__INIT;
            xr.exited = true;
            xr.exit_code = code;
            xr.signal = sig;
            pr.closed = true;
            if (sroute_send(fd, SROUTE_MSG, port ? &pr.base : &xr.base, NULL) == 0) {
                (void)sroute_send_end(fd, GRPC_STATUS_OK, "", NULL);
            }
        }
    }
    mem_free(buf);
}

/* Close a session's connection without losing its last frames: a socket closed with unread bytes
 * (input frames the routing replica sent before it saw END) is reset, and the reset can overtake
 * the END on its way. So: shut the write side (the relay flushes what we wrote and closes), then
 * read and drop until the end of the stream, for at most LINGER_MS. */
static void linger_close(int fd)
{
    shutdown(fd, SHUT_WR);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint8_t tmp[4096];
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= LINGER_MS) {
            break;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, (int)(LINGER_MS - ms)) <= 0) {
            break;
        }
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            break;
        }
    }
    close(fd);
}

static void *target_main(void *arg)
{
    struct tconn *t = arg;
    struct sessions_svc *svc = t->svc;
    int fd = t->fd;
    mem_free(t);
    struct sroute_reader r = {0};
    buf_init(&r.b);
    int kind = 0;
    const uint8_t *pl = NULL;
    size_t n = 0;
    fwd_request *h = NULL;
    if (sroute_wait_frame(fd, &r, &kind, &pl, &n, HEADER_TIMEOUT_MS) != 0 || kind != SROUTE_HEADER ||
        (h = fwd_request_decode(pl, n)) == NULL || h->sandbox_id[0] == '\0') {
        LOG_WARN("sessions: a routed session without a valid header: closed");
        goto out;
    }
    char id[40], errmsg[GERR_MSG_SIZE] = "";
    snprintf(id, sizeof id, "%s", h->sandbox_id);
    bool logs = strcmp(h->method, "/gantry.v1.Sandboxes/Logs") == 0;
    bool exec = strcmp(h->method, "/gantry.v1.Sandboxes/Exec") == 0;
    bool port = strcmp(h->method, "/gantry.v1.Sandboxes/PortForward") == 0;
    if (svc->driver == NULL || (!logs && !exec && !port)) {
        (void)sroute_send_end(fd, GRPC_STATUS_NOT_FOUND, "no driver for sessions here", NULL);
        goto out;
    }
    int rv = sessions__claim(svc, id);
    if (rv != 0) {
        (void)sroute_send_end(fd, GRPC_STATUS_RESOURCE_EXHAUSTED,
                              rv == GERR_TOOBIG
                                  ? "the sandbox has its sessions on the serving replica already"
                                  : "the serving replica serves its sessions already",
                              NULL);
        goto out;
    }
    struct buf in;
    buf_init(&in);
    bool close_in = false;
    struct driver_log *log = NULL;
    struct driver_exec *x = NULL;
    bool follow = false;
    if (logs) {
        Gantry__V1__LogsRequest *q = gantry__v1__logs_request__unpack(NULL, h->request.len, h->request.data);
        if (q == NULL) {
            rv = GERR_PROTO;
        } else {
            struct driver_log_query lq = {.tail_lines = q->tail_lines > 0 ? q->tail_lines : -1,
                                          .since_ms = q->since_ms > 0 ? (uint64_t)q->since_ms : 0};
            follow = q->follow;
            rv = driver_logs_open(svc->driver, q->namespace_, id, &lq, &log, errmsg);
            gantry__v1__logs_request__free_unpacked(q, NULL);
        }
    } else if (exec) {
        Gantry__V1__ExecRequest *q = gantry__v1__exec_request__unpack(NULL, h->request.len, h->request.data);
        if (q == NULL || q->start == NULL || q->start->n_command == 0 ||
            q->start->n_command > DRIVER_ARGV_MAX) {
            rv = GERR_PROTO;
        } else {
            struct driver_exec_spec xs = {.command = (const char *const *)q->start->command,
                                          .n_command = q->start->n_command,
                                          .tty = q->start->tty,
                                          .rows = q->start->size != NULL ? (uint16_t)q->start->size->rows : 0,
                                          .cols =
                                              q->start->size != NULL ? (uint16_t)q->start->size->cols : 0};
            rv = driver_exec_start(svc->driver, q->start->namespace_, id, &xs, &x, errmsg);
            buf_append(&in, q->stdin.data, q->stdin.len);
            close_in = q->close_stdin;
        }
        if (q != NULL) {
            gantry__v1__exec_request__free_unpacked(q, NULL);
        }
    } else {
        Gantry__V1__PortForwardRequest *q =
            gantry__v1__port_forward_request__unpack(NULL, h->request.len, h->request.data);
        if (q == NULL || q->start == NULL || q->start->port == 0 || q->start->port > 65535) {
            rv = GERR_PROTO;
        } else {
            rv = driver_port_connect(svc->driver, q->start->namespace_, id, (uint16_t)q->start->port, &x,
                                     errmsg);
            buf_append(&in, q->data.data, q->data.len);
            close_in = q->close_write;
        }
        if (q != NULL) {
            gantry__v1__port_forward_request__free_unpacked(q, NULL);
        }
    }
    if (rv != 0) {
        int st = rv == GERR_NOTFOUND                            ? GRPC_STATUS_NOT_FOUND
                 : rv == GERR_PROTO                             ? GRPC_STATUS_INVALID_ARGUMENT
                 : rv == GERR_UNAVAILABLE || rv == GERR_REFUSED ? GRPC_STATUS_FAILED_PRECONDITION
                                                                : grpc_status_from_gerr(rv);
        (void)sroute_send_end(fd, st, rv == GERR_PROTO ? "a malformed routed session" : errmsg, NULL);
    } else if (sroute_send(fd, SROUTE_STARTED, NULL, &svc->stopping) == 0) {
        if (logs) {
            serve_logs(svc, fd, &r, log, follow, id);
        } else {
            serve_exec(svc, fd, &r, x, port, id, &in, close_in);
        }
    }
    if (log != NULL) {
        driver_log_close(log);
    }
    if (x != NULL) {
        driver_exec_close(x); /* kills the command if it still runs */
    }
    buf_close(&in);
    sessions__release(svc, id);
out:
    if (h != NULL) {
        gantry__internal__v1__forward_request__free_unpacked(h, NULL);
    }
    sroute_reader_close(&r);
    linger_close(fd);
    return NULL;
}

static bool same_process(int fd)
{
    struct ucred cred;
    socklen_t n = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) == 0 && cred.pid == getpid();
}

static void *acceptor(void *arg)
{
    struct sroute_server *s = arg;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (atomic_load(&s->stopping)) {
            if (fd >= 0) {
                close(fd);
            }
            return NULL;
        }
        if (fd < 0) {
            struct timespec ts = {0, 50 * 1000000L}; /* EMFILE and friends: do not spin */
            nanosleep(&ts, NULL);
            continue;
        }
        if (!same_process(fd)) {
            LOG_WARN("sessions: refused a routed session from another process");
            close(fd);
            continue;
        }
        struct tconn *t = mem_zalloc(sizeof *t);
        t->svc = s->svc;
        t->fd = fd;
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, target_main, t) != 0) {
            close(fd);
            mem_free(t);
        }
        pthread_attr_destroy(&attr);
    }
}

int sroute_server_start(const char *path, struct sessions_svc *svc, struct sroute_server **out, char *errmsg)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n < 2 || path[0] != '@' || n >= sizeof sa.sun_path) {
        gerr_set(errmsg, "sessions: bad socket path %s", path);
        return GERR_INVAL;
    }
    memcpy(sa.sun_path, path, n);
    sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 64) != 0) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "sessions: listen on %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return rv;
    }
    struct sroute_server *s = mem_zalloc(sizeof *s);
    s->svc = svc;
    s->lfd = fd;
    if (pthread_create(&s->acceptor, NULL, acceptor, s) != 0) {
        close(fd);
        mem_free(s);
        gerr_set(errmsg, "sessions: cannot start the accept thread");
        return GERR_NOMEM;
    }
    *out = s;
    return 0;
}

void sroute_server_stop(struct sroute_server *s)
{
    if (s == NULL) {
        return;
    }
    atomic_store(&s->stopping, true);
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->lfd);
    mem_free(s);
}
