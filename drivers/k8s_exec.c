/* Exec and port-forward for the kubernetes driver over WebSocket (see k8s_sessions.h).
 *
 * Happy path: find the pod (k8s__pod_of), upgrade the subresource's GET to a WebSocket (ws_connect),
 * make the caller's socketpairs, start the bridge thread. The bridge owns the stream's reads; every
 * write to the stream (the bridge's stdin frames, the caller's resize, signal and end of input)
 * holds x->mu, so the one TLS connection is never used by two threads at once. The bridge passes
 * on everything the server sent before it gives the caller EOF, and ends when the stream has ended
 * and its pending output is written, or when driver_exec_close asks it to.
 *
 * Failure modes: the upgrade refused (the API server's Status as a GERR_*), the stream cut (EOF on
 * the outputs; exit 255 without a status), a malformed frame (the stream is dropped as cut), the
 * caller not reading (the bridge stops reading the stream at 1 MiB pending per output, so the
 * server's flow control holds the command). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_json.h"
#include "drivers/k8s_sessions.h"
#include "drivers/ws.h"
#include "lib/buf.h"
#include "lib/mem.h"

#define CH_STDIN  0
#define CH_STDOUT 1
#define CH_STDERR 2
#define CH_ERROR  3
#define CH_RESIZE 4
#define CH_CLOSE  255

int k8s_exec_status_decode(const char *text, size_t len, int *code, char *msg, size_t cap)
{
    json_error_t jerr;
    *code = -1;
    if (cap > 0) {
        msg[0] = '\0';
    }
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        return GERR_PROTO;
    }
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *reason = json_string_value(json_object_get(j, "reason"));
    const char *message = json_string_value(json_object_get(j, "message"));
    int rv = 0;
    if (status != NULL && strcmp(status, "Success") == 0) {
        *code = 0;
    } else if (status != NULL && strcmp(status, "Failure") == 0) {
        if (reason != NULL && strcmp(reason, "NonZeroExitCode") == 0) {
            json_t *causes = json_object_get(json_object_get(j, "details"), "causes");
            size_t i;
            json_t *c;
            json_array_foreach(causes, i, c)
            {
                const char *r = json_string_value(json_object_get(c, "reason"));
                const char *m = json_string_value(json_object_get(c, "message"));
                if (r != NULL && m != NULL && strcmp(r, "ExitCode") == 0) {
                    char *e;
                    long v = strtol(m, &e, 10);
                    if (e != m && *e == '\0' && v >= 0 && v <= 255) {
                        *code = (int)v;
                    }
                }
            }
            if (*code < 0) {
                rv = GERR_PROTO; /* NonZeroExitCode without a code we can read */
            }
        }
        if (*code < 0 && rv == 0 && cap > 0) {
            /* Not run at all (no such command, the container gone): the message is for the user. */
            size_t n = 0;
            for (const char *p = message != NULL ? message : "the command could not be run";
                 *p != '\0' && n + 1 < cap; p++) {
                msg[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
            }
            msg[n] = '\0';
        }
    } else {
        rv = GERR_PROTO;
    }
    json_decref(j);
    return rv;
}

/* ---- The bridge: socketpairs on one side, the WebSocket on the other, one thread between */

#define PENDING_MAX (1024u * 1024u)
/* Input taken from the caller but not yet by the API server: above this the bridge stops reading
 * the caller's input (the server's output is still read meanwhile, so neither side waits on the
 * other). */
#define UNSENT_MAX (256u * 1024u)

struct k8s_exec {
    struct driver_exec base;
    bool forward; /* a port-forward (else an exec) */
    bool tty, v5;
    struct ws_conn *ws;
    pthread_mutex_t mu; /* ws, and the fields below */
    pthread_t thread;
    int wake[2];                     /* the caller's ops wake the thread */
    int user_in, user_out, user_err; /* the caller's ends (user_in == user_out for tty and forward) */
    int br_in, br_out, br_err;       /* the thread's ends; -1 once closed */
    struct buf pend_out, pend_err;   /* bytes from the server not yet written to br_out/br_err */
    bool stop;
    bool ended;     /* the thread ended (the stream is over) */
    bool have_code; /* the status arrived */
    int code;
    uint16_t port;
    size_t prefix_left[2]; /* port-forward: bytes of each channel's port prefix still to skip */
    bool refused;
    char error[GERR_MSG_SIZE]; /* port-forward: the error channel's text */
};

static void nonblock_cloexec(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void poke(struct k8s_exec *x)
{
    ssize_t w = write(x->wake[1], "x", 1);
    (void)w;
}

/* Write what is pending to @fd (non-blocking); drop it when the caller closed its end. */
static void flush(int *fd, struct buf *b)
{
    while (*fd >= 0 && b->len > 0) {
        ssize_t w = send(*fd, b->data, b->len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            return;
        }
        if (w <= 0) {
            buf_reset(b);
            return;
        }
        memmove(b->data, b->data + w, b->len - (size_t)w);
        b->len -= (size_t)w;
    }
}

/* One message from the server. Called with mu held. */
static void on_message(struct k8s_exec *x, const uint8_t *p, size_t n)
{
    if (n == 0) {
        return;
    }
    uint8_t ch = p[0];
    p++, n--;
    if (x->forward) {
        if (ch > 1) {
            return;
        }
        size_t skip = x->prefix_left[ch] < n ? x->prefix_left[ch] : n;
        x->prefix_left[ch] -= skip;
        p += skip, n -= skip;
        if (n == 0) {
            return;
        }
        if (ch == 0) {
            buf_append(&x->pend_out, p, n);
        } else {
            size_t have = strlen(x->error);
            snprintf(x->error + have, sizeof x->error - have, "%.*s", (int)n, (const char *)p);
            x->refused = true;
        }
        return;
    }
    if (ch == CH_STDOUT) {
        buf_append(&x->pend_out, p, n);
    } else if (ch == CH_STDERR) {
        buf_append(x->br_err >= 0 ? &x->pend_err : &x->pend_out, p, n);
    } else if (ch == CH_ERROR) {
        char msg[GERR_MSG_SIZE];
        int code;
        if (k8s_exec_status_decode((const char *)p, n, &code, msg, sizeof msg) != 0) {
            code = 255;
            snprintf(msg, sizeof msg, "the API server's exec status could not be read");
        }
        if (code < 0) { /* not run: say why on stderr, exit 127 as a shell does */
            code = 127;
            buf_printf(x->br_err >= 0 ? &x->pend_err : &x->pend_out, "%s\n", msg);
        }
        x->code = code;
        x->have_code = true;
    }
}

static void *bridge(void *arg)
{
    struct k8s_exec *x = arg;
    char errmsg[GERR_MSG_SIZE];
    uint8_t tmp[32768];
    bool ws_open = true;
    pthread_mutex_lock(&x->mu);
    while (!x->stop) {
        /* Take every whole message the connection has, unless the caller is behind. */
        while (ws_open && x->pend_out.len < PENDING_MAX && x->pend_err.len < PENDING_MAX) {
            uint8_t op;
            const uint8_t *data;
            size_t n;
            int rv = ws_recv(x->ws, &op, &data, &n, errmsg);
            if (rv == GERR_BUSY) {
                break;
            }
            if (rv != 0) {
                ws_open = false;
                break;
            }
            if (op == WS_OP_BINARY) {
                on_message(x, data, n);
            }
        }
        flush(&x->br_out, &x->pend_out);
        flush(&x->br_err, &x->pend_err);
        if (!ws_open && x->pend_out.len == 0 && x->pend_err.len == 0) {
            break; /* everything the server sent has been passed on */
        }
        /* What the caller and the other operations queued: the socket takes what it can now; the rest
         * waits for POLLOUT below, while the server's output keeps being read. */
        if (ws_open && ws_unsent(x->ws) > 0 && ws_flush(x->ws, errmsg) != 0) {
            ws_open = false;
        }
        struct pollfd pf[5];
        int np = 0, i_ws = -1, i_in = -1;
        pf[np++] = (struct pollfd){.fd = x->wake[0], .events = POLLIN};
        short ws_events =
            (short)((ws_open && x->pend_out.len < PENDING_MAX && x->pend_err.len < PENDING_MAX ? POLLIN : 0) |
                    (ws_open && ws_unsent(x->ws) > 0 ? POLLOUT : 0));
        if (ws_events != 0) {
            i_ws = np;
            pf[np++] = (struct pollfd){.fd = ws_fd(x->ws), .events = ws_events};
        }
        if (ws_open && x->br_in >= 0 && ws_unsent(x->ws) < UNSENT_MAX) {
            i_in = np;
            pf[np++] = (struct pollfd){.fd = x->br_in, .events = POLLIN};
        }
        if (x->br_out >= 0 && x->pend_out.len > 0) {
            pf[np++] = (struct pollfd){.fd = x->br_out, .events = POLLOUT};
        }
        if (x->br_err >= 0 && x->pend_err.len > 0) {
            pf[np++] = (struct pollfd){.fd = x->br_err, .events = POLLOUT};
        }
        pthread_mutex_unlock(&x->mu);
        int r = poll(pf, (nfds_t)np, 1000);
        pthread_mutex_lock(&x->mu);
        if (r <= 0) {
            continue;
        }
        if (pf[0].revents != 0) {
            ssize_t rd = read(x->wake[0], tmp, sizeof tmp);
            (void)rd;
        }
        (void)i_ws;
        if (i_in >= 0 && pf[i_in].revents != 0 && x->br_in >= 0) {
            tmp[0] = x->forward ? 0 : CH_STDIN;
            ssize_t rd = read(x->br_in, tmp + 1, sizeof tmp - 1);
            if (rd > 0) {
                if (ws_queue(x->ws, WS_OP_BINARY, tmp, (size_t)rd + 1, errmsg) != 0) {
                    ws_open = false;
                }
            } else if (rd == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* The caller's input ended: v5 says so (channel 255); v4, a TTY (whose end is the
                 * EOF character close_stdin sends) and a forwarded connection (the protocol has
                 * no half-close) only stop reading it. */
                if (!x->tty && !x->forward && x->v5) {
                    static const uint8_t eof[2] = {CH_CLOSE, CH_STDIN};
                    if (ws_queue(x->ws, WS_OP_BINARY, eof, sizeof eof, errmsg) != 0) {
                        ws_open = false;
                    }
                }
                if (x->br_in != x->br_out) {
                    close(x->br_in);
                }
                x->br_in = -1;
            }
        }
    }
    /* The stream is over: EOF on the outputs. */
    if (x->br_out >= 0) {
        shutdown(x->br_out, SHUT_WR);
    }
    if (x->br_err >= 0) {
        shutdown(x->br_err, SHUT_WR);
    }
    if (!x->have_code) {
        x->code = x->forward ? 0 : 255; /* the connection ended without a status */
    }
    x->ended = true;
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void x_fds(struct driver_exec *dx, int *in, int *out, int *err)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    *in = x->user_in;
    *out = x->user_out;
    *err = x->user_err;
}

static void x_close_stdin(struct driver_exec *dx)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    char errmsg[GERR_MSG_SIZE];
    if (x->tty) {
        static const uint8_t eot[2] = {CH_STDIN, 0x04}; /* the terminal's end-of-file character */
        pthread_mutex_lock(&x->mu);
        if (x->ws != NULL && !x->ended) {
            ws_queue(x->ws, WS_OP_BINARY, eot, sizeof eot, errmsg);
            poke(x);
        }
        pthread_mutex_unlock(&x->mu);
        return;
    }
    if (x->forward) {
        shutdown(x->user_in, SHUT_WR);
        return;
    }
    if (x->user_in >= 0) {
        close(x->user_in);
        x->user_in = -1;
    }
}

static int x_resize(struct driver_exec *dx, uint16_t rows, uint16_t cols)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    char msg[64], errmsg[GERR_MSG_SIZE];
    if (!x->tty || rows == 0 || cols == 0) {
        return GERR_INVAL;
    }
    int n = snprintf(msg, sizeof msg, "%c{\"Width\":%u,\"Height\":%u}", CH_RESIZE, cols, rows);
    pthread_mutex_lock(&x->mu);
    if (x->ws != NULL && !x->ended) {
        ws_queue(x->ws, WS_OP_BINARY, msg, (size_t)n, errmsg);
        poke(x);
    }
    pthread_mutex_unlock(&x->mu);
    return 0;
}

/* The exec subresource has no signal channel: with a TTY, SIGINT and SIGQUIT go as the terminal's
 * characters (^C, ^\); nothing else can be sent. */
static int x_signal(struct driver_exec *dx, int sig)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    char errmsg[GERR_MSG_SIZE];
    if (x->forward || !x->tty || (sig != SIGINT && sig != SIGQUIT)) {
        return GERR_INVAL;
    }
    uint8_t m[2] = {CH_STDIN, sig == SIGINT ? 0x03 : 0x1c};
    pthread_mutex_lock(&x->mu);
    if (x->ws != NULL && !x->ended) {
        ws_queue(x->ws, WS_OP_BINARY, m, sizeof m, errmsg);
        poke(x);
    }
    pthread_mutex_unlock(&x->mu);
    return 0;
}

static int x_status(struct driver_exec *dx, int *exit_code, int *sig)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    int rv = GERR_BUSY;
    *exit_code = 0;
    *sig = 0;
    pthread_mutex_lock(&x->mu);
    if (x->forward) {
        rv = 0;
    } else if (x->have_code || x->ended) {
        *exit_code = x->code;
        rv = 0;
    }
    pthread_mutex_unlock(&x->mu);
    return rv;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void x_close(struct driver_exec *dx)
{
    struct k8s_exec *x = (struct k8s_exec *)dx;
    pthread_mutex_lock(&x->mu);
    x->stop = true;
    pthread_mutex_unlock(&x->mu);
    poke(x);
    pthread_join(x->thread, NULL);
    ws_close(x->ws);
    if (x->br_in != x->br_out) {
        close_fd(&x->br_in);
    }
    close_fd(&x->br_out);
    close_fd(&x->br_err);
    if (x->user_in != x->user_out) {
        close_fd(&x->user_in);
    }
    close_fd(&x->user_out);
    close_fd(&x->user_err);
    close_fd(&x->wake[0]);
    close_fd(&x->wake[1]);
    buf_close(&x->pend_out);
    buf_close(&x->pend_err);
    pthread_mutex_destroy(&x->mu);
    mem_free(x);
}

static const struct driver_exec_ops k8s_exec_ops = {
    .fds = x_fds,
    .close_stdin = x_close_stdin,
    .resize = x_resize,
    .signal = x_signal,
    .status = x_status,
    .close = x_close,
};

/* A socketpair: *@user for the caller, *@br for the bridge. */
static int pair(int *user, int *br)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -1;
    }
    nonblock_cloexec(sv[0]);
    nonblock_cloexec(sv[1]);
    *user = sv[0];
    *br = sv[1];
    return 0;
}

/* The refusal of an upgrade as a GERR_* with the Status's words. */
static int refusal(long status, const struct buf *body, const char *what, char *errmsg)
{
    struct k8s_status st;
    k8s_status_decode((const char *)body->data, body->len, &st);
    int rv = k8s_http_err_from_status(status, st.reason);
    gerr_set(errmsg, "%s: HTTP %ld %s%s%s", what, status, st.reason, st.message[0] != '\0' ? ": " : "",
             st.message);
    return rv != 0 ? rv : GERR_PROTO;
}

/* Connect @path with @protocols and start the bridge around the result. */
static int start(struct driver *d, const char *ns, const char *id, bool forward,
                 const struct driver_exec_spec *spec, uint16_t port, struct driver_exec **out, char *errmsg)
{
    static const char *const exec_protos[] = {"v5.channel.k8s.io", "v4.channel.k8s.io", NULL};
    static const char *const pf_protos[] = {"v4.channel.k8s.io", "portforward.k8s.io", NULL};
    char kns[64], pod[64], proto[64];
    enum driver_phase phase;
    struct k8s_http_config hc;
    *out = NULL;
    int rv = k8s__pod_of(d, ns, id, kns, pod, &phase, &hc, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (phase != DRIVER_PHASE_READY) {
        gerr_set(errmsg, "sandbox %s of %s is not running (%s)", id, ns, driver_phase_name(phase));
        return GERR_UNAVAILABLE;
    }
    struct buf path, body;
    buf_init(&path);
    buf_init(&body);
    if (forward) {
        buf_printf(&path, "/api/v1/namespaces/%s/pods/%s/portforward?ports=%u", kns, pod, port);
    } else {
        buf_printf(&path, "/api/v1/namespaces/%s/pods/%s/exec?container=" K8S_CONTAINER, kns, pod);
        for (size_t i = 0; i < spec->n_command; i++) {
            buf_printf(&path, "&command=");
            k8s_http_put_escaped(&path, spec->command[i]);
        }
        buf_printf(&path, "&stdin=true&stdout=true&stderr=%s&tty=%s", spec->tty ? "false" : "true",
                   spec->tty ? "true" : "false");
    }
    buf_append_zero(&path, 1);
    struct ws_conn *ws = NULL;
    long status = 0;
    rv = ws_connect(&hc, (const char *)path.data, forward ? pf_protos : exec_protos,
                    hc.timeout_ms != 0 ? hc.timeout_ms : 10000, 4u * 1024u * 1024u, &ws, proto, &status,
                    &body, errmsg);
    if (rv == 0 && ws == NULL) {
        rv = refusal(status, &body, forward ? "port-forward" : "exec", errmsg);
    }
    buf_close(&path);
    buf_close(&body);
    if (rv != 0) {
        return rv;
    }
    struct k8s_exec *x = mem_zalloc(sizeof *x);
    x->base.ops = &k8s_exec_ops;
    x->forward = forward;
    x->tty = !forward && spec->tty;
    x->v5 = strcmp(proto, "v5.channel.k8s.io") == 0;
    x->ws = ws;
    x->port = port;
    x->prefix_left[0] = x->prefix_left[1] = forward ? 2 : 0;
    x->user_in = x->user_out = x->user_err = x->br_in = x->br_out = x->br_err = -1;
    x->wake[0] = x->wake[1] = -1;
    buf_init(&x->pend_out);
    buf_init(&x->pend_err);
    pthread_mutex_init(&x->mu, NULL);
    bool ok = pipe2(x->wake, O_CLOEXEC | O_NONBLOCK) == 0;
    if (ok && (x->tty || forward)) {
        ok = pair(&x->user_out, &x->br_out) == 0;
        x->user_in = x->user_out;
        x->br_in = x->br_out;
    } else if (ok) {
        ok = pair(&x->user_in, &x->br_in) == 0 && pair(&x->user_out, &x->br_out) == 0 &&
             pair(&x->user_err, &x->br_err) == 0;
        if (ok) {
            shutdown(x->user_in, SHUT_RD);
            shutdown(x->br_in, SHUT_WR);
        }
    }
    if (ok && x->tty && spec->rows != 0 && spec->cols != 0) {
        char msg[64];
        int n =
            snprintf(msg, sizeof msg, "%c{\"Width\":%u,\"Height\":%u}", CH_RESIZE, spec->cols, spec->rows);
        ok = ws_send(ws, WS_OP_BINARY, msg, (size_t)n, errmsg) == 0;
    }
    if (!ok || pthread_create(&x->thread, NULL, bridge, x) != 0) {
        gerr_set(errmsg, "%s: cannot set up the bridge: %s", forward ? "port-forward" : "exec",
                 strerror(errno));
        x->stop = true;
        ws_close(x->ws);
        x->ws = NULL;
        if (x->br_in != x->br_out) {
            close_fd(&x->br_in);
        }
        if (x->user_in != x->user_out) {
            close_fd(&x->user_in);
        }
        close_fd(&x->br_out);
        close_fd(&x->br_err);
        close_fd(&x->user_out);
        close_fd(&x->user_err);
        close_fd(&x->wake[0]);
        close_fd(&x->wake[1]);
        buf_close(&x->pend_out);
        buf_close(&x->pend_err);
        pthread_mutex_destroy(&x->mu);
        mem_free(x);
        return GERR_IO;
    }
    *out = &x->base;
    return 0;
}

int k8s_exec_start(struct driver *d, const char *ns, const char *id, const struct driver_exec_spec *spec,
                   struct driver_exec **out, char *errmsg)
{
    return start(d, ns, id, false, spec, 0, out, errmsg);
}

int k8s_port_connect(struct driver *d, const char *ns, const char *id, uint16_t port,
                     struct driver_exec **out, char *errmsg)
{
    if (port == 0) {
        gerr_set(errmsg, "port 0");
        return GERR_INVAL;
    }
    int rv = start(d, ns, id, true, NULL, port, out, errmsg);
    if (rv != 0) {
        return rv;
    }
    /* The kubelet dials the port once the stream is up and reports a failure on the error
     * channel right after the port prefixes: wait briefly for it, so "nothing listens" is
     * GERR_REFUSED here rather than an EOF later. */
    struct k8s_exec *x = (struct k8s_exec *)*out;
    for (unsigned waited = 0; waited < K8S_FORWARD_SETTLE_MS; waited += 10) {
        char why[GERR_MSG_SIZE];
        pthread_mutex_lock(&x->mu);
        bool refused = x->refused, ended = x->ended;
        snprintf(why, sizeof why, "%s", x->error);
        pthread_mutex_unlock(&x->mu);
        if (refused) {
            gerr_set(errmsg, "port-forward to port %u: %s", port, why);
            driver_exec_close(*out);
            *out = NULL;
            return GERR_REFUSED;
        }
        if (ended) {
            break;
        }
        usleep(10000);
    }
    return 0;
}
