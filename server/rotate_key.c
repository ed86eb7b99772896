/* `gantryd rotate-provider-key`. See rotate_key.h. */
#include "server/rotate_key.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "api/services/keyring.h"
#include "api/services/pepper_ring.h"
#include "api/services/providers_svc.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "raft/identity.h"
#include "raft/peertls.h"
#include "server/bootstrap.h"
#include "server/config.h"
#include "store/client.h"

/* The cluster's peer addresses as this replica knows them: its own, then <data_dir>/peers. */
unsigned rotate_key_peer_addresses(const struct config *cfg, char *list, size_t len, const char **out,
                                   unsigned max)
{
    char p[4096], err[GERR_MSG_SIZE], *text = NULL;
    unsigned n = 0;
    out[n++] = bootstrap_peer_address(cfg);
    identity_path(cfg->data_dir, "peers", p, sizeof p);
    snprintf(list, len, "%s", file_read_all(p, len - 1, &text, NULL, err) == 0 ? text : "");
    mem_free(text);
    for (char *save = NULL, *tok = strtok_r(list, ",\n", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ",\n", &save)) {
        out[n++] = tok;
    }
    return n;
}

static int rotate_run(const struct config *cfg, const struct keyring *ring, struct peertls *relay, FILE *out,
                      char *errmsg)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[4096];
    unsigned n = rotate_key_peer_addresses(cfg, list, sizeof list, addrs, STORE_MAX_ADDRESSES);
    struct store_client_config sc = {
        .addresses = addrs, .n_addresses = n, .dial = peertls_store_dial, .dial_arg = relay};
    struct store_client cl;
    int rv = store_client_init(&cl, &sc);
    int64_t now_ms = (int64_t)clock_system()->wall_ms(clock_system());
    char id[KEYRING_ID_SIZE] = "";
    if (rv == 0) {
        rv = providers_add_key(&cl, ring, now_ms, id, errmsg);
    } else {
        gerr_set(errmsg, "%s", cl.errmsg);
    }
    unsigned done = 0, failed = 0;
    if (rv == 0) {
        fprintf(out, "Added provider key %s; new provider secrets are sealed under it.\n", id);
        rv = providers_reencrypt_all(&cl, ring, now_ms, &done, &failed, errmsg);
    }
    if (rv == 0) {
        fprintf(out, "Re-encrypted %u provider secret(s) under %s.%s\n", done, id,
                failed > 0 ? " Some secrets did not open and stay as they are: see the log." : "");
        rv = failed > 0 ? GERR_PERM : 0;
        if (failed > 0) {
            gerr_set(errmsg, "%u provider secret(s) did not open with the cluster's keys", failed);
        }
    }
    store_client_close(&cl);
    return rv;
}

int rotate_key_command(const struct config *cfg, FILE *out)
{
    char errmsg[GERR_MSG_SIZE] = "", tls[4096];
    struct identity_secrets sec;
    memset(&sec, 0, sizeof sec);
    struct keyring ring;
    struct peertls *relay = NULL;
    int rv = identity_secrets_load(cfg->data_dir, &sec, errmsg);
    if (rv == 0) {
        rv = keyring_init(&ring, sec.pepper, IDENTITY_PEPPER_SIZE, errmsg);
    }
    if (rv == 0) {
        identity_path(cfg->data_dir, "tls", tls, sizeof tls);
        rv =
            cfg->peer_tls_cert[0] != '\0'
                ? peertls_start_files(cfg->peer_tls_ca[0] != '\0' ? cfg->peer_tls_ca : NULL,
                                      cfg->peer_tls_cert, cfg->peer_tls_key, NULL, NULL, NULL, &relay, errmsg)
                : peertls_start_dir(tls, NULL, NULL, NULL, &relay, errmsg);
    }
    if (rv == 0) {
        rv = rotate_run(cfg, &ring, relay, out, errmsg);
        peertls_stop(relay);
    }
    keyring_close(&ring);
    identity_secrets_free(&sec);
    if (rv != 0) {
        fprintf(stderr, "gantryd rotate-provider-key: %s\n", errmsg[0] != '\0' ? errmsg : gerr_str(rv));
        return 1;
    }
    return 0;
}

/* --- gantryd rotate-pepper --- */

static int pepper_rotate_tx(struct store_tx *tx, void *arg)
{
    void **a = arg;
    return pepper_ring_rotate_tx(a[0], tx, (int64_t)clock_system()->wall_ms(clock_system()), a[1]);
}

/* How many API keys (not revoked) each pepper version hashed. */
static int pepper_counts(struct store_client *cl, FILE *out, unsigned current, uint64_t *old, char *errmsg)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(cl,
                                "SELECT pepper_version, count(*) FROM api_keys WHERE revoked_at_ms = 0 "
                                "GROUP BY pepper_version ORDER BY pepper_version",
                                NULL, 0, &rows);
    *old = 0;
    if (rv != 0) {
        gerr_set(errmsg, "%s", cl->errmsg);
    }
    fprintf(out, "API-key pepper: current version %u\n", current);
    for (size_t i = 0; rv == 0 && i < rows.n_rows; i++) {
        int64_t v = proto_rows_at(&rows, i, 0)->u.i, n = proto_rows_at(&rows, i, 1)->u.i;
        fprintf(out, "  version %" PRId64 ": %" PRId64 " key(s)%s\n", v, n,
                v == (int64_t)current ? " (current)" : "");
        if (v != (int64_t)current) {
            *old += (uint64_t)n;
        }
    }
    if (rv == 0) {
        fprintf(out, "%" PRIu64 " key(s) still use an older version; each is rehashed at its next use.\n",
                *old);
    }
    proto_rows_close(&rows);
    return rv;
}

static int pepper_run(const struct config *cfg, struct pepper_ring *ring, struct peertls *relay, bool rotate,
                      FILE *out, char *errmsg)
{
    const char *addrs[STORE_MAX_ADDRESSES];
    char list[4096];
    unsigned n = rotate_key_peer_addresses(cfg, list, sizeof list, addrs, STORE_MAX_ADDRESSES);
    struct store_client_config sc = {
        .addresses = addrs, .n_addresses = n, .dial = peertls_store_dial, .dial_arg = relay};
    struct store_client cl;
    int rv = store_client_init(&cl, &sc);
    if (rv != 0) {
        gerr_set(errmsg, "%s", cl.errmsg);
        return rv;
    }
    unsigned version = 0;
    if (rotate) {
        void *a[] = {ring, &version};
        rv = store_client_tx(&cl, pepper_rotate_tx, a);
        if (rv != 0) {
            gerr_set(errmsg, "%s", cl.errmsg);
        } else {
            fprintf(out,
                    "Added API-key pepper version %u: every replica hashes new API keys with it within "
                    "%d ms, and rehashes an older key under it at the key's next use.\n",
                    version, PEPPER_RING_REFRESH_MS);
        }
    }
    uint8_t pepper[PEPPER_RING_SIZE];
    int64_t now = (int64_t)clock_system()->wall_ms(clock_system());
    if (rv == 0) {
        rv = pepper_ring_current(ring, &cl, now, &version, pepper, errmsg);
    }
    memset(pepper, 0, sizeof pepper);
    uint64_t old = 0;
    if (rv == 0) {
        rv = pepper_counts(&cl, out, version, &old, errmsg);
    }
    store_client_close(&cl);
    return rv;
}

int rotate_pepper_command(const struct config *cfg, bool rotate, FILE *out)
{
    char errmsg[GERR_MSG_SIZE] = "", tls[4096];
    struct identity_secrets sec;
    memset(&sec, 0, sizeof sec);
    struct pepper_ring ring;
    bool ring_ready = false;
    struct peertls *relay = NULL;
    int rv = identity_secrets_load(cfg->data_dir, &sec, errmsg);
    if (rv == 0) {
        rv = pepper_ring_init(&ring, sec.pepper, errmsg);
        ring_ready = rv == 0;
    }
    if (rv == 0) {
        identity_path(cfg->data_dir, "tls", tls, sizeof tls);
        rv =
            cfg->peer_tls_cert[0] != '\0'
                ? peertls_start_files(cfg->peer_tls_ca[0] != '\0' ? cfg->peer_tls_ca : NULL,
                                      cfg->peer_tls_cert, cfg->peer_tls_key, NULL, NULL, NULL, &relay, errmsg)
                : peertls_start_dir(tls, NULL, NULL, NULL, &relay, errmsg);
    }
    if (rv == 0) {
        rv = pepper_run(cfg, &ring, relay, rotate, out, errmsg);
        peertls_stop(relay);
    }
    if (ring_ready) {
        pepper_ring_close(&ring);
    }
    identity_secrets_free(&sec);
    if (rv != 0) {
        fprintf(stderr, "gantryd %s: %s\n", rotate ? "rotate-pepper" : "pepper-status",
                errmsg[0] != '\0' ? errmsg : gerr_str(rv));
        return 1;
    }
    return 0;
}
