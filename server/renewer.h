/* Renewing this replica's certificate while it runs (docs/security.md, "Certificate renewal").
 *
 * Two parts, both started by gantryd:
 *
 * The renewer thread checks at start (after RENEWER_FIRST_MS) and then every @interval_ms (an
 * hour) with certrenew_run (raft/certrenew.h): under cert_renew_days left, it renews, then reloads
 * the peer relay and the API server (peertls_reload, grpc_server_reload_tls) so that new
 * connections present the new certificate; open connections keep theirs. A failed check is tried
 * again after @retry_ms. renewer_kick asks for a check now (gantryd does it on SIGHUP, which also
 * reloads the files as they are).
 *
 * Without the CA key, the renewer sends a CSR to the other members in turn over the peer mutual-TLS
 * channel (ALPN CERTRENEW_ALPN, raft/certrenew_wire.h), until one that holds the key signs it.
 *
 * The renewal service answers those requests on a holder, on a private abstract socket that only
 * its relay reaches (SO_PEERCRED: this process). The relay has verified the caller's certificate
 * against the cluster CA and tells the service its fingerprint. The service signs only when the
 * certificate the caller sends is that one, it is on record in member_certs for exactly one
 * member, that member is in the cluster's configuration, and no other certificate of that member
 * was recorded after it (only the newest is renewed: GERR_PERM otherwise, so a superseded key
 * cannot mint certificates; the superseded one is not revoked); the new certificate carries that
 * certificate's names (pki_renew_csr), never the CSR's, and is recorded in member_certs for the
 * member before it is answered, so removing the member revokes it too. Each refusal is logged
 * with its reason. A member without the CA key answers GERR_UNAVAILABLE. */
#ifndef GANTRY_SERVER_RENEWER_H
#define GANTRY_SERVER_RENEWER_H

#include <stdbool.h>

#include "lib/err.h"
#include "raft/cakeeper.h"
#include "raft/identity.h"
#include "raft/replica.h"
#include "server/grpc/server.h"
#include "store/writer.h"

#define RENEWER_INTERVAL_MS (3600u * 1000u)
#define RENEWER_RETRY_MS    (10u * 1000u)
#define RENEWER_FIRST_MS    1000u

struct renewer_config {
    const char *data_dir; /* copied */
    struct cakeeper *ca;  /* who signs (a holder: itself); must outlive the renewer */
    unsigned renew_days;
    struct replica *replica; /* its relay and membership view; must outlive the renewer */
    struct grpc_server *api; /* reloaded after a renewal; NULL: none. Must outlive the renewer */
    unsigned interval_ms;    /* 0: RENEWER_INTERVAL_MS */
    unsigned retry_ms;       /* 0: RENEWER_RETRY_MS */
};

struct renewer;

/* Start the thread. GERR_NOMEM; nothing runs on error. */
int renewer_start(const struct renewer_config *cfg, struct renewer **out, char *errmsg);

/* Reload the relay and the API server from the files now, then check (renewing if due). Any
 * thread; returns at once. */
void renewer_kick(struct renewer *r);

/* Renew now whether due or not, and keep trying every retry_ms until it succeeds (a CA rotation:
 * server/carotate.h). Any thread; returns at once. */
void renewer_force(struct renewer *r);

/* Stop and join the thread (a renewal under way finishes first, bounded by its dial timeouts).
 * NULL is fine. */
void renewer_stop(struct renewer *r);

/* The renewal service. @path is the abstract socket ("@name") the relay's fourth backend names;
 * @writer, @replica and @ca must outlive it. It signs with @ca's signing CA (the new one during a
 * CA rotation) and accepts a caller's certificate from any CA of @ca's bundle. GERR_IO (cannot listen) or
 * GERR_NOMEM. */
struct renew_server;
int renew_server_start(const char *path, struct cakeeper *ca, struct replica *replica,
                       struct store_writer *writer, struct renew_server **out, char *errmsg);
/* Stop accepting, wait for a request being answered, free. NULL is fine. */
void renew_server_stop(struct renew_server *s);

#endif
