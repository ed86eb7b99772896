/* Renewing this replica's peer certificate before it expires (docs/security.md, "Certificate
 * renewal").
 *
 * Replica certificates are valid PKI_CERT_DAYS (825). gantryd calls certrenew_at_start before its
 * relay and API server load <data_dir>/tls, then certrenew_run once a minute after start and every
 * hour (server/renewer.h): when fewer than @renew_days are left it gets a new key and certificate
 * with the same names and installs them, and gantryd then reloads the relay and the API server
 * (peertls_reload, grpc_server_reload_tls) so new connections use them; open ones keep the old.
 *
 * Who signs: a replica holding the cluster CA key (raft/identity.h, secrets/) signs its own
 * renewal. One without it (a replica that joined) makes a new key and a CSR and hands them to
 * @sign, which asks a holder over the peer channel (server/renewer.h); the holder signs with the
 * names of the certificate the replica presented, never names of the requester's choosing. At
 * start (certrenew_at_start) there is no peer channel yet: a replica without the key logs and
 * waits for certrenew_run.
 *
 * Installing is crash-safe: the new key and certificate are first written (fsynced) as
 * tls/key.pem.next and tls/cert.pem.next, then installed with identity_tls_save, then the .next
 * files are removed; a start that finds both .next files (a crash part-way) installs them first.
 * A new certificate, from a holder or signed locally, is checked before anything is written: it
 * must verify against tls/ca.pem and match the new key (GERR_INVAL otherwise).
 *
 * The new certificate is recorded in member_certs (raft/certrevoke.h: by the holder that signed
 * it, and by the member's revocation sync once its relay presents it), so removing the member
 * revokes both the old and the new one. */
#ifndef GANTRY_RAFT_CERTRENEW_H
#define GANTRY_RAFT_CERTRENEW_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"
#include "raft/identity.h"

/* Finish an interrupted install, then renew when fewer than @renew_days days are left at @now_ms.
 * *@renewed says whether it did; *@not_after_ms is the expiry of the certificate now installed.
 * Errors (nothing is changed on any of them): GERR_NOTFOUND/GERR_IO (the files), GERR_INVAL (an
 * unreadable certificate), the PKI's. */
/* Asks a CA holder to sign @csr_pem for the holder of @cert_pem (this replica's current
 * certificate); on 0, *@cert_out is the new certificate (mem_free). Any error is passed back. */
typedef int (*certrenew_sign_fn)(void *arg, const char *csr_pem, const char *cert_pem, char **cert_out,
                                 char *errmsg);

/* Renew when fewer than @renew_days days are left at @now_ms, or always with @force: sign locally
 * with @secrets->ca_key_pem, or, without it, through @sign (NULL: log that it cannot and return 0
 * with *@renewed false). *@renewed says whether new files are installed (the caller reloads);
 * *@not_after_ms is the expiry of the certificate installed now. Errors (the installed pair is
 * whole on every one): GERR_NOTFOUND/GERR_IO (the files), GERR_INVAL (an unreadable certificate,
 * or a new certificate that does not verify against tls/ca.pem or match the key), @sign's, the PKI's. Not
 * thread-safe against itself: one caller at a time per data directory. */
int certrenew_run(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                  int64_t now_ms, bool force, certrenew_sign_fn sign, void *sign_arg, bool *renewed,
                  int64_t *not_after_ms, char *errmsg);

/* The lock certrenew_run holds while it reads and replaces the files of tls/: hold it to change
 * them elsewhere in the process (a CA rotation installing a bundle: server/carotate.h), and while
 * reloading them (peertls_reload, grpc_server_reload_tls) so a reload never reads half a change.
 * Not recursive. */
void certrenew_files_lock(void);
void certrenew_files_unlock(void);

int certrenew_at_start(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                       int64_t now_ms, bool *renewed, int64_t *not_after_ms, char *errmsg);

#endif
