/* init, restore and join (server/bootstrap.h). */
#include "server/bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "api/services/clusterdb.h"
#include "gantry/v1/cluster.pb-c.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "leases/lease.h"
#include "lib/rand.h"
#include "raft/identity.h"
#include "raft/pki.h"
#include "raft/replica.h"
#include "raft/roles.h"
#include "server/grpc/client.h"
#include "server/grpc/status.h"
#include "store/archive.h"
#include "store/backup.h"
#include "store/migrate.h"
#include "store/sealed.h"

const char *bootstrap_peer_address(const struct config *cfg)
{
    return cfg->peer_advertise_address[0] != '\0' ? cfg->peer_advertise_address : cfg->peer_address;
}

_Static_assert(ROLES_STANDBY_SITE == UINT64_C(1) << 63, "config.c refuses failure domains with this bit");

uint64_t bootstrap_failure_domain(const struct config *cfg)
{
    uint64_t d = cfg->failure_domain & ~ROLES_STANDBY_SITE;
    if (d == 0 && cfg->failure_domain != 0) {
        d = 1; /* a name whose hash was the top bit alone stays a known domain */
    }
    return d | (cfg->standby_site ? ROLES_STANDBY_SITE : 0);
}

static void host_of(const char *address, char *out, size_t len)
{
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        snprintf(out, len, "%.*s", end != NULL ? (int)(end - address - 1) : 0, address + 1);
    } else {
        const char *colon = strrchr(address, ':');
        snprintf(out, len, "%.*s", colon != NULL ? (int)(colon - address) : (int)strlen(address), address);
    }
}

/* The names this replica's certificate carries. */
struct names {
    const char *ip[16];
    const char *dns[16];
    unsigned n_ip, n_dns;
    char hosts[3][128];
};

static void names_add(struct names *n, const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    bool ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    if (ip && n->n_ip < 16 && strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0) {
        n->ip[n->n_ip++] = host;
    } else if (!ip && n->n_dns < 16 && host[0] != '\0') {
        n->dns[n->n_dns++] = host;
    }
}

static void names_build(struct names *n, const struct config *cfg)
{
    memset(n, 0, sizeof *n);
    host_of(bootstrap_peer_address(cfg), n->hosts[0], sizeof n->hosts[0]);
    host_of(cfg->api_address, n->hosts[1], sizeof n->hosts[1]);
    host_of(cfg->peer_address, n->hosts[2], sizeof n->hosts[2]);
    for (int i = 0; i < 3; i++) {
        names_add(n, n->hosts[i]);
    }
    names_add(n, "localhost");
    names_add(n, "127.0.0.1");
    for (size_t i = 0; i < cfg->cert_sans.n; i++) {
        names_add(n, cfg->cert_sans.items[i]);
    }
}

/* A client of the local node only (init: the cluster is this node). */
static int local_client(struct replica *r, const char *address, struct store_client *cl)
{
    const char *addrs[] = {address};
    struct store_client_config c = {.addresses = addrs,
                                    .n_addresses = 1,
                                    .leader_timeout_ms = 20000,
                                    .request_timeout_ms = 60000,
                                    .dial = replica_dial(r),
                                    .dial_arg = replica_dial_arg(r)};
    return store_client_init(cl, &c);
}

static int load_secrets(const struct config *cfg, const struct bootstrap_init_opts *o,
                        struct identity_secrets *s, char *errmsg)
{
    int rv = 0;
    memset(s, 0, sizeof *s);
    if (o->secrets_dir != NULL) {
        /* identity_secrets_load wants the data dir: the secrets dir's parent layout. */
        char p[4096];
        char *pepper = NULL;
        size_t len = 0;
        snprintf(p, sizeof p, "%s/ca.pem", o->secrets_dir);
        rv = file_read_all(p, 65536, &s->ca_pem, NULL, errmsg);
        if (rv == 0) {
            snprintf(p, sizeof p, "%s/ca-key.pem", o->secrets_dir);
            rv = file_read_all(p, 65536, &s->ca_key_pem, NULL, errmsg);
            if (rv == GERR_NOTFOUND) {
                gerr_set(errmsg,
                         "restore: %s holds no CA key: it is the secrets/ of a replica that joined; use "
                         "the secrets/ of a replica that holds the CA key (one made by init or restore)",
                         o->secrets_dir);
            }
        }
        if (rv == 0) {
            snprintf(p, sizeof p, "%s/pepper", o->secrets_dir);
            rv = file_read_all(p, 4096, &pepper, &len, errmsg);
            if (rv == 0 && len != IDENTITY_PEPPER_SIZE) {
                gerr_set(errmsg, "restore: %s must hold %u bytes", p, IDENTITY_PEPPER_SIZE);
                rv = GERR_INVAL;
            }
            if (rv == 0) {
                memcpy(s->pepper, pepper, IDENTITY_PEPPER_SIZE);
            }
            mem_free(pepper);
        }
        return rv;
    }
    if (o->ca_cert_file != NULL || o->ca_key_file != NULL) {
        if (o->ca_cert_file == NULL || o->ca_key_file == NULL) {
            gerr_set(errmsg, "init: --ca-cert and --ca-key go together");
            return GERR_INVAL;
        }
        rv = file_read_all(o->ca_cert_file, 65536, &s->ca_pem, NULL, errmsg);
        if (rv == 0) {
            rv = file_read_all(o->ca_key_file, 65536, &s->ca_key_pem, NULL, errmsg);
        }
    } else {
        char name[96];
        snprintf(name, sizeof name, "gantry-%s-ca", cfg->gateway_id);
        rv = pki_ca_create(name, &s->ca_key_pem, &s->ca_pem, errmsg);
    }
    if (rv == 0 && rand_bytes(s->pepper, sizeof s->pepper) != 0) {
        gerr_set(errmsg, "init: no random bytes for the pepper");
        rv = GERR_IO;
    }
    return rv;
}

static int read_join_token(const struct bootstrap_init_opts *o, struct join_token_parts *parts, char *errmsg)
{
    char *text = NULL;
    size_t len = 0;
    int rv = file_read_all(o->join_token_file, 4096, &text, &len, errmsg);
    if (rv != 0) {
        return rv;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) {
        text[--len] = '\0';
    }
    rv = join_token_parse(text, parts, errmsg);
    memset(text, 0, len);
    mem_free(text);
    return rv;
}

/* The backup to restore, read and checked before anything is created: a sealed backup is opened
 * with its key (every record authenticated, the archive's SHA-256 checked) into memory; either way
 * the archive must parse. @data and @len point into the memory of @raw or of @plain. */
struct backup_data {
    char *raw;        /* the file */
    struct buf plain; /* a sealed backup's archive (wiped when done) */
    const uint8_t *data;
    size_t len;
    bool sealed;
};

static void backup_data_close(struct backup_data *b)
{
    store_sealed_buf_wipe(&b->plain);
    mem_free(b->raw);
    memset(b, 0, sizeof *b);
}

static int backup_load(const struct bootstrap_init_opts *o, struct backup_data *b, char *errmsg)
{
    memset(b, 0, sizeof *b);
    buf_init(&b->plain);
    size_t len = 0;
    int rv = file_read_all(o->restore_from, (size_t)1 << 34, &b->raw, &len, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "restore");
        return rv;
    }
    b->data = (const uint8_t *)b->raw;
    b->len = len;
    b->sealed = store_sealed_detect(b->data, len);
    if (b->sealed) {
        uint8_t key[STORE_SEALED_KEY_SIZE];
        struct store_sealed_info info;
        const char *env = o->backup_key_file == NULL ? getenv(STORE_SEALED_KEY_ENV) : NULL;
        if (o->backup_key_file == NULL && (env == NULL || env[0] == '\0')) {
            gerr_set(errmsg,
                     "restore: %s is an encrypted backup: give its key with --backup-key-file FILE (or "
                     "%s=<64 hex digits>)",
                     o->restore_from, STORE_SEALED_KEY_ENV);
            return GERR_INVAL;
        }
        if (o->backup_key_file != NULL) {
            rv = store_sealed_key_load(o->backup_key_file, key, errmsg);
        } else if (strlen(env) != 2 * STORE_SEALED_KEY_SIZE) {
            gerr_set(errmsg, "restore: %s must hold 64 hex digits (32 bytes)", STORE_SEALED_KEY_ENV);
            rv = GERR_INVAL;
        } else {
            rv = store_sealed_key_parse((const uint8_t *)env, strlen(env), key, errmsg);
        }
        if (rv == 0) {
            rv = store_sealed_open(b->data, len, key, &b->plain, &info, errmsg);
        }
        OPENSSL_cleanse(key, sizeof key);
        if (rv != 0) {
            gerr_wrap(errmsg, "restore: %s refused", o->restore_from);
            return rv;
        }
        LOG_INFO("restore: %s is a sealed backup of cluster %s at revision %" PRIu64 " (schema %" PRIu64
                 ", key id %s): every record authenticated",
                 o->restore_from, info.cluster_id, info.revision, info.schema_version, info.key_id);
        b->data = b->plain.data;
        b->len = b->plain.len;
    } else if (o->backup_key_file != NULL) {
        LOG_WARN("restore: %s is not encrypted; --backup-key-file is not used", o->restore_from);
    }
    rv = store_archive_parse(b->data, b->len, NULL, NULL, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "restore: %s is not a backup archive", o->restore_from);
    }
    return rv;
}

/* The cluster id the restored data holds (cluster_meta, as the old cluster's clusterdb_seed_tx
 * wrote it), for restore --keep-cluster-id: read from the data rather than a sealed header, so an
 * unencrypted backup keeps it too. GERR_NOTFOUND when the backup has none (then restore fails:
 * the operator asked to keep an id that is not there). */
static int restored_cluster_id(struct store_client *cl, char *out, size_t len, char *errmsg)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv =
        store_client_query(cl, "SELECT value FROM cluster_meta WHERE key = 'cluster_id'", NULL, 0, &rows);
    const struct proto_value *v = rv == 0 && rows.n_rows == 1 ? proto_rows_at(&rows, 0, 0) : NULL;
    if (rv != 0) {
        gerr_set(errmsg, "restore: reading the backup's cluster id: %s", cl->errmsg);
    } else if (v == NULL || v->type != PROTO_TEXT || v->u.b.n == 0 || v->u.b.n >= len) {
        gerr_set(errmsg, "restore: --keep-cluster-id: the backup holds no cluster id to keep");
        rv = GERR_NOTFOUND;
    } else {
        snprintf(out, len, "%s", v->u.b.s);
        LOG_INFO("restore: keeping the backup's cluster id %s (--keep-cluster-id)", out);
    }
    proto_rows_close(&rows);
    return rv;
}

/* Restore: unpack the archive next to the store and replay it into the new cluster. */
static int restore_into(struct store_client *cl, const char *data_dir, const struct backup_data *b,
                        const char *archive, char *errmsg)
{
    char dir[4096];
    identity_path(data_dir, "restore-tmp", dir, sizeof dir);
    if (mkdir(dir, 0700) != 0) {
        int err = errno;
        gerr_set(errmsg, "restore: mkdir %s: %s", dir, strerror(err));
        return gerr_from_errno(err);
    }
    int rv = store_archive_unpack(b->data, b->len, dir, errmsg);
    struct store_restore_stats st;
    if (rv == 0) {
        rv = store_restore(cl, dir, &st, errmsg);
    }
    if (rv == 0) {
        LOG_INFO("restore: %u tables, %" PRIu64 " rows from %s", st.tables, st.rows, archive);
    }
    char f[4300];
    const char *names[] = {cl->database, "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/%s%s", dir, i == 0 ? "" : cl->database, names[i]);
        unlink(f);
    }
    rmdir(dir);
    return rv;
}

int bootstrap_init(const struct config *cfg, const struct bootstrap_init_opts *o,
                   char admin_key[APIKEY_LEN + 1], char *errmsg)
{
    admin_key[0] = '\0';
    if (cfg->replica_id != 1) {
        gerr_set(errmsg, "init: replica_id must be 1: replica 1 bootstraps a new cluster (got %" PRIu64 ")",
                 cfg->replica_id);
        return GERR_INVAL;
    }
    if (!identity_dir_empty(cfg->data_dir)) {
        gerr_set(errmsg, "init: %s is not empty%s; init only makes a new cluster in an empty directory",
                 cfg->data_dir, identity_exists(cfg->data_dir) ? " (it already holds a replica)" : "");
        return GERR_EXISTS;
    }
    /* A backup that is corrupted, under another key or not a backup at all is refused before
     * anything is created. */
    struct backup_data backup;
    memset(&backup, 0, sizeof backup);
    buf_init(&backup.plain);
    if (o->restore_from != NULL) {
        int rv = backup_load(o, &backup, errmsg);
        if (rv != 0) {
            backup_data_close(&backup);
            return rv;
        }
    }
    struct identity_secrets sec;
    int rv = identity_make_dirs(cfg->data_dir, errmsg);
    if (rv == 0) {
        rv = load_secrets(cfg, o, &sec, errmsg);
    }
    if (rv != 0) {
        backup_data_close(&backup);
        return rv;
    }
    struct join_token_parts token;
    if (o->join_token_file != NULL) {
        rv = read_join_token(o, &token, errmsg);
    }
    struct names n;
    names_build(&n, cfg);
    struct pki_subject subj = {.common_name = cfg->replica_name,
                               .ip_sans = n.ip,
                               .n_ip_sans = n.n_ip,
                               .dns_sans = n.dns,
                               .n_dns_sans = n.n_dns};
    char *key = NULL, *cert = NULL;
    if (rv == 0) {
        rv = pki_issue(sec.ca_key_pem, sec.ca_pem, &subj, PKI_CERT_DAYS, &key, &cert, errmsg);
    }
    if (rv == 0) {
        rv = identity_secrets_save(cfg->data_dir, &sec, errmsg);
    }
    if (rv == 0) {
        rv = identity_tls_save(cfg->data_dir, sec.ca_pem, cert, key, errmsg);
    }
    mem_free(key);
    mem_free(cert);
    struct identity id = {.replica_id = 1, .created_at_ms = (int64_t)clock_system()->wall_ms(clock_system())};
    rand_uuid(id.cluster_id);
    snprintf(id.gateway_id, sizeof id.gateway_id, "%s", cfg->gateway_id);

    char tls_dir[4096], store_dir[4096];
    identity_path(cfg->data_dir, "tls", tls_dir, sizeof tls_dir);
    identity_path(cfg->data_dir, "store", store_dir, sizeof store_dir);
    struct replica *r = NULL;
    if (rv == 0) {
        struct replica_config rc = {.id = 1,
                                    .address = bootstrap_peer_address(cfg),
                                    .listen = cfg->peer_address,
                                    .dir = store_dir,
                                    .tls_dir = tls_dir,
                                    .latency_ms = cfg->latency_ms,
                                    .failure_domain = bootstrap_failure_domain(cfg),
                                    .policy = {.grace_ms = cfg->roles_grace_ms}};
        rv = replica_start(&rc, &r, errmsg);
    }
    struct store_client cl;
    bool have_client = false;
    if (rv == 0) {
        rv = local_client(r, bootstrap_peer_address(cfg), &cl);
        have_client = rv == 0;
    }
    if (rv == 0 && o->restore_from != NULL) {
        rv = restore_into(&cl, cfg->data_dir, &backup, o->restore_from, errmsg);
    }
    if (rv == 0 && o->keep_cluster_id) {
        rv = restored_cluster_id(&cl, id.cluster_id, sizeof id.cluster_id, errmsg);
    }
    backup_data_close(&backup);
    unsigned n_schema;
    const struct store_migration *schema = store_schema(&n_schema);
    if (rv == 0 && (rv = store_migrate(&cl, schema, n_schema)) != 0) {
        gerr_set(errmsg, "init: schema migrations: %s", cl.errmsg);
    }
    if (rv == 0 && o->restore_from != NULL) {
        /* The backends still hold the old cluster's fence: start ahead of it (leases/lease.h). */
        int64_t now = id.created_at_ms;
        if ((rv = store_client_tx(&cl, lease_restored_tx, &now)) != 0) {
            gerr_set(errmsg, "restore: leases: %s", cl.errmsg);
        }
    }
    char keyid[APIKEY_ID_LEN + 1];
    uint8_t hash[APIKEY_HASH_SIZE];
    char admin_name[64] = "admin";
    bool new_admin = o->secrets_dir == NULL;
    if (rv == 0 && new_admin) {
        rv = apikey_generate(sec.pepper, IDENTITY_PEPPER_SIZE, admin_key, keyid, hash, errmsg);
        if (o->restore_from != NULL) {
            snprintf(admin_name, sizeof admin_name, "restore-admin-%" PRId64, id.created_at_ms / 1000);
        }
    }
    if (rv == 0) {
        struct clusterdb_seed seed = {
            .cluster_id = id.cluster_id,
            .gateway_id = id.gateway_id,
            .ca_pem = sec.ca_pem,
            .replica_id = 1,
            .replica_name = cfg->replica_name,
            .peer_address = bootstrap_peer_address(cfg),
            .api_address = cfg->api_address,
            .failure_domain = cfg->failure_domain,
            .failure_domain_name = cfg->failure_domain_name,
            .default_namespace = o->restore_from == NULL,
            .admin_name = new_admin ? admin_name : NULL,
            .admin_key_id = keyid,
            .admin_key_hash = hash,
            .join = o->join_token_file != NULL ? &token : NULL,
            .join_uses = o->join_token_uses != 0 ? o->join_token_uses : 1,
            .join_expires_ms =
                id.created_at_ms + (int64_t)(o->join_token_ttl_s != 0 ? o->join_token_ttl_s : 86400) * 1000};
        rv = store_client_tx(&cl, clusterdb_seed_tx, &seed);
        if (rv != 0) {
            gerr_set(errmsg, "init: %s", cl.errmsg);
        }
    }
    if (have_client) {
        store_client_close(&cl);
    }
    if (r != NULL) {
        replica_stop(r);
    }
    if (rv == 0) {
        rv = identity_save(cfg->data_dir, &id, errmsg);
    }
    identity_secrets_free(&sec);
    memset(&token, 0, sizeof token);
    if (rv != 0) {
        memset(admin_key, 0, APIKEY_LEN + 1);
        gerr_wrap(errmsg, "remove %s before trying again", cfg->data_dir);
    } else {
        LOG_INFO("init: cluster %s (gateway %s) created in %s", id.cluster_id, id.gateway_id, cfg->data_dir);
    }
    return rv;
}

/* --- join --- */

static int join_once(const struct config *cfg, const char *target, const struct join_token_parts *parts,
                     const char *csr, Gantry__V1__JoinResponse **out, int *grpc_status, char *errmsg)
{
    struct grpc_client_config cc = {.target = target,
                                    .ca_file = parts->ca_fingerprint[0] == '\0' ? cfg->join_ca_file : NULL,
                                    .pin_sha256 =
                                        parts->ca_fingerprint[0] != '\0' ? parts->ca_fingerprint : NULL,
                                    .connect_timeout_ms = 3000};
    struct grpc_client *c;
    *grpc_status = -1;
    int rv = grpc_client_connect(&cc, &c, errmsg);
    if (rv != 0) {
        return rv;
    }
    Gantry__V1__JoinRequest req = GANTRY__V1__JOIN_REQUEST__INIT;
    req.token = cfg->join_token;
    req.replica_id = cfg->replica_id;
    req.replica_name = cfg->replica_name;
    req.peer_address = (char *)bootstrap_peer_address(cfg);
    req.api_address = cfg->api_address;
    req.csr_pem = (char *)csr;
    req.failure_domain = cfg->failure_domain;
    req.failure_domain_name = cfg->failure_domain_name;
    req.n_sans = cfg->cert_sans.n;
    req.sans = cfg->cert_sans.items;
    struct grpc_client_result res;
    ProtobufCMessage *resp = NULL;
    rv = grpc_client_unary(c, "/gantry.v1.Cluster/Join", NULL, 0, &req.base,
                           &gantry__v1__join_response__descriptor, 30000, &resp, &res, errmsg);
    grpc_client_close(c);
    if (rv == 0) {
        *grpc_status = res.status;
        if (res.status != 0) {
            gerr_set(errmsg, "join through %s: %s (%s)", target, res.message, grpc_status_name(res.status));
            rv = res.status == GRPC_STATUS_UNAVAILABLE ? GERR_UNAVAILABLE : GERR_PERM;
        }
    }
    *out = (Gantry__V1__JoinResponse *)resp;
    return rv;
}

/* The answer must come from the cluster we trusted: its CA is the pinned one (or verifies against
 * the CA file), and our certificate chains to it. */
static int check_answer(const struct config *cfg, const struct join_token_parts *parts,
                        const Gantry__V1__JoinResponse *r, char *errmsg)
{
    char fp[PKI_FINGERPRINT_SIZE];
    int rv = pki_fingerprint(r->ca_pem, fp, errmsg);
    if (rv == 0 && parts->ca_fingerprint[0] != '\0' && strcmp(fp, parts->ca_fingerprint) != 0) {
        gerr_set(errmsg, "join: the member sent a CA that does not match the token's fingerprint");
        return GERR_PERM;
    }
    if (rv == 0 && parts->ca_fingerprint[0] == '\0') {
        char *trusted = NULL;
        char tfp[PKI_FINGERPRINT_SIZE];
        rv = file_read_all(cfg->join_ca_file, 65536, &trusted, NULL, errmsg);
        if (rv == 0) {
            rv = pki_fingerprint(trusted, tfp, errmsg);
        }
        mem_free(trusted);
        if (rv == 0 && strcmp(fp, tfp) != 0) {
            gerr_set(errmsg, "join: the member sent a CA other than %s", cfg->join_ca_file);
            return GERR_PERM;
        }
    }
    if (rv == 0) {
        rv = pki_verify(r->ca_pem, r->cert_pem, errmsg);
    }
    if (rv == 0 && (r->apikey_pepper.len != IDENTITY_PEPPER_SIZE || r->n_peer_addresses == 0)) {
        gerr_set(errmsg, "join: the member's answer is incomplete");
        rv = GERR_PROTO;
    }
    return rv;
}

static int save_join(const struct config *cfg, const Gantry__V1__JoinResponse *r, const char *key,
                     char *errmsg)
{
    /* No CA key: a replica that joined never holds it (raft/identity.h). */
    struct identity_secrets sec = {.ca_pem = r->ca_pem, .ca_key_pem = NULL};
    memcpy(sec.pepper, r->apikey_pepper.data, IDENTITY_PEPPER_SIZE);
    int rv = identity_secrets_save(cfg->data_dir, &sec, errmsg);
    memset(sec.pepper, 0, sizeof sec.pepper);
    if (rv == 0) {
        rv = identity_tls_save(cfg->data_dir, r->ca_pem, r->cert_pem, key, errmsg);
    }
    if (rv == 0) {
        struct buf peers;
        buf_init(&peers);
        for (size_t i = 0; i < r->n_peer_addresses; i++) {
            buf_printf(&peers, "%s%s", i > 0 ? "," : "", r->peer_addresses[i]);
        }
        buf_append(&peers, "\n", 1);
        char p[4096];
        identity_path(cfg->data_dir, "join-peers", p, sizeof p);
        rv = identity_write_file(p, peers.data, peers.len, 0600, errmsg);
        buf_close(&peers);
    }
    if (rv == 0) {
        struct identity id = {.replica_id = cfg->replica_id,
                              .created_at_ms = (int64_t)clock_system()->wall_ms(clock_system())};
        snprintf(id.cluster_id, sizeof id.cluster_id, "%s", r->cluster_id);
        snprintf(id.gateway_id, sizeof id.gateway_id, "%s", r->gateway_id);
        rv = identity_save(cfg->data_dir, &id, errmsg);
    }
    return rv;
}

int bootstrap_join(const struct config *cfg, unsigned timeout_ms, char *errmsg)
{
    struct join_token_parts parts;
    int rv = join_token_parse(cfg->join_token, &parts, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (parts.ca_fingerprint[0] == '\0' && cfg->join_ca_file[0] == '\0') {
        gerr_set(errmsg,
                 "join: the token carries no CA fingerprint, so join_ca_file must name the cluster's CA");
        return GERR_INVAL;
    }
    if (!identity_dir_empty(cfg->data_dir)) {
        gerr_set(errmsg, "join: %s is not empty but holds no replica identity: remove it and try again",
                 cfg->data_dir);
        return GERR_EXISTS;
    }
    rv = identity_make_dirs(cfg->data_dir, errmsg);
    char *key = NULL, *csr = NULL;
    if (rv == 0) {
        rv = pki_csr_create(cfg->replica_name, &key, &csr, errmsg);
    }
    struct clock *clk = clock_system();
    uint64_t deadline = clock_mono_ms(clk) + timeout_ms;
    unsigned delay = 200;
    Gantry__V1__JoinResponse *resp = NULL;
    while (rv == 0) {
        int status = -1;
        for (size_t i = 0; i < cfg->join.n; i++) {
            rv = join_once(cfg, cfg->join.items[i], &parts, csr, &resp, &status, errmsg);
            if (rv == 0 || status == GRPC_STATUS_UNAUTHENTICATED || status == GRPC_STATUS_INVALID_ARGUMENT ||
                status == GRPC_STATUS_ALREADY_EXISTS || status == GRPC_STATUS_PERMISSION_DENIED ||
                rv == GERR_PERM) {
                break;
            }
            LOG_WARN("join: %s", errmsg);
        }
        if (rv == 0 || (rv == GERR_PERM && status != GRPC_STATUS_UNAVAILABLE) ||
            clock_mono_ms(clk) >= deadline) {
            if (rv != 0 && rv != GERR_PERM) {
                gerr_wrap(errmsg, "join: no member admitted this replica within %u ms", timeout_ms);
                rv = GERR_UNAVAILABLE;
            }
            break;
        }
        rv = 0;
        clk->sleep_ns(clk, (uint64_t)rand_range(delay / 2, delay) * 1000000u);
        delay = delay * 2 > 2000 ? 2000 : delay * 2;
    }
    if (rv == 0) {
        rv = check_answer(cfg, &parts, resp, errmsg);
    }
    if (rv == 0) {
        rv = save_join(cfg, resp, key, errmsg);
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    if (key != NULL) {
        memset(key, 0, strlen(key));
    }
    mem_free(key);
    mem_free(csr);
    memset(&parts, 0, sizeof parts);
    if (rv == 0) {
        LOG_INFO("join: admitted to the cluster; certificate and secrets saved in %s (this replica does "
                 "not hold the CA key)",
                 cfg->data_dir);
    }
    return rv;
}

int bootstrap_pending_join(const char *data_dir, char *out, size_t len, char *errmsg)
{
    char p[4096];
    char *text = NULL;
    size_t n = 0;
    identity_path(data_dir, "join-peers", p, sizeof p);
    out[0] = '\0';
    int rv = file_read_all(p, 65536, &text, &n, errmsg);
    if (rv == GERR_NOTFOUND) {
        return 0;
    }
    if (rv == 0) {
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r')) {
            text[--n] = '\0';
        }
        if (n >= len) {
            gerr_set(errmsg, "join: %s is too long", p);
            rv = GERR_INVAL;
        } else {
            snprintf(out, len, "%s", text);
        }
    }
    mem_free(text);
    return rv;
}

void bootstrap_join_done(const char *data_dir)
{
    char p[4096], q[4096], peers[4096], err[GERR_MSG_SIZE];
    identity_path(data_dir, "join-peers", p, sizeof p);
    identity_path(data_dir, "peers", q, sizeof q);
    /* Until the maintenance thread first writes <data_dir>/peers from the replica's view (about a
     * second), the members the join named are the only peers this data dir knows: a restart in
     * that window must still find them, or its membership check has nobody to ask (a replica
     * removed right after its join came back, CI under ASan). */
    struct stat st;
    if (stat(q, &st) != 0 && bootstrap_pending_join(data_dir, peers, sizeof peers, err) == 0 &&
        peers[0] != '\0' && identity_write_file(q, peers, strlen(peers), 0600, err) != 0) {
        LOG_WARN("%s", err);
    }
    unlink(p);
}
