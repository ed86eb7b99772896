/* Making a replica part of a cluster: `gantryd init` (a new cluster, or one restored from a
 * backup) and the client side of joining (the Cluster API's Join, then Raft's ADD/ASSIGN at the
 * next start of the replica runtime).
 *
 * A restore reads and checks the whole backup (a sealed one is decrypted, in memory, and every
 * record authenticated) before it creates anything in the data dir.
 *
 * Both write the data directory laid out in raft/identity.h, identity.json last, so a data dir
 * with identity.json is complete. A failure part-way leaves a partial directory and says so: the
 * operator removes it and runs the command again (init refuses a non-empty directory).
 *
 * Everything blocks; run from gantryd's main thread before serving. Errors: GERR_EXISTS (the data
 * dir is not empty), GERR_INVAL (bad options, a malformed token or backup, a sealed backup without
 * its key), GERR_PERM (a join was refused: bad token, or the member's certificate does not match
 * the token; a sealed backup under another key, corrupted or tampered with, or a key file others
 * may read),  GERR_UNAVAILABLE (no
 * member answered the join before the timeout), and the store's and files' errors, each with a
 * message in @errmsg. */
#ifndef GANTRY_SERVER_BOOTSTRAP_H
#define GANTRY_SERVER_BOOTSTRAP_H

#include "api/auth/apikey.h"
#include "server/config.h"

struct bootstrap_init_opts {
    const char *ca_cert_file; /* use this CA instead of generating one (with ca_key_file) */
    const char *ca_key_file;
    const char *join_token_file; /* register this pre-shared join token ... */
    unsigned join_token_uses;    /* ... for this many joins (default 1) ... */
    unsigned join_token_ttl_s;   /* ... valid this long (default 24 h) */
    const char *restore_from;    /* a backup archive: start from its data instead of a fresh database */
    const char *backup_key_file; /* restore only: the key of a sealed (encrypted) backup (store/sealed.h) */
    const char
        *secrets_dir; /* restore only: the old cluster's <data_dir>/secrets, so its API keys keep working */
    bool keep_cluster_id; /* restore only: keep the cluster id the backup's data holds (default: a new one) */
};

/* Initialise @cfg->data_dir as replica 1 of a new cluster. On success @admin_key holds a new
 * Platform Admin API key to show once (empty when a restore kept the old secrets and so the old
 * keys). The node is started and stopped inside. */
int bootstrap_init(const struct config *cfg, const struct bootstrap_init_opts *o,
                   char admin_key[APIKEY_LEN + 1], char *errmsg);

/* The peer address this replica advertises (peer_advertise_address, or peer_address). */
const char *bootstrap_peer_address(const struct config *cfg);

/* The failure domain this replica advertises to dqlite, and so to every member's roles planner:
 * failure_domain without its top bit (a hashed name may set it; config refuses integers with it),
 * with ROLES_STANDBY_SITE (raft/roles.h) set when standby_site is on. */
uint64_t bootstrap_failure_domain(const struct config *cfg);

/* Join through the members in @cfg->join with @cfg->join_token: send a CSR (the key stays here),
 * get a certificate, the CA certificate and the API-key pepper (never the CA key), write the data
 * dir, and record the members' peer addresses in <data_dir>/join-peers for the replica runtime's
 * Raft join. Retries unreachable members for up to @timeout_ms. */
int bootstrap_join(const struct config *cfg, unsigned timeout_ms, char *errmsg);

/* The pending Raft join: the comma-separated peers in <data_dir>/join-peers, or "" if none. */
int bootstrap_pending_join(const char *data_dir, char *out, size_t len, char *errmsg);
/* The Raft join finished: remove the marker, keeping its peers as <data_dir>/peers when that
 * file does not exist yet (a restart's membership check asks them). */
void bootstrap_join_done(const char *data_dir);

#endif
