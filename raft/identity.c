/* A replica's data directory and the cluster identity (raft/identity.h). */
#include "raft/identity.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/file.h"
#include "lib/mem.h"
#include "lib/rand.h"

void identity_path(const char *data_dir, const char *rel, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s/%s", data_dir, rel);
}

bool identity_exists(const char *data_dir)
{
    char p[4096];
    identity_path(data_dir, "identity.json", p, sizeof p);
    return access(p, F_OK) == 0;
}

bool identity_dir_empty(const char *data_dir)
{
    DIR *d = opendir(data_dir);
    if (d == NULL) {
        return errno == ENOENT;
    }
    bool empty = true;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            strcmp(e->d_name, "lost+found") != 0) {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int mkdir_0700(const char *path, char *errmsg)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        int err = errno;
        gerr_set(errmsg, "identity: mkdir %s: %s", path, strerror(err));
        return gerr_from_errno(err);
    }
    return 0;
}

int identity_make_dirs(const char *data_dir, char *errmsg)
{
    char p[4096];
    int rv = mkdir_0700(data_dir, errmsg);
    const char *subs[] = {"secrets", "tls", "store"};
    for (size_t i = 0; rv == 0 && i < sizeof subs / sizeof subs[0]; i++) {
        identity_path(data_dir, subs[i], p, sizeof p);
        rv = mkdir_0700(p, errmsg);
    }
    return rv;
}

int identity_write_file(const char *path, const void *data, size_t len, unsigned mode, char *errmsg)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        int err = errno;
        gerr_set(errmsg, "identity: create %s: %s", tmp, strerror(err));
        return gerr_from_errno(err);
    }
    const uint8_t *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, p + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            gerr_set(errmsg, "identity: write %s: %s", tmp, strerror(err));
            return gerr_from_errno(err);
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        gerr_set(errmsg, "identity: save %s: %s", path, strerror(err));
        return gerr_from_errno(err);
    }
    return 0;
}

static int write_text(const char *data_dir, const char *rel, const char *text, unsigned mode, char *errmsg)
{
    char p[4096];
    identity_path(data_dir, rel, p, sizeof p);
    return identity_write_file(p, text, strlen(text), mode, errmsg);
}

int identity_save(const char *data_dir, const struct identity *id, char *errmsg)
{
    json_t *o = json_pack("{s:i, s:s, s:s, s:I, s:I}", "version", 1, "cluster_id", id->cluster_id,
                          "gateway_id", id->gateway_id, "replica_id", (json_int_t)id->replica_id,
                          "created_at_ms", (json_int_t)id->created_at_ms);
    char *text = o != NULL ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (text == NULL) {
        gerr_set(errmsg, "identity: out of memory");
        return GERR_NOMEM;
    }
    size_t len = strlen(text);
    char *withnl = mem_alloc(len + 2);
    memcpy(withnl, text, len);
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    free(text);
    int rv = write_text(data_dir, "identity.json", withnl, 0600, errmsg);
    mem_free(withnl);
    return rv;
}

int identity_load(const char *data_dir, struct identity *out, char *errmsg)
{
    char p[4096];
    char *text;
    identity_path(data_dir, "identity.json", p, sizeof p);
    int rv = file_read_all(p, 65536, &text, NULL, errmsg);
    if (rv != 0) {
        return rv;
    }
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    mem_free(text);
    const char *cid = NULL, *gid = NULL;
    json_int_t version = 0, rid = 0, created = 0;
    if (o == NULL ||
        json_unpack(o, "{s:I, s:s, s:s, s:I, s:I}", "version", &version, "cluster_id", &cid, "gateway_id",
                    &gid, "replica_id", &rid, "created_at_ms", &created) != 0 ||
        version != 1 || strlen(cid) >= sizeof out->cluster_id || strlen(gid) >= sizeof out->gateway_id ||
        rid <= 0) {
        json_decref(o);
        gerr_set(errmsg, "identity: %s is not a version-1 identity file", p);
        return GERR_INVAL;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->cluster_id, sizeof out->cluster_id, "%s", cid);
    snprintf(out->gateway_id, sizeof out->gateway_id, "%s", gid);
    out->replica_id = (uint64_t)rid;
    out->created_at_ms = created;
    json_decref(o);
    return 0;
}

/* The CA key must be the key of secrets/ca.pem. A CA rotation that stopped between writing the new
 * key and the new ca.pem (server/carotate.c writes the key first) leaves the new CA in
 * secrets/ca-next.pem: taken from there (the rotation's sync writes ca.pem again). Anything else is
 * GERR_PERM with both paths named. */
static int secrets_pair(const char *data_dir, struct identity_secrets *out, char *errmsg)
{
    char p[4096], err[GERR_MSG_SIZE];
    if (pki_check_pair(out->ca_pem, out->ca_key_pem, err) == 0) {
        return 0;
    }
    char *next = NULL;
    identity_path(data_dir, "secrets/ca-next.pem", p, sizeof p);
    if (file_read_all(p, 65536, &next, NULL, err) == 0 && pki_check_pair(next, out->ca_key_pem, err) == 0) {
        mem_free(out->ca_pem);
        out->ca_pem = next;
        return 0;
    }
    mem_free(next);
    gerr_set(errmsg,
             "identity: %s/secrets/ca-key.pem is not the private key of the CA in %s/secrets/ca.pem (a CA "
             "rotation interrupted, or files copied from different replicas); put the matching pair back, "
             "or remove ca-key.pem to run as a replica without the CA key",
             data_dir, data_dir);
    return GERR_PERM;
}

int identity_secrets_load(const char *data_dir, struct identity_secrets *out, char *errmsg)
{
    char p[4096];
    char *pepper = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    identity_path(data_dir, "secrets/ca.pem", p, sizeof p);
    int rv = file_read_all(p, 65536, &out->ca_pem, NULL, errmsg);
    if (rv == 0) {
        identity_path(data_dir, "secrets/ca-key.pem", p, sizeof p);
        rv = file_read_all(p, 65536, &out->ca_key_pem, NULL, errmsg);
        if (rv == GERR_NOTFOUND) { /* a replica that joined: it cannot sign certificates */
            out->ca_key_pem = NULL;
            errmsg[0] = '\0';
            rv = 0;
        }
    }
    if (rv == 0 && out->ca_key_pem != NULL) {
        rv = secrets_pair(data_dir, out, errmsg);
    }
    if (rv == 0) {
        identity_path(data_dir, "secrets/pepper", p, sizeof p);
        rv = file_read_all(p, 4096, &pepper, &len, errmsg);
    }
    if (rv == 0 && len != IDENTITY_PEPPER_SIZE) {
        gerr_set(errmsg, "identity: %s must hold exactly %u bytes", p, IDENTITY_PEPPER_SIZE);
        rv = GERR_INVAL;
    }
    if (rv == 0) {
        memcpy(out->pepper, pepper, IDENTITY_PEPPER_SIZE);
    }
    if (pepper != NULL) {
        memset(pepper, 0, len);
        mem_free(pepper);
    }
    if (rv != 0) {
        identity_secrets_free(out);
    }
    return rv;
}

int identity_secrets_save(const char *data_dir, const struct identity_secrets *s, char *errmsg)
{
    char p[4096];
    int rv = 0;
    if (s->ca_key_pem != NULL) { /* the key first: see secrets_pair */
        rv = write_text(data_dir, "secrets/ca-key.pem", s->ca_key_pem, 0600, errmsg);
    }
    if (rv == 0) {
        rv = write_text(data_dir, "secrets/ca.pem", s->ca_pem, 0600, errmsg);
    }
    if (rv == 0) {
        identity_path(data_dir, "secrets/pepper", p, sizeof p);
        rv = identity_write_file(p, s->pepper, IDENTITY_PEPPER_SIZE, 0600, errmsg);
    }
    return rv;
}

void identity_secrets_free(struct identity_secrets *s)
{
    if (s->ca_key_pem != NULL) {
        memset(s->ca_key_pem, 0, strlen(s->ca_key_pem));
    }
    mem_free(s->ca_pem);
    mem_free(s->ca_key_pem);
    memset(s, 0, sizeof *s);
}

static int ca_key_check(const char *data_dir, const char *ca_key_pem, bool install, char *errmsg)
{
    char p[4096];
    char *ca = NULL, *key = NULL, *cert = NULL;
    identity_path(data_dir, "secrets/ca.pem", p, sizeof p);
    int rv = file_read_all(p, 65536, &ca, NULL, errmsg);
    if (rv == 0) {
        struct pki_subject subj = {.common_name = "gantry-ca-key-check"};
        /* pki_issue refuses a key that is not the certificate's (X509_check_private_key); the
         * verification below checks the signature itself too. */
        if (pki_issue(ca_key_pem, ca, &subj, 1, &key, &cert, errmsg) != 0 ||
            pki_verify(ca, cert, errmsg) != 0) {
            gerr_set(errmsg, "identity: that is not the private key of the CA in %s (or it does not parse)",
                     p);
            rv = GERR_PERM;
        }
    }
    if (rv == 0 && install) {
        identity_path(data_dir, "secrets/ca-key.pem", p, sizeof p);
        rv = identity_write_file(p, ca_key_pem, strlen(ca_key_pem), 0600, errmsg);
    }
    mem_free(ca);
    if (key != NULL) {
        memset(key, 0, strlen(key));
    }
    mem_free(key);
    mem_free(cert);
    return rv;
}

int identity_check_ca_key(const char *data_dir, const char *ca_key_pem, char *errmsg)
{
    return ca_key_check(data_dir, ca_key_pem, false, errmsg);
}

int identity_install_ca_key(const char *data_dir, const char *ca_key_pem, char *errmsg)
{
    return ca_key_check(data_dir, ca_key_pem, true, errmsg);
}

int identity_tls_save(const char *data_dir, const char *ca_pem, const char *cert_pem, const char *key_pem,
                      char *errmsg)
{
    int rv = write_text(data_dir, "tls/ca.pem", ca_pem, 0644, errmsg);
    if (rv == 0) {
        rv = write_text(data_dir, "tls/cert.pem", cert_pem, 0644, errmsg);
    }
    if (rv == 0) {
        rv = write_text(data_dir, "tls/key.pem", key_pem, 0600, errmsg);
    }
    if (rv == 0) {
        size_t a = strlen(cert_pem), b = strlen(ca_pem);
        char *chain = mem_alloc(a + b + 2);
        memcpy(chain, cert_pem, a);
        size_t off = a;
        if (a > 0 && cert_pem[a - 1] != '\n') {
            chain[off++] = '\n';
        }
        memcpy(chain + off, ca_pem, b + 1);
        rv = write_text(data_dir, "tls/api.pem", chain, 0644, errmsg);
        mem_free(chain);
    }
    return rv;
}
