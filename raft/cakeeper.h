/* The cluster CA material a replica uses while it runs, replaceable while it runs (a CA rotation:
 * docs/security.md, "Rotating the cluster CA").
 *
 *   signing CA   the CA that issues certificates now: its certificate on every replica, its key on
 *                the CA holders (NULL elsewhere); join tokens name its fingerprint
 *   bundle       every CA a peer's certificate may chain to (one, or two during a rotation)
 *
 * Readers get copies, so a swap never frees what a reader holds. Thread-safe. */
#ifndef GANTRY_RAFT_CAKEEPER_H
#define GANTRY_RAFT_CAKEEPER_H

#include <stdbool.h>

#include "lib/err.h"
#include "raft/pki.h"

struct cakeeper;

/* From a replica's secrets at start: @ca_pem signs and is the whole bundle; @ca_key_pem may be
 * NULL. Copied. GERR_INVAL when @ca_pem does not parse. */
int cakeeper_new(const char *ca_pem, const char *ca_key_pem, struct cakeeper **out, char *errmsg);
void cakeeper_free(struct cakeeper *k);

/* Replace everything (copied; @ca_key_pem may be NULL). GERR_INVAL (nothing changed) when
 * @ca_pem or @bundle_pem does not parse. */
int cakeeper_set(struct cakeeper *k, const char *ca_pem, const char *ca_key_pem, const char *bundle_pem,
                 char *errmsg);

/* Copies (mem_free each; *@ca_key_pem is NULL when this replica cannot sign). */
void cakeeper_signer(struct cakeeper *k, char **ca_pem, char **ca_key_pem);
char *cakeeper_bundle(struct cakeeper *k);
bool cakeeper_can_sign(struct cakeeper *k);

/* The signing CA's fingerprint. */
void cakeeper_fingerprint(struct cakeeper *k, char out[PKI_FINGERPRINT_SIZE]);

/* True when @fp is the fingerprint of a CA in the bundle. */
bool cakeeper_trusts(struct cakeeper *k, const char *fp);

#endif
