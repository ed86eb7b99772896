/* A WebSocket client (see ws.h). */
#include "drivers/ws.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "lib/clock.h"
#include "lib/mem.h"
#include "lib/rand.h"

#define WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define SEND_WAIT_MS  30000
#define CLOSE_WAIT_MS 2000

/* ---- Frames */

static bool op_known(uint8_t op)
{
    return op <= WS_OP_BINARY || (op >= WS_OP_CLOSE && op <= WS_OP_PONG);
}

int ws_frame_decode(const uint8_t *p, size_t len, size_t max, struct ws_frame *f, size_t *used)
{
    memset(f, 0, sizeof *f);
    *used = 0;
    if (len < 2) {
        return GERR_BUSY;
    }
    uint8_t op = p[0] & 0x0f;
    if ((p[0] & 0x70) != 0 || !op_known(op) || (p[1] & 0x80) != 0) {
        return GERR_PROTO; /* reserved bits, unknown opcode, a masked frame from the server */
    }
    bool fin = (p[0] & 0x80) != 0;
    uint64_t n = p[1] & 0x7f;
    size_t head = 2;
    if (n == 126) {
        if (len < 4) {
            return GERR_BUSY;
        }
        n = (uint64_t)p[2] << 8 | p[3];
        head = 4;
        if (n < 126) {
            return GERR_PROTO;
        }
    } else if (n == 127) {
        if (len < 10) {
            return GERR_BUSY;
        }
        n = 0;
        for (int i = 0; i < 8; i++) {
            n = n << 8 | p[2 + i];
        }
        head = 10;
        if (n >> 63 != 0 || n <= 0xffff) {
            return GERR_PROTO;
        }
    }
    if (op >= WS_OP_CLOSE && (!fin || n > WS_CONTROL_MAX)) {
        return GERR_PROTO;
    }
    if (n > max) {
        return GERR_TOOBIG;
    }
    if (len - head < n) {
        return GERR_BUSY;
    }
    f->fin = fin;
    f->opcode = op;
    f->payload = p + head;
    f->len = (size_t)n;
    *used = head + (size_t)n;
    return 0;
}

void ws_frame_encode(struct buf *b, uint8_t opcode, bool fin, const void *p, size_t n, const uint8_t mask[4])
{
    uint8_t h[14];
    size_t hl = 2;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    uint8_t m = mask != NULL ? 0x80 : 0;
    if (n < 126) {
        h[1] = (uint8_t)(m | n);
    } else if (n <= 0xffff) {
        h[1] = m | 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = m | 127;
        for (int i = 0; i < 8; i++) {
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        }
        hl = 10;
    }
    if (mask != NULL) {
        memcpy(h + hl, mask, 4);
        hl += 4;
    }
    buf_append(b, h, hl);
    size_t at = b->len;
    buf_append(b, p, n);
    if (mask != NULL) {
        for (size_t i = 0; i < n; i++) {
            b->data[at + i] ^= mask[i & 3];
        }
    }
}

void ws_reader_init(struct ws_reader *r, size_t max)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->in);
    buf_init(&r->msg);
    r->max = max;
}

void ws_reader_close(struct ws_reader *r)
{
    buf_close(&r->in);
    buf_close(&r->msg);
}

void ws_reader_feed(struct ws_reader *r, const void *p, size_t n)
{
    if (r->consumed > 0) { /* drop what the last message used */
        memmove(r->in.data, r->in.data + r->consumed, r->in.len - r->consumed);
        r->in.len -= r->consumed;
        r->consumed = 0;
    }
    buf_append(&r->in, p, n);
}

/* A close payload: empty, or a 2-byte code that may be sent (RFC 6455 7.4) and a reason. */
static bool close_ok(const uint8_t *p, size_t n)
{
    if (n == 0) {
        return true;
    }
    if (n < 2) {
        return false;
    }
    unsigned code = (unsigned)p[0] << 8 | p[1];
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

int ws_reader_next(struct ws_reader *r, uint8_t *op, const uint8_t **data, size_t *n)
{
    *op = 0;
    *data = NULL;
    *n = 0;
    if (r->consumed > 0) {
        memmove(r->in.data, r->in.data + r->consumed, r->in.len - r->consumed);
        r->in.len -= r->consumed;
        r->consumed = 0;
    }
    if (r->msg_op == 0 && r->msg.len > 0) {
        buf_reset(&r->msg); /* the message returned last time */
    }
    for (;;) {
        struct ws_frame f;
        size_t used;
        int rv = ws_frame_decode(r->in.data + r->consumed, r->in.len - r->consumed, r->max, &f, &used);
        if (rv != 0) {
            return rv;
        }
        r->consumed += used;
        if (f.opcode >= WS_OP_CLOSE) {
            if (f.opcode == WS_OP_CLOSE && !close_ok(f.payload, f.len)) {
                return GERR_PROTO;
            }
            *op = f.opcode;
            *data = f.payload;
            *n = f.len;
            return 0;
        }
        if ((f.opcode == WS_OP_CONT) != (r->msg_op != 0)) {
            return GERR_PROTO; /* a continuation of nothing, or a new message inside one */
        }
        if (f.opcode != WS_OP_CONT && f.fin) {
            *op = f.opcode;
            *data = f.payload;
            *n = f.len;
            return 0;
        }
        if (r->msg.len + f.len > r->max) {
            return GERR_TOOBIG;
        }
        if (f.opcode != WS_OP_CONT) {
            r->msg_op = f.opcode;
        }
        buf_append(&r->msg, f.payload, f.len);
        if (f.fin) {
            *op = r->msg_op;
            *data = r->msg.len > 0 ? r->msg.data : (const uint8_t *)"";
            *n = r->msg.len;
            r->msg_op = 0; /* the buffer is reset on the next call */
            return 0;
        }
    }
}

/* ---- The opening handshake */

void ws_accept_for(const char *key, char out[29])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "%s" WS_GUID, key);
    SHA1(b.data, b.len, md);
    buf_close(&b);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
    out[28] = '\0';
}

/* The value of header @name in the head @h (lines end "\r\n"), trimmed, into @out; false if absent
 * or longer than @cap - 1. */
static bool header(const char *h, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = h + len;
    const char *p = memchr(h, '\n', len); /* skip the status line */
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) {
            break;
        }
        size_t ll = (size_t)(eol - line);
        if (ll > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            if ((size_t)(ve - v) >= cap) {
                return false;
            }
            memcpy(out, v, (size_t)(ve - v));
            out[ve - v] = '\0';
            return true;
        }
        p = eol;
    }
    return false;
}

/* Whether the comma-separated list @v holds @tok (case-insensitive). */
static bool has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (*v != '\0') {
        while (*v == ' ' || *v == ',') {
            v++;
        }
        const char *e = v;
        while (*e != '\0' && *e != ',') {
            e++;
        }
        const char *te = e;
        while (te > v && te[-1] == ' ') {
            te--;
        }
        if ((size_t)(te - v) == tl && strncasecmp(v, tok, tl) == 0) {
            return true;
        }
        v = e;
    }
    return false;
}

int ws_handshake_check(const char *p, size_t len, const char *key, const char *const *protocols, long *status,
                       long *content_length, char proto[64], size_t *used, char *errmsg)
{
    char v[256];
    *status = 0;
    *content_length = -1;
    *used = 0;
    proto[0] = '\0';
    const char *end = NULL;
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            end = p + i + 4;
            break;
        }
    }
    if (end == NULL) {
        if (len > WS_HEAD_MAX) {
            gerr_set(errmsg, "websocket: the server's response head is over %u bytes", WS_HEAD_MAX);
            return GERR_TOOBIG;
        }
        return GERR_BUSY;
    }
    size_t hl = (size_t)(end - p);
    if (hl > WS_HEAD_MAX) {
        gerr_set(errmsg, "websocket: the server's response head is over %u bytes", WS_HEAD_MAX);
        return GERR_TOOBIG;
    }
    if (hl < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
        p[11] < '0' || p[11] > '9') {
        gerr_set(errmsg, "websocket: the server's answer is not HTTP/1.1");
        return GERR_PROTO;
    }
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    *used = hl;
    if (*status != 101) {
        if (header(p, hl, "Content-Length", v, sizeof v)) {
            char *e;
            long cl = strtol(v, &e, 10);
            *content_length = *e == '\0' && e != v && cl >= 0 ? cl : -1;
        }
        return 0;
    }
    if (!header(p, hl, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0) {
        gerr_set(errmsg, "websocket: 101 without Upgrade: websocket");
        return GERR_PROTO;
    }
    if (!header(p, hl, "Connection", v, sizeof v) || !has_token(v, "upgrade")) {
        gerr_set(errmsg, "websocket: 101 without Connection: Upgrade");
        return GERR_PROTO;
    }
    char want[29];
    ws_accept_for(key, want);
    if (!header(p, hl, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, want) != 0) {
        gerr_set(errmsg, "websocket: Sec-WebSocket-Accept is missing or does not match the key");
        return GERR_PROTO;
    }
    bool got = header(p, hl, "Sec-WebSocket-Protocol", v, 64);
    if (protocols == NULL || protocols[0] == NULL) {
        if (got) {
            gerr_set(errmsg, "websocket: the server chose subprotocol %.60s, none was offered", v);
            return GERR_PROTO;
        }
        return 0;
    }
    for (size_t i = 0; got && protocols[i] != NULL; i++) {
        if (strcmp(v, protocols[i]) == 0) {
            snprintf(proto, 64, "%.63s", v);
            return 0;
        }
    }
    gerr_set(errmsg, "websocket: the server chose %s%.60s%s, not one of the offered subprotocols",
             got ? "subprotocol " : "no subprotocol", got ? v : "", "");
    return GERR_PROTO;
}

/* ---- A connection over libcurl (connect-only) */

struct ws_conn {
    CURL *curl;
    int fd;
    struct ws_reader rd;
    bool closed; /* the server's close arrived or the connection ended */
    bool sent_close;
    /* Frames encoded but not yet taken by the socket, in order: every frame goes through here, so
     * one never interleaves with the rest of another. @sending is what a send is under way for
     * (sending.data[send_off..len)): it never moves or changes until it is all sent, because a TLS
     * write that would block must be retried with the same bytes; new frames wait in @out. */
    struct buf sending, out;
    size_t send_off;
};

int ws_fd(struct ws_conn *c)
{
    return c->fd;
}

static int wait_fd(int fd, short ev, unsigned ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do {
        r = poll(&p, 1, (int)ms);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Hand the socket what it takes now of the queued frames, never waiting. 0 (maybe some left),
 * GERR_CLOSED when the connection failed. */
static int flush_now(struct ws_conn *c, char *errmsg)
{
    for (;;) {
        if (c->send_off >= c->sending.len) {
            buf_reset(&c->sending);
            c->send_off = 0;
            if (c->out.len == 0) {
                return 0;
            }
            struct buf t = c->sending;
            c->sending = c->out;
            c->out = t;
        }
        size_t sent = 0;
        CURLcode cc =
            curl_easy_send(c->curl, c->sending.data + c->send_off, c->sending.len - c->send_off, &sent);
        if (cc == CURLE_AGAIN) {
            return 0;
        }
        if (cc != CURLE_OK) {
            gerr_set(errmsg, "websocket send: %s", curl_easy_strerror(cc));
            c->closed = true;
            return GERR_CLOSED;
        }
        c->send_off += sent;
    }
}

size_t ws_unsent(const struct ws_conn *c)
{
    return c->sending.len - c->send_off + c->out.len;
}

/* Flush the queue, waiting for the socket up to @wait_ms. 0, GERR_CLOSED, GERR_TIMEOUT. */
static int flush_wait(struct ws_conn *c, unsigned wait_ms, char *errmsg)
{
    uint64_t deadline = clock_mono_ms(clock_system()) + wait_ms;
    for (;;) {
        int rv = flush_now(c, errmsg);
        if (rv != 0 || ws_unsent(c) == 0) {
            return rv;
        }
        uint64_t now = clock_mono_ms(clock_system());
        if (now >= deadline) {
            gerr_set(errmsg, "websocket: the server took no data for %u ms", wait_ms);
            return GERR_TIMEOUT;
        }
        wait_fd(c->fd, POLLOUT, (unsigned)(deadline - now));
    }
}

/* The handshake's request: raw bytes, through the same queue. */
static int send_all(struct ws_conn *c, const uint8_t *p, size_t n, char *errmsg)
{
    buf_append(&c->out, p, n);
    int rv = flush_wait(c, SEND_WAIT_MS, errmsg);
    struct buf *held[] = {&c->sending, &c->out}; /* they held the token */
    for (size_t i = 0; i < 2; i++) {
        if (held[i]->data != NULL) {
            memset(held[i]->data, 0, held[i]->cap);
        }
        buf_reset(held[i]);
    }
    c->send_off = 0;
    return rv;
}

static int queue_frame(struct ws_conn *c, uint8_t op, const void *p, size_t n, char *errmsg)
{
    uint8_t mask[4];
    if (rand_bytes(mask, sizeof mask) != 0) {
        gerr_set(errmsg, "websocket: no random bytes for the mask");
        return GERR_IO;
    }
    ws_frame_encode(&c->out, op, true, p, n, mask);
    return 0;
}

static int send_frame(struct ws_conn *c, uint8_t op, const void *p, size_t n, char *errmsg)
{
    int rv = queue_frame(c, op, p, n, errmsg);
    return rv != 0 ? rv : flush_wait(c, SEND_WAIT_MS, errmsg);
}

int ws_send(struct ws_conn *c, uint8_t opcode, const void *p, size_t n, char *errmsg)
{
    if (c->sent_close || c->closed) {
        gerr_set(errmsg, "websocket: closed");
        return GERR_CLOSED;
    }
    return send_frame(c, opcode, p, n, errmsg);
}

int ws_queue(struct ws_conn *c, uint8_t opcode, const void *p, size_t n, char *errmsg)
{
    if (c->sent_close || c->closed) {
        gerr_set(errmsg, "websocket: closed");
        return GERR_CLOSED;
    }
    int rv = queue_frame(c, opcode, p, n, errmsg);
    return rv != 0 ? rv : flush_now(c, errmsg);
}

int ws_flush(struct ws_conn *c, char *errmsg)
{
    return c->closed ? GERR_CLOSED : flush_now(c, errmsg);
}

/* Read what is there now into the reader: 0 (maybe nothing), GERR_CLOSED at EOF, GERR_IO. */
static int fill(struct ws_conn *c, char *errmsg)
{
    uint8_t tmp[16384];
    for (;;) {
        size_t got = 0;
        CURLcode cc = curl_easy_recv(c->curl, tmp, sizeof tmp, &got);
        if (cc == CURLE_AGAIN) {
            return 0;
        }
        if (cc != CURLE_OK) {
            gerr_set(errmsg, "websocket receive: %s", curl_easy_strerror(cc));
            return GERR_CLOSED;
        }
        if (got == 0) {
            gerr_set(errmsg, "websocket: the server closed the connection");
            return GERR_CLOSED;
        }
        ws_reader_feed(&c->rd, tmp, got);
        if (c->rd.in.len > c->rd.max + 64u * 1024u) {
            return 0; /* enough to decode: take messages first */
        }
    }
}

int ws_recv(struct ws_conn *c, uint8_t *op, const uint8_t **data, size_t *n, char *errmsg)
{
    int eof = 0;
    if (c->closed) {
        gerr_set(errmsg, "websocket: closed");
        return GERR_CLOSED;
    }
    for (int round = 0;; round++) {
        int rv = ws_reader_next(&c->rd, op, data, n);
        if (rv == 0) {
            if (*op == WS_OP_PING) {
                if ((rv = queue_frame(c, WS_OP_PONG, *data, *n, errmsg)) != 0 ||
                    (rv = flush_now(c, errmsg)) != 0) {
                    return rv;
                }
                continue;
            }
            if (*op == WS_OP_PONG) {
                continue;
            }
            if (*op == WS_OP_CLOSE) {
                if (!c->sent_close) {
                    send_frame(c, WS_OP_CLOSE, *data, *n >= 2 ? 2 : 0, errmsg);
                    c->sent_close = true;
                }
                c->closed = true;
                gerr_set(errmsg, "websocket: the server closed the stream");
                return GERR_CLOSED;
            }
            return 0;
        }
        if (rv != GERR_BUSY) {
            gerr_set(errmsg, "websocket: %s from the server",
                     rv == GERR_TOOBIG ? "a message over the limit" : "a malformed frame");
            c->closed = true;
            return rv;
        }
        if (round > 0 || eof != 0) {
            if (eof != 0) {
                c->closed = true;
                return eof;
            }
            return GERR_BUSY;
        }
        eof = fill(c, errmsg);
        if (eof != 0 && eof != GERR_CLOSED) {
            return eof;
        }
    }
}

void ws_close(struct ws_conn *c)
{
    if (c == NULL) {
        return;
    }
    if (!c->sent_close && !c->closed) {
        /* Best effort, and bounded: what is queued goes first (a close frame may not cut into
         * another frame), and a server that takes nothing for CLOSE_WAIT_MS gets no close frame. */
        char errmsg[GERR_MSG_SIZE];
        static const uint8_t normal[2] = {0x03, 0xe8}; /* 1000 */
        if (flush_wait(c, CLOSE_WAIT_MS, errmsg) == 0 &&
            queue_frame(c, WS_OP_CLOSE, normal, 2, errmsg) == 0) {
            flush_wait(c, CLOSE_WAIT_MS, errmsg);
        }
    }
    curl_easy_cleanup(c->curl);
    buf_close(&c->sending);
    buf_close(&c->out);
    ws_reader_close(&c->rd);
    mem_free(c);
}

int ws_connect(const struct k8s_http_config *hc, const char *path, const char *const *protocols,
               unsigned timeout_ms, size_t max_message, struct ws_conn **out, char proto[64], long *status,
               struct buf *body, char *errmsg)
{
    *out = NULL;
    *status = 0;
    proto[0] = '\0';
    buf_reset(body);
    struct k8s_http *auth_src;
    char *auth = NULL;
    int rv = k8s_http_new(hc, &auth_src, errmsg); /* validates the server; reads the token */
    if (rv != 0) {
        return rv;
    }
    rv = k8s_http_auth_header(auth_src, &auth, errmsg);
    k8s_http_free(auth_src);
    if (rv != 0) {
        return rv;
    }
    struct ws_conn *c = mem_zalloc(sizeof *c);
    buf_init(&c->sending);
    buf_init(&c->out);
    c->fd = -1;
    ws_reader_init(&c->rd, max_message);
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        gerr_set(errmsg, "curl_easy_init failed");
        rv = GERR_NOMEM;
        goto err_after_auth;
    }
    struct buf url, req, in;
    buf_init(&url);
    buf_init(&req);
    buf_init(&in);
    buf_printf(&url, "%s/", hc->server);
    buf_append_zero(&url, 1);
    CURL *k = c->curl;
    curl_easy_setopt(k, CURLOPT_URL, (const char *)url.data);
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(k, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(k, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(k, CURLOPT_SSL_ENABLE_ALPN, 0L); /* HTTP/1.1: the upgrade is an HTTP/1.1 request */
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    if (hc->ca_file != NULL) {
        curl_easy_setopt(k, CURLOPT_CAINFO, hc->ca_file);
    }
    if (hc->client_cert_file != NULL) {
        curl_easy_setopt(k, CURLOPT_SSLCERT, hc->client_cert_file);
        curl_easy_setopt(k, CURLOPT_SSLKEY, hc->client_key_file);
    }
    CURLcode cc = curl_easy_perform(k);
    curl_socket_t sock = CURL_SOCKET_BAD;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(k, CURLINFO_ACTIVESOCKET, &sock);
    }
    if (cc != CURLE_OK || sock == CURL_SOCKET_BAD) {
        rv = cc != CURLE_OK ? k8s_http_err_from_curl((int)cc) : GERR_IO;
        gerr_set(errmsg, "websocket connect to %s: %s", hc->server,
                 cc != CURLE_OK ? curl_easy_strerror(cc) : "no socket");
        goto err_after_bufs;
    }
    c->fd = (int)sock;
    uint8_t raw[16];
    char key[32];
    if (rand_bytes(raw, sizeof raw) != 0) {
        gerr_set(errmsg, "websocket: no random bytes for the key");
        rv = GERR_IO;
        goto err_after_bufs;
    }
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    const char *host = hc->server + strlen("https://");
    buf_printf(&req,
               "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
               path, host, key);
    if (protocols != NULL && protocols[0] != NULL) {
        buf_printf(&req, "Sec-WebSocket-Protocol: ");
        for (size_t i = 0; protocols[i] != NULL; i++) {
            buf_printf(&req, "%s%s", i > 0 ? ", " : "", protocols[i]);
        }
        buf_printf(&req, "\r\n");
    }
    if (auth != NULL) {
        buf_printf(&req, "%s\r\n", auth);
    }
    buf_printf(&req, "\r\n");
    rv = send_all(c, req.data, req.len, errmsg);
    memset(req.data, 0, req.len); /* it held the token */
    if (rv != 0) {
        goto err_after_bufs;
    }
    uint64_t deadline = clock_mono_ms(clock_system()) + timeout_ms;
    long clen = -1;
    size_t used = 0;
    for (;;) {
        rv = ws_handshake_check((const char *)in.data, in.len, key, protocols, status, &clen, proto, &used,
                                errmsg);
        if (rv != GERR_BUSY) {
            break;
        }
        uint8_t tmp[4096];
        size_t got = 0;
        cc = curl_easy_recv(k, tmp, sizeof tmp, &got);
        if (cc == CURLE_AGAIN) {
            uint64_t now = clock_mono_ms(clock_system());
            if (now >= deadline) {
                gerr_set(errmsg, "websocket: no handshake answer from %s in %u ms", hc->server, timeout_ms);
                rv = GERR_TIMEOUT;
                goto err_after_bufs;
            }
            wait_fd(c->fd, POLLIN, (unsigned)(deadline - now));
            continue;
        }
        if (cc != CURLE_OK || got == 0) {
            gerr_set(errmsg, "websocket: the server closed the connection during the handshake");
            rv = GERR_CLOSED;
            goto err_after_bufs;
        }
        buf_append(&in, tmp, got);
    }
    if (rv != 0) {
        goto err_after_bufs;
    }
    if (*status != 101) {
        /* A refusal: read its body (a Status object) for the caller, within the deadline. */
        size_t want = clen >= 0 && clen < 65536 ? (size_t)clen : 65536;
        buf_append(body, in.data + used, in.len - used < want ? in.len - used : want);
        while (body->len < want && clen >= 0) {
            uint8_t tmp[4096];
            size_t got = 0;
            cc = curl_easy_recv(k, tmp, sizeof tmp, &got);
            if (cc == CURLE_AGAIN) {
                uint64_t now = clock_mono_ms(clock_system());
                if (now >= deadline) {
                    break;
                }
                wait_fd(c->fd, POLLIN, (unsigned)(deadline - now));
                continue;
            }
            if (cc != CURLE_OK || got == 0) {
                break;
            }
            buf_append(body, tmp, got < want - body->len ? got : want - body->len);
        }
        buf_append_zero(body, 1);
        body->len--;
        c->closed = true;
        c->sent_close = true;
        ws_close(c);
        c = NULL;
        rv = 0;
        goto err_after_bufs;
    }
    ws_reader_feed(&c->rd, in.data + used, in.len - used);
    *out = c;
    c = NULL;
err_after_bufs:
    buf_close(&url);
    buf_close(&req);
    buf_close(&in);
err_after_auth:
    if (auth != NULL) {
        memset(auth, 0, strlen(auth));
        mem_free(auth);
    }
    if (c != NULL) {
        c->closed = true;
        c->sent_close = true;
        ws_close(c);
    }
    return rv;
}
