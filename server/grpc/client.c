/* A small blocking gRPC client (server/grpc/client.h). */
#include "server/grpc/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/mem.h"
#include "lib/sslerr.h"

struct grpc_client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    nghttp2_session *h2;
    char authority[256];
    bool h2c;
    bool broken; /* the connection is unusable */
    uint32_t max_message_bytes;
    char pin[GRPC_CLIENT_PIN_SIZE];
    /* The call in progress. */
    int32_t stream_id;
    bool stream_closed;
    uint32_t stream_error;
    int http_status;
    struct buf in; /* response bytes not yet framed into messages */
    const ProtobufCMessageDescriptor *resp;
    grpc_client_msg_cb cb;
    void *cb_arg;
    int cb_rv;
    bool framing_error;
    struct grpc_client_result *result;
    const uint8_t *req;
    size_t req_len, req_off;
    /* Streaming requests (grpc_client_set_input): the bytes not yet handed to nghttp2. */
    const struct grpc_client_input *input;
    struct buf more;
    size_t more_off;
    bool more_eof, deferred;
};

static int elapsed_left(uint64_t deadline)
{
    if (deadline == 0) {
        return 30000;
    }
    uint64_t now = clock_mono_ms(clock_system());
    return now >= deadline ? 0 : (int)(deadline - now > 30000 ? 30000 : deadline - now);
}

/* --- TLS verification by a pinned CA fingerprint --- */

static int pin_verify_cb(X509_STORE_CTX *xctx, void *arg)
{
    struct grpc_client *c = arg;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(xctx);
    X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
    X509 *anchor = NULL;
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        char hex[GRPC_CLIENT_PIN_SIZE] = "sha256:";
        if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32) {
            continue;
        }
        for (unsigned j = 0; j < n; j++) {
            snprintf(hex + 7 + 2 * j, 3, "%02x", md[j]);
        }
        if (strcmp(hex, c->pin) == 0) {
            anchor = x;
        }
    }
    if (anchor == NULL || leaf == NULL) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_CERT_UNTRUSTED);
        return 0;
    }
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *v = X509_STORE_CTX_new();
    int ok = 0;
    if (store != NULL && v != NULL && X509_STORE_add_cert(store, anchor) == 1 &&
        X509_STORE_CTX_init(v, store, leaf, chain) == 1) {
        ok = X509_verify_cert(v) == 1;
        if (!ok) {
            X509_STORE_CTX_set_error(xctx, X509_STORE_CTX_get_error(v));
        }
    }
    X509_STORE_CTX_free(v);
    X509_STORE_free(store);
    return ok;
}

static int tls_setup(struct grpc_client *c, const struct grpc_client_config *cfg, const char *host,
                     char *errmsg)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL) {
        return sslerr_from_openssl(errmsg, "grpc client: SSL_CTX_new");
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof alpn);
    if (cfg->ca_pem != NULL || cfg->ca_file != NULL) {
        X509_STORE *store = SSL_CTX_get_cert_store(c->ctx);
        if (cfg->ca_file != NULL && SSL_CTX_load_verify_locations(c->ctx, cfg->ca_file, NULL) != 1) {
            return sslerr_from_openssl(errmsg, "grpc client: CA file");
        }
        if (cfg->ca_pem != NULL) {
            /* One CA, or a bundle (two during a cluster CA rotation). */
            BIO *bio = BIO_new_mem_buf(cfg->ca_pem, -1);
            unsigned n = 0;
            X509 *ca;
            while (bio != NULL && n < 8 && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
                int added = X509_STORE_add_cert(store, ca);
                X509_free(ca);
                if (added != 1) {
                    BIO_free(bio);
                    return sslerr_from_openssl(errmsg, "grpc client: CA certificate");
                }
                n++;
            }
            BIO_free(bio);
            ERR_clear_error();
            if (n == 0) {
                gerr_set(errmsg, "grpc client: CA certificate: none in the PEM text");
                return GERR_INVAL;
            }
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else if (cfg->pin_sha256 != NULL) {
        if (strlen(cfg->pin_sha256) != GRPC_CLIENT_PIN_SIZE - 1 ||
            strncmp(cfg->pin_sha256, "sha256:", 7) != 0) {
            gerr_set(errmsg, "grpc client: a pinned fingerprint is sha256:<64 hex digits>");
            return GERR_INVAL;
        }
        snprintf(c->pin, sizeof c->pin, "%s", cfg->pin_sha256);
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_cert_verify_callback(c->ctx, pin_verify_cb, c);
    } else if (cfg->insecure) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        gerr_set(errmsg, "grpc client: no way to verify the server (give a CA or a fingerprint)");
        return GERR_INVAL;
    }
    if (cfg->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, cfg->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(c->ctx, cfg->key_file != NULL ? cfg->key_file : cfg->cert_file,
                                        SSL_FILETYPE_PEM) != 1) {
            return sslerr_from_openssl(errmsg, "grpc client: client certificate");
        }
    }
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        return sslerr_from_openssl(errmsg, "grpc client: SSL_new");
    }
    const char *sni = cfg->server_name != NULL ? cfg->server_name : host;
    if (sni[0] != '\0' && strchr(sni, ':') == NULL && (sni[0] < '0' || sni[0] > '9')) {
        SSL_set_tlsext_host_name(c->ssl, sni);
    }
    if (cfg->server_name != NULL) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (X509_VERIFY_PARAM_set1_host(param, cfg->server_name, 0) != 1 ||
            X509_VERIFY_PARAM_set1_ip_asc(param, cfg->server_name) == 1) {
            /* an IP literal: set1_ip_asc took it (set1_host accepted it too, harmlessly) */
        }
    }
    if (SSL_connect(c->ssl) != 1) {
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK) {
            ERR_clear_error();
            gerr_set(errmsg, "grpc client: the server's certificate is not trusted: %s",
                     X509_verify_cert_error_string(vr));
            return GERR_PERM;
        }
        int rv = sslerr_from_openssl(errmsg, "grpc client: TLS handshake");
        return rv == GERR_INVAL ? GERR_PROTO : GERR_CLOSED;
    }
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &proto_len);
    if (proto_len != 2 || memcmp(proto, "h2", 2) != 0) {
        gerr_set(errmsg, "grpc client: the server did not agree to HTTP/2 (ALPN h2)");
        return GERR_PROTO;
    }
    return 0;
}

/* --- Transport --- */

static int split_target(const char *target, char *host, size_t host_len, char *port, size_t port_len)
{
    const char *colon;
    if (target[0] == '[') {
        const char *end = strchr(target, ']');
        if (end == NULL || end[1] != ':') {
            return GERR_INVAL;
        }
        snprintf(host, host_len, "%.*s", (int)(end - target - 1), target + 1);
        colon = end + 1;
    } else {
        colon = strrchr(target, ':');
        if (colon == NULL || (size_t)(colon - target) >= host_len) {
            return GERR_INVAL;
        }
        snprintf(host, host_len, "%.*s", (int)(colon - target), target);
    }
    snprintf(port, port_len, "%s", colon + 1);
    return host[0] != '\0' && port[0] != '\0' ? 0 : GERR_INVAL;
}

static int dial(const char *host, const char *port, unsigned timeout_ms, int *out, char *errmsg)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        gerr_set(errmsg, "grpc client: resolve %s: %s", host, gai_strerror(gai));
        return GERR_INVAL;
    }
    int rv = GERR_CLOSED;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            continue;
        }
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int err = 0;
            socklen_t len = sizeof err;
            r = poll(&p, 1, (int)timeout_ms);
            if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
                r = 0;
            } else {
                errno = r == 0 ? ETIMEDOUT : (err != 0 ? err : errno);
                r = -1;
            }
        }
        if (r == 0) {
            int flags = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
            *out = fd;
            rv = 0;
            break;
        }
        rv = errno == ETIMEDOUT ? GERR_TIMEOUT : errno == ECONNREFUSED ? GERR_REFUSED : GERR_CLOSED;
        gerr_set(errmsg, "grpc client: connect %s:%s: %s", host, port, strerror(errno));
        close(fd);
    }
    freeaddrinfo(res);
    return rv;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
    (void)s;
    (void)flags;
    struct grpc_client *c = arg;
    if (c->ssl != NULL) {
        int n = SSL_write(c->ssl, data, (int)(len > 1 << 20 ? 1 << 20 : len));
        if (n <= 0) {
            ERR_clear_error();
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return n;
    }
    ssize_t n;
    do {
        n = send(c->fd, data, len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

/* Frame the response bytes into messages. */
static void deliver(struct grpc_client *c)
{
    size_t off = 0;
    while (c->in.len - off >= 5 && c->cb_rv == 0 && !c->framing_error) {
        const uint8_t *p = (const uint8_t *)c->in.data + off;
        uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] != 0 || len > c->max_message_bytes) {
            c->framing_error = true;
            break;
        }
        if (c->in.len - off - 5 < len) {
            break;
        }
        ProtobufCMessage *m = protobuf_c_message_unpack(c->resp, NULL, len, p + 5);
        if (m == NULL) {
            c->framing_error = true;
            break;
        }
        c->result->n_messages++;
        if (c->cb != NULL) {
            c->cb_rv = c->cb(m, c->cb_arg);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        off += 5 + len;
    }
    if (off > 0) {
        memmove(c->in.data, (uint8_t *)c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
}

static int data_cb(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *arg)
{
    (void)s;
    (void)flags;
    struct grpc_client *c = arg;
    if (id != c->stream_id) {
        return 0;
    }
    if (c->in.len + len > (size_t)c->max_message_bytes + 5) {
        c->framing_error = true;
        return 0;
    }
    buf_append(&c->in, data, len);
    deliver(c);
    if (c->cb_rv != 0 || c->framing_error) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    }
    return 0;
}

static int hex_value(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                    : -1;
}

static void percent_decode(char *dst, size_t dst_len, const uint8_t *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < dst_len; i++) {
        if (src[i] == '%' && i + 2 < len && hex_value((char)src[i + 1]) >= 0 &&
            hex_value((char)src[i + 2]) >= 0) {
            dst[o++] = (char)(hex_value((char)src[i + 1]) * 16 + hex_value((char)src[i + 2]));
            i += 2;
        } else {
            dst[o++] = (char)src[i];
        }
    }
    dst[o] = '\0';
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
    (void)s;
    (void)flags;
    struct grpc_client *c = arg;
    if (f->hd.stream_id != c->stream_id) {
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        c->http_status = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++) {
            c->http_status = c->http_status * 10 + (value[i] - '0');
        }
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) {
            st = value[i] >= '0' && value[i] <= '9' ? st * 10 + (value[i] - '0') : 2;
        }
        c->result->status = st;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        percent_decode(c->result->message, sizeof c->result->message, value, valuelen);
    } else if (namelen == 17 && memcmp(name, "x-gantry-revision", 17) == 0) {
        uint64_t rev = 0;
        bool ok = valuelen > 0 && valuelen <= 19; /* below 10^19: no overflow */
        for (size_t i = 0; ok && i < valuelen; i++) {
            ok = value[i] >= '0' && value[i] <= '9';
            rev = rev * 10 + (uint64_t)(value[i] - '0');
        }
        c->result->revision = ok ? rev : 0;
    }
    return 0;
}

static int close_cb(nghttp2_session *s, int32_t id, uint32_t error_code, void *arg)
{
    (void)s;
    struct grpc_client *c = arg;
    if (id == c->stream_id) {
        c->stream_closed = true;
        c->stream_error = error_code;
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
    (void)s;
    (void)id;
    (void)src;
    struct grpc_client *c = arg;
    size_t n = c->req_len - c->req_off;
    if (n > len) {
        n = len;
    }
    memcpy(buf, c->req + c->req_off, n);
    c->req_off += n;
    if (c->input != NULL && n < len) {
        size_t m = c->more.len - c->more_off;
        if (m > len - n) {
            m = len - n;
        }
        if (m > 0) {
            memcpy(buf + n, (uint8_t *)c->more.data + c->more_off, m);
        }
        c->more_off += m;
        n += m;
        if (c->more_off == c->more.len) {
            buf_reset(&c->more);
            c->more_off = 0;
        }
    }
    if (c->req_off == c->req_len && (c->input == NULL || (c->more_eof && c->more.len == c->more_off))) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
        c->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

void grpc_client_set_input(struct grpc_client *c, const struct grpc_client_input *in)
{
    c->input = in;
}

void grpc_client_frame(struct buf *out, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = buf_reserve(out, len + 5);
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    protobuf_c_message_pack(msg, p + 5);
    out->len += len + 5;
}

int grpc_client_connect(const struct grpc_client_config *cfg, struct grpc_client **out, char *errmsg)
{
    char host[256], port[16];
    if (cfg->target == NULL || split_target(cfg->target, host, sizeof host, port, sizeof port) != 0) {
        gerr_set(errmsg, "grpc client: target must be host:port, got \"%s\"",
                 cfg->target != NULL ? cfg->target : "");
        return GERR_INVAL;
    }
    struct grpc_client *c = mem_zalloc(sizeof *c);
    c->fd = -1;
    c->h2c = cfg->h2c;
    c->max_message_bytes = cfg->max_message_bytes != 0 ? cfg->max_message_bytes : 64u << 20;
    snprintf(c->authority, sizeof c->authority, "%s", cfg->target);
    buf_init(&c->in);
    buf_init(&c->more);
    int rv = dial(host, port, cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : 5000, &c->fd, errmsg);
    if (rv == 0 && !cfg->h2c) {
        struct timeval tv = {.tv_sec =
                                 (cfg->connect_timeout_ms != 0 ? cfg->connect_timeout_ms : 5000) / 1000 + 1};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        rv = tls_setup(c, cfg, host, errmsg);
        struct timeval zero = {0};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
    }
    if (rv == 0) {
        nghttp2_session_callbacks *cbs;
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
        nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);
        if (nghttp2_session_client_new(&c->h2, cbs, c) != 0) {
            rv = GERR_NOMEM;
        }
        nghttp2_session_callbacks_del(cbs);
    }
    if (rv == 0) {
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 24}};
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    }
    if (rv != 0) {
        grpc_client_close(c);
        return rv;
    }
    *out = c;
    return 0;
}

/* Read what the server sent, up to the deadline. */
static int pump_in(struct grpc_client *c, uint64_t deadline, char *errmsg)
{
    uint8_t buf[16384];
    ssize_t n;
    if (c->ssl == NULL || SSL_pending(c->ssl) == 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int left = elapsed_left(deadline);
        int r = poll(&p, 1, left);
        if (r == 0) {
            if (deadline != 0 && elapsed_left(deadline) == 0) {
                gerr_set(errmsg, "grpc client: no answer before the deadline");
                return GERR_TIMEOUT;
            }
            return 0;
        }
        if (r < 0) {
            return errno == EINTR ? 0 : GERR_IO;
        }
    }
    if (c->ssl != NULL) {
        int r = SSL_read(c->ssl, buf, sizeof buf);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_READ) {
                return 0;
            }
            gerr_set(errmsg, "grpc client: the server closed the connection");
            return GERR_CLOSED;
        }
        n = r;
    } else {
        do {
            n = recv(c->fd, buf, sizeof buf, 0);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            gerr_set(errmsg, "grpc client: the server closed the connection");
            return GERR_CLOSED;
        }
    }
    if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
        gerr_set(errmsg, "grpc client: HTTP/2 protocol error from the server");
        return GERR_PROTO;
    }
    return 0;
}

/* pump_in for a call with streaming requests: also wait for the caller's input, and feed it. */
static int pump_stream(struct grpc_client *c, uint64_t deadline, char *errmsg)
{
    const struct grpc_client_input *in = c->input;
    bool room = !c->more_eof && c->more.len - c->more_off < (1u << 20);
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = room ? in->fd : -1, .events = POLLIN}};
    int left = elapsed_left(deadline);
    int tick = (int)(in->tick_ms != 0 ? in->tick_ms : 100);
    bool pending = c->ssl != NULL && SSL_pending(c->ssl) > 0;
    int r = pending ? 1 : poll(p, 2, left >= 0 && left < tick ? left : tick);
    if (r < 0 && errno != EINTR) {
        gerr_set(errmsg, "grpc client: poll: %s", strerror(errno));
        return GERR_IO;
    }
    if (r == 0 && deadline != 0 && elapsed_left(deadline) == 0) {
        gerr_set(errmsg, "grpc client: no answer before the deadline");
        return GERR_TIMEOUT;
    }
    if (room) {
        size_t before = c->more.len;
        int rv = in->produce(in->arg, (p[1].revents & (POLLIN | POLLHUP)) != 0, &c->more, &c->more_eof);
        if (rv != 0) {
            nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
            c->cb_rv = rv;
            return 0;
        }
        if ((c->more.len != before || c->more_eof) && c->deferred) {
            c->deferred = false;
            nghttp2_session_resume_data(c->h2, c->stream_id);
        }
    }
    if (pending || (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        return pump_in(c, deadline, errmsg); /* readable now: its poll returns at once */
    }
    return 0;
}

int grpc_client_call(struct grpc_client *c, const char *path, const struct grpc_client_md *md, size_t n_md,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
                     grpc_client_msg_cb cb, void *arg, unsigned timeout_ms, struct grpc_client_result *result,
                     char *errmsg)
{
    memset(result, 0, sizeof *result);
    result->status = -1;
    if (c->broken) {
        gerr_set(errmsg, "grpc client: the connection is closed");
        return GERR_CLOSED;
    }
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *body = mem_alloc(len + 5);
    body[0] = 0;
    body[1] = (uint8_t)(len >> 24);
    body[2] = (uint8_t)(len >> 16);
    body[3] = (uint8_t)(len >> 8);
    body[4] = (uint8_t)len;
    protobuf_c_message_pack(req, body + 5);
    c->req = body;
    c->req_len = len + 5;
    c->req_off = 0;
    c->resp = resp;
    c->cb = cb;
    c->cb_arg = arg;
    c->cb_rv = 0;
    c->framing_error = false;
    c->result = result;
    c->stream_closed = false;
    c->http_status = 0;
    c->in.len = 0;
    buf_reset(&c->more);
    c->more_off = 0;
    c->more_eof = false;
    c->deferred = false;

    char timeout[32];
    nghttp2_nv nva[8 + 16];
    size_t n = 0;
#define NV(k, v) (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nva[n++] = NV(":method", "POST");
    nva[n++] = NV(":scheme", c->h2c ? "http" : "https");
    nva[n++] = NV(":path", path);
    nva[n++] = NV(":authority", c->authority);
    nva[n++] = NV("content-type", "application/grpc");
    nva[n++] = NV("te", "trailers");
    if (timeout_ms != 0) {
        snprintf(timeout, sizeof timeout, "%um", timeout_ms);
        nva[n++] = NV("grpc-timeout", timeout);
    }
    for (size_t i = 0; i < n_md && n < sizeof nva / sizeof nva[0]; i++) {
        nva[n++] = NV(md[i].key, md[i].value);
    }
#undef NV
    nghttp2_data_provider prd = {.read_callback = read_body};
    c->stream_id = nghttp2_submit_request(c->h2, NULL, nva, n, &prd, c);
    int rv = 0;
    if (c->stream_id < 0) {
        gerr_set(errmsg, "grpc client: cannot start a stream: %s", nghttp2_strerror(c->stream_id));
        rv = GERR_CLOSED;
    }
    uint64_t deadline = timeout_ms != 0 ? clock_mono_ms(clock_system()) + timeout_ms + 1000 : 0;
    while (rv == 0 && !c->stream_closed) {
        if (nghttp2_session_send(c->h2) != 0) {
            gerr_set(errmsg, "grpc client: cannot send to the server");
            rv = GERR_CLOSED;
            break;
        }
        if (c->stream_closed) {
            break;
        }
        rv = c->input != NULL ? pump_stream(c, deadline, errmsg) : pump_in(c, deadline, errmsg);
    }
    if (rv == 0) {
        nghttp2_session_send(c->h2); /* flush WINDOW_UPDATEs */
    }
    mem_free(body);
    c->req = NULL;
    c->input = NULL; /* for one call only */
    if (rv != 0) {
        c->broken = true;
        return rv;
    }
    if (c->cb_rv != 0) {
        return c->cb_rv;
    }
    if (c->framing_error || (c->in.len != 0 && result->status == 0)) {
        gerr_set(errmsg, "grpc client: a response message is malformed or too large");
        return GERR_PROTO;
    }
    if (result->status < 0) {
        gerr_set(errmsg, "grpc client: the call ended without a gRPC status (HTTP %d, stream error %u)",
                 c->http_status, c->stream_error);
        return GERR_PROTO;
    }
    return 0;
}

static int keep_first(const ProtobufCMessage *msg, void *arg)
{
    ProtobufCMessage **out = arg;
    if (*out != NULL) {
        return GERR_PROTO; /* a unary method answered twice */
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *tmp = mem_alloc(len + 1);
    protobuf_c_message_pack(msg, tmp);
    *out = protobuf_c_message_unpack(msg->descriptor, NULL, len, tmp);
    mem_free(tmp);
    return *out != NULL ? 0 : GERR_NOMEM;
}

int grpc_client_unary(struct grpc_client *c, const char *path, const struct grpc_client_md *md, size_t n_md,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
                      unsigned timeout_ms, ProtobufCMessage **out, struct grpc_client_result *result,
                      char *errmsg)
{
    *out = NULL;
    int rv = grpc_client_call(c, path, md, n_md, req, resp, keep_first, out, timeout_ms, result, errmsg);
    if (rv == 0 && result->status == 0 && *out == NULL) {
        gerr_set(errmsg, "grpc client: %s answered OK without a message", path);
        rv = GERR_PROTO;
    }
    if ((rv != 0 || result->status != 0) && *out != NULL) {
        protobuf_c_message_free_unpacked(*out, NULL);
        *out = NULL;
    }
    return rv;
}

void grpc_client_close(struct grpc_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->h2 != NULL) {
        nghttp2_session_del(c->h2);
    }
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->ctx != NULL) {
        SSL_CTX_free(c->ctx);
    }
    ERR_clear_error();
    if (c->fd >= 0) {
        close(c->fd);
    }
    buf_close(&c->in);
    buf_close(&c->more);
    mem_free(c);
}
