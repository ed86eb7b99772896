/* A replica's data directory and the cluster identity kept in it.
 *
 *   <data_dir>/identity.json   {"version":1,"cluster_id":..,"gateway_id":..,"replica_id":..,
 *                               "created_at_ms":..}; written last by init/join/restore, so its
 *                               presence means "this replica belongs to a cluster"
 *   <data_dir>/secrets/        0700, the cluster-wide secrets:
 *       ca.pem                 the cluster CA's certificate (every replica)
 *       ca-key.pem             the CA's private key: only on replicas made by `gantryd init` or
 *                              `restore` (the *CA holders*); a replica that joined never receives
 *                              it (docs/security.md, "Cluster secrets"), so this file is absent
 *       pepper                 32 random bytes, the API-key HMAC pepper (api/auth/apikey.h), on
 *                              every replica
 *   <data_dir>/tls/            0700, this replica's TLS material (raft/peertls.h reads it):
 *       ca.pem, cert.pem, key.pem, api.pem (cert.pem followed by ca.pem: the chain the API
 *       serves, so a joiner can pin the CA by fingerprint)
 *   <data_dir>/store/          dqlite's data
 *
 * Files are written to a temporary name, fsynced and renamed; secrets are 0600. Errors: GERR_IO,
 * GERR_PERM, GERR_NOTFOUND (a file is missing), GERR_INVAL (a file does not parse), with the path
 * in @errmsg. */
#ifndef GANTRY_RAFT_IDENTITY_H
#define GANTRY_RAFT_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "raft/pki.h"

#define IDENTITY_PEPPER_SIZE 32u

struct identity {
    char cluster_id[40]; /* UUID */
    char gateway_id[32];
    uint64_t replica_id;
    int64_t created_at_ms;
};

/* The cluster-wide secrets (heap strings owned by the struct; identity_secrets_free). */
struct identity_secrets {
    char *ca_pem;
    char *ca_key_pem; /* NULL on a replica that does not hold the CA key (one that joined) */
    uint8_t pepper[IDENTITY_PEPPER_SIZE];
};

/* Paths inside @data_dir ("<data_dir>/<rel>") into @out. */
void identity_path(const char *data_dir, const char *rel, char *out, size_t out_len);

/* True if <data_dir>/identity.json exists. */
bool identity_exists(const char *data_dir);

/* True if @data_dir is missing or empty (safe to initialise). */
bool identity_dir_empty(const char *data_dir);

int identity_load(const char *data_dir, struct identity *out, char *errmsg);
int identity_save(const char *data_dir, const struct identity *id, char *errmsg);

/* Create @data_dir and its subdirectories (0700). */
int identity_make_dirs(const char *data_dir, char *errmsg);

/* Load secrets/: ca.pem and pepper are required; a missing ca-key.pem leaves @out->ca_key_pem NULL
 * (a replica that joined). A ca-key.pem must be ca.pem's key, or else secrets/ca-next.pem's (a CA
 * rotation stopped after writing the new key: @out->ca_pem is then ca-next.pem); otherwise
 * GERR_PERM naming both files. @out is all NULL on any error. */
int identity_secrets_load(const char *data_dir, struct identity_secrets *out, char *errmsg);
/* Save secrets/; ca-key.pem only when @s->ca_key_pem is not NULL, and before ca.pem. */
int identity_secrets_save(const char *data_dir, const struct identity_secrets *s, char *errmsg);
void identity_secrets_free(struct identity_secrets *s);

/* Make this replica a CA holder: check that @ca_key_pem is the private key of the CA in
 * <data_dir>/secrets/ca.pem (by signing a throwaway certificate with it and verifying that against
 * ca.pem), then write it as secrets/ca-key.pem (0600). Errors, with nothing written: GERR_PERM (the
 * key is not that CA's, or does not parse), GERR_NOTFOUND/GERR_IO (ca.pem), and the write's. */
int identity_install_ca_key(const char *data_dir, const char *ca_key_pem, char *errmsg);
/* The same check, writing nothing. */
int identity_check_ca_key(const char *data_dir, const char *ca_key_pem, char *errmsg);

/* This replica's TLS files: the certificate and key, with the CA, into <data_dir>/tls. */
int identity_tls_save(const char *data_dir, const char *ca_pem, const char *cert_pem, const char *key_pem,
                      char *errmsg);

/* Write @len bytes atomically to @path with @mode. */
int identity_write_file(const char *path, const void *data, size_t len, unsigned mode, char *errmsg);

#endif
