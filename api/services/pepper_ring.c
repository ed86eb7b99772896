/* Versions of the API-key pepper (api/services/pepper_ring.h). */
#include "api/services/pepper_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/buf.h"
#include "lib/rand.h"

#define AAD_PREFIX "gantry apikey pepper "
#define SEALED_LEN (KEYRING_SEAL_OVERHEAD + PEPPER_RING_SIZE)

int pepper_ring_init(struct pepper_ring *r, const uint8_t root[PEPPER_RING_SIZE], char *errmsg)
{
    memset(r, 0, sizeof *r);
    int rv = keyring_init(&r->kr, root, PEPPER_RING_SIZE, errmsg);
    if (rv != 0) {
        return rv;
    }
    pthread_mutex_init(&r->mu, NULL);
    memcpy(r->pepper[1], root, PEPPER_RING_SIZE);
    r->have[1] = true;
    return 0;
}

void pepper_ring_close(struct pepper_ring *r)
{
    keyring_close(&r->kr);
    OPENSSL_cleanse(r->pepper, sizeof r->pepper);
    pthread_mutex_destroy(&r->mu);
}

/* "apikey_pepper/<n>" -> n (2..PEPPER_RING_MAX), or 0. */
static unsigned version_of(const char *key)
{
    size_t p = strlen(PEPPER_RING_META_PREFIX);
    if (strncmp(key, PEPPER_RING_META_PREFIX, p) != 0 || key[p] < '1' || key[p] > '9' ||
        strlen(key + p) > 3) {
        return 0;
    }
    char *end = NULL;
    unsigned long n = strtoul(key + p, &end, 10);
    return *end == '\0' && n >= 2 && n <= PEPPER_RING_MAX ? (unsigned)n : 0;
}

static struct keyring_key kek_of(const struct pepper_ring *r)
{
    struct keyring_key k = {.id = "kek"};
    memcpy(k.key, r->kr.kek, sizeof k.key);
    return k;
}

/* A lowercase hex digit's value, or -1 (the rows are written in lowercase). */
static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int pepper_ring_open_row(const struct pepper_ring *r, unsigned version, const char *hex,
                         uint8_t out[PEPPER_RING_SIZE], char *errmsg)
{
    uint8_t sealed[SEALED_LEN];
    if (strlen(hex) != 2 * SEALED_LEN) {
        gerr_set(errmsg, "API-key pepper version %u: its record is malformed", version);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < SEALED_LEN; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            gerr_set(errmsg, "API-key pepper version %u: its record is malformed", version);
            return GERR_INVAL;
        }
        sealed[i] = (uint8_t)(hi << 4 | lo);
    }
    char aad[48];
    snprintf(aad, sizeof aad, AAD_PREFIX "%u", version);
    struct keyring_key kek = kek_of(r);
    struct buf plain;
    buf_init(&plain);
    char err[GERR_MSG_SIZE];
    int rv = keyring_open(&kek, aad, strlen(aad), sealed, sizeof sealed, &plain, err);
    keyring_key_wipe(&kek);
    if (rv == 0 && plain.len == PEPPER_RING_SIZE) {
        memcpy(out, plain.data, PEPPER_RING_SIZE);
    } else {
        gerr_set(errmsg,
                 "API-key pepper version %u does not open with this cluster's root pepper (a store restored "
                 "without --secrets, or tampering)",
                 version);
        rv = GERR_PERM;
    }
    keyring_buf_wipe(&plain);
    return rv;
}

int pepper_ring_get(struct pepper_ring *r, struct store_client *cl, unsigned version,
                    uint8_t out[PEPPER_RING_SIZE], char *errmsg)
{
    if (version < 1 || version > PEPPER_RING_MAX) {
        gerr_set(errmsg, "no API-key pepper version %u", version);
        return GERR_NOTFOUND;
    }
    pthread_mutex_lock(&r->mu);
    bool have = r->have[version];
    if (have) {
        memcpy(out, r->pepper[version], PEPPER_RING_SIZE);
    }
    pthread_mutex_unlock(&r->mu);
    if (have) {
        return 0;
    }
    char key[48];
    snprintf(key, sizeof key, PEPPER_RING_META_PREFIX "%u", version);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(key)};
    int rv = store_client_query(cl, "SELECT value FROM cluster_meta WHERE key = ?", p, 1, &rows);
    if (rv != 0) {
        gerr_set(errmsg, "%s", cl->errmsg);
    } else if (rows.n_rows != 1 || proto_rows_at(&rows, 0, 0)->type != PROTO_TEXT) {
        gerr_set(errmsg, "no API-key pepper version %u", version);
        rv = GERR_NOTFOUND;
    } else {
        rv = pepper_ring_open_row(r, version, proto_rows_at(&rows, 0, 0)->u.b.s, out, errmsg);
    }
    proto_rows_close(&rows);
    if (rv == 0) {
        pthread_mutex_lock(&r->mu);
        memcpy(r->pepper[version], out, PEPPER_RING_SIZE);
        r->have[version] = true;
        pthread_mutex_unlock(&r->mu);
    }
    return rv;
}

/* The highest version recorded in @rows' first column (1 when none). */
static unsigned highest(const struct proto_rows *rows)
{
    unsigned best = 1;
    for (size_t i = 0; i < rows->n_rows; i++) {
        const struct proto_value *k = proto_rows_at(rows, i, 0);
        unsigned v = k->type == PROTO_TEXT ? version_of(k->u.b.s) : 0;
        best = v > best ? v : best;
    }
    return best;
}

#define LIST_SQL                                                                                             \
    "SELECT key FROM cluster_meta WHERE key >= '" PEPPER_RING_META_PREFIX "' AND key < 'apikey_pepper0'"

int pepper_ring_current(struct pepper_ring *r, struct store_client *cl, int64_t now_ms, unsigned *version,
                        uint8_t out[PEPPER_RING_SIZE], char *errmsg)
{
    pthread_mutex_lock(&r->mu);
    unsigned cur = r->current;
    bool fresh = cur != 0 && now_ms - r->current_read_ms < PEPPER_RING_REFRESH_MS;
    pthread_mutex_unlock(&r->mu);
    if (!fresh) {
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        int rv = store_client_query(cl, LIST_SQL, NULL, 0, &rows);
        if (rv != 0) {
            gerr_set(errmsg, "%s", cl->errmsg);
            proto_rows_close(&rows);
            return rv;
        }
        cur = highest(&rows);
        proto_rows_close(&rows);
        pthread_mutex_lock(&r->mu);
        r->current = cur;
        r->current_read_ms = now_ms;
        pthread_mutex_unlock(&r->mu);
    }
    *version = cur;
    return pepper_ring_get(r, cl, cur, out, errmsg);
}

int pepper_ring_rotate_tx(const struct pepper_ring *r, struct store_tx *tx, int64_t now_ms, unsigned *version)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_tx_query(tx, LIST_SQL, NULL, 0, &rows);
    unsigned next = rv == 0 ? highest(&rows) + 1 : 0;
    proto_rows_close(&rows);
    if (rv != 0) {
        return rv;
    }
    if (next > PEPPER_RING_MAX) {
        gerr_set(store_tx_errmsg(tx), "the API-key pepper has %u versions already, the most there can be",
                 PEPPER_RING_MAX);
        return GERR_REFUSED;
    }
    uint8_t pepper[PEPPER_RING_SIZE];
    if (rand_bytes(pepper, sizeof pepper) != 0) {
        gerr_set(store_tx_errmsg(tx), "no random bytes for a new API-key pepper");
        return GERR_INTERNAL;
    }
    char aad[48], key[48], hex[2 * SEALED_LEN + 1];
    snprintf(aad, sizeof aad, AAD_PREFIX "%u", next);
    struct keyring_key kek = kek_of(r);
    struct buf sealed;
    buf_init(&sealed);
    rv = keyring_seal(&kek, aad, strlen(aad), pepper, sizeof pepper, &sealed, store_tx_errmsg(tx));
    keyring_key_wipe(&kek);
    OPENSSL_cleanse(pepper, sizeof pepper);
    for (size_t i = 0; rv == 0 && i < sealed.len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", sealed.data[i]);
    }
    buf_close(&sealed);
    if (rv != 0) {
        return rv;
    }
    snprintf(key, sizeof key, PEPPER_RING_META_PREFIX "%u", next);
    struct proto_value p[] = {proto_text(key), proto_text(hex), proto_int(now_ms)};
    rv = store_tx_exec(tx, "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES (?, ?, ?)", p, 3,
                       NULL);
    if (rv == 0) {
        *version = next;
    }
    return rv;
}
