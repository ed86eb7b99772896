/* The provider key ring: the cluster keys that encrypt provider credentials at rest
 * (AES-256-GCM, OpenSSL EVP), each with a key id ("k1", "k2", ...: the number grows with every
 * rotation). The newest key encrypts; every key of the ring still decrypts.
 *
 * Where the keys live. Each key is a row of the replicated cluster_meta table,
 *   key   "provider_key/<id>"
 *   value hex of  nonce (12) || AES-256-GCM(KEK, the 32-byte key) || tag (16),
 *         with AAD "gantry provider key <id>"
 * where KEK = HKDF-SHA256(the API-key pepper, info "gantry provider keyring v1"). The pepper is
 * the cluster-wide secret every replica keeps in <data_dir>/secrets (raft/identity.h): init
 * creates it, Join hands it to every new replica, restore --secrets keeps it. So every replica
 * reads the same ring at the same moment, a rotation reaches every replica with its commit (no
 * key file to copy around, no replica encrypting with a key another lacks), and the store alone
 * (a backup file, the dqlite data on a stolen disk) reveals no key and no credential.
 * The first key is created by the first encryption, inside that transaction, so concurrent
 * first writers on several replicas converge on one k1 (the loser's transaction retries and
 * reads the winner's).
 *
 * Sealed data: 0x01 || nonce (12, random per encryption) || ciphertext || tag (16); the caller's
 * AAD binds it to its place (providers: provider id, namespace, key id), so a sealed value copied
 * to another row, namespace or key id does not open.
 *
 * Errors: GERR_NOTFOUND (no key with that id), GERR_PERM (a sealed value or a ring key does not
 * open: another cluster's secrets, a wrong AAD, or tampering), GERR_INVAL (malformed input),
 * GERR_REFUSED (the ring's newest key does not open with this cluster's secrets: a restore
 * without --secrets; a rotation adds a usable key), GERR_INTERNAL (OpenSSL), and the store's.
 * Messages go to store_tx_errmsg(tx) in *_tx functions, to @errmsg elsewhere, and never carry
 * key or plaintext bytes. Thread-safe: a struct keyring is read-only after keyring_init. */
#ifndef GANTRY_API_SERVICES_KEYRING_H
#define GANTRY_API_SERVICES_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "store/client.h"

#define KEYRING_KEY_SIZE      32u
#define KEYRING_ID_SIZE       16u /* "k" + up to 10 digits + NUL */
#define KEYRING_NONCE_SIZE    12u
#define KEYRING_TAG_SIZE      16u
#define KEYRING_SEAL_OVERHEAD (1u + KEYRING_NONCE_SIZE + KEYRING_TAG_SIZE)
#define KEYRING_META_PREFIX   "provider_key/"

struct keyring {
    uint8_t kek[KEYRING_KEY_SIZE]; /* derived from the pepper; wiped by keyring_close */
};

/* One unwrapped key. Callers wipe it (keyring_key_wipe) once done. */
struct keyring_key {
    char id[KEYRING_ID_SIZE];
    uint8_t key[KEYRING_KEY_SIZE];
};

/* Derive the ring's KEK from @pepper (not kept). 0, GERR_INVAL (empty pepper), GERR_INTERNAL. */
int keyring_init(struct keyring *kr, const uint8_t *pepper, size_t pepper_len, char *errmsg);
void keyring_close(struct keyring *kr);
void keyring_key_wipe(struct keyring_key *k);

/* The newest key, created as "k1" (in @tx) when the ring is empty. */
int keyring_current_tx(const struct keyring *kr, struct store_tx *tx, int64_t now_ms,
                       struct keyring_key *out);

/* The key @id. GERR_NOTFOUND when the ring has no such key. */
int keyring_get_tx(const struct keyring *kr, struct store_tx *tx, const char *id, struct keyring_key *out);

/* Add a new random key, numbered one above the highest in the ring; its id into @id. The caller
 * records the change event and audit record of its transaction. */
int keyring_rotate_tx(const struct keyring *kr, struct store_tx *tx, int64_t now_ms,
                      char id[KEYRING_ID_SIZE]);

/* Encrypt @n bytes of @pt under @k, binding @aad; appends KEYRING_SEAL_OVERHEAD + @n bytes to
 * @out. GERR_INTERNAL only if OpenSSL or the kernel's randomness fails. */
int keyring_seal(const struct keyring_key *k, const void *aad, size_t aad_len, const void *pt, size_t n,
                 struct buf *out, char *errmsg);

/* Decrypt what keyring_seal made; appends the plaintext to @out (wipe it with keyring_buf_wipe).
 * GERR_INVAL (too short or unknown version), GERR_PERM (wrong key or AAD, or tampered). */
int keyring_open(const struct keyring_key *k, const void *aad, size_t aad_len, const void *sealed, size_t n,
                 struct buf *out, char *errmsg);

/* Zero @b's bytes and free them. */
void keyring_buf_wipe(struct buf *b);

#endif
