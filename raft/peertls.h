/* Mutually authenticated TLS for all traffic between replicas.
 *
 * dqlite 1.11 speaks plaintext and has no authentication, so each replica binds its dqlite node to
 * a private address only it can reach (an abstract unix socket, which 1.11 accepts only from its
 * own process) and puts this relay in front of it:
 *
 *   peer replica --TLS--> [listen address] peertls --plain--> [backend: the node's private socket]
 *   local dqlite / store client --plain--> socketpair --> peertls --TLS--> [peer's listen address]
 *
 * Both directions require a certificate from the cluster CA on the other end. Chain
 * verification against the cluster CA is the authentication, since only the cluster's CA issues
 * replica certificates. The protocol is TLS 1.2 with ECDHE-ECDSA AEAD suites: in TLS 1.3 a
 * server rejects a client certificate only after the client's handshake is done, so a dialer with
 * a foreign certificate would learn it late; in 1.2 the dial itself fails. A peer with no certificate, or one
 * from another CA, is refused and logged with its address and the reason.
 *
 * One relay thread moves bytes for every connection with non-blocking sockets and poll(2);
 * outgoing handshakes run on the caller's thread (peertls_dial blocks up to its timeout), so a
 * slow peer never stalls the relay. When either side of a relayed connection closes or fails, its
 * pending bytes are flushed and both sides are closed: neither Raft nor the dqlite client needs
 * half-closed connections. */
#ifndef GANTRY_RAFT_PEERTLS_H
#define GANTRY_RAFT_PEERTLS_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"
#include "raft/pki.h"
#include "store/conn.h"

/* At most this many CA certificates in a trust bundle. */
#define PEERTLS_MAX_CAS 8u

struct peertls_config {
    /* The trust bundle (copied): one or more CA certificates (PEM, concatenated); a peer's
     * certificate must chain to one of them. Two while the cluster CA rotates (docs/security.md). */
    const char *ca_pem;
    const char *cert_pem;          /* this replica's certificate (copied) */
    const char *key_pem;           /* and its key (copied) */
    const char *listen_address;    /* "a.b.c.d:port" for inbound peers, or NULL for dial-only */
    const char *backend_address;   /* where inbound connections go: "@abstract-name" or "a.b.c.d:port" */
    unsigned handshake_timeout_ms; /* inbound handshakes; 0 = 5000 */
    /* Inbound connections from one IP address still in their handshake: further ones are closed
     * at accept (anyone can open these without a certificate; without a bound per source, one
     * host filled the global cap of 256 and a legitimate peer's dial waited in the backlog until
     * they timed out). 0 = 8. */
    unsigned max_handshakes_per_source;
    /* Refused inbound connections are logged once per source address per window, then counted:
     * "refused N more connections from ADDR in the last S s" with the next refusal after the
     * window. 0 = 10000. */
    unsigned refusal_log_window_ms;
    /* A second backend, chosen by ALPN: an inbound peer that offers @alt_alpn in its handshake is
     * relayed to @alt_backend (gantryd's forwarded-call server), every other one to the backend
     * (the dqlite node). NULL: no second backend, no ALPN. */
    const char *alt_alpn;
    const char *alt_backend;
    /* A third backend, likewise: a peer offering @alt2_alpn goes to @alt2_backend (gantryd's
     * session server, one routed session per connection). NULL: none. */
    const char *alt2_alpn;
    const char *alt2_backend;
    /* A fourth backend, likewise (gantryd's certificate renewal service), which is also told who
     * the peer is: before any of the peer's bytes it reads one line, PEERTLS_PEER_HEADER followed
     * by the fingerprint of the peer's verified certificate ("sha256:<64 hex>") and "\n". NULL:
     * none. */
    const char *alt3_alpn;
    const char *alt3_backend;
};

#define PEERTLS_PEER_HEADER     "GANTRY-PEER "
#define PEERTLS_PEER_HEADER_MAX (sizeof PEERTLS_PEER_HEADER - 1 + PKI_FINGERPRINT_SIZE)

/* The limits and the second backend of peertls_start_files/_dir (the config fields of the same
 * names). NULL or zero fields: the defaults. */
struct peertls_options {
    unsigned handshake_timeout_ms, max_handshakes_per_source, refusal_log_window_ms;
    const char *alt_alpn, *alt_backend;
    const char *alt2_alpn, *alt2_backend;
    const char *alt3_alpn, *alt3_backend;
};

struct peertls_stats {
    uint64_t accepted;        /* inbound handshakes that succeeded */
    uint64_t rejected;        /* inbound connections refused (bad or no certificate, timeout, not TLS,
                                 over max_handshakes_per_source) */
    uint64_t dialed;          /* outbound connections established */
    uint64_t dial_failed;     /* outbound connections that failed (including a peer with a foreign cert) */
    uint64_t active;          /* connections being relayed now */
    uint64_t bytes_in;        /* bytes received from peers over TLS (decrypted payload) */
    uint64_t bytes_out;       /* bytes sent to peers over TLS (payload before encryption) */
    uint64_t revoked_refused; /* handshakes refused because the peer's certificate is revoked (either
                                 direction; also counted in rejected or dial_failed) */
    uint64_t revoked_closed;  /* relayed connections closed when their peer's certificate was revoked */
    uint64_t revoked_certs;   /* fingerprints in the revoked set now */
    uint64_t reloads;         /* successful peertls_reload/_pem calls */
};

struct peertls;

/* Start the relay thread (and the listener, if configured). On error nothing is left running and
 * @errmsg says why: GERR_INVAL (bad PEM, key not matching the certificate, bad address) or GERR_IO. */
int peertls_start(const struct peertls_config *cfg, struct peertls **out, char *errmsg);

/* The same with the CA, certificate and key read from three PEM files. */
int peertls_start_files(const char *ca_file, const char *cert_file, const char *key_file,
                        const char *listen_address, const char *backend_address,
                        const struct peertls_options *opts, struct peertls **out, char *errmsg);

/* peertls_start with the identity read from @dir: ca.pem, cert.pem and key.pem (each at most
 * 1 MiB). @listen_address and @backend_address as in struct peertls_config (NULL: dial-only).
 * A dial-only relay is what a one-shot command (gantryd rotate-ca, rotate-key) opens on the data
 * dir of a running replica, whose renewal replaces cert.pem and key.pem one after the other: a
 * GERR_INVAL (a key not matching its certificate, read between the two) is tried again for up to
 * PEERTLS_DIR_RETRY_MS before it is returned. */
#define PEERTLS_DIR_RETRY_MS 2000u
int peertls_start_dir(const char *dir, const char *listen_address, const char *backend_address,
                      const struct peertls_options *opts, struct peertls **out, char *errmsg);

/* Close the listener and every connection, join the thread, free everything. */
void peertls_stop(struct peertls *p);

/* The bound listen address (useful with port 0), "" for dial-only. */
const char *peertls_listen_address(const struct peertls *p);

/* Connect to the peer at @address ("a.b.c.d:port") over mutual TLS within @timeout_ms. On success
 * *@fd is a connected, blocking local socket owned by the caller (close it when done): what is
 * written to it reaches the peer over TLS. Thread-safe. Errors: GERR_CLOSED/GERR_TIMEOUT (peer
 * unreachable), GERR_PERM (the peer's certificate is not from the cluster CA, or it refused ours),
 * GERR_INVAL (bad address), GERR_CLOSED after peertls_stop. */
int peertls_dial(struct peertls *p, const char *address, unsigned timeout_ms, int *fd, char *errmsg);

/* peertls_dial asking the peer for the protocol @alpn (its second backend): GERR_REFUSED when the
 * peer does not offer it (an older replica, or one without that backend). */
int peertls_dial_alpn(struct peertls *p, const char *address, const char *alpn, unsigned timeout_ms, int *fd,
                      char *errmsg);

/* peertls_dial with the store's dialer signature (store/conn.h store_dial_fn): pass it with the
 * relay as @arg to store_client_config.dial and store_node_config.dial. */
int peertls_store_dial(void *relay, const char *address, unsigned timeout_ms, int *fd, char *errmsg);

/* A store connection to the peer at @address over mutual TLS that the caller's thread drives
 * itself (store/conn.h store_stream_dial_fn; pass the relay as @relay): no relay thread between a
 * local socket and the peer, so a request and its answer cost two fewer thread wakeups and
 * copies. The handshake and its checks are peertls_dial's; the stream is shut down, like a relayed
 * connection, when the peer's certificate is revoked later (peertls_set_revoked), and may be
 * closed after peertls_stop. Thread-safe; the stream is used by one thread at a time. */
int peertls_dial_stream(void *relay, const char *address, unsigned timeout_ms, int *fd,
                        struct store_stream *out, char *errmsg);

void peertls_get_stats(struct peertls *p, struct peertls_stats *out);

/* Revocation (docs/security.md, "Removing a member revokes its certificate").
 *
 * Replace the set of revoked certificates with the @n fingerprints in @fps ("sha256:<hex of the
 * DER certificate>", as pki_fingerprint writes them; copied). From the return on, every handshake
 * in either direction (dqlite traffic and the second backend alike) with a peer presenting one of
 * them fails in certificate verification: the relay answers with TLS's certificate_revoked alert,
 * logs the refusal with the fingerprint and counts it (revoked_refused). Relayed connections whose
 * peer presented one of them are closed by the relay thread on its next round (revoked_closed),
 * each with a log line. Thread-safe. GERR_TOOBIG (nothing changed) above PEERTLS_MAX_REVOKED. */
#define PEERTLS_MAX_REVOKED 4096u
int peertls_set_revoked(struct peertls *p, const char (*fps)[PKI_FINGERPRINT_SIZE], unsigned n, char *errmsg);

/* Reloading the identity without a restart (docs/security.md, "Certificate renewal").
 *
 * peertls_reload_pem builds new contexts from @ca_pem (a trust bundle, as in peertls_config),
 * @cert_pem and @key_pem (all copied) and swaps them in atomically: every handshake that starts
 * after the return, in either direction, uses the new identity and trust; connections already
 * open (and handshakes under way) keep the context they started with until they close. On error
 * (GERR_INVAL: bad PEM, key not matching, no CA) the relay keeps its current identity untouched.
 * peertls_reload re-reads the three files the relay was started from (peertls_start_files/_dir;
 * GERR_INVAL for a relay started from memory, and the file errors). Thread-safe. */
int peertls_reload_pem(struct peertls *p, const char *ca_pem, const char *cert_pem, const char *key_pem,
                       char *errmsg);
int peertls_reload(struct peertls *p, char *errmsg);

/* This relay's own certificate (the one new handshakes present): its fingerprint and when it
 * expires (Unix ms). Thread-safe. */
void peertls_own_cert(struct peertls *p, char fp[PKI_FINGERPRINT_SIZE], int64_t *not_after_ms);

/* True once this relay's own certificate was found revoked: a peer whose certificate verified
 * against the cluster CA refused it with the certificate_revoked alert, or the fingerprint of this
 * relay's certificate is in the set given to peertls_set_revoked. It never becomes false again:
 * the replica was removed and must stop. Thread-safe. */
bool peertls_self_revoked(struct peertls *p);

#endif
