/* Renewing this replica's peer certificate before it expires (docs/security.md, "Certificate
 * renewal").
 *
 * Replica certificates are valid PKI_CERT_DAYS (825). gantryd calls certrenew_at_start before its
 * relay and API server load <data_dir>/tls: when fewer than @renew_days are left, it issues a new
 * key and certificate with the same names, signed by the cluster CA this replica holds
 * (raft/identity.h, secrets/), and installs them. It does not renew while the process runs: the
 * relay and the API server read the files only at start, so a replica is renewed by restarting it
 * (gantry_cert_days_left tells when; docs/operations.md).
 *
 * Installing is crash-safe: the new key and certificate are first written (fsynced) as
 * tls/key.pem.next and tls/cert.pem.next, then installed with identity_tls_save, then the .next
 * files are removed; a start that finds both .next files (a crash part-way) installs them first.
 *
 * A replica without the CA key (one that joined: raft/identity.h) cannot sign its own renewal: it
 * logs a warning, keeps its certificate and returns 0 with *renewed false.
 *
 * The new certificate is recorded in member_certs by the member itself when it starts
 * (raft/certrevoke.h), so removing the member revokes both the old and the new one. */
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
int certrenew_at_start(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                       int64_t now_ms, bool *renewed, int64_t *not_after_ms, char *errmsg);

#endif
