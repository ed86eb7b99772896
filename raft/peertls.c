/* Mutual-TLS relay between replicas. See peertls.h.
 *
 * Happy path (inbound): accept -> non-blocking TLS handshake in the relay loop -> the peer's
 * certificate verified against the cluster CA -> connect to the backend (the node's private
 * socket) -> relay. Outbound: peertls_dial connects and handshakes on the caller's thread, then
 * hands the TLS socket and one end of a socketpair to the relay loop through a locked queue and
 * an eventfd.
 *
 * Failure modes: a handshake that fails or does not finish within the timeout (logged, counted
 * as rejected, closed); more handshakes from one address than max_handshakes_per_source (closed
 * at accept, counted as rejected); a backend that refuses (closed); any read or write error or EOF
 * on either side of a relayed pair (pending bytes flushed where possible, both sides closed).
 * Refusals are logged once per source address per window, then counted (a flood of silent
 * connections used to write one WARN line each: 8,500 in 40 s). */
#include "raft/peertls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "lib/sslerr.h"
#include "raft/pki.h"
#include "store/conn.h"

#define RELAY_BUF  16384
#define MAX_RELAYS 4096
/* Connections still in their TLS handshake: anyone can open these without a certificate, so they
 * are capped; above the cap the listener is not polled until some finish or time out. */
#define MAX_HANDSHAKES  256
#define ACCEPT_PAUSE_MS 100
/* Source addresses whose refusals are being counted instead of logged (relay thread only). */
#define REFUSAL_SOURCES 64

/* A pipe whose local side closed (everything it wrote flushed into TLS, close_notify sent, the TLS
 * socket shut for writing) reads and drops what the peer still sends until the peer closes too or
 * RELAY_DRAIN_MS pass: closing a socket with unread bytes resets the connection, and the reset
 * discards what the kernel had not yet sent, such as the last frames the local side wrote (a routed
 * exec's exit status while its client is still pushing input, sessions_route). */
#define RELAY_DRAIN_MS 2000u

enum relay_state { RELAY_HANDSHAKE, RELAY_PIPE, RELAY_DRAIN, RELAY_DEAD };

/* What certificate verification learnt of the peer's certificate (SSL app data, written by
 * verify_cb on the thread running the handshake). */
struct verify_note {
    char fp[PKI_FINGERPRINT_SIZE]; /* the leaf's fingerprint once its chain verified, "" before */
    bool revoked;                  /* it is in the revoked set: the handshake was refused */
};

struct relay {
    struct queue link;
    enum relay_state state;
    bool inbound;
    struct in_addr source; /* inbound: the peer's address */
    int tls_fd;
    int plain_fd; /* backend socket (inbound) or our end of the socketpair (outbound) */
    SSL *ssl;
    uint64_t deadline_ms; /* handshake deadline; RELAY_DRAIN: the drain's */
    char peer[64];
    struct verify_note note; /* the peer's certificate (inbound; outbound: copied after the dial) */
    bool revoked;            /* relay thread: marked for closing, its peer's certificate was revoked */
    /* Bytes read from the plain side, waiting to be written into TLS, and the reverse. */
    uint8_t p2t[RELAY_BUF];
    size_t p2t_off, p2t_len;
    uint8_t t2p[RELAY_BUF];
    size_t t2p_off, t2p_len;
    bool plain_eof, tls_eof;
    /* What the last attempt was blocked on, for poll. */
    short plain_events, tls_events;
    /* Relay thread: step this pipe on the next pass (new, just past its handshake, or epoll saw
     * one of its fds ready). A pipe not marked is blocked on exactly what its events ask for
     * (step_pipe stops only when each direction waits on an fd), so stepping it would only find
     * EAGAIN. */
    bool step;
    /* Relay thread: the events each fd is registered for in the epoll set (0: not registered). */
    short reg_tls, reg_plain;
};

/* Refusals from one address in the current log window. */
struct refusal_window {
    struct in_addr source;
    uint64_t start_ms; /* 0: unused slot */
    uint64_t unlogged;
};

struct peertls {
    /* The contexts for new connections (under mu): peertls_reload swaps them; every SSL object
     * holds its own reference to the context it was made from, so open connections keep theirs. */
    SSL_CTX *server_ctx;
    SSL_CTX *client_ctx;
    char files[3][4096]; /* the CA bundle, certificate and key peertls_reload reads; [0][0] == 0: none */
    int listen_fd;       /* -1 when dial-only */
    char listen_address[64];
    char backend[128];
    char alt_backend[3][128];
    unsigned char alt_alpn[3][64]; /* wire format: length byte, then the name; [0] == 0: none */
    unsigned handshake_timeout_ms;
    unsigned max_handshakes_per_source;
    unsigned refusal_log_window_ms;
    struct refusal_window refusals[REFUSAL_SOURCES]; /* relay thread only */
    int wake_fd;                                     /* eventfd */
    int ep_fd;                                       /* the relay thread's epoll set */
    uint64_t accept_paused_until; /* relay thread only: out of descriptors, retry accept later */
    pthread_t thread;
    pthread_mutex_t mu; /* guards incoming, stopping, stats */
    struct queue incoming;
    bool stopping;
    struct peertls_stats stats;
    atomic_uint_fast64_t bytes_in, bytes_out; /* the relay thread adds, any thread reads */
    struct queue relays;                      /* relay thread only */
    /* Revocation (under mu): the revoked fingerprints, and whether the relay thread still has to
     * close the connections of newly revoked peers. */
    char (*revoked)[PKI_FINGERPRINT_SIZE];
    unsigned n_revoked;
    bool revoked_dirty;
    char own_fp[PKI_FINGERPRINT_SIZE]; /* this relay's certificate */
    int64_t own_not_after_ms;
    atomic_bool self_revoked;
    struct queue streams; /* peertls_dial_stream's live streams, under streams_mu */
};

/* A direct stream (peertls_dial_stream). Its link and @p are under streams_mu, which outlives every
 * relay: a stream may be closed after its relay stopped (p is then NULL). */
struct tls_stream {
    struct queue link;
    struct peertls *p;
    SSL *ssl;
    int fd;
    struct verify_note note;
    atomic_bool revoked; /* its peer's certificate was revoked: every later call fails */
};

static pthread_mutex_t streams_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------------------------------
 * Setup */

static bool is_revoked_locked(const struct peertls *p, const char *fp)
{
    for (unsigned i = 0; i < p->n_revoked; i++) {
        if (strcmp(p->revoked[i], fp) == 0) {
            return true;
        }
    }
    return false;
}

/* After OpenSSL verified the chain: the leaf must not be revoked. Runs on the thread doing the
 * handshake (the relay thread inbound, the dialer outbound). A revoked leaf fails with
 * X509_V_ERR_CERT_REVOKED, which OpenSSL turns into the certificate_revoked alert to the peer. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    if (ok != 1 || X509_STORE_CTX_get_error_depth(xs) != 0) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct peertls *p = ssl != NULL ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    struct verify_note *note = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    if (p == NULL || cert == NULL || X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    char fp[PKI_FINGERPRINT_SIZE];
    memcpy(fp, "sha256:", 7);
    for (unsigned i = 0; i < n; i++) {
        snprintf(fp + 7 + 2 * i, 3, "%02x", md[i]);
    }
    pthread_mutex_lock(&p->mu);
    bool revoked = is_revoked_locked(p, fp);
    if (revoked) {
        p->stats.revoked_refused++;
    }
    pthread_mutex_unlock(&p->mu);
    if (note != NULL) {
        memcpy(note->fp, fp, sizeof fp);
        note->revoked = revoked;
    }
    if (revoked) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REVOKED);
        return 0;
    }
    return 1;
}

static int load_ctx(SSL_CTX *ctx, const struct peertls_config *cfg, char *errmsg)
{
    BIO *b;
    X509 *cert = NULL, *ca = NULL;
    EVP_PKEY *key = NULL;
    int rv = GERR_INVAL;

    b = BIO_new_mem_buf(cfg->cert_pem, -1);
    cert = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(cfg->key_pem, -1);
    key = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (cert == NULL || key == NULL) {
        sslerr_from_openssl(errmsg, "peer TLS: load certificate or key");
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        sslerr_from_openssl(errmsg, "peer TLS: key does not match the certificate");
        goto out;
    }
    /* The trust bundle: every CA certificate in it (two while the cluster CA rotates). */
    b = BIO_new_mem_buf(cfg->ca_pem, -1);
    unsigned n_ca = 0;
    while (b != NULL && n_ca < PEERTLS_MAX_CAS && (ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca) != 1) {
            BIO_free(b);
            sslerr_from_openssl(errmsg, "peer TLS: load CA");
            goto out;
        }
        X509_free(ca);
        ca = NULL;
        n_ca++;
    }
    BIO_free(b);
    ERR_clear_error(); /* the read that ended the bundle */
    if (n_ca == 0) {
        gerr_set(errmsg, "peer TLS: the CA bundle holds no certificate");
        goto out;
    }
    /* TLS 1.2 exactly: in 1.3 the server judges the client's certificate after the client's
     * handshake has finished, so a dialer holding a foreign certificate would only find out on
     * its first read; in 1.2 the handshake itself fails on both sides. Forward-secret AEAD only. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                     "ECDHE-ECDSA-CHACHA20-POLY1305") != 1) {
        sslerr_from_openssl(errmsg, "peer TLS: cipher list");
        goto out;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    rv = 0;
out:
    X509_free(cert);
    X509_free(ca);
    EVP_PKEY_free(key);
    return rv;
}

static void *relay_main(void *arg);

/* Inbound: the second backend's protocol when the peer offers it; no ALPN otherwise (dqlite). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    struct peertls *p = arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) {
            break;
        }
        for (unsigned k = 0; k < 3; k++) {
            if (p->alt_alpn[k][0] != 0 && n == p->alt_alpn[k][0] &&
                memcmp(in + i + 1, p->alt_alpn[k] + 1, n) == 0) {
                *out = in + i + 1;
                *outlen = (unsigned char)n;
                return SSL_TLSEXT_ERR_OK;
            }
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Both contexts for @cfg's identity, and its certificate's fingerprint and expiry. On error
 * nothing is allocated. */
static int make_ctxs(struct peertls *p, const struct peertls_config *cfg, SSL_CTX **server, SSL_CTX **client,
                     char fp[PKI_FINGERPRINT_SIZE], int64_t *not_after_ms, char *errmsg)
{
    int rv;
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (s == NULL || c == NULL) {
        rv = sslerr_from_openssl(errmsg, "peer TLS: create context");
        goto err;
    }
    if ((rv = load_ctx(s, cfg, errmsg)) != 0 || (rv = load_ctx(c, cfg, errmsg)) != 0) {
        goto err;
    }
    SSL_CTX_set_alpn_select_cb(s, alpn_select, p);
    SSL_CTX_set_app_data(s, p);
    SSL_CTX_set_app_data(c, p);
    if ((rv = pki_fingerprint(cfg->cert_pem, fp, errmsg)) != 0 ||
        (rv = pki_not_after_ms(cfg->cert_pem, not_after_ms, errmsg)) != 0) {
        gerr_wrap(errmsg, "peer TLS: this replica's certificate");
        goto err;
    }
    *server = s;
    *client = c;
    return 0;
err:
    SSL_CTX_free(s);
    SSL_CTX_free(c);
    return rv;
}

/* A new reference to the current context (server or client) for an SSL object about to be made. */
static SSL_CTX *ctx_get(struct peertls *p, bool server)
{
    pthread_mutex_lock(&p->mu);
    SSL_CTX *ctx = server ? p->server_ctx : p->client_ctx;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&p->mu);
    return ctx;
}

int peertls_start(const struct peertls_config *cfg, struct peertls **out, char *errmsg)
{
    struct peertls *p = mem_zalloc(sizeof *p);
    struct sockaddr_in sa;
    int rv;

    p->listen_fd = -1;
    p->wake_fd = -1;
    p->ep_fd = -1;
    queue_init(&p->incoming);
    queue_init(&p->relays);
    queue_init(&p->streams);
    p->handshake_timeout_ms = cfg->handshake_timeout_ms != 0 ? cfg->handshake_timeout_ms : 5000;
    p->max_handshakes_per_source = cfg->max_handshakes_per_source != 0 ? cfg->max_handshakes_per_source : 8;
    p->refusal_log_window_ms = cfg->refusal_log_window_ms != 0 ? cfg->refusal_log_window_ms : 10000;
    if (cfg->listen_address != NULL) {
        if (cfg->backend_address == NULL || strlen(cfg->backend_address) >= sizeof p->backend) {
            gerr_set(errmsg, "peer TLS: a listener needs a backend address");
            rv = GERR_INVAL;
            goto err;
        }
        snprintf(p->backend, sizeof p->backend, "%s", cfg->backend_address);
    }
    for (unsigned k = 0; k < 3; k++) {
        const char *alpn = k == 0 ? cfg->alt_alpn : k == 1 ? cfg->alt2_alpn : cfg->alt3_alpn;
        const char *backend = k == 0 ? cfg->alt_backend : k == 1 ? cfg->alt2_backend : cfg->alt3_backend;
        if (alpn == NULL || backend == NULL) {
            continue;
        }
        size_t n = strlen(alpn);
        if (n == 0 || n >= sizeof p->alt_alpn[k] - 1 || strlen(backend) >= sizeof p->alt_backend[k] ||
            (k >= 1 && p->alt_alpn[0][0] == n && memcmp(p->alt_alpn[0] + 1, alpn, n) == 0) ||
            (k == 2 && p->alt_alpn[1][0] == n && memcmp(p->alt_alpn[1] + 1, alpn, n) == 0)) {
            gerr_set(errmsg, "peer TLS: bad %s backend", k == 0 ? "second" : k == 1 ? "third" : "fourth");
            rv = GERR_INVAL;
            goto err;
        }
        p->alt_alpn[k][0] = (unsigned char)n;
        memcpy(p->alt_alpn[k] + 1, alpn, n);
        snprintf(p->alt_backend[k], sizeof p->alt_backend[k], "%s", backend);
    }
    if ((rv = make_ctxs(p, cfg, &p->server_ctx, &p->client_ctx, p->own_fp, &p->own_not_after_ms, errmsg)) !=
        0) {
        goto err;
    }
    if (cfg->listen_address != NULL) {
        if (addr_parse_ipv4(cfg->listen_address, &sa, 1) != 0) {
            gerr_set(errmsg, "peer TLS: listen address %s is not a.b.c.d:port", cfg->listen_address);
            rv = GERR_INVAL;
            goto err;
        }
        p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (p->listen_fd < 0 || setsockopt(p->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(p->listen_fd, 128) != 0) {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "peer TLS: listen on %s: %s", cfg->listen_address, strerror(errno));
            goto err;
        }
        socklen_t len = sizeof sa;
        getsockname(p->listen_fd, (struct sockaddr *)&sa, &len);
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        snprintf(p->listen_address, sizeof p->listen_address, "%s:%u", host, ntohs(sa.sin_port));
    }
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wake_fd < 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "peer TLS: eventfd: %s", strerror(errno));
        goto err;
    }
    p->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &p->wake_fd};
    if (p->ep_fd < 0 || epoll_ctl(p->ep_fd, EPOLL_CTL_ADD, p->wake_fd, &wev) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "peer TLS: epoll: %s", strerror(errno));
        goto err;
    }
    pthread_mutex_init(&p->mu, NULL);
    if (pthread_create(&p->thread, NULL, relay_main, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        gerr_set(errmsg, "peer TLS: cannot start the relay thread");
        rv = GERR_IO;
        goto err;
    }
    *out = p;
    return 0;
err:
    if (p->ep_fd >= 0) {
        close(p->ep_fd);
    }
    if (p->wake_fd >= 0) {
        close(p->wake_fd);
    }
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
    }
    SSL_CTX_free(p->server_ctx);
    SSL_CTX_free(p->client_ctx);
    mem_free(p);
    return rv;
}

int peertls_start_files(const char *ca_file, const char *cert_file, const char *key_file,
                        const char *listen_address, const char *backend_address,
                        const struct peertls_options *opts, struct peertls **out, char *errmsg)
{
    const char *const paths[] = {ca_file, cert_file, key_file};
    char *pem[3] = {NULL, NULL, NULL};
    int rv = 0;
    for (int i = 0; i < 3 && rv == 0; i++) {
        rv = file_read_all(paths[i], 1u << 20, &pem[i], NULL, errmsg);
    }
    if (rv == 0) {
        struct peertls_config cfg = {.ca_pem = pem[0],
                                     .cert_pem = pem[1],
                                     .key_pem = pem[2],
                                     .listen_address = listen_address,
                                     .backend_address = backend_address};
        if (opts != NULL) {
            cfg.handshake_timeout_ms = opts->handshake_timeout_ms;
            cfg.max_handshakes_per_source = opts->max_handshakes_per_source;
            cfg.refusal_log_window_ms = opts->refusal_log_window_ms;
            cfg.alt_alpn = opts->alt_alpn;
            cfg.alt_backend = opts->alt_backend;
            cfg.alt2_alpn = opts->alt2_alpn;
            cfg.alt2_backend = opts->alt2_backend;
            cfg.alt3_alpn = opts->alt3_alpn;
            cfg.alt3_backend = opts->alt3_backend;
        }
        rv = peertls_start(&cfg, out, errmsg);
    }
    if (rv == 0) {
        for (int i = 0; i < 3; i++) {
            snprintf((*out)->files[i], sizeof(*out)->files[i], "%s", paths[i]);
        }
    }
    for (int i = 0; i < 3; i++) {
        mem_free(pem[i]);
    }
    return rv;
}

int peertls_reload_pem(struct peertls *p, const char *ca_pem, const char *cert_pem, const char *key_pem,
                       char *errmsg)
{
    struct peertls_config cfg = {.ca_pem = ca_pem, .cert_pem = cert_pem, .key_pem = key_pem};
    SSL_CTX *s, *c;
    char fp[PKI_FINGERPRINT_SIZE];
    int64_t not_after = 0;
    int rv = make_ctxs(p, &cfg, &s, &c, fp, &not_after, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "reload");
        return rv;
    }
    pthread_mutex_lock(&p->mu);
    SSL_CTX *old_s = p->server_ctx, *old_c = p->client_ctx;
    p->server_ctx = s;
    p->client_ctx = c;
    bool same = strcmp(fp, p->own_fp) == 0;
    memcpy(p->own_fp, fp, sizeof fp);
    p->own_not_after_ms = not_after;
    p->stats.reloads++;
    pthread_mutex_unlock(&p->mu);
    SSL_CTX_free(old_s); /* open connections hold their own references */
    SSL_CTX_free(old_c);
    LOG_INFO("peer TLS: reloaded the identity for new connections (certificate %s%s)", fp,
             same ? ", unchanged" : "");
    return 0;
}

int peertls_reload(struct peertls *p, char *errmsg)
{
    if (p->files[0][0] == '\0') {
        gerr_set(errmsg, "peer TLS: reload: this relay was not started from files");
        return GERR_INVAL;
    }
    char *pem[3] = {NULL, NULL, NULL};
    int rv = 0;
    for (int i = 0; i < 3 && rv == 0; i++) {
        rv = file_read_all(p->files[i], 1u << 20, &pem[i], NULL, errmsg);
    }
    if (rv == 0) {
        rv = peertls_reload_pem(p, pem[0], pem[1], pem[2], errmsg);
    } else {
        gerr_wrap(errmsg, "peer TLS: reload");
    }
    for (int i = 0; i < 3; i++) {
        if (pem[i] != NULL) {
            memset(pem[i], 0, strlen(pem[i]));
        }
        mem_free(pem[i]);
    }
    return rv;
}

int peertls_start_dir(const char *dir, const char *listen_address, const char *backend_address,
                      const struct peertls_options *opts, struct peertls **out, char *errmsg)
{
    char ca[4096], cert[4096], key[4096];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    struct clock *clk = clock_system();
    uint64_t end = clock_mono_ms(clk) + PEERTLS_DIR_RETRY_MS;
    for (;;) {
        int rv = peertls_start_files(ca, cert, key, listen_address, backend_address, opts, out, errmsg);
        if (rv != GERR_INVAL || listen_address != NULL || clock_mono_ms(clk) >= end) {
            return rv;
        }
        clk->sleep_ns(clk, 100u * 1000000u); /* a renewal between the two files: read them again */
    }
}

const char *peertls_listen_address(const struct peertls *p)
{
    return p->listen_address;
}

static void wake(struct peertls *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->wake_fd, &one, sizeof one);
    (void)w;
}

static void relay_free(struct relay *r)
{
    if (r->ssl != NULL) {
        SSL_free(r->ssl);
    }
    if (r->tls_fd >= 0) {
        close(r->tls_fd);
    }
    if (r->plain_fd >= 0) {
        close(r->plain_fd);
    }
    mem_free(r);
}

void peertls_stop(struct peertls *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->thread, NULL);
    pthread_mutex_lock(&streams_mu); /* streams outlive the relay: they stop looking at it */
    while (!queue_empty(&p->streams)) {
        struct queue *q = queue_head(&p->streams);
        queue_remove(q);
        struct tls_stream *st = QUEUE_DATA(q, struct tls_stream, link);
        st->p = NULL;
        queue_init(&st->link);
    }
    pthread_mutex_unlock(&streams_mu);
    /* Dials that raced with stop and were never picked up. */
    while (!queue_empty(&p->incoming)) {
        struct queue *q = queue_head(&p->incoming);
        queue_remove(q);
        relay_free(QUEUE_DATA(q, struct relay, link));
    }
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
    }
    close(p->wake_fd);
    close(p->ep_fd);
    SSL_CTX_free(p->server_ctx);
    SSL_CTX_free(p->client_ctx);
    pthread_mutex_destroy(&p->mu);
    mem_free(p->revoked);
    mem_free(p);
}

/* Like the relay thread for relayed connections: a direct stream to a peer whose certificate is
 * now revoked is shut down (its owner sees an error on its next call) and counted. */
static void streams_close_revoked(struct peertls *p)
{
    pthread_mutex_lock(&streams_mu);
    pthread_mutex_lock(&p->mu);
    struct queue *q;
    QUEUE_FOREACH (q, &p->streams) {
        struct tls_stream *st = QUEUE_DATA(q, struct tls_stream, link);
        if (!atomic_load(&st->revoked) && is_revoked_locked(p, st->note.fp)) {
            atomic_store(&st->revoked, true);
            shutdown(st->fd, SHUT_RDWR);
            p->stats.revoked_closed++;
            LOG_WARN("peer TLS: closed a store connection to %s: its certificate is revoked", st->note.fp);
        }
    }
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&streams_mu);
}

int peertls_set_revoked(struct peertls *p, const char (*fps)[PKI_FINGERPRINT_SIZE], unsigned n, char *errmsg)
{
    if (n > PEERTLS_MAX_REVOKED) {
        gerr_set(errmsg, "peer TLS: %u revoked certificates, over the maximum of %u", n, PEERTLS_MAX_REVOKED);
        return GERR_TOOBIG;
    }
    char(*copy)[PKI_FINGERPRINT_SIZE] = n > 0 ? mem_alloc(sizeof *copy * n) : NULL;
    for (unsigned i = 0; i < n; i++) {
        snprintf(copy[i], sizeof copy[i], "%s", fps[i]);
    }
    unsigned added = 0;
    bool self = false;
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < n; i++) {
        if (!is_revoked_locked(p, copy[i])) {
            /* One line per certificate, but not thousands when a replica starts in a cluster that
             * has revoked many. */
            if (++added <= 8) {
                LOG_WARN("peer TLS: certificate %s is revoked: its connections are closed and refused",
                         copy[i]);
            }
        }
        self = self || strcmp(copy[i], p->own_fp) == 0;
    }
    char own[PKI_FINGERPRINT_SIZE];
    memcpy(own, p->own_fp, sizeof own);
    if (added > 8) {
        LOG_WARN("peer TLS: %u more certificates are revoked", added - 8);
    }
    char(*old)[PKI_FINGERPRINT_SIZE] = p->revoked;
    p->revoked = copy;
    p->n_revoked = n;
    p->stats.revoked_certs = n;
    p->revoked_dirty = p->revoked_dirty || added > 0;
    pthread_mutex_unlock(&p->mu);
    mem_free(old);
    if (self && !atomic_exchange(&p->self_revoked, true)) {
        LOG_ERROR("peer TLS: this replica's own certificate (%s) is revoked: it was removed from the cluster",
                  own);
    }
    if (added > 0) {
        wake(p);
        streams_close_revoked(p);
    }
    return 0;
}

void peertls_own_cert(struct peertls *p, char fp[PKI_FINGERPRINT_SIZE], int64_t *not_after_ms)
{
    pthread_mutex_lock(&p->mu);
    memcpy(fp, p->own_fp, PKI_FINGERPRINT_SIZE);
    *not_after_ms = p->own_not_after_ms;
    pthread_mutex_unlock(&p->mu);
}

bool peertls_self_revoked(struct peertls *p)
{
    return atomic_load(&p->self_revoked);
}

void peertls_get_stats(struct peertls *p, struct peertls_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->stats;
    pthread_mutex_unlock(&p->mu);
    out->bytes_in = atomic_load_explicit(&p->bytes_in, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&p->bytes_out, memory_order_relaxed);
}

static void count(struct peertls *p, uint64_t *field, int delta)
{
    pthread_mutex_lock(&p->mu);
    *field += (uint64_t)(int64_t)delta;
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------------------------------------
 * The relay loop */

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

/* Log a refused inbound connection from @source: the first one per address per window, then
 * only a count, reported with the first refusal after the window. */
static void log_refusal(struct peertls *p, struct in_addr source, const char *peer, const char *why)
{
    uint64_t now = now_ms();
    struct refusal_window *w = NULL, *oldest = &p->refusals[0];
    for (size_t i = 0; i < REFUSAL_SOURCES; i++) {
        struct refusal_window *e = &p->refusals[i];
        if (e->start_ms != 0 && e->source.s_addr == source.s_addr) {
            w = e;
            break;
        }
        if (e->start_ms < oldest->start_ms) {
            oldest = e;
        }
    }
    if (w != NULL && now - w->start_ms < p->refusal_log_window_ms) {
        w->unlogged++;
        return;
    }
    char host[INET_ADDRSTRLEN] = "?";
    if (w == NULL) {
        w = oldest; /* a free slot (start 0) or the least recent window */
        if (w->start_ms != 0 && w->unlogged > 0) {
            inet_ntop(AF_INET, &w->source, host, sizeof host);
            LOG_WARN("peer TLS: refused %llu more connection(s) from %s in the last %llu s",
                     (unsigned long long)w->unlogged, host, (unsigned long long)((now - w->start_ms) / 1000));
        }
    } else if (w->unlogged > 0) {
        inet_ntop(AF_INET, &source, host, sizeof host);
        LOG_WARN("peer TLS: refused %llu more connection(s) from %s in the last %llu s",
                 (unsigned long long)w->unlogged, host, (unsigned long long)((now - w->start_ms) / 1000));
    }
    LOG_WARN("peer TLS: refused %s: %s (further refusals from this address are counted for %u s)", peer, why,
             p->refusal_log_window_ms / 1000);
    w->source = source;
    w->start_ms = now;
    w->unlogged = 0;
}

static void relay_kill(struct peertls *p, struct relay *r, const char *why)
{
    if (r->state == RELAY_HANDSHAKE && r->inbound) {
        log_refusal(p, r->source, r->peer, why);
        count(p, &p->stats.rejected, 1);
    } else if (r->state == RELAY_PIPE) {
        LOG_DEBUG("peer TLS: closed %s: %s", r->peer, why);
        count(p, &p->stats.active, -1);
    }
    r->state = RELAY_DEAD;
}

static const char *ssl_reason(SSL *ssl)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    static _Thread_local char buf[256];
    if (v != X509_V_OK) {
        snprintf(buf, sizeof buf, "certificate verification failed: %s", X509_verify_cert_error_string(v));
    } else if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    } else {
        snprintf(buf, sizeof buf, "TLS handshake failed");
    }
    ERR_clear_error();
    return buf;
}

static int connect_backend(const char *backend)
{
    int fd;
    if (backend[0] == '@') {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        size_t n = strlen(backend);
        if (n > sizeof su.sun_path) {
            return -1;
        }
        memcpy(su.sun_path, backend, n);
        su.sun_path[0] = '\0'; /* abstract namespace */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&su,
                              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) != 0) {
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
    } else {
        struct sockaddr_in sa;
        if (addr_parse_ipv4(backend, &sa, 0) != 0) {
            return -1;
        }
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void step_handshake(struct peertls *p, struct relay *r)
{
    int rc = SSL_do_handshake(r->ssl);
    if (rc == 1) {
        const unsigned char *proto = NULL;
        unsigned int plen = 0;
        SSL_get0_alpn_selected(r->ssl, &proto, &plen);
        const char *backend = p->backend;
        bool tell_peer = false;
        for (unsigned k = 0; k < 3; k++) {
            if (plen > 0 && p->alt_alpn[k][0] == plen && memcmp(proto, p->alt_alpn[k] + 1, plen) == 0) {
                backend = p->alt_backend[k];
                tell_peer = k == 2;
            }
        }
        if (tell_peer) {
            /* The fourth backend learns who is calling: the first bytes it reads are the peer's
             * verified certificate fingerprint (PEERTLS_PEER_HEADER). */
            int hn = snprintf((char *)r->t2p, sizeof r->t2p, PEERTLS_PEER_HEADER "%s\n", r->note.fp);
            r->t2p_off = 0;
            r->t2p_len = (size_t)hn;
        }
        r->plain_fd = connect_backend(backend);
        if (r->plain_fd < 0) {
            LOG_WARN("peer TLS: backend %s unreachable for %s: %s", backend, r->peer, strerror(errno));
            r->state = RELAY_DEAD;
            return;
        }
        r->state = RELAY_PIPE;
        r->step = true;
        count(p, &p->stats.accepted, 1);
        count(p, &p->stats.active, 1);
        LOG_DEBUG("peer TLS: accepted %s", r->peer);
        return;
    }
    switch (SSL_get_error(r->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        r->tls_events = POLLIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        r->tls_events = POLLOUT;
        break;
    default:
        if (r->note.revoked) {
            char why[128];
            ERR_clear_error();
            snprintf(why, sizeof why, "its certificate %s is revoked", r->note.fp);
            relay_kill(p, r, why);
        } else {
            relay_kill(p, r, ssl_reason(r->ssl));
        }
    }
}

/* Move as many bytes as possible in both directions without blocking. */
static void step_pipe(struct peertls *p, struct relay *r)
{
    bool progress = true;
    r->plain_events = r->tls_events = 0;
    while (progress && r->state == RELAY_PIPE) {
        progress = false;
        /* TLS -> plain */
        if (r->t2p_len == 0 && !r->tls_eof) {
            int n = SSL_read(r->ssl, r->t2p, sizeof r->t2p);
            if (n > 0) {
                r->t2p_off = 0;
                r->t2p_len = (size_t)n;
                progress = true;
                atomic_fetch_add_explicit(&p->bytes_in, (uint64_t)n, memory_order_relaxed);
            } else {
                int e = SSL_get_error(r->ssl, n);
                if (e == SSL_ERROR_WANT_READ) {
                    r->tls_events |= POLLIN;
                } else if (e == SSL_ERROR_WANT_WRITE) {
                    r->tls_events |= POLLOUT;
                } else {
                    r->tls_eof = true;
                    ERR_clear_error();
                }
            }
        }
        if (r->t2p_len > 0) {
            ssize_t w = send(r->plain_fd, r->t2p + r->t2p_off, r->t2p_len, MSG_NOSIGNAL);
            if (w > 0) {
                r->t2p_off += (size_t)w;
                r->t2p_len -= (size_t)w;
                progress = true;
            } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                r->plain_events |= POLLOUT;
            } else if (w < 0 && errno == EINTR) {
                progress = true; /* try again: nothing is registered for this direction yet */
            } else if (w < 0) {
                relay_kill(p, r, "local side write failed");
                return;
            }
        }
        /* plain -> TLS */
        if (r->p2t_len == 0 && !r->plain_eof) {
            ssize_t n = recv(r->plain_fd, r->p2t, sizeof r->p2t, 0);
            if (n > 0) {
                r->p2t_off = 0;
                r->p2t_len = (size_t)n;
                progress = true;
            } else if (n == 0) {
                r->plain_eof = true;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                r->plain_events |= POLLIN;
            } else if (errno == EINTR) {
                progress = true; /* try again: nothing is registered for this direction yet */
            } else {
                r->plain_eof = true;
            }
        }
        if (r->p2t_len > 0) {
            int n = SSL_write(r->ssl, r->p2t + r->p2t_off, (int)r->p2t_len);
            if (n > 0) {
                atomic_fetch_add_explicit(&p->bytes_out, (uint64_t)n, memory_order_relaxed);
                r->p2t_off += (size_t)n;
                r->p2t_len -= (size_t)n;
                progress = true;
            } else {
                int e = SSL_get_error(r->ssl, n);
                if (e == SSL_ERROR_WANT_WRITE) {
                    r->tls_events |= POLLOUT;
                } else if (e == SSL_ERROR_WANT_READ) {
                    r->tls_events |= POLLIN;
                } else {
                    /* The peer reset the connection: the TLS session is over both ways, but what
                     * was read from it before still goes to the local side (its last frames), then
                     * the relay closes. */
                    ERR_clear_error();
                    r->tls_eof = true;
                    r->plain_eof = true;
                    r->p2t_len = 0;
                    progress = true;
                }
            }
        }
    }
    /* Either side finished: flush what is pending toward the other, then close; after the local
     * side, drain the peer's (RELAY_DRAIN_MS). */
    if (r->tls_eof && r->t2p_len == 0) {
        if (r->plain_eof) {
            SSL_shutdown(r->ssl);
        }
        relay_kill(p, r, "peer closed");
    } else if (r->plain_eof && r->p2t_len == 0 && !r->tls_eof) {
        SSL_shutdown(r->ssl);
        shutdown(r->tls_fd, SHUT_WR);
        relay_kill(p, r, "local side closed"); /* counted as closed; the socket lingers */
        r->state = RELAY_DRAIN;
        r->deadline_ms = now_ms() + RELAY_DRAIN_MS;
        r->tls_events = POLLIN;
        r->plain_events = 0;
        r->step = true;
    }
}

/* RELAY_DRAIN: read and drop the peer's bytes (raw: their TLS records are never decrypted) until
 * it closes, fails, or the deadline passes. */
static void step_drain(struct peertls *p, struct relay *r)
{
    uint8_t tmp[4096];
    for (;;) {
        ssize_t n = recv(r->tls_fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            r->tls_events = POLLIN;
            return;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        relay_kill(p, r, "drained");
        return;
    }
}

/* Inbound connections from @source still in their handshake. */
static unsigned handshakes_from(struct peertls *p, struct in_addr source)
{
    unsigned n = 0;
    struct queue *q;
    QUEUE_FOREACH (q, &p->relays) {
        struct relay *r = QUEUE_DATA(q, struct relay, link);
        n += r->inbound && r->state == RELAY_HANDSHAKE && r->source.s_addr == source.s_addr;
    }
    return n;
}

static void accept_all(struct peertls *p)
{
    for (;;) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int fd = accept4(p->listen_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection keeps the listener readable: polling it now would spin. */
                LOG_WARN("peer TLS: cannot accept (%s); pausing the listener for %d ms", strerror(errno),
                         ACCEPT_PAUSE_MS);
                p->accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
            }
            return; /* EAGAIN, or a transient error: poll will tell us again */
        }
        char host[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        char peer[64];
        snprintf(peer, sizeof peer, "%s:%u", host, ntohs(sa.sin_port));
        if (handshakes_from(p, sa.sin_addr) >= p->max_handshakes_per_source) {
            /* Closed before any TLS state exists; the listener keeps draining, so a peer's dial
             * behind this flood is accepted at once. */
            close(fd);
            log_refusal(p, sa.sin_addr, peer, "too many handshakes from this address");
            count(p, &p->stats.rejected, 1);
            continue;
        }
        struct relay *r = mem_zalloc(sizeof *r);
        snprintf(r->peer, sizeof r->peer, "%s", peer);
        r->source = sa.sin_addr;
        r->inbound = true;
        r->tls_fd = fd;
        r->plain_fd = -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        SSL_CTX *ctx = ctx_get(p, true);
        r->ssl = SSL_new(ctx);
        SSL_CTX_free(ctx); /* the SSL object holds its own reference */
        if (r->ssl == NULL || SSL_set_fd(r->ssl, fd) != 1) {
            ERR_clear_error();
            relay_free(r);
            continue;
        }
        SSL_set_app_data(r->ssl, &r->note);
        SSL_set_accept_state(r->ssl);
        r->state = RELAY_HANDSHAKE;
        r->deadline_ms = now_ms() + p->handshake_timeout_ms;
        queue_insert_tail(&p->relays, &r->link);
        step_handshake(p, r);
    }
}

/* Close the connections marked revoked (relay thread). */
static void close_revoked(struct peertls *p)
{
    struct queue *q;
    QUEUE_FOREACH (q, &p->relays) {
        struct relay *r = QUEUE_DATA(q, struct relay, link);
        if (r->revoked && r->state != RELAY_DEAD) {
            LOG_WARN("peer TLS: closing the connection %s %s: its certificate %s was revoked",
                     r->inbound ? "from" : "to", r->peer, r->note.fp);
            count(p, &p->stats.revoked_closed, 1);
            relay_kill(p, r, "certificate revoked");
        }
    }
}

/* Make @fd's registration in the epoll set @want (0: none); *@reg holds what it is now. poll's
 * POLLIN/POLLOUT are epoll's EPOLLIN/EPOLLOUT. false (logged, *@reg unchanged) when epoll_ctl
 * failed: the fd would never be watched, so the caller closes its connection. */
static bool ep_sync(struct peertls *p, int fd, short *reg, short want, void *ptr)
{
    if (fd < 0 || *reg == want) {
        return true;
    }
    struct epoll_event ev = {.events =
                                 (uint32_t)((want & POLLIN ? EPOLLIN : 0) | (want & POLLOUT ? EPOLLOUT : 0)),
                             .data.ptr = ptr};
    int op = *reg == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(p->ep_fd, op, fd, &ev) != 0 && !(op == EPOLL_CTL_DEL && errno == ENOENT)) {
        LOG_ERROR("peer TLS: epoll_ctl: %s", strerror(errno));
        return false;
    }
    *reg = want;
    return true;
}

static void relay_unregister(struct peertls *p, struct relay *r)
{
    ep_sync(p, r->tls_fd, &r->reg_tls, 0, r);
    ep_sync(p, r->plain_fd, &r->reg_plain, 0, r);
}

#define EP_EVENTS 64

static void *relay_main(void *arg)
{
    struct peertls *p = arg;
    struct epoll_event evs[EP_EVENTS];
    short reg_listen = 0;

    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool stopping = p->stopping;
        queue_move(&p->incoming, &p->relays);
        bool dirty = p->revoked_dirty;
        p->revoked_dirty = false;
        if (dirty) {
            struct queue *q;
            QUEUE_FOREACH (q, &p->relays) {
                struct relay *r = QUEUE_DATA(q, struct relay, link);
                r->revoked = r->note.fp[0] != '\0' && is_revoked_locked(p, r->note.fp);
            }
        }
        pthread_mutex_unlock(&p->mu);
        if (stopping) {
            break;
        }
        if (dirty) {
            close_revoked(p);
        }

        /* Drive the connections that may move, drop the dead, and register what each waits for. */
        int timeout = -1;
        uint64_t now = now_ms();
        unsigned handshaking = 0, live = 0;
        struct queue *q = p->relays.next;
        while (q != &p->relays) {
            struct relay *r = QUEUE_DATA(q, struct relay, link);
            q = q->next;
            if (r->state == RELAY_HANDSHAKE && now >= r->deadline_ms) {
                relay_kill(p, r, "handshake timed out");
            }
            if (r->state == RELAY_PIPE && r->step) {
                r->step = false;
                step_pipe(p, r);
            }
            if (r->state == RELAY_DRAIN && r->step) {
                r->step = false;
                step_drain(p, r);
            }
            if (r->state == RELAY_DRAIN && now >= r->deadline_ms) {
                relay_kill(p, r, "drain timed out");
            }
            if (r->state == RELAY_DEAD || live >= MAX_RELAYS) {
                relay_unregister(p, r);
                queue_remove(&r->link);
                relay_free(r);
                continue;
            }
            live++;
            if (r->state == RELAY_HANDSHAKE || r->state == RELAY_DRAIN) {
                int left = (int)(r->deadline_ms - now);
                timeout = timeout < 0 || left < timeout ? left : timeout;
                handshaking += r->state == RELAY_HANDSHAKE;
            }
            if (!ep_sync(p, r->tls_fd, &r->reg_tls, r->tls_events, r) ||
                !ep_sync(p, r->plain_fd, &r->reg_plain, r->state == RELAY_PIPE ? r->plain_events : 0, r)) {
                relay_kill(p, r, "cannot watch its sockets");
                r->step = false;
                timeout = 0; /* the next pass, at once, frees it */
            }
        }

        if (p->listen_fd >= 0) {
            bool paused = now < p->accept_paused_until || handshaking >= MAX_HANDSHAKES;
            if (now < p->accept_paused_until) {
                int left = (int)(p->accept_paused_until - now);
                timeout = timeout < 0 || left < timeout ? left : timeout;
            }
            if (!ep_sync(p, p->listen_fd, &reg_listen, paused ? 0 : POLLIN, &p->listen_fd)) {
                p->accept_paused_until = now + ACCEPT_PAUSE_MS; /* try again then */
                timeout = timeout < 0 || ACCEPT_PAUSE_MS < timeout ? ACCEPT_PAUSE_MS : timeout;
            }
        }
        int ready = epoll_wait(p->ep_fd, evs, EP_EVENTS, timeout);
        if (ready < 0 && errno != EINTR) {
            LOG_ERROR("peer TLS: epoll_wait: %s", strerror(errno));
            break;
        }
        /* No relay is freed between the wait and here, so every pointer is live. */
        for (int i = 0; i < ready; i++) {
            void *who = evs[i].data.ptr;
            if (who == &p->wake_fd) {
                uint64_t v;
                ssize_t rd = read(p->wake_fd, &v, sizeof v);
                (void)rd;
            } else if (who == &p->listen_fd) {
                accept_all(p);
            } else {
                struct relay *r = who;
                if (r->state == RELAY_HANDSHAKE) {
                    step_handshake(p, r);
                } else {
                    r->step = true; /* stepped at the top of the next iteration */
                }
            }
        }
    }

    while (!queue_empty(&p->relays)) {
        struct queue *q = queue_head(&p->relays);
        queue_remove(q);
        relay_free(QUEUE_DATA(q, struct relay, link));
    }
    pthread_mutex_lock(&p->mu);
    p->stats.active = 0;
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------
 * Dialing */

static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            return GERR_TIMEOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n > 0) {
            return 0;
        }
        if (n < 0 && errno != EINTR) {
            return gerr_from_errno(errno);
        }
    }
}

int peertls_dial(struct peertls *p, const char *address, unsigned timeout_ms, int *fd, char *errmsg)
{
    return peertls_dial_alpn(p, address, NULL, timeout_ms, fd, errmsg);
}

/* The TCP connection and the handshake of a dial, on the caller's thread: 0 with *@tcp_out and
 * *@ssl_out (the caller's) and @note filled, or an error (counted as a failed dial). */
static int dial_handshake(struct peertls *p, const char *address, const char *alpn, unsigned timeout_ms,
                          int *tcp_out, SSL **ssl_out, struct verify_note *note_out, char *errmsg)
{
    struct sockaddr_in sa;
    uint64_t deadline = now_ms() + timeout_ms;
    int rv;

    if (address == NULL || addr_parse_ipv4(address, &sa, 0) != 0) {
        gerr_set(errmsg, "peer TLS: dial %s: not an a.b.c.d:port address",
                 address != NULL ? address : "(null)");
        return GERR_INVAL;
    }
    pthread_mutex_lock(&p->mu);
    bool stopping = p->stopping;
    pthread_mutex_unlock(&p->mu);
    if (stopping) {
        gerr_set(errmsg, "peer TLS: stopped");
        return GERR_CLOSED;
    }
    int tcp = -1;
    rv = store_conn_tcp_dial(NULL, address, timeout_ms, &tcp, errmsg); /* non-blocking, TCP_NODELAY */
    if (rv != 0) {
        gerr_wrap(errmsg, "peer TLS: dial %s", address);
        goto err_count;
    }
    SSL_CTX *ctx = ctx_get(p, false);
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL object holds its own reference */
    if (ssl == NULL || SSL_set_fd(ssl, tcp) != 1) {
        rv = sslerr_from_openssl(errmsg, "peer TLS: dial");
        SSL_free(ssl);
        close(tcp);
        goto err_count;
    }
    struct verify_note note = {.fp = ""};
    SSL_set_app_data(ssl, &note);
    SSL_set_connect_state(ssl);
    if (alpn != NULL) {
        unsigned char wire[64];
        size_t an = strlen(alpn);
        if (an == 0 || an >= sizeof wire - 1) {
            SSL_free(ssl);
            close(tcp);
            gerr_set(errmsg, "peer TLS: bad ALPN %s", alpn);
            rv = GERR_INVAL;
            goto err_count;
        }
        wire[0] = (unsigned char)an;
        memcpy(wire + 1, alpn, an);
        SSL_set_alpn_protos(ssl, wire, (unsigned)(an + 1));
    }
    for (;;) {
        int rc = SSL_do_handshake(ssl);
        if (rc == 1) {
            break;
        }
        int e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            rv = wait_fd(tcp, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (rv == 0) {
                continue;
            }
            gerr_set(errmsg, "peer TLS: dial %s: handshake: %s", address, gerr_str(rv));
        } else if (note.revoked) {
            ERR_clear_error();
            gerr_set(errmsg, "peer TLS: dial %s: the peer's certificate %s is revoked", address, note.fp);
            rv = GERR_PERM;
        } else {
            /* A peer whose certificate verified (note.fp set) told us ours is revoked: this replica
             * was removed. Before its certificate verified, anyone could send that alert. */
            if (note.fp[0] != '\0' &&
                ERR_GET_REASON(ERR_peek_error()) == SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED &&
                !atomic_exchange(&p->self_revoked, true)) {
                LOG_ERROR(
                    "peer TLS: %s refused this replica's certificate as revoked: it was removed from the "
                    "cluster",
                    address);
            }
            gerr_set(errmsg, "peer TLS: dial %s: %s", address, ssl_reason(ssl));
            rv = GERR_PERM;
        }
        SSL_free(ssl);
        close(tcp);
        goto err_count;
    }
    if (alpn != NULL) {
        const unsigned char *proto = NULL;
        unsigned int plen = 0;
        SSL_get0_alpn_selected(ssl, &proto, &plen);
        if (plen != strlen(alpn) || memcmp(proto, alpn, plen) != 0) {
            gerr_set(errmsg, "peer TLS: dial %s: the peer does not accept %s", address, alpn);
            SSL_free(ssl);
            close(tcp);
            rv = GERR_REFUSED;
            goto err_count;
        }
    }
    *tcp_out = tcp;
    *ssl_out = ssl;
    *note_out = note;
    return 0;

err_count:
    count(p, &p->stats.dial_failed, 1);
    return rv;
}

int peertls_dial_alpn(struct peertls *p, const char *address, const char *alpn, unsigned timeout_ms, int *fd,
                      char *errmsg)
{
    int sv[2] = {-1, -1};
    int tcp = -1;
    SSL *ssl = NULL;
    struct verify_note note;
    *fd = -1;
    int rv = dial_handshake(p, address, alpn, timeout_ms, &tcp, &ssl, &note, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "peer TLS: socketpair: %s", strerror(errno));
        SSL_free(ssl);
        close(tcp);
        goto err_count;
    }
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    struct relay *r = mem_zalloc(sizeof *r);
    snprintf(r->peer, sizeof r->peer, "%s", address);
    r->tls_fd = tcp;
    r->plain_fd = sv[1];
    r->ssl = ssl;
    r->note = note;
    SSL_set_app_data(ssl, &r->note);
    r->state = RELAY_PIPE;
    r->step = true; /* the handshake may have left application bytes in the SSL's buffer */
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        relay_free(r);
        close(sv[0]);
        gerr_set(errmsg, "peer TLS: stopped");
        return GERR_CLOSED;
    }
    if (is_revoked_locked(p, r->note.fp)) { /* revoked while the handshake ran */
        p->stats.revoked_refused++;
        p->stats.dial_failed++;
        pthread_mutex_unlock(&p->mu);
        gerr_set(errmsg, "peer TLS: dial %s: the peer's certificate %s is revoked", address, r->note.fp);
        relay_free(r);
        close(sv[0]);
        return GERR_PERM;
    }
    queue_insert_tail(&p->incoming, &r->link);
    p->stats.dialed++;
    p->stats.active++;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    *fd = sv[0];
    return 0;

err_count:
    count(p, &p->stats.dial_failed, 1);
    return rv;
}

int peertls_store_dial(void *relay, const char *address, unsigned timeout_ms, int *fd, char *errmsg)
{
    return peertls_dial(relay, address, timeout_ms, fd, errmsg);
}

/* ------------------------------------------------------------------------------------------------
 * Direct streams */

static long stream_fail(struct tls_stream *st, int rc, short *want, char *errmsg, const char *what)
{
    int e = SSL_get_error(st->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        return -1;
    }
    *want = 0;
    if (atomic_load(&st->revoked)) {
        gerr_set(errmsg, "peer TLS: the peer's certificate %s was revoked", st->note.fp);
    } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
        gerr_set(errmsg, "peer TLS: %s: %s", what, strerror(errno));
    } else {
        gerr_set(errmsg, "peer TLS: %s: %s", what, ssl_reason(st->ssl));
    }
    ERR_clear_error();
    return -1;
}

static long stream_send(void *s, const uint8_t *buf, size_t n, short *want, char *errmsg)
{
    struct tls_stream *st = s;
    if (atomic_load(&st->revoked)) {
        *want = 0;
        gerr_set(errmsg, "peer TLS: the peer's certificate %s was revoked", st->note.fp);
        return -1;
    }
    errno = 0;
    int rc = SSL_write(st->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    return rc > 0 ? rc : stream_fail(st, rc, want, errmsg, "write");
}

static long stream_recv(void *s, uint8_t *buf, size_t n, short *want, char *errmsg)
{
    struct tls_stream *st = s;
    if (atomic_load(&st->revoked)) {
        *want = 0;
        gerr_set(errmsg, "peer TLS: the peer's certificate %s was revoked", st->note.fp);
        return -1;
    }
    errno = 0;
    int rc = SSL_read(st->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (rc > 0) {
        return rc;
    }
    if (SSL_get_error(st->ssl, rc) == SSL_ERROR_ZERO_RETURN) {
        return 0; /* the peer's close_notify */
    }
    return stream_fail(st, rc, want, errmsg, "read");
}

static void stream_close(void *s)
{
    struct tls_stream *st = s;
    pthread_mutex_lock(&streams_mu);
    if (st->p != NULL) {
        queue_remove(&st->link);
    }
    pthread_mutex_unlock(&streams_mu);
    SSL_free(st->ssl); /* no close_notify: the store protocol has no half-close to announce */
    close(st->fd);
    mem_free(st);
}

int peertls_dial_stream(void *relay, const char *address, unsigned timeout_ms, int *fd,
                        struct store_stream *out, char *errmsg)
{
    struct peertls *p = relay;
    int tcp = -1;
    SSL *ssl = NULL;
    struct verify_note note;
    int rv = dial_handshake(p, address, NULL, timeout_ms, &tcp, &ssl, &note, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct tls_stream *st = mem_zalloc(sizeof *st);
    st->ssl = ssl;
    st->fd = tcp;
    st->note = note;
    SSL_set_app_data(ssl, &st->note);
    pthread_mutex_lock(&streams_mu);
    pthread_mutex_lock(&p->mu);
    bool stopping = p->stopping, revoked = is_revoked_locked(p, note.fp);
    if (!stopping && !revoked) {
        st->p = p;
        queue_insert_tail(&p->streams, &st->link);
        p->stats.dialed++;
    } else if (revoked) { /* revoked while the handshake ran */
        p->stats.revoked_refused++;
        p->stats.dial_failed++;
    }
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&streams_mu);
    if (stopping || revoked) {
        if (revoked) {
            gerr_set(errmsg, "peer TLS: dial %s: the peer's certificate %s is revoked", address, note.fp);
        } else {
            gerr_set(errmsg, "peer TLS: stopped");
        }
        stream_close(st);
        return revoked ? GERR_PERM : GERR_CLOSED;
    }
    *fd = tcp;
    *out = (struct store_stream){.s = st, .send = stream_send, .recv = stream_recv, .close = stream_close};
    return 0;
}
