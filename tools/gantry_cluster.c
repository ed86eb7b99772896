/* gantry cluster: membership, leadership, health, join tokens, backups and the reconciler lease
 * (the Cluster service, docs/cli.md). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "gantry/v1/cluster.pb-c.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "store/archive.h"
#include "store/sealed.h"
#include "tools/gantry.h"

static const struct gantry_col member_cols[] = {
    {"ID", "id", NULL, false},
    {"NAME", "name", NULL, false},
    {"PEER ADDRESS", "address", NULL, false},
    {"API ADDRESS", "api_address", NULL, false},
    {"ROLE", "role", "MEMBER_ROLE_", false},
    {"REACHABLE", "reachable", NULL, false},
    {"LEADER", "leader", NULL, false},
    {"LAG", "lag_entries", NULL, false},
    {NULL, NULL, NULL, false},
};

static int cmd_members(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("cluster", "members"), argc, argv, 0, 0);
    Gantry__V1__ListMembersRequest req = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
    json_t *doc;
    if (rc != 0 ||
        (rc = gantry_call_json(c, "/gantry.v1.Cluster/ListMembers", &req.base,
                               &gantry__v1__list_members_response__descriptor, "members", &doc)) != 0) {
        return rc;
    }
    /* A lag nobody measured is left out, not shown as 0 (caught up). */
    json_t *ms = json_object_get(doc, "members");
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        if (!json_is_true(json_object_get(m, "lag_known"))) {
            json_object_del(m, "lag_entries");
        }
    }
    gantry_print(c, doc, "members", member_cols);
    json_decref(doc);
    return 0;
}

static int cmd_leader(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("cluster", "leader"), argc, argv, 0, 0);
    Gantry__V1__GetLeaderRequest req = GANTRY__V1__GET_LEADER_REQUEST__INIT;
    json_t *doc;
    if (rc != 0 || (rc = gantry_call_json(c, "/gantry.v1.Cluster/GetLeader", &req.base,
                                          &gantry__v1__get_leader_response__descriptor, NULL, &doc)) != 0) {
        return rc;
    }
    if (c->out == GANTRY_OUT_TABLE) {
        gantry_print(c, json_object_get(doc, "leader"), NULL, member_cols);
    } else {
        gantry_print(c, doc, NULL, NULL);
    }
    json_decref(doc);
    return 0;
}

static int cmd_health(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("cluster", "health"), argc, argv, 0, 0);
    Gantry__V1__GetHealthRequest req = GANTRY__V1__GET_HEALTH_REQUEST__INIT;
    ProtobufCMessage *out;
    if (rc != 0 ||
        (rc = gantry_call(c, "/gantry.v1.Cluster/GetHealth", &req.base,
                          &gantry__v1__cluster_health__descriptor, NULL, NULL, &out, 10000)) != 0) {
        return rc;
    }
    Gantry__V1__ClusterHealth *h = (Gantry__V1__ClusterHealth *)out;
    if (c->out != GANTRY_OUT_TABLE) {
        json_t *doc = gantry_json(out);
        gantry_print(c, doc, NULL, NULL);
        json_decref(doc);
    } else {
        printf("%s: leader %" PRIu64 ", %u members (%u voters, %u reachable; %u standbys), schema %" PRId64
               "/%" PRId64 ", revision %" PRIu64 ", cluster %s, gateway %s\n",
               h->healthy ? "healthy" : "UNHEALTHY", h->leader_id, h->members, h->voters, h->voters_reachable,
               h->standbys, h->schema_version, h->schema_version_wanted, h->revision, h->cluster_id,
               h->gateway_id);
        for (size_t i = 0; i < h->n_problems; i++) {
            printf("  problem: %s\n", h->problems[i]);
        }
    }
    rc = h->healthy ? 0 : GANTRY_EXIT_FAILED;
    protobuf_c_message_free_unpacked(out, NULL);
    return rc;
}

static const struct gantry_col token_cols[] = {
    {"ID", "id", NULL, false},
    {"USES LEFT", "uses", NULL, false},
    {"EXPIRES", "expires_at_ms", NULL, true},
    {"CREATED", "created_at_ms", NULL, true},
    {"CREATED BY", "created_by", NULL, false},
    {NULL, NULL, NULL, false},
};

static int join_token_create(struct cli *c, int argc, char **argv)
{
    Gantry__V1__CreateJoinTokenRequest req = GANTRY__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    uint64_t uses = 0, ttl = 0;
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    /* The server's limits (docs/security.md, join tokens): refused here with the same numbers. */
    if (gantry_u64("--uses", gantry_opt(&argc, argv, "--uses"), 100, &uses) != 0 ||
        gantry_u64("--ttl-s", gantry_opt(&argc, argv, "--ttl-s"), 86400, &ttl) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("cluster", "join-token"), argc, argv, 0, 0);
    req.uses = (uint32_t)uses;
    req.ttl_seconds = (uint32_t)ttl;
    ProtobufCMessage *out;
    if (rc != 0 || (rc = gantry_call(c, "/gantry.v1.Cluster/CreateJoinToken", &req.base,
                                     &gantry__v1__join_token__descriptor, NULL, NULL, &out, 10000)) != 0) {
        return rc;
    }
    Gantry__V1__JoinToken *t = (Gantry__V1__JoinToken *)out;
    if (t->token[0] == '\0') {
        /* A retry (after a replica failed mid-call) got the stored answer, which never holds the
         * secret: the token exists, but nobody can use it. */
        fprintf(stderr,
                "gantry: join token %s was created, but its secret went out only in an answer that was lost\n"
                "  revoke it (`gantry cluster join-token revoke %s`) and create another\n",
                t->id, t->id);
        protobuf_c_message_free_unpacked(out, NULL);
        return GANTRY_EXIT_FAILED;
    }
    if (c->out != GANTRY_OUT_TABLE) {
        json_t *doc = gantry_json(out);
        gantry_print(c, doc, NULL, NULL);
        json_decref(doc);
    } else {
        printf("%s\n", t->token);
    }
    fprintf(stderr,
            "join token %s: %u use(s), expires at %" PRId64 " ms; give it to the new replica as "
            "GANTRY_JOIN_TOKEN or in --join-token-file\n",
            t->id, t->uses, t->expires_at_ms);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* gantry cluster join-token [create] [--uses N] [--ttl-s SECONDS] | list | revoke ID */
static int cmd_join_token(struct cli *c, int argc, char **argv)
{
    const char *sub = argc > 0 && argv[0][0] != '-' ? argv[0] : "create";
    if (strcmp(sub, "list") == 0) {
        int rc = gantry_args(gantry_find("cluster", "join-token"), argc - 1, argv + 1, 0, 0);
        Gantry__V1__ListJoinTokensRequest req = GANTRY__V1__LIST_JOIN_TOKENS_REQUEST__INIT;
        return rc != 0
                   ? rc
                   : gantry_simple(c, "/gantry.v1.Cluster/ListJoinTokens", &req.base,
                                   &gantry__v1__list_join_tokens_response__descriptor, "tokens", token_cols);
    }
    if (strcmp(sub, "revoke") == 0) {
        int rc = gantry_args(gantry_find("cluster", "join-token"), argc - 1, argv + 1, 1, 1);
        if (rc != 0) {
            return rc;
        }
        Gantry__V1__RevokeJoinTokenRequest req = GANTRY__V1__REVOKE_JOIN_TOKEN_REQUEST__INIT;
        char rid[37];
        gantry_request_id(rid);
        req.request_id = rid;
        req.id = argv[1];
        return gantry_simple(c, "/gantry.v1.Cluster/RevokeJoinToken", &req.base,
                             &gantry__v1__join_token__descriptor, NULL, token_cols);
    }
    if (strcmp(sub, "create") == 0 && argc > 0 && strcmp(argv[0], "create") == 0) {
        return join_token_create(c, argc - 1, argv + 1);
    }
    return join_token_create(c, argc, argv);
}

/* TransferLeadershipRequest.catch_up_timeout_ms: the server refuses more. */
#define GANTRY_MAX_CATCH_UP_MS 60000u

static int cmd_transfer(struct cli *c, int argc, char **argv)
{
    Gantry__V1__TransferLeadershipRequest req = GANTRY__V1__TRANSFER_LEADERSHIP_REQUEST__INIT;
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    uint64_t wait_ms = 0;
    if (gantry_u64("--wait-ms", gantry_opt(&argc, argv, "--wait-ms"), GANTRY_MAX_CATCH_UP_MS, &wait_ms) !=
        0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("cluster", "transfer"), argc, argv, 0, 1);
    if (rc != 0 || (argc == 1 && gantry_u64("ID", argv[0], UINT64_MAX, &req.target_id) != 0)) {
        return rc != 0 ? rc : GANTRY_EXIT_USAGE;
    }
    req.catch_up_timeout_ms = (uint32_t)wait_ms;
    /* "member 3 is 25 Raft entries behind the leader" is the answer, whichever replica is asked. */
    c->unavailable_final = true;
    c->call_timeout_ms = (unsigned)(wait_ms != 0 ? wait_ms : 10000) + 20000;
    json_t *doc;
    if ((rc = gantry_call_json(c, "/gantry.v1.Cluster/TransferLeadership", &req.base,
                               &gantry__v1__transfer_leadership_response__descriptor, NULL, &doc)) != 0) {
        return rc;
    }
    if (c->out == GANTRY_OUT_TABLE) {
        gantry_print(c, json_object_get(doc, "leader"), NULL, member_cols);
    } else {
        gantry_print(c, doc, NULL, NULL);
    }
    json_decref(doc);
    return 0;
}

static int cmd_remove(struct cli *c, int argc, char **argv)
{
    Gantry__V1__RemoveMemberRequest req = GANTRY__V1__REMOVE_MEMBER_REQUEST__INIT;
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    req.force = gantry_flag(&argc, argv, "--force");
    int rc = gantry_args(gantry_find("cluster", "remove"), argc, argv, 1, 1);
    if (rc != 0 || gantry_u64("ID", argv[0], UINT64_MAX, &req.id) != 0 || req.id == 0) {
        return GANTRY_EXIT_USAGE;
    }
    return gantry_simple(c, "/gantry.v1.Cluster/RemoveMember", &req.base,
                         &gantry__v1__remove_member_response__descriptor, "members", member_cols);
}

/* --- backups --- */

/* The backup key: --encrypt-key-file / --key-file FILE, else GANTRY_BACKUP_KEY (64 hex digits).
 * Returns 1 with *@key filled, 0 when none is configured, -1 (after saying why) on a bad one. */
static int backup_key(const char *file, uint8_t key[STORE_SEALED_KEY_SIZE])
{
    char errmsg[GERR_MSG_SIZE];
    if (file != NULL) {
        if (store_sealed_key_load(file, key, errmsg) != 0) {
            fprintf(stderr, "gantry: %s\n", errmsg);
            return -1;
        }
        return 1;
    }
    const char *env = getenv(STORE_SEALED_KEY_ENV);
    if (env == NULL || env[0] == '\0') {
        return 0;
    }
    if (strlen(env) != 2 * STORE_SEALED_KEY_SIZE ||
        store_sealed_key_parse((const uint8_t *)env, strlen(env), key, errmsg) != 0) {
        fprintf(stderr, "gantry: %s must hold 64 hex digits (32 bytes)\n", STORE_SEALED_KEY_ENV);
        return -1;
    }
    return 1;
}

static void hex32(const uint8_t d[32], char hex[65])
{
    for (unsigned i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
}

struct backup_ctx {
    FILE *f;
    EVP_MD_CTX *sha;
    uint64_t bytes, revision;
    char want[80];
    bool last;
    /* Sealed backups: the chunks are encrypted as they arrive; the archive is never written. */
    const uint8_t *key;
    struct store_sealed_info meta;
    struct store_sealer *sealer;
    uint64_t written;
    char errmsg[GERR_MSG_SIZE];
};

static int write_sealed(const uint8_t *p, size_t n, void *arg)
{
    struct backup_ctx *b = arg;
    if (fwrite(p, 1, n, b->f) != n) {
        return GERR_IO;
    }
    b->written += n;
    return 0;
}

static int on_chunk(const ProtobufCMessage *msg, void *arg)
{
    struct backup_ctx *b = arg;
    const Gantry__V1__BackupChunk *c = (const Gantry__V1__BackupChunk *)msg;
    if (c->offset != b->bytes || b->last) {
        fprintf(stderr, "gantry: the backup stream is out of order\n");
        return GERR_PROTO;
    }
    if (b->bytes == 0) {
        b->revision = c->revision;
    }
    if (b->key != NULL) {
        int rv = 0;
        if (b->sealer == NULL) {
            b->meta.revision = c->revision;
            rv = store_sealer_new(b->key, &b->meta, write_sealed, b, &b->sealer, b->errmsg);
        }
        if (rv == 0) {
            rv = store_sealer_update(b->sealer, c->data.data, c->data.len, b->errmsg);
        }
        if (rv != 0) {
            fprintf(stderr, "gantry: cannot write the backup file: %s\n", b->errmsg);
            return rv;
        }
    } else if (fwrite(c->data.data, 1, c->data.len, b->f) != c->data.len) {
        fprintf(stderr, "gantry: cannot write the backup file\n");
        return GERR_IO;
    }
    EVP_DigestUpdate(b->sha, c->data.data, c->data.len);
    b->bytes += c->data.len;
    if (c->last) {
        b->last = true;
        snprintf(b->want, sizeof b->want, "%s", c->sha256);
    }
    return 0;
}

/* The sealed header's cluster id and schema version: what the cluster reports just before the
 * backup starts (the Backup stream carries only the revision). */
static int backup_meta(struct cli *c, struct store_sealed_info *meta)
{
    Gantry__V1__GetHealthRequest req = GANTRY__V1__GET_HEALTH_REQUEST__INIT;
    ProtobufCMessage *out;
    int rc = gantry_call(c, "/gantry.v1.Cluster/GetHealth", &req.base,
                         &gantry__v1__cluster_health__descriptor, NULL, NULL, &out, 10000);
    if (rc != 0) {
        return rc;
    }
    Gantry__V1__ClusterHealth *h = (Gantry__V1__ClusterHealth *)out;
    snprintf(meta->cluster_id, sizeof meta->cluster_id, "%s", h->cluster_id);
    meta->schema_version = h->schema_version > 0 ? (uint64_t)h->schema_version : 0;
    protobuf_c_message_free_unpacked(out, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    meta->created_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return 0;
}

static int cmd_backup(struct cli *c, int argc, char **argv)
{
    const char *key_file = gantry_opt(&argc, argv, "--encrypt-key-file");
    int rc = gantry_args(gantry_find("cluster", "backup"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    uint8_t key[STORE_SEALED_KEY_SIZE];
    int have_key = backup_key(key_file, key);
    if (have_key < 0) {
        return GANTRY_EXIT_USAGE;
    }
    struct backup_ctx b = {.key = have_key > 0 ? key : NULL};
    char kid[17] = "";
    if (b.key != NULL) {
        store_sealed_key_id(key, kid);
    }
    if (b.key == NULL) {
        fprintf(stderr,
                "gantry: no backup key (--encrypt-key-file or %s): writing an UNENCRYPTED backup; "
                "see docs/operations.md, \"Backups and restore\"\n",
                STORE_SEALED_KEY_ENV);
    } else if ((rc = backup_meta(c, &b.meta)) != 0) {
        OPENSSL_cleanse(key, sizeof key);
        return rc;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", argv[0]);
    /* 0600 either way: an unencrypted backup holds the cluster's data. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    b.f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (b.f == NULL) {
        fprintf(stderr, "gantry: cannot create %s\n", tmp);
        if (fd >= 0) {
            close(fd);
        }
        OPENSSL_cleanse(key, sizeof key);
        return GANTRY_EXIT_FAILED;
    }
    b.sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(b.sha, EVP_sha256(), NULL);
    Gantry__V1__BackupRequest req = GANTRY__V1__BACKUP_REQUEST__INIT;
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    rc = gantry_call(c, "/gantry.v1.Cluster/Backup", &req.base, &gantry__v1__backup_chunk__descriptor,
                     on_chunk, &b, NULL, 600000);
    uint8_t d[32], sealed_sha[32];
    char hex[65];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(b.sha, d, &dlen);
    EVP_MD_CTX_free(b.sha);
    hex32(d, hex);
    bool sealed_ok = true;
    if (b.sealer != NULL) {
        uint64_t size = 0;
        sealed_ok = rc == 0 && b.last && store_sealer_finish(b.sealer, &size, sealed_sha, b.errmsg) == 0 &&
                    size == b.bytes && memcmp(sealed_sha, d, sizeof d) == 0;
        store_sealer_free(b.sealer);
    }
    OPENSSL_cleanse(key, sizeof key);
    bool closed = fclose(b.f) == 0;
    if (rc == 0 && (!b.last || !closed || !sealed_ok || strcmp(hex, b.want) != 0)) {
        fprintf(stderr,
                "gantry: the backup is incomplete or its checksum does not match; discarded\n  run the "
                "command again\n");
        rc = GANTRY_EXIT_FAILED;
    }
    if (rc != 0) {
        remove(tmp);
        return rc;
    }
    if (rename(tmp, argv[0]) != 0) {
        fprintf(stderr, "gantry: cannot rename %s to %s\n", tmp, argv[0]);
        remove(tmp);
        return GANTRY_EXIT_FAILED;
    }
    printf("backup: %" PRIu64 " bytes at revision %" PRIu64 ", sha256 %s, in %s\n", b.bytes, b.revision, hex,
           argv[0]);
    if (b.key != NULL) {
        printf("encrypted: AES-256-GCM, key id %s, cluster %s, schema %" PRIu64 ", %" PRIu64
               " bytes on disk\n",
               kid, b.meta.cluster_id, b.meta.schema_version, b.written);
    }
    return 0;
}

struct verify_count {
    unsigned files;
};

static int count_file(const char *name, const uint8_t *data, size_t len, void *arg)
{
    (void)name;
    (void)data;
    (void)len;
    ((struct verify_count *)arg)->files++;
    return 0;
}

/* gantry cluster backup-verify FILE [--key-file FILE]: offline, nothing is restored. */
static int cmd_backup_verify(struct cli *c, int argc, char **argv)
{
    const char *key_file = gantry_opt(&argc, argv, "--key-file");
    int rc = gantry_args(gantry_find("cluster", "backup-verify"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    uint8_t key[STORE_SEALED_KEY_SIZE];
    int have_key = backup_key(key_file, key);
    if (have_key < 0) {
        return GANTRY_EXIT_USAGE;
    }
    char errmsg[GERR_MSG_SIZE] = "";
    char *data = NULL;
    size_t len = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (file_read_all(argv[0], (size_t)1 << 34, &data, &len, errmsg) != 0) {
        fprintf(stderr, "gantry: %s\n", errmsg);
        OPENSSL_cleanse(key, sizeof key);
        return GANTRY_EXIT_FAILED;
    }
    struct buf plain;
    buf_init(&plain);
    struct store_sealed_info info;
    struct verify_count vc = {0};
    bool sealed = store_sealed_detect((const uint8_t *)data, len);
    if (sealed) {
        rc = store_sealed_open((const uint8_t *)data, len, have_key > 0 ? key : NULL, &plain, &info, errmsg);
        if (rc == 0 && info.opened) {
            rc = store_archive_parse(plain.data, plain.len, count_file, &vc, errmsg);
            if (rc != 0) {
                gerr_wrap(errmsg, "the archive inside");
            }
        }
    } else {
        /* An unencrypted backup: the archive itself. */
        rc = store_archive_parse((const uint8_t *)data, len, count_file, &vc, errmsg);
    }
    OPENSSL_cleanse(key, sizeof key);
    store_sealed_buf_wipe(&plain);
    mem_free(data);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (rc != 0) {
        fprintf(stderr, "gantry: %s is not a usable backup: %s\n", argv[0], errmsg);
        return GANTRY_EXIT_FAILED;
    }
    char hex[65] = "";
    if (sealed && info.opened) {
        hex32(info.sha256, hex);
    }
    if (c->out != GANTRY_OUT_TABLE) {
        /* For scripts: "checked" says how far the check went. */
        json_t *doc = json_pack("{s:s, s:s, s:I, s:I}", "file", argv[0], "checked",
                                !sealed       ? "unencrypted"
                                : info.opened ? "authenticated"
                                              : "structure_only",
                                "size", (json_int_t)len, "ms", (json_int_t)(ms + 0.5));
        if (sealed) {
            json_object_set_new(doc, "cluster_id", json_string(info.cluster_id));
            json_object_set_new(doc, "revision", json_integer((json_int_t)info.revision));
            json_object_set_new(doc, "schema_version", json_integer((json_int_t)info.schema_version));
            json_object_set_new(doc, "created_at_ms", json_integer((json_int_t)info.created_ms));
            json_object_set_new(doc, "key_id", json_string(info.key_id));
            json_object_set_new(doc, "records", json_integer((json_int_t)info.records));
        }
        if (!sealed || info.opened) {
            json_object_set_new(doc, "archive_size",
                                json_integer((json_int_t)(sealed ? info.plain_size : len)));
            json_object_set_new(doc, "archive_files", json_integer(vc.files));
        }
        if (hex[0] != '\0') {
            json_object_set_new(doc, "archive_sha256", json_string(hex));
        }
        gantry_print(c, doc, NULL, NULL);
        json_decref(doc);
        return 0;
    }
    if (!sealed) {
        printf("%s: UNENCRYPTED backup archive, %zu bytes, %u files: structure OK (%.0f ms)\n", argv[0], len,
               vc.files, ms);
        return 0;
    }
    if (!info.opened) {
        printf("%s: sealed backup, cluster %s, revision %" PRIu64 ", schema %" PRIu64 ", key id %s, %" PRIu64
               " records, %zu bytes\n"
               "STRUCTURE ONLY: no key was given (--key-file or %s), so neither the records' "
               "authenticity nor the archive inside was checked (%.0f ms)\n",
               argv[0], info.cluster_id, info.revision, info.schema_version, info.key_id, info.records, len,
               STORE_SEALED_KEY_ENV, ms);
        return 0;
    }
    printf("%s: sealed backup OK: cluster %s, revision %" PRIu64 ", schema %" PRIu64 ", created %" PRIu64
           " ms, key id %s; %" PRIu64 " bytes sealed, archive %" PRIu64 " bytes (%u files, sha256 %s); "
           "every record authenticated, the archive parses (%.0f ms)\n",
           argv[0], info.cluster_id, info.revision, info.schema_version, info.created_ms, info.key_id,
           info.sealed_size, info.plain_size, vc.files, hex, ms);
    return 0;
}

static int cmd_lease(struct cli *c, int argc, char **argv)
{
    Gantry__V1__GetLeaseRequest req = GANTRY__V1__GET_LEASE_REQUEST__INIT;
    const char *name = gantry_opt(&argc, argv, "--name");
    req.name = (char *)(name != NULL ? name : "");
    int rc = gantry_args(gantry_find("cluster", "lease"), argc, argv, 0, 0);
    static const struct gantry_col cols[] = {
        {"LEASE", "name", NULL, false},
        {"HOLDER", "holder", NULL, false},
        {"EPOCH", "epoch", NULL, false},
        {"RENEWED", "renewed_at_ms", NULL, true},
        {"DURATION MS", "duration_ms", NULL, false},
        {NULL, NULL, NULL, false},
    };
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Cluster/GetLease", &req.base,
                                   &gantry__v1__lease__descriptor, NULL, cols);
}

const struct gantry_cmd gantry_cluster_cmds[] = {
    {"cluster", "members", "", "list the members: id, name, peer and API addresses, role, reachable, leader",
     "gantry cluster members -o json", cmd_members, false},
    {"cluster", "leader", "", "show the current leader", "gantry cluster leader", cmd_leader, false},
    {"cluster", "health", "", "the cluster's health and any problems (exit 1 when unhealthy)",
     "gantry cluster health", cmd_health, false},
    {"cluster", "join-token", "[create] [--uses N] [--ttl-s SECONDS] | list | revoke ID",
     "create a join token for new replicas (printed once on stdout); list them (never their secrets); "
     "revoke one by its id",
     "gantry cluster join-token --uses 1 > join.token\ngantry cluster join-token list\n"
     "gantry cluster join-token revoke 9f2c41d07a3e4b5c",
     cmd_join_token, false},
    {"cluster", "transfer", "[ID] [--wait-ms MS]",
     "hand leadership to member ID (default: the voter up the longest); only to a voter whose Raft log has "
     "caught up with the leader's: waits up to --wait-ms (default 10000, at most 60000) for it, then says "
     "how "
     "far behind it is (exit 3)",
     "gantry cluster transfer 2\ngantry cluster transfer 3 --wait-ms 30000", cmd_transfer, false},
    {"cluster", "remove", "ID [--force]", "remove a member (stopped, or --force)", "gantry cluster remove 3",
     cmd_remove, false},
    {"cluster", "backup", "FILE [--encrypt-key-file KEYFILE]",
     "stream a consistent backup into FILE (checked by SHA-256); with a key (--encrypt-key-file, else "
     "GANTRY_BACKUP_KEY as 64 hex digits) it is encrypted as it streams (AES-256-GCM), without one it is "
     "written unencrypted, with a warning",
     "gantry cluster backup gantry-$(date +%F).gbk --encrypt-key-file /etc/gantry/backup.key", cmd_backup,
     false},
    {"cluster", "backup-verify", "FILE [--key-file KEYFILE]",
     "check a backup without restoring it: with the key (--key-file, else GANTRY_BACKUP_KEY) every record's "
     "authenticity, the SHA-256 and the archive inside; without it only the structure (and says so); exit 1 "
     "when corrupted, truncated, under another key or not a backup",
     "gantry cluster backup-verify gantry-2026-12-06.gbk --key-file /etc/gantry/backup.key",
     cmd_backup_verify, true},
    {"cluster", "lease", "[--name LEASE]",
     "the reconciler lease: which replica drives the sandboxes, and its epoch", "gantry cluster lease",
     cmd_lease, false},
    {"cluster", "top", "[--interval-ms MS] [--once | --count N]",
     "a live terminal view: health, the lease, the members, and per namespace the sandboxes by phase and the "
     "quota use; redrawn every --interval-ms (default 1000) until interrupted; shows what your credential "
     "may read",
     "gantry cluster top\ngantry cluster top --once", gantry_cluster_top, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
