/* The cluster's own rows in the store (api/services/clusterdb.h). */
#include "api/services/clusterdb.h"
#include "api/services/pepper_ring.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "lib/clock.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "store/events.h"

static int64_t now_wall_ms(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

int join_token_parse(const char *token, struct join_token_parts *out, char *errmsg)
{
    size_t len = token != NULL ? strlen(token) : 0;
    size_t base = 4 + JOIN_TOKEN_ID_HEX + 1 + JOIN_TOKEN_SECRET_HEX;
    memset(out, 0, sizeof *out);
    if ((len != base && len != base + 1 + 64) || strncmp(token, "gjt_", 4) != 0 ||
        token[4 + JOIN_TOKEN_ID_HEX] != '_' || !is_lower_hex(token + 4, JOIN_TOKEN_ID_HEX) ||
        !is_lower_hex(token + 4 + JOIN_TOKEN_ID_HEX + 1, JOIN_TOKEN_SECRET_HEX) ||
        (len > base && (token[base] != '_' || !is_lower_hex(token + base + 1, 64)))) {
        gerr_set(errmsg, "join token: not of the form gjt_<16 hex>_<32 hex>[_<64 hex CA fingerprint>]");
        return GERR_INVAL;
    }
    memcpy(out->id, token + 4, JOIN_TOKEN_ID_HEX);
    memcpy(out->secret, token + 4 + JOIN_TOKEN_ID_HEX + 1, JOIN_TOKEN_SECRET_HEX);
    if (len > base) {
        snprintf(out->ca_fingerprint, sizeof out->ca_fingerprint, "sha256:%.64s", token + base + 1);
    }
    return 0;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

void join_token_generate(const char *ca_fingerprint, char out[JOIN_TOKEN_MAX_LEN + 1],
                         struct join_token_parts *parts)
{
    uint8_t id[JOIN_TOKEN_ID_HEX / 2], secret[JOIN_TOKEN_SECRET_HEX / 2];
    rand_bytes(id, sizeof id);
    rand_bytes(secret, sizeof secret);
    memset(parts, 0, sizeof *parts);
    hex(id, sizeof id, parts->id);
    hex(secret, sizeof secret, parts->secret);
    if (ca_fingerprint != NULL && strncmp(ca_fingerprint, "sha256:", 7) == 0) {
        snprintf(parts->ca_fingerprint, sizeof parts->ca_fingerprint, "%s", ca_fingerprint);
        snprintf(out, JOIN_TOKEN_MAX_LEN + 1, "gjt_%s_%s_%s", parts->id, parts->secret, ca_fingerprint + 7);
    } else {
        snprintf(out, JOIN_TOKEN_MAX_LEN + 1, "gjt_%s_%s", parts->id, parts->secret);
    }
    memset(secret, 0, sizeof secret);
}

static void secret_hash(const char *secret, uint8_t out[SHA256_DIGEST_LENGTH])
{
    SHA256((const unsigned char *)secret, strlen(secret), out);
}

int clusterdb_meta_put_tx(struct store_tx *tx, const char *key, const char *value, int64_t now)
{
    struct proto_value p[] = {proto_text(key), proto_text(value), proto_int(now)};
    return store_tx_exec(
        tx,
        "INSERT INTO cluster_meta (key, value, updated_at_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        p, 3, NULL);
}

static int token_row(struct store_tx *tx, const struct join_token_parts *parts, unsigned uses,
                     int64_t expires, const char *created_by, int64_t now)
{
    uint8_t h[SHA256_DIGEST_LENGTH];
    secret_hash(parts->secret, h);
    struct proto_value p[] = {proto_text(parts->id), proto_blob(h, sizeof h), proto_int(uses),
                              proto_int(expires),    proto_text(created_by),  proto_int(now)};
    return store_tx_exec(
        tx,
        "INSERT INTO join_tokens (id, secret_hash, uses_left, expires_at_ms, created_by, created_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        p, 6, NULL);
}

static int member_upsert(struct store_tx *tx, const struct clusterdb_join *j, int64_t now)
{
    struct proto_value p[] = {proto_int((int64_t)j->replica_id),
                              proto_text(j->replica_name),
                              proto_text(j->peer_address),
                              proto_text(j->api_address),
                              proto_int((int64_t)j->failure_domain),
                              proto_text(j->failure_domain_name != NULL ? j->failure_domain_name : ""),
                              proto_int(now)};
    int rv = store_tx_exec(
        tx,
        "INSERT INTO members (id, name, peer_address, api_address, failure_domain, failure_domain_name, "
        "joined_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
        "peer_address = excluded.peer_address, api_address = excluded.api_address, "
        "failure_domain = excluded.failure_domain, failure_domain_name = excluded.failure_domain_name",
        p, 7, NULL);
    if (rv == 0) {
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, j->replica_id);
        rv = store_event_tx(tx, "Member", "", id, "MODIFIED", NULL);
    }
    return rv;
}

int clusterdb_seed_tx(struct store_tx *tx, void *arg)
{
    const struct clusterdb_seed *s = arg;
    int64_t now = (int64_t)now_wall_ms();
    char nowtext[24];
    snprintf(nowtext, sizeof nowtext, "%" PRId64, now);
    int rv = clusterdb_meta_put_tx(tx, "cluster_id", s->cluster_id, now);
    if (rv == 0) {
        rv = clusterdb_meta_put_tx(tx, "gateway_id", s->gateway_id, now);
    }
    if (rv == 0) {
        rv = clusterdb_meta_put_tx(tx, "ca_pem", s->ca_pem, now);
    }
    if (rv == 0) {
        rv = clusterdb_meta_put_tx(tx, "created_at_ms", nowtext, now);
    }
    if (rv == 0) {
        /* A restored database lists the old cluster's members: this cluster starts with one. */
        struct proto_value p[] = {proto_int((int64_t)s->replica_id)};
        rv = store_tx_exec(tx, "DELETE FROM members WHERE id <> ?", p, 1, NULL);
    }
    if (rv == 0) {
        struct clusterdb_join self = {.replica_id = s->replica_id,
                                      .replica_name = s->replica_name,
                                      .peer_address = s->peer_address,
                                      .api_address = s->api_address,
                                      .failure_domain = s->failure_domain,
                                      .failure_domain_name = s->failure_domain_name};
        rv = member_upsert(tx, &self, now);
    }
    if (rv == 0 && s->default_namespace) {
        char id[37];
        rand_uuid(id);
        struct proto_value p[] = {proto_text(id), proto_int(now), proto_int(now)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO namespaces (id, name, phase, labels, annotations, created_by, resource_version, "
            "created_at_ms, updated_at_ms, deletion_timestamp_ms) "
            "VALUES (?, 'default', 'ACTIVE', '{}', '{}', 'system:bootstrap', 1, ?, ?, 0)",
            p, 3, NULL);
        if (rv == 0) {
            rv = store_event_tx(tx, "Namespace", "default", id, "ADDED", NULL);
        }
    }
    if (rv == 0 && s->admin_name != NULL) {
        /* New secrets (init, or a restore without --secrets): a restored database's API-key pepper
         * versions were sealed under the old root pepper and cannot open; its keys stop working
         * anyway (docs/operations.md). Version 1, this cluster's root pepper, is current again. */
        rv = store_tx_exec(tx,
                           "DELETE FROM cluster_meta WHERE key >= '" PEPPER_RING_META_PREFIX
                           "' AND key < 'apikey_pepper0'",
                           NULL, 0, NULL);
    }
    if (rv == 0 && s->admin_name != NULL) {
        char pid[37], bid[37];
        rand_uuid(pid);
        rand_uuid(bid);
        struct proto_value pp[] = {proto_text(pid), proto_text(s->admin_name), proto_int(now),
                                   proto_int(now)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO principals (id, kind, name, namespace, issuer, subject, display_name, disabled, "
            "labels, created_by, resource_version, created_at_ms, updated_at_ms) "
            "VALUES (?, 'user', ?, '', '', '', 'bootstrap Platform Admin', 0, '{}', 'system:bootstrap', 1, "
            "?, ?)",
            pp, 4, NULL);
        if (rv == 0) {
            struct proto_value bp[] = {proto_text(bid), proto_text(pid), proto_int(now)};
            rv = store_tx_exec(tx,
                               "INSERT INTO role_bindings (id, principal_id, role, namespace, scope, "
                               "created_by, created_at_ms) "
                               "VALUES (?, ?, 'platform_admin', '', '', 'system:bootstrap', ?)",
                               bp, 3, NULL);
        }
        if (rv == 0) {
            struct proto_value kp[] = {proto_text(s->admin_key_id), proto_text(pid),
                                       proto_blob(s->admin_key_hash, APIKEY_HASH_SIZE), proto_int(now)};
            rv = store_tx_exec(
                tx,
                "INSERT INTO api_keys (id, principal_id, name, hash, created_by, created_at_ms, "
                "expires_at_ms, "
                "last_used_ms, revoked_at_ms) VALUES (?, ?, 'bootstrap', ?, 'system:bootstrap', ?, 0, 0, 0)",
                kp, 4, NULL);
        }
        if (rv == 0) {
            rv = store_event_tx(tx, "Principal", "", pid, "ADDED", NULL);
        }
    }
    if (rv == 0 && s->join != NULL) {
        rv = token_row(tx, s->join, s->join_uses, s->join_expires_ms, "system:bootstrap", now);
        if (rv == 0) {
            rv = store_event_tx(tx, "JoinToken", "", s->join->id, "ADDED", NULL);
        }
    }
    if (rv != 0 && store_tx_errmsg(tx)[0] == '\0') {
        gerr_set(store_tx_errmsg(tx), "bootstrap: %s", tx->cl->errmsg);
    }
    return rv;
}

int clusterdb_token_insert_tx(struct store_tx *tx, const struct clusterdb_token_new *t)
{
    /* Long-expired tokens are garbage: drop them on the way. */
    struct proto_value p[] = {proto_int(t->now_ms - 24 * 3600 * 1000)};
    int rv = store_tx_exec(tx, "DELETE FROM join_tokens WHERE expires_at_ms < ?", p, 1, NULL);
    if (rv == 0) {
        rv = token_row(tx, t->parts, t->uses, t->expires_ms, t->created_by, t->now_ms);
    }
    return rv;
}

#define TOKEN_COLS "id, uses_left, expires_at_ms, created_at_ms, created_by"

static void token_from_row(const struct proto_rows *rows, size_t i, struct clusterdb_token *t)
{
    memset(t, 0, sizeof *t);
    const struct proto_value *id = proto_rows_at(rows, i, 0), *by = proto_rows_at(rows, i, 4);
    if (id->type == PROTO_TEXT) {
        snprintf(t->id, sizeof t->id, "%.*s", (int)id->u.b.n, id->u.b.s);
    }
    int64_t left = proto_rows_at(rows, i, 1)->u.i;
    t->uses_left = left > 0 ? (unsigned)left : 0;
    t->expires_ms = proto_rows_at(rows, i, 2)->u.i;
    t->created_ms = proto_rows_at(rows, i, 3)->u.i;
    if (by->type == PROTO_TEXT) {
        snprintf(t->created_by, sizeof t->created_by, "%.*s", (int)by->u.b.n, by->u.b.s);
    }
}

int clusterdb_tokens(struct store_client *cl, const char *after, unsigned limit, struct clusterdb_token **out,
                     unsigned *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(after), proto_int(limit)};
    int rv = store_client_query(cl, "SELECT " TOKEN_COLS " FROM join_tokens WHERE id > ? ORDER BY id LIMIT ?",
                                p, 2, &rows);
    *out = NULL;
    *n = 0;
    if (rv == 0) {
        *out = mem_zalloc(sizeof **out * (rows.n_rows + 1));
        for (size_t i = 0; i < rows.n_rows; i++) {
            token_from_row(&rows, i, &(*out)[i]);
        }
        *n = (unsigned)rows.n_rows;
    }
    proto_rows_close(&rows);
    return rv;
}

int clusterdb_token_revoke_tx(struct store_tx *tx, const char *id, struct clusterdb_token *out)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(id)};
    int rv = store_tx_query(tx, "SELECT " TOKEN_COLS " FROM join_tokens WHERE id = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        gerr_set(store_tx_errmsg(tx),
                 "join token %s does not exist (expired tokens are deleted a day after they expire)", id);
        rv = GERR_NOTFOUND;
    }
    if (rv == 0) {
        token_from_row(&rows, 0, out);
        rv = store_tx_exec(tx, "DELETE FROM join_tokens WHERE id = ?", p, 1, NULL);
    }
    proto_rows_close(&rows);
    return rv;
}

int clusterdb_token_valid(struct store_client *cl, const struct join_token_parts *parts, int64_t now_ms)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(parts->id)};
    int rv = store_client_query(
        cl, "SELECT secret_hash, uses_left, expires_at_ms FROM join_tokens WHERE id = ?", p, 1, &rows);
    if (rv != 0) {
        proto_rows_close(&rows);
        return rv;
    }
    uint8_t h[SHA256_DIGEST_LENGTH];
    secret_hash(parts->secret, h);
    bool ok = rows.n_rows == 1;
    if (ok) {
        const struct proto_value *hv = proto_rows_at(&rows, 0, 0);
        ok = hv->type == PROTO_BLOB && hv->u.b.n == sizeof h && CRYPTO_memcmp(hv->u.b.s, h, sizeof h) == 0 &&
             proto_rows_at(&rows, 0, 1)->u.i > 0 && proto_rows_at(&rows, 0, 2)->u.i > now_ms;
    }
    proto_rows_close(&rows);
    memset(h, 0, sizeof h);
    return ok ? 0 : GERR_PERM;
}

int clusterdb_join_tx(struct store_tx *tx, void *arg)
{
    const struct clusterdb_join *j = arg;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(j->parts->id)};
    int rv = store_tx_query(tx, "SELECT secret_hash, uses_left, expires_at_ms FROM join_tokens WHERE id = ?",
                            p, 1, &rows);
    if (rv != 0) {
        proto_rows_close(&rows);
        return rv;
    }
    uint8_t h[SHA256_DIGEST_LENGTH];
    secret_hash(j->parts->secret, h);
    bool ok = rows.n_rows == 1;
    if (ok) {
        const struct proto_value *hv = proto_rows_at(&rows, 0, 0);
        ok = hv->type == PROTO_BLOB && hv->u.b.n == sizeof h && CRYPTO_memcmp(hv->u.b.s, h, sizeof h) == 0 &&
             proto_rows_at(&rows, 0, 1)->u.i > 0 && proto_rows_at(&rows, 0, 2)->u.i > j->now_ms;
    }
    proto_rows_close(&rows);
    if (!ok) {
        gerr_set(store_tx_errmsg(tx), "the join token is unknown, expired or already used");
        return GERR_PERM;
    }
    /* The id must be new, or this same replica retrying (same peer address). */
    struct proto_value idp[] = {proto_int((int64_t)j->replica_id), proto_text(j->peer_address),
                                proto_text(j->replica_name)};
    int64_t clash = 0;
    rv = store_tx_query_int(
        tx, "SELECT count(*) FROM members WHERE (id = ?1 AND peer_address <> ?2) OR (name = ?3 AND id <> ?1)",
        idp, 3, &clash);
    if (rv == 0 && clash > 0) {
        gerr_set(store_tx_errmsg(tx),
                 "replica id %" PRIu64 " or name \"%s\" already belongs to another member", j->replica_id,
                 j->replica_name);
        return GERR_EXISTS;
    }
    if (rv == 0) {
        rv = store_tx_exec(tx, "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?", p, 1, NULL);
    }
    if (rv == 0) {
        rv = member_upsert(tx, j, j->now_ms);
    }
    return rv;
}

int clusterdb_forget_tx(struct store_tx *tx, void *arg)
{
    const struct clusterdb_forget *f = arg;
    struct proto_value p[] = {proto_int((int64_t)f->id)};
    int rv = store_tx_exec(tx, "DELETE FROM members WHERE id = ?", p, 1, NULL);
    if (rv == 0) {
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, f->id);
        rv = store_event_tx(tx, "Member", "", id, "DELETED", NULL);
    }
    return rv;
}

int clusterdb_member_upsert_tx(struct store_tx *tx, void *arg)
{
    const struct clusterdb_join *j = arg;
    struct proto_value p[] = {proto_int((int64_t)j->replica_id),
                              proto_text(j->replica_name),
                              proto_text(j->peer_address),
                              proto_text(j->api_address),
                              proto_int((int64_t)j->failure_domain),
                              proto_text(j->failure_domain_name != NULL ? j->failure_domain_name : "")};
    int64_t same = 0;
    int rv =
        store_tx_query_int(tx,
                           "SELECT count(*) FROM members WHERE id = ? AND name = ? AND peer_address = ? AND "
                           "api_address = ? AND failure_domain = ? AND failure_domain_name = ?",
                           p, 6, &same);
    if (rv == 0 && same == 0) {
        rv = member_upsert(tx, j, (int64_t)now_wall_ms());
    }
    return rv;
}

int clusterdb_meta_get(struct store_client *cl, const char *key, char *out, size_t len)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(key)};
    int rv = store_client_query(cl, "SELECT value FROM cluster_meta WHERE key = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = GERR_NOTFOUND;
    }
    if (rv == 0) {
        const struct proto_value *v = proto_rows_at(&rows, 0, 0);
        snprintf(out, len, "%.*s", (int)v->u.b.n, v->u.b.s);
    }
    proto_rows_close(&rows);
    return rv;
}

static void copy_text(const struct proto_value *v, char *out, size_t len)
{
    if (v->type == PROTO_TEXT || v->type == PROTO_BLOB) {
        snprintf(out, len, "%.*s", (int)v->u.b.n, v->u.b.s);
    } else {
        out[0] = '\0';
    }
}

int clusterdb_members(struct store_client *cl, struct clusterdb_member **out, unsigned *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_client_query(
        cl, "SELECT id, name, api_address, failure_domain, failure_domain_name FROM members ORDER BY id",
        NULL, 0, &rows);
    *out = NULL;
    *n = 0;
    if (rv == 0) {
        *out = mem_zalloc(sizeof **out * (rows.n_rows + 1));
        for (size_t i = 0; i < rows.n_rows; i++) {
            struct clusterdb_member *m = &(*out)[i];
            m->id = (uint64_t)proto_rows_at(&rows, i, 0)->u.i;
            copy_text(proto_rows_at(&rows, i, 1), m->name, sizeof m->name);
            copy_text(proto_rows_at(&rows, i, 2), m->api_address, sizeof m->api_address);
            m->failure_domain = (uint64_t)proto_rows_at(&rows, i, 3)->u.i;
            copy_text(proto_rows_at(&rows, i, 4), m->failure_domain_name, sizeof m->failure_domain_name);
        }
        *n = (unsigned)rows.n_rows;
    }
    proto_rows_close(&rows);
    return rv;
}
