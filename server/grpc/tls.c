#include "server/grpc/tls.h"

#include <string.h>

#include <openssl/err.h>

#include "lib/err.h"
#include "lib/sslerr.h"

int tls_err_from_openssl(int ssl_error, char *errmsg)
{
    char scratch[GERR_MSG_SIZE];
    /* The error queue is translated in one place for the whole project (raft/pki.h); this adds
     * what libssl's state machine says about the connection. */
    int rv = sslerr_from_openssl(errmsg != NULL ? errmsg : scratch, "TLS");
    switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:
        return GERR_CLOSED;
    case SSL_ERROR_SSL:
        return rv == GERR_NOMEM ? GERR_NOMEM : GERR_PROTO;
    case SSL_ERROR_SYSCALL:
        return GERR_IO;
    default:
        return rv == GERR_NOMEM ? GERR_NOMEM : GERR_IO;
    }
}

static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    /* @in is a list of length-prefixed protocol names from the client; walk it bounded. */
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int n = in[i];
        if (n == 0 || n > inlen - i - 1) {
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol: gRPC needs h2 */
}

/* A ClientHello without the ALPN extension cannot negotiate h2: refuse it during the handshake
 * with the no_application_protocol alert (RFC 7301 3.2), as gRPC servers do, rather than
 * completing the handshake and closing the connection afterwards. */
static int tls_client_hello(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    const unsigned char *ext = NULL;
    size_t len = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) != 1) {
        *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

int tls_ctx_new(const char *cert_file, const char *key_file, const char *client_ca_file, SSL_CTX **out,
                char *errmsg)
{
    int rv;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        rv = tls_err_from_openssl(0, errmsg);
        gerr_wrap(errmsg, "SSL_CTX_new");
        goto err;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* RFC 7540 9.2.2: HTTP/2 over TLS 1.2 needs ephemeral AEAD suites; OpenSSL's defaults at
     * security level 2 put those first, and TLS 1.3 suites all qualify. */
    SSL_CTX_set_options(ctx,
                        SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_err_from_openssl(0, errmsg);
        gerr_wrap(errmsg, "certificate %s", cert_file);
        rv = GERR_IO;
        goto err_after_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_err_from_openssl(0, errmsg);
        gerr_wrap(errmsg, "private key %s", key_file);
        rv = GERR_IO;
        goto err_after_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_err_from_openssl(0, errmsg);
        gerr_wrap(errmsg, "private key %s does not match certificate %s", key_file, cert_file);
        rv = GERR_INVAL;
        goto err_after_ctx;
    }
    if (client_ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, client_ca_file, NULL) != 1) {
            tls_err_from_openssl(0, errmsg);
            gerr_wrap(errmsg, "client CA %s", client_ca_file);
            rv = GERR_IO;
            goto err_after_ctx;
        }
        /* Ask for a certificate, verify it if sent, accept clients without one: authorization
         * (later issues) decides what an unauthenticated caller may do. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    SSL_CTX_set_client_hello_cb(ctx, tls_client_hello, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    *out = ctx;
    return 0;

err_after_ctx:
    SSL_CTX_free(ctx);
err:
    return rv;
}

void tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int tls_session_init(struct tls_session *t, SSL_CTX *ctx, char *errmsg)
{
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    if (t->ssl == NULL) {
        return tls_err_from_openssl(0, errmsg);
    }
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        t->ssl = NULL;
        return tls_err_from_openssl(0, errmsg);
    }
    /* An empty memory BIO reports "retry" instead of EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return 0;
}

void tls_session_close(struct tls_session *t)
{
    if (t->ssl != NULL) {
        SSL_free(t->ssl); /* frees both BIOs */
        t->ssl = NULL;
    }
}

int tls_session_feed(struct tls_session *t, const void *data, size_t len, char *errmsg)
{
    if (len > 0 && BIO_write(t->rbio, data, (int)len) != (int)len) {
        return tls_err_from_openssl(0, errmsg);
    }
    if (t->established) {
        return 0;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        const unsigned char *alpn = NULL;
        unsigned int alpn_len = 0;
        SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
        if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
            gerr_set(errmsg, "client did not negotiate ALPN h2");
            return GERR_PROTO;
        }
        t->established = true;
        return 0;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return 0;
    }
    int rv = tls_err_from_openssl(e, errmsg);
    gerr_wrap(errmsg, "TLS handshake");
    return rv;
}

long tls_session_read(struct tls_session *t, void *data, size_t len, char *errmsg)
{
    ERR_clear_error();
    int n = SSL_read(t->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0) {
        return n;
    }
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return 0;
    }
    return -(long)tls_err_from_openssl(e, errmsg);
}

int tls_session_write(struct tls_session *t, const void *data, size_t len, char *errmsg)
{
    const unsigned char *p = data;
    while (len > 0) {
        ERR_clear_error();
        int chunk = len > (1u << 20) ? (1 << 20) : (int)len;
        int n = SSL_write(t->ssl, p, chunk);
        if (n <= 0) {
            return tls_err_from_openssl(SSL_get_error(t->ssl, n), errmsg);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void tls_session_pending_out(struct tls_session *t, struct buf *out)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(t->wbio)) > 0) {
        uint8_t *dst = buf_reserve(out, pending);
        int n = BIO_read(t->wbio, dst, (int)pending);
        if (n <= 0) {
            break;
        }
        out->len += (size_t)n;
    }
}

X509 *tls_session_peer_cert(struct tls_session *t)
{
    if (t->ssl == NULL || SSL_get_verify_result(t->ssl) != X509_V_OK) {
        return NULL;
    }
    return SSL_get0_peer_certificate(t->ssl);
}
