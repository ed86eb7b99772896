/* gantry.v1 Sandboxes.Exec (docs/sessions.md): a command in a running sandbox, over a bidi stream.
 *
 * Happy path: the gate authorized the call by its first message (ExecStart, gate.h) and runs
 * sessions__exec on a worker: check the request, find the sandbox, require ownership, an admin
 * role or an EXEC share (a READ share: PERMISSION_DENIED), start the command through the driver
 * (driver_exec_start), attach to the call's further messages and resume its input, and hand the
 * session to a thread of its own. The thread polls the command's stdout and stderr and a wake-up
 * pipe, sends output (waiting while the call's unsent output is above SESSIONS_SEND_BOUND), writes
 * queued input to the command's stdin, applies resizes, signals and the end of input, and when the
 * command has ended and its output is drained sends the exit status and ends the call OK.
 *
 * Flow control, input: messages arrive on the loop thread (on_message) and are queued; above
 * EXEC_IN_HIGH queued bytes the call's input is paused (grpc_call_pause_input), so a command that
 * does not read its stdin makes the client stop (HTTP/2 window) instead of the replica buffering;
 * the thread resumes it below EXEC_IN_LOW. Output: as for Logs.
 *
 * Failure modes: the sandbox deleted while the command runs (the command dies with the sandbox's
 * PID namespace: NOT_FOUND "... was deleted"), the credential revoked (UNAUTHENTICATED, the command
 * is killed), the client gone (CANCELLED, killed), the replica stopping (UNAVAILABLE, killed). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/services/session_route.h"
#include "api/services/sessions_internal.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

#define EXEC_IN_HIGH (256u << 10)
#define EXEC_IN_LOW  (64u << 10)
#define EXEC_READ    (32u << 10)
#define OP_EXEC      "/gantry.v1.Sandboxes/Exec"
#define OP_PORT      "/gantry.v1.Sandboxes/PortForward"

struct exec_session {
    bool port; /* a port-forward: a socket, PortForwardRequest/Response */
    struct sessions_svc *svc;
    struct grpc_call *call; /* one reference, dropped by grpc_call_finish_async */
    struct driver_exec *x;
    struct authn_principal who;
    char ns[64], name[64], id[40], source[64];
    char command[256]; /* for the audit: the first arguments, truncated */
    int64_t started_ms;
    uint64_t bytes_out, bytes_in;
    struct sessions__grant grant; /* authorized again every second */
    int sock;                     /* a routed session: the connection to the serving replica, or -1 */
    struct sroute_reader rd;
    char via[64];
    int wake[2]; /* the loop thread writes a byte when it queued something */
    /* Shared with the loop thread (on_message), under mu. */
    pthread_mutex_t mu;
    struct buf in; /* stdin not yet written */
    size_t in_off;
    bool in_paused, close_stdin, half_closed;
    uint16_t rows, cols; /* a pending resize (0: none) */
    int signal;          /* a pending signal (0: none) */
};

static void wake(struct exec_session *e)
{
    char c = 1;
    ssize_t w = write(e->wake[1], &c, 1); /* non-blocking: a full pipe is awake already */
    (void)w;
}

/* On the loop thread, under the gate's bidi lock (gate_bidi_detach waits for it). */
static void exec_on_message(struct grpc_call *call, const ProtobufCMessage *msg, void *data)
{
    struct exec_session *e = data;
    pthread_mutex_lock(&e->mu);
    if (msg == NULL) {
        e->half_closed = true;
        e->close_stdin = true;
    } else if (e->port) {
        const Gantry__V1__PortForwardRequest *r = (const void *)msg;
        if (r->data.len > 0 && !e->close_stdin) {
            buf_append(&e->in, r->data.data, r->data.len);
            e->bytes_in += r->data.len;
        }
        e->close_stdin |= r->close_write;
    } else {
        const Gantry__V1__ExecRequest *r = (const void *)msg;
        if (r->stdin.len > 0 && !e->close_stdin) {
            buf_append(&e->in, r->stdin.data, r->stdin.len);
            e->bytes_in += r->stdin.len;
        }
        e->close_stdin |= r->close_stdin;
        if (r->resize != NULL && r->resize->rows > 0 && r->resize->cols > 0 && r->resize->rows <= 10000 &&
            r->resize->cols <= 10000) {
            e->rows = (uint16_t)r->resize->rows;
            e->cols = (uint16_t)r->resize->cols;
        }
        if (r->signal >= 1 && r->signal <= 31) {
            e->signal = r->signal;
        }
    }
    if (msg != NULL) {
        if (e->in.len - e->in_off > EXEC_IN_HIGH && !e->in_paused) {
            e->in_paused = true;
            grpc_call_pause_input(call); /* the command is not reading: make the client wait */
        }
    }
    pthread_mutex_unlock(&e->mu);
    wake(e);
}

/* Send @n bytes of the command's stdout (or stderr), waiting for a slow client first. */
static void send_output(struct exec_session *e, const uint8_t *data, size_t n, bool err)
{
    struct clock *clk = clock_system();
    while (grpc_call_unsent(e->call) > SESSIONS_SEND_BOUND && !grpc_call_cancelled(e->call) &&
           !atomic_load(&e->svc->stopping)) {
        clk->sleep_ns(clk, 2 * 1000000ull);
    }
    ProtobufCBinaryData b = {n, (uint8_t *)data};
    if (e->port) {
        Gantry__V1__PortForwardResponse r = GANTRY__V1__PORT_FORWARD_RESPONSE__INIT;
        r.data = b;
        (void)grpc_call_send_async(e->call, &r.base);
    } else {
        Gantry__V1__ExecResponse r = GANTRY__V1__EXEC_RESPONSE__INIT;
        if (err) {
            r.stderr = b;
        } else {
            r.stdout = b;
        }
        (void)grpc_call_send_async(e->call, &r.base);
    }
    e->bytes_out += n;
}

/* Write queued input; apply controls. Returns with the lock released. */
static void feed(struct exec_session *e, int in_fd, bool *stdin_closed)
{
    pthread_mutex_lock(&e->mu);
    if (in_fd >= 0 && !*stdin_closed) {
        while (e->in.len > e->in_off) {
            ssize_t w = write(in_fd, e->in.data + e->in_off, e->in.len - e->in_off);
            if (w <= 0) {
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    e->in_off = e->in.len; /* the command closed its stdin: drop the rest */
                }
                break;
            }
            e->in_off += (size_t)w;
        }
        if (e->in_off == e->in.len) {
            buf_reset(&e->in);
            e->in_off = 0;
        }
    }
    if (e->in_paused && e->in.len - e->in_off < EXEC_IN_LOW) {
        e->in_paused = false;
        grpc_call_resume_input(e->call);
    }
    bool close_now = e->close_stdin && e->in.len == e->in_off && !*stdin_closed;
    uint16_t rows = e->rows, cols = e->cols;
    int sig = e->signal;
    e->rows = e->cols = 0;
    e->signal = 0;
    pthread_mutex_unlock(&e->mu);
    if (close_now) {
        driver_exec_close_stdin(e->x);
        *stdin_closed = true;
    }
    if (rows > 0) {
        (void)driver_exec_resize(e->x, rows, cols); /* GERR_INVAL without a tty: ignored */
    }
    if (sig > 0) {
        (void)driver_exec_signal(e->x, sig);
    }
}

/* Whether sandbox @e->id is gone or being deleted (how a killed command learns why). */
static bool sandbox_deleted(struct store_client *cl, const struct exec_session *e)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(e->id)};
    int rv = store_client_query(cl, "SELECT phase FROM sandboxes WHERE id = ?", p, 1, &rows);
    bool gone = rv == 0 && (rows.n_rows == 0 || strcmp(sessions__text(&rows, 0), "DELETING") == 0);
    proto_rows_close(&rows);
    return gone;
}

/* Has the session been idle (no byte either way) for the svc's idle timeout? @moved and @moved_at
 * carry the byte count seen last and when it changed (the session thread's own). */
static bool idle_past(struct exec_session *e, uint64_t now, uint64_t *moved, uint64_t *moved_at)
{
    pthread_mutex_lock(&e->mu);
    uint64_t m = e->bytes_in + e->bytes_out;
    pthread_mutex_unlock(&e->mu);
    if (m != *moved) {
        *moved = m;
        *moved_at = now;
        return false;
    }
    return e->svc->idle_timeout_ms != 0 && now - *moved_at >= e->svc->idle_timeout_ms;
}

/* What ends a running session before its command does, checked every round of its loop: the
 * replica stopping, the client gone, or no byte either way for the idle timeout. GRPC_STATUS_OK, or
 * the status with @why for the client. */
static int session_ends(struct exec_session *e, uint64_t now, uint64_t *moved, uint64_t *moved_at, char *why,
                        size_t len)
{
    if (atomic_load(&e->svc->stopping)) {
        snprintf(why, len, "the replica is stopping: the command was killed");
        return GRPC_STATUS_UNAVAILABLE;
    }
    if (grpc_call_cancelled(e->call)) {
        snprintf(why, len, "the client went away: the command was killed");
        return GRPC_STATUS_CANCELLED;
    }
    if (idle_past(e, now, moved, moved_at)) {
        snprintf(why, len,
                 "no byte moved either way for %" PRIu64
                 " s (session_idle_timeout_s): the session was ended and the %s",
                 e->svc->idle_timeout_ms / 1000u, e->port ? "connection closed" : "command killed");
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    }
    return GRPC_STATUS_OK;
}

/* Every AUTHN_CACHE_TTL_MS / 2, the session authorized again (sessions__still_allowed). */
static int reauthorize(struct exec_session *e, struct store_client *cl, struct clock *clk,
                       uint64_t *last_check, char *why, size_t len)
{
    uint64_t now = clock_mono_ms(clk);
    if (now - *last_check < AUTHN_CACHE_TTL_MS / 2) {
        return GRPC_STATUS_OK;
    }
    *last_check = now;
    int az = sessions__still_allowed(e->svc, cl, &e->who, &e->grant, (int64_t)clk->wall_ms(clk), why, len);
    if (az == 0) {
        return GRPC_STATUS_OK;
    }
    return az == GERR_PERM ? GRPC_STATUS_PERMISSION_DENIED : GRPC_STATUS_UNAUTHENTICATED;
}

static void *exec_main(void *arg)
{
    struct exec_session *e = arg;
    struct sessions_svc *svc = e->svc;
    struct clock *clk = clock_system();
    struct store_client cl;
    bool have_cl = store_client_init(&cl, &svc->store_cfg) == 0;
    int in_fd, out_fd, err_fd, code = -1, sig = 0, status = GRPC_STATUS_OK;
    driver_exec_fds(e->x, &in_fd, &out_fd, &err_fd);
    bool out_open = true, err_open = err_fd >= 0, stdin_closed = false, ended = false;
    uint8_t *buf = mem_alloc(EXEC_READ);
    char why[GERR_MSG_SIZE] = "";
    uint64_t last_check = clock_mono_ms(clk), moved = 0, moved_at = last_check;
    for (;;) {
        if ((status = session_ends(e, clock_mono_ms(clk), &moved, &moved_at, why, sizeof why)) !=
            GRPC_STATUS_OK) {
            break;
        }
        feed(e, in_fd, &stdin_closed);
        pthread_mutex_lock(&e->mu);
        bool want_out = e->in.len > e->in_off && !stdin_closed;
        pthread_mutex_unlock(&e->mu);
        struct pollfd p[4] = {{out_open ? out_fd : -1, POLLIN, 0},
                              {err_open ? err_fd : -1, POLLIN, 0},
                              {e->wake[0], POLLIN, 0},
                              {want_out ? in_fd : -1, POLLOUT, 0}};
        if (!out_open && !err_open) {
            /* Output done: wait for the status (the command may have closed it and run on). */
            if (driver_exec_status(e->x, &code, &sig) == 0) {
                ended = true;
                break;
            }
        }
        int n = poll(p, 4, 100);
        if (n < 0 && errno != EINTR) {
            status = GRPC_STATUS_INTERNAL;
            snprintf(why, sizeof why, "poll: %s", strerror(errno));
            break;
        }
        if (p[2].revents & POLLIN) {
            char drain[64];
            while (read(e->wake[0], drain, sizeof drain) > 0) {
            }
        }
        for (int k = 0; k < 2; k++) {
            bool *open = k == 0 ? &out_open : &err_open;
            int fd = k == 0 ? out_fd : err_fd;
            if (!*open || !(p[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            ssize_t r = read(fd, buf, EXEC_READ);
            if (r > 0) {
                send_output(e, buf, (size_t)r, k == 1);
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                *open = false; /* EOF, or EIO from a pty whose command side is closed */
            }
        }
        if (have_cl && (status = reauthorize(e, &cl, clk, &last_check, why, sizeof why)) != GRPC_STATUS_OK) {
            break;
        }
    }
    gate_bidi_detach(e->call); /* no more on_message into this session */
    if (ended && (e->port || sig == SIGKILL) && have_cl && sandbox_deleted(&cl, e)) {
        status = GRPC_STATUS_NOT_FOUND;
        snprintf(why, sizeof why, "sandbox \"%s\" of namespace \"%s\" was deleted while the %s ran", e->name,
                 e->ns, e->port ? "connection" : "command");
    } else if (ended && e->port) {
        Gantry__V1__PortForwardResponse r = GANTRY__V1__PORT_FORWARD_RESPONSE__INIT;
        r.closed = true;
        (void)grpc_call_send_async(e->call, &r.base);
        snprintf(why, sizeof why, "the sandbox's side closed the connection");
    } else if (ended) {
        Gantry__V1__ExecResponse r = GANTRY__V1__EXEC_RESPONSE__INIT;
        r.exited = true;
        r.exit_code = code;
        r.signal = sig;
        (void)grpc_call_send_async(e->call, &r.base);
        snprintf(why, sizeof why, "exit code %d%s", code, sig != 0 ? " (killed by a signal)" : "");
    }
    grpc_call_finish_async(e->call, status, status == GRPC_STATUS_OK ? NULL : why, NULL);
    driver_exec_close(e->x); /* kills the command if it still runs */
    int64_t end_ms = (int64_t)clk->wall_ms(clk);
    char msg[GERR_MSG_SIZE + 600];
    snprintf(msg, sizeof msg,
             "%s session ended: %s; %s [%s]; %" PRIu64 " bytes sent, %" PRIu64 " received; started %" PRId64
             ", lasted %" PRId64 " ms",
             e->port ? "port-forward" : "exec", why, e->port ? "port" : "command", e->command, e->bytes_out,
             e->bytes_in, e->started_ms, end_ms - e->started_ms);
    sessions__audit(svc, &e->who, e->ns, e->id, e->name, e->source, e->port ? OP_PORT : OP_EXEC, end_ms,
                    status == GRPC_STATUS_OK, status, msg);
    if (have_cl) {
        store_client_close(&cl);
    }
    mem_free(buf);
    close(e->wake[0]);
    close(e->wake[1]);
    buf_close(&e->in);
    pthread_mutex_destroy(&e->mu);
    sessions__release(svc, e->id);
    mem_free(e);
    return NULL;
}

/* Queue what the client sent as frames for the serving replica (at most about 64 KiB pending). */
static void route_feed(struct exec_session *e, struct buf *q, size_t q_off, bool *sent_close)
{
    pthread_mutex_lock(&e->mu);
    while (q->len - q_off < (64u << 10)) {
        size_t left = e->in.len - e->in_off, n = left < (32u << 10) ? left : (32u << 10);
        bool close_now = e->close_stdin && n == left && !*sent_close;
        if (n == 0 && !close_now && e->rows == 0 && e->signal == 0) {
            break;
        }
        ProtobufCBinaryData b = {n, e->in.data + e->in_off};
        if (e->port) {
            Gantry__V1__PortForwardRequest r = GANTRY__V1__PORT_FORWARD_REQUEST__INIT;
            r.data = b;
            r.close_write = close_now;
            (void)sroute_frame_append(q, SROUTE_MSG, &r.base);
        } else {
            Gantry__V1__ExecRequest r = GANTRY__V1__EXEC_REQUEST__INIT;
            Gantry__V1__TerminalSize sz = GANTRY__V1__TERMINAL_SIZE__INIT;
            r.stdin = b;
            r.close_stdin = close_now;
            if (e->rows > 0) {
                sz.rows = e->rows;
                sz.cols = e->cols;
                r.resize = &sz;
            }
            r.signal = e->signal;
            (void)sroute_frame_append(q, SROUTE_MSG, &r.base);
        }
        e->in_off += n;
        e->rows = e->cols = 0;
        e->signal = 0;
        *sent_close |= close_now;
    }
    if (e->in_off == e->in.len) {
        buf_reset(&e->in);
        e->in_off = 0;
    }
    if (e->in_paused && e->in.len - e->in_off < EXEC_IN_LOW) {
        e->in_paused = false;
        grpc_call_resume_input(e->call);
    }
    pthread_mutex_unlock(&e->mu);
}

/* A frame of the serving replica: 0 to go on, otherwise the session ends (*@status, @why). */
static int route_frame(struct exec_session *e, int kind, const uint8_t *p, size_t n, int *status, char *why,
                       size_t len, int *code, int *sig)
{
    if (kind == SROUTE_END) {
        fwd_response *r = fwd_response_decode(p, n);
        *status = r != NULL ? r->status : GRPC_STATUS_UNAVAILABLE;
        if (r == NULL) {
            snprintf(why, len, "the replica serving the session (%s) sent a malformed frame", e->via);
        } else if (r->status == GRPC_STATUS_OK) {
            if (e->port) {
                snprintf(why, len, "the sandbox's side closed the connection");
            } else {
                snprintf(why, len, "exit code %d%s", *code, *sig != 0 ? " (killed by a signal)" : "");
            }
        } else if (r->status == GRPC_STATUS_NOT_FOUND) {
            snprintf(why, len, "sandbox \"%s\" of namespace \"%s\" was deleted while the %s ran", e->name,
                     e->ns, e->port ? "connection" : "command");
        } else {
            snprintf(why, len, "%s", r->message);
        }
        if (r != NULL) {
            gantry__internal__v1__forward_response__free_unpacked(r, NULL);
        }
        return GERR_CLOSED;
    }
    if (kind != SROUTE_MSG) {
        return 0;
    }
    ProtobufCMessage *m = e->port ? (ProtobufCMessage *)gantry__v1__port_forward_response__unpack(NULL, n, p)
                                  : (ProtobufCMessage *)gantry__v1__exec_response__unpack(NULL, n, p);
    if (m == NULL) {
        return 0;
    }
    struct clock *clk = clock_system();
    while (grpc_call_unsent(e->call) > SESSIONS_SEND_BOUND && !grpc_call_cancelled(e->call) &&
           !atomic_load(&e->svc->stopping)) {
        clk->sleep_ns(clk, 2 * 1000000ull); /* the client reads slowly: stop reading the target */
    }
    if (e->port) {
        e->bytes_out += ((Gantry__V1__PortForwardResponse *)m)->data.len;
    } else {
        Gantry__V1__ExecResponse *x = (Gantry__V1__ExecResponse *)m;
        e->bytes_out += x->stdout.len + x->stderr.len;
        if (x->exited) {
            *code = x->exit_code;
            *sig = x->signal;
        }
    }
    (void)grpc_call_send_async(e->call, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* A routed exec or port-forward (session_route.h): relay between the call and the serving
 * replica; authorize again every second and cut the connection when that fails. */
static void *route_main(void *arg)
{
    struct exec_session *e = arg;
    struct sessions_svc *svc = e->svc;
    struct clock *clk = clock_system();
    struct store_client cl;
    bool have_cl = store_client_init(&cl, &svc->store_cfg) == 0;
    int status = GRPC_STATUS_OK, code = -1, sig = 0;
    char why[GERR_MSG_SIZE] = "";
    struct buf q;
    buf_init(&q);
    size_t q_off = 0;
    bool sent_close = false;
    uint64_t last_check = clock_mono_ms(clk), moved = 0, moved_at = last_check;
    for (;;) {
        if ((status = session_ends(e, clock_mono_ms(clk), &moved, &moved_at, why, sizeof why)) !=
            GRPC_STATUS_OK) {
            break;
        }
        route_feed(e, &q, q_off, &sent_close);
        int kind, rv;
        const uint8_t *p;
        size_t n;
        bool done = false;
        while (!done && (rv = sroute_reader_next(&e->rd, &kind, &p, &n)) == 0) {
            done = route_frame(e, kind, p, n, &status, why, sizeof why, &code, &sig) != 0;
        }
        if (done) {
            break;
        }
        if (rv == GERR_PROTO) {
            status = GRPC_STATUS_UNAVAILABLE;
            snprintf(why, sizeof why, "the replica serving the session (%s) sent a malformed frame", e->via);
            break;
        }
        struct pollfd pf[2] = {{e->sock, (short)(POLLIN | (q.len > q_off ? POLLOUT : 0)), 0},
                               {e->wake[0], POLLIN, 0}};
        (void)poll(pf, 2, 100);
        if (pf[1].revents & POLLIN) {
            char drain[64];
            while (read(e->wake[0], drain, sizeof drain) > 0) {
            }
        }
        if (q.len > q_off && (pf[0].revents & POLLOUT)) {
            ssize_t w = send(e->sock, q.data + q_off, q.len - q_off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                q_off += (size_t)w;
                if (q_off == q.len) {
                    buf_reset(&q);
                    q_off = 0;
                }
            }
        }
        if ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) && sroute_reader_fill(&e->rd, e->sock) != 0) {
            while (!done && sroute_reader_next(&e->rd, &kind, &p, &n) == 0) {
                done = route_frame(e, kind, p, n, &status, why, sizeof why, &code, &sig) != 0;
            }
            if (!done) {
                status = GRPC_STATUS_UNAVAILABLE;
                snprintf(why, sizeof why,
                         "the replica serving the session (%s) went away: the command's end is unknown",
                         e->via);
            }
            break;
        }
        if (have_cl && (status = reauthorize(e, &cl, clk, &last_check, why, sizeof why)) != GRPC_STATUS_OK) {
            break;
        }
    }
    gate_bidi_detach(e->call);
    close(e->sock); /* the serving replica ends the command when the connection goes */
    grpc_call_finish_async(e->call, status, status == GRPC_STATUS_OK ? NULL : why, NULL);
    int64_t end_ms = (int64_t)clk->wall_ms(clk);
    char msg[GERR_MSG_SIZE + 700];
    snprintf(msg, sizeof msg,
             "%s session ended: %s; %s [%s]; %" PRIu64 " bytes sent, %" PRIu64 " received; started %" PRId64
             ", lasted %" PRId64 " ms; served by the replica at %s",
             e->port ? "port-forward" : "exec", why, e->port ? "port" : "command", e->command, e->bytes_out,
             e->bytes_in, e->started_ms, end_ms - e->started_ms, e->via);
    sessions__audit(svc, &e->who, e->ns, e->id, e->name, e->source, e->port ? OP_PORT : OP_EXEC, end_ms,
                    status == GRPC_STATUS_OK, status, msg);
    if (have_cl) {
        store_client_close(&cl);
    }
    buf_close(&q);
    sroute_reader_close(&e->rd);
    close(e->wake[0]);
    close(e->wake[1]);
    buf_close(&e->in);
    pthread_mutex_destroy(&e->mu);
    sessions__release(svc, e->id);
    mem_free(e);
    return NULL;
}

static void command_text(const Gantry__V1__ExecStart *st, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < st->n_command && n + 1 < len; i++) {
        int w = snprintf(out + n, len - n, "%s%s", i > 0 ? " " : "", st->command[i]);
        if (w < 0) {
            break;
        }
        n += (size_t)w < len - n ? (size_t)w : len - n - 1;
    }
}

/* What a session starts with, from the first message. */
struct start_args {
    bool port;
    const char *ns, *name;
    const struct driver_exec_spec *xs; /* exec */
    uint16_t port_no;                  /* port-forward */
    const char *what;                  /* for the audit: the command line, or the port */
    bool tty;
    const ProtobufCMessage *first; /* the call's first message, for routing */
    const uint8_t *input;          /* data the first message carried */
    size_t input_len;
    bool close_input;
};

static void session_start(struct gate_ctx *ctx, struct sessions_svc *svc, const struct start_args *a)
{
    const char *op = a->port ? OP_PORT : OP_EXEC, *kind = a->port ? "port-forward" : "exec";
    struct sb_session_target target;
    if (!sessions__target(svc, ctx, a->ns, a->name, &target)) {
        return;
    }
    if (!target.found) {
        gate_fail(
            ctx, GRPC_STATUS_NOT_FOUND,
            "sandbox \"%.63s\" does not exist in namespace \"%.63s\" (or is not yours or shared with you)",
            a->name, a->ns);
        return;
    }
    if (!target.exec) {
        char why[200];
        snprintf(why, sizeof why,
                 "%s in a sandbox needs its owner, namespace_admin, or an exec share: a read share allows "
                 "reading its logs only",
                 kind);
        sessions__audit(svc, &ctx->who, a->ns, target.id, a->name, grpc_call_peer(ctx->call), op, ctx->now_ms,
                        false, GRPC_STATUS_PERMISSION_DENIED, why);
        gate_fail(ctx, GRPC_STATUS_PERMISSION_DENIED, "%s", why);
        return;
    }
    struct exec_session *e = mem_zalloc(sizeof *e);
    e->port = a->port;
    snprintf(e->id, sizeof e->id, "%s", target.id);
    sessions__grant_init(&e->grant, ctx, a->port ? SESSIONS_OP_PORT : SESSIONS_OP_EXEC, a->ns, e->id,
                         target.owner);
    char phase[24];
    snprintf(phase, sizeof phase, "%s", target.phase);
    int rv = 0;
    gate_release_store(ctx);
    struct driver_caps caps = {0};
    if (svc->driver != NULL) {
        driver_capabilities(svc->driver, &caps);
    }
    char errmsg[GERR_MSG_SIZE] = "";
    if (svc->driver == NULL || !(a->port ? caps.port_forward : caps.exec)) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "%s is not supported by the %s driver yet", kind,
                  svc->driver == NULL ? "(no)" : caps.name);
    } else if (strcmp(phase, "READY") != 0) {
        gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "sandbox \"%.63s\" is not running (phase %s)",
                  a->name, phase);
    } else if ((rv = sessions__claim(svc, e->id)) != 0) {
        sessions__claim_fail(ctx, rv, a->name);
    } else {
        e->sock = -1;
        rv = a->port ? driver_port_connect(svc->driver, a->ns, e->id, a->port_no, &e->x, errmsg)
                     : driver_exec_start(svc->driver, a->ns, e->id, a->xs, &e->x, errmsg);
        int rst = 0;
        char rmsg[GERR_MSG_SIZE + 100] = "";
        bool refused = false; /* by the replica that has the sandbox: its answer is the client's */
        if (rv == GERR_NOTFOUND) {
            int r2 = sessions__route(svc, ctx, op, a->first, e->id, &e->sock, &e->rd, e->via, sizeof e->via,
                                     &rst, rmsg, sizeof rmsg);
            rv = r2 == 0 ? 0 : rv;
            refused = r2 != 0 && r2 != GERR_NOTFOUND && rst != 0;
        }
        if (refused) {
            sessions__release(svc, e->id);
            gate_fail(ctx, rst, "%s", rmsg);
        } else if (rv != 0) {
            sessions__release(svc, e->id);
            if (rv == GERR_NOTFOUND) {
                gate_fail(
                    ctx, GRPC_STATUS_UNAVAILABLE,
                    "cannot reach sandbox \"%.63s\": neither this replica's driver nor any other replica "
                    "that answered has a record of it",
                    a->name);
            } else if (rv == GERR_UNAVAILABLE || rv == GERR_REFUSED) {
                gate_fail(ctx, GRPC_STATUS_FAILED_PRECONDITION, "sandbox \"%.63s\": %s", a->name, errmsg);
            } else {
                gate_fail(ctx, grpc_status_from_gerr(rv), "%s in sandbox \"%.63s\": %s", kind, a->name,
                          errmsg);
            }
        } else if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
            sessions__release(svc, e->id);
            if (e->x != NULL) {
                driver_exec_close(e->x);
            }
            if (e->sock >= 0) {
                close(e->sock);
            }
            sroute_reader_close(&e->rd);
            gate_fail(ctx, GRPC_STATUS_INTERNAL, "pipe: %s", strerror(errno));
        } else {
            e->svc = svc;
            e->call = ctx->call;
            e->who = ctx->who;
            snprintf(e->ns, sizeof e->ns, "%s", a->ns);
            snprintf(e->name, sizeof e->name, "%s", a->name);
            snprintf(e->source, sizeof e->source, "%s", grpc_call_peer(ctx->call));
            snprintf(e->command, sizeof e->command, "%s", a->what);
            pthread_mutex_init(&e->mu, NULL);
            buf_init(&e->in);
            e->started_ms = (int64_t)clock_system()->wall_ms(clock_system());
            char msg[400];
            if (a->port) {
                snprintf(msg, sizeof msg, "port-forward session started: port [%s]%s%s", e->command,
                         e->sock >= 0 ? "; served by the replica at " : "", e->via);
            } else {
                snprintf(msg, sizeof msg, "exec session started: tty %s, command [%s]%s%s",
                         a->tty ? "yes" : "no", e->command, e->sock >= 0 ? "; served by the replica at " : "",
                         e->via);
            }
            sessions__audit(svc, &e->who, e->ns, e->id, e->name, e->source, op, e->started_ms, true,
                            GRPC_STATUS_OK, msg);
            /* The first message may carry input too. */
            pthread_mutex_lock(&e->mu);
            if (a->input_len > 0 && e->sock < 0) { /* a routed session's header carried it */
                buf_append(&e->in, a->input, a->input_len);
                e->bytes_in += a->input_len;
            }
            e->close_stdin = a->close_input;
            pthread_mutex_unlock(&e->mu);
            gate_bidi_attach(ctx, exec_on_message, e);
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rv = pthread_create(&t, &attr, e->sock >= 0 ? route_main : exec_main, e);
            pthread_attr_destroy(&attr);
            if (rv == 0) {
                grpc_call_resume_input(ctx->call);
                return; /* the thread owns e and answers the call */
            }
            gate_bidi_detach(ctx->call);
            if (e->x != NULL) {
                driver_exec_close(e->x);
            }
            if (e->sock >= 0) {
                close(e->sock);
            }
            sroute_reader_close(&e->rd);
            close(e->wake[0]);
            close(e->wake[1]);
            buf_close(&e->in);
            pthread_mutex_destroy(&e->mu);
            sessions__release(svc, e->id);
            gate_fail(ctx, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a session thread");
        }
    }
    mem_free(e);
}

void sessions__exec(struct gate_ctx *ctx, void *data)
{
    struct sessions_svc *svc = data;
    const Gantry__V1__ExecRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__ExecStart *st = req->start;
    if (st == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "the first message must carry start (namespace, name, command)");
        return;
    }
    if (st->name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "start.name is required");
        return;
    }
    if (st->n_command == 0 || st->command[0][0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "start.command is required (the program and its arguments)");
        return;
    }
    if (st->n_command > DRIVER_ARGV_MAX) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "start.command has more than %u arguments",
                  DRIVER_ARGV_MAX);
        return;
    }
    if (st->size != NULL && (st->size->rows > 10000 || st->size->cols > 10000)) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "start.size: rows and cols are at most 10000");
        return;
    }
    struct driver_exec_spec xs = {.command = (const char *const *)st->command,
                                  .n_command = st->n_command,
                                  .tty = st->tty,
                                  .rows = st->size != NULL ? (uint16_t)st->size->rows : 0,
                                  .cols = st->size != NULL ? (uint16_t)st->size->cols : 0};
    char what[256];
    command_text(st, what, sizeof what);
    struct start_args a = {.ns = st->namespace_,
                           .first = &req->base,
                           .name = st->name,
                           .xs = &xs,
                           .what = what,
                           .tty = st->tty,
                           .input = req->stdin.data,
                           .input_len = req->stdin.len,
                           .close_input = req->close_stdin};
    session_start(ctx, svc, &a);
}

void sessions__port_forward(struct gate_ctx *ctx, void *data)
{
    struct sessions_svc *svc = data;
    const Gantry__V1__PortForwardRequest *req = (const void *)grpc_call_request(ctx->call);
    const Gantry__V1__PortForwardStart *st = req->start;
    if (st == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT,
                  "the first message must carry start (namespace, name, port)");
        return;
    }
    if (st->name[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "start.name is required");
        return;
    }
    if (st->port == 0 || st->port > 65535) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "start.port must be 1 to 65535, not %u", st->port);
        return;
    }
    char what[16];
    snprintf(what, sizeof what, "%u", st->port);
    struct start_args a = {.port = true,
                           .first = &req->base,
                           .ns = st->namespace_,
                           .name = st->name,
                           .port_no = (uint16_t)st->port,
                           .what = what,
                           .input = req->data.data,
                           .input_len = req->data.len,
                           .close_input = req->close_write};
    session_start(ctx, svc, &a);
}
