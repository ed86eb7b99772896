/* Admin HTTP/1.1 endpoint. Happy path: accept -> read -> llhttp_execute -> on_message_complete
 * builds the response into the connection's output -> uv_write -> keep reading (keep-alive) or
 * close. Failure modes: parse error or oversized request (answer 400/414/431 and close), read
 * error or EOF, a request not complete within its deadline, an idle keep-alive connection, a
 * full house (closed at accept).
 *
 * Hostile clients (issue 15):
 *   - Backpressure: a connection holds at most max_buffered_bytes of responses not yet written
 *     (queued or handed to the kernel). Past that the parser pauses after the current request
 *     (HPE_PAUSED), reading stops, and the unparsed rest of the read is kept; once writes drain
 *     below half the limit parsing resumes. So pipelined requests that are never read cost a
 *     bounded amount of memory, however many arrive.
 *   - Deadlines that bytes do not restart: the first request must be complete within
 *     header_timeout_ms of accept, later ones within header_timeout_ms of their first byte;
 *     between requests (and while responses wait to be written) idle_timeout_ms applies, restarted
 *     by completed requests and finished writes, never by single bytes.
 *   - Probes keep room: past max_connections, up to probe_reserve more connections are admitted
 *     as probe connections: one GET/HEAD of /healthz or /readyz each, within probe_timeout_ms of
 *     accept, answered and closed (anything else gets 503). When those are full too, the oldest
 *     probe connection still waiting for its request is closed to admit the new one, so a
 *     liveness probe gets in even while slow clients hold every other slot.
 *   - Memory: a connection's buffers go when it closes; after one that buffered 1 MiB or more,
 *     malloc_trim gives the heap back to the system (from a timer, at most every 100 ms).
 *
 * The handler (requests under cfg.handler_prefix): on_message_complete gives it an exchange with
 * the request (the kept headers, the body); the parser stays paused until the exchange is finished
 * (admin_reply, admin_stream_close), so pipelined requests are answered in order. A pending
 * exchange has the idle deadline; a stream has it only while its writes are pending (restarted by
 * each finished write; quiet with everything written, it has none), its sends count against
 * max_buffered_bytes, and it ends with the connection (close-delimited body): a stream that ended
 * waits for its writes under the idle deadline too, so a client that stops reading is closed. A connection
 * that closes first leaves the exchange detached: the handler's later calls on it do nothing but finish it.
 */
#include "server/admin.h"

#include <assert.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "lib/uverr.h"
#include "lib/uvpace.h"
#include "llhttp.h"

#define ADMIN_MAX_URL     1024
#define ADMIN_MAX_HEADERS (8u << 10)
#define ADMIN_TRIM_DELAY  100
#define ADMIN_TRIM_MIN    (1u << 20)
#define ADMIN_HNAME_MAX   24

/* Request headers kept for the handler (the first occurrence of each). */
enum { KEPT_COOKIE, KEPT_ORIGIN, KEPT_HOST, KEPT_CTYPE, KEPT_CONSOLE, KEPT_N };
static const struct {
    const char *name;
    size_t cap; /* bytes of value, the NUL excluded */
} kept_headers[KEPT_N] = {
    {"cookie", 4096}, {"origin", 255}, {"host", 255}, {"content-type", 255}, {"x-gantry-console", 255},
};

struct admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct uv_pace pace; /* ADMIN_ACCEPTS_PER_TURN: a connection flood must not stall the loop */
    uv_timer_t trim_timer;
    bool trim_pending;
    struct admin_config cfg; /* zero limits replaced by the defaults */
    char *listen_copy;
    char *prefix_copy; /* cfg.handler_prefix */
    size_t prefix_len;
    int port;
    struct queue conns; /* in accept order */
    size_t n_conns;     /* allocated connections (closing ones included) */
    size_t n_general;   /* open connections within max_connections */
    size_t n_probe;     /* open probe connections */
    int handles_open;   /* listener, pacer, trim timer */
    bool closing;
    admin_closed_cb closed_cb;
    void *closed_data;
    llhttp_settings_t settings;
};

struct admin_conn {
    struct admin *admin;
    struct queue link;
    uv_tcp_t tcp;
    uv_timer_t timer; /* the current deadline: request, idle or probe */
    int handles_open;
    bool closing;
    bool close_after_write;
    bool general;    /* counted in n_general */
    bool probe;      /* admitted into the probe reserve (counted in n_probe) */
    bool reading;    /* uv_read_start active */
    bool paused;     /* the parser stopped after a request: too much output unwritten */
    bool in_request; /* bytes of a request received, the request not complete */
    uint64_t n_requests;
    llhttp_t parser;
    char url[ADMIN_MAX_URL + 1];
    size_t url_len;
    size_t header_bytes;
    int error_status; /* nonzero: answer this and close */
    struct buf out;   /* response bytes not yet handed to uv_write */
    size_t writing;   /* bytes handed to uv_write and not yet written */
    size_t writes_pending;
    size_t peak_buffered;
    struct buf held; /* unparsed input kept while paused */
    size_t held_off;
    /* What the handler gets: kept headers, the body, the exchange it holds. */
    char hname[ADMIN_HNAME_MAX + 1];
    size_t hname_len; /* > ADMIN_HNAME_MAX: a name no kept header has */
    int hcur;         /* the kept header whose value is being read, -1 for none */
    bool hseen[KEPT_N];
    char *hval[KEPT_N]; /* each kept_headers[i].cap + 1 bytes, allocated with the connection */
    size_t hlen[KEPT_N];
    bool for_handler; /* the URL is under the handler prefix: the body is kept */
    struct buf body;
    struct admin_exchange *exchange; /* the one the handler holds, NULL for none */
    bool streaming;                  /* the exchange is a stream */
    bool in_dispatch;                /* inside the handler callback (the parser is running) */
    char peer[64];                   /* "a.b.c.d:port" */
    char rbuf[4096];
};

struct admin_exchange {
    struct admin_conn *conn; /* NULL once the connection closed */
    bool streaming;
    bool head;
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *conn;
    uint8_t *data;
    size_t len;
};

static void admin_maybe_closed(struct admin *a);
static void admin_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void admin_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b);

/* --- Memory --- */

static void admin_trim_cb(uv_timer_t *t)
{
    struct admin *a = t->data;
    a->trim_pending = false;
    malloc_trim(0);
}

static void admin_trim_soon(struct admin *a, size_t bytes)
{
    if (bytes < ADMIN_TRIM_MIN || a->trim_pending || a->closing) {
        return;
    }
    a->trim_pending = true;
    uv_timer_start(&a->trim_timer, admin_trim_cb, ADMIN_TRIM_DELAY, 0);
}

/* --- Connections --- */

static void admin_conn_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    if (--c->handles_open > 0) {
        return;
    }
    struct admin *a = c->admin;
    size_t peak = c->peak_buffered;
    buf_close(&c->out);
    buf_close(&c->held);
    buf_close(&c->body);
    for (int i = 0; i < KEPT_N; i++) {
        mem_free(c->hval[i]);
    }
    mem_free(c);
    a->n_conns--;
    admin_trim_soon(a, peak);
    admin_maybe_closed(a);
}

/* What snprintf into a buffer of @cap bytes left there: its return, clamped to the text it kept
 * (a long content type or reason truncates the line instead of reading past the buffer). */
static size_t admin_clamp(int n, size_t cap)
{
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void admin_conn_close(struct admin_conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (why != NULL) {
        LOG_DEBUG("admin: closing a connection: %s", why);
    }
    if (c->probe) {
        c->admin->n_probe--;
    } else if (c->general) {
        c->admin->n_general--;
    }
    if (c->exchange != NULL) {
        c->exchange->conn = NULL; /* the handler finishes it later */
        c->exchange = NULL;
    }
    queue_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, admin_conn_closed);
    uv_close((uv_handle_t *)&c->timer, admin_conn_closed);
}

static void admin_timer_cb(uv_timer_t *t)
{
    struct admin_conn *c = t->data;
    admin_conn_close(c, c->in_request || c->n_requests == 0 ? "request not complete in time" : "idle");
}

static void admin_deadline(struct admin_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, admin_timer_cb, ms, 0);
}

/* Between requests, or while responses are being written: the idle deadline. */
static void admin_idle(struct admin_conn *c)
{
    if (!c->probe) {
        admin_deadline(c, c->admin->cfg.idle_timeout_ms);
    }
}

static size_t admin_buffered(const struct admin_conn *c)
{
    return c->out.len + c->writing;
}

static void admin_resume(struct admin_conn *c);

static void admin_write_cb(uv_write_t *req, int status)
{
    struct admin_write *w = (struct admin_write *)req;
    struct admin_conn *c = w->conn;
    c->writing -= w->len;
    mem_free(w->data);
    mem_free(w);
    c->writes_pending--;
    if (c->closing) {
        return;
    }
    if (status < 0 || (c->close_after_write && c->writes_pending == 0 && c->exchange == NULL)) {
        admin_conn_close(c, status < 0 ? "write failed" : NULL);
        return;
    }
    if (!c->in_request && (!c->streaming || c->writes_pending > 0 || c->exchange == NULL)) {
        admin_idle(c); /* progress: the client reads */
    } else if (!c->in_request) {
        uv_timer_stop(&c->timer); /* a stream with everything written may stay quiet */
    }
    if (c->paused && c->exchange == NULL && admin_buffered(c) <= c->admin->cfg.max_buffered_bytes / 2) {
        admin_resume(c);
    }
}

static void admin_flush(struct admin_conn *c)
{
    if (c->out.len == 0 || c->closing) {
        return;
    }
    struct admin_write *w = mem_alloc(sizeof(*w));
    w->conn = c;
    w->data = c->out.data;
    w->len = c->out.len;
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned int)c->out.len);
    buf_init(&c->out);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, admin_write_cb) != 0) {
        mem_free(w->data);
        mem_free(w);
        admin_conn_close(c, "write failed");
        return;
    }
    c->writing += w->len;
    c->writes_pending++;
}

static void admin_respond(struct admin_conn *c, int status, const char *reason, const char *ctype,
                          const void *body, size_t len, bool head)
{
    char hdr[256];
    int n = snprintf(
        hdr, sizeof(hdr),
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n",
        status, reason, ctype, len, c->close_after_write ? "Connection: close\r\n" : "");
    buf_append(&c->out, hdr, admin_clamp(n, sizeof hdr));
    if (!head && len > 0) {
        buf_append(&c->out, body, len);
    }
    if (admin_buffered(c) > c->peak_buffered) {
        c->peak_buffered = admin_buffered(c);
    }
}

/* --- Parsing --- */

static int admin_on_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    if (c->url_len + len > ADMIN_MAX_URL) {
        c->error_status = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int admin_count_header(struct admin_conn *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > ADMIN_MAX_HEADERS) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int admin_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    for (size_t i = 0; i < len && c->hname_len <= ADMIN_HNAME_MAX; i++) {
        char ch = at[i];
        c->hname[c->hname_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    }
    return admin_count_header(c, len);
}

static int admin_on_header_field_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    c->hcur = -1;
    if (c->hname_len <= ADMIN_HNAME_MAX) {
        c->hname[c->hname_len] = '\0';
        for (int i = 0; i < KEPT_N; i++) {
            if (strcmp(c->hname, kept_headers[i].name) == 0 && !c->hseen[i]) {
                c->hcur = i;
            }
        }
    }
    c->hname_len = 0;
    return 0;
}

static int admin_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    if (c->hcur >= 0) {
        int k = c->hcur;
        if (c->hlen[k] + len > kept_headers[k].cap) {
            c->error_status = 431;
            return -1;
        }
        memcpy(c->hval[k] + c->hlen[k], at, len);
        c->hlen[k] += len;
        c->hval[k][c->hlen[k]] = '\0';
    }
    return admin_count_header(c, len);
}

static int admin_on_header_value_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    if (c->hcur >= 0) {
        c->hseen[c->hcur] = true;
        c->hcur = -1;
    }
    return 0;
}

static int admin_on_url_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    struct admin *a = c->admin;
    c->for_handler = a->cfg.handler != NULL && strncmp(c->url, a->prefix_copy, a->prefix_len) == 0;
    return 0;
}

static int admin_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    if (!c->for_handler) {
        return 0; /* nobody reads it */
    }
    if (c->body.len + len > ADMIN_MAX_BODY) {
        c->error_status = 413;
        return -1;
    }
    buf_append(&c->body, at, len);
    return 0;
}

static int admin_on_message_begin(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    c->url_len = 0;
    c->url[0] = '\0';
    c->header_bytes = 0;
    c->in_request = true;
    c->hname_len = 0;
    c->hcur = -1;
    c->for_handler = false;
    buf_reset(&c->body);
    for (int i = 0; i < KEPT_N; i++) {
        c->hseen[i] = false;
        c->hlen[i] = 0;
        c->hval[i][0] = '\0';
    }
    /* The request deadline runs from its first byte and is not restarted by later ones (the
     * first request's runs from accept already, a probe's from accept). */
    if (c->n_requests > 0 && !c->probe) {
        admin_deadline(c, c->admin->cfg.header_timeout_ms);
    }
    return 0;
}

static const char *admin_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* Give the request to the handler. Returns true if the exchange is still the handler's (answered
 * later, or a stream), false if it was answered inside the callback. */
static bool admin_dispatch(struct admin_conn *c, const char *path, const char *query, bool head)
{
    struct admin *a = c->admin;
    struct admin_exchange *x = mem_zalloc(sizeof *x);
    x->conn = c;
    x->head = head;
    c->exchange = x;
    buf_append(&c->body, "", 1); /* a NUL after the body, for text bodies; not counted */
    c->body.len--;
    struct admin_request req = {.method = llhttp_method_name(llhttp_get_method(&c->parser)),
                                .path = path,
                                .query = query,
                                .cookie = c->hval[KEPT_COOKIE],
                                .origin = c->hval[KEPT_ORIGIN],
                                .host = c->hval[KEPT_HOST],
                                .content_type = c->hval[KEPT_CTYPE],
                                .console = c->hval[KEPT_CONSOLE],
                                .body = c->body.data != NULL ? c->body.data : (const uint8_t *)"",
                                .body_len = c->body.len,
                                .peer = c->peer,
                                .head = head};
    c->in_dispatch = true;
    a->cfg.handler(a->cfg.handler_data, x, &req);
    c->in_dispatch = false;
    if (c->exchange == NULL) {
        return false;
    }
    if (!c->streaming) {
        admin_deadline(c, a->cfg.idle_timeout_ms); /* the handler's answer is due */
    }
    return true;
}

static int admin_on_message_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    struct admin *a = c->admin;
    uint8_t method = llhttp_get_method(p);
    bool head = method == HTTP_HEAD;
    c->in_request = false;
    c->n_requests++;
    if (!llhttp_should_keep_alive(p) || a->closing || c->probe) {
        c->close_after_write = true;
    }
    char path[ADMIN_MAX_URL + 1];
    snprintf(path, sizeof(path), "%s", c->url);
    char *q = strchr(path, '?');
    if (q != NULL) {
        *q = '\0';
    }
    bool probe_path = strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0;
    if (c->for_handler && !c->probe) {
        if (admin_dispatch(c, path, q != NULL ? c->url + (q - path) + 1 : "", head)) {
            return HPE_PAUSED; /* until the handler finishes the exchange */
        }
    } else if (c->probe && !probe_path) {
        admin_respond(c, 503, "Service Unavailable", "text/plain", "admin port busy: probes only\n", 29,
                      head);
    } else if (method != HTTP_GET && method != HTTP_HEAD) {
        admin_respond(c, 405, "Method Not Allowed", "text/plain", "method not allowed\n", 19, head);
    } else if (strcmp(path, "/healthz") == 0) {
        admin_respond(c, 200, "OK", "text/plain", "ok\n", 3, head);
    } else if (strcmp(path, "/readyz") == 0) {
        char reason[200] = "not ready";
        bool ready = a->cfg.ready == NULL || a->cfg.ready(a->cfg.data, reason, sizeof(reason));
        if (ready) {
            admin_respond(c, 200, "OK", "text/plain", "ready\n", 6, head);
        } else {
            char body[256];
            int n = snprintf(body, sizeof(body), "not ready: %s\n", reason);
            admin_respond(c, 503, "Service Unavailable", "text/plain", body, (size_t)n, head);
        }
    } else if (strcmp(path, "/metrics") == 0) {
        struct buf m;
        buf_init(&m);
        if (a->cfg.metrics != NULL) {
            a->cfg.metrics(a->cfg.data, &m);
        }
        admin_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", m.data, m.len, head);
        buf_close(&m);
    } else {
        admin_respond(c, 404, "Not Found", "text/plain", "not found\n", 10, head);
    }
    if (c->close_after_write) {
        return HPE_PAUSED; /* nothing after this request is read */
    }
    admin_idle(c);
    if (admin_buffered(c) >= a->cfg.max_buffered_bytes) {
        return HPE_PAUSED; /* admin_parse keeps the rest until the writes drain */
    }
    return 0;
}

static void admin_stop_reading(struct admin_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Parse @len bytes at @data; on a pause keep what was not parsed. Then flush. */
static void admin_parse(struct admin_conn *c, const char *data, size_t len)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos != NULL && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        admin_stop_reading(c);
        if (!c->close_after_write) {
            /* Backpressure: keep the rest of this read (bounded by the read buffer) for later. */
            c->paused = true;
            buf_append(&c->held, data + used, len - used);
        }
    } else if (e != HPE_OK) {
        int status = c->error_status != 0 ? c->error_status : 400;
        const char *reason = admin_reason(status);
        c->close_after_write = true;
        const char *text = status == 413 ? "request body too large\n" : "bad request\n";
        admin_respond(c, status, reason, "text/plain", text, strlen(text), false);
        admin_stop_reading(c);
    }
    admin_flush(c);
}

/* The writes drained: parse what was held, then read again unless paused anew. */
static void admin_resume(struct admin_conn *c)
{
    c->paused = false;
    llhttp_resume(&c->parser);
    struct buf held = c->held;
    size_t off = c->held_off;
    buf_init(&c->held);
    c->held_off = 0;
    if (held.len > off) {
        admin_parse(c, (const char *)held.data + off, held.len - off);
    }
    buf_close(&held);
    if (!c->paused && !c->closing && !c->close_after_write && !c->reading &&
        uv_read_start((uv_stream_t *)&c->tcp, admin_alloc_cb, admin_read_cb) == 0) {
        c->reading = true;
    }
}

static void admin_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct admin_conn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void admin_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct admin_conn *c = s->data;
    if (c->closing) {
        return;
    }
    if (nread < 0) {
        admin_conn_close(c, NULL);
        return;
    }
    if (nread == 0 || c->paused || c->close_after_write) {
        return;
    }
    admin_parse(c, b->base, (size_t)nread);
}

/* --- Accepting --- */

static void admin_peer_name(uv_tcp_t *tcp, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    snprintf(out, len, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) != 0) {
        return;
    }
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        snprintf(out, len, "[%s]:%d", ip, addr_port(&ss));
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        snprintf(out, len, "%s:%d", ip, addr_port(&ss));
    }
}

/* The oldest probe connection still waiting for its request, or NULL. */
static struct admin_conn *admin_probe_victim(struct admin *a)
{
    struct queue *q;
    QUEUE_FOREACH (q, &a->conns) {
        struct admin_conn *c = QUEUE_DATA(q, struct admin_conn, link);
        if (c->probe && c->n_requests == 0) {
            return c;
        }
    }
    return NULL;
}

/* The admin port shares the API's loop (lib/uvpace.h). */
#define ADMIN_ACCEPTS_PER_TURN 16

static void admin_on_connection(uv_stream_t *l, int status)
{
    struct admin *a = l->data;
    if (status < 0 || a->closing) {
        return;
    }
    if (!uv_pace_take(&a->pace)) {
        return; /* taken after this turn's other I/O */
    }
    struct admin_conn *c = mem_zalloc(sizeof(*c));
    c->admin = a;
    buf_init(&c->out);
    buf_init(&c->held);
    buf_init(&c->body);
    for (int i = 0; i < KEPT_N; i++) {
        c->hval[i] = mem_zalloc(kept_headers[i].cap + 1);
    }
    c->hcur = -1;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    queue_insert_tail(&a->conns, &c->link);
    a->n_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        admin_conn_close(c, "accept failed");
        return;
    }
    admin_peer_name(&c->tcp, c->peer, sizeof c->peer);
    if (a->n_general >= a->cfg.max_connections) {
        if (a->n_probe >= a->cfg.probe_reserve) {
            struct admin_conn *victim = admin_probe_victim(a);
            if (victim == NULL) {
                admin_conn_close(c, "too many connections");
                return;
            }
            admin_conn_close(victim, "evicted from the probe reserve");
        }
        c->probe = true;
        a->n_probe++;
    } else {
        c->general = true;
        a->n_general++;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &a->settings);
    c->parser.data = c;
    admin_deadline(c, c->probe ? a->cfg.probe_timeout_ms : a->cfg.header_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, admin_alloc_cb, admin_read_cb) != 0) {
        admin_conn_close(c, "read failed");
        return;
    }
    c->reading = true;
}

static void admin_handle_closed(uv_handle_t *h)
{
    struct admin *a = h->data;
    a->handles_open--;
    admin_maybe_closed(a);
}

static void admin_maybe_closed(struct admin *a)
{
    if (!a->closing || a->n_conns > 0 || a->handles_open > 0) {
        return;
    }
    admin_closed_cb cb = a->closed_cb;
    void *data = a->closed_data;
    mem_free(a->listen_copy);
    mem_free(a->prefix_copy);
    mem_free(a);
    if (cb != NULL) {
        cb(a, data);
    }
}

void admin_config_defaults(struct admin_config *cfg)
{
    if (cfg->max_connections == 0) {
        cfg->max_connections = 64;
    }
    if (cfg->probe_reserve == 0) {
        cfg->probe_reserve = 8;
    }
    if (cfg->header_timeout_ms == 0) {
        cfg->header_timeout_ms = 10000;
    }
    if (cfg->idle_timeout_ms == 0) {
        cfg->idle_timeout_ms = 30000;
    }
    if (cfg->probe_timeout_ms == 0) {
        cfg->probe_timeout_ms = 2000;
    }
    if (cfg->max_buffered_bytes == 0) {
        cfg->max_buffered_bytes = 1u << 20;
    }
}

int admin_start(uv_loop_t *loop, const struct admin_config *cfg, struct admin **out, char *errmsg)
{
    struct sockaddr_storage ss;
    int rv = addr_parse(cfg->listen, &ss, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "admin listen address");
        return rv;
    }
    struct admin *a = mem_zalloc(sizeof(*a));
    a->loop = loop;
    a->cfg = *cfg;
    admin_config_defaults(&a->cfg);
    a->listen_copy = mem_strdup(cfg->listen);
    a->cfg.listen = a->listen_copy;
    queue_init(&a->conns);
    llhttp_settings_init(&a->settings);
    a->settings.on_message_begin = admin_on_message_begin;
    a->settings.on_url = admin_on_url;
    a->settings.on_url_complete = admin_on_url_complete;
    a->settings.on_header_field = admin_on_header_field;
    a->settings.on_header_field_complete = admin_on_header_field_complete;
    a->settings.on_header_value = admin_on_header_value;
    a->settings.on_header_value_complete = admin_on_header_value_complete;
    a->settings.on_body = admin_on_body;
    a->settings.on_message_complete = admin_on_message_complete;
    if (cfg->handler_prefix != NULL && cfg->handler != NULL) {
        a->prefix_copy = mem_strdup(cfg->handler_prefix);
        a->prefix_len = strlen(a->prefix_copy);
    } else {
        a->prefix_copy = mem_strdup("");
        a->cfg.handler = NULL;
    }
    a->cfg.handler_prefix = a->prefix_copy;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    uv_pace_init(&a->pace, loop, (uv_stream_t *)&a->listener, ADMIN_ACCEPTS_PER_TURN, admin_on_connection);
    a->pace.check.data = a;
    uv_timer_init(loop, &a->trim_timer);
    a->trim_timer.data = a;
    a->handles_open = 3;
    int uvrv = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
    if (uvrv == 0) {
        uvrv = uv_listen((uv_stream_t *)&a->listener, 128, admin_on_connection);
    }
    if (uvrv != 0) {
        rv = uverr_to_gerr(uvrv, errmsg);
        gerr_wrap(errmsg, "admin listen on %s", cfg->listen);
        /* Close asynchronously; the memory goes in the close callback. */
        a->closing = true;
        uv_close((uv_handle_t *)&a->listener, admin_handle_closed);
        uv_pace_close(&a->pace, admin_handle_closed);
        uv_close((uv_handle_t *)&a->trim_timer, admin_handle_closed);
        return rv;
    }
    int len = sizeof(ss);
    uv_tcp_getsockname(&a->listener, (struct sockaddr *)&ss, &len);
    a->port = addr_port(&ss);
    LOG_INFO("admin: listening on %s (port %d)", cfg->listen, a->port);
    *out = a;
    return 0;
}

int admin_port(const struct admin *a)
{
    return a->port;
}

void admin_close(struct admin *a, admin_closed_cb cb, void *data)
{
    a->closing = true;
    a->closed_cb = cb;
    a->closed_data = data;
    uv_close((uv_handle_t *)&a->listener, admin_handle_closed);
    uv_pace_close(&a->pace, admin_handle_closed);
    uv_close((uv_handle_t *)&a->trim_timer, admin_handle_closed);
    struct queue *q;
    while ((q = queue_head(&a->conns)) != NULL) {
        admin_conn_close(QUEUE_DATA(q, struct admin_conn, link), NULL);
    }
}

/* --- Exchanges --- */

/* The exchange is finished: forget it and, unless the connection is to close, read on. */
static void admin_exchange_done(struct admin_exchange *x)
{
    struct admin_conn *c = x->conn;
    mem_free(x);
    if (c == NULL) {
        return;
    }
    c->exchange = NULL;
    if (c->in_dispatch) {
        return; /* answered inside the callback: on_message_complete carries on as for any request */
    }
    admin_flush(c);
    if (c->closing) {
        return;
    }
    if (c->close_after_write) {
        if (c->writes_pending == 0) {
            admin_conn_close(c, NULL);
        } else {
            admin_idle(c); /* the rest must be written, or the connection goes: a stream's timer was off */
        }
        return;
    }
    admin_idle(c);
    if (c->paused && admin_buffered(c) <= c->admin->cfg.max_buffered_bytes / 2) {
        admin_resume(c);
    }
}

void admin_reply(struct admin_exchange *x, int status, const char *content_type, const char *headers,
                 const void *body, size_t len)
{
    struct admin_conn *c = x->conn;
    assert(!x->streaming);
    if (c != NULL && !c->closing) {
        if (c->admin->closing) {
            c->close_after_write = true;
        }
        char hdr[320];
        int n = snprintf(
            hdr, sizeof hdr,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
            "%s",
            status, admin_reason(status), content_type, len,
            c->close_after_write ? "Connection: close\r\n" : "");
        buf_append(&c->out, hdr, admin_clamp(n, sizeof hdr));
        if (headers != NULL) {
            buf_append(&c->out, headers, strlen(headers));
        }
        buf_append(&c->out, "\r\n", 2);
        if (!x->head && len > 0) {
            buf_append(&c->out, body, len);
        }
        if (admin_buffered(c) > c->peak_buffered) {
            c->peak_buffered = admin_buffered(c);
        }
    }
    admin_exchange_done(x);
}

int admin_stream_open(struct admin_exchange *x, const char *content_type, const char *headers)
{
    struct admin_conn *c = x->conn;
    assert(!x->streaming);
    x->streaming = true;
    if (c == NULL || c->closing) {
        return GERR_CLOSED;
    }
    c->streaming = true;
    char hdr[256];
    int n =
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-store\r\nConnection: close\r\n",
                 content_type);
    buf_append(&c->out, hdr, admin_clamp(n, sizeof hdr));
    if (headers != NULL) {
        buf_append(&c->out, headers, strlen(headers));
    }
    buf_append(&c->out, "\r\n", 2);
    admin_flush(c);
    if (c->closing) {
        return 0; /* the write failed: the next send finds the connection closed */
    }
    admin_idle(c); /* the headers are being written: the idle deadline until they are */
    return 0;
}

int admin_stream_send(struct admin_exchange *x, const void *data, size_t len)
{
    struct admin_conn *c = x->conn;
    assert(x->streaming);
    if (c == NULL || c->closing) {
        return GERR_CLOSED;
    }
    if (admin_buffered(c) + len > c->admin->cfg.max_buffered_bytes) {
        return GERR_BUSY;
    }
    buf_append(&c->out, data, len);
    if (admin_buffered(c) > c->peak_buffered) {
        c->peak_buffered = admin_buffered(c);
    }
    admin_flush(c);
    if (!c->closing && c->writes_pending > 0 && !uv_is_active((uv_handle_t *)&c->timer)) {
        admin_idle(c); /* a client that stops reading is closed; admin_write_cb re-arms on progress */
    }
    return 0;
}

void admin_stream_close(struct admin_exchange *x)
{
    struct admin_conn *c = x->conn;
    assert(x->streaming);
    if (c != NULL) {
        c->close_after_write = true; /* the body ends with the connection */
    }
    admin_exchange_done(x);
}

bool admin_exchange_open(const struct admin_exchange *x)
{
    return x->conn != NULL && !x->conn->closing;
}
