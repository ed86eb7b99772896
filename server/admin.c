/* Admin HTTP/1.1 endpoint. Happy path: accept -> read -> llhttp_execute -> on_message_complete
 * builds the response into the connection's output -> uv_write -> keep reading (keep-alive) or
 * close. Failure modes: parse error or oversized request (answer 400/414/431 and close), read
 * error or EOF, idle timeout, too many connections (closed at accept). */
#include "server/admin.h"

#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "llhttp.h"
#include "lib/addr.h"
#include "lib/uverr.h"

#define ADMIN_MAX_URL     1024
#define ADMIN_MAX_HEADERS (8u << 10)
#define ADMIN_MAX_CONNS   64
#define ADMIN_IDLE_MS     30000

struct admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct admin_config cfg;
    char *listen_copy;
    int port;
    struct queue conns;
    size_t n_conns;
    int handles_open;
    bool closing;
    admin_closed_cb closed_cb;
    void *closed_data;
    llhttp_settings_t settings;
};

struct admin_conn {
    struct admin *admin;
    struct queue link;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int handles_open;
    bool closing;
    bool close_after_write;
    llhttp_t parser;
    char url[ADMIN_MAX_URL + 1];
    size_t url_len;
    size_t header_bytes;
    int error_status; /* nonzero: answer this and close */
    struct buf out;
    size_t writes_pending;
    char rbuf[4096];
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *conn;
    uint8_t *data;
};

static void admin_maybe_closed(struct admin *a);

static void admin_conn_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    if (--c->handles_open > 0) {
        return;
    }
    struct admin *a = c->admin;
    buf_close(&c->out);
    mem_free(c);
    a->n_conns--;
    admin_maybe_closed(a);
}

static void admin_conn_close(struct admin_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    queue_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, admin_conn_closed);
    uv_close((uv_handle_t *)&c->timer, admin_conn_closed);
}

static void admin_write_cb(uv_write_t *req, int status)
{
    struct admin_write *w = (struct admin_write *)req;
    struct admin_conn *c = w->conn;
    mem_free(w->data);
    mem_free(w);
    c->writes_pending--;
    if (status < 0 || (c->close_after_write && c->writes_pending == 0)) {
        admin_conn_close(c);
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
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned int)c->out.len);
    buf_init(&c->out);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, admin_write_cb) != 0) {
        mem_free(w->data);
        mem_free(w);
        admin_conn_close(c);
        return;
    }
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
    buf_append(&c->out, hdr, (size_t)n);
    if (!head && len > 0) {
        buf_append(&c->out, body, len);
    }
}

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

static int admin_on_header(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    struct admin_conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > ADMIN_MAX_HEADERS) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int admin_on_message_begin(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    c->url_len = 0;
    c->url[0] = '\0';
    c->header_bytes = 0;
    return 0;
}

static int admin_on_message_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    struct admin *a = c->admin;
    uint8_t method = llhttp_get_method(p);
    bool head = method == HTTP_HEAD;
    if (!llhttp_should_keep_alive(p) || a->closing) {
        c->close_after_write = true;
    }
    char path[ADMIN_MAX_URL + 1];
    snprintf(path, sizeof(path), "%s", c->url);
    char *q = strchr(path, '?');
    if (q != NULL) {
        *q = '\0';
    }
    if (method != HTTP_GET && method != HTTP_HEAD) {
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
    return 0;
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
        admin_conn_close(c);
        return;
    }
    if (nread == 0) {
        return;
    }
    uv_timer_again(&c->timer);
    llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)nread);
    if (e != HPE_OK) {
        int status = c->error_status != 0 ? c->error_status : 400;
        const char *reason = status == 414   ? "URI Too Long"
                             : status == 431 ? "Request Header Fields Too Large"
                                             : "Bad Request";
        c->close_after_write = true;
        admin_respond(c, status, reason, "text/plain", "bad request\n", 12, false);
        uv_read_stop(s);
    }
    admin_flush(c);
}

static void admin_timer_cb(uv_timer_t *t)
{
    admin_conn_close(t->data);
}

static void admin_on_connection(uv_stream_t *l, int status)
{
    struct admin *a = l->data;
    if (status < 0 || a->closing) {
        return;
    }
    struct admin_conn *c = mem_zalloc(sizeof(*c));
    c->admin = a;
    buf_init(&c->out);
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    queue_insert_tail(&a->conns, &c->link);
    a->n_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || a->n_conns > ADMIN_MAX_CONNS) {
        admin_conn_close(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &a->settings);
    c->parser.data = c;
    uv_timer_start(&c->timer, admin_timer_cb, ADMIN_IDLE_MS, ADMIN_IDLE_MS);
    if (uv_read_start((uv_stream_t *)&c->tcp, admin_alloc_cb, admin_read_cb) != 0) {
        admin_conn_close(c);
    }
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
    mem_free(a);
    if (cb != NULL) {
        cb(a, data);
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
    a->listen_copy = mem_strdup(cfg->listen);
    a->cfg.listen = a->listen_copy;
    queue_init(&a->conns);
    llhttp_settings_init(&a->settings);
    a->settings.on_message_begin = admin_on_message_begin;
    a->settings.on_url = admin_on_url;
    a->settings.on_header_field = admin_on_header;
    a->settings.on_header_value = admin_on_header;
    a->settings.on_message_complete = admin_on_message_complete;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    a->handles_open = 1;
    int uvrv = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
    if (uvrv == 0) {
        uvrv = uv_listen((uv_stream_t *)&a->listener, 64, admin_on_connection);
    }
    if (uvrv != 0) {
        rv = uverr_to_gerr(uvrv, errmsg);
        gerr_wrap(errmsg, "admin listen on %s", cfg->listen);
        /* Close asynchronously; the memory goes in the close callback. */
        a->closing = true;
        uv_close((uv_handle_t *)&a->listener, admin_handle_closed);
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
    struct queue *q;
    while ((q = queue_head(&a->conns)) != NULL) {
        admin_conn_close(QUEUE_DATA(q, struct admin_conn, link));
    }
}
