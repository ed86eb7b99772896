/* `gantryd rotate-provider-key`. See rotate_key.h. */
#include "server/rotate_key.h"

#include <stdio.h>
#include <string.h>

#include "api/services/keyring.h"
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
static unsigned peer_addresses(const struct config *cfg, char *list, size_t len, const char **out,
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
    unsigned n = peer_addresses(cfg, list, sizeof list, addrs, STORE_MAX_ADDRESSES);
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
