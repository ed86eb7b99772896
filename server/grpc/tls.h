/* TLS for the API port: an OpenSSL 3 context that offers only ALPN "h2", and per-connection
 * sessions driven through memory BIOs so the transport keeps owning the socket (libuv).
 *
 *   ciphertext from the socket -> tls_session_feed -> tls_session_read (plaintext)
 *   plaintext to send -> tls_session_write -> tls_session_pending_out (ciphertext for the socket)
 */
#ifndef GANTRY_SERVER_GRPC_TLS_H
#define GANTRY_SERVER_GRPC_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "lib/buf.h"

/* OpenSSL failures of a TLS connection as GERR_* codes. @ssl_error is SSL_get_error()'s result
 * (or 0 for non-SSL calls); the error queue is drained into @errmsg (may be NULL) by the project's
 * one queue translator, sslerr_from_openssl (lib/sslerr.h).
 * Returns GERR_NOMEM, GERR_CLOSED (peer closed), GERR_PROTO (handshake or record failure) or
 * GERR_IO. */
int tls_err_from_openssl(int ssl_error, char *errmsg);

/* A server context: TLS 1.2+, certificate chain and key from PEM files, ALPN h2 only: a client
 * offering no ALPN, or not h2, fails the handshake with the no_application_protocol alert. With
 * @client_ca_file, client certificates are requested and verified against it (optional for the
 * client: a call without one simply has no peer certificate). Returns 0 or GERR_IO/GERR_INVAL. */
int tls_ctx_new(const char *cert_file, const char *key_file, const char *client_ca_file, SSL_CTX **out,
                char *errmsg);
void tls_ctx_free(SSL_CTX *ctx);

struct tls_session {
    SSL *ssl;
    BIO *rbio; /* owned by ssl */
    BIO *wbio; /* owned by ssl */
    bool established;
};

int tls_session_init(struct tls_session *t, SSL_CTX *ctx, char *errmsg);
void tls_session_close(struct tls_session *t);

/* Feed ciphertext and drive the handshake. Returns 0 (more input may be needed: check
 * t->established) or an error (handshake failed, or the client did not negotiate h2). */
int tls_session_feed(struct tls_session *t, const void *data, size_t len, char *errmsg);

/* Read decrypted bytes. Returns >0 bytes, 0 when no more are available now, or -GERR_* code. */
long tls_session_read(struct tls_session *t, void *data, size_t len, char *errmsg);

/* Encrypt @len bytes. Returns 0 or an error. */
int tls_session_write(struct tls_session *t, const void *data, size_t len, char *errmsg);

/* Move all ciphertext waiting to be sent into @out. */
void tls_session_pending_out(struct tls_session *t, struct buf *out);

/* The verified peer certificate (borrowed; NULL if none). */
X509 *tls_session_peer_cert(struct tls_session *t);

#endif
