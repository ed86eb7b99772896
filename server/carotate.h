/* Rotating the cluster CA with an overlap (docs/security.md, "Rotating the cluster CA").
 *
 * The state is three replicated rows of cluster_meta:
 *
 *   ca/signing   the CA that issues certificates now (PEM)
 *   ca/bundle    every CA a certificate may chain to, the signing CA first (PEM)
 *   ca/phase     "overlap" (the old and the new CA are both trusted) or "done"
 *
 * `gantryd rotate-ca begin`, on a CA holder, makes a new CA, keeps its key beside the old one
 * (secrets/ca-next.pem, secrets/ca-next-key.pem: the key never leaves the holder) and writes
 * signing = new, bundle = new + old, phase = overlap. `gantryd rotate-ca finish` refuses until
 * every member's peer port presents a certificate from the new CA, then writes bundle = new,
 * phase = done. `gantryd rotate-ca status` prints the phase and each member's CA.
 *
 * The sync thread on every replica reads the rows every CAROTATE_INTERVAL_MS and applies them:
 * the bundle becomes tls/ca.pem (and the tail of tls/api.pem) and the relay and the API server
 * reload; the CA keeper (raft/cakeeper.h) signs with the signing CA, with whichever key of this
 * replica's secrets/ matches it (none on a replica that joined); a replica whose certificate is
 * not from the signing CA forces its renewal (server/renewer.h), which a holder signs with the new
 * CA. At "done", a holder that has the new key makes it secrets/ca-key.pem (and the new CA
 * secrets/ca.pem; every replica does the latter), and the next-files go. Errors are logged and the
 * round is tried again; nothing is half-applied (each file is replaced atomically, and the
 * reload happens after every file is written). */
#ifndef GANTRY_SERVER_CAROTATE_H
#define GANTRY_SERVER_CAROTATE_H

#include <stdio.h>

#include "lib/err.h"
#include "raft/cakeeper.h"
#include "raft/replica.h"
#include "server/grpc/server.h"
#include "server/renewer.h"
#include "store/client.h"

#define CAROTATE_INTERVAL_MS 1000u

enum carotate_phase { CAROTATE_NONE = 0, CAROTATE_OVERLAP = 1, CAROTATE_DONE = 2 };

struct carotate_sync_config {
    const char *data_dir; /* copied */
    const struct store_client_config *store;
    struct cakeeper *ca;
    struct replica *replica;
    struct grpc_server *api; /* NULL: none */
    struct renewer *renewer; /* NULL: this replica's certificate is the operator's (peer_tls_cert) */
    unsigned interval_ms;    /* 0: CAROTATE_INTERVAL_MS */
};
struct carotate_sync;

/* Start the thread. GERR_INVAL (store config) or GERR_NOMEM; nothing runs on error. */
int carotate_sync_start(const struct carotate_sync_config *cfg, struct carotate_sync **out, char *errmsg);
/* The phase this replica last applied (gantry_ca_rotation_phase). Thread-safe. */
enum carotate_phase carotate_sync_phase(struct carotate_sync *s);
void carotate_sync_stop(struct carotate_sync *s);

struct config;
/* `gantryd rotate-ca begin|finish|status`: prints what it did or found to @out. Returns the exit
 * status (0; 1 with a message on stderr; 2 for an unknown action). */
int carotate_command(const struct config *cfg, const char *action, FILE *out);

#endif
