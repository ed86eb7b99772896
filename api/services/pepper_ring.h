/* Versions of the API-key pepper, so the pepper can be rotated without invalidating the keys
 * hashed under an older one (docs/security.md, "Rotating the API-key pepper").
 *
 * Version 1 is the root pepper every replica keeps in <data_dir>/secrets/pepper (raft/identity.h).
 * Each later version is 32 random bytes in a row of the replicated cluster_meta table,
 *   key   "apikey_pepper/<n>"   (n = 2, 3, ...)
 *   value hex of keyring_seal(KEK, AAD "gantry apikey pepper <n>", the 32 bytes)
 * where KEK is the provider key ring's key-encryption key, derived from the root pepper
 * (api/services/keyring.h). So a rotation reaches every replica with its commit, and the store
 * alone (a backup) reveals no pepper. The current version is the highest one recorded.
 *
 * Each api_keys row records the version that hashed it (pepper_version). Verification uses that
 * version; a key verified under an older version than the current one is rehashed under the
 * current one (api/gate/authn.h), so old versions empty out as keys are used.
 *
 * Thread-safe: a struct pepper_ring caches the versions it opened and the current version number
 * (re-read at most every PEPPER_RING_REFRESH_MS) under a mutex. Errors: GERR_NOTFOUND (no such
 * version), GERR_PERM (a version does not open with this cluster's root pepper: another cluster's
 * store, or tampering), GERR_INVAL (a malformed row), and the store's; messages in @errmsg never
 * carry pepper bytes. */
#ifndef GANTRY_API_SERVICES_PEPPER_RING_H
#define GANTRY_API_SERVICES_PEPPER_RING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/services/keyring.h"
#include "store/client.h"

#define PEPPER_RING_SIZE        32u
#define PEPPER_RING_MAX         64u /* versions 1..64 */
#define PEPPER_RING_META_PREFIX "apikey_pepper/"
#define PEPPER_RING_REFRESH_MS  2000

struct pepper_ring {
    pthread_mutex_t mu;
    struct keyring kr; /* its KEK seals the versions */
    uint8_t pepper[PEPPER_RING_MAX + 1][PEPPER_RING_SIZE];
    bool have[PEPPER_RING_MAX + 1];
    unsigned current;        /* 0: not read yet */
    int64_t current_read_ms; /* when @current was read */
};

/* Version 1 is @root (copied). 0, or keyring_init's errors. */
int pepper_ring_init(struct pepper_ring *r, const uint8_t root[PEPPER_RING_SIZE], char *errmsg);
/* Wipe the peppers. */
void pepper_ring_close(struct pepper_ring *r);

/* The pepper of @version into @out, read through @cl on a cache miss. */
int pepper_ring_get(struct pepper_ring *r, struct store_client *cl, unsigned version,
                    uint8_t out[PEPPER_RING_SIZE], char *errmsg);

/* The current version and its pepper, at @now_ms. */
int pepper_ring_current(struct pepper_ring *r, struct store_client *cl, int64_t now_ms, unsigned *version,
                        uint8_t out[PEPPER_RING_SIZE], char *errmsg);

/* Decode and open one cluster_meta value of @version (@hex, NUL-terminated: what a restored backup
 * or a peer wrote) into @out. GERR_INVAL (malformed), GERR_PERM (does not open). Pure: no store. */
int pepper_ring_open_row(const struct pepper_ring *r, unsigned version, const char *hex,
                         uint8_t out[PEPPER_RING_SIZE], char *errmsg);

/* In @tx: add version current+1 (random), sealed under @r's KEK; its number into *@version.
 * GERR_REFUSED when PEPPER_RING_MAX versions exist. Messages in store_tx_errmsg(tx). */
int pepper_ring_rotate_tx(const struct pepper_ring *r, struct store_tx *tx, int64_t now_ms,
                          unsigned *version);

#endif
